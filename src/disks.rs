//! `restore disks`: the machine's disks, so that the target can be found by what it is —
//! size, model, serial, what is on it, whether it is in use or holds a boot medium (the rescue
//! medium is an ISO 9660 image on a CD or a USB stick).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::units;

#[derive(Debug, Serialize)]
pub struct DiskEntry {
    pub path: String,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// "GPT, 3 partitions", "MBR, 2 partitions", "no partition table", "ISO 9660 ...".
    pub table: String,
    pub partitions: Vec<String>,
    /// Mounted, swap or held (the first use found), or none.
    pub in_use: Option<String>,
    /// Holds an ISO 9660 boot medium (the rescue medium, most likely).
    pub boot_medium: Option<String>,
    /// A loop device: the file it shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
}

/// Block devices that are never a restore target: RAM disks, compressed swap in RAM,
/// device-mapper and MD arrays (their members are listed), floppies.
const SKIP: [&str; 6] = ["ram", "zram", "dm-", "md", "fd", "nbd"];

pub fn list(include_loops: bool) -> Result<Vec<DiskEntry>> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .context("listing /sys/block")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !SKIP.iter().any(|p| n.starts_with(p)))
        .filter(|n| include_loops || !n.starts_with("loop"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let sys = PathBuf::from("/sys/block").join(&name);
        let sectors: u64 = std::fs::read_to_string(sys.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue; // an empty CD drive, an unused loop device
        }
        let path = PathBuf::from("/dev").join(&name);
        out.push(entry(&path, &sys, sectors * 512));
    }
    Ok(out)
}

fn entry(path: &Path, sys: &Path, size: u64) -> DiskEntry {
    let read = |f: &str| {
        std::fs::read_to_string(sys.join(f))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut e = DiskEntry {
        path: path.display().to_string(),
        size,
        model: read("device/model"),
        serial: read("device/serial").or_else(|| read("serial")),
        table: "cannot be read".into(),
        partitions: Vec::new(),
        in_use: None,
        boot_medium: None,
        backing_file: read("loop/backing_file"),
    };
    match crate::probe::probe(path) {
        Ok(r) => {
            e.model = e.model.or(r.identity.model.clone());
            e.serial = e.serial.or(r.identity.serial.clone());
            let kind = match r.table.kind() {
                "none" => "no partition table".to_string(),
                k => k.to_uppercase(),
            };
            e.table = match r.partitions.len() {
                0 => kind,
                n => format!("{kind}, {n} partition{}", if n == 1 { "" } else { "s" }),
            };
            e.partitions = r
                .partitions
                .iter()
                .map(|p| {
                    let i = &p.info;
                    let mut s = format!("{} {}", i.number, units::bytes(i.size));
                    match (&i.filesystem, i.role.as_str()) {
                        (Some(fs), _) => s.push_str(&format!(" {fs}")),
                        (None, role) => s.push_str(&format!(" {role}")),
                    }
                    if let Some(l) = &i.label {
                        s.push_str(&format!(" \"{l}\""));
                    }
                    s
                })
                .collect();
            e.in_use = r.in_use.clone();
        }
        Err(err) => e.table = format!("cannot be read: {err:#}"),
    }
    e.boot_medium = iso9660_volume(path).map(|v| format!("ISO 9660 boot medium \"{v}\""));
    e
}

/// The volume id of an ISO 9660 filesystem at the start of `path` (a CD, or a hybrid image
/// written to a USB stick).
fn iso9660_volume(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut pvd = [0u8; 2048];
    f.read_exact_at(&mut pvd, 16 * 2048).ok()?;
    if &pvd[1..6] != b"CD001" {
        return None;
    }
    Some(String::from_utf8_lossy(&pvd[40..72]).trim().to_string())
}

/// The list for people: two lines per disk, never wider than 80 columns.
pub fn human(disks: &[DiskEntry]) -> String {
    let mut s = String::new();
    if disks.is_empty() {
        s.push_str("no disks found\n");
        return s;
    }
    for d in disks {
        let mut first = format!("{:<12} {:>10}", d.path, units::bytes(d.size));
        if let Some(m) = &d.model {
            first.push_str(&format!("  {m}"));
        }
        if let Some(sn) = &d.serial {
            first.push_str(&format!("  serial {sn}"));
        }
        s.push_str(&crate::units::fit(&first, 80));
        s.push('\n');
        let mut second = format!("    {}", d.table);
        if !d.partitions.is_empty() {
            second.push_str(&format!(": {}", d.partitions.join("; ")));
        }
        for line in crate::units::wrap(&second, 80, "      ") {
            s.push_str(&line);
            s.push('\n');
        }
        let state = match (&d.in_use, &d.boot_medium) {
            (_, Some(b)) => format!("    {b}: probably the rescue medium, not a target"),
            (Some(u), _) => format!("    IN USE: {u}"),
            _ if d.table.starts_with("cannot be read") => {
                "    whether it is in use is not known".into()
            }
            _ => "    not in use".into(),
        };
        for line in crate::units::wrap(&state, 80, "      ") {
            s.push_str(&line);
            s.push('\n');
        }
        if let Some(b) = &d.backing_file {
            s.push_str(&crate::units::fit(
                &format!("    loop device over \"{b}\""),
                80,
            ));
            s.push('\n');
        }
    }
    s
}

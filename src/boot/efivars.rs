//! UEFI boot entries in NVRAM, through efivarfs: reading Boot####/BootOrder/Timeout at capture,
//! and creating a Boot#### entry for a restored ESP on hardware whose NVRAM does not know it.
//! efivarfs files hold a 4-byte attribute prefix before the variable's data, and existing
//! variables carry the immutable flag, which must be cleared before they can be changed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
const ATTRIBUTES: u32 = 0x7;
const LOAD_OPTION_ACTIVE: u32 = 0x1;

/// Boot variables as captured on a UEFI system, hex-encoded with their attribute prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nvram {
    pub variables: Vec<(String, String)>,
}

/// The efivarfs directory of the running system, when it is a mounted UEFI system.
pub fn efivars_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RESTORE_EFIVARS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(EFIVARS));
    let _ = std::fs::read_dir(&dir).ok()?.next()?;
    Some(dir)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Boot####, BootOrder and Timeout of the global namespace.
pub fn capture(dir: &Path) -> Nvram {
    let mut variables = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Nvram::default();
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(var) = name.strip_suffix(&format!("-{GLOBAL}")) else {
            continue;
        };
        let wanted = var == "BootOrder" || var == "Timeout" || is_boot_entry_name(var);
        if wanted && let Ok(data) = std::fs::read(e.path()) {
            variables.push((var.to_string(), hex(&data)));
        }
    }
    variables.sort();
    Nvram { variables }
}

fn is_boot_entry_name(var: &str) -> bool {
    var.len() == 8 && var.starts_with("Boot") && var[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The hard-drive media node of a device path: which partition of which disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardDrive {
    pub partition: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    /// The partition's GUID as stored (mixed-endian bytes).
    pub guid: [u8; 16],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    pub hard_drive: Option<HardDrive>,
    /// Backslash-separated path of the loader on that partition.
    pub file: Option<String>,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

impl LoadOption {
    /// EFI_LOAD_OPTION: attributes, device-path length, description, then HD() / File() / End.
    pub fn encode(&self) -> Vec<u8> {
        let mut path = Vec::new();
        if let Some(hd) = &self.hard_drive {
            path.extend_from_slice(&[4, 1, 42, 0]);
            path.extend_from_slice(&hd.partition.to_le_bytes());
            path.extend_from_slice(&hd.start_lba.to_le_bytes());
            path.extend_from_slice(&hd.size_lba.to_le_bytes());
            path.extend_from_slice(&hd.guid);
            path.extend_from_slice(&[2, 2]); // GPT partition format, GUID signature
        }
        if let Some(file) = &self.file {
            let name = utf16z(file);
            path.extend_from_slice(&[4, 4]);
            path.extend_from_slice(&((4 + name.len()) as u16).to_le_bytes());
            path.extend_from_slice(&name);
        }
        path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let mut out = Vec::new();
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(&utf16z(&self.description));
        out.extend_from_slice(&path);
        out
    }

    pub fn parse(data: &[u8]) -> Result<LoadOption> {
        ensure!(data.len() >= 6, "load option too short");
        let attributes = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
        let path_len = usize::from(u16::from_le_bytes([data[4], data[5]]));
        let mut i = 6;
        let mut units = Vec::new();
        loop {
            ensure!(
                i + 2 <= data.len(),
                "load option description is not terminated"
            );
            let u = u16::from_le_bytes([data[i], data[i + 1]]);
            i += 2;
            if u == 0 {
                break;
            }
            units.push(u);
        }
        let description = String::from_utf16_lossy(&units);
        let path = data
            .get(i..i + path_len)
            .context("load option device path is truncated")?;
        let (mut hard_drive, mut file) = (None, None);
        let mut j = 0;
        while j + 4 <= path.len() {
            let (kind, sub) = (path[j], path[j + 1]);
            let len = usize::from(u16::from_le_bytes([path[j + 2], path[j + 3]]));
            ensure!(
                len >= 4 && j + len <= path.len(),
                "malformed device path node"
            );
            let node = &path[j..j + len];
            match (kind, sub) {
                (4, 1) if len >= 42 => {
                    hard_drive = Some(HardDrive {
                        partition: u32::from_le_bytes(node[4..8].try_into().expect("4 bytes")),
                        start_lba: u64::from_le_bytes(node[8..16].try_into().expect("8 bytes")),
                        size_lba: u64::from_le_bytes(node[16..24].try_into().expect("8 bytes")),
                        guid: node[24..40].try_into().expect("16 bytes"),
                    })
                }
                (4, 4) => {
                    let units: Vec<u16> = node[4..]
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .take_while(|&u| u != 0)
                        .collect();
                    file = Some(String::from_utf16_lossy(&units));
                }
                (0x7f, 0xff) => break,
                _ => {}
            }
            j += len;
        }
        Ok(LoadOption {
            attributes,
            description,
            hard_drive,
            file,
        })
    }
}

fn var_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{GLOBAL}"))
}

/// Clears the immutable flag efivarfs sets on existing variables (ignored elsewhere).
fn make_mutable(path: &Path) {
    if let Ok(f) = std::fs::File::open(path)
        && let Ok(flags) = rustix::fs::ioctl_getflags(&f)
    {
        let _ = rustix::fs::ioctl_setflags(&f, flags - rustix::fs::IFlags::IMMUTABLE);
    }
}

/// Writes a variable in one write(): efivarfs takes the attribute prefix and data together.
fn write_var(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let path = var_path(dir, name);
    if path.exists() {
        make_mutable(&path);
    }
    let mut buf = ATTRIBUTES.to_le_bytes().to_vec();
    buf.extend_from_slice(data);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .with_context(|| format!("opening UEFI variable {}", path.display()))?;
    f.write_all(&buf)
        .with_context(|| format!("writing UEFI variable {name}"))?;
    Ok(())
}

fn read_var(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(var_path(dir, name))
        .ok()
        .filter(|d| d.len() >= 4)
        .map(|d| d[4..].to_vec())
}

/// Every Boot#### entry: (number, option).
pub fn boot_entries(dir: &Path) -> Vec<(u16, LoadOption)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(var) = name.strip_suffix(&format!("-{GLOBAL}")) else {
            continue;
        };
        if !is_boot_entry_name(var) {
            continue;
        }
        let Ok(n) = u16::from_str_radix(&var[4..], 16) else {
            continue;
        };
        if let Some(opt) = read_var(dir, var).and_then(|d| LoadOption::parse(&d).ok()) {
            out.push((n, opt));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out
}

/// Creates Boot#### for `option` and puts it first in BootOrder, after removing the entries
/// that point at the same partition GUID (the disk's old identity). Returns the new number.
pub fn install_entry(dir: &Path, option: &LoadOption) -> Result<u16> {
    let Some(hd) = &option.hard_drive else {
        bail!("a boot entry needs a partition")
    };
    let existing = boot_entries(dir);
    let stale: Vec<u16> = existing
        .iter()
        .filter(|(_, o)| o.hard_drive.as_ref().is_some_and(|h| h.guid == hd.guid))
        .map(|(n, _)| *n)
        .collect();
    for n in &stale {
        let path = var_path(dir, &format!("Boot{n:04X}"));
        make_mutable(&path);
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale boot entry Boot{n:04X}"))?;
    }
    let used: Vec<u16> = existing
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !stale.contains(n))
        .collect();
    let number = (0..=u16::MAX)
        .find(|n| !used.contains(n))
        .context("no free Boot#### number")?;
    write_var(dir, &format!("Boot{number:04X}"), &option.encode())?;
    let mut order: Vec<u16> = read_var(dir, "BootOrder")
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .filter(|n| !stale.contains(n) && *n != number)
        .collect();
    order.insert(0, number);
    let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    write_var(dir, "BootOrder", &bytes)?;
    Ok(number)
}

/// A load option for a loader on a GPT partition.
pub fn option_for(
    description: &str,
    partition: u32,
    start_lba: u64,
    size_lba: u64,
    guid: [u8; 16],
    file: &str,
) -> LoadOption {
    LoadOption {
        attributes: LOAD_OPTION_ACTIVE,
        description: description.to_string(),
        hard_drive: Some(HardDrive {
            partition,
            start_lba,
            size_lba,
            guid,
        }),
        file: Some(file.replace('/', "\\")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_options_round_trip() {
        let o = option_for(
            "debian",
            1,
            2048,
            131072,
            [7; 16],
            "/EFI/debian/shimx64.efi",
        );
        let parsed = LoadOption::parse(&o.encode()).unwrap();
        assert_eq!(parsed, o);
        assert_eq!(parsed.file.as_deref(), Some("\\EFI\\debian\\shimx64.efi"));
        assert!(LoadOption::parse(&o.encode()[..20]).is_err());
    }

    #[test]
    fn install_replaces_entries_of_the_same_partition_and_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let other = option_for("pxe", 1, 34, 100, [9; 16], "/EFI/pxe.efi");
        let old = option_for("old", 1, 2048, 100, [7; 16], "/EFI/old/grubx64.efi");
        write_var(dir.path(), "Boot0000", &other.encode()).unwrap();
        write_var(dir.path(), "Boot0003", &old.encode()).unwrap();
        write_var(dir.path(), "BootOrder", &[0, 0, 3, 0]).unwrap();
        let new = option_for(
            "restored",
            1,
            2048,
            131072,
            [7; 16],
            "/EFI/BOOT/BOOTX64.EFI",
        );
        let n = install_entry(dir.path(), &new).unwrap();
        let entries = boot_entries(dir.path());
        assert_eq!(
            entries.len(),
            2,
            "the stale entry for the same partition is gone"
        );
        assert!(entries.iter().any(|(k, o)| *k == n && *o == new));
        let order = read_var(dir.path(), "BootOrder").unwrap();
        assert_eq!(order, [n.to_le_bytes(), 0u16.to_le_bytes()].concat());
        let raw = std::fs::read(var_path(dir.path(), &format!("Boot{n:04X}"))).unwrap();
        assert_eq!(
            &raw[..4],
            &ATTRIBUTES.to_le_bytes(),
            "attribute prefix written"
        );
        let nv = capture(dir.path());
        assert_eq!(nv.variables.len(), 3);
    }
}

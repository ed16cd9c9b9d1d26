//! UEFI boot entries in NVRAM, through efivarfs: reading Boot####/BootOrder/Timeout at capture,
//! and creating a Boot#### entry for a restored ESP on hardware whose NVRAM does not know it.
//! efivarfs files hold a 4-byte attribute prefix before the variable's data, and existing
//! variables carry the immutable flag, which must be cleared before they can be changed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
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
    // Test builds may point at an efivarfs-shaped directory instead.
    #[cfg(feature = "test-hooks")]
    let dir = std::env::var_os("RESTORE_EFIVARS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(EFIVARS));
    #[cfg(not(feature = "test-hooks"))]
    let dir = PathBuf::from(EFIVARS);
    let _ = std::fs::read_dir(&dir).ok()?.next()?;
    Some(dir)
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
            variables.push((var.to_string(), crate::hex::encode(&data)));
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

/// The numbers of every Boot#### variable, also those whose contents do not parse: a new
/// entry must not take any of them.
pub fn boot_numbers(dir: &Path) -> Vec<u16> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<u16> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let var = name.strip_suffix(&format!("-{GLOBAL}"))?.to_string();
            is_boot_entry_name(&var)
                .then(|| u16::from_str_radix(&var[4..], 16).ok())
                .flatten()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Creates Boot#### `number` from an encoded load option and puts it first in BootOrder,
/// dropping `stale` from the order. The stale variables themselves stay until
/// `remove_entries`: should this process die in between, the firmware still has an entry.
pub fn create_entry(dir: &Path, number: u16, load_option: &[u8], stale: &[u16]) -> Result<()> {
    LoadOption::parse(load_option).context("the boot entry to write is not a valid load option")?;
    write_var(dir, &format!("Boot{number:04X}"), load_option)?;
    let mut order: Vec<u16> = read_var(dir, "BootOrder")
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .filter(|n| !stale.contains(n) && *n != number)
        .collect();
    order.insert(0, number);
    let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    write_var(dir, "BootOrder", &bytes)
}

/// Removes Boot#### variables (the disk's old entries, after the new one exists).
pub fn remove_entries(dir: &Path, numbers: &[u16]) -> Result<()> {
    for n in numbers {
        let path = var_path(dir, &format!("Boot{n:04X}"));
        if !path.exists() {
            continue;
        }
        make_mutable(&path);
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale boot entry Boot{n:04X}"))?;
    }
    Ok(())
}

/// The load option a Boot#### variable holds now, to check what was written.
pub fn read_entry(dir: &Path, number: u16) -> Option<Vec<u8>> {
    read_var(dir, &format!("Boot{number:04X}"))
}

/// The BootOrder variable.
pub fn boot_order(dir: &Path) -> Vec<u16> {
    read_var(dir, "BootOrder")
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
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
    fn create_first_then_remove_the_stale_entries() {
        let dir = tempfile::tempdir().unwrap();
        let other = option_for("pxe", 1, 34, 100, [9; 16], "/EFI/pxe.efi");
        let old = option_for("old", 1, 2048, 100, [7; 16], "/EFI/old/grubx64.efi");
        write_var(dir.path(), "Boot0000", &other.encode()).unwrap();
        write_var(dir.path(), "Boot0003", &old.encode()).unwrap();
        write_var(dir.path(), "BootOrder", &[0, 0, 3, 0]).unwrap();
        std::fs::write(var_path(dir.path(), "Boot0001"), [7, 0, 0, 0, 1]).unwrap();
        assert_eq!(boot_numbers(dir.path()), vec![0, 1, 3]);
        let new = option_for(
            "restored",
            1,
            2048,
            131072,
            [7; 16],
            "/EFI/BOOT/BOOTX64.EFI",
        );
        create_entry(dir.path(), 2, &new.encode(), &[3]).unwrap();
        // Until the stale entry is removed, both exist: a crash here leaves a bootable NVRAM.
        assert_eq!(boot_entries(dir.path()).len(), 3);
        assert_eq!(boot_order(dir.path()), vec![2, 0]);
        remove_entries(dir.path(), &[3]).unwrap();
        let entries = boot_entries(dir.path());
        assert_eq!(
            entries.len(),
            2,
            "the stale entry for the same partition is gone"
        );
        assert!(entries.iter().any(|(k, o)| *k == 2 && *o == new));
        let raw = std::fs::read(var_path(dir.path(), "Boot0002")).unwrap();
        assert_eq!(
            &raw[..4],
            &ATTRIBUTES.to_le_bytes(),
            "attribute prefix written"
        );
        assert_eq!(read_entry(dir.path(), 2).unwrap(), new.encode());
        let nv = capture(dir.path());
        assert_eq!(nv.variables.len(), 4);
        assert!(create_entry(dir.path(), 4, b"junk", &[]).is_err());
    }
}

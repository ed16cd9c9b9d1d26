//! Block-device specifics, kept at the edge: ioctls and sysfs. Everything else in the tool
//! works on byte ranges of a `Disk` and never needs to know whether it is a device.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::ioctl::{Getter, NoArg, Setter, ioctl, opcode};

use super::Identity;

const BLKROGET: rustix::ioctl::Opcode = opcode::none(0x12, 94);
const BLKRRPART: rustix::ioctl::Opcode = opcode::none(0x12, 95);
const BLKGETSIZE64: rustix::ioctl::Opcode = opcode::read::<u64>(0x12, 114);
const BLKDISCARD: rustix::ioctl::Opcode = opcode::none(0x12, 119);
const BLKZEROOUT: rustix::ioctl::Opcode = opcode::none(0x12, 127);

pub fn size(file: &File) -> Result<u64> {
    // SAFETY: BLKGETSIZE64 writes one u64.
    let size =
        unsafe { ioctl(file, Getter::<BLKGETSIZE64, u64>::new()) }.context("BLKGETSIZE64")?;
    Ok(size)
}

pub fn sector_sizes(file: &File) -> Result<(u32, u32)> {
    let logical = rustix::fs::ioctl_blksszget(file)?;
    let physical = rustix::fs::ioctl_blkpbszget(file).unwrap_or(logical);
    Ok((logical, physical))
}

pub fn is_read_only(file: &File) -> bool {
    // SAFETY: BLKROGET writes one int.
    unsafe { ioctl(file, Getter::<BLKROGET, i32>::new()) }.is_ok_and(|ro| ro != 0)
}

/// BLKRRPART: tolerated where unsupported (loop devices without partition scanning).
pub fn reread_partitions(file: &File) {
    // SAFETY: BLKRRPART takes no argument.
    let _ = unsafe { ioctl(file, NoArg::<BLKRRPART>::new()) };
}

/// Makes a range read as zeroes without writing them when the device can: BLKZEROOUT (the
/// kernel unmaps where the device guarantees zeroes after it, else writes zeroes itself), or
/// BLKDISCARD where the device promises zeroes after discard. False: the caller writes zeroes.
pub fn zero_range(file: &File, sysfs: Option<&Path>, offset: u64, len: u64) -> bool {
    let Some(sysfs) = sysfs else { return false };
    let queue = |name: &str| read_sysfs_u64(&sysfs.join("queue").join(name)).unwrap_or(0);
    let range = [offset, len];
    if queue("write_zeroes_max_bytes") > 0 {
        // SAFETY: BLKZEROOUT reads a [u64; 2] (start, length).
        return unsafe { ioctl(file, Setter::<BLKZEROOUT, [u64; 2]>::new(range)) }.is_ok();
    }
    if queue("discard_zeroes_data") == 1 && queue("discard_max_bytes") > 0 {
        // SAFETY: BLKDISCARD reads a [u64; 2] (start, length).
        return unsafe { ioctl(file, Setter::<BLKDISCARD, [u64; 2]>::new(range)) }.is_ok();
    }
    false
}

fn read_sysfs(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_sysfs_u64(path: &Path) -> Option<u64> {
    read_sysfs(path)?.parse().ok()
}

/// The sysfs directory of a block device (/sys/dev/block/MAJ:MIN).
pub fn sysfs_dir(rdev: u64) -> PathBuf {
    PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

/// Model, serial and WWN from sysfs, where the kernel exposes them.
pub fn identity(sysfs: &Path) -> Identity {
    let read = |rel: &str| read_sysfs(&sysfs.join(rel));
    Identity {
        model: read("device/model"),
        serial: read("device/serial").or_else(|| read("serial")),
        wwn: read("device/wwid").or_else(|| read("wwid")),
    }
}

/// A block device and what the kernel says about it.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub dev: (u32, u32),
    pub sysfs: PathBuf,
}

/// The device itself and its partitions, as sysfs lists them.
pub fn with_partitions(sysfs: &Path) -> Vec<DeviceInfo> {
    let mut out = Vec::new();
    let Ok(real) = std::fs::canonicalize(sysfs) else {
        return out;
    };
    let mut push = |dir: &Path| {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(dev) = read_sysfs(&dir.join("dev")).and_then(|d| parse_dev(&d)) {
            out.push(DeviceInfo {
                name,
                dev,
                sysfs: dir.to_path_buf(),
            });
        }
    };
    push(&real);
    if let Ok(entries) = std::fs::read_dir(&real) {
        for e in entries.flatten() {
            if e.path().join("partition").exists() {
                push(&e.path());
            }
        }
    }
    out
}

pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Devices stacked on top of this one (device-mapper, MD, LVM).
pub fn holders(sysfs: &Path) -> Vec<String> {
    std::fs::read_dir(sysfs.join("holders"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every loop device and the file behind it.
pub fn loop_devices() -> Vec<(DeviceInfo, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Some(backing) = read_sysfs(&e.path().join("loop/backing_file")) else {
            continue;
        };
        for d in with_partitions(&e.path()) {
            out.push((d, PathBuf::from(backing.trim_end_matches(" (deleted)"))));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn holders_are_read_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::holders(dir.path()).is_empty());
        std::fs::create_dir_all(dir.path().join("holders/dm-3")).unwrap();
        assert_eq!(super::holders(dir.path()), vec!["dm-3".to_string()]);
        assert_eq!(super::parse_dev("7:12\n"), Some((7, 12)));
        assert_eq!(super::parse_dev("junk"), None);
    }
}

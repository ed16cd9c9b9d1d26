//! Block-device specifics, kept at the edge: ioctls and sysfs. Everything else in the tool
//! works on byte ranges of a `Disk` and never needs to know whether it is a device.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};

use super::Identity;

pub fn size(file: &File) -> Result<u64> {
    // Seeking to the end gives the same value as BLKGETSIZE64 without an ioctl.
    let mut f = file;
    let size = f
        .seek(SeekFrom::End(0))
        .context("reading the device size")?;
    f.seek(SeekFrom::Start(0)).context("seeking")?;
    Ok(size)
}

pub fn sector_sizes(file: &File) -> Result<(u32, u32)> {
    let logical = rustix::fs::ioctl_blksszget(file)?;
    let physical = rustix::fs::ioctl_blkpbszget(file).unwrap_or(logical);
    Ok((logical, physical))
}

/// BLKRRPART: tolerated where unsupported (loop devices without partition scanning).
pub fn reread_partitions(file: &File) {
    const BLKRRPART: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 95);
    // SAFETY: BLKRRPART takes no argument.
    let _ = unsafe { rustix::ioctl::ioctl(file, rustix::ioctl::NoArg::<BLKRRPART>::new()) };
}

/// Model, serial and WWN from sysfs, where the kernel exposes them.
pub fn identity(path: &Path) -> Identity {
    let Ok(real) = std::fs::canonicalize(path) else {
        return Identity::default();
    };
    let Some(name) = real.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Identity::default();
    };
    let base = Path::new("/sys/class/block").join(&name);
    let read = |rel: &str| {
        std::fs::read_to_string(base.join(rel))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    Identity {
        model: read("device/model"),
        serial: read("device/serial").or_else(|| read("serial")),
        wwn: read("device/wwid").or_else(|| read("wwid")),
    }
}

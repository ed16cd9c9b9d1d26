//! Block-device and filesystem specifics, kept at the edge: every ioctl (and the one raw
//! syscall, ioprio_set) and sysfs. Everything else in the tool works on byte ranges of a
//! `Disk` and never needs to know whether it is a device.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::ioctl::{Getter, NoArg, Setter, Updater, ioctl, opcode};

use super::Identity;

const BLKROGET: rustix::ioctl::Opcode = opcode::none(0x12, 94);
const BLKRRPART: rustix::ioctl::Opcode = opcode::none(0x12, 95);
const BLKGETSIZE64: rustix::ioctl::Opcode = opcode::read::<u64>(0x12, 114);
const BLKDISCARD: rustix::ioctl::Opcode = opcode::none(0x12, 119);
const BLKZEROOUT: rustix::ioctl::Opcode = opcode::none(0x12, 127);
const FIFREEZE: rustix::ioctl::Opcode = opcode::read_write::<i32>(b'X', 119);
const FITHAW: rustix::ioctl::Opcode = opcode::read_write::<i32>(b'X', 120);
const FS_IOC_GETFSMAP: rustix::ioctl::Opcode = opcode::read_write::<FsmapHead>(b'X', 59);

/// Freezes the filesystem mounted at `dir` (an open directory of it): writes block until thaw.
pub fn freeze(dir: &File) -> std::io::Result<()> {
    // SAFETY: FIFREEZE takes no argument the kernel reads.
    unsafe { ioctl(dir, NoArg::<FIFREEZE>::new()) }.map_err(std::io::Error::from)
}

/// Thaws it; EINVAL means it was not frozen.
pub fn thaw(dir: &File) -> std::io::Result<()> {
    // SAFETY: FITHAW takes no argument the kernel reads.
    unsafe { ioctl(dir, NoArg::<FITHAW>::new()) }.map_err(std::io::Error::from)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Fsmap {
    device: u32,
    flags: u32,
    physical: u64,
    owner: u64,
    offset: u64,
    length: u64,
    reserved: [u64; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FsmapHead {
    iflags: u32,
    oflags: u32,
    count: u32,
    entries: u32,
    reserved: [u64; 6],
    keys: [Fsmap; 2],
}

const FSMAP_BATCH: usize = 256;

#[repr(C)]
struct FsmapBuf {
    head: FsmapHead,
    recs: [Fsmap; FSMAP_BATCH],
}

const FMR_OF_SPECIAL_OWNER: u32 = 0x10;
const FMR_OF_LAST: u32 = 0x20;
/// FMR_OWNER(0, 1): free space.
const FMR_OWN_FREE: u64 = 1;

/// One extent of the kernel's space map of a mounted filesystem (FS_IOC_GETFSMAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceExtent {
    /// The device the extent is on, as the kernel encodes a dev_t.
    pub device: u32,
    pub physical: u64,
    pub length: u64,
    pub free: bool,
}

/// The space map of the filesystem mounted at `dir`, extents in device order. At most
/// `limit` extents are read (a huge, fragmented filesystem answers None: keep every block).
pub fn fsmap(dir: &File, limit: usize) -> std::io::Result<Option<Vec<SpaceExtent>>> {
    let mut buf = Box::new(FsmapBuf {
        head: FsmapHead::default(),
        recs: [Fsmap::default(); FSMAP_BATCH],
    });
    buf.head.keys[1] = Fsmap {
        device: u32::MAX,
        flags: u32::MAX,
        physical: u64::MAX,
        owner: u64::MAX,
        offset: u64::MAX,
        length: 0,
        reserved: [0; 3],
    };
    let mut out = Vec::new();
    loop {
        buf.head.count = FSMAP_BATCH as u32;
        buf.head.entries = 0;
        // SAFETY: the buffer is a fsmap_head followed by `count` fsmap records, as the kernel
        // expects; it writes at most `count` records.
        unsafe { ioctl(dir, Updater::<FS_IOC_GETFSMAP, FsmapBuf>::new(&mut buf)) }?;
        let n = (buf.head.entries as usize).min(FSMAP_BATCH);
        if n == 0 {
            return Ok(Some(out));
        }
        for r in &buf.recs[..n] {
            out.push(SpaceExtent {
                device: r.device,
                physical: r.physical,
                length: r.length,
                free: r.flags & FMR_OF_SPECIAL_OWNER != 0 && r.owner == FMR_OWN_FREE,
            });
        }
        if out.len() > limit {
            return Ok(None);
        }
        let last = buf.recs[n - 1];
        if last.flags & FMR_OF_LAST != 0 {
            return Ok(Some(out));
        }
        // The next call starts after the last record returned.
        buf.head.keys[0] = last;
    }
}

/// Puts this process in the idle I/O class (it gets the disk only when nobody else wants it).
pub fn set_idle_io_priority() -> std::io::Result<()> {
    set_io_priority(true)
}

/// The I/O class of this thread and the threads it starts from now on: idle, or best-effort
/// at the default level (what a process has unless told otherwise).
pub fn set_io_priority(idle: bool) -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    let prio = if idle {
        IOPRIO_CLASS_IDLE << 13
    } else {
        (IOPRIO_CLASS_BE << 13) | 4
    };
    // SAFETY: ioprio_set(which, who, ioprio) takes three integers; 0 is this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            prio,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts writing `len` bytes at `offset` of `file` back to the disk, without waiting for
/// it (sync_file_range WRITE): a restore's writes overlap its fetches. Where it is not
/// supported nothing happens; the final flush writes everything either way.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes a file descriptor this process holds open, two byte
    // counts and flags; it reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// The best-effort I/O class for as long as it lives (when `raise` and the class could be
/// taken), the idle class again afterwards: however the frozen read ends, capture goes back
/// to yielding the disk.
pub struct BestEffortIo {
    raised: bool,
}

impl BestEffortIo {
    pub fn raise(raise: bool) -> BestEffortIo {
        BestEffortIo {
            raised: raise && set_io_priority(false).is_ok(),
        }
    }
}

impl Drop for BestEffortIo {
    fn drop(&mut self) {
        if self.raised {
            let _ = set_io_priority(true);
        }
    }
}

/// Lowers this process's CPU priority (nice 19).
pub fn set_low_cpu_priority() -> std::io::Result<()> {
    // SAFETY: setpriority(PRIO_PROCESS, 0 = this process, 19).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

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

/// The device number (major, minor) of the device node at `path`.
pub fn device_number(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())))
}

/// The device number of the filesystem that holds `path` (a mount point: the mounted one).
pub fn filesystem_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((rustix::fs::major(m.dev()), rustix::fs::minor(m.dev())))
}

/// The device numbers of the swap devices in use (/proc/swaps; swap files are skipped).
pub fn active_swaps() -> Vec<(u32, u32)> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| device_number(Path::new(p)))
        .collect()
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

/// Where a partition (start, size in bytes) or a loop device (offset, size limit; 0: to the
/// end) sits on the disk under it.
pub fn geometry(sysfs: &Path) -> Option<(u64, u64)> {
    if let Some(start) = read_sysfs_u64(&sysfs.join("start")) {
        return Some((start * 512, read_sysfs_u64(&sysfs.join("size"))? * 512));
    }
    Some((
        read_sysfs_u64(&sysfs.join("loop/offset"))?,
        read_sysfs_u64(&sysfs.join("loop/sizelimit")).unwrap_or(0),
    ))
}

/// A device-mapper device's name ("vg-root") and uuid ("LVM-..." for LVM), when it is one.
pub fn dm_name(sysfs: &Path) -> Option<(String, String)> {
    Some((
        read_sysfs(&sysfs.join("dm/name"))?,
        read_sysfs(&sysfs.join("dm/uuid")).unwrap_or_default(),
    ))
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

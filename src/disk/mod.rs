//! Disks as byte ranges: image files and block devices behind one handle, their partition
//! tables and boot regions (`layout`), raw GPT/MBR structures and filesystem signatures.
//! Block-device specifics (ioctls, sysfs) live in `blockdev` and nowhere else.

pub mod blockdev;
pub mod extfs;
pub mod fs;
pub mod gpt;
pub mod guard;
pub mod layout;
pub mod mbr;
pub mod scan;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// What the operating system tells about a disk; all optional (an image file has none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
}

/// Writes at least this large start their writeback at once (a chunk, not a table sector):
/// the disk writes while the next chunks are fetched, instead of all of it at the final
/// flush.
const WRITEBACK_FROM: usize = 64 << 10;

/// An open disk: an image file or a block device.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
    file: File,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub is_block_device: bool,
    pub identity: Identity,
    rdev: u64,
    /// Ranges read from somewhere else (a snapshot of a logical volume, bytes read earlier),
    /// sorted and apart; empty for a disk as it is.
    redirects: Vec<Redirect>,
}

/// Where a range of a disk is read from instead of the disk itself.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file or device, from this offset on.
    File(std::sync::Arc<File>, u64),
    /// Bytes read before (as long as the range).
    Bytes(std::sync::Arc<Vec<u8>>),
}

/// `len` bytes at `offset` of a disk, read from `source`.
#[derive(Clone, Debug)]
pub struct Redirect {
    pub offset: u64,
    pub len: u64,
    pub source: Source,
}

impl Disk {
    pub fn open_read(path: &Path) -> Result<Disk> {
        Self::open(path, false)
    }

    /// Opens for writing; a block device is opened O_EXCL so the kernel itself refuses a
    /// device that is mounted or held by another user.
    pub fn open_write(path: &Path) -> Result<Disk> {
        Self::open(path, true)
    }

    fn open(path: &Path, write: bool) -> Result<Disk> {
        let meta = std::fs::metadata(path).with_context(|| {
            format!(
                "disk {} does not exist or cannot be read (give an image file or a block device)",
                path.display()
            )
        })?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            bail!(
                "{} is neither an image file nor a block device",
                path.display()
            );
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(write);
        if write && is_block_device {
            opts.custom_flags(libc_o_excl());
        }
        let file = opts.open(path).map_err(|e| {
                        if write && e.raw_os_error() == Some(30) {
                anyhow::anyhow!("refusing to write to {}: it is read-only; nothing was written", path.display())
            } else if write && is_block_device && e.raw_os_error() == Some(16) {
                anyhow::anyhow!(
                    "refusing to write to {}: the device is busy (mounted, or held open exclusively by another process); nothing was written",
                    path.display()
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {}", path.display()))
            }
        })?;
        let (size, logical, physical, identity) = if is_block_device {
            let (l, p) = blockdev::sector_sizes(&file)
                .with_context(|| format!("reading the sector size of {}", path.display()))?;
            let sysfs = blockdev::sysfs_dir(meta.rdev());
            (blockdev::size(&file)?, l, p, blockdev::identity(&sysfs))
        } else {
            (meta.len(), 512, 512, Identity::default())
        };
        Ok(Disk {
            path: path.to_path_buf(),
            file,
            size,
            logical_sector_size: logical,
            physical_sector_size: physical,
            is_block_device,
            identity,
            rdev: meta.rdev(),
            redirects: Vec::new(),
        })
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The same disk (read only), with `redirects` read from elsewhere: how a partition that
    /// holds a logical volume is read through a snapshot of it. They must lie within the disk,
    /// apart from each other, and a `Bytes` source must be as long as its range.
    pub fn redirected(&self, mut redirects: Vec<Redirect>) -> Result<Disk> {
        redirects.retain(|r| r.len > 0);
        redirects.sort_by_key(|r| r.offset);
        let mut end = 0u64;
        for r in &redirects {
            let r_end = r.offset.checked_add(r.len);
            if r.offset < end || r_end.is_none_or(|e| e > self.size) {
                bail!(
                    "reading {} through another device: the range of {} bytes at offset {} overlaps another or leaves the disk",
                    self.path.display(),
                    r.len,
                    r.offset
                );
            }
            if let Source::Bytes(b) = &r.source {
                ensure!(
                    b.len() as u64 == r.len,
                    "reading {}: {} bytes kept for a range of {}",
                    self.path.display(),
                    b.len(),
                    r.len
                );
            }
            end = r_end.unwrap_or(u64::MAX);
        }
        Ok(Disk {
            path: self.path.clone(),
            file: self.file.try_clone()?,
            size: self.size,
            logical_sector_size: self.logical_sector_size,
            physical_sector_size: self.physical_sector_size,
            is_block_device: self.is_block_device,
            identity: self.identity.clone(),
            rdev: self.rdev,
            redirects,
        })
    }

    /// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the disk read as an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.redirects.is_empty() {
            return self.read_redirected(buf, offset);
        }
        self.read_plain(buf, offset)
    }

    /// `read_at` of a disk with redirects: each piece from where it lives.
    fn read_redirected(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let rest = &mut buf[done..];
            let i = self.redirects.partition_point(|r| r.offset + r.len <= pos);
            let step = match self.redirects.get(i) {
                Some(r) if r.offset <= pos => {
                    let step = (r.offset + r.len - pos).min(rest.len() as u64) as usize;
                    let into = pos - r.offset;
                    match &r.source {
                        Source::File(f, at) => {
                            f.read_exact_at(&mut rest[..step], at + into).with_context(|| {
                                format!(
                                    "reading {step} bytes at offset {pos} of {} (through a snapshot, at its offset {})",
                                    self.path.display(),
                                    at + into
                                )
                            })?
                        }
                        Source::Bytes(b) => rest[..step]
                            .copy_from_slice(&b[into as usize..into as usize + step]),
                    }
                    step
                }
                next => {
                    let until = next.map_or(u64::MAX, |r| r.offset);
                    let step = (until - pos).min(rest.len() as u64) as usize;
                    self.read_plain(&mut rest[..step], pos)?;
                    step
                }
            };
            done += step;
        }
        Ok(())
    }

    fn read_plain(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).with_context(|| {
            format!(
                "reading {} bytes at offset {offset} of {}",
                buf.len(),
                self.path.display()
            )
        })
    }

    /// For an image file, the ranges of `[offset, offset + len)` that hold data (relative to
    /// `offset`), from SEEK_DATA/SEEK_HOLE: everything else is a hole and reads as zeros, so it
    /// need not be read at all. None for a block device, a filesystem without hole reporting,
    /// or a file fragmented beyond `MAX_RANGES` (then everything is read).
    pub fn data_ranges(&self, offset: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        use rustix::fs::{SeekFrom, seek};
        const MAX_RANGES: usize = 1 << 20;
        if self.is_block_device || !self.redirects.is_empty() {
            return None;
        }
        let end = offset.checked_add(len)?.min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match seek(&self.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                // No data after pos: the rest is a hole.
                Err(rustix::io::Errno::NXIO) => break,
                Err(_) => return None,
            };
            if data >= end {
                break;
            }
            let hole = seek(&self.file, SeekFrom::Hole(data)).ok()?.min(end);
            if hole <= data || out.len() >= MAX_RANGES {
                return None;
            }
            out.push((data - offset, hole - data));
            pos = hole;
        }
        Some(out)
    }

    pub fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).context("read too large")?];
        self.read_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Refuses a write that would leave the disk: nothing ever grows an image file or
    /// reaches past the end of a device, whatever a plan says.
    fn check_within(&self, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            bail!(
                "refusing to write {len} bytes at offset {offset} of {}: that is beyond its end ({} bytes)",
                self.path.display(),
                self.size
            );
        }
        Ok(())
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_within(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset).with_context(|| {
            format!(
                "writing {} bytes at offset {offset} of {}",
                buf.len(),
                self.path.display()
            )
        })?;
        if buf.len() >= WRITEBACK_FROM {
            blockdev::start_writeback(&self.file, offset, buf.len() as u64);
        }
        Ok(())
    }

    /// Makes a range read as zeroes: unmapped where the device or file system guarantees
    /// zeroes afterwards, else written.
    pub fn write_zeroes(&self, offset: u64, len: u64, zeros: &[u8]) -> Result<()> {
        self.check_within(offset, len)?;
        let done = if self.is_block_device {
            blockdev::zero_range(&self.file, self.sysfs().as_deref(), offset, len)
        } else {
            use rustix::fs::FallocateFlags;
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            rustix::fs::fallocate(&self.file, flags, offset, len).is_ok()
        };
        if done {
            return Ok(());
        }
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(zeros.len() as u64);
            self.write_at(&zeros[..n as usize], offset + pos)?;
            pos += n;
        }
        Ok(())
    }

    /// The device's sysfs directory; None for an image file.
    pub fn sysfs(&self) -> Option<PathBuf> {
        self.is_block_device.then(|| blockdev::sysfs_dir(self.rdev))
    }

    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("flushing {}", self.path.display()))
    }

    /// Asks the kernel to re-read the partition table; a loop device or image without
    /// partition support is not an error.
    pub fn reread_partition_table(&self) {
        if self.is_block_device {
            blockdev::reread_partitions(&self.file);
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

fn libc_o_excl() -> i32 {
    rustix::fs::OFlags::EXCL.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_redirected_disk_reads_each_range_from_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let (base, other) = (dir.path().join("disk.img"), dir.path().join("snap.img"));
        let pattern = |seed: u8, n: usize| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
        };
        std::fs::write(&base, pattern(1, 64 << 10)).unwrap();
        std::fs::write(&other, pattern(2, 32 << 10)).unwrap();
        let disk = Disk::open_read(&base).unwrap();
        let snap = Arc::new(File::open(&other).unwrap());
        let kept = Arc::new(vec![0xAAu8; 100]);
        let view = disk
            .redirected(vec![
                Redirect {
                    offset: 20_000,
                    len: 10_000,
                    source: Source::File(snap.clone(), 5_000),
                },
                Redirect {
                    offset: 0,
                    len: 100,
                    source: Source::Bytes(kept.clone()),
                },
            ])
            .unwrap();
        let mut want = pattern(1, 64 << 10);
        want[..100].fill(0xAA);
        want[20_000..30_000].copy_from_slice(&pattern(2, 32 << 10)[5_000..15_000]);
        // Reads of every alignment across the edges of the ranges.
        for (off, len) in [
            (0, 65536),
            (50, 100),
            (19_999, 2),
            (29_999, 2),
            (25_000, 10_000),
            (0, 1),
        ] {
            let got = view.read_vec(off, len).unwrap();
            assert_eq!(got, want[off as usize..(off + len) as usize], "{off}+{len}");
        }
        // The disk itself is unchanged, and a view has no hole map to trust.
        assert_eq!(disk.read_vec(0, 100).unwrap(), pattern(1, 100));
        assert!(view.data_ranges(0, 65536).is_none());
        // Ranges that overlap, leave the disk or hold the wrong number of bytes are refused.
        let file = |offset, len| Redirect {
            offset,
            len,
            source: Source::File(snap.clone(), 0),
        };
        assert!(disk.redirected(vec![file(0, 200), file(100, 200)]).is_err());
        assert!(disk.redirected(vec![file(65_000, 1_000)]).is_err());
        assert!(disk.redirected(vec![file(u64::MAX, 2)]).is_err());
        let short = Redirect {
            offset: 0,
            len: 101,
            source: Source::Bytes(kept),
        };
        assert!(disk.redirected(vec![short]).is_err());
    }
}

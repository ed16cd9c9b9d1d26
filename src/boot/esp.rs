//! The EFI system partition, read in userspace with the `fatfs` crate (the host kernel may
//! have no vfat): its files and their hashes, and which UEFI loaders it carries.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::disk::Disk;

pub const FALLBACK: &str = "/EFI/BOOT/BOOTX64.EFI";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspFile {
    /// Path from the ESP's root, '/'-separated, as stored (FAT is case-insensitive).
    pub path: String,
    pub size: u64,
    pub hash: ChunkId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uefi {
    pub esp_partition: u32,
    /// "grub", "shim", "systemd-boot", "fallback" (\EFI\BOOT\BOOTX64.EFI present).
    pub loaders: Vec<String>,
    pub files: Vec<EspFile>,
}

/// Directories deeper than this are not followed (a directory that names its parent as a
/// child would otherwise be walked for ever).
const MAX_DEPTH: usize = 16;
/// Entries looked at in one ESP, and in one directory (FAT allows 65,536 per directory).
const MAX_ENTRIES: usize = 100_000;
const MAX_DIR_ENTRIES: usize = 65_536;

/// A partition of a `Disk` as a file for `fatfs`. Reads are budgeted: a FAT whose cluster
/// chains loop would otherwise keep `fatfs` reading for ever.
struct PartitionIo<'a> {
    disk: &'a Disk,
    writable: bool,
    start: u64,
    len: u64,
    pos: u64,
    /// Bytes that may still be read.
    budget: u64,
}

impl<'a> PartitionIo<'a> {
    fn new(disk: &'a Disk, start: u64, len: u64, writable: bool) -> PartitionIo<'a> {
        PartitionIo {
            disk,
            writable,
            start,
            len,
            pos: 0,
            // Everything twice, and the directories and FATs on top: far more than any walk
            // of a sound filesystem reads.
            budget: len.saturating_mul(2).saturating_add(16 << 20),
        }
    }
}

impl Read for PartitionIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        if n as u64 > self.budget {
            return Err(std::io::Error::other(
                "the FAT filesystem reads far more than it holds (a cluster chain loops)",
            ));
        }
        self.budget -= n as u64;
        self.disk
            .read_at(&mut buf[..n], self.start + self.pos)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for PartitionIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.writable {
            return Err(std::io::Error::other("the ESP is read only here"));
        }
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::Error::other("write beyond the end of the ESP"));
        }
        self.disk
            .write_at(&buf[..n], self.start + self.pos)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

/// Every file of the FAT filesystem at `offset`, with its hash. Bounded on hostile input:
/// directory depth, entries, bytes read and the files' total size are limited, so a directory
/// that loops or a cluster chain that cycles is an error, not a hang.
pub fn list_files(disk: &Disk, offset: u64, size: u64) -> Result<Vec<EspFile>> {
    let io = PartitionIo::new(disk, offset, size, false);
    let fs = fatfs::FileSystem::new(io, fatfs::FsOptions::new())
        .context("reading the ESP's FAT filesystem")?;
    let mut out = Vec::new();
    let mut entries = 0usize;
    let mut total = 0u64;
    let mut stack = vec![(String::new(), 0usize, fs.root_dir())];
    while let Some((prefix, depth, dir)) = stack.pop() {
        for (n, entry) in dir.iter().enumerate() {
            let entry = entry.context("reading an ESP directory")?;
            entries += 1;
            if n >= MAX_DIR_ENTRIES || entries > MAX_ENTRIES {
                bail!(
                    "the ESP's directories hold more entries than a FAT allows (a directory loops)"
                );
            }
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{prefix}/{name}");
            if entry.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    bail!(
                        "the ESP's directories nest deeper than {MAX_DEPTH} levels at {path} (a directory loops)"
                    );
                }
                stack.push((path, depth + 1, entry.to_dir()));
            } else {
                total = total.saturating_add(entry.len());
                if total > size {
                    bail!("the ESP's files add up to more than the partition holds (at {path})");
                }
                let mut h = blake3::Hasher::new();
                let mut f = entry.to_file();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f
                        .read(&mut buf)
                        .with_context(|| format!("reading {path} on the ESP"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                out.push(EspFile {
                    path,
                    size: entry.len(),
                    hash: ChunkId(*h.finalize().as_bytes()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub fn find<'a>(files: &'a [EspFile], path: &str) -> Option<&'a EspFile> {
    files.iter().find(|f| f.path.eq_ignore_ascii_case(path))
}

/// A loader (`name`, e.g. "shimx64.efi") in a vendor directory, not the removable path.
pub fn vendor_file<'a>(files: &'a [EspFile], name: &str) -> Option<&'a EspFile> {
    let suffix = format!("/{}", name.to_ascii_lowercase());
    files.iter().find(|f| {
        let l = f.path.to_ascii_lowercase();
        l.ends_with(&suffix) && !l.starts_with("/efi/boot/")
    })
}

pub fn loaders(files: &[EspFile]) -> Vec<String> {
    let has = |suffix: &str| {
        files
            .iter()
            .any(|f| f.path.to_ascii_lowercase().ends_with(suffix))
    };
    let mut out = Vec::new();
    if has("/grubx64.efi") {
        out.push("grub".to_string());
    }
    if has("/shimx64.efi") || has("/mmx64.efi") {
        out.push("shim".to_string());
    }
    if has("/systemd-bootx64.efi") {
        out.push("systemd-boot".to_string());
    }
    if find(files, FALLBACK).is_some() {
        out.push("fallback".to_string());
    }
    out
}

/// The files that make the removable fallback path boot this ESP's system: with shim, shim as
/// BOOTX64.EFI next to the loader it starts (grubx64.efi), the fallback fbx64.efi and
/// MokManager when present; otherwise a copy of the loader. (source path, fallback path).
pub fn fallback_copies(files: &[EspFile]) -> Vec<(String, String)> {
    let vendor = |name: &str| vendor_file(files, name);
    let mut out = Vec::new();
    if let Some(shim) = vendor("shimx64.efi") {
        out.push((shim.path.clone(), FALLBACK.to_string()));
        for name in ["grubx64.efi", "fbx64.efi", "mmx64.efi"] {
            if let Some(f) = vendor(name) {
                out.push((f.path.clone(), format!("/EFI/BOOT/{name}")));
            }
        }
    } else if let Some(l) = vendor("grubx64.efi").or_else(|| vendor("systemd-bootx64.efi")) {
        out.push((l.path.clone(), FALLBACK.to_string()));
    }
    out
}

/// Copies files within the FAT filesystem at `offset` (the target's ESP, already restored).
pub fn copy_files(disk: &Disk, offset: u64, size: u64, copies: &[(String, String)]) -> Result<()> {
    let io = PartitionIo::new(disk, offset, size, true);
    let fs = fatfs::FileSystem::new(io, fatfs::FsOptions::new())
        .context("opening the ESP's FAT filesystem")?;
    {
        let root = fs.root_dir();
        for (from, to) in copies {
            let mut data = Vec::new();
            root.open_file(from.trim_start_matches('/'))
                .and_then(|mut f| f.read_to_end(&mut data))
                .with_context(|| format!("reading {from} on the ESP"))?;
            let to = to.trim_start_matches('/');
            let parts: Vec<&str> = to.split('/').collect();
            let mut dir = root.clone();
            for part in &parts[..parts.len() - 1] {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir
                        .create_dir(part)
                        .with_context(|| format!("creating {part} on the ESP"))?,
                };
            }
            let mut f = dir
                .create_file(parts[parts.len() - 1])
                .with_context(|| format!("creating {to} on the ESP"))?;
            f.truncate().with_context(|| format!("truncating {to}"))?;
            f.write_all(&data)
                .with_context(|| format!("writing {to} on the ESP"))?;
            f.flush()?;
        }
    }
    fs.unmount().context("closing the ESP's FAT filesystem")?;
    Ok(())
}

//! The EFI system partition, read in userspace with the `fatfs` crate (the host kernel may
//! have no vfat): its files and their hashes, and which UEFI loaders it carries.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result};
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

/// A partition of a `Disk` as a read-only file for `fatfs`.
struct PartitionIo<'a> {
    disk: &'a Disk,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for PartitionIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.disk
            .read_at(&mut buf[..n], self.start + self.pos)
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for PartitionIo<'_> {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the ESP is read only here"))
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

/// Every file of the FAT filesystem at `offset`, with its hash.
pub fn list_files(disk: &Disk, offset: u64, size: u64) -> Result<Vec<EspFile>> {
    let io = PartitionIo {
        disk,
        start: offset,
        len: size,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(io, fatfs::FsOptions::new())
        .context("reading the ESP's FAT filesystem")?;
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = stack.pop() {
        for entry in dir.iter() {
            let entry = entry.context("reading an ESP directory")?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{prefix}/{name}");
            if entry.is_dir() {
                if stack.len() < 64 {
                    stack.push((path, entry.to_dir()));
                }
            } else {
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

//! GRUB for BIOS: boot.img in LBA 0 holds the LBA of the core image (0x5c); the core image's
//! first sector (diskboot.img) holds a sector list, growing down from 0x1f4, of where the rest
//! of the core image lies: in the BIOS boot partition on GPT, in the post-MBR gap on MBR.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::disk::Disk;
use crate::disk::layout::{DiskLayout, TableInfo};

use super::Link;

/// Offset in LBA 0 of the core image's first sector (u64).
pub const KERNEL_SECTOR: usize = 0x5c;
/// Offset in the core image's first sector of its first sector-list entry.
const LIST_START: usize = 0x1f4;
const LIST_ENTRY: usize = 12;
const MAX_ENTRIES: usize = 30;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrubBios {
    /// LBA of the core image's first sector, as boot.img says.
    pub core_lba: u64,
    /// "bios-boot partition N" or "post-MBR gap".
    pub core_location: String,
    /// (start LBA, sector count) entries of the core image's sector list.
    pub sector_list: Vec<(u64, u16)>,
    /// Hash of the core image (first sector and every listed sector, in order).
    pub core_hash: ChunkId,
}

pub fn is_grub_boot_code(lba0: &[u8]) -> bool {
    lba0.len() >= 440 && lba0[..440].windows(4).any(|w| w == b"GRUB")
}

fn sector_list(first: &[u8]) -> Vec<(u64, u16)> {
    let mut out = Vec::new();
    for k in 0..MAX_ENTRIES {
        let Some(at) = LIST_START.checked_sub(k * LIST_ENTRY) else {
            break;
        };
        let start = u64::from_le_bytes(first[at..at + 8].try_into().expect("8 bytes"));
        let len = u16::from_le_bytes([first[at + 8], first[at + 9]]);
        if len == 0 {
            break;
        }
        out.push((start, len));
    }
    out
}

/// Where a core image may live on this layout: (first byte, end byte, name).
fn core_area(layout: &DiskLayout, ss: u64) -> Option<(u64, u64, String)> {
    match layout.table {
        TableInfo::Gpt { .. } => layout
            .partitions
            .iter()
            .find(|p| p.role == "bios-boot")
            .map(|p| {
                (
                    p.offset,
                    p.end(),
                    format!("bios-boot partition {}", p.number),
                )
            }),
        TableInfo::Mbr { .. } => {
            let first = layout
                .partitions
                .iter()
                .map(|p| p.offset)
                .min()
                .unwrap_or(0);
            Some((ss, first, "post-MBR gap".to_string()))
        }
        TableInfo::None => None,
    }
}

/// Reads the chain as it is on `disk`. None when LBA 0 holds no GRUB boot code.
pub fn read(disk: &Disk, layout: &DiskLayout) -> Option<Result<GrubBios, String>> {
    let ss = u64::from(disk.logical_sector_size);
    let lba0 = disk.read_vec(0, ss).ok()?;
    if !is_grub_boot_code(&lba0) {
        return None;
    }
    Some((|| {
        let core_lba = u64::from_le_bytes(
            lba0[KERNEL_SECTOR..KERNEL_SECTOR + 8]
                .try_into()
                .expect("8 bytes"),
        );
        let (start, end, name) =
            core_area(layout, ss).ok_or("no BIOS boot partition or gap for the core image")?;
        let first_off = core_lba
            .checked_mul(ss)
            .filter(|o| *o >= start && o + ss <= end)
            .ok_or_else(|| {
                format!(
                    "boot code points at LBA {core_lba}, outside the {name} (bytes {start}..{end})"
                )
            })?;
        let first = disk.read_vec(first_off, ss).map_err(|e| format!("{e:#}"))?;
        let list = sector_list(&first);
        if list.is_empty() {
            return Err(format!(
                "the sector at LBA {core_lba} is not a GRUB core image (empty sector list)"
            ));
        }
        let mut h = blake3::Hasher::new();
        h.update(&first);
        for &(s, n) in &list {
            let off = s
                .checked_mul(ss)
                .filter(|o| *o >= start && o + u64::from(n) * ss <= end)
                .ok_or_else(|| {
                    format!("core image sector list entry LBA {s}+{n} lies outside the {name}")
                })?;
            let bytes = disk
                .read_vec(off, u64::from(n) * ss)
                .map_err(|e| format!("{e:#}"))?;
            h.update(&bytes);
        }
        Ok(GrubBios {
            core_lba,
            core_location: name,
            sector_list: list,
            core_hash: ChunkId(*h.finalize().as_bytes()),
        })
    })())
}

/// The links of the chain, each checked; `captured` adds the comparison with the snapshot.
pub fn check(disk: &Disk, layout: &DiskLayout, captured: Option<&GrubBios>) -> Vec<Link> {
    let ss = u64::from(disk.logical_sector_size);
    let lba0 = disk.read_vec(0, ss).unwrap_or_default();
    let mut links = vec![Link::new(
        "grub-bios: boot code",
        is_grub_boot_code(&lba0),
        if is_grub_boot_code(&lba0) {
            "LBA 0 holds GRUB's boot.img"
        } else {
            "LBA 0 holds no GRUB boot code"
        },
    )];
    if !links[0].ok {
        return links;
    }
    match read(disk, layout) {
        Some(Ok(found)) => {
            links.push(Link::new(
                "grub-bios: core image pointer",
                true,
                &format!(
                    "boot code points at LBA {} in the {}",
                    found.core_lba, found.core_location
                ),
            ));
            links.push(Link::new(
                "grub-bios: sector list",
                true,
                &format!(
                    "{} entries, all inside the {}",
                    found.sector_list.len(),
                    found.core_location
                ),
            ));
            if let Some(c) = captured {
                let same = c.core_hash == found.core_hash && c.core_lba == found.core_lba;
                links.push(Link::new(
                    "grub-bios: core image",
                    same,
                    if same {
                        "hashes as captured"
                    } else {
                        "differs from the core image captured in the snapshot"
                    },
                ));
            }
        }
        Some(Err(why)) => links.push(Link::new("grub-bios: core image", false, &why)),
        None => {}
    }
    links
}

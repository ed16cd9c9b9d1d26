//! Boot loaders on a new layout (`--keep-table`: the target's own partition table is kept and
//! each partition restored into the target partition of the same number): the bytes that
//! must change so the chain still holds when a partition moved. GRUB for BIOS: the core
//! image's LBA in the boot code (0x5c) and every start in its sector list; EXTLINUX: the
//! hidden-sectors field of its volume boot record.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::ComponentId;
use crate::boot::BootLoader;
use crate::boot::extlinux::HIDDEN_SECTORS;
use crate::boot::grub_bios::KERNEL_SECTOR;
use crate::hex::Hex;
use crate::manifest::DiskRecord;

/// Bytes to overwrite in one chunk of a component, after it was fetched and verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPatch {
    pub chunk: u64,
    /// (offset within the chunk, bytes).
    pub writes: Vec<(u64, Hex)>,
    /// Hash of the chunk after patching; set by the planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<crate::chunk::ChunkId>,
}

fn hex(b: &[u8]) -> Hex {
    Hex(b.to_vec())
}

impl ChunkPatch {
    pub fn apply(&self, bytes: &mut [u8]) -> Result<()> {
        for (at, data) in &self.writes {
            let range = usize::try_from(*at)
                .ok()
                .and_then(|at| Some(at..at.checked_add(data.0.len())?))
                .filter(|r| r.end <= bytes.len());
            let Some(range) = range else {
                bail!("patch at byte {at} lies outside the chunk");
            };
            bytes[range].copy_from_slice(&data.0);
        }
        Ok(())
    }
}

/// Patches per component (the boot-code region, a partition).
pub type Patches = Vec<(ComponentId, Vec<ChunkPatch>)>;

/// What must change for the recorded boot loaders when partition `number` moves from its
/// snapshot offset to `new_offset(number)`. Refuses when the new BIOS boot partition is too
/// small for the core image, or GRUB's gap is cut by a partition.
pub fn patches(
    d: &DiskRecord,
    chunk_size: u64,
    new_offset: &dyn Fn(u32) -> Option<(u64, u64)>,
) -> Result<Patches> {
    let ss = u64::from(d.logical_sector_size);
    let mut out: Patches = Vec::new();
    for l in &d.boot_loaders {
        match l {
            BootLoader::GrubBios(g) => {
                let core_start = g.core_lba * ss;
                let core_end = g
                    .sector_list
                    .iter()
                    .map(|&(s, n)| (s + u64::from(n)) * ss)
                    .max()
                    .unwrap_or(core_start + ss);
                let Some(bios) = d
                    .partitions
                    .iter()
                    .find(|p| p.info.offset <= core_start && core_start < p.info.end())
                else {
                    // In the post-MBR gap: it stays where it is; the new first partition must not cut it.
                    let first = d
                        .partitions
                        .iter()
                        .filter_map(|p| new_offset(p.info.number))
                        .map(|(o, _)| o)
                        .min();
                    if let Some(first) = first.filter(|&f| f < core_end) {
                        bail!(
                            "GRUB's core image lies in the post-MBR gap up to byte {core_end}, but the target's first partition starts at byte {first}: it would be overwritten"
                        );
                    }
                    continue;
                };
                let Some((new, new_size)) = new_offset(bios.info.number) else {
                    continue;
                };
                let needed = core_end - bios.info.offset;
                if new_size < needed {
                    bail!(
                        "the BIOS boot partition {} on the target holds {} bytes, GRUB's core image needs {needed}: make it at least that large",
                        bios.info.number,
                        new_size
                    );
                }
                if new == bios.info.offset {
                    continue;
                }
                let delta = (new as i128 - bios.info.offset as i128) / i128::from(ss);
                let moved = |lba: u64| (lba as i128 + delta) as u64;
                out.push((
                    ComponentId::Region("boot-code".into()),
                    vec![ChunkPatch {
                        chunk: 0,
                        writes: vec![(KERNEL_SECTOR as u64, hex(&moved(g.core_lba).to_le_bytes()))],
                        expected: None,
                    }],
                ));
                let first_in_part = core_start - bios.info.offset;
                let chunk = first_in_part / chunk_size;
                let base = first_in_part % chunk_size;
                let writes = g
                    .sector_list
                    .iter()
                    .enumerate()
                    .map(|(k, &(s, _))| {
                        (base + 0x1f4 - 12 * k as u64, hex(&moved(s).to_le_bytes()))
                    })
                    .collect();
                out.push((
                    ComponentId::Partition(bios.info.number),
                    vec![ChunkPatch {
                        chunk,
                        writes,
                        expected: None,
                    }],
                ));
            }
            BootLoader::Extlinux(e) => {
                let Some(p) = d.partitions.iter().find(|p| p.info.number == e.partition) else {
                    continue;
                };
                let Some((new, _)) = new_offset(p.info.number) else {
                    continue;
                };
                if new == p.info.offset {
                    continue;
                }
                let lba = u32::try_from(new / ss)
                    .map_err(|_| anyhow::anyhow!("EXTLINUX partition beyond 2 TiB"))?;
                out.push((
                    ComponentId::Partition(p.info.number),
                    vec![ChunkPatch {
                        chunk: 0,
                        writes: vec![(HIDDEN_SECTORS as u64, hex(&lba.to_le_bytes()))],
                        expected: None,
                    }],
                ));
            }
            BootLoader::Uefi(_) => {}
        }
    }
    Ok(out)
}

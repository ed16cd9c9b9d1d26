//! The partition-table sectors a target must end up with: the captured sectors byte for byte
//! on a disk of the snapshot's size, or with the GPT backup moved to the end (and the header
//! fields and CRCs that depend on it patched) on a disk of another size.

use anyhow::{Context, Result, bail, ensure};

use crate::chunk::ChunkId;
use crate::disk::gpt;
use crate::disk::layout::TableInfo;
use crate::manifest::DiskRecord;
use crate::store::Store;
use crate::units;

pub struct TableSectorBytes {
    pub name: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Every table sector for the target, in the order they must be written: GPT backup before
/// primary, EBRs before the MBR, LBA 0 last.
pub fn expected(
    store: &Store,
    d: &DiskRecord,
    target_size: u64,
    grow_last: bool,
) -> Result<Expected> {
    let ss = u64::from(d.logical_sector_size);
    let raw = |name: &str| -> Result<Option<(u64, Vec<u8>)>> {
        let Some(t) = d.table_sectors.iter().find(|t| t.name == name) else {
            return Ok(None);
        };
        let bytes = store
            .get_chunk(&t.chunk, t.length as usize)
            .with_context(|| format!("table sector {name} of disk {}", d.name))?;
        Ok(Some((t.offset, bytes)))
    };
    let need = |name: &str| -> Result<(u64, Vec<u8>)> {
        raw(name)?
            .with_context(|| format!("snapshot disk {} lacks its {name} table sector", d.name))
    };
    let data_end = d.partitions.iter().map(|p| p.info.end()).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut grown = None;
    match &d.table {
        TableInfo::None => {
            ensure!(
                target_size >= data_end,
                "target is too small: snapshot disk {} needs {} ({} bytes), the target has {} bytes",
                d.name,
                units::bytes(data_end),
                data_end,
                target_size
            );
            ensure!(
                !grow_last,
                "--grow-last: snapshot disk {} has no partition table, so there is no partition to grow",
                d.name
            );
        }
        TableInfo::Mbr { .. } => {
            let mut ends = data_end;
            for t in d
                .table_sectors
                .iter()
                .filter(|t| t.name.starts_with("ebr-"))
            {
                ends = ends.max(t.offset + t.length);
                let (offset, bytes) = need(&t.name)?;
                out.push(TableSectorBytes {
                    name: t.name.clone(),
                    offset,
                    bytes,
                });
            }
            ensure!(
                target_size >= ends,
                "target is too small: the partitions of snapshot disk {} end at byte {ends}, the target has {target_size} bytes",
                d.name
            );
            let (offset, mut bytes) = need("mbr")?;
            if grow_last {
                grown = Some(grow_last_mbr(d, &mut bytes, target_size / ss, ss)?);
            }
            out.push(TableSectorBytes {
                name: "mbr".into(),
                offset,
                bytes,
            });
        }
        TableInfo::Gpt { .. } => {
            let target_sectors = target_size / ss;
            let (mbr_off, mut mbr) = need("mbr")?;
            let (ph_off, primary_header) = need("gpt-primary-header")?;
            let (pe_off, primary_entries) = need("gpt-primary-entries")?;
            let backup = match (raw("gpt-backup-entries")?, raw("gpt-backup-header")?) {
                (Some(e), Some(h)) if target_size == d.size && !grow_last => Some((e, h)),
                _ => None,
            };
            let mut primary_entries = primary_entries;
            let (backup_entries, backup_header, primary_header) = match backup {
                Some((e, h)) => (e, h, primary_header),
                None => {
                    let r = gpt::relocate(&primary_header, ss, target_sectors).map_err(|e| {
                        anyhow::anyhow!(
                            "target is too small for snapshot disk {} ({e:#}): it has {} bytes",
                            d.name,
                            target_size
                        )
                    })?;
                    if (r.last_usable_lba + 1) * ss < data_end {
                        bail!(
                            "target is too small: the partitions of snapshot disk {} end at byte {data_end}, \
                             a target of {target_size} bytes has room up to byte {} (GPT backup included)",
                            d.name,
                            (r.last_usable_lba + 1) * ss
                        );
                    }
                    gpt::patch_protective_mbr(&mut mbr, d.sector_count(), target_sectors);
                    let (mut primary, mut backup) = (r.primary_header, r.backup_header);
                    if grow_last {
                        let h = gpt::GptHeader::parse(&primary, 1)?;
                        let (n, old, new) =
                            gpt::grow_last(&h, &mut primary_entries, r.last_usable_lba)?;
                        gpt::set_entries_crc(&mut primary, &primary_entries)?;
                        gpt::set_entries_crc(&mut backup, &primary_entries)?;
                        grown = Some(grown_note(n, old, new, ss));
                    }
                    (
                        (r.backup_entries_lba * ss, primary_entries.clone()),
                        (r.backup_header_lba * ss, backup),
                        primary,
                    )
                }
            };
            out.push(TableSectorBytes {
                name: "gpt-backup-entries".into(),
                offset: backup_entries.0,
                bytes: backup_entries.1,
            });
            out.push(TableSectorBytes {
                name: "gpt-backup-header".into(),
                offset: backup_header.0,
                bytes: backup_header.1,
            });
            out.push(TableSectorBytes {
                name: "gpt-primary-entries".into(),
                offset: pe_off,
                bytes: primary_entries,
            });
            out.push(TableSectorBytes {
                name: "gpt-primary-header".into(),
                offset: ph_off,
                bytes: primary_header,
            });
            out.push(TableSectorBytes {
                name: "mbr".into(),
                offset: mbr_off,
                bytes: mbr,
            });
        }
    }
    for t in &out {
        ensure!(
            t.offset + t.bytes.len() as u64 <= target_size,
            "target is too small: table sector {} of snapshot disk {} ends beyond the target's {target_size} bytes",
            t.name,
            d.name
        );
    }
    Ok(Expected {
        sectors: out,
        grown,
    })
}

/// The table sectors, plus what --grow-last changed, for the plan to say.
pub struct Expected {
    pub sectors: Vec<TableSectorBytes>,
    pub grown: Option<String>,
}

fn grown_note(number: u32, old_sectors: u64, new_sectors: u64, ss: u64) -> String {
    format!(
        "--grow-last: partition {number} grows from {} to {}; the filesystem itself is not grown (run resize2fs, xfs_growfs or similar after boot)",
        units::bytes(old_sectors * ss),
        units::bytes(new_sectors * ss),
    )
}

/// Grows the primary partition that starts last to the end of the disk (bytes 440..512 of LBA 0).
fn grow_last_mbr(d: &DiskRecord, mbr: &mut [u8], target_sectors: u64, ss: u64) -> Result<String> {
    let last = d
        .partitions
        .iter()
        .max_by_key(|p| p.info.offset)
        .context("no partition to grow")?;
    ensure!(
        (1..=4).contains(&last.info.number),
        "--grow-last: the last partition of snapshot disk {} is logical partition {}; only a primary partition can be grown",
        d.name,
        last.info.number
    );
    let e = 6 + 16 * (last.info.number as usize - 1);
    let start = u64::from(u32::from_le_bytes(
        mbr[e + 8..e + 12].try_into().expect("4 bytes"),
    ));
    let old = u64::from(u32::from_le_bytes(
        mbr[e + 12..e + 16].try_into().expect("4 bytes"),
    ));
    let new = target_sectors.min(u64::from(u32::MAX)) - start;
    ensure!(
        new >= old,
        "--grow-last: the target is smaller than the last partition"
    );
    mbr[e + 12..e + 16].copy_from_slice(&(new as u32).to_le_bytes());
    Ok(grown_note(last.info.number, old, new, ss))
}

impl TableSectorBytes {
    pub fn hash(&self) -> ChunkId {
        ChunkId::of(&self.bytes)
    }

    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.offset + self.bytes.len() as u64)
    }
}

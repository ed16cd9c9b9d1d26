//! The partition-table sectors a target must end up with: the captured sectors byte for byte
//! on a disk of the snapshot's size, or with the GPT backup moved to the end (and the header
//! fields and CRCs that depend on it patched) on a disk of another size.

use anyhow::{Context, Result, bail, ensure};

use crate::chunk::ChunkId;
use crate::disk::gpt;
use crate::disk::layout::TableInfo;
use crate::manifest::{DiskRecord, TableSectorRecord};
use crate::store::Store;
use crate::units;

#[derive(Debug)]
pub struct TableSectorBytes {
    pub name: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Every table sector for the target, in the order they must be written: GPT backup before
/// primary, EBRs before the MBR, LBA 0 last. The captured bytes come from the store.
pub fn expected(
    store: &Store,
    d: &DiskRecord,
    target_size: u64,
    grow_last: bool,
) -> Result<Expected> {
    expected_from(
        d,
        &|t: &TableSectorRecord| store.get_chunk(&t.chunk, t.length as usize),
        target_size,
        grow_last,
    )
}

/// `expected`, with the captured bytes of each table sector from `captured`.
pub fn expected_from(
    d: &DiskRecord,
    captured: &dyn Fn(&TableSectorRecord) -> Result<Vec<u8>>,
    target_size: u64,
    grow_last: bool,
) -> Result<Expected> {
    let ss = u64::from(d.logical_sector_size);
    let raw = |name: &str| -> Result<Option<(u64, Vec<u8>)>> {
        let Some(t) = d.table_sectors.iter().find(|t| t.name == name) else {
            return Ok(None);
        };
        let bytes =
            captured(t).with_context(|| format!("table sector {name} of disk {}", d.name))?;
        ensure!(
            bytes.len() as u64 == t.length,
            "table sector {name} of disk {} holds {} bytes, the manifest says {}",
            d.name,
            bytes.len(),
            t.length
        );
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
                    let room = r.last_usable_lba.saturating_add(1).saturating_mul(ss);
                    if room < data_end {
                        bail!(
                            "target is too small: the partitions of snapshot disk {} end at byte {data_end}, \
                             a target of {target_size} bytes has room up to byte {} (GPT backup included)",
                            d.name,
                            room
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
#[derive(Debug, Default)]
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
    ensure!(mbr.len() >= 72, "the captured MBR sector is truncated");
    let e = 6 + 16 * (last.info.number as usize - 1);
    let start = u64::from(u32::from_le_bytes(
        mbr[e + 8..e + 12].try_into().expect("4 bytes"),
    ));
    let old = u64::from(u32::from_le_bytes(
        mbr[e + 12..e + 16].try_into().expect("4 bytes"),
    ));
    let new = target_sectors
        .min(u64::from(u32::MAX))
        .checked_sub(start)
        .filter(|&new| new >= old)
        .context("--grow-last: the target is smaller than the last partition")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt::GptHeader;
    use std::collections::HashMap;

    const SECTORS: u64 = 2048;

    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], o: usize, v: u64) {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn header(my: u64, alt: u64, entries_lba: u64, entries: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(gpt::SIGNATURE);
        put32(&mut h, 8, 0x0001_0000);
        put32(&mut h, 12, 92);
        put64(&mut h, 24, my);
        put64(&mut h, 32, alt);
        put64(&mut h, 40, 34);
        put64(&mut h, 48, SECTORS - 34);
        h[56..72].copy_from_slice(&[0xab; 16]);
        put64(&mut h, 72, entries_lba);
        put32(&mut h, 80, 128);
        put32(&mut h, 84, 128);
        put32(&mut h, 88, crc32fast::hash(entries));
        let crc = crc32fast::hash(&h[..92]);
        put32(&mut h, 16, crc);
        h
    }

    /// A 1 MiB GPT disk with one partition (LBA 40..1000), as captured.
    fn gpt_disk() -> (DiskRecord, HashMap<String, Vec<u8>>) {
        let mut entries = vec![0u8; 128 * 128];
        entries[..16].copy_from_slice(&[0x11; 16]);
        entries[16..32].copy_from_slice(&[0x22; 16]);
        put64(&mut entries, 32, 40);
        put64(&mut entries, 40, 1000);
        let mut mbr = vec![0u8; 72];
        mbr[6 + 4] = 0xEE;
        put32(&mut mbr, 6 + 8, 1);
        put32(&mut mbr, 6 + 12, (SECTORS - 1) as u32);
        mbr[70] = 0x55;
        mbr[71] = 0xAA;
        let sectors: Vec<(&str, u64, Vec<u8>)> = vec![
            ("mbr", 440, mbr),
            (
                "gpt-primary-header",
                512,
                header(1, SECTORS - 1, 2, &entries),
            ),
            ("gpt-primary-entries", 1024, entries.clone()),
            ("gpt-backup-entries", (SECTORS - 33) * 512, entries.clone()),
            (
                "gpt-backup-header",
                (SECTORS - 1) * 512,
                header(SECTORS - 1, 1, SECTORS - 33, &entries),
            ),
        ];
        let d: DiskRecord = serde_json::from_value(serde_json::json!({
            "name": "sda", "source": "/dev/sda", "size": SECTORS * 512,
            "logical_sector_size": 512, "physical_sector_size": 512,
            "table": {"kind": "gpt", "disk_guid": "X", "first_usable_lba": 34,
                      "last_usable_lba": SECTORS - 34, "entries_lba": 2, "entry_count": 128,
                      "entry_size": 128, "backup_header_lba": SECTORS - 1,
                      "backup_entries_lba": SECTORS - 33},
            "table_sectors": sectors.iter().map(|(n, o, b)| serde_json::json!({
                "name": n, "offset": o, "length": b.len(),
                "chunk": ChunkId::of(b).to_hex()})).collect::<Vec<_>>(),
            "boot_regions": [],
            "partitions": [{"number": 1, "offset": 40 * 512, "size": 961 * 512,
                            "type_id": "", "role": "data",
                            "index": ChunkId::of(b"i").to_hex(), "chunks": 1, "zero_chunks": 0}],
        }))
        .unwrap();
        let bytes = sectors
            .into_iter()
            .map(|(n, _, b)| (n.to_string(), b))
            .collect();
        (d, bytes)
    }

    fn run(
        d: &DiskRecord,
        bytes: &HashMap<String, Vec<u8>>,
        size: u64,
        grow: bool,
    ) -> Result<Expected> {
        expected_from(d, &|t| Ok(bytes[&t.name].clone()), size, grow)
    }

    #[test]
    fn same_size_gives_the_captured_sectors_backup_first_lba0_last() {
        let (d, bytes) = gpt_disk();
        let e = run(&d, &bytes, SECTORS * 512, false).unwrap();
        let names: Vec<&str> = e.sectors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gpt-backup-entries",
                "gpt-backup-header",
                "gpt-primary-entries",
                "gpt-primary-header",
                "mbr"
            ]
        );
        for s in &e.sectors {
            assert_eq!(s.bytes, bytes[&s.name], "{} is byte-exact", s.name);
        }
        assert!(e.grown.is_none());
    }

    #[test]
    fn a_larger_disk_gets_the_backup_at_its_end_with_valid_crcs() {
        let (d, bytes) = gpt_disk();
        let big = 4 * SECTORS;
        let e = run(&d, &bytes, big * 512, false).unwrap();
        let get = |n: &str| e.sectors.iter().find(|s| s.name == n).unwrap();
        let backup = get("gpt-backup-header");
        assert_eq!(backup.offset, (big - 1) * 512);
        let b = GptHeader::parse(&backup.bytes, big - 1).unwrap();
        assert_eq!((b.alternate_lba, b.entries_lba), (1, big - 33));
        assert_eq!(get("gpt-backup-entries").offset, (big - 33) * 512);
        let p = GptHeader::parse(&get("gpt-primary-header").bytes, 1).unwrap();
        assert_eq!((p.alternate_lba, p.last_usable_lba), (big - 1, big - 34));
        assert!(p.entries_match(&get("gpt-primary-entries").bytes));
        // The protective MBR entry covers the new disk; nothing else in LBA 0 changed.
        let mbr = &get("mbr").bytes;
        assert_eq!(&mbr[6 + 12..6 + 16], &((big - 1) as u32).to_le_bytes());
        assert_eq!(&mbr[..6 + 12], &bytes["mbr"][..6 + 12]);
    }

    #[test]
    fn grow_last_extends_the_last_entry_and_keeps_both_crcs_valid() {
        let (d, bytes) = gpt_disk();
        let big = 4 * SECTORS;
        let e = run(&d, &bytes, big * 512, true).unwrap();
        let get = |n: &str| e.sectors.iter().find(|s| s.name == n).unwrap();
        let entries = &get("gpt-primary-entries").bytes;
        assert_eq!(&entries[40..48], &(big - 34).to_le_bytes());
        let p = GptHeader::parse(&get("gpt-primary-header").bytes, 1).unwrap();
        let b = GptHeader::parse(&get("gpt-backup-header").bytes, big - 1).unwrap();
        assert!(p.entries_match(entries) && b.entries_match(&get("gpt-backup-entries").bytes));
        assert!(e.grown.unwrap().contains("partition 1 grows"));
    }

    #[test]
    fn too_small_and_damaged_inputs_are_errors_not_panics() {
        let (d, bytes) = gpt_disk();
        let err = run(&d, &bytes, 900 * 512, false).unwrap_err();
        assert!(format!("{err:#}").contains("too small"), "{err:#}");
        for name in ["gpt-primary-header", "gpt-primary-entries", "mbr"] {
            let mut short = bytes.clone();
            short.get_mut(name).unwrap().truncate(10);
            assert!(run(&d, &short, 4 * SECTORS * 512, true).is_err(), "{name}");
        }
        let mut wrong = bytes.clone();
        wrong.get_mut("gpt-primary-header").unwrap()[100] ^= 1;
        // The header CRC covers only 92 bytes: relocation still works from the same fields.
        assert!(run(&d, &wrong, 4 * SECTORS * 512, false).is_ok());
        wrong.get_mut("gpt-primary-header").unwrap()[60] ^= 1;
        assert!(run(&d, &wrong, 4 * SECTORS * 512, false).is_err());
    }
}

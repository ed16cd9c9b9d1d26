//! The reading half of the planner: looks at one target disk (never writes) and compares it
//! with one snapshot disk: table sectors, boot regions, partition chunks, the ESP's files and
//! this machine's NVRAM. The result is `Findings` and a fingerprint of everything read; no
//! verdict is made here (`decide` makes them). Contents are always compared at the
//! snapshot's offsets: after apply the table is the snapshot's, so that is where every
//! partition's bytes must be correct.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::relocate::{self, ChunkPatch};
use super::{Action, ComponentId, Mode, Settings, table};
use crate::boot::efivars::{self, LoadOption};
use crate::boot::esp::{self, EspFile};
use crate::chunk::ChunkId;
use crate::disk::extfs::{ChunkUse, UsedMap};
use crate::disk::layout::{self, DiskLayout, TableInfo};
use crate::disk::{Disk, fs, scan};
use crate::manifest::DiskRecord;
use crate::progress::Progress;
use crate::store::Store;
use crate::store::index::ChunkIndex;

/// Regions larger than this are only spot-checked by a quick plan.
const QUICK_REGION_LIMIT: u64 = 16 << 20;

/// What reading one target against one snapshot disk found.
pub struct Findings {
    pub target_size: u64,
    pub sector_size: u32,
    pub is_block_device: bool,
    /// BLAKE3 (hex) over everything read from the target, in a fixed order.
    pub fingerprint: String,
    /// The read rate measured on large reads, for the time estimate.
    pub rate: Option<f64>,
    /// The target's own layout as it is now (None when unreadable).
    pub current: Option<DiskLayout>,
    pub table: TableFinding,
    pub regions: Vec<RegionFinding>,
    pub partitions: Vec<PartitionFinding>,
    /// The files on the target at the snapshot's ESP, when the snapshot has one.
    pub esp_files: Option<Vec<EspFile>>,
    /// This machine's NVRAM boot entries; None when it is not a UEFI system.
    pub nvram: Option<NvramFinding>,
    /// --grow-last: what grows.
    pub grown: Option<String>,
    /// Why apply would refuse the target right now (mounted, swap, ...), if it would.
    pub in_use: Option<String>,
    pub not_checked: Vec<String>,
    /// Partitions whose sampled chunks all differed, so that their data chunks are written
    /// without reading them first: what was sampled and what that decided.
    pub sampled: Vec<String>,
}

pub struct NvramFinding {
    /// Boot#### entries that parse.
    pub entries: Vec<(u16, LoadOption)>,
    /// Every Boot#### number in use, also by entries that do not parse.
    pub used: Vec<u16>,
}

pub enum TableFinding {
    /// The snapshot disk has no partition table.
    None,
    /// --keep-table: the target's own table stays.
    Kept,
    Compared {
        /// Every sector the target must end up with, in write order.
        expected: Vec<table::TableSectorBytes>,
        /// Positions (in `expected`) of the sectors whose bytes differ on the target.
        differing: Vec<usize>,
        /// The table as an operator would describe it ("GPT primary: header is blank; ...").
        state: String,
    },
}

pub struct RegionFinding {
    pub name: String,
    pub offset: u64,
    pub length: u64,
    pub index: ChunkId,
    pub check: RegionCheck,
}

pub enum RegionCheck {
    /// Not compared: it lies beyond the end of the target.
    BeyondEnd,
    /// Not compared: a table sector of this target (or, on a kept table, a partition) lies there.
    OverlapsTable,
    Compared(Comparison),
}

/// A chunked component compared with its index.
pub struct Comparison {
    /// The index as stored.
    pub stored: ChunkIndex,
    /// The chunks it must hold after boot-loader patches (None: nothing is patched).
    pub patched: Option<ChunkIndex>,
    pub patches: Vec<ChunkPatch>,
    /// Chunk numbers whose bytes on the target differ from `effective`.
    pub differ: Vec<u64>,
}

impl Comparison {
    /// The chunks the target must hold.
    pub fn effective(&self) -> &ChunkIndex {
        self.patched.as_ref().unwrap_or(&self.stored)
    }
}

pub struct PartitionFinding {
    pub number: u32,
    /// Where the snapshot had it, and where it goes on the target (differs under --keep-table).
    pub snapshot_offset: u64,
    pub offset: u64,
    pub size: u64,
    pub holds: String,
    pub index: ChunkId,
    /// The current table puts this partition number elsewhere (it is written in full).
    pub moved: Option<String>,
    pub comparison: Comparison,
}

pub fn read(
    store: &Store,
    d: &DiskRecord,
    disk: &Disk,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<Findings> {
    let mode = settings.mode;
    ensure!(
        disk.logical_sector_size == d.logical_sector_size,
        "snapshot disk {} has {}-byte sectors but target {} has {}-byte sectors; converting between sector sizes is not supported",
        d.name,
        d.logical_sector_size,
        disk.path.display(),
        disk.logical_sector_size
    );
    let current = layout::read_layout(disk).ok();
    // --keep-table: the target's own table stays; each partition goes into the target
    // partition of the same number, and boot loaders are patched for the ones that moved.
    let placement = if settings.keep_table {
        Some(keep_table_placement(d, disk, current.as_ref())?)
    } else {
        None
    };
    let expected = if placement.is_some() {
        table::Expected::default()
    } else {
        table::expected(store, d, disk.size, settings.grow_last).with_context(|| {
            format!(
                "planning snapshot disk {} onto {}",
                d.name,
                disk.path.display()
            )
        })?
    };
    let patches = match &placement {
        Some(pl) => relocate::patches(d, u64::from(store.config.chunk_size), &|n| {
            pl.get(&n).copied()
        })?,
        None => Vec::new(),
    };
    if let Some(pl) = &placement {
        // A BIOS boot partition may be smaller when the core image fits (checked just above),
        // but what is written must still fit the target's partition.
        for p in &d.partitions {
            if let Some(&(_, size)) = pl.get(&p.info.number)
                && size < p.info.size
            {
                bail!(
                    "--keep-table: partition {} on the target holds {} bytes, the snapshot's {} ({} bytes) does not fit; make it at least that large",
                    p.info.number,
                    size,
                    p.info.title(),
                    p.info.size
                );
            }
        }
    }
    let mut fp = blake3::Hasher::new();
    fp.update(format!("{:?} {} {}", mode, disk.size, disk.logical_sector_size).as_bytes());
    let mut not_checked = Vec::new();

    let table = if placement.is_some() {
        TableFinding::Kept
    } else if matches!(d.table, TableInfo::None) {
        TableFinding::None
    } else {
        let mut differing = Vec::new();
        for (i, t) in expected.sectors.iter().enumerate() {
            let have = disk.read_vec(t.offset, t.bytes.len() as u64)?;
            fp.update(&have);
            if have != t.bytes {
                differing.push(i);
            }
        }
        let names: Vec<String> = differing
            .iter()
            .map(|&i| expected.sectors[i].name.clone())
            .collect();
        let state = table_state(d, disk, &expected.sectors, &names);
        TableFinding::Compared {
            expected: expected.sectors,
            differing,
            state,
        }
    };

    let scan_total: u64 = match mode {
        Mode::Deep => {
            d.partitions.iter().map(|p| p.info.size).sum::<u64>()
                + d.boot_regions.iter().map(|r| r.length).sum::<u64>()
        }
        Mode::Quick => 0,
    };
    progress.start(&format!("check {}", disk.name()), scan_total);
    let started = Instant::now();
    let mut scanned = 0u64;

    let mut table_ranges: Vec<(u64, u64)> = match &table {
        TableFinding::Compared { expected, .. } => expected.iter().map(|t| t.range()).collect(),
        _ => Vec::new(),
    };
    if let (Some(_), Some(cur)) = (&placement, &current) {
        // On a kept table, regions must not touch the target's table or its partitions.
        table_ranges.extend(
            cur.table_sectors
                .iter()
                .map(|t| (t.offset, t.offset + t.length)),
        );
        table_ranges.extend(cur.partitions.iter().map(|p| (p.offset, p.end())));
    }
    let mut regions = Vec::new();
    for r in &d.boot_regions {
        let end = r.offset.saturating_add(r.length);
        let finding = |check| RegionFinding {
            name: r.name.clone(),
            offset: r.offset,
            length: r.length,
            index: r.index,
            check,
        };
        if end > disk.size {
            regions.push(finding(RegionCheck::BeyondEnd));
            continue;
        }
        if table_ranges.iter().any(|&(s, e)| s < end && r.offset < e) {
            regions.push(finding(RegionCheck::OverlapsTable));
            continue;
        }
        let stored = store
            .get_index(&r.index, r.length)
            .with_context(|| format!("boot region {} of disk {}", r.name, d.name))?;
        ensure!(
            stored.length == r.length,
            "chunk index of boot region {} does not match its length",
            r.name
        );
        let id = ComponentId::Region(r.name.clone());
        let (patched_index, region_patches) = patched(store, &id, &stored, &patches)?;
        let effective = patched_index.as_ref().unwrap_or(&stored);
        let last_chunk = effective.chunks.len().saturating_sub(1) as u64;
        let only =
            (mode == Mode::Quick && r.length > QUICK_REGION_LIMIT).then(|| vec![0, last_chunk]);
        if only.is_some() {
            not_checked.push(format!(
                "boot region {}: only its first and last chunk",
                r.name
            ));
        }
        let differ = compare(
            disk,
            r.offset,
            effective,
            only.as_deref(),
            None,
            &mut fp,
            progress,
        )?;
        scanned += if only.is_none() { r.length } else { 0 };
        regions.push(finding(RegionCheck::Compared(Comparison {
            stored,
            patched: patched_index,
            patches: region_patches,
            differ,
        })));
    }

    let mut partitions = Vec::new();
    let mut sampled = Vec::new();
    for p in &d.partitions {
        let info = &p.info;
        let offset = placement
            .as_ref()
            .and_then(|pl| pl.get(&info.number))
            .map(|&(o, _)| o)
            .unwrap_or(info.offset);
        ensure!(
            offset
                .checked_add(info.size)
                .is_some_and(|e| e <= disk.size),
            "{} of snapshot disk {} ends at byte {}, beyond the end of {} ({} bytes)",
            info.title(),
            d.name,
            offset.saturating_add(info.size),
            disk.path.display(),
            disk.size
        );
        let mask = p.used_map(store)?;
        let stored = store
            .get_index(&p.index, info.size)
            .with_context(|| format!("{} of disk {}", info.title(), d.name))?;
        let id = ComponentId::Partition(info.number);
        let (patched_index, part_patches) = patched(store, &id, &stored, &patches)?;
        let effective = patched_index.as_ref().unwrap_or(&stored);
        let moved = current
            .as_ref()
            .filter(|_| placement.is_none())
            .and_then(|l| {
                l.partitions
                    .iter()
                    .find(|c| c.number == info.number && info.number != 0)
                    .filter(|c| {
                        // --grow-last makes the last partition larger in place: not a move.
                        let grown = settings.grow_last && c.size > info.size;
                        c.offset != info.offset || (c.size != info.size && !grown)
                    })
                    .map(|c| {
                        format!(
                            "the current table puts it at byte {} with {} bytes",
                            c.offset, c.size
                        )
                    })
            });
        let name = if info.number == 0 {
            "whole disk".to_string()
        } else {
            format!("partition {}", info.number)
        };
        let differ = match (mode, &moved) {
            (Mode::Quick, Some(_)) => (0..effective.chunks.len() as u64)
                .filter(|&i| !effective.chunks[i as usize].is_free_marker())
                .collect(),
            (Mode::Quick, None) => {
                let critical: BTreeSet<u64> =
                    fs::critical_offsets(disk, offset, info.size, info.filesystem.as_deref())
                        .into_iter()
                        .map(|o| o / u64::from(effective.chunk_size))
                        .filter(|&c| c < effective.chunks.len() as u64)
                        .collect();
                let critical: Vec<u64> = critical.into_iter().collect();
                let unchecked = effective.chunks.len() as u64 - critical.len() as u64;
                if unchecked > 0 {
                    not_checked.push(format!(
                        "{}: {} of {} not hashed (only first, last and superblock chunks)",
                        name,
                        plural(unchecked, "chunk"),
                        effective.chunks.len()
                    ));
                }
                compare(
                    disk,
                    offset,
                    effective,
                    Some(&critical),
                    mask.as_ref(),
                    &mut fp,
                    progress,
                )?
            }
            (Mode::Deep, _) => {
                match sample(disk, offset, effective, mask.as_ref(), &mut fp)? {
                    Some(data_chunks) => {
                        // Every sampled chunk differs (a blank or another disk): the data
                        // chunks are written without being read; only the snapshot's zero
                        // chunks are still checked, since nothing would write them. A wrong
                        // guess costs writes of chunks that were equal, never correctness.
                        let zeros: Vec<u64> = (0..effective.chunks.len() as u64)
                            .filter(|&i| effective.chunks[i as usize].is_zero_marker())
                            .collect();
                        let mut differ = compare(
                            disk,
                            offset,
                            effective,
                            Some(&zeros),
                            mask.as_ref(),
                            &mut fp,
                            progress,
                        )?;
                        sampled.push(format!(
                            "{name}: all {SAMPLES} sampled data chunks differ from the snapshot, so its {} data chunks are written without reading them first",
                            data_chunks.len()
                        ));
                        differ.extend(data_chunks);
                        differ.sort_unstable();
                        differ
                    }
                    None => {
                        scanned += info.size;
                        compare(
                            disk,
                            offset,
                            effective,
                            None,
                            mask.as_ref(),
                            &mut fp,
                            progress,
                        )?
                    }
                }
            }
        };
        partitions.push(PartitionFinding {
            number: info.number,
            snapshot_offset: info.offset,
            offset,
            size: info.size,
            holds: info.filesystem.clone().unwrap_or_else(|| info.role.clone()),
            index: p.index,
            moved,
            comparison: Comparison {
                stored,
                patched: patched_index,
                patches: part_patches,
                differ,
            },
        });
    }
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    let rate = (scanned >= 64 << 20 && secs > 0.0).then(|| scanned as f64 / secs);

    // The ESP as it is now, for the fallback-loader decision; and the NVRAM entries.
    let esp_files = crate::boot::uefi_of(&d.boot_loaders).and_then(|u| {
        let p = partitions.iter().find(|p| p.number == u.esp_partition)?;
        Some(esp::list_files(disk, p.offset, p.size).unwrap_or_default())
    });
    let nvram = efivars::efivars_dir().map(|dir| NvramFinding {
        entries: efivars::boot_entries(&dir),
        used: efivars::boot_numbers(&dir),
    });

    Ok(Findings {
        target_size: disk.size,
        sector_size: disk.logical_sector_size,
        is_block_device: disk.is_block_device,
        fingerprint: fp.finalize().to_hex().to_string(),
        rate,
        current,
        table,
        regions,
        partitions,
        esp_files,
        nvram,
        grown: expected.grown,
        in_use: crate::disk::guard::check_writable(disk, None)
            .err()
            .map(|e| format!("{e:#}")),
        not_checked,
        sampled,
    })
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Chunk numbers (within the component) whose bytes on the target differ from the index.
/// Chunks sampled from a partition before a deep comparison.
const SAMPLES: usize = 16;
/// Partitions with fewer data chunks are simply compared.
const SAMPLE_MIN_CHUNKS: usize = 256;

/// Reads SAMPLES of a partition's data chunks (non-zero, not free), evenly spread. When every
/// one differs from the snapshot, returns all its data chunks: the partition is written
/// without reading the rest. None: compare it in full.
fn sample(
    disk: &Disk,
    offset: u64,
    index: &ChunkIndex,
    mask: Option<&UsedMap>,
    fp: &mut blake3::Hasher,
) -> Result<Option<Vec<u64>>> {
    let data: Vec<u64> = (0..index.chunks.len() as u64)
        .filter(|&i| {
            let c = index.chunks[i as usize];
            !c.is_zero_marker() && !c.is_free_marker()
        })
        .collect();
    if data.len() < SAMPLE_MIN_CHUNKS {
        return Ok(None);
    }
    let picks: Vec<u64> = (0..SAMPLES)
        .map(|k| data[k * (data.len() - 1) / (SAMPLES - 1)])
        .collect();
    let differ = compare(
        disk,
        offset,
        index,
        Some(&picks),
        mask,
        fp,
        &crate::progress::Silent,
    )?;
    Ok((differ.len() == picks.len()).then_some(data))
}

fn compare(
    disk: &Disk,
    offset: u64,
    index: &ChunkIndex,
    only: Option<&[u64]>,
    mask: Option<&UsedMap>,
    fp: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> Result<Vec<u64>> {
    let mut differ = Vec::new();
    match only {
        None => {
            let ids = scan::scan(
                disk,
                offset,
                index.length,
                index.chunk_size,
                mask,
                progress,
                |_, _, _| Ok(()),
            )?;
            for (i, (have, want)) in ids.iter().zip(&index.chunks).enumerate() {
                fp.update(&have.0);
                if have != want {
                    differ.push(i as u64);
                }
            }
        }
        Some(chunks) => {
            // One buffer for every chunk read (on a blank target these are most of its
            // chunks: the snapshot's zero chunks are checked one by one).
            let mut bytes = Vec::new();
            for &i in chunks {
                let (start, len) = index.chunk_range(i);
                let have = match mask.map(|m| m.chunk_use(start, len)) {
                    Some(ChunkUse::Free) => ChunkId::FREE,
                    other => {
                        bytes.resize(len as usize, 0);
                        disk.read_at(&mut bytes, offset + start)?;
                        if let Some(ChunkUse::Partial(free)) = other {
                            for (s, l) in free {
                                bytes[s as usize..(s + l) as usize].fill(0);
                            }
                        }
                        ChunkId::for_content(&bytes)
                    }
                };
                fp.update(&i.to_le_bytes());
                fp.update(&have.0);
                if have != index.chunks[i as usize] {
                    differ.push(i);
                }
            }
        }
    }
    Ok(differ)
}

/// The table as an operator would describe it: which copy is damaged and how.
fn table_state(
    d: &DiskRecord,
    disk: &Disk,
    expected: &[table::TableSectorBytes],
    differing: &[String],
) -> String {
    if differing.is_empty() {
        return "intact and equal".into();
    }
    let ss = u64::from(disk.logical_sector_size);
    let lba0 = disk.read_vec(0, ss).unwrap_or_default();
    let signature = crate::disk::mbr::has_boot_signature(&lba0);
    match &d.table {
        TableInfo::Gpt { .. } => {
            let (primary, backup) = layout::read_gpt_copies(disk);
            let expected_backup_lba = expected
                .iter()
                .find(|t| t.name == "gpt-backup-header")
                .map(|t| t.offset / ss);
            let backup = match expected_backup_lba {
                Some(lba) if lba != backup.lba => layout::read_gpt_copy(disk, lba),
                _ => backup,
            };
            let copy = |c: &layout::GptCopy| c.problem().unwrap_or_else(|| "intact".into());
            let mut parts = Vec::new();
            match (primary.is_valid(), backup.is_valid()) {
                (false, false)
                    if !signature && primary.problem().as_deref() == Some("header is blank") =>
                {
                    return "no partition table".into();
                }
                (true, true) => parts.push(format!(
                    "both GPT copies valid, but {} differ from the snapshot",
                    differing.join(", ")
                )),
                _ => {
                    parts.push(format!("GPT primary: {}", copy(&primary)));
                    parts.push(format!("backup: {}", copy(&backup)));
                }
            }
            if !signature {
                parts.push("protective MBR signature missing".into());
            } else if differing.iter().any(|n| n == "mbr") {
                parts.push("protective MBR differs".into());
            }
            parts.join("; ")
        }
        TableInfo::Mbr { .. } => {
            if !signature {
                "no partition table (MBR signature missing)".into()
            } else {
                format!(
                    "MBR entries differ from the snapshot ({})",
                    differing.join(", ")
                )
            }
        }
        TableInfo::None => "no table expected".into(),
    }
}

/// Every chunk the plan will fetch must be in the store: the plan checks before it promises.
/// Chunks are named by their ids in the store (patched chunks are fetched as stored).
pub fn check_chunks_present(
    store: &Store,
    d: &DiskRecord,
    f: &Findings,
    actions: &[Action],
) -> Result<()> {
    let stored: HashMap<ComponentId, &ChunkIndex> = f
        .regions
        .iter()
        .filter_map(|r| match &r.check {
            RegionCheck::Compared(c) => Some((ComponentId::Region(r.name.clone()), &c.stored)),
            _ => None,
        })
        .chain(
            f.partitions
                .iter()
                .map(|p| (ComponentId::Partition(p.number), &p.comparison.stored)),
        )
        .collect();
    let mut seen = BTreeSet::new();
    let mut needed: Vec<(ChunkId, String)> = Vec::new();
    for a in actions {
        let Some(index) = stored.get(&a.id) else {
            continue;
        };
        for &[first, count] in &a.runs {
            for i in first..first.saturating_add(count).min(index.chunks.len() as u64) {
                let id = index.chunks[i as usize];
                if !id.is_zero_marker() && !id.is_free_marker() && seen.insert(id) {
                    needed.push((id, format!("{} of disk {}, chunk {i}", a.name, d.name)));
                }
            }
        }
    }
    let ids: Vec<ChunkId> = needed.iter().map(|(id, _)| *id).collect();
    if let Some(id) = store.first_missing_chunk(&ids)? {
        let where_ = needed
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, w)| w.as_str())
            .unwrap_or_default();
        bail!(
            "chunk {id} ({where_}) is missing from store {}; this snapshot cannot be restored from this store",
            store.describe()
        );
    }
    Ok(())
}

/// --keep-table: where each snapshot partition goes on the target (offset, size), refusing
/// when a partition is missing from the target's table or too small.
fn keep_table_placement(
    d: &DiskRecord,
    disk: &Disk,
    current: Option<&DiskLayout>,
) -> Result<HashMap<u32, (u64, u64)>> {
    let Some(cur) =
        current.filter(|c| c.table.kind() == d.table.kind() && !matches!(d.table, TableInfo::None))
    else {
        bail!(
            "--keep-table: {} has no readable {} partition table to restore into; partition it first, or restore without --keep-table",
            disk.path.display(),
            d.table.kind()
        );
    };
    let mut out = HashMap::new();
    for p in &d.partitions {
        let Some(t) = cur.partitions.iter().find(|t| t.number == p.info.number) else {
            bail!(
                "--keep-table: the target has no partition {} to restore {} into",
                p.info.number,
                p.info.title()
            );
        };
        if t.size < p.info.size && p.info.role != "bios-boot" {
            bail!(
                "--keep-table: partition {} on the target holds {} bytes, the snapshot's {} bytes do not fit",
                t.number,
                t.size,
                p.info.size
            );
        }
        out.insert(p.info.number, (t.offset, t.size));
    }
    Ok(out)
}

/// The chunk ids a component must end up with after boot-loader patches, and the patches
/// (each with the hash its patched chunk must have).
fn patched(
    store: &Store,
    id: &ComponentId,
    stored: &ChunkIndex,
    patches: &relocate::Patches,
) -> Result<(Option<ChunkIndex>, Vec<ChunkPatch>)> {
    let Some((_, list)) = patches.iter().find(|(c, _)| c == id) else {
        return Ok((None, Vec::new()));
    };
    let mut index = stored.clone();
    let mut out = Vec::new();
    for patch in list {
        let i = patch.chunk as usize;
        ensure!(
            i < index.chunks.len(),
            "boot-loader patch beyond the end of {id}"
        );
        let (_, len) = index.chunk_range(patch.chunk);
        let chunk = index.chunks[i];
        let mut bytes = if chunk.is_zero_marker() || chunk.is_free_marker() {
            vec![0u8; len as usize]
        } else {
            store.get_chunk(&chunk, len as usize)?
        };
        patch.apply(&mut bytes)?;
        let expected = ChunkId::for_content(&bytes);
        index.chunks[i] = expected;
        let mut p = patch.clone();
        p.expected = Some(expected);
        out.push(p);
    }
    Ok((Some(index), out))
}

/// Chunk numbers of a component at `offset` whose bytes on the disk differ from `index`.
pub fn differing_chunks(disk: &Disk, offset: u64, index: &ChunkIndex) -> Result<Vec<u64>> {
    let mut fp = blake3::Hasher::new();
    compare(
        disk,
        offset,
        index,
        None,
        None,
        &mut fp,
        &crate::progress::Silent,
    )
}

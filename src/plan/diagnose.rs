//! Diagnosis of one target disk against one snapshot disk: reads the target (never writes),
//! compares table sectors, boot regions and partition chunks, and decides per component.
//! Contents are always compared at the snapshot's offsets: after apply the table is the
//! snapshot's, so that is where every partition's bytes must be correct.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use super::{Action, Component, DiskPlan, Mode, Settings, Totals, Verb, table};
use crate::boot::relocate;
use crate::chunk::ChunkId;
use crate::disk::extfs::{ChunkUse, UsedMap};
use crate::disk::layout::{self, TableInfo};
use crate::disk::{Disk, fs, scan};
use crate::manifest::DiskRecord;
use crate::progress::Progress;
use crate::store::Store;
use crate::store::index::ChunkIndex;
use crate::units;

/// Regions larger than this are only spot-checked by a quick plan.
const QUICK_REGION_LIMIT: u64 = 16 << 20;

pub fn diagnose(
    store: &Store,
    d: &DiskRecord,
    disk: &Disk,
    settings: &Settings,
    progress: &dyn Progress,
) -> Result<(DiskPlan, Option<f64>)> {
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
        table::Expected {
            sectors: Vec::new(),
            grown: None,
        }
    } else {
        table::expected(store, d, disk.size, settings.grow_last).with_context(|| {
            format!(
                "planning snapshot disk {} onto {}",
                d.name,
                disk.path.display()
            )
        })?
    };
    let expected_table = expected.sectors;
    let patches = match &placement {
        Some(pl) => relocate::patches(d, u64::from(store.config.chunk_size), &|n| {
            pl.get(&n).copied()
        })?,
        None => Vec::new(),
    };
    let mut fp = blake3::Hasher::new();
    fp.update(format!("{:?} {} {}", mode, disk.size, disk.logical_sector_size).as_bytes());
    let mut actions = Vec::new();
    // Every stored chunk the plan will fetch, with where it goes, for the presence check.
    let mut needed = Needed::default();
    let mut notes: Vec<String> = expected.grown.into_iter().collect();
    if let Err(e) = crate::disk::guard::check_writable(disk, None) {
        notes.push(format!("apply will refuse this target now: {e:#}"));
    }
    let mut not_checked = Vec::new();

    if placement.is_some() {
        let mut a = Action::new(Component::PartitionTable, d.table.kind(), None, 0, 0, None);
        a.found = "the target's own table (--keep-table)".into();
        a.reason =
            "kept: each partition is restored into the target's partition of the same number"
                .into();
        actions.push(a);
    } else if !matches!(d.table, TableInfo::None) {
        actions.push(table_action(d, disk, &expected_table, &mut fp)?);
    }
    if disk.size != d.size {
        notes.push(format!(
            "target is {} ({} bytes), the snapshot disk was {} ({} bytes){}",
            units::bytes(disk.size),
            disk.size,
            units::bytes(d.size),
            d.size,
            if matches!(d.table, TableInfo::Gpt { .. }) {
                "; the GPT backup goes to the end of the target"
            } else {
                ""
            }
        ));
    }

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

    let mut table_ranges: Vec<(u64, u64)> = expected_table.iter().map(|t| t.range()).collect();
    if let (Some(_), Some(cur)) = (&placement, &current) {
        // On a kept table, regions must not touch the target's table or its partitions.
        table_ranges.extend(
            cur.table_sectors
                .iter()
                .map(|t| (t.offset, t.offset + t.length)),
        );
        table_ranges.extend(cur.partitions.iter().map(|p| (p.offset, p.end())));
    }
    for r in &d.boot_regions {
        let end = r.offset + r.length;
        let overlaps_table = table_ranges.iter().any(|&(s, e)| s < end && r.offset < e);
        let mut a = Action::new(
            Component::BootRegion,
            &r.name,
            None,
            r.offset,
            r.length,
            Some(r.index),
        );
        if end > disk.size || overlaps_table {
            a.found = "not compared".into();
            a.action = Verb::Skip;
            a.reason = if end > disk.size {
                "lies beyond the end of the target".into()
            } else {
                "overlaps where the GPT backup goes on this target".into()
            };
            notes.push(format!(
                "boot region {} ({}) is not restored: {}",
                r.name,
                units::bytes(r.length),
                a.reason
            ));
            actions.push(a);
            continue;
        }
        let stored = store
            .get_index(&r.index)
            .with_context(|| format!("boot region {} of disk {}", r.name, d.name))?;
        ensure!(
            stored.length == r.length,
            "chunk index of boot region {} does not match its length",
            r.name
        );
        let index = patched(store, &mut a, &stored, &patches)?;
        let last_chunk = index.chunks.len().saturating_sub(1) as u64;
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
            &index,
            only.as_deref(),
            None,
            &mut fp,
            progress,
        )?;
        scanned += if only.is_none() { r.length } else { 0 };
        fill_chunk_action(&mut a, &index, &differ);
        needed_chunks(&mut needed, &stored, &a, d);
        if a.action == Verb::Full {
            a.action = Verb::Write;
        }
        a.found = describe_differences(&differ, &index);
        a.reason = match a.action {
            Verb::Keep => "equal to the snapshot".into(),
            _ => format!(
                "{} of {} chunks differ from the snapshot",
                differ.len(),
                index.chunks.len()
            ),
        };
        actions.push(a);
    }

    for p in &d.partitions {
        let info = &p.info;
        let mask = p.used_map(store)?;
        let stored = store
            .get_index(&p.index)
            .with_context(|| format!("{} of disk {}", info.title(), d.name))?;
        ensure!(
            stored.length == info.size,
            "chunk index of {} does not match its size",
            info.title()
        );
        let name = if info.number == 0 {
            "whole disk".to_string()
        } else {
            format!("partition {}", info.number)
        };
        let offset = placement
            .as_ref()
            .and_then(|pl| pl.get(&info.number))
            .map(|&(o, _)| o)
            .unwrap_or(info.offset);
        let mut a = Action::new(
            Component::Partition,
            &name,
            Some(info.number),
            offset,
            info.size,
            Some(p.index),
        );
        let index = patched(store, &mut a, &stored, &patches)?;
        a.holds = Some(info.filesystem.clone().unwrap_or_else(|| info.role.clone()));
        let moved = current
            .as_ref()
            .filter(|_| placement.is_none())
            .and_then(|l| {
                l.partitions
                    .iter()
                    .find(|c| c.number == info.number && info.number != 0)
                    .filter(|c| c.offset != info.offset || c.size != info.size)
                    .map(|c| {
                        format!(
                            "the current table puts it at byte {} with {} bytes",
                            c.offset, c.size
                        )
                    })
            });
        let all: Vec<u64> = (0..index.chunks.len() as u64)
            .filter(|&i| !index.chunks[i as usize].is_free_marker())
            .collect();
        let differ = match (mode, &moved) {
            (Mode::Quick, Some(_)) => all.clone(),
            (Mode::Quick, None) => {
                let critical: BTreeSet<u64> =
                    fs::critical_offsets(disk, offset, info.size, info.filesystem.as_deref())
                        .into_iter()
                        .map(|o| o / u64::from(index.chunk_size))
                        .collect();
                let critical: Vec<u64> = critical.into_iter().collect();
                let unchecked = index.chunks.len() as u64 - critical.len() as u64;
                if unchecked > 0 {
                    not_checked.push(format!(
                        "{}: {} of {} not hashed (only first, last and superblock chunks)",
                        name,
                        plural(unchecked, "chunk"),
                        index.chunks.len()
                    ));
                }
                compare(
                    disk,
                    offset,
                    &index,
                    Some(&critical),
                    mask.as_ref(),
                    &mut fp,
                    progress,
                )?
            }
            (Mode::Deep, _) => {
                scanned += info.size;
                compare(disk, offset, &index, None, mask.as_ref(), &mut fp, progress)?
            }
        };
        fill_chunk_action(&mut a, &index, &differ);
        needed_chunks(&mut needed, &stored, &a, d);
        a.found = match &moved {
            Some(m) => format!("moved: {m}"),
            None => describe_differences(&differ, &index),
        };
        a.reason = match (a.action, &moved) {
            (Verb::Keep, _) => "equal to the snapshot".into(),
            (_, Some(_)) => format!("restored in full at the snapshot's offset {}", info.offset),
            (Verb::Full, None) => "no chunk matches the snapshot".into(),
            _ if !a.patches.is_empty() && offset != info.offset => format!(
                "moved from byte {} to the target's partition at byte {offset}; boot-loader pointers patched",
                info.offset
            ),
            _ if differ.len() == 1 => "only the one chunk that differs is written".into(),
            _ => format!("only the {} chunks that differ are written", differ.len()),
        };
        actions.push(a);
    }
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    let rate = (scanned >= 64 << 20 && secs > 0.0).then(|| scanned as f64 / secs);

    check_chunks_present(store, &needed.list)?;
    let totals = Totals::of(&actions);
    Ok((
        DiskPlan {
            source: d.name.clone(),
            target: disk.path.clone(),
            mapping: String::new(),
            target_size: disk.size,
            target_sector_size: disk.logical_sector_size,
            snapshot_size: d.size,
            actions,
            not_checked,
            notes,
            fingerprint: fp.finalize().to_hex().to_string(),
            totals,
        },
        rate,
    ))
}

impl Action {
    pub(super) fn new(
        component: Component,
        name: &str,
        number: Option<u32>,
        offset: u64,
        length: u64,
        index: Option<ChunkId>,
    ) -> Action {
        Action {
            component,
            name: name.to_string(),
            number,
            holds: None,
            found: String::new(),
            action: Verb::Keep,
            reason: String::new(),
            offset,
            length,
            bytes_to_write: 0,
            bytes_to_fetch: 0,
            chunks_to_write: 0,
            chunks_to_fetch: 0,
            chunks_total: 0,
            index,
            runs: Vec::new(),
            table_writes: Vec::new(),
            patches: Vec::new(),
        }
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn describe_differences(differ: &[u64], index: &ChunkIndex) -> String {
    let n = index.chunks.len() as u64;
    match differ.len() as u64 {
        0 => "equal".into(),
        d if d == n => "every chunk differs".into(),
        d => format!("{d} of {n} chunks differ"),
    }
}

/// Chunk numbers (within the component) whose bytes on the target differ from the index.
#[allow(clippy::too_many_arguments)]
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
            for &i in chunks {
                let (start, len) = index.chunk_range(i);
                let have = match mask.map(|m| m.chunk_use(start, len)) {
                    Some(ChunkUse::Free) => ChunkId::FREE,
                    other => {
                        let mut bytes = disk.read_vec(offset + start, len)?;
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

/// Turns the differing chunks into runs and byte counts; zero chunks are written from
/// memory, not fetched.
fn fill_chunk_action(a: &mut Action, index: &ChunkIndex, differ: &[u64]) {
    a.chunks_total = index.chunks.len() as u64;
    for &i in differ {
        let (_, len) = index.chunk_range(i);
        a.bytes_to_write += len;
        a.chunks_to_write += 1;
        if !index.chunks[i as usize].is_zero_marker() {
            a.bytes_to_fetch += len;
            a.chunks_to_fetch += 1;
        }
        match a.runs.last_mut() {
            Some(run) if run[0] + run[1] == i => run[1] += 1,
            _ => a.runs.push([i, 1]),
        }
    }
    a.action = match differ.len() as u64 {
        0 => Verb::Keep,
        n if n == a.chunks_total => Verb::Full,
        _ => Verb::Patch,
    };
}

fn table_action(
    d: &DiskRecord,
    disk: &Disk,
    expected: &[table::TableSectorBytes],
    fp: &mut blake3::Hasher,
) -> Result<Action> {
    let kind = d.table.kind();
    let (first, last) = expected.iter().fold((u64::MAX, 0), |(s, e), t| {
        (s.min(t.offset), e.max(t.range().1))
    });
    let mut a = Action::new(
        Component::PartitionTable,
        kind,
        None,
        first,
        last - first,
        None,
    );
    let mut differing = Vec::new();
    for t in expected {
        let have = disk.read_vec(t.offset, t.bytes.len() as u64)?;
        fp.update(&have);
        a.chunks_total += 1;
        if have != t.bytes {
            differing.push(t.name.clone());
            a.bytes_to_write += t.bytes.len() as u64;
            a.table_writes.push(super::TableWrite {
                name: t.name.clone(),
                offset: t.offset,
                length: t.bytes.len() as u64,
                hash: t.hash(),
            });
        }
    }
    a.found = table_state(d, disk, expected, &differing);
    if differing.is_empty() {
        a.reason = "intact and equal to the snapshot".into();
    } else {
        a.action = Verb::Write;
        a.reason = format!("rewrite {} from the snapshot", differing.join(", "));
    }
    Ok(a)
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

/// Adds the stored chunks the action will fetch (by their ids in the store: patched chunks are
/// fetched as stored, then patched). Chunks already listed are not added again.
fn needed_chunks(needed: &mut Needed, stored: &ChunkIndex, a: &Action, d: &DiskRecord) {
    for &[first, count] in &a.runs {
        for i in first..first + count {
            let id = stored.chunks[i as usize];
            if !id.is_zero_marker() && !id.is_free_marker() && needed.seen.insert(id) {
                needed
                    .list
                    .push((id, format!("{} of disk {}, chunk {i}", a.name, d.name)));
            }
        }
    }
}

/// Chunks to fetch, each once, with where it goes (for the message when one is missing).
#[derive(Default)]
struct Needed {
    seen: BTreeSet<ChunkId>,
    list: Vec<(ChunkId, String)>,
}

/// Every chunk the plan will fetch must be in the store: the plan checks before it promises.
fn check_chunks_present(store: &Store, needed: &[(ChunkId, String)]) -> Result<()> {
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
    current: Option<&layout::DiskLayout>,
) -> Result<std::collections::HashMap<u32, (u64, u64)>> {
    let Some(cur) =
        current.filter(|c| c.table.kind() == d.table.kind() && !matches!(d.table, TableInfo::None))
    else {
        bail!(
            "--keep-table: {} has no readable {} partition table to restore into; partition it first, or restore without --keep-table",
            disk.path.display(),
            d.table.kind()
        );
    };
    let mut out = std::collections::HashMap::new();
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
/// recorded on the action (with the hash each patched chunk must have).
fn patched<'a>(
    store: &Store,
    a: &mut Action,
    stored: &'a ChunkIndex,
    patches: &relocate::Patches,
) -> Result<Cow<'a, ChunkIndex>> {
    let Some((_, list)) = patches.iter().find(|(name, _)| *name == a.name) else {
        return Ok(Cow::Borrowed(stored));
    };
    let mut index = stored.clone();
    for patch in list {
        let i = patch.chunk as usize;
        ensure!(
            i < index.chunks.len(),
            "boot-loader patch beyond the end of {}",
            a.name
        );
        let (_, len) = index.chunk_range(patch.chunk);
        let id = index.chunks[i];
        let mut bytes = if id.is_zero_marker() || id.is_free_marker() {
            vec![0u8; len as usize]
        } else {
            store.get_chunk(&id, len as usize)?
        };
        patch.apply(&mut bytes)?;
        let expected = ChunkId::for_content(&bytes);
        index.chunks[i] = expected;
        let mut p = patch.clone();
        p.expected = Some(expected);
        a.patches.push(p);
    }
    Ok(Cow::Owned(index))
}

//! `restore apply`: the only code that writes to a target. It re-checks the target against
//! the plan's fingerprint, then writes in the one safe order: partition data, boot regions,
//! partition tables (GPT backup before primary, LBA 0 last), flush. Every chunk is verified
//! by hash before a byte of it is written; any failure stops before the table is touched.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::chunk::ChunkId;
use crate::disk::{Disk, guard};
use crate::failpoint;
use crate::manifest::{self, DiskRecord, Manifest};
use crate::plan::{Action, Component, DiskPlan, Plan, diagnose, table};
use crate::progress::{Progress, Silent};
use crate::store::Store;
use crate::store::index::ChunkIndex;
use crate::units;

pub struct ApplyOptions {
    pub verify: bool,
    pub jobs: usize,
    /// Re-read the target and refuse when it no longer matches the plan (always, for a saved plan).
    pub check_fingerprint: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ApplyReport {
    pub bytes_written: u64,
    pub chunks_written: u64,
    pub table_sectors_written: u64,
    pub verified: bool,
    pub seconds: f64,
    /// The offline boot-chain check of every target whose snapshot recorded a boot loader.
    pub boot_check: Vec<crate::boot::ChainReport>,
    /// UEFI boot entries created ("Boot0003 \EFI\debian\shimx64.efi").
    pub boot_entries: Vec<String>,
    /// Files added to the ESP for the removable fallback path.
    pub fallback_loader: Vec<String>,
}

struct Target<'a> {
    plan: &'a DiskPlan,
    record: &'a DiskRecord,
    disk: Disk,
}

/// A chunked component to write: where, its index, and which chunks.
struct ChunkWork<'a> {
    disk: usize,
    offset: u64,
    index: ChunkIndex,
    action: &'a Action,
}

fn open_targets<'a>(plan: &'a Plan, m: &'a Manifest) -> Result<Vec<Target<'a>>> {
    let mut targets = Vec::new();
    for dp in &plan.disks {
        let record = m
            .disks
            .iter()
            .find(|d| d.name == dp.source)
            .with_context(|| {
                format!(
                    "snapshot {} has no disk {} named in the plan",
                    m.id, dp.source
                )
            })?;
        // The guards look first, so a mounted or held target gets the precise reason.
        let look = Disk::open_read(&dp.target)?;
        guard::check_writable(&look, local_store(&plan.store))?;
        drop(look);
        let disk = Disk::open_write(&dp.target)?;
        ensure!(
            disk.size == dp.target_size && disk.logical_sector_size == dp.target_sector_size,
            "target {} is now {} bytes with {}-byte sectors, the plan was made for {} bytes with {}-byte sectors; make a new plan",
            dp.target.display(),
            disk.size,
            disk.logical_sector_size,
            dp.target_size,
            dp.target_sector_size
        );
        targets.push(Target {
            plan: dp,
            record,
            disk,
        });
    }
    Ok(targets)
}

/// The directory of a local store, so the guards can refuse a target that holds it.
pub fn local_store(location: &str) -> Option<&std::path::Path> {
    match location.split_once("://") {
        Some(("file", path)) => Some(std::path::Path::new(path)),
        Some(_) => None,
        None => Some(std::path::Path::new(location)),
    }
}

/// `confirm` is asked once, with a summary of the targets, before anything is written.
/// `store` is the store the plan names (`plan.store`), already open.
pub fn apply(
    plan: &Plan,
    store: &Store,
    opts: &ApplyOptions,
    progress: &dyn Progress,
    confirm: &dyn Fn(&str) -> Result<bool>,
) -> Result<ApplyReport> {
    let started = Instant::now();
    let m = manifest::load(store, &plan.host, &plan.snapshot)?;
    ensure!(
        m.chunk_size == plan.chunk_size,
        "plan and snapshot disagree on the chunk size"
    );
    let targets = open_targets(plan, &m)?;

    if opts.check_fingerprint {
        for t in &targets {
            let (now, _) = diagnose::diagnose(store, t.record, &t.disk, &plan.settings(), &Silent)?;
            if now.fingerprint != t.plan.fingerprint {
                bail!(
                    "target {} changed since the plan was made (its contents no longer match the plan's fingerprint); \
                     nothing was written: make a new plan",
                    t.disk.path.display()
                );
            }
        }
    }
    if !plan.has_changes() {
        return Ok(ApplyReport {
            seconds: started.elapsed().as_secs_f64(),
            ..Default::default()
        });
    }

    // Everything that can fail on input is checked before the first write.
    let mut tables = Vec::new();
    for t in &targets {
        tables.push(table_writes(store, t, plan.grow_last)?);
    }
    let mut summary = String::new();
    for t in &targets {
        let id = &t.disk.identity;
        summary.push_str(&format!(
            "  {} ({}, model {}, serial {}): write {}\n",
            t.disk.path.display(),
            units::bytes(t.disk.size),
            id.model.as_deref().unwrap_or("-"),
            id.serial.as_deref().unwrap_or("-"),
            units::bytes(t.plan.totals.bytes_to_write)
        ));
    }
    if !confirm(&summary)? {
        bail!("not confirmed; nothing was written");
    }

    let mut report = ApplyReport::default();
    let work = |component: Component| -> Result<Vec<ChunkWork<'_>>> {
        let mut out = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            for a in t
                .plan
                .actions
                .iter()
                .filter(|a| a.component == component && !a.runs.is_empty())
            {
                let index_id = a.index.context("plan action without a chunk index")?;
                let index = store.get_index(&index_id)?;
                out.push(ChunkWork {
                    disk: i,
                    offset: a.offset,
                    index,
                    action: a,
                });
            }
        }
        Ok(out)
    };
    let data = work(Component::Partition)?;
    let regions = work(Component::BootRegion)?;
    let total: u64 = data
        .iter()
        .chain(&regions)
        .map(|w| w.action.bytes_to_write)
        .sum();
    progress.start("restore", total);
    write_chunks(store, &targets, &data, opts.jobs, progress, &mut report)?;
    failpoint::hit("before-boot-regions");
    write_chunks(store, &targets, &regions, opts.jobs, progress, &mut report)?;
    progress.finish();
    for t in &targets {
        t.disk.flush()?;
    }
    failpoint::hit("before-tables");
    for (t, sectors) in targets.iter().zip(&tables) {
        for s in sectors {
            t.disk.write_at(&s.bytes, s.offset)?;
            report.table_sectors_written += 1;
            report.bytes_written += s.bytes.len() as u64;
            failpoint::hit("after-table-sector");
        }
        t.disk.flush()?;
        if !sectors.is_empty() {
            t.disk.reread_partition_table();
        }
    }
    if opts.verify {
        verify(&targets, &data, &regions, &tables)?;
        report.verified = true;
    }
    // The removable fallback loader, into the restored ESP (files copied within the FAT).
    for t in &targets {
        for a in t
            .plan
            .actions
            .iter()
            .filter(|a| a.component == Component::BootFallback && a.writes())
        {
            let uefi = t.record.boot_loaders.iter().find_map(|l| match l {
                crate::boot::BootLoader::Uefi(u) => Some(u),
                _ => None,
            });
            let Some(uefi) = uefi else { continue };
            let copies = crate::boot::esp::fallback_copies(&uefi.files);
            crate::boot::esp::copy_files(&t.disk, a.offset, a.length, &copies).with_context(
                || {
                    format!(
                        "adding the fallback loader to the ESP of {}",
                        t.disk.path.display()
                    )
                },
            )?;
            t.disk.flush()?;
            report
                .fallback_loader
                .extend(copies.into_iter().map(|(_, to)| to));
        }
    }
    // UEFI boot entries last: the disk is complete before firmware is told to boot it.
    for t in targets.iter().filter(|t| {
        t.plan
            .actions
            .iter()
            .any(|a| a.component == Component::BootEntry && a.writes())
    }) {
        let partitions: Vec<_> = t.record.partitions.iter().map(|p| p.info.clone()).collect();
        let decision = crate::boot::entry_decision(
            &t.record.boot_loaders,
            &partitions,
            u64::from(t.record.logical_sector_size),
            m.nvram.as_ref(),
            t.disk.is_block_device,
            plan.nvram,
        );
        if let crate::boot::EntryDecision::Create { option, dir } = decision {
            let n = crate::boot::efivars::install_entry(&dir, &option).with_context(|| {
                format!("creating the UEFI boot entry for {}", t.disk.path.display())
            })?;
            report
                .boot_entries
                .push(format!("Boot{n:04X} {}", option.file.unwrap_or_default()));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    for t in targets.iter().filter(|t| !t.record.boot_loaders.is_empty()) {
        // On a kept table the loaders were patched, so the chain is checked as found.
        let captured = (!plan.keep_table).then_some(&t.record.boot_loaders[..]);
        let chain = crate::boot::check_disk(&t.disk, captured);
        if t.record.boot_chain_whole && !chain.whole {
            let broken: Vec<String> = chain
                .links
                .iter()
                .filter(|l| !l.ok)
                .map(|l| format!("{}: {}", l.link, l.detail))
                .collect();
            bail!(
                "apply wrote everything, but the boot chain of {} is broken ({}); run restore check-boot for details",
                t.disk.path.display(),
                broken.join("; ")
            );
        }
        report.boot_check.push(chain);
    }
    Ok(report)
}

/// The table sectors the plan says to write, rebuilt from the snapshot and checked against
/// the hashes in the plan.
fn table_writes(
    store: &Store,
    t: &Target,
    grow_last: bool,
) -> Result<Vec<table::TableSectorBytes>> {
    let Some(a) = t
        .plan
        .actions
        .iter()
        .find(|a| a.component == Component::PartitionTable && !a.table_writes.is_empty())
    else {
        return Ok(Vec::new());
    };
    let mut expected = table::expected(store, t.record, t.disk.size, grow_last)?.sectors;
    expected.retain(|s| a.table_writes.iter().any(|w| w.name == s.name));
    ensure!(
        expected.len() == a.table_writes.len(),
        "plan names table sectors the snapshot does not have"
    );
    for (s, w) in expected.iter().zip(&a.table_writes) {
        ensure!(
            s.name == w.name && s.offset == w.offset && s.hash() == w.hash,
            "table sector {} rebuilt from the snapshot does not match the plan; make a new plan",
            w.name
        );
    }
    Ok(expected)
}

fn write_chunks(
    store: &Store,
    targets: &[Target],
    work: &[ChunkWork],
    jobs: usize,
    progress: &dyn Progress,
    report: &mut ApplyReport,
) -> Result<()> {
    // Jobs in plan order: (work item, chunk number). Generated lazily so a 2 TB restore does
    // not hold millions of jobs in memory.
    let cursor = Mutex::new((0usize, 0usize, 0u64));
    let next = || -> Option<(usize, u64)> {
        let mut c = cursor.lock().expect("cursor lock");
        loop {
            let (w, r, k) = *c;
            let item = work.get(w)?;
            let Some(&[first, count]) = item.action.runs.get(r) else {
                *c = (w + 1, 0, 0);
                continue;
            };
            if k >= count {
                *c = (w, r + 1, 0);
                continue;
            }
            *c = (w, r, k + 1);
            return Some((w, first + k));
        }
    };
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let bytes = AtomicU64::new(0);
    let chunks = AtomicU64::new(0);
    let zeros = vec![0u8; store.config.chunk_size as usize];
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let Some((w, i)) = next() else { break };
                    let item = &work[w];
                    let (start, len) = item.index.chunk_range(i);
                    let id = item.index.chunks[i as usize];
                    let result = (|| -> Result<()> {
                        let disk = &targets[item.disk].disk;
                        if let Some(patch) = item.action.patches.iter().find(|p| p.chunk == i) {
                            return write_patched(store, disk, item, i, patch);
                        }
                        if id.is_free_marker() {
                            // Free filesystem space: nothing to write.
                            Ok(())
                        } else if id.is_zero_marker() {
                            disk.write_zeroes(item.offset + start, len, &zeros)
                        } else {
                            let data = store.get_chunk(&id, len as usize).with_context(|| {
                                format!(
                                    "{} of disk {}",
                                    item.action.name, targets[item.disk].record.name
                                )
                            })?;
                            disk.write_at(&data, item.offset + start)
                        }
                    })();
                    match result {
                        Ok(()) => {
                            bytes.fetch_add(len, Ordering::Relaxed);
                            chunks.fetch_add(1, Ordering::Relaxed);
                            progress.add(len);
                            failpoint::hit("after-chunk");
                        }
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            first_error.lock().expect("error lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    report.bytes_written += bytes.into_inner();
    report.chunks_written += chunks.into_inner();
    if let Some(e) = first_error.into_inner().expect("error lock") {
        progress.finish();
        return Err(e.context("restore stopped before the partition table was written; fix the cause, then plan and apply again"));
    }
    Ok(())
}

/// A chunk whose bytes change so a boot loader finds a partition that moved: fetched and
/// verified, patched, and checked against the hash the plan computed.
fn write_patched(
    store: &Store,
    disk: &Disk,
    item: &ChunkWork,
    i: u64,
    patch: &crate::boot::relocate::ChunkPatch,
) -> Result<()> {
    let (start, len) = item.index.chunk_range(i);
    let id = item.index.chunks[i as usize];
    let mut data = if id.is_zero_marker() || id.is_free_marker() {
        vec![0u8; len as usize]
    } else {
        store.get_chunk(&id, len as usize)?
    };
    patch.apply(&mut data)?;
    ensure!(
        Some(ChunkId::for_content(&data)) == patch.expected,
        "patched chunk {i} of {} does not match the plan; make a new plan",
        item.action.name
    );
    disk.write_at(&data, item.offset + start)
}

fn verify(
    targets: &[Target],
    data: &[ChunkWork],
    regions: &[ChunkWork],
    tables: &[Vec<table::TableSectorBytes>],
) -> Result<()> {
    for item in data.iter().chain(regions) {
        let disk = &targets[item.disk].disk;
        for &[first, count] in &item.action.runs {
            for i in first..first + count {
                let (start, len) = item.index.chunk_range(i);
                let have = ChunkId::for_content(&disk.read_vec(item.offset + start, len)?);
                let want = match item.action.patches.iter().find(|p| p.chunk == i) {
                    Some(p) => p.expected.unwrap_or(ChunkId::ZERO),
                    None => item.index.chunks[i as usize],
                };
                ensure!(
                    have == want || want.is_free_marker(),
                    "verify: chunk {i} of {} on {} does not read back as written",
                    item.action.name,
                    disk.path.display()
                );
            }
        }
    }
    for (t, sectors) in targets.iter().zip(tables) {
        for s in sectors {
            ensure!(
                t.disk.read_vec(s.offset, s.bytes.len() as u64)? == s.bytes,
                "verify: table sector {} on {} does not read back as written",
                s.name,
                t.disk.path.display()
            );
        }
    }
    Ok(())
}

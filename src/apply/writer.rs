//! The one writer: every byte apply puts on a target goes through here, in fixed phases:
//! partition data -> boot regions -> ESP file edits -> flush -> GPT backup -> flush ->
//! GPT primary and protective MBR (or EBRs and MBR) -> flush -> re-read of the table ->
//! NVRAM (the new Boot#### and BootOrder first, stale entries after). Each phase starts at a
//! named crash point, so tests can kill apply at every boundary and show that plan + apply
//! then finish the job. SIGINT/SIGTERM let the current write finish, then stop with a
//! report of what was and was not written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::{ApplyReport, PhaseTime};
use crate::boot::{efivars, esp};
use crate::chunk::ChunkId;
use crate::disk::Disk;
use crate::failpoint;
use crate::parallel::FirstError;
use crate::plan::{Action, BootEntryWrite, ChunkPatch, Component, FileCopy, Plan, TableWrite};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::index::ChunkIndex;
use crate::units;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Data,
    BootRegions,
    EspFiles,
    TableBackup,
    TablePrimary,
    Reread,
    Nvram,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Data,
        Phase::BootRegions,
        Phase::EspFiles,
        Phase::TableBackup,
        Phase::TablePrimary,
        Phase::Reread,
        Phase::Nvram,
    ];

    /// The crash point at the start of the phase.
    fn crash_point(self) -> &'static str {
        match self {
            Phase::Data => "before-data",
            Phase::BootRegions => "before-boot-regions",
            Phase::EspFiles => "before-esp-files",
            Phase::TableBackup => "before-table-backup",
            Phase::TablePrimary => "before-table-primary",
            Phase::Reread => "before-reread",
            Phase::Nvram => "before-nvram",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Phase::Data => "partition data",
            Phase::BootRegions => "boot regions",
            Phase::EspFiles => "ESP files",
            Phase::TableBackup => "GPT backup",
            Phase::TablePrimary => "partition table",
            Phase::Reread => "table re-read",
            Phase::Nvram => "UEFI boot entries",
        }
    }
}

/// Apply was stopped by SIGINT or SIGTERM after finishing its current write: what was
/// written and what was not. The command exits 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// A chunked component to write: where, its stored index, and the plan's action.
struct ChunkWork<'a> {
    disk: usize,
    index: ChunkIndex,
    action: &'a Action,
    patches: HashMap<u64, &'a ChunkPatch>,
}

/// Where the bytes of one chunk come from.
enum Source<'a> {
    /// Fetched, patched for a partition that moved, checked against the plan's hash.
    Patched(&'a ChunkPatch),
    /// Free filesystem space: nothing is written.
    Free,
    Zero,
    /// The store's chunk, fetched by a fetcher.
    Store(ChunkId),
}

impl<'a> ChunkWork<'a> {
    fn source(&self, i: u64) -> Source<'a> {
        let id = self.index.chunks[i as usize];
        match self.patches.get(&i) {
            Some(patch) => Source::Patched(patch),
            None if id.is_free_marker() => Source::Free,
            None if id.is_zero_marker() => Source::Zero,
            None => Source::Store(id),
        }
    }
}

/// Everything the writer will write, loaded and checked before the first byte.
pub struct Work<'a> {
    data: Vec<ChunkWork<'a>>,
    regions: Vec<ChunkWork<'a>>,
    /// Per target: (ESP offset, ESP length, files to copy).
    esp: Vec<Vec<(u64, u64, &'a [FileCopy])>>,
    /// (target, ESP partition) whose chunks the ESP file edits change after they are written.
    edited: Vec<(usize, u32)>,
    /// Per target: GPT backup sectors, then the rest (primary, EBRs, MBR), in plan order.
    backup: Vec<Vec<&'a TableWrite>>,
    primary: Vec<Vec<&'a TableWrite>>,
    entries: Vec<Vec<&'a BootEntryWrite>>,
}

impl<'a> Work<'a> {
    /// Loads the chunk indexes and checks every payload against the indexes and the targets.
    pub fn load(store: &Store, plan: &'a Plan, disks: &[&Disk]) -> Result<Work<'a>> {
        let n = plan.disks.len();
        let mut w = Work {
            data: Vec::new(),
            regions: Vec::new(),
            esp: vec![Vec::new(); n],
            edited: Vec::new(),
            backup: vec![Vec::new(); n],
            primary: vec![Vec::new(); n],
            entries: vec![Vec::new(); n],
        };
        for (i, (dp, disk)) in plan.disks.iter().zip(disks).enumerate() {
            for a in dp.actions.iter().filter(|a| a.writes()) {
                ensure!(
                    a.offset
                        .checked_add(a.length)
                        .is_some_and(|e| e <= disk.size),
                    "plan: {} of {} lies beyond the end of the target; nothing was written",
                    a.name,
                    disk.path.display()
                );
                match a.component {
                    Component::Partition | Component::BootRegion if !a.runs.is_empty() => {
                        let id = a.index.context("plan action without a chunk index")?;
                        let index = store.get_index(&id, a.length)?;
                        ensure!(
                            index.length == a.length
                                && a.runs.iter().all(|&[first, count]| first
                                    .checked_add(count)
                                    .is_some_and(|e| e <= index.chunks.len() as u64)),
                            "plan: the chunks of {} do not fit its index; nothing was written: make a new plan",
                            a.name
                        );
                        let item = ChunkWork {
                            disk: i,
                            index,
                            action: a,
                            patches: a.patches.iter().map(|p| (p.chunk, p)).collect(),
                        };
                        if a.component == Component::Partition {
                            w.data.push(item);
                        } else {
                            w.regions.push(item);
                        }
                    }
                    Component::PartitionTable => {
                        for t in &a.table_writes {
                            ensure!(
                                t.length == t.data.0.len() as u64
                                    && ChunkId::of(&t.data.0) == t.hash
                                    && t.offset
                                        .checked_add(t.length)
                                        .is_some_and(|e| e <= disk.size),
                                "plan: table sector {} is damaged or lies outside the target; nothing was written: make a new plan",
                                t.name
                            );
                            if t.name.starts_with("gpt-backup") {
                                w.backup[i].push(t);
                            } else {
                                w.primary[i].push(t);
                            }
                        }
                    }
                    Component::BootFallback => {
                        w.esp[i].push((a.offset, a.length, &a.files[..]));
                        if let Some(n) = a.number {
                            w.edited.push((i, n));
                        }
                    }
                    Component::BootEntry => {
                        let e = a
                            .boot_entry
                            .as_ref()
                            .context("plan: a boot entry to write without its load option")?;
                        ensure!(
                            efivars::efivars_dir().is_some(),
                            "the plan creates UEFI boot entry Boot{:04X}, but this system has no efivarfs; make the plan on the machine being restored",
                            e.number
                        );
                        w.entries[i].push(e);
                    }
                    _ => {}
                }
            }
        }
        Ok(w)
    }

    /// Re-reads what was written and compares it with the snapshot's chunks (or the patched
    /// hash); `all` re-reads every chunk of every written component.
    /// An ESP that received the fallback loader is checked by its files instead (each copy
    /// hashes as its source; the quick diagnosis finds every snapshot file in place).
    pub fn verify_written(&self, disks: &[&Disk], all: bool, jobs: usize) -> Result<()> {
        failpoint::hit("before-verify");
        // The ESP partitions the file edits changed afterwards are checked by their files.
        let items: Vec<&ChunkWork> = self
            .data
            .iter()
            .chain(&self.regions)
            .filter(|item| {
                !item.action.number.is_some_and(|n| {
                    item.action.component == Component::Partition
                        && self.edited.contains(&(item.disk, n))
                })
            })
            .collect();
        let cursor = Cursor::new(
            items
                .iter()
                .map(|item| {
                    if all {
                        std::borrow::Cow::Owned(vec![[0, item.index.chunks.len() as u64]])
                    } else {
                        std::borrow::Cow::Borrowed(&item.action.runs[..])
                    }
                })
                .collect(),
        );
        // Reading back is bound by the disk and by hashing: one worker per core is enough.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        run_parallel(&cursor, jobs.clamp(1, cores), &|| false, &|w, i| {
            let item = items[w];
            let disk = disks[item.disk];
            let (start, len) = item.index.chunk_range(i);
            let want = match item.patches.get(&i) {
                Some(p) => p.expected.unwrap_or(ChunkId::ZERO),
                None => item.index.chunks[i as usize],
            };
            if want.is_free_marker() {
                return Ok(());
            }
            // Each worker reads back into the same buffer: a fresh one per chunk was an
            // allocation (and under musl a mapping faulted in page by page) per chunk.
            thread_local! {
                static BACK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            let have = BACK.with_borrow_mut(|buf| -> Result<ChunkId> {
                buf.resize(len as usize, 0);
                disk.read_at(buf, item.action.offset + start)?;
                Ok(ChunkId::for_content(buf))
            })?;
            ensure!(
                have == want,
                "verify: chunk {i} of {} on {} does not match the snapshot after writing",
                item.action.name,
                disk.path.display()
            );
            Ok(())
        })?;
        for (i, disk) in disks.iter().enumerate() {
            for s in self.backup[i].iter().chain(&self.primary[i]) {
                ensure!(
                    disk.read_vec(s.offset, s.length)? == s.data.0,
                    "verify: table sector {} on {} does not read back as the snapshot's",
                    s.name,
                    disk.path.display()
                );
            }
        }
        Ok(())
    }
}

/// SIGINT and SIGTERM set a flag while the writer runs; the process is not killed mid-write.
struct Interrupt {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Interrupt {
    fn install() -> Interrupt {
        let flag = Arc::new(AtomicBool::new(false));
        let ids = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
            .into_iter()
            .filter_map(|s| signal_hook::flag::register(s, Arc::clone(&flag)).ok())
            .collect();
        Interrupt { flag, ids }
    }

    fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Writes all of `work` in the fixed phase order.
pub fn write(
    store: &Store,
    disks: &[&Disk],
    work: &Work,
    jobs: usize,
    progress: &dyn Progress,
    report: &mut ApplyReport,
) -> Result<()> {
    let interrupt = Interrupt::install();
    let total: u64 = work
        .data
        .iter()
        .chain(&work.regions)
        .map(|w| w.action.bytes_to_write)
        .sum();
    let stopped = |phase: Phase, partial: String, report: &ApplyReport| -> anyhow::Error {
        for d in disks {
            let _ = d.flush();
        }
        progress.finish();
        anyhow::Error::new(Interrupted(interrupted_message(phase, &partial, report)))
    };
    progress.start(super::WRITE_PHASE, total);
    for phase in Phase::ALL {
        failpoint::hit(phase.crash_point());
        if interrupt.raised() {
            return Err(stopped(phase, String::new(), report));
        }
        let started = Instant::now();
        match phase {
            Phase::Data | Phase::BootRegions => {
                let items = if phase == Phase::Data {
                    &work.data
                } else {
                    &work.regions
                };
                let (bytes, chunks, result) =
                    write_chunks(store, disks, items, jobs, progress, &interrupt);
                report.bytes_written += bytes;
                report.chunks_written += chunks;
                match result {
                    Err(e) => {
                        progress.finish();
                        return Err(e.context(
                            "restore stopped before the partition table was written; fix the cause, then plan and apply again",
                        ));
                    }
                    Ok(false) => {
                        let all: u64 = items.iter().map(|w| w.action.chunks_to_write).sum();
                        return Err(stopped(
                            phase,
                            format!(
                                "{chunks} of {all} chunks of {} ({})",
                                phase.what(),
                                units::bytes(bytes)
                            ),
                            report,
                        ));
                    }
                    Ok(true) => {}
                }
                if phase == Phase::BootRegions {
                    progress.finish();
                }
            }
            Phase::EspFiles => {
                for (i, list) in work.esp.iter().enumerate() {
                    for &(offset, length, files) in list {
                        copy_esp_files(disks[i], offset, length, files)?;
                        report
                            .fallback_loader
                            .extend(files.iter().map(|f| f.to.clone()));
                    }
                }
                for d in disks {
                    d.flush()?;
                }
            }
            Phase::TableBackup | Phase::TablePrimary => {
                let lists = if phase == Phase::TableBackup {
                    &work.backup
                } else {
                    &work.primary
                };
                for (i, sectors) in lists.iter().enumerate() {
                    for s in sectors {
                        disks[i].write_at(&s.data.0, s.offset)?;
                        report.table_sectors_written += 1;
                        report.bytes_written += s.length;
                        failpoint::hit("after-table-sector");
                    }
                    if !sectors.is_empty() {
                        disks[i].flush()?;
                    }
                }
            }
            Phase::Reread => {
                for (i, d) in disks.iter().enumerate() {
                    if !work.primary[i].is_empty() || !work.backup[i].is_empty() {
                        d.reread_partition_table();
                    }
                }
            }
            Phase::Nvram => {
                for e in work.entries.iter().flatten() {
                    let dir = efivars::efivars_dir()
                        .context("efivarfs disappeared before the boot entry could be written")?;
                    efivars::create_entry(&dir, e.number, &e.load_option.0, &e.stale)
                        .with_context(|| {
                            format!("creating UEFI boot entry Boot{:04X}", e.number)
                        })?;
                    failpoint::hit("after-boot-entry");
                    efivars::remove_entries(&dir, &e.stale)?;
                    ensure!(
                        efivars::read_entry(&dir, e.number).as_deref()
                            == Some(&e.load_option.0[..])
                            && efivars::boot_order(&dir).first() == Some(&e.number),
                        "UEFI boot entry Boot{:04X} does not read back as written",
                        e.number
                    );
                    report
                        .boot_entries
                        .push(format!("Boot{:04X} {}", e.number, e.file));
                }
            }
        }
        report.phases.push(PhaseTime {
            phase,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(())
}

/// "interrupted during boot regions: written: partition data; 3 of 9 chunks of boot regions
/// (3.0 MiB); not written: ESP files, ...; partition table not written; run plan and apply again"
fn interrupted_message(phase: Phase, partial: &str, report: &ApplyReport) -> String {
    let done: Vec<&str> = report.phases.iter().map(|p| p.phase.what()).collect();
    let rest: Vec<&str> = Phase::ALL
        .iter()
        .skip_while(|p| **p != phase)
        .skip(usize::from(!partial.is_empty()))
        .map(|p| p.what())
        .collect();
    let mut parts = vec![format!(
        "interrupted (SIGINT/SIGTERM) during {}: the writes in progress were finished and flushed",
        phase.what()
    )];
    if !done.is_empty() {
        parts.push(format!("written: {}", done.join(", ")));
    }
    if !partial.is_empty() {
        parts.push(format!("partly written: {partial}"));
    }
    if !rest.is_empty() {
        parts.push(format!("not written: {}", rest.join(", ")));
    }
    let table_done = report.phases.iter().any(|p| p.phase == Phase::TablePrimary);
    parts.push(if table_done {
        "the partition table is written; run plan and apply again to finish".into()
    } else {
        "partition table not written; run plan and apply again".into()
    });
    parts.join("; ")
}

/// Hands out (work item, chunk number) pairs in plan order, lazily, to any number of
/// workers: a 2 TB restore never holds millions of jobs in memory.
struct Cursor<'r> {
    /// Per work item: its chunks as [first, count] runs.
    runs: Vec<std::borrow::Cow<'r, [[u64; 2]]>>,
    /// (item, run, offset in the run) of the next pair.
    at: Mutex<(usize, usize, u64)>,
}

impl<'r> Cursor<'r> {
    fn new(runs: Vec<std::borrow::Cow<'r, [[u64; 2]]>>) -> Cursor<'r> {
        Cursor {
            runs,
            at: Mutex::new((0, 0, 0)),
        }
    }

    fn next(&self) -> Option<(usize, u64)> {
        let mut c = self.at.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (w, r, k) = *c;
            let runs = self.runs.get(w)?;
            let Some(&[first, count]) = runs.get(r) else {
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
    }
}

/// Runs `each` on every pair `cursor` hands out, with `jobs` workers, until the cursor is
/// empty, `each` fails (the first error is returned) or `stop` says so.
fn run_parallel(
    cursor: &Cursor,
    jobs: usize,
    stop: &(dyn Fn() -> bool + Sync),
    each: &(dyn Fn(usize, u64) -> Result<()> + Sync),
) -> Result<()> {
    let failure = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while !failure.happened() && !stop() {
                    let Some((w, i)) = cursor.next() else { break };
                    if let Err(e) = each(w, i) {
                        failure.record(e);
                    }
                }
            });
        }
    });
    failure.into_result()
}

/// Fetches, verifies and writes the chunks of `work`: `jobs` fetchers keep that many store
/// reads in flight and hand what they read to one writer per core, which decompresses,
/// verifies and writes it (a worker that did both left its request slot idle while it
/// hashed). One chunk per writer waits between the two: when the writers are the bottleneck
/// more would only hold memory, so memory stays about `jobs` chunks plus two per core.
/// Returns the bytes and chunks written and Ok(false) when an interrupt stopped it early.
fn write_chunks(
    store: &Store,
    disks: &[&Disk],
    work: &[ChunkWork],
    jobs: usize,
    progress: &dyn Progress,
    interrupt: &Interrupt,
) -> (u64, u64, Result<bool>) {
    let cursor = Cursor::new(
        work.iter()
            .map(|w| std::borrow::Cow::Borrowed(&w.action.runs[..]))
            .collect(),
    );
    let bytes = AtomicU64::new(0);
    let chunks = AtomicU64::new(0);
    // A chunk handed out but not written because an interrupt (or a failure) stopped the
    // writers; a failure is reported as such.
    let dropped = AtomicBool::new(false);
    let failure = FirstError::default();
    let stopped = || failure.happened() || interrupt.raised();
    let zeros = vec![0u8; store.config.chunk_size as usize];
    let jobs = jobs.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let writers = cores.min(jobs);
    let (tx, rx) =
        std::sync::mpsc::sync_channel::<(usize, u64, Option<crate::store::Packed>)>(writers);
    let rx = Mutex::new(rx);
    // A fetched chunk's buffer goes back to the fetchers once the chunk is written, so a
    // restore reads through about `jobs + writers` allocations, not one per chunk.
    let spare: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let take_spare = || {
        spare
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    };
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            s.spawn(|| {
                let tx = tx;
                while !stopped() {
                    let Some((w, i)) = cursor.next() else { break };
                    let item = &work[w];
                    // Patched, zero and free chunks are the writer's; the rest is fetched.
                    let packed = match item.source(i) {
                        Source::Store(id) => {
                            let (_, len) = item.index.chunk_range(i);
                            let buf = take_spare();
                            match store
                                .get_packed_in(&id, len as usize, buf)
                                .with_context(|| {
                                    format!(
                                        "{} of {}",
                                        item.action.name,
                                        disks[item.disk].path.display()
                                    )
                                }) {
                                Ok(p) => Some(p),
                                Err(e) => {
                                    failure.record(e);
                                    break;
                                }
                            }
                        }
                        _ => None,
                    };
                    if tx.send((w, i, packed)).is_err() {
                        dropped.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            });
        }
        drop(tx);
        for _ in 0..writers {
            s.spawn(|| {
                // Every chunk this writer decompresses goes through one buffer.
                let mut buf = Vec::new();
                loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((w, i, packed)) = next else { break };
                    if stopped() {
                        // Drained unwritten, so no fetcher waits on a full queue.
                        dropped.store(true, Ordering::SeqCst);
                        continue;
                    }
                    let written =
                        write_one(store, disks, &work[w], i, packed.as_ref(), &zeros, &mut buf);
                    if let Some(p) = packed {
                        let mut spare = spare.lock().unwrap_or_else(|e| e.into_inner());
                        if spare.len() < jobs + writers {
                            spare.push(p.into_buffer());
                        }
                    }
                    match written {
                        Ok(len) => {
                            bytes.fetch_add(len, Ordering::Relaxed);
                            chunks.fetch_add(1, Ordering::Relaxed);
                            progress.add(len);
                            failpoint::hit("after-chunk");
                        }
                        Err(e) => failure.record(e),
                    }
                }
            });
        }
    });
    let (bytes, chunks) = (bytes.into_inner(), chunks.into_inner());
    let finished = failure
        .into_result()
        .map(|()| !dropped.into_inner() && cursor.next().is_none());
    (bytes, chunks, finished)
}

/// Writes chunk `i` of `item` from what a fetcher read (None: a chunk the writer makes
/// itself), decompressing into `buf`. Returns its length.
fn write_one(
    store: &Store,
    disks: &[&Disk],
    item: &ChunkWork,
    i: u64,
    packed: Option<&crate::store::Packed>,
    zeros: &[u8],
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let (start, len) = item.index.chunk_range(i);
    let disk = disks[item.disk];
    let at = item.action.offset + start;
    match item.source(i) {
        Source::Patched(patch) => write_patched(store, disk, item, i, patch)?,
        Source::Free => {}
        Source::Zero => disk.write_zeroes(at, len, zeros)?,
        Source::Store(id) => {
            let packed = packed.context("a fetched chunk went missing between fetch and write")?;
            store
                .unpack_into(&id, len as usize, packed, buf)
                .with_context(|| format!("{} of {}", item.action.name, disk.path.display()))?;
            disk.write_at(buf, at)?;
        }
    }
    Ok(len)
}

/// A chunk whose bytes change so a boot loader finds a partition that moved: fetched and
/// verified, patched, and checked against the hash the plan computed.
fn write_patched(
    store: &Store,
    disk: &Disk,
    item: &ChunkWork,
    i: u64,
    patch: &ChunkPatch,
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
    disk.write_at(&data, item.action.offset + start)
}

/// Copies files within the target's (already restored) ESP and checks that each copy hashes
/// as the snapshot recorded its source.
fn copy_esp_files(disk: &Disk, offset: u64, length: u64, files: &[FileCopy]) -> Result<()> {
    let pairs: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.from.clone(), f.to.clone()))
        .collect();
    esp::copy_files(disk, offset, length, &pairs).with_context(|| {
        format!(
            "adding the fallback loader to the ESP of {}",
            disk.path.display()
        )
    })?;
    let now = esp::list_files(disk, offset, length)?;
    for f in files {
        let copied = esp::find(&now, &f.to);
        if copied.is_none_or(|c| c.hash != f.hash || c.size != f.size) {
            bail!(
                "the fallback loader copy {} on the ESP of {} does not hash as {} in the snapshot",
                f.to,
                disk.path.display(),
                f.from
            );
        }
    }
    Ok(())
}

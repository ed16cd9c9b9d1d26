//! `restore capture`: reads disks, uploads the chunks the store does not have yet, then the
//! chunk indexes, and commits the manifest last and atomically, so an interrupted capture
//! leaves orphan chunks but never a snapshot that looks complete. A running server's
//! filesystems are read consistently (`live`): frozen while their blocks are read, read
//! twice, or refused.

pub mod live;
pub mod lvm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::chunk::ChunkId;
use crate::disk::Disk;
use crate::disk::layout::{self, DiskLayout, TableInfo};
use crate::disk::scan;
use crate::manifest::{
    self, DiskRecord, Manifest, PartitionRecord, RegionRecord, TableSectorRecord,
};
use crate::progress::Progress;
use crate::store::Store;
use crate::store::index::ChunkIndex;

pub struct CaptureOptions {
    pub store: crate::store::Location,
    pub host: String,
    pub disks: Vec<PathBuf>,
    pub chunk_size: Option<u32>,
    /// Keep every block, free space of filesystems included (an exact image).
    pub all_blocks: bool,
    /// Sign the manifest with this minisign secret key.
    pub sign_key: Option<PathBuf>,
    /// Read and hash every chunk already in the store before reusing it.
    pub verify_existing: bool,
    /// What to do with what cannot be read consistently.
    pub consistency: live::Policy,
    /// The longest a filesystem is kept frozen.
    pub max_freeze: Duration,
    /// Run at the idle I/O class and a low CPU priority.
    pub gentle: bool,
    /// Cap on the read rate, bytes per second.
    pub limit_read: Option<u64>,
}

/// What happened to one partition, for the summary and `--json`.
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub disk: String,
    pub number: u32,
    pub consistency: manifest::Consistency,
    /// Bytes read from the disk, and bytes of new chunks (before compression).
    pub bytes_read: u64,
    pub bytes_new: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_seconds: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct CaptureReport {
    pub snapshot_id: String,
    pub host: String,
    pub store: String,
    pub store_created: bool,
    pub disks: usize,
    pub bytes_read: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    pub new_chunks: u64,
    /// Chunks that were entirely free filesystem space: neither read into the store nor kept.
    pub free_chunks: u64,
    pub uploaded_bytes: u64,
    /// Chunks found damaged in the store (empty, truncated, or wrong) and written again.
    pub repaired_chunks: Vec<String>,
    /// The key that signed the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// How each partition was read.
    pub partitions: Vec<PartitionReport>,
    pub seconds: f64,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    chunks: AtomicU64,
    zero_chunks: AtomicU64,
    new_chunks: AtomicU64,
    free_chunks: AtomicU64,
    uploaded: AtomicU64,
    /// Bytes of new chunks, uncompressed.
    new_bytes: AtomicU64,
    repaired: std::sync::Mutex<Vec<String>>,
    partitions: std::sync::Mutex<Vec<PartitionReport>>,
}

impl Counters {
    /// Counts what `put_chunk` did; true when bytes were written.
    fn stored(&self, id: &ChunkId, len: usize, s: crate::store::Stored) -> bool {
        use crate::store::Stored;
        if !matches!(s, Stored::Existed) {
            self.new_bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
        match s {
            Stored::Existed => false,
            Stored::Written(n) => {
                self.new_chunks.fetch_add(1, Ordering::Relaxed);
                self.uploaded.fetch_add(n, Ordering::Relaxed);
                true
            }
            Stored::Repaired(n, why) => {
                self.new_chunks.fetch_add(1, Ordering::Relaxed);
                self.uploaded.fetch_add(n, Ordering::Relaxed);
                self.repaired
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{id}: {why}"));
                true
            }
        }
    }
}

/// This machine's name (for `--host`'s default and the holder of a store lock).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// One disk of `capture --dry-run`: its path, and each partition's title with how it is read.
pub type DryRunDisk = (String, Vec<(String, String)>);

/// `capture --dry-run`: how each partition of each disk would be read, touching nothing.
pub fn dry_run(opts: &CaptureOptions) -> Result<Vec<DryRunDisk>> {
    let needed = live::needed_filesystems(opts.store.local_path());
    let mut out = Vec::new();
    for path in &opts.disks {
        let disk = Disk::open_read(path)?;
        let layout = layout::read_layout(&disk)?;
        let hows = live::plan_reads(
            &disk,
            &layout,
            opts.consistency,
            opts.max_freeze,
            100e6,
            &needed,
        )?;
        out.push((
            path.display().to_string(),
            layout
                .partitions
                .iter()
                .zip(hows)
                .map(|(p, h)| (p.title(), h.to_string()))
                .collect(),
        ));
    }
    Ok(out)
}

pub fn capture(opts: &CaptureOptions, progress: &dyn Progress) -> Result<CaptureReport> {
    let started = Instant::now();
    manifest::valid_host(&opts.host)?;
    ensure!(!opts.disks.is_empty(), "no disk given to capture");
    // Open every disk, read every layout and decide how each partition is read consistently
    // before the store is touched: bad input, or a live filesystem that cannot be read
    // consistently, changes nothing.
    let needed = live::needed_filesystems(opts.store.local_path());
    let mut disks = Vec::new();
    for path in &opts.disks {
        let disk = Disk::open_read(path)?;
        let layout = layout::read_layout(&disk)?;
        let usage = live::usage(&disk, &layout);
        let rate = match layout
            .partitions
            .iter()
            .find(|p| usage.get(&p.number).is_some_and(|u| u.rw()))
        {
            Some(p) => live::sample_rate(&disk, p.offset, p.size),
            None => 100e6,
        };
        let rate = opts.limit_read.map_or(rate, |l| rate.min(l as f64));
        let hows = live::plan_reads(
            &disk,
            &layout,
            opts.consistency,
            opts.max_freeze,
            rate,
            &needed,
        )?;
        disks.push((disk, layout, hows));
    }
    if opts.gentle {
        // Beside production: the disk only when nobody else wants it, the CPU likewise.
        if let Err(e) = crate::disk::blockdev::set_idle_io_priority() {
            eprintln!("note: could not take the idle I/O class ({e}); reading at normal priority");
        }
        let _ = crate::disk::blockdev::set_low_cpu_priority();
    }
    scan::set_read_limit(opts.limit_read);
    let key = opts
        .sign_key
        .as_deref()
        .map(crate::signing::SigningKey::load)
        .transpose()?;
    let (store, created) = Store::open_or_create(&opts.store, opts.chunk_size)?;
    let holder = format!(
        "capture of host {} (pid {} on {})",
        opts.host,
        std::process::id(),
        hostname().unwrap_or_default()
    );
    // Prune stays out while this capture may reference any chunk it finds or uploads.
    store.with_lock(
        crate::store::lock::Kind::Capture,
        &holder,
        std::time::Duration::from_secs(600),
        || {
            capture_locked(
                opts,
                &store,
                created,
                &disks,
                key.as_ref(),
                started,
                progress,
            )
        },
    )
}

fn capture_locked(
    opts: &CaptureOptions,
    store: &Store,
    created: bool,
    disks: &[(Disk, DiskLayout, Vec<live::How>)],
    key: Option<&crate::signing::SigningKey>,
    started: Instant,
    progress: &dyn Progress,
) -> Result<CaptureReport> {
    let counters = Counters::default();
    let now = crate::clock::now();
    let mut records = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (disk, layout, hows) in disks {
        let mut name = disk.name();
        let mut n = 2;
        while !names.insert(name.clone()) {
            name = format!("{}-{n}", disk.name());
            n += 1;
        }
        records.push(capture_disk(
            store, disk, layout, hows, name, opts, &counters, progress,
        )?);
    }
    // Every chunk and index must be durable before the manifest can point at them.
    store.sync()?;
    let m = Manifest {
        format: manifest::FORMAT.into(),
        version: 1,
        id: now.snapshot_id.clone(),
        host: opts.host.clone(),
        created: now.rfc3339,
        chunk_size: store.config.chunk_size,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        disks: records,
        nvram: crate::boot::efivars::efivars_dir().map(|d| crate::boot::efivars::capture(&d)),
    };
    let bytes = serde_json::to_vec_pretty(&m)?;
    let signature = key.map(|k| k.sign(&bytes, &m.host, &m.id)).transpose()?;
    crate::failpoint::hit("before-manifest");
    store.commit_snapshot(&m.host, &m.id, &bytes, signature.as_deref())?;
    Ok(CaptureReport {
        snapshot_id: m.id,
        host: m.host,
        store: store.describe(),
        store_created: created,
        disks: disks.len(),
        bytes_read: counters.bytes_read.into_inner(),
        chunks: counters.chunks.into_inner(),
        zero_chunks: counters.zero_chunks.into_inner(),
        new_chunks: counters.new_chunks.into_inner(),
        free_chunks: counters.free_chunks.into_inner(),
        uploaded_bytes: counters.uploaded.into_inner(),
        repaired_chunks: counters
            .repaired
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
        signed_by: key.map(|k| k.id.clone()),
        partitions: counters
            .partitions
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn capture_disk(
    store: &Store,
    disk: &Disk,
    layout: &DiskLayout,
    hows: &[live::How],
    name: String,
    opts: &CaptureOptions,
    counters: &Counters,
    progress: &dyn Progress,
) -> Result<DiskRecord> {
    let verify = opts.verify_existing;
    let mut table_sectors = Vec::new();
    for t in &layout.table_sectors {
        let bytes = disk.read_vec(t.offset, t.length)?;
        let chunk = ChunkId::of(&bytes);
        counters.stored(
            &chunk,
            bytes.len(),
            store.put_chunk(&chunk, &bytes, verify)?,
        );
        table_sectors.push(TableSectorRecord {
            name: t.name.clone(),
            offset: t.offset,
            length: t.length,
            chunk,
        });
    }
    let total: u64 = layout.partitions.iter().map(|p| p.size).sum::<u64>()
        + layout
            .unclaimed_ranges(disk.size)
            .iter()
            .map(|(s, e)| e - s)
            .sum::<u64>();
    progress.start(&format!("capture {}", disk.name()), total);
    let mut boot_regions = Vec::new();
    // Where the post-table gap starts: after LBA 0 on MBR, after the primary entries on GPT.
    let table_end = match layout.table {
        TableInfo::Mbr { .. } => u64::from(disk.logical_sector_size),
        _ => layout
            .table_sectors
            .iter()
            .filter(|t| t.name.starts_with("gpt-primary"))
            .map(|t| t.offset + t.length)
            .max()
            .unwrap_or(0),
    };
    let chunk_size = u64::from(store.config.chunk_size);
    for (mut start, mut end) in layout.unclaimed_ranges(disk.size) {
        let essential = start == 0 || start == table_end;
        // The holes of an image file are zeros, and zeros at the ends of a gap are not recorded
        // (an all-zero gap is not recorded at all): a gap is narrowed to the chunks that hold
        // its data, so the empty tail of a sparse 1 TiB image costs no index of a million zero
        // chunks in memory. Block devices have no holes: their gaps are read whole.
        if !essential && let Some(data) = disk.data_ranges(start, end - start) {
            let (Some(first), Some(last)) = (data.first(), data.last()) else {
                progress.add(end - start);
                continue;
            };
            let lo = start + first.0 / chunk_size * chunk_size;
            let hi = (start + (last.0 + last.1).div_ceil(chunk_size) * chunk_size).min(end);
            progress.add((lo - start) + (end - hi));
            (start, end) = (lo, hi);
        }
        let region_name = match start {
            _ if !essential => format!("gap-{start}"),
            0 => "boot-code".to_string(),
            _ => "post-table-gap".to_string(),
        };
        let (index, ids) = capture_range(
            store,
            disk,
            (start, end - start),
            None,
            verify,
            None,
            counters,
            progress,
        )?;
        if essential || ids.iter().any(|id| !id.is_zero_marker()) {
            boot_regions.push(RegionRecord {
                name: region_name,
                offset: start,
                length: end - start,
                index,
            });
        }
    }
    let mut partitions = Vec::new();
    for (p, how) in layout.partitions.iter().zip(hows) {
        let read_before = counters.bytes_read.load(Ordering::Relaxed);
        let new_before = counters.new_bytes.load(Ordering::Relaxed);
        let what = || format!("capturing {} of {}", p.title(), disk.path.display());
        let ext = p
            .filesystem
            .as_deref()
            .is_some_and(crate::disk::extfs::is_ext);
        // Used blocks from the ext bitmaps only where the filesystem cannot change.
        let bitmaps = |consistency| {
            let mask = if ext && !opts.all_blocks {
                crate::disk::extfs::used_map(disk, p.offset, p.size)
            } else {
                None
            };
            if ext && !opts.all_blocks && mask.is_none() {
                eprintln!(
                    "note: {} of {}: the allocation bitmaps cannot be trusted (journal needs recovery, or an unsupported feature); keeping every block",
                    p.title(),
                    disk.path.display()
                );
            }
            (mask, consistency)
        };
        let mut frozen_at = None;
        let mut freeze_seconds = None;
        let (mask, consistency, (index, ids)) = match how {
            live::How::Offline | live::How::ReadOnly => {
                let (mask, c) = bitmaps(if matches!(how, live::How::Offline) {
                    manifest::Consistency::Offline
                } else {
                    manifest::Consistency::ReadOnly
                });
                let read = capture_range(
                    store,
                    disk,
                    (p.offset, p.size),
                    mask.as_ref(),
                    verify,
                    None,
                    counters,
                    progress,
                )
                .with_context(what)?;
                (mask, c, read)
            }
            live::How::Swap => {
                // Only the header page (signature, UUID, label); the rest is transient.
                let mask = crate::disk::extfs::UsedMap {
                    ranges: vec![(0, p.size.min(4096))],
                };
                let read = capture_range(
                    store,
                    disk,
                    (p.offset, p.size),
                    Some(&mask),
                    verify,
                    None,
                    counters,
                    progress,
                )
                .with_context(what)?;
                (Some(mask), manifest::Consistency::Swap, read)
            }
            live::How::Inconsistent => {
                let read = capture_range(
                    store,
                    disk,
                    (p.offset, p.size),
                    None,
                    verify,
                    None,
                    counters,
                    progress,
                )
                .with_context(what)?;
                (None, manifest::Consistency::Inconsistent, read)
            }
            live::How::Freeze { mounts, kernel_map } => {
                // While frozen, the server's writers wait for this read: it does not yield to
                // other disk users then (back to the idle class after the thaw).
                let raised = crate::disk::blockdev::BestEffortIo::raise(opts.gentle);
                let frozen = live::Frozen::freeze(mounts, opts.max_freeze).with_context(what)?;
                frozen_at = Some(frozen.at_unix);
                let mask = if *kernel_map && !opts.all_blocks {
                    let m = live::kernel_used_map(&mounts[0], p.size);
                    if m.is_none() {
                        eprintln!(
                            "note: {}: the kernel's space map of {} is not usable; keeping every block",
                            p.title(),
                            mounts[0].display()
                        );
                    }
                    m
                } else {
                    None
                };
                crate::failpoint::hit("while-frozen");
                let stop = || frozen.expired();
                let read = capture_range(
                    store,
                    disk,
                    (p.offset, p.size),
                    mask.as_ref(),
                    verify,
                    Some(&stop),
                    counters,
                    progress,
                );
                let thawed = frozen.thaw();
                drop(raised);
                let read = read.with_context(what)?;
                freeze_seconds = Some(thawed.with_context(what)?);
                (mask, manifest::Consistency::Frozen, read)
            }
            live::How::Snapshot(read) => {
                let (read, mask, at) =
                    capture_through_snapshots(store, disk, p, read, opts, counters, progress)
                        .with_context(what)?;
                frozen_at = Some(at);
                (mask, manifest::Consistency::Snapshot, read)
            }
            live::How::DoubleRead => {
                let mut prev = capture_range(
                    store,
                    disk,
                    (p.offset, p.size),
                    None,
                    verify,
                    None,
                    counters,
                    progress,
                )
                .with_context(what)?;
                let mut same = false;
                for _ in 0..4 {
                    let next = capture_range(
                        store,
                        disk,
                        (p.offset, p.size),
                        None,
                        verify,
                        None,
                        counters,
                        progress,
                    )
                    .with_context(what)?;
                    same = next.0 == prev.0;
                    prev = next;
                    if same {
                        break;
                    }
                }
                if !same {
                    anyhow::bail!(
                        "{} of {} changed between each of 5 reads; it cannot be captured consistently now: capture at a quieter time, or with --consistency allow-inconsistent; no snapshot was written",
                        p.title(),
                        disk.path.display()
                    );
                }
                (None, manifest::Consistency::DoubleRead, prev)
            }
        };
        let (used_map, used_map_len) = match &mask {
            Some(m) => {
                let bytes = m.encode();
                let id = ChunkId::of(&bytes);
                counters.stored(&id, bytes.len(), store.put_chunk(&id, &bytes, verify)?);
                (Some(id), bytes.len() as u64)
            }
            None => (None, 0),
        };
        let free_chunks = ids.iter().filter(|id| id.is_free_marker()).count() as u64;
        counters
            .free_chunks
            .fetch_add(free_chunks, Ordering::Relaxed);
        counters
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PartitionReport {
                disk: name.clone(),
                number: p.number,
                consistency,
                bytes_read: counters.bytes_read.load(Ordering::Relaxed) - read_before,
                bytes_new: counters.new_bytes.load(Ordering::Relaxed) - new_before,
                freeze_seconds,
            });
        partitions.push(PartitionRecord {
            info: p.clone(),
            index,
            chunks: ids.len() as u64,
            zero_chunks: ids.iter().filter(|id| id.is_zero_marker()).count() as u64,
            used_map,
            used_map_len,
            free_chunks,
            consistency: Some(consistency),
            frozen_at,
            freeze_seconds,
        });
    }
    progress.finish();
    let (boot_loaders, warnings) = crate::boot::detect(disk, layout);
    for w in warnings {
        eprintln!("warning: {}: {w}", disk.path.display());
    }
    let reference = crate::boot::Reference {
        loaders: Some(&boot_loaders),
        ..Default::default()
    };
    let paths = crate::boot::check(disk, layout, &reference, None);
    let boot_chain_whole =
        !boot_loaders.is_empty() && !paths.is_empty() && paths.iter().all(|p| p.whole);
    Ok(DiskRecord {
        name,
        source: disk.path.display().to_string(),
        size: disk.size,
        logical_sector_size: disk.logical_sector_size,
        physical_sector_size: disk.physical_sector_size,
        identity: disk.identity.clone(),
        table: layout.table.clone(),
        table_sectors,
        boot_regions,
        partitions,
        boot_loaders,
        boot_chain_whole,
    })
}

/// Reads a partition that is an LVM physical volume through snapshots of its mounted volumes
/// (capture/lvm.rs): the label and metadata areas first, as they are before any snapshot
/// exists, then each volume's extents from its snapshot, the rest from the partition. The
/// snapshots are removed before this returns, whatever happened. Returns what capture_range
/// does, the used-space map and when the snapshots were made.
#[allow(clippy::type_complexity)]
fn capture_through_snapshots(
    store: &Store,
    disk: &Disk,
    p: &layout::PartitionInfo,
    read: &lvm::PvRead,
    opts: &CaptureOptions,
    counters: &Counters,
    progress: &dyn Progress,
) -> Result<(
    (ChunkId, Vec<ChunkId>),
    Option<crate::disk::extfs::UsedMap>,
    f64,
)> {
    use crate::disk::{Redirect, Source};
    use std::sync::Arc;
    let mut redirects = Vec::new();
    for &(off, len) in &read.metadata {
        let bytes = disk.read_vec(p.offset + off, len)?;
        redirects.push(Redirect {
            offset: p.offset + off,
            len,
            source: Source::Bytes(Arc::new(bytes)),
        });
    }
    let snaps = lvm::Snapshots::make(&read.volumes)?;
    let at = snaps.at_unix;
    let result = (|| -> Result<_> {
        let mut maps = Vec::new();
        for v in &read.volumes {
            let path = v.snapshot_path();
            let snap = Disk::open_read(&path)?;
            let ext = crate::disk::extfs::is_ext(&v.fstype);
            let map = if ext && !opts.all_blocks {
                let m = crate::disk::extfs::used_map(&snap, 0, v.size.min(snap.size));
                if m.is_none() {
                    eprintln!(
                        "note: {}/{}: the allocation bitmaps in its snapshot cannot be trusted; keeping every block",
                        v.vg, v.lv
                    );
                }
                m
            } else {
                None
            };
            maps.push(map);
            // The redirected view reads the snapshot through this handle: no second open.
            let file = Arc::new(
                snap.file()
                    .try_clone()
                    .with_context(|| format!("opening snapshot {}", path.display()))?,
            );
            drop(snap);
            for &(lv_off, len, part_off) in &v.segments {
                redirects.push(Redirect {
                    offset: p.offset + part_off,
                    len,
                    source: Source::File(file.clone(), lv_off),
                });
            }
        }
        let mask = lvm::used_map(p.size, read, &maps);
        let view = disk.redirected(std::mem::take(&mut redirects))?;
        let read = capture_range(
            store,
            &view,
            (p.offset, p.size),
            mask.as_ref(),
            opts.verify_existing,
            None,
            counters,
            progress,
        )?;
        snaps.check()?;
        Ok((read, mask))
    })();
    // Every handle on the snapshots is closed (the view is gone) before they are removed.
    drop(redirects);
    let removed = snaps.remove();
    let (read, mask) = result?;
    removed?;
    Ok((read, mask, at))
}

/// Chunks one byte range into the store and stores its index. `stop` is asked before each
/// chunk is stored; when it says so the read ends with an error (a freeze's budget is spent).
#[allow(clippy::too_many_arguments)]
fn capture_range(
    store: &Store,
    disk: &Disk,
    (offset, length): (u64, u64),
    mask: Option<&crate::disk::extfs::UsedMap>,
    verify: bool,
    stop: Option<&(dyn Fn() -> bool + Sync)>,
    counters: &Counters,
    progress: &dyn Progress,
) -> Result<(ChunkId, Vec<ChunkId>)> {
    let chunk_size = store.config.chunk_size;
    let ids = scan::scan(
        disk,
        offset,
        length,
        chunk_size,
        mask,
        progress,
        |_, bytes, id| {
            if stop.is_some_and(|s| s()) {
                anyhow::bail!("the freeze reached --max-freeze before every block was read");
            }
            counters
                .bytes_read
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            if id.is_zero_marker() {
                counters.zero_chunks.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if counters.stored(&id, bytes.len(), store.put_chunk(&id, bytes, verify)?) {
                crate::failpoint::hit("after-chunk-stored");
            }
            Ok(())
        },
    )?;
    let index = ChunkIndex {
        chunk_size,
        length,
        chunks: ids,
    };
    Ok((store.put_index(&index)?, index.chunks))
}

//! `restore capture`: reads disks, uploads the chunks the store does not have yet, then the
//! chunk indexes, and commits the manifest last and atomically, so an interrupted capture
//! leaves orphan chunks but never a snapshot that looks complete.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    repaired: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    /// Counts what `put_chunk` did; true when bytes were written.
    fn stored(&self, id: &ChunkId, s: crate::store::Stored) -> bool {
        use crate::store::Stored;
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

pub fn capture(opts: &CaptureOptions, progress: &dyn Progress) -> Result<CaptureReport> {
    let started = Instant::now();
    manifest::valid_host(&opts.host)?;
    ensure!(!opts.disks.is_empty(), "no disk given to capture");
    // Open every disk and read every layout before the store is touched: bad input changes nothing.
    let mut disks = Vec::new();
    for path in &opts.disks {
        let disk = Disk::open_read(path)?;
        let layout = layout::read_layout(&disk)?;
        disks.push((disk, layout));
    }
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
    disks: &[(Disk, DiskLayout)],
    key: Option<&crate::signing::SigningKey>,
    started: Instant,
    progress: &dyn Progress,
) -> Result<CaptureReport> {
    let counters = Counters::default();
    let now = crate::clock::now();
    let mut records = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (disk, layout) in disks {
        let mut name = disk.name();
        let mut n = 2;
        while !names.insert(name.clone()) {
            name = format!("{}-{n}", disk.name());
            n += 1;
        }
        records.push(capture_disk(
            store,
            disk,
            layout,
            name,
            (opts.all_blocks, opts.verify_existing),
            &counters,
            progress,
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
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn capture_disk(
    store: &Store,
    disk: &Disk,
    layout: &DiskLayout,
    name: String,
    (all_blocks, verify): (bool, bool),
    counters: &Counters,
    progress: &dyn Progress,
) -> Result<DiskRecord> {
    let mut table_sectors = Vec::new();
    for t in &layout.table_sectors {
        let bytes = disk.read_vec(t.offset, t.length)?;
        let chunk = ChunkId::of(&bytes);
        counters.stored(&chunk, store.put_chunk(&chunk, &bytes, verify)?);
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
    for (start, end) in layout.unclaimed_ranges(disk.size) {
        let region_name = if start == 0 {
            "boot-code".to_string()
        } else if start == table_end {
            "post-table-gap".to_string()
        } else {
            format!("gap-{start}")
        };
        let (index, ids) = capture_range(
            store,
            disk,
            start,
            end - start,
            None,
            verify,
            counters,
            progress,
        )?;
        let essential = region_name == "boot-code" || region_name == "post-table-gap";
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
    for p in &layout.partitions {
        let ext = matches!(p.filesystem.as_deref(), Some("ext2" | "ext3" | "ext4"));
        let mask = if ext && !all_blocks {
            crate::disk::extfs::used_map(disk, p.offset, p.size)
        } else {
            None
        };
        if ext && !all_blocks && mask.is_none() {
            eprintln!(
                "note: {} of {}: the allocation bitmaps cannot be trusted (journal needs recovery, mounted, or an unsupported feature); keeping every block",
                p.title(),
                disk.path.display()
            );
        }
        let (used_map, used_map_len) = match &mask {
            Some(m) => {
                let bytes = m.encode();
                let id = ChunkId::of(&bytes);
                counters.stored(&id, store.put_chunk(&id, &bytes, verify)?);
                (Some(id), bytes.len() as u64)
            }
            None => (None, 0),
        };
        let (index, ids) = capture_range(
            store,
            disk,
            p.offset,
            p.size,
            mask.as_ref(),
            verify,
            counters,
            progress,
        )
        .with_context(|| format!("capturing {} of {}", p.title(), disk.path.display()))?;
        let free_chunks = ids.iter().filter(|id| id.is_free_marker()).count() as u64;
        counters
            .free_chunks
            .fetch_add(free_chunks, Ordering::Relaxed);
        partitions.push(PartitionRecord {
            info: p.clone(),
            index,
            chunks: ids.len() as u64,
            zero_chunks: ids.iter().filter(|id| id.is_zero_marker()).count() as u64,
            used_map,
            used_map_len,
            free_chunks,
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

/// Chunks one byte range into the store and stores its index.
#[allow(clippy::too_many_arguments)]
fn capture_range(
    store: &Store,
    disk: &Disk,
    offset: u64,
    length: u64,
    mask: Option<&crate::disk::extfs::UsedMap>,
    verify: bool,
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
            counters
                .bytes_read
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            if id.is_zero_marker() {
                counters.zero_chunks.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if counters.stored(&id, store.put_chunk(&id, bytes, verify)?) {
                crate::failpoint::hit("after-chunk-stored");
            }
            Ok(())
        },
    )?;
    let index = ChunkIndex {
        chunk_size,
        length,
        chunks: ids.clone(),
    };
    Ok((store.put_index(&index)?, ids))
}

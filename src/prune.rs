//! `restore prune`: deletes the chunk indexes and chunks no snapshot references. It holds the
//! store's exclusive lock while it works (`store::lock`): a capture in progress, which may
//! reference any chunk it finds or uploads, keeps prune out, and a capture that starts waits
//! for prune to end. What is referenced is read after the lock is taken, so a snapshot that
//! completed just before counts. A manifest that cannot be read, or an index that is missing,
//! stops prune before it deletes anything: what they reference cannot be known.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::chunk::ChunkId;
use crate::manifest;
use crate::parallel::FirstError;
use crate::progress::Progress;
use crate::signing::Trust;
use crate::store::{Store, lock};

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub referenced_chunks: usize,
    pub referenced_indexes: usize,
    pub deleted_chunks: u64,
    pub deleted_indexes: u64,
    pub deleted_bytes: u64,
    pub dry_run: bool,
    pub seconds: f64,
}

/// Every object a store's snapshots reference: indexes, and the chunks of indexes, table
/// sectors and used-space maps.
pub fn referenced(store: &Store) -> Result<(usize, HashSet<ChunkId>, HashSet<ChunkId>)> {
    let keys = store.snapshot_keys(None)?;
    let mut indexes = HashSet::new();
    let mut chunks = HashSet::new();
    for (host, id) in &keys {
        let (m, _) = manifest::load(store, host, id, &Trust::default()).with_context(|| {
            format!(
                "snapshot {id} of host {host} cannot be read, so what it references is unknown; nothing was deleted (forget it, or repair the store)"
            )
        })?;
        for d in &m.disks {
            chunks.extend(d.table_sectors.iter().map(|t| t.chunk));
            for (index, covers) in d
                .boot_regions
                .iter()
                .map(|r| (r.index, r.length))
                .chain(d.partitions.iter().map(|p| (p.index, p.info.size)))
            {
                if indexes.insert(index) {
                    let idx = store.get_index(&index, covers).with_context(|| {
                        format!(
                            "snapshot {id} of host {host} is damaged (run restore check); nothing was deleted"
                        )
                    })?;
                    chunks.extend(idx.chunks.iter().copied());
                }
            }
            chunks.extend(d.partitions.iter().filter_map(|p| p.used_map));
        }
    }
    Ok((keys.len(), indexes, chunks))
}

pub fn prune(
    store: &Store,
    dry_run: bool,
    wait: Duration,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let started = Instant::now();
    if !dry_run {
        store.writable()?;
    }
    let holder = format!(
        "prune (pid {} on {})",
        std::process::id(),
        crate::capture::hostname().unwrap_or_default()
    );
    let work = || -> Result<PruneReport> {
        let (snapshots, indexes, chunks) = referenced(store)?;
        let mut doomed = Vec::new();
        for (key, size) in store.list_sized("indexes/")? {
            if !object_id(&key).is_some_and(|id| indexes.contains(&id)) {
                doomed.push((key, size, true));
            }
        }
        for (key, size) in store.list_sized("chunks/")? {
            if !object_id(&key).is_some_and(|id| chunks.contains(&id)) {
                doomed.push((key, size, false));
            }
        }
        let mut report = PruneReport {
            snapshots,
            referenced_chunks: chunks.len(),
            referenced_indexes: indexes.len(),
            dry_run,
            ..Default::default()
        };
        for (_, size, index) in &doomed {
            report.deleted_bytes += size;
            if *index {
                report.deleted_indexes += 1;
            } else {
                report.deleted_chunks += 1;
            }
        }
        if !dry_run {
            delete_all(store, &doomed, progress)?;
        }
        Ok(report)
    };
    let mut report = if dry_run {
        work()?
    } else {
        store.with_lock(lock::Kind::Prune, &holder, wait, work)?
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The id in "chunks/ab/abcd..." or "indexes/ab/abcd...", if it is one.
fn object_id(key: &str) -> Option<ChunkId> {
    ChunkId::from_hex(key.rsplit('/').next()?).ok()
}

/// Deletes concurrently (a remote store answers one request at a time per connection).
fn delete_all(
    store: &Store,
    doomed: &[(String, u64, bool)],
    progress: &dyn Progress,
) -> Result<()> {
    progress.start("prune", doomed.iter().map(|d| d.1).sum());
    let failed = FirstError::default();
    let done = AtomicU64::new(0);
    crate::parallel::for_each(doomed, 16, |_, (key, size, _)| {
        if failed.happened() {
            return;
        }
        match store.delete(key) {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
                progress.add(*size);
            }
            Err(e) => failed.record(e),
        }
    });
    progress.finish();
    if let Err(e) = failed.into_result() {
        bail!(
            "prune deleted {} of {} unreferenced objects, then failed: {e:#}; run prune again",
            done.into_inner(),
            doomed.len()
        );
    }
    Ok(())
}

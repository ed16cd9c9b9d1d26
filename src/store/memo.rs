//! What one run has already fetched and verified from the store, so it is not fetched again.
//! A restore reads the same chunk indexes and the same small chunks (partition tables, boot
//! regions) in its plan, in apply's proof of that plan and in the check after writing; on a
//! remote store each is a round trip, and a few dozen in a row cost seconds. Only
//! content-addressed objects are kept, after they were verified (their bytes cannot change
//! under their name), and only within fixed budgets: memory stays flat however large the
//! restore.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Store;
use super::index::ChunkIndex;
use crate::chunk::ChunkId;

/// Requests in flight while warming: round trips, not CPU, bound them.
const WARM_WORKERS: usize = 16;

/// An object a plan is about to read, one at a time.
#[derive(Clone, Copy, Debug)]
pub enum Wanted {
    /// A chunk index covering this many bytes.
    Index(ChunkId, u64),
    /// A small chunk of this many bytes (a table sector, a used-space map).
    Chunk(ChunkId, u64),
}

/// Chunk ids the kept indexes may hold in all (32 bytes each: 4 MiB, the indexes of
/// partitions up to 128 GiB in 1 MiB chunks). A larger index is fetched again: one request
/// among the thousands its partition's data needs.
const INDEX_BUDGET: usize = 1 << 17;
/// Only chunks this small are kept: partition table sectors, used-space maps, a component's
/// last partial chunk. Data chunks (at least 256 KiB) are fetched once and never kept.
pub const SMALL_CHUNK: usize = 64 << 10;
/// Bytes the kept chunks may hold in all.
const CHUNK_BUDGET: usize = 16 << 20;
/// Bytes the kept snapshot manifests may hold in all.
const MANIFEST_BUDGET: usize = 16 << 20;

#[derive(Default)]
pub struct Memo {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    indexes: HashMap<(ChunkId, u64), Arc<ChunkIndex>>,
    index_ids: usize,
    chunks: HashMap<ChunkId, Arc<Vec<u8>>>,
    chunk_bytes: usize,
    /// Snapshot manifests by key: not named by their hash, but written once and never
    /// changed (this run forgets one it writes or deletes itself).
    manifests: HashMap<String, Arc<Vec<u8>>>,
    manifest_bytes: usize,
    /// Why an object warming could not have (by index or chunk id): the plan's own read
    /// reports it without asking the store again.
    failed: HashMap<ChunkId, String>,
}

impl Memo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn index(&self, id: &ChunkId, covers: u64) -> Option<Arc<ChunkIndex>> {
        self.lock().indexes.get(&(*id, covers)).cloned()
    }

    /// Keeps a verified index, while the budget allows.
    pub fn keep_index(&self, id: &ChunkId, covers: u64, index: &Arc<ChunkIndex>) {
        let mut m = self.lock();
        let n = index.chunks.len();
        if m.index_ids + n <= INDEX_BUDGET && !m.indexes.contains_key(&(*id, covers)) {
            m.index_ids += n;
            m.indexes.insert((*id, covers), Arc::clone(index));
        }
    }

    pub fn chunk(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        self.lock().chunks.get(id).cloned()
    }

    /// Why warming could not fetch this index or chunk, if it could not.
    pub fn failure(&self, id: &ChunkId) -> Option<String> {
        self.lock().failed.get(id).cloned()
    }

    pub fn manifest(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.lock().manifests.get(key).cloned()
    }

    pub fn keep_manifest(&self, key: &str, raw: &[u8]) {
        let mut m = self.lock();
        if m.manifest_bytes + raw.len() <= MANIFEST_BUDGET && !m.manifests.contains_key(key) {
            m.manifest_bytes += raw.len();
            m.manifests.insert(key.to_string(), Arc::new(raw.to_vec()));
        }
    }

    /// Forgets a manifest this run writes or deletes.
    pub fn forget_manifest(&self, key: &str) {
        let mut m = self.lock();
        if let Some(raw) = m.manifests.remove(key) {
            m.manifest_bytes -= raw.len();
        }
    }

    /// Keeps a verified chunk of at most SMALL_CHUNK bytes, while the budget allows.
    pub fn keep_chunk(&self, id: &ChunkId, data: &[u8]) {
        let mut m = self.lock();
        if data.len() <= SMALL_CHUNK
            && m.chunk_bytes + data.len() <= CHUNK_BUDGET
            && !m.chunks.contains_key(id)
        {
            m.chunk_bytes += data.len();
            m.chunks.insert(*id, Arc::new(data.to_vec()));
        }
    }
}

impl Store {
    /// Fetches, concurrently, what the plan is about to read one object at a time (the
    /// table sectors, the chunk indexes, the used-space maps of a snapshot's disks), so those
    /// reads find it kept: one round trip's wait instead of one per object. Only what would
    /// be kept is fetched; a failure is left for the plan's own read to report.
    pub fn warm(&self, wanted: &[Wanted]) {
        let mut budget = INDEX_BUDGET.saturating_sub(self.memo.lock().index_ids);
        let mut seen = std::collections::HashSet::new();
        let list: Vec<Wanted> = wanted
            .iter()
            .copied()
            .filter(|w| match *w {
                Wanted::Index(id, _) | Wanted::Chunk(id, _) => seen.insert(id),
            })
            .filter(|w| match *w {
                Wanted::Index(id, covers) => {
                    let n = ChunkIndex::chunk_count(covers, self.config.chunk_size);
                    let fits = n <= budget as u64 && self.memo.index(&id, covers).is_none();
                    if fits {
                        budget -= n as usize;
                    }
                    fits
                }
                Wanted::Chunk(id, len) => {
                    len <= SMALL_CHUNK as u64
                        && !id.is_zero_marker()
                        && !id.is_free_marker()
                        && self.memo.chunk(&id).is_none()
                }
            })
            .collect();
        if list.len() < 2 {
            return;
        }
        crate::parallel::for_each(&list, WARM_WORKERS, |_, w| {
            let (id, got) = match *w {
                Wanted::Index(id, covers) => (id, self.get_index(&id, covers).map(drop)),
                Wanted::Chunk(id, len) => (id, self.get_chunk(&id, len as usize).map(drop)),
            };
            if let Err(e) = got {
                self.memo.lock().failed.insert(id, format!("{e:#}"));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_its_budgets() {
        let memo = Memo::default();
        let small = vec![7u8; SMALL_CHUNK];
        let n = CHUNK_BUDGET / SMALL_CHUNK;
        let ids: Vec<ChunkId> = (0..=n as u32)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect();
        for id in &ids {
            memo.keep_chunk(id, &small);
        }
        assert_eq!(memo.chunk(&ids[0]).as_deref(), Some(&small));
        assert!(memo.chunk(&ids[n - 1]).is_some());
        assert!(memo.chunk(&ids[n]).is_none(), "over the budget");
        let (a, b, c) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        let memo = Memo::default();
        memo.keep_chunk(&a, &vec![1u8; SMALL_CHUNK + 1]);
        assert!(memo.chunk(&a).is_none(), "a data chunk is never kept");

        let index = |n: usize| {
            Arc::new(ChunkIndex {
                chunk_size: 1 << 20,
                length: n as u64 * (1 << 20),
                chunks: vec![ChunkId::ZERO; n],
            })
        };
        memo.keep_index(&a, 1, &index(INDEX_BUDGET - 1));
        memo.keep_index(&b, 2, &index(2));
        memo.keep_index(&c, 3, &index(1));
        assert!(memo.index(&a, 1).is_some());
        assert!(memo.index(&a, 2).is_none(), "kept by id and length");
        assert!(memo.index(&b, 2).is_none(), "over the budget");
        assert!(memo.index(&c, 3).is_some());
    }
}

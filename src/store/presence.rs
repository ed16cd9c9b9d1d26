//! Does the store hold these chunks? Plan asks before it promises a restore. For a few chunks:
//! concurrent existence checks (a HEAD each on a remote store). For many (a large restore):
//! one listing per shard that holds any of them, since a listing page answers for a thousand
//! keys where a HEAD answers for one. Stores that cannot list cheaply (HTTP) always use checks.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use anyhow::Result;

use super::{Store, shard};
use crate::chunk::ChunkId;

/// Requests in flight at once: network latency, not CPU, bounds these.
const WORKERS: usize = 16;
/// From this many chunks on, listing the shards costs fewer requests than checking each
/// chunk (256 shards, each one or a few listing pages).
const LIST_FROM: usize = 2048;
/// Below that, a store of at most this many times the chunks asked about is listed whole.
const SMALL_STORE_FACTOR: usize = 4;
/// Index pages of a web server's shards are read instead of checking each chunk when the
/// chunks asked about are at least this many per shard on average.
const PAGE_GAIN: usize = 2;

impl Store {
    /// A chunk of `ids` the store does not have, if any.
    pub fn first_missing_chunk(&self, ids: &[ChunkId]) -> Result<Option<ChunkId>> {
        if ids.is_empty() {
            return Ok(None);
        }
        if ids.len() >= LIST_FROM && self.backend.lists_cheaply() {
            return self.missing_by_listing(ids);
        }
        // A store that holds at most a few times the chunks asked about answers with one
        // short listing (S3: a page per 1000 keys) instead of a request per chunk; a larger
        // one stops the listing after that many keys. Without the right to list (read-only
        // credentials may lack it), the chunks are checked one by one.
        let max = ids.len().saturating_mul(SMALL_STORE_FACTOR).max(1000);
        if let Ok(Some(keys)) = self.backend.list_at_most("chunks/", max) {
            let have: HashSet<String> = keys.into_iter().collect();
            return Ok(ids
                .iter()
                .find(|id| !have.contains(&shard("chunks", id)))
                .copied());
        }
        if !self.backend.lists_cheaply() {
            return self.missing_by_pages(ids);
        }
        self.missing_by_checks(ids)
    }

    /// A web server's directory index page of a shard names many chunks in one request:
    /// where the chunks asked about share shards, the pages confirm what they name and only
    /// the rest is checked one by one. The first shard's page is asked for alone, so a server
    /// without index pages costs one request more than checking every chunk, not one per
    /// worker.
    fn missing_by_pages(&self, ids: &[ChunkId]) -> Result<Option<ChunkId>> {
        let shards = by_shard(ids);
        if shards.len() * PAGE_GAIN > ids.len() {
            return self.missing_by_checks(ids);
        }
        let not_on_page = |keys: Vec<String>, wanted: &[ChunkId]| -> Vec<ChunkId> {
            let have: HashSet<String> = keys.into_iter().collect();
            wanted
                .iter()
                .filter(|id| !have.contains(&shard("chunks", id)))
                .copied()
                .collect()
        };
        let Some((first, others)) = shards.split_first() else {
            return Ok(None);
        };
        let Some(keys) = self.backend.folder_page(&first.0) else {
            // No index pages here: every chunk is checked by itself.
            return self.missing_by_checks(ids);
        };
        let unconfirmed: Mutex<Vec<ChunkId>> = Mutex::new(not_on_page(keys, &first.1));
        let no_pages = std::sync::atomic::AtomicBool::new(false);
        first_found(others, |(folder, wanted)| {
            let page = if no_pages.load(Ordering::Relaxed) {
                None
            } else {
                self.backend.folder_page(folder)
            };
            let rest = match page {
                Some(keys) => not_on_page(keys, wanted),
                None => {
                    // A page refused after the first was served: the rest of the shards are
                    // checked chunk by chunk.
                    no_pages.store(true, Ordering::Relaxed);
                    wanted.clone()
                }
            };
            unconfirmed.lock().expect("lock").extend(rest);
            None
        })?;
        let rest = unconfirmed.into_inner().expect("lock");
        if rest.is_empty() {
            return Ok(None);
        }
        // In the order asked, so the first missing chunk named is the plan's first.
        let rest: HashSet<ChunkId> = rest.into_iter().collect();
        let ordered: Vec<ChunkId> = ids.iter().filter(|id| rest.contains(id)).copied().collect();
        self.missing_by_checks(&ordered)
    }

    fn missing_by_checks(&self, ids: &[ChunkId]) -> Result<Option<ChunkId>> {
        first_found(ids, |id| match self.has_chunk(id) {
            Ok(true) => None,
            Ok(false) => Some(Ok(*id)),
            Err(e) => Some(Err(
                e.context(format!("checking chunk {id} in store {}", self.describe()))
            )),
        })
    }

    fn missing_by_listing(&self, ids: &[ChunkId]) -> Result<Option<ChunkId>> {
        // Only one shard's keys are held at a time: a fleet's store may hold millions.
        first_found(&by_shard(ids), |(folder, wanted)| {
            match self.backend.list(folder) {
                Ok(keys) => {
                    let have: HashSet<String> = keys.into_iter().collect();
                    wanted
                        .iter()
                        .find(|id| !have.contains(&shard("chunks", id)))
                        .map(|id| Ok(*id))
                }
                Err(e) => Some(Err(
                    e.context(format!("listing {folder} in store {}", self.describe()))
                )),
            }
        })
    }
}

/// Runs `each` on `items` with WORKERS threads until one answers (a missing chunk or an
/// error); returns that answer.
fn first_found<T: Sync>(
    items: &[T],
    each: impl Fn(&T) -> Option<Result<ChunkId>> + Sync,
) -> Result<Option<ChunkId>> {
    let found: Mutex<Option<Result<ChunkId>>> = Mutex::new(None);
    crate::parallel::for_each(items, WORKERS, |_, item| {
        if found.lock().expect("lock").is_some() {
            return;
        }
        if let Some(outcome) = each(item) {
            found.lock().expect("lock").get_or_insert(outcome);
        }
    });
    found.into_inner().expect("lock").transpose()
}

/// The chunks asked about, by the shard folder (`chunks/xx/`) that holds each.
fn by_shard(ids: &[ChunkId]) -> Vec<(String, Vec<ChunkId>)> {
    let mut by_shard: BTreeMap<String, Vec<ChunkId>> = BTreeMap::new();
    for id in ids {
        let key = shard("chunks", id);
        let folder = key[..key.rfind('/').expect("sharded key") + 1].to_string();
        by_shard.entry(folder).or_default().push(*id);
    }
    by_shard.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_find_the_one_missing_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::store::Location::Local(dir.path().join("store"));
        let (store, _) = Store::open_or_create(&location, None).unwrap();
        let mut ids: Vec<ChunkId> = (0..LIST_FROM as u32 + 10)
            .map(|i| {
                let data = i.to_le_bytes();
                let id = ChunkId::of(&data);
                store.put_chunk(&id, &data, false).unwrap();
                id
            })
            .collect();
        assert_eq!(store.first_missing_chunk(&ids).unwrap(), None, "by listing");
        assert_eq!(
            store.first_missing_chunk(&ids[..100]).unwrap(),
            None,
            "by checks"
        );
        let absent = ChunkId::of(b"never stored");
        ids.insert(1234, absent);
        assert_eq!(store.first_missing_chunk(&ids).unwrap(), Some(absent));
        assert_eq!(
            store.first_missing_chunk(&ids[1200..1300]).unwrap(),
            Some(absent)
        );
    }
}

//! `restore check`: proves a store whole without a restore. Every manifest must parse (and
//! verify, with --trust); every index and chunk it names must exist with a plausible size (a
//! local store's zstd frames must also end where their objects do); with --read-data every
//! referenced object is read once and hashed. Each missing or damaged object is listed with
//! the snapshots it breaks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::chunk::ChunkId;
use crate::manifest;
use crate::parallel::FirstError;
use crate::progress::Progress;
use crate::signing::Trust;
use crate::store::{Store, shard};

pub struct CheckOptions<'a> {
    pub host: Option<&'a str>,
    pub snapshot: Option<&'a str>,
    pub read_data: bool,
    pub jobs: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub objects: usize,
    /// Bytes read and hashed (--read-data: the uncompressed size of every object).
    pub bytes_read: u64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
    pub whole: bool,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// The store key ("chunks/ab/ab12...", "snapshots/web-3/ID.json").
    pub object: String,
    pub problem: String,
    /// The snapshots it breaks ("web-3/20261203T...").
    pub breaks: Vec<String>,
}

/// One object to check, and who needs it.
struct Needed {
    len: u64,
    index: bool,
    users: BTreeSet<usize>,
}

pub fn check(
    store: &Store,
    opts: &CheckOptions,
    trust: &Trust,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let started = Instant::now();
    let mut report = CheckReport::default();
    let keys: Vec<(String, String)> = match opts.snapshot {
        Some(s) => {
            let (m, _) = manifest::resolve(store, opts.host, s, trust)?;
            vec![(m.host, m.id)]
        }
        None => store.snapshot_keys(opts.host)?,
    };
    let names: Vec<String> = keys.iter().map(|(h, i)| format!("{h}/{i}")).collect();
    report.snapshots = keys.len();
    let mut needed: HashMap<ChunkId, Needed> = HashMap::new();
    fn need(
        needed: &mut HashMap<ChunkId, Needed>,
        id: ChunkId,
        len: u64,
        index: bool,
        user: usize,
    ) {
        if id.is_zero_marker() || id.is_free_marker() {
            return;
        }
        needed
            .entry(id)
            .or_insert(Needed {
                len,
                index,
                users: BTreeSet::new(),
            })
            .users
            .insert(user);
    }
    let mut indexes = Vec::new();
    for (n, (host, id)) in keys.iter().enumerate() {
        match manifest::load(store, host, id, trust) {
            Ok((m, _)) => {
                for d in &m.disks {
                    for t in &d.table_sectors {
                        need(&mut needed, t.chunk, t.length, false, n);
                    }
                    for p in &d.partitions {
                        if let Some(map) = p.used_map {
                            need(&mut needed, map, p.used_map_len, false, n);
                        }
                    }
                    for (index, covers) in d
                        .boot_regions
                        .iter()
                        .map(|r| (r.index, r.length))
                        .chain(d.partitions.iter().map(|p| (p.index, p.info.size)))
                    {
                        need(&mut needed, index, covers, true, n);
                        indexes.push((index, covers, n));
                    }
                }
            }
            Err(e) => report.problems.push(Problem {
                object: manifest::Manifest::key(host, id),
                problem: format!("{e:#}"),
                breaks: vec![names[n].clone()],
            }),
        }
    }
    // The chunks each readable index names.
    let mut read_indexes = BTreeSet::new();
    for (index, covers, n) in indexes {
        if !read_indexes.insert(index) {
            continue;
        }
        match store.get_index(&index, covers) {
            Ok(idx) => {
                let users = needed
                    .get(&index)
                    .map(|x| x.users.clone())
                    .unwrap_or_default();
                for (i, id) in idx.chunks.iter().enumerate() {
                    let (_, len) = idx.chunk_range(i as u64);
                    for &u in &users {
                        need(&mut needed, *id, len, false, u);
                    }
                    if users.is_empty() {
                        need(&mut needed, *id, len, false, n);
                    }
                }
            }
            Err(e) => {
                let users = needed
                    .get(&index)
                    .map(|x| x.users.clone())
                    .unwrap_or_default();
                report.problems.push(Problem {
                    object: shard("indexes", &index),
                    problem: format!("{e:#}"),
                    breaks: users.iter().map(|&u| names[u].clone()).collect(),
                });
            }
        }
    }
    report.objects = needed.len();

    // Sizes from one listing where the store lists cheaply, else one request per object.
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let listed = store.lists_cheaply() && needed.len() > 64;
    if listed {
        for prefix in ["chunks/", "indexes/"] {
            sizes.extend(store.list_sized(prefix)?);
        }
    }
    let items: Vec<(&ChunkId, &Needed)> = needed.iter().collect();
    let total: u64 = if opts.read_data {
        items.iter().map(|(_, n)| n.len).sum()
    } else {
        items.len() as u64
    };
    progress.start("check", total);
    let bytes = AtomicU64::new(0);
    let found: Mutex<Vec<Problem>> = Mutex::new(Vec::new());
    let access = FirstError::default();
    crate::parallel::for_each(&items, opts.jobs.clamp(1, 64), |_, (id, n)| {
        if access.happened() {
            return;
        }
        let key = shard(if n.index { "indexes" } else { "chunks" }, id);
        let size = if listed {
            Ok(sizes.get(&key).copied())
        } else {
            store.size(&key)
        };
        let problem = match size {
            Err(e) => return access.record(e),
            Ok(None) => Some("missing".to_string()),
            Ok(Some(size)) if n.index => {
                if opts.read_data {
                    bytes.fetch_add(n.len, Ordering::Relaxed);
                }
                // Indexes were read above; a damaged one is already listed.
                (size == 0).then(|| "it is empty".to_string())
            }
            Ok(Some(size)) => {
                let p = store.chunk_problem(id, &key, size, n.len, opts.read_data);
                if opts.read_data {
                    bytes.fetch_add(n.len, Ordering::Relaxed);
                }
                p
            }
        };
        progress.add(if opts.read_data { n.len } else { 1 });
        if let Some(problem) = problem {
            found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Problem {
                    object: key,
                    problem,
                    breaks: n.users.iter().map(|&u| names[u].clone()).collect(),
                });
        }
    });
    progress.finish();
    access
        .into_result()
        .with_context(|| format!("checking store {}", store.describe()))?;
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by(|a, b| a.object.cmp(&b.object));
    report.problems.extend(found);
    report.bytes_read = bytes.into_inner();
    report.whole = report.problems.is_empty();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

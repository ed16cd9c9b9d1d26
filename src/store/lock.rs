//! Locks in the store, so that prune never deletes a chunk a capture in progress may be about
//! to reference (by uploading it, or by finding it already there). Captures take shared
//! locks, prune an exclusive one, each as an object under `locks/`: write your own lock, then
//! look at the others'. Whichever writes second sees the first, so the two never overlap:
//! a capture waits for a prune to end; a prune gives way to captures and tries again.
//! A lock is refreshed every minute and expires 5 minutes after its last refresh, so a
//! killed process blocks nobody for longer than that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Store;
use super::backend::BackendError;

const PREFIX: &str = "locks/";
const REFRESH: Duration = Duration::from_secs(60);
const TTL: u64 = 300;
/// Clocks of hosts sharing a store may differ by this much.
const SKEW: u64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Capture,
    Prune,
}

#[derive(Debug, Serialize, Deserialize)]
struct LockFile {
    format: String,
    kind: Kind,
    /// Who holds it, for the messages of the other side.
    holder: String,
    started: u64,
    expires: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A lock held in a store; released (its object deleted) when dropped.
pub struct Held<'a> {
    store: &'a Store,
    key: String,
    file: std::sync::Mutex<LockFile>,
}

impl Held<'_> {
    fn write(&self) -> Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.expires = now() + TTL;
        self.store.put_object(&self.key, &serde_json::to_vec(&*f)?)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.store.delete(&self.key);
    }
}

/// The unexpired locks of `kind` others hold: (key, holder, started).
fn others(store: &Store, kind: Kind, mine: &str) -> Result<Vec<(String, String, u64)>> {
    let mut out = Vec::new();
    for key in store.list(PREFIX)? {
        if key == mine {
            continue;
        }
        let raw = match store.get_object(&key, 64 << 10) {
            Ok(raw) => raw,
            Err(BackendError::NotFound(_)) => continue,
            Err(BackendError::Other(e)) => return Err(e),
        };
        // A lock that does not parse was not written by us: it locks nothing.
        let Ok(f) = serde_json::from_slice::<LockFile>(&raw) else {
            continue;
        };
        if f.kind == kind && now() <= f.expires + SKEW {
            out.push((key, f.holder, f.started));
        }
    }
    Ok(out)
}

fn describe(locks: &[(String, String, u64)]) -> String {
    locks
        .iter()
        .map(|(_, holder, started)| {
            format!("{holder} since {} s ago", now().saturating_sub(*started))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Takes a lock of `kind`, waiting up to `wait` for the other kind to be released, runs
    /// `work` while a thread keeps the lock fresh, and releases it.
    pub fn with_lock<T>(
        &self,
        kind: Kind,
        holder: &str,
        wait: Duration,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let held = self.acquire(kind, holder, wait)?;
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= REFRESH {
                        let _ = held.write();
                        last = Instant::now();
                    }
                }
            });
            let result = work();
            done.store(true, Ordering::SeqCst);
            result
        })
    }

    fn acquire(&self, kind: Kind, holder: &str, wait: Duration) -> Result<Held<'_>> {
        let key = format!(
            "{PREFIX}{}-{}.json",
            match kind {
                Kind::Capture => "capture",
                Kind::Prune => "prune",
            },
            random_suffix()
        );
        let started = Instant::now();
        let other = match kind {
            Kind::Capture => Kind::Prune,
            Kind::Prune => Kind::Capture,
        };
        loop {
            let held = Held {
                store: self,
                key: key.clone(),
                file: std::sync::Mutex::new(LockFile {
                    format: "restore-lock".into(),
                    kind,
                    holder: holder.to_string(),
                    started: now(),
                    expires: now() + TTL,
                }),
            };
            held.write()
                .with_context(|| format!("writing lock {key} in store {}", self.describe()))?;
            let blocking = others(self, other, &key)?;
            if blocking.is_empty() {
                return Ok(held);
            }
            match kind {
                // A capture keeps its lock and waits for the prune to end.
                Kind::Capture => {
                    std::mem::forget(held);
                    if started.elapsed() >= wait {
                        let _ = self.delete(&key);
                        bail!(
                            "store {} is being pruned ({}); capture again after it, or wait longer",
                            self.describe(),
                            describe(&blocking)
                        );
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
                // A prune gives way (its lock is released on drop) and tries again.
                Kind::Prune => {
                    drop(held);
                    if started.elapsed() >= wait {
                        bail!(
                            "captures are running on store {} ({}); nothing was deleted: prune again later, or with a longer --wait",
                            self.describe(),
                            describe(&blocking)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(
                        500 + u64::from(std::process::id() % 500),
                    ));
                }
            }
        }
    }
}

//! The one place where store requests are retried: a wrapper around any remote backend.
//! Only failures the backend marked `Temporary` are retried, with exponential backoff and
//! full jitter; a missing object, a 4xx other than 429, or bytes that fail their hash (checked
//! above this layer, in `Store`) are never retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::backend::{Backend, BackendError};

/// How hard to try before giving up on one request.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts while the store has never answered: an unreachable host or a wrong URL
    /// should give its error in a second, not after a long backoff.
    pub attempts_before_first_answer: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(3),
            attempts_before_first_answer: 2,
        }
    }
}

impl RetryPolicy {
    /// Full jitter (a random delay up to the exponential bound) spreads the retries of many
    /// workers and many hosts so they do not hit a recovering server at the same instant.
    fn delay(&self, retry: u32) -> Duration {
        let bound = self
            .first_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        bound.mul_f64(jitter())
    }
}

/// A number in [0.1, 1), from a per-thread xorshift seeded by std's randomly keyed hasher,
/// so threads and processes do not draw the same delays.
fn jitter() -> f64 {
    use std::cell::Cell;
    use std::hash::BuildHasher;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = std::collections::hash_map::RandomState::new()
                .hash_one(std::thread::current().id())
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        0.1 + 0.9 * ((x >> 11) as f64 / (1u64 << 53) as f64)
    })
}

pub struct Retrying {
    inner: Box<dyn Backend>,
    policy: RetryPolicy,
    answered: AtomicBool,
}

impl Retrying {
    pub fn new(inner: Box<dyn Backend>, policy: RetryPolicy) -> Retrying {
        Retrying {
            inner,
            policy,
            answered: AtomicBool::new(false),
        }
    }

    fn run<T>(
        &self,
        what: &str,
        mut call: impl FnMut() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let result = call();
            match &result {
                Ok(_) | Err(BackendError::NotFound(_)) => {
                    self.answered.store(true, Ordering::Relaxed);
                    return result;
                }
                Err(e) if !e.is_temporary() => return result,
                Err(_) => {}
            }
            let limit = if self.answered.load(Ordering::Relaxed) {
                self.policy.attempts
            } else {
                self.policy.attempts_before_first_answer
            };
            if attempt >= limit {
                let Err(BackendError::Other(e)) = result else {
                    return result;
                };
                return Err(BackendError::Other(e.context(format!(
                    "{what}: gave up after {attempt} attempts in {:.1} s",
                    started.elapsed().as_secs_f64()
                ))));
            }
            std::thread::sleep(self.policy.delay(attempt - 1));
            attempt += 1;
        }
    }
}

fn lift(e: anyhow::Error) -> BackendError {
    BackendError::Other(e)
}

fn lower(e: BackendError) -> anyhow::Error {
    match e {
        BackendError::NotFound(key) => anyhow::anyhow!("{key} is missing from the store"),
        BackendError::Other(e) => e,
    }
}

impl Backend for Retrying {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get(&self, key: &str, max: u64) -> Result<Vec<u8>, BackendError> {
        self.run(&format!("reading {key}"), || self.inner.get(key, max))
    }

    fn get_into(&self, key: &str, max: u64, buf: &mut Vec<u8>) -> Result<(), BackendError> {
        self.run(&format!("reading {key}"), || {
            self.inner.get_into(key, max, buf)
        })
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        // Safe to repeat: every object is either content-addressed or written whole.
        self.run(&format!("writing {key}"), || {
            self.inner.put(key, data).map_err(lift)
        })
        .map_err(lower)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.run(&format!("checking {key}"), || {
            self.inner.exists(key).map_err(lift)
        })
        .map_err(lower)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.run(&format!("listing {prefix}"), || {
            self.inner.list(prefix).map_err(lift)
        })
        .map_err(lower)
    }

    fn folder_page(&self, folder: &str) -> Option<Vec<String>> {
        // Only evidence: a failed page is not retried, its keys are checked one by one.
        self.inner.folder_page(folder)
    }

    fn list_at_most(&self, prefix: &str, max: usize) -> Result<Option<Vec<String>>> {
        self.run(&format!("listing {prefix}"), || {
            self.inner.list_at_most(prefix, max).map_err(lift)
        })
        .map_err(lower)
    }

    fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.run(&format!("listing {prefix}"), || {
            self.inner.list_sized(prefix).map_err(lift)
        })
        .map_err(lower)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.run(&format!("checking {key}"), || {
            self.inner.size(key).map_err(lift)
        })
        .map_err(lower)
    }

    fn delete(&self, key: &str) -> Result<()> {
        // Safe to repeat: deleting what is gone succeeds.
        self.run(&format!("deleting {key}"), || {
            self.inner.delete(key).map_err(lift)
        })
        .map_err(lower)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn writable(&self) -> Result<()> {
        self.inner.writable()
    }

    fn lists_cheaply(&self) -> bool {
        self.inner.lists_cheaply()
    }

    fn reads_ranges(&self) -> bool {
        self.inner.reads_ranges()
    }

    fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        self.inner.read_range(key, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails with the given errors in turn, then succeeds.
    struct Flaky {
        script: Mutex<Vec<Option<bool>>>,
    }

    impl Backend for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn get(&self, key: &str, _: u64) -> Result<Vec<u8>, BackendError> {
            match self.script.lock().unwrap().pop() {
                None => Ok(b"ok".to_vec()),
                Some(None) => Err(BackendError::NotFound(key.into())),
                Some(Some(true)) => Err(BackendError::temporary(anyhow::anyhow!("HTTP 503"))),
                Some(Some(false)) => Err(BackendError::Other(anyhow::anyhow!("HTTP 403"))),
            }
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn exists(&self, _: &str) -> Result<bool> {
            Ok(true)
        }
        fn size(&self, _: &str) -> Result<Option<u64>> {
            Ok(Some(2))
        }
        fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn list(&self, _: &str) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            attempts_before_first_answer: 2,
        }
    }

    fn flaky(script: Vec<Option<bool>>) -> Retrying {
        let script = Mutex::new(script);
        Retrying::new(Box::new(Flaky { script }), fast())
    }

    #[test]
    fn temporary_failures_are_retried_permanent_ones_are_not() {
        // Scripts are popped from the end.
        let r = flaky(vec![Some(true), Some(true), None]);
        assert!(matches!(r.get("a", 10), Err(BackendError::NotFound(_))));
        // Answered once: now up to 4 attempts.
        assert_eq!(r.get("a", 10).unwrap(), b"ok");
        let r = flaky(vec![Some(false)]);
        let e = r.get("a", 10).unwrap_err();
        assert!(format!("{e:#}").contains("403") && !format!("{e:#}").contains("gave up"));
        let r = flaky(vec![Some(true); 10]);
        let e = r.get("chunks/ab/x", 10).unwrap_err();
        assert!(
            format!("{e:#}").contains("gave up after 2 attempts"),
            "{e:#}"
        );
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let p = RetryPolicy::default();
        for retry in 0..20 {
            assert!(p.delay(retry) <= p.max_delay);
        }
        assert!(p.delay(0) <= p.first_delay);
    }
}

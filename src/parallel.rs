//! The one worker pool for "do this to every item, a few at a time": round trips to a store
//! bound these loops, not CPU, so they run on plain scoped threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Calls `each(i, &items[i])` for every item, on at most `workers` threads, handing items out
/// in order. `each` that wants to stop early (an error found) makes the remaining calls
/// return at once.
pub fn for_each<T: Sync>(items: &[T], workers: usize, each: impl Fn(usize, &T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    each(i, item);
                }
            });
        }
    });
}

/// The first error of many workers; the others stop once one is recorded.
#[derive(Default)]
pub struct FirstError {
    happened: AtomicBool,
    first: Mutex<Option<anyhow::Error>>,
}

impl FirstError {
    pub fn record(&self, e: anyhow::Error) {
        self.happened.store(true, Ordering::SeqCst);
        self.first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }

    pub fn happened(&self) -> bool {
        self.happened.load(Ordering::SeqCst)
    }

    pub fn into_result(self) -> anyhow::Result<()> {
        match self.first.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_item_once() {
        let items: Vec<u32> = (0..1000).collect();
        let seen = std::sync::Mutex::new(vec![0u32; items.len()]);
        super::for_each(&items, 7, |i, &x| {
            assert_eq!(i as u32, x);
            seen.lock().unwrap()[i] += 1;
        });
        assert!(seen.into_inner().unwrap().iter().all(|&n| n == 1));
        super::for_each(&[] as &[u32], 4, |_, _| panic!("no items"));
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        let items: Vec<u32> = (0..1000).collect();
        // One worker: items in order, and none after the failing one runs.
        let failure = super::FirstError::default();
        let done = std::sync::atomic::AtomicUsize::new(0);
        super::for_each(&items, 1, |_, &x| {
            if failure.happened() {
                return;
            }
            if x == 10 || x == 20 {
                failure.record(anyhow::anyhow!("item {x} failed"));
            } else {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        assert_eq!(done.into_inner(), 10);
        assert_eq!(
            failure.into_result().unwrap_err().to_string(),
            "item 10 failed"
        );
        // Many workers failing at once: one error is kept, from one of them.
        let failure = super::FirstError::default();
        super::for_each(&items, 8, |_, &x| failure.record(anyhow::anyhow!("{x}")));
        assert!(failure.happened());
        let kept: u32 = failure
            .into_result()
            .unwrap_err()
            .to_string()
            .parse()
            .unwrap();
        assert!(kept < 1000);
        assert!(super::FirstError::default().into_result().is_ok());
    }
}

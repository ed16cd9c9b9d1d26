//! The one worker pool for "do this to every item, a few at a time": round trips to a store
//! bound these loops, not CPU, so they run on plain scoped threads.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}

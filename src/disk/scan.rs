//! Reads a byte range of a disk in large sequential reads and hashes it chunk by chunk on
//! every core, with a fixed number of buffers in flight: memory does not grow with disk size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::Disk;
use super::extfs::{ChunkUse, UsedMap};
use crate::chunk::ChunkId;
use crate::progress::Progress;

/// Bytes read per request: large enough to stream, small enough to keep memory low.
const READ_SIZE: u64 = 8 << 20;

/// `--limit-read`: bytes per second this process reads at most (0: no limit). A property of
/// the process, like its I/O priority, set once by capture.
static READ_LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn set_read_limit(bytes_per_second: Option<u64>) {
    READ_LIMIT.store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
}

/// Sleeps as long as it takes for `done` bytes since `since` to stay under the read limit.
fn pace(since: std::time::Instant, done: u64) {
    let limit = READ_LIMIT.load(Ordering::Relaxed);
    if limit == 0 {
        return;
    }
    let due = std::time::Duration::from_secs_f64(done as f64 / limit as f64);
    if let Some(wait) = due.checked_sub(since.elapsed()) {
        std::thread::sleep(wait);
    }
}

/// Buffers to hash, shared by the workers: (first chunk number, bytes).
type SharedJobs = Arc<Mutex<Receiver<(u64, Vec<u8>)>>>;

pub fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

/// Hashes `length` bytes at `offset` in chunks of `chunk_size` and calls `visit(i, bytes, id)`
/// for each chunk (from several threads, in any order). Returns the ids in order. With a
/// used-space `mask`, free bytes read as zero and a chunk that is all free space gets the
/// FREE marker (it is neither read nor visited).
pub fn scan<F>(
    disk: &Disk,
    offset: u64,
    length: u64,
    chunk_size: u32,
    mask: Option<&UsedMap>,
    progress: &dyn Progress,
    visit: F,
) -> Result<Vec<ChunkId>>
where
    F: Fn(u64, &[u8], ChunkId) -> Result<()> + Sync,
{
    let cs = u64::from(chunk_size);
    let count = length.div_ceil(cs);
    let per_read = (READ_SIZE / cs).max(1);
    let workers = worker_count();
    let ids = Mutex::new(vec![ChunkId::ZERO; count as usize]);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(workers * 2);
    for _ in 0..workers * 2 {
        free_tx
            .send(Vec::with_capacity((per_read * cs) as usize))
            .expect("buffer pool");
    }
    let (job_tx, job_rx) = sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let job_rx: SharedJobs = Arc::new(Mutex::new(job_rx));
    let fail = |e: anyhow::Error| {
        failed.store(true, Ordering::SeqCst);
        first_error.lock().expect("error lock").get_or_insert(e);
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let free_tx = free_tx.clone();
            let (ids, visit, fail, failed) = (&ids, &visit, &fail, &failed);
            s.spawn(move || {
                loop {
                    let job = job_rx.lock().expect("job lock").recv();
                    let Ok((first, buf)) = job else { break };
                    let mut scratch = Vec::new();
                    if !failed.load(Ordering::SeqCst) {
                        for (k, raw) in buf.chunks(cs as usize).enumerate() {
                            let i = first + k as u64;
                            let bytes = match mask.map(|m| m.chunk_use(i * cs, raw.len() as u64)) {
                                Some(ChunkUse::Free) => {
                                    ids.lock().expect("ids lock")[i as usize] = ChunkId::FREE;
                                    progress.add(raw.len() as u64);
                                    continue;
                                }
                                Some(ChunkUse::Partial(free)) => {
                                    scratch.clear();
                                    scratch.extend_from_slice(raw);
                                    for (s, l) in free {
                                        scratch[s as usize..(s + l) as usize].fill(0);
                                    }
                                    &scratch[..]
                                }
                                _ => raw,
                            };
                            let id = ChunkId::for_content(bytes);
                            if let Err(e) = visit(i, bytes, id) {
                                fail(e);
                                break;
                            }
                            ids.lock().expect("ids lock")[i as usize] = id;
                            progress.add(bytes.len() as u64);
                        }
                    }
                    let _ = free_tx.send(buf);
                }
            });
        }
        drop(free_tx);
        let chunk_free = |k: u64| {
            let start = k * cs;
            mask.is_some_and(|m| {
                matches!(m.chunk_use(start, cs.min(length - start)), ChunkUse::Free)
            })
        };
        // Holes of an image file read as zeros: their chunks are zero chunks without a read.
        let data = disk.data_ranges(offset, length);
        let mut next_range = 0usize;
        let zeros = vec![0u8; cs as usize];
        let mut chunk_hole = |k: u64| {
            let Some(ranges) = &data else {
                return false;
            };
            let (start, end) = (k * cs, ((k + 1) * cs).min(length));
            while next_range < ranges.len() && ranges[next_range].0 + ranges[next_range].1 <= start
            {
                next_range += 1;
            }
            ranges.get(next_range).is_none_or(|&(s, _)| s >= end)
        };
        let mut i = 0;
        let started = std::time::Instant::now();
        let mut read = 0u64;
        while i < count && !failed.load(Ordering::SeqCst) {
            // Free space is not even read.
            if chunk_free(i) {
                ids.lock().expect("ids lock")[i as usize] = ChunkId::FREE;
                progress.add(cs.min(length - i * cs));
                i += 1;
                continue;
            }
            if chunk_hole(i) {
                let len = cs.min(length - i * cs) as usize;
                if let Err(e) = visit(i, &zeros[..len], ChunkId::ZERO) {
                    fail(e);
                    break;
                }
                ids.lock().expect("ids lock")[i as usize] = ChunkId::ZERO;
                progress.add(len as u64);
                i += 1;
                continue;
            }
            let mut n = 1;
            while n < per_read && i + n < count && !chunk_free(i + n) && !chunk_hole(i + n) {
                n += 1;
            }
            let Ok(mut buf) = free_rx.recv() else { break };
            let start = i * cs;
            let len = (n * cs).min(length - start);
            buf.resize(len as usize, 0);
            pace(started, read);
            if let Err(e) = disk.read_at(&mut buf, offset + start) {
                fail(e);
                break;
            }
            read += len;
            if job_tx.send((i, buf)).is_err() {
                break;
            }
            i += n;
        }
        drop(job_tx);
    });
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    Ok(ids.into_inner().expect("ids lock"))
}

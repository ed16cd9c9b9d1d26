//! Named crash points for tests: `RESTORE_FAILPOINT=name:N` kills the process the N-th time
//! `name` is reached, as a power cut or SIGKILL would, so tests can prove a rerun repairs.

use std::sync::atomic::{AtomicU64, Ordering};

static HITS: AtomicU64 = AtomicU64::new(0);

pub fn hit(name: &str) {
    let Ok(spec) = std::env::var("RESTORE_FAILPOINT") else {
        return;
    };
    let Some((want, n)) = spec.split_once(':') else {
        return;
    };
    if want != name {
        return;
    }
    let n: u64 = n.parse().unwrap_or(1);
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= n {
        eprintln!("failpoint {name}:{n} reached: killing the process");
        std::process::abort();
    }
}

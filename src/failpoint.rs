//! Named crash points for tests: `RESTORE_FAILPOINT=name:N` kills the process the N-th time
//! `name` is reached, as a power cut or SIGKILL would, so tests can prove a rerun repairs.
//! `name:N:sigint` instead sends the process SIGINT there, as an operator's Ctrl-C would;
//! `name:N:pause=SECONDS` stops there that long (a capture stuck while a filesystem is frozen).
//! Only builds with the `test-hooks` feature have them; elsewhere `hit` does nothing.

#[cfg(not(feature = "test-hooks"))]
pub fn hit(_name: &str) {}

#[cfg(feature = "test-hooks")]
static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "test-hooks")]
pub fn hit(name: &str) {
    use std::sync::atomic::Ordering;
    let Ok(spec) = std::env::var("RESTORE_FAILPOINT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(want), Some(n)) = (parts.next(), parts.next()) else {
        return;
    };
    if want != name {
        return;
    }
    let n: u64 = n.parse().unwrap_or(1);
    let hits = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    match parts.next() {
        Some("sigint") if hits == n => {
            eprintln!("failpoint {name}:{n} reached: sending SIGINT");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
        }
        Some(p) if hits == n && p.starts_with("pause=") => {
            let secs: u64 = p["pause=".len()..].parse().unwrap_or(1);
            eprintln!("failpoint {name}:{n} reached: pausing for {secs} s");
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        Some(_) => {}
        None if hits >= n => {
            eprintln!("failpoint {name}:{n} reached: killing the process");
            std::process::abort();
        }
        None => {}
    }
}

//! `restore`: bare-metal restore that repairs only what is broken. `main` only dispatches;
//! errors are printed once, as a chain, and mapped to an exit code.

// The property tests build a sample plan with serde_json's json! macro, which nests deeply.
#![recursion_limit = "256"]

/// Standard error that a closed pipe cannot crash (`restore plan 2>&1 | head -1`): a line
/// that cannot be written is dropped. Shadows std's macros in every module below.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod apply;
mod boot;
mod capture;
mod check;
mod check_boot;
mod chunk;
mod cli;
mod clock;
mod disk;
mod disks;
mod failpoint;
mod forget;
#[cfg(test)]
mod fuzz;
mod hex;
mod manifest;
mod notify;
mod parallel;
mod plan;
mod probe;
mod progress;
mod prune;
mod report;
mod signing;
mod store;
mod units;

use clap::Parser;

fn main() {
    // Exit code 2 belongs to `plan --detailed-exitcode`; usage errors exit 1 like any other error.
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let code = match cli::run(cli) {
        Ok(code) => match cli::stdout_error() {
            Some(e) => {
                eprintln!("error: {e}");
                1
            }
            None => code,
        },
        // Ctrl-C or SIGTERM during apply: the current writes were finished; say what is done.
        Err(e) if e.downcast_ref::<apply::Interrupted>().is_some() => {
            eprintln!("error: {e:#}");
            130
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

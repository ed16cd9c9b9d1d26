//! `restore`: bare-metal restore that repairs only what is broken. `main` only dispatches;
//! errors are printed once, as a chain, and mapped to an exit code.

mod apply;
mod boot;
mod capture;
mod check_boot;
mod chunk;
mod cli;
mod clock;
mod disk;
mod failpoint;
mod hex;
mod manifest;
mod plan;
mod probe;
mod progress;
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
        Ok(code) => code,
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

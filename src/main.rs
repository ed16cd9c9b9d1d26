//! `restore`: bare-metal restore that repairs only what is broken. `main` only dispatches;
//! errors are printed once, as a chain, and mapped to an exit code.

mod apply;
mod capture;
mod chunk;
mod cli;
mod clock;
mod disk;
mod failpoint;
mod manifest;
mod plan;
mod progress;
mod store;
mod units;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

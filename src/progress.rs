//! Progress of long work, handed to the core as a trait: a bar on a terminal, plain lines on a
//! serial console or in a log, nothing with --no-progress.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub trait Progress: Send + Sync {
    fn start(&self, what: &str, total_bytes: u64);
    fn add(&self, bytes: u64);
    fn finish(&self);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Off,
}

pub fn for_mode(mode: ProgressMode) -> Box<dyn Progress> {
    match mode {
        ProgressMode::Off => Box::new(Silent),
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Bar::default()),
        ProgressMode::Auto => Box::new(Lines::default()),
    }
}

pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn add(&self, _: u64) {}
    fn finish(&self) {}
}

#[derive(Default)]
pub struct Bar {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        *self.bar.lock().expect("progress lock") = Some(bar);
    }
    fn add(&self, bytes: u64) {
        if let Some(b) = &*self.bar.lock().expect("progress lock") {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("progress lock").take() {
            b.finish_and_clear();
        }
    }
}

/// One line every few seconds: readable on a 115200-baud serial console and in CI logs.
#[derive(Default)]
pub struct Lines {
    state: Mutex<LineState>,
}

#[derive(Default)]
struct LineState {
    what: String,
    total: u64,
    done: u64,
    started: Option<Instant>,
    last: Option<Instant>,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress for Lines {
    fn start(&self, what: &str, total: u64) {
        let mut s = self.state.lock().expect("progress lock");
        let now = Instant::now();
        *s = LineState {
            what: what.to_string(),
            total,
            done: 0,
            started: Some(now),
            last: Some(now),
        };
    }
    fn add(&self, bytes: u64) {
        let mut s = self.state.lock().expect("progress lock");
        s.done += bytes;
        let now = Instant::now();
        if s.last.is_some_and(|l| now - l >= LINE_EVERY) {
            s.last = Some(now);
            eprintln!("{}", line(&s, now));
        }
    }
    fn finish(&self) {
        let s = self.state.lock().expect("progress lock");
        if s.started.is_some_and(|t| t.elapsed() >= LINE_EVERY) {
            eprintln!("{}", line(&s, Instant::now()));
        }
    }
}

fn line(s: &LineState, now: Instant) -> String {
    let secs = s
        .started
        .map(|t| (now - t).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    let pct = if s.total > 0 {
        s.done as f64 * 100.0 / s.total as f64
    } else {
        100.0
    };
    format!(
        "{}: {} of {} ({pct:.0}%), {}/s",
        s.what,
        crate::units::bytes(s.done),
        crate::units::bytes(s.total),
        crate::units::bytes((s.done as f64 / secs) as u64)
    )
}

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

/// `--progress`: a bar on a terminal, plain lines without one (a serial console, a log), JSON
/// lines for machines, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Bar,
    Lines,
    Json,
    Off,
}

pub fn for_mode(mode: ProgressMode) -> Box<dyn Progress> {
    match mode {
        // JSON progress is written by the events (`Tracker`), not by a display.
        ProgressMode::Off | ProgressMode::Json => Box::new(Silent),
        ProgressMode::Bar => Box::new(Bar::default()),
        ProgressMode::Auto if std::io::stderr().is_terminal() => Box::new(Bar::default()),
        ProgressMode::Auto | ProgressMode::Lines => Box::new(Lines::default()),
    }
}

/// Progress that also goes out as events: `progress` events with percent, rate and ETA to
/// the webhooks every `webhook_every`, and to stderr as JSON lines every 5 s with
/// `--progress json`; the first one goes out at the start, with the plan's estimate as ETA.
pub struct Tracker {
    display: Box<dyn Progress>,
    pub events: std::sync::Arc<crate::notify::Events>,
    webhook_every: Duration,
    state: Mutex<TrackState>,
}

/// A point in the work: the phase (as progress events name it) and its bytes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Position {
    /// "at 40% of restore", or nothing before any work was counted.
    pub fn describe(&self) -> Option<String> {
        if self.phase.is_empty() || self.bytes_total == 0 {
            return None;
        }
        let percent = (self.bytes_done as f64 * 100.0 / self.bytes_total as f64).floor();
        Some(format!("at {percent:.0}% of {}", self.phase))
    }
}

#[derive(Default)]
struct TrackState {
    what: String,
    total: u64,
    done: u64,
    started: Option<Instant>,
    last_webhook: Option<Instant>,
    last_json: Option<Instant>,
    /// The plan's estimate of the whole work, seconds.
    estimate: Option<f64>,
}

impl Tracker {
    pub fn new(
        mode: ProgressMode,
        events: std::sync::Arc<crate::notify::Events>,
        webhook_every: Duration,
    ) -> Tracker {
        Tracker {
            display: for_mode(mode),
            events,
            webhook_every,
            state: Mutex::new(TrackState::default()),
        }
    }

    /// Where the work is now: its phase and bytes done of the total (what a `failed` event and
    /// a failed apply's report say was reached).
    pub fn position(&self) -> Position {
        let s = self.state.lock().expect("progress lock");
        Position {
            phase: s.what.clone(),
            bytes_done: s.done,
            bytes_total: s.total,
        }
    }

    /// The estimate the first progress event gives as its ETA.
    pub fn set_estimate(&self, seconds: f64) {
        self.state.lock().expect("progress lock").estimate = Some(seconds);
    }

    fn emit(&self, s: &TrackState, now: Instant, to_webhooks: bool) {
        let elapsed = s.started.map(|t| (now - t).as_secs_f64()).unwrap_or(0.0);
        let rate = if elapsed >= 0.5 && s.done > 0 {
            Some(s.done as f64 / elapsed)
        } else {
            None
        };
        let eta = match rate {
            Some(r) => Some(s.total.saturating_sub(s.done) as f64 / r),
            None => s.estimate.map(|e| (e - elapsed).max(0.0)),
        };
        let percent = if s.total > 0 {
            (s.done as f64 * 1000.0 / s.total as f64).round() / 10.0
        } else {
            0.0
        };
        let mut sentence = format!("{} {percent:.0}% done", s.what);
        if let Some(r) = rate {
            sentence.push_str(&format!(", {}/s", crate::units::bytes(r as u64)));
        }
        if let Some(e) = eta {
            sentence.push_str(&format!(", {} left", crate::units::about(e)));
        }
        sentence.push('.');
        self.events.emit(
            "progress",
            &sentence,
            serde_json::json!({
                "phase": s.what,
                "percent": percent,
                "bytes_done": s.done,
                "bytes_total": s.total,
                "rate_bytes_per_second": rate.map(|r| r.round()),
                "eta_seconds": eta.map(|e| (e * 10.0).round() / 10.0),
            }),
            to_webhooks,
        );
    }
}

const JSON_EVERY: Duration = Duration::from_secs(5);

impl Progress for Tracker {
    fn start(&self, what: &str, total: u64) {
        self.display.start(what, total);
        let mut s = self.state.lock().expect("progress lock");
        let now = Instant::now();
        s.what = what.to_string();
        s.total = total;
        s.done = 0;
        s.started = Some(now);
        s.last_webhook = Some(now);
        s.last_json = Some(now);
        if self.events.active() {
            self.emit(&s, now, self.events.webhooks_take_progress());
        }
    }
    fn add(&self, bytes: u64) {
        self.display.add(bytes);
        if !self.events.active() {
            return;
        }
        let mut s = self.state.lock().expect("progress lock");
        s.done += bytes;
        let now = Instant::now();
        let hook = self.events.webhooks_take_progress()
            && s.last_webhook
                .is_some_and(|l| now - l >= self.webhook_every);
        let json = s.last_json.is_some_and(|l| now - l >= JSON_EVERY);
        if hook || json {
            if hook {
                s.last_webhook = Some(now);
            }
            s.last_json = Some(now);
            self.emit(&s, now, hook);
        }
    }
    fn finish(&self) {
        self.display.finish();
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

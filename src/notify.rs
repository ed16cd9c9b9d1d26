//! Telling the people who wait: events (`plan`, `progress`, `done`, `failed`) of a capture, plan
//! or apply, posted as JSON to webhooks (`--notify URL`, RESTORE_NOTIFY) and, with
//! `--progress json`, written as JSON lines on stderr. Each body has a `text` field with one
//! readable sentence, which Slack- and Mattermost-style incoming webhooks post as it is, and the
//! structured fields beside it.
//!
//! Sending happens on a thread of its own with a short timeout and a few retries: a webhook that
//! is down or slow never slows or fails the work. Progress events that pile up behind a slow
//! webhook are merged (only the newest is kept). `finish` waits a bounded time for the last
//! events before the process exits.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// How long one POST may take, all included.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event and URL.
const ATTEMPTS: u32 = 3;
/// The longest `finish` waits for the queue to drain.
pub const FLUSH_WAIT: Duration = Duration::from_millis(1000);
/// Events waiting beyond this are dropped, oldest progress first.
const QUEUE_MAX: usize = 64;

/// Who is doing what: fields every event carries.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub command: String,
    pub host: Option<String>,
    pub snapshot: Option<String>,
    pub message: Option<String>,
}

struct Queue {
    events: VecDeque<Value>,
    /// The sender is posting an event now.
    busy: bool,
}

/// Where events go. Cheap to share; `emit` never blocks on the network.
pub struct Events {
    ctx: Mutex<Subject>,
    json_lines: bool,
    queue: Option<Arc<(Mutex<Queue>, Condvar)>>,
    seq: std::sync::atomic::AtomicU64,
    started: Instant,
    /// The `plan` event went out: progress from now on is the restore's, and goes to the
    /// webhooks too (the diagnosis before it only to the JSON lines).
    planned: std::sync::atomic::AtomicBool,
}

impl Events {
    /// Events to `urls` (may be empty) and, with `json_lines`, to stderr.
    pub fn new(
        command: &str,
        urls: &[String],
        message: Option<String>,
        json_lines: bool,
    ) -> Result<Arc<Events>> {
        let mut parsed = Vec::new();
        for u in urls
            .iter()
            .flat_map(|u| u.split(','))
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let url = reqwest::Url::parse(u)
                .with_context(|| format!("--notify \"{}\" is not a URL", redact(u)))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!(
                    "--notify \"{}\": only http:// and https:// webhooks are supported",
                    redact(u)
                );
            }
            parsed.push(url);
        }
        let queue = if parsed.is_empty() {
            None
        } else {
            let q = Arc::new((
                Mutex::new(Queue {
                    events: VecDeque::new(),
                    busy: false,
                }),
                Condvar::new(),
            ));
            let worker = q.clone();
            std::thread::Builder::new()
                .name("restore-notify".into())
                .spawn(move || sender(worker, parsed))
                .context("starting the notification thread")?;
            Some(q)
        };
        Ok(Arc::new(Events {
            ctx: Mutex::new(Subject {
                command: command.to_string(),
                message: message.filter(|m| !m.trim().is_empty()),
                ..Default::default()
            }),
            json_lines,
            queue,
            seq: std::sync::atomic::AtomicU64::new(0),
            started: Instant::now(),
            planned: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Whether anyone listens.
    pub fn active(&self) -> bool {
        self.json_lines || self.queue.is_some()
    }

    /// Whether webhooks take progress now (at a slower pace than stderr): once the plan is
    /// out, or for a capture, which has no plan.
    pub fn webhooks_take_progress(&self) -> bool {
        self.queue.is_some()
            && (self.planned.load(std::sync::atomic::Ordering::Relaxed)
                || self.ctx.lock().unwrap_or_else(|p| p.into_inner()).command == "capture")
    }

    pub fn set_subject(&self, host: &str, snapshot: Option<&str>) {
        let mut c = self.ctx.lock().unwrap_or_else(|p| p.into_inner());
        c.host = Some(host.to_string());
        if let Some(s) = snapshot {
            c.snapshot = Some(s.to_string());
        }
    }

    /// Sends `event` with one readable `sentence` and the structured `fields`.
    /// `to_webhooks` false: only the JSON lines on stderr get it (frequent progress).
    pub fn emit(&self, event: &str, sentence: &str, fields: Value, to_webhooks: bool) {
        if !self.active() {
            return;
        }
        if event == "plan" {
            self.planned
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let c = self.ctx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let who = c.host.as_deref().unwrap_or("restore");
        let text = match &c.message {
            Some(m) => format!("{m} — {who}: {sentence}"),
            None => format!("{who}: {sentence}"),
        };
        let mut body = json!({
            "text": text,
            "event": event,
            "command": c.command,
            "host": c.host,
            "snapshot": c.snapshot,
            "message": c.message,
            "sequence": self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            "time": crate::clock::now().rfc3339,
            "elapsed_seconds": round2(self.started.elapsed().as_secs_f64()),
        });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
            b.extend(f);
        }
        if self.json_lines {
            eprintln!("{body}");
        }
        if !to_webhooks {
            return;
        }
        if let Some(q) = &self.queue {
            let (lock, cv) = &**q;
            let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
            // A newer progress event replaces one still waiting.
            if event == "progress"
                && let Some(last) = q.events.back_mut()
                && last["event"] == "progress"
            {
                *last = body;
            } else {
                q.events.push_back(body);
            }
            while q.events.len() > QUEUE_MAX {
                let drop_at = q
                    .events
                    .iter()
                    .position(|e| e["event"] == "progress")
                    .unwrap_or(0);
                q.events.remove(drop_at);
            }
            cv.notify_all();
        }
    }

    /// Waits up to FLUSH_WAIT for the events still queued to be sent.
    pub fn finish(&self) {
        let Some(q) = &self.queue else {
            return;
        };
        let (lock, cv) = &**q;
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !g.events.is_empty() || g.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!(
                    "note: {} notification(s) not delivered: the webhook did not answer in time",
                    g.events.len() + usize::from(g.busy)
                );
                return;
            }
            g = cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A webhook URL as it may be printed: scheme and host only (the path of a Slack hook is its
/// secret).
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(not a URL)".into(),
    }
}

fn sender(q: Arc<(Mutex<Queue>, Condvar)>, urls: Vec<reqwest::Url>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("note: notifications are off: {e}");
            return;
        }
    };
    // The rescue system has no CA certificates of its own: then the bundled roots, as for
    // https:// stores.
    let client =
        crate::store::remote::http_client(&[], |b| b.connect_timeout(Duration::from_secs(3)));
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("note: notifications are off: {e:#}");
            return;
        }
    };
    let mut warned = vec![false; urls.len()];
    let (lock, cv) = &*q;
    loop {
        let event = {
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            g.busy = false;
            cv.notify_all();
            while g.events.is_empty() {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            g.busy = true;
            g.events.pop_front().expect("not empty")
        };
        let body = event.to_string();
        for (i, url) in urls.iter().enumerate() {
            let mut last_err = String::new();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(300 << attempt));
                }
                let send = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send();
                match rt.block_on(async { tokio::time::timeout(POST_TIMEOUT, send).await }) {
                    Ok(Ok(r)) if r.status().is_success() => {
                        last_err.clear();
                        break;
                    }
                    Ok(Ok(r)) => last_err = format!("answered {}", r.status()),
                    Ok(Err(e)) => last_err = without_url(&e),
                    Err(_) => last_err = format!("no answer in {} s", POST_TIMEOUT.as_secs()),
                }
                // Said once per webhook, at its first failure: the work does not wait for it.
                if !warned[i] {
                    warned[i] = true;
                    eprintln!(
                        "note: webhook {} did not take the {} event ({last_err}); retrying in the background, the work goes on",
                        redact(url.as_str()),
                        event["event"].as_str().unwrap_or("?")
                    );
                }
            }
        }
    }
}

/// A reqwest error without the URL it carries (which may hold a secret).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact(u.as_str()));
    }
    if e.is_connect() {
        "cannot connect".into()
    } else {
        s
    }
}

/// A duration for people: "under 1 s", "45 s", "3 min", "1.5 h".
pub fn human_duration(secs: f64) -> String {
    crate::units::duration(secs)
}

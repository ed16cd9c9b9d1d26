//! The restore report: after an apply, ok or failed, what was found, what was written, how
//! long each phase took and whether the boot chain is whole, as one JSON file for the
//! write-up of the incident. Saved next to the plan file (or in the working directory) and,
//! when the store is writable, under `reports/<host>/` in the store. Also the events that
//! tell the people who wait what the plan found and how the restore ended.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::apply::ApplyReport;
use crate::notify::{Events, human_duration};
use crate::plan::Plan;
use crate::store::Store;
use crate::units;

pub const FORMAT: &str = "restore-report";
/// Reports are small; anything larger is not one of ours.
const MAX_REPORT: u64 = 16 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub version: u32,
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub host: String,
    pub snapshot: String,
    pub store: String,
    #[serde(default)]
    pub signed_by: Option<String>,
    /// When apply started and ended (RFC 3339), and the seconds from the first write to the
    /// end (time at the prompt not counted).
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    pub targets: Vec<Target>,
    /// Every component the diagnosis found to need work, per target.
    pub diagnosis: Vec<Diagnosis>,
    pub bytes_to_write: u64,
    pub estimated_seconds: f64,
    /// What apply wrote, its phases and the boot-chain check (absent when it failed before).
    #[serde(default)]
    pub written: Option<serde_json::Value>,
    /// How far a failed apply got: its phase and the bytes done of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<crate::progress::Position>,
    pub restore_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_file: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Target {
    pub path: String,
    pub source: String,
    pub size: u64,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Diagnosis {
    pub target: String,
    pub component: String,
    pub found: String,
    pub action: String,
    pub reason: String,
    pub bytes_to_write: u64,
}

/// The components of `plan` that need work.
fn damaged(plan: &Plan) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for d in &plan.disks {
        for a in d.actions.iter().filter(|a| a.writes()) {
            out.push(Diagnosis {
                target: d.target.display().to_string(),
                component: a.name.clone(),
                found: a.found.clone(),
                action: serde_json::to_value(a.action)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                reason: a.reason.clone(),
                bytes_to_write: a.bytes_to_write,
            });
        }
    }
    out
}

/// The `plan` event: what is damaged, what will be written, how long it should take.
pub fn announce_plan(events: &Events, plan: &Plan) {
    if !events.active() {
        return;
    }
    events.set_subject(&plan.host, Some(&plan.snapshot));
    let damaged = damaged(plan);
    let targets: Vec<String> = plan
        .disks
        .iter()
        .map(|d| d.target.display().to_string())
        .collect();
    let sentence = if damaged.is_empty() {
        format!(
            "{} already match snapshot {}; nothing to write.",
            targets.join(", "),
            plan.snapshot
        )
    } else {
        format!(
            "restore of {} from snapshot {}: {} damaged ({}), {} to write, {}.",
            targets.join(", "),
            plan.snapshot,
            damaged.len(),
            damaged
                .iter()
                .take(4)
                .map(|d| d.component.as_str())
                .collect::<Vec<_>>()
                .join(", ")
                + if damaged.len() > 4 { ", ..." } else { "" },
            units::bytes(plan.totals.bytes_to_write),
            units::about(plan.estimated_seconds)
        )
    };
    events.emit(
        "plan",
        &sentence,
        json!({
            "targets": targets,
            "damaged": damaged,
            "bytes_to_write": plan.totals.bytes_to_write,
            "bytes_to_fetch": plan.totals.bytes_to_fetch,
            "estimated_seconds": (plan.estimated_seconds * 10.0).round() / 10.0,
        }),
        true,
    );
}

/// The `done` event of an apply.
pub fn announce_done(events: &Events, plan: &Plan, r: &ApplyReport) {
    let whole = r.boot_check.iter().all(|c| c.whole);
    let sentence = if plan.has_changes() {
        format!(
            "restore finished in {}: wrote {} to {}{}.",
            human_duration(r.seconds),
            units::bytes(r.bytes_written),
            plan.disks
                .iter()
                .map(|d| d.target.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if r.boot_check.is_empty() {
                String::new()
            } else if whole {
                "; boot chain whole".into()
            } else {
                "; boot chain BROKEN".into()
            }
        )
    } else {
        "nothing needed writing; the disks match the snapshot.".into()
    };
    events.emit(
        "done",
        &sentence,
        json!({
            "duration_seconds": (r.seconds * 100.0).round() / 100.0,
            "bytes_written": r.bytes_written,
            "chunks_written": r.chunks_written,
            "table_sectors_written": r.table_sectors_written,
            "verified": r.verified,
            "boot_chain_whole": if r.boot_check.is_empty() { None } else { Some(whole) },
            "boot_entries": r.boot_entries,
        }),
        true,
    );
}

/// The `failed` event: the reason, in one line.
pub fn announce_failed(
    tracker: &crate::progress::Tracker,
    command: &str,
    error: &anyhow::Error,
    seconds: f64,
) {
    let at = tracker.position();
    let reason = format!("{error:#}");
    let reached = at.describe().map(|a| format!(" {a}")).unwrap_or_default();
    tracker.events.emit(
        "failed",
        &format!(
            "{command} FAILED after {}{reached}: {reason}",
            human_duration(seconds)
        ),
        json!({
            "reason": reason,
            "duration_seconds": (seconds * 100.0).round() / 100.0,
            "phase": at.phase,
            "bytes_done": at.bytes_done,
            "bytes_total": at.bytes_total,
        }),
        true,
    );
}

pub struct ApplyContext<'a> {
    pub plan: &'a Plan,
    pub plan_file: Option<&'a Path>,
    pub started: String,
    pub targets: Vec<Target>,
}

/// Builds the report of one apply and saves it; returns where it went. Failing to save it
/// never changes the result of the apply (it is said on stderr).
pub fn save(
    ctx: &ApplyContext,
    result: &Result<ApplyReport>,
    at: &crate::progress::Position,
    store: Option<&Store>,
) -> Vec<String> {
    let plan = ctx.plan;
    let report = Report {
        format: FORMAT.into(),
        version: 1,
        result: if result.is_ok() { "ok" } else { "failed" }.into(),
        error: result.as_ref().err().map(|e| format!("{e:#}")),
        host: plan.host.clone(),
        snapshot: plan.snapshot.clone(),
        store: plan.store.to_string(),
        signed_by: plan.signed_by.clone(),
        started: ctx.started.clone(),
        finished: crate::clock::now().rfc3339,
        seconds: result.as_ref().map(|r| r.seconds).unwrap_or(0.0),
        targets: ctx
            .targets
            .iter()
            .map(|t| Target {
                path: t.path.clone(),
                source: t.source.clone(),
                size: t.size,
                model: t.model.clone(),
                serial: t.serial.clone(),
            })
            .collect(),
        diagnosis: damaged(plan),
        bytes_to_write: plan.totals.bytes_to_write,
        estimated_seconds: plan.estimated_seconds,
        written: result
            .as_ref()
            .ok()
            .and_then(|r| serde_json::to_value(r).ok()),
        failed_at: result.is_err().then(|| at.clone()),
        restore_version: crate::cli::version_line(),
        plan_file: ctx.plan_file.map(|p| p.display().to_string()),
    };
    let Ok(bytes) = serde_json::to_vec_pretty(&report) else {
        return Vec::new();
    };
    let stamp = crate::clock::now()
        .rfc3339
        .replace([':', '-'], "")
        .replace('.', "");
    let name = format!("restore-report-{}-{stamp}.json", plan.host);
    let dir = ctx
        .plan_file
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut saved = Vec::new();
    let file = dir.join(&name);
    match write_new(&file, &bytes) {
        Ok(()) => saved.push(format!("\"{}\"", file.display())),
        Err(e) => eprintln!(
            "note: the restore report could not be saved to \"{}\": {e:#}",
            file.display()
        ),
    }
    if let Some(store) = store
        && store.writable().is_ok()
    {
        let key = format!("reports/{}/{stamp}.json", plan.host);
        match store.put_object(&key, &bytes) {
            Ok(()) => saved.push(format!("{key} in the store")),
            Err(e) => eprintln!("note: the restore report could not be stored as {key}: {e:#}"),
        }
    }
    saved
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Loads a report from a file, or the newest of `host` (or of any host) from a store.
pub fn load(file: Option<&Path>, store: Option<&Store>, host: Option<&str>) -> Result<Report> {
    let bytes = match (file, store) {
        (Some(f), _) => {
            let meta =
                std::fs::metadata(f).with_context(|| format!("reading \"{}\"", f.display()))?;
            if meta.len() > MAX_REPORT {
                bail!("\"{}\" is not a restore report (too large)", f.display());
            }
            std::fs::read(f).with_context(|| format!("reading \"{}\"", f.display()))?
        }
        (None, Some(store)) => {
            if let Some(h) = host {
                crate::manifest::valid_host(h)?;
            }
            let prefix = match host {
                Some(h) => format!("reports/{h}/"),
                None => "reports/".into(),
            };
            let mut keys: Vec<String> = store
                .list(&prefix)?
                .into_iter()
                .filter(|k| k.ends_with(".json"))
                .collect();
            keys.sort_by_key(|k| k.rsplit('/').next().unwrap_or("").to_string());
            let Some(key) = keys.last() else {
                bail!(
                    "the store has no restore reports{}; reports are stored by `restore apply` when the store is writable",
                    host.map(|h| format!(" of host {h}")).unwrap_or_default()
                );
            };
            store
                .get_object(key, MAX_REPORT)
                .map_err(|e| anyhow::anyhow!("reading {key}: {e}"))?
        }
        (None, None) => {
            bail!("give a report file, or --store (with --host) for the newest report in a store")
        }
    };
    let r: Report = serde_json::from_slice(&bytes).context("this is not a restore report")?;
    if r.format != FORMAT {
        bail!("this is not a restore report (format {:?})", r.format);
    }
    Ok(r)
}

/// The report for people.
pub fn human(r: &Report) -> String {
    let mut s = String::new();
    let line = |s: &mut String, t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(
        &mut s,
        format!(
            "Restore of host {} from snapshot {}: {}",
            r.host,
            r.snapshot,
            if r.result == "ok" { "OK" } else { "FAILED" }
        ),
    );
    line(&mut s, format!("  started  {}", r.started));
    line(
        &mut s,
        format!(
            "  finished {} ({:.1} s writing and checking)",
            r.finished, r.seconds
        ),
    );
    line(&mut s, format!("  store    {}", r.store));
    line(
        &mut s,
        format!(
            "  snapshot {}",
            r.signed_by
                .as_deref()
                .map(|k| format!("signed by key {k}"))
                .unwrap_or_else(|| "not verified".into())
        ),
    );
    for t in &r.targets {
        line(
            &mut s,
            format!(
                "  target   \"{}\" ({}, model {}, serial {}) <- disk {}",
                t.path,
                units::bytes(t.size),
                t.model.as_deref().unwrap_or("-"),
                t.serial.as_deref().unwrap_or("-"),
                t.source
            ),
        );
    }
    line(
        &mut s,
        format!(
            "Diagnosis: {} component(s) needed work, {} to write (estimated {}):",
            r.diagnosis.len(),
            units::bytes(r.bytes_to_write),
            human_duration(r.estimated_seconds)
        ),
    );
    for d in &r.diagnosis {
        line(
            &mut s,
            format!(
                "  {}: {} -> {} ({})",
                d.component,
                d.found,
                d.action,
                units::bytes(d.bytes_to_write)
            ),
        );
        if !d.reason.is_empty() {
            line(&mut s, format!("      {}", d.reason));
        }
    }
    if let Some(w) = &r.written {
        line(
            &mut s,
            format!(
                "Written: {} ({} chunks, {} table sectors){}",
                units::bytes(w["bytes_written"].as_u64().unwrap_or(0)),
                w["chunks_written"].as_u64().unwrap_or(0),
                w["table_sectors_written"].as_u64().unwrap_or(0),
                if w["verified"] == true {
                    ", verified"
                } else {
                    ""
                }
            ),
        );
        if let Some(phases) = w["phases"].as_array() {
            let list: Vec<String> = phases
                .iter()
                .map(|p| {
                    format!(
                        "{} {:.2} s",
                        p["phase"].as_str().unwrap_or("?"),
                        p["seconds"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            line(&mut s, format!("  phases: {}", list.join(", ")));
        }
        for c in w["boot_check"].as_array().into_iter().flatten() {
            line(
                &mut s,
                format!(
                    "  boot chain of {}: {}",
                    c["disk"].as_str().unwrap_or("?"),
                    if c["whole"] == true {
                        "whole"
                    } else {
                        "BROKEN"
                    }
                ),
            );
        }
    }
    if let Some(e) = &r.error {
        line(&mut s, format!("Error: {e}"));
    }
    if let Some(at) = &r.failed_at
        && let Some(reached) = at.describe()
    {
        line(
            &mut s,
            format!(
                "Stopped {reached}: {} of {} done{}",
                units::bytes(at.bytes_done),
                units::bytes(at.bytes_total),
                if at.phase == crate::apply::WRITE_PHASE && at.bytes_done > 0 {
                    "; the target is partly written: make a new plan and apply it"
                } else {
                    ""
                }
            ),
        );
    }
    line(&mut s, format!("restore {}", r.restore_version));
    // Fitted to the console: long lines wrap under their own indentation.
    let width = units::width();
    let mut out = String::new();
    for l in s.lines() {
        let lead = l.len() - l.trim_start().len();
        for w in units::wrap(l, width, &" ".repeat(lead + 4)) {
            out.push_str(&w);
            out.push('\n');
        }
    }
    out
}

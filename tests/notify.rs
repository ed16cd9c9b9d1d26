//! Telling the people who wait, and the engineer at the console: webhook events of a full, a
//! minimal and a failed restore, a webhook that is down or slow, `--progress json`, the restore
//! report, the 80-column plan, `restore disks`, the hints of errors, --version, completions and
//! man pages.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A webhook receiver on 127.0.0.1: records every POSTed JSON body, answers 200 after `delay`.
struct Receiver {
    port: u16,
    events: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let ev = ev.clone();
                std::thread::spawn(move || serve(conn, ev, delay));
            }
        });
        Receiver { port, events, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/T0K3N-secret", self.port)
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, events: Arc<Mutex<Vec<Value>>>, delay: Duration) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        events.lock().unwrap().push(v);
    }
    std::thread::sleep(delay);
    let _ =
        (&conn).write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
}

const DISK: u64 = 192 * MIB;

/// A server disk of 192 MiB whose partition 5 holds ~100 MiB of random data, captured.
fn captured(tmp: &Tmp) -> PathBuf {
    let src = tmp.path("server.img");
    gpt_server_disk(&src, DISK, tmp);
    for i in 0..12 {
        write_at(
            &src,
            DATA5 + 8 * MIB + i * 8 * MIB,
            &random_bytes(300 + i, 8 * MIB as usize),
        );
    }
    capture(tmp, "web-3", &[&src]);
    src
}

/// The restore reports of host web-3 that apply saved in `dir`.
fn reports_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("restore-report-web-3-")
        })
        .collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect();
    k.dedup();
    k
}

fn apply_notified(tmp: &Tmp, target: &Path, extra: &[&str]) -> (std::process::Output, f64) {
    let store = tmp.store();
    let mut args = vec!["apply", "--store", &store, "--yes", "--progress", "json"];
    args.extend_from_slice(extra);
    args.push(p(target));
    let started = Instant::now();
    let o = Command::new(bin())
        .args(&args)
        .current_dir(tmp.dir.path())
        .env_remove("RESTORE_NOTIFY")
        .output()
        .unwrap();
    (o, started.elapsed().as_secs_f64())
}

/// JSON lines of `--progress json` on stderr: every line that starts with `{` parses.
fn json_lines(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn a_full_and_a_minimal_restore_tell_the_webhook_in_order() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let hook = Receiver::start(Duration::ZERO);
    let target = tmp.path("blank.img");
    blank(&target, DISK);
    let (o, _) = apply_notified(
        &tmp,
        &target,
        &[
            "--notify",
            &hook.url(),
            "--notify-every",
            "0.2",
            "--notify-message",
            "web-3 is being restored; customers on staging are affected",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&src, &target);
    let events = hook.events();
    assert_eq!(kinds(&events), ["plan", "progress", "done"], "{events:#?}");
    for e in &events {
        let t = e["text"].as_str().unwrap();
        assert!(
            t.starts_with("web-3 is being restored; customers on staging are affected"),
            "{t}"
        );
        assert_eq!(e["host"], "web-3");
        assert!(!t.contains("T0K3N"));
    }
    let plan = &events[0];
    assert!(
        plan["bytes_to_write"].as_u64().unwrap() > 100 * MIB,
        "{plan}"
    );
    assert!(plan["estimated_seconds"].as_f64().is_some());
    let done = events.last().unwrap();
    let real = done["duration_seconds"].as_f64().unwrap();
    let first = events.iter().find(|e| e["event"] == "progress").unwrap();
    let eta = first["eta_seconds"]
        .as_f64()
        .expect("an ETA in the first progress event");
    eprintln!("first ETA {eta:.2} s, real {real:.2} s");
    // The first ETA is the plan's estimate less the time already spent (no rate is measured
    // before half a second), never more than the estimate and never negative. How close it
    // comes to the real duration is measured by scripts/bench-eta.sh, not asserted here: a
    // restore of 100 MiB onto a file takes a tenth of a second, where any ETA is noise.
    let estimate = plan["estimated_seconds"].as_f64().unwrap();
    let expected = match first["rate_bytes_per_second"].as_f64() {
        // A slow machine may send the first event after a rate was measured: then the ETA
        // is what is left at that rate.
        Some(rate) => {
            let left =
                first["bytes_total"].as_u64().unwrap() - first["bytes_done"].as_u64().unwrap();
            left as f64 / rate
        }
        None => estimate,
    };
    assert!(
        eta > 0.0 && eta <= expected + 0.05,
        "first ETA {eta:.2} s against {expected:.2} s (plan's estimate {estimate:.2} s, real {real:.2} s): {first}"
    );
    assert_eq!(done["bytes_written"], plan["bytes_to_write"], "{done}");
    // The same events on stderr as JSON lines.
    let lines = json_lines(&o);
    // (stderr also gets the progress of the diagnosis before the plan)
    let k = kinds(&lines);
    assert!(
        k.ends_with(&["plan".into(), "progress".into(), "done".into()]),
        "{k:?}"
    );
    // The report next to where apply ran, and in the store.
    let reports = reports_in(tmp.dir.path());
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r: Value = serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap();
    assert_eq!(r["result"], "ok");
    assert!(r["written"]["phases"].as_array().unwrap().len() >= 5, "{r}");
    let shown = ok(&["report", "show", "--store", &tmp.store(), "--host", "web-3"]);
    assert!(
        shown.contains("Restore of host web-3") && shown.contains("OK"),
        "{shown}"
    );
    assert!(shown.lines().all(|l| l.chars().count() <= 80), "{shown}");

    // A minimal restore: 1% of partition 5 damaged.
    let hook2 = Receiver::start(Duration::ZERO);
    write_at(&target, DATA5 + 20 * MIB, &random_bytes(77, MIB as usize));
    let (o, _) = apply_notified(&tmp, &target, &["--notify", &hook2.url()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&src, &target);
    let events = hook2.events();
    assert_eq!(kinds(&events), ["plan", "progress", "done"], "{events:#?}");
    let damaged = events[0]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0]["component"], "partition 5");
    assert!(events[0]["text"].as_str().unwrap().contains("partition 5"));
}

#[test]
fn a_failed_restore_names_its_reason_and_leaves_a_report() {
    let tmp = Tmp::new();
    captured(&tmp);
    let target = tmp.path("blank.img");
    blank(&target, DISK);
    // The store goes away between the plan and the apply's fetches: its chunks vanish.
    let plan = tmp.path("plan.json");
    ok(&[
        "plan",
        "--store",
        &tmp.store(),
        "--no-progress",
        "-o",
        p(&plan),
        p(&target),
    ]);
    std::fs::remove_dir_all(tmp.path("store/chunks")).unwrap();
    let hook = Receiver::start(Duration::ZERO);
    let o = Command::new(bin())
        .args([
            "apply",
            "--yes",
            "--no-progress",
            "--notify",
            &hook.url(),
            p(&plan),
        ])
        .current_dir(tmp.dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let events = hook.events();
    let failed = events.last().expect("events");
    assert_eq!(failed["event"], "failed", "{events:#?}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("chunk") || reason.contains("store"),
        "{reason}"
    );
    assert!(failed["text"].as_str().unwrap().contains("FAILED"));
}

/// The store goes away in the middle of the writes (a proxy in front of it dies after 16
/// chunk downloads): the `failed` event and the report say why and how far the restore got.
#[test]
fn a_store_gone_mid_restore_sends_failed_with_how_far_it_got() {
    let tmp = Tmp::new();
    captured(&tmp);
    let target = tmp.path("blank.img");
    blank(&target, DISK);
    let web = servers::web_server(&tmp, &tmp.path("store"));
    let port = servers::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dying = servers::fault_proxy(&tmp, port, web.port, &["--die-after", "16"]);
    let hook = Receiver::start(Duration::ZERO);
    let o = Command::new(bin())
        .args(["apply", "--store", &url, "--yes", "--no-progress"])
        .args(["--jobs", "4", "--notify", &hook.url(), p(&target)])
        .current_dir(tmp.dir.path())
        .env_remove("RESTORE_NOTIFY")
        .output()
        .unwrap();
    drop(dying);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let events = hook.events();
    assert_eq!(kinds(&events).first().map(String::as_str), Some("plan"));
    let failed = events.last().expect("events");
    assert_eq!(failed["event"], "failed", "{events:#?}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("gave up after") && reason.contains("chunk"),
        "{reason}"
    );
    let (done, total) = (
        failed["bytes_done"].as_u64().unwrap(),
        failed["bytes_total"].as_u64().unwrap(),
    );
    assert!(
        failed["phase"] == "restore" && done > 0 && done < total,
        "the failure does not say how far the writes got: {failed}"
    );
    let sentence = failed["text"].as_str().unwrap();
    assert!(
        sentence.contains("apply FAILED after") && sentence.contains("% of restore: "),
        "{sentence}"
    );
    // The report of the failed apply, in the working directory (the store is read-only).
    let report = reports_in(tmp.dir.path())
        .pop()
        .expect("a report of the failed apply");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "failed", "{r}");
    assert_eq!(r["failed_at"]["bytes_done"], done, "{r}");
    let shown = ok(&["report", "show", p(&report)]);
    let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("FAILED")
            && words.contains("Stopped at ")
            && words.contains("the target is partly written: make a new plan and apply it"),
        "{shown}"
    );
    eprintln!("failed event: {sentence}");
}

#[test]
fn a_webhook_that_is_down_or_slow_never_slows_the_restore() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let target = tmp.path("blank.img");
    let run = |extra: &[&str]| {
        blank(&target, DISK);
        let (o, secs) = apply_notified(&tmp, &target, extra);
        assert!(o.status.success(), "{}", text(&o));
        assert_same(&src, &target);
        (secs, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (quiet, _) = run(&[]);
    // Nobody listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://127.0.0.1:{}/hook",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (down, err) = run(&["--notify", &dead]);
    assert!(err.contains("webhook http://127.0.0.1/…"), "{err}");
    // A webhook that answers after 30 s.
    let slow = Receiver::start(Duration::from_secs(30));
    let (late, _) = run(&["--notify", &slow.url()]);
    eprintln!(
        "apply: {quiet:.2} s alone, {down:.2} s with the webhook down, {late:.2} s with it slow"
    );
    assert!(
        down - quiet < 2.0,
        "{down:.2} s with the webhook down, {quiet:.2} s without"
    );
    assert!(
        late - quiet < 2.0,
        "{late:.2} s with a slow webhook, {quiet:.2} s without"
    );
    assert!(!slow.events().is_empty(), "the slow webhook got nothing");
}

/// The plan at 80 columns: the incident, a full restore and a foreign disk.
#[test]
fn plan_tables_fit_80_columns() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let plan_at = |target: &Path| {
        let o = restore_env(
            &["plan", "--store", &tmp.store(), "--no-progress", p(target)],
            &[("COLUMNS", "80")],
        );
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let incident = tmp.path("incident.img");
    std::fs::copy(&src, &incident).unwrap();
    write_at(&incident, 0, &[0u8; 440]);
    write_at(&incident, MIB, &random_bytes(1000, MIB as usize));
    let blank_disk = tmp.path("blank.img");
    blank(&blank_disk, DISK);
    let foreign = tmp.path("foreign.img");
    gpt_server_disk(&foreign, DISK, &tmp);
    for (name, target) in [
        ("incident", &incident),
        ("full", &blank_disk),
        ("foreign", &foreign),
    ] {
        let out = plan_at(target);
        for l in out.lines() {
            assert!(
                l.chars().count() <= 80,
                "{name}: a line of {} columns:\n{l}\n{out}",
                l.chars().count()
            );
        }
        assert!(
            out.contains("Plan: ") && out.contains(" unchanged"),
            "{name}: {out}"
        );
        eprintln!("--- {name}\n{out}");
    }
    assert!(plan_at(&blank_disk).contains("to replace in full"));
}

#[test]
fn errors_point_to_what_exists() {
    let tmp = Tmp::new();
    captured(&tmp);
    let target = tmp.path("t.img");
    blank(&target, DISK);
    let e = fails(&[
        "plan",
        "--store",
        &tmp.store(),
        "--host",
        "web-4",
        p(&target),
    ]);
    assert!(e.contains("hosts in it: web-3"), "{e}");
    let id = serde_json::from_str::<Value>(&ok(&["snapshots", "--store", &tmp.store(), "--json"]))
        .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // One character off.
    let typo = format!(
        "{}{}",
        &id[..id.len() - 1],
        if id.ends_with('0') { '1' } else { '0' }
    );
    let e = fails(&[
        "plan",
        "--store",
        &tmp.store(),
        "--snapshot",
        &typo,
        p(&target),
    ]);
    assert!(e.contains(&format!("did you mean {id}")), "{e}");
    assert!(e.contains("restore snapshots --store"), "{e}");
}

#[test]
fn version_completions_and_man_pages() {
    let v = ok(&["--version"]);
    assert!(
        v.contains("commit ") && v.contains("built ") && v.contains("s3://"),
        "{v}"
    );
    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("_restore") && bash.contains("check-boot"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    let tmp = Tmp::new();
    ok(&["man", p(&tmp.path("man"))]);
    let page = std::fs::read_to_string(tmp.path("man/restore-plan.1")).unwrap();
    assert!(
        page.contains(".TH") && page.contains("\\-\\-store"),
        "{page}"
    );
    assert!(!tmp.path("man/restore-thaw-watchdog.1").exists());
    let help = ok(&["apply", "--help"]);
    assert!(
        help.contains("Examples:\n  restore apply plan.json"),
        "{help}"
    );
}

#[test]
fn disks_lists_a_loop_device_by_what_is_on_it() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let img = tmp.path("server.img");
    gpt_server_disk(&img, 96 * MIB, &tmp);
    let lo = Loop::new(&img, &[]);
    let out = restore_env(&["disks", "--loops", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == p(&lo.dev))
        .unwrap_or_else(|| panic!("{} not listed: {all}", lo.dev.display()));
    assert_eq!(me["size"], 96 * MIB);
    assert!(
        me["table"]
            .as_str()
            .unwrap()
            .starts_with("GPT, 4 partitions"),
        "{me}"
    );
    assert_eq!(me["backing_file"], p(&img));
    let human = ok(&["disks", "--loops"]);
    assert!(human.contains(p(&lo.dev)), "{human}");
    assert!(human.lines().all(|l| l.chars().count() <= 80), "{human}");
}

//! The planner: find what is damaged, write only that, and prove the result equals the
//! snapshot. Every scenario ends with a byte comparison against the original disk.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const DISK: u64 = 1 << 30;

struct Case {
    tmp: Tmp,
    src: PathBuf,
    target: PathBuf,
}

/// A 1 GiB server disk captured, and a copy of it to damage.
fn case() -> Case {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, DISK, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("target.img");
    std::fs::copy(&src, &target).unwrap();
    Case { tmp, src, target }
}

fn action<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action {name} in {plan:#}"))
}

fn written(plan: &Value) -> Vec<String> {
    plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] != "keep")
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

/// Applies, then checks the disk equals the original and a fresh plan has nothing to do.
fn repair_and_check(c: &Case, target: &Path) {
    apply_store(&c.tmp, target);
    assert_same_prefix(&c.src, target, DISK);
    let again = plan_json(&c.tmp, target, &[]);
    assert_eq!(again["totals"]["bytes_to_write"], 0, "{again:#}");
    let o = restore(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "--detailed-exitcode",
        "--no-progress",
        p(target),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Runs a scenario on a loop device over the damaged copy, then checks the image behind it.
fn on_a_loop_device(scenario: fn(&Case, &Path)) {
    if !have_root() {
        return;
    }
    let c = case();
    let lo = Loop::new(&c.target, &[]);
    scenario(&c, &lo.dev);
    drop(lo);
    assert_same(&c.src, &c.target);
}

fn incident(c: &Case, target: &Path) {
    write_at(target, 0, &[0u8; 440]);
    write_at(target, MIB, &random_bytes(1000, MIB as usize));
    let plan = plan_json(&c.tmp, target, &[]);
    assert_eq!(written(&plan), vec!["boot-code", "partition 1"], "{plan:#}");
    let bytes = plan["totals"]["bytes_to_write"].as_u64().unwrap();
    assert!(
        bytes < 2 * MIB,
        "the incident must be repaired with under 2 MiB, not {bytes}"
    );
    assert_eq!(bytes, 440 + MIB);
    assert_eq!(action(&plan, "partition 1")["action"], "full");
    assert_eq!(action(&plan, "partition 5")["action"], "keep");
    let o = restore(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "--detailed-exitcode",
        "--no-progress",
        p(target),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    repair_and_check(c, target);
}

#[test]
fn the_incident_boot_code_and_bios_boot_partition() {
    let c = case();
    incident(&c, &c.target);
}

#[test]
fn the_incident_on_a_loop_device() {
    on_a_loop_device(incident);
}

#[test]
fn gpt_primary_header_zeroed_backup_intact() {
    let c = case();
    write_at(&c.target, 512, &[0u8; 512]);
    let plan = plan_json(&c.tmp, &c.target, &[]);
    assert_eq!(written(&plan), vec!["gpt"], "{plan:#}");
    let table = action(&plan, "gpt");
    assert!(
        table["found"].as_str().unwrap().contains("backup: intact"),
        "{table:#}"
    );
    assert_eq!(table["table_writes"].as_array().unwrap().len(), 1);
    assert_eq!(plan["totals"]["bytes_to_write"], 512);
    repair_and_check(&c, &c.target);
    let v = sh("sgdisk", &["-v", p(&c.target)]);
    assert!(v.contains("No problems found"), "{v}");
    assert!(sh("sgdisk", &["-p", p(&c.target)]).contains("data"));
}

#[test]
fn gpt_backup_damaged_primary_intact() {
    let c = case();
    write_at(&c.target, DISK - 512 + 60, b"garbage");
    let plan = plan_json(&c.tmp, &c.target, &[]);
    assert_eq!(written(&plan), vec!["gpt"]);
    assert!(
        action(&plan, "gpt")["found"]
            .as_str()
            .unwrap()
            .contains("backup: header CRC mismatch"),
        "{plan:#}"
    );
    repair_and_check(&c, &c.target);
}

fn one_percent(c: &Case, target: &Path) {
    // Partition 5 spans ~950 chunks; damage 10 of them at pseudo-random places.
    let chunks5 = (DISK - 33 * 512 - DATA5) / MIB;
    let mut damaged: Vec<u64> = (0..10u64).map(|i| (i * 7919 + 13) * 97 % chunks5).collect();
    damaged.sort_unstable();
    damaged.dedup();
    assert_eq!(damaged.len(), 10);
    for (k, &chunk) in damaged.iter().enumerate() {
        let within = random_bytes(k as u64, 8);
        let off = u64::from_le_bytes(within.try_into().unwrap()) % (MIB - 16);
        write_at(
            target,
            DATA5 + chunk * MIB + off,
            &random_bytes(500 + k as u64, 16),
        );
    }
    let plan = plan_json(&c.tmp, target, &[]);
    assert_eq!(written(&plan), vec!["partition 5"], "{plan:#}");
    let a = action(&plan, "partition 5");
    assert_eq!(a["action"], "patch");
    assert_eq!(a["chunks_to_write"], 10);
    let mut planned = Vec::new();
    for run in a["runs"].as_array().unwrap() {
        let (first, count) = (run[0].as_u64().unwrap(), run[1].as_u64().unwrap());
        planned.extend(first..first + count);
    }
    assert_eq!(planned, damaged, "exactly the damaged chunks are written");
    assert_eq!(plan["totals"]["chunks_to_write"], 10);
    assert_eq!(plan["totals"]["bytes_to_write"], 10 * MIB);
    repair_and_check(c, target);
}

#[test]
fn one_percent_of_a_partition_corrupted() {
    let c = case();
    one_percent(&c, &c.target);
}

#[test]
fn one_percent_corrupted_on_a_loop_device() {
    on_a_loop_device(one_percent);
}

#[test]
fn partition_table_deleted_first_mib_zeroed() {
    let c = case();
    write_at(&c.target, 0, &vec![0u8; MIB as usize]);
    let plan = plan_json(&c.tmp, &c.target, &[]);
    assert_eq!(
        written(&plan),
        vec!["gpt", "boot-code", "post-table-gap"],
        "{plan:#}"
    );
    let found = action(&plan, "gpt")["found"].as_str().unwrap().to_string();
    assert!(
        found.contains("primary: header is blank") && found.contains("backup: intact"),
        "{found}"
    );
    assert!(
        found.contains("protective MBR signature missing"),
        "{found}"
    );
    // MBR tail, primary header and entries; nothing of any partition.
    assert_eq!(action(&plan, "gpt")["bytes_to_write"], 72 + 512 + 16384);
    assert_eq!(
        plan["totals"]["bytes_to_write"], MIB,
        "exactly the first MiB"
    );
    repair_and_check(&c, &c.target);
}

#[test]
fn blank_disk_gets_a_full_restore() {
    let c = case();
    let blank_target = c.tmp.path("blank.img");
    blank(&blank_target, DISK);
    let plan = plan_json(&c.tmp, &blank_target, &[]);
    for a in plan["disks"][0]["actions"].as_array().unwrap() {
        let all_zero =
            a["index"].is_string() && a["chunks_to_fetch"] == 0 && a["chunks_to_write"] == 0;
        // On a zero-filled disk, chunks that are zero in the snapshot are already correct.
        assert!(a["action"] != "keep" || all_zero, "{a:#}");
    }
    assert_eq!(action(&plan, "partition 2")["action"], "patch");
    assert_eq!(
        action(&plan, "gpt")["table_writes"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    repair_and_check(&c, &blank_target);
}

#[test]
fn equal_disk_has_nothing_to_do() {
    let c = case();
    let o = restore(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "--detailed-exitcode",
        "--no-progress",
        p(&c.target),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("Nothing to do"));
    let plan = plan_json(&c.tmp, &c.target, &[]);
    assert!(written(&plan).is_empty());
    assert_eq!(plan["totals"]["bytes_to_write"], 0);
    assert_eq!(plan["totals"]["bytes_to_fetch"], 0);
    assert_eq!(plan["totals"]["chunks_to_write"], 0);
    let before = file_hash(&c.target);
    ok(&[
        "apply",
        "--store",
        &c.tmp.store(),
        "--yes",
        "--no-progress",
        p(&c.target),
    ]);
    assert_eq!(before, file_hash(&c.target));
}

#[test]
fn drift_after_planning_is_refused() {
    let c = case();
    write_at(&c.target, 0, &[0u8; 440]);
    let plan = c.tmp.path("plan.json");
    ok(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "-o",
        p(&plan),
        "--no-progress",
        p(&c.target),
    ]);
    // Changed afterwards, somewhere the plan decided to keep.
    write_at(&c.target, DATA5 + 500 * MIB + 12345, b"drift");
    let before = file_hash(&c.target);
    let err = fails(&["apply", "--yes", "--no-progress", p(&plan)]);
    assert!(err.contains("changed since the plan was made"), "{err}");
    assert_eq!(before, file_hash(&c.target), "nothing written after drift");
    // A saved quick plan re-checks what it read, too.
    ok(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "--quick",
        "-o",
        p(&plan),
        "--no-progress",
        p(&c.target),
    ]);
    write_at(&c.target, 512 + 100, b"x");
    let err = fails(&["apply", "--yes", "--no-progress", p(&plan)]);
    assert!(err.contains("changed since the plan was made"), "{err}");
}

#[test]
fn saved_plan_applies_exactly_and_verify_rereads() {
    let c = case();
    write_at(&c.target, 0, &[0u8; 440]);
    write_at(&c.target, DATA5 + 3 * MIB, &random_bytes(4, 1000));
    let plan = c.tmp.path("plan.json");
    ok(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "-o",
        p(&plan),
        "--no-progress",
        p(&c.target),
    ]);
    let out = ok(&[
        "apply",
        "--yes",
        "--verify",
        "--json",
        "--no-progress",
        p(&plan),
    ]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["result"]["verified"], true);
    assert_eq!(r["result"]["bytes_written"], 440 + MIB);
    assert_same(&c.src, &c.target);
}

fn interrupted(c: &Case, env: Option<(&str, &str)>, kill_after_ms: Option<u64>) {
    let target = c.tmp.path("interrupted.img");
    blank(&target, DISK);
    // Junk in the table area and data, so every phase has something to write.
    write_at(&target, 0, &random_bytes(9, 20_000));
    write_at(&target, DATA5, &random_bytes(8, 4 * MIB as usize));
    let mut cmd = std::process::Command::new(if env.is_some() { hooks_bin() } else { bin() });
    cmd.args([
        "apply",
        "--store",
        &c.tmp.store(),
        "--yes",
        "--no-progress",
        "--jobs",
        "2",
        p(&target),
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(ms) = kill_after_ms {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    if let Some((_, point)) = env {
        assert!(
            !status.success(),
            "the failpoint {point} should have killed apply"
        );
        let plan = plan_json(&c.tmp, &target, &[]);
        // Until the table is written the disk does not look finished; after it, it is.
        let finished = ["before-reread", "before-nvram"]
            .iter()
            .any(|p| point.starts_with(p));
        assert_eq!(
            plan["totals"]["bytes_to_write"].as_u64().unwrap() == 0,
            finished,
            "killed at {point}: {plan:#}"
        );
    }
    apply_store(&c.tmp, &target);
    assert_same(&c.src, &target);
}

#[test]
fn interrupted_apply_is_finished_by_plan_and_apply() {
    let c = case();
    // Every phase boundary of the writer, and inside the data and table phases.
    for point in [
        "before-data:1",
        "after-chunk:1",
        "after-chunk:3",
        "before-boot-regions:1",
        "before-esp-files:1",
        "before-table-backup:1",
        "after-table-sector:1",
        "before-table-primary:1",
        "after-table-sector:3",
        "before-reread:1",
        "before-nvram:1",
    ] {
        interrupted(&c, Some(("RESTORE_FAILPOINT", point)), None);
    }
    for ms in [5, 40, 120] {
        interrupted(&c, None, Some(ms));
    }
}

#[test]
fn quick_plan_checks_critical_chunks_and_says_what_it_skipped() {
    let c = case();
    write_at(&c.target, 0, &[0u8; 440]);
    // The ext4 superblock of partition 2 and a chunk deep inside partition 5.
    write_at(&c.target, 2 * MIB + 1024 + 100, b"bad");
    write_at(&c.target, DATA5 + 200 * MIB, &random_bytes(1, 100));
    let plan = plan_json(&c.tmp, &c.target, &["--quick"]);
    assert_eq!(plan["mode"], "quick");
    assert_eq!(written(&plan), vec!["boot-code", "partition 2"], "{plan:#}");
    let not_checked = plan["disks"][0]["not_checked"].as_array().unwrap();
    assert!(
        not_checked
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("partition 5")),
        "{not_checked:?}"
    );
    let human = ok(&[
        "plan",
        "--store",
        &c.tmp.store(),
        "--quick",
        "--no-progress",
        p(&c.target),
    ]);
    assert!(human.contains("Not checked"), "{human}");
    // After applying the quick plan, a deep plan still finds the chunk quick mode did not see.
    ok(&[
        "apply",
        "--store",
        &c.tmp.store(),
        "--quick",
        "--yes",
        "--no-progress",
        p(&c.target),
    ]);
    let deep = plan_json(&c.tmp, &c.target, &[]);
    assert_eq!(written(&deep), vec!["partition 5"]);
    repair_and_check(&c, &c.target);
}

/// The human table for the incident, with the run-specific parts normalised.
#[test]
fn human_plan_table_snapshot() {
    let c = case();
    write_at(&c.target, 0, &[0u8; 440]);
    write_at(&c.target, 512, &[0u8; 512]);
    write_at(&c.target, MIB, &random_bytes(1000, MIB as usize));
    // Laid out for an 80-column console.
    let o = restore_env(
        &[
            "plan",
            "--store",
            &c.tmp.store(),
            "--no-progress",
            p(&c.target),
        ],
        &[("COLUMNS", "80")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.lines().all(|l| l.chars().count() <= 80),
        "a line wider than 80 columns:\n{out}"
    );
    let id =
        serde_json::from_str::<Value>(&ok(&["snapshots", "--store", &c.tmp.store(), "--json"]))
            .unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    let normal = out
        .replace(&id, "SNAPSHOT")
        .replace(&c.tmp.store(), "STORE")
        .replace(p(&c.target), "TARGET");
    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/incident-plan.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&expected_path, &normal).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path)
        .expect("tests/snapshots/incident-plan.txt (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(
        normal, expected,
        "the human plan changed; if intended, rerun with UPDATE_SNAPSHOTS=1"
    );
}

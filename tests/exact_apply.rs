//! Apply writes exactly what a fresh diagnosis proves: an edited plan file is refused with
//! the target unchanged, `-o` never overwrites a target or a stranger's file, another
//! system's disk is never overwritten by surprise, and Ctrl-C stops cleanly.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const DISK: u64 = 96 * MIB;

struct Setup {
    tmp: Tmp,
    src: PathBuf,
    target: PathBuf,
}

/// A snapshot, and a copy that needs its table, boot code and one data chunk written.
fn setup() -> Setup {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, DISK, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("target.img");
    std::fs::copy(&src, &target).unwrap();
    write_at(&target, 0, &[0u8; 440]);
    write_at(&target, 512, &[0u8; 512]);
    write_at(&target, DATA5 + MIB + 77, b"damage");
    Setup { tmp, src, target }
}

fn save_plan(s: &Setup, path: &Path) -> Value {
    ok(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "-o",
        p(path),
        "--no-progress",
        p(&s.target),
    ]);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn action_mut<'a>(plan: &'a mut Value, name: &str) -> &'a mut Value {
    plan["disks"][0]["actions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no action {name}"))
}

type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn edited_plans_are_refused_and_nothing_is_written() {
    let s = setup();
    let good = s.tmp.path("plan.json");
    let plan = save_plan(&s, &good);
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "offset moved 10 GiB out",
            Box::new(|p| action_mut(p, "partition 5")["offset"] = (10u64 << 30).into()),
            "partition:5: offset differs",
        ),
        (
            "runs widened",
            Box::new(|p| action_mut(p, "partition 5")["runs"] = serde_json::json!([[0, 40]])),
            "partition:5: runs differ",
        ),
        (
            "run index past the index",
            Box::new(|p| action_mut(p, "partition 5")["runs"] = serde_json::json!([[100000, 1]])),
            "partition:5: runs differ",
        ),
        (
            "a patch action removed (totals kept)",
            Box::new(|p| {
                p["disks"][0]["actions"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|a| a["name"] != "partition 5")
            }),
            "it lists the components",
        ),
        (
            "a table sector's bytes changed",
            Box::new(|p| {
                let w = &mut action_mut(p, "gpt")["table_writes"][0];
                let data = w["data"].as_str().unwrap().to_string();
                w["data"] = format!("ff{}", &data[2..]).into();
            }),
            "table: table_writes differs",
        ),
        (
            "boot code skipped",
            Box::new(|p| action_mut(p, "boot-code")["action"] = "keep".into()),
            "region:boot-code: action differs",
        ),
        (
            "totals edited",
            Box::new(|p| p["totals"]["bytes_to_write"] = 1.into()),
            "totals",
        ),
    ];
    let before = file_hash(&s.target);
    for (what, edit, expect) in edits {
        let mut edited = plan.clone();
        edit(&mut edited);
        let path = s.tmp.path("edited.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
        for verify in [false, true] {
            let mut args = vec!["apply", "--yes", "--no-progress", p(&path)];
            if verify {
                args.insert(1, "--verify");
            }
            let err = fails(&args);
            assert!(
                err.contains("does not match what the target needs now")
                    && err.contains("nothing was written")
                    && err.contains(expect),
                "{what}: {err}"
            );
            assert_eq!(before, file_hash(&s.target), "{what}: the target changed");
            assert_eq!(std::fs::metadata(&s.target).unwrap().len(), DISK, "{what}");
        }
    }
    // A changed fingerprint is drift; a malformed component id is not a plan.
    let mut fp = plan.clone();
    fp["disks"][0]["fingerprint"] = "00".repeat(32).into();
    let path = s.tmp.path("edited.json");
    std::fs::write(&path, serde_json::to_vec(&fp).unwrap()).unwrap();
    let err = fails(&["apply", "--yes", p(&path)]);
    assert!(err.contains("changed since the plan was made"), "{err}");
    let mut bad = plan.clone();
    action_mut(&mut bad, "partition 5")["id"] = "partition:x".into();
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let err = fails(&["apply", "--yes", p(&path)]);
    assert!(err.contains("not a valid restore plan"), "{err}");
    assert_eq!(before, file_hash(&s.target));
    // The plan as saved applies, and the disk is the snapshot's again.
    ok(&["apply", "--yes", "--verify", "--no-progress", p(&good)]);
    assert_same(&s.src, &s.target);
}

#[test]
fn plan_output_never_replaces_a_target_or_another_file() {
    let s = setup();
    let before = file_hash(&s.target);
    let err = fails(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "-o",
        p(&s.target),
        p(&s.target),
    ]);
    assert!(err.contains("that is target"), "{err}");
    assert_eq!(before, file_hash(&s.target));
    let other = s.tmp.path("other.img");
    blank(&other, MIB);
    write_at(&other, 0, b"someone's data");
    let other_hash = file_hash(&other);
    let err = fails(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "-o",
        p(&other),
        p(&s.target),
    ]);
    assert!(err.contains("is not a restore plan"), "{err}");
    assert_eq!(other_hash, file_hash(&other));
    // Replacing an older plan is fine; the file is private and names absolute paths, even
    // when the plan was made with relative ones.
    let o = std::process::Command::new(bin())
        .current_dir(s.tmp.dir.path())
        .args([
            "plan",
            "--store",
            "store",
            "-o",
            "plan.json",
            "--no-progress",
            "target.img",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let plan_path = s.tmp.path("plan.json");
    save_plan(&s, &plan_path);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&plan_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "plan files are private");
    let plan: Value = serde_json::from_slice(&std::fs::read(&plan_path).unwrap()).unwrap();
    assert_eq!(plan["store"], s.tmp.store());
    assert_eq!(plan["disks"][0]["target"], p(&s.target));
    // apply PLAN with --store is told that the plan carries its store.
    let err = fails(&["apply", "--store", &s.tmp.store(), "--yes", p(&plan_path)]);
    assert!(err.contains("carries its own store"), "{err}");
    assert_eq!(before, file_hash(&s.target));
    // With RESTORE_STORE set, the plan's own store is used, and the operator is told.
    let o = restore_env(
        &["apply", "--yes", "--no-progress", p(&plan_path)],
        &[("RESTORE_STORE", "/nonexistent-store")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("RESTORE_STORE"), "{}", text(&o));
    assert_same(&s.src, &s.target);
    // A target that no longer resolves is named by its field.
    save_plan(&s, &plan_path);
    let moved = s.tmp.path("moved.img");
    std::fs::rename(&s.target, &moved).unwrap();
    let err = fails(&["apply", "--yes", p(&plan_path)]);
    assert!(err.contains("\"disks[0].target\""), "{err}");
}

/// Another server's disk: its own GPT (another disk GUID) and a labelled ext4 full of data.
fn foreign_disk(tmp: &Tmp, path: &Path) {
    blank(path, DISK);
    sh("sgdisk", &["-n1:2048:+60M", "-t1:8300", "-c1:db", p(path)]);
    let root = tmp.path("dbfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("orders.db"), random_bytes(77, 2 * MIB as usize)).unwrap();
    let fs = tmp.path("db.ext4");
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-L", "pgdata", "-d", p(&root), p(&fs), "60M"],
    );
    write_at(path, MIB, &std::fs::read(&fs).unwrap());
}

#[test]
fn a_foreign_disk_is_never_overwritten_by_surprise() {
    let s = setup();
    // The damaged copy of the snapshot's own disk is not foreign, nor is a blank disk.
    let plan = plan_json(&s.tmp, &s.target, &[]);
    assert!(plan["disks"][0].get("foreign").is_none(), "{plan:#}");
    let empty = s.tmp.path("blank.img");
    blank(&empty, DISK);
    assert!(
        plan_json(&s.tmp, &empty, &[])["disks"][0]
            .get("foreign")
            .is_none()
    );

    let other = s.tmp.path("other-server.img");
    foreign_disk(&s.tmp, &other);
    let before = file_hash(&other);
    let human = ok(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "--no-progress",
        p(&other),
    ]);
    assert!(
        human.contains("FOREIGN DISK")
            && human.contains("partition 1 \"db\" (ext4 labelled \"pgdata\", 60.0 MiB)"),
        "{human}"
    );
    let plan = plan_json(&s.tmp, &other, &[]);
    let foreign = &plan["disks"][0]["foreign"];
    assert_eq!(foreign["destroys"][0]["fs_label"], "pgdata", "{plan:#}");
    let err = fails(&["apply", "--store", &s.tmp.store(), "--yes", p(&other)]);
    assert!(
        err.contains("another system's data") && err.contains("--overwrite-foreign"),
        "{err}"
    );
    assert_eq!(before, file_hash(&other));
    let saved = s.tmp.path("foreign-plan.json");
    ok(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "-o",
        p(&saved),
        "--no-progress",
        p(&other),
    ]);
    let err = fails(&["apply", "--yes", p(&saved)]);
    assert!(err.contains("--overwrite-foreign"), "{err}");
    assert_eq!(before, file_hash(&other));
    ok(&[
        "apply",
        "--overwrite-foreign",
        "--yes",
        "--no-progress",
        p(&saved),
    ]);
    // The free space of the restored ext4 still holds the other system's old bytes (free
    // space is not restored); everything else is the snapshot's, byte for byte.
    let o = restore(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "--detailed-exitcode",
        "--no-progress",
        p(&other),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        read_at(&s.src, 0, 2 * MIB as usize),
        read_at(&other, 0, 2 * MIB as usize)
    );
    let tail = (DISK - 42 * MIB) as usize;
    assert!(read_at(&s.src, 42 * MIB, tail) == read_at(&other, 42 * MIB, tail));
    let root = s.tmp.path("root-restored.ext4");
    std::fs::write(&root, read_at(&other, 2 * MIB, 40 * MIB as usize)).unwrap();
    sh("e2fsck", &["-fn", p(&root)]);
}

#[test]
fn ctrl_c_during_apply_finishes_the_write_and_says_what_is_left() {
    let s = setup();
    let target = s.tmp.path("blank.img");
    for (point, expect) in [
        ("after-chunk:3:sigint", "partly written: 3 of"),
        (
            "before-table-primary:1:sigint",
            "written: partition data, boot regions, ESP files, GPT backup",
        ),
    ] {
        blank(&target, DISK);
        let o = restore_env(
            &[
                "apply",
                "--store",
                &s.tmp.store(),
                "--yes",
                "--no-progress",
                "--jobs",
                "1",
                p(&target),
            ],
            &[("RESTORE_FAILPOINT", point)],
        );
        assert_eq!(o.status.code(), Some(130), "{point}: {}", text(&o));
        let err = error_line(&["apply", point], &o);
        assert!(
            err.contains(expect)
                && err.contains("partition table not written; run plan and apply again"),
            "{point}: {err}"
        );
        // The table was not written: the disk does not look finished, and plan + apply finish it.
        assert_eq!(read_at(&target, 512, 8), vec![0u8; 8], "{point}");
        apply_store(&s.tmp, &target);
        assert_same(&s.src, &target);
    }
}

/// The read-back after the writes catches a chunk that changed on the target after it was
/// written (a disk that lies, a second writer): apply fails with one line naming the chunk.
/// The test changes a written chunk while apply pauses before its check.
#[test]
fn a_chunk_changed_after_writing_fails_the_read_back_check() {
    use std::io::{BufRead, BufReader};
    let s = setup();
    let target = s.tmp.path("blank.img");
    blank(&target, DISK);
    let mut child = std::process::Command::new(hooks_bin())
        .args([
            "apply",
            "--store",
            &s.tmp.store(),
            "--yes",
            "--no-progress",
            p(&target),
        ])
        .env("RESTORE_FAILPOINT", "before-verify:1:pause=2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running restore");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("apply never paused before its check: {lines:?}");
        }
        let paused = line.contains("failpoint before-verify:1 reached");
        lines.push(line);
        if paused {
            break;
        }
    }
    // A data chunk of partition 5 that apply has just written.
    assert_eq!(
        read_at(&target, DATA5 + 100, 64),
        read_at(&s.src, DATA5 + 100, 64)
    );
    write_at(&target, DATA5 + 100, b"changed behind apply's back");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "apply passed its check: {lines:?} {rest}"
    );
    let last = rest.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains("verify: chunk")
            && last.contains("does not match the snapshot after writing"),
        "{last}"
    );
}

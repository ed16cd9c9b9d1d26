//! Bad input: one clear error line, no panic, and the target's bytes unchanged.

mod common;
use common::*;
use std::path::{Path, PathBuf};

struct Setup {
    tmp: Tmp,
    src: PathBuf,
    target: PathBuf,
}

/// A snapshot, and a target that needs a table, boot code and data written.
fn setup() -> Setup {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("target.img");
    std::fs::copy(&src, &target).unwrap();
    write_at(&target, 0, &[0u8; 1024]); // boot code, MBR and GPT primary header
    write_at(&target, 4 * MIB, &random_bytes(9, MIB as usize)); // root filesystem data
    Setup { tmp, src, target }
}

fn manifest_path(s: &Setup) -> PathBuf {
    manifest_files(&s.tmp, "web-3").remove(0)
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[track_caller]
fn refused_unchanged(s: &Setup, args: &[&str], expect: &str) {
    let before = file_hash(&s.target);
    let err = fails(args);
    assert!(
        err.to_lowercase().contains(expect),
        "expected {expect:?} in: {err}"
    );
    assert_eq!(
        before,
        file_hash(&s.target),
        "the target changed although restore refused: {err}"
    );
}

#[test]
fn store_does_not_exist() {
    let s = setup();
    let missing = s.tmp.path("no-such-store").display().to_string();
    refused_unchanged(&s, &["plan", "--store", &missing, p(&s.target)], "no store");
    refused_unchanged(
        &s,
        &["apply", "--store", &missing, "--yes", p(&s.target)],
        "no store",
    );
    assert!(!s.tmp.path("no-such-store").exists());
}

#[test]
fn manifest_is_not_json() {
    let s = setup();
    std::fs::write(manifest_path(&s), b"{ this is not json").unwrap();
    refused_unchanged(
        &s,
        &["apply", "--store", &s.tmp.store(), "--yes", p(&s.target)],
        "manifest",
    );
    // The listing goes on, and says which snapshot it cannot use and why.
    let out = ok(&["snapshots", "--store", &s.tmp.store()]);
    assert!(
        out.contains("refused web-3/") && out.contains("manifest"),
        "{out}"
    );
}

#[test]
fn manifest_references_a_missing_index() {
    let s = setup();
    for f in objects(&s.tmp.path("store/indexes")) {
        std::fs::remove_file(f).unwrap();
    }
    refused_unchanged(
        &s,
        &["apply", "--store", &s.tmp.store(), "--yes", p(&s.target)],
        "index",
    );
}

#[test]
fn truncated_index_is_refused() {
    let s = setup();
    for f in objects(&s.tmp.path("store/indexes")) {
        std::fs::write(&f, &std::fs::read(&f).unwrap()[..10]).unwrap();
    }
    refused_unchanged(
        &s,
        &["apply", "--store", &s.tmp.store(), "--yes", p(&s.target)],
        "index",
    );
}

/// The chunk that the damaged root-filesystem chunk needs.
fn needed_chunk(s: &Setup) -> PathBuf {
    let plan = plan_json(&s.tmp, &s.target, &[]);
    let action = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "partition 2")
        .unwrap()
        .clone();
    assert_eq!(action["chunks_to_write"], 1);
    let wanted = read_at(&s.src, 4 * MIB, MIB as usize);
    let id = blake3::hash(&wanted).to_hex().to_string();
    s.tmp.path(&format!("store/chunks/{}/{}", &id[..2], id))
}

#[test]
fn missing_chunk_is_found_by_the_plan() {
    let s = setup();
    std::fs::remove_file(needed_chunk(&s)).unwrap();
    refused_unchanged(
        &s,
        &["plan", "--store", &s.tmp.store(), p(&s.target)],
        "missing",
    );
}

#[test]
fn chunk_lost_after_planning_stops_apply_before_the_table() {
    let s = setup();
    let plan = s.tmp.path("plan.json");
    ok(&[
        "plan",
        "--store",
        &s.tmp.store(),
        "-o",
        p(&plan),
        "--no-progress",
        p(&s.target),
    ]);
    std::fs::remove_file(needed_chunk(&s)).unwrap();
    let err = fails(&["apply", "--yes", "--no-progress", p(&plan)]);
    assert!(err.contains("missing"), "{err}");
    assert_eq!(
        read_at(&s.target, 0, 1024),
        vec![0u8; 1024],
        "the table must not be written"
    );
}

#[test]
fn corrupt_chunk_stops_apply_before_the_table() {
    let s = setup();
    let chunk = needed_chunk(&s);
    // Valid zstd, wrong bytes: only the hash check can catch it.
    let wrong = zstd::bulk::compress(&random_bytes(1234, MIB as usize), 1).unwrap();
    std::fs::write(&chunk, wrong).unwrap();
    let before = file_hash(&s.target);
    let err = fails(&[
        "apply",
        "--store",
        &s.tmp.store(),
        "--yes",
        "--no-progress",
        p(&s.target),
    ]);
    assert!(
        err.contains("corrupt")
            && err.contains(&chunk.file_name().unwrap().to_string_lossy()[..12]),
        "{err}"
    );
    assert_eq!(
        read_at(&s.target, 0, 1024),
        vec![0u8; 1024],
        "the table must not be written"
    );
    // The bad chunk was never written either: the data phase verifies before writing.
    assert_eq!(before, file_hash(&s.target));
    // Garbage that is not zstd at all is reported the same way.
    std::fs::write(&chunk, b"garbage").unwrap();
    refused_unchanged(
        &s,
        &[
            "apply",
            "--store",
            &s.tmp.store(),
            "--yes",
            "--no-progress",
            p(&s.target),
        ],
        "corrupt",
    );
}

#[test]
fn target_too_small() {
    let s = setup();
    let small = s.tmp.path("small.img");
    blank(&small, 48 * MIB);
    write_at(&small, 0, &random_bytes(3, 4096));
    let before = file_hash(&small);
    let err = fails(&["apply", "--store", &s.tmp.store(), "--yes", p(&small)]);
    assert!(err.contains("too small"), "{err}");
    assert_eq!(before, file_hash(&small));
}

#[test]
fn disk_does_not_exist() {
    let s = setup();
    let missing = s.tmp.path("nope.img");
    let err = fails(&["plan", "--store", &s.tmp.store(), p(&missing)]);
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(&[
        "capture",
        "--store",
        &s.tmp.store(),
        "--host",
        "x",
        p(&missing),
    ]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists());
}

#[test]
fn apply_without_yes_and_without_a_terminal_refuses() {
    let s = setup();
    let before = file_hash(&s.target);
    let o = std::process::Command::new(bin())
        .args([
            "apply",
            "--store",
            &s.tmp.store(),
            "--no-progress",
            p(&s.target),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--yes"), "{}", text(&o));
    assert_eq!(before, file_hash(&s.target));
}

#[test]
fn bad_host_and_snapshot_names() {
    let s = setup();
    refused_unchanged(
        &s,
        &[
            "plan",
            "--store",
            &s.tmp.store(),
            "--host",
            "../etc",
            p(&s.target),
        ],
        "host name",
    );
    refused_unchanged(
        &s,
        &[
            "plan",
            "--store",
            &s.tmp.store(),
            "--snapshot",
            "nope",
            p(&s.target),
        ],
        "no snapshot",
    );
    refused_unchanged(
        &s,
        &[
            "plan",
            "--store",
            &s.tmp.store(),
            "--host",
            "other",
            p(&s.target),
        ],
        "no snapshot",
    );
    refused_unchanged(&s, &["apply", "--yes", p(&s.src)], "not a restore plan");
}

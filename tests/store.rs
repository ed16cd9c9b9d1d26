//! The store: dedup within and across snapshots and hosts, and captures that die mid-way.

mod common;
use common::*;

fn chunk_count(tmp: &Tmp) -> usize {
    count_files(&tmp.path("store/chunks"))
}

#[test]
fn capturing_the_same_disk_twice_adds_no_chunks() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    let first = capture(&tmp, "web-3", &[&src]);
    let chunks = chunk_count(&tmp);
    assert!(chunks > 5, "the first capture stores chunks ({chunks})");
    let out = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "web-3",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["new_chunks"], 0, "{out}");
    assert_eq!(chunk_count(&tmp), chunks);
    assert_ne!(report["snapshot_id"].as_str().unwrap(), first);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["snapshots", "--store", &tmp.store(), "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["id"], report["snapshot_id"], "latest sorts last");
}

#[test]
fn two_hosts_with_identical_partitions_share_chunks() {
    let tmp = Tmp::new();
    let a = tmp.path("a.img");
    gpt_server_disk(&a, 96 * MIB, &tmp);
    let b = tmp.path("b.img");
    std::fs::copy(&a, &b).unwrap();
    // Host b differs in one partition only.
    write_at(
        &b,
        (2048 + 2048 + 40 * 2048 + 8 * 2048) * 512,
        &random_bytes(77, MIB as usize),
    );
    capture(&tmp, "host-a", &[&a]);
    let before = chunk_count(&tmp);
    let out = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "host-b",
        "--json",
        "--no-progress",
        p(&b),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["new_chunks"], 1,
        "only the changed chunk is new: {out}"
    );
    assert_eq!(chunk_count(&tmp), before + 1);
    let hosts = ok(&["snapshots", "--store", &tmp.store()]);
    assert!(
        hosts.contains("host-a") && hosts.contains("host-b"),
        "{hosts}"
    );
    let only_b = ok(&[
        "snapshots",
        "--store",
        &tmp.store(),
        "--host",
        "host-b",
        "--json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&only_b)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Each host restores its own bytes.
    let t = tmp.path("t.img");
    blank(&t, 96 * MIB);
    ok(&[
        "apply",
        "--store",
        &tmp.store(),
        "--host",
        "host-b",
        "--yes",
        "--no-progress",
        p(&t),
    ]);
    assert_same(&b, &t);
}

#[test]
fn capture_killed_mid_way_leaves_no_snapshot_and_a_second_capture_works() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    let store = tmp.store();
    for point in ["after-chunk-stored:3", "before-manifest:1"] {
        let o = restore_env(
            &[
                "capture",
                "--store",
                &store,
                "--host",
                "web-3",
                "--no-progress",
                p(&src),
            ],
            &[("RESTORE_FAILPOINT", point)],
        );
        assert!(!o.status.success(), "capture should have died at {point}");
        let list = ok(&["snapshots", "--store", &store, "--json"]);
        assert_eq!(
            list.trim(),
            "[]",
            "no snapshot after a capture killed at {point}"
        );
        let err = fails(&["plan", "--store", &store, p(&src)]);
        assert!(err.contains("no snapshot"), "{err}");
    }
    // A real SIGKILL at an arbitrary moment, repeated at a few delays.
    for delay_ms in [20u64, 60, 150] {
        let mut child = std::process::Command::new(bin())
            .args([
                "capture",
                "--store",
                &store,
                "--host",
                "web-3",
                "--no-progress",
                p(&src),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let list: serde_json::Value =
            serde_json::from_str(&ok(&["snapshots", "--store", &store, "--json"])).unwrap();
        if !status.success() {
            // Killed: whatever it left, any listed snapshot must restore completely.
            for s in list.as_array().unwrap() {
                let t = tmp.path("check.img");
                blank(&t, 96 * MIB);
                ok(&[
                    "apply",
                    "--store",
                    &store,
                    "--snapshot",
                    s["id"].as_str().unwrap(),
                    "--yes",
                    "--no-progress",
                    p(&t),
                ]);
                assert_same(&src, &t);
            }
        }
    }
    let id = capture(&tmp, "web-3", &[&src]);
    let t = tmp.path("t.img");
    blank(&t, 96 * MIB);
    ok(&[
        "apply",
        "--store",
        &store,
        "--snapshot",
        &id,
        "--yes",
        "--no-progress",
        p(&t),
    ]);
    assert_same(&src, &t);
}

#[test]
fn chunk_size_is_fixed_per_store_and_bounded() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    let err = fails(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "h",
        "--chunk-size",
        "4096",
        p(&src),
    ]);
    assert!(err.contains("chunk size"), "{err}");
    assert!(
        !tmp.path("store").exists(),
        "a refused capture creates no store"
    );
    ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "h",
        "--chunk-size",
        "262144",
        "--no-progress",
        p(&src),
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path("store/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["chunk_size"], 262144);
    assert_eq!(cfg["hash"], "blake3");
    assert_eq!(cfg["compression"], "zstd");
    let err = fails(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "h",
        "--chunk-size",
        "1048576",
        p(&src),
    ]);
    assert!(err.contains("262144"), "{err}");
    let t = tmp.path("t.img");
    blank(&t, 96 * MIB);
    apply_store(&tmp, &t);
    assert_same(&src, &t);
}

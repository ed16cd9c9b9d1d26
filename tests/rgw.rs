//! S3 against a real Ceph RADOS Gateway (Debian's radosgw on a single-node memstore cluster
//! that scripts/rgw.sh starts on 127.0.0.1): full and minimal restores, four hosts capturing
//! into one bucket at once, and retries through tests/fault_proxy.py in front of the gateway.
//! scripts/test.sh and CI run it; a bare `cargo test` skips it unless RESTORE_TEST_RGW=1 (a
//! cluster takes seconds to start and ~1 GiB of memory). One cluster serves every case, which
//! run in sequence in one test.

mod common;
use common::servers::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SIZE: u64 = 96 * MIB;

fn restore_cmd(args: &[&str], env: &[(String, String)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_remove("RESTORE_FAILPOINT");
    // Only the variables given here reach restore: nothing from the caller's own AWS setup.
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "RESTORE_STORE",
    ] {
        c.env_remove(k);
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

#[track_caller]
fn check(args: &[&str], o: Output) -> String {
    assert!(o.status.success(), "restore {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn run_ok(args: &[&str], env: &[(String, String)]) -> String {
    let o = restore_cmd(args, env).output().expect("running restore");
    check(args, o)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// `restore COMMAND --store STORE --host HOST EXTRA... DISK` against the cluster; its stdout.
fn restore_on(
    command: &str,
    store: &str,
    host: &str,
    extra: &[&str],
    disk: &Path,
    env: &[(String, String)],
) -> String {
    let mut args = vec![command, "--store", store, "--host", host, "--no-progress"];
    args.extend_from_slice(extra);
    args.push(p(disk));
    run_ok(&args, env)
}

fn capture_s3(store: &str, host: &str, disk: &Path, env: &[(String, String)]) -> serde_json::Value {
    json(&restore_on("capture", store, host, &["--json"], disk, env))
}

fn apply(store: &str, host: &str, target: &Path, env: &[(String, String)]) {
    restore_on("apply", store, host, &["--yes"], target, env);
}

fn plan_totals(
    store: &str,
    host: &str,
    target: &Path,
    env: &[(String, String)],
) -> serde_json::Value {
    json(&restore_on("plan", store, host, &["--json"], target, env))["totals"].clone()
}

/// The sample server disk with `seed`'s own 2 MiB in partition 5, so hosts differ.
fn host_disk(tmp: &Tmp, base: &Path, name: &str, seed: u64) -> PathBuf {
    let d = tmp.path(name);
    std::fs::copy(base, &d).unwrap();
    write_at(&d, DATA5 + 20 * MIB, &random_bytes(seed, 2 * MIB as usize));
    d
}

#[test]
fn rgw_restores_captures_fleets_and_survives_faults() {
    if !rgw_wanted("rgw_restores_captures_fleets_and_survives_faults") {
        return;
    }
    let tmp = Tmp::new();
    // A fixed place under target/: a rerun after a killed run stops what that run left.
    let rgw = Rgw::start(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("rgw-cluster"));
    let src = tmp.path("src.img");
    gpt_server_disk(&src, SIZE, &tmp);

    full_and_minimal_restore(&tmp, &rgw, &src);
    four_hosts_capture_at_once(&tmp, &rgw, &src);
    faults_between_restore_and_rgw(&tmp, &rgw, &src);
}

fn full_and_minimal_restore(tmp: &Tmp, rgw: &Rgw, src: &Path) {
    let env = s3_env(rgw.port);
    let store = "s3://backups/single";
    let first = capture_s3(store, "web-3", src, &env);
    assert!(first["new_chunks"].as_u64().unwrap() > 5, "{first}");
    let again = capture_s3(store, "web-3", src, &env);
    assert_eq!(
        again["new_chunks"], 0,
        "RGW dedups a second capture: {again}"
    );

    let t = tmp.path("full.img");
    blank(&t, SIZE);
    apply(store, "web-3", &t, &env);
    assert_same(src, &t);

    // Boot code, the GPT header and two data chunks damaged: only those come back.
    let d = damaged_copy(tmp, src);
    let totals = plan_totals(store, "web-3", &d, &env);
    let fetch = totals["bytes_to_fetch"].as_u64().unwrap();
    let write = totals["bytes_to_write"].as_u64().unwrap();
    assert!(
        fetch > 0 && fetch <= 4 * MIB && write <= 4 * MIB,
        "a minimal restore fetches and writes a few chunks: {totals}"
    );
    apply(store, "web-3", &d, &env);
    assert_same(src, &d);
    let after = plan_totals(store, "web-3", &d, &env);
    assert_eq!(after["components_to_write"], 0, "nothing left: {after}");
    eprintln!("RGW: full restore and a minimal one ({fetch} bytes fetched) byte-equal");
}

fn four_hosts_capture_at_once(tmp: &Tmp, rgw: &Rgw, src: &Path) {
    let env = s3_env(rgw.port);
    let store = "s3://backups/fleet";
    let hosts = ["web-1", "web-2", "web-3", "web-4"];
    let disks: Vec<PathBuf> = hosts
        .iter()
        .zip(100..)
        .map(|(h, seed)| host_disk(tmp, src, &format!("{h}.img"), seed))
        .collect();
    let children: Vec<_> = hosts
        .iter()
        .zip(&disks)
        .map(|(h, d)| {
            let args = [
                "capture",
                "--store",
                store,
                "--host",
                h,
                "--json",
                "--no-progress",
                p(d),
            ];
            let child = restore_cmd(&args, &env)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting restore capture");
            (*h, child)
        })
        .collect();
    for (h, child) in children {
        let o = child
            .wait_with_output()
            .expect("waiting for restore capture");
        let out = check(&["capture", "--host", h], o);
        assert!(json(&out)["snapshot_id"].is_string(), "{h}: {out}");
    }

    let list = json(&run_ok(&["snapshots", "--store", store, "--json"], &env));
    let mut listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["host"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, hosts, "one snapshot per host: {list}");
    // The catalogue that HTTP readers use was rewritten by four writers at once: it must
    // still name every host.
    let top = rgw
        .get("backups/fleet/snapshots/index.json")
        .expect("snapshots/index.json in the bucket");
    let top = json(&String::from_utf8_lossy(&top));
    let mut named: Vec<&str> = top["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("catalogue without hosts: {top}"))
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    named.sort();
    assert_eq!(named, hosts, "the catalogue lists all four hosts: {top}");

    for (h, d) in hosts.iter().zip(&disks) {
        let t = tmp.path(&format!("{h}-restored.img"));
        blank(&t, SIZE);
        apply(store, h, &t, &env);
        assert_same(d, &t);
        std::fs::remove_file(&t).unwrap();
    }
    eprintln!("RGW: four hosts captured at once, each restored byte-equal");
}

fn faults_between_restore_and_rgw(tmp: &Tmp, rgw: &Rgw, src: &Path) {
    let proxy = fault_proxy(
        tmp,
        free_port(),
        rgw.port,
        &[
            "--p503",
            "0.1",
            "--p429",
            "0.05",
            "--preset",
            "0.2",
            "--ptruncate",
            "0.05",
            "--delay",
            "0.01",
            "--seed",
            "5",
        ],
    );
    let env = s3_env(proxy.port);
    let store = "s3://backups/faults";
    capture_s3(store, "web-3", src, &env);
    let t = tmp.path("faults.img");
    blank(&t, SIZE);
    apply(store, "web-3", &t, &env);
    assert_same(src, &t);
    let stats = proxy_stats(&proxy);
    for fault in ["503", "429", "reset", "truncate"] {
        assert!(stats[fault].as_u64().unwrap() > 0, "no {fault}: {stats}");
    }
    eprintln!("RGW through the fault proxy: {stats}");
}

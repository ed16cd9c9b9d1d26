//! A store to trust for years: signed snapshots refused when tampered with, manifests bound to
//! where they are, damaged chunks found by `check` and healed by the next capture, retention
//! with `forget` and `prune` (also racing captures), and many hosts capturing at once.

mod common;
use common::servers::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const DISK: u64 = 16 * MIB;

/// A small GPT disk: one partition of random data (seeded), so versions differ by chunk.
fn small_disk(path: &Path, seed: u64) {
    blank(path, DISK);
    sh("sgdisk", &["-n1:2048:0", "-t1:8300", "-U", "R", p(path)]);
    write_at(path, MIB, &random_bytes(seed, 12 * MIB as usize));
}

/// Version `k` of a disk: chunk `k % 12` of its partition rewritten.
fn version(base: &Path, out: &Path, k: u64) {
    std::fs::copy(base, out).unwrap();
    write_at(
        out,
        MIB + (k % 12) * MIB,
        &random_bytes(1000 + k, MIB as usize),
    );
}

fn key_pair(tmp: &Tmp, name: &str) -> (PathBuf, PathBuf, String) {
    let (sk, pk) = (
        tmp.path(&format!("{name}.key")),
        tmp.path(&format!("{name}.pub")),
    );
    let out = ok(&["key", "generate", "--secret", p(&sk), "--public", p(&pk)]);
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert_eq!(id.len(), 16, "{out}");
    (sk, pk, id)
}

fn capture_with(
    tmp: &Tmp,
    host: &str,
    disk: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let store = tmp.store();
    let mut args = vec![
        "capture",
        "--store",
        &store,
        "--host",
        host,
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    args.push(p(disk));
    let o = restore_env(&args, env);
    assert!(o.status.success(), "capture failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn signed_snapshots_verify_and_every_tampering_is_refused() {
    let tmp = Tmp::new();
    let (sk, pk, id) = key_pair(&tmp, "fleet");
    let (sk2, _, id2) = key_pair(&tmp, "intruder");
    let src = tmp.path("src.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    let signed = capture_with(&tmp, "web-3", &src, &["--sign-key", p(&sk)], &[]);
    let store = tmp.store();
    // minisign itself accepts the signature: the files are minisign's.
    let manifest = tmp.path(&format!("store/snapshots/web-3/{signed}.json"));
    let o = Command::new("minisign")
        .args(["-V", "-q", "-p", p(&pk), "-m", p(&manifest)])
        .arg("-x")
        .arg(format!("{}.minisig", manifest.display()))
        .output()
        .expect("minisign (scripts/test.sh installs it)");
    assert!(o.status.success(), "minisign -V: {}", text(&o));

    let target = tmp.path("t.img");
    blank(&target, 96 * MIB);
    let human = ok(&[
        "plan",
        "--store",
        &store,
        "--trust",
        p(&pk),
        "--no-progress",
        p(&target),
    ]);
    assert!(
        human.contains(&format!("snapshot verified: signed by key {id}")),
        "{human}"
    );
    let unverified = ok(&["plan", "--store", &store, "--no-progress", p(&target)]);
    assert!(
        unverified.contains("snapshot not verified: no --trust key given"),
        "{unverified}"
    );
    let o = restore_env(
        &[
            "apply",
            "--store",
            &store,
            "--yes",
            "--no-progress",
            p(&target),
        ],
        &[("RESTORE_TRUST", p(&pk))],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&src, &target);

    let victim = tmp.path("victim.img");
    std::fs::copy(&src, &victim).unwrap();
    write_at(&victim, 0, &[0u8; 440]);
    let before = file_hash(&victim);
    let refused = |what: &str, args: &[&str], expect: &str| {
        let mut all = vec!["apply", "--store", &store, "--trust", p(&pk), "--yes"];
        all.extend_from_slice(args);
        all.push(p(&victim));
        let err = fails(&all);
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(before, file_hash(&victim), "{what}: the target changed");
    };
    // A manifest edited by one byte (its signature no longer matches).
    let original = std::fs::read(&manifest).unwrap();
    let mut edited = original.clone();
    let at = edited.windows(4).position(|w| w == b"disk").unwrap();
    edited[at] = b'D';
    std::fs::write(&manifest, &edited).unwrap();
    refused("one byte edited", &[], "does not match its signature");
    std::fs::write(&manifest, &original).unwrap();
    // The manifest and its signature copied into another host's folder.
    let other_dir = tmp.path("store/snapshots/web-4");
    std::fs::create_dir_all(&other_dir).unwrap();
    for f in [format!("{signed}.json"), format!("{signed}.json.minisig")] {
        std::fs::copy(manifest.parent().unwrap().join(&f), other_dir.join(&f)).unwrap();
    }
    refused(
        "copied to another host",
        &["--host", "web-4"],
        &format!("was made for \"restore snapshot web-3/{signed}\""),
    );
    let err = fails(&["show", &signed, "--store", &store, "--host", "web-4"]);
    assert!(err.contains("bound to where it is stored"), "{err}");
    std::fs::remove_dir_all(&other_dir).unwrap();
    // Signed by another key, and not signed at all (each the newest: latest would take it).
    let by_intruder = capture_with(&tmp, "web-3", &src, &["--sign-key", p(&sk2)], &[]);
    refused(
        "another key",
        &["--snapshot", &by_intruder],
        &format!("signed by key {id2}, which is not trusted"),
    );
    let unsigned = capture_with(&tmp, "web-3", &src, &[], &[]);
    refused("unsigned", &["--snapshot", &unsigned], "is not signed");
    // `latest` under --trust is the newest snapshot that verifies: the first one.
    let plan: Value = serde_json::from_str(&ok(&[
        "plan",
        "--store",
        &store,
        "--trust",
        p(&pk),
        "--json",
        "--no-progress",
        p(&victim),
    ]))
    .unwrap();
    assert_eq!(plan["snapshot"], signed.as_str());
    assert_eq!(plan["signed_by"], id.as_str());
    let list = ok(&["snapshots", "--store", &store, "--trust", p(&pk)]);
    assert!(
        list.contains(&format!("refused web-3/{unsigned}")),
        "{list}"
    );
    // A saved plan made with a trusted key is applied only with one.
    let saved = tmp.path("plan.json");
    ok(&[
        "plan",
        "--store",
        &store,
        "--trust",
        p(&pk),
        "-o",
        p(&saved),
        "--no-progress",
        p(&victim),
    ]);
    let err = fails(&["apply", "--yes", p(&saved)]);
    assert!(err.contains("give --trust"), "{err}");
    ok(&[
        "apply",
        "--yes",
        "--trust",
        p(&pk),
        "--no-progress",
        p(&saved),
    ]);
    assert_same(&src, &victim);
}

/// A manifest whose host names a folder outside the store, next to a valid manifest out there:
/// nothing outside `snapshots/` is ever opened, so the command fails.
#[test]
fn a_manifest_that_points_outside_the_store_opens_nothing_outside() {
    let tmp = Tmp::new();
    let src = tmp.path("src.img");
    small_disk(&src, 1);
    let id = capture_with(&tmp, "web-3", &src, &[], &[]);
    let path = manifest_files(&tmp, "web-3").remove(0);
    let good = std::fs::read_to_string(&path).unwrap();
    // Outside the store, a valid manifest for host "../../outside".
    let outside = tmp.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join(format!("{id}.json")),
        good.replace("\"host\": \"web-3\"", "\"host\": \"../../outside\""),
    )
    .unwrap();
    std::fs::write(
        &path,
        good.replace("\"host\": \"web-3\"", "\"host\": \"../../outside\""),
    )
    .unwrap();
    for args in [
        vec!["show", "latest", "--store", &tmp.store()],
        vec![
            "show",
            &id,
            "--store",
            &tmp.store(),
            "--host",
            "../../outside",
        ],
    ] {
        let err = fails(&args);
        assert!(err.contains("not allowed"), "{args:?}: {err}");
    }
}

fn chunk_files(tmp: &Tmp) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(tmp.path("store/chunks")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn check_json(store: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["check", "--store", store, "--json", "--no-progress"];
    args.extend_from_slice(extra);
    let o = restore(&args);
    let code = o.status.code().unwrap();
    assert!(matches!(code, 0 | 3), "{}", text(&o));
    (code, serde_json::from_slice(&o.stdout).expect("check JSON"))
}

#[test]
fn damaged_chunks_are_found_by_check_and_healed_by_the_next_capture() {
    let tmp = Tmp::new();
    let src = tmp.path("src.img");
    small_disk(&src, 2);
    let id = capture_with(&tmp, "web-3", &src, &[], &[]);
    let store = tmp.store();
    assert_eq!(check_json(&store, &[]).0, 0);
    let chunks = chunk_files(&tmp);
    assert!(chunks.len() >= 12, "{chunks:?}");
    // A power cut left one chunk empty and another half written.
    std::fs::write(&chunks[0], b"").unwrap();
    let half = std::fs::read(&chunks[1]).unwrap();
    std::fs::write(&chunks[1], &half[..half.len() / 2]).unwrap();
    let (code, report) = check_json(&store, &[]);
    assert_eq!(code, 3, "{report:#}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{report:#}");
    for p in problems {
        assert_eq!(p["breaks"][0], format!("web-3/{id}"), "{p:#}");
    }
    let human = restore(&["check", "--store", &store, "--no-progress"]);
    assert_eq!(human.status.code(), Some(3));
    assert!(
        text(&human).contains("is empty") && text(&human).contains("truncated"),
        "{}",
        text(&human)
    );
    // The next capture finds both and writes them again.
    let o = restore(&[
        "capture",
        "--store",
        &store,
        "--host",
        "web-3",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["repaired_chunks"].as_array().unwrap().len(), 2, "{r:#}");
    assert_eq!(check_json(&store, &[]).0, 0);
    // Flipped bytes inside a frame: only reading the data finds them.
    let mut flipped = std::fs::read(&chunks[2]).unwrap();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    std::fs::write(&chunks[2], &flipped).unwrap();
    assert_eq!(
        check_json(&store, &[]).0,
        0,
        "sizes and frames are still plausible"
    );
    let (code, report) = check_json(&store, &["--read-data"]);
    assert_eq!(code, 3, "{report:#}");
    assert!(
        report["problems"][0]["object"]
            .as_str()
            .unwrap()
            .ends_with(&chunks[2].file_name().unwrap().to_string_lossy().to_string())
    );
    assert!(report["bytes_read"].as_u64().unwrap() >= 12 * MIB);
    // capture --verify-existing reads every chunk it reuses, and heals this one too.
    let o = restore(&[
        "capture",
        "--store",
        &store,
        "--host",
        "web-3",
        "--verify-existing",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["repaired_chunks"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(check_json(&store, &["--read-data"]).0, 0);
    let t = tmp.path("t.img");
    blank(&t, DISK);
    apply_store(&tmp, &t);
    assert_same(&src, &t);
}

#[test]
fn damaged_chunks_on_s3_are_found_and_healed() {
    let tmp = Tmp::new();
    let src = tmp.path("src.img");
    small_disk(&src, 3);
    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "bkt");
    let env = s3_env(s3.port);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let store = "s3://bkt/fleet";
    let run = |args: &[&str]| restore_env(args, &env_ref);
    let o = run(&[
        "capture",
        "--store",
        store,
        "--host",
        "web-3",
        "--no-progress",
        p(&src),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Two chunk objects replaced: one empty, one cut in half.
    let list = http_request(s3.port, "GET /bkt?prefix=fleet/chunks/ HTTP/1.1");
    let keys: Vec<&str> = list
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    assert!(keys.len() >= 12, "{list}");
    http_put(s3.port, &format!("/bkt/{}", keys[0]), b"");
    http_put(
        s3.port,
        &format!("/bkt/{}", keys[1]),
        &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
    );
    let o = run(&["check", "--store", store, "--json", "--no-progress"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!r["problems"].as_array().unwrap().is_empty(), "{r:#}");
    let o = run(&[
        "capture",
        "--store",
        store,
        "--host",
        "web-3",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["repaired_chunks"].as_array().unwrap().len(), 2, "{r:#}");
    let o = run(&["check", "--store", store, "--read-data", "--no-progress"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Writes raw bytes to an object of moto's bucket, as a damaged store would hold them.
fn http_put(port: u16, path: &str, body: &[u8]) {
    let (bucket, key) = path.trim_start_matches('/').split_once('/').unwrap();
    let script = format!(
        "import boto3, sys\n\
         s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', aws_access_key_id='a', aws_secret_access_key='b', region_name='us-east-1')\n\
         s3.put_object(Bucket='{bucket}', Key='{key}', Body=bytes.fromhex('{}'))\n",
        body.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    sh("python3", &["-c", &script]);
}

#[test]
fn forget_keeps_exactly_the_policy_and_prune_leaves_nothing_unreferenced() {
    let tmp = Tmp::new();
    let base = tmp.path("base.img");
    small_disk(&base, 4);
    // Noon of every day from 2024-02-02 to 2024-03-01, and 06:00 on 2024-02-29: 30 snapshots.
    let feb1_noon = 1_706_788_800u64; // 2024-02-01T12:00:00Z
    let mut times: Vec<(u64, u64)> = (1..=29).map(|d| (d, feb1_noon + d * 86_400)).collect();
    times.push((30, feb1_noon + 28 * 86_400 - 6 * 3600));
    let disk = tmp.path("v.img");
    let mut ids = std::collections::BTreeMap::new();
    for &(k, t) in &times {
        version(&base, &disk, k);
        let id = capture_with(
            &tmp,
            "web-3",
            &disk,
            &[],
            &[("RESTORE_NOW", &t.to_string())],
        );
        ids.insert(t, (k, id));
    }
    assert_eq!(ids.len(), 30);
    let store = tmp.store();
    let policy = [
        "--keep-last",
        "2",
        "--keep-daily",
        "4",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "2",
    ];
    let mut dry = vec!["forget", "--store", &store, "--dry-run", "--json"];
    dry.extend_from_slice(&policy);
    let verdicts: Value = serde_json::from_str(&ok(&dry)).unwrap();
    let kept: Vec<String> = verdicts["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["keep"] == true)
        .map(|v| v["created"].as_str().unwrap()[..13].to_string())
        .collect();
    // Worked out by hand: last 2 = Mar 1, Feb 29 noon; daily 4 adds Feb 28, Feb 27; ISO weeks
    // 9, 8, 7 end on Mar 1 (Fri), Feb 25 (Sun), Feb 18 (Sun); months: Mar 1, Feb 29 noon.
    assert_eq!(
        kept,
        [
            "2024-03-01T12",
            "2024-02-29T12",
            "2024-02-28T12",
            "2024-02-27T12",
            "2024-02-25T12",
            "2024-02-18T12"
        ]
    );
    assert_eq!(
        manifest_files(&tmp, "web-3").len(),
        30,
        "a dry run changes nothing"
    );
    let mut real = vec!["forget", "--store", &store, "--prune", "--no-progress"];
    real.extend_from_slice(&policy);
    let out = ok(&real);
    assert!(out.contains("forgot 24 of 30"), "{out}");
    assert_eq!(manifest_files(&tmp, "web-3").len(), 6);
    // Every object left is referenced, and every kept snapshot restores byte-equal.
    let (code, report) = check_json(&store, &["--read-data"]);
    assert_eq!(code, 0, "{report:#}");
    let files = chunk_files(&tmp).len() + count_files(&tmp.path("store/indexes"));
    assert_eq!(
        files as u64,
        report["objects"].as_u64().unwrap(),
        "unreferenced objects remain"
    );
    let t = tmp.path("t.img");
    for (t_secs, (k, id)) in &ids {
        let created = &verdicts["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id.as_str())
            .unwrap()["keep"];
        if created != true {
            continue;
        }
        version(&base, &disk, *k);
        blank(&t, DISK);
        ok(&[
            "apply",
            "--store",
            &store,
            "--snapshot",
            id,
            "--yes",
            "--no-progress",
            p(&t),
        ]);
        assert_same(&disk, &t);
        let _ = t_secs;
    }
}

#[test]
fn prune_racing_eight_captures_never_breaks_a_snapshot_that_completes() {
    let tmp = Tmp::new();
    let store = tmp.store();
    let disks: Vec<PathBuf> = (0..8)
        .map(|h| {
            let d = tmp.path(&format!("host{h}.img"));
            small_disk(&d, 100 + h);
            d
        })
        .collect();
    capture_with(&tmp, "host0", &disks[0], &[], &[]);
    for round in 0..3u64 {
        for (h, d) in disks.iter().enumerate() {
            write_at(
                d,
                MIB + (round % 12) * MIB,
                &random_bytes(round * 100 + h as u64, MIB as usize),
            );
        }
        let captures: Vec<std::process::Child> = disks
            .iter()
            .enumerate()
            .map(|(h, d)| {
                Command::new(bin())
                    .args([
                        "capture",
                        "--store",
                        &store,
                        "--host",
                        &format!("host{h}"),
                        "--no-progress",
                        p(d),
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Prune again and again while they run: it must give way, never break one.
        let mut pruned = 0;
        let mut gave_way = 0;
        for _ in 0..6 {
            let o = restore(&["prune", "--store", &store, "--wait", "1", "--no-progress"]);
            if o.status.success() {
                pruned += 1;
            } else {
                assert!(text(&o).contains("captures are running"), "{}", text(&o));
                gave_way += 1;
            }
        }
        for c in captures {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", text(&o));
        }
        eprintln!("round {round}: prune ran {pruned} times, gave way {gave_way} times");
        ok(&["forget", "--store", &store, "--keep-last", "1"]);
        ok(&["prune", "--store", &store, "--no-progress"]);
        let (code, report) = check_json(&store, &["--read-data"]);
        assert_eq!(code, 0, "round {round}: {report:#}");
        assert_eq!(report["snapshots"], 8);
    }
    let t = tmp.path("t.img");
    for (h, d) in disks.iter().enumerate() {
        blank(&t, DISK);
        ok(&[
            "apply",
            "--store",
            &store,
            "--host",
            &format!("host{h}"),
            "--yes",
            "--no-progress",
            p(&t),
        ]);
        assert_same(d, &t);
    }
}

#[test]
fn eight_hosts_capture_into_one_s3_bucket_at_once_and_all_are_listed() {
    let tmp = Tmp::new();
    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "fleet");
    let env = s3_env(s3.port);
    let store = "s3://fleet/nightly";
    let children: Vec<std::process::Child> = (0..8u64)
        .map(|h| {
            let d = tmp.path(&format!("h{h}.img"));
            small_disk(&d, 200 + h);
            let mut c = Command::new(bin());
            c.args([
                "capture",
                "--store",
                store,
                "--host",
                &format!("web-{h}"),
                "--no-progress",
                p(&d),
            ]);
            for (k, v) in &env {
                c.env(k, v);
            }
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let o = restore_env(&["snapshots", "--store", store, "--json"], &env_ref);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 8, "{list:#}");
    // A copy of the bucket served by a plain web server lists all 8 from its catalogues.
    let copy = tmp.path("copy");
    let script = format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', aws_access_key_id='a', aws_secret_access_key='b', region_name='us-east-1')\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket='fleet', Prefix='nightly/'):\n\
         \x20   for o in page.get('Contents', []):\n\
         \x20       path = os.path.join('{}', o['Key'][len('nightly/'):])\n\
         \x20       os.makedirs(os.path.dirname(path), exist_ok=True)\n\
         \x20       s3.download_file('fleet', o['Key'], path)\n",
        s3.port,
        copy.display()
    );
    sh("python3", &["-c", &script]);
    let web = web_server(&tmp, &copy);
    let list: Value =
        serde_json::from_str(&ok(&["snapshots", "--store", &web.url(), "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 8, "{list:#}");
}

//! Remote stores: a store directory served by a real static web server (python's http.server),
//! a real S3-compatible server (moto_server), a fault-injecting proxy in front of them
//! (tests/fault_proxy.py), and the errors a rescued host meets on a bad network.
//! Every server listens on 127.0.0.1 on a free port and is stopped when its guard drops.

mod common;
use common::servers::*;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SIZE: u64 = 96 * MIB;

/// Runs restore with extra variables, and without the ones named in `remove`.
fn run(args: &[&str], env: &[(String, String)], remove: &[&str]) -> Output {
    let mut c = Command::new(bin());
    c.args(args).env_remove("RESTORE_FAILPOINT");
    for k in remove {
        c.env_remove(k);
    }
    for (k, v) in env.iter().filter(|(k, _)| !remove.contains(&k.as_str())) {
        c.env(k, v);
    }
    c.output().expect("running restore")
}

#[track_caller]
fn run_ok(args: &[&str], env: &[(String, String)]) -> String {
    let o = run(args, env, &[]);
    assert!(o.status.success(), "restore {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command that must fail with one clear error line, quickly; returns that line.
#[track_caller]
fn run_fails(args: &[&str], env: &[(String, String)], remove: &[&str]) -> String {
    let started = Instant::now();
    let o = run(args, env, remove);
    let took = started.elapsed();
    let last = error_line(args, &o);
    assert!(
        took < Duration::from_secs(5),
        "{args:?} took {took:?} to fail: {last}"
    );
    eprintln!("{args:?} failed in {took:?}: {last}");
    last
}

/// `restore apply` of `host`'s latest snapshot from `store` onto `target`.
fn apply_args<'a>(store: &'a str, host: &'a str, target: &'a Path) -> [&'a str; 8] {
    [
        "apply",
        "--store",
        store,
        "--host",
        host,
        "--yes",
        "--no-progress",
        p(target),
    ]
}

/// `restore capture` of `src` as `host` into `store`.
fn capture_args<'a>(store: &'a str, host: &'a str, src: &'a Path) -> [&'a str; 7] {
    [
        "capture",
        "--store",
        store,
        "--host",
        host,
        "--no-progress",
        p(src),
    ]
}

fn apply(store: &str, target: &Path, env: &[(String, String)]) -> String {
    run_ok(
        &[
            "apply",
            "--store",
            store,
            "--yes",
            "--no-progress",
            p(target),
        ],
        env,
    )
}

fn plan_fetch_bytes(store: &str, target: &Path, env: &[(String, String)]) -> u64 {
    let out = run_ok(
        &[
            "plan",
            "--store",
            store,
            "--json",
            "--no-progress",
            p(target),
        ],
        env,
    );
    let plan: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    plan["totals"]["bytes_to_fetch"]
        .as_u64()
        .expect("bytes_to_fetch")
}

fn assert_minimal_restore(store: &str, src: &Path, damaged: &Path, env: &[(String, String)]) {
    let fetch = plan_fetch_bytes(store, damaged, env);
    assert!(
        fetch > 0 && fetch <= 4 * MIB,
        "a minimal restore fetches a few chunks, not {fetch} bytes"
    );
    apply(store, damaged, env);
    assert_same(src, damaged);
    assert_eq!(
        plan_fetch_bytes(store, damaged, env),
        0,
        "nothing left to do"
    );
}

fn captured(tmp: &Tmp) -> PathBuf {
    let src = tmp.path("src.img");
    gpt_server_disk(&src, SIZE, tmp);
    capture(tmp, "web-3", &[&src]);
    src
}

#[test]
fn http_store_restores_full_and_minimal_byte_equal() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let web = web_server(&tmp, &tmp.path("store"));
    let url = web.url();
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["snapshots", "--store", &url, "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    let t = tmp.path("t.img");
    blank(&t, SIZE);
    let before = web.log_text().lines().count();
    apply(&url, &t, &[]);
    assert_same(&src, &t);
    // Plan, apply's proof of it and the check afterwards read the same manifest, indexes and
    // table sectors: each object is fetched once per run (a round trip each on a far store).
    let mut gets: std::collections::BTreeMap<String, usize> = Default::default();
    for line in web.log_text().lines().skip(before) {
        if let Some(path) = line
            .split_once("\"GET ")
            .and_then(|(_, r)| r.split_once(' '))
            .map(|(path, _)| path.to_string())
        {
            *gets.entry(path).or_default() += 1;
        }
    }
    assert!(
        gets.keys().any(|k| k.starts_with("/indexes/")) && gets.len() > 10,
        "{gets:?}"
    );
    let twice: Vec<_> = gets.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
    assert_minimal_restore(&url, &src, &damaged_copy(&tmp, &src), &[]);

    // A copy of a store made without the catalogue still lists, from the index pages.
    std::fs::remove_file(tmp.path("store/snapshots/index.json")).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&ok(&["snapshots", "--store", &url, "--json"])).unwrap();
    assert_eq!(again, list);

    // A rescue system without any CA bundle still reaches a plain http:// store.
    let list_no_roots = run_ok(
        &["snapshots", "--store", &url, "--json"],
        &no_system_roots(),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list_no_roots).unwrap(),
        list
    );

    let err = fails(&["capture", "--store", &url, "--host", "web-3", p(&src)]);
    assert!(err.contains("read-only over HTTP"), "{err}");
}

/// A plan of a large restore from a web server learns which chunks the store holds from the
/// shards' directory index pages (one request names many chunks), not from a HEAD per chunk;
/// a chunk a page does not name is checked by itself, so a chunk gone from the store is
/// named and nothing is written, and a server without index pages still restores.
#[test]
fn http_plan_reads_shard_pages_instead_of_a_head_per_chunk() {
    let tmp = Tmp::new();
    let src = tmp.path("raw.img");
    blank(&src, 200 * MIB);
    sh("sgdisk", &["-n1:2048:0", "-t1:8300", p(&src)]);
    write_at(&src, MIB, &random_bytes(11, 160 * MIB as usize));
    capture_with(&tmp, "web-3", &[&src], &["--chunk-size", "262144"]);
    let web = web_server(&tmp, &tmp.path("store"));
    let url = web.url();
    let before = web.log_text().lines().count();
    let t = tmp.path("t.img");
    blank(&t, 200 * MIB);
    apply(&url, &t, &[]);
    assert_same(&src, &t);
    let log = web.log_text();
    let lines: Vec<&str> = log.lines().skip(before).collect();
    let heads = lines.iter().filter(|l| l.contains("\"HEAD ")).count();
    let pages = lines
        .iter()
        .filter(|l| l.contains("\"GET /chunks/") && l.contains("/ HTTP"))
        .count();
    let chunk_gets = lines
        .iter()
        .filter(|l| l.contains("\"GET /chunks/") && !l.contains("/ HTTP"))
        .count();
    assert!(chunk_gets > 600, "{chunk_gets} chunks fetched");
    assert!(
        pages > 100 && pages <= 256 && heads < 10,
        "{pages} pages, {heads} HEADs"
    );

    // A chunk gone from the store: its page does not name it, its HEAD finds it missing.
    let victim = lines
        .iter()
        .rev()
        .find_map(|l| {
            let path = l.split_once("\"GET /chunks/")?.1.split_once(' ')?.0;
            (!path.ends_with('/')).then(|| format!("chunks/{path}"))
        })
        .unwrap();
    let moved = tmp.path("moved-chunk");
    std::fs::rename(tmp.path(&format!("store/{victim}")), &moved).unwrap();
    let t2 = tmp.path("t2.img");
    blank(&t2, 200 * MIB);
    let err = run_fails(&apply_args(&url, "web-3", &t2), &[], &[]);
    assert!(
        err.contains(victim.rsplit('/').next().unwrap())
            && err.contains("cannot be restored from this store"),
        "{err}"
    );
    assert!(
        std::fs::read(&t2).unwrap().iter().all(|&b| b == 0),
        "written"
    );
    std::fs::rename(&moved, tmp.path(&format!("store/{victim}"))).unwrap();

    // A server that refuses directory pages: every chunk is checked by itself. It closes
    // every connection (a new TCP connection per request): at most 6 are asked at once,
    // whatever --jobs says, so a small accept queue does not drop connects.
    let proxy = fault_proxy(&tmp, free_port(), web.port, &["--forbid", "/ HTTP/"]);
    blank(&t2, 200 * MIB);
    run_ok(
        &[
            "apply",
            "--store",
            &proxy.url(),
            "--yes",
            "--no-progress",
            "--jobs",
            "16",
            p(&t2),
        ],
        &[],
    );
    assert_same(&src, &t2);
    let stats = proxy_stats(&proxy);
    // One page is asked for and refused, then each chunk is checked: not a refusal per worker.
    assert_eq!(stats["403"], 1, "{stats}");
    eprintln!("web server without index pages, through the fault proxy: {stats}");
    let most = stats["most_in_flight"].as_u64().unwrap();
    assert!((2..=6).contains(&most), "{stats}");
}

#[test]
fn s3_capture_list_restore_and_dedup() {
    let tmp = Tmp::new();
    let src = tmp.path("src.img");
    gpt_server_disk(&src, SIZE, &tmp);
    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "backups");
    let env = s3_env(s3.port);
    let store = "s3://backups/fleet";
    let capture_json = |host: &str| -> serde_json::Value {
        let out = run_ok(
            &[
                "capture",
                "--store",
                store,
                "--host",
                host,
                "--json",
                "--no-progress",
                p(&src),
            ],
            &env,
        );
        serde_json::from_str(&out).unwrap()
    };
    let first = capture_json("web-3");
    assert!(first["new_chunks"].as_u64().unwrap() > 5, "{first}");
    let second = capture_json("web-3");
    assert_eq!(
        second["new_chunks"], 0,
        "a second capture uploads no chunks: {second}"
    );
    assert_eq!(second["uploaded_bytes"], 0, "{second}");
    let other = capture_json("web-4");
    assert_eq!(
        other["new_chunks"], 0,
        "identical hosts share chunks: {other}"
    );

    let list: serde_json::Value = serde_json::from_str(&run_ok(
        &["snapshots", "--store", store, "--host", "web-3", "--json"],
        &env,
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[1]["id"], second["snapshot_id"]);

    let t = tmp.path("t.img");
    blank(&t, SIZE);
    run_ok(&apply_args(store, "web-3", &t), &env);
    assert_same(&src, &t);
    let d = damaged_copy(&tmp, &src);
    let env_host: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain([("RESTORE_STORE".to_string(), store.to_string())])
        .collect();
    let fetch = {
        let out = run_ok(
            &["plan", "--host", "web-4", "--json", "--no-progress", p(&d)],
            &env_host,
        );
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        plan["totals"]["bytes_to_fetch"].as_u64().unwrap()
    };
    assert!(
        fetch > 0 && fetch <= 4 * MIB,
        "minimal restore fetches {fetch}"
    );
    run_ok(
        &["apply", "--host", "web-4", "--yes", "--no-progress", p(&d)],
        &env_host,
    );
    assert_same(&src, &d);

    // A chunk gone from the store (a small one: plan lists it whole instead of asking for
    // each chunk): plan names it, and nothing is written.
    let listing = http_request(s3.port, "GET /backups?prefix=fleet/chunks/ HTTP/1.1");
    // The largest object: a chunk of random file data, which plan itself does not read.
    let key = listing
        .split("<Contents>")
        .skip(1)
        .filter_map(|c| {
            let key = c.split("<Key>").nth(1)?.split("</Key>").next()?;
            let size: u64 = c
                .split("<Size>")
                .nth(1)?
                .split("</Size>")
                .next()?
                .parse()
                .ok()?;
            Some((size, key.to_string()))
        })
        .max()
        .map(|(_, key)| key)
        .unwrap_or_else(|| panic!("no chunk in the bucket's listing:\n{listing}"));
    let id = key.rsplit('/').next().unwrap().to_string();
    // Signed, as moto refuses an anonymous DELETE (boto3 comes with moto).
    let gone = python()
        .args([
            "-c",
            "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
             aws_access_key_id='restore-test', aws_secret_access_key='restore-test-secret')\
             .delete_object(Bucket='backups', Key=sys.argv[2])",
            &format!("http://127.0.0.1:{}", s3.port),
            &key,
        ])
        .output()
        .expect("python3");
    assert!(gone.status.success(), "deleting {key}: {}", text(&gone));
    let t2 = tmp.path("t2.img");
    blank(&t2, SIZE);
    let err = run_fails(&apply_args(store, "web-3", &t2), &env, &[]);
    assert!(
        err.contains(&id)
            && err.contains("missing")
            && err.contains("cannot be restored from this store"),
        "the plan's presence check does not name the missing chunk: {err}"
    );
    assert!(
        std::fs::read(&t2).unwrap().iter().all(|b| *b == 0),
        "something was written although a chunk is missing"
    );
}

#[test]
fn faults_on_the_wire_do_not_change_the_result() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let web = web_server(&tmp, &tmp.path("store"));
    let proxy = fault_proxy(
        &tmp,
        free_port(),
        web.port,
        &[
            "--p503",
            "0.2",
            "--preset",
            "0.05",
            "--ptruncate",
            "0.05",
            "--delay",
            "0.02",
            "--seed",
            "7",
        ],
    );
    let t = tmp.path("t.img");
    blank(&t, SIZE);
    apply(&proxy.url(), &t, &[]);
    assert_same(&src, &t);
    let stats = proxy_stats(&proxy);
    assert!(stats["503"].as_u64().unwrap() > 0, "{stats}");
    eprintln!("HTTP through the fault proxy: {stats}");

    // S3 through a proxy that resets often: object_store's errors are sorted and retried too,
    // for capture (PUTs, the manifest last) as for restore.
    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "backups");
    let proxy = fault_proxy(
        &tmp,
        free_port(),
        s3.port,
        &[
            "--p503", "0.1", "--p429", "0.05", "--preset", "0.2", "--delay", "0.01", "--seed", "3",
        ],
    );
    run_ok(
        &capture_args("s3://backups", "web-3", &src),
        &s3_env(proxy.port),
    );
    let t = tmp.path("t3.img");
    blank(&t, SIZE);
    apply("s3://backups", &t, &s3_env(proxy.port));
    assert_same(&src, &t);
    let stats = proxy_stats(&proxy);
    assert!(stats["reset"].as_u64().unwrap() > 0, "{stats}");
    eprintln!("S3 through the fault proxy: {stats}");
}

#[test]
fn client_errors_are_not_retried() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let web = web_server(&tmp, &tmp.path("store"));
    let proxy = fault_proxy(&tmp, free_port(), web.port, &["--forbid", "/chunks/"]);
    let err = run_fails(&["plan", "--store", &proxy.url(), p(&src)], &[], &[]);
    assert!(err.contains("403") && !err.contains("gave up"), "{err}");
    let stats = proxy_stats(&proxy);
    // Plan fetches the small chunks it is about to read (table sectors, used-space maps)
    // concurrently and stops at the first it cannot have: each was asked exactly once.
    assert!(stats["403"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        stats["most_403_per_path"], 1,
        "a 403 is not retried: {stats}"
    );
}

/// Where the snapshot's tables go on a blank target: LBA 0-33 and the last 33 sectors.
fn assert_table_untouched(t: &Path) {
    assert!(
        read_at(t, 0, 34 * 512).iter().all(|&b| b == 0),
        "primary table written"
    );
    assert!(
        read_at(t, SIZE - 33 * 512, 33 * 512)
            .iter()
            .all(|&b| b == 0),
        "backup table written"
    );
}

#[test]
fn a_corrupt_chunk_stops_the_restore_and_names_it() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    // The store serves wrong (but well-formed) bytes for the first chunk of partition 5.
    let id = blake3::hash(&read_at(&src, DATA5, MIB as usize))
        .to_hex()
        .to_string();
    let path = tmp.path(&format!("store/chunks/{}/{id}", &id[..2]));
    assert!(path.is_file(), "{} is in the store", path.display());
    let wrong = zstd::encode_all(&random_bytes(99, MIB as usize)[..], 3).unwrap();
    std::fs::write(&path, wrong).unwrap();
    let web = web_server(&tmp, &tmp.path("store"));
    let t = tmp.path("t.img");
    blank(&t, SIZE);
    let err = run_fails(
        &[
            "apply",
            "--store",
            &web.url(),
            "--yes",
            "--no-progress",
            p(&t),
        ],
        &[],
        &[],
    );
    assert!(
        err.contains(&id) && err.contains("corrupt") && err.contains(&web.url()),
        "{err}"
    );
    assert_table_untouched(&t);
    let gets = web
        .log_text()
        .matches(&format!("GET /chunks/{}/{id}", &id[..2]))
        .count();
    assert_eq!(gets, 1, "a corrupt chunk is not fetched again");
}

#[test]
fn server_gone_mid_restore_gives_a_clear_error_then_resume_completes() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let web = web_server(&tmp, &tmp.path("store"));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let t = tmp.path("t.img");
    blank(&t, SIZE);
    {
        let _dying = fault_proxy(&tmp, port, web.port, &["--die-after", "16"]);
        let o = run(
            &[
                "apply",
                "--store",
                &url,
                "--yes",
                "--no-progress",
                "--jobs",
                "4",
                p(&t),
            ],
            &[],
            &[],
        );
        assert!(!o.status.success(), "apply should fail:\n{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ")
                && last.contains("gave up after")
                && last.contains(&url)
                && last.contains("chunk"),
            "{err}"
        );
        assert_table_untouched(&t);
        assert!(
            !read_at(&t, 0, SIZE as usize).iter().all(|&b| b == 0),
            "the server went away mid-restore, after some data was written"
        );
        eprintln!("server gone: {last}");
    }
    // The server is back: plan + apply finishes the job.
    let _back = fault_proxy(&tmp, port, web.port, &[]);
    let fetch = plan_fetch_bytes(&url, &t, &[]);
    assert!(fetch > 0, "the plan still has work");
    apply(&url, &t, &[]);
    assert_same(&src, &t);
}

#[test]
fn bad_remote_stores_fail_quickly_with_one_clear_error() {
    let tmp = Tmp::new();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let err = run_fails(&["snapshots", "--store", &nobody], &[], &[]);
    assert!(
        err.contains("Connection refused") && err.contains(&nobody),
        "{err}"
    );
    let err = run_fails(
        &["snapshots", "--store", "s3://backups"],
        &s3_env(free_port()),
        &[],
    );
    assert!(err.contains("Connection refused"), "{err}");
    let err = run_fails(&["snapshots", "--store", "ftp://host/x"], &[], &[]);
    assert!(err.contains("not supported"), "{err}");

    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "backups");
    let env = s3_env(s3.port);
    let err = run_fails(
        &["snapshots", "--store", "s3://no-such-bucket/x"],
        &env,
        &[],
    );
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    let src = tmp.path("src.img");
    blank(&src, 4 * MIB);
    let err = run_fails(
        &[
            "capture",
            "--store",
            "s3://no-such-bucket",
            "--host",
            "h",
            p(&src),
        ],
        &env,
        &[],
    );
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    let err = run_fails(
        &["snapshots", "--store", "s3://backups"],
        &env,
        &["AWS_ACCESS_KEY_ID"],
    );
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let err = run_fails(&["snapshots", "--store", "s3://backups"], &env, &[]);
    assert!(err.contains("no store at s3://backups"), "{err}");

    // With credential checks on, a key the server does not know is refused.
    let strict = s3_server(&tmp, &[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    create_bucket(&strict, "backups");
    let err = run_fails(
        &["snapshots", "--store", "s3://backups"],
        &s3_env(strict.port),
        &[],
    );
    assert!(
        err.contains("refused access") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );

    let missing = tmp.path("missing.pem");
    let err = run_fails(
        &["snapshots", "--store", &nobody, "--ca-cert", p(&missing)],
        &[],
        &[],
    );
    assert!(
        err.contains("--ca-cert") && err.contains("missing.pem"),
        "{err}"
    );
    let not_pem = tmp.path("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = run_fails(
        &[
            "snapshots",
            "--store",
            "s3://backups",
            "--ca-cert",
            p(&not_pem),
        ],
        &env,
        &[],
    );
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[test]
fn https_with_a_private_ca_needs_ca_cert() {
    let tmp = Tmp::new();
    let src = captured(&tmp);
    let port = free_port();
    let ca = tmp.path("ca.pem");
    let mut cmd = python();
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/https_server.py"))
        .arg(port.to_string())
        .arg(tmp.path("store"))
        .arg(&ca);
    let _https = Server::start("https_server.py", cmd, port, tmp.path("https.log"));
    let url = format!("https://127.0.0.1:{port}");
    let err = run_fails(&["snapshots", "--store", &url], &[], &[]);
    assert!(err.contains("--ca-cert"), "{err}");
    let list = ok(&["snapshots", "--store", &url, "--ca-cert", p(&ca)]);
    assert!(list.contains("web-3"), "{list}");
    let t = tmp.path("t.img");
    blank(&t, SIZE);
    run_ok(
        &["apply", "--store", &url, "--yes", "--no-progress", p(&t)],
        &[("RESTORE_CA_CERT".into(), p(&ca).into())],
    );
    assert_same(&src, &t);
    // Without system roots (a bare rescue system), the private CA alone is trusted.
    let list = run_ok(
        &["snapshots", "--store", &url, "--ca-cert", p(&ca)],
        &no_system_roots(),
    );
    assert!(list.contains("web-3"), "{list}");
}

/// Points the system CA lookup at nothing, as on a rescue system without a CA bundle.
fn no_system_roots() -> Vec<(String, String)> {
    vec![
        ("SSL_CERT_FILE".into(), "/nonexistent/ca.pem".into()),
        ("SSL_CERT_DIR".into(), "/nonexistent".into()),
    ]
}

/// A prune the store refuses (a bucket policy that forbids deleting, a server that dies)
/// ends with one line saying how far it got; the snapshot kept stays whole and restores
/// byte-equal; a second prune finishes the job.
#[test]
fn a_prune_the_store_refuses_stops_cleanly_and_a_second_finishes() {
    let tmp = Tmp::new();
    let s3 = s3_server(&tmp, &[]);
    create_bucket(&s3, "backups");
    let direct = s3_env(s3.port);
    let src = tmp.path("src.img");
    gpt_server_disk(&src, SIZE, &tmp);
    let capture = capture_args("s3://backups", "web-3", &src);
    run_ok(&capture, &direct);
    // The second snapshot differs in 4 MiB of partition 5: forgetting the first leaves its
    // chunks of that region unreferenced.
    write_at(&src, DATA5, &random_bytes(77, 4 * MIB as usize));
    run_ok(&capture, &direct);
    let out = run_ok(
        &[
            "forget",
            "--store",
            "s3://backups",
            "--keep-last",
            "1",
            "--no-progress",
        ],
        &direct,
    );
    assert!(out.contains("forgot 1 of 2"), "{out}");

    // object_store deletes with DeleteObjects (POST /bucket?delete): refuse every one.
    let proxy = fault_proxy(&tmp, free_port(), s3.port, &["--forbid", "?delete"]);
    let prune = ["prune", "--store", "s3://backups", "--no-progress"];
    let err = run_fails(&prune, &s3_env(proxy.port), &[]);
    assert!(
        err.contains("prune deleted 0 of ")
            && err.contains("refused to delete ")
            && err.contains("s3:DeleteObject")
            && err.contains("then failed")
            && err.contains("run prune again"),
        "{err}"
    );
    let refused = proxy_stats(&proxy)["403"].as_u64().unwrap();
    assert!(
        (1..=16).contains(&refused),
        "the first refusal stops the rest: {refused}"
    );

    let t = tmp.path("t.img");
    blank(&t, SIZE);
    apply("s3://backups", &t, &direct);
    assert_same(&src, &t);
    let prune_json = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "prune",
            "--store",
            "s3://backups",
            "--json",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&run_ok(&args, &direct)).expect("prune JSON")
    };
    let doomed: u64 = err
        .split("prune deleted 0 of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("how many objects prune meant to delete");
    assert!(
        doomed >= 2,
        "the forgotten snapshot's own chunks and index: {err}"
    );
    let second = prune_json(&[]);
    assert_eq!(
        second["deleted_chunks"].as_u64().unwrap() + second["deleted_indexes"].as_u64().unwrap(),
        doomed,
        "{second}"
    );
    let third = prune_json(&["--dry-run"]);
    assert_eq!(third["deleted_chunks"], 0, "{third}");
    assert_eq!(third["deleted_indexes"], 0, "{third}");
    blank(&t, SIZE);
    apply("s3://backups", &t, &direct);
    assert_same(&src, &t);
}

//! Input from a disk, a store, a plan file or the network never panics, hangs, leaks a
//! secret or grows without bound: each crafted input gets one clear error line or a safe
//! reading, exit 0 or 1, within a few seconds.

mod common;
use common::servers::hostile_server;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs restore and insists on exit 0 or 1, no panic, and (on failure) one error line.
#[track_caller]
fn safely(args: &[&str]) -> (i32, String) {
    let started = Instant::now();
    let o = restore(args);
    let code = o.status.code().unwrap_or(-1);
    let all = text(&o);
    assert!(
        matches!(code, 0 | 1) && !all.contains("panicked"),
        "restore {args:?} exited {code}:\n{all}"
    );
    // check-boot's exit 1 is its verdict "broken", not an error.
    if code == 1 && !all.contains("boot chain broken") {
        error_line(args, &o);
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "restore {args:?} took {:?}",
        started.elapsed()
    );
    // With --nocapture, what each crafted input got: the last line and the exit code.
    eprintln!(
        "HOSTILE {} {} -> exit {code}: {}",
        args[0],
        args.last()
            .map(|a| Path::new(a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default())
            .unwrap_or_default(),
        all.lines().last().unwrap_or_default()
    );
    (code, all)
}

/// probe, check-boot, capture and plan of `disk`: none may panic or hang.
fn every_reader(tmp: &Tmp, disk: &Path) {
    safely(&["probe", p(disk)]);
    safely(&["probe", "--json", p(disk)]);
    safely(&["check-boot", p(disk)]);
    let store = tmp.path("hostile-store").display().to_string();
    let (code, _) = safely(&[
        "capture",
        "--store",
        &store,
        "--host",
        "h",
        "--no-progress",
        p(disk),
    ]);
    if code == 0 {
        safely(&["plan", "--store", &store, "--no-progress", p(disk)]);
        safely(&["check-boot", "--store", &store, p(disk)]);
    }
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}

#[test]
fn crafted_filesystems_and_tables_are_read_safely() {
    let tmp = Tmp::new();
    // An ext4 whose blocks-per-group is beyond what one bitmap block can describe.
    let disk = tmp.path("ext.img");
    gpt_server_disk(&disk, 96 * MIB, &tmp);
    let sb = 2 * MIB + 1024;
    write_at(&disk, sb + 0x20, &(1u32 << 20).to_le_bytes());
    every_reader(&tmp, &disk);
    // 1,100 bytes with the ext magic at byte 1080.
    let tiny = tmp.path("tiny.img");
    let mut bytes = vec![0u8; 1100];
    bytes[1080..1082].copy_from_slice(&[0x53, 0xEF]);
    std::fs::write(&tiny, &bytes).unwrap();
    every_reader(&tmp, &tiny);
    // A GPT whose header claims an entry array far beyond the disk, and one claiming 4 GiB
    // of entries (CRCs recomputed, so only the bounds can refuse them).
    for (count, lba) in [(128u32, 1u64 << 40), (1 << 25, 2)] {
        let g = tmp.path("gpt.img");
        gpt_server_disk(&g, 96 * MIB, &tmp);
        let mut h = read_at(&g, 512, 512);
        h[72..80].copy_from_slice(&lba.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        write_at(&g, 512, &h);
        every_reader(&tmp, &g);
    }
    // An MBR whose EBR chain points back at itself.
    let m = tmp.path("mbr.img");
    blank(&m, 32 * MIB);
    sfdisk(
        &m,
        "label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=40960, type=5\nstart=10240, size=2048, type=83\nstart=14336, size=2048, type=83\n",
    );
    // The second EBR's "next" entry (slot 2, at 462) names the second EBR itself.
    let first = read_at(&m, 8192 * 512, 512);
    let rel = u32::from_le_bytes(first[462 + 8..462 + 12].try_into().unwrap());
    assert!(rel > 0, "the test disk has a second logical partition");
    let at = (8192 + u64::from(rel)) * 512;
    let mut e = read_at(&m, at, 512);
    e[462 + 4] = 5;
    e[462 + 8..462 + 12].copy_from_slice(&rel.to_le_bytes());
    e[462 + 12..462 + 16].copy_from_slice(&2048u32.to_le_bytes());
    write_at(&m, at, &e);
    every_reader(&tmp, &m);
    // An EBR chain of 5,000 logical partitions, an EBR every other sector.
    let chain = tmp.path("chain.img");
    blank(&chain, 8 * MIB);
    let mut lba0 = vec![0u8; 512];
    lba0[446 + 4] = 5;
    lba0[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    lba0[446 + 12..446 + 16].copy_from_slice(&12_000u32.to_le_bytes());
    lba0[510..512].copy_from_slice(&[0x55, 0xAA]);
    write_at(&chain, 0, &lba0);
    for k in 0..5000u32 {
        let mut ebr = vec![0u8; 512];
        ebr[446 + 4] = 0x83;
        ebr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        ebr[446 + 12..446 + 16].copy_from_slice(&1u32.to_le_bytes());
        ebr[462 + 4] = 5;
        ebr[462 + 8..462 + 12].copy_from_slice(&(2 * (k + 1)).to_le_bytes());
        ebr[462 + 12..462 + 16].copy_from_slice(&2u32.to_le_bytes());
        ebr[510..512].copy_from_slice(&[0x55, 0xAA]);
        write_at(&chain, (2048 + 2 * u64::from(k)) * 512, &ebr);
    }
    every_reader(&tmp, &chain);
    let (code, out) = safely(&["probe", p(&chain)]);
    assert!(code == 0 && out.contains("more than 256 logical"), "{out}");
}

fn crc32(b: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A FAT16 ESP whose subdirectory B names its parent A as its own cluster: A/B/B/B/...
#[test]
fn an_esp_whose_directory_loops_is_not_walked_for_ever() {
    require_tool("mkfs.vfat");
    require_tool("mmd");
    let tmp = Tmp::new();
    let esp = tmp.path("esp.fat");
    sh("mkfs.vfat", &["-F", "16", "-s", "1", "-C", p(&esp), "8192"]);
    sh("mmd", &["-i", p(&esp), "::/A", "::/A/B"]);
    let bs = read_at(&esp, 0, 512);
    let (bps, spc, reserved, fats, roots, spf) = (
        u16_at(&bs, 11),
        u64::from(bs[13]),
        u16_at(&bs, 14),
        u64::from(bs[16]),
        u16_at(&bs, 17),
        u16_at(&bs, 22),
    );
    let root = (reserved + fats * spf) * bps;
    let data = root + roots * 32;
    let find = |dir_at: u64, name: &[u8; 11]| -> u64 {
        let dir = read_at(&esp, dir_at, 4096);
        (0..128)
            .map(|i| i * 32)
            .find(|&o| &dir[o..o + 11] == name)
            .map(|o| dir_at + o as u64)
            .expect("directory entry")
    };
    let a_entry = find(root, b"A          ");
    let a_cluster = u16_at(&read_at(&esp, a_entry, 32), 26);
    let a_at = data + (a_cluster - 2) * spc * bps;
    let b_entry = find(a_at, b"B          ");
    write_at(&esp, b_entry + 26, &(a_cluster as u16).to_le_bytes());
    let disk = tmp.path("loop-esp.img");
    blank(&disk, 16 * MIB);
    sh("sgdisk", &["-n1:2048:+8M", "-t1:ef00", p(&disk)]);
    write_at(&disk, MIB, &std::fs::read(&esp).unwrap());
    every_reader(&tmp, &disk);
    let (code, out) = safely(&["check-boot", p(&disk)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("loops"), "{out}");
}

#[test]
fn hostile_store_objects_are_refused_without_growing() {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("t.img");
    blank(&target, 96 * MIB);
    // Every chunk index replaced by 16 KiB of zstd that inflates to 2 GiB.
    let mut bomb = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..2048 {
        std::io::Write::write_all(&mut bomb, &zeros).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    for shard in std::fs::read_dir(tmp.path("store/indexes")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            std::fs::write(f.unwrap().path(), &bomb).unwrap();
        }
    }
    // Under a 1 GiB address-space limit: inflating first would abort the process.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec {} plan --store {} --no-progress {}",
            bin(),
            tmp.store(),
            p(&target)
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = error_line(&["plan (bomb)"], &o);
    assert!(err.contains("damaged") || err.contains("corrupt"), "{err}");
}

#[test]
fn a_manifest_whose_table_sector_is_shorter_than_its_header_says() {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let dir = tmp.path("store/snapshots/web-3");
    // The host directory also holds its catalogue (index.json): take the manifest.
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "index.json")
        })
        .expect("a manifest in the host directory");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let sectors = m["disks"][0]["table_sectors"].as_array_mut().unwrap();
    let header = sectors
        .iter()
        .find(|t| t["name"] == "gpt-primary-header")
        .unwrap()
        .clone();
    for t in sectors
        .iter_mut()
        .filter(|t| t["name"] == "gpt-primary-entries")
    {
        t["chunk"] = header["chunk"].clone();
        t["length"] = header["length"].clone();
    }
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let bigger = tmp.path("bigger.img");
    blank(&bigger, 128 * MIB);
    let (code, out) = safely(&[
        "plan",
        "--store",
        &tmp.store(),
        "--grow-last",
        "--no-progress",
        p(&bigger),
    ]);
    assert_eq!(code, 1, "{out}");
    // A host or id that would leave snapshots/ is refused before anything is opened.
    m["disks"][0]["table_sectors"] = serde_json::json!([]);
    m["host"] = "../../outside".into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let (code, out) = safely(&["show", "latest", "--store", &tmp.store()]);
    assert!(code == 1 && out.contains("not allowed"), "{out}");
}

#[test]
fn a_plan_with_non_ascii_hex_is_not_a_plan() {
    let tmp = Tmp::new();
    let plan = tmp.path("plan.json");
    std::fs::write(
        &plan,
        r#"{"format":"restore-plan","version":2,"disks":[{"actions":[{"patches":[{"chunk":0,"writes":[[0,"é1"]]}]}]}]}"#,
    )
    .unwrap();
    let (code, out) = safely(&["apply", "--yes", p(&plan)]);
    assert!(
        code == 1 && out.contains("not a valid restore plan"),
        "{out}"
    );
}

#[test]
fn a_slow_a_bottomless_and_an_endless_http_store_each_end_with_one_error() {
    require_tool("python3");
    let tmp = Tmp::new();
    let empty = tmp.path("www");
    std::fs::create_dir_all(&empty).unwrap();
    let target = tmp.path("t.img");
    blank(&target, 16 * MIB);
    for (mode, expect) in [("drip", "timed out"), ("bomb", "more than"), ("maze", "")] {
        let server = hostile_server(&tmp, mode, &empty);
        let url = format!("{}/", server.url());
        let started = Instant::now();
        let o = restore_env(
            &["plan", "--store", &url, "--no-progress", p(&target)],
            &[("RESTORE_HTTP_TIMEOUT", "2")],
        );
        let err = error_line(&["plan", mode], &o);
        assert!(err.contains(expect), "{mode}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{mode}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn an_s3_endpoint_that_drips_ends_with_one_error() {
    // The S3 transport's deadline covers the whole body (RESTORE_HTTP_TIMEOUT), not only the
    // start of the answer: the listing's body arrives a byte a second and is given up on.
    require_tool("python3");
    let tmp = Tmp::new();
    let empty = tmp.path("www");
    std::fs::create_dir_all(&empty).unwrap();
    let server = hostile_server(&tmp, "drip", &empty);
    let started = Instant::now();
    let o = restore_env(
        &["snapshots", "--store", "s3://backups/fleet"],
        &[
            ("AWS_ENDPOINT_URL", &server.url()),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("RESTORE_HTTP_TIMEOUT", "1"),
        ],
    );
    let err = error_line(&["snapshots", "drip"], &o);
    assert!(
        err.contains("listing snapshots/") && err.contains("did not arrive in time"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_password_in_a_store_url_appears_in_no_output_and_no_file() {
    require_tool("python3");
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("t.img");
    std::fs::copy(&src, &target).unwrap();
    write_at(&target, 0, &[0u8; 440]);
    let server = hostile_server(&tmp, "auth", &tmp.path("store"));
    let secret_url = format!("http://user:s3cret@127.0.0.1:{}/", server.port);
    let plan = tmp.path("plan.json");
    let o = restore(&[
        "plan",
        "--store",
        &secret_url,
        "-o",
        p(&plan),
        "--no-progress",
        p(&target),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains("s3cret") && text(&o).contains("***@"),
        "{}",
        text(&o)
    );
    let saved = std::fs::read_to_string(&plan).unwrap();
    assert!(
        !saved.contains("s3cret") && saved.contains("***@"),
        "{saved}"
    );
    // Applying it needs the credentials again, from RESTORE_STORE.
    let err = fails(&["apply", "--yes", p(&plan)]);
    assert!(
        err.contains("needs credentials") && !err.contains("s3cret"),
        "{err}"
    );
    let o = restore_env(
        &["apply", "--yes", "--no-progress", p(&plan)],
        &[("RESTORE_STORE", &secret_url)],
    );
    assert!(
        o.status.success() && !text(&o).contains("s3cret"),
        "{}",
        text(&o)
    );
    assert_same(&src, &target);
    // Wrong credentials, and an unreachable server: the error names neither password.
    for url in [
        format!("http://user:wr0ng@127.0.0.1:{}/", server.port),
        "https://user:s3cret@127.0.0.1:1/store".to_string(),
        "http://user:s3cret@".to_string(),
    ] {
        let o = restore(&["snapshots", "--store", &url]);
        let err = error_line(&["snapshots", &url], &o);
        assert!(
            !text(&o).contains("s3cret") && !text(&o).contains("wr0ng"),
            "{err}"
        );
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("blank.img");
    blank(&target, 96 * MIB);
    for args in [
        format!(
            "plan --store {} --json --no-progress {}",
            tmp.store(),
            p(&target)
        ),
        format!("plan --store {} --no-progress {}", tmp.store(), p(&target)),
        format!("show latest --json --store {}", tmp.store()),
    ] {
        for redirect in ["", "2>&1"] {
            let o = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; {} {args} {redirect} | head -c 1 >/dev/null",
                    bin()
                ))
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{args} {redirect}: {}", text(&o));
            assert!(text(&o).is_empty(), "{args} {redirect}: {}", text(&o));
        }
    }
}

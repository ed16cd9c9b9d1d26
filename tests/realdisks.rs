//! Real disks (as root, on loop devices made by the test): guards that refuse the wrong disk,
//! disk mapping, larger and smaller targets, sector sizes, and probe.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A snapshot of the sample server disk (96 MiB) and a damaged copy to restore onto.
fn setup() -> (Tmp, PathBuf, PathBuf) {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let target = tmp.path("target.img");
    std::fs::copy(&src, &target).unwrap();
    write_at(&target, 0, &[0u8; 440]);
    (tmp, src, target)
}

#[track_caller]
fn refused(tmp: &Tmp, target: &Path, watch: &Path, expect: &str) {
    let before = file_hash(watch);
    let err = fails(&[
        "apply",
        "--store",
        &tmp.store(),
        "--yes",
        "--no-progress",
        p(target),
    ]);
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        before,
        file_hash(watch),
        "the target changed although apply refused"
    );
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mounted_partition_of_the_target_is_refused() {
    if !have_root() {
        return;
    }
    let (tmp, _src, target) = setup();
    let lo = Loop::new(&target, &[]);
    // The ext4 root partition (2 MiB + 40 MiB) mounted through a second loop device.
    let part = Loop::new(
        &target,
        &[
            "--offset",
            &(2 * MIB).to_string(),
            "--sizelimit",
            &(40 * MIB).to_string(),
        ],
    );
    let mnt = tmp.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &["-o", "ro", p(&part.dev), p(&mnt)]);
    let _m = Mounted(mnt.clone());
    refused(&tmp, &lo.dev, &target, "is mounted at");
    // The image file itself is refused the same way: the same bytes are mounted.
    refused(&tmp, &target, &target, "is mounted at");
    // probe says so too.
    let probe: Value = serde_json::from_str(&ok(&["probe", "--json", p(&lo.dev)])).unwrap();
    assert!(
        probe["in_use"].as_str().unwrap().contains("mounted"),
        "{probe:#}"
    );
}

#[test]
fn target_held_open_exclusively_is_refused() {
    if !have_root() {
        return;
    }
    require_tool("python3");
    let (tmp, _src, target) = setup();
    let lo = Loop::new(&target, &[]);
    let script = "import os,sys,time\nfd=os.open(sys.argv[1], os.O_RDONLY|os.O_EXCL)\nprint('held', flush=True)\ntime.sleep(60)";
    let mut child = Command::new("python3")
        .args(["-c", script, p(&lo.dev)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let _holder = Killed(child);
    refused(&tmp, &lo.dev, &target, "busy");
}

#[test]
fn swap_and_read_only_targets_are_refused() {
    if !have_root() {
        return;
    }
    require_tool("mkswap");
    let (tmp, _src, target) = setup();
    // Swap on the target's swap partition (42 MiB + 8 MiB).
    {
        let lo = Loop::new(&target, &[]);
        let part = Loop::new(
            &target,
            &[
                "--offset",
                &(42 * MIB).to_string(),
                "--sizelimit",
                &(8 * MIB).to_string(),
            ],
        );
        sh("mkswap", &[p(&part.dev)]);
        sh("swapon", &[p(&part.dev)]);
        struct SwapOff(PathBuf);
        impl Drop for SwapOff {
            fn drop(&mut self) {
                let _ = Command::new("swapoff").arg(&self.0).status();
            }
        }
        let _s = SwapOff(part.dev.clone());
        refused(&tmp, &lo.dev, &target, "swap");
    }
    // Device-mapper holders: this machine's kernel has no device-mapper (dmsetup create fails
    // with "/dev/mapper/control: No such device"), so that guard is covered by the unit test
    // of disk::blockdev::holders on a sysfs-shaped tree.
    // A read-only loop device.
    let ro = Loop::new(&target, &["-r"]);
    refused(&tmp, &ro.dev, &target, "read-only");
}

#[test]
fn store_on_the_target_is_refused() {
    if !have_root() {
        return;
    }
    require_tool("mkfs.ext4");
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    // The store lives on an ext4 filesystem that is the target itself.
    let disk = tmp.path("store-disk.img");
    blank(&disk, 128 * MIB);
    sh("mkfs.ext4", &["-q", "-F", p(&disk)]);
    let lo = Loop::new(&disk, &[]);
    let mnt = tmp.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh("mount", &[p(&lo.dev), p(&mnt)]);
    let _m = Mounted(mnt.clone());
    let store = mnt.join("store").display().to_string();
    ok(&[
        "capture",
        "--store",
        &store,
        "--host",
        "h",
        "--no-progress",
        p(&src),
    ]);
    let err = fails(&["apply", "--store", &store, "--yes", p(&lo.dev)]);
    assert!(
        err.contains("mounted") || err.contains("holds the store"),
        "{err}"
    );
}

#[test]
fn restore_onto_a_4096_byte_sector_loop_device_is_refused_clearly() {
    if !have_root() {
        return;
    }
    let (tmp, _src, _target) = setup();
    let backing = tmp.path("4k.img");
    blank(&backing, 96 * MIB);
    let lo = Loop::new(&backing, &["--sector-size", "4096"]);
    let before = file_hash(&backing);
    let err = fails(&["apply", "--store", &tmp.store(), "--yes", p(&lo.dev)]);
    assert!(
        err.contains("512-byte sectors") && err.contains("4096-byte sectors"),
        "{err}"
    );
    assert_eq!(before, file_hash(&backing));
}

#[test]
fn native_4k_disk_round_trips() {
    if !have_root() {
        return;
    }
    require_tool("sgdisk");
    let tmp = Tmp::new();
    let img = tmp.path("4k-src.img");
    blank(&img, 64 * MIB);
    {
        let lo = Loop::new(&img, &["--sector-size", "4096"]);
        sh(
            "sgdisk",
            &[
                "-n1:256:+1M",
                "-t1:ef00",
                "-n2:0:+30M",
                "-t2:8300",
                p(&lo.dev),
            ],
        );
    }
    write_at(&img, 0, &random_bytes(1, 440));
    write_at(&img, 3 * MIB, &random_bytes(2, 5 * MIB as usize));
    let src = Loop::new(&img, &["--sector-size", "4096", "-r"]);
    capture(&tmp, "h", &[&src.dev]);
    let m: Value = show_json(&tmp);
    assert_eq!(m["disks"][0]["logical_sector_size"], 4096);
    assert_eq!(m["disks"][0]["partitions"].as_array().unwrap().len(), 2);
    let backing = tmp.path("4k-target.img");
    blank(&backing, 64 * MIB);
    let lo = Loop::new(&backing, &["--sector-size", "4096"]);
    apply_store(&tmp, &lo.dev);
    drop(lo);
    assert_same(&img, &backing);
    // And the reverse direction is refused: a 4Kn snapshot onto a 512-byte disk.
    let small = tmp.path("512.img");
    blank(&small, 64 * MIB);
    let err = fails(&["apply", "--store", &tmp.store(), "--yes", p(&small)]);
    assert!(err.contains("4096-byte sectors"), "{err}");
}

/// Two disks of the same host: a GPT disk (64 MiB) and an MBR disk (96 MiB), different content.
fn two_disk_host(tmp: &Tmp, size_a: u64, size_b: u64) -> (PathBuf, PathBuf) {
    let a = tmp.path("sda.img");
    blank(&a, size_a);
    sh("sgdisk", &["-n1:2048:+8M", "-n2:0:0", p(&a)]);
    write_at(&a, MIB + 5000, &random_bytes(31, 3 * MIB as usize));
    let b = tmp.path("sdb.img");
    blank(&b, size_b);
    sh("sgdisk", &["-n1:2048:0", p(&b)]);
    write_at(&b, MIB + 7000, &random_bytes(32, 3 * MIB as usize));
    capture(tmp, "db-1", &[&a, &b]);
    (a, b)
}

#[test]
fn two_disks_are_paired_by_size_and_by_map() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let (a, b) = two_disk_host(&tmp, 64 * MIB, 96 * MIB);
    let (ta, tb) = (tmp.path("new-a.img"), tmp.path("new-b.img"));
    blank(&ta, 64 * MIB);
    blank(&tb, 96 * MIB);
    let (la, lb) = (Loop::new(&ta, &[]), Loop::new(&tb, &[]));
    // Given in the "wrong" order: paired by size.
    let plan = {
        let out = ok(&[
            "plan",
            "--store",
            &tmp.store(),
            "--json",
            "--no-progress",
            p(&lb.dev),
            p(&la.dev),
        ]);
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let pairs: Vec<(String, String, String)> = plan["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap().into(),
                d["target"].as_str().unwrap().into(),
                d["mapping"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(pairs[0].0, "sda.img");
    assert_eq!(pairs[0].1, p(&la.dev));
    assert!(pairs[0].2.contains("same size"), "{pairs:?}");
    assert_eq!(pairs[1].1, p(&lb.dev));
    let human = ok(&[
        "plan",
        "--store",
        &tmp.store(),
        "--no-progress",
        p(&lb.dev),
        p(&la.dev),
    ]);
    assert!(
        human.contains("same size"),
        "the plan shows the mapping and why:\n{human}"
    );
    ok(&[
        "apply",
        "--store",
        &tmp.store(),
        "--yes",
        "--no-progress",
        p(&lb.dev),
        p(&la.dev),
    ]);
    drop((la, lb));
    assert_same(&a, &ta);
    assert_same(&b, &tb);

    // Two bigger targets: sizes do not tell, so --map says it.
    let (xa, xb) = (tmp.path("x-a.img"), tmp.path("x-b.img"));
    blank(&xa, 128 * MIB);
    blank(&xb, 128 * MIB);
    let (lx, ly) = (Loop::new(&xa, &[]), Loop::new(&xb, &[]));
    let err = fails(&["plan", "--store", &tmp.store(), p(&lx.dev), p(&ly.dev)]);
    assert!(err.contains("--map"), "{err}");
    let map_a = format!("sda.img={}", lx.dev.display());
    let map_b = format!("sdb.img={}", ly.dev.display());
    ok(&[
        "apply",
        "--store",
        &tmp.store(),
        "--yes",
        "--no-progress",
        "--map",
        &map_b,
        "--map",
        &map_a,
    ]);
    let plan = plan_json(&tmp, &lx.dev, &["--map", &map_a, "--map", &map_b]);
    assert_eq!(plan["totals"]["bytes_to_write"], 0);
    assert_eq!(plan["disks"][0]["mapping"], "--map");
    drop((lx, ly));
    // Boot code and everything between the primary table and the old backup table are equal.
    for (src, dst, size) in [(&a, &xa, 64 * MIB), (&b, &xb, 96 * MIB)] {
        assert_eq!(read_at(src, 0, 440), read_at(dst, 0, 440));
        let len = (size - 33 * 512 - 34 * 512) as usize;
        assert!(
            read_at(src, 34 * 512, len) == read_at(dst, 34 * 512, len),
            "{} differs",
            dst.display()
        );
    }
}

#[test]
fn two_equally_good_targets_are_refused() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let (a, b) = two_disk_host(&tmp, 64 * MIB, 64 * MIB);
    let (t1, t2) = (tmp.path("t1.img"), tmp.path("t2.img"));
    blank(&t1, 64 * MIB);
    blank(&t2, 64 * MIB);
    let (l1, l2) = (Loop::new(&t1, &[]), Loop::new(&t2, &[]));
    let err = fails(&[
        "apply",
        "--store",
        &tmp.store(),
        "--yes",
        p(&l1.dev),
        p(&l2.dev),
    ]);
    assert!(
        err.contains("equally good") && err.contains("--map"),
        "{err}"
    );
    assert_eq!(file_hash(&t1), file_hash(&t2), "nothing written");
    // Crosswise by --map.
    let (m1, m2) = (
        format!("sda.img={}", l2.dev.display()),
        format!("sdb.img={}", l1.dev.display()),
    );
    ok(&[
        "apply",
        "--store",
        &tmp.store(),
        "--yes",
        "--no-progress",
        "--map",
        &m1,
        "--map",
        &m2,
    ]);
    drop((l1, l2));
    assert_same(&a, &t2);
    assert_same(&b, &t1);
}

fn partition_listing(img: &Path) -> Vec<String> {
    sh("sgdisk", &["-p", p(img)])
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .map(String::from)
        .collect()
}

#[test]
fn larger_target_with_and_without_grow_last() {
    if !have_root() {
        return;
    }
    let (tmp, src, _) = setup();
    for grow in [false, true] {
        let backing = tmp.path(&format!("big-{grow}.img"));
        blank(&backing, 144 * MIB);
        let lo = Loop::new(&backing, &[]);
        let mut args = vec![
            "apply",
            "--store",
            tmp.store().leak() as &str,
            "--yes",
            "--no-progress",
        ];
        if grow {
            args.push("--grow-last");
        }
        args.push(p(&lo.dev));
        let out = ok(&args);
        if grow {
            // (the human plan wraps at 80 columns)
            let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(words.contains("filesystem itself is not grown"), "{out}");
        }
        drop(lo);
        let v = sh("sgdisk", &["-v", p(&backing)]);
        assert!(v.contains("No problems found"), "{v}");
        // Every partition byte-equal over its snapshot size.
        let end = 96 * MIB - 33 * 512;
        assert!(
            read_at(&src, 34 * 512, (end - 34 * 512) as usize)
                == read_at(&backing, 34 * 512, (end - 34 * 512) as usize)
        );
        let (old, new) = (partition_listing(&src), partition_listing(&backing));
        assert_eq!(old[..4], new[..4], "partitions 1-3 unchanged");
        let last_end = |listing: &[String]| {
            listing[4]
                .split_whitespace()
                .nth(2)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        if grow {
            assert_eq!(
                last_end(&new),
                144 * MIB / 512 - 34,
                "partition 5 grown to the end:\n{new:?}"
            );
            let plan = plan_json(&tmp, &backing, &["--grow-last"]);
            assert_eq!(plan["totals"]["bytes_to_write"], 0);
        } else {
            assert_eq!(old, new);
            assert_eq!(
                plan_json(&tmp, &backing, &[])["totals"]["bytes_to_write"],
                0
            );
        }
    }
}

#[test]
fn smaller_target_that_fits_and_one_that_does_not() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let src = tmp.path("roomy.img");
    blank(&src, 96 * MIB);
    sh("sgdisk", &["-n1:2048:+20M", "-n2:0:+30M", p(&src)]);
    write_at(&src, MIB, &random_bytes(41, 20 * MIB as usize));
    write_at(&src, 21 * MIB, &random_bytes(42, 30 * MIB as usize));
    capture(&tmp, "h", &[&src]);
    let fits = tmp.path("fits.img");
    blank(&fits, 60 * MIB);
    let lo = Loop::new(&fits, &[]);
    apply_store(&tmp, &lo.dev);
    drop(lo);
    assert!(sh("sgdisk", &["-v", p(&fits)]).contains("No problems found"));
    assert_eq!(partition_listing(&src), partition_listing(&fits));
    assert!(read_at(&src, MIB, 50 * MIB as usize) == read_at(&fits, MIB, 50 * MIB as usize));
    let tight = tmp.path("tight.img");
    blank(&tight, 51 * MIB);
    let lo = Loop::new(&tight, &[]);
    let before = file_hash(&tight);
    let err = fails(&["apply", "--store", &tmp.store(), "--yes", p(&lo.dev)]);
    assert!(err.contains("too small"), "{err}");
    drop(lo);
    assert_eq!(before, file_hash(&tight));
}

#[test]
fn probe_gpt_mbr_and_blank_disks() {
    if !have_root() {
        return;
    }
    require_tool("sfdisk");
    let tmp = Tmp::new();
    let gpt = tmp.path("gpt.img");
    gpt_server_disk(&gpt, 96 * MIB, &tmp);
    let lo = Loop::new(&gpt, &[]);
    let r: Value = serde_json::from_str(&ok(&["probe", "--json", p(&lo.dev)])).unwrap();
    assert_eq!(r["kind"], "block device");
    assert_eq!(r["table"]["kind"], "gpt");
    assert_eq!(r["size"], 96 * MIB);
    assert_eq!(r["logical_sector_size"], 512);
    let parts = r["partitions"].as_array().unwrap();
    assert_eq!(
        parts
            .iter()
            .map(|p| p["number"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 5]
    );
    assert_eq!(parts[1]["filesystem"], "ext4");
    assert_eq!(parts[0]["role"], "bios-boot");
    assert!(r["table_problems"].as_array().unwrap().is_empty());
    let human = ok(&["probe", p(&lo.dev)]);
    assert!(human.contains("GPT") && human.contains("ext4"), "{human}");
    drop(lo);
    // Damage shows up as a problem, not an error.
    write_at(&gpt, 512 + 20, b"x");
    let r: Value = serde_json::from_str(&ok(&["probe", "--json", p(&gpt)])).unwrap();
    assert!(
        r["table_problems"][0]
            .as_str()
            .unwrap()
            .contains("GPT primary: header CRC mismatch"),
        "{r:#}"
    );

    let mbr = tmp.path("mbr.img");
    blank(&mbr, 32 * MIB);
    sfdisk(
        &mbr,
        "label: dos\nstart=2048, size=20480, type=83, bootable\n",
    );
    let lo = Loop::new(&mbr, &[]);
    let r: Value = serde_json::from_str(&ok(&["probe", "--json", p(&lo.dev)])).unwrap();
    assert_eq!(r["table"]["kind"], "mbr");
    assert_eq!(r["partitions"][0]["type_id"], "0x83");
    assert_eq!(r["partitions"][0]["attributes"], 0x80);
    drop(lo);

    let empty = tmp.path("blank.img");
    blank(&empty, 16 * MIB);
    let lo = Loop::new(&empty, &[]);
    let r: Value = serde_json::from_str(&ok(&["probe", "--json", p(&lo.dev)])).unwrap();
    assert_eq!(r["table"]["kind"], "none");
    assert!(r["partitions"][0]["filesystem"].is_null());
    assert!(r["boot_code"].as_str().unwrap().starts_with("none"));
    assert!(ok(&["probe", p(&lo.dev)]).contains("blank"));
}

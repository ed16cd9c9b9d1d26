//! Used-block awareness: capture skips the free blocks of ext4, restore neither fetches nor
//! writes them, and the planner ignores differences in free space; the restored filesystem
//! passes e2fsck and holds every file byte-equal. --all-blocks keeps the exact image.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const FS_START: u64 = 2 * MIB;
const FS_SIZE: u64 = 120 * MIB;

/// A GPT disk whose ext4 partition has random garbage in its free blocks (mkfs does not
/// clear them), ~40% full of files.
fn disk_with_dirty_free_space(tmp: &Tmp) -> (PathBuf, PathBuf) {
    require_tool("sgdisk");
    require_tool("mkfs.ext4");
    let img = tmp.path("disk.img");
    blank(&img, 128 * MIB);
    sh(
        "sgdisk",
        &[
            "-n1:2048:+1M",
            "-t1:ef02",
            "-n2:4096:+120M",
            "-t2:8300",
            p(&img),
        ],
    );
    let root = tmp.path("root");
    std::fs::create_dir_all(root.join("data")).unwrap();
    for i in 0..6u64 {
        std::fs::write(
            root.join(format!("data/r{i}.bin")),
            random_bytes(100 + i, 6 * MIB as usize),
        )
        .unwrap();
    }
    let text: String = (0..200_000)
        .map(|i| format!("record {i} of the sample\n"))
        .collect();
    std::fs::write(root.join("data/text.txt"), text).unwrap();
    let fs = tmp.path("fs.ext4");
    std::fs::write(&fs, random_bytes(7, FS_SIZE as usize)).unwrap();
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-E", "nodiscard", "-d", p(&root), p(&fs)],
    );
    write_at(&img, FS_START, &std::fs::read(&fs).unwrap());
    (img, root)
}

fn extract_fs(tmp: &Tmp, disk: &Path, name: &str) -> PathBuf {
    let out = tmp.path(name);
    std::fs::write(&out, read_at(disk, FS_START, FS_SIZE as usize)).unwrap();
    out
}

/// e2fsck -fn passes and every file equals the source directory's.
fn check_fs(tmp: &Tmp, disk: &Path, root: &Path) {
    let fs = extract_fs(tmp, disk, "check.ext4");
    sh("e2fsck", &["-fn", p(&fs)]);
    require_tool("debugfs");
    for entry in std::fs::read_dir(root.join("data")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let dumped = tmp.path("dumped");
        let _ = std::fs::remove_file(&dumped);
        sh(
            "debugfs",
            &[
                "-R",
                &format!("dump /data/{name} {}", dumped.display()),
                p(&fs),
            ],
        );
        assert!(
            std::fs::read(&dumped).unwrap() == std::fs::read(entry.path()).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn free_blocks_are_neither_stored_nor_written_and_the_filesystem_is_intact() {
    let tmp = Tmp::new();
    let (src, root) = disk_with_dirty_free_space(&tmp);
    let out = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "h",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let free = r["free_chunks"].as_u64().unwrap();
    assert!(free >= 50, "most of the free space is skipped: {out}");
    let m = show_json(&tmp);
    let part = &m["disks"][0]["partitions"][1];
    assert!(part["used_map"].is_string(), "{part:#}");

    // Full restore onto a dirty target: only used chunks are fetched and written.
    let target = tmp.path("target.img");
    std::fs::write(&target, random_bytes(99, 128 * MIB as usize)).unwrap();
    let plan = plan_json(&tmp, &target, &[]);
    let a = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "partition 2")
        .unwrap()
        .clone();
    assert!(
        a["chunks_to_write"].as_u64().unwrap() <= a["chunks_total"].as_u64().unwrap() - free,
        "{a:#}"
    );
    apply_store(&tmp, &target);
    check_fs(&tmp, &target, &root);
    // Free space still holds the target's old bytes (nothing was written there), yet the plan
    // has nothing to do: differences in free space are ignored.
    assert_ne!(extract_fs(&tmp, &target, "a"), extract_fs(&tmp, &src, "b"));
    assert_eq!(plan_json(&tmp, &target, &[])["totals"]["bytes_to_write"], 0);
    // Damage in free space is ignored, damage in a file is found.
    let fs = extract_fs(&tmp, &src, "src.ext4");
    let stat = sh("debugfs", &["-R", "bmap /data/r3.bin 0", p(&fs)]);
    let block: u64 = stat.trim().parse().unwrap();
    let stats = sh("debugfs", &["-R", "stats", p(&fs)]);
    let block_size: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    write_at(&target, FS_START + block * block_size + 10, b"damage");
    let plan = plan_json(&tmp, &target, &[]);
    assert_eq!(plan["totals"]["chunks_to_write"], 1, "{plan:#}");
    apply_store(&tmp, &target);
    check_fs(&tmp, &target, &root);
}

#[test]
fn all_blocks_keeps_the_exact_image() {
    let tmp = Tmp::new();
    let (src, _root) = disk_with_dirty_free_space(&tmp);
    let out = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "h",
        "--all-blocks",
        "--json",
        "--no-progress",
        p(&src),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["free_chunks"], 0, "{out}");
    let target = tmp.path("target.img");
    blank(&target, 128 * MIB);
    apply_store(&tmp, &target);
    assert_same(&src, &target);
}

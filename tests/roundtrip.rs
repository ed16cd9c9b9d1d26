//! Capture, then full restore onto blank targets: the result must be byte-equal.

mod common;
use common::*;

fn capture_all_blocks(tmp: &Tmp, source: &std::path::Path) {
    let store = tmp.store();
    ok(&[
        "capture",
        "--store",
        &store,
        "--host",
        "host-a",
        "--all-blocks",
        "--no-progress",
        p(source),
    ]);
}

/// Byte for byte, junk on the target included: captured with --all-blocks, so the free space
/// of filesystems is part of the snapshot (by default it is not; see tests/usedblocks.rs).
fn round_trip_file(tmp: &Tmp, source: &std::path::Path) {
    capture_all_blocks(tmp, source);
    let target = tmp.path("target.img");
    blank(&target, std::fs::metadata(source).unwrap().len());
    // Junk on the "blank" target too: a restore must not rely on zeroes it did not write.
    write_at(&target, 5 * MIB, &random_bytes(99, 100_000));
    apply_store(tmp, &target);
    assert_same(source, &target);
    let plan = plan_json(tmp, &target, &[]);
    assert_eq!(
        plan["totals"]["bytes_to_write"], 0,
        "a fresh plan after apply must be empty"
    );
}

fn round_trip_loop(tmp: &Tmp, source: &std::path::Path) {
    if !have_root() {
        return;
    }
    capture_all_blocks(tmp, source);
    let backing = tmp.path("loop-target.img");
    blank(&backing, std::fs::metadata(source).unwrap().len());
    let lo = Loop::new(&backing, &[]);
    apply_store(tmp, &lo.dev);
    assert_same_prefix(source, &lo.dev, std::fs::metadata(source).unwrap().len());
    drop(lo);
    assert_same(source, &backing);
}

#[test]
fn gpt_disk_round_trips_byte_for_byte() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    round_trip_file(&tmp, &src);
}

#[test]
fn gpt_disk_round_trips_onto_a_loop_device() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    round_trip_loop(&tmp, &src);
}

fn mbr_disk(tmp: &Tmp) -> std::path::PathBuf {
    require_tool("sfdisk");
    let src = tmp.path("mbr.img");
    blank(&src, 64 * MIB);
    let script = "label: dos\nlabel-id: 0x1234abcd\n\
        start=2048, size=16384, type=83, bootable\n\
        start=18432, size=40960, type=5\n\
        start=20480, size=8192, type=83\n\
        start=30720, size=16384, type=82\n\
        start=49152, size=8192, type=83\n";
    sfdisk(&src, script);
    // Boot code, the post-MBR gap (GRUB's core image lives there), and data in every partition.
    write_at(&src, 0, &random_bytes(10, 440));
    write_at(&src, 512, &random_bytes(11, 200_000));
    for (i, lba) in [2048u64, 20480, 30720, 49152].iter().enumerate() {
        write_at(
            &src,
            lba * 512 + 4096,
            &random_bytes(20 + i as u64, 1_500_000),
        );
    }
    src
}

#[test]
fn mbr_disk_with_logical_partitions_round_trips() {
    let tmp = Tmp::new();
    let src = mbr_disk(&tmp);
    let shown = ok(&[
        "show",
        "latest",
        "--store",
        &{
            capture(&tmp, "host-a", &[&src]);
            tmp.store()
        },
        "--json",
    ]);
    let m: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let numbers: Vec<u64> = m["disks"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec![1, 5, 6, 7],
        "primary and logical partitions keep their numbers"
    );
    let ebrs = m["disks"][0]["table_sectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("ebr-"))
        .count();
    assert_eq!(ebrs, 3, "every EBR of the logical chain is captured");
    round_trip_file(&tmp, &src);
}

#[test]
fn mbr_disk_round_trips_onto_a_loop_device() {
    let tmp = Tmp::new();
    let src = mbr_disk(&tmp);
    round_trip_loop(&tmp, &src);
}

fn bare_fs_disk(tmp: &Tmp) -> std::path::PathBuf {
    require_tool("mkfs.ext4");
    let root = tmp.path("bare-root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("data.bin"), random_bytes(42, 2_000_000)).unwrap();
    let src = tmp.path("bare.img");
    sh("mkfs.ext4", &["-q", "-F", "-d", p(&root), p(&src), "32M"]);
    src
}

#[test]
fn disk_without_partition_table_round_trips() {
    let tmp = Tmp::new();
    let src = bare_fs_disk(&tmp);
    capture(&tmp, "host-a", &[&src]);
    let m = show_json(&tmp);
    assert_eq!(m["disks"][0]["table"]["kind"], "none");
    assert_eq!(m["disks"][0]["partitions"][0]["filesystem"], "ext4");
    round_trip_file(&tmp, &src);
}

#[test]
fn disk_without_partition_table_round_trips_onto_a_loop_device() {
    let tmp = Tmp::new();
    let src = bare_fs_disk(&tmp);
    round_trip_loop(&tmp, &src);
}

#[test]
fn gpt_boot_code_and_gap_are_restored() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "host-a", &[&src]);
    let m = show_json(&tmp);
    let regions: Vec<&str> = m["disks"][0]["boot_regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        regions.contains(&"boot-code") && regions.contains(&"post-table-gap"),
        "{regions:?}"
    );
    let target = tmp.path("t.img");
    blank(&target, 96 * MIB);
    apply_store(&tmp, &target);
    assert_eq!(read_at(&target, 0, 440), random_bytes(2, 440));
    assert_eq!(read_at(&target, 34 * 512, 30_000), random_bytes(3, 30_000));
    assert_same(&src, &target);
}

/// Unpartitioned gaps of a sparse image with a little data in them (between two partitions,
/// and in the tail): capture records only the chunks around the data, not the empty rest of
/// the gap, and a blank target and one whose gap data was overwritten are restored exactly.
#[test]
fn gaps_with_data_in_a_sparse_image_are_narrowed_and_restored() {
    let tmp = Tmp::new();
    let src = tmp.path("gaps.img");
    let size = 256 * MIB;
    blank(&src, size);
    // Partition 1 at 1 MiB (32 MiB), a 64 MiB gap, partition 2 (32 MiB), a ~127 MiB tail.
    sh(
        "sgdisk",
        &[
            "-n1:2048:+32M",
            "-n2:198656:+32M",
            "-t1:8300",
            "-t2:8300",
            p(&src),
        ],
    );
    let in_gap = 33 * MIB + 20 * MIB + 12_345;
    let in_tail = size - 40 * MIB + 777;
    write_at(&src, in_gap, &random_bytes(61, 100_000));
    write_at(&src, in_tail, &random_bytes(62, 5_000));
    write_at(&src, MIB + 4096, &random_bytes(63, 1_000_000));
    capture(&tmp, "host-a", &[&src]);
    let m = show_json(&tmp);
    let gaps: Vec<(u64, u64)> = m["disks"][0]["boot_regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("gap-"))
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    // The gap between the partitions holds one run of data: its region is that chunk or two.
    // The tail's data runs up to the backup table (the image file's last block holds both),
    // so its region starts at the data and runs to the table.
    let (gap, tail) = (gaps[0], gaps[1]);
    assert!(
        gap.0 <= in_gap && in_gap + 100_000 <= gap.0 + gap.1 && gap.1 <= 2 * MIB,
        "the gap is not narrowed to its data: {gaps:?}"
    );
    assert!(
        tail.0 <= in_tail && in_tail - tail.0 < MIB && tail.0 + tail.1 <= size - 33 * 512,
        "the tail is not narrowed to its data: {gaps:?}"
    );
    let target = tmp.path("t.img");
    blank(&target, size);
    apply_store(&tmp, &target);
    assert_same(&src, &target);
    // The data in the gaps overwritten: the plan writes them back.
    write_at(&target, in_gap, &random_bytes(64, 100_000));
    write_at(&target, in_tail, &random_bytes(65, 5_000));
    apply_store(&tmp, &target);
    assert_same(&src, &target);
}

#[test]
fn larger_target_gets_a_valid_gpt_and_equal_partitions() {
    let tmp = Tmp::new();
    let src = tmp.path("gpt.img");
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "host-a", &[&src]);
    let target = tmp.path("big.img");
    blank(&target, 144 * MIB);
    apply_store(&tmp, &target);
    let verify = sh("sgdisk", &["-v", p(&target)]);
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    let listing = |img: &std::path::Path| -> Vec<String> {
        sh("sgdisk", &["-p", p(img)])
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .map(String::from)
            .collect()
    };
    assert_eq!(listing(&src), listing(&target));
    assert_eq!(listing(&target).len(), 5, "four partitions listed");
    // Boot code, the gap and every partition are byte-equal; so are partition GUIDs (sgdisk -i).
    assert_eq!(read_at(&src, 0, 440), read_at(&target, 0, 440));
    let after_table = 34 * 512;
    let span = (96 * MIB - 33 * 512 - after_table) as usize;
    assert!(
        read_at(&src, after_table, span) == read_at(&target, after_table, span),
        "partitions differ"
    );
    for n in ["1", "2", "5"] {
        assert_eq!(
            sh("sgdisk", &["-i", n, p(&src)]),
            sh("sgdisk", &["-i", n, p(&target)])
        );
    }
    assert_eq!(plan_json(&tmp, &target, &[])["totals"]["bytes_to_write"], 0);
}

//! Real server sizes, cheaply: a sparse 64 GiB disk image (GPT: an ext4 of 2 GiB with
//! ~100 MiB of files, a raw partition of 1 GiB with 160 MiB of data, and 61 GiB of nothing)
//! is captured, restored onto a blank sparse image and repaired after 1% damage, byte-equal
//! each time. The work is proportional to the data: holes of image files are never read
//! (SEEK_DATA/SEEK_HOLE), free space of ext4 is skipped. Times are measured by
//! scripts/bench.sh --size 256G --sparse, not here.

mod common;
use common::*;
use rustix::fs::{SeekFrom, seek};
use std::fs::File;
use std::path::{Path, PathBuf};

const SIZE: u64 = 64 << 30;
const P1: u64 = MIB;
const P1_SIZE: u64 = 2 << 30;
const P2: u64 = P1 + P1_SIZE;

/// The data ranges (offset, length) of a sparse file.
fn data_ranges(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let Ok(d) = seek(&f, SeekFrom::Data(pos)) else {
            break;
        };
        let h = seek(&f, SeekFrom::Hole(d)).unwrap();
        out.push((d, h - d));
        pos = h;
    }
    out
}

/// Byte-equal, reading only where either file has data (holes read as zeros in both).
fn assert_same_sparse(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len()
    );
    let mut ranges = data_ranges(a);
    ranges.extend(data_ranges(b));
    ranges.sort();
    let mut compared = 0u64;
    let mut pos = 0u64;
    for (s, l) in ranges {
        let (s, e) = (s.max(pos), s + l);
        let mut off = s;
        while off < e {
            let n = (e - off).min(8 * MIB) as usize;
            assert!(
                read_at(a, off, n) == read_at(b, off, n),
                "{} and {} differ in the {n} bytes at {off}",
                a.display(),
                b.display()
            );
            off += n as u64;
            compared += n as u64;
        }
        pos = pos.max(e);
    }
    assert!(compared > 0);
}

fn sparse_server(tmp: &Tmp) -> PathBuf {
    require_tool("sgdisk");
    require_tool("mkfs.ext4");
    let img = tmp.path("big.img");
    blank(&img, SIZE);
    sh(
        "sgdisk",
        &["-n1:2048:+2G", "-t1:8300", "-n2:0:+1G", "-t2:8300", p(&img)],
    );
    let root = tmp.path("root");
    std::fs::create_dir_all(root.join("srv")).unwrap();
    for i in 0..10u64 {
        std::fs::write(
            root.join(format!("srv/f{i}.bin")),
            random_bytes(4000 + i, 10 * MIB as usize),
        )
        .unwrap();
    }
    let fs = tmp.path("root.ext4");
    blank(&fs, P1_SIZE);
    sh("mkfs.ext4", &["-q", "-F", "-d", p(&root), p(&fs)]);
    // Into the image where the filesystem has data only, so the image stays sparse.
    for (s, l) in data_ranges(&fs) {
        let mut off = s;
        while off < s + l {
            let n = (s + l - off).min(8 * MIB) as usize;
            write_at(&img, P1 + off, &read_at(&fs, off, n));
            off += n as u64;
        }
    }
    std::fs::remove_file(&fs).unwrap();
    for i in 0..20u64 {
        write_at(
            &img,
            P2 + i * 48 * MIB + 4096 * i,
            &random_bytes(5000 + i, 8 * MIB as usize),
        );
    }
    img
}

#[test]
fn a_sparse_64_gib_disk_is_captured_restored_and_repaired_by_its_data() {
    let tmp = Tmp::new();
    let src = sparse_server(&tmp);
    let allocated = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().blocks() * 512
    };
    assert!(allocated(&src) < 600 * MIB, "the source is not sparse");
    let out = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "big",
        "--no-progress",
        "--json",
        p(&src),
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    eprintln!(
        "capture: {} s, {} chunks, {} bytes uploaded",
        r["seconds"], r["chunks"], r["uploaded_bytes"]
    );
    // Full restore onto a blank sparse disk: only data is written.
    let target = tmp.path("target.img");
    blank(&target, SIZE);
    apply_store(&tmp, &target);
    assert_same_sparse(&src, &target);
    assert!(
        allocated(&target) < allocated(&src) + 64 * MIB,
        "the restore wrote far more than the data: {} bytes allocated",
        allocated(&target)
    );
    // 1% of the data damaged: a few chunks of the raw partition and of a file's blocks.
    write_at(
        &target,
        P2 + 5 * 48 * MIB,
        &random_bytes(9, 2 * MIB as usize),
    );
    write_at(&target, P2 + 300 * MIB, &random_bytes(10, MIB as usize));
    let plan = plan_json(&tmp, &target, &[]);
    let bytes = plan["totals"]["bytes_to_write"].as_u64().unwrap();
    assert!(
        (3 * MIB..=4 * MIB).contains(&bytes),
        "a 1% repair writes {bytes} bytes"
    );
    apply_store(&tmp, &target);
    assert_same_sparse(&src, &target);
}

/// A target whose sampled chunks all differ (a blank disk, another system's disk) has its
/// data chunks written without being read first; the plan says so; the result is byte-equal,
/// also when the guess was wrong for some chunks.
#[test]
fn a_partition_whose_samples_all_differ_is_written_without_reading_it() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    gpt_server_disk(&src, 192 * MIB, &tmp);
    for i in 0..10u64 {
        write_at(
            &src,
            DATA5 + 4 * MIB + i * 9 * MIB,
            &random_bytes(700 + i, 8 * MIB as usize),
        );
    }
    capture_with(&tmp, "web-3", &[&src], &["--chunk-size", "262144"]);
    // A blank disk (a loop device: no holes to skip), and one full of other data that
    // happens to hold two of the snapshot's chunks of partition 5 (between the samples: the
    // first sample is its first data chunk, the next about 22 data chunks on).
    let blank_img = tmp.path("blank.img");
    blank(&blank_img, 192 * MIB);
    let other = tmp.path("other.img");
    std::fs::write(&other, random_bytes(99, 192 * MIB as usize)).unwrap();
    // (The ext4's free space is never written, as on any restore: zero there, as on the source.)
    write_at(&other, 2 * MIB, &vec![0u8; 40 * MIB as usize]);
    write_at(
        &other,
        DATA5 + 256 * 1024,
        &read_at(&src, DATA5 + 256 * 1024, 512 * 1024),
    );
    for img in [&blank_img, &other] {
        let lo = Loop::new(img, &[]);
        let plan = plan_json(&tmp, &lo.dev, &[]);
        let notes = plan["disks"][0]["notes"].to_string();
        assert!(
            notes.contains("partition 5: all 16 sampled data chunks differ"),
            "{notes}"
        );
        apply_store(&tmp, &lo.dev);
        drop(lo);
        assert_same(&src, img);
    }
    // A target that differs in a few chunks only is compared chunk by chunk as before.
    write_at(&other, DATA5 + 10 * MIB, &random_bytes(5, MIB as usize));
    let plan = plan_json(&tmp, &other, &[]);
    assert!(!plan["disks"][0]["notes"].to_string().contains("sampled"));
    assert_eq!(plan["totals"]["bytes_to_write"].as_u64(), Some(MIB));
}

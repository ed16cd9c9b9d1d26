//! Property tests of every decoder: random bytes and mutated real inputs (sector dumps of real
//! tables, a real ext4 and FAT16, real indexes, manifests, plans, NVRAM load options; made by
//! tests/fuzz-seeds/make.sh) must give a value or an error, never a panic, a hang or an
//! allocation that grows with a number the input claims. The normal suite runs a few hundred
//! cases per decoder; `scripts/fuzz.sh` runs a million (PROPTEST_CASES).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::boot::efivars::{self, LoadOption};
use crate::chunk::ChunkId;
use crate::disk::layout::{self, TableInfo};
use crate::disk::{Disk, extfs, fs, gpt};
use crate::manifest::Manifest;
use crate::store::index::ChunkIndex;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `test` on `cases` values of `strategy` (PROPTEST_CASES overrides the default) and
/// says how many passed, for scripts/fuzz.sh's report.
fn fuzz<S: Strategy>(
    name: &str,
    default: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    };
    let n = config.cases;
    let started = std::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("fuzz {name}: {e}");
    }
    eprintln!(
        "fuzz {name}: {n} cases passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn seed(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-seeds")
        .join(format!("{name}.zst"));
    let packed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zstd::stream::decode_all(&packed[..]).expect("seed decompresses")
}

/// A mutation of a real input: bytes overwritten (with "interesting" values at aligned
/// places, where lengths and counts live), ranges flipped, the input truncated or extended.
#[derive(Clone, Debug)]
enum Edit {
    Byte(usize, u8),
    Word(usize, u32),
    Long(usize, u64),
    Flip(usize, usize),
    Truncate(usize),
    Extend(usize, u8),
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        Just(0xffff),
        Just(0x1_0000),
        any::<u32>(),
    ]
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1 << 40),
        any::<u64>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        3 => (any::<usize>(), interesting_u32()).prop_map(|(i, v)| Edit::Word(i, v)),
        2 => (any::<usize>(), interesting_u64()).prop_map(|(i, v)| Edit::Long(i, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Flip(i, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (0usize..4096, any::<u8>()).prop_map(|(n, b)| Edit::Extend(n, b)),
    ]
}

fn mutate(mut data: Vec<u8>, edits: &[Edit], keep_len: bool) -> Vec<u8> {
    for e in edits {
        let len = data.len().max(1);
        match *e {
            Edit::Byte(i, b) => {
                if let Some(x) = data.get_mut(i % len) {
                    *x = b;
                }
            }
            Edit::Word(i, v) => {
                let at = (i % len) & !3;
                if at + 4 <= data.len() {
                    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            Edit::Long(i, v) => {
                let at = (i % len) & !7;
                if at + 8 <= data.len() {
                    data[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Edit::Flip(i, n) => {
                let at = i % len;
                for x in data.iter_mut().skip(at).take(n) {
                    *x ^= 0xff;
                }
            }
            Edit::Truncate(i) if !keep_len => data.truncate(i % len),
            Edit::Extend(n, b) if !keep_len => data.extend(std::iter::repeat_n(b, n)),
            _ => {}
        }
    }
    data
}

/// A temporary image file per test thread and name. It is written in full with `base` when
/// first made (or when `rewrite`); each case then writes only the bytes it mutated, since the
/// readers under test do not write (a million cases of a 4 MiB image would be slow).
fn image(name: &str, base: &[u8], size: u64, rewrite: bool) -> PathBuf {
    use std::os::unix::fs::FileExt;
    thread_local! {
        static MADE: std::cell::RefCell<std::collections::HashMap<String, u64>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    let dir = std::env::temp_dir().join(format!("restore-fuzz-{}", std::process::id()));
    let path = dir.join(format!("{name}-{:?}.img", std::thread::current().id()));
    let fresh = MADE.with(|m| m.borrow().get(name) != Some(&size));
    if fresh || rewrite {
        let _ = std::fs::create_dir_all(&dir);
        let f = std::fs::File::create(&path).expect("fuzz image");
        f.set_len(size).expect("size");
        f.write_all_at(&base[..base.len().min(size as usize)], 0)
            .expect("write");
        MADE.with(|m| m.borrow_mut().insert(name.to_string(), size));
    }
    path
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let room = f.metadata().unwrap().len().saturating_sub(offset) as usize;
    f.write_all_at(&bytes[..bytes.len().min(room)], offset)
        .unwrap();
}

/// Everything read-only the tool does with a disk: layout, both GPT copies, filesystems,
/// boot loaders and their chain (with and without the detected loaders). `probe` adds the
/// in-use checks (mount table, sysfs) and has its own, slower property test.
fn look_at(path: &Path) {
    let Ok(disk) = Disk::open_read(path) else {
        return;
    };
    let _ = layout::read_gpt_copies(&disk);
    if let Ok(l) = layout::read_layout(&disk) {
        for p in &l.partitions {
            assert!(p.offset + p.size <= disk.size, "partition outside the disk");
        }
        let (loaders, _) = crate::boot::detect(&disk, &l);
        let reference = crate::boot::Reference {
            loaders: Some(&loaders),
            ..Default::default()
        };
        let _ = crate::boot::check(&disk, &l, &reference, None);
        let _ = l.unclaimed_ranges(disk.size);
    }
    let _ = crate::boot::check_disk(&disk, &crate::boot::Reference::default(), None);
}

const GPT_DISK: u64 = 4 << 20;

#[test]
fn gpt_headers_and_entries() {
    let head = seed("gpt-head.bin");
    fuzz(
        "gpt headers and entries",
        256,
        (edits(24), interesting_u64()),
        |(edits, target)| {
            let m = mutate(head.clone(), &edits, false);
            let sector = m.get(512..1024).unwrap_or(&m[..m.len().min(512)]).to_vec();
            let entries = m.get(1024..).unwrap_or_default();
            if let Ok(h) = gpt::GptHeader::parse(&sector, 1) {
                let parsed = gpt::parse_entries(&h, entries);
                prop_assert!(parsed.len() <= h.entry_count as usize);
                let mut e = entries.to_vec();
                let _ = gpt::grow_last(&h, &mut e, target);
                let mut hdr = sector.clone();
                let _ = gpt::set_entries_crc(&mut hdr, &e);
            }
            let _ = gpt::relocate(&sector, 512, target);
            let mut tail = m.clone();
            gpt::patch_protective_mbr(&mut tail, target, target / 3);
            Ok(())
        },
    );
}

#[test]
fn gpt_disks() {
    let (head, tail) = (seed("gpt-head.bin"), seed("gpt-tail.bin"));
    fuzz("gpt disks", 128, (edits(16), edits(16)), |(he, te)| {
        let head = mutate(head.clone(), &he, true);
        let tail = mutate(tail.clone(), &te, true);
        let path = image("gpt", &[], GPT_DISK, false);
        write_at(&path, 0, &head);
        write_at(&path, GPT_DISK - tail.len() as u64, &tail);
        look_at(&path);
        Ok(())
    });
}

#[test]
fn mbr_disks_with_ebr_chains() {
    let seedbytes = seed("mbr-sectors.bin");
    fuzz("mbr disks with EBR chains", 128, edits(24), |edits| {
        let sectors = mutate(seedbytes.clone(), &edits, true);
        let path = image("mbr", &[], 8 << 20, false);
        write_at(&path, 0, &sectors[..512]);
        for (k, lba) in [4096u64, 8192, 11264].iter().enumerate() {
            write_at(&path, lba * 512, &sectors[512 * (k + 1)..512 * (k + 2)]);
        }
        look_at(&path);
        Ok(())
    });
}

#[test]
fn random_disks() {
    fuzz(
        "random disks",
        64,
        proptest::collection::vec(any::<u8>(), 0..70_000),
        |bytes| {
            let path = image("random", &bytes, bytes.len() as u64, true);
            look_at(&path);
            Ok(())
        },
    );
}

#[test]
fn probe_of_damaged_disks() {
    let (head, tail) = (seed("gpt-head.bin"), seed("gpt-tail.bin"));
    let esp = seed("esp.img");
    fuzz("probe", 32, (edits(16), edits(8)), |(he, ee)| {
        let head = mutate(head.clone(), &he, true);
        let path = image("probe", &[], GPT_DISK, false);
        write_at(&path, 0, &head);
        write_at(&path, GPT_DISK - tail.len() as u64, &tail);
        // The seed's partition 2 is an ESP at 1.5 MiB: give it a damaged FAT.
        write_at(
            &path,
            3072 * 512,
            &mutate(esp[..65_536].to_vec(), &ee, true),
        );
        let _ = crate::probe::probe(&path);
        Ok(())
    });
}

#[test]
fn filesystem_signatures() {
    let bases = [
        seed("ext4-head.bin"),
        seed("esp.img")[..72 * 1024].to_vec(),
        vec![0u8; 72 * 1024],
    ];
    fuzz(
        "filesystem signatures",
        512,
        (edits(24), 0usize..3),
        |(edits, which)| {
            let id = fs::identify_bytes(&mutate(bases[which].clone(), &edits, false));
            if let Some(uuid) = &id.uuid {
                prop_assert!(uuid.len() <= 64);
            }
            Ok(())
        },
    );
}

#[test]
fn ext_allocation_bitmaps() {
    let img = seed("ext4.img");
    fuzz("ext allocation bitmaps", 128, edits(24), |edits| {
        // Most edits land in the metadata at the start, where the decoder looks.
        let head = mutate(img[..131_072].to_vec(), &edits, true);
        let path = image("ext4", &img, img.len() as u64, false);
        write_at(&path, 0, &head);
        let disk = Disk::open_read(&path).unwrap();
        if let Some(map) = extfs::used_map(&disk, 0, disk.size) {
            let mut end = 0;
            for &(s, l) in &map.ranges {
                prop_assert!(s >= end && s + l <= disk.size);
                end = s + l;
            }
            prop_assert_eq!(extfs::UsedMap::decode(&map.encode()), Some(map));
        }
        for kind in ["ext4", "xfs", "vfat"] {
            let _ = fs::critical_offsets(&disk, 0, disk.size, Some(kind));
        }
        Ok(())
    });
}

#[test]
fn fat_esps() {
    let img = seed("esp.img");
    let dirty = std::cell::Cell::new(false);
    fuzz(
        "FAT ESPs",
        128,
        (edits(24), 0usize..3, 0u8..8),
        |(edits, region, write)| {
            // The boot sector and FATs, the root directory, or the data area; the region is
            // written back to the seed's bytes after the case.
            let (from, to) = [(0, 16_384), (16_384, 65_536), (65_536, img.len())][region];
            let part = mutate(img[from..to].to_vec(), &edits, true);
            let path = image("esp", &img, img.len() as u64, dirty.replace(false));
            write_at(&path, from as u64, &part);
            let disk = Disk::open_read(&path).unwrap();
            if let Ok(files) = crate::boot::esp::list_files(&disk, 0, disk.size) {
                prop_assert!(files.iter().map(|f| f.size).sum::<u64>() <= disk.size);
                let _ = crate::boot::esp::loaders(&files);
            }
            // One case in eight also writes (the fallback copy apply makes).
            if write == 0 {
                let rw = Disk::open_write(&path).unwrap();
                let copies = vec![(
                    "/EFI/debian/grubx64.efi".to_string(),
                    "/EFI/BOOT/BOOTX64.EFI".to_string(),
                )];
                let _ = crate::boot::esp::copy_files(&rw, 0, rw.size, &copies);
                dirty.set(true);
            } else {
                write_at(&path, from as u64, &img[from..to]);
            }
            Ok(())
        },
    );
}

#[test]
fn chunk_indexes_and_used_maps() {
    fuzz(
        "chunk indexes and used maps",
        1024,
        (edits(16), 0usize..64),
        |(edits, n)| {
            let index = ChunkIndex {
                chunk_size: 1 << 20,
                length: (n as u64) << 20,
                chunks: (0..n).map(|i| ChunkId::of(&[i as u8])).collect(),
            };
            if let Ok(i) = ChunkIndex::decode(&mutate(index.encode(), &edits, false)) {
                prop_assert_eq!(
                    i.chunks.len() as u64,
                    ChunkIndex::chunk_count(i.length, i.chunk_size)
                );
            }
            let map = extfs::UsedMap {
                ranges: vec![(0, 4096), (8192, 4096), (1 << 20, 1 << 20)],
            };
            if let Some(m) = extfs::UsedMap::decode(&mutate(map.encode(), &edits, false)) {
                let _ = m.chunk_use(0, 1 << 20);
                let _ = m.chunk_use(u64::MAX / 2, 1 << 20);
            }
            Ok(())
        },
    );
}

#[test]
fn load_options() {
    let o = efivars::option_for(
        "debian",
        1,
        2048,
        131_072,
        [7; 16],
        "/EFI/debian/shimx64.efi",
    );
    fuzz("NVRAM load options", 1024, edits(16), |edits| {
        if let Ok(p) = LoadOption::parse(&mutate(o.encode(), &edits, false)) {
            let _ = p.encode();
        }
        Ok(())
    });
}

#[test]
fn hex_urls_and_listings() {
    fuzz(
        "hex, URLs, catalogues and index pages",
        1024,
        (".{0,200}", proptest::collection::vec(any::<u8>(), 0..400)),
        |(text, bytes)| {
            let _ = crate::hex::decode(&text);
            let _ = crate::hex::decode(&String::from_utf8_lossy(&bytes));
            let _ = crate::store::catalogue::parse_catalogue(&bytes);
            let _ = crate::store::catalogue::parse_catalogue(text.as_bytes());
            let _ = crate::store::http::index_links(&text);
            if let Ok(l) = crate::store::Location::parse(&text) {
                // Whatever was typed, what is shown carries no password.
                let shown = l.to_string();
                if let crate::store::Location::Http(h) = &l
                    && let Some(pw) = h.password.as_deref().filter(|p| p.len() > 3)
                {
                    prop_assert!(!shown.contains(pw), "{shown}");
                }
            }
            let _ = crate::plan::mapping::parse_map(&text);
            let _ = ChunkId::from_hex(&text);
            let _ = gpt::guid_from_string(&text);
            Ok(())
        },
    );
}

#[test]
fn manifests() {
    let text = sample_manifest();
    let mut numbers = Vec::new();
    collect_numbers(&serde_json::from_str(&text).unwrap(), &mut numbers);
    let sectors = seed("gpt-head.bin");
    fuzz(
        "manifests",
        256,
        (
            edits(12),
            proptest::collection::vec((any::<usize>(), interesting_u64()), 0..6),
        ),
        |(edits, value_edits)| {
            // Byte-level damage to the JSON text, and numbers replaced where they are numbers.
            let _ = Manifest::parse(&mutate(text.clone().into_bytes(), &edits, false), "fuzz");
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            for (i, n) in value_edits {
                set_number(&mut v, &numbers[i % numbers.len()], n);
            }
            if let Ok(m) = Manifest::parse(v.to_string().as_bytes(), "fuzz") {
                for d in &m.disks {
                    for grow in [false, true] {
                        let _ = crate::plan::table::expected_from(
                            d,
                            &|t| {
                                Ok(sectors
                                    .get(..(t.length as usize).min(sectors.len()))
                                    .unwrap_or_default()
                                    .to_vec())
                            },
                            d.size,
                            grow,
                        );
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn plans() {
    let text = sample_plan();
    let original: crate::plan::Plan = serde_json::from_str(&text).unwrap();
    fuzz("plans", 512, edits(12), |edits| {
        let bytes = mutate(text.clone().into_bytes(), &edits, false);
        if let Ok(p) = serde_json::from_slice::<crate::plan::Plan>(&bytes) {
            for (a, b) in p.disks.iter().zip(&original.disks) {
                let _ = crate::plan::compare(a, b);
            }
            let _ = crate::plan::render::human(&p);
        }
        Ok(())
    });
}

fn edits(n: usize) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 0..n)
}

/// A manifest of the GPT seed disk as capture would write it.
fn sample_manifest() -> String {
    let path = image("manifest", &seed("gpt-head.bin"), GPT_DISK, true);
    write_at(&path, GPT_DISK - 33 * 512, &seed("gpt-tail.bin"));
    let disk = Disk::open_read(&path).unwrap();
    let l = layout::read_layout(&disk).unwrap();
    assert!(matches!(l.table, TableInfo::Gpt { .. }));
    let id = ChunkId::of(b"x").to_hex();
    serde_json::json!({
        "format": "restore-snapshot", "version": 1, "id": "20261203T000000Z-abcdef",
        "host": "web-3", "created": "2026-12-03T00:00:00Z", "chunk_size": 1 << 20,
        "tool_version": "0.1.0",
        "disks": [{
            "name": "sda", "source": "/dev/sda", "size": GPT_DISK,
            "logical_sector_size": 512, "physical_sector_size": 512,
            "table": l.table,
            "table_sectors": l.table_sectors.iter().map(|t| serde_json::json!({
                "name": t.name, "offset": t.offset, "length": t.length, "chunk": id})).collect::<Vec<_>>(),
            "boot_regions": [{"name": "boot-code", "offset": 0, "length": 440, "index": id}],
            "partitions": l.partitions.iter().map(|p| {
                let mut v = serde_json::to_value(p).unwrap();
                v["index"] = id.clone().into();
                v["chunks"] = 1.into();
                v["zero_chunks"] = 0.into();
                v
            }).collect::<Vec<_>>(),
        }],
        "nvram": {"variables": [["Boot0000", crate::hex::encode(&efivars::option_for(
            "d", 1, 2048, 100, [1; 16], "/EFI/x.efi").encode())]]},
    })
    .to_string()
}

fn sample_plan() -> String {
    let id = ChunkId::of(b"x").to_hex();
    serde_json::json!({
        "format": "restore-plan", "version": 2, "created": "2026-12-03T00:00:00Z",
        "store": "/srv/store", "host": "web-3", "snapshot": "s", "chunk_size": 1 << 20,
        "mode": "deep", "nvram": true,
        "disks": [{
            "source": "sda", "target": "/dev/sda", "mapping": "", "target_size": GPT_DISK,
            "target_sector_size": 512, "snapshot_size": GPT_DISK,
            "actions": [
                {"id": "table", "component": "partition-table", "name": "gpt", "found": "",
                 "action": "write", "reason": "", "offset": 440, "length": 584,
                 "bytes_to_write": 512, "bytes_to_fetch": 0, "chunks_to_write": 0,
                 "chunks_to_fetch": 0, "chunks_total": 5,
                 "table_writes": [{"name": "gpt-primary-header", "offset": 512, "length": 4,
                                   "hash": ChunkId::of(&[1, 2, 3, 4]).to_hex(), "data": "01020304"}]},
                {"id": "partition:2", "component": "partition", "name": "partition 2",
                 "number": 2, "found": "", "action": "patch", "reason": "", "offset": 1 << 20,
                 "length": 1 << 20, "bytes_to_write": 1 << 20, "bytes_to_fetch": 1 << 20,
                 "chunks_to_write": 1, "chunks_to_fetch": 1, "chunks_total": 1, "index": id,
                 "runs": [[0, 1]],
                 "patches": [{"chunk": 0, "writes": [[92, "0008000000000000"]]}]},
                {"id": "boot-entry", "component": "boot-entry", "name": "uefi-boot-entry",
                 "found": "", "action": "write", "reason": "", "offset": 0, "length": 0,
                 "bytes_to_write": 0, "bytes_to_fetch": 0, "chunks_to_write": 0,
                 "chunks_to_fetch": 0, "chunks_total": 0,
                 "boot_entry": {"number": 3, "file": "\\EFI\\x.efi", "partition": 1,
                                "load_option": "0100", "stale": [1]}},
            ],
            "fingerprint": "00", "totals": {"bytes_to_write": 1, "bytes_to_fetch": 1,
                "chunks_to_write": 1, "chunks_to_fetch": 1, "components_to_write": 3},
        }],
        "totals": {"bytes_to_write": 1, "bytes_to_fetch": 1, "chunks_to_write": 1,
                   "chunks_to_fetch": 1, "components_to_write": 3},
        "estimated_seconds": 1.0,
    })
    .to_string()
}

fn collect_numbers(v: &serde_json::Value, out: &mut Vec<Vec<String>>) {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Number(_) => out.push(path.clone()),
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string());
                    walk(x, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    path.push(k.clone());
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new(), out);
}

fn set_number(v: &mut serde_json::Value, path: &[String], n: u64) {
    let mut at = v;
    for k in path {
        at = match at {
            serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            serde_json::Value::Object(o) => o.get_mut(k).unwrap(),
            _ => return,
        };
    }
    *at = n.into();
}

#[test]
fn an_index_that_inflates_to_gigabytes_is_refused_before_it_is_inflated() {
    let dir = tempfile::tempdir().unwrap();
    let location = crate::store::Location::Local(dir.path().join("store"));
    let (store, _) = crate::store::Store::open_or_create(&location, None).unwrap();
    // 8 KiB of zstd that inflates to 1 GiB of zeros, stored under the id of a small index.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let id = ChunkId::of(b"claims to be small");
    let key = dir.path().join("store/indexes").join(&id.to_hex()[..2]);
    std::fs::create_dir_all(&key).unwrap();
    std::fs::write(key.join(id.to_hex()), &bomb).unwrap();
    // Larger than any index of 10 MiB: refused unread. Within the size a 10 GiB partition's
    // index may have, it is inflated only as far as such an index goes.
    let err = store.get_index(&id, 10 << 20).unwrap_err();
    assert!(format!("{err:#}").contains("more than"), "{err:#}");
    let err = store.get_index(&id, 10 << 30).unwrap_err();
    assert!(format!("{err:#}").contains("corrupt"), "{err:#}");
    // And a chunk object larger than any chunk is refused unread.
    let ckey = dir.path().join("store/chunks").join(&id.to_hex()[..2]);
    std::fs::create_dir_all(&ckey).unwrap();
    std::fs::write(ckey.join(id.to_hex()), vec![7u8; 3 << 20]).unwrap();
    let err = store.get_chunk(&id, 1 << 20).unwrap_err();
    assert!(format!("{err:#}").contains("more than"), "{err:#}");
}

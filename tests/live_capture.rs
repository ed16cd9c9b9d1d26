//! Capture of a running server: filesystems mounted read-write (through a loop device at the
//! partition's offset, which is how a mounted /dev/sda2 looks on this host) with a process
//! writing files while the capture runs. The capture freezes each filesystem only while its
//! blocks are read; the restore is fsck-clean and holds every file the writer had made
//! durable before the freeze. What cannot be read consistently is refused, or stored marked
//! `inconsistent` when asked; nothing is ever left frozen, also when capture is SIGKILLed.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PART_START: u64 = 2 * MIB;
/// XFS needs 300 MB at least.
const PART_SIZE: u64 = 320 * MIB;

/// A GPT disk image whose partition 1 holds a filesystem of `fstype`, mounted read-write at
/// `mnt` through a loop device over the image at the partition's offset. Unmounted and
/// detached when dropped, also when the test fails.
struct LiveDisk {
    image: PathBuf,
    mnt: PathBuf,
    part: Option<Loop>,
    fstype: &'static str,
}

impl LiveDisk {
    /// The free space holds old data (random bytes), as a used disk's does; the filesystem is
    /// filled with `fill` MiB of files under /seed.
    fn new(tmp: &Tmp, fstype: &'static str, fill: u64) -> LiveDisk {
        LiveDisk::with_limit(tmp, fstype, fill, PART_SIZE)
    }

    /// The loop device shows `limit` bytes of the partition (a size rounded down to whole
    /// filesystem blocks, as scripts and admins do).
    fn with_limit(tmp: &Tmp, fstype: &'static str, fill: u64, limit: u64) -> LiveDisk {
        require_tool("sgdisk");
        require_tool("mount");
        let image = tmp.path("server.img");
        blank(&image, PART_START + PART_SIZE + MIB);
        sh(
            "sgdisk",
            &["-n1:4096:+320M", "-t1:8300", "-u1:R", p(&image)],
        );
        for i in 0..PART_SIZE / (8 * MIB) {
            write_at(
                &image,
                PART_START + i * 8 * MIB,
                &random_bytes(1000 + i, 8 * MIB as usize),
            );
        }
        let part = Loop::new(
            &image,
            &[
                "--offset",
                &PART_START.to_string(),
                "--sizelimit",
                &limit.to_string(),
            ],
        );
        match fstype {
            "ext4" => {
                require_tool("mkfs.ext4");
                // No lazy inode-table init: the kernel would go on writing them after the mount.
                sh(
                    "mkfs.ext4",
                    &[
                        "-q",
                        "-F",
                        "-E",
                        "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                        p(&part.dev),
                    ],
                );
            }
            "xfs" => {
                require_tool("mkfs.xfs");
                sh("mkfs.xfs", &["-q", "-f", "-K", p(&part.dev)]);
            }
            _ => unreachable!(),
        }
        let mnt = tmp.path("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        sh("mount", &["-t", fstype, p(&part.dev), p(&mnt)]);
        let disk = LiveDisk {
            image,
            mnt,
            part: Some(part),
            fstype,
        };
        std::fs::create_dir_all(disk.mnt.join("seed")).unwrap();
        for i in 0..fill {
            std::fs::write(
                disk.mnt.join(format!("seed/s{i}.bin")),
                random_bytes(5000 + i, MIB as usize),
            )
            .unwrap();
        }
        sh("sync", &[]);
        disk
    }
}

impl Drop for LiveDisk {
    fn drop(&mut self) {
        // Thaw first, in case a failed test left it frozen (the capture's watchdog should
        // have), so that the unmount cannot hang.
        // A failed test may leave a process with a file open on it for a moment (a capture
        // being killed, its watchdog thawing, a probe write finishing): retry for up to 5 s,
        // then detach it lazily rather than leave it mounted.
        let mut unmounted = false;
        for _ in 0..50 {
            let _ = Command::new("fsfreeze").arg("-u").arg(&self.mnt).output();
            if Command::new("umount")
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                unmounted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        self.part.take();
    }
}

/// A file the writer made: its name carries the blake3 hash of its content.
#[derive(Clone, Debug)]
struct Made {
    name: String,
    /// When its fsync (and its directory's) returned, seconds since 1970.
    durable_at: f64,
    /// When its deletion began, if it was deleted.
    deleted_at: Option<f64>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A process writing to the filesystem while capture runs: creates files with their checksum
/// in their name, fsyncs them, replaces (writes anew, then deletes) and deletes older ones.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Made>>>,
}

impl Writer {
    fn start(dir: &Path) -> Writer {
        let dir = dir.join("live");
        std::fs::create_dir_all(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut made: Vec<Made> = Vec::new();
            let dirfd = std::fs::File::open(&dir).unwrap();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let len = 4096 * (1 + (n * 37 % 16)) as usize;
                let data = random_bytes(90_000 + n, len);
                let name = format!("w{n}-{}", blake3::hash(&data).to_hex());
                {
                    use std::io::Write;
                    let mut f = std::fs::File::create(dir.join(&name)).unwrap();
                    f.write_all(&data).unwrap();
                    f.sync_all().unwrap();
                }
                dirfd.sync_all().unwrap();
                made.push(Made {
                    name,
                    durable_at: now(),
                    deleted_at: None,
                });
                // Every third round, delete an older file (a rewrite is a new file plus this).
                if n.is_multiple_of(3) {
                    let live: Vec<usize> = (0..made.len())
                        .filter(|&i| made[i].deleted_at.is_none())
                        .collect();
                    let victim = live[(n as usize * 7) % live.len()];
                    made[victim].deleted_at = Some(now());
                    std::fs::remove_file(dir.join(&made[victim].name)).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            made
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Made> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `restore capture` of `image` into the test's store as host web-3, with `extra` options.
fn capture_args<'a>(store: &'a str, image: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "capture",
        "--store",
        store,
        "--host",
        "web-3",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    args.push(p(image));
    args
}

fn capture_json(tmp: &Tmp, image: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let store = tmp.store();
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(extra);
    let o = restore(&capture_args(&store, image, &with_json));
    assert!(o.status.success(), "capture failed:\n{}", text(&o));
    let json = serde_json::from_slice(&o.stdout).expect("capture --json");
    (json, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The report of partition 1 in `capture --json`.
fn part1(json: &serde_json::Value) -> &serde_json::Value {
    json["partitions"]
        .as_array()
        .expect("partitions in capture --json")
        .iter()
        .find(|p| p["number"] == 1)
        .expect("partition 1 in capture --json")
}

/// The record of partition 1 in the newest manifest.
fn manifest_part1(tmp: &Tmp) -> serde_json::Value {
    let files = manifest_files(tmp, "web-3");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files.last().expect("a manifest")).unwrap()).unwrap();
    m["disks"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == 1 || p["info"]["number"] == 1)
        .cloned()
        .expect("partition 1 in the manifest")
}

/// Restores the newest snapshot onto a blank image and checks it: the filesystem checker is
/// clean, every seed file is intact, and every file the writer made durable before the
/// freeze began and did not delete before then is there with its content.
fn restore_and_check(tmp: &Tmp, disk: &LiveDisk, made: &[Made], frozen_at: f64) -> usize {
    let target = tmp.path("restored.img");
    blank(&target, PART_START + PART_SIZE + MIB);
    apply_store(tmp, &target);
    let fs = tmp.path("restored.fs");
    std::fs::write(&fs, read_at(&target, PART_START, PART_SIZE as usize)).unwrap();
    match disk.fstype {
        "ext4" => {
            sh("e2fsck", &["-fn", p(&fs)]);
        }
        _ => {
            // A frozen XFS that was being written keeps its last changes in its log (an LVM
            // snapshot of it does too): its first mount replays them, as it would after a
            // power cut. Then the checker must find it clean.
            require_tool("xfs_repair");
            let rw = Loop::new(&fs, &[]);
            let replay = tmp.path("replay");
            std::fs::create_dir_all(&replay).unwrap();
            // nouuid: the source, with the same UUID, is still mounted.
            sh("mount", &["-o", "nouuid", p(&rw.dev), p(&replay)]);
            sh("umount", &[p(&replay)]);
            drop(rw);
            sh("xfs_repair", &["-n", "-f", p(&fs)]);
        }
    }
    let lp = Loop::new(&fs, &["-r"]);
    let mnt = tmp.path("check");
    std::fs::create_dir_all(&mnt).unwrap();
    // A filesystem read while mounted (double-read) has a journal to replay: fsck said it is
    // clean, the files are looked at without replaying it on a read-only device.
    let opts = if disk.fstype == "ext4" {
        "ro,noload"
    } else {
        "ro,norecovery,nouuid"
    };
    sh("mount", &["-o", opts, p(&lp.dev), p(&mnt)]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    for entry in std::fs::read_dir(disk.mnt.join("seed")).unwrap() {
        let entry = entry.unwrap();
        let back = mnt.join("seed").join(entry.file_name());
        assert!(
            std::fs::read(&back).ok() == Some(std::fs::read(entry.path()).unwrap()),
            "seed file {} differs after the restore",
            entry.file_name().to_string_lossy()
        );
    }
    // A margin for the clocks of two processes.
    let expected: Vec<&Made> = made
        .iter()
        .filter(|m| m.durable_at < frozen_at - 0.05)
        .filter(|m| m.deleted_at.is_none_or(|d| d > frozen_at + 0.05))
        .collect();
    for m in &expected {
        let data = std::fs::read(mnt.join("live").join(&m.name))
            .unwrap_or_else(|e| panic!("{} (durable before the freeze) is missing: {e}", m.name));
        let hash = m.name.split('-').nth(1).unwrap();
        assert_eq!(
            blake3::hash(&data).to_hex().as_str(),
            hash,
            "{} (durable before the freeze) came back with other bytes",
            m.name
        );
    }
    expected.len()
}

fn frozen_capture_with_a_writer(fstype: &'static str) {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    // About half full.
    let disk = LiveDisk::new(&tmp, fstype, 140);
    let writer = Writer::start(&disk.mnt);
    std::thread::sleep(Duration::from_millis(700));
    // --dry-run says what it would do and touches nothing.
    let store = tmp.store();
    let dry = ok(&capture_args(&store, &disk.image, &["--dry-run"]));
    assert!(dry.contains("frozen while read"), "{dry}");
    assert!(!tmp.path("store").exists(), "--dry-run made a store");
    let (json, stderr) = capture_json(&tmp, &disk.image, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let made = writer.finish();
    assert!(stderr.contains("froze "), "{stderr}");
    let report = part1(&json);
    assert_eq!(report["consistency"], "frozen", "{json}");
    let freeze = report["freeze_seconds"].as_f64().expect("freeze_seconds");
    assert!(freeze > 0.0 && freeze < 61.0, "{json}");
    // Used-block awareness from the kernel's space map: ~150 MiB of seed files and the
    // writer's few MiB, not the 320 MiB partition with old data in its free space.
    let read = report["bytes_read"].as_u64().unwrap();
    let used: u64 = sh("df", &["-B1", "--output=used", p(&disk.mnt)])
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df --output=used");
    // Whole 1 MiB chunks are read where any block in them is used, and the writer's small
    // files are spread over the filesystem (XFS spreads them over its allocation groups, and
    // its log is not in df's count): some rounding, but most of the free space is skipped.
    assert!(
        read < used + (PART_SIZE - used) / 2,
        "{fstype}: {read} bytes read of a filesystem with {used} bytes used: the free space was read"
    );
    let rec = manifest_part1(&tmp);
    assert_eq!(rec["consistency"], "frozen", "{rec}");
    let frozen_at = rec["frozen_at"]
        .as_f64()
        .expect("frozen_at in the manifest");
    // show and the plan say how it was read.
    let show = ok(&["show", "latest", "--store", &tmp.store()]);
    assert!(show.contains("frozen"), "{show}");
    // The filesystem is writable again.
    std::fs::write(disk.mnt.join("after"), b"writable").unwrap();
    let checked = restore_and_check(&tmp, &disk, &made, frozen_at);
    assert!(
        checked > 10,
        "only {checked} writer files were made durable before the freeze: the test proves little"
    );
    eprintln!(
        "{fstype}: {} files written during the capture, {checked} checked, frozen {freeze:.2} s, {read} bytes read",
        made.len()
    );
}

#[test]
fn a_mounted_ext4_with_a_writer_is_frozen_while_read_and_restores_clean() {
    frozen_capture_with_a_writer("ext4");
}

#[test]
fn a_half_full_mounted_xfs_with_a_writer_stores_only_used_blocks_and_restores_clean() {
    frozen_capture_with_a_writer("xfs");
}

#[test]
fn what_cannot_be_made_consistent_is_refused_or_stored_marked_inconsistent() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let disk = LiveDisk::new(&tmp, "ext4", 40);
    // No time to freeze in: refused, naming the partition and the choices; no snapshot.
    let store = tmp.store();
    let o = restore(&capture_args(&store, &disk.image, &["--max-freeze", "0"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = error_line(&["capture --max-freeze 0"], &o);
    assert!(
        err.contains("partition 1")
            && err.contains("--consistency allow-inconsistent")
            && err.contains("no snapshot was written"),
        "{err}"
    );
    assert!(manifest_files(&tmp, "web-3").is_empty());
    // Asked for: stored with every block, marked inconsistent.
    let (json, stderr) = capture_json(
        &tmp,
        &disk.image,
        &["--max-freeze", "0", "--consistency", "allow-inconsistent"],
    );
    assert!(!stderr.contains("froze "), "{stderr}");
    let report = part1(&json);
    assert_eq!(report["consistency"], "inconsistent", "{json}");
    assert_eq!(report["bytes_read"].as_u64(), Some(PART_SIZE), "{json}");
    assert_eq!(manifest_part1(&tmp)["consistency"], "inconsistent");
    let show = ok(&["show", "latest", "--store", &tmp.store()]);
    assert!(show.contains("inconsistent"), "{show}");
}

#[test]
fn a_filesystem_that_cannot_be_frozen_is_stored_after_two_identical_reads() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let disk = LiveDisk::new(&tmp, "ext4", 20);
    // This host has no vfat: the test build is told ext4 cannot be frozen.
    let store = tmp.store();
    let o = restore_env(
        &capture_args(&store, &disk.image, &["--json"]),
        &[("RESTORE_NOFREEZE", "ext4")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = part1(&json);
    assert_eq!(report["consistency"], "double-read", "{json}");
    // Read at least twice, every block (free space cannot be skipped while it may change).
    assert!(
        report["bytes_read"].as_u64().unwrap() >= 2 * PART_SIZE,
        "{json}"
    );
    // The mounted source goes on changing after the capture (its superblock, say): the
    // restore is checked by fsck and its files, not against the source's bytes now.
    restore_and_check(&tmp, &disk, &[], 0.0);
}

#[test]
fn capture_killed_while_a_filesystem_is_frozen_leaves_it_writable() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let disk = LiveDisk::new(&tmp, "ext4", 20);
    // SIGKILL while frozen: the watchdog thaws as soon as its parent is gone. Killed on a
    // failed assertion too (dropped before the disk), or its open mount point keeps the
    // filesystem from being unmounted.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let store = tmp.store();
    let mut child = KillOnDrop(
        Command::new(hooks_bin())
            .args(capture_args(&store, &disk.image, &["--max-freeze", "20"]))
            .env("RESTORE_FAILPOINT", "while-frozen:1:pause=60")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("capture never reached the frozen read");
        if line.contains("failpoint while-frozen") {
            break;
        }
    }
    assert!(
        !writable_within(&disk.mnt, Duration::from_millis(500)),
        "the filesystem is not frozen during the capture's read"
    );
    // The frozen read does not yield to other disk users (the capture is otherwise idle
    // class): its writers wait for it.
    let class = sh("ionice", &["-p", &child.0.id().to_string()]);
    assert!(
        class.starts_with("best-effort"),
        "the frozen filesystem is read at I/O class {class:?}, not best-effort"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed = Instant::now();
    assert!(
        writable_within(&disk.mnt, Duration::from_secs(5)),
        "still frozen 5 s after capture was killed"
    );
    eprintln!("writable {:?} after SIGKILL", killed.elapsed());
    assert!(manifest_files(&tmp, "web-3").is_empty());

    // A capture stuck while frozen: thawed at --max-freeze plus one second, and the capture
    // fails (what it read may be torn) without writing a snapshot.
    let started = Instant::now();
    let o = restore_env(
        &capture_args(&store, &disk.image, &["--max-freeze", "2"]),
        &[("RESTORE_FAILPOINT", "while-frozen:1:pause=6")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("thaw watchdog: thawed"), "{all}");
    let err = error_line(&["capture stuck while frozen"], &o);
    assert!(err.contains("--max-freeze"), "{err}");
    assert!(manifest_files(&tmp, "web-3").is_empty());
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert!(writable_within(&disk.mnt, Duration::from_secs(1)));
}

/// Whether a write (and fsync) to the filesystem at `mnt` completes within `limit`. A write
/// to a frozen filesystem blocks until it is thawed; the writing thread is left to finish.
fn writable_within(mnt: &Path, limit: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = mnt.join(format!("probe-{}", now()));
    std::thread::spawn(move || {
        let ok = std::fs::File::create(&path)
            .and_then(|f| {
                use std::io::Write;
                (&f).write_all(b"x")?;
                f.sync_all()
            })
            .is_ok();
        let _ = tx.send(ok);
    });
    rx.recv_timeout(limit).unwrap_or(false)
}

#[test]
fn a_store_on_the_captured_filesystem_is_never_frozen() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let disk = LiveDisk::new(&tmp, "ext4", 20);
    let store = disk.mnt.join("backups");
    let started = Instant::now();
    let o = restore(&[
        "capture",
        "--store",
        p(&store),
        "--host",
        "web-3",
        "--no-progress",
        p(&disk.image),
    ]);
    assert!(started.elapsed() < Duration::from_secs(30), "capture hung");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = error_line(&["capture with the store on the source"], &o);
    assert!(
        err.contains("the store") && err.contains("partition 1"),
        "{err}"
    );
    assert!(!store.exists(), "the refused capture made a store");
    assert!(writable_within(&disk.mnt, Duration::from_secs(1)));
}

#[test]
fn the_nightly_units_are_valid_and_never_overlap() {
    require_tool("systemd-analyze");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd");
    let service = dir.join("restore-capture.service");
    let timer = dir.join("restore-capture.timer");
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no", p(&timer), p(&service)])
        .output()
        .unwrap();
    // Only the binary's install path may be missing on this machine.
    let complaints: Vec<String> = text(&o)
        .lines()
        .filter(|l| !l.contains("/usr/local/bin/restore") && !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
    let unit = std::fs::read_to_string(&service).unwrap();
    for want in [
        "IOSchedulingClass=idle",
        "flock --nonblock",
        "capture --all",
        "WorkingDirectory=/run/",
    ] {
        assert!(unit.contains(want), "the service lacks {want}");
    }
    let t = std::fs::read_to_string(&timer).unwrap();
    for want in ["Persistent=true", "RandomizedDelaySec=", "OnCalendar="] {
        assert!(t.contains(want), "the timer lacks {want}");
    }
    // The service's command line is one this binary accepts.
    let o = restore(&["capture", "--all", "--no-progress", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_filesystem_smaller_than_its_partition_is_seen_in_use() {
    if !have_root() {
        return;
    }
    let tmp = Tmp::new();
    let disk = LiveDisk::with_limit(&tmp, "ext4", 4, PART_SIZE - 3 * 4096 - 512);
    let dry = ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "web-3",
        "--dry-run",
        p(&disk.image),
    ]);
    assert!(
        dry.contains("partition 1") && dry.contains("frozen while read"),
        "{dry}"
    );
}

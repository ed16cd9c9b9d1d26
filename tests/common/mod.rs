//! Helpers for integration tests: build real disk images with the system's partitioning
//! tools, run the real binary, make loop devices that are always detached again.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod fixtures;
pub mod servers;
pub mod vm;

pub const MIB: u64 = 1 << 20;

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// A tool the test needs: missing means a broken setup, so the test fails loudly
/// (scripts/test.sh installs every one of them).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/test.sh, which installs what the tests need"
    );
}

/// Root is needed for loop devices. Without it: fail in CI, skip (with a message) elsewhere.
pub fn have_root() -> bool {
    let root = rustix_uid() == 0;
    if !root {
        assert!(
            !in_ci(),
            "this test needs root (loop devices) and CI is set: run the suite as root"
        );
        eprintln!("SKIPPED: not root; loop-device test not run");
    }
    root
}

fn rustix_uid() -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}

pub struct Tmp {
    pub dir: tempfile::TempDir,
}

impl Tmp {
    /// RESTORE_KEEP_TMP=1 keeps the directory (images, store) for a look after a failure.
    pub fn new() -> Tmp {
        // Commands run from a scratch directory under target/, not the repository: apply
        // saves its report in the working directory.
        static CWD: std::sync::Once = std::sync::Once::new();
        CWD.call_once(|| {
            let cwd = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwd");
            std::fs::create_dir_all(&cwd).expect("target/tmp/cwd");
            std::env::set_current_dir(&cwd).expect("cd target/tmp/cwd");
        });
        let mut dir = tempfile::Builder::new()
            .prefix("restore-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("temp dir");
        if std::env::var_os("RESTORE_KEEP_TMP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        Tmp { dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn store(&self) -> String {
        self.path("store").display().to_string()
    }
}

/// The binary under test: RESTORE_TEST_BIN (the static rescue build, say) or cargo's build.
pub fn bin() -> String {
    std::env::var("RESTORE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_restore").to_string())
}

pub fn restore(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RESTORE_FAILPOINT")
        .output()
        .expect("running restore")
}

/// The test build of the binary, which honours the test hooks (RESTORE_FAILPOINT,
/// RESTORE_EFIVARS); release and static builds ignore them. Fails loudly when the tests were
/// built without `--features test-hooks` (scripts/test.sh builds them with it).
pub fn hooks_bin() -> String {
    let bin = env!("CARGO_BIN_EXE_restore").to_string();
    let o = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("restore --version");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("test hooks"),
        "this test needs the test hooks: run it with `cargo test --features test-hooks` (scripts/test.sh does)"
    );
    bin
}

/// Runs restore with extra environment; with a test hook among it, the test build runs.
pub fn restore_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let hooks = env.iter().any(|(k, _)| {
        [
            "RESTORE_FAILPOINT",
            "RESTORE_EFIVARS",
            "RESTORE_NOW",
            "RESTORE_NOFREEZE",
        ]
        .contains(k)
    });
    let mut c = Command::new(if hooks { hooks_bin() } else { bin() });
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running restore")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
pub fn ok(args: &[&str]) -> String {
    let o = restore(args);
    assert!(o.status.success(), "restore {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one clear error line a failed run must end with (and no panic); returns it.
#[track_caller]
pub fn error_line(args: &[&str], o: &Output) -> String {
    assert!(
        !o.status.success(),
        "restore {args:?} should have failed:\n{}",
        text(o)
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "restore {args:?} panicked:\n{err}"
    );
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("error: "),
        "no error line from restore {args:?}:\n{err}"
    );
    // With --nocapture, the one line each refused input got.
    eprintln!("ERROR-LINE restore {args:?}: {last}");
    last
}

/// Runs a command that must fail, and returns its stderr (which must be one clear line).
#[track_caller]
pub fn fails(args: &[&str]) -> String {
    error_line(args, &restore(args))
}

/// The manifest files of `host` in the test's local store (not its catalogue or signatures).
pub fn manifest_files(tmp: &Tmp, host: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(tmp.path(&format!("store/snapshots/{host}")))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.ends_with(".json") && name != "index.json"
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `restore show latest --json` of the test's store.
pub fn show_json(tmp: &Tmp) -> serde_json::Value {
    serde_json::from_str(&ok(&["show", "latest", "--store", &tmp.store(), "--json"]))
        .expect("show JSON")
}

/// Writes an MBR partition table with sfdisk from a script ("label: dos\nstart=2048, ...").
#[track_caller]
pub fn sfdisk(image: &Path, script: &str) {
    require_tool("sfdisk");
    let mut child = Command::new("sfdisk")
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing the sfdisk script");
    assert!(
        child.wait().expect("sfdisk").success(),
        "sfdisk {script:?} failed"
    );
}

#[track_caller]
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(o.status.success(), "{cmd} {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub fn blank(path: &Path, size: u64) {
    let f = File::create(path).expect("create image");
    f.set_len(size).expect("size image");
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image");
    f.write_all_at(data, offset).expect("write image");
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).expect("open image");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read image");
    buf
}

pub fn file_hash(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path).expect("open"))
        .expect("hash");
    h.finalize()
}

#[track_caller]
pub fn assert_same(a: &Path, b: &Path) {
    let o = Command::new("cmp").args([a, b]).output().expect("cmp");
    assert!(
        o.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        text(&o)
    );
}

/// Compares the first `len` bytes of two files or devices.
#[track_caller]
pub fn assert_same_prefix(a: &Path, b: &Path, len: u64) {
    let o = Command::new("cmp")
        .arg("-n")
        .arg(len.to_string())
        .args([a, b])
        .output()
        .expect("cmp");
    assert!(
        o.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        text(&o)
    );
}

/// The sample server disk: GPT with a BIOS boot partition, an ext4 root with real files,
/// swap (all zero), a partition of random data with long zero runs, a gap in the numbering
/// (1, 2, 3, 5; 5 fills the rest of the disk), and non-zero boot code and post-table gap.
pub fn gpt_server_disk(path: &Path, size: u64, tmp: &Tmp) {
    require_tool("sgdisk");
    require_tool("mkfs.ext4");
    blank(path, size);
    sh(
        "sgdisk",
        &[
            "-n1:2048:+1M",
            "-t1:ef02",
            "-c1:bios",
            "-n2:0:+40M",
            "-t2:8300",
            "-c2:root",
            "-n3:0:+8M",
            "-t3:8200",
            "-n5:0:0",
            "-t5:8300",
            "-c5:data",
            p(path),
        ],
    );
    let root = tmp.path("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "web-3\n").unwrap();
    std::fs::write(root.join("random.bin"), random_bytes(7, 3 * MIB as usize)).unwrap();
    let text: String = (0..60_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(root.join("text.txt"), text).unwrap();
    let fs = tmp.path("root.ext4");
    sh("mkfs.ext4", &["-q", "-F", "-d", p(&root), p(&fs), "40M"]);
    write_at(path, 2 * MIB, &std::fs::read(&fs).unwrap());
    // Partition 1: a fake core image; partition 5: random data with a long zero run.
    write_at(path, MIB, &random_bytes(1, 60 * 1024));
    let data5 = 2048 * 512 + MIB + 40 * MIB + 8 * MIB;
    write_at(path, data5, &random_bytes(5, 3 * MIB as usize));
    write_at(
        path,
        data5 + 10 * MIB,
        &random_bytes(6, 2 * MIB as usize + 1234),
    );
    // Boot code and the post-table gap, as GRUB leaves them on an MBR-style install.
    write_at(path, 0, &random_bytes(2, 440));
    write_at(path, 34 * 512, &random_bytes(3, 30_000));
}

/// Where partition 5 of the sample server disk starts.
pub const DATA5: u64 = (2048 + 2048 + 40 * 2048 + 8 * 2048) * 512;

/// A copy of the sample server disk `src` damaged the way the incident did: boot code, GPT
/// header, two data chunks of partition 5.
pub fn damaged_copy(tmp: &Tmp, src: &Path) -> PathBuf {
    let d = tmp.path("damaged.img");
    std::fs::copy(src, &d).unwrap();
    write_at(&d, 0, &[0u8; 440]);
    write_at(&d, 512, &[0u8; 512]);
    write_at(&d, DATA5 + 100, &random_bytes(41, 5000));
    write_at(&d, DATA5 + 2 * MIB, &random_bytes(42, 5000));
    d
}

pub fn capture(tmp: &Tmp, host: &str, disks: &[&Path]) -> String {
    capture_with(tmp, host, disks, &[])
}

/// `capture` with more options (`--chunk-size 262144`, ...).
pub fn capture_with(tmp: &Tmp, host: &str, disks: &[&Path], extra: &[&str]) -> String {
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
    args.extend(disks.iter().map(|d| p(d)));
    ok(&args).trim().to_string()
}

pub fn apply_store(tmp: &Tmp, target: &Path) -> String {
    let store = tmp.store();
    ok(&[
        "apply",
        "--store",
        &store,
        "--yes",
        "--no-progress",
        p(target),
    ])
}

pub fn plan_json(tmp: &Tmp, target: &Path, extra: &[&str]) -> serde_json::Value {
    let store = tmp.store();
    let mut args = vec!["plan", "--store", &store, "--json", "--no-progress"];
    args.extend_from_slice(extra);
    args.push(p(target));
    serde_json::from_str(&ok(&args)).expect("plan JSON")
}

pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                n += count_files(&e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                n += 1;
            }
        }
    }
    n
}

/// A loop device over an image, detached when dropped (also when the test fails).
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    pub fn new(image: &Path, extra: &[&str]) -> Loop {
        require_tool("losetup");
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        args.push(p(image));
        let dev = sh("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup gave {dev:?}");
        Loop {
            dev: PathBuf::from(dev),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

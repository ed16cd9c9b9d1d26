//! The rescue image end to end, replaying the incident: a server disk with a real boot loader
//! is captured into a store on a second disk, damaged, and the rescue ISO (or the PXE bundle)
//! is booted in qemu with restore.auto=apply; afterwards the server disk boots to its marker.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use common::servers;
use common::vm::{self, Firmware, OVMF_VARS};
/// The unattended options every run uses: the store disk is the second virtio disk.
const CMDLINE: &str = "restore.mount=/dev/vdb:/mnt/store restore.store=/mnt/store/store restore.disk=/dev/vda restore.auto=apply restore.poweroff=1";

static BUILT: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// (rescue image dir, boot fixtures dir), built once per run.
fn built() -> Option<(PathBuf, PathBuf)> {
    if !have_root() {
        return None;
    }
    require_tool("qemu-system-x86_64");
    let mut b = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if b.is_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fixtures = root.join("target/boot-fixtures");
        sh(
            "bash",
            &[p(&root.join("tests/boot/fixtures.sh")), p(&fixtures)],
        );
        let out = root.join("target/rescue-test-image");
        let mut args = vec![
            p(&root.join("rescue-image/build.sh")).to_string(),
            "--out".into(),
            p(&out).into(),
        ];
        args.extend(["--cmdline".to_string(), CMDLINE.to_string()]);
        // The image trusts the test key: it restores only snapshots signed with it.
        args.extend([
            "--trust".to_string(),
            p(&root.join("tests/keys/rescue-test.pub")).into(),
        ]);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        sh("bash", &args);
        *b = Some((out, fixtures));
    }
    b.clone()
}

/// A store (one host) on an ext4 disk image, as a USB disk holding backups would be; its
/// snapshot signed with the key the test image trusts.
fn store_disk(tmp: &Tmp, server: &Path) -> PathBuf {
    store_disk_signed(tmp, server, true)
}

fn store_disk_signed(tmp: &Tmp, server: &Path, signed: bool) -> PathBuf {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/rescue-test.key");
    let store = tmp.store();
    let mut args = vec![
        "capture",
        "--store",
        &store,
        "--host",
        "web-3",
        "--no-progress",
    ];
    if signed {
        args.extend(["--sign-key", p(&key)]);
    }
    args.push(p(server));
    ok(&args);
    let img = tmp.path(if signed {
        "store-disk.img"
    } else {
        "unsigned-store-disk.img"
    });
    let dir = tmp.path("store-fs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(tmp.path("store"), dir.join("store")).unwrap();
    sh("mkfs.ext4", &["-q", "-F", "-d", p(&dir), p(&img), "256M"]);
    img
}

/// A server disk from the boot fixtures (`orig.img`), its snapshot on a store disk, and a copy
/// of it to damage (`server.img`).
fn server_and_store(fixtures: &Path, fixture: &str) -> (Tmp, PathBuf, PathBuf, PathBuf) {
    let tmp = Tmp::new();
    let orig = tmp.path("orig.img");
    std::fs::copy(fixtures.join(fixture), &orig).unwrap();
    let store = store_disk(&tmp, &orig);
    let server = tmp.path("server.img");
    std::fs::copy(&orig, &server).unwrap();
    (tmp, orig, store, server)
}

enum Boot<'a> {
    Iso(&'a Path),
    IsoUefi(&'a Path),
    Pxe(&'a Path),
}

/// Runs the rescue system with the server and store disks; returns (serial log, seconds).
fn rescue(tmp: &Tmp, how: Boot, server: &Path, store: &Path) -> (String, f64) {
    let mut args: Vec<String> = ["-nographic", "-no-reboot", "-m", "768"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match how {
        Boot::Iso(iso) => args.extend([
            "-nic".into(),
            "none".into(),
            "-cdrom".into(),
            p(iso).into(),
            "-boot".into(),
            "d".into(),
        ]),
        Boot::IsoUefi(iso) => {
            let vars = tmp.path("rescue-vars.fd");
            std::fs::copy(OVMF_VARS, &vars).unwrap();
            args.extend(["-nic".into(), "none".into(), "-cdrom".into(), p(iso).into()]);
            args.extend(vm::ovmf_args(&vars));
        }
        Boot::Pxe(dir) => args.extend([
            "-nic".into(),
            format!(
                "user,model=e1000,restrict=on,tftp={},bootfile=boot.ipxe",
                dir.display()
            ),
            "-boot".into(),
            "n".into(),
        ]),
    }
    args.extend([
        "-drive".into(),
        format!("file={},format=raw,if=virtio", server.display()),
    ]);
    args.extend([
        "-drive".into(),
        format!("file={},format=raw,if=virtio,readonly=on", store.display()),
    ]);
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg("240")
        .arg("qemu-system-x86_64")
        .args(&args)
        .output()
        .expect("qemu");
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (log, started.elapsed().as_secs_f64())
}

fn boots_with_vars(disk: &Path, vars: &Path) -> bool {
    vm::boots(disk, Firmware::UefiWith(vars), 90)
}

fn boots(_tmp: &Tmp, disk: &Path, uefi: bool) -> bool {
    vm::boots(disk, if uefi { Firmware::Uefi } else { Firmware::Bios }, 90)
}

#[track_caller]
fn assert_apply_ok(log: &str, secs: f64, what: &str) {
    assert!(
        log.contains("restore-rescue: ready"),
        "{what}: the rescue system did not come up:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.starts_with("restore-rescue: apply"))
        .unwrap_or("(no apply line)");
    assert!(
        line.starts_with("restore-rescue: apply ok"),
        "{what}: {line}\n{log}"
    );
    // Recorded for the issue note: from power-on of the VM to `apply ok`.
    eprintln!("TIMING {what}: {line}; {secs:.1} s of wall time for the whole rescue run");
}

#[test]
fn incident_bios_grub_repaired_by_the_rescue_iso() {
    let Some((image, fixtures)) = built() else {
        return;
    };
    let (tmp, orig, store, server) = server_and_store(&fixtures, "bios-gpt.img");
    write_at(&server, 0, &[0u8; 440]);
    write_at(&server, MIB, &random_bytes(1, MIB as usize));
    // First a store whose snapshot is not signed: the image trusts a key, so it is refused
    // and nothing is written.
    let unsigned_tmp = Tmp::new();
    let unsigned = store_disk_signed(&unsigned_tmp, &orig, false);
    let before = file_hash(&server);
    let (log, _) = rescue(
        &tmp,
        Boot::Iso(&image.join("restore-rescue.iso")),
        &server,
        &unsigned,
    );
    assert!(
        log.contains("restoring only snapshots signed by: rescue-test.pub")
            && log.contains("restore-rescue: apply failed")
            && log.contains("is not signed"),
        "{log}"
    );
    assert_eq!(
        before,
        file_hash(&server),
        "an unsigned snapshot wrote to the disk"
    );
    let (log, secs) = rescue(
        &tmp,
        Boot::Iso(&image.join("restore-rescue.iso")),
        &server,
        &store,
    );
    assert_apply_ok(&log, secs, "BIOS incident via ISO");
    assert!(
        log.contains("partition 1 (bios-boot)"),
        "the plan is printed:\n{log}"
    );
    assert_same(&orig, &server);
    assert!(
        boots(&tmp, &server, false),
        "the repaired server does not boot"
    );
}

#[test]
fn uefi_esp_destroyed_repaired_by_the_iso_under_ovmf() {
    let Some((image, fixtures)) = built() else {
        return;
    };
    let (tmp, orig, store, server) = server_and_store(&fixtures, "uefi-grub.img");
    write_at(&server, MIB, &random_bytes(2, 16 * MIB as usize));
    let (log, secs) = rescue(
        &tmp,
        Boot::IsoUefi(&image.join("restore-rescue.iso")),
        &server,
        &store,
    );
    assert_apply_ok(&log, secs, "UEFI ESP via ISO under OVMF");
    assert_same(&orig, &server);
    // On UEFI with efivarfs, apply created the boot entry for the restored ESP in NVRAM.
    assert!(
        log.contains("Created UEFI boot entry Boot"),
        "no NVRAM entry created:\n{log}"
    );
    assert!(
        log.contains("\\EFI\\debian\\grubx64.efi"),
        "the entry starts the vendor loader:\n{log}"
    );
    // It boots with the NVRAM the rescue system wrote, and with an empty one (fallback path).
    assert!(
        boots_with_vars(&server, &tmp.path("rescue-vars.fd")),
        "does not boot with the new NVRAM entry"
    );
    assert!(
        boots(&tmp, &server, true),
        "the repaired server does not boot under OVMF"
    );
}

#[test]
fn blank_replacement_disk_gets_a_full_restore() {
    let Some((image, fixtures)) = built() else {
        return;
    };
    let (tmp, orig, store, server) = server_and_store(&fixtures, "bios-gpt.img");
    blank(&server, std::fs::metadata(&orig).unwrap().len());
    let (log, secs) = rescue(
        &tmp,
        Boot::Iso(&image.join("restore-rescue.iso")),
        &server,
        &store,
    );
    assert_apply_ok(&log, secs, "full restore onto a blank disk via ISO");
    assert_same(&orig, &server);
    assert!(
        boots(&tmp, &server, false),
        "the restored server does not boot"
    );
}

#[test]
fn pxe_bundle_boots_over_tftp_and_repairs() {
    let Some((image, fixtures)) = built() else {
        return;
    };
    let (tmp, orig, store, server) = server_and_store(&fixtures, "bios-mbr.img");
    write_at(&server, 512, &random_bytes(3, 100_000));
    let (log, secs) = rescue(&tmp, Boot::Pxe(&image.join("pxe")), &server, &store);
    assert_apply_ok(&log, secs, "PXE over qemu's TFTP");
    assert!(
        log.contains("restore-rescue: network up"),
        "ip=dhcp brings the network up:\n{log}"
    );
    assert_same(&orig, &server);
    assert!(
        boots(&tmp, &server, false),
        "the repaired server does not boot"
    );
}

#[test]
fn image_is_reproducible() {
    let Some((_, _)) = built() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = sh("bash", &[p(&root.join("scripts/build-static.sh"))])
        .trim()
        .to_string();
    let mut sums = Vec::new();
    for n in 1..=2 {
        let out = root.join(format!("target/rescue-repro-{n}"));
        let o = Command::new("bash")
            .args([
                p(&root.join("rescue-image/build.sh")),
                "--out",
                p(&out),
                "--binary",
                &bin,
                "--trust",
                p(&root.join("tests/keys/rescue-test.pub")),
            ])
            .env("SOURCE_DATE_EPOCH", "1764400000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let files = [
            "vmlinuz",
            "initrd.img",
            "restore-rescue.iso",
            "pxe/boot.ipxe",
            "pxe/pxelinux.cfg/default",
        ];
        sums.push(
            files
                .iter()
                .map(|f| file_hash(&out.join(f)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(sums[0], sums[1], "two builds from the same inputs differ");
}

/// A rescue VM whose serial console (qemu's stdio, an 80x25 line as far as the guest knows)
/// the test reads and types into, as an operator on IPMI serial-over-LAN would.
struct SerialVm {
    child: std::process::Child,
    out: std::sync::Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking, in `text()`.
    pos: usize,
    started: Instant,
}

impl SerialVm {
    fn start(args: &[String]) -> SerialVm {
        use std::io::Read;
        use std::process::Stdio;
        // `timeout` bounds the VM even if the test process dies; dropping the guard stops it.
        let mut child = Command::new("timeout")
            .arg("180")
            .arg("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu");
        let out = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        SerialVm {
            child,
            out,
            pos: 0,
            started: Instant::now(),
        }
    }

    /// Everything the console printed so far, carriage returns dropped.
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace('\r', "")
    }

    /// What a screen would show, roughly: the log without terminal control sequences, which
    /// the firmware's serial console puts even in the middle of words.
    fn text(&self) -> String {
        strip_escapes(&self.log())
    }

    /// Waits (at most `secs`) for `text` in the console's text after what earlier calls
    /// found; returns the text from there up to and including `text`.
    #[track_caller]
    fn expect(&mut self, text: &str, secs: u64) -> String {
        let deadline = Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let all = self.text();
            if let Some(i) = all[self.pos..].find(text) {
                let end = self.pos + i + text.len();
                let seen = all[self.pos..end].to_string();
                self.pos = end;
                return seen;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                panic!(
                    "no {text:?} on the serial console after {:.0} s{}:\n{}",
                    self.started.elapsed().as_secs_f64(),
                    if exited { " (qemu exited)" } else { "" },
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the console has been quiet for `ms` (at most 10 s), and skips what it
    /// printed: the next `expect` looks only at what comes after.
    fn settle(&mut self, ms: u64) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut len = self.out.lock().unwrap().len();
        while Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let now = self.out.lock().unwrap().len();
            if now == len {
                break;
            }
            len = now;
        }
        self.pos = self.text().len();
    }

    /// Types `line` and Enter. `slow`: one key at a time, as GRUB's line editor (reading the
    /// firmware's console) drops keys that come faster than it draws.
    fn type_line(&mut self, line: &str, slow: bool) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("qemu stdin");
        if slow {
            for b in line.bytes() {
                stdin.write_all(&[b]).unwrap();
                stdin.flush().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        } else {
            stdin.write_all(line.as_bytes()).unwrap();
        }
        stdin.write_all(b"\r").unwrap();
        stdin.flush().unwrap();
    }

    /// Runs a shell command at the rescue prompt; returns what it printed.
    #[track_caller]
    fn run(&mut self, cmd: &str) -> String {
        self.type_line(cmd, false);
        self.expect(PROMPT, 30)
    }

    /// Waits for qemu to exit on its own (the guest powered off); its exit status.
    fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + std::time::Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for SerialVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM to `timeout`, which passes it on to qemu.
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The rescue shell's prompt (rescue-image/profile).
const PROMPT: &str = "rescue:/# ";

/// Boots the rescue ISO's kernel from GRUB's command line (`c`), with `options` after the
/// console options the ISO keeps in $con; returns the GRUB part of the console output.
fn boot_from_grub(vm: &mut SerialVm, options: &str) -> String {
    let menu = vm.expect("automatically in", 60);
    vm.type_line("c", false);
    vm.expect("grub>", 10);
    // GRUB draws its command-line screen in more than one go (two prompts).
    vm.settle(500);
    vm.type_line(&format!("linux /boot/vmlinuz $con {options}"), true);
    vm.expect("grub>", 30);
    vm.type_line("initrd /boot/initrd.img", true);
    vm.expect("grub>", 30);
    vm.type_line("boot", true);
    menu
}

/// Terminal control sequences removed, to read what a screen would show.
fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// Records the body of every POST, one line each, in the file `argv[2]`.
const WEBHOOK_RECEIVER: &str = r#"
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(log, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// The rescue system as an operator meets it on an 80x25 serial console, in one boot: GRUB's
/// menu drawn once and its command line; static `ip=`, `restore.dns=`; settings and a secret
/// from a `restore.env=` file on a USB-stick-like FAT disk (found by label); warnings for
/// malformed options; the unattended apply with webhook events; then the shell: autowrap on
/// and a size, the network as configured, a plain `udhcpc` that configures what it leases,
/// `exit` that gives a new shell, and `poweroff` that powers off.
#[test]
fn serial_console_network_env_file_webhooks_and_poweroff() {
    let Some((image, fixtures)) = built() else {
        return;
    };
    for tool in ["mkfs.vfat", "mcopy", "busybox", "md5sum"] {
        require_tool(tool);
    }
    let (tmp, orig, store, server) = server_and_store(&fixtures, "bios-gpt.img");
    write_at(&server, 0, &[0u8; 440]);

    // The settings file on a FAT stick, as written on a Windows laptop (CRLF), with a line
    // that is not KEY=VALUE.
    const SECRET: &str = "rescue-Secret-9f31c2";
    let env_file = tmp.path("rescue.env");
    std::fs::write(
        &env_file,
        format!(
            "# restore settings for rack 12\r\nRESTORE_STORE=/mnt/store/store\r\n\
             AWS_ACCESS_KEY_ID=rescue-key\r\nexport AWS_SECRET_ACCESS_KEY=\"{SECRET}\"\r\n\
             RESTORE_NOTIFY_MESSAGE='rack 12'\r\nthis is not a setting\r\n"
        ),
    )
    .unwrap();
    let stick = tmp.path("stick.img");
    blank(&stick, 32 * MIB);
    sh("mkfs.vfat", &["-n", "RESCUEENV", p(&stick)]);
    sh("mcopy", &["-i", p(&stick), p(&env_file), "::/rescue.env"]);

    // A running server's disk for a live capture at the rescue shell: an ESP (vfat, cannot
    // be frozen) and an ext4, both to be mounted read-write in the guest.
    let live = tmp.path("live.img");
    blank(&live, 96 * MIB);
    sh(
        "sgdisk",
        &[
            "-n1:2048:+32M",
            "-t1:ef00",
            "-n2:67584:+48M",
            "-t2:8300",
            p(&live),
        ],
    );
    sh(
        "mkfs.vfat",
        &["-n", "LIVEESP", "--offset=2048", p(&live), "32768"],
    );
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            &format!("offset={}", 67584 * 512),
            p(&live),
            "48M",
        ],
    );

    // Webhooks reach the host through qemu's guestfwd. Its `tcp:` form is one connection
    // for the whole run; `cmd:` starts a relay per connection the guest opens.
    let hooks = tmp.path("hooks.jsonl");
    let port = servers::free_port();
    let mut cmd = servers::python();
    cmd.args(["-c", WEBHOOK_RECEIVER, &port.to_string(), p(&hooks)]);
    let _receiver = servers::Server::start("webhook receiver", cmd, port, tmp.path("hooks.log"));

    let mut args: Vec<String> = ["-nographic", "-no-reboot", "-m", "768"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "-nic".into(),
        format!(
            "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:busybox nc 127.0.0.1 {port}"
        ),
        "-cdrom".into(),
        p(&image.join("restore-rescue.iso")).into(),
        "-boot".into(),
        "d".into(),
    ]);
    for (disk, ro) in [
        (&server, false),
        (&store, true),
        (&stick, true),
        (&live, false),
    ] {
        args.extend([
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio{}",
                disk.display(),
                if ro { ",readonly=on" } else { "" }
            ),
        ]);
    }
    let started = Instant::now();
    let mut vm = SerialVm::start(&args);
    const OPTIONS: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off restore.dns=10.0.2.3 \
         restore.env=LABEL=RESCUEENV:/rescue.env restore.mount=/dev/vdb:/mnt/store \
         restore.host=web-3 restore.disk=/dev/vda restore.auto=apply \
         restore.notify=http://10.0.2.100:8080/hook restore.bogus=1 restore.mount=nocolon";
    let menu = boot_from_grub(&mut vm, OPTIONS);
    let boot = vm.expect("restore-rescue: ready", 90);
    assert!(
        boot.contains(&format!("console=ttyS0,115200 {OPTIONS}")),
        "GRUB lost keys typed on the serial line:\n{boot}"
    );
    let auto = vm.expect(PROMPT, 90);
    let ready_s = started.elapsed().as_secs_f64();

    // One menu, drawn once (not once per GRUB terminal on the same serial line).
    let screen = &menu;
    assert_eq!(
        screen
            .matches("keys to select which entry is highlighted")
            .count(),
        1,
        "the GRUB menu is drawn more than once:\n{screen}"
    );
    // Every malformed option: one warning line each.
    for warning in [
        "restore-rescue: warning: restore.bogus=: unknown option, ignored",
        "restore-rescue: warning: restore.mount=nocolon: not DEVICE:DIR",
        "restore-rescue: warning: restore.env=LABEL=RESCUEENV:/rescue.env: line 6 is not KEY=VALUE",
    ] {
        assert!(boot.contains(warning), "no warning {warning:?}:\n{boot}");
    }
    assert!(
        boot.contains(
            "set RESTORE_STORE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY RESTORE_NOTIFY_MESSAGE"
        ),
        "the restore.env= file is not read:\n{boot}"
    );
    assert!(
        boot.contains("restore-rescue: network up on eth0: 10.0.2.15/24"),
        "static ip= is not configured:\n{boot}"
    );
    // The unattended apply found the store through RESTORE_STORE from the file.
    assert!(
        auto.contains("restore-rescue: apply ok") && auto.contains("boot region boot-code"),
        "the unattended apply with settings from restore.env= did not succeed:\n{auto}"
    );
    assert!(
        !auto.contains("restore-rescue: warning"),
        "late warnings:\n{auto}"
    );

    // The shell: the terminal's size, the network, the settings, DHCP by hand.
    let size = vm.run("stty size; echo cols=$COLUMNS lines=$LINES");
    assert!(
        size.contains("\n25 80\n") && size.contains("cols=80 lines=25"),
        "the serial console has no size:\n{size}"
    );
    let net = vm.run("ip -4 addr show dev eth0; ip route; cat /etc/resolv.conf");
    for want in [
        "inet 10.0.2.15/24",
        "default via 10.0.2.2 dev eth0",
        "nameserver 10.0.2.3",
    ] {
        assert!(net.contains(want), "no {want:?}:\n{net}");
    }
    // Man pages and completions are installed; `man` shows a command's page.
    let man = vm.run(
        "ls /usr/share/man/man1/restore.1 /usr/share/man/man1/restore-apply.1 \
         /usr/share/bash-completion/completions/restore; man restore-apply | head -3",
    );
    assert!(
        !man.contains("No such file") && man.contains("Usage: restore apply"),
        "the man pages or completions are not installed, or `man` does not show them:\n{man}"
    );
    let secret = vm.run("echo \"$AWS_SECRET_ACCESS_KEY\" | md5sum");
    let want = sh("sh", &["-c", "printf '%s\\n' \"$1\" | md5sum", "_", SECRET]);
    assert!(
        secret.contains(want.split_whitespace().next().unwrap()),
        "the shell does not have the secret from restore.env=:\n{secret}"
    );
    let dhcp = vm.run(
        "ip addr flush dev eth0; udhcpc -q -n >/dev/null 2>&1; ip -4 addr show dev eth0; echo DHCP-$((40 + 2))",
    );
    assert!(
        dhcp.contains("inet 10.0.2.15/24") && dhcp.contains("DHCP-42"),
        "a plain udhcpc configures nothing:\n{dhcp}"
    );
    // A live capture in the guest (its own kernel, so real vfat and FIFREEZE): the ESP
    // mounted read-write is read until two reads agree, the ext4 with a process writing to
    // it is frozen while its blocks are read, and both are thawed and writable after.
    vm.run(
        "mkdir -p /mnt/esp /mnt/data && mount -t vfat /dev/vdd1 /mnt/esp && \
         mount -t ext4 /dev/vdd2 /mnt/data && echo loader > /mnt/esp/BOOTX64.EFI",
    );
    vm.run(
        "(i=0; while [ $i -lt 300 ]; do echo $i > /mnt/data/f$i; i=$((i+1)); usleep 20000; done) &",
    );
    let live = vm.run(
        "restore capture --store /tmp/live --host live --progress none /dev/vdd; echo capture-rc=$?; \
         echo after > /mnt/esp/AFTER.TXT && echo after > /mnt/data/after && echo WRITABLE",
    );
    let words = live.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("capture-rc=0")
            && words.contains("vdd partition 1: double-read")
            && words.contains("vdd partition 2: frozen, frozen for")
            && words.contains("WRITABLE"),
        "live capture in the rescue shell: the mounted ESP is not double-read or the ext4 not frozen and thawed:\n{live}"
    );
    vm.run("kill %1 2>/dev/null; wait; umount /mnt/esp /mnt/data; echo unmounted");
    // `exit` gives a new shell (PID 1 is init), with the terminal set up again.
    vm.type_line("exit", false);
    vm.expect("built-in shell", 30);
    vm.expect(PROMPT, 30);
    vm.type_line("poweroff", false);
    let status = vm.wait_exit(60);
    let secs = started.elapsed().as_secs_f64();
    let log = vm.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "`poweroff` at the shell did not power the VM off ({status:?}):\n{log}"
    );
    // Autowrap is switched on (the firmware left it off) before the banner and the plan,
    // and again by every shell: by setup, the first shell, the one after `exit`.
    let wrap_on = log.find("\x1b[?7h").unwrap_or(usize::MAX);
    assert!(
        wrap_on < log.find("restore-rescue: ready").unwrap_or(0)
            && log.matches("\x1b[?7h").count() >= 3,
        "autowrap is not switched on:\n{log:?}"
    );
    assert!(
        !log.contains(SECRET),
        "the secret from restore.env= appeared on the console"
    );
    eprintln!(
        "TIMING serial console: ready after {ready_s:.1} s; powered off by `poweroff` after {secs:.1} s"
    );
    assert_same(&orig, &server);

    // Webhook events, in order: the plan, progress, done (of the apply).
    let bodies = std::fs::read_to_string(&hooks).unwrap_or_default();
    let events: Vec<serde_json::Value> = bodies
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for e in &events {
        eprintln!("WEBHOOK {}: {}", e["event"], e["text"]);
    }
    assert_eq!(
        names.iter().filter(|n| **n == "plan").count(),
        1,
        "the plan is announced more than once:\n{bodies}"
    );
    let mut want = ["plan", "progress", "done"].into_iter().peekable();
    for n in &names {
        if want.peek() == Some(n) {
            want.next();
        }
    }
    assert!(
        want.peek().is_none() && !names.contains(&"failed"),
        "webhook events {names:?}, not plan, progress, done in order:\n{bodies}\n{log}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["text"].as_str().is_some_and(|t| !t.is_empty())),
        "an event without text:\n{bodies}"
    );
    assert!(
        events.iter().any(|e| e["message"] == "rack 12"),
        "RESTORE_NOTIFY_MESSAGE from restore.env= is not in the events:\n{bodies}"
    );
}

/// What runs as PID 1 in the LVM test VM (`rdinit=/lvm-test`): the server's volume group is
/// made on /dev/vda1, a logical volume mounted read-write while a process writes files named
/// by their MD5 (each logged with its time once synced), captured at default settings, then
/// a capture killed while its snapshot exists; the restore onto /dev/vdb is activated alone
/// and checked with e2fsck and file by file. Every result is a line the host test reads.
const LVM_GUEST: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /mnt/data /mnt/restored; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock/lvm /run/lvm
for m in virtio_pci virtio_blk ext4 crc32c_generic; do modprobe -q $m; done
for m in $(cat /dm-modules); do insmod /dm/$m.ko; done
n=0; while [ ! -b /dev/vdc ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
say() { echo "LVMTEST $*"; }
trap 'say ABORTED; poweroff -f' EXIT
lvm pvcreate -q -y /dev/vda1 && lvm vgcreate -q vg /dev/vda1 && lvm lvcreate -q -y -n data -L 96M vg \
  && mkfs.ext4 -q /dev/mapper/vg-data && mount /dev/mapper/vg-data /mnt/data && say VG-READY
# A filesystem two devices above a partition (a device-mapper device on a logical volume on
# /dev/vdc1), mounted read-write: it is in use, and frozen.
lvm pvcreate -q -y /dev/vdc1 && lvm vgcreate -q vg2 /dev/vdc1 && lvm lvcreate -q -y -n low -L 32M vg2 \
  && dmsetup create stacked --table "0 $(blockdev --getsz /dev/mapper/vg2-low) linear /dev/mapper/vg2-low 0" && dmsetup mknodes stacked \
  && mkfs.ext4 -q /dev/mapper/stacked && mkdir -p /mnt/stacked && mount /dev/mapper/stacked /mnt/stacked \
  && echo x > /mnt/stacked/f && say STACKED-READY
restore capture --store /tmp/store3 --host stacked --progress none /dev/vdc 2>&1 | sed 's/^/STACKED /'
umount /mnt/stacked
# Data before the capture, then a writer: new files, synced, logged with the second they were durable.
i=0; while [ $i -lt 40 ]; do dd if=/dev/urandom of=/mnt/data/tmp bs=64k count=4 2>/dev/null; s=$(md5sum < /mnt/data/tmp | cut -c1-32); mv /mnt/data/tmp /mnt/data/$s; i=$((i+1)); done; sync
(i=0; while [ ! -e /tmp/stop ]; do
   dd if=/dev/urandom of=/mnt/data/tmp bs=4k count=$((i % 32 + 1)) 2>/dev/null
   s=$(md5sum < /mnt/data/tmp | cut -c1-32); mv /mnt/data/tmp /mnt/data/$s; sync
   echo "$(date +%s) $s" >> /tmp/durable; i=$((i+1))
 done) &
sleep 2
restore capture --dry-run --store /tmp/store --host lvm /dev/vda 2>&1 | sed 's/^/DRYRUN /'
t0=$(date +%s)
restore capture --store /tmp/store --host lvm --progress none /dev/vda 2>&1 | sed 's/^/CAPTURE /'
say "T0 $t0"
say "LVS-AFTER $(lvm lvs --noheadings -o lv_name vg | tr -d ' ' | tr '\n' ',')"
restore show latest --store /tmp/store --host lvm 2>&1 | grep -i "partition 1" | sed 's/^/SHOW /'
# A capture killed while its snapshot exists: the watchdog removes the snapshot.
restore capture --store /tmp/store2 --host lvm --progress none --limit-read 1 /dev/vda > /tmp/killed.log 2>&1 &
pid=$!
end=$(($(date +%s) + 30)); while ! lvm lvs --noheadings -o lv_name vg 2>/dev/null | grep -q restore-capture && [ $(date +%s) -lt $end ]; do usleep 100000; done
say "SNAPSHOT-WHILE-RUNNING $(lvm lvs --noheadings -o lv_name vg | tr -d ' ' | tr '\n' ',')"
kill -9 $pid
t=$(date +%s); end=$((t + 20)); while lvm lvs --noheadings -o lv_name vg 2>/dev/null | grep -q restore-capture && [ $(date +%s) -lt $end ]; do usleep 100000; done
say "AFTER-KILL $(lvm lvs --noheadings -o lv_name vg | tr -d ' ' | tr '\n' ',') in $(($(date +%s) - t)) s"
sed 's/^/KILLED /' /tmp/killed.log
touch /tmp/stop; wait
restore apply --store /tmp/store --host lvm --yes --no-progress /dev/vdb > /tmp/apply.log 2>&1; say "APPLY-RC $?"
umount /mnt/data && lvm vgchange -q -an vg >/dev/null
# The restored volume group alone (the original's PV has the same UUIDs).
F='devices { filter = [ "a|^/dev/vdb|", "r|.*|" ] }'
lvm vgchange -q -ay --config "$F" vg >/dev/null
say "RESTORED-LVS $(lvm lvs --config "$F" --noheadings -o lv_name vg | tr -d ' ' | tr '\n' ',')"
e2fsck -fn /dev/mapper/vg-data > /tmp/fsck.log 2>&1; say "FSCK-RC $?"
sed 's/^/FSCK /' /tmp/fsck.log
mount -o ro /dev/mapper/vg-data /mnt/restored
bad=0; good=0; missing=0
for f in /mnt/restored/*; do
  n=${f##*/}; [ ${#n} -eq 32 ] || continue
  if [ "$(md5sum < $f | cut -c1-32)" = "$n" ]; then good=$((good+1)); else bad=$((bad+1)); say "TORN $n"; fi
done
while read t s; do
  [ "$t" -lt "$t0" ] || continue
  [ -e /mnt/restored/$s ] || { missing=$((missing+1)); say "MISSING $s (durable at $t)"; }
done < /tmp/durable
say "FILES good=$good bad=$bad missing=$missing durable-before=$(awk -v t=$t0 '$1 < t' /tmp/durable | wc -l)"
umount /mnt/restored
trap - EXIT
say DONE
poweroff -f
"#;

/// Copies `program` (following links) into `root` at the path it is run by, with every
/// shared library `ldd` names, at the same paths: a glibc program in a busybox initramfs.
fn add_program(root: &Path, name: &str, program: &Path) {
    let real = std::fs::canonicalize(program).unwrap();
    let mut files = vec![(PathBuf::from(format!("/usr/sbin/{name}")), real.clone())];
    for line in sh("ldd", &[p(&real)]).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push((PathBuf::from(path), PathBuf::from(path)));
        }
    }
    for (at, from) in files {
        let dst = root.join(at.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
}

/// The LVM path of a live capture, on the rescue image's Debian kernel (this host has no
/// device-mapper): a logical volume mounted read-write with a writer is captured through an
/// LVM snapshot, which is gone afterwards (also when the capture is killed: its watchdog
/// removes it); the restored volume group holds only the volume, and the volume is
/// fsck-clean with every file durable before the capture intact. lvm2 and e2fsprogs come
/// from this host, with their libraries, in an initramfs appended to the image's.
#[test]
fn lvm_volume_is_captured_through_a_snapshot_in_a_vm() {
    let Some((image, _)) = built() else {
        return;
    };
    for tool in [
        "lvm",
        "dmsetup",
        "mkfs.ext4",
        "e2fsck",
        "ldd",
        "cpio",
        "sgdisk",
    ] {
        require_tool(tool);
    }
    let tmp = Tmp::new();
    // The kernel package build.sh unpacked, with every module.
    let kernel = std::fs::read_dir(image.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("linux-image-")
        })
        .expect("the kernel package in the rescue image's cache");
    let kver = std::fs::read_dir(kernel.join("lib/modules"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name();
    let modules = kernel.join("lib/modules").join(&kver);
    let root = tmp.path("overlay");
    std::fs::create_dir_all(root.join("dm")).unwrap();
    // dm-snapshot and what it needs, in load order, from modules.dep.
    let deps = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
    let dep_of = |name: &str| -> Vec<String> {
        let line = deps
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .unwrap()
                    .ends_with(&format!("/{name}.ko"))
            })
            .unwrap_or_else(|| panic!("{name} not in modules.dep"));
        line.split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .map(|s| s.to_string())
            .collect()
    };
    let mut order: Vec<String> = Vec::new();
    for path in dep_of("dm-snapshot")
        .into_iter()
        .rev()
        .chain(["kernel/drivers/md/dm-snapshot.ko".to_string()])
    {
        let name = Path::new(&path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::fs::copy(
            modules.join(&path),
            root.join("dm").join(format!("{name}.ko")),
        )
        .unwrap();
        order.push(name);
    }
    std::fs::write(root.join("dm-modules"), order.join("\n")).unwrap();
    for (name, program) in [
        ("lvm", "/usr/sbin/lvm"),
        ("dmsetup", "/usr/sbin/dmsetup"),
        ("mkfs.ext4", "/usr/sbin/mkfs.ext4"),
        ("e2fsck", "/usr/sbin/e2fsck"),
    ] {
        add_program(&root, name, Path::new(program));
    }
    std::fs::create_dir_all(root.join("etc/lvm")).unwrap();
    std::fs::write(
        root.join("etc/lvm/lvm.conf"),
        "devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 }\n\
         activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n\
         global { use_lvmpolld = 0 }\n",
    )
    .unwrap();
    std::fs::write(root.join("lvm-test"), LVM_GUEST).unwrap();
    sh("chmod", &["755", p(&root.join("lvm-test"))]);
    let overlay = tmp.path("overlay.cpio");
    sh(
        "sh",
        &[
            "-c",
            "cd \"$1\" && find . | cpio -o -H newc -R 0:0 --quiet > \"$2\"",
            "_",
            p(&root),
            p(&overlay),
        ],
    );
    // Two initramfs archives one after the other: the kernel unpacks both. The plain one
    // first (as early microcode is): after a compressed one, the next must start 4-aligned.
    let initrd = tmp.path("initrd.img");
    let mut joined = std::fs::read(&overlay).unwrap();
    joined.extend(std::fs::read(image.join("initrd.img")).unwrap());
    std::fs::write(&initrd, joined).unwrap();

    let (server, target) = (tmp.path("server.img"), tmp.path("target.img"));
    let stacked = tmp.path("stacked.img");
    blank(&server, 192 * MIB);
    blank(&target, 192 * MIB);
    blank(&stacked, 64 * MIB);
    for disk in [&server, &stacked] {
        sh("sgdisk", &["-n1:2048:0", "-t1:8e00", p(disk)]);
    }
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["240", "qemu-system-x86_64"])
        .args(["-nographic", "-no-reboot", "-m", "768", "-nic", "none"])
        .args(["-kernel", p(&image.join("vmlinuz")), "-initrd", p(&initrd)])
        .args(["-append", "console=ttyS0 rdinit=/lvm-test quiet panic=-1"])
        .args([
            "-drive",
            &format!("file={},format=raw,if=virtio", p(&server)),
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=virtio", p(&target)),
        ])
        .args([
            "-drive",
            &format!("file={},format=raw,if=virtio", p(&stacked)),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("qemu");
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let secs = started.elapsed().as_secs_f64();
    let said = |key: &str| -> String {
        log.lines()
            .filter_map(|l| l.split_once("LVMTEST "))
            .find_map(|(_, rest)| rest.strip_prefix(key))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("the guest never said {key:?} ({secs:.0} s):\n{log}"))
    };
    for l in log.lines().filter(|l| {
        [
            "LVMTEST", "CAPTURE", "DRYRUN", "SHOW", "KILLED", "FSCK", "STACKED",
        ]
        .iter()
        .any(|k| l.starts_with(k))
    }) {
        eprintln!("{l}");
    }
    said("DONE");
    said("STACKED-READY");
    assert!(
        log.lines()
            .any(|l| l.starts_with("STACKED") && l.contains("vdc partition 1: frozen")),
        "a filesystem mounted two devices above the partition was not seen (and frozen):\n{log}"
    );
    let capture: Vec<&str> = log.lines().filter(|l| l.starts_with("CAPTURE ")).collect();
    let capture = capture.join("\n");
    assert!(
        capture.contains("vda partition 1: snapshot")
            && capture.contains("made snapshot vg/data-restore-capture"),
        "the mounted volume was not read through a snapshot:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("DRYRUN")
            && l.contains("snapshot (through an LVM snapshot of vg/data at /mnt/data)")),
        "`capture --dry-run` does not say the volume is read through a snapshot:\n{log}"
    );
    assert_eq!(
        said("LVS-AFTER"),
        "data,",
        "the snapshot is left after the capture:\n{log}"
    );
    // Of the 191 MiB partition, only the volume's used blocks and the metadata are stored:
    // its free blocks (from the bitmaps in the snapshot, ~60 MiB) and the volume group's free
    // extents (~95 MiB, where the snapshot's copy-on-write space lived) are not.
    let free: u64 = capture
        .split(" free space")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no free-space count in the capture's summary:\n{capture}"));
    assert!(
        free >= 120,
        "only {free} chunks of free space left out of the capture:\n{capture}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("SHOW") && l.contains("snapshot")),
        "`show` does not say the partition was read through a snapshot:\n{log}"
    );
    assert!(
        said("SNAPSHOT-WHILE-RUNNING").contains("data-restore-capture"),
        "the slow capture made no snapshot:\n{log}"
    );
    assert!(
        said("AFTER-KILL").starts_with("data, in"),
        "the watchdog did not remove the snapshot of a killed capture:\n{log}"
    );
    assert_eq!(said("APPLY-RC"), "0", "the restore failed:\n{log}");
    assert_eq!(
        said("RESTORED-LVS"),
        "data,",
        "the restored volume group is not the server's (a snapshot in its metadata?):\n{log}"
    );
    assert_eq!(
        said("FSCK-RC"),
        "0",
        "the restored volume is not fsck-clean:\n{log}"
    );
    let files = said("FILES");
    assert!(
        files.contains(" bad=0 missing=0 ")
            && !files.contains("durable-before=0")
            && !files.starts_with("good=0"),
        "files torn or lost in the restored volume ({files}):\n{log}"
    );
    eprintln!("TIMING lvm VM: {secs:.1} s; {files}");
}

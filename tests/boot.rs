//! Boot loaders, proven by booting: disks with real GRUB (BIOS, UEFI), shim and EXTLINUX
//! installs are captured, damaged, repaired with plan + apply, and booted in qemu (SeaBIOS or
//! OVMF) until the kernel's initramfs prints its marker. check-boot must name each broken link.

mod common;
use common::*;
use std::path::Path;

use common::fixtures::{boot_entry_var, boots, check_boot, copy_fixture, fixtures};
use common::vm::Firmware;

/// Repairs `target` with plan + apply and boots it.
#[track_caller]
fn repair_and_boot(tmp: &Tmp, original: &Path, target: &Path, fw: Firmware) {
    repair_and_boot_with(tmp, original, target, fw, &[]);
}

/// `repair_and_boot` with more arguments for apply (--trust, say).
#[track_caller]
fn repair_and_boot_with(tmp: &Tmp, original: &Path, target: &Path, fw: Firmware, extra: &[&str]) {
    let store = tmp.store();
    let mut args = vec!["apply", "--store", &store, "--yes", "--no-progress"];
    args.extend_from_slice(extra);
    args.push(p(target));
    let out = ok(&args);
    assert!(
        out.contains("Boot chain of") && out.contains("whole"),
        "{out}"
    );
    if std::fs::metadata(original).unwrap().len() == std::fs::metadata(target).unwrap().len() {
        assert_same(original, target);
    } else {
        assert_eq!(read_at(original, 0, 440), read_at(target, 0, 440));
    }
    let (whole, report) = check_boot(tmp, target);
    assert!(whole, "check-boot after apply:\n{report}");
    assert!(
        boots(tmp, target, fw, 90),
        "{} does not boot after the restore",
        target.display()
    );
}

#[test]
fn bios_grub_on_gpt() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "bios-gpt.img");
    assert!(
        boots(&tmp, &orig, Firmware::Bios, 90),
        "the fixture itself must boot"
    );
    capture(&tmp, "bios-gpt", &[&orig]);
    let m = show_json(&tmp);
    let loader = &m["disks"][0]["boot_loaders"][0];
    assert_eq!(loader["kind"], "grub-bios", "{m:#}");
    assert_eq!(loader["core_lba"], 2048);
    assert_eq!(loader["core_location"], "bios-boot partition 1");
    assert_eq!(m["disks"][0]["boot_chain_whole"], true);

    // The incident: boot code zeroed. It no longer boots, check-boot says why.
    let t = tmp.path("t.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, 0, &[0u8; 440]);
    assert!(
        !boots(&tmp, &t, Firmware::Bios, 25),
        "a disk without boot code must not boot"
    );
    let (whole, report) = check_boot(&tmp, &t);
    assert!(
        !whole && report.contains("BROKEN grub-bios: boot code"),
        "{report}"
    );
    repair_and_boot(&tmp, &orig, &t, Firmware::Bios);

    // The BIOS boot partition overwritten.
    write_at(&t, MIB, &random_bytes(5, MIB as usize));
    let (whole, report) = check_boot(&tmp, &t);
    assert!(
        !whole && report.contains("BROKEN grub-bios: core image"),
        "{report}"
    );
    let plan = plan_json(&tmp, &t, &[]);
    assert!(
        plan["totals"]["bytes_to_write"].as_u64().unwrap() <= MIB,
        "{plan:#}"
    );
    repair_and_boot(&tmp, &orig, &t, Firmware::Bios);

    // The first MiB zeroed: table, boot code, gap.
    write_at(&t, 0, &vec![0u8; MIB as usize]);
    repair_and_boot(&tmp, &orig, &t, Firmware::Bios);
}

#[test]
fn bios_grub_on_mbr_post_mbr_gap() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "bios-mbr.img");
    // A signed capture: verified, restored and booted as before.
    let (sk, pk) = (tmp.path("k.key"), tmp.path("k.pub"));
    ok(&["key", "generate", "--secret", p(&sk), "--public", p(&pk)]);
    ok(&[
        "capture",
        "--store",
        &tmp.store(),
        "--host",
        "bios-mbr",
        "--sign-key",
        p(&sk),
        "--no-progress",
        p(&orig),
    ]);
    let t = tmp.path("t.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, 512, &random_bytes(6, 2048 * 512 - 512));
    let (whole, report) = check_boot(&tmp, &t);
    assert!(!whole, "{report}");
    let plan = plan_json(&tmp, &t, &[]);
    let written: Vec<&str> = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] != "keep")
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(written, vec!["post-table-gap"], "{plan:#}");
    repair_and_boot_with(&tmp, &orig, &t, Firmware::Bios, &["--trust", p(&pk)]);
}

#[test]
fn uefi_grub_esp_gpt_and_new_disk() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "uefi-grub.img");
    assert!(
        boots(&tmp, &orig, Firmware::Uefi, 90),
        "the fixture itself must boot"
    );
    capture(&tmp, "uefi", &[&orig]);
    let m = show_json(&tmp);
    let loader = &m["disks"][0]["boot_loaders"][0];
    assert_eq!(loader["kind"], "uefi");
    assert!(
        loader["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "/EFI/BOOT/BOOTX64.EFI"),
        "{loader:#}"
    );

    // ESP overwritten.
    let t = tmp.path("t.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, MIB, &random_bytes(7, 8 * MIB as usize));
    let (whole, report) = check_boot(&tmp, &t);
    assert!(!whole && report.contains("FAT filesystem"), "{report}");
    repair_and_boot(&tmp, &orig, &t, Firmware::Uefi);

    // GPT gone: both copies.
    let size = std::fs::metadata(&t).unwrap().len();
    write_at(&t, 0, &vec![0u8; 34 * 512]);
    write_at(&t, size - 33 * 512, &vec![0u8; 33 * 512]);
    repair_and_boot(&tmp, &orig, &t, Firmware::Uefi);

    // A new, larger disk with an empty NVRAM: the fallback path carries the boot.
    let new = tmp.path("new-disk.img");
    blank(&new, 256 * MIB);
    repair_and_boot(&tmp, &orig, &new, Firmware::Uefi);
}

#[test]
fn uefi_shim_esp_overwritten() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "uefi-shim.img");
    capture(&tmp, "shim", &[&orig]);
    let m = show_json(&tmp);
    let loaders = m["disks"][0]["boot_loaders"][0]["loaders"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        loaders.contains(&"shim".into()) && loaders.contains(&"grub".into()),
        "{loaders:?}"
    );
    let t = tmp.path("t.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, MIB, &random_bytes(8, 64 * MIB as usize));
    repair_and_boot(&tmp, &orig, &t, Firmware::Uefi);
}

#[test]
fn extlinux_on_mbr() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "extlinux-mbr.img");
    capture(&tmp, "ext", &[&orig]);
    let t = tmp.path("t.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, 0, &[0u8; 440]);
    write_at(&t, MIB, &[0u8; 512]);
    let (whole, report) = check_boot(&tmp, &t);
    assert!(!whole && report.contains("volume boot record"), "{report}");
    repair_and_boot(&tmp, &orig, &t, Firmware::Bios);
}

/// A way to break a disk image in place.
type Damage = Box<dyn Fn(&Path)>;

/// check-boot names each kind of broken link, and is clean after apply.
#[test]
fn check_boot_names_each_broken_link() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let gpt = copy_fixture(&tmp, &dir, "bios-gpt.img");
    let (whole, report) = check_boot(&tmp, &gpt);
    assert!(
        !whole && report.contains("no store"),
        "a missing store is an error:\n{report}"
    );
    capture(&tmp, "h", &[&gpt]);
    let o = restore(&["check-boot", p(&gpt)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "whole chain without a store:\n{}",
        text(&o)
    );
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "boot signature",
            Box::new(|d: &Path| write_at(d, 510, &[0, 0])),
            "BROKEN boot signature",
        ),
        (
            "boot code",
            Box::new(|d: &Path| write_at(d, 0, &[0u8; 440])),
            "BROKEN grub-bios: boot code",
        ),
        (
            "core pointer",
            Box::new(|d: &Path| write_at(d, 0x5c, &100_000u64.to_le_bytes())),
            "boot code points at LBA 100000, outside the bios-boot partition 1",
        ),
        (
            "sector list",
            Box::new(|d: &Path| write_at(d, 2048 * 512 + 0x1f4, &50_000u64.to_le_bytes())),
            "sector list entry LBA 50000",
        ),
        (
            "core image content",
            Box::new(|d: &Path| write_at(d, 2049 * 512 + 77, b"changed")),
            "differs from the core image captured",
        ),
    ];
    for (what, damage, expect) in cases {
        let t = tmp.path("broken.img");
        std::fs::copy(&gpt, &t).unwrap();
        damage(&t);
        let (whole, report) = check_boot(&tmp, &t);
        assert!(
            !whole && report.contains(expect),
            "{what}: expected {expect:?} in:\n{report}"
        );
        let json = restore(&["check-boot", "--json", "--store", &tmp.store(), p(&t)]);
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["whole"], false);
        apply_store(&tmp, &t);
        let (whole, report) = check_boot(&tmp, &t);
        assert!(whole, "{what}: not clean after apply:\n{report}");
    }
    // UEFI: the fallback loader deleted from the ESP (mtools, at the partition's offset).
    require_tool("mdel");
    let uefi_tmp = Tmp::new();
    let uefi = copy_fixture(&uefi_tmp, &dir, "uefi-grub.img");
    capture(&uefi_tmp, "u", &[&uefi]);
    let t = uefi_tmp.path("nofallback.img");
    std::fs::copy(&uefi, &t).unwrap();
    sh(
        "mdel",
        &[
            "-i",
            &format!("{}@@{}", t.display(), MIB),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    );
    let (whole, report) = check_boot(&uefi_tmp, &t);
    assert!(
        !whole && report.contains("BOOTX64.EFI is missing"),
        "{report}"
    );
    apply_store(&uefi_tmp, &t);
    assert!(check_boot(&uefi_tmp, &t).0);
    // EXTLINUX: wrong hidden sectors.
    let ext_tmp = Tmp::new();
    let ext = copy_fixture(&ext_tmp, &dir, "extlinux-mbr.img");
    capture(&ext_tmp, "e", &[&ext]);
    let t = ext_tmp.path("hidden.img");
    std::fs::copy(&ext, &t).unwrap();
    write_at(&t, MIB + 0x1c, &0u32.to_le_bytes());
    let (whole, report) = check_boot(&ext_tmp, &t);
    assert!(
        !whole
            && report.contains("volume boot record says LBA 0, the partition starts at LBA 2048"),
        "{report}"
    );
    apply_store(&ext_tmp, &t);
    assert!(check_boot(&ext_tmp, &t).0);
}

/// UEFI boot entries: written through efivarfs when restoring a real disk on a UEFI system
/// (here an efivarfs-shaped directory named by RESTORE_EFIVARS), never for an image file, and
/// a plan says why not when it does not write one.
#[test]
fn uefi_boot_entry_for_a_restored_esp() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "uefi-shim.img");
    capture(&tmp, "shim", &[&orig]);
    let target = tmp.path("t.img");
    blank(&target, std::fs::metadata(&orig).unwrap().len());
    // Not on UEFI here: the plan says so, and that the fallback path carries the boot.
    let plan = plan_json(&tmp, &target, &[]);
    let entry = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["component"] == "boot-entry")
        .unwrap()
        .clone();
    assert_eq!(entry["action"], "skip");
    assert!(
        entry["reason"].as_str().unwrap().contains("fallback path"),
        "{entry:#}"
    );
    // A "UEFI system": efivarfs-shaped directory with one unrelated entry.
    let vars = tmp.path("efivars");
    std::fs::create_dir_all(&vars).unwrap();
    std::fs::write(
        vars.join("Timeout-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [7, 0, 0, 0, 5, 0],
    )
    .unwrap();
    let lo = Loop::new(&target, &[]);
    let env = [("RESTORE_EFIVARS", p(&vars))];
    let o = restore_env(
        &[
            "plan",
            "--store",
            &tmp.store(),
            "--json",
            "--no-progress",
            p(&lo.dev),
        ],
        &env,
    );
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entry = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["component"] == "boot-entry")
        .unwrap()
        .clone();
    assert_eq!(entry["action"], "write", "{entry:#}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("\\EFI\\debian\\shimx64.efi"),
        "{entry:#}"
    );
    let o = restore_env(
        &[
            "apply",
            "--store",
            &tmp.store(),
            "--yes",
            "--no-progress",
            p(&lo.dev),
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("Created UEFI boot entry Boot0000"),
        "{}",
        text(&o)
    );
    let var = vars.join("Boot0000-8be4df61-93ca-11d2-aa0d-00e098032b8c");
    let raw = std::fs::read(&var).unwrap();
    assert_eq!(&raw[..4], &[7, 0, 0, 0], "attribute prefix");
    let path: Vec<u8> = "\\EFI\\debian\\shimx64.efi"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    assert!(
        raw.windows(path.len()).any(|w| w == path),
        "the entry names the loader"
    );
    let order = std::fs::read(vars.join("BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c")).unwrap();
    assert_eq!(&order[4..6], &[0, 0], "first in BootOrder");
    // The next plan finds the entry in place; --no-nvram never writes one.
    let o = restore_env(
        &[
            "plan",
            "--store",
            &tmp.store(),
            "--detailed-exitcode",
            "--no-progress",
            p(&lo.dev),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = restore_env(
        &[
            "plan",
            "--store",
            &tmp.store(),
            "--no-nvram",
            "--json",
            "--no-progress",
            p(&lo.dev),
        ],
        &env,
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("--no-nvram"));
}

/// A new layout on new hardware: the operator partitioned the new disk differently (the BIOS
/// boot partition and /boot moved); --keep-table restores into it and patches GRUB's boot
/// code and core-image sector list, and EXTLINUX's hidden sectors, so both still boot.
#[test]
fn layout_change_moves_partitions_and_boot_loaders_follow() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "bios-gpt.img");
    capture(&tmp, "bios-gpt", &[&orig]);
    // BIOS boot partition at 3 MiB instead of 1 MiB, 2 MiB large; the others after it.
    let new = tmp.path("new-layout.img");
    blank(&new, 200 * MIB);
    sh(
        "sgdisk",
        &[
            "-n1:6144:+2M",
            "-t1:ef02",
            "-n2:0:+100M",
            "-t2:8300",
            "-n3:0:0",
            "-t3:8300",
            p(&new),
        ],
    );
    let plan = plan_json(&tmp, &new, &["--keep-table"]);
    let p1 = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "partition 1")
        .unwrap()
        .clone();
    assert_eq!(p1["offset"], 6144 * 512, "{p1:#}");
    assert!(!p1["patches"].as_array().unwrap().is_empty(), "{p1:#}");
    ok(&[
        "apply",
        "--store",
        &tmp.store(),
        "--keep-table",
        "--yes",
        "--no-progress",
        p(&new),
    ]);
    let o = restore(&["check-boot", p(&new)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("LBA 6144"), "{}", text(&o));
    assert!(
        boots(&tmp, &new, Firmware::Bios, 90),
        "the moved GRUB install does not boot"
    );
    assert_eq!(
        plan_json(&tmp, &new, &["--keep-table"])["totals"]["bytes_to_write"],
        0
    );

    // A BIOS boot partition too small for the core image is refused, nothing written.
    let small = tmp.path("small-bios.img");
    blank(&small, 200 * MIB);
    sh(
        "sgdisk",
        &[
            "-n1:2048:+8K",
            "-t1:ef02",
            "-n2:4096:+100M",
            "-n3:0:0",
            p(&small),
        ],
    );
    let before = file_hash(&small);
    let err = fails(&[
        "apply",
        "--store",
        &tmp.store(),
        "--keep-table",
        "--yes",
        p(&small),
    ]);
    assert!(
        err.contains("too small for GRUB's core image") || err.contains("core image needs"),
        "{err}"
    );
    assert_eq!(before, file_hash(&small));

    // EXTLINUX: its partition moved from 1 MiB to 3 MiB.
    let ext_tmp = Tmp::new();
    let ext = copy_fixture(&ext_tmp, &dir, "extlinux-mbr.img");
    capture(&ext_tmp, "ext", &[&ext]);
    let moved = ext_tmp.path("moved.img");
    blank(&moved, 160 * MIB);
    sfdisk(
        &moved,
        "label: dos\nstart=6144, size=204800, type=83, bootable\n",
    );
    ok(&[
        "apply",
        "--store",
        &ext_tmp.store(),
        "--keep-table",
        "--yes",
        "--no-progress",
        p(&moved),
    ]);
    assert_eq!(
        read_at(&moved, 6144 * 512 + 0x1c, 4),
        6144u32.to_le_bytes(),
        "hidden sectors patched"
    );
    assert!(
        boots(&ext_tmp, &moved, Firmware::Bios, 90),
        "the moved EXTLINUX install does not boot"
    );
}

/// An ESP without the removable fallback path (only \EFI\debian\grubx64.efi, as a distribution
/// install that relies on its NVRAM entry), restored where no NVRAM entry can be written: apply
/// adds \EFI\BOOT\BOOTX64.EFI, the disk boots on firmware with an empty NVRAM, and the next plan
/// has nothing to do.
#[test]
fn missing_fallback_loader_is_added_when_no_nvram_entry_can_be_written() {
    let Some(dir) = fixtures() else { return };
    require_tool("mdel");
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "uefi-grub.img");
    sh(
        "mdel",
        &[
            "-i",
            &format!("{}@@{}", orig.display(), MIB),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    );
    assert!(
        !boots(&tmp, &orig, Firmware::Uefi, 30),
        "without a fallback or NVRAM entry it must not boot"
    );
    capture(&tmp, "vendor-only", &[&orig]);
    let new = tmp.path("new.img");
    blank(&new, std::fs::metadata(&orig).unwrap().len());
    let plan = plan_json(&tmp, &new, &[]);
    let fb = plan["disks"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["component"] == "boot-fallback")
        .unwrap()
        .clone();
    assert_eq!(fb["action"], "write", "{fb:#}");
    assert!(
        fb["reason"]
            .as_str()
            .unwrap()
            .contains("/EFI/debian/grubx64.efi -> /EFI/BOOT/BOOTX64.EFI"),
        "{fb:#}"
    );
    let out = apply_store(&tmp, &new);
    assert!(out.contains("Added the removable fallback loader"), "{out}");
    assert!(
        boots(&tmp, &new, Firmware::Uefi, 90),
        "the fallback path does not boot the restored disk"
    );
    let again = restore(&[
        "plan",
        "--store",
        &tmp.store(),
        "--detailed-exitcode",
        "--no-progress",
        p(&new),
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(check_boot(&tmp, &new).0 || text(&again).contains("fallback loader present"));
}

/// check-boot on a UEFI system also follows the NVRAM entries that name this disk's ESP.
#[test]
fn check_boot_follows_nvram_entries_that_name_the_disk() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let disk = copy_fixture(&tmp, &dir, "uefi-grub.img");
    let vars = tmp.path("efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let probe: serde_json::Value =
        serde_json::from_str(&ok(&["probe", "--json", p(&disk)])).unwrap();
    let guid = probe["partitions"][0]["guid"].as_str().unwrap().to_string();
    let entry = |file: &str| boot_entry_var(&guid, 1, 2048, 64 * 2048, file);
    let var = vars.join("Boot0001-8be4df61-93ca-11d2-aa0d-00e098032b8c");
    std::fs::write(&var, entry("\\EFI\\debian\\grubx64.efi")).unwrap();
    let env = [("RESTORE_EFIVARS", p(&vars))];
    let o = restore_env(&["check-boot", p(&disk)], &env);
    assert!(
        o.status.success() && text(&o).contains("nvram: Boot0001"),
        "{}",
        text(&o)
    );
    std::fs::write(&var, entry("\\EFI\\debian\\missing.efi")).unwrap();
    let o = restore_env(&["check-boot", p(&disk)], &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("missing.efi, which does not exist on the ESP"),
        "{}",
        text(&o)
    );
}

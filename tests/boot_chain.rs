//! check-boot judges every firmware path a disk was set up for (with and without a store),
//! and apply's UEFI phases (ESP file edits, NVRAM entries) are finished by plan + apply
//! after a crash at any of their boundaries.

mod common;
use common::fixtures::{EFI_GLOBAL, boot_entry_var, boots, copy_fixture, fixtures};
use common::vm::Firmware;
use common::*;
use std::path::Path;

fn check_boot(args: &[&str], disk: &Path) -> (i32, String) {
    let mut all = vec!["check-boot"];
    all.extend_from_slice(args);
    all.push(p(disk));
    let o = restore(&all);
    let code = o.status.code().unwrap_or(-1);
    assert!(matches!(code, 0 | 1), "{}", text(&o));
    (code, text(&o))
}

/// The seed incident on a disk set up for both firmwares: boot code zeroed and the BIOS boot
/// partition overwritten. The UEFI path is still whole; check-boot must not say "whole".
#[test]
fn the_incident_on_a_hybrid_disk_breaks_its_bios_path() {
    let Some(dir) = fixtures() else { return };
    let tmp = Tmp::new();
    let orig = copy_fixture(&tmp, &dir, "hybrid.img");
    let (code, out) = check_boot(&[], &orig);
    assert!(
        code == 0 && out.contains("bios: ok") && out.contains("uefi: ok"),
        "{out}"
    );
    capture(&tmp, "hybrid", &[&orig]);
    let t = tmp.path("incident.img");
    std::fs::copy(&orig, &t).unwrap();
    write_at(&t, 0, &[0u8; 440]);
    write_at(&t, MIB, &random_bytes(11, MIB as usize));

    let (code, out) = check_boot(&[], &t);
    assert_eq!(code, 1, "no store: {out}");
    assert!(
        out.contains("bios: broken: boot code is zero") && out.contains("uefi: ok"),
        "{out}"
    );
    assert_eq!(check_boot(&["--firmware", "uefi"], &t).0, 0);
    let (code, out) = check_boot(&["--firmware", "bios"], &t);
    assert!(code == 1 && !out.contains("uefi"), "{out}");
    let json = restore(&["check-boot", "--json", p(&t)]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["whole"], false);
    assert_eq!(v["paths"][0]["firmware"], "bios");
    assert_eq!(v["paths"][0]["whole"], false);
    assert_eq!(v["paths"][1]["whole"], true);

    // With the snapshot, the BIOS boot partition's bytes are compared too.
    let (code, out) = check_boot(&["--store", &tmp.store()], &t);
    assert!(
        code == 1 && out.contains("bios-boot partition 1: differs from the snapshot"),
        "{out}"
    );
    apply_store(&tmp, &t);
    assert_same(&orig, &t);
    let (code, out) = check_boot(&["--store", &tmp.store()], &t);
    assert!(
        code == 0 && out.contains("bios: ok") && out.contains("uefi: ok"),
        "{out}"
    );
    assert!(
        boots(&tmp, &t, Firmware::Bios, 90),
        "the repaired hybrid disk does not boot by BIOS"
    );
}

/// Boot bytes the tool recognises no loader in are still compared with the snapshot.
#[test]
fn with_a_store_unrecognised_boot_bytes_are_compared() {
    let tmp = Tmp::new();
    let src = tmp.path("server.img");
    // Random boot code (no known loader) and a BIOS boot partition holding random bytes.
    gpt_server_disk(&src, 96 * MIB, &tmp);
    capture(&tmp, "web-3", &[&src]);
    let (code, out) = check_boot(&["--store", &tmp.store()], &src);
    assert_eq!(code, 0, "{out}");
    for (what, offset, len) in [("boot code", 0, 440), ("BIOS boot partition", MIB, 4096)] {
        let t = tmp.path("t.img");
        std::fs::copy(&src, &t).unwrap();
        write_at(&t, offset, &random_bytes(99, len));
        let (code, out) = check_boot(&["--store", &tmp.store()], &t);
        assert!(
            code == 1 && out.contains("differs from the snapshot") && out.contains("bios: broken"),
            "{what}: {out}"
        );
    }
}

/// Kills apply at the ESP and NVRAM phase boundaries; plan + apply then finish, and the
/// result equals an apply that was never interrupted.
#[test]
fn uefi_phases_are_finished_after_a_crash_at_every_boundary() {
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
    capture(&tmp, "u", &[&orig]);
    let size = std::fs::metadata(&orig).unwrap().len();
    let reference = tmp.path("reference.img");
    blank(&reference, size);
    let out = apply_store(&tmp, &reference);
    assert!(out.contains("fallback loader"), "{out}");
    for point in [
        "before-esp-files:1",
        "before-table-backup:1",
        "before-table-primary:1",
    ] {
        let t = tmp.path("t.img");
        blank(&t, size);
        let o = restore_env(
            &[
                "apply",
                "--store",
                &tmp.store(),
                "--yes",
                "--no-progress",
                p(&t),
            ],
            &[("RESTORE_FAILPOINT", point)],
        );
        assert!(!o.status.success(), "{point} did not stop apply");
        apply_store(&tmp, &t);
        assert_same(&reference, &t);
        let again = plan_json(&tmp, &t, &[]);
        assert_eq!(
            again["totals"]["components_to_write"], 0,
            "{point}: {again:#}"
        );
    }

    // NVRAM: a real disk (loop device) on a "UEFI system" whose NVRAM has a stale entry for
    // the ESP and an unrelated one.
    if !have_root() {
        return;
    }
    let shim = copy_fixture(&tmp, &dir, "uefi-shim.img");
    let stmp = Tmp::new();
    capture(&stmp, "s", &[&shim]);
    let probe: serde_json::Value =
        serde_json::from_str(&ok(&["probe", "--json", p(&shim)])).unwrap();
    let guid = probe["partitions"][0]["guid"].as_str().unwrap().to_string();
    let vars = stmp.path("efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let var = |n: &str| vars.join(format!("{n}-{EFI_GLOBAL}"));
    std::fs::write(
        var("Boot0000"),
        boot_entry_var(&guid, 1, 2048, 64 * 2048, "\\EFI\\old\\grubx64.efi"),
    )
    .unwrap();
    std::fs::write(
        var("Boot0001"),
        boot_entry_var(
            "11111111-2222-3333-4444-555555555555",
            1,
            34,
            100,
            "\\pxe.efi",
        ),
    )
    .unwrap();
    std::fs::write(var("BootOrder"), [7, 0, 0, 0, 0, 0, 1, 0]).unwrap();
    let target = stmp.path("t.img");
    blank(&target, std::fs::metadata(&shim).unwrap().len());
    let lo = Loop::new(&target, &[]);
    let env_vars = p(&vars).to_string();
    let apply = |failpoint: Option<&str>| {
        let mut env = vec![("RESTORE_EFIVARS", env_vars.as_str())];
        if let Some(f) = failpoint {
            env.push(("RESTORE_FAILPOINT", f));
        }
        restore_env(
            &[
                "apply",
                "--store",
                &stmp.store(),
                "--yes",
                "--no-progress",
                p(&lo.dev),
            ],
            &env,
        )
    };
    let o = apply(Some("before-nvram:1"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        !var("Boot0002").exists(),
        "NVRAM was written before its phase"
    );
    let o = apply(Some("after-boot-entry:1"));
    assert!(!o.status.success(), "{}", text(&o));
    // The new entry exists and is first before the stale one is removed.
    assert!(var("Boot0002").exists() && var("Boot0000").exists());
    let order = std::fs::read(var("BootOrder")).unwrap();
    assert_eq!(
        &order[4..],
        &[2, 0, 1, 0],
        "new entry first, stale one out of the order"
    );
    let o = apply(None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !var("Boot0000").exists(),
        "the stale entry is removed on the rerun"
    );
    assert!(var("Boot0001").exists(), "an unrelated entry is kept");
    drop(lo);
    assert_same(&shim, &target);
}

//! Booting a disk image in qemu and looking for the marker the test kernel's initramfs prints.

use std::path::Path;
use std::process::Command;

pub const MARKER: &str = "RESTORE-TEST-BOOTED";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Clone, Copy)]
pub enum Firmware<'a> {
    Bios,
    /// OVMF with an empty NVRAM (a fresh copy of the vars template, kept next to the disk):
    /// only the removable fallback path can boot.
    Uefi,
    /// OVMF with this NVRAM file (as a rescue run left it).
    UefiWith(&'a Path),
}

/// The qemu arguments for UEFI firmware with `vars` as its NVRAM.
pub fn ovmf_args(vars: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ]
}

/// Boots `disk` copy-on-write (the image is not changed) and says whether the marker appeared
/// within `timeout_s` seconds.
pub fn boots(disk: &Path, fw: Firmware, timeout_s: u32) -> bool {
    let mut args: Vec<String> = [
        "-nographic",
        "-no-reboot",
        "-m",
        "384",
        "-nic",
        "none",
        "-snapshot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-drive".into());
    args.push(format!("file={},format=raw,if=virtio", disk.display()));
    let fresh = disk.with_extension("vars.fd");
    match fw {
        Firmware::Bios => {}
        Firmware::Uefi => {
            std::fs::copy(OVMF_VARS, &fresh).expect("copying the OVMF vars template");
            args.extend(ovmf_args(&fresh));
        }
        Firmware::UefiWith(vars) => args.extend(ovmf_args(vars)),
    }
    let out = Command::new("timeout")
        .arg(timeout_s.to_string())
        .arg("qemu-system-x86_64")
        .args(&args)
        .output()
        .expect("running qemu");
    let _ = std::fs::remove_file(&fresh);
    String::from_utf8_lossy(&out.stdout).contains(MARKER)
}

//! The boot-loader test disks (tests/boot/fixtures.sh: real GRUB, shim and EXTLINUX installs
//! with a Debian kernel), built once per run and kept in target/ between runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::vm::{self, Firmware, OVMF_CODE};
use super::*;

static FIXTURES: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Builds (once per run; kept in target/ between runs) the boot-loader test disks.
pub fn fixtures() -> Option<PathBuf> {
    if !have_root() {
        return None;
    }
    for tool in [
        "qemu-system-x86_64",
        "grub-mkimage",
        "mkfs.vfat",
        "mcopy",
        "extlinux",
        "busybox",
        "cpio",
        "sgdisk",
        "sfdisk",
    ] {
        require_tool(tool);
    }
    assert!(
        Path::new(OVMF_CODE).exists(),
        "OVMF is not installed: run scripts/test.sh"
    );
    let mut f = FIXTURES.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/boot-fixtures");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boot/fixtures.sh");
        sh("bash", &[p(&script), p(&out)]);
        *f = Some(out);
    }
    f.clone()
}

/// Boots `disk` and says whether the test kernel's marker appeared.
pub fn boots(_tmp: &Tmp, disk: &Path, fw: Firmware, timeout_s: u32) -> bool {
    vm::boots(disk, fw, timeout_s)
}

pub fn copy_fixture(tmp: &Tmp, dir: &Path, name: &str) -> PathBuf {
    let dst = tmp.path(name);
    std::fs::copy(dir.join(name), &dst).unwrap();
    dst
}

pub fn check_boot(tmp: &Tmp, disk: &Path) -> (bool, String) {
    let o = restore(&["check-boot", "--store", &tmp.store(), p(disk)]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
    (o.status.success(), text(&o))
}

/// An efivarfs Boot#### file (attributes + EFI_LOAD_OPTION) for a loader on the GPT partition
/// whose GUID is `guid` (text form), as firmware or efibootmgr would write it.
pub fn boot_entry_var(guid: &str, partition: u32, start: u64, size: u64, file: &str) -> Vec<u8> {
    let hex = guid.replace('-', "");
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mixed = [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ];
    let mut path = vec![4u8, 1, 42, 0];
    path.extend(partition.to_le_bytes());
    path.extend(start.to_le_bytes());
    path.extend(size.to_le_bytes());
    path.extend(mixed);
    path.extend([2, 2]);
    let name: Vec<u8> = file
        .encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect();
    path.extend([4, 4]);
    path.extend(((4 + name.len()) as u16).to_le_bytes());
    path.extend(name);
    path.extend([0x7f, 0xff, 4, 0]);
    let mut v = vec![7, 0, 0, 0];
    v.extend(1u32.to_le_bytes());
    v.extend((path.len() as u16).to_le_bytes());
    v.extend(
        "debian"
            .encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes()),
    );
    v.extend(path);
    v
}

pub const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

//! Boot loaders: recognising what sits in the boot code of LBA 0 and in partitions, so probe,
//! plan and check-boot can name it.

/// Names the boot code in the first 440 bytes of LBA 0.
pub fn recognise_boot_code(lba0: &[u8]) -> String {
    let code = &lba0[..lba0.len().min(440)];
    let contains = |needle: &[u8]| code.windows(needle.len()).any(|w| w == needle);
    if code.iter().all(|&b| b == 0) {
        "none (boot code is zero)".into()
    } else if contains(b"GRUB") {
        "GRUB (i386-pc boot.img)".into()
    } else if contains(b"SYSLINUX") || contains(b"Missing OS") {
        "SYSLINUX/EXTLINUX MBR".into()
    } else {
        format!(
            "unrecognised boot code ({} non-zero bytes)",
            code.iter().filter(|&&b| b != 0).count()
        )
    }
}

/// Names a boot loader found at the start of a partition (a volume boot record).
pub fn recognise_volume_boot(sector: &[u8]) -> Option<String> {
    let contains = |needle: &[u8]| sector.windows(needle.len()).any(|w| w == needle);
    if contains(b"EXTLINUX") || contains(b"SYSLINUX") {
        Some("EXTLINUX/SYSLINUX volume boot record".into())
    } else {
        None
    }
}

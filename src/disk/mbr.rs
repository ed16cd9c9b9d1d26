//! Classic MBR recognition: a boot sector signature alone does not make a partition table
//! (a whole-disk FAT filesystem has one too), so entries are sanity-checked first.

/// Disk signature, copy-protect word, four entries and the 0x55AA signature.
pub const TABLE_START: u64 = 440;
pub const TABLE_END: u64 = 512;

pub fn has_boot_signature(lba0: &[u8]) -> bool {
    lba0.len() >= 512 && lba0[510] == 0x55 && lba0[511] == 0xAA
}

/// The (type, start, sectors) of the four primary entries.
pub fn primary_entries(lba0: &[u8]) -> [(u8, u32, u32); 4] {
    let mut out = [(0, 0, 0); 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let e = &lba0[446 + i * 16..462 + i * 16];
        *slot = (
            e[4],
            u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")),
            u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")),
        );
    }
    out
}

pub fn has_protective_entry(lba0: &[u8]) -> bool {
    has_boot_signature(lba0) && primary_entries(lba0).iter().any(|e| e.0 == 0xEE)
}

fn looks_like_volume_boot_record(lba0: &[u8]) -> bool {
    &lba0[3..11] == b"NTFS    "
        || &lba0[3..11] == b"EXFAT   "
        || &lba0[0x36..0x39] == b"FAT"
        || &lba0[0x52..0x57] == b"FAT32"
}

/// True when LBA 0 holds a plausible classic partition table.
pub fn looks_like_mbr(lba0: &[u8], disk_sectors: u64) -> bool {
    if !has_boot_signature(lba0) || looks_like_volume_boot_record(lba0) {
        return false;
    }
    let mut used = 0;
    for i in 0..4 {
        let boot = lba0[446 + i * 16];
        if boot != 0 && boot != 0x80 {
            return false;
        }
    }
    for (kind, start, sectors) in primary_entries(lba0) {
        if kind == 0 {
            continue;
        }
        if start == 0 || sectors == 0 || u64::from(start) >= disk_sectors {
            return false;
        }
        used += 1;
    }
    used > 0
}

pub fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

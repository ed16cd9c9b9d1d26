//! Filesystem signatures: what a partition holds, and where its critical structures
//! (superblocks, boot sectors) sit, so a quick plan can check those first.

use super::Disk;

/// Recognises the filesystem at `offset`; None when nothing known is found.
pub fn detect(disk: &Disk, offset: u64, size: u64) -> Option<String> {
    let head_len = size.min(72 * 1024);
    let head = disk.read_vec(offset, head_len).ok()?;
    let at = |o: usize, sig: &[u8]| head.len() >= o + sig.len() && &head[o..o + sig.len()] == sig;
    if at(1024 + 56, &[0x53, 0xEF]) {
        let compat = u32_at(&head, 1024 + 92);
        let incompat = u32_at(&head, 1024 + 96);
        let ro_compat = u32_at(&head, 1024 + 100);
        // ext4 features: extents, 64bit, flex_bg (incompat) or huge_file/dir_nlink (ro_compat).
        let name = if incompat & (0x40 | 0x80 | 0x200) != 0 || ro_compat & (0x8 | 0x20) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return Some(name.into());
    }
    if at(0, b"XFSB") {
        return Some("xfs".into());
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return Some("btrfs".into());
    }
    if at(0, b"LUKS\xba\xbe") {
        return Some("luks".into());
    }
    if at(3, b"NTFS    ") {
        return Some("ntfs".into());
    }
    if at(3, b"EXFAT   ") {
        return Some("exfat".into());
    }
    if at(510, &[0x55, 0xAA]) && (at(0x52, b"FAT32") || at(0x36, b"FAT1") || at(0x36, b"FAT ")) {
        return Some("vfat".into());
    }
    if at(4096 - 10, b"SWAPSPACE2") {
        return Some("swap".into());
    }
    None
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

/// Byte offsets (relative to the partition) of structures whose damage makes a filesystem
/// unusable: for ext2/3/4 the primary and the first backup superblocks, for XFS the
/// allocation-group headers, for FAT the boot sector, its backup and the FATs.
pub fn critical_offsets(disk: &Disk, offset: u64, size: u64, fs: Option<&str>) -> Vec<u64> {
    let mut out = vec![0];
    if size > 0 {
        out.push(size - 1);
    }
    match fs {
        Some("ext2" | "ext3" | "ext4") => {
            out.push(1024);
            if let Ok(sb) = disk.read_vec(offset + 1024, 1024) {
                let log = u32_at(&sb, 24);
                let per_group = u64::from(u32_at(&sb, 32));
                if log <= 6 && per_group > 0 {
                    let block = 1024u64 << log;
                    let first = u64::from(u32_at(&sb, 20));
                    for g in [1u64, 3, 5, 7, 9, 25, 27] {
                        let o = (first + g * per_group) * block;
                        if o < size {
                            out.push(o);
                        }
                    }
                }
            }
        }
        Some("xfs") => {
            if let Ok(sb) = disk.read_vec(offset, 512) {
                let be32 = |o: usize| u32::from_be_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
                let block = u64::from(be32(4));
                let ag_blocks = u64::from(be32(84));
                let ag_count = u64::from(be32(88));
                for ag in 1..ag_count.min(64) {
                    let o = ag * ag_blocks * block;
                    if o < size {
                        out.push(o);
                    }
                }
            }
        }
        Some("vfat") => {
            if let Ok(bs) = disk.read_vec(offset, 512) {
                let bytes_per_sector = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
                let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
                out.push(6 * bytes_per_sector);
                out.push(reserved * bytes_per_sector);
            }
        }
        _ => {}
    }
    out.retain(|&o| o < size);
    out.sort_unstable();
    out.dedup();
    out
}

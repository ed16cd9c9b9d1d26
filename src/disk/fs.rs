//! Filesystem signatures: what a partition holds, and where its critical structures
//! (superblocks, boot sectors) sit, so a quick plan can check those first.

use super::Disk;

/// What a filesystem says about itself: its kind, and the UUID and label that tell one
/// system's filesystem from another's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsIdentity {
    pub kind: Option<String>,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

/// The bytes examined: every signature below lies in the first 72 KiB.
const HEAD: u64 = 72 * 1024;

/// Recognises the filesystem at `offset` and reads its UUID and label. Reads at most 72 KiB
/// and never more than the partition holds; every field is bounds-checked.
pub fn identify(disk: &Disk, offset: u64, size: u64) -> FsIdentity {
    let head_len = size.min(HEAD).min(disk.size.saturating_sub(offset));
    match disk.read_vec(offset, head_len) {
        Ok(head) => identify_bytes(&head),
        Err(_) => FsIdentity::default(),
    }
}

fn uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let h = crate::hex::encode(b);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let text = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The filesystem in the first bytes of a partition (`head`, at most 72 KiB).
pub fn identify_bytes(head: &[u8]) -> FsIdentity {
    let get = |o: usize, n: usize| head.get(o..o.checked_add(n)?);
    let at = |o: usize, sig: &[u8]| get(o, sig.len()) == Some(sig);
    let u32_le = |o: usize| get(o, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let id = |kind: &str, uuid: Option<String>, label: Option<String>| FsIdentity {
        kind: Some(kind.to_string()),
        uuid,
        label,
    };
    if at(1024 + 56, &[0x53, 0xEF])
        && let (Some(compat), Some(incompat), Some(ro_compat)) =
            (u32_le(1024 + 92), u32_le(1024 + 96), u32_le(1024 + 100))
    {
        // ext4 features: extents, 64bit, flex_bg (incompat) or huge_file/dir_nlink (ro_compat).
        let name = if incompat & (0x40 | 0x80 | 0x200) != 0 || ro_compat & (0x8 | 0x20) != 0 {
            "ext4"
        } else if compat & 0x4 != 0 {
            "ext3"
        } else {
            "ext2"
        };
        return id(
            name,
            get(1024 + 0x68, 16).and_then(uuid),
            get(1024 + 0x78, 16).and_then(label),
        );
    }
    if at(0, b"XFSB") {
        return id(
            "xfs",
            get(32, 16).and_then(uuid),
            get(108, 12).and_then(label),
        );
    }
    if at(65536 + 64, b"_BHRfS_M") {
        return id(
            "btrfs",
            get(65536 + 0x20, 16).and_then(uuid),
            get(65536 + 0x12b, 256).and_then(label),
        );
    }
    if at(0, b"LUKS\xba\xbe") {
        return id("luks", get(168, 40).and_then(label), None);
    }
    if at(3, b"NTFS    ") {
        return id(
            "ntfs",
            get(0x48, 8).map(|b| crate::hex::encode(&b.iter().rev().copied().collect::<Vec<_>>())),
            None,
        );
    }
    if at(3, b"EXFAT   ") {
        return id("exfat", None, None);
    }
    if at(510, &[0x55, 0xAA]) && (at(0x52, b"FAT32") || at(0x36, b"FAT1") || at(0x36, b"FAT ")) {
        let (serial, name) = if at(0x52, b"FAT32") {
            (0x43, 0x47)
        } else {
            (0x27, 0x2b)
        };
        let serial = u32_le(serial).filter(|&v| v != 0).map(|v| {
            let h = format!("{v:08X}");
            format!("{}-{}", &h[..4], &h[4..])
        });
        let name = get(name, 11).and_then(label).filter(|l| l != "NO NAME");
        return id("vfat", serial, name);
    }
    if at(4096 - 10, b"SWAPSPACE2") {
        return id(
            "swap",
            get(1024 + 12, 16).and_then(uuid),
            get(1024 + 28, 16).and_then(label),
        );
    }
    FsIdentity::default()
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .unwrap_or(0)
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
                        let o = first.saturating_add(g * per_group).saturating_mul(block);
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
                    let o = ag.saturating_mul(ag_blocks).saturating_mul(block);
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

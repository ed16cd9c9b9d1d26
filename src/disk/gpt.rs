//! Raw GPT structures: validation of each header and entry-array copy (for diagnosis), and
//! relocation of the backup copy when a table is written to a disk of another size.
//! Tables are written back from the captured sectors, never regenerated: the `gpt` crate's
//! writer renumbers entries and zeroes the protective MBR's boot code.

use anyhow::{Result, bail, ensure};

pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The largest entry array we accept: far above any real table (128 x 128 bytes = 16 KiB).
const MAX_ENTRIES_BYTES: u64 = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptHeader {
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl GptHeader {
    /// Parses and checks one header sector read from `expected_lba`. The error says what is
    /// wrong in the words an operator reads in the plan ("CRC mismatch").
    pub fn parse(sector: &[u8], expected_lba: u64) -> Result<GptHeader> {
        ensure!(sector.len() >= 512, "sector too short");
        if &sector[..8] != SIGNATURE {
            if sector[..92].iter().all(|&b| b == 0) {
                bail!("header is blank");
            }
            bail!("bad signature");
        }
        let header_size = u32_at(sector, 12);
        ensure!(
            (92..=sector.len() as u32).contains(&header_size),
            "header size {header_size} out of range"
        );
        let mut copy = sector[..header_size as usize].to_vec();
        copy[16..20].fill(0);
        let crc = crc32fast::hash(&copy);
        ensure!(crc == u32_at(sector, 16), "header CRC mismatch");
        let h = GptHeader {
            header_size,
            my_lba: u64_at(sector, 24),
            alternate_lba: u64_at(sector, 32),
            first_usable_lba: u64_at(sector, 40),
            last_usable_lba: u64_at(sector, 48),
            disk_guid: sector[56..72].try_into().expect("16 bytes"),
            entries_lba: u64_at(sector, 72),
            entry_count: u32_at(sector, 80),
            entry_size: u32_at(sector, 84),
            entries_crc: u32_at(sector, 88),
        };
        ensure!(
            h.my_lba == expected_lba,
            "header says it is at LBA {} but sits at LBA {expected_lba}",
            h.my_lba
        );
        ensure!(
            h.entry_size >= 128 && h.entry_size.is_power_of_two(),
            "entry size {} is invalid",
            h.entry_size
        );
        ensure!(
            h.entries_bytes() <= MAX_ENTRIES_BYTES,
            "entry array too large"
        );
        ensure!(
            h.first_usable_lba <= h.last_usable_lba.saturating_add(1),
            "usable range is inverted"
        );
        Ok(h)
    }

    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    pub fn entries_sectors(&self, sector_size: u64) -> u64 {
        self.entries_bytes().div_ceil(sector_size)
    }

    pub fn entries_match(&self, entries: &[u8]) -> bool {
        entries.len() as u64 >= self.entries_bytes()
            && crc32fast::hash(&entries[..self.entries_bytes() as usize]) == self.entries_crc
    }
}

/// A used entry of the array, as far as layout code needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    pub number: u32,
    pub type_guid: [u8; 16],
    pub part_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

pub fn parse_entries(h: &GptHeader, entries: &[u8]) -> Vec<GptEntry> {
    let size = h.entry_size as usize;
    entries
        .chunks_exact(size)
        .take(h.entry_count as usize)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(i, e)| {
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            GptEntry {
                number: i as u32 + 1,
                type_guid: e[0..16].try_into().expect("16 bytes"),
                part_guid: e[16..32].try_into().expect("16 bytes"),
                first_lba: u64_at(e, 32),
                last_lba: u64_at(e, 40),
                attributes: u64_at(e, 48),
                name: String::from_utf16_lossy(&units),
            }
        })
        .collect()
}

/// GUIDs are stored mixed-endian; this renders the usual text form.
pub fn guid_to_string(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Parses the text form back into the on-disk (mixed-endian) bytes.
pub fn guid_from_string(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    g[4..6].copy_from_slice(&[b[5], b[4]]);
    g[6..8].copy_from_slice(&[b[7], b[6]]);
    g[8..16].copy_from_slice(&b[8..16]);
    Some(g)
}

fn set_crc(sector: &mut [u8]) {
    let size = u32_at(sector, 12) as usize;
    sector[16..20].fill(0);
    let crc = crc32fast::hash(&sector[..size]);
    sector[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// The table sectors for a disk of `target_sectors` sectors, derived from a captured primary
/// header: the primary header patched (alternate and last usable LBA) and a backup header
/// at the new last LBA whose entry array sits right before it.
pub struct Relocated {
    pub primary_header: Vec<u8>,
    pub backup_header: Vec<u8>,
    pub backup_header_lba: u64,
    pub backup_entries_lba: u64,
    pub last_usable_lba: u64,
}

pub fn relocate(primary_header: &[u8], sector_size: u64, target_sectors: u64) -> Result<Relocated> {
    let h = GptHeader::parse(primary_header, 1)?;
    let entries_sectors = h.entries_sectors(sector_size);
    let Some(backup_header_lba) = target_sectors.checked_sub(1) else {
        bail!("target disk is empty");
    };
    let backup_entries_lba = backup_header_lba.saturating_sub(entries_sectors);
    let last_usable_lba = backup_entries_lba.saturating_sub(1);
    ensure!(
        last_usable_lba >= h.first_usable_lba
            && backup_entries_lba > h.entries_lba.saturating_add(entries_sectors),
        "target disk of {target_sectors} sectors is too small for the GPT"
    );
    let mut primary = primary_header.to_vec();
    primary[32..40].copy_from_slice(&backup_header_lba.to_le_bytes());
    primary[48..56].copy_from_slice(&last_usable_lba.to_le_bytes());
    set_crc(&mut primary);
    let mut backup = primary.clone();
    backup[24..32].copy_from_slice(&backup_header_lba.to_le_bytes());
    backup[32..40].copy_from_slice(&h.my_lba.to_le_bytes());
    backup[72..80].copy_from_slice(&backup_entries_lba.to_le_bytes());
    set_crc(&mut backup);
    Ok(Relocated {
        primary_header: primary,
        backup_header: backup,
        backup_header_lba,
        backup_entries_lba,
        last_usable_lba,
    })
}

/// Extends the used entry that starts last to `last_usable_lba`; returns its number and its
/// old and new size in sectors. The caller updates the headers' entry-array CRC.
pub fn grow_last(
    h: &GptHeader,
    entries: &mut [u8],
    last_usable_lba: u64,
) -> Result<(u32, u64, u64)> {
    let Some(last) = parse_entries(h, entries)
        .into_iter()
        .max_by_key(|e| e.first_lba)
    else {
        bail!("the GPT has no partition to grow");
    };
    ensure!(
        last_usable_lba >= last.last_lba,
        "the target is smaller than the last partition"
    );
    let at = (last.number as usize - 1) * h.entry_size as usize + 40;
    entries[at..at + 8].copy_from_slice(&last_usable_lba.to_le_bytes());
    Ok((
        last.number,
        last.last_lba
            .saturating_add(1)
            .saturating_sub(last.first_lba),
        last_usable_lba
            .saturating_add(1)
            .saturating_sub(last.first_lba),
    ))
}

/// Sets a header's entry-array CRC for `entries` and recomputes the header CRC.
pub fn set_entries_crc(header: &mut [u8], entries: &[u8]) -> Result<()> {
    ensure!(header.len() >= 92, "GPT header sector is truncated");
    let h = GptHeader::parse(header, u64_at(header, 24))?;
    ensure!(
        entries.len() as u64 >= h.entries_bytes(),
        "GPT entry array holds {} bytes, its header says {}",
        entries.len(),
        h.entries_bytes()
    );
    let crc = crc32fast::hash(&entries[..h.entries_bytes() as usize]);
    header[88..92].copy_from_slice(&crc.to_le_bytes());
    set_crc(header);
    Ok(())
}

/// Patches the size of a protective MBR entry (bytes 440..512 of LBA 0) for a new disk size,
/// only when it covered the whole source disk, so hybrid MBRs are left as they were.
pub fn patch_protective_mbr(mbr_tail: &mut [u8], source_sectors: u64, target_sectors: u64) {
    for slot in 0..4 {
        let e = 6 + slot * 16; // entries start at 446 = 440 + 6
        if e + 16 > mbr_tail.len() || mbr_tail[e + 4] != 0xEE || u32_at(mbr_tail, e + 8) != 1 {
            continue;
        }
        let size = u32_at(mbr_tail, e + 12);
        let whole = |sectors: u64| u32::try_from(sectors - 1).unwrap_or(u32::MAX);
        if size == whole(source_sectors) || size == u32::MAX {
            mbr_tail[e + 12..e + 16].copy_from_slice(&whole(target_sectors).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(lba: u64, alt: u64) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(SIGNATURE);
        s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        s[12..16].copy_from_slice(&92u32.to_le_bytes());
        s[24..32].copy_from_slice(&lba.to_le_bytes());
        s[32..40].copy_from_slice(&alt.to_le_bytes());
        s[40..48].copy_from_slice(&34u64.to_le_bytes());
        s[48..56].copy_from_slice(&(alt - 33).to_le_bytes());
        s[72..80].copy_from_slice(&2u64.to_le_bytes());
        s[80..84].copy_from_slice(&128u32.to_le_bytes());
        s[84..88].copy_from_slice(&128u32.to_le_bytes());
        set_crc(&mut s);
        s
    }

    #[test]
    fn guid_text_round_trip() {
        let g = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0, 0xa0, 0xc9, 0x3e, 0xc9,
            0x3b,
        ];
        assert_eq!(guid_to_string(&g), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            guid_from_string("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            Some(g)
        );
        assert_eq!(guid_from_string("nope"), None);
    }

    #[test]
    fn detects_each_kind_of_damage() {
        let good = header(1, 2047);
        assert!(GptHeader::parse(&good, 1).is_ok());
        let mut bad = good.clone();
        bad[60] ^= 1;
        assert!(format!("{:#}", GptHeader::parse(&bad, 1).unwrap_err()).contains("CRC"));
        assert!(format!("{:#}", GptHeader::parse(&good, 2047).unwrap_err()).contains("LBA"));
        assert!(format!("{:#}", GptHeader::parse(&[0u8; 512], 1).unwrap_err()).contains("blank"));
    }

    #[test]
    fn relocation_moves_backup_to_the_new_end() {
        let r = relocate(&header(1, 2047), 512, 4096).unwrap();
        let p = GptHeader::parse(&r.primary_header, 1).unwrap();
        let b = GptHeader::parse(&r.backup_header, 4095).unwrap();
        assert_eq!((p.alternate_lba, p.last_usable_lba), (4095, 4095 - 33));
        assert_eq!((b.alternate_lba, b.entries_lba), (1, 4095 - 32));
        assert!(relocate(&header(1, 2047), 512, 40).is_err());
    }
}

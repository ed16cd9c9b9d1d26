//! Whether a stored zstd frame is whole, from its headers alone: the frame header and each
//! block header say how long the frame is, so a zero-length or truncated object (a power cut
//! before its data reached the disk) is found with a few small reads instead of a full read
//! and decompression. A frame that is whole can still hold wrong bytes: only reading it and
//! checking its hash (`check --read-data`, `capture --verify-existing`) proves those.

const MAGIC: u32 = 0xFD2F_B528;
/// Blocks in one frame at most: a 64 MiB object in 128 KiB blocks, with room to spare.
const MAX_BLOCKS: u64 = 4096;

/// Reads `len` bytes at `offset` of the object (fewer at its end).
pub type ReadAt<'a> = &'a dyn Fn(u64, u64) -> anyhow::Result<Vec<u8>>;

/// Ok when the object of `size` bytes is one zstd frame that ends exactly at its end and,
/// when the frame records it, holds `expected` bytes; Err says what is wrong.
pub fn check(read: ReadAt, size: u64, expected: u64) -> Result<(), String> {
    if size == 0 {
        return Err("it is empty".into());
    }
    let head = read(0, 18).map_err(|e| format!("{e:#}"))?;
    if head.len() < 6 || u32::from_le_bytes([head[0], head[1], head[2], head[3]]) != MAGIC {
        return Err("it is not a zstd frame".into());
    }
    let fhd = head[4];
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = match fcs_flag {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single_segment) + dict_len;
    let fcs = head
        .get(at..at + fcs_len)
        .ok_or("its frame header is cut off")?;
    let mut content = 0u64;
    for (i, b) in fcs.iter().enumerate() {
        content |= u64::from(*b) << (8 * i);
    }
    if fcs_len == 2 {
        content += 256;
    }
    if fcs_len > 0 && content != expected {
        return Err(format!(
            "its frame says it holds {content} bytes, not {expected}"
        ));
    }
    at += fcs_len;
    let mut pos = at as u64;
    for _ in 0..MAX_BLOCKS {
        let b = read(pos, 3).map_err(|e| format!("{e:#}"))?;
        if b.len() < 3 {
            return Err(format!(
                "it ends at byte {size} inside its frame (truncated)"
            ));
        }
        let header = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
        let last = header & 1 != 0;
        let kind = (header >> 1) & 3;
        let block = u64::from(header >> 3);
        pos += 3 + match kind {
            0 | 2 => block,
            1 => 1,
            _ => return Err("it holds a reserved block type".into()),
        };
        if last {
            let end = pos + if checksum { 4 } else { 0 };
            return match end.cmp(&size) {
                std::cmp::Ordering::Equal => Ok(()),
                std::cmp::Ordering::Greater => Err(format!(
                    "it ends at byte {size}, its frame at {end} (truncated)"
                )),
                std::cmp::Ordering::Less => Err(format!(
                    "its frame ends at byte {end}, the object at {size}"
                )),
            };
        }
        if pos >= size {
            return Err(format!(
                "it ends at byte {size} inside its frame (truncated)"
            ));
        }
    }
    Err("its frame has more blocks than any chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> impl Fn(u64, u64) -> anyhow::Result<Vec<u8>> + '_ {
        move |off, len| {
            let s = (off as usize).min(bytes.len());
            let e = (off.saturating_add(len) as usize).min(bytes.len());
            Ok(bytes[s..e].to_vec())
        }
    }

    #[test]
    fn whole_truncated_empty_and_foreign_frames() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        for level in [1, 3, 19] {
            let z = zstd::bulk::compress(&data, level).unwrap();
            assert_eq!(
                check(&reader(&z), z.len() as u64, data.len() as u64),
                Ok(())
            );
            for cut in [1usize, 10, z.len() / 2, z.len() - 1] {
                let t = &z[..z.len() - cut];
                assert!(
                    check(&reader(t), t.len() as u64, data.len() as u64).is_err(),
                    "cut {cut}"
                );
            }
            assert!(
                check(&reader(&z), z.len() as u64, 5).is_err(),
                "wrong content size"
            );
        }
        let zeros = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        assert_eq!(check(&reader(&zeros), zeros.len() as u64, 1 << 20), Ok(()));
        assert!(check(&reader(&[]), 0, 10).is_err());
        assert!(check(&reader(b"garbage!"), 8, 10).is_err());
        let mut longer = zeros.clone();
        longer.extend_from_slice(b"trailing");
        assert!(check(&reader(&longer), longer.len() as u64, 1 << 20).is_err());
    }
}

//! ext2/3/4 allocation bitmaps: which blocks of a filesystem hold data, so a capture can skip
//! free blocks and a plan can ignore differences in free space. Anything unusual (a journal
//! that needs recovery, meta_bg, bigalloc, counts that do not add up) answers None: the caller
//! then keeps every block, which is always correct.

use super::Disk;

/// Whether a filesystem type (as blkid or lvm names it) is one this module reads.
pub fn is_ext(fstype: &str) -> bool {
    matches!(fstype, "ext2" | "ext3" | "ext4")
}

const BLOCK_UNINIT: u16 = 0x2;

/// Byte ranges (relative to the partition) that must be kept, sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsedMap {
    pub ranges: Vec<(u64, u64)>,
}

/// What a chunk holds, given the used map.
pub enum ChunkUse {
    /// Every byte is free space: nothing to store, fetch or write.
    Free,
    /// Every byte is in use.
    Full,
    /// Some bytes are free: these (start, len) ranges, relative to the chunk.
    Partial(Vec<(u64, u64)>),
}

impl UsedMap {
    pub fn chunk_use(&self, start: u64, len: u64) -> ChunkUse {
        let end = start + len;
        let first = self.ranges.partition_point(|&(s, l)| s + l <= start);
        let mut free = Vec::new();
        let mut pos = start;
        for &(s, l) in &self.ranges[first..] {
            if s >= end {
                break;
            }
            if s > pos {
                free.push((pos - start, s - pos));
            }
            pos = pos.max(s + l);
        }
        if pos < end {
            free.push((pos - start, end - pos));
        }
        match free.as_slice() {
            [] => ChunkUse::Full,
            [(0, l)] if *l == len => ChunkUse::Free,
            _ => ChunkUse::Partial(free),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.ranges
            .iter()
            .flat_map(|&(s, l)| [s.to_le_bytes(), l.to_le_bytes()])
            .flatten()
            .collect()
    }

    /// Parses a stored map; ranges must be sorted, disjoint and not overflow.
    pub fn decode(data: &[u8]) -> Option<UsedMap> {
        if !data.len().is_multiple_of(16) {
            return None;
        }
        let ranges: Vec<(u64, u64)> = data
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8")),
                    u64::from_le_bytes(c[8..].try_into().expect("8")),
                )
            })
            .collect();
        let sound = ranges.iter().all(|&(s, l)| s.checked_add(l).is_some())
            && ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0);
        sound.then_some(UsedMap { ranges })
    }

    fn push(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.ranges.last_mut()
            && last.0 + last.1 == start
        {
            last.1 += len;
            return;
        }
        self.ranges.push((start, len));
    }
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 2)
        .map(|x| u64::from(u16::from_le_bytes([x[0], x[1]])))
        .unwrap_or(0)
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 4)
        .map(|x| u64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]])))
        .unwrap_or(0)
}

fn has_super(group: u64, sparse: bool) -> bool {
    if group <= 1 || !sparse {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut n = b;
        while n < group {
            n *= b;
        }
        n == group
    })
}

/// The group descriptor table read at most: 1 Mi groups of 64 bytes (a 128 TiB filesystem
/// of 4 KiB blocks). Anything claiming more is not trusted.
const MAX_GDT_BYTES: u64 = 64 << 20;
/// A used map with more ranges than this (alternating used and free blocks over a huge
/// filesystem) costs more memory than it saves: every block is kept instead.
const MAX_RANGES: usize = 4 << 20;

/// The used blocks of the ext2/3/4 filesystem at `offset`, or None when it cannot be trusted.
/// Every count, size and offset read from the superblock and the group descriptors is checked
/// against the others and against the partition before it sizes a read, a slice or a loop.
pub fn used_map(disk: &Disk, offset: u64, size: u64) -> Option<UsedMap> {
    let sb = disk.read_vec(offset.checked_add(1024)?, 1024).ok()?;
    if u16_at(&sb, 0x38) != 0xEF53 {
        return None;
    }
    let (compat, incompat, ro_compat) = (u32_at(&sb, 0x5C), u32_at(&sb, 0x60), u32_at(&sb, 0x64));
    // needs_recovery, meta_bg; bigalloc; sparse_super2: keep everything.
    if incompat & (0x4 | 0x10) != 0 || ro_compat & 0x200 != 0 || compat & 0x200 != 0 {
        return None;
    }
    let log = u32_at(&sb, 0x18);
    if log > 6 {
        return None;
    }
    let block = 1024u64 << log;
    let is64 = incompat & 0x80 != 0;
    let blocks = u32_at(&sb, 0x4) | if is64 { u32_at(&sb, 0x150) << 32 } else { 0 };
    let free = u32_at(&sb, 0xC) | if is64 { u32_at(&sb, 0x158) << 32 } else { 0 };
    let first_data = u32_at(&sb, 0x14);
    let per_group = u32_at(&sb, 0x20);
    let inodes_per_group = u32_at(&sb, 0x28);
    let inode_size = if u32_at(&sb, 0x4C) >= 1 {
        u16_at(&sb, 0x58)
    } else {
        128
    };
    let desc_size = if is64 { u16_at(&sb, 0xFE).max(32) } else { 32 };
    let reserved_gdt = if compat & 0x10 != 0 {
        u16_at(&sb, 0xCE)
    } else {
        0
    };
    let sparse = ro_compat & 0x1 != 0;
    let csum = ro_compat & (0x10 | 0x400) != 0;
    // A group's block bitmap is one block: it holds at most 8 x block size blocks.
    if per_group < 8
        || per_group > 8 * block
        || blocks == 0
        || first_data > 1
        || first_data >= blocks
        || blocks.checked_mul(block)? > size
        || free > blocks
        || !(128..=block).contains(&inode_size)
        || inodes_per_group == 0
        || !(32..=1024).contains(&desc_size)
    {
        return None;
    }
    let groups = (blocks - first_data).div_ceil(per_group);
    let gdt_bytes = groups.checked_mul(desc_size)?;
    if gdt_bytes > MAX_GDT_BYTES {
        return None;
    }
    let gdt_blocks = gdt_bytes.div_ceil(block);
    let itable_blocks = inodes_per_group.checked_mul(inode_size)?.div_ceil(block);
    let gdt_at = (first_data + 1).checked_mul(block)?;
    if gdt_at.checked_add(gdt_blocks * block)? > size {
        return None;
    }
    let gdt = disk.read_vec(offset + gdt_at, gdt_blocks * block).ok()?;
    let desc = |g: u64| gdt.get((g * desc_size) as usize..((g + 1) * desc_size) as usize);
    let hi = |d: &[u8], o: usize| {
        if desc_size >= 64 {
            u32_at(d, o) << 32
        } else {
            0
        }
    };
    // Every group's bitmaps and inode table, wherever flex_bg put them: (first block, count).
    let mut metadata: Vec<(u64, u64)> = Vec::with_capacity(groups as usize * 3);
    for g in 0..groups {
        let d = desc(g)?;
        metadata.push((u32_at(d, 0x0) | hi(d, 0x20), 1));
        metadata.push((u32_at(d, 0x4) | hi(d, 0x24), 1));
        metadata.push((u32_at(d, 0x8) | hi(d, 0x28), itable_blocks));
    }
    metadata.sort_unstable();
    let widest = itable_blocks.max(1);
    let mut map = UsedMap::default();
    map.push(0, first_data * block);
    let mut used_blocks = 0u64;
    let mut bitmap = vec![0u8; block as usize];
    for g in 0..groups {
        let start = first_data + g * per_group;
        let count = per_group.min(blocks - start);
        let d = desc(g)?;
        let flags = u16_at(d, 0x12) as u16;
        if csum && flags & BLOCK_UNINIT != 0 {
            // No bitmap on disk: the group holds only its own metadata.
            let mut used = vec![false; count as usize];
            let end = start + count;
            let mut mark = |b: u64, n: u64| {
                for x in b.max(start)..b.saturating_add(n).min(end) {
                    used[(x - start) as usize] = true;
                }
            };
            if has_super(g, sparse) {
                mark(start, 1 + gdt_blocks + reserved_gdt);
            }
            // Only the metadata that can reach into this group (sorted by first block).
            let from = metadata.partition_point(|&(b, _)| b.saturating_add(widest) <= start);
            for &(b, n) in metadata[from..].iter().take_while(|&&(b, _)| b < end) {
                mark(b, n);
            }
            for (i, u) in used.iter().enumerate() {
                if *u {
                    used_blocks += 1;
                    map.push((start + i as u64) * block, block);
                }
            }
        } else {
            let at = u32_at(d, 0x0) | hi(d, 0x20);
            if at >= blocks || disk.read_at(&mut bitmap, offset + at * block).is_err() {
                return None;
            }
            for i in 0..count {
                if bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0 {
                    used_blocks += 1;
                    map.push((start + i) * block, block);
                }
            }
        }
        if map.ranges.len() > MAX_RANGES {
            return None;
        }
    }
    // The counts must agree, else the bitmaps are not to be trusted (a mounted filesystem).
    if used_blocks + free != blocks - first_data {
        return None;
    }
    // Whatever lies beyond the filesystem's end is not ours to drop.
    map.push(blocks * block, size - blocks * block);
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_use_and_encoding() {
        let m = UsedMap {
            ranges: vec![(0, 100), (300, 50), (1000, 24)],
        };
        assert!(matches!(m.chunk_use(0, 100), ChunkUse::Full));
        assert!(matches!(m.chunk_use(400, 500), ChunkUse::Free));
        match m.chunk_use(0, 1024) {
            ChunkUse::Partial(f) => assert_eq!(f, vec![(100, 200), (350, 650)]),
            _ => panic!("partial expected"),
        }
        assert_eq!(UsedMap::decode(&m.encode()), Some(m.clone()));
        assert_eq!(UsedMap::decode(&[1, 2, 3]), None);
        assert!(
            has_super(1, true) && has_super(9, true) && has_super(25, true) && has_super(49, true)
        );
        assert!(!has_super(2, true) && !has_super(10, true));
    }
}

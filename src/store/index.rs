//! The chunk index: the ordered chunk ids of one partition or boot region, as a compact
//! binary object (32 bytes a chunk), so a 2 TB disk gives a 64 MB index, not a huge JSON file.
//!
//! Layout (little-endian): magic "RSTRIDX1", u32 version (1), u32 chunk_size, u64 length
//! in bytes, u64 chunk count, then count x 32-byte ids. The all-zero id marks a zero chunk.

use anyhow::{Result, bail, ensure};

use crate::chunk::ChunkId;

const MAGIC: &[u8; 8] = b"RSTRIDX1";
pub const HEADER_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    pub chunk_size: u32,
    /// Bytes covered; the last chunk may be shorter than chunk_size.
    pub length: u64,
    pub chunks: Vec<ChunkId>,
}

impl ChunkIndex {
    pub fn chunk_count(length: u64, chunk_size: u32) -> u64 {
        length.div_ceil(u64::from(chunk_size))
    }

    /// Byte range of chunk `i` relative to the start of the component.
    pub fn chunk_range(&self, i: u64) -> (u64, u64) {
        let cs = u64::from(self.chunk_size);
        let start = i * cs;
        (start, cs.min(self.length - start))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.chunks.len() * 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for id in &self.chunks {
            out.extend_from_slice(&id.0);
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<ChunkIndex> {
        ensure!(
            data.len() >= HEADER_LEN,
            "chunk index is truncated ({} bytes)",
            data.len()
        );
        if &data[..8] != MAGIC {
            bail!("not a chunk index (bad magic)");
        }
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        ensure!(
            version == 1,
            "chunk index version {version} is not supported (1 expected)"
        );
        let chunk_size = u32_at(12);
        ensure!(chunk_size > 0, "chunk index has a zero chunk size");
        let length = u64_at(16);
        let count = u64_at(24);
        ensure!(
            count == Self::chunk_count(length, chunk_size),
            "chunk index is inconsistent: {count} chunks for {length} bytes"
        );
        let body = &data[HEADER_LEN..];
        ensure!(
            body.len() as u64 == count.saturating_mul(32),
            "chunk index is truncated: {} of {} id bytes",
            body.len(),
            count.saturating_mul(32)
        );
        let chunks = body
            .chunks_exact(32)
            .map(|c| ChunkId(c.try_into().expect("32 bytes")))
            .collect();
        Ok(ChunkIndex {
            chunk_size,
            length,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let idx = ChunkIndex {
            chunk_size: 1 << 20,
            length: (3 << 20) + 5,
            chunks: vec![
                ChunkId::of(b"a"),
                ChunkId::ZERO,
                ChunkId::of(b"b"),
                ChunkId::of(b"c"),
            ],
        };
        let bytes = idx.encode();
        assert_eq!(ChunkIndex::decode(&bytes).unwrap(), idx);
        assert_eq!(idx.chunk_range(3), (3 << 20, 5));
        assert!(ChunkIndex::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(ChunkIndex::decode(&bytes[..10]).is_err());
        assert!(ChunkIndex::decode(b"garbage garbage garbage garbage garbage").is_err());
    }
}

//! Chunk identity: the BLAKE3 hash of a chunk's uncompressed bytes.
//! An all-zero hash is reserved as the marker for an all-zero chunk, which is never stored.

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Marks a chunk whose bytes are all zero: recorded in indexes, never stored.
    pub const ZERO: ChunkId = ChunkId([0; 32]);
    /// Marks a chunk that is entirely free space of a filesystem: never stored, fetched or
    /// written, and never compared.
    pub const FREE: ChunkId = ChunkId([0xFF; 32]);

    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// The id to record for `data`: the zero marker when every byte is zero.
    pub fn for_content(data: &[u8]) -> ChunkId {
        if is_zero(data) {
            ChunkId::ZERO
        } else {
            ChunkId::of(data)
        }
    }

    pub fn is_zero_marker(self) -> bool {
        self == ChunkId::ZERO
    }

    pub fn is_free_marker(self) -> bool {
        self == ChunkId::FREE
    }

    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn short(self) -> String {
        self.to_hex()[..12].to_string()
    }

    pub fn from_hex(s: &str) -> Result<ChunkId> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("not a chunk id (64 hex digits expected): {s:?}");
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
        }
        Ok(ChunkId(out))
    }
}

/// True when every byte is zero; word-at-a-time because it runs on every chunk read.
pub fn is_zero(data: &[u8]) -> bool {
    let (head, body, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && body.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.short())
    }
}

impl Serialize for ChunkId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChunkId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_zero_marker() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ChunkId::from_hex("xyz").is_err());
        assert_eq!(ChunkId::for_content(&[0u8; 4096]), ChunkId::ZERO);
        assert_ne!(ChunkId::for_content(&[0, 0, 1]), ChunkId::ZERO);
    }

    #[test]
    fn zero_detection_handles_unaligned_tails() {
        let mut buf = vec![0u8; 1001];
        assert!(is_zero(&buf[1..]));
        buf[1000] = 1;
        assert!(!is_zero(&buf[1..]));
        assert!(is_zero(&[]));
    }
}

//! Hex text for bytes carried in JSON (plan payloads, manifest NVRAM variables). Decoding is
//! bounded and checks every character, so a hand-edited or hostile file gets an error, never
//! a panic on a character boundary.

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most bytes a hex field may carry: far above any table sector, load option or patch.
pub const MAX_BYTES: usize = 16 << 20;

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub fn decode(text: &str) -> Result<Vec<u8>> {
    let raw = text.as_bytes();
    ensure!(
        raw.len().is_multiple_of(2),
        "hex text has an odd number of digits ({})",
        raw.len()
    );
    ensure!(
        raw.len() / 2 <= MAX_BYTES,
        "hex text of {} bytes is longer than the {MAX_BYTES} allowed",
        raw.len() / 2
    );
    let digit = |c: u8| -> Result<u8> {
        Ok(match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => bail!("hex text holds a character that is not a hex digit"),
        })
    };
    raw.chunks_exact(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Bytes that travel as hex in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Hex(pub Vec<u8>);

impl std::fmt::Debug for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hex({} bytes)", self.0.len())
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map(Hex).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_text() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&b), "0001abff");
        assert_eq!(decode("0001ABff").unwrap(), b);
        assert!(decode("abc").is_err());
        assert!(decode("zz").is_err());
        // Multi-byte characters must not panic on a char boundary.
        assert!(decode("é1").is_err());
        assert!(decode("ab€").is_err());
    }
}

//! Application payloads the simulated processes multicast.
//!
//! Each payload names its origin and carries a checksum, so a receiver can
//! tell a whole, unmodified message from a spliced, truncated or invented one:
//!
//! ```text
//! 0..4 magic "CSIM" | 4..8 node | 8..12 pid | 12..16 incarnation | 16..24 counter
//! 24..28 total length | 28..36 FNV-1a 64 of bytes 0..28 and 36.. | 36.. filler
//! ```
//! The filler is a deterministic function of the key, so large messages
//! (fragmented by the engine) need not be stored to be checked.

use cpg_core::hash::{fnv1a64_update, FNV1A64_OFFSET};
use cpg_core::NodeId;

/// Bytes of the fixed part.
pub const HEADER_LEN: usize = 36;
const MAGIC: &[u8; 4] = b"CSIM";

/// Identity of one application message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgKey {
    /// Sending node.
    pub node: NodeId,
    /// Sending process.
    pub pid: u32,
    /// Incarnation of the sending node (restarts count up).
    pub incarnation: u32,
    /// Per-process counter, strictly increasing.
    pub counter: u64,
}

impl core::fmt::Display for MsgKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{}/{}#{}:{}",
            self.node, self.pid, self.incarnation, self.counter
        )
    }
}

/// Why a payload does not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than the header.
    Short(usize),
    /// Not our magic.
    BadMagic,
    /// Length differs from the length field (truncated or spliced).
    Length {
        /// Length field.
        expected: usize,
        /// Bytes delivered.
        got: usize,
    },
    /// Checksum mismatch (corrupted or spliced).
    Checksum,
}

/// FNV-1a 64 over several slices in turn (cpg-core's [`fnv1a64_update`]).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .fold(FNV1A64_OFFSET, |h, p| fnv1a64_update(h, p))
}

fn fill(key: &MsgKey, out: &mut [u8]) {
    let mut x = (u64::from(key.node) << 40)
        ^ (u64::from(key.pid) << 20)
        ^ key.counter
        ^ (u64::from(key.incarnation) << 56);
    x ^= 0x9E37_79B9_7F4A_7C15;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Build a payload of `len` bytes (at least [`HEADER_LEN`]).
pub fn encode(key: &MsgKey, len: usize) -> Vec<u8> {
    let len = len.max(HEADER_LEN);
    let mut b = vec![0u8; len];
    b[0..4].copy_from_slice(MAGIC);
    b[4..8].copy_from_slice(&key.node.to_le_bytes());
    b[8..12].copy_from_slice(&key.pid.to_le_bytes());
    b[12..16].copy_from_slice(&key.incarnation.to_le_bytes());
    b[16..24].copy_from_slice(&key.counter.to_le_bytes());
    b[24..28].copy_from_slice(&(len as u32).to_le_bytes());
    fill(key, &mut b[HEADER_LEN..]);
    let sum = fnv1a(&[&b[0..28], &b[HEADER_LEN..]]);
    b[28..36].copy_from_slice(&sum.to_le_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Check a delivered payload and return its key.
///
/// # Errors
/// [`PayloadError`] when it is not whole and unmodified.
pub fn decode(b: &[u8]) -> Result<MsgKey, PayloadError> {
    if b.len() < HEADER_LEN {
        return Err(PayloadError::Short(b.len()));
    }
    if &b[0..4] != MAGIC {
        return Err(PayloadError::BadMagic);
    }
    let expected = u32_at(b, 24) as usize;
    if expected != b.len() {
        return Err(PayloadError::Length {
            expected,
            got: b.len(),
        });
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&b[28..36]);
    if fnv1a(&[&b[0..28], &b[HEADER_LEN..]]) != u64::from_le_bytes(sum) {
        return Err(PayloadError::Checksum);
    }
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&b[16..24]);
    Ok(MsgKey {
        node: u32_at(b, 4),
        pid: u32_at(b, 8),
        incarnation: u32_at(b, 12),
        counter: u64::from_le_bytes(counter),
    })
}

/// Digest identifying a payload's bytes.
pub fn digest(b: &[u8]) -> u64 {
    fnv1a(&[b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let k = MsgKey {
            node: 3,
            pid: 1001,
            incarnation: 2,
            counter: 77,
        };
        for len in [0, 36, 37, 100, 5000, 300_000] {
            let b = encode(&k, len);
            assert_eq!(b.len(), len.max(HEADER_LEN));
            assert_eq!(decode(&b), Ok(k));
        }
        let b = encode(&k, 1000);
        assert_eq!(
            decode(&b[..999]),
            Err(PayloadError::Length {
                expected: 1000,
                got: 999
            })
        );
        let mut c = b.clone();
        c[500] ^= 1;
        assert_eq!(decode(&c), Err(PayloadError::Checksum));
        assert_eq!(decode(&b[..10]), Err(PayloadError::Short(10)));
        let other = encode(&MsgKey { counter: 78, ..k }, 1000);
        let mut spliced = b[..600].to_vec();
        spliced.extend_from_slice(&other[600..]);
        assert_eq!(decode(&spliced), Err(PayloadError::Checksum));
    }
}

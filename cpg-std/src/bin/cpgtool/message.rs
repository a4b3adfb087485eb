//! The numbered test message of `demo` and `node` streams (the digest of a
//! delivery sequence is cpg-core's FNV-1a, `cpg_core::hash`).

use cpg_core::hash::fnv1a64;

// ---- message format -------------------------------------------------------

pub(crate) const MAGIC: &[u8; 4] = b"CPGT";
pub(crate) const HEADER: usize = 20;

/// The size of message `seq` of a stream of sizes `size..=size_max`: spread
/// over the range by a hash of `seq`, so every run sends the same sizes.
pub(crate) fn sized(size: usize, size_max: usize, seq: u64) -> usize {
    let span = (size_max - size) as u64 + 1;
    size + (fnv1a64(&seq.to_le_bytes()) % span) as usize
}

/// A numbered test message: magic | nodeid u32 | seq u64 | len u32 | pattern.
pub(crate) fn fill_message(buf: &mut [u8], nodeid: u32, seq: u64) {
    let len = buf.len();
    if len < HEADER {
        buf.fill(b'.');
        return;
    }
    buf[..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&nodeid.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, b) in buf[HEADER..].iter_mut().enumerate() {
        *b = pattern(nodeid, seq, i);
    }
}

pub(crate) fn pattern(nodeid: u32, seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31) as usize ^ i.wrapping_mul(7) ^ (i >> 8) ^ nodeid as usize) as u8
}

/// (nodeid, seq, intact) of a numbered message; None for other bytes.
pub(crate) fn check_message(m: &[u8]) -> Option<(u32, u64, bool)> {
    if m.len() < HEADER || &m[..4] != MAGIC {
        return None;
    }
    let nodeid = u32::from_le_bytes(m[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(m[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(m[16..20].try_into().ok()?) as usize;
    let ok = len == m.len()
        && m[HEADER..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(nodeid, seq, i));
    Some((nodeid, seq, ok))
}

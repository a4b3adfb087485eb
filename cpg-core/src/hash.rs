//! FNV-1a 64: the one non-cryptographic hash of the workspace (control-frame
//! checks, frame digests, the simulator's payload checksums, cpgtool's and
//! the netsuite's delivery digests).
//!
//! # References
//! Fowler, Noll, Vo, "The FNV Non-Cryptographic Hash Algorithm",
//! draft-eastlake-fnv.

/// The FNV-1a 64 offset basis: the state before any byte.
pub const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV-1a 64 prime.
pub const FNV1A64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continue an FNV-1a 64 hash in state `h` over `bytes` (start from
/// [`FNV1A64_OFFSET`]); hashing two slices in turn equals hashing their
/// concatenation.
#[inline]
pub fn fnv1a64_update(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV1A64_PRIME))
}

/// FNV-1a 64 of `bytes`.
#[inline]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_update(FNV1A64_OFFSET, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Test vectors of the FNV reference code.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64_update(fnv1a64(b"foo"), b"bar"), fnv1a64(b"foobar"));
    }
}

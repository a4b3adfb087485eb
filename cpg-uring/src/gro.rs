//! UDP generic receive offload: reading the `UDP_GRO` control message of
//! a receive and cutting a coalesced receive into its datagrams.
//!
//! With `UDP_GRO` set on a socket, the kernel may hand several datagrams
//! of one flow (one source address and port) as one receive: their
//! payloads back to back, every one `gso_size` bytes but the last, which
//! may be shorter, and a control message (`SOL_UDP`, `UDP_GRO`, an `int`:
//! `gso_size`). On loopback and veth a GSO send (`crate::gso`) reaches a
//! socket with `UDP_GRO` whole, never cut: one receive per GSO send.
//!
//! # The rule ([`segments`])
//!
//! A receive is one datagram unless its control data holds a well-formed
//! `UDP_GRO` message whose size is at least 1 and below the payload's
//! length; then it is `ceil(len / size)` datagrams, the last one
//! `len - (n - 1) * size` bytes. Anything else (no control data, a
//! malformed or truncated cmsg, a size of 0 or of at least the length)
//! is one datagram: never a panic, never a range outside the payload.
//! A truncated receive (`MSG_TRUNC`) is dropped whole before this (the
//! driver counts `rx_truncated`): the cut would be wrong at its end.
//!
//! # What it must not do
//! Touch memory other than the control bytes it is given: the receive
//! buffer is split by `crate::bufs` along the ranges computed here.
//!
//! # References
//! `udp(7)` (`UDP_GRO`); Linux `net/ipv4/udp.c` (`udp_cmsg_recv`:
//! `put_cmsg(msg, SOL_UDP, UDP_GRO, sizeof(int), &gso_size)`).

use std::ops::Range;

/// `CMSG_SPACE(sizeof(int))`: the control room a receive asks for
/// (`msg_controllen` of the multishot receive's `msghdr`), checked against
/// libc's macro in the tests.
pub(crate) const GRO_CONTROL_SPACE: usize = cmsg_align(HDR) + cmsg_align(4);

/// Bytes of a `cmsghdr` (16 on 64-bit Linux).
const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
/// Where `cmsg_len` (a `size_t` with glibc, a `socklen_t` plus padding
/// with musl) and the level and type lie in it.
const LEN_OFF: usize = std::mem::offset_of!(libc::cmsghdr, cmsg_len);
const LEVEL_OFF: usize = std::mem::offset_of!(libc::cmsghdr, cmsg_level);
const TYPE_OFF: usize = std::mem::offset_of!(libc::cmsghdr, cmsg_type);

/// `CMSG_ALIGN`: up to a multiple of `size_t`.
const fn cmsg_align(n: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    n.div_ceil(a) * a
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(i32::from_ne_bytes(a))
}

/// `cmsg_len` of the header at the start of `b`.
fn read_len(b: &[u8]) -> Option<usize> {
    if LEVEL_OFF - LEN_OFF >= 8 && std::mem::size_of::<usize>() == 8 {
        let a: [u8; 8] = b.get(LEN_OFF..LEN_OFF + 8)?.try_into().ok()?;
        usize::try_from(u64::from_ne_bytes(a)).ok()
    } else {
        let a: [u8; 4] = b.get(LEN_OFF..LEN_OFF + 4)?.try_into().ok()?;
        usize::try_from(u32::from_ne_bytes(a)).ok()
    }
}

/// The `UDP_GRO` segment size in `control` (a receive's control data, at
/// any alignment), if a well-formed message carries one; `None` for no
/// such message or malformed control data.
pub(crate) fn gro_size(control: &[u8]) -> Option<usize> {
    let mut rest = control;
    while rest.len() >= HDR {
        let len = read_len(rest)?;
        if len < HDR || len > rest.len() {
            return None; // malformed or cut short: believe nothing
        }
        let level = read_i32(rest, LEVEL_OFF)?;
        let kind = read_i32(rest, TYPE_OFF)?;
        if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            let data = cmsg_align(HDR);
            if len < data + 4 {
                return None;
            }
            return usize::try_from(read_i32(rest, data)?).ok();
        }
        // the next header starts at CMSG_ALIGN(len) (none after the last)
        rest = rest.get(cmsg_align(len).min(rest.len())..)?;
    }
    None
}

/// The datagrams of a receive of `len` payload bytes whose `UDP_GRO`
/// size is `size` (see the module docs): ranges of the payload, in order,
/// back to back, covering it exactly.
pub(crate) fn segments(len: usize, size: Option<usize>) -> Segments {
    let seg = match size {
        Some(s) if s > 0 && s < len => s,
        _ => len,
    };
    Segments {
        at: 0,
        len,
        seg,
        // an empty datagram is still one datagram
        first: true,
    }
}

/// Iterator of [`segments`].
#[derive(Debug, Clone)]
pub(crate) struct Segments {
    at: usize,
    len: usize,
    seg: usize,
    first: bool,
}

impl Segments {
    /// How many datagrams (at least one).
    pub(crate) fn datagrams(&self) -> usize {
        if self.seg == 0 {
            1
        } else {
            self.len.div_ceil(self.seg).max(1)
        }
    }
}

impl Iterator for Segments {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.at >= self.len && !self.first {
            return None;
        }
        self.first = false;
        let end = self.at.saturating_add(self.seg.max(1)).min(self.len);
        let r = self.at..end;
        self.at = end;
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control data as the kernel lays it out, built with libc's macros:
    /// one cmsg of (`level`, `kind`) with `data`.
    #[allow(unsafe_code)]
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        // SAFETY: CMSG_SPACE / CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(data.len() as u32) as usize,
                libc::CMSG_LEN(data.len() as u32) as usize,
            )
        };
        let mut v = vec![0u8; space];
        // SAFETY: an all-zero `cmsghdr` is a valid value (plain integers).
        let mut h: libc::cmsghdr = unsafe { std::mem::zeroed() };
        h.cmsg_len = len as _;
        h.cmsg_level = level;
        h.cmsg_type = kind;
        // SAFETY: `v` holds at least a `cmsghdr` (CMSG_SPACE ≥ its size);
        // an unaligned write of a plain value.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<libc::cmsghdr>(), h) };
        let at = len - data.len();
        v[at..len].copy_from_slice(data);
        v
    }

    fn gro(size: i32) -> Vec<u8> {
        cmsg(libc::SOL_UDP, libc::UDP_GRO, &size.to_ne_bytes())
    }

    fn cut(len: usize, size: Option<usize>) -> Vec<Range<usize>> {
        let s = segments(len, size);
        let n = s.datagrams();
        let v: Vec<_> = s.collect();
        assert_eq!(v.len(), n, "count agrees with the ranges");
        v
    }

    #[test]
    #[allow(unsafe_code)]
    fn control_space_matches_libc() {
        // SAFETY: pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(4) } as usize;
        assert_eq!(GRO_CONTROL_SPACE, space);
        assert_eq!(gro(1472).len(), space);
    }

    #[test]
    fn reads_the_segment_size_at_any_alignment() {
        let c = gro(1472);
        assert_eq!(gro_size(&c), Some(1472));
        // the control data of a multishot receive lies after a 28-byte name
        let mut shifted = vec![0xAA; 3];
        shifted.extend_from_slice(&c);
        assert_eq!(gro_size(&shifted[3..]), Some(1472));
        // after another cmsg
        let mut two = cmsg(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[7u8; 16]);
        two.extend_from_slice(&c);
        assert_eq!(gro_size(&two), Some(1472));
    }

    #[test]
    fn absent_or_malformed_control_is_no_size() {
        assert_eq!(gro_size(&[]), None);
        assert_eq!(gro_size(&[0u8; 7]), None);
        // another message only
        assert_eq!(
            gro_size(&cmsg(libc::SOL_UDP, libc::UDP_SEGMENT, &[1, 2])),
            None
        );
        let c = gro(1000);
        // cut short anywhere
        for n in 0..c.len() {
            let s = gro_size(&c[..n]);
            assert!(s.is_none() || s == Some(1000), "{n}: {s:?}");
        }
        assert_eq!(gro_size(&c[..HDR + 3]), None);
        // lengths that lie: too small, past the end, huge
        for bad in [0usize, 3, HDR + 2, c.len() + 1, usize::MAX] {
            let mut x = c.clone();
            x[LEN_OFF..LEN_OFF + std::mem::size_of::<usize>()].copy_from_slice(&bad.to_ne_bytes());
            assert_eq!(gro_size(&x), None, "cmsg_len {bad}");
        }
        // a negative size is no size
        assert_eq!(gro_size(&gro(-5)), None);
        // every byte string of a few lengths: no panic
        for len in 0..40usize {
            for fill in [0u8, 0x10, 0xff] {
                let _ = gro_size(&vec![fill; len]);
            }
        }
    }

    #[test]
    fn a_size_cuts_equal_segments_and_a_shorter_last() {
        assert_eq!(cut(3000, Some(1000)), [0..1000, 1000..2000, 2000..3000]);
        assert_eq!(cut(2500, Some(1000)), [0..1000, 1000..2000, 2000..2500]);
        assert_eq!(cut(1001, Some(1000)), [0..1000, 1000..1001]);
        // 44 full segments of 1472 and a 300-byte one
        let v = cut(44 * 1472 + 300, Some(1472));
        assert_eq!(v.len(), 45);
        assert!(v[..44].iter().all(|r| r.len() == 1472));
        assert_eq!(v[44], 44 * 1472..44 * 1472 + 300);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn no_size_or_a_bogus_one_is_one_datagram() {
        assert_eq!(cut(1000, None), [0..1000]);
        assert_eq!(cut(1000, Some(0)), [0..1000]);
        assert_eq!(cut(1000, Some(1000)), [0..1000]);
        assert_eq!(cut(1000, Some(5000)), [0..1000]);
        assert_eq!(cut(1000, Some(usize::MAX)), [0..1000]);
        assert_eq!(cut(0, None), [0..0], "an empty datagram is one");
        assert_eq!(cut(0, Some(10)), [0..0]);
        assert_eq!(cut(3, Some(1)), [0..1, 1..2, 2..3]);
    }
}

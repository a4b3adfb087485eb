//! Buffer handles and frame references: the vocabulary every layer above
//! the wire formats shares to move bytes without copying them.
//!
//! A driver passes its buffers in by ownership of a handle ([`FrameBuf`]);
//! Totem keeps frames as [`FrameRef`]s (its own memory, a received buffer,
//! a zero-copy buffer with headers in its headroom, or headers in its own
//! memory followed by a piece of a zero-copy buffer), hands frames to
//! send out as [`Transmit`]s, and messages to deliver as [`Payload`]s (a
//! range of a frame). A refused zero-copy send gives its buffer back in a
//! [`ZcError`].
//!
//! This module knows nothing of Totem or groups: it sits between
//! [`crate::wire`] and [`crate::totem`]. The engine re-exports every type
//! here, so `cpg_core::engine::FrameRef` and its siblings name them too.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::types::NodeId;

/// A buffer handle the driver passes in by ownership: a received frame, or
/// a zero-copy send buffer (a pool slot the application filled).
///
/// Clones share the same bytes (an `Arc`-like handle). The engine writes
/// frame headers into a zero-copy buffer's headroom only through
/// [`FrameBuf::unique_mut`], i.e. while it holds the only handle, so bytes
/// that the network may be reading are never written. A buffer that
/// someone outside the engine can still write (a client's shared memory)
/// says so with [`FrameBuf::headers_inside`]: then it is never written at
/// all.
pub trait FrameBuf: Clone + AsRef<[u8]> {
    /// Mutable access while this is the only handle to the bytes.
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        None
    }

    /// Whether the engine may put headers into this buffer's headroom (through
    /// [`FrameBuf::unique_mut`]) when it is sent zero copy.
    ///
    /// `false` is for memory another party can write while the engine
    /// holds it, such as a client process's shared memory: headers written
    /// there could be rewritten (a forged pid, group or seq) between the
    /// engine's write and the network's read. Such a buffer holds only the
    /// payload: the engine never calls `unique_mut` on it, builds every
    /// header in its own memory and sends the payload by reference
    /// ([`FrameRef::Gather`] frames), at any size, never copying it.
    fn headers_inside(&self) -> bool {
        true
    }
}

impl FrameBuf for Arc<[u8]> {
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        Arc::get_mut(self)
    }
}

impl FrameBuf for Vec<u8> {
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        Some(self.as_mut_slice())
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// One node (the token's successor; may be this node itself on a
    /// single-node ring: the driver loops it back).
    Node(NodeId),
    /// Every node of the configured node list except this one ("udpu").
    AllOthers,
}

/// The bytes of a frame to send, or of a message to deliver from.
#[derive(Debug, Clone)]
pub enum FrameRef<F> {
    /// A frame this engine built in its own memory (control packets, frames
    /// of packed small messages, reassembled messages).
    Own(Arc<[u8]>),
    /// A whole driver buffer: a frame received from the network (re-sent
    /// unchanged when serving a retransmit request).
    Rx(F),
    /// Zero copy: the frame lies in `buf[range]`: the application's payload
    /// with the headers written into the headroom in front of it.
    Slot {
        /// The zero-copy buffer.
        buf: F,
        /// Byte range of the frame inside it.
        range: core::ops::Range<usize>,
    },
    /// Zero copy with the headers in engine memory: the frame is `head`
    /// (headers built by the engine) followed by `buf[range]` (the piece,
    /// never copied). Drivers send it as two iovecs. A piece of a
    /// fragmented message, or a whole message from a buffer whose headers
    /// stay outside it ([`FrameBuf::headers_inside`]).
    ///
    /// Inside the engine, a queued message of such a buffer is a `Gather`
    /// too: its CPG header as `head`, its payload as `buf[range]`.
    Gather {
        /// Frame, multicast and packing headers (and, in the first piece
        /// of a message whose headers stay outside its buffer, its CPG header).
        head: Arc<[u8]>,
        /// The zero-copy buffer.
        buf: F,
        /// Byte range of the piece inside it.
        range: core::ops::Range<usize>,
    },
}

impl<F: AsRef<[u8]>> FrameRef<F> {
    /// The frame as (at most) two byte slices, in order.
    pub fn segments(&self) -> [&[u8]; 2] {
        match self {
            FrameRef::Own(b) => [b, &[]],
            FrameRef::Rx(f) => [f.as_ref(), &[]],
            FrameRef::Slot { buf, range } => [buf.as_ref().get(range.clone()).unwrap_or(&[]), &[]],
            FrameRef::Gather { head, buf, range } => {
                [head, buf.as_ref().get(range.clone()).unwrap_or(&[])]
            }
        }
    }
    /// The frame's bytes if they are contiguous (every variant but `Gather`).
    pub fn contiguous(&self) -> Option<&[u8]> {
        match self {
            FrameRef::Gather { .. } => None,
            _ => Some(self.segments()[0]),
        }
    }
    /// `range` of the concatenated segments, as its part in each segment
    /// (either may be empty); `None` if it reaches past the end.
    pub fn slices(&self, range: core::ops::Range<usize>) -> Option<[&[u8]; 2]> {
        let [a, b] = self.segments();
        if range.start > range.end || range.end > a.len() + b.len() {
            return None;
        }
        let cut = |at: usize| at.min(a.len());
        let rest = |at: usize| at.saturating_sub(a.len());
        Some([
            &a[cut(range.start)..cut(range.end)],
            &b[rest(range.start)..rest(range.end)],
        ])
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        let [a, b] = self.segments();
        a.len() + b.len()
    }
    /// Zero length (never for a frame the engine emits).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the bytes (simulators and tests; a driver sends the segments).
    pub fn to_vec(&self) -> Vec<u8> {
        let [a, b] = self.segments();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        v
    }
    /// The driver buffer this frame references, if any.
    pub fn buf(&self) -> Option<&F> {
        match self {
            FrameRef::Own(_) => None,
            FrameRef::Rx(f) | FrameRef::Slot { buf: f, .. } | FrameRef::Gather { buf: f, .. } => {
                Some(f)
            }
        }
    }
    /// FNV-1a over `range` of the concatenated segments.
    pub fn digest(&self, range: core::ops::Range<usize>) -> u64 {
        let mut h = crate::hash::FNV1A64_OFFSET;
        let mut at = 0usize;
        for seg in self.segments() {
            // The part of `range` inside this segment, in segment offsets.
            let lo = range.start.clamp(at, at + seg.len()) - at;
            let hi = range.end.clamp(at, at + seg.len()) - at;
            if lo < hi {
                h = crate::hash::fnv1a64_update(h, &seg[lo..hi]);
            }
            at += seg.len();
        }
        h
    }
}

/// One frame to send.
#[derive(Debug, Clone)]
pub struct Transmit<F> {
    /// Destination.
    pub dest: Dest,
    /// The whole frame.
    pub frame: FrameRef<F>,
}

/// An application message's bytes: a range of a frame (zero copy), or a
/// reassembled buffer for a message that was fragmented.
#[derive(Debug, Clone)]
pub struct Payload<F> {
    /// Backing storage.
    pub src: FrameRef<F>,
    /// Byte range inside `src`.
    pub range: core::ops::Range<usize>,
}

impl<F: AsRef<[u8]>> Payload<F> {
    /// The message bytes. Every payload the engine hands to the application
    /// lies in one segment of `src` (for a `Gather`, inside `head` or inside
    /// the buffer's piece); one that spans both (only ever seen inside the
    /// engine: a queued message with its CPG header in front) reads as empty,
    /// see [`Payload::segments`].
    pub fn bytes(&self) -> &[u8] {
        match self.segments() {
            [a, []] => a,
            [[], b] => b,
            _ => &[],
        }
    }
    /// The message bytes as their part in each segment of `src`, in order
    /// (either may be empty; both are for a range outside `src`).
    pub fn segments(&self) -> [&[u8]; 2] {
        self.src.slices(self.range.clone()).unwrap_or([&[], &[]])
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }
    /// Zero-length message.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// A refused zero-copy send: the error, and the buffer handed back.
pub struct ZcError<F> {
    /// Why it was refused.
    pub error: crate::types::CsError,
    /// The buffer, untouched beyond its headroom (None only if the engine
    /// could not give it back).
    pub buf: Option<F>,
}

impl<F> core::fmt::Debug for ZcError<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZcError")
            .field("error", &self.error)
            .field("buf", &self.buf.is_some())
            .finish()
    }
}

impl<F> From<ZcError<F>> for crate::types::CsError {
    fn from(e: ZcError<F>) -> crate::types::CsError {
        e.error
    }
}

/// A driver buffer for the unit tests: a received frame (`Rx`, writable
/// while unique), or memory someone else can still write (`Shared`, headers
/// kept outside), on which any request for write access fails the test.
#[cfg(test)]
pub(crate) mod testing {
    use alloc::sync::Arc;

    use super::FrameBuf;

    #[derive(Debug, Clone)]
    pub(crate) enum TestBuf {
        Rx(Arc<[u8]>),
        Shared(Arc<[u8]>),
    }

    impl AsRef<[u8]> for TestBuf {
        fn as_ref(&self) -> &[u8] {
            match self {
                TestBuf::Rx(b) | TestBuf::Shared(b) => b,
            }
        }
    }

    impl FrameBuf for TestBuf {
        fn unique_mut(&mut self) -> Option<&mut [u8]> {
            match self {
                TestBuf::Rx(b) => Arc::get_mut(b),
                TestBuf::Shared(_) => panic!("the engine asked to write a headers-outside buffer"),
            }
        }
        fn headers_inside(&self) -> bool {
            matches!(self, TestBuf::Rx(_))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestBuf;
    use super::*;

    fn gather() -> FrameRef<TestBuf> {
        FrameRef::Gather {
            head: Arc::from(&b"HEAD"[..]),
            buf: TestBuf::Shared(Arc::from(&b"..payload.."[..])),
            range: 2..9,
        }
    }

    #[test]
    fn slices_split_a_range_at_the_segment_boundary() {
        let f = gather();
        assert_eq!(f.segments(), [&b"HEAD"[..], &b"payload"[..]]);
        assert_eq!(f.slices(0..11), Some([&b"HEAD"[..], &b"payload"[..]]));
        assert_eq!(f.slices(1..3), Some([&b"EA"[..], &b""[..]]));
        assert_eq!(f.slices(4..7), Some([&b""[..], &b"pay"[..]]));
        assert_eq!(f.slices(3..6), Some([&b"D"[..], &b"pa"[..]]));
        assert_eq!(f.slices(11..11), Some([&b""[..], &b""[..]]));
        assert_eq!(f.slices(5..12), None);
        let own: FrameRef<TestBuf> = FrameRef::Own(Arc::from(&b"abc"[..]));
        assert_eq!(own.slices(1..3), Some([&b"bc"[..], &b""[..]]));
    }

    /// A payload inside either segment of a gather reads as its bytes (the
    /// application's view of a node's own message whose header stays
    /// outside its buffer); one across the boundary has no contiguous bytes.
    #[test]
    fn payload_bytes_of_a_gather() {
        let p = |range| Payload {
            src: gather(),
            range,
        };
        assert_eq!(p(4..11).bytes(), b"payload");
        assert_eq!(p(0..4).bytes(), b"HEAD");
        assert_eq!(p(5..7).bytes(), b"ay");
        assert_eq!(p(4..4).bytes(), b"");
        assert_eq!(p(3..11).bytes(), b"");
        assert_eq!(p(3..11).segments(), [&b"D"[..], &b"payload"[..]]);
        assert_eq!(p(3..12).bytes(), b"", "out of range");
        assert_eq!(p(3..12).segments(), [&b""[..], &b""[..]]);
        let rx = Payload {
            src: FrameRef::Rx(TestBuf::Rx(Arc::from(&b"frame"[..]))),
            range: 1..4,
        };
        assert_eq!(rx.bytes(), b"ram");
    }

    #[test]
    fn only_test_buffers_that_say_so_keep_headers_outside() {
        let a: Arc<[u8]> = Arc::from(&b"x"[..]);
        assert!(a.headers_inside());
        assert!(alloc::vec![1u8].headers_inside());
        assert!(TestBuf::Rx(a.clone()).headers_inside());
        assert!(!TestBuf::Shared(a).headers_inside());
    }
}

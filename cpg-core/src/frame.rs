//! Buffer handles and frame references: the vocabulary every layer above
//! the wire formats shares to move bytes without copying them.
//!
//! A driver passes its buffers in by ownership of a handle ([`FrameBuf`]);
//! Totem keeps frames as [`FrameRef`]s (its own memory, a received buffer,
//! or a zero-copy buffer with headers in its headroom), hands frames to
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
/// that the network may be reading are never written.
pub trait FrameBuf: Clone + AsRef<[u8]> {
    /// Mutable access while this is the only handle to the bytes.
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        None
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
    /// Zero copy, one piece of a fragmented message: the frame is `head`
    /// (headers built by the engine) followed by `buf[range]` (the piece,
    /// never copied). Drivers send it as two iovecs.
    Gather {
        /// Frame, multicast and packing headers.
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
    /// The message bytes (a payload always lies in one contiguous segment).
    pub fn bytes(&self) -> &[u8] {
        self.src
            .contiguous()
            .and_then(|b| b.get(self.range.clone()))
            .unwrap_or(&[])
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

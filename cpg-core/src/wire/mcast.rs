//! Multicast data frames.

use crate::types::{Guarantee, RingId};

/// A multicast frame's fields; the payload is borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McastRepr<'a> {
    /// Ring the seq belongs to.
    pub ring_id: RingId,
    /// Sequence number in that ring.
    pub seq: u32,
    /// Delivery guarantee of every message packed in this frame.
    pub guarantee: Guarantee,
    /// Recovery copy: the payload is a whole old-ring MCAST frame.
    pub encapsulated: bool,
    /// Packed items (or, if encapsulated, the inner frame).
    pub payload: &'a [u8],
}

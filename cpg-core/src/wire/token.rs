//! The ORF (ordering) token.

use super::*;
use crate::limits::RTR_MAX;
use crate::types::RingId;

/// One retransmit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtrEntry {
    /// Ring the missing message belongs to.
    pub ring_id: RingId,
    /// Its sequence number.
    pub seq: u32,
}

/// The ordering token's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRepr {
    /// Ring this token circulates on.
    pub ring_id: RingId,
    /// Incremented by each holder; detects duplicates.
    pub token_seq: u32,
    /// Highest message seq assigned on the ring.
    pub seq: u32,
    /// All received up to (ring-wide low-water mark).
    pub aru: u32,
    /// Node that lowered `aru` (0: nobody).
    pub aru_addr: NodeId,
    /// Frames sent during the last rotation (flow control).
    pub fcc: u32,
    /// Frames queued ring-wide at last visits (flow control).
    pub backlog: u32,
    /// Recovery: someone still has old-ring copies queued.
    pub retrans_flg: bool,
    /// Retransmit requests.
    pub rtr: heapless::Vec<RtrEntry, RTR_MAX>,
}

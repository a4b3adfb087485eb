//! The commit token.

use super::NodeList;
use crate::limits::NODES_MAX;
use crate::types::RingId;

/// One member's record in the commit token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitEntry {
    /// The ring the member last installed.
    pub old_ring_id: RingId,
    /// Its aru in that ring.
    pub aru: u32,
    /// Highest seq it delivered in that ring.
    pub high_delivered: u32,
    /// It held everything up to the highest aru of its old ring.
    pub received_flg: bool,
}

/// The commit token's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitRepr {
    /// The new ring.
    pub ring_id: RingId,
    /// Incremented per send.
    pub token_seq: u32,
    /// Entries filled so far (== count after the first rotation).
    pub memb_index: u16,
    /// Members of the new ring, ascending.
    pub addr: NodeList,
    /// One entry per member, same order as `addr`.
    pub entries: heapless::Vec<CommitEntry, NODES_MAX>,
}

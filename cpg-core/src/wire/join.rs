//! Membership JOIN (and LEAVE) messages.

use super::NodeList;

/// A JOIN: the sender's view of who is alive and who failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinRepr {
    /// Highest ring seq the sender has seen.
    pub ring_seq: u64,
    /// A clean shutdown: the sender is last in `fail`.
    pub leave: bool,
    /// Nodes believed alive.
    pub proc_list: NodeList,
    /// Nodes believed failed.
    pub fail_list: NodeList,
}

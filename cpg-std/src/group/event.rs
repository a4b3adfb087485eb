//! What a [`super::Member`] receives: [`Event`] and its three kinds.

use std::sync::Arc;

use cpg_core::{Guarantee, MemberAddr, NodeId, Reason, RingId};

/// One event of a member's group, in delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message multicast to the group (own messages included).
    Message(Message),
    /// The group's membership changed (a confchg).
    Membership(Membership),
    /// The ring changed (a totem confchg; only with
    /// [`super::JoinOptions::ring_events`]).
    Ring(Ring),
}

/// A delivered message. Its bytes are shared: cloning a `Message` does not
/// copy them. They were copied once out of the handle's queue (see the
/// module docs of [`super`] for why not zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sending process.
    pub sender: MemberAddr,
    /// Guarantee it was sent with.
    pub guarantee: Guarantee,
    pub(super) data: Arc<[u8]>,
}

impl Message {
    /// The message bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The bytes as a shared buffer (no copy).
    pub fn into_shared(self) -> Arc<[u8]> {
        self.data
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl std::ops::Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// A group membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Members after the change, sorted by (nodeid, pid).
    pub members: Vec<MemberAddr>,
    /// Members that left, with reasons.
    pub left: Vec<(MemberAddr, Reason)>,
    /// Members that joined, with reasons.
    pub joined: Vec<(MemberAddr, Reason)>,
}

/// A ring change: the new ring and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The ring.
    pub ring_id: RingId,
    /// Its nodes.
    pub nodes: Vec<NodeId>,
}

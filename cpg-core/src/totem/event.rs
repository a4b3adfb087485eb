//! What Totem hands to the layer above: whole messages in total order,
//! configuration changes (EVS), and, for checkers, a trace of every frame
//! delivery.

use alloc::boxed::Box;

use crate::frame::Payload;
use crate::types::{Guarantee, NodeId, RingId};
use crate::wire::NodeList;

/// What Totem hands to the layer above.
#[derive(Debug, Clone)]
pub(crate) enum TotemEvent<F> {
    /// A whole application-level message, in total order.
    Deliver {
        sender: NodeId,
        guarantee: Guarantee,
        payload: Payload<F>,
    },
    /// A configuration change.
    Config(Box<ConfigChange>),
    /// Checker trace of a frame delivery.
    Trace(TraceDeliver),
}

/// Totem-level configuration change (node membership, EVS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Members moving on together from the old ring; `left` departed.
    Transitional {
        /// New ring id (as Corosync reports it).
        ring_id: RingId,
        /// Transitional members, ascending.
        members: NodeList,
        /// Old members not in the transitional set.
        left: NodeList,
    },
    /// The new ring is installed.
    Regular {
        /// New ring id.
        ring_id: RingId,
        /// Members, ascending.
        members: NodeList,
        /// Members not in the transitional set.
        joined: NodeList,
    },
}

/// A Totem-level delivery, for checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceDeliver {
    /// Ring whose seq space `seq` is in.
    pub ring_id: RingId,
    /// Frame sequence number.
    pub seq: u32,
    /// Originating node.
    pub sender: NodeId,
    /// SAFE frame.
    pub safe: bool,
    /// Delivered in the transitional configuration (else regular).
    pub transitional: bool,
    /// FNV-1a digest of the frame payload (identity check).
    pub digest: u64,
}

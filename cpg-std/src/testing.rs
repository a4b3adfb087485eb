//! Test hooks: what this crate's integration tests need of its insides.
//! Not part of the API, not covered by semver, hidden from the docs (as
//! quinn-proto's `fuzzing` module): an application has no use for them.
//!
//! | hook | for |
//! |---|---|
//! | [`model_initialize_with_pid`] | one test process playing several CPG processes |
//! | [`record_buf_sends`], [`buf_sends`], [`BufSend`] | the zero-copy proof: which bytes each send read |
//! | [`RingSeqStore`] | reading the persisted ring seq behind a node's back |
//! | [`probe`], [`NodeProbe`] | a node's status, counters, link status, sends and freeze switch, kept apart from the node (cpgd's tests reach the node a daemon runs through it) |

use std::sync::Arc;

use crate::cpg::{Context, Cpg, ModelV1};
use crate::handles::ops::NodeControl;
use crate::handles::NodeStats;
use crate::node::{Node, NodeStatus};
use crate::transport::Gate;
use crate::CsError;

pub use crate::handles::BufSend;
pub use crate::state::RingSeqStore;

/// [`Cpg::model_initialize`] as process `pid` (members are `(nodeid,
/// pid)`, so one test process can be several members of one group).
///
/// # Errors
/// As [`Cpg::model_initialize`].
pub fn model_initialize_with_pid(
    node: &Node,
    pid: u32,
    model: ModelV1,
    context: Context,
) -> Result<Cpg, CsError> {
    Cpg::model_initialize_with_pid(node, pid, model, context)
}

/// Start (`true`, clearing earlier records) or stop recording, for every
/// transmit of `node` that reads from a driver buffer (a zero-copy
/// buffer), which bytes it reads.
pub fn record_buf_sends(node: &Node, on: bool) {
    node.control().record_buf_sends(on);
}

/// The sends of `node` recorded since [`record_buf_sends`].
pub fn buf_sends(node: &Node) -> Vec<BufSend> {
    node.control().buf_sends()
}

/// What a test reads of a node and does to it, without the node: a
/// daemon owns its node on its own thread, its tests hold this. It stays
/// usable after the node stops (the state it reads then is the stopped
/// node's).
#[derive(Clone)]
pub struct NodeProbe {
    control: Arc<dyn NodeControl>,
    gate: Option<Arc<Gate>>,
    links: Option<cpg_uring::LinkStatusHandle>,
}

impl std::fmt::Debug for NodeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProbe").finish_non_exhaustive()
    }
}

/// The probe of `node`.
pub fn probe(node: &Node) -> NodeProbe {
    let (control, gate, links) = node.probe_parts();
    NodeProbe {
        control,
        gate,
        links,
    }
}

impl NodeProbe {
    /// As [`Node::status`].
    pub fn status(&self) -> NodeStatus {
        self.control.status()
    }

    /// As [`Node::stats`].
    pub fn stats(&self) -> NodeStats {
        self.control.stats()
    }

    /// As [`Node::link_status`] (after the node stopped: the last state).
    pub fn link_status(&self) -> Option<Vec<cpg_uring::LinkStatus>> {
        self.links.as_ref().map(|h| h.snapshot())
    }

    /// Freeze the node's engine (its transport stops before touching it;
    /// frames to it wait; application calls still reach it, so a frozen
    /// node accepts sends and joins but delivers nothing), or thaw it. As
    /// `LoopbackNet::set_frozen`, for any transport. Stopping the node
    /// thaws it.
    pub fn set_frozen(&self, frozen: bool) {
        if let Some(g) = &self.gate {
            g.set(frozen);
        }
    }

    /// As [`record_buf_sends`].
    pub fn record_buf_sends(&self, on: bool) {
        self.control.record_buf_sends(on);
    }

    /// As [`buf_sends`].
    pub fn buf_sends(&self) -> Vec<BufSend> {
        self.control.buf_sends()
    }
}

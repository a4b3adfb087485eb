//! Test hooks: what this crate's integration tests need of its insides.
//! Not part of the API, not covered by semver, hidden from the docs (as
//! quinn-proto's `fuzzing` module): an application has no use for them.
//!
//! | hook | for |
//! |---|---|
//! | [`model_initialize_with_pid`] | one test process playing several CPG processes |
//! | [`record_buf_sends`], [`buf_sends`], [`BufSend`] | the zero-copy proof: which bytes each send read |
//! | [`RingSeqStore`] | reading the persisted ring seq behind a node's back |

use crate::cpg::{Context, Cpg, ModelV1};
use crate::node::Node;
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

//! `cpg-std`: the Corosync CPG API on an embedded engine.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML node configuration and its validation |
//! | [`state`] | the persisted ring sequence number |
//! | [`node`] | [`Node`]: one engine on its transport's threads; the [`node::Transport`] trait |
//! | [`cpg`] | [`Cpg`]: every function of the CPG API (spec §4), dispatch (§5) |
//! | [`loopback`] | an in-process transport for tests (N nodes in one process) |
//! | [`uring`] | the io_uring transport (`cpg-uring`'s driver), the default |
//! | [`udp`] | a plain std UDP transport (explicit fallback) |
//!
//! No protocol logic lives here: the engine (`cpg-core`) decides order,
//! membership and confchgs; this crate keeps each handle's view (one group
//! per handle, its join state, its event queue) and moves frames.
//!
//! Policies (ARCHITECTURE.md): a handle whose undispatched events exceed
//! its byte cap is evicted (its calls answer `LIBRARY`, the others see
//! PROCDOWN); mcast when not joined is `NOT_EXIST`; `Cpg` is `Send + Sync`.

pub mod config;
mod core;
pub mod cpg;
pub mod loopback;
pub mod node;
pub mod state;
pub mod udp;
pub mod uring;

pub use crate::config::{ConfigError, ConfigFile, NodeConfig};
pub use crate::core::{monotonic_now, BufSend, HeapZc, NodeCore, NodeStats, ZcAllocator};
pub use crate::cpg::{
    Callbacks, ConfChg, Context, Cpg, Delivery, DispatchFlags, FlowControlState, Iteration,
    IterationDescription, IterationType, ModelV1, ZcBuf, ZcSendError, MAX_ATOMIC_MSGSIZE,
    MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
pub use crate::node::{Node, NodeStatus, StartError};
pub use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

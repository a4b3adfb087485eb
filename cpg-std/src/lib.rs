//! `cpg-std`: the Corosync CPG API on an embedded engine, or over a
//! connection to `cpgd`.
//!
//! | item | what |
//! |---|---|
//! | [`Node`] | one engine on its transport's threads: io_uring by default, plain UDP syscalls by choice ([`config::TransportKind`]), or in-process ([`loopback`], for tests and examples) |
//! | [`Cpg`] ([`cpg`]) | every function of the CPG API (`docs/spec/cpg-api.md` §4), dispatch (§5); opened on a [`Node`] ([`Cpg::model_initialize`]) or on a connection to the per-host daemon ([`Cpg::connect`], `docs/spec/ipc.md`), and the same on both |
//! | [`group`] | the idiomatic layer beside `Cpg`: [`Member`] (leaves on drop), [`Event`], [`SendError`] |
//! | [`status`] | a node's ring, links and counters ([`Node::status_report`]; `cpgtool status`) |
//! | [`config`] | the TOML node configuration and its validation; [`ConfigBuilder`] builds a [`NodeConfig`] in code |
//! | errors | [`StartError`] (and [`StateError`], the persisted ring seq), [`ConfigError`], [`CsError`] |
//!
//! Inside (not exported): `handles` (one node's engine, its handle table,
//! staging areas and mailboxes), `client` (a handle that is a connection
//! to cpgd), `transport` (the transports and their trait), `node`, `state`
//! (the persisted ring sequence number).
//!
//! No protocol logic lives here: the engine (`cpg-core`) decides order,
//! membership and confchgs; this crate keeps each handle's view (one group
//! per handle, its join state, its event queue) and moves frames.
//!
//! The idiomatic layer ([`group`]): a [`ConfigBuilder`] for the node, a
//! [`Member`] per process and group (dropping it leaves), [`Event`]s out:
//!
//! ```
//! use std::time::Duration;
//! use cpg_std::loopback::LoopbackNet;
//! use cpg_std::{ConfigBuilder, Event, GroupName, Guarantee, Member};
//!
//! // one node in this process (`Node::start(&config)` runs it on io_uring)
//! let config = ConfigBuilder::new("demo").local_nodes(&[1], 5405).this_node(1).build().unwrap();
//! let net = LoopbackNet::new();
//! let node = net.start(&config).unwrap();
//! let member = Member::join(&node, &GroupName::new(b"demo").unwrap()).unwrap();
//! member.send(Guarantee::Agreed, b"hello").unwrap();
//! // the own join (a Membership), then the message
//! let msg = loop {
//!     match member.next_timeout(Duration::from_secs(10)).unwrap() {
//!         Some(Event::Message(m)) => break m,
//!         Some(_) => continue,
//!         None => panic!("timed out"),
//!     }
//! };
//! assert_eq!(msg.bytes(), b"hello");
//! ```
//!
//! The same through [`Cpg`], Corosync's API function for function:
//!
//! ```
//! use std::io::IoSlice;
//! use std::sync::{Arc, Mutex};
//! use cpg_std::loopback::LoopbackNet;
//! use cpg_std::{Cpg, DispatchFlags, GroupName, Guarantee, ModelV1, NodeConfig};
//!
//! // one node in this process (`Node::start(&config)` runs it on io_uring)
//! let net = LoopbackNet::new();
//! let node = net.start(&NodeConfig::in_memory(1, &[1])).unwrap();
//! let got = Arc::new(Mutex::new(Vec::new()));
//! let sink = got.clone();
//! let model = ModelV1 {
//!     deliver: Some(Box::new(move |_, d| sink.lock().unwrap().push(d.msg.to_vec()))),
//!     ..Default::default()
//! };
//! let cpg = Cpg::model_initialize(&node, model, None).unwrap();
//! let group = GroupName::new(b"demo").unwrap();
//! cpg.join(&group).unwrap();
//! cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(b"hel"), IoSlice::new(b"lo")]).unwrap();
//! while got.lock().unwrap().is_empty() {
//!     cpg.dispatch(DispatchFlags::One).unwrap(); // the own JOIN confchg, then the message
//! }
//! assert_eq!(got.lock().unwrap()[0], b"hello");
//! ```
//!
//! Policies (`docs/ARCHITECTURE.md`): a handle whose undispatched events exceed
//! its byte cap is evicted (its calls answer `LIBRARY`, the others see
//! PROCDOWN); a handle whose own undispatched events exceed half its cap
//! gets `TRY_AGAIN` from `mcast`/`zcb_mcast` (back-pressure, as Corosync
//! stops reading a client's requests while its event queue is full), so a
//! sender that outruns its own dispatch is slowed down, not evicted; mcast
//! when not joined is `NOT_EXIST`; `Cpg` is `Send + Sync`.
//!
//! `unsafe` is denied crate-wide and allowed in two modules: the daemon
//! client's zero-copy buffers (`client::zc`: a slot of the shared zc
//! region as a byte slice) and `malloc` (glibc's `mallopt` for the
//! binaries).
#![deny(unsafe_code)]

mod builder;
mod client;
pub mod config;
pub mod cpg;
// The `cpgtool` line protocol, shared by the binary and the tests; not
// part of the API.
#[doc(hidden)]
pub mod cpgtool_proto;
pub mod crypto;
mod error;
pub mod group;
mod handles;
pub mod logger;
pub mod malloc;
mod node;
mod state;
pub mod status;
#[doc(hidden)]
pub mod testing;
mod transport;

pub use crate::transport::loopback;

pub use crate::builder::ConfigBuilder;
pub use crate::client::{DEFAULT_SOCKET, SOCKET_ENV};
pub use crate::config::{ConfigError, ConfigFile, NodeConfig};
pub use crate::cpg::{
    Callbacks, ConfChg, Context, Cpg, Delivery, DispatchFlags, FlowControlState, Iteration,
    IterationDescription, IterationType, ModelV1, ZcBuf, ZcSendError, MAX_ATOMIC_MSGSIZE,
    MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
pub use crate::group::{Closed, Event, JoinOptions, Member, Membership, Message, Ring, SendError};
pub use crate::handles::NodeStats;
pub use crate::node::{Node, NodeStatus, StartError};
pub use crate::state::StateError;

/// Lock `m`, taking the guard even if a thread panicked while holding it:
/// the crate's one mutex-poison policy.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

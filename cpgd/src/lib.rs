//! `cpgd`: one CPG node per host serving many client processes, as
//! Corosync serves Pacemaker and DLM.
//!
//! The node is the embedded [`cpg_std::Node`] (the same engine, io_uring
//! transport and configuration); each client connection is one
//! [`cpg_std::Cpg`] handle opened on it on behalf of the client's process
//! (its pid from `SO_PEERCRED`). Requests and events move through the
//! connection's shared-memory rings (`docs/spec/ipc.md`, `cpg-ipc`); the
//! handle layer decides everything about groups, order, back-pressure and
//! eviction exactly as for an embedded handle.
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | the daemon loop: the socket, epoll over every connection, fairness |
//! | `conn` | one connection: setup state, its handle, request handling |
//! | `events` | the event side of a connection: callbacks into the event ring, what did not fit |
//! | `zc` | a connection's zero-copy slots |
//! | `access` | who may connect |
//! | [`cpu`] | where the daemon's threads run (`ipc.cpu`) |
//! | [`log`] | the binary's stderr logger for the `log` facade |

pub mod access;
mod conn;
pub mod cpu;
mod events;
pub mod logger;
pub mod server;
mod zc;

pub use server::{Daemon, DaemonStats, StopMode};

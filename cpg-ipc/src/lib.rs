//! cpgd's client IPC, the half that needs an operating system.
//!
//! `cpg_core::ipc` owns every format and every piece of ring bookkeeping
//! (`docs/spec/ipc.md`); this crate adds what it leaves out, each in a
//! small safe API:
//!
//! | module | owns |
//! |---|---|
//! | [`shm`] | a memfd mapped shared: create, size, seal, map, attach; the only `unsafe` of the crate besides [`ring`]'s atomics |
//! | [`ring`] | the two ends of a shared ring ([`RingTx`], [`RingRx`]): the index words as atomics with the orderings of `cpg_core::ipc::wake`, records copied in and out |
//! | [`wake`] | eventfds: signal, drain, wait with a dead-peer socket beside them |
//! | [`setup`] | the Unix socket: listen, connect, `Hello`, `Welcome` with three fds, `Refused`, `SO_PEERCRED` |
//! | [`bell`] | the doorbell bytes on that socket (the application polls it): ring, echo, count, drain |
//! | [`conn`] | one connection's shared state as each side sees it ([`DaemonConn`], [`ClientConn`]) |
//!
//! Both `cpgd` and the client library (`cpg-std`'s daemon backend) build on
//! this crate; neither touches a mapping or an atomic word directly.

#![deny(missing_docs)]

pub mod bell;
pub mod conn;
pub mod ring;
pub mod setup;
pub mod shm;
pub mod wake;

pub use conn::{ClientConn, ConnError, DaemonConn};
pub use ring::{HeldRecord, RingRx, RingTx, Wake};
pub use setup::{PeerCred, SetupError};
pub use shm::SharedMem;
pub use wake::EventFd;

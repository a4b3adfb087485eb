//! `cpg-core`: the whole Closed Process Group protocol with no I/O.
//!
//! Layers, bottom to top:
//!
//! | module | owns | guarantees |
//! |---|---|---|
//! | [`wire`] | every byte that crosses a host boundary | typed views and `emit`; malformed input is a typed [`wire::WireError`], never a panic |
//! | [`pool`] | zero-copy buffer bookkeeping (slots, size classes, states, generations) | O(1), allocation-free; a stale id is an error, not a use-after-free |
//! | [`ipc`] | the local IPC of `cpgd` and its clients: setup, request and event formats, shared ring bookkeeping, the wake-up protocol (`docs/spec/ipc.md`) | no heap, no atomics, no syscalls; malformed records and impossible ring indices are typed errors, never a panic |
//! | [`frame`] | buffer handles and frame references shared by the layers above (`FrameBuf`, `FrameRef`, `Payload`, `Transmit`, `ZcError`) | a frame is moved by handle, never copied; headers are written only into a buffer no one else holds |
//! | [`totem`] | the Totem single-ring protocol as a sans-IO state machine, with its `State`, `Stats`, `Options` and `ConfigChange` | total order (AGREED), real SAFE delivery, extended virtual synchrony |
//! | [`group`] | CPG groups on the ordered stream, with their `Request`s in and `Event`s out | join/leave/mcast/confchg identical at every member at the same point of the stream |
//! | [`engine`] | the two above wired together: the API a driver (the simulator, `cpg-uring`) calls; re-exports the vocabulary above | the engine contract of `docs/ARCHITECTURE.md` |
//!
//! Each layer uses only the ones above it in this table, never one below
//! it: `types`/`wire` → `frame` → `totem` → `group` → `engine`.
//!
//! The engine never reads a clock, touches a socket or spawns: time is an
//! [`Instant`] passed in, packets come in as owned frames, and everything it
//! wants done comes out of `poll_*` calls. That is what lets `cpg-sim` run
//! many engines in one thread over a seeded faulty network.
//!
//! Features: `alloc` (default) enables the engine layers (`frame`, `totem`,
//! `group`, `engine`), which keep bounded queues on the heap; `wire`, `pool`,
//! `ipc`, the types and the limits are available without it. `seal` adds [`seal`]
//! (authenticated, encrypted frames; no heap), which the std transports
//! use; `seal-soft` adds a portable cipher for it.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod hash;
pub mod ipc;
pub mod limits;
pub mod pool;
#[cfg(feature = "seal")]
pub mod seal;
pub mod time;
pub mod types;
pub mod wire;

#[cfg(feature = "alloc")]
pub mod engine;
#[cfg(feature = "alloc")]
pub mod frame;
#[cfg(feature = "alloc")]
pub mod group;
#[cfg(feature = "alloc")]
pub mod totem;

pub use time::{Duration, Instant};
pub use types::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

//! io_uring transport for one `cpg-core` engine: UDP unicast to every ring
//! member ("udpu"), a registered buffer region used on every send path,
//! multishot receive into a provided-buffer ring, io_uring timeouts, and an
//! eventfd wake.
//!
//! | module | owns | unsafe? |
//! |---|---|---|
//! | `bufs` | the mapped region (pool slots + receive buffers), the provided-buffer ring, [`RxBuf`] (external ranges included) | yes: raw memory, argued per block |
//! | `external` | [`ExternalRegion`] (memory the driver does not own, cpgd's client regions) and [`ExternalRegions`] (adding and removing them as fixed buffers from any thread) | declares the unsafe trait only |
//! | `ring` | ring setup, probing, typed `user_data`, SQE builders, completion decoding, the fixed-buffer table (the region's two buffers, external regions after them); keeps every in-flight operation's memory alive | yes: SQE pushes and registration |
//! | `send` | sends in flight (one frame or a GSO send's several) and the two-step `SendZc` completion | no |
//! | `gro` | UDP generic receive offload: the `UDP_GRO` cmsg of a receive, the datagrams of a coalesced one | no |
//! | `gso` | UDP segmentation offload: which frames of a batch share one send, the `UDP_SEGMENT` cmsg | builds a `cmsghdr` only |
//! | `seal` | frame sealing: `ring`'s AES-256-GCM behind `cpg_core::seal`, [`SealSpec`], [`EpochSource`] | no |
//! | `socket` | UDP sockets (rustix); the `UDP_SEGMENT` probe, `UDP_GRO` on | one `getsockopt`, one `setsockopt` |
//! | `pmtu` | the kernel's path MTU to a peer (`IP_MTU` / `IPV6_MTU`), for `netmtu = "auto"` | no |
//! | `driver` | [`Driver`], the loop, [`Host`], [`TransportConfig`], [`DriverError`]; `driver/peers` its (peer, link) table and sockets, `driver/heartbeat` its link heartbeats | no |
//! | `links` | redundant links: [`LinkSpec`], [`LinkMode`], [`LinkPing`], the heartbeat state machine, the choice of link, [`LinkStatus`] | no |
//! | `counters` | [`Counters`] | no |
//! | `spin` | the adaptive spin before a loop sleeps ([`Spin`], [`SPIN_DEFAULT`]; cpgd's epoll loop uses it too) | no |
//!
//! The crate knows nothing about groups or message meaning: a [`Host`]
//! (in `cpg-std`, an engine behind a mutex) turns inputs into outputs.
//!
//! Frames never exceed min(netmtu, 65,507) bytes: the engine builds them;
//! the receive buffers hold 65,536 bytes plus [`RX_HEADROOM`] (with UDP
//! GRO, [`GRO_RX_BUFFER_SIZE`]: a coalesced receive of several frames).
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![deny(missing_docs)]

mod bufs;
mod counters;
mod driver;
mod external;
mod gro;
mod gso;
mod links;
mod pmtu;
mod ring;
mod seal;
mod send;
mod socket;
mod spin;
mod waker;

pub use bufs::{Region, RegionError, RxBuf, SlotAlloc, GRO_RX_BUFFER_SIZE, RX_HEADROOM};
pub use counters::{Counters, Snapshot};
pub use driver::{
    default_pool, now, Driver, DriverError, EngineCounters, Host, Input, Outputs, TransportConfig,
    ZeroCopy,
};
pub use external::{
    ExternalError, ExternalRegion, ExternalRegions, NotFixed, RegionId, RegionStatus,
    EXTERNAL_REGION_MAX,
};
pub use links::{
    LinkMode, LinkPing, LinkSpec, LinkStatus, LinkStatusHandle, LINKS_MAX,
    LOG_TARGET as LINK_LOG_TARGET,
};
pub use pmtu::{path_mtu, socket_path_mtu};
pub use ring::{probe, Probe};
pub use seal::{EpochSource, RingAesGcm, SealSpec};
pub use socket::SOCKET_BUFFER_BYTES;
pub use spin::{Spin, SPIN_DEFAULT};
pub use waker::Waker;

//! The event loop that drives one engine through a [`Host`].
//!
//! # The loop (io_uring)
//!
//! 1. Arm a multishot `RecvMsg` on every socket (per link, the bound one
//!    and one connected socket per peer), an eventfd read (the [`Waker`])
//!    and, when the host or the link heartbeats ask for one, an absolute
//!    timeout.
//! 2. Call [`Host::step`] with [`Input::Start`], then wait for completions.
//! 3. For each completion: a datagram becomes [`Input::Packet`] (the source
//!    address looked up in the peer list; a link heartbeat is answered or
//!    taken here and never reaches the host), a wake [`Input::Wake`], the
//!    host's deadline [`Input::Timeout`] (a heartbeat round when it is
//!    due); send completions and zero-copy notifications release what the
//!    send read.
//! 4. After each `step`, the host's [`Outputs`] are sent at once:
//!    `Dest::AllOthers` → one send per peer, `Dest::Node(id)` → that peer,
//!    over the link [`crate::links`] picks (passive: its best live link;
//!    active: round-robin), this node → a user-space loopback (no
//!    syscall, no copy).
//! 5. At the end of a batch: re-provide receive buffers whose last
//!    [`RxBuf`] was dropped, re-arm receives that ended (no `more` flag, or
//!    ENOBUFS once buffers are back), re-arm the wake, move the timeout if
//!    the host's deadline changed; then submit and wait again.
//!
//! # Send paths
//!
//! | frame | zerocopy off | zerocopy on |
//! |---|---|---|
//! | zero-copy buffer ([`FrameRef::Slot`], a pool slot) | `WriteFixed`, fixed buffer 0 | `SendZc`, fixed buffer 0 |
//! | received frame re-sent ([`FrameRef::Rx`]) | `WriteFixed`, fixed buffer 1 | `SendZc`, fixed buffer 1 |
//! | fragment of a zero-copy buffer ([`FrameRef::Gather`]) | `SendMsg`, 2 iovecs | `SendMsgZc`, 2 iovecs |
//! | engine-built frame ([`FrameRef::Own`], heap) | `Send` | `SendZc` (pages pinned per send) |
//! | external region ([`RxBuf::external`]), registered | `WriteFixed`, its index (≥ 2) | `SendZc`, its index |
//! | external region, not registered (or being removed) | `Send` | `SendZc` (pages pinned per send) |
//! | fragment of an external buffer ([`FrameRef::Gather`]) | `SendMsg`, 2 iovecs | `SendMsgZc`, 2 iovecs |
//! | any of the above, region not registered (RLIMIT_MEMLOCK refused it) | `Send` / `SendMsg` | `SendZc` / `SendMsgZc` (`zerocopy = always` only) |
//!
//! `zerocopy = auto` takes the zero-copy column only for a peer off
//! loopback and a frame of at least `zc_min_len` bytes: on loopback the
//! kernel copies anyway and `SendZc` only adds a second completion.
//!
//! # UDP segmentation offload (GSO)
//!
//! With [`TransportConfig::gso`] (the default) and a kernel that offers
//! `UDP_SEGMENT`, frames one step produces for one (peer, link) that
//! follow each other with one size (the last may be shorter) go out as
//! one `SendMsg` (`SendMsgZc` where zero copy pays for the run's bytes)
//! carrying a `UDP_SEGMENT` cmsg: the kernel cuts the datagrams, each one
//! frame, sealed frames included (`crate::gso` has the batching rule and
//! keeps the order of sends per socket). A run of one frame takes the
//! table above. Only frames within the peer link's path MTU (read from its
//! connected socket) are batched, as the kernel refuses a `gso_size` over
//! it. A GSO send that fails is sent again frame by frame, copying; one
//! that fails because the path cannot take it (`EIO`: a device without
//! checksum offload or an IPsec path; `EINVAL`, `EMSGSIZE`) also turns
//! GSO off for that peer link (`gso_fallbacks`, one warning per link).
//!
//! # UDP generic receive offload (GRO)
//!
//! With [`TransportConfig::gro`] (the default), receive buffers of at
//! least [`GRO_RX_BUFFER_SIZE`] and a kernel that takes `UDP_GRO`, every
//! socket the loop receives on has `UDP_GRO` on: the kernel may hand
//! several datagrams of one sender as one receive (on loopback and veth a
//! GSO send arrives whole) with a `UDP_GRO` cmsg giving their size. The
//! receive is cut into its datagrams (`crate::gro`), each an [`RxBuf`] of
//! its own over its range of the one buffer, which goes back to the kernel
//! when the last of them drops; sealed ones are each opened in place
//! (disjoint ranges) before any is handed on; then each takes the path of
//! a datagram received alone, counters included (`gro_receives`,
//! `gro_segments` count the coalesced receives and their datagrams).
//! Smaller buffers would truncate a coalesced receive, so GRO stays off
//! with them (logged once at info).
//!
//! # External regions
//!
//! Memory the driver does not own (cpgd's mapping of a client's memfd) is
//! added through [`ExternalRegions`] from any thread; the loop applies the
//! requests on its own thread (it owns the ring) before each batch and on
//! every wake: an added region becomes fixed buffer `2 + k` of a sparse
//! table ([`TransportConfig::external_fixed_max`] entries), a removed one
//! leaves the table once no send names its index any more. Whatever the
//! registration's fate, no path copies the bytes in user space except
//! sealing (which writes every datagram anew) and the user-space loopback
//! of a frame to this node.
//!
//! # References
//! `docs/ARCHITECTURE.md` "cpg-uring" and Policies "Send operations"; corosync
//! `exec/totemudpu.c` (unicast to every member of the node list).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use cpg_core::engine::{Dest, FrameRef, Transmit};
use cpg_core::pool::{ClassSpec, PoolConfig, HEADROOM_DEFAULT};
use cpg_core::seal::OpenError;
use cpg_core::wire::is_link_frame;
use cpg_core::{Instant, NodeId};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, SendFlags};

use crate::bufs::{Region, RegionError, RxBuf, RxRing, SlotAlloc, TxSource, GRO_RX_BUFFER_SIZE};
use crate::counters::Counters;
use crate::external::{Command, ExternalRegions, NotFixed, RegionId, RegionStatus};
use crate::gso::{Batcher, Run};
use crate::links::{
    self, Candidate, LinkMode, LinkPing, LinkSpec, LinkState, LinkStatusHandle, LINKS_MAX,
};
use crate::ring::{Completion, ExtRemoved, Probe, Ring, SendKind, FIXED_OWN, FIXED_TABLE_MAX};
use crate::seal::{FrameSeal, SealSpec};
use crate::socket;
use crate::spin::{Spin, SPIN_DEFAULT};
use crate::waker::Waker;

mod heartbeat;
mod peers;
use heartbeat::check_links;

/// The current CLOCK_MONOTONIC time as an engine [`Instant`] (the clock the
/// loop passes to [`Host::step`] and its timeouts use).
pub fn now() -> Instant {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Instant(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Which send operations the transport uses: whether sends use `SendZc`
/// (`docs/ARCHITECTURE.md` "Send operations"). With the `serde` feature it
/// is a configuration value, spelled in lower case (`zerocopy = "auto"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ZeroCopy {
    /// `SendZc` where it pays: peers off loopback and frames of at least
    /// `zc_min_len`; a plain send from the registered buffer otherwise.
    #[default]
    Auto,
    /// `SendZc` for every frame that lies in a registered buffer (refused
    /// at start-up if the kernel lacks it).
    Always,
    /// Never `SendZc` (plain sends from the registered buffers).
    Never,
}

/// Transport settings of one node.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Address to bind (port 0 picks a free port; see [`Driver::local_addr`]).
    pub bind: SocketAddr,
    /// Every other node of the node list with its address (an entry for
    /// this node itself is ignored). May be set later with [`Driver::set_peers`].
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Zero-copy policy.
    pub zerocopy: ZeroCopy,
    /// Smallest frame `ZeroCopy::Auto` sends with `SendZc`.
    pub zc_min_len: usize,
    /// Pages a zero-copy datagram may span (the kernel's MAX_SKB_FRAGS: one
    /// skb frag per page). A gather frame over it goes by a copying send
    /// instead of a `SendMsgZc` the kernel would refuse (EMSGSIZE). `None`:
    /// `net.core.max_skb_frags`, 17 if unreadable; `Some(usize::MAX)` never
    /// predicts (a refused send is still re-sent copying).
    pub zc_max_frags: Option<usize>,
    /// Submission queue entries (the completion queue gets four times that).
    pub ring_entries: u32,
    /// Receive buffers (a power of two, at most 32768).
    pub rx_buffers: usize,
    /// Bytes per receive buffer: the largest datagram plus [`crate::RX_HEADROOM`];
    /// UDP GRO ([`TransportConfig::gro`]) needs [`GRO_RX_BUFFER_SIZE`].
    pub rx_buffer_size: usize,
    /// When fewer receive buffers than this are left with the kernel, a
    /// received frame is copied to the heap (counted) and its buffer goes
    /// straight back, so an engine holding many frames cannot starve the
    /// receive path. 0 never copies.
    pub rx_copy_below: usize,
    /// SO_RCVBUF / SO_SNDBUF asked for.
    pub socket_buffer: usize,
    /// The send pool (registered as fixed buffer 0).
    pub pool: PoolConfig,
    /// Fixed-buffer table entries for external regions
    /// ([`Driver::external_regions`]), after the region's own two; at most
    /// 16,382. 0 registers no table: external regions are then never fixed
    /// buffers (sent from by the non-fixed paths, counted in
    /// `external_register_failures`).
    pub external_fixed_max: u32,
    /// Plain `recvfrom`/`sendmsg` with `poll` instead of io_uring, for
    /// kernels without it (cpg-std sets it for `transport = "udp"`). Only
    /// when chosen: an io_uring failure is an error, never a silent fallback.
    pub fallback_syscalls: bool,
    /// Seal every datagram (`cpg_core::seal`); `None` sends frames as they
    /// are. The engine's `frame_overhead` must then include
    /// `cpg_core::seal::SEAL_OVERHEAD`.
    pub seal: Option<SealSpec>,
    /// Links beyond link 0 (`bind` and `peers` are link 0), numbers 1..=7.
    pub links: Vec<LinkSpec>,
    /// Link 0's priority (higher is preferred in passive mode).
    pub link0_priority: u8,
    /// How frames are spread over a peer's live links.
    pub link_mode: LinkMode,
    /// Link heartbeats; `None` sends none and counts every link up (one
    /// link has nothing to fail over to).
    pub link_ping: Option<LinkPing>,
    /// The cluster id heartbeats carry (one of another cluster is dropped).
    pub cluster_id: u32,
    /// How long the io_uring loop polls for a completion before it sleeps,
    /// while traffic is recent (`spin.rs`); zero never spins.
    pub spin: Duration,
    /// Send runs of same-size frames to one peer as one GSO send (see the
    /// module docs), where the kernel offers `UDP_SEGMENT`; io_uring only.
    pub gso: bool,
    /// Receive with `UDP_GRO` (see the module docs): where the kernel
    /// takes it and every receive buffer holds [`GRO_RX_BUFFER_SIZE`]
    /// bytes; io_uring only.
    pub gro: bool,
}

impl TransportConfig {
    /// Defaults for `node_id` at `bind` with `peers`: 64 receive buffers of
    /// [`GRO_RX_BUFFER_SIZE`] (64 KiB + headroom + the GRO cmsg), a pool
    /// of 256 × 2 KiB and 32 × 64 KiB slots
    /// (≈ 6.7 MiB registered in all, under a default 8 MiB `ulimit -l`),
    /// room for 256 external regions in the fixed-buffer table (an empty
    /// entry pins nothing).
    pub fn new(
        node_id: NodeId,
        bind: impl Into<SocketAddr>,
        peers: Vec<(NodeId, SocketAddr)>,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            bind: bind.into(),
            peers,
            zerocopy: ZeroCopy::Auto,
            zc_min_len: 16 * 1024,
            zc_max_frags: None,
            ring_entries: 512,
            rx_buffers: 64,
            rx_buffer_size: GRO_RX_BUFFER_SIZE,
            rx_copy_below: 16,
            socket_buffer: socket::SOCKET_BUFFER_BYTES,
            pool: default_pool(),
            external_fixed_max: 256,
            fallback_syscalls: false,
            seal: None,
            links: Vec::new(),
            link0_priority: 1,
            link_mode: LinkMode::Passive,
            link_ping: None,
            cluster_id: 0,
            spin: SPIN_DEFAULT,
            gso: true,
            gro: true,
        }
    }
}

/// The default send pool: 256 × 2 KiB and 32 × 64 KiB slots.
pub fn default_pool() -> PoolConfig {
    PoolConfig::new(
        HEADROOM_DEFAULT,
        &[
            ClassSpec::new(2048, 256),
            ClassSpec::new(65_536 + HEADROOM_DEFAULT, 32),
        ],
    )
    .unwrap_or_else(|_| unreachable!("the default pool configuration is valid"))
}

/// Why a [`Driver`] could not start or run.
#[derive(Debug)]
pub enum DriverError {
    /// A setting is unusable.
    Config(String),
    /// `io_uring_setup` failed.
    UringUnavailable {
        /// The error.
        err: io::Error,
        /// What it most likely means and what to change.
        cause: String,
    },
    /// The kernel's io_uring lacks something the driver needs.
    MissingFeatures {
        /// What the kernel offers.
        probe: Probe,
        /// What is missing.
        missing: Vec<&'static str>,
    },
    /// `zerocopy = always` on a kernel without `SendZc`.
    ZeroCopyUnsupported {
        /// What the kernel offers.
        probe: Probe,
    },
    /// The buffer region could not be mapped.
    Region(RegionError),
    /// Registering the region or the provided-buffer ring was refused.
    Register {
        /// `register_buffers` or `register_buf_ring`.
        what: &'static str,
        /// Bytes the registration pins.
        bytes: usize,
        /// RLIMIT_MEMLOCK soft limit (None = unlimited).
        memlock: Option<u64>,
        /// The error.
        err: io::Error,
    },
    /// A socket could not be set up.
    Socket {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
    /// The ring failed while running.
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        err: io::Error,
    },
}

impl DriverError {
    /// Whether io_uring itself is missing or too old here
    /// ([`DriverError::UringUnavailable`], [`DriverError::MissingFeatures`]):
    /// the error a caller answers by choosing plain sockets, and whose
    /// message the caller completes with the name of that setting
    /// ([`TransportConfig::fallback_syscalls`] here, `transport = "udp"` in
    /// cpg-std's TOML). The message itself names no setting, since the
    /// one a user can reach depends on the layer they configure.
    pub fn is_uring_unsupported(&self) -> bool {
        matches!(
            self,
            DriverError::UringUnavailable { .. } | DriverError::MissingFeatures { .. }
        )
    }
}

fn kib(n: u64) -> u64 {
    n.div_ceil(1024)
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Config(s) => write!(f, "transport configuration: {s}"),
            DriverError::UringUnavailable { err, cause } => {
                write!(f, "io_uring is unavailable ({err}): {cause}")
            }
            DriverError::MissingFeatures { probe, missing } => write!(
                f,
                "this kernel's io_uring lacks {}; need Linux 6.0 or later; probe: {probe}",
                missing.join(", ")
            ),
            DriverError::ZeroCopyUnsupported { probe } => write!(
                f,
                "zerocopy = always, but this kernel has no IORING_OP_SEND_ZC (Linux 6.0); \
                 use zerocopy = auto or never; probe: {probe}"
            ),
            DriverError::Region(e) => write!(f, "{e}"),
            DriverError::Register {
                what,
                bytes,
                memlock,
                err,
            } => {
                write!(f, "{what} of {} KiB refused ({err})", kib(*bytes as u64))?;
                match err.raw_os_error() {
                    Some(libc::ENOMEM | libc::EPERM) => {
                        let limit = match memlock {
                            Some(l) => format!("{} KiB", kib(*l)),
                            None => "unlimited".to_string(),
                        };
                        write!(
                            f,
                            ": pinned buffers count against RLIMIT_MEMLOCK (ulimit -l), now {limit}, \
                             unless the process has CAP_IPC_LOCK; raise it to at least {} KiB \
                             (ulimit -l, LimitMEMLOCK= in a systemd unit, memlock in limits.conf) \
                             or shrink the pool / receive buffers",
                            kib(*bytes as u64) + 1024
                        )
                    }
                    Some(libc::EFAULT) => write!(
                        f,
                        ": one registered buffer may not exceed 1 GiB; shrink the pool"
                    ),
                    _ => Ok(()),
                }
            }
            DriverError::Socket { what, err } => write!(f, "{what}: {err}"),
            DriverError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::UringUnavailable { err, .. }
            | DriverError::Register { err, .. }
            | DriverError::Socket { err, .. }
            | DriverError::Io { err, .. } => Some(err),
            DriverError::Region(e) => Some(e),
            _ => None,
        }
    }
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/")))
        .ok()
        .map(|s| s.trim().to_string())
}

fn memlock_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Memlock).current
}

/// Explain an `io_uring_setup` failure.
fn uring_cause(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel was built without io_uring (CONFIG_IO_URING)".into(),
        Some(libc::EPERM) | Some(libc::EACCES) => match read_sysctl("kernel.io_uring_disabled").as_deref() {
            Some("2") => "disabled for everyone by sysctl kernel.io_uring_disabled = 2; set it to 0".into(),
            Some("1") => format!(
                "sysctl kernel.io_uring_disabled = 1 allows only members of group kernel.io_uring_group (gid {}); \
                 add the user to it or set the sysctl to 0",
                read_sysctl("kernel.io_uring_group").unwrap_or_else(|| "?".into())
            ),
            _ => "refused although kernel.io_uring_disabled allows it: most likely a seccomp filter \
                  (container runtimes' default profiles block io_uring_setup)"
                .into(),
        },
        Some(libc::ENOMEM) => format!(
            "the ring's memory could not be allocated or locked: RLIMIT_MEMLOCK (ulimit -l) is {}; raise it \
             or lower ring_entries",
            memlock_limit().map_or("unlimited".into(), |l| format!("{} KiB", kib(l)))
        ),
        Some(libc::EINVAL) => "the kernel refused the ring parameters (ring_entries too large?)".into(),
        _ => "io_uring_setup failed".into(),
    }
}

/// A peer's engine-level counters the host may report, mirrored into
/// [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Messages retransmitted.
    pub retransmissions: u64,
    /// Token visits.
    pub token_rotations: u64,
    /// Regular configurations installed.
    pub ring_changes: u64,
}

impl From<&cpg_core::engine::Stats> for EngineCounters {
    fn from(s: &cpg_core::engine::Stats) -> EngineCounters {
        EngineCounters {
            retransmissions: s.retransmissions,
            token_rotations: s.token_visits,
            ring_changes: s.ring_changes,
        }
    }
}

/// What the loop hands the host.
#[derive(Debug)]
pub enum Input {
    /// The loop started (once per [`Driver::run`]).
    Start,
    /// A frame arrived from `from` (pass it to `Engine::handle_packet`).
    Packet {
        /// Sender, from the peer list (this node for loopback).
        from: NodeId,
        /// The frame.
        frame: RxBuf,
    },
    /// The deadline in [`Outputs::next_timeout`] passed.
    Timeout,
    /// A [`Waker`] was woken (local requests are waiting).
    Wake,
}

/// What the host wants done after a step. The driver drains `transmits`;
/// `next_timeout` is state: the deadline the host wants armed now (set it
/// after every step, `None` for none).
#[derive(Debug, Default)]
pub struct Outputs {
    /// Frames to send (`Engine::poll_transmit`), sent in order.
    pub transmits: Vec<Transmit<RxBuf>>,
    /// The engine's `poll_timeout`.
    pub next_timeout: Option<Instant>,
    /// Engine counters to mirror (optional).
    pub engine: Option<EngineCounters>,
}

/// The code the loop calls: typically locks an engine, feeds `input`, and
/// drains its outputs into `out` (persist first, as the engine's calling
/// order says: a ring seq is durable before any later transmit is pushed).
pub trait Host {
    /// One input. `now` is CLOCK_MONOTONIC ([`now`]).
    fn step(&mut self, now: Instant, input: Input, out: &mut Outputs);
    /// Checked between batches; wake the loop ([`Waker::wake`]) after making
    /// it true from another thread.
    fn should_stop(&self) -> bool;
    /// The loop handled a batch of inputs and is about to submit (and maybe
    /// wait): a host that defers work per batch (waking its consumers once
    /// rather than per input) does it here.
    fn batch_done(&mut self) {}
}

/// One link of this node: its number, priority and bound socket.
#[derive(Debug)]
struct Link {
    number: u8,
    priority: u8,
    local: SocketAddr,
    main: OwnedFd,
}

/// A peer on one link.
#[derive(Debug)]
struct PeerLink {
    addr: SocketAddr,
    /// Connected socket (io_uring mode).
    fd: Option<OwnedFd>,
    loopback: bool,
    state: LinkState,
    /// Longest frame a GSO send may carry to it: the path MTU less the IP
    /// and UDP headers; 0 sends it no GSO (off, unsupported, or a GSO send
    /// to it failed).
    gso_max: usize,
}

#[derive(Debug)]
struct Peer {
    id: NodeId,
    /// By link index (the driver's `links`); `None` where the peer has no
    /// address on that link.
    links: Vec<Option<PeerLink>>,
    /// Round-robin position (active mode).
    rr: usize,
}

enum Backend {
    Uring(Box<Ring>),
    Syscalls,
}

/// One node's transport (see the module docs).
pub struct Driver {
    // Dropped first: the ring cancels and drains before sockets and memory go.
    backend: Backend,
    node_id: NodeId,
    /// Link 0 first; each with its bound socket.
    links: Vec<Link>,
    peers: Vec<Peer>,
    /// Source address → (peer index, link index).
    by_addr: HashMap<SocketAddr, (usize, usize)>,
    by_id: HashMap<NodeId, usize>,
    /// Every socket the loop receives on, by ring socket id.
    socks: Vec<std::os::fd::RawFd>,
    link_mode: LinkMode,
    link_ping: Option<LinkPing>,
    /// When the next heartbeat round is due.
    link_next: Option<Instant>,
    cluster_id: u32,
    link_status: LinkStatusHandle,
    zerocopy: ZeroCopy,
    zc_min_len: usize,
    rx_copy_below: usize,
    socket_buffer: usize,
    waker: Waker,
    counters: Arc<Counters>,
    out: Outputs,
    loopback: VecDeque<RxBuf>,
    /// Armed timeout: (generation, deadline).
    timer: Option<(u32, Instant)>,
    timer_gen: u32,
    /// Sockets whose receive was armed at least once (for `recv_rearms`).
    recv_started: Vec<bool>,
    completions: Vec<Completion>,
    region: Region,
    seal: Option<FrameSeal>,
    /// Requests from [`ExternalRegions`] handles, applied by the loop.
    external: ExternalRegions,
    ext_cmds: Vec<Command>,
    ext_gone: Vec<RegionId>,
    /// An error that ends the loop (a sealing epoch that could not be
    /// persisted: the node cannot send any more).
    fatal: Option<DriverError>,
    /// Whether to poll a while before sleeping.
    spin: Spin,
    /// GSO is configured and the kernel offers it (io_uring only).
    gso: bool,
    /// Inside `dispatch` with `gso`: sends queue into `gso_runs`.
    batching: bool,
    /// The runs of the current dispatch, keyed by (peer, link) index.
    gso_runs: Batcher<(usize, usize), TxSource>,
    /// Runs to submit (kept for its allocation).
    gso_out: Vec<Run<(usize, usize), TxSource>>,
    /// Every socket receives with `UDP_GRO` (io_uring only).
    gro: bool,
    /// The datagrams of one coalesced receive (kept for its allocation).
    gro_parts: Vec<RxBuf>,
    /// The region is pinned as fixed buffers 0 and 1.
    registered: bool,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("node_id", &self.node_id)
            .field("links", &self.links)
            .field("peers", &self.peers)
            .field("fallback", &matches!(self.backend, Backend::Syscalls))
            .finish()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Handles outlive the driver: refuse their new requests. The
        // registered regions go with the ring (the fields, after this).
        self.external.close();
    }
}

/// Most loopback frames handled before looking at the ring again.
const LOOPBACK_BATCH: usize = 64;

impl Driver {
    /// Set up the ring (or the syscall fallback), the region, the sockets.
    ///
    /// # Errors
    /// [`DriverError`] naming the cause and, for limits, what to raise.
    pub fn new(cfg: TransportConfig) -> Result<Driver, DriverError> {
        if cfg.node_id == 0 {
            return Err(DriverError::Config("node_id 0".into()));
        }
        if cfg.external_fixed_max > FIXED_TABLE_MAX - u32::from(FIXED_OWN) {
            return Err(DriverError::Config(format!(
                "external_fixed_max {}: at most {}",
                cfg.external_fixed_max,
                FIXED_TABLE_MAX - u32::from(FIXED_OWN)
            )));
        }
        let region = Region::new(&cfg.pool, cfg.rx_buffers, cfg.rx_buffer_size)
            .map_err(DriverError::Region)?;
        let seal = match &cfg.seal {
            Some(spec) => {
                Some(
                    FrameSeal::new(spec, cfg.node_id).map_err(|err| DriverError::Io {
                        what: "frame sealing set-up (epoch file or cipher self-test)",
                        err,
                    })?,
                )
            }
            None => None,
        };
        let waker = Waker::new().map_err(|err| DriverError::Socket {
            what: "eventfd".into(),
            err,
        })?;
        let bind_err = |err| DriverError::Socket {
            what: format!("bind {}", cfg.bind),
            err,
        };
        check_links(&cfg)?;
        // the region pinned as fixed buffers (not when RLIMIT_MEMLOCK
        // refuses it, nor on the syscall fallback)
        let mut registered = false;
        let (mut backend, main, local) = if cfg.fallback_syscalls {
            let (main, local) =
                socket::bind_exclusive(cfg.bind, cfg.socket_buffer).map_err(bind_err)?;
            (Backend::Syscalls, main, local)
        } else {
            let mut ring =
                Ring::new(cfg.ring_entries).map_err(|err| DriverError::UringUnavailable {
                    cause: uring_cause(&err),
                    err,
                })?;
            ring.set_zc_max_frags(cfg.zc_max_frags.unwrap_or_else(crate::send::max_skb_frags));
            let probe = ring.probe().clone();
            let missing = probe.missing();
            if !missing.is_empty() {
                return Err(DriverError::MissingFeatures { probe, missing });
            }
            if cfg.zerocopy == ZeroCopy::Always && !probe.send_zc {
                return Err(DriverError::ZeroCopyUnsupported { probe });
            }
            let refused = |err| DriverError::Register {
                what: "register_buffers (send pool + receive buffers)",
                bytes: region.len(),
                memlock: memlock_limit(),
                err,
            };
            match ring.register_region(&region, cfg.external_fixed_max) {
                Ok(()) => registered = true,
                // Pinning the region would pass RLIMIT_MEMLOCK (a user
                // without CAP_IPC_LOCK, Debian's 8 MiB default): run
                // without fixed buffers rather than not at all. Receives
                // still use the provided-buffer ring (not pinned); sends
                // take the "unregistered" row of the table above.
                Err(err) if matches!(err.raw_os_error(), Some(libc::ENOMEM | libc::EPERM)) => {
                    log::warn!(
                        target: "cpg::transport",
                        "node {}: {}; running without registered buffers (plain sends, no zero copy)",
                        cfg.node_id,
                        refused(err)
                    );
                }
                Err(err) => return Err(refused(err)),
            }
            let rx = RxRing::new(&region).map_err(|err| DriverError::Io {
                what: "provided-buffer ring mmap",
                err,
            })?;
            rx.returns().set_waker(waker.clone());
            ring.register_rx(rx).map_err(|err| DriverError::Register {
                what: "register_buf_ring",
                bytes: cfg.rx_buffers * 16,
                memlock: memlock_limit(),
                err,
            })?;
            let (main, local) =
                socket::bind_shared(cfg.bind, cfg.socket_buffer).map_err(bind_err)?;
            (Backend::Uring(Box::new(ring)), main, local)
        };
        // the start-up probe: asked of the bound socket, the kind the
        // per-peer sockets are
        let gso = cfg.gso && !cfg.fallback_syscalls && socket::udp_gso_supported(&main);
        if cfg.gso && !cfg.fallback_syscalls && !gso {
            log::info!(
                target: "cpg::transport",
                "this kernel offers no UDP_SEGMENT: frames are sent one datagram per send"
            );
        }
        let gro = cfg.gro
            && !cfg.fallback_syscalls
            && region.rx_size() >= GRO_RX_BUFFER_SIZE
            && socket::set_udp_gro(&main);
        if cfg.gro && !cfg.fallback_syscalls && !gro {
            if region.rx_size() < GRO_RX_BUFFER_SIZE {
                log::info!(
                    target: "cpg::transport",
                    "receive buffers of {} B cannot hold a coalesced receive ({} B): UDP GRO off, \
                     one datagram per receive",
                    region.rx_size(),
                    GRO_RX_BUFFER_SIZE
                );
            } else {
                log::info!(
                    target: "cpg::transport",
                    "this kernel takes no UDP_GRO: one datagram per receive"
                );
            }
        }
        if let Backend::Uring(ring) = &mut backend {
            ring.set_recv_control(gro).map_err(|err| DriverError::Io {
                what: "receive control room",
                err,
            })?;
        }
        let mut links = vec![Link {
            number: 0,
            priority: cfg.link0_priority,
            local,
            main,
        }];
        for l in &cfg.links {
            let err = |err| DriverError::Socket {
                what: format!("bind {} (link {})", l.bind, l.number),
                err,
            };
            let (main, local) = match backend {
                Backend::Syscalls => socket::bind_exclusive(l.bind, cfg.socket_buffer),
                Backend::Uring(_) => socket::bind_shared(l.bind, cfg.socket_buffer),
            }
            .map_err(err)?;
            if gro {
                socket::set_udp_gro(&main);
            }
            links.push(Link {
                number: l.number,
                priority: l.priority,
                local,
                main,
            });
        }
        let external = ExternalRegions::new(waker.clone());
        let mut d = Driver {
            backend,
            node_id: cfg.node_id,
            links,
            peers: Vec::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            socks: Vec::new(),
            link_mode: cfg.link_mode,
            link_ping: cfg.link_ping,
            link_next: None,
            cluster_id: cfg.cluster_id,
            link_status: LinkStatusHandle::default(),
            zerocopy: cfg.zerocopy,
            zc_min_len: cfg.zc_min_len,
            rx_copy_below: cfg.rx_copy_below,
            socket_buffer: cfg.socket_buffer,
            waker,
            counters: Arc::new(Counters::default()),
            out: Outputs::default(),
            loopback: VecDeque::new(),
            timer: None,
            timer_gen: 0,
            recv_started: Vec::new(),
            completions: Vec::new(),
            region,
            seal,
            external,
            ext_cmds: Vec::new(),
            ext_gone: Vec::new(),
            fatal: None,
            spin: Spin::new(cfg.spin),
            gso,
            batching: false,
            gso_runs: Batcher::default(),
            gso_out: Vec::new(),
            gro,
            registered,
            gro_parts: Vec::new(),
        };
        d.set_peers(&cfg.peers)?;
        for l in &cfg.links {
            d.set_link_peers(l.number, &l.peers)?;
        }
        Ok(d)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether any other node is configured: a frame to all others goes
    /// somewhere.
    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    /// A handle that wakes the loop from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// The counters, shareable.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// What the kernel's io_uring offers (None in fallback mode).
    pub fn probe(&self) -> Option<&Probe> {
        match &self.backend {
            Backend::Uring(r) => Some(r.probe()),
            Backend::Syscalls => None,
        }
    }

    /// Whether every socket receives with `UDP_GRO`
    /// ([`TransportConfig::gro`] asked for, receive buffers of at least
    /// [`GRO_RX_BUFFER_SIZE`], and the kernel took it; never on the
    /// syscall fallback).
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Whether the send pool and receive buffers are registered (pinned)
    /// as fixed buffers. False when RLIMIT_MEMLOCK refused them (a warning
    /// said so): the node runs, each send pinning its pages instead.
    pub fn buffers_registered(&self) -> bool {
        self.registered
    }

    /// Whether runs of frames go out as GSO sends ([`TransportConfig::gso`]
    /// asked for and the kernel offers `UDP_SEGMENT`; never on the syscall
    /// fallback).
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Running on the syscall fallback.
    pub fn is_fallback(&self) -> bool {
        matches!(self.backend, Backend::Syscalls)
    }

    /// The buffer region.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The zero-copy buffer allocator (pool slots as [`RxBuf`] handles),
    /// shareable with application threads.
    pub fn slots(&self) -> SlotAlloc {
        self.region.slots().clone()
    }

    /// The handle that adds and removes external regions (memory sent
    /// from in place, [`RxBuf::external`]); shareable with any thread.
    /// Requests apply on the loop's thread, between batches.
    pub fn external_regions(&self) -> ExternalRegions {
        self.external.clone()
    }

    /// Receive buffers with the kernel now (None in fallback mode).
    pub fn rx_available(&self) -> Option<usize> {
        match &self.backend {
            Backend::Uring(r) => r.rx().map(RxRing::available),
            Backend::Syscalls => None,
        }
    }

    /// Sends whose last completion has not arrived (0 in fallback mode).
    pub fn sends_in_flight(&self) -> usize {
        match &self.backend {
            Backend::Uring(r) => r.sends_live(),
            Backend::Syscalls => 0,
        }
    }

    /// Run the loop until `host.should_stop()` (checked between batches).
    ///
    /// # Errors
    /// A ring failure (`io_uring_enter` errors other than EINTR/EBUSY).
    pub fn run(&mut self, host: &mut impl Host) -> Result<(), DriverError> {
        if self.is_fallback() {
            return self.run_syscalls(host);
        }
        self.sync_external();
        self.start_heartbeats(now());
        self.step(host, now(), Input::Start);
        self.flush();
        while !host.should_stop() {
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            self.sync_external();
            if self.deliver_loopback(host) > 0 {
                self.flush();
            }
            host.batch_done();
            let wait = self.loopback.is_empty();
            let mut completions = std::mem::take(&mut self.completions);
            if let Backend::Uring(ring) = &mut self.backend {
                let io = |err| DriverError::Io {
                    what: "io_uring_enter",
                    err,
                };
                let started = wait.then(std::time::Instant::now);
                if wait && self.spin.should_spin() {
                    self.spin.spin(|| ring.poll_completions()).map_err(io)?;
                }
                // does not sleep when the spin found a completion
                ring.submit(wait).map_err(io)?;
                ring.reap(&mut completions);
                if let Some(s) = started {
                    self.spin.waited(s.elapsed());
                }
            }
            let t = now();
            for c in completions.drain(..) {
                self.on_completion(host, t, c);
            }
            self.completions = completions;
            self.flush();
        }
        // Hand queued work (sends of the last step included) to the kernel
        // before returning; completions are reaped by the next run.
        self.sync_external();
        if let Backend::Uring(ring) = &mut self.backend {
            ring.submit_all().map_err(|err| DriverError::Io {
                what: "io_uring_enter",
                err,
            })?;
        }
        Ok(())
    }

    /// Hand up to [`LOOPBACK_BATCH`] looped-back frames to the host; how
    /// many. Each ends a batch: a looped-back frame is a whole token visit
    /// of a one-node ring (the next is already queued), so deliveries would
    /// otherwise wait for `LOOPBACK_BATCH` rotations.
    fn deliver_loopback(&mut self, host: &mut impl Host) -> usize {
        let mut n = 0;
        while n < LOOPBACK_BATCH {
            let Some(frame) = self.loopback.pop_front() else {
                break;
            };
            self.counters.count_looped_back(frame.len());
            let from = self.node_id;
            self.step(host, now(), Input::Packet { from, frame });
            host.batch_done();
            n += 1;
        }
        n
    }

    /// Apply the queued [`ExternalRegions`] requests, and finish the
    /// removals whose last send completed.
    fn sync_external(&mut self) {
        let mut cmds = std::mem::take(&mut self.ext_cmds);
        self.external.take_commands(&mut cmds);
        let c = &self.counters;
        for cmd in cmds.drain(..) {
            match (cmd, &mut self.backend) {
                (Command::Add(id, region), Backend::Uring(ring)) => {
                    match ring.ext_add(id, region) {
                        Ok(buf_index) => {
                            Counters::inc(&c.external_regions_fixed);
                            self.external
                                .set_status(id, RegionStatus::Fixed { buf_index });
                        }
                        Err(why) => {
                            Counters::inc(&c.external_register_failures);
                            self.external.set_status(id, RegionStatus::NotFixed(why));
                        }
                    }
                }
                (Command::Add(id, _), Backend::Syscalls) => {
                    self.external
                        .set_status(id, RegionStatus::NotFixed(NotFixed::Syscalls));
                }
                (Command::Remove(id), Backend::Uring(ring)) => match ring.ext_remove(id) {
                    ExtRemoved::Gone => {
                        Counters::dec(&c.external_regions_fixed);
                        self.external.forget(id);
                    }
                    ExtRemoved::Deferred => {}
                    ExtRemoved::NotFound => self.external.forget(id),
                },
                (Command::Remove(id), Backend::Syscalls) => self.external.forget(id),
            }
        }
        self.ext_cmds = cmds;
        if let Backend::Uring(ring) = &mut self.backend {
            ring.ext_take_gone(&mut self.ext_gone);
            for id in self.ext_gone.drain(..) {
                Counters::dec(&c.external_regions_fixed);
                self.external.forget(id);
            }
        }
    }

    fn step(&mut self, host: &mut impl Host, t: Instant, input: Input) {
        host.step(t, input, &mut self.out);
        self.dispatch();
    }

    /// Send what the last step produced.
    fn dispatch(&mut self) {
        self.batching = self.gso;
        let mut transmits = std::mem::take(&mut self.out.transmits);
        for t in transmits.drain(..) {
            let src = match t.frame {
                FrameRef::Own(b) => Some(TxSource::Heap(b)),
                FrameRef::Rx(b) => {
                    let n = b.len();
                    TxSource::buf(b, 0..n)
                }
                FrameRef::Slot { buf, range } => TxSource::buf(buf, range),
                FrameRef::Gather { head, buf, range } => TxSource::gather(head, buf, range),
            };
            // A range outside its buffer (an engine bug), or a frame over
            // the IPv4 UDP maximum: not sent, counted.
            let Some(src) = src.filter(|s| s.len() <= cpg_core::limits::FRAME_MAX) else {
                Counters::inc(&self.counters.send_errors);
                continue;
            };
            let to_self = matches!(t.dest, Dest::Node(id) if id == self.node_id);
            // Sealed once, then the same datagram to every peer; a frame to
            // this node never leaves the process and stays as it is.
            let src = if self.seal.is_some() && !to_self {
                let dest = match t.dest {
                    Dest::Node(id) => id,
                    Dest::AllOthers => cpg_core::seal::DEST_ALL,
                };
                match self.seal_datagram(
                    src.segments(),
                    dest,
                    "sealing a frame (a new epoch could not be persisted)",
                ) {
                    Some(sealed) => sealed,
                    None => continue,
                }
            } else {
                src
            };
            if src.len() > cpg_core::limits::FRAME_MAX {
                Counters::inc(&self.counters.send_errors);
                continue;
            }
            match t.dest {
                Dest::Node(id) if id == self.node_id => self.loop_back(src),
                Dest::Node(id) => match self.by_id.get(&id) {
                    Some(&i) => self.send_to(i, src),
                    None => Counters::inc(&self.counters.tx_unknown_dest),
                },
                Dest::AllOthers => {
                    for i in 0..self.peers.len() {
                        self.send_to(i, src.clone());
                    }
                }
            }
        }
        self.out.transmits = transmits;
        self.flush_gso();
        self.batching = false;
        if let Some(e) = self.out.engine.take() {
            Counters::set(&self.counters.retransmissions, e.retransmissions);
            Counters::set(&self.counters.token_rotations, e.token_rotations);
            Counters::set(&self.counters.ring_changes, e.ring_changes);
        }
    }

    /// A frame for this node: handed back as a packet without a syscall.
    /// Whole buffers go by reference; a part of a buffer is copied (counted).
    fn loop_back(&mut self, src: TxSource) {
        let frame = match src {
            TxSource::Heap(b) => RxBuf::from_heap(b),
            // A whole received or heap frame goes by reference; a pool slot
            // or an external range is copied: the engine parses what it
            // receives, and must not parse memory another process may write.
            TxSource::Buf { buf, range }
                if range.start == 0
                    && range.end == buf.len()
                    && !buf.is_slot()
                    && !buf.is_external() =>
            {
                buf
            }
            other => {
                let [a, b] = other.segments();
                let mut v = Vec::with_capacity(a.len() + b.len());
                v.extend_from_slice(a);
                v.extend_from_slice(b);
                Counters::add(&self.counters.bytes_copied, v.len() as u64);
                RxBuf::from_heap(Arc::from(v))
            }
        };
        self.loopback.push_back(frame);
    }

    fn use_zc(&self, peer: &PeerLink, len: usize) -> bool {
        match self.zerocopy {
            ZeroCopy::Never => false,
            ZeroCopy::Always => true,
            // unregistered (RLIMIT_MEMLOCK refused the region), a zero-copy
            // send's pinned pages would be charged to that same limit
            ZeroCopy::Auto => {
                self.registered
                    && !peer.loopback
                    && len >= self.zc_min_len
                    && self.probe().is_some_and(|p| p.send_zc)
            }
        }
    }

    /// Send to peer `i` over the link the mode picks.
    /// `segments` sealed for `dest` (a node id or `DEST_ALL`) as one heap
    /// datagram, counted; `None` without sealing, or after a seal error,
    /// which stops the loop with `what` as its description.
    fn seal_datagram(
        &mut self,
        segments: [&[u8]; 2],
        dest: NodeId,
        what: &'static str,
    ) -> Option<TxSource> {
        match self.seal.as_mut()?.seal(segments, dest) {
            Ok(sealed) => {
                Counters::inc(&self.counters.frames_sealed);
                Counters::add(&self.counters.bytes_sealed, sealed.len() as u64);
                Some(TxSource::Heap(sealed))
            }
            Err(err) => {
                Counters::inc(&self.counters.seal_errors);
                self.fatal.get_or_insert(DriverError::Io { what, err });
                None
            }
        }
    }

    fn send_to(&mut self, i: usize, src: TxSource) {
        let mode = self.link_mode;
        let Some(p) = self.peers.get_mut(i) else {
            return;
        };
        let mut cands = [(0, 0, 0, false); LINKS_MAX];
        let mut n = 0;
        for (li, pl) in p.links.iter().enumerate() {
            if let (Some(pl), Some(slot)) = (pl, cands.get_mut(n)) {
                let l = &self.links[li];
                *slot = (li, l.number, l.priority, pl.state.is_up()) as Candidate;
                n += 1;
            }
        }
        if let Some(li) = links::pick(mode, &cands[..n], &mut p.rr) {
            self.send_on(i, li, src);
        }
    }

    /// Send to peer `i` over link index `li`: queued into its GSO run
    /// while dispatching, else submitted at once.
    fn send_on(&mut self, i: usize, li: usize, src: TxSource) {
        let Some(peer) = self.peers.get(i).and_then(|p| p.links.get(li)?.as_ref()) else {
            return;
        };
        peer.state.shared.count_tx();
        let gso_max = peer.gso_max;
        // A slot counts one more pending send before the kernel sees it.
        if let Some(b) = src.slot_buf() {
            if b.slot_begin_send().is_err() {
                Counters::inc(&self.counters.send_errors);
                return;
            }
        }
        if self.batching {
            let len = src.len();
            if len <= gso_max {
                let mut out = std::mem::take(&mut self.gso_out);
                self.gso_runs.push((i, li), len, src, &mut out);
                self.submit_runs(&mut out);
                self.gso_out = out;
                return;
            }
            // not batched: after everything queued before it
            self.flush_gso();
        }
        self.submit(i, li, src);
    }

    /// Submit every queued GSO run.
    fn flush_gso(&mut self) {
        if self.gso_runs.is_empty() {
            return;
        }
        let mut out = std::mem::take(&mut self.gso_out);
        self.gso_runs.drain(&mut out);
        self.submit_runs(&mut out);
        self.gso_out = out;
    }

    /// Submit `runs` in order: a run of one frame as any send, a longer one
    /// as one GSO send.
    fn submit_runs(&mut self, runs: &mut Vec<Run<(usize, usize), TxSource>>) {
        for run in runs.drain(..) {
            let (i, li) = run.key;
            let seg = u16::try_from(run.seg).ok();
            let mut frames = run.frames;
            if frames.len() == 1 {
                if let Some(src) = frames.pop() {
                    self.submit(i, li, src);
                }
                continue;
            }
            let peer = self.peers.get(i).and_then(|p| p.links.get(li)?.as_ref());
            let fd = peer.and_then(|p| p.fd.as_ref()).map(|f| f.as_raw_fd());
            // zero copy as for each frame alone: what pays for one frame
            // of this size pays for a run of them
            let zc = peer.is_some_and(|p| self.use_zc(p, run.seg));
            let c = &self.counters;
            let (Some(fd), Some(seg), Backend::Uring(ring)) = (fd, seg, &mut self.backend) else {
                // cannot happen (runs are made for such peers only): the
                // frames are not sent, and say so
                for src in &frames {
                    Counters::inc(&c.send_errors);
                    if let Some(b) = src.slot_buf() {
                        let _ = b.slot_send_done(false);
                    }
                }
                continue;
            };
            let n = frames.len() as u64;
            let kind = ring.send_gso(fd, frames, seg, zc);
            Counters::inc(&c.gso_sends);
            Counters::add(&c.gso_datagrams, n);
            match kind {
                SendKind::GsoZc => Counters::inc(&c.gso_sends_zc),
                SendKind::GsoOverFrags => Counters::inc(&c.zc_over_frags),
                _ => {}
            }
        }
    }

    /// Submit one frame to peer `i` over link index `li` (its slot, if
    /// any, already counts the send as pending).
    fn submit(&mut self, i: usize, li: usize, src: TxSource) {
        let Some(peer) = self.peers.get(i).and_then(|p| p.links.get(li)?.as_ref()) else {
            if let Some(b) = src.slot_buf() {
                let _ = b.slot_send_done(false);
            }
            return;
        };
        let zc = self.use_zc(peer, src.len());
        let ext = src.is_external();
        let c = &self.counters;
        match &mut self.backend {
            Backend::Uring(ring) => {
                let Some(fd) = peer.fd.as_ref().map(|f| f.as_raw_fd()) else {
                    return;
                };
                let slot = src.slot_buf().cloned();
                match ring.send(fd, src, zc) {
                    Ok(kind) => {
                        Counters::inc(match kind {
                            SendKind::ZcFixed => &c.sends_zc_fixed,
                            SendKind::ZcHeap => &c.sends_zc_heap,
                            SendKind::WriteFixed => &c.sends_write_fixed,
                            SendKind::Plain => &c.sends_plain,
                            SendKind::GatherZc => &c.sends_gather_zc,
                            SendKind::GatherPlain | SendKind::GatherOverFrags => &c.sends_gather,
                            // `Ring::send` makes no GSO send
                            SendKind::Gso | SendKind::GsoZc | SendKind::GsoOverFrags => {
                                &c.gso_sends
                            }
                        });
                        if kind == SendKind::GatherOverFrags {
                            Counters::inc(&c.zc_over_frags);
                        }
                        if ext {
                            Counters::inc(match kind {
                                SendKind::ZcFixed => &c.external_sends_zc_fixed,
                                SendKind::ZcHeap => &c.external_sends_zc,
                                SendKind::WriteFixed => &c.external_sends_write_fixed,
                                SendKind::Plain => &c.external_sends_plain,
                                SendKind::GatherZc => &c.external_sends_gather_zc,
                                SendKind::GatherPlain
                                | SendKind::GatherOverFrags
                                | SendKind::Gso
                                | SendKind::GsoZc
                                | SendKind::GsoOverFrags => &c.external_sends_gather,
                            });
                        }
                    }
                    Err(_) => {
                        Counters::inc(&c.send_errors);
                        if let Some(b) = slot {
                            let _ = b.slot_send_done(false);
                        }
                    }
                }
            }
            Backend::Syscalls => {
                let [a, b] = src.segments();
                let r = send_blocking(&self.links[li].main, [a, b], peer.addr);
                Counters::inc(if b.is_empty() {
                    &c.sends_plain
                } else {
                    &c.sends_gather
                });
                if ext {
                    Counters::inc(if b.is_empty() {
                        &c.external_sends_plain
                    } else {
                        &c.external_sends_gather
                    });
                }
                match r {
                    Ok(n) => {
                        Counters::inc(&c.frames_sent);
                        Counters::add(&c.bytes_sent, n as u64);
                    }
                    Err(_) => Counters::inc(&c.send_errors),
                }
                if let Some(b) = src.slot_buf() {
                    let _ = b.slot_send_done(false);
                }
            }
        }
    }

    /// One received datagram from peer `pi` on link `li`, opened if
    /// sealed: a heartbeat is taken here, anything else goes to the host
    /// (copied to the heap when few receive buffers are left).
    fn on_datagram(
        &mut self,
        host: &mut impl Host,
        t: Instant,
        (pi, li): (usize, usize),
        frame: RxBuf,
    ) {
        let counters = &self.counters;
        if let Some(pl) = &self.peers[pi].links[li] {
            pl.state.shared.count_rx();
        }
        if is_link_frame(frame.as_ref()) {
            self.on_heartbeat(pi, li, t, frame.as_ref());
            return;
        }
        let low = match &mut self.backend {
            Backend::Uring(ring) => ring.rx_mut().is_some_and(|rx| {
                // Take back what the host already dropped before
                // deciding to copy.
                if rx.available() < self.rx_copy_below {
                    rx.recycle();
                }
                rx.available() < self.rx_copy_below
            }),
            Backend::Syscalls => false,
        };
        let frame = if low {
            let b: Arc<[u8]> = Arc::from(frame.as_ref());
            Counters::add(&counters.bytes_copied, b.len() as u64);
            Counters::inc(&counters.rx_copied_frames);
            RxBuf::from_heap(b)
        } else {
            frame
        };
        Counters::inc(&counters.frames_received);
        Counters::add(&counters.bytes_received, frame.len() as u64);
        let from = self.peers[pi].id;
        self.step(host, t, Input::Packet { from, frame });
    }

    fn on_completion(&mut self, host: &mut impl Host, t: Instant, c: Completion) {
        let counters = self.counters.clone();
        match c {
            Completion::Recv { res, frame, .. } => {
                if res < 0 {
                    if -res == libc::ENOBUFS {
                        Counters::inc(&counters.rx_buffer_exhausted);
                        if let Backend::Uring(ring) = &self.backend {
                            if let Some(rx) = ring.rx() {
                                rx.returns().set_starved();
                            }
                        }
                    } else {
                        Counters::inc(&counters.recv_errors);
                    }
                    return;
                }
                let Some(f) = frame else {
                    Counters::inc(&counters.bad_completions);
                    return;
                };
                if f.truncated {
                    Counters::inc(&counters.rx_truncated);
                    return;
                }
                let Some((pi, li)) = f.source.and_then(|a| self.by_addr.get(&a).copied()) else {
                    Counters::inc(&counters.rx_unknown_source);
                    return;
                };
                let from = self.peers[pi].id;
                let segs = crate::gro::segments(f.frame.len(), f.gro);
                let n = segs.datagrams();
                // the receive's datagrams: itself, or a coalesced (GRO)
                // receive cut into its parts
                let mut parts = std::mem::take(&mut self.gro_parts);
                if n > 1 {
                    if f.frame.split(segs, &mut parts).is_err() {
                        // never: a fresh frame is its only handle
                        Counters::inc(&counters.bad_completions);
                        self.gro_parts = parts;
                        return;
                    }
                    Counters::inc(&counters.gro_receives);
                    Counters::add(&counters.gro_segments, n as u64);
                } else {
                    parts.push(f.frame);
                }
                // Each opened in place, its own range, before any is
                // handed on.
                if let Some(seal) = &mut self.seal {
                    parts.retain_mut(|p| {
                        count_open(&counters, p.open_in_place(|b| seal.open(from, b)))
                    });
                }
                for frame in parts.drain(..) {
                    self.on_datagram(host, t, (pi, li), frame);
                }
                self.gro_parts = parts;
            }
            Completion::Wake { .. } => {
                self.waker.clear();
                // Region requests first: a frame the host sends from a
                // region it just added may then name its fixed buffer.
                self.sync_external();
                Counters::inc(&counters.wakes);
                self.step(host, t, Input::Wake);
            }
            Completion::Timeout { gen, .. } => {
                if self.timer.is_some_and(|(g, _)| g == gen) {
                    self.timer = None;
                    if self.link_next.is_some_and(|d| d <= t) {
                        self.heartbeat_round(t);
                    }
                    // the timer may have been the heartbeats' alone
                    if self.out.next_timeout.is_some_and(|d| d <= t) {
                        Counters::inc(&counters.timeouts_fired);
                        self.step(host, t, Input::Timeout);
                    }
                }
            }
            Completion::Send(s) => {
                match s.result {
                    Some(r) if r >= 0 => {
                        Counters::add(&counters.frames_sent, s.datagrams as u64);
                        Counters::add(&counters.bytes_sent, r as u64);
                    }
                    Some(_) => Counters::add(&counters.send_errors, s.datagrams as u64),
                    None => {}
                }
                if let Some(rel) = s.released {
                    if s.notif {
                        Counters::inc(&counters.zc_notifications);
                        if rel.kernel_copied {
                            Counters::inc(&counters.zc_kernel_copied);
                        }
                    }
                    // The kernel is done with the bytes: each slot's pending
                    // count drops, then the send's handles go with `rel`.
                    for b in rel.src.srcs.iter().filter_map(TxSource::slot_buf) {
                        let _ = b.slot_send_done(rel.zc);
                    }
                }
            }
            Completion::ZcFallback { errno, queued } => {
                Counters::inc(if queued {
                    &counters.zc_fallback_copies
                } else {
                    &counters.send_errors
                });
                crate::send::zc_fallback_warn(errno);
            }
            Completion::GsoFallback {
                fd,
                zc,
                errno,
                frames,
                queued,
            } => {
                Counters::inc(&counters.gso_fallbacks);
                Counters::add(&counters.send_errors, (frames - queued) as u64);
                // The path cannot take GSO: stop asking on this link. A
                // zero-copy send's EMSGSIZE is its pages (the copies went),
                // not the segmentation.
                let zc_pages = zc && errno == libc::EMSGSIZE;
                if matches!(errno, libc::EIO | libc::EINVAL | libc::EMSGSIZE) && !zc_pages {
                    self.gso_off(fd, errno);
                }
            }
            Completion::Internal => {}
            Completion::Bad { .. } => Counters::inc(&counters.bad_completions),
        }
    }

    /// Turn GSO off for the peer link whose socket is `fd` (a GSO send on
    /// it failed with `errno`), saying so once.
    fn gso_off(&mut self, fd: i32, errno: i32) {
        let links = &self.links;
        for p in &mut self.peers {
            for (li, pl) in p.links.iter_mut().enumerate() {
                let Some(pl) = pl else { continue };
                if pl.gso_max > 0 && pl.fd.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
                    pl.gso_max = 0;
                    log::warn!(
                        target: "cpg::transport",
                        "a GSO send to node {} at {} (link {}) failed ({}); frames to it are \
                         sent one datagram per send",
                        p.id,
                        pl.addr,
                        links.get(li).map_or(0, |l| l.number),
                        io::Error::from_raw_os_error(errno)
                    );
                }
            }
        }
    }

    /// End of a batch: recycle buffers, re-arm, move the timer. Queues SQEs
    /// only; the next `submit` sends them.
    fn flush(&mut self) {
        let Backend::Uring(ring) = &mut self.backend else {
            return;
        };
        let available = match ring.rx_mut() {
            Some(rx) => {
                rx.recycle();
                rx.available()
            }
            None => 0,
        };
        if available > 0 {
            let socks = self.socks.len();
            if self.recv_started.len() < socks {
                self.recv_started.resize(socks, false);
            }
            for s in 0..socks {
                let sock = s as u16;
                if ring.recv_armed(sock) {
                    continue;
                }
                let fd = self.socks[s];
                if fd < 0 || ring.arm_recv(sock, fd).is_err() {
                    continue;
                }
                if self.recv_started[s] {
                    Counters::inc(&self.counters.recv_rearms);
                }
                self.recv_started[s] = true;
            }
        }
        if !ring.wake_armed() {
            ring.arm_wake(self.waker.fd().as_raw_fd());
        }
        let want = match (self.out.next_timeout, self.link_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.timer.map(|(_, d)| d) != want {
            if let Some((g, _)) = self.timer.take() {
                ring.remove_timeout(g);
            }
            if let Some(d) = want {
                self.timer_gen = self.timer_gen.wrapping_add(1);
                ring.arm_timeout(self.timer_gen, d.0);
                self.timer = Some((self.timer_gen, d));
            }
        }
    }

    /// The syscall fallback: `poll` on every link's socket and the
    /// eventfd, with the earlier of the host's deadline and the next
    /// heartbeat round as the poll timeout.
    fn run_syscalls(&mut self, host: &mut impl Host) -> Result<(), DriverError> {
        self.sync_external();
        self.start_heartbeats(now());
        self.step(host, now(), Input::Start);
        let mut buf = vec![0u8; 65_536];
        let mut fired: Option<Instant> = None;
        let mut ready = vec![false; self.links.len()];
        while !host.should_stop() {
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            self.deliver_loopback(host);
            let t = now();
            if self.link_next.is_some_and(|d| d <= t) {
                self.heartbeat_round(t);
            }
            let deadline = self.out.next_timeout.filter(|d| Some(*d) != fired);
            if let Some(d) = deadline {
                if d <= t {
                    fired = Some(d);
                    Counters::inc(&self.counters.timeouts_fired);
                    self.step(host, t, Input::Timeout);
                    continue;
                }
            }
            host.batch_done();
            let wake_at = match (deadline, self.link_next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = if !self.loopback.is_empty() {
                Some(rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                })
            } else {
                wake_at.map(|d| {
                    let ns = d.0.saturating_sub(t.0);
                    rustix::event::Timespec {
                        tv_sec: (ns / 1_000_000_000) as i64,
                        tv_nsec: (ns % 1_000_000_000) as i64,
                    }
                })
            };
            let wake_ready = {
                let mut fds: Vec<PollFd<'_>> = self
                    .links
                    .iter()
                    .map(|l| PollFd::new(&l.main, PollFlags::IN))
                    .collect();
                fds.push(PollFd::from_borrowed_fd(self.waker.fd(), PollFlags::IN));
                match rustix::event::poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        return Err(DriverError::Io {
                            what: "poll",
                            err: e.into(),
                        })
                    }
                }
                for (r, fd) in ready.iter_mut().zip(&fds) {
                    *r = !fd.revents().is_empty();
                }
                fds.last().is_some_and(|fd| !fd.revents().is_empty())
            };
            let t = now();
            if wake_ready {
                let mut v = [0u8; 8];
                let _ = rustix::io::read(self.waker.fd(), &mut v);
                self.waker.clear();
                self.sync_external();
                Counters::inc(&self.counters.wakes);
                self.step(host, t, Input::Wake);
            }
            for li in (0..ready.len()).filter(|&li| ready[li]) {
                self.recv_syscalls(host, li, &mut buf);
            }
        }
        Ok(())
    }

    /// Up to 256 datagrams from link `li`'s socket (the syscall fallback).
    fn recv_syscalls(&mut self, host: &mut impl Host, li: usize, buf: &mut [u8]) {
        for _ in 0..256 {
            let (n, from) = match rustix::net::recvfrom(
                &self.links[li].main,
                &mut buf[..],
                RecvFlags::DONTWAIT | RecvFlags::TRUNC,
            ) {
                Ok((_, n, from)) => (n, from),
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    Counters::inc(&self.counters.recv_errors);
                    continue;
                }
            };
            if n > buf.len() {
                Counters::inc(&self.counters.rx_truncated);
                continue;
            }
            let src = from.and_then(|a| SocketAddr::try_from(a).ok());
            let Some((pi, pli)) = src.and_then(|a| self.by_addr.get(&a).copied()) else {
                Counters::inc(&self.counters.rx_unknown_source);
                continue;
            };
            let id = self.peers[pi].id;
            let n = match &mut self.seal {
                Some(seal) => {
                    let opened = seal.open(id, &mut buf[..n]);
                    let len = opened.unwrap_or(0);
                    if !count_open(&self.counters, Some(opened.map(|_| ()))) {
                        continue;
                    }
                    len
                }
                None => n,
            };
            if let Some(pl) = &self.peers[pi].links[pli] {
                pl.state.shared.count_rx();
            }
            if is_link_frame(&buf[..n]) {
                self.on_heartbeat(pi, pli, now(), &buf[..n]);
                continue;
            }
            // The fallback receives into one scratch buffer and
            // copies each datagram out (counted).
            let frame = RxBuf::from_heap(Arc::from(&buf[..n]));
            Counters::add(&self.counters.bytes_copied, n as u64);
            Counters::inc(&self.counters.frames_received);
            Counters::add(&self.counters.bytes_received, n as u64);
            self.step(host, now(), Input::Packet { from: id, frame });
        }
    }
}

/// Count an open's outcome (`None`: the buffer could not be opened in place,
/// a driver bug); whether the frame goes on.
fn count_open(c: &Counters, opened: Option<Result<(), OpenError>>) -> bool {
    let counter = match opened {
        Some(Ok(())) => {
            Counters::inc(&c.frames_opened);
            return true;
        }
        None => &c.bad_completions,
        Some(Err(OpenError::Short)) => &c.open_short,
        Some(Err(OpenError::ForeignKey)) => &c.open_foreign_key,
        Some(Err(OpenError::SourceMismatch | OpenError::TooManySenders)) => &c.open_source_mismatch,
        Some(Err(OpenError::Misdirected)) => &c.open_misdirected,
        Some(Err(OpenError::BadTag)) => &c.open_bad_tag,
        Some(Err(OpenError::Replay)) => &c.open_replay,
    };
    Counters::inc(counter);
    false
}

/// `sendmsg` of one or two segments on a nonblocking socket, waiting up to
/// 10 ms for room.
fn send_blocking(fd: &OwnedFd, segs: [&[u8]; 2], addr: SocketAddr) -> io::Result<usize> {
    let iov = [io::IoSlice::new(segs[0]), io::IoSlice::new(segs[1])];
    let iov = if segs[1].is_empty() {
        &iov[..1]
    } else {
        &iov[..]
    };
    for _ in 0..2 {
        let mut control = rustix::net::SendAncillaryBuffer::default();
        match rustix::net::sendmsg_addr(fd, &addr, iov, &mut control, SendFlags::DONTWAIT) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::OUT)];
                let _ = rustix::event::poll(
                    &mut fds,
                    Some(&rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    }),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::ErrorKind::WouldBlock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_error_names_memlock_and_size() {
        let e = DriverError::Register {
            what: "register_buffers",
            bytes: 64 << 20,
            memlock: Some(8 << 20),
            err: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        let s = e.to_string();
        assert!(
            s.contains("RLIMIT_MEMLOCK") && s.contains("ulimit -l"),
            "{s}"
        );
        assert!(s.contains("8192 KiB") && s.contains("66560 KiB"), "{s}");
    }

    #[test]
    fn uring_errors_name_the_cause() {
        let s = uring_cause(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(s.contains("CONFIG_IO_URING"));
        let s = uring_cause(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            s.contains("io_uring_disabled") || s.contains("seccomp"),
            "{s}"
        );
        let e = DriverError::UringUnavailable {
            err: io::Error::from_raw_os_error(libc::EPERM),
            cause: s,
        };
        assert!(e.is_uring_unsupported());
    }

    #[test]
    fn driver_and_handles_are_send() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Driver>();
        send_sync::<Waker>();
        send_sync::<SlotAlloc>();
        send_sync::<Counters>();
        send_sync::<ExternalRegions>();
    }

    /// Sends `frames` frames of 1,000 B to node 2 at start and as many
    /// again on its first timeout (seq in the first 4 bytes).
    struct Burst {
        frames: u32,
        sent: u32,
        stop: Arc<std::sync::atomic::AtomicBool>,
        give_up: Instant,
    }

    impl Burst {
        fn burst(&mut self, out: &mut Outputs) {
            for _ in 0..self.frames {
                let mut v = vec![(self.sent % 251) as u8; 1000];
                v[..4].copy_from_slice(&self.sent.to_le_bytes());
                self.sent += 1;
                out.transmits.push(Transmit {
                    dest: Dest::Node(2),
                    frame: FrameRef::Own(Arc::from(v)),
                });
            }
        }
    }

    impl Host for Burst {
        fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
            match input {
                Input::Start => {
                    self.burst(out);
                    out.next_timeout = Some(Instant(t.0 + 50_000_000));
                }
                Input::Timeout if self.sent == self.frames => {
                    self.burst(out);
                    out.next_timeout = Some(self.give_up);
                }
                Input::Timeout => self.stop.store(true, std::sync::atomic::Ordering::Release),
                _ => {}
            }
        }
        fn should_stop(&self) -> bool {
            self.stop.load(std::sync::atomic::Ordering::Acquire)
        }
    }

    /// Records the seq of every frame it receives; stops (both, waking
    /// the sender's loop) at `want`.
    struct Sink {
        got: Vec<(u32, usize, bool)>,
        want: usize,
        stop: Arc<std::sync::atomic::AtomicBool>,
        wake: Waker,
        give_up: Instant,
    }

    /// `a` sends two bursts of `frames` 1000-byte frames to `b` (run on
    /// its own thread until it has them all, or 10 s passed); `b` back
    /// with what it got.
    fn two_bursts(a: &mut Driver, mut b: Driver, frames: u32) -> (Driver, Sink) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let give_up = Instant(now().0 + 10_000_000_000);
        let mut sink = Sink {
            got: Vec::new(),
            want: 2 * frames as usize,
            stop: stop.clone(),
            wake: a.waker(),
            give_up,
        };
        let tb = std::thread::spawn(move || {
            b.run(&mut sink).unwrap();
            (b, sink)
        });
        let mut burst = Burst {
            frames,
            sent: 0,
            stop,
            give_up,
        };
        a.run(&mut burst).unwrap();
        tb.join().unwrap()
    }

    impl Host for Sink {
        fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
            if let Input::Packet { frame, .. } = input {
                let b = frame.as_ref();
                let seq = u32::from_le_bytes(b[..4].try_into().unwrap());
                let intact = b[4..].iter().all(|&x| x == (seq % 251) as u8);
                self.got.push((seq, b.len(), intact));
                if self.got.len() >= self.want {
                    self.stop.store(true, std::sync::atomic::Ordering::Release);
                    self.wake.wake();
                }
            }
            if t >= self.give_up {
                self.stop.store(true, std::sync::atomic::Ordering::Release);
            }
            out.next_timeout = Some(self.give_up);
        }
        fn should_stop(&self) -> bool {
            self.stop.load(std::sync::atomic::Ordering::Acquire)
        }
    }

    /// A GSO send the path refuses (here `SO_NO_CHECK` on the socket to
    /// the peer: the kernel will not segment without checksums, EINVAL) is
    /// sent again frame by frame, in order, nothing lost; that peer link
    /// then sends no more GSO.
    #[test]
    #[allow(unsafe_code)]
    #[cfg_attr(miri, ignore)]
    fn a_refused_gso_send_goes_frame_by_frame_and_turns_gso_off_for_the_link() {
        if !crate::ring::probe().is_ok_and(|p| p.missing().is_empty()) {
            eprintln!("SKIP: no usable io_uring here");
            return;
        }
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut a = Driver::new(TransportConfig::new(1, lo, vec![])).unwrap();
        let mut b = Driver::new(TransportConfig::new(2, lo, vec![])).unwrap();
        if !a.gso_enabled() {
            eprintln!("SKIP: no UDP_SEGMENT here");
            return;
        }
        let all = vec![(1, a.local_addr()), (2, b.local_addr())];
        a.set_peers(&all).unwrap();
        b.set_peers(&all).unwrap();
        let to_b = |d: &Driver| d.peers[0].links[0].as_ref().map(|pl| pl.gso_max);
        assert!(to_b(&a).is_some_and(|m| m >= 1000), "{:?}", to_b(&a));
        let fd = a.peers[0].links[0]
            .as_ref()
            .and_then(|pl| pl.fd.as_ref())
            .unwrap()
            .as_raw_fd();
        let one: libc::c_int = 1;
        // SAFETY: `fd` is a's open socket to b; `one` is a live c_int of
        // the length given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let (_b, sink) = two_bursts(&mut a, b, 10);
        assert_eq!(
            sink.got,
            (0..20).map(|s| (s, 1000, true)).collect::<Vec<_>>(),
            "every frame, intact and in order"
        );
        let s = a.counters().snapshot();
        // the first burst: one GSO send, refused, re-sent frame by frame;
        // the second: frame by frame from the start
        assert_eq!(
            (s.gso_sends, s.gso_datagrams, s.gso_fallbacks),
            (1, 10, 1),
            "{s:?}"
        );
        assert_eq!((s.frames_sent, s.send_errors), (20, 0), "{s:?}");
        assert_eq!(to_b(&a), Some(0), "GSO off for that link");
    }

    /// A GSO send of a run of frames reaches a receiver with UDP GRO on
    /// as one receive (loopback does not cut it): it is handed on as its
    /// frames, in order, intact, each counted as received; receive
    /// buffers too small for a coalesced receive leave GRO off.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_gso_send_to_a_gro_receiver_arrives_as_its_frames() {
        if !crate::ring::probe().is_ok_and(|p| p.missing().is_empty()) {
            eprintln!("SKIP: no usable io_uring here");
            return;
        }
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut small = TransportConfig::new(3, lo, vec![]);
        small.rx_buffer_size = 9_000 + crate::RX_HEADROOM;
        assert!(
            !Driver::new(small).unwrap().gro_enabled(),
            "buffers too small"
        );
        let mut a = Driver::new(TransportConfig::new(1, lo, vec![])).unwrap();
        let mut b = Driver::new(TransportConfig::new(2, lo, vec![])).unwrap();
        if !a.gso_enabled() || !b.gro_enabled() {
            eprintln!("SKIP: no UDP_SEGMENT or UDP_GRO here");
            return;
        }
        let all = vec![(1, a.local_addr()), (2, b.local_addr())];
        a.set_peers(&all).unwrap();
        b.set_peers(&all).unwrap();
        let counters_b = b.counters();
        let (b, sink) = two_bursts(&mut a, b, 20);
        assert_eq!(
            sink.got,
            (0..40).map(|s| (s, 1000, true)).collect::<Vec<_>>(),
            "every frame, intact and in order"
        );
        let s = a.counters().snapshot();
        assert_eq!((s.gso_sends, s.gso_datagrams), (2, 40), "{s:?}");
        let r = counters_b.snapshot();
        // one receive per GSO send, cut into its 20 frames
        assert_eq!((r.gro_receives, r.gro_segments), (2, 40), "{r:?}");
        assert_eq!((r.frames_received, r.rx_truncated), (40, 0), "{r:?}");
        // every buffer went back once the sink dropped its frames
        drop(sink);
        let mut b = b;
        if let Backend::Uring(ring) = &mut b.backend {
            ring.rx_mut().unwrap().recycle();
        }
        assert_eq!(b.rx_available(), Some(64));
    }

    #[test]
    fn default_config_fits_default_memlock() {
        let c = TransportConfig::new(1, "127.0.0.1:0".parse::<SocketAddr>().unwrap(), vec![]);
        let pool = c.pool.region_len().unwrap();
        assert!(pool + c.rx_buffers * c.rx_buffer_size < 8 << 20);
    }
}

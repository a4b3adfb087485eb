//! The io_uring: setup and probing, typed `user_data`, the SQE builders the
//! driver uses, and completion decoding.
//!
//! # What it owns
//!
//! Every piece of memory an in-flight operation points at: the registered
//! region (an `Arc` of its mapping), the external regions registered as
//! fixed buffers (an `Arc` of each, kept until no send names its index),
//! the provided-buffer ring, the `msghdr` of the multishot receives, the
//! eventfd read buffer, the timeouts' timespecs, and (in the [`SendTable`])
//! the source of every send until its last completion. That is what makes
//! its methods safe: a caller cannot drop what the kernel still reads or
//! writes, because the [`Ring`] holds it.
//! On drop it cancels everything and waits for the completions before the
//! memory goes (or leaks the memory if the kernel does not answer).
//!
//! # What it must not do
//!
//! Decide anything: which path a send takes, what a frame means, when to
//! re-arm. The driver does that.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::types::{CancelBuilder, Fd, TimeoutFlags, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use crate::bufs::{Mapping, RecvFrame, Region, RxRing, TxSource};
use crate::external::{ExternalRegion, NotFixed, RegionId};
use crate::gso::SegmentCmsg;
use crate::send::{self, SendCqe, SendCqeError, SendTable, Sources};

/// `IORING_SEND_ZC_REPORT_USAGE` (Linux 6.2): the notification says whether
/// the kernel copied after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;

/// The provided-buffer group id of the receive buffers.
pub const RX_BGID: u16 = 7;

/// Fixed buffers of the driver's own region (0: pool, 1: receive
/// buffers); external regions take the indices from here on.
pub(crate) const FIXED_OWN: u16 = 2;

/// The most entries a fixed-buffer table may have (`IORING_MAX_REG_BUFFERS`).
pub(crate) const FIXED_TABLE_MAX: u32 = 1 << 14;

/// What this kernel's io_uring offers (see [`probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `uname -r`.
    pub kernel_release: String,
    /// (major, minor) parsed from the release.
    pub kernel_version: (u32, u32),
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
    /// `IORING_OP_SENDMSG_ZC` (6.1).
    pub sendmsg_zc: bool,
    /// `IORING_SEND_ZC_REPORT_USAGE` (6.2).
    pub zc_report_usage: bool,
    /// `IORING_OP_RECVMSG` (5.3).
    pub recvmsg: bool,
    /// Multishot receive (`IORING_RECV_MULTISHOT`, 6.0; no opcode of its own,
    /// so this is the kernel version).
    pub recv_multishot: bool,
    /// `IORING_OP_SEND` (5.6).
    pub send: bool,
    /// `IORING_OP_WRITE_FIXED` (5.1).
    pub write_fixed: bool,
    /// `IORING_OP_READ` (5.6).
    pub read: bool,
    /// `IORING_OP_TIMEOUT` / `TIMEOUT_REMOVE`.
    pub timeout: bool,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19), tried for real.
    pub buf_ring: bool,
}

impl Probe {
    /// What is missing for the io_uring driver, if anything.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        for (ok, what) in [
            (self.recvmsg, "IORING_OP_RECVMSG"),
            (self.recv_multishot, "multishot receive (Linux 6.0)"),
            (self.buf_ring, "provided-buffer rings (Linux 5.19)"),
            (self.send, "IORING_OP_SEND"),
            (self.write_fixed, "IORING_OP_WRITE_FIXED"),
            (self.read, "IORING_OP_READ"),
            (self.timeout, "IORING_OP_TIMEOUT"),
        ] {
            if !ok {
                m.push(what);
            }
        }
        m
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel {}: send_zc={} sendmsg_zc={} zc_report_usage={} recvmsg={} recv_multishot={} \
             buf_ring={} send={} write_fixed={} read={} timeout={}",
            self.kernel_release,
            self.send_zc,
            self.sendmsg_zc,
            self.zc_report_usage,
            self.recvmsg,
            self.recv_multishot,
            self.buf_ring,
            self.send,
            self.write_fixed,
            self.read,
            self.timeout
        )
    }
}

fn kernel_release() -> (String, (u32, u32)) {
    let u = rustix::system::uname();
    let rel = u.release().to_string_lossy().into_owned();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (rel, (major, minor))
}

/// Probe the kernel: build a small ring, ask for its opcodes, and try to
/// register a one-entry provided-buffer ring.
///
/// # Errors
/// The `io_uring_setup` error (ENOSYS: no io_uring; EPERM: disabled by
/// `kernel.io_uring_disabled` or a seccomp filter; ENOMEM: locked memory).
pub fn probe() -> io::Result<Probe> {
    let ring = IoUring::new(8)?;
    probe_ring(&ring)
}

fn probe_ring(ring: &IoUring) -> io::Result<Probe> {
    let mut p = io_uring::Probe::new();
    ring.submitter().register_probe(&mut p)?;
    let (kernel_release, kernel_version) = kernel_release();
    let at_least = |maj: u32, min: u32| kernel_version >= (maj, min);
    let buf_ring = {
        let m = Mapping::new(16)?;
        // SAFETY: `m` is a live, page-aligned mapping of at least one entry;
        // it is unregistered right below, before `m` is dropped.
        let r = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(m.base() as u64, 1, 0xfffe, 0)
        };
        let ok = r.is_ok();
        if ok {
            let _ = ring.submitter().unregister_buf_ring(0xfffe);
        }
        ok
    };
    Ok(Probe {
        kernel_release,
        kernel_version,
        send_zc: p.is_supported(opcode::SendZc::CODE),
        sendmsg_zc: p.is_supported(opcode::SendMsgZc::CODE),
        zc_report_usage: p.is_supported(opcode::SendZc::CODE) && at_least(6, 2),
        recvmsg: p.is_supported(opcode::RecvMsg::CODE),
        recv_multishot: p.is_supported(opcode::RecvMsg::CODE) && at_least(6, 0),
        send: p.is_supported(opcode::Send::CODE),
        write_fixed: p.is_supported(opcode::WriteFixed::CODE),
        read: p.is_supported(opcode::Read::CODE),
        timeout: p.is_supported(opcode::Timeout::CODE)
            && p.is_supported(opcode::TimeoutRemove::CODE),
        buf_ring,
    })
}

/// What a completion is for, packed into the 64-bit `user_data`: a tag in
/// the top byte, the fields below it. Tag 0 is never used, so a zeroed
/// `user_data` decodes to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UserData {
    /// Multishot receive on socket `sock` (the driver's socket index).
    Recv {
        /// Socket index.
        sock: u16,
    },
    /// The eventfd read.
    Wake,
    /// A timeout, generation `gen`.
    Timeout {
        /// Generation (stale ones are ignored).
        gen: u32,
    },
    /// The removal of a timeout.
    TimeoutRemove,
    /// A send: slab index and generation in the send table.
    Send {
        /// Slab index.
        idx: u32,
        /// Slab generation.
        gen: u16,
    },
}

/// A `user_data` that decodes to no [`UserData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadUserData(pub(crate) u64);

impl fmt::Display for BadUserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown user_data {:#x}", self.0)
    }
}

impl std::error::Error for BadUserData {}

const TAG_RECV: u64 = 1;
const TAG_WAKE: u64 = 2;
const TAG_TIMEOUT: u64 = 3;
const TAG_TIMEOUT_REMOVE: u64 = 4;
const TAG_SEND: u64 = 5;

impl UserData {
    /// Packed form.
    pub const fn to_u64(self) -> u64 {
        match self {
            UserData::Recv { sock } => TAG_RECV << 56 | sock as u64,
            UserData::Wake => TAG_WAKE << 56,
            UserData::Timeout { gen } => TAG_TIMEOUT << 56 | gen as u64,
            UserData::TimeoutRemove => TAG_TIMEOUT_REMOVE << 56,
            UserData::Send { idx, gen } => TAG_SEND << 56 | (gen as u64) << 32 | idx as u64,
        }
    }

    /// Decode; anything [`UserData::to_u64`] does not produce is an error.
    ///
    /// # Errors
    /// [`BadUserData`] for an unknown tag or stray bits.
    pub fn from_u64(v: u64) -> Result<UserData, BadUserData> {
        let body = v & ((1 << 56) - 1);
        let ud = match v >> 56 {
            TAG_RECV if body >> 16 == 0 => UserData::Recv { sock: body as u16 },
            TAG_WAKE if body == 0 => UserData::Wake,
            TAG_TIMEOUT if body >> 32 == 0 => UserData::Timeout { gen: body as u32 },
            TAG_TIMEOUT_REMOVE if body == 0 => UserData::TimeoutRemove,
            TAG_SEND if body >> 48 == 0 => UserData::Send {
                idx: body as u32,
                gen: (body >> 32) as u16,
            },
            _ => return Err(BadUserData(v)),
        };
        Ok(ud)
    }
}

/// How a send went out (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendKind {
    /// `SendZc` naming a registered buffer.
    ZcFixed,
    /// `SendZc` from heap memory (pages pinned per send).
    ZcHeap,
    /// `WriteFixed` from a registered buffer on a connected socket.
    WriteFixed,
    /// `Send` from heap memory (the kernel copies).
    Plain,
    /// `SendMsgZc` of engine headers + a zero-copy buffer's bytes.
    GatherZc,
    /// `SendMsg` of a gather frame zero copy was asked for but that spans
    /// more pages than a zero-copy datagram may (the kernel would refuse).
    GatherOverFrags,
    /// `SendMsg` of engine headers + a zero-copy buffer's bytes.
    GatherPlain,
    /// `SendMsg` with a `UDP_SEGMENT` cmsg: several frames, one datagram
    /// each.
    Gso,
    /// `SendMsgZc` with a `UDP_SEGMENT` cmsg.
    GsoZc,
    /// `SendMsg` with a `UDP_SEGMENT` cmsg of a run zero copy was asked
    /// for but that spans more pages than one zero-copy send may.
    GsoOverFrags,
}

/// What a send keeps alive: its source and, for a gather, the `msghdr`.
///
/// A record lives in `Ring::sends` until the send's final CQE (the
/// notification for a zero-copy send), so everything the kernel reads stays
/// valid and unwritten until then: a heap source is an `Arc<[u8]>`
/// (immutable); a buffer source holds an `RxBuf` clone, so a receive buffer
/// is not re-provided, a pool slot is neither freed nor writable
/// (`unique_mut` needs the only handle) and an external region stays
/// mapped (its owner's `Arc`; we never write it, its owner's client may);
/// a gather's boxed `msghdr` and its iovecs (pointing at the source's
/// bytes) never move. A fixed buffer index is used only when the bytes lie
/// inside that registered buffer; the region's two buffers stay registered
/// for the ring's life (`Ring::region`), an external one at least until
/// the final CQE of every send naming it (`ext_slot`, `Ring::ext_send_done`).
#[derive(Debug)]
pub(crate) struct Tx {
    /// The frame, or a GSO send's frames: each held until the final CQE.
    pub(crate) srcs: Sources<TxSource>,
    /// The socket it went to: a failed zero-copy or GSO send is re-sent
    /// copying, one datagram per send.
    fd: RawFd,
    /// Read by the kernel, never by us: kept alive only.
    _msg: Option<Box<MsgBox>>,
    /// A GSO send's `msghdr`, iovecs and cmsg: kept alive only.
    _gso: Option<Box<GsoMsg>>,
    /// The external table entry whose buffer index this send names: the
    /// entry stays registered until the send's final CQE is reaped.
    ext_slot: Option<u16>,
}

/// The `msghdr` of the multishot receives: only `msg_namelen` and (with
/// UDP GRO) `msg_controllen` are set, every pointer is null: the kernel
/// lays the name, the control data and the payload out in the provided
/// buffer by these two lengths.
struct RecvHdr(libc::msghdr);

// SAFETY: all pointers in it are null; it is plain data.
unsafe impl Send for RecvHdr {}

/// A raw segment as (address, length), for page arithmetic.
fn seg((ptr, len): (*const u8, usize)) -> (usize, usize) {
    (ptr as usize, len)
}

/// A `msghdr` with its two iovecs, for `SendMsg` / `SendMsgZc`.
struct MsgBox {
    hdr: libc::msghdr,
    iov: [libc::iovec; 2],
}

// SAFETY: the raw pointers in a `MsgBox` point into the box itself and at
// bytes kept alive by the same `Tx`; they are only read by the kernel, and
// the box moves between threads only with its owner.
unsafe impl Send for MsgBox {}

impl fmt::Debug for MsgBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgBox")
            .field("iovlen", &self.hdr.msg_iovlen)
            .finish()
    }
}

/// A `msghdr` with the iovecs of several frames and a `UDP_SEGMENT`
/// cmsg, for a GSO `SendMsg` / `SendMsgZc`.
struct GsoMsg {
    hdr: libc::msghdr,
    /// Never grown after `hdr` points at it (its heap buffer stays put).
    iov: Vec<libc::iovec>,
    cmsg: SegmentCmsg,
}

// SAFETY: as for `MsgBox`: the pointers lead into the box itself, into the
// vector it owns and at bytes kept alive by the same `Tx`; only the kernel
// reads them.
unsafe impl Send for GsoMsg {}

impl fmt::Debug for GsoMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GsoMsg")
            .field("iovlen", &self.iov.len())
            .finish()
    }
}

fn iovec((ptr, len): (*const u8, usize)) -> libc::iovec {
    libc::iovec {
        iov_base: ptr.cast_mut().cast(),
        iov_len: len,
    }
}

/// One external region registered as fixed buffer `FIXED_OWN + slot`.
struct ExtEntry {
    id: RegionId,
    /// Kept while registered: the owner unmaps only after this `Arc` (and
    /// every `RxBuf` over it) is gone.
    _region: Arc<dyn ExternalRegion>,
    /// Address range, for `fixed_index`.
    addr: Range<usize>,
    /// Sends naming this index whose final CQE has not been reaped.
    sends: usize,
    /// Removal asked for: no new send names the index; the entry goes when
    /// `sends` reaches 0.
    removing: bool,
}

/// What [`Ring::ext_remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtRemoved {
    /// Unregistered now.
    Gone,
    /// Sends still name it: unregistered when their last CQE is reaped
    /// (then listed by [`Ring::ext_take_gone`]).
    Deferred,
    /// Not in the table (never registered).
    NotFound,
}

/// The external part of the fixed-buffer table.
#[derive(Default)]
struct ExtTable {
    /// One entry per external index; empty without a sparse table.
    slots: Vec<Option<ExtEntry>>,
    /// Registered entries not being removed: start address → (end, slot).
    by_addr: BTreeMap<usize, (usize, u16)>,
    /// Entries whose deferred removal completed, for the driver.
    gone: Vec<RegionId>,
}

/// One decoded completion (some fields only feed `Debug` output).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Completion {
    /// A multishot receive produced a datagram or ended.
    Recv {
        sock: u16,
        res: i32,
        /// The receive is still armed.
        more: bool,
        /// The datagram, if `res ≥ 0` and a buffer came with it.
        frame: Option<RecvFrame>,
    },
    Wake {
        res: i32,
    },
    Timeout {
        gen: u32,
        res: i32,
    },
    Send(SendCqe<Tx>),
    /// A zero-copy send failed with `errno`; a copying send of the same
    /// frame was queued in its place (`queued`), unless that was refused.
    ZcFallback {
        errno: i32,
        queued: bool,
    },
    /// A GSO send on socket `fd` (zero copy: `zc`) failed with `errno`;
    /// each of its `frames` frames was re-sent as a copying send of its
    /// own (`queued` of them were taken).
    GsoFallback {
        fd: RawFd,
        zc: bool,
        errno: i32,
        frames: usize,
        queued: usize,
    },
    /// Timeout removals: nothing to do.
    Internal,
    /// Undecodable, or a send CQE the table refused.
    Bad {
        user_data: u64,
        res: i32,
        flags: u32,
    },
}

/// The ring and everything its in-flight operations point at.
pub(crate) struct Ring {
    // Field order matters only if `shutdown` could not drain: see `Drop`.
    uring: IoUring,
    region: Option<Arc<Mapping>>,
    rx: Option<RxRing>,
    msghdr: Box<RecvHdr>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Timespecs of armed timeouts, by generation (kept until their CQE).
    timeouts: Vec<(u32, Box<Timespec>)>,
    recv_armed: Vec<bool>,
    sends: SendTable<Tx>,
    /// Address ranges of the region's fixed buffers (indices 0 and 1).
    fixed: Vec<Range<usize>>,
    /// External regions at indices `FIXED_OWN..`.
    ext: ExtTable,
    /// Operations whose final CQE has not been reaped.
    inflight: usize,
    /// Entries that did not fit the SQ; pushed before anything else.
    backlog: VecDeque<squeue::Entry>,
    report_usage: bool,
    /// Pages a zero-copy datagram may span (see `TransportConfig`).
    zc_max_frags: usize,
    probe: Probe,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("inflight", &self.inflight)
            .field("probe", &self.probe)
            .finish()
    }
}

impl Ring {
    /// A ring of `entries` SQEs (CQ four times that), probed.
    ///
    /// # Errors
    /// The `io_uring_setup` or probe error.
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let built = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(4))
            .setup_coop_taskrun()
            .setup_submit_all()
            .build(entries);
        let uring = match built {
            Ok(u) => u,
            // Older kernels refuse the newer setup flags: retry plainly.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
                .setup_cqsize(entries.saturating_mul(4))
                .build(entries)?,
            Err(e) => return Err(e),
        };
        let probe = probe_ring(&uring)?;
        // SAFETY: an all-zero `msghdr` is a valid value (null pointers, zero lengths).
        let mut msghdr = Box::new(RecvHdr(unsafe { std::mem::zeroed() }));
        // room for either family's source address (the larger is IPv6's)
        msghdr.0.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        Ok(Ring {
            uring,
            region: None,
            rx: None,
            msghdr,
            wake_buf: Box::new(0),
            wake_armed: false,
            timeouts: Vec::new(),
            recv_armed: Vec::new(),
            sends: SendTable::default(),
            fixed: Vec::new(),
            ext: ExtTable::default(),
            inflight: 0,
            backlog: VecDeque::new(),
            report_usage: probe.zc_report_usage,
            zc_max_frags: usize::MAX,
            probe,
        })
    }

    pub(crate) fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Register the region's two parts as fixed buffers 0 and 1, in a
    /// sparse table with `external` more entries for external regions
    /// ([`Ring::ext_add`]). Without `external`, or if the kernel refuses a
    /// sparse table (Linux < 5.19), the two buffers are registered alone
    /// and external regions are never fixed buffers.
    ///
    /// # Errors
    /// The registration's error: ENOMEM / EPERM when the pinned pages
    /// exceed RLIMIT_MEMLOCK (without CAP_IPC_LOCK), EFAULT for a part over 1 GiB.
    pub(crate) fn register_region(&mut self, region: &Region, external: u32) -> io::Result<()> {
        if self.region.is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let iov = region.iovecs();
        let total = u32::from(FIXED_OWN).saturating_add(external);
        let sparse = external > 0
            && total <= FIXED_TABLE_MAX
            && self
                .uring
                .submitter()
                .register_buffers_sparse(total)
                .is_ok();
        if sparse {
            // SAFETY: both iovecs lie in the region's mapping, which
            // `self.region` keeps alive (an `Arc`) until the ring is
            // destroyed; registration lasts no longer than the ring.
            let r = unsafe {
                self.uring
                    .submitter()
                    .register_buffers_update(0, &iov, None)
            };
            if let Err(e) = r {
                let _ = self.uring.submitter().unregister_buffers();
                return Err(e);
            }
            self.ext.slots = (0..external).map(|_| None).collect();
        } else {
            // SAFETY: as above.
            unsafe { self.uring.submitter().register_buffers(&iov) }?;
        }
        self.region = Some(region.mapping().clone());
        self.fixed = iov
            .iter()
            .map(|v| v.iov_base as usize..v.iov_base as usize + v.iov_len)
            .collect();
        Ok(())
    }

    /// Register the provided-buffer ring over the region's receive buffers.
    ///
    /// # Errors
    /// `register_buf_ring`'s error (the same memory limits as above).
    pub(crate) fn register_rx(&mut self, rx: RxRing) -> io::Result<()> {
        // SAFETY: the ring entries live in `rx`'s own mapping and the buffers
        // they name in the region mapping `rx` holds an `Arc` of; `rx` is
        // stored in `self` right below and lives as long as the ring.
        unsafe {
            self.uring.submitter().register_buf_ring_with_flags(
                rx.ring_addr(),
                rx.entries(),
                RX_BGID,
                0,
            )
        }?;
        self.rx = Some(rx);
        Ok(())
    }

    pub(crate) fn rx(&self) -> Option<&RxRing> {
        self.rx.as_ref()
    }

    pub(crate) fn rx_mut(&mut self) -> Option<&mut RxRing> {
        self.rx.as_mut()
    }

    /// Push one entry (or queue it when the SQ is full).
    ///
    /// # Safety
    /// Every pointer in `e` must stay valid (and the memory it reads must not
    /// be written, the memory it writes not be read) until the operation's
    /// final completion is reaped; `e`'s `user_data` must be what `reap`
    /// expects for it. In this module that holds because the memory is owned
    /// by `self` (boxes, the region, the rx ring, the send table) until then.
    unsafe fn push(&mut self, e: squeue::Entry) {
        self.inflight += 1;
        if !self.backlog.is_empty() {
            self.backlog.push_back(e);
            return;
        }
        // SAFETY: the caller's contract.
        if unsafe { self.uring.submission().push(&e) }.is_err() {
            self.backlog.push_back(e);
        }
    }

    /// Move backlog entries into the SQ as room allows.
    fn drain_backlog(&mut self) {
        while let Some(e) = self.backlog.front() {
            // SAFETY: entries reach the backlog only through `push`, whose
            // caller vouched for them; they are moved, not duplicated.
            if unsafe { self.uring.submission().push(e) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// Ask every receive for room for a `UDP_GRO` control message (with
    /// `gro`) or for none. Only before the first receive is armed: the
    /// kernel reads the lengths at each arming and `take` parses by them.
    ///
    /// # Errors
    /// `AlreadyExists` once a receive was armed.
    pub(crate) fn set_recv_control(&mut self, gro: bool) -> io::Result<()> {
        if !self.recv_armed.is_empty() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.msghdr.0.msg_controllen = if gro {
            crate::gro::GRO_CONTROL_SPACE
        } else {
            0
        } as _;
        Ok(())
    }

    /// Whether socket `sock`'s multishot receive is armed.
    pub(crate) fn recv_armed(&self, sock: u16) -> bool {
        self.recv_armed
            .get(usize::from(sock))
            .copied()
            .unwrap_or(false)
    }

    /// Arm a multishot `RecvMsg` on `fd` into the provided buffers.
    ///
    /// # Errors
    /// `NotConnected` when no provided-buffer ring is registered.
    pub(crate) fn arm_recv(&mut self, sock: u16, fd: RawFd) -> io::Result<()> {
        if self.rx.is_none() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let i = usize::from(sock);
        if self.recv_armed.len() <= i {
            self.recv_armed.resize(i + 1, false);
        }
        if self.recv_armed[i] {
            return Ok(());
        }
        self.recv_armed[i] = true;
        let e = opcode::RecvMsgMulti::new(Fd(fd), &self.msghdr.0, RX_BGID)
            .build()
            .user_data(UserData::Recv { sock }.to_u64());
        // SAFETY: `msghdr` is boxed in `self` (never moved or freed while the
        // ring lives); buffers come from the registered ring `self.rx`.
        unsafe { self.push(e) };
        Ok(())
    }

    pub(crate) fn wake_armed(&self) -> bool {
        self.wake_armed
    }

    /// Arm an 8-byte read of the eventfd `fd` (once at a time).
    pub(crate) fn arm_wake(&mut self, fd: RawFd) {
        if self.wake_armed {
            return;
        }
        self.wake_armed = true;
        let e = opcode::Read::new(Fd(fd), (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(UserData::Wake.to_u64());
        // SAFETY: `wake_buf` is boxed in `self`, and only one read into it is
        // armed at a time (`wake_armed`), cleared when its CQE is reaped.
        unsafe { self.push(e) };
    }

    /// Arm an absolute CLOCK_MONOTONIC timeout at `deadline_ns`, generation `gen`.
    pub(crate) fn arm_timeout(&mut self, gen: u32, deadline_ns: u64) {
        let ts = Box::new(
            Timespec::new()
                .sec(deadline_ns / 1_000_000_000)
                .nsec((deadline_ns % 1_000_000_000) as u32),
        );
        let e = opcode::Timeout::new(&*ts)
            .flags(TimeoutFlags::ABS)
            .build()
            .user_data(UserData::Timeout { gen }.to_u64());
        self.timeouts.push((gen, ts));
        // SAFETY: the timespec is boxed in `self.timeouts` until this
        // timeout's CQE is reaped.
        unsafe { self.push(e) };
    }

    /// Remove the timeout of generation `gen` (its CQE then says -ECANCELED).
    pub(crate) fn remove_timeout(&mut self, gen: u32) {
        let e = opcode::TimeoutRemove::new(UserData::Timeout { gen }.to_u64())
            .build()
            .user_data(UserData::TimeoutRemove.to_u64());
        // SAFETY: no pointer in this entry.
        unsafe { self.push(e) };
    }

    /// Register `region` as the fixed buffer of a free external entry;
    /// its index.
    ///
    /// # Errors
    /// Why it is not a fixed buffer (no table, table full, the kernel's errno).
    pub(crate) fn ext_add(
        &mut self,
        id: RegionId,
        region: Arc<dyn ExternalRegion>,
    ) -> Result<u16, NotFixed> {
        if self.ext.slots.is_empty() {
            return Err(NotFixed::NoTable);
        }
        let (base, len) = (region.base().as_ptr(), region.len());
        let start = base as usize;
        let end = start
            .checked_add(len)
            .ok_or(NotFixed::Refused(libc::EINVAL))?;
        // Registered ranges never overlap, so `fixed_index` finds the one
        // holding an address by its start alone.
        let before = self.ext.by_addr.range(..end).next_back();
        if before.is_some_and(|(_, &(b_end, _))| b_end > start) {
            return Err(NotFixed::Overlaps);
        }
        let slot = self
            .ext
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(NotFixed::TableFull)?;
        let index = u16::try_from(slot)
            .ok()
            .and_then(|s| s.checked_add(FIXED_OWN))
            .ok_or(NotFixed::TableFull)?;
        let iov = [libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        }];
        // Why this is sound: `base..base+len` is mapped while `region` lives (the
        // `ExternalRegion` contract); the entry below keeps the `Arc` until
        // the buffer is unregistered (`ext_unregister`) or the ring is
        // destroyed. The kernel pins the pages; their contents may change
        // at any time, which the kernel does not mind.
        // SAFETY: the region stays mapped and registered while the entry holds it.
        let r = unsafe {
            self.uring
                .submitter()
                .register_buffers_update(u32::from(index), &iov, None)
        };
        if let Err(e) = r {
            return Err(NotFixed::Refused(e.raw_os_error().unwrap_or(libc::EIO)));
        }
        self.ext.by_addr.insert(start, (end, index - FIXED_OWN));
        self.ext.slots[slot] = Some(ExtEntry {
            id,
            _region: region,
            addr: start..end,
            sends: 0,
            removing: false,
        });
        Ok(index)
    }

    /// Take region `id` out of the table: at once if no send names its
    /// index, else when the last one completes.
    pub(crate) fn ext_remove(&mut self, id: RegionId) -> ExtRemoved {
        let Some(slot) = self
            .ext
            .slots
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.id == id && !e.removing))
        else {
            return ExtRemoved::NotFound;
        };
        let Some(e) = self.ext.slots[slot].as_mut() else {
            return ExtRemoved::NotFound;
        };
        e.removing = true;
        let (start, sends) = (e.addr.start, e.sends);
        // New sends no longer find it: they take the non-fixed paths.
        self.ext.by_addr.remove(&start);
        if sends > 0 {
            return ExtRemoved::Deferred;
        }
        if self.ext_unregister(slot) {
            ExtRemoved::Gone
        } else {
            ExtRemoved::Deferred
        }
    }

    /// Clear external entry `slot` in the kernel's table and drop it;
    /// whether that worked (if not, the entry and its `Arc` stay, and its
    /// index is never reused: the kernel may still hold the buffer).
    fn ext_unregister(&mut self, slot: usize) -> bool {
        let Some(index) = u32::try_from(slot).ok().map(|s| s + u32::from(FIXED_OWN)) else {
            return false;
        };
        let iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }];
        // SAFETY: an empty entry (null, 0) names no memory.
        let r = unsafe {
            self.uring
                .submitter()
                .register_buffers_update(index, &iov, None)
        };
        if r.is_err() {
            return false;
        }
        self.ext.slots[slot] = None;
        true
    }

    /// A send naming external entry `slot` reached its final CQE.
    fn ext_send_done(&mut self, slot: u16) {
        let slot = usize::from(slot);
        let Some(Some(e)) = self.ext.slots.get_mut(slot) else {
            return;
        };
        e.sends = e.sends.saturating_sub(1);
        if e.removing && e.sends == 0 {
            let id = e.id;
            if self.ext_unregister(slot) {
                self.ext.gone.push(id);
            }
        }
    }

    /// Regions whose deferred removal completed since the last call.
    pub(crate) fn ext_take_gone(&mut self, out: &mut Vec<RegionId>) {
        out.append(&mut self.ext.gone);
    }

    /// The fixed-buffer index whose registered range holds `ptr..ptr+len`,
    /// if any, and the external entry it is.
    fn fixed_index(&self, ptr: *const u8, len: usize) -> Option<(u16, Option<u16>)> {
        let start = ptr as usize;
        let end = start.checked_add(len)?;
        if let Some(i) = self
            .fixed
            .iter()
            .position(|r| r.start <= start && end <= r.end)
        {
            return u16::try_from(i).ok().map(|i| (i, None));
        }
        let (_, &(r_end, slot)) = self.ext.by_addr.range(..=start).next_back()?;
        (end <= r_end).then_some((slot + FIXED_OWN, Some(slot)))
    }

    /// Submit a send of `src` on the connected socket `fd`: `SendZc` when
    /// `zc`, else `WriteFixed` (region memory) or `Send` (heap memory); a
    /// two-part (gather) source goes as `SendMsgZc` / `SendMsg`. Region
    /// memory is named by its fixed-buffer index.
    ///
    /// # Errors
    /// `InvalidInput` for a frame over `u32::MAX` bytes.
    pub(crate) fn send(&mut self, fd: RawFd, src: TxSource, zc: bool) -> io::Result<SendKind> {
        let len = u32::try_from(src.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        if let TxSource::Gather { .. } = src {
            return Ok(self.send_gather(fd, src, zc));
        }
        let [(ptr, n), _] = src.raw_segments();
        let fixed = self.fixed_index(ptr, n);
        let buf_index = fixed.map(|(i, _)| i);
        let ext_slot = fixed.and_then(|(_, s)| s);
        let kind = match (zc, buf_index) {
            (true, Some(_)) => SendKind::ZcFixed,
            (true, None) => SendKind::ZcHeap,
            (false, Some(_)) => SendKind::WriteFixed,
            (false, None) => SendKind::Plain,
        };
        if let Some(Some(e)) = ext_slot.and_then(|s| self.ext.slots.get_mut(usize::from(s))) {
            e.sends += 1;
        }
        let (idx, gen) = self.sends.insert(
            Tx {
                srcs: Sources::One(src),
                fd,
                _msg: None,
                _gso: None,
                ext_slot,
            },
            zc,
            1,
        );
        let ud = UserData::Send { idx, gen }.to_u64();
        let e = match kind {
            SendKind::ZcFixed | SendKind::ZcHeap => {
                let mut op = opcode::SendZc::new(Fd(fd), ptr, len).buf_index(buf_index);
                if self.report_usage {
                    op = op.zc_flags(SEND_ZC_REPORT_USAGE);
                }
                op.build()
            }
            SendKind::WriteFixed => {
                opcode::WriteFixed::new(Fd(fd), ptr, len, buf_index.unwrap_or(0)).build()
            }
            _ => opcode::Send::new(Fd(fd), ptr, len).build(),
        }
        .user_data(ud);
        // Why this is sound: `ptr..ptr+len` is `src`'s memory, kept alive and unwritten
        // by us in `self.sends` until the final CQE (see `Tx`; an external
        // region may be written by its owner's client, which changes what
        // is sent, not what is valid); a buffer index is named only when
        // the bytes lie in that registered buffer, which stays registered
        // until then (`ext_send_done`).
        // SAFETY: every buffer the entry names outlives the operation.
        unsafe { self.push(e) };
        Ok(kind)
    }

    /// Pages a zero-copy datagram may span; a gather frame over it is sent
    /// copying.
    pub(crate) fn set_zc_max_frags(&mut self, n: usize) {
        self.zc_max_frags = n;
    }

    fn send_gather(&mut self, fd: RawFd, src: TxSource, zc: bool) -> SendKind {
        let [a, b] = src.raw_segments();
        // SAFETY: an all-zero `msghdr` is a valid value.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut msg = Box::new(MsgBox {
            hdr,
            iov: [iovec(a), iovec(b)],
        });
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = 2;
        let hdr: *const libc::msghdr = &msg.hdr;
        // A copying send (over the frag limit) is a plain send to the table.
        let over = zc && send::zc_frags(&[seg(a), seg(b)]) > self.zc_max_frags;
        let (idx, gen) = self.sends.insert(
            Tx {
                srcs: Sources::One(src),
                fd,
                _msg: Some(msg),
                _gso: None,
                ext_slot: None,
            },
            zc && !over,
            1,
        );
        let ud = UserData::Send { idx, gen }.to_u64();
        let (e, kind) = if zc && !over {
            (
                opcode::SendMsgZc::new(Fd(fd), hdr).build(),
                SendKind::GatherZc,
            )
        } else if over {
            (
                opcode::SendMsg::new(Fd(fd), hdr).build(),
                SendKind::GatherOverFrags,
            )
        } else {
            (
                opcode::SendMsg::new(Fd(fd), hdr).build(),
                SendKind::GatherPlain,
            )
        };
        // SAFETY: the boxed msghdr, its iovecs and the source's bytes live
        // unwritten in `self.sends` until the final CQE (see `Tx`).
        unsafe { self.push(e.user_data(ud)) };
        kind
    }

    /// Submit one GSO send of `frames` on the connected socket `fd`: their
    /// bytes as one iovec list, cut by the kernel into datagrams of `seg`
    /// bytes (the caller's run: every frame exactly `seg` bytes but the
    /// last, at most 64 of them, at most 65,507 bytes in all, so each
    /// datagram is exactly one frame). `SendMsgZc` when `zc` and the run's
    /// pages fit one zero-copy send, else `SendMsg`. No fixed buffer is
    /// named: the iovecs are plain addresses.
    pub(crate) fn send_gso(
        &mut self,
        fd: RawFd,
        frames: Vec<TxSource>,
        seg: u16,
        zc: bool,
    ) -> SendKind {
        let iov: Vec<libc::iovec> = frames
            .iter()
            .flat_map(TxSource::raw_segments)
            .filter(|&(_, len)| len > 0)
            .map(iovec)
            .collect();
        let over = zc
            && send::zc_frags(
                &iov.iter()
                    .map(|v| (v.iov_base as usize, v.iov_len))
                    .collect::<Vec<_>>(),
            ) > self.zc_max_frags;
        // SAFETY: an all-zero `msghdr` is a valid value.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut msg = Box::new(GsoMsg {
            hdr,
            iov,
            cmsg: SegmentCmsg::new(seg),
        });
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = msg.iov.len() as _;
        msg.hdr.msg_control = (&mut msg.cmsg as *mut SegmentCmsg).cast();
        msg.hdr.msg_controllen = SegmentCmsg::space() as _;
        let hdr: *const libc::msghdr = &msg.hdr;
        let n = frames.len();
        let zc = zc && !over;
        let (idx, gen) = self.sends.insert(
            Tx {
                srcs: Sources::Gso(frames),
                fd,
                _msg: None,
                _gso: Some(msg),
                ext_slot: None,
            },
            zc,
            n,
        );
        let ud = UserData::Send { idx, gen }.to_u64();
        let (e, kind) = if zc {
            (opcode::SendMsgZc::new(Fd(fd), hdr).build(), SendKind::GsoZc)
        } else if over {
            (
                opcode::SendMsg::new(Fd(fd), hdr).build(),
                SendKind::GsoOverFrags,
            )
        } else {
            (opcode::SendMsg::new(Fd(fd), hdr).build(), SendKind::Gso)
        };
        // SAFETY: the boxed msghdr, its iovec vector (never touched again),
        // its cmsg and every frame's bytes live unwritten in `self.sends`
        // until the final CQE (see `Tx`).
        unsafe { self.push(e.user_data(ud)) };
        kind
    }

    /// Sends not yet released.
    pub(crate) fn sends_live(&self) -> usize {
        self.sends.live()
    }

    /// Submit what is queued; wait for at least one completion if `wait`.
    ///
    /// # Errors
    /// `io_uring_enter` errors other than EINTR / EBUSY / EAGAIN.
    pub(crate) fn submit(&mut self, wait: bool) -> io::Result<()> {
        self.drain_backlog();
        loop {
            let want = usize::from(wait && self.uring.completion().is_empty());
            match self.uring.submit_and_wait(want) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // CQ overflow pending or no memory for requests: reap first.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => break,
                Err(e) => return Err(e),
            }
        }
        self.drain_backlog();
        Ok(())
    }

    /// Submit what is queued without waiting, which also runs the task
    /// work that posts completions (the ring is `COOP_TASKRUN`: they are
    /// only posted when this thread enters the kernel); whether any
    /// completion is there to reap.
    ///
    /// # Errors
    /// As [`Ring::submit`].
    pub(crate) fn poll_completions(&mut self) -> io::Result<bool> {
        if !self.uring.completion().is_empty() {
            return Ok(true);
        }
        self.submit(false)?;
        Ok(!self.uring.completion().is_empty())
    }

    /// Submit everything queued, the backlog included (bounded retries).
    ///
    /// # Errors
    /// As [`Ring::submit`].
    pub(crate) fn submit_all(&mut self) -> io::Result<()> {
        for _ in 0..1000 {
            self.submit(false)?;
            if self.backlog.is_empty() {
                break;
            }
        }
        self.submit(false)
    }

    /// Submit and wait until a completion arrives or `timeout_ns` passes.
    fn submit_wait_timeout(&mut self, timeout_ns: u64) {
        self.drain_backlog();
        let ts = Timespec::new()
            .sec(timeout_ns / 1_000_000_000)
            .nsec((timeout_ns % 1_000_000_000) as u32);
        let args = io_uring::types::SubmitArgs::new().timespec(&ts);
        let _ = self.uring.submitter().submit_with_args(1, &args);
    }

    /// Decode every available completion into `out`.
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) {
        // External entries whose send completed (applied after the CQ
        // borrow ends: unregistering needs the submitter).
        let mut ext_done: Vec<u16> = Vec::new();
        // Failed zero-copy or GSO sends to re-send copying, one datagram
        // per send (after the CQ borrow): socket, frames, errno, zero
        // copy, GSO.
        let mut retry: Vec<(RawFd, Sources<TxSource>, i32, bool, bool)> = Vec::new();
        let mut cq = self.uring.completion();
        cq.sync();
        for cqe in &mut cq {
            let (res, flags, raw) = (cqe.result(), cqe.flags(), cqe.user_data());
            let Ok(ud) = UserData::from_u64(raw) else {
                out.push(Completion::Bad {
                    user_data: raw,
                    res,
                    flags,
                });
                continue;
            };
            let failed = match ud {
                UserData::Send { idx, gen } => self
                    .sends
                    .failed(idx, gen, res, flags)
                    .map(|f| (f.src.fd, f.src.srcs.clone(), f.zc, f.gso)),
                _ => None,
            };
            let c = match ud {
                UserData::Recv { sock } => {
                    let more = cqueue::more(flags);
                    if !more {
                        self.inflight = self.inflight.saturating_sub(1);
                        if let Some(a) = self.recv_armed.get_mut(usize::from(sock)) {
                            *a = false;
                        }
                    }
                    let frame = match (cqueue::buffer_select(flags), self.rx.as_mut()) {
                        (Some(bid), Some(rx)) if res >= 0 => {
                            rx.take(bid, res as usize, &self.msghdr.0)
                        }
                        _ => None,
                    };
                    Completion::Recv {
                        sock,
                        res,
                        more,
                        frame,
                    }
                }
                UserData::Wake => {
                    self.inflight = self.inflight.saturating_sub(1);
                    self.wake_armed = false;
                    Completion::Wake { res }
                }
                UserData::Timeout { gen } => {
                    self.inflight = self.inflight.saturating_sub(1);
                    self.timeouts.retain(|(g, _)| *g != gen);
                    Completion::Timeout { gen, res }
                }
                UserData::TimeoutRemove => {
                    self.inflight = self.inflight.saturating_sub(1);
                    Completion::Internal
                }
                UserData::Send { idx, gen } => match self.sends.on_cqe(idx, gen, res, flags) {
                    Ok(mut s) => {
                        if let Some((fd, srcs, zc, gso)) = failed {
                            // Not a send error: the copies stand in for it.
                            s.result = None;
                            retry.push((fd, srcs, -res, zc, gso));
                        }
                        if let Some(r) = &s.released {
                            self.inflight = self.inflight.saturating_sub(1);
                            if let Some(slot) = r.src.ext_slot {
                                ext_done.push(slot);
                            }
                        }
                        Completion::Send(s)
                    }
                    Err(SendCqeError::Unknown | SendCqeError::UnexpectedNotif) => Completion::Bad {
                        user_data: raw,
                        res,
                        flags,
                    },
                },
            };
            out.push(c);
        }
        drop(cq);
        for slot in ext_done {
            self.ext_send_done(slot);
        }
        for (fd, srcs, errno, zc, gso) in retry {
            let frames = srcs.datagrams();
            let queued = srcs
                .iter()
                .filter(|src| self.send_copy(fd, (*src).clone()))
                .count();
            out.push(if gso {
                Completion::GsoFallback {
                    fd,
                    zc,
                    errno,
                    frames,
                    queued,
                }
            } else {
                Completion::ZcFallback {
                    errno,
                    queued: queued == frames,
                }
            });
        }
    }

    /// Re-send `src` copying after its zero-copy send failed. A pool slot
    /// counts the new send as pending, as the driver does before any send.
    fn send_copy(&mut self, fd: RawFd, src: TxSource) -> bool {
        if let Some(b) = src.slot_buf() {
            if b.slot_begin_send().is_err() {
                return false;
            }
        }
        let slot = src.slot_buf().cloned();
        if self.send(fd, src, false).is_ok() {
            return true;
        }
        if let Some(b) = slot {
            let _ = b.slot_send_done(false);
        }
        false
    }

    /// Cancel everything and wait (bounded) for the final completions;
    /// `out` receives them (so pool slots can be accounted). Returns whether
    /// nothing is left in flight.
    pub(crate) fn shutdown(&mut self, out: &mut Vec<Completion>) -> bool {
        // Entries never submitted are dropped: their memory was never
        // handed to the kernel.
        self.inflight -= self.backlog.len();
        self.backlog.clear();
        if self.inflight == 0 {
            return true;
        }
        let _ = self.uring.submit();
        let _ = self
            .uring
            .submitter()
            .register_sync_cancel(Some(Timespec::new().sec(1)), CancelBuilder::any());
        let start = std::time::Instant::now();
        while self.inflight > 0 && start.elapsed() < std::time::Duration::from_secs(3) {
            self.submit_wait_timeout(50_000_000);
            self.reap(out);
        }
        self.inflight == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let mut scratch = Vec::new();
        let drained = self.shutdown(&mut scratch);
        // Account the slots whose last send completed during the drain.
        for c in &scratch {
            if let Completion::Send(SendCqe {
                released: Some(r), ..
            }) = c
            {
                for b in r.src.srcs.iter().filter_map(TxSource::slot_buf) {
                    let _ = b.slot_send_done(r.zc);
                }
            }
        }
        if !drained {
            // The kernel still holds operations that may read or write our
            // memory: never free it. Leak the region, the rx ring, the boxes
            // and every send source; closing the ring fd then tears down the
            // operations without touching freed memory.
            std::mem::forget(self.region.take());
            std::mem::forget(self.rx.take());
            std::mem::forget(std::mem::take(&mut self.sends));
            std::mem::forget(std::mem::take(&mut self.ext.slots));
            std::mem::forget(std::mem::take(&mut self.timeouts));
            // Leak the two boxes too, leaving fresh ones in their place.
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            // SAFETY: an all-zero `msghdr` is a valid value.
            let fresh = Box::new(RecvHdr(unsafe { std::mem::zeroed() }));
            std::mem::forget(std::mem::replace(&mut self.msghdr, fresh));
        }
        drop(scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let all = [
            UserData::Recv { sock: 0 },
            UserData::Recv { sock: u16::MAX },
            UserData::Wake,
            UserData::Timeout { gen: 0 },
            UserData::Timeout { gen: u32::MAX },
            UserData::TimeoutRemove,
            UserData::Send { idx: 0, gen: 0 },
            UserData::Send {
                idx: u32::MAX,
                gen: u16::MAX,
            },
        ];
        for ud in all {
            assert_eq!(UserData::from_u64(ud.to_u64()), Ok(ud), "{ud:?}");
        }
    }

    #[test]
    fn bad_user_data_is_an_error() {
        for v in [
            0u64,
            6 << 56,
            u64::MAX,
            TAG_WAKE << 56 | 1,
            TAG_RECV << 56 | 1 << 16,
            TAG_SEND << 56 | 1 << 50,
        ] {
            assert_eq!(UserData::from_u64(v), Err(BadUserData(v)), "{v:#x}");
        }
    }

    #[test]
    fn tags_are_distinct() {
        let a = UserData::Recv { sock: 3 }.to_u64();
        let b = UserData::Timeout { gen: 3 }.to_u64();
        let c = UserData::Send { idx: 3, gen: 0 }.to_u64();
        assert!(a != b && b != c && a != c);
    }
}

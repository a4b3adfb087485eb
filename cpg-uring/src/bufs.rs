//! The memory the kernel reads and writes: one anonymous mapping holding the
//! send pool's slots and the receive buffers, the provided-buffer ring the
//! kernel picks receive buffers from, and the handles ([`RxBuf`]) that give
//! received frames to the engine by reference.
//!
//! # What it owns
//!
//! ```text
//! mapping: | pool slots (PoolConfig::region_len, page rounded) | rx buffers (count × size) |
//!            fixed buffer 0                                      fixed buffer 1
//! ```
//!
//! - [`Region`]: the mapping, with the `cpg_core::pool` bookkeeping over
//!   its first part behind a [`SlotAlloc`]. A pool slot is an [`RxBuf`]
//!   handle: written only through `FrameBuf::unique_mut` while it is the
//!   only handle, and every send holds a clone until its last completion,
//!   so a slot the kernel may still read is never written or reused.
//! - [`RxRing`]: the provided-buffer ring over the second part, with an
//!   ownership state per buffer id (in the kernel's ring, or held by user
//!   space), so that a buffer is read only after the kernel gave it back and
//!   re-provided only after the last [`RxBuf`] naming it is dropped.
//! - [`RxBuf`]: a received frame, `Clone + AsRef<[u8]> + Send + Sync`,
//!   passed to the engine as its frame type; dropping the last clone puts
//!   the buffer id on a return queue the driver drains.
//!
//! # What it must not do
//!
//! Know about sockets, opcodes or the engine. The mapping stays mapped while
//! any [`RxBuf`], [`Region`] or the ring that registered it holds it (all
//! share one `Arc<Mapping>`).
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cpg_core::pool::{
    AllocError, Outcome, PoolConfig, PoolConfigError, PoolStats, SlotError, SlotId, SlotState,
    VecPool,
};
use rustix::mm::{MapFlags, ProtFlags};

use crate::external::{ExternalError, ExternalRegion};
use crate::gro::Segments;
use crate::waker::Waker;

/// Bytes reserved in front of a received datagram in each receive buffer:
/// the `io_uring_recvmsg_out` header (16) and the source address (a
/// `sockaddr_in6`, 28, the larger of the two families), rounded up.
pub const RX_HEADROOM: usize = 64;

/// The smallest receive buffer UDP GRO is turned on with: a coalesced
/// receive of the largest UDP payload (65,535 B) after [`RX_HEADROOM`] and
/// the `UDP_GRO` control message, rounded up to 64 B. A smaller buffer
/// would truncate a coalesced receive (`MSG_TRUNC`: all of its datagrams
/// lost), so the driver leaves GRO off below it.
pub const GRO_RX_BUFFER_SIZE: usize =
    (65_535 + RX_HEADROOM + crate::gro::GRO_CONTROL_SPACE).next_multiple_of(64);

/// Lock `m`, taking the guard even if a thread panicked while holding it:
/// the crate's one mutex-poison policy.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Page size assumed for rounding (the kernel needs page-aligned buffer
/// rings; anonymous mappings are page aligned anyway).
fn page_size() -> usize {
    rustix::param::page_size()
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

/// One anonymous, private, read-write mapping, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is a range of process memory with no thread affinity;
// every access to its bytes goes through `Region` (slots, exclusive by the
// pool state) or `RxBuf` (read-only, exclusive by the `RxRing` state), which
// carry their own synchronisation arguments.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the base pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes (rounded up to a page) of zeroed memory.
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        let len = round_up(len.max(1), page_size()).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choice (null hint, no MAP_FIXED) aliases no existing memory.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::POPULATE,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::OutOfMemory)?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap_anonymous` returned, and
        // this is the last owner: every `Region`, `RxBuf` and ring holding
        // the memory holds an `Arc<Mapping>`, so none is left.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// Why a [`Region`] could not be built.
#[derive(Debug)]
pub enum RegionError {
    /// The pool configuration is invalid.
    Pool(PoolConfigError),
    /// Receive buffer count not a power of two in `1..=32768`, or size too small.
    RxShape {
        /// Buffers asked for.
        count: usize,
        /// Bytes per buffer asked for.
        size: usize,
    },
    /// `mmap` failed.
    Map {
        /// Bytes asked for.
        len: usize,
        /// The error.
        err: io::Error,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::Pool(e) => write!(f, "pool configuration: {e}"),
            RegionError::RxShape { count, size } => write!(
                f,
                "receive buffers: {count} × {size} B; the count must be a power of two in 1..=32768 \
                 and the size at least {} B",
                RX_HEADROOM + 576
            ),
            RegionError::Map { len, err } => write!(f, "mmap of {len} B for the buffer region failed: {err}"),
        }
    }
}

impl std::error::Error for RegionError {}

/// The send pool and receive buffers in one mapping (see the module docs).
pub struct Region {
    map: Arc<Mapping>,
    slots: SlotAlloc,
    /// Bytes of the pool part (page rounded); the rx part starts here.
    pool_span: usize,
    rx_count: usize,
    rx_size: usize,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("map", &self.map)
            .field("pool_span", &self.pool_span)
            .field("rx_count", &self.rx_count)
            .field("rx_size", &self.rx_size)
            .finish()
    }
}

impl Region {
    /// Map a region for `pool` followed by `rx_count` receive buffers of
    /// `rx_size` bytes each.
    ///
    /// # Errors
    /// [`RegionError`] naming the bad setting or the failed `mmap`.
    pub fn new(pool: &PoolConfig, rx_count: usize, rx_size: usize) -> Result<Region, RegionError> {
        let pool_len = pool.region_len().map_err(RegionError::Pool)?;
        if !rx_count.is_power_of_two()
            || rx_count > 32768
            || rx_size < RX_HEADROOM + 576
            || rx_size > u32::MAX as usize
        {
            return Err(RegionError::RxShape {
                count: rx_count,
                size: rx_size,
            });
        }
        let page = page_size();
        let pool_span =
            round_up(pool_len, page).ok_or(RegionError::Pool(PoolConfigError::RegionOverflow))?;
        let rx_span = rx_count
            .checked_mul(rx_size)
            .and_then(|n| round_up(n, page))
            .ok_or(RegionError::RxShape {
                count: rx_count,
                size: rx_size,
            })?;
        let len = pool_span.checked_add(rx_span).ok_or(RegionError::RxShape {
            count: rx_count,
            size: rx_size,
        })?;
        let map = Arc::new(Mapping::new(len).map_err(|err| RegionError::Map { len, err })?);
        let pool = VecPool::new_vec(pool).map_err(RegionError::Pool)?;
        let slots = SlotAlloc(Arc::new(SlotPool {
            pool: Mutex::new(pool),
            map: map.clone(),
            span: pool_span,
        }));
        Ok(Region {
            map,
            slots,
            pool_span,
            rx_count,
            rx_size,
        })
    }

    /// Total bytes mapped (what registration pins and accounts).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never empty (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slot allocator (shareable with application threads).
    pub fn slots(&self) -> &SlotAlloc {
        &self.slots
    }

    /// Receive buffers in the region.
    pub fn rx_count(&self) -> usize {
        self.rx_count
    }

    /// Bytes per receive buffer.
    pub fn rx_size(&self) -> usize {
        self.rx_size
    }

    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    /// The two fixed buffers: the pool part (`register_buffers` index 0)
    /// and the receive part (index 1); the ring finds a send's index by
    /// address.
    pub(crate) fn iovecs(&self) -> [libc::iovec; 2] {
        let base = self.map.base();
        [
            libc::iovec {
                iov_base: base.cast(),
                iov_len: self.pool_span,
            },
            libc::iovec {
                // `pool_span ≤ len` by construction, so this stays in the mapping.
                iov_base: base.wrapping_add(self.pool_span).cast(),
                iov_len: self.map.len() - self.pool_span,
            },
        ]
    }

    /// Offset of the receive part in the mapping.
    pub(crate) fn rx_offset(&self) -> usize {
        self.pool_span
    }
}

/// The pool bookkeeping over the slot part of the mapping, shared by the
/// allocator and every slot handle.
#[derive(Debug)]
pub(crate) struct SlotPool {
    pool: Mutex<VecPool>,
    map: Arc<Mapping>,
    span: usize,
}

impl SlotPool {
    fn lock(&self) -> MutexGuard<'_, VecPool> {
        lock(&self.pool)
    }
}

/// Allocates zero-copy send buffers (pool slots) as [`RxBuf`] handles:
/// `Clone + Send + Sync`, usable from application threads.
///
/// A slot's life is its handle's: write it through [`RxBuf::unique_mut`]
/// (`cpg_core::engine::FrameBuf`) while the handle is the only one, hand it
/// to the engine (`Engine::submit_zc`), and it returns to the pool when the
/// last clone drops: the engine's (when the message is stable) and every
/// send's (after its completion or zero-copy notification). In the pool's
/// terms: Owned after `alloc`; Queued → InFlight when the first send is
/// submitted; one pending send per submission, taken off by
/// `on_send_complete` / `on_zc_notif`; `mark_stable` (→ Free) when the last
/// handle drops.
#[derive(Debug, Clone)]
pub struct SlotAlloc(Arc<SlotPool>);

impl SlotAlloc {
    /// A slot whose payload holds `len` bytes. The handle's bytes are the
    /// whole slot: [`SlotAlloc::headroom`] bytes for the engine's headers,
    /// then the payload.
    ///
    /// # Errors
    /// As `Pool::alloc` (`TooBig`, `Exhausted`).
    pub fn alloc(&self, len: usize) -> Result<RxBuf, AllocError> {
        let mut pool = self.0.lock();
        let id = pool.alloc(len)?;
        let range = pool.slot_offset(id).and_then(|start| {
            pool.payload_capacity(id)
                .map(|cap| start..start + pool.headroom() + cap)
        });
        let Ok(range) = range else {
            let _ = pool.release(id);
            return Err(AllocError::Exhausted);
        };
        if range.end > self.0.span {
            let _ = pool.release(id);
            return Err(AllocError::Exhausted);
        }
        drop(pool);
        let ptr = self.0.map.base().wrapping_add(range.start);
        let ptr = NonNull::new(ptr).unwrap_or(NonNull::dangling());
        Ok(RxBuf(Arc::new(RxInner::Slot(SlotFrame {
            id,
            ptr,
            len: range.len(),
            pool: self.0.clone(),
        }))))
    }

    /// Bytes in front of every payload.
    pub fn headroom(&self) -> usize {
        self.0.lock().headroom()
    }

    /// The largest payload a slot holds.
    pub fn payload_capacity_max(&self) -> usize {
        self.0.lock().payload_capacity_max()
    }

    /// Pool counters.
    pub fn stats(&self) -> PoolStats {
        *self.0.lock().stats()
    }

    /// A live slot's state (tests, diagnostics).
    ///
    /// # Errors
    /// `SlotError` for a stale id.
    pub fn state(&self, id: SlotId) -> Result<SlotState, SlotError> {
        self.0.lock().state(id)
    }
}

/// The bytes a send reads, kept alive until its last completion.
#[derive(Debug, Clone)]
pub(crate) enum TxSource {
    /// An engine-built frame on the heap.
    Heap(Arc<[u8]>),
    /// `buf[range]`: a received frame re-sent, or a frame in a pool slot.
    Buf {
        /// The buffer (a clone held until the send is released).
        buf: RxBuf,
        /// Checked to lie inside `buf`.
        range: Range<usize>,
    },
    /// `head` then `buf[range]`: a fragment of a zero-copy message.
    Gather {
        /// Engine-built headers.
        head: Arc<[u8]>,
        /// The zero-copy buffer.
        buf: RxBuf,
        /// Checked to lie inside `buf`.
        range: Range<usize>,
    },
}

impl TxSource {
    /// A source for `buf[range]`, or `None` if `range` is not inside `buf`.
    pub(crate) fn buf(buf: RxBuf, range: Range<usize>) -> Option<TxSource> {
        buf.raw_range(range.clone())?;
        Some(TxSource::Buf { buf, range })
    }

    /// A gather source, or `None` if `range` is not inside `buf`.
    pub(crate) fn gather(head: Arc<[u8]>, buf: RxBuf, range: Range<usize>) -> Option<TxSource> {
        buf.raw_range(range.clone())?;
        Some(TxSource::Gather { head, buf, range })
    }

    /// The bytes as one or two (pointer, length) segments, without forming
    /// a reference to them: what the io_uring send paths hand the kernel
    /// (an external buffer's bytes may be written by another process
    /// meanwhile; see [`RxBuf::external`]). Valid while `self` lives.
    pub(crate) fn raw_segments(&self) -> [(*const u8, usize); 2] {
        let none = (NonNull::<u8>::dangling().as_ptr().cast_const(), 0);
        match self {
            TxSource::Heap(b) => [(b.as_ptr(), b.len()), none],
            TxSource::Buf { buf, range } => [buf.raw_range(range.clone()).unwrap_or(none), none],
            TxSource::Gather { head, buf, range } => [
                (head.as_ptr(), head.len()),
                buf.raw_range(range.clone()).unwrap_or(none),
            ],
        }
    }

    /// Whether the bytes (or the gather's second part) lie in an external
    /// region ([`RxBuf::external`]).
    pub(crate) fn is_external(&self) -> bool {
        match self {
            TxSource::Heap(_) => false,
            TxSource::Buf { buf, .. } | TxSource::Gather { buf, .. } => buf.is_external(),
        }
    }

    /// The bytes, as one or two segments. For an external buffer this is a
    /// `&[u8]` over memory another process may write (see
    /// [`RxBuf::external`]): used only where the bytes are copied as opaque
    /// payload (sealing, the user-space loopback) or handed to a syscall.
    pub(crate) fn segments(&self) -> [&[u8]; 2] {
        match self {
            TxSource::Heap(b) => [b, &[]],
            TxSource::Buf { buf, range } => [buf.as_ref().get(range.clone()).unwrap_or(&[]), &[]],
            TxSource::Gather { head, buf, range } => {
                [head, buf.as_ref().get(range.clone()).unwrap_or(&[])]
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        let [a, b] = self.raw_segments();
        a.1 + b.1
    }

    /// The pool slot this send reads, if any.
    pub(crate) fn slot_buf(&self) -> Option<&RxBuf> {
        match self {
            TxSource::Heap(_) => None,
            TxSource::Buf { buf, .. } | TxSource::Gather { buf, .. } => {
                buf.is_slot().then_some(buf)
            }
        }
    }
}

/// Receive buffer ids given back by dropped [`RxBuf`]s, drained by the loop.
#[derive(Debug)]
pub(crate) struct ReturnQueue {
    ids: Mutex<Vec<u16>>,
    /// Set by the loop when a receive found no buffer: the next return wakes it.
    starved: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ReturnQueue {
    pub(crate) fn new(capacity: usize) -> ReturnQueue {
        ReturnQueue {
            ids: Mutex::new(Vec::with_capacity(capacity)),
            starved: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    pub(crate) fn set_waker(&self, w: Waker) {
        *lock(&self.waker) = Some(w);
    }

    pub(crate) fn set_starved(&self) {
        self.starved.store(true, Ordering::Release);
    }

    fn push(&self, id: u16) {
        lock(&self.ids).push(id);
        if self.starved.swap(false, Ordering::AcqRel) {
            if let Some(w) = lock(&self.waker).as_ref() {
                w.wake();
            }
        }
    }

    fn drain_into(&self, out: &mut Vec<u16>) {
        out.append(&mut lock(&self.ids));
    }
}

/// The engine's buffer handle (`F` of `Engine<F>`): a received frame in a
/// receive buffer of the region (returned to the kernel when the last
/// clone drops), a zero-copy send buffer in a pool slot (returned to the
/// pool when the last clone drops), bytes on the heap (syscall fallback,
/// user-space loopback, copies made under receive-buffer pressure), or a
/// range of memory the driver does not own ([`RxBuf::external`]: the
/// owner's release hook runs when the last clone drops).
///
/// Clones share the bytes; `Clone + AsRef<[u8]> + Send + Sync`.
#[derive(Clone)]
pub struct RxBuf(Arc<RxInner>);

enum RxInner {
    Ring(RingFrame),
    /// One datagram of a coalesced (UDP GRO) receive.
    Part(PartFrame),
    Slot(SlotFrame),
    Heap(Arc<[u8]>),
    External(ExternalFrame),
}

/// A frame in a provided buffer. The buffer is held (not in the kernel's
/// ring) for as long as this exists.
struct RingFrame {
    bid: u16,
    ptr: NonNull<u8>,
    len: usize,
    _map: Arc<Mapping>,
    returns: Arc<ReturnQueue>,
}

// SAFETY: the frame's bytes are immutable while the `RingFrame` exists: the
// kernel writes buffer `bid` only after it is re-provided, which happens only
// after `Drop` below queued the id (see `RxRing::recycle`); the mapping is
// kept alive by `_map`. Sharing immutable bytes across threads is fine, and
// the return queue is a `Mutex`.
unsafe impl Send for RingFrame {}
// SAFETY: as above; `&RingFrame` only reads.
unsafe impl Sync for RingFrame {}

impl Drop for RingFrame {
    fn drop(&mut self) {
        self.returns.push(self.bid);
    }
}

/// One datagram of a coalesced (UDP GRO) receive: `ptr..ptr+len`, a
/// range of the payload `whole` received. `whole` is never read as bytes
/// once it is split (nothing forms a slice of it); its buffer goes back
/// to the kernel when the last part drops it ([`RxBuf::split`]).
struct PartFrame {
    whole: Arc<RingFrame>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `RingFrame`: the bytes of every part are immutable while
// it is shared (written only through `open_in_place` on the only handle of
// the part, whose range no other part overlaps), the buffer is not
// re-provided while `whole` lives, and `whole` keeps the mapping alive.
unsafe impl Send for PartFrame {}
// SAFETY: as above; `&PartFrame` only reads.
unsafe impl Sync for PartFrame {}

/// A pool slot, allocated (not Free) for as long as this exists.
struct SlotFrame {
    id: SlotId,
    ptr: NonNull<u8>,
    len: usize,
    pool: Arc<SlotPool>,
}

// SAFETY: the slot's bytes are written only through `RxBuf::unique_mut`,
// which needs the only handle (`Arc::get_mut`) and `&mut` to it, so writes
// never race with reads of other handles or threads; the kernel reads the
// slot only while a send holds a clone. The mapping lives as long as
// `pool.map`; the bookkeeping is behind a `Mutex`.
unsafe impl Send for SlotFrame {}
// SAFETY: as above; `&SlotFrame` only reads.
unsafe impl Sync for SlotFrame {}

impl Drop for SlotFrame {
    fn drop(&mut self) {
        // The last handle: no send holds one, so no send is pending.
        let mut pool = self.pool.lock();
        match pool.state(self.id) {
            Ok(SlotState::Owned) => {
                let _ = pool.release(self.id);
            }
            Ok(SlotState::InFlight { .. }) => {
                let _ = pool.mark_stable(self.id);
            }
            Ok(SlotState::Queued) => {
                // Never sent: walk it through a send that did nothing.
                let _ = pool.begin_send(self.id);
                let _ = pool.on_send_complete(self.id);
                let _ = pool.mark_stable(self.id);
            }
            Ok(SlotState::Free) | Err(_) => {}
        }
    }
}

/// `range` of an [`ExternalRegion`]: the owner's `release(range)` runs
/// when this drops, i.e. when the last [`RxBuf`] clone over it goes.
struct ExternalFrame {
    owner: Arc<dyn ExternalRegion>,
    /// `owner.base() + range.start`.
    ptr: NonNull<u8>,
    range: Range<usize>,
}

// SAFETY: `ptr` points into the owner's region, which stays mapped while
// `owner` (an `Arc` this frame holds) lives, by the `ExternalRegion`
// contract; nothing here writes through it, and the owner is `Send + Sync`
// by the trait's bounds. Which thread reads the bytes does not matter.
unsafe impl Send for ExternalFrame {}
// SAFETY: as above; `&ExternalFrame` only reads.
unsafe impl Sync for ExternalFrame {}

impl Drop for ExternalFrame {
    fn drop(&mut self) {
        // The last handle: the engine dropped its clones and every send
        // released its own after its final completion (a `SendZc` after
        // its notification: `send::SendTable`).
        self.owner.release(self.range.clone());
    }
}

impl RxBuf {
    /// A frame on the heap (no region buffer behind it).
    pub fn from_heap(bytes: Arc<[u8]>) -> RxBuf {
        RxBuf(Arc::new(RxInner::Heap(bytes)))
    }

    /// A handle on `owner`'s bytes `range`, sent from where they lie: with
    /// a fixed buffer index when `owner` was added to the driver
    /// ([`crate::ExternalRegions::add`]) and its registration held, by the
    /// non-fixed paths otherwise; never copied in user space by the send
    /// paths. `owner.release(range)` runs exactly once, when the last clone
    /// of the handle drops (after the engine let go and every send that
    /// read it completed, zero-copy notifications included).
    ///
    /// [`FrameBuf::unique_mut`](cpg_core::engine::FrameBuf::unique_mut) is
    /// always `None` for it: nothing here writes the owner's memory.
    ///
    /// # Bytes another process writes
    ///
    /// The engine reads frames through `AsRef<[u8]>`, so this handle gives
    /// a `&[u8]` over memory that the owner's client may write at the same
    /// moment (`MAP_SHARED`). In the letter of Rust's memory model that is
    /// a data race: a shared reference promises its bytes do not change.
    /// The compiler cannot see the other process, so what it may do is
    /// assume two reads of one byte agree, or serve two reads from one.
    /// We accept that because nothing makes a decision memory safety
    /// depends on from these bytes: they are payload, opaque to this crate
    /// and to the engine (copied, sent or delivered, never parsed in place
    /// and never used as a length or index); the ranges are the caller's
    /// own, checked here against `owner.len()`; and the send paths form no
    /// reference at all (the kernel gets a pointer and a length, see
    /// `TxSource::raw_segments`). The worst a concurrent write does is
    /// change the bytes that are sent or delivered, which the writer could
    /// have done by writing them earlier. Two caveats for the owner: a
    /// frame re-sent later (a retransmission) reads the memory again, so a
    /// client that rewrites a payload in flight may have different bytes
    /// reach different nodes; and bytes that must be believed (headers,
    /// lengths) must be copied out before they are checked, not read here.
    ///
    /// # Errors
    /// [`ExternalError::BadRange`] if `range` is not inside `owner`.
    pub fn external(
        owner: Arc<dyn ExternalRegion>,
        range: Range<usize>,
    ) -> Result<RxBuf, ExternalError> {
        let len = owner.len();
        if range.start > range.end || range.end > len {
            return Err(ExternalError::BadRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        // In bounds of the region (checked above), so no overflow and not null.
        let ptr = NonNull::new(owner.base().as_ptr().wrapping_add(range.start)).ok_or(
            ExternalError::BadRange {
                start: range.start,
                end: range.end,
                len,
            },
        )?;
        Ok(RxBuf(Arc::new(RxInner::External(ExternalFrame {
            owner,
            ptr,
            range,
        }))))
    }

    /// Whether this is a range of an external region ([`RxBuf::external`]).
    pub fn is_external(&self) -> bool {
        matches!(&*self.0, RxInner::External(_))
    }

    /// The provided-buffer id behind this frame, if it is in a receive buffer.
    pub fn buffer_id(&self) -> Option<u16> {
        match &*self.0 {
            RxInner::Ring(f) => Some(f.bid),
            RxInner::Part(p) => Some(p.whole.bid),
            _ => None,
        }
    }

    /// The pool slot behind this buffer, if it is a zero-copy send buffer.
    pub fn slot_id(&self) -> Option<SlotId> {
        match &*self.0 {
            RxInner::Slot(s) => Some(s.id),
            _ => None,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match &*self.0 {
            RxInner::Heap(b) => b.len(),
            RxInner::Ring(f) => f.len,
            RxInner::Part(p) => p.len,
            RxInner::Slot(s) => s.len,
            RxInner::External(e) => e.range.len(),
        }
    }

    /// `self[range]` as a pointer and a length, without forming a
    /// reference to the bytes (what a send hands the kernel); `None` if
    /// `range` is not inside the buffer.
    pub(crate) fn raw_range(&self, range: Range<usize>) -> Option<(*const u8, usize)> {
        let (base, len): (*const u8, usize) = match &*self.0 {
            RxInner::Heap(b) => (b.as_ptr(), b.len()),
            RxInner::Ring(f) => (f.ptr.as_ptr(), f.len),
            RxInner::Part(p) => (p.ptr.as_ptr(), p.len),
            RxInner::Slot(s) => (s.ptr.as_ptr(), s.len),
            RxInner::External(e) => (e.ptr.as_ptr(), e.range.len()),
        };
        if range.start > range.end || range.end > len {
            return None;
        }
        // `start ≤ len`: stays inside (or one past) the buffer.
        Some((base.wrapping_add(range.start), range.len()))
    }

    /// Empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles sharing these bytes (this one included).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Rewrite a just-received frame in place and shorten it to what `f`
    /// returns (opening a sealed datagram: the frame is decrypted where it
    /// lies and the trailer cut off). `None` if this is not the only
    /// handle or not a received frame; the bytes are then untouched.
    pub(crate) fn open_in_place<E>(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Option<Result<(), E>> {
        let (ptr, len) = match Arc::get_mut(&mut self.0)? {
            RxInner::Ring(frame) => (frame.ptr, &mut frame.len),
            RxInner::Part(part) => (part.ptr, &mut part.len),
            RxInner::Heap(b) => {
                let bytes = Arc::get_mut(b)?;
                let n = match f(bytes) {
                    Ok(n) => n.min(bytes.len()),
                    Err(e) => return Some(Err(e)),
                };
                // Heap frames come from the syscall path and copies made
                // under buffer pressure: a shorter copy is fine there.
                if n < bytes.len() {
                    *b = Arc::from(&bytes[..n]);
                }
                return Some(Ok(()));
            }
            RxInner::Slot(_) | RxInner::External(_) => return None,
        };
        // Why this is sound: `Arc::get_mut` proved this the only handle of
        // the frame (or of the part: the other parts of a GRO receive cover
        // ranges disjoint from this one, `RxBuf::split` checked them, and
        // the whole payload is never read as a slice once split), so no
        // other borrow of these bytes exists; the buffer is the user's
        // (taken from the kernel in `RxRing::take`, re-provided only after
        // the last handle over it drops), so the kernel does not write it;
        // `ptr..ptr+len` lies inside the live mapping (`_map`, or the
        // part's `whole`), as `take` and `split` checked. The borrow ends
        // before the length changes.
        // SAFETY: a held receive buffer (or part), only handle, inside the live mapping.
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), *len) };
        let n = match f(bytes) {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        *len = n.min(*len);
        Some(Ok(()))
    }

    /// Cut a just-received frame into its datagrams (a coalesced UDP GRO
    /// receive, `segs` from [`crate::gro::segments`] over its length):
    /// each pushed to `out` as a handle of its own over its range of the
    /// buffer, in order; the buffer goes back to the kernel when the last
    /// of them drops. `Err(self)`, untouched, if this is not the only
    /// handle, not a frame in a receive buffer, or the ranges are not
    /// disjoint, ascending and inside the frame.
    pub(crate) fn split(self, segs: Segments, out: &mut Vec<RxBuf>) -> Result<(), RxBuf> {
        let len = self.len();
        let mut end = 0;
        for r in segs.clone() {
            if r.start < end || r.start > r.end || r.end > len {
                return Err(self);
            }
            end = r.end;
        }
        if !matches!(&*self.0, RxInner::Ring(_)) || Arc::strong_count(&self.0) != 1 {
            return Err(self);
        }
        let whole = match Arc::try_unwrap(self.0) {
            Ok(RxInner::Ring(f)) => Arc::new(f),
            Ok(other) => return Err(RxBuf(Arc::new(other))),
            Err(shared) => return Err(RxBuf(shared)),
        };
        let base = whole.ptr.as_ptr();
        for r in segs {
            // `r.start ≤ len` (checked above): inside or one past the payload.
            let ptr = NonNull::new(base.wrapping_add(r.start)).unwrap_or(NonNull::dangling());
            out.push(RxBuf(Arc::new(RxInner::Part(PartFrame {
                whole: whole.clone(),
                ptr,
                len: r.len(),
            }))));
        }
        Ok(())
    }

    /// Whether the bytes lie in a pool slot.
    pub(crate) fn is_slot(&self) -> bool {
        matches!(&*self.0, RxInner::Slot(_))
    }

    /// A send reading this slot is being submitted: Owned → Queued on the
    /// first one, then one more pending send. No-op for other buffers.
    pub(crate) fn slot_begin_send(&self) -> Result<(), SlotError> {
        let RxInner::Slot(s) = &*self.0 else {
            return Ok(());
        };
        let mut pool = s.pool.lock();
        if pool.state(s.id)? == SlotState::Owned {
            pool.enqueue(s.id)?;
        }
        pool.begin_send(s.id)
    }

    /// A send of this slot is over (`zc`: its notification arrived).
    pub(crate) fn slot_send_done(&self, zc: bool) -> Result<Outcome, SlotError> {
        let RxInner::Slot(s) = &*self.0 else {
            return Ok(Outcome::Held);
        };
        let mut pool = s.pool.lock();
        if zc {
            pool.on_zc_notif(s.id)
        } else {
            pool.on_send_complete(s.id)
        }
    }
}

/// Reading a frame's bytes is sound because:
/// - a `Ring` frame's `ptr..ptr+len` lies in buffer `bid` of the mapping
///   (checked by `RxRing::take`), the mapping is alive (`_map`) and the
///   kernel does not write the buffer while the frame exists (see the
///   `Send`/`Sync` argument on `RingFrame`);
/// - a `Part` frame's `ptr..ptr+len` is a range of such a frame's payload
///   (checked by `RxBuf::split`), disjoint from every other part's; the
///   `RingFrame` it holds keeps the buffer from the kernel and the mapping
///   alive, and is never read as a whole once split;
/// - a `Slot` frame's `ptr..ptr+len` is its slot (checked in
///   `SlotAlloc::alloc` to lie inside the pool span of the mapping, which
///   `pool.map` keeps alive); the slot stays allocated while the handle
///   exists, and writes need the only handle and `&mut` (`unique_mut`), so
///   none happens during a shared borrow;
/// - an `External` frame's `ptr..ptr+len` is inside the owner's region
///   (checked by `RxBuf::external`), mapped and readable while `owner`
///   lives (the `ExternalRegion` contract). We never write it; another
///   process may, which Rust's model does not allow for a `&[u8]`: see
///   "Bytes another process writes" on [`RxBuf::external`] for why that
///   is accepted (the bytes are opaque payload; no safety decision reads
///   them).
impl AsRef<[u8]> for RxBuf {
    fn as_ref(&self) -> &[u8] {
        match &*self.0 {
            RxInner::Heap(b) => b,
            // SAFETY: a held provided buffer, not written by the kernel
            // while the frame exists (see this impl's doc).
            RxInner::Ring(f) => unsafe { std::slice::from_raw_parts(f.ptr.as_ptr(), f.len) },
            // SAFETY: a range of a held provided buffer, inside the payload
            // `RxBuf::split` cut it from; written only through the part's
            // only handle (see this impl's doc).
            RxInner::Part(p) => unsafe { std::slice::from_raw_parts(p.ptr.as_ptr(), p.len) },
            // SAFETY: an allocated pool slot, written only through the only
            // handle and `&mut` (see this impl's doc).
            RxInner::Slot(s) => unsafe { std::slice::from_raw_parts(s.ptr.as_ptr(), s.len) },
            // SAFETY: inside the owner's region, mapped while `owner` lives;
            // possibly written by another process meanwhile, accepted for
            // opaque payload bytes (see this impl's doc).
            RxInner::External(e) => unsafe {
                std::slice::from_raw_parts(e.ptr.as_ptr(), e.range.len())
            },
        }
    }
}

impl cpg_core::engine::FrameBuf for RxBuf {
    /// The bytes, writable, while this is the only handle: a zero-copy send
    /// buffer (the application writes its payload, the engine its headers)
    /// or a heap frame. Never for a receive buffer or an external range
    /// (memory the driver does not own and never writes).
    ///
    /// # Soundness
    /// `Arc::get_mut` succeeds only for the only handle; every send holds a
    /// clone until its last completion (the zero-copy notification for a
    /// `SendZc`), so no kernel read is in flight; the slot's memory is
    /// reachable only through handles of its current allocation (it is
    /// freed only when the last one drops); and the returned borrow is tied
    /// to `&mut self`.
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        match Arc::get_mut(&mut self.0)? {
            RxInner::Heap(b) => Arc::get_mut(b),
            RxInner::Ring(_) | RxInner::Part(_) | RxInner::External(_) => None,
            RxInner::Slot(s) => {
                // SAFETY: see "Soundness" above; the range is the slot's,
                // inside the live mapping.
                Some(unsafe { std::slice::from_raw_parts_mut(s.ptr.as_ptr(), s.len) })
            }
        }
    }

    /// An external range (a cpgd client's slot) holds only the payload: the
    /// engine builds every header in its own memory and sends the range by
    /// reference, so nothing the client can rewrite is a header.
    fn headers_inside(&self) -> bool {
        !matches!(&*self.0, RxInner::External(_))
    }
}

impl fmt::Debug for RxBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxBuf")
            .field("buffer_id", &self.buffer_id())
            .field("slot", &self.slot_id())
            .field("external", &self.is_external())
            .field("len", &self.len())
            .finish()
    }
}

/// One entry of a provided-buffer ring (`struct io_uring_buf`); entry 0's
/// `resv` is the ring's tail (`struct io_uring_buf_ring`).
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

/// What the kernel told us about one received datagram.
#[derive(Debug)]
pub(crate) struct RecvFrame {
    /// The datagram (possibly truncated: see `truncated`).
    pub frame: RxBuf,
    /// Source address (IPv4 or IPv6), if the kernel gave one.
    pub source: Option<SocketAddr>,
    /// The datagram did not fit the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// The `UDP_GRO` segment size of a coalesced receive, as the control
    /// data said (`crate::gro::gro_size`); `None` without one.
    pub gro: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BufState {
    /// In the kernel's ring: the kernel may write it at any time.
    Kernel,
    /// Taken out by a completion: user space reads it; re-provided only
    /// through the return queue.
    User,
}

/// The provided-buffer ring over the receive part of a [`Region`].
pub(crate) struct RxRing {
    /// The ring entries (`entries × 16` B, page aligned).
    ring: Mapping,
    map: Arc<Mapping>,
    rx_offset: usize,
    buf_size: usize,
    entries: u16,
    /// Next entry to write (published to the kernel by `publish`).
    tail: u16,
    state: Vec<BufState>,
    in_kernel: usize,
    returns: Arc<ReturnQueue>,
    scratch: Vec<u16>,
    dirty: bool,
}

impl fmt::Debug for RxRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxRing")
            .field("entries", &self.entries)
            .field("in_kernel", &self.in_kernel)
            .finish()
    }
}

impl RxRing {
    /// A ring over the receive buffers of `region`, every buffer provided.
    pub(crate) fn new(region: &Region) -> io::Result<RxRing> {
        let entries = u16::try_from(region.rx_count).map_err(|_| io::ErrorKind::InvalidInput)?;
        let ring = Mapping::new(usize::from(entries) * std::mem::size_of::<RawBuf>())?;
        let mut r = RxRing {
            ring,
            map: region.map.clone(),
            rx_offset: region.rx_offset(),
            buf_size: region.rx_size,
            entries,
            tail: 0,
            state: vec![BufState::User; usize::from(entries)],
            in_kernel: 0,
            returns: Arc::new(ReturnQueue::new(usize::from(entries))),
            scratch: Vec::with_capacity(usize::from(entries)),
            dirty: false,
        };
        for bid in 0..entries {
            r.provide(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Address of the ring entries, for `register_buf_ring`.
    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.base() as u64
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Buffers the kernel can receive into now.
    pub(crate) fn available(&self) -> usize {
        self.in_kernel
    }

    pub(crate) fn returns(&self) -> &Arc<ReturnQueue> {
        &self.returns
    }

    /// Put buffer `bid` (held by user space, no `RxBuf` left) at the tail.
    ///
    /// The entry write is sound: `idx < entries`, so the entry is inside the
    /// ring mapping (`entries × 16` B, 8-aligned); at most `entries` ids are
    /// ever in the ring (each id once, checked by `state`), so the kernel
    /// has consumed the entry at this position and does not read it until
    /// the tail is published past it. Fields are written through raw
    /// pointers, leaving entry 0's `resv` (the shared tail) untouched.
    fn provide(&mut self, bid: u16) {
        let Some(st) = self.state.get_mut(usize::from(bid)) else {
            return;
        };
        if *st == BufState::Kernel {
            return; // already in the ring: never twice (the ring would overflow)
        }
        *st = BufState::Kernel;
        self.in_kernel += 1;
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr =
            self.map.base() as u64 + (self.rx_offset + usize::from(bid) * self.buf_size) as u64;
        let entry = self.ring.base().cast::<RawBuf>().wrapping_add(idx);
        // SAFETY: an entry inside the ring mapping that the kernel consumed
        // and does not read before the next publish (see the doc above).
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(self.buf_size as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.dirty = true;
    }

    /// Make the entries written so far visible to the kernel.
    pub(crate) fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let tail = self
            .ring
            .base()
            .wrapping_add(std::mem::offset_of!(RawBuf, resv))
            .cast::<u16>();
        // Entry 0's `resv` is the ring's tail (`io_uring_buf_ring`), which
        // the kernel only reads (with acquire); Release orders the entry
        // writes in `provide` before it.
        // SAFETY: a naturally aligned u16 inside the live ring mapping;
        // AtomicU16 has u16's size and alignment.
        unsafe { AtomicU16::from_ptr(tail) }.store(self.tail, Ordering::Release);
    }

    /// Take buffer `bid` out of the kernel's hands after a receive
    /// completion of `res` bytes (the whole recvmsg-out block) and parse it.
    /// `None` for an id that was not in the ring or a malformed block (the
    /// buffer is then re-provided).
    pub(crate) fn take(
        &mut self,
        bid: u16,
        res: usize,
        msghdr: &libc::msghdr,
    ) -> Option<RecvFrame> {
        let st = self.state.get_mut(usize::from(bid))?;
        if *st != BufState::Kernel {
            return None;
        }
        *st = BufState::User;
        self.in_kernel -= 1;
        let off = self.rx_offset + usize::from(bid) * self.buf_size;
        let len = res.min(self.buf_size);
        let start = self.map.base().wrapping_add(off);
        // Buffer `bid` is User from here and is re-provided only after every
        // `RxBuf` over it is gone, so nothing writes it during this borrow.
        // SAFETY: `off..off+len` is inside the mapping, just filled by the
        // kernel (`res` bytes) and no longer the kernel's.
        let bytes = unsafe { std::slice::from_raw_parts(start, len) };
        let parsed = io_uring::types::RecvMsgOut::parse(bytes, msghdr);
        let Ok(out) = parsed else {
            self.provide(bid);
            return None;
        };
        let source = parse_sockaddr(out.name_data());
        let payload = out.payload_data();
        // Cut control data may have lost the UDP_GRO size of a coalesced
        // receive: taken as one datagram it would be misread, so it is
        // dropped as a truncated one (counted).
        let truncated = out.is_payload_truncated() || out.is_control_data_truncated();
        let gro = crate::gro::gro_size(out.control_data());
        // The frame's pointer is derived from the mapping's (which may be
        // written through: `open_in_place`), not from the shared `bytes`.
        let at = (payload.as_ptr() as usize).wrapping_sub(start as usize);
        let ptr = NonNull::new(start.wrapping_add(at)).unwrap_or(NonNull::dangling());
        let frame = RxBuf(Arc::new(RxInner::Ring(RingFrame {
            bid,
            ptr,
            len: payload.len(),
            _map: self.map.clone(),
            returns: self.returns.clone(),
        })));
        Some(RecvFrame {
            frame,
            source,
            truncated,
            gro,
        })
    }

    /// Re-provide every buffer whose last `RxBuf` dropped; returns how many.
    pub(crate) fn recycle(&mut self) -> usize {
        let mut ids = std::mem::take(&mut self.scratch);
        self.returns.drain_into(&mut ids);
        let n = ids.len();
        for bid in ids.drain(..) {
            self.provide(bid);
        }
        self.scratch = ids;
        self.publish();
        n
    }
}

/// A `sockaddr_in` or `sockaddr_in6` as the kernel wrote it (family in
/// native order, port and address in network order); `None` for another
/// family or a short name.
pub(crate) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    if family == libc::AF_INET {
        let a: [u8; 8] = b.get(..8)?.try_into().ok()?;
        let port = u16::from_be_bytes([a[2], a[3]]);
        return Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(a[4], a[5], a[6], a[7]),
            port,
        )));
    }
    if family != libc::AF_INET6 {
        return None;
    }
    // family 2 | port 2 | flowinfo 4 | address 16 | scope id 4
    let a: [u8; 28] = b.get(..28)?.try_into().ok()?;
    let port = u16::from_be_bytes([a[2], a[3]]);
    let flow = u32::from_be_bytes([a[4], a[5], a[6], a[7]]);
    let ip: [u8; 16] = a[8..24].try_into().ok()?;
    let scope = u32::from_ne_bytes([a[24], a[25], a[26], a[27]]);
    Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(ip),
        port,
        flow,
        scope,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpg_core::pool::ClassSpec;

    fn region() -> Region {
        let cfg = PoolConfig::new(64, &[ClassSpec::new(512, 4), ClassSpec::new(4096, 2)]).unwrap();
        Region::new(&cfg, 4, 2048).unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore)] // mmap
    fn slot_handle_life() {
        use cpg_core::engine::FrameBuf;
        let r = region();
        let a = r.slots().clone();
        let mut b = a.alloc(100).unwrap();
        let id = b.slot_id().unwrap();
        assert_eq!(b.len(), 512);
        b.unique_mut().unwrap()[64..68].copy_from_slice(b"abcd");
        assert_eq!(&b.as_ref()[64..68], b"abcd");
        let mut c = b.clone();
        assert!(c.unique_mut().is_none(), "two handles: not writable");
        // A send: Owned → Queued → InFlight { 1 }.
        c.slot_begin_send().unwrap();
        assert_eq!(a.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        drop(b); // the engine is done: not freed while the send holds `c`
        assert_eq!(a.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        assert_eq!(c.slot_send_done(true), Ok(Outcome::Held));
        drop(c); // the send's clone goes: now stable and free
        assert_eq!(a.state(id), Err(SlotError::StaleSlot));
        assert_eq!(a.stats().in_use(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn unsent_slot_handles_return_to_the_pool() {
        let r = region();
        let a = r.slots();
        let big = a.alloc(4000).unwrap();
        assert_eq!(big.len(), 4096);
        let small = a.alloc(1).unwrap();
        assert_eq!(a.stats().in_use(), 2);
        drop(big);
        drop(small);
        assert_eq!(a.stats().in_use(), 0);
        assert!(matches!(a.alloc(5000), Err(AllocError::TooBig { .. })));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn tx_source_ranges_checked() {
        let r = region();
        let b = r.slots().alloc(10).unwrap();
        assert!(TxSource::buf(b.clone(), 0..513).is_none());
        let s = TxSource::gather(Arc::from(&b"hd"[..]), b, 64..74).unwrap();
        assert_eq!(s.len(), 12);
        assert!(s.slot_buf().is_some());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn iovecs_cover_pool_then_rx() {
        let r = region();
        let [a, b] = r.iovecs();
        assert_eq!(a.iov_base as usize % page_size(), 0);
        assert!(a.iov_len >= 4 * 512 + 2 * 4096);
        assert_eq!(a.iov_base as usize + a.iov_len, b.iov_base as usize);
        assert!(b.iov_len >= 4 * 2048);
        assert_eq!(a.iov_len + b.iov_len, r.len());
    }

    #[test]
    fn rx_shape_validated() {
        let cfg = PoolConfig::new(64, &[ClassSpec::new(512, 4)]).unwrap();
        assert!(matches!(
            Region::new(&cfg, 3, 2048),
            Err(RegionError::RxShape { .. })
        ));
        assert!(matches!(
            Region::new(&cfg, 4, 100),
            Err(RegionError::RxShape { .. })
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn rx_ring_take_and_return() {
        let r = region();
        let mut ring = RxRing::new(&r).unwrap();
        assert_eq!(ring.available(), 4);
        // Fake a completion: write a recvmsg-out block into buffer 2.
        let mut name = [0u8; 16];
        name[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        name[2..4].copy_from_slice(&5405u16.to_be_bytes());
        name[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let mut block = Vec::new();
        block.extend_from_slice(&16u32.to_ne_bytes()); // namelen
        block.extend_from_slice(&0u32.to_ne_bytes()); // controllen
        block.extend_from_slice(&5u32.to_ne_bytes()); // payloadlen
        block.extend_from_slice(&0u32.to_ne_bytes()); // flags
        block.extend_from_slice(&name);
        block.extend_from_slice(b"hello");
        let off = r.rx_offset() + 2 * r.rx_size();
        // SAFETY: (test) buffer 2 is inside the mapping and nothing else
        // (no kernel ring registered) touches it.
        unsafe {
            std::ptr::copy_nonoverlapping(block.as_ptr(), r.mapping().base().add(off), block.len())
        };
        // SAFETY: (test) an all-zero msghdr is a valid value.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_namelen = 16;
        let f = ring.take(2, block.len(), &mh).unwrap();
        assert_eq!(f.frame.as_ref(), b"hello");
        assert_eq!(f.source, Some("127.0.0.1:5405".parse().unwrap()));
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&5405u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse_sockaddr(&v6), Some("[fd00::1]:5405".parse().unwrap()));
        assert_eq!(parse_sockaddr(&v6[..27]), None, "short sockaddr_in6");
        assert_eq!(parse_sockaddr(&name[..7]), None, "short sockaddr_in");
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(f.frame.buffer_id(), Some(2));
        assert_eq!(ring.available(), 3);
        assert!(ring.take(2, block.len(), &mh).is_none(), "taken twice");
        let clone = f.frame.clone();
        drop(f);
        assert_eq!(ring.recycle(), 0, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(ring.recycle(), 1);
        assert_eq!(ring.available(), 4);
        assert_eq!(ring.tail, 5);
    }

    /// A coalesced receive (a `UDP_GRO` cmsg in its control data) is cut
    /// into parts over the one buffer; each opens in place alone; the
    /// buffer goes back only when the last part drops.
    #[test]
    #[cfg_attr(miri, ignore)]
    #[allow(unsafe_code)]
    fn rx_ring_gro_receive_splits_and_returns_after_the_last_part() {
        let cfg = PoolConfig::new(64, &[ClassSpec::new(512, 4)]).unwrap();
        let r = Region::new(&cfg, 4, 4096).unwrap();
        let mut ring = RxRing::new(&r).unwrap();
        let ctl = crate::gro::GRO_CONTROL_SPACE;
        let mut name = [0u8; 28];
        name[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        name[2..4].copy_from_slice(&5405u16.to_be_bytes());
        name[4..8].copy_from_slice(&[127, 0, 0, 1]);
        // SAFETY: (test) an all-zero cmsghdr is a valid value.
        let mut h: libc::cmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: pure arithmetic.
        h.cmsg_len = unsafe { libc::CMSG_LEN(4) } as _;
        h.cmsg_level = libc::SOL_UDP;
        h.cmsg_type = libc::UDP_GRO;
        let mut control = vec![0u8; ctl];
        // SAFETY: (test) `control` holds CMSG_SPACE(4) ≥ a cmsghdr.
        unsafe { std::ptr::write_unaligned(control.as_mut_ptr().cast::<libc::cmsghdr>(), h) };
        let data = std::mem::size_of::<libc::cmsghdr>();
        control[data..data + 4].copy_from_slice(&100i32.to_ne_bytes());
        // three datagrams: 100, 100 and 50 bytes of 1, 2 and 3
        let payload: Vec<u8> = [1u8, 2, 3]
            .iter()
            .flat_map(|&x| vec![x; if x == 3 { 50 } else { 100 }])
            .collect();
        let mut block = Vec::new();
        block.extend_from_slice(&28u32.to_ne_bytes()); // namelen
        block.extend_from_slice(&(ctl as u32).to_ne_bytes()); // controllen
        block.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        block.extend_from_slice(&0u32.to_ne_bytes()); // flags
        block.extend_from_slice(&name);
        block.extend_from_slice(&control);
        block.extend_from_slice(&payload);
        let off = r.rx_offset() + r.rx_size();
        // SAFETY: (test) buffer 1 is inside the mapping and nothing else
        // (no kernel ring registered) touches it.
        unsafe {
            std::ptr::copy_nonoverlapping(block.as_ptr(), r.mapping().base().add(off), block.len())
        };
        // SAFETY: (test) an all-zero msghdr is a valid value.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_namelen = 28;
        mh.msg_controllen = ctl as _;
        let f = ring.take(1, block.len(), &mh).unwrap();
        assert_eq!((f.gro, f.frame.len(), f.truncated), (Some(100), 250, false));
        // a second handle: not split, handed back untouched
        let extra = f.frame.clone();
        let segs = crate::gro::segments(f.frame.len(), f.gro);
        let mut parts = Vec::new();
        let frame = f.frame.split(segs.clone(), &mut parts).unwrap_err();
        assert!(parts.is_empty());
        drop(extra);
        frame.split(segs, &mut parts).unwrap();
        let lens: Vec<_> = parts.iter().map(RxBuf::len).collect();
        assert_eq!(lens, [100, 100, 50]);
        for (p, x) in parts.iter().zip([1u8, 2, 3]) {
            assert!(p.as_ref().iter().all(|&b| b == x));
            assert_eq!(p.buffer_id(), Some(1));
        }
        // opened in place, each its own range: the second shortened
        let opened = parts[1].open_in_place(|b| {
            b[0] = 9;
            Ok::<_, ()>(10)
        });
        assert_eq!(opened, Some(Ok(())));
        assert_eq!(parts[1].as_ref(), &[9, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert!(
            parts[0].as_ref().iter().all(|&b| b == 1),
            "neighbours untouched"
        );
        assert!(parts[2].as_ref().iter().all(|&b| b == 3));
        let held = parts[2].clone();
        assert!(held
            .clone()
            .split(crate::gro::segments(50, None), &mut Vec::new())
            .is_err());
        assert_eq!(ring.available(), 3);
        drop(parts);
        assert_eq!(ring.recycle(), 0, "one part is still held");
        drop(held);
        assert_eq!(ring.recycle(), 1);
        assert_eq!(ring.available(), 4);
    }

    /// A heap-backed external region that logs its releases.
    struct Ext {
        bytes: Box<[u8]>,
        released: Mutex<Vec<Range<usize>>>,
    }

    // SAFETY: (test) the box is neither moved, resized nor freed while
    // `Ext` lives, so `base()`/`len()` are stable and readable.
    unsafe impl ExternalRegion for Ext {
        fn base(&self) -> NonNull<u8> {
            NonNull::from(&*self.bytes).cast()
        }
        fn len(&self) -> usize {
            self.bytes.len()
        }
        fn release(&self, range: Range<usize>) {
            lock(&self.released).push(range);
        }
    }

    #[test]
    fn external_range_checked_read_only_and_released_once() {
        use cpg_core::engine::FrameBuf;
        let ext = Arc::new(Ext {
            bytes: (0..64u8).collect::<Vec<_>>().into(),
            released: Mutex::new(Vec::new()),
        });
        let owner: Arc<dyn ExternalRegion> = ext.clone();
        assert_eq!(
            RxBuf::external(owner.clone(), 60..65).err(),
            Some(ExternalError::BadRange {
                start: 60,
                end: 65,
                len: 64
            })
        );
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 9..8;
        assert!(RxBuf::external(owner.clone(), reversed).is_err());
        let mut b = RxBuf::external(owner, 8..16).unwrap();
        assert!(b.is_external() && !b.is_slot());
        assert_eq!(b.as_ref(), &[8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(b.len(), 8);
        assert!(b.unique_mut().is_none(), "never writable, even unique");
        assert!(b.open_in_place(|_| Ok::<_, ()>(0)).is_none());
        // A send's view: pointer and length, no reference; ranges checked.
        let (p, n) = b.raw_range(2..6).unwrap();
        assert_eq!((p as usize - ext.bytes.as_ptr() as usize, n), (10, 4));
        assert!(b.raw_range(2..9).is_none());
        let src = TxSource::gather(Arc::from(&b"hd"[..]), b.clone(), 0..8).unwrap();
        assert!(src.is_external() && src.slot_buf().is_none());
        assert_eq!(src.len(), 10);
        assert_eq!(src.raw_segments()[1].0, ext.bytes[8..].as_ptr());
        let c = b.clone();
        drop(b);
        drop(src);
        assert!(lock(&ext.released).is_empty(), "a clone is left");
        drop(c);
        assert_eq!(*lock(&ext.released), vec![8..16]);
        assert_eq!(
            Arc::strong_count(&ext),
            1,
            "the handles gave the owner back"
        );
    }

    #[test]
    fn rxbuf_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + AsRef<[u8]>>() {}
        check::<RxBuf>();
        let b = RxBuf::from_heap(Arc::from(&b"xy"[..]));
        assert_eq!(b.as_ref(), b"xy");
        assert_eq!(b.buffer_id(), None);
    }
}

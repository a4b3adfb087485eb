//! Memory the driver does not own, sent from without a user-space copy:
//! cpgd's client regions (a client's memfd, mapped `MAP_SHARED`), where
//! the client writes its payloads.
//!
//! # What it owns
//!
//! - [`ExternalRegion`]: the contract the owner of such memory (cpgd's
//!   mapping of one connection) implements: where the memory is, and a
//!   hook called when the last [`crate::RxBuf`] over a range of it drops.
//! - [`ExternalRegions`]: a `Clone + Send + Sync` handle that asks the
//!   driver's thread (which owns the `IoUring`) to register a region as a
//!   fixed buffer (index ≥ 2 of a sparse table) or to take it out again.
//!   Requests queue here and wake the loop ([`crate::Waker`]); the loop
//!   applies them between batches. A region is usable at once: until its
//!   registration is applied, or when it fails, its bytes go by the
//!   non-fixed paths (`SendZc` without a buffer index, `SendMsgZc`, or a
//!   plain `Send` where the zero-copy policy says no), still without a
//!   user-space copy, and `Counters::external_register_failures` says so.
//!
//! # What it must not do
//!
//! Touch the ring or the memory: `ring.rs` registers, `bufs.rs` reads.
//!
//! # Concurrent writers
//!
//! The memory may be written at any time by another process (the client,
//! which cpgd does not trust). The send paths never form a Rust reference
//! to it: the kernel gets a pointer and a length (and reads or pins the
//! pages itself). See [`crate::RxBuf::external`] for the one place a
//! `&[u8]` over it exists (the engine's `AsRef<[u8]>`) and why that is
//! accepted.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::bufs::lock;
use crate::waker::Waker;

/// The largest region the kernel registers as one fixed buffer (1 GiB):
/// [`ExternalRegions::add`] refuses a larger one.
pub const EXTERNAL_REGION_MAX: usize = 1 << 30;

/// Memory owned outside the driver that frames are sent from
/// ([`crate::RxBuf::external`]): cpgd implements it for its mapping of a
/// client connection's memfd.
///
/// The driver reads the memory through `base()` and `len()` only (a
/// pointer for the kernel), never writes it, and keeps an `Arc` of the
/// region for as long as any send or registration may read it: the owner
/// unmaps in its `Drop`, which runs after the last `Arc` is gone.
///
/// # Safety
///
/// An implementation promises that, from the first call of `base()` until
/// the object is dropped:
/// - `base()` and `len()` always return the same values;
/// - `base()..base()+len()` is mapped and readable in this process (it may
///   be written concurrently, by this or another process: the driver and
///   the kernel only copy or pin those bytes, they never trust them);
/// - `len()` is at most `isize::MAX`.
///
/// `release` must not panic (it runs inside a `Drop`) and must not block
/// on the driver's thread (it may run on it).
#[allow(unsafe_code)] // declaring the contract; no unsafe code here
pub unsafe trait ExternalRegion: Send + Sync {
    /// The first byte.
    fn base(&self) -> NonNull<u8>;
    /// Bytes in the region.
    fn len(&self) -> usize;
    /// Whether the region has no bytes (one can be neither registered nor sent from).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The last [`crate::RxBuf`] made over `range` by
    /// [`crate::RxBuf::external`] was dropped: neither the engine nor any
    /// send (a `SendZc` included, whose zero-copy notification has then
    /// arrived) reads it any more. Called exactly once per such buffer, on
    /// whichever thread dropped the last clone (the driver's, after a
    /// completion, or the engine's or an application's). One exception: a
    /// driver dropped while the kernel does not answer its cancellations
    /// leaks whatever the kernel may still read, so the hook of a buffer
    /// such a send held never runs (the memory stays mapped, as it must).
    fn release(&self, range: Range<usize>);
}

/// The name of a region added with [`ExternalRegions::add`]; never reused
/// within one driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub(crate) u64);

impl RegionId {
    /// The raw value (diagnostics).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a region is not a fixed buffer (it is still sent from, by the
/// non-fixed paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFixed {
    /// The driver has no sparse buffer table: `TransportConfig::external_fixed_max`
    /// is 0, or the kernel refused the sparse registration at start.
    NoTable,
    /// Every external entry of the table is taken.
    TableFull,
    /// Its memory overlaps a region registered already (the same mapping
    /// added twice, say).
    Overlaps,
    /// The kernel refused the registration with this errno (ENOMEM / EPERM:
    /// RLIMIT_MEMLOCK without CAP_IPC_LOCK; EFAULT: memory it cannot pin
    /// for writing, e.g. a read-only mapping; EOPNOTSUPP: file-backed
    /// memory other than shmem or hugetlbfs).
    Refused(i32),
    /// The driver runs on plain syscalls: no io_uring, no fixed buffers.
    Syscalls,
}

impl fmt::Display for NotFixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotFixed::NoTable => write!(f, "no sparse fixed-buffer table"),
            NotFixed::TableFull => write!(f, "the fixed-buffer table is full"),
            NotFixed::Overlaps => write!(f, "overlaps a registered region"),
            NotFixed::Refused(e) => write!(
                f,
                "registration refused ({})",
                std::io::Error::from_raw_os_error(*e)
            ),
            NotFixed::Syscalls => write!(f, "plain-syscall transport"),
        }
    }
}

/// Where a region stands ([`ExternalRegions::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionStatus {
    /// Added; the driver has not applied the registration yet (its bytes
    /// are sent from by the non-fixed paths meanwhile).
    Pending,
    /// Registered as fixed buffer `buf_index` (≥ 2).
    Fixed {
        /// The index sends name.
        buf_index: u16,
    },
    /// Not registered; sent from by the non-fixed paths.
    NotFixed(NotFixed),
    /// Removal asked for; new sends no longer name its buffer index, and
    /// the entry goes once the sends that do have completed (their
    /// zero-copy notifications included).
    Removing,
}

/// Why [`ExternalRegions::add`] or [`ExternalRegions::remove`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalError {
    /// An empty region, or one over [`EXTERNAL_REGION_MAX`] bytes.
    BadLength(usize),
    /// No region by that id (never added, or removed).
    UnknownRegion(RegionId),
    /// The driver is gone: nothing is registered any more.
    Closed,
    /// [`crate::RxBuf::external`]: `start..end` is not inside a region of `len` bytes.
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// The region's length.
        len: usize,
    },
}

impl fmt::Display for ExternalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalError::BadLength(n) => write!(
                f,
                "external region of {n} B: must be 1..={EXTERNAL_REGION_MAX} B"
            ),
            ExternalError::UnknownRegion(id) => write!(f, "no external region {}", id.0),
            ExternalError::Closed => write!(f, "the driver is gone"),
            ExternalError::BadRange { start, end, len } => write!(
                f,
                "range {start}..{end} is not inside the external region of {len} B"
            ),
        }
    }
}

impl std::error::Error for ExternalError {}

/// A request for the driver's thread.
pub(crate) enum Command {
    Add(RegionId, Arc<dyn ExternalRegion>),
    Remove(RegionId),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Add(id, r) => write!(f, "Add({}, {} B)", id.0, r.len()),
            Command::Remove(id) => write!(f, "Remove({})", id.0),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The driver is gone ([`ExternalRegions::close`]).
    closed: bool,
    next_id: u64,
    commands: Vec<Command>,
    status: HashMap<RegionId, RegionStatus>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Commands are queued (checked by the loop without the lock).
    queued: AtomicBool,
    waker: Waker,
}

/// Adds and removes [`ExternalRegion`]s on a driver: `Clone + Send + Sync`,
/// from `Driver::external_regions` (cpg-std: `Node::external_regions`).
///
/// Both calls return at once; the driver's thread applies them between
/// batches (woken through its [`Waker`]), or at the start of its next run
/// if it is not running.
#[derive(Debug, Clone)]
pub struct ExternalRegions(Arc<Shared>);

impl ExternalRegions {
    pub(crate) fn new(waker: Waker) -> ExternalRegions {
        ExternalRegions(Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            queued: AtomicBool::new(false),
            waker,
        }))
    }

    /// Add `region`: the driver registers it as a fixed buffer if it can
    /// (see [`RegionStatus`]). Frames in it ([`crate::RxBuf::external`])
    /// may be sent at once, whatever the outcome.
    ///
    /// # Errors
    /// [`ExternalError::BadLength`] for an empty region or one over
    /// [`EXTERNAL_REGION_MAX`]; [`ExternalError::Closed`] once the driver
    /// is dropped.
    pub fn add(&self, region: Arc<dyn ExternalRegion>) -> Result<RegionId, ExternalError> {
        let len = region.len();
        if len == 0 || len > EXTERNAL_REGION_MAX {
            return Err(ExternalError::BadLength(len));
        }
        let mut s = lock(&self.0.state);
        if s.closed {
            return Err(ExternalError::Closed);
        }
        let id = RegionId(s.next_id);
        s.next_id += 1;
        s.status.insert(id, RegionStatus::Pending);
        s.commands.push(Command::Add(id, region));
        self.0.queued.store(true, Ordering::Release);
        drop(s);
        self.0.waker.wake();
        Ok(id)
    }

    /// Take region `id` out of the table. Sends that name its buffer index
    /// keep it registered (and the driver keeps its `Arc`) until their last
    /// completion; [`ExternalRegions::status`] is then `None`.
    ///
    /// # Errors
    /// [`ExternalError::UnknownRegion`] if `id` is not added or already
    /// being removed.
    pub fn remove(&self, id: RegionId) -> Result<(), ExternalError> {
        let mut s = lock(&self.0.state);
        match s.status.get_mut(&id) {
            Some(st) if *st != RegionStatus::Removing => *st = RegionStatus::Removing,
            _ => return Err(ExternalError::UnknownRegion(id)),
        }
        s.commands.push(Command::Remove(id));
        self.0.queued.store(true, Ordering::Release);
        drop(s);
        self.0.waker.wake();
        Ok(())
    }

    /// Where region `id` stands; `None` once removed (or never added, or
    /// the driver is gone).
    pub fn status(&self, id: RegionId) -> Option<RegionStatus> {
        lock(&self.0.state).status.get(&id).copied()
    }

    /// Regions added and not yet gone (pending, fixed, not fixed, removing).
    pub fn count(&self) -> usize {
        lock(&self.0.state).status.len()
    }

    /// Take the queued commands (the driver's thread).
    pub(crate) fn take_commands(&self, out: &mut Vec<Command>) {
        // A load first: the loop asks on every batch, and a swap would
        // take the cache line from the threads that queue.
        if !self.0.queued.load(Ordering::Acquire) || !self.0.queued.swap(false, Ordering::AcqRel) {
            return;
        }
        out.append(&mut lock(&self.0.state).commands);
    }

    /// Record the outcome of an add (the driver's thread). A removal asked
    /// for meanwhile keeps its `Removing`.
    pub(crate) fn set_status(&self, id: RegionId, st: RegionStatus) {
        let mut s = lock(&self.0.state);
        if let Some(cur) = s.status.get_mut(&id) {
            if *cur != RegionStatus::Removing {
                *cur = st;
            }
        }
    }

    /// Region `id` is gone from the driver.
    pub(crate) fn forget(&self, id: RegionId) {
        lock(&self.0.state).status.remove(&id);
    }

    /// The driver is being dropped: refuse new requests, drop the queued
    /// ones (and the regions they hold), forget every status.
    pub(crate) fn close(&self) {
        let mut s = lock(&self.0.state);
        s.closed = true;
        let cmds = std::mem::take(&mut s.commands);
        s.status.clear();
        drop(s);
        // Release hooks and owners' `Drop`s run outside the lock.
        drop(cmds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Heap(Box<[u8]>);

    #[allow(unsafe_code)]
    // SAFETY: (test) the box is neither moved nor freed while `Heap` lives.
    unsafe impl ExternalRegion for Heap {
        fn base(&self) -> NonNull<u8> {
            NonNull::from(&*self.0).cast()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn release(&self, _: Range<usize>) {}
    }

    #[test]
    #[cfg_attr(miri, ignore)] // eventfd
    fn add_remove_and_status() {
        let x = ExternalRegions::new(Waker::new().unwrap());
        assert_eq!(
            x.add(Arc::new(Heap(Box::new([])))),
            Err(ExternalError::BadLength(0))
        );
        let a = x.add(Arc::new(Heap(vec![0; 64].into()))).unwrap();
        let b = x.add(Arc::new(Heap(vec![0; 64].into()))).unwrap();
        assert_ne!(a, b);
        assert_eq!(x.status(a), Some(RegionStatus::Pending));
        x.remove(a).unwrap();
        assert_eq!(x.status(a), Some(RegionStatus::Removing));
        assert_eq!(x.remove(a), Err(ExternalError::UnknownRegion(a)));
        // The driver's view: commands in order; an add's outcome does not
        // undo a removal asked for meanwhile.
        let mut cmds = Vec::new();
        x.take_commands(&mut cmds);
        assert_eq!(cmds.len(), 3);
        assert!(matches!(cmds[2], Command::Remove(id) if id == a));
        x.set_status(a, RegionStatus::Fixed { buf_index: 2 });
        assert_eq!(x.status(a), Some(RegionStatus::Removing));
        x.set_status(b, RegionStatus::NotFixed(NotFixed::TableFull));
        assert_eq!(
            x.status(b),
            Some(RegionStatus::NotFixed(NotFixed::TableFull))
        );
        x.forget(a);
        assert_eq!((x.status(a), x.count()), (None, 1));
        cmds.clear();
        x.take_commands(&mut cmds);
        assert!(cmds.is_empty());
    }
}

//! The node's shared state: one engine, the handle table, and the routing
//! of engine events to handles. No protocol logic: the engine decides
//! everything about groups and order; this module keeps Corosync's
//! per-connection view (one group per handle, its join state) and the
//! per-handle event queues.
//!
//! Locking: one mutex (the node lock) over the engine and the handle
//! table. Each handle also has two small locks of its own, so the hot paths
//! do not wait for the node lock:
//! - its staging area ([`HandleFast`]): multicasts (copied small messages,
//!   zcb buffers) queue there in order; the node lock's holder drains them
//!   into the engine before anything else;
//! - its mailbox ([`Mailbox`]): the delivery queue, a condvar for blocking
//!   dispatch and an eventfd (readable while events are pending, or once
//!   the handle is gone); the transport pushes, dispatchers pop.
//! Lock order: node lock, then a handle's staging or mailbox lock; never
//! the other way. Callbacks run with no lock held (a callback may
//! multicast, query or finalize).
//!
//! A transport drives the engine through [`NodeCore`]: packets and timer
//! expiries in, transmits out. Application calls submit to the engine
//! under the node lock and wake the transport so it sends what they queued.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use cpg_core::engine::{Engine, EngineOptions, Event, FrameBuf, Payload, Request, Transmit};
use cpg_core::group::LocalState;
use cpg_core::{CsError, GroupName, Guarantee, Instant, MemberAddr, NodeId, Reason, RingId};
use rustix::event::EventfdFlags;

use crate::cpg::{
    ConfChg, Context, Cpg, Delivery, DispatchFlags, IterationDescription, IterationType, ModelV1,
    ZcBuf, ZcSendError, ZcStorage,
};
use crate::state::RingSeqStore;

/// CLOCK_MONOTONIC as an engine instant: the clock every transport uses
/// (the io_uring driver arms absolute timeouts on it).
pub fn monotonic_now() -> Instant {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Instant(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// One transmit that read from a driver buffer (a zero-copy buffer): the
/// buffer's address and length, and the bytes the send reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufSend {
    /// Start address of the whole buffer.
    pub buf_addr: usize,
    /// Length of the whole buffer.
    pub buf_len: usize,
    /// Address of the bytes read from it.
    pub read_addr: usize,
    /// How many.
    pub read_len: usize,
}

/// Most events one dispatch moves out of a handle's queue under one lock.
const DISPATCH_BATCH: usize = 256;

/// Fixed cost charged per queued event on top of its payload bytes.
const EVENT_OVERHEAD: usize = 128;

/// Allocates zero-copy buffers of the node's frame type.
pub trait ZcAllocator<F>: Send + Sync {
    /// A buffer with `len` payload bytes at `offset` (≥ `ZC_HEADROOM`),
    /// headroom in front of it.
    ///
    /// # Errors
    /// `TOO_BIG` above [`ZcAllocator::max_len`]; `TRY_AGAIN` when exhausted.
    fn alloc(&self, len: usize) -> Result<(F, usize), CsError>;
    /// Largest payload.
    fn max_len(&self) -> usize;
}

/// Zero-copy buffers on the heap (`Arc<[u8]>`), for the loopback transport.
#[derive(Debug, Clone, Copy)]
pub struct HeapZc {
    /// Largest payload.
    pub max: usize,
}

impl ZcAllocator<Arc<[u8]>> for HeapZc {
    fn alloc(&self, len: usize) -> Result<(Arc<[u8]>, usize), CsError> {
        if len > self.max {
            return Err(CsError::TooBig);
        }
        let h = cpg_core::limits::ZC_HEADROOM;
        Ok((Arc::from(vec![0u8; h + len]), h))
    }
    fn max_len(&self) -> usize {
        self.max
    }
}

/// A zero-copy buffer below `zc_copy_threshold`: on the heap, since its
/// message is copied into a packed frame anyway.
struct SmallZc(Vec<u8>);

impl ZcStorage for SmallZc {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
    fn is_small(&self) -> bool {
        true
    }
}

struct ZcFrame<F> {
    buf: F,
    start: usize,
    len: usize,
}

impl<F: FrameBuf + Send + Sync + 'static> ZcStorage for ZcFrame<F> {
    fn bytes(&self) -> &[u8] {
        &self.buf.as_ref()[self.start..self.start + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (s, l) = (self.start, self.len);
        // A ZcBuf never clones its buffer, so it is the only handle.
        &mut self
            .buf
            .unique_mut()
            .expect("a ZcBuf is the only handle to its buffer")[s..s + l]
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Largest message that takes the staged send path (bigger ones go to the
/// engine directly: one copy, and few of them per second anyway).
const STAGE_MSG_MAX: usize = 16 * 1024;
/// Bytes a handle may have staged before `mcast` answers TRY_AGAIN.
const STAGE_BYTES: usize = 256 * 1024;

/// Most zero-copy buffers one handle may have staged.
const STAGE_ZC_MAX: usize = 64;

/// A zero-copy message staged on a handle (see [`FastState::zc`]).
struct StagedZc {
    before: usize,
    guarantee: Guarantee,
    /// A `ZcFrame` of the node's frame type.
    storage: Box<dyn ZcStorage>,
    len: usize,
}

impl FastState {
    /// Nothing staged.
    fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.zc.is_empty()
    }
}

/// The part of a handle a multicast touches without the node lock.
///
/// `mcast_joined` of a small message (or `zcb_mcast_joined` of a buffer,
/// which moves, not its bytes) appends it to the handle's staging area
/// under this handle's own short lock and wakes the transport; the
/// transport's next step (and every operation under the node lock) moves
/// staged messages into the engine in order ("drain") before anything
/// else, so a staged message is ordered exactly as if it had been
/// submitted directly. `open` and `blocked` mirror the handle's state and
/// the engine's flow control; the node lock refreshes them after every
/// operation, and closes `open` (after a drain) before a handle is evicted,
/// finalized or stopped, so a message accepted here is never dropped.
#[derive(Default)]
pub(crate) struct HandleFast {
    st: Mutex<FastState>,
}

#[derive(Default)]
struct FastState {
    /// Staging allowed: joined (or joining), not evicted, node running.
    open: bool,
    /// TRY_AGAIN: engine flow control or handle back-pressure.
    blocked: bool,
    /// Back-pressure budget left (half the queue cap minus the handle's
    /// queued events and undelivered multicasts) for staged messages, each
    /// counted as `EVENT_OVERHEAD` + its length.
    room: usize,
    /// The engine's `max_message_size`.
    max_len: usize,
    /// The handle's pid and group while `open`.
    pid: u32,
    group: Option<Arc<GroupName>>,
    /// Staged messages: guarantee and end offset in `data`; the first
    /// starts at `head` (drained bytes are not shifted out at every drain).
    msgs: VecDeque<(Guarantee, usize)>,
    data: Vec<u8>,
    head: usize,
    /// Staged zero-copy buffers, each after the first `before` entries of
    /// `msgs` (FIFO with them): the buffer travels, its bytes are not copied.
    zc: VecDeque<StagedZc>,
    /// Sum of the staged zero-copy messages' lengths.
    zc_bytes: usize,
    /// Small zero-copy buffers whose messages went: reused by `zcb_alloc`.
    /// (Boxed: a `ZcBuf` holds it as `Box<dyn ZcStorage>` without a new
    /// allocation.)
    #[allow(clippy::vec_box)]
    spare: Vec<Box<SmallZc>>,
}

/// Most small zero-copy buffers a handle keeps for reuse.
const SPARE_SMALL_ZC: usize = 64;

/// What a handle's queue holds.
enum HEvent<F> {
    Deliver {
        group: Arc<GroupName>,
        sender: MemberAddr,
        guarantee: Guarantee,
        payload: Payload<F>,
    },
    ConfChg(Arc<ConfChgData>),
    Totem(Arc<(RingId, Vec<NodeId>)>),
}

struct ConfChgData {
    group: GroupName,
    members: Vec<MemberAddr>,
    left: Vec<(MemberAddr, Reason)>,
    joined: Vec<(MemberAddr, Reason)>,
}

impl<F> HEvent<F> {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                HEvent::Deliver { payload, .. } => payload.range.len(),
                HEvent::ConfChg(c) => 8 * (c.members.len() + c.left.len() + c.joined.len()),
                HEvent::Totem(t) => 4 * t.1.len(),
            }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HState {
    JoinStarted,
    Joined,
    /// Leave requested; `joined` once the own join was delivered (a leave
    /// may be requested before: it is ordered after the join).
    LeaveStarted {
        joined: bool,
    },
}

struct HandleState<F> {
    pid: u32,
    flags: u32,
    wants_totem: bool,
    callbacks: Arc<Mutex<ModelV1>>,
    context: Context,
    group: Option<(GroupName, HState)>,
    /// The delivery queue, under its own lock (see [`Mailbox`]).
    mail: Arc<Mailbox<F>>,
    /// Events routed during the current pump, moved into `mail` under one
    /// lock at its end (not one lock per delivered message).
    outbox: Vec<HEvent<F>>,
    evicted: bool,
    /// Bytes (event cost) of this handle's accepted multicasts not yet
    /// delivered back to it: with `bytes`, what back-pressure looks at.
    inflight: usize,
    /// The name of the group last joined (set with `group` at join), shared
    /// by this handle's queued deliveries and its staging area.
    group_arc: Option<Arc<GroupName>>,
    /// Set once the handle is finalized, evicted or its node stopped: a
    /// dispatcher checks it between callbacks without taking the lock.
    gone: Arc<AtomicBool>,
    /// The staged send path (see [`HandleFast`]).
    fast: Arc<HandleFast>,
}

/// A handle's delivery queue under its own lock: the transport pushes
/// (under the node lock too), dispatchers pop and wait without the node
/// lock, so a dispatching thread never makes the transport wait for it nor
/// the transport a dispatcher (perf, 1 member 64 B: a quarter of the
/// transport thread's time went to futex waits on the node lock).
struct Mailbox<F> {
    st: Mutex<MailState<F>>,
    /// Dispatchers in BLOCKING/ONE wait here.
    cond: Condvar,
    /// `st.bytes`, readable without the lock (back-pressure checks).
    bytes: AtomicUsize,
    /// Events were pushed since the last `kick`: the fd and waiting
    /// dispatchers are signalled once per transport step, not per event, so
    /// a dispatcher wakes to a batch.
    dirty: AtomicBool,
    /// The handle's fd: readable while the queue is not empty (or closed).
    fd: Arc<OwnedFd>,
}

struct MailState<F> {
    queue: VecDeque<HEvent<F>>,
    /// Sum of the queued events' costs.
    bytes: usize,
    /// The eventfd holds a count.
    signaled: bool,
    /// Threads waiting on `cond` (notify only when some are: a condvar
    /// notify is a futex syscall even without waiters).
    waiters: usize,
    /// The waiters were notified and none has run since.
    woken: bool,
    /// Finalized, evicted or stopped: the queue is gone, dispatchers return.
    closed: bool,
}

impl<F> Mailbox<F> {
    fn new(fd: Arc<OwnedFd>) -> Mailbox<F> {
        Mailbox {
            st: Mutex::new(MailState {
                queue: VecDeque::new(),
                bytes: 0,
                signaled: false,
                waiters: 0,
                woken: false,
                closed: false,
            }),
            cond: Condvar::new(),
            bytes: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            fd,
        }
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Queue `evs` in order (emptying it) while the queue stays within
    /// `cap` (an empty queue always takes one event); false if one did not
    /// fit (it and those after it are dropped: the caller evicts).
    fn push_many(
        self: &Arc<Self>,
        evs: &mut Vec<HEvent<F>>,
        cap: usize,
        dirty: &DirtyList<F>,
    ) -> bool {
        let mut m = lock(&self.st);
        if m.closed {
            evs.clear();
            return true;
        }
        let mut fits = true;
        for ev in evs.drain(..) {
            let cost = ev.cost();
            if !m.queue.is_empty() && m.bytes + cost > cap {
                fits = false;
                break;
            }
            m.bytes += cost;
            m.queue.push_back(ev);
        }
        self.bytes.store(m.bytes, Ordering::Relaxed);
        if !self.dirty.swap(true, Ordering::Relaxed) {
            dirty.add(self);
        }
        fits
    }

    /// Move up to `max` events into `out`: how many, and the queued bytes
    /// before.
    fn pop_batch(
        m: &mut MailState<F>,
        bytes: &AtomicUsize,
        fd: &OwnedFd,
        max: usize,
        out: &mut VecDeque<HEvent<F>>,
    ) -> (usize, usize) {
        let before = m.bytes;
        let n = m.queue.len().min(max);
        for _ in 0..n {
            let ev = m.queue.pop_front().expect("counted");
            m.bytes -= ev.cost();
            out.push_back(ev);
        }
        bytes.store(m.bytes, Ordering::Relaxed);
        if m.queue.is_empty() && m.signaled {
            m.signaled = false;
            let mut b = [0u8; 8];
            let _ = rustix::io::read(fd, &mut b);
        }
        (n, before)
    }

    /// Drop the queue; wake pollers and blocked dispatchers (they find the
    /// handle finalized, evicted or stopped).
    fn close(&self) {
        let mut m = lock(&self.st);
        m.closed = true;
        m.queue.clear();
        m.bytes = 0;
        self.bytes.store(0, Ordering::Relaxed);
        m.woken = false;
        self.signal(&mut m);
    }

    /// Signal what was pushed since the last kick.
    fn kick(&self) {
        if self.dirty.swap(false, Ordering::Relaxed) {
            let mut m = lock(&self.st);
            if !m.queue.is_empty() {
                self.signal(&mut m);
            }
        }
    }

    fn signal(&self, m: &mut MailState<F>) {
        if !m.signaled {
            m.signaled = true;
            let _ = rustix::io::write(&*self.fd, &1u64.to_ne_bytes());
        }
        if m.waiters > 0 && !m.woken {
            // once per wake-up: later pushes would only repeat the syscall
            m.woken = true;
            self.cond.notify_all();
        }
    }
}

impl<F> HandleState<F> {
    fn refresh_fast(&mut self, fc: bool, half: usize, max: usize, stopped: bool) {
        let mut f = lock(&self.fast.st);
        let group = match &self.group {
            Some((g, HState::JoinStarted | HState::Joined)) if !stopped && !self.evicted => Some(g),
            _ => None,
        };
        f.open = group.is_some();
        let queued = self.mail.bytes();
        f.blocked = fc || queued + self.inflight > half;
        f.room = half.saturating_sub(queued + self.inflight);
        f.max_len = max;
        if let Some(g) = group {
            f.pid = self.pid;
            if f.group.as_deref() != Some(g) {
                f.group = Some(
                    self.group_arc
                        .clone()
                        .filter(|a| **a == *g)
                        .unwrap_or_else(|| Arc::new(g.clone())),
                );
            }
        }
    }
}

struct Slot<F> {
    check: u32,
    state: Option<HandleState<F>>,
}

struct Inner<F> {
    engine: Engine<F>,
    slots: Vec<Slot<F>>,
    free: Vec<u32>,
    /// Leaves (PROCDOWN) of finalized or evicted handles the engine refused
    /// with TRY_AGAIN; retried at every step until accepted.
    pending_leaves: Vec<(u32, GroupName, Arc<HandleFast>)>,
    store: Option<RingSeqStore>,
    stopped: bool,
    queue_cap: usize,
    evictions: u64,
    /// Transport threads waiting in [`Shared::handle_packet`] for a
    /// backlogged handle to dispatch.
    room_waiters: usize,
    /// Longest such wait per packet.
    stall_max: std::time::Duration,
    /// Set by a transport that calls [`Shared::batch_done`] after each batch
    /// of steps: mailboxes are signalled then, not at every step.
    defer_kicks: bool,
    /// Mailboxes pushed to since their last kick (shared with [`Shared`],
    /// whose `batch_done` kicks them without the node lock).
    dirty: Arc<DirtyList<F>>,
}

/// The mailboxes waiting for a kick.
struct DirtyList<F> {
    any: AtomicBool,
    list: Mutex<Vec<Arc<Mailbox<F>>>>,
}

impl<F> DirtyList<F> {
    fn add(&self, m: &Arc<Mailbox<F>>) {
        lock(&self.list).push(m.clone());
        self.any.store(true, Ordering::Release);
    }

    /// Signal every listed mailbox (each once).
    fn kick(&self) {
        if self.any.swap(false, Ordering::AcqRel) {
            let list = std::mem::take(&mut *lock(&self.list));
            for m in list {
                m.kick();
            }
        }
    }
}

/// Counters of the handle layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Handles evicted as slow consumers.
    pub evictions: u64,
    /// Handles open now.
    pub handles: usize,
}

/// The node state shared by its transport and its handles.
pub(crate) struct Shared<F> {
    inner: Mutex<Inner<F>>,
    node_id: NodeId,
    /// Set once by the transport; read on every staged send (no lock).
    waker: std::sync::OnceLock<Arc<dyn Fn() + Send + Sync>>,
    zc: Arc<dyn ZcAllocator<F>>,
    check_seed: AtomicU64,
    record: Mutex<Option<Vec<BufSend>>>,
    /// `zc_copy_threshold`: smaller zero-copy buffers live on the heap.
    zc_small: usize,
    /// The mailboxes to signal at the end of a transport batch.
    dirty: Arc<DirtyList<F>>,
    /// Notified when a backlogged handle's queue drained (see `room_waiters`).
    room: Condvar,
    hasher: std::collections::hash_map::RandomState,
}

thread_local! {
    /// (node, handle) pairs this thread is dispatching (a callback calling
    /// dispatch on its own handle gets BUSY instead of a deadlock).
    static DISPATCHING: RefCell<Vec<(usize, u64)>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<F> Inner<F> {
    /// A live handle holds more than half its queue cap.
    fn backlogged(&self) -> bool {
        let half = self.queue_cap / 2;
        self.slots
            .iter()
            .filter_map(|s| s.state.as_ref())
            .any(|s| !s.evicted && s.mail.bytes() > half)
    }

    fn slot_of(&self, h: u64) -> Option<usize> {
        let idx = (h & 0xFFFF_FFFF) as usize;
        let check = (h >> 32) as u32;
        let s = self.slots.get(idx)?;
        (check != 0 && s.check == check && s.state.is_some()).then_some(idx)
    }
    fn get(&self, h: u64) -> Result<&HandleState<F>, CsError> {
        let i = self.slot_of(h).ok_or(CsError::BadHandle)?;
        Ok(self.slots[i].state.as_ref().expect("slot_of checked"))
    }
    fn get_mut(&mut self, h: u64) -> Result<&mut HandleState<F>, CsError> {
        let i = self.slot_of(h).ok_or(CsError::BadHandle)?;
        Ok(self.slots[i].state.as_mut().expect("slot_of checked"))
    }
    /// The handle, live and usable: BAD_HANDLE if unknown, LIBRARY if
    /// evicted or the node is stopped.
    fn live(&mut self, h: u64) -> Result<&mut HandleState<F>, CsError> {
        let stopped = self.stopped;
        let s = self.get_mut(h)?;
        if s.evicted || stopped {
            return Err(CsError::Library);
        }
        Ok(s)
    }
}

/// A handle that receives the group's messages: joined (or leaving after
/// its join was delivered) and not evicted.
fn listens<F>(s: &HandleState<F>, group: &GroupName) -> bool {
    !s.evicted
        && matches!(&s.group, Some((g, HState::Joined | HState::LeaveStarted { joined: true })) if g == group)
}

/// Move `fast`'s staged messages into the engine, in order; `inflight` (the
/// handle's back-pressure count) grows by what went. False if the engine
/// refused one (TRY_AGAIN): it and those after it stay staged.
fn drain_fast<F: FrameBuf + Send + Sync + 'static>(
    engine: &mut Engine<F>,
    fast: &HandleFast,
    inflight: Option<&mut usize>,
    now: Instant,
) -> bool {
    let mut f = lock(&fast.st);
    if f.is_empty() {
        return true;
    }
    let FastState {
        pid,
        group,
        msgs,
        data,
        head,
        zc,
        zc_bytes,
        room,
        ..
    } = &mut *f;
    let Some(group) = group.as_deref() else {
        // staging requires a group: nothing can be here
        msgs.clear();
        data.clear();
        *head = 0;
        zc.clear();
        *zc_bytes = 0;
        return true;
    };
    let mut added = 0usize;
    let all = loop {
        // the copied messages up to the next zero-copy one: one engine call
        // and one allocation for the run
        let run = zc.front().map_or(msgs.len(), |z| z.before);
        if run == 0 && zc.is_empty() {
            break true;
        }
        let bytes: &[u8] = data;
        let mut at = *head;
        // `move`: the iterator owns its position, so the engine's clones
        // each walk from the first message
        let items = msgs.iter().take(run).map(move |&(guarantee, end)| {
            let m = &bytes[at..end];
            at = end;
            (guarantee, m)
        });
        let (n, r) = if run == 0 {
            (0, Ok(()))
        } else {
            engine.submit_batch(now, *pid, group, items)
        };
        // the handle was joined when it staged and every change of that
        // (leave, finalize, eviction, stop) closes staging and drains
        // first: only TRY_AGAIN, or LIBRARY once the engine shut down
        debug_assert!(
            n == run || matches!(r, Err(CsError::TryAgain | CsError::Library)),
            "staged message refused: {r:?}"
        );
        if n < run && r != Err(CsError::TryAgain) {
            // the engine takes nothing more (shut down): nothing to keep
            msgs.clear();
            data.clear();
            *head = 0;
            zc.clear();
            *zc_bytes = 0;
            break true;
        }
        let end = if n == 0 { *head } else { msgs[n - 1].1 };
        added += EVENT_OVERHEAD * n + (end - *head);
        msgs.drain(..n);
        if msgs.is_empty() {
            data.clear();
            *head = 0;
        } else {
            *head = end;
        }
        for z in zc.iter_mut() {
            z.before -= n;
        }
        if n < run {
            break false;
        }
        let Some(z) = zc.pop_front() else {
            break true;
        };
        let StagedZc {
            guarantee,
            storage,
            len,
            ..
        } = z;
        let frame = match storage.into_any().downcast::<ZcFrame<F>>() {
            Ok(b) => *b,
            Err(_) => {
                // only this node's zcb_mcast stages, with its own frames
                debug_assert!(false, "a staged zero-copy buffer of another type");
                *zc_bytes -= len;
                continue;
            }
        };
        let (start, cap) = (frame.start, frame.len);
        match engine.submit_zc(now, *pid, group, guarantee, frame.buf, start..start + len) {
            Ok(()) => {
                *zc_bytes -= len;
                added += EVENT_OVERHEAD + len;
            }
            Err(e) if e.error != CsError::TryAgain => {
                debug_assert!(
                    e.error == CsError::Library,
                    "staged message refused: {:?}",
                    e.error
                );
                *zc_bytes -= len;
                continue;
            }
            Err(e) => {
                match e.buf {
                    Some(buf) => zc.push_front(StagedZc {
                        before: 0,
                        guarantee,
                        storage: Box::new(ZcFrame {
                            buf,
                            start,
                            len: cap,
                        }),
                        len,
                    }),
                    None => *zc_bytes -= len,
                }
                break false;
            }
        }
    };
    if let Some(i) = inflight {
        *i += added;
    }
    // what went now counts in the handle's inflight, not in the staging
    *room = room.saturating_sub(added);
    all
}

/// Stage a message on a handle's fast path (its lock held): `None` if the
/// handle is not open for staging (the caller takes the node lock path).
fn try_stage(
    f: &mut FastState,
    guarantee: Guarantee,
    iov: &[std::io::IoSlice<'_>],
    total: usize,
) -> Option<Result<(), CsError>> {
    if !f.open || total > f.max_len {
        return None;
    }
    if f.blocked {
        return Some(Err(CsError::TryAgain));
    }
    let staged = f.data.len() - f.head;
    let staged_cost = EVENT_OVERHEAD * (f.msgs.len() + f.zc.len()) + staged + f.zc_bytes;
    // with nothing staged a message of any size is taken while the handle
    // is not blocked, as the locked path takes one (else one larger than
    // the room would be refused forever)
    if staged_cost > 0
        && (staged + total > STAGE_BYTES || staged_cost + EVENT_OVERHEAD + total > f.room)
    {
        return Some(Err(CsError::TryAgain));
    }
    if f.data.len() + total > STAGE_BYTES {
        // shift the staged bytes to the front (amortized: at most once per
        // STAGE_BYTES drained)
        let head = f.head;
        f.data.drain(..head);
        for m in f.msgs.iter_mut() {
            m.1 -= head;
        }
        f.head = 0;
    }
    for p in iov {
        f.data.extend_from_slice(p);
    }
    let end = f.data.len();
    f.msgs.push_back((guarantee, end));
    Some(Ok(()))
}

/// Stage a zero-copy buffer (its lock held), as [`try_stage`].
fn try_stage_zc(
    f: &mut FastState,
    guarantee: Guarantee,
    storage: Box<dyn ZcStorage>,
    len: usize,
) -> Result<(), (Option<CsError>, Box<dyn ZcStorage>)> {
    if !f.open || len > f.max_len {
        return Err((None, storage));
    }
    let staged_cost =
        EVENT_OVERHEAD * (f.msgs.len() + f.zc.len()) + (f.data.len() - f.head) + f.zc_bytes;
    // with nothing staged any size is taken (as in try_stage)
    if f.blocked
        || (staged_cost > 0
            && (f.zc.len() >= STAGE_ZC_MAX || staged_cost + EVENT_OVERHEAD + len > f.room))
    {
        return Err((Some(CsError::TryAgain), storage));
    }
    let before = f.msgs.len();
    f.zc.push_back(StagedZc {
        before,
        guarantee,
        storage,
        len,
    });
    f.zc_bytes += len;
    Ok(())
}

impl<F: FrameBuf + Send + Sync + 'static> Inner<F> {
    /// Drain every handle's staged messages into the engine (in order);
    /// false if some stay staged (engine queue full).
    fn drain(&mut self, now: Instant) -> bool {
        let Inner { engine, slots, .. } = self;
        let mut all = true;
        for s in slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            all &= drain_fast(engine, &s.fast, Some(&mut s.inflight), now);
        }
        all
    }

    /// Refresh every handle's staging mirror (open, blocked, group).
    fn refresh_fast(&mut self) {
        let fc = self.engine.flow_control_enabled();
        let half = self.queue_cap / 2;
        let max = self.engine.config().max_message_size;
        let stopped = self.stopped;
        for s in self.slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            s.refresh_fast(fc, half, max, stopped);
        }
    }

    /// Route every pending engine event to the handles, evict slow
    /// consumers, retry refused leaves.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut any = false;
            while let Some(ev) = self.engine.poll_event() {
                any = true;
                self.route(ev);
            }
            if any {
                self.flush();
            }
            if !self.pending_leaves.is_empty() {
                let pending = std::mem::take(&mut self.pending_leaves);
                for (pid, group, fast) in pending {
                    // the handle's staged messages go before its leave
                    if !drain_fast(&mut self.engine, &fast, None, now) {
                        self.pending_leaves.push((pid, group, fast));
                        continue;
                    }
                    let r = self.engine.submit(
                        now,
                        Request::Leave {
                            pid,
                            group: &group,
                            reason: Reason::ProcDown,
                        },
                    );
                    if r == Err(CsError::TryAgain) {
                        self.pending_leaves.push((pid, group, fast));
                    } else {
                        any = true;
                    }
                }
            }
            if !any {
                break;
            }
        }
        if !self.defer_kicks {
            self.dirty.kick();
        }
    }

    fn route(&mut self, ev: Event<F>) {
        let me = self.engine.node_id();
        match ev {
            Event::Deliver {
                group,
                sender,
                guarantee,
                payload,
            } => {
                // One pass over the handles; the payload is moved into the
                // last listener's queue and cloned only for the others (a
                // clone and a drop are atomic operations on a count the
                // dispatching threads share).
                let mut prev: Option<(usize, Arc<GroupName>)> = None;
                for i in 0..self.slots.len() {
                    let Some(s) = self.slots[i].state.as_ref() else {
                        continue;
                    };
                    if !listens(s, &group) {
                        continue;
                    }
                    // set with the group at join: the same name
                    let name = s
                        .group_arc
                        .clone()
                        .unwrap_or_else(|| Arc::new(group.clone()));
                    if let Some((j, name)) = prev.replace((i, name)) {
                        self.deliver_to(j, name, sender, guarantee, payload.clone());
                    }
                }
                if let Some((j, name)) = prev {
                    self.deliver_to(j, name, sender, guarantee, payload);
                }
            }
            Event::ConfChg {
                group,
                members,
                left,
                joined,
            } => {
                let data = Arc::new(ConfChgData {
                    group,
                    members,
                    left,
                    joined,
                });
                let totem = self.engine.groups().totem_conf();
                let totem = Arc::new((totem.0, totem.1.to_vec()));
                for i in 0..self.slots.len() {
                    let Some(s) = self.slots[i].state.as_mut() else {
                        continue;
                    };
                    if s.evicted {
                        continue;
                    }
                    let Some((g, st)) = s.group.as_mut() else {
                        continue;
                    };
                    if *g != data.group {
                        continue;
                    }
                    let mine = MemberAddr {
                        nodeid: me,
                        pid: s.pid,
                    };
                    let mut initial_totem = false;
                    let own_join = data
                        .joined
                        .iter()
                        .any(|(m, r)| *m == mine && *r == Reason::Join);
                    match st {
                        HState::JoinStarted | HState::LeaveStarted { joined: false } => {
                            // nothing of the group before the own join
                            if !own_join {
                                continue;
                            }
                            *st = match st {
                                HState::JoinStarted => HState::Joined,
                                _ => HState::LeaveStarted { joined: true },
                            };
                            initial_totem =
                                s.flags & crate::cpg::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0;
                        }
                        HState::Joined => {}
                        HState::LeaveStarted { joined: true } => {
                            if data.left.iter().any(|(m, _)| *m == mine) {
                                s.group = None;
                            }
                        }
                    }
                    self.push(i, HEvent::ConfChg(data.clone()));
                    if initial_totem {
                        self.push(i, HEvent::Totem(totem.clone()));
                    }
                }
            }
            Event::TotemConfChg { ring_id, members } => {
                let data = Arc::new((ring_id, members.to_vec()));
                for i in 0..self.slots.len() {
                    if matches!(&self.slots[i].state, Some(s) if s.wants_totem && !s.evicted) {
                        self.push(i, HEvent::Totem(data.clone()));
                    }
                }
            }
            Event::Config(_) | Event::FlowControl(_) | Event::Trace(_) => {}
        }
    }

    /// Queue a delivery on slot `i`; a handle's own message leaves its
    /// back-pressure count.
    fn deliver_to(
        &mut self,
        i: usize,
        group: Arc<GroupName>,
        sender: MemberAddr,
        guarantee: Guarantee,
        payload: Payload<F>,
    ) {
        let me = self.engine.node_id();
        if let Some(s) = self.slots[i].state.as_mut() {
            if sender.nodeid == me && s.pid == sender.pid {
                s.inflight = s
                    .inflight
                    .saturating_sub(EVENT_OVERHEAD + payload.range.len());
            }
        }
        self.push(
            i,
            HEvent::Deliver {
                group,
                sender,
                guarantee,
                payload,
            },
        );
    }

    /// Queue an event on slot `i` (in its outbox until [`Inner::flush`]).
    fn push(&mut self, i: usize, ev: HEvent<F>) {
        if let Some(s) = self.slots[i].state.as_mut() {
            if !s.evicted {
                s.outbox.push(ev);
            }
        }
    }

    /// Move every outbox into its mailbox; evict a handle whose queue goes
    /// over the cap (an empty queue always takes one event).
    fn flush(&mut self) {
        let cap = self.queue_cap;
        for slot in self.slots.iter_mut() {
            let Some(s) = slot.state.as_mut() else {
                continue;
            };
            if s.outbox.is_empty() || s.mail.push_many(&mut s.outbox, cap, &self.dirty) {
                continue;
            }
            s.outbox.clear();
            s.evicted = true;
            s.gone.store(true, Ordering::Release);
            lock(&s.fast.st).open = false;
            s.mail.close();
            if let Some((g, HState::JoinStarted | HState::Joined)) = s.group.take() {
                self.pending_leaves.push((s.pid, g, s.fast.clone()));
            }
            self.evictions += 1;
        }
    }
}

impl<F: FrameBuf + Send + Sync + 'static> Shared<F> {
    pub(crate) fn new(
        engine_config: cpg_core::limits::Config,
        store: Option<RingSeqStore>,
        queue_cap: usize,
        zc: Arc<dyn ZcAllocator<F>>,
    ) -> Result<Arc<Shared<F>>, crate::error::StartError> {
        let initial = match &store {
            Some(s) => s.initial_ring_seq()?,
            None => 1,
        };
        let node_id = engine_config.node_id;
        let zc_small = engine_config.zc_copy_threshold;
        // a receive back-pressure wait stays far below the token timeout
        let stall_max = std::time::Duration::from_nanos(
            (engine_config.token_effective().0 / 8).min(100_000_000),
        );
        let engine = Engine::new(
            engine_config,
            EngineOptions::default(),
            initial,
            Instant::ZERO,
        )
        .map_err(crate::error::StartError::Engine)?;
        let hasher = std::collections::hash_map::RandomState::new();
        let dirty = Arc::new(DirtyList {
            any: AtomicBool::new(false),
            list: Mutex::new(Vec::new()),
        });
        Ok(Arc::new(Shared {
            inner: Mutex::new(Inner {
                engine,
                slots: Vec::new(),
                free: Vec::new(),
                pending_leaves: Vec::new(),
                store,
                stopped: false,
                queue_cap,
                evictions: 0,
                room_waiters: 0,
                stall_max,
                defer_kicks: false,
                dirty: dirty.clone(),
            }),
            node_id,
            waker: std::sync::OnceLock::new(),
            zc,
            check_seed: AtomicU64::new(0),
            record: Mutex::new(None),
            zc_small,
            dirty,
            room: Condvar::new(),
            hasher,
        }))
    }

    fn finalize_inner(&self, h: u64) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let i = g.slot_of(h).ok_or(CsError::BadHandle)?;
            let slot = &mut g.slots[i];
            slot.check = 0;
            let mut s = slot.state.take().expect("slot_of checked");
            g.free.push(i as u32);
            lock(&s.fast.st).open = false;
            if let Some((group, HState::JoinStarted | HState::Joined)) = s.group.take() {
                if !s.evicted {
                    if !drain_fast(&mut g.engine, &s.fast, None, now) {
                        g.pending_leaves.push((s.pid, group, s.fast.clone()));
                        s.gone.store(true, Ordering::Release);
                        s.mail.close();
                        return Ok(());
                    }
                    let r = g.engine.submit(
                        now,
                        Request::Leave {
                            pid: s.pid,
                            group: &group,
                            reason: Reason::ProcDown,
                        },
                    );
                    if r == Err(CsError::TryAgain) {
                        g.pending_leaves.push((s.pid, group, s.fast.clone()));
                    }
                }
            }
            // wake pollers and blocked dispatchers: they find the handle gone
            s.gone.store(true, Ordering::Release);
            s.mail.close();
            Ok(())
        })
    }

    pub(crate) fn now(&self) -> Instant {
        monotonic_now()
    }

    fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w();
        }
    }

    /// After staging (or refusing) on a fast path: whoever holds the node
    /// lock drains. If it is free, this thread moves staged messages into
    /// the engine now (keeping that work off the transport thread, which
    /// forwards the token); if not, the holder's next step does.
    fn after_stage(&self) {
        if let Ok(mut g) = self.inner.try_lock() {
            let now = self.now();
            g.drain(now);
            g.pump(now);
            g.refresh_fast();
        }
        self.wake();
    }

    fn random_check(&self) -> u32 {
        loop {
            let mut h = self.hasher.build_hasher();
            h.write_u64(self.check_seed.fetch_add(1, Ordering::Relaxed));
            h.write_u64(monotonic_now().0);
            let v = h.finish() as u32;
            if v != 0 && v != u32::MAX {
                return v;
            }
        }
    }

    fn key(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// Run `f` on the engine under the lock, then route events and wake the
    /// transport (it sends whatever `f` queued).
    fn submit_with<R>(&self, f: impl FnOnce(&mut Inner<F>, Instant) -> R) -> R {
        let now = self.now();
        let r = {
            let mut g = lock(&self.inner);
            g.drain(now);
            let r = f(&mut g, now);
            g.pump(now);
            g.refresh_fast();
            r
        };
        self.wake();
        r
    }

    // ---- for transports (through NodeCore) ------------------------------

    /// The transport's wake-up; a node has one transport, so only the first
    /// call counts.
    pub(crate) fn set_waker(&self, w: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(w);
    }

    pub(crate) fn handle_packet(&self, from: NodeId, frame: F) {
        let mut g = lock(&self.inner);
        if g.backlogged() {
            g = self.wait_room(g);
        }
        let now = self.now();
        g.drain(now);
        g.engine.handle_packet(now, from, frame);
        g.pump(now);
        g.refresh_fast();
    }

    /// Receive back-pressure: while a handle that dispatches holds more than
    /// half its queue cap, the transport waits (at most `stall_max` per
    /// packet) before handing the engine more frames. Frames then wait in
    /// the socket and the token waits here, so the ring slows down to what
    /// the slowest dispatching handle takes, instead of evicting it and
    /// losing what it was sent. A handle that stops dispatching still
    /// reaches its cap and is evicted (the ring is delayed, never stalled).
    fn wait_room<'a>(&self, mut g: MutexGuard<'a, Inner<F>>) -> MutexGuard<'a, Inner<F>> {
        let end = std::time::Instant::now() + g.stall_max;
        g.room_waiters += 1;
        while g.backlogged() && !g.stopped {
            // the dispatchers must hear of what this batch queued, or they
            // would not drain what is waited for (kicks are deferred to the
            // end of the transport's batch)
            g.dirty.kick();
            let Some(left) = end.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            g = self
                .room
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g.room_waiters -= 1;
        g
    }

    /// End of a transport batch: signal the handles that got events.
    pub(crate) fn batch_done(&self) {
        self.dirty.kick();
    }

    pub(crate) fn handle_timeout(&self) {
        let now = self.now();
        let mut g = lock(&self.inner);
        g.drain(now);
        if g.engine.poll_timeout().is_some_and(|t| t <= now) {
            g.engine.handle_timeout(now);
        }
        g.pump(now);
        g.refresh_fast();
    }

    pub(crate) fn poll_outputs(&self, send: &mut dyn FnMut(Transmit<F>)) -> Option<Instant> {
        let mut g = lock(&self.inner);
        let now = self.now();
        g.drain(now);
        g.pump(now);
        g.refresh_fast();
        self.outputs_locked(&mut g, send)
    }

    /// One transport step under one lock: the input, then every output,
    /// then `look` at the engine (counters). Returns the next deadline.
    pub(crate) fn step<R>(
        &self,
        input: StepInput<F>,
        send: &mut dyn FnMut(Transmit<F>),
        look: impl FnOnce(&Engine<F>) -> R,
    ) -> (Option<Instant>, R) {
        let mut g = lock(&self.inner);
        // a transport that steps calls batch_done after each batch
        g.defer_kicks = true;
        let now = self.now();
        g.drain(now);
        g.pump(now);
        match input {
            StepInput::Wake => {}
            StepInput::Packet(from, frame) => {
                if g.backlogged() {
                    g = self.wait_room(g);
                }
                let now = self.now();
                g.engine.handle_packet(now, from, frame);
                g.pump(now);
            }
            StepInput::Timeout => {
                let now = self.now();
                if g.engine.poll_timeout().is_some_and(|t| t <= now) {
                    g.engine.handle_timeout(now);
                }
                g.pump(now);
            }
        }
        g.refresh_fast();
        let d = self.outputs_locked(&mut g, send);
        (d, look(&g.engine))
    }

    fn outputs_locked(
        &self,
        g: &mut MutexGuard<'_, Inner<F>>,
        send: &mut dyn FnMut(Transmit<F>),
    ) -> Option<Instant> {
        while let Some(seq) = g.engine.poll_persist() {
            if let Some(store) = &g.store {
                if let Err(e) = store.store(seq) {
                    eprintln!(
                        "cpg node {}: cannot persist ring seq {seq}: {e}",
                        self.node_id
                    );
                }
            }
        }
        let mut record = lock(&self.record);
        while let Some(t) = g.engine.poll_transmit() {
            if let (Some(rec), Some(b)) = (record.as_mut(), t.frame.buf()) {
                let (bp, bl) = (b.as_ref().as_ptr() as usize, b.as_ref().len());
                for seg in t.frame.segments() {
                    let (p, l) = (seg.as_ptr() as usize, seg.len());
                    if l > 0 && p >= bp && p < bp + bl {
                        rec.push(BufSend {
                            buf_addr: bp,
                            buf_len: bl,
                            read_addr: p,
                            read_len: l,
                        });
                    }
                }
            }
            send(t);
        }
        drop(record);
        while g.engine.poll_release().is_some() {}
        g.engine.poll_timeout()
    }

    pub(crate) fn shutdown(&self, graceful: bool) {
        let now = self.now();
        let mut g = lock(&self.inner);
        // close staging first, then move what was staged into the engine
        // before it shuts down
        let was_stopped = g.stopped;
        g.stopped = true;
        g.refresh_fast();
        g.drain(now);
        g.pump(now);
        if graceful && !was_stopped {
            g.engine.shutdown(now);
        }
        for s in g.slots.iter_mut().filter_map(|s| s.state.as_mut()) {
            s.gone.store(true, Ordering::Release);
            s.mail.close();
        }
        drop(g);
        self.room.notify_all();
        self.wake();
    }

    pub(crate) fn with_engine<R>(&self, f: impl FnOnce(&Engine<F>) -> R) -> R {
        f(&lock(&self.inner).engine)
    }

    pub(crate) fn record_buf_sends(&self, on: bool) {
        *lock(&self.record) = on.then(Vec::new);
    }

    pub(crate) fn buf_sends(&self) -> Vec<BufSend> {
        lock(&self.record).clone().unwrap_or_default()
    }

    pub(crate) fn stats(&self) -> NodeStats {
        let g = lock(&self.inner);
        NodeStats {
            evictions: g.evictions,
            handles: g.slots.iter().filter(|s| s.state.is_some()).count(),
        }
    }
}

/// The handle-facing operations, object safe so [`Cpg`] is not generic
/// over the transport's buffer type.
pub(crate) trait NodeOps: Send + Sync {
    fn open(
        &self,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<(u64, Arc<OwnedFd>, Arc<HandleFast>), CsError>;
    fn finalize(&self, h: u64) -> Result<(), CsError>;
    fn check(&self, h: u64, local_only: bool) -> Result<(), CsError>;
    fn dispatch(&self, cpg: &Cpg, h: u64, flags: DispatchFlags) -> Result<(), CsError>;
    fn join(&self, h: u64, group: &GroupName) -> Result<(), CsError>;
    fn leave(&self, h: u64, group: &GroupName) -> Result<(), CsError>;
    fn mcast(&self, h: u64, guarantee: Guarantee, iov: &[&[u8]]) -> Result<(), CsError>;
    fn mcast_fast(
        &self,
        fast: &HandleFast,
        h: u64,
        guarantee: Guarantee,
        iov: &[std::io::IoSlice<'_>],
    ) -> Result<(), CsError>;
    fn membership(&self, h: u64, group: &GroupName) -> Result<Vec<MemberAddr>, CsError>;
    fn local_get(&self, h: u64) -> Result<NodeId, CsError>;
    fn flow_control(&self, h: u64) -> Result<bool, CsError>;
    fn context_get(&self, h: u64) -> Result<Context, CsError>;
    fn context_set(&self, h: u64, c: Context) -> Result<(), CsError>;
    fn snapshot(
        &self,
        h: u64,
        ty: IterationType,
        group: Option<&GroupName>,
    ) -> Result<Vec<IterationDescription>, CsError>;
    fn zcb_alloc(&self, fast: &HandleFast, h: u64, size: usize) -> Result<ZcBuf, CsError>;
    fn zcb_mcast(
        &self,
        fast: &HandleFast,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError>;
}

impl<F: FrameBuf + Send + Sync + 'static> NodeOps for Shared<F> {
    fn open(
        &self,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<(u64, Arc<OwnedFd>, Arc<HandleFast>), CsError> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|_| CsError::NoResources)?;
        let fd = Arc::new(fd);
        let fast = Arc::new(HandleFast::default());
        let check = self.random_check();
        let mut g = lock(&self.inner);
        if g.stopped {
            return Err(CsError::Library);
        }
        let idx = match g.free.pop() {
            Some(i) => i,
            None => {
                if g.slots.len() >= u32::MAX as usize {
                    return Err(CsError::NoResources);
                }
                g.slots.push(Slot {
                    check: 0,
                    state: None,
                });
                (g.slots.len() - 1) as u32
            }
        };
        let state = HandleState {
            pid,
            flags: model.flags,
            wants_totem: model.totem_confchg.is_some(),
            callbacks: Arc::new(Mutex::new(model)),
            context,
            group: None,
            mail: Arc::new(Mailbox::new(fd.clone())),
            outbox: Vec::new(),
            evicted: false,
            fast: fast.clone(),
            inflight: 0,
            group_arc: None,
            gone: Arc::new(AtomicBool::new(false)),
        };
        let slot = &mut g.slots[idx as usize];
        slot.check = check;
        slot.state = Some(state);
        Ok(((u64::from(check) << 32) | u64::from(idx), fd, fast))
    }

    fn finalize(&self, h: u64) -> Result<(), CsError> {
        let r = self.finalize_inner(h);
        // a transport waiting for this handle to drain need not wait
        self.room.notify_all();
        r
    }

    fn check(&self, h: u64, local_only: bool) -> Result<(), CsError> {
        let mut g = lock(&self.inner);
        if local_only {
            g.get(h).map(|_| ())
        } else {
            g.live(h).map(|_| ())
        }
    }

    fn dispatch(&self, cpg: &Cpg, h: u64, flags: DispatchFlags) -> Result<(), CsError> {
        let key = (self.key(), h);
        let (callbacks, mail, gone, half) = {
            let mut g = lock(&self.inner);
            let half = g.queue_cap / 2;
            let s = g.live(h)?;
            (s.callbacks.clone(), s.mail.clone(), s.gone.clone(), half)
        };
        if DISPATCHING.with(|d| d.borrow().contains(&key)) {
            return Err(CsError::Busy);
        }
        DISPATCHING.with(|d| d.borrow_mut().push(key));
        struct Unmark((usize, u64));
        impl Drop for Unmark {
            fn drop(&mut self) {
                DISPATCHING.with(|d| d.borrow_mut().retain(|k| *k != self.0));
            }
        }
        let _unmark = Unmark(key);
        // One lock of the handle's mailbox (not the node's) moves a batch of
        // events out; the callbacks then run without it. Between callbacks
        // only the `gone` flag is read.
        let one = matches!(flags, DispatchFlags::One | DispatchFlags::OneNonblocking);
        let max = if one { 1 } else { DISPATCH_BATCH };
        let mut batch: VecDeque<HEvent<F>> = VecDeque::new();
        let mut done = 0usize;
        loop {
            let before = {
                let mut m = lock(&mail.st);
                loop {
                    if m.closed {
                        drop(m);
                        // finalized (BAD_HANDLE), evicted or stopped (LIBRARY)
                        lock(&self.inner).live(h)?;
                        return Err(CsError::Library);
                    }
                    let (n, before) =
                        Mailbox::pop_batch(&mut m, &mail.bytes, &mail.fd, max, &mut batch);
                    if n > 0 {
                        break before;
                    }
                    match flags {
                        DispatchFlags::All => return Ok(()),
                        DispatchFlags::OneNonblocking => {
                            return if done == 0 {
                                Err(CsError::TryAgain)
                            } else {
                                Ok(())
                            };
                        }
                        DispatchFlags::One | DispatchFlags::Blocking => {
                            m.waiters += 1;
                            // an earlier notify did not cover this waiter
                            m.woken = false;
                            m = mail.cond.wait(m).unwrap_or_else(|e| e.into_inner());
                            m.waiters -= 1;
                            m.woken = false;
                        }
                    }
                }
            };
            if before > half / 2 {
                // the queue was long: a transport may wait for room, and
                // this handle's staging mirror may say TRY_AGAIN
                let mut g = lock(&self.inner);
                if g.room_waiters > 0 && !g.backlogged() {
                    self.room.notify_all();
                }
                let fc = g.engine.flow_control_enabled();
                let (max_len, stopped) = (g.engine.config().max_message_size, g.stopped);
                if let Ok(s) = g.get_mut(h) {
                    s.refresh_fast(fc, half, max_len, stopped);
                }
            }
            // the callbacks' lock is held only while one batch runs: several
            // threads may dispatch one handle (each event goes to one of them)
            let mut cb = lock(&callbacks);
            while let Some(ev) = batch.pop_front() {
                match &ev {
                    HEvent::Deliver {
                        group,
                        sender,
                        guarantee,
                        payload,
                    } => {
                        if let Some(f) = cb.deliver.as_mut() {
                            f(
                                cpg,
                                &Delivery {
                                    group,
                                    sender: *sender,
                                    guarantee: *guarantee,
                                    msg: payload.bytes(),
                                },
                            );
                        }
                    }
                    HEvent::ConfChg(c) => {
                        if let Some(f) = cb.confchg.as_mut() {
                            f(
                                cpg,
                                &ConfChg {
                                    group: &c.group,
                                    members: &c.members,
                                    left: &c.left,
                                    joined: &c.joined,
                                },
                            );
                        }
                    }
                    HEvent::Totem(t) => {
                        if let Some(f) = cb.totem_confchg.as_mut() {
                            f(cpg, t.0, &t.1);
                        }
                    }
                }
                drop(ev);
                done += 1;
                // finalized (or evicted) by the callback or another thread
                if gone.load(Ordering::Acquire) {
                    drop(cb);
                    batch.clear();
                    lock(&self.inner).live(h)?;
                    // the node stopped but the handle is still there:
                    // live() reported it above; unreachable otherwise
                    return Err(CsError::Library);
                }
            }
            drop(cb);
            if one {
                return Ok(());
            }
        }
    }

    fn join(&self, h: u64, group: &GroupName) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let s = g.live(h)?;
            match s.group {
                Some((_, HState::JoinStarted | HState::Joined)) => return Err(CsError::Exist),
                Some((_, HState::LeaveStarted { .. })) => return Err(CsError::TryAgain),
                None => {}
            }
            let (pid, flags) = (s.pid, s.flags);
            g.engine.submit(now, Request::Join { pid, group, flags })?;
            let s = g.live(h)?;
            s.group = Some((group.clone(), HState::JoinStarted));
            s.group_arc = Some(Arc::new(group.clone()));
            s.inflight = 0;
            Ok(())
        })
    }

    fn leave(&self, h: u64, group: &GroupName) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let s = g.live(h)?;
            match &s.group {
                Some((joined, HState::JoinStarted | HState::Joined)) if joined == group => {}
                _ => return Err(CsError::NotExist),
            }
            {
                let mut f = lock(&s.fast.st);
                if !f.is_empty() {
                    // staged multicasts the engine refused go before the leave
                    return Err(CsError::TryAgain);
                }
                // no staging from here on: a message staged between this
                // check and the leave would be NOT_EXIST for the engine
                // after CS_OK (refresh_fast reopens it if the leave is
                // refused)
                f.open = false;
            }
            let pid = s.pid;
            g.engine.submit(
                now,
                Request::Leave {
                    pid,
                    group,
                    reason: Reason::Leave,
                },
            )?;
            if let Some((_, st)) = g.live(h)?.group.as_mut() {
                *st = HState::LeaveStarted {
                    joined: *st == HState::Joined,
                };
            }
            Ok(())
        })
    }

    fn mcast_fast(
        &self,
        fast: &HandleFast,
        h: u64,
        guarantee: Guarantee,
        iov: &[std::io::IoSlice<'_>],
    ) -> Result<(), CsError> {
        let total: usize = iov.iter().map(|p| p.len()).sum();
        if total <= STAGE_MSG_MAX {
            let mut f = lock(&fast.st);
            if let Some(r) = try_stage(&mut f, guarantee, iov, total) {
                drop(f);
                self.after_stage();
                return r;
            }
        } else if total <= self.zc.max_len() && lock(&fast.st).open {
            // A large copied message is copied once into a driver buffer
            // and sent from there like a zcb message: one copy, where the
            // engine path makes three (into the send queue, into each
            // fragment, into the reassembly). Measured, 1 member 64 KiB
            // AGREED: see the commit. No buffer free: the engine path.
            if let Ok((mut buf, start)) = self.zc.alloc(total) {
                if let Some(bytes) = buf.unique_mut() {
                    let mut at = start;
                    for p in iov {
                        bytes[at..at + p.len()].copy_from_slice(p);
                        at += p.len();
                    }
                    let zb = ZcBuf {
                        storage: Box::new(ZcFrame {
                            buf,
                            start,
                            len: total,
                        }),
                        node: self.key(),
                    };
                    return self
                        .zcb_mcast(fast, h, guarantee, zb, total)
                        .map_err(|e| e.error);
                }
            }
        }
        let parts: Vec<&[u8]> = iov.iter().map(|s| &**s).collect();
        self.mcast(h, guarantee, &parts)
    }

    fn mcast(&self, h: u64, guarantee: Guarantee, iov: &[&[u8]]) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let max = g.engine.config().max_message_size;
            let cap = g.queue_cap;
            let s = g.live(h)?;
            let total: usize = iov.iter().map(|p| p.len()).sum();
            if total > max {
                return Err(CsError::TooBig);
            }
            let group = match &s.group {
                Some((group, HState::JoinStarted | HState::Joined)) => group.clone(),
                _ => return Err(CsError::NotExist),
            };
            if s.mail.bytes() + s.inflight > cap / 2 || !lock(&s.fast.st).is_empty() {
                // the sender outruns its own dispatch: back-pressure
                // (TRY_AGAIN) instead of an eviction that would lose messages;
                // or staged messages the engine refused go first (FIFO)
                return Err(CsError::TryAgain);
            }
            let pid = s.pid;
            g.engine.submit(
                now,
                Request::Mcast {
                    pid,
                    group: &group,
                    guarantee,
                    iov,
                },
            )?;
            if let Ok(s) = g.get_mut(h) {
                s.inflight += EVENT_OVERHEAD + total;
            }
            Ok(())
        })
    }

    fn membership(&self, h: u64, group: &GroupName) -> Result<Vec<MemberAddr>, CsError> {
        let mut g = lock(&self.inner);
        g.live(h)?;
        Ok(g.engine.groups().members(group))
    }

    fn local_get(&self, h: u64) -> Result<NodeId, CsError> {
        self.check(h, false)?;
        Ok(self.node_id)
    }

    fn flow_control(&self, h: u64) -> Result<bool, CsError> {
        let mut g = lock(&self.inner);
        g.live(h)?;
        Ok(g.engine.flow_control_enabled())
    }

    fn context_get(&self, h: u64) -> Result<Context, CsError> {
        Ok(lock(&self.inner).get(h)?.context.clone())
    }

    fn context_set(&self, h: u64, c: Context) -> Result<(), CsError> {
        lock(&self.inner).get_mut(h)?.context = c;
        Ok(())
    }

    fn snapshot(
        &self,
        h: u64,
        ty: IterationType,
        group: Option<&GroupName>,
    ) -> Result<Vec<IterationDescription>, CsError> {
        match (ty, group) {
            (IterationType::OneGroup, Some(_))
            | (IterationType::NameOnly | IterationType::All, None) => {}
            _ => return Err(CsError::InvalidParam),
        }
        let mut g = lock(&self.inner);
        g.live(h)?;
        let groups = g.engine.groups();
        let out = match ty {
            IterationType::NameOnly => groups
                .groups()
                .map(|(name, _)| IterationDescription {
                    group: name.clone(),
                    nodeid: 0,
                    pid: 0,
                })
                .collect(),
            IterationType::OneGroup => {
                let name = group.expect("checked above");
                groups
                    .members(name)
                    .into_iter()
                    .map(|m| IterationDescription {
                        group: name.clone(),
                        nodeid: m.nodeid,
                        pid: m.pid,
                    })
                    .collect()
            }
            IterationType::All => groups
                .groups()
                .flat_map(|(name, ms)| {
                    ms.iter().map(move |m| IterationDescription {
                        group: name.clone(),
                        nodeid: m.nodeid,
                        pid: m.pid,
                    })
                })
                .collect(),
        };
        Ok(out)
    }

    fn zcb_alloc(&self, fast: &HandleFast, h: u64, size: usize) -> Result<ZcBuf, CsError> {
        if size < self.zc_small {
            // Below zc_copy_threshold the message is copied into a frame
            // anyway: a heap buffer, no pool slot held, and no node lock
            // while the handle is known open.
            let spare = {
                let mut f = lock(&fast.st);
                let open = f.open;
                let spare = f.spare.pop();
                drop(f);
                if !open {
                    self.check(h, false)?;
                }
                spare
            };
            // a buffer of an earlier small send, reused: no allocation
            let storage = match spare {
                Some(mut b) => {
                    // contents are unspecified (as Corosync's shared
                    // memory): not zeroed again, only sized
                    if b.0.len() >= size {
                        b.0.truncate(size);
                    } else {
                        b.0.resize(size, 0);
                    }
                    b
                }
                None => Box::new(SmallZc(vec![0u8; size])),
            };
            return Ok(ZcBuf {
                storage,
                node: self.key(),
            });
        }
        if !lock(&fast.st).open {
            self.check(h, false)?;
        }
        let (buf, start) = self.zc.alloc(size)?;
        Ok(ZcBuf {
            storage: Box::new(ZcFrame {
                buf,
                start,
                len: size,
            }),
            node: self.key(),
        })
    }

    fn zcb_mcast(
        &self,
        fast: &HandleFast,
        h: u64,
        guarantee: Guarantee,
        mut buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        let back = |error, buf| {
            Err(ZcSendError {
                error,
                buf: Some(buf),
            })
        };
        if buf.node != self.key() || len > buf.capacity() {
            return back(CsError::InvalidParam, buf);
        }
        if buf.storage.is_small() {
            // a small buffer: the staged (copying) send path; the buffer is
            // kept for reuse under the same lock
            let mut f = lock(&fast.st);
            let staged = try_stage(
                &mut f,
                guarantee,
                &[std::io::IoSlice::new(&buf.storage.bytes()[..len])],
                len,
            );
            match staged {
                Some(Ok(())) => {
                    if f.spare.len() < SPARE_SMALL_ZC {
                        if let Ok(b) = buf.storage.into_any().downcast::<SmallZc>() {
                            f.spare.push(b);
                        }
                    }
                    drop(f);
                    self.after_stage();
                    return Ok(());
                }
                Some(Err(e)) => {
                    drop(f);
                    self.after_stage();
                    return back(e, buf);
                }
                None => {
                    drop(f);
                    let r = self.mcast_fast(
                        fast,
                        h,
                        guarantee,
                        &[std::io::IoSlice::new(&buf.storage.bytes()[..len])],
                    );
                    return match r {
                        Ok(()) => Ok(()),
                        Err(e) => back(e, buf),
                    };
                }
            }
        }
        if len >= self.zc_small {
            // the staged path: the buffer joins the handle's FIFO under the
            // handle's own lock, the node lock is not waited for
            let ZcBuf { storage, node } = buf;
            let mut f = lock(&fast.st);
            match try_stage_zc(&mut f, guarantee, storage, len) {
                Ok(()) => {
                    drop(f);
                    self.after_stage();
                    return Ok(());
                }
                Err((Some(e), storage)) => {
                    drop(f);
                    self.after_stage();
                    return back(e, ZcBuf { storage, node });
                }
                Err((None, storage)) => {
                    drop(f);
                    buf = ZcBuf { storage, node };
                }
            }
        }
        let now = self.now();
        let r = {
            let mut g = lock(&self.inner);
            if !g.drain(now) {
                // staged multicasts the engine refused go first (FIFO)
                g.pump(now);
                drop(g);
                self.wake();
                return back(CsError::TryAgain, buf);
            }
            let max = g.engine.config().max_message_size;
            let fc = g.engine.flow_control_enabled();
            let cap = g.queue_cap;
            let s = match g.live(h) {
                Ok(s) => s,
                Err(e) => return back(e, buf),
            };
            if len > max {
                return back(CsError::TooBig, buf);
            }
            let group = match &s.group {
                Some((group, HState::JoinStarted | HState::Joined)) => group.clone(),
                _ => return back(CsError::NotExist, buf),
            };
            let pid = s.pid;
            if fc || s.mail.bytes() + s.inflight > cap / 2 {
                return back(CsError::TryAgain, buf);
            }
            debug_assert!(matches!(
                g.engine.groups().local_state(pid, &group),
                Some(LocalState::JoinStarted | LocalState::Joined)
            ));
            if len < g.engine.config().zc_copy_threshold {
                // Below the threshold the engine packs the message by copy
                // anyway: copy it now and give the slot back at once, rather
                // than hold a pool slot until the message is delivered back.
                let r = {
                    let iov = [&buf.storage.bytes()[..len]];
                    g.engine.submit(
                        now,
                        Request::Mcast {
                            pid,
                            group: &group,
                            guarantee,
                            iov: &iov,
                        },
                    )
                };
                if let Err(e) = r {
                    return back(e, buf);
                }
                if let Ok(s) = g.get_mut(h) {
                    s.inflight += EVENT_OVERHEAD + len;
                }
                g.pump(now);
                drop(g);
                drop(buf);
                self.wake();
                return Ok(());
            }
            let frame = match buf.storage.into_any().downcast::<ZcFrame<F>>() {
                Ok(f) => *f,
                Err(_) => {
                    return Err(ZcSendError {
                        error: CsError::InvalidParam,
                        buf: None,
                    })
                }
            };
            let (start, cap) = (frame.start, frame.len);
            let r = g.engine.submit_zc(
                now,
                pid,
                &group,
                guarantee,
                frame.buf,
                frame.start..frame.start + len,
            );
            if r.is_ok() {
                if let Ok(s) = g.get_mut(h) {
                    s.inflight += EVENT_OVERHEAD + len;
                }
            }
            g.pump(now);
            // A refused buffer comes back whole, so the caller may retry.
            r.map_err(|e| ZcSendError {
                error: e.error,
                buf: e.buf.map(|buf| ZcBuf {
                    storage: Box::new(ZcFrame {
                        buf,
                        start,
                        len: cap,
                    }),
                    node: self.key(),
                }),
            })
        };
        self.wake();
        r
    }
}

/// One input of [`NodeCore::step`].
#[derive(Debug)]
pub enum StepInput<F> {
    /// Nothing new (local requests may have queued work).
    Wake,
    /// A frame arrived from a node.
    Packet(NodeId, F),
    /// The deadline from the last step may have passed.
    Timeout,
}

/// What a transport holds to drive its node: feed packets and timer
/// expiries, take transmits, learn the next deadline.
pub struct NodeCore<F> {
    pub(crate) shared: Arc<Shared<F>>,
}

impl<F> Clone for NodeCore<F> {
    fn clone(&self) -> Self {
        NodeCore {
            shared: self.shared.clone(),
        }
    }
}

impl<F: FrameBuf + Send + Sync + 'static> NodeCore<F> {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }
    /// The node's clock (the engine's `now`).
    pub fn now(&self) -> Instant {
        self.shared.now()
    }
    /// How application threads wake the transport's loop after queuing work.
    pub fn set_waker(&self, w: Arc<dyn Fn() + Send + Sync>) {
        self.shared.set_waker(w);
    }
    /// A frame arrived from node `from`.
    pub fn handle_packet(&self, from: NodeId, frame: F) {
        self.shared.handle_packet(from, frame);
    }
    /// The deadline from [`NodeCore::poll_outputs`] may have passed.
    pub fn handle_timeout(&self) {
        self.shared.handle_timeout();
    }
    /// Persist ring seqs, hand every transmit to `send`, recycle released
    /// buffers; returns the next deadline. Call after every input and wake.
    pub fn poll_outputs(&self, send: &mut dyn FnMut(Transmit<F>)) -> Option<Instant> {
        self.shared.poll_outputs(send)
    }
    /// `input`, then every output to `send`, then `look` at the engine,
    /// all under one lock (the cheap path for a transport loop); returns
    /// the next deadline and what `look` returned. A transport that steps
    /// must call [`NodeCore::batch_done`] after each batch of steps, before
    /// it waits: handles are signalled there, not at every step.
    pub fn step<R>(
        &self,
        input: StepInput<F>,
        send: &mut dyn FnMut(Transmit<F>),
        look: impl FnOnce(&Engine<F>) -> R,
    ) -> (Option<Instant>, R) {
        self.shared.step(input, send, look)
    }
    /// After a batch of [`NodeCore::step`] calls (before the transport
    /// waits): wakes the handles' dispatchers once for the whole batch.
    pub fn batch_done(&self) {
        self.shared.batch_done();
    }
    /// Look at the engine (state, ring id, stats).
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine<F>) -> R) -> R {
        self.shared.with_engine(f)
    }
}

//! The handle layer: one node's engine, its handle table, and the routing
//! of engine events to handles. No protocol logic: the engine decides
//! everything about groups and order; this layer keeps Corosync's
//! per-connection view (one group per handle, its join state) and the
//! per-handle event queues. It runs no user code: [`crate::cpg`] runs the
//! callbacks on the events [`dispatch`] hands out.
//!
//! | module | owns |
//! |---|---|
//! | this one | [`NodeState`] (one per node), the node lock over [`Locked`] (engine and handle table) |
//! | [`staging`] | a handle's staging area: multicasts queued without the node lock |
//! | [`mailbox`] | a handle's delivery queue, its condvar and eventfd |
//! | [`route`] | engine events to handles; eviction at the queue cap |
//! | [`drive`] | what a transport calls: packets, timeouts, transmits |
//! | [`throttle`] | the opt-in receive throttle (`slow_consumer = "throttle"`): a wait budget per token rotation, stalled handles evicted |
//! | [`ops`] | what the API layer calls, object safe ([`ops::DynNode`]) |
//! | [`send`] | `mcast` and `zcb_*` |
//! | [`dispatch`] | events out of a mailbox, to the API layer's callbacks |
//! | [`zc`] | zero-copy buffers and their allocators |
//!
//! Locking: one mutex (the node lock) over the engine and the handle
//! table. Each handle also has two small locks of its own, so the hot paths
//! do not wait for the node lock:
//! - its staging area ([`staging::Staging`]): multicasts (copied small
//!   messages, zcb buffers) queue there in order; the node lock's holder
//!   drains them into the engine before anything else;
//! - its mailbox ([`mailbox::Mailbox`]): the transport pushes, dispatchers
//!   pop.
//!
//! Lock order: node lock, then a handle's staging or mailbox lock; never
//! the other way. Callbacks run with no lock held (a callback may
//! multicast, query or finalize).
//!
//! A transport drives the engine through [`NodeState`]'s methods in [`drive`]:
//! packets and timer expiries in, transmits out. Application calls submit
//! to the engine under the node lock and wake the transport so it sends
//! what they queued.

use std::any::Any;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::lock;

use cpg_core::engine::{Engine, EngineOptions, FrameBuf, Transmit};
use cpg_core::{CsError, GroupName, Instant, NodeId};

use crate::config::{NodeConfig, SlowConsumer};
use crate::error::StartError;
use crate::state::RingSeqStore;

pub(crate) mod dispatch;
pub(crate) mod drive;
pub(crate) mod mailbox;
pub(crate) mod oplog;
pub(crate) mod ops;
pub(crate) mod route;
pub(crate) mod send;
pub(crate) mod solo;
pub(crate) mod staging;
pub(crate) mod throttle;
pub(crate) mod zc;

pub use self::drive::BufSend;
pub(crate) use self::drive::{monotonic_now, StepInput};
use self::mailbox::{DirtyList, MailEvent, Mailbox};
use self::solo::LoopBack;
use self::staging::Staging;
use self::throttle::Throttle;
use self::zc::ZcAllocator;

/// The opaque per-handle context (`cpg_context_get/set`).
pub type Context = Option<Arc<dyn Any + Send + Sync>>;

/// What the API layer keeps with a handle (its callbacks), locked while a
/// batch of its events is dispatched; dropped when the handle is finalized.
pub(crate) type Callbacks = Arc<Mutex<dyn Any + Send>>;

/// Counters of the handle layer: what the slow-consumer policy did
/// (`docs/ARCHITECTURE.md`, Policies). With `slow_consumer = "evict"` (the
/// default) the `backpressure_*` counters stay 0: the ring never waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Handles evicted as slow consumers (at their queue cap, or stalled).
    pub evictions: u64,
    /// Of those, evicted by the throttle for dispatching nothing for
    /// [`crate::NodeConfig::throttle_stall_limit`] while over half their cap.
    pub evictions_stalled: u64,
    /// Handles open now.
    pub handles: usize,
    /// The most bytes any handle's queue held (out of `handle_queue_bytes`):
    /// how close consumers came to eviction.
    pub queue_peak_bytes: usize,
    /// Throttle: times the transport waited for a backlogged handle before
    /// handing the engine a frame.
    pub backpressure_waits: u64,
    /// Throttle: the total time of those waits.
    pub backpressure_wait: std::time::Duration,
    /// Throttle: token rotations whose wait budget
    /// ([`crate::NodeConfig::throttle_budget`]) ran out, after which frames
    /// went to the engine without waiting until the next rotation.
    pub backpressure_budget_spent: u64,
    /// Token visits a sending thread ran itself on a ring of this node
    /// alone: each ordered or delivered its message before the send
    /// returned, with no thread woken (`docs/ARCHITECTURE.md`, the lone node).
    pub solo_visits: u64,
}

/// A handle's place in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HState {
    JoinStarted,
    Joined,
    /// Leave requested; `joined` once the own join was delivered (a leave
    /// may be requested before: it is ordered after the join).
    LeaveStarted {
        joined: bool,
    },
}

/// One open handle, in the table under the node lock.
pub(crate) struct HandleState<F> {
    pub(crate) pid: u32,
    pub(crate) flags: u32,
    pub(crate) wants_totem: bool,
    pub(crate) callbacks: Callbacks,
    pub(crate) context: Context,
    pub(crate) group: Option<(GroupName, HState)>,
    /// The delivery queue, under its own lock.
    pub(crate) mail: Arc<Mailbox<F>>,
    /// Events routed during the current pump, moved into `mail` under one
    /// lock at its end (not one lock per delivered message).
    pub(crate) outbox: Vec<MailEvent<F>>,
    pub(crate) evicted: bool,
    /// Throttle: since when the handle has been over half its cap without
    /// dispatching, and its mailbox's pop count then.
    pub(crate) stuck: Option<(u64, std::time::Instant)>,
    /// Bytes (event cost) of this handle's accepted multicasts not yet
    /// delivered back to it: with `bytes`, what back-pressure looks at.
    pub(crate) inflight: usize,
    /// The name of the group last joined (set with `group` at join), shared
    /// by this handle's queued deliveries and its staging area.
    pub(crate) group_arc: Option<Arc<GroupName>>,
    /// Set once the handle is finalized, evicted or its node stopped: a
    /// dispatcher checks it between callbacks without taking the lock.
    pub(crate) gone: Arc<AtomicBool>,
    /// The staged send path.
    pub(crate) staging: Arc<Staging>,
}

impl<F> HandleState<F> {
    /// Refresh the staging area's mirror of this handle (open, blocked,
    /// room, group).
    pub(crate) fn refresh_staging(&mut self, fc: bool, half: usize, max: usize, stopped: bool) {
        let mut f = lock(&self.staging.st);
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

/// A slot of the handle table: the check value of the handle in it.
pub(crate) struct Slot<F> {
    pub(crate) check: u32,
    pub(crate) state: Option<HandleState<F>>,
}

/// What the node lock guards: the engine and the handle table.
pub(crate) struct Locked<F> {
    pub(crate) engine: Engine<F>,
    pub(crate) slots: Vec<Slot<F>>,
    pub(crate) free: Vec<u32>,
    /// Leaves (PROCDOWN) of finalized or evicted handles the engine refused
    /// with TRY_AGAIN; retried at every step until accepted.
    pub(crate) pending_leaves: Vec<(u32, GroupName, Arc<Staging>)>,
    pub(crate) store: Option<RingSeqStore>,
    pub(crate) stopped: bool,
    pub(crate) queue_cap: usize,
    /// Counters (`handles` is counted when read).
    pub(crate) stats: NodeStats,
    /// Transport threads waiting in [`NodeState::handle_packet`] for a
    /// backlogged handle to dispatch.
    pub(crate) room_waiters: usize,
    /// `slow_consumer = "throttle"`: the wait budget and its state; `None`
    /// (evict): the transport never waits.
    pub(crate) throttle: Option<Throttle>,
    /// Set by a transport that calls [`NodeState::batch_done`] after each
    /// batch of steps: mailboxes are signalled then, not at every step.
    pub(crate) defer_kicks: bool,
    /// Mailboxes pushed to since their last kick (shared with
    /// [`NodeState`], whose `batch_done` kicks them without the node lock).
    pub(crate) dirty: Arc<DirtyList<F>>,
    /// The operator's log lines' memory (membership, token loss).
    pub(crate) oplog: oplog::OpLog,
    /// Frames a sender's thread took off the engine on a ring of this node
    /// alone ([`NodeState::carry_solo_token`]) that must still leave
    /// through the transport: sent before the engine's next ones.
    pub(crate) deferred: VecDeque<Transmit<F>>,
    /// The deadline the transport waits for: the engine's as of the last
    /// [`NodeState::step`] or [`NodeState::poll_outputs`].
    pub(crate) transport_deadline: Option<Instant>,
}

impl<F> Locked<F> {
    pub(crate) fn slot_of(&self, h: u64) -> Option<usize> {
        let idx = (h & 0xFFFF_FFFF) as usize;
        let check = (h >> 32) as u32;
        let s = self.slots.get(idx)?;
        (check != 0 && s.check == check && s.state.is_some()).then_some(idx)
    }
    pub(crate) fn get(&self, h: u64) -> Result<&HandleState<F>, CsError> {
        let i = self.slot_of(h).ok_or(CsError::BadHandle)?;
        Ok(self.slots[i].state.as_ref().expect("slot_of checked"))
    }
    pub(crate) fn get_mut(&mut self, h: u64) -> Result<&mut HandleState<F>, CsError> {
        let i = self.slot_of(h).ok_or(CsError::BadHandle)?;
        Ok(self.slots[i].state.as_mut().expect("slot_of checked"))
    }
    /// The handle, live and usable: BAD_HANDLE if unknown, LIBRARY if
    /// evicted or the node is stopped.
    pub(crate) fn live(&mut self, h: u64) -> Result<&mut HandleState<F>, CsError> {
        let stopped = self.stopped;
        let s = self.get_mut(h)?;
        if s.evicted || stopped {
            return Err(CsError::Library);
        }
        Ok(s)
    }
}

/// One node's state, shared by its transport (which drives it: see
/// [`crate::transport`]) and its handles: the node lock and what the hot
/// paths reach without it.
pub(crate) struct NodeState<F> {
    pub(crate) locked: Mutex<Locked<F>>,
    pub(crate) node_id: NodeId,
    /// Set once by the transport; read on every staged send (no lock).
    pub(crate) waker: OnceLock<Arc<dyn Fn() + Send + Sync>>,
    /// Set once by a transport that loops a frame for this node back as a
    /// received one: how it turns the engine's bytes into a frame.
    pub(crate) loop_back: OnceLock<LoopBack<F>>,
    pub(crate) zc: Arc<dyn ZcAllocator<F>>,
    check_seed: AtomicU64,
    pub(crate) record: Mutex<Option<Vec<BufSend>>>,
    /// `zc_copy_threshold`: smaller zero-copy buffers live on the heap.
    pub(crate) zc_small: usize,
    /// The mailboxes to signal at the end of a transport batch.
    pub(crate) dirty: Arc<DirtyList<F>>,
    /// Notified when a backlogged handle's queue drained (see `room_waiters`).
    pub(crate) room: Condvar,
    hasher: std::collections::hash_map::RandomState,
}

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    /// The handle layer of the node `config` describes (its engine
    /// settings, queue cap and slow-consumer policy).
    pub(crate) fn new(
        config: &NodeConfig,
        store: Option<RingSeqStore>,
        zc: Arc<dyn ZcAllocator<F>>,
    ) -> Result<Arc<NodeState<F>>, StartError> {
        config.check_queue()?;
        let engine_config = config.engine.clone();
        let initial = match &store {
            Some(s) => s.initial_ring_seq()?,
            None => 1,
        };
        let node_id = engine_config.node_id;
        let zc_small = engine_config.zc_copy_threshold;
        let throttle = match config.slow_consumer {
            SlowConsumer::Evict => None,
            SlowConsumer::Throttle => Some(Throttle::new(
                config.throttle_budget(),
                config.throttle_stall_limit(),
            )),
        };
        let engine = Engine::new(
            engine_config,
            EngineOptions::default(),
            initial,
            Instant::ZERO,
        )
        .map_err(StartError::Engine)?;
        let hasher = std::collections::hash_map::RandomState::new();
        let dirty = Arc::new(DirtyList::new());
        Ok(Arc::new(NodeState {
            locked: Mutex::new(Locked {
                engine,
                slots: Vec::new(),
                free: Vec::new(),
                pending_leaves: Vec::new(),
                store,
                stopped: false,
                queue_cap: config.handle_queue_bytes,
                stats: NodeStats::default(),
                room_waiters: 0,
                throttle,
                defer_kicks: false,
                dirty: dirty.clone(),
                oplog: oplog::OpLog::default(),
                deferred: VecDeque::new(),
                transport_deadline: None,
            }),
            node_id,
            waker: OnceLock::new(),
            loop_back: OnceLock::new(),
            zc,
            check_seed: AtomicU64::new(0),
            record: Mutex::new(None),
            zc_small,
            dirty,
            room: Condvar::new(),
            hasher,
        }))
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.get() {
            w();
        }
    }

    /// After staging (or refusing) on a fast path: whoever holds the node
    /// lock drains. If it is free, this thread moves staged messages into
    /// the engine now (keeping that work off the transport thread, which
    /// forwards the token); if not, the holder's next step does. On a ring
    /// of this node alone this thread also carries the token
    /// ([`solo`]) for a message of `staged` bytes (`None`: nothing was
    /// staged), and wakes the transport only if that left it work.
    pub(crate) fn after_stage(&self, h: u64, staged: Option<usize>) {
        if let Ok(mut g) = self.locked.try_lock() {
            let now = self.now();
            let drained = g.drain(now);
            g.pump(now);
            let carried = self.carry_solo_token(&mut g, h, staged, now);
            g.refresh_staging();
            // staged messages or leaves the engine refused for now are
            // the transport's to retry
            let transport_needed =
                !carried || !drained || !g.pending_leaves.is_empty() || g.transport_needed();
            drop(g);
            if carried {
                self.dirty.kick();
            }
            if !transport_needed {
                return;
            }
        }
        self.wake();
    }

    pub(crate) fn random_check(&self) -> u32 {
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

    /// This node's identity for buffers and dispatch marks: its address.
    pub(crate) fn key(&self) -> usize {
        self as *const Self as *const u8 as usize
    }

    /// Run `f` on the engine under the lock, then route events and wake the
    /// transport (it sends whatever `f` queued).
    pub(crate) fn submit_with<R>(&self, f: impl FnOnce(&mut Locked<F>, Instant) -> R) -> R {
        let now = self.now();
        let r = {
            let mut g = lock(&self.locked);
            g.drain(now);
            let r = f(&mut g, now);
            g.pump(now);
            g.refresh_staging();
            r
        };
        self.wake();
        r
    }
}

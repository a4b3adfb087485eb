//! The connection: setup (`Hello`, `Welcome`, the mapping), the state
//! behind the connection's one lock, requests and their replies, and
//! waiting (the ring wake-ups of `docs/spec/ipc.md` §5, the daemon's death
//! on the socket), and the pollable fd (the socket, with its doorbell).
//!
//! Waiting: at most one thread sleeps in `poll` on the client eventfd and
//! the socket's hang-up (the *poller*); every other thread that must wait sleeps on
//! the condvar and is woken by the poller, which reads the event ring after
//! each wake-up. Any thread that reads records while a poller sleeps kicks
//! it (a write to the client eventfd), so nothing it waits for is missed.
//! Nobody drains the eventfd while a poller sleeps: its wake-up would be
//! lost.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use cpg_core::ipc::{Hello, Message, Model, Op, Reply, ReplyBody, Request, RequestKind, Welcome};
use cpg_core::pool::SlotId;
use cpg_core::{CsError, GroupName, MemberAddr};
use cpg_ipc::ring::WriteError;
use cpg_ipc::{ClientConn, EventFd, RingRx, RingTx, SharedMem};

use super::events::Events;
use crate::cpg::IterationDescription;
use crate::handles::route::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
use crate::handles::{Callbacks, Context};

/// The connection's lock, held.
pub(super) type Guard<'a> = MutexGuard<'a, State>;

/// A handle that is a connection to cpgd (one connection per handle, as
/// in Corosync): what [`crate::Cpg::connect`] opens.
pub(crate) struct ClientNode {
    /// The handle's value: a random check in the high 32 bits.
    pub(super) handle: u64,
    /// The connection's state, under its one lock.
    pub(super) st: Mutex<State>,
    /// Threads waiting while another one polls.
    pub(super) cond: Condvar,
    /// The socket and the eventfds; closed when the last reference goes
    /// (a thread may poll them while another finalizes).
    pub(super) fds: Fds,
    /// What the daemon said at setup.
    pub(super) welcome: Welcome,
    /// The zero-copy region in the mapping: (offset, length).
    pub(super) zc_region: (usize, usize),
    /// This node itself, for the zero-copy buffers it hands out (they give
    /// their slot back when dropped).
    pub(super) me: Weak<ClientNode>,
}

/// The file descriptors of a connection.
pub(super) struct Fds {
    /// The Unix socket to cpgd: what `fd_get` returns (its peer is the
    /// daemon, `SO_PEERCRED` says so), readable through doorbell bytes
    /// while events are pending and for good once the daemon hangs up.
    pub(super) sock: Arc<OwnedFd>,
    /// Signalled by the daemon: events or replies waiting, request room
    /// made (this side's threads sleep on it, never the application).
    pub(super) client_wake: EventFd,
    /// Signalled by this client: requests waiting, event room made.
    pub(super) daemon_wake: EventFd,
}

/// Where a handle is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    /// `finalize` started (on some thread): every other call is BAD_HANDLE.
    Finalizing,
    Finalized,
}

/// The mapping and the ring ends.
pub(super) struct Conn {
    pub(super) mem: Arc<SharedMem>,
    pub(super) tx: RingTx,
    pub(super) rx: RingRx,
    /// The delivery ring: messages dispatched where they lie.
    pub(super) drx: Option<RingRx>,
}

/// A request whose reply is due.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) kind: RequestKind,
    /// The group of a `JOIN` or `LEAVE` (its reply moves the join state).
    pub(super) group: Option<GroupName>,
}

/// A successful reply's body, owned (read out of the ring).
#[derive(Debug, Clone)]
pub(super) enum Answer {
    Done,
    ZcAlloc {
        slot: SlotId,
        offset: u64,
        capacity: u32,
    },
    Membership {
        total: u32,
        offset: u32,
        members: Vec<MemberAddr>,
    },
    LocalGet,
    IterationInitialize(u32),
    IterationNext(Vec<IterationDescription>),
    FlowControl(bool),
    Status(Box<crate::status::StatusPage>),
}

impl Answer {
    fn new(body: &ReplyBody<'_>) -> Answer {
        match *body {
            ReplyBody::Done => Answer::Done,
            ReplyBody::ZcAlloc {
                slot,
                offset,
                capacity,
            } => Answer::ZcAlloc {
                slot,
                offset,
                capacity,
            },
            ReplyBody::Membership {
                total,
                offset,
                members,
            } => Answer::Membership {
                total,
                offset,
                members: members.iter().collect(),
            },
            ReplyBody::LocalGet { .. } => Answer::LocalGet,
            ReplyBody::IterationInitialize { iter_id } => Answer::IterationInitialize(iter_id),
            ReplyBody::IterationNext { entries } => Answer::IterationNext(
                entries
                    .iter()
                    .map(|e| IterationDescription {
                        group: e.group,
                        nodeid: e.nodeid,
                        pid: e.pid,
                    })
                    .collect(),
            ),
            ReplyBody::FlowControlState { enabled } => Answer::FlowControl(enabled),
            ReplyBody::Status(ref s) => Answer::Status(Box::new(crate::status::StatusPage::new(s))),
        }
    }
}

/// The doorbell on the socket as this side knows it. The application's
/// fd is readable while a byte is there; this side reads them back only
/// when nothing is pending, after every byte it knows of came.
#[derive(Debug, Default)]
pub(super) struct Bell {
    /// The `BELL` bit was set by this side and not seen taken since.
    pub(super) armed: bool,
    /// Doorbell bytes the daemon sent or is sending, not yet read.
    pub(super) owed: usize,
    /// Echoes asked for, not yet read.
    pub(super) echoes: usize,
}

impl Bell {
    /// Most time spent waiting for owed bytes (the daemon writes them
    /// right after it takes the bit; this is for a daemon descheduled in
    /// between, and a bound for one that died without closing).
    const PATIENCE_MS: i64 = 1000;

    /// Read the bytes on the socket until every owed one came (or the
    /// patience ran out, or the daemon hung up).
    fn collect(&mut self, sock: BorrowedFd<'_>) {
        let end =
            std::time::Instant::now() + std::time::Duration::from_millis(Self::PATIENCE_MS as u64);
        loop {
            let n = cpg_ipc::bell::pending(sock);
            if n > 0 {
                let (read, echoes) = cpg_ipc::bell::drain(sock, n);
                self.echoes = self.echoes.saturating_sub(echoes);
                self.owed = self.owed.saturating_sub(read - echoes);
            }
            if self.owed == 0 && self.echoes == 0 {
                return;
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero()
                || cpg_ipc::setup::peer_gone(sock)
                || !cpg_ipc::bell::wait_readable(sock, left.as_millis() as i64)
            {
                self.owed = 0;
                self.echoes = 0;
                return;
            }
        }
    }
}

/// Everything about a connection that changes, under its one lock.
pub(super) struct State {
    /// `None` once finalized (the mapping goes when the last zero-copy
    /// buffer does).
    pub(super) conn: Option<Conn>,
    pub(super) phase: Phase,
    /// The daemon hung up, or broke the protocol (then this side closed).
    pub(super) dead: bool,
    /// The daemon evicted this handle (`EVICTED`), or its queue went over
    /// its bound.
    pub(super) evicted: bool,
    /// `open` ran (a connection is one handle).
    pub(super) opened: bool,
    pub(super) callbacks: Option<Callbacks>,
    pub(super) context: Context,
    /// The handle's events and join state.
    pub(super) ev: Events,
    /// The next `req_id` to try.
    next_req: u32,
    /// Requests a thread waits for.
    pub(super) awaiting: HashMap<u32, Pending>,
    /// Their replies, until taken.
    pub(super) replies: HashMap<u32, Result<Answer, CsError>>,
    /// Requests nobody waits for (sent from a drop, or whose waiter gave
    /// up): the reply is read and dropped.
    pub(super) detached: HashMap<u32, Pending>,
    /// Error replies nobody waited for (an asynchronous `MCAST` the daemon
    /// refused: a correct client never gets one).
    pub(super) async_errors: u64,
    /// A message in pieces holds the request ring (nothing else may go
    /// between its pieces).
    pub(super) tx_busy: bool,
    /// A `JOIN` or `LEAVE` is in flight (one at a time, as the embedded
    /// node's are atomic).
    pub(super) join_busy: bool,
    /// Zero-copy slots this handle holds: offset in the region → end.
    pub(super) zc_live: BTreeMap<u64, u64>,
    /// Slots allocated ahead (`ZC_ALLOC` sent with nobody waiting, its
    /// reply kept here): `zcb_alloc` takes one without a round trip to the
    /// daemon. (slot, offset, capacity); still the client's in the daemon's
    /// eyes, given back with the connection.
    pub(super) zc_stash: Vec<(SlotId, u64, u32)>,
    /// `ZC_ALLOC`s sent ahead whose reply has not come yet.
    pub(super) zc_prefetching: usize,
    /// Slots of dropped buffers still to give back (`ZC_FREE`).
    pub(super) zc_frees: Vec<SlotId>,
    /// A thread sleeps in `poll` (see the module docs).
    pub(super) poller: bool,
    /// Threads sleeping on the condvar.
    pub(super) waiters: usize,
    /// The doorbell as this side knows it (see [`Bell`]).
    pub(super) bell: Bell,
    /// Records were read since the pollable fd was last made right (see
    /// [`ClientNode::settle_if_needed`]).
    pub(super) unsettled: bool,
    /// Why the connection was closed by this side (for the logs).
    pub(super) broke: Option<&'static str>,
    /// Whether a send waits for its own delivery ([`super::echo`]).
    pub(super) echo: super::echo::EchoWait,
    /// When a full request ring last made a send look for the daemon's
    /// hang-up (see [`ClientNode::full`]).
    pub(super) full_probed: Option<std::time::Instant>,
}

static CHECK_SEED: AtomicU64 = AtomicU64::new(0);

/// A random non-zero check value for a handle (not all ones: libqb's
/// bypass value).
fn random_check() -> u32 {
    let hasher = std::collections::hash_map::RandomState::new();
    loop {
        let mut h = hasher.build_hasher();
        h.write_u64(CHECK_SEED.fetch_add(1, Ordering::Relaxed));
        h.write_u64(crate::handles::monotonic_now().0);
        let v = h.finish() as u32;
        if v != 0 && v != u32::MAX {
            return v;
        }
    }
}

impl ClientNode {
    /// Connect to the daemon at `path` as a model v1 handle with `flags`,
    /// map the connection and check it. `totem`: the handle has a totem
    /// callback (the daemon sends every totem confchg, else only the
    /// initial one `flags` may ask for).
    ///
    /// # Errors
    /// `INVALID_PARAM` for a flag other than 0x01 (before connecting); the
    /// daemon's `REFUSED` code (`ACCESS`, `TRY_AGAIN`, `VERSION`, ...);
    /// `LIBRARY` when no daemon answers or the setup breaks the protocol.
    pub(crate) fn connect(
        path: &Path,
        flags: u32,
        totem: bool,
    ) -> Result<Arc<ClientNode>, CsError> {
        if flags & !MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0 {
            return Err(CsError::InvalidParam);
        }
        let model = if flags & MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0 {
            Model::V1InitialTotemConfchg
        } else {
            Model::V1
        };
        let (sock, welcome, fds) =
            cpg_ipc::setup::connect(path, Hello { model, totem }).map_err(|e| e.cs_error())?;
        let c = ClientConn::attach(welcome, fds).map_err(|_| CsError::Library)?;
        let zc_region = c.zc_region();
        let check = random_check();
        let state = State {
            conn: Some(Conn {
                mem: c.mem,
                tx: c.requests,
                rx: c.events,
                drx: c.deliveries,
            }),
            phase: Phase::Open,
            dead: false,
            evicted: false,
            opened: false,
            callbacks: None,
            context: None,
            ev: Events::new(&welcome, flags),
            next_req: 1,
            awaiting: HashMap::new(),
            replies: HashMap::new(),
            detached: HashMap::new(),
            async_errors: 0,
            tx_busy: false,
            join_busy: false,
            zc_live: BTreeMap::new(),
            zc_stash: Vec::new(),
            echo: super::echo::EchoWait::default(),
            zc_prefetching: 0,
            zc_frees: Vec::new(),
            poller: false,
            waiters: 0,
            bell: Bell::default(),
            unsettled: false,
            broke: None,
            full_probed: None,
        };
        Ok(Arc::new_cyclic(|me| ClientNode {
            handle: (u64::from(check) << 32) | (welcome.conn_id & 0xFFFF_FFFF),
            st: Mutex::new(state),
            cond: Condvar::new(),
            fds: Fds {
                sock: Arc::new(OwnedFd::from(sock)),
                client_wake: c.client_wake,
                daemon_wake: c.daemon_wake,
            },
            welcome,
            zc_region,
            me: me.clone(),
        }))
    }

    pub(super) fn lock(&self) -> Guard<'_> {
        crate::lock(&self.st)
    }

    /// This connection's identity for zero-copy buffers and dispatch marks.
    pub(super) fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Wake the threads sleeping on the condvar (only if some are: a
    /// notify is a syscall even without waiters).
    pub(super) fn notify(&self, g: &State) {
        if g.waiters > 0 {
            self.cond.notify_all();
        }
    }

    /// Read what the daemon published (see [`State::pump`]); a poller
    /// sleeping meanwhile is kicked and waiters notified, since what was
    /// read may be theirs.
    pub(super) fn pump(&self, g: &mut State) -> bool {
        let got = g.pump(&self.fds);
        if got {
            g.unsettled = true;
            self.wake_waiters(g);
        }
        got
    }

    /// Make every waiting thread check again: the condvar's, and the
    /// poller, kicked through the eventfd (a state it may wait for
    /// changed: records read, the ring let go by a message in pieces, a
    /// finalize).
    pub(super) fn wake_waiters(&self, g: &mut State) {
        if g.poller {
            self.fds.client_wake.signal();
        }
        self.notify(g);
    }

    /// Whether the daemon hung up (a syscall: for calls answered locally
    /// that Corosync would answer through the daemon, and for a
    /// `TRY_AGAIN` that might be a dead daemon's full ring).
    pub(super) fn probe(&self, g: &mut State) -> bool {
        if !g.dead && cpg_ipc::setup::peer_gone(self.fds.sock.as_fd()) {
            self.pump(g);
            g.on_dead();
        }
        g.dead
    }

    /// Leave the lock with the pollable fd right: readable while events
    /// are pending; otherwise drained, with `consumer_sleeping` set so the
    /// daemon's next event signals it (`docs/spec/ipc.md` §5).
    pub(super) fn finish(&self, mut g: Guard<'_>) {
        g.settle(&self.fds);
    }

    /// [`ClientNode::finish`] if this call read records (a send that read
    /// the event ring for flow control); else nothing, so a send costs no
    /// syscall for the fd.
    pub(super) fn settle_if_needed(&self, g: Guard<'_>) {
        if g.unsettled {
            self.finish(g);
        }
    }

    /// Wait until `ready` answers (it runs under the lock, after every
    /// wake-up and every read of the event ring), the daemon dies, or the
    /// handle is finalized. `ready` sees the daemon's death first as
    /// `dead`; if it answers nothing then, the wait ends with `LIBRARY`.
    pub(super) fn wait<'a, T>(
        &'a self,
        mut g: Guard<'a>,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, CsError>>,
    ) -> (Guard<'a>, Result<T, CsError>) {
        loop {
            if let Some(r) = ready(&mut g) {
                return (g, r);
            }
            self.pump(&mut g);
            if let Some(r) = ready(&mut g) {
                return (g, r);
            }
            // nothing will ever come: never sleep
            if g.conn.is_none() {
                return (g, Err(CsError::BadHandle));
            }
            if g.dead || g.evicted {
                return (g, Err(CsError::Library));
            }
            if g.poller {
                g.waiters += 1;
                g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
                g.waiters -= 1;
                continue;
            }
            // Events this thread reads past while it sleeps keep the
            // application's fd readable by themselves: the daemon rang the
            // doorbell when it published them, or a byte was already there.
            let c = g.conn.as_mut().expect("checked above");
            match c.rx.prepare_sleep() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => {
                    g.broken(&self.fds, "impossible event ring head");
                    continue;
                }
            }
            g.poller = true;
            drop(g);
            let r = self.fds.client_wake.wait(self.fds.sock.as_fd(), -1);
            g = self.lock();
            g.poller = false;
            // The wake-up is consumed under the lock; every waiter then
            // re-checks the rings (and sets its flags again) before it
            // sleeps, so nothing signalled meanwhile is lost.
            self.fds.client_wake.drain();
            if let Some(c) = g.conn.as_ref() {
                c.rx.awake();
            }
            if !matches!(r, Ok((_, false))) {
                // hang-up: what the daemon published before it (a FINALIZE
                // reply, an EVICTED) is still read
                self.pump(&mut g);
                g.on_dead();
            }
            self.notify(&g);
        }
    }

    /// Send `op` and wait for its reply, once there is room in the request
    /// ring, no message in pieces holds it, and (for a join or leave) no
    /// other join or leave is in flight. `gate` says when to give up
    /// (checked before sending and while waiting; a reply that came is
    /// taken first).
    pub(super) fn send_and_wait<'a>(
        &'a self,
        g: Guard<'a>,
        op: Op<'_>,
        group: Option<GroupName>,
        gate: impl Fn(&State) -> Option<CsError>,
    ) -> (Guard<'a>, Result<Answer, CsError>) {
        let kind = op.kind();
        let join_leave = matches!(kind, RequestKind::Join | RequestKind::Leave);
        let mut req = Request { req_id: 0, op };
        let body_len = req.body_len();
        let (mut g, room) = self.wait(g, |s| {
            if let Some(e) = gate(s) {
                return Some(Err(e));
            }
            if s.tx_busy || (join_leave && s.join_busy) {
                return None;
            }
            s.flush_frees(&self.fds);
            s.room(&self.fds, body_len)
        });
        if let Err(e) = room {
            return (g, Err(e));
        }
        req.req_id = g.alloc_id();
        let id = req.req_id;
        if let Err(e) = g.write(&self.fds, &req) {
            return (g, Err(e));
        }
        match kind {
            RequestKind::Join => g.ev.join_inflight = group.clone(),
            RequestKind::Leave => g.ev.leave_inflight = group.clone(),
            _ => {}
        }
        if join_leave {
            g.join_busy = true;
        }
        g.awaiting.insert(id, Pending { kind, group });
        g.publish(&self.fds);
        self.wait(g, |s| {
            if let Some(r) = s.replies.remove(&id) {
                return Some(r);
            }
            let e = gate(s).or((s.dead || s.evicted).then_some(CsError::Library))?;
            // a reply that comes later is read and dropped
            if let Some(p) = s.awaiting.remove(&id) {
                s.detached.insert(id, p);
            }
            Some(Err(e))
        })
    }

    /// [`ClientNode::send_and_wait`] for a handle's ordinary request: gives
    /// up with `BAD_HANDLE` once finalize started, `LIBRARY` once the
    /// daemon is gone.
    pub(super) fn request(&self, h: u64, op: Op<'_>) -> Result<Answer, CsError> {
        let g = self.lock();
        g.check(self.handle, h, false)?;
        let group = match &op {
            Op::Join { group } | Op::Leave { group } => Some(group.clone()),
            _ => None,
        };
        let (g, r) = self.send_and_wait(g, op, group, State::gate);
        self.finish(g);
        r
    }

    /// Send `op` with no one waiting for its reply (from a drop): now if
    /// the request ring has room, else not at all.
    pub(super) fn send_detached(&self, g: &mut State, op: Op<'_>) -> bool {
        let sent = self.write_detached(g, op);
        if sent {
            g.publish(&self.fds);
        }
        sent
    }

    /// [`ClientNode::send_detached`] without publishing: the caller
    /// publishes once after writing several.
    pub(super) fn write_detached(&self, g: &mut State, op: Op<'_>) -> bool {
        if g.phase != Phase::Open || g.dead || g.evicted || g.tx_busy {
            return false;
        }
        let kind = op.kind();
        let mut req = Request { req_id: 0, op };
        if g.fits_now(&self.fds, req.body_len()) != Ok(true) {
            return false;
        }
        req.req_id = g.alloc_id();
        if g.write(&self.fds, &req).is_err() {
            return false;
        }
        g.detached.insert(req.req_id, Pending { kind, group: None });
        true
    }
}

impl State {
    /// `BAD_HANDLE` for another handle or once finalize started, `LIBRARY`
    /// (unless `local_only`) once the daemon is gone or evicted this handle.
    pub(super) fn check(&self, handle: u64, h: u64, local_only: bool) -> Result<(), CsError> {
        if h != handle {
            return Err(CsError::BadHandle);
        }
        match self.gate() {
            Some(CsError::Library) if local_only => Ok(()),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Why an ordinary call must stop now, if it must.
    pub(super) fn gate(&self) -> Option<CsError> {
        if self.phase != Phase::Open {
            Some(CsError::BadHandle)
        } else if self.dead || self.evicted {
            Some(CsError::Library)
        } else {
            None
        }
    }

    /// A `req_id` no request in flight has.
    pub(super) fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_req;
            self.next_req = self.next_req.wrapping_add(1);
            if !self.awaiting.contains_key(&id) && !self.detached.contains_key(&id) {
                return id;
            }
        }
    }

    /// Room for a request of `body_len` now: `Some(Ok)`; `None`: wait (the
    /// daemon is asked for a wake-up when it makes room); `Some(Err)`: the
    /// daemon published an impossible tail (the connection is closed).
    pub(super) fn room(&mut self, fds: &Fds, body_len: usize) -> Option<Result<(), CsError>> {
        let c = self.conn.as_mut()?;
        let r = match c.tx.fits(body_len, 0) {
            Ok(true) => Ok(true),
            Ok(false) => c.tx.prepare_wait(body_len, 0),
            Err(e) => Err(e),
        };
        match r {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(_) => {
                self.broken(fds, "impossible request ring tail");
                Some(Err(CsError::Library))
            }
        }
    }

    /// Room for a request of `body_len` now, without asking the daemon
    /// for a wake-up (a send that answers TRY_AGAIN waits for nothing).
    pub(super) fn fits_now(&mut self, fds: &Fds, body_len: usize) -> Result<bool, CsError> {
        let c = self.conn.as_mut().ok_or(CsError::BadHandle)?;
        c.tx.fits(body_len, 0).map_err(|_| {
            self.broken(fds, "impossible request ring tail");
            CsError::Library
        })
    }

    /// Write one request record (not yet published).
    pub(super) fn write(&mut self, fds: &Fds, req: &Request<'_>) -> Result<(), CsError> {
        let c = self.conn.as_mut().ok_or(CsError::BadHandle)?;
        match c.tx.write(req, 0) {
            Ok(()) => Ok(()),
            Err(WriteError::Full) => Err(CsError::TryAgain),
            Err(WriteError::TooLarge | WriteError::Msg(_)) => Err(CsError::InvalidParam),
            Err(WriteError::Corrupt) => {
                self.broken(fds, "impossible request ring tail");
                Err(CsError::Library)
            }
        }
    }

    /// Publish what was written; signal the daemon only if it sleeps.
    pub(super) fn publish(&mut self, fds: &Fds) {
        if let Some(c) = self.conn.as_mut() {
            if c.tx.publish() {
                fds.daemon_wake.signal();
            }
        }
    }

    /// The daemon hung up: every call answers `LIBRARY`; queued events are
    /// dropped (as an evicted or stopped embedded handle's).
    pub(super) fn on_dead(&mut self) {
        if !self.dead {
            self.dead = true;
            self.ev.clear();
        }
    }

    /// The daemon broke the protocol (a malformed event, an impossible
    /// index, a slot that is not this handle's to write): close the
    /// connection as if it had died (`docs/spec/ipc.md` §10).
    pub(super) fn broken(&mut self, fds: &Fds, why: &'static str) {
        if self.broke.is_none() {
            self.broke = Some(why);
        }
        self.on_dead();
        // the daemon sees the hang-up; the pollable fd becomes readable
        let _ = rustix::net::shutdown(&*fds.sock, rustix::net::Shutdown::Both);
    }

    /// See [`ClientNode::finish`]: the doorbell protocol's client side
    /// (`cpg_core::ipc::wake`, "Which eventfd, and the doorbell").
    fn settle(&mut self, fds: &Fds) {
        self.unsettled = false;
        // A dead daemon closed the socket, an eviction closes it, a broken
        // connection was shut down here: readable for good already.
        if self.dead || self.evicted || self.conn.is_none() {
            return;
        }
        let sock = fds.sock.as_fd();
        loop {
            if self.dead || self.evicted {
                return;
            }
            let Some(c) = self.conn.as_mut() else {
                return;
            };
            if !self.ev.is_empty() || c.rx.has_records() {
                self.keep_readable(sock);
                return;
            }
            // Nothing pending: read what is owed and was left, then arm the
            // doorbell and look at the ring once more.
            if self.bell.armed && !c.rx.bell_armed() {
                // the daemon took it for events read since: its byte is owed
                self.bell.armed = false;
                self.bell.owed += 1;
            }
            self.bell.collect(sock);
            let left = cpg_ipc::bell::pending(sock);
            let c = self.conn.as_mut().expect("checked above");
            match c.rx.arm_bell() {
                Ok(true) => {
                    let (_, echoes) = cpg_ipc::bell::drain(sock, left);
                    self.bell.echoes = self.bell.echoes.saturating_sub(echoes);
                    self.bell.armed = true;
                    return;
                }
                Ok(false) => {
                    // Published meanwhile (or before the daemon saw the
                    // bit): whether it still owes a byte for it.
                    if !c.rx.disarm_bell() {
                        self.bell.owed += 1;
                    }
                    self.bell.armed = false;
                    if !self.pump(fds) {
                        continue;
                    }
                }
                Err(_) => {
                    self.broken(fds, "impossible event ring head");
                    return;
                }
            }
        }
    }

    /// Events are pending: make sure the socket is readable (a byte is
    /// there or owed), asking the daemon for an echo if nothing else
    /// makes it so.
    fn keep_readable(&mut self, sock: BorrowedFd<'_>) {
        if self.bell.owed > 0 || self.bell.echoes > 0 {
            return;
        }
        if self.bell.armed {
            if let Some(c) = self.conn.as_ref() {
                if !c.rx.bell_armed() {
                    // the daemon took it for these events: its byte comes
                    self.bell.armed = false;
                    self.bell.owed += 1;
                    return;
                }
            }
        }
        if cpg_ipc::bell::pending(sock) > 0 {
            return;
        }
        if self.bell.armed {
            if let Some(c) = self.conn.as_ref() {
                if !c.rx.disarm_bell() {
                    self.bell.owed += 1;
                    self.bell.armed = false;
                    return;
                }
            }
            self.bell.armed = false;
        }
        if cpg_ipc::bell::request_echo(sock) {
            self.bell.echoes += 1;
        }
    }

    /// A reply read from the ring: to its waiter, or dropped if nobody
    /// waits; the join state moves with `JOIN`/`LEAVE` answers in ring
    /// order. `Err`: a reply to no request, or of another kind.
    pub(super) fn on_reply(&mut self, r: &Reply<'_>) -> Result<(), &'static str> {
        let id = r.req_id;
        let (p, awaited) = match self.awaiting.remove(&id) {
            Some(p) => (p, true),
            None => match self.detached.remove(&id) {
                Some(p) => (p, false),
                None => {
                    if matches!(r.op, RequestKind::Mcast | RequestKind::McastZc)
                        && r.result.is_err()
                    {
                        // an asynchronous send the daemon refused
                        self.async_errors += 1;
                        return Ok(());
                    }
                    return Err("a reply to no request");
                }
            },
        };
        if p.kind != r.op {
            return Err("a reply of another kind than its request");
        }
        let result = r.result.as_ref().map(Answer::new).map_err(|e| *e);
        match (p.kind, &result, p.group) {
            (RequestKind::Join, Ok(_), Some(g)) => self.ev.on_join_reply(g),
            (RequestKind::Leave, Ok(_), Some(g)) => self.ev.on_leave_reply(&g),
            (RequestKind::FlowControlStateGet, Ok(Answer::FlowControl(on)), _) => {
                self.ev.fc = *on;
            }
            _ => {}
        }
        if matches!(p.kind, RequestKind::Join | RequestKind::Leave) {
            self.join_busy = false;
            self.ev.join_inflight = None;
            self.ev.leave_inflight = None;
        }
        if !awaited && p.kind == RequestKind::ZcAlloc {
            // a slot allocated ahead: kept for the next zcb_alloc
            self.zc_prefetching = self.zc_prefetching.saturating_sub(1);
            if let Ok(Answer::ZcAlloc {
                slot,
                offset,
                capacity,
            }) = result
            {
                self.zc_stash.push((slot, offset, capacity));
            }
            return Ok(());
        }
        if awaited {
            self.replies.insert(id, result);
        } else if result.is_err() {
            self.async_errors += 1;
        }
        Ok(())
    }
}

//! A handle's mailbox: its delivery queue under its own lock, the condvar
//! blocking dispatchers wait on, and its eventfd (readable while events
//! are pending, or once the handle is gone). The router pushes (under the
//! node lock too), dispatchers pop and wait without the node lock, so a
//! dispatching thread never makes the transport wait for it nor the
//! transport a dispatcher (perf, 1 member 64 B: a quarter of the transport
//! thread's time went to futex waits on the node lock).
//!
//! Wake-ups are batched: a push marks the mailbox dirty and lists it once;
//! the fd and the waiters are signalled at the next kick (once per
//! transport step or batch), not per event.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use cpg_core::engine::Payload;
use cpg_core::{GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

use super::lock;

/// Fixed cost charged per queued event on top of its payload bytes.
pub(crate) const EVENT_OVERHEAD: usize = 128;

/// What a handle's queue holds.
pub(crate) enum MailEvent<F> {
    Deliver {
        group: Arc<GroupName>,
        sender: MemberAddr,
        guarantee: Guarantee,
        payload: Payload<F>,
    },
    ConfChg(Arc<ConfChgData>),
    Totem(Arc<(RingId, Vec<NodeId>)>),
}

/// A group's confchg, shared by the queues of every local member.
pub(crate) struct ConfChgData {
    pub(crate) group: GroupName,
    pub(crate) members: Vec<MemberAddr>,
    pub(crate) left: Vec<(MemberAddr, Reason)>,
    pub(crate) joined: Vec<(MemberAddr, Reason)>,
}

impl<F> MailEvent<F> {
    /// What the event counts against the handle's queue cap.
    pub(crate) fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                MailEvent::Deliver { payload, .. } => payload.range.len(),
                MailEvent::ConfChg(c) => 8 * (c.members.len() + c.left.len() + c.joined.len()),
                MailEvent::Totem(t) => 4 * t.1.len(),
            }
    }
}

/// A handle's delivery queue under its own lock (see the module docs).
pub(crate) struct Mailbox<F> {
    pub(crate) st: Mutex<MailState<F>>,
    /// Dispatchers in BLOCKING/ONE wait here.
    pub(crate) cond: Condvar,
    /// `st.bytes`, readable without the lock (back-pressure checks).
    pub(crate) bytes: AtomicUsize,
    /// Batches dispatchers took out: the throttle reads it to tell a slow
    /// consumer from one that makes no progress at all.
    pub(crate) pops: AtomicU64,
    /// Events were pushed since the last `kick`: the fd and waiting
    /// dispatchers are signalled once per transport step, not per event, so
    /// a dispatcher wakes to a batch.
    dirty: AtomicBool,
    /// The handle's fd: readable while the queue is not empty (or closed).
    pub(crate) fd: Arc<OwnedFd>,
}

pub(crate) struct MailState<F> {
    queue: VecDeque<MailEvent<F>>,
    /// Sum of the queued events' costs.
    bytes: usize,
    /// The eventfd holds a count.
    signaled: bool,
    /// Threads waiting on `cond` (notify only when some are: a condvar
    /// notify is a futex syscall even without waiters).
    pub(crate) waiters: usize,
    /// The waiters were notified and none has run since.
    pub(crate) woken: bool,
    /// Finalized, evicted or stopped: the queue is gone, dispatchers return.
    pub(crate) closed: bool,
}

impl<F> Mailbox<F> {
    pub(crate) fn new(fd: Arc<OwnedFd>) -> Mailbox<F> {
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
            pops: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            fd,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Queue `evs` in order (emptying it) while the queue stays within
    /// `cap` (an empty queue always takes one event); false if one did not
    /// fit (it and those after it are dropped: the caller evicts).
    pub(crate) fn push_many(
        self: &Arc<Self>,
        evs: &mut Vec<MailEvent<F>>,
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

    /// Move up to `max` events of `mb`'s queue (`m`, its locked state)
    /// into `out`: how many, and the queued bytes before.
    pub(crate) fn pop_batch(
        mb: &Mailbox<F>,
        m: &mut MailState<F>,
        max: usize,
        out: &mut VecDeque<MailEvent<F>>,
    ) -> (usize, usize) {
        let before = m.bytes;
        let n = m.queue.len().min(max);
        for _ in 0..n {
            let ev = m.queue.pop_front().expect("counted");
            m.bytes -= ev.cost();
            out.push_back(ev);
        }
        if n > 0 {
            mb.pops.fetch_add(1, Ordering::Relaxed);
        }
        mb.bytes.store(m.bytes, Ordering::Relaxed);
        if m.queue.is_empty() && m.signaled {
            m.signaled = false;
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&*mb.fd, &mut b);
        }
        (n, before)
    }

    /// Drop the queue; wake pollers and blocked dispatchers (they find the
    /// handle finalized, evicted or stopped).
    pub(crate) fn close(&self) {
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

/// The mailboxes waiting for a kick.
pub(crate) struct DirtyList<F> {
    any: AtomicBool,
    list: Mutex<Vec<Arc<Mailbox<F>>>>,
}

impl<F> DirtyList<F> {
    pub(crate) fn new() -> DirtyList<F> {
        DirtyList {
            any: AtomicBool::new(false),
            list: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, m: &Arc<Mailbox<F>>) {
        lock(&self.list).push(m.clone());
        self.any.store(true, Ordering::Release);
    }

    /// Signal every listed mailbox (each once).
    pub(crate) fn kick(&self) {
        if self.any.swap(false, Ordering::AcqRel) {
            let list = std::mem::take(&mut *lock(&self.list));
            for m in list {
                m.kick();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::EventfdFlags;

    type Mb = Mailbox<Arc<[u8]>>;

    fn mailbox() -> Arc<Mb> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        Arc::new(Mailbox::new(Arc::new(fd)))
    }

    /// A totem event with `n` members: cost `EVENT_OVERHEAD + 4 n`; the
    /// ring seq tells events apart.
    fn ev(seq: u64, n: usize) -> MailEvent<Arc<[u8]>> {
        let ring = RingId { rep: 1, seq };
        MailEvent::Totem(Arc::new((ring, vec![1; n])))
    }

    fn seq(e: &MailEvent<Arc<[u8]>>) -> u64 {
        match e {
            MailEvent::Totem(t) => t.0.seq,
            _ => unreachable!(),
        }
    }

    fn pop(m: &Mb, max: usize) -> Vec<u64> {
        let mut out = VecDeque::new();
        let mut st = lock(&m.st);
        Mailbox::pop_batch(m, &mut st, max, &mut out);
        out.iter().map(seq).collect()
    }

    /// The eventfd's count, or `None` when it is not readable.
    fn fd_count(m: &Mb) -> Option<u64> {
        let mut b = [0u8; 8];
        rustix::io::read(&*m.fd, &mut b)
            .ok()
            .map(|_| u64::from_ne_bytes(b))
    }

    #[test]
    fn events_come_out_in_the_order_pushed() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        let mut evs = vec![ev(1, 0), ev(2, 1), ev(3, 2)];
        assert!(m.push_many(&mut evs, usize::MAX, &dirty));
        assert!(evs.is_empty());
        let mut more = vec![ev(4, 0)];
        assert!(m.push_many(&mut more, usize::MAX, &dirty));
        assert_eq!(m.bytes(), 4 * EVENT_OVERHEAD + 4 * 3);
        assert_eq!(pop(&m, 2), [1, 2]);
        assert_eq!(m.bytes(), 2 * EVENT_OVERHEAD + 4 * 2);
        assert_eq!(pop(&m, 10), [3, 4]);
        assert_eq!(m.bytes(), 0);
        assert_eq!(pop(&m, 10), [] as [u64; 0]);
    }

    #[test]
    fn an_event_over_the_cap_is_refused_with_those_after_it() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        let cap = 2 * EVENT_OVERHEAD;
        let mut evs = vec![ev(1, 0), ev(2, 0), ev(3, 0), ev(4, 0)];
        assert!(
            !m.push_many(&mut evs, cap, &dirty),
            "the third does not fit"
        );
        assert!(evs.is_empty(), "the refused events are dropped");
        assert_eq!(m.bytes(), cap);
        assert_eq!(pop(&m, 10), [1, 2]);
    }

    #[test]
    fn an_empty_queue_takes_one_event_of_any_size() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        let mut evs = vec![ev(1, 100), ev(2, 0)];
        assert!(!m.push_many(&mut evs, EVENT_OVERHEAD, &dirty));
        assert_eq!(pop(&m, 10), [1]);
        let mut one = vec![ev(3, 100)];
        assert!(m.push_many(&mut one, EVENT_OVERHEAD, &dirty));
        assert_eq!(pop(&m, 10), [3]);
    }

    #[test]
    fn the_fd_is_signalled_at_the_kick_once_and_cleared_when_drained() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        assert!(m.push_many(&mut vec![ev(1, 0)], usize::MAX, &dirty));
        assert!(m.push_many(&mut vec![ev(2, 0)], usize::MAX, &dirty));
        assert_eq!(lock(&dirty.list).len(), 1, "listed once per kick");
        assert_eq!(fd_count(&m), None, "no signal before the kick");
        dirty.kick();
        assert!(lock(&dirty.list).is_empty());
        assert!(lock(&m.st).signaled);
        // a second kick with nothing new writes nothing
        assert!(m.push_many(&mut vec![ev(3, 0)], usize::MAX, &dirty));
        dirty.kick();
        assert_eq!(pop(&m, 1), [1]);
        assert!(lock(&m.st).signaled, "still pending: still readable");
        assert_eq!(pop(&m, 10), [2, 3]);
        assert!(!lock(&m.st).signaled);
        assert_eq!(fd_count(&m), None, "drained: the count was read back");
    }

    #[test]
    fn a_kick_of_an_emptied_queue_does_not_signal() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        assert!(m.push_many(&mut vec![ev(1, 0)], usize::MAX, &dirty));
        assert_eq!(pop(&m, 10), [1]);
        dirty.kick();
        assert!(!lock(&m.st).signaled);
        assert_eq!(fd_count(&m), None);
    }

    #[test]
    fn waiters_are_notified_once_per_wake_up() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        lock(&m.st).waiters = 1;
        assert!(m.push_many(&mut vec![ev(1, 0)], usize::MAX, &dirty));
        dirty.kick();
        assert!(lock(&m.st).woken);
        // no waiter: nothing to mark
        let (m2, dirty2) = (mailbox(), DirtyList::new());
        assert!(m2.push_many(&mut vec![ev(1, 0)], usize::MAX, &dirty2));
        dirty2.kick();
        assert!(!lock(&m2.st).woken);
    }

    #[test]
    fn a_closed_mailbox_is_readable_and_takes_nothing() {
        let (m, dirty) = (mailbox(), DirtyList::new());
        assert!(m.push_many(&mut vec![ev(1, 0)], usize::MAX, &dirty));
        m.close();
        assert!(lock(&m.st).closed);
        assert_eq!(m.bytes(), 0);
        assert_eq!(fd_count(&m), Some(1), "readable once gone");
        let mut late = vec![ev(2, 0)];
        assert!(m.push_many(&mut late, usize::MAX, &dirty));
        assert!(late.is_empty());
        assert_eq!(pop(&m, 10), [] as [u64; 0]);
    }
}

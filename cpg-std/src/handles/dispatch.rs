//! Dispatch, the node's side: events move out of a handle's mailbox a
//! batch at a time (one mailbox lock per batch, not the node lock), and
//! each goes to an [`EventSink`] (the API layer, which runs the callbacks)
//! as a borrowed [`HandleEvent`]. Between events only the handle's `gone`
//! flag is read.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use cpg_core::engine::FrameBuf;
use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

use super::mailbox::{MailEvent, Mailbox};
use super::{lock, NodeState};

/// Most events one dispatch moves out of a handle's queue under one lock.
const DISPATCH_BATCH: usize = 256;

thread_local! {
    /// (node, handle) pairs this thread is dispatching (a callback calling
    /// dispatch on its own handle gets BUSY instead of a deadlock).
    static DISPATCHING: RefCell<Vec<(usize, u64)>> = const { RefCell::new(Vec::new()) };
}

/// This thread dispatches handle `h` of node `key` until the mark drops.
pub(crate) struct DispatchMark((usize, u64));

impl DispatchMark {
    /// Mark (node key, handle) as dispatched by this thread.
    ///
    /// # Errors
    /// `BUSY` if it already is: a callback calling dispatch on its own
    /// handle (instead of a deadlock on the callbacks' lock).
    pub(crate) fn new(key: (usize, u64)) -> Result<DispatchMark, CsError> {
        if DISPATCHING.with(|d| d.borrow().contains(&key)) {
            return Err(CsError::Busy);
        }
        DISPATCHING.with(|d| d.borrow_mut().push(key));
        Ok(DispatchMark(key))
    }
}

impl Drop for DispatchMark {
    fn drop(&mut self) {
        DISPATCHING.with(|d| d.borrow_mut().retain(|k| *k != self.0));
    }
}

/// How [`DispatchOps::dispatch`] takes events: at most `limit` events
/// (`usize::MAX`: until drained, or forever when blocking); `block` waits
/// for an event when none is pending. Non-blocking with a limit, nothing
/// pending is `TRY_AGAIN` (ONE_NONBLOCKING); without one it is `Ok` (ALL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DispatchMode {
    pub(crate) limit: usize,
    pub(crate) block: bool,
}

impl DispatchMode {
    /// Whether "nothing pending" is `TRY_AGAIN` rather than `Ok`.
    pub(crate) fn limited(&self) -> bool {
        self.limit != usize::MAX
    }
}

/// A message handed to the deliver callback (valid during the call).
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Group.
    pub group: &'a GroupName,
    /// Sending process.
    pub sender: MemberAddr,
    /// Guarantee it was sent with.
    pub guarantee: Guarantee,
    /// The message bytes.
    pub msg: &'a [u8],
    /// `msg` as writable memory, where it is this delivery's own copy (a
    /// cpgd client's); `None` where handles share it (an embedded node).
    writable: Option<NonNull<u8>>,
}

impl<'a> Delivery<'a> {
    pub(crate) fn shared(
        group: &'a GroupName,
        sender: MemberAddr,
        guarantee: Guarantee,
        msg: &'a [u8],
    ) -> Delivery<'a> {
        Delivery {
            group,
            sender,
            guarantee,
            msg,
            writable: None,
        }
    }

    pub(crate) fn owned(
        group: &'a GroupName,
        sender: MemberAddr,
        guarantee: Guarantee,
        msg: &'a mut [u8],
    ) -> Delivery<'a> {
        let writable = Some(NonNull::from(&mut *msg).cast::<u8>());
        Delivery {
            group,
            sender,
            guarantee,
            msg,
            writable,
        }
    }

    /// Where the callback may write the message's `msg.len()` bytes in
    /// place, if it is this delivery's own copy: the C library hands it
    /// to `deliver_fn` (whose `msg` is writable in C) without copying.
    /// After a write through it, `msg` must not be read again.
    #[doc(hidden)]
    pub fn writable(&self) -> Option<NonNull<u8>> {
        self.writable
    }
}

/// A group membership change handed to the confchg callback.
#[derive(Debug, Clone, Copy)]
pub struct ConfChg<'a> {
    /// Group.
    pub group: &'a GroupName,
    /// Members after the change, sorted by (nodeid, pid).
    pub members: &'a [MemberAddr],
    /// Members that left, with reasons.
    pub left: &'a [(MemberAddr, Reason)],
    /// Members that joined, with reasons.
    pub joined: &'a [(MemberAddr, Reason)],
}

/// One event of a handle, borrowed from its queue for the callback.
pub(crate) enum HandleEvent<'a> {
    Deliver(Delivery<'a>),
    ConfChg(ConfChg<'a>),
    Totem(RingId, &'a [NodeId]),
}

/// Who runs a handle's callbacks (the API layer).
pub(crate) trait EventSink {
    /// One event; `callbacks` is what the handle was opened with, locked
    /// for the batch.
    fn event(&mut self, callbacks: &mut (dyn Any + Send), ev: HandleEvent<'_>);
}

fn view<F: FrameBuf>(ev: &MailEvent<F>) -> HandleEvent<'_> {
    match ev {
        MailEvent::Deliver {
            group,
            sender,
            guarantee,
            payload,
        } => HandleEvent::Deliver(Delivery::shared(
            group,
            *sender,
            *guarantee,
            payload.bytes(),
        )),
        MailEvent::ConfChg(c) => HandleEvent::ConfChg(ConfChg {
            group: &c.group,
            members: &c.members,
            left: &c.left,
            joined: &c.joined,
        }),
        MailEvent::Totem(t) => HandleEvent::Totem(t.0, &t.1),
    }
}

/// What the API layer calls to dispatch: a supertrait of
/// [`super::ops::DynNode`], implemented here (not forwarded from `ops`).
pub(crate) trait DispatchOps {
    /// Hand the handle's events to `sink` (spec §5's modes as `mode`), a
    /// batch at a time: the callbacks are locked while a batch runs.
    fn dispatch(&self, h: u64, mode: DispatchMode, sink: &mut dyn EventSink)
        -> Result<(), CsError>;
}

impl<F: FrameBuf + Send + Sync + 'static> DispatchOps for NodeState<F> {
    fn dispatch(
        &self,
        h: u64,
        mode: DispatchMode,
        sink: &mut dyn EventSink,
    ) -> Result<(), CsError> {
        let key = (self.key(), h);
        let (callbacks, mail, gone, half) = {
            let mut g = lock(&self.locked);
            let half = g.queue_cap / 2;
            let s = g.live(h)?;
            (s.callbacks.clone(), s.mail.clone(), s.gone.clone(), half)
        };
        let _mark = DispatchMark::new(key)?;
        // One lock of the handle's mailbox (not the node's) moves a batch of
        // events out; the callbacks then run without it. Between callbacks
        // only the `gone` flag is read.
        let limited = mode.limited();
        let mut batch: VecDeque<MailEvent<F>> = VecDeque::new();
        let mut done = 0usize;
        loop {
            let before = {
                let mut m = lock(&mail.st);
                loop {
                    if m.closed {
                        drop(m);
                        // finalized (BAD_HANDLE), evicted or stopped (LIBRARY)
                        lock(&self.locked).live(h)?;
                        return Err(CsError::Library);
                    }
                    let max = DISPATCH_BATCH.min(mode.limit - done);
                    let (n, before) = Mailbox::pop_batch(&mail, &mut m, max, &mut batch);
                    if n > 0 {
                        break before;
                    }
                    if !mode.block {
                        // ALL: drained; ONE_NONBLOCKING: nothing pending
                        return if limited && done == 0 {
                            Err(CsError::TryAgain)
                        } else {
                            Ok(())
                        };
                    }
                    m.waiters += 1;
                    // an earlier notify did not cover this waiter
                    m.woken = false;
                    m = mail.cond.wait(m).unwrap_or_else(PoisonError::into_inner);
                    m.waiters -= 1;
                    m.woken = false;
                }
            };
            if before > half / 2 {
                // the queue was long: a transport may wait for room, and
                // this handle's staging mirror may say TRY_AGAIN
                let mut g = lock(&self.locked);
                if g.room_waiters > 0 && !g.backlogged() {
                    self.room.notify_all();
                }
                let fc = g.engine.flow_control_enabled();
                let (max_len, stopped) = (g.engine.config().max_message_size, g.stopped);
                if let Ok(s) = g.get_mut(h) {
                    s.refresh_staging(fc, half, max_len, stopped);
                }
            }
            // the callbacks' lock is held only while one batch runs: several
            // threads may dispatch one handle (each event goes to one of them)
            let mut cb = lock(&callbacks);
            while let Some(ev) = batch.pop_front() {
                sink.event(&mut *cb, view(&ev));
                drop(ev);
                done += 1;
                // finalized (or evicted) by the callback or another thread
                if gone.load(Ordering::Acquire) {
                    drop(cb);
                    batch.clear();
                    lock(&self.locked).live(h)?;
                    // the node stopped but the handle is still there:
                    // live() reported it above; unreachable otherwise
                    return Err(CsError::Library);
                }
            }
            drop(cb);
            if done >= mode.limit {
                return Ok(());
            }
        }
    }
}

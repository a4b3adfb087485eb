//! [`Member`]: one process in one group, an owned handle that leaves on
//! drop; [`Events`], its blocking iterator.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpg_core::{CsError, GroupName, Guarantee, MemberAddr};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::error::{Closed, SendError};
use super::event::{Event, Membership, Message, Ring};
use crate::cpg::{Cpg, DispatchFlags, ModelV1, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF};
use crate::node::Node;

/// How [`Member::join_with`] opens its handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinOptions {
    /// The process id the member is known by (default: this process's).
    /// Several members of one group in one process need distinct ones.
    pub pid: Option<u32>,
    /// Also receive [`Event::Ring`]: the current ring right after the own
    /// join, then every ring change of the node.
    pub ring_events: bool,
}

type Queue = Arc<Mutex<VecDeque<Event>>>;

fn lock(q: &Queue) -> MutexGuard<'_, VecDeque<Event>> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// A process in a group: an owned [`Cpg`] handle joined to one group.
/// Dropping it leaves the group (the others see the leave) and finalizes
/// the handle.
///
/// Events come from [`Member::try_next`] (never blocks),
/// [`Member::next_timeout`], [`Member::recv`] (blocks) or the iterator of
/// [`Member::events`]. [`AsFd`] gives the handle's eventfd: readable while
/// events are pending, so a reactor can wait on it and then drain with
/// `try_next`.
pub struct Member {
    cpg: Cpg,
    group: GroupName,
    addr: MemberAddr,
    queue: Queue,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("group", &self.group)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Member {
    /// Open a handle on `node` and join `group`. The first event is the
    /// own join ([`Event::Membership`]).
    ///
    /// # Errors
    /// As [`Cpg::model_initialize`] and [`Cpg::join`] (`EXIST` when this
    /// process is in `group` already, `TRY_AGAIN`, `LIBRARY`).
    pub fn join(node: &Node, group: &GroupName) -> Result<Member, CsError> {
        Self::join_with(node, group, JoinOptions::default())
    }

    /// [`Member::join`] with options.
    ///
    /// # Errors
    /// As [`Member::join`].
    pub fn join_with(
        node: &Node,
        group: &GroupName,
        options: JoinOptions,
    ) -> Result<Member, CsError> {
        let queue: Queue = Arc::default();
        let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
        let mut model = ModelV1 {
            // the one copy: the delivery is borrowed only during the callback
            deliver: Some(Box::new(move |_, d| {
                lock(&q1).push_back(Event::Message(Message {
                    sender: d.sender,
                    guarantee: d.guarantee,
                    data: Arc::from(d.msg),
                }));
            })),
            confchg: Some(Box::new(move |_, c| {
                lock(&q2).push_back(Event::Membership(Membership {
                    members: c.members.to_vec(),
                    left: c.left.to_vec(),
                    joined: c.joined.to_vec(),
                }));
            })),
            totem_confchg: None,
            flags: 0,
        };
        if options.ring_events {
            model.totem_confchg = Some(Box::new(move |_, ring_id, nodes| {
                lock(&q3).push_back(Event::Ring(Ring {
                    ring_id,
                    nodes: nodes.to_vec(),
                }));
            }));
            model.flags = MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
        }
        let pid = options.pid.unwrap_or_else(std::process::id);
        let cpg = Cpg::model_initialize_with_pid(node, pid, model, None)?;
        cpg.join(group)?;
        Ok(Member {
            addr: MemberAddr {
                nodeid: node.node_id(),
                pid,
            },
            cpg,
            group: group.clone(),
            queue,
        })
    }

    /// The group.
    pub fn group(&self) -> &GroupName {
        &self.group
    }

    /// This member's (nodeid, pid), as the others see it.
    pub fn addr(&self) -> MemberAddr {
        self.addr
    }

    /// The underlying handle (every CPG function).
    pub fn cpg(&self) -> &Cpg {
        &self.cpg
    }

    /// The group's members now, as this node knows them (sorted).
    ///
    /// # Errors
    /// [`Closed`] when the handle is gone.
    pub fn members(&self) -> Result<Vec<MemberAddr>, Closed> {
        self.cpg.membership_get(&self.group).map_err(Closed)
    }

    /// Multicast `bytes` to the group (copied once into the send queue).
    ///
    /// # Errors
    /// [`SendError`]; `WouldBlock` asks the caller to receive, then retry.
    pub fn send(&self, guarantee: Guarantee, bytes: &[u8]) -> Result<(), SendError> {
        self.send_vectored(guarantee, &[IoSlice::new(bytes)])
    }

    /// Multicast the concatenation of `parts`.
    ///
    /// # Errors
    /// As [`Member::send`].
    pub fn send_vectored(
        &self,
        guarantee: Guarantee,
        parts: &[IoSlice<'_>],
    ) -> Result<(), SendError> {
        Ok(self.cpg.mcast_joined(guarantee, parts)?)
    }

    /// The next event if one is pending; `Ok(None)` otherwise. Never blocks.
    ///
    /// # Errors
    /// [`Closed`] once the handle is gone (evicted, node stopped).
    pub fn try_next(&self) -> Result<Option<Event>, Closed> {
        self.next_with(DispatchFlags::OneNonblocking)
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` on timeout.
    ///
    /// # Errors
    /// As [`Member::try_next`].
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<Event>, Closed> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.try_next()? {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ts = Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&self.cpg, PollFlags::IN)];
            // EINTR and friends: loop and look again
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
    }

    /// The next event, blocking until there is one.
    ///
    /// # Errors
    /// As [`Member::try_next`].
    pub fn recv(&self) -> Result<Event, Closed> {
        loop {
            if let Some(ev) = self.next_with(DispatchFlags::One)? {
                return Ok(ev);
            }
        }
    }

    /// A blocking iterator over the events; it ends when the handle is gone.
    pub fn events(&self) -> Events<'_> {
        Events { member: self }
    }

    /// Pop a queued event, or dispatch (in `flags`' mode) until one is
    /// queued or none is pending.
    fn next_with(&self, flags: DispatchFlags) -> Result<Option<Event>, Closed> {
        loop {
            if let Some(ev) = lock(&self.queue).pop_front() {
                return Ok(Some(ev));
            }
            match self.cpg.dispatch(flags) {
                Ok(()) => {}
                Err(CsError::TryAgain) => return Ok(None),
                Err(e) => return Err(Closed(e)),
            }
        }
    }
}

impl AsFd for Member {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.cpg.as_fd()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // the others see a LEAVE; dropping `cpg` then finalizes the handle
        let _ = self.cpg.leave(&self.group);
    }
}

/// [`Member::events`]: blocks for each event; ends when the handle is gone.
#[derive(Debug)]
pub struct Events<'a> {
    member: &'a Member,
}

impl Iterator for Events<'_> {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.member.recv().ok()
    }
}

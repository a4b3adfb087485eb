//! What the API layer calls on a node, object safe so [`crate::Cpg`] and
//! [`crate::Node`] are not generic over the transport's buffer type:
//! [`DynNode`], a handle's functions (open and finalize, join, leave,
//! queries), and [`NodeControl`], the node's own (stop, counters). Sending
//! ([`SendOps`], in [`super::send`]) and dispatch ([`DispatchOps`], in
//! [`super::dispatch`]) are supertraits of [`DynNode`], implemented where
//! their code is.
//!
//! [`DynNode`] has two implementations: the embedded node here
//! ([`super::NodeState`]) and a connection to cpgd
//! ([`crate::client::ClientNode`]), so a `Cpg` behaves the same on both.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cpg_core::engine::{FrameBuf, Request, State};
use cpg_core::ipc::IterScope;
use cpg_core::{CsError, GroupName, MemberAddr, NodeId, Reason, RingId};
use rustix::event::EventfdFlags;

use super::dispatch::DispatchOps;
use super::mailbox::Mailbox;
use super::send::SendOps;
use super::staging::Staging;
use super::{lock, BufSend, Callbacks, Context, HState, HandleState, NodeState, NodeStats, Slot};
use crate::cpg::IterationDescription;

/// A snapshot of the engine's membership state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Totem state.
    pub state: State,
    /// Ring id.
    pub ring_id: RingId,
    /// Ring members.
    pub members: Vec<NodeId>,
    /// Engine counters.
    pub engine: cpg_core::engine::Stats,
}

/// What a handle is opened with.
pub(crate) struct HandleOptions {
    /// The model's flags (`MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
    pub(crate) flags: u32,
    /// Receives every totem confchg of the node.
    pub(crate) wants_totem: bool,
    /// The API layer's callbacks, handed back at dispatch.
    pub(crate) callbacks: Callbacks,
}

/// A node with its frame type erased: what [`crate::Node`] and
/// [`crate::Cpg`] call.
pub(crate) trait DynNode: SendOps + DispatchOps + Send + Sync {
    fn open(
        &self,
        pid: u32,
        options: HandleOptions,
        context: Context,
    ) -> Result<(u64, Arc<OwnedFd>, Arc<Staging>), CsError>;
    fn finalize(&self, h: u64) -> Result<(), CsError>;
    fn check(&self, h: u64, local_only: bool) -> Result<(), CsError>;
    fn join(&self, h: u64, group: &GroupName) -> Result<(), CsError>;
    fn leave(&self, h: u64, group: &GroupName) -> Result<(), CsError>;
    fn membership(&self, h: u64, group: &GroupName) -> Result<Vec<MemberAddr>, CsError>;
    fn local_get(&self, h: u64) -> Result<NodeId, CsError>;
    fn flow_control(&self, h: u64) -> Result<bool, CsError>;
    fn context_get(&self, h: u64) -> Result<Context, CsError>;
    fn context_set(&self, h: u64, c: Context) -> Result<(), CsError>;
    /// The largest message the node takes (`max_message_size`).
    fn message_max(&self) -> usize;
    /// `cpg_iteration_initialize` (the scope is checked by the caller): a
    /// snapshot of the group table taken here, or an iteration the daemon
    /// keeps (its entries come from [`DynNode::iteration_next`]).
    fn iteration_initialize(&self, h: u64, scope: &IterScope) -> Result<IterStart, CsError>;
    /// One page of the node's status from a daemon (`STATUS`); an
    /// embedded node answers [`crate::Node::status_report`] instead.
    fn status_page(&self, h: u64, link_offset: u32) -> Result<crate::status::StatusPage, CsError> {
        let _ = link_offset;
        self.check(h, true)?;
        Err(CsError::NotSupported)
    }
    /// The next entries of a daemon's iteration; empty past the end.
    fn iteration_next(&self, h: u64, id: u32) -> Result<Vec<IterationDescription>, CsError> {
        let _ = (h, id);
        Err(CsError::BadHandle)
    }
    /// `cpg_iteration_finalize` of a daemon's iteration; `wait` false (a
    /// dropped iteration): send it, wait for nothing.
    fn iteration_finalize(&self, h: u64, id: u32, wait: bool) -> Result<(), CsError> {
        let _ = (id, wait);
        self.check(h, true)
    }
}

/// How an iteration starts: every entry now, or the daemon's iteration id.
pub(crate) enum IterStart {
    /// A snapshot taken by the embedded node.
    Snapshot(Vec<IterationDescription>),
    /// An iteration cpgd keeps; the client fetches it in batches.
    Daemon(u32),
}

/// The node's own controls, beside its handles' ([`DynNode`]): what
/// [`crate::Node`] calls.
pub(crate) trait NodeControl: Send + Sync {
    fn shutdown(&self, graceful: bool);
    fn stats(&self) -> NodeStats;
    fn status(&self) -> NodeStatus;
    fn record_buf_sends(&self, on: bool);
    fn buf_sends(&self) -> Vec<BufSend>;
}

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    fn finalize_inner(&self, h: u64) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let i = g.slot_of(h).ok_or(CsError::BadHandle)?;
            let slot = &mut g.slots[i];
            slot.check = 0;
            let mut s = slot.state.take().expect("slot_of checked");
            g.free.push(i as u32);
            lock(&s.staging.st).open = false;
            if let Some((group, HState::JoinStarted | HState::Joined)) = s.group.take() {
                if !s.evicted {
                    if !s.staging.drain(&mut g.engine, None, now) {
                        g.pending_leaves.push((s.pid, group, s.staging.clone()));
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
                        g.pending_leaves.push((s.pid, group, s.staging.clone()));
                    }
                }
            }
            // wake pollers and blocked dispatchers: they find the handle gone
            s.gone.store(true, Ordering::Release);
            s.mail.close();
            Ok(())
        })
    }
}

impl<F: FrameBuf + Send + Sync + 'static> DynNode for NodeState<F> {
    fn open(
        &self,
        pid: u32,
        options: HandleOptions,
        context: Context,
    ) -> Result<(u64, Arc<OwnedFd>, Arc<Staging>), CsError> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|_| CsError::NoResources)?;
        let fd = Arc::new(fd);
        let staging = Arc::new(Staging::default());
        let check = self.random_check();
        let mut g = lock(&self.locked);
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
            flags: options.flags,
            wants_totem: options.wants_totem,
            callbacks: options.callbacks,
            context,
            group: None,
            mail: Arc::new(Mailbox::new(fd.clone())),
            outbox: Vec::new(),
            evicted: false,
            stuck: None,
            staging: staging.clone(),
            inflight: 0,
            group_arc: None,
            gone: Arc::new(AtomicBool::new(false)),
        };
        let slot = &mut g.slots[idx as usize];
        slot.check = check;
        slot.state = Some(state);
        Ok(((u64::from(check) << 32) | u64::from(idx), fd, staging))
    }

    fn finalize(&self, h: u64) -> Result<(), CsError> {
        let r = self.finalize_inner(h);
        // a transport waiting for this handle to drain need not wait
        self.room.notify_all();
        r
    }

    fn check(&self, h: u64, local_only: bool) -> Result<(), CsError> {
        let mut g = lock(&self.locked);
        if local_only {
            g.get(h).map(|_| ())
        } else {
            g.live(h).map(|_| ())
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
                let mut f = lock(&s.staging.st);
                if !f.is_empty() {
                    // staged multicasts the engine refused go before the leave
                    return Err(CsError::TryAgain);
                }
                // no staging from here on: a message staged between this
                // check and the leave would be NOT_EXIST for the engine
                // after CS_OK (refresh_staging reopens it if the leave is
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

    fn membership(&self, h: u64, group: &GroupName) -> Result<Vec<MemberAddr>, CsError> {
        let mut g = lock(&self.locked);
        g.live(h)?;
        Ok(g.engine.groups().members(group))
    }

    fn local_get(&self, h: u64) -> Result<NodeId, CsError> {
        self.check(h, false)?;
        Ok(self.node_id)
    }

    fn flow_control(&self, h: u64) -> Result<bool, CsError> {
        let mut g = lock(&self.locked);
        g.live(h)?;
        Ok(g.engine.flow_control_enabled())
    }

    fn context_get(&self, h: u64) -> Result<Context, CsError> {
        Ok(lock(&self.locked).get(h)?.context.clone())
    }

    fn context_set(&self, h: u64, c: Context) -> Result<(), CsError> {
        lock(&self.locked).get_mut(h)?.context = c;
        Ok(())
    }

    fn message_max(&self) -> usize {
        lock(&self.locked).engine.config().max_message_size
    }

    fn iteration_initialize(&self, h: u64, scope: &IterScope) -> Result<IterStart, CsError> {
        let entry = |group: &GroupName, nodeid, pid| IterationDescription {
            group: group.clone(),
            nodeid,
            pid,
        };
        let mut g = lock(&self.locked);
        g.live(h)?;
        let groups = g.engine.groups();
        let entries = match scope {
            IterScope::OneGroup(name) => groups
                .members(name)
                .into_iter()
                .map(|m| entry(name, m.nodeid, m.pid))
                .collect(),
            IterScope::NameOnly => groups.groups().map(|(name, _)| entry(name, 0, 0)).collect(),
            IterScope::All => groups
                .groups()
                .flat_map(|(name, members)| members.iter().map(|m| entry(name, m.nodeid, m.pid)))
                .collect(),
        };
        Ok(IterStart::Snapshot(entries))
    }
}

impl<F: FrameBuf + Send + Sync + 'static> NodeControl for NodeState<F> {
    fn shutdown(&self, graceful: bool) {
        let now = self.now();
        let mut g = lock(&self.locked);
        // close staging first, then move what was staged into the engine
        // before it shuts down
        let was_stopped = g.stopped;
        g.stopped = true;
        g.refresh_staging();
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

    fn record_buf_sends(&self, on: bool) {
        *lock(&self.record) = on.then(Vec::new);
    }

    fn buf_sends(&self) -> Vec<BufSend> {
        lock(&self.record).clone().unwrap_or_default()
    }

    fn stats(&self) -> NodeStats {
        let g = lock(&self.locked);
        NodeStats {
            handles: g.slots.iter().filter(|s| s.state.is_some()).count(),
            ..g.stats
        }
    }
    fn status(&self) -> NodeStatus {
        self.with_engine(|e| NodeStatus {
            state: e.state(),
            ring_id: e.ring_id(),
            members: e.members().to_vec(),
            engine: e.stats().clone(),
        })
    }
}

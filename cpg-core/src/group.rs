//! CPG groups on top of the ordered stream (`docs/spec/cpg-api.md` §6).
//!
//! Join, leave and data are Totem messages, so every node applies them in
//! one total order and every member sees the same confchg at the same point
//! of the stream. A Totem configuration change becomes NODEDOWN confchgs
//! for members of departed nodes (at the transitional configuration, the
//! same on every survivor), then a joinlist exchange in the new ring: once
//! the joinlist of every ring member has been delivered (the barrier), each
//! node adds members it did not know (NODEUP), drops remote members no
//! joinlist mentions (PROCDOWN), reports the totem confchg and lets Totem
//! resume normal sends (`trans_ack`).
//!
//! Local processes follow Corosync's per-connection states (JOIN_STARTED,
//! JOIN_COMPLETED, LEAVE_STARTED), with our fixes: mcast when not joined
//! or leaving is NOT_EXIST (never accepted then dropped), a leave resets the
//! process to not-joined once its own LEAVE confchg is delivered.
//!
//! Its vocabulary is defined here: [`Request`] (what a local process asks)
//! and [`Event`] (what the layer hands up: deliveries, confchgs, Totem's
//! configuration changes); the engine re-exports both.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::frame::{FrameBuf, Payload, ZcError};
use crate::limits::JOINLIST_MAX;
use crate::time::Instant;
use crate::totem::{sets, ConfigChange, Totem, TotemEvent, TraceDeliver};
use crate::types::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};
use crate::wire::cpg::{emit_joinlist, emit_mcast_header, joinlist_len, mcast_header_len};
use crate::wire::{CpgMsg, McastRef, NodeList};

/// A request from a local process.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `cpg_join`.
    Join {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// Model flags.
        flags: u32,
    },
    /// `cpg_leave` (reason LEAVE) or a finalize while joined (PROCDOWN).
    Leave {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// `Reason::Leave` or `Reason::ProcDown`.
        reason: Reason,
    },
    /// `cpg_mcast_joined`: the iovecs are copied once into the send queue.
    Mcast {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// Guarantee.
        guarantee: Guarantee,
        /// Message parts, concatenated.
        iov: &'a [&'a [u8]],
    },
}

/// What the engine tells the driver/application.
#[derive(Debug, Clone)]
pub enum Event<F> {
    /// A group message, delivered to every local member of `group`.
    Deliver {
        /// Group (shared with the deliveries before and after it).
        group: Arc<GroupName>,
        /// Sending process.
        sender: MemberAddr,
        /// Guarantee it was sent with.
        guarantee: Guarantee,
        /// The application bytes.
        payload: Payload<F>,
    },
    /// A group's membership changed (post-change members, sorted).
    ConfChg {
        /// Group.
        group: GroupName,
        /// Members after the change, sorted by (nodeid, pid).
        members: Vec<MemberAddr>,
        /// Members that left, with reasons.
        left: Vec<(MemberAddr, Reason)>,
        /// Members that joined, with reasons.
        joined: Vec<(MemberAddr, Reason)>,
    },
    /// Node membership after a completed sync (model v1 totem confchg).
    TotemConfChg {
        /// Ring id.
        ring_id: RingId,
        /// Nodes, ascending.
        members: Box<NodeList>,
    },
    /// Totem-level configuration change (transitional, then regular).
    /// Boxed, as `TotemConfChg`'s list: a rare event must not make every
    /// event (one per delivered message) hundreds of bytes to move.
    Config(Box<ConfigChange>),
    /// The local send queue crossed its high-water mark (true = ENABLED,
    /// `mcast` answers TRY_AGAIN) or fell back below it.
    FlowControl(bool),
    /// Only with `trace` on: a Totem message delivered in order (for the
    /// simulator's checkers).
    Trace(TraceDeliver),
}

/// A local process's state in one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// Join sent, not yet delivered.
    JoinStarted,
    /// Own join delivered.
    Joined,
    /// Leave sent, not yet delivered.
    LeaveStarted,
}

#[derive(Debug, Clone)]
struct SyncState {
    ring_id: RingId,
    members: NodeList,
    received: NodeList,
    lists: Vec<(NodeId, Vec<(u32, GroupName)>)>,
}

/// Who multicasts, to which group, with which guarantee.
#[derive(Debug, Clone, Copy)]
pub(crate) struct McastTo<'a> {
    pub(crate) pid: u32,
    pub(crate) group: &'a GroupName,
    pub(crate) guarantee: Guarantee,
}

/// The CPG layer of one node.
#[derive(Debug, Clone)]
pub struct Groups {
    me: NodeId,
    max_message_size: usize,
    table: BTreeMap<GroupName, Vec<MemberAddr>>,
    local: BTreeMap<(u32, GroupName), LocalState>,
    sync: Option<SyncState>,
    ring_id: RingId,
    ring_members: NodeList,
    /// The group of the last delivery, shared with the next ones of it
    /// (a delivery carries its group as an `Arc`: an event stays small to
    /// queue and move, and a stream to one group allocates no name).
    last_delivered: Option<Arc<GroupName>>,
    /// Messages that did not parse as CPG messages.
    pub malformed: u64,
}

impl Groups {
    /// An empty group table for node `me`.
    pub fn new(me: NodeId, max_message_size: usize) -> Self {
        Groups {
            me,
            max_message_size,
            table: BTreeMap::new(),
            local: BTreeMap::new(),
            sync: None,
            ring_id: RingId::default(),
            ring_members: NodeList::new(),
            last_delivered: None,
            malformed: 0,
        }
    }

    /// Members of `group`, sorted by (nodeid, pid).
    pub fn members(&self, group: &GroupName) -> Vec<MemberAddr> {
        self.table.get(group).cloned().unwrap_or_default()
    }

    /// Every group with at least one member, and its members.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupName, &[MemberAddr])> {
        self.table.iter().map(|(g, m)| (g, m.as_slice()))
    }

    /// A local process's state in a group.
    pub fn local_state(&self, pid: u32, group: &GroupName) -> Option<LocalState> {
        self.local.get(&(pid, group.clone())).copied()
    }

    /// Last totem configuration reported (ring id, nodes).
    pub fn totem_conf(&self) -> (RingId, &[NodeId]) {
        (self.ring_id, &self.ring_members)
    }

    fn listeners(&self, group: &[u8]) -> bool {
        self.local.iter().any(|((_, g), s)| {
            g.as_bytes() == group && matches!(s, LocalState::Joined | LocalState::LeaveStarted)
        })
    }

    /// `group` as an `Arc`: the last delivery's if it is the same.
    fn delivered_name(&mut self, group: &[u8]) -> Option<Arc<GroupName>> {
        match &self.last_delivered {
            Some(g) if g.as_bytes() == group => Some(Arc::clone(g)),
            _ => {
                let g = Arc::new(GroupName::new(group).ok()?);
                self.last_delivered = Some(Arc::clone(&g));
                Some(g)
            }
        }
    }

    pub(crate) fn submit<F: FrameBuf>(
        &mut self,
        now: Instant,
        req: Request<'_>,
        totem: &mut Totem<F>,
    ) -> Result<(), CsError> {
        match req {
            Request::Join { pid, group, flags } => {
                match self.local.get(&(pid, group.clone())) {
                    Some(LocalState::JoinStarted | LocalState::Joined) => {
                        return Err(CsError::Exist)
                    }
                    Some(LocalState::LeaveStarted) => return Err(CsError::TryAgain),
                    None => {}
                }
                let msg = CpgMsg::Join {
                    pid,
                    group: group.clone(),
                    flags,
                };
                totem.submit(now, encode(&msg)?, Guarantee::Agreed, false)?;
                self.local
                    .insert((pid, group.clone()), LocalState::JoinStarted);
                Ok(())
            }
            Request::Leave { pid, group, reason } => {
                if !matches!(reason, Reason::Leave | Reason::ProcDown) {
                    return Err(CsError::InvalidParam);
                }
                match self.local.get(&(pid, group.clone())) {
                    Some(LocalState::JoinStarted | LocalState::Joined) => {}
                    _ => return Err(CsError::NotExist),
                }
                let msg = CpgMsg::Leave {
                    pid,
                    group: group.clone(),
                    reason,
                };
                totem.submit(now, encode(&msg)?, Guarantee::Agreed, false)?;
                self.local
                    .insert((pid, group.clone()), LocalState::LeaveStarted);
                Ok(())
            }
            Request::Mcast {
                pid,
                group,
                guarantee,
                iov,
            } => {
                let total: usize = iov.iter().map(|p| p.len()).sum();
                if total > self.max_message_size {
                    return Err(CsError::TooBig);
                }
                match self.local.get(&(pid, group.clone())) {
                    Some(LocalState::JoinStarted | LocalState::Joined) => {}
                    _ => return Err(CsError::NotExist),
                }
                let hdr = mcast_header_len(group.len());
                // Built in its final allocation (zeroed through a TrustedLen
                // iterator, then written): `Arc::from(Vec)` would copy the
                // whole message a second time.
                let mut data: Arc<[u8]> = core::iter::repeat_n(0u8, hdr + total).collect();
                let buf = Arc::get_mut(&mut data).ok_or(CsError::Library)?;
                emit_mcast_header(pid, group, guarantee, buf).map_err(|_| CsError::Library)?;
                let mut at = hdr;
                for part in iov {
                    buf[at..at + part.len()].copy_from_slice(part);
                    at += part.len();
                }
                totem.submit(now, data, guarantee, false)
            }
        }
    }

    /// A run of one handle's messages, copied into one allocation (the
    /// engine's `submit_batch`, which documents the contract).
    pub(crate) fn submit_batch<'a, F: FrameBuf>(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
        msgs: impl Iterator<Item = (Guarantee, &'a [u8])> + Clone,
        totem: &mut Totem<F>,
    ) -> (usize, Result<(), CsError>) {
        match self.local.get(&(pid, group.clone())) {
            Some(LocalState::JoinStarted | LocalState::Joined) => {}
            _ => return (0, Err(CsError::NotExist)),
        }
        let hdr = mcast_header_len(group.len());
        // what the send queue takes, up to the first message too big; the
        // walk stops there (a long staged run is not scanned to its end)
        let max = self.max_message_size;
        let (n, total) = totem.accepts(
            msgs.clone()
                .take_while(|(_, m)| m.len() <= max)
                .map(|(_, m)| hdr + m.len()),
        );
        let (first_error, refused) = match msgs.clone().nth(n) {
            None => (Ok(()), false),
            Some((_, m)) if m.len() > max => (Err(CsError::TooBig), false),
            Some(_) => (
                Err(if totem.is_shut_down() {
                    CsError::Library
                } else {
                    CsError::TryAgain
                }),
                true,
            ),
        };
        if n == 0 {
            if refused {
                totem.note_refused();
            }
            return (0, first_error);
        }
        // built in its final allocation, as a single mcast is
        let mut shared: Arc<[u8]> = core::iter::repeat_n(0u8, total).collect();
        let Some(buf) = Arc::get_mut(&mut shared) else {
            return (0, Err(CsError::Library));
        };
        let mut at = 0usize;
        for (guarantee, m) in msgs.clone().take(n) {
            if emit_mcast_header(pid, group, guarantee, &mut buf[at..at + hdr]).is_err() {
                return (0, Err(CsError::Library));
            }
            buf[at + hdr..at + hdr + m.len()].copy_from_slice(m);
            at += hdr + m.len();
        }
        let mut at = 0usize;
        let items = msgs.take(n).map(|(guarantee, m)| {
            let r = at..at + hdr + m.len();
            at = r.end;
            (guarantee, r)
        });
        totem.submit_shared(now, &shared, items, refused);
        (n, first_error)
    }

    /// Zero-copy mcast: `buf[payload]` is the application's message; the
    /// CPG header is written into the headroom in front of it, and Totem
    /// sends it from there. Without enough headroom, or if the buffer is
    /// shared, the message is copied once like a normal mcast. A buffer
    /// that keeps its headers outside (`FrameBuf::headers_inside` false)
    /// is neither written nor copied: its CPG header is built in engine
    /// memory and Totem sends the payload by reference behind it.
    pub(crate) fn submit_zc<F: FrameBuf>(
        &mut self,
        now: Instant,
        to: McastTo<'_>,
        mut buf: F,
        payload: core::ops::Range<usize>,
        totem: &mut Totem<F>,
    ) -> Result<(), ZcError<F>> {
        let McastTo {
            pid,
            group,
            guarantee,
        } = to;
        let refuse = |error, buf| {
            Err(ZcError {
                error,
                buf: Some(buf),
            })
        };
        if payload.start > payload.end || payload.end > buf.as_ref().len() {
            return refuse(CsError::InvalidParam, buf);
        }
        if payload.len() > self.max_message_size {
            return refuse(CsError::TooBig, buf);
        }
        match self.local.get(&(pid, group.clone())) {
            Some(LocalState::JoinStarted | LocalState::Joined) => {}
            _ => return refuse(CsError::NotExist, buf),
        }
        let hdr = mcast_header_len(group.len());
        if !buf.headers_inside() {
            let mut head: Arc<[u8]> = core::iter::repeat_n(0u8, hdr).collect();
            let written = Arc::get_mut(&mut head)
                .is_some_and(|h| emit_mcast_header(pid, group, guarantee, h).is_ok());
            if !written {
                return refuse(CsError::Library, buf);
            }
            return totem.submit_gather(now, head, buf, payload, guarantee);
        }
        if payload.start >= hdr {
            if let Some(bytes) = buf.unique_mut() {
                if emit_mcast_header(
                    pid,
                    group,
                    guarantee,
                    &mut bytes[payload.start - hdr..payload.start],
                )
                .is_err()
                {
                    return refuse(CsError::Library, buf);
                }
                return totem.submit_zc(now, buf, payload.start - hdr..payload.end, guarantee);
            }
        }
        let data = buf.as_ref()[payload].to_vec();
        match self.submit(
            now,
            Request::Mcast {
                pid,
                group,
                guarantee,
                iov: &[&data],
            },
            totem,
        ) {
            Ok(()) => Ok(()),
            Err(error) => refuse(error, buf),
        }
    }

    /// Turn one Totem event into CPG events.
    pub(crate) fn on_totem_event<F: FrameBuf>(
        &mut self,
        now: Instant,
        ev: TotemEvent<F>,
        totem: &mut Totem<F>,
        out: &mut VecDeque<Event<F>>,
    ) {
        match ev {
            TotemEvent::Trace(t) => out.push_back(Event::Trace(t)),
            TotemEvent::Deliver {
                sender,
                guarantee,
                payload,
            } => self.on_deliver(sender, guarantee, payload, totem, out),
            TotemEvent::Config(change) => match &*change {
                ConfigChange::Transitional { left, .. } => {
                    self.sync = None;
                    let left = left.clone();
                    out.push_back(Event::Config(change));
                    self.node_down(&left, out);
                }
                ConfigChange::Regular {
                    ring_id, members, ..
                } => {
                    let (ring_id, members) = (*ring_id, members.clone());
                    out.push_back(Event::Config(change));
                    self.start_sync(now, ring_id, members, totem);
                }
            },
        }
    }

    fn on_deliver<F: FrameBuf>(
        &mut self,
        sender: NodeId,
        _guarantee: Guarantee,
        payload: Payload<F>,
        totem: &mut Totem<F>,
        out: &mut VecDeque<Event<F>>,
    ) {
        // One of this node's messages whose buffer keeps its headers
        // outside comes in two segments: its CPG header (engine memory),
        // then the application's bytes (the buffer). Any other lies in one.
        let (bytes, outside) = match payload.segments() {
            [[], b] => (b, 0),
            [a, b] => (a, b.len()),
        };
        // Application messages, nearly every delivery, are read in place.
        let parsed = McastRef::parse(bytes);
        match parsed {
            Ok(Some(m)) if outside == 0 || m.payload.is_empty() => {
                let Some((group, addr, guarantee)) = self.mcast_target(sender, &m) else {
                    return;
                };
                // `m.payload` or the second segment: one of them is empty
                let end = payload.range.end;
                let range = end - (m.payload.len() + outside)..end;
                totem.stats.app_delivered += 1;
                // moved, not cloned: a clone and a drop are two atomic
                // operations on a frame's count shared with the threads
                // that consume deliveries
                out.push_back(Event::Deliver {
                    group,
                    sender: addr,
                    guarantee,
                    payload: Payload {
                        src: payload.src,
                        range,
                    },
                });
                return;
            }
            Ok(None) if outside == 0 => {}
            _ => {
                self.malformed += 1;
                return;
            }
        }
        let Ok(msg) = CpgMsg::parse(bytes) else {
            self.malformed += 1;
            return;
        };
        match msg {
            CpgMsg::Join { pid, group, .. } => {
                let addr = MemberAddr {
                    nodeid: sender,
                    pid,
                };
                let members = self.table.entry(group.clone()).or_default();
                if let Err(pos) = members.binary_search(&addr) {
                    members.insert(pos, addr);
                    if sender == self.me {
                        if let Some(s) = self.local.get_mut(&(pid, group.clone())) {
                            if *s == LocalState::JoinStarted {
                                *s = LocalState::Joined;
                            }
                        }
                    }
                    self.confchg(&group, Vec::new(), alloc::vec![(addr, Reason::Join)], out);
                }
            }
            CpgMsg::Leave { pid, group, reason } => {
                let addr = MemberAddr {
                    nodeid: sender,
                    pid,
                };
                let Some(members) = self.table.get_mut(&group) else {
                    return;
                };
                if let Ok(pos) = members.binary_search(&addr) {
                    members.remove(pos);
                    self.confchg(&group, alloc::vec![(addr, reason)], Vec::new(), out);
                    if self.table.get(&group).is_some_and(|m| m.is_empty()) {
                        self.table.remove(&group);
                    }
                }
                if sender == self.me
                    && self.local.get(&(pid, group.clone())) == Some(&LocalState::LeaveStarted)
                {
                    self.local.remove(&(pid, group));
                }
            }
            // Unreachable: the `McastRef` path above returns for every
            // MCAST (the fuzz target `cpg` checks the two parsers agree);
            // counted as malformed should they ever disagree.
            CpgMsg::Mcast { .. } => self.malformed += 1,
            CpgMsg::JoinList(entries) => {
                let Some(sync) = self.sync.as_mut() else {
                    return;
                };
                if !sets::contains(&sync.members, sender) || sets::contains(&sync.received, sender)
                {
                    return;
                }
                sets::insert(&mut sync.received, sender);
                sync.lists.push((sender, entries.collect()));
                if sync.received == sync.members {
                    self.activate(totem, out);
                }
            }
            CpgMsg::DownList(_) => {}
        }
    }

    /// Where an application message goes: its group, sender and
    /// guarantee if its sender is a member of its group and this node has
    /// a listener; `None` drops it.
    fn mcast_target(
        &mut self,
        sender: NodeId,
        m: &McastRef<'_>,
    ) -> Option<(Arc<GroupName>, MemberAddr, Guarantee)> {
        let addr = MemberAddr {
            nodeid: sender,
            pid: m.pid,
        };
        let known = self
            .table
            .get(m.group)
            .is_some_and(|members| members.binary_search(&addr).is_ok());
        if !known || !self.listeners(m.group) {
            return None;
        }
        Some((self.delivered_name(m.group)?, addr, m.guarantee))
    }

    /// Members of departed nodes leave every group (NODEDOWN).
    fn node_down(&mut self, left: &[NodeId], out: &mut VecDeque<Event<impl FrameBuf>>) {
        let groups: Vec<GroupName> = self.table.keys().cloned().collect();
        for g in groups {
            let members = self.table.get_mut(&g).expect("key from table");
            let mut gone = Vec::new();
            members.retain(|m| {
                let down = sets::contains(left, m.nodeid);
                if down {
                    gone.push((*m, Reason::NodeDown));
                }
                !down
            });
            if !gone.is_empty() {
                self.confchg(&g, gone, Vec::new(), out);
            }
            if self.table.get(&g).is_some_and(|m| m.is_empty()) {
                self.table.remove(&g);
            }
        }
    }

    fn start_sync<F: FrameBuf>(
        &mut self,
        now: Instant,
        ring_id: RingId,
        members: NodeList,
        totem: &mut Totem<F>,
    ) {
        totem.clear_sync_queue();
        let mine: Vec<(u32, GroupName)> = self
            .table
            .iter()
            .flat_map(|(g, ms)| {
                ms.iter()
                    .filter(|m| m.nodeid == self.me)
                    .map(move |m| (m.pid, g.clone()))
            })
            .take(JOINLIST_MAX)
            .collect();
        let len = joinlist_len(mine.iter().map(|(_, g)| g));
        let mut buf = alloc::vec![0u8; len];
        if emit_joinlist(mine.iter().map(|(p, g)| (*p, g)), &mut buf).is_ok() {
            // The sync queue is not bounded by flow control: it cannot refuse.
            let _ = totem.submit(now, Arc::from(buf), Guarantee::Agreed, true);
        }
        self.sync = Some(SyncState {
            ring_id,
            members,
            received: NodeList::new(),
            lists: Vec::new(),
        });
    }

    /// Every joinlist of the new ring is in: reconcile and report.
    fn activate<F: FrameBuf>(&mut self, totem: &mut Totem<F>, out: &mut VecDeque<Event<F>>) {
        let Some(sync) = self.sync.take() else { return };
        let mut joined: BTreeMap<GroupName, Vec<(MemberAddr, Reason)>> = BTreeMap::new();
        for (node, list) in &sync.lists {
            if *node == self.me {
                continue;
            }
            for (pid, g) in list {
                let addr = MemberAddr {
                    nodeid: *node,
                    pid: *pid,
                };
                let members = self.table.entry(g.clone()).or_default();
                if let Err(pos) = members.binary_search(&addr) {
                    members.insert(pos, addr);
                    joined
                        .entry(g.clone())
                        .or_default()
                        .push((addr, Reason::NodeUp));
                }
            }
        }
        // NODEUP before PROCDOWN (spec §6.4 b, c), each confchg carrying the
        // members after it: the joined ones are reported while those about
        // to leave are still listed. Reporting them after the removals
        // below made a NODEUP confchg drop members it did not name as left
        // (found by the engine fuzz target, `cpg-sim/tests/forged.rs`).
        for (g, j) in joined {
            self.confchg(&g, Vec::new(), j, out);
        }
        let mut left: BTreeMap<GroupName, Vec<(MemberAddr, Reason)>> = BTreeMap::new();
        for (g, members) in self.table.iter_mut() {
            members.retain(|m| {
                if m.nodeid == self.me || !sets::contains(&sync.members, m.nodeid) {
                    return true;
                }
                let listed = sync
                    .lists
                    .iter()
                    .any(|(n, l)| *n == m.nodeid && l.iter().any(|(p, lg)| *p == m.pid && lg == g));
                if !listed {
                    left.entry(g.clone())
                        .or_default()
                        .push((*m, Reason::ProcDown));
                }
                listed
            });
        }
        for (g, l) in left {
            self.confchg(&g, l, Vec::new(), out);
        }
        self.table.retain(|_, m| !m.is_empty());
        self.ring_id = sync.ring_id;
        self.ring_members = sync.members.clone();
        out.push_back(Event::TotemConfChg {
            ring_id: sync.ring_id,
            members: Box::new(sync.members),
        });
        totem.trans_ack(sync.ring_id);
    }

    fn confchg<F>(
        &self,
        group: &GroupName,
        left: Vec<(MemberAddr, Reason)>,
        joined: Vec<(MemberAddr, Reason)>,
        out: &mut VecDeque<Event<F>>,
    ) {
        if !self.listeners(group.as_bytes()) {
            return;
        }
        let members = self.members(group);
        out.push_back(Event::ConfChg {
            group: group.clone(),
            members,
            left,
            joined,
        });
    }
}

fn encode(msg: &CpgMsg<'_>) -> Result<Arc<[u8]>, CsError> {
    let mut buf = alloc::vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf).map_err(|_| CsError::Library)?;
    Ok(Arc::from(buf))
}

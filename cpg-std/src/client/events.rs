//! Events: the event ring read into the handle's queue (a message in
//! pieces reassembled, a confchg in parts joined, `FLOW_CONTROL` and
//! `EVICTED` taken as state), the join state the daemon's replies and the
//! handle's own confchgs imply (what `mcast` is answered from), and
//! dispatch: one event at a time out of the queue to the callbacks, run
//! with no lock held.
//!
//! Records are read in ring order, whoever reads them (a dispatcher, or a
//! thread waiting for its reply, which keeps the events it reads past for
//! the next dispatch). Anything the protocol does not allow (a record that
//! does not parse, a piece out of place, a reply to no request) closes the
//! connection: `LIBRARY` from then on (`docs/spec/ipc.md` §10).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use cpg_core::ipc::{Assembly, DeliverHead, Event, EventKind, Message, Welcome, DELIVERY_DATA};
use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};
use cpg_ipc::HeldRecord;

use super::conn::{ClientNode, Fds, State};
use crate::handles::dispatch::{
    ConfChg, Delivery, DispatchMark, DispatchMode, DispatchOps, EventSink, HandleEvent,
};
use crate::handles::mailbox::EVENT_OVERHEAD;
use crate::handles::route::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;

/// Most entries of one confchg's three lists together, reassembled from
/// parts: far above any real group (64 nodes), low enough that a lying
/// daemon cannot make this process allocate without bound.
const CONFCHG_ENTRIES_MAX: usize = 1 << 20;

/// Message buffers kept for reuse after their delivery was dispatched, and
/// the most bytes they may hold together: a stream of deliveries then
/// allocates nothing (and a large one is not mapped, faulted in and
/// unmapped again for every message), while an idle handle keeps at most
/// this much. Many: one read of the ring may queue thousands of small
/// deliveries, each in its own buffer, before the first is dispatched.
const SPARE_BUFFERS_MAX: usize = 4096;
const SPARE_BYTES_MAX: usize = 16 << 20;

/// A group membership change, its parts joined.
pub(super) struct ConfChgOwned {
    group: GroupName,
    members: Vec<MemberAddr>,
    left: Vec<(MemberAddr, Reason)>,
    joined: Vec<(MemberAddr, Reason)>,
}

/// Where a delivery's bytes are.
pub(super) enum Body {
    /// Copied out of the event ring: the record body (a message in one
    /// piece) or the reassembled message; the message is `msg` of it.
    Owned { buf: Vec<u8>, msg: Range<usize> },
    /// A record of the delivery ring, released once dispatched.
    InRing(HeldRecord),
}

/// An event of the handle's queue, read out of the event ring.
pub(super) enum ClientEvent {
    Deliver {
        /// Shared with the deliveries before and after it (one group per
        /// handle at a time): an event stays small to queue and move.
        group: Arc<GroupName>,
        sender: MemberAddr,
        body: Body,
    },
    ConfChg(Box<ConfChgOwned>),
    Totem(RingId, Vec<NodeId>),
}

impl ClientEvent {
    /// What it counts against the queue's bound (as the embedded
    /// mailbox's events do).
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                // bytes in the delivery ring are bounded by it
                ClientEvent::Deliver {
                    body: Body::Owned { msg, .. },
                    ..
                } => msg.len(),
                ClientEvent::Deliver { .. } => 0,
                ClientEvent::ConfChg(c) => 8 * (c.members.len() + c.left.len() + c.joined.len()),
                ClientEvent::Totem(_, nodes) => 4 * nodes.len(),
            }
    }

    /// The event as the callbacks see it. A message is this event's own
    /// copy, so the callback may write it (`Delivery::writable`).
    fn view(&mut self) -> HandleEvent<'_> {
        match self {
            ClientEvent::Deliver {
                group,
                sender,
                body,
            } => {
                let msg: &mut [u8] = match body {
                    Body::Owned { buf, msg } => &mut buf[msg.clone()],
                    Body::InRing(r) => r.bytes_mut(),
                };
                // DELIVER does not carry the guarantee (docs/spec/ipc.md
                // §6): every guarantee is at least AGREED.
                HandleEvent::Deliver(Delivery::owned(group, *sender, Guarantee::Agreed, msg))
            }
            ClientEvent::ConfChg(c) => HandleEvent::ConfChg(ConfChg {
                group: &c.group,
                members: &c.members,
                left: &c.left,
                joined: &c.joined,
            }),
            ClientEvent::Totem(ring, nodes) => HandleEvent::Totem(*ring, nodes),
        }
    }
}

/// The handle's place in its group, as the daemon's replies and the own
/// confchgs say (the embedded node's `HState`, plus not joined).
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinState {
    None,
    JoinStarted(GroupName),
    Joined(GroupName),
    /// `joined`: the own join was delivered before the leave was asked.
    LeaveStarted {
        group: GroupName,
        joined: bool,
    },
}

/// The handle's queue and what reading the event ring keeps track of.
pub(super) struct Events {
    queue: VecDeque<ClientEvent>,
    /// Sum of the queued events' costs.
    bytes: usize,
    /// Above it the handle closes itself (see [`Events::new`]).
    bytes_max: usize,
    /// A message in pieces: the record checks, and what came so far.
    asm: Assembly,
    /// A delivery arriving in pieces: its group, sender, and the buffer
    /// whose bytes from `.3` on are the message so far (the first record's
    /// body, its header kept in front and its group name cut off, so the
    /// first piece is never copied a second time).
    partial: Option<(Arc<GroupName>, MemberAddr, Vec<u8>, usize)>,
    /// The group of the last delivery, shared by the next ones of it.
    group: Option<Arc<GroupName>>,
    /// Delivery-ring records read, in ring order: the tail past each, and
    /// whether its delivery was dispatched. The ring is released up to the
    /// last of the dispatched ones at the front.
    holds: VecDeque<(u64, bool)>,
    /// Buffers of dispatched deliveries, for the next records (see
    /// [`SPARE_BUFFERS_MAX`]); `spare_bytes` is their capacity.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
    /// A confchg in parts (MORE), until its last part.
    parts: Option<ConfChgOwned>,
    join: JoinState,
    /// A `JOIN`/`LEAVE` sent, not yet answered: its own confchg may come
    /// before the reply if the daemon writes them so.
    pub(super) join_inflight: Option<GroupName>,
    pub(super) leave_inflight: Option<GroupName>,
    /// Members of the handle's group after its last confchg (the daemon
    /// sends a handle its own group's only).
    pub(super) group_members: usize,
    /// Of those, members on this node (deliveries the daemon copies for
    /// this node's clients of the group).
    pub(super) local_members: usize,
    /// The node's flow control, as the last `FLOW_CONTROL` event (or
    /// `FLOW_CONTROL_STATE_GET` reply) said.
    pub(super) fc: bool,
    node_id: NodeId,
    /// This process as the daemon sees it (`SO_PEERCRED`): `getpid()`,
    /// or what the own join confchg shows if the daemon runs in another
    /// pid namespace.
    me_pid: u32,
    flags: u32,
    /// A totem callback is registered: every `TOTEM_CONFCHG` is queued.
    pub(super) wants_totem: bool,
    /// The own join confchg was just read and the initial totem confchg
    /// was asked for: the next record may be it.
    initial_totem_next: bool,
    message_max: usize,
}

impl Events {
    pub(super) fn new(w: &Welcome, flags: u32) -> Events {
        let message_max = w.message_max as usize;
        Events {
            queue: VecDeque::new(),
            bytes: 0,
            // The daemon evicts a handle whose queue reaches its cap (two
            // maximum messages and 64 KiB by default). Events read past
            // while waiting for replies are kept here, not there: a handle
            // that never dispatches but keeps asking closes itself at twice
            // that plus a ring, so its memory stays bounded too.
            bytes_max: 2 * (2 * message_max + (64 << 10)) + w.event_capacity as usize,
            asm: Assembly::new(),
            partial: None,
            group: None,
            holds: VecDeque::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            parts: None,
            join: JoinState::None,
            join_inflight: None,
            leave_inflight: None,
            group_members: 0,
            local_members: 0,
            fc: false,
            node_id: w.node_id,
            me_pid: std::process::id(),
            flags,
            wants_totem: false,
            initial_totem_next: false,
            message_max,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(super) fn pop(&mut self) -> Option<ClientEvent> {
        let ev = self.queue.pop_front()?;
        self.bytes -= ev.cost();
        Some(ev)
    }

    fn push(&mut self, ev: ClientEvent) -> Result<(), &'static str> {
        self.bytes += ev.cost();
        self.queue.push_back(ev);
        if self.bytes > self.bytes_max {
            return Err("undispatched events over the handle's bound");
        }
        Ok(())
    }

    /// A buffer for the next record: a dispatched delivery's, or new.
    fn buffer(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(b) => {
                self.spare_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Keep a dispatched event's buffer for a later record, within
    /// [`SPARE_BUFFERS_MAX`] and [`SPARE_BYTES_MAX`].
    fn recycle(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0
            && self.spare.len() < SPARE_BUFFERS_MAX
            && self.spare_bytes + cap <= SPARE_BYTES_MAX
        {
            buf.clear();
            self.spare_bytes += cap;
            self.spare.push(buf);
        }
    }

    /// A dispatched delivery-ring record: the tail the ring may be
    /// released to now (past every dispatched record at the front), if it
    /// moved.
    fn dispatched(&mut self, end: u64) -> Option<u64> {
        if let Some(h) = self.holds.iter_mut().find(|h| h.0 == end) {
            h.1 = true;
        }
        let mut upto = None;
        while let Some(&(e, true)) = self.holds.front() {
            upto = Some(e);
            self.holds.pop_front();
        }
        upto
    }

    /// What the first record of every delivery (`DELIVER`, `DELIVER_REF`)
    /// checks: not between a confchg's parts, within the largest message;
    /// its group.
    fn begin_delivery(&mut self, d: &DeliverHead<'_>) -> Result<Arc<GroupName>, &'static str> {
        self.initial_totem_next = false;
        if self.parts.is_some() {
            return Err("a delivery between a confchg's parts");
        }
        if d.total_len as usize > self.message_max {
            return Err("a delivery above the largest message");
        }
        self.group_of(d.group)
    }

    /// The group named `name`, shared with the last delivery's if it is
    /// the same.
    fn group_of(&mut self, name: &[u8]) -> Result<Arc<GroupName>, &'static str> {
        match &self.group {
            Some(g) if g.as_bytes() == name => Ok(Arc::clone(g)),
            _ => {
                let g = Arc::new(GroupName::new(name).map_err(|_| "malformed event")?);
                self.group = Some(Arc::clone(&g));
                Ok(g)
            }
        }
    }

    /// Drop every queued and partial event (evicted, dead, finalized).
    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.holds.clear();
        self.bytes = 0;
        self.asm.abort();
        self.partial = None;
        self.parts = None;
        self.initial_totem_next = false;
    }

    /// Whether `mcast` may send: joined, or joining (a send is ordered
    /// after the join and delivered).
    pub(super) fn can_send(&self) -> bool {
        matches!(self.join, JoinState::JoinStarted(_) | JoinState::Joined(_))
    }

    /// The daemon took this handle's `JOIN`.
    pub(super) fn on_join_reply(&mut self, group: GroupName) {
        if self.join == JoinState::None {
            self.join = JoinState::JoinStarted(group);
        }
        // else the own join confchg came first: already joined
    }

    /// The daemon took this handle's `LEAVE`.
    pub(super) fn on_leave_reply(&mut self, group: &GroupName) {
        self.join = match std::mem::replace(&mut self.join, JoinState::None) {
            JoinState::Joined(g) if g == *group => JoinState::LeaveStarted {
                group: g,
                joined: true,
            },
            JoinState::JoinStarted(g) if g == *group => JoinState::LeaveStarted {
                group: g,
                joined: false,
            },
            // None: the own leave confchg came first
            other => other,
        };
    }

    /// A confchg of the handle's group moves its join state (as the
    /// embedded router's); whether it is the own join.
    fn on_confchg(&mut self, c: &ConfChgOwned) -> bool {
        let own = self.on_confchg_state(c);
        let me = MemberAddr {
            nodeid: self.node_id,
            pid: self.me_pid,
        };
        // 0 once this handle is not among them (its own leave's confchg)
        let member = c.members.contains(&me);
        self.group_members = if member { c.members.len() } else { 0 };
        self.local_members = if member {
            c.members.iter().filter(|m| m.nodeid == me.nodeid).count()
        } else {
            0
        };
        own
    }

    fn on_confchg_state(&mut self, c: &ConfChgOwned) -> bool {
        let node = self.node_id;
        let joins = |pid: u32| {
            c.joined
                .iter()
                .any(|(m, r)| *r == Reason::Join && m.nodeid == node && m.pid == pid)
        };
        let me = MemberAddr {
            nodeid: node,
            pid: self.me_pid,
        };
        let leaves = c.left.iter().any(|(m, _)| *m == me);
        match &self.join {
            JoinState::JoinStarted(g)
            | JoinState::LeaveStarted {
                group: g,
                joined: false,
            } if *g == c.group => {
                if !joins(self.me_pid) {
                    // The daemon sends nothing of a group before the own
                    // join (cpg-api §6.1), so this is it: under another pid
                    // namespace the daemon knows this process by another pid.
                    let mut candidates = c
                        .joined
                        .iter()
                        .filter(|(m, r)| *r == Reason::Join && m.nodeid == node);
                    if let (Some((m, _)), None) = (candidates.next(), candidates.next()) {
                        self.me_pid = m.pid;
                    }
                }
                if !joins(self.me_pid) {
                    return false;
                }
                self.join = match &self.join {
                    JoinState::JoinStarted(g) => JoinState::Joined(g.clone()),
                    _ => JoinState::LeaveStarted {
                        group: c.group.clone(),
                        joined: true,
                    },
                };
                true
            }
            JoinState::None
                if self.join_inflight.as_ref() == Some(&c.group) && joins(self.me_pid) =>
            {
                self.join = JoinState::Joined(c.group.clone());
                true
            }
            JoinState::Joined(g)
                if *g == c.group && self.leave_inflight.as_ref() == Some(g) && leaves =>
            {
                self.join = JoinState::None;
                false
            }
            JoinState::LeaveStarted {
                group,
                joined: true,
            } if *group == c.group && leaves => {
                self.join = JoinState::None;
                false
            }
            _ => false,
        }
    }
}

impl State {
    /// Read every record the daemon published: replies to their waiters,
    /// events into the queue. Whether anything was read. A record the
    /// protocol does not allow closes the connection.
    pub(super) fn pump(&mut self, fds: &Fds) -> bool {
        if self.dead || self.evicted {
            return false;
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match c.rx.refresh() {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => {
                self.broken(fds, "impossible event ring head");
                return false;
            }
        }
        let mut body = self.ev.buffer();
        while self.conn.is_some() {
            if self.ev.partial.is_some() {
                // the next piece of a delivery goes straight from the ring
                // into its buffer
                match self.more_in_place() {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(why) => {
                        self.broken(fds, why);
                        return true;
                    }
                }
            }
            if body.capacity() == 0 {
                // the last record's buffer went into the queue
                body = self.ev.buffer();
            }
            let Some(c) = self.conn.as_mut() else {
                break;
            };
            match c.rx.next_into(&mut body) {
                Ok(None) => break,
                Ok(Some(info)) => {
                    if let Err(why) = self.on_record(info.kind, info.flags, &mut body) {
                        self.broken(fds, why);
                        return true;
                    }
                    if self.evicted {
                        // the daemon closes the socket too; shut down here
                        // so the application's fd is readable at once
                        let _ = rustix::net::shutdown(&*fds.sock, rustix::net::Shutdown::Both);
                        break;
                    }
                }
                Err(_) => {
                    self.broken(fds, "corrupt event ring");
                    return true;
                }
            }
        }
        if body.capacity() > 0 {
            self.ev.spare_bytes += body.capacity();
            self.ev.spare.push(body);
        }
        // records are copied out: their room goes back at once
        if let Some(c) = self.conn.as_mut() {
            if c.rx.release() {
                fds.daemon_wake.signal();
            }
        }
        true
    }

    /// If the next record is a `DELIVER_MORE`, append its piece to the
    /// delivery in progress without an intermediate copy (the checks of
    /// `Event::parse` for it: no flags, a non-empty piece, within the
    /// announced length). `Ok(false)`: the next record is something else
    /// (or none), left for the ordinary path.
    fn more_in_place(&mut self) -> Result<bool, &'static str> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(false);
        };
        let more = cpg_core::ipc::EventKind::DeliverMore as u16;
        let Some((info, at, len)) =
            c.rx.next_in_place_if(|i| i.kind == more)
                .map_err(|_| "corrupt event ring")?
        else {
            return Ok(false);
        };
        if info.flags != 0 || len == 0 {
            return Err("malformed event");
        }
        let ev_state = &mut self.ev;
        ev_state.initial_totem_next = false;
        let p = ev_state
            .asm
            .more(0, len)
            .map_err(|_| "a delivery piece out of place")?;
        let (_, _, buf, _) = ev_state
            .partial
            .as_mut()
            .ok_or("a delivery piece out of place")?;
        // appended from the shared bytes (not zero-filled, then copied over)
        let src =
            c.rx.mem()
                .shared_bytes(at, len)
                .ok_or("corrupt event ring")?;
        buf.extend_from_slice(src);
        if p.complete {
            let (group, sender, body, start) = ev_state.partial.take().expect("checked above");
            let msg = start..body.len();
            ev_state.push(ClientEvent::Deliver {
                group,
                sender,
                body: Body::Owned { buf: body, msg },
            })?;
        }
        Ok(true)
    }

    /// One record (its body in `body`, which a delivery in one piece keeps).
    fn on_record(&mut self, kind: u16, flags: u16, body: &mut Vec<u8>) -> Result<(), &'static str> {
        if kind == EventKind::Deliver as u16 {
            if flags != 0 {
                return Err("malformed event");
            }
            return self.on_deliver(body);
        }
        if kind == EventKind::DeliverRef as u16 {
            if flags != 0 {
                return Err("malformed event");
            }
            return self.on_deliver_ref(body);
        }
        let ev = Event::parse(kind, flags, body).map_err(|_| "malformed event")?;
        let ev_state = &mut self.ev;
        match ev {
            Event::Reply(r) => return self.on_reply(&r),
            // not part of any message: allowed between pieces too
            Event::FlowControl { enabled } => ev_state.fc = enabled,
            Event::Evicted { .. } => {
                self.evicted = true;
                ev_state.clear();
            }
            // read by `on_deliver` and `on_deliver_ref`
            Event::Deliver { .. } | Event::DeliverRef { .. } => return Err("malformed event"),
            Event::DeliverMore { piece } => {
                ev_state.initial_totem_next = false;
                let p = ev_state
                    .asm
                    .more(0, piece.len())
                    .map_err(|_| "a delivery piece out of place")?;
                let (_, _, buf, _) = ev_state
                    .partial
                    .as_mut()
                    .ok_or("a delivery piece out of place")?;
                buf.extend_from_slice(piece);
                if p.complete {
                    let (group, sender, body, start) =
                        ev_state.partial.take().expect("checked above");
                    let msg = start..body.len();
                    ev_state.push(ClientEvent::Deliver {
                        group,
                        sender,
                        body: Body::Owned { buf: body, msg },
                    })?;
                }
            }
            Event::Confchg {
                group,
                more,
                members,
                left,
                joined,
            } => {
                ev_state.initial_totem_next = false;
                if !ev_state.asm.is_idle() {
                    return Err("a confchg between a delivery's pieces");
                }
                let parts = ev_state.parts.get_or_insert_with(|| ConfChgOwned {
                    group: group.clone(),
                    members: Vec::new(),
                    left: Vec::new(),
                    joined: Vec::new(),
                });
                if parts.group != group {
                    return Err("confchg parts of two groups");
                }
                parts.members.extend(members.iter());
                parts.left.extend(left.iter());
                parts.joined.extend(joined.iter());
                if parts.members.len() + parts.left.len() + parts.joined.len() > CONFCHG_ENTRIES_MAX
                {
                    return Err("a confchg of too many parts");
                }
                if more {
                    return Ok(());
                }
                let c = ev_state.parts.take().expect("inserted above");
                let own_join = ev_state.on_confchg(&c);
                ev_state.push(ClientEvent::ConfChg(Box::new(c)))?;
                ev_state.initial_totem_next =
                    own_join && ev_state.flags & MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0;
            }
            Event::TotemConfchg { ring_id, members } => {
                let initial = std::mem::take(&mut ev_state.initial_totem_next);
                if !ev_state.asm.is_idle() || ev_state.parts.is_some() {
                    return Err("a totem confchg between a message's pieces");
                }
                // As the embedded node: every totem confchg to a handle with
                // a totem callback, and the initial one (right after the own
                // join) to a handle that asked for it; none to the others.
                if ev_state.wants_totem || initial {
                    ev_state.push(ClientEvent::Totem(ring_id, members.iter().collect()))?;
                }
            }
        }
        Ok(())
    }
}

impl State {
    /// A `DELIVER` record (its body in `body`, which a delivery in one
    /// piece keeps as its buffer): read in place, its group shared with
    /// the deliveries before it.
    fn on_deliver(&mut self, body: &mut Vec<u8>) -> Result<(), &'static str> {
        let d = DeliverHead::parse(body).map_err(|_| "malformed event")?;
        let ev_state = &mut self.ev;
        let group = ev_state.begin_delivery(&d)?;
        let p = ev_state
            .asm
            .first(0, d.total_len, d.piece.len())
            .map_err(|_| "a delivery between another's pieces")?;
        let sender = d.sender;
        // `piece` lies in `body`: the body is kept, never copied again
        let start = d.piece.as_ptr() as usize - body.as_ptr() as usize;
        let plen = d.piece.len();
        let total = d.total_len as usize;
        if p.complete {
            ev_state.push(ClientEvent::Deliver {
                group,
                sender,
                body: Body::Owned {
                    buf: std::mem::take(body),
                    msg: start..start + plen,
                },
            })?;
        } else {
            // the body becomes the buffer: the piece stays where it lies,
            // the group name behind it goes, the rest follows
            let mut buf = std::mem::take(body);
            buf.truncate(start + plen);
            buf.reserve_exact(total - plen);
            ev_state.partial = Some((group, sender, buf, start));
        }
        Ok(())
    }
}

impl State {
    /// A `DELIVER_REF`: the message is the next record of the delivery
    /// ring, dispatched where it lies (released once dispatched).
    fn on_deliver_ref(&mut self, body: &[u8]) -> Result<(), &'static str> {
        let d = DeliverHead::parse_ref(body).map_err(|_| "malformed event")?;
        let group = self.ev.begin_delivery(&d)?;
        if !self.ev.asm.is_idle() {
            return Err("a delivery between another's pieces");
        }
        let c = self.conn.as_mut().ok_or("no connection")?;
        let drx = c
            .drx
            .as_mut()
            .ok_or("a DELIVER_REF without a delivery ring")?;
        // its bytes were published before the event that names them
        drx.refresh().map_err(|_| "impossible delivery ring head")?;
        let (info, r) = drx
            .next_held()
            .map_err(|_| "corrupt delivery ring")?
            .ok_or("a DELIVER_REF before its bytes")?;
        if info.kind != DELIVERY_DATA || info.flags != 0 || r.len() != d.total_len as usize {
            return Err("a delivery record unlike its DELIVER_REF");
        }
        self.ev.holds.push_back((r.end(), false));
        self.ev.push(ClientEvent::Deliver {
            group,
            sender: d.sender,
            body: Body::InRing(r),
        })
    }

    /// A dispatched event: its buffer kept for reuse, or its delivery-ring
    /// record released (with the records before it that are done).
    fn done_with(&mut self, fds: &Fds, ev: ClientEvent) {
        let ClientEvent::Deliver { body, .. } = ev else {
            return;
        };
        match body {
            Body::Owned { buf, .. } => self.ev.recycle(buf),
            Body::InRing(r) => {
                let Some(upto) = self.ev.dispatched(r.end()) else {
                    return;
                };
                let Some(drx) = self.conn.as_mut().and_then(|c| c.drx.as_mut()) else {
                    return;
                };
                if drx.release_to(upto) {
                    fds.daemon_wake.signal();
                }
            }
        }
    }
}

impl DispatchOps for ClientNode {
    fn dispatch(
        &self,
        h: u64,
        mode: DispatchMode,
        sink: &mut dyn EventSink,
    ) -> Result<(), CsError> {
        let callbacks = {
            let g = self.lock();
            g.check(self.handle, h, false)?;
            g.callbacks.clone().ok_or(CsError::BadHandle)?
        };
        let _mark = DispatchMark::new((self.key(), h))?;
        let mut done = 0usize;
        // the event dispatched last, handed back under the same lock that
        // takes the next one (one lock per event, not two)
        let mut last: Option<ClientEvent> = None;
        loop {
            let mut g = self.lock();
            if let Some(ev) = last.take() {
                g.done_with(&self.fds, ev);
                // finalized (BAD_HANDLE), evicted or the daemon gone (LIBRARY)
                if let Some(e) = g.gate() {
                    return Err(e);
                }
                if done >= mode.limit {
                    return Ok(());
                }
            }
            let next = if mode.block {
                let (g2, r) = self.wait(g, |s| match s.gate() {
                    Some(e) => Some(Err(e)),
                    None => s.ev.pop().map(Ok),
                });
                g = g2;
                r.map(Some)
            } else {
                match g.gate() {
                    Some(e) => Err(e),
                    None => {
                        if g.ev.is_empty() {
                            self.pump(&mut g);
                        }
                        match g.ev.pop() {
                            Some(ev) => Ok(Some(ev)),
                            // nothing pending: is there still a daemon?
                            None if self.probe(&mut g) => Err(CsError::Library),
                            None => g.gate().map_or(Ok(None), Err),
                        }
                    }
                }
            };
            self.finish(g);
            let Some(mut ev) = next? else {
                // ALL: drained; ONE_NONBLOCKING: nothing pending
                return if mode.limited() && done == 0 {
                    Err(CsError::TryAgain)
                } else {
                    Ok(())
                };
            };
            {
                // no connection lock while a callback runs: it may call
                // anything, finalize included
                let mut cb = crate::lock(&callbacks);
                sink.event(&mut *cb, ev.view());
            }
            done += 1;
            last = Some(ev);
        }
    }
}

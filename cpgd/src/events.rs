//! The event side of a connection: the handle's callbacks write into the
//! event ring directly (one copy, from the engine's buffer into shared
//! memory); what does not fit waits here, and the daemon dispatches the
//! handle again only once it is written. So a connection holds at most one
//! message beyond its ring, and a client that stops dispatching leaves its
//! events in the handle's queue, where the node's slow-consumer policy
//! (`handle_queue_bytes`, eviction) applies as to an embedded handle.
//!
//! A message of at least [`DELIVERY_REF_MIN`] bytes goes into the delivery
//! ring instead, announced by a `DELIVER_REF` event: the client dispatches
//! it where it lies (no copy out) and releases it after its callback, while
//! replies and other events keep flowing through the event ring.

use std::collections::VecDeque;

use cpg_core::ipc::event::{EventKind, DELIVER_HEADER_LEN};
use cpg_core::ipc::{ConfchgParts, Event, List, Message, Split, DELIVERY_DATA, EVENT_RESERVE};

use cpg_core::{GroupName, MemberAddr, NodeId, Reason, RingId};
use cpg_ipc::ring::WriteError;
use cpg_ipc::{RingTx, Wake};

/// Messages at least this long travel in the delivery ring: below it the
/// copy out of the event ring costs less than holding ring room until the
/// callback returns.
pub(crate) const DELIVERY_REF_MIN: usize = 2048;

/// What did not fit the rings yet.
#[derive(Debug)]
enum Held {
    /// An event record (its body).
    Record {
        kind: u16,
        flags: u16,
        body: Vec<u8>,
    },
    /// A message for the delivery ring (the `DELIVER_REF` header and the
    /// group name, and the message).
    Message { head: Vec<u8>, msg: Vec<u8> },
}

impl Held {
    fn bytes(&self) -> usize {
        match self {
            Held::Record { body, .. } => body.len(),
            Held::Message { head, msg } => head.len() + msg.len(),
        }
    }
}

/// The producer of a connection's event ring and what waits for room.
#[derive(Debug)]
pub(crate) struct EventOut {
    tx: RingTx,
    /// The delivery ring, if the connection has one.
    dtx: Option<RingTx>,
    held: VecDeque<Held>,
    /// Bytes held.
    held_bytes: usize,
    /// The client broke the ring's indices: disconnect.
    pub(crate) broken: bool,
    /// Events written to the ring (records).
    pub(crate) records: u64,
    /// Bytes of message payload copied into the rings.
    pub(crate) payload_bytes: u64,
    /// Messages written into the delivery ring.
    pub(crate) delivery_ring_messages: u64,
    /// An event was written since the last publish: it rings the client's
    /// doorbell if armed (a reply alone never does).
    events_unpublished: bool,
    /// Ring bytes of a recent delivery: up at once on a larger one, down
    /// slowly. Sizes the next dispatch so it fits the ring (see `batch`).
    recent_event_bytes: usize,
    /// The last delivery went into the delivery ring (its room counts).
    recent_by_ref: bool,
}

impl EventOut {
    pub(crate) fn new(tx: RingTx, dtx: Option<RingTx>) -> EventOut {
        EventOut {
            tx,
            dtx,
            held: VecDeque::new(),
            held_bytes: 0,
            broken: false,
            records: 0,
            payload_bytes: 0,
            delivery_ring_messages: 0,
            events_unpublished: false,
            recent_event_bytes: 0,
            recent_by_ref: false,
        }
    }

    /// How many events (at most `max`) the next dispatch may move: as many
    /// recent-sized deliveries as the ring has room for, at least one.
    /// Whatever a dispatch writes beyond the ring is copied into `held` and
    /// copied again later: a fixed batch of large messages would send most
    /// of them down that path (1 MiB messages, 4 MiB ring: a third of the
    /// daemon's time), while small ones keep the whole batch.
    pub(crate) fn batch(&mut self, max: usize) -> usize {
        if self.recent_event_bytes == 0 {
            return max;
        }
        if self.tx.refresh().is_err() {
            self.broken = true;
            return 1;
        }
        let room = match (self.recent_by_ref, self.dtx.as_mut()) {
            (true, Some(d)) => {
                if d.refresh().is_err() {
                    self.broken = true;
                    return 1;
                }
                d.room()
            }
            _ => self.tx.room().saturating_sub(EVENT_RESERVE),
        };
        (room / self.recent_event_bytes).clamp(1, max)
    }

    /// Nothing waits: the handle may be dispatched again.
    pub(crate) fn is_clear(&self) -> bool {
        self.held.is_empty()
    }

    /// Bytes waiting for room.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    fn note(&mut self, e: WriteError) {
        if matches!(
            e,
            WriteError::Corrupt | WriteError::TooLarge | WriteError::Msg(_)
        ) {
            self.broken = true;
        }
    }

    /// Write a record whose body is `parts`, keeping the reply reserve, or
    /// hold it (in order behind anything held).
    fn put(&mut self, kind: u16, flags: u16, parts: &[&[u8]]) {
        if self.held.is_empty() {
            match self.tx.write_parts(kind, flags, parts, EVENT_RESERVE) {
                Ok(()) => {
                    self.records += 1;
                    self.events_unpublished = true;
                    return;
                }
                Err(WriteError::Full) => {}
                Err(e) => {
                    self.note(e);
                    return;
                }
            }
        }
        self.hold(Held::Record {
            kind,
            flags,
            body: parts.concat(),
        });
    }

    fn hold(&mut self, h: Held) {
        self.held_bytes += h.bytes();
        self.held.push_back(h);
    }

    /// Whether a message of `len` bytes goes into the delivery ring.
    fn by_ref(&self, len: usize) -> bool {
        len >= DELIVERY_REF_MIN
            && self
                .dtx
                .as_ref()
                .is_some_and(|d| len <= d.ring().body_max())
    }

    /// Write `msg` into the delivery ring and its `DELIVER_REF` (`head`:
    /// header and group name) into the event ring, if both fit now; the
    /// message's bytes are published first, so a client that reads the
    /// event finds them.
    fn write_ref(&mut self, head: &[u8], msg: &[u8]) -> bool {
        let Some(d) = self.dtx.as_mut() else {
            return false;
        };
        let fit = d
            .fits(msg.len(), 0)
            .and_then(|dfit| Ok(dfit && self.tx.fits(head.len(), EVENT_RESERVE)?));
        match fit {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                self.note(e);
                return false;
            }
        }
        let wrote = d.write_parts(DELIVERY_DATA, 0, &[msg], 0).and_then(|()| {
            // the client reads the delivery ring only when the event
            // names it: nobody sleeps on it, no wake-up to give
            let _ = d.publish();
            self.tx
                .write_parts(EventKind::DeliverRef as u16, 0, &[head], EVENT_RESERVE)
        });
        match wrote {
            Ok(()) => {
                self.records += 1;
                self.delivery_ring_messages += 1;
                self.events_unpublished = true;
                true
            }
            Err(e) => {
                // both fitted a moment ago: only a lying client's indices
                self.note(e);
                self.broken = true;
                false
            }
        }
    }

    fn put_msg<'a, M: Message<'a>>(&mut self, msg: &M) {
        let mut body = vec![0u8; msg.body_len()];
        match msg.emit_body(&mut body) {
            Ok(_) => self.put(msg.kind(), msg.flags(), &[&body]),
            Err(e) => self.note(WriteError::Msg(e)),
        }
    }

    /// Move held records into the rings while they fit.
    pub(crate) fn flush(&mut self) {
        while let Some(h) = self.held.pop_front() {
            let written = match &h {
                Held::Record { kind, flags, body } => {
                    match self.tx.write_parts(*kind, *flags, &[body], EVENT_RESERVE) {
                        Ok(()) => {
                            self.records += 1;
                            self.events_unpublished = true;
                            true
                        }
                        Err(WriteError::Full) => false,
                        Err(e) => {
                            self.note(e);
                            false
                        }
                    }
                }
                Held::Message { head, msg } => self.write_ref(head, msg),
            };
            if !written {
                self.held.push_front(h);
                return;
            }
            self.held_bytes -= h.bytes();
        }
    }

    /// A message of the handle's group: a `DELIVER_REF` and its bytes in
    /// the delivery ring, or `DELIVER` and `DELIVER_MORE`s.
    pub(crate) fn deliver(&mut self, group: &GroupName, sender: MemberAddr, msg: &[u8]) {
        let total = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        let mut head = [0u8; DELIVER_HEADER_LEN];
        head[0..4].copy_from_slice(&sender.nodeid.to_le_bytes());
        head[4..8].copy_from_slice(&sender.pid.to_le_bytes());
        head[8..12].copy_from_slice(&total.to_le_bytes());
        head[12] = group.len() as u8;
        let name = group.as_bytes();
        self.recent_by_ref = self.by_ref(msg.len());
        if self.recent_by_ref {
            // the same header as DELIVER's, the name right behind it
            let ref_head = [&head[..], name].concat();
            if !(self.held.is_empty() && self.write_ref(&ref_head, msg)) {
                self.hold(Held::Message {
                    head: ref_head,
                    msg: msg.to_vec(),
                });
            }
        } else {
            let body_max = self.tx.ring().body_max();
            for (i, r) in Split::deliver(msg.len(), body_max, name.len()).enumerate() {
                let piece = &msg[r];
                if i == 0 {
                    self.put(EventKind::Deliver as u16, 0, &[&head, piece, name]);
                } else {
                    self.put(EventKind::DeliverMore as u16, 0, &[piece]);
                }
            }
        }
        self.payload_bytes += msg.len() as u64;
        let bytes = cpg_core::ipc::ring::record_len(msg.len() + DELIVER_HEADER_LEN + name.len())
            .unwrap_or(usize::MAX);
        self.recent_event_bytes = if bytes >= self.recent_event_bytes {
            bytes
        } else {
            self.recent_event_bytes - (self.recent_event_bytes - bytes) / 16
        };
    }

    /// A membership change, in parts of at most 128 entries per list.
    pub(crate) fn confchg(
        &mut self,
        group: &GroupName,
        members: &[MemberAddr],
        left: &[(MemberAddr, Reason)],
        joined: &[(MemberAddr, Reason)],
    ) {
        for part in ConfchgParts::new(group, members, left, joined) {
            self.put_msg(&part);
        }
    }

    /// A ring change (model v1 totem confchg).
    pub(crate) fn totem(&mut self, ring_id: RingId, nodes: &[NodeId]) {
        self.put_msg(&Event::TotemConfchg {
            ring_id,
            members: List::from_slice(nodes),
        });
    }

    /// An edge of the node's flow control (`docs/spec/ipc.md` §7).
    pub(crate) fn flow_control(&mut self, enabled: bool) {
        self.put_msg(&Event::FlowControl { enabled });
    }

    /// A reply: into the reserve, never held (the daemon takes a request
    /// only when its reply fits). `false` if it did not fit after all.
    pub(crate) fn reply(&mut self, ev: &Event<'_>) -> bool {
        match self.tx.write(ev, 0) {
            Ok(()) => {
                self.records += 1;
                true
            }
            Err(e) => {
                self.note(e);
                false
            }
        }
    }

    /// Whether the largest reply fits now.
    pub(crate) fn reply_fits(&mut self) -> bool {
        match self.tx.fits(cpg_core::ipc::REPLY_BODY_MAX, 0) {
            Ok(f) => f,
            Err(e) => {
                self.note(e);
                false
            }
        }
    }

    /// Publish; whom to wake: a client thread sleeping on its eventfd,
    /// and (for a batch with an event) the application's doorbell.
    pub(crate) fn publish(&mut self) -> Wake {
        if std::mem::take(&mut self.events_unpublished) {
            self.tx.publish_events()
        } else {
            Wake {
                eventfd: self.tx.publish(),
                bell: false,
            }
        }
    }

    /// About to wait for room: ask the client to signal when it consumes.
    /// `true` if room appeared meanwhile.
    pub(crate) fn prepare_wait(&mut self) -> bool {
        let (need, data_need) = match self.held.front() {
            Some(Held::Record { body, .. }) => (body.len(), None),
            Some(Held::Message { head, msg }) => (head.len(), Some(msg.len())),
            None => (0, None),
        };
        let events = self.tx.prepare_wait(need, EVENT_RESERVE);
        let data = match (data_need, self.dtx.as_mut()) {
            (Some(n), Some(d)) => d.prepare_wait(n, 0),
            _ => Ok(true),
        };
        match (events, data) {
            (Ok(e), Ok(d)) => e && d,
            (Err(e), _) | (_, Err(e)) => {
                self.note(e);
                false
            }
        }
    }
}

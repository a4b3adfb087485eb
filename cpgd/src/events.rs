//! The event side of a connection: the handle's callbacks write into the
//! event ring directly (one copy, from the engine's buffer into shared
//! memory); what does not fit waits here, and the daemon dispatches the
//! handle again only once it is written. So a connection holds at most one
//! message beyond its ring, and a client that stops dispatching leaves its
//! events in the handle's queue, where the node's slow-consumer policy
//! (`handle_queue_bytes`, eviction) applies as to an embedded handle.

use std::collections::VecDeque;

use cpg_core::ipc::event::{EventKind, DELIVER_HEADER_LEN};
use cpg_core::ipc::{ConfchgParts, Event, List, Message, Split, EVENT_RESERVE};

use cpg_core::{GroupName, MemberAddr, NodeId, Reason, RingId};
use cpg_ipc::ring::WriteError;
use cpg_ipc::{RingTx, Wake};

/// A record that did not fit the ring yet.
#[derive(Debug)]
struct Held {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
}

/// The producer of a connection's event ring and what waits for room.
#[derive(Debug)]
pub(crate) struct EventOut {
    tx: RingTx,
    held: VecDeque<Held>,
    /// Bytes held.
    held_bytes: usize,
    /// The client broke the ring's indices: disconnect.
    pub(crate) broken: bool,
    /// Events written to the ring (records).
    pub(crate) records: u64,
    /// Bytes of message payload copied into the ring.
    pub(crate) payload_bytes: u64,
    /// An event was written since the last publish: it rings the client's
    /// doorbell if armed (a reply alone never does).
    events_unpublished: bool,
    /// Ring bytes of a recent delivery: up at once on a larger one, down
    /// slowly. Sizes the next dispatch so it fits the ring (see `batch`).
    recent_event_bytes: usize,
}

impl EventOut {
    pub(crate) fn new(tx: RingTx) -> EventOut {
        EventOut {
            tx,
            held: VecDeque::new(),
            held_bytes: 0,
            broken: false,
            records: 0,
            payload_bytes: 0,
            events_unpublished: false,
            recent_event_bytes: 0,
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
        let room = self.tx.free().saturating_sub(EVENT_RESERVE);
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
        let body = parts.concat();
        self.held_bytes += body.len();
        self.held.push_back(Held { kind, flags, body });
    }

    fn put_msg<'a, M: Message<'a>>(&mut self, msg: &M) {
        let mut body = vec![0u8; msg.body_len()];
        match msg.emit_body(&mut body) {
            Ok(_) => self.put(msg.kind(), msg.flags(), &[&body]),
            Err(e) => self.note(WriteError::Msg(e)),
        }
    }

    /// Move held records into the ring while they fit.
    pub(crate) fn flush(&mut self) {
        while let Some(h) = self.held.front() {
            match self
                .tx
                .write_parts(h.kind, h.flags, &[&h.body], EVENT_RESERVE)
            {
                Ok(()) => {
                    self.records += 1;
                    self.events_unpublished = true;
                    self.held_bytes -= h.body.len();
                    self.held.pop_front();
                }
                Err(WriteError::Full) => return,
                Err(e) => {
                    self.note(e);
                    return;
                }
            }
        }
    }

    /// A message of the handle's group: `DELIVER` and `DELIVER_MORE`s.
    pub(crate) fn deliver(&mut self, group: &GroupName, sender: MemberAddr, msg: &[u8]) {
        let total = u32::try_from(msg.len()).unwrap_or(u32::MAX);
        let mut head = [0u8; DELIVER_HEADER_LEN];
        head[0..4].copy_from_slice(&sender.nodeid.to_le_bytes());
        head[4..8].copy_from_slice(&sender.pid.to_le_bytes());
        head[8..12].copy_from_slice(&total.to_le_bytes());
        head[12] = group.len() as u8;
        let name = group.as_bytes();
        let body_max = self.tx.ring().body_max();
        for (i, r) in Split::deliver(msg.len(), body_max, name.len()).enumerate() {
            let piece = &msg[r];
            if i == 0 {
                self.put(EventKind::Deliver as u16, 0, &[&head, piece, name]);
            } else {
                self.put(EventKind::DeliverMore as u16, 0, &[piece]);
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
        let need = self.held.front().map(|h| h.body.len()).unwrap_or(0);
        match self.tx.prepare_wait(need, EVENT_RESERVE) {
            Ok(r) => r,
            Err(e) => {
                self.note(e);
                false
            }
        }
    }
}

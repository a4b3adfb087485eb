//! The ORF token visit (totem.md §3.2–§3.9): flow control, retransmission
//! requests, sending, aru, failed-to-receive, token hold; multicast receipt
//! and in-order (AGREED / SAFE) delivery; garbage collection.

use alloc::sync::Arc;

use super::pg::Assembled;
use super::sets;
use super::timer::Timer;
use super::window::{seq_le, seq_lt, seq_min, Stored, Window};
use super::{Totem, TotemEvent};
use crate::engine::{FrameBuf, FrameRef, State, TraceDeliver};
use crate::limits::{RECV_WINDOW, RTR_MAX};
use crate::time::Instant;
use crate::types::{Guarantee, NodeId, RingId};
use crate::wire::{self, McastRepr, Packet, RtrEntry, TokenRepr};

/// FNV-1a, for trace digests.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn add_sat(base: u32, plus: u32, minus: u32) -> u32 {
    (i64::from(base) + i64::from(plus) - i64::from(minus)).clamp(0, i64::from(u32::MAX)) as u32
}

impl<F: FrameBuf> Totem<F> {
    // ---- multicast receipt ------------------------------------------------

    pub(super) fn on_mcast(&mut self, now: Instant, ring_id: RingId, seq: u32, stored: Stored<F>) {
        if ring_id != self.my_ring_id {
            let sender = stored.sender;
            Self::release_stored(&mut self.releases, stored);
            self.stats.dropped_stale += 1;
            self.on_foreign(now, sender, ring_id);
            return;
        }
        let window = match self.state {
            State::Recovery => &mut self.recovery,
            State::Operational | State::Gather if self.regular.ring_id == ring_id => &mut self.regular,
            _ => {
                Self::release_stored(&mut self.releases, stored);
                self.stats.dropped_stale += 1;
                return;
            }
        };
        let keep = stored.clone();
        if !window.insert(seq, keep) {
            Self::release_stored(&mut self.releases, stored);
            return;
        }
        drop(stored);
        if self.state == State::Operational {
            self.deliver_ready();
        }
    }

    /// A multicast or merge-detect of another ring (§4.5).
    pub(super) fn on_foreign(&mut self, now: Instant, sender: NodeId, ring: RingId) {
        match self.state {
            State::Operational => {
                if ring.seq < self.my_ring_id.seq && sets::contains(&self.memb, sender) {
                    return; // a late frame of an older ring of a current member
                }
                sets::insert(&mut self.proc_set, sender);
                self.gather_enter(now);
            }
            State::Gather => {
                if !sets::contains(&self.proc_set, sender) {
                    sets::insert(&mut self.proc_set, sender);
                    self.gather_enter(now);
                }
            }
            State::Commit | State::Recovery => {}
        }
    }

    // ---- the token ---------------------------------------------------------

    pub(super) fn on_orf_token(&mut self, now: Instant, mut t: TokenRepr) {
        if self.token_discard || self.state == State::Commit || self.state == State::Gather {
            self.stats.dropped_stale += 1;
            return;
        }
        if t.ring_id != self.my_ring_id || !seq_lt(self.my_token_seq, t.token_seq) {
            self.stats.dropped_stale += 1;
            return;
        }
        self.stats.token_visits += 1;
        let operational = self.state == State::Operational;
        if operational {
            self.idle_bookkeeping(now, &t);
            let upto = seq_min(seq_min(t.aru, self.my_last_aru), self.regular.high_delivered);
            let releases = &mut self.releases;
            self.regular.release_upto(upto, |st| Self::release_stored(releases, st));
        }
        self.my_safe_seq = seq_min(t.aru, self.my_last_aru);
        let last_aru = self.my_last_aru;
        self.my_last_aru = t.aru;

        let mut budget = self.fcc_calculate(&t);
        let sent_rtr = self.serve_rtr(&mut t, &mut budget);
        self.add_my_rtr(&mut t);
        let released = if operational { self.regular.released() } else { self.recovery.released() };
        let limit = released.wrapping_add(RECV_WINDOW).wrapping_sub(budget).wrapping_sub(self.cfg.window_size);
        if seq_lt(limit, t.seq) {
            budget = 0;
        }
        let sent_new = self.send_new(&mut t, budget);
        let sent = sent_rtr + sent_new;
        t.fcc = add_sat(t.fcc, sent, self.my_trc);
        self.my_trc = sent;
        t.backlog = add_sat(t.backlog, self.my_cbl, self.my_pbl);
        self.my_pbl = self.my_cbl;

        let my_aru = if operational { self.regular.aru } else { self.recovery.aru };
        if seq_lt(my_aru, t.aru) || t.aru_addr == self.me || t.aru_addr == 0 {
            t.aru = my_aru;
            t.aru_addr = if t.aru == t.seq { 0 } else { self.me };
        }
        if t.aru == last_aru && t.aru_addr != 0 {
            self.my_aru_count += 1;
        } else {
            self.my_aru_count = 0;
        }
        if self.my_aru_count > self.cfg.fail_recv_const && t.aru_addr == self.me {
            self.stats.failed_to_recv += 1;
            self.failed_to_recv = true;
            sets::insert(&mut self.fail_set, self.me);
            self.gather_enter(now);
            return;
        }
        self.my_token_seq = t.token_seq;
        t.token_seq = t.token_seq.wrapping_add(1);
        if self.state == State::Recovery {
            self.recovery_progress(now, &mut t);
        }
        let hold = self.is_rep() && self.token_held;
        let successor = self.successor(&self.memb_for_token());
        self.send_token(now, successor, &Packet::Token(t), hold);
        if hold {
            self.stats.token_holds += 1;
            self.timers.arm(Timer::Hold, now + self.cfg.hold_effective());
        }
        if self.state == State::Operational {
            self.deliver_ready();
        }
        self.timers.arm(Timer::TokenLoss, now + self.cfg.token_effective());
        self.update_flow_control();
    }

    /// The ring the token travels: the installed ring in OPERATIONAL, the
    /// one being built in RECOVERY.
    fn memb_for_token(&self) -> crate::wire::NodeList {
        if self.state == State::Recovery {
            self.new_memb.clone()
        } else {
            self.memb.clone()
        }
    }

    /// §3.9: count idle visits, decide whether the rep holds the token.
    fn idle_bookkeeping(&mut self, now: Instant, t: &TokenRepr) {
        if t.seq == self.my_last_seq {
            self.my_seq_unchanged += 1;
            if !self.timers.is_armed(Timer::Merge) {
                self.timers.arm(Timer::Merge, now + self.cfg.merge);
            }
        } else {
            self.my_seq_unchanged = 0;
            self.timers.cancel(Timer::Merge);
            self.timers.cancel(Timer::Hold);
            self.token_held = false;
        }
        self.my_last_seq = t.seq;
        let idle = self.send_queue.is_empty() && self.sync_queue.is_empty();
        if self.is_rep() {
            self.token_held = idle && self.my_seq_unchanged > self.cfg.seqno_unchanged_const && t.rtr.is_empty();
        } else if self.my_seq_unchanged >= self.cfg.seqno_unchanged_const {
            self.token_held = true;
        }
    }

    /// §3.3: frames this visit may send.
    fn fcc_calculate(&mut self, t: &TokenRepr) -> u32 {
        let mut allowed = self.cfg.max_messages.min(self.cfg.window_size.saturating_sub(t.fcc));
        let cap = self.frame_payload_cap();
        self.my_cbl = match self.state {
            State::Recovery => self.retrans_queue.len() as u32,
            _ if self.waiting_trans_ack => self.sync_queue.frames_estimate(cap) as u32,
            _ => self.send_queue.frames_estimate(cap) as u32,
        };
        let total = add_sat(t.backlog, self.my_cbl, self.my_pbl);
        if total > 0 {
            let share = (u64::from(self.cfg.window_size) * u64::from(self.my_pbl) / u64::from(total)) as u32;
            if share > 0 {
                allowed = allowed.min(share);
            }
        }
        allowed
    }

    /// §3.4 (1): re-multicast requested frames I hold.
    fn serve_rtr(&mut self, t: &mut TokenRepr, budget: &mut u32) -> u32 {
        let mut sent = 0;
        let mut keep = heapless::Vec::<RtrEntry, RTR_MAX>::new();
        let entries = core::mem::take(&mut t.rtr);
        for e in entries {
            if e.ring_id != self.my_ring_id {
                continue;
            }
            let window = if self.state == State::Recovery { &self.recovery } else { &self.regular };
            if *budget > 0 {
                if let Some(st) = window.get(e.seq) {
                    let frame = st.frame.clone();
                    self.multicast(frame);
                    self.stats.retransmissions += 1;
                    *budget -= 1;
                    sent += 1;
                    continue;
                }
            }
            let _ = keep.push(e);
        }
        t.rtr = keep;
        sent
    }

    /// §3.4 (2): request gaps that persisted `miss_count_const` visits.
    fn add_my_rtr(&mut self, t: &mut TokenRepr) {
        let ring = self.my_ring_id;
        let threshold = self.cfg.miss_count_const;
        let window = if self.state == State::Recovery { &mut self.recovery } else { &mut self.regular };
        let upto = t.seq;
        let rtr = &mut t.rtr;
        window.missing(upto, threshold, RTR_MAX, &mut |seq| {
            if rtr.iter().any(|e| e.seq == seq && e.ring_id == ring) {
                return true;
            }
            rtr.push(RtrEntry { ring_id: ring, seq }).is_ok()
        });
    }

    /// Send up to `budget` new frames, assigning seqs after `t.seq`.
    fn send_new(&mut self, t: &mut TokenRepr, budget: u32) -> u32 {
        let mut sent = 0;
        let cap = self.frame_payload_cap();
        while sent < budget {
            let (payload_guarantee, encapsulated) = if self.state == State::Recovery {
                let Some(inner) = self.retrans_queue.pop_front() else { break };
                self.scratch.clear();
                self.scratch.extend_from_slice(inner.as_ref());
                let g = match wire::parse_frame(inner.as_ref(), self.cfg.cluster_id) {
                    Ok(wire::Frame { packet: Packet::Mcast(m), .. }) => m.guarantee,
                    _ => Guarantee::Agreed,
                };
                (g, true)
            } else {
                let queue = if self.waiting_trans_ack { &mut self.sync_queue } else { &mut self.send_queue };
                let Some(plan) = queue.take_frame(cap, &mut self.frag_counter) else { break };
                let items: alloc::vec::Vec<&[u8]> = plan.items.iter().map(|(d, r)| &d[r.clone()]).collect();
                let len = wire::pack::packed_len(items.iter().map(|i| i.len()));
                self.scratch.clear();
                self.scratch.resize(len, 0);
                if wire::pack::emit_packed(plan.header, &items, &mut self.scratch).is_err() {
                    break;
                }
                (plan.guarantee.unwrap_or(Guarantee::Agreed), false)
            };
            t.seq = t.seq.wrapping_add(1);
            let seq = t.seq;
            let repr = McastRepr {
                ring_id: self.my_ring_id,
                seq,
                guarantee: payload_guarantee,
                encapsulated,
                payload: &self.scratch,
            };
            let packet = Packet::Mcast(repr);
            let frame = self.emit(&packet);
            let len = frame.len();
            let payload = len - self.scratch.len()..len;
            let stored = Stored {
                frame: FrameRef::Own(frame.clone()),
                sender: self.me,
                guarantee: payload_guarantee,
                encapsulated,
                payload,
            };
            let window = if self.state == State::Recovery { &mut self.recovery } else { &mut self.regular };
            window.insert(seq, stored);
            self.multicast(FrameRef::Own(frame));
            sent += 1;
        }
        sent
    }

    // ---- delivery ----------------------------------------------------------

    /// AGREED: deliver the contiguous prefix; SAFE frames wait until stable.
    pub(super) fn deliver_ready(&mut self) {
        loop {
            let next = self.regular.high_delivered.wrapping_add(1);
            if !seq_le(next, self.regular.high_seq) {
                break;
            }
            let Some(st) = self.regular.get(next) else { break };
            if st.guarantee.is_safe() && !seq_le(next, self.my_safe_seq) {
                break;
            }
            self.deliver_seq(next, false);
        }
    }

    /// Deliver the frame at `seq` of the regular window (it is held).
    pub(super) fn deliver_seq(&mut self, seq: u32, transitional: bool) {
        let Some(st) = self.regular.get(seq).cloned() else { return };
        self.regular.high_delivered = seq;
        Self::deliver_stored(
            &mut self.regular,
            &mut self.assemblies,
            &mut self.events,
            &mut self.stats,
            self.trace,
            seq,
            st,
            transitional,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver_stored(
        window: &mut Window<F>,
        assemblies: &mut super::pg::Assemblies,
        events: &mut alloc::collections::VecDeque<TotemEvent<F>>,
        stats: &mut crate::engine::Stats,
        trace: bool,
        seq: u32,
        st: Stored<F>,
        transitional: bool,
    ) {
        if st.encapsulated {
            return; // recovery copies are never delivered as themselves
        }
        stats.frames_delivered += 1;
        if st.guarantee.is_safe() {
            stats.safe_deliveries += 1;
        }
        if transitional {
            stats.transitional_deliveries += 1;
        }
        if trace {
            let d = digest(st.frame.as_ref().get(st.payload.clone()).unwrap_or(&[]));
            events.push_back(TotemEvent::Trace(TraceDeliver {
                ring_id: window.ring_id,
                seq,
                sender: st.sender,
                safe: st.guarantee.is_safe(),
                transitional,
                digest: d,
            }));
        }
        let sender = st.sender;
        let res = assemblies.on_frame(sender, &st.frame, st.payload.clone(), st.guarantee, &mut |a| match a {
            Assembled::Message { payload, guarantee, reassembled } => {
                if reassembled {
                    stats.fragmented_reassembled += 1;
                }
                events.push_back(TotemEvent::Deliver { sender, guarantee, payload });
            }
            Assembled::Orphan => stats.fragments_discarded += 1,
        });
        if res.is_err() {
            stats.dropped_malformed += 1;
        }
    }

    // ---- failure detection -------------------------------------------------

    pub(super) fn on_token_loss(&mut self, now: Instant) {
        match self.state {
            State::Operational => {
                self.stats.token_losses_operational += 1;
                self.gather_enter(now);
            }
            State::Commit => {
                self.stats.token_losses_recovery += 1;
                self.gather_enter(now);
            }
            State::Recovery => {
                self.stats.token_losses_recovery += 1;
                self.abort_recovery();
                self.gather_enter(now);
            }
            State::Gather => self.on_consensus_timeout(now),
        }
    }
}

#[allow(dead_code)]
fn _assert_arc(_: Arc<[u8]>) {}

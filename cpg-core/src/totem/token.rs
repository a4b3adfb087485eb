//! The ORF token visit (`docs/spec/totem.md` §3.2–§3.9): flow control, retransmission
//! requests, sending, aru, failed-to-receive, token hold; multicast receipt
//! and in-order (AGREED / SAFE) delivery; garbage collection.

use alloc::sync::Arc;

use super::pg::{piece_parts, Assembled, FramePlan, OwnItem, ZC_HEADROOM};
use super::sets;
use super::timer::Timer;
use super::window::{seq_le, seq_lt, seq_min, Insert, Stored, Window};
use super::{State, Stats, Totem, TotemEvent, TraceDeliver};
use crate::frame::{FrameBuf, FrameRef, Payload};
use crate::limits::{RECV_WINDOW, RTR_MAX};
use crate::time::Instant;
use crate::types::{Guarantee, NodeId, RingId};
use crate::wire::pack::PackHeader;
use crate::wire::{self, McastRepr, Packet, RtrEntry, TokenRepr, MCAST_HEADER_LEN};

fn add_sat(base: u32, plus: u32, minus: u32) -> u32 {
    (i64::from(base) + i64::from(plus) - i64::from(minus)).clamp(0, i64::from(u32::MAX)) as u32
}

impl<F: FrameBuf> Totem<F> {
    // ---- multicast receipt ------------------------------------------------

    pub(super) fn on_mcast(&mut self, now: Instant, ring_id: RingId, seq: u32, stored: Stored<F>) {
        self.assert_invariants();
        if ring_id != self.my_ring_id {
            let sender = stored.sender;
            Self::release_stored(&mut self.releases, stored);
            self.stats.dropped_stale += 1;
            self.on_foreign(now, sender, ring_id);
            return;
        }
        let window = match self.state {
            State::Recovery => &mut self.recovery,
            State::Operational | State::Gather if self.regular.ring_id == ring_id => {
                &mut self.regular
            }
            _ => {
                Self::release_stored(&mut self.releases, stored);
                self.stats.dropped_stale += 1;
                return;
            }
        };
        let keep = stored.clone();
        match window.insert(seq, keep) {
            Insert::Stored => drop(stored),
            refused => {
                if refused == Insert::OverBudget {
                    self.stats.dropped_window_bytes += 1;
                }
                Self::release_stored(&mut self.releases, stored);
                return;
            }
        }
        if self.state == State::Operational {
            self.deliver_ready();
        }
    }

    /// A multicast or merge-detect of another ring (§4.5).
    pub(super) fn on_foreign(&mut self, now: Instant, sender: NodeId, ring: RingId) {
        self.assert_invariants();
        assert!(
            ring != self.my_ring_id,
            "totem: ring {ring} taken for a foreign one"
        );
        match self.state {
            State::Operational => {
                if ring.seq < self.my_ring_id.seq && sets::contains(&self.memb, sender) {
                    return; // a late frame of an older ring of a current member
                }
                self.deaf.expire(now, self.deaf_hold());
                let futile = self.deaf.ring_deaf_to(&self.memb, sender)
                    || self.deaf.cannot_hear(sender, self.me)
                    || self.deaf.cannot_hear(ring.rep, self.me);
                if futile {
                    self.stats.merges_suppressed += 1;
                    return; // no ring can hold both sides (deaf.rs)
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
        self.assert_invariants();
        if self.token_discard || self.state == State::Commit || self.state == State::Gather {
            self.stats.dropped_stale += 1;
            return;
        }
        if t.ring_id != self.my_ring_id
            || t.target != self.me
            || !seq_lt(self.my_token_seq, t.token_seq)
        {
            self.stats.dropped_stale += 1;
            return;
        }
        if !self.token_plausible(&t) {
            // The sender still holds the true token and re-sends it when
            // its retransmit timer fires.
            self.stats.dropped_implausible += 1;
            return;
        }
        // The token passes around the ring it names; this node is in it
        // (OPERATIONAL: the installed ring, RECOVERY: the one being built).
        assert!(
            sets::contains(self.memb_for_token(), self.me),
            "totem: token of ring {} in {:?} but node {} not in {:?}",
            t.ring_id,
            self.state,
            self.me,
            self.memb_for_token().as_slice()
        );
        self.stats.token_visits += 1;
        let operational = self.state == State::Operational;
        let step = self.rotation_max();
        if operational {
            self.regular.reach_token(t.seq, step);
        } else {
            self.recovery.reach_token(t.seq, step);
        }
        let quiet_rotation = operational && t.seq == self.my_last_seq;
        self.distrust_fcc(&mut t, quiet_rotation);
        if operational {
            if self.flow_stalled(now, &t) {
                return;
            }
            self.idle_bookkeeping(now, &t);
            let upto = seq_min(
                seq_min(t.aru, self.my_last_aru),
                self.regular.high_delivered,
            );
            let releases = &mut self.releases;
            self.regular
                .release_upto(upto, |st| Self::release_stored(releases, st));
        }
        self.my_safe_seq = seq_min(t.aru, self.my_last_aru);
        let last_aru = self.my_last_aru;
        self.my_last_aru = t.aru;

        let mut budget = self.fcc_calculate(&t);
        let sent_rtr = self.serve_rtr(&mut t, &mut budget);
        self.add_my_rtr(&mut t);
        let released = if operational {
            self.regular.released()
        } else {
            self.recovery.released()
        };
        let limit = released
            .wrapping_add(RECV_WINDOW)
            .wrapping_sub(budget)
            .wrapping_sub(self.cfg.window_size);
        if seq_lt(limit, t.seq) {
            budget = 0;
        }
        let sent_new = self.send_new(&mut t, budget);
        let sent = sent_rtr + sent_new;
        t.fcc = add_sat(t.fcc, sent, self.my_trc);
        self.my_trc = sent;
        t.backlog = add_sat(t.backlog, self.my_cbl, self.my_pbl);
        self.my_pbl = self.my_cbl;

        let my_aru = if operational {
            self.regular.aru
        } else {
            self.recovery.aru
        };
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
        let successor = self.successor(self.memb_for_token());
        t.target = successor;
        self.send_token(now, successor, &Packet::Token(t), hold);
        if hold {
            self.stats.token_holds += 1;
            self.timers
                .arm(Timer::Hold, now + self.cfg.hold_effective());
        }
        if self.state == State::Operational {
            self.deliver_ready();
        }
        self.timers
            .arm(Timer::TokenLoss, now + self.cfg.token_effective());
        self.update_flow_control();
    }

    /// Whether a token's fields could have come from an honest ring, so a
    /// frame corrupted in a way the UDP checksum missed is dropped instead
    /// of believed: an `aru` above `seq` or an `aru_addr` outside the ring
    /// (nobody would ever correct that aru: SAFE delivery and garbage
    /// collection stop for good), a `seq` below a frame I hold (its next
    /// frames would reuse taken seqs), or one that went backwards or jumped
    /// further than the whole ring may send in one rotation since my last
    /// visit (every node would wait for frames nobody sent).
    fn token_plausible(&self, t: &TokenRepr) -> bool {
        let ring = self.memb_for_token();
        if !seq_le(t.aru, t.seq) || (t.aru_addr != 0 && !sets::contains(ring, t.aru_addr)) {
            return false;
        }
        // Every frame I hold was sent under a token at least at its seq.
        let window = if self.state == State::Recovery {
            &self.recovery
        } else {
            &self.regular
        };
        if !seq_le(window.high_seq, t.seq) {
            return false;
        }
        if self.state == State::Operational && self.my_token_seq != u32::MAX {
            let rotation = self.rotation_max();
            if !seq_le(self.my_last_seq, t.seq)
                || !seq_le(t.seq, self.my_last_seq.wrapping_add(rotation))
            {
                return false;
            }
        }
        true
    }

    /// Most frames the ring the token travels may send between two visits
    /// of it to this node: `window_size + max_messages × ring size`.
    fn rotation_max(&self) -> u32 {
        let n = self.memb_for_token().len() as u32;
        self.cfg
            .window_size
            .saturating_add(self.cfg.max_messages.saturating_mul(n))
    }

    /// Bound what a received token can make this node believe about flow
    /// control. `fcc` is the ring's frames of the last rotation, a running
    /// sum each node corrects by its own share; a corrupted value would
    /// never drain and, at `window_size` or more, silence every node for
    /// good. Honest tokens never carry more than `window_size` (each visit
    /// sends at most `window_size − fcc`); and after a rotation in which
    /// nobody sent a new frame, a token still at `window_size` can only be
    /// wrong (retransmissions alone are not worth a wedged ring), so it
    /// starts again from zero.
    fn distrust_fcc(&mut self, t: &mut TokenRepr, quiet_rotation: bool) {
        let w = self.cfg.window_size;
        if t.fcc > w {
            self.stats.token_fcc_clamped += 1;
            t.fcc = w;
        }
        if quiet_rotation && t.fcc == w {
            self.stats.token_fcc_clamped += 1;
            t.fcc = 0;
        }
        // The backlog only shapes shares; keep the sum it feeds finite.
        let backlog_max = self
            .cfg
            .send_queue_frames
            .saturating_mul(self.cfg.nodes.len())
            .min(u32::MAX as usize) as u32;
        t.backlog = t.backlog.min(backlog_max);
    }

    /// The last line against a wedged ring (issue 8): the token keeps
    /// rotating, frames wait (queued here, or ordered but not yet held by
    /// every member), and the ring's aru has not moved for a token timeout.
    /// That is a failure like a lost token. If the aru is held back by this
    /// node, it failed to receive (Totem's `fail_recv_const` rule, bounded
    /// in time instead of visits): it leaves the ring so the others go on.
    /// If nothing is missing and still nothing is sent, flow control is
    /// wedged: GATHER, and the new ring starts from a fresh token. Returns
    /// whether it fired.
    fn flow_stalled(&mut self, now: Instant, t: &TokenRepr) -> bool {
        let waiting = t.seq != t.aru || t.backlog > 0 || !self.send_queue.is_empty();
        let since = match self.stall {
            Some((aru, since)) if waiting && aru == t.aru => since,
            _ => {
                self.stall = waiting.then_some((t.aru, now));
                return false;
            }
        };
        if now.0.saturating_sub(since.0) < self.cfg.token_effective().0 {
            return false;
        }
        if t.seq != t.aru && t.aru_addr != self.me {
            return false; // the node holding the aru back acts, not me
        }
        self.stall = None;
        self.stats.flow_stalls += 1;
        if t.seq != t.aru {
            self.stats.failed_to_recv += 1;
            self.failed_to_recv = true;
            sets::insert(&mut self.fail_set, self.me);
        }
        self.gather_enter(now);
        true
    }

    /// The ring the token travels: the installed ring in OPERATIONAL, the
    /// one being built in RECOVERY.
    fn memb_for_token(&self) -> &crate::wire::NodeList {
        if self.state == State::Recovery {
            &self.new_memb
        } else {
            &self.memb
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
            // Alone on the ring, no other member can have anything to send
            // or ask for: an idle visit only costs a loop through the
            // transport, and leaves the token where a sender's thread
            // cannot carry it (handles/solo.rs in cpg-std). So it holds
            // as soon as its last message is safe (the aru equals the seq
            // on this visit and the one before, §3.8): SAFE deliveries and
            // releases do not wait for the hold timer.
            let all_safe = seq_le(t.seq, seq_min(t.aru, self.my_last_aru));
            let quiet = (self.alone() && all_safe)
                || self.my_seq_unchanged > self.cfg.seqno_unchanged_const;
            self.token_held = idle && quiet && t.rtr.is_empty();
        } else if self.my_seq_unchanged >= self.cfg.seqno_unchanged_const {
            self.token_held = true;
        }
    }

    /// §3.3: frames this visit may send.
    fn fcc_calculate(&mut self, t: &TokenRepr) -> u32 {
        let mut allowed = self
            .cfg
            .max_messages
            .min(self.cfg.window_size.saturating_sub(t.fcc));
        let cap = self.frame_payload_cap();
        self.my_cbl = match self.state {
            State::Recovery => self.retrans_queue.len() as u32,
            _ if self.waiting_trans_ack => self.sync_queue.frames_estimate(cap) as u32,
            _ => self.send_queue.frames_estimate(cap) as u32,
        };
        let total = add_sat(t.backlog, self.my_cbl, self.my_pbl);
        if total > 0 {
            let share = (u64::from(self.cfg.window_size) * u64::from(self.my_pbl)
                / u64::from(total)) as u32;
            if share > 0 {
                allowed = allowed.min(share);
            }
        }
        allowed
    }

    /// §3.4 (1): re-multicast requested frames I hold.
    ///
    /// [we] A frame I re-sent within the last few visits and that is asked
    /// for again is left in the list for the next holder: my copies are
    /// evidently not reaching the requester (a one-way failure from me to
    /// it), while another member's may. Totem lets the first holder on the
    /// token's path serve every request, so with node 1's packets to node 3
    /// lost and 3 passing the token to 1, node 1 served and dropped every
    /// request of 3 and the ring lived only until 3 failed to receive,
    /// forever re-forming. A lone holder still serves every other request.
    fn serve_rtr(&mut self, t: &mut TokenRepr, budget: &mut u32) -> u32 {
        let mut sent = 0;
        let mut keep = heapless::Vec::<RtrEntry, RTR_MAX>::new();
        let entries = core::mem::take(&mut t.rtr);
        self.rtr_visit = self.rtr_visit.wrapping_add(1);
        let recent = self.cfg.miss_count_const.saturating_add(2);
        let visit = self.rtr_visit;
        self.rtr_served
            .retain(|&(_, v)| visit.wrapping_sub(v) <= recent);
        for e in entries {
            if e.ring_id != self.my_ring_id {
                continue;
            }
            if let Some(i) = self.rtr_served.iter().position(|&(seq, _)| seq == e.seq) {
                self.rtr_served.swap_remove(i);
                let _ = keep.push(e);
                continue;
            }
            let window = if self.state == State::Recovery {
                &self.recovery
            } else {
                &self.regular
            };
            if *budget > 0 {
                if let Some(st) = window.get(e.seq) {
                    if self.rtr_served.is_full() {
                        self.rtr_served.swap_remove(0);
                    }
                    let _ = self.rtr_served.push((e.seq, visit));
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
        let window = if self.state == State::Recovery {
            &mut self.recovery
        } else {
            &mut self.regular
        };
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
            let Some((frame, payload, guarantee, encapsulated, own)) =
                self.next_frame(t.seq.wrapping_add(1), cap)
            else {
                break;
            };
            t.seq = t.seq.wrapping_add(1);
            let seq = t.seq;
            let stored = Stored {
                frame: frame.clone(),
                sender: self.me,
                guarantee,
                encapsulated,
                payload,
                own,
            };
            let window = if self.state == State::Recovery {
                &mut self.recovery
            } else {
                &mut self.regular
            };
            window.insert_owed(seq, stored);
            self.multicast(frame);
            sent += 1;
        }
        sent
    }

    /// Build the frame that will carry `seq`: a recovery copy in RECOVERY,
    /// else the next queued messages (packed by copy, or zero copy).
    #[allow(clippy::type_complexity)]
    fn next_frame(
        &mut self,
        seq: u32,
        cap: usize,
    ) -> Option<(
        FrameRef<F>,
        core::ops::Range<usize>,
        Guarantee,
        bool,
        Option<Arc<[OwnItem<F>]>>,
    )> {
        let ring_id = self.my_ring_id;
        if self.state == State::Recovery {
            let inner = self.retrans_queue.pop_front()?;
            self.scratch.clear();
            self.scratch.extend_from_slice(&inner.to_vec());
            let g = match wire::parse_frame(&self.scratch, self.cfg.cluster_id) {
                Ok(wire::Frame {
                    packet: Packet::Mcast(m),
                    ..
                }) => m.guarantee,
                _ => Guarantee::Agreed,
            };
            let repr = McastRepr {
                ring_id,
                seq,
                guarantee: g,
                encapsulated: true,
                payload: &self.scratch,
            };
            let frame = self.emit(&Packet::Mcast(repr));
            let len = frame.len();
            return Some((FrameRef::Own(frame), MCAST_HEADER_LEN..len, g, true, None));
        }
        let threshold = self.cfg.zc_copy_threshold;
        let queue = if self.waiting_trans_ack {
            &mut self.sync_queue
        } else {
            &mut self.send_queue
        };
        let plan = queue.take_frame(cap, &mut self.frag_counter, threshold)?;
        let (me, cluster) = (self.me, self.cfg.cluster_id);
        match plan {
            FramePlan::Packed {
                header,
                guarantee,
                pieces,
                own,
                pad,
            } => {
                let items: alloc::vec::Vec<&[u8]> = pieces
                    .iter()
                    .map(|(src, r)| {
                        src.contiguous()
                            .and_then(|b| b.get(r.clone()))
                            .unwrap_or(&[])
                    })
                    .collect();
                let len = wire::pack::packed_len(items.iter().map(|i| i.len())) + pad;
                self.scratch.clear();
                self.scratch.resize(len, 0);
                wire::pack::emit_packed(header, &items, pad, &mut self.scratch).ok()?;
                let repr = McastRepr {
                    ring_id,
                    seq,
                    guarantee,
                    encapsulated: false,
                    payload: &self.scratch,
                };
                let frame = self.emit(&Packet::Mcast(repr));
                let flen = frame.len();
                Some((
                    FrameRef::Own(frame),
                    MCAST_HEADER_LEN..flen,
                    guarantee,
                    false,
                    Some(Arc::from(own)),
                ))
            }
            FramePlan::InPlace {
                mut buf,
                msg,
                guarantee,
            } => {
                let own = OwnItem {
                    src: FrameRef::Rx(buf.clone()),
                    msg: msg.clone(),
                    complete: true,
                    guarantee,
                };
                let start = msg.start - ZC_HEADROOM;
                let pack_at = msg.start - (ZC_HEADROOM - MCAST_HEADER_LEN);
                let repr = McastRepr {
                    ring_id,
                    seq,
                    guarantee,
                    encapsulated: false,
                    payload: &[],
                };
                // `own` holds a clone only after the write below; take_frame
                // checked that we hold the only handle.
                drop(own);
                let bytes = buf.unique_mut()?;
                wire::pack::emit_single_item_head(
                    PackHeader::default(),
                    msg.len(),
                    &mut bytes[pack_at..msg.start],
                )
                .ok()?;
                wire::emit_mcast_head(
                    me,
                    cluster,
                    &repr,
                    msg.end - pack_at,
                    &mut bytes[start..pack_at],
                )
                .ok()?;
                let own = OwnItem {
                    src: FrameRef::Rx(buf.clone()),
                    msg: msg.clone(),
                    complete: true,
                    guarantee,
                };
                let frame = FrameRef::Slot {
                    buf,
                    range: start..msg.end,
                };
                let flen = msg.end - start;
                Some((
                    frame,
                    MCAST_HEADER_LEN..flen,
                    guarantee,
                    false,
                    Some(Arc::from([own])),
                ))
            }
            FramePlan::Piece { header, piece, own } => {
                let guarantee = own.guarantee;
                // The piece's bytes in engine memory (a CPG header kept
                // outside its buffer) follow the frame headers; the rest
                // is read from the buffer.
                let (prefix, buf, range) = piece_parts(&own.src, piece.clone())?;
                let mut head: Arc<[u8]> =
                    core::iter::repeat_n(0u8, ZC_HEADROOM + prefix.len()).collect();
                let bytes = Arc::get_mut(&mut head)?;
                let repr = McastRepr {
                    ring_id,
                    seq,
                    guarantee,
                    encapsulated: false,
                    payload: &[],
                };
                let payload_len = ZC_HEADROOM - MCAST_HEADER_LEN + piece.len();
                wire::emit_mcast_head(me, cluster, &repr, payload_len, bytes).ok()?;
                wire::pack::emit_single_item_head(
                    header,
                    piece.len(),
                    &mut bytes[MCAST_HEADER_LEN..],
                )
                .ok()?;
                bytes[ZC_HEADROOM..].copy_from_slice(prefix);
                let flen = ZC_HEADROOM + piece.len();
                let frame = FrameRef::Gather {
                    head,
                    buf: buf.clone(),
                    range,
                };
                Some((
                    frame,
                    MCAST_HEADER_LEN..flen,
                    guarantee,
                    false,
                    Some(Arc::from([own])),
                ))
            }
        }
    }

    // ---- delivery ----------------------------------------------------------

    /// AGREED: deliver the contiguous prefix; SAFE frames wait until stable.
    pub(super) fn deliver_ready(&mut self) {
        assert!(
            self.state == State::Operational,
            "totem: AGREED/SAFE delivery in {:?}",
            self.state
        );
        loop {
            let next = self.regular.high_delivered.wrapping_add(1);
            if !seq_le(next, self.regular.high_seq) {
                break;
            }
            let Some(st) = self.regular.get(next) else {
                break;
            };
            if st.guarantee.is_safe() && !seq_le(next, self.my_safe_seq) {
                break;
            }
            self.deliver_seq(next, false);
        }
    }

    /// Deliver the frame at `seq` of the regular window (it is held).
    pub(super) fn deliver_seq(&mut self, seq: u32, transitional: bool) {
        // Total order: each seq at most once, ascending.
        assert!(
            seq_lt(self.regular.high_delivered, seq),
            "totem: delivery of seq {seq} after seq {}",
            self.regular.high_delivered
        );
        let Some(st) = self.regular.get(seq).cloned() else {
            return;
        };
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
        stats: &mut Stats,
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
            let d = st.frame.digest(st.payload.clone());
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
        if let Some(own) = &st.own {
            // Our own frame: deliver whole messages straight from where they
            // were queued (zero copy for zcb buffers, no reassembly).
            for item in own.iter().filter(|i| i.complete) {
                let payload = Payload {
                    src: item.src.clone(),
                    range: item.msg.clone(),
                };
                events.push_back(TotemEvent::Deliver {
                    sender,
                    guarantee: item.guarantee,
                    payload,
                });
            }
            return;
        }
        let res = assemblies.on_frame(
            sender,
            &st.frame,
            st.payload.clone(),
            st.guarantee,
            &mut |a| match a {
                Assembled::Message {
                    payload,
                    guarantee,
                    reassembled,
                } => {
                    if reassembled {
                        stats.fragmented_reassembled += 1;
                    }
                    events.push_back(TotemEvent::Deliver {
                        sender,
                        guarantee,
                        payload,
                    });
                }
                Assembled::Orphan => stats.fragments_discarded += 1,
            },
        );
        if res.is_err() {
            stats.dropped_malformed += 1;
        }
    }

    // ---- failure detection -------------------------------------------------

    pub(super) fn on_token_loss(&mut self, now: Instant) {
        self.assert_invariants();
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

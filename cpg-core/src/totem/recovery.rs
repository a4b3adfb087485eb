//! RECOVERY and installation (`docs/spec/totem.md` §5.5–§5.7): old-ring messages are
//! re-sent inside the new ring until every transitional member holds the
//! same set, then each node delivers them (old regular configuration, then
//! transitional), and installs the new regular configuration.

use alloc::collections::VecDeque;

use super::sets;
use super::timer::Timer;
use super::window::{seq_le, seq_lt, seq_max, seq_min, Stored, Window};
use super::{ConfigChange, State, Totem};
use crate::frame::FrameBuf;
use crate::time::Instant;
use crate::wire::{self, CommitRepr, Packet, TokenRepr};

impl<F: FrameBuf> Totem<F> {
    pub(super) fn recovery_enter(&mut self, now: Instant, mut c: CommitRepr) {
        assert!(
            self.state == State::Commit && c.ring_id == self.my_ring_id,
            "totem: RECOVERY of ring {} entered from {:?} in ring {}",
            c.ring_id,
            self.state,
            self.my_ring_id
        );
        self.token_discard = false;
        let ring = self.my_ring_id;
        let fresh = self.new_window(ring, self.seq_base);
        let old = core::mem::replace(&mut self.recovery, fresh);
        self.drop_window(old);
        self.retrans_queue.clear();

        // Forward the commit token for its second rotation.
        let successor = self.successor(&c.addr);
        c.token_seq = c.token_seq.wrapping_add(1);
        self.send_token(now, successor, &Packet::Commit(c.clone()), false);
        self.my_token_seq = u32::MAX;

        let old_ring = self.my_old_ring_id;
        let mut trans = crate::wire::NodeList::new();
        let mut any_missing = false;
        let mut low = self.old_ring.high_seq_received;
        let mut high_delivered = self.regular.high_delivered;
        for (i, &n) in c.addr.iter().enumerate() {
            let e = c.entries[i];
            if sets::contains(&self.memb, n) && e.old_ring_id == old_ring {
                sets::insert(&mut trans, n);
                any_missing |= !e.received_flg;
                low = seq_min(low, e.aru);
                high_delivered = seq_max(high_delivered, e.high_delivered);
            }
        }
        self.trans_memb = trans.clone();
        self.deliver_memb = trans;
        self.old_high_delivered_max = high_delivered;
        if any_missing {
            let mut queue = VecDeque::new();
            for (seq, st) in self.regular.held_above(low) {
                if seq_le(seq, self.old_ring.high_seq_received) {
                    queue.push_back(st.frame.clone());
                }
            }
            self.retrans_queue = queue;
        }
        self.commit_token = Some(c);
        self.my_install_seq = self.seq_base;
        self.my_aru_count = 0;
        self.my_seq_unchanged = 0;
        self.my_retrans_flg_count = 0;
        self.my_set_retrans_flg = false;
        self.my_rotation_counter = 0;
        self.my_last_aru = self.seq_base;
        self.my_safe_seq = self.seq_base;
        self.state = State::Recovery;
        self.timers
            .arm(Timer::TokenLoss, now + self.cfg.token_effective());
    }

    /// Token loss or a member falling back to GATHER during RECOVERY: the
    /// regular window was only read, so the next attempt starts from the
    /// same old-ring state.
    pub(super) fn abort_recovery(&mut self) {
        assert!(
            self.state == State::Recovery,
            "totem: RECOVERY aborted in {:?}",
            self.state
        );
        let ring = self.my_ring_id;
        let fresh = self.new_window(ring, self.seq_base);
        let old = core::mem::replace(&mut self.recovery, fresh);
        self.drop_window(old);
        self.retrans_queue.clear();
    }

    fn drop_window(&mut self, mut w: Window<F>) {
        let releases = &mut self.releases;
        w.drain(|st| Self::release_stored(releases, st));
    }

    /// The commit token came back to its creator in RECOVERY: start the ring.
    pub(super) fn originate_orf_token(&mut self, now: Instant) {
        assert!(
            self.state == State::Recovery,
            "totem: ORF token of ring {} originated in {:?}",
            self.my_ring_id,
            self.state
        );
        // The flag is ours to clear once our copies are sent.
        self.my_set_retrans_flg = !self.retrans_queue.is_empty();
        let t = TokenRepr {
            ring_id: self.my_ring_id,
            token_seq: 0,
            seq: self.seq_base,
            aru: self.seq_base.wrapping_sub(1),
            aru_addr: self.me,
            fcc: 0,
            backlog: 0,
            retrans_flg: !self.retrans_queue.is_empty(),
            target: self.me,
            rtr: heapless::Vec::new(),
        };
        self.on_orf_token(now, t);
    }

    /// §5.5: recovery progress at each token visit, possibly installing.
    pub(super) fn recovery_progress(&mut self, now: Instant, t: &mut TokenRepr) {
        assert!(
            self.state == State::Recovery,
            "totem: recovery progress in {:?}",
            self.state
        );
        if !self.retrans_queue.is_empty() {
            if !t.retrans_flg {
                t.retrans_flg = true;
                self.my_set_retrans_flg = true;
            }
        } else if t.retrans_flg && self.my_set_retrans_flg {
            t.retrans_flg = false;
            self.my_set_retrans_flg = false;
        }
        self.my_retrans_flg_count = if t.retrans_flg {
            0
        } else {
            self.my_retrans_flg_count + 1
        };
        if self.my_retrans_flg_count == 2 {
            self.my_install_seq = t.seq;
        }
        if self.my_retrans_flg_count >= 2
            && !self.my_received_flg
            && seq_le(self.my_install_seq, self.recovery.aru)
        {
            self.my_received_flg = true;
            self.deliver_memb = self.trans_memb.clone();
        }
        if self.my_retrans_flg_count >= 3 && seq_le(self.my_install_seq, t.aru) {
            self.my_rotation_counter += 1;
        } else {
            self.my_rotation_counter = 0;
        }
        if self.my_rotation_counter == 2 {
            self.my_retrans_flg_count = 0;
            self.my_rotation_counter = 0;
            self.install(now);
        }
    }

    /// §5.6, in Corosync's order, with the SAFE rule of §5.7.
    fn install(&mut self, now: Instant) {
        let _ = now;
        assert!(
            self.state == State::Recovery && self.old_ring.saved && self.commit_token.is_some(),
            "totem: install in {:?} (old ring saved {}, commit token {})",
            self.state,
            self.old_ring.saved,
            self.commit_token.is_some()
        );
        let install_seq = self.my_install_seq;
        let old_ring = self.my_old_ring_id;
        // 1. Unwrap recovered copies of my old ring into the regular window.
        let mut unwrapped: alloc::vec::Vec<(u32, Stored<F>)> = alloc::vec::Vec::new();
        for (seq, st) in self.recovery.held_above(self.seq_base) {
            if !seq_le(seq, install_seq) || !st.encapsulated {
                continue;
            }
            let Some(inner_bytes) = st
                .frame
                .contiguous()
                .and_then(|b| b.get(st.payload.clone()))
            else {
                continue;
            };
            if let Ok(wire::Frame {
                header,
                packet: Packet::Mcast(m),
            }) = wire::parse_frame(inner_bytes, self.cfg.cluster_id)
            {
                if m.ring_id != old_ring || m.encapsulated {
                    continue;
                }
                let end = st.payload.end;
                let start = end - m.payload.len();
                unwrapped.push((
                    m.seq,
                    Stored {
                        frame: st.frame.clone(),
                        sender: header.sender,
                        guarantee: m.guarantee,
                        encapsulated: false,
                        payload: start..end,
                        own: None,
                    },
                ));
            }
        }
        for (seq, st) in unwrapped {
            if self.regular.insert_owed(seq, st).stored() {
                self.stats.recovered_messages += 1;
            }
        }

        // 2. Old-ring messages in the old regular configuration: contiguous,
        //    and SAFE ones only up to H.
        let h = self.old_high_delivered_max;
        loop {
            let next = self.regular.high_delivered.wrapping_add(1);
            if !seq_le(next, self.regular.high_seq) {
                break;
            }
            let Some(st) = self.regular.get(next) else {
                break;
            };
            if st.guarantee.is_safe() && seq_lt(h, next) {
                break;
            }
            self.deliver_seq(next, false);
        }

        // 3–4. Transitional configuration.
        let left = sets::minus(&self.memb, &self.trans_memb);
        let joined = sets::minus(&self.new_memb, &self.trans_memb);
        let merge = !self.trans_memb.is_empty() && !joined.is_empty();
        self.memb = self.new_memb.clone();
        let ring_id = self.my_ring_id;
        self.push_config(ConfigChange::Transitional {
            ring_id,
            members: self.trans_memb.clone(),
            left,
        });

        // 5. Normal sends wait for the upper layer's sync.
        self.waiting_trans_ack = true;

        // 6. Remaining old-ring messages of transitional senders, skipping gaps.
        let mut seq = self.regular.high_delivered.wrapping_add(1);
        while seq_le(seq, self.regular.high_seq) {
            if let Some(st) = self.regular.get(seq) {
                if sets::contains(&self.deliver_memb, st.sender) {
                    self.deliver_seq(seq, true);
                }
            }
            seq = seq.wrapping_add(1);
        }

        // 7. A message is whole within one configuration or not at all.
        let dropped = self.assemblies.clear();
        self.stats.fragments_discarded += dropped as u64;
        if self.send_queue.restart_partial() {
            self.stats.fragmented_resent += 1;
        }
        if self.sync_queue.restart_partial() {
            self.stats.fragmented_resent += 1;
        }

        // 8. Regular configuration.
        self.push_config(ConfigChange::Regular {
            ring_id,
            members: self.new_memb.clone(),
            joined,
        });

        // 9. The recovery window becomes the regular window.
        let fresh = self.new_window(ring_id, self.seq_base);
        let new_window = core::mem::replace(&mut self.recovery, fresh);
        let old_window = core::mem::replace(&mut self.regular, new_window);
        self.drop_window(old_window);
        self.regular.high_delivered = install_seq;
        {
            let releases = &mut self.releases;
            self.regular
                .release_upto(install_seq, |st| Self::release_stored(releases, st));
        }
        self.my_last_aru = install_seq;
        self.my_safe_seq = install_seq;
        self.my_last_seq = install_seq;

        // 10.
        self.proc_set = self.new_memb.clone();
        self.fail_set.clear();
        self.deaf.installed(&self.new_memb);
        self.rtr_served.clear();
        self.old_ring.saved = false;
        self.my_received_flg = true;
        self.my_old_ring_id = ring_id;
        self.commit_token = None;
        self.state = State::Operational;
        self.stats.ring_changes += 1;
        if merge {
            self.stats.merges += 1;
        }
    }
}

//! Membership: GATHER (JOIN exchange until consensus), the commit token and
//! COMMIT (`docs/spec/totem.md` §4–§5.4).

use super::sets;
use super::timer::Timer;
use super::{State, Totem};
use crate::frame::{Dest, FrameBuf};
use crate::limits::RING_SEQ_MAX;
use crate::time::Instant;
use crate::types::{NodeId, RingId};
use crate::wire::{CommitEntry, CommitRepr, JoinRepr, NodeList, Packet};

impl<F: FrameBuf> Totem<F> {
    /// §5.1: (re-)enter GATHER and announce our view.
    pub(super) fn gather_enter(&mut self, now: Instant) {
        self.token_discard = true;
        self.originated_orf_token = false;
        sets::insert(&mut self.proc_set, self.me);
        self.state = State::Gather;
        self.send_join(false);
        self.timers.cancel_all();
        self.timers.arm(Timer::Join, now + self.cfg.join);
        let round = self.consensus_round();
        self.timers.arm(Timer::Consensus, now + round);
        self.token_held = false;
        self.consensus.clear();
        sets::insert(&mut self.consensus, self.me);
        // Our own JOIN counts at once (Corosync receives its own multicast).
        self.check_consensus(now);
    }

    /// How long a report of a node not hearing another stands without
    /// being renewed: long enough that a lasting one-way failure costs the
    /// healthy side one re-formation per period, short enough to bound how
    /// long a heal whose evidence was missed waits for its merge.
    pub(super) fn deaf_hold(&self) -> crate::time::Duration {
        crate::time::Duration(8 * (self.cfg.token_effective().0 + self.cfg.consensus_effective().0))
    }

    /// How long this GATHER round may last: `consensus` plus a jitter in
    /// `[0, consensus / 2)`.
    ///
    /// [we] Corosync restarts every node's consensus timer whenever a JOIN
    /// with a different view arrives (it re-enters GATHER), which keeps the
    /// rounds of a cluster roughly in phase. We re-enter only when our own
    /// view changes (the JOIN-storm deviation in `memb_join_process`), so
    /// after a heal the groups' timers run on their own schedules, and with
    /// a fixed round length they can lock into a rotation: one group times
    /// out and fails the others just while another group, having timed out
    /// a moment earlier, is failing it back, committing or recovering (and
    /// ignoring JOINs). Each group then re-forms alone and re-merges at the
    /// same relative phase, forever (simulator seeds 2396, 3889, 7009 with
    /// 9 nodes in 2-3 rotating sub-rings; 7482 converged only after 59.9 s).
    /// A per-round jitter breaks the lock. It is derived from the engine's
    /// own inputs (node id, ring seq, GATHER entries so far), so runs stay
    /// deterministic; the bound on a round stays within 1.5 × consensus.
    fn consensus_round(&mut self) -> crate::time::Duration {
        let base = self.cfg.consensus_effective();
        self.gather_entries = self.gather_entries.wrapping_add(1);
        // splitmix64 finaliser over the three inputs.
        let mut z =
            (u64::from(self.me) << 32) ^ self.my_ring_id.seq ^ self.gather_entries.rotate_left(48);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = base.0 / 2;
        crate::time::Duration(base.0 + if span == 0 { 0 } else { z % span })
    }

    pub(super) fn send_join(&mut self, leave: bool) {
        let (proc_list, fail_list) = if leave {
            let proc_list = sets::minus(&self.proc_set, &[self.me]);
            let mut fail = self.fail_set.clone();
            sets::insert(&mut fail, self.me);
            (proc_list, fail)
        } else {
            (self.proc_set.clone(), self.fail_set.clone())
        };
        let join = JoinRepr {
            ring_seq: self.my_ring_id.seq,
            leave,
            proc_list,
            fail_list,
        };
        self.send_control(Dest::AllOthers, &Packet::Join(join));
    }

    fn agreed(&self) -> bool {
        sets::minus(&self.proc_set, &self.fail_set)
            .iter()
            .all(|&n| sets::contains(&self.consensus, n))
    }

    fn check_consensus(&mut self, now: Instant) -> bool {
        if !self.agreed() {
            return false;
        }
        if self.failed_to_recv {
            self.proc_set = sets::from_slice(&[self.me]);
            self.fail_set.clear();
            self.failed_to_recv = false;
            self.commit_create(now);
            return true;
        }
        let candidates = sets::minus(&self.proc_set, &self.fail_set);
        if candidates.first() == Some(&self.me) {
            self.commit_create(now);
            return true;
        }
        false
    }

    /// §5.2: state pre-filters, then `memb_join_process`.
    pub(super) fn on_join(&mut self, now: Instant, sender: NodeId, j: JoinRepr) {
        self.assert_invariants();
        let known = |l: &[NodeId]| l.iter().all(|n| self.cfg.nodes.contains(n));
        if !known(&j.proc_list)
            || !known(&j.fail_list)
            || !j.proc_list.contains(&sender) && !j.leave
        {
            self.stats.dropped_implausible += 1;
            return; // corrupted: an honest JOIN names only nodes of the node list, its sender among them
        }
        self.adopt_join_ring_seq(j.ring_seq);
        if sender == self.me {
            return;
        }
        // A verdict made before my last installed ring is stale (see Gather below).
        if !j.leave && j.ring_seq >= self.my_old_ring_id.seq {
            let settle = self.cfg.consensus_effective();
            self.deaf.expire(now, self.deaf_hold());
            self.deaf.observe_join(
                now,
                sender,
                &j.proc_list,
                &j.fail_list,
                &self.fail_set,
                settle,
            );
        }
        match self.state {
            State::Operational => {
                if sets::contains(&j.fail_list, self.me) {
                    return; // O1
                }
                if sets::contains(&self.memb, sender) && j.ring_seq < self.my_ring_id.seq {
                    self.stats.dropped_stale += 1;
                    return; // O2
                }
                if self.deaf.ring_deaf_to(&self.memb, sender) {
                    self.stats.merges_suppressed += 1;
                    return; // a member of my ring cannot hear the sender (deaf.rs)
                }
                self.memb_join_process(now, sender, &j);
                if self.state == State::Operational {
                    self.gather_enter(now);
                }
            }
            State::Gather => {
                // [we] A verdict that I failed, made before my current ring
                // existed, is stale: acting on it (failing the sender in
                // return and forming a ring without it) while its fresher
                // JOINs say the opposite makes two nodes that hear each other
                // alternate between singleton rings forever (simulator seed
                // 960). A sender that really cannot hear me is still dropped
                // by the consensus timeout.
                if sets::contains(&j.fail_list, self.me) && j.ring_seq < self.my_ring_id.seq {
                    self.stats.dropped_stale += 1;
                    return;
                }
                self.memb_join_process(now, sender, &j)
            }
            State::Commit | State::Recovery => {
                // A member of the ring being built that failed me since my
                // last ring will never pass its token on: leave at once
                // instead of waiting for the token loss (a one-way failure).
                let failed_me =
                    sets::contains(&j.fail_list, self.me) && j.ring_seq >= self.my_old_ring_id.seq;
                if sets::contains(&self.new_memb, sender)
                    && (j.ring_seq >= self.my_ring_id.seq || failed_me)
                {
                    let ring = self.my_ring_id;
                    if self.state == State::Recovery {
                        self.abort_recovery();
                    }
                    self.memb_join_process(now, sender, &j);
                    if matches!(self.state, State::Commit | State::Recovery)
                        && self.my_ring_id == ring
                    {
                        self.gather_enter(now);
                    }
                }
            }
        }
    }

    fn memb_join_process(&mut self, now: Instant, sender: NodeId, j: &JoinRepr) {
        let jproc = sets::from_slice(&j.proc_list);
        let jfail = sets::from_slice(&j.fail_list);
        if jproc == self.proc_set && jfail == self.fail_set {
            // A node known not to hear me agrees on paper only: a ring with
            // it would die with its first token; the round's timeout fails it.
            if !j.leave && !self.deaf.cannot_hear(sender, self.me) {
                sets::insert(&mut self.consensus, sender);
            }
            if self.state == State::Gather {
                self.check_consensus(now);
            }
            return;
        }
        if sets::subset(&jproc, &self.proc_set) && sets::subset(&jfail, &self.fail_set) {
            return; // the sender is behind and will catch up
        }
        if sets::contains(&self.fail_set, sender) {
            return;
        }
        let mut changed = sets::union_into(&mut self.proc_set, &jproc);
        if sets::contains(&jfail, self.me) {
            changed |= sets::insert(&mut self.fail_set, sender); // it cannot hear me: symmetric
        } else if sets::contains(&self.memb, sender) {
            changed |= sets::union_into(&mut self.fail_set, &jfail); // trust only my old ring's reports
        }
        // [we] Re-broadcast only when my view changed: Corosync re-enters
        // GATHER (and multicasts a JOIN) on every such JOIN, so two nodes
        // whose views differ in a way neither adopts answer each other's
        // JOINs forever, a storm that grows with every node. The join timer
        // still resends my view every `join` ms.
        if changed || self.state != State::Gather {
            self.gather_enter(now);
        }
    }

    /// §5.3.
    pub(super) fn on_consensus_timeout(&mut self, now: Instant) {
        self.assert_invariants();
        assert!(
            self.state == State::Gather,
            "totem: consensus timeout in {:?}",
            self.state
        );
        self.stats.consensus_timeouts += 1;
        if self.agreed() {
            self.consensus.clear();
            sets::insert(&mut self.consensus, self.me);
            self.timers
                .arm(Timer::TokenLoss, now + self.cfg.token_effective());
            return;
        }
        let silent = sets::minus(&self.proc_set, &self.consensus);
        sets::union_into(&mut self.fail_set, &silent);
        self.gather_enter(now);
    }

    /// §5.4: the lowest agreed node creates the commit token.
    fn commit_create(&mut self, now: Instant) {
        // The base is at most RING_SEQ_MAX (frames beyond are dropped, and
        // adopt_join_ring_seq caps it); at the very end of the space no
        // ring can follow, so none is created (the round times out).
        let Some(seq) = self
            .token_ring_id_seq
            .checked_add(4)
            .filter(|&s| s <= RING_SEQ_MAX)
        else {
            return;
        };
        let addr = sets::minus(&self.proc_set, &self.fail_set);
        let mut entries = heapless::Vec::new();
        for _ in 0..addr.len() {
            let _ = entries.push(CommitEntry::default());
        }
        let token = CommitRepr {
            ring_id: RingId { rep: self.me, seq },
            token_seq: 0,
            memb_index: 0,
            addr,
            entries,
        };
        self.commit_enter(now, token);
    }

    fn commit_enter(&mut self, now: Instant, mut token: CommitRepr) {
        // Only GATHER commits: consensus is checked there, and a commit
        // token is taken there only.
        assert!(
            self.state == State::Gather,
            "totem: COMMIT entered from {:?}",
            self.state
        );
        if !self.old_ring.saved {
            self.old_ring.saved = true;
            self.old_ring.aru = self.regular.aru;
            self.old_ring.high_seq_received = self.regular.high_seq;
        }
        self.new_memb = token.addr.clone();
        let Some(pos) = token.addr.iter().position(|&n| n == self.me) else {
            return;
        };
        // [we] The agreed membership replaces the sets now, not only at
        // install. Corosync keeps `fail` until install; a node whose
        // installation is aborted (a member fell back to GATHER) then
        // carries a fail set from an old round into every later round, its
        // ring mates adopt it (failure reports from the old ring are
        // trusted), the other side answers symmetrically, and two healed
        // partitions keep failing each other forever (simulator seed 1091).
        // Consensus still decides every ring; this only forgets stale votes.
        self.proc_set = token.addr.clone();
        self.fail_set.clear();
        self.my_received_flg = self.old_ring.aru == self.old_ring.high_seq_received;
        token.entries[pos] = CommitEntry {
            old_ring_id: self.my_old_ring_id,
            aru: self.old_ring.aru,
            high_delivered: self.regular.high_delivered,
            received_flg: self.my_received_flg,
        };
        let old = self.my_old_ring_id;
        let high = token.entries[..=pos]
            .iter()
            .filter(|e| e.old_ring_id == old)
            .map(|e| e.aru)
            .fold(self.old_ring.aru, super::window::seq_max);
        for e in token.entries[..=pos].iter_mut() {
            if e.old_ring_id == old && super::window::seq_lt(e.aru, high) {
                e.received_flg = false;
            }
        }
        token.memb_index = (pos + 1) as u16;
        let successor = token.addr[(pos + 1) % token.addr.len()];
        self.timers.cancel_all();
        self.my_ring_id = token.ring_id;
        self.persists.push_back(token.ring_id.seq);
        self.token_ring_id_seq = token.ring_id.seq;
        self.state = State::Commit;
        self.my_trc = 0;
        self.my_pbl = 0;
        self.my_cbl = 0;
        token.token_seq = token.token_seq.wrapping_add(1);
        self.send_token(now, successor, &Packet::Commit(token), false);
        self.timers
            .arm(Timer::TokenLoss, now + self.cfg.token_effective());
    }

    /// Whether `c` is the commit token this node forwarded in
    /// [`Self::commit_enter`]: the members it committed to, and its own entry
    /// as it wrote it (later members only clear `received_flg` of entries).
    /// [we] Corosync checks the ring id only; a token corrupted on the way
    /// (or forged) then decides this node's transitional configuration: with
    /// another old ring id in its own entry the node left itself out of it
    /// (found by the engine fuzz target, `cpg-sim/tests/forged.rs`).
    fn is_own_commit(&self, c: &CommitRepr) -> bool {
        let Some(pos) = c.addr.iter().position(|&n| n == self.me) else {
            return false;
        };
        let mine =
            |e: &CommitEntry| e.old_ring_id == self.my_old_ring_id && e.aru == self.old_ring.aru;
        c.addr == self.new_memb && c.entries.get(pos).is_some_and(mine)
    }

    /// §5.4–§5.5: commit token receipt by state.
    pub(super) fn on_commit_token(&mut self, now: Instant, c: CommitRepr) {
        self.assert_invariants();
        let n = c.addr.len();
        match self.state {
            State::Gather => {
                let expect: NodeList = sets::minus(&self.proc_set, &self.fail_set);
                let idx = c.memb_index as usize;
                if c.ring_id.seq > self.my_ring_id.seq
                    && sets::from_slice(&c.addr) == expect
                    && c.addr.as_slice() == expect.as_slice()
                    && idx < n
                    && c.addr[idx] == self.me
                {
                    self.commit_enter(now, c);
                } else {
                    self.stats.dropped_stale += 1;
                }
            }
            State::Commit => {
                if c.ring_id == self.my_ring_id
                    && c.memb_index as usize == n
                    && self.is_own_commit(&c)
                {
                    self.recovery_enter(now, c);
                } else {
                    self.stats.dropped_stale += 1;
                }
            }
            State::Recovery => {
                if c.ring_id == self.my_ring_id
                    && c.memb_index as usize == n
                    && c.addr.first() == Some(&self.me)
                    && !self.originated_orf_token
                {
                    self.originated_orf_token = true;
                    self.originate_orf_token(now);
                } else {
                    self.stats.dropped_stale += 1;
                }
            }
            State::Operational => self.stats.dropped_stale += 1,
        }
    }
}

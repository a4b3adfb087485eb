//! A receive window ("sort queue"): stored frames by sequence number, the
//! contiguous-receipt point (`aru`), the highest seq seen, and per-gap miss
//! counters for retransmit requests. Seqs use u32 serial arithmetic.
//!
//! [we] Memory bound (`docs/spec/totem.md` §3.7). The window also knows the
//! highest seq the ring has *reached* as far as this node can tell (the seq
//! of the last token it accepted, or of a frame it sent itself). A frame at
//! or below it was sent under a token this node saw: its slot is owed a
//! frame, and it is always taken, so every gap fills (retransmission
//! requests name only such seqs). A frame above it is *ahead*: an honest
//! ring puts at most one rotation of frames there (those the holders after
//! this node sent since the token left it), a forger as many as the seq
//! window allows, 16,384 full frames. Ahead frames are taken only while
//! their bytes stay within a budget (`Config::recv_window_bytes`) and they
//! number at most two rotations (each held received frame pins a driver
//! receive buffer, whatever its length); a refused one comes back by
//! retransmission once a token shows the ring got there.

use alloc::collections::VecDeque;
use core::ops::Range;

use alloc::sync::Arc;

use super::pg::OwnItem;
use crate::frame::{FrameBuf, FrameRef};
use crate::limits::RECV_WINDOW;
use crate::types::{Guarantee, NodeId, RingId};

/// `a < b` in u32 serial-number arithmetic.
pub(crate) fn seq_lt(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}
/// `a <= b` in serial arithmetic.
pub(crate) fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}
/// Serial max.
pub(crate) fn seq_max(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        b
    } else {
        a
    }
}
/// Serial min.
pub(crate) fn seq_min(a: u32, b: u32) -> u32 {
    if seq_lt(a, b) {
        a
    } else {
        b
    }
}

/// One stored multicast frame.
#[derive(Debug, Clone)]
pub(crate) struct Stored<F> {
    pub frame: FrameRef<F>,
    /// Originating node (frame header sender).
    pub sender: NodeId,
    pub guarantee: Guarantee,
    pub encapsulated: bool,
    /// The MCAST payload's byte range inside `frame` (its segments concatenated).
    pub payload: Range<usize>,
    /// For this node's own frames: the messages it carries, for self-delivery.
    pub own: Option<Arc<[OwnItem<F>]>>,
}

#[derive(Debug, Clone)]
enum Slot<F> {
    Missing(u8),
    Held(Stored<F>),
}

/// What [`Window::insert`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored.
    Stored,
    /// Outside the window, or the seq is held already.
    Refused,
    /// Ahead of the seq the ring has reached and over the byte or frame budget.
    OverBudget,
}

impl Insert {
    pub(crate) fn stored(self) -> bool {
        self == Insert::Stored
    }
}

/// Frames of one ring's sequence space.
#[derive(Debug, Clone)]
pub(crate) struct Window<F> {
    /// The ring whose seq space this is.
    pub ring_id: RingId,
    /// Everything `<= released` has been freed (the GC point).
    released: u32,
    slots: VecDeque<Slot<F>>,
    /// All seqs `<= aru` are held (or were, and are released).
    pub aru: u32,
    /// Highest seq held.
    pub high_seq: u32,
    /// Highest seq delivered.
    pub high_delivered: u32,
    /// Highest seq the ring has reached as far as this node knows (a token
    /// it accepted, a frame it sent); never below `released`.
    reached: u32,
    /// Bytes of the held frames.
    bytes: usize,
    /// Bytes of the held frames above `reached`.
    ahead_bytes: usize,
    /// Budget for `ahead_bytes`.
    ahead_max: usize,
    /// Held frames above `reached`.
    ahead_frames: u32,
    /// Budget for `ahead_frames`.
    ahead_frames_max: u32,
}

impl<F: FrameBuf> Window<F> {
    /// An empty window whose first seq will be `start + 1`, taking at most
    /// `ahead_max` bytes and `ahead_frames_max` frames above the seq the
    /// ring has reached.
    pub(crate) fn new(
        ring_id: RingId,
        start: u32,
        ahead_max: usize,
        ahead_frames_max: u32,
    ) -> Self {
        Window {
            ring_id,
            released: start,
            slots: VecDeque::new(),
            aru: start,
            high_seq: start,
            high_delivered: start,
            reached: start,
            bytes: 0,
            ahead_bytes: 0,
            ahead_max,
            ahead_frames: 0,
            ahead_frames_max,
        }
    }

    pub(crate) fn released(&self) -> u32 {
        self.released
    }

    /// Bytes of the frames held, and of those above the seq the ring has
    /// reached.
    pub(crate) fn bytes(&self) -> (usize, usize) {
        (self.bytes, self.ahead_bytes)
    }

    /// The ring has reached `seq`: a token showed it, this node assigned it,
    /// or a recovered frame was sent at it. Frames up to it stop counting as
    /// ahead.
    pub(crate) fn reach(&mut self, seq: u32) {
        if !seq_lt(self.reached, seq) {
            return;
        }
        // Nothing beyond the window can be held: stop at its end, so the
        // reached seq stays within RECV_WINDOW of `released`.
        let end = self.released.wrapping_add(RECV_WINDOW);
        let seq = if seq_lt(end, seq) { end } else { seq };
        // Only held slots count; past the last slot nothing is held.
        let from = self.reached.wrapping_sub(self.released) as usize;
        let to = (seq.wrapping_sub(self.released) as usize).min(self.slots.len());
        for slot in self.slots.range(from.min(to)..to) {
            if let Slot::Held(st) = slot {
                self.ahead_bytes -= st.frame.len();
                self.ahead_frames -= 1;
            }
        }
        self.reached = seq;
    }

    /// A token with seq `seq` was accepted: the ring reached it, but trust
    /// at most `step` seqs beyond what it had reached before (an honest ring
    /// sends at most one rotation between two visits of its token: a forged
    /// token must not open the whole window to ahead frames).
    pub(crate) fn reach_token(&mut self, seq: u32, step: u32) {
        let most = self.reached.wrapping_add(step);
        self.reach(if seq_lt(most, seq) { most } else { seq });
    }

    /// Panics unless `released <= aru <= high_seq <= released + RECV_WINDOW`
    /// (as offsets from `released`, so serial wrap does not matter) and the
    /// slot of `high_seq` exists. Every method keeps this whatever seqs the
    /// network names: `insert` takes only seqs inside the window, `aru`
    /// moves only over held slots, `release_upto` drags `aru` and
    /// `high_seq` along. (`high_delivered` is left out: installation sets it
    /// from a token's seq.)
    pub(crate) fn assert_invariants(&self, name: &str) {
        let off = |seq: u32| seq.wrapping_sub(self.released);
        assert!(
            off(self.aru) <= off(self.high_seq) && off(self.high_seq) <= RECV_WINDOW,
            "totem: {name} window out of order: released {} aru {} high_seq {}",
            self.released,
            self.aru,
            self.high_seq
        );
        assert!(
            off(self.high_seq) as usize <= self.slots.len()
                && self.slots.len() <= RECV_WINDOW as usize,
            "totem: {name} window has {} slots for high_seq {} above released {}",
            self.slots.len(),
            self.high_seq,
            self.released
        );
        assert!(
            self.ahead_bytes <= self.bytes
                && self.ahead_bytes <= self.ahead_max
                && self.ahead_frames <= self.ahead_frames_max
                && off(self.reached) <= RECV_WINDOW,
            "totem: {name} window holds {} B, {} B in {} frames of them above the reached seq {} (released {}, budget {} B, {} frames)",
            self.bytes,
            self.ahead_bytes,
            self.ahead_frames,
            self.reached,
            self.released,
            self.ahead_max,
            self.ahead_frames_max
        );
    }

    fn index(&self, seq: u32) -> Option<usize> {
        let off = seq.wrapping_sub(self.released);
        if off == 0 || off > RECV_WINDOW {
            None
        } else {
            Some(off as usize - 1)
        }
    }

    /// Store a frame, unless it is outside the window, already held, or
    /// ahead of the reached seq with the ahead budget spent.
    pub(crate) fn insert(&mut self, seq: u32, stored: Stored<F>) -> Insert {
        let Some(i) = self.index(seq) else {
            return Insert::Refused;
        };
        if matches!(self.slots.get(i), Some(Slot::Held(_))) {
            return Insert::Refused;
        }
        let len = stored.frame.len();
        let ahead = seq_lt(self.reached, seq);
        if ahead {
            match self.ahead_bytes.checked_add(len) {
                Some(b) if b <= self.ahead_max && self.ahead_frames < self.ahead_frames_max => {
                    self.ahead_bytes = b;
                    self.ahead_frames += 1;
                }
                _ => return Insert::OverBudget,
            }
        }
        while self.slots.len() <= i {
            self.slots.push_back(Slot::Missing(0));
        }
        self.bytes += len;
        self.slots[i] = Slot::Held(stored);
        self.high_seq = seq_max(self.high_seq, seq);
        self.advance_aru();
        Insert::Stored
    }

    /// Store a frame the ring is known to have sent at `seq` (this node's
    /// own, a recovered one): the ring reached `seq`, so no budget applies.
    pub(crate) fn insert_owed(&mut self, seq: u32, stored: Stored<F>) -> Insert {
        if self.index(seq).is_none() {
            return Insert::Refused;
        }
        self.reach(seq);
        self.insert(seq, stored)
    }

    fn advance_aru(&mut self) {
        loop {
            let next = self.aru.wrapping_add(1);
            match self.get(next) {
                Some(_) => self.aru = next,
                None => break,
            }
        }
    }

    /// The frame at `seq`, if held (released ones are gone).
    pub(crate) fn get(&self, seq: u32) -> Option<&Stored<F>> {
        let i = self.index(seq)?;
        match self.slots.get(i) {
            Some(Slot::Held(s)) => Some(s),
            _ => None,
        }
    }

    /// Held now, or held and already freed.
    pub(crate) fn holds(&self, seq: u32) -> bool {
        seq_le(seq, self.released) || self.get(seq).is_some()
    }

    /// Free every frame `<= upto`, calling `release` for each.
    pub(crate) fn release_upto(&mut self, upto: u32, mut release: impl FnMut(Stored<F>)) {
        while seq_lt(self.released, upto) {
            // Past the last slot nothing is held: jump. Counting one seq at
            // a time made the work grow with `upto - released`, up to 2^31
            // steps when `upto` came from a token (the install seq in
            // RECOVERY is the token's seq): seconds of CPU per forged or
            // corrupted token (found by the engine fuzz target).
            let Some(slot) = self.slots.pop_front() else {
                self.released = upto;
                break;
            };
            self.released = self.released.wrapping_add(1);
            if let Slot::Held(s) = slot {
                let len = s.frame.len();
                self.bytes -= len;
                if seq_lt(self.reached, self.released) {
                    self.ahead_bytes -= len;
                    self.ahead_frames -= 1;
                }
                release(s);
            }
        }
        if seq_lt(self.reached, self.released) {
            self.reached = self.released;
        }
        if seq_lt(self.aru, self.released) {
            self.aru = self.released;
            self.advance_aru();
        }
        if seq_lt(self.high_seq, self.released) {
            self.high_seq = self.released;
        }
        if seq_lt(self.high_delivered, self.released) {
            self.high_delivered = self.released;
        }
    }

    /// Free everything (the window is dropped or reset).
    pub(crate) fn drain(&mut self, mut release: impl FnMut(Stored<F>)) {
        for slot in self.slots.drain(..) {
            if let Slot::Held(s) = slot {
                release(s);
            }
        }
        self.bytes = 0;
        self.ahead_bytes = 0;
        self.ahead_frames = 0;
    }

    /// Bump the miss counter of each empty slot in `(aru, upto]`; return the
    /// seqs whose counter reached `threshold` (in order, at most `max`).
    pub(crate) fn missing(
        &mut self,
        upto: u32,
        threshold: u32,
        max: usize,
        out: &mut impl FnMut(u32) -> bool,
    ) {
        let mut seq = self.aru.wrapping_add(1);
        let mut found = 0usize;
        let mut scanned = 0u32;
        while seq_le(seq, upto) && found < max && scanned < RECV_WINDOW {
            scanned += 1;
            let Some(i) = self.index(seq) else { break };
            while self.slots.len() <= i {
                self.slots.push_back(Slot::Missing(0));
            }
            if let Slot::Missing(c) = &mut self.slots[i] {
                *c = c.saturating_add(1);
                if u32::from(*c) >= threshold {
                    found += 1;
                    if !out(seq) {
                        break;
                    }
                }
            }
            seq = seq.wrapping_add(1);
        }
    }

    /// Seqs held above `from`, in order.
    pub(crate) fn held_above(&self, from: u32) -> impl Iterator<Item = (u32, &Stored<F>)> + '_ {
        let base = self.released;
        self.slots.iter().enumerate().filter_map(move |(i, s)| {
            let seq = base.wrapping_add(i as u32 + 1);
            match s {
                Slot::Held(st) if seq_lt(from, seq) => Some((seq, st)),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> Stored<Arc<[u8]>> {
        Stored {
            frame: FrameRef::Own(Arc::from(&b"x"[..])),
            sender: 1,
            guarantee: Guarantee::Agreed,
            encapsulated: false,
            payload: 0..1,
            own: None,
        }
    }

    #[test]
    fn serial_compare_wraps() {
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_lt(0xFFFF_FE00, 5));
        assert!(!seq_lt(5, 0xFFFF_FE00));
        assert!(seq_le(7, 7));
    }

    #[test]
    fn aru_advances_over_contiguous_and_release() {
        let mut w: Window<Arc<[u8]>> =
            Window::new(RingId { rep: 1, seq: 4 }, 0, usize::MAX, u32::MAX);
        assert!(w.insert_owed(2, st()).stored());
        assert_eq!(w.aru, 0);
        assert!(w.insert_owed(1, st()).stored());
        assert_eq!(w.aru, 2);
        assert!(!w.insert_owed(1, st()).stored());
        assert_eq!(w.high_seq, 2);
        let mut n = 0;
        w.release_upto(1, |_| n += 1);
        assert_eq!(n, 1);
        assert!(w.holds(1));
        assert!(w.holds(2));
        assert!(!w.holds(3));
        assert!(!w.insert_owed(1, st()).stored());
    }

    #[test]
    fn window_near_wrap() {
        let start = 0xFFFF_FFF0u32;
        let mut w: Window<Arc<[u8]>> =
            Window::new(RingId { rep: 1, seq: 4 }, start, usize::MAX, u32::MAX);
        for i in 1..=40u32 {
            assert!(w.insert_owed(start.wrapping_add(i), st()).stored());
        }
        assert_eq!(w.aru, start.wrapping_add(40));
        w.release_upto(start.wrapping_add(20), |_| {});
        assert_eq!(w.released(), start.wrapping_add(20));
        assert_eq!(w.held_above(start).count(), 20);
    }

    #[test]
    fn release_far_ahead_jumps_over_what_is_not_held() {
        let mut w: Window<Arc<[u8]>> =
            Window::new(RingId { rep: 1, seq: 4 }, 0, usize::MAX, u32::MAX);
        for seq in [1, 2, 5] {
            assert!(w.insert_owed(seq, st()).stored());
        }
        // The farthest `upto` serial order allows: 2^31 - 1 seqs ahead.
        let upto = i32::MAX as u32;
        let mut n = 0;
        let started = std::time::Instant::now();
        w.release_upto(upto, |_| n += 1);
        // One step per seq took seconds here; one per slot takes microseconds.
        let took = started.elapsed();
        let bound = std::time::Duration::from_millis(200);
        assert!(took < bound, "release_upto took {took:?}");
        assert_eq!(n, 3);
        assert_eq!(w.released(), upto);
        assert_eq!((w.aru, w.high_seq, w.high_delivered), (upto, upto, upto));
        assert!(w.holds(upto) && !w.holds(upto.wrapping_add(1)));
        assert!(w.insert_owed(upto.wrapping_add(1), st()).stored());
        assert_eq!(w.aru, upto.wrapping_add(1));
    }

    fn sized(len: usize) -> Stored<Arc<[u8]>> {
        Stored {
            frame: FrameRef::Own(Arc::from(alloc::vec![0u8; len])),
            ..st()
        }
    }

    /// A forged flood of frames above the seq the ring reached is held to
    /// the budget; frames the ring reached, the gap above `aru` among them,
    /// are always taken, whatever the window holds.
    #[test]
    fn frames_ahead_of_the_ring_are_held_within_the_budget() {
        let mut w: Window<Arc<[u8]>> = Window::new(RingId { rep: 1, seq: 4 }, 0, 1000, 100);
        assert_eq!(w.insert(5, sized(400)), Insert::Stored);
        assert_eq!(w.insert(6, sized(400)), Insert::Stored);
        assert_eq!(w.insert(7, sized(400)), Insert::OverBudget);
        assert_eq!(
            w.insert(7, sized(200)),
            Insert::Stored,
            "what fits is taken"
        );
        assert_eq!(w.insert(9, sized(1)), Insert::OverBudget);
        assert_eq!(w.bytes(), (1000, 1000));
        assert_eq!(w.high_seq, 7, "a refused frame leaves no trace");
        w.assert_invariants("test");
        // A token shows the ring reached 4: the gap above aru fills.
        w.reach_token(4, 100);
        for seq in 1..=4 {
            assert_eq!(w.insert(seq, sized(400)), Insert::Stored);
        }
        assert_eq!(w.aru, 7);
        assert_eq!(w.bytes(), (2600, 1000));
        w.assert_invariants("test");
        // The next token reaches 8: nothing above it is held any more.
        w.reach_token(8, 100);
        assert_eq!(w.bytes(), (2600, 0));
        assert_eq!(w.insert(8, sized(5000)), Insert::Stored, "owed: no budget");
        assert_eq!(w.insert(9, sized(900)), Insert::Stored);
        // Releasing frees both counts.
        let mut n = 0;
        w.release_upto(9, |_| n += 1);
        assert_eq!((n, w.bytes()), (9, (0, 0)));
        w.assert_invariants("test");
        // Tiny frames are bounded by number: each pins a receive buffer.
        w.reach_token(20, 100);
        for seq in 21..=23 {
            assert_eq!(w.insert_owed(seq, sized(1)), Insert::Stored);
        }
        let mut w: Window<Arc<[u8]>> = Window::new(RingId { rep: 1, seq: 4 }, 0, 1000, 3);
        for seq in 1..=3 {
            assert_eq!(w.insert(seq, sized(1)), Insert::Stored);
        }
        assert_eq!(w.insert(4, sized(1)), Insert::OverBudget);
        w.reach(1);
        assert_eq!(w.insert(4, sized(1)), Insert::Stored);
        w.assert_invariants("test");
    }

    /// A token moves the reached seq at most one rotation (`step`) at a
    /// time, and never past the window's end: a forged token cannot open
    /// the whole window to frames ahead of the ring.
    #[test]
    fn a_token_moves_the_reached_seq_one_rotation_at_most() {
        let mut w: Window<Arc<[u8]>> = Window::new(RingId { rep: 1, seq: 4 }, 0, 100, 100);
        w.reach_token(1_000_000, 50);
        assert_eq!(w.insert(50, sized(500)), Insert::Stored);
        assert_eq!(w.insert(51, sized(500)), Insert::OverBudget);
        for _ in 0..1_000 {
            w.reach_token(u32::MAX / 2, 5_000);
        }
        w.assert_invariants("test");
        assert_eq!(w.insert(RECV_WINDOW, sized(500)), Insert::Stored);
        assert_eq!(w.insert(RECV_WINDOW + 1, sized(1)), Insert::Refused);
        // Own frames and recovered ones are owed: no budget.
        let mut w: Window<Arc<[u8]>> = Window::new(RingId { rep: 1, seq: 4 }, 0, 0, 0);
        assert_eq!(w.insert(3, sized(10)), Insert::OverBudget);
        assert_eq!(w.insert_owed(3, sized(10)), Insert::Stored);
        assert_eq!(w.bytes(), (10, 0));
        w.assert_invariants("test");
    }

    #[test]
    fn missing_counts_gaps() {
        let mut w: Window<Arc<[u8]>> =
            Window::new(RingId { rep: 1, seq: 4 }, 0, usize::MAX, u32::MAX);
        w.insert(3, st());
        let mut got = alloc::vec::Vec::new();
        for _ in 0..4 {
            w.missing(3, 5, 30, &mut |s| {
                got.push(s);
                true
            });
        }
        assert!(got.is_empty());
        w.missing(3, 5, 30, &mut |s| {
            got.push(s);
            true
        });
        assert_eq!(got, [1, 2]);
    }
}

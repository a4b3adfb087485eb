//! The Totem single-ring ordering and membership protocol as a sans-IO
//! state machine (`docs/spec/totem.md`, TOCS95, EVS94).
//!
//! What it owns: token passing with seq / aru / retransmit list, AGREED
//! delivery in seq order, SAFE delivery once every member holds a message
//! (the two-visit aru rule), flow control (window, max messages per visit,
//! backlog), packing and fragmentation ([`pg`]), and the membership
//! protocol (GATHER, COMMIT, RECOVERY, OPERATIONAL) that yields extended
//! virtual synchrony: old-ring messages are recovered, then a transitional
//! and a regular configuration are delivered in order with the messages.
//!
//! It must not read a clock, touch a socket or allocate without a bound:
//! every queue here is capped (send queue by `send_queue_frames`, receive
//! windows by `RECV_WINDOW` seqs and, for frames ahead of the ring, by
//! `recv_window_bytes`, sets by `NODES_MAX`).
//!
//! Submodules: [`token`] (the ORF token visit, sending, delivery),
//! [`membership`] (JOIN, consensus, commit token), [`deaf`] (one-way
//! failures remembered), [`recovery`]
//! (recovery and installation), [`window`] (receive windows), [`pg`]
//! (packing), [`timer`], [`sets`], [`event`] (what Totem hands up:
//! messages, [`ConfigChange`]s, [`TraceDeliver`]s), [`stats`] ([`Stats`]).
//! [`State`] and [`Options`] are defined here. Below Totem lies only
//! [`crate::frame`] (buffers and frames), the wire formats and the limits.
//!
//! # References
//! `docs/spec/totem.md`; corosync `exec/totemsrp.c`, `exec/totempg.c`.

mod deaf;
mod event;
mod membership;
pub(crate) mod pg;
mod recovery;
pub(crate) mod sets;
mod stats;
pub(crate) mod timer;
mod token;
pub(crate) mod window;

pub(crate) use event::TotemEvent;
pub use event::{ConfigChange, TraceDeliver};
pub use stats::Stats;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::frame::{Dest, FrameBuf, FrameRef, Transmit, ZcError};
use crate::limits::{Config, ConfigError, RING_SEQ_JUMP_MAX, RING_SEQ_MAX};
use crate::time::Instant;
use crate::types::{CsError, Guarantee, NodeId, RingId};
use crate::wire::{self, CommitRepr, NodeList, Packet, MCAST_HEADER_LEN};

use pg::{Assemblies, SendQueue};
use timer::{Timer, TimerTable};
use window::{Stored, Window};

/// `cfg.validate()`, and every control frame of its node list fits the
/// frame budget (a commit token grows with the ring and cannot be cut).
pub(crate) fn validate_config(cfg: &Config) -> Result<(), ConfigError> {
    cfg.validate()?;
    let need = wire::frame::largest_control_frame(cfg.nodes.len());
    if need > cfg.frame_max() {
        return Err(ConfigError::FrameTooSmall {
            need,
            have: cfg.frame_max(),
        });
    }
    Ok(())
}

/// Re-sent frames remembered by `serve_rtr` (a few visits' worth).
const RTR_SERVED_MAX: usize = 4 * crate::limits::RTR_MAX;

/// Totem membership state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Normal token rotation.
    Operational,
    /// Exchanging JOINs until consensus.
    Gather,
    /// Commit token circulating.
    Commit,
    /// Retransmitting old-ring messages before install.
    Recovery,
}

/// Options that are not protocol settings (the engine's `EngineOptions`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Report every Totem delivery as a [`TraceDeliver`] (simulator
    /// checkers; the engine hands them on as `Event::Trace`).
    pub trace: bool,
    /// First message seq of every ring minus one (0 in production). Tests
    /// set it near 2^32 to exercise serial-number wrap-around; every node of
    /// a cluster must use the same value.
    pub seq_base: u32,
}

/// Saved state of the last installed ring, kept from COMMIT entry until
/// install so an aborted attempt restarts from the same point.
#[derive(Debug, Clone, Copy, Default)]
struct OldRingState {
    saved: bool,
    aru: u32,
    high_seq_received: u32,
}

/// The saved token (ORF or commit) for retransmission.
#[derive(Debug, Clone)]
struct SavedToken {
    frame: Arc<[u8]>,
    dest: NodeId,
}

/// One node's Totem protocol state.
#[derive(Clone)]
pub(crate) struct Totem<F> {
    cfg: Config,
    me: NodeId,
    trace: bool,
    seq_base: u32,
    shut_down: bool,
    pub(crate) state: State,

    pub(crate) my_ring_id: RingId,
    my_old_ring_id: RingId,
    token_ring_id_seq: u64,

    pub(crate) memb: NodeList,
    proc_set: NodeList,
    fail_set: NodeList,
    new_memb: NodeList,
    trans_memb: NodeList,
    deliver_memb: NodeList,
    consensus: NodeList,
    /// Reports of nodes that cannot hear others (one-way failures).
    deaf: deaf::Deaf,
    /// GATHER entries so far: an input of the consensus-round jitter.
    gather_entries: u64,

    regular: Window<F>,
    recovery: Window<F>,
    old_ring: OldRingState,
    /// Highest high_delivered among same-old-ring transitional members (SAFE rule, §5.7).
    old_high_delivered_max: u32,
    commit_token: Option<CommitRepr>,
    retrans_queue: VecDeque<FrameRef<F>>,

    send_queue: SendQueue<F>,
    sync_queue: SendQueue<F>,
    frag_counter: u8,
    assemblies: Assemblies,
    waiting_trans_ack: bool,
    flow_control: bool,

    my_token_seq: u32,
    my_last_aru: u32,
    my_safe_seq: u32,
    my_aru_count: u32,
    my_seq_unchanged: u32,
    my_last_seq: u32,
    my_trc: u32,
    my_pbl: u32,
    my_cbl: u32,
    my_received_flg: bool,
    my_install_seq: u32,
    my_retrans_flg_count: u32,
    my_set_retrans_flg: bool,
    my_rotation_counter: u32,
    /// Frames I re-sent on request lately, with the visit (see `serve_rtr`).
    rtr_served: heapless::Vec<(u32, u32), RTR_SERVED_MAX>,
    /// Token visits counted for `rtr_served`.
    rtr_visit: u32,
    failed_to_recv: bool,
    /// The token's aru while frames wait, and when it was first seen (see `flow_stalled`).
    stall: Option<(u32, Instant)>,
    token_discard: bool,
    originated_orf_token: bool,
    token_held: bool,
    saved_token: Option<SavedToken>,

    timers: TimerTable,
    transmits: VecDeque<Transmit<F>>,
    pub(crate) events: VecDeque<TotemEvent<F>>,
    releases: VecDeque<F>,
    persists: VecDeque<u64>,
    scratch: Vec<u8>,
    pub(crate) stats: Stats,
}

impl<F: FrameBuf> Totem<F> {
    pub(crate) fn new(
        cfg: Config,
        options: Options,
        initial_ring_seq: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        validate_config(&cfg)?;
        if initial_ring_seq == 0 || initial_ring_seq > RING_SEQ_MAX {
            return Err(ConfigError::NoInitialRingSeq);
        }
        let me = cfg.node_id;
        let ring = RingId {
            rep: me,
            seq: initial_ring_seq,
        };
        let max_len = cfg.max_message_size + 1024;
        let ahead = (
            cfg.recv_window_bytes_effective(),
            cfg.recv_ahead_frames_max(),
        );
        let mut t = Totem {
            me,
            trace: options.trace,
            seq_base: options.seq_base,
            shut_down: false,
            state: State::Gather,
            my_ring_id: ring,
            my_old_ring_id: ring,
            token_ring_id_seq: initial_ring_seq,
            memb: NodeList::new(),
            proc_set: sets::from_slice(&[me]),
            fail_set: NodeList::new(),
            new_memb: NodeList::new(),
            trans_memb: NodeList::new(),
            deliver_memb: NodeList::new(),
            consensus: NodeList::new(),
            deaf: deaf::Deaf::default(),
            gather_entries: 0,
            regular: Window::new(ring, 0, ahead.0, ahead.1),
            recovery: Window::new(ring, 0, ahead.0, ahead.1),
            old_ring: OldRingState::default(),
            old_high_delivered_max: 0,
            commit_token: None,
            retrans_queue: VecDeque::new(),
            send_queue: SendQueue::default(),
            sync_queue: SendQueue::default(),
            frag_counter: 0,
            assemblies: Assemblies::new(max_len),
            waiting_trans_ack: false,
            flow_control: false,
            my_token_seq: u32::MAX,
            my_last_aru: 0,
            my_safe_seq: 0,
            my_aru_count: 0,
            my_seq_unchanged: 0,
            my_last_seq: 0,
            my_trc: 0,
            my_pbl: 0,
            my_cbl: 0,
            my_received_flg: true,
            my_install_seq: 0,
            my_retrans_flg_count: 0,
            my_set_retrans_flg: false,
            my_rotation_counter: 0,
            rtr_served: heapless::Vec::new(),
            rtr_visit: 0,
            failed_to_recv: false,
            stall: None,
            token_discard: true,
            originated_orf_token: false,
            token_held: false,
            saved_token: None,
            timers: TimerTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            releases: VecDeque::new(),
            persists: VecDeque::new(),
            scratch: Vec::new(),
            stats: Stats::default(),
            cfg,
        };
        t.gather_enter(now);
        t.assert_invariants();
        Ok(t)
    }

    // ---- invariants --------------------------------------------------------

    /// Panics unless the state holds together: what must be true between
    /// any two inputs, whatever the network sent (TigerBeetle's habit: cheap
    /// checks, on in release builds). A failure is a bug here, never bad
    /// input; malformed or hostile frames are dropped and counted before
    /// they can get near these.
    ///
    /// - both windows keep `released <= aru <= high_seq` within the
    ///   receive window ([`Window::assert_invariants`]);
    /// - the regular window is the last installed ring's, whose seq is at
    ///   most the ring entered since;
    /// - this node is always in its own process set;
    /// - tokens are discarded exactly in GATHER and COMMIT;
    /// - the saved old-ring state has `aru <= high_seq_received`;
    /// - OPERATIONAL: the installed ring is the one entered, a member of it,
    ///   no commit token or saved old-ring state left over;
    /// - COMMIT and RECOVERY: the old ring's state is saved, this node is a
    ///   member of the ring being built; in RECOVERY the recovery window
    ///   and the commit token are that ring's.
    pub(crate) fn assert_invariants(&self) {
        assert!(!self.shut_down, "totem: input handled after shutdown");
        self.regular.assert_invariants("regular");
        self.recovery.assert_invariants("recovery");
        assert!(
            self.regular.ring_id == self.my_old_ring_id,
            "totem: regular window of ring {} but last installed ring {}",
            self.regular.ring_id,
            self.my_old_ring_id
        );
        assert!(
            self.my_ring_id.seq <= self.token_ring_id_seq && self.token_ring_id_seq <= RING_SEQ_MAX,
            "totem: ring {} entered but highest known ring seq {} (max {RING_SEQ_MAX})",
            self.my_ring_id,
            self.token_ring_id_seq
        );
        assert!(
            self.my_old_ring_id.seq <= self.my_ring_id.seq,
            "totem: ring {} entered after installed ring {}",
            self.my_ring_id,
            self.my_old_ring_id
        );
        assert!(
            sets::contains(&self.proc_set, self.me),
            "totem: node {} not in its own process set {:?}",
            self.me,
            self.proc_set.as_slice()
        );
        assert!(
            self.token_discard == matches!(self.state, State::Gather | State::Commit),
            "totem: token_discard {} in {:?}",
            self.token_discard,
            self.state
        );
        if self.old_ring.saved {
            assert!(
                window::seq_le(self.old_ring.aru, self.old_ring.high_seq_received),
                "totem: saved old ring aru {} above its high_seq_received {}",
                self.old_ring.aru,
                self.old_ring.high_seq_received
            );
        }
        match self.state {
            State::Operational => {
                assert!(
                    self.my_ring_id == self.my_old_ring_id
                        && !self.old_ring.saved
                        && self.commit_token.is_none(),
                    "totem: OPERATIONAL in ring {} but installed {} (old ring saved {}, commit token {})",
                    self.my_ring_id,
                    self.my_old_ring_id,
                    self.old_ring.saved,
                    self.commit_token.is_some()
                );
                assert!(
                    sets::contains(&self.memb, self.me),
                    "totem: OPERATIONAL but node {} not in its ring {:?}",
                    self.me,
                    self.memb.as_slice()
                );
            }
            State::Gather => {}
            State::Commit | State::Recovery => {
                assert!(
                    self.old_ring.saved && sets::contains(&self.new_memb, self.me),
                    "totem: {:?} without the old ring saved ({}) or node {} not in the new ring {:?}",
                    self.state,
                    self.old_ring.saved,
                    self.me,
                    self.new_memb.as_slice()
                );
                if self.state == State::Recovery {
                    let token_ring = self.commit_token.as_ref().map(|c| c.ring_id);
                    assert!(
                        self.recovery.ring_id == self.my_ring_id
                            && token_ring == Some(self.my_ring_id),
                        "totem: RECOVERY of ring {} with a recovery window of {} and commit token of {:?}",
                        self.my_ring_id,
                        self.recovery.ring_id,
                        token_ring
                    );
                }
            }
        }
    }

    /// [we] Whether a received frame of `len` bytes is one a node of this
    /// cluster could send: no frame is longer than `frame_max`, and a
    /// multicast leaves room for the header its recovery copy adds (spec
    /// §6.1). A longer one, held and then re-sent in RECOVERY, would make a
    /// copy no path of this netmtu carries (over 65,507 B: none at all), so
    /// recovery could never complete (found by the forged-flood scenario,
    /// `cpg-sim/tests/recv_window.rs`). Every node of a cluster must use
    /// the same `netmtu` and `frame_overhead`.
    fn fits_frame_max(&self, packet: &Packet<'_>, len: usize) -> bool {
        let max = self.cfg.frame_max();
        match packet {
            Packet::Mcast(m) if !m.encapsulated => len + MCAST_HEADER_LEN <= max,
            _ => len <= max,
        }
    }

    // ---- ring seqs ---------------------------------------------------------

    /// [we] Whether `packet` names a ring seq no honest node could send
    /// (spec §1.2, "ring seq bounds"). Only a JOIN (its seq becomes the base
    /// of the next ring's seq) and a commit token (its new ring) can move
    /// this node's ring seq; tokens and multicasts must name its current
    /// ring, a merge detect only starts a round. Beyond [`RING_SEQ_MAX`] no
    /// ring could follow (the engine fuzz target found a JOIN near 2^64
    /// overflowing the next ring's seq); more than [`RING_SEQ_JUMP_MAX`]
    /// above the highest ring seq this node knows for a JOIN, half that for
    /// a commit token, is a jump no honest history makes (one forged JOIN
    /// at 2^64 − 5 once left a cluster unable to form a ring).
    fn ring_seq_out_of_reach(&self, packet: &Packet<'_>) -> bool {
        let known = self.token_ring_id_seq;
        let (seq, jump) = match packet {
            Packet::Join(j) => (j.ring_seq, RING_SEQ_JUMP_MAX),
            Packet::Commit(c) => (c.ring_id.seq, RING_SEQ_JUMP_MAX / 2),
            _ => return false,
        };
        seq > RING_SEQ_MAX || seq > known.saturating_add(jump)
    }

    /// [we] Raise the highest known ring seq (the base of the next ring this
    /// node creates) to a JOIN's `ring_seq`, but never more than a quarter
    /// of [`RING_SEQ_JUMP_MAX`] above the ring this node is in: a flood of
    /// forged JOINs moves it no further than one does, and a commit token
    /// built on it stays within what the other members accept (half the
    /// jump above what they know, which is at least their ring's seq).
    /// Corosync adopts every JOIN's seq as it is.
    fn adopt_join_ring_seq(&mut self, seq: u64) {
        let cap = self.my_ring_id.seq.saturating_add(RING_SEQ_JUMP_MAX / 4);
        let seq = seq.min(cap).min(RING_SEQ_MAX);
        if seq > self.token_ring_id_seq {
            self.token_ring_id_seq = seq;
        }
    }

    // ---- accessors -------------------------------------------------------

    pub(crate) fn node_id(&self) -> NodeId {
        self.me
    }
    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down
    }
    /// Payload bytes one frame can carry (packing header included), leaving
    /// room for the encapsulation header recovery adds: a recovery copy of
    /// a full frame still fits `frame_max`, so nothing is ever IP-fragmented.
    pub(crate) fn frame_payload_cap(&self) -> usize {
        self.cfg.frame_max() - 2 * MCAST_HEADER_LEN
    }
    /// Whether this node holds (or held and safely freed) message `seq` of
    /// `ring`, including as a recovery copy not yet unwrapped. Linear in the
    /// recovery window: for checkers, not the hot path.
    pub(crate) fn holds(&self, ring: RingId, seq: u32) -> bool {
        if self.regular.ring_id == ring && self.regular.holds(seq) {
            return true;
        }
        if self.state != State::Recovery {
            return false;
        }
        if self.recovery.ring_id == ring && self.recovery.holds(seq) {
            return true;
        }
        self.recovery.held_above(self.seq_base).any(|(_, st)| {
            st.encapsulated
                && st
                    .frame
                    .contiguous()
                    .and_then(|b| b.get(st.payload.clone()))
                    .and_then(|inner| wire::parse_frame(inner, self.cfg.cluster_id).ok())
                    .is_some_and(|f| matches!(f.packet, Packet::Mcast(m) if m.ring_id == ring && m.seq == seq))
        })
    }
    /// Bytes of the frames both receive windows hold, and of those above
    /// the seq the ring has reached as far as this node knows (bounded by
    /// `recv_window_bytes` per window).
    pub(crate) fn window_bytes(&self) -> (usize, usize) {
        let (a, b) = self.regular.bytes();
        let (c, d) = self.recovery.bytes();
        (a + c, b + d)
    }
    /// A fresh window for `ring` starting after `start`.
    fn new_window(&self, ring: RingId, start: u32) -> Window<F> {
        let (bytes, frames) = (
            self.cfg.recv_window_bytes_effective(),
            self.cfg.recv_ahead_frames_max(),
        );
        Window::new(ring, start, bytes, frames)
    }
    pub(crate) fn flow_control_enabled(&self) -> bool {
        self.flow_control
    }
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        self.timers.next()
    }
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit<F>> {
        self.transmits.pop_front()
    }
    pub(crate) fn peek_transmit(&self) -> Option<&Transmit<F>> {
        self.transmits.front()
    }
    pub(crate) fn poll_release(&mut self) -> Option<F> {
        self.releases.pop_front()
    }
    pub(crate) fn poll_persist(&mut self) -> Option<u64> {
        self.persists.pop_front()
    }

    /// A one-line dump of the protocol state, for simulator failure reports.
    pub(crate) fn debug_line(&self) -> alloc::string::String {
        alloc::format!(
            "{:?} ring {} old {} memb {:?} new {:?} trans {:?} proc {:?} fail {:?} cons {:?} | reg aru {} high {} deliv {} rel {} | rec aru {} high {} | retrans_q {} install {} flg_cnt {} rot {} recv_flg {} set_flg {} | tok_seq {} held {} discard {} q {} sync_q {} wait_ack {}",
            self.state,
            self.my_ring_id,
            self.my_old_ring_id,
            self.memb.as_slice(),
            self.new_memb.as_slice(),
            self.trans_memb.as_slice(),
            self.proc_set.as_slice(),
            self.fail_set.as_slice(),
            self.consensus.as_slice(),
            self.regular.aru,
            self.regular.high_seq,
            self.regular.high_delivered,
            self.regular.released(),
            self.recovery.aru,
            self.recovery.high_seq,
            self.retrans_queue.len(),
            self.my_install_seq,
            self.my_retrans_flg_count,
            self.my_rotation_counter,
            self.my_received_flg,
            self.my_set_retrans_flg,
            self.my_token_seq,
            self.token_held,
            self.token_discard,
            self.send_queue.frames_estimate(self.frame_payload_cap()),
            self.sync_queue.frames_estimate(self.frame_payload_cap()),
            self.waiting_trans_ack,
        )
    }

    // ---- inputs ----------------------------------------------------------

    pub(crate) fn handle_packet(&mut self, now: Instant, from: NodeId, frame: F) {
        let _ = from;
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.as_ref().len() as u64;
        if self.shut_down {
            self.releases.push_back(frame);
            return;
        }
        let parsed = match wire::parse_frame(frame.as_ref(), self.cfg.cluster_id) {
            Ok(p) => p,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                self.releases.push_back(frame);
                return;
            }
        };
        let sender = parsed.header.sender;
        if !self.cfg.nodes.contains(&sender) {
            self.stats.dropped_unknown_node += 1;
            self.releases.push_back(frame);
            return;
        }
        if !self.fits_frame_max(&parsed.packet, frame.as_ref().len()) {
            self.stats.dropped_implausible += 1;
            self.releases.push_back(frame);
            return;
        }
        if self.ring_seq_out_of_reach(&parsed.packet) {
            self.stats.dropped_ring_seq_jump += 1;
            self.releases.push_back(frame);
            return;
        }
        match parsed.packet {
            Packet::Mcast(m) => {
                let len = frame.as_ref().len();
                let payload = len - m.payload.len()..len;
                let (ring_id, seq, guarantee, encapsulated) =
                    (m.ring_id, m.seq, m.guarantee, m.encapsulated);
                let stored = Stored {
                    frame: FrameRef::Rx(frame),
                    sender,
                    guarantee,
                    encapsulated,
                    payload,
                    own: None,
                };
                self.on_mcast(now, ring_id, seq, stored);
            }
            Packet::Token(t) => {
                self.releases.push_back(frame);
                self.on_orf_token(now, t);
            }
            Packet::Join(j) => {
                self.releases.push_back(frame);
                self.on_join(now, sender, j);
            }
            Packet::Commit(c) => {
                self.releases.push_back(frame);
                self.on_commit_token(now, c);
            }
            Packet::MergeDetect(ring) => {
                self.releases.push_back(frame);
                if ring != self.my_ring_id {
                    self.on_foreign(now, sender, ring);
                }
            }
            Packet::TokenHoldCancel(ring) => {
                self.releases.push_back(frame);
                if ring == self.my_ring_id {
                    self.my_seq_unchanged = 0;
                    if self.is_rep() && self.token_held {
                        self.release_held_token(now);
                    }
                }
            }
        }
        self.assert_invariants();
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        while let Some(t) = self.timers.take_expired(now) {
            match t {
                Timer::TokenLoss => self.on_token_loss(now),
                Timer::TokenRetransmit => {
                    if let Some(s) = self.saved_token.clone() {
                        self.token_held = false;
                        self.timers.cancel(Timer::Hold);
                        self.send_to(s.dest, FrameRef::Own(s.frame));
                        self.timers
                            .arm(Timer::TokenRetransmit, now + self.cfg.token_retransmit());
                    }
                }
                Timer::Hold => {
                    if self.token_held && self.is_rep() {
                        self.release_held_token(now);
                    }
                }
                Timer::Join => {
                    if self.state == State::Gather {
                        self.send_join(false);
                        self.timers.arm(Timer::Join, now + self.cfg.join);
                    }
                }
                Timer::Consensus => {
                    if self.state == State::Gather {
                        self.on_consensus_timeout(now);
                    }
                }
                Timer::Merge => {
                    if self.state == State::Operational && self.is_rep() {
                        let ring = self.my_ring_id;
                        self.send_control(Dest::AllOthers, &Packet::MergeDetect(ring));
                    }
                }
            }
        }
        self.assert_invariants();
    }

    /// Queue a zero-copy message: `buf[msg]` is the CPG-encoded message; the
    /// bytes in front of `msg.start` are headroom the engine may write
    /// frame headers into while it holds the only handle.
    pub(crate) fn submit_zc(
        &mut self,
        now: Instant,
        buf: F,
        msg: core::ops::Range<usize>,
        guarantee: Guarantee,
    ) -> Result<(), ZcError<F>> {
        let in_buf = msg.end <= buf.as_ref().len();
        if let Err(error) = self.admit_zc(msg.len(), in_buf) {
            return Err(ZcError {
                error,
                buf: Some(buf),
            });
        }
        self.send_queue.push_zc(buf, msg, guarantee);
        self.update_flow_control();
        self.event_signal(now);
        Ok(())
    }

    /// Queue a message whose buffer is never written nor copied: `head`
    /// (its CPG header, built in engine memory) followed by `buf[payload]`
    /// (see `FrameBuf::headers_inside`). Its frames are all
    /// `FrameRef::Gather`s reading the payload from `buf`.
    pub(crate) fn submit_gather(
        &mut self,
        now: Instant,
        head: Arc<[u8]>,
        buf: F,
        payload: core::ops::Range<usize>,
        guarantee: Guarantee,
    ) -> Result<(), ZcError<F>> {
        let in_buf = payload.start <= payload.end && payload.end <= buf.as_ref().len();
        if let Err(error) = self.admit_zc(head.len() + payload.len(), in_buf) {
            return Err(ZcError {
                error,
                buf: Some(buf),
            });
        }
        self.send_queue.push_gather(head, buf, payload, guarantee);
        self.update_flow_control();
        self.event_signal(now);
        Ok(())
    }

    /// Whether the send queue takes a zero-copy message of `len` bytes
    /// (CPG header included) whose range lies in its buffer (`in_buf`).
    fn admit_zc(&mut self, len: usize, in_buf: bool) -> Result<(), CsError> {
        if self.shut_down {
            return Err(CsError::Library);
        }
        if len > self.cfg.max_message_size + 1024 || !in_buf {
            return Err(CsError::TooBig);
        }
        if self.send_queue.frames_estimate(self.frame_payload_cap()) >= self.cfg.send_queue_frames {
            self.stats.try_again += 1;
            self.update_flow_control();
            return Err(CsError::TryAgain);
        }
        Ok(())
    }

    /// Queue an application-level message (already CPG-encoded).
    pub(crate) fn submit(
        &mut self,
        now: Instant,
        data: Arc<[u8]>,
        guarantee: Guarantee,
        sync: bool,
    ) -> Result<(), CsError> {
        if self.shut_down {
            return Err(CsError::Library);
        }
        if data.len() > self.cfg.max_message_size + 1024 {
            return Err(CsError::TooBig);
        }
        if sync {
            self.sync_queue.push(data, guarantee);
        } else {
            if self.send_queue.frames_estimate(self.frame_payload_cap())
                >= self.cfg.send_queue_frames
            {
                self.stats.try_again += 1;
                self.update_flow_control();
                return Err(CsError::TryAgain);
            }
            self.send_queue.push(data, guarantee);
        }
        self.update_flow_control();
        self.event_signal(now);
        Ok(())
    }

    /// How many application messages of these (CPG-encoded) lengths the
    /// send queue takes now, in order: what `submit` one by one would
    /// accept before its first TRY_AGAIN; and their total length.
    pub(crate) fn accepts(&self, lens: impl Iterator<Item = usize>) -> (usize, usize) {
        if self.shut_down {
            return (0, 0);
        }
        self.send_queue
            .accepts(self.frame_payload_cap(), self.cfg.send_queue_frames, lens)
    }

    /// Queue application messages that share one allocation: `data[r]` for
    /// each `(guarantee, r)`, already CPG-encoded and admitted by
    /// [`Totem::accepts`]. `refused`: some after them were not (counted as
    /// one TRY_AGAIN).
    pub(crate) fn submit_shared(
        &mut self,
        now: Instant,
        data: &Arc<[u8]>,
        items: impl Iterator<Item = (Guarantee, core::ops::Range<usize>)>,
        refused: bool,
    ) {
        let mut any = false;
        for (guarantee, r) in items {
            self.send_queue.push_shared(data, r, guarantee);
            any = true;
        }
        if refused {
            self.stats.try_again += 1;
        }
        self.update_flow_control();
        if any {
            self.event_signal(now);
        }
    }

    /// A message was refused with TRY_AGAIN without reaching `submit`.
    pub(crate) fn note_refused(&mut self) {
        self.stats.try_again += 1;
        self.update_flow_control();
    }

    /// A new regular configuration: sync messages queued for an earlier
    /// one are stale.
    pub(crate) fn clear_sync_queue(&mut self) {
        self.sync_queue = SendQueue::default();
    }

    /// The layer above finished the sync of `ring`. A sync of an older
    /// ring can complete while its last messages are delivered at the next
    /// installation; that must not release the new ring's sync.
    pub(crate) fn trans_ack(&mut self, ring: RingId) {
        if ring == self.my_ring_id {
            self.waiting_trans_ack = false;
        }
    }

    /// Clean shutdown: multicast a LEAVE, then ignore everything.
    pub(crate) fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.send_join(true);
        self.shut_down = true;
        self.timers.cancel_all();
    }

    // ---- helpers shared by the submodules ---------------------------------

    fn is_rep(&self) -> bool {
        self.my_ring_id.rep == self.me
    }

    fn send_to(&mut self, dest: NodeId, frame: FrameRef<F>) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.transmits.push_back(Transmit {
            dest: Dest::Node(dest),
            frame,
        });
    }

    fn multicast(&mut self, frame: FrameRef<F>) {
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.transmits.push_back(Transmit {
            dest: Dest::AllOthers,
            frame,
        });
    }

    /// Emit a small control packet into a fresh buffer.
    fn emit(&self, packet: &Packet<'_>) -> Arc<[u8]> {
        let len = wire::frame::frame_len(packet);
        let mut buf = alloc::vec![0u8; len];
        let n = wire::emit_frame(self.me, self.cfg.cluster_id, packet, &mut buf).unwrap_or(0);
        buf.truncate(n);
        Arc::from(buf)
    }

    fn send_control(&mut self, dest: Dest, packet: &Packet<'_>) {
        let frame = self.emit(packet);
        match dest {
            Dest::AllOthers => self.multicast(FrameRef::Own(frame)),
            Dest::Node(n) => self.send_to(n, FrameRef::Own(frame)),
        }
    }

    /// The engine drops its reference to a stored frame: a driver buffer
    /// behind it goes back through `poll_release`.
    fn release_stored(releases: &mut VecDeque<F>, st: Stored<F>) {
        match st.frame {
            FrameRef::Own(_) => {}
            FrameRef::Rx(f) | FrameRef::Slot { buf: f, .. } | FrameRef::Gather { buf: f, .. } => {
                releases.push_back(f)
            }
        }
    }

    fn update_flow_control(&mut self) {
        let on =
            self.send_queue.frames_estimate(self.frame_payload_cap()) >= self.cfg.send_queue_frames;
        if on != self.flow_control {
            self.flow_control = on;
        }
    }

    /// Something was queued: cancel a token hold so it gets sent soon.
    fn event_signal(&mut self, now: Instant) {
        if self.token_held && self.state == State::Operational {
            self.token_held = false;
            // nodes outside the ring ignore another ring's cancel
            if !self.alone() {
                let ring = self.my_ring_id;
                self.send_control(Dest::AllOthers, &Packet::TokenHoldCancel(ring));
            }
            if self.is_rep() {
                self.release_held_token(now);
            }
        }
    }

    /// An operational ring of this node alone.
    fn alone(&self) -> bool {
        self.state == State::Operational && self.memb.len() == 1
    }

    fn release_held_token(&mut self, now: Instant) {
        self.token_held = false;
        self.timers.cancel(Timer::Hold);
        if let Some(s) = self.saved_token.clone() {
            self.send_to(s.dest, FrameRef::Own(s.frame));
            self.timers
                .arm(Timer::TokenRetransmit, now + self.cfg.token_retransmit());
        }
    }

    /// Save and send a token (ORF or commit) to `dest`, arming its retransmit.
    fn send_token(&mut self, now: Instant, dest: NodeId, packet: &Packet<'_>, hold: bool) {
        let frame = self.emit(packet);
        self.saved_token = Some(SavedToken {
            frame: frame.clone(),
            dest,
        });
        if !hold {
            self.send_to(dest, FrameRef::Own(frame));
        }
        self.timers
            .arm(Timer::TokenRetransmit, now + self.cfg.token_retransmit());
    }

    fn successor(&self, list: &[NodeId]) -> NodeId {
        match list.iter().position(|&n| n == self.me) {
            Some(i) => list[(i + 1) % list.len()],
            None => self.me,
        }
    }

    fn push_config(&mut self, change: ConfigChange) {
        self.events.push_back(TotemEvent::Config(Box::new(change)));
    }
}

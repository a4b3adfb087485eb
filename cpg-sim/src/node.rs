//! One simulated node: an engine, its disk, and its application processes.
//!
//! The harness follows the engine's calling order after every call
//! (`poll_persist` → disk, `poll_transmit`, `poll_event`, `poll_release`,
//! `poll_timeout`). A crash drops the engine and keeps the disk; a restart
//! builds a new engine with `initial_ring_seq = stored + 1` (or, in the
//! [`RestartMode::BootCounter`] variant, a boot counter that is never 0).

use cpg_core::engine::{Engine, EngineOptions, Event, Request, State, Stats, Transmit};
use cpg_core::limits::{Config, ConfigError};
use cpg_core::{CsError, GroupName, Guarantee, Instant, NodeId, Reason, RingId};

use crate::network::Frame;
use crate::payload::MsgKey;

/// How a restarted node picks its initial ring seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// `stored + 1` from the simulated disk (what Corosync and cpg-std do).
    Persisted,
    /// A boot counter (1, 2, 3, ...): no storage, but never 0.
    BootCounter,
}

/// The node's durable state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disk {
    /// Last ring seq the engine asked to persist.
    pub ring_seq: Option<u64>,
    /// Boots so far (survives crashes, like a boot counter would).
    pub boots: u64,
}

/// Where a process stands with one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    /// Not joined.
    Out,
    /// Join to submit (retry after TRY_AGAIN).
    WantJoin,
    /// Join accepted, own confchg not seen yet.
    Joining,
    /// Own confchg seen.
    Joined,
    /// Leave to submit (retry after TRY_AGAIN).
    WantLeave,
    /// Leave accepted.
    Leaving,
}

impl GroupStatus {
    /// Counts as a member for `mcast` (join requested or done).
    pub fn may_send(self) -> bool {
        matches!(
            self,
            GroupStatus::Joining | GroupStatus::Joined | GroupStatus::WantLeave
        )
    }
    /// Expected to be a member once the cluster settles.
    pub fn expected_member(self) -> bool {
        matches!(
            self,
            GroupStatus::WantJoin
                | GroupStatus::Joining
                | GroupStatus::Joined
                | GroupStatus::WantLeave
        )
    }
}

/// A message waiting to be (re)submitted after TRY_AGAIN.
#[derive(Debug, Clone)]
pub struct PendingMsg {
    /// Identity (its counter is fixed when first tried).
    pub key: MsgKey,
    /// Group index in [`Proc::groups`].
    pub group: usize,
    /// Guarantee.
    pub guarantee: Guarantee,
    /// Payload length.
    pub len: usize,
    /// Split into this many iovecs.
    pub parts: usize,
    /// Sent with `submit_zc` from a buffer whose headers stay outside it
    /// ([`crate::network::Frame::shared_memory`]) instead of copied.
    pub zero_copy: bool,
}

/// A simulated application process on a node.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Groups it uses and where it stands with each.
    pub groups: Vec<(GroupName, GroupStatus)>,
    /// Next message counter.
    pub counter: u64,
    /// A message refused with TRY_AGAIN, to retry before any new one.
    pub pending: Option<PendingMsg>,
}

/// What one engine call produced.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Ring seqs persisted (in order, before any transmit below).
    pub persisted: Vec<u64>,
    /// Frames to send.
    pub transmits: Vec<Transmit<Frame>>,
    /// Events.
    pub events: Vec<Event<Frame>>,
    /// Receive buffers released.
    pub released: usize,
    /// Engine state before and after the call.
    pub state: Option<(State, State)>,
}

impl Outputs {
    /// Empty, keeping the buffers.
    pub fn clear(&mut self) {
        self.persisted.clear();
        self.transmits.clear();
        self.events.clear();
        self.released = 0;
        self.state = None;
    }
}

/// A node of the simulated cluster.
#[derive(Clone)]
pub struct SimNode {
    /// Node id.
    pub id: NodeId,
    /// Its engine configuration.
    pub config: Config,
    /// The running engine; `None` while crashed (or before first start).
    pub engine: Option<Engine<Frame>>,
    /// Durable state.
    pub disk: Disk,
    /// Incarnation (0 before the first start).
    pub incarnation: u32,
    /// Initial ring seq of the current incarnation.
    pub initial_ring_seq: u64,
    /// Next engine deadline.
    pub next_timeout: Option<Instant>,
    /// Application processes.
    pub procs: Vec<Proc>,
    /// Stats of earlier incarnations, summed.
    pub past_stats: Stats,
    /// Consecutive timeouts handled at the same instant (livelock guard).
    pub same_instant_timeouts: u32,
    /// `EngineOptions::seq_base` (first message seq of every ring − 1).
    pub seq_base: u32,
    /// `EngineOptions::trace` (on for the checkers; benchmarks turn it off).
    pub trace: bool,
}

/// Add `b` into `a` field by field.
pub fn add_stats(a: &mut Stats, b: &Stats) {
    macro_rules! add {
        ($($f:ident),*) => { $( a.$f += b.$f; )* };
    }
    add!(
        frames_sent,
        bytes_sent,
        frames_received,
        bytes_received,
        dropped_malformed,
        dropped_stale,
        dropped_unknown_node,
        dropped_implausible,
        dropped_ring_seq_jump,
        dropped_window_bytes,
        retransmissions,
        token_visits,
        ring_changes,
        merges,
        token_losses_operational,
        token_losses_recovery,
        consensus_timeouts,
        recovered_messages,
        transitional_deliveries,
        safe_deliveries,
        frames_delivered,
        fragmented_reassembled,
        fragments_discarded,
        fragmented_resent,
        failed_to_recv,
        token_holds,
        token_fcc_clamped,
        flow_stalls,
        merges_suppressed,
        try_again,
        app_delivered
    );
}

/// The stats fields as (name, value) pairs, for printing and coverage.
pub fn stats_fields(s: &Stats) -> Vec<(&'static str, u64)> {
    macro_rules! fields {
        ($($f:ident),*) => { vec![ $( (stringify!($f), s.$f), )* ] };
    }
    fields!(
        frames_sent,
        bytes_sent,
        frames_received,
        bytes_received,
        dropped_malformed,
        dropped_stale,
        dropped_unknown_node,
        dropped_implausible,
        dropped_ring_seq_jump,
        dropped_window_bytes,
        retransmissions,
        token_visits,
        ring_changes,
        merges,
        token_losses_operational,
        token_losses_recovery,
        consensus_timeouts,
        recovered_messages,
        transitional_deliveries,
        safe_deliveries,
        frames_delivered,
        fragmented_reassembled,
        fragments_discarded,
        fragmented_resent,
        failed_to_recv,
        token_holds,
        token_fcc_clamped,
        flow_stalls,
        merges_suppressed,
        try_again,
        app_delivered
    )
}

impl SimNode {
    /// A node that has not started yet.
    pub fn new(id: NodeId, config: Config, procs: Vec<Proc>) -> SimNode {
        SimNode {
            id,
            config,
            engine: None,
            disk: Disk::default(),
            incarnation: 0,
            initial_ring_seq: 0,
            next_timeout: None,
            procs,
            past_stats: Stats::default(),
            same_instant_timeouts: 0,
            seq_base: 0,
            trace: true,
        }
    }

    /// Whether the engine runs.
    pub fn is_live(&self) -> bool {
        self.engine.is_some()
    }

    /// The initial ring seq a start in `mode` would use now.
    pub fn next_initial_ring_seq(&self, mode: RestartMode) -> u64 {
        match mode {
            RestartMode::Persisted => self.disk.ring_seq.map_or(1, |s| s.saturating_add(1)),
            RestartMode::BootCounter => self.disk.boots + 1,
        }
    }

    /// Start (or restart) the engine. The processes start over: every group
    /// they use is to be joined again.
    ///
    /// # Errors
    /// The engine's [`ConfigError`].
    pub fn start(&mut self, now: Instant, mode: RestartMode) -> Result<Outputs, ConfigError> {
        let seq = self.next_initial_ring_seq(mode);
        self.start_with_seq(now, seq)
    }

    /// Start with an explicit initial ring seq (scenarios test 0 is refused).
    ///
    /// # Errors
    /// The engine's [`ConfigError`].
    pub fn start_with_seq(
        &mut self,
        now: Instant,
        initial_ring_seq: u64,
    ) -> Result<Outputs, ConfigError> {
        let engine = Engine::new(
            self.config.clone(),
            EngineOptions {
                trace: self.trace,
                seq_base: self.seq_base,
            },
            initial_ring_seq,
            now,
        )?;
        self.engine = Some(engine);
        self.disk.boots += 1;
        self.incarnation += 1;
        self.initial_ring_seq = initial_ring_seq;
        self.same_instant_timeouts = 0;
        for p in &mut self.procs {
            p.pending = None;
            for g in &mut p.groups {
                g.1 = GroupStatus::Out;
            }
        }
        Ok(self.drain(None))
    }

    /// Crash: the engine and everything volatile are gone; the disk stays.
    pub fn crash(&mut self) {
        if let Some(e) = self.engine.take() {
            add_stats(&mut self.past_stats, e.stats());
        }
        self.next_timeout = None;
        for p in &mut self.procs {
            p.pending = None;
            for g in &mut p.groups {
                g.1 = GroupStatus::Out;
            }
        }
    }

    /// Stats of this incarnation plus all earlier ones.
    pub fn total_stats(&self) -> Stats {
        let mut s = self.past_stats.clone();
        if let Some(e) = &self.engine {
            add_stats(&mut s, e.stats());
        }
        s
    }

    /// Engine state, if up.
    pub fn state(&self) -> Option<State> {
        self.engine.as_ref().map(|e| e.state())
    }

    /// Current ring id, if up.
    pub fn ring_id(&self) -> Option<RingId> {
        self.engine.as_ref().map(|e| e.ring_id())
    }

    /// Drain every output after a call, in the documented order.
    pub fn drain(&mut self, before: Option<State>) -> Outputs {
        let mut out = Outputs::default();
        self.drain_into(before, &mut out);
        out
    }

    /// [`SimNode::drain`] into `out` (cleared first), reusing its buffers:
    /// for drivers that call the engine millions of times (benchmarks).
    pub fn drain_into(&mut self, before: Option<State>, out: &mut Outputs) {
        out.clear();
        let Some(e) = self.engine.as_mut() else {
            return;
        };
        while let Some(seq) = e.poll_persist() {
            self.disk.ring_seq = Some(seq);
            out.persisted.push(seq);
        }
        while let Some(t) = e.poll_transmit() {
            out.transmits.push(t);
        }
        while let Some(ev) = e.poll_event() {
            out.events.push(ev);
        }
        while e.poll_release().is_some() {
            out.released += 1;
        }
        self.next_timeout = e.poll_timeout();
        let after = e.state();
        out.state = Some((before.unwrap_or(after), after));
    }

    /// Hand a received frame to the engine.
    pub fn handle_packet(&mut self, now: Instant, from: NodeId, frame: Frame) -> Outputs {
        let Some(e) = self.engine.as_mut() else {
            return Outputs::default();
        };
        let before = e.state();
        e.handle_packet(now, from, frame);
        self.drain(Some(before))
    }

    /// A deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Outputs {
        let Some(e) = self.engine.as_mut() else {
            return Outputs::default();
        };
        let before = e.state();
        e.handle_timeout(now);
        self.drain(Some(before))
    }

    /// Submit a request.
    pub fn submit(&mut self, now: Instant, req: Request<'_>) -> (Result<(), CsError>, Outputs) {
        let Some(e) = self.engine.as_mut() else {
            return (Err(CsError::Library), Outputs::default());
        };
        let before = e.state();
        let r = e.submit(now, req);
        (r, self.drain(Some(before)))
    }

    /// Clean shutdown (LEAVE), then the engine is dropped like a crash.
    pub fn shutdown(&mut self, now: Instant) -> Outputs {
        let Some(e) = self.engine.as_mut() else {
            return Outputs::default();
        };
        let before = e.state();
        e.shutdown(now);
        let out = self.drain(Some(before));
        self.crash();
        out
    }

    /// Submit `cpg_join` for a process.
    pub fn join(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
    ) -> (Result<(), CsError>, Outputs) {
        self.submit(
            now,
            Request::Join {
                pid,
                group,
                flags: 0,
            },
        )
    }

    /// Submit `cpg_leave` for a process.
    pub fn leave(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
    ) -> (Result<(), CsError>, Outputs) {
        self.submit(
            now,
            Request::Leave {
                pid,
                group,
                reason: Reason::Leave,
            },
        )
    }
}

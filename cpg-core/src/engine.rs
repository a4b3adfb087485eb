//! The engine a driver runs: Totem ordering and membership ([`crate::totem`])
//! with the CPG group layer ([`crate::group`]) on top, behind the sans-IO
//! contract of `docs/ARCHITECTURE.md`.
//!
//! # Calling order
//! After every `handle_packet`, `handle_timeout` or `submit`:
//! 1. drain [`Engine::poll_persist`] and make the ring seq durable,
//! 2. drain [`Engine::poll_transmit`] and send,
//! 3. drain [`Engine::poll_event`] and hand deliveries to the application,
//! 4. drain [`Engine::poll_release`] and recycle those receive buffers,
//! 5. arm a timer for [`Engine::poll_timeout`].
//!
//! # Buffers
//! A received frame is an owned handle `F` (`Clone + AsRef<[u8]>`): the
//! driver's receive buffer. The engine keeps it as long as it needs it (to
//! fill gaps, to serve retransmissions until every member has it, and to
//! hand deliveries to the application by reference) and hands it back
//! through `poll_release`. Deliveries borrow from their frame through a
//! clone of the handle, never a copy of the bytes.

use alloc::vec::Vec;

use crate::types::{GroupName, Guarantee, MemberAddr, NodeId, RingId};

// The vocabulary of the layers below, under the paths drivers have always
// used (`cpg_core::engine::FrameRef`, ...): buffers and frames (`frame`),
// Totem's state, counters, options and configuration changes (`totem`),
// the group layer's requests and events (`group`).
pub use crate::frame::{Dest, FrameBuf, FrameRef, Payload, Transmit, ZcError};
pub use crate::group::{Event, Request};
pub use crate::totem::Options as EngineOptions;
pub use crate::totem::{ConfigChange, State, Stats, TraceDeliver};

/// Totem + CPG groups for one node: the whole protocol behind the sans-IO
/// contract (see the module docs for the calling order).
///
/// `Clone` copies the whole protocol state and shares the frame handles
/// (`F`) it holds: simulators snapshot a warmed-up cluster once and run
/// every fuzz input from a copy. A driver runs one engine per node; a copy
/// next to it would send and release the same buffers twice.
#[derive(Clone)]
pub struct Engine<F> {
    totem: crate::totem::Totem<F>,
    groups: crate::group::Groups,
    events: alloc::collections::VecDeque<Event<F>>,
    flow_control: bool,
}

impl<F: FrameBuf> Engine<F> {
    /// A node that starts alone in GATHER. `initial_ring_seq` is the ring seq
    /// persisted by the previous incarnation plus one (1 on first start);
    /// 0 is refused so a restarted node never reuses a ring id.
    ///
    /// # Errors
    /// A [`crate::limits::ConfigError`] naming the bad setting.
    pub fn new(
        config: crate::limits::Config,
        options: EngineOptions,
        initial_ring_seq: u64,
        now: crate::Instant,
    ) -> Result<Self, crate::limits::ConfigError> {
        let groups = crate::group::Groups::new(config.node_id, config.max_message_size);
        let totem = crate::totem::Totem::new(config, options, initial_ring_seq, now)?;
        let mut e = Engine {
            totem,
            groups,
            events: alloc::collections::VecDeque::new(),
            flow_control: false,
        };
        e.pump(now);
        Ok(e)
    }

    /// A frame arrived from `from` (the transport's idea of the peer).
    pub fn handle_packet(&mut self, now: crate::Instant, from: NodeId, frame: F) {
        self.totem.handle_packet(now, from, frame);
        self.pump(now);
    }

    /// A deadline from [`Engine::poll_timeout`] passed (spurious calls are no-ops).
    pub fn handle_timeout(&mut self, now: crate::Instant) {
        self.totem.handle_timeout(now);
        self.pump(now);
    }

    /// A local process's request.
    ///
    /// # Errors
    /// Corosync's codes, with section 0's fixes: `Exist` (already joined or
    /// joining), `TryAgain` (send queue full, or a leave of the same
    /// process/group still in flight), `NotExist` (mcast or leave when not
    /// joined), `TooBig` (above `max_message_size`), `InvalidParam`,
    /// `Library` (after shutdown).
    pub fn submit(&mut self, now: crate::Instant, req: Request<'_>) -> Result<(), crate::CsError> {
        if self.totem.is_shut_down() {
            return Err(crate::CsError::Library);
        }
        let r = self.groups.submit(now, req, &mut self.totem);
        self.pump(now);
        r
    }

    /// `cpg_mcast_joined` for a run of one process's messages to one group,
    /// each with its guarantee. The engine takes them in order until its
    /// send queue is full, copying the ones it takes into one shared
    /// allocation instead of one per message (the staged small-message path
    /// of a handle layer). The iterator is walked at most twice (sizes,
    /// then bytes). Returns how many it took, and `Ok` if it took them all,
    /// otherwise the error of the first one it did not take: `TryAgain`
    /// (queue full), `NotExist` (not joined: none taken), `TooBig`,
    /// `Library` (after shutdown).
    pub fn submit_batch<'a>(
        &mut self,
        now: crate::Instant,
        pid: u32,
        group: &GroupName,
        msgs: impl Iterator<Item = (Guarantee, &'a [u8])> + Clone,
    ) -> (usize, Result<(), crate::CsError>) {
        if self.totem.is_shut_down() {
            return (0, Err(crate::CsError::Library));
        }
        let r = self
            .groups
            .submit_batch(now, pid, group, msgs, &mut self.totem);
        self.pump(now);
        r
    }

    /// Zero-copy `cpg_zcb_mcast_joined`: `buf[payload]` is the message,
    /// written by the application into a buffer it no longer touches. The
    /// engine writes every header into the headroom in front of `payload`
    /// (keep [`crate::limits::ZC_HEADROOM`] bytes free there) and sends the
    /// payload from where it lies: never copied in user space once it is at
    /// least `zc_copy_threshold` bytes. The buffer comes back through
    /// `poll_release` (once per frame that referenced it) when every member
    /// holds the message.
    ///
    /// # Errors
    /// As [`Engine::submit`] for a `Request::Mcast`; `InvalidParam` for a
    /// range outside the buffer. The buffer comes back inside the error, so
    /// a caller can retry after TRY_AGAIN without losing its contents.
    pub fn submit_zc(
        &mut self,
        now: crate::Instant,
        pid: u32,
        group: &GroupName,
        guarantee: Guarantee,
        buf: F,
        payload: core::ops::Range<usize>,
    ) -> Result<(), ZcError<F>> {
        if self.totem.is_shut_down() {
            return Err(ZcError {
                error: crate::CsError::Library,
                buf: Some(buf),
            });
        }
        let r = self.groups.submit_zc(
            now,
            crate::group::McastTo {
                pid,
                group,
                guarantee,
            },
            buf,
            payload,
            &mut self.totem,
        );
        self.pump(now);
        r
    }

    /// Clean shutdown: multicast a LEAVE so others need not wait for a token
    /// loss; afterwards the engine ignores every input.
    pub fn shutdown(&mut self, now: crate::Instant) {
        self.totem.shutdown();
        self.pump(now);
    }

    /// A ring seq to make durable before any later transmit is sent.
    pub fn poll_persist(&mut self) -> Option<u64> {
        self.totem.poll_persist()
    }
    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<F>> {
        self.totem.poll_transmit()
    }
    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event<F>> {
        self.events.pop_front()
    }
    /// A receive buffer the engine no longer holds.
    pub fn poll_release(&mut self) -> Option<F> {
        self.totem.poll_release()
    }
    /// The earliest deadline, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<crate::Instant> {
        self.totem.poll_timeout()
    }
    /// A one-line dump of the Totem state (failure reports, debugging).
    pub fn debug_line(&self) -> alloc::string::String {
        self.totem.debug_line()
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.totem.stats
    }
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.totem.node_id()
    }
    /// The configuration in force.
    pub fn config(&self) -> &crate::limits::Config {
        self.totem.config()
    }
    /// Totem membership state.
    pub fn state(&self) -> State {
        self.totem.state
    }
    /// Current (last entered) ring id.
    pub fn ring_id(&self) -> RingId {
        self.totem.my_ring_id
    }
    /// Members of the last installed ring.
    pub fn members(&self) -> &[NodeId] {
        &self.totem.memb
    }
    /// Whether this node holds (or has held and safely released) message
    /// `seq` of ring `ring`: used by the SAFE checker.
    pub fn holds(&self, ring: RingId, seq: u32) -> bool {
        self.totem.holds(ring, seq)
    }
    /// Current members of a group as this node knows them, sorted.
    pub fn group_members(&self, group: &GroupName) -> Vec<MemberAddr> {
        self.groups.members(group)
    }
    /// The CPG layer (groups, local states, last totem configuration).
    pub fn groups(&self) -> &crate::group::Groups {
        &self.groups
    }
    /// Bytes of the frames the receive windows hold, and of those above the
    /// seq the ring has reached as far as this node knows (at most
    /// `Config::recv_window_bytes_effective` per window; spec §3.7).
    pub fn window_bytes(&self) -> (usize, usize) {
        self.totem.window_bytes()
    }
    /// Whether the local send queue is at its high-water mark (mcast would
    /// answer TRY_AGAIN).
    pub fn flow_control_enabled(&self) -> bool {
        self.totem.flow_control_enabled()
    }
    /// Bytes of payload one frame carries (for sizing benchmarks).
    pub fn frame_payload_cap(&self) -> usize {
        self.totem.frame_payload_cap()
    }

    fn pump(&mut self, now: crate::Instant) {
        while let Some(ev) = self.totem.events.pop_front() {
            self.groups
                .on_totem_event(now, ev, &mut self.totem, &mut self.events);
        }
        let fc = self.totem.flow_control_enabled();
        if fc != self.flow_control {
            self.flow_control = fc;
            self.events.push_back(Event::FlowControl(fc));
        }
        self.totem.stats.dropped_malformed = self
            .totem
            .stats
            .dropped_malformed
            .max(self.groups.malformed);
    }
}

/// Check a configuration as [`Engine::new`] will: every setting
/// ([`crate::limits::Config::validate`]) and that the node list's largest
/// control frame fits `netmtu − frame_overhead`.
///
/// # Errors
/// A [`crate::limits::ConfigError`] naming the problem.
pub fn validate_config(config: &crate::limits::Config) -> Result<(), crate::limits::ConfigError> {
    crate::totem::validate_config(config)
}

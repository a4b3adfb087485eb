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

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::types::{GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};
use crate::wire::NodeList;

/// A buffer handle the driver passes in by ownership: a received frame, or
/// a zero-copy send buffer (a pool slot the application filled).
///
/// Clones share the same bytes (an `Arc`-like handle). The engine writes
/// frame headers into a zero-copy buffer's headroom only through
/// [`FrameBuf::unique_mut`], i.e. while it holds the only handle, so bytes
/// that the network may be reading are never written.
pub trait FrameBuf: Clone + AsRef<[u8]> {
    /// Mutable access while this is the only handle to the bytes.
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        None
    }
}

impl FrameBuf for Arc<[u8]> {
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        Arc::get_mut(self)
    }
}

impl FrameBuf for Vec<u8> {
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        Some(self.as_mut_slice())
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// One node (the token's successor; may be this node itself on a
    /// single-node ring: the driver loops it back).
    Node(NodeId),
    /// Every node of the configured node list except this one ("udpu").
    AllOthers,
}

/// The bytes of a frame to send, or of a message to deliver from.
#[derive(Debug, Clone)]
pub enum FrameRef<F> {
    /// A frame this engine built in its own memory (control packets, frames
    /// of packed small messages, reassembled messages).
    Own(Arc<[u8]>),
    /// A whole driver buffer: a frame received from the network (re-sent
    /// unchanged when serving a retransmit request).
    Rx(F),
    /// Zero copy: the frame lies in `buf[range]`: the application's payload
    /// with the headers written into the headroom in front of it.
    Slot {
        /// The zero-copy buffer.
        buf: F,
        /// Byte range of the frame inside it.
        range: core::ops::Range<usize>,
    },
    /// Zero copy, one piece of a fragmented message: the frame is `head`
    /// (headers built by the engine) followed by `buf[range]` (the piece,
    /// never copied). Drivers send it as two iovecs.
    Gather {
        /// Frame, multicast and packing headers.
        head: Arc<[u8]>,
        /// The zero-copy buffer.
        buf: F,
        /// Byte range of the piece inside it.
        range: core::ops::Range<usize>,
    },
}

impl<F: AsRef<[u8]>> FrameRef<F> {
    /// The frame as (at most) two byte slices, in order.
    pub fn segments(&self) -> [&[u8]; 2] {
        match self {
            FrameRef::Own(b) => [b, &[]],
            FrameRef::Rx(f) => [f.as_ref(), &[]],
            FrameRef::Slot { buf, range } => [buf.as_ref().get(range.clone()).unwrap_or(&[]), &[]],
            FrameRef::Gather { head, buf, range } => {
                [head, buf.as_ref().get(range.clone()).unwrap_or(&[])]
            }
        }
    }
    /// The frame's bytes if they are contiguous (every variant but `Gather`).
    pub fn contiguous(&self) -> Option<&[u8]> {
        match self {
            FrameRef::Gather { .. } => None,
            _ => Some(self.segments()[0]),
        }
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        let [a, b] = self.segments();
        a.len() + b.len()
    }
    /// Zero length (never for a frame the engine emits).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the bytes (simulators and tests; a driver sends the segments).
    pub fn to_vec(&self) -> Vec<u8> {
        let [a, b] = self.segments();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        v
    }
    /// The driver buffer this frame references, if any.
    pub fn buf(&self) -> Option<&F> {
        match self {
            FrameRef::Own(_) => None,
            FrameRef::Rx(f) | FrameRef::Slot { buf: f, .. } | FrameRef::Gather { buf: f, .. } => {
                Some(f)
            }
        }
    }
    /// FNV-1a over `range` of the concatenated segments.
    pub fn digest(&self, range: core::ops::Range<usize>) -> u64 {
        let mut h = crate::hash::FNV1A64_OFFSET;
        let mut at = 0usize;
        for seg in self.segments() {
            // The part of `range` inside this segment, in segment offsets.
            let lo = range.start.clamp(at, at + seg.len()) - at;
            let hi = range.end.clamp(at, at + seg.len()) - at;
            if lo < hi {
                h = crate::hash::fnv1a64_update(h, &seg[lo..hi]);
            }
            at += seg.len();
        }
        h
    }
}

/// One frame to send.
#[derive(Debug, Clone)]
pub struct Transmit<F> {
    /// Destination.
    pub dest: Dest,
    /// The whole frame.
    pub frame: FrameRef<F>,
}

/// An application message's bytes: a range of a frame (zero copy), or a
/// reassembled buffer for a message that was fragmented.
#[derive(Debug, Clone)]
pub struct Payload<F> {
    /// Backing storage.
    pub src: FrameRef<F>,
    /// Byte range inside `src`.
    pub range: core::ops::Range<usize>,
}

impl<F: AsRef<[u8]>> Payload<F> {
    /// The message bytes (a payload always lies in one contiguous segment).
    pub fn bytes(&self) -> &[u8] {
        self.src
            .contiguous()
            .and_then(|b| b.get(self.range.clone()))
            .unwrap_or(&[])
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }
    /// Zero-length message.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// Totem-level configuration change (node membership, EVS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Members moving on together from the old ring; `left` departed.
    Transitional {
        /// New ring id (as Corosync reports it).
        ring_id: RingId,
        /// Transitional members, ascending.
        members: NodeList,
        /// Old members not in the transitional set.
        left: NodeList,
    },
    /// The new ring is installed.
    Regular {
        /// New ring id.
        ring_id: RingId,
        /// Members, ascending.
        members: NodeList,
        /// Members not in the transitional set.
        joined: NodeList,
    },
}

/// What the engine tells the driver/application.
#[derive(Debug, Clone)]
pub enum Event<F> {
    /// A group message, delivered to every local member of `group`.
    Deliver {
        /// Group.
        group: GroupName,
        /// Sending process.
        sender: MemberAddr,
        /// Guarantee it was sent with.
        guarantee: Guarantee,
        /// The application bytes.
        payload: Payload<F>,
    },
    /// A group's membership changed (post-change members, sorted).
    ConfChg {
        /// Group.
        group: GroupName,
        /// Members after the change, sorted by (nodeid, pid).
        members: Vec<MemberAddr>,
        /// Members that left, with reasons.
        left: Vec<(MemberAddr, Reason)>,
        /// Members that joined, with reasons.
        joined: Vec<(MemberAddr, Reason)>,
    },
    /// Node membership after a completed sync (model v1 totem confchg).
    TotemConfChg {
        /// Ring id.
        ring_id: RingId,
        /// Nodes, ascending.
        members: Box<NodeList>,
    },
    /// Totem-level configuration change (transitional, then regular).
    /// Boxed, as `TotemConfChg`'s list: a rare event must not make every
    /// event (one per delivered message) hundreds of bytes to move.
    Config(Box<ConfigChange>),
    /// The local send queue crossed its high-water mark (true = ENABLED,
    /// `mcast` answers TRY_AGAIN) or fell back below it.
    FlowControl(bool),
    /// Only with `trace` on: a Totem message delivered in order (for the
    /// simulator's checkers).
    Trace(TraceDeliver),
}

/// A Totem-level delivery, for checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceDeliver {
    /// Ring whose seq space `seq` is in.
    pub ring_id: RingId,
    /// Frame sequence number.
    pub seq: u32,
    /// Originating node.
    pub sender: NodeId,
    /// SAFE frame.
    pub safe: bool,
    /// Delivered in the transitional configuration (else regular).
    pub transitional: bool,
    /// FNV-1a digest of the frame payload (identity check).
    pub digest: u64,
}

/// A request from a local process.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `cpg_join`.
    Join {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// Model flags.
        flags: u32,
    },
    /// `cpg_leave` (reason LEAVE) or a finalize while joined (PROCDOWN).
    Leave {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// `Reason::Leave` or `Reason::ProcDown`.
        reason: Reason,
    },
    /// `cpg_mcast_joined`: the iovecs are copied once into the send queue.
    Mcast {
        /// Process id.
        pid: u32,
        /// Group.
        group: &'a GroupName,
        /// Guarantee.
        guarantee: Guarantee,
        /// Message parts, concatenated.
        iov: &'a [&'a [u8]],
    },
}

/// Counters: traffic, drops by reason, and protocol coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to `poll_transmit` (a multicast to all counts once).
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Frames passed to `handle_packet`.
    pub frames_received: u64,
    /// Bytes of those frames.
    pub bytes_received: u64,
    /// Frames dropped because they did not parse (malformed, truncated,
    /// foreign cluster, bad version, ...).
    pub dropped_malformed: u64,
    /// Frames dropped because they belong to another (old or foreign) ring
    /// or are stale duplicates.
    pub dropped_stale: u64,
    /// Frames from nodes outside the node list.
    pub dropped_unknown_node: u64,
    /// Control frames that parse but no honest node could have sent (a
    /// token whose aru is above its seq, a JOIN naming nodes outside the
    /// node list, ...): corruption the checksum missed.
    pub dropped_implausible: u64,
    /// Messages re-multicast to serve retransmit requests.
    pub retransmissions: u64,
    /// Tokens accepted.
    pub token_visits: u64,
    /// Regular configurations installed.
    pub ring_changes: u64,
    /// Regular configurations that joined members of another old ring (merges).
    pub merges: u64,
    /// Token losses detected, by state at the time.
    pub token_losses_operational: u64,
    /// Token losses detected in COMMIT or RECOVERY.
    pub token_losses_recovery: u64,
    /// Consensus timeouts in GATHER.
    pub consensus_timeouts: u64,
    /// Old-ring messages recovered (delivered from recovery copies).
    pub recovered_messages: u64,
    /// Messages delivered in a transitional configuration.
    pub transitional_deliveries: u64,
    /// SAFE frames delivered.
    pub safe_deliveries: u64,
    /// Frames delivered (Totem level, in order).
    pub frames_delivered: u64,
    /// Messages reassembled from fragments.
    pub fragmented_reassembled: u64,
    /// Partial assemblies discarded at a configuration change.
    pub fragments_discarded: u64,
    /// Fragmented messages re-sent whole in a new ring.
    pub fragmented_resent: u64,
    /// Times this node declared itself failed to receive.
    pub failed_to_recv: u64,
    /// Tokens held on an idle ring.
    pub token_holds: u64,
    /// Tokens whose flow-control count could not be true (above
    /// `window_size`, or full after a rotation without new frames): reset.
    pub token_fcc_clamped: u64,
    /// Merges not attempted because a node of one side is known not to
    /// hear the other (a one-way link failure).
    pub merges_suppressed: u64,
    /// Rings left because the token kept rotating with frames waiting and
    /// the ring's aru did not move for a token timeout.
    pub flow_stalls: u64,
    /// Submits refused with TRY_AGAIN.
    pub try_again: u64,
    /// Application messages delivered to local members.
    pub app_delivered: u64,
}

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

/// A refused zero-copy send: the error, and the buffer handed back.
pub struct ZcError<F> {
    /// Why it was refused.
    pub error: crate::CsError,
    /// The buffer, untouched beyond its headroom (None only if the engine
    /// could not give it back).
    pub buf: Option<F>,
}

impl<F> core::fmt::Debug for ZcError<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ZcError")
            .field("error", &self.error)
            .field("buf", &self.buf.is_some())
            .finish()
    }
}

impl<F> From<ZcError<F>> for crate::CsError {
    fn from(e: ZcError<F>) -> crate::CsError {
        e.error
    }
}

/// Options that are not protocol settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// Emit [`Event::Trace`] for every Totem delivery (simulator checkers).
    pub trace: bool,
    /// First message seq of every ring minus one (0 in production). Tests
    /// set it near 2^32 to exercise serial-number wrap-around; every node of
    /// a cluster must use the same value.
    pub seq_base: u32,
}

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

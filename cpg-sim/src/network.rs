//! The simulated network: virtual time, seeded faults, no I/O.
//!
//! Modelled on TigerBeetle's `packet_simulator.zig`: every packet in flight
//! waits in a queue ordered by `ready_at = now + base + Exp(jitter)` (so
//! reordering falls out of the delay distribution), ties broken by a
//! monotonically increasing packet id. Faults: loss, duplication, garbage
//! (malformed frames derived from real ones), replay of old captured
//! frames, symmetric partitions (node groups), one-way link blocks and
//! scripted drop rules. Loopback (`Dest::Node(self)`) is never faulted.
//! Optionally each sender's link has a speed
//! ([`FaultOptions::link_bits_per_sec`]): its copies then leave one after
//! the other, so a frame's size costs time.
//!
//! Everything random comes from the caller's one seeded PRNG; nothing here
//! iterates a `HashMap`, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use cpg_core::engine::{Dest, FrameBuf};
use cpg_core::{Duration, Instant, NodeId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The buffer type the simulator hands to engines (`F` of `Engine<F>`):
/// shared bytes, as an `Arc<[u8]>` (received frames, zero-copy buffers
/// with headroom), or, made with [`Frame::shared_memory`], a buffer that
/// stands for memory a client process can still write (cpgd's shared
/// memory). That one keeps its headers outside
/// ([`FrameBuf::headers_inside`] is false) and fails the run, by a panic,
/// if the engine ever asks to write into it.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Arc<[u8]>,
    shared_memory: bool,
}

impl Frame {
    /// A buffer someone outside the engine can still write.
    pub fn shared_memory(bytes: Arc<[u8]>) -> Frame {
        Frame {
            bytes,
            shared_memory: true,
        }
    }

    /// Made by [`Frame::shared_memory`].
    pub fn is_shared_memory(&self) -> bool {
        self.shared_memory
    }

    /// The bytes behind the handle (clones share them).
    pub fn arc(&self) -> &Arc<[u8]> {
        &self.bytes
    }
}

impl FrameBuf for Frame {
    fn unique_mut(&mut self) -> Option<&mut [u8]> {
        assert!(
            !self.shared_memory,
            "the engine asked for write access to a buffer whose headers stay outside it"
        );
        Arc::get_mut(&mut self.bytes)
    }

    fn headers_inside(&self) -> bool {
        !self.shared_memory
    }
}

impl core::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Arc<[u8]>> for Frame {
    fn from(bytes: Arc<[u8]>) -> Frame {
        Frame {
            bytes,
            shared_memory: false,
        }
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Frame {
        Arc::<[u8]>::from(bytes).into()
    }
}

impl From<&[u8]> for Frame {
    fn from(bytes: &[u8]) -> Frame {
        Arc::<[u8]>::from(bytes).into()
    }
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.shared_memory {
            write!(f, "shared memory ")?;
        }
        self.bytes.fmt(f)
    }
}

/// Sender id used for frames "from" a node outside the node list.
pub const ALIEN_NODE: NodeId = 0x00A1_1E55;

/// Offsets in the frame header (see `cpg_core::wire`): the simulator only
/// needs them to classify frames and to build garbage.
pub mod header {
    /// Magic, 2 bytes.
    pub const MAGIC: core::ops::Range<usize> = 0..2;
    /// Version byte.
    pub const VERSION: usize = 2;
    /// Kind byte.
    pub const KIND: usize = 3;
    /// Cluster id, 4 bytes.
    pub const CLUSTER: core::ops::Range<usize> = 4..8;
    /// Sender node id, 4 bytes.
    pub const SENDER: core::ops::Range<usize> = 8..12;
    /// Header length.
    pub const LEN: usize = 24;
    /// Kind: ORF token.
    pub const KIND_TOKEN: u8 = 0;
    /// Kind: multicast.
    pub const KIND_MCAST: u8 = 1;
    /// Kind: merge detect.
    pub const KIND_MERGE_DETECT: u8 = 2;
    /// Kind: JOIN.
    pub const KIND_JOIN: u8 = 3;
    /// Kind: commit token.
    pub const KIND_COMMIT: u8 = 4;
    /// Kind: token hold cancel.
    pub const KIND_HOLD_CANCEL: u8 = 5;
}

/// The kind byte of a frame, if it is long enough to have one.
pub fn frame_kind(frame: &[u8]) -> Option<u8> {
    frame.get(header::KIND).copied()
}

/// Fault knobs. [`FaultOptions::swarm`] draws a mix per seed ("swarm
/// testing": each seed exercises its own combination).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultOptions {
    /// Probability a packet is lost (per destination).
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub dup: f64,
    /// Fixed one-way delay.
    pub delay_base: Duration,
    /// Mean of the exponential extra delay (0 = FIFO links).
    pub jitter_mean: Duration,
    /// Probability, per sent packet, of also injecting a garbage frame.
    pub garbage: f64,
    /// Probability that a control frame arrives with 1-4 random body
    /// bytes overwritten, headers intact: corruption the UDP checksum
    /// missed. The frame's own integrity check drops it (a loss), unless
    /// `corrupt_resealed`.
    pub corrupt: f64,
    /// Re-seal corrupted frames, as if the corruption happened before the
    /// check was computed: what the engine's plausibility checks must
    /// survive. Tokens, JOINs, merge detects and hold cancels only: a
    /// commit-token entry changed that way is a virtual-synchrony violation
    /// no plausibility check can see (`corrupted_commit_entry_needs_frame_integrity`).
    pub corrupt_resealed: bool,
    /// Probability, per sent packet, of also replaying an old captured frame.
    pub replay: f64,
    /// Scripted symmetric partitions during the safety phase.
    pub partitions: bool,
    /// Crash and restart nodes during the safety phase.
    pub crashes: bool,
    /// Block single directions of links during the safety phase.
    pub one_way: bool,
    /// Mean time between random fault actions (partition, crash, block).
    pub fault_interval: Duration,
    /// Speed of each node's uplink in bits per second; 0 = unlimited (a
    /// frame leaves the moment it is sent). Otherwise every copy a node
    /// sends (udpu: a multicast is one unicast per peer) occupies its link
    /// for its size plus [`WIRE_OVERHEAD`] bytes, one after the other, and
    /// its delay starts once it is out: the token queues behind the frames
    /// its holder sent before it, as on a real NIC. Receivers' links are
    /// not modelled (Totem has one sender at a time). Not a fault: the
    /// scaling run (`benches::scaling`) sets it, the sweeps do not.
    pub link_bits_per_sec: u64,
}

/// Bytes a frame costs on the wire besides its own with a link speed set
/// ([`FaultOptions::link_bits_per_sec`]): IPv4 and UDP headers (28) plus
/// Ethernet's header, FCS, preamble and inter-frame gap (38).
pub const WIRE_OVERHEAD: usize = 28 + 38;

impl FaultOptions {
    /// A perfect network with a small fixed delay and a little jitter.
    pub fn none() -> FaultOptions {
        FaultOptions {
            loss: 0.0,
            dup: 0.0,
            delay_base: Duration::from_micros(100),
            jitter_mean: Duration::from_micros(50),
            garbage: 0.0,
            corrupt: 0.0,
            corrupt_resealed: false,
            replay: 0.0,
            partitions: false,
            crashes: false,
            one_way: false,
            fault_interval: Duration::from_millis(1000),
            link_bits_per_sec: 0,
        }
    }

    /// Draw a fault mix from `rng`: loss 0–20 %, dup 0–10 %, jitter up to
    /// several ms (reordering), each of partitions / crash-restart /
    /// one-way blocks / garbage / replay switched on or off.
    pub fn swarm(rng: &mut ChaCha8Rng) -> FaultOptions {
        let on = |rng: &mut ChaCha8Rng, p: f64| rng.gen_bool(p);
        let loss = if on(rng, 0.8) {
            rng.gen_range(0.0..0.20)
        } else {
            0.0
        };
        let dup = if on(rng, 0.5) {
            rng.gen_range(0.0..0.10)
        } else {
            0.0
        };
        let delay_base = Duration::from_micros(rng.gen_range(20..2_000));
        let jitter_mean = if on(rng, 0.7) {
            Duration::from_micros(rng.gen_range(10..5_000))
        } else {
            Duration::ZERO
        };
        let garbage = if on(rng, 0.3) {
            rng.gen_range(0.0..0.05)
        } else {
            0.0
        };
        let replay = if on(rng, 0.3) {
            rng.gen_range(0.0..0.02)
        } else {
            0.0
        };
        FaultOptions {
            loss,
            dup,
            delay_base,
            jitter_mean,
            garbage,
            corrupt: 0.0,
            corrupt_resealed: false,
            replay,
            partitions: on(rng, 0.5),
            crashes: on(rng, 0.5),
            one_way: on(rng, 0.3),
            fault_interval: Duration::from_millis(rng.gen_range(300..3_000)),
            link_bits_per_sec: 0,
        }
    }

    /// The same delays with every fault switched off (liveness phase).
    pub fn calm(&self) -> FaultOptions {
        FaultOptions {
            loss: 0.0,
            dup: 0.0,
            garbage: 0.0,
            corrupt: 0.0,
            corrupt_resealed: false,
            replay: 0.0,
            partitions: false,
            crashes: false,
            one_way: false,
            jitter_mean: Duration(self.jitter_mean.0.min(Duration::from_micros(500).0)),
            ..self.clone()
        }
    }

    /// One line: which faults this mix has.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "loss {:.1}% dup {:.1}% delay {}us+exp({}us)",
            self.loss * 100.0,
            self.dup * 100.0,
            self.delay_base.0 / 1000,
            self.jitter_mean.0 / 1000
        );
        for (on, name) in [
            (self.garbage > 0.0, "garbage"),
            (self.corrupt > 0.0, "corrupt"),
            (self.replay > 0.0, "replay"),
            (self.partitions, "partitions"),
            (self.crashes, "crashes"),
            (self.one_way, "one-way"),
        ] {
            if on {
                s.push(' ');
                s.push_str(name);
            }
        }
        s
    }

    /// A short tag naming the mix, for counting fault mixes over a sweep.
    pub fn mix_tag(&self) -> String {
        let mut t = String::new();
        for (on, c) in [
            (self.loss > 0.0, 'L'),
            (self.dup > 0.0, 'D'),
            (self.jitter_mean.0 > 0, 'J'),
            (self.garbage > 0.0, 'G'),
            (self.corrupt > 0.0, 'X'),
            (self.replay > 0.0, 'R'),
            (self.partitions, 'P'),
            (self.crashes, 'C'),
            (self.one_way, 'O'),
        ] {
            t.push(if on { c } else { '-' });
        }
        t
    }
}

/// How a malformed frame was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GarbageKind {
    /// Random bytes.
    Random,
    /// A real frame cut short.
    Truncated,
    /// Magic bits flipped.
    BadMagic,
    /// Version byte changed.
    BadVersion,
    /// Kind byte outside the known kinds.
    UnknownKind,
    /// Cluster id of another cluster.
    ForeignCluster,
    /// From a node outside the node list.
    UnknownSender,
}

impl GarbageKind {
    const ALL: [GarbageKind; 7] = [
        GarbageKind::Random,
        GarbageKind::Truncated,
        GarbageKind::BadMagic,
        GarbageKind::BadVersion,
        GarbageKind::UnknownKind,
        GarbageKind::ForeignCluster,
        GarbageKind::UnknownSender,
    ];
}

/// Why a packet is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// An engine transmit.
    Normal,
    /// An engine transmit to itself (never faulted).
    Loopback,
    /// A second copy made by the duplication fault.
    Duplicate,
    /// An old frame replayed.
    Replay,
    /// A malformed frame: the receiver must drop and count it.
    Garbage(GarbageKind),
    /// Put in by a scenario.
    Injected,
}

/// One packet in flight.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Sender as the receiver will see it.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Bytes.
    pub frame: Frame,
    /// Origin.
    pub kind: PacketKind,
    /// When it was sent.
    pub sent_at: Instant,
}

/// A scripted drop: the next `count` packets matching the filter are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropRule {
    /// Frame kind byte (`header::KIND_*`), any if `None`.
    pub kind: Option<u8>,
    /// Sender, any if `None`.
    pub from: Option<NodeId>,
    /// Receiver, any if `None`.
    pub to: Option<NodeId>,
    /// Packets still to drop.
    pub count: u32,
}

/// A scripted corruption the frame checksum missed: the next `count`
/// packets of `kind` (any if `None`) from `from` (any if `None`) arrive
/// edited by `edit`.
#[derive(Debug, Clone, Copy)]
pub struct TamperRule {
    /// Frame kind byte (`header::KIND_*`), any if `None`.
    pub kind: Option<u8>,
    /// Sender, any if `None`.
    pub from: Option<NodeId>,
    /// Packets still to edit.
    pub count: u32,
    /// The edit, in place.
    pub edit: fn(&mut [u8]),
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets queued (per destination, loopback included).
    pub sent: u64,
    /// Packets handed to a receiver.
    pub delivered: u64,
    /// Lost to the random loss fault.
    pub lost: u64,
    /// Dropped by a partition or a one-way block (at send or delivery).
    pub cut: u64,
    /// Dropped by scripted drop rules.
    pub dropped_by_rule: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Garbage frames injected.
    pub garbage: u64,
    /// Old frames replayed.
    pub replayed: u64,
    /// Frames edited by tamper rules.
    pub tampered: u64,
    /// Control frames corrupted by the `corrupt` fault.
    pub corrupted: u64,
    /// Packets whose receiver was down when they arrived.
    pub to_dead_node: u64,
}

/// Captured frames kept for replay.
const HISTORY_MAX: usize = 512;

/// The network between the simulated nodes.
#[derive(Debug, Clone)]
pub struct Network {
    nodes: Vec<NodeId>,
    queue: BTreeMap<(Instant, u64), InFlight>,
    next_id: u64,
    /// Faults in force.
    pub faults: FaultOptions,
    /// Node → partition group index; empty = no partition.
    partition: BTreeMap<NodeId, usize>,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    rules: Vec<DropRule>,
    tampers: Vec<TamperRule>,
    history: VecDeque<(NodeId, Dest, Frame)>,
    capture: Option<Vec<(NodeId, Dest, Frame)>>,
    /// When each sender's link is free again (with a link speed set).
    link_free: BTreeMap<NodeId, Instant>,
    /// Cluster id of the simulated cluster (for foreign-cluster garbage).
    pub cluster_id: u32,
    /// Counters.
    pub stats: NetStats,
}

impl Network {
    /// A network joining `nodes`.
    pub fn new(nodes: &[NodeId], faults: FaultOptions, cluster_id: u32) -> Network {
        Network {
            nodes: nodes.to_vec(),
            queue: BTreeMap::new(),
            next_id: 0,
            faults,
            partition: BTreeMap::new(),
            blocked: BTreeSet::new(),
            rules: Vec::new(),
            tampers: Vec::new(),
            history: VecDeque::new(),
            capture: None,
            link_free: BTreeMap::new(),
            cluster_id,
            stats: NetStats::default(),
        }
    }

    /// The configured nodes.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Packets in flight by (sender, frame kind byte), for storm reports.
    pub fn in_flight_histogram(&self) -> BTreeMap<(NodeId, u8), usize> {
        let mut h = BTreeMap::new();
        for p in self.queue.values() {
            *h.entry((p.from, frame_kind(&p.frame).unwrap_or(255)))
                .or_default() += 1;
        }
        h
    }

    /// Packets in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Whether `from` can currently reach `to` (partitions and blocks).
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        if from == to {
            return true;
        }
        if self.blocked.contains(&(from, to)) {
            return false;
        }
        match (self.partition.get(&from), self.partition.get(&to)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            // A node not named in the partition is on its own.
            _ => false,
        }
    }

    /// Split the nodes into `groups` (nodes not named form singletons).
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.partition.clear();
        for (i, g) in groups.iter().enumerate() {
            for &n in g {
                self.partition.insert(n, i);
            }
        }
        let mut next = groups.len();
        for &n in &self.nodes {
            if let std::collections::btree_map::Entry::Vacant(e) = self.partition.entry(n) {
                e.insert(next);
                next += 1;
            }
        }
    }

    /// The current partition groups (empty when not partitioned).
    pub fn partition_groups(&self) -> Vec<Vec<NodeId>> {
        let mut by: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for (&n, &g) in &self.partition {
            by.entry(g).or_default().push(n);
        }
        by.into_values().collect()
    }

    /// Remove every partition.
    pub fn heal_partition(&mut self) {
        self.partition.clear();
    }

    /// Block the direction `from → to` only.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Unblock `from → to`.
    pub fn unblock(&mut self, from: NodeId, to: NodeId) {
        self.blocked.remove(&(from, to));
    }

    /// Blocked directions.
    pub fn blocked(&self) -> Vec<(NodeId, NodeId)> {
        self.blocked.iter().copied().collect()
    }

    /// Remove every partition, block and drop rule.
    pub fn heal(&mut self) {
        self.partition.clear();
        self.blocked.clear();
        self.rules.clear();
        self.tampers.clear();
    }

    /// Add a scripted drop rule.
    pub fn add_drop_rule(&mut self, rule: DropRule) {
        self.rules.push(rule);
    }

    /// Remove every scripted drop rule.
    pub fn clear_drop_rules(&mut self) {
        self.rules.clear();
    }

    /// Add a scripted corruption.
    pub fn add_tamper_rule(&mut self, rule: TamperRule) {
        self.tampers.push(rule);
    }

    /// `frame`, edited by the first tamper rule it matches.
    fn tampered(&mut self, from: NodeId, frame: &Frame) -> Frame {
        let kind = frame_kind(frame);
        let Some(r) = self.tampers.iter_mut().find(|r| {
            r.count > 0
                && (r.kind.is_none() || r.kind == kind)
                && (r.from.is_none() || r.from == Some(from))
        }) else {
            return frame.clone();
        };
        r.count -= 1;
        let mut bytes = frame.to_vec();
        (r.edit)(&mut bytes);
        // Corruption the integrity check missed (before it existed, or a
        // bug behind it): what the engine's own distrust must survive.
        cpg_core::wire::seal(&mut bytes);
        self.tampers.retain(|r| r.count > 0);
        self.stats.tampered += 1;
        bytes.into()
    }

    /// Start (or restart) capturing every normal frame sent.
    pub fn start_capture(&mut self) {
        self.capture = Some(Vec::new());
    }

    /// Stop capturing and return what was captured: (sender, destination, frame).
    pub fn take_capture(&mut self) -> Vec<(NodeId, Dest, Frame)> {
        self.capture.take().unwrap_or_default()
    }

    /// The last frames engines sent (at most 512, oldest first): (sender,
    /// destination, frame). The replay fault draws from these; the engine
    /// fuzz target mutates them into plausible forgeries.
    pub fn history(
        &self,
    ) -> impl DoubleEndedIterator<Item = &(NodeId, Dest, Frame)> + ExactSizeIterator + '_ {
        self.history.iter()
    }

    /// The earliest time a packet is ready, with its id.
    pub fn next_ready(&self) -> Option<(Instant, u64)> {
        self.queue.keys().next().copied()
    }

    /// Remove the earliest packet if it is ready by `now`. A packet whose
    /// link was cut while it was in flight is dropped here (counted) and
    /// `Some(None)` is returned.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Option<InFlight>> {
        let (&key, _) = self.queue.iter().next()?;
        if key.0 > now {
            return None;
        }
        let p = self.queue.remove(&key)?;
        if p.kind != PacketKind::Loopback && !self.connected(p.from, p.to) && p.from != ALIEN_NODE {
            self.stats.cut += 1;
            return Some(None);
        }
        self.stats.delivered += 1;
        Some(Some(p))
    }

    /// Drop every packet in flight.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// When a copy of `len` bytes `from` sends at `now` is out on its link
    /// (`now` itself without a link speed).
    fn transmit(&mut self, from: NodeId, now: Instant, len: usize) -> Instant {
        let bps = self.faults.link_bits_per_sec;
        if bps == 0 {
            return now;
        }
        let bits = (len + WIRE_OVERHEAD) as u128 * 8;
        let ns = (bits * 1_000_000_000).div_ceil(u128::from(bps));
        let start = self.link_free.get(&from).map_or(now, |&t| t.max(now));
        let done = start + Duration(u64::try_from(ns).unwrap_or(u64::MAX));
        self.link_free.insert(from, done);
        done
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> Duration {
        let mut d = self.faults.delay_base.0;
        if self.faults.jitter_mean.0 > 0 {
            let u: f64 = rng.gen_range(0.0..1.0);
            let x = -(1.0 - u).ln() * self.faults.jitter_mean.0 as f64;
            // Cap the tail at 50 means so one packet cannot stall a run.
            d += x.min(self.faults.jitter_mean.0 as f64 * 50.0) as u64;
        }
        Duration(d)
    }

    fn enqueue(&mut self, at: Instant, p: InFlight) {
        self.stats.sent += 1;
        self.queue.insert((at, self.next_id), p);
        self.next_id += 1;
    }

    /// Put a packet on the wire as-is (scenarios): no faults but partitions.
    pub fn inject(
        &mut self,
        now: Instant,
        from: NodeId,
        to: NodeId,
        frame: Frame,
        delay: Duration,
    ) {
        let p = InFlight {
            from,
            to,
            frame,
            kind: PacketKind::Injected,
            sent_at: now,
        };
        self.enqueue(now + delay, p);
    }

    fn matches_rule(&mut self, from: NodeId, to: NodeId, frame: &[u8]) -> bool {
        let kind = frame_kind(frame);
        for r in self.rules.iter_mut() {
            if r.count > 0
                && (r.kind.is_none() || r.kind == kind)
                && (r.from.is_none() || r.from == Some(from))
                && (r.to.is_none() || r.to == Some(to))
            {
                r.count -= 1;
                return true;
            }
        }
        self.rules.retain(|r| r.count > 0);
        false
    }

    /// Send `frame` from `from` to `dest` at `now`, applying the faults.
    pub fn send(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: Instant,
        from: NodeId,
        dest: Dest,
        frame: Frame,
    ) {
        if let Some(c) = self.capture.as_mut() {
            c.push((from, dest, frame.clone()));
        }
        let targets: Vec<NodeId> = match dest {
            Dest::Node(n) => vec![n],
            Dest::AllOthers => self.nodes.iter().copied().filter(|&n| n != from).collect(),
        };
        for to in targets {
            if to == from {
                // Loopback: never faulted, tiny delay.
                let p = InFlight {
                    from,
                    to,
                    frame: frame.clone(),
                    kind: PacketKind::Loopback,
                    sent_at: now,
                };
                self.enqueue(now + Duration(1_000), p);
                continue;
            }
            if !self.nodes.contains(&to) {
                self.stats.lost += 1;
                continue;
            }
            self.send_one(rng, now, from, to, &frame);
        }
        if self.history.len() == HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back((from, dest, frame));
    }

    fn send_one(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: Instant,
        from: NodeId,
        to: NodeId,
        frame: &Frame,
    ) {
        if self.faults.garbage > 0.0 && rng.gen_bool(self.faults.garbage) {
            let kind = GarbageKind::ALL[rng.gen_range(0..GarbageKind::ALL.len())];
            let bytes = make_garbage(rng, kind, frame, self.cluster_id);
            let sender = if kind == GarbageKind::UnknownSender {
                ALIEN_NODE
            } else {
                from
            };
            let at = now + self.delay(rng);
            self.stats.garbage += 1;
            self.enqueue(
                at,
                InFlight {
                    from: sender,
                    to,
                    frame: bytes,
                    kind: PacketKind::Garbage(kind),
                    sent_at: now,
                },
            );
        }
        if self.faults.replay > 0.0 && !self.history.is_empty() && rng.gen_bool(self.faults.replay)
        {
            // A late copy of an old packet, to a destination it was sent to:
            // a unicast (token, commit token) only to its own destination,
            // since the frame does not name it and no network re-addresses.
            let i = rng.gen_range(0..self.history.len());
            let (old_from, old_dest, old) = self.history[i].clone();
            let old_to = match old_dest {
                Dest::Node(n) => n,
                Dest::AllOthers => to,
            };
            if old_from != old_to {
                let to = old_to;
                let at = now + self.delay(rng);
                self.stats.replayed += 1;
                self.enqueue(
                    at,
                    InFlight {
                        from: old_from,
                        to,
                        frame: old,
                        kind: PacketKind::Replay,
                        sent_at: now,
                    },
                );
            }
        }
        // The sender's link carries the copy whatever becomes of it later.
        let departs = self.transmit(from, now, frame.len());
        if !self.connected(from, to) {
            self.stats.cut += 1;
            return;
        }
        if self.matches_rule(from, to, frame) {
            self.stats.dropped_by_rule += 1;
            return;
        }
        if self.faults.loss > 0.0 && rng.gen_bool(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        let at = departs + self.delay(rng);
        let mut frame = self.tampered(from, frame);
        if self.faults.corrupt > 0.0
            && frame_kind(&frame) != Some(header::KIND_MCAST)
            && !(self.faults.corrupt_resealed && frame_kind(&frame) == Some(header::KIND_COMMIT))
            && frame.len() > header::LEN
            && rng.gen_bool(self.faults.corrupt)
        {
            let mut bytes = frame.to_vec();
            for _ in 0..rng.gen_range(1..=4) {
                let i = rng.gen_range(header::LEN..bytes.len());
                bytes[i] = rng.gen();
            }
            if self.faults.corrupt_resealed {
                cpg_core::wire::seal(&mut bytes);
            }
            frame = bytes.into();
            self.stats.corrupted += 1;
        }
        let frame = &frame;
        self.enqueue(
            at,
            InFlight {
                from,
                to,
                frame: frame.clone(),
                kind: PacketKind::Normal,
                sent_at: now,
            },
        );
        if self.faults.dup > 0.0 && rng.gen_bool(self.faults.dup) {
            let at = now + self.delay(rng);
            self.stats.duplicated += 1;
            self.enqueue(
                at,
                InFlight {
                    from,
                    to,
                    frame: frame.clone(),
                    kind: PacketKind::Duplicate,
                    sent_at: now,
                },
            );
        }
    }
}

/// Build a frame the engine must reject, derived from a real one.
pub fn make_garbage(
    rng: &mut ChaCha8Rng,
    kind: GarbageKind,
    frame: &[u8],
    cluster_id: u32,
) -> Frame {
    let mut b = frame.to_vec();
    if b.len() < header::LEN && kind != GarbageKind::Random && kind != GarbageKind::Truncated {
        b.resize(header::LEN, 0);
    }
    match kind {
        GarbageKind::Random => {
            let n = rng.gen_range(0..200);
            b = (0..n).map(|_| rng.gen()).collect();
            // Make sure the magic is wrong, so it is malformed for certain.
            if b.len() >= 2 && b[0] == 0xC7 && b[1] == 0xC9 {
                b[0] ^= 0xFF;
            }
        }
        GarbageKind::Truncated => {
            let n = if b.is_empty() {
                0
            } else {
                rng.gen_range(0..b.len())
            };
            b.truncate(n);
        }
        GarbageKind::BadMagic => {
            let bit = rng.gen_range(0..16);
            b[bit / 8] ^= 1 << (bit % 8);
        }
        GarbageKind::BadVersion => {
            let v = b[header::VERSION];
            b[header::VERSION] = v.wrapping_add(rng.gen_range(1..=255));
        }
        GarbageKind::UnknownKind => {
            b[header::KIND] = rng.gen_range(6..=255);
        }
        GarbageKind::ForeignCluster => {
            let other = cluster_id ^ rng.gen_range(1..=u32::MAX);
            b[header::CLUSTER].copy_from_slice(&other.to_le_bytes());
        }
        GarbageKind::UnknownSender => {
            b[header::SENDER].copy_from_slice(&ALIEN_NODE.to_le_bytes());
        }
    }
    b.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frame(tag: u8) -> Frame {
        let mut v = vec![0u8; 40];
        v[0] = 0xC7;
        v[1] = 0xC9;
        v[2] = 1;
        v[3] = header::KIND_MCAST;
        v[39] = tag;
        v.into()
    }

    fn drain(net: &mut Network) -> Vec<InFlight> {
        let mut out = Vec::new();
        while let Some((t, _)) = net.next_ready() {
            if let Some(Some(p)) = net.pop_ready(t) {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn all_others_expands_and_loopback_is_exempt() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut f = FaultOptions::none();
        f.loss = 1.0;
        let mut net = Network::new(&[1, 2, 3], f, 7);
        net.send(&mut rng, Instant(0), 1, Dest::AllOthers, frame(1));
        net.send(&mut rng, Instant(0), 1, Dest::Node(1), frame(2));
        let got = drain(&mut net);
        assert_eq!(got.len(), 1, "only the loopback survives 100% loss");
        assert_eq!(
            (got[0].from, got[0].to, got[0].kind),
            (1, 1, PacketKind::Loopback)
        );
        assert_eq!(net.stats.lost, 2);

        let mut net = Network::new(&[1, 2, 3], FaultOptions::none(), 7);
        net.send(&mut rng, Instant(0), 2, Dest::AllOthers, frame(1));
        let mut to: Vec<_> = drain(&mut net).iter().map(|p| p.to).collect();
        to.sort();
        assert_eq!(to, vec![1, 3]);
    }

    #[test]
    fn same_seed_same_schedule() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let f = FaultOptions::swarm(&mut rng);
            let mut net = Network::new(&[1, 2, 3, 4], f, 7);
            for i in 0..200u64 {
                net.send(
                    &mut rng,
                    Instant(i * 1000),
                    (i % 4 + 1) as u32,
                    Dest::AllOthers,
                    frame(i as u8),
                );
            }
            drain(&mut net)
                .iter()
                .map(|p| (p.from, p.to, p.frame.get(39).copied(), p.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn jitter_reorders_and_zero_jitter_keeps_fifo() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut f = FaultOptions::none();
        f.jitter_mean = Duration::from_millis(5);
        let mut net = Network::new(&[1, 2], f.clone(), 7);
        for i in 0..100u8 {
            net.send(
                &mut rng,
                Instant(u64::from(i) * 10_000),
                1,
                Dest::Node(2),
                frame(i),
            );
        }
        let order: Vec<u8> = drain(&mut net).iter().map(|p| p.frame[39]).collect();
        assert_eq!(order.len(), 100);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "jitter must reorder");

        f.jitter_mean = Duration::ZERO;
        let mut net = Network::new(&[1, 2], f, 7);
        for i in 0..100u8 {
            net.send(
                &mut rng,
                Instant(u64::from(i) * 10_000),
                1,
                Dest::Node(2),
                frame(i),
            );
        }
        let order: Vec<u8> = drain(&mut net).iter().map(|p| p.frame[39]).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_link_speed_queues_each_senders_copies() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut f = FaultOptions::none();
        f.jitter_mean = Duration::ZERO;
        f.delay_base = Duration::from_micros(50);
        // 8 Gbit/s: one byte per nanosecond.
        f.link_bits_per_sec = 8_000_000_000;
        let mut net = Network::new(&[1, 2, 3], f, 7);
        let wire = (40 + WIRE_OVERHEAD) as u64;
        // A multicast is one copy per peer, one after the other on node 1's
        // link; node 2's link is its own; node 1's next frame waits its turn.
        net.send(&mut rng, Instant(0), 1, Dest::AllOthers, frame(1));
        net.send(&mut rng, Instant(0), 2, Dest::Node(3), frame(2));
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), frame(3));
        let mut got: Vec<(u64, NodeId, NodeId, u8)> = Vec::new();
        while let Some((t, _)) = net.next_ready() {
            if let Some(Some(p)) = net.pop_ready(t) {
                got.push((t.0, p.from, p.to, p.frame[39]));
            }
        }
        let d = 50_000;
        assert_eq!(
            got,
            vec![
                (wire + d, 1, 2, 1),
                (wire + d, 2, 3, 2),
                (2 * wire + d, 1, 3, 1),
                (3 * wire + d, 1, 2, 3),
            ]
        );
        // A link idle since then starts afresh.
        net.send(&mut rng, Instant(1_000_000), 1, Dest::Node(3), frame(4));
        assert_eq!(
            net.next_ready().map(|x| x.0),
            Some(Instant(1_000_000 + wire + d))
        );
    }

    #[test]
    fn loss_and_dup_rates_are_roughly_right() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut f = FaultOptions::none();
        f.loss = 0.2;
        f.dup = 0.1;
        let mut net = Network::new(&[1, 2], f, 7);
        for i in 0..10_000u64 {
            net.send(&mut rng, Instant(i), 1, Dest::Node(2), frame(0));
        }
        let n = drain(&mut net).len();
        assert!(
            (1_700..2_300).contains(&(net.stats.lost as usize)),
            "lost {}",
            net.stats.lost
        );
        assert!(
            (600..1_000).contains(&(net.stats.duplicated as usize)),
            "dup {}",
            net.stats.duplicated
        );
        assert_eq!(n as u64, 10_000 - net.stats.lost + net.stats.duplicated);
    }

    #[test]
    fn partitions_and_one_way_blocks() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut net = Network::new(&[1, 2, 3, 4], FaultOptions::none(), 7);
        net.partition(&[vec![1, 2], vec![3]]);
        assert!(
            net.connected(1, 2)
                && !net.connected(1, 3)
                && !net.connected(3, 4)
                && !net.connected(4, 1)
        );
        assert_eq!(net.partition_groups(), vec![vec![1, 2], vec![3], vec![4]]);
        net.send(&mut rng, Instant(0), 1, Dest::AllOthers, frame(0));
        let got: Vec<_> = drain(&mut net).iter().map(|p| p.to).collect();
        assert_eq!(got, vec![2]);

        net.heal_partition();
        net.block(1, 2);
        assert!(!net.connected(1, 2) && net.connected(2, 1));
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), frame(0));
        net.send(&mut rng, Instant(0), 2, Dest::Node(1), frame(0));
        let got: Vec<_> = drain(&mut net).iter().map(|p| (p.from, p.to)).collect();
        assert_eq!(got, vec![(2, 1)]);

        // A cut made while a packet is in flight drops it on arrival.
        net.heal();
        net.send(&mut rng, Instant(0), 3, Dest::Node(4), frame(0));
        net.partition(&[vec![3], vec![4]]);
        assert!(drain(&mut net).is_empty());
        assert_eq!(net.stats.cut, 4);
    }

    #[test]
    fn drop_rules_hit_the_named_kind_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut net = Network::new(&[1, 2], FaultOptions::none(), 7);
        net.add_drop_rule(DropRule {
            kind: Some(header::KIND_TOKEN),
            from: None,
            to: Some(2),
            count: 1,
        });
        let mut tok = frame(0).to_vec();
        tok[3] = header::KIND_TOKEN;
        let tok: Frame = tok.into();
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), frame(1));
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), tok.clone());
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), tok);
        assert_eq!(drain(&mut net).len(), 2);
        assert_eq!(net.stats.dropped_by_rule, 1);
    }

    #[test]
    fn garbage_is_always_malformed_in_the_header() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let real = frame(0);
        for kind in GarbageKind::ALL {
            for _ in 0..50 {
                let g = make_garbage(&mut rng, kind, &real, 7);
                let bad = g.len() < real.len()
                    || g[0..2] != real[0..2]
                    || g[2] != real[2]
                    || g[3] != real[3]
                    || g[4..8] != real[4..8]
                    || g[8..12] != real[8..12];
                assert!(bad, "{kind:?} produced a valid-looking frame");
            }
        }
    }

    #[test]
    fn capture_and_replay_history() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut f = FaultOptions::none();
        f.replay = 1.0;
        let mut net = Network::new(&[1, 2, 3], f, 7);
        net.start_capture();
        net.send(&mut rng, Instant(0), 1, Dest::Node(2), frame(1));
        net.send(&mut rng, Instant(0), 1, Dest::Node(3), frame(2));
        assert_eq!(net.take_capture().len(), 2);
        let got = drain(&mut net);
        assert!(got.iter().any(|p| p.kind == PacketKind::Replay));
    }
}

//! Invariant checkers (`docs/ARCHITECTURE.md` "Invariants the tests hold us to",
//! `docs/spec/totem.md` §9).
//!
//! Each checker is a struct fed every event of every node
//! ([`Checker::on_event`]) plus a few harness facts (start, crash, persisted
//! ring seq, accepted submits). A broken invariant comes back as a typed
//! [`Violation`]; checkers never panic, the simulator does (with the seed).
//!
//! Checkers never touch an engine: what they need to ask of the live system
//! (is a node up, which ring is it in, does it hold a message) goes through
//! the small [`World`] trait, so `tests/checkers.rs` feeds them synthetic
//! traces with a [`FakeWorld`] and shows each one catching a planted bug.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cpg_core::engine::{ConfigChange, Event, TraceDeliver};
use cpg_core::{GroupName, Guarantee, MemberAddr, NodeId, RingId};

use crate::network::Frame;
use crate::payload::{self, MsgKey};

/// The event type the simulator's engines emit.
pub type SimEvent = Event<Frame>;

/// What went wrong, as a matchable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two installers of one ring report different member lists.
    RingMembersDiffer,
    /// A member list (ring or transitional) is not strictly ascending.
    MembersUnsorted,
    /// A ring's rep is not its lowest member.
    RepNotLowest,
    /// A node installed a ring it is not a member of.
    InstallerNotMember,
    /// Config events out of the Transitional → Regular rhythm.
    ConfigOutOfOrder,
    /// Transitional set not ⊆ previous regular ∩ next regular.
    TransitionalNotSubset,
    /// Transitional set without the installer (after its first ring).
    TransitionalMissingSelf,
    /// `left` ≠ previous − transitional.
    LeftWrong,
    /// `joined` ≠ next − transitional.
    JoinedWrong,
    /// Nodes making the same change (prev ring → new ring) disagree on it.
    ConfigChangeDiffers,
    /// A node installed a ring seq not above its previous one.
    RingSeqNotIncreasing,
    /// A node installed a ring whose seq it never persisted.
    RingSeqNotPersisted,
    /// Persisted ring seqs of a node did not strictly increase.
    PersistNotIncreasing,
    /// (ring, seq) names two different messages.
    SeqConflict,
    /// A node delivered out of (ring, seq) order.
    DeliveryOutOfOrder,
    /// A delivery in a configuration it does not belong to.
    DeliveryOutsideConfig,
    /// Nodes moving together delivered different sets.
    VirtualSynchrony,
    /// A payload that is not whole or was modified.
    Corrupt,
    /// A delivery of something never accepted, or with wrong metadata.
    Invented,
    /// The same message delivered twice to one node.
    Duplicate,
    /// Per-sender FIFO broken.
    FifoBroken,
    /// A SAFE message delivered before a member held it.
    SafeNotHeld,
    /// A group member list not sorted.
    GroupMembersUnsorted,
    /// Members moving together saw different confchg/deliveries at one point.
    GroupChangeMismatch,
    /// A confchg whose members ≠ previous − left + joined.
    GroupChangeInconsistent,
    /// An accepted message never delivered to its own sender.
    NotSelfDelivered,
    /// Members of a converged ring disagree about delivered messages.
    NotDeliveredToMember,
    /// The cluster did not converge within the bound.
    NoConvergence,
    /// A malformed frame was not counted as dropped.
    BadInputNotCounted,
    /// A state change the protocol does not allow.
    IllegalTransition,
    /// A ring seq in use that was never persisted.
    RingSeqAheadOfDisk,
    /// The engine panicked.
    EnginePanic,
    /// The engine refused to start or answered an unexpected error.
    EngineError,
    /// A documented API policy was broken (e.g. mcast accepted for a non-member).
    PolicyViolation,
    /// A timeout that never moves forward.
    TimerLivelock,
    /// A datagram larger than the path allows (netmtu − IPv4/UDP headers):
    /// the kernel would fragment it.
    DatagramTooBig,
    /// The run exceeded its step or packet budget (a message storm or livelock).
    Runaway,
    /// A zero-copy message from a buffer whose headers stay outside it was
    /// sent or delivered to its sender other than by reference to it.
    PayloadCopied,
}

/// A broken invariant: what, where, and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// The node that observed it, if one.
    pub node: Option<NodeId>,
    /// Evidence.
    pub detail: String,
}

impl Violation {
    /// A violation seen by `node`.
    pub fn at(kind: ViolationKind, node: NodeId, detail: impl Into<String>) -> Violation {
        Violation {
            kind,
            node: Some(node),
            detail: detail.into(),
        }
    }
    /// A violation not tied to one node.
    pub fn global(kind: ViolationKind, detail: impl Into<String>) -> Violation {
        Violation {
            kind,
            node: None,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "{:?} at node {}: {}", self.kind, n, self.detail),
            None => write!(f, "{:?}: {}", self.kind, self.detail),
        }
    }
}

/// What checkers may ask of the running system.
pub trait World {
    /// The node is up (its current incarnation runs).
    fn is_live(&self, node: NodeId) -> bool;
    /// The ring the node last entered (`Engine::ring_id`), if up.
    fn current_ring(&self, node: NodeId) -> Option<RingId>;
    /// The node holds (or held and safely released) message `seq` of `ring`.
    fn holds(&self, node: NodeId, ring: RingId, seq: u32) -> bool;
    /// The node's Totem state, if known (`None`: treat as OPERATIONAL).
    fn state(&self, _node: NodeId) -> Option<cpg_core::engine::State> {
        None
    }
}

/// A [`World`] made of plain sets, for synthetic traces.
#[derive(Debug, Clone, Default)]
pub struct FakeWorld {
    /// Nodes that are up.
    pub live: BTreeSet<NodeId>,
    /// `current_ring` answers.
    pub rings: BTreeMap<NodeId, RingId>,
    /// `holds` answers true for these.
    pub held: BTreeSet<(NodeId, RingId, u32)>,
}

impl World for FakeWorld {
    fn is_live(&self, node: NodeId) -> bool {
        self.live.contains(&node)
    }
    fn current_ring(&self, node: NodeId) -> Option<RingId> {
        self.rings.get(&node).copied()
    }
    fn holds(&self, node: NodeId, ring: RingId, seq: u32) -> bool {
        self.held.contains(&(node, ring, seq))
    }
}

/// One invariant family, fed the event streams of all nodes.
pub trait Checker {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// A node (re)started; `persisted` says whether its initial ring seq came
    /// from its disk (else from a boot counter).
    fn on_start(&mut self, _node: NodeId, _incarnation: u32, _persisted: bool) {}
    /// A node crashed: its volatile state is gone.
    fn on_crash(&mut self, _node: NodeId) {}
    /// A node asked for a ring seq to be made durable.
    fn on_persist(&mut self, _node: NodeId, _seq: u64) -> Result<(), Violation> {
        Ok(())
    }
    /// `submit(Mcast)` returned CS_OK for this message.
    fn on_accepted(&mut self, _key: MsgKey, _sent: &Sent) {}
    /// An event came out of `node`'s engine.
    fn on_event(&mut self, node: NodeId, ev: &SimEvent, world: &dyn World)
        -> Result<(), Violation>;
}

/// What was accepted for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Group.
    pub group: GroupName,
    /// Guarantee.
    pub guarantee: Guarantee,
    /// Digest of the payload bytes.
    pub digest: u64,
    /// Payload length.
    pub len: usize,
}

/// The configuration a node is in, from its own Config events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfView {
    /// Last installed regular configuration.
    pub regular: Option<(RingId, Vec<NodeId>)>,
    /// Set between a Transitional event and its Regular.
    pub transitional: Option<(RingId, Vec<NodeId>)>,
}

impl ConfView {
    /// Apply a config event.
    pub fn apply(&mut self, c: &ConfigChange) {
        match c {
            ConfigChange::Transitional {
                ring_id, members, ..
            } => {
                self.transitional = Some((*ring_id, members.to_vec()));
            }
            ConfigChange::Regular {
                ring_id, members, ..
            } => {
                self.regular = Some((*ring_id, members.to_vec()));
                self.transitional = None;
            }
        }
    }
    /// Id of the last installed regular ring.
    pub fn regular_ring(&self) -> Option<RingId> {
        self.regular.as_ref().map(|r| r.0)
    }
}

fn is_sorted_strict<T: Ord>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

fn minus(a: &[NodeId], b: &[NodeId]) -> Vec<NodeId> {
    a.iter().copied().filter(|x| !b.contains(x)).collect()
}

fn subset(a: &[NodeId], b: &[NodeId]) -> bool {
    a.iter().all(|x| b.contains(x))
}

fn short_set<T: fmt::Debug>(it: impl Iterator<Item = T>) -> String {
    let v: Vec<T> = it.collect();
    let n = v.len();
    let shown: Vec<&T> = v.iter().take(8).collect();
    if n > 8 {
        format!("{shown:?}.. ({n} total)")
    } else {
        format!("{shown:?}")
    }
}

// ---------------------------------------------------------------------------
// Ring / configuration
// ---------------------------------------------------------------------------

/// (previous regular ring, transitional members, left) between a node's
/// transitional and regular configuration events.
type PendingTrans = (Option<RingId>, Vec<NodeId>, Vec<NodeId>);
/// (first reporter, transitional members, left, joined) of one change.
type RecordedChange = (NodeId, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>);

/// Ring ids and configuration changes (`docs/spec/totem.md` §9, global items 2–4).
#[derive(Debug, Clone, Default)]
pub struct RingChecker {
    views: BTreeMap<NodeId, ConfView>,
    rings: BTreeMap<RingId, (NodeId, Vec<NodeId>)>,
    last_ring: BTreeMap<NodeId, RingId>,
    persisted: BTreeMap<NodeId, BTreeSet<u64>>,
    last_persist: BTreeMap<NodeId, u64>,
    pending: BTreeMap<NodeId, PendingTrans>,
    changes: BTreeMap<(RingId, RingId), RecordedChange>,
    /// Regular configurations installed (all nodes).
    pub installs: u64,
}

impl Checker for RingChecker {
    fn name(&self) -> &'static str {
        "ring"
    }
    fn on_start(&mut self, node: NodeId, _inc: u32, persisted: bool) {
        self.views.remove(&node);
        self.pending.remove(&node);
        if !persisted {
            self.last_ring.remove(&node);
            self.last_persist.remove(&node);
        }
    }
    fn on_crash(&mut self, node: NodeId) {
        self.views.remove(&node);
        self.pending.remove(&node);
    }
    fn on_persist(&mut self, node: NodeId, seq: u64) -> Result<(), Violation> {
        if let Some(&last) = self.last_persist.get(&node) {
            if seq <= last {
                return Err(Violation::at(
                    ViolationKind::PersistNotIncreasing,
                    node,
                    format!("persisted ring seq {seq} after {last}"),
                ));
            }
        }
        self.last_persist.insert(node, seq);
        self.persisted.entry(node).or_default().insert(seq);
        Ok(())
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        _world: &dyn World,
    ) -> Result<(), Violation> {
        let Event::Config(c) = ev else { return Ok(()) };
        let c: &ConfigChange = c;
        let view = self.views.entry(node).or_default().clone();
        match c {
            ConfigChange::Transitional {
                ring_id,
                members,
                left,
            } => {
                let t: Vec<NodeId> = members.to_vec();
                let left: Vec<NodeId> = left.to_vec();
                if view.transitional.is_some() {
                    return Err(Violation::at(
                        ViolationKind::ConfigOutOfOrder,
                        node,
                        format!("second transitional config ({ring_id}) before a regular one"),
                    ));
                }
                if !is_sorted_strict(&t) || !is_sorted_strict(&left) {
                    return Err(Violation::at(
                        ViolationKind::MembersUnsorted,
                        node,
                        format!("transitional {ring_id}: members {t:?} left {left:?}"),
                    ));
                }
                match &view.regular {
                    None => {
                        if !t.is_empty() || !left.is_empty() {
                            return Err(Violation::at(
                                ViolationKind::TransitionalNotSubset,
                                node,
                                format!("first transitional config {ring_id} after start is {t:?} left {left:?}, expected empty"),
                            ));
                        }
                    }
                    Some((prev, pm)) => {
                        if !t.contains(&node) {
                            return Err(Violation::at(
                                ViolationKind::TransitionalMissingSelf,
                                node,
                                format!(
                                    "transitional {ring_id} members {t:?} (previous {prev} {pm:?})"
                                ),
                            ));
                        }
                        if !subset(&t, pm) {
                            return Err(Violation::at(
                                ViolationKind::TransitionalNotSubset,
                                node,
                                format!("transitional {ring_id} {t:?} not within previous regular {prev} {pm:?}"),
                            ));
                        }
                        let expect = minus(pm, &t);
                        if left != expect {
                            return Err(Violation::at(
                                ViolationKind::LeftWrong,
                                node,
                                format!("transitional {ring_id}: left {left:?}, previous {prev} {pm:?} − {t:?} = {expect:?}"),
                            ));
                        }
                    }
                }
                self.pending.insert(node, (view.regular_ring(), t, left));
            }
            ConfigChange::Regular {
                ring_id,
                members,
                joined,
            } => {
                let m: Vec<NodeId> = members.to_vec();
                let joined: Vec<NodeId> = joined.to_vec();
                let Some((trans_ring, _)) = &view.transitional else {
                    return Err(Violation::at(
                        ViolationKind::ConfigOutOfOrder,
                        node,
                        format!("regular config {ring_id} without a transitional one before it"),
                    ));
                };
                if trans_ring != ring_id {
                    return Err(Violation::at(
                        ViolationKind::ConfigOutOfOrder,
                        node,
                        format!(
                            "regular config {ring_id} after transitional config for {trans_ring}"
                        ),
                    ));
                }
                if !is_sorted_strict(&m) || !is_sorted_strict(&joined) {
                    return Err(Violation::at(
                        ViolationKind::MembersUnsorted,
                        node,
                        format!("regular {ring_id}: members {m:?} joined {joined:?}"),
                    ));
                }
                if m.first() != Some(&ring_id.rep) {
                    return Err(Violation::at(
                        ViolationKind::RepNotLowest,
                        node,
                        format!("ring {ring_id} members {m:?}"),
                    ));
                }
                if !m.contains(&node) {
                    return Err(Violation::at(
                        ViolationKind::InstallerNotMember,
                        node,
                        format!("installed ring {ring_id} with members {m:?}"),
                    ));
                }
                let (prev, t, left) = self.pending.remove(&node).unwrap_or_default();
                if !subset(&t, &m) {
                    return Err(Violation::at(
                        ViolationKind::TransitionalNotSubset,
                        node,
                        format!("transitional {t:?} not within next regular {ring_id} {m:?}"),
                    ));
                }
                let expect = minus(&m, &t);
                if joined != expect {
                    return Err(Violation::at(
                        ViolationKind::JoinedWrong,
                        node,
                        format!("regular {ring_id}: joined {joined:?}, members {m:?} − transitional {t:?} = {expect:?}"),
                    ));
                }
                if let Some(last) = self.last_ring.get(&node) {
                    if ring_id.seq <= last.seq {
                        return Err(Violation::at(
                            ViolationKind::RingSeqNotIncreasing,
                            node,
                            format!("installed {ring_id} after {last}"),
                        ));
                    }
                }
                if !self
                    .persisted
                    .get(&node)
                    .is_some_and(|s| s.contains(&ring_id.seq))
                {
                    return Err(Violation::at(
                        ViolationKind::RingSeqNotPersisted,
                        node,
                        format!(
                            "installed {ring_id} but never persisted seq {}",
                            ring_id.seq
                        ),
                    ));
                }
                match self.rings.get(ring_id) {
                    Some((first, fm)) if *fm != m => {
                        return Err(Violation::at(
                            ViolationKind::RingMembersDiffer,
                            node,
                            format!("ring {ring_id}: members {m:?} here, {fm:?} at node {first}"),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.rings.insert(*ring_id, (node, m.clone()));
                    }
                }
                if let Some(prev) = prev {
                    let key = (prev, *ring_id);
                    match self.changes.get(&key) {
                        Some((first, ft, fl, fj)) if (ft, fl, fj) != (&t, &left, &joined) => {
                            return Err(Violation::at(
                                ViolationKind::ConfigChangeDiffers,
                                node,
                                format!(
                                    "change {prev} -> {ring_id}: transitional {t:?} left {left:?} joined {joined:?} here, \
                                     {ft:?} / {fl:?} / {fj:?} at node {first}"
                                ),
                            ));
                        }
                        Some(_) => {}
                        None => {
                            self.changes.insert(key, (node, t, left, joined));
                        }
                    }
                }
                self.last_ring.insert(node, *ring_id);
                self.installs += 1;
            }
        }
        self.views.entry(node).or_default().apply(c);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Total order / agreement
// ---------------------------------------------------------------------------

/// (ring, seq) names one message everywhere; per node deliveries ascend in
/// (ring seq, seq), which makes common messages ordered alike everywhere;
/// each delivery lies in the configuration it claims.
#[derive(Debug, Clone, Default)]
pub struct OrderChecker {
    views: BTreeMap<NodeId, ConfView>,
    names: BTreeMap<(RingId, u32), (NodeId, NodeId, u64, bool)>,
    last: BTreeMap<NodeId, (u64, NodeId, u32)>,
    /// Totem deliveries seen (all nodes).
    pub deliveries: u64,
}

impl Checker for OrderChecker {
    fn name(&self) -> &'static str {
        "order"
    }
    fn on_start(&mut self, node: NodeId, _inc: u32, persisted: bool) {
        self.views.remove(&node);
        if !persisted {
            self.last.remove(&node);
        }
    }
    fn on_crash(&mut self, node: NodeId) {
        self.views.remove(&node);
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        _world: &dyn World,
    ) -> Result<(), Violation> {
        match ev {
            Event::Config(c) => {
                let c: &ConfigChange = c;
                self.views.entry(node).or_default().apply(c);
                Ok(())
            }
            Event::Trace(t) => {
                self.deliveries += 1;
                let view = self.views.get(&node).cloned().unwrap_or_default();
                let installed = view.regular_ring();
                if installed != Some(t.ring_id) || t.transitional != view.transitional.is_some() {
                    return Err(Violation::at(
                        ViolationKind::DeliveryOutsideConfig,
                        node,
                        format!(
                            "{} ({}, {}) from {} while installed ring is {:?}{}",
                            if t.transitional {
                                "transitional delivery"
                            } else {
                                "regular delivery"
                            },
                            t.ring_id,
                            t.seq,
                            t.sender,
                            installed.map(|r| r.to_string()),
                            if view.transitional.is_some() {
                                " (in its transitional config)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                match self.names.get(&(t.ring_id, t.seq)) {
                    Some(&(first, sender, digest, safe)) => {
                        if (sender, digest, safe) != (t.sender, t.digest, t.safe) {
                            return Err(Violation::at(
                                ViolationKind::SeqConflict,
                                node,
                                format!(
                                    "({}, {}) is sender {} digest {:016x} safe {} here, sender {} digest {:016x} safe {} at node {}",
                                    t.ring_id, t.seq, t.sender, t.digest, t.safe, sender, digest, safe, first
                                ),
                            ));
                        }
                    }
                    None => {
                        self.names
                            .insert((t.ring_id, t.seq), (node, t.sender, t.digest, t.safe));
                    }
                }
                let key = (t.ring_id.seq, t.ring_id.rep, t.seq);
                if let Some(&last) = self.last.get(&node) {
                    // Within a ring, u32 serial-number order (seqs may wrap).
                    let not_after = if (last.0, last.1) == (key.0, key.1) {
                        (key.2.wrapping_sub(last.2) as i32) <= 0
                    } else {
                        (key.0, key.1) < (last.0, last.1)
                    };
                    if not_after {
                        return Err(Violation::at(
                            ViolationKind::DeliveryOutOfOrder,
                            node,
                            format!(
                                "delivered ({}, {}) after ({:x}.{:x}, {})",
                                t.ring_id, t.seq, last.1, last.0, last.2
                            ),
                        ));
                    }
                }
                self.last.insert(node, key);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Virtual synchrony / failure atomicity
// ---------------------------------------------------------------------------

type VsKey = (RingId, RingId, Vec<NodeId>);
type MsgSet = BTreeSet<(RingId, u32)>;

#[derive(Debug, Clone, Default)]
struct VsRecord {
    regular: Option<(NodeId, MsgSet)>,
    transitional: Option<(NodeId, MsgSet)>,
}

/// Nodes with the same (previous regular ring, transitional configuration)
/// delivered identical sets in that regular and in that transitional config.
#[derive(Debug, Clone, Default)]
pub struct VsChecker {
    views: BTreeMap<NodeId, ConfView>,
    open_regular: BTreeMap<NodeId, MsgSet>,
    open_trans: BTreeMap<NodeId, (VsKey, MsgSet)>,
    records: BTreeMap<VsKey, VsRecord>,
    /// Configuration pairs compared between at least two nodes.
    pub compared: u64,
}

fn compare_sets(
    slot: &mut Option<(NodeId, MsgSet)>,
    node: NodeId,
    set: MsgSet,
    key: &VsKey,
    phase: &str,
    compared: &mut u64,
) -> Result<(), Violation> {
    match slot {
        None => {
            *slot = Some((node, set));
            Ok(())
        }
        Some((first, fset)) => {
            *compared += 1;
            if *fset == set {
                return Ok(());
            }
            let only_here = set.difference(fset).copied();
            let only_there = fset.difference(&set).copied();
            Err(Violation::at(
                ViolationKind::VirtualSynchrony,
                node,
                format!(
                    "moving from {} to {} with transitional {:?}: in the {phase} configuration delivered {} only here, {} only at node {first}",
                    key.0,
                    key.1,
                    key.2,
                    short_set(only_here.map(|(r, s)| format!("{r}/{s}"))),
                    short_set(only_there.map(|(r, s)| format!("{r}/{s}")))
                ),
            ))
        }
    }
}

impl VsChecker {
    /// Whether every pair of `nodes` in the same regular configuration (and
    /// not in a transitional one) has delivered the same set so far: true
    /// once the ring is quiescent.
    pub fn regular_sets_agree(&self, nodes: &[NodeId]) -> Result<(), String> {
        let mut by_ring: BTreeMap<RingId, (NodeId, &MsgSet)> = BTreeMap::new();
        for &n in nodes {
            let Some(v) = self.views.get(&n) else {
                continue;
            };
            if v.transitional.is_some() {
                continue;
            }
            let Some(r) = v.regular_ring() else { continue };
            let empty = MsgSet::new();
            let set = self.open_regular.get(&n).unwrap_or(&empty);
            match by_ring.get(&r) {
                None => {
                    if let Some(s) = self.open_regular.get(&n) {
                        by_ring.insert(r, (n, s));
                    }
                }
                Some((m, s)) => {
                    if *s != set {
                        return Err(format!(
                            "ring {r}: node {n} delivered {} not at {m}; {m} delivered {} not at {n}",
                            short_set(set.difference(s).map(|(r, q)| format!("{r}/{q}"))),
                            short_set(s.difference(set).map(|(r, q)| format!("{r}/{q}")))
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Checker for VsChecker {
    fn name(&self) -> &'static str {
        "virtual-synchrony"
    }
    fn on_start(&mut self, node: NodeId, _inc: u32, _persisted: bool) {
        self.on_crash(node);
    }
    fn on_crash(&mut self, node: NodeId) {
        self.views.remove(&node);
        self.open_regular.remove(&node);
        self.open_trans.remove(&node);
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        _world: &dyn World,
    ) -> Result<(), Violation> {
        match ev {
            Event::Trace(t) => {
                let v = self.views.entry(node).or_default();
                if v.transitional.is_some() {
                    if let Some((_, s)) = self.open_trans.get_mut(&node) {
                        s.insert((t.ring_id, t.seq));
                    }
                } else {
                    self.open_regular
                        .entry(node)
                        .or_default()
                        .insert((t.ring_id, t.seq));
                }
                Ok(())
            }
            Event::Config(c) => {
                let c: &ConfigChange = c;
                let prev = self.views.entry(node).or_default().regular_ring();
                self.views.entry(node).or_default().apply(c);
                match c {
                    ConfigChange::Transitional {
                        ring_id, members, ..
                    } => {
                        let set = self.open_regular.remove(&node).unwrap_or_default();
                        let Some(prev) = prev else {
                            self.open_trans.remove(&node);
                            return Ok(());
                        };
                        let key: VsKey = (prev, *ring_id, members.to_vec());
                        let rec = self.records.entry(key.clone()).or_default();
                        let r = compare_sets(
                            &mut rec.regular,
                            node,
                            set,
                            &key,
                            "regular",
                            &mut self.compared,
                        );
                        self.open_trans.insert(node, (key, MsgSet::new()));
                        r
                    }
                    ConfigChange::Regular { .. } => {
                        self.open_regular.insert(node, MsgSet::new());
                        let Some((key, set)) = self.open_trans.remove(&node) else {
                            return Ok(());
                        };
                        let rec = self.records.entry(key.clone()).or_default();
                        compare_sets(
                            &mut rec.transitional,
                            node,
                            set,
                            &key,
                            "transitional",
                            &mut self.compared,
                        )
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// Application messages: FIFO, no duplicates, no invention, whole
// ---------------------------------------------------------------------------

/// Application deliveries: whole and unmodified, accepted before, never
/// twice to one node, FIFO per (sender, group); tracks self-delivery.
#[derive(Debug, Clone, Default)]
pub struct FifoChecker {
    accepted: BTreeMap<MsgKey, Sent>,
    seen: BTreeMap<NodeId, BTreeSet<MsgKey>>,
    last: BTreeMap<(NodeId, NodeId, u32, u32, GroupName), u64>,
    incarnation: BTreeMap<NodeId, u32>,
    own_pending: BTreeMap<NodeId, BTreeSet<MsgKey>>,
    /// Application deliveries seen (all nodes).
    pub delivered: u64,
    /// Of which larger than one frame's worth (fragmented).
    pub delivered_large: u64,
}

impl FifoChecker {
    /// Messages `node` accepted in its current incarnation and has not yet
    /// delivered to itself.
    pub fn undelivered_own(&self, node: NodeId) -> Vec<MsgKey> {
        self.own_pending
            .get(&node)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
    /// How many messages [`FifoChecker::undelivered_own`] would list,
    /// without listing them (a load generator asks after every step).
    pub fn undelivered_own_count(&self, node: NodeId) -> usize {
        self.own_pending.get(&node).map_or(0, BTreeSet::len)
    }
    /// Nodes (current incarnations) that delivered `key`.
    pub fn delivered_by(&self, key: &MsgKey) -> Vec<NodeId> {
        self.seen
            .iter()
            .filter(|(_, s)| s.contains(key))
            .map(|(n, _)| *n)
            .collect()
    }
    /// What was accepted for `key`.
    pub fn sent(&self, key: &MsgKey) -> Option<&Sent> {
        self.accepted.get(key)
    }
    /// Accepted messages in total.
    pub fn accepted_count(&self) -> usize {
        self.accepted.len()
    }
}

impl Checker for FifoChecker {
    fn name(&self) -> &'static str {
        "fifo"
    }
    fn on_start(&mut self, node: NodeId, incarnation: u32, _persisted: bool) {
        self.on_crash(node);
        self.incarnation.insert(node, incarnation);
    }
    fn on_crash(&mut self, node: NodeId) {
        self.seen.remove(&node);
        self.own_pending.remove(&node);
        let keys: Vec<_> = self.last.keys().filter(|k| k.0 == node).cloned().collect();
        for k in keys {
            self.last.remove(&k);
        }
    }
    fn on_accepted(&mut self, key: MsgKey, sent: &Sent) {
        self.accepted.insert(key, sent.clone());
        if self
            .incarnation
            .get(&key.node)
            .copied()
            .unwrap_or(key.incarnation)
            == key.incarnation
        {
            self.own_pending.entry(key.node).or_default().insert(key);
        }
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        _world: &dyn World,
    ) -> Result<(), Violation> {
        let Event::Deliver {
            group,
            sender,
            guarantee,
            payload,
        } = ev
        else {
            return Ok(());
        };
        self.delivered += 1;
        let bytes = payload.bytes();
        if bytes.len() > 1400 {
            self.delivered_large += 1;
        }
        let key = payload::decode(bytes).map_err(|e| {
            Violation::at(
                ViolationKind::Corrupt,
                node,
                format!("{} bytes from {sender:?} in {group:?}: {e:?}", bytes.len()),
            )
        })?;
        let Some(sent) = self.accepted.get(&key) else {
            return Err(Violation::at(
                ViolationKind::Invented,
                node,
                format!("message {key} from {sender:?} in {group:?} was never accepted by mcast"),
            ));
        };
        if sent.digest != payload::digest(bytes) || sent.len != bytes.len() {
            return Err(Violation::at(
                ViolationKind::Corrupt,
                node,
                format!("message {key}: bytes differ from those sent"),
            ));
        }
        if (sender.nodeid, sender.pid) != (key.node, key.pid)
            || **group != sent.group
            || *guarantee != sent.guarantee
        {
            return Err(Violation::at(
                ViolationKind::Invented,
                node,
                format!(
                    "message {key} delivered as from {sender:?} in {group:?} {guarantee:?}, sent in {:?} {:?}",
                    sent.group, sent.guarantee
                ),
            ));
        }
        if !self.seen.entry(node).or_default().insert(key) {
            return Err(Violation::at(
                ViolationKind::Duplicate,
                node,
                format!("message {key} in {group:?} delivered twice"),
            ));
        }
        let fifo_key = (
            node,
            key.node,
            key.pid,
            key.incarnation,
            GroupName::clone(group),
        );
        if let Some(&last) = self.last.get(&fifo_key) {
            if key.counter <= last {
                return Err(Violation::at(
                    ViolationKind::FifoBroken,
                    node,
                    format!("message {key} in {group:?} delivered after counter {last} of the same sender"),
                ));
            }
        }
        self.last.insert(fifo_key, key.counter);
        if node == key.node
            && self
                .incarnation
                .get(&node)
                .copied()
                .unwrap_or(key.incarnation)
                == key.incarnation
        {
            if let Some(p) = self.own_pending.get_mut(&node) {
                p.remove(&key);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// SAFE delivery
// ---------------------------------------------------------------------------

/// A SAFE message delivered in regular configuration R is held by every
/// live member still in R; in a transitional configuration, by every live
/// transitional member. Asked of the [`World`] at the moment of delivery.
///
/// For a transitional delivery the other transitional members are
/// OPERATIONAL (installed), in RECOVERY (the message may still be an
/// encapsulated copy, which `Engine::holds` looks into), or fell back to
/// GATHER/COMMIT: they did hold it (the installer waited until the token's
/// aru covered every copy) but dropped the copies with the aborted attempt,
/// so "held" is no longer observable there. Those are skipped unless
/// `strict_recovery` is set (`CPG_SIM_STRICT_HOLDS=1`).
#[derive(Debug, Clone)]
pub struct SafeChecker {
    views: BTreeMap<NodeId, ConfView>,
    /// Also ask members that fell back to GATHER/COMMIT about transitional deliveries.
    pub strict_recovery: bool,
    /// SAFE deliveries checked.
    pub checked: u64,
    /// Transitional member queries skipped (member not OPERATIONAL).
    pub skipped_recovery: u64,
}

impl Default for SafeChecker {
    fn default() -> Self {
        SafeChecker {
            views: BTreeMap::new(),
            strict_recovery: std::env::var("CPG_SIM_STRICT_HOLDS").is_ok_and(|v| v == "1"),
            checked: 0,
            skipped_recovery: 0,
        }
    }
}

impl Checker for SafeChecker {
    fn name(&self) -> &'static str {
        "safe"
    }
    fn on_start(&mut self, node: NodeId, _inc: u32, _persisted: bool) {
        self.views.remove(&node);
    }
    fn on_crash(&mut self, node: NodeId) {
        self.views.remove(&node);
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        world: &dyn World,
    ) -> Result<(), Violation> {
        match ev {
            Event::Config(c) => {
                let c: &ConfigChange = c;
                self.views.entry(node).or_default().apply(c);
                Ok(())
            }
            Event::Trace(t) if t.safe => {
                self.checked += 1;
                let Some(view) = self.views.get(&node) else {
                    return Ok(());
                };
                let Some((ring, members)) = view.regular.clone() else {
                    return Ok(());
                };
                let (who, what): (Vec<NodeId>, &str) = match &view.transitional {
                    Some((_, tm)) => (tm.clone(), "transitional"),
                    None => (members, "regular"),
                };
                for m in who {
                    if m == node || !world.is_live(m) {
                        continue;
                    }
                    let Some(mv) = self.views.get(&m) else {
                        continue;
                    };
                    // Only members that have not installed anything after
                    // `ring` can be asked: an engine answers `holds` for its
                    // installed ring (and the one it recovers), and forgets
                    // an old ring once it installs the next.
                    let still_there = mv.regular_ring() == Some(ring);
                    let settled = matches!(
                        world.state(m),
                        None | Some(
                            cpg_core::engine::State::Operational
                                | cpg_core::engine::State::Recovery
                        )
                    );
                    if still_there && t.transitional && !self.strict_recovery && !settled {
                        self.skipped_recovery += 1;
                        continue;
                    }
                    if still_there && !world.holds(m, t.ring_id, t.seq) {
                        return Err(Violation::at(
                            ViolationKind::SafeNotHeld,
                            node,
                            format!(
                                "SAFE ({}, {}) from {} delivered in the {what} configuration while member {m} does not hold it{}",
                                t.ring_id,
                                t.seq,
                                t.sender,
                                world.state(m).map(|st| format!(" (member is {st:?})")).unwrap_or_default()
                            ),
                        ));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// CPG group membership
// ---------------------------------------------------------------------------

/// A point of a node's delivery stream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pos {
    /// Before any Totem delivery.
    Start,
    /// Right after this Totem message.
    Msg(RingId, u32),
    /// Right after the transitional config of this new ring.
    Trans(RingId),
    /// Right after the regular config of this ring.
    Reg(RingId),
}

/// How a node came to its current group view: the ring of its last
/// completed CPG sync, then every change since (previous regular ring, new
/// ring, transitional members). Only nodes with the same path are compared:
/// a completed sync (`TotemConfChg`) gives every member the same view, and
/// nodes that then moved together through the same changes must agree.
type Entry = (Option<RingId>, Vec<(Option<RingId>, RingId, Vec<NodeId>)>);

/// One group-level event, reduced to what must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupItem {
    /// A delivery: sender and payload digest.
    Deliver(MemberAddr, u64),
    /// A confchg: the members after it.
    ConfChg(Vec<MemberAddr>),
}

/// Per group: nodes that moved together see the same confchgs and
/// deliveries at the same point of their delivery streams; member lists
/// are sorted; each confchg is its predecessor − left + joined.
#[derive(Debug, Clone, Default)]
pub struct GroupChecker {
    views: BTreeMap<NodeId, ConfView>,
    pos: BTreeMap<NodeId, Pos>,
    entry: BTreeMap<NodeId, Entry>,
    synced: BTreeMap<NodeId, RingId>,
    cur: BTreeMap<NodeId, BTreeMap<GroupName, Vec<GroupItem>>>,
    records: BTreeMap<(GroupName, Entry, Pos), (NodeId, Vec<GroupItem>)>,
    last_members: BTreeMap<(NodeId, GroupName), Vec<MemberAddr>>,
    /// Confchgs seen (all nodes).
    pub confchgs: u64,
    /// (group, point) lists compared between two nodes.
    pub compared: u64,
}

impl GroupChecker {
    fn flush(&mut self, node: NodeId) -> Result<(), Violation> {
        let Some(cur) = self.cur.remove(&node) else {
            return Ok(());
        };
        let pos = self.pos.get(&node).cloned().unwrap_or(Pos::Start);
        let entry = self.entry.get(&node).cloned().unwrap_or_default();
        for (group, items) in cur {
            if items.is_empty() {
                continue;
            }
            let key = (group.clone(), entry.clone(), pos.clone());
            match self.records.get(&key) {
                None => {
                    self.records.insert(key, (node, items));
                }
                Some((first, fitems)) => {
                    self.compared += 1;
                    if *fitems != items {
                        return Err(Violation::at(
                            ViolationKind::GroupChangeMismatch,
                            node,
                            format!(
                                "group {group:?} at {pos:?} (last sync {:?}, changes since {:?}): {items:?} here, {fitems:?} at node {first}",
                                entry.0.map(|r| r.to_string()),
                                entry.1.iter().map(|(p, r, t)| format!("{:?}->{r} {t:?}", p.map(|x| x.to_string()))).collect::<Vec<_>>()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn move_to(&mut self, node: NodeId, pos: Pos) -> Result<(), Violation> {
        let r = self.flush(node);
        self.pos.insert(node, pos);
        r
    }

    /// Compare what is still open (call at the end of a run).
    pub fn finish(&mut self) -> Result<(), Violation> {
        let nodes: Vec<NodeId> = self.cur.keys().copied().collect();
        for n in nodes {
            self.flush(n)?;
        }
        Ok(())
    }
}

impl Checker for GroupChecker {
    fn name(&self) -> &'static str {
        "group"
    }
    fn on_start(&mut self, node: NodeId, _inc: u32, _persisted: bool) {
        self.on_crash(node);
    }
    fn on_crash(&mut self, node: NodeId) {
        self.views.remove(&node);
        self.pos.remove(&node);
        self.entry.remove(&node);
        self.synced.remove(&node);
        self.cur.remove(&node);
        let keys: Vec<_> = self
            .last_members
            .keys()
            .filter(|k| k.0 == node)
            .cloned()
            .collect();
        for k in keys {
            self.last_members.remove(&k);
        }
    }
    fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        _world: &dyn World,
    ) -> Result<(), Violation> {
        match ev {
            Event::Trace(t) => self.move_to(node, Pos::Msg(t.ring_id, t.seq)),
            Event::Config(c) => {
                let c: &ConfigChange = c;
                let prev = self.views.entry(node).or_default().regular_ring();
                self.views.entry(node).or_default().apply(c);
                match c {
                    ConfigChange::Transitional {
                        ring_id, members, ..
                    } => {
                        let r = self.flush(node);
                        let synced = self.synced.get(&node).copied();
                        let e = self
                            .entry
                            .entry(node)
                            .or_insert_with(|| (synced, Vec::new()));
                        e.1.push((prev, *ring_id, members.to_vec()));
                        self.pos.insert(node, Pos::Trans(*ring_id));
                        r
                    }
                    ConfigChange::Regular { ring_id, .. } => self.move_to(node, Pos::Reg(*ring_id)),
                }
            }
            Event::TotemConfChg { ring_id, .. } => {
                // The sync of `ring_id` completed: one view everywhere.
                let r = self.flush(node);
                self.synced.insert(node, *ring_id);
                self.entry.insert(node, (Some(*ring_id), Vec::new()));
                r
            }
            Event::Deliver {
                group,
                sender,
                payload,
                ..
            } => {
                let item = GroupItem::Deliver(*sender, payload::digest(payload.bytes()));
                self.cur
                    .entry(node)
                    .or_default()
                    .entry(GroupName::clone(group))
                    .or_default()
                    .push(item);
                Ok(())
            }
            Event::ConfChg {
                group,
                members,
                left,
                joined,
            } => {
                self.confchgs += 1;
                if !is_sorted_strict(members) {
                    return Err(Violation::at(
                        ViolationKind::GroupMembersUnsorted,
                        node,
                        format!("group {group:?} members {members:?}"),
                    ));
                }
                let lk = (node, group.clone());
                if let Some(prev) = self.last_members.get(&lk) {
                    let mut expect: BTreeSet<MemberAddr> = prev.iter().copied().collect();
                    for (m, _) in left {
                        expect.remove(m);
                    }
                    for (m, _) in joined {
                        expect.insert(*m);
                    }
                    let expect: Vec<MemberAddr> = expect.into_iter().collect();
                    if expect != *members {
                        return Err(Violation::at(
                            ViolationKind::GroupChangeInconsistent,
                            node,
                            format!(
                                "group {group:?}: previous {prev:?} − left {left:?} + joined {joined:?} ≠ members {members:?}"
                            ),
                        ));
                    }
                }
                if members.iter().any(|m| m.nodeid == node) {
                    self.last_members.insert(lk, members.clone());
                } else {
                    self.last_members.remove(&lk);
                }
                let item = GroupItem::ConfChg(members.clone());
                self.cur
                    .entry(node)
                    .or_default()
                    .entry(GroupName::clone(group))
                    .or_default()
                    .push(item);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------
// All of them
// ---------------------------------------------------------------------------

/// What the checkers may assume about the frames the engines receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// Every frame was built by the engine its header names (the
    /// simulator's network, all its faults included): every invariant
    /// holds, across nodes too.
    #[default]
    Peers,
    /// Frames may be forged: anyone can speak as any node (the engine fuzz
    /// target). Until frames are authenticated nothing tells a forgery
    /// from its claimed sender, so the invariants that compare what
    /// different nodes saw or trust what a peer claimed (ring members
    /// agree, (ring, seq) names one message, virtual synchrony, SAFE held
    /// by the others, application payloads whole, accepted, FIFO and
    /// unique, equal group views) do not bind. What one node can check on
    /// its own still must: each node's configuration changes are
    /// internally consistent and persisted before use, its deliveries
    /// ascend and lie in their configuration, its group views are sorted
    /// and follow from its own confchgs. Each node then gets its own ring,
    /// order and group checkers (one node's records are never compared
    /// with another's); the virtual synchrony, FIFO and SAFE checkers
    /// are not fed.
    Forged,
}

/// The ring, order and group checkers of one node ([`Trust::Forged`]).
#[derive(Debug, Clone, Default)]
struct OwnCheckers {
    ring: RingChecker,
    order: OrderChecker,
    group: GroupChecker,
}

impl OwnCheckers {
    fn all(&mut self) -> [&mut dyn Checker; 3] {
        [&mut self.ring, &mut self.order, &mut self.group]
    }
}

/// Every checker, fed together.
#[derive(Debug, Clone, Default)]
pub struct Checkers {
    /// Ring ids and configuration changes.
    pub ring: RingChecker,
    /// Total order and agreement.
    pub order: OrderChecker,
    /// Virtual synchrony.
    pub vs: VsChecker,
    /// FIFO, no duplicates, no invention, whole messages.
    pub fifo: FifoChecker,
    /// SAFE delivery.
    pub safe: SafeChecker,
    /// CPG membership.
    pub group: GroupChecker,
    trust: Trust,
    /// Per node, under [`Trust::Forged`] (the fields above stay unfed).
    own: BTreeMap<NodeId, OwnCheckers>,
}

impl Checkers {
    /// Checkers for frames of the given trust (`default()` is [`Trust::Peers`]).
    pub fn with_trust(trust: Trust) -> Checkers {
        Checkers {
            trust,
            ..Checkers::default()
        }
    }
    /// What the checkers assume.
    pub fn trust(&self) -> Trust {
        self.trust
    }
    /// Call `f` on each checker that sees `node`'s events, up to the first error.
    fn each(
        &mut self,
        node: NodeId,
        f: impl FnMut(&mut dyn Checker) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        match self.trust {
            Trust::Peers => {
                let all: [&mut dyn Checker; 6] = [
                    &mut self.ring,
                    &mut self.order,
                    &mut self.vs,
                    &mut self.fifo,
                    &mut self.safe,
                    &mut self.group,
                ];
                all.into_iter().try_for_each(f)
            }
            Trust::Forged => self
                .own
                .entry(node)
                .or_default()
                .all()
                .into_iter()
                .try_for_each(f),
        }
    }
    /// A node (re)started.
    pub fn on_start(&mut self, node: NodeId, incarnation: u32, persisted: bool) {
        let _ = self.each(node, |c| {
            c.on_start(node, incarnation, persisted);
            Ok(())
        });
    }
    /// A node crashed.
    pub fn on_crash(&mut self, node: NodeId) {
        let _ = self.each(node, |c| {
            c.on_crash(node);
            Ok(())
        });
    }
    /// A ring seq was persisted.
    ///
    /// # Errors
    /// The first violation found.
    pub fn on_persist(&mut self, node: NodeId, seq: u64) -> Result<(), Violation> {
        self.each(node, |c| c.on_persist(node, seq))
    }
    /// A submit was accepted.
    pub fn on_accepted(&mut self, key: MsgKey, sent: &Sent) {
        let _ = self.each(key.node, |c| {
            c.on_accepted(key, sent);
            Ok(())
        });
    }
    /// Feed one event to every checker.
    ///
    /// # Errors
    /// The first violation found.
    pub fn on_event(
        &mut self,
        node: NodeId,
        ev: &SimEvent,
        world: &dyn World,
    ) -> Result<(), Violation> {
        self.each(node, |c| c.on_event(node, ev, world))
    }
    /// End-of-run comparisons.
    ///
    /// # Errors
    /// The first violation found.
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.group.finish()?;
        for own in self.own.values_mut() {
            own.group.finish()?;
        }
        Ok(())
    }
}

/// Build a trace event (for synthetic traces).
pub fn trace(
    ring: RingId,
    seq: u32,
    sender: NodeId,
    digest: u64,
    safe: bool,
    transitional: bool,
) -> SimEvent {
    Event::Trace(TraceDeliver {
        ring_id: ring,
        seq,
        sender,
        safe,
        transitional,
        digest,
    })
}

/// Build a transitional config event (for synthetic traces).
pub fn transitional(ring: RingId, members: &[NodeId], left: &[NodeId]) -> SimEvent {
    Event::Config(Box::new(ConfigChange::Transitional {
        ring_id: ring,
        members: members.iter().copied().collect(),
        left: left.iter().copied().collect(),
    }))
}

/// Build a regular config event (for synthetic traces).
pub fn regular(ring: RingId, members: &[NodeId], joined: &[NodeId]) -> SimEvent {
    Event::Config(Box::new(ConfigChange::Regular {
        ring_id: ring,
        members: members.iter().copied().collect(),
        joined: joined.iter().copied().collect(),
    }))
}

/// Build an application delivery event (for synthetic traces).
pub fn deliver(
    group: &GroupName,
    sender: MemberAddr,
    guarantee: Guarantee,
    bytes: &[u8],
) -> SimEvent {
    Event::Deliver {
        group: std::sync::Arc::new(group.clone()),
        sender,
        guarantee,
        payload: cpg_core::engine::Payload {
            src: cpg_core::engine::FrameRef::Own(bytes.into()),
            range: 0..bytes.len(),
        },
    }
}

//! `cpg-sim`: a deterministic simulator for `cpg-core`, modelled on
//! TigerBeetle's VOPR.
//!
//! N engines run in one thread over a seeded, faulty [`network::Network`]
//! (loss, duplication, reordering, partitions, one-way links, garbage,
//! replay), with crashes and restarts, simulated application processes that
//! join groups and multicast checksummed messages, and the invariant
//! [`checker`]s fed every event of every node. A run is a safety phase
//! (faults on), then [`Sim::heal`] and a liveness phase
//! ([`Sim::run_until_converged`]). Everything is a function of the seed:
//! `CPG_SIM_SEED=n` replays one run exactly.
//!
//! | module | owns |
//! |---|---|
//! | [`network`] | virtual links, delays, faults |
//! | [`node`] | one engine + its disk + its processes; the calling order |
//! | [`checker`] | the invariants, as structs fed events; [`checker::World`] for queries |
//! | [`payload`] | self-checking application messages |
//! | [`perfect`] | engines on a perfect network, no faults, no checkers: the driver of `cpg-core`'s smoke tests and of the benches |
//! | this file | the scheduler ([`Sim`]), fault and workload scripts, seeds, coverage |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod network;
pub mod node;
pub mod payload;
pub mod perfect;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use cpg_core::engine::{ConfigChange, Engine, Event, FrameRef, Request, State};
use cpg_core::limits::Config;
use cpg_core::{CsError, Duration, GroupName, Guarantee, Instant, MemberAddr, NodeId, RingId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use checker::{Checkers, Sent, Violation, ViolationKind, World};
use network::{FaultOptions, Frame, Network, PacketKind};
use node::{GroupStatus, Outputs, PendingMsg, Proc, RestartMode, SimNode};
use payload::MsgKey;

/// The replay command printed with every sweep failure.
pub fn replay_command(seed: u64) -> String {
    format!(
        "CPG_SIM_SEED={seed} cargo test -p cpg-sim --release --test sweep -- --nocapture\n\
         story:  cargo run --release -p cpg-sim -- --swarm --seed {seed} [--trace]"
    )
}

/// Seeds to run: `CPG_SIM_SEED=n` → just `n`; else `CPG_SIM_SEEDS` seeds
/// (default 200) starting at `CPG_SIM_SEED_BASE` (default 0).
pub fn seeds() -> Vec<u64> {
    seeds_or(200)
}

/// [`seeds`] with another default count.
pub fn seeds_or(default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("CPG_SIM_SEED") {
        return vec![s.trim().parse().expect("CPG_SIM_SEED must be a u64")];
    }
    let n = std::env::var("CPG_SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default_count);
    let base = std::env::var("CPG_SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0u64);
    (base..base + n).collect()
}

/// What the simulated applications do.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Processes per node (1 or 2).
    pub procs_per_node: usize,
    /// Groups in use (1 or 2).
    pub groups: usize,
    /// Mean time between workload actions per node.
    pub msg_interval: Duration,
    /// Probability a message is 1–8 KiB (a few fragments).
    pub medium_prob: f64,
    /// Probability a message is large (fragmented over many frames).
    pub large_prob: f64,
    /// Largest large message.
    pub large_max: usize,
    /// Probability a message is SAFE (else AGREED).
    pub safe_prob: f64,
    /// Probability per action that a process leaves a group or rejoins it.
    pub churn_prob: f64,
    /// Probability per action of a policy probe (mcast to a group not joined → NOT_EXIST).
    pub probe_prob: f64,
    /// Probability a message is sent zero copy from a buffer whose headers
    /// stay outside it (a client's shared memory, [`Frame::shared_memory`]);
    /// the simulator then checks it went out by reference (see
    /// [`SimCounters::zc_frames`]).
    pub zero_copy: f64,
}

impl Workload {
    /// A light steady workload.
    pub fn light() -> Workload {
        Workload {
            procs_per_node: 1,
            groups: 1,
            msg_interval: Duration::from_millis(100),
            medium_prob: 0.05,
            large_prob: 0.0,
            large_max: 0,
            safe_prob: 0.3,
            churn_prob: 0.0,
            probe_prob: 0.0,
            zero_copy: 0.0,
        }
    }
    /// No messages at all (joins only).
    pub fn idle() -> Workload {
        Workload {
            msg_interval: Duration::from_millis(1_000_000),
            ..Workload::light()
        }
    }
}

/// Everything that shapes a run besides the seed.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Node ids.
    pub nodes: Vec<NodeId>,
    /// Nodes not started at time 0 (scenarios start them later).
    pub initially_down: Vec<NodeId>,
    /// Node starts are spread uniformly over this span.
    pub start_spread: Duration,
    /// Faults of the safety phase.
    pub faults: FaultOptions,
    /// Application behaviour.
    pub workload: Workload,
    /// Length of the safety phase.
    pub safety_duration: Duration,
    /// Bound for convergence after healing.
    pub converge_bound: Duration,
    /// How restarted nodes choose their initial ring seq.
    pub restart_mode: RestartMode,
    /// Cluster id of every node.
    pub cluster_id: u32,
    /// Keep the whole story log (else only a tail for failure reports).
    pub log_all: bool,
    /// Adjust each node's engine configuration.
    pub config_tweak: Option<fn(&mut Config)>,
    /// Log every packet delivery and timeout with the state change (debugging).
    pub trace_packets: bool,
    /// `EngineOptions::seq_base` of every node (near 2^32 tests serial wrap).
    pub seq_base: u32,
    /// Give up (a `Runaway` violation) after this many steps.
    pub max_steps: u64,
    /// Override `Config::send_queue_frames` (small values exercise TRY_AGAIN).
    pub send_queue_frames: Option<usize>,
    /// Override `Config::fail_recv_const` (small values exercise failed-to-receive).
    pub fail_recv_const: Option<u32>,
}

impl SimOptions {
    /// `n` nodes (ids 1..=n), no faults, a light workload.
    pub fn calm(n: usize) -> SimOptions {
        SimOptions {
            nodes: (1..=n as NodeId).collect(),
            initially_down: Vec::new(),
            start_spread: Duration::ZERO,
            faults: FaultOptions::none(),
            workload: Workload::light(),
            safety_duration: Duration::from_millis(3_000),
            converge_bound: Duration::from_millis(30_000),
            restart_mode: RestartMode::Persisted,
            cluster_id: 0x5157,
            log_all: false,
            config_tweak: None,
            trace_packets: false,
            seq_base: 0,
            max_steps: 20_000_000,
            send_queue_frames: None,
            fail_recv_const: None,
        }
    }

    /// Draw everything from `seed` (swarm testing: each seed has its own
    /// node count, fault mix and workload).
    pub fn swarm(seed: u64) -> SimOptions {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5747_4152_4d00_0001);
        let n = match rng.gen_range(0..100) {
            0..=4 => 1,
            5..=39 => rng.gen_range(2..=3),
            40..=79 => rng.gen_range(4..=5),
            _ => rng.gen_range(6..=9),
        };
        let nodes: Vec<NodeId> = if rng.gen_bool(0.5) {
            (1..=n as NodeId).collect()
        } else {
            let mut pool: Vec<NodeId> = (1..=(3 * n as NodeId + 2)).collect();
            pool.shuffle(&mut rng);
            let mut v: Vec<NodeId> = pool[..n].to_vec();
            v.sort_unstable();
            v
        };
        let mut faults = FaultOptions::swarm(&mut rng);
        // Corrupted control frames in 20 % of seeds, caught by their
        // integrity check. With CPG_SIM_CORRUPT=1 they are re-sealed (the
        // check missed them): of seeds 5000..6000, 5939 still fails (two
        // tokens in one ring after a corrupted token: SeqConflict; before
        // the ring seq bounds it was stuck in RECOVERY), open; 5424 and
        // 5890 (SafeNotHeld after a corrupted JOIN's ring seq, 2^47 above
        // the ring's, was adopted) pass since JOINs may not jump that far
        // (spec §1.2). Drawn from a stream of its own so every other draw
        // of a seed stays what it was.
        let mut corrupt_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x434f_5252_5550_5400);
        if corrupt_rng.gen_bool(0.2) {
            faults.corrupt = corrupt_rng.gen_range(0.0..0.03);
            faults.corrupt_resealed = std::env::var_os("CPG_SIM_CORRUPT").is_some_and(|v| v == "1");
        }
        let large = rng.gen_bool(0.4);
        let workload = Workload {
            procs_per_node: rng.gen_range(1..=2),
            groups: rng.gen_range(1..=2),
            msg_interval: Duration::from_millis(rng.gen_range(15..300)),
            medium_prob: if rng.gen_bool(0.6) {
                rng.gen_range(0.0..0.2)
            } else {
                0.0
            },
            large_prob: if large {
                rng.gen_range(0.005..0.04)
            } else {
                0.0
            },
            large_max: if large {
                rng.gen_range(16..300) * 1024
            } else {
                0
            },
            safe_prob: [0.0, 0.3, 0.7, 1.0][rng.gen_range(0..4)],
            churn_prob: if rng.gen_bool(0.3) {
                rng.gen_range(0.0..0.05)
            } else {
                0.0
            },
            probe_prob: 0.02,
            zero_copy: 0.0,
        };
        SimOptions {
            nodes,
            initially_down: Vec::new(),
            start_spread: Duration::from_millis(if rng.gen_bool(0.5) {
                0
            } else {
                rng.gen_range(1..1_500)
            }),
            faults,
            workload,
            safety_duration: Duration::from_millis(30_000),
            converge_bound: Duration::from_millis(30_000),
            restart_mode: RestartMode::Persisted,
            cluster_id: 0x5157,
            log_all: false,
            config_tweak: None,
            trace_packets: false,
            seq_base: if rng.gen_bool(0.15) {
                u32::MAX - rng.gen_range(0..3_000)
            } else {
                0
            },
            max_steps: 3_000_000,
            send_queue_frames: if rng.gen_bool(0.3) {
                Some(rng.gen_range(8..200))
            } else {
                None
            },
            fail_recv_const: if rng.gen_bool(0.2) {
                Some(rng.gen_range(20..200))
            } else {
                None
            },
        }
    }
}

/// Counters of what the simulator did to the cluster.
#[derive(Debug, Clone, Default)]
pub struct SimCounters {
    /// Crashes injected.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Partitions started.
    pub partitions: u64,
    /// One-way blocks started.
    pub one_way_blocks: u64,
    /// Garbage frames handed to live engines (each checked as counted).
    pub garbage_checked: u64,
    /// Mcasts accepted.
    pub accepted: u64,
    /// TRY_AGAIN answers.
    pub try_again: u64,
    /// Joins accepted.
    pub joins: u64,
    /// Leaves accepted.
    pub leaves: u64,
    /// Policy probes answered NOT_EXIST as required.
    pub probes: u64,
    /// Engine calls.
    pub steps: u64,
    /// Datagrams engines emitted (each checked against the path's size).
    pub datagrams_sent: u64,
    /// Of those, emitted by a node in RECOVERY.
    pub recovery_datagrams: u64,
    /// The largest datagram emitted.
    pub largest_datagram: usize,
    /// Mcasts accepted zero copy from a buffer whose headers stay outside it.
    pub zc_accepted: u64,
    /// Datagrams that read such a buffer (each checked to be a gather of
    /// engine-built headers and a range of the buffer).
    pub zc_frames: u64,
    /// Payload bytes those datagrams read from the buffers.
    pub zc_bytes_by_ref: u64,
    /// Such messages delivered to their sender, each checked to be read
    /// from its buffer and to have gone out whole by reference to it.
    pub zc_self_checked: u64,
}

/// A message sent zero copy from a buffer whose headers stay outside it,
/// until its sender delivers it: which of its bytes went out by reference.
#[derive(Debug, Clone)]
struct ZcTrack {
    /// A handle on the buffer: its memory is not reused while tracked.
    _buf: Frame,
    /// Addresses of the payload.
    payload: std::ops::Range<usize>,
    /// Address ranges of the payload that datagrams read.
    sent: Vec<std::ops::Range<usize>>,
}

/// Coverage counters, summed over nodes (and seeds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Name → count.
    pub counters: BTreeMap<String, u64>,
}

impl Coverage {
    /// Add to a counter.
    pub fn add(&mut self, name: &str, v: u64) {
        *self.counters.entry(name.to_string()).or_default() += v;
    }
    /// Add all of `other`.
    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.counters {
            self.add(k, *v);
        }
    }
    /// A counter's value.
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.counters.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, v) in &self.counters {
            writeln!(f, "  {k:<w$} {v}")?;
        }
        Ok(())
    }
}

/// A failed run: the seed, the broken invariant, and recent history.
#[derive(Debug, Clone)]
pub struct SimError {
    /// Seed of the run.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
    /// Virtual time.
    pub at: Instant,
    /// Fault mix of the run.
    pub faults: String,
    /// The last log lines.
    pub tail: Vec<String>,
    /// How to replay it.
    pub replay: String,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} at t={:.3}s: {}",
            self.seed,
            self.at.0 as f64 / 1e9,
            self.violation
        )?;
        writeln!(f, "faults: {}", self.faults)?;
        writeln!(f, "last events:")?;
        for l in &self.tail {
            writeln!(f, "  {l}")?;
        }
        write!(f, "replay: {}", self.replay)
    }
}

impl std::error::Error for SimError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    FaultTick,
    Restart(NodeId),
    EndPartition,
    Unblock(NodeId, NodeId),
    Work(NodeId, u32),
    Start(NodeId),
}

/// A story line kind, for the binary and failure tails.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Virtual time.
    pub at: Instant,
    /// Text.
    pub text: String,
}

struct NodesWorld<'a> {
    nodes: &'a [SimNode],
    idx: &'a BTreeMap<NodeId, usize>,
}

impl NodesWorld<'_> {
    fn engine(&self, node: NodeId) -> Option<&Engine<Frame>> {
        self.idx
            .get(&node)
            .and_then(|&i| self.nodes[i].engine.as_ref())
    }
}

impl World for NodesWorld<'_> {
    fn is_live(&self, node: NodeId) -> bool {
        self.engine(node).is_some()
    }
    fn current_ring(&self, node: NodeId) -> Option<RingId> {
        self.engine(node).map(|e| e.ring_id())
    }
    fn holds(&self, node: NodeId, ring: RingId, seq: u32) -> bool {
        self.engine(node).is_some_and(|e| e.holds(ring, seq))
    }
    fn state(&self, node: NodeId) -> Option<State> {
        self.engine(node).map(|e| e.state())
    }
}

const TAIL_LINES: usize = 40;

/// The simulator.
///
/// `Clone` is a snapshot that runs on independently of the original (the
/// engine fuzz target warms a cluster up once and runs every input from a
/// copy instead of forming a ring per input).
#[derive(Clone)]
pub struct Sim {
    /// Seed of the run.
    pub seed: u64,
    /// Options.
    pub opts: SimOptions,
    /// Virtual time.
    pub now: Instant,
    rng: ChaCha8Rng,
    /// The network.
    pub net: Network,
    /// The nodes, in ascending id order.
    pub nodes: Vec<SimNode>,
    idx: BTreeMap<NodeId, usize>,
    /// The invariant checkers.
    pub checkers: Checkers,
    actions: BTreeMap<(Instant, u64), Action>,
    action_seq: u64,
    faults_active: bool,
    workload_active: bool,
    /// Groups the processes use.
    pub groups: Vec<GroupName>,
    /// Counters.
    pub counters: SimCounters,
    /// Every regular/transitional configuration, in order: (time, node, change).
    pub config_log: Vec<(Instant, NodeId, ConfigChange)>,
    /// Every group confchg: (time, node, group, members).
    pub confchg_log: Vec<(Instant, NodeId, GroupName, Vec<MemberAddr>)>,
    /// Story log (all of it with `log_all`, else the tail).
    pub log: VecDeque<LogLine>,
    /// Replay hint printed with failures.
    pub replay_hint: String,
    failure: Option<Violation>,
    last_timeout_at: BTreeMap<NodeId, Instant>,
    /// When the safety phase ended (faults off).
    pub healed_at: Option<Instant>,
    /// When convergence was reached.
    pub converged_at: Option<Instant>,
    /// Zero-copy messages from buffers whose headers stay outside them, by
    /// key, until their sender delivers them.
    zc_tracks: BTreeMap<MsgKey, ZcTrack>,
    /// The same, by the address of the payload's first byte.
    zc_by_addr: BTreeMap<usize, MsgKey>,
}

fn is_illegal_transition(from: State, to: State) -> bool {
    use State::*;
    // One engine call may take several steps; these pairs need a step the
    // protocol does not have (`docs/spec/totem.md` §9).
    matches!(
        (from, to),
        (Gather, Operational)
            | (Gather, Recovery)
            | (Commit, Operational)
            | (Operational, Recovery)
    )
}

impl Sim {
    /// A cluster for `seed` with `opts`; nodes start (spread over
    /// `opts.start_spread`) and their processes join their groups.
    pub fn new(seed: u64, opts: SimOptions) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let groups: Vec<GroupName> = [&b"g0"[..], &b"GROUP\0"[..]]
            .iter()
            .take(opts.workload.groups.clamp(1, 2))
            .map(|b| GroupName::new(b).expect("short name"))
            .collect();
        let mut all_groups = groups.clone();
        all_groups.push(GroupName::new(b"never-joined").expect("short name"));
        let mut nodes = Vec::new();
        let mut idx = BTreeMap::new();
        let mut ids = opts.nodes.clone();
        ids.sort_unstable();
        ids.dedup();
        for (i, &id) in ids.iter().enumerate() {
            let mut config = Config::fast(id, &ids);
            config.cluster_id = opts.cluster_id;
            if let Some(q) = opts.send_queue_frames {
                config.send_queue_frames = q;
            }
            if let Some(f) = opts.fail_recv_const {
                config.fail_recv_const = f;
            }
            if let Some(t) = opts.config_tweak {
                t(&mut config);
            }
            let procs = (0..opts.workload.procs_per_node.max(1))
                .map(|k| Proc {
                    pid: 1000 + k as u32,
                    groups: all_groups
                        .iter()
                        .map(|g| (g.clone(), GroupStatus::Out))
                        .collect(),
                    counter: 0,
                    pending: None,
                })
                .collect();
            let mut n = SimNode::new(id, config, procs);
            n.seq_base = opts.seq_base;
            nodes.push(n);
            idx.insert(id, i);
        }
        let net = Network::new(&ids, opts.faults.clone(), opts.cluster_id);
        let mut sim = Sim {
            seed,
            now: Instant::ZERO,
            net,
            nodes,
            idx,
            checkers: Checkers::default(),
            actions: BTreeMap::new(),
            action_seq: 0,
            faults_active: false,
            workload_active: true,
            groups,
            counters: SimCounters::default(),
            config_log: Vec::new(),
            confchg_log: Vec::new(),
            log: VecDeque::new(),
            replay_hint: replay_command(seed),
            failure: None,
            last_timeout_at: BTreeMap::new(),
            healed_at: None,
            converged_at: None,
            zc_tracks: BTreeMap::new(),
            zc_by_addr: BTreeMap::new(),
            opts,
            rng: ChaCha8Rng::seed_from_u64(0),
        };
        for &id in &ids {
            if sim.opts.initially_down.contains(&id) {
                continue;
            }
            let at = if sim.opts.start_spread.0 > 0 {
                rng.gen_range(0..sim.opts.start_spread.0)
            } else {
                0
            };
            sim.schedule(Instant(at), Action::Start(id));
        }
        sim.rng = rng;
        sim
    }

    /// Run `seed` with its swarm options: safety phase, heal, convergence.
    ///
    /// # Errors
    /// The first violation, with the seed and replay command.
    pub fn run_seed(seed: u64) -> Result<Sim, Box<SimError>> {
        let opts = SimOptions::swarm(seed);
        let mut sim = Sim::new(seed, opts);
        sim.run_safety(sim.opts.safety_duration)?;
        sim.heal()?;
        let bound = sim.opts.converge_bound;
        sim.run_until_converged(bound)?;
        Ok(sim)
    }

    // -- helpers ----------------------------------------------------------

    fn schedule(&mut self, at: Instant, a: Action) {
        self.actions.insert((at, self.action_seq), a);
        self.action_seq += 1;
    }

    fn i(&self, node: NodeId) -> usize {
        *self
            .idx
            .get(&node)
            .unwrap_or_else(|| panic!("node {node} is not configured"))
    }

    /// A node by id.
    pub fn node(&self, node: NodeId) -> &SimNode {
        &self.nodes[self.i(node)]
    }

    /// A node by id, to change (scenarios: its disk before a start).
    pub fn node_mut(&mut self, node: NodeId) -> &mut SimNode {
        let i = self.i(node);
        &mut self.nodes[i]
    }

    /// A node's engine, if it runs.
    pub fn engine(&self, node: NodeId) -> Option<&Engine<Frame>> {
        self.node(node).engine.as_ref()
    }

    /// Ids of running nodes.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.is_live())
            .map(|n| n.id)
            .collect()
    }

    /// All node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Record a story line.
    pub fn note(&mut self, text: impl Into<String>) {
        self.log.push_back(LogLine {
            at: self.now,
            text: text.into(),
        });
        if !self.opts.log_all && self.log.len() > TAIL_LINES {
            self.log.pop_front();
        }
    }

    fn error(&self, v: Violation) -> Box<SimError> {
        let skip = self.log.len().saturating_sub(TAIL_LINES);
        Box::new(SimError {
            seed: self.seed,
            violation: v,
            at: self.now,
            faults: format!(
                "{} nodes {:?}; {}",
                self.nodes.len(),
                self.node_ids(),
                self.opts.faults.summary()
            ),
            tail: self
                .log
                .iter()
                .skip(skip)
                .map(|l| format!("{:>9.3}s {}", l.at.0 as f64 / 1e9, l.text))
                .collect(),
            replay: self.replay_hint.clone(),
        })
    }

    fn fail(&mut self, v: Violation) -> Box<SimError> {
        self.note(format!("VIOLATION {v}"));
        self.failure = Some(v.clone());
        self.error(v)
    }

    fn check_failed(&self) -> Result<(), Box<SimError>> {
        match &self.failure {
            Some(v) => Err(self.error(v.clone())),
            None => Ok(()),
        }
    }

    // -- processing engine outputs -----------------------------------------

    fn process(&mut self, i: usize, out: Outputs) -> Result<(), Box<SimError>> {
        let node = self.nodes[i].id;
        for seq in out.persisted {
            if let Err(v) = self.checkers.on_persist(node, seq) {
                return Err(self.fail(v));
            }
        }
        if let Some((from, to)) = out.state {
            if is_illegal_transition(from, to) {
                return Err(self.fail(Violation::at(
                    ViolationKind::IllegalTransition,
                    node,
                    format!("{from:?} -> {to:?} in one call"),
                )));
            }
        }
        if let Some(e) = &self.nodes[i].engine {
            let ring = e.ring_id();
            let n = &self.nodes[i];
            let floor = n.disk.ring_seq.unwrap_or(0).max(n.initial_ring_seq);
            if ring.seq > floor {
                let v = Violation::at(
                    ViolationKind::RingSeqAheadOfDisk,
                    node,
                    format!(
                        "in ring {ring} ({:?}) but persisted only {:?}, initial {}",
                        e.state(),
                        n.disk.ring_seq,
                        n.initial_ring_seq
                    ),
                );
                return Err(self.fail(v));
            }
        }
        let (path_max, recovering) =
            self.nodes[i]
                .engine
                .as_ref()
                .map_or((usize::MAX, false), |e| {
                    (
                        e.config().netmtu - cpg_core::limits::IPV4_UDP_OVERHEAD,
                        e.state() == State::Recovery,
                    )
                });
        for t in out.transmits {
            if t.frame.len() > path_max {
                let v = Violation::at(
                    ViolationKind::DatagramTooBig,
                    node,
                    format!(
                        "a {} B datagram to {:?}: the path takes {path_max} B (netmtu − 28)",
                        t.frame.len(),
                        t.dest
                    ),
                );
                return Err(self.fail(v));
            }
            if t.frame.buf().is_some_and(Frame::is_shared_memory) {
                if let Err(v) = self.zc_sent(node, &t.frame) {
                    return Err(self.fail(v));
                }
            }
            self.counters.datagrams_sent += 1;
            self.counters.recovery_datagrams += u64::from(recovering);
            self.counters.largest_datagram = self.counters.largest_datagram.max(t.frame.len());
            let frame: Frame = match t.frame {
                FrameRef::Own(b) => b.into(),
                FrameRef::Rx(f) => f,
                other => other.to_vec().into(),
            };
            self.net.send(&mut self.rng, self.now, node, t.dest, frame);
        }
        for ev in out.events {
            if let Err(v) = self.zc_delivered(node, &ev) {
                return Err(self.fail(v));
            }
            self.observe(i, &ev);
            let world = NodesWorld {
                nodes: &self.nodes,
                idx: &self.idx,
            };
            if let Err(v) = self.checkers.on_event(node, &ev, &world) {
                return Err(self.fail(v));
            }
        }
        Ok(())
    }

    /// A datagram that reads a buffer whose headers stay outside it: it
    /// must be engine-built headers followed by a range of the buffer
    /// (never the buffer as a whole frame, which would put headers inside
    /// it, nor its bytes copied into the headers). Notes the bytes it read.
    fn zc_sent(&mut self, node: NodeId, frame: &FrameRef<Frame>) -> Result<(), Violation> {
        let FrameRef::Gather { head, buf, range } = frame else {
            return Err(Violation::at(
                ViolationKind::PayloadCopied,
                node,
                "a buffer whose headers stay outside it went out as a whole frame",
            ));
        };
        if head.len() > cpg_core::limits::ZC_HEADROOM {
            return Err(Violation::at(
                ViolationKind::PayloadCopied,
                node,
                format!("{} bytes in engine memory in front of a piece of a shared buffer: more than headers", head.len()),
            ));
        }
        self.counters.zc_frames += 1;
        self.counters.zc_bytes_by_ref += range.len() as u64;
        let at = buf.as_ptr() as usize + range.start;
        let sent = at..at + range.len();
        // A frame re-sent after its message was delivered to its sender is
        // no longer tracked (and its buffer, still held, not reused).
        let Some((_, key)) = self.zc_by_addr.range(..=at).next_back() else {
            return Ok(());
        };
        if let Some(t) = self.zc_tracks.get_mut(key) {
            if t.payload.start <= sent.start && sent.end <= t.payload.end {
                t.sent.push(sent);
            }
        }
        Ok(())
    }

    /// Its own delivery of a message it sent from a buffer whose headers
    /// stay outside it: read from that buffer, and every byte of it went
    /// out by reference to the buffer.
    fn zc_delivered(&mut self, node: NodeId, ev: &Event<Frame>) -> Result<(), Violation> {
        let Event::Deliver {
            sender, payload, ..
        } = ev
        else {
            return Ok(());
        };
        if sender.nodeid != node {
            return Ok(());
        }
        let bytes = payload.bytes();
        let Ok(key) = payload::decode(bytes) else {
            return Ok(()); // the checkers report it
        };
        let Some(mut t) = self.zc_tracks.remove(&key) else {
            return Ok(());
        };
        self.zc_by_addr.remove(&t.payload.start);
        self.counters.zc_self_checked += 1;
        if bytes.as_ptr() as usize != t.payload.start {
            return Err(Violation::at(
                ViolationKind::PayloadCopied,
                node,
                format!("message {key} delivered to its sender from a copy, not its buffer"),
            ));
        }
        t.sent.sort_by_key(|r| r.start);
        let mut covered = t.payload.start;
        for r in &t.sent {
            if r.start > covered {
                break;
            }
            covered = covered.max(r.end);
        }
        if covered < t.payload.end {
            return Err(Violation::at(
                ViolationKind::PayloadCopied,
                node,
                format!(
                    "message {key}: bytes {}.. of {} never went out by reference to its buffer",
                    covered - t.payload.start,
                    t.payload.len()
                ),
            ));
        }
        Ok(())
    }

    fn observe(&mut self, i: usize, ev: &Event<Frame>) {
        let node = self.nodes[i].id;
        match ev {
            Event::Config(c) => {
                let c: &ConfigChange = c;
                self.config_log.push((self.now, node, c.clone()));
                let text = match c {
                    ConfigChange::Transitional {
                        ring_id,
                        members,
                        left,
                    } => {
                        format!(
                            "node {node}: transitional {ring_id} members {:?} left {:?}",
                            &members[..],
                            &left[..]
                        )
                    }
                    ConfigChange::Regular {
                        ring_id,
                        members,
                        joined,
                    } => {
                        format!(
                            "node {node}: REGULAR {ring_id} members {:?} joined {:?}",
                            &members[..],
                            &joined[..]
                        )
                    }
                };
                self.note(text);
            }
            Event::ConfChg {
                group,
                members,
                left,
                joined,
            } => {
                self.confchg_log
                    .push((self.now, node, group.clone(), members.clone()));
                let fmt_m = |v: &[MemberAddr]| {
                    v.iter()
                        .map(|m| format!("{}/{}", m.nodeid, m.pid))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let l: Vec<MemberAddr> = left.iter().map(|x| x.0).collect();
                let j: Vec<MemberAddr> = joined.iter().map(|x| x.0).collect();
                self.note(format!(
                    "node {node}: confchg {group:?} [{}] left [{}] joined [{}]",
                    fmt_m(members),
                    fmt_m(&l),
                    fmt_m(&j)
                ));
                let n = &mut self.nodes[i];
                for p in &mut n.procs {
                    let me = MemberAddr {
                        nodeid: node,
                        pid: p.pid,
                    };
                    for (g, st) in &mut p.groups {
                        if g != group {
                            continue;
                        }
                        let inside = members.contains(&me);
                        if *st == GroupStatus::Joining && inside {
                            *st = GroupStatus::Joined;
                        } else if *st == GroupStatus::Leaving && !inside {
                            *st = GroupStatus::Out;
                        }
                    }
                }
            }
            Event::FlowControl(on) => {
                self.note(format!(
                    "node {node}: flow control {}",
                    if *on { "on" } else { "off" }
                ));
            }
            _ => {}
        }
    }

    // -- node lifecycle ------------------------------------------------------

    /// Start (or restart) a node now.
    ///
    /// # Errors
    /// A violation (the engine refused to start, or a checker fired).
    pub fn start_node(&mut self, node: NodeId) -> Result<(), Box<SimError>> {
        let mode = self.opts.restart_mode;
        self.start_node_with(node, mode)
    }

    /// Start a node with an explicit restart mode.
    ///
    /// # Errors
    /// A violation.
    pub fn start_node_with(
        &mut self,
        node: NodeId,
        mode: RestartMode,
    ) -> Result<(), Box<SimError>> {
        let i = self.i(node);
        if self.nodes[i].is_live() {
            return Ok(());
        }
        let restart = self.nodes[i].incarnation > 0;
        let out = match self.nodes[i].start(self.now, mode) {
            Ok(o) => o,
            Err(e) => {
                let v = Violation::at(
                    ViolationKind::EngineError,
                    node,
                    format!("Engine::new refused: {e}"),
                );
                return Err(self.fail(v));
            }
        };
        let inc = self.nodes[i].incarnation;
        let seq = self.nodes[i].initial_ring_seq;
        self.checkers
            .on_start(node, inc, mode == RestartMode::Persisted);
        if restart {
            self.counters.restarts += 1;
        }
        self.note(format!(
            "node {node}: {} (incarnation {inc}, initial ring seq {seq})",
            if restart { "restart" } else { "start" }
        ));
        // Each process picks the groups it uses this incarnation.
        let ng = self.groups.len();
        let mut uses = Vec::new();
        for _ in 0..self.nodes[i].procs.len() {
            let mask: u32 = if ng == 1 {
                1
            } else {
                self.rng.gen_range(1..(1u32 << ng))
            };
            uses.push(mask);
        }
        for (p, mask) in self.nodes[i].procs.iter_mut().zip(uses) {
            for (k, g) in p.groups.iter_mut().enumerate() {
                if k < ng && mask & (1 << k) != 0 {
                    g.1 = GroupStatus::WantJoin;
                }
            }
        }
        self.process(i, out)?;
        self.schedule(self.now, Action::Work(node, inc));
        Ok(())
    }

    /// Crash a node now (engine dropped, disk kept).
    pub fn crash(&mut self, node: NodeId) {
        let i = self.i(node);
        if !self.nodes[i].is_live() {
            return;
        }
        self.nodes[i].crash();
        self.checkers.on_crash(node);
        self.zc_forget(node);
        self.counters.crashes += 1;
        self.note(format!("node {node}: CRASH"));
    }

    /// Its engine is gone: so are the messages it was sending zero copy.
    fn zc_forget(&mut self, node: NodeId) {
        self.zc_tracks.retain(|k, _| k.node != node);
        let tracks = &self.zc_tracks;
        self.zc_by_addr.retain(|_, k| tracks.contains_key(k));
    }

    /// Partition the cluster into `groups` (unnamed nodes are alone).
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.net.partition(groups);
        self.counters.partitions += 1;
        let g = self.net.partition_groups();
        self.note(format!("PARTITION {g:?}"));
    }

    /// Remove the partition.
    pub fn heal_partition(&mut self) {
        self.net.heal_partition();
        self.note("partition healed");
    }

    /// Block `from → to` only.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.net.block(from, to);
        self.counters.one_way_blocks += 1;
        self.note(format!("BLOCK {from} -> {to}"));
    }

    /// Inject a frame (scenarios): delivered to `to` as from `from`.
    pub fn inject(&mut self, from: NodeId, to: NodeId, frame: Frame, delay: Duration) {
        self.net.inject(self.now, from, to, frame, delay);
    }

    /// Start random faults (the safety phase does this).
    pub fn start_faults(&mut self) {
        if self.faults_active {
            return;
        }
        self.faults_active = true;
        self.net.faults = self.opts.faults.clone();
        let d = self.exp(self.opts.faults.fault_interval);
        self.schedule(self.now + d, Action::FaultTick);
    }

    /// Stop creating new application messages (retries continue).
    pub fn stop_workload(&mut self) {
        self.workload_active = false;
    }

    fn exp(&mut self, mean: Duration) -> Duration {
        let u: f64 = self.rng.gen_range(0.0..1.0);
        Duration((-(1.0 - u).ln() * mean.0 as f64) as u64 + 1)
    }

    // -- faults ------------------------------------------------------------

    fn fault_tick(&mut self) -> Result<(), Box<SimError>> {
        if !self.faults_active {
            return Ok(());
        }
        let f = self.opts.faults.clone();
        let mut choices = Vec::new();
        if f.crashes && self.nodes.len() > 1 {
            choices.push(0);
        }
        if f.partitions && self.nodes.len() > 1 && self.net.partition_groups().is_empty() {
            choices.push(1);
        }
        if f.one_way && self.nodes.len() > 1 {
            choices.push(2);
        }
        if let Some(&c) = choices.choose(&mut self.rng) {
            match c {
                0 => {
                    let live = self.live_nodes();
                    if let Some(&n) = live.choose(&mut self.rng) {
                        self.crash(n);
                        let d = Duration(self.rng.gen_range(
                            Duration::from_millis(30).0..Duration::from_millis(3_000).0,
                        ));
                        self.schedule(self.now + d, Action::Restart(n));
                    }
                }
                1 => {
                    let mut ids = self.node_ids();
                    ids.shuffle(&mut self.rng);
                    let k = if ids.len() > 2 && self.rng.gen_bool(0.3) {
                        3
                    } else {
                        2
                    };
                    let mut groups = vec![Vec::new(); k];
                    for (j, n) in ids.into_iter().enumerate() {
                        let g = if j < k { j } else { self.rng.gen_range(0..k) };
                        groups[g].push(n);
                    }
                    for g in &mut groups {
                        g.sort_unstable();
                    }
                    self.partition(&groups);
                    let d =
                        Duration(self.rng.gen_range(
                            Duration::from_millis(100).0..Duration::from_millis(4_000).0,
                        ));
                    self.schedule(self.now + d, Action::EndPartition);
                }
                _ => {
                    let ids = self.node_ids();
                    let a = *ids.choose(&mut self.rng).expect("nodes");
                    let b = *ids.choose(&mut self.rng).expect("nodes");
                    if a != b {
                        self.block(a, b);
                        let d = Duration(self.rng.gen_range(
                            Duration::from_millis(100).0..Duration::from_millis(3_000).0,
                        ));
                        self.schedule(self.now + d, Action::Unblock(a, b));
                    }
                }
            }
        }
        let d = self.exp(self.opts.faults.fault_interval);
        self.schedule(self.now + d, Action::FaultTick);
        Ok(())
    }

    // -- workload ----------------------------------------------------------

    fn payload_len(&mut self) -> usize {
        let w = &self.opts.workload;
        let (mp, lp, lmax) = (w.medium_prob, w.large_prob, w.large_max);
        if lp > 0.0 && lmax > 8192 && self.rng.gen_bool(lp) {
            self.rng.gen_range(8192..=lmax)
        } else if mp > 0.0 && self.rng.gen_bool(mp) {
            self.rng.gen_range(1024..=8192)
        } else {
            self.rng.gen_range(payload::HEADER_LEN..=300)
        }
    }

    /// Submit one mcast; records it as accepted on CS_OK.
    fn submit_msg(
        &mut self,
        i: usize,
        p: usize,
        m: &PendingMsg,
    ) -> Result<Result<(), CsError>, Box<SimError>> {
        let node = self.nodes[i].id;
        let group = self.nodes[i].procs[p].groups[m.group].0.clone();
        let bytes = payload::encode(&m.key, m.len);
        let parts = m.parts.clamp(1, 3);
        let cut1 = bytes.len() / 3;
        let cut2 = 2 * bytes.len() / 3;
        let slices: Vec<&[u8]> = match parts {
            1 => vec![&bytes[..]],
            2 => vec![&bytes[..cut1], &bytes[cut1..]],
            _ => vec![&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]],
        };
        let pid = self.nodes[i].procs[p].pid;
        let now = self.now;
        let Some(e) = self.nodes[i].engine.as_mut() else {
            return Ok(Err(CsError::Library));
        };
        let before = e.state();
        let mut shared = None;
        let r = if m.zero_copy {
            // The payload alone, where a client put it (no headroom, no
            // particular alignment), in memory it could still write.
            let at = (m.key.counter % 7) as usize;
            let mut mem = vec![0u8; at + bytes.len() + 3];
            mem[at..at + bytes.len()].copy_from_slice(&bytes);
            let buf = Frame::shared_memory(mem.into());
            let start = buf.as_ptr() as usize + at;
            shared = Some((buf.clone(), start..start + bytes.len()));
            e.submit_zc(now, pid, &group, m.guarantee, buf, at..at + bytes.len())
                .map_err(|z| z.error)
        } else {
            e.submit(
                now,
                Request::Mcast {
                    pid,
                    group: &group,
                    guarantee: m.guarantee,
                    iov: &slices,
                },
            )
        };
        if let (Ok(()), Some((buf, payload))) = (&r, shared) {
            self.counters.zc_accepted += 1;
            self.zc_by_addr.insert(payload.start, m.key);
            self.zc_tracks.insert(
                m.key,
                ZcTrack {
                    _buf: buf,
                    payload,
                    sent: Vec::new(),
                },
            );
        }
        if r.is_ok() {
            let sent = Sent {
                group: group.clone(),
                guarantee: m.guarantee,
                digest: payload::digest(&bytes),
                len: bytes.len(),
            };
            self.checkers.on_accepted(m.key, &sent);
            self.counters.accepted += 1;
        }
        let out = self.nodes[i].drain(Some(before));
        self.process(i, out)?;
        let _ = node;
        Ok(r)
    }

    /// Multicast from a process now (scenarios). `len` bytes, at least the
    /// payload header. Returns the engine's answer; CS_OK is recorded.
    ///
    /// # Errors
    /// A violation.
    pub fn mcast(
        &mut self,
        node: NodeId,
        pid: u32,
        group: usize,
        guarantee: Guarantee,
        len: usize,
    ) -> Result<Result<(), CsError>, Box<SimError>> {
        self.mcast_as(node, pid, group, guarantee, len, false)
    }

    /// As [`Sim::mcast`], zero copy from a buffer whose headers stay
    /// outside it ([`Frame::shared_memory`]), as cpgd sends from a client's
    /// shared memory: the simulator checks it goes out by reference.
    ///
    /// # Errors
    /// A violation.
    pub fn mcast_zc(
        &mut self,
        node: NodeId,
        pid: u32,
        group: usize,
        guarantee: Guarantee,
        len: usize,
    ) -> Result<Result<(), CsError>, Box<SimError>> {
        self.mcast_as(node, pid, group, guarantee, len, true)
    }

    fn mcast_as(
        &mut self,
        node: NodeId,
        pid: u32,
        group: usize,
        guarantee: Guarantee,
        len: usize,
        zero_copy: bool,
    ) -> Result<Result<(), CsError>, Box<SimError>> {
        let i = self.i(node);
        let p = self.nodes[i]
            .procs
            .iter()
            .position(|x| x.pid == pid)
            .expect("no such pid");
        let inc = self.nodes[i].incarnation;
        let counter = self.nodes[i].procs[p].counter;
        self.nodes[i].procs[p].counter += 1;
        let m = PendingMsg {
            key: MsgKey {
                node,
                pid,
                incarnation: inc,
                counter,
            },
            group,
            guarantee,
            len,
            parts: 1,
            zero_copy,
        };
        self.submit_msg(i, p, &m)
    }

    fn unexpected(&mut self, node: NodeId, what: &str, e: CsError) -> Box<SimError> {
        self.fail(Violation::at(
            ViolationKind::EngineError,
            node,
            format!("{what} answered {e}"),
        ))
    }

    fn work(&mut self, node: NodeId, inc: u32) -> Result<(), Box<SimError>> {
        let i = self.i(node);
        if !self.nodes[i].is_live() || self.nodes[i].incarnation != inc {
            return Ok(());
        }
        let now = self.now;
        let np = self.nodes[i].procs.len();
        // 1. Joins and leaves waiting for submission.
        for p in 0..np {
            let ng = self.nodes[i].procs[p].groups.len();
            for g in 0..ng {
                let st = self.nodes[i].procs[p].groups[g].1;
                let pid = self.nodes[i].procs[p].pid;
                let name = self.nodes[i].procs[p].groups[g].0.clone();
                match st {
                    GroupStatus::WantJoin => {
                        let (r, out) = self.nodes[i].join(now, pid, &name);
                        self.process(i, out)?;
                        match r {
                            Ok(()) => {
                                self.counters.joins += 1;
                                self.nodes[i].procs[p].groups[g].1 = GroupStatus::Joining;
                            }
                            Err(CsError::TryAgain) => self.counters.try_again += 1,
                            Err(e) => return Err(self.unexpected(node, "join", e)),
                        }
                    }
                    GroupStatus::WantLeave => {
                        if self.nodes[i].procs[p]
                            .pending
                            .as_ref()
                            .is_some_and(|m| m.group == g)
                        {
                            continue; // send the pending message first
                        }
                        let (r, out) = self.nodes[i].leave(now, pid, &name);
                        self.process(i, out)?;
                        match r {
                            Ok(()) => {
                                self.counters.leaves += 1;
                                self.nodes[i].procs[p].groups[g].1 = GroupStatus::Leaving;
                            }
                            Err(CsError::TryAgain) => self.counters.try_again += 1,
                            Err(e) => return Err(self.unexpected(node, "leave", e)),
                        }
                    }
                    _ => {}
                }
            }
        }
        // 2. Retries of messages refused with TRY_AGAIN.
        for p in 0..np {
            if let Some(m) = self.nodes[i].procs[p].pending.clone() {
                match self.submit_msg(i, p, &m)? {
                    Ok(()) => self.nodes[i].procs[p].pending = None,
                    Err(CsError::TryAgain) => self.counters.try_again += 1,
                    Err(e) => return Err(self.unexpected(node, "mcast retry", e)),
                }
            }
        }
        // 3. Something new.
        if self.workload_active && np > 0 {
            let p = self.rng.gen_range(0..np);
            let w = self.opts.workload.clone();
            let ng = self.groups.len();
            let r: f64 = self.rng.gen_range(0.0..1.0);
            if r < w.probe_prob {
                self.probe(i, p)?;
            } else if r < w.probe_prob + w.churn_prob {
                let g = self.rng.gen_range(0..ng);
                let st = &mut self.nodes[i].procs[p].groups[g].1;
                match *st {
                    GroupStatus::Joined => *st = GroupStatus::WantLeave,
                    GroupStatus::Out => *st = GroupStatus::WantJoin,
                    _ => {}
                }
            } else if self.nodes[i].procs[p].pending.is_none() {
                let sendable: Vec<usize> = (0..ng)
                    .filter(|&g| self.nodes[i].procs[p].groups[g].1.may_send())
                    .collect();
                if let Some(&g) = sendable.choose(&mut self.rng) {
                    let len = self.payload_len();
                    let guarantee = if self.rng.gen_bool(w.safe_prob) {
                        Guarantee::Safe
                    } else {
                        Guarantee::Agreed
                    };
                    let parts = self.rng.gen_range(1..=3);
                    // drawn only when on: other runs keep their random streams
                    let zero_copy = w.zero_copy > 0.0 && self.rng.gen_bool(w.zero_copy);
                    let pid = self.nodes[i].procs[p].pid;
                    let counter = self.nodes[i].procs[p].counter;
                    self.nodes[i].procs[p].counter += 1;
                    let m = PendingMsg {
                        key: MsgKey {
                            node,
                            pid,
                            incarnation: inc,
                            counter,
                        },
                        group: g,
                        guarantee,
                        len,
                        parts,
                        zero_copy,
                    };
                    match self.submit_msg(i, p, &m)? {
                        Ok(()) => {}
                        Err(CsError::TryAgain) => {
                            self.counters.try_again += 1;
                            self.nodes[i].procs[p].pending = Some(m);
                        }
                        Err(e) => return Err(self.unexpected(node, "mcast", e)),
                    }
                }
            }
        }
        // Next tick: soon if something waits, else at the workload's pace.
        if !self.nodes[i].is_live() {
            return Ok(());
        }
        let waiting = self.nodes[i].procs.iter().any(|p| {
            p.pending.is_some()
                || p.groups
                    .iter()
                    .any(|g| matches!(g.1, GroupStatus::WantJoin | GroupStatus::WantLeave))
        });
        if waiting {
            let d = Duration(
                self.rng
                    .gen_range(Duration::from_millis(5).0..Duration::from_millis(50).0),
            );
            self.schedule(now + d, Action::Work(node, inc));
        } else if self.workload_active {
            let d = self.exp(self.opts.workload.msg_interval);
            self.schedule(now + d, Action::Work(node, inc));
        }
        Ok(())
    }

    /// Mcast to a group the process is not in: must answer NOT_EXIST.
    fn probe(&mut self, i: usize, p: usize) -> Result<(), Box<SimError>> {
        let node = self.nodes[i].id;
        let Some(g) = self.nodes[i].procs[p]
            .groups
            .iter()
            .position(|g| g.1 == GroupStatus::Out)
        else {
            return Ok(());
        };
        // Only groups never joined in this incarnation are certain: the
        // last group ("never-joined") is never joined.
        if g + 1 != self.nodes[i].procs[p].groups.len() {
            return Ok(());
        }
        let pid = self.nodes[i].procs[p].pid;
        let inc = self.nodes[i].incarnation;
        let m = PendingMsg {
            key: MsgKey {
                node,
                pid,
                incarnation: inc,
                counter: u64::MAX,
            },
            group: g,
            guarantee: Guarantee::Agreed,
            len: 40,
            parts: 1,
            zero_copy: false,
        };
        match self.submit_msg(i, p, &m)? {
            Err(CsError::NotExist) | Err(CsError::TryAgain) => {
                self.counters.probes += 1;
                Ok(())
            }
            other => Err(self.fail(Violation::at(
                ViolationKind::PolicyViolation,
                node,
                format!("mcast by {node}/{pid} to a group it never joined answered {other:?}, expected NOT_EXIST"),
            ))),
        }
    }

    // -- the scheduler -------------------------------------------------------

    /// Time of the next thing to happen.
    pub fn next_time(&self) -> Option<Instant> {
        let a = self.net.next_ready().map(|x| x.0);
        let b = self.nodes.iter().filter_map(|n| n.next_timeout).min();
        let c = self.actions.keys().next().map(|x| x.0);
        [a, b, c].into_iter().flatten().min()
    }

    /// Advance to the earliest event (packet, timeout or action) and handle
    /// it. Ties: packets, then timeouts (ascending node id), then actions
    /// (in scheduling order). Returns false when nothing is left to do.
    ///
    /// # Errors
    /// The first violation.
    pub fn step(&mut self) -> Result<bool, Box<SimError>> {
        self.check_failed()?;
        let net = self.net.next_ready().map(|(t, id)| (t, 0u8, id));
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.next_timeout.map(|t| (t, 1u8, i as u64)))
            .min();
        let act = self.actions.keys().next().map(|&(t, s)| (t, 2u8, s));
        let Some((t, class, key)) = [net, timer, act].into_iter().flatten().min() else {
            return Ok(false);
        };
        let n = self.nodes.len();
        let in_flight_max = (8 * n * n * n).max(100_000);
        if self.counters.steps >= self.opts.max_steps || self.net.in_flight() > in_flight_max {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.engine {
                    Some(e) => format!("{}:{:?}@{}", n.id, e.state(), e.ring_id()),
                    None => format!("{}:down", n.id),
                })
                .collect();
            let v = Violation::global(
                ViolationKind::Runaway,
                format!(
                    "{} steps, {} packets in flight at t={:.3}s: {}; in flight by (sender, kind 0 token 1 mcast 2 merge 3 join 4 commit): {:?}",
                    self.counters.steps,
                    self.net.in_flight(),
                    self.now.0 as f64 / 1e9,
                    states.join(" "),
                    self.net.in_flight_histogram()
                ),
            );
            return Err(self.fail(v));
        }
        if t > self.now {
            self.now = t;
        }
        self.counters.steps += 1;
        match class {
            0 => self.deliver_packet()?,
            1 => self.fire_timeout(key as usize)?,
            _ => {
                let a = self.actions.remove(&(t, key)).expect("action present");
                self.run_action(a)?;
            }
        }
        Ok(true)
    }

    fn deliver_packet(&mut self) -> Result<(), Box<SimError>> {
        let Some(p) = self.net.pop_ready(self.now) else {
            return Ok(());
        };
        let Some(p) = p else { return Ok(()) };
        let Some(&i) = self.idx.get(&p.to) else {
            return Ok(());
        };
        if !self.nodes[i].is_live() {
            self.net.stats.to_dead_node += 1;
            return Ok(());
        }
        let counted = |n: &SimNode| {
            n.engine.as_ref().map(|e| {
                let s = e.stats();
                (s.dropped_malformed, s.dropped_unknown_node)
            })
        };
        let before = counted(&self.nodes[i]);
        let now = self.now;
        let out = self.nodes[i].handle_packet(now, p.from, p.frame.clone());
        if self.opts.trace_packets {
            let kind = network::frame_kind(&p.frame).unwrap_or(255);
            let st = out
                .state
                .map(|(a, b)| format!("{a:?}->{b:?}"))
                .unwrap_or_default();
            let tx: Vec<String> = out
                .transmits
                .iter()
                .map(|t| {
                    format!(
                        "{:?}:{}",
                        t.dest,
                        network::frame_kind(t.frame.segments()[0]).unwrap_or(255)
                    )
                })
                .collect();
            self.note(format!(
                "pkt {}->{} kind {kind} {:?} len {} {st} tx {tx:?}",
                p.from,
                p.to,
                p.kind,
                p.frame.len()
            ));
        }
        if let PacketKind::Garbage(kind) = p.kind {
            let after = counted(&self.nodes[i]);
            if let (Some(b), Some(a)) = (before, after) {
                let grew = a.0 > b.0 || (kind == network::GarbageKind::UnknownSender && a.1 > b.1);
                self.counters.garbage_checked += 1;
                if !grew {
                    let v = Violation::at(
                        ViolationKind::BadInputNotCounted,
                        p.to,
                        format!(
                            "{kind:?} frame of {} bytes from {} not counted as dropped (malformed {}→{}, unknown node {}→{})",
                            p.frame.len(),
                            p.from,
                            b.0,
                            a.0,
                            b.1,
                            a.1
                        ),
                    );
                    return Err(self.fail(v));
                }
            }
        }
        self.process(i, out)
    }

    fn fire_timeout(&mut self, i: usize) -> Result<(), Box<SimError>> {
        let node = self.nodes[i].id;
        let now = self.now;
        if self.last_timeout_at.get(&node) == Some(&now) {
            self.nodes[i].same_instant_timeouts += 1;
            if self.nodes[i].same_instant_timeouts > 10_000 {
                let v = Violation::at(
                    ViolationKind::TimerLivelock,
                    node,
                    format!(
                        "poll_timeout keeps answering {:?} at now {:?}",
                        self.nodes[i].next_timeout, now
                    ),
                );
                return Err(self.fail(v));
            }
        } else {
            self.nodes[i].same_instant_timeouts = 0;
            self.last_timeout_at.insert(node, now);
        }
        let out = self.nodes[i].handle_timeout(now);
        if self.opts.trace_packets {
            let st = out
                .state
                .map(|(a, b)| format!("{a:?}->{b:?}"))
                .unwrap_or_default();
            let tx: Vec<String> = out
                .transmits
                .iter()
                .map(|t| {
                    format!(
                        "{:?}:{}",
                        t.dest,
                        network::frame_kind(t.frame.segments()[0]).unwrap_or(255)
                    )
                })
                .collect();
            self.note(format!("timeout at {node} {st} tx {tx:?}"));
        }
        self.process(i, out)
    }

    fn run_action(&mut self, a: Action) -> Result<(), Box<SimError>> {
        match a {
            Action::FaultTick => self.fault_tick(),
            Action::Restart(n) => self.start_node(n),
            Action::Start(n) => self.start_node(n),
            Action::EndPartition => {
                self.heal_partition();
                Ok(())
            }
            Action::Unblock(a, b) => {
                self.net.unblock(a, b);
                self.note(format!("unblock {a} -> {b}"));
                Ok(())
            }
            Action::Work(n, inc) => self.work(n, inc),
        }
    }

    /// Run until virtual time `until` (everything scheduled up to it happens).
    ///
    /// # Errors
    /// The first violation.
    pub fn run_until_time(&mut self, until: Instant) -> Result<(), Box<SimError>> {
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            self.step()?;
        }
        if self.now < until {
            self.now = until;
        }
        Ok(())
    }

    /// Run for `d` of virtual time.
    ///
    /// # Errors
    /// The first violation.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Box<SimError>> {
        let until = self.now + d;
        self.run_until_time(until)
    }

    /// Run until `pred` holds (checked every 5 ms of virtual time), at most
    /// `bound`. Returns whether it held.
    ///
    /// # Errors
    /// The first violation.
    pub fn run_until(
        &mut self,
        bound: Duration,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Box<SimError>> {
        let end = self.now + bound;
        let tick = Duration::from_millis(5);
        loop {
            if pred(self) {
                return Ok(true);
            }
            if self.now >= end {
                return Ok(false);
            }
            let next = (self.now + tick).min(end);
            self.run_until_time(next)?;
        }
    }

    /// Run until `pred` holds, checked after every single step (for
    /// transient states such as COMMIT), at most `bound`.
    ///
    /// # Errors
    /// The first violation.
    pub fn run_until_step(
        &mut self,
        bound: Duration,
        mut pred: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Box<SimError>> {
        let end = self.now + bound;
        loop {
            if pred(self) {
                return Ok(true);
            }
            match self.next_time() {
                Some(t) if t <= end => {
                    self.step()?;
                }
                _ => {
                    self.now = end;
                    return Ok(pred(self));
                }
            }
        }
    }

    /// Safety phase: faults on for `d`, workload running, checkers after
    /// every step.
    ///
    /// # Errors
    /// The first violation.
    pub fn run_safety(&mut self, d: Duration) -> Result<(), Box<SimError>> {
        self.start_faults();
        self.run_for(d)
    }

    /// End of the safety phase: faults off, partitions and blocks removed,
    /// crashed nodes restarted, no new application messages.
    ///
    /// # Errors
    /// A violation while restarting nodes.
    pub fn heal(&mut self) -> Result<(), Box<SimError>> {
        self.faults_active = false;
        self.workload_active = false;
        self.net.faults = self.opts.faults.calm();
        self.net.heal();
        self.actions
            .retain(|_, a| matches!(a, Action::Work(..) | Action::Start(..)));
        self.note("HEAL: faults off, network whole, crashed nodes restart");
        self.healed_at = Some(self.now);
        for id in self.node_ids() {
            if !self.node(id).is_live() && !self.opts.initially_down.contains(&id) {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// Why the cluster has not converged (None = converged): all live
    /// nodes OPERATIONAL in one ring of all live nodes, no process waiting
    /// to join, leave or resend, every accepted message delivered to its
    /// sender, every member delivered the same messages in the ring, and
    /// every node sees the same members in each group as the processes
    /// expect.
    pub fn convergence_gap(&self) -> Option<String> {
        let gaps = self.convergence_gaps(true);
        gaps.into_iter().next()
    }

    /// Every reason the cluster has not converged (first of each kind; all
    /// of them when `first_only` is false).
    pub fn convergence_gaps(&self, first_only: bool) -> Vec<String> {
        let mut gaps = Vec::new();
        let live = self.live_nodes();
        if live.is_empty() {
            gaps.push("no live node".to_string());
            return gaps;
        }
        let mut ring = None;
        for &n in &live {
            let e = self.engine(n).expect("live");
            if e.state() != State::Operational {
                gaps.push(format!("node {n} is {:?}", e.state()));
                break;
            }
            if e.members() != &live[..] {
                gaps.push(format!(
                    "node {n} ring {} members {:?}, live {:?}",
                    e.ring_id(),
                    e.members(),
                    live
                ));
                break;
            }
            match ring {
                None => ring = Some(e.ring_id()),
                Some(r) if r != e.ring_id() => {
                    gaps.push(format!("node {n} in ring {}, others in {r}", e.ring_id()));
                    break;
                }
                _ => {}
            }
        }
        if first_only && !gaps.is_empty() {
            return gaps;
        }
        'procs: for &n in &live {
            let node = self.node(n);
            for p in &node.procs {
                if p.pending.is_some() {
                    gaps.push(format!(
                        "{n}/{} has a message waiting for TRY_AGAIN retry",
                        p.pid
                    ));
                    break 'procs;
                }
                for (g, st) in &p.groups {
                    if matches!(st, GroupStatus::WantJoin | GroupStatus::WantLeave) {
                        gaps.push(format!(
                            "{n}/{} still has to submit {st:?} for {g:?}",
                            p.pid
                        ));
                        break 'procs;
                    }
                }
            }
        }
        if first_only && !gaps.is_empty() {
            return gaps;
        }
        for &n in &live {
            let own = self.checkers.fifo.undelivered_own(n);
            if !own.is_empty() {
                let sent = self.checkers.fifo.sent(&own[0]);
                gaps.push(format!(
                    "node {n}: {} accepted messages not yet delivered to their sender, first {} ({} bytes {:?}, delivered by nodes {:?})",
                    own.len(),
                    own[0],
                    sent.map_or(0, |s| s.len),
                    sent.map(|s| s.guarantee),
                    self.checkers.fifo.delivered_by(&own[0])
                ));
                break;
            }
        }
        if first_only && !gaps.is_empty() {
            return gaps;
        }
        if let Err(e) = self.checkers.vs.regular_sets_agree(&live) {
            gaps.push(e);
            if first_only {
                return gaps;
            }
        }
        'groups: for (gi, g) in self.groups.iter().enumerate() {
            let mut expect: Vec<MemberAddr> = Vec::new();
            for &n in &live {
                for p in &self.node(n).procs {
                    if p.groups[gi].1.expected_member() {
                        expect.push(MemberAddr {
                            nodeid: n,
                            pid: p.pid,
                        });
                    }
                }
            }
            expect.sort();
            for &n in &live {
                let got = self.engine(n).expect("live").group_members(g);
                if got != expect {
                    let fmt_m = |v: &[MemberAddr]| {
                        v.iter()
                            .map(|m| format!("{}/{}", m.nodeid, m.pid))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    gaps.push(format!(
                        "node {n}: group {g:?} members [{}], expected [{}]",
                        fmt_m(&got),
                        fmt_m(&expect)
                    ));
                    break 'groups;
                }
            }
        }
        gaps
    }

    /// Liveness phase: stop new messages, run until [`Sim::convergence_gap`]
    /// is None (checked every 5 ms of virtual time), at most `bound`.
    ///
    /// # Errors
    /// A violation, or `NoConvergence` / `NotSelfDelivered` when the bound passes.
    pub fn run_until_converged(&mut self, bound: Duration) -> Result<(), Box<SimError>> {
        self.stop_workload();
        let start = self.now;
        let ok = self.run_until(bound, |s| s.convergence_gap().is_none())?;
        if !ok {
            let gaps = self.convergence_gaps(false);
            let first = gaps.first().cloned().unwrap_or_default();
            let gap = gaps.join("; also: ");
            let kind = if first.contains("not yet delivered to their sender") {
                ViolationKind::NotSelfDelivered
            } else if first.contains(" delivered ") && first.contains("ring ") {
                ViolationKind::NotDeliveredToMember
            } else {
                ViolationKind::NoConvergence
            };
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.engine {
                    Some(e) => format!("{}:{:?}@{}{:?}", n.id, e.state(), e.ring_id(), e.members()),
                    None => format!("{}:down", n.id),
                })
                .collect();
            let dumps: Vec<String> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    n.engine
                        .as_ref()
                        .map(|e| format!("  node {}: {}", n.id, e.debug_line()))
                })
                .collect();
            let v = Violation::global(
                kind,
                format!(
                    "not converged {} ms after heal: {gap}; nodes {}\n{}",
                    (self.now - start).as_millis(),
                    states.join(" "),
                    dumps.join("\n")
                ),
            );
            return Err(self.fail(v));
        }
        self.converged_at = Some(self.now);
        self.note(format!(
            "CONVERGED in {} ms",
            (self.now - start).as_millis()
        ));
        if let Err(v) = self.checkers.finish() {
            return Err(self.fail(v));
        }
        Ok(())
    }

    /// Coverage counters of this run: engine stats summed over nodes and
    /// incarnations, network and simulator counters, checker counts.
    pub fn coverage(&self) -> Coverage {
        let mut c = Coverage::default();
        let mut total = cpg_core::engine::Stats::default();
        for n in &self.nodes {
            node::add_stats(&mut total, &n.total_stats());
        }
        for (k, v) in node::stats_fields(&total) {
            c.add(&format!("engine.{k}"), v);
        }
        let s = &self.net.stats;
        for (k, v) in [
            ("net.sent", s.sent),
            ("net.delivered", s.delivered),
            ("net.lost", s.lost),
            ("net.cut", s.cut),
            ("net.duplicated", s.duplicated),
            ("net.garbage", s.garbage),
            ("net.replayed", s.replayed),
            ("net.dropped_by_rule", s.dropped_by_rule),
        ] {
            c.add(k, v);
        }
        let k = &self.counters;
        for (name, v) in [
            ("sim.crashes", k.crashes),
            ("sim.restarts", k.restarts),
            ("sim.partitions", k.partitions),
            ("sim.one_way_blocks", k.one_way_blocks),
            ("sim.garbage_checked", k.garbage_checked),
            ("sim.accepted", k.accepted),
            ("sim.try_again", k.try_again),
            ("sim.joins", k.joins),
            ("sim.leaves", k.leaves),
            ("sim.policy_probes", k.probes),
            ("sim.steps", k.steps),
            ("sim.zc_accepted", k.zc_accepted),
            ("sim.zc_frames", k.zc_frames),
            ("sim.zc_bytes_by_ref", k.zc_bytes_by_ref),
            ("sim.zc_self_checked", k.zc_self_checked),
            ("check.ring_installs", self.checkers.ring.installs),
            ("check.totem_deliveries", self.checkers.order.deliveries),
            ("check.vs_compared", self.checkers.vs.compared),
            ("check.app_delivered", self.checkers.fifo.delivered),
            (
                "check.app_delivered_large",
                self.checkers.fifo.delivered_large,
            ),
            ("check.safe_checked", self.checkers.safe.checked),
            (
                "check.safe_skipped_unsettled",
                self.checkers.safe.skipped_recovery,
            ),
            ("check.confchgs", self.checkers.group.confchgs),
            ("check.group_points_compared", self.checkers.group.compared),
        ] {
            c.add(name, v);
        }
        c
    }

    /// Whether exactly `nodes` are up, OPERATIONAL, in one ring whose
    /// members are `nodes`.
    pub fn one_ring(&self, nodes: &[NodeId]) -> bool {
        let mut want = nodes.to_vec();
        want.sort_unstable();
        let mut ring = None;
        for &n in &want {
            let Some(e) = self.engine(n) else {
                return false;
            };
            if e.state() != State::Operational || e.members() != &want[..] {
                return false;
            }
            match ring {
                None => ring = Some(e.ring_id()),
                Some(r) if r != e.ring_id() => return false,
                _ => {}
            }
        }
        true
    }

    /// Run until [`Sim::one_ring`] holds for `nodes` (at most `bound`).
    ///
    /// # Errors
    /// A violation, or `NoConvergence` when the bound passes.
    pub fn run_until_ring(
        &mut self,
        nodes: &[NodeId],
        bound: Duration,
    ) -> Result<(), Box<SimError>> {
        if self.run_until(bound, |s| s.one_ring(nodes))? {
            return Ok(());
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.engine {
                Some(e) => format!("{}:{:?}@{}{:?}", n.id, e.state(), e.ring_id(), e.members()),
                None => format!("{}:down", n.id),
            })
            .collect();
        let v = Violation::global(
            ViolationKind::NoConvergence,
            format!(
                "no ring of {nodes:?} within {} ms; nodes {}",
                bound.as_millis(),
                states.join(" ")
            ),
        );
        Err(self.fail(v))
    }

    /// Engine stats of all nodes (all incarnations), summed.
    pub fn total_stats(&self) -> cpg_core::engine::Stats {
        let mut total = cpg_core::engine::Stats::default();
        for n in &self.nodes {
            node::add_stats(&mut total, &n.total_stats());
        }
        total
    }

    /// Distinct regular rings installed so far.
    pub fn rings_installed(&self) -> BTreeSet<RingId> {
        self.config_log
            .iter()
            .filter_map(|(_, _, c)| match c {
                ConfigChange::Regular { ring_id, .. } => Some(*ring_id),
                _ => None,
            })
            .collect()
    }
}

/// Run `f`, turning a panic into an error message (engine panics in sweeps).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        if let Some(s) = e.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = e.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        }
    })
}

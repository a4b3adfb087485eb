//! How cost grows with the ring: N engines on the simulator's network
//! ([`cpg_sim::Sim`], faults off, every invariant checker on), every member
//! multicasting AGREED messages as fast as flow control allows, measured in
//! simulated time. A figure is exact, the same on every run and every
//! machine, whatever else the machine is doing.
//!
//! Per ring size ([`run`]):
//! - throughput: application messages each member delivers per second (its
//!   own and everyone else's: every member delivers the whole ring's
//!   stream), for each message size;
//! - token rotation: the time between two visits of the token at node 1
//!   under that load (mean and p99);
//! - failover: node N crashes under load; the time until every survivor
//!   has installed the ring without it, and until every survivor has
//!   delivered the NODEDOWN confchg of its member, beside Corosync's
//!   `token + (N − 2) × token_coefficient + consensus` for the same
//!   settings, with Corosync's timers and with [`Config::fast`]'s.
//!
//! Not measured: CPU. An engine's work takes no simulated time, so the
//! figures are what the protocol and the wire allow (latency, link speed,
//! udpu's one copy per peer, flow control, timers). `cpgtool bench` and
//! `benches/compare.sh` measure real processes.

use core::fmt;

use cpg_core::engine::State;
use cpg_core::limits::Config;
use cpg_core::{CsError, Duration, GroupName, Guarantee, Instant, NodeId};
use cpg_sim::network::FaultOptions;
use cpg_sim::{Sim, SimError, SimOptions, Workload};

/// The simulated network: what a frame costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// One-way delay of a frame once it is out on its sender's link
    /// (propagation, switch, both kernels' stacks).
    pub latency: Duration,
    /// Speed of each node's uplink (`FaultOptions::link_bits_per_sec`).
    pub link_bits_per_sec: u64,
    /// The path's IP MTU (`Config::netmtu`), the same at every ring size.
    pub netmtu: usize,
}

impl Default for Model {
    /// 50 µs one way, 10 Gbit/s links, jumbo frames (netmtu 9000: a node
    /// list of 64 needs more than 1500, so every size gets the same).
    fn default() -> Model {
        Model {
            latency: Duration::from_micros(50),
            link_bits_per_sec: 10_000_000_000,
            netmtu: 9000,
        }
    }
}

/// Which timer settings the engines run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timers {
    /// Corosync 3's defaults ([`Config::new`]: token 3000 ms, coefficient
    /// 650 ms, consensus 1.2 × the effective token, join 50 ms).
    Corosync,
    /// The simulator's and tests' ([`Config::fast`]: the same ratios, ten
    /// times faster).
    Fast,
}

impl Timers {
    /// Short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Timers::Corosync => "corosync",
            Timers::Fast => "fast",
        }
    }

    /// Set `c`'s timers to these, everything else unchanged.
    pub fn apply(self, c: &mut Config) {
        let t = match self {
            Timers::Corosync => Config::new(c.node_id, &c.nodes),
            Timers::Fast => Config::fast(c.node_id, &c.nodes),
        };
        c.token = t.token;
        c.token_coefficient = t.token_coefficient;
        c.token_retransmits_before_loss_const = t.token_retransmits_before_loss_const;
        c.join = t.join;
        c.consensus = t.consensus;
        c.merge = t.merge;
        c.hold = t.hold;
    }
}

/// What to run at one ring size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ring size.
    pub nodes: usize,
    /// The network.
    pub model: Model,
    /// Message sizes of the throughput windows, in order.
    pub sizes: Vec<usize>,
    /// Token rotations (seen at node 1) of load before a window counts.
    pub warmup_rotations: usize,
    /// Token rotations a throughput window lasts.
    pub rotations: usize,
    /// Timer settings to measure failover with (each its own cluster; the
    /// first also carries the throughput windows).
    pub failover: Vec<Timers>,
    /// Size of the messages in flight while a node fails.
    pub failover_size: usize,
}

impl Plan {
    /// The default plan at `nodes`: 64 B and 64 KiB windows of a number
    /// of rotations that keeps a run of every size within minutes (each
    /// rotation carries the same frames, delivered at every member, so a
    /// rotation's cost grows with the ring), failover with both timer
    /// settings under 64 B load.
    pub fn new(nodes: usize) -> Plan {
        Plan {
            nodes,
            model: Model::default(),
            sizes: vec![64, 64 * 1024],
            warmup_rotations: 10,
            rotations: match nodes {
                0..=9 => 200,
                10..=16 => 100,
                17..=32 => 50,
                _ => 25,
            },
            failover: vec![Timers::Corosync, Timers::Fast],
            failover_size: 64,
        }
    }
}

/// One throughput window.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Message size (bytes of application payload).
    pub size: usize,
    /// Simulated length of the window (a whole number of rotations).
    pub window: Duration,
    /// Token rotations in it.
    pub rotations: usize,
    /// Messages each member delivered per second (mean over members).
    pub delivered_per_member: f64,
    /// Messages each member sent per second (the ring's total over N).
    pub sent_per_member: f64,
    /// Application payload each member delivered, 10^6 B per second.
    pub mb_per_member: f64,
    /// Multicast frames the ring sent per rotation: Totem's flow control
    /// allows `window_size` (50), each member its share of it.
    pub frames_per_rotation: f64,
    /// Mean time between two token visits at node 1, µs.
    pub rotation_mean_us: f64,
    /// p99 of those times (nearest rank), µs.
    pub rotation_p99_us: f64,
}

/// One failover: node N crashed under load.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The timers in force.
    pub timers: Timers,
    /// `token + (N − 2) × token_coefficient`.
    pub token_effective: Duration,
    /// `consensus` in force (1.2 × the effective token).
    pub consensus: Duration,
    /// Corosync's failover for these settings: token + (N − 2) ×
    /// token_coefficient + consensus.
    pub corosync: Duration,
    /// Crash → node 1 (the survivors' lowest id) leaves OPERATIONAL: the
    /// token loss detected (by it, or by a survivor whose JOIN reached it).
    pub gather: Duration,
    /// Crash → node 1 enters COMMIT: the survivors agreed (after a
    /// consensus timeout failed the crashed node).
    pub commit: Duration,
    /// Crash → the first survivor installs the ring without the node.
    pub install_first: Duration,
    /// Crash → the last survivor installs it.
    pub install_last: Duration,
    /// Crash → the first survivor delivers the NODEDOWN confchg.
    pub nodedown_first: Duration,
    /// Crash → the last survivor delivers it: the failover time.
    pub nodedown_last: Duration,
}

/// Everything measured at one ring size.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Ring size.
    pub nodes: usize,
    /// One per plan size, in order.
    pub throughput: Vec<Throughput>,
    /// One per plan timer setting, in order.
    pub failover: Vec<Failover>,
}

/// Why a run stopped.
#[derive(Debug)]
pub enum RunError {
    /// The simulator found a violation (or the ring did not form).
    Sim(Box<SimError>),
    /// An engine answered an mcast with something other than CS_OK or
    /// TRY_AGAIN.
    Refused(NodeId, CsError),
    /// The survivors did not settle within the bound after the crash.
    NoFailover(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Sim(e) => write!(f, "simulator: {e}"),
            RunError::Refused(n, e) => write!(f, "node {n} refused an mcast: {e}"),
            RunError::NoFailover(s) => write!(f, "no failover: {s}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<Box<SimError>> for RunError {
    fn from(e: Box<SimError>) -> RunError {
        RunError::Sim(e)
    }
}

/// The process on every node (the simulator's first).
const PID: u32 = 1000;
/// The node whose token visits time a rotation (never the one that fails).
const OBSERVER: NodeId = 1;
/// How often every member tops up its messages in flight.
const REFILL: Duration = Duration::from_micros(100);

/// Run `plan`: one cluster per timer setting. `progress` hears a line as
/// each phase ends (the binary prints them with the wall time).
///
/// # Errors
/// A violation, a refused mcast, or a failover that did not settle.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(String)) -> Result<Row, RunError> {
    let n = plan.nodes;
    let mut row = Row {
        nodes: n,
        throughput: Vec::new(),
        failover: Vec::new(),
    };
    let first = plan.failover.first().copied().unwrap_or(Timers::Corosync);
    let mut b = Bench::start(plan, first)?;
    progress(format!(
        "{n} nodes: ring formed, group joined ({} timers)",
        first.name()
    ));
    for &size in &plan.sizes {
        let t = b.throughput(size, plan)?;
        progress(format!(
            "{n} nodes: {size} B: {:.0} msgs/s per member, rotation {:.0} µs",
            t.delivered_per_member, t.rotation_mean_us
        ));
        row.throughput.push(t);
    }
    for (k, &timers) in plan.failover.iter().enumerate() {
        if k > 0 {
            b = Bench::start(plan, timers)?;
        }
        b.set_size(plan.failover_size)?;
        b.rotations(plan.warmup_rotations)?;
        let f = b.failover(timers)?;
        progress(format!(
            "{n} nodes: failover with {} timers: {:.3} s (Corosync's formula {:.3} s)",
            timers.name(),
            secs(f.nodedown_last),
            secs(f.corosync)
        ));
        row.failover.push(f);
        b.settle()?;
    }
    if plan.failover.is_empty() {
        b.settle()?;
    }
    Ok(row)
}

/// Seconds, for printing.
pub fn secs(d: Duration) -> f64 {
    d.0 as f64 / 1e9
}

/// A cluster under load.
struct Bench {
    sim: Sim,
    group: GroupName,
    /// Size of the messages sent now (0 before the first).
    size: usize,
    /// Bytes each member keeps accepted but not yet delivered back to
    /// itself: four times its share of a rotation's frames (`window_size /
    /// N`, what flow control lets it send a visit once the ring is loaded),
    /// at least 8 frames, at most two visits' worth (`2 × max_messages`).
    /// At most one token visit passes between two refills (a rotation of
    /// even 3 nodes takes longer than [`REFILL`]), so a member never runs
    /// dry; a larger backlog only costs memory and time to drain (64 × 34
    /// frames are 40 rotations of a ring of 64).
    budget_bytes: usize,
    sending: bool,
    /// Record node 1's state changes in `states`.
    watch_states: bool,
    states: Vec<(Instant, State)>,
    next_refill: Instant,
    visits_seen: u64,
    visits: Vec<Instant>,
}

impl Bench {
    /// A ring of `plan.nodes` with `timers`, every member joined to one group.
    fn start(plan: &Plan, timers: Timers) -> Result<Bench, RunError> {
        let n = plan.nodes;
        let mut opts = SimOptions::calm(n);
        opts.workload = Workload::idle();
        opts.faults = FaultOptions {
            delay_base: plan.model.latency,
            jitter_mean: Duration::ZERO,
            link_bits_per_sec: plan.model.link_bits_per_sec,
            ..FaultOptions::none()
        };
        opts.max_steps = u64::MAX;
        let mut sim = Sim::new(1, opts);
        let mut budget_bytes = 0;
        for id in sim.node_ids() {
            let c = &mut sim.node_mut(id).config;
            c.netmtu = plan.model.netmtu;
            timers.apply(c);
            let share = c.window_size.div_ceil(n as u32);
            let frames = (4 * share).clamp(8, 2 * c.max_messages);
            budget_bytes = frames as usize * c.frame_max();
        }
        let ids = sim.node_ids();
        let c = &sim.node(OBSERVER).config;
        let bound = Duration(3 * (c.token_effective().0 + c.consensus_effective().0));
        sim.run_until_ring(&ids, bound)?;
        let group = sim.groups[0].clone();
        let joined = sim.run_until(bound, |s| {
            ids.iter().all(|&id| {
                s.engine(id)
                    .is_some_and(|e| e.group_members(&s.groups[0]).len() == n)
            })
        })?;
        if !joined {
            return Err(RunError::NoFailover(format!(
                "the {n} members did not all join within {} ms",
                bound.as_millis()
            )));
        }
        let now = sim.now;
        Ok(Bench {
            sim,
            group,
            size: 0,
            budget_bytes,
            sending: false,
            watch_states: false,
            states: Vec::new(),
            next_refill: now,
            visits_seen: 0,
            visits: Vec::new(),
        })
    }

    /// Messages of the current size a member keeps in flight.
    fn budget(&self) -> usize {
        (self.budget_bytes / self.size).max(2)
    }

    /// Advance to `until`: every event up to it, refills on their ticks.
    fn run_until(&mut self, until: Instant) -> Result<(), RunError> {
        self.run_while(|b| b.sim.now < until, until)
    }

    /// Advance until `go` is false (checked after every step and refill)
    /// or `until` passes.
    fn run_while(
        &mut self,
        mut go: impl FnMut(&Bench) -> bool,
        until: Instant,
    ) -> Result<(), RunError> {
        while go(self) {
            let next = self.sim.next_time();
            if self.sending
                && self.next_refill <= until
                && next.is_none_or(|t| self.next_refill <= t)
            {
                self.sim.now = self.sim.now.max(self.next_refill);
                self.refill()?;
                self.next_refill = self.next_refill + REFILL;
                continue;
            }
            match next {
                Some(t) if t <= until => {
                    self.sim.step()?;
                    self.note_token();
                    if self.watch_states {
                        self.note_state();
                    }
                }
                _ => {
                    self.sim.now = self.sim.now.max(until);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Every live member tops up its messages in flight.
    fn refill(&mut self) -> Result<(), RunError> {
        let budget = self.budget();
        for id in self.sim.live_nodes() {
            while self.sim.checkers.fifo.undelivered_own_count(id) < budget {
                match self.sim.mcast(id, PID, 0, Guarantee::Agreed, self.size)? {
                    Ok(()) => {}
                    Err(CsError::TryAgain) => break,
                    Err(e) => return Err(RunError::Refused(id, e)),
                }
            }
        }
        Ok(())
    }

    fn note_token(&mut self) {
        let Some(e) = self.sim.engine(OBSERVER) else {
            return;
        };
        let v = e.stats().token_visits;
        if v != self.visits_seen {
            self.visits_seen = v;
            self.visits.push(self.sim.now);
        }
    }

    fn note_state(&mut self) {
        let Some(e) = self.sim.engine(OBSERVER) else {
            return;
        };
        let st = e.state();
        if self.states.last().is_none_or(|&(_, last)| last != st) {
            self.states.push((self.sim.now, st));
        }
    }

    /// Send messages of `size` from now on. A change first lets every
    /// member deliver its messages of the old size back to itself (and
    /// the ring carry them everywhere): otherwise a window would count
    /// them, and on a large ring the members' backlogs take many
    /// rotations to drain.
    fn set_size(&mut self, size: usize) -> Result<(), RunError> {
        if size == self.size {
            return Ok(());
        }
        if self.size == 0 {
            self.size = size;
            self.sending = true;
            self.next_refill = self.sim.now;
            return Ok(());
        }
        self.sending = false;
        let until = self.sim.now + Duration::from_millis(3_600_000);
        self.run_while(
            |b| {
                b.sim
                    .live_nodes()
                    .iter()
                    .any(|&id| b.sim.checkers.fifo.undelivered_own_count(id) > 0)
            },
            until,
        )?;
        // One more rotation: the others deliver what each member delivered
        // to itself last.
        self.rotations(2)?;
        self.size = size;
        self.sending = true;
        self.next_refill = self.sim.now;
        Ok(())
    }

    /// Run under load until `count` more token visits at node 1.
    fn rotations(&mut self, count: usize) -> Result<(), RunError> {
        self.visits.clear();
        // A ring that stops rotating fails the run through the simulator's
        // checks long before this.
        let until = self.sim.now + Duration::from_millis(3_600_000);
        self.run_while(|b| b.visits.len() < count, until)?;
        if self.visits.len() < count {
            return Err(RunError::NoFailover(format!(
                "only {} token rotations in an hour",
                self.visits.len()
            )));
        }
        Ok(())
    }

    /// Per live node: (application messages delivered, frames sent that
    /// are not tokens).
    fn counts(&self) -> Vec<(u64, u64)> {
        self.sim
            .live_nodes()
            .iter()
            .filter_map(|&id| self.sim.engine(id))
            .map(|e| {
                let s = e.stats();
                // Each visit forwards the token once; under load nothing
                // else but multicasts is sent (no token retransmits, no
                // merge detects: the ring is never idle).
                (s.app_delivered, s.frames_sent - s.token_visits)
            })
            .collect()
    }

    /// A window of `plan.rotations` rotations at `size`, after a warm-up.
    fn throughput(&mut self, size: usize, plan: &Plan) -> Result<Throughput, RunError> {
        self.set_size(size)?;
        self.rotations(plan.warmup_rotations)?;
        // Both ends of the window are token visits at node 1 (the steps
        // that brought the token): a whole number of rotations.
        let start = self.sim.now;
        let before = self.counts();
        self.rotations(plan.rotations.max(1))?;
        let after = self.counts();
        let mut visits = std::mem::take(&mut self.visits);
        visits.insert(0, start);
        let window = *visits.last().expect("rotations") - start;
        let secs = window.0 as f64 / 1e9;
        let n = before.len() as f64;
        let total: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
        let frames: u64 = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).sum();
        let delivered_per_member = total as f64 / n / secs;
        let mut gaps: Vec<u64> = visits.windows(2).map(|w| (w[1] - w[0]).0).collect();
        gaps.sort_unstable();
        let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
        let p99 = gaps[(gaps.len() * 99).div_ceil(100).max(1) - 1] as f64;
        Ok(Throughput {
            size,
            window,
            rotations: gaps.len(),
            frames_per_rotation: frames as f64 / gaps.len() as f64,
            delivered_per_member,
            sent_per_member: delivered_per_member / n,
            mb_per_member: delivered_per_member * size as f64 / 1e6,
            rotation_mean_us: mean / 1e3,
            rotation_p99_us: p99 / 1e3,
        })
    }

    /// Crash node N under load; run until every survivor is in the ring
    /// without it and sees its member gone from the group.
    fn failover(&mut self, timers: Timers) -> Result<Failover, RunError> {
        let victim = *self.sim.node_ids().last().expect("nodes");
        let c = self.sim.node(OBSERVER).config.clone();
        let (token_effective, consensus) = (c.token_effective(), c.consensus_effective());
        let t0 = self.sim.now;
        self.sim.crash(victim);
        self.states.clear();
        self.watch_states = true;
        self.note_state();
        let survivors = self.sim.live_nodes();
        let group = self.group.clone();
        let settled = |b: &Bench| {
            survivors.iter().all(|&id| {
                b.sim.engine(id).is_some_and(|e| {
                    e.members() == &survivors[..]
                        && e.group_members(&group).iter().all(|m| m.nodeid != victim)
                })
            })
        };
        let bound = t0 + Duration(3 * (token_effective.0 + consensus.0));
        // Checked every millisecond of simulated time; the times below
        // come from the logs, exact to the step.
        while !settled(self) && self.sim.now < bound {
            let until = (self.sim.now + Duration::from_millis(1)).min(bound);
            self.run_until(until)?;
        }
        self.watch_states = false;
        let entered = |want: &dyn Fn(State) -> bool| {
            self.states
                .iter()
                .find(|&&(_, st)| want(st))
                .map_or(Duration::ZERO, |&(at, _)| at - t0)
        };
        let gather = entered(&|st| st != State::Operational);
        let commit = entered(&|st| st == State::Commit);
        if !settled(self) {
            return Err(RunError::NoFailover(format!(
                "{} survivors not settled {} ms after node {victim} crashed",
                survivors.len(),
                (bound - t0).as_millis()
            )));
        }
        let mut installs = Vec::new();
        let mut downs = Vec::new();
        for &id in &survivors {
            let install = self.sim.config_log.iter().find_map(|(at, node, ch)| {
                let cpg_core::engine::ConfigChange::Regular { members, .. } = ch else {
                    return None;
                };
                (*at >= t0 && *node == id && !members.contains(&victim)).then_some(*at - t0)
            });
            let down = self.sim.confchg_log.iter().find_map(|(at, node, g, m)| {
                (*at >= t0 && *node == id && *g == group && m.iter().all(|m| m.nodeid != victim))
                    .then_some(*at - t0)
            });
            installs.extend(install);
            downs.extend(down);
        }
        if installs.len() != survivors.len() || downs.len() != survivors.len() {
            return Err(RunError::NoFailover(
                "a survivor's install or confchg is missing from the logs".to_string(),
            ));
        }
        Ok(Failover {
            timers,
            token_effective,
            consensus,
            corosync: Duration(token_effective.0 + consensus.0),
            gather,
            commit,
            install_first: *installs.iter().min().expect("survivors"),
            install_last: *installs.iter().max().expect("survivors"),
            nodedown_first: *downs.iter().min().expect("survivors"),
            nodedown_last: *downs.iter().max().expect("survivors"),
        })
    }

    /// Stop sending and let the ring drain: every accepted message of a
    /// survivor delivered, the survivors' delivered sets and group views
    /// equal (the simulator's convergence check, then its end-of-run
    /// checks).
    fn settle(&mut self) -> Result<(), RunError> {
        self.sending = false;
        let c = &self.sim.node(OBSERVER).config;
        let bound = Duration(3 * (c.token_effective().0 + c.consensus_effective().0));
        self.sim.run_until_converged(bound)?;
        Ok(())
    }
}

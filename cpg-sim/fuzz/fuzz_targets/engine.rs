//! Datagram sequences into a live 3-node cluster: no panic, no storm, and
//! every invariant a node can hold on its own.
//!
//! Each input starts from a copy of one of a few warmed-up clusters (see
//! [`snapshots`]: booting, operational, in COMMIT, in RECOVERY, operational
//! again after a merge) whose applications keep multicasting (the
//! simulator's light workload, with a little group churn and policy
//! probes), so forged frames meet a live ring. The
//! input is decoded into at most [`OPS_MAX`] datagrams, each (target node,
//! claimed sender, delay, bytes), in one of three modes:
//!
//! - **raw**: the input's bytes as they are (the parsers and the drop path);
//! - **built**: a header built the way a node builds it (magic, version,
//!   kind, cluster id, a sender from the node list, body length, the
//!   authenticator: [`Sealer`]) around a body taken from the input;
//!   optionally the target's current ring id (and, for a token, the target
//!   as addressee) is written into the body, so mutations reach the Totem
//!   state machine instead of being dropped as stale;
//! - **mutated**: a frame the cluster really sent (from the network's
//!   history, so ring ids, seqs and token seqs are live), with some bytes
//!   changed, maybe another claimed sender, resealed.
//!
//! Between datagrams the cluster runs for a gap the input chooses, after
//! the last one for [`TAIL`]. The simulator's PRNG is part of the snapshot,
//! so every input replays exactly.
//!
//! # What is checked
//! No panic (the engine's own assertions included). The simulator's
//! checkers run after every step with [`Trust::Forged`]: frames are not
//! authenticated yet, so a forger can speak as any node and show each node
//! something else, and nothing lets an engine tell: a forged MCAST
//! delivered as node 2's message, two nodes with different messages at one
//! (ring, seq), a forged token that makes a node deliver SAFE early or
//! discard what others still miss. The checks that compare nodes or trust
//! a peer's claim (ring members agree, total order across nodes, virtual
//! synchrony, SAFE, application payloads whole / accepted / unique / FIFO,
//! equal group views) are therefore off; they become meaningful again once
//! frames are authenticated and this target seals with a key. Everything
//! one node can check alone stays on, for every node: its configuration
//! changes are well formed (transitional ⊆ previous ∩ next, left and joined
//! right, members sorted, rep lowest, itself a member, ring seqs rising and
//! persisted before use), its deliveries ascend in (ring, seq) and lie in
//! their configuration, its group confchgs are sorted and follow from the
//! previous one, no illegal state jump, no timer livelock, a mcast to a
//! group never joined is NOT_EXIST, join/leave/mcast answer only what the
//! API allows. Resources: the packets in flight stay bounded
//! ([`IN_FLIGHT_MAX`]), and memory by libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb`. The work per unit of virtual time is not judged: a
//! booting node alone passes its token to itself every simulated
//! microsecond, as busy as a storm would look. Liveness under forgery (a ring forms again once
//! the forger stops) is not checked: a forged token can legitimately make
//! the ring believe what a real one would, and the liveness faults of a
//! corrupted token are issue 8's bugs 2 and 3.
#![no_main]

use std::sync::OnceLock;

use cpg_core::engine::State;
use cpg_core::wire::{FRAME_HEADER_LEN, MAGIC, VERSION};
use cpg_core::{Duration, Instant, NodeId};
use cpg_sim::checker::{Checkers, Trust};
use cpg_sim::network::{header, Frame, ALIEN_NODE};
use cpg_sim::{Sim, SimError, SimOptions, Workload};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The cluster: three nodes.
const NODES: [NodeId; 3] = [1, 2, 3];
/// Cluster id of the simulated cluster (`SimOptions::calm`).
const CLUSTER_ID: u32 = 0x5157;
/// Datagrams per input.
const OPS_MAX: usize = 8;
/// Longest raw datagram or built body: a frame at the default netmtu.
const BYTES_MAX: usize = 1500;
/// Longest gap between two datagrams.
const GAP_MAX_US: u64 = 5_000;
/// Longest delay of one datagram on the wire.
const DELAY_MAX_US: u64 = 1_000;
/// How long the cluster runs after the last datagram.
const TAIL: Duration = Duration::from_millis(5);
/// Engine calls per input: keeps an input cheap (the cluster's own traffic
/// is a few steps per virtual millisecond, ~14 while a ring forms) while
/// leaving room for a membership round (a few ms on 100 µs links: a forged
/// frame acts at once, no timer needs to expire).
const STEPS_MAX: u64 = 300;
/// Packets in flight at the end of an input: a handful in a calm cluster,
/// tens during a membership change; far more is a storm.
const IN_FLIGHT_MAX: usize = 300;

/// Header fields the simulator's `network::header` does not name (layout:
/// `cpg_core::wire` module docs).
const BODY_LEN: core::ops::Range<usize> = 12..16;
const AUTH: core::ops::Range<usize> = 16..24;

/// Fills in a frame's authenticator, as the sending node would.
///
/// Frames are not authenticated yet: `parse_frame` accepts only an all-zero
/// slot, which [`IntegrityCheck`] writes. When frame authentication lands (the
/// security issue), a sealer computing the MAC with a test cluster key
/// replaces it in [`SEALER`]: built and mutated frames then still reach the
/// engine, raw ones test the verification.
trait Sealer {
    fn seal(&self, frame: &mut [u8]);
}

/// The authenticator the code requires today: a control frame's integrity
/// check (`cpg_core::wire::control_check`), zero on an MCAST.
struct IntegrityCheck;

impl Sealer for IntegrityCheck {
    fn seal(&self, frame: &mut [u8]) {
        if let Some(auth) = frame.get_mut(AUTH) {
            auth.fill(0);
        }
        cpg_core::wire::seal(frame);
    }
}

const SEALER: IntegrityCheck = IntegrityCheck;

/// Warmed-up clusters, built once per process; each input runs on a copy.
fn snapshots() -> &'static [Sim] {
    static SNAPSHOTS: OnceLock<Vec<Sim>> = OnceLock::new();
    SNAPSHOTS.get_or_init(build_snapshots)
}

fn build_snapshots() -> Vec<Sim> {
    let mut opts = SimOptions::calm(NODES.len());
    // The light workload, plus what the group layer's policy checks need:
    // mcasts to a group never joined (must answer NOT_EXIST) and some
    // leaving and rejoining.
    opts.workload = Workload {
        probe_prob: 0.02,
        churn_prob: 0.02,
        ..Workload::light()
    };
    opts.cluster_id = CLUSTER_ID;
    opts.max_steps = u64::MAX;
    let mut sim = Sim::new(1, opts);
    sim.checkers = Checkers::with_trust(Trust::Forged);
    let bound = Duration::from_millis(20_000);
    let ok = |r: Result<(), Box<SimError>>| r.unwrap_or_else(|e| panic!("warm-up: {e}"));
    let in_state = |s: &Sim, st: State| {
        NODES
            .iter()
            .any(|&n| s.engine(n).is_some_and(|e| e.state() == st))
    };
    let mut out = vec![sim.clone()];
    ok(sim.run_until_ring(&NODES, bound));
    ok(sim.run_for(Duration::from_millis(100)));
    out.push(sim.clone());
    // A partition and its heal: the merge passes through COMMIT and
    // RECOVERY with old-ring messages to recover.
    sim.partition(&[vec![1, 2], vec![3]]);
    ok(sim.run_until_ring(&[1, 2], bound));
    ok(sim.run_for(Duration::from_millis(100)));
    sim.heal_partition();
    for st in [State::Commit, State::Recovery] {
        let reached = sim.run_until_step(bound, |s| in_state(s, st));
        assert!(
            matches!(reached, Ok(true)),
            "warm-up: no node reached {st:?}"
        );
        out.push(sim.clone());
    }
    ok(sim.run_until_ring(&NODES, bound));
    ok(sim.run_for(Duration::from_millis(100)));
    out.push(sim);
    out
}

/// Totem kinds whose body starts with a ring id.
fn has_ring_id(kind: u8) -> bool {
    matches!(
        kind,
        header::KIND_TOKEN
            | header::KIND_MCAST
            | header::KIND_MERGE_DETECT
            | header::KIND_COMMIT
            | header::KIND_HOLD_CANCEL
    )
}

/// A frame as a node of this cluster builds it, around `body`.
fn build_frame(kind: u8, sender: NodeId, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0; FRAME_HEADER_LEN + body.len()];
    f[header::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
    f[header::VERSION] = VERSION;
    f[header::KIND] = kind;
    f[header::CLUSTER].copy_from_slice(&CLUSTER_ID.to_le_bytes());
    f[header::SENDER].copy_from_slice(&sender.to_le_bytes());
    // BYTES_MAX bounds the body: it fits a u32.
    f[BODY_LEN].copy_from_slice(&(body.len() as u32).to_le_bytes());
    f[FRAME_HEADER_LEN..].copy_from_slice(body);
    SEALER.seal(&mut f);
    f
}

/// One datagram to put on the wire.
struct Datagram {
    to: NodeId,
    /// The sender the network delivers it from (the claimed one).
    from: NodeId,
    delay: Duration,
    bytes: Vec<u8>,
}

struct Run {
    sim: Sim,
    start_steps: u64,
}

impl Run {
    fn decode(&self, u: &mut Unstructured<'_>) -> ArbResult<Datagram> {
        let mode = u.int_in_range(0u8..=2)?;
        let to = *u.choose(&NODES)?;
        let delay = Duration::from_micros(u.int_in_range(0..=DELAY_MAX_US)?);
        let bytes = match mode {
            0 => {
                let len = u.int_in_range(0..=BYTES_MAX)?;
                u.bytes(len.min(u.len()))?.to_vec()
            }
            1 => self.built(u, to)?,
            _ => self.mutated(u)?,
        };
        let claimed = bytes
            .get(header::SENDER)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
        let from = claimed.filter(|n| NODES.contains(n)).unwrap_or(ALIEN_NODE);
        Ok(Datagram {
            to,
            from,
            delay,
            bytes,
        })
    }

    /// A valid header around an input body; the target's live ring id
    /// written in when the input asks.
    fn built(&self, u: &mut Unstructured<'_>, to: NodeId) -> ArbResult<Vec<u8>> {
        let sender = *u.choose(&NODES)?;
        let kind = u.int_in_range(header::KIND_TOKEN..=header::KIND_HOLD_CANCEL)?;
        let flags: u8 = u.arbitrary()?;
        let len = u.int_in_range(0..=BYTES_MAX)?;
        let mut body = u.bytes(len.min(u.len()))?.to_vec();
        let ring = self.sim.engine(to).map(|e| e.ring_id());
        if let (true, Some(ring)) = (flags & 1 != 0, ring) {
            if has_ring_id(kind) && body.len() >= 12 {
                body[0..4].copy_from_slice(&ring.rep.to_le_bytes());
                body[4..12].copy_from_slice(&ring.seq.to_le_bytes());
            } else if kind == header::KIND_JOIN && body.len() >= 8 {
                body[0..8].copy_from_slice(&ring.seq.to_le_bytes());
            }
        }
        // A token names its addressee (`TokenRepr::target`) at 40..44.
        if flags & 2 != 0 && kind == header::KIND_TOKEN && body.len() >= 44 {
            body[40..44].copy_from_slice(&to.to_le_bytes());
        }
        Ok(build_frame(kind, sender, &body))
    }

    /// A frame the cluster sent, with bytes changed, resealed.
    fn mutated(&self, u: &mut Unstructured<'_>) -> ArbResult<Vec<u8>> {
        let history: Vec<&Frame> = self.sim.net.history().map(|(_, _, f)| f).collect();
        let i = u.choose_index(history.len())?;
        let mut f = history[i].to_vec();
        let flags: u8 = u.arbitrary()?;
        if flags & 1 != 0 {
            let sender = *u.choose(&NODES)?;
            f[header::SENDER].copy_from_slice(&sender.to_le_bytes());
        }
        for _ in 0..u.int_in_range(0..=3u8)? {
            let at = u.choose_index(f.len())?;
            let v: u8 = u.arbitrary()?;
            // Set the byte, or add to it (seqs, counts and ids move by small
            // steps more often than they jump).
            if flags & 2 != 0 {
                f[at] = v;
            } else {
                f[at] = f[at].wrapping_add(v);
            }
        }
        if flags & 4 != 0 {
            let cut = u.choose_index(f.len())?;
            f.truncate(cut.max(FRAME_HEADER_LEN));
        }
        if flags & 8 == 0 {
            let body = (f.len() - FRAME_HEADER_LEN) as u32;
            f[BODY_LEN].copy_from_slice(&body.to_le_bytes());
        }
        SEALER.seal(&mut f);
        Ok(f)
    }

    /// Run until `until` or the step budget, whichever comes first.
    fn run_until(&mut self, until: Instant) -> Result<(), Box<SimError>> {
        while let Some(t) = self.sim.next_time() {
            if t > until || self.sim.counters.steps - self.start_steps >= STEPS_MAX {
                break;
            }
            self.sim.step()?;
        }
        Ok(())
    }

    fn go(&mut self, u: &mut Unstructured<'_>) -> Result<(), Box<SimError>> {
        for _ in 0..OPS_MAX {
            let Ok(d) = self.decode(u) else { break };
            let Ok(gap) = u.int_in_range(0..=GAP_MAX_US) else {
                break;
            };
            if trace() {
                let at = self.sim.now + d.delay;
                let kind = d.bytes.get(header::KIND);
                self.sim.note(format!(
                    "INJECT {} -> {} at {at:?} kind {kind:?} {:02x?}",
                    d.from, d.to, d.bytes
                ));
            }
            self.sim.inject(d.from, d.to, d.bytes.into(), d.delay);
            let until = self.sim.now + Duration::from_micros(gap);
            self.run_until(until)?;
        }
        let until = self.sim.now + TAIL;
        self.run_until(until)
    }

    /// Resource bounds at the end of an input.
    fn check_bounds(&self) {
        let in_flight = self.sim.net.in_flight();
        assert!(
            in_flight <= IN_FLIGHT_MAX,
            "{in_flight} packets in flight (by sender, kind): {:?}",
            self.sim.net.in_flight_histogram()
        );
    }
}

/// `CPG_FUZZ_TRACE=1`: print each input's story (every datagram, packet
/// and timeout with the state changes), to replay a crash by hand:
/// `CPG_FUZZ_TRACE=1 cargo +nightly fuzz run -s none engine artifacts/engine/crash-…`.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CPG_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

fn story(sim: &Sim) -> String {
    sim.log
        .iter()
        .map(|l| format!("{:>9.6}s {}\n", l.at.0 as f64 / 1e9, l.text))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let snapshots = snapshots();
    let mut u = Unstructured::new(data);
    let Ok(i) = u.choose_index(snapshots.len()) else {
        return;
    };
    let mut sim = snapshots[i].clone();
    if trace() {
        sim.log.clear();
        sim.opts.log_all = true;
        sim.opts.trace_packets = true;
        sim.note(format!("snapshot {i}, steps so far {}", sim.counters.steps));
    }
    let mut run = Run {
        start_steps: sim.counters.steps,
        sim,
    };
    let result = run.go(&mut u);
    if trace() {
        eprint!("{}", story(&run.sim));
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    run.check_bounds();
});

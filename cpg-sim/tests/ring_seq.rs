//! Ring seq bounds (`docs/spec/totem.md` §1.2, "ring seq bounds"): a JOIN
//! or commit token naming a ring seq no honest node could reach is dropped
//! and counted (`dropped_ring_seq_jump`), one forged frame moves a ring's
//! seq by a bounded amount its members follow, and honest nodes keep
//! liveness however far apart their ring seqs are: a node whose state was
//! lost restarts at 1 and joins a cluster at a high seq, partitions that
//! re-formed a different number of times merge.
//!
//! `cargo test -p cpg-sim --release --test ring_seq -- --nocapture`

use cpg_core::limits::{RING_SEQ_JUMP_MAX, RING_SEQ_MAX};
use cpg_core::wire::{emit_frame, frame_len, CommitEntry, CommitRepr, JoinRepr, Packet};
use cpg_core::{Duration, NodeId, RingId};
use cpg_sim::checker::{Checkers, Trust};
use cpg_sim::node::{Disk, RestartMode};
use cpg_sim::{Sim, SimError, SimOptions};

fn ok<T>(r: Result<T, Box<SimError>>) -> T {
    r.unwrap_or_else(|e| panic!("\n{e}\n"))
}

fn bound() -> Duration {
    Duration::from_millis(20_000)
}

fn sim(name: &str, opts: SimOptions) -> Sim {
    let mut s = Sim::new(1, opts);
    s.replay_hint =
        format!("cargo test -p cpg-sim --release --test ring_seq {name} -- --nocapture");
    s
}

/// A calm 3-node cluster checked as the fuzz target checks it (a forger
/// may legitimately make nodes disagree; see `forged.rs`).
fn forged_sim(name: &str) -> Sim {
    let mut s = sim(name, SimOptions::calm(3));
    s.checkers = Checkers::with_trust(Trust::Forged);
    s
}

/// The liveness bound of a membership change in this cluster (spec §9):
/// a GATHER round (at most 1.5 × consensus), the commit token's two
/// rotations and a token timeout for a round that failed, twice.
fn liveness(s: &Sim) -> Duration {
    let c = s.engine(s.live_nodes()[0]).unwrap().config().clone();
    let round = c.token_effective().0 + c.consensus_effective().0 * 3 / 2;
    Duration(2 * round)
}

fn join_frame(s: &Sim, sender: NodeId, ring_seq: u64, nodes: &[NodeId]) -> Vec<u8> {
    let join = Packet::Join(JoinRepr {
        ring_seq,
        leave: false,
        proc_list: nodes.iter().copied().collect(),
        fail_list: Default::default(),
    });
    let mut bytes = vec![0; frame_len(&join)];
    emit_frame(sender, s.opts.cluster_id, &join, &mut bytes).expect("emit");
    bytes
}

fn commit_frame(s: &Sim, rep: NodeId, seq: u64, nodes: &[NodeId]) -> Vec<u8> {
    let commit = Packet::Commit(CommitRepr {
        ring_id: RingId { rep, seq },
        token_seq: 1,
        memb_index: 1,
        addr: nodes.iter().copied().collect(),
        entries: nodes.iter().map(|_| CommitEntry::default()).collect(),
    });
    let mut bytes = vec![0; frame_len(&commit)];
    emit_frame(rep, s.opts.cluster_id, &commit, &mut bytes).expect("emit");
    bytes
}

fn jumps(s: &Sim, n: NodeId) -> u64 {
    s.engine(n).unwrap().stats().dropped_ring_seq_jump
}

fn delivered(s: &Sim) -> u64 {
    s.live_nodes()
        .iter()
        .map(|&n| s.engine(n).unwrap().stats().app_delivered)
        .sum()
}

/// The security issue's frame: one JOIN claiming ring seq 2^64 − 5 made
/// every node adopt it, install ring seq u64::MAX and persist it; the next
/// membership change wrapped `seq + 4` and no ring formed for 85 s and
/// more. Such a JOIN, one just above `RING_SEQ_MAX`, and one 2^41 above
/// the ring's seq (a jump no honest history makes) are dropped and
/// counted, at every node they reach; commit tokens likewise. The ring
/// stays as it was and keeps delivering.
#[test]
fn join_and_commit_with_unreachable_ring_seqs_are_dropped() {
    let mut s = forged_sim("join_and_commit_with_unreachable_ring_seqs_are_dropped");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(200)));
    let ring = s.engine(1).unwrap().ring_id();
    let before: Vec<u64> = [1, 2, 3].iter().map(|&n| jumps(&s, n)).collect();
    let seqs = [
        u64::MAX - 4,
        RING_SEQ_MAX + 1,
        ring.seq + 2 * RING_SEQ_JUMP_MAX,
    ];
    for to in [1, 3] {
        for seq in seqs {
            let join = join_frame(&s, 2, seq, &[1, 2, 3]);
            s.inject(2, to, join.into(), Duration::from_micros(10));
            let commit = commit_frame(&s, 2, seq, &[1, 2, 3]);
            s.inject(2, to, commit.into(), Duration::from_micros(20));
        }
    }
    let was = delivered(&s);
    ok(s.run_for(Duration::from_millis(2_000)));
    for (i, n) in [1, 3].into_iter().enumerate() {
        assert_eq!(
            jumps(&s, n),
            before[i * 2] + 6,
            "node {n}: three JOINs and three commit tokens counted"
        );
    }
    assert_eq!(jumps(&s, 2), before[1], "node 2 got none");
    for n in [1, 2, 3] {
        let e = s.engine(n).unwrap();
        assert_eq!(e.ring_id(), ring, "node {n}: no new ring");
        assert!(
            s.node(n).disk.ring_seq <= Some(ring.seq),
            "node {n} persisted nothing higher"
        );
    }
    assert!(s.one_ring(&[1, 2, 3]));
    assert!(delivered(&s) > was, "the ring keeps delivering");
    ok(s.run_until_converged(bound()));
}

/// The frame that would split a cluster under a plain "at most 2^40 above
/// what I know" rule: a JOIN just inside that bound, sent to the rep only.
/// The rep would create the next ring 2^40 + 3 above its peers' seq, they
/// would drop its commit token and then its JOINs, for good. A JOIN raises
/// the base of the next ring by at most RING_SEQ_JUMP_MAX / 4 above the
/// ring a node is in, and a commit token may be RING_SEQ_JUMP_MAX / 2 above
/// what a node knows: the next ring is that much higher, every member
/// follows within one membership change, and the ring delivers.
#[test]
fn one_forged_join_below_the_bound_moves_the_ring_seq_a_bounded_step() {
    let mut s = forged_sim("one_forged_join_below_the_bound_moves_the_ring_seq_a_bounded_step");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(200)));
    let ring = s.engine(1).unwrap().ring_id();
    let join = join_frame(&s, 2, ring.seq + RING_SEQ_JUMP_MAX - 1, &[1, 2, 3]);
    s.inject(2, 1, join.into(), Duration::from_micros(10));
    let live = liveness(&s);
    ok(s.run_for(Duration::from_millis(1)));
    let started = s.now;
    ok(s.run_until(live, |s| {
        s.one_ring(&[1, 2, 3]) && s.engine(1).unwrap().ring_id() != ring
    }));
    assert!(
        s.one_ring(&[1, 2, 3]),
        "one ring again within {} ms",
        live.as_millis()
    );
    let now = s.engine(1).unwrap().ring_id();
    println!(
        "ring {ring} -> {now} in {} ms (+{})",
        (s.now - started).as_millis(),
        now.seq - ring.seq
    );
    assert!(now.seq > ring.seq + 4, "the JOIN's seq was adopted, capped");
    assert!(
        now.seq <= ring.seq + RING_SEQ_JUMP_MAX / 4 + 8,
        "by at most a quarter of the bound: {now}"
    );
    let was = delivered(&s);
    ok(s.run_for(Duration::from_millis(1_000)));
    assert!(delivered(&s) > was, "the new ring delivers");
    ok(s.run_until_converged(bound()));
}

/// A flood of forged JOINs, each 2^40 − 1 above the last, to every node:
/// a node adopting each JOIN's seq (or judging each against the seq it
/// adopted from the one before) would climb by 200 × 2^40; the base of the
/// next ring rises no further than one of them could raise it.
#[test]
fn a_ladder_of_forged_joins_moves_the_ring_seq_no_further_than_one() {
    let mut s = forged_sim("a_ladder_of_forged_joins_moves_the_ring_seq_no_further_than_one");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(200)));
    let ring = s.engine(1).unwrap().ring_id();
    let mut seq = ring.seq;
    for k in 0..200u64 {
        seq += RING_SEQ_JUMP_MAX - 1;
        let to = [1, 2, 3][k as usize % 3];
        let join = join_frame(&s, [2, 3, 1][k as usize % 3], seq, &[1, 2, 3]);
        s.inject(2, to, join.into(), Duration::from_micros(k));
    }
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_until(bound(), |s| {
        s.one_ring(&[1, 2, 3]) && s.engine(1).unwrap().ring_id() != ring
    }));
    ok(s.run_for(Duration::from_millis(1_000)));
    let now = s.engine(1).unwrap().ring_id();
    println!(
        "ring {ring} -> {now} (+{}); {} JOINs dropped",
        now.seq - ring.seq,
        [1, 2, 3].iter().map(|&n| jumps(&s, n)).sum::<u64>()
    );
    assert!(
        now.seq <= ring.seq + RING_SEQ_JUMP_MAX / 4 + 16,
        "200 forged JOINs moved the ring seq by {}",
        now.seq - ring.seq
    );
    ok(s.run_until_converged(bound()));
}

/// A node whose state directory was lost restarts at ring seq 1 and must
/// still join a cluster at a high seq (it adopts the others' seq): here
/// node 1, the lowest id, so it creates the commit token of the merged ring
/// itself, from the seq it adopted.
#[test]
fn node_restarted_with_empty_state_joins_a_cluster_at_a_high_ring_seq() {
    let mut s = sim(
        "node_restarted_with_empty_state_joins_a_cluster_at_a_high_ring_seq",
        SimOptions::calm(3),
    );
    for n in [1, 2, 3] {
        s.node_mut(n).disk.ring_seq = Some(1_000_000);
    }
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    let high = s.engine(1).unwrap().ring_id().seq;
    assert!(high > 1_000_000);
    ok(s.run_for(Duration::from_millis(300)));
    s.crash(1);
    ok(s.run_until_ring(&[2, 3], bound()));
    // The state directory is gone: no stored seq, no boot count either
    // (BootCounter tells the checkers that no ring history survives).
    s.node_mut(1).disk = Disk::default();
    ok(s.start_node_with(1, RestartMode::BootCounter));
    assert_eq!(s.node(1).initial_ring_seq, 1);
    let live = liveness(&s);
    let started = s.now;
    ok(s.run_until_ring(&[1, 2, 3], live));
    let ring = s.engine(1).unwrap().ring_id();
    println!(
        "node 1 from seq 1 joined ring {ring} in {} ms (bound {} ms)",
        (s.now - started).as_millis(),
        live.as_millis()
    );
    assert!(ring.seq > high, "the ring's seq went on from the cluster's");
    ok(s.run_until_converged(bound()));
}

/// Two partitions whose ring seqs are far apart (one re-formed many more
/// times, or its nodes restarted from old state) merge once healed: at
/// 10^6 apart, and at 2^39 apart, more than a JOIN raises the base by, so
/// the low side's rep (node 1) needs a round of its own before its commit
/// token is above the high side's seq.
#[test]
fn partitions_with_very_different_ring_seqs_merge() {
    for (low, high) in [(5u64, 1_000_000u64), (5, 5 + RING_SEQ_JUMP_MAX / 2)] {
        let name = "partitions_with_very_different_ring_seqs_merge";
        let mut s = sim(name, SimOptions::calm(4));
        for n in [1, 2] {
            s.node_mut(n).disk.ring_seq = Some(low);
        }
        for n in [3, 4] {
            s.node_mut(n).disk.ring_seq = Some(high);
        }
        s.partition(&[vec![1, 2], vec![3, 4]]);
        ok(s.run_until(bound(), |s| s.one_ring(&[1, 2]) && s.one_ring(&[3, 4])));
        assert!(s.one_ring(&[1, 2]) && s.one_ring(&[3, 4]));
        ok(s.run_for(Duration::from_millis(500)));
        let top = s.engine(3).unwrap().ring_id().seq;
        s.heal_partition();
        let live = liveness(&s);
        let started = s.now;
        ok(s.run_until_ring(&[1, 2, 3, 4], Duration(2 * live.0)));
        let ring = s.engine(1).unwrap().ring_id();
        println!(
            "{low} | {high}: merged into ring {ring} in {} ms (bound {} ms)",
            (s.now - started).as_millis(),
            2 * live.as_millis()
        );
        assert!(ring.seq > top);
        assert_eq!(
            (1..=4).map(|n| jumps(&s, n)).sum::<u64>(),
            0,
            "no honest frame is dropped as a jump"
        );
        ok(s.run_until_converged(bound()));
    }
}

/// An engine starts from a ring seq in 1..=RING_SEQ_MAX only: beyond it no
/// ring could follow (cpg-std refuses such a state file before this).
#[test]
fn initial_ring_seq_beyond_the_maximum_is_refused() {
    use cpg_core::limits::{Config, ConfigError};
    use cpg_core::Instant;
    let mut n = cpg_sim::node::SimNode::new(1, Config::fast(1, &[1]), Vec::new());
    for seq in [0, RING_SEQ_MAX + 1, u64::MAX] {
        match n.start_with_seq(Instant::ZERO, seq) {
            Err(e) => assert_eq!(e, ConfigError::NoInitialRingSeq),
            Ok(_) => panic!("Engine::new accepted initial ring seq {seq}"),
        }
    }
    assert!(n.start_with_seq(Instant::ZERO, RING_SEQ_MAX).is_ok());
}

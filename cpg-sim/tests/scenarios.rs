//! Named scenarios with scripted faults (totem.md §8). Every checker runs
//! after every step, as in the sweep; each scenario also asserts the
//! specific outcome it is about.
//!
//! `cargo test -p cpg-sim --release --test scenarios -- --nocapture`

use cpg_core::engine::{ConfigChange, Dest, State};
use cpg_core::limits::ConfigError;
use cpg_core::{Duration, Guarantee, Instant, NodeId};
use cpg_sim::network::{header, DropRule, FaultOptions};
use cpg_sim::node::RestartMode;
use cpg_sim::{Sim, SimError, SimOptions, Workload};

const SEED: u64 = 1;

fn sim(name: &str, opts: SimOptions) -> Sim {
    let mut s = Sim::new(SEED, opts);
    s.replay_hint =
        format!("cargo test -p cpg-sim --release --test scenarios {name} -- --nocapture");
    s
}

fn ok<T>(r: Result<T, Box<SimError>>) -> T {
    r.unwrap_or_else(|e| panic!("\n{e}\n"))
}

fn ids(n: u32) -> Vec<NodeId> {
    (1..=n).collect()
}

/// (transitional members, left, regular members, joined) of each change at `node`.
type Change = (Vec<NodeId>, Vec<NodeId>, Vec<NodeId>, Vec<NodeId>, Instant);

fn changes(s: &Sim, node: NodeId) -> Vec<Change> {
    let mut out = Vec::new();
    let mut pending: Option<(Vec<NodeId>, Vec<NodeId>)> = None;
    for (t, n, c) in &s.config_log {
        if *n != node {
            continue;
        }
        match c {
            ConfigChange::Transitional { members, left, .. } => {
                pending = Some((members.to_vec(), left.to_vec()))
            }
            ConfigChange::Regular {
                members, joined, ..
            } => {
                let (tm, l) = pending.take().unwrap_or_default();
                out.push((tm, l, members.to_vec(), joined.to_vec(), *t));
            }
        }
    }
    out
}

fn print_changes(s: &Sim, node: NodeId) {
    for (tm, l, m, j, t) in changes(s, node) {
        println!(
            "  {:>8.3}s node {node}: trans {tm:?} left {l:?} -> regular {m:?} joined {j:?}",
            t.0 as f64 / 1e9
        );
    }
}

fn bound() -> Duration {
    Duration::from_millis(20_000)
}

#[test]
fn token_loss_during_recovery() {
    let mut s = sim("token_loss_during_recovery", SimOptions::calm(4));
    ok(s.run_until_ring(&ids(4), bound()));
    ok(s.run_for(Duration::from_millis(500)));
    s.crash(4);
    // Wait for the survivors to reach RECOVERY of the ring without 4 ...
    let reached = ok(s.run_until_step(bound(), |s| {
        (1..=3).any(|n| s.engine(n).is_some_and(|e| e.state() == State::Recovery))
    }));
    assert!(reached, "no node reached RECOVERY");
    // ... then lose every ORF token until a node notices the loss in RECOVERY.
    s.net.add_drop_rule(DropRule {
        kind: Some(header::KIND_TOKEN),
        from: None,
        to: None,
        count: u32::MAX,
    });
    let lost = ok(s.run_until_step(bound(), |s| s.total_stats().token_losses_recovery > 0));
    s.net.clear_drop_rules();
    assert!(lost, "no token loss detected in RECOVERY");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    // The install that finally happened has the same transitional set everywhere.
    for n in 1..=3 {
        print_changes(&s, n);
        let last = changes(&s, n).pop().expect("a change");
        assert_eq!(
            last.0,
            vec![1, 2, 3],
            "node {n}: transitional set after the retried recovery"
        );
        assert_eq!(last.1, vec![4], "node {n}: left");
    }
    ok(s.start_node(4));
    ok(s.run_until_converged(bound()));
}

#[test]
fn node_joining_during_commit() {
    let mut opts = SimOptions::calm(4);
    opts.initially_down = vec![4];
    let mut s = sim("node_joining_during_commit", opts);
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(300)));
    s.crash(3);
    let reached = ok(s.run_until_step(bound(), |s| {
        (1..=2).any(|n| s.engine(n).is_some_and(|e| e.state() == State::Commit))
    }));
    assert!(reached, "no node reached COMMIT");
    ok(s.start_node(4));
    ok(s.run_until_ring(&[1, 2, 4], bound()));
    print_changes(&s, 1);
    let ch = changes(&s, 1);
    let with4 = ch.iter().position(|c| c.2.contains(&4)).expect("4 joined");
    assert!(
        ch[with4].3.contains(&4),
        "4 is in joined when it first appears"
    );
    ok(s.start_node(3));
    ok(s.run_until_converged(bound()));
}

#[test]
fn partition_both_sides_survive_then_merge() {
    let mut s = sim(
        "partition_both_sides_survive_then_merge",
        SimOptions::calm(4),
    );
    ok(s.run_until_ring(&ids(4), bound()));
    ok(s.run_for(Duration::from_millis(500)));
    s.partition(&[vec![1, 2], vec![3, 4]]);
    ok(s.run_until(bound(), |s| s.one_ring(&[1, 2]) && s.one_ring(&[3, 4])));
    assert!(
        s.one_ring(&[1, 2]) && s.one_ring(&[3, 4]),
        "both sides form their own ring"
    );
    assert_ne!(
        s.engine(1).unwrap().ring_id(),
        s.engine(3).unwrap().ring_id()
    );
    let a = changes(&s, 1).pop().unwrap();
    let b = changes(&s, 3).pop().unwrap();
    assert_eq!(
        (a.0.clone(), a.1.clone()),
        (vec![1, 2], vec![3, 4]),
        "side A transitional/left"
    );
    assert_eq!(
        (b.0.clone(), b.1.clone()),
        (vec![3, 4], vec![1, 2]),
        "side B transitional/left"
    );
    // Both sides keep working.
    let before = s.counters.accepted;
    ok(s.run_for(Duration::from_millis(1_000)));
    assert!(s.counters.accepted > before);
    s.heal_partition();
    ok(s.run_until_ring(&ids(4), bound()));
    let a = changes(&s, 1).pop().unwrap();
    let b = changes(&s, 3).pop().unwrap();
    print_changes(&s, 1);
    print_changes(&s, 3);
    assert_eq!(
        (a.0, a.3),
        (vec![1, 2], vec![3, 4]),
        "side A after merge: transitional itself, joined the other"
    );
    assert_eq!((b.0, b.3), (vec![3, 4], vec![1, 2]), "side B after merge");
    assert!(s.total_stats().merges > 0);
    ok(s.run_until_converged(bound()));
}

#[test]
fn duplicate_and_late_old_ring_frames_are_ignored() {
    let mut s = sim(
        "duplicate_and_late_old_ring_frames_are_ignored",
        SimOptions::calm(3),
    );
    ok(s.run_until_ring(&ids(3), bound()));
    s.net.start_capture();
    ok(s.run_for(Duration::from_millis(1_000)));
    let old = s.net.take_capture();
    // A ring change: 3 restarts.
    s.crash(3);
    ok(s.run_for(Duration::from_millis(100)));
    ok(s.start_node(3));
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_for(Duration::from_millis(300)));
    s.net.start_capture();
    ok(s.run_for(Duration::from_millis(300)));
    let current = s.net.take_capture();
    let ring = s.engine(1).unwrap().ring_id();
    let stale_before = s.total_stats().dropped_stale;
    let changes_before = s.config_log.len();
    println!(
        "replaying {} old-ring and {} current-ring frames",
        old.len(),
        current.len()
    );
    for (k, (from, dest, f)) in old.iter().chain(current.iter()).enumerate() {
        // Late and duplicate copies go where the originals went (a token
        // only to the successor it was sent to).
        let targets: Vec<NodeId> = match dest {
            Dest::Node(n) => vec![*n],
            Dest::AllOthers => ids(3),
        };
        for to in targets {
            if to != *from {
                let d = Duration::from_micros(100 + (k as u64 % 500) * 7);
                s.inject(*from, to, f.clone(), d);
                s.inject(*from, to, f.clone(), Duration(d.0 * 2));
            }
        }
    }
    ok(s.run_for(Duration::from_millis(2_000)));
    for n in ids(3) {
        assert_eq!(
            s.engine(n).unwrap().ring_id(),
            ring,
            "node {n}: replayed frames must not start a membership round"
        );
    }
    assert_eq!(
        s.config_log.len(),
        changes_before,
        "no configuration change from replays"
    );
    assert!(
        s.total_stats().dropped_stale > stale_before,
        "stale frames are counted"
    );
    ok(s.run_until_converged(bound()));
}

#[test]
fn single_node_ring_delivers_own_messages() {
    let mut s = sim(
        "single_node_ring_delivers_own_messages",
        SimOptions::calm(1),
    );
    ok(s.run_for(Duration::from_millis(2_000)));
    ok(s.run_until_converged(bound()));
    assert!(s.counters.accepted > 5, "accepted {}", s.counters.accepted);
    assert!(s.checkers.fifo.delivered >= s.counters.accepted);
    assert!(s.one_ring(&[1]));
}

#[test]
fn restart_with_same_nodeid_appears_in_left_and_joined() {
    let mut s = sim(
        "restart_with_same_nodeid_appears_in_left_and_joined",
        SimOptions::calm(3),
    );
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_for(Duration::from_millis(500)));
    s.crash(2);
    // Back faster than the token timeout.
    ok(s.run_for(Duration::from_millis(100)));
    ok(s.start_node(2));
    ok(s.run_until_ring(&ids(3), bound()));
    print_changes(&s, 1);
    let ch = changes(&s, 1);
    let last = ch.last().unwrap();
    assert!(
        last.1.contains(&2) && last.3.contains(&2),
        "node 2 must be in left and joined of one change: {last:?}"
    );
    ok(s.run_until_converged(bound()));
}

#[test]
fn restart_without_persisted_seq() {
    // The engine refuses 0 ...
    let mut s = sim("restart_without_persisted_seq", SimOptions::calm(3));
    let mut n = cpg_sim::node::SimNode::new(9, cpg_core::limits::Config::fast(9, &[9]), Vec::new());
    match n.start_with_seq(Instant::ZERO, 0) {
        Err(e) => assert_eq!(e, ConfigError::NoInitialRingSeq),
        Ok(_) => panic!("Engine::new accepted initial_ring_seq 0"),
    }
    // ... and a restart from a boot counter (no disk) rejoins.
    ok(s.run_until_ring(&ids(3), bound()));
    s.crash(3);
    ok(s.run_for(Duration::from_millis(600)));
    assert!(s.node(3).next_initial_ring_seq(RestartMode::BootCounter) > 0);
    ok(s.start_node_with(3, RestartMode::BootCounter));
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_until_converged(bound()));
}

#[test]
fn one_way_link_loss() {
    let mut s = sim("one_way_link_loss", SimOptions::calm(3));
    ok(s.run_until_ring(&ids(3), bound()));
    s.block(1, 2);
    // The ring checker asserts after every step that nodes sharing a ring
    // id share its member list; here we also bound the ring changes.
    ok(s.run_for(Duration::from_millis(5_000)));
    let rings = s.rings_installed().len();
    println!("rings installed with 1->2 blocked: {rings}");
    s.net.unblock(1, 2);
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_until_converged(bound()));
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut opts = SimOptions::calm(3);
    opts.faults = FaultOptions {
        garbage: 0.3,
        ..FaultOptions::none()
    };
    let mut s = sim("bad_input_is_dropped_and_counted", opts);
    ok(s.run_safety(Duration::from_millis(3_000)));
    assert!(
        s.counters.garbage_checked > 50,
        "garbage checked {}",
        s.counters.garbage_checked
    );
    assert!(s.total_stats().dropped_malformed > 0);
    ok(s.heal());
    ok(s.run_until_converged(bound()));
}

#[test]
fn seqs_near_u32_wrap() {
    let mut opts = SimOptions::calm(3);
    opts.seq_base = u32::MAX - 40;
    opts.workload.msg_interval = Duration::from_millis(10);
    let mut s = sim("seqs_near_u32_wrap", opts);
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_for(Duration::from_millis(2_000)));
    s.crash(3);
    ok(s.run_for(Duration::from_millis(1_000)));
    ok(s.start_node(3));
    ok(s.run_for(Duration::from_millis(1_000)));
    ok(s.heal());
    ok(s.run_until_converged(bound()));
    assert!(
        s.checkers.order.deliveries > 200,
        "deliveries {}",
        s.checkers.order.deliveries
    );
}

#[test]
fn large_messages_straddle_a_partition() {
    let mut opts = SimOptions::calm(4);
    opts.workload = Workload {
        large_prob: 0.3,
        large_max: 200 * 1024,
        msg_interval: Duration::from_millis(40),
        ..Workload::light()
    };
    let mut s = sim("large_messages_straddle_a_partition", opts);
    ok(s.run_until_ring(&ids(4), bound()));
    for k in 0..4u64 {
        ok(s.run_for(Duration::from_millis(400 + 130 * k)));
        s.partition(&[vec![1, 3], vec![2, 4]]);
        ok(s.run_for(Duration::from_millis(900)));
        s.heal_partition();
    }
    ok(s.heal());
    ok(s.run_until_converged(bound()));
    assert!(s.checkers.fifo.delivered_large > 0);
}

#[test]
fn many_nodes_start_at_once_with_guarantees_mixed() {
    let mut opts = SimOptions::calm(9);
    opts.faults = FaultOptions {
        loss: 0.05,
        dup: 0.05,
        jitter_mean: Duration::from_millis(2),
        ..FaultOptions::none()
    };
    opts.workload.safe_prob = 0.5;
    let mut s = sim("many_nodes_start_at_once_with_guarantees_mixed", opts);
    ok(s.run_safety(Duration::from_millis(4_000)));
    ok(s.heal());
    ok(s.run_until_converged(bound()));
    let _ = Guarantee::Safe;
}

/// 64 nodes (the maximum), few messages.
#[test]
fn max_nodes_64() {
    let started = std::time::Instant::now();
    let mut opts = SimOptions::calm(64);
    opts.workload = Workload {
        msg_interval: Duration::from_millis(3_000),
        ..Workload::light()
    };
    let mut s = sim("max_nodes_64", opts);
    ok(s.run_until_ring(&ids(64), Duration::from_millis(60_000)));
    ok(s.run_for(Duration::from_millis(2_000)));
    s.crash(64);
    ok(s.run_until_ring(&ids(63), Duration::from_millis(60_000)));
    ok(s.heal());
    ok(s.run_until_converged(Duration::from_millis(60_000)));
    println!(
        "max_nodes_64: {:.1}s wall, {} steps",
        started.elapsed().as_secs_f64(),
        s.counters.steps
    );
}

#[test]
fn snapshot_runs_like_the_original_and_apart_from_it() {
    // The engine fuzz target runs every input from a clone of one warmed-up
    // cluster: a clone must replay exactly what the original does, and
    // what happens to one must not reach the other.
    let mut s = sim(
        "snapshot_runs_like_the_original_and_apart_from_it",
        SimOptions::calm(3),
    );
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_for(Duration::from_millis(300)));
    let mut copy = s.clone();
    ok(s.run_for(Duration::from_millis(500)));
    ok(copy.run_for(Duration::from_millis(500)));
    assert_eq!(copy.counters.steps, s.counters.steps);
    assert_eq!(copy.counters.accepted, s.counters.accepted);
    assert!(s.checkers.order.deliveries > 0);
    assert_eq!(copy.checkers.order.deliveries, s.checkers.order.deliveries);
    for n in ids(3) {
        assert_eq!(
            copy.engine(n).unwrap().stats(),
            s.engine(n).unwrap().stats()
        );
    }
    let ring = s.engine(1).unwrap().ring_id();
    copy.crash(3);
    ok(copy.run_until_ring(&[1, 2], bound()));
    ok(s.run_for(Duration::from_millis(500)));
    assert!(s.one_ring(&ids(3)), "the original keeps its ring");
    assert_eq!(s.engine(1).unwrap().ring_id(), ring);
    ok(s.run_until_converged(bound()));
}

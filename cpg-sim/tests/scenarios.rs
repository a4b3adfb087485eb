//! Named scenarios with scripted faults (`docs/spec/totem.md` §8). Every checker runs
//! after every step, as in the sweep; each scenario also asserts the
//! specific outcome it is about.
//!
//! `cargo test -p cpg-sim --release --test scenarios -- --nocapture`

use cpg_core::engine::{ConfigChange, Dest, State};
use cpg_core::limits::ConfigError;
use cpg_core::{Duration, Guarantee, Instant, NodeId};
use cpg_sim::network::{header, DropRule, FaultOptions, TamperRule};
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

/// Issue 8 bug 1: at netmtu 1500 a full frame was a 1,500 B UDP payload
/// (a 1,528 B IP packet, fragmented), and recovery copies of full frames
/// more. The simulator checks every datagram against netmtu − 28; this
/// makes sure recovery under loss re-sends many full frames.
#[test]
fn recovery_under_loss_fits_the_path() {
    let mut opts = SimOptions::calm(4);
    opts.faults = FaultOptions {
        loss: 0.08,
        ..FaultOptions::none()
    };
    opts.workload = Workload {
        medium_prob: 0.5,
        large_prob: 0.2,
        large_max: 64 * 1024,
        msg_interval: Duration::from_millis(5),
        ..Workload::light()
    };
    let mut s = sim("recovery_under_loss_fits_the_path", opts);
    ok(s.run_until_ring(&ids(4), bound()));
    for k in 0..3u64 {
        ok(s.run_for(Duration::from_millis(600 + 170 * k)));
        s.partition(&[vec![1, 2], vec![3, 4]]);
        ok(s.run_for(Duration::from_millis(1_500)));
        s.heal_partition();
    }
    ok(s.heal());
    ok(s.run_until_converged(bound()));
    println!(
        "datagrams {} (in RECOVERY {}), largest {} B, path 1472 B",
        s.counters.datagrams_sent, s.counters.recovery_datagrams, s.counters.largest_datagram
    );
    assert!(
        s.counters.recovery_datagrams > 100,
        "recovery re-sent little"
    );
    assert_eq!(
        s.counters.largest_datagram,
        1500 - 28,
        "full frames were sent"
    );
}

/// Offset of the ORF token's `fcc` in a frame (header, ring id, token_seq,
/// seq, aru, aru_addr).
const TOKEN_FCC: core::ops::Range<usize> = 52..56;

/// Issue 8 bug 2: one token whose `fcc` was corrupted to at least
/// `window_size` (the UDP checksum missed it) made every node's send budget
/// zero for good: the token kept rotating, nothing was sent or detected.
#[test]
fn corrupted_token_fcc_does_not_wedge_the_ring() {
    for fcc in [1_000u32, u32::MAX] {
        let mut opts = SimOptions::calm(3);
        opts.workload.msg_interval = Duration::from_millis(20);
        let mut s = sim("corrupted_token_fcc_does_not_wedge_the_ring", opts);
        ok(s.run_until_ring(&ids(3), bound()));
        ok(s.run_for(Duration::from_millis(500)));
        let edit: fn(&mut [u8]) = match fcc {
            1_000 => |f| f[TOKEN_FCC].copy_from_slice(&1_000u32.to_le_bytes()),
            _ => |f| f[TOKEN_FCC].copy_from_slice(&u32::MAX.to_le_bytes()),
        };
        s.net.add_tamper_rule(TamperRule {
            kind: Some(header::KIND_TOKEN),
            from: Some(2),
            count: 1,
            edit,
        });
        let before = s.checkers.order.deliveries;
        // Longer than a token timeout: a wedged ring has stopped delivering.
        ok(s.run_for(Duration::from_millis(2_000)));
        assert_eq!(s.net.stats.tampered, 1);
        let during = s.checkers.order.deliveries - before;
        ok(s.heal());
        ok(s.run_until_converged(bound()));
        let st = s.total_stats();
        println!(
            "fcc {fcc}: {during} deliveries in the 2 s after the corrupt token, fcc reset {} times, flow stalls {}",
            st.token_fcc_clamped, st.flow_stalls
        );
        assert!(during > 100, "fcc {fcc}: the ring stopped delivering");
        assert!(st.token_fcc_clamped > 0, "fcc {fcc}: not noticed");
    }
}

/// The backstop of issue 8 bug 2: a token that rotates while nothing can be
/// ordered is a detected failure within a token timeout, not a silent
/// wedge. Here node 3 receives tokens but no multicast, and failed-to-receive
/// (Totem's own detector, after `fail_recv_const` visits) is out of reach:
/// the receive window fills and every node's budget falls to zero.
#[test]
fn stalled_rotation_with_backlog_is_a_failure() {
    let mut opts = SimOptions::calm(3);
    opts.workload.msg_interval = Duration::from_millis(5);
    opts.fail_recv_const = Some(u32::MAX / 2);
    let mut s = sim("stalled_rotation_with_backlog_is_a_failure", opts);
    ok(s.run_until_ring(&ids(3), bound()));
    ok(s.run_for(Duration::from_millis(500)));
    s.net.add_drop_rule(DropRule {
        kind: Some(header::KIND_MCAST),
        from: None,
        to: Some(3),
        count: u32::MAX,
    });
    let stalled = ok(s.run_until_step(bound(), |s| s.total_stats().flow_stalls > 0));
    assert!(stalled, "the stalled rotation was never detected");
    s.net.clear_drop_rules();
    ok(s.heal());
    ok(s.run_until_converged(bound()));
}

/// Issue 8 bug 3: with node 1's packets to node 2 dropped (2 → 1 still
/// arriving), node 1 looped COMMIT → token loss → GATHER for as long as
/// the fault lasted, without a configuration, while 2 and 3 formed a ring
/// without it and re-formed whenever 1's JOINs reached 3. Every node must
/// be OPERATIONAL, and stay so, within token + consensus (+ its jitter) +
/// token (the ring 1 commits before anyone has failed it), and deliver.
#[test]
fn one_way_failure_every_node_gets_a_configuration() {
    // 1 -> 2 cuts the token's path (order 1, 2, 3): the ring must change.
    // The others keep the ring of three: the third node relays the lost
    // multicasts by retransmission (`serve_rtr`), with no membership change.
    for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 2)] {
        if std::env::var("ONEWAY_CASE").is_ok_and(|c| c != format!("{from}{to}")) {
            continue;
        }
        let mut s = sim(
            "one_way_failure_every_node_gets_a_configuration",
            SimOptions::calm(3),
        );
        ok(s.run_until_ring(&ids(3), bound()));
        ok(s.run_for(Duration::from_millis(300)));
        let cfg = s.engine(1).unwrap().config().clone();
        let limit = Duration(
            cfg.token_effective().0 + cfg.consensus_effective().0 * 3 / 2 + cfg.token_effective().0,
        );
        s.block(from, to);
        let start = s.now;
        if std::env::var("ONEWAY_TRACE").is_ok() {
            for _ in 0..60 {
                ok(s.run_for(Duration::from_millis(50)));
                println!(
                    "{:>6} 1: {}",
                    s.now.0 / 1_000_000,
                    s.engine(1).unwrap().debug_line()
                );
                println!(
                    "{:>6} 3: {}",
                    s.now.0 / 1_000_000,
                    s.engine(3).unwrap().debug_line()
                );
            }
        }
        let mut settled: Option<Instant> = None;
        // Settled: every node OPERATIONAL, staying so for two token
        // timeouts (a ring may keep a one-way cut pair when a third node
        // relays by retransmission, as with 1 -> 3 cut and token order 1, 2, 3).
        let done = ok(s.run_until_step(Duration::from_millis(20_000), |s| {
            let ok_now =
                (1..=3).all(|n| s.engine(n).is_some_and(|e| e.state() == State::Operational));
            match (ok_now, settled) {
                (false, _) => settled = None,
                (true, None) => settled = Some(s.now),
                (true, Some(t)) if s.now.0 - t.0 > 2 * cfg.token_effective().0 => return true,
                _ => {}
            }
            false
        }));
        for n in 1..=3 {
            print_changes(&s, n);
        }
        assert!(
            done,
            "{from}->{to} cut: not every node settled in a configuration in 20 s"
        );
        let took = Duration(settled.unwrap().0 - start.0);
        println!(
            "{from}->{to} cut: every node in a configuration after {} ms (bound {} ms)",
            took.as_millis(),
            limit.as_millis()
        );
        if (from, to) == (1, 2) {
            assert!(
                took <= limit,
                "{from}->{to} cut: {} ms > {} ms",
                took.as_millis(),
                limit.as_millis()
            );
        }
        s.net.unblock(from, to);
        ok(s.run_until_ring(&ids(3), bound()));
        ok(s.run_until_converged(bound()));
    }
}

/// Control frames whose body was corrupted in a way the UDP checksum
/// missed: caught by their integrity check (every control frame kind), or
/// re-sealed as if the check had missed them too (tokens, JOINs, merge
/// detects, hold cancels): the engine must neither believe what no honest
/// node could send (a lost accepted message, a skipped seq) nor stay wedged.
#[test]
fn corrupted_control_frames_heal() {
    for seed in 1..=40u64 {
        let mut opts = SimOptions::calm(if seed % 2 == 0 { 3 } else { 5 });
        opts.workload.msg_interval = Duration::from_millis(10);
        opts.faults = FaultOptions {
            corrupt: 0.02,
            corrupt_resealed: seed % 4 < 2,
            ..FaultOptions::none()
        };
        let mut s = Sim::new(seed, opts);
        s.replay_hint = format!("corrupted_control_frames_heal seed {seed}");
        ok(s.run_safety(Duration::from_millis(3_000)));
        let corrupted = s.net.stats.corrupted;
        ok(s.heal());
        ok(s.run_until_converged(bound()));
        let st = s.total_stats();
        println!(
            "seed {seed}: {corrupted} control frames corrupted: {} dropped as implausible, {} fcc reset, {} malformed",
            st.dropped_implausible, st.token_fcc_clamped, st.dropped_malformed
        );
        assert!(corrupted > 10);
    }
}

/// What the control-frame integrity check closes, shown with the check
/// bypassed (the tamper rule re-seals): a commit-token entry of another
/// member (its old ring id) changed in flight on one hop makes the nodes
/// after it compute a different transitional configuration than the
/// others, a virtual-synchrony violation no plausibility check can see.
/// Without the re-seal the changed token is dropped and re-sent.
#[test]
#[ignore = "a corruption behind the integrity check: needs frame authentication (issue 10)"]
fn corrupted_commit_entry_needs_frame_integrity() {
    let mut opts = SimOptions::calm(5);
    opts.initially_down = vec![5];
    let mut s = sim("corrupted_commit_entry_needs_frame_integrity", opts);
    ok(s.run_until_ring(&ids(4), bound()));
    // The second rotation's commit token from node 3: entry 0's old ring seq.
    s.net.add_tamper_rule(TamperRule {
        kind: Some(header::KIND_COMMIT),
        from: Some(3),
        count: 2,
        edit: |f| {
            let entries = 24 + 20 + 5 * 4;
            if f.len() > entries + 8 {
                f[entries + 4] ^= 0x40;
            }
        },
    });
    ok(s.start_node(5));
    ok(s.run_until_ring(&ids(5), bound()));
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

/// 64 nodes (the maximum), few messages. The commit token of 64 nodes
/// (1,836 B) does not fit a 1500 B path: such a ring needs jumbo frames,
/// and a 1500 B config is refused at start (51 nodes fit).
#[test]
fn max_nodes_64() {
    let started = std::time::Instant::now();
    let c = cpg_core::limits::Config::fast(1, &ids(64));
    let refused = cpg_core::engine::Engine::<Vec<u8>>::new(c, Default::default(), 1, Instant(0));
    assert!(matches!(
        refused.err(),
        Some(ConfigError::FrameTooSmall {
            need: 1836,
            have: 1472
        })
    ));
    let mut opts = SimOptions::calm(64);
    opts.config_tweak = Some(|c| c.netmtu = 9000);
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

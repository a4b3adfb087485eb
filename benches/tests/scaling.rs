//! The scaling run (`benches/src/scaling.rs`, `--bin scaling`) stays
//! alive: a short plan at 3 and 5 nodes measures throughput and token
//! rotations within what the protocol and the link allow, its failovers
//! fall within the protocol's bound, and a run repeats exactly.

use benches::scaling::{run, Plan, Timers};
use cpg_core::Duration;

fn short(nodes: usize) -> Plan {
    let mut p = Plan::new(nodes);
    p.warmup_rotations = 3;
    p.rotations = 10;
    p
}

const MS: u64 = 1_000_000;

#[test]
fn short_runs_measure_and_fail_over_within_the_bound() {
    for n in [3usize, 5] {
        let plan = short(n);
        let row = run(&plan, &mut |_| {}).unwrap_or_else(|e| panic!("{n} nodes: {e}"));
        assert_eq!(row.nodes, n);
        assert_eq!(row.throughput.len(), plan.sizes.len());
        let link_mb = plan.model.link_bits_per_sec as f64 / 8e6;
        for t in &row.throughput {
            assert_eq!(t.rotations, plan.rotations, "{n} nodes, {} B", t.size);
            assert!(t.delivered_per_member > 0.0, "{n} nodes: {t:?}");
            // Every member delivers every message of the ring.
            let sent = t.sent_per_member * n as f64;
            assert!((sent - t.delivered_per_member).abs() < 1e-6 * sent, "{t:?}");
            // Totem's flow control: at most window_size frames a rotation.
            assert!(
                (1.0..=50.0).contains(&t.frames_per_rotation),
                "{n} nodes: {t:?}"
            );
            // The ring's payload crosses one sender's link at a time, once
            // per peer: a member delivers at most the link's speed over
            // the peers.
            assert!(
                t.mb_per_member < link_mb / (n - 1) as f64,
                "{n} nodes: {t:?}"
            );
            // A rotation is at least one latency per hop.
            let hops_us = (n as u64 * plan.model.latency.0) as f64 / 1e3;
            assert!(t.rotation_mean_us >= hops_us, "{n} nodes: {t:?}");
            assert!(t.rotation_p99_us >= t.rotation_mean_us, "{n} nodes: {t:?}");
        }
        assert_eq!(row.failover.len(), 2);
        for f in &row.failover {
            let (token, coefficient) = match f.timers {
                Timers::Corosync => (3000, 650),
                Timers::Fast => (300, 65),
            };
            let effective = token + (n as u64 - 2) * coefficient;
            let consensus = effective * 12 / 10;
            assert_eq!(f.corosync, Duration((effective + consensus) * MS), "{f:?}");
            // The crash comes right after a token visit at node 1: it sees
            // the loss one token timeout later (or a JOIN a little sooner).
            let lost = f.gather.0 as f64 / MS as f64;
            assert!(
                (effective as f64 - 10.0..=effective as f64 + 1.0).contains(&lost),
                "{n} nodes: {f:?}"
            );
            // One GATHER round: consensus plus a jitter below consensus / 2
            // (docs/spec/totem.md §5.3), then COMMIT, RECOVERY, install,
            // NODEDOWN within a few rotations.
            let (gather, commit) = (f.gather.0, f.commit.0);
            assert!(commit >= gather + consensus * MS, "{f:?}");
            assert!(commit <= gather + (consensus * 3 / 2 + 20) * MS, "{f:?}");
            assert!(f.install_first >= f.commit, "{f:?}");
            assert!(f.nodedown_last.0 <= commit + 50 * MS, "{f:?}");
            assert!(f.install_first <= f.install_last, "{f:?}");
            assert!(f.nodedown_first <= f.nodedown_last, "{f:?}");
            assert!(f.install_last <= f.nodedown_last, "{f:?}");
        }
    }
}

#[test]
fn a_run_repeats_exactly() {
    let mut plan = short(3);
    plan.failover = vec![Timers::Fast];
    let a = run(&plan, &mut |_| {}).expect("first run");
    let b = run(&plan, &mut |_| {}).expect("second run");
    assert_eq!(a, b);
}

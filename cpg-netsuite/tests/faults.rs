//! The short profile of the multi-host fault suite at 3 nodes: one test per
//! phase, one phase at a time (each builds its own namespaces and node
//! processes), a few seconds of fault each. See the crate docs.
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them); without them
//! each test says why and passes, except under `CI=true`, where a missing
//! prerequisite fails the test rather than hiding the suite.
//!
//! Phases marked `#[ignore]` fail on this branch because of the engine bug
//! their reason names (issue 8); `cargo test -p cpg-netsuite --release --
//! --ignored` runs them.

use std::sync::Mutex;

use cpg_netsuite::suite::{run_phase, Options, Phase, PhaseReport, Profile};

/// Phases run one after another: two clusters at once on 2 cores would
/// measure the scheduler, not the protocol.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(phase: Phase) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = cpg_netsuite::missing_prerequisite() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fault suite cannot run in CI: {why}"
        );
        eprintln!("skipping fault phase {phase}: {why}");
        return;
    }
    let cpgtool = cpg_netsuite::find_cpgtool().unwrap_or_else(|e| panic!("{e}"));
    let seed = std::env::var("CPG_NETSUITE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let opts = Options {
        cpgtool,
        profile: Profile::SHORT,
        nodes: 3,
        seed,
        keep_logs: false,
    };
    let r = run_phase(&opts, phase);
    println!("{}\n{}", PhaseReport::header(), r.line());
    assert!(r.passed(), "fault phase {phase} failed:\n{}", r.line());
}

#[test]
fn loss() {
    run(Phase::Loss);
}

#[test]
fn delay_with_jitter() {
    run(Phase::Delay);
}

#[test]
fn reorder() {
    run(Phase::Reorder);
}

#[test]
fn duplicate() {
    run(Phase::Duplicate);
}

// Observed on this branch (3 runs of 3, seeds 1-3, 32..76 control frames
// corrupted): twice the ring wedged (issue 8 bug 2: a corrupted token's fcc;
// no end marker delivered 20 s after the heal, accepted messages never
// delivered, no failure detected), once every node skipped the same 23
// accepted messages of each sender inside one ring with no confchg (FIFO
// gap, lost: a corrupted token field is believed). At 5 nodes (long
// profile, 1,589 frames corrupted) corrupted ring sequence numbers left two
// rings ({1,2,4} and {3,5}, ring ids 1.eadb7300007f3f89 and
// 3.eadb0000007f002d) that had not merged 25 s after the heal.
#[test]
#[ignore = "issue 8 bug 2: a corrupted token wedges the ring (and can skip accepted messages)"]
fn corrupt() {
    run(Phase::Corrupt);
}

#[test]
fn partition() {
    run(Phase::Partition);
}

#[test]
fn one_way_link() {
    run(Phase::OneWay);
}

#[test]
fn mute_node() {
    run(Phase::Mute);
}

// Observed on this branch: full frames are 1,528 B IP datagrams, so the
// survivors' recovery after the partition never completes while fragments
// are dropped (nodes 1 and 2 still in the old 3-node ring 5.2 s after the
// cut); they recover only when the partition heals. With main's fix
// (2de9a98, frames ≤ netmtu − 28) the phase passes at 3 and 5 nodes.
#[test]
#[ignore = "issue 8 bug 1: frames larger than netmtu - 28 are IP-fragmented"]
fn path_drops_fragments() {
    run(Phase::Fragments);
}

#[test]
fn sigstop_sigcont() {
    run(Phase::Pause);
}

#[test]
fn sigkill_restart_same_nodeid() {
    run(Phase::Kill);
}

#[test]
fn rolling_restart() {
    run(Phase::Rolling);
}

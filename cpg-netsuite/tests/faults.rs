//! The short profile of the multi-host fault suite at 3 nodes: one test per
//! phase, one phase at a time (each builds its own namespaces and node
//! processes), a few seconds of fault each. See the crate docs.
//!
//! Needs root, `ip` and `iptables` (`.ci/run` installs them); without them
//! each test says why and passes, except under `CI=true`, where a missing
//! prerequisite fails the test rather than hiding the suite.

use std::sync::Mutex;

use cpg_netsuite::suite::{run_phase, Options, Phase, PhaseReport, Profile};

/// Phases run one after another: two clusters at once on 2 cores would
/// measure the scheduler, not the protocol.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(phase: Phase) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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

// Control frames corrupted past the UDP checksum (issue 8 bug 2). Before
// the engine distrusted tokens this phase failed every run: the ring wedged
// (a corrupted fcc), or every node skipped the same accepted messages (a
// corrupted seq was believed).
#[test]
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

// A path that drops IP fragments under a partition (issue 8 bug 1): with
// frames above netmtu − 28, recovery never completed while fragments were
// dropped.
#[test]
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

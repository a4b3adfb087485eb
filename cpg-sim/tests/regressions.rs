//! Sweep seeds that once failed, replayed on every test run.

use cpg_sim::Sim;

/// 9-node clusters whose consensus rounds locked into a rotation after the
/// heal (2–3 sub-rings re-forming forever), and a ring that converged only
/// at 59.9 s: fixed by the consensus-round jitter (`membership.rs`).
#[test]
fn consensus_rounds_out_of_phase() {
    for seed in [2396, 3889, 7009, 7482] {
        if let Err(e) = Sim::run_seed(seed) {
            panic!("seed {seed}: {e}");
        }
    }
}

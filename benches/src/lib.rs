//! Benchmarks live in `benches/benches/` (criterion). This library holds
//! the workload they share on the engine in memory: N engines on
//! `cpg_sim::perfect::Cluster` (a lossless, zero-delay network driven as
//! fast as the engines allow: the simulator without faults, without its
//! checkers), one group, every node multicasting; and [`scaling`], how
//! cost grows with the ring, on the simulator's network in simulated time
//! (`cargo run --release -p benches --bin scaling`).

use cpg_core::engine::{EngineOptions, Request};
use cpg_core::{Duration, GroupName, Guarantee};
use cpg_sim::perfect::Cluster;

pub mod scaling;

/// A frame in the in-memory network.
pub type Frame = cpg_sim::network::Frame;

/// N engines, one group, every node joined.
pub struct MemCluster {
    cluster: Cluster,
    group: GroupName,
}

impl MemCluster {
    /// Form a ring of `n` nodes (Corosync's default settings except faster
    /// timers and `window_size`/`max_messages`), join every node to one group.
    pub fn new(n: usize, netmtu: usize) -> MemCluster {
        let mut cluster = Cluster::with(n, EngineOptions::default(), |c| c.netmtu = netmtu);
        cluster.record(false);
        let formed = cluster.run_until(Duration::from_millis(30_000), |c| c.converged());
        assert!(formed, "ring did not form in time");
        let group = GroupName::new(b"bench").expect("name");
        cluster.join_all(1, &group);
        let joined = cluster.run_until(Duration::from_millis(30_000), |c| c.group_has(&group, n));
        assert!(joined, "joins not delivered");
        MemCluster { cluster, group }
    }

    /// Every node multicasts `per_node` messages of `size` bytes (retrying on
    /// TRY_AGAIN while the ring drains), then runs until all are delivered
    /// everywhere. Returns messages delivered at node 0.
    pub fn run_round(&mut self, per_node: usize, payload: &[u8], guarantee: Guarantee) -> u64 {
        let n = self.cluster.len();
        let start = self.cluster.delivered[0];
        let target = start + (per_node * n) as u64;
        let mut sent = vec![0usize; n];
        let g = self.group.clone();
        while self.cluster.delivered.iter().any(|&d| d < target) {
            for (i, sent) in sent.iter_mut().enumerate() {
                while *sent < per_node {
                    let r = self.cluster.submit(
                        i,
                        Request::Mcast {
                            pid: 1,
                            group: &g,
                            guarantee,
                            iov: &[payload],
                        },
                    );
                    if r.is_err() {
                        break;
                    }
                    *sent += 1;
                }
            }
            if !self.cluster.step() {
                break;
            }
        }
        self.cluster.delivered[0] - start
    }
}

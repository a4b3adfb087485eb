//! The engine in memory: a 3-node ring with a lossless zero-delay network,
//! every node multicasting; msgs/s counts messages delivered at one member
//! (each member delivers every message, its own included).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use benches::MemCluster;
use cpg_core::Guarantee;

fn deliver_3_nodes(c: &mut Criterion) {
    let mut group = c.benchmark_group("totem/deliver_3_nodes");
    group.sample_size(10);
    for &(size, per_node, mtu) in &[
        (64usize, 2_000usize, 1500usize),
        (65_536, 20, 1500),
        (65_536, 20, 65_507),
    ] {
        for guarantee in [Guarantee::Agreed, Guarantee::Safe] {
            let mut cluster = MemCluster::new(3, mtu);
            let payload = vec![0x5Au8; size];
            let msgs = (per_node * 3) as u64;
            group.throughput(Throughput::Elements(msgs));
            let id = BenchmarkId::new(format!("{guarantee:?}/mtu{mtu}"), size);
            group.bench_with_input(id, &size, |b, _| {
                b.iter(|| {
                    let got = cluster.run_round(per_node, &payload, guarantee);
                    assert_eq!(got, msgs);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, deliver_3_nodes);
criterion_main!(benches);

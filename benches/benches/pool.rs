//! Pool bookkeeping cost: alloc → release, and the full send life cycle.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use cpg_core::pool::{ClassSpec, Pool, PoolConfig};

fn pool_benches(c: &mut Criterion) {
    let cfg = PoolConfig::new(
        256,
        &[
            ClassSpec::new(2048, 1024),
            ClassSpec::new(65_536 + 256, 64),
            ClassSpec::new((1 << 20) + 256, 8),
        ],
    )
    .unwrap();
    let mut pool = Pool::new_vec(&cfg).unwrap();
    let mut g = c.benchmark_group("pool");
    g.bench_function("alloc_release", |b| {
        b.iter(|| {
            let id = pool.alloc(black_box(1000)).unwrap();
            pool.release(id).unwrap();
        })
    });
    g.bench_function("send_lifecycle", |b| {
        b.iter(|| {
            let id = pool.alloc(black_box(1000)).unwrap();
            pool.enqueue(id).unwrap();
            pool.begin_send(id).unwrap();
            let _ = pool.on_send_complete(id).unwrap();
            let _ = pool.mark_stable(id).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, pool_benches);
criterion_main!(benches);

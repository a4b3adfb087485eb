//! Wire parse/emit cost per frame.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use cpg_core::wire::{self, McastRepr, Packet, RtrEntry, TokenRepr};
use cpg_core::{Guarantee, RingId};

fn wire_benches(c: &mut Criterion) {
    let ring = RingId { rep: 1, seq: 8 };
    let payload = vec![7u8; 1400];
    let mcast = Packet::Mcast(McastRepr {
        ring_id: ring,
        seq: 42,
        guarantee: Guarantee::Agreed,
        encapsulated: false,
        payload: &payload,
    });
    let mut buf = vec![0u8; wire::frame::frame_len(&mcast)];
    wire::emit_frame(1, 0, &mcast, &mut buf).unwrap();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("parse_mcast/1400", |b| {
        b.iter(|| wire::parse_frame(black_box(&buf), 0).unwrap())
    });
    g.bench_function("emit_mcast/1400", |b| {
        let mut out = vec![0u8; buf.len()];
        b.iter(|| wire::emit_frame(1, 0, black_box(&mcast), &mut out).unwrap())
    });
    let mut t = TokenRepr {
        ring_id: ring,
        token_seq: 9,
        seq: 100,
        aru: 90,
        aru_addr: 2,
        fcc: 3,
        backlog: 4,
        retrans_flg: false,
        target: 2,
        rtr: heapless::Vec::new(),
    };
    for s in 0..10 {
        t.rtr
            .push(RtrEntry {
                ring_id: ring,
                seq: 91 + s,
            })
            .unwrap();
    }
    let tok = Packet::Token(t);
    let mut tbuf = vec![0u8; wire::frame::frame_len(&tok)];
    wire::emit_frame(1, 0, &tok, &mut tbuf).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_token/rtr10", |b| {
        b.iter(|| wire::parse_frame(black_box(&tbuf), 0).unwrap())
    });
    g.finish();
}

criterion_group!(benches, wire_benches);
criterion_main!(benches);

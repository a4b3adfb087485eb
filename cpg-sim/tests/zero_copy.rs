//! Zero copy from buffers whose headers stay outside them: what cpgd sends
//! from a client's shared memory ([`Frame::shared_memory`]: the engine may
//! neither write it, which the simulator's buffer turns into a panic, nor
//! copy it). The simulator checks every datagram that reads such a buffer
//! is engine-built headers followed by a range of it, that each message
//! went out whole by reference before its sender delivered it, and that the
//! sender delivered it from the buffer itself (`ViolationKind::PayloadCopied`);
//! the checkers hold every message to the usual invariants, bytes included.
//!
//! `cargo test -p cpg-sim --release --test zero_copy -- --nocapture`

use std::sync::Arc;

use cpg_core::engine::Event;
use cpg_core::limits::ZC_HEADROOM;
use cpg_core::wire::cpg::mcast_header_len;
use cpg_core::{Duration, GroupName, Guarantee, NodeId};
use cpg_sim::network::{header, DropRule, FaultOptions, Frame};
use cpg_sim::node::GroupStatus;
use cpg_sim::perfect::Cluster;
use cpg_sim::{catch, seeds_or, Sim, SimError, SimOptions, Workload};

/// Pid of the first process of every simulated node.
const PID: u32 = 1000;
/// Packing header bytes in front of a frame's single item.
const PACK_ONE: usize = 6;

fn ok<T>(r: Result<T, Box<SimError>>) -> T {
    r.unwrap_or_else(|e| panic!("\n{e}\n"))
}

fn bound() -> Duration {
    Duration::from_millis(30_000)
}

/// Payload bytes that fill one frame exactly, with the CPG header of `group`.
fn one_frame(cap: usize, group: &GroupName) -> usize {
    cap - PACK_ONE - mcast_header_len(group.len())
}

/// Every size, on a perfect network and straight through the engine API:
/// empty, one byte, around one frame, several frames, 1 MiB; AGREED and
/// SAFE. Each node delivers the same bytes; every byte that left read the
/// buffer, behind headers only; the sender delivered from the buffer.
#[test]
fn every_size_is_sent_by_reference() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5_000), |n| n.converged()));
    let g = GroupName::new(b"shm").expect("name");
    net.join_all(PID, &g);
    assert!(net.run_until(Duration::from_millis(2_000), |n| n.group_has(&g, 3)));
    let room = one_frame(net.engine(0).frame_payload_cap(), &g);
    let sizes = [0, 1, room - 1, room, room + 1, 4 * room + 17, 1 << 20];
    for (k, len) in sizes.into_iter().enumerate() {
        for guarantee in [Guarantee::Agreed, Guarantee::Safe] {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + k + b / 509) as u8).collect();
            // the payload where a client put it: no headroom
            let mut mem = vec![0u8; len + 2];
            mem[2..].copy_from_slice(&payload);
            let buf = Frame::shared_memory(Arc::from(mem));
            let base = buf.as_ptr() as usize;
            let (lo, hi) = (base + 2, base + 2 + len);
            let before: Vec<usize> = (0..3).map(|i| net.delivered_in(i, &g).len()).collect();
            net.buf_sends.clear();
            let now = net.now();
            net.engine_mut(0)
                .submit_zc(now, PID, &g, guarantee, buf, 2..2 + len)
                .expect("submit_zc");
            net.drain(0);
            assert!(
                net.run_until(Duration::from_millis(20_000), |n| (0..3)
                    .all(|i| n.delivered_in(i, &g).len() > before[i])),
                "size {len}: not delivered everywhere"
            );
            for i in 0..3 {
                let got = net.delivered_in(i, &g);
                assert_eq!(got.len(), before[i] + 1);
                assert!(
                    got[before[i]] == payload,
                    "size {len}: node {} got other bytes",
                    i + 1
                );
            }
            let mine: Vec<_> = net.buf_sends.iter().filter(|s| s.buf == base).collect();
            assert!(!mine.is_empty(), "size {len}: nothing read the buffer");
            for s in &mine {
                assert!(
                    s.len == 0 || (s.seg >= lo && s.seg + s.len <= hi),
                    "size {len}: a send read outside the payload"
                );
                assert!(
                    s.head_len > 0 && s.head_len <= ZC_HEADROOM,
                    "size {len}: headers"
                );
            }
            let by_ref: usize = mine.iter().map(|s| s.len).sum();
            assert_eq!(by_ref, len, "size {len}: payload bytes sent by reference");
            if len > 0 {
                let own = net.events(0).iter().rev().find_map(|e| match e {
                    Event::Deliver { payload: p, .. } => Some(p.bytes().as_ptr() as usize),
                    _ => None,
                });
                assert_eq!(own, Some(lo), "size {len}: own delivery was copied");
            }
        }
    }
}

/// A calm cluster of `n` nodes, one process each, every process in group
/// 0, no workload of its own; faults from `faults` once the group formed.
fn cluster(name: &str, n: usize, faults: FaultOptions) -> Sim {
    let mut opts = SimOptions::calm(n);
    opts.workload = Workload::idle();
    opts.faults = faults;
    let mut s = Sim::new(7, opts);
    s.replay_hint =
        format!("cargo test -p cpg-sim --release --test zero_copy {name} -- --nocapture");
    let ids: Vec<NodeId> = (1..=n as NodeId).collect();
    ok(s.run_until_ring(&ids, bound()));
    let joined = ok(s.run_until(bound(), |s| {
        ids.iter()
            .all(|&id| s.node(id).procs[0].groups[0].1 == GroupStatus::Joined)
    }));
    assert!(joined, "processes did not join");
    s
}

/// `mcast_zc` until the engine takes it (TRY_AGAIN: let the ring drain).
fn send(s: &mut Sim, node: NodeId, guarantee: Guarantee, len: usize) {
    for _ in 0..2_000 {
        match ok(s.mcast_zc(node, PID, 0, guarantee, len)) {
            Ok(()) => return,
            Err(cpg_core::CsError::TryAgain) => ok(s.run_for(Duration::from_millis(5))),
            Err(e) => panic!("mcast_zc from {node}: {e}"),
        }
    }
    panic!("mcast_zc from {node}: TRY_AGAIN for good");
}

/// Sizes for the simulator's self-checking payloads (at least their
/// 36-byte header): the smallest, around one frame, several frames, 1 MiB.
fn sim_sizes(s: &Sim) -> Vec<usize> {
    let cap = s.engine(1).expect("up").frame_payload_cap();
    let room = one_frame(cap, &s.groups[0]);
    vec![
        36,
        37,
        room - 1,
        room,
        room + 1,
        6 * room + 5,
        100_000,
        1 << 20,
    ]
}

fn finish(s: &mut Sim) {
    ok(s.heal());
    ok(s.run_until_converged(bound()));
    let c = &s.counters;
    println!(
        "zero copy: {} accepted, {} frames read {} B by reference, {} checked at their sender; engine: {:?}",
        c.zc_accepted,
        c.zc_frames,
        c.zc_bytes_by_ref,
        c.zc_self_checked,
        s.total_stats()
    );
    assert!(c.zc_self_checked > 0);
}

/// Every size, AGREED and SAFE, from two senders at once, over a lossy,
/// duplicating, reordering network, then through a partition that splits
/// the senders and a merge.
#[test]
fn lossy_network_and_a_partition() {
    let faults = FaultOptions {
        loss: 0.05,
        dup: 0.02,
        jitter_mean: Duration::from_micros(300),
        ..FaultOptions::none()
    };
    let mut s = cluster("lossy_network_and_a_partition", 3, faults);
    s.start_faults();
    for guarantee in [Guarantee::Agreed, Guarantee::Safe] {
        for len in sim_sizes(&s) {
            send(&mut s, 1, guarantee, len);
            send(&mut s, 3, guarantee, len / 2 + 36);
        }
        ok(s.run_for(Duration::from_millis(30)));
        s.partition(&[vec![1, 2], vec![3]]);
        ok(s.run_for(Duration::from_millis(1_500)));
        s.heal_partition();
        ok(s.run_for(Duration::from_millis(1_500)));
    }
    let all = s.counters.zc_accepted;
    finish(&mut s);
    assert_eq!(
        s.counters.zc_self_checked, all,
        "every message reached its sender"
    );
    assert!(s.total_stats().retransmissions > 0, "the loss was felt");
}

/// A ring change while such messages are queued and in flight: a receiver
/// crashes mid-stream while another misses some of the sender's frames
/// (so the new ring recovers them from the sender's gather frames), then
/// the sender is cut off mid-message and merges back. Partly sent messages
/// start over in the new ring, and every accepted message of a surviving
/// sender is delivered whole everywhere (the checkers' "nothing lost").
#[test]
fn ring_changes_with_messages_in_flight() {
    let mut s = cluster(
        "ring_changes_with_messages_in_flight",
        3,
        FaultOptions::none(),
    );
    let room = one_frame(s.engine(1).expect("up").frame_payload_cap(), &s.groups[0]);
    for k in 0..6 {
        let guarantee = if k % 2 == 0 {
            Guarantee::Safe
        } else {
            Guarantee::Agreed
        };
        send(&mut s, 1, guarantee, 40 * room + k);
        send(&mut s, 2, guarantee, room + k);
    }
    let sent = |s: &Sim| s.engine(1).map_or(0, |e| e.stats().frames_sent);
    let start = sent(&s);
    assert!(ok(s.run_until_step(bound(), |s| sent(s) > start + 30)));
    s.net.add_drop_rule(DropRule {
        kind: Some(header::KIND_MCAST),
        from: Some(1),
        to: Some(2),
        count: 4,
    });
    assert!(ok(s.run_until_step(bound(), |s| s
        .net
        .stats
        .dropped_by_rule
        >= 4)));
    s.crash(3);
    ok(s.run_until_ring(&[1, 2], bound()));
    assert!(
        s.total_stats().recovered_messages > 0,
        "node 1's frames that node 2 missed were not recovered"
    );
    ok(s.start_node(3));
    ok(s.run_until_converged(bound()));
    let joined = ok(s.run_until(bound(), |s| {
        s.node(3).procs[0].groups[0].1 == GroupStatus::Joined
    }));
    assert!(joined);
    // node 1 is cut off in the middle of its messages, then merges back
    for k in 0..6 {
        send(&mut s, 1, Guarantee::Agreed, 30 * room + k);
        send(&mut s, 3, Guarantee::Safe, 3 * room + k);
    }
    let start = sent(&s);
    assert!(ok(s.run_until_step(bound(), |s| sent(s) > start + 20)));
    s.partition(&[vec![1], vec![2, 3]]);
    ok(s.run_until(bound(), |s| s.one_ring(&[1]) && s.one_ring(&[2, 3])));
    ok(s.run_for(Duration::from_millis(200)));
    s.heal_partition();
    finish(&mut s);
    let stats = s.total_stats();
    assert!(
        stats.ring_changes >= 4,
        "ring changes: {}",
        stats.ring_changes
    );
    assert!(
        stats.fragmented_resent > 0,
        "no message was cut by the ring changes: {stats:?}"
    );
}

/// Swarm seeds (random cluster sizes, fault mixes, crashes, partitions)
/// with half of the workload's messages sent zero copy from buffers whose
/// headers stay outside them. `CPG_SIM_SEEDS` / `CPG_SIM_SEED` as in the sweep.
#[test]
fn swarm_seeds_with_shared_memory_buffers() {
    let mut failures = Vec::new();
    let (mut checked, mut frames) = (0, 0);
    for seed in seeds_or(50) {
        let run = || -> Result<Sim, Box<SimError>> {
            let mut opts = SimOptions::swarm(seed);
            opts.workload.zero_copy = 0.5;
            let mut s = Sim::new(seed, opts);
            s.replay_hint = format!(
                "CPG_SIM_SEED={seed} cargo test -p cpg-sim --release --test zero_copy swarm -- --nocapture"
            );
            s.run_safety(s.opts.safety_duration)?;
            s.heal()?;
            let bound = s.opts.converge_bound;
            s.run_until_converged(bound)?;
            Ok(s)
        };
        match catch(run) {
            Ok(Ok(s)) => {
                checked += s.counters.zc_self_checked;
                frames += s.counters.zc_frames;
            }
            Ok(Err(e)) => failures.push(format!("{e}")),
            Err(panic) => failures.push(format!("seed {seed} panicked: {panic}")),
        }
    }
    println!("swarm: {checked} zero-copy messages checked at their senders, {frames} frames");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked > 0);
}

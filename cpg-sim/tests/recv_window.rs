//! The receive window's memory bound (`docs/spec/totem.md` §3.7): frames
//! above the highest seq a token has shown a node are held only within
//! `Config::recv_window_bytes`; frames the ring has reached are always
//! taken, so honest traffic is never refused for good.
//!
//! `cargo test -p cpg-sim --release --test recv_window -- --nocapture`

use cpg_core::engine::Dest;
use cpg_core::limits::{Config, NETMTU_MAX};
use cpg_core::wire::{emit_frame, frame_len, parse_frame, McastRepr, Packet};
use cpg_core::{Duration, Guarantee, NodeId, RingId};
use cpg_sim::payload::MsgKey;
use cpg_sim::{Sim, SimError, SimOptions, Workload};

fn ok<T>(r: Result<T, Box<SimError>>) -> T {
    r.unwrap_or_else(|e| panic!("\n{e}\n"))
}

fn bound() -> Duration {
    Duration::from_millis(20_000)
}

fn jumbo(c: &mut Config) {
    c.netmtu = NETMTU_MAX;
}

/// Jumbo frames, and the smallest byte budget allowed (one rotation of
/// full frames, half the default): the flood meets the byte budget before
/// the frame bound.
fn jumbo_tight(c: &mut Config) {
    c.netmtu = NETMTU_MAX;
    c.recv_window_bytes = c.recv_window_bytes_min();
}

/// The seq of the last ORF token any node sent, and its ring.
fn last_token(s: &Sim) -> (RingId, u32) {
    s.net
        .history()
        .rev()
        .find_map(|(_, d, f)| match parse_frame(f, s.opts.cluster_id) {
            Ok(p) if matches!(d, Dest::Node(_)) => match p.packet {
                Packet::Token(t) => Some((t.ring_id, t.seq)),
                _ => None,
            },
            _ => None,
        })
        .expect("a token was sent")
}

/// A forged MCAST of `ring` at `seq` claiming `sender`, `len` bytes long,
/// whose payload packs no message (a receiver drops it when delivering).
fn forged_mcast(s: &Sim, sender: NodeId, ring: RingId, seq: u32, len: usize) -> Vec<u8> {
    let empty = Packet::Mcast(McastRepr {
        ring_id: ring,
        seq,
        guarantee: Guarantee::Agreed,
        encapsulated: false,
        payload: &[],
    });
    let payload = vec![0u8; len - frame_len(&empty)];
    let packet = Packet::Mcast(McastRepr {
        ring_id: ring,
        seq,
        guarantee: Guarantee::Agreed,
        encapsulated: false,
        payload: &payload,
    });
    let mut bytes = vec![0; frame_len(&packet)];
    emit_frame(sender, s.opts.cluster_id, &packet, &mut bytes).expect("emit");
    assert_eq!(bytes.len(), len);
    bytes
}

/// The security issue's flood: 16,284 forged multicasts of a full frame at
/// future seqs (all within the 16,384-seq receive window) took one node's
/// RSS from 84 MB to 1.06 GB, after which it delivered 98 of 200 real
/// messages while the others delivered all 200. Now the node holds at most
/// `recv_window_bytes` of them above the seq its last token showed (here
/// the smallest allowed, 6.6 MB; the rest are refused and counted);
/// whatever it took is gone with the ring it forced to re-form (it drops
/// the true token while it holds a frame above it, spec §3.2), and 200
/// real messages sent afterwards reach every node.
#[test]
fn a_flood_of_forged_multicasts_ahead_of_the_ring_is_held_to_the_budget() {
    let mut opts = SimOptions::calm(3);
    opts.config_tweak = Some(jumbo_tight);
    opts.workload = Workload::idle();
    let mut s = Sim::new(1, opts);
    s.replay_hint = "cargo test -p cpg-sim --release --test recv_window -- --nocapture".into();
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(300)));
    let cfg = s.engine(3).unwrap().config().clone();
    let budget = cfg.recv_window_bytes_effective();
    let frame = cfg.frame_max() - cpg_core::wire::MCAST_HEADER_LEN;
    let (ring, seq) = last_token(&s);
    let (held0, _) = s.engine(3).unwrap().window_bytes();
    println!(
        "budget {budget} B, frames of {frame} B, ring {ring} at seq {seq}, node 3 holds {held0} B"
    );
    let first = seq.wrapping_add(101);
    let count = 16_284u32;
    let mut most = (0, 0);
    for batch in 0..count.div_ceil(512) {
        for k in batch * 512..((batch + 1) * 512).min(count) {
            let f = forged_mcast(&s, 2, ring, first.wrapping_add(k), frame);
            s.inject(2, 3, f.into(), Duration::from_micros(u64::from(k % 512)));
        }
        ok(s.run_for(Duration::from_millis(1)));
        let (held, ahead) = s.engine(3).unwrap().window_bytes();
        most = (most.0.max(held), most.1.max(ahead));
        assert!(
            ahead <= budget,
            "{ahead} B ahead of the ring, budget {budget}"
        );
        assert!(
            held <= budget + held0 + (1 << 20),
            "{held} B held, budget {budget} B"
        );
        assert!(held < 8 << 20, "{held} B held");
    }
    let st = s.engine(3).unwrap().stats().clone();
    println!(
        "most held {} B ({} B ahead); refused {} over budget",
        most.0, most.1, st.dropped_window_bytes
    );
    assert!(
        st.dropped_window_bytes >= u64::from(count) - (budget / frame) as u64 - 1,
        "the flood beyond the budget is refused and counted: {}",
        st.dropped_window_bytes
    );
    // Real traffic afterwards: 200 messages, every one at every node.
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    let mut keys = Vec::new();
    while keys.len() < 200 {
        let node = [1, 2, 3][keys.len() % 3];
        let counter = s.node(node).procs[0].counter;
        let key = MsgKey {
            node,
            pid: 1000,
            incarnation: s.node(node).incarnation,
            counter,
        };
        match ok(s.mcast(node, 1000, 0, Guarantee::Agreed, 200)) {
            Ok(()) => keys.push(key),
            Err(_) => ok(s.run_for(Duration::from_millis(5))),
        }
        if keys.len() % 20 == 0 {
            ok(s.run_for(Duration::from_millis(10)));
        }
    }
    ok(s.run_until_converged(bound()));
    for key in &keys {
        assert_eq!(
            s.checkers.fifo.delivered_by(key),
            [1, 2, 3],
            "{key:?} delivered everywhere"
        );
    }
    let (held, ahead) = s.engine(3).unwrap().window_bytes();
    let e = s.engine(3).unwrap();
    println!(
        "after: node 3 in ring {} holds {held} B ({ahead} B ahead); tokens dropped as implausible {}, malformed frames {}",
        e.ring_id(),
        e.stats().dropped_implausible,
        e.stats().dropped_malformed
    );
}

/// The same flood with tiny frames: each held received frame pins a whole
/// receive buffer in the io_uring driver (1,024 of them by default), so
/// frames ahead of the ring are bounded in number too: two rotations.
#[test]
fn a_flood_of_tiny_forged_multicasts_is_held_to_two_rotations() {
    let mut opts = SimOptions::calm(3);
    opts.workload = Workload::idle();
    let mut s = Sim::new(1, opts);
    s.replay_hint = "cargo test -p cpg-sim --release --test recv_window -- --nocapture".into();
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(300)));
    let most = s.engine(3).unwrap().config().recv_ahead_frames_max();
    let (ring, seq) = last_token(&s);
    let len = 64;
    for k in 0..16_284u32 {
        let f = forged_mcast(&s, 2, ring, seq.wrapping_add(101 + k), len);
        s.inject(2, 3, f.into(), Duration::from_micros(u64::from(k % 512)));
    }
    ok(s.run_for(Duration::from_millis(1)));
    let (_, ahead) = s.engine(3).unwrap().window_bytes();
    let refused = s.engine(3).unwrap().stats().dropped_window_bytes;
    println!(
        "{ahead} B ahead ({} frames at most), {refused} refused",
        most
    );
    assert!(ahead <= most as usize * len, "{ahead} B ahead");
    assert!(refused >= 16_284 - u64::from(most));
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_until_converged(bound()));
}

/// A forged multicast as long as a whole frame (`frame_max`) was stored
/// like any other; when the ring re-formed, the node re-sent it inside a
/// recovery copy 44 B longer than any datagram the path takes (at netmtu
/// 65,535 longer than UDP allows at all), so recovery could never
/// complete. No node sends a multicast whose copy would not fit
/// (`frame_max − MCAST_HEADER_LEN`); a longer one is dropped as
/// implausible on arrival.
#[test]
fn a_forged_multicast_too_long_for_its_recovery_copy_is_dropped() {
    let mut opts = SimOptions::calm(3);
    opts.config_tweak = Some(jumbo);
    let mut s = Sim::new(1, opts);
    s.checkers = cpg_sim::checker::Checkers::with_trust(cpg_sim::checker::Trust::Forged);
    s.replay_hint = "cargo test -p cpg-sim --release --test recv_window -- --nocapture".into();
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(300)));
    let max = s.engine(3).unwrap().config().frame_max();
    let (ring, seq) = last_token(&s);
    let implausible = s.engine(3).unwrap().stats().dropped_implausible;
    for len in [max, max - cpg_core::wire::MCAST_HEADER_LEN + 1] {
        let f = forged_mcast(&s, 2, ring, seq.wrapping_add(1), len);
        s.inject(2, 3, f.into(), Duration::from_micros(10));
    }
    ok(s.run_for(Duration::from_millis(1)));
    assert_eq!(
        s.engine(3).unwrap().stats().dropped_implausible,
        implausible + 2,
        "both counted as implausible"
    );
    // The ring re-forms (every token lost until a node notices); node 3's
    // recovery copies all fit the path (the simulator checks each datagram).
    s.net.add_drop_rule(cpg_sim::network::DropRule {
        kind: Some(cpg_sim::network::header::KIND_TOKEN),
        from: None,
        to: None,
        count: 40,
    });
    ok(s.run_until(bound(), |s| s.engine(1).unwrap().ring_id() != ring));
    s.net.clear_drop_rules();
    ok(s.run_until_converged(bound()));
}

//! Frames found by the engine fuzz target (`cpg-sim/fuzz`, see its
//! README), replayed as scenarios: each test builds the frame the fuzzer
//! found from the live cluster and asserts the invariant it broke.
//!
//! The checkers run with `Trust::Forged` as in the fuzz target: only what
//! each node can check on its own binds (a forged or corrupted frame may
//! legitimately make nodes disagree until frames are authenticated).
//!
//! `cargo test -p cpg-sim --release --test forged -- --nocapture`

use cpg_core::engine::{Dest, State};
use cpg_core::wire::{emit_frame, frame_len, parse_frame, Packet};
use cpg_core::{Duration, NodeId};
use cpg_sim::checker::{Checkers, Trust};
use cpg_sim::network::Frame;
use cpg_sim::{Sim, SimError, SimOptions};

fn ok<T>(r: Result<T, Box<SimError>>) -> T {
    r.unwrap_or_else(|e| panic!("\n{e}\n"))
}

fn bound() -> Duration {
    Duration::from_millis(20_000)
}

/// A calm 3-node cluster checked as the fuzz target checks it.
fn forged_sim(name: &str) -> Sim {
    let mut s = Sim::new(1, SimOptions::calm(3));
    s.checkers = Checkers::with_trust(Trust::Forged);
    s.replay_hint = format!("cargo test -p cpg-sim --release --test forged {name} -- --nocapture");
    s
}

/// The last frame of `kind` that `from` sent to `to` (directly or to all).
fn last_sent(s: &Sim, from: NodeId, to: NodeId, kind: u8) -> Frame {
    s.net
        .history()
        .rev()
        .find(|(f, d, frame)| {
            *f == from && *d == Dest::Node(to) && cpg_sim::network::frame_kind(frame) == Some(kind)
        })
        .map(|(_, _, frame)| frame.clone())
        .unwrap_or_else(|| panic!("no frame of kind {kind} from {from} to {to}"))
}

/// A commit token whose entry for node 3 names another old ring (one
/// corrupted byte of the rep, as the fuzzer found it) reached node 3 in
/// COMMIT. Node 3 entered RECOVERY from it: its transitional set is built
/// from the entries naming its own old ring, so it came out empty, without
/// node 3 itself (TransitionalMissingSelf), and node 3 would have recovered
/// and delivered as if it were alone. A node knows what it wrote into the
/// token; a token that comes back with other members or another entry for
/// it is not the one it forwarded and is dropped (counted as stale).
#[test]
fn commit_token_with_a_corrupted_own_entry_is_dropped() {
    let mut s = forged_sim("commit_token_with_a_corrupted_own_entry_is_dropped");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    s.partition(&[vec![1, 2], vec![3]]);
    ok(s.run_until_ring(&[1, 2], bound()));
    ok(s.run_for(Duration::from_millis(100)));
    s.heal_partition();
    // Node 3 fills its entry and forwards the commit token to node 1 (the
    // rep), which sends it round once more; stop as soon as node 3 is in
    // COMMIT with its entry written.
    let in_commit = ok(s.run_until_step(bound(), |s| {
        s.engine(3).is_some_and(|e| e.state() == State::Commit)
    }));
    assert!(in_commit, "node 3 never reached COMMIT");
    let sent = last_sent(&s, 3, 1, cpg_sim::network::header::KIND_COMMIT);
    let frame = parse_frame(&sent, s.opts.cluster_id).expect("a frame node 3 built");
    let Packet::Commit(mut commit) = frame.packet else {
        panic!("not a commit token")
    };
    assert_eq!(usize::from(commit.memb_index), commit.addr.len(), "full");
    let me = commit
        .addr
        .iter()
        .position(|&n| n == 3)
        .expect("node 3 listed");
    commit.entries[me].old_ring_id.rep |= 0xff00;
    let packet = Packet::Commit(commit);
    let mut bytes = vec![0; frame_len(&packet)];
    emit_frame(frame.header.sender, s.opts.cluster_id, &packet, &mut bytes).expect("emit");
    // As node 2 would send it: it arrives before the real one.
    let stale = s.engine(3).unwrap().stats().dropped_stale;
    s.inject(2, 3, bytes.into(), Duration::from_micros(10));
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    assert!(
        s.engine(3).unwrap().stats().dropped_stale > stale,
        "the corrupted commit token is counted as dropped"
    );
    ok(s.run_for(Duration::from_millis(500)));
}

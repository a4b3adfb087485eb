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
use cpg_core::limits::RING_SEQ_MAX;
use cpg_core::wire::cpg::{emit_joinlist, joinlist_len};
use cpg_core::wire::pack::{emit_packed, packed_len};
use cpg_core::wire::{
    emit_frame, frame_len, parse_frame, CpgMsg, JoinRepr, McastRepr, Packed, Packet,
};
use cpg_core::{Duration, GroupName, MemberAddr, NodeId, RingId};
use cpg_sim::checker::{Checkers, Trust};
use cpg_sim::network::{header, DropRule, Frame};
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

/// `frame` (an MCAST of ring `ring`) with the pid of every joinlist entry
/// it carries changed; `None` if it is another frame or carries no joinlist.
fn forge_joinlist(frame: &[u8], cluster_id: u32, ring: RingId, pid_xor: u32) -> Option<Vec<u8>> {
    let parsed = parse_frame(frame, cluster_id).ok()?;
    let Packet::Mcast(m) = parsed.packet else {
        return None;
    };
    if m.ring_id != ring || m.encapsulated {
        return None;
    }
    let packed = Packed::parse(m.payload).ok()?;
    let mut forged_any = false;
    let items: Vec<Vec<u8>> = packed
        .items()
        .map(|(_, item)| match CpgMsg::parse(item) {
            Ok(CpgMsg::JoinList(entries)) => {
                forged_any = true;
                let list: Vec<(u32, GroupName)> = entries.map(|(p, g)| (p ^ pid_xor, g)).collect();
                let mut buf = vec![0; joinlist_len(list.iter().map(|(_, g)| g))];
                emit_joinlist(list.iter().map(|(p, g)| (*p, g)), &mut buf).expect("emit joinlist");
                buf
            }
            _ => item.to_vec(),
        })
        .collect();
    if !forged_any {
        return None;
    }
    let refs: Vec<&[u8]> = items.iter().map(|i| &i[..]).collect();
    let mut payload = vec![0; packed_len(refs.iter().map(|i| i.len()))];
    emit_packed(packed.header, &refs, 0, &mut payload).expect("emit packed");
    let packet = Packet::Mcast(McastRepr {
        payload: &payload,
        ..m
    });
    let mut out = vec![0; frame_len(&packet)];
    emit_frame(parsed.header.sender, cluster_id, &packet, &mut out).expect("emit frame");
    Some(out)
}

/// Lose every token until a node notices; the nodes then form a new ring
/// with the same members (all of them in its transitional configuration).
fn reform_ring(s: &mut Sim) -> RingId {
    let old = s.engine(1).unwrap().ring_id();
    s.net.add_drop_rule(DropRule {
        kind: Some(header::KIND_TOKEN),
        from: None,
        to: None,
        count: u32::MAX,
    });
    let lost = ok(s.run_until_step(bound(), |s| {
        s.engine(1).is_some_and(|e| e.state() != State::Operational)
    }));
    assert!(lost, "no token loss noticed");
    s.net.clear_drop_rules();
    let formed = ok(s.run_until_step(bound(), |s| {
        s.engine(3)
            .is_some_and(|e| e.state() == State::Operational && e.ring_id() != old)
    }));
    assert!(formed, "no new ring");
    s.engine(3).unwrap().ring_id()
}

/// A joinlist claiming a process node 3 does not have (the fuzzer changed a
/// byte of the pid in node 3's real one) reached node 1 before the real one.
/// In that sync node 1 adds 3/<forged> (NODEUP) and removes 3/1000, known
/// but in no list (PROCDOWN); it built the NODEUP confchg after both
/// changes, so 3/1000 vanished from the members without being named as
/// left (GroupChangeInconsistent): an application following the deltas
/// keeps it forever. Each confchg now carries the members right after it
/// (spec §6.4: NODEUP, then PROCDOWN). The next sync, with node 3's real
/// list, puts node 1's view right again.
#[test]
fn sync_with_nodeup_and_procdown_in_one_group_reports_each_change() {
    let mut s = forged_sim("sync_with_nodeup_and_procdown_in_one_group_reports_each_change");
    let g0 = s.groups[0].clone();
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    let all_in = ok(s.run_until(bound(), |s| {
        s.engine(1).unwrap().group_members(&g0).len() == 3
    }));
    assert!(all_in, "node 1 never saw three members in {g0:?}");
    let ring = reform_ring(&mut s);
    // Node 3 multicasts its joinlist first thing in the new ring: forge it
    // the moment it is sent, and deliver the forgery to node 1 first.
    let cluster_id = s.opts.cluster_id;
    let mut forged = None;
    let sent = ok(s.run_until_step(bound(), |s| {
        forged = s
            .net
            .history()
            .rev()
            .filter(|(from, dest, _)| *from == 3 && *dest == Dest::AllOthers)
            .find_map(|(_, _, f)| forge_joinlist(f, cluster_id, ring, 0x3600_0000));
        forged.is_some()
    }));
    assert!(sent, "node 3 sent no joinlist in ring {ring}");
    s.inject(3, 1, forged.expect("forged").into(), Duration::ZERO);
    let fake = MemberAddr {
        nodeid: 3,
        pid: 1000 ^ 0x3600_0000,
    };
    let took = ok(s.run_until(bound(), |s| {
        s.engine(1).unwrap().group_members(&g0).contains(&fake)
    }));
    assert!(took, "node 1 did not take the forged joinlist");
    // The next sync: node 3's real list, 3/1000 back, the fake one gone.
    reform_ring(&mut s);
    let real = [1, 2, 3].map(|nodeid| MemberAddr { nodeid, pid: 1000 });
    let healed = ok(s.run_until(bound(), |s| s.engine(1).unwrap().group_members(&g0) == real));
    assert!(healed, "node 1's view of {g0:?} did not return to {real:?}");
    ok(s.run_for(Duration::from_millis(300)));
}

/// A JOIN claiming a ring seq near 2^64 (from node 2, as the fuzzer sent
/// it) reached node 1: node 1 adopted it as the base of the next ring's
/// seq, and creating the commit token overflowed (`seq + 4`: a panic with
/// overflow checks; without, a ring seq that went backwards, persisted and
/// refused by everyone: no ring ever again). Such a JOIN is now dropped
/// (counted as a ring seq jump, see `ring_seq.rs`), and the ring stays as
/// it was.
#[test]
fn join_with_a_ring_seq_near_the_end_is_dropped() {
    let mut s = forged_sim("join_with_a_ring_seq_near_the_end_is_dropped");
    ok(s.run_until_ring(&[1, 2, 3], bound()));
    ok(s.run_for(Duration::from_millis(200)));
    let ring = s.engine(1).unwrap().ring_id();
    let jumps = s.engine(1).unwrap().stats().dropped_ring_seq_jump;
    for ring_seq in [u64::MAX - 1, RING_SEQ_MAX + 1] {
        let join = Packet::Join(JoinRepr {
            ring_seq,
            leave: false,
            proc_list: [1, 2, 3].into_iter().collect(),
            fail_list: Default::default(),
        });
        let mut bytes = vec![0; frame_len(&join)];
        emit_frame(2, s.opts.cluster_id, &join, &mut bytes).expect("emit");
        s.inject(2, 1, bytes.into(), Duration::from_micros(10));
    }
    ok(s.run_for(Duration::from_millis(2_000)));
    assert_eq!(
        s.engine(1).unwrap().stats().dropped_ring_seq_jump,
        jumps + 2,
        "both JOINs are counted as ring seq jumps"
    );
    for n in [1, 2, 3] {
        assert_eq!(
            s.engine(n).unwrap().ring_id(),
            ring,
            "node {n}: no new ring"
        );
    }
    assert!(s.one_ring(&[1, 2, 3]));
}

//! Each checker catches a planted bug: synthetic event traces (no engine)
//! with one deliberate mistake, and the matching clean trace that passes.

use cpg_core::{GroupName, Guarantee, MemberAddr, NodeId, RingId};
use cpg_sim::checker::{
    deliver, regular, trace, transitional, Checker, Checkers, FakeWorld, FifoChecker, GroupChecker,
    OrderChecker, RingChecker, SafeChecker, Sent, SimEvent, Trust, ViolationKind, VsChecker,
};
use cpg_sim::payload::{self, MsgKey};

fn ring(rep: NodeId, seq: u64) -> RingId {
    RingId { rep, seq }
}

fn world(live: &[NodeId]) -> FakeWorld {
    FakeWorld {
        live: live.iter().copied().collect(),
        ..FakeWorld::default()
    }
}

/// Feed `(node, event)` pairs; return the first violation kind.
fn feed(c: &mut dyn Checker, w: &FakeWorld, evs: &[(NodeId, SimEvent)]) -> Option<ViolationKind> {
    for (n, e) in evs {
        if let Err(v) = c.on_event(*n, e, w) {
            eprintln!("caught: {v}");
            return Some(v.kind);
        }
    }
    None
}

/// Both nodes 1 and 2 start, each alone, then form ring 1.9 = {1, 2}.
fn form_ring(c: &mut dyn Checker) -> Vec<(NodeId, SimEvent)> {
    for n in [1, 2] {
        c.on_start(n, 1, true);
        let _ = c.on_persist(n, 5);
        let _ = c.on_persist(n, 9);
    }
    vec![
        (1, transitional(ring(1, 5), &[], &[])),
        (1, regular(ring(1, 5), &[1], &[1])),
        (2, transitional(ring(2, 5), &[], &[])),
        (2, regular(ring(2, 5), &[2], &[2])),
        (1, transitional(ring(1, 9), &[1], &[])),
        (1, regular(ring(1, 9), &[1, 2], &[2])),
        (2, transitional(ring(1, 9), &[2], &[])),
        (2, regular(ring(1, 9), &[1, 2], &[1])),
    ]
}

// ---- ring / configuration ----------------------------------------------------

#[test]
fn ring_checker_accepts_a_clean_history() {
    let mut c = RingChecker::default();
    let evs = form_ring(&mut c);
    assert_eq!(feed(&mut c, &world(&[1, 2]), &evs), None);
}

#[test]
fn ring_checker_catches_different_member_lists_for_one_ring() {
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[7] = (2, regular(ring(1, 9), &[1, 2, 3], &[1, 3]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::RingMembersDiffer)
    );
}

#[test]
fn ring_checker_catches_rep_not_lowest_and_installer_outside() {
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[5] = (1, regular(ring(2, 9), &[1, 2], &[2]));
    evs[4] = (1, transitional(ring(2, 9), &[1], &[]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::RepNotLowest)
    );

    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[1] = (1, regular(ring(2, 5), &[2], &[2]));
    evs[0] = (1, transitional(ring(2, 5), &[], &[]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::InstallerNotMember)
    );
}

#[test]
fn ring_checker_catches_bad_transitional_left_and_joined() {
    // Transitional set not within the previous ring.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[4] = (1, transitional(ring(1, 9), &[1, 2], &[]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::TransitionalNotSubset)
    );
    // Transitional set without self.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[4] = (1, transitional(ring(1, 9), &[], &[1]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::TransitionalMissingSelf)
    );
    // Wrong joined list.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs[5] = (1, regular(ring(1, 9), &[1, 2], &[]));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::JoinedWrong)
    );
    // Wrong left list on the next change.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    let _ = c.on_persist(1, 13);
    evs.push((1, transitional(ring(1, 13), &[1], &[])));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::LeftWrong)
    );
    // A non-empty first transitional configuration.
    let mut c = RingChecker::default();
    c.on_start(3, 1, true);
    assert_eq!(
        feed(
            &mut c,
            &world(&[3]),
            &[(3, transitional(ring(3, 5), &[3], &[]))]
        ),
        Some(ViolationKind::TransitionalNotSubset)
    );
}

#[test]
fn ring_checker_catches_rhythm_and_seq_problems() {
    // Regular without transitional.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    evs.remove(4);
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::ConfigOutOfOrder)
    );
    // Ring seq going backwards across a restart with a disk.
    let mut c = RingChecker::default();
    let evs = form_ring(&mut c);
    assert_eq!(feed(&mut c, &world(&[1, 2]), &evs), None);
    c.on_crash(2);
    c.on_start(2, 2, true);
    let _ = c.on_persist(2, 10);
    let again = [
        (2, transitional(ring(2, 5), &[], &[])),
        (2, regular(ring(2, 5), &[2], &[2])),
    ];
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &again),
        Some(ViolationKind::RingSeqNotIncreasing)
    );
    // Installing a seq never persisted.
    let mut c = RingChecker::default();
    c.on_start(4, 1, true);
    let evs = [
        (4, transitional(ring(4, 5), &[], &[])),
        (4, regular(ring(4, 5), &[4], &[4])),
    ];
    assert_eq!(
        feed(&mut c, &world(&[4]), &evs),
        Some(ViolationKind::RingSeqNotPersisted)
    );
    // Persisting a lower seq.
    let mut c = RingChecker::default();
    c.on_persist(4, 9).unwrap();
    assert_eq!(
        c.on_persist(4, 9).map_err(|v| v.kind),
        Err(ViolationKind::PersistNotIncreasing)
    );
}

#[test]
fn ring_checker_catches_disagreeing_changes() {
    // Nodes 1 and 2 go from ring 1.9 to 1.d but report different transitional sets.
    let mut c = RingChecker::default();
    let mut evs = form_ring(&mut c);
    for n in [1, 2] {
        let _ = c.on_persist(n, 13);
    }
    evs.push((1, transitional(ring(1, 13), &[1, 2], &[])));
    evs.push((1, regular(ring(1, 13), &[1, 2], &[])));
    evs.push((2, transitional(ring(1, 13), &[2], &[1])));
    evs.push((2, regular(ring(1, 13), &[1, 2], &[1])));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::ConfigChangeDiffers)
    );
}

// ---- total order -----------------------------------------------------------------

#[test]
fn order_checker_catches_two_digests_for_one_seq() {
    let mut c = OrderChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(1, 9), 1, 1, 0xAAAA, false, false)));
    evs.push((2, trace(ring(1, 9), 1, 1, 0xBBBB, false, false)));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::SeqConflict)
    );
}

#[test]
fn order_checker_catches_out_of_order_and_wrong_config() {
    let mut c = OrderChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(1, 9), 5, 1, 5, false, false)));
    evs.push((1, trace(ring(1, 9), 3, 1, 3, false, false)));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::DeliveryOutOfOrder)
    );

    // A duplicate Totem delivery is out of order too.
    let mut c = OrderChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(1, 9), 3, 1, 3, false, false)));
    evs.push((1, trace(ring(1, 9), 3, 1, 3, false, false)));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::DeliveryOutOfOrder)
    );

    // Delivering a message of a ring the node has not installed.
    let mut c = OrderChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(2, 5), 1, 2, 1, false, false)));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::DeliveryOutsideConfig)
    );

    // Seqs wrap: u32::MAX then 0 within one ring is in order.
    let mut c = OrderChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(1, 9), u32::MAX, 1, 1, false, false)));
    evs.push((1, trace(ring(1, 9), 0, 1, 2, false, false)));
    assert_eq!(feed(&mut c, &world(&[1, 2]), &evs), None);
}

// ---- virtual synchrony -------------------------------------------------------------

#[test]
fn vs_checker_catches_different_sets_moving_together() {
    let mk = |drop_at_2: bool| {
        let mut c = VsChecker::default();
        let mut evs = form_ring(&mut c);
        evs.push((1, trace(ring(1, 9), 1, 1, 1, false, false)));
        evs.push((1, trace(ring(1, 9), 2, 2, 2, false, false)));
        evs.push((2, trace(ring(1, 9), 1, 1, 1, false, false)));
        if !drop_at_2 {
            evs.push((2, trace(ring(1, 9), 2, 2, 2, false, false)));
        }
        // Both move on to ring 1.d together (same transitional set {1, 2}).
        evs.push((1, transitional(ring(1, 13), &[1, 2], &[])));
        evs.push((2, transitional(ring(1, 13), &[1, 2], &[])));
        feed(&mut c, &world(&[1, 2]), &evs)
    };
    assert_eq!(mk(false), None);
    assert_eq!(mk(true), Some(ViolationKind::VirtualSynchrony));
}

#[test]
fn vs_checker_catches_different_transitional_deliveries() {
    let mut c = VsChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, transitional(ring(1, 13), &[1, 2], &[])));
    evs.push((1, trace(ring(1, 9), 7, 1, 7, true, true)));
    evs.push((1, regular(ring(1, 13), &[1, 2], &[])));
    evs.push((2, transitional(ring(1, 13), &[1, 2], &[])));
    evs.push((2, regular(ring(1, 13), &[1, 2], &[])));
    assert_eq!(
        feed(&mut c, &world(&[1, 2]), &evs),
        Some(ViolationKind::VirtualSynchrony)
    );
}

#[test]
fn vs_checker_reports_unequal_regular_sets_at_quiescence() {
    let mut c = VsChecker::default();
    let mut evs = form_ring(&mut c);
    evs.push((1, trace(ring(1, 9), 1, 1, 1, false, false)));
    assert_eq!(feed(&mut c, &world(&[1, 2]), &evs), None);
    assert!(c.regular_sets_agree(&[1, 2]).is_err());
    let _ = c.on_event(
        2,
        &trace(ring(1, 9), 1, 1, 1, false, false),
        &world(&[1, 2]),
    );
    assert!(c.regular_sets_agree(&[1, 2]).is_ok());
}

// ---- FIFO, duplicates, invention, wholeness ----------------------------------------

fn g0() -> GroupName {
    GroupName::new(b"g0").unwrap()
}

fn accepted(c: &mut FifoChecker, node: NodeId, counter: u64, len: usize) -> Vec<u8> {
    let key = MsgKey {
        node,
        pid: 7,
        incarnation: 1,
        counter,
    };
    let bytes = payload::encode(&key, len);
    let sent = Sent {
        group: g0(),
        guarantee: Guarantee::Agreed,
        digest: payload::digest(&bytes),
        len: bytes.len(),
    };
    c.on_accepted(key, &sent);
    bytes
}

fn from(node: NodeId) -> MemberAddr {
    MemberAddr {
        nodeid: node,
        pid: 7,
    }
}

#[test]
fn fifo_checker_accepts_clean_and_tracks_self_delivery() {
    let mut c = FifoChecker::default();
    c.on_start(1, 1, true);
    c.on_start(2, 1, true);
    let a = accepted(&mut c, 1, 0, 100);
    let b = accepted(&mut c, 1, 1, 200_000);
    assert_eq!(c.undelivered_own(1).len(), 2);
    let evs = vec![
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &a)),
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &b)),
        (1, deliver(&g0(), from(1), Guarantee::Agreed, &a)),
    ];
    assert_eq!(feed(&mut c, &world(&[1, 2]), &evs), None);
    assert_eq!(
        c.undelivered_own(1).len(),
        1,
        "one own message still undelivered"
    );
}

#[test]
fn fifo_checker_catches_duplicates_reordering_invention_and_damage() {
    let w = world(&[1, 2]);
    // Duplicate.
    let mut c = FifoChecker::default();
    let a = accepted(&mut c, 1, 0, 100);
    let evs = vec![
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &a)),
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &a)),
    ];
    assert_eq!(feed(&mut c, &w, &evs), Some(ViolationKind::Duplicate));
    // Out of FIFO order.
    let mut c = FifoChecker::default();
    let a = accepted(&mut c, 1, 0, 100);
    let b = accepted(&mut c, 1, 1, 100);
    let evs = vec![
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &b)),
        (2, deliver(&g0(), from(1), Guarantee::Agreed, &a)),
    ];
    assert_eq!(feed(&mut c, &w, &evs), Some(ViolationKind::FifoBroken));
    // Never accepted.
    let mut c = FifoChecker::default();
    let ghost = payload::encode(
        &MsgKey {
            node: 1,
            pid: 7,
            incarnation: 1,
            counter: 9,
        },
        80,
    );
    assert_eq!(
        feed(
            &mut c,
            &w,
            &[(2, deliver(&g0(), from(1), Guarantee::Agreed, &ghost))]
        ),
        Some(ViolationKind::Invented)
    );
    // Wrong sender attributed.
    let mut c = FifoChecker::default();
    let a = accepted(&mut c, 1, 0, 100);
    assert_eq!(
        feed(
            &mut c,
            &w,
            &[(2, deliver(&g0(), from(2), Guarantee::Agreed, &a))]
        ),
        Some(ViolationKind::Invented)
    );
    // Truncated (a fragment surfaced) and bit-flipped.
    let mut c = FifoChecker::default();
    let a = accepted(&mut c, 1, 0, 5000);
    assert_eq!(
        feed(
            &mut c,
            &w,
            &[(2, deliver(&g0(), from(1), Guarantee::Agreed, &a[..1400]))]
        ),
        Some(ViolationKind::Corrupt)
    );
    let mut flipped = a.clone();
    flipped[3000] ^= 4;
    assert_eq!(
        feed(
            &mut c,
            &w,
            &[(2, deliver(&g0(), from(1), Guarantee::Agreed, &flipped))]
        ),
        Some(ViolationKind::Corrupt)
    );
}

// ---- SAFE ------------------------------------------------------------------------

#[test]
fn safe_checker_catches_safe_delivery_before_a_member_holds_it() {
    let run = |held_by_2: bool| {
        let mut c = SafeChecker::default();
        let mut evs = form_ring(&mut c);
        let mut w = world(&[1, 2]);
        w.held.insert((1, ring(1, 9), 4));
        if held_by_2 {
            w.held.insert((2, ring(1, 9), 4));
        }
        evs.push((1, trace(ring(1, 9), 4, 1, 44, true, false)));
        feed(&mut c, &w, &evs)
    };
    assert_eq!(run(true), None);
    assert_eq!(run(false), Some(ViolationKind::SafeNotHeld));
}

#[test]
fn safe_checker_in_transitional_asks_only_transitional_members() {
    let run = |held_by_2: bool, trans: &[NodeId]| {
        let mut c = SafeChecker::default();
        let mut evs = form_ring(&mut c);
        let mut w = world(&[1, 2]);
        if held_by_2 {
            w.held.insert((2, ring(1, 9), 4));
        }
        let left: Vec<NodeId> = [1, 2].into_iter().filter(|n| !trans.contains(n)).collect();
        evs.push((1, transitional(ring(1, 13), trans, &left)));
        evs.push((1, trace(ring(1, 9), 4, 1, 44, true, true)));
        feed(&mut c, &w, &evs)
    };
    assert_eq!(
        run(false, &[1]),
        None,
        "node 2 left: it need not hold the message"
    );
    assert_eq!(run(false, &[1, 2]), Some(ViolationKind::SafeNotHeld));
    assert_eq!(run(true, &[1, 2]), None);
}

// ---- CPG membership -------------------------------------------------------------------

fn confchg(
    group: &GroupName,
    members: &[MemberAddr],
    left: &[MemberAddr],
    joined: &[MemberAddr],
) -> SimEvent {
    cpg_core::engine::Event::ConfChg {
        group: group.clone(),
        members: members.to_vec(),
        left: left.iter().map(|m| (*m, cpg_core::Reason::Leave)).collect(),
        joined: joined
            .iter()
            .map(|m| (*m, cpg_core::Reason::Join))
            .collect(),
    }
}

#[test]
fn group_checker_catches_mismatched_confchg_at_one_point() {
    let run = |bad: bool| {
        let mut c = GroupChecker::default();
        let mut evs = form_ring(&mut c);
        let a = MemberAddr { nodeid: 1, pid: 7 };
        let b = MemberAddr { nodeid: 2, pid: 7 };
        // Only nodes with a common view are compared: both complete the
        // CPG sync of 1.9, then go from 1.9 to 1.d with transitional set {1, 2}.
        for n in [1, 2] {
            evs.push((
                n,
                cpg_core::engine::Event::TotemConfChg {
                    ring_id: ring(1, 9),
                    members: Box::new([1, 2].into_iter().collect()),
                },
            ));
        }
        for n in [1, 2] {
            evs.push((n, transitional(ring(1, 13), &[1, 2], &[])));
            evs.push((n, regular(ring(1, 13), &[1, 2], &[])));
        }
        // The join of 2/7 is message (1.d, 1); both see the confchg after it.
        evs.push((1, trace(ring(1, 13), 1, 2, 1, false, false)));
        evs.push((1, confchg(&g0(), &[a, b], &[], &[b])));
        evs.push((2, trace(ring(1, 13), 1, 2, 1, false, false)));
        if bad {
            evs.push((2, confchg(&g0(), &[b], &[], &[b])));
        } else {
            evs.push((2, confchg(&g0(), &[a, b], &[], &[b])));
        }
        // The next point closes both lists.
        evs.push((1, trace(ring(1, 13), 2, 1, 2, false, false)));
        evs.push((2, trace(ring(1, 13), 2, 1, 2, false, false)));
        feed(&mut c, &world(&[1, 2]), &evs).or_else(|| c.finish().err().map(|v| v.kind))
    };
    assert_eq!(run(false), None);
    assert_eq!(run(true), Some(ViolationKind::GroupChangeMismatch));
}

#[test]
fn group_checker_catches_unsorted_and_inconsistent_confchg() {
    let a = MemberAddr { nodeid: 1, pid: 7 };
    let b = MemberAddr { nodeid: 2, pid: 7 };
    let mut c = GroupChecker::default();
    assert_eq!(
        feed(
            &mut c,
            &world(&[1]),
            &[(1, confchg(&g0(), &[b, a], &[], &[b]))]
        ),
        Some(ViolationKind::GroupMembersUnsorted)
    );
    let mut c = GroupChecker::default();
    let evs = vec![
        (1, confchg(&g0(), &[a], &[], &[a])),
        (1, confchg(&g0(), &[a, b], &[], &[])),
    ];
    assert_eq!(
        feed(&mut c, &world(&[1]), &evs),
        Some(ViolationKind::GroupChangeInconsistent)
    );
}

// ---- all together --------------------------------------------------------------------

#[test]
fn checkers_together_report_the_first_violation() {
    let mut all = Checkers::default();
    let mut ring_only = RingChecker::default();
    let evs = form_ring(&mut ring_only);
    for n in [1, 2] {
        all.on_start(n, 1, true);
        all.on_persist(n, 5).unwrap();
        all.on_persist(n, 9).unwrap();
    }
    let w = world(&[1, 2]);
    for (n, e) in &evs {
        all.on_event(*n, e, &w).unwrap();
    }
    all.on_event(1, &trace(ring(1, 9), 1, 1, 10, false, false), &w)
        .unwrap();
    let v = all
        .on_event(2, &trace(ring(1, 9), 1, 1, 11, false, false), &w)
        .unwrap_err();
    assert_eq!(v.kind, ViolationKind::SeqConflict);
    assert!(v.to_string().contains("SeqConflict at node 2"), "{v}");
}

#[test]
fn forged_trust_checks_each_node_alone() {
    // Under Trust::Forged, what two nodes saw is never compared (a forger
    // can show each node something else), but each node's own stream is
    // still checked.
    let mut all = Checkers::with_trust(Trust::Forged);
    let mut ring_only = RingChecker::default();
    let mut evs = form_ring(&mut ring_only);
    // Node 2 installs ring 1.9 with other members than node 1 did.
    evs[7] = (2, regular(ring(1, 9), &[1, 2, 3], &[1, 3]));
    evs[6] = (2, transitional(ring(1, 9), &[2], &[]));
    for n in [1, 2] {
        all.on_start(n, 1, true);
        all.on_persist(n, 5).unwrap();
        all.on_persist(n, 9).unwrap();
    }
    let w = world(&[1, 2]);
    for (n, e) in &evs {
        all.on_event(*n, e, &w).unwrap();
    }
    // (ring, seq) names different messages at nodes 1 and 2: not compared.
    all.on_event(1, &trace(ring(1, 9), 1, 1, 10, false, false), &w)
        .unwrap();
    all.on_event(2, &trace(ring(1, 9), 1, 1, 11, false, false), &w)
        .unwrap();
    // A node delivering (ring, seq) twice is caught.
    let v = all
        .on_event(2, &trace(ring(1, 9), 1, 1, 11, false, false), &w)
        .unwrap_err();
    assert_eq!(v.kind, ViolationKind::DeliveryOutOfOrder);
    // So is a node's own inconsistent configuration change.
    let v = all
        .on_event(1, &regular(ring(1, 12), &[1, 2], &[]), &w)
        .unwrap_err();
    assert_eq!(v.kind, ViolationKind::ConfigOutOfOrder);
    assert_eq!(all.trust(), Trust::Forged);
}

//! The checker on hand-written logs: a clean run passes, and each
//! invariant has a log that breaks it and the violation it must produce.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::liveness;
use super::{check, Facts, MsgId, Violation};
use crate::cluster::Record;

/// Node n is process (n, n*100).
fn deliver(to: u32, from: u32, seq: u64) -> String {
    format!(
        r#"{to} {p} {{"ev":"deliver","from":[{from},{fp}],"len":100,"seq":{seq},"origin":{from},"intact":true,"digest":"d"}}"#,
        p = to * 100,
        fp = from * 100
    )
}

fn totem(to: u32, ring: &str, members: &str) -> String {
    format!(
        r#"{to} {} {{"ev":"totem","ring":"{ring}","members":[{members}]}}"#,
        to * 100
    )
}

fn confchg(to: u32, members: &str, left: &str, joined: &str) -> String {
    format!(
        r#"{to} {} {{"ev":"confchg","group":"g","members":[{members}],"left":[{left}],"joined":[{joined}]}}"#,
        to * 100
    )
}

const ALL3: &str = "[1,100],[2,200],[3,300]";
const JOIN3: &str = "[1,100,1],[2,200,1],[3,300,1]";

/// Ring 1.4 of three nodes, each sends seq 0 and 1 (order: 1/0 2/0 3/0
/// 1/1 2/1 3/1); node 3 fails, ring 1.8 of {1,2} after a NODEDOWN confchg;
/// nodes 1 and 2 send seq 2 each; node 3's log just ends.
fn clean_lines() -> Vec<String> {
    let order = [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)];
    let mut l = Vec::new();
    for n in 1..=3 {
        l.push(totem(n, "1.4", "1,2,3"));
        l.push(confchg(n, ALL3, "", JOIN3));
        for (from, seq) in order {
            l.push(deliver(n, from, seq));
        }
    }
    for n in 1..=2 {
        l.push(confchg(n, "[1,100],[2,200]", "[3,300,3]", ""));
        l.push(totem(n, "1.8", "1,2"));
        l.push(deliver(n, 1, 2));
        l.push(deliver(n, 2, 2));
    }
    l
}

fn facts() -> Facts {
    let mut accepted = BTreeMap::new();
    accepted.insert((1, 100), std::iter::once(0..3).collect());
    accepted.insert((2, 200), std::iter::once(0..3).collect());
    accepted.insert((3, 300), std::iter::once(0..2).collect());
    Facts {
        group: "g".into(),
        accepted,
        survivors: [(1, 100), (2, 200)].into_iter().collect::<BTreeSet<_>>(),
        drained: true,
    }
}

fn run(lines: &[String]) -> Vec<Violation> {
    check(&Record::parse_lines(&lines.join("\n")), &facts())
}

/// Replace the line equal to `old` (which must exist) by `new` lines.
fn edit(mut l: Vec<String>, old: &str, new: &[String]) -> Vec<String> {
    let i = l.iter().position(|x| x == old).expect("line to edit");
    l.splice(i..=i, new.iter().cloned());
    l
}

#[test]
fn clean_log_passes() {
    assert_eq!(run(&clean_lines()), vec![]);
}

#[test]
fn damaged_pattern_is_an_integrity_violation() {
    let bad = deliver(2, 1, 1).replace("\"intact\":true", "\"intact\":false");
    let v = run(&edit(clean_lines(), &deliver(2, 1, 1), &[bad]));
    assert!(
        matches!(
            v[..],
            [Violation::Integrity {
                at: (2, 200),
                from: (1, 100),
                ..
            }]
        ),
        "{v:?}"
    );
}

#[test]
fn message_from_another_sender_is_an_integrity_violation() {
    let bad = deliver(2, 1, 1).replace("\"origin\":1", "\"origin\":3");
    let v = run(&edit(clean_lines(), &deliver(2, 1, 1), &[bad]));
    assert!(
        v.iter().any(|x| matches!(x, Violation::Integrity { .. })),
        "{v:?}"
    );
}

#[test]
fn long_unnumbered_message_is_an_integrity_violation() {
    let bad = deliver(1, 2, 2).replace("\"seq\":2", "\"seq\":null");
    let v = run(&edit(clean_lines(), &deliver(1, 2, 2), &[bad]));
    assert!(
        v.iter().any(|x| matches!(x, Violation::Integrity { .. })),
        "{v:?}"
    );
}

#[test]
fn second_delivery_is_a_duplicate() {
    let v = run(&edit(
        clean_lines(),
        &deliver(1, 2, 2),
        &[deliver(1, 2, 2), deliver(1, 2, 2)],
    ));
    assert!(
        v.contains(&Violation::Duplicate {
            at: (1, 100),
            msg: MsgId::Seq((2, 200), 2)
        }),
        "{v:?}"
    );
}

#[test]
fn older_seq_after_newer_breaks_fifo() {
    // node 3 delivers 1/1 before 1/0
    let mut l = edit(clean_lines(), &deliver(3, 1, 0), &[deliver(3, 1, 1)]);
    let i = l.iter().rposition(|x| *x == deliver(3, 1, 1)).unwrap();
    l[i] = deliver(3, 1, 0);
    let v = run(&l);
    assert!(
        v.contains(&Violation::Fifo {
            at: (3, 300),
            from: (1, 100),
            prev: 1,
            seq: 0
        }),
        "{v:?}"
    );
}

#[test]
fn gap_inside_one_configuration_breaks_fifo() {
    // node 2 skips 1/1 and delivers 1/2 in the same ring, although node 1
    // accepted 1/1 and no confchg came between
    let l = edit(clean_lines(), &deliver(2, 1, 1), &[]);
    let i = l.iter().rposition(|x| *x == deliver(2, 1, 2)).unwrap();
    let mut l = l;
    l.remove(i);
    let l = edit(l, &deliver(2, 3, 1), &[deliver(2, 3, 1), deliver(2, 1, 2)]);
    let v = run(&l);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::Fifo { at: (2, 200), .. })),
        "{v:?}"
    );
}

#[test]
fn gap_across_a_configuration_change_is_allowed_fifo() {
    // node 2 gets 1/1 only in a later configuration (it missed it in 1.4):
    // not a FIFO violation, but 1 and 2 moved 1.4 -> 1.8 together, so it is
    // a virtual synchrony one
    let l = edit(clean_lines(), &deliver(2, 1, 1), &[]);
    let l = edit(l, &deliver(2, 1, 2), &[deliver(2, 1, 2)]);
    let v = run(&l);
    assert!(
        !v.iter().any(|x| matches!(x, Violation::Fifo { .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::VirtualSynchrony { .. })),
        "{v:?}"
    );
}

#[test]
fn opposite_orders_break_total_order() {
    let l = edit(clean_lines(), &deliver(2, 1, 0), &[deliver(2, 2, 0)]);
    let i = l.iter().rposition(|x| *x == deliver(2, 2, 0)).unwrap();
    let mut l = l;
    l[i] = deliver(2, 1, 0);
    let v = run(&l);
    assert!(
        v.contains(&Violation::Order {
            a: (1, 100),
            b: (2, 200),
            first: MsgId::Seq((1, 100), 0),
            second: MsgId::Seq((2, 200), 0),
        }),
        "{v:?}"
    );
}

#[test]
fn missing_message_before_a_common_ring_change_breaks_virtual_synchrony() {
    let v = run(&edit(clean_lines(), &deliver(2, 3, 1), &[]));
    assert!(
        v.iter().any(|x| matches!(
            x,
            Violation::VirtualSynchrony { a: (1, 100), b: (2, 200), from_ring, to_ring, .. }
                if from_ring == "1.4" && to_ring == "1.8"
        )),
        "{v:?}"
    );
}

#[test]
fn different_confchg_breaks_membership() {
    let old = confchg(2, "[1,100],[2,200]", "[3,300,3]", "");
    let new = confchg(2, "[1,100],[2,200],[3,300]", "", "");
    let v = run(&edit(clean_lines(), &old, &[new]));
    assert!(
        v.iter().any(|x| matches!(x, Violation::Membership { .. })),
        "{v:?}"
    );
}

#[test]
fn different_end_of_a_drained_run_breaks_virtual_synchrony() {
    let v = run(&edit(clean_lines(), &deliver(2, 2, 2), &[]));
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::VirtualSynchrony { to_ring, .. } if to_ring == "end")),
        "{v:?}"
    );
}

#[test]
fn accepted_but_never_delivered_by_its_surviving_sender_is_lost() {
    let mut f = facts();
    f.accepted.insert((1, 100), std::iter::once(0..4).collect());
    let v = check(&Record::parse_lines(&clean_lines().join("\n")), &f);
    assert_eq!(
        v,
        vec![Violation::Lost {
            sender: (1, 100),
            seq: 3
        }]
    );
    // node 3 did not survive: its accepted messages may be gone
    let mut f = facts();
    f.accepted.insert((3, 300), std::iter::once(0..5).collect());
    assert_eq!(
        check(&Record::parse_lines(&clean_lines().join("\n")), &f),
        vec![]
    );
}

#[test]
fn liveness_views() {
    let recs = Record::parse_lines(&clean_lines().join("\n"));
    let two = [(1, 100), (2, 200)];
    assert!(liveness::whole(&recs, "g", &two));
    assert!(!liveness::whole(
        &recs,
        "g",
        &[(1, 100), (2, 200), (3, 300)]
    ));
    assert!(!liveness::split(&recs, &[two.to_vec(), vec![(3, 300)]]));
    assert!(liveness::split(&recs, &[two.to_vec()]));
    // the last configuration event of 1 and 2 is node 2's totem 1.8
    let at = recs
        .iter()
        .rposition(|r| r.who == (2, 200) && r.ev.is_config())
        .unwrap();
    assert_eq!(
        liveness::settle_time(&recs, &two, Duration::ZERO),
        Duration::from_millis(at as u64)
    );
    assert_eq!(
        liveness::settle_time(&recs, &two, Duration::from_secs(9)),
        Duration::ZERO
    );
}

#[test]
fn apart_needs_a_new_ring_without_both_ends_everywhere() {
    let recs = Record::parse_lines(&clean_lines().join("\n"));
    let two = [(1, 100), (2, 200)];
    // after the start: the latest rings are {1,2}, neither holds 1 and 3
    assert!(liveness::apart(&recs, Duration::ZERO, &two, 1, 3));
    // but 1 and 2 are together
    assert!(!liveness::apart(&recs, Duration::ZERO, &two, 1, 2));
    // node 3 installed nothing new after its first ring
    let at = recs
        .iter()
        .position(|r| r.who == (3, 300) && r.ev.is_config())
        .unwrap();
    let after = Duration::from_millis(at as u64 + 1);
    assert!(!liveness::apart(&recs, after, &[(1, 100), (3, 300)], 1, 3));
}

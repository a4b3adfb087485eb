use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::ipc::list::IterEntry;
use crate::ipc::strategies::{change, group_name, leak, member};
use crate::ipc::{
    LinkState, StatusCounters, StatusLink, StatusReply, StatusState, EVENT_RESERVE, REPLY_BODY_MAX,
};

fn name(s: &[u8]) -> GroupName {
    GroupName::new(s).unwrap()
}

fn emit(e: &Event<'_>) -> Vec<u8> {
    let mut buf = vec![0xEE; e.body_len()];
    assert_eq!(e.emit_body(&mut buf), Ok(buf.len()), "{e:?}");
    buf
}

fn u32s(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn reply(
    req_id: u32,
    op: RequestKind,
    result: Result<ReplyBody<'static>, CsError>,
) -> Event<'static> {
    Event::Reply(Reply { req_id, op, result })
}

fn m(nodeid: u32, pid: u32) -> MemberAddr {
    MemberAddr { nodeid, pid }
}

/// Reply header bytes: req_id, status, op, reserved.
fn rh(req_id: u32, status: u32, op: RequestKind) -> Vec<u8> {
    let mut b = u32s(&[req_id, status]);
    b.extend_from_slice(&(op as u16).to_le_bytes());
    b.extend_from_slice(&[0; 6]);
    b
}

static MEMBERS: [MemberAddr; 2] = [
    MemberAddr {
        nodeid: 1,
        pid: 100,
    },
    MemberAddr {
        nodeid: 2,
        pid: 200,
    },
];
static LEFT: [(MemberAddr, Reason); 1] = [(MemberAddr { nodeid: 2, pid: 20 }, Reason::ProcDown)];
static NODES: [NodeId; 3] = [1, 2, 3];

fn iter_entries() -> &'static [IterEntry] {
    leak(vec![
        IterEntry {
            group: name(b"abc"),
            nodeid: 1,
            pid: 10,
        },
        IterEntry {
            group: name(b""),
            nodeid: 0,
            pid: 0,
        },
    ])
}

/// Every event kind and every reply body once, with its bytes.
fn fixtures() -> Vec<(u16, Vec<u8>, Event<'static>)> {
    use RequestKind as K;
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        (0, rh(1, 1, K::Join), reply(1, K::Join, Ok(ReplyBody::Done))),
        (
            0,
            rh(2, 14, K::Join),
            reply(2, K::Join, Err(CsError::Exist)),
        ),
        (
            0,
            rh(3, 26, K::McastZc),
            reply(3, K::McastZc, Err(CsError::TooBig)),
        ),
        (
            0,
            cat(&[&rh(4, 1, K::ZcAlloc), &u32s(&[7, 9, 0x1000, 0, 65536, 0])]),
            reply(
                4,
                K::ZcAlloc,
                Ok(ReplyBody::ZcAlloc {
                    slot: SlotId::from_parts(7, 9),
                    offset: 0x1000,
                    capacity: 65536,
                }),
            ),
        ),
        (
            0,
            cat(&[
                &rh(5, 1, K::MembershipGet),
                &u32s(&[3, 1, 2, 0, 1, 100, 0, 2, 200, 0]),
            ]),
            reply(
                5,
                K::MembershipGet,
                Ok(ReplyBody::Membership {
                    total: 3,
                    offset: 1,
                    members: List::from_slice(&MEMBERS),
                }),
            ),
        ),
        (
            0,
            cat(&[&rh(6, 1, K::LocalGet), &u32s(&[5])]),
            reply(6, K::LocalGet, Ok(ReplyBody::LocalGet { nodeid: 5 })),
        ),
        (
            0,
            cat(&[&rh(7, 1, K::IterationInitialize), &u32s(&[3])]),
            reply(
                7,
                K::IterationInitialize,
                Ok(ReplyBody::IterationInitialize { iter_id: 3 }),
            ),
        ),
        (
            0,
            cat(&[
                &rh(8, 1, K::IterationNext),
                &u32s(&[2, 1, 10]),
                &[3],
                b"abc",
                &u32s(&[0, 0]),
                &[0],
            ]),
            reply(
                8,
                K::IterationNext,
                Ok(ReplyBody::IterationNext {
                    entries: IterEntries::from_slice(iter_entries()),
                }),
            ),
        ),
        (
            0,
            rh(9, 27, K::IterationNext),
            reply(9, K::IterationNext, Err(CsError::NoSections)),
        ),
        (
            0,
            cat(&[&rh(10, 1, K::FlowControlStateGet), &[1, 0, 0, 0]]),
            reply(
                10,
                K::FlowControlStateGet,
                Ok(ReplyBody::FlowControlState { enabled: true }),
            ),
        ),
        (
            0,
            cat(&[&u32s(&[1, 42, 5]), &[3, 0, 0, 0], b"hel", b"cib"]),
            Event::Deliver {
                group: name(b"cib"),
                sender: m(1, 42),
                total_len: 5,
                piece: b"hel",
            },
        ),
        (0, b"lo".to_vec(), Event::DeliverMore { piece: b"lo" }),
        (
            FLAG_MORE,
            cat(&[
                &[2, 0, 1, 0, 0, 0, 1, 0],
                &u32s(&[1, 100, 0, 2, 200, 0, 2, 20, 5]),
                b"g",
            ]),
            Event::Confchg {
                group: name(b"g"),
                more: true,
                members: List::from_slice(&MEMBERS),
                left: List::from_slice(&LEFT),
                joined: List::empty(),
            },
        ),
        (
            0,
            cat(&[&u32s(&[1, 0, 8, 0, 3, 0, 1, 2, 3])]),
            Event::TotemConfchg {
                ring_id: RingId { rep: 1, seq: 8 },
                members: List::from_slice(&NODES),
            },
        ),
        (0, vec![1, 0, 0, 0], Event::FlowControl { enabled: true }),
        (
            0,
            u32s(&[2]),
            Event::Evicted {
                error: CsError::Library,
            },
        ),
        (
            0,
            cat(&[&u32s(&[1, 42, 70_000]), &[3, 0, 0, 0], b"cib"]),
            Event::DeliverRef {
                group: name(b"cib"),
                sender: m(1, 42),
                total_len: 70_000,
            },
        ),
    ]
}

#[test]
fn every_kind_has_a_fixture() {
    for k in EventKind::ALL {
        assert!(
            fixtures().iter().any(|(_, _, e)| e.event_kind() == k),
            "{k:?}"
        );
        assert_eq!(EventKind::from_u16(k as u16), Some(k));
    }
    let bodies = |p: fn(&ReplyBody<'_>) -> bool| {
        fixtures()
            .iter()
            .any(|(_, _, e)| matches!(e, Event::Reply(Reply { result: Ok(b), .. }) if p(b)))
    };
    assert!(bodies(|b| matches!(b, ReplyBody::Done)));
    assert!(bodies(|b| matches!(b, ReplyBody::ZcAlloc { .. })));
    assert!(bodies(|b| matches!(b, ReplyBody::Membership { .. })));
    assert!(bodies(|b| matches!(b, ReplyBody::LocalGet { .. })));
    assert!(bodies(|b| matches!(
        b,
        ReplyBody::IterationInitialize { .. }
    )));
    assert!(bodies(|b| matches!(b, ReplyBody::IterationNext { .. })));
    assert!(bodies(|b| matches!(b, ReplyBody::FlowControlState { .. })));
    assert_eq!(EventKind::from_u16(0x0300), None);
    assert_eq!(EventKind::from_u16(0x0309), None);
}

#[test]
fn deconstruct_construct_round_trip() {
    for (flags, bytes, e) in fixtures() {
        let kind = e.kind();
        assert_eq!(Event::parse(kind, flags, &bytes), Ok(e.clone()), "{e:?}");
        assert_eq!((e.body_len(), e.flags()), (bytes.len(), flags), "{e:?}");
        assert_eq!(emit(&e), bytes, "{e:?}");
        let mut short = vec![0; bytes.len() - 1];
        assert_eq!(e.emit_body(&mut short), Err(MsgError::BufferTooSmall));
        // Re-emitting the parsed value (lists over bytes) gives the bytes.
        assert_eq!(emit(&Event::parse(kind, flags, &bytes).unwrap()), bytes);
        if matches!(e, Event::Deliver { .. } | Event::DeliverMore { .. }) {
            continue; // a shorter piece is still a piece
        }
        for n in 0..bytes.len() {
            assert!(
                Event::parse(kind, flags, &bytes[..n]).is_err(),
                "{e:?} prefix {n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Event::parse(kind, flags, &long).is_err(), "{e:?} + 1 byte");
    }
}

#[test]
fn parsed_lists_are_views() {
    let fx = fixtures();
    let (flags, bytes, _) = &fx[12];
    let Ok(Event::Confchg {
        members,
        left,
        joined,
        more,
        ..
    }) = Event::parse(EventKind::Confchg as u16, *flags, bytes)
    else {
        panic!()
    };
    assert!(more);
    assert_eq!(members.iter().collect::<Vec<_>>(), MEMBERS);
    assert_eq!(members.wire_bytes(), Some(&bytes[8..32]));
    assert_eq!(left.get(0), Some(LEFT[0]));
    assert_eq!(
        (left.get(1), joined.len(), joined.is_empty()),
        (None, 0, true)
    );
    assert_eq!(List::from_slice(&MEMBERS).wire_bytes(), None);
}

#[test]
fn refusals() {
    let fx = fixtures();
    let parse = |i: usize, b: &[u8]| Event::parse(fx[i].2.kind(), fx[i].0, b).map(|_| ());
    let bytes = |i: usize| fx[i].1.clone();
    // Unknown kind, flags.
    assert_eq!(
        Event::parse(0x0201, 0, &bytes(0)),
        Err(MsgError::UnknownKind(0x0201))
    );
    assert_eq!(
        Event::parse(EventKind::Reply as u16, FLAG_MORE, &bytes(0)),
        Err(MsgError::BadFlags(1))
    );
    assert_eq!(
        Event::parse(EventKind::Confchg as u16, 2, &bytes(12)),
        Err(MsgError::BadFlags(2))
    );
    // Reserved bytes: reply header, zc, membership, flow state, deliver, confchg, totem, flow.
    for (i, at) in [
        (0, 10),
        (0, 15),
        (3, 36),
        (4, 28),
        (9, 17),
        (10, 13),
        (12, 7),
        (13, 4),
        (13, 20),
        (14, 1),
    ] {
        let mut b = bytes(i);
        b[at] = 1;
        assert_eq!(
            parse(i, &b),
            Err(MsgError::Reserved),
            "fixture {i} byte {at}"
        );
    }
    // Statuses: unknown codes; OK in EVICTED; a body on an error.
    for code in [0u32, 29, 99, 1000] {
        let mut b = bytes(0);
        b[4..8].copy_from_slice(&code.to_le_bytes());
        assert_eq!(parse(0, &b), Err(MsgError::Malformed), "status {code}");
    }
    assert_eq!(parse(15, &u32s(&[1])), Err(MsgError::Malformed));
    let mut b = bytes(1);
    b.extend_from_slice(&[0; 4]);
    assert_eq!(parse(1, &b), Err(MsgError::LengthMismatch));
    // A reply to MCAST_MORE, or to no request kind.
    for op in [RequestKind::McastMore as u16, 0x0301, 0] {
        let mut b = bytes(0);
        b[8..10].copy_from_slice(&op.to_le_bytes());
        assert_eq!(parse(0, &b), Err(MsgError::Malformed), "op {op:#x}");
    }
    // Bodies out of range.
    let mut b = bytes(5);
    b[16] = 0;
    assert_eq!(parse(5, &b), Err(MsgError::Malformed), "local node 0");
    let mut b = bytes(4);
    b[16] = 2; // total 2 < offset 1 + count 2
    assert_eq!(parse(4, &b), Err(MsgError::Malformed));
    let mut b = bytes(4);
    b[24] = 129;
    assert_eq!(parse(4, &b), Err(MsgError::TooManyEntries));
    let mut b = bytes(4);
    b[40] = 1; // a member with a reason
    assert_eq!(parse(4, &b), Err(MsgError::Malformed));
    let mut b = bytes(7);
    b[16] = 0;
    assert_eq!(parse(7, &b), Err(MsgError::Malformed), "an empty batch");
    b[16] = 17;
    assert_eq!(parse(7, &b), Err(MsgError::TooManyEntries));
    let mut b = bytes(7);
    b[16] = 3;
    assert_eq!(parse(7, &b), Err(MsgError::LengthMismatch));
    let mut b = bytes(9);
    b[16] = 2;
    assert_eq!(parse(9, &b), Err(MsgError::Malformed), "flow state 2");
    // Deliver: node 0, piece longer than the message, empty first piece.
    let mut b = bytes(10);
    b[0] = 0;
    assert_eq!(parse(10, &b), Err(MsgError::Malformed));
    let mut b = bytes(10);
    b[8] = 2;
    assert_eq!(parse(10, &b), Err(MsgError::Malformed));
    let mut b = bytes(10);
    b[12] = 6; // the name eats the piece
    assert_eq!(parse(10, &b), Err(MsgError::Malformed));
    b[12] = 7;
    assert_eq!(parse(10, &b), Err(MsgError::LengthMismatch));
    b[12] = 200;
    assert_eq!(parse(10, &b), Err(MsgError::NameTooLong));
    assert_eq!(
        Event::parse(EventKind::DeliverMore as u16, 0, &[]),
        Err(MsgError::Malformed)
    );
    // Confchg: reasons out of place, counts.
    for (at, reason) in [(40, 0u8), (40, 1), (40, 4), (40, 6)] {
        let mut b = bytes(12);
        b[at] = reason;
        assert_eq!(
            parse(12, &b),
            Err(MsgError::Malformed),
            "left reason {reason}"
        );
    }
    let mut b = bytes(12);
    b[0] = 129;
    assert_eq!(parse(12, &b), Err(MsgError::TooManyEntries));
    let mut b = bytes(12);
    b[4] = 1; // a joined entry that is not there
    assert!(matches!(parse(12, &b), Err(MsgError::Truncated { .. })));
    // Totem: rep 0, too many nodes, node 0.
    let mut b = bytes(13);
    b[0] = 0;
    assert_eq!(parse(13, &b), Err(MsgError::Malformed));
    let mut b = bytes(13);
    b[16] = 65;
    assert_eq!(parse(13, &b), Err(MsgError::TooManyEntries));
    let mut b = bytes(13);
    b[28] = 0;
    assert_eq!(parse(13, &b), Err(MsgError::Malformed));
    assert_eq!(parse(14, &[2, 0, 0, 0]), Err(MsgError::Malformed));
}

#[test]
fn emit_refuses_what_parse_refuses() {
    use RequestKind as K;
    let bad = [
        reply(1, K::McastMore, Ok(ReplyBody::Done)),
        reply(1, K::McastMore, Err(CsError::TryAgain)),
        reply(1, K::Join, Ok(ReplyBody::LocalGet { nodeid: 1 })),
        reply(1, K::LocalGet, Ok(ReplyBody::LocalGet { nodeid: 0 })),
        reply(
            1,
            K::IterationNext,
            Ok(ReplyBody::IterationNext {
                entries: IterEntries::from_slice(&[]),
            }),
        ),
        reply(
            1,
            K::MembershipGet,
            Ok(ReplyBody::Membership {
                total: 1,
                offset: 0,
                members: List::from_slice(&MEMBERS),
            }),
        ),
        Event::Deliver {
            group: name(b"g"),
            sender: m(0, 1),
            total_len: 1,
            piece: b"x",
        },
        Event::Deliver {
            group: name(b"g"),
            sender: m(1, 1),
            total_len: 0,
            piece: b"x",
        },
        Event::DeliverMore { piece: b"" },
        Event::DeliverRef {
            group: name(b"g"),
            sender: m(1, 1),
            total_len: 0,
        },
        Event::DeliverRef {
            group: name(b"g"),
            sender: m(0, 1),
            total_len: 1,
        },
        Event::Confchg {
            group: name(b"g"),
            more: false,
            members: List::empty(),
            left: List::from_slice(leak(vec![(m(1, 1), Reason::Join)])),
            joined: List::empty(),
        },
        Event::Confchg {
            group: name(b"g"),
            more: false,
            members: List::empty(),
            left: List::empty(),
            joined: List::from_slice(leak(vec![(m(1, 1), Reason::Leave)])),
        },
        Event::Confchg {
            group: name(b"g"),
            more: false,
            members: List::from_slice(leak(vec![m(0, 1)])),
            left: List::empty(),
            joined: List::empty(),
        },
        Event::TotemConfchg {
            ring_id: RingId { rep: 0, seq: 4 },
            members: List::empty(),
        },
        Event::TotemConfchg {
            ring_id: RingId { rep: 1, seq: 4 },
            members: List::from_slice(&[0]),
        },
    ];
    for e in bad {
        assert_eq!(
            e.emit_body(&mut [0; 512]),
            Err(MsgError::Malformed),
            "{e:?}"
        );
    }
    let many = leak(vec![m(1, 1); 129]);
    let e = Event::Confchg {
        group: name(b"g"),
        more: false,
        members: List::from_slice(many),
        left: List::empty(),
        joined: List::empty(),
    };
    assert_eq!(
        e.emit_body(&mut vec![0; 4096]),
        Err(MsgError::TooManyEntries)
    );
    let nodes = leak((1..=65).collect::<Vec<NodeId>>());
    let e = Event::TotemConfchg {
        ring_id: RingId { rep: 1, seq: 4 },
        members: List::from_slice(nodes),
    };
    assert_eq!(e.emit_body(&mut [0; 512]), Err(MsgError::TooManyEntries));
}

#[test]
fn largest_reply_and_the_reserve() {
    let names: Vec<IterEntry> = (0..ITERATION_BATCH_MAX as u32)
        .map(|i| IterEntry {
            group: name(&[b'x'; GROUP_NAME_MAX]),
            nodeid: i,
            pid: i,
        })
        .collect();
    let e = reply(
        1,
        RequestKind::IterationNext,
        Ok(ReplyBody::IterationNext {
            entries: IterEntries::from_slice(leak(names)),
        }),
    );
    assert_eq!(e.body_len(), REPLY_BODY_MAX);
    assert_eq!(Event::parse(e.kind(), 0, &emit(&e)), Ok(e));
    let members = leak(vec![m(1, 1); CPG_MEMBERS_MAX]);
    let e = reply(
        1,
        RequestKind::MembershipGet,
        Ok(ReplyBody::Membership {
            total: 1000,
            offset: 872,
            members: List::from_slice(members),
        }),
    );
    assert!(e.body_len() <= REPLY_BODY_MAX);
    assert_eq!(REPLY_BODY_MAX, 16 + 4 + 16 * 137);
    assert_eq!(EVENT_RESERVE, 2 * (REPLY_BODY_MAX + 8 + 4));
    let e = Event::Evicted {
        error: CsError::Library,
    };
    assert!(e.body_len() <= REPLY_BODY_MAX);
    // The largest confchg part.
    let changes = leak(vec![(m(1, 1), Reason::NodeDown); CPG_MEMBERS_MAX]);
    let e = Event::Confchg {
        group: name(&[b'y'; GROUP_NAME_MAX]),
        more: true,
        members: List::from_slice(members),
        left: List::from_slice(changes),
        joined: List::from_slice(leak(vec![(m(2, 2), Reason::NodeUp); CPG_MEMBERS_MAX])),
    };
    assert_eq!(e.body_len(), CONFCHG_BODY_MAX);
    assert_eq!(Event::parse(e.kind(), e.flags(), &emit(&e)), Ok(e));
}

#[test]
fn confchg_in_parts() {
    let g = name(b"big");
    let members: Vec<MemberAddr> = (1..=300).map(|i| m(i, i)).collect();
    let joined: Vec<(MemberAddr, Reason)> = (1..=130).map(|i| (m(i, i), Reason::NodeUp)).collect();
    let parts: Vec<Event<'_>> = ConfchgParts::new(&g, &members, &[], &joined).collect();
    assert_eq!(parts.len(), 3);
    let (mut all_m, mut all_j) = (Vec::new(), Vec::new());
    for (i, p) in parts.iter().enumerate() {
        let bytes = emit(p);
        let Ok(Event::Confchg {
            group,
            more,
            members,
            left,
            joined,
        }) = Event::parse(p.kind(), p.flags(), &bytes)
        else {
            panic!()
        };
        assert_eq!((group, more, left.len()), (g.clone(), i < 2, 0));
        all_m.extend(members.iter());
        all_j.extend(joined.iter());
    }
    assert_eq!((all_m, all_j), (members.clone(), joined.clone()));
    // One part when everything fits, even with nothing at all.
    let one: Vec<_> = ConfchgParts::new(&g, &members[..128], &[], &[]).collect();
    assert!(matches!(&one[..], [Event::Confchg { more: false, .. }]));
    let it = ConfchgParts::new(&g, &[], &[], &[]);
    assert_eq!(it.len(), 1);
}

#[test]
fn piece_sizes() {
    assert_eq!(deliver_piece_max(16384, 3), 16384 - 19);
    assert_eq!(deliver_more_piece_max(16384), 16384);
    assert_eq!(deliver_piece_max(10, 128), 0);
}

fn reply_body() -> impl Strategy<Value = (RequestKind, ReplyBody<'static>)> {
    use RequestKind as K;
    prop_oneof![
        proptest::sample::select(vec![
            K::Join,
            K::Leave,
            K::Mcast,
            K::McastZc,
            K::ZcFree,
            K::IterationFinalize,
            K::Finalize
        ])
        .prop_map(|k| (k, ReplyBody::Done)),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
            |(i, g, offset, capacity)| {
                (
                    K::ZcAlloc,
                    ReplyBody::ZcAlloc {
                        slot: SlotId::from_parts(i, g),
                        offset,
                        capacity,
                    },
                )
            }
        ),
        (vec(member(), 0..=CPG_MEMBERS_MAX), any::<u32>(), 0..1000u32).prop_map(
            |(ms, offset, extra)| {
                let offset = offset % (u32::MAX - 2000);
                let total = if ms.is_empty() {
                    extra
                } else {
                    offset + ms.len() as u32 + extra
                };
                (
                    K::MembershipGet,
                    ReplyBody::Membership {
                        total,
                        offset,
                        members: List::from_slice(leak(ms)),
                    },
                )
            }
        ),
        (1..=u32::MAX).prop_map(|nodeid| (K::LocalGet, ReplyBody::LocalGet { nodeid })),
        any::<u32>().prop_map(|iter_id| (
            K::IterationInitialize,
            ReplyBody::IterationInitialize { iter_id }
        )),
        vec(
            (group_name(), any::<u32>(), any::<u32>()),
            1..=ITERATION_BATCH_MAX
        )
        .prop_map(|es| {
            let es: Vec<IterEntry> = es
                .into_iter()
                .map(|(group, nodeid, pid)| IterEntry { group, nodeid, pid })
                .collect();
            (
                K::IterationNext,
                ReplyBody::IterationNext {
                    entries: IterEntries::from_slice(leak(es)),
                },
            )
        }),
        any::<bool>().prop_map(|enabled| (
            K::FlowControlStateGet,
            ReplyBody::FlowControlState { enabled }
        )),
        status_reply().prop_map(|s| (K::Status, ReplyBody::Status(s))),
    ]
}

fn status_link() -> impl Strategy<Value = StatusLink> {
    (
        1..=u32::MAX,
        any::<u8>(),
        0u8..=2,
        prop_oneof![
            any::<std::net::SocketAddrV4>().prop_map(std::net::SocketAddr::V4),
            any::<std::net::SocketAddrV6>()
                .prop_map(|a| std::net::SocketAddr::new((*a.ip()).into(), a.port())),
        ],
        proptest::option::of(0..u64::MAX),
        proptest::option::of(0..u64::MAX),
    )
        .prop_map(
            |(nodeid, link, st, addr, frames_rx, frames_tx)| StatusLink {
                nodeid,
                link,
                state: LinkState::from_u8(st).unwrap(),
                addr,
                frames_rx,
                frames_tx,
            },
        )
}

fn status_reply() -> impl Strategy<Value = StatusReply<'static>> {
    (
        1..=u32::MAX,
        1u8..=4,
        (any::<u32>(), any::<u64>()),
        vec(any::<u8>(), 0..=255),
        vec(1..=u32::MAX, 0..=crate::limits::NODES_MAX),
        vec(status_link(), 0..=crate::ipc::STATUS_LINKS_MAX),
        0..1000u32,
        any::<[u64; crate::ipc::STATUS_COUNTERS]>(),
    )
        .prop_map(
            |(node_id, st, (rep, seq), name, members, links, extra, c)| StatusReply {
                node_id,
                state: StatusState::from_u8(st).unwrap(),
                ring: RingId { rep, seq },
                cluster_name: leak(name),
                members: List::from_slice(leak(members)),
                link_total: links.len() as u32 + extra,
                link_offset: extra,
                links: List::from_slice(leak(links)),
                counters: StatusCounters::from_array(c),
            },
        )
}

fn cs_error() -> impl Strategy<Value = CsError> {
    (2u32..=100).prop_filter_map("a cs_error", CsError::from_code)
}

const LEFT_REASONS: &[Reason] = &[Reason::Leave, Reason::NodeDown, Reason::ProcDown];
const JOINED_REASONS: &[Reason] = &[Reason::Join, Reason::NodeUp];

pub(crate) fn event() -> impl Strategy<Value = Event<'static>> {
    let op = proptest::sample::select(
        RequestKind::ALL
            .iter()
            .copied()
            .filter(|&k| k != RequestKind::McastMore)
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        (any::<u32>(), reply_body()).prop_map(|(req_id, (op, b))| reply(req_id, op, Ok(b))),
        (any::<u32>(), op, cs_error()).prop_map(|(req_id, op, e)| reply(req_id, op, Err(e))),
        (
            group_name(),
            member(),
            vec(any::<u8>(), 0..300),
            0..10_000u32
        )
            .prop_map(|(group, sender, piece, extra)| {
                let total_len = piece.len() as u32 + if piece.is_empty() { 0 } else { extra };
                Event::Deliver {
                    group,
                    sender,
                    total_len,
                    piece: leak(piece),
                }
            }),
        (group_name(), member(), 1..=u32::MAX).prop_map(|(group, sender, total_len)| {
            Event::DeliverRef {
                group,
                sender,
                total_len,
            }
        }),
        vec(any::<u8>(), 1..300).prop_map(|p| Event::DeliverMore { piece: leak(p) }),
        (
            group_name(),
            any::<bool>(),
            vec(member(), 0..=CPG_MEMBERS_MAX),
            vec(change(LEFT_REASONS), 0..=CPG_MEMBERS_MAX),
            vec(change(JOINED_REASONS), 0..=CPG_MEMBERS_MAX),
        )
            .prop_map(|(group, more, ms, l, j)| Event::Confchg {
                group,
                more,
                members: List::from_slice(leak(ms)),
                left: List::from_slice(leak(l)),
                joined: List::from_slice(leak(j)),
            }),
        (1..=u32::MAX, any::<u64>(), vec(1..=u32::MAX, 0..=NODES_MAX)).prop_map(
            |(rep, seq, ns)| Event::TotemConfchg {
                ring_id: RingId { rep, seq },
                members: List::from_slice(leak(ns)),
            }
        ),
        any::<bool>().prop_map(|enabled| Event::FlowControl { enabled }),
        cs_error().prop_map(|error| Event::Evicted { error }),
    ]
}

proptest! {
    #[test]
    fn event_round_trip(e in event()) {
        let bytes = emit(&e);
        prop_assert_eq!(Event::parse(e.kind(), e.flags(), &bytes), Ok(e));
    }

    #[test]
    fn any_bytes_never_panic(k in 0x0300u16..0x0309, flags in 0u16..3, body in vec(any::<u8>(), 0..300)) {
        if let Ok(e) = Event::parse(k, flags, &body) {
            prop_assert_eq!(e.flags(), flags);
            prop_assert_eq!(emit(&e), body);
        }
    }

    /// Bodies with plausible counts and small bytes, so that every list
    /// parser is reached.
    #[test]
    fn plausible_bodies_never_panic(k in 0x0301u16..0x0308, head in vec(0u8..4, 0..24), tail in vec(any::<u8>(), 0..120)) {
        let mut body = head;
        body.extend_from_slice(&tail);
        for flags in [0, FLAG_MORE] {
            if let Ok(e) = Event::parse(k, flags, &body) {
                prop_assert_eq!(emit(&e), body.clone());
            }
        }
    }

    /// The in-place `DELIVER` reader agrees with `Event::parse` on every
    /// body: the same fields, the same refusals.
    #[test]
    fn deliver_head_agrees_with_event_parse(head in vec(0u8..4, 0..20), name_len in 0u8..140, tail in vec(any::<u8>(), 0..160)) {
        let mut body = head;
        if body.len() > deliver::NAME_LEN {
            body[deliver::NAME_LEN] = name_len;
        }
        body.extend_from_slice(&tail);
        let kind = EventKind::Deliver as u16;
        match (Event::parse(kind, 0, &body), DeliverHead::parse(&body)) {
            (Ok(Event::Deliver { group, sender, total_len, piece }), Ok(d)) => {
                prop_assert_eq!(group.as_bytes(), d.group);
                prop_assert_eq!(sender, d.sender);
                prop_assert_eq!(total_len, d.total_len);
                prop_assert_eq!(piece, d.piece);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "Event::parse {:?}, DeliverHead::parse {:?}", a, b),
        }
    }

    /// The in-place `DELIVER_REF` reader agrees with `Event::parse`.
    #[test]
    fn deliver_ref_head_agrees_with_event_parse(head in vec(0u8..4, 0..20), name_len in 0u8..140, tail in vec(any::<u8>(), 0..160)) {
        let mut body = head;
        if body.len() > deliver::NAME_LEN {
            body[deliver::NAME_LEN] = name_len;
        }
        body.extend_from_slice(&tail);
        let kind = EventKind::DeliverRef as u16;
        match (Event::parse(kind, 0, &body), DeliverHead::parse_ref(&body)) {
            (Ok(Event::DeliverRef { group, sender, total_len }), Ok(d)) => {
                prop_assert_eq!(group.as_bytes(), d.group);
                prop_assert_eq!(sender, d.sender);
                prop_assert_eq!(total_len, d.total_len);
                prop_assert!(d.piece.is_empty());
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "Event::parse {:?}, DeliverHead::parse_ref {:?}", a, b),
        }
    }

    #[test]
    fn replies_with_small_words_never_panic(op in 0x0201u16..0x020F, words in vec(0u32..3, 0..12)) {
        let mut body = u32s(&[7, 1]);
        body.extend_from_slice(&op.to_le_bytes());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&u32s(&words));
        if let Ok(e) = Event::parse(EventKind::Reply as u16, 0, &body) {
            prop_assert_eq!(emit(&e), body);
        }
    }
}

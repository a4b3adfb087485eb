//! The safety invariants of `docs/ARCHITECTURE.md`, checked on the logs of real
//! processes after the fact: integrity, no duplicates, per-sender FIFO
//! (no gap inside one configuration), one total order, virtual synchrony
//! with consistent member lists, and nothing accepted lost by a sender
//! that stayed up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;

use crate::cluster::{Event, Member, Record};

/// A message's identity: its sender and its own seq (numbered messages),
/// or its digest (the few short unnumbered ones, e.g. the end markers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MsgId {
    /// A numbered message.
    Seq(Member, u64),
    /// Any other message.
    Digest(Member, String),
}

/// What the run knows beside the logs.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The group every node joined.
    pub group: String,
    /// Seqs each sender's `mcast` accepted (from its stream replies).
    pub accepted: BTreeMap<Member, Vec<Range<u64>>>,
    /// Processes that stayed up from start to end (never killed).
    pub survivors: BTreeSet<Member>,
    /// Every survivor delivered every survivor's end marker: their logs
    /// end at the same point of the stream.
    pub drained: bool,
}

/// A broken invariant, naming the processes and messages involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A delivered message is not what its sender sent.
    Integrity {
        /// Receiver.
        at: Member,
        /// Claimed sender.
        from: Member,
        /// Why.
        why: String,
    },
    /// Delivered twice.
    Duplicate {
        /// Receiver.
        at: Member,
        /// The message.
        msg: MsgId,
    },
    /// Out of the sender's order, or a gap inside one configuration.
    Fifo {
        /// Receiver.
        at: Member,
        /// Sender.
        from: Member,
        /// The seq delivered before.
        prev: u64,
        /// The seq delivered now.
        seq: u64,
    },
    /// Two processes delivered two messages in opposite orders.
    Order {
        /// One receiver.
        a: Member,
        /// The other.
        b: Member,
        /// Delivered first at `a`.
        first: MsgId,
        /// Delivered first at `b`.
        second: MsgId,
    },
    /// Two processes that moved together between the same two rings
    /// delivered different messages (or the same in a different order).
    VirtualSynchrony {
        /// One receiver.
        a: Member,
        /// The other.
        b: Member,
        /// Ring left.
        from_ring: String,
        /// Ring entered (`end` for the end of a drained run).
        to_ring: String,
        /// The first difference.
        detail: String,
    },
    /// Two processes saw different confchgs between the same two rings.
    Membership {
        /// One receiver.
        a: Member,
        /// The other.
        b: Member,
        /// Ring left.
        from_ring: String,
        /// Ring entered.
        to_ring: String,
        /// The first difference.
        detail: String,
    },
    /// A survivor's accepted message never reached the survivor itself.
    Lost {
        /// Sender.
        sender: Member,
        /// Its seq.
        seq: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Integrity { at, from, why } => {
                write!(f, "integrity: {at:?} got from {from:?}: {why}")
            }
            Violation::Duplicate { at, msg } => write!(f, "duplicate: {at:?} delivered {msg:?} twice"),
            Violation::Fifo { at, from, prev, seq } => {
                write!(f, "fifo: {at:?} delivered {from:?} seq {seq} after {prev}")
            }
            Violation::Order { a, b, first, second } => write!(
                f,
                "total order: {a:?} delivered {first:?} before {second:?}, {b:?} the other way"
            ),
            Violation::VirtualSynchrony { a, b, from_ring, to_ring, detail } => write!(
                f,
                "virtual synchrony: {a:?} and {b:?} moved {from_ring} -> {to_ring} with different deliveries: {detail}"
            ),
            Violation::Membership { a, b, from_ring, to_ring, detail } => write!(
                f,
                "membership: {a:?} and {b:?} moved {from_ring} -> {to_ring} with different confchgs: {detail}"
            ),
            Violation::Lost { sender, seq } => {
                write!(f, "lost: {sender:?} accepted seq {seq} and never delivered it")
            }
        }
    }
}

/// A receiver's ring-to-ring segments: (ring left, ring entered) -> items.
type Segments<'a> = BTreeMap<(String, String), &'a [Item]>;

/// One item of a receiver's stream, as compared between receivers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Msg(MsgId),
    Conf(Vec<Member>, Vec<(u32, u32, u32)>, Vec<(u32, u32, u32)>),
}

/// CPG's reason code for a join (Corosync's CPG_REASON_JOIN).
const REASON_JOIN: u32 = 1;
/// Unnumbered messages at least this long are not the suite's.
const UNNUMBERED_MAX: u64 = 19;

/// Per receiver, in order: its group's deliveries, confchgs and the rings.
struct Stream {
    items: Vec<Item>,
    /// (index into items where the ring starts, ring id)
    rings: Vec<(usize, String)>,
    /// Index into items after this receiver's own join.
    joined_at: Option<usize>,
}

fn streams(records: &[Record], group: &str) -> BTreeMap<Member, Stream> {
    let mut out: BTreeMap<Member, Stream> = BTreeMap::new();
    for r in records {
        let s = out.entry(r.who).or_insert_with(|| Stream {
            items: Vec::new(),
            rings: Vec::new(),
            joined_at: None,
        });
        match &r.ev {
            Event::Deliver {
                from,
                numbered,
                digest,
                ..
            } => {
                let id = match numbered {
                    Some((_, seq, _)) => MsgId::Seq(*from, *seq),
                    None => MsgId::Digest(*from, digest.clone()),
                };
                s.items.push(Item::Msg(id));
            }
            Event::Confchg {
                group: g,
                members,
                left,
                joined,
            } if g == group => {
                s.items
                    .push(Item::Conf(members.clone(), left.clone(), joined.clone()));
                if s.joined_at.is_none()
                    && joined
                        .iter()
                        .any(|&(n, p, why)| (n, p) == r.who && why == REASON_JOIN)
                {
                    s.joined_at = Some(s.items.len());
                }
            }
            Event::Totem { ring, .. } => s.rings.push((s.items.len(), ring.clone())),
            _ => {}
        }
    }
    out
}

/// Check every safety invariant; every violation found (empty: all hold).
pub fn check(records: &[Record], facts: &Facts) -> Vec<Violation> {
    let mut v = Vec::new();
    check_each_receiver(records, facts, &mut v);
    let streams = streams(records, &facts.group);
    check_total_order(&streams, &mut v);
    check_virtual_synchrony(&streams, facts, &mut v);
    check_lost(records, facts, &mut v);
    v
}

/// Integrity, duplicates, FIFO: each receiver on its own.
fn check_each_receiver(records: &[Record], facts: &Facts, v: &mut Vec<Violation>) {
    // receiver -> configuration count; (receiver, sender) -> (last seq, its configuration)
    let mut epoch: HashMap<Member, u64> = HashMap::new();
    let mut last: HashMap<(Member, Member), (u64, u64)> = HashMap::new();
    let mut seen: HashMap<Member, BTreeSet<MsgId>> = HashMap::new();
    let accepted = |s: Member, seq: u64| {
        facts
            .accepted
            .get(&s)
            .is_some_and(|rs| rs.iter().any(|r| r.contains(&seq)))
    };
    for r in records {
        match &r.ev {
            Event::Confchg { group, .. } if *group == facts.group => {
                *epoch.entry(r.who).or_default() += 1;
            }
            Event::Deliver {
                from,
                len,
                numbered,
                digest,
            } => {
                let at = r.who;
                let id = match numbered {
                    Some((origin, seq, intact)) => {
                        if !intact || *origin != from.0 {
                            v.push(Violation::Integrity {
                                at,
                                from: *from,
                                why: format!(
                                    "seq {seq}: says it is from node {origin}, pattern intact: {intact}"
                                ),
                            });
                        }
                        MsgId::Seq(*from, *seq)
                    }
                    None => {
                        if *len > UNNUMBERED_MAX {
                            v.push(Violation::Integrity {
                                at,
                                from: *from,
                                why: format!("{len} bytes that are not a numbered message"),
                            });
                        }
                        MsgId::Digest(*from, digest.clone())
                    }
                };
                if !seen.entry(at).or_default().insert(id.clone()) {
                    v.push(Violation::Duplicate { at, msg: id });
                    continue;
                }
                let MsgId::Seq(_, seq) = id else { continue };
                let e = epoch.get(&at).copied().unwrap_or(0);
                if let Some(&(prev, prev_epoch)) = last.get(&(at, *from)) {
                    let gap = (prev + 1..seq).any(|s| accepted(*from, s));
                    if seq <= prev || (gap && prev_epoch == e) {
                        v.push(Violation::Fifo {
                            at,
                            from: *from,
                            prev,
                            seq,
                        });
                    }
                }
                last.insert((at, *from), (seq, e));
            }
            _ => {}
        }
    }
}

/// Any two receivers deliver the messages they both deliver in one order.
fn check_total_order(streams: &BTreeMap<Member, Stream>, v: &mut Vec<Violation>) {
    let orders: Vec<(Member, Vec<&MsgId>)> = streams
        .iter()
        .map(|(m, s)| {
            let msgs = s
                .items
                .iter()
                .filter_map(|i| match i {
                    Item::Msg(id) => Some(id),
                    Item::Conf(..) => None,
                })
                .collect();
            (*m, msgs)
        })
        .collect();
    for (i, (a, ma)) in orders.iter().enumerate() {
        for (b, mb) in &orders[i + 1..] {
            let pos: HashMap<&MsgId, usize> = mb.iter().enumerate().map(|(k, m)| (*m, k)).collect();
            let mut prev: Option<(&MsgId, usize)> = None;
            for m in ma {
                let Some(&p) = pos.get(m) else { continue };
                if let Some((pm, pp)) = prev {
                    if p < pp {
                        v.push(Violation::Order {
                            a: *a,
                            b: *b,
                            first: pm.clone(),
                            second: (*m).clone(),
                        });
                        break;
                    }
                }
                prev = Some((m, p));
            }
        }
    }
}

/// The part of each ring-to-ring segment that two receivers must agree on:
/// ((from ring, to ring) -> items), from after the last join confchg in the
/// segment (earlier items belong to processes that were not all members
/// yet), only where the receiver was a member of the group by then.
fn segments(s: &Stream, drained: bool) -> Segments<'_> {
    let mut out = BTreeMap::new();
    let mut bounds: Vec<(usize, usize, String, String)> = s
        .rings
        .windows(2)
        .map(|w| (w[0].0, w[1].0, w[0].1.clone(), w[1].1.clone()))
        .collect();
    if drained {
        if let Some((at, ring)) = s.rings.last() {
            bounds.push((*at, s.items.len(), ring.clone(), "end".to_string()));
        }
    }
    for (start, end, from, to) in bounds {
        if from == to {
            continue; // the initial ring reported twice
        }
        let seg = &s.items[start..end];
        let after_joins = seg
            .iter()
            .rposition(|i| matches!(i, Item::Conf(_, _, j) if j.iter().any(|e| e.2 == REASON_JOIN)))
            .map_or(start, |k| start + k + 1);
        match s.joined_at {
            Some(j) if j <= after_joins => {
                out.insert((from, to), &s.items[after_joins..end]);
            }
            _ => {}
        }
    }
    out
}

fn check_virtual_synchrony(
    streams: &BTreeMap<Member, Stream>,
    facts: &Facts,
    v: &mut Vec<Violation>,
) {
    let segs: Vec<(Member, Segments<'_>)> = streams
        .iter()
        .map(|(m, s)| {
            (
                *m,
                segments(s, facts.drained && facts.survivors.contains(m)),
            )
        })
        .collect();
    for (i, (a, sa)) in segs.iter().enumerate() {
        for (b, sb) in &segs[i + 1..] {
            for (key, ia) in sa {
                let Some(ib) = sb.get(key) else { continue };
                if ia == ib {
                    continue;
                }
                let k = ia.iter().zip(ib.iter()).take_while(|(x, y)| x == y).count();
                let (x, y) = (ia.get(k), ib.get(k));
                let detail = format!(
                    "item {k}: {x:?} at {a:?}, {y:?} at {b:?} ({} and {} items)",
                    ia.len(),
                    ib.len()
                );
                // the same messages in the same order: only the confchgs differ
                let msgs = |items: &[Item]| -> Vec<Item> {
                    items
                        .iter()
                        .filter(|i| matches!(i, Item::Msg(_)))
                        .cloned()
                        .collect()
                };
                let conf = msgs(ia) == msgs(ib);
                let (from_ring, to_ring) = key.clone();
                v.push(if conf {
                    Violation::Membership {
                        a: *a,
                        b: *b,
                        from_ring,
                        to_ring,
                        detail,
                    }
                } else {
                    Violation::VirtualSynchrony {
                        a: *a,
                        b: *b,
                        from_ring,
                        to_ring,
                        detail,
                    }
                });
            }
        }
    }
}

/// A survivor delivers every message it accepted (its own delivery of its
/// own message; virtual synchrony carries it to whoever moved with it).
fn check_lost(records: &[Record], facts: &Facts, v: &mut Vec<Violation>) {
    let mut own: HashMap<Member, BTreeSet<u64>> = HashMap::new();
    for r in records {
        if let Event::Deliver {
            from,
            numbered: Some((_, seq, _)),
            ..
        } = &r.ev
        {
            if *from == r.who {
                own.entry(r.who).or_default().insert(*seq);
            }
        }
    }
    for (sender, ranges) in &facts.accepted {
        if !facts.survivors.contains(sender) {
            continue;
        }
        let got = own.get(sender);
        for seq in ranges.iter().flat_map(Clone::clone) {
            if !got.is_some_and(|g| g.contains(&seq)) {
                v.push(Violation::Lost {
                    sender: *sender,
                    seq,
                });
                break; // one per sender says enough
            }
        }
    }
}

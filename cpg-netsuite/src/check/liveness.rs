//! Liveness read off the logs: when the processes last changed
//! configuration, and whether they ended in the configuration expected.
//!
//! "One configuration" for a set of processes: each one's latest ring has
//! the same id and exactly the expected nodes, and each one's latest
//! confchg of the group lists exactly the expected processes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::{Event, Member, Record};

/// Each process's latest ring and group member list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Latest ring id and its nodes.
    pub ring: Option<(String, BTreeSet<u32>)>,
    /// Latest member list of the group.
    pub members: Option<BTreeSet<Member>>,
}

/// The views of `who` after every record up to `until` (all when None).
pub fn views(records: &[Record], group: &str, who: &[Member]) -> BTreeMap<Member, View> {
    let mut out: BTreeMap<Member, View> = who.iter().map(|m| (*m, View::default())).collect();
    for r in records {
        let Some(view) = out.get_mut(&r.who) else {
            continue;
        };
        match &r.ev {
            Event::Totem { ring, members } => {
                view.ring = Some((ring.clone(), members.iter().copied().collect()));
            }
            Event::Confchg {
                group: g, members, ..
            } if g == group => {
                view.members = Some(members.iter().copied().collect());
            }
            _ => {}
        }
    }
    out
}

/// Whether `who` are in one configuration of exactly themselves.
pub fn whole(records: &[Record], group: &str, who: &[Member]) -> bool {
    let nodes: BTreeSet<u32> = who.iter().map(|m| m.0).collect();
    let procs: BTreeSet<Member> = who.iter().copied().collect();
    let v = views(records, group, who);
    let ring = v
        .values()
        .next()
        .and_then(|x| x.ring.as_ref().map(|r| r.0.clone()));
    ring.is_some()
        && v.values().all(|x| {
            x.ring
                .as_ref()
                .is_some_and(|(id, n)| Some(id) == ring.as_ref() && *n == nodes)
                && x.members.as_ref() == Some(&procs)
        })
}

/// Whether each process's latest ring has exactly the nodes of its part:
/// `parts` lists the processes of each side of a partition.
pub fn split(records: &[Record], parts: &[Vec<Member>]) -> bool {
    let all: Vec<Member> = parts.iter().flatten().copied().collect();
    let v = views(records, "", &all);
    parts.iter().all(|part| {
        let nodes: BTreeSet<u32> = part.iter().map(|m| m.0).collect();
        part.iter()
            .all(|m| v[m].ring.as_ref().is_some_and(|(_, n)| *n == nodes))
    })
}

/// The time of the last configuration event of any of `who` after `after`:
/// how long after `after` they settled (zero when nothing changed).
pub fn settle_time(records: &[Record], who: &[Member], after: Duration) -> Duration {
    records
        .iter()
        .filter(|r| r.at >= after && who.contains(&r.who) && r.ev.is_config())
        .map(|r| r.at - after)
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Whether every one of `who` installed a ring after `after`, and no
/// process's latest ring holds both `a` and `b` (the two ends of a link
/// that works one way only: they cannot be in one ring).
pub fn apart(records: &[Record], after: Duration, who: &[Member], a: u32, b: u32) -> bool {
    let mut latest: BTreeMap<Member, Option<&Vec<u32>>> = who.iter().map(|m| (*m, None)).collect();
    for r in records.iter().filter(|r| r.at >= after) {
        if let (Some(slot), Event::Totem { members, .. }) = (latest.get_mut(&r.who), &r.ev) {
            *slot = Some(members);
        }
    }
    latest
        .values()
        .all(|ring| ring.is_some_and(|m| !(m.contains(&a) && m.contains(&b))))
}

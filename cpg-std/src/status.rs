//! What a node is doing, for `cpgtool status`: its ring, state, members,
//! each link to each node, and the counters an operator reads (Corosync's
//! `corosync-cfgtool -s` and `corosync-cmapctl -m stats` in one).
//!
//! - [`StatusSource`]: taken from a running [`Node`] (and kept by cpgd,
//!   which answers the IPC's `STATUS` from it, `docs/spec/ipc.md`); reads
//!   the engine, the handle layer and the transport at each call.
//! - [`StatusReport`]: one snapshot, owned, with `serde` (`cpgtool status
//!   --json`, and the line an embedded `cpgtool node` answers on its
//!   status socket), and [`StatusReport::text`], the operator's view.
//!
//! A link's state is what the transport measured: with redundant links
//! the driver's heartbeats say up or down and count each (peer, link)'s
//! datagrams (`cpg_uring::LinkStatus`); a single link has no heartbeat, so
//! it says `not measured` (its datagrams still counted); this node's own
//! entries are its addresses, not measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use cpg_core::engine::State;
use cpg_core::ipc::{LinkState, List, StatusCounters, StatusLink, StatusReply, StatusState};
use cpg_core::{NodeId, RingId};
use serde::{Deserialize, Serialize};

use crate::handles::ops::NodeControl;
use crate::Node;

/// Adds what the node does not count itself (cpgd: its IPC connections).
pub type ExtraCounters = Arc<dyn Fn(&mut StatusCounters) + Send + Sync>;

/// Where a node's status is read from, apart from the node (cpgd keeps
/// one for its connections); cheap to clone.
#[derive(Clone)]
pub struct StatusSource {
    control: Arc<dyn NodeControl>,
    transport: Option<Arc<cpg_uring::Counters>>,
    node_id: NodeId,
    cluster_name: Arc<str>,
    /// Every node of the node list and its address (link 0).
    nodes: Arc<[(NodeId, SocketAddr)]>,
    extra: Option<ExtraCounters>,
    /// The transport's (peer, link) table, when it has one.
    links: Option<cpg_uring::LinkStatusHandle>,
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSource")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The state's name in a report.
fn state_of(s: State) -> StatusState {
    match s {
        State::Operational => StatusState::Operational,
        State::Gather => StatusState::Gather,
        State::Commit => StatusState::Commit,
        State::Recovery => StatusState::Recovery,
    }
}

/// One page of a `STATUS` reply, owned (what the client reads out of the
/// event ring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusPage {
    pub(crate) node_id: NodeId,
    pub(crate) state: StatusState,
    pub(crate) ring: RingId,
    pub(crate) cluster_name: Vec<u8>,
    pub(crate) members: Vec<NodeId>,
    pub(crate) link_total: u32,
    pub(crate) link_offset: u32,
    pub(crate) links: Vec<StatusLink>,
    pub(crate) counters: StatusCounters,
}

impl StatusPage {
    pub(crate) fn new(r: &StatusReply<'_>) -> StatusPage {
        StatusPage {
            node_id: r.node_id,
            state: r.state,
            ring: r.ring,
            cluster_name: r.cluster_name.to_vec(),
            members: r.members.iter().collect(),
            link_total: r.link_total,
            link_offset: r.link_offset,
            links: r.links.iter().collect(),
            counters: r.counters,
        }
    }
}

impl StatusSource {
    /// The source of `node` (started from `config`).
    pub(crate) fn new(
        control: Arc<dyn NodeControl>,
        transport: Option<Arc<cpg_uring::Counters>>,
        config: &crate::NodeConfig,
    ) -> StatusSource {
        StatusSource {
            control,
            transport,
            node_id: config.node_id,
            cluster_name: config.cluster_name.as_str().into(),
            nodes: config.nodes.iter().copied().collect(),
            extra: None,
            links: None,
        }
    }

    /// The same, reading each (peer, link) from `links` (the driver's).
    pub(crate) fn with_links(mut self, links: Option<cpg_uring::LinkStatusHandle>) -> StatusSource {
        self.links = links;
        self
    }

    /// The same, with `extra` adding counters the node does not keep.
    pub fn with_extra(mut self, extra: ExtraCounters) -> StatusSource {
        self.extra = Some(extra);
        self
    }

    /// The counters now.
    pub fn counters(&self) -> StatusCounters {
        let st = self.control.status();
        let e = &st.engine;
        let h = self.control.stats();
        let mut c = StatusCounters {
            frames_tx: e.frames_sent,
            frames_rx: e.frames_received,
            bytes_tx: e.bytes_sent,
            bytes_rx: e.bytes_received,
            retransmissions: e.retransmissions,
            token_rotations: e.token_visits,
            ring_changes: e.ring_changes,
            token_losses: e.token_losses_operational + e.token_losses_recovery,
            frames_dropped: e.dropped_malformed
                + e.dropped_stale
                + e.dropped_unknown_node
                + e.dropped_implausible
                + e.dropped_ring_seq_jump
                + e.dropped_window_bytes,
            try_again: e.try_again,
            evictions: h.evictions,
            deliveries: e.app_delivered,
            handles: h.handles as u64,
            ..StatusCounters::default()
        };
        if let Some(t) = &self.transport {
            // the transport counts each frame per destination and sees
            // what the engine never does (sealing, loopback): its figures
            let t = t.snapshot();
            c.frames_tx = t.frames_sent;
            c.frames_rx = t.frames_received;
            c.bytes_tx = t.bytes_sent;
            c.bytes_rx = t.bytes_received;
            c.sends_zc = t.sends_zc_fixed + t.sends_zc_heap + t.sends_gather_zc + t.gso_sends_zc;
            // a refused zero-copy send's copy is a copying send too; a GSO
            // send is one send, however many datagrams it carries
            c.sends_copy = t.sends_write_fixed
                + t.sends_plain
                + t.sends_gather
                + t.zc_fallback_copies
                + t.gso_sends.saturating_sub(t.gso_sends_zc);
            c.sends_zc_copied = t.zc_kernel_copied;
            c.bytes_copied = t.bytes_copied;
        }
        if let Some(x) = &self.extra {
            x(&mut c);
        }
        c
    }

    /// Every link (node, link number) with what is known of it.
    fn links(&self) -> Vec<StatusLink> {
        let peers = self
            .links
            .as_ref()
            .map(|h| h.snapshot())
            .unwrap_or_default();
        if peers.is_empty() {
            return self
                .nodes
                .iter()
                .map(|&(nodeid, addr)| StatusLink {
                    nodeid,
                    link: 0,
                    state: LinkState::NotMeasured,
                    addr,
                    frames_rx: None,
                    frames_tx: None,
                })
                .collect();
        }
        // this node's own addresses (one per link), then every (peer, link)
        let mut own: Vec<(u8, SocketAddr)> = peers.iter().map(|l| (l.link, l.local)).collect();
        own.sort_unstable();
        own.dedup();
        let mut v: Vec<StatusLink> = own
            .into_iter()
            .map(|(link, addr)| StatusLink {
                nodeid: self.node_id,
                link,
                state: LinkState::NotMeasured,
                addr,
                frames_rx: None,
                frames_tx: None,
            })
            .collect();
        v.extend(peers.iter().map(|l| StatusLink {
            nodeid: l.peer,
            link: l.link,
            state: match (l.heartbeats, l.up) {
                (false, _) => LinkState::NotMeasured,
                (true, true) => LinkState::Up,
                (true, false) => LinkState::Down,
            },
            addr: l.remote,
            frames_rx: Some(l.frames_rx),
            frames_tx: Some(l.frames_tx),
        }));
        v.sort_by_key(|l| (l.nodeid, l.link));
        v
    }

    /// The `STATUS` reply for links from `link_offset` on, handed to
    /// `f` (it borrows this call's snapshot).
    pub fn reply_page<R>(&self, link_offset: u32, f: impl FnOnce(&StatusReply<'_>) -> R) -> R {
        let st = self.control.status();
        let counters = self.counters();
        let links = self.links();
        let from = (link_offset as usize).min(links.len());
        let to = (from + cpg_core::ipc::STATUS_LINKS_MAX).min(links.len());
        let name = self.cluster_name.as_bytes();
        let members = &st.members[..st.members.len().min(cpg_core::limits::NODES_MAX)];
        f(&StatusReply {
            node_id: self.node_id,
            state: state_of(st.state),
            ring: st.ring_id,
            cluster_name: &name[..name.len().min(255)],
            members: List::from_slice(members),
            link_total: links.len() as u32,
            link_offset: from as u32,
            links: List::from_slice(&links[from..to]),
            counters,
        })
    }

    /// A snapshot.
    pub fn report(&self) -> StatusReport {
        self.reply_page(0, |first| {
            StatusReport::from_page(&StatusPage::new(first), self.links(), "node")
        })
    }
}

impl Node {
    /// Where this node's status is read from ([`StatusSource`]).
    pub fn status_source(&self) -> StatusSource {
        self.status_source.clone()
    }

    /// Ring, members, links and counters now.
    pub fn status_report(&self) -> StatusReport {
        self.status_source.report()
    }
}

/// One link to one node in a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The node at the other end.
    pub nodeid: NodeId,
    /// The link number.
    pub link: u8,
    /// Its address.
    pub addr: String,
    /// `up`, `down`, or `not measured` (the transport does not watch it).
    pub status: String,
    /// Frames received from the node on this link, when counted per link.
    pub frames_rx: Option<u64>,
    /// Frames sent to it on this link, when counted per link.
    pub frames_tx: Option<u64>,
}

/// A member of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Its node id.
    pub nodeid: NodeId,
    /// Its addresses (one per link, from the node list).
    pub addrs: Vec<String>,
}

/// A node's status at one moment: what `cpgtool status` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `node` (an embedded node) or `cpgd`.
    pub source: String,
    /// This node.
    pub node_id: NodeId,
    /// The cluster name.
    pub cluster_name: String,
    /// The ring id as Corosync prints it (`rep.seq`, hex).
    pub ring_id: String,
    /// `operational`, `gather`, `commit` or `recovery`.
    pub state: String,
    /// The ring's members.
    pub members: Vec<MemberReport>,
    /// Every link to every node of the node list (this node's own too).
    pub links: Vec<LinkReport>,
    /// The counters by name ([`StatusCounters::NAMES`]).
    pub counters: BTreeMap<String, u64>,
}

impl StatusReport {
    /// From a first page and every link.
    pub(crate) fn from_page(p: &StatusPage, links: Vec<StatusLink>, source: &str) -> StatusReport {
        let addrs_of = |n: NodeId| {
            links
                .iter()
                .filter(|l| l.nodeid == n)
                .map(|l| l.addr.to_string())
                .collect()
        };
        StatusReport {
            source: source.to_string(),
            node_id: p.node_id,
            cluster_name: String::from_utf8_lossy(&p.cluster_name).into_owned(),
            ring_id: p.ring.to_string(),
            state: p.state.name().to_string(),
            members: p
                .members
                .iter()
                .map(|&nodeid| MemberReport {
                    nodeid,
                    addrs: addrs_of(nodeid),
                })
                .collect(),
            links: links
                .iter()
                .map(|l| LinkReport {
                    nodeid: l.nodeid,
                    link: l.link,
                    addr: l.addr.to_string(),
                    status: l.state.name().to_string(),
                    frames_rx: l.frames_rx,
                    frames_tx: l.frames_tx,
                })
                .collect(),
            counters: StatusCounters::NAMES
                .iter()
                .zip(p.counters.to_array())
                .map(|(k, v)| ((*k).to_string(), v))
                .collect(),
        }
    }

    /// A counter by name (0 if absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The operator's view: the ring and its links as `corosync-cfgtool
    /// -s` prints them, then the counters as `corosync-cmapctl -m stats`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Local node ID {}, cluster {} ({})",
            self.node_id, self.cluster_name, self.source
        );
        let _ = writeln!(s, "Ring ID {}, state {}", self.ring_id, self.state);
        let _ = writeln!(s, "Members ({}):", self.members.len());
        for m in &self.members {
            let me = if m.nodeid == self.node_id {
                " (local)"
            } else {
                ""
            };
            let _ = writeln!(s, "\tnodeid {:>3}{me}\t{}", m.nodeid, m.addrs.join(" "));
        }
        let mut numbers: Vec<u8> = self.links.iter().map(|l| l.link).collect();
        numbers.sort_unstable();
        numbers.dedup();
        for n in numbers {
            let _ = writeln!(s, "LINK ID {n}");
            for l in self.links.iter().filter(|l| l.link == n) {
                let what = if l.nodeid == self.node_id {
                    "localhost".to_string()
                } else {
                    let in_ring = self.members.iter().any(|m| m.nodeid == l.nodeid);
                    format!(
                        "{}{}",
                        l.status,
                        if in_ring { "" } else { ", not in the ring" }
                    )
                };
                let count = |c: Option<u64>| c.map_or("-".to_string(), |v| v.to_string());
                let _ = writeln!(
                    s,
                    "\tnodeid {:>3}:\t{what}\t{}\tframes rx {} tx {}",
                    l.nodeid,
                    l.addr,
                    count(l.frames_rx),
                    count(l.frames_tx)
                );
            }
        }
        let _ = writeln!(s, "Counters:");
        for name in StatusCounters::NAMES {
            if let Some(v) = self.counters.get(*name) {
                let _ = writeln!(s, "\tstats.{name} (u64) = {v}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::LoopbackNet;
    use crate::NodeConfig;

    #[test]
    fn an_embedded_node_reports_itself() {
        let net = LoopbackNet::new();
        let node = net.start(&NodeConfig::in_memory(1, &[1, 2])).unwrap();
        let r = node.status_report();
        assert_eq!(r.node_id, 1);
        assert_eq!(r.links.len(), 2);
        assert!(r.links.iter().all(|l| l.status == "not measured"));
        assert_eq!(r.counters.len(), StatusCounters::NAMES.len());
        let text = r.text();
        assert!(text.contains("Local node ID 1"), "{text}");
        assert!(text.contains("stats.token_rotations (u64) = "), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // a page beyond the links is empty, never out of range
        node.status_source().reply_page(99, |p| {
            assert!(p.links.is_empty());
            assert_eq!(p.link_offset, 2);
        });
        node.stop();
    }
}

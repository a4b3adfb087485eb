//! The handle layer over the in-process loopback transport: every function
//! of the API, every error code of `docs/spec/cpg-api.md` §0, dispatch modes, threads, slow
//! consumers. Nodes run on their own threads exactly as with a socket
//! transport; only the wire is a channel.
//!
//! The cases are `handles/cases.rs`, shared with `cpgd/tests/handles.rs`,
//! which runs them on daemons; this file runs them on embedded nodes
//! ([`Embedded`]), and holds the cases that only an embedded node can
//! express.

mod common;
#[macro_use]
#[path = "handles/cases.rs"]
mod cases;

use cases::Cluster;
use common::*;
use cpg_core::Duration as CoreDuration;
use cpg_std::loopback::LoopbackNet;
use cpg_std::testing::{self, NodeProbe};
use cpg_std::{Callbacks, Context, Cpg, CsError, ModelV1, Node, NodeConfig, Reason};

/// Nodes `1..=n` on one loopback network, handles opened on them
/// (`testing::model_initialize_with_pid`: one test process plays many).
struct Embedded {
    net: LoopbackNet,
    nodes: Vec<Option<Node>>,
}

fn tweak(c: &mut NodeConfig) {
    // robust under a loaded 2-core machine: token 2 s
    c.engine.token = CoreDuration::from_millis(2000);
}

impl Embedded {
    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }
}

impl Cluster for Embedded {
    const REUSES_HANDLE_SLOTS: bool = true;

    fn start(n: u32, f: &dyn Fn(&mut NodeConfig)) -> Embedded {
        let net = LoopbackNet::new();
        let nodes = net
            .cluster(n, |c| {
                tweak(c);
                f(c)
            })
            .unwrap();
        let c = Embedded {
            net,
            nodes: nodes.into_iter().map(Some).collect(),
        };
        let probes: Vec<NodeProbe> = (0..n as usize).map(|i| c.probe(i)).collect();
        assert!(cases::converged(&probes), "ring did not form");
        c
    }

    fn open_model(
        &self,
        i: usize,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        testing::model_initialize_with_pid(self.node(i), pid, model, context)
    }

    fn open_legacy(&self, i: usize, callbacks: Callbacks) -> Result<Cpg, CsError> {
        Cpg::initialize(self.node(i), callbacks)
    }

    fn pid(&self, pid: u32) -> u32 {
        pid
    }

    fn stop(&mut self, i: usize) {
        self.nodes[i].take().expect("node running").stop();
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].take().expect("node running").kill();
    }

    fn probe(&self, i: usize) -> NodeProbe {
        testing::probe(self.node(i))
    }

    fn sent_from(&self, _i: usize, addr: usize) -> usize {
        addr
    }

    fn ring_bytes(&self) -> usize {
        0
    }
}

handle_cases!(Embedded);

/// Embedded only: three members of one group on one node, two of them
/// joining in one node's order (over cpgd, one test process is one member
/// per node, and members on two nodes have no such order).
#[test]
fn leave_before_the_own_join_is_delivered_is_ordered_after_it() {
    let c = Embedded::start(1, &|_| {});
    let node = c.node(0);
    let g = group("early-leave");
    let a = H::open(node, 1);
    a.cpg.join(&g).unwrap();
    assert!(a.wait_joined(&g));
    c.net.set_frozen(1, true);
    let cc = H::open(node, 3);
    let b = H::open(node, 2);
    cc.cpg.join(&g).unwrap(); // ordered before b's join: b must not see it
    b.cpg.join(&g).unwrap();
    b.cpg.leave(&g).unwrap(); // returns at once, ordered after the join
    assert_eq!(b.cpg.leave(&g), Err(CsError::NotExist));
    c.net.set_frozen(1, false);
    let bm = b.me();
    assert!(b.wait(|e| e
        .iter()
        .any(|e| matches!(e, Ev::Conf { left, .. } if left.contains(&(bm, Reason::Leave))))));
    let confs = b.rec.confs();
    assert_eq!(
        confs.len(),
        2,
        "own JOIN then own LEAVE, nothing else: {confs:?}"
    );
    assert!(
        matches!(&confs[0], Ev::Conf { joined, members, .. } if joined == &vec![(bm, Reason::Join)] && members.len() == 3)
    );
    // and it may join again
    b.cpg.join(&g).unwrap();
    assert!(a.wait_members(&g, 3));
}

/// Embedded only: the in-process loopback transport sends from no
/// external memory.
#[test]
fn loopback_nodes_have_no_external_regions() {
    let c = Embedded::start(1, &|_| {});
    assert!(c.node(0).external_regions().is_none());
}

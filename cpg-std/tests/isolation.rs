//! Isolation: one local consumer that dispatches slowly, or never, must
//! not slow, stall or split the ring, and a queue cap must hold the
//! messages the configuration allows (the security issue "Isolation",
//! items 7, 8 and 9). In-process nodes on the loopback transport; every
//! assertion is on counters and outcomes, never on rates, and every wait
//! has a generous deadline only as a hang guard.

mod common;

use std::io::IoSlice;
use std::time::Duration;

use common::*;
use cpg_core::Duration as CoreDuration;
use cpg_std::loopback::LoopbackNet;
use cpg_std::{CsError, GroupName, Guarantee, Node, NodeConfig};

fn tweak(c: &mut NodeConfig) {
    // robust under a loaded 2-core machine: token 2 s
    c.engine.token = CoreDuration::from_millis(2000);
}

/// Open and join `pid` on `node`.
fn joined(node: &Node, pid: u32, g: &GroupName) -> H {
    let h = H::open(node, pid);
    h.cpg.join(g).unwrap();
    h
}

/// Issue item 9: with the default `max_message_size` and queue cap, a
/// handle holding one small undispatched event takes a maximum-size
/// message, its own and another's, without being evicted.
#[test]
fn maximum_size_messages_do_not_evict_a_handle_holding_a_small_event() {
    let net = LoopbackNet::new();
    let mut c = NodeConfig::in_memory(1, &[1]);
    tweak(&mut c);
    // large frames: the same message in fewer of them (the queue cap and
    // max_message_size keep their defaults)
    c.engine.netmtu = 65535;
    let max = c.engine.max_message_size;
    let node = net.start(&c).unwrap();
    assert!(converged(&[&node]));
    let g = group("big");
    let a = joined(&node, 1, &g);
    let b = joined(&node, 2, &g);
    assert!(a.wait_members(&g, 2));
    assert!(b.wait_members(&g, 2));
    let send = |h: &H, m: &[u8]| {
        let end = std::time::Instant::now() + LONG;
        loop {
            match h.cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(m)]) {
                Err(CsError::TryAgain) if std::time::Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r,
            }
        }
    };
    // `a` stops dispatching: one small event waits in its queue
    send(&b, b"small").unwrap();
    assert!(b.wait_msgs(1));
    let big_a = vec![0xa5u8; max];
    let big_b = vec![0x5bu8; max];
    // a's own maximum-size message, then b's
    assert_eq!(send(&a, &big_a), Ok(()));
    assert!(b.wait_msgs(2));
    assert_eq!(send(&b, &big_b), Ok(()));
    assert!(b.wait_msgs(3));
    assert_eq!(
        node.stats().evictions,
        0,
        "evicted by a maximum-size message"
    );
    assert!(a.wait_msgs(3));
    let got = a.rec.msgs();
    assert_eq!(got[0], b"small");
    assert!(got[1] == big_a && got[2] == big_b, "not intact");
}

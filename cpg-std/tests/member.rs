//! The idiomatic layer ([`cpg_std::Member`]) on the loopback transport:
//! join, send, receive, drop (the others see the leave), timeouts, the
//! eventfd, error mapping.

mod common;

use std::time::Duration;

use common::*;
use cpg_std::loopback::LoopbackNet;
use cpg_std::{
    ConfigBuilder, CsError, Event, Guarantee, JoinOptions, Member, Membership, Node, Reason,
    SendError,
};

const WAIT: Duration = Duration::from_secs(10);

/// Nodes `1..=n` built with [`ConfigBuilder`], in one ring.
fn cluster(n: u32) -> (LoopbackNet, Vec<Node>) {
    let net = LoopbackNet::new();
    let ids: Vec<u32> = (1..=n).collect();
    let nodes: Vec<Node> = ids
        .iter()
        .map(|&id| {
            let c = ConfigBuilder::new("member-test")
                .local_nodes(&ids, 21000)
                .this_node(id)
                .fast_timers()
                // robust under a loaded 2-core machine
                .token(Duration::from_secs(2))
                .build()
                .unwrap();
            net.start(&c).unwrap()
        })
        .collect();
    assert!(converged(&nodes.iter().collect::<Vec<_>>()), "ring");
    (net, nodes)
}

/// The next membership event, skipping others.
fn next_membership(m: &Member) -> Membership {
    loop {
        match m.next_timeout(WAIT).unwrap().expect("a membership event") {
            Event::Membership(c) => return c,
            _ => continue,
        }
    }
}

/// The next message's bytes, skipping others.
fn next_message(m: &Member) -> Vec<u8> {
    loop {
        match m.next_timeout(WAIT).unwrap().expect("a message") {
            Event::Message(msg) => return msg.to_vec(),
            _ => continue,
        }
    }
}

#[test]
fn join_send_receive_drop_leave() {
    let (_net, nodes) = cluster(2);
    let g = group("member");
    let a = Member::join(&nodes[0], &g).unwrap();
    let b = Member::join(&nodes[1], &g).unwrap();
    // b's view: eventually both members
    while next_membership(&b).members.len() < 2 {}
    while next_membership(&a).members.len() < 2 {}

    a.send(Guarantee::Agreed, b"hello").unwrap();
    let own = loop {
        match a.next_timeout(WAIT).unwrap().expect("own message") {
            Event::Message(m) => break m,
            _ => continue,
        }
    };
    assert_eq!(own.bytes(), b"hello");
    assert_eq!(own.sender, a.addr());
    assert_eq!(own.guarantee, Guarantee::Agreed);
    let shared = own.clone().into_shared();
    assert_eq!(&*shared, own.bytes());
    assert_eq!(next_message(&b), b"hello");

    let gone = a.addr();
    drop(a);
    let c = next_membership(&b);
    assert_eq!(c.members, vec![b.addr()]);
    assert_eq!(c.left.len(), 1);
    assert_eq!(c.left[0].0, gone);
    assert!(
        matches!(c.left[0].1, Reason::Leave | Reason::ProcDown),
        "{:?}",
        c.left[0].1
    );
    assert_eq!(b.members().unwrap(), vec![b.addr()]);
}

#[test]
fn try_next_timeout_and_fd() {
    let (_net, nodes) = cluster(1);
    let g = group("poll");
    let m = Member::join_with(
        &nodes[0],
        &g,
        JoinOptions {
            pid: Some(77),
            ring_events: true,
        },
    )
    .unwrap();
    assert_eq!(m.addr().pid, 77);
    // the own join, then (ring_events) the current ring
    match m.next_timeout(WAIT).unwrap().expect("own join") {
        Event::Membership(c) => assert_eq!(c.joined, vec![(m.addr(), Reason::Join)]),
        other => panic!("{other:?}"),
    }
    match m.next_timeout(WAIT).unwrap().expect("initial ring") {
        Event::Ring(r) => assert_eq!(r.nodes, vec![1]),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.try_next().unwrap(), None);
    let t = std::time::Instant::now();
    assert_eq!(m.next_timeout(Duration::from_millis(50)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(50));

    // the eventfd turns readable when the message arrives
    m.send(Guarantee::Safe, b"x").unwrap();
    let mut fds = [rustix::event::PollFd::new(&m, rustix::event::PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&ts)).unwrap(), 1);
    let got: Vec<Event> = m.events().take(1).collect();
    assert!(matches!(&got[0], Event::Message(msg) if msg.bytes() == b"x"));
}

#[test]
fn send_errors_map_to_cs_error() {
    let net = LoopbackNet::new();
    let c = ConfigBuilder::new("errs")
        .local_nodes(&[1], 21100)
        .this_node(1)
        .fast_timers()
        .max_message_size(1024)
        .build()
        .unwrap();
    let node = net.start(&c).unwrap();
    assert!(converged(&[&node]));
    let g = group("errs");
    let m = Member::join(&node, &g).unwrap();
    assert_eq!(
        m.send(Guarantee::Agreed, &[0u8; 2048]),
        Err(SendError::TooBig)
    );
    assert_eq!(CsError::from(SendError::TooBig), CsError::TooBig);
    // a second member of this process in the same group: EXIST
    assert_eq!(Member::join(&node, &g).unwrap_err(), CsError::Exist);
    // after leaving: NotJoined
    m.cpg().leave(&g).unwrap();
    assert_eq!(m.send(Guarantee::Agreed, b"x"), Err(SendError::NotJoined));
    assert_eq!(CsError::from(SendError::NotJoined), CsError::NotExist);
    // node stopped: Closed, and the event stream ends
    node.stop();
    assert_eq!(m.send(Guarantee::Agreed, b"x"), Err(SendError::Closed));
    let _drained = m.events().count();
    assert!(m.try_next().is_err());
}

#[test]
fn would_block_until_received() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Member>();
    let net = LoopbackNet::new();
    let c = ConfigBuilder::new("bp")
        .local_nodes(&[1], 21200)
        .this_node(1)
        .fast_timers()
        .max_message_size(256 * 1024)
        .handle_queue_bytes(1024 * 1024)
        .build()
        .unwrap();
    let node = net.start(&c).unwrap();
    assert!(converged(&[&node]));
    let m = Member::join(&node, &group("bp")).unwrap();
    let msg = [7u8; 1024];
    // never receiving: back-pressure at half the queue cap
    let t = std::time::Instant::now();
    let err = loop {
        match m.send(Guarantee::Agreed, &msg) {
            Ok(()) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => break e,
        }
        assert!(t.elapsed() < WAIT, "no back-pressure");
    };
    assert_eq!(err, SendError::WouldBlock);
    assert_eq!(CsError::from(err), CsError::TryAgain);
    // receiving drains the queue; sends are accepted again
    let mut got = 0;
    while let Some(ev) = m.try_next().unwrap() {
        if let Event::Message(b) = ev {
            assert_eq!(b.len(), msg.len());
            got += 1;
        }
    }
    assert!(got > 0);
    let t = std::time::Instant::now();
    while let Err(e) = m.send(Guarantee::Agreed, &msg) {
        assert_eq!(e, SendError::WouldBlock);
        let _ = m.next_timeout(Duration::from_millis(10)).unwrap();
        assert!(t.elapsed() < WAIT, "still blocked");
    }
}

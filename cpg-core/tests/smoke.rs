//! The basic story on a perfect network (ring forms, joins, ordered
//! delivery, SAFE, fragmentation, zero copy, node loss), in a few
//! milliseconds, over the public engine API. The driver is
//! `cpg_sim::perfect::Cluster`; the simulator's faulty network (`cpg-sim`)
//! does the rest.

use cpg_core::engine::{ConfigChange, Engine, EngineOptions, Event, Request};
use cpg_core::limits::Config;
use cpg_core::{CsError, Duration, GroupName, Guarantee, Instant, Reason};
use cpg_sim::network::Frame;
use cpg_sim::perfect::Cluster;

/// `n` nodes with `seq_base` and each configuration adjusted by `tweak`.
fn cluster_with(n: usize, seq_base: u32, tweak: impl Fn(&mut Config)) -> Cluster {
    let options = EngineOptions {
        trace: true,
        seq_base,
    };
    Cluster::with(n, options, tweak)
}

fn group() -> GroupName {
    GroupName::new(b"GROUP\0").unwrap()
}

#[test]
fn three_nodes_form_one_ring() {
    let mut net = Cluster::new(3);
    assert!(
        net.run_until(Duration::from_millis(5000), |n| n.converged()),
        "no single ring"
    );
    let ring = net.engine(0).ring_id();
    assert_eq!(ring.rep, 1);
    assert_eq!(net.engine(0).members(), &[1, 2, 3]);
}

#[test]
fn join_and_totally_ordered_delivery() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    for i in 0..3 {
        net.submit(
            i,
            Request::Join {
                pid: 100 + i as u32,
                group: &g,
                flags: 0,
            },
        )
        .unwrap();
    }
    assert_eq!(
        net.submit(
            0,
            Request::Join {
                pid: 100,
                group: &g,
                flags: 0
            }
        ),
        Err(CsError::Exist)
    );
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 3)));
    for k in 0..50u32 {
        for i in 0..3 {
            let msg = format!("n{i}-{k}");
            let g2 = if k % 5 == 0 {
                Guarantee::Safe
            } else {
                Guarantee::Agreed
            };
            net.submit(
                i,
                Request::Mcast {
                    pid: 100 + i as u32,
                    group: &g,
                    guarantee: g2,
                    iov: &[msg.as_bytes()],
                },
            )
            .unwrap();
        }
    }
    net.run_until(Duration::from_millis(3000), |n| {
        (0..3).all(|i| n.delivered_in(i, &g).len() == 150)
    });
    let d0 = net.delivered_in(0, &g);
    assert_eq!(d0.len(), 150);
    for i in 1..3 {
        assert_eq!(net.delivered_in(i, &g), d0, "node {i} order differs");
    }
    // FIFO per sender
    for i in 0..3 {
        let mine: Vec<_> = d0
            .iter()
            .filter(|m| m.starts_with(format!("n{i}-").as_bytes()))
            .collect();
        let expect: Vec<Vec<u8>> = (0..50).map(|k| format!("n{i}-{k}").into_bytes()).collect();
        assert_eq!(mine.len(), 50);
        for (a, b) in mine.iter().zip(expect.iter()) {
            assert_eq!(*a, b);
        }
    }
    // every node saw the three joins
    let confchgs = net
        .events(2)
        .iter()
        .filter(|e| matches!(e, Event::ConfChg { .. }))
        .count();
    assert!(confchgs >= 1);
}

#[test]
fn mcast_when_not_joined_is_not_exist() {
    let mut net = Cluster::new(1);
    let g = group();
    assert_eq!(
        net.submit(
            0,
            Request::Mcast {
                pid: 1,
                group: &g,
                guarantee: Guarantee::Agreed,
                iov: &[b"x"]
            }
        ),
        Err(CsError::NotExist)
    );
    assert_eq!(
        net.submit(
            0,
            Request::Leave {
                pid: 1,
                group: &g,
                reason: Reason::Leave
            }
        ),
        Err(CsError::NotExist)
    );
}

/// A ring of one node, its process `pid` joined to [`group`] (its join
/// delivered).
fn lone_node_joined(pid: u32) -> (Cluster, GroupName) {
    let mut net = Cluster::new(1);
    assert!(net.run_until(Duration::from_millis(2000), |n| n.converged()));
    let g = group();
    net.submit(
        0,
        Request::Join {
            pid,
            group: &g,
            flags: 0,
        },
    )
    .unwrap();
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 1)));
    (net, g)
}

#[test]
fn single_node_delivers_own_messages() {
    let (mut net, g) = lone_node_joined(7);
    net.submit(
        0,
        Request::Mcast {
            pid: 7,
            group: &g,
            guarantee: Guarantee::Safe,
            iov: &[b"hello"],
        },
    )
    .unwrap();
    assert!(
        net.run_until(Duration::from_millis(3000), |n| n.delivered_in(0, &g).len()
            == 1)
    );
    assert_eq!(net.delivered_in(0, &g), vec![b"hello".to_vec()]);
}

#[test]
fn large_message_is_fragmented_and_reassembled() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    net.join_all(1, &g);
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 3)));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    net.submit(
        1,
        Request::Mcast {
            pid: 1,
            group: &g,
            guarantee: Guarantee::Agreed,
            iov: &[&big[..1000], &big[1000..]],
        },
    )
    .unwrap();
    net.submit(
        2,
        Request::Mcast {
            pid: 1,
            group: &g,
            guarantee: Guarantee::Agreed,
            iov: &[b"small"],
        },
    )
    .unwrap();
    assert!(net.run_until(Duration::from_millis(20000), |n| (0..3)
        .all(|i| n.delivered_in(i, &g).len() == 2)));
    for i in 0..3 {
        let d = net.delivered_in(i, &g);
        assert!(d.contains(&big));
        assert_eq!(d, net.delivered_in(0, &g));
    }
    assert!(net.engine(0).stats().fragmented_reassembled >= 1);
}

/// Reassembly buffers are written again once a delivered message is
/// dropped: a run of large messages of different contents and sizes from
/// one sender arrives byte for byte on every node.
#[test]
fn successive_large_messages_reuse_buffers_and_arrive_intact() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    net.join_all(1, &g);
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 3)));
    let msgs: Vec<Vec<u8>> = (0..6u32)
        .map(|k| {
            let len = 40_000 + (k as usize % 3) * 25_000;
            (0..len as u32).map(|i| (i * (k + 3) % 251) as u8).collect()
        })
        .collect();
    for m in &msgs {
        net.submit(
            0,
            Request::Mcast {
                pid: 1,
                group: &g,
                guarantee: Guarantee::Agreed,
                iov: &[m],
            },
        )
        .unwrap();
        // one at a time, so the previous one is delivered (and dropped)
        // before the next one is reassembled
        let n = msgs.iter().position(|x| std::ptr::eq(x, m)).unwrap() + 1;
        assert!(net.run_until(Duration::from_millis(20000), |c| (0..3)
            .all(|i| c.delivered_in(i, &g).len() == n)));
    }
    for i in 0..3 {
        assert_eq!(net.delivered_in(i, &g), msgs, "node {i}");
    }
}

#[test]
fn killed_node_gives_nodedown_and_the_rest_go_on() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    net.join_all(10, &g);
    net.run_for(Duration::from_millis(500));
    net.kill(2);
    assert!(
        net.run_until(Duration::from_millis(10_000), |n| n.converged()),
        "survivors did not re-form"
    );
    assert_eq!(net.engine(0).members(), &[1, 2]);
    let nodedown = net.events(0).iter().any(|e| match e {
        Event::ConfChg { left, .. } => left
            .iter()
            .any(|(m, r)| m.nodeid == 3 && *r == Reason::NodeDown),
        _ => false,
    });
    assert!(nodedown, "no NODEDOWN for node 3");
    net.submit(
        0,
        Request::Mcast {
            pid: 10,
            group: &g,
            guarantee: Guarantee::Safe,
            iov: &[b"after"],
        },
    )
    .unwrap();
    assert!(net.run_until(Duration::from_millis(3000), |n| n
        .delivered_in(1, &g)
        .last()
        .map(|m| m.as_slice())
        == Some(b"after")));
    let trans = net.events(0).iter().any(|e| matches!(e, Event::Config(c) if matches!(&**c, ConfigChange::Transitional { left, .. } if left.as_slice() == [3])));
    assert!(trans);
}

#[test]
fn initial_ring_seq_zero_is_refused() {
    let c = Config::fast(1, &[1]);
    assert!(Engine::<Frame>::new(c, EngineOptions::default(), 0, Instant::ZERO).is_err());
}

#[test]
fn sequence_numbers_wrap_around_u32() {
    let mut net = cluster_with(3, 0xFFFF_FE00, |c| c.window_size = 200);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    net.join_all(5, &g);
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 3)));
    // 1,200 frames cross 2^32 (each message is big enough for its own frame).
    let body = vec![0xAB; 1200];
    let mut sent = 0;
    while sent < 1200 {
        let i = sent % 3;
        let mut m = body.clone();
        m[..4].copy_from_slice(&(sent as u32).to_le_bytes());
        match net.submit(
            i,
            Request::Mcast {
                pid: 5,
                group: &g,
                guarantee: if sent % 7 == 0 {
                    Guarantee::Safe
                } else {
                    Guarantee::Agreed
                },
                iov: &[&m],
            },
        ) {
            Ok(()) => sent += 1,
            Err(CsError::TryAgain) => net.run_for(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(net.run_until(Duration::from_millis(20_000), |n| (0..3)
        .all(|i| n.delivered_in(i, &g).len() == 1200)));
    let d0 = net.delivered_in(0, &g);
    for i in 1..3 {
        assert_eq!(net.delivered_in(i, &g), d0);
    }
    // the ring really crossed the wrap point
    assert!(net
        .events(0)
        .iter()
        .any(|e| matches!(e, Event::Trace(t) if t.seq < 0x1000)));
}

/// A zero-copy buffer: `ZC_HEADROOM` free bytes, then the payload.
fn zc_buf(payload: &[u8]) -> (Frame, std::ops::Range<usize>) {
    let h = cpg_core::limits::ZC_HEADROOM;
    let mut v = vec![0u8; h + payload.len()];
    v[h..].copy_from_slice(payload);
    (v.into(), h..h + payload.len())
}

/// Every frame that carried a zero-copy message at or above the threshold
/// read the payload from inside that very buffer, and its sender delivered
/// it from there too.
#[test]
fn zero_copy_sends_read_from_the_buffer() {
    let mut net = Cluster::new(3);
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    net.join_all(3, &g);
    assert!(net.run_until(Duration::from_millis(2000), |n| n.group_has(&g, 3)));
    for (k, size) in [100usize, 1200, 300_000].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 13 + k) as u8).collect();
        let (buf, range) = zc_buf(&payload);
        let ptr = buf.as_ptr() as usize;
        let end = ptr + buf.len();
        let now = net.now();
        net.engine_mut(0)
            .submit_zc(now, 3, &g, Guarantee::Agreed, buf, range.clone())
            .unwrap();
        net.buf_sends.clear();
        assert!(net.run_until(Duration::from_millis(20_000), |n| (0..3)
            .all(|i| n.delivered_in(i, &g).iter().any(|m| m == &payload))));
        let mine: Vec<_> = net.buf_sends.iter().filter(|s| s.buf == ptr).collect();
        let saw = mine.len();
        for s in &mine {
            assert!(
                s.seg >= ptr && s.seg + s.len <= end,
                "a send read outside the zcb buffer"
            );
        }
        if size >= 1024 {
            assert!(saw >= 1, "size {size}: no frame read from the zcb buffer");
        } else {
            assert_eq!(saw, 0, "size {size}: small zcb messages are packed by copy");
        }
        for i in 0..3 {
            assert!(
                net.delivered_in(i, &g).iter().any(|m| m == &payload),
                "size {size}: node {i} did not deliver it"
            );
        }
        // the sender's own delivery comes from the buffer itself
        if size >= 1024 {
            let own = net.events(0).iter().rev().find_map(|e| match e {
                Event::Deliver { payload: p, .. } if p.bytes() == payload.as_slice() => {
                    Some(p.bytes().as_ptr() as usize)
                }
                _ => None,
            });
            let p = own.expect("self delivery");
            assert!(p >= ptr && p < end, "self-delivery was copied");
        }
    }
}

/// `submit_batch`: the run is taken in order up to the first refusal, the
/// count says how many, every taken message is delivered once, in order,
/// between single submits; a full send queue refuses the rest with
/// TRY_AGAIN and takes them later.
#[test]
fn batch_submit_takes_a_prefix_in_order() {
    let mut net = cluster_with(3, 0, |c| {
        c.send_queue_frames = 4;
        c.max_message_size = 1000;
    });
    assert!(net.run_until(Duration::from_millis(5000), |n| n.converged()));
    let g = group();
    let now = net.now();
    let one = |m: &'static [u8]| core::iter::once((Guarantee::Agreed, m));
    // not joined: nothing taken
    assert_eq!(
        net.engine_mut(0).submit_batch(now, 9, &g, one(b"x")),
        (0, Err(CsError::NotExist))
    );
    net.submit(
        0,
        Request::Join {
            pid: 9,
            group: &g,
            flags: 0,
        },
    )
    .unwrap();
    assert!(net.run_until(Duration::from_millis(2000), |n| n
        .engine(0)
        .group_members(&g)
        .len()
        == 1));
    // a message over max_message_size: the prefix before it is taken
    let now = net.now();
    let big = vec![7u8; 1001];
    let run = [
        (Guarantee::Agreed, &b"b0"[..]),
        (Guarantee::Agreed, &big[..]),
        (Guarantee::Agreed, &b"b2"[..]),
    ];
    assert_eq!(
        net.engine_mut(0)
            .submit_batch(now, 9, &g, run.iter().copied()),
        (1, Err(CsError::TooBig))
    );
    assert_eq!(
        net.engine_mut(0)
            .submit_batch(now, 9, &g, core::iter::empty()),
        (0, Ok(()))
    );
    net.drain(0);
    // a single submit between two batches keeps its place
    net.submit(
        0,
        Request::Mcast {
            pid: 9,
            group: &g,
            guarantee: Guarantee::Agreed,
            iov: &[b"single"],
        },
    )
    .unwrap();
    // 400 messages of 100 B: a 4-frame queue takes a prefix only
    let msgs: Vec<(Guarantee, Vec<u8>)> = (0..400u32)
        .map(|k| {
            let guarantee = if k % 3 == 0 {
                Guarantee::Safe
            } else {
                Guarantee::Agreed
            };
            (
                guarantee,
                format!("m{k:04}-{}", "x".repeat(94)).into_bytes(),
            )
        })
        .collect();
    let mut sent = 0usize;
    let mut refusals = 0;
    while sent < msgs.len() {
        let now = net.now();
        let (n, r) = net.engine_mut(0).submit_batch(
            now,
            9,
            &g,
            msgs[sent..].iter().map(|(gu, m)| (*gu, &m[..])),
        );
        net.drain(0);
        sent += n;
        if sent < msgs.len() {
            assert_eq!(r, Err(CsError::TryAgain));
            refusals += 1;
            net.run_for(Duration::from_millis(5));
        } else {
            assert_eq!(r, Ok(()));
        }
        assert!(refusals < 10_000, "the queue never drains");
    }
    assert!(refusals > 0, "a 4-frame queue took 40 KB at once");
    assert!(
        net.run_until(Duration::from_millis(5000), |n| n.delivered_in(0, &g).len()
            == 402)
    );
    let d0 = net.delivered_in(0, &g);
    assert_eq!(d0[0], b"b0".to_vec());
    assert_eq!(d0[1], b"single".to_vec());
    for (k, m) in d0[2..].iter().enumerate() {
        assert!(
            m.starts_with(format!("m{k:04}-").as_bytes()) && m.len() == 100,
            "message {k}: {:?}",
            String::from_utf8_lossy(m)
        );
    }
    for i in 1..3 {
        assert_eq!(
            net.delivered_in(i, &g).len(),
            0,
            "node {i} is not in the group"
        );
    }
}

/// A ring of one node holds its token as soon as its last message is
/// safe (totem.md §3.9 [we]), not before: a SAFE message sent to an idle
/// (held) lone ring is delivered after three token visits, far within
/// the hold timer, each time.
#[test]
fn a_lone_node_delivers_safe_without_waiting_for_the_hold_timer() {
    let (mut net, g) = lone_node_joined(7);
    for k in 0..10u8 {
        // idle between messages: the token is held when each is sent
        net.run_until(Duration::from_millis(50), |_| false);
        let body = [k; 5];
        net.submit(
            0,
            Request::Mcast {
                pid: 7,
                group: &g,
                guarantee: if k % 2 == 0 {
                    Guarantee::Safe
                } else {
                    Guarantee::Agreed
                },
                iov: &[&body],
            },
        )
        .unwrap();
        assert!(
            net.run_until(Duration::from_millis(10), |n| n.delivered_in(0, &g).len()
                == usize::from(k) + 1),
            "message {k} not delivered within 10 ms (the hold timer is {} ms)",
            net_hold_ms()
        );
    }
}

/// The hold timer of the smoke clusters' default config, for messages.
fn net_hold_ms() -> u128 {
    let c = Config::new(1, &[1]);
    u128::from(c.hold_effective().as_millis())
}

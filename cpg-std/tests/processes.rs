//! Real node processes (`cpgtool node`) on 127.0.0.1: total order, FIFO,
//! SAFE and AGREED, 1 MiB and 16 MiB messages intact, zero-copy and
//! copying sends (once with `zerocopy = always`); a node SIGKILLed
//! mid-stream and restarted; a node SIGSTOPped past the token timeout.

mod common;

use std::collections::BTreeMap;

use common::procs::*;
use cpg_std::config::ZeroCopy;
use cpg_std::cpgtool_proto::{Command, Guarantee, Status, Stream};
use cpg_std::Reason;
use rustix::process::Signal;

/// Deliveries from node `n` in a status's `per_sender`.
fn from_node(per_sender: &BTreeMap<String, u64>, n: u32) -> u64 {
    per_sender.get(&n.to_string()).copied().unwrap_or(0)
}

fn mcast(data: String, guarantee: Guarantee) -> Command {
    Command::Mcast { data, guarantee }
}

/// Every node of `ids` multicasts one message (`"{what} from {id}"`), and
/// every node delivers all of them (counted by sender in its status).
fn each_multicasts_and_all_deliver(p: &mut Procs, ids: &[u32], guarantee: Guarantee, what: &str) {
    let before: Vec<BTreeMap<String, u64>> =
        ids.iter().map(|&id| p.status(id).per_sender).collect();
    for &id in ids {
        assert!(p.call_ok(id, mcast(format!("{what} from {id}"), guarantee)));
    }
    for (id, b) in ids.iter().zip(&before) {
        p.until_status(*id, |s| {
            ids.iter()
                .all(|&n| from_node(&s.per_sender, n) > from_node(b, n))
        });
    }
}

/// The sequence part of a ring id (`"<rep>.<seq hex>"`).
fn ring_seq(ring: &str) -> u64 {
    u64::from_str_radix(ring.split('.').nth(1).unwrap(), 16).unwrap()
}

fn order_fifo_safe_agreed_big(name: &str, zc: ZeroCopy) {
    let mut p = Procs::start(name, 3, |f| f.zerocopy = zc);
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "order");
    let mut expected = 0u64;
    // copying AGREED stream, zero-copy SAFE stream, and small SAFE copies
    let at = p.mark();
    for id in ids {
        p.send(id, &Command::Stream(Stream::new(400, 300)));
    }
    for id in ids {
        assert_eq!(p.wait_stream_sent(at, id), 400, "node {id}");
    }
    expected += 1200;
    let at = p.mark();
    for id in ids {
        let s = Stream {
            guarantee: Guarantee::Safe,
            zc: true,
            ..Stream::new(200, 4000)
        };
        p.send(id, &Command::Stream(s));
    }
    for id in ids {
        assert_eq!(p.wait_stream_sent(at, id), 200, "node {id}");
    }
    expected += 600;
    let at = p.mark();
    for id in ids {
        let s = Stream {
            guarantee: Guarantee::Safe,
            ..Stream::new(50, 40)
        };
        p.send(id, &Command::Stream(s));
    }
    for id in ids {
        p.wait_stream_sent(at, id);
    }
    expected += 150;
    // big messages: 1 MiB copied, 1 MiB zero-copy, 16 MiB copied
    let at = p.mark();
    for (id, size, zc) in [
        (1, 1 << 20, false),
        (2, 1 << 20, true),
        (3, 16 << 20, false),
    ] {
        let big = Command::Big {
            size,
            zc,
            guarantee: Guarantee::Agreed,
        };
        assert!(p.call_ok(id, big), "big {size} zc {zc} on node {id}");
    }
    expected += 3;
    for id in ids {
        for size in [1usize << 20, 16 << 20] {
            let d = p.wait_deliver(at, id, |d| d.len == size);
            assert_eq!(
                d.intact,
                Some(true),
                "node {id}: {size}-byte message corrupted"
            );
        }
    }
    let st: Vec<Status> = ids
        .iter()
        .map(|&id| p.until_status(id, |s| s.delivered >= expected))
        .collect();
    for s in &st {
        assert_eq!(s.delivered, expected, "exactly what was sent: {s:?}");
        assert_eq!(s.digest, st[0].digest, "identical total order");
        assert_eq!(s.corrupt, 0);
        assert_eq!(s.fifo_violations, 0, "FIFO per sender");
        // the handle-layer counters, as an operator reads them: nobody
        // evicted or waited for, and a 16 MiB message was held whole
        let h = s.handles.as_ref().expect("handle-layer counters");
        assert_eq!((h.evictions, h.backpressure_waits), (0, 0), "{h:?}");
        assert!(h.queue_peak_bytes >= 16 << 20, "{h:?}");
    }
    let t = st[0].transport.as_ref().expect("io_uring counters");
    assert!(
        t.sends_write_fixed + t.sends_zc_fixed + t.sends_gather + t.sends_gather_zc > 0,
        "{t:?}"
    );
    if zc == ZeroCopy::Always {
        assert!(
            t.sends_zc_fixed + t.sends_gather_zc > 0,
            "SendZc used with zerocopy = always: {t:?}"
        );
    }
    for id in ids {
        p.send(id, &Command::Quit);
    }
}

#[test]
fn three_processes_order_fifo_safe_agreed_and_big_messages() {
    order_fifo_safe_agreed_big("order-auto", ZeroCopy::Auto);
}

#[test]
fn three_processes_with_zerocopy_always() {
    order_fifo_safe_agreed_big("order-always", ZeroCopy::Always);
}

#[test]
fn sigkill_mid_stream_then_restart_rejoins_with_nodeup() {
    let mut p = Procs::start("kill", 3, |_| {});
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "kill");
    let victim_pid = p.pid(3);
    let at = p.mark();
    for id in ids {
        let s = Stream {
            rate: 800,
            ..Stream::new(1_000_000, 200)
        };
        p.send(id, &Command::Stream(s));
    }
    p.until_status(1, |s| s.delivered >= 600);
    p.kill(3);
    let down: Vec<_> = [1, 2]
        .iter()
        .map(|&id| p.wait_confchg(at, id, |c| left_with(c, 3, victim_pid, Reason::NodeDown)))
        .collect();
    assert_eq!(
        down[0].delivered, down[1].delivered,
        "NODEDOWN at the same point of the stream"
    );
    assert_eq!(
        down[0].digest, down[1].digest,
        "same messages before NODEDOWN"
    );
    assert!(down[0].delivered > 0);
    // stop the survivors' streams: everything they had accepted is delivered on both
    let at = p.mark();
    for id in [1, 2] {
        p.send(id, &Command::StopStream);
    }
    let mut sent = Vec::new();
    for id in [1u32, 2] {
        sent.push((id, p.wait_stream_sent(at, id)));
    }
    for id in [1, 2] {
        let s = p.until_status(id, |s| {
            sent.iter().all(|&(n, k)| from_node(&s.per_sender, n) == k)
        });
        assert_eq!(s.fifo_violations, 0);
        assert_eq!(s.corrupt, 0);
    }
    let (a, b) = (p.status(1), p.status(2));
    assert_eq!(a.digest, b.digest, "survivors delivered the same sequence");
    let old_ring = a.ring;

    // restart node 3 while 1 and 2 are stopped, so that it forms a ring of
    // its own, joins there, and then merges: the others see NODEUP
    p.signal(1, Signal::STOP);
    p.signal(2, Signal::STOP);
    let at = p.mark();
    p.spawn(3, &["--join", "kill"]);
    let new_pid = p.pid(3);
    p.wait_ready(at, 3);
    let own = p.wait_confchg(at, 3, |c| joined_with(c, 3, new_pid, Reason::Join));
    assert_eq!(own.members.len(), 1, "joined in a ring of its own: {own:?}");
    let at = p.mark();
    p.signal(1, Signal::CONT);
    p.signal(2, Signal::CONT);
    for id in [1, 2] {
        p.wait_confchg(at, id, |c| joined_with(c, 3, new_pid, Reason::NodeUp));
    }
    p.wait_ring(&ids);
    // the restarted node never reuses a ring id
    let (old_seq, new_seq) = (ring_seq(&old_ring), ring_seq(&p.status(3).ring));
    assert!(
        new_seq > old_seq,
        "ring seq {new_seq:x} after restart, {old_seq:x} before"
    );
    // everyone delivers again
    each_multicasts_and_all_deliver(&mut p, &ids, Guarantee::Agreed, "hello");
    for id in ids {
        p.send(id, &Command::Quit);
    }
}

#[test]
fn sigstop_past_the_token_timeout_then_sigcont_merges_back() {
    let mut p = Procs::start("stop", 3, |_| {});
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "stop");
    let pid2 = p.pid(2);
    let at = p.mark();
    p.signal(2, Signal::STOP);
    // expelled: the others see NODEDOWN (waiting on the event, not a sleep)
    for id in [1, 3] {
        p.wait_confchg(at, id, |c| left_with(c, 2, pid2, Reason::NodeDown));
    }
    // the remaining two keep working meanwhile
    assert!(p.call_ok(1, mcast("while 2 is stopped".into(), Guarantee::Agreed)));
    p.until_status(3, |s| from_node(&s.per_sender, 1) >= 1);
    let at = p.mark();
    p.signal(2, Signal::CONT);
    // merges back: NODEUP on the others, and node 2 sees the others again
    for id in [1, 3] {
        p.wait_confchg(at, id, |c| joined_with(c, 2, pid2, Reason::NodeUp));
    }
    p.wait_confchg(at, 2, |c| c.members.len() == 3);
    p.wait_ring(&ids);
    // nobody hangs: every node multicasts and every node delivers it
    each_multicasts_and_all_deliver(&mut p, &ids, Guarantee::Safe, "after");
    for id in ids {
        p.send(id, &Command::Quit);
    }
}

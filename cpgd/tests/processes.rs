//! cpgd as real processes on 127.0.0.1, with real client processes
//! (`cpgtool node --daemon SOCKET`, the Rust client): 3 daemons with 2
//! clients each deliver in one total order, FIFO, SAFE and AGREED, 1 MiB
//! and 16 MiB messages intact, zero-copy and copying; a SIGKILLed client
//! is PROCDOWN everywhere at one point of the stream; a SIGKILLed cpgd is
//! NODEDOWN for its clients' members on the others and LIBRARY for its
//! own clients; a restarted cpgd serves new clients.

mod daemons;
#[path = "../../cpg-std/tests/common/procs.rs"]
mod procs;

use std::path::Path;
use std::time::{Duration, Instant};

use cpg_std::cpgtool_proto::{Command, Guarantee, Reply, Status, Stream};
use cpg_std::{CsError, Reason};
use daemons::Daemons;
use procs::*;

/// Client processes: `cpgtool node --daemon SOCKET`, ids from 1.
fn clients(name: &str) -> Procs {
    Procs::start(&format!("{name}-clients"), 0, |_| {})
}

fn spawn_client(p: &mut Procs, id: u32, socket: &Path) {
    let at = p.mark();
    let s = socket.display().to_string();
    p.spawn_node_args(id, &["node", "--daemon", &s]);
    p.wait_ready(at, id);
}

fn stream(count: u64, size: usize, zc: bool, guarantee: Guarantee) -> Command {
    Command::Stream(Stream {
        zc,
        guarantee,
        ..Stream::new(count, size)
    })
}

#[test]
fn three_daemons_two_clients_each_order_kills_and_restart() {
    let mut d = Daemons::start("three", 3, |_| {});
    let mut p = clients("three");
    // clients 1,2 on cpgd 1; 3,4 on cpgd 2; 5,6 on cpgd 3
    let node_of = |c: u32| (c - 1) / 2 + 1;
    for c in 1..=6 {
        spawn_client(&mut p, c, &d.socket(node_of(c)));
    }
    let ids: Vec<u32> = (1..=6).collect();
    p.join_all(&ids, "order");

    let mut expected = 0u64;
    let at = p.mark();
    for &c in &ids {
        p.send(c, &stream(200, 300, false, Guarantee::Agreed));
    }
    for &c in &ids {
        assert_eq!(p.wait_stream_sent(at, c), 200, "client {c}");
    }
    expected += 1200;
    let at = p.mark();
    for &c in &ids {
        p.send(c, &stream(60, 100_000, true, Guarantee::Safe));
    }
    for &c in &ids {
        assert_eq!(p.wait_stream_sent(at, c), 60, "client {c}");
    }
    expected += 360;
    let at = p.mark();
    for (c, size, zc) in [
        (1, 1 << 20, false),
        (3, 1 << 20, true),
        (6, 16 << 20, false),
    ] {
        let big = Command::Big {
            size,
            zc,
            guarantee: Guarantee::Agreed,
        };
        assert!(p.call_ok(c, big), "big {size} zc {zc} from client {c}");
    }
    expected += 3;
    for &c in &ids {
        for size in [1usize << 20, 16 << 20] {
            let m = p.wait_deliver(at, c, |m| m.len == size);
            assert_eq!(
                m.intact,
                Some(true),
                "client {c}: {size} B message corrupted"
            );
        }
    }
    let st: Vec<Status> = ids
        .iter()
        .map(|&c| p.until_status(c, |s| s.delivered >= expected))
        .collect();
    for s in &st {
        assert_eq!(s.delivered, expected, "exactly what was sent");
        assert_eq!(s.digest, st[0].digest, "one total order at every client");
        assert_eq!(s.corrupt, 0);
        assert_eq!(s.fifo_violations, 0, "FIFO per sender");
    }

    // SIGKILL client 2 (of cpgd 1): PROCDOWN everywhere, at one point
    let at = p.mark();
    let pid2 = p.pid(2);
    p.kill(2);
    let rest: Vec<u32> = ids.iter().copied().filter(|&c| c != 2).collect();
    let seen: Vec<_> = rest
        .iter()
        .map(|&c| p.wait_confchg(at, c, |x| left_with(x, 1, pid2, Reason::ProcDown)))
        .collect();
    for s in &seen {
        assert_eq!(s.members.len(), 5);
        assert_eq!(
            (s.delivered, &s.digest),
            (seen[0].delivered, &seen[0].digest),
            "the PROCDOWN sits at one point of the stream"
        );
    }

    // SIGKILL cpgd 3: NODEDOWN for clients 5 and 6 on the others; its own
    // clients answer LIBRARY
    let at = p.mark();
    let (pid5, pid6) = (p.pid(5), p.pid(6));
    d.kill(3);
    for c in [1, 3, 4] {
        let x = p.wait_confchg(at, c, |x| x.members.len() == 3);
        assert!(left_with(&x, 3, pid5, Reason::NodeDown), "{x:?}");
        assert!(left_with(&x, 3, pid6, Reason::NodeDown), "{x:?}");
    }
    for c in [5, 6] {
        let end = Instant::now() + DEADLINE;
        loop {
            let r = p.call(
                c,
                Command::Mcast {
                    data: "after cpgd died".into(),
                    guarantee: Guarantee::Agreed,
                },
            );
            match r {
                Reply::Mcast(o) if o.err == Some(CsError::Library.code()) => break,
                other => assert!(Instant::now() < end, "client {c}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // the survivors carry on
    let before: Vec<u64> = [1, 3, 4].iter().map(|&c| p.status(c).delivered).collect();
    assert!(p.call_ok(
        1,
        Command::Mcast {
            data: "survivors".into(),
            guarantee: Guarantee::Agreed
        }
    ));
    for (c, b) in [1, 3, 4].into_iter().zip(before) {
        p.until_status(c, |s| s.delivered > b);
    }

    // cpgd 3 restarted: a new client works and is seen by the others
    d.spawn(3);
    spawn_client(&mut p, 7, &d.socket(3));
    let at = p.mark();
    assert!(p.call_ok(
        7,
        Command::Join {
            group: "order".into()
        }
    ));
    for c in [1, 3, 4, 7] {
        p.wait_confchg(at, c, |x| x.members.len() == 4);
    }
}

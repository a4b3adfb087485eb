//! cpgd against raw IPC records: the protocol works end to end, and a
//! client that breaks it (garbage in its request ring, a slot it does not
//! own, a uid not allowed) is cut off alone.

mod common;

use std::time::Duration;

use common::*;
use cpg_core::ipc::event::EventKind;
use cpg_core::ipc::{Event, Message, Op, ReplyBody};
use cpg_core::pool::SlotId;
use cpg_core::{CsError, GroupName, Guarantee};
use cpgd::{Daemon, StopMode};

fn start_one(tag: &str) -> (std::path::PathBuf, Daemon) {
    let dir = temp_dir(tag);
    let file = cluster_file(&dir, 1);
    let d = Daemon::start(&node_config(&file, &dir, 1)).expect("cpgd starts");
    (dir, d)
}

fn join(c: &mut Raw, name: &[u8]) {
    let g = GroupName::new(name).unwrap();
    assert_eq!(c.call(Op::Join { group: g }).map(|_| ()), Ok(()));
}

/// Events until a DELIVER; its body.
fn next_deliver(c: &mut Raw) -> Vec<u8> {
    loop {
        let (info, body) = c.next(Duration::from_secs(10)).expect("an event");
        if info.kind == EventKind::Deliver as u16 {
            return body;
        }
    }
}

fn mcast(c: &mut Raw, data: &[u8]) {
    c.send(Op::Mcast {
        guarantee: Guarantee::Agreed,
        reply: false,
        total_len: data.len() as u32,
        piece: data,
    });
}

#[test]
fn join_mcast_and_deliver_through_shared_memory() {
    let (dir, d) = start_one("basic");
    let mut c = Raw::connect(d.socket()).unwrap();
    join(&mut c, b"g\0");
    // the own join confchg (after a ring change, if the node's first ring
    // formed after the handle opened), with the real pid
    let (info, body) = loop {
        let (info, body) = c.next(Duration::from_secs(10)).unwrap();
        if info.kind != EventKind::TotemConfchg as u16 {
            break (info, body);
        }
    };
    match Event::parse(info.kind, info.flags, &body).unwrap() {
        Event::Confchg {
            members, joined, ..
        } => {
            assert_eq!(members.len(), 1);
            assert_eq!(members.get(0).unwrap().pid, std::process::id());
            assert_eq!(joined.len(), 1);
        }
        e => panic!("expected the own confchg, got {e:?}"),
    }
    for i in 0..100u32 {
        mcast(&mut c, &i.to_le_bytes());
    }
    for i in 0..100u32 {
        let body = next_deliver(&mut c);
        match Event::parse(EventKind::Deliver as u16, 0, &body).unwrap() {
            Event::Deliver {
                group,
                sender,
                piece,
                total_len,
            } => {
                assert_eq!(group.as_bytes(), b"g\0");
                assert_eq!(sender.pid, std::process::id());
                assert_eq!(total_len, 4);
                assert_eq!(piece, &i.to_le_bytes());
            }
            e => panic!("{e:?}"),
        }
    }
    let s = d.stats();
    assert_eq!(s.mcasts, 100);
    assert_eq!(s.accepted, 1);
    d.stop(StopMode::Graceful);
    assert!(
        c.is_cut(Duration::from_secs(5)),
        "the client sees the daemon go"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn garbage_in_the_request_ring_cuts_that_client_only() {
    let (dir, d) = start_one("garbage");
    let mut good = Raw::connect(d.socket()).unwrap();
    let mut bad = Raw::connect(d.socket()).unwrap();
    join(&mut good, b"good");
    join(&mut bad, b"bad");
    // a record of a kind no request has
    bad.conn
        .requests
        .write_parts(0x02ff, 0, &[&[0xAB; 24]], 0)
        .unwrap();
    bad.publish();
    assert!(
        bad.is_cut(Duration::from_secs(5)),
        "the liar is disconnected"
    );
    mcast(&mut good, b"still here");
    let body = next_deliver(&mut good);
    assert!(body.ends_with(b"still heregood"));
    assert!(eventually(Duration::from_secs(5), || d
        .stats()
        .cut_malformed
        == 1));
    d.stop(StopMode::Graceful);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn naming_a_slot_it_does_not_own_cuts_the_client() {
    let (dir, d) = start_one("slots");
    let mut c = Raw::connect(d.socket()).unwrap();
    join(&mut c, b"z");
    // a real slot works
    let r = c.call(Op::ZcAlloc { len: 100_000 }).unwrap();
    let slot = match Event::parse(EventKind::Reply as u16, 0, &r).unwrap() {
        Event::Reply(rep) => match rep.result.unwrap() {
            ReplyBody::ZcAlloc {
                slot,
                offset,
                capacity,
            } => {
                assert!(capacity >= 100_000);
                let (zc_off, zc_len) = c.conn.zc_region();
                assert!(offset as usize + 100_000 <= zc_len);
                c.conn
                    .mem
                    .copy_in(zc_off + offset as usize, &[7u8; 100_000]);
                slot
            }
            b => panic!("{b:?}"),
        },
        e => panic!("{e:?}"),
    };
    c.send(Op::McastZc {
        guarantee: Guarantee::Agreed,
        reply: false,
        slot,
        offset: 0,
        len: 100_000,
    });
    let body = next_deliver(&mut c);
    assert_eq!(body.len(), 16 + 100_000 + 1);
    assert!(body[16..16 + 100_000].iter().all(|&b| b == 7));
    // the same slot again: it is not the client's any more
    let mut other = Raw::connect(d.socket()).unwrap();
    join(&mut other, b"other");
    c.send(Op::McastZc {
        guarantee: Guarantee::Agreed,
        reply: false,
        slot,
        offset: 0,
        len: 10,
    });
    assert!(c.is_cut(Duration::from_secs(5)));
    // a slot index that does not exist
    let mut c2 = Raw::connect(d.socket()).unwrap();
    c2.send(Op::ZcFree {
        slot: SlotId::from_parts(4000, 0),
    });
    assert!(c2.is_cut(Duration::from_secs(5)));
    // nobody else noticed
    mcast(&mut other, b"fine");
    assert!(next_deliver(&mut other).ends_with(b"fineother"));
    assert!(eventually(Duration::from_secs(5), || d
        .stats()
        .cut_malformed
        == 2));
    d.stop(StopMode::Graceful);
    let _ = std::fs::remove_dir_all(dir);
}

/// Run as a child under another uid by `a_uid_not_allowed_is_refused`.
#[test]
fn child_connects_as_another_uid() {
    let Ok(path) = std::env::var("CPGD_TEST_CHILD_SOCKET") else {
        return;
    };
    match Raw::connect(std::path::Path::new(&path)) {
        Err(e) => println!("CHILD-RESULT {:?}", e.cs_error()),
        Ok(_) => println!("CHILD-RESULT connected"),
    }
}

#[test]
fn a_uid_not_allowed_is_refused() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let (dir, d) = start_one("uid");
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "child_connects_as_another_uid", "--nocapture"])
        .env("CPGD_TEST_CHILD_SOCKET", d.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("CHILD-RESULT {:?}", CsError::Access)),
        "child said: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(eventually(Duration::from_secs(5), || d.stats().refused == 1));
    d.stop(StopMode::Graceful);
    let _ = std::fs::remove_dir_all(dir);
}

use std::os::unix::process::CommandExt;

/// Run as a child process by `a_zero_copy_message_is_sent_from_the_client_slot`:
/// a client that sends one zero-copy message of `CPGD_TEST_ZC_SIZE` bytes
/// and, once it is delivered back, stays connected until its stdin ends
/// (the parent reads the daemon's record of its region meanwhile).
#[test]
fn child_sends_zero_copy() {
    let Ok(path) = std::env::var("CPGD_TEST_CHILD_ZC_SOCKET") else {
        return;
    };
    let size: u32 = std::env::var("CPGD_TEST_ZC_SIZE").unwrap().parse().unwrap();
    let mut c = Raw::connect(std::path::Path::new(&path)).unwrap();
    join(&mut c, b"zc-proof");
    let r = c.call(Op::ZcAlloc { len: size }).unwrap();
    let Event::Reply(rep) = Event::parse(EventKind::Reply as u16, 0, &r).unwrap() else {
        panic!("not a reply");
    };
    let Ok(ReplyBody::ZcAlloc { slot, offset, .. }) = rep.result else {
        panic!("{rep:?}");
    };
    let (zc_off, _) = c.conn.zc_region();
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    c.conn.mem.copy_in(zc_off + offset as usize, &payload);
    c.send(Op::McastZc {
        guarantee: Guarantee::Agreed,
        reply: false,
        slot,
        offset: 0,
        len: size,
    });
    let body = next_deliver(&mut c);
    assert_eq!(&body[16..16 + size as usize], &payload[..]);
    println!("CHILD-RESULT delivered");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

#[test]
fn a_zero_copy_message_is_sent_from_the_client_slot() {
    // two nodes, so frames leave through the network paths
    let dir = temp_dir("zcproof");
    let file = cluster_file(&dir, 2);
    let d = Daemon::start(&node_config(&file, &dir, 1)).expect("cpgd 1 starts");
    let d2 = Daemon::start(&node_config(&file, &dir, 2)).expect("cpgd 2 starts");
    d.record_buf_sends(true);
    // the ring of both, so the frames leave for node 2 (on a ring of node
    // 1 alone the daemon's thread delivers at once, cpg-std's
    // handles/solo.rs, and the client could exit before the probe reads
    // its region)
    assert!(
        eventually(Duration::from_secs(20), || {
            d.node_probe().status().members.len() == 2
                && d2.node_probe().status().members.len() == 2
        }),
        "the two-node ring did not form"
    );
    let size = 300_000usize;
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args(["--exact", "child_sends_zero_copy", "--nocapture"])
        .env("CPGD_TEST_CHILD_ZC_SOCKET", d.socket())
        .env("CPGD_TEST_ZC_SIZE", size.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the child stays connected until this ends (dropped on a panic too):
    // a client that exited at once unregistered its region before the
    // poll below could see it
    let mut child = child;
    let hold = child.stdin.take();
    // the region is recorded while the client is connected
    let mut regions = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (_, r, _) = d.buf_sends();
            if !r.is_empty() {
                regions = r;
            }
            !regions.is_empty() && d.stats().zc_mcasts >= 1
        }),
        "regions {regions:?}, stats {:?}",
        d.stats()
    );
    drop(hold);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CHILD-RESULT delivered"), "child: {text}");
    let (sends, _, counters) = d.buf_sends();
    let (base, len) = regions[0];
    let inside: Vec<_> = sends
        .iter()
        .filter(|s| s.read_addr >= base && s.read_addr < base + len)
        .collect();
    for s in &inside {
        assert!(
            s.read_addr + s.read_len <= base + len,
            "read past the region"
        );
        assert!(
            s.buf_addr >= base && s.buf_addr + s.buf_len <= base + len,
            "the buffer is the client's slot"
        );
    }
    let covered: usize = inside.iter().map(|s| s.read_len).sum();
    assert!(
        covered >= size,
        "every payload byte went to the kernel from the client's slot: {covered} of {size}"
    );
    let c = counters.expect("io_uring counters");
    eprintln!("zero-copy run counters: {c:?}");
    assert_eq!(
        d.stats().request_bytes_copied,
        0,
        "no copy of the payload in the daemon"
    );
    let external = c.external_sends_zc_fixed
        + c.external_sends_zc
        + c.external_sends_gather_zc
        + c.external_sends_write_fixed
        + c.external_sends_plain
        + c.external_sends_gather;
    assert!(
        external > 0,
        "the kernel was handed the client's memory: {c:?}"
    );
    d.stop(StopMode::Graceful);
    d2.stop(StopMode::Graceful);
    let _ = std::fs::remove_dir_all(dir);
}

/// This process's resident memory (VmRSS), in bytes.
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Run as a child by `a_client_that_never_dispatches_is_evicted_and_memory_stays_bounded`:
/// joins "flood", sends 2,000 messages of 64 KiB (131 MB) while draining
/// its own events, and reports the parent's PROCDOWN.
#[test]
fn child_floods() {
    let Ok(path) = std::env::var("CPGD_TEST_CHILD_FLOOD_SOCKET") else {
        return;
    };
    let parent: u32 = std::env::var("CPGD_TEST_PARENT_PID")
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Raw::connect(std::path::Path::new(&path)).unwrap();
    join(&mut c, b"flood");
    let msg = vec![0x5au8; 65_536];
    let mut procdown = false;
    let mut sent = 0u32;
    let end = std::time::Instant::now() + Duration::from_secs(60);
    // keep flooding after the eviction: the daemon's memory must not grow
    while !(procdown && sent >= 2_000) && std::time::Instant::now() < end {
        if sent < 2_000
            && c.try_send(Op::Mcast {
                guarantee: Guarantee::Agreed,
                reply: false,
                total_len: msg.len() as u32,
                piece: &msg,
            })
        {
            sent += 1;
            continue;
        }
        for (info, body) in c.drain_now() {
            if let Ok(Event::Confchg { left, .. }) = Event::parse(info.kind, info.flags, &body) {
                procdown |= left
                    .iter()
                    .any(|(m, r)| m.pid == parent && r == cpg_core::Reason::ProcDown);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("CHILD-RESULT sent {sent} procdown {procdown}");
}

/// Every log record of this test process, as `target: message`.
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let line = format!("{}: {}", r.target(), r.args());
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

/// VmRSS is per process and the tests of this file run in parallel in one
/// process, so the scenario runs alone in a child of the test binary: the
/// growth it measures is its own daemon's, not a neighbouring test's.
#[test]
fn a_client_that_never_dispatches_is_evicted_and_memory_stays_bounded() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "child_eviction_scenario", "--nocapture"])
        .env("CPGD_TEST_CHILD_EVICTION", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("EVICTION-SCENARIO-RAN"),
        "the eviction scenario, alone in its process: {text}\n{err}"
    );
    eprintln!("{}", err.trim_end());
}

/// Run as a child by `a_client_that_never_dispatches_is_evicted_and_memory_stays_bounded`.
#[test]
fn child_eviction_scenario() {
    if std::env::var_os("CPGD_TEST_CHILD_EVICTION").is_none() {
        return;
    }
    // the operator's eviction line: which process, node, group, and why
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Info);
    let dir = temp_dir("evict");
    let mut file = cluster_file(&dir, 1);
    // a small cap: 2 × 1 MiB + 64 KiB of undispatched events per handle
    file.max_message_size = 1 << 20;
    let d = Daemon::start(&node_config(&file, &dir, 1)).expect("cpgd starts");
    let mut slow = Raw::connect(d.socket()).unwrap();
    join(&mut slow, b"flood");
    let before = rss();
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .args(["--exact", "child_floods", "--nocapture"])
        .env("CPGD_TEST_CHILD_FLOOD_SOCKET", d.socket())
        .env("CPGD_TEST_PARENT_PID", std::process::id().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the slow client never reads its event ring
    let cut = slow.is_cut(Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        cut,
        "the slow client is evicted: {:?}; child: {text}",
        d.stats()
    );
    assert!(
        text.contains("procdown true"),
        "the flooder saw PROCDOWN: {text}"
    );
    let s = d.stats();
    assert_eq!(s.evicted, 1, "{s:?}");
    let line = format!(
        "cpg::group: process {} of node 1 evicted from group flood: its event queue reached handle_queue_bytes",
        std::process::id()
    );
    let logged = CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(logged.contains(&line), "{line:?} in {logged:#?}");
    let grown = rss().saturating_sub(before);
    eprintln!("flood: {text}; daemon grew by {} KiB; {s:?}", grown / 1024);
    assert!(
        grown < 64 << 20,
        "the daemon's memory stays bounded: grew by {grown} bytes"
    );
    d.stop(StopMode::Graceful);
    let _ = std::fs::remove_dir_all(dir);
    println!("EVICTION-SCENARIO-RAN");
}

/// Whether `fd` is readable within `ms`.
fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: i64) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let t = Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    poll(&mut fds, Some(&t)).unwrap() == 1
}

#[test]
fn the_pollable_fd_is_the_socket_to_the_daemon_rung_for_events_only() {
    use cpg_std::{Cpg, DispatchFlags, ModelV1};
    use std::io::IoSlice;
    let (dir, d) = start_one("doorbell");
    let cpg = Cpg::connect(Some(d.socket()), ModelV1::default(), None).unwrap();
    let fd = cpg.fd_get().unwrap();
    // a Unix stream socket whose peer is the daemon: Pacemaker's check
    let cred = rustix::net::sockopt::socket_peercred(fd).unwrap();
    assert_eq!(cred.pid.as_raw_nonzero().get() as u32, std::process::id());
    assert_eq!(cred.uid, rustix::process::getuid());
    assert_eq!(
        rustix::net::sockopt::socket_type(fd).unwrap(),
        rustix::net::SocketType::STREAM
    );
    assert!(!readable(fd, 0), "nothing pending");
    let g = GroupName::new(b"bell").unwrap();
    cpg.join(&g).unwrap();
    assert!(readable(fd, 10_000), "the own join confchg rings");
    cpg.dispatch(DispatchFlags::All).unwrap();
    assert!(!readable(fd, 0), "drained");
    // replies never ring: a request round trip leaves it unreadable
    for _ in 0..50 {
        cpg.membership_get(&g).unwrap();
        cpg.local_get().unwrap();
    }
    assert!(!readable(fd, 50), "no event, no doorbell");
    cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(b"one")])
        .unwrap();
    cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(b"two")])
        .unwrap();
    assert!(readable(fd, 10_000), "a message rings");
    // level-triggered: readable until every event was dispatched, one per
    // wake-up
    let mut n = 0;
    while readable(fd, 2_000) {
        cpg.dispatch(DispatchFlags::One).unwrap();
        n += 1;
        assert!(n <= 2, "readable with nothing pending");
    }
    assert_eq!(n, 2);
    assert_eq!(
        cpg.dispatch(DispatchFlags::OneNonblocking),
        Err(CsError::TryAgain)
    );
    // the daemon goes: readable for good, LIBRARY
    d.stop(StopMode::Graceful);
    assert!(readable(fd, 10_000));
    assert_eq!(cpg.dispatch(DispatchFlags::All), Err(CsError::Library));
    let _ = std::fs::remove_dir_all(dir);
}

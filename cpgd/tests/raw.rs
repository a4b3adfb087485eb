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
    // the own join confchg comes first, with the real pid
    let (info, body) = c.next(Duration::from_secs(10)).unwrap();
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

//! `Cpg` over a connection to cpgd, against a fake daemon: a thread of
//! this test that speaks `docs/spec/ipc.md` through `cpg_ipc`'s daemon
//! side and answers each request as the test scripts it. No timing: the
//! fake and the client wait for each other's records (the fake gives up
//! after 20 s, which fails the test instead of hanging it).

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpg_core::ipc::header;
use cpg_core::ipc::{
    Assembly, Event, EventKind, Hello, IterEntries, IterEntry, List, Message, Model, Op, Reply,
    ReplyBody, Request, RequestKind, Split, RING_CAPACITY_MIN,
};
use cpg_core::pool::SlotId;
use cpg_ipc::bell as setup_bell;
use cpg_ipc::ring::WriteError;
use cpg_ipc::{setup, DaemonConn};
use cpg_std::{
    Cpg, CsError, DispatchFlags, FlowControlState, GroupName, Guarantee, IterationType, MemberAddr,
    ModelV1, NodeId, Reason, RingId, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};

/// The fake daemon's node id.
const NODE: NodeId = 3;
/// Its largest message.
const MSG_MAX: u32 = 1 << 20;
/// How long the fake waits for the client before it fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

fn group(s: &str) -> GroupName {
    GroupName::new(s.as_bytes()).unwrap()
}

/// One record the fake read.
struct Rec {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
}

impl Rec {
    fn req(&self) -> Request<'_> {
        Request::parse(self.kind, self.flags, &self.body).expect("a request that parses")
    }
    fn id(&self) -> u32 {
        self.req().req_id
    }
    fn op(&self) -> RequestKind {
        RequestKind::from_u16(self.kind).unwrap()
    }
}

/// The daemon side of one connection.
struct Fake {
    sock: UnixStream,
    d: DaemonConn,
    /// The client's pid (SO_PEERCRED): the member pid.
    pid: u32,
    hello: Hello,
}

impl Fake {
    fn me(&self) -> MemberAddr {
        MemberAddr {
            nodeid: NODE,
            pid: self.pid,
        }
    }

    /// The next request; `None` once the client hung up with nothing left.
    fn next(&mut self) -> Option<Rec> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.d.requests.refresh().unwrap();
            let mut body = Vec::new();
            if let Some(info) = self.d.requests.next_into(&mut body).unwrap() {
                if self.d.requests.release() {
                    self.d.client_wake.signal();
                }
                return Some(Rec {
                    kind: info.kind,
                    flags: info.flags,
                    body,
                });
            }
            if self.d.requests.prepare_sleep().unwrap() {
                let (_, peer) = self.d.daemon_wake.wait(self.sock.as_fd(), 50).unwrap();
                self.d.daemon_wake.drain();
                self.d.requests.awake();
                self.echoes();
                if peer && !self.d.requests.refresh().unwrap() {
                    return None;
                }
            }
            assert!(Instant::now() < deadline, "fake daemon: no request came");
        }
    }

    /// The next request, which must be of `kind`.
    fn expect(&mut self, kind: RequestKind) -> Rec {
        let r = self.next().expect("the client hung up");
        assert_eq!(r.op(), kind, "fake daemon: unexpected request");
        r
    }

    /// Until the client hangs up (its requests are read and dropped).
    fn until_hangup(&mut self) {
        while self.next().is_some() {}
    }

    /// Answer the client's echo requests on the socket, as cpgd does.
    fn echoes(&mut self) {
        while let setup_bell::Incoming::Answered(_) = setup_bell::answer(self.sock.as_fd()) {}
    }

    /// Publish what was written and wake the client as cpgd does: its
    /// sleeping thread through its eventfd, its application through the
    /// doorbell when `events` (not for replies alone).
    fn publish(&mut self, events: bool) {
        let wake = if events {
            self.d.events.publish_events()
        } else {
            cpg_ipc::Wake {
                eventfd: self.d.events.publish(),
                bell: false,
            }
        };
        if wake.eventfd {
            self.d.client_wake.signal();
        }
        if wake.bell {
            setup_bell::ring(self.sock.as_fd());
        }
    }

    fn wait_room(&mut self, body_len: usize, events: bool) {
        let deadline = Instant::now() + PATIENCE;
        self.publish(events);
        while !self.d.events.prepare_wait(body_len, 0).unwrap() {
            self.d.daemon_wake.wait(self.sock.as_fd(), 50).unwrap();
            self.d.daemon_wake.drain();
            self.echoes();
            assert!(Instant::now() < deadline, "fake daemon: no event room");
        }
    }

    fn send(&mut self, ev: &Event<'_>) {
        let events = !matches!(ev, Event::Reply(_) | Event::Evicted { .. });
        loop {
            match self.d.events.write(ev, 0) {
                Ok(()) => break,
                Err(WriteError::Full) => self.wait_room(ev.body_len(), events),
                Err(e) => panic!("fake daemon: {e:?}"),
            }
        }
        self.publish(events);
    }

    /// A record as is (for malformed ones).
    fn send_raw(&mut self, kind: u16, flags: u16, body: &[u8]) {
        self.d.events.write_parts(kind, flags, &[body], 0).unwrap();
        self.publish(true);
    }

    fn reply(&mut self, r: &Rec, result: Result<ReplyBody<'_>, CsError>) {
        self.send(&Event::Reply(Reply {
            req_id: r.id(),
            op: r.op(),
            result,
        }));
    }

    fn ok(&mut self, r: &Rec) {
        self.reply(r, Ok(ReplyBody::Done));
    }

    fn confchg(
        &mut self,
        g: &GroupName,
        members: &[MemberAddr],
        left: &[(MemberAddr, Reason)],
        joined: &[(MemberAddr, Reason)],
    ) {
        self.send(&Event::Confchg {
            group: g.clone(),
            more: false,
            members: List::from_slice(members),
            left: List::from_slice(left),
            joined: List::from_slice(joined),
        });
    }

    /// A message to the client, in pieces if it needs them.
    fn deliver(&mut self, g: &GroupName, sender: MemberAddr, msg: &[u8]) {
        let body_max = self.d.events.ring().body_max();
        let mut first = true;
        for r in Split::deliver(msg.len(), body_max, g.len()) {
            let piece = &msg[r];
            if first {
                self.send(&Event::Deliver {
                    group: g.clone(),
                    sender,
                    total_len: msg.len() as u32,
                    piece,
                });
                first = false;
            } else {
                self.send(&Event::DeliverMore { piece });
            }
        }
    }

    /// A message through the delivery ring: its bytes there (published
    /// first), then its `DELIVER_REF`.
    fn deliver_ref(&mut self, g: &GroupName, sender: MemberAddr, msg: &[u8]) {
        let d = self.d.deliveries.as_mut().unwrap();
        d.write_parts(cpg_core::ipc::DELIVERY_DATA, 0, &[msg], 0)
            .unwrap();
        d.publish();
        self.send(&Event::DeliverRef {
            group: g.clone(),
            sender,
            total_len: msg.len() as u32,
        });
    }

    /// Free bytes of the delivery ring, as the client's releases say.
    fn delivery_room(&mut self) -> usize {
        let d = self.d.deliveries.as_mut().unwrap();
        d.refresh().unwrap();
        d.free()
    }

    /// A `MEMBERSHIP_GET` answered with `members`, in one page.
    fn answer_members(&mut self, r: &Rec, members: &[MemberAddr]) {
        self.reply(
            r,
            Ok(ReplyBody::Membership {
                total: members.len() as u32,
                offset: 0,
                members: List::from_slice(members),
            }),
        );
    }

    /// `JOIN` → OK, then the own join confchg.
    fn accept_join(&mut self) -> GroupName {
        let r = self.expect(RequestKind::Join);
        let Op::Join { group } = r.req().op else {
            unreachable!()
        };
        self.ok(&r);
        let me = self.me();
        self.confchg(&group, &[me], &[], &[(me, Reason::Join)]);
        group
    }

    /// `FINALIZE` → OK, then the hang-up (the fake returns, dropping it).
    fn accept_finalize(&mut self) {
        let r = self.expect(RequestKind::Finalize);
        self.ok(&r);
    }

    /// A whole `MCAST` (first piece and `MCAST_MORE`s), checked with
    /// `Assembly`.
    fn read_mcast(&mut self) -> (u32, Vec<u8>) {
        let r = self.expect(RequestKind::Mcast);
        let Op::Mcast {
            total_len, piece, ..
        } = r.req().op
        else {
            unreachable!()
        };
        let mut asm = Assembly::new();
        let id = r.id();
        let mut msg = piece.to_vec();
        let mut done = asm.first(id, total_len, piece.len()).unwrap().complete;
        while !done {
            let m = self.expect(RequestKind::McastMore);
            let Op::McastMore { piece } = m.req().op else {
                unreachable!()
            };
            assert_eq!(m.id(), id, "pieces of one message are consecutive");
            done = asm.more(id, piece.len()).unwrap().complete;
            msg.extend_from_slice(piece);
        }
        (id, msg)
    }
}

/// A fake daemon on a socket of its own, running `script` for one
/// connection.
struct Daemon {
    path: PathBuf,
    dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    fn start(zc_len: u64, script: impl FnOnce(&mut Fake) + Send + 'static) -> Daemon {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cpg-client-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join("cpgd.sock");
        let listener = setup::listen(&path).unwrap();
        let thread = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let cred = setup::peer_cred(&sock).unwrap();
            let hello = setup::read_hello(&mut sock).unwrap();
            let d = DaemonConn::create(
                NODE,
                77,
                RING_CAPACITY_MIN,
                RING_CAPACITY_MIN,
                zc_len,
                MSG_MAX,
                RING_CAPACITY_MIN,
            )
            .unwrap();
            setup::send_welcome(&sock, &d.welcome, d.welcome_fds()).unwrap();
            let mut f = Fake {
                sock,
                d,
                pid: cred.pid,
                hello,
            };
            script(&mut f);
        });
        Daemon {
            path,
            dir,
            thread: Some(thread),
        }
    }

    fn connect(&self, model: ModelV1) -> Result<Cpg, CsError> {
        Cpg::connect(Some(&self.path), model, None)
    }

    /// Wait for the script to end (its panics fail the test).
    fn join(mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the callbacks saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg {
        sender: MemberAddr,
        group: GroupName,
        data: Vec<u8>,
    },
    Conf {
        members: Vec<MemberAddr>,
        left: Vec<(MemberAddr, Reason)>,
        joined: Vec<(MemberAddr, Reason)>,
    },
    Totem(RingId, Vec<NodeId>),
}

type Log = Arc<Mutex<Vec<Ev>>>;

fn recorder(totem: bool) -> (ModelV1, Log) {
    let log: Log = Arc::default();
    let (a, b, c) = (log.clone(), log.clone(), log.clone());
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            a.lock().unwrap().push(Ev::Msg {
                sender: d.sender,
                group: d.group.clone(),
                data: d.msg.to_vec(),
            })
        })),
        confchg: Some(Box::new(move |_, c| {
            b.lock().unwrap().push(Ev::Conf {
                members: c.members.to_vec(),
                left: c.left.to_vec(),
                joined: c.joined.to_vec(),
            })
        })),
        totem_confchg: totem.then(|| {
            Box::new(move |_: &Cpg, ring, nodes: &[NodeId]| {
                c.lock().unwrap().push(Ev::Totem(ring, nodes.to_vec()))
            }) as cpg_std::cpg::TotemConfChgFn
        }),
        flags: 0,
    };
    (model, log)
}

fn taken(log: &Log) -> Vec<Ev> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Dispatch ONE at a time until `n` messages came; their bytes (other
/// events are dropped).
fn messages(cpg: &Cpg, log: &Log, n: usize) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    while msgs.len() < n {
        cpg.dispatch(DispatchFlags::One).unwrap();
        msgs.extend(taken(log).into_iter().filter_map(|e| match e {
            Ev::Msg { data, .. } => Some(data),
            _ => None,
        }));
    }
    msgs
}

/// Whether the handle's fd is readable within `ms`.
fn readable(cpg: &Cpg, ms: i64) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let fd = cpg.fd_get().unwrap();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let t = Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    poll(&mut fds, Some(&t)).unwrap() == 1
}

fn me() -> MemberAddr {
    MemberAddr {
        nodeid: NODE,
        pid: std::process::id(),
    }
}

fn send(cpg: &Cpg, data: &[u8]) -> Result<(), CsError> {
    cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(data)])
}

#[test]
fn connect_errors_are_corosyncs() {
    let nowhere = std::env::temp_dir().join(format!("cpg-client-none-{}", std::process::id()));
    assert_eq!(
        Cpg::connect(Some(&nowhere), ModelV1::default(), None).err(),
        Some(CsError::Library),
        "no daemon"
    );
    let bad = ModelV1 {
        flags: 2,
        ..Default::default()
    };
    assert_eq!(
        Cpg::connect(Some(&nowhere), bad, None).err(),
        Some(CsError::InvalidParam),
        "a bad flag is refused before connecting"
    );
    // a daemon that refuses this user
    let dir = std::env::temp_dir().join(format!("cpg-client-refuse-{}", std::process::id()));
    let path = dir.join("cpgd.sock");
    let listener = setup::listen(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        setup::read_hello(&mut s).unwrap();
        setup::send_refused(&mut s, CsError::Access).unwrap();
    });
    assert_eq!(
        Cpg::connect(Some(&path), ModelV1::default(), None).err(),
        Some(CsError::Access)
    );
    t.join().unwrap();
    // $CPGD_SOCKET when no path is given (no other test reads it)
    std::env::set_var(cpg_std::SOCKET_ENV, &nowhere);
    assert_eq!(
        Cpg::initialize_daemon(cpg_std::Callbacks::default()).err(),
        Some(CsError::Library)
    );
    std::env::remove_var(cpg_std::SOCKET_ENV);
    assert_eq!(cpg_std::DEFAULT_SOCKET, "/run/cpgd/cpgd.sock");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn join_mcast_deliver_dispatch_and_finalize() {
    let g = group("GROUP\0");
    let daemon = Daemon::start(0, |f| {
        assert_eq!(f.hello.model, Model::V1);
        let g = f.accept_join();
        let (id, msg) = f.read_mcast();
        assert_eq!(msg, b"hello world");
        // a refusal of an asynchronous send: counted by the client, no harm
        f.send(&Event::Reply(Reply {
            req_id: id,
            op: RequestKind::Mcast,
            result: Err(CsError::TryAgain),
        }));
        let me = f.me();
        f.deliver(&g, me, &msg);
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    assert_eq!(cpg.local_get(), Ok(NODE));
    assert_eq!(cpg.max_atomic_msgsize_get(), Ok(1_047_552));
    assert_eq!(send(&cpg, b"x"), Err(CsError::NotExist), "not joined");
    assert_eq!(
        cpg.dispatch(DispatchFlags::OneNonblocking),
        Err(CsError::TryAgain)
    );
    assert_eq!(cpg.dispatch(DispatchFlags::All), Ok(()), "ALL, drained");
    cpg.join(&g).unwrap();
    cpg.mcast_joined(
        Guarantee::Safe,
        &[IoSlice::new(b"hello "), IoSlice::new(b"world")],
    )
    .unwrap();
    // ONE blocks for the first event: the own join
    cpg.dispatch(DispatchFlags::One).unwrap();
    assert_eq!(
        taken(&log),
        [Ev::Conf {
            members: vec![me()],
            left: vec![],
            joined: vec![(me(), Reason::Join)],
        }]
    );
    cpg.dispatch(DispatchFlags::One).unwrap();
    assert_eq!(
        taken(&log),
        [Ev::Msg {
            sender: me(),
            group: g.clone(),
            data: b"hello world".to_vec(),
        }]
    );
    cpg.finalize().unwrap();
    assert_eq!(cpg.finalize(), Err(CsError::BadHandle));
    assert_eq!(cpg.join(&g), Err(CsError::BadHandle));
    assert_eq!(send(&cpg, b"x"), Err(CsError::BadHandle));
    assert_eq!(cpg.dispatch(DispatchFlags::All), Err(CsError::BadHandle));
    assert_eq!(cpg.local_get(), Err(CsError::BadHandle));
    assert_eq!(cpg.fd_get().err(), Some(CsError::BadHandle));
    assert_eq!(cpg.zcb_alloc(10).err(), Some(CsError::BadHandle));
    daemon.join();
}

#[test]
fn large_messages_travel_in_pieces_both_ways() {
    // 64 KiB rings: records of at most 16 KiB
    let small: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let large: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let (s2, l2) = (small.clone(), large.clone());
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        for want in [&s2, &l2] {
            let (_, msg) = f.read_mcast();
            assert_eq!(&msg, want);
            f.deliver(&g, me, &msg);
        }
        // a confchg of 130 members travels in two parts
        let members: Vec<MemberAddr> = (1..=130)
            .map(|pid| MemberAddr { nodeid: NODE, pid })
            .collect();
        let joined: Vec<(MemberAddr, Reason)> =
            members[1..].iter().map(|m| (*m, Reason::NodeUp)).collect();
        f.send(&Event::Confchg {
            group: g.clone(),
            more: true,
            members: List::from_slice(&members[..128]),
            left: List::empty(),
            joined: List::from_slice(&joined[..128]),
        });
        f.send(&Event::Confchg {
            group: g.clone(),
            more: false,
            members: List::from_slice(&members[128..]),
            left: List::empty(),
            joined: List::from_slice(&joined[128..]),
        });
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("big")).unwrap();
    // fits the ring at once: asynchronous
    send(&cpg, &small).unwrap();
    // larger than the ring: written as the daemon reads
    send(&cpg, &large).unwrap();
    let msgs = messages(&cpg, &log, 2);
    assert_eq!(msgs, [small, large], "one callback per message, whole");
    cpg.dispatch(DispatchFlags::One).unwrap();
    match &taken(&log)[..] {
        [Ev::Conf {
            members, joined, ..
        }] => {
            assert_eq!(members.len(), 130);
            assert_eq!(joined.len(), 129);
            assert_eq!(members[129].pid, 130);
        }
        other => panic!("{other:?}"),
    }
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn delivery_ring_messages_are_dispatched_in_place_and_released_after() {
    let a: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let b: Vec<u8> = (0..9000u32).map(|i| (i * 3) as u8).collect();
    let (a2, b2) = (a.clone(), b.clone());
    let (room_tx, room_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        let empty = f.delivery_room();
        f.deliver_ref(&g, me, &a2);
        f.deliver(&g, me, b"inline between");
        f.deliver_ref(&g, me, &b2);
        // a request answered while both records are held undispatched
        let r = f.expect(RequestKind::MembershipGet);
        f.answer_members(&r, &[me]);
        room_tx.send((empty, f.delivery_room())).unwrap();
        go_rx.recv().unwrap();
        // the client releases as it dispatches
        let deadline = Instant::now() + PATIENCE;
        while f.delivery_room() != empty {
            f.echoes();
            assert!(Instant::now() < deadline, "records never released");
            std::thread::sleep(Duration::from_millis(2));
        }
        room_tx.send((empty, empty)).unwrap();
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("inplace")).unwrap();
    cpg.dispatch(DispatchFlags::One).unwrap(); // own join
    taken(&log);
    assert_eq!(
        cpg.membership_get(&group("inplace")),
        Ok(vec![me()]),
        "a reply passes held records"
    );
    let (empty, held) = room_rx.recv().unwrap();
    assert!(
        held < empty,
        "records held until dispatched: {held} of {empty}"
    );
    go_tx.send(()).unwrap();
    let msgs = messages(&cpg, &log, 3);
    assert_eq!(
        msgs,
        [a, b"inline between".to_vec(), b],
        "ring order, whole"
    );
    assert_eq!(room_rx.recv().unwrap().0, empty);
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn a_deliver_ref_unlike_its_record_closes_the_connection() {
    // a length that is not the record's; and a DELIVER_REF with no record
    for case in 0..2 {
        let daemon = Daemon::start(0, move |f| {
            let g = f.accept_join();
            let me = f.me();
            if case == 0 {
                let d = f.d.deliveries.as_mut().unwrap();
                d.write_parts(cpg_core::ipc::DELIVERY_DATA, 0, &[&[7u8; 100][..]], 0)
                    .unwrap();
                d.publish();
            }
            f.send(&Event::DeliverRef {
                group: g,
                sender: me,
                total_len: 99,
            });
            f.until_hangup();
        });
        let (model, _log) = recorder(false);
        let cpg = daemon.connect(model).unwrap();
        cpg.join(&group("bad")).unwrap();
        let mut got = Ok(());
        let deadline = Instant::now() + PATIENCE;
        while got.is_ok() {
            got = cpg.dispatch(DispatchFlags::OneNonblocking).or_else(|e| {
                if e == CsError::TryAgain {
                    Ok(())
                } else {
                    Err(e)
                }
            });
            assert!(Instant::now() < deadline, "case {case}: never closed");
        }
        assert_eq!(got, Err(CsError::Library), "case {case}");
        drop(cpg);
        daemon.join();
    }
}

#[test]
fn a_reply_passes_undispatched_events_which_stay_queued_in_order() {
    let daemon = Daemon::start(0, |f| {
        let g = f.accept_join();
        let me = f.me();
        for i in 0..3u8 {
            f.deliver(&g, me, &[i; 10]);
        }
        // membership of 150: two pages, asked twice
        let all: Vec<MemberAddr> = (1..=150).map(|pid| MemberAddr { nodeid: 9, pid }).collect();
        for _ in 0..4 {
            let r = f.expect(RequestKind::MembershipGet);
            let Op::MembershipGet { offset, .. } = r.req().op else {
                unreachable!()
            };
            let o = offset as usize;
            let page = &all[o..(o + 128).min(all.len())];
            f.reply(
                &r,
                Ok(ReplyBody::Membership {
                    total: 150,
                    offset,
                    members: List::from_slice(page),
                }),
            );
        }
        // (flow_control_state_get is answered locally: no FLOW_CONTROL came)
        // iteration: 18 entries in batches of 16, then NO_SECTIONS
        let entries: Vec<IterEntry> = (0..18)
            .map(|pid| IterEntry {
                group: g.clone(),
                nodeid: NODE,
                pid,
            })
            .collect();
        let r = f.expect(RequestKind::IterationInitialize);
        f.reply(&r, Ok(ReplyBody::IterationInitialize { iter_id: 7 }));
        for batch in [&entries[..16], &entries[16..]] {
            let r = f.expect(RequestKind::IterationNext);
            assert_eq!(r.req().op, Op::IterationNext { iter_id: 7 });
            f.reply(
                &r,
                Ok(ReplyBody::IterationNext {
                    entries: IterEntries::from_slice(batch),
                }),
            );
        }
        let r = f.expect(RequestKind::IterationNext);
        f.reply(&r, Err(CsError::NoSections));
        let r = f.expect(RequestKind::IterationFinalize);
        f.ok(&r);
        // an iteration dropped without finalize is finalized for it
        let r = f.expect(RequestKind::IterationInitialize);
        f.reply(&r, Ok(ReplyBody::IterationInitialize { iter_id: 8 }));
        let r = f.expect(RequestKind::IterationFinalize);
        assert_eq!(r.req().op, Op::IterationFinalize { iter_id: 8 });
        f.ok(&r);
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    let g = group("q");
    cpg.join(&g).unwrap();
    let members = cpg.membership_get(&g).unwrap();
    assert_eq!(members.len(), 150);
    assert_eq!(members[149].pid, 150);
    let mut out = [MemberAddr { nodeid: 0, pid: 0 }; 10];
    let mut needed = 0;
    assert_eq!(
        cpg.membership_get_into(&g, &mut out, &mut needed),
        Err(CsError::NoSpace)
    );
    assert_eq!(needed, 150);
    assert_eq!(cpg.flow_control_state_get(), Ok(FlowControlState::Disabled));
    // the events read past while waiting are pending: the fd says so
    assert!(readable(&cpg, 0));
    cpg.dispatch(DispatchFlags::All).unwrap();
    let evs = taken(&log);
    assert_eq!(evs.len(), 4, "{evs:?}");
    assert!(matches!(evs[0], Ev::Conf { .. }));
    for (i, e) in evs[1..].iter().enumerate() {
        assert!(matches!(e, Ev::Msg { data, .. } if data == &[i as u8; 10]));
    }
    assert!(!readable(&cpg, 0), "drained");
    let mut it = cpg.iteration_initialize(IterationType::All, None).unwrap();
    let mut pids = Vec::new();
    loop {
        match it.next_entry() {
            Ok(e) => pids.push(e.pid),
            Err(CsError::NoSections) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(pids, (0..18).collect::<Vec<u32>>());
    assert_eq!(it.next_entry(), Err(CsError::NoSections));
    it.finalize().unwrap();
    assert_eq!(it.finalize(), Err(CsError::BadHandle));
    assert_eq!(
        cpg.iteration_initialize(IterationType::OneGroup, None)
            .err(),
        Some(CsError::InvalidParam),
        "checked before asking"
    );
    drop(
        cpg.iteration_initialize(IterationType::NameOnly, None)
            .unwrap(),
    );
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn the_fd_is_level_triggered() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        f.deliver(&g, me, b"one");
        // replied after both events: the client reads them past
        let r = f.expect(RequestKind::MembershipGet);
        f.answer_members(&r, &[me]);
        // the client's mcast, answered once its dispatch drained the ring
        let (_, msg) = f.read_mcast();
        f.deliver(&g, me, &msg);
        go_rx.recv().unwrap();
        // the daemon dies: the fd is readable, dispatch says LIBRARY
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    let raw = |c: &Cpg| {
        use std::os::fd::AsRawFd;
        c.fd_get().unwrap().as_raw_fd()
    };
    let fd1 = raw(&cpg);
    assert!(!readable(&cpg, 0));
    cpg.join(&group("fd")).unwrap();
    cpg.membership_get(&group("fd")).unwrap();
    assert!(readable(&cpg, 0), "two events pending");
    cpg.dispatch(DispatchFlags::One).unwrap();
    assert!(readable(&cpg, 0), "one event still pending: still readable");
    cpg.dispatch(DispatchFlags::One).unwrap();
    assert_eq!(taken(&log).len(), 2);
    assert!(!readable(&cpg, 0), "drained: not readable");
    assert_eq!(
        cpg.dispatch(DispatchFlags::OneNonblocking),
        Err(CsError::TryAgain)
    );
    send(&cpg, b"two").unwrap();
    // the daemon signals: the drained dispatch left consumer_sleeping set
    assert!(readable(&cpg, 20_000), "the next event makes it readable");
    cpg.dispatch(DispatchFlags::All).unwrap();
    assert!(matches!(&taken(&log)[..], [Ev::Msg { data, .. }] if data == b"two"));
    assert!(!readable(&cpg, 0));
    assert_eq!(raw(&cpg), fd1, "stable fd");
    go_tx.send(()).unwrap();
    daemon.join();
    assert!(readable(&cpg, 20_000), "readable once the daemon is gone");
    assert_eq!(cpg.dispatch(DispatchFlags::All), Err(CsError::Library));
}

#[test]
fn the_fd_stays_readable_while_another_thread_waits_for_a_reply() {
    let (check_tx, check_rx) = mpsc::channel::<()>();
    let (checked_tx, checked_rx) = mpsc::channel::<()>();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        let r = f.expect(RequestKind::MembershipGet);
        // an event while the client waits for this reply
        f.deliver(&g, me, b"meanwhile");
        // until the waiting thread read it and went back to sleep: the
        // event ring is empty and consumer_sleeping set again (read in
        // that order, the flag is the one set after the read)
        let base = f.d.layout.events_region.offset as usize;
        let word = |off| f.d.mem.atomic_u64(base + off).unwrap();
        let head = word(header::offset::HEAD).load(Ordering::Acquire);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let tail = word(header::offset::TAIL).load(Ordering::Acquire);
            let sleeping =
                f.d.mem
                    .atomic_u32(base + header::offset::CONSUMER_SLEEPING)
                    .unwrap()
                    .load(Ordering::SeqCst);
            if tail == head && sleeping != 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the client did not read");
            std::thread::yield_now();
        }
        check_tx.send(()).unwrap();
        checked_rx.recv().unwrap();
        f.answer_members(&r, &[me]);
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = Arc::new(daemon.connect(model).unwrap());
    let g = group("mt");
    cpg.join(&g).unwrap();
    cpg.dispatch(DispatchFlags::One).unwrap();
    assert!(!readable(&cpg, 0));
    let c = cpg.clone();
    let asking = std::thread::spawn(move || c.membership_get(&g));
    check_rx.recv().unwrap();
    assert!(
        readable(&cpg, 0),
        "an event is queued while the other thread sleeps on the eventfd"
    );
    checked_tx.send(()).unwrap();
    assert_eq!(asking.join().unwrap().unwrap(), [me()]);
    cpg.dispatch(DispatchFlags::All).unwrap();
    assert!(
        matches!(&taken(&log)[..], [Ev::Conf { .. }, Ev::Msg { data, .. }] if data == b"meanwhile")
    );
    assert!(!readable(&cpg, 0), "drained");
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn a_dead_daemon_is_library_everywhere_and_nothing_hangs() {
    let daemon = Daemon::start(0, |f| {
        let r = f.expect(RequestKind::Join);
        f.ok(&r);
        // the client's mcast is the signal to die
        f.read_mcast();
    });
    let (model, _log) = recorder(false);
    let cpg = Arc::new(daemon.connect(model).unwrap());
    cpg.join(&group("dead")).unwrap();
    let d = cpg.clone();
    let blocked = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    send(&cpg, b"die").unwrap();
    daemon.join();
    assert_eq!(blocked.join().unwrap(), Err(CsError::Library));
    assert!(readable(&cpg, 0));
    assert_eq!(cpg.join(&group("x")), Err(CsError::Library));
    assert_eq!(send(&cpg, b"x"), Err(CsError::Library));
    assert_eq!(cpg.local_get(), Err(CsError::Library));
    assert_eq!(
        cpg.membership_get(&group("x")).err(),
        Some(CsError::Library)
    );
    assert_eq!(cpg.dispatch(DispatchFlags::One), Err(CsError::Library));
    assert!(cpg.context_get().is_ok(), "local");
    assert_eq!(
        cpg.finalize(),
        Ok(()),
        "the handle goes whatever the daemon"
    );
    assert_eq!(cpg.finalize(), Err(CsError::BadHandle));

    // a daemon that dies while a reply is awaited
    let daemon = Daemon::start(0, |f| {
        f.expect(RequestKind::Join);
    });
    let cpg = daemon.connect(ModelV1::default()).unwrap();
    assert_eq!(cpg.join(&group("dead")), Err(CsError::Library));
    daemon.join();
}

#[test]
fn evicted_is_library_from_then_on() {
    let daemon = Daemon::start(0, |f| {
        f.accept_join();
        f.send(&Event::Evicted {
            error: CsError::Library,
        });
        // the client says nothing more; its finalize closes the socket
        f.until_hangup();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("ev")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match cpg.dispatch(DispatchFlags::All) {
            Ok(()) => assert!(Instant::now() < deadline),
            Err(e) => {
                assert_eq!(e, CsError::Library);
                break;
            }
        }
    }
    let _ = taken(&log);
    assert!(readable(&cpg, 0), "an evicted handle's fd stays readable");
    assert_eq!(send(&cpg, b"x"), Err(CsError::Library));
    assert_eq!(cpg.flow_control_state_get().err(), Some(CsError::Library));
    assert_eq!(cpg.finalize(), Ok(()));
    daemon.join();
}

#[test]
fn a_malformed_event_closes_the_connection() {
    type Bad = fn(&mut Fake);
    let cases: [(&str, Bad); 5] = [
        ("a delivery from node 0", |f| {
            let mut body = vec![0u8; 16];
            body[8..12].copy_from_slice(&1u32.to_le_bytes());
            body.push(b'x');
            f.send_raw(EventKind::Deliver as u16, 0, &body);
        }),
        ("a reply to no request", |f| {
            f.send(&Event::Reply(Reply {
                req_id: 999_999,
                op: RequestKind::Join,
                result: Ok(ReplyBody::Done),
            }));
        }),
        ("a piece without its first", |f| {
            f.send(&Event::DeliverMore { piece: b"orphan" });
        }),
        ("an unknown kind", |f| {
            // a kind of the request ring on the event ring
            f.send_raw(RequestKind::Join as u16, 0, &[0u8; 8]);
        }),
        ("undefined flags", |f| {
            f.send_raw(EventKind::FlowControl as u16, 4, &[0u8; 4]);
        }),
    ];
    for (what, bad) in cases {
        let daemon = Daemon::start(0, move |f| {
            bad(f);
            // the client closes: its hang-up ends this
            f.until_hangup();
        });
        let cpg = daemon.connect(ModelV1::default()).unwrap();
        let deadline = Instant::now() + PATIENCE;
        let e = loop {
            match cpg.dispatch(DispatchFlags::All) {
                Ok(()) => assert!(Instant::now() < deadline, "{what}: not noticed"),
                Err(e) => break e,
            }
        };
        assert_eq!(e, CsError::Library, "{what}");
        assert_eq!(cpg.join(&group("x")), Err(CsError::Library), "{what}");
        daemon.join();
    }
}

#[test]
fn zero_copy_buffers_are_slots_of_the_shared_region() {
    const ZC: u64 = 64 << 10;
    let daemon = Daemon::start(ZC, |f| {
        f.accept_join();
        let me = f.me();
        let (zc_off, _) = f.d.zc_region();
        // above the largest slot class: the daemon says TOO_BIG (the
        // largest message is no bound of a slot)
        let r = f.expect(RequestKind::ZcAlloc);
        assert_eq!(r.req().op, Op::ZcAlloc { len: MSG_MAX + 1 });
        f.reply(&r, Err(CsError::TooBig));
        // alloc → slot (1, gen 5) at 8 KiB
        let r = f.expect(RequestKind::ZcAlloc);
        assert_eq!(r.req().op, Op::ZcAlloc { len: 4096 });
        let slot = SlotId::from_parts(1, 5);
        f.reply(
            &r,
            Ok(ReplyBody::ZcAlloc {
                slot,
                offset: 8192,
                capacity: 4096,
            }),
        );
        let r = f.expect(RequestKind::McastZc);
        let Op::McastZc {
            slot: s,
            offset,
            len,
            ..
        } = r.req().op
        else {
            unreachable!()
        };
        assert_eq!((s, offset, len), (slot, 0, 3000));
        // the payload is where the client wrote it: in the slot
        let payload = f.d.mem.shared_bytes(zc_off + 8192, 3000).unwrap().to_vec();
        assert!(payload
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8));
        // with the send the client allocates four slots ahead, of the size
        // it sent, without waiting for any of them (answered before the
        // delivery, so the client has read them all when it dispatches it)
        let ahead = [(2, 0), (6, 16384), (7, 20480), (8, 24576)];
        let asked: Vec<_> = ahead
            .iter()
            .map(|_| f.expect(RequestKind::ZcAlloc))
            .collect();
        for (r, (index, offset)) in asked.iter().zip(ahead) {
            assert_eq!(r.req().op, Op::ZcAlloc { len: 4096 });
            f.reply(
                r,
                Ok(ReplyBody::ZcAlloc {
                    slot: SlotId::from_parts(index, 1),
                    offset,
                    capacity: 4096,
                }),
            );
        }
        f.deliver(&group("zc"), me, &payload);
        // an alloc takes the first of them, and the client drops the
        // buffer: ZC_FREE, nobody waits
        let r = f.expect(RequestKind::ZcFree);
        assert_eq!(
            r.req().op,
            Op::ZcFree {
                slot: SlotId::from_parts(2, 1)
            }
        );
        f.ok(&r);
        // a larger alloc: the three smaller slots held ahead go back
        let mut back: Vec<SlotId> = (0..3)
            .map(|_| {
                let r = f.expect(RequestKind::ZcFree);
                f.ok(&r);
                match r.req().op {
                    Op::ZcFree { slot } => slot,
                    _ => unreachable!(),
                }
            })
            .collect();
        back.sort_by_key(|s| s.index());
        assert_eq!(
            back,
            [6, 7, 8].map(|i| SlotId::from_parts(i, 1)),
            "the slots allocated ahead, each freed once"
        );
        // then it is asked for, and freed by zcb_free: ZC_FREE, answered
        let r = f.expect(RequestKind::ZcAlloc);
        assert_eq!(r.req().op, Op::ZcAlloc { len: 8000 });
        f.reply(
            &r,
            Ok(ReplyBody::ZcAlloc {
                slot: SlotId::from_parts(3, 1),
                offset: 0,
                capacity: 8192,
            }),
        );
        let r = f.expect(RequestKind::ZcFree);
        f.ok(&r);
        // a small buffer is on the heap: its send is an MCAST
        let (_, msg) = f.read_mcast();
        assert_eq!(msg, [9u8; 100]);
        // two slots that overlap: the daemon is lying, the client leaves
        let r = f.expect(RequestKind::ZcAlloc);
        f.reply(
            &r,
            Ok(ReplyBody::ZcAlloc {
                slot: SlotId::from_parts(4, 1),
                offset: 4096,
                capacity: 8192,
            }),
        );
        let r = f.expect(RequestKind::ZcAlloc);
        f.reply(
            &r,
            Ok(ReplyBody::ZcAlloc {
                slot: SlotId::from_parts(5, 1),
                offset: 8192,
                capacity: 4096,
            }),
        );
        f.until_hangup();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("zc")).unwrap();
    assert_eq!(
        cpg.zcb_alloc(MSG_MAX as usize + 1).err(),
        Some(CsError::TooBig),
        "above the largest slot, from the daemon"
    );
    let mut buf = cpg.zcb_alloc(4096).unwrap();
    assert_eq!(buf.capacity(), 4096);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let e = cpg
        .zcb_mcast_joined(Guarantee::Agreed, buf, 5000)
        .unwrap_err();
    assert_eq!(e.error, CsError::InvalidParam, "longer than the buffer");
    cpg.zcb_mcast_joined(Guarantee::Agreed, e.buf.unwrap(), 3000)
        .unwrap();
    while !taken(&log).iter().any(
        |e| matches!(e, Ev::Msg { data, .. } if data.len() == 3000 && data[..5] == [0, 1, 2, 3, 4]),
    ) {
        cpg.dispatch(DispatchFlags::One).unwrap();
    }
    drop(cpg.zcb_alloc(3000).unwrap());
    let buf = cpg.zcb_alloc(8000).unwrap();
    cpg.zcb_free(buf).unwrap();
    let mut small = cpg.zcb_alloc(100).unwrap();
    small.fill(9);
    cpg.zcb_mcast_joined(Guarantee::Agreed, small, 100).unwrap();
    let held = cpg.zcb_alloc(8192).unwrap();
    assert_eq!(cpg.zcb_alloc(4096).err(), Some(CsError::Library), "overlap");
    assert_eq!(send(&cpg, b"x"), Err(CsError::Library));
    drop(held);
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn a_zc_slot_outside_the_region_closes_the_connection() {
    let daemon = Daemon::start(8192, |f| {
        let r = f.expect(RequestKind::ZcAlloc);
        f.reply(
            &r,
            Ok(ReplyBody::ZcAlloc {
                slot: SlotId::from_parts(1, 1),
                offset: 4096,
                capacity: 8192,
            }),
        );
        f.until_hangup();
    });
    let cpg = daemon.connect(ModelV1::default()).unwrap();
    assert_eq!(cpg.zcb_alloc(2048).err(), Some(CsError::Library));
    daemon.join();
}

#[test]
fn finalize_inside_a_callback_and_busy_dispatch() {
    let daemon = Daemon::start(0, |f| {
        f.accept_join();
        f.accept_finalize();
    });
    let model = ModelV1 {
        confchg: Some(Box::new(|cpg, _| {
            assert_eq!(cpg.dispatch(DispatchFlags::All), Err(CsError::Busy));
            assert_eq!(cpg.local_get(), Ok(NODE), "any call from a callback");
            cpg.finalize().unwrap();
        })),
        ..Default::default()
    };
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("cb")).unwrap();
    assert_eq!(
        cpg.dispatch(DispatchFlags::Blocking),
        Err(CsError::BadHandle)
    );
    daemon.join();
}

#[test]
fn finalize_from_another_thread_wakes_a_blocked_dispatch() {
    let daemon = Daemon::start(0, |f| f.accept_finalize());
    let cpg = Arc::new(daemon.connect(ModelV1::default()).unwrap());
    let d = cpg.clone();
    let t = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    cpg.finalize().unwrap();
    assert_eq!(t.join().unwrap(), Err(CsError::BadHandle));
    daemon.join();
}

#[test]
fn one_thread_dispatches_while_another_multicasts() {
    const N: usize = 3000;
    let daemon = Daemon::start(0, |f| {
        let g = f.accept_join();
        let me = f.me();
        // echo every message (waiting for event room as needed) until
        // finalize
        loop {
            let r = f.next().expect("finalize comes first");
            match r.op() {
                RequestKind::Mcast => {
                    let Op::Mcast { piece, .. } = r.req().op else {
                        unreachable!()
                    };
                    let piece = piece.to_vec();
                    f.deliver(&g, me, &piece);
                }
                RequestKind::Finalize => {
                    f.ok(&r);
                    return;
                }
                k => panic!("{k:?}"),
            }
        }
    });
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            assert_eq!(d.msg.len(), 100);
            c.fetch_add(1, Ordering::SeqCst);
        })),
        ..Default::default()
    };
    let cpg = Arc::new(daemon.connect(model).unwrap());
    cpg.join(&group("bench")).unwrap();
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    let mut sent = 0;
    let mut try_again = 0u64;
    while sent < N {
        match send(&cpg, &[7u8; 100]) {
            Ok(()) => sent += 1,
            Err(CsError::TryAgain) => {
                try_again += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    let deadline = Instant::now() + PATIENCE;
    while count.load(Ordering::SeqCst) < N {
        assert!(
            Instant::now() < deadline,
            "{} delivered",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!dispatcher.is_finished(), "BLOCKING keeps waiting");
    cpg.finalize().unwrap();
    assert_eq!(dispatcher.join().unwrap(), Err(CsError::BadHandle));
    daemon.join();
    eprintln!("{N} messages, {try_again} TRY_AGAIN");
}

#[test]
fn a_request_waits_for_a_message_in_pieces_to_end() {
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let large: Vec<u8> = (0..300_000u32).map(|i| (i * 13) as u8).collect();
    let l2 = large.clone();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        // not reading until the sender is blocked halfway through
        let base = f.d.layout.requests_region.offset as usize;
        let word = |off| f.d.mem.atomic_u64(base + off).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while word(header::offset::HEAD).load(Ordering::Acquire) < (RING_CAPACITY_MIN / 2) as u64 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        blocked_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // the message whole, then the membership request: nothing went
        // between the pieces (read_mcast checks)
        let (_, msg) = f.read_mcast();
        assert!(msg == l2);
        let r = f.expect(RequestKind::MembershipGet);
        f.answer_members(&r, &[me]);
        f.deliver(&g, me, b"done");
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = Arc::new(daemon.connect(model).unwrap());
    let g = group("pieces");
    cpg.join(&g).unwrap();
    let c = cpg.clone();
    let sender = std::thread::spawn(move || send(&c, &large));
    blocked_rx.recv().unwrap();
    let c = cpg.clone();
    let asking = std::thread::spawn(move || c.membership_get(&g));
    assert_eq!(
        send(&cpg, b"x"),
        Err(CsError::TryAgain),
        "the ring is held by the message in pieces"
    );
    // widen the window for the request to wait behind the message (the
    // outcome does not depend on it)
    std::thread::sleep(Duration::from_millis(20));
    go_tx.send(()).unwrap();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(asking.join().unwrap().unwrap(), [me()]);
    while !taken(&log).iter().any(|e| matches!(e, Ev::Msg { .. })) {
        cpg.dispatch(DispatchFlags::One).unwrap();
    }
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn try_again_when_the_ring_is_full_or_flow_control_is_on() {
    let (filled_tx, filled_rx) = mpsc::channel::<usize>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        // not reading: the client fills the ring
        let n = filled_rx.recv().unwrap();
        for _ in 0..n {
            f.read_mcast();
        }
        f.send(&Event::FlowControl { enabled: true });
        ack_tx.send(()).unwrap();
        // flow_control_state_get is answered from the event, locally
        go_rx.recv().unwrap();
        f.send(&Event::FlowControl { enabled: false });
        ack_tx.send(()).unwrap();
        let (_, msg) = f.read_mcast();
        assert_eq!(msg, b"after");
        let me = f.me();
        f.deliver(&g, me, b"after");
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    cpg.join(&group("fc")).unwrap();
    let mut n = 0;
    loop {
        match send(&cpg, &[1u8; 1000]) {
            Ok(()) => n += 1,
            Err(CsError::TryAgain) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(n > 10, "{n}");
    assert_eq!(
        send(&cpg, &[1u8; 1000]),
        Err(CsError::TryAgain),
        "never waits"
    );
    filled_tx.send(n).unwrap();
    ack_rx.recv().unwrap();
    // the FLOW_CONTROL event is read (here by a dispatch): early TRY_AGAIN
    cpg.dispatch(DispatchFlags::All).unwrap();
    assert_eq!(send(&cpg, b"x"), Err(CsError::TryAgain));
    assert_eq!(cpg.flow_control_state_get(), Ok(FlowControlState::Enabled));
    go_tx.send(()).unwrap();
    ack_rx.recv().unwrap();
    // a send reads the ring for the edge that ends it
    send(&cpg, b"after").unwrap();
    while !taken(&log).iter().any(|e| matches!(e, Ev::Msg { .. })) {
        cpg.dispatch(DispatchFlags::One).unwrap();
    }
    cpg.finalize().unwrap();
    daemon.join();
}

/// A send while the handle's own LEAVE is in the ring, unanswered, is
/// TRY_AGAIN: written, it would go after the LEAVE, where the daemon
/// refuses it, although the send had said CS_OK.
#[test]
fn a_send_while_the_own_leave_is_unanswered_is_try_again() {
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let (tried_tx, tried_rx) = mpsc::channel::<()>();
    let daemon = Daemon::start(0, move |f| {
        let g = f.accept_join();
        let me = f.me();
        let r = f.expect(RequestKind::Leave);
        leave_tx.send(()).unwrap();
        tried_rx.recv().unwrap();
        f.ok(&r);
        f.confchg(&g, &[], &[(me, Reason::Leave)], &[]);
        f.accept_finalize();
    });
    let cpg = Arc::new(daemon.connect(ModelV1::default()).unwrap());
    let g = group("lv");
    cpg.join(&g).unwrap();
    let leaver = {
        let (cpg, g) = (cpg.clone(), g.clone());
        std::thread::spawn(move || cpg.leave(&g))
    };
    leave_rx.recv().unwrap();
    assert_eq!(send(&cpg, b"x"), Err(CsError::TryAgain), "leave in flight");
    tried_tx.send(()).unwrap();
    assert_eq!(leaver.join().unwrap(), Ok(()));
    assert_eq!(send(&cpg, b"x"), Err(CsError::NotExist), "leaving");
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn the_join_state_follows_replies_and_own_confchgs() {
    let daemon = Daemon::start(0, |f| {
        let g = f.accept_join();
        let me = f.me();
        let (_, msg) = f.read_mcast();
        assert_eq!(msg, b"joining");
        let r = f.expect(RequestKind::Leave);
        f.ok(&r);
        f.confchg(&g, &[], &[(me, Reason::Leave)], &[]);
        // a second join whose own confchg comes before its reply
        let r = f.expect(RequestKind::Join);
        f.confchg(&g, &[me], &[], &[(me, Reason::Join)]);
        f.ok(&r);
        let (_, msg) = f.read_mcast();
        assert_eq!(msg, b"again");
        // a join refused
        let r = f.expect(RequestKind::Join);
        f.reply(&r, Err(CsError::Exist));
        f.accept_finalize();
    });
    let (model, log) = recorder(false);
    let cpg = daemon.connect(model).unwrap();
    let g = group("js");
    cpg.join(&g).unwrap();
    assert_eq!(send(&cpg, b"joining"), Ok(()), "accepted while joining");
    cpg.leave(&g).unwrap();
    assert_eq!(send(&cpg, b"x"), Err(CsError::NotExist), "leaving");
    // the own join and leave confchgs
    let mut seen = 0;
    while seen < 2 {
        cpg.dispatch(DispatchFlags::One).unwrap();
        seen += taken(&log).len();
    }
    cpg.join(&g).unwrap();
    assert_eq!(send(&cpg, b"again"), Ok(()));
    assert_eq!(cpg.join(&g), Err(CsError::Exist));
    cpg.finalize().unwrap();
    daemon.join();
}

#[test]
fn totem_confchgs_as_the_embedded_node_gives_them() {
    for with_callback in [false, true] {
        let daemon = Daemon::start(0, move |f| {
            assert_eq!(f.hello.model, Model::V1InitialTotemConfchg);
            let g = f.accept_join();
            let ring = RingId { rep: NODE, seq: 8 };
            // the initial one, right after the own join
            f.send(&Event::TotemConfchg {
                ring_id: ring,
                members: List::from_slice(&[NODE]),
            });
            // a later ring change
            f.send(&Event::TotemConfchg {
                ring_id: RingId { rep: NODE, seq: 12 },
                members: List::from_slice(&[NODE, 4]),
            });
            let me = f.me();
            f.deliver(&g, me, b"m");
            f.accept_finalize();
        });
        let (mut model, log) = recorder(with_callback);
        model.flags = MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
        let cpg = daemon.connect(model).unwrap();
        cpg.join(&group("t")).unwrap();
        // ONE at a time: the own join, the initial totem confchg, then
        // (with a callback) the later one, then the message
        let n = if with_callback { 4 } else { 3 };
        for _ in 0..n {
            cpg.dispatch(DispatchFlags::One).unwrap();
        }
        let evs = taken(&log);
        let totems = evs.iter().filter(|e| matches!(e, Ev::Totem(..))).count();
        assert_eq!(totems, if with_callback { 2 } else { 0 }, "{evs:?}");
        assert!(matches!(evs.last(), Some(Ev::Msg { .. })), "{evs:?}");
        cpg.finalize().unwrap();
        daemon.join();
    }
}

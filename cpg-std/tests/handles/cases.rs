//! The handle tests, written once against [`Cluster`]: a cluster of `n`
//! nodes on which `Cpg` handles are opened. `cpg-std/tests/handles.rs`
//! runs them on embedded nodes over the in-process loopback network;
//! `cpgd/tests/handles.rs` runs the same file (`#[path]`) on `cpgd`
//! daemons over loopback UDP, each handle a connection
//! (`Cpg::connect`). Both must give the same codes and the same events in
//! the same order: the API is one.
//!
//! A member is `(nodeid, pid)`. Over cpgd the pid is this test process's
//! own (`SO_PEERCRED`), so one process is at most one member of a group
//! per node: a case that needs two members of one group puts them on two
//! nodes, and reads member pids from [`Cluster::pid`].
//!
//! `handle_cases!(Type)` expands to one `#[test]` per case, named after
//! it. A case missing from its list is dead code (a warning, an error
//! under clippy's `-D warnings`).

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::{group, until, Ev, Rec, H};
use cpg_core::engine::State;
use cpg_std::testing::{BufSend, NodeProbe};
use cpg_std::{
    Callbacks, Context, Cpg, CsError, DispatchFlags, FlowControlState, GroupName, Guarantee,
    IterationType, MemberAddr, ModelV1, NodeConfig, NodeId, Reason,
};

/// Every case below as a `#[test]` on the cluster type `$c`.
macro_rules! handle_cases {
    ($c:ty) => {
        handle_cases!(@each $c;
            three_nodes_total_order_fifo_safe_and_agreed,
            own_join_confchg_and_initial_totem_confchg,
            exist_for_second_join_and_same_process_twice,
            not_exist_for_mcast_and_leave_without_a_join,
            join_again_after_leave,
            try_again_join_while_own_leave_in_flight,
            try_again_and_flow_control_when_the_send_queue_is_full,
            try_again_from_one_nonblocking_and_dispatch_modes,
            fd_is_readable_exactly_while_events_are_pending,
            bad_handle_after_finalize,
            invalid_param_cases,
            name_too_long,
            too_big_for_mcast_zcb_alloc_and_zcb_mcast,
            no_space_when_membership_array_is_too_small,
            iteration_name_only_one_group_all_and_no_sections,
            local_get_context_and_max_atomic,
            blocked_dispatch_while_another_thread_mcasts_then_finalize_wakes_it,
            finalize_from_another_thread_wakes_dispatch_one,
            finalize_inside_a_callback_stops_dispatch_with_bad_handle,
            slow_consumer_is_evicted_and_the_others_see_procdown,
            library_after_the_node_stops,
            killed_node_gives_nodedown_and_survivors_keep_delivering,
            zero_copy_sends_read_from_inside_the_buffer,
            a_sender_outrunning_its_own_dispatch_gets_try_again_not_eviction,
            a_maximum_size_message_is_accepted_on_every_send_path,
            multicasts_racing_a_leave_are_delivered_before_it_or_refused,
        );
    };
    (@each $c:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                cases::$name::<$c>();
            }
        )*
    };
}

/// A running cluster of nodes `1..=n` (indices `0..n`), one backend.
pub trait Cluster: Sized {
    /// Handle values keep a node's slot in their low 32 bits, and a new
    /// handle reuses a finalized one's slot (embedded); over cpgd they
    /// are connection ids, never reused.
    const REUSES_HANDLE_SLOTS: bool;

    /// Start nodes `1..=n`, each config changed by `tweak` (after the
    /// backend's own timers), and wait until they form one ring.
    fn start(n: u32, tweak: &dyn Fn(&mut NodeConfig)) -> Self;

    /// `cpg_model_initialize` on node `i`, as process `pid` where the
    /// backend can say so (embedded); over cpgd the pid is this process's.
    fn open_model(
        &self,
        i: usize,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError>;

    /// `cpg_initialize` (the legacy constructor) on node `i`.
    fn open_legacy(&self, i: usize, callbacks: Callbacks) -> Result<Cpg, CsError>;

    /// The pid a handle opened as `pid` is a member with.
    fn pid(&self, pid: u32) -> u32;

    /// Stop node `i` gracefully (a LEAVE tells the others at once).
    fn stop(&mut self, i: usize);

    /// Stop node `i` as if its process died (the others see NODEDOWN).
    fn kill(&mut self, i: usize);

    /// Node `i`'s status, counters, sends and freeze switch.
    fn probe(&self, i: usize) -> NodeProbe;

    /// Where the byte at `addr` of a zero-copy buffer of a handle on node
    /// `i` is in the memory node `i` sends from (the same address
    /// embedded; over cpgd, the daemon's mapping of the client's slot).
    fn sent_from(&self, i: usize, addr: usize) -> usize;

    /// Bytes a handle's messages and events may take between it and its
    /// node, besides the node's queue for it (over cpgd: the
    /// connection's rings).
    fn ring_bytes(&self) -> usize;
}

fn cluster<C: Cluster>(n: u32) -> C {
    C::start(n, &|_| {})
}

/// Every node operational in one ring of all of them.
pub fn converged(probes: &[NodeProbe]) -> bool {
    until(|| {
        let st: Vec<_> = probes.iter().map(|p| p.status()).collect();
        let mut ids: Vec<NodeId> = (1..=probes.len() as NodeId).collect();
        ids.sort();
        st.iter().all(|s| {
            s.state == State::Operational && s.ring_id == st[0].ring_id && {
                let mut m = s.members.clone();
                m.sort();
                m == ids
            }
        })
    })
}

fn open<C: Cluster>(c: &C, i: usize, pid: u32) -> H {
    open_with(c, i, pid, false, 0)
}

fn open_totem<C: Cluster>(c: &C, i: usize, pid: u32) -> H {
    open_with(
        c,
        i,
        pid,
        true,
        cpg_std::cpg::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    )
}

fn open_with<C: Cluster>(c: &C, i: usize, pid: u32, totem: bool, flags: u32) -> H {
    let rec = Rec::default();
    let cpg = c
        .open_model(i, pid, rec.model(totem, flags), None)
        .expect("initialize");
    H {
        cpg,
        rec,
        pid: c.pid(pid),
    }
}

/// A handle as process `pid` on each of the `n` nodes, each joined to `g`
/// and seeing every one of them.
fn join_all<C: Cluster>(c: &C, n: usize, pid: u32, g: &GroupName) -> Vec<H> {
    let hs: Vec<H> = (0..n).map(|i| open(c, i, pid)).collect();
    for h in &hs {
        h.cpg.join(g).unwrap();
    }
    for h in &hs {
        assert!(h.wait_members(g, hs.len()), "{} members", hs.len());
    }
    hs
}

/// A config's largest message set to `max`, and the handles' queue cap to
/// the smallest that takes it (two such messages and 64 KiB); over cpgd
/// the connection's rings are the smallest too, so what a handle can
/// leave undispatched stays near the cap.
fn small_queues(c: &mut NodeConfig, max: usize) {
    c.engine.max_message_size = max;
    c.handle_queue_bytes = cpg_std::config::handle_queue_bytes_min(max);
    c.ipc.request_ring_bytes = cpg_core::ipc::RING_CAPACITY_MIN;
    c.ipc.event_ring_bytes = cpg_core::ipc::RING_CAPACITY_MIN;
}

/// One node whose messages are at most `max` bytes and whose handles'
/// queues are capped at the least that takes them ([`small_queues`]), and
/// one handle joined to group `name`.
fn one_node_joined<C: Cluster>(max: usize, name: &str) -> (C, H, GroupName) {
    let c = C::start(1, &|c| small_queues(c, max));
    let g = group(name);
    let h = open(&c, 0, 1);
    h.cpg.join(&g).unwrap();
    assert!(h.wait_members(&g, 1));
    (c, h, g)
}

fn send(h: &H, g: Guarantee, data: &[u8]) -> Result<(), CsError> {
    h.cpg.mcast_joined(g, &[IoSlice::new(data)])
}

/// The own LEAVE confchg of `me` is among `e`.
fn left_self(e: &[Ev], me: MemberAddr) -> bool {
    e.iter()
        .any(|e| matches!(e, Ev::Conf { left, .. } if left.contains(&(me, Reason::Leave))))
}

pub fn three_nodes_total_order_fifo_safe_and_agreed<C: Cluster>() {
    let c: C = cluster(3);
    let g = group("GROUP\0");
    let hs = join_all(&c, 3, 100, &g);
    for k in 0..100u32 {
        for (i, h) in hs.iter().enumerate() {
            let guarantee = if k % 3 == 0 {
                Guarantee::Safe
            } else {
                Guarantee::Agreed
            };
            let msg = format!("n{i}-{k}");
            // two iovecs, concatenated
            let (a, b) = msg.as_bytes().split_at(2);
            loop {
                match h
                    .cpg
                    .mcast_joined(guarantee, &[IoSlice::new(a), IoSlice::new(b)])
                {
                    Ok(()) => break,
                    Err(CsError::TryAgain) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    for h in &hs {
        assert!(h.wait_msgs(300), "all 300 delivered");
    }
    let d0 = hs[0].rec.msgs();
    for h in &hs[1..] {
        assert_eq!(h.rec.msgs(), d0, "same total order");
    }
    for i in 0..3 {
        let mine: Vec<Vec<u8>> = d0
            .iter()
            .filter(|m| m.starts_with(format!("n{i}-").as_bytes()))
            .cloned()
            .collect();
        let expect: Vec<Vec<u8>> = (0..100).map(|k| format!("n{i}-{k}").into_bytes()).collect();
        assert_eq!(mine, expect, "FIFO for sender {i}");
    }
    // senders are identified as (nodeid, pid)
    let ev = hs[0].rec.events();
    let second = MemberAddr {
        nodeid: 2,
        pid: c.pid(100),
    };
    assert!(ev
        .iter()
        .any(|e| matches!(e, Ev::Msg { from, .. } if *from == second)));
}

pub fn own_join_confchg_and_initial_totem_confchg<C: Cluster>() {
    let mut c: C = cluster(2);
    let (g, g2) = (group("t"), group("t2"));
    let a = open_totem(&c, 0, 1);
    let plain = open_with(&c, 0, 2, true, 0); // totem cb, no initial flag
    a.cpg.join(&g).unwrap();
    // another group: over cpgd both handles are one process on one node
    plain.cpg.join(&g2).unwrap();
    assert!(a.wait_joined(&g));
    assert!(plain.wait_joined(&g2));
    let ev = a.rec.events();
    let i = ev
        .iter()
        .position(|e| matches!(e, Ev::Conf { joined, .. } if joined.iter().any(|(m, r)| *m == a.me() && *r == Reason::Join)))
        .unwrap();
    match ev.get(i + 1) {
        Some(Ev::Totem { members, ring }) => {
            assert_eq!(members, &vec![1, 2]);
            assert_ne!(ring.seq, 0);
        }
        other => {
            panic!("expected the initial totem confchg right after the own join, got {other:?}")
        }
    }
    let pe = plain.rec.events();
    let j = pe
        .iter()
        .position(|e| matches!(e, Ev::Conf { joined, .. } if joined.iter().any(|(m, r)| *m == plain.me() && *r == Reason::Join)))
        .unwrap();
    assert!(
        !matches!(pe.get(j + 1), Some(Ev::Totem { .. })),
        "no initial totem confchg without the flag"
    );
    // a ring change reaches every handle with the totem callback, joined or not
    let idle = open_with(&c, 1, 3, true, 0);
    c.kill(1);
    assert!(plain.wait(|e| e
        .iter()
        .any(|e| matches!(e, Ev::Totem { members, .. } if members == &vec![1]))));
    drop(idle);
}

pub fn exist_for_second_join_and_same_process_twice<C: Cluster>() {
    let c: C = cluster(2);
    let (g, g2) = (group("a"), group("b"));
    let h = open(&c, 0, 7);
    h.cpg.join(&g).unwrap();
    assert_eq!(h.cpg.join(&g), Err(CsError::Exist), "same group again");
    assert_eq!(h.cpg.join(&g2), Err(CsError::Exist), "one group per handle");
    let same_pid = open(&c, 0, 7);
    assert_eq!(
        same_pid.cpg.join(&g),
        Err(CsError::Exist),
        "same (nodeid, pid) in the same group"
    );
    same_pid.cpg.join(&g2).unwrap();
    // another member: another node (over cpgd, this process is one pid)
    let other = open(&c, 1, 8);
    other.cpg.join(&g).unwrap();
    assert!(h.wait_members(&g, 2));
    // still EXIST once the join completed
    assert_eq!(h.cpg.join(&g), Err(CsError::Exist));
}

pub fn not_exist_for_mcast_and_leave_without_a_join<C: Cluster>() {
    let c: C = cluster(1);
    let (g, other) = (group("a"), group("b"));
    let h = open(&c, 0, 1);
    assert_eq!(
        send(&h, Guarantee::Agreed, b"x"),
        Err(CsError::NotExist),
        "mcast never joined"
    );
    assert_eq!(
        h.cpg.leave(&g),
        Err(CsError::NotExist),
        "leave never joined"
    );
    h.cpg.join(&g).unwrap();
    // mcast while the join is requested but not yet delivered: accepted
    send(&h, Guarantee::Agreed, b"early").unwrap();
    assert_eq!(
        h.cpg.leave(&other),
        Err(CsError::NotExist),
        "leave with another group's name"
    );
    assert!(
        h.wait_msgs(1),
        "the early message is delivered after the join"
    );
    h.cpg.leave(&g).unwrap();
    assert_eq!(
        send(&h, Guarantee::Agreed, b"late"),
        Err(CsError::NotExist),
        "mcast after leave requested"
    );
    assert_eq!(h.cpg.leave(&g), Err(CsError::NotExist), "second leave");
    let me = h.me();
    assert!(h.wait(|e| left_self(e, me)));
    assert_eq!(
        send(&h, Guarantee::Agreed, b"after"),
        Err(CsError::NotExist),
        "mcast after the leave"
    );
    assert_eq!(h.rec.msgs(), vec![b"early".to_vec()]);
}

pub fn join_again_after_leave<C: Cluster>() {
    let c: C = cluster(2);
    let (g1, g2) = (group("one"), group("two"));
    let h = open(&c, 0, 1);
    let peer = open(&c, 1, 1);
    peer.cpg.join(&g1).unwrap();
    h.cpg.join(&g1).unwrap();
    assert!(h.wait_members(&g1, 2));
    h.cpg.leave(&g1).unwrap();
    let me = h.me();
    assert!(h.wait(|e| left_self(e, me)));
    assert!(peer.wait(|e| left_self(e, me)));
    let n_before = h.rec.events().len();
    // the old group's traffic no longer reaches it
    send(&peer, Guarantee::Agreed, b"g1-after").unwrap();
    assert!(peer.wait(|e| e
        .iter()
        .any(|e| matches!(e, Ev::Msg { data, .. } if data == b"g1-after"))));
    // join another group, then the first again
    h.cpg.join(&g2).unwrap();
    assert!(h.wait_joined(&g2));
    h.cpg.leave(&g2).unwrap();
    assert!(h.wait(|e| e
        .iter()
        .filter(|e| matches!(e, Ev::Conf { left, .. } if left.contains(&(me, Reason::Leave))))
        .count()
        == 2));
    h.cpg.join(&g1).unwrap();
    assert!(h.wait_members(&g1, 2));
    send(&h, Guarantee::Agreed, b"back").unwrap();
    assert!(peer.wait(|e| e
        .iter()
        .any(|e| matches!(e, Ev::Msg { data, .. } if data == b"back"))));
    let later = &h.rec.events()[n_before..];
    assert!(
        !later
            .iter()
            .any(|e| matches!(e, Ev::Msg { data, .. } if data == b"g1-after")),
        "no traffic between leave and rejoin"
    );
}

pub fn try_again_join_while_own_leave_in_flight<C: Cluster>() {
    let c: C = cluster(1);
    let g = group("a");
    let h = open(&c, 0, 1);
    h.cpg.join(&g).unwrap();
    assert!(h.wait_joined(&g));
    c.probe(0).set_frozen(true);
    h.cpg.leave(&g).unwrap();
    assert_eq!(
        h.cpg.join(&g),
        Err(CsError::TryAgain),
        "own leave not yet delivered"
    );
    assert_eq!(h.cpg.join(&group("b")), Err(CsError::TryAgain));
    c.probe(0).set_frozen(false);
    let me = h.me();
    assert!(h.wait(|e| left_self(e, me)));
    h.cpg.join(&g).unwrap();
}

pub fn try_again_and_flow_control_when_the_send_queue_is_full<C: Cluster>() {
    // 64 frames of Corosync's 1500, not loopback's "auto" 65,535: at
    // 65,507 B a frame the daemon's request ring fills first
    let c = C::start(1, &|c| {
        c.engine.send_queue_frames = 64;
        c.netmtu = 1500.into();
    });
    let g = group("fc");
    let h = open(&c, 0, 1);
    h.cpg.join(&g).unwrap();
    assert!(h.wait_joined(&g));
    assert_eq!(
        h.cpg.flow_control_state_get(),
        Ok(FlowControlState::Disabled)
    );
    // allocated now: over cpgd a zcb_alloc is a request, which waits
    // behind the multicasts the daemon holds back under flow control
    let mut zb = h.cpg.zcb_alloc(2000).unwrap();
    zb[..4].copy_from_slice(b"zcb!");
    c.probe(0).set_frozen(true);
    let body = vec![7u8; 1000];
    let mut accepted = 0usize;
    let err = loop {
        match send(&h, Guarantee::Agreed, &body) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100_000, "the queue never filled");
    };
    assert_eq!(err, CsError::TryAgain);
    // over cpgd the node's state reaches the client as an event, which
    // may follow the TRY_AGAIN of a full request ring
    assert!(until(
        || h.cpg.flow_control_state_get() == Ok(FlowControlState::Enabled)
    ));
    // a zero-copy send under flow control: TRY_AGAIN and the buffer comes back
    let e = h
        .cpg
        .zcb_mcast_joined(Guarantee::Agreed, zb, 2000)
        .unwrap_err();
    assert_eq!(e.error, CsError::TryAgain);
    let zb = e.buf.expect("buffer returned");
    assert_eq!(&zb[..4], b"zcb!");
    c.probe(0).set_frozen(false);
    // nothing accepted is lost
    assert!(h.wait_msgs(accepted), "every accepted message delivered");
    assert!(until(
        || h.cpg.flow_control_state_get() == Ok(FlowControlState::Disabled)
    ));
    h.cpg.zcb_mcast_joined(Guarantee::Agreed, zb, 2000).unwrap();
    assert!(h.wait_msgs(accepted + 1));
}

pub fn try_again_from_one_nonblocking_and_dispatch_modes<C: Cluster>() {
    let c: C = cluster(1);
    let g = group("d");
    let h = open(&c, 0, 1);
    assert_eq!(
        h.cpg.dispatch(DispatchFlags::OneNonblocking),
        Err(CsError::TryAgain)
    );
    assert_eq!(
        h.cpg.dispatch(DispatchFlags::All),
        Ok(()),
        "ALL with nothing pending is OK"
    );
    h.cpg.join(&g).unwrap();
    for i in 0..3u8 {
        send(&h, Guarantee::Agreed, &[i]).unwrap();
    }
    // ONE blocks until the first event (the own join confchg)
    assert_eq!(h.cpg.dispatch(DispatchFlags::One), Ok(()));
    assert_eq!(h.rec.events().len(), 1);
    assert!(matches!(h.rec.events()[0], Ev::Conf { .. }));
    // wait until the three messages are queued (fd readable), then one at a time
    assert!(until(|| {
        let _ = h.cpg.dispatch(DispatchFlags::OneNonblocking);
        h.rec.msg_count() >= 1
    }));
    assert_eq!(h.rec.msg_count(), 1, "ONE_NONBLOCKING dispatches one");
    assert!(h.wait_msgs(3));
    assert_eq!(
        h.cpg.dispatch(DispatchFlags::OneNonblocking),
        Err(CsError::TryAgain)
    );
}

pub fn fd_is_readable_exactly_while_events_are_pending<C: Cluster>() {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::os::fd::AsRawFd;
    let c: C = cluster(1);
    let h = open(&c, 0, 1);
    let fd1 = h.cpg.fd_get().unwrap().as_raw_fd();
    for _ in 0..1000 {
        assert_eq!(h.cpg.fd_get().unwrap().as_raw_fd(), fd1, "stable fd");
    }
    let ready = |t: i64| {
        let mut fds = [PollFd::new(&h.cpg, PollFlags::IN)];
        poll(
            &mut fds,
            Some(&Timespec {
                tv_sec: t,
                tv_nsec: 0,
            }),
        )
        .unwrap()
            == 1
    };
    assert!(!ready(0));
    h.cpg.join(&group("fd")).unwrap();
    assert!(ready(30), "readable once the own join confchg is queued");
    h.cpg.dispatch(DispatchFlags::All).unwrap();
    assert!(!ready(0), "drained: not readable");
    h.cpg.finalize().unwrap();
    assert!(ready(0), "a finalized handle's fd stays readable");
    assert_eq!(h.cpg.dispatch(DispatchFlags::All), Err(CsError::BadHandle));
}

pub fn bad_handle_after_finalize<C: Cluster>() {
    let cl: C = cluster(1);
    let g = group("bh");
    let h = open(&cl, 0, 1);
    h.cpg.join(&g).unwrap();
    let mut it = h
        .cpg
        .iteration_initialize(IterationType::All, None)
        .unwrap();
    h.cpg.finalize().unwrap();
    let c = &h.cpg;
    assert_eq!(c.finalize(), Err(CsError::BadHandle), "second finalize");
    assert_eq!(c.join(&g), Err(CsError::BadHandle));
    assert_eq!(c.leave(&g), Err(CsError::BadHandle));
    assert_eq!(send(&h, Guarantee::Agreed, b"x"), Err(CsError::BadHandle));
    assert_eq!(c.dispatch(DispatchFlags::All), Err(CsError::BadHandle));
    assert_eq!(c.local_get(), Err(CsError::BadHandle));
    assert_eq!(c.membership_get(&g).err(), Some(CsError::BadHandle));
    assert_eq!(c.flow_control_state_get().err(), Some(CsError::BadHandle));
    assert_eq!(c.context_get().err(), Some(CsError::BadHandle));
    assert_eq!(c.context_set(None), Err(CsError::BadHandle));
    assert_eq!(c.max_atomic_msgsize_get(), Err(CsError::BadHandle));
    assert_eq!(c.fd_get().err(), Some(CsError::BadHandle));
    assert_eq!(c.zcb_alloc(10).err(), Some(CsError::BadHandle));
    assert_eq!(
        c.iteration_initialize(IterationType::All, None).err(),
        Some(CsError::BadHandle)
    );
    assert_eq!(
        it.next_entry(),
        Err(CsError::BadHandle),
        "iterations die with their handle"
    );
    // a new handle has another value (embedded: the same slot with
    // another check value)
    let h2 = open(&cl, 0, 2);
    assert_ne!(h2.cpg.handle(), h.cpg.handle());
    if C::REUSES_HANDLE_SLOTS {
        assert_eq!(
            h2.cpg.handle() & 0xFFFF_FFFF,
            h.cpg.handle() & 0xFFFF_FFFF,
            "same slot"
        );
    }
    assert_eq!(
        h.cpg.local_get(),
        Err(CsError::BadHandle),
        "stale handle stays stale"
    );
    assert_eq!(h2.cpg.local_get(), Ok(1));
}

pub fn invalid_param_cases<C: Cluster>() {
    let c: C = cluster(1);
    let r = c.open_model(
        0,
        1,
        ModelV1 {
            flags: 0x2,
            ..Default::default()
        },
        None,
    );
    assert_eq!(r.err(), Some(CsError::InvalidParam), "unknown model flag");
    let h = open(&c, 0, 1);
    let g = group("ip");
    assert_eq!(
        h.cpg
            .iteration_initialize(IterationType::OneGroup, None)
            .err(),
        Some(CsError::InvalidParam)
    );
    assert_eq!(
        h.cpg
            .iteration_initialize(IterationType::All, Some(&g))
            .err(),
        Some(CsError::InvalidParam)
    );
    assert_eq!(
        h.cpg
            .iteration_initialize(IterationType::NameOnly, Some(&g))
            .err(),
        Some(CsError::InvalidParam)
    );
    h.cpg.join(&g).unwrap();
    let zb = h.cpg.zcb_alloc(100).unwrap();
    let e = h
        .cpg
        .zcb_mcast_joined(Guarantee::Agreed, zb, 101)
        .unwrap_err();
    assert_eq!(e.error, CsError::InvalidParam, "len beyond the buffer");
    assert!(e.buf.is_some());
    // a buffer of another node (of another cluster)
    let other: C = cluster(1);
    let h9 = open(&other, 0, 1);
    let zb9 = h9.cpg.zcb_alloc(10).unwrap();
    let e = h
        .cpg
        .zcb_mcast_joined(Guarantee::Agreed, zb9, 10)
        .unwrap_err();
    assert_eq!(e.error, CsError::InvalidParam, "buffer from another node");
}

pub fn name_too_long<C: Cluster>() {
    assert_eq!(
        GroupName::new(&[b'x'; 129]).err(),
        Some(CsError::NameTooLong)
    );
    let max = GroupName::new(&[b'x'; 128]).unwrap();
    let c: C = cluster(1);
    let h = open(&c, 0, 1);
    h.cpg.join(&max).unwrap();
    assert!(h.wait_joined(&max));
    // length counts: "GROUP" and "GROUP\0" are different groups (one
    // process may be in both)
    let h2 = open(&c, 0, 2);
    h2.cpg.join(&group("GROUP")).unwrap();
    let h3 = open(&c, 0, 2);
    h3.cpg.join(&group("GROUP\0")).unwrap();
}

pub fn too_big_for_mcast_zcb_alloc_and_zcb_mcast<C: Cluster>() {
    let c = C::start(1, &|c| c.engine.max_message_size = 100_000);
    let g = group("big");
    let h = open(&c, 0, 1);
    h.cpg.join(&g).unwrap();
    let big = vec![1u8; 100_001];
    assert_eq!(send(&h, Guarantee::Agreed, &big), Err(CsError::TooBig));
    let half = vec![1u8; 50_000];
    assert_eq!(
        h.cpg.mcast_joined(
            Guarantee::Agreed,
            &[IoSlice::new(&half), IoSlice::new(&half)]
        ),
        Ok(()),
        "exactly the max"
    );
    assert_eq!(
        h.cpg.mcast_joined(
            Guarantee::Agreed,
            &[IoSlice::new(&half), IoSlice::new(&half), IoSlice::new(b"!")]
        ),
        Err(CsError::TooBig)
    );
    let zmax = 1024 * 1024 + 4096 - 256;
    assert_eq!(
        h.cpg.zcb_alloc(zmax + 1).err(),
        Some(CsError::TooBig),
        "above the largest slot"
    );
    let zb = h.cpg.zcb_alloc(200_000).unwrap();
    let e = h
        .cpg
        .zcb_mcast_joined(Guarantee::Agreed, zb, 150_000)
        .unwrap_err();
    assert_eq!(e.error, CsError::TooBig);
    assert!(h.wait_msgs(1));
}

pub fn no_space_when_membership_array_is_too_small<C: Cluster>() {
    // three members, one per node (over cpgd this process is one pid)
    let c: C = cluster(3);
    let g = group("m");
    let hs: Vec<H> = (0..3).map(|i| open(&c, i, 10 + i as u32)).collect();
    for h in &hs {
        h.cpg.join(&g).unwrap();
    }
    assert!(hs[0].wait_members(&g, 3));
    let outsider = open(&c, 1, 99);
    assert!(until(|| outsider.cpg.membership_get(&g).unwrap().len() == 3));
    let mut small = [MemberAddr::default(); 2];
    let mut needed = 0;
    assert_eq!(
        outsider
            .cpg
            .membership_get_into(&g, &mut small, &mut needed),
        Err(CsError::NoSpace)
    );
    assert_eq!(needed, 3);
    assert_eq!(
        small,
        [MemberAddr::default(); 2],
        "nothing written past or within capacity"
    );
    let mut enough = [MemberAddr::default(); 5];
    assert_eq!(
        outsider
            .cpg
            .membership_get_into(&g, &mut enough, &mut needed),
        Ok(3)
    );
    let expect: Vec<MemberAddr> = hs.iter().map(|h| h.me()).collect();
    assert_eq!(&enough[..3], &expect[..], "sorted by (nodeid, pid)");
    assert_eq!(
        outsider.cpg.membership_get(&group("nobody")).unwrap(),
        vec![],
        "unknown group: empty"
    );
}

pub fn iteration_name_only_one_group_all_and_no_sections<C: Cluster>() {
    // two members of `a` on two nodes (over cpgd this process is one pid)
    let c: C = cluster(2);
    let (a, b) = (group("a"), group("b"));
    let h1 = open(&c, 0, 1);
    let h2 = open(&c, 1, 2);
    let h3 = open(&c, 0, 3);
    h1.cpg.join(&a).unwrap();
    h2.cpg.join(&a).unwrap();
    h3.cpg.join(&b).unwrap();
    assert!(h1.wait_members(&a, 2));
    assert!(h3.wait_joined(&b));
    let names: Vec<_> = h1
        .cpg
        .iteration_initialize(IterationType::NameOnly, None)
        .unwrap()
        .map(|d| (d.group, d.nodeid, d.pid))
        .collect();
    assert_eq!(names, vec![(a.clone(), 0, 0), (b.clone(), 0, 0)]);
    let one: Vec<_> = h1
        .cpg
        .iteration_initialize(IterationType::OneGroup, Some(&a))
        .unwrap()
        .map(|d| MemberAddr {
            nodeid: d.nodeid,
            pid: d.pid,
        })
        .collect();
    assert_eq!(one, vec![h1.me(), h2.me()]);
    let mut all = h1
        .cpg
        .iteration_initialize(IterationType::All, None)
        .unwrap();
    let mut n = 0;
    loop {
        match all.next_entry() {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e, CsError::NoSections, "past the end");
                break;
            }
        }
    }
    assert_eq!(n, 3);
    assert_eq!(all.next_entry(), Err(CsError::NoSections));
    all.finalize().unwrap();
    assert_eq!(
        all.finalize(),
        Err(CsError::BadHandle),
        "iteration finalized twice"
    );
    assert_eq!(all.next_entry(), Err(CsError::BadHandle));
    // a snapshot: later changes are not seen
    let mut snap = h1
        .cpg
        .iteration_initialize(IterationType::OneGroup, Some(&b))
        .unwrap();
    h1.cpg.leave(&a).unwrap();
    h2.cpg.finalize().unwrap();
    assert_eq!(snap.next_entry().map(|d| d.pid), Ok(h3.pid));
    assert_eq!(snap.next_entry(), Err(CsError::NoSections));
}

pub fn local_get_context_and_max_atomic<C: Cluster>() {
    let c: C = cluster(2);
    let h = open(&c, 1, 1);
    assert_eq!(h.cpg.local_get(), Ok(2));
    assert_eq!(h.cpg.max_atomic_msgsize_get(), Ok(1_047_552));
    assert!(h.cpg.context_get().unwrap().is_none());
    h.cpg.context_set(Some(Arc::new(42u32))).unwrap();
    let ctx = h.cpg.context_get().unwrap().unwrap();
    assert_eq!(ctx.downcast_ref::<u32>(), Some(&42));
    // per-handle isolation
    let others: Vec<Cpg> = (0..20)
        .map(|i| {
            c.open_model(0, 100 + i, ModelV1::default(), Some(Arc::new(i)))
                .unwrap()
        })
        .collect();
    for (i, o) in others.iter().enumerate() {
        assert_eq!(
            o.context_get().unwrap().unwrap().downcast_ref::<u32>(),
            Some(&(i as u32))
        );
    }
    // the legacy constructor
    let legacy = c.open_legacy(0, Callbacks::default()).unwrap();
    assert_eq!(legacy.local_get(), Ok(1));
}

pub fn blocked_dispatch_while_another_thread_mcasts_then_finalize_wakes_it<C: Cluster>() {
    let c: C = cluster(2);
    let g = group("cpgbench");
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, _| {
            c2.fetch_add(1, Ordering::SeqCst);
        })),
        ..Default::default()
    };
    let cpg = Arc::new(c.open_model(0, 5, model, None).unwrap());
    let peer = open(&c, 1, 6);
    cpg.join(&g).unwrap();
    peer.cpg.join(&g).unwrap();
    // messages ordered before the peer's own JOIN are not the peer's to
    // deliver: send once it is in
    assert!(peer.wait_members(&g, 2));
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    let s = cpg.clone();
    let total = 2000;
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < total {
            match s.mcast_joined(Guarantee::Agreed, &[IoSlice::new(&[0u8; 100])]) {
                Ok(()) => sent += 1,
                Err(CsError::TryAgain) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
    });
    sender.join().unwrap();
    assert!(
        until(|| count.load(Ordering::SeqCst) == total),
        "blocked dispatcher delivered everything"
    );
    assert!(peer.wait_msgs(total));
    assert!(!dispatcher.is_finished(), "BLOCKING keeps waiting");
    cpg.finalize().unwrap();
    assert_eq!(dispatcher.join().unwrap(), Err(CsError::BadHandle));
    // the peer sees PROCDOWN for the finalized, joined handle
    let gone = MemberAddr {
        nodeid: 1,
        pid: c.pid(5),
    };
    assert!(peer.wait(|e| e
        .iter()
        .any(|e| matches!(e, Ev::Conf { left, .. } if left.contains(&(gone, Reason::ProcDown))))));
}

pub fn finalize_from_another_thread_wakes_dispatch_one<C: Cluster>() {
    let c: C = cluster(1);
    let cpg = Arc::new(c.open_model(0, 1, ModelV1::default(), None).unwrap());
    let d = cpg.clone();
    let t = std::thread::spawn(move || d.dispatch(DispatchFlags::One));
    std::thread::sleep(std::time::Duration::from_millis(50)); // let it block (not needed for correctness)
    cpg.finalize().unwrap();
    assert_eq!(t.join().unwrap(), Err(CsError::BadHandle));
}

pub fn finalize_inside_a_callback_stops_dispatch_with_bad_handle<C: Cluster>() {
    let c: C = cluster(1);
    let g = group("cb");
    let model = ModelV1 {
        confchg: Some(Box::new(|cpg, _| {
            assert_eq!(
                cpg.dispatch(DispatchFlags::All),
                Err(CsError::Busy),
                "no recursive dispatch"
            );
            cpg.finalize().unwrap();
        })),
        ..Default::default()
    };
    let cpg = c.open_model(0, 1, model, None).unwrap();
    cpg.join(&g).unwrap();
    assert_eq!(
        cpg.dispatch(DispatchFlags::Blocking),
        Err(CsError::BadHandle)
    );
}

pub fn slow_consumer_is_evicted_and_the_others_see_procdown<C: Cluster>() {
    // node 1 caps each handle's queue at 96 KiB (messages of at most 16
    // KiB); nodes 2 and 3 keep the default cap. The fast sender and the
    // other member are on two nodes (over cpgd this process is one pid).
    let c = C::start(3, &|c| {
        if c.node_id == 1 {
            small_queues(c, 16 * 1024);
        }
    });
    let g = group("slow");
    let slow = open(&c, 0, 1);
    let fast = Arc::new(open(&c, 1, 2));
    let other = Arc::new(open(&c, 2, 3));
    slow.cpg.join(&g).unwrap();
    fast.cpg.join(&g).unwrap();
    other.cpg.join(&g).unwrap();
    assert!(fast.wait_members(&g, 3));
    assert!(other.wait_members(&g, 3));
    // `slow` never dispatches from here on; `other` dispatches on a thread
    let o = other.clone();
    let dispatcher = std::thread::spawn(move || o.cpg.dispatch(DispatchFlags::Blocking));
    let body = vec![9u8; 1000];
    // 300 KB > 96 KiB (and, over cpgd, the 64 KiB event ring besides)
    let total = 300;
    let mut sent = 0;
    while sent < total {
        match send(&fast, Guarantee::Agreed, &body) {
            Ok(()) => sent += 1,
            Err(CsError::TryAgain) => {
                let _ = fast.cpg.dispatch(DispatchFlags::All);
            }
            Err(e) => panic!("{e}"),
        }
    }
    let slow_addr = slow.me();
    let procdown = |e: &[Ev]| {
        e.iter().any(
            |e| matches!(e, Ev::Conf { left, .. } if left.contains(&(slow_addr, Reason::ProcDown))),
        )
    };
    assert!(fast.wait(procdown), "remote member sees PROCDOWN");
    assert!(
        until(|| procdown(&other.rec.events())),
        "a member dispatching on another thread sees PROCDOWN too"
    );
    assert!(fast.wait_msgs(total), "the ring did not stall");
    assert!(
        until(|| other.rec.msg_count() == total),
        "a consumer that keeps up lost nothing"
    );
    // over cpgd the client hears of its eviction from the daemon, a
    // moment after the others saw its PROCDOWN (what the daemon wrote for
    // it before is still dispatched)
    assert!(until(
        || slow.cpg.dispatch(DispatchFlags::All) == Err(CsError::Library)
    ));
    assert_eq!(send(&slow, Guarantee::Agreed, b"x"), Err(CsError::Library));
    assert_eq!(slow.cpg.join(&g), Err(CsError::Library));
    assert_eq!(slow.cpg.local_get(), Err(CsError::Library));
    assert_eq!(c.probe(0).stats().evictions, 1);
    assert_eq!(c.probe(1).stats().evictions, 0);
    assert_eq!(c.probe(2).stats().evictions, 0);
    assert_eq!(
        slow.cpg.finalize(),
        Ok(()),
        "an evicted handle can still be finalized"
    );
    other.cpg.finalize().unwrap();
    assert_eq!(dispatcher.join().unwrap(), Err(CsError::BadHandle));
}

pub fn library_after_the_node_stops<C: Cluster>() {
    let mut c: C = cluster(1);
    let h = open(&c, 0, 1);
    h.cpg.join(&group("x")).unwrap();
    c.stop(0);
    assert_eq!(h.cpg.dispatch(DispatchFlags::All), Err(CsError::Library));
    assert_eq!(send(&h, Guarantee::Agreed, b"x"), Err(CsError::Library));
    assert_eq!(h.cpg.finalize(), Ok(()));
}

pub fn killed_node_gives_nodedown_and_survivors_keep_delivering<C: Cluster>() {
    let mut c: C = cluster(3);
    let g = group("nd");
    let hs = join_all(&c, 3, 50, &g);
    let (survivors, victim): (Vec<_>, Vec<_>) = hs
        .into_iter()
        .partition(|h| h.cpg.local_get().unwrap() != 3);
    c.kill(2);
    drop(victim);
    for h in &survivors {
        assert!(h.wait(|e| e.iter().any(|e| matches!(e, Ev::Conf { left, .. } if left.iter().any(|(m, r)| m.nodeid == 3 && *r == Reason::NodeDown)))));
    }
    send(&survivors[0], Guarantee::Safe, b"after").unwrap();
    for h in &survivors {
        assert!(h.wait(|e| e
            .iter()
            .any(|e| matches!(e, Ev::Msg { data, .. } if data == b"after"))));
    }
}

/// One step of the zero-copy proof: `hs[0]`, a handle on node 0,
/// multicasts a zero-copy buffer of `size` bytes (a pattern drawn from
/// `k`) while node 0 records the sends that read from driver buffers;
/// once every handle delivered it intact, where node 0 sent the buffer's
/// payload from and the sends recorded.
fn zcb_send_recorded<C: Cluster>(c: &C, hs: &[H], k: usize, size: usize) -> (usize, Vec<BufSend>) {
    let mut zb = loop {
        match hs[0].cpg.zcb_alloc(size) {
            Ok(b) => break b,
            Err(CsError::TryAgain) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(e) => panic!("zcb_alloc({size}): {e}"),
        }
    };
    for (i, b) in zb.iter_mut().enumerate() {
        *b = (i * 31 + k) as u8;
    }
    let expect = zb.to_vec();
    let start = c.sent_from(0, zb.as_ptr() as usize);
    let probe = c.probe(0);
    probe.record_buf_sends(true);
    hs[0]
        .cpg
        .zcb_mcast_joined(Guarantee::Agreed, zb, size)
        .unwrap();
    for h in hs {
        assert!(
            h.wait(|e| e
                .iter()
                .any(|e| matches!(e, Ev::Msg { data, .. } if *data == expect))),
            "size {size}"
        );
    }
    let sends = probe.buf_sends();
    probe.record_buf_sends(false);
    (start, sends)
}

pub fn zero_copy_sends_read_from_inside_the_buffer<C: Cluster>() {
    let c: C = cluster(3);
    let g = group("zc");
    let hs = join_all(&c, 3, 1, &g);
    let threshold = cpg_std::config::ZC_COPY_THRESHOLD_DEFAULT;
    for (k, size) in [100usize, 1024, 1400, threshold, 300_000, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let (start, sends) = zcb_send_recorded(&c, &hs, k, size);
        let sends: Vec<_> = sends
            .into_iter()
            .filter(|s| s.read_addr >= start - 256 && s.read_addr < start + size)
            .collect();
        if size >= threshold {
            assert!(
                !sends.is_empty(),
                "size {size}: no send read from the zcb buffer"
            );
            let covered: usize = sends.iter().map(|s| s.read_len).sum();
            assert!(
                covered >= size,
                "size {size}: the whole payload was sent from the buffer"
            );
        }
        for s in &sends {
            assert!(
                s.read_addr >= s.buf_addr && s.read_addr + s.read_len <= s.buf_addr + s.buf_len,
                "read outside the buffer"
            );
            assert!(
                s.buf_addr <= start && start + size <= s.buf_addr + s.buf_len,
                "the buffer is the zcb slot"
            );
        }
        if size < threshold {
            assert!(sends.is_empty(), "small zcb messages are packed by copy");
        }
    }
}

pub fn a_sender_outrunning_its_own_dispatch_gets_try_again_not_eviction<C: Cluster>() {
    // a 96 KiB queue cap; the handle multicasts without dispatching
    let cap = 96 * 1024;
    let (c, h, _g) = one_node_joined::<C>(16 * 1024, "backpressure");
    let body = vec![7u8; 1000];
    let (mut accepted, mut refused) = (0usize, 0usize);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while refused < 100 && std::time::Instant::now() < end {
        match send(&h, Guarantee::Agreed, &body) {
            Ok(()) => accepted += 1,
            Err(CsError::TryAgain) => {
                refused += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("{e} after {accepted} accepted"),
        }
    }
    assert!(refused > 0, "back-pressure never answered TRY_AGAIN");
    assert!(
        accepted * 1000 < cap + c.ring_bytes(),
        "{accepted} accepted past the cap"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(c.probe(0).stats().evictions, 0, "the sender was evicted");
    assert!(h.wait_msgs(accepted), "an accepted message was lost");
    // dispatching frees the queue: sends are accepted again
    assert_eq!(send(&h, Guarantee::Agreed, &body), Ok(()));
    assert!(h.wait_msgs(accepted + 1));
}

/// A message of `max_message_size` is taken on every send path (copied,
/// through a pool buffer, and zcb) by a handle with the smallest queue cap
/// that allows it: the staged paths must not refuse it forever. (A
/// message can no longer be larger than half the cap: the cap holds two of
/// the largest and 64 KiB.)
pub fn a_maximum_size_message_is_accepted_on_every_send_path<C: Cluster>() {
    let (c, h, _g) = one_node_joined::<C>(40 * 1024, "big");
    let retry = |f: &dyn Fn() -> Result<(), CsError>| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match f() {
                Err(CsError::TryAgain) if std::time::Instant::now() < end => {
                    std::thread::sleep(std::time::Duration::from_millis(2))
                }
                r => return r,
            }
        }
    };
    // 12 KiB (staged copy path), 40 KiB (pool-buffer copy path)
    for (k, size) in [12 * 1024usize, 40 * 1024].into_iter().enumerate() {
        let body = vec![k as u8 + 1; size];
        assert_eq!(
            retry(&|| send(&h, Guarantee::Agreed, &body)),
            Ok(()),
            "copy {size}"
        );
        assert!(h.wait_msgs(k + 1), "copy {size} not delivered");
        assert_eq!(h.rec.msgs()[k], body);
    }
    // 40 KiB zcb (staged zero-copy path)
    let r = retry(&|| {
        let mut b = h.cpg.zcb_alloc(40 * 1024)?;
        b.fill(9);
        h.cpg
            .zcb_mcast_joined(Guarantee::Agreed, b, 40 * 1024)
            .map_err(|e| e.error)
    });
    assert_eq!(r, Ok(()), "zcb 40 KiB");
    assert!(h.wait_msgs(3), "zcb 40 KiB not delivered");
    assert_eq!(h.rec.msgs()[2], vec![9u8; 40 * 1024]);
    assert_eq!(c.probe(0).stats().evictions, 0);
}

/// One thread multicasts (copied and zcb, small and large) as fast as it
/// can while another leaves the group: every multicast answered CS_OK is
/// delivered to the sender before its own leave, none after; the others
/// answer TRY_AGAIN or NOT_EXIST. (A message staged while the leave was
/// being submitted used to be CS_OK and then refused by the engine.)
pub fn multicasts_racing_a_leave_are_delivered_before_it_or_refused<C: Cluster>() {
    for round in 0..3u8 {
        let c: C = cluster(1);
        let g = group("race");
        let h = Arc::new(open(&c, 0, 1));
        h.cpg.join(&g).unwrap();
        assert!(h.wait_members(&g, 1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let sender = {
            let (h, stop, started) = (h.clone(), stop.clone(), started.clone());
            std::thread::spawn(move || {
                let mut accepted = 0u32;
                let mut k = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let size = [16usize, 3000, 20_000][(k % 3) as usize];
                    let mut body = vec![round; size];
                    body[..4].copy_from_slice(&k.to_le_bytes());
                    let r = if k % 2 == 0 {
                        send(&h, Guarantee::Agreed, &body)
                    } else {
                        h.cpg.zcb_alloc(size).and_then(|mut b| {
                            b.copy_from_slice(&body);
                            h.cpg
                                .zcb_mcast_joined(Guarantee::Agreed, b, size)
                                .map_err(|e| e.error)
                        })
                    };
                    match r {
                        Ok(()) => {
                            accepted += 1;
                            started.store(1, Ordering::Relaxed);
                        }
                        Err(CsError::TryAgain) => std::thread::yield_now(),
                        Err(CsError::NotExist) => break,
                        Err(e) => panic!("mcast: {e}"),
                    }
                }
                accepted
            })
        };
        // the sender is under way (a loaded machine may start it late)
        assert!(until(|| started.load(Ordering::Relaxed) > 0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match h.cpg.leave(&g) {
                Ok(()) => break,
                Err(CsError::TryAgain) if std::time::Instant::now() < end => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("leave: {e}"),
            }
        }
        // wait for the own leave, then stop the sender
        let me = h.me();
        let gb = g.as_bytes().to_vec();
        assert!(h.wait(|e| e.iter().any(|e| matches!(e, Ev::Conf { group, left, .. } if *group == gb && left.iter().any(|(m, _)| *m == me)))));
        stop.store(true, Ordering::Relaxed);
        let accepted = sender.join().unwrap() as usize;
        let evs = h.rec.events();
        let leave_at = evs
            .iter()
            .position(|e| matches!(e, Ev::Conf { left, .. } if left.iter().any(|(m, _)| *m == me)))
            .unwrap();
        let before = evs[..leave_at]
            .iter()
            .filter(|e| matches!(e, Ev::Msg { .. }))
            .count();
        let after = evs[leave_at..]
            .iter()
            .filter(|e| matches!(e, Ev::Msg { .. }))
            .count();
        assert_eq!(
            before, accepted,
            "round {round}: CS_OK multicasts delivered before the leave"
        );
        assert_eq!(
            after, 0,
            "round {round}: a multicast delivered after the own leave"
        );
        assert!(
            accepted > 0,
            "round {round}: nothing was sent before the leave"
        );
    }
}

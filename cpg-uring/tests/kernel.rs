//! Real-kernel tests on loopback (127.0.0.1, ephemeral ports). Each test
//! probes io_uring first and skips with a printed reason when it is missing
//! (io-uring-test's `require!`). Every wait has a generous deadline: the
//! loops stop on their own, never sleep-and-hope.
#![cfg(target_os = "linux")]

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration as StdDuration;

use cpg_core::engine::{
    Dest, Engine, EngineOptions, Event, FrameBuf, FrameRef, Request, State, Transmit,
};
use cpg_core::limits::Config;
use cpg_core::{Duration, GroupName, Guarantee, Instant, NodeId};
use cpg_uring::{
    now, Counters, Driver, Host, Input, Outputs, RxBuf, SlotAlloc, Snapshot, TransportConfig,
    Waker, ZeroCopy,
};

/// Skip (return false, print why) unless io_uring has what the driver needs.
fn require_uring() -> bool {
    match cpg_uring::probe() {
        Ok(p) if p.missing().is_empty() => {
            eprintln!("io_uring probe: {p}");
            true
        }
        Ok(p) => {
            eprintln!("SKIP: io_uring lacks {:?} ({p})", p.missing());
            false
        }
        Err(e) => {
            eprintln!("SKIP: io_uring unavailable: {e}");
            false
        }
    }
}

macro_rules! require {
    () => {
        if !require_uring() {
            return;
        }
    };
}

fn lo() -> SocketAddrV4 {
    "127.0.0.1:0".parse().unwrap()
}

/// A driver on loopback; without GSO, as most tests here count each
/// send path per frame (`gso_config` turns it on).
fn config(id: NodeId, zc: ZeroCopy) -> TransportConfig {
    let mut c = TransportConfig::new(id, lo(), vec![]);
    c.zerocopy = zc;
    c.gso = false;
    c
}

fn gso_config(id: NodeId, zc: ZeroCopy) -> TransportConfig {
    TransportConfig {
        gso: true,
        ..config(id, zc)
    }
}

/// Drivers on ephemeral loopback ports, each knowing all the others.
fn cluster(cfgs: Vec<TransportConfig>) -> Vec<Driver> {
    let mut ds: Vec<Driver> = cfgs
        .into_iter()
        .map(|c| Driver::new(c).expect("driver"))
        .collect();
    let all: Vec<(NodeId, SocketAddr)> = ds.iter().map(|d| (d.node_id(), d.local_addr())).collect();
    for d in &mut ds {
        d.set_peers(&all).unwrap();
    }
    ds
}

/// A frame with a recognisable pattern: seq in the first 4 bytes.
fn pattern(seq: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
    if len >= 4 {
        v[..4].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

fn check_pattern(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    let seq = u32::from_le_bytes(b[..4].try_into().unwrap());
    (pattern(seq, b.len()) == b).then_some(seq)
}

/// What a test host does; `Log` is shared with the test thread.
#[derive(Default)]
struct Log {
    received: Vec<(NodeId, u32, usize)>,
    timeouts: Vec<Instant>,
    wakes: usize,
    bad: usize,
}

struct TestHost {
    peer: NodeId,
    /// Frames to send at Start.
    start: Vec<FrameRef<RxBuf>>,
    /// Echo every k-th received frame back by reference (k = 0: never), of
    /// the frames whose seq lies in `echo_range` (the peer's originals).
    echo_every: u32,
    echo_range: std::ops::Range<u32>,
    /// Hold received frames up to this many, then drop them on a timer.
    hold_max: usize,
    held: Vec<RxBuf>,
    /// Stop once this many frames arrived (and `extra_stop` agrees).
    expect: usize,
    extra_stop: Option<Box<dyn Fn() -> bool + Send>>,
    give_up: Instant,
    log: Arc<Mutex<Log>>,
    done: bool,
}

impl TestHost {
    fn new(peer: NodeId, expect: usize, log: Arc<Mutex<Log>>) -> TestHost {
        TestHost {
            peer,
            start: Vec::new(),
            echo_every: 0,
            echo_range: 0..0,
            hold_max: 0,
            held: Vec::new(),
            expect,
            extra_stop: None,
            give_up: Instant(now().0 + 20_000_000_000),
            log,
            done: false,
        }
    }
}

impl Host for TestHost {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        match input {
            Input::Start => {
                for f in self.start.drain(..) {
                    out.transmits.push(Transmit {
                        dest: Dest::Node(self.peer),
                        frame: f,
                    });
                }
            }
            Input::Packet { from, frame } => {
                let mut log = self.log.lock().unwrap();
                match check_pattern(frame.as_ref()) {
                    Some(seq) => log.received.push((from, seq, frame.len())),
                    None => log.bad += 1,
                }
                let seq = check_pattern(frame.as_ref()).unwrap_or(0);
                drop(log);
                if self.echo_every > 0
                    && seq % self.echo_every == 0
                    && self.echo_range.contains(&seq)
                {
                    // Re-send the received buffer itself (FrameRef::Rx).
                    out.transmits.push(Transmit {
                        dest: Dest::Node(from),
                        frame: FrameRef::Rx(frame.clone()),
                    });
                }
                if self.hold_max > 0 {
                    self.held.push(frame);
                    if self.held.len() == self.hold_max {
                        out.next_timeout = Some(Instant(t.0 + 50_000_000));
                    }
                }
            }
            Input::Timeout => {
                self.log.lock().unwrap().timeouts.push(t);
                self.held.clear();
                out.next_timeout = None;
            }
            Input::Wake => self.log.lock().unwrap().wakes += 1,
        }
        if self.hold_max == 0 || out.next_timeout.is_none() {
            // Wake up at the give-up time at the latest.
            if out.next_timeout.is_none() {
                out.next_timeout = Some(self.give_up);
            }
        }
        if t >= self.give_up {
            self.done = true;
        }
    }
    /// Send completions do not call `step`, so the condition is checked here.
    fn should_stop(&self) -> bool {
        let n = self.log.lock().unwrap().received.len();
        self.done || (n >= self.expect && self.extra_stop.as_ref().is_none_or(|f| f()))
    }
}

fn run_pair(
    mut a: Driver,
    mut ha: TestHost,
    mut b: Driver,
    mut hb: TestHost,
) -> (Driver, TestHost, Driver, TestHost) {
    let tb = thread::spawn(move || {
        b.run(&mut hb).unwrap();
        (b, hb)
    });
    a.run(&mut ha).unwrap();
    let (b, hb) = tb.join().unwrap();
    (a, ha, b, hb)
}

fn slot_frame(slots: &SlotAlloc, seq: u32, len: usize) -> FrameRef<RxBuf> {
    let mut buf = slots.alloc(len).unwrap();
    let h = slots.headroom();
    buf.unique_mut().unwrap()[h..h + len].copy_from_slice(&pattern(seq, len));
    FrameRef::Slot {
        buf,
        range: h..h + len,
    }
}

fn gather_frame(slots: &SlotAlloc, seq: u32, len: usize) -> FrameRef<RxBuf> {
    let p = pattern(seq, len);
    let split = 100.min(len);
    let mut buf = slots.alloc(len).unwrap();
    let h = slots.headroom();
    buf.unique_mut().unwrap()[h..h + len - split].copy_from_slice(&p[split..]);
    FrameRef::Gather {
        head: Arc::from(&p[..split]),
        buf,
        range: h..h + len - split,
    }
}

/// Frames of every source kind: heap, pool slot, gather.
/// 100 mixed frames each way between two connected drivers: each side
/// receives the other's, in order, none bad; the drivers back.
fn exchange_mixed(a: Driver, b: Driver) -> (Driver, Driver) {
    let (la, lb) = (
        Arc::new(Mutex::new(Log::default())),
        Arc::new(Mutex::new(Log::default())),
    );
    let mut ha = TestHost::new(2, 100, la.clone());
    ha.start = mixed_frames(&a.slots(), 0, 100);
    let mut hb = TestHost::new(1, 100, lb.clone());
    hb.start = mixed_frames(&b.slots(), 10_000, 100);
    let (a, _, b, _) = run_pair(a, ha, b, hb);
    let ra: Vec<u32> = la.lock().unwrap().received.iter().map(|r| r.1).collect();
    let rb: Vec<u32> = lb.lock().unwrap().received.iter().map(|r| r.1).collect();
    assert_eq!(ra, (10_000..10_100).collect::<Vec<_>>());
    assert_eq!(rb, (0..100).collect::<Vec<_>>());
    assert_eq!((la.lock().unwrap().bad, lb.lock().unwrap().bad), (0, 0));
    (a, b)
}

fn mixed_frames(slots: &SlotAlloc, base: u32, n: u32) -> Vec<FrameRef<RxBuf>> {
    (0..n)
        .map(|i| {
            let seq = base + i;
            let len = [64usize, 1400, 9000, 30_000][(i % 4) as usize];
            match i % 3 {
                0 => FrameRef::Own(Arc::from(pattern(seq, len))),
                1 => slot_frame(slots, seq, len.min(1700)),
                _ => gather_frame(slots, seq, len.min(1700)),
            }
        })
        .collect()
}

/// (from, seq, len) of each frame a host received.
type Received = Vec<(NodeId, u32, usize)>;

fn exchange(zc: ZeroCopy) -> (Snapshot, Snapshot, Received, Received) {
    exchange_with(zc, frames_of_every_kind, config)
}

/// Frames of every kind (`mixed_frames`).
fn frames_of_every_kind(slots: &SlotAlloc, base: u32, n: u32) -> Vec<FrameRef<RxBuf>> {
    mixed_frames(slots, base, n)
}

/// Runs of 12 frames of every kind, 11 of one size and a shorter last:
/// what GSO batches (1,472 B then 300 B, and 700 B then 64 B, in turn).
fn gso_runs(slots: &SlotAlloc, base: u32, n: u32) -> Vec<FrameRef<RxBuf>> {
    (0..n)
        .map(|i| {
            let seq = base + i;
            let (seg, last) = if (i / 12) % 2 == 0 {
                (1472, 300)
            } else {
                (700, 64)
            };
            let len = if i % 12 == 11 { last } else { seg };
            match i % 3 {
                0 => FrameRef::Own(Arc::from(pattern(seq, len))),
                1 => slot_frame(slots, seq, len),
                _ => gather_frame(slots, seq, len),
            }
        })
        .collect()
}

fn exchange_with(
    zc: ZeroCopy,
    frames: fn(&SlotAlloc, u32, u32) -> Vec<FrameRef<RxBuf>>,
    config: fn(NodeId, ZeroCopy) -> TransportConfig,
) -> (Snapshot, Snapshot, Received, Received) {
    const N: u32 = 120;
    // No copy-out under receive-buffer pressure: a dry ring must be survived
    // by ENOBUFS and re-arming (the datagrams wait in the socket).
    let mk = |id| {
        let mut c = config(id, zc);
        c.rx_copy_below = 0;
        c
    };
    let mut ds = cluster(vec![mk(1), mk(2)]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let (ca, cb) = (a.counters(), b.counters());
    let (la, lb) = (
        Arc::new(Mutex::new(Log::default())),
        Arc::new(Mutex::new(Log::default())),
    );
    // Each side gets its N frames plus echoes of every 10th of its own.
    let expect = (N + N / 10) as usize;
    let mut ha = TestHost::new(2, expect, la.clone());
    ha.start = frames(&a.slots(), 0, N);
    ha.echo_every = 10;
    ha.echo_range = 10_000..20_000;
    let mut hb = TestHost::new(1, expect, lb.clone());
    hb.start = frames(&b.slots(), 10_000, N);
    hb.echo_every = 10;
    hb.echo_range = 0..10_000;
    // Also wait until every send of this side is fully released.
    let (ca2, cb2) = (ca.clone(), cb.clone());
    let settled = |c: &Arc<Counters>| {
        let s = c.snapshot();
        s.zc_notifications
            == s.sends_zc_fixed + s.sends_zc_heap + s.sends_gather_zc + s.gso_sends_zc
            && s.frames_sent + s.send_errors
                == s.sends_zc_fixed
                    + s.sends_zc_heap
                    + s.sends_gather_zc
                    + s.sends_write_fixed
                    + s.sends_plain
                    + s.sends_gather
                    + s.gso_datagrams
    };
    ha.extra_stop = Some(Box::new(move || settled(&ca2)));
    hb.extra_stop = Some(Box::new(move || settled(&cb2)));
    let t0 = std::time::Instant::now();
    let (a, _ha, b, _hb) = run_pair(a, ha, b, hb);
    eprintln!("exchange {zc:?} took {:?}", t0.elapsed());
    let ra = la.lock().unwrap().received.clone();
    let rb = lb.lock().unwrap().received.clone();
    assert_eq!(la.lock().unwrap().bad, 0);
    assert_eq!(lb.lock().unwrap().bad, 0);
    // Every slot is back in the pool: sends released them.
    assert_eq!(a.slots().stats().in_use(), 0, "slots leaked on a");
    assert_eq!(b.slots().stats().in_use(), 0, "slots leaked on b");
    assert_eq!(a.sends_in_flight(), 0);
    (ca.snapshot(), cb.snapshot(), ra, rb)
}

fn check_exchange(ra: &[(NodeId, u32, usize)], rb: &[(NodeId, u32, usize)]) {
    // a got b's frames 10_000.. and echoes of its own 0, 10, ...
    let from_b: Vec<u32> = ra.iter().filter(|r| r.1 >= 10_000).map(|r| r.1).collect();
    let echoes: Vec<u32> = ra.iter().filter(|r| r.1 < 10_000).map(|r| r.1).collect();
    assert_eq!(
        from_b,
        (10_000..10_120).collect::<Vec<_>>(),
        "a lost or reordered frames"
    );
    assert_eq!(echoes, (0..120).step_by(10).collect::<Vec<_>>());
    let from_a: Vec<u32> = rb.iter().filter(|r| r.1 < 10_000).map(|r| r.1).collect();
    assert_eq!(
        from_a,
        (0..120).collect::<Vec<_>>(),
        "b lost or reordered frames"
    );
    assert!(
        ra.iter().all(|r| r.0 == 2) && rb.iter().all(|r| r.0 == 1),
        "from resolved wrongly"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn probe_reports_features() {
    require!();
    let p = cpg_uring::probe().unwrap();
    println!("{p}");
    assert!(p.recvmsg && p.buf_ring);
}

#[test]
#[cfg_attr(miri, ignore)]
fn exchange_both_ways_zerocopy_never() {
    require!();
    let (sa, sb, ra, rb) = exchange(ZeroCopy::Never);
    check_exchange(&ra, &rb);
    eprintln!("a: {sa:?}");
    for s in [sa, sb] {
        assert_eq!(s.sends_zc_fixed + s.sends_zc_heap + s.sends_gather_zc, 0);
        assert!(s.sends_plain > 0, "heap frames go by Send");
        assert!(
            s.sends_write_fixed > 0,
            "slot frames and echoes go by WriteFixed"
        );
        assert!(s.sends_gather > 0);
        assert_eq!(s.bytes_copied, 0, "no user-space copy on the io_uring path");
        assert_eq!(s.send_errors, 0);
        assert_eq!(s.bad_completions, 0);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn exchange_both_ways_zerocopy_always() {
    require!();
    if !cpg_uring::probe().unwrap().send_zc {
        eprintln!("SKIP: no SendZc");
        return;
    }
    let (sa, sb, ra, rb) = exchange(ZeroCopy::Always);
    check_exchange(&ra, &rb);
    eprintln!("a: {sa:?}");
    for s in [sa, sb] {
        assert_eq!(s.sends_plain + s.sends_write_fixed + s.sends_gather, 0);
        assert!(s.sends_zc_fixed > 0 && s.sends_zc_heap > 0 && s.sends_gather_zc > 0);
        assert_eq!(
            s.zc_notifications,
            s.sends_zc_fixed + s.sends_zc_heap + s.sends_gather_zc
        );
        assert_eq!(s.bytes_copied, 0);
        assert_eq!(s.send_errors, 0);
        assert_eq!(s.bad_completions, 0);
    }
}

/// Runs of same-size frames of every source kind (heap, pool slot,
/// gather) go out as GSO sends, copying and zero-copy: every frame
/// arrives intact, in order, as a datagram of its own; every slot comes
/// back after the send that read it.
#[test]
#[cfg_attr(miri, ignore)]
fn gso_sends_runs_of_frames_as_their_datagrams() {
    require!();
    if !Driver::new(gso_config(1, ZeroCopy::Never))
        .unwrap()
        .gso_enabled()
    {
        eprintln!("SKIP: no UDP_SEGMENT here");
        return;
    }
    let mut modes = vec![ZeroCopy::Never];
    if cpg_uring::probe().unwrap().sendmsg_zc {
        modes.push(ZeroCopy::Always);
    }
    for zc in modes {
        let (sa, sb, ra, rb) = exchange_with(zc, gso_runs, gso_config);
        check_exchange(&ra, &rb);
        eprintln!("gso {zc:?} a: {sa:?}");
        // the lengths arrive as sent: each datagram is exactly one frame
        let lens = |r: &[(NodeId, u32, usize)]| -> Vec<usize> {
            r.iter().filter(|x| x.1 >= 10_000).map(|x| x.2).collect()
        };
        let sent: Vec<usize> = gso_runs(&Driver::new(config(9, zc)).unwrap().slots(), 0, 120)
            .iter()
            .map(|f| match f {
                FrameRef::Own(b) => b.len(),
                FrameRef::Slot { range, .. } => range.len(),
                FrameRef::Gather { head, range, .. } => head.len() + range.len(),
                FrameRef::Rx(b) => b.len(),
            })
            .collect();
        assert_eq!(lens(&ra), sent);
        for s in [sa, sb] {
            // 120 frames in runs of 12: 10 GSO sends (the echoes, one a
            // step, go alone)
            assert_eq!(s.gso_sends, 10, "{s:?}");
            assert_eq!(s.gso_datagrams, 120);
            if zc == ZeroCopy::Always {
                // a run over the skb's page limit goes copying
                assert_eq!(s.gso_sends_zc + s.zc_over_frags, 10);
                assert!(s.gso_sends_zc > 0);
            } else {
                assert_eq!(s.gso_sends_zc, 0);
            }
            assert_eq!(s.gso_fallbacks, 0);
            assert_eq!(s.send_errors, 0);
            assert_eq!(s.bad_completions, 0);
            assert_eq!(s.bytes_copied, 0, "no user-space copy on the GSO path");
        }
    }
}

/// GSO off (the config switch): the same runs go one datagram per send.
#[test]
#[cfg_attr(miri, ignore)]
fn gso_off_sends_one_datagram_per_send() {
    require!();
    let (sa, sb, ra, rb) = exchange_with(ZeroCopy::Never, gso_runs, config);
    check_exchange(&ra, &rb);
    for s in [sa, sb] {
        assert_eq!((s.gso_sends, s.gso_datagrams), (0, 0));
        assert_eq!(s.frames_sent, 120 + 12);
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn multishot_rearms_after_buffer_exhaustion_and_buffers_return() {
    require!();
    let mut ca = config(1, ZeroCopy::Never);
    let mut cb = config(2, ZeroCopy::Never);
    for c in [&mut ca, &mut cb] {
        c.rx_buffers = 8;
        c.rx_copy_below = 0; // never copy out: let the ring run dry
    }
    let mut ds = cluster(vec![ca, cb]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let lb = Arc::new(Mutex::new(Log::default()));
    let mut ha = TestHost::new(2, 0, Arc::new(Mutex::new(Log::default())));
    ha.start = (0..40)
        .map(|s| FrameRef::Own(Arc::from(pattern(s, 200))))
        .collect();
    let c2 = a.counters();
    ha.extra_stop = Some(Box::new(move || c2.snapshot().frames_sent == 40));
    let mut hb = TestHost::new(1, 40, lb.clone());
    hb.hold_max = 8; // hold every frame until 8 are held, release them 50 ms later
    let cnt = b.counters();
    let (_a, _ha, b, hb) = run_pair(a, ha, b, hb);
    let log = lb.lock().unwrap();
    let seqs: Vec<u32> = log.received.iter().map(|r| r.1).collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    let s = cnt.snapshot();
    eprintln!("{s:?}");
    assert!(s.rx_buffer_exhausted >= 1, "the ring never ran dry");
    assert!(
        s.recv_rearms >= 1,
        "the multishot receive was never re-armed"
    );
    assert!(log.timeouts.len() >= 4);
    drop(log);
    drop(hb); // drops the frames still held
              // Buffers come back on the next batch: run one short loop to recycle.
    let mut b = b;
    struct Once(bool);
    impl Host for Once {
        fn step(&mut self, _: Instant, _: Input, _: &mut Outputs) {
            self.0 = true;
        }
        fn should_stop(&self) -> bool {
            self.0
        }
    }
    b.waker().wake();
    b.run(&mut Once(false)).unwrap();
    assert_eq!(
        b.rx_available(),
        Some(8),
        "every receive buffer is back with the kernel"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn multishot_survives_many_packets() {
    require!();
    const N: u32 = 5000;
    let mut ds = cluster(vec![config(1, ZeroCopy::Never), config(2, ZeroCopy::Never)]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let lb = Arc::new(Mutex::new(Log::default()));
    let mut ha = TestHost::new(2, 0, Arc::new(Mutex::new(Log::default())));
    ha.start = (0..N)
        .map(|s| FrameRef::Own(Arc::from(pattern(s, 64))))
        .collect();
    let ca = a.counters();
    let c2 = ca.clone();
    ha.extra_stop = Some(Box::new(move || c2.snapshot().frames_sent == u64::from(N)));
    let mut hb = TestHost::new(1, N as usize, lb.clone());
    hb.give_up = Instant(now().0 + 10_000_000_000);
    let cb = b.counters();
    run_pair(a, ha, b, hb);
    let got = lb.lock().unwrap().received.len();
    let (sa, sb) = (ca.snapshot(), cb.snapshot());
    eprintln!("sent {} received {got}; rx: {sb:?}", sa.frames_sent);
    assert_eq!(sa.frames_sent, u64::from(N));
    // Loopback UDP may drop only if the socket buffer overflows; with 8 MiB
    // it should not, but allow a small loss rather than be flaky.
    assert!(got as u32 >= N * 99 / 100, "received only {got} of {N}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn timer_fires_and_moves_when_the_deadline_changes() {
    require!();
    let d = Driver::new(config(1, ZeroCopy::Never)).unwrap();
    struct T {
        start: Option<Instant>,
        woken: Option<Instant>,
        fired: Vec<Instant>,
        wakes: usize,
    }
    impl Host for T {
        fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
            match input {
                Input::Start => {
                    self.start = Some(t);
                    out.next_timeout = Some(t + Duration::from_millis(10_000)); // far away
                }
                Input::Wake => {
                    self.wakes += 1;
                    self.woken = Some(t);
                    out.next_timeout = Some(t + Duration::from_millis(30)); // moved nearer
                }
                Input::Timeout => {
                    self.fired.push(t);
                    out.next_timeout = None;
                }
                Input::Packet { .. } => {}
            }
        }
        fn should_stop(&self) -> bool {
            !self.fired.is_empty()
        }
    }
    let mut d = d;
    let w = d.waker();
    let h = thread::spawn(move || {
        thread::sleep(StdDuration::from_millis(20));
        w.wake();
    });
    let mut host = T {
        start: None,
        woken: None,
        fired: vec![],
        wakes: 0,
    };
    d.run(&mut host).unwrap();
    h.join().unwrap();
    let elapsed = host.fired[0] - host.start.unwrap();
    let after_wake = host.fired[0] - host.woken.unwrap();
    assert_eq!(host.fired.len(), 1);
    assert!(host.wakes >= 1);
    // The moved deadline (wake + 30 ms) fired, not the first one (start + 10 s).
    assert!(after_wake >= Duration::from_millis(30), "{after_wake:?}");
    assert!(elapsed < Duration::from_millis(5000), "{elapsed:?}");
    assert_eq!(d.counters().snapshot().timeouts_fired, 1);
}

#[test]
#[cfg_attr(miri, ignore)]
fn wake_from_another_thread_stops_the_loop() {
    require!();
    let mut d = Driver::new(config(1, ZeroCopy::Never)).unwrap();
    struct W(Arc<AtomicBool>, usize);
    impl Host for W {
        fn step(&mut self, _: Instant, input: Input, _: &mut Outputs) {
            if let Input::Wake = input {
                self.1 += 1;
            }
        }
        fn should_stop(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s2) = (d.waker(), stop.clone());
    let h = thread::spawn(move || {
        for _ in 0..3 {
            thread::sleep(StdDuration::from_millis(10));
            w.wake();
        }
        s2.store(true, Ordering::Release);
        w.wake();
    });
    let mut host = W(stop, 0);
    let t0 = std::time::Instant::now();
    d.run(&mut host).unwrap(); // no timeout armed: only a wake can end this
    h.join().unwrap();
    assert!(host.1 >= 1);
    assert!(t0.elapsed() < StdDuration::from_secs(10));
}

#[test]
#[cfg_attr(miri, ignore)]
fn send_zc_notif_releases_slots_only_after_notification() {
    require!();
    if !cpg_uring::probe().unwrap().send_zc {
        eprintln!("SKIP: no SendZc");
        return;
    }
    let mut ds = cluster(vec![
        config(1, ZeroCopy::Always),
        config(2, ZeroCopy::Never),
    ]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let slots = a.slots();
    let lb = Arc::new(Mutex::new(Log::default()));
    let mut ha = TestHost::new(2, 0, Arc::new(Mutex::new(Log::default())));
    let frames: Vec<FrameRef<RxBuf>> = (0..20).map(|s| slot_frame(&slots, s, 1500)).collect();
    // Keep one extra handle so the test can watch its slot's state.
    let watched = frames[0].buf().unwrap().clone();
    let id = watched.slot_id().unwrap();
    ha.start = frames;
    let ca = a.counters();
    let c2 = ca.clone();
    ha.extra_stop = Some(Box::new(move || {
        let s = c2.snapshot();
        s.sends_zc_fixed == 20 && s.zc_notifications == 20
    }));
    ha.expect = 0;
    let hb = TestHost::new(1, 20, lb.clone());
    let (a, _ha, _b, _hb) = run_pair(a, ha, b, hb);
    assert_eq!(lb.lock().unwrap().received.len(), 20);
    let s = ca.snapshot();
    assert_eq!((s.sends_zc_fixed, s.zc_notifications), (20, 20));
    // Notifications are in: the pool counted the send done, but the slot is
    // still InFlight (not stable) because the test holds a handle.
    assert_eq!(
        slots.state(id),
        Ok(cpg_core::pool::SlotState::InFlight { sends_pending: 0 })
    );
    assert_eq!(slots.stats().in_use(), 1);
    drop(watched); // "stable": the last handle goes
    assert_eq!(slots.stats().in_use(), 0);
    drop(a);
    eprintln!(
        "loopback SendZc: {} of {} notifications said the kernel copied",
        s.zc_kernel_copied, s.zc_notifications
    );
}

/// A 65,507-byte gather frame (100 header bytes + a piece starting 1,000
/// bytes into a page): a zero-copy datagram takes one skb frag per page,
/// here 1 + 17, over the kernel's MAX_SKB_FRAGS of 17.
fn over_frags_frame(seq: u32) -> FrameRef<RxBuf> {
    const LEN: usize = 65_507;
    const SPLIT: usize = 100;
    let p = pattern(seq, LEN);
    let mut bytes: Arc<[u8]> = Arc::from(vec![0u8; LEN - SPLIT + 4096]);
    let start = (4096 + 1000 - bytes.as_ptr() as usize % 4096) % 4096;
    // Still unique: written in place, at the address just measured.
    Arc::get_mut(&mut bytes).expect("unique")[start..start + LEN - SPLIT]
        .copy_from_slice(&p[SPLIT..]);
    assert_eq!((bytes.as_ptr() as usize + start) % 4096, 1000);
    FrameRef::Gather {
        head: Arc::from(&p[..SPLIT]),
        buf: RxBuf::from_heap(bytes),
        range: start..start + LEN - SPLIT,
    }
}

/// The kernel refuses these zero-copy sends (EMSGSIZE); each frame must
/// still arrive, re-sent copying, and no send counts as an error.
#[test]
#[cfg_attr(miri, ignore)]
fn a_refused_zero_copy_send_is_delivered_by_a_copy() {
    over_frags(false);
}

/// The driver sees the same frames are over the frag limit and sends them
/// copying at once: no `SendMsgZc`, nothing refused.
#[test]
#[cfg_attr(miri, ignore)]
fn a_gather_frame_over_the_frag_limit_is_sent_copying() {
    over_frags(true);
}

fn over_frags(predict: bool) {
    require!();
    if !cpg_uring::probe().unwrap().sendmsg_zc {
        eprintln!("SKIP: no SendMsgZc");
        return;
    }
    const N: u32 = 8;
    let mut ca = config(1, ZeroCopy::Always);
    if !predict {
        // Hand every frame to SendMsgZc, to be refused.
        ca.zc_max_frags = Some(usize::MAX);
    }
    let mut ds = cluster(vec![ca, config(2, ZeroCopy::Never)]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let lb = Arc::new(Mutex::new(Log::default()));
    let mut ha = TestHost::new(2, 0, Arc::new(Mutex::new(Log::default())));
    ha.start = (0..N).map(over_frags_frame).collect();
    let ca = a.counters();
    let c2 = ca.clone();
    // Stop once every send (the refused ones and their copies) is released.
    let notifs = if predict { 0 } else { u64::from(N) };
    ha.extra_stop = Some(Box::new(move || {
        let s = c2.snapshot();
        s.zc_notifications == notifs && s.frames_sent == u64::from(N)
    }));
    let hb = TestHost::new(1, N as usize, lb.clone());
    let (a, _ha, _b, _hb) = run_pair(a, ha, b, hb);
    let got: Vec<(u32, usize)> = lb
        .lock()
        .unwrap()
        .received
        .iter()
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(got, (0..N).map(|s| (s, 65_507)).collect::<Vec<_>>());
    assert_eq!(lb.lock().unwrap().bad, 0);
    let s = ca.snapshot();
    eprintln!("over MAX_SKB_FRAGS, predict {predict}: {s:?}");
    assert_eq!(s.send_errors, 0);
    // The driver's limit is net.core.max_skb_frags (17, the kernel's
    // default MAX_SKB_FRAGS, TCP's cap): 18 pages are over it, and there the
    // kernel refuses every SendMsgZc of these.
    let limit = std::fs::read_to_string("/proc/sys/net/core/max_skb_frags")
        .ok()
        .and_then(|f| f.trim().parse::<u64>().ok())
        .unwrap_or(17);
    let n = u64::from(N);
    if predict {
        let over = if limit < 18 { n } else { 0 };
        assert_eq!((s.zc_over_frags, s.sends_gather_zc), (over, n - over));
        assert_eq!(s.zc_fallback_copies, 0);
    } else {
        assert_eq!((s.zc_over_frags, s.sends_gather_zc), (0, n));
        if limit == 17 {
            assert_eq!(s.zc_fallback_copies, n);
        }
    }
    assert_eq!(a.sends_in_flight(), 0);
}

#[test]
#[cfg_attr(miri, ignore)]
fn fallback_syscalls_exchange() {
    let mk = |id| {
        let mut c = config(id, ZeroCopy::Never);
        c.fallback_syscalls = true;
        c
    };
    let mut ds = cluster(vec![mk(1), mk(2)]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    assert!(a.is_fallback() && a.probe().is_none());
    let (ca, cb) = (a.counters(), b.counters());
    let (a, b) = exchange_mixed(a, b);
    for s in [ca.snapshot(), cb.snapshot()] {
        assert_eq!(s.sends_plain + s.sends_gather, 100);
        assert!(
            s.bytes_copied > 0,
            "the fallback copies each datagram out of its scratch buffer"
        );
    }
    assert_eq!(a.slots().stats().in_use() + b.slots().stats().in_use(), 0);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_memlock_refusal_runs_without_registered_buffers() {
    require!();
    // Registration is charged to RLIMIT_MEMLOCK only without CAP_IPC_LOCK:
    // drop it in this thread (capabilities are per thread) and lower the
    // soft limit (per process; other test threads keep CAP_IPC_LOCK).
    let made = thread::spawn(|| {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
        let mut caps = capabilities(None).map_err(|e| format!("capget: {e}"))?;
        caps.effective.remove(CapabilitySet::IPC_LOCK);
        set_capabilities(None, caps).map_err(|e| format!("capset: {e}"))?;
        let old = getrlimit(Resource::Memlock);
        let low = Rlimit {
            current: Some(1 << 20),
            maximum: old.maximum,
        };
        setrlimit(Resource::Memlock, low).map_err(|e| format!("setrlimit: {e}"))?;
        let ds = [1, 2].map(|id| Driver::new(config(id, ZeroCopy::Auto)));
        let _ = setrlimit(Resource::Memlock, old);
        let [a, b] = ds;
        Ok::<_, String>((a.expect("driver 1"), b.expect("driver 2")))
    })
    .join()
    .unwrap();
    let (mut a, mut b) = match made {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIP: cannot set up the test: {why}");
            return;
        }
    };
    if a.buffers_registered() {
        eprintln!("SKIP: registration was not charged to RLIMIT_MEMLOCK here");
        return;
    }
    // a node over the limit runs, unpinned, instead of refusing to start
    assert!(!b.buffers_registered());
    let all = vec![(1, a.local_addr()), (2, b.local_addr())];
    a.set_peers(&all).unwrap();
    b.set_peers(&all).unwrap();
    let (a, b) = exchange_mixed(a, b);
    for d in [&a, &b] {
        assert_eq!(d.counters().snapshot().send_errors, 0);
    }
    assert_eq!(a.slots().stats().in_use() + b.slots().stats().in_use(), 0);
    // the warning's text (limit, `ulimit -l`) is the Register error's:
    // driver::tests::register_error_names_memlock_and_size
}

/// An engine behind a mutex, as cpg-std will hold it.
struct EngineHost {
    engine: Arc<Mutex<Engine<RxBuf>>>,
    delivered: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Host for EngineHost {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        let mut e = self.engine.lock().unwrap();
        match input {
            Input::Packet { from, frame } => e.handle_packet(t, from, frame),
            Input::Timeout => e.handle_timeout(t),
            Input::Start | Input::Wake => {}
        }
        while e.poll_persist().is_some() {}
        while let Some(tx) = e.poll_transmit() {
            out.transmits.push(tx);
        }
        while let Some(ev) = e.poll_event() {
            if let Event::Deliver { payload, .. } = ev {
                self.delivered
                    .lock()
                    .unwrap()
                    .push(payload.bytes().to_vec());
            }
        }
        while e.poll_release().is_some() {}
        out.next_timeout = e.poll_timeout();
        out.engine = Some(e.stats().into());
    }
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

fn wait_for(what: &str, limit: StdDuration, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(StdDuration::from_millis(5));
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn three_engines_form_a_ring_and_deliver() {
    require!();
    for zc in [ZeroCopy::Never, ZeroCopy::Always] {
        if zc == ZeroCopy::Always && !cpg_uring::probe().unwrap().send_zc {
            continue;
        }
        three_engines(zc);
    }
}

fn three_engines(zc: ZeroCopy) {
    let ids = [1u32, 2, 3];
    let drivers = cluster(ids.iter().map(|&i| config(i, zc)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut engines = Vec::new();
    let mut wakers: Vec<Waker> = Vec::new();
    let mut logs = Vec::new();
    let mut slots = Vec::new();
    let mut counters = Vec::new();
    let mut threads = Vec::new();
    for mut d in drivers {
        let id = d.node_id();
        let e = Engine::new(Config::fast(id, &ids), EngineOptions::default(), 1, now()).unwrap();
        let engine = Arc::new(Mutex::new(e));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        engines.push(engine.clone());
        wakers.push(d.waker());
        logs.push(delivered.clone());
        slots.push(d.slots());
        counters.push(d.counters());
        let mut host = EngineHost {
            engine,
            delivered,
            stop: stop.clone(),
        };
        threads.push(thread::spawn(move || d.run(&mut host).map(|()| d)));
    }
    let wake_all = |w: &[Waker]| w.iter().for_each(Waker::wake);
    wait_for("one ring of three", StdDuration::from_secs(30), || {
        engines.iter().all(|e| {
            let e = e.lock().unwrap();
            e.state() == State::Operational && e.members() == [1, 2, 3]
        })
    });
    let g = GroupName::new(b"uring-test").unwrap();
    for (i, e) in engines.iter().enumerate() {
        e.lock()
            .unwrap()
            .submit(
                now(),
                Request::Join {
                    pid: 100 + i as u32,
                    group: &g,
                    flags: 0,
                },
            )
            .unwrap();
    }
    wake_all(&wakers);
    let joined = || {
        engines
            .iter()
            .all(|e| e.lock().unwrap().group_members(&g).len() == 3)
    };
    let t0 = std::time::Instant::now();
    while !joined() && t0.elapsed() < StdDuration::from_secs(30) {
        thread::sleep(StdDuration::from_millis(5));
    }
    if !joined() {
        for (i, e) in engines.iter().enumerate() {
            let e = e.lock().unwrap();
            eprintln!(
                "node {}: {} state {:?} ring {:?} members {:?} group {:?} stats {:?} transport {:?}",
                i + 1,
                e.debug_line(),
                e.state(),
                e.ring_id(),
                e.members(),
                e.group_members(&g),
                e.stats(),
                counters[i].snapshot()
            );
        }
        panic!("timed out waiting for three members in the group");
    }
    // Five small messages from each node, then one zero-copy 8 KiB message
    // each (fragmented into Gather frames at netmtu 1500).
    for k in 0..5u32 {
        for (i, e) in engines.iter().enumerate() {
            let msg = format!("n{}-{k}", i + 1);
            let guarantee = if k == 4 {
                Guarantee::Safe
            } else {
                Guarantee::Agreed
            };
            let req = Request::Mcast {
                pid: 100 + i as u32,
                group: &g,
                guarantee,
                iov: &[msg.as_bytes()],
            };
            e.lock().unwrap().submit(now(), req).unwrap();
        }
        wake_all(&wakers);
    }
    for (i, e) in engines.iter().enumerate() {
        let len = 8192;
        let mut buf = slots[i].alloc(len).unwrap();
        let h = slots[i].headroom();
        buf.unique_mut().unwrap()[h..h + len].copy_from_slice(&pattern(1_000 + i as u32, len));
        e.lock()
            .unwrap()
            .submit_zc(
                now(),
                100 + i as u32,
                &g,
                Guarantee::Agreed,
                buf,
                h..h + len,
            )
            .unwrap();
    }
    wake_all(&wakers);
    wait_for(
        "18 deliveries on every node",
        StdDuration::from_secs(30),
        || logs.iter().all(|l| l.lock().unwrap().len() == 18),
    );
    let d0 = logs[0].lock().unwrap().clone();
    for l in &logs[1..] {
        assert_eq!(*l.lock().unwrap(), d0, "total order differs");
    }
    for i in 0..3u32 {
        let mine: Vec<&Vec<u8>> = d0
            .iter()
            .filter(|m| m.starts_with(format!("n{}-", i + 1).as_bytes()))
            .collect();
        assert_eq!(mine.len(), 5);
        assert!(d0
            .iter()
            .any(|m| m.len() == 8192 && check_pattern(m) == Some(1_000 + i)));
    }
    stop.store(true, Ordering::Release);
    wake_all(&wakers);
    for t in threads {
        let d = t.join().unwrap().expect("driver run");
        let s = d.counters().snapshot();
        eprintln!("zerocopy {zc:?} node {}: {s:?}", d.node_id());
        assert_eq!(s.bad_completions, 0);
        assert!(s.frames_received > 0 && s.token_rotations > 0 && s.ring_changes >= 1);
        if zc == ZeroCopy::Always {
            assert_eq!(s.sends_plain + s.sends_write_fixed + s.sends_gather, 0);
        } else {
            assert_eq!(s.sends_zc_fixed + s.sends_zc_heap + s.sends_gather_zc, 0);
        }
    }
    let total: Snapshot =
        counters
            .iter()
            .map(|c| c.snapshot())
            .fold(Snapshot::default(), |mut a, s| {
                a.sends_gather += s.sends_gather;
                a.sends_gather_zc += s.sends_gather_zc;
                a.sends_write_fixed += s.sends_write_fixed;
                a.sends_zc_fixed += s.sends_zc_fixed;
                a
            });
    eprintln!(
        "zerocopy {zc:?}: gather {} gather_zc {} write_fixed {} zc_fixed {}",
        total.sends_gather, total.sends_gather_zc, total.sends_write_fixed, total.sends_zc_fixed
    );
}

/// Sender of the throughput measurement: keeps `window` frames unacked.
struct TputSender {
    frames: Vec<FrameRef<RxBuf>>,
    next: usize,
    window: u64,
    sent: u64,
    acked: u64,
    last_acked: u64,
    end: Instant,
    stalls: u64,
    done: bool,
}

impl TputSender {
    fn fill(&mut self, out: &mut Outputs) {
        while self.sent < self.acked + self.window {
            let f = self.frames[self.next % self.frames.len()].clone();
            self.next += 1;
            out.transmits.push(Transmit {
                dest: Dest::Node(2),
                frame: f,
            });
            self.sent += 1;
        }
    }
}

impl Host for TputSender {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        match input {
            Input::Packet { frame, .. } => {
                let b = frame.as_ref();
                if b.len() == 8 {
                    self.acked = self.acked.max(u64::from_le_bytes(b.try_into().unwrap()));
                }
            }
            Input::Timeout => {
                if self.acked == self.last_acked && self.sent > self.acked {
                    // Lost frames: write them off and go on.
                    self.stalls += 1;
                    self.acked = self.sent;
                }
                self.last_acked = self.acked;
                out.next_timeout = Some(t + Duration::from_millis(20));
            }
            Input::Start => out.next_timeout = Some(t + Duration::from_millis(20)),
            Input::Wake => {}
        }
        if t >= self.end {
            self.done = true;
            return;
        }
        self.fill(out);
    }
    fn should_stop(&self) -> bool {
        self.done
    }
}

/// Receiver: counts, acks the running count every 16 frames and on a tick.
struct TputReceiver {
    count: u64,
    bytes: u64,
    acked: u64,
    first: Option<Instant>,
    last: Instant,
    end: Instant,
    done: bool,
}

impl Host for TputReceiver {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        match input {
            Input::Packet { frame, .. } => {
                self.first.get_or_insert(t);
                self.last = t;
                self.count += 1;
                self.bytes += frame.len() as u64;
            }
            Input::Timeout | Input::Start => out.next_timeout = Some(t + Duration::from_millis(5)),
            Input::Wake => {}
        }
        if self.count >= self.acked + 16
            || (matches!(out.next_timeout, Some(d) if d > t) && self.count > self.acked)
        {
            self.acked = self.count;
            out.transmits.push(Transmit {
                dest: Dest::Node(1),
                frame: FrameRef::Own(Arc::from(&self.count.to_le_bytes()[..])),
            });
        }
        if t >= self.end {
            self.done = true;
        }
    }
    fn should_stop(&self) -> bool {
        self.done
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Never,
    Always,
    Fallback,
}

fn measure(mode: Mode, len: usize, slots: bool, secs: u64) -> String {
    let mk = |id| {
        let mut c = config(
            id,
            if mode == Mode::Always {
                ZeroCopy::Always
            } else {
                ZeroCopy::Never
            },
        );
        c.fallback_syscalls = mode == Mode::Fallback;
        c
    };
    let mut ds = cluster(vec![mk(1), mk(2)]);
    let b = ds.pop().unwrap();
    let a = ds.pop().unwrap();
    let frames: Vec<FrameRef<RxBuf>> = if slots {
        let n = if len > 4096 { 16 } else { 64 };
        (0..n).map(|i| slot_frame(&a.slots(), i, len)).collect()
    } else {
        (0..64)
            .map(|i| FrameRef::Own(Arc::from(pattern(i, len))))
            .collect()
    };
    let window = std::env::var("CPG_TPUT_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if len > 4096 { 24 } else { 256 });
    let t0 = now();
    let end = t0 + Duration::from_millis(secs * 1000);
    let mut sender = TputSender {
        frames,
        next: 0,
        window,
        sent: 0,
        acked: 0,
        last_acked: 0,
        end,
        stalls: 0,
        done: false,
    };
    let mut receiver = TputReceiver {
        count: 0,
        bytes: 0,
        acked: 0,
        first: None,
        last: t0,
        end,
        done: false,
    };
    let (ca, mut b) = (a.counters(), b);
    let rx = thread::spawn(move || {
        b.run(&mut receiver).unwrap();
        receiver
    });
    let mut a = a;
    a.run(&mut sender).unwrap();
    let r = rx.join().unwrap();
    let span = (r.last - r.first.unwrap_or(t0)).as_nanos().max(1) as f64 / 1e9;
    let s = ca.snapshot();
    format!(
        "{:>8} {:>6} B {:>5}: {:>9.0} frames/s {:>8.1} MB/s  (sent {} recv {} stalls {}; zc_fixed {} zc_heap {} write_fixed {} plain {} notif {} copied-by-kernel {})",
        format!("{mode:?}"),
        len,
        if slots { "slot" } else { "heap" },
        r.count as f64 / span,
        r.bytes as f64 / span / 1e6,
        sender.sent,
        r.count,
        sender.stalls,
        s.sends_zc_fixed,
        s.sends_zc_heap,
        s.sends_write_fixed,
        s.sends_plain,
        s.zc_notifications,
        s.zc_kernel_copied,
    )
}

/// Frames/s between two drivers on loopback, one sender, one receiver,
/// windowed by acks. `cargo test --release -p cpg-uring --test kernel
/// throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_loopback() {
    require!();
    let secs = std::env::var("CPG_TPUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for (len, slots) in [(64, true), (64, false), (65_000, true), (65_000, false)] {
        for mode in [Mode::Never, Mode::Always, Mode::Fallback] {
            println!("{}", measure(mode, len, slots, secs));
        }
    }
}

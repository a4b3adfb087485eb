//! External regions on a real kernel, over loopback UDP: a memfd mapped
//! twice (`MAP_SHARED`), once as the "client" writing payloads and once as
//! the "daemon" mapping added to the driver, the way cpgd holds a client
//! connection's zero-copy region. Frames are sent from the daemon's
//! mapping without a user-space copy, by every path: a fixed buffer, the
//! non-fixed zero-copy paths when registration is off or refused, plain
//! syscalls. Probes io_uring and skips with a printed reason when it is
//! missing; every wait has a deadline and ends on a condition, not a sleep.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

use cpg_core::engine::{Dest, FrameRef, Transmit};
use cpg_core::{Instant, NodeId};
use cpg_uring::{
    now, Counters, Driver, ExternalRegion, ExternalRegions, Host, Input, NotFixed, Outputs,
    RegionId, RegionStatus, RxBuf, Snapshot, TransportConfig, ZeroCopy,
};
use rustix::mm::{MapFlags, ProtFlags};

fn require_uring() -> bool {
    match cpg_uring::probe() {
        Ok(p) if p.missing().is_empty() => true,
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

/// `Always` where the kernel has `SendZc`, else `Never` (the fixed and
/// plain paths are then what is tested).
fn zc_mode() -> ZeroCopy {
    if cpg_uring::probe().is_ok_and(|p| p.send_zc) {
        ZeroCopy::Always
    } else {
        eprintln!("no SendZc here: testing the non-zero-copy paths");
        ZeroCopy::Never
    }
}

/// Both policies where the kernel has `SendZc`, else `Never` alone.
fn zc_modes() -> Vec<ZeroCopy> {
    let mut m = vec![ZeroCopy::Never];
    if zc_mode() == ZeroCopy::Always {
        m.push(ZeroCopy::Always);
    }
    m
}

fn config(id: NodeId, zc: ZeroCopy) -> TransportConfig {
    let mut c = TransportConfig::new(id, "127.0.0.1:0".parse::<SocketAddr>().unwrap(), vec![]);
    c.zerocopy = zc;
    // each path is counted per frame here; GSO would carry a run of them
    // in one send (its own test is in kernel.rs)
    c.gso = false;
    c
}

/// Two drivers knowing each other: (sender, receiver).
fn pair(a: TransportConfig, b: TransportConfig) -> (Driver, Driver) {
    let mut a = Driver::new(a).expect("driver a");
    let mut b = Driver::new(b).expect("driver b");
    let all: Vec<(NodeId, SocketAddr)> = [&a, &b]
        .iter()
        .map(|d| (d.node_id(), d.local_addr()))
        .collect();
    a.set_peers(&all).unwrap();
    b.set_peers(&all).unwrap();
    (a, b)
}

fn pattern(seq: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seq) as u8)
        .collect();
    v[..4].copy_from_slice(&seq.to_le_bytes());
    v
}

fn check_pattern(b: &[u8]) -> Option<u32> {
    let seq = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
    (pattern(seq, b.len()) == b).then_some(seq)
}

/// Each release: the range and the zero-copy notifications reaped by then.
type ReleaseLog = Arc<Mutex<Vec<(Range<usize>, u64)>>>;

/// One memfd mapped twice: `client` (read-write, where the test writes
/// payloads) and the daemon's mapping, an [`ExternalRegion`] that logs
/// each release with the zero-copy notifications reaped by then.
struct Shm {
    ptr: NonNull<u8>,
    len: usize,
    client: NonNull<u8>,
    /// Shared, so that it can be read after the region is gone.
    log: ReleaseLog,
    counters: OnceLock<Arc<Counters>>,
    dropped: Arc<AtomicBool>,
}

// SAFETY: (test) two mappings owned by `Shm` until its `Drop`; the daemon
// mapping is only read (by the driver and the kernel), the client mapping
// written only by the test thread through `write`.
unsafe impl Send for Shm {}
// SAFETY: as above.
unsafe impl Sync for Shm {}

impl Shm {
    /// `len` bytes of a fresh memfd; the daemon's mapping read-only if `ro`.
    fn new(len: usize, ro: bool) -> Arc<Shm> {
        use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
        let fd = memfd_create("cpg-ext-test", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, len as u64).unwrap();
        let map = |prot| {
            // SAFETY: a new shared mapping of the whole memfd at an address
            // of the kernel's choice: it aliases no Rust-owned memory.
            let p = unsafe {
                rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, &fd, 0)
            }
            .unwrap();
            NonNull::new(p.cast::<u8>()).unwrap()
        };
        let daemon = map(if ro {
            ProtFlags::READ
        } else {
            ProtFlags::READ | ProtFlags::WRITE
        });
        let client = map(ProtFlags::READ | ProtFlags::WRITE);
        Arc::new(Shm {
            ptr: daemon,
            len,
            client,
            log: ReleaseLog::default(),
            counters: OnceLock::new(),
            dropped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The client writes `bytes` at `off` (seen through the daemon's mapping).
    fn write(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.len);
        // SAFETY: (test) inside the client mapping; nothing reads these
        // bytes until a frame over them is handed to the driver afterwards.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.client.as_ptr().add(off),
                bytes.len(),
            )
        };
    }

    fn releases(&self) -> Vec<(Range<usize>, u64)> {
        self.log.lock().unwrap().clone()
    }
}

// SAFETY: (test) the daemon mapping stays mapped, at the same address and
// length, until `Drop` unmaps it.
unsafe impl ExternalRegion for Shm {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
    fn release(&self, range: Range<usize>) {
        let notifs = self
            .counters
            .get()
            .map_or(0, |c| c.snapshot().zc_notifications);
        self.log.lock().unwrap().push((range, notifs));
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        for p in [self.ptr, self.client] {
            // SAFETY: (test) our own mappings of `len` bytes, unused from here.
            let _ = unsafe { rustix::mm::munmap(p.as_ptr().cast(), self.len) };
        }
        self.dropped.store(true, Ordering::Release);
    }
}

/// Frames from the region: `seq` payloads written by the client at
/// 64 KiB strides, alternately whole (`FrameRef::Slot`) and as a gather
/// (100 header bytes on the heap, the rest from the region).
fn frames(shm: &Arc<Shm>, seqs: Range<u32>) -> (Vec<FrameRef<RxBuf>>, Vec<Range<usize>>) {
    let owner: Arc<dyn ExternalRegion> = shm.clone();
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    for seq in seqs {
        let len = [64usize, 1400, 9000, 30_000][seq as usize % 4];
        let off = seq as usize * 65_536;
        let p = pattern(seq, len);
        if seq % 2 == 0 {
            shm.write(off, &p);
            let buf = RxBuf::external(owner.clone(), off..off + len).unwrap();
            out.push(FrameRef::Slot { buf, range: 0..len });
            ranges.push(off..off + len);
        } else {
            let split = 100.min(len);
            shm.write(off, &p[split..]);
            let r = off..off + len - split;
            let buf = RxBuf::external(owner.clone(), r.clone()).unwrap();
            out.push(FrameRef::Gather {
                head: Arc::from(&p[..split]),
                buf,
                range: 0..len - split,
            });
            ranges.push(r);
        }
    }
    (out, ranges)
}

/// Sends `start` at `Input::Start` (each frame `copies` times), runs
/// `on_start` right after, stops when `stop()` holds or at its deadline.
struct SendHost {
    peer: NodeId,
    start: Vec<FrameRef<RxBuf>>,
    copies: usize,
    on_start: Option<Box<dyn FnOnce() + Send>>,
    stop: Box<dyn Fn() -> bool + Send>,
    give_up: Instant,
    timed_out: bool,
}

impl SendHost {
    fn new(
        peer: NodeId,
        start: Vec<FrameRef<RxBuf>>,
        stop: impl Fn() -> bool + Send + 'static,
    ) -> Self {
        SendHost {
            peer,
            start,
            copies: 1,
            on_start: None,
            stop: Box::new(stop),
            give_up: Instant(now().0 + 10_000_000_000),
            timed_out: false,
        }
    }
}

impl Host for SendHost {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        if let Input::Start = input {
            for f in self.start.drain(..) {
                for _ in 0..self.copies {
                    out.transmits.push(Transmit {
                        dest: Dest::Node(self.peer),
                        frame: f.clone(),
                    });
                }
            }
            if let Some(f) = self.on_start.take() {
                f();
            }
        }
        out.next_timeout = Some(self.give_up);
        self.timed_out |= t >= self.give_up;
    }
    fn should_stop(&self) -> bool {
        self.timed_out || (self.stop)()
    }
}

/// Receives until `expect` frames arrived (or the deadline): (seq, len)
/// of each, and how many did not match their pattern.
struct RecvHost {
    got: Vec<(u32, usize)>,
    bad: usize,
    expect: usize,
    give_up: Instant,
    timed_out: bool,
}

impl RecvHost {
    fn new(expect: usize) -> RecvHost {
        RecvHost {
            got: Vec::new(),
            bad: 0,
            expect,
            give_up: Instant(now().0 + 10_000_000_000),
            timed_out: false,
        }
    }
}

impl Host for RecvHost {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        if let Input::Packet { frame, .. } = input {
            match check_pattern(frame.as_ref()) {
                Some(seq) => self.got.push((seq, frame.len())),
                None => self.bad += 1,
            }
        }
        out.next_timeout = Some(self.give_up);
        self.timed_out |= t >= self.give_up;
    }
    fn should_stop(&self) -> bool {
        self.timed_out || self.got.len() >= self.expect
    }
}

/// Run `a` (sending) and `b` (receiving) at once.
fn run_pair(
    mut a: Driver,
    mut ha: SendHost,
    mut b: Driver,
    mut hb: RecvHost,
) -> (Driver, SendHost, Driver, RecvHost) {
    let tb = thread::spawn(move || {
        b.run(&mut hb).unwrap();
        (b, hb)
    });
    a.run(&mut ha).unwrap();
    let (b, hb) = tb.join().unwrap();
    assert!(!ha.timed_out, "sender timed out");
    assert!(!hb.timed_out, "receiver timed out: {} frames", hb.got.len());
    (a, ha, b, hb)
}

/// One short run of `d`: apply queued region requests, reap completions.
fn run_once(d: &mut Driver) {
    struct Once(bool);
    impl Host for Once {
        fn step(&mut self, _: Instant, _: Input, _: &mut Outputs) {
            self.0 = true;
        }
        fn should_stop(&self) -> bool {
            self.0
        }
    }
    d.run(&mut Once(false)).unwrap();
}

/// Every seq in `seqs` arrived `copies` times, intact.
fn check_received(hb: &RecvHost, seqs: Range<u32>, copies: usize) {
    assert_eq!(hb.bad, 0, "frames arrived damaged");
    let mut got: Vec<u32> = hb.got.iter().map(|g| g.0).collect();
    got.sort_unstable();
    let mut want: Vec<u32> = seqs.flat_map(|s| std::iter::repeat_n(s, copies)).collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

/// Each range released exactly once.
fn check_released_once(log: &ReleaseLog, ranges: &[Range<usize>]) {
    let log = log.lock().unwrap();
    let mut got: Vec<(usize, usize)> = log.iter().map(|r| (r.0.start, r.0.end)).collect();
    got.sort_unstable();
    let mut want: Vec<(usize, usize)> = ranges.iter().map(|r| (r.start, r.end)).collect();
    want.sort_unstable();
    assert_eq!(got, want, "release hook: once per buffer");
}

fn external_sends(s: &Snapshot) -> u64 {
    s.external_sends_zc_fixed
        + s.external_sends_zc
        + s.external_sends_gather_zc
        + s.external_sends_write_fixed
        + s.external_sends_plain
        + s.external_sends_gather
}

/// Add `shm` and wait (a short run) until the driver applied it.
fn add_applied(d: &mut Driver, shm: &Arc<Shm>) -> (ExternalRegions, RegionId) {
    let regions = d.external_regions();
    let id = regions.add(shm.clone()).unwrap();
    assert_eq!(regions.status(id), Some(RegionStatus::Pending));
    run_once(d);
    (regions, id)
}

#[test]
#[cfg_attr(miri, ignore)]
fn external_frames_go_from_the_fixed_buffer_and_release_once_after_the_last_send() {
    require!();
    for zc in zc_modes() {
        from_the_fixed_buffer(zc);
    }
}

fn from_the_fixed_buffer(zc: ZeroCopy) {
    const N: u32 = 16;
    const COPIES: usize = 2;
    let (mut a, b) = pair(config(1, zc), config(2, ZeroCopy::Never));
    let shm = Shm::new(N as usize * 65_536, false);
    shm.counters.set(a.counters()).ok();
    let (regions, id) = add_applied(&mut a, &shm);
    assert_eq!(
        regions.status(id),
        Some(RegionStatus::Fixed { buf_index: 2 })
    );
    let (start, ranges) = frames(&shm, 0..N);
    let s2 = shm.clone();
    let mut ha = SendHost::new(2, start, move || s2.releases().len() == N as usize);
    ha.copies = COPIES; // a buffer goes only after both of its sends completed
    let ca = a.counters();
    let (a, _, _b, hb) = run_pair(a, ha, b, RecvHost::new(N as usize * COPIES));
    check_received(&hb, 0..N, COPIES);
    check_released_once(&shm.log, &ranges);
    let s = ca.snapshot();
    eprintln!("{s:?}");
    let sends = u64::from(N) * COPIES as u64;
    assert_eq!(external_sends(&s), sends);
    if zc == ZeroCopy::Always {
        assert_eq!(
            s.external_sends_zc_fixed,
            sends / 2,
            "whole frames: SendZc, fixed buffer 2"
        );
        assert_eq!(s.external_sends_gather_zc, sends / 2);
        assert_eq!(s.zc_notifications, sends);
        // The k-th release came after both notifications of its buffer's
        // two sends (and those of the k - 1 released before it).
        for (k, (_, notifs)) in shm.releases().iter().enumerate() {
            assert!(
                *notifs >= 2 * (k as u64 + 1),
                "release {k} before its notifications"
            );
        }
    } else {
        assert_eq!(s.external_sends_write_fixed, sends / 2);
        assert_eq!(s.external_sends_gather, sends / 2);
    }
    assert_eq!(s.bytes_copied, 0, "no user-space copy");
    assert_eq!(
        (s.external_regions_fixed, s.external_register_failures),
        (1, 0)
    );
    assert_eq!(s.send_errors + s.bad_completions, 0);
    assert_eq!(a.sends_in_flight(), 0);

    // Removal with nothing in flight is immediate; the region's owner goes
    // once the test drops its handle.
    let mut a = a;
    regions.remove(id).unwrap();
    a.waker().wake();
    run_once(&mut a);
    assert_eq!(regions.status(id), None);
    assert_eq!(ca.snapshot().external_regions_fixed, 0);
    let dropped = shm.dropped.clone();
    drop(shm);
    assert!(
        dropped.load(Ordering::Acquire),
        "nothing holds the region any more"
    );
}

#[test]
#[cfg_attr(miri, ignore)]
fn removing_a_region_waits_for_the_sends_that_name_its_buffer() {
    require!();
    const N: u32 = 8;
    let zc = zc_mode();
    let (mut a, mut b) = pair(config(1, zc), config(2, ZeroCopy::Never));
    let shm = Shm::new((2 * N as usize + 1) * 65_536, false);
    let log = shm.log.clone();
    let (regions, id) = add_applied(&mut a, &shm);
    let ca = a.counters();

    // Run 1: send N frames, ask for the removal in the same step, stop.
    // The sends are submitted but their completions are not reaped before
    // the next run, so they are in flight when the removal is applied.
    let even: Vec<u32> = (0..N).map(|i| 2 * i).collect(); // whole frames: fixed buffer
    let mut start = Vec::new();
    let mut ranges = Vec::new();
    for &s in &even {
        let (f, r) = frames(&shm, s..s + 1);
        start.extend(f);
        ranges.extend(r);
    }
    let mut ha = SendHost::new(2, start, || true);
    let r2 = regions.clone();
    ha.on_start = Some(Box::new(move || r2.remove(id).unwrap()));
    a.run(&mut ha).unwrap();
    drop(ha);
    assert_eq!(regions.status(id), Some(RegionStatus::Removing), "deferred");
    let s = ca.snapshot();
    assert_eq!(
        s.external_sends_zc_fixed + s.external_sends_write_fixed,
        u64::from(N)
    );
    assert_eq!(
        s.external_regions_fixed, 1,
        "still registered while sends name it"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "sends still hold their buffers"
    );
    assert!(a.sends_in_flight() > 0);

    // Run 2: one more frame from the region, which now takes a non-fixed
    // path; the test lets go of the region, so only the driver holds it.
    let (more, r) = frames(&shm, 2 * N..2 * N + 1);
    ranges.extend(r);
    let dropped = shm.dropped.clone();
    drop(shm);
    assert!(
        !dropped.load(Ordering::Acquire),
        "the table and the sends hold it"
    );
    let (r3, l3) = (regions.clone(), log.clone());
    let mut ha = SendHost::new(2, more, move || {
        r3.status(id).is_none() && l3.lock().unwrap().len() == N as usize + 1
    });
    a.run(&mut ha).unwrap();
    assert!(!ha.timed_out);
    drop(ha);
    let s = ca.snapshot();
    eprintln!("{s:?}");
    assert_eq!(regions.status(id), None, "removed once its sends completed");
    assert_eq!(s.external_regions_fixed, 0);
    assert_eq!(
        s.external_sends_zc + s.external_sends_plain,
        1,
        "after the removal was asked for, no send names the buffer"
    );
    assert_eq!(a.sends_in_flight(), 0);
    assert!(
        dropped.load(Ordering::Acquire),
        "every holder let go of the region"
    );
    assert_eq!(s.bytes_copied, 0);

    // Everything sent arrived intact.
    let mut hb = RecvHost::new(N as usize + 1);
    b.run(&mut hb).unwrap();
    assert!(!hb.timed_out);
    assert_eq!(hb.bad, 0);
    let mut got: Vec<u32> = hb.got.iter().map(|g| g.0).collect();
    got.sort_unstable();
    let mut want = even.clone();
    want.push(2 * N);
    assert_eq!(got, want);
    check_released_once(&log, &ranges);

    // The entry is free in the kernel's table again: the next region gets it.
    let next = Shm::new(65_536, false);
    let (regions, id) = add_applied(&mut a, &next);
    assert_eq!(
        regions.status(id),
        Some(RegionStatus::Fixed { buf_index: 2 })
    );
}

/// Registration off (`external_fixed_max = 0`) or refused: the region is
/// still sent from in place, by the non-fixed paths, and counted.
fn unregistered(cfg: TransportConfig, ro: bool) -> Option<NotFixed> {
    const N: u32 = 8;
    let zc = cfg.zerocopy;
    let (mut a, b) = pair(cfg, config(2, ZeroCopy::Never));
    let shm = Shm::new(N as usize * 65_536, ro);
    let (regions, id) = add_applied(&mut a, &shm);
    let status = regions.status(id);
    let (start, ranges) = frames(&shm, 0..N);
    let s2 = shm.clone();
    let ha = SendHost::new(2, start, move || s2.releases().len() == N as usize);
    let ca = a.counters();
    let (mut a, _, _b, hb) = run_pair(a, ha, b, RecvHost::new(N as usize));
    check_received(&hb, 0..N, 1);
    check_released_once(&shm.log, &ranges);
    let s = ca.snapshot();
    eprintln!("{status:?}: {s:?}");
    assert_eq!(s.bytes_copied, 0, "no user-space copy");
    assert_eq!(external_sends(&s), u64::from(N));
    let why = match status {
        Some(RegionStatus::NotFixed(why)) => why,
        Some(RegionStatus::Fixed { .. }) => {
            assert_eq!(s.external_regions_fixed, 1);
            return None;
        }
        other => panic!("unexpected status {other:?}"),
    };
    assert_eq!(
        (s.external_regions_fixed, s.external_register_failures),
        (0, 1)
    );
    if a.is_fallback() {
        assert_eq!((s.external_sends_plain, s.external_sends_gather), (4, 4));
    } else if zc == ZeroCopy::Always {
        assert_eq!((s.external_sends_zc, s.external_sends_gather_zc), (4, 4));
        assert_eq!(s.zc_notifications, u64::from(N));
    } else {
        assert_eq!((s.external_sends_plain, s.external_sends_gather), (4, 4));
    }
    regions.remove(id).unwrap();
    a.waker().wake();
    run_once(&mut a);
    assert_eq!(regions.status(id), None);
    Some(why)
}

#[test]
#[cfg_attr(miri, ignore)]
fn registration_off_still_sends_in_place_by_the_non_fixed_paths() {
    require!();
    for zc in zc_modes() {
        let mut cfg = config(1, zc);
        cfg.external_fixed_max = 0;
        assert_eq!(unregistered(cfg, false), Some(NotFixed::NoTable));
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_full_table_or_an_overlap_is_not_fixed_and_a_freed_entry_is_reused() {
    require!();
    let mut cfg = config(1, ZeroCopy::Never);
    cfg.external_fixed_max = 1;
    let mut d = Driver::new(cfg).unwrap();
    let (one, two) = (Shm::new(65_536, false), Shm::new(65_536, false));
    let regions = d.external_regions();
    let a = regions.add(one.clone()).unwrap();
    let again = regions.add(one.clone()).unwrap(); // the same mapping twice
    let b = regions.add(two.clone()).unwrap();
    run_once(&mut d);
    assert_eq!(
        regions.status(a),
        Some(RegionStatus::Fixed { buf_index: 2 })
    );
    assert_eq!(
        regions.status(again),
        Some(RegionStatus::NotFixed(NotFixed::Overlaps))
    );
    assert_eq!(
        regions.status(b),
        Some(RegionStatus::NotFixed(NotFixed::TableFull))
    );
    let s = d.counters().snapshot();
    assert_eq!(
        (s.external_regions_fixed, s.external_register_failures),
        (1, 2)
    );
    // Room again: an overlap is still refused, another region takes index 2.
    regions.remove(b).unwrap();
    regions.remove(a).unwrap();
    let c = regions.add(two.clone()).unwrap();
    let d2 = regions.add(two.clone()).unwrap();
    run_once(&mut d);
    assert_eq!((regions.status(a), regions.status(b)), (None, None));
    assert_eq!(
        regions.status(c),
        Some(RegionStatus::Fixed { buf_index: 2 })
    );
    assert_eq!(
        regions.status(d2),
        Some(RegionStatus::NotFixed(NotFixed::Overlaps))
    );
    assert_eq!(regions.count(), 3); // again, c, d2
    assert_eq!(d.counters().snapshot().external_regions_fixed, 1);
    drop(d);
    assert_eq!(regions.count(), 0);
    assert_eq!((Arc::strong_count(&one), Arc::strong_count(&two)), (1, 1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_region_the_kernel_refuses_to_register_is_still_sent_from() {
    require!();
    // The kernel pins fixed buffers for writing, so it refuses a
    // read-only mapping (EFAULT); older kernels may differ, so either
    // outcome is accepted, and the sends must work in both.
    let why = unregistered(config(1, zc_mode()), true);
    eprintln!("read-only region: {why:?}");
    assert!(matches!(why, None | Some(NotFixed::Refused(_))), "{why:?}");
}

#[test]
#[cfg_attr(miri, ignore)]
fn syscall_fallback_sends_external_frames_in_place() {
    let mut cfg = config(1, ZeroCopy::Never);
    cfg.fallback_syscalls = true;
    let mut cfg_b = config(2, ZeroCopy::Never);
    cfg_b.fallback_syscalls = true;
    const N: u32 = 8;
    let (mut a, b) = pair(cfg, cfg_b);
    let shm = Shm::new(N as usize * 65_536, false);
    let (regions, id) = add_applied(&mut a, &shm);
    assert_eq!(
        regions.status(id),
        Some(RegionStatus::NotFixed(NotFixed::Syscalls))
    );
    let (start, ranges) = frames(&shm, 0..N);
    let s2 = shm.clone();
    let ha = SendHost::new(2, start, move || s2.releases().len() == N as usize);
    let ca = a.counters();
    let (_a, _, _b, hb) = run_pair(a, ha, b, RecvHost::new(N as usize));
    check_received(&hb, 0..N, 1);
    check_released_once(&shm.log, &ranges);
    let s = ca.snapshot();
    assert_eq!((s.external_sends_plain, s.external_sends_gather), (4, 4));
    assert_eq!(s.external_register_failures, 0, "nothing was tried");
    assert_eq!(s.bytes_copied, 0, "sendmsg reads the region itself");
}

#[test]
#[cfg_attr(miri, ignore)]
fn the_handle_outlives_the_driver() {
    require!();
    let d = Driver::new(config(1, ZeroCopy::Never)).unwrap();
    let regions = d.external_regions();
    let shm = Shm::new(65_536, false);
    let id = regions.add(shm.clone()).unwrap();
    drop(d); // never ran: the queued add is dropped with it
    assert_eq!(regions.status(id), None);
    assert_eq!(
        regions.add(shm.clone()),
        Err(cpg_uring::ExternalError::Closed)
    );
    assert_eq!(Arc::strong_count(&shm), 1);
}

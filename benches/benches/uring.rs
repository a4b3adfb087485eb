//! One send through the io_uring loop: a frame pushed as a `Transmit` into
//! a sending [`Driver`]'s `Outputs` (where an engine's `poll_transmit`
//! output goes), submitted to the kernel (`Send` for a heap frame,
//! `WriteFixed` for a registered pool slot; `zerocopy = auto` on loopback
//! takes neither zero-copy path), its completion reaped, and the datagram
//! received by a second driver on 127.0.0.1 (multishot `RecvMsg` into a
//! provided buffer, `Input::Packet` to its host, buffer recycled).
//!
//! Two drivers in one process on ephemeral 127.0.0.1 ports, peers of each
//! other. The receiving driver runs on its own thread; the sending driver
//! runs on the bench thread inside `iter_custom`: one `Driver::run` sends
//! exactly `iters` frames and returns when the receiver's host has counted
//! all of them. Frames are pipelined: at most `window` are unreceived (UDP
//! has no flow control; a full socket buffer would drop), and the receiver
//! wakes the sender's loop (`Waker`, an eventfd) every `window / 8` frames
//! to refill it. A frame lost anyway is written off after 50 ms without
//! progress and sent again, and counted (`stalls` in the summary line).
//!
//! The figure per frame is the pipelined cost of the whole path, both
//! loops and the kernel's UDP loopback, not a one-frame round trip. With
//! the default transport settings a window of 256 small frames outruns the
//! receiver's 64 receive buffers: some frames meet ENOBUFS (the multishot
//! receive is re-armed) or are copied out under `rx_copy_below`, as they
//! would under load; the summary line after each bench counts both, and
//! which send operation the frames took.
//!
//! Skips (prints a line, measures nothing) when io_uring is missing or a
//! driver cannot start. `cargo bench -p benches --bench uring`.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cpg_core::engine::{Dest, FrameBuf, FrameRef, Transmit};
use cpg_core::limits::FRAME_MAX;
use cpg_core::{Duration, Instant, NodeId};
use cpg_uring::{Counters, Driver, Host, Input, Outputs, RxBuf, TransportConfig, Waker};

const SENDER: NodeId = 1;
const RECEIVER: NodeId = 2;
/// No progress for this long with frames unreceived: they are lost.
const STALL: Duration = Duration::from_millis(50);

/// Shared between the two hosts and the bench thread.
#[derive(Default)]
struct Link {
    /// Frames the receiver's host got (all runs).
    received: AtomicU64,
    /// Bytes of those frames.
    bytes: AtomicU64,
    /// Frames of an unexpected length (should stay 0).
    bad: AtomicU64,
    /// The `received` count the current run stops at.
    target: AtomicU64,
}

/// The sending driver's host: keeps up to `window` frames unreceived until
/// `target` frames have been sent.
struct Sender {
    frame: FrameRef<RxBuf>,
    link: Arc<Link>,
    window: u64,
    /// Frames sent and not written off (all runs).
    sent: u64,
    target: u64,
    /// `received` at the last stall check.
    tick_received: u64,
    /// Frames written off as lost.
    stalls: u64,
}

impl Host for Sender {
    fn step(&mut self, t: Instant, input: Input, out: &mut Outputs) {
        let received = self.link.received.load(Ordering::Acquire);
        match input {
            Input::Start => {
                self.tick_received = received;
                out.next_timeout = Some(t + STALL);
            }
            Input::Timeout => {
                if received == self.tick_received && self.sent > received {
                    self.stalls += self.sent - received;
                    self.sent = received;
                }
                self.tick_received = received;
                out.next_timeout = Some(t + STALL);
            }
            // The receiver's progress (Wake); nothing arrives from it.
            Input::Wake | Input::Packet { .. } => {}
        }
        while self.sent < self.target && self.sent < received + self.window {
            out.transmits.push(Transmit {
                dest: Dest::Node(RECEIVER),
                frame: self.frame.clone(),
            });
            self.sent += 1;
        }
    }

    fn should_stop(&self) -> bool {
        self.link.received.load(Ordering::Acquire) >= self.target
    }
}

/// The receiving driver's host: counts frames, wakes the sender every
/// `wake_every` frames and at the run's target.
struct Receiver {
    link: Arc<Link>,
    len: usize,
    wake_every: u64,
    since_wake: u64,
    sender: Waker,
    stop: Arc<AtomicBool>,
}

impl Host for Receiver {
    fn step(&mut self, _: Instant, input: Input, _: &mut Outputs) {
        if let Input::Packet { frame, .. } = input {
            if frame.len() != self.len {
                self.link.bad.fetch_add(1, Ordering::Relaxed);
            }
            self.link
                .bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            drop(frame); // the receive buffer goes back at the end of the batch
            let n = self.link.received.fetch_add(1, Ordering::AcqRel) + 1;
            self.since_wake += 1;
            if self.since_wake >= self.wake_every || n >= self.link.target.load(Ordering::Acquire) {
                self.since_wake = 0;
                self.sender.wake();
            }
        }
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// The two drivers, the receiver on its thread.
struct Pair {
    a: Driver,
    host: Sender,
    link: Arc<Link>,
    stop: Arc<AtomicBool>,
    b_waker: Waker,
    b_counters: Arc<Counters>,
    b: Option<JoinHandle<()>>,
    /// Frames and time measured over every `send` (warm-up included).
    frames: u64,
    elapsed: StdDuration,
}

fn lo() -> SocketAddrV4 {
    SocketAddrV4::new([127, 0, 0, 1].into(), 0)
}

impl Pair {
    /// Drivers on 127.0.0.1 sending `len`-byte frames, from a registered
    /// pool slot (`slot`) or the heap.
    fn new(len: usize, slot: bool, window: u64) -> Result<Pair, String> {
        let start = |id| {
            Driver::new(TransportConfig::new(id, lo(), vec![]))
                .map_err(|e| format!("driver {id}: {e}"))
        };
        let mut a = start(SENDER)?;
        let mut b = start(RECEIVER)?;
        let peers = [(SENDER, a.local_addr()), (RECEIVER, b.local_addr())];
        a.set_peers(&peers).map_err(|e| e.to_string())?;
        b.set_peers(&peers).map_err(|e| e.to_string())?;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        let frame = if slot {
            let slots = a.slots();
            let mut buf = slots.alloc(len).map_err(|e| format!("pool slot: {e:?}"))?;
            let h = slots.headroom();
            buf.unique_mut().ok_or("a fresh slot is not unique")?[h..h + len]
                .copy_from_slice(&bytes);
            FrameRef::Slot {
                buf,
                range: h..h + len,
            }
        } else {
            FrameRef::Own(Arc::from(bytes))
        };
        let link = Arc::new(Link::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut receiver = Receiver {
            link: link.clone(),
            len,
            wake_every: (window / 8).max(1),
            since_wake: 0,
            sender: a.waker(),
            stop: stop.clone(),
        };
        let b_waker = b.waker();
        let b_counters = b.counters();
        let handle = thread::Builder::new()
            .name("uring-receiver".into())
            .spawn(move || {
                if let Err(e) = b.run(&mut receiver) {
                    panic!("receiving driver: {e}");
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Pair {
            a,
            host: Sender {
                frame,
                link: link.clone(),
                window,
                sent: 0,
                target: 0,
                tick_received: 0,
                stalls: 0,
            },
            link,
            stop,
            b_waker,
            b_counters,
            b: Some(handle),
            frames: 0,
            elapsed: StdDuration::ZERO,
        })
    }

    /// Send `n` frames through the sending loop; the time until the
    /// receiver's host has counted them all.
    fn send(&mut self, n: u64) -> StdDuration {
        let received = self.link.received.load(Ordering::Acquire);
        // A frame written off that arrived after all counts as received.
        self.host.sent = self.host.sent.max(received);
        self.host.target = received + n;
        self.link.target.store(self.host.target, Ordering::Release);
        let t0 = StdInstant::now();
        if let Err(e) = self.a.run(&mut self.host) {
            panic!("sending driver: {e}");
        }
        let dt = t0.elapsed();
        self.frames += n;
        self.elapsed += dt;
        dt
    }

    /// One line of what was measured and which paths the frames took.
    fn summary(&self, name: &str) -> String {
        let a = self.a.counters().snapshot();
        let b = self.b_counters.snapshot();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let bytes = self.link.bytes.load(Ordering::Relaxed);
        format!(
            "{name}: {} frames in {:.2} s over all samples: {:.0} frames/s, {:.1} MB/s received \
             (sender: plain {} write_fixed {} zc {} send_errors {}; receiver: frames {} \
             rx_buffer_exhausted {} recv_rearms {} rx_copied {}; bad length {}, stalls {})",
            self.frames,
            secs,
            self.frames as f64 / secs,
            bytes as f64 / secs / 1e6,
            a.sends_plain,
            a.sends_write_fixed,
            a.sends_zc_fixed + a.sends_zc_heap + a.sends_gather_zc,
            a.send_errors,
            b.frames_received,
            b.rx_buffer_exhausted,
            b.recv_rearms,
            b.rx_copied_frames,
            self.link.bad.load(Ordering::Relaxed),
            self.host.stalls,
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.b_waker.wake();
        if let Some(h) = self.b.take() {
            let _ = h.join();
        }
    }
}

/// Whether io_uring has what the driver needs (prints why not).
fn uring_available() -> bool {
    match cpg_uring::probe() {
        Ok(p) if p.missing().is_empty() => true,
        Ok(p) => {
            println!(
                "uring bench SKIPPED: io_uring lacks {:?} ({p})",
                p.missing()
            );
            false
        }
        Err(e) => {
            println!("uring bench SKIPPED: io_uring unavailable: {e}");
            false
        }
    }
}

fn uring_benches(c: &mut Criterion) {
    if !uring_available() {
        return;
    }
    // (name, frame bytes, from a pool slot, frames unreceived at most)
    let cases: [(&str, usize, bool, u64); 4] = [
        ("heap/64", 64, false, 256),
        ("heap/1400", 1400, false, 256),
        ("slot/1400", 1400, true, 256),
        ("slot/65507", FRAME_MAX, true, 24),
    ];
    let mut g = c.benchmark_group("uring_send");
    g.throughput(Throughput::Elements(1));
    for (name, len, slot, window) in cases {
        let mut pair = match Pair::new(len, slot, window) {
            Ok(p) => p,
            Err(e) => {
                println!("uring bench SKIPPED: {e}");
                return;
            }
        };
        g.bench_function(name, |b| b.iter_custom(|iters| pair.send(iters)));
        if pair.frames > 0 {
            println!("{}", pair.summary(&format!("uring_send/{name}")));
        }
    }
    g.finish();
}

criterion_group!(benches, uring_benches);
criterion_main!(benches);

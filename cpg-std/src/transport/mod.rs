//! Transports: what moves a node's frames. The [`Transport`] trait, the
//! timer thread of the thread-based (loopback) transport ([`Ticker`]), and
//! the transports themselves:
//!
//! | module | transport |
//! |---|---|
//! | [`uring`] | `cpg-uring`'s driver: io_uring (the default), or plain UDP syscalls (`transport = "udp"`, explicit) |
//! | [`loopback`] | an in-process network for tests (N nodes in one process) |
//!
//! A transport drives its node through [`NodeState`]'s crate methods
//! (packets and timer expiries in, transmits out); it knows nothing of
//! handles or groups.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::lock;
use std::thread::JoinHandle;

use cpg_core::engine::{FrameBuf, Transmit};
use cpg_core::Instant;

pub(crate) use crate::handles::solo::LoopBack;
pub(crate) use crate::handles::zc::{HeapZc, ZcAllocator};
pub(crate) use crate::handles::{NodeState, StepInput};

pub mod loopback;
pub(crate) mod uring;

/// A transport: moves the frames of one node.
pub(crate) trait Transport: Send + 'static {
    /// The buffer type the engine keeps received frames (and zero-copy
    /// buffers) in.
    type Frame: FrameBuf + Send + Sync + 'static;
    /// Where zero-copy buffers come from.
    fn zc_allocator(&self) -> Arc<dyn ZcAllocator<Self::Frame>>;
    /// Start moving frames for `core` (threads, sockets, rings); the
    /// returned handle stops it.
    ///
    /// # Errors
    /// Whatever the transport's set-up hits.
    fn spawn(self, core: Arc<NodeState<Self::Frame>>) -> io::Result<Box<dyn Running>>;
}

/// A started transport.
pub(crate) trait Running: Send + Sync {
    /// Stop: send what is queued (a graceful shutdown's LEAVE), then end
    /// the threads and close the sockets.
    fn stop(self: Box<Self>);
    /// The transport's counters, if it keeps any.
    fn counters(&self) -> Option<cpg_uring::Snapshot> {
        None
    }
    /// Every (peer, link)'s status, if the transport has links (the
    /// `cpg-uring` driver's).
    fn link_status(&self) -> Option<Vec<cpg_uring::LinkStatus>> {
        self.link_status_handle().map(|h| h.snapshot())
    }
    /// The handle that reads the links' status from any thread.
    fn link_status_handle(&self) -> Option<cpg_uring::LinkStatusHandle> {
        None
    }
    /// The live counters themselves (read later, from other threads:
    /// `cpgtool status` through cpgd).
    fn counters_handle(&self) -> Option<Arc<cpg_uring::Counters>> {
        None
    }
    /// The handle that adds memory the transport sends from in place
    /// (cpgd's client regions), if it has one (the `cpg-uring` driver's).
    fn external_regions(&self) -> Option<cpg_uring::ExternalRegions> {
        None
    }
    /// The switch that freezes the node's engine (tests:
    /// [`crate::testing::NodeProbe::set_frozen`]), if the transport has one.
    fn gate(&self) -> Option<Arc<Gate>> {
        None
    }
}

/// A switch that holds a transport's threads before they touch the engine
/// (a test's "freeze", a SIGSTOP of the node's engine). Passing it while
/// it is open costs one atomic load: the io_uring driver passes it on
/// every step.
#[derive(Default)]
pub(crate) struct Gate {
    /// `*frozen`, readable without the lock.
    closed: AtomicBool,
    frozen: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub(crate) fn set(&self, frozen: bool) {
        let mut f = lock(&self.frozen);
        *f = frozen;
        self.closed.store(frozen, Ordering::SeqCst);
        drop(f);
        self.cond.notify_all();
    }
    /// Whether the gate is open now (no wait).
    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }
    /// Wait while frozen.
    pub(crate) fn pass(&self) {
        if !self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut f = lock(&self.frozen);
        while *f {
            f = self.cond.wait(f).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The timer thread of the thread-based (loopback) transport: sleeps until
/// the engine's next deadline or a wake, then runs timeouts and sends.
pub(crate) struct Ticker {
    state: Mutex<TickState>,
    cond: Condvar,
}

#[derive(Default)]
struct TickState {
    wake: bool,
    stop: bool,
    deadline: Option<Instant>,
}

impl Ticker {
    pub(crate) fn new() -> Arc<Ticker> {
        // starts awake: the engine armed its first timers at creation
        Arc::new(Ticker {
            state: Mutex::new(TickState {
                wake: true,
                ..TickState::default()
            }),
            cond: Condvar::new(),
        })
    }

    /// Wake the timer thread (work was queued).
    pub(crate) fn wake(&self) {
        let mut s = lock(&self.state);
        s.wake = true;
        self.cond.notify_one();
    }

    /// A receive path computed a new deadline: wake the timer thread if it
    /// is earlier than the one it sleeps towards.
    pub(crate) fn deadline(&self, d: Option<Instant>) {
        let Some(d) = d else { return };
        let mut s = lock(&self.state);
        if s.deadline.is_none_or(|cur| d < cur) {
            s.deadline = Some(d);
            s.wake = true;
            self.cond.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        let mut s = lock(&self.state);
        s.stop = true;
        self.cond.notify_one();
    }

    /// Spawn the timer thread.
    pub(crate) fn spawn<F: FrameBuf + Send + Sync + 'static>(
        self: &Arc<Self>,
        name: String,
        core: Arc<NodeState<F>>,
        send: Arc<dyn Fn(Transmit<F>) + Send + Sync>,
        gate: Option<Arc<Gate>>,
    ) -> io::Result<JoinHandle<()>> {
        let t = self.clone();
        let w = self.clone();
        core.set_waker(Arc::new(move || w.wake()));
        std::thread::Builder::new().name(name).spawn(move || loop {
            {
                let mut s = lock(&t.state);
                loop {
                    if s.stop {
                        drop(s);
                        core.poll_outputs(&mut |tx| send(tx));
                        return;
                    }
                    if s.wake {
                        break;
                    }
                    let now = core.now();
                    match s.deadline {
                        Some(d) if d <= now => break,
                        Some(d) => {
                            let wait = std::time::Duration::from_nanos(d.0 - now.0);
                            s = t
                                .cond
                                .wait_timeout(s, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        None => s = t.cond.wait(s).unwrap_or_else(PoisonError::into_inner),
                    }
                }
                s.wake = false;
            }
            if let Some(g) = &gate {
                g.pass();
            }
            core.handle_timeout();
            let d = core.poll_outputs(&mut |tx| send(tx));
            lock(&t.state).deadline = d;
        })
    }
}

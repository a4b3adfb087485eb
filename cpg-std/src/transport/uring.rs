//! The socket transport: `cpg-uring`'s [`Driver`] on its own thread,
//! driving the node's engine through a [`Host`]. Received frames stay in
//! the driver's receive buffers ([`RxBuf`]) until the engine and every
//! handle that was given a delivery from them let go; zero-copy buffers
//! are slots of the driver's pool, sent from where the application wrote
//! them.
//!
//! The driver runs on io_uring (`transport = "uring"`, the default) or, for
//! kernels without it, on plain `sendmsg`/`recvfrom` syscalls with `poll`
//! (`transport = "udp"`, cpg-uring's `TransportConfig::fallback_syscalls`):
//! one loop, one set of counters, chosen explicitly, never as a silent
//! fallback.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use cpg_core::{CsError, Instant};
use cpg_uring::{
    Driver, EngineCounters, ExternalRegions, Host, Input, Outputs, RxBuf, SlotAlloc,
    TransportConfig, Waker,
};

use super::{Gate, LoopBack, NodeState, Running, StepInput, Transport, ZcAllocator};
use crate::config::{NodeConfig, TransportKind};
use crate::error::StartError;

/// A node's driver, set up (sockets bound, on io_uring the region
/// registered) but not yet running.
pub(crate) struct UringTransport {
    driver: Driver,
}

impl std::fmt::Debug for UringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTransport")
            .field("node_id", &self.driver.node_id())
            .finish()
    }
}

/// The driver settings for `config`: `transport = "udp"` is the driver's
/// plain-syscall backend.
fn transport_config(config: &NodeConfig) -> TransportConfig {
    let peers = config
        .nodes
        .iter()
        .filter(|(n, _)| *n != config.node_id)
        .copied()
        .collect();
    let mut tc = TransportConfig::new(config.node_id, config.addr(), peers);
    tc.zerocopy = config.zerocopy;
    tc.gso = config.gso;
    tc.gro = config.gro;
    tc.rx_buffers = config.rx_buffers;
    tc.rx_buffer_size = config.rx_buffer_size;
    tc.pool = config.pool.clone();
    tc.fallback_syscalls = config.transport == TransportKind::Udp;
    let l = &config.links;
    tc.link0_priority = l.link0_priority;
    tc.link_mode = l.mode;
    tc.link_ping = l.ping;
    tc.cluster_id = config.engine.cluster_id;
    tc.links = l
        .extra
        .iter()
        .filter_map(|x| {
            let bind = x.addrs.iter().find(|(n, _)| *n == config.node_id)?.1;
            Some(cpg_uring::LinkSpec {
                number: x.number,
                priority: x.priority,
                bind,
                peers: x
                    .addrs
                    .iter()
                    .filter(|(n, _)| *n != config.node_id)
                    .copied()
                    .collect(),
            })
        })
        .collect();
    tc
}

impl UringTransport {
    /// Set up the ring (or the syscall backend), the region and the sockets.
    ///
    /// # Errors
    /// On io_uring, [`StartError::Uring`] (`cpg_uring::DriverError` names the cause:
    /// kernel, limits, address); on plain UDP, where no io_uring is
    /// involved, [`StartError::Transport`] with the same message; a key
    /// file that cannot be used, [`StartError::Transport`] naming it.
    pub(crate) fn new(config: &NodeConfig) -> Result<UringTransport, StartError> {
        let mut tc = transport_config(config);
        tc.seal = crate::crypto::seal_spec(
            config.crypto,
            config.key_file.as_deref(),
            &config.cluster_name,
            &config.state_dir,
            config.node_id,
        )
        .map_err(|e| StartError::Transport(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let driver = Driver::new(tc).map_err(|e| match config.transport {
            TransportKind::Uring => StartError::Uring(e),
            TransportKind::Udp => {
                let kind = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<io::Error>())
                    .map_or(io::ErrorKind::Other, io::Error::kind);
                StartError::Transport(io::Error::new(kind, e))
            }
        })?;
        Ok(UringTransport { driver })
    }
}

struct SlotZc {
    slots: SlotAlloc,
}

impl ZcAllocator<RxBuf> for SlotZc {
    fn alloc(&self, len: usize) -> Result<(RxBuf, usize), CsError> {
        let buf = self.slots.alloc(len).map_err(CsError::from)?;
        Ok((buf, self.slots.headroom()))
    }
    fn max_len(&self) -> usize {
        self.slots.payload_capacity_max()
    }
}

struct UringHost {
    core: Arc<NodeState<RxBuf>>,
    stop: Arc<AtomicBool>,
    drained: bool,
    /// Tests freeze the engine here, as the loopback transport's threads
    /// do (frames wait in the socket, application calls still reach the
    /// engine): cpgd's tests hold a request in flight that way.
    gate: Arc<Gate>,
}

impl Host for UringHost {
    fn step(&mut self, _now: Instant, input: Input, out: &mut Outputs) {
        self.gate.pass();
        let input = match input {
            Input::Start | Input::Wake => StepInput::Wake,
            Input::Packet { from, frame } => StepInput::Packet(from, frame),
            Input::Timeout => StepInput::Timeout,
        };
        let stopping = self.stop.load(Ordering::Acquire);
        let transmits = &mut out.transmits;
        let (next, counters) = self.core.step(input, &mut |t| transmits.push(t), |e| {
            EngineCounters::from(e.stats())
        });
        out.next_timeout = next;
        out.engine = Some(counters);
        if stopping {
            self.drained = true;
        }
    }
    fn should_stop(&self) -> bool {
        self.drained
    }
    fn batch_done(&mut self) {
        self.core.batch_done();
    }
}

struct UringRunning {
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    waker: Waker,
    counters: Arc<cpg_uring::Counters>,
    links: cpg_uring::LinkStatusHandle,
    external: ExternalRegions,
    thread: JoinHandle<()>,
}

impl Transport for UringTransport {
    type Frame = RxBuf;

    fn zc_allocator(&self) -> Arc<dyn ZcAllocator<RxBuf>> {
        Arc::new(SlotZc {
            slots: self.driver.slots(),
        })
    }

    fn spawn(self, core: Arc<NodeState<RxBuf>>) -> io::Result<Box<dyn Running>> {
        let waker = self.driver.waker();
        let w = waker.clone();
        core.set_waker(Arc::new(move || w.wake()));
        let counters = self.driver.counters();
        let gate = Arc::new(Gate::default());
        let c = counters.clone();
        core.set_loop_back(LoopBack {
            frame: Arc::new(move |bytes| {
                c.count_looped_back(bytes.len());
                RxBuf::from_heap(bytes)
            }),
            peers: self.driver.has_peers(),
            gate: gate.clone(),
        });
        let links = self.driver.link_status_handle();
        let external = self.driver.external_regions();
        let stop = Arc::new(AtomicBool::new(false));
        let mut host = UringHost {
            core,
            stop: stop.clone(),
            drained: false,
            gate: gate.clone(),
        };
        let mut driver = self.driver;
        let id = driver.node_id();
        let thread = std::thread::Builder::new()
            .name(format!("cpg-uring-{id}"))
            .spawn(move || {
                if let Err(e) = driver.run(&mut host) {
                    eprintln!("cpg node {id}: io_uring loop failed: {e}");
                }
            })?;
        Ok(Box::new(UringRunning {
            stop,
            gate,
            waker,
            counters,
            links,
            external,
            thread,
        }))
    }
}

impl Running for UringRunning {
    fn stop(self: Box<Self>) {
        // a frozen loop could not see the stop
        self.gate.set(false);
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        let _ = self.thread.join();
    }
    fn counters(&self) -> Option<cpg_uring::Snapshot> {
        Some(self.counters.snapshot())
    }
    fn link_status_handle(&self) -> Option<cpg_uring::LinkStatusHandle> {
        Some(self.links.clone())
    }
    fn counters_handle(&self) -> Option<Arc<cpg_uring::Counters>> {
        Some(self.counters.clone())
    }
    fn external_regions(&self) -> Option<ExternalRegions> {
        Some(self.external.clone())
    }
    fn gate(&self) -> Option<Arc<Gate>> {
        Some(self.gate.clone())
    }
}

//! `Node`: one engine running on its own threads, the embedded default.
//! Handles ([`crate::Cpg`]) are opened on it.
//!
//! The transport is pluggable ([`Transport`]): the UDP transports carry
//! frames between processes; [`crate::loopback`] carries them between
//! nodes of one test process.

use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cpg_core::engine::{FrameBuf, State, Transmit};
use cpg_core::{Instant, NodeId, RingId};

use crate::config::{NodeConfig, TransportKind};
use crate::core::{BufSend, NodeCore, NodeOps, NodeStats, Shared, ZcAllocator};
use crate::state::{RingSeqStore, StateError};

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The persistent state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The engine refused the settings.
    #[error("engine: {0}")]
    Engine(cpg_core::limits::ConfigError),
    /// The transport could not start (socket, ring, memory).
    #[error("transport: {0}")]
    Transport(#[from] io::Error),
    /// The io_uring driver could not start.
    #[error("io_uring transport: {0}")]
    Uring(#[from] cpg_uring::DriverError),
}

/// A transport: moves the frames of one node.
pub trait Transport: Send + 'static {
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
    fn spawn(self, core: NodeCore<Self::Frame>) -> io::Result<Box<dyn Running>>;
}

/// A started transport.
pub trait Running: Send + Sync {
    /// Stop: send what is queued (a graceful shutdown's LEAVE), then end
    /// the threads and close the sockets.
    fn stop(self: Box<Self>);
    /// The transport's counters, if it keeps any.
    fn counters(&self) -> Option<cpg_uring::Snapshot> {
        None
    }
}

/// Node-level control and observation, object safe.
pub(crate) trait NodeControl: Send + Sync {
    fn shutdown(&self, graceful: bool);
    fn stats(&self) -> NodeStats;
    fn status(&self) -> NodeStatus;
    fn record_buf_sends(&self, on: bool);
    fn buf_sends(&self) -> Vec<BufSend>;
}

/// A snapshot of the engine's membership state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Totem state.
    pub state: State,
    /// Ring id.
    pub ring_id: RingId,
    /// Ring members.
    pub members: Vec<NodeId>,
    /// Engine counters.
    pub engine: cpg_core::engine::Stats,
}

impl<F: FrameBuf + Send + Sync + 'static> NodeControl for Shared<F> {
    fn shutdown(&self, graceful: bool) {
        Shared::shutdown(self, graceful);
    }
    fn stats(&self) -> NodeStats {
        Shared::stats(self)
    }
    fn record_buf_sends(&self, on: bool) {
        Shared::record_buf_sends(self, on);
    }
    fn buf_sends(&self) -> Vec<BufSend> {
        Shared::buf_sends(self)
    }
    fn status(&self) -> NodeStatus {
        self.with_engine(|e| NodeStatus {
            state: e.state(),
            ring_id: e.ring_id(),
            members: e.members().to_vec(),
            engine: e.stats().clone(),
        })
    }
}

/// One engine on its transport's threads; open handles on it with
/// [`crate::Cpg::model_initialize`]. Dropping it stops it gracefully.
pub struct Node {
    node_id: NodeId,
    ops: Arc<dyn NodeOps>,
    control: Arc<dyn NodeControl>,
    running: Option<Box<dyn Running>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Node {
    /// Start the node `config` describes on its configured transport; the
    /// ring seq is loaded from (and persisted in) the state directory.
    ///
    /// # Errors
    /// State, engine or transport set-up failures.
    pub fn start(config: &NodeConfig) -> Result<Node, StartError> {
        match config.transport {
            TransportKind::Udp => {
                Self::with_transport(config, crate::udp::UdpTransport::new(config)?)
            }
            TransportKind::Uring => {
                Self::with_transport(config, crate::uring::UringTransport::new(config)?)
            }
        }
    }

    /// Start the node on `transport`.
    ///
    /// # Errors
    /// State, engine or transport set-up failures.
    pub fn with_transport<T: Transport>(
        config: &NodeConfig,
        transport: T,
    ) -> Result<Node, StartError> {
        let store = RingSeqStore::open(&config.state_dir, config.node_id)?;
        Self::with_transport_store(config, transport, Some(store))
    }

    pub(crate) fn with_transport_store<T: Transport>(
        config: &NodeConfig,
        transport: T,
        store: Option<RingSeqStore>,
    ) -> Result<Node, StartError> {
        let shared = Shared::<T::Frame>::new(
            config.engine.clone(),
            store,
            config.handle_queue_bytes,
            transport.zc_allocator(),
        )?;
        let running = transport.spawn(NodeCore {
            shared: shared.clone(),
        })?;
        Ok(Node {
            node_id: config.node_id,
            ops: shared.clone(),
            control: shared,
            running: Some(running),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Totem state, ring id and members now.
    pub fn status(&self) -> NodeStatus {
        self.control.status()
    }

    /// Handle-layer counters.
    pub fn stats(&self) -> NodeStats {
        self.control.stats()
    }

    /// The transport's counters (the io_uring driver's), if it keeps any.
    pub fn transport_counters(&self) -> Option<cpg_uring::Snapshot> {
        self.running.as_ref().and_then(|r| r.counters())
    }

    /// Start (`true`, clearing earlier records) or stop recording, for
    /// every transmit that reads from a driver buffer (a zero-copy
    /// buffer), which bytes it reads: the zero-copy proof.
    pub fn record_buf_sends(&self, on: bool) {
        self.control.record_buf_sends(on);
    }

    /// The sends recorded since [`Node::record_buf_sends`].
    pub fn buf_sends(&self) -> Vec<BufSend> {
        self.control.buf_sends()
    }

    pub(crate) fn ops(&self) -> Arc<dyn NodeOps> {
        self.ops.clone()
    }

    /// Stop gracefully: a LEAVE tells the others at once; open handles
    /// answer `LIBRARY` from now on.
    pub fn stop(mut self) {
        self.halt(true);
    }

    /// Stop abruptly, as if the process died: nothing is sent, the others
    /// find out by token loss (NODEDOWN).
    pub fn kill(mut self) {
        self.halt(false);
    }

    fn halt(&mut self, graceful: bool) {
        self.control.shutdown(graceful);
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.halt(true);
        }
    }
}

/// A switch that holds a transport's threads before they touch the engine
/// (the loopback transport's "freeze", a SIGSTOP of the node's engine).
#[derive(Default)]
pub(crate) struct Gate {
    frozen: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    pub(crate) fn set(&self, frozen: bool) {
        *self.frozen.lock().unwrap_or_else(|e| e.into_inner()) = frozen;
        self.cond.notify_all();
    }
    /// Wait while frozen.
    pub(crate) fn pass(&self) {
        let mut f = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        while *f {
            f = self.cond.wait(f).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The timer thread shared by the thread-based transports: sleeps until
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
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.wake = true;
        self.cond.notify_one();
    }

    /// A receive path computed a new deadline: wake the timer thread if it
    /// is earlier than the one it sleeps towards.
    pub(crate) fn deadline(&self, d: Option<Instant>) {
        let Some(d) = d else { return };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.deadline.is_none_or(|cur| d < cur) {
            s.deadline = Some(d);
            s.wake = true;
            self.cond.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stop = true;
        self.cond.notify_one();
    }

    /// Spawn the timer thread.
    pub(crate) fn spawn<F: FrameBuf + Send + Sync + 'static>(
        self: &Arc<Self>,
        name: String,
        core: NodeCore<F>,
        send: Arc<dyn Fn(Transmit<F>) + Send + Sync>,
        gate: Option<Arc<Gate>>,
    ) -> io::Result<JoinHandle<()>> {
        let t = self.clone();
        let w = self.clone();
        core.set_waker(Arc::new(move || w.wake()));
        std::thread::Builder::new().name(name).spawn(move || loop {
            {
                let mut s = t.state.lock().unwrap_or_else(|e| e.into_inner());
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
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        None => s = t.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
                    }
                }
                s.wake = false;
            }
            if let Some(g) = &gate {
                g.pass();
            }
            core.handle_timeout();
            let d = core.poll_outputs(&mut |tx| send(tx));
            t.state.lock().unwrap_or_else(|e| e.into_inner()).deadline = d;
        })
    }
}

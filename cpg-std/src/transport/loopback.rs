//! An in-process transport: N nodes in one process, frames carried over
//! channels (`F = Arc<[u8]>`). For tests and examples; with switches to cut
//! a node off (a partition or a stopped process, as the others see it)
//! and to freeze a node's engine.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::thread::JoinHandle;

use cpg_core::engine::{Dest, Transmit};
use cpg_core::NodeId;

use super::{Gate, HeapZc, NodeState, Running, Ticker, Transport, ZcAllocator};
use crate::config::NodeConfig;

type Frame = Arc<[u8]>;
type Packet = (NodeId, Frame);

#[derive(Default)]
struct NetInner {
    ports: Mutex<BTreeMap<NodeId, Sender<Packet>>>,
    cut: Mutex<BTreeSet<NodeId>>,
    gates: Mutex<BTreeMap<NodeId, Arc<Gate>>>,
}

/// A network of in-process nodes.
#[derive(Clone, Default)]
pub struct LoopbackNet {
    inner: Arc<NetInner>,
}

impl std::fmt::Debug for LoopbackNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackNet").finish()
    }
}

impl LoopbackNet {
    /// An empty network.
    pub fn new() -> LoopbackNet {
        LoopbackNet::default()
    }

    /// The transport of node `config.node_id` on this network (the node
    /// layer starts it: [`LoopbackNet::start`]).
    pub(crate) fn transport(&self, config: &NodeConfig) -> LoopbackTransport {
        LoopbackTransport {
            net: self.clone(),
            id: config.node_id,
            zc_max: config.zcb_max,
        }
    }

    /// Cut node `id` off (every frame to or from it is dropped), or heal it.
    pub fn set_cut(&self, id: NodeId, cut: bool) {
        let mut c = lock(&self.inner.cut);
        if cut {
            c.insert(id);
        } else {
            c.remove(&id);
        }
    }

    /// Freeze node `id`'s engine (its transport threads stop before
    /// touching it; frames to it queue up), or thaw it. Application calls
    /// still reach the engine: a frozen node accepts sends and joins but
    /// delivers nothing, so requests stay in flight.
    pub fn set_frozen(&self, id: NodeId, frozen: bool) {
        if let Some(g) = lock(&self.inner.gates).get(&id) {
            g.set(frozen);
        }
    }

    fn send(&self, from: NodeId, t: Transmit<Frame>) {
        {
            let cut = lock(&self.inner.cut);
            if cut.contains(&from) {
                return;
            }
        }
        let bytes: Frame = Arc::from(t.frame.to_vec());
        let ports = lock(&self.inner.ports);
        let cut = lock(&self.inner.cut);
        match t.dest {
            Dest::Node(n) => {
                if let Some(p) = ports.get(&n).filter(|_| !cut.contains(&n) || n == from) {
                    let _ = p.send((from, bytes));
                }
            }
            Dest::AllOthers => {
                for (id, p) in ports.iter() {
                    if *id != from && !cut.contains(id) {
                        let _ = p.send((from, bytes.clone()));
                    }
                }
            }
        }
    }
}

pub(crate) struct LoopbackTransport {
    net: LoopbackNet,
    id: NodeId,
    zc_max: usize,
}

struct LoopbackRunning {
    net: LoopbackNet,
    id: NodeId,
    ticker: Arc<Ticker>,
    gate: Arc<Gate>,
    threads: Vec<JoinHandle<()>>,
}

impl Transport for LoopbackTransport {
    type Frame = Frame;

    fn zc_allocator(&self) -> Arc<dyn ZcAllocator<Frame>> {
        Arc::new(HeapZc { max: self.zc_max })
    }

    fn spawn(self, core: Arc<NodeState<Frame>>) -> io::Result<Box<dyn Running>> {
        let (tx, rx): (Sender<Packet>, Receiver<Packet>) = channel();
        lock(&self.net.inner.ports).insert(self.id, tx);
        let gate = Arc::new(Gate::default());
        lock(&self.net.inner.gates).insert(self.id, gate.clone());
        let ticker = Ticker::new();
        let (net, id) = (self.net.clone(), self.id);
        let send: Arc<dyn Fn(Transmit<Frame>) + Send + Sync> = Arc::new(move |t| net.send(id, t));
        let timer = ticker.spawn(
            format!("cpg-timer-{}", self.id),
            core.clone(),
            send.clone(),
            Some(gate.clone()),
        )?;
        let t2 = ticker.clone();
        let g2 = gate.clone();
        let recv = std::thread::Builder::new()
            .name(format!("cpg-recv-{}", self.id))
            .spawn(move || {
                while let Ok((from, frame)) = rx.recv() {
                    g2.pass();
                    core.handle_packet(from, frame);
                    let d = core.poll_outputs(&mut |t| send(t));
                    t2.deadline(d);
                }
            })?;
        Ok(Box::new(LoopbackRunning {
            net: self.net,
            id: self.id,
            ticker,
            gate,
            threads: vec![timer, recv],
        }))
    }
}

impl Running for LoopbackRunning {
    fn stop(self: Box<Self>) {
        self.gate.set(false);
        lock(&self.net.inner.gates).remove(&self.id);
        self.ticker.stop();
        let mut threads = self.threads;
        if !threads.is_empty() {
            let _ = threads.remove(0).join();
        }
        // dropping the only sender ends the receive thread
        lock(&self.net.inner.ports).remove(&self.id);
        for t in threads {
            let _ = t.join();
        }
    }
    fn gate(&self) -> Option<Arc<Gate>> {
        Some(self.gate.clone())
    }
}

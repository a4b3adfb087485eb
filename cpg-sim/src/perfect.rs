//! Engines on a perfect network: the one in-memory driver for tests and
//! benchmarks that need no faults.
//!
//! Nodes `1..=n`, every frame delivered once, in the order sent, with no
//! delay; when nothing is in flight, time jumps to the earliest deadline
//! and every node due then handles its timeout. No workload, no checkers,
//! no PRNG: a [`Cluster`] does only what its caller asks, as fast as the
//! engines allow. `cpg-core`'s smoke tests pin the basic story on it (ring
//! forms, joins, ordered delivery, SAFE, fragmentation, zero copy, node
//! loss) and the `benches` crate measures the engine on it; [`crate::Sim`]
//! is the faulty network, with checkers after every step.
//!
//! Each node is a [`SimNode`], so the calling order (`poll_persist`, then
//! `poll_transmit`, `poll_event`, `poll_release`, `poll_timeout`) is the
//! simulator's own, written once.

use std::collections::VecDeque;

use cpg_core::engine::{Dest, Engine, EngineOptions, Event, FrameRef, Request, State};
use cpg_core::limits::Config;
use cpg_core::{CsError, Duration, GroupName, Instant, NodeId};

use crate::network::Frame;
use crate::node::{Outputs, RestartMode, SimNode};

/// A transmitted frame that read a driver buffer (a received frame re-sent,
/// or a zero-copy buffer): where the buffer starts, and which bytes of it
/// went out. Zero-copy tests check the bytes lie inside the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufSend {
    /// Address of the buffer's first byte.
    pub buf: usize,
    /// Address of the first byte sent from it.
    pub seg: usize,
    /// Bytes sent from it.
    pub len: usize,
    /// Bytes in engine memory sent in front of them (the headers of a
    /// gather; 0 when the frame lies wholly in the buffer).
    pub head_len: usize,
}

/// N engines over a lossless, in-order, zero-delay network.
pub struct Cluster {
    nodes: Vec<SimNode>,
    now: Instant,
    /// Frames in flight: (index of the receiver, sender id, bytes).
    queue: VecDeque<(usize, NodeId, Frame)>,
    /// Reused for every drain.
    out: Outputs,
    record: bool,
    events: Vec<Vec<Event<Frame>>>,
    /// Application messages delivered, per node (index = node id − 1).
    pub delivered: Vec<u64>,
    /// Application payload bytes delivered, per node.
    pub delivered_bytes: Vec<u64>,
    /// Every transmit that read a driver buffer, in order (while recording).
    pub buf_sends: Vec<BufSend>,
}

impl Cluster {
    /// `n` nodes (ids `1..=n`) with [`Config::fast`], the checker trace on,
    /// every node started at time 0 with ring seq 1.
    pub fn new(n: usize) -> Cluster {
        Self::with(
            n,
            EngineOptions {
                trace: true,
                seq_base: 0,
            },
            |_| {},
        )
    }

    /// As [`Cluster::new`], with these options and each node's
    /// configuration adjusted by `tweak`.
    ///
    /// # Panics
    /// If an engine refuses its configuration.
    pub fn with(n: usize, options: EngineOptions, tweak: impl Fn(&mut Config)) -> Cluster {
        let ids: Vec<NodeId> = (1..=n as NodeId).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut config = Config::fast(id, &ids);
                tweak(&mut config);
                let mut node = SimNode::new(id, config, Vec::new());
                node.trace = options.trace;
                node.seq_base = options.seq_base;
                node
            })
            .collect();
        let mut c = Cluster {
            nodes,
            now: Instant::ZERO,
            queue: VecDeque::new(),
            out: Outputs::default(),
            record: true,
            events: vec![Vec::new(); n],
            delivered: vec![0; n],
            delivered_bytes: vec![0; n],
            buf_sends: Vec::new(),
        };
        for i in 0..n {
            let now = c.now;
            let out = c.nodes[i]
                .start(now, RestartMode::Persisted)
                .expect("engine refused its configuration");
            c.out = out;
            c.route(i);
        }
        c
    }

    /// Keep every event and every [`BufSend`] (the default), or only count
    /// deliveries (benchmarks: the logs would grow without bound). Turning
    /// it off drops what was kept.
    pub fn record(&mut self, on: bool) {
        self.record = on;
        if !on {
            self.events.iter_mut().for_each(Vec::clear);
            self.buf_sends.clear();
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes, live or killed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No nodes at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The engine of node `i + 1`.
    ///
    /// # Panics
    /// If it was killed.
    pub fn engine(&self, i: usize) -> &Engine<Frame> {
        self.nodes[i].engine.as_ref().expect("node was killed")
    }

    /// The engine of node `i + 1`, to call it directly; call
    /// [`Cluster::drain`] afterwards to route what it produced.
    ///
    /// # Panics
    /// If it was killed.
    pub fn engine_mut(&mut self, i: usize) -> &mut Engine<Frame> {
        self.nodes[i].engine.as_mut().expect("node was killed")
    }

    /// Events node `i + 1` produced so far (while recording).
    pub fn events(&self, i: usize) -> &[Event<Frame>] {
        &self.events[i]
    }

    /// Payloads node `i + 1` delivered in `group` so far, in order (while
    /// recording).
    pub fn delivered_in(&self, i: usize, group: &GroupName) -> Vec<Vec<u8>> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                Event::Deliver {
                    group: g, payload, ..
                } if **g == *group => Some(payload.bytes().to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Submit a request at node `i + 1` and route what it produced.
    ///
    /// # Errors
    /// The engine's answer.
    pub fn submit(&mut self, i: usize, req: Request<'_>) -> Result<(), CsError> {
        let now = self.now;
        let r = self.engine_mut(i).submit(now, req);
        self.drain(i);
        r
    }

    /// `cpg_join` of process `pid` to `group` on every live node.
    ///
    /// # Panics
    /// If an engine refuses it.
    pub fn join_all(&mut self, pid: u32, group: &GroupName) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_live() {
                let req = Request::Join {
                    pid,
                    group,
                    flags: 0,
                };
                self.submit(i, req).expect("join refused");
            }
        }
    }

    /// Whether every live node sees `count` members in `group`.
    pub fn group_has(&self, group: &GroupName, count: usize) -> bool {
        self.live().all(|e| e.group_members(group).len() == count)
    }

    /// Route everything node `i + 1` produced since its last drain.
    pub fn drain(&mut self, i: usize) {
        let mut out = std::mem::take(&mut self.out);
        self.nodes[i].drain_into(None, &mut out);
        self.out = out;
        self.route(i);
    }

    /// Crash node `i + 1`: its engine is gone, and so is every frame in
    /// flight from or to it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].crash();
        let id = self.nodes[i].id;
        self.queue.retain(|&(to, from, _)| to != i && from != id);
    }

    /// Whether every live node is OPERATIONAL in one ring of all live nodes.
    pub fn converged(&self) -> bool {
        let count = self.live().count();
        let mut live = self.live();
        let Some(first) = live.next() else {
            return false;
        };
        let ring = first.ring_id();
        std::iter::once(first).chain(live).all(|e| {
            e.state() == State::Operational && e.ring_id() == ring && e.members().len() == count
        })
    }

    /// Deliver the next frame in flight, or else fire the next deadline.
    /// False when nothing is in flight and no timer is armed.
    pub fn step(&mut self) -> bool {
        if let Some((to, from, frame)) = self.queue.pop_front() {
            let now = self.now;
            if let Some(e) = self.nodes[to].engine.as_mut() {
                e.handle_packet(now, from, frame);
                self.drain(to);
            }
            return true;
        }
        let Some(next) = self.live().filter_map(|e| e.poll_timeout()).min() else {
            return false;
        };
        self.now = self.now.max(next);
        for i in 0..self.nodes.len() {
            let now = self.now;
            if let Some(e) = self.nodes[i].engine.as_mut() {
                if e.poll_timeout().is_some_and(|d| d <= now) {
                    e.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        true
    }

    /// Run for `d` of virtual time (or until nothing is left to do).
    ///
    /// # Panics
    /// After 50 million steps (a livelock).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0u64;
        while self.now < end && self.step() {
            steps += 1;
            assert!(steps < 50_000_000, "runaway");
        }
    }

    /// Run until `done` holds, for at most `limit` of virtual time; returns
    /// whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        done(self)
    }

    fn live(&self) -> impl Iterator<Item = &Engine<Frame>> + '_ {
        self.nodes.iter().filter_map(|n| n.engine.as_ref())
    }

    /// Put what node `i + 1` produced (in `self.out`) on the network and in
    /// the logs.
    fn route(&mut self, i: usize) {
        let from = self.nodes[i].id;
        let n = self.nodes.len();
        for t in self.out.transmits.drain(..) {
            if self.record {
                if let Some(b) = t.frame.buf() {
                    let [head, body] = t.frame.segments();
                    let (seg, head_len) = match t.frame {
                        FrameRef::Gather { .. } => (body, head.len()),
                        _ => (head, 0),
                    };
                    self.buf_sends.push(BufSend {
                        buf: b.as_ptr() as usize,
                        seg: seg.as_ptr() as usize,
                        len: seg.len(),
                        head_len,
                    });
                }
            }
            // Whole frames travel as they are (shared, never written);
            // pieces of a zero-copy buffer are copied into one frame.
            let frame: Frame = match t.frame {
                FrameRef::Own(a) => a.into(),
                FrameRef::Rx(f) => f,
                other => other.to_vec().into(),
            };
            match t.dest {
                Dest::Node(to) => self.queue.push_back(((to - 1) as usize, from, frame)),
                Dest::AllOthers => {
                    for j in (0..n).filter(|&j| j != i) {
                        self.queue.push_back((j, from, frame.clone()));
                    }
                }
            }
        }
        for ev in self.out.events.drain(..) {
            if let Event::Deliver { payload, .. } = &ev {
                self.delivered[i] += 1;
                self.delivered_bytes[i] += payload.len() as u64;
            }
            if self.record {
                self.events[i].push(ev);
            }
        }
    }
}

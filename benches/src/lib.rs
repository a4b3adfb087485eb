//! Benchmarks live in `benches/benches/` (criterion). This library holds
//! the in-memory cluster they share: N engines over a lossless, zero-delay
//! network, driven as fast as the engines allow (the simulator without
//! faults, without its checkers).

use std::collections::VecDeque;
use std::sync::Arc;

use cpg_core::engine::{Dest, Engine, EngineOptions, Event, Request};
use cpg_core::limits::Config;
use cpg_core::{Duration, GroupName, Guarantee, Instant};

/// A frame in the in-memory network.
pub type Frame = Arc<[u8]>;

/// N engines, one group, every node joined.
pub struct MemCluster {
    nodes: Vec<Engine<Frame>>,
    queue: VecDeque<(usize, u32, Frame)>,
    now: Instant,
    group: GroupName,
    /// Application messages delivered, per node.
    pub delivered: Vec<u64>,
    /// Application payload bytes delivered, per node.
    pub delivered_bytes: Vec<u64>,
}

impl MemCluster {
    /// Form a ring of `n` nodes (Corosync's default settings except faster
    /// timers and `window_size`/`max_messages`), join every node to one group.
    pub fn new(n: usize, netmtu: usize) -> MemCluster {
        let ids: Vec<u32> = (1..=n as u32).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut c = Config::fast(id, &ids);
                c.netmtu = netmtu;
                Engine::new(c, EngineOptions::default(), 1, Instant::ZERO).expect("config")
            })
            .collect();
        let mut c = MemCluster {
            nodes,
            queue: VecDeque::new(),
            now: Instant::ZERO,
            group: GroupName::new(b"bench").expect("name"),
            delivered: vec![0; n],
            delivered_bytes: vec![0; n],
        };
        for i in 0..n {
            c.drain(i);
        }
        let deadline = Instant(Duration::from_millis(30_000).as_nanos());
        while !c.formed() {
            assert!(c.step(), "ring did not form");
            assert!(c.now < deadline, "ring did not form in time");
        }
        for i in 0..n {
            let g = c.group.clone();
            let now = c.now;
            c.nodes[i]
                .submit(
                    now,
                    Request::Join {
                        pid: 1,
                        group: &g,
                        flags: 0,
                    },
                )
                .expect("join");
            c.drain(i);
        }
        while c.nodes.iter().any(|e| e.group_members(&c.group).len() < n) {
            assert!(c.step(), "joins not delivered");
        }
        c
    }

    fn formed(&self) -> bool {
        let r = self.nodes[0].ring_id();
        self.nodes.iter().all(|e| {
            e.state() == cpg_core::engine::State::Operational
                && e.ring_id() == r
                && e.members().len() == self.nodes.len()
        })
    }

    fn drain(&mut self, i: usize) {
        let from = self.nodes[i].node_id();
        let n = self.nodes.len();
        let e = &mut self.nodes[i];
        while e.poll_persist().is_some() {}
        while let Some(t) = e.poll_transmit() {
            let f: Frame = match t.frame {
                cpg_core::engine::FrameRef::Own(a) => a,
                cpg_core::engine::FrameRef::Rx(f) => f,
                other => Arc::from(other.to_vec()),
            };
            match t.dest {
                Dest::Node(to) => self.queue.push_back(((to - 1) as usize, from, f)),
                Dest::AllOthers => {
                    for j in 0..n {
                        if j != i {
                            self.queue.push_back((j, from, f.clone()));
                        }
                    }
                }
            }
        }
        while let Some(ev) = e.poll_event() {
            if let Event::Deliver { payload, .. } = ev {
                self.delivered[i] += 1;
                self.delivered_bytes[i] += payload.len() as u64;
            }
        }
        while e.poll_release().is_some() {}
    }

    /// Deliver one packet, or fire the next timer. False when idle.
    pub fn step(&mut self) -> bool {
        if let Some((to, from, f)) = self.queue.pop_front() {
            self.nodes[to].handle_packet(self.now, from, f);
            self.drain(to);
            return true;
        }
        let Some(t) = self.nodes.iter().filter_map(|e| e.poll_timeout()).min() else {
            return false;
        };
        self.now = self.now.max(t);
        for i in 0..self.nodes.len() {
            if self.nodes[i].poll_timeout().is_some_and(|d| d <= self.now) {
                self.nodes[i].handle_timeout(self.now);
                self.drain(i);
            }
        }
        true
    }

    /// Every node multicasts `per_node` messages of `size` bytes (retrying on
    /// TRY_AGAIN while the ring drains), then runs until all are delivered
    /// everywhere. Returns messages delivered at node 0.
    pub fn run_round(&mut self, per_node: usize, payload: &[u8], guarantee: Guarantee) -> u64 {
        let n = self.nodes.len();
        let start = self.delivered[0];
        let target = start + (per_node * n) as u64;
        let mut sent = vec![0usize; n];
        let g = self.group.clone();
        while self.delivered.iter().any(|&d| d < target) {
            for (i, sent) in sent.iter_mut().enumerate() {
                while *sent < per_node {
                    let now = self.now;
                    let r = self.nodes[i].submit(
                        now,
                        Request::Mcast {
                            pid: 1,
                            group: &g,
                            guarantee,
                            iov: &[payload],
                        },
                    );
                    if r.is_err() {
                        break;
                    }
                    *sent += 1;
                    self.drain(i);
                }
            }
            if !self.step() {
                break;
            }
        }
        self.delivered[0] - start
    }
}

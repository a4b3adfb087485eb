//! Helpers for the handle-layer tests: recording callbacks, and waits on
//! conditions with generous deadlines (never sleep-and-hope: every wait
//! polls the handle's fd and re-checks a condition until a deadline).
#![allow(dead_code)]

pub mod procs;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg_core::engine::State;
use cpg_std::testing::{self, BufSend};
use cpg_std::{
    Cpg, CsError, DispatchFlags, GroupName, Guarantee, MemberAddr, ModelV1, Node, NodeId, Reason,
    RingId, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
use rustix::event::{PollFd, PollFlags};

/// Generous: the machine is shared and tests run in parallel.
pub const LONG: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Msg {
        group: Vec<u8>,
        from: MemberAddr,
        data: Vec<u8>,
    },
    Conf {
        group: Vec<u8>,
        members: Vec<MemberAddr>,
        left: Vec<(MemberAddr, Reason)>,
        joined: Vec<(MemberAddr, Reason)>,
    },
    Totem {
        ring: RingId,
        members: Vec<NodeId>,
    },
}

#[derive(Clone, Default)]
pub struct Rec(pub Arc<Mutex<Vec<Ev>>>);

impl Rec {
    pub fn events(&self) -> Vec<Ev> {
        self.0.lock().unwrap().clone()
    }
    pub fn msgs(&self) -> Vec<Vec<u8>> {
        self.events()
            .into_iter()
            .filter_map(|e| {
                if let Ev::Msg { data, .. } = e {
                    Some(data)
                } else {
                    None
                }
            })
            .collect()
    }
    pub fn msg_count(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Ev::Msg { .. }))
            .count()
    }
    pub fn confs(&self) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|e| matches!(e, Ev::Conf { .. }))
            .collect()
    }
    pub fn model(&self, totem: bool, flags: u32) -> ModelV1 {
        let (a, b, c) = (self.0.clone(), self.0.clone(), self.0.clone());
        ModelV1 {
            deliver: Some(Box::new(move |_, d| {
                a.lock().unwrap().push(Ev::Msg {
                    group: d.group.as_bytes().to_vec(),
                    from: d.sender,
                    data: d.msg.to_vec(),
                })
            })),
            confchg: Some(Box::new(move |_, c| {
                b.lock().unwrap().push(Ev::Conf {
                    group: c.group.as_bytes().to_vec(),
                    members: c.members.to_vec(),
                    left: c.left.to_vec(),
                    joined: c.joined.to_vec(),
                })
            })),
            totem_confchg: if totem {
                Some(Box::new(move |_, ring, m| {
                    c.lock().unwrap().push(Ev::Totem {
                        ring,
                        members: m.to_vec(),
                    })
                }))
            } else {
                None
            },
            flags,
        }
    }
}

/// A handle with its recorder.
pub struct H {
    pub cpg: Cpg,
    pub rec: Rec,
    pub pid: u32,
}

impl H {
    pub fn open(node: &Node, pid: u32) -> H {
        Self::open_with(node, pid, false, 0)
    }
    pub fn open_totem(node: &Node, pid: u32) -> H {
        Self::open_with(node, pid, true, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF)
    }
    pub fn open_with(node: &Node, pid: u32, totem: bool, flags: u32) -> H {
        let rec = Rec::default();
        let cpg = testing::model_initialize_with_pid(node, pid, rec.model(totem, flags), None)
            .expect("initialize");
        H { cpg, rec, pid }
    }
    pub fn me(&self) -> MemberAddr {
        MemberAddr {
            nodeid: self.cpg.local_get().unwrap(),
            pid: self.pid,
        }
    }
    /// Dispatch until `f` holds on the events, or the deadline passes.
    pub fn wait(&self, f: impl Fn(&[Ev]) -> bool) -> bool {
        let end = Instant::now() + LONG;
        loop {
            let _ = self.cpg.dispatch(DispatchFlags::All);
            if f(&self.rec.0.lock().unwrap()) {
                return true;
            }
            if Instant::now() > end {
                eprintln!(
                    "wait timed out on handle pid {} {:?}; events:",
                    self.pid, self.cpg
                );
                for e in self
                    .rec
                    .0
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| !matches!(e, Ev::Msg { .. }))
                {
                    eprintln!("  {e:?}");
                }
                return false;
            }
            let mut fds = [PollFd::new(&self.cpg, PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
    }
    pub fn wait_msgs(&self, n: usize) -> bool {
        self.wait(|e| e.iter().filter(|e| matches!(e, Ev::Msg { .. })).count() >= n)
    }
    /// Wait for the own JOIN confchg.
    pub fn wait_joined(&self, g: &GroupName) -> bool {
        let me = self.me();
        let g = g.as_bytes().to_vec();
        self.wait(move |e| {
            e.iter().any(|e| matches!(e, Ev::Conf { group, joined, .. } if *group == g && joined.iter().any(|(m, r)| *m == me && *r == Reason::Join)))
        })
    }
    /// Wait until the latest confchg of `g` lists exactly `n` members.
    pub fn wait_members(&self, g: &GroupName, n: usize) -> bool {
        let g = g.as_bytes().to_vec();
        self.wait(move |e| {
            e.iter().rev().find_map(|e| match e {
                Ev::Conf { group, members, .. } if *group == g => Some(members.len() == n),
                _ => None,
            }) == Some(true)
        })
    }
}

/// A handle as process `pid` on each of `nodes`, each joined to `g` and
/// seeing every one of them.
pub fn join_all(nodes: &[Node], pid: u32, g: &GroupName) -> Vec<H> {
    let hs: Vec<H> = nodes.iter().map(|n| H::open(n, pid)).collect();
    for h in &hs {
        h.cpg.join(g).unwrap();
    }
    for h in &hs {
        assert!(h.wait_members(g, hs.len()), "{} members", hs.len());
    }
    hs
}

/// One step of the zero-copy proof: `hs[0]`, a handle on `node`,
/// multicasts a zero-copy buffer of `size` bytes (a pattern drawn from `k`)
/// while `node` records the sends that read from driver buffers; once
/// every handle delivered it intact, the address of the buffer's payload
/// and the sends recorded.
pub fn zcb_send_recorded(node: &Node, hs: &[H], k: usize, size: usize) -> (usize, Vec<BufSend>) {
    let mut zb = loop {
        match hs[0].cpg.zcb_alloc(size) {
            Ok(b) => break b,
            Err(CsError::TryAgain) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("zcb_alloc({size}): {e}"),
        }
    };
    for (i, b) in zb.iter_mut().enumerate() {
        *b = (i * 31 + k) as u8;
    }
    let expect = zb.to_vec();
    let start = zb.as_ptr() as usize;
    testing::record_buf_sends(node, true);
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
    let sends = testing::buf_sends(node);
    testing::record_buf_sends(node, false);
    (start, sends)
}

/// Wait until `f` holds, re-checking every few milliseconds.
pub fn until(f: impl Fn() -> bool) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// Every node operational in one ring of exactly `nodes`' ids.
pub fn converged(nodes: &[&Node]) -> bool {
    until(|| {
        let st: Vec<_> = nodes.iter().map(|n| n.status()).collect();
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.node_id()).collect();
        st.iter().all(|s| {
            s.state == State::Operational && s.ring_id == st[0].ring_id && {
                let mut m = s.members.clone();
                m.sort();
                let mut i = ids.clone();
                i.sort();
                m == i
            }
        })
    })
}

pub fn group(name: &str) -> GroupName {
    GroupName::new(name.as_bytes()).unwrap()
}

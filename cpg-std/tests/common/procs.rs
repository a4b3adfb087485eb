//! Real node processes (`cpgtool node`) on 127.0.0.1, driven through
//! their JSON-lines protocol. Every wait is on an event with a deadline.
#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use cpg_std::config::ConfigFile;
use serde_json::{json, Value};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct NodeProc {
    pub child: Child,
    stdin: ChildStdin,
}

pub struct Procs {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub file: ConfigFile,
    pub nodes: Vec<Option<NodeProc>>,
    tx: Sender<(u32, Value)>,
    rx: Receiver<(u32, Value)>,
    /// Every event and reply received, in arrival order.
    pub seen: Vec<(u32, Value)>,
    cursor: usize,
}

/// `n` distinct free UDP ports on 127.0.0.1 (all held while picking).
pub fn free_ports(n: usize) -> Vec<SocketAddrV4> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        })
        .collect()
}

impl Procs {
    /// Write a config for `n` nodes (token 2 s, no coefficient: robust on a
    /// loaded 2-core machine, detection in token + consensus = 4.4 s) and
    /// start them.
    pub fn start(name: &str, n: usize, tweak: impl FnOnce(&mut ConfigFile)) -> Procs {
        let dir = std::env::temp_dir().join(format!("cpg-procs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addrs = free_ports(n);
        let nodes: Vec<(u32, SocketAddrV4)> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u32 + 1, *a))
            .collect();
        let mut file = ConfigFile::new(name, &nodes);
        file.state_dir = dir.join("state");
        file.totem.token_ms = Some(2000);
        file.totem.token_coefficient_ms = Some(0);
        tweak(&mut file);
        let config = dir.join("cluster.toml");
        std::fs::write(&config, file.to_toml()).unwrap();
        let (tx, rx) = channel();
        let mut p = Procs {
            dir,
            config,
            file,
            nodes: (0..n).map(|_| None).collect(),
            tx,
            rx,
            seen: Vec::new(),
            cursor: 0,
        };
        for id in 1..=n as u32 {
            p.spawn(id, &[]);
        }
        for id in 1..=n as u32 {
            p.wait(id, |v| v["ev"] == "ready");
        }
        p
    }

    /// Start (or restart) node `id`'s process.
    pub fn spawn(&mut self, id: u32, extra: &[&str]) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cpgtool"))
            .args(["node", "--config"])
            .arg(&self.config)
            .args(["--nodeid", &id.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cpgtool node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let tx = self.tx.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(mut v) => {
                        v["_pid"] = json!(pid);
                        if tx.send((id, v)).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("node {id}: {line}"),
                }
            }
        });
        self.nodes[id as usize - 1] = Some(NodeProc { child, stdin });
    }

    pub fn pid(&self, id: u32) -> u32 {
        self.nodes[id as usize - 1]
            .as_ref()
            .expect("running")
            .child
            .id()
    }

    pub fn send(&mut self, id: u32, v: Value) {
        let p = self.nodes[id as usize - 1].as_mut().expect("running");
        writeln!(p.stdin, "{v}").unwrap();
        p.stdin.flush().unwrap();
    }

    fn pump(&mut self, until: Instant) -> bool {
        let left = match until.checked_duration_since(Instant::now()) {
            Some(d) => d,
            None => return false,
        };
        match self.rx.recv_timeout(left) {
            Ok(e) => {
                self.seen.push(e);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// The first not-yet-consumed message from `id` (after the cursor of
    /// earlier waits on `id`... simply: any message from `id` received
    /// after the last `mark`) matching `f`.
    pub fn wait(&mut self, id: u32, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_since(self.cursor, id, f)
    }

    pub fn wait_since(&mut self, from: usize, id: u32, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if self.seen[i].0 == id && f(&self.seen[i].1) {
                    return self.seen[i].1.clone();
                }
                i += 1;
            }
            if !self.pump(end) {
                let tail: Vec<String> = self
                    .seen
                    .iter()
                    .rev()
                    .take(40)
                    .map(|(n, v)| format!("{n}: {v}"))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!(
                    "node {id}: timed out waiting; recent messages:\n{}",
                    tail.join("\n")
                );
            }
        }
    }

    /// Later waits only look at messages received from now on.
    pub fn mark(&mut self) -> usize {
        while let Ok(e) = self.rx.try_recv() {
            self.seen.push(e);
        }
        self.cursor = self.seen.len();
        self.cursor
    }

    /// Send a command and wait for its reply.
    pub fn call(&mut self, id: u32, v: Value) -> Value {
        let re = v["cmd"].as_str().unwrap().to_string();
        let at = self.mark();
        self.send(id, v);
        self.wait_since(at, id, |r| r["re"] == re.as_str())
    }

    pub fn status(&mut self, id: u32) -> Value {
        self.call(id, json!({"cmd":"status"}))
    }

    /// Poll status until `f` holds.
    pub fn until_status(&mut self, id: u32, f: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.status(id);
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "node {id}: status never satisfied the condition; last {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&mut self, id: u32, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid(id) as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub fn kill(&mut self, id: u32) {
        let mut p = self.nodes[id as usize - 1].take().expect("running");
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
    }

    /// Every running node in one ring of `n` members.
    pub fn wait_ring(&mut self, ids: &[u32]) {
        let end = Instant::now() + DEADLINE;
        loop {
            let st: Vec<Value> = ids.iter().map(|&id| self.status(id)).collect();
            if st.iter().all(|s| {
                s["members"].as_array().map(|m| m.len()) == Some(ids.len())
                    && s["ring"] == st[0]["ring"]
            }) {
                return;
            }
            assert!(Instant::now() < end, "ring never formed: {st:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Join `group` on every node in `ids`, wait until each saw all of them.
    pub fn join_all(&mut self, ids: &[u32], group: &str) {
        let at = self.mark();
        for &id in ids {
            let r = self.call(id, json!({"cmd":"join","group":group}));
            assert_eq!(r["ok"], true, "join on node {id}: {r}");
        }
        for &id in ids {
            self.wait_since(at, id, |v| {
                v["ev"] == "confchg"
                    && v["group"] == group
                    && v["members"].as_array().map(|m| m.len()) == Some(ids.len())
            });
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in self.nodes.iter_mut().flatten() {
            let pid = rustix::process::Pid::from_raw(p.child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `left` entries of a confchg as (nodeid, pid, reason).
pub fn left_of(v: &Value) -> Vec<(u64, u64, u64)> {
    entries(&v["left"])
}
pub fn joined_of(v: &Value) -> Vec<(u64, u64, u64)> {
    entries(&v["joined"])
}
fn entries(v: &Value) -> Vec<(u64, u64, u64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e[0].as_u64().unwrap(),
                        e[1].as_u64().unwrap(),
                        e[2].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

//! Real node processes (`cpgtool node`) on 127.0.0.1, driven through
//! their JSON-lines protocol, read and written as the typed
//! [`cpg_std::cpgtool_proto`] enums. Every wait is on an event with a
//! deadline.
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use cpg_std::config::ConfigFile;
use cpg_std::cpgtool_proto::{
    self, Change, Command, Confchg, Deliver, Event, Reply, Report, Status,
};
use cpg_std::Reason;

pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `cpgtool` binary: Cargo's path in cpg-std's tests; from another
/// package's tests (cpgd's), the one beside the test binary's directory,
/// built first if it is not there.
pub fn cpgtool_exe() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_cpgtool") {
        return PathBuf::from(p);
    }
    let deps = std::env::current_exe().unwrap();
    let dir = deps
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .to_path_buf();
    let exe = dir.join("cpgtool");
    if !exe.exists() {
        let profile = if dir.ends_with("release") {
            "--release"
        } else {
            "--quiet"
        };
        let st = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", profile, "-p", "cpg-std", "--bin", "cpgtool"])
            .status()
            .expect("cargo build cpgtool");
        assert!(st.success(), "cargo build -p cpg-std --bin cpgtool failed");
    }
    exe
}

/// `cpgtool status ARGS`'s stdout (it must succeed).
pub fn cpgtool_status(args: &[&str]) -> String {
    let out = std::process::Command::new(cpgtool_exe())
        .arg("status")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cpgtool status");
    assert!(out.status.success(), "cpgtool status {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `cpgtool status ARGS --json`, parsed.
pub fn cpgtool_status_json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&cpgtool_status(&a)).expect("one JSON object")
}

/// Counter `name` of a `cpgtool status --json` object (it must be there).
pub fn status_counter(v: &serde_json::Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

pub struct NodeProc {
    pub child: Child,
    stdin: ChildStdin,
}

pub struct Procs {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub file: ConfigFile,
    pub nodes: Vec<Option<NodeProc>>,
    tx: Sender<(u32, Report)>,
    rx: Receiver<(u32, Report)>,
    /// Every event and reply received, in arrival order.
    pub seen: Vec<(u32, Report)>,
    cursor: usize,
    /// Each process's stderr goes to `dir/stderr-<id>.log` (else inherited).
    pub stderr_to_files: bool,
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

/// Nodes `1..=n` on distinct free ports of 127.0.0.1.
pub fn local_nodes(n: usize) -> Vec<(u32, SocketAddrV4)> {
    free_ports(n)
        .into_iter()
        .zip(1..)
        .map(|(a, id)| (id, a))
        .collect()
}

impl Procs {
    /// Write a config for `n` nodes (token 2 s, no coefficient: robust on a
    /// loaded 2-core machine, detection in token + consensus = 4.4 s) and
    /// start them.
    pub fn start(name: &str, n: usize, tweak: impl FnOnce(&mut ConfigFile)) -> Procs {
        Procs::start_with(name, n, &[], tweak)
    }

    /// [`Procs::start`], each node process started with `args` too.
    pub fn start_with(
        name: &str,
        n: usize,
        args: &[&str],
        tweak: impl FnOnce(&mut ConfigFile),
    ) -> Procs {
        Procs::start_opts(name, n, args, false, tweak)
    }

    /// [`Procs::start_with`], each process's stderr in a file of its own
    /// ([`Procs::stderr_of`]).
    pub fn start_logged(
        name: &str,
        n: usize,
        args: &[&str],
        tweak: impl FnOnce(&mut ConfigFile),
    ) -> Procs {
        Procs::start_opts(name, n, args, true, tweak)
    }

    /// What process `id` wrote on stderr so far (with `stderr_to_files`).
    pub fn stderr_of(&self, id: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("stderr-{id}.log"))).unwrap_or_default()
    }

    fn start_opts(
        name: &str,
        n: usize,
        args: &[&str],
        stderr_to_files: bool,
        tweak: impl FnOnce(&mut ConfigFile),
    ) -> Procs {
        let dir = std::env::temp_dir().join(format!("cpg-procs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = ConfigFile::new(name, &local_nodes(n));
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
            stderr_to_files,
        };
        for id in 1..=n as u32 {
            p.spawn(id, args);
        }
        for id in 1..=n as u32 {
            p.wait_ready(0, id);
        }
        p
    }

    /// Start (or restart) node `id`'s process; `{id}` in `extra` is
    /// replaced by the node id (a status socket per node).
    pub fn spawn(&mut self, id: u32, extra: &[&str]) {
        let config = self.config.display().to_string();
        let nodeid = id.to_string();
        let extra: Vec<String> = extra.iter().map(|a| a.replace("{id}", &nodeid)).collect();
        let mut args = vec!["node", "--config", &config, "--nodeid", &nodeid];
        args.extend(extra.iter().map(String::as_str));
        self.spawn_node_args(id, &args);
    }

    /// Start (or restart) process `id` as `cpgtool ARGS` (a `node` process,
    /// or a cpgd client: `node --daemon SOCKET`).
    pub fn spawn_node_args(&mut self, id: u32, args: &[&str]) {
        if self.nodes.len() < id as usize {
            self.nodes.resize_with(id as usize, || None);
        }
        let stderr = if self.stderr_to_files {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("stderr-{id}.log")))
                .unwrap();
            Stdio::from(f)
        } else {
            Stdio::inherit()
        };
        let mut child = std::process::Command::new(cpgtool_exe())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn cpgtool node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        cpgtool_proto::spawn_reader(id, stdout, self.tx.clone());
        self.nodes[id as usize - 1] = Some(NodeProc { child, stdin });
    }

    pub fn pid(&self, id: u32) -> u32 {
        self.nodes[id as usize - 1]
            .as_ref()
            .expect("running")
            .child
            .id()
    }

    pub fn send(&mut self, id: u32, cmd: &Command) {
        let p = self.nodes[id as usize - 1].as_mut().expect("running");
        writeln!(p.stdin, "{}", serde_json::to_string(cmd).unwrap()).unwrap();
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

    /// The first message from `id` received since the last [`Procs::mark`]
    /// that `f` picks.
    pub fn wait<T>(&mut self, id: u32, f: impl Fn(&Report) -> Option<T>) -> T {
        self.wait_since(self.cursor, id, f)
    }

    /// The first message from `id` at or after `seen[from]` that `f` picks.
    pub fn wait_since<T>(&mut self, from: usize, id: u32, f: impl Fn(&Report) -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if self.seen[i].0 == id {
                    if let Some(t) = f(&self.seen[i].1) {
                        return t;
                    }
                }
                i += 1;
            }
            if !self.pump(end) {
                let tail: Vec<String> = self
                    .seen
                    .iter()
                    .rev()
                    .take(40)
                    .map(|(n, r)| format!("{n}: {r:?}"))
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

    /// The `ready` event of `id` (since `seen[from]`).
    pub fn wait_ready(&mut self, from: usize, id: u32) {
        self.wait_since(from, id, |r| {
            matches!(r, Report::Event(Event::Ready { .. })).then_some(())
        })
    }

    /// The first group confchg on `id` (since `seen[from]`) that `f` accepts.
    pub fn wait_confchg(&mut self, from: usize, id: u32, f: impl Fn(&Confchg) -> bool) -> Confchg {
        self.wait_since(from, id, |r| match r {
            Report::Event(Event::Confchg(c)) if f(c) => Some(c.clone()),
            _ => None,
        })
    }

    /// The first delivery event on `id` (since `seen[from]`) that `f` accepts.
    pub fn wait_deliver(&mut self, from: usize, id: u32, f: impl Fn(&Deliver) -> bool) -> Deliver {
        self.wait_since(from, id, |r| match r {
            Report::Event(Event::Deliver(d)) if f(d) => Some(d.clone()),
            _ => None,
        })
    }

    /// The end of `id`'s stream (since `seen[from]`): how many sends were
    /// accepted.
    pub fn wait_stream_sent(&mut self, from: usize, id: u32) -> u64 {
        self.wait_since(from, id, |r| match r {
            Report::Reply(Reply::Stream { sent, .. }) => Some(*sent),
            _ => None,
        })
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
    pub fn call(&mut self, id: u32, cmd: Command) -> Reply {
        let at = self.mark();
        self.send(id, &cmd);
        self.wait_since(at, id, |r| match r {
            Report::Reply(re) if cmd.is_answered_by(re) => Some(re.clone()),
            _ => None,
        })
    }

    /// Send a command whose reply is an `Outcome`; whether it succeeded.
    pub fn call_ok(&mut self, id: u32, cmd: Command) -> bool {
        let re = self.call(id, cmd);
        match re.outcome() {
            Some(o) => o.ok,
            None => panic!("node {id}: not an outcome: {re:?}"),
        }
    }

    pub fn status(&mut self, id: u32) -> Status {
        match self.call(id, Command::Status) {
            Reply::Status(s) => s,
            r => unreachable!("status reply {r:?}"),
        }
    }

    /// Poll status until `f` holds.
    pub fn until_status(&mut self, id: u32, f: impl Fn(&Status) -> bool) -> Status {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.status(id);
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "node {id}: status never satisfied the condition; last {s:?}"
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
            let st: Vec<Status> = ids.iter().map(|&id| self.status(id)).collect();
            if st
                .iter()
                .all(|s| s.members.len() == ids.len() && s.ring == st[0].ring)
            {
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
            let join = Command::Join {
                group: group.into(),
            };
            assert!(self.call_ok(id, join), "join on node {id}");
        }
        for &id in ids {
            self.wait_confchg(at, id, |c| c.group == group && c.members.len() == ids.len());
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

/// Whether `c` reports `(node, pid)` among those that left with `reason`.
pub fn left_with(c: &Confchg, node: u32, pid: u32, reason: Reason) -> bool {
    c.left.contains(&Change(node, pid, reason as u32))
}

/// Whether `c` reports `(node, pid)` among those that joined with `reason`.
pub fn joined_with(c: &Confchg, node: u32, pid: u32, reason: Reason) -> bool {
    c.joined.contains(&Change(node, pid, reason as u32))
}

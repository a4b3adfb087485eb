//! Child node processes driven over their stdin/stdout line protocol
//! (`demo` and `bench`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::demo::describe_confchg;
use crate::Res;

// ---- demo -----------------------------------------------------------------

pub(crate) struct Proc {
    pub(crate) id: u32,
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) alive: bool,
}

pub(crate) struct Cluster {
    pub(crate) procs: Vec<Proc>,
    pub(crate) events: Receiver<(u32, Value)>,
    /// Events read while waiting for something else.
    pub(crate) backlog: Vec<(u32, Value, Instant)>,
    /// Confchg and totem events not yet shown.
    pub(crate) log: Vec<(u32, Value, Instant)>,
}

impl Cluster {
    pub(crate) fn start(exe: &Path, config: &Path, n: u32) -> Res<Cluster> {
        let config = config.to_path_buf();
        Self::start_with(exe, n, move |id| {
            vec![
                "node".into(),
                "--config".into(),
                config.display().to_string(),
                "--nodeid".into(),
                id.to_string(),
            ]
        })
    }

    /// Start `n` processes of `exe` with the arguments `args(id)`; each
    /// stdout line that is JSON becomes an event of its id.
    pub(crate) fn start_with(
        exe: &Path,
        n: u32,
        args: impl Fn(u32) -> Vec<String>,
    ) -> Res<Cluster> {
        let (tx, rx) = channel();
        let mut procs = Vec::new();
        for id in 1..=n {
            let mut child = Command::new(exe)
                .args(args(id))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn node {id}: {e}"))?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if tx.send((id, v)).is_err() {
                            break;
                        }
                    }
                }
            });
            procs.push(Proc {
                id,
                child,
                stdin,
                alive: true,
            });
        }
        Ok(Cluster {
            procs,
            events: rx,
            backlog: Vec::new(),
            log: Vec::new(),
        })
    }

    pub(crate) fn send_line(&mut self, id: u32, line: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            let _ = writeln!(p.stdin, "{line}");
            let _ = p.stdin.flush();
        }
    }

    pub(crate) fn send(&mut self, id: u32, v: Value) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            let _ = writeln!(p.stdin, "{v}");
            let _ = p.stdin.flush();
        }
    }

    /// Wait for an event from `id` matching `f` (earlier non-matching
    /// events stay in the backlog).
    pub(crate) fn wait(
        &mut self,
        deadline: Duration,
        mut f: impl FnMut(u32, &Value) -> bool,
    ) -> Res<(u32, Value, Instant)> {
        if let Some(i) = self.backlog.iter().position(|(id, v, _)| f(*id, v)) {
            return Ok(self.backlog.remove(i));
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .ok_or("timed out")?;
            match self.events.recv_timeout(left) {
                Ok((id, v)) => {
                    let at = Instant::now();
                    if v["ev"] == "confchg" || v["ev"] == "totem" {
                        self.log.push((id, v.clone(), at));
                    }
                    if f(id, &v) {
                        return Ok((id, v, at));
                    }
                    self.backlog.push((id, v, at));
                }
                Err(RecvTimeoutError::Timeout) => return Err("timed out".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("all nodes exited".into()),
            }
        }
    }

    pub(crate) fn status(&mut self, id: u32) -> Res<Value> {
        self.send(id, json!({"cmd":"status"}));
        self.wait(Duration::from_secs(20), |i, v| {
            i == id && v["re"] == "status"
        })
        .map(|(_, v, _)| v)
    }

    pub(crate) fn alive(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.alive)
            .map(|p| p.id)
            .collect()
    }

    /// Print the confchgs and totem confchgs received so far.
    pub(crate) fn show_confchgs(&mut self, t0: Instant) {
        while let Ok((id, v)) = self.events.try_recv() {
            let at = Instant::now();
            if v["ev"] == "confchg" || v["ev"] == "totem" {
                self.log.push((id, v.clone(), at));
            }
            self.backlog.push((id, v, at));
        }
        for (id, v, at) in self.log.drain(..) {
            if v["ev"] == "confchg" {
                println!(
                    "  [{:>6.3}s] node {id}: {}",
                    (at - t0).as_secs_f64(),
                    describe_confchg(&v)
                );
            } else {
                println!(
                    "  [{:>6.3}s] node {id}: totem confchg: ring {} members {}",
                    (at - t0).as_secs_f64(),
                    v["ring"].as_str().unwrap_or(""),
                    v["members"]
                );
            }
        }
        // only replies are waited for later
        self.backlog.retain(|(_, v, _)| v.get("re").is_some());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

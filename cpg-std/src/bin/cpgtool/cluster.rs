//! Child processes driven over their stdin/stdout line protocol (`demo`
//! drives `node` processes, `bench` drives `bench-member` processes).

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::error::{Error, Res};
use crate::proto::{self, Event, Reply, Report, Status};

/// One child process.
pub(crate) struct Proc {
    pub(crate) id: u32,
    pub(crate) child: Child,
    stdin: ChildStdin,
    pub(crate) alive: bool,
}

/// A report of process `id`, read at `at`.
pub(crate) type Received = (u32, Report, Instant);

/// The child processes, numbered 1..=n, and what they reported.
pub(crate) struct Cluster {
    pub(crate) procs: Vec<Proc>,
    events: Receiver<(u32, Report)>,
    /// Reports read while waiting for something else.
    backlog: Vec<Received>,
    /// Confchg and totem events not yet shown.
    pub(crate) log: Vec<(u32, Event, Instant)>,
}

impl Cluster {
    /// Start `n` `cpgtool node` processes of `exe` on `config`.
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
    /// stdout line becomes a report of its id.
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
                .map_err(|source| Error::Io {
                    what: "spawn",
                    source,
                })
                .map_err(|e| e.context(format!("node {id}")))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                unreachable!("stdin and stdout are piped");
            };
            proto::spawn_reader(id, stdout, tx.clone());
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

    /// Write `line` to process `id` (if alive).
    pub(crate) fn send_line(&mut self, id: u32, line: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            let _ = writeln!(p.stdin, "{line}");
            let _ = p.stdin.flush();
        }
    }

    /// Send a command to node process `id` (if alive).
    pub(crate) fn send(&mut self, id: u32, cmd: &proto::Command) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            proto::emit(&mut p.stdin, cmd);
        }
    }

    /// Wait for a report matching `f` (earlier non-matching reports stay
    /// in the backlog).
    pub(crate) fn wait(
        &mut self,
        deadline: Duration,
        mut f: impl FnMut(u32, &Report) -> bool,
    ) -> Res<Received> {
        if let Some(i) = self.backlog.iter().position(|(id, r, _)| f(*id, r)) {
            return Ok(self.backlog.remove(i));
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .ok_or(Error::TimedOut)?;
            match self.events.recv_timeout(left) {
                Ok((id, r)) => {
                    let at = Instant::now();
                    if let Report::Event(e @ (Event::Confchg(_) | Event::Totem { .. })) = &r {
                        self.log.push((id, e.clone(), at));
                    }
                    if f(id, &r) {
                        return Ok((id, r, at));
                    }
                    self.backlog.push((id, r, at));
                }
                Err(RecvTimeoutError::Timeout) => return Err(Error::TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Err(Error::AllExited),
            }
        }
    }

    /// Wait for an event of `id` matching `f`.
    pub(crate) fn wait_event(
        &mut self,
        id: u32,
        deadline: Duration,
        mut f: impl FnMut(&Event) -> bool,
    ) -> Res<(Event, Instant)> {
        let (_, r, at) = self.wait(deadline, |i, r| {
            i == id && matches!(r, Report::Event(e) if f(e))
        })?;
        match r {
            Report::Event(e) => Ok((e, at)),
            Report::Reply(_) => unreachable!("matched an event"),
        }
    }

    /// Wait for the reply of `id` matching `f`.
    pub(crate) fn wait_reply(
        &mut self,
        id: u32,
        deadline: Duration,
        mut f: impl FnMut(&Reply) -> bool,
    ) -> Res<Reply> {
        let (_, r, _) = self.wait(deadline, |i, r| {
            i == id && matches!(r, Report::Reply(re) if f(re))
        })?;
        match r {
            Report::Reply(re) => Ok(re),
            Report::Event(_) => unreachable!("matched a reply"),
        }
    }

    /// Send `cmd` to node process `id` and wait for its reply.
    pub(crate) fn call(&mut self, id: u32, cmd: &proto::Command, deadline: Duration) -> Res<Reply> {
        self.send(id, cmd);
        self.wait_reply(id, deadline, |r| cmd.is_answered_by(r))
    }

    /// Ask node process `id` for its status.
    pub(crate) fn status(&mut self, id: u32) -> Res<Status> {
        match self.call(id, &proto::Command::Status, Duration::from_secs(20))? {
            Reply::Status(s) => Ok(s),
            _ => unreachable!("matched a status"),
        }
    }

    /// The statuses of `ids`, in order.
    pub(crate) fn statuses(&mut self, ids: impl IntoIterator<Item = u32>) -> Res<Vec<Status>> {
        ids.into_iter().map(|id| self.status(id)).collect()
    }

    /// The processes not killed.
    pub(crate) fn alive(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.alive)
            .map(|p| p.id)
            .collect()
    }

    /// Move the reports read so far into the backlog and the log; drop
    /// the backlog's events (only replies are waited for later).
    pub(crate) fn drain_events(&mut self) {
        while let Ok((id, r)) = self.events.try_recv() {
            let at = Instant::now();
            if let Report::Event(e @ (Event::Confchg(_) | Event::Totem { .. })) = &r {
                self.log.push((id, e.clone(), at));
            }
            self.backlog.push((id, r, at));
        }
        self.backlog
            .retain(|(_, r, _)| matches!(r, Report::Reply(_)));
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

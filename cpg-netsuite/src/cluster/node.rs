//! One node process: `cpgtool node` started inside a node's namespace with
//! `ip netns exec` (which execs, so the child's pid is the node's pid and
//! signals reach it directly), its stdin for commands and a thread that
//! copies its stdout lines into the [`Log`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;

use super::log::{Log, Member};

/// A running node process.
pub struct NodeProc {
    member: Member,
    child: Child,
    stdin: ChildStdin,
}

/// Where node `id` of the cluster configured by `config` serves
/// `cpgtool status --node` (beside the config).
pub fn status_socket(config: &Path, id: u32) -> std::path::PathBuf {
    config.with_file_name(format!("status-{id}.sock"))
}

impl NodeProc {
    /// Start `cpgtool node --config config --nodeid id --verbose --log-level
    /// info --status-socket` ([`status_socket`]) in `ns`.
    ///
    /// # Errors
    /// The process could not be started.
    pub fn spawn(
        cpgtool: &Path,
        ns: &str,
        config: &Path,
        id: u32,
        log: &Log,
    ) -> Result<NodeProc, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(cpgtool)
            .arg("node")
            .arg("--config")
            .arg(config)
            .args(["--nodeid", &id.to_string(), "--verbose"])
            // the operator's log lines (a link down or up) on stderr
            .args(["--log-level", "info"])
            // `cpgtool status --node` reads it (the path is outside the
            // namespace's network, so the suite reaches it from anywhere)
            .arg("--status-socket")
            .arg(status_socket(config, id))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The node dies with the suite even when the suite is SIGKILLed and
        // no cleanup of ours can run (the parent-death signal survives exec).
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe syscall (prctl).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn node {id}: {e}"))?;
        let stdin = child.stdin.take().ok_or("node stdin")?;
        let stdout = child.stdout.take().ok_or("node stdout")?;
        let stderr = child.stderr.take().ok_or("node stderr")?;
        let member = (id, child.id());
        // stderr (the node's log lines: a link down or up, ...) goes on to
        // ours as before, and into the log as `{"ev":"stderr","line":...}`
        // for the checks that look for a line
        let err_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("node {id}: {line}");
                err_log.push(member, serde_json::json!({"ev": "stderr", "line": line}));
            }
        });
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => log.push(member, v),
                    Err(_) => eprintln!("node {id}: {line}"),
                }
            }
        });
        Ok(NodeProc {
            member,
            child,
            stdin,
        })
    }

    /// (nodeid, pid).
    pub fn member(&self) -> Member {
        self.member
    }

    /// Write one command line. A node that died simply does not answer.
    pub fn send(&mut self, v: &Value) {
        let _ = writeln!(self.stdin, "{v}");
        let _ = self.stdin.flush();
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = Pid::from_raw(self.member.1 as i32) {
            let _ = kill_process(pid, sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        self.signal(Signal::CONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ask the process to quit (it leaves its groups and stops its node);
    /// SIGKILL if it has not exited within `grace`.
    pub fn quit(mut self, grace: Duration) {
        self.send(&serde_json::json!({"cmd":"quit"}));
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_now();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_now();
        }
    }
}

//! The node processes of one run: the config they share, starting,
//! joining, streaming, signalling, restarting them, and the facts the
//! checker needs besides their logs (which processes stayed up, which
//! seqs each stream had accepted).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cpg_std::config::ConfigFile;
use rustix::process::Signal;
use serde_json::{json, Value};

use super::log::{Event, Log, Member};
use super::node::NodeProc;
use crate::check::{liveness, Facts};
use crate::net::Topology;

/// The UDP port every node binds on its own address.
pub const PORT: u16 = 5405;
/// The group every node joins.
pub const GROUP: &str = "netsuite";

/// Timers and load of a run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Totem token timeout (no per-node coefficient).
    pub token_ms: u64,
    /// Messages per second per node.
    pub rate: u32,
    /// Message sizes, spread over `size_min..=size_max`.
    pub size_min: u32,
    /// See `size_min`.
    pub size_max: u32,
}

/// N node processes, one per namespace of a [`Topology`].
pub struct Cluster {
    cpgtool: PathBuf,
    config: PathBuf,
    nodes: Vec<Option<NodeProc>>,
    log: Log,
    /// Processes that were killed, stopped by `quit`, or replaced.
    gone: BTreeSet<Member>,
    accepted: BTreeMap<Member, Vec<Range<u64>>>,
    load: Load,
}

impl Cluster {
    /// Write the config (node `i` at `10.77.0.i:5405`, state under `dir`)
    /// and start every node; returns once each said it is ready.
    ///
    /// # Errors
    /// The config could not be written, or a node did not start.
    pub fn start(
        cpgtool: &Path,
        topo: &Topology,
        dir: &Path,
        load: Load,
    ) -> Result<Cluster, String> {
        Self::start_with(cpgtool, topo, dir, load, |_| {})
    }

    /// As [`Cluster::start`], node `i` at its link 0 address (IPv4 or
    /// IPv6, [`Topology::link_addr`]), with `tweak` applied to the config
    /// before it is written (more links, their mode, timers).
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn start_with(
        cpgtool: &Path,
        topo: &Topology,
        dir: &Path,
        load: Load,
        tweak: impl FnOnce(&mut ConfigFile),
    ) -> Result<Cluster, String> {
        let nodes: Vec<(u32, SocketAddr)> = (1..=topo.nodes())
            .map(|i| (i, SocketAddr::new(topo.link_addr(0, i), PORT)))
            .collect();
        let mut file = ConfigFile::new("netsuite", &nodes);
        file.state_dir = dir.join("state");
        file.totem.token_ms = Some(load.token_ms);
        // failure detection = token + consensus, whatever the node count
        file.totem.token_coefficient_ms = Some(0);
        tweak(&mut file);
        let config = dir.join("cluster.toml");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(&config, file.to_toml())
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let mut c = Cluster {
            cpgtool: cpgtool.to_path_buf(),
            config,
            nodes: (0..topo.nodes()).map(|_| None).collect(),
            log: Log::new(),
            gone: BTreeSet::new(),
            accepted: BTreeMap::new(),
            load,
        };
        for i in 1..=topo.nodes() {
            c.spawn(topo, i)?;
        }
        Ok(c)
    }

    fn spawn(&mut self, topo: &Topology, id: u32) -> Result<(), String> {
        let p = NodeProc::spawn(&self.cpgtool, &topo.ns(id), &self.config, id, &self.log)?;
        let who = p.member();
        self.nodes[id as usize - 1] = Some(p);
        let ready = self.log.wait_until(Duration::from_secs(20), |r| {
            r.iter().any(|r| r.who == who && r.ev == Event::Ready)
        });
        if ready {
            Ok(())
        } else {
            Err(format!("node {id} (pid {}) never said ready", who.1))
        }
    }

    /// `cpgtool status --node` of node `id`: its text report.
    ///
    /// # Errors
    /// The command failed (the node gone, no answer).
    pub fn status_text(&self, id: u32) -> Result<String, String> {
        let sock = super::node::status_socket(&self.config, id);
        let o = std::process::Command::new(&self.cpgtool)
            .arg("status")
            .arg("--node")
            .arg(&sock)
            .output()
            .map_err(|e| format!("cpgtool status: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "cpgtool status --node {}: {}",
                sock.display(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        String::from_utf8(o.stdout).map_err(|e| format!("cpgtool status: {e}"))
    }

    /// The shared log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The running process of node `id`.
    pub fn member(&self, id: u32) -> Option<Member> {
        self.node(id).map(NodeProc::member)
    }

    fn node(&self, id: u32) -> Option<&NodeProc> {
        self.nodes.get(id as usize - 1).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, id: u32) -> Option<&mut NodeProc> {
        self.nodes.get_mut(id as usize - 1).and_then(Option::as_mut)
    }

    /// Every running process.
    pub fn running(&self) -> Vec<Member> {
        self.nodes.iter().flatten().map(NodeProc::member).collect()
    }

    /// The running processes of nodes `ids`.
    pub fn members_of(&self, ids: &[u32]) -> Vec<Member> {
        ids.iter().filter_map(|&i| self.member(i)).collect()
    }

    /// Wait until every running process is in one configuration of all of
    /// them; whether that happened within `timeout`.
    pub fn wait_whole(&self, timeout: Duration) -> bool {
        let who = self.running();
        self.log
            .wait_until(timeout, |r| liveness::whole(r, GROUP, &who))
    }

    /// Send `cmd` to node `id` and wait for its reply (`None` on timeout or
    /// when the node is not running).
    pub fn call(&mut self, id: u32, cmd: Value, timeout: Duration) -> Option<Value> {
        let re = cmd["cmd"].as_str()?.to_string();
        let who = self.member(id)?;
        let from = self.log.lock().len();
        self.node_mut(id)?.send(&cmd);
        let mut reply = None;
        self.log.wait_until(timeout, |r| {
            reply = r[from.min(r.len())..].iter().find_map(|x| match &x.ev {
                Event::Reply(v) if x.who == who && v["re"] == re.as_str() => Some(v.clone()),
                _ => None,
            });
            reply.is_some()
        });
        reply
    }

    /// Join the group on nodes `ids`.
    ///
    /// # Errors
    /// A node refused or did not answer.
    pub fn join(&mut self, ids: &[u32]) -> Result<(), String> {
        for &id in ids {
            // TRY_AGAIN while an earlier incarnation's leave is in flight
            for attempt in 0.. {
                let r = self
                    .call(
                        id,
                        json!({"cmd":"join","group":GROUP}),
                        Duration::from_secs(10),
                    )
                    .ok_or(format!("node {id}: no answer to join"))?;
                if r["ok"] == true {
                    break;
                }
                if attempt > 100 {
                    return Err(format!("node {id}: join failed: {r}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Start the rate-limited numbered stream on nodes `ids`.
    pub fn stream(&mut self, ids: &[u32]) {
        let l = self.load;
        let cmd = json!({"cmd":"stream","count":u64::MAX / 4,"rate":l.rate,
            "size":l.size_min,"size_max":l.size_max,"guarantee":"agreed"});
        for &id in ids {
            if let Some(n) = self.node_mut(id) {
                n.send(&cmd);
            }
        }
    }

    /// Stop the streams of nodes `ids` and record what each had accepted.
    ///
    /// # Errors
    /// A node whose stream did not report within `timeout` (a wedged
    /// sender stays blocked in TRY_AGAIN until it sees the stop flag, so
    /// this only fails for a process that does not run).
    pub fn stop_streams(&mut self, ids: &[u32], timeout: Duration) -> Result<(), String> {
        let mut waiting = Vec::new();
        for &id in ids {
            let Some(who) = self.member(id) else { continue };
            let from = self.log.lock().len();
            if let Some(n) = self.node_mut(id) {
                n.send(&json!({"cmd":"stop_stream"}));
            }
            waiting.push((id, who, from));
        }
        for (id, who, from) in waiting {
            let mut got = None;
            self.log.wait_until(timeout, |r| {
                got = r[from.min(r.len())..].iter().find_map(|x| match &x.ev {
                    Event::Reply(v) if x.who == who && v["re"] == "stream" => Some(v.clone()),
                    _ => None,
                });
                got.is_some()
            });
            let v = got.ok_or(format!("node {id}: its stream never reported"))?;
            let first = v["first"]
                .as_u64()
                .ok_or(format!("node {id}: stream reply without first: {v}"))?;
            let sent = v["sent"].as_u64().unwrap_or(0);
            self.accepted
                .entry(who)
                .or_default()
                .push(first..first + sent);
        }
        Ok(())
    }

    /// Every running node multicasts a short end marker (`tag`, its id);
    /// waits until every running process delivered every marker: then all
    /// that was sent before is delivered too, by FIFO.
    ///
    /// # Errors
    /// A marker not accepted, or not delivered everywhere within `timeout`.
    pub fn drain(&mut self, tag: &str, timeout: Duration) -> Result<(), String> {
        let ids: Vec<u32> = self.running().iter().map(|m| m.0).collect();
        for &id in &ids {
            let data = format!("end {tag} {id}");
            let mut ok = false;
            for _ in 0..200 {
                match self.call(id, json!({"cmd":"mcast","data":data}), timeout) {
                    Some(r) if r["ok"] == true => {
                        ok = true;
                        break;
                    }
                    Some(_) => std::thread::sleep(Duration::from_millis(20)),
                    None => break,
                }
            }
            if !ok {
                return Err(format!("node {id}: end marker not accepted"));
            }
        }
        let who = self.running();
        let markers: BTreeMap<String, Member> = who
            .iter()
            .map(|m| (digest(format!("end {tag} {}", m.0).as_bytes()), *m))
            .collect();
        let done = self.log.wait_until(timeout, |r| {
            let mut got: BTreeMap<Member, usize> = BTreeMap::new();
            for x in r {
                if let Event::Deliver {
                    from,
                    numbered: None,
                    digest,
                    ..
                } = &x.ev
                {
                    if markers.get(digest) == Some(from) {
                        *got.entry(x.who).or_default() += 1;
                    }
                }
            }
            who.iter().all(|w| got.get(w) == Some(&markers.len()))
        });
        if done {
            Ok(())
        } else {
            Err(format!(
                "end markers not delivered everywhere within {timeout:?}"
            ))
        }
    }

    /// SIGSTOP node `id`.
    pub fn pause(&self, id: u32) {
        if let Some(n) = self.node(id) {
            n.signal(Signal::STOP);
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&self, id: u32) {
        if let Some(n) = self.node(id) {
            n.signal(Signal::CONT);
        }
    }

    /// SIGKILL node `id`.
    pub fn kill(&mut self, id: u32) {
        if let Some(n) = self.nodes[id as usize - 1].take() {
            self.gone.insert(n.member());
            n.kill();
        }
    }

    /// Stop node `id`'s stream, then let it quit on its own (leave, stop).
    ///
    /// # Errors
    /// As [`Cluster::stop_streams`].
    pub fn quit(&mut self, id: u32) -> Result<(), String> {
        self.stop_streams(&[id], Duration::from_secs(10))?;
        if let Some(n) = self.nodes[id as usize - 1].take() {
            self.gone.insert(n.member());
            n.quit(Duration::from_secs(10));
        }
        Ok(())
    }

    /// Start node `id` again: same nodeid, same config and state directory.
    ///
    /// # Errors
    /// As [`Cluster::start`].
    pub fn restart(&mut self, topo: &Topology, id: u32) -> Result<(), String> {
        if let Some(n) = self.nodes[id as usize - 1].take() {
            self.gone.insert(n.member());
            n.kill();
        }
        self.spawn(topo, id)
    }

    /// What the checker needs besides the log.
    pub fn facts(&self, drained: bool) -> Facts {
        Facts {
            group: GROUP.to_string(),
            accepted: self.accepted.clone(),
            survivors: self
                .running()
                .into_iter()
                .filter(|m| !self.gone.contains(m))
                .collect(),
            drained,
        }
    }
}

/// The digest `cpgtool node` reports for a delivery: FNV-1a 64 of the bytes.
fn digest(bytes: &[u8]) -> String {
    format!("{:016x}", cpg_core::hash::fnv1a64(bytes))
}

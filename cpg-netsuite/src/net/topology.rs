//! The hosts: one network namespace per node, each with a veth pair into a
//! bridge that lives in a namespace of its own, so nothing of the suite is
//! visible in the machine's own namespace and no packet can leave.
//!
//! Names are `cpgns-<pid>-<k>-<i>` (node `i`) and `cpgns-<pid>-<k>-br`, `k`
//! counting topologies of this process. Node `i` has `10.77.0.<i>/24` on its
//! `eth0`; that address exists only inside its namespace.
//!
//! Cleanup: [`Topology`] deletes its namespaces on drop (after killing any
//! process still inside them; every iptables rule lives in a namespace and
//! goes with it). A panic unwinds through that drop; SIGINT, SIGTERM and
//! SIGHUP run the same cleanup for every live topology, then exit
//! ([`install_signal_cleanup`]); namespaces left by a run that was killed
//! outright are swept by the next one ([`sweep_stale`]).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use super::cmd::run;

/// Namespaces of live topologies, for the signal handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "cpgns-";

/// N node namespaces on one bridge.
pub struct Topology {
    base: String,
    nodes: u32,
}

impl Topology {
    /// Create namespaces for nodes `1..=nodes`, wired to one bridge.
    ///
    /// # Errors
    /// The first `ip` command that failed; whatever was created is removed.
    pub fn create(nodes: u32) -> Result<Topology, String> {
        install_signal_cleanup();
        sweep_stale();
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let t = Topology {
            base: format!("{PREFIX}{}-{k}", std::process::id()),
            nodes,
        };
        // registered before the first namespace exists, so a failure or a
        // signal half way still removes what was made
        lock_live().extend(t.namespaces());
        t.build()?;
        Ok(t)
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge_ns();
        run("ip", &["netns", "add", &br])?;
        run("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            let port = format!("p{i}");
            let addr = format!("{}/24", self.addr(i));
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &br,
                ],
            )?;
            run(
                "ip",
                &["-n", &br, "link", "set", &port, "master", "br0", "up"],
            )?;
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The namespace of node `i` (1-based).
    pub fn ns(&self, i: u32) -> String {
        format!("{}-{i}", self.base)
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.base)
    }

    /// Node `i`'s address (inside its namespace only).
    pub fn addr(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8)
    }

    fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = (1..=self.nodes).map(|i| self.ns(i)).collect();
        v.push(self.bridge_ns());
        v
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let names = self.namespaces();
        for ns in &names {
            delete_ns(ns);
        }
        lock_live().retain(|n| !names.contains(n));
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, Vec<String>> {
    crate::lock(&LIVE)
}

/// Kill what still runs in `ns` (processes this suite started there), then
/// delete it. Quiet: used on every exit path, where `ns` may be half made.
fn delete_ns(ns: &str) {
    for pid in pids_in(ns) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            // a stopped process takes SIGKILL too; CONT only so it dies now
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    if std::path::Path::new("/run/netns").join(ns).exists() {
        let _ = run("ip", &["netns", "delete", ns]);
    }
}

fn pids_in(ns: &str) -> Vec<i32> {
    std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Delete the namespaces of every live topology (the signal path).
pub fn cleanup_all() {
    let names = std::mem::take(&mut *lock_live());
    for ns in &names {
        delete_ns(ns);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: [`cleanup_all`], then exit 130. Node
/// processes started by the suite die with their namespaces (and by their
/// parent-death signal, see `cluster::node`).
pub fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        eprintln!("cpg-netsuite: signal {sig}: removing namespaces");
                        cleanup_all();
                        std::process::exit(130);
                    }
                });
            }
            Err(e) => eprintln!("cpg-netsuite: no signal cleanup: {e}"),
        }
    });
}

/// Delete namespaces left by suite processes that no longer exist (killed
/// outright, so no cleanup of theirs could run).
pub fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(&name);
        }
    }
}

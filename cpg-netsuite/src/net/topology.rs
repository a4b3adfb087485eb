//! The hosts: one network namespace per node, each with a veth pair into a
//! bridge that lives in a namespace of its own, so nothing of the suite is
//! visible in the machine's own namespace and no packet can leave.
//!
//! Names are `cpgns-<pid>-<k>-<i>` (node `i`) and `cpgns-<pid>-<k>-br`, `k`
//! counting topologies of this process. Node `i` has `10.77.0.<i>/24` on its
//! `eth0`; that address exists only inside its namespace.
//!
//! [`Topology::with_links`] builds one bridge per link (`br<l>` in the
//! bridge namespace, `eth<l>` in each node): link `l` of node `i` is
//! `10.77.<l>.<i>/24` on an IPv4 link and `fd00:77:0:<l>::<i>/64` (a unique
//! local address, added without duplicate address detection so it is
//! usable at once) on an IPv6 one. [`Topology::cut_link`] drops every
//! datagram of one link in every node (iptables or ip6tables on `eth<l>`,
//! both ways), as a pulled cable or a dead switch would.
//!
//! Cleanup: [`Topology`] deletes its namespaces on drop (after killing any
//! process still inside them; every iptables rule lives in a namespace and
//! goes with it). A panic unwinds through that drop; SIGINT, SIGTERM and
//! SIGHUP run the same cleanup for every live topology, then exit
//! ([`install_signal_cleanup`]); namespaces left by a run that was killed
//! outright are swept by the next one ([`sweep_stale`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use super::cmd::{run, run_in};

/// The address family of one link of a [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `10.77.<link>.<i>/24`.
    V4,
    /// `fd00:77:0:<link>::<i>/64`.
    V6,
}

/// Namespaces of live topologies, for the signal handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "cpgns-";

/// N node namespaces on one bridge.
pub struct Topology {
    base: String,
    nodes: u32,
    links: Vec<Family>,
}

impl Topology {
    /// Create namespaces for nodes `1..=nodes`, wired to one bridge.
    ///
    /// # Errors
    /// The first `ip` command that failed; whatever was created is removed.
    pub fn create(nodes: u32) -> Result<Topology, String> {
        Self::with_links(nodes, &[Family::V4])
    }

    /// Create namespaces for nodes `1..=nodes` with one bridge per link, of
    /// the families given (link 0 first; at most 8).
    ///
    /// # Errors
    /// The first `ip` command that failed; whatever was created is removed.
    pub fn with_links(nodes: u32, links: &[Family]) -> Result<Topology, String> {
        if links.is_empty() || links.len() > 8 {
            return Err(format!("{} links: 1..=8", links.len()));
        }
        install_signal_cleanup();
        sweep_stale();
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let t = Topology {
            base: format!("{PREFIX}{}-{k}", std::process::id()),
            nodes,
            links: links.to_vec(),
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
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for (l, family) in self.links.iter().enumerate() {
            let bridge = format!("br{l}");
            run("ip", &["-n", &br, "link", "add", &bridge, "type", "bridge"])?;
            run("ip", &["-n", &br, "link", "set", &bridge, "up"])?;
            for i in 1..=self.nodes {
                let ns = self.ns(i);
                let eth = format!("eth{l}");
                // link 0 keeps the names of the one-link topology
                let port = if l == 0 {
                    format!("p{i}")
                } else {
                    format!("p{i}l{l}")
                };
                run(
                    "ip",
                    &[
                        "-n", &ns, "link", "add", &eth, "type", "veth", "peer", "name", &port,
                        "netns", &br,
                    ],
                )?;
                run(
                    "ip",
                    &["-n", &br, "link", "set", &port, "master", &bridge, "up"],
                )?;
                let addr = self.link_addr(l as u8, i);
                match family {
                    Family::V4 => {
                        let a = format!("{addr}/24");
                        run("ip", &["-n", &ns, "addr", "add", &a, "dev", &eth])?;
                    }
                    Family::V6 => {
                        let a = format!("{addr}/64");
                        run(
                            "ip",
                            &["-n", &ns, "-6", "addr", "add", &a, "dev", &eth, "nodad"],
                        )?;
                    }
                }
                run("ip", &["-n", &ns, "link", "set", &eth, "up"])?;
            }
        }
        Ok(())
    }

    /// Node `i`'s address on link `link` (inside its namespace only).
    pub fn link_addr(&self, link: u8, i: u32) -> IpAddr {
        match self.links.get(usize::from(link)) {
            Some(Family::V6) => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0x77,
                0,
                u16::from(link),
                0,
                0,
                0,
                i as u16,
            )),
            _ => IpAddr::V4(Ipv4Addr::new(10, 77, link, i as u8)),
        }
    }

    /// The links' families, link 0 first.
    pub fn links(&self) -> &[Family] {
        &self.links
    }

    /// Drop (`cut = true`) or pass again every datagram of link `link`, in
    /// and out of every node: a dead cable or switch, while the other
    /// links keep working.
    ///
    /// # Errors
    /// The first iptables command that failed.
    pub fn cut_link(&self, link: u8, cut: bool) -> Result<(), String> {
        let tool = match self.links.get(usize::from(link)) {
            Some(Family::V4) => "iptables",
            Some(Family::V6) => "ip6tables",
            None => return Err(format!("no link {link}")),
        };
        let eth = format!("eth{link}");
        let op = if cut { "-I" } else { "-D" };
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            run_in(&ns, tool, &["-w", op, "INPUT", "-i", &eth, "-j", "DROP"])?;
            run_in(&ns, tool, &["-w", op, "OUTPUT", "-o", &eth, "-j", "DROP"])?;
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

//! The multi-host fault suite: real `cpgtool node` processes, one per
//! network namespace, joined by a bridge, with faults injected from outside
//! the processes, and a checker that reads what every process delivered.
//!
//! # Layers
//!
//! - [`net`]: the hosts and the network. One namespace per node
//!   (`10.77.0.<i>/24`, an address that exists only inside it), veth pairs
//!   into a bridge in a namespace of its own; faults as iptables rules in the
//!   node namespaces (loss with `statistic`, duplication with `TEE`, one-way
//!   and two-way cuts, dropped IP fragments with `-f`) and a user-space
//!   stage on NFQUEUE for what iptables cannot do (delay with jitter,
//!   reordering, corruption that passes the UDP checksum). The kernel has no
//!   `sch_netem`, so no `tc netem`.
//! - [`cluster`]: the node processes (`ip netns exec <ns> cpgtool node
//!   --verbose`), driven by JSON lines on stdin: join, a rate-limited stream
//!   of numbered self-checking messages, SIGSTOP/SIGCONT, SIGKILL, restart
//!   with the same nodeid and state directory, quit; every line they print
//!   goes into one [`cluster::Log`], stamped on arrival.
//! - [`check`]: the safety invariants on the logs (integrity, no
//!   duplicates, per-sender FIFO, one total order, virtual synchrony with
//!   consistent member lists, nothing a surviving sender accepted lost) and
//!   the liveness measures (one configuration, the time to it).
//! - [`suite`]: the phases and the two profiles.
//!
//! # A phase
//!
//! Fresh namespaces and node processes; every node joins one group and
//! streams numbered messages (200/s, 64..3000 B in the short profile, so
//! frames fill and messages span frames); the fault; the heal; then:
//! one configuration of all running processes within the bound
//! (token + consensus + margin = 5.2 s with the 1 s token), recorded as
//! the recovery time; more stream; the streams stop and report what they
//! had accepted; every node multicasts an end marker and all must deliver
//! all markers within 20 s (a ring that still rotates but no longer
//! delivers fails here); the checker runs on the whole log.
//! Phases that split the ring (partition, one-way, SIGSTOP, SIGKILL, each
//! node quitting in the rolling restart) also require each side to form its
//! own configuration within the bound, recorded as the detection time.
//!
//! | phase | fault |
//! |---|---|
//! | `loss` | every node drops 10 % of its datagrams (long: 20 %) |
//! | `delay` | 20 ms + 0..30 ms jitter on every datagram (long: 40 + 0..60) |
//! | `reorder` | 25 % of datagrams held 15 ms longer (long: 40 %, 30 ms) |
//! | `duplicate` | 20 % sent twice (long: 30 %) |
//! | `corrupt` | one byte of 10 % of control frames changed, checksum fixed (long: 20 %) |
//! | `partition` | the last node (at 5 nodes: the last two) cut off both ways |
//! | `one-way` | the last node's datagrams to node 1 dropped, node 1's to it arrive: no ring may hold both, every node must be in one |
//! | `mute` | all the last node's datagrams dropped; it still hears the others and must form a ring alone |
//! | `fragments` | received IP fragments dropped; under half the loss phase's loss a partition comes and goes, and the ring must re-form and deliver with fragments still dropped |
//! | `sigstop` | SIGSTOP the last node for the fault time, then SIGCONT |
//! | `sigkill` | SIGKILL the last node, restart it with the same nodeid |
//! | `rolling` | each node in turn quits and restarts |
//!
//! The faults last 4 s in the short profile and 20 s in the long one.
//!
//! # Running
//!
//! `cargo test --workspace --release` runs the short profile at 3 nodes
//! (`tests/faults.rs`, one test per phase, one at a time); it needs root,
//! `ip` and `iptables` and says why it skips without them (under `CI=true`
//! it fails instead). The long profile:
//!
//! ```sh
//! cargo build --release -p cpg-std --bin cpgtool && cargo run --release -p cpg-netsuite -- --profile long --nodes 5
//! ```
//!
//! prints one line per phase: detection and recovery times, the bound,
//! the deliveries, and any failure with the path of the kept log.
//!
//! `tests/links.rs` ([`suite::links`]) changes the network under a steady
//! ring instead: a ring over IPv6 ULA addresses, and two links (an IPv4
//! and an IPv6 bridge) cut one at a time under load, in passive and in
//! active mode, with no ring change allowed, the checker clean and each
//! link's down and up logged by every node (needs `ip6tables` too).
//!
//! # Cleanup
//!
//! Namespaces are deleted when a phase ends, on panic (unwinding drops the
//! topology), and on SIGINT/SIGTERM/SIGHUP (a signal thread deletes every
//! live namespace, killing what runs in it, then exits); node processes
//! carry a parent-death signal; namespaces of a suite process that was
//! killed outright are swept at the next start. Every iptables rule lives
//! inside a namespace of the suite and goes with it; nothing is changed in
//! the machine's own namespace.

pub mod check;
pub mod cluster;
pub mod net;
pub mod suite;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, taking the guard even if a thread panicked while holding it:
/// the crate's one mutex-poison policy.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why the suite cannot run here, if it cannot: not root, or `ip` or
/// `iptables` missing.
pub fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces and iptables need it)".into());
    }
    for tool in ["ip", "iptables"] {
        if !net::exists(tool) {
            return Some(format!(
                "`{tool}` not found (apt-get install iproute2 iptables)"
            ));
        }
    }
    None
}

/// The `cpgtool` binary: `$CPGTOOL`, or beside this executable (the
/// suite binary lives in `target/<profile>/`, a test in its `deps/`).
///
/// # Errors
/// Where it looked, and how to build it.
pub fn find_cpgtool() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CPGTOOL") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("cpgtool");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(format!(
        "cpgtool not found ({}); build it: cargo build --release -p cpg-std --bin cpgtool",
        tried.join(", ")
    ))
}

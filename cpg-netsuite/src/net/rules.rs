//! Faults made of iptables rules inside the node namespaces (the kernel has
//! no `sch_netem`, so no `tc netem`): random loss (`statistic`),
//! duplication (`TEE` to the datagram's own destination), cut links (a
//! one-way cut is a DROP on the sender's OUTPUT for one destination; a
//! partition is cuts both ways), a path that drops IP fragments (`-f` in
//! the receiver's mangle PREROUTING: the kernel fragments after OUTPUT and
//! reassembles before INPUT, so only PREROUTING sees fragments; nothing of
//! the suite loads conntrack, whose defragmentation would come first),
//! and the hand-off to the user-space stage
//! (`NFQUEUE` with `--queue-bypass`, so a stage that is not running lets
//! packets pass rather than black-holing the node).
//!
//! Every rule matches UDP only and lives in a namespace of the suite;
//! [`clear`] flushes the tables it uses, and deleting a namespace deletes
//! its rules.

use super::cmd::{output_in, run_in};
use super::topology::Topology;

/// The NFQUEUE number the stage binds in every node namespace.
pub const QUEUE: u16 = 0;

/// One fault, from the network's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every node drops this percentage of its outgoing datagrams.
    Loss {
        /// Percent, 0..=100.
        percent: u32,
    },
    /// Every node sends this percentage of its datagrams twice.
    Duplicate {
        /// Percent, 0..=100.
        percent: u32,
    },
    /// Datagrams from node `from` to node `to` are dropped (one way).
    Cut {
        /// Sender.
        from: u32,
        /// Receiver.
        to: u32,
    },
    /// Every node drops the IP fragments it receives (all but the first:
    /// the datagram never reassembles, as behind many firewalls).
    DropFragments,
    /// Every node's outgoing datagrams pass through the user-space stage.
    Stage,
}

/// The iptables rules of `fault`: (node whose namespace holds it, argv).
pub fn rules(topo: &Topology, fault: Fault) -> Vec<(u32, Vec<String>)> {
    let all = 1..=topo.nodes();
    let p = |percent: u32| format!("{:.4}", f64::from(percent.min(100)) / 100.0);
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    match fault {
        Fault::Loss { percent } => all
            .map(|i| {
                let r = format!(
                    "-w -A OUTPUT -p udp -m statistic --mode random --probability {} -j DROP",
                    p(percent)
                );
                (i, words(&r))
            })
            .collect(),
        Fault::Duplicate { percent } => all
            .flat_map(|i| {
                (1..=topo.nodes()).filter(move |&j| j != i).map(move |j| {
                    let to = topo.addr(j);
                    let r = format!(
                        "-w -t mangle -A OUTPUT -p udp -d {to} -m statistic --mode random --probability {} -j TEE --gateway {to}",
                        p(percent)
                    );
                    (i, words(&r))
                })
            })
            .collect(),
        Fault::Cut { from, to } => {
            let r = format!("-w -A OUTPUT -p udp -d {} -j DROP", topo.addr(to));
            vec![(from, words(&r))]
        }
        Fault::DropFragments => all
            .map(|i| (i, words("-w -t mangle -A PREROUTING -f -j DROP")))
            .collect(),
        Fault::Stage => all
            .map(|i| {
                let r = format!(
                    "-w -A OUTPUT -p udp -j NFQUEUE --queue-num {QUEUE} --queue-bypass"
                );
                (i, words(&r))
            })
            .collect(),
    }
}

/// Install `faults` (in order).
///
/// # Errors
/// The first iptables command that failed.
pub fn apply(topo: &Topology, faults: &[Fault]) -> Result<(), String> {
    for &f in faults {
        for (node, argv) in rules(topo, f) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run_in(&topo.ns(node), "iptables", &argv)?;
        }
    }
    Ok(())
}

/// Remove every rule of the suite from every node namespace: the heal.
///
/// # Errors
/// The first iptables command that failed.
pub fn clear(topo: &Topology) -> Result<(), String> {
    for i in 1..=topo.nodes() {
        run_in(&topo.ns(i), "iptables", &["-w", "-F"])?;
        run_in(&topo.ns(i), "iptables", &["-w", "-t", "mangle", "-F"])?;
    }
    Ok(())
}

/// Datagrams the suite's rules matched so far, all nodes together: shows
/// a fault really happened (a loss phase that dropped nothing proves nothing).
///
/// # Errors
/// The first iptables command that failed.
pub fn matched(topo: &Topology) -> Result<u64, String> {
    let mut sum = 0;
    for i in 1..=topo.nodes() {
        for table in ["filter", "mangle"] {
            let out = output_in(
                &topo.ns(i),
                "iptables",
                &["-w", "-t", table, "-L", "-v", "-x", "-n"],
            )?;
            // rule lines start with their packet count; chain and header lines do not
            sum += out
                .lines()
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(sum)
}

/// Cuts that isolate `nodes` from every other node, both ways.
pub fn partition(topo: &Topology, nodes: &[u32]) -> Vec<Fault> {
    let mut v = Vec::new();
    for &a in nodes {
        for b in (1..=topo.nodes()).filter(|b| !nodes.contains(b)) {
            v.push(Fault::Cut { from: a, to: b });
            v.push(Fault::Cut { from: b, to: a });
        }
    }
    v
}

/// Cuts that drop everything `node` sends to the others, while it still
/// hears them (a node whose sending side is broken).
pub fn mute(topo: &Topology, node: u32) -> Vec<Fault> {
    (1..=topo.nodes())
        .filter(|&b| b != node)
        .map(|b| Fault::Cut { from: node, to: b })
        .collect()
}

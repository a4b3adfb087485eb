//! The operator's log lines, with the facts Corosync users grep for,
//! derived from what the engine hands up (cpg-core is `no_std` and logs
//! nothing itself): a new membership with the nodes that joined and left
//! (`cpg::totem`), a token lost (from the engine's token-loss counters,
//! `cpg::totem`), a process evicted from its group (`cpg::group`).
//!
//! # References
//! corosync `exec/totemsrp.c` ("A new membership (%s) was formed. Members
//! joined: ... left: ...", "Token has not been received in %d ms", "A
//! processor failed, forming new configuration").

use cpg_core::engine::{ConfigChange, Stats};
use cpg_core::{GroupName, NodeId};

/// Log targets, one per layer.
pub(crate) const TARGET_TOTEM: &str = "cpg::totem";
pub(crate) const TARGET_GROUP: &str = "cpg::group";

/// What the lines need to remember between events.
#[derive(Debug, Default)]
pub(crate) struct OpLog {
    /// The nodes the last transitional configuration left behind: they
    /// are "left" in the next regular configuration's line.
    left: Vec<NodeId>,
    /// Token losses already reported.
    token_losses: u64,
}

fn ids(list: &[NodeId]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Corosync's line: `A new membership (1.1f) was formed. Members joined:
/// 2 3 left: 1` (each list only when it is not empty).
pub(crate) fn membership_line(ring: &str, joined: &[NodeId], left: &[NodeId]) -> String {
    let mut s = format!("A new membership ({ring}) was formed.");
    if !joined.is_empty() {
        s += &format!(" Members joined: {}", ids(joined));
        if !left.is_empty() {
            s += &format!(" left: {}", ids(left));
        }
    } else if !left.is_empty() {
        s += &format!(" Members left: {}", ids(left));
    }
    s
}

impl OpLog {
    /// A configuration change from the engine.
    pub(crate) fn on_config(&mut self, change: &ConfigChange) {
        match change {
            ConfigChange::Transitional { left, .. } => {
                self.left = left.to_vec();
            }
            ConfigChange::Regular {
                ring_id,
                members,
                joined,
            } => {
                let left = std::mem::take(&mut self.left);
                log::info!(
                    target: TARGET_TOTEM,
                    "{}",
                    membership_line(&ring_id.to_string(), joined, &left)
                );
                log::debug!(target: TARGET_TOTEM, "Members[{}]: {}", members.len(), ids(members));
            }
        }
    }

    /// After the engine ran: a token loss it counted since the last call
    /// (naming the effective token timeout of `config`).
    pub(crate) fn on_stats(&mut self, stats: &Stats, config: &cpg_core::limits::Config) {
        let lost = stats.token_losses_operational + stats.token_losses_recovery;
        if lost > self.token_losses {
            self.token_losses = lost;
            let token_ms = config.token_effective().as_millis();
            log::warn!(
                target: TARGET_TOTEM,
                "Token has not been received in {token_ms} ms; a processor failed, forming new configuration (token lost {lost} times)"
            );
        }
    }
}

/// `process 1234 of node 2 evicted from group cib: why`.
pub(crate) fn evicted(pid: u32, node: NodeId, group: Option<&GroupName>, why: &str) {
    match group {
        Some(g) => log::warn!(
            target: TARGET_GROUP,
            "process {pid} of node {node} evicted from group {}: {why}",
            String::from_utf8_lossy(g.as_bytes())
        ),
        None => log::warn!(
            target: TARGET_GROUP,
            "process {pid} of node {node} evicted (in no group): {why}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::membership_line;

    #[test]
    fn membership_lines_read_as_corosync_s() {
        assert_eq!(
            membership_line("1.1f", &[2, 3], &[1]),
            "A new membership (1.1f) was formed. Members joined: 2 3 left: 1"
        );
        assert_eq!(
            membership_line("1.20", &[], &[3]),
            "A new membership (1.20) was formed. Members left: 3"
        );
        assert_eq!(
            membership_line("1.24", &[2], &[]),
            "A new membership (1.24) was formed. Members joined: 2"
        );
        assert_eq!(
            membership_line("1.4", &[], &[]),
            "A new membership (1.4) was formed."
        );
    }
}

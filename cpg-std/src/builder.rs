//! [`ConfigBuilder`]: a [`NodeConfig`] built in code instead of read from a
//! TOML file, checked by the same [`ConfigFile::validate`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cpg_core::NodeId;

use crate::config::{ConfigError, ConfigFile, NodeEntry, TransportKind};
use crate::NodeConfig;

/// Builds a [`NodeConfig`]: cluster name, node list, this node, timers,
/// state directory. Unset settings take the file's defaults;
/// [`ConfigBuilder::build`] validates exactly as a file is validated.
///
/// ```
/// use cpg_std::ConfigBuilder;
/// use std::time::Duration;
///
/// let config = ConfigBuilder::new("demo")
///     .local_nodes(&[1, 2, 3], 5405)
///     .this_node(2)
///     .token(Duration::from_secs(1))
///     .state_dir(std::env::temp_dir())
///     .build()
///     .unwrap();
/// assert_eq!(config.node_id, 2);
/// assert_eq!(config.addr().port(), 5406);
/// assert!(ConfigBuilder::new("demo").local_nodes(&[1], 5405).this_node(7).build().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    file: ConfigFile,
    node_id: Option<NodeId>,
}

fn ms(d: Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ConfigBuilder {
    /// An empty node list in cluster `cluster_name`, defaults elsewhere.
    pub fn new(cluster_name: &str) -> ConfigBuilder {
        ConfigBuilder {
            file: ConfigFile::new::<SocketAddr>(cluster_name, &[]),
            node_id: None,
        }
    }

    /// Add node `id` on `addr`.
    #[must_use]
    pub fn node(mut self, id: NodeId, addr: impl Into<SocketAddr>) -> Self {
        self.file.nodelist.push(NodeEntry {
            nodeid: id,
            addr: addr.into(),
            links: Vec::new(),
        });
        self
    }

    /// Add `ids` on 127.0.0.1, ports `base_port`, `base_port + 1`, … (one
    /// host; on [`crate::loopback`] the addresses are not used).
    #[must_use]
    pub fn local_nodes(mut self, ids: &[NodeId], base_port: u16) -> Self {
        for (i, &id) in ids.iter().enumerate() {
            let port = base_port.wrapping_add(i as u16);
            self = self.node(id, (Ipv4Addr::LOCALHOST, port));
        }
        self
    }

    /// Which listed node this process is.
    #[must_use]
    pub fn this_node(mut self, id: NodeId) -> Self {
        self.node_id = Some(id);
        self
    }

    /// Directory of the persisted ring sequence number.
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.file.state_dir = dir.into();
        self
    }

    /// Totem's token timeout (Corosync `token`).
    #[must_use]
    pub fn token(mut self, d: Duration) -> Self {
        self.file.totem.token_ms = ms(d);
        self
    }

    /// Added to the token timeout per node beyond two (`token_coefficient`).
    #[must_use]
    pub fn token_coefficient(mut self, d: Duration) -> Self {
        self.file.totem.token_coefficient_ms = ms(d);
        self
    }

    /// Join timeout (`join`).
    #[must_use]
    pub fn join_timeout(mut self, d: Duration) -> Self {
        self.file.totem.join_ms = ms(d);
        self
    }

    /// Consensus timeout (`consensus`).
    #[must_use]
    pub fn consensus(mut self, d: Duration) -> Self {
        self.file.totem.consensus_ms = ms(d);
        self
    }

    /// Merge timeout (`merge`).
    #[must_use]
    pub fn merge(mut self, d: Duration) -> Self {
        self.file.totem.merge_ms = ms(d);
        self
    }

    /// The fast timers of tests and demos on one host (token 300 ms,
    /// coefficient 65 ms, join 30 ms, merge 60 ms).
    #[must_use]
    pub fn fast_timers(self) -> Self {
        self.token(Duration::from_millis(300))
            .token_coefficient(Duration::from_millis(65))
            .join_timeout(Duration::from_millis(30))
            .merge(Duration::from_millis(60))
    }

    /// Largest message a member may send.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.file.max_message_size = bytes;
        self
    }

    /// Bytes of undispatched events a handle may hold before eviction.
    #[must_use]
    pub fn handle_queue_bytes(mut self, bytes: usize) -> Self {
        self.file.handle_queue_bytes = bytes;
        self
    }

    /// The transport [`crate::Node::start`] uses.
    #[must_use]
    pub fn transport(mut self, kind: TransportKind) -> Self {
        self.file.transport = kind;
        self
    }

    /// The configuration as a file would hold it (for [`ConfigFile::to_toml`]).
    pub fn file(&self) -> &ConfigFile {
        &self.file
    }

    /// Validate ([`ConfigFile::validate`]) and build this node's settings.
    ///
    /// # Errors
    /// The first problem found, naming the setting ([`ConfigError`]).
    pub fn build(self) -> Result<NodeConfig, ConfigError> {
        self.file.validate(self.node_id)
    }
}

impl From<ConfigFile> for ConfigBuilder {
    /// Start from a parsed file (its `nodeid`, if any, is this node).
    fn from(file: ConfigFile) -> ConfigBuilder {
        ConfigBuilder {
            node_id: file.nodeid,
            file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_validates() {
        let c = ConfigBuilder::new("t")
            .local_nodes(&[1, 2], 6000)
            .this_node(1)
            .fast_timers()
            .build()
            .unwrap();
        assert_eq!(c.engine.token.as_millis(), 300);
        assert_eq!(c.engine.nodes.as_slice(), &[1, 2]);
        let e = |b: ConfigBuilder| b.build().unwrap_err();
        assert!(matches!(
            e(ConfigBuilder::new("t").local_nodes(&[1], 6000)),
            ConfigError::NoNodeId
        ));
        assert!(matches!(
            e(ConfigBuilder::new("t").this_node(1)),
            ConfigError::EmptyNodeList
        ));
        assert!(matches!(
            e(ConfigBuilder::new("").local_nodes(&[1], 6000).this_node(1)),
            ConfigError::ClusterName
        ));
        assert!(matches!(
            e(ConfigBuilder::new("t")
                .local_nodes(&[1, 1], 6000)
                .this_node(1)),
            ConfigError::DuplicateNodeId(1)
        ));
        let short = ConfigBuilder::new("t").local_nodes(&[1], 6000).this_node(1);
        assert!(matches!(
            e(short.clone().token(Duration::from_millis(5))),
            ConfigError::OutOfRange { value: 5, .. }
        ));
        // a Duration beyond u64 milliseconds is refused, not wrapped
        assert!(matches!(
            e(short.join_timeout(Duration::MAX)),
            ConfigError::OutOfRange {
                value: u64::MAX,
                ..
            }
        ));
    }
}

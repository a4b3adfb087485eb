//! The node configuration file (TOML) and its validation.
//!
//! One file describes a whole cluster: the cluster name, the static node
//! list (nodeid → IPv4 `address:port`), timers, sizes and the state
//! directory. A process picks its own node by `nodeid` (in the file, or
//! given on the command line), so `cpgtool demo` writes one file for every
//! node it starts.
//!
//! ```toml
//! cluster_name = "demo"
//! state_dir = "/var/lib/cpg"
//! netmtu = 1500
//! max_message_size = 67108864
//! handle_queue_bytes = 67108864
//! zerocopy = "auto"
//!
//! [[nodelist]]
//! nodeid = 1
//! addr = "127.0.0.1:5405"
//!
//! [[nodelist]]
//! nodeid = 2
//! addr = "127.0.0.1:5406"
//!
//! [totem]
//! token_ms = 3000
//!
//! [pool]
//! classes = [ { slot_size = 4096, count = 256 }, { slot_size = 1052672, count = 8 } ]
//! ```
//!
//! Every setting but `cluster_name` and `nodelist` has a default (Corosync's
//! where Corosync has one). [`ConfigFile::validate`] turns a parsed file into
//! a [`NodeConfig`] or names the first problem in an [`ConfigError`].

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use cpg_core::limits::{self, ZC_HEADROOM};
use cpg_core::pool::{ClassSpec, PoolConfig, PoolConfigError};
use cpg_core::{Duration, NodeId};
use serde::{Deserialize, Serialize};

pub use crate::crypto::Crypto;

/// Smallest per-handle queue cap accepted.
pub const HANDLE_QUEUE_BYTES_MIN: usize = 64 * 1024;
/// Default per-handle queue cap.
pub const HANDLE_QUEUE_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
/// The largest zero-copy buffer must hold at least this many payload bytes.
pub const ZCB_MAX_MIN: usize = 1024 * 1024;
pub use cpg_uring::{ZeroCopy, RX_HEADROOM};

/// Which transport a [`crate::Node`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The io_uring driver (`cpg-uring`), the default.
    #[default]
    Uring,
    /// Plain blocking `sendto`/`recvfrom` on a std UDP socket: chosen
    /// explicitly, for kernels without io_uring (never a silent fallback).
    Udp,
}

/// One node of the node list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Totem node id (non-zero).
    pub nodeid: NodeId,
    /// IPv4 `address:port` the node's UDP socket binds to.
    pub addr: SocketAddrV4,
}

/// `[totem]`: timers and flow control, Corosync's names with a unit suffix.
/// Absent keys take Corosync 3's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TotemSection {
    pub token_ms: Option<u64>,
    pub token_coefficient_ms: Option<u64>,
    pub token_retransmits_before_loss_const: Option<u32>,
    pub join_ms: Option<u64>,
    pub consensus_ms: Option<u64>,
    pub merge_ms: Option<u64>,
    pub hold_ms: Option<u64>,
    pub fail_recv_const: Option<u32>,
    pub seqno_unchanged_const: Option<u32>,
    pub max_messages: Option<u32>,
    pub window_size: Option<u32>,
    pub miss_count_const: Option<u32>,
    pub send_queue_frames: Option<usize>,
}

/// One size class of the zero-copy pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassEntry {
    /// Bytes per slot, headroom included.
    pub slot_size: usize,
    /// Slots in the class.
    pub count: usize,
}

/// `[pool]`: the registered buffer pool (send slots) and receive buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Bytes kept free in front of every zero-copy payload (≥ 256).
    #[serde(default = "default_headroom")]
    pub headroom: usize,
    /// Slot size classes, smallest first.
    #[serde(default = "default_classes")]
    pub classes: Vec<ClassEntry>,
    /// Receive buffers (a power of two).
    #[serde(default = "default_rx_buffers")]
    pub rx_buffers: usize,
    /// Bytes per receive buffer (default: the frame size plus 64).
    #[serde(default)]
    pub rx_buffer_size: Option<usize>,
}

fn default_headroom() -> usize {
    ZC_HEADROOM
}
fn default_classes() -> Vec<ClassEntry> {
    vec![
        ClassEntry {
            slot_size: 4096,
            count: 256,
        },
        // a 64 KiB message and its headroom fit one slot
        ClassEntry {
            slot_size: 64 * 1024 + 4096,
            count: 64,
        },
        ClassEntry {
            slot_size: 1024 * 1024 + 4096,
            count: 8,
        },
    ]
}
fn default_rx_buffers() -> usize {
    1024
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            headroom: default_headroom(),
            classes: default_classes(),
            rx_buffers: default_rx_buffers(),
            rx_buffer_size: None,
        }
    }
}

fn default_netmtu() -> usize {
    limits::NETMTU_DEFAULT
}
fn default_max_message_size() -> usize {
    limits::MAX_MESSAGE_SIZE_DEFAULT
}
fn default_handle_queue_bytes() -> usize {
    HANDLE_QUEUE_BYTES_DEFAULT
}
/// Default `zc_copy_threshold` of a node (the engine's own default is 1024,
/// measured on the engine alone): with the staged copying send path, a
/// 1 KiB zero-copy message costs less copied than in its own pool slot
/// and frame (cpgtool bench, 1 KiB zcb: 470..490k msgs/s with a slot,
/// 710..810k copied, the copying mcast_joined 610..740k).
pub const ZC_COPY_THRESHOLD_DEFAULT: usize = 2048;

fn default_zc_copy_threshold() -> usize {
    ZC_COPY_THRESHOLD_DEFAULT
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cpg")
}

/// The configuration file as written (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Cluster name; frames of another cluster are dropped.
    pub cluster_name: String,
    /// Cluster id in every frame (default: a hash of `cluster_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<u32>,
    /// This node (may be left out and given on the command line instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodeid: Option<NodeId>,
    /// Directory for persistent state (the ring sequence number,
    /// `ringseq-<nodeid>`); several nodes may share it.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The path MTU (Corosync's `netmtu`): the whole IP packet; frames are 28 B smaller.
    #[serde(default = "default_netmtu")]
    pub netmtu: usize,
    /// Largest message `mcast` accepts (above it TOO_BIG).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Bytes of undispatched events a handle may hold before it is evicted.
    #[serde(default = "default_handle_queue_bytes")]
    pub handle_queue_bytes: usize,
    /// `SendZc` policy.
    #[serde(default)]
    pub zerocopy: ZeroCopy,
    /// Zero-copy messages at least this long are never copied.
    #[serde(default = "default_zc_copy_threshold")]
    pub zc_copy_threshold: usize,
    /// Transport.
    #[serde(default)]
    pub transport: TransportKind,
    /// Frame protection: `none`, `authenticate` or `encrypt` (AES-256-GCM).
    #[serde(default)]
    pub crypto: Crypto,
    /// The cluster key (`cpgtool keygen`; Corosync's `authkey` works too):
    /// the same file on every node, readable by the owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Timers and flow control.
    #[serde(default)]
    pub totem: TotemSection,
    /// Buffer pool.
    #[serde(default)]
    pub pool: PoolSection,
    /// The static node list.
    pub nodelist: Vec<NodeEntry>,
}

/// Why a configuration was refused. Each message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type, or an unknown key.
    #[error("config {path}: {message}")]
    Parse {
        /// The file (or `<string>`).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// No `nodeid` in the file and none given.
    #[error("nodeid is not set: give `nodeid = N` in the config or --nodeid N")]
    NoNodeId,
    /// `crypto` is on but no key file is named.
    #[error("crypto is \"authenticate\" or \"encrypt\" but key_file is not set: make one with `cpgtool keygen <path>` and copy it to every node")]
    KeyFileMissing,
    /// `nodeid` is not one of the node list's.
    #[error("nodeid {0} is not in the nodelist")]
    NotInNodeList(NodeId),
    /// The node list is empty.
    #[error("nodelist is empty: list every node as [[nodelist]] nodeid = N, addr = \"IP:PORT\"")]
    EmptyNodeList,
    /// More nodes than a ring holds.
    #[error("nodelist has {0} nodes, at most {max}", max = limits::NODES_MAX)]
    TooManyNodes(usize),
    /// A zero node id.
    #[error("nodelist: nodeid 0 is not allowed (node ids are non-zero)")]
    ZeroNodeId,
    /// A node id listed twice.
    #[error("nodelist: nodeid {0} appears twice")]
    DuplicateNodeId(NodeId),
    /// Two nodes on one address.
    #[error("nodelist: nodes {a} and {b} both use {addr}")]
    DuplicateAddr {
        /// First node.
        a: NodeId,
        /// Second node.
        b: NodeId,
        /// The address.
        addr: SocketAddrV4,
    },
    /// Port 0 in the node list.
    #[error("nodelist: node {0} has port 0; give a real port")]
    ZeroPort(NodeId),
    /// Empty or over-long cluster name.
    #[error("cluster_name must be 1..=255 bytes")]
    ClusterName,
    /// A Totem setting the engine refuses.
    #[error("totem settings: {0}")]
    Engine(limits::ConfigError),
    /// A pool setting that cannot work.
    #[error("pool: {0}")]
    Pool(PoolConfigError),
    /// The pool headroom is below what the engine writes in front of a payload.
    #[error("pool.headroom {0} is below the {min} bytes the headers need", min = ZC_HEADROOM)]
    Headroom(usize),
    /// The largest slot class is too small.
    #[error("pool: the largest slot class holds {0} payload bytes; it must hold at least {min} (1 MiB)", min = ZCB_MAX_MIN)]
    LargestClass(usize),
    /// Receive buffer count.
    #[error("pool.rx_buffers {0} must be a power of two in 2..=32768")]
    RxBuffers(usize),
    /// Receive buffer size.
    #[error("pool.rx_buffer_size {got} is below the frame size plus {RX_HEADROOM} ({need})")]
    RxBufferSize {
        /// Configured.
        got: usize,
        /// Needed.
        need: usize,
    },
    /// The per-handle queue cap is too small.
    #[error("handle_queue_bytes {0} is below the minimum {HANDLE_QUEUE_BYTES_MIN}")]
    HandleQueue(usize),
}

impl ConfigFile {
    /// Parse a file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the parser's line and column.
    pub fn parse(text: &str, path: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Read and parse a file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The file's text (what `cpgtool demo` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// A configuration for `nodes` (nodeid, address), defaults elsewhere.
    pub fn new(cluster_name: &str, nodes: &[(NodeId, SocketAddrV4)]) -> ConfigFile {
        ConfigFile {
            cluster_name: cluster_name.to_string(),
            cluster_id: None,
            nodeid: None,
            state_dir: default_state_dir(),
            netmtu: default_netmtu(),
            max_message_size: default_max_message_size(),
            handle_queue_bytes: default_handle_queue_bytes(),
            zerocopy: ZeroCopy::Auto,
            zc_copy_threshold: default_zc_copy_threshold(),
            transport: TransportKind::default(),
            crypto: Crypto::None,
            key_file: None,
            totem: TotemSection::default(),
            pool: PoolSection::default(),
            nodelist: nodes
                .iter()
                .map(|&(nodeid, addr)| NodeEntry { nodeid, addr })
                .collect(),
        }
    }

    /// Check everything and build the settings of node `nodeid` (or the
    /// file's `nodeid` when `None`).
    ///
    /// # Errors
    /// The first problem found, naming the setting.
    pub fn validate(&self, nodeid: Option<NodeId>) -> Result<NodeConfig, ConfigError> {
        let me = nodeid.or(self.nodeid).ok_or(ConfigError::NoNodeId)?;
        if self.cluster_name.is_empty() || self.cluster_name.len() > 255 {
            return Err(ConfigError::ClusterName);
        }
        if self.nodelist.is_empty() {
            return Err(ConfigError::EmptyNodeList);
        }
        if self.nodelist.len() > limits::NODES_MAX {
            return Err(ConfigError::TooManyNodes(self.nodelist.len()));
        }
        for (i, n) in self.nodelist.iter().enumerate() {
            if n.nodeid == 0 {
                return Err(ConfigError::ZeroNodeId);
            }
            if n.addr.port() == 0 {
                return Err(ConfigError::ZeroPort(n.nodeid));
            }
            for m in &self.nodelist[..i] {
                if m.nodeid == n.nodeid {
                    return Err(ConfigError::DuplicateNodeId(n.nodeid));
                }
                if m.addr == n.addr {
                    return Err(ConfigError::DuplicateAddr {
                        a: m.nodeid,
                        b: n.nodeid,
                        addr: n.addr,
                    });
                }
            }
        }
        if me == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if !self.nodelist.iter().any(|n| n.nodeid == me) {
            return Err(ConfigError::NotInNodeList(me));
        }
        let ids: Vec<NodeId> = self.nodelist.iter().map(|n| n.nodeid).collect();
        let mut engine = limits::Config::new(me, &ids);
        engine.cluster_id = self
            .cluster_id
            .unwrap_or_else(|| cluster_id_of(&self.cluster_name));
        engine.netmtu = self.netmtu;
        engine.max_message_size = self.max_message_size;
        engine.zc_copy_threshold = self.zc_copy_threshold;
        let t = &self.totem;
        let ms = Duration::from_millis;
        if let Some(v) = t.token_ms {
            engine.token = ms(v);
        }
        if let Some(v) = t.token_coefficient_ms {
            engine.token_coefficient = ms(v);
        }
        if let Some(v) = t.token_retransmits_before_loss_const {
            engine.token_retransmits_before_loss_const = v;
        }
        if let Some(v) = t.join_ms {
            engine.join = ms(v);
        }
        if let Some(v) = t.consensus_ms {
            engine.consensus = ms(v);
        }
        if let Some(v) = t.merge_ms {
            engine.merge = ms(v);
        }
        if let Some(v) = t.hold_ms {
            engine.hold = ms(v);
        }
        if let Some(v) = t.fail_recv_const {
            engine.fail_recv_const = v;
        }
        if let Some(v) = t.seqno_unchanged_const {
            engine.seqno_unchanged_const = v;
        }
        if let Some(v) = t.max_messages {
            engine.max_messages = v;
        }
        if let Some(v) = t.window_size {
            engine.window_size = v;
        }
        if let Some(v) = t.miss_count_const {
            engine.miss_count_const = v;
        }
        if let Some(v) = t.send_queue_frames {
            engine.send_queue_frames = v;
        }
        match (self.crypto, &self.key_file) {
            (Crypto::None, _) => {}
            (_, None) => return Err(ConfigError::KeyFileMissing),
            (_, Some(p)) if p.as_os_str().is_empty() => return Err(ConfigError::KeyFileMissing),
            (_, Some(_)) => engine.frame_overhead += cpg_core::seal::SEAL_OVERHEAD,
        }
        cpg_core::engine::validate_config(&engine).map_err(ConfigError::Engine)?;

        let p = &self.pool;
        if p.headroom < ZC_HEADROOM {
            return Err(ConfigError::Headroom(p.headroom));
        }
        let classes: Vec<ClassSpec> = p
            .classes
            .iter()
            .map(|c| ClassSpec::new(c.slot_size, c.count))
            .collect();
        let pool = PoolConfig::new(p.headroom, &classes).map_err(ConfigError::Pool)?;
        let largest = p
            .classes
            .last()
            .map_or(0, |c| c.slot_size.saturating_sub(p.headroom));
        if largest < ZCB_MAX_MIN {
            return Err(ConfigError::LargestClass(largest));
        }
        if !p.rx_buffers.is_power_of_two() || !(2..=32768).contains(&p.rx_buffers) {
            return Err(ConfigError::RxBuffers(p.rx_buffers));
        }
        let need = engine.frame_max() + RX_HEADROOM;
        let rx_buffer_size = p.rx_buffer_size.unwrap_or(need.next_multiple_of(64));
        if rx_buffer_size < need {
            return Err(ConfigError::RxBufferSize {
                got: rx_buffer_size,
                need,
            });
        }
        if self.handle_queue_bytes < HANDLE_QUEUE_BYTES_MIN {
            return Err(ConfigError::HandleQueue(self.handle_queue_bytes));
        }
        let nodes = self.nodelist.iter().map(|n| (n.nodeid, n.addr)).collect();
        Ok(NodeConfig {
            node_id: me,
            cluster_name: self.cluster_name.clone(),
            nodes,
            engine,
            pool,
            zcb_max: largest,
            rx_buffers: p.rx_buffers,
            rx_buffer_size,
            state_dir: self.state_dir.clone(),
            handle_queue_bytes: self.handle_queue_bytes,
            zerocopy: self.zerocopy,
            transport: self.transport,
            crypto: self.crypto,
            key_file: self.key_file.clone(),
        })
    }
}

/// FNV-1a (32 bit) of the cluster name: the default cluster id.
pub fn cluster_id_of(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in name.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A validated configuration for one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node.
    pub node_id: NodeId,
    /// Cluster name.
    pub cluster_name: String,
    /// Every node and its address, in file order.
    pub nodes: Vec<(NodeId, SocketAddrV4)>,
    /// The engine's settings.
    pub engine: limits::Config,
    /// The zero-copy pool's shape.
    pub pool: PoolConfig,
    /// Largest zero-copy buffer (payload bytes).
    pub zcb_max: usize,
    /// Receive buffers.
    pub rx_buffers: usize,
    /// Bytes per receive buffer.
    pub rx_buffer_size: usize,
    /// State directory.
    pub state_dir: PathBuf,
    /// Per-handle queue cap.
    pub handle_queue_bytes: usize,
    /// `SendZc` policy.
    pub zerocopy: ZeroCopy,
    /// Transport.
    pub transport: TransportKind,
    /// Frame protection.
    pub crypto: Crypto,
    /// The cluster key file (set whenever `crypto` is not `none`).
    pub key_file: Option<PathBuf>,
}

impl NodeConfig {
    /// This node's own address.
    pub fn addr(&self) -> SocketAddrV4 {
        self.nodes
            .iter()
            .find(|(n, _)| *n == self.node_id)
            .map(|(_, a)| *a)
            .expect("validated: self in nodelist")
    }

    /// Settings for a node with no socket (the in-process loopback
    /// transport, tests): `node_id` in `nodes`, fast timers, defaults elsewhere.
    pub fn in_memory(node_id: NodeId, nodes: &[NodeId]) -> NodeConfig {
        let list: Vec<(NodeId, SocketAddrV4)> = nodes
            .iter()
            .map(|&n| {
                (
                    n,
                    SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 20000 + (n % 40000) as u16),
                )
            })
            .collect();
        let mut file = ConfigFile::new("in-memory", &list);
        file.state_dir = std::env::temp_dir();
        let mut c = file
            .validate(Some(node_id))
            .expect("in-memory defaults are valid");
        let fast = limits::Config::fast(node_id, nodes);
        c.engine.token = fast.token;
        c.engine.token_coefficient = fast.token_coefficient;
        c.engine.join = fast.join;
        c.engine.merge = fast.merge;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster_name = "t"
state_dir = "/tmp/x"
[[nodelist]]
nodeid = 1
addr = "127.0.0.1:5405"
[[nodelist]]
nodeid = 2
addr = "127.0.0.1:5406"
[totem]
token_ms = 1000
"#;

    fn err(text: &str, id: Option<u32>) -> String {
        let f = match ConfigFile::parse(text, "t.toml") {
            Ok(f) => f,
            Err(e) => return e.to_string(),
        };
        f.validate(id)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn good_file_validates() {
        let f = ConfigFile::parse(GOOD, "t.toml").unwrap();
        let c = f.validate(Some(2)).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.engine.nodes.as_slice(), &[1, 2]);
        assert_eq!(c.engine.token.as_millis(), 1000);
        assert_eq!(c.engine.cluster_id, cluster_id_of("t"));
        assert_eq!(c.addr().port(), 5406);
        assert!(c.zcb_max >= ZCB_MAX_MIN);
        // round trip through the writer
        let again = ConfigFile::parse(&f.to_toml(), "again").unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn errors_name_the_setting() {
        assert!(err(GOOD, None).contains("nodeid is not set"));
        assert!(err(GOOD, Some(3)).contains("nodeid 3 is not in the nodelist"));
        let dup = GOOD.replace("nodeid = 2", "nodeid = 1");
        assert!(err(&dup, Some(1)).contains("nodeid 1 appears twice"));
        let same = GOOD.replace("5406", "5405");
        assert!(err(&same, Some(1)).contains("both use 127.0.0.1:5405"));
        let bad_addr = GOOD.replace("127.0.0.1:5406", "localhost:x");
        let e = err(&bad_addr, Some(1));
        assert!(e.contains("t.toml") && e.contains("line"), "{e}");
        let unknown = format!("{GOOD}\nbogus = 1\n");
        assert!(err(&unknown, Some(1)).contains("bogus"));
        let short = GOOD.replace("token_ms = 1000", "token_ms = 5");
        assert!(err(&short, Some(1)).contains("timer token too short"));
        let mtu = format!("netmtu = 100\n{GOOD}");
        assert!(err(&mtu, Some(1)).contains("netmtu 100"));
        let q = format!("handle_queue_bytes = 10\n{GOOD}");
        assert!(err(&q, Some(1)).contains("handle_queue_bytes 10"));
        let pool = format!("{GOOD}\n[pool]\nclasses = [{{ slot_size = 4096, count = 4 }}]\n");
        assert!(err(&pool, Some(1)).contains("largest slot class"));
        let rx = format!("{GOOD}\n[pool]\nrx_buffers = 1000\n");
        assert!(err(&rx, Some(1)).contains("rx_buffers 1000"));
        let zero = GOOD.replace("nodeid = 2", "nodeid = 0");
        assert!(err(&zero, Some(1)).contains("nodeid 0"));
        let port = GOOD.replace("5406", "0");
        assert!(err(&port, Some(1)).contains("port 0"));
        assert!(err("cluster_name = \"x\"\nnodelist = []\n", Some(1)).contains("nodelist is empty"));
    }

    #[test]
    fn huge_timer_is_a_typed_error() {
        // Found by the `config` fuzz target (cpg-std/fuzz): the largest TOML
        // integer as a timer overflowed the ms → ns conversion (a panic with
        // overflow checks, a wrapped timer without).
        for key in [
            "token_ms",
            "token_coefficient_ms",
            "join_ms",
            "consensus_ms",
            "merge_ms",
            "hold_ms",
        ] {
            let text = GOOD.replace("token_ms = 1000", &format!("{key} = 9223372036854775807"));
            let e = err(&text, Some(1));
            let name = key.trim_end_matches("_ms");
            assert!(e.contains(&format!("timer {name} too long")), "{key}: {e}");
        }
    }
}

//! The node configuration file (TOML) and its validation.
//!
//! One file describes a whole cluster: the cluster name, the static node
//! list (nodeid → IPv4 or IPv6 `address:port`, `"[fd00::1]:5405"` for
//! IPv6), timers, sizes and the state
//! directory. A process picks its own node by `nodeid` (in the file, or
//! given on the command line), so `cpgtool demo` writes one file for every
//! node it starts.
//!
//! ```toml
//! cluster_name = "demo"
//! state_dir = "/var/lib/cpg"
//! netmtu = "auto"           # or the path MTU in bytes, as Corosync's
//! max_message_size = 67108864
//! handle_queue_bytes = 0   # derived: 2 × max_message_size + 64 KiB
//! slow_consumer = "evict"
//! zerocopy = "auto"
//! gso = true               # UDP segmentation offload where the kernel has it
//! gro = true               # UDP receive offload (64 KiB receive buffers)
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
//! A node may list more addresses, one per redundant link (`links = [...]`
//! beside `addr`, with `link_mode`, `[[link]]` priorities and heartbeat
//! timers): see [`links`].
//!
//! Every setting but `cluster_name` and `nodelist` has a default (Corosync's
//! where Corosync has one). [`ConfigFile::validate`] turns a parsed file into
//! a [`NodeConfig`] or names the first problem in an [`ConfigError`].
//!
//! Every number has a range ([`ranges`], listed in the README's
//! "Configuration" section), checked as written (milliseconds, bytes,
//! counts) before anything is computed from it, so no setting can wrap
//! into another; the error names the setting, the value and the range.
//! A file larger than [`CONFIG_BYTES_MAX`] is refused unread, and an
//! error quotes at most [`EXCERPT_CHARS_MAX`] characters of the input.
//! One relation is checked beyond the ranges: a handle's queue cap holds
//! two maximum-size messages ([`handle_queue_bytes_min`]; the slow-consumer
//! policy, [`SlowConsumer`], lives beside it in `config/queue.rs`).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cpg_core::limits::{self, ZC_HEADROOM};
use cpg_core::pool::{ClassSpec, PoolConfig, PoolConfigError};
use cpg_core::{Duration, NodeId};
use serde::{Deserialize, Serialize};

pub use crate::crypto::Crypto;

/// Largest configuration accepted (1 MiB); a larger file is refused unread.
pub const CONFIG_BYTES_MAX: usize = 1 << 20;
/// Most characters of the input an error message quotes.
pub const EXCERPT_CHARS_MAX: usize = 80;
/// The largest zero-copy buffer must hold at least this many payload bytes.
pub const ZCB_MAX_MIN: usize = 1024 * 1024;
pub use cpg_uring::{ZeroCopy, RX_HEADROOM};

pub mod corosync;
pub mod ipc;
pub mod links;
mod netmtu;
mod queue;
pub mod ranges;
pub use cpg_uring::LinkMode;
pub use ipc::{CpuSetting, DaemonCpu, IpcConfig, IpcSection, DEFAULT_SOCKET};
pub use links::{LinkConfig, LinkEntry, Links};
pub use netmtu::NetMtu;
use queue::check_queue;
pub use queue::{
    handle_queue_bytes_min, SlowConsumer, HANDLE_QUEUE_BYTES_DEFAULT, HANDLE_QUEUE_BYTES_MAX,
    HANDLE_QUEUE_BYTES_MIN, HANDLE_QUEUE_SLACK,
};
pub use ranges::Range;

/// At most [`EXCERPT_CHARS_MAX`] characters of `s`, control characters
/// escaped, `…` where it was cut: how an error quotes input.
pub fn excerpt(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A parser's error message with every quoted part (between `` ` ``s or
/// `"`s, where parsers put the offending input) cut to an [`excerpt`], and
/// the whole to a few excerpts' length.
pub fn excerpt_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if out.chars().count() > 4 * EXCERPT_CHARS_MAX {
            out.push('…');
            break;
        }
        out.push(c);
        if c != '`' && c != '"' {
            continue;
        }
        // keep one character more than an excerpt shows, so it knows to cut
        let (mut quoted, mut kept) = (String::new(), 0);
        let mut closed = false;
        while let Some(q) = chars.next() {
            if q == c {
                closed = true;
                break;
            }
            let escaped = if q == '\\' { chars.next() } else { None };
            if kept <= EXCERPT_CHARS_MAX {
                quoted.push(q);
                quoted.extend(escaped);
                kept += 1;
            }
        }
        out.push_str(&excerpt(&quoted));
        if closed {
            out.push(c);
        }
    }
    out
}

/// Which transport a [`crate::Node`] runs on (`transport = "uring"` or
/// `"udp"` in the file). Both are `cpg-uring`'s driver loop; they differ
/// in how it reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// io_uring: registered buffers, `WriteFixed`/`SendZc`, multishot
    /// receive. The default.
    #[default]
    Uring,
    /// Plain `sendmsg`/`recvfrom` syscalls with `poll`, no io_uring: chosen
    /// explicitly, for kernels without it (never a silent fallback).
    Udp,
}

/// The line of the configuration file that selects [`TransportKind::Udp`]:
/// what an io_uring set-up error tells the user to write.
pub(crate) const TRANSPORT_UDP_SETTING: &str = "transport = \"udp\"";

/// One node of the node list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Totem node id (non-zero).
    pub nodeid: NodeId,
    /// `address:port` the node's UDP socket binds to: IPv4
    /// (`"10.0.0.1:5405"`) or IPv6 (`"[fd00::1]:5405"`); every node of a
    /// link in one family. Link 0.
    pub addr: SocketAddr,
    /// The node's addresses on links 1, 2, ... (redundant links, see
    /// [`links`]): every node lists as many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SocketAddr>,
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

fn default_max_message_size() -> usize {
    limits::MAX_MESSAGE_SIZE_DEFAULT
}
fn default_handle_queue_bytes() -> usize {
    // derived from max_message_size at validation
    0
}
/// Default `zc_copy_threshold` of a node (the engine's own default is 1024,
/// measured on the engine alone): with the staged copying send path, a
/// 1 KiB zero-copy message costs less copied than in its own pool slot
/// and frame (cpgtool bench, 1 KiB zcb: 470..490k msgs/s with a slot,
/// 710..810k copied, the copying mcast_joined 610..740k).
pub const ZC_COPY_THRESHOLD_DEFAULT: usize = 2048;

fn default_gso() -> bool {
    true
}

fn default_gro() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

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
    /// The path MTU (Corosync's `netmtu`): the whole IP packet; frames are
    /// 28 B (IPv4) or 48 B (IPv6) smaller, the larger if the ring has both. `"auto"` (the default): the kernel's path MTU to the
    /// other nodes, read at start ([`NodeConfig::with_path_mtu`]).
    #[serde(default)]
    pub netmtu: NetMtu,
    /// Largest message `mcast` accepts (above it TOO_BIG).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Bytes of undispatched events a handle may hold before it is evicted;
    /// at least [`handle_queue_bytes_min`] of `max_message_size`, which 0
    /// (the default) stands for.
    #[serde(default = "default_handle_queue_bytes")]
    pub handle_queue_bytes: usize,
    /// What is done about a handle that dispatches too slowly.
    #[serde(default)]
    pub slow_consumer: SlowConsumer,
    /// `SendZc` policy.
    #[serde(default)]
    pub zerocopy: ZeroCopy,
    /// Zero-copy messages at least this long are never copied.
    #[serde(default = "default_zc_copy_threshold")]
    pub zc_copy_threshold: usize,
    /// UDP segmentation offload: a run of same-size frames to one peer
    /// goes as one send the kernel cuts into datagrams (`true`, the
    /// default, where the kernel offers `UDP_SEGMENT`; io_uring only).
    #[serde(default = "default_gso", skip_serializing_if = "is_true")]
    pub gso: bool,
    /// UDP generic receive offload: the kernel may hand several datagrams
    /// of one sender as one receive, cut into its frames by the transport
    /// (`true`, the default, where the kernel offers `UDP_GRO`; io_uring
    /// only). A coalesced receive needs a 64 KiB receive buffer: with it
    /// on, `pool.rx_buffer_size` defaults to
    /// [`cpg_uring::GRO_RX_BUFFER_SIZE`]; a smaller one set there turns
    /// GRO off.
    #[serde(default = "default_gro", skip_serializing_if = "is_true")]
    pub gro: bool,
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
    /// How frames are spread over redundant links: `passive` (the best
    /// live link) or `active` (round-robin over live links).
    #[serde(default, skip_serializing_if = "links::is_default_mode")]
    pub link_mode: LinkMode,
    /// Link heartbeat period (0 or absent: token / 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ping_interval_ms: Option<u64>,
    /// A link without a heartbeat answer this long is down (0 or absent:
    /// token / 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ping_timeout_ms: Option<u64>,
    /// Timers and flow control.
    #[serde(default)]
    pub totem: TotemSection,
    /// Buffer pool.
    #[serde(default)]
    pub pool: PoolSection,
    /// The static node list.
    pub nodelist: Vec<NodeEntry>,
    /// Per-link settings (`[[link]] number, priority`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<LinkEntry>,
    /// How `cpgd` serves client processes (ignored by an embedded node).
    #[serde(default)]
    pub ipc: IpcSection,
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
    /// Larger than [`CONFIG_BYTES_MAX`]: refused before it is parsed.
    #[error(
        "config {path}: too large ({size} bytes or more; at most {CONFIG_BYTES_MAX} are accepted)"
    )]
    TooLarge {
        /// The file (or `<string>`).
        path: String,
        /// Its size, or the bytes read before giving up.
        size: u64,
    },
    /// Not valid TOML, or a key of the wrong type, or an unknown key.
    #[error("config {path}: {message}")]
    Parse {
        /// The file (or `<string>`).
        path: String,
        /// The parser's message, with line and column and a short excerpt
        /// ([`EXCERPT_CHARS_MAX`]) of the input.
        message: String,
    },
    /// A number outside its [`Range`].
    #[error("{} = {value} is outside the allowed range {range}", .range.field)]
    OutOfRange {
        /// The value as written.
        value: u64,
        /// The range, naming the setting.
        range: Range,
    },
    /// `state_dir` is empty (it would be the working directory).
    #[error("state_dir is empty: give the directory of the ring seq file (e.g. \"/var/lib/cpg\")")]
    StateDir,
    /// No `nodeid` in the file and none given.
    #[error("nodeid is not set: give `nodeid = N` in the config or --nodeid N")]
    NoNodeId,
    /// `crypto` is on but no key file is named.
    #[error("crypto is \"authenticate\" or \"encrypt\" but key_file is not set: make one with `cpgtool keygen <path>` and copy it to every node")]
    KeyFileMissing,
    /// `netmtu = "auto"` read a path MTU no frame fits.
    #[error("netmtu = \"auto\": the path MTU to node {node} is {mtu} bytes, below {min}; set netmtu explicitly", min = limits::NETMTU_MIN)]
    PathMtuTooSmall {
        /// The peer (or this node, alone in its node list).
        node: NodeId,
        /// The path MTU the kernel reported.
        mtu: usize,
    },
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
        addr: SocketAddr,
    },
    /// A node with more than [`cpg_uring::LINKS_MAX`] links.
    #[error("nodelist: node {node} has {count} links (addr and {extra} in links); at most {max}", extra = .count - 1, max = cpg_uring::LINKS_MAX)]
    TooManyLinks {
        /// The node.
        node: NodeId,
        /// Its links.
        count: usize,
    },
    /// Nodes with different numbers of links.
    #[error("nodelist: node {a} has {a_links} links, node {b} has {b_links}: every node must be on every link")]
    LinkCountMismatch {
        /// A node.
        a: NodeId,
        /// Its links.
        a_links: usize,
        /// Another.
        b: NodeId,
        /// Its links.
        b_links: usize,
    },
    /// A `[[link]]` number given twice.
    #[error("[[link]] number {0} appears twice")]
    DuplicateLinkNumber(u8),
    /// A `[[link]]` for a link no node has.
    #[error("[[link]] number {number}: the nodes have {links} links (0..={last})", last = .links - 1)]
    UnknownLink {
        /// The number.
        number: u8,
        /// Links the nodes have.
        links: usize,
    },
    /// A heartbeat timeout not above its interval.
    #[error("link_ping_timeout_ms ({timeout:?}) must be longer than link_ping_interval_ms ({interval:?})")]
    LinkPing {
        /// The interval in force.
        interval: std::time::Duration,
        /// The timeout in force.
        timeout: std::time::Duration,
    },
    /// A link whose nodes are not all of one address family.
    #[error("nodelist: link {link} mixes address families: node {a} at {addr_a}, node {b} at {addr_b} (one family per link)")]
    LinkFamilyMismatch {
        /// The link number.
        link: u8,
        /// A node of one family.
        a: NodeId,
        /// Its address.
        addr_a: SocketAddr,
        /// A node of the other family.
        b: NodeId,
        /// Its address.
        addr_b: SocketAddr,
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
    /// The largest slot class is too small.
    #[error("pool: the largest slot class holds {0} payload bytes; it must hold at least {min} (1 MiB)", min = ZCB_MAX_MIN)]
    LargestClass(usize),
    /// `handle_queue_bytes` cannot hold two maximum-size messages.
    #[error(
        "handle_queue_bytes = {handle_queue_bytes} is too small for max_message_size = \
         {max_message_size}: a handle's queue must hold two maximum-size messages and \
         64 KiB of small events, at least {min} bytes (2 × max_message_size + 65536); \
         raise handle_queue_bytes, lower max_message_size, or set handle_queue_bytes = 0 \
         to derive it"
    )]
    QueueTooSmall {
        /// The cap as configured.
        handle_queue_bytes: usize,
        /// The largest message.
        max_message_size: usize,
        /// The smallest cap that works ([`handle_queue_bytes_min`]).
        min: usize,
    },
    /// An `[ipc]` setting the daemon cannot use (the message names it).
    #[error("{0}")]
    Ipc(String),
    /// A corosync.conf that cannot be carried over.
    #[error("corosync.conf: {0}")]
    Corosync(#[from] corosync::CorosyncConfError),
    /// Receive buffer count not a power of two.
    #[error("pool.rx_buffers = {0} must be a power of two in {range}", range = ranges::POOL_RX_BUFFERS)]
    RxBuffers(usize),
}

impl ConfigFile {
    /// Parse a file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::TooLarge`] above [`CONFIG_BYTES_MAX`] (unparsed), or
    /// [`ConfigError::Parse`] with the line, the column and a short excerpt.
    pub fn parse(text: &str, path: &str) -> Result<ConfigFile, ConfigError> {
        if text.len() > CONFIG_BYTES_MAX {
            return Err(ConfigError::TooLarge {
                path: path.to_string(),
                size: text.len() as u64,
            });
        }
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: parse_message(text, &e),
        })
    }

    /// Read and parse a file; one larger than [`CONFIG_BYTES_MAX`] is
    /// refused without reading it.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::TooLarge`] or [`ConfigError::Parse`].
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let name = path.display().to_string();
        let too_large = |size| ConfigError::TooLarge {
            path: name.clone(),
            size,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let size = file.metadata().map_err(read)?.len();
        if size > CONFIG_BYTES_MAX as u64 {
            return Err(too_large(size));
        }
        // a pipe or a growing file says nothing true in its metadata
        let mut bytes = Vec::new();
        file.take(CONFIG_BYTES_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() > CONFIG_BYTES_MAX {
            return Err(too_large(bytes.len() as u64));
        }
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Parse {
            path: name.clone(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        Self::parse(&text, &name)
    }

    /// The file's text (what `cpgtool demo` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// A configuration for `nodes` (nodeid, address), defaults elsewhere.
    pub fn new<A: Into<SocketAddr> + Copy>(
        cluster_name: &str,
        nodes: &[(NodeId, A)],
    ) -> ConfigFile {
        ConfigFile {
            cluster_name: cluster_name.to_string(),
            cluster_id: None,
            nodeid: None,
            state_dir: default_state_dir(),
            netmtu: NetMtu::Auto,
            max_message_size: default_max_message_size(),
            handle_queue_bytes: default_handle_queue_bytes(),
            slow_consumer: SlowConsumer::default(),
            zerocopy: ZeroCopy::Auto,
            zc_copy_threshold: default_zc_copy_threshold(),
            gso: true,
            gro: true,
            transport: TransportKind::default(),
            crypto: Crypto::None,
            key_file: None,
            link_mode: LinkMode::default(),
            link_ping_interval_ms: None,
            link_ping_timeout_ms: None,
            link: Vec::new(),
            totem: TotemSection::default(),
            pool: PoolSection::default(),
            ipc: IpcSection::default(),
            nodelist: nodes
                .iter()
                .map(|&(nodeid, addr)| NodeEntry {
                    nodeid,
                    addr: addr.into(),
                    links: Vec::new(),
                })
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
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::StateDir);
        }
        // Every number is checked as written, before it is converted or
        // combined with another: nothing below can overflow or wrap.
        // "auto" stands at the default until the node starts on a kernel path
        let netmtu = match self.netmtu {
            NetMtu::Bytes(v) => ranges::NETMTU.check_usize(v)?,
            NetMtu::Auto => limits::NETMTU_DEFAULT,
        };
        let max_message_size = ranges::MAX_MESSAGE_SIZE.check_usize(self.max_message_size)?;
        let handle_queue_bytes =
            match ranges::HANDLE_QUEUE_BYTES.check_usize(self.handle_queue_bytes)? {
                0 => handle_queue_bytes_min(max_message_size),
                cap => cap,
            };
        check_queue(handle_queue_bytes, max_message_size)?;
        let zc_copy_threshold = ranges::ZC_COPY_THRESHOLD.check_usize(self.zc_copy_threshold)?;
        let t = &self.totem;
        let timer = |range: Range, v: Option<u64>| v.map(|v| range.check(v)).transpose();
        let count = |range: Range, v: Option<u32>| v.map(|v| range.check_u32(v)).transpose();
        let token = timer(ranges::TOKEN_MS, t.token_ms)?;
        let token_coefficient = timer(ranges::TOKEN_COEFFICIENT_MS, t.token_coefficient_ms)?;
        let retransmits = count(
            ranges::TOKEN_RETRANSMITS,
            t.token_retransmits_before_loss_const,
        )?;
        let join = timer(ranges::JOIN_MS, t.join_ms)?;
        let consensus = timer(ranges::CONSENSUS_MS, t.consensus_ms)?;
        let merge = timer(ranges::MERGE_MS, t.merge_ms)?;
        let hold = timer(ranges::HOLD_MS, t.hold_ms)?;
        let fail_recv_const = count(ranges::FAIL_RECV_CONST, t.fail_recv_const)?;
        let seqno_unchanged_const = count(ranges::SEQNO_UNCHANGED_CONST, t.seqno_unchanged_const)?;
        let max_messages = count(ranges::MAX_MESSAGES, t.max_messages)?;
        let window_size = count(ranges::WINDOW_SIZE, t.window_size)?;
        let miss_count_const = count(ranges::MISS_COUNT_CONST, t.miss_count_const)?;
        let send_queue_frames = t
            .send_queue_frames
            .map(|v| ranges::SEND_QUEUE_FRAMES.check_usize(v))
            .transpose()?;
        let p = &self.pool;
        ranges::POOL_HEADROOM.check_usize(p.headroom)?;
        for c in &p.classes {
            ranges::POOL_SLOT_SIZE.check_usize(c.slot_size)?;
            ranges::POOL_SLOT_COUNT.check_usize(c.count)?;
        }
        ranges::POOL_RX_BUFFERS.check_usize(p.rx_buffers)?;
        if !p.rx_buffers.is_power_of_two() {
            return Err(ConfigError::RxBuffers(p.rx_buffers));
        }
        if let Some(size) = p.rx_buffer_size {
            ranges::POOL_RX_BUFFER_SIZE.check_usize(size)?;
        }

        let ids: Vec<NodeId> = self.nodelist.iter().map(|n| n.nodeid).collect();
        let mut engine = limits::Config::new(me, &ids);
        engine.cluster_id = self
            .cluster_id
            .unwrap_or_else(|| cluster_id_of(&self.cluster_name));
        engine.netmtu = netmtu;
        engine.max_message_size = max_message_size;
        engine.zc_copy_threshold = zc_copy_threshold;
        let ms = Duration::from_millis;
        let set = |slot: &mut Duration, v: Option<u64>| {
            if let Some(v) = v {
                *slot = ms(v);
            }
        };
        set(&mut engine.token, token);
        set(&mut engine.token_coefficient, token_coefficient);
        set(&mut engine.join, join);
        set(&mut engine.consensus, consensus);
        set(&mut engine.merge, merge);
        set(&mut engine.hold, hold);
        let set = |slot: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut engine.token_retransmits_before_loss_const, retransmits);
        set(&mut engine.fail_recv_const, fail_recv_const);
        set(&mut engine.seqno_unchanged_const, seqno_unchanged_const);
        set(&mut engine.max_messages, max_messages);
        set(&mut engine.window_size, window_size);
        set(&mut engine.miss_count_const, miss_count_const);
        engine.send_queue_frames =
            send_queue_frames.unwrap_or(limits::send_queue_frames_for(netmtu));
        let token = std::time::Duration::from_nanos(engine.token_effective().as_nanos());
        let links = links::validate(self, token)?;
        // The frame budget holds on every path of the ring: the largest
        // IP + UDP header of its links' families.
        engine.frame_overhead = if links.any_ipv6 {
            limits::IPV6_UDP_OVERHEAD
        } else {
            limits::IPV4_UDP_OVERHEAD
        };
        match (self.crypto, &self.key_file) {
            (Crypto::None, _) => {}
            (_, None) => return Err(ConfigError::KeyFileMissing),
            (_, Some(p)) if p.as_os_str().is_empty() => return Err(ConfigError::KeyFileMissing),
            (_, Some(_)) => engine.frame_overhead += cpg_core::seal::SEAL_OVERHEAD,
        }
        cpg_core::engine::validate_config(&engine).map_err(ConfigError::Engine)?;

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
        let need = engine.frame_max() + RX_HEADROOM;
        let rx_buffer_size = p.rx_buffer_size.unwrap_or(rx_buffer_size_for(
            engine.frame_max(),
            self.gro,
            self.transport,
        ));
        Range {
            min: need as u64,
            ..ranges::POOL_RX_BUFFER_SIZE
        }
        .check_usize(rx_buffer_size)?;
        let ipc = self.ipc.validate()?;
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
            rx_buffer_size_fixed: p.rx_buffer_size.is_some(),
            send_queue_frames_fixed: send_queue_frames.is_some(),
            netmtu: self.netmtu,
            state_dir: self.state_dir.clone(),
            handle_queue_bytes,
            slow_consumer: self.slow_consumer,
            zerocopy: self.zerocopy,
            gso: self.gso,
            gro: self.gro,
            transport: self.transport,
            crypto: self.crypto,
            key_file: self.key_file.clone(),
            ipc,
            links,
        })
    }
}

/// The receive buffer size a node derives when `pool.rx_buffer_size` is
/// not set: its largest frame and [`RX_HEADROOM`], rounded up to 64 B; with
/// `gro` on the io_uring transport at least
/// [`cpg_uring::GRO_RX_BUFFER_SIZE`], so that a coalesced receive fits.
pub(crate) fn rx_buffer_size_for(frame_max: usize, gro: bool, transport: TransportKind) -> usize {
    let own = (frame_max + RX_HEADROOM).next_multiple_of(64);
    if gro && transport == TransportKind::Uring {
        own.max(cpg_uring::GRO_RX_BUFFER_SIZE)
    } else {
        own
    }
}

/// The TOML parser's message with its place in `text` (line, column) and a
/// short excerpt of the line from there: never more than a few
/// [`excerpt`]s, however long the offending line or key.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = excerpt_quotes(e.message());
    let Some(span) = e.span() else {
        return message;
    };
    let mut at = span.start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let near = excerpt(&text[at..line_end]);
    format!("line {line}, column {column}: {message}; at `{near}`")
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
    pub nodes: Vec<(NodeId, SocketAddr)>,
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
    /// Whether `rx_buffer_size` was set (else it follows the frame budget).
    pub rx_buffer_size_fixed: bool,
    /// Whether `totem.send_queue_frames` was set (else it follows the
    /// netmtu: `limits::send_queue_frames_for`).
    pub send_queue_frames_fixed: bool,
    /// `netmtu` as written: with `"auto"`, `engine.netmtu` is the default
    /// until [`NodeConfig::with_path_mtu`] reads the path.
    pub netmtu: NetMtu,
    /// State directory.
    pub state_dir: PathBuf,
    /// Per-handle queue cap (at least [`handle_queue_bytes_min`] of
    /// `engine.max_message_size`; [`crate::Node`] refuses to start otherwise).
    pub handle_queue_bytes: usize,
    /// What is done about a handle that dispatches too slowly.
    pub slow_consumer: SlowConsumer,
    /// `SendZc` policy.
    pub zerocopy: ZeroCopy,
    /// UDP segmentation offload where the kernel offers it.
    pub gso: bool,
    /// UDP generic receive offload where the kernel offers it and the
    /// receive buffers hold [`cpg_uring::GRO_RX_BUFFER_SIZE`].
    pub gro: bool,
    /// Transport.
    pub transport: TransportKind,
    /// Frame protection.
    pub crypto: Crypto,
    /// The cluster key file (set whenever `crypto` is not `none`).
    pub key_file: Option<PathBuf>,
    /// How `cpgd` serves client processes.
    pub ipc: IpcConfig,
    /// Redundant links beyond link 0 (`nodes`), their mode and heartbeats.
    pub links: Links,
}

impl NodeConfig {
    /// This node's own address.
    pub fn addr(&self) -> SocketAddr {
        self.nodes
            .iter()
            .find(|(n, _)| *n == self.node_id)
            .map(|(_, a)| *a)
            .expect("validated: self in nodelist")
    }

    /// Settings for a node with no socket (the in-process loopback
    /// transport, tests): `node_id` in `nodes`, fast timers, defaults elsewhere.
    pub fn in_memory(node_id: NodeId, nodes: &[NodeId]) -> NodeConfig {
        let list: Vec<(NodeId, SocketAddr)> = nodes
            .iter()
            .map(|&n| {
                (
                    n,
                    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 20000 + (n % 40000) as u16)),
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
mod tests;

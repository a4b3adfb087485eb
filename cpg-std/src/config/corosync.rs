//! `corosync.conf` read as our configuration: what an operator already has.
//!
//! The syntax is Corosync's: `key: value` lines and `name { ... }` blocks,
//! `#` comments, nesting. [`parse`] builds the tree (typed errors, bounded
//! depth and size, never a panic); [`to_config`] maps it to a
//! [`ConfigFile`] and names everything it does not carry over in a
//! [`Note`]: a setting mapped, ignored with a reason, or refused.
//!
//! | corosync.conf | ours |
//! |---|---|
//! | `totem.cluster_name` | `cluster_name` |
//! | `nodelist.node { nodeid, ring0_addr }` | `[[nodelist]] nodeid, addr = ring0_addr:port` |
//! | `totem.token`, `token_coefficient`, `consensus`, `join`, `merge`, `hold` (ms) | `totem.*_ms` |
//! | `totem.window_size`, `max_messages`, `token_retransmits_before_loss_const`, `fail_recv_const`, `seqno_unchanged_const`, `miss_count_const` | the same |
//! | `totem.netmtu` | `netmtu` |
//! | `totem.crypto_cipher` / `crypto_hash` (`none`/`aes256`.../`sha256`...) | `crypto` none / encrypt (AES-256-GCM, its own tag) |
//! | `totem.interface.mcastport` / `knet_link`'s port, default 5405 | the port of every address |
//!
//! Refused (an error naming it): a node without `nodeid` or `ring0_addr`,
//! an address that is not an IPv4 literal (a host name, IPv6: not yet),
//! an `aes128`/`aes192`/`3des` cipher without `aes256`-level strength
//! kept silent (we always use AES-256-GCM; noted), a number out of range.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{ConfigFile, Crypto};

/// Largest file accepted (as our own TOML): 1 MiB.
pub const COROSYNC_CONF_MAX: usize = 1 << 20;
/// Deepest nesting of blocks.
const DEPTH_MAX: usize = 16;
/// Corosync's default port.
pub const DEFAULT_PORT: u16 = 5405;

/// One parsed item: `key: value` or `name { items }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `key: value` (the value trimmed).
    Pair(String, String),
    /// `name { ... }`.
    Block(String, Vec<Item>),
}

/// Why a corosync.conf could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorosyncConfError {
    /// Over [`COROSYNC_CONF_MAX`].
    #[error("corosync.conf of {0} bytes is larger than 1 MiB")]
    TooLarge(usize),
    /// A line that is neither `key: value`, `name {`, `}` nor a comment.
    #[error("line {line}: expected `key: value`, `name {{` or `}}`")]
    Syntax {
        /// 1-based line.
        line: usize,
    },
    /// A `}` with no block open.
    #[error("line {line}: `}}` without a block")]
    Unbalanced {
        /// 1-based line.
        line: usize,
    },
    /// Blocks not closed at the end.
    #[error("{0} block(s) not closed at the end of the file")]
    Unclosed(usize),
    /// Nested deeper than 16 blocks.
    #[error("line {line}: blocks nested deeper than 16")]
    TooDeep {
        /// 1-based line.
        line: usize,
    },
    /// A setting we cannot carry over (the message says which and why).
    #[error("{0}")]
    Refused(String),
}

/// What [`to_config`] did with a setting it did not map one to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(pub String);

/// Parse corosync.conf text into its tree.
///
/// # Errors
/// [`CorosyncConfError`] naming the line.
pub fn parse(text: &str) -> Result<Vec<Item>, CorosyncConfError> {
    if text.len() > COROSYNC_CONF_MAX {
        return Err(CorosyncConfError::TooLarge(text.len()));
    }
    let mut stack: Vec<(String, Vec<Item>)> = vec![(String::new(), Vec::new())];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l == "}" {
            if stack.len() == 1 {
                return Err(CorosyncConfError::Unbalanced { line });
            }
            let (name, items) = stack.pop().expect("len checked");
            stack
                .last_mut()
                .expect("root stays")
                .1
                .push(Item::Block(name, items));
            continue;
        }
        if let Some(name) = l.strip_suffix('{') {
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains(':') {
                return Err(CorosyncConfError::Syntax { line });
            }
            if stack.len() > DEPTH_MAX {
                return Err(CorosyncConfError::TooDeep { line });
            }
            stack.push((name.to_string(), Vec::new()));
            continue;
        }
        match l.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() && !k.trim().contains(char::is_whitespace) => {
                stack
                    .last_mut()
                    .expect("root stays")
                    .1
                    .push(Item::Pair(k.trim().to_string(), v.trim().to_string()));
            }
            _ => return Err(CorosyncConfError::Syntax { line }),
        }
    }
    if stack.len() > 1 {
        return Err(CorosyncConfError::Unclosed(stack.len() - 1));
    }
    Ok(stack.pop().expect("root").1)
}

fn pairs(items: &[Item]) -> impl Iterator<Item = (&str, &str)> {
    items.iter().filter_map(|i| match i {
        Item::Pair(k, v) => Some((k.as_str(), v.as_str())),
        Item::Block(..) => None,
    })
}

fn blocks<'a>(items: &'a [Item], name: &'a str) -> impl Iterator<Item = &'a [Item]> {
    items.iter().filter_map(move |i| match i {
        Item::Block(n, v) if n == name => Some(v.as_slice()),
        _ => None,
    })
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, CorosyncConfError> {
    v.parse()
        .map_err(|_| CorosyncConfError::Refused(format!("totem.{key} = {v:?} is not a number")))
}

/// Map a parsed corosync.conf to our configuration (`state_dir` and the
/// rest at our defaults), with a note for every setting not carried over
/// one to one.
///
/// # Errors
/// [`CorosyncConfError::Refused`] for what cannot be carried over.
pub fn to_config(items: &[Item]) -> Result<(ConfigFile, Vec<Note>), CorosyncConfError> {
    let mut notes = Vec::new();
    let mut cluster_name = None;
    let mut port = DEFAULT_PORT;
    let mut cipher = "none".to_string();
    let mut hash = "none".to_string();
    let mut totem = super::TotemSection::default();
    let mut netmtu = None;
    for t in blocks(items, "totem") {
        for (k, v) in pairs(t) {
            match k {
                "cluster_name" => cluster_name = Some(v.to_string()),
                "version" => {}
                "token" => totem.token_ms = Some(number(k, v)?),
                "token_coefficient" => totem.token_coefficient_ms = Some(number(k, v)?),
                "consensus" => totem.consensus_ms = Some(number(k, v)?),
                "join" => totem.join_ms = Some(number(k, v)?),
                "merge" => totem.merge_ms = Some(number(k, v)?),
                "hold" => totem.hold_ms = Some(number(k, v)?),
                "window_size" => totem.window_size = Some(number(k, v)?),
                "max_messages" => totem.max_messages = Some(number(k, v)?),
                "token_retransmits_before_loss_const" => {
                    totem.token_retransmits_before_loss_const = Some(number(k, v)?)
                }
                "fail_recv_const" => totem.fail_recv_const = Some(number(k, v)?),
                "seqno_unchanged_const" => totem.seqno_unchanged_const = Some(number(k, v)?),
                "miss_count_const" => totem.miss_count_const = Some(number(k, v)?),
                "netmtu" => netmtu = Some(number::<usize>(k, v)?),
                "crypto_cipher" => cipher = v.to_string(),
                "crypto_hash" => hash = v.to_string(),
                "secauth" if v == "off" => {}
                "secauth" => cipher = "aes256".into(),
                "transport" => notes.push(Note(format!(
                    "totem.transport: {v}: we speak our own UDP unicast (udpu-like, io_uring); \
                     not wire-compatible with Corosync's"
                ))),
                other => notes.push(Note(format!("totem.{other}: not supported, ignored"))),
            }
        }
        for iface in blocks(t, "interface") {
            for (k, v) in pairs(iface) {
                match k {
                    "mcastport" | "knet_port" => {
                        port = v.parse().map_err(|_| {
                            CorosyncConfError::Refused(format!("totem.interface.{k} = {v:?}"))
                        })?
                    }
                    "linknumber" | "ringnumber" => {}
                    other => notes.push(Note(format!(
                        "totem.interface.{other}: not supported (one link), ignored"
                    ))),
                }
            }
        }
        for b in t.iter().filter_map(|i| match i {
            Item::Block(n, _) if n != "interface" => Some(n.as_str()),
            _ => None,
        }) {
            notes.push(Note(format!("totem.{b} {{}}: not supported, ignored")));
        }
    }
    let crypto = match (cipher.as_str(), hash.as_str()) {
        ("none", "none") => Crypto::None,
        ("none", _) => {
            notes.push(Note(format!(
                "crypto_hash {hash} without a cipher: frames authenticated with AES-256-GCM (GMAC)"
            )));
            Crypto::Authenticate
        }
        (c, _) => {
            if c != "aes256" {
                notes.push(Note(format!(
                    "crypto_cipher {c}: frames encrypted with AES-256-GCM instead"
                )));
            }
            Crypto::Encrypt
        }
    };
    let mut nodes = Vec::new();
    for nl in blocks(items, "nodelist") {
        for n in blocks(nl, "node") {
            let mut id = None;
            let mut addr = None;
            for (k, v) in pairs(n) {
                match k {
                    "nodeid" => {
                        id = Some(v.parse::<u32>().map_err(|_| {
                            CorosyncConfError::Refused(format!("nodelist: nodeid {v:?}"))
                        })?)
                    }
                    "ring0_addr" => addr = Some(v.to_string()),
                    "name" => {}
                    k if k.starts_with("ring") && k.ends_with("_addr") => {
                        notes.push(Note(format!(
                            "nodelist.node.{k}: redundant links are not supported yet, ignored"
                        )))
                    }
                    other => notes.push(Note(format!("nodelist.node.{other}: ignored"))),
                }
            }
            let id = id.ok_or_else(|| {
                CorosyncConfError::Refused("nodelist: a node without nodeid".into())
            })?;
            let a = addr.ok_or_else(|| {
                CorosyncConfError::Refused(format!("nodelist: node {id} without ring0_addr"))
            })?;
            let ip: Ipv4Addr = a.parse().map_err(|_| {
                CorosyncConfError::Refused(format!(
                    "nodelist: node {id}: ring0_addr {a:?} is not an IPv4 address (host names and \
                     IPv6 are not supported yet)"
                ))
            })?;
            nodes.push((id, SocketAddrV4::new(ip, port)));
        }
    }
    if nodes.is_empty() {
        return Err(CorosyncConfError::Refused(
            "no nodelist: we need the static node list (nodelist { node { nodeid, ring0_addr } })"
                .into(),
        ));
    }
    for b in items.iter().filter_map(|i| match i {
        Item::Block(n, _) if !matches!(n.as_str(), "totem" | "nodelist") => Some(n.as_str()),
        Item::Pair(k, _) => Some(k.as_str()),
        _ => None,
    }) {
        let why = match b {
            "logging" => "logging goes to stderr (journald) through the log facade",
            "quorum" => "no quorum service (CPG only)",
            _ => "not supported",
        };
        notes.push(Note(format!("{b}: {why}, ignored")));
    }
    let name = cluster_name
        .ok_or_else(|| CorosyncConfError::Refused("totem.cluster_name is missing".into()))?;
    let mut f = ConfigFile::new(&name, &nodes);
    f.totem = totem;
    if let Some(m) = netmtu {
        f.netmtu = m.into();
    }
    f.crypto = crypto;
    if crypto != Crypto::None {
        f.key_file = Some("/etc/corosync/authkey".into());
        notes.push(Note(
            "key_file = /etc/corosync/authkey (Corosync's key works as ours)".into(),
        ));
    }
    Ok((f, notes))
}

/// Read and map the corosync.conf at `path`.
///
/// # Errors
/// [`ConfigError::Read`] for a file that cannot be read,
/// [`ConfigError::Corosync`] for what [`parse`] or [`to_config`] refuse.
pub fn load(path: &std::path::Path) -> Result<(ConfigFile, Vec<Note>), super::ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| super::ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text)
        .and_then(|items| to_config(&items))
        .map_err(super::ConfigError::Corosync)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "totem {\n\tversion: 2\n\tcluster_name: debian\n\tcrypto_cipher: none\n\tcrypto_hash: none\n}\nlogging {\n\tto_stderr: yes\n\tlogger_subsys {\n\t\tsubsys: QUORUM\n\t}\n}\nquorum {\n\tprovider: corosync_votequorum\n}\nnodelist {\n\tnode {\n\t\tname: node1\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\n";

    #[test]
    fn debians_default_file_maps_with_notes() {
        let (f, notes) = to_config(&parse(DEBIAN).unwrap()).unwrap();
        assert_eq!(f.cluster_name, "debian");
        assert_eq!(f.nodelist.len(), 1);
        assert_eq!(f.nodelist[0].addr, "127.0.0.1:5405".parse().unwrap());
        assert_eq!(f.crypto, Crypto::None);
        assert!(notes.iter().any(|n| n.0.starts_with("logging")));
        assert!(notes.iter().any(|n| n.0.starts_with("quorum")));
        f.validate(Some(1)).unwrap();
    }

    #[test]
    fn timers_crypto_port_and_refusals() {
        let text = "totem {\n cluster_name: c\n token: 5000\n token_coefficient: 0\n consensus: 7000\n window_size: 80\n netmtu: 9000\n crypto_cipher: aes256\n crypto_hash: sha256\n interface {\n  mcastport: 6000\n }\n}\nnodelist {\n node {\n  nodeid: 2\n  ring0_addr: 10.0.0.2\n  ring1_addr: 10.1.0.2\n }\n}\n";
        let (f, notes) = to_config(&parse(text).unwrap()).unwrap();
        assert_eq!(f.totem.token_ms, Some(5000));
        assert_eq!(f.totem.consensus_ms, Some(7000));
        assert_eq!(f.netmtu, 9000.into());
        assert_eq!(f.crypto, Crypto::Encrypt);
        assert_eq!(f.nodelist[0].addr, "10.0.0.2:6000".parse().unwrap());
        assert!(notes.iter().any(|n| n.0.contains("ring1_addr")));
        let host = DEBIAN.replace("127.0.0.1", "node1.example");
        assert!(matches!(
            to_config(&parse(&host).unwrap()),
            Err(CorosyncConfError::Refused(m)) if m.contains("not an IPv4")
        ));
        let bad = DEBIAN.replace("nodeid: 1", "nodeid: one");
        assert!(to_config(&parse(&bad).unwrap()).is_err());
    }

    #[test]
    fn malformed_text_is_a_typed_error() {
        assert_eq!(parse("totem {\n"), Err(CorosyncConfError::Unclosed(1)));
        assert_eq!(parse("}\n"), Err(CorosyncConfError::Unbalanced { line: 1 }));
        assert_eq!(
            parse("just words\n"),
            Err(CorosyncConfError::Syntax { line: 1 })
        );
        let deep = "a {\n".repeat(40);
        assert!(matches!(
            parse(&deep),
            Err(CorosyncConfError::TooDeep { .. })
        ));
        assert!(matches!(
            parse(&"x".repeat(COROSYNC_CONF_MAX + 1)),
            Err(CorosyncConfError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "[a-z_{}:# \\n0-9.]{0,400}") {
            if let Ok(items) = parse(&s) {
                let _ = to_config(&items);
            }
        }
    }
}

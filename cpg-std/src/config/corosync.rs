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
//! | `ring1_addr` .. `ring7_addr` (or `linkN_addr`) | `links = [...]` (link 1, 2, ...; contiguous from 0) |
//! | `totem.link_mode` `passive` / `rr` / `active` | `link_mode` passive / active (ours is round-robin, knet's `rr`; knet's `active` sends every packet on every link, ours one: noted) |
//! | `totem.interface { linknumber, knet_link_priority }` | `[[link]] number, priority` |
//! | `totem.interface { knet_ping_interval, knet_ping_timeout }` (ms) | `link_ping_interval_ms`, `link_ping_timeout_ms` (one pair for all links: the smallest given, noted when they differ) |
//! | `totem.token`, `token_coefficient`, `consensus`, `join`, `merge`, `hold` (ms) | `totem.*_ms` |
//! | `totem.window_size`, `max_messages`, `token_retransmits_before_loss_const`, `fail_recv_const`, `seqno_unchanged_const`, `miss_count_const` | the same |
//! | `totem.netmtu` | `netmtu` |
//! | `totem.crypto_cipher` / `crypto_hash` (`none`/`aes256`.../`sha256`...) | `crypto` none / encrypt (AES-256-GCM, its own tag) |
//! | `totem.interface.mcastport` / `knet_port`, default 5405 | the port of every address of that interface's link |
//!
//! Refused (an error naming it): a node without `nodeid` or `ring0_addr`,
//! a link number above 7, link numbers with a gap, `ringN_addr` and
//! `linkN_addr` both for one N, an unknown `link_mode`,
//! an address that is not an IPv4 or IPv6 literal (a host name),
//! an `aes128`/`aes192`/`3des` cipher without `aes256`-level strength
//! kept silent (we always use AES-256-GCM; noted), a number out of range.

use std::net::{IpAddr, SocketAddr};

use cpg_uring::{LinkMode, LINKS_MAX};

use super::{ConfigFile, Crypto, LinkEntry};

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
    let mut ports = [DEFAULT_PORT; LINKS_MAX];
    let mut link_mode = LinkMode::Passive;
    let mut priorities: Vec<LinkEntry> = Vec::new();
    let mut pings: Vec<(u8, &str, u64)> = Vec::new();
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
                "link_mode" => {
                    link_mode = match v {
                        "passive" => LinkMode::Passive,
                        "rr" => {
                            notes.push(Note(
                                "totem.link_mode rr: link_mode = \"active\" (ours is the same \
                                 round-robin over live links)"
                                    .into(),
                            ));
                            LinkMode::Active
                        }
                        "active" => {
                            notes.push(Note(
                                "totem.link_mode active: link_mode = \"active\", which sends each \
                                 frame over one live link in turn (knet's rr), not over every \
                                 live link at once"
                                    .into(),
                            ));
                            LinkMode::Active
                        }
                        other => {
                            return Err(CorosyncConfError::Refused(format!(
                                "totem.link_mode {other:?}: passive, active or rr"
                            )))
                        }
                    }
                }
                "transport" => notes.push(Note(format!(
                    "totem.transport: {v}: we speak our own UDP unicast (udpu-like, io_uring); \
                     not wire-compatible with Corosync's"
                ))),
                other => notes.push(Note(format!("totem.{other}: not supported, ignored"))),
            }
        }
        for iface in blocks(t, "interface") {
            let refused = |k: &str, v: &str| {
                CorosyncConfError::Refused(format!("totem.interface.{k} = {v:?}"))
            };
            let mut link = 0u8;
            for (k, v) in pairs(iface) {
                if k == "linknumber" || k == "ringnumber" {
                    link = v.parse().map_err(|_| refused(k, v))?;
                    if usize::from(link) >= LINKS_MAX {
                        return Err(CorosyncConfError::Refused(format!(
                            "totem.interface.{k} = {link}: at most {} links (0..={})",
                            LINKS_MAX,
                            LINKS_MAX - 1
                        )));
                    }
                }
            }
            for (k, v) in pairs(iface) {
                match k {
                    "linknumber" | "ringnumber" => {}
                    "mcastport" | "knet_port" => {
                        ports[usize::from(link)] = v.parse().map_err(|_| refused(k, v))?
                    }
                    "knet_link_priority" => {
                        let priority = v.parse().map_err(|_| refused(k, v))?;
                        priorities.retain(|e| e.number != link);
                        priorities.push(LinkEntry {
                            number: link,
                            priority,
                        });
                    }
                    "knet_ping_interval" | "knet_ping_timeout" => {
                        pings.push((link, k, v.parse().map_err(|_| refused(k, v))?))
                    }
                    "knet_pong_count" => notes.push(Note(format!(
                        "totem.interface.knet_pong_count {v}: a link is up from its first \
                         heartbeat answer, ignored"
                    ))),
                    other => notes.push(Note(format!(
                        "totem.interface.{other}: not supported, ignored"
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
    let mut node_links: Vec<Vec<SocketAddr>> = Vec::new();
    for nl in blocks(items, "nodelist") {
        for n in blocks(nl, "node") {
            let mut id = None;
            let mut addrs: [Option<(&str, &str)>; LINKS_MAX] = [None; LINKS_MAX];
            for (k, v) in pairs(n) {
                match k {
                    "nodeid" => {
                        id = Some(v.parse::<u32>().map_err(|_| {
                            CorosyncConfError::Refused(format!("nodelist: nodeid {v:?}"))
                        })?)
                    }
                    "name" => {}
                    k if link_key(k).is_some() => {
                        let Some(Some(l)) = link_key(k) else {
                            return Err(CorosyncConfError::Refused(format!(
                                "nodelist.node.{k}: at most {LINKS_MAX} links (ring0_addr..ring{}_addr)",
                                LINKS_MAX - 1
                            )));
                        };
                        if let Some((other, _)) = addrs[l] {
                            return Err(CorosyncConfError::Refused(format!(
                                "nodelist.node: {other} and {k} name the same link"
                            )));
                        }
                        addrs[l] = Some((k, v));
                    }
                    other => notes.push(Note(format!("nodelist.node.{other}: ignored"))),
                }
            }
            let id = id.ok_or_else(|| {
                CorosyncConfError::Refused("nodelist: a node without nodeid".into())
            })?;
            if addrs[0].is_none() {
                return Err(CorosyncConfError::Refused(format!(
                    "nodelist: node {id} without ring0_addr"
                )));
            }
            let count = addrs.iter().take_while(|a| a.is_some()).count();
            if let Some((k, _)) = addrs[count..].iter().flatten().next() {
                return Err(CorosyncConfError::Refused(format!(
                    "nodelist: node {id}: {k} without ring{count}_addr: link numbers must run \
                     from 0 without a gap"
                )));
            }
            let mut list = Vec::new();
            for (l, (k, a)) in addrs.iter().flatten().enumerate() {
                let ip: IpAddr = a.parse().map_err(|_| {
                    CorosyncConfError::Refused(format!(
                        "nodelist: node {id}: {k} {a:?} is not an IPv4 or IPv6 address \
                         (host names are not supported: name the address)"
                    ))
                })?;
                list.push(SocketAddr::new(ip, ports[l]));
            }
            nodes.push((id, list[0]));
            node_links.push(list.split_off(1));
        }
    }
    if let Some(((a, la), (b, lb))) = nodes
        .iter()
        .zip(&node_links)
        .zip(nodes.iter().zip(&node_links).skip(1))
        .find(|((_, la), (_, lb))| la.len() != lb.len())
    {
        return Err(CorosyncConfError::Refused(format!(
            "nodelist: node {} has {} links, node {} has {}: every node must be on every link \
             (the same ringN_addr keys)",
            a.0,
            la.len() + 1,
            b.0,
            lb.len() + 1
        )));
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
    for (n, links) in f.nodelist.iter_mut().zip(node_links) {
        n.links = links;
    }
    f.link_mode = link_mode;
    priorities.sort_by_key(|e| e.number);
    f.link = priorities;
    for (key, slot) in [
        ("knet_ping_interval", &mut f.link_ping_interval_ms),
        ("knet_ping_timeout", &mut f.link_ping_timeout_ms),
    ] {
        let given: Vec<(u8, u64)> = pings
            .iter()
            .filter(|(_, k, _)| *k == key)
            .map(|&(l, _, v)| (l, v))
            .collect();
        *slot = given.iter().map(|&(_, v)| v).min();
        if given.iter().any(|&(_, v)| Some(v) != *slot) {
            notes.push(Note(format!(
                "totem.interface.{key} differs between links {given:?}: one value for all \
                 links, the smallest ({} ms)",
                slot.unwrap_or(0)
            )));
        }
    }
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

/// The link of a node address key: `ring<N>_addr` or `link<N>_addr`;
/// `Some(None)` for such a key with N above 7 (or not a number).
fn link_key(k: &str) -> Option<Option<usize>> {
    let n = k
        .strip_suffix("_addr")?
        .strip_prefix("ring")
        .or_else(|| k.strip_suffix("_addr")?.strip_prefix("link"))?;
    Some(n.parse::<usize>().ok().filter(|&n| n < LINKS_MAX))
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
        assert_eq!(f.nodelist[0].links, ["10.1.0.2:5405".parse().unwrap()]);
        assert!(notes.iter().any(|n| n.0.contains("key_file")), "{notes:?}");
        let host = DEBIAN.replace("127.0.0.1", "node1.example");
        assert!(matches!(
            to_config(&parse(&host).unwrap()),
            Err(CorosyncConfError::Refused(m)) if m.contains("not an IPv4 or IPv6")
        ));
        let bad = DEBIAN.replace("nodeid: 1", "nodeid: one");
        assert!(to_config(&parse(&bad).unwrap()).is_err());
    }

    const KNET: &str = "totem {\n cluster_name: k\n token: 2000\n link_mode: passive\n interface {\n  linknumber: 0\n  knet_link_priority: 5\n  knet_ping_interval: 200\n  knet_ping_timeout: 600\n }\n interface {\n  linknumber: 1\n  mcastport: 5410\n  knet_link_priority: 9\n  knet_ping_interval: 100\n  knet_ping_timeout: 600\n  knet_pong_count: 2\n }\n}\nnodelist {\n node {\n  nodeid: 1\n  ring0_addr: 10.0.0.1\n  ring1_addr: fd00:1::1\n }\n node {\n  nodeid: 2\n  ring0_addr: 10.0.0.2\n  link1_addr: fd00:1::2\n }\n}\n";

    #[test]
    fn knet_links_modes_and_interfaces_map() {
        let (f, notes) = to_config(&parse(KNET).unwrap()).unwrap();
        assert_eq!(f.nodelist[0].addr, "10.0.0.1:5405".parse().unwrap());
        assert_eq!(f.nodelist[0].links, ["[fd00:1::1]:5410".parse().unwrap()]);
        assert_eq!(f.nodelist[1].links, ["[fd00:1::2]:5410".parse().unwrap()]);
        assert_eq!(f.link_mode, LinkMode::Passive);
        assert_eq!(
            f.link,
            [
                LinkEntry {
                    number: 0,
                    priority: 5
                },
                LinkEntry {
                    number: 1,
                    priority: 9
                }
            ]
        );
        assert_eq!(f.link_ping_interval_ms, Some(100));
        assert_eq!(f.link_ping_timeout_ms, Some(600));
        assert!(
            notes
                .iter()
                .any(|n| n.0.contains("knet_ping_interval differs")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.0.contains("knet_pong_count")),
            "{notes:?}"
        );
        let c = f.validate(Some(1)).unwrap();
        assert_eq!(c.links.extra[0].priority, 9);
        assert_eq!(c.links.link0_priority, 5);
        assert_eq!(
            c.engine.frame_max(),
            1500 - 48,
            "an IPv6 link: IPv6's budget"
        );
        // rr is our active; knet's active becomes it, with a note either way
        for (mode, says) in [("rr", "same round-robin"), ("active", "not over every")] {
            let t = KNET.replace("link_mode: passive", &format!("link_mode: {mode}"));
            let (f, notes) = to_config(&parse(&t).unwrap()).unwrap();
            assert_eq!(f.link_mode, LinkMode::Active);
            assert!(
                notes.iter().any(|n| n.0.contains(says)),
                "{mode}: {notes:?}"
            );
        }
    }

    #[test]
    fn link_refusals_name_the_reason() {
        let refused = |t: &str, what: &str| match to_config(&parse(t).unwrap()) {
            Err(CorosyncConfError::Refused(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        };
        refused(
            &KNET.replace("link_mode: passive", "link_mode: broadcast"),
            "passive, active or rr",
        );
        refused(
            &KNET.replace("ring1_addr: fd00:1::1", "ring8_addr: fd00:1::1"),
            "at most 8 links",
        );
        refused(
            &KNET.replace("ring1_addr: fd00:1::1", "ring2_addr: fd00:1::1"),
            "without a gap",
        );
        refused(
            &KNET.replace(
                "ring1_addr: fd00:1::1",
                "ring1_addr: fd00:1::1\n  link1_addr: fd00:1::9",
            ),
            "name the same link",
        );
        refused(
            &KNET.replace("linknumber: 1", "linknumber: 8"),
            "at most 8 links",
        );
        // mapped, then refused by validation with a typed error
        let mixed = KNET.replace("link1_addr: fd00:1::2", "link1_addr: 10.1.0.2");
        let (f, _) = to_config(&parse(&mixed).unwrap()).unwrap();
        assert!(matches!(
            f.validate(Some(1)),
            Err(super::super::ConfigError::LinkFamilyMismatch { link: 1, .. })
        ));
        let fewer = KNET.replace("  link1_addr: fd00:1::2\n", "");
        refused(&fewer, "every node must be on every link");
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

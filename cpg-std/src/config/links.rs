//! Redundant links in the configuration file (`cpg_uring::LinkSpec` is
//! what they become; the model is `docs/spec/totem.md` §10).
//!
//! ```toml
//! link_mode = "passive"          # or "active" (round-robin over live links)
//! link_ping_interval_ms = 0      # 0: token / 8 (the effective token)
//! link_ping_timeout_ms = 0       # 0: token / 3
//!
//! [[nodelist]]
//! nodeid = 1
//! addr = "10.0.0.1:5405"               # link 0
//! links = ["[fd00:1::1]:5405"]         # link 1, link 2, ...
//!
//! [[link]]                             # optional, per link
//! number = 1
//! priority = 2                         # higher wins in passive mode; default 1
//! ```
//!
//! Every node lists the same number of links (a link is a network every
//! node is on); a link is of one address family, links may differ. At most
//! [`cpg_uring::LINKS_MAX`] links (link 0 and seven more). Heartbeats run
//! when a node has more than one link, or when an interval or a timeout is
//! set.

use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use cpg_core::NodeId;
use cpg_uring::{LinkMode, LinkPing, LINKS_MAX};
use serde::{Deserialize, Serialize};

use super::ranges::Range;
use super::{ConfigError, ConfigFile};

/// `[[link]]`: the settings of one link number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkEntry {
    /// The link (0 = `addr`, 1 = `links[0]`, ...).
    pub number: u8,
    /// Higher is preferred in passive mode (default 1, as knet's).
    #[serde(default = "default_priority")]
    pub priority: u8,
}

/// Default link priority.
pub const PRIORITY_DEFAULT: u8 = 1;

fn default_priority() -> u8 {
    PRIORITY_DEFAULT
}

/// One validated link beyond link 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// 1..=7.
    pub number: u8,
    /// Its priority.
    pub priority: u8,
    /// Every node's address on it, in node list order.
    pub addrs: Vec<(NodeId, SocketAddr)>,
}

/// The validated link settings of a node ([`super::NodeConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Link 0's priority.
    pub link0_priority: u8,
    /// Links 1.. (empty: one link).
    pub extra: Vec<LinkConfig>,
    /// Passive or active.
    pub mode: LinkMode,
    /// Heartbeats (None: one link and no timer set).
    pub ping: Option<LinkPing>,
    /// Whether any link is IPv6 (the frame budget takes 48 B of headers).
    pub any_ipv6: bool,
}

/// `link_ping_interval_ms`.
pub const LINK_PING_INTERVAL_MS: Range = Range {
    field: "link_ping_interval_ms",
    min: 10,
    max: 60_000,
    unit: "ms",
    zero: Some("token / 8"),
};
/// `link_ping_timeout_ms`.
pub const LINK_PING_TIMEOUT_MS: Range = Range {
    field: "link_ping_timeout_ms",
    min: 30,
    max: 600_000,
    unit: "ms",
    zero: Some("token / 3"),
};

/// Check the links of `f` (node list already checked for ids and link 0
/// ports): counts, families, unique addresses, the `[[link]]` table and
/// the heartbeat timers; `token` derives the timers left at 0.
pub(super) fn validate(f: &ConfigFile, token: StdDuration) -> Result<Links, ConfigError> {
    let first = f.nodelist.first().ok_or(ConfigError::EmptyNodeList)?;
    let count = 1 + first.links.len();
    for n in &f.nodelist {
        let c = 1 + n.links.len();
        if c > LINKS_MAX {
            return Err(ConfigError::TooManyLinks {
                node: n.nodeid,
                count: c,
            });
        }
        if c != count {
            return Err(ConfigError::LinkCountMismatch {
                a: first.nodeid,
                a_links: count,
                b: n.nodeid,
                b_links: c,
            });
        }
    }
    let addr_of = |n: &super::NodeEntry, l: usize| {
        if l == 0 {
            n.addr
        } else {
            n.links[l - 1]
        }
    };
    let mut any_ipv6 = false;
    let mut seen: Vec<(SocketAddr, NodeId)> = Vec::new();
    for l in 0..count {
        let a0 = addr_of(first, l);
        for n in &f.nodelist {
            let a = addr_of(n, l);
            any_ipv6 |= a.is_ipv6();
            if a.is_ipv4() != a0.is_ipv4() {
                return Err(ConfigError::LinkFamilyMismatch {
                    link: l as u8,
                    a: first.nodeid,
                    addr_a: a0,
                    b: n.nodeid,
                    addr_b: a,
                });
            }
            if a.port() == 0 {
                return Err(ConfigError::ZeroPort(n.nodeid));
            }
            if let Some(&(_, other)) = seen.iter().find(|(x, _)| *x == a) {
                return Err(ConfigError::DuplicateAddr {
                    a: other,
                    b: n.nodeid,
                    addr: a,
                });
            }
            seen.push((a, n.nodeid));
        }
    }
    let mut priority = [PRIORITY_DEFAULT; LINKS_MAX];
    for (i, e) in f.link.iter().enumerate() {
        if f.link[..i].iter().any(|x| x.number == e.number) {
            return Err(ConfigError::DuplicateLinkNumber(e.number));
        }
        if usize::from(e.number) >= count {
            return Err(ConfigError::UnknownLink {
                number: e.number,
                links: count,
            });
        }
        priority[usize::from(e.number)] = e.priority;
    }
    let interval = f
        .link_ping_interval_ms
        .map(|v| LINK_PING_INTERVAL_MS.check(v))
        .transpose()?
        .unwrap_or(0);
    let timeout = f
        .link_ping_timeout_ms
        .map(|v| LINK_PING_TIMEOUT_MS.check(v))
        .transpose()?
        .unwrap_or(0);
    let derived = LinkPing::from_token(token);
    let ping = LinkPing {
        interval: match interval {
            0 => derived.interval,
            ms => StdDuration::from_millis(ms),
        },
        timeout: match timeout {
            0 => derived.timeout,
            ms => StdDuration::from_millis(ms),
        },
    };
    if ping.timeout <= ping.interval {
        return Err(ConfigError::LinkPing {
            interval: ping.interval,
            timeout: ping.timeout,
        });
    }
    let heartbeats = count > 1 || interval != 0 || timeout != 0;
    let extra = (1..count)
        .map(|l| LinkConfig {
            number: l as u8,
            priority: priority[l],
            addrs: f
                .nodelist
                .iter()
                .map(|n| (n.nodeid, addr_of(n, l)))
                .collect(),
        })
        .collect();
    Ok(Links {
        link0_priority: priority[0],
        extra,
        mode: f.link_mode,
        ping: heartbeats.then_some(ping),
        any_ipv6,
    })
}

/// Whether the value is the default (TOML written without it).
pub(super) fn is_default_mode(m: &LinkMode) -> bool {
    *m == LinkMode::default()
}

#[cfg(test)]
mod tests {
    use super::super::NodeConfig;
    use super::*;

    const TWO_LINKS: &str = r#"
cluster_name = "t"
state_dir = "/tmp/x"
link_mode = "active"
[[nodelist]]
nodeid = 1
addr = "10.0.0.1:5405"
links = ["[fd00:1::1]:5405"]
[[nodelist]]
nodeid = 2
addr = "10.0.0.2:5405"
links = ["[fd00:1::2]:5405"]
[[link]]
number = 1
priority = 7
[totem]
token_ms = 1000
token_coefficient_ms = 0
"#;

    fn validate(text: &str) -> Result<NodeConfig, ConfigError> {
        ConfigFile::parse(text, "t.toml")?.validate(Some(1))
    }

    #[test]
    fn two_links_of_two_families() {
        let c = validate(TWO_LINKS).unwrap();
        let l = &c.links;
        assert_eq!(l.mode, LinkMode::Active);
        assert_eq!(l.link0_priority, 1);
        assert_eq!(l.extra.len(), 1);
        assert_eq!(l.extra[0].number, 1);
        assert_eq!(l.extra[0].priority, 7);
        assert_eq!(
            l.extra[0].addrs[1],
            (2, "[fd00:1::2]:5405".parse().unwrap())
        );
        // derived from the 1 s token: a ping every 125 ms, down after 333 ms
        let p = l.ping.unwrap();
        assert_eq!(p.interval, StdDuration::from_millis(125));
        assert_eq!(p.timeout.as_millis(), 333);
        // an IPv6 link anywhere: the budget is IPv6's
        assert_eq!(c.engine.frame_max(), 1500 - 48);
        // written back as read
        let f = ConfigFile::parse(TWO_LINKS, "t.toml").unwrap();
        assert_eq!(ConfigFile::parse(&f.to_toml(), "again").unwrap(), f);
    }

    #[test]
    fn one_link_has_no_heartbeats_unless_asked() {
        let one = TWO_LINKS
            .lines()
            .filter(|l| {
                !l.starts_with("links")
                    && !l.starts_with("number")
                    && !l.starts_with("priority")
                    && *l != "[[link]]"
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = validate(&one).unwrap();
        assert!(c.links.extra.is_empty());
        assert_eq!(c.links.ping, None);
        assert_eq!(c.engine.frame_max(), 1500 - 28);
        let asked = format!("link_ping_interval_ms = 50\nlink_ping_timeout_ms = 200\n{one}");
        let p = validate(&asked).unwrap().links.ping.unwrap();
        assert_eq!((p.interval.as_millis(), p.timeout.as_millis()), (50, 200));
    }

    #[test]
    fn refusals_are_typed() {
        // nine links
        let nine: Vec<String> = (1..9).map(|i| format!("\"10.{i}.0.1:5405\"")).collect();
        let text = TWO_LINKS.replace(
            "links = [\"[fd00:1::1]:5405\"]",
            &format!("links = [{}]", nine.join(", ")),
        );
        assert!(matches!(
            validate(&text),
            Err(ConfigError::TooManyLinks { node: 1, count: 9 })
        ));
        // mixed family within one link
        let mixed = TWO_LINKS.replace("[fd00:1::2]:5405", "10.1.0.2:5405");
        let e = validate(&mixed).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::LinkFamilyMismatch {
                    link: 1,
                    a: 1,
                    b: 2,
                    ..
                }
            ),
            "{e}"
        );
        // duplicate link numbers in [[link]]
        let dup = format!("{TWO_LINKS}\n[[link]]\nnumber = 1\npriority = 3\n");
        assert!(matches!(
            validate(&dup),
            Err(ConfigError::DuplicateLinkNumber(1))
        ));
        // a [[link]] no node has
        let unknown = TWO_LINKS.replace("number = 1", "number = 4");
        assert!(matches!(
            validate(&unknown),
            Err(ConfigError::UnknownLink {
                number: 4,
                links: 2
            })
        ));
        // nodes with different link counts
        let fewer = TWO_LINKS.replace("links = [\"[fd00:1::2]:5405\"]\n", "");
        assert!(matches!(
            validate(&fewer),
            Err(ConfigError::LinkCountMismatch {
                a_links: 2,
                b_links: 1,
                ..
            })
        ));
        // an address used twice, across links
        let twice = TWO_LINKS.replace("[fd00:1::2]:5405", "[fd00:1::1]:5405");
        assert!(matches!(
            validate(&twice),
            Err(ConfigError::DuplicateAddr { a: 1, b: 2, .. })
        ));
        // port 0 on a link
        let zero = TWO_LINKS.replace("[fd00:1::2]:5405", "[fd00:1::2]:0");
        assert!(matches!(validate(&zero), Err(ConfigError::ZeroPort(2))));
        // a timeout not above the interval
        let t = format!("link_ping_interval_ms = 100\nlink_ping_timeout_ms = 100\n{TWO_LINKS}");
        assert!(matches!(validate(&t), Err(ConfigError::LinkPing { .. })));
        let r = format!("link_ping_interval_ms = 5\n{TWO_LINKS}");
        assert!(matches!(validate(&r), Err(ConfigError::OutOfRange { .. })));
        // an unknown mode, a priority out of u8
        let m = TWO_LINKS.replace("\"active\"", "\"rr\"");
        assert!(matches!(validate(&m), Err(ConfigError::Parse { .. })));
        let p = TWO_LINKS.replace("priority = 7", "priority = 300");
        assert!(matches!(validate(&p), Err(ConfigError::Parse { .. })));
    }
}

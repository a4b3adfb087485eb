//! Runs that change the network under a steady ring rather than break it:
//! a ring over IPv6 only, and redundant links cut one at a time under load.
//! Each asserts what an operator is promised: every message delivered once,
//! in one order, and no membership change at all.
//!
//! | run | network | what happens | must hold |
//! |---|---|---|---|
//! | [`run_ipv6`] | one IPv6 link (ULA addresses inside the namespaces) | the stream | a ring of all, the checker clean |
//! | [`run_link_cuts`] | link 0 IPv4, link 1 IPv6 (one family per link, two families in the ring) | cut link 0 under load, restore, cut link 1, restore | no ring change, nothing lost, order kept, each cut logged as `link N to node X down` and its repair as `up` |

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cpg_std::config::{ConfigFile, LinkMode};

use crate::check::check;
use crate::cluster::{Cluster, Event, Load, Member, Record, PORT};
use crate::net::{Family, Topology};

/// The load of these runs: the short profile's (1 s token, 200 messages/s
/// per node, 64..3000 B so frames fill and messages span frames).
pub const LOAD: Load = Load {
    token_ms: 1000,
    rate: 200,
    size_min: 64,
    size_max: 3000,
};

/// What one run saw.
#[derive(Debug, Default)]
pub struct LinkReport {
    /// Numbered deliveries logged (all processes) after the ring formed.
    pub delivered: u64,
    /// Ring changes logged after the first ring of all (must be 0).
    pub ring_changes: usize,
    /// Per cut link: from the cut to the last node logging it down, and
    /// from the repair to the last node logging it up.
    pub cuts: Vec<(u8, Duration, Option<Duration>)>,
    /// Liveness failures and errors.
    pub failures: Vec<String>,
    /// Safety violations the checker found.
    pub violations: Vec<String>,
    /// The log, kept when the run failed.
    pub logs: Option<PathBuf>,
    /// Per cut link: `cpgtool status` of node 1 in the middle of the cut.
    pub status_during_cut: Vec<(u8, String)>,
}

impl LinkReport {
    /// No failure, no violation, no ring change.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.violations.is_empty() && self.ring_changes == 0
    }
}

impl std::fmt::Display for LinkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivered {}, ring changes after start {}, ",
            self.delivered, self.ring_changes
        )?;
        for (link, down, up) in &self.cuts {
            write!(
                f,
                "link {link} down logged by all after {:.0} ms, up after {}, ",
                down.as_secs_f64() * 1e3,
                up.map_or("never".into(), |u| format!(
                    "{:.0} ms",
                    u.as_secs_f64() * 1e3
                ))
            )?;
        }
        write!(
            f,
            "failures {:?}, violations {:?}, logs {:?}",
            self.failures, self.violations, self.logs
        )
    }
}

/// A 3-node ring on one IPv6 link (`fd00:77:0:0::<i>`), streaming for a
/// few seconds.
pub fn run_ipv6(cpgtool: &Path) -> LinkReport {
    run(
        cpgtool,
        "ipv6",
        &[Family::V6],
        |_, _| {},
        |_, _, _| {
            std::thread::sleep(Duration::from_secs(4));
            Ok(())
        },
    )
}

/// How long a link stays cut: many heartbeat timeouts (333 ms with the
/// 1 s token) and several token timeouts, so a failover that did not
/// happen would have cost the ring.
pub const CUT: Duration = Duration::from_secs(3);

/// Three nodes on two links (link 0 IPv4 `10.77.0.<i>`, link 1 IPv6
/// `fd00:77:0:1::<i>`) in `mode`, streaming: link 0 is cut in every node
/// for [`CUT`], restored, then link 1 the same. Every node must log each
/// cut link down towards both peers and up again after the repair, and
/// the run must end with no ring change and the checker clean.
pub fn run_link_cuts(cpgtool: &Path, mode: LinkMode) -> LinkReport {
    run(
        cpgtool,
        &format!("cuts-{mode:?}").to_lowercase(),
        &[Family::V4, Family::V6],
        |f, topo| {
            for n in &mut f.nodelist {
                n.links = vec![SocketAddr::new(topo.link_addr(1, n.nodeid), PORT)];
            }
            f.link_mode = mode;
        },
        |c, topo, rep| {
            for link in [0u8, 1] {
                let mark = c.log().lock().len();
                let cut_at = c.log().now();
                topo.cut_link(link, true)?;
                // what an operator sees mid-cut: the link down towards
                // both peers, the ring as it was
                std::thread::sleep(CUT / 2);
                match c.status_text(1) {
                    Ok(text) => {
                        let down = text
                            .lines()
                            .skip_while(|l| *l != format!("LINK ID {link}"))
                            .skip(1)
                            .take_while(|l| l.starts_with('\t'))
                            .filter(|l| l.contains("\tdown"))
                            .count();
                        if down != 2 {
                            rep.failures.push(format!(
                                "link {link} cut: cpgtool status on node 1 shows it down \
                                 towards {down} peers, not 2:\n{text}"
                            ));
                        }
                        rep.status_during_cut.push((link, text));
                    }
                    Err(e) => rep.failures.push(e),
                }
                std::thread::sleep(CUT - CUT / 2);
                let mark_down = mark;
                let mark_up = c.log().lock().len();
                let down = link_lines(&c.log().snapshot()[mark..mark_up], link, "down");
                // (up lines may come while the rules go, node by node)
                let heal_at = c.log().now();
                topo.cut_link(link, false)?;
                let mark = mark_up;
                // up again within a few heartbeat rounds
                let up = (0..40).find_map(|_| {
                    std::thread::sleep(Duration::from_millis(100));
                    let up = link_lines(&c.log().snapshot()[mark..], link, "up");
                    (up.len() == 6).then_some(up)
                });
                let last = |from: usize, what: &str| {
                    c.log().snapshot()[from..]
                        .iter()
                        .filter(|r| !link_lines(std::slice::from_ref(*r), link, what).is_empty())
                        .map(|r| r.at)
                        .max()
                };
                let down_after = last(mark_down, "down").map_or(CUT, |t| t.saturating_sub(cut_at));
                let up_after = up
                    .as_ref()
                    .and(last(mark, "up"))
                    .map(|t| t.saturating_sub(heal_at));
                rep.cuts.push((link, down_after, up_after));
                // each of 3 nodes towards each of its 2 peers
                if down.len() != 6 {
                    rep.failures.push(format!(
                        "link {link} cut: `link {link} to node X down` logged for {down:?}, \
                         not all 6 (node, peer) pairs"
                    ));
                }
                if up.is_none() {
                    rep.failures.push(format!(
                        "link {link} restored: not logged up for all 6 (node, peer) pairs within 4 s"
                    ));
                }
            }
            Ok(())
        },
    )
}

/// The (node, peer) pairs that logged `link <link> to node <peer> <what>`.
fn link_lines(records: &[Record], link: u8, what: &str) -> BTreeSet<(Member, u32)> {
    let head = format!("link {link} to node ");
    records
        .iter()
        .filter_map(|r| match &r.ev {
            Event::Other(v) if v["ev"] == "stderr" => {
                let line = v["line"].as_str()?;
                let rest = &line[line.find(&head)? + head.len()..];
                let (peer, tail) = rest.split_once(' ')?;
                if tail.starts_with(what) {
                    Some((r.who, peer.parse().ok()?))
                } else {
                    None
                }
            }
            _ => None,
        })
        .collect()
}

/// One run: a topology of `links`, a cluster configured by `tweak`, the
/// stream while `during` does its part, then the checks.
fn run(
    cpgtool: &Path,
    name: &str,
    links: &[Family],
    tweak: impl FnOnce(&mut ConfigFile, &Topology),
    during: impl FnOnce(&Cluster, &Topology, &mut LinkReport) -> Result<(), String>,
) -> LinkReport {
    let mut rep = LinkReport::default();
    let dir =
        std::env::temp_dir().join(format!("cpg-netsuite-{}-links-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = None;
    if let Err(e) = run_inner(cpgtool, links, &dir, tweak, during, &mut rep, &mut log) {
        rep.failures.push(e);
    }
    rep.logs = super::run::keep_or_clean(&dir, rep.passed(), log);
    rep
}

fn run_inner(
    cpgtool: &Path,
    links: &[Family],
    dir: &Path,
    tweak: impl FnOnce(&mut ConfigFile, &Topology),
    during: impl FnOnce(&Cluster, &Topology, &mut LinkReport) -> Result<(), String>,
    rep: &mut LinkReport,
    log_out: &mut Option<crate::cluster::Log>,
) -> Result<(), String> {
    let topo = Topology::with_links(3, links)?;
    let all = [1, 2, 3];
    let mut c = Cluster::start_with(cpgtool, &topo, dir, LOAD, |f| tweak(f, &topo))?;
    *log_out = Some(c.log().clone());
    c.join(&all)?;
    if !c.wait_whole(Duration::from_secs(30)) {
        return Err("no ring of all nodes before the run".into());
    }
    let start = c.log().lock().len();
    c.stream(&all);
    std::thread::sleep(Duration::from_secs(1));
    during(&c, &topo, rep)?;
    std::thread::sleep(Duration::from_secs(1));
    c.stop_streams(&all, Duration::from_secs(10))?;
    let drained = c.drain("x", Duration::from_secs(20));
    if let Err(e) = &drained {
        rep.failures.push(format!("at the end: {e}"));
    }
    let records = c.log().snapshot();
    let after: &[Record] = &records[start.min(records.len())..];
    rep.delivered = after
        .iter()
        .filter(|r| {
            matches!(
                r.ev,
                Event::Deliver {
                    numbered: Some(_),
                    ..
                }
            )
        })
        .count() as u64;
    // a ring change is a ring id other than the one all were in at the
    // start (a node may report the ring it is in twice: transitional and
    // regular configuration)
    let ring_of = |r: &Record| match &r.ev {
        Event::Totem { ring, .. } => Some(ring.clone()),
        _ => None,
    };
    let start_ring = records[..start.min(records.len())]
        .iter()
        .rev()
        .find_map(ring_of);
    rep.ring_changes = after
        .iter()
        .filter_map(ring_of)
        .filter(|r| Some(r) != start_ring.as_ref())
        .count();
    // 3 nodes × 200/s × 2 s of stream at the least, seen by 3 receivers
    if rep.delivered < 3 * 3 * 200 {
        rep.failures.push(format!(
            "only {} deliveries: the stream did not flow",
            rep.delivered
        ));
    }
    rep.violations = check(&records, &c.facts(drained.is_ok()))
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(())
}

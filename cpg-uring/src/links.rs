//! Redundant links (knet's model, Corosync's `linkN_addr`): up to
//! [`LINKS_MAX`] addresses per node, each a link with a number and a
//! priority. This module owns what a link is and how one is chosen; the
//! driver owns the sockets (one bound socket per link, one connected
//! socket per (peer, link)) and calls in here.
//!
//! - **Liveness by heartbeats.** Every [`LinkPing::interval`] the driver
//!   pings each (peer, link) (`cpg_core::wire::LinkRepr`, sealed like any
//!   datagram when sealing is on); the peer answers with a pong on the
//!   same link. A link is up from its first pong and down once no pong
//!   came for [`LinkPing::timeout`], checked at every ping round. The
//!   token plays no part: a link's state never decides membership, and the
//!   engine never sees a heartbeat.
//! - **Choice.** [`LinkMode::Passive`]: every frame to a peer goes over its
//!   best live link (highest priority, ties to the lowest number).
//!   [`LinkMode::Active`]: round-robin over its live links. With no live
//!   link, frames keep going over the best configured one: the token
//!   decides membership, not the links.
//! - **Receive** on every link.
//! - **Log**: `link N to node X down` (warn) and `... up` (info), target
//!   [`LOG_TARGET`].
//! - **Status**: [`LinkStatus`] per (peer, link), read from any thread
//!   through a [`LinkStatusHandle`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpg_core::{Instant, NodeId};

/// Most links per node (knet's 8, Corosync's `link0..7`).
pub const LINKS_MAX: usize = 8;
/// The `log` target of link state changes.
pub const LOG_TARGET: &str = "cpg::link";

/// How frames are spread over a peer's live links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum LinkMode {
    /// The best live link carries everything (the others stand by).
    #[default]
    Passive,
    /// Round-robin over the live links.
    Active,
}

/// One link beyond link 0 (link 0 is [`crate::TransportConfig::bind`] and
/// [`crate::TransportConfig::peers`]).
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// Link number, 1..=7 (unique).
    pub number: u8,
    /// Priority: higher is preferred in passive mode.
    pub priority: u8,
    /// This node's address on the link (port 0 picks one).
    pub bind: SocketAddr,
    /// The other nodes' addresses on the link, all of `bind`'s family.
    pub peers: Vec<(NodeId, SocketAddr)>,
}

/// The heartbeat timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPing {
    /// A ping to every (peer, link) this often.
    pub interval: Duration,
    /// No pong for this long: the link is down (longer than `interval`).
    pub timeout: Duration,
}

impl LinkPing {
    /// knet-like defaults from the effective token timeout, tighter so a
    /// dead link is left well before the token is lost: a ping every
    /// token/8, down after token/3 without a pong (detected at most
    /// token/3 + token/8 ≈ 0.46 token after the cut, while the engine's
    /// token retransmissions still have half the token timeout to find the
    /// live link). At least 10 ms and 30 ms.
    pub fn from_token(token: Duration) -> LinkPing {
        LinkPing {
            interval: (token / 8).max(Duration::from_millis(10)),
            timeout: (token / 3).max(Duration::from_millis(30)),
        }
    }
}

/// What one (peer, link) looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The peer.
    pub peer: NodeId,
    /// Link number.
    pub link: u8,
    /// Its priority.
    pub priority: u8,
    /// This node's address on the link.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
    /// Whether heartbeats watch it (off: `up` is not measured).
    pub heartbeats: bool,
    /// Up by its heartbeats (always true when heartbeats are off).
    pub up: bool,
    /// Since the last pong (None: none yet, or heartbeats off).
    pub heartbeat_age: Option<Duration>,
    /// Round trip of the last pong.
    pub rtt: Option<Duration>,
    /// Datagrams sent on it (frames and heartbeats).
    pub frames_tx: u64,
    /// Datagrams received on it (frames and heartbeats).
    pub frames_rx: u64,
    /// Times it went down.
    pub down_count: u64,
}

/// The shared, lock-free part of one (peer, link)'s state.
#[derive(Debug, Default)]
pub(crate) struct LinkShared {
    heartbeats: AtomicBool,
    up: AtomicBool,
    tx: AtomicU64,
    rx: AtomicU64,
    down_count: AtomicU64,
    /// ns; 0 = none.
    rtt: AtomicU64,
    /// Engine clock (ns) of the last pong; 0 = none.
    last_pong: AtomicU64,
}

impl LinkShared {
    pub(crate) fn count_tx(&self) {
        self.tx.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_rx(&self) {
        self.rx.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
struct Entry {
    peer: NodeId,
    link: u8,
    priority: u8,
    local: SocketAddr,
    remote: SocketAddr,
    shared: Arc<LinkShared>,
}

/// Reads every (peer, link)'s [`LinkStatus`] from any thread.
#[derive(Debug, Clone, Default)]
pub struct LinkStatusHandle {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl LinkStatusHandle {
    /// Every (peer, link), by peer then link number.
    pub fn snapshot(&self) -> Vec<LinkStatus> {
        let now = crate::now();
        let entries = crate::bufs::lock(&self.entries).clone();
        let mut v: Vec<LinkStatus> = entries
            .iter()
            .map(|e| {
                let s = &e.shared;
                let ns = |x: u64| (x != 0).then(|| Duration::from_nanos(x));
                let last = s.last_pong.load(Ordering::Relaxed);
                LinkStatus {
                    peer: e.peer,
                    link: e.link,
                    priority: e.priority,
                    local: e.local,
                    remote: e.remote,
                    heartbeats: s.heartbeats.load(Ordering::Relaxed),
                    up: s.up.load(Ordering::Relaxed),
                    heartbeat_age: ns(last)
                        .map(|_| Duration::from_nanos(now.0.saturating_sub(last))),
                    rtt: ns(s.rtt.load(Ordering::Relaxed)),
                    frames_tx: s.tx.load(Ordering::Relaxed),
                    frames_rx: s.rx.load(Ordering::Relaxed),
                    down_count: s.down_count.load(Ordering::Relaxed),
                }
            })
            .collect();
        v.sort_by_key(|s| (s.peer, s.link));
        v
    }

    fn set(&self, entries: Vec<Entry>) {
        *crate::bufs::lock(&self.entries) = entries;
    }
}

/// One (peer, link) as the loop sees it: the heartbeat state machine.
#[derive(Debug)]
pub(crate) struct LinkState {
    pub(crate) shared: Arc<LinkShared>,
    /// Up by heartbeats.
    up: bool,
    last_pong: Option<Instant>,
    pub(crate) ping_seq: u64,
}

/// A link's change of state, to be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Up,
    Down,
}

impl LinkState {
    /// A new (peer, link): down until its first pong when heartbeats are
    /// on, up for good when they are off.
    pub(crate) fn new(heartbeats: bool) -> LinkState {
        let shared = Arc::new(LinkShared::default());
        shared.up.store(!heartbeats, Ordering::Relaxed);
        shared.heartbeats.store(heartbeats, Ordering::Relaxed);
        LinkState {
            shared,
            up: !heartbeats,
            last_pong: None,
            ping_seq: 0,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// A pong of a ping sent at `stamp` arrived at `now`.
    pub(crate) fn on_pong(&mut self, now: Instant, stamp: u64) -> Option<Change> {
        self.last_pong = Some(now);
        let s = &self.shared;
        s.last_pong.store(now.0.max(1), Ordering::Relaxed);
        if stamp <= now.0 {
            s.rtt.store((now.0 - stamp).max(1), Ordering::Relaxed);
        }
        if self.up {
            return None;
        }
        self.up = true;
        s.up.store(true, Ordering::Relaxed);
        Some(Change::Up)
    }

    /// A ping round at `now`: down if no pong came within `timeout`.
    pub(crate) fn check(&mut self, now: Instant, timeout: Duration) -> Option<Change> {
        let timeout = timeout.as_nanos().min(u128::from(u64::MAX)) as u64;
        let fresh = self
            .last_pong
            .is_some_and(|t| now.0.saturating_sub(t.0) <= timeout);
        if !self.up || fresh {
            return None;
        }
        self.up = false;
        self.shared.up.store(false, Ordering::Relaxed);
        self.shared.down_count.fetch_add(1, Ordering::Relaxed);
        Some(Change::Down)
    }
}

/// Log a change of (peer, link) the way operators grep for it.
pub(crate) fn log_change(change: Change, link: u8, peer: NodeId, remote: SocketAddr) {
    match change {
        Change::Down => {
            log::warn!(target: LOG_TARGET, "link {link} to node {peer} down ({remote}: no heartbeat)")
        }
        Change::Up => log::info!(target: LOG_TARGET, "link {link} to node {peer} up ({remote})"),
    }
}

/// One candidate link of a peer: (index, number, priority, up).
pub(crate) type Candidate = (usize, u8, u8, bool);

/// The link a frame to a peer goes over, of `cands`. `rr` is the peer's
/// round-robin counter (active mode). `None` only for no candidate.
pub(crate) fn pick(mode: LinkMode, cands: &[Candidate], rr: &mut usize) -> Option<usize> {
    // best: highest priority, then lowest number
    let best = |up_only: bool| {
        cands
            .iter()
            .filter(|c| !up_only || c.3)
            .min_by_key(|c| (std::cmp::Reverse(c.2), c.1))
            .map(|c| c.0)
    };
    match mode {
        LinkMode::Passive => best(true).or_else(|| best(false)),
        LinkMode::Active => {
            let live = cands.iter().filter(|c| c.3).count();
            if live == 0 {
                return best(false);
            }
            let k = *rr % live;
            *rr = rr.wrapping_add(1);
            cands.iter().filter(|c| c.3).nth(k).map(|c| c.0)
        }
    }
}

/// Publish the (peer, link) table to `handle`: `(peer, link number,
/// priority, local, remote, state)`.
pub(crate) fn publish<'a>(
    handle: &LinkStatusHandle,
    table: impl Iterator<Item = (NodeId, u8, u8, SocketAddr, SocketAddr, &'a LinkState)>,
) {
    handle.set(
        table
            .map(|(peer, link, priority, local, remote, st)| Entry {
                peer,
                link,
                priority,
                local,
                remote,
                shared: st.shared.clone(),
            })
            .collect(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_takes_the_best_live_link_then_the_best_configured() {
        let mut rr = 0;
        // (index, number, priority, up)
        let c = [(0, 0, 1, true), (1, 1, 1, true), (2, 2, 5, false)];
        assert_eq!(
            pick(LinkMode::Passive, &c, &mut rr),
            Some(0),
            "tie: lowest number"
        );
        let c = [(0, 0, 1, true), (1, 1, 2, true)];
        assert_eq!(
            pick(LinkMode::Passive, &c, &mut rr),
            Some(1),
            "higher priority"
        );
        let c = [(0, 0, 1, false), (1, 1, 2, true)];
        assert_eq!(pick(LinkMode::Passive, &c, &mut rr), Some(1));
        let c = [(0, 0, 1, false), (1, 1, 0, false)];
        assert_eq!(
            pick(LinkMode::Passive, &c, &mut rr),
            Some(0),
            "none live: best configured"
        );
        assert_eq!(pick(LinkMode::Passive, &[], &mut rr), None);
    }

    #[test]
    fn active_round_robins_over_live_links() {
        let mut rr = 0;
        let c = [(0, 0, 1, true), (1, 1, 1, false), (2, 2, 1, true)];
        let got: Vec<_> = (0..4)
            .map(|_| pick(LinkMode::Active, &c, &mut rr).unwrap())
            .collect();
        assert_eq!(got, [0, 2, 0, 2]);
        let dead = [(0, 0, 1, false), (1, 1, 3, false)];
        assert_eq!(pick(LinkMode::Active, &dead, &mut rr), Some(1));
    }

    #[test]
    fn heartbeats_bring_a_link_up_and_their_absence_down() {
        let ms = |m: u64| Instant(m * 1_000_000);
        let timeout = Duration::from_millis(300);
        let mut s = LinkState::new(true);
        assert!(!s.is_up());
        assert_eq!(
            s.check(ms(1000), timeout),
            None,
            "never up: nothing to report"
        );
        assert_eq!(s.on_pong(ms(1010), ms(1000).0), Some(Change::Up));
        assert_eq!(s.on_pong(ms(1100), ms(1095).0), None);
        assert_eq!(s.check(ms(1400), timeout), None, "300 ms: still fresh");
        assert_eq!(s.check(ms(1401), timeout), Some(Change::Down));
        assert_eq!(s.check(ms(1500), timeout), None, "down once");
        assert_eq!(s.shared.down_count.load(Ordering::Relaxed), 1);
        assert_eq!(s.on_pong(ms(1600), ms(1590).0), Some(Change::Up));
        assert_eq!(s.shared.rtt.load(Ordering::Relaxed), 10_000_000);
        let off = LinkState::new(false);
        assert!(off.is_up(), "no heartbeats: up for good");
    }

    #[test]
    fn defaults_leave_a_dead_link_well_before_the_token() {
        let p = LinkPing::from_token(Duration::from_millis(1000));
        assert!(p.timeout > p.interval);
        assert!(p.timeout + p.interval < Duration::from_millis(500));
        let tiny = LinkPing::from_token(Duration::from_millis(1));
        assert_eq!(tiny.interval, Duration::from_millis(10));
        assert_eq!(tiny.timeout, Duration::from_millis(30));
    }
}

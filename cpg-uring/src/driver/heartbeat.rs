//! The driver's half of the link model (`crate::links`): checking the
//! link settings, heartbeat rounds, and answering and taking heartbeats.
//! A child of `driver` so it reaches the driver's sockets and seal.

use cpg_core::wire::{LinkKind, LinkRepr};
use cpg_core::Instant;

use super::{Driver, DriverError, TransportConfig};
use crate::bufs::TxSource;
use crate::counters::Counters;
use crate::links::{self, LINKS_MAX};

/// The link settings of `cfg`, checked before any socket is made.
pub(super) fn check_links(cfg: &TransportConfig) -> Result<(), DriverError> {
    if cfg.links.len() + 1 > LINKS_MAX {
        return Err(DriverError::Config(format!(
            "{} links: at most {LINKS_MAX}",
            cfg.links.len() + 1
        )));
    }
    for (i, l) in cfg.links.iter().enumerate() {
        if l.number == 0 || usize::from(l.number) >= LINKS_MAX {
            return Err(DriverError::Config(format!(
                "link number {}: 1..={} (link 0 is `bind` and `peers`)",
                l.number,
                LINKS_MAX - 1
            )));
        }
        if cfg.links[..i].iter().any(|m| m.number == l.number) {
            return Err(DriverError::Config(format!(
                "link {} given twice",
                l.number
            )));
        }
    }
    if let Some(p) = cfg.link_ping {
        if p.interval.is_zero() || p.timeout <= p.interval {
            return Err(DriverError::Config(format!(
                "link heartbeat timeout {:?} must be longer than the interval {:?} (> 0)",
                p.timeout, p.interval
            )));
        }
    }
    Ok(())
}

impl Driver {
    /// Arm the first heartbeat round (the loop starts).
    pub(super) fn start_heartbeats(&mut self, now: Instant) {
        if self.link_ping.is_some() && self.link_next.is_none() {
            self.link_next = Some(now);
        }
    }

    /// A heartbeat round: every (peer, link) is checked for a pong within
    /// the timeout (a silent one goes down, logged), then pinged.
    pub(super) fn heartbeat_round(&mut self, now: Instant) {
        let Some(ping) = self.link_ping else {
            self.link_next = None;
            return;
        };
        for pi in 0..self.peers.len() {
            for li in 0..self.links.len() {
                let id = self.peers[pi].id;
                let number = self.links[li].number;
                let Some(pl) = self.peers[pi].links[li].as_mut() else {
                    continue;
                };
                if let Some(c) = pl.state.check(now, ping.timeout) {
                    links::log_change(c, number, id, pl.addr);
                }
                pl.state.ping_seq += 1;
                let ping = LinkRepr {
                    kind: LinkKind::Ping,
                    cluster_id: self.cluster_id,
                    sender: self.node_id,
                    receiver: id,
                    link: number,
                    seq: pl.state.ping_seq,
                    stamp: now.0,
                };
                self.send_heartbeat(pi, li, &ping);
            }
        }
        let step = ping.interval.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.link_next = Some(Instant(now.0.saturating_add(step)));
    }

    /// A heartbeat from peer `pi` on link `li` (already opened when
    /// sealing is on): a ping is answered on the same link, a pong moves
    /// the link's state. Anything that does not name this pair is dropped.
    pub(super) fn on_heartbeat(&mut self, pi: usize, li: usize, now: Instant, data: &[u8]) {
        let c = self.counters.clone();
        let Ok(hb) = LinkRepr::parse(data, self.cluster_id) else {
            Counters::inc(&c.link_heartbeats_bad);
            return;
        };
        let id = self.peers[pi].id;
        if hb.sender != id || hb.receiver != self.node_id || hb.link != self.links[li].number {
            Counters::inc(&c.link_heartbeats_bad);
            return;
        }
        Counters::inc(&c.link_heartbeats_received);
        match hb.kind {
            LinkKind::Ping => self.send_heartbeat(pi, li, &hb.pong()),
            LinkKind::Pong => {
                let number = self.links[li].number;
                if let Some(pl) = self.peers[pi].links[li].as_mut() {
                    if let Some(ch) = pl.state.on_pong(now, hb.stamp) {
                        links::log_change(ch, number, id, pl.addr);
                    }
                }
            }
        }
    }

    /// Send one heartbeat on (peer `pi`, link `li`), sealed for that peer
    /// when sealing is on.
    fn send_heartbeat(&mut self, pi: usize, li: usize, hb: &LinkRepr) {
        let bytes = hb.emit();
        let src = if self.seal.is_some() {
            match self.seal_datagram(
                [&bytes[..], &[]],
                hb.receiver,
                "sealing a heartbeat (a new epoch could not be persisted)",
            ) {
                Some(sealed) => sealed,
                None => return,
            }
        } else {
            TxSource::Heap(std::sync::Arc::from(&bytes[..]))
        };
        Counters::inc(&self.counters.link_heartbeats_sent);
        self.send_on(pi, li, src);
    }
}

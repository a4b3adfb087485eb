//! The driver's peer table: per link, the peers' addresses and connected
//! sockets, the lookups a received datagram and a transmit go through,
//! and the published link status (`crate::links`). A child of `driver`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use cpg_core::NodeId;

use super::{Backend, Driver, DriverError, Peer, PeerLink};
use crate::links::{self, LinkState, LinkStatus, LinkStatusHandle};
use crate::socket;

impl Driver {
    /// Replace link 0's peer list (before [`Driver::run`], or between
    /// runs). An entry for this node is ignored.
    ///
    /// # Errors
    /// Duplicate ids or addresses, or a per-peer socket that cannot be
    /// bound/connected; also refused while sends are in flight.
    pub fn set_peers(&mut self, peers: &[(NodeId, SocketAddr)]) -> Result<(), DriverError> {
        self.set_link_peers(0, peers)
    }

    /// Replace the peer list of link `number` (as [`Driver::set_peers`]).
    ///
    /// # Errors
    /// As [`Driver::set_peers`]; also a link this driver does not have, or
    /// a peer of another address family than the link's.
    pub fn set_link_peers(
        &mut self,
        number: u8,
        peers: &[(NodeId, SocketAddr)],
    ) -> Result<(), DriverError> {
        if let Backend::Uring(ring) = &self.backend {
            // the links' bound sockets (ids 0..links) keep their receives
            // and their ids; the peers' connected sockets are replaced
            let peer_socks = self.links.len()..self.socks.len();
            if ring.sends_live() > 0 || peer_socks.into_iter().any(|s| ring.recv_armed(s as u16)) {
                return Err(DriverError::Config(
                    "set_peers while the loop has operations on the old peers".into(),
                ));
            }
        }
        let li = self
            .links
            .iter()
            .position(|l| l.number == number)
            .ok_or_else(|| DriverError::Config(format!("no link {number}")))?;
        let local = self.links[li].local;
        let heartbeats = self.link_ping.is_some();
        let mut fresh: Vec<(NodeId, PeerLink)> = Vec::new();
        let mut seen: HashMap<SocketAddr, NodeId> = HashMap::new();
        for &(id, addr) in peers {
            if id == self.node_id {
                continue;
            }
            let taken_elsewhere = self.by_addr.get(&addr).is_some_and(|&(_, l)| l != li);
            if id == 0
                || fresh.iter().any(|(n, _)| *n == id)
                || seen.insert(addr, id).is_some()
                || taken_elsewhere
            {
                return Err(DriverError::Config(format!(
                    "peer {id} at {addr}: zero or duplicate id or address"
                )));
            }
            if self.links.iter().any(|l| l.local == addr) {
                return Err(DriverError::Config(format!(
                    "peer {id} has this node's address {addr}"
                )));
            }
            if addr.is_ipv4() != local.is_ipv4() {
                return Err(DriverError::Config(format!(
                    "peer {id} at {addr} on link {number}: not of the link's family ({local}); \
                     one family per link"
                )));
            }
            let fd = match self.backend {
                Backend::Uring(_) => Some(
                    socket::connect_peer(local, addr, self.socket_buffer).map_err(|err| {
                        DriverError::Socket {
                            what: format!("socket {local} connected to peer {id} at {addr}"),
                            err,
                        }
                    })?,
                ),
                Backend::Syscalls => None,
            };
            if let Some(fd) = fd.as_ref().filter(|_| self.gro) {
                // a datagram from this peer arrives on this socket
                socket::set_udp_gro(fd);
            }
            // The kernel refuses a GSO segment over the path MTU (the
            // connected socket's route): only frames within it are batched.
            let headers = if addr.is_ipv4() { 28 } else { 48 };
            let gso_max = match &fd {
                Some(fd) if self.gso => {
                    crate::pmtu::socket_path_mtu(fd).map_or(0, |mtu| mtu.saturating_sub(headers))
                }
                _ => 0,
            };
            fresh.push((
                id,
                PeerLink {
                    addr,
                    fd,
                    loopback: addr.ip().is_loopback(),
                    state: LinkState::new(heartbeats),
                    gso_max,
                },
            ));
        }
        let n_links = self.links.len();
        for p in &mut self.peers {
            p.links.resize_with(n_links, || None);
            p.links[li] = None;
        }
        for (id, pl) in fresh {
            let i = match self.peers.iter().position(|p| p.id == id) {
                Some(i) => i,
                None => {
                    self.peers.push(Peer {
                        id,
                        links: (0..n_links).map(|_| None).collect(),
                        rr: 0,
                    });
                    self.peers.len() - 1
                }
            };
            self.peers[i].links[li] = Some(pl);
        }
        self.peers.retain(|p| p.links.iter().any(Option::is_some));
        self.index_peers();
        if self.socks.len() >= usize::from(u16::MAX) {
            return Err(DriverError::Config("too many peers".into()));
        }
        Ok(())
    }

    /// Rebuild the lookups, the socket table and the published status
    /// after the peers changed.
    fn index_peers(&mut self) {
        self.by_addr.clear();
        self.by_id.clear();
        self.socks = self.links.iter().map(|l| l.main.as_raw_fd()).collect();
        for (pi, p) in self.peers.iter().enumerate() {
            self.by_id.insert(p.id, pi);
            for (li, pl) in p.links.iter().enumerate() {
                if let Some(pl) = pl {
                    self.by_addr.insert(pl.addr, (pi, li));
                    if let Some(fd) = &pl.fd {
                        self.socks.push(fd.as_raw_fd());
                    }
                }
            }
        }
        // the bound sockets keep their ids (and whether they were armed)
        self.recv_started.truncate(self.links.len());
        self.recv_started.resize(self.socks.len(), false);
        let links = &self.links;
        links::publish(
            &self.link_status,
            self.peers.iter().flat_map(|p| {
                p.links.iter().enumerate().filter_map(move |(li, pl)| {
                    let pl = pl.as_ref()?;
                    let l = &links[li];
                    Some((p.id, l.number, l.priority, l.local, pl.addr, &pl.state))
                })
            }),
        );
    }

    /// The bound address of link 0 (with the port the kernel picked for
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.links[0].local
    }

    /// Every link's number and bound address, link 0 first.
    pub fn local_addrs(&self) -> Vec<(u8, SocketAddr)> {
        self.links.iter().map(|l| (l.number, l.local)).collect()
    }

    /// The peers in force on link 0: (id, address), this node excluded.
    pub fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.peers
            .iter()
            .filter_map(|p| Some((p.id, p.links.first()?.as_ref()?.addr)))
            .collect()
    }

    /// Every (peer, link)'s status now.
    pub fn link_status(&self) -> Vec<LinkStatus> {
        self.link_status.snapshot()
    }

    /// A handle that reads [`Driver::link_status`] from any thread, while
    /// the loop runs.
    pub fn link_status_handle(&self) -> LinkStatusHandle {
        self.link_status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::{LinkPing, LinkSpec};
    use crate::TransportConfig;
    use std::time::Duration;

    fn two_links() -> TransportConfig {
        let mut c = TransportConfig::new(1, SocketAddr::from(([127, 0, 0, 1], 0)), vec![]);
        // plain sockets: no io_uring needed to check the tables
        c.fallback_syscalls = true;
        c.links = vec![LinkSpec {
            number: 3,
            priority: 2,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: vec![],
        }];
        c.link_ping = Some(LinkPing::from_token(Duration::from_secs(1)));
        c
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn links_get_peers_and_refuse_what_cannot_work() {
        let mut d = Driver::new(two_links()).unwrap();
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 2], p));
        d.set_peers(&[(2, a(1)), (3, a(2))]).unwrap();
        d.set_link_peers(3, &[(2, a(11)), (3, a(12))]).unwrap();
        let st = d.link_status();
        assert_eq!(st.len(), 4);
        assert_eq!(
            st.iter().map(|s| (s.peer, s.link)).collect::<Vec<_>>(),
            [(2, 0), (2, 3), (3, 0), (3, 3)]
        );
        assert!(st
            .iter()
            .all(|s| !s.up && s.priority == if s.link == 3 { 2 } else { 1 }));
        assert_eq!(d.local_addrs().len(), 2);
        assert_eq!(d.peers(), [(2, a(1)), (3, a(2))]);
        // an address another link already uses
        assert!(d.set_link_peers(3, &[(2, a(1))]).is_err());
        // a link this node does not have
        assert!(d.set_link_peers(5, &[(2, a(21))]).is_err());
        // another family than the link's
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9));
        let e = d.set_link_peers(3, &[(2, v6)]).unwrap_err().to_string();
        assert!(e.contains("one family per link"), "{e}");
        // the table is as it was after a refusal
        assert_eq!(d.link_status().len(), 4);
        // a peer only on link 3 is still a peer
        d.set_peers(&[(2, a(1))]).unwrap();
        assert_eq!(d.link_status().len(), 3);
    }

    #[test]
    fn link_settings_are_checked_before_any_socket() {
        let mut c = two_links();
        c.links[0].number = 0;
        assert!(Driver::new(c).is_err(), "link 0 twice");
        let mut c = two_links();
        c.links[0].number = 8;
        assert!(Driver::new(c).is_err(), "link 8");
        let mut c = two_links();
        c.links.push(c.links[0].clone());
        assert!(Driver::new(c).is_err(), "link 3 twice");
        let mut c = two_links();
        c.link_ping = Some(LinkPing {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
        });
        assert!(Driver::new(c).is_err(), "timeout not above the interval");
    }
}

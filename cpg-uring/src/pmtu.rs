//! The path MTU as the kernel knows it (`IP_MTU` / `IPV6_MTU` on a
//! connected UDP socket): the MTU of the route to the peer, lowered by
//! any ICMP "fragmentation needed" the kernel has cached for it. This is
//! what `netmtu = "auto"` in `cpg-std` reads.
//!
//! A connected UDP socket is what the driver sends from, so a probe socket
//! bound to the node's own address and connected to the peer sees the same
//! route (source-address policy routing included) as the per-peer socket
//! will; connecting a UDP socket sends nothing.
//!
//! # What it must not do
//! Send or receive anything.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

/// The path MTU of a connected socket: `IP_MTU` for IPv4, `IPV6_MTU` for
/// IPv6 (chosen by the socket's own address family).
///
/// # Errors
/// The socket is not connected (`ENOTCONN`), not an inet socket, or the
/// option is refused.
pub fn socket_path_mtu(fd: impl AsFd) -> io::Result<usize> {
    let fd = fd.as_fd();
    let local = SocketAddr::try_from(rustix::net::getsockname(fd)?)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mtu = match local {
        SocketAddr::V4(_) => sockopt::ip_mtu(fd)?,
        SocketAddr::V6(_) => sockopt::ipv6_mtu(fd)?,
    };
    Ok(mtu as usize)
}

/// The path MTU from `local` (the node's own address; its port is not
/// used) to `peer`, read from a fresh socket bound to `local`'s IP and
/// connected to `peer`.
///
/// # Errors
/// No route to `peer` (`ENETUNREACH`), `local` not an address of this host
/// (`EADDRNOTAVAIL`), mixed address families.
pub fn path_mtu(local: IpAddr, peer: SocketAddr) -> io::Result<usize> {
    let family = match peer {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    if local.is_ipv4() != peer.is_ipv4() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let s = rustix::net::socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
    if !local.is_unspecified() {
        rustix::net::bind(&s, &SocketAddr::new(local, 0))?;
    }
    rustix::net::connect(&s, &peer)?;
    socket_path_mtu(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};

    #[test]
    #[cfg_attr(miri, ignore)]
    fn loopback_is_the_lo_mtu() {
        // lo's MTU is 65,536 by default; a host may have changed it, but
        // never below IPv4's 576.
        let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));
        let mtu = path_mtu(IpAddr::V4(Ipv4Addr::LOCALHOST), peer).unwrap();
        assert!(mtu >= 576, "{mtu}");
        let unbound = path_mtu(IpAddr::V4(Ipv4Addr::UNSPECIFIED), peer).unwrap();
        assert_eq!(mtu, unbound);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn ipv6_loopback_when_present() {
        let peer = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9);
        match path_mtu(IpAddr::V6(Ipv6Addr::LOCALHOST), peer) {
            Ok(mtu) => assert!(mtu >= 1280, "{mtu}"),
            Err(e) => eprintln!("skipped: no IPv6 loopback here ({e})"),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn unconnected_and_mixed_families_are_errors() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(socket_path_mtu(&s).is_err());
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9);
        assert_eq!(
            path_mtu(IpAddr::V4(Ipv4Addr::LOCALHOST), v6)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}

//! UDP sockets (rustix): the bound socket every node listens on, and one
//! socket per peer, bound to the same address and port (SO_REUSEPORT) and
//! connected to the peer, so that sends can be `WriteFixed` / `SendZc`
//! without a destination address and the peer sees our nodelist address as
//! the source. Linux delivers a datagram to the connected socket whose peer
//! matches its source, so the driver receives on every socket.
//!
//! # What it must not do
//! Any I/O beyond setup: the ring does the sending and receiving.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

/// Socket buffer size asked for (SO_RCVBUF / SO_SNDBUF, forced when allowed).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket of `addr`'s family. An IPv6 one is IPv6 only: a link
/// has one family, and a v4-mapped peer would be a second name for an
/// IPv4 node.
fn udp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let s = rustix::net::socket_with(family, SocketType::DGRAM, flags, None)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&s, true)?;
    }
    Ok(s)
}

/// Ask for `bytes` of receive and send buffer: the `*FORCE` options (root
/// or CAP_NET_ADMIN) pass `net.core.[rw]mem_max`; otherwise the plain ones
/// (silently capped by the kernel). Returns the receive buffer in force.
pub(crate) fn size_buffers(fd: impl AsFd, bytes: usize) -> usize {
    let fd = fd.as_fd();
    if sockopt::set_socket_recv_buffer_size_force(fd, bytes).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(fd, bytes);
    }
    if sockopt::set_socket_send_buffer_size_force(fd, bytes).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(fd, bytes);
    }
    sockopt::socket_recv_buffer_size(fd).unwrap_or(0)
}

/// The address a socket is bound to.
pub(crate) fn local_addr(fd: impl AsFd) -> io::Result<SocketAddr> {
    let a = rustix::net::getsockname(fd)?;
    SocketAddr::try_from(a).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// Bind without any sharing option, to learn whether `addr` is free (and,
/// for port 0, which port the kernel picks). The socket is closed again.
fn probe_free(addr: SocketAddr) -> io::Result<SocketAddr> {
    let s = udp_socket(&addr, true)?;
    rustix::net::bind(&s, &addr)?;
    local_addr(&s)
}

/// The node's listening socket, bound to `addr` with SO_REUSEPORT so the
/// per-peer sockets can share its port. Port 0 picks a free port. A port
/// already in use by anyone (another node, say) is refused with
/// `AddrInUse`, even if that user set SO_REUSEPORT too.
pub(crate) fn bind_shared(addr: SocketAddr, bytes: usize) -> io::Result<(OwnedFd, SocketAddr)> {
    let addr = probe_free(addr)?;
    let s = udp_socket(&addr, false)?;
    sockopt::set_socket_reuseport(&s, true)?;
    bind_sized(s, addr, bytes)
}

/// A plain nonblocking socket bound to `addr` (the syscall fallback).
pub(crate) fn bind_exclusive(addr: SocketAddr, bytes: usize) -> io::Result<(OwnedFd, SocketAddr)> {
    bind_sized(udp_socket(&addr, true)?, addr, bytes)
}

/// Bind `s` to `addr`, size its buffers; the socket and its address.
fn bind_sized(s: OwnedFd, addr: SocketAddr, bytes: usize) -> io::Result<(OwnedFd, SocketAddr)> {
    rustix::net::bind(&s, &addr)?;
    size_buffers(&s, bytes);
    let local = local_addr(&s)?;
    Ok((s, local))
}

/// A socket bound to `local` (shared with the listening socket) and
/// connected to `peer`.
pub(crate) fn connect_peer(
    local: SocketAddr,
    peer: SocketAddr,
    bytes: usize,
) -> io::Result<OwnedFd> {
    if local.is_ipv4() != peer.is_ipv4() {
        // one family per link: say so rather than EAFNOSUPPORT
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("peer {peer} is not of the family of {local} (one family per link)"),
        ));
    }
    let s = udp_socket(&local, false)?;
    sockopt::set_socket_reuseport(&s, true)?;
    rustix::net::bind(&s, &local)?;
    rustix::net::connect(&s, &peer)?;
    size_buffers(&s, bytes);
    Ok(s)
}

/// Whether this kernel offers UDP generic segmentation offload on `fd`
/// (`UDP_SEGMENT`, Linux 4.18): `getsockopt(SOL_UDP, UDP_SEGMENT)` answers
/// (with the socket's default segment size, 0) only where a send may carry
/// a `UDP_SEGMENT` cmsg. Whether a device takes it (it must offload UDP
/// checksums) shows only when a send is made: the driver falls back per
/// link then.
#[allow(unsafe_code)]
pub(crate) fn udp_gso_supported(fd: impl AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals of the sizes `len` says, and
    // `fd` is an open socket borrowed for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v >= 0
}

/// Turn UDP generic receive offload on for `fd` (`setsockopt(SOL_UDP,
/// UDP_GRO, 1)`, Linux 5.0): the kernel may then hand several datagrams
/// of one sender as one receive with a `UDP_GRO` cmsg (`crate::gro`).
/// Whether it took.
#[allow(unsafe_code)]
pub(crate) fn set_udp_gro(fd: impl AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int of the length given, and `fd` is an
    // open socket borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Whether this host has `::1` (an IPv6-less kernel or namespace has not).
    pub(crate) fn have_ipv6_loopback() -> bool {
        std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn ipv6_shared_port_and_family_checked() {
        if !have_ipv6_loopback() {
            eprintln!("skipping: no IPv6 loopback (::1) here");
            return;
        }
        let lo6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
        let (_a, a) = bind_shared(lo6, 1 << 16).unwrap();
        assert!(a.is_ipv6() && a.port() != 0);
        let (_b, b) = bind_shared(lo6, 1 << 16).unwrap();
        let c = connect_peer(a, b, 1 << 16).unwrap();
        assert_eq!(local_addr(&c).unwrap(), a);
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 5405));
        let e = connect_peer(a, v4, 1 << 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("one family per link"), "{e}");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn gso_is_offered_on_udp_and_refused_elsewhere() {
        let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let (a, _) = bind_shared(lo, 1 << 16).unwrap();
        // every kernel this driver runs on (io_uring multishot: 6.0) has it
        assert!(udp_gso_supported(&a));
        let tcp = std::net::TcpListener::bind(lo).unwrap();
        assert!(!udp_gso_supported(&tcp));
        // UDP_GRO likewise (Linux 5.0)
        assert!(set_udp_gro(&a));
        assert!(!set_udp_gro(&tcp));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn shared_port_and_in_use_refused() {
        let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let (_a, a) = bind_shared(lo, 1 << 16).unwrap();
        assert_ne!(a.port(), 0);
        let (_b, b) = bind_shared(lo, 1 << 16).unwrap();
        assert_ne!(a.port(), b.port(), "port 0 must never share a port");
        // A second node on the same port is refused.
        assert_eq!(
            bind_shared(a, 1 << 16).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        // The per-peer socket shares it.
        let c = connect_peer(a, b, 1 << 16).unwrap();
        assert_eq!(local_addr(&c).unwrap(), a);
    }
}

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
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

/// Socket buffer size asked for (SO_RCVBUF / SO_SNDBUF, forced when allowed).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

fn udp_socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        flags,
        None,
    )?)
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

/// The IPv4 address a socket is bound to.
pub(crate) fn local_addr(fd: impl AsFd) -> io::Result<SocketAddrV4> {
    let a = rustix::net::getsockname(fd)?;
    match SocketAddr::try_from(a) {
        Ok(SocketAddr::V4(v4)) => Ok(v4),
        _ => Err(io::ErrorKind::InvalidData.into()),
    }
}

/// Bind without any sharing option, to learn whether `addr` is free (and,
/// for port 0, which port the kernel picks). The socket is closed again.
fn probe_free(addr: SocketAddrV4) -> io::Result<SocketAddrV4> {
    let s = udp_socket(true)?;
    rustix::net::bind(&s, &addr)?;
    local_addr(&s)
}

/// The node's listening socket, bound to `addr` with SO_REUSEPORT so the
/// per-peer sockets can share its port. Port 0 picks a free port. A port
/// already in use by anyone (another node, say) is refused with
/// `AddrInUse`, even if that user set SO_REUSEPORT too.
pub(crate) fn bind_shared(addr: SocketAddrV4, bytes: usize) -> io::Result<(OwnedFd, SocketAddrV4)> {
    let addr = probe_free(addr)?;
    let s = udp_socket(false)?;
    sockopt::set_socket_reuseport(&s, true)?;
    bind_sized(s, addr, bytes)
}

/// A plain nonblocking socket bound to `addr` (the syscall fallback).
pub(crate) fn bind_exclusive(
    addr: SocketAddrV4,
    bytes: usize,
) -> io::Result<(OwnedFd, SocketAddrV4)> {
    bind_sized(udp_socket(true)?, addr, bytes)
}

/// Bind `s` to `addr`, size its buffers; the socket and its address.
fn bind_sized(s: OwnedFd, addr: SocketAddrV4, bytes: usize) -> io::Result<(OwnedFd, SocketAddrV4)> {
    rustix::net::bind(&s, &addr)?;
    size_buffers(&s, bytes);
    let local = local_addr(&s)?;
    Ok((s, local))
}

/// A socket bound to `local` (shared with the listening socket) and
/// connected to `peer`.
pub(crate) fn connect_peer(
    local: SocketAddrV4,
    peer: SocketAddrV4,
    bytes: usize,
) -> io::Result<OwnedFd> {
    let s = udp_socket(false)?;
    sockopt::set_socket_reuseport(&s, true)?;
    rustix::net::bind(&s, &local)?;
    rustix::net::connect(&s, &peer)?;
    size_buffers(&s, bytes);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    #[cfg_attr(miri, ignore)]
    fn shared_port_and_in_use_refused() {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
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

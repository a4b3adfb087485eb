//! The attacker's two raw sockets, on 127.0.0.1 only.
//!
//! - [`Sniffer`]: an `IPPROTO_UDP` raw socket gets a copy of every UDP
//!   datagram the host receives; a thread keeps those between the
//!   cluster's ports (set once they are chosen) and hands them over.
//! - [`Forger`]: an `IPPROTO_RAW` socket (which implies `IP_HDRINCL`)
//!   sends IPv4 + UDP headers built here, so the source address and port
//!   are whatever the attacker writes: a member's. The UDP checksum is 0
//!   (allowed over IPv4); the kernel fills in the IP checksum.
//!
//! Forged packets carry a TTL and IP id no real one does, so the sniffer,
//! which sees them too, leaves them out.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{
    ipproto, recv, sendto, socket, sockopt, AddressFamily, RecvFlags, SendFlags, SocketType,
};

/// TTL of forged packets (real ones leave with 64).
const FORGED_TTL: u8 = 13;
/// IP id of forged packets.
const FORGED_ID: u16 = 0xF0_4E;

/// One UDP datagram seen on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub at: Instant,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// Whether raw sockets may be opened here (root, or CAP_NET_RAW); the
/// reason if not.
pub fn raw_sockets_allowed() -> Result<(), String> {
    match socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "raw sockets not permitted ({e}): these tests forge datagrams and need root or CAP_NET_RAW"
        )),
    }
}

/// Copies of the UDP datagrams between a set of ports on 127.0.0.1.
pub struct Sniffer {
    rx: Receiver<Datagram>,
    ports: Arc<RwLock<HashSet<u16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    /// Start listening (nothing is kept until [`Sniffer::watch`]).
    pub fn open() -> io::Result<Sniffer> {
        let fd = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::UDP))?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, Some(Duration::from_millis(50)))?;
        // Bursts (streams, floods) must not overflow the copy queue.
        let _ = sockopt::set_socket_recv_buffer_size_force(&fd, 64 << 20);
        let (tx, rx) = channel();
        let ports = Arc::new(RwLock::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (ports.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536 + 128];
            while !s.load(Ordering::Relaxed) {
                let n = match recv(&fd, &mut buf[..], RecvFlags::empty()) {
                    Ok((n, _)) => n,
                    Err(_) => continue, // timeout: check `stop`
                };
                // a node's, not one of ours
                let Some(d) = parse_ipv4_udp(&buf[..n.min(buf.len())]) else {
                    continue;
                };
                let keep = {
                    let ports = p.read().unwrap();
                    ports.contains(&d.src.port()) && ports.contains(&d.dst.port())
                };
                if keep && tx.send(d).is_err() {
                    return;
                }
            }
        });
        Ok(Sniffer {
            rx,
            ports,
            stop,
            thread: Some(thread),
        })
    }

    /// Keep datagrams whose source and destination ports are both in `ports`.
    pub fn watch(&self, ports: impl IntoIterator<Item = u16>) {
        self.ports.write().unwrap().extend(ports);
    }

    /// The next datagram, waiting at most `wait`.
    pub fn next(&self, wait: Duration) -> Option<Datagram> {
        self.rx.recv_timeout(wait).ok()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node's datagram: an IPv4 packet carrying UDP between loopback
/// addresses, not sent by [`Forger`]; `None` otherwise.
fn parse_ipv4_udp(p: &[u8]) -> Option<Datagram> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 8 || p[9] != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let id = u16::from_be_bytes([p[4], p[5]]);
    if p[8] == FORGED_TTL && id == FORGED_ID {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    let (src_ip, dst_ip) = (ip(12), ip(16));
    if !src_ip.is_loopback() || !dst_ip.is_loopback() {
        return None;
    }
    let u = &p[ihl..total];
    let sport = u16::from_be_bytes([u[0], u[1]]);
    let dport = u16::from_be_bytes([u[2], u[3]]);
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if ulen < 8 || ulen > u.len() {
        return None;
    }
    Some(Datagram {
        src: SocketAddrV4::new(src_ip, sport),
        dst: SocketAddrV4::new(dst_ip, dport),
        at: Instant::now(),
        bytes: u[8..ulen].to_vec(),
    })
}

/// Sends UDP datagrams with any source address and port.
pub struct Forger {
    fd: OwnedFd,
}

impl Forger {
    pub fn open() -> io::Result<Forger> {
        Ok(Forger {
            fd: socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW))?,
        })
    }

    /// Send `payload` as a UDP datagram from `src` to `dst` (both loopback:
    /// these tests touch no other address).
    pub fn send(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        assert!(
            src.ip().is_loopback() && dst.ip().is_loopback(),
            "forging only on loopback"
        );
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        assert!(total <= 65_535, "datagram too large: {}", payload.len());
        let mut p = Vec::with_capacity(total);
        p.extend_from_slice(&[0x45, 0]); // IPv4, 20-byte header; TOS 0
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&FORGED_ID.to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no fragmentation
        p.extend_from_slice(&[FORGED_TTL, 17]); // TTL, protocol UDP
        p.extend_from_slice(&[0, 0]); // header checksum: the kernel's
        p.extend_from_slice(&src.ip().octets());
        p.extend_from_slice(&dst.ip().octets());
        p.extend_from_slice(&src.port().to_be_bytes());
        p.extend_from_slice(&dst.port().to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum (IPv4 allows it)
        p.extend_from_slice(payload);
        let to = SocketAddrV4::new(*dst.ip(), 0);
        let n = sendto(&self.fd, &p, SendFlags::empty(), &to).expect("raw sendto");
        assert_eq!(n, p.len(), "raw send cut short");
    }
}

//! The plain UDP transport: blocking `send_to`/`recv_from` on a std
//! socket, one receive thread and one timer thread. Chosen explicitly
//! (`transport = "udp"`), for kernels without io_uring; frames are copied
//! into and out of the socket like any UDP program does.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use cpg_core::engine::{Dest, Transmit};
use cpg_core::NodeId;

use super::{HeapZc, NodeState, Running, Ticker, Transport, ZcAllocator};
use crate::config::NodeConfig;

type Frame = Arc<[u8]>;

/// A bound UDP socket and the node list's addresses.
pub struct UdpTransport {
    sock: Arc<UdpSocket>,
    me: NodeId,
    peers: Vec<(NodeId, SocketAddrV4)>,
    frame_max: usize,
    zc_max: usize,
}

impl std::fmt::Debug for UdpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTransport")
            .field("me", &self.me)
            .finish()
    }
}

impl UdpTransport {
    /// Bind this node's address.
    ///
    /// # Errors
    /// The bind failed (address in use, not local).
    pub fn new(config: &NodeConfig) -> io::Result<UdpTransport> {
        if config.crypto != crate::crypto::Crypto::None {
            return Err(io::Error::other(
                "transport = \"udp\" does not seal frames: use transport = \"uring\" with crypto, \
                 or crypto = \"none\"",
            ));
        }
        let addr = config.addr();
        let sock = UdpSocket::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
        Ok(UdpTransport {
            sock: Arc::new(sock),
            me: config.node_id,
            peers: config.nodes.clone(),
            frame_max: config.engine.frame_max(),
            zc_max: config.zcb_max,
        })
    }
}

struct UdpRunning {
    stop: Arc<AtomicBool>,
    ticker: Arc<Ticker>,
    threads: Vec<JoinHandle<()>>,
}

impl Transport for UdpTransport {
    type Frame = Frame;

    fn zc_allocator(&self) -> Arc<dyn ZcAllocator<Frame>> {
        Arc::new(HeapZc { max: self.zc_max })
    }

    fn spawn(self, core: Arc<NodeState<Frame>>) -> io::Result<Box<dyn Running>> {
        let by_addr: HashMap<SocketAddr, NodeId> = self
            .peers
            .iter()
            .map(|(n, a)| (SocketAddr::V4(*a), *n))
            .collect();
        let peers = self.peers.clone();
        let me = self.me;
        let sock = self.sock.clone();
        let send: Arc<dyn Fn(Transmit<Frame>) + Send + Sync> =
            Arc::new(move |t: Transmit<Frame>| {
                let bytes = t.frame.to_vec();
                for (id, addr) in &peers {
                    let hit = match t.dest {
                        Dest::Node(n) => n == *id,
                        Dest::AllOthers => *id != me,
                    };
                    if hit {
                        let _ = sock.send_to(&bytes, *addr);
                    }
                }
            });
        let ticker = Ticker::new();
        let timer = ticker.spawn(format!("cpg-timer-{me}"), core.clone(), send.clone(), None)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, t2, sock, frame_max) =
            (stop.clone(), ticker.clone(), self.sock, self.frame_max);
        let recv = std::thread::Builder::new()
            .name(format!("cpg-recv-{me}"))
            .spawn(move || {
                let mut buf = vec![0u8; frame_max.max(65_536)];
                while !stop2.load(Ordering::Acquire) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let Some(&id) = by_addr.get(&from) else {
                                continue;
                            };
                            core.handle_packet(id, Arc::from(&buf[..n]));
                            let d = core.poll_outputs(&mut |t| send(t));
                            t2.deadline(d);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Box::new(UdpRunning {
            stop,
            ticker,
            threads: vec![timer, recv],
        }))
    }
}

impl Running for UdpRunning {
    fn stop(self: Box<Self>) {
        self.ticker.stop();
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

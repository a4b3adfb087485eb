//! One connection's shared state, as each side sees it: the memfd with
//! both rings and the zero-copy region, and the two eventfds
//! (`docs/spec/ipc.md` §3, §5).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use cpg_core::ipc::header::{self, ConnLayout, Region, HEADER_LEN};
use cpg_core::ipc::setup::{FD_CLIENT_WAKE, FD_DAEMON_WAKE, FD_MEMFD, WELCOME_FDS};
use cpg_core::ipc::{Direction, LayoutError, Welcome};
use cpg_core::NodeId;

use crate::ring::{RingRx, RingTx};
use crate::shm::SharedMem;
use crate::wake::EventFd;

/// Why a connection's shared state could not be made or checked.
#[derive(Debug)]
pub enum ConnError {
    /// A size the layout refuses.
    Layout(LayoutError),
    /// `memfd_create`, `mmap`, `eventfd` failed.
    Io(io::Error),
    /// The mapping does not hold what `Welcome` said.
    Mapping,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Layout(e) => write!(f, "layout: {e}"),
            ConnError::Io(e) => write!(f, "shared memory: {e}"),
            ConnError::Mapping => write!(f, "the shared memory does not match Welcome"),
        }
    }
}

impl std::error::Error for ConnError {}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> ConnError {
        ConnError::Io(e)
    }
}

impl From<LayoutError> for ConnError {
    fn from(e: LayoutError) -> ConnError {
        ConnError::Layout(e)
    }
}

fn usize_of(region: Region) -> Result<(usize, usize), ConnError> {
    let off = usize::try_from(region.offset).map_err(|_| ConnError::Mapping)?;
    let len = usize::try_from(region.len).map_err(|_| ConnError::Mapping)?;
    Ok((off, len))
}

/// The daemon's side: it consumes requests and produces events.
#[derive(Debug)]
pub struct DaemonConn {
    /// The mapping (both rings and the zero-copy region).
    pub mem: Arc<SharedMem>,
    /// Where everything lies.
    pub layout: ConnLayout,
    /// Requests from the client.
    pub requests: RingRx,
    /// Events and replies to the client.
    pub events: RingTx,
    /// Message bytes to the client, each announced by a `DELIVER_REF`
    /// event (`None`: the connection has no delivery ring).
    pub deliveries: Option<RingTx>,
    /// Signalled by the client (requests waiting, event room made).
    pub daemon_wake: EventFd,
    /// Signalled by the daemon (events waiting, request room made).
    pub client_wake: EventFd,
    /// What the client is told.
    pub welcome: Welcome,
}

impl DaemonConn {
    /// Create a connection's memfd (sized, sealed, both ring headers
    /// written) and its eventfds.
    ///
    /// # Errors
    /// A size the layout refuses; `memfd`, `mmap` or `eventfd` failures.
    pub fn create(
        node_id: NodeId,
        conn_id: u64,
        request_capacity: usize,
        event_capacity: usize,
        zc_len: u64,
        message_max: u32,
        delivery_capacity: usize,
    ) -> Result<DaemonConn, ConnError> {
        let layout = ConnLayout::new(request_capacity, event_capacity, zc_len, delivery_capacity)?;
        let len = usize::try_from(layout.memfd_len()).map_err(|_| ConnError::Mapping)?;
        let mem = Arc::new(SharedMem::create("cpgd-conn", len)?);
        let mut page = vec![0u8; HEADER_LEN];
        let (req_off, _) = usize_of(layout.requests_region)?;
        let (ev_off, _) = usize_of(layout.events_region)?;
        header::init(&mut page, Direction::Requests, layout.requests)?;
        mem.copy_in(req_off, &page);
        header::init(&mut page, Direction::Events, layout.events)?;
        mem.copy_in(ev_off, &page);
        let requests = RingRx::new(mem.clone(), req_off, layout.requests, Direction::Requests)
            .ok_or(ConnError::Mapping)?;
        // the daemon's rings rewind when empty: with 3 clients of 64 KiB
        // messages, 8 MiB delivery rings cycled 24 MiB through the caches
        let events = RingTx::new(mem.clone(), ev_off, layout.events)
            .ok_or(ConnError::Mapping)?
            .rewinding();
        let deliveries = match layout.deliveries {
            Some(ring) => {
                let (off, _) = usize_of(layout.deliveries_region)?;
                header::init(&mut page, Direction::Deliveries, ring)?;
                mem.copy_in(off, &page);
                Some(
                    RingTx::new(mem.clone(), off, ring)
                        .ok_or(ConnError::Mapping)?
                        .rewinding(),
                )
            }
            None => None,
        };
        let welcome = Welcome {
            node_id,
            conn_id,
            request_capacity: request_capacity as u32,
            event_capacity: event_capacity as u32,
            zc_len,
            message_max,
            delivery_capacity: delivery_capacity as u32,
        };
        Ok(DaemonConn {
            mem,
            layout,
            requests,
            events,
            deliveries,
            daemon_wake: EventFd::new()?,
            client_wake: EventFd::new()?,
            welcome,
        })
    }

    /// The three fds `Welcome` carries, in protocol order.
    pub fn welcome_fds(&self) -> [BorrowedFd<'_>; WELCOME_FDS] {
        let mut fds = [self.mem.fd(); WELCOME_FDS];
        fds[FD_MEMFD] = self.mem.fd();
        fds[FD_DAEMON_WAKE] = self.daemon_wake.as_fd();
        fds[FD_CLIENT_WAKE] = self.client_wake.as_fd();
        fds
    }

    /// The zero-copy region's offset and length in the mapping.
    pub fn zc_region(&self) -> (usize, usize) {
        usize_of(self.layout.zc_region).unwrap_or((0, 0))
    }
}

/// The client's side: it produces requests and consumes events.
#[derive(Debug)]
pub struct ClientConn {
    /// The mapping.
    pub mem: Arc<SharedMem>,
    /// Where everything lies.
    pub layout: ConnLayout,
    /// Requests to the daemon.
    pub requests: RingTx,
    /// Events and replies from the daemon.
    pub events: RingRx,
    /// Message bytes from the daemon (`DELIVER_REF`), if it has the ring.
    pub deliveries: Option<RingRx>,
    /// Signal it: requests waiting, event room made.
    pub daemon_wake: EventFd,
    /// Wait on it: events waiting, request room made.
    pub client_wake: EventFd,
    /// What the daemon said.
    pub welcome: Welcome,
}

impl ClientConn {
    /// Map the memfd `Welcome` came with and check both ring headers.
    ///
    /// # Errors
    /// [`ConnError`]: a layout `Welcome` should not have sent, a memfd
    /// shorter than it, a ring header that does not match.
    pub fn attach(welcome: Welcome, fds: [OwnedFd; WELCOME_FDS]) -> Result<ClientConn, ConnError> {
        let layout = welcome.layout()?;
        let [memfd, daemon_wake, client_wake] = fds;
        let len = usize::try_from(layout.memfd_len()).map_err(|_| ConnError::Mapping)?;
        let mem = Arc::new(SharedMem::attach(memfd, len)?);
        let (req_off, _) = usize_of(layout.requests_region)?;
        let (ev_off, _) = usize_of(layout.events_region)?;
        let mut page = vec![0u8; HEADER_LEN];
        mem.copy_out(req_off, &mut page);
        header::check(&page, Direction::Requests, layout.requests.capacity())?;
        mem.copy_out(ev_off, &mut page);
        header::check(&page, Direction::Events, layout.events.capacity())?;
        let requests =
            RingTx::new(mem.clone(), req_off, layout.requests).ok_or(ConnError::Mapping)?;
        let events = RingRx::new(mem.clone(), ev_off, layout.events, Direction::Events)
            .ok_or(ConnError::Mapping)?;
        let deliveries = match layout.deliveries {
            Some(ring) => {
                let (off, _) = usize_of(layout.deliveries_region)?;
                mem.copy_out(off, &mut page);
                header::check(&page, Direction::Deliveries, ring.capacity())?;
                Some(
                    RingRx::new(mem.clone(), off, ring, Direction::Deliveries)
                        .ok_or(ConnError::Mapping)?,
                )
            }
            None => None,
        };
        Ok(ClientConn {
            mem,
            layout,
            requests,
            events,
            deliveries,
            daemon_wake: EventFd::from_owned(daemon_wake),
            client_wake: EventFd::from_owned(client_wake),
            welcome,
        })
    }

    /// The zero-copy region's offset and length in the mapping.
    pub fn zc_region(&self) -> (usize, usize) {
        usize_of(self.layout.zc_region).unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpg_core::ipc::{Hello, Message, Model, Op, Request, RING_CAPACITY_MIN};
    use cpg_core::GroupName;

    #[test]
    fn a_connection_through_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("cpg-ipc-test-{}", std::process::id()));
        let path = dir.join("s.sock");
        let listener = crate::setup::listen(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let cred = crate::setup::peer_cred(&s).unwrap();
            assert_eq!(cred.pid, std::process::id());
            let hello = crate::setup::read_hello(&mut s).unwrap();
            assert_eq!(hello.model, Model::V1);
            let mut d = DaemonConn::create(
                3,
                77,
                RING_CAPACITY_MIN,
                RING_CAPACITY_MIN,
                8192,
                1 << 20,
                RING_CAPACITY_MIN,
            )
            .unwrap();
            assert!(d.deliveries.is_some());
            crate::setup::send_welcome(&s, &d.welcome, d.welcome_fds()).unwrap();
            // wait for one request
            loop {
                if d.requests.refresh().unwrap() {
                    break;
                }
                if d.requests.prepare_sleep().unwrap() {
                    d.daemon_wake.wait(s.as_fd(), 2000).unwrap();
                    d.daemon_wake.drain();
                    d.requests.awake();
                }
            }
            let mut body = Vec::new();
            let info = d.requests.next_into(&mut body).unwrap().unwrap();
            let req = Request::parse(info.kind, info.flags, &body).unwrap();
            assert_eq!(req.req_id, 5);
            d.requests.release();
            s
        });
        let (sock, welcome, fds) = crate::setup::connect(
            &path,
            Hello {
                model: Model::V1,
                totem: false,
            },
        )
        .unwrap();
        assert_eq!(welcome.conn_id, 77);
        let mut c = ClientConn::attach(welcome, fds).unwrap();
        let req = Request {
            req_id: 5,
            op: Op::Join {
                group: GroupName::new(b"g").unwrap(),
            },
        };
        c.requests.write(&req, 0).unwrap();
        if c.requests.publish() {
            c.daemon_wake.signal();
        }
        let s = server.join().unwrap();
        drop(s);
        // the daemon's hang-up is seen on the socket
        assert!(crate::setup::peer_gone(sock.as_fd()));
        let _ = std::fs::remove_dir_all(dir);
    }
}

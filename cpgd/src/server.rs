//! The daemon loop: one thread serving every client connection of the
//! node through epoll (the socket, each connection's eventfd, its handle's
//! event fd), fairly: each ready connection gets a bounded visit in turn.
//!
//! Setup happens in the loop too, without blocking: a new connection's
//! `Hello` is read when it arrives, and a connection that sends nothing for
//! [`cpg_ipc::setup::HELLO_TIMEOUT`] is closed. So a silent or slow client
//! delays nobody.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg_core::ipc::setup::SETUP_RECORD_MAX;
use cpg_core::ipc::{parse_record, Model, MsgError, Setup};
use cpg_core::CsError;
use cpg_ipc::setup::{self, HELLO_TIMEOUT};
use cpg_ipc::{DaemonConn, EventFd, PeerCred};
use cpg_std::config::IpcConfig;
use cpg_std::{Node, NodeConfig, StartError};
use rustix::event::epoll::{self, EventData, EventFlags};

use crate::access::Access;
use crate::conn::{Cut, Live, Verdict};

/// Counters of the daemon (`cpgtool status` shows them in a later issue;
/// logged at exit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaemonStats {
    /// Connections accepted (Welcome sent).
    pub accepted: u64,
    /// Connections refused (ACCESS, VERSION, NO_RESOURCES, INVALID_PARAM).
    pub refused: u64,
    /// Connections closed for a malformed record, impossible index or lie.
    pub cut_malformed: u64,
    /// Connections evicted as slow consumers.
    pub evicted: u64,
    /// Connections whose client hung up (exit, kill).
    pub hang_ups: u64,
    /// Connections finalized.
    pub finalized: u64,
    /// Connections open now.
    pub connections: usize,
    /// Requests read.
    pub requests: u64,
    /// Multicasts handed to the engine.
    pub mcasts: u64,
    /// Of those, zero-copy (`MCAST_ZC`).
    pub zc_mcasts: u64,
    /// Bytes of multicast payload copied from a client's memory.
    pub request_bytes_copied: u64,
    /// Multicasts the engine answered TRY_AGAIN, retried.
    pub stalls: u64,
    /// Event records written.
    pub event_records: u64,
    /// Bytes of message payload written into event and delivery rings.
    pub event_payload_bytes: u64,
    /// Messages written into delivery rings (dispatched where they lie).
    pub delivery_ring_messages: u64,
    /// Zero-copy slots clients hold now.
    pub zc_slots_in_use: usize,
    /// Bytes of events waiting for room in clients' event rings now (at
    /// most one message per connection: the rest waits in the handles'
    /// bounded queues).
    pub events_held_bytes: usize,
}

/// How the daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Leave the ring at once (the others see the node go without waiting
    /// for a token timeout); clients see their sockets close.
    Graceful,
    /// As if the process died: nothing is sent.
    Abrupt,
}

/// How often a connection whose event ring is full is looked at anyway:
/// the node may evict its handle meanwhile (its fd, out of the epoll set
/// then, would not say so).
const BLOCKED_CHECK: Duration = Duration::from_millis(50);

const TOKEN_LISTENER: u64 = 0;
const TOKEN_STOP: u64 = 1;
const KIND_SOCKET: u64 = 0;
const KIND_WAKE: u64 = 1;
const KIND_HANDLE: u64 = 2;

fn token(id: u64, kind: u64) -> u64 {
    (id << 2) | kind
}

enum ConnState {
    Hello { buf: Vec<u8>, deadline: Instant },
    Live(Box<Live>),
}

struct Conn {
    sock: UnixStream,
    cred: PeerCred,
    state: ConnState,
    /// The handle's fd is in the epoll set for reading (not while the
    /// event ring is full).
    handle_armed: bool,
}

/// What tests ask of the loop's node (zero-copy proofs), and what it
/// answers: requests are applied between iterations.
#[derive(Debug, Default)]
struct Probe {
    /// Start (true) or stop recording the sends that read driver buffers.
    record: Option<bool>,
    recording: bool,
    sends: Vec<cpg_std::testing::BufSend>,
    /// Each live connection's zero-copy region in the daemon: (address, length).
    regions: Vec<(usize, usize)>,
    /// The transport's counters.
    transport: Option<cpg_uring::Snapshot>,
}

/// A running daemon: the node, the socket, the loop's thread.
pub struct Daemon {
    probe: Arc<Mutex<Probe>>,
    stop: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    mode: Arc<Mutex<StopMode>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<DaemonStats>>,
    socket: PathBuf,
    node_id: cpg_core::NodeId,
    node_probe: cpg_std::testing::NodeProbe,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Why the daemon could not start.
#[derive(Debug)]
pub enum DaemonError {
    /// The node did not start.
    Node(StartError),
    /// The socket could not be bound (another daemon, permissions).
    Socket(io::Error),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Node(e) => write!(f, "node: {e}"),
            DaemonError::Socket(e) => write!(f, "socket: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl Daemon {
    /// Start the node `config` describes and serve clients on its `[ipc]`
    /// socket from a thread of its own.
    ///
    /// # Errors
    /// The node or the socket failed to start.
    pub fn start(config: &NodeConfig) -> Result<Daemon, DaemonError> {
        let listener = setup::listen(&config.ipc.socket).map_err(DaemonError::Socket)?;
        listener
            .set_nonblocking(true)
            .map_err(DaemonError::Socket)?;
        let node = Node::start(config).map_err(DaemonError::Node)?;
        let node_probe = cpg_std::testing::probe(&node);
        let stats = Arc::new(Mutex::new(DaemonStats::default()));
        let published = stats.clone();
        // the IPC's own counters, as the loop last published them
        let status = node.status_source().with_extra(Arc::new(move |c| {
            let s = *published.lock().unwrap_or_else(|e| e.into_inner());
            c.ipc_connections = s.connections as u64;
            c.ipc_accepted = s.accepted;
            c.ipc_cut = s.cut_malformed;
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_fd = Arc::new(EventFd::new().map_err(DaemonError::Socket)?);
        let mode = Arc::new(Mutex::new(StopMode::Graceful));
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| DaemonError::Socket(e.into()))?;
        let own_uid = rustix::process::getuid().as_raw();
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut lp = Loop {
            probe: probe.clone(),
            node: Some(node),
            listener,
            epoll,
            ipc: config.ipc.clone(),
            access: Access::new(own_uid, &config.ipc.uids, &config.ipc.gids),
            message_max: config.engine.max_message_size,
            zc_threshold: config.engine.zc_copy_threshold,
            conns: HashMap::new(),
            next_id: 1,
            next_blocked_check: Instant::now(),
            stats: stats.clone(),
            totals: DaemonStats::default(),
            flow_control: false,
            status,
        };
        epoll::add(
            &lp.epoll,
            &lp.listener,
            EventData::new_u64(TOKEN_LISTENER),
            EventFlags::IN,
        )
        .map_err(|e| DaemonError::Socket(e.into()))?;
        epoll::add(
            &lp.epoll,
            stop_fd.as_fd(),
            EventData::new_u64(TOKEN_STOP),
            EventFlags::IN,
        )
        .map_err(|e| DaemonError::Socket(e.into()))?;
        let (s, m) = (stop.clone(), mode.clone());
        let socket = config.ipc.socket.clone();
        let sock_path = socket.clone();
        let thread = std::thread::Builder::new()
            .name("cpgd".into())
            .spawn(move || {
                lp.run(&s);
                let mode = *m.lock().unwrap_or_else(|e| e.into_inner());
                lp.shutdown(mode);
                let _ = std::fs::remove_file(&sock_path);
            })
            .map_err(DaemonError::Socket)?;
        log::info!(
            target: "cpgd",
            "node {} serving clients on {}",
            config.node_id,
            socket.display()
        );
        Ok(Daemon {
            probe,
            stop,
            stop_fd,
            mode,
            thread: Some(thread),
            stats,
            socket,
            node_id: config.node_id,
            node_probe,
        })
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Counters now.
    pub fn stats(&self) -> DaemonStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start (`true`, clearing earlier records) or stop recording which
    /// bytes every send that reads a driver buffer reads (zero-copy
    /// proofs); applied by the loop within a few milliseconds.
    #[doc(hidden)]
    pub fn record_buf_sends(&self, on: bool) {
        self.probe.lock().unwrap_or_else(|e| e.into_inner()).record = Some(on);
        self.stop_fd.signal();
    }

    /// The sends recorded so far, each live connection's zero-copy region
    /// in this process (address, length), and the transport's counters.
    #[doc(hidden)]
    pub fn buf_sends(
        &self,
    ) -> (
        Vec<cpg_std::testing::BufSend>,
        Vec<(usize, usize)>,
        Option<cpg_uring::Snapshot>,
    ) {
        let p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        (p.sends.clone(), p.regions.clone(), p.transport)
    }

    /// The node's status, counters and freeze switch, read from the
    /// caller's thread (tests: the ring formed, evictions, a request held
    /// in flight).
    #[doc(hidden)]
    pub fn node_probe(&self) -> &cpg_std::testing::NodeProbe {
        &self.node_probe
    }

    /// Stop: close every connection (clients answer LIBRARY), stop the
    /// node, remove the socket.
    pub fn stop(mut self, mode: StopMode) {
        self.halt(mode);
    }

    fn halt(&mut self, mode: StopMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        self.stop.store(true, Ordering::Release);
        self.stop_fd.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Wait until the loop ends (it ends only when stopped).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A handle another thread (a signal watcher) may stop the daemon with.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stop: self.stop.clone(),
            stop_fd: self.stop_fd.clone(),
            mode: self.mode.clone(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt(StopMode::Graceful);
        }
    }
}

/// Stops a daemon from another thread.
#[derive(Clone)]
pub struct Stopper {
    stop: Arc<AtomicBool>,
    stop_fd: Arc<EventFd>,
    mode: Arc<Mutex<StopMode>>,
}

impl Stopper {
    /// Ask the loop to stop in `mode`.
    pub fn stop(&self, mode: StopMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        self.stop.store(true, Ordering::Release);
        self.stop_fd.signal();
    }
}

struct Loop {
    probe: Arc<Mutex<Probe>>,
    node: Option<Node>,
    listener: UnixListener,
    epoll: OwnedFd,
    ipc: IpcConfig,
    access: Access,
    message_max: usize,
    zc_threshold: usize,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    next_blocked_check: Instant,
    stats: Arc<Mutex<DaemonStats>>,
    totals: DaemonStats,
    /// The node's flow control as the connections were last told.
    flow_control: bool,
    /// What `STATUS` answers (every connection holds a clone).
    status: cpg_std::status::StatusSource,
}

impl Loop {
    fn node(&self) -> &Node {
        self.node.as_ref().expect("the node lives until shutdown")
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut ready: Vec<u64> = Vec::new();
        // While traffic is recent, poll the set for a short while before
        // sleeping: a request and the engine's answer to it each come a few
        // microseconds apart, and every sleep between them is a wake-up
        // (tens of microseconds) on the message's round trip. An idle
        // daemon's waits run to its timers, so it never spins.
        let mut spin = cpg_uring::Spin::new(cpg_uring::SPIN_DEFAULT);
        let no_wait = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while !stop.load(Ordering::Acquire) {
            let timeout = self.timeout();
            events.clear();
            let ts = timeout.map(|d| rustix::event::Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            let wait_start = Instant::now();
            let spun = spin.should_spin()
                && spin
                    .spin(|| {
                        epoll::wait(
                            &self.epoll,
                            rustix::buffer::spare_capacity(&mut events),
                            Some(&no_wait),
                        )
                        .map(|n| n > 0)
                    })
                    .unwrap_or(false);
            if !spun {
                match epoll::wait(
                    &self.epoll,
                    rustix::buffer::spare_capacity(&mut events),
                    ts.as_ref(),
                ) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        log::error!(target: "cpgd", "epoll_wait: {e}");
                        return;
                    }
                }
            }
            spin.waited(wait_start.elapsed());
            ready.clear();
            for ev in &events {
                let t = ev.data.u64();
                match t {
                    TOKEN_LISTENER => self.accept(),
                    TOKEN_STOP => {}
                    _ => {
                        let (id, kind) = (t >> 2, t & 3);
                        if kind == KIND_SOCKET {
                            self.on_socket(id);
                        }
                        if !ready.contains(&id) {
                            ready.push(id);
                        }
                    }
                }
            }
            // connections waiting for the engine, past their Hello deadline,
            // or blocked on a full event ring for a while
            let now = Instant::now();
            let check_blocked = now >= self.next_blocked_check;
            if check_blocked {
                self.next_blocked_check = now + BLOCKED_CHECK;
            }
            for (&id, c) in &self.conns {
                let due = match &c.state {
                    ConnState::Hello { deadline, .. } => *deadline <= now,
                    ConnState::Live(l) => l.is_stalled() || (check_blocked && l.blocked_events),
                };
                if due && !ready.contains(&id) {
                    ready.push(id);
                }
            }
            for &id in &ready {
                self.visit(id, now);
            }
            self.flow_control_edge();
            self.publish_stats();
            self.serve_probe();
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut t = Duration::from_millis(500);
        if self.flow_control {
            // the edge that ends it comes from the engine, not from a fd
            t = t.min(Duration::from_millis(1));
        }
        for c in self.conns.values() {
            match &c.state {
                ConnState::Hello { deadline, .. } => {
                    t = t.min(deadline.saturating_duration_since(now));
                }
                ConnState::Live(l) if l.is_stalled() => t = t.min(Duration::from_millis(1)),
                ConnState::Live(l) if l.blocked_events => {
                    t = t.min(self.next_blocked_check.saturating_duration_since(now));
                }
                ConnState::Live(_) => {}
            }
        }
        Some(t)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    let cred = match setup::peer_cred(&sock) {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    if epoll::add(
                        &self.epoll,
                        &sock,
                        EventData::new_u64(token(id, KIND_SOCKET)),
                        EventFlags::IN | EventFlags::RDHUP,
                    )
                    .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(
                        id,
                        Conn {
                            sock,
                            cred,
                            state: ConnState::Hello {
                                buf: Vec::new(),
                                deadline: Instant::now() + HELLO_TIMEOUT,
                            },
                            handle_armed: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!(target: "cpgd", "accept: {e}");
                    return;
                }
            }
        }
    }

    /// Readable or hung-up socket: a Hello arriving, or the client gone.
    fn on_socket(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match &mut c.state {
            ConnState::Hello { buf, .. } => {
                let mut tmp = [0u8; SETUP_RECORD_MAX];
                let room = SETUP_RECORD_MAX - buf.len();
                match c.sock.read(&mut tmp[..room]) {
                    Ok(0) => self.close(id, Cut::HangUp),
                    Ok(n) => {
                        buf.extend_from_slice(&tmp[..n]);
                        self.try_hello(id);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.close(id, Cut::HangUp),
                }
            }
            ConnState::Live(_) => {
                // nothing but doorbell echo requests comes after Welcome
                if cpg_ipc::bell::answer(c.sock.as_fd()) == cpg_ipc::bell::Incoming::HangUp {
                    self.close(id, Cut::HangUp);
                }
            }
        }
    }

    fn try_hello(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let ConnState::Hello { buf, .. } = &c.state else {
            return;
        };
        let hello = match parse_record::<Setup>(buf) {
            Err(MsgError::Truncated { .. }) if buf.len() < SETUP_RECORD_MAX => return,
            Ok((Setup::Hello(h), _)) => h,
            Err(MsgError::UnsupportedVersion(_)) => {
                return self.refuse(id, CsError::Version);
            }
            Err(MsgError::BadMagic) => {
                // not a CPG client: no answer
                self.totals.refused += 1;
                return self.drop_conn(id);
            }
            _ => return self.refuse(id, CsError::InvalidParam),
        };
        let cred = c.cred;
        if !self.access.allows(&cred) {
            log::warn!(
                target: "cpgd",
                "refused pid {} uid {} gid {}: not allowed by [ipc] uids/gids",
                cred.pid, cred.uid, cred.gid
            );
            return self.refuse(id, CsError::Access);
        }
        let live = self
            .conns
            .values()
            .filter(|c| matches!(c.state, ConnState::Live(_)))
            .count();
        if live >= self.ipc.max_connections {
            return self.refuse(id, CsError::NoResources);
        }
        let zc_len = self.ipc.zc_pool.region_len().unwrap_or(0) as u64;
        let dc = match DaemonConn::create(
            self.node().node_id(),
            id,
            self.ipc.request_ring_bytes,
            self.ipc.event_ring_bytes,
            zc_len.next_multiple_of(4096),
            u32::try_from(self.message_max).unwrap_or(u32::MAX),
            // as large as the event ring: what the event ring held of
            // large messages now lies here
            self.ipc.event_ring_bytes,
        ) {
            Ok(d) => d,
            Err(e) => {
                log::warn!(target: "cpgd::ipc", "connection of pid {}: {e}", cred.pid);
                return self.refuse(id, CsError::NoResources);
            }
        };
        let sent = {
            let c = &self.conns[&id];
            setup::send_welcome(&c.sock, &dc.welcome, dc.welcome_fds())
        };
        if sent.is_err() {
            return self.drop_conn(id);
        }
        let initial = hello.model == Model::V1InitialTotemConfchg;
        let live = match Live::open(
            self.node.as_ref().expect("node"),
            cred,
            initial,
            hello.totem,
            &self.conns[&id].sock,
            dc,
            &self.ipc.zc_pool,
            self.message_max,
            self.zc_threshold,
            self.status.clone(),
        ) {
            Ok(l) => l,
            Err(e) => {
                log::warn!(target: "cpgd::ipc", "handle for pid {}: {e}", cred.pid);
                return self.drop_conn(id);
            }
        };
        let ok = epoll::add(
            &self.epoll,
            &live.daemon_wake,
            EventData::new_u64(token(id, KIND_WAKE)),
            EventFlags::IN,
        )
        .is_ok()
            && live
                .cpg
                .fd_get()
                .ok()
                .map(|fd| {
                    epoll::add(
                        &self.epoll,
                        fd,
                        EventData::new_u64(token(id, KIND_HANDLE)),
                        EventFlags::IN,
                    )
                    .is_ok()
                })
                .unwrap_or(false);
        let c = self.conns.get_mut(&id).expect("present");
        c.state = ConnState::Live(Box::new(live));
        c.handle_armed = true;
        self.totals.accepted += 1;
        log::debug!(target: "cpgd::ipc", "client pid {} uid {} connected (connection {id})", cred.pid, cred.uid);
        if !ok {
            self.close(id, Cut::Malformed("epoll registration"));
        }
    }

    /// Send every connection `FLOW_CONTROL` on each edge of the node's
    /// flow control (`docs/spec/ipc.md` §7): clients answer
    /// `flow_control_state_get` from it without a request, which would wait
    /// behind the multicasts this loop holds back exactly while flow
    /// control is on (and a client's mcast answers TRY_AGAIN early). It
    /// turns on when the engine's send queue fills, so a multicast the
    /// engine refused has stalled a connection; it turns off as the queue
    /// drains, looked for every millisecond meanwhile ([`Loop::timeout`]).
    fn flow_control_edge(&mut self) {
        let live = || {
            self.conns.values().filter_map(|c| match &c.state {
                ConnState::Live(l) => Some(l),
                ConnState::Hello { .. } => None,
            })
        };
        if !self.flow_control && !live().any(|l| l.is_stalled()) {
            return;
        }
        let Some(on) = live().find_map(|l| l.node_flow_control()) else {
            // nobody to tell: a new connection starts with it off
            self.flow_control = false;
            return;
        };
        if on == self.flow_control {
            return;
        }
        self.flow_control = on;
        for c in self.conns.values_mut() {
            if let ConnState::Live(l) = &mut c.state {
                l.flow_control(on);
            }
        }
    }

    fn refuse(&mut self, id: u64, code: CsError) {
        self.totals.refused += 1;
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = c.sock.set_nonblocking(false);
            let _ = setup::send_refused(&mut c.sock, code);
        }
        self.drop_conn(id);
    }

    fn drop_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            let _ = epoll::delete(&self.epoll, &c.sock);
        }
    }

    fn visit(&mut self, id: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let verdict = match &mut c.state {
            ConnState::Hello { deadline, .. } => {
                if *deadline <= now {
                    self.totals.refused += 1;
                    self.drop_conn(id);
                }
                return;
            }
            ConnState::Live(l) => l.service(),
        };
        match verdict {
            Verdict::Keep => {
                // the handle's fd stays in the set only while its events can
                // be written (else it would report ready in a loop); a
                // blocked connection is looked at every BLOCKED_CHECK for
                // its handle's eviction
                let ConnState::Live(l) = &c.state else {
                    return;
                };
                let want = !l.blocked_events;
                if want != c.handle_armed {
                    if let Ok(fd) = l.cpg.fd_get() {
                        let flags = if want {
                            EventFlags::IN
                        } else {
                            EventFlags::empty()
                        };
                        let _ = epoll::modify(
                            &self.epoll,
                            fd,
                            EventData::new_u64(token(id, KIND_HANDLE)),
                            flags,
                        );
                    }
                    c.handle_armed = want;
                }
            }
            Verdict::Disconnect(cut) => self.close(id, cut),
        }
    }

    fn close(&mut self, id: u64, cut: Cut) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &c.sock);
        if let ConnState::Live(mut l) = c.state {
            l.unregister();
            let _ = epoll::delete(&self.epoll, &l.daemon_wake);
            if let Ok(fd) = l.cpg.fd_get() {
                let _ = epoll::delete(&self.epoll, fd);
            }
            match cut {
                Cut::HangUp => {
                    self.totals.hang_ups += 1;
                    log::debug!(target: "cpgd::ipc", "client pid {} disconnected (hang-up, connection {id})", c.cred.pid);
                }
                Cut::Finalized => {
                    self.totals.finalized += 1;
                    log::debug!(target: "cpgd::ipc", "client pid {} disconnected (finalized, connection {id})", c.cred.pid);
                }
                Cut::Evicted => {
                    self.totals.evicted += 1;
                    log::warn!(target: "cpgd::ipc", "client pid {} evicted: it stopped dispatching", c.cred.pid);
                }
                Cut::Malformed(why) => {
                    self.totals.cut_malformed += 1;
                    log::warn!(target: "cpgd::ipc", "client pid {} disconnected: {why}", c.cred.pid);
                }
            }
            self.fold(&l);
            // the handle leaves its group (PROCDOWN for the others), its
            // mapping goes; the client sees its socket close
            let _ = l.cpg.finalize();
            drop(l);
        }
        drop(c.sock);
    }

    fn fold(&mut self, l: &Live) {
        let k = l.counters;
        self.totals.requests += k.requests;
        self.totals.mcasts += k.mcasts;
        self.totals.zc_mcasts += k.zc_mcasts;
        self.totals.request_bytes_copied += k.request_bytes_copied;
        self.totals.stalls += k.stalls;
        let o = l.out.lock().unwrap_or_else(|e| e.into_inner());
        self.totals.event_records += o.records;
        self.totals.event_payload_bytes += o.payload_bytes;
        self.totals.delivery_ring_messages += o.delivery_ring_messages;
    }

    fn publish_stats(&mut self) {
        let mut s = self.totals;
        s.connections = self.conns.len();
        for c in self.conns.values() {
            if let ConnState::Live(l) = &c.state {
                let k = l.counters;
                s.requests += k.requests;
                s.mcasts += k.mcasts;
                s.zc_mcasts += k.zc_mcasts;
                s.request_bytes_copied += k.request_bytes_copied;
                s.stalls += k.stalls;
                let o = l.out.lock().unwrap_or_else(|e| e.into_inner());
                s.event_records += o.records;
                s.event_payload_bytes += o.payload_bytes;
                s.delivery_ring_messages += o.delivery_ring_messages;
                s.events_held_bytes += o.held_bytes();
                drop(o);
                s.zc_slots_in_use += l.zc_in_use();
            }
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    fn serve_probe(&mut self) {
        let Some(node) = self.node.as_ref() else {
            return;
        };
        let mut p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(on) = p.record.take() {
            cpg_std::testing::record_buf_sends(node, on);
            p.recording = on;
        }
        if p.recording {
            p.sends = cpg_std::testing::buf_sends(node);
            p.regions = self
                .conns
                .values()
                .filter_map(|c| match &c.state {
                    ConnState::Live(l) => l.zc_region_addr(),
                    ConnState::Hello { .. } => None,
                })
                .collect();
            p.transport = node.transport_counters();
        }
    }

    fn shutdown(&mut self, mode: StopMode) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        if mode == StopMode::Graceful {
            for id in ids {
                self.close(id, Cut::Finalized);
            }
            self.publish_stats();
            if let Some(node) = self.node.take() {
                node.stop();
            }
        } else {
            // As if the process died: the node goes first, so dropping the
            // connections' handles sends nothing (no leave, no PROCDOWN:
            // the others see the node go, NODEDOWN); sockets just close.
            if let Some(node) = self.node.take() {
                node.kill();
            }
            self.conns.clear();
            self.publish_stats();
        }
        log::info!(target: "cpgd", "stopped: {:?}", self.totals);
    }
}

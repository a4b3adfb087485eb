//! What the daemon's tests share: a single-node (or n-node) config on
//! loopback with a socket in a temp dir, and a raw client speaking the IPC
//! records directly (so tests can also break the protocol on purpose).

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpg_core::ipc::{Event, Hello, Message, Model, Op, Request};
use cpg_core::CsError;
use cpg_ipc::ring::RecordInfo;
use cpg_ipc::setup::{self, SetupError};
use cpg_ipc::ClientConn;
use cpg_std::{ConfigFile, NodeConfig};

/// A fresh directory under the temp dir (world-traversable, so a test may
/// connect as another uid).
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cpgd-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A free UDP port on loopback.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config file for `n` nodes on loopback with fast timers; node `i`'s
/// socket is `dir/cpgd-<i>.sock`.
pub fn cluster_file(dir: &Path, n: u32) -> ConfigFile {
    let nodes: Vec<(u32, SocketAddrV4)> = (1..=n)
        .map(|i| (i, SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port())))
        .collect();
    let mut f = ConfigFile::new("cpgd-test", &nodes);
    f.state_dir = dir.to_path_buf();
    f.totem.token_ms = Some(400);
    f
}

/// Node `id`'s validated config from `file`, its socket in `dir`.
pub fn node_config(file: &ConfigFile, dir: &Path, id: u32) -> NodeConfig {
    let mut f = file.clone();
    f.ipc.socket = dir.join(format!("cpgd-{id}.sock"));
    f.validate(Some(id)).unwrap()
}

/// A client speaking raw records.
pub struct Raw {
    pub sock: UnixStream,
    pub conn: ClientConn,
    next_id: u32,
    body: Vec<u8>,
}

impl Raw {
    pub fn connect(path: &Path) -> Result<Raw, SetupError> {
        let (sock, welcome, fds) = setup::connect(
            path,
            Hello {
                model: Model::V1,
                totem: false,
            },
        )?;
        let conn = ClientConn::attach(welcome, fds).expect("attach");
        Ok(Raw {
            sock,
            conn,
            next_id: 1,
            body: Vec::new(),
        })
    }

    /// Send one request record; its req_id.
    pub fn send(&mut self, op: Op<'_>) -> u32 {
        let req_id = self.next_id;
        self.next_id += 1;
        let r = Request { req_id, op };
        self.conn.requests.write(&r, 0).expect("request ring room");
        self.publish();
        req_id
    }

    /// Try to send one request record without waiting: `false` when the
    /// request ring is full.
    pub fn try_send(&mut self, op: Op<'_>) -> bool {
        let r = Request {
            req_id: self.next_id,
            op,
        };
        match self.conn.requests.write(&r, 0) {
            Ok(()) => {
                self.next_id += 1;
                self.publish();
                true
            }
            Err(cpg_ipc::ring::WriteError::Full) => false,
            Err(e) => panic!("request ring: {e:?}"),
        }
    }

    /// Every event waiting now (without blocking).
    pub fn drain_now(&mut self) -> Vec<(RecordInfo, Vec<u8>)> {
        let mut out = Vec::new();
        let _ = self.conn.events.refresh();
        while let Ok(Some(info)) = self.conn.events.next_into(&mut self.body) {
            if info.kind == cpg_core::ipc::EventKind::DeliverRef as u16 {
                out.push(self.deliver_from_ring());
            } else {
                out.push((info, self.body.clone()));
            }
        }
        if self.conn.events.release() {
            self.conn.daemon_wake.signal();
        }
        out
    }

    pub fn publish(&mut self) {
        if self.conn.requests.publish() {
            self.conn.daemon_wake.signal();
        }
    }

    /// The next event record (kind, flags, body), waiting at most `t`.
    /// `None` on timeout or when the daemon hung up.
    pub fn next(&mut self, t: Duration) -> Option<(RecordInfo, Vec<u8>)> {
        let end = Instant::now() + t;
        loop {
            self.conn.events.refresh().ok()?;
            if let Some(info) = self.conn.events.next_into(&mut self.body).ok()? {
                if self.conn.events.release() {
                    self.conn.daemon_wake.signal();
                }
                if info.kind == cpg_core::ipc::EventKind::DeliverRef as u16 {
                    return Some(self.deliver_from_ring());
                }
                return Some((info, self.body.clone()));
            }
            if self.conn.events.prepare_sleep().ok()? {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.conn.events.awake();
                    return None;
                }
                let (_, peer) = self
                    .conn
                    .client_wake
                    .wait(self.sock.as_fd(), left.as_millis() as i32 + 1)
                    .ok()?;
                self.conn.client_wake.drain();
                self.conn.events.awake();
                if peer && setup::peer_gone(self.sock.as_fd()) {
                    // drain what is left before reporting the hang-up
                    self.conn.events.refresh().ok()?;
                    if !self.conn.events.has_records() {
                        return None;
                    }
                }
            }
        }
    }

    /// The `DELIVER_REF` in `body` and its delivery-ring record, read and
    /// released, as the one `DELIVER` that would carry the message inline
    /// (so the tests read either the same way).
    fn deliver_from_ring(&mut self) -> (RecordInfo, Vec<u8>) {
        use cpg_core::ipc::{DeliverHead, Event, EventKind, Message};
        let d = DeliverHead::parse_ref(&self.body).expect("a well-formed DELIVER_REF");
        let ring = self.conn.deliveries.as_mut().expect("a delivery ring");
        ring.refresh().unwrap();
        let mut msg = Vec::new();
        ring.next_into(&mut msg).unwrap().expect("its record");
        assert_eq!(msg.len(), d.total_len as usize);
        if ring.release() {
            self.conn.daemon_wake.signal();
        }
        let ev = Event::Deliver {
            group: cpg_core::GroupName::new(d.group).unwrap(),
            sender: d.sender,
            total_len: d.total_len,
            piece: &msg,
        };
        let mut body = vec![0; ev.body_len()];
        ev.emit_body(&mut body).unwrap();
        let info = RecordInfo {
            kind: EventKind::Deliver as u16,
            flags: 0,
        };
        (info, body)
    }

    /// Events until the reply to `req_id`; its result code. Other events
    /// are returned in `skipped`.
    pub fn reply(
        &mut self,
        req_id: u32,
        skipped: &mut Vec<(RecordInfo, Vec<u8>)>,
    ) -> Option<Result<Vec<u8>, CsError>> {
        loop {
            let (info, body) = self.next(Duration::from_secs(10))?;
            if let Ok(Event::Reply(r)) = Event::parse(info.kind, info.flags, &body) {
                if r.req_id == req_id {
                    return Some(r.result.map(|_| body.clone()));
                }
            }
            skipped.push((info, body));
        }
    }

    pub fn call(&mut self, op: Op<'_>) -> Result<Vec<u8>, CsError> {
        let id = self.send(op);
        let mut skipped = Vec::new();
        self.reply(id, &mut skipped)
            .unwrap_or(Err(CsError::Library))
    }

    /// Whether the daemon closed this connection (within `t`).
    pub fn is_cut(&self, t: Duration) -> bool {
        let end = Instant::now() + t;
        while Instant::now() < end {
            if setup::peer_gone(self.sock.as_fd()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// Wait until `f` holds, at most `t`.
pub fn eventually(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + t;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

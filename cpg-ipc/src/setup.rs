//! The Unix stream socket: connection setup and file descriptors
//! (`docs/spec/ipc.md` §2). After `Welcome` it carries no record, only
//! doorbell bytes ([`crate::bell`]); each side keeps it open and watches it
//! for the other's hang-up.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use cpg_core::ipc::setup::{SETUP_RECORD_MAX, WELCOME_FDS};
use cpg_core::ipc::{emit_record, parse_record, Hello, MsgError, Setup, Welcome};
use cpg_core::CsError;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// How long the daemon waits for a connection's `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// What the kernel says about the peer of a Unix socket (`SO_PEERCRED`),
/// as of its `connect`: never what the peer says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Process id (in the daemon's pid namespace).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The peer of `sock`.
///
/// # Errors
/// `getsockopt(SO_PEERCRED)` failed.
pub fn peer_cred(sock: &UnixStream) -> io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(sock)?;
    Ok(PeerCred {
        pid: c.pid.as_raw_nonzero().get() as u32,
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
    })
}

/// Why a connection could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// A socket call failed (the daemon is not running: `ENOENT`,
    /// `ECONNREFUSED`).
    Io(io::Error),
    /// The daemon refused, with this code.
    Refused(CsError),
    /// The peer sent something that is not the protocol.
    Protocol(&'static str),
    /// A setup record that does not parse.
    Msg(MsgError),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Io(e) => write!(f, "socket: {e}"),
            SetupError::Refused(c) => write!(f, "refused by cpgd: {c}"),
            SetupError::Protocol(w) => write!(f, "protocol: {w}"),
            SetupError::Msg(e) => write!(f, "setup record: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<io::Error> for SetupError {
    fn from(e: io::Error) -> SetupError {
        SetupError::Io(e)
    }
}

impl SetupError {
    /// The `cs_error_t` a client call reports for it.
    pub fn cs_error(&self) -> CsError {
        match self {
            SetupError::Refused(c) => *c,
            // no daemon listening: Corosync's libqb connect answers LIBRARY
            _ => CsError::Library,
        }
    }
}

/// Bind the daemon's socket at `path`, replacing a stale socket file (one
/// nobody listens on). Its parent directory is created (mode 0755).
///
/// # Errors
/// `AddrInUse` if a daemon already listens there; bind failures.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    // Access is decided per connection from SO_PEERCRED, so everyone may
    // connect and be answered (ACCESS rather than EACCES on connect).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Write a setup record with `MSG_NOSIGNAL`: a peer that closed is an
/// error here, never a `SIGPIPE` (the client library runs inside C
/// programs, which do not ignore it as Rust's runtime does).
fn write_setup(sock: &mut UnixStream, msg: &Setup) -> io::Result<()> {
    let mut buf = [0u8; SETUP_RECORD_MAX];
    let n = emit_record(msg, &mut buf).map_err(|_| io::Error::other("setup record"))?;
    let mut at = 0;
    while at < n {
        match rustix::net::send(&*sock, &buf[at..n], SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => at += k,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Client: connect to the daemon at `path`, say `hello`, and take the
/// `Welcome` with its three fds (memfd, daemon's eventfd, client's eventfd).
///
/// # Errors
/// [`SetupError`]: socket failures, a `Refused` answer, anything that is
/// not the protocol (a wrong fd count, a truncated control message).
pub fn connect(
    path: &Path,
    hello: Hello,
) -> Result<(UnixStream, Welcome, [OwnedFd; WELCOME_FDS]), SetupError> {
    let mut sock = UnixStream::connect(path)?;
    write_setup(&mut sock, &Setup::Hello(hello))?;
    let mut buf = [0u8; SETUP_RECORD_MAX];
    let mut got = 0usize;
    let mut fds: Vec<OwnedFd> = Vec::new();
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(WELCOME_FDS))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let r = loop {
            let mut iov = [IoSliceMut::new(&mut buf[got..])];
            match rustix::net::recvmsg(&sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r,
            }
        }
        .map_err(io::Error::from)?;
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        if r.flags.contains(ReturnFlags::CTRUNC) {
            return Err(SetupError::Protocol("control message truncated"));
        }
        if r.bytes == 0 {
            return Err(SetupError::Protocol("the daemon closed during setup"));
        }
        got += r.bytes;
        match parse_record::<Setup>(&buf[..got]) {
            Err(MsgError::Truncated { .. }) if got < buf.len() => continue,
            Err(e) => return Err(SetupError::Msg(e)),
            Ok((Setup::Refused(code), _)) => return Err(SetupError::Refused(code)),
            Ok((Setup::Welcome(w), _)) => {
                let fds: [OwnedFd; WELCOME_FDS] = fds
                    .try_into()
                    .map_err(|_| SetupError::Protocol("Welcome without exactly three fds"))?;
                return Ok((sock, w, fds));
            }
            Ok((Setup::Hello(_), _)) => return Err(SetupError::Protocol("Hello from the daemon")),
        }
    }
}

/// Daemon: read the client's `Hello`, waiting at most [`HELLO_TIMEOUT`]
/// and reading at most one setup record.
///
/// # Errors
/// `Msg(BadMagic)` (close without an answer), `Msg(UnsupportedVersion)`
/// (answer `VERSION`), other `Msg` (answer `INVALID_PARAM`), `Io` (timeout,
/// hang-up).
pub fn read_hello(sock: &mut UnixStream) -> Result<Hello, SetupError> {
    sock.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut buf = [0u8; SETUP_RECORD_MAX];
    let mut got = 0usize;
    let r = loop {
        let n = sock.read(&mut buf[got..])?;
        if n == 0 {
            return Err(SetupError::Protocol("hang-up before Hello"));
        }
        got += n;
        match parse_record::<Setup>(&buf[..got]) {
            Err(MsgError::Truncated { .. }) if got < buf.len() => continue,
            r => break r,
        }
    };
    sock.set_read_timeout(None)?;
    match r {
        Ok((Setup::Hello(h), _)) => Ok(h),
        Ok(_) => Err(SetupError::Protocol("not a Hello")),
        Err(e) => Err(SetupError::Msg(e)),
    }
}

/// Daemon: answer `Welcome` with the three fds in one `sendmsg`.
///
/// # Errors
/// The `sendmsg` failed (the client is gone).
pub fn send_welcome(
    sock: &UnixStream,
    welcome: &Welcome,
    fds: [BorrowedFd<'_>; WELCOME_FDS],
) -> io::Result<()> {
    let mut buf = [0u8; SETUP_RECORD_MAX];
    let n = emit_record(&Setup::Welcome(*welcome), &mut buf)
        .map_err(|_| io::Error::other("welcome record"))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(WELCOME_FDS))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    let mut sent = 0;
    while sent < n {
        let iov = [IoSlice::new(&buf[sent..n])];
        let r = if sent == 0 {
            rustix::net::sendmsg(sock, &iov, &mut cmsg, SendFlags::NOSIGNAL)
        } else {
            rustix::net::sendmsg(
                sock,
                &iov,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        };
        match r {
            Ok(k) => sent += k,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Daemon: answer `Refused { code }` (the caller closes the socket).
///
/// # Errors
/// The write failed (the client is gone).
pub fn send_refused(sock: &mut UnixStream, code: CsError) -> io::Result<()> {
    write_setup(sock, &Setup::Refused(code))
}

/// Whether the peer of `sock` hung up (or the socket failed): a
/// zero-timeout `poll` for `POLLRDHUP`. Bytes waiting to be read (the
/// doorbell) are not a hang-up, and a hang-up behind them is one.
pub fn peer_gone(sock: BorrowedFd<'_>) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&sock, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match poll(&mut fds, Some(&zero)) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
    let r = fds[0].revents();
    r.intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
}

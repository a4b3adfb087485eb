//! The doorbell: single bytes on the connection's Unix socket, which is
//! the fd an application polls (`cpg_fd_get`), so that fd is readable
//! while events are pending (`cpg_core::ipc::wake`, "Which eventfd, and
//! the doorbell"). Every call here is non-blocking; none fails loudly (a
//! socket that is gone is noticed by its hang-up).

use std::os::fd::BorrowedFd;

use cpg_core::ipc::wake::{DOORBELL, ECHO, ECHO_REQUEST};
use rustix::net::{RecvFlags, SendFlags};

/// Most bytes the daemon reads (and answers) per visit of a socket.
pub const ECHO_BATCH: usize = 64;

fn send_byte(sock: BorrowedFd<'_>, b: u8) -> bool {
    loop {
        match rustix::net::send(sock, &[b], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => return n == 1,
            Err(rustix::io::Errno::INTR) => continue,
            // full (it is readable anyway) or gone (its hang-up says so)
            Err(_) => return false,
        }
    }
}

/// Daemon: ring the client's doorbell (one byte).
pub fn ring(sock: BorrowedFd<'_>) {
    send_byte(sock, DOORBELL);
}

/// What the daemon found on a client's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Nothing to read.
    Nothing,
    /// This many bytes, each answered with an echo.
    Answered(usize),
    /// The client hung up (or the socket failed).
    HangUp,
}

/// Daemon: read what the client wrote on its socket (at most
/// [`ECHO_BATCH`] bytes) and answer each byte with one [`ECHO`].
pub fn answer(sock: BorrowedFd<'_>) -> Incoming {
    let mut buf = [0u8; ECHO_BATCH];
    let n = loop {
        match rustix::net::recv(sock, &mut buf, RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Incoming::HangUp,
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Incoming::Nothing,
            Err(_) => return Incoming::HangUp,
        }
    };
    let echoes = [ECHO; ECHO_BATCH];
    let _ = rustix::net::send(
        sock,
        &echoes[..n],
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
    Incoming::Answered(n)
}

/// Client: ask the daemon for one echo byte (the doorbell rung for events
/// already read). `false` if the byte could not be written.
pub fn request_echo(sock: BorrowedFd<'_>) -> bool {
    send_byte(sock, ECHO_REQUEST)
}

/// Client: bytes waiting on the socket (`FIONREAD`).
pub fn pending(sock: BorrowedFd<'_>) -> usize {
    rustix::io::ioctl_fionread(sock).map_or(0, |n| n as usize)
}

/// Client: read up to `n` bytes waiting on the socket, without blocking;
/// how many were read and how many of them were echoes.
pub fn drain(sock: BorrowedFd<'_>, n: usize) -> (usize, usize) {
    let mut buf = [0u8; 256];
    let (mut read, mut echoes) = (0, 0);
    while read < n {
        let want = (n - read).min(buf.len());
        match rustix::net::recv(sock, &mut buf[..want], RecvFlags::DONTWAIT) {
            Ok((0, _)) => break,
            Ok((k, _)) => {
                read += k;
                echoes += buf[..k].iter().filter(|&&b| b == ECHO).count();
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    (read, echoes)
}

/// Client: wait at most `timeout_ms` for bytes on the socket (or its
/// hang-up); whether any came.
pub fn wait_readable(sock: BorrowedFd<'_>, timeout_ms: i64) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&sock, PollFlags::IN)];
    let t = Timespec {
        tv_sec: timeout_ms / 1000,
        tv_nsec: (timeout_ms % 1000) * 1_000_000,
    };
    loop {
        match poll(&mut fds, Some(&t)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn rings_echoes_and_drains() {
        let (client, daemon) = UnixStream::pair().unwrap();
        assert_eq!(pending(client.as_fd()), 0);
        assert_eq!(answer(daemon.as_fd()), Incoming::Nothing);
        ring(daemon.as_fd());
        ring(daemon.as_fd());
        assert_eq!(pending(client.as_fd()), 2);
        assert!(request_echo(client.as_fd()));
        assert!(request_echo(client.as_fd()));
        assert_eq!(answer(daemon.as_fd()), Incoming::Answered(2));
        assert!(wait_readable(client.as_fd(), 1000));
        assert_eq!(drain(client.as_fd(), 3), (3, 1), "two doorbells, one echo");
        assert_eq!(drain(client.as_fd(), 10), (1, 1), "the second echo");
        assert!(!wait_readable(client.as_fd(), 0));
        drop(client);
        assert_eq!(answer(daemon.as_fd()), Incoming::HangUp);
    }
}

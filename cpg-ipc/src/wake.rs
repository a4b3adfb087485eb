//! Eventfds: the wake-up half of `cpg_core::ipc::wake`. Signalled only
//! when the other side said it sleeps, never once per message.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

/// A non-blocking eventfd.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd, counter 0, close-on-exec, non-blocking.
    ///
    /// # Errors
    /// `eventfd` failed (fd limit).
    pub fn new() -> io::Result<EventFd> {
        Ok(EventFd(rustix::event::eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// Wrap an eventfd received from the peer.
    pub fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Add one to the counter: the poller wakes. A full counter (never in
    /// practice) or a closed peer is not an error worth reporting.
    pub fn signal(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Reset the counter (after a wake-up); whether it was non-zero.
    pub fn drain(&self) -> bool {
        let mut b = [0u8; 8];
        matches!(rustix::io::read(&self.0, &mut b), Ok(8))
    }

    /// Wait until this eventfd is signalled or `dead` (the peer's socket)
    /// reports a hang-up, at most `timeout_ms` (-1: forever). Returns
    /// `(signalled, peer_event)`. Bytes on the socket (the doorbell, which
    /// is for the application's poll) do not end the wait.
    ///
    /// # Errors
    /// `poll` failed (other than `EINTR`, which is retried).
    pub fn wait(&self, dead: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<(bool, bool)> {
        let timeout = (timeout_ms >= 0).then(|| rustix::event::Timespec {
            tv_sec: i64::from(timeout_ms / 1000),
            tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
        });
        let mut fds = [
            PollFd::new(&self.0, PollFlags::IN),
            PollFd::new(&dead, PollFlags::RDHUP),
        ];
        loop {
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let sig = !fds[0].revents().is_empty();
        let peer = !fds[1].revents().is_empty();
        Ok((sig, peer))
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_then_drain() {
        let e = EventFd::new().unwrap();
        assert!(!e.drain());
        e.signal();
        e.signal();
        assert!(e.drain());
        assert!(!e.drain());
    }
}

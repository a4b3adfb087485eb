//! Waking the event loop from another thread: an eventfd the loop keeps a
//! read armed on (or polls, in the syscall fallback).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::event::EventfdFlags;

/// Wakes a [`crate::Driver`]'s loop (`Input::Wake`): `Clone + Send + Sync`.
///
/// Wakes coalesce: any number of `wake` calls before the loop runs give one
/// `Input::Wake`.
#[derive(Debug, Clone)]
pub struct Waker(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC)?;
        Ok(Waker(Arc::new(Inner {
            fd,
            pending: AtomicBool::new(false),
        })))
    }

    /// Wake the loop (cheap when a wake is already pending).
    pub fn wake(&self) {
        // Under load a wake is almost always pending: look before the
        // read-modify-write, which would take the cache line from the loop
        // on every call. The fence orders the caller's earlier stores (the
        // work it queued) before this load, as the swap would: if the loop
        // cleared the flag after that load, it reads the queued work next.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.0.pending.load(Ordering::Acquire) {
            return;
        }
        if !self.0.pending.swap(true, Ordering::AcqRel) {
            // An eventfd write of 1 only fails when the counter would
            // overflow, which a pending, unread wake cannot reach.
            let _ = rustix::io::write(&self.0.fd, &1u64.to_ne_bytes());
        }
    }

    /// The loop took the wake: later `wake` calls write again.
    pub(crate) fn clear(&self) {
        self.0.pending.store(false, Ordering::SeqCst);
        // pairs with the fence in `wake`: the loop's next reads of queued
        // work come after the cleared flag is visible
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

//! A memfd mapped `MAP_SHARED`: the one piece of memory two processes
//! share per connection (both rings and the zero-copy region,
//! `cpg_core::ipc::ConnLayout`).
//!
//! The daemon creates it ([`SharedMem::create`]: sized, then sealed against
//! shrinking and growing, so a client cannot truncate it under the
//! daemon's mapping, which would be a `SIGBUS` in the daemon); the client
//! maps the fd it received ([`SharedMem::attach`]).
//!
//! Memory another process may write at any moment is never handed out as
//! a Rust reference by default: bytes are copied in and out
//! ([`SharedMem::copy_in`], [`SharedMem::copy_out`]) and the index words
//! are atomics ([`SharedMem::atomic_u64`]). The two exceptions, for zero
//! copy, are explicit and documented where they are used
//! ([`SharedMem::shared_bytes`], [`SharedMem::range_ptr`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// A shared mapping of a whole memfd, unmapped on drop.
#[derive(Debug)]
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value until drop; every
// access through it is a copy or an atomic (or, for the zero-copy methods,
// documented at the caller), so sharing the handle between threads adds no
// hazard the methods do not already handle.
unsafe impl Send for SharedMem {}
// SAFETY: as above; `&SharedMem` methods only copy or use atomics.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// Create a memfd of `len` bytes (zero-filled by the kernel), seal its
    /// size, and map it.
    ///
    /// # Errors
    /// `memfd_create`, `ftruncate`, `fcntl(F_ADD_SEALS)` or `mmap` failed;
    /// `InvalidInput` for a zero length.
    pub fn create(name: &str, len: usize) -> io::Result<SharedMem> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        Self::map(fd, len)
    }

    /// Map a memfd received from the daemon, which must hold at least `len`
    /// bytes.
    ///
    /// # Errors
    /// `InvalidData` if it is shorter (or `len` is 0); `fstat` or `mmap`
    /// failed.
    pub fn attach(fd: OwnedFd, len: usize) -> io::Result<SharedMem> {
        let st = rustix::fs::fstat(&fd)?;
        if len == 0 || (st.st_size as u64) < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shared memory of {} B, {len} B expected", st.st_size),
            ));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMem> {
        // Why this is sound: a fresh mapping chosen by the kernel (null hint, no
        // MAP_FIXED) cannot alias any Rust object; `len` bytes of `fd`
        // exist (created so, or checked by `attach`), and the size is sealed
        // (daemon side) so the pages stay backed while mapped.
        // SAFETY: a fresh kernel-chosen mapping of `len` existing, sealed bytes.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedMem { ptr, len, fd })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never empty (a zero length is refused at creation).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memfd (sent to the client with `Welcome`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Address of the first byte (for zero-copy proofs and registration).
    pub fn base(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // `end ≤ self.len`: the pointer stays inside the mapping.
        (end <= self.len).then(|| self.ptr.as_ptr().wrapping_add(offset))
    }

    /// Copy `dst.len()` bytes at `offset` out of the mapping; `false` if the
    /// range is not inside it (nothing copied).
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        let Some(src) = self.check(offset, dst.len()) else {
            return false;
        };
        // Why this is sound: `src..src+len` lies in the live mapping (`check`); `dst` is
        // private memory, so the ranges do not overlap. The other process may
        // write these bytes meanwhile: every byte value is a valid `u8`, and
        // callers validate what they copied, never the shared original.
        // SAFETY: in-range shared source, private destination, no overlap.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copy `src` into the mapping at `offset`; `false` if the range is not
    /// inside it (nothing copied).
    pub fn copy_in(&self, offset: usize, src: &[u8]) -> bool {
        let Some(dst) = self.check(offset, src.len()) else {
            return false;
        };
        // SAFETY: the destination lies in the live mapping (`check`), `src`
        // is private memory; no Rust reference to these shared bytes exists
        // (every reader copies them), so the write aliases nothing.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        true
    }

    /// Write `len` zero bytes at `offset`; `false` if out of range.
    pub fn zero(&self, offset: usize, len: usize) -> bool {
        let Some(dst) = self.check(offset, len) else {
            return false;
        };
        // SAFETY: as `copy_in`.
        unsafe { std::ptr::write_bytes(dst, 0, len) };
        true
    }

    /// The `u64` word at `offset` as an atomic (`None` unless 8-aligned and
    /// inside the mapping).
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.check(offset, 8)?;
        if p as usize % std::mem::align_of::<AtomicU64>() != 0 {
            return None;
        }
        // Why this is sound: aligned, inside the mapping for as long as `&self` lives;
        // the word is only ever accessed atomically by both processes (the
        // protocol's index and flag words), and `AtomicU64` has the size and
        // layout of `u64`.
        // SAFETY: aligned, in the live mapping, only ever accessed atomically.
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// The `u32` word at `offset` as an atomic (as [`SharedMem::atomic_u64`]).
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.check(offset, 4)?;
        if p as usize % std::mem::align_of::<AtomicU32>() != 0 {
            return None;
        }
        // SAFETY: as `atomic_u64`.
        Some(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// The bytes at `offset..offset+len` as a slice, for the kernel to send
    /// from without a copy (the daemon's zero-copy sends out of a client's
    /// slot). `None` if out of range.
    ///
    /// The peer process may rewrite these bytes at any time: treat them as
    /// opaque payload that is read once by the kernel, never as input to a
    /// decision (a lying client can only change its own message).
    pub fn shared_bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let p = self.check(offset, len)?;
        // Why this is sound: inside the live mapping for the borrow of `self`. The bytes
        // may change under us (another process writes them): `u8` has no
        // invalid values, and the contract above keeps every use to handing
        // them to the kernel or copying them, so no code depends on two
        // reads agreeing.
        // SAFETY: in the live mapping; opaque bytes no decision reads twice.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// A pointer to `offset..offset+len` (`None` if out of range): the
    /// client's own zero-copy slot, which it writes through a slice it
    /// makes with its own argument (one slice per allocated slot, slots
    /// checked not to overlap). Valid while this mapping lives.
    pub fn range_ptr(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        self.check(offset, len).and_then(NonNull::new)
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; every borrow
        // handed out is tied to `&self`, so none outlives this.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_copy_attach_sealed() {
        let m = SharedMem::create("t", 8192).unwrap();
        assert!(m.copy_in(4090, b"hello!"));
        assert!(!m.copy_in(8190, b"abc"), "past the end");
        let fd = m.fd().try_clone_to_owned().unwrap();
        // the size is sealed: a client cannot shrink it under the daemon
        assert!(rustix::fs::ftruncate(&fd, 10).is_err());
        let c = SharedMem::attach(fd, 8192).unwrap();
        let mut out = [0u8; 6];
        assert!(c.copy_out(4090, &mut out));
        assert_eq!(&out, b"hello!");
        c.atomic_u64(0)
            .unwrap()
            .store(7, std::sync::atomic::Ordering::Release);
        assert_eq!(
            m.atomic_u64(0)
                .unwrap()
                .load(std::sync::atomic::Ordering::Acquire),
            7
        );
        assert!(m.atomic_u64(3).is_none(), "unaligned");
        assert!(m.atomic_u64(8190).is_none(), "past the end");
    }

    #[test]
    fn attach_refuses_a_short_memfd() {
        let m = SharedMem::create("t", 4096).unwrap();
        let fd = m.fd().try_clone_to_owned().unwrap();
        assert!(SharedMem::attach(fd, 8192).is_err());
    }
}

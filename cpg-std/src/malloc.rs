//! glibc malloc tuned for a process that moves messages: freed memory is
//! kept (no trimming back to the kernel) and blocks up to 32 MiB come from
//! the heap, not a fresh mmap each. For `cpgtool` and `cpgd`'s `main`.
//!
//! Measured without it:
//! - every 1 MiB message cost a mmap, 256 page faults with zeroing and a
//!   munmap (1 member 1 MiB copying at netmtu 65507: 1.3..1.6 against
//!   3.0..3.3 GB/s with it);
//! - cpgd's thread grew and shrank its arena's heap around each batch of
//!   small requests, about 2,000 `mprotect` calls a second (one cpgd, 3
//!   libcpg clients × 64 B AGREED, 4 alternated rounds: 588k-691k against
//!   741k-867k msgs/s per member with it).
#![allow(unsafe_code)]

/// Set the parameters: for a binary's `main` (a library must not change
/// its host process's allocator), best first thing, before threads made
/// arenas of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;
    // A value glibc does not take is refused with 0 (a 32-bit glibc caps
    // the mmap threshold at 512 KiB; the other two still apply).
    // SAFETY: glibc's mallopt is MT-Safe and only changes allocator
    // parameters; no value is undefined behaviour.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
        mallopt(M_TOP_PAD, 64 << 20);
    }
}

/// Other allocators keep their own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

//! Transport counters: atomics, shared through an `Arc` with whoever wants
//! to read them while the loop runs. Every user-space copy of frame bytes
//! the transport makes is counted in `bytes_copied`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters (relaxed atomics; read with [`Counters::snapshot`]).
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A plain copy of [`Counters`] at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            /// Read every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Frames the kernel accepted for sending (one per destination).
    frames_sent,
    /// Bytes of those frames.
    bytes_sent,
    /// Frames received and handed to the host (loopback included).
    frames_received,
    /// Bytes of those frames.
    bytes_received,
    /// Sends that failed (negative result), not counted as sent.
    send_errors,
    /// Sends by `SendZc` from a registered (fixed) buffer.
    sends_zc_fixed,
    /// Sends by `SendZc` from heap memory (engine-built frames).
    sends_zc_heap,
    /// Sends by `WriteFixed` from a registered buffer on a connected socket.
    sends_write_fixed,
    /// Sends by `Send` (io_uring) or `sendmsg` (fallback) from heap memory.
    sends_plain,
    /// Gather sends (engine headers + zero-copy buffer) by `SendMsgZc`.
    sends_gather_zc,
    /// Gather sends by `SendMsg` (io_uring) or `sendmsg` (fallback).
    sends_gather,
    /// Sends from an external region ([`crate::RxBuf::external`]) by
    /// `SendZc` naming its fixed buffer (also counted in `sends_zc_fixed`).
    external_sends_zc_fixed,
    /// Sends from an external region by `SendZc` without a fixed buffer
    /// (not registered: see `external_register_failures`; also counted in
    /// `sends_zc_heap`). The kernel pins the pages per send.
    external_sends_zc,
    /// Gather sends (engine headers + external bytes) by `SendMsgZc`
    /// (also counted in `sends_gather_zc`).
    external_sends_gather_zc,
    /// Sends from an external region by `WriteFixed` (zero copy off; also
    /// in `sends_write_fixed`): the kernel copies, user space does not.
    external_sends_write_fixed,
    /// Sends from an unregistered external region by `Send` (zero copy
    /// off; also in `sends_plain`), or by `sendmsg` on the syscall
    /// fallback: the kernel copies, user space does not.
    external_sends_plain,
    /// Gather sends with external bytes by `SendMsg` / `sendmsg` (zero
    /// copy off; also in `sends_gather`).
    external_sends_gather,
    /// External regions registered as fixed buffers now (a gauge).
    external_regions_fixed,
    /// External regions that could not be registered as fixed buffers (no
    /// sparse table, table full, or the kernel refused: RLIMIT_MEMLOCK,
    /// memory it cannot pin); they are sent from by the non-fixed paths.
    external_register_failures,
    /// Zero-copy sends that failed (the kernel refused what a copy would
    /// take, e.g. `EMSGSIZE` for a datagram over the skb fragment limit)
    /// and were re-sent copying instead of being dropped.
    zc_fallback_copies,
    /// Gather frames zero copy would have sent but that span more pages
    /// than a zero-copy datagram may (MAX_SKB_FRAGS): sent copying (also in
    /// `sends_gather`), not handed to a `SendMsgZc` bound to fail.
    zc_over_frags,
    /// GSO sends: one `SendMsg` / `SendMsgZc` with a `UDP_SEGMENT` cmsg
    /// carrying a run of frames to one peer (`crate::gso`); not counted in
    /// the `sends_*` above, nor (frames of external regions among them) in
    /// the `external_sends_*`.
    gso_sends,
    /// Of those, by `SendMsgZc`.
    gso_sends_zc,
    /// Datagrams (frames) sent by GSO sends.
    gso_datagrams,
    /// GSO sends that failed and were sent again one frame per send
    /// (copying); when the path cannot take GSO, that peer link sends no
    /// more GSO.
    gso_fallbacks,
    /// Receives the kernel coalesced (UDP GRO): more than one datagram in
    /// one receive, each then handled as if received alone (counted in
    /// `frames_received` and the rest one by one).
    gro_receives,
    /// Datagrams those coalesced receives carried.
    gro_segments,
    /// Zero-copy notifications reaped.
    zc_notifications,
    /// Of those, how many said the kernel copied after all (loopback does).
    zc_kernel_copied,
    /// Frame bytes copied in user space by the transport.
    bytes_copied,
    /// Received frames copied to the heap because few receive buffers were
    /// left (the buffer went straight back to the kernel).
    rx_copied_frames,
    /// Receives that found no provided buffer (ENOBUFS).
    rx_buffer_exhausted,
    /// Multishot receives armed again after they ended.
    recv_rearms,
    /// Receive errors other than ENOBUFS (ECONNREFUSED from a peer not yet up, ...).
    recv_errors,
    /// Datagrams from an address outside the peer list (dropped).
    rx_unknown_source,
    /// Datagrams larger than a receive buffer (dropped).
    rx_truncated,
    /// Datagrams sealed: frames (once per frame, whatever the number of
    /// peers) and link heartbeats.
    frames_sealed,
    /// Bytes written by sealing (the frames plus their trailers).
    bytes_sealed,
    /// Frames not sent: sealing failed (no new epoch could be persisted).
    seal_errors,
    /// Datagrams opened (tag checked, decrypted).
    frames_opened,
    /// Dropped: shorter than a seal trailer.
    open_short,
    /// Dropped: sealed with another key, cluster name or crypto mode.
    open_foreign_key,
    /// Dropped: the nonce names another node than the source address.
    open_source_mismatch,
    /// Dropped: sealed for another node (a unicast frame re-sent elsewhere).
    open_misdirected,
    /// Dropped: authentication failed (forged or altered).
    open_bad_tag,
    /// Dropped: a replay (seen before, older than the window, old epoch).
    open_replay,
    /// Frames looped back to this node in user space.
    loopback_frames,
    /// Transmits to a node id with no peer entry (dropped).
    tx_unknown_dest,
    /// Timeouts that fired and reached the host.
    timeouts_fired,
    /// Wakes that reached the host.
    wakes,
    /// Completions that matched nothing (should stay 0).
    bad_completions,
    /// Engine: messages retransmitted (mirrored from the host).
    retransmissions,
    /// Engine: token visits (mirrored from the host).
    token_rotations,
    /// Engine: ring changes (mirrored from the host).
    ring_changes,
    /// Link heartbeats (pings and pongs) sent, never counted as frames
    /// of the engine (`crate::links`).
    link_heartbeats_sent,
    /// Link heartbeats received and taken (never handed to the host).
    link_heartbeats_received,
    /// Link heartbeats dropped: malformed, of another cluster, or naming
    /// another sender, receiver or link than the one they came from.
    link_heartbeats_bad,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }

    /// A frame of `len` bytes for this node handed back to it as received
    /// without a syscall: by the loop, or by a sender's thread carrying a
    /// lone node's token (cpg-std's `handles/solo.rs`).
    pub fn count_looped_back(&self, len: usize) {
        Counters::inc(&self.loopback_frames);
        Counters::inc(&self.frames_received);
        Counters::add(&self.bytes_received, len as u64);
    }
}

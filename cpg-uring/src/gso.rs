//! UDP generic segmentation offload on send: which frames of one dispatch
//! batch go out as one `sendmsg` with a `UDP_SEGMENT` cmsg, and that cmsg.
//!
//! At a small MTU the engine splits a large message into many frames of
//! one size (and packs small messages into frames that are often of one
//! size too), each a datagram to every peer. One `sendmsg` carrying a run
//! of them with `gso_size` = the frame size lets the kernel build the
//! datagrams itself: one trip through the socket layer and the routing
//! instead of one per frame.
//!
//! # The batching rule ([`Batcher`])
//!
//! Frames queue per key (the driver's key is (peer, link): one connected
//! socket). A frame joins its key's run when the run is open, holds fewer
//! than [`GSO_MAX_SEGMENTS`] frames, stays within [`GSO_MAX_BYTES`] with
//! it, and the frame is no longer than the run's first (its `gso_size`);
//! a shorter frame is the run's last (the kernel splits the payload into
//! `gso_size` pieces, only the last may be shorter). A frame that cannot
//! join its run submits every queued run first, in the order they were
//! started, then starts a new run: so no frame to any socket is submitted
//! after a frame the engine produced later for the same socket, and a
//! frame that breaks a run (the token after a burst of data, say) leaves
//! after every frame queued before it, whatever its peer. Frames to
//! different keys do not break each other's runs: a multicast is one frame
//! per peer, interleaved.
//!
//! With sealing, every frame is sealed on its own (its own buffer), so a
//! run is a list of buffers whose lengths are the segment boundaries: each
//! datagram the kernel cuts is exactly one sealed frame.
//!
//! # What it must not do
//! Any syscall: the ring submits the runs ([`crate::ring`]).
//!
//! # References
//! `udp(7)` (`UDP_SEGMENT`); Linux `net/ipv4/udp.c` (`udp_send_skb`:
//! at most `UDP_MAX_SEGMENTS` = 64 segments, `gso_size` within the path
//! MTU, the device must offload checksums, else `EIO`).

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`
/// on every kernel with UDP GSO; newer kernels allow more).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Most UDP payload bytes one GSO send may carry: the IPv4 datagram limit
/// (65,535 − 20 − 8), which also keeps an IPv6 one within its own.
pub(crate) const GSO_MAX_BYTES: usize = 65_507;

/// One run of frames to one key, in the order they were queued.
#[derive(Debug)]
pub(crate) struct Run<K, S> {
    /// Whose run it is.
    pub key: K,
    /// The segment size: the first frame's length.
    pub seg: usize,
    /// Bytes of every frame in the run.
    pub bytes: usize,
    /// The frames (each exactly `seg` bytes but possibly the last).
    pub frames: Vec<S>,
    /// A shorter frame ended it.
    closed: bool,
}

impl<K, S> Run<K, S> {
    fn new(key: K, len: usize, src: S) -> Run<K, S> {
        Run {
            key,
            seg: len,
            bytes: len,
            frames: vec![src],
            closed: false,
        }
    }

    /// Whether a frame of `len` bytes may join.
    fn fits(&self, len: usize) -> bool {
        !self.closed
            && len > 0
            && len <= self.seg
            && self.frames.len() < GSO_MAX_SEGMENTS
            && self.bytes + len <= GSO_MAX_BYTES
    }

    fn push(&mut self, len: usize, src: S) {
        self.closed = len < self.seg;
        self.bytes += len;
        self.frames.push(src);
    }
}

/// The runs of one dispatch batch (see the module docs).
#[derive(Debug)]
pub(crate) struct Batcher<K, S> {
    runs: Vec<Run<K, S>>,
}

impl<K, S> Default for Batcher<K, S> {
    fn default() -> Self {
        Batcher { runs: Vec::new() }
    }
}

impl<K: PartialEq, S> Batcher<K, S> {
    /// Queue frame `src` of `len` bytes for `key`. When it cannot join
    /// `key`'s run, every run queued so far is moved to `out` (to be
    /// submitted in that order) before it starts a new one.
    pub(crate) fn push(&mut self, key: K, len: usize, src: S, out: &mut Vec<Run<K, S>>) {
        if let Some(r) = self.runs.iter_mut().find(|r| r.key == key) {
            if r.fits(len) {
                r.push(len, src);
                return;
            }
            self.drain(out);
        }
        self.runs.push(Run::new(key, len, src));
    }

    /// Move every queued run to `out`, in the order they were started.
    pub(crate) fn drain(&mut self, out: &mut Vec<Run<K, S>>) {
        out.append(&mut self.runs);
    }

    /// Whether no run is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// The control message of a GSO send: one `cmsghdr` (`SOL_UDP`,
/// `UDP_SEGMENT`) and the `u16` segment size, laid out as `CMSG_SPACE(2)`
/// bytes (the layout is checked against libc's macros in the tests).
#[repr(C)]
pub(crate) struct SegmentCmsg {
    hdr: libc::cmsghdr,
    /// The `u16` in native byte order, then padding to `CMSG_SPACE`.
    data: [u8; 8],
}

impl SegmentCmsg {
    /// The cmsg for segments of `gso_size` bytes.
    #[allow(unsafe_code)]
    pub(crate) fn new(gso_size: u16) -> SegmentCmsg {
        // SAFETY: an all-zero `cmsghdr` is a valid value (plain integers).
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        hdr.cmsg_len = Self::cmsg_len() as _;
        let mut data = [0u8; 8];
        data[..2].copy_from_slice(&gso_size.to_ne_bytes());
        SegmentCmsg { hdr, data }
    }

    /// `CMSG_LEN(2)`: the header and the `u16`.
    const fn cmsg_len() -> usize {
        std::mem::offset_of!(SegmentCmsg, data) + 2
    }

    /// `CMSG_SPACE(2)`: what `msg_controllen` says.
    pub(crate) const fn space() -> usize {
        std::mem::size_of::<SegmentCmsg>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Push `(key, len)` frames (each frame's id is its position); the
    /// runs as submitted, each as (key, seg, frame ids), the queued ones
    /// drained at the end.
    fn plan(frames: &[(u8, usize)]) -> Vec<(u8, usize, Vec<usize>)> {
        let mut b = Batcher::default();
        let mut out = Vec::new();
        for (id, &(key, len)) in frames.iter().enumerate() {
            b.push(key, len, id, &mut out);
        }
        b.drain(&mut out);
        assert!(b.is_empty());
        out.into_iter().map(|r| (r.key, r.seg, r.frames)).collect()
    }

    #[test]
    fn same_size_frames_to_one_key_make_one_run() {
        let f = vec![(1, 1472); 10];
        assert_eq!(plan(&f), [(1, 1472, (0..10).collect::<Vec<_>>())]);
    }

    #[test]
    fn a_shorter_last_frame_joins_and_ends_the_run() {
        let f = [(1, 1472), (1, 1472), (1, 300), (1, 1472), (1, 1472)];
        assert_eq!(plan(&f), [(1, 1472, vec![0, 1, 2]), (1, 1472, vec![3, 4])]);
        // a shorter first frame sets the size: a longer one cannot join
        let f = [(1, 300), (1, 1472)];
        assert_eq!(plan(&f), [(1, 300, vec![0]), (1, 1472, vec![1])]);
    }

    #[test]
    fn interleaved_peers_keep_their_runs_and_a_break_flushes_all() {
        // a multicast of 3 frames to peers 2 and 3, then the token to 2
        let f = [
            (2, 1000),
            (3, 1000),
            (2, 1000),
            (3, 1000),
            (2, 1000),
            (3, 1000),
            (2, 60),
        ];
        assert_eq!(
            plan(&f),
            [(2, 1000, vec![0, 2, 4, 6]), (3, 1000, vec![1, 3, 5])],
            "a shorter token closes peer 2's run"
        );
        // a longer frame to 2 breaks its run: 3's run is submitted before it
        let f = [(2, 1000), (3, 1000), (2, 1000), (2, 1400), (3, 1000)];
        assert_eq!(
            plan(&f),
            [
                (2, 1000, vec![0, 2]),
                (3, 1000, vec![1]),
                (2, 1400, vec![3]),
                (3, 1000, vec![4])
            ]
        );
    }

    #[test]
    fn links_are_keys_of_their_own() {
        // (peer, link) keys: peer 2 on links 0 and 1 round-robin
        let mut b = Batcher::default();
        let mut out = Vec::new();
        for i in 0..4usize {
            b.push((2u8, (i % 2) as u8), 500, i, &mut out);
        }
        b.drain(&mut out);
        let runs: Vec<_> = out.into_iter().map(|r| (r.key, r.frames)).collect();
        assert_eq!(runs, [((2, 0), vec![0, 2]), ((2, 1), vec![1, 3])]);
    }

    #[test]
    fn at_most_64_segments() {
        let runs = plan(&vec![(1, 100); 130]);
        let sizes: Vec<_> = runs.iter().map(|r| r.2.len()).collect();
        assert_eq!(sizes, [64, 64, 2]);
        // in order, none lost
        let ids: Vec<_> = runs.into_iter().flat_map(|r| r.2).collect();
        assert_eq!(ids, (0..130).collect::<Vec<_>>());
    }

    #[test]
    fn at_most_65507_bytes() {
        // 44 × 1472 = 64,768; a 45th would pass 65,507
        let runs = plan(&vec![(1, 1472); 50]);
        assert_eq!(runs.iter().map(|r| r.2.len()).collect::<Vec<_>>(), [44, 6]);
        // exactly at the limit still fits: 7 × 9,000 + 2,507
        let mut f = vec![(1, 9_000); 7];
        f.push((1, 2_507));
        assert_eq!(plan(&f).len(), 1);
        f.pop();
        f.push((1, 2_508));
        assert_eq!(plan(&f).len(), 2);
        // a frame of the maximum size is a run alone
        assert_eq!(plan(&[(1, 65_507), (1, 65_507)]).len(), 2);
    }

    #[test]
    #[allow(unsafe_code)]
    fn cmsg_layout_matches_libc() {
        // SAFETY: CMSG_LEN / CMSG_SPACE are pure arithmetic.
        let (len, space) = unsafe { (libc::CMSG_LEN(2), libc::CMSG_SPACE(2)) };
        assert_eq!(SegmentCmsg::cmsg_len(), len as usize);
        assert_eq!(SegmentCmsg::space(), space as usize);
        let c = SegmentCmsg::new(1472);
        assert_eq!(c.hdr.cmsg_len, len as _);
        assert_eq!(u16::from_ne_bytes([c.data[0], c.data[1]]), 1472);
    }
}

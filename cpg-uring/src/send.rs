//! Sends in flight: which bytes each submitted send reads, and when the
//! kernel is done with them. Pure bookkeeping (no syscalls, no unsafe), so
//! the two-step completion of `SendZc` is unit-tested without a kernel.
//!
//! # Completion rules
//!
//! - A plain send (`Send`, `WriteFixed`) completes once: its CQE carries the
//!   result, and the source is released with it.
//! - A `SendZc` completes twice: first a CQE with the result and, when the
//!   kernel may still read the buffer, the `more` flag (`IORING_CQE_F_MORE`);
//!   later a notification CQE (`IORING_CQE_F_NOTIF`). The source (for a pool
//!   slot: its InFlight send count) is released only on the notification. A
//!   first CQE without `more` (an error, say) releases at once: no
//!   notification follows.
//! - A GSO send (`SendMsg` / `SendMsgZc` with a `UDP_SEGMENT` cmsg) reads
//!   several frames ([`Sources::Gso`]) and completes as one send of its
//!   kind: every frame is kept until that send's release, and its result
//!   counts for all its datagrams.
//! - A failed zero-copy send or GSO send is offered for a copy
//!   ([`SendTable::failed`]): a zero-copy send can fail where a copying one
//!   would not, a GSO send where single datagrams would not.
//!
//! # References
//! `io_uring_enter(2)`, `IORING_OP_SEND_ZC`; `io_uring_prep_send_zc(3)`.

use io_uring::cqueue;

/// Set in a zero-copy notification's `res` (with `IORING_SEND_ZC_REPORT_USAGE`)
/// when the kernel copied the data after all (loopback, for one).
pub(crate) const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// What one send reads: one frame, or the frames of one GSO send, in
/// order (each exactly the segment size but possibly the last, which may
/// be shorter: the kernel cuts the datagrams at the segment size).
#[derive(Debug, Clone)]
pub(crate) enum Sources<S> {
    /// One frame, one datagram.
    One(S),
    /// Several frames, one datagram each, in one send.
    Gso(Vec<S>),
}

impl<S> Sources<S> {
    /// The frames, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, S> {
        match self {
            Sources::One(s) => std::slice::from_ref(s).iter(),
            Sources::Gso(frames) => frames.iter(),
        }
    }

    /// The datagrams the send makes.
    pub(crate) fn datagrams(&self) -> usize {
        match self {
            Sources::One(_) => 1,
            Sources::Gso(frames) => frames.len(),
        }
    }
}

/// One submitted send.
#[derive(Debug)]
struct Pending<S> {
    src: S,
    zc: bool,
    /// Datagrams it makes (more than one: a GSO send).
    datagrams: usize,
    /// The first CQE came with `more`: waiting for the notification.
    awaiting_notif: bool,
}

#[derive(Debug)]
struct Entry<S> {
    generation: u16,
    send: Option<Pending<S>>,
}

/// A send whose bytes the kernel no longer reads.
#[derive(Debug)]
pub(crate) struct Released<S> {
    /// What it read (drop it, or complete the pool slot).
    pub src: S,
    /// It was a `SendZc` (a pool slot then takes `on_zc_notif`).
    pub zc: bool,
    /// The notification said the kernel copied the bytes anyway.
    pub kernel_copied: bool,
}

/// What one send CQE meant.
#[derive(Debug)]
pub(crate) struct SendCqe<S> {
    /// The send's result (bytes sent or `-errno`), on its first CQE.
    pub result: Option<i32>,
    /// The send is over: its source is given back.
    pub released: Option<Released<S>>,
    /// This CQE was a zero-copy notification.
    pub notif: bool,
    /// Datagrams the send makes (its result counts for all of them).
    pub datagrams: usize,
}

/// A send whose first CQE failed, offered for a copy.
#[derive(Debug)]
pub(crate) struct Failed<'a, S> {
    /// What it read.
    pub src: &'a S,
    /// It was a zero-copy send.
    pub zc: bool,
    /// It was a GSO send (more than one datagram).
    pub gso: bool,
}

/// A CQE that matches no send in flight (a bug, or a stale `user_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendCqeError {
    /// No live send under this index and generation.
    Unknown,
    /// A notification for a send that was not waiting for one.
    UnexpectedNotif,
}

/// Sends in flight, indexed by a slab index and a generation (both packed
/// into the CQE's `user_data`). `S` is what a send keeps alive.
#[derive(Debug)]
pub(crate) struct SendTable<S> {
    entries: Vec<Entry<S>>,
    free: Vec<u32>,
    live: usize,
}

impl<S> Default for SendTable<S> {
    fn default() -> Self {
        SendTable {
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<S> SendTable<S> {
    /// Record a send of `datagrams` datagrams (1, or a GSO send's
    /// segments) about to be submitted; returns `(index, generation)`.
    pub(crate) fn insert(&mut self, src: S, zc: bool, datagrams: usize) -> (u32, u16) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    send: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let e = &mut self.entries[idx as usize];
        e.send = Some(Pending {
            src,
            zc,
            datagrams,
            awaiting_notif: false,
        });
        self.live += 1;
        (idx, e.generation)
    }

    /// Sends not yet released.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    fn release(&mut self, idx: u32) -> Option<Pending<S>> {
        let e = self.entries.get_mut(idx as usize)?;
        let p = e.send.take()?;
        e.generation = e.generation.wrapping_add(1);
        self.free.push(idx);
        self.live -= 1;
        Some(p)
    }

    /// Send `(idx, generation)` if this CQE is the failed result of a
    /// zero-copy or GSO send: the caller may send a copy of it, one
    /// datagram per send (a zero-copy send can fail where a copying one
    /// would not, e.g. `EMSGSIZE` when the datagram's pages exceed the
    /// skb's fragment limit; a GSO send where single datagrams would not,
    /// e.g. `EIO` from a device that cannot checksum for it).
    pub(crate) fn failed(
        &self,
        idx: u32,
        generation: u16,
        res: i32,
        flags: u32,
    ) -> Option<Failed<'_, S>> {
        let e = self.entries.get(idx as usize)?;
        let p = e.send.as_ref()?;
        let failed = res < 0 && !cqueue::notif(flags) && !p.awaiting_notif;
        let gso = p.datagrams > 1;
        (e.generation == generation && (p.zc || gso) && failed).then_some(Failed {
            src: &p.src,
            zc: p.zc,
            gso,
        })
    }

    /// A CQE with `user_data` naming send `(idx, generation)`.
    pub(crate) fn on_cqe(
        &mut self,
        idx: u32,
        generation: u16,
        res: i32,
        flags: u32,
    ) -> Result<SendCqe<S>, SendCqeError> {
        let e = self
            .entries
            .get_mut(idx as usize)
            .ok_or(SendCqeError::Unknown)?;
        if e.generation != generation {
            return Err(SendCqeError::Unknown);
        }
        let p = e.send.as_mut().ok_or(SendCqeError::Unknown)?;
        if cqueue::notif(flags) {
            if !(p.zc && p.awaiting_notif) {
                return Err(SendCqeError::UnexpectedNotif);
            }
            let p = self.release(idx).ok_or(SendCqeError::Unknown)?;
            let kernel_copied = (res as u32) & NOTIF_USAGE_ZC_COPIED != 0;
            return Ok(SendCqe {
                result: None,
                released: Some(Released {
                    src: p.src,
                    zc: true,
                    kernel_copied,
                }),
                notif: true,
                datagrams: p.datagrams,
            });
        }
        if p.awaiting_notif {
            // A second result CQE for one send: refuse rather than guess.
            return Err(SendCqeError::UnexpectedNotif);
        }
        if p.zc && cqueue::more(flags) {
            p.awaiting_notif = true;
            return Ok(SendCqe {
                result: Some(res),
                released: None,
                notif: false,
                datagrams: p.datagrams,
            });
        }
        let p = self.release(idx).ok_or(SendCqeError::Unknown)?;
        Ok(SendCqe {
            result: Some(res),
            released: Some(Released {
                src: p.src,
                zc: p.zc,
                kernel_copied: false,
            }),
            notif: false,
            datagrams: p.datagrams,
        })
    }
}

/// Log the first zero-copy send that failed and went copying, once per
/// process: it repeats for every frame of the same shape.
pub(crate) fn zc_fallback_warn(errno: i32) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::warn!(
            target: "cpg::transport",
            "a zero-copy send failed ({}); such frames are sent copying",
            std::io::Error::from_raw_os_error(errno)
        );
    });
}

/// The kernel's default MAX_SKB_FRAGS.
const MAX_SKB_FRAGS_DEFAULT: usize = 17;

/// How many pages a zero-copy datagram may span: `net.core.max_skb_frags`
/// (at most the kernel's MAX_SKB_FRAGS, and by default equal to it), or 17.
pub(crate) fn max_skb_frags() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/max_skb_frags")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(MAX_SKB_FRAGS_DEFAULT)
}

/// The skb frags a zero-copy send of these segments takes: one per page
/// each segment touches (the kernel pins and attaches user pages one by
/// one).
pub(crate) fn zc_frags(segments: &[(usize, usize)]) -> usize {
    const PAGE: usize = 4096;
    segments
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(addr, len)| (addr % PAGE + len).div_ceil(PAGE))
        .sum()
}

#[cfg(test)]
mod tests {
    use cpg_core::pool::{ClassSpec, Outcome, PoolConfig, SlotId, SlotState, VecPool};

    use super::*;

    const MORE: u32 = 1 << 1;
    const NOTIF: u32 = 1 << 3;

    #[test]
    fn flag_constants_match_io_uring() {
        assert!(cqueue::more(MORE) && !cqueue::notif(MORE));
        assert!(cqueue::notif(NOTIF) && !cqueue::more(NOTIF));
    }

    fn pool() -> VecPool {
        VecPool::new_vec(&PoolConfig::new(16, &[ClassSpec::new(256, 4)]).unwrap()).unwrap()
    }

    /// A queued slot of a fresh pool, with `sends` SendZc sends of it in
    /// flight in a fresh table: the pool, the slot, the table and each
    /// send's key.
    fn zc_sends(sends: usize) -> (VecPool, SlotId, SendTable<SlotId>, Vec<(u32, u16)>) {
        let mut p = pool();
        let id = p.alloc(10).unwrap();
        p.enqueue(id).unwrap();
        let mut t = SendTable::default();
        let mut keys = Vec::new();
        for _ in 0..sends {
            p.begin_send(id).unwrap();
            keys.push(t.insert(id, true, 1));
        }
        (p, id, t, keys)
    }

    /// Apply a release to the pool as the driver does.
    fn apply(p: &mut VecPool, r: &Released<SlotId>) -> Outcome {
        if r.zc {
            p.on_zc_notif(r.src).unwrap()
        } else {
            p.on_send_complete(r.src).unwrap()
        }
    }

    #[test]
    fn send_zc_slot_leaves_in_flight_only_on_notif() {
        let (mut p, id, mut t, keys) = zc_sends(1);
        let (i, g) = keys[0];

        // First CQE: 26 bytes sent, more to come.
        let c = t.on_cqe(i, g, 26, MORE).unwrap();
        assert_eq!(c.result, Some(26));
        assert!(c.released.is_none());
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        // The engine says stable before the notification: still held.
        assert_eq!(p.mark_stable(id), Ok(Outcome::Held));
        assert_eq!(t.live(), 1);

        // Notification: now the slot may go.
        let c = t.on_cqe(i, g, 0, NOTIF).unwrap();
        assert!(c.notif && c.result.is_none());
        let r = c.released.unwrap();
        assert!(r.zc && !r.kernel_copied);
        assert_eq!(apply(&mut p, &r), Outcome::Freed);
        assert_eq!(t.live(), 0);
        // A late duplicate is refused, not applied.
        assert_eq!(t.on_cqe(i, g, 0, NOTIF).err(), Some(SendCqeError::Unknown));
    }

    #[test]
    fn stable_after_notif_frees_on_mark_stable() {
        let (mut p, id, mut t, keys) = zc_sends(1);
        let (i, g) = keys[0];
        t.on_cqe(i, g, 26, MORE).unwrap();
        let r = t
            .on_cqe(i, g, NOTIF_USAGE_ZC_COPIED as i32, NOTIF)
            .unwrap()
            .released
            .unwrap();
        assert!(r.kernel_copied);
        assert_eq!(apply(&mut p, &r), Outcome::Held);
        assert_eq!(p.mark_stable(id), Ok(Outcome::Freed));
    }

    #[test]
    fn zc_error_without_more_releases_at_once() {
        let mut t = SendTable::default();
        let (i, g) = t.insert("x", true, 1);
        let c = t.on_cqe(i, g, -111, 0).unwrap();
        assert_eq!(c.result, Some(-111));
        assert!(c.released.unwrap().zc);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn a_failed_zc_result_offers_its_source_for_a_copy() {
        const EMSGSIZE: i32 = 90;
        let mut t = SendTable::default();
        let (i, g) = t.insert("zc", true, 1);
        let (pi, pg) = t.insert("plain", false, 1);
        let offered = |t: &SendTable<&'static str>, i, g, res, flags| {
            t.failed(i, g, res, flags).map(|f| (*f.src, f.gso))
        };
        // Only the failed result CQE of a zero-copy send, under its generation.
        assert_eq!(offered(&t, i, g, -EMSGSIZE, MORE), Some(("zc", false)));
        assert_eq!(offered(&t, i, g.wrapping_add(1), -EMSGSIZE, MORE), None);
        assert_eq!(offered(&t, i, g, 65_507, MORE), None);
        assert_eq!(offered(&t, pi, pg, -EMSGSIZE, 0), None);
        // The failed send still awaits its notification: no second offer.
        t.on_cqe(i, g, -EMSGSIZE, MORE).unwrap();
        assert_eq!(offered(&t, i, g, 0, NOTIF), None);
        assert!(t.on_cqe(i, g, 0, NOTIF).unwrap().released.is_some());
    }

    #[test]
    fn a_failed_gso_send_is_offered_whether_zero_copy_or_not() {
        const EIO: i32 = 5;
        let mut t = SendTable::default();
        let (i, g) = t.insert("gso", false, 3);
        let (j, h) = t.insert("gso-zc", true, 3);
        let f = t.failed(i, g, -EIO, 0).unwrap();
        assert!(f.gso && !f.zc);
        let f = t.failed(j, h, -EIO, MORE).unwrap();
        assert!(f.gso && f.zc);
        // the zero-copy one still awaits its notification
        assert!(t.on_cqe(j, h, -EIO, MORE).unwrap().released.is_none());
        // a GSO send that went is not offered
        assert!(t.failed(i, g, 3 * 1472, 0).is_none());
        let c = t.on_cqe(i, g, -EIO, 0).unwrap();
        assert_eq!((c.result, c.datagrams), (Some(-EIO), 3));
        assert!(c.released.is_some());
    }

    /// A zero-copy GSO send of three pool slots: every slot stays in flight
    /// until the one notification, which releases them all.
    #[test]
    fn gso_zc_send_holds_every_slot_until_its_notification() {
        let mut p = pool();
        let ids: Vec<SlotId> = (0..3)
            .map(|_| {
                let id = p.alloc(10).unwrap();
                p.enqueue(id).unwrap();
                p.begin_send(id).unwrap();
                id
            })
            .collect();
        let mut t: SendTable<Sources<SlotId>> = SendTable::default();
        let src = Sources::Gso(ids.clone());
        assert_eq!(src.datagrams(), 3);
        let (i, g) = t.insert(src, true, 3);
        let c = t.on_cqe(i, g, 30, MORE).unwrap();
        assert_eq!((c.result, c.datagrams), (Some(30), 3));
        assert!(c.released.is_none());
        for &id in &ids {
            assert_eq!(p.mark_stable(id), Ok(Outcome::Held));
            assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        }
        let r = t.on_cqe(i, g, 0, NOTIF).unwrap().released.unwrap();
        assert!(r.zc);
        let freed: Vec<_> = r.src.iter().map(|&id| p.on_zc_notif(id).unwrap()).collect();
        assert_eq!(freed, [Outcome::Freed; 3]);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn one_source_is_one_datagram() {
        let s = Sources::One(7);
        assert_eq!(
            (s.datagrams(), s.iter().copied().collect::<Vec<_>>()),
            (1, vec![7])
        );
        let g = Sources::Gso(vec![1, 2]);
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn zc_frags_counts_the_pages_each_segment_touches() {
        assert_eq!(zc_frags(&[(0, 0)]), 0);
        assert_eq!(zc_frags(&[(0, 4096)]), 1);
        assert_eq!(zc_frags(&[(4095, 2)]), 2);
        // 65,507 bytes alone fit in 17 pages wherever they start ...
        assert_eq!(zc_frags(&[(0, 65_507)]), 16);
        assert_eq!(zc_frags(&[(4095, 65_507)]), 17);
        // ... behind a header page, an unaligned piece does not.
        assert_eq!(zc_frags(&[(8192, 100), (0, 65_407)]), 17);
        assert_eq!(zc_frags(&[(8192, 100), (1000, 65_407)]), 18);
    }

    #[test]
    fn plain_send_releases_on_first_cqe_and_refuses_notif() {
        let mut t = SendTable::default();
        let (i, g) = t.insert("x", false, 1);
        assert_eq!(
            t.on_cqe(i, g, 0, NOTIF).err(),
            Some(SendCqeError::UnexpectedNotif)
        );
        // MORE on a plain send is meaningless: it still completes.
        let c = t.on_cqe(i, g, 1, MORE).unwrap();
        assert!(!c.released.unwrap().zc);
    }

    #[test]
    fn zc_with_two_retransmissions_counts_each_notif() {
        let (mut p, id, mut t, keys) = zc_sends(2);
        for &(i, g) in &keys {
            assert!(t.on_cqe(i, g, 1, MORE).unwrap().released.is_none());
        }
        assert_eq!(p.mark_stable(id), Ok(Outcome::Held));
        // each notification releases its own send
        let notif = |t: &mut SendTable<SlotId>, (i, g): (u32, u16)| {
            t.on_cqe(i, g, 0, NOTIF).unwrap().released.unwrap()
        };
        let r = notif(&mut t, keys[1]);
        assert_eq!(apply(&mut p, &r), Outcome::Held);
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        let r = notif(&mut t, keys[0]);
        assert_eq!(apply(&mut p, &r), Outcome::Freed);
    }

    #[test]
    fn slab_reuses_indices_with_new_generation() {
        let mut t = SendTable::default();
        let (i, g) = t.insert("x", false, 1);
        t.on_cqe(i, g, 1, 0).unwrap();
        let (i2, g2) = t.insert("y", false, 1);
        assert_eq!(i2, i);
        assert_ne!(g2, g);
        assert_eq!(t.on_cqe(i, g, 1, 0).err(), Some(SendCqeError::Unknown));
        assert_eq!(t.live(), 1);
    }
}

//! Zero-copy buffers over a connection (`docs/spec/ipc.md` §9): a slot of
//! the connection's zc region, which the daemon registered with io_uring,
//! so the kernel sends the payload from where the application wrote it.
//!
//! `zcb_alloc` takes a slot the daemon gave (`ZC_ALLOC`) and hands out
//! its bytes in the shared mapping as the buffer: one allocated ahead when
//! there is one (a few `ZC_ALLOC`s are kept in flight with nobody waiting,
//! so a stream of zero-copy sends costs no round trip per buffer), else
//! asked for and waited for; `zcb_mcast_joined` names the
//! slot in `MCAST_ZC` (the slot passes to the daemon, the buffer is
//! consumed); `zcb_free`, or dropping the buffer, gives it back
//! (`ZC_FREE`). A buffer below the copy threshold
//! (`ZC_COPY_THRESHOLD_DEFAULT`, a node's default `zc_copy_threshold`:
//! below it cpgd copies the message into a packed frame anyway) lives on the heap and goes as an
//! `MCAST`, without a round trip; so does every buffer when the daemon
//! offers no zc region.
//!
//! This module holds the crate's only `unsafe`: a slot's bytes as a slice.
//! What makes it sound is checked here when the daemon hands a slot out: it
//! lies inside the zc region, and it overlaps no slot this handle holds.
#![allow(unsafe_code)]

use std::any::Any;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use cpg_core::ipc::{Message, Op, Request};
// the node's default (cpgd copies a zero-copy message below it anyway)
use crate::config::ZC_COPY_THRESHOLD_DEFAULT;

/// Zero-copy slots a handle keeps allocated ahead (and in flight to be).
const ZC_PREFETCH: usize = 4;
use cpg_core::pool::SlotId;
use cpg_core::{CsError, Guarantee};
use cpg_ipc::SharedMem;

use super::conn::{Answer, ClientNode, Fds, Phase, State};
use crate::handles::zc::{SmallZc, ZcBuf, ZcSendError, ZcStorage};

/// A slot of the connection's zc region, held by this handle.
pub(super) struct ZcSlot {
    /// Keeps the mapping alive as long as the buffer (after finalize too):
    /// held, never read.
    _mem: Arc<SharedMem>,
    /// The first payload byte, `len` bytes inside `mem`.
    ptr: NonNull<u8>,
    /// The bytes asked for (at most the slot's capacity).
    len: usize,
    slot: SlotId,
    /// Offset of the slot in the zc region (its key among the live slots).
    offset: u64,
    /// The connection, to give the slot back when dropped.
    node: Weak<ClientNode>,
    /// The slot went to the daemon (`MCAST_ZC`, `ZC_FREE`): nothing to give
    /// back.
    passed: bool,
}

// SAFETY: `ptr` is an address inside `_mem`, which this value keeps mapped;
// the bytes it names are this value's alone (`zc_alloc` checks no other
// live slot overlaps them), so moving the value to another thread moves
// its only access path with it.
unsafe impl Send for ZcSlot {}
// SAFETY: shared references only read through `bytes()` (`&self`), and
// writing needs `&mut self`: the usual borrow rules, over bytes no other
// value in this process names.
unsafe impl Sync for ZcSlot {}

impl ZcStorage for ZcSlot {
    fn bytes(&self) -> &[u8] {
        // Why this is sound: `ptr..ptr+len` lies in the mapping `self._mem` keeps alive
        // (checked by `SharedMem::range_ptr` at alloc). No other slice in
        // this process covers these bytes: `zc_alloc` refuses a slot that
        // overlaps a live one, and the rings lie outside the zc region
        // (`ConnLayout`). The daemon neither reads nor writes an Owned slot
        // until it is named in `MCAST_ZC` or `ZC_FREE`, which consumes this
        // value; a daemon that broke that could only change byte values
        // (every `u8` is valid), as `SharedMem::shared_bytes` says.
        // SAFETY: this value's own slot, inside the live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only slice of
        // these bytes in this process for its lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Drop for ZcSlot {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        // never dropped with the connection's lock held (see `zc_mcast`)
        if let Some(node) = self.node.upgrade() {
            node.slot_dropped(self.slot, self.offset);
        }
    }
}

impl State {
    /// Give back the slots of dropped buffers (`ZC_FREE`, nobody waits)
    /// while the request ring has room; the rest stay for the next request.
    pub(super) fn flush_frees(&mut self, fds: &Fds) {
        if self.zc_frees.is_empty() || self.tx_busy || self.phase != Phase::Open {
            return;
        }
        let mut sent = false;
        while let Some(&slot) = self.zc_frees.last() {
            let mut req = Request {
                req_id: 0,
                op: Op::ZcFree { slot },
            };
            if self.fits_now(fds, req.body_len()) != Ok(true) {
                break;
            }
            req.req_id = self.alloc_id();
            if self.write(fds, &req).is_err() {
                break;
            }
            self.detached.insert(
                req.req_id,
                super::conn::Pending {
                    kind: cpg_core::ipc::RequestKind::ZcFree,
                    group: None,
                },
            );
            self.zc_frees.pop();
            sent = true;
        }
        if sent {
            self.publish(fds);
        }
    }

    /// The smallest slot allocated ahead that holds `size` bytes: its
    /// index in the stash.
    fn stash_fitting(&self, size: usize) -> Option<usize> {
        self.zc_stash
            .iter()
            .enumerate()
            .filter(|(_, s)| s.2 as usize >= size)
            .min_by_key(|(_, s)| s.2)
            .map(|(i, _)| i)
    }

    /// Whether `start..end` of the zc region overlaps a live slot.
    fn zc_overlaps(&self, start: u64, end: u64) -> bool {
        // the last slot starting before `end` is the only candidate: live
        // slots do not overlap each other
        self.zc_live
            .range((Bound::Unbounded, Bound::Excluded(end)))
            .next_back()
            .is_some_and(|(_, &e)| e > start)
    }
}

impl ClientNode {
    /// `zcb_alloc`.
    pub(super) fn zc_alloc(&self, h: u64, size: usize) -> Result<ZcBuf, CsError> {
        self.lock().check(self.handle, h, false)?;
        if size < ZC_COPY_THRESHOLD_DEFAULT || self.zc_region.1 == 0 {
            // a heap buffer is sent as an MCAST: its bound is the largest
            // message
            if size > self.welcome.message_max as usize {
                return Err(CsError::TooBig);
            }
            return Ok(ZcBuf {
                storage: Box::new(SmallZc(vec![0u8; size])),
                node: self.key(),
            });
        }
        // A slot may be larger than the largest message: the daemon answers
        // TOO_BIG above its largest slot class only (docs/spec/ipc.md §9), as
        // an embedded node does above its largest pool slot, and a send of
        // more than the largest message is TOO_BIG at `zcb_mcast_joined`
        // (cpg-api §0). Refusing here above the largest message made
        // `zcb_alloc` answer differently on the two backends.
        let len = u32::try_from(size).map_err(|_| CsError::TooBig)?;
        let stashed = self.take_stashed(size);
        let given = match stashed {
            Some(s) => s,
            None => match self.request(h, Op::ZcAlloc { len })? {
                Answer::ZcAlloc {
                    slot,
                    offset,
                    capacity,
                } => (slot, offset, capacity),
                _ => return Err(CsError::Library),
            },
        };
        self.slot_buf(size, given)
    }

    /// A slot allocated ahead that holds `size` bytes for a copying send
    /// (`client::send`), without a request of its own: one stashed, or
    /// one asked for ahead (now, if none is on its way) once its answer
    /// comes. `None` when the daemon has no slot, or when it may not read
    /// this connection's requests until the application dispatches: it
    /// stops at a delivery that does not fit the delivery ring, which
    /// holds what was delivered until it is dispatched, so a send waiting
    /// with more than half of that ring held (from a deliver callback, or
    /// a sender that does not dispatch) could wait for good. The message
    /// then goes through the ring, whose sends never wait.
    pub(super) fn stashed_now(&self, size: usize) -> Option<(SlotId, u64, u32)> {
        let len = u32::try_from(size).unwrap_or(u32::MAX);
        let mut g = self.lock();
        if g.gate().is_some() {
            return None;
        }
        if g.stash_fitting(size).is_none() && g.zc_prefetching == 0 {
            self.prefetch(&mut g, len);
        }
        let (mut g, r) = self.wait(g, |s| {
            if let Some(i) = s.stash_fitting(size) {
                return Some(Ok(i));
            }
            let held = s
                .conn
                .as_ref()
                .and_then(|c| c.drx.as_ref())
                .is_some_and(|d| d.unreleased() > d.ring().capacity() / 2);
            if s.zc_prefetching == 0 || held || s.gate().is_some() {
                return Some(Err(CsError::TryAgain));
            }
            None
        });
        let got = r.ok().map(|i| g.zc_stash.swap_remove(i));
        if got.is_none() {
            self.prefetch(&mut g, len);
        }
        // events read while waiting stay pollable
        self.finish(g);
        got
    }

    /// The buffer over slot `given` (id, offset, capacity) the daemon
    /// handed out, for a message of `size` bytes, once checked to lie
    /// inside the region and over no live slot.
    pub(super) fn slot_buf(
        &self,
        size: usize,
        (slot, offset, capacity): (SlotId, u64, u32),
    ) -> Result<ZcBuf, CsError> {
        let mut g = self.lock();
        // the reply's slot must be this handle's alone, inside the region:
        // the slice below depends on it
        let end = offset.checked_add(u64::from(capacity));
        let fits = end.is_some_and(|e| e <= self.zc_region.1 as u64) && capacity as usize >= size;
        let end = end.unwrap_or(u64::MAX);
        if !fits || g.zc_overlaps(offset, end) {
            g.broken(&self.fds, "a zc slot outside the region or over a live one");
            return Err(CsError::Library);
        }
        if let Some(e) = g.gate() {
            // finalized meanwhile: the daemon frees the slot with the
            // connection
            return Err(e);
        }
        let c = g.conn.as_ref().expect("an open handle has its connection");
        let mem = c.mem.clone();
        let ptr = usize::try_from(offset)
            .ok()
            .and_then(|o| mem.range_ptr(self.zc_region.0 + o, size));
        let Some(ptr) = ptr else {
            g.broken(&self.fds, "a zc slot outside the mapping");
            return Err(CsError::Library);
        };
        g.zc_live.insert(offset, end);
        Ok(ZcBuf {
            storage: Box::new(ZcSlot {
                _mem: mem,
                ptr,
                len: size,
                slot,
                offset,
                node: self.me.clone(),
                passed: false,
            }),
            node: self.key(),
        })
    }

    /// A slot allocated ahead that holds `size` bytes (the smallest such).
    /// Slots stashed that are too small for this size go back.
    fn take_stashed(&self, size: usize) -> Option<(SlotId, u64, u32)> {
        let mut g = self.lock();
        if g.gate().is_some() {
            return None;
        }
        if g.zc_stash.is_empty() && g.zc_prefetching > 0 {
            // a slot asked for ahead is on its way: wait for it rather than
            // ask again (the same round trip, one slot fewer held)
            let (g2, _) = self.wait(g, |s| {
                if !s.zc_stash.is_empty() || s.zc_prefetching == 0 {
                    Some(Ok(()))
                } else {
                    s.gate().map(Err)
                }
            });
            g = g2;
        }
        let best = g.stash_fitting(size);
        let got = best.map(|i| g.zc_stash.swap_remove(i));
        // the stash follows the sizes asked for: smaller slots go back
        let small: Vec<SlotId> = g
            .zc_stash
            .iter()
            .filter(|s| (s.2 as usize) < size)
            .map(|s| s.0)
            .collect();
        if !small.is_empty() {
            g.zc_stash.retain(|s| s.2 as usize >= size);
            g.zc_frees.extend(small);
            g.flush_frees(&self.fds);
        }
        // events read while waiting stay pollable
        self.finish(g);
        got
    }

    /// After a zero-copy send (its slot passed to the daemon): top the
    /// slots allocated ahead up to `ZC_PREFETCH`, so a stream of zero-copy
    /// sends finds its next slot without waiting for a round trip. One
    /// replacement per send would keep a single `ZC_ALLOC` in flight, and
    /// every send would wait for the one before it was answered.
    fn prefetch(&self, g: &mut State, len: u32) {
        let mut asked = false;
        while g.zc_prefetching + g.zc_stash.len() < ZC_PREFETCH
            && self.write_detached(g, Op::ZcAlloc { len })
        {
            g.zc_prefetching += 1;
            asked = true;
        }
        if asked {
            // one doorbell for all of them
            g.publish(&self.fds);
        }
    }

    /// `zcb_mcast_joined` of a slot: `MCAST_ZC { slot, offset 0, len }`.
    pub(super) fn zc_mcast(
        &self,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        let back = |error, buf| Err(ZcSendError { error, buf });
        if buf.node != self.key() || len > buf.capacity() {
            return back(CsError::InvalidParam, Some(buf));
        }
        let ZcBuf { storage, node } = buf;
        let mut slot = match storage.into_any().downcast::<ZcSlot>() {
            Ok(s) => s,
            // this connection hands out only slots and heap buffers
            Err(_) => return back(CsError::InvalidParam, None),
        };
        let mut g = self.lock();
        let checked = g
            .check(self.handle, h, false)
            .and_then(|()| self.send_checks(&mut g, len));
        let r = checked.and_then(|()| {
            let req = Request {
                req_id: g.alloc_id(),
                op: Op::McastZc {
                    guarantee,
                    reply: false,
                    slot: slot.slot,
                    offset: 0,
                    len: len as u32,
                },
            };
            // asynchronous, as mcast: no room is TRY_AGAIN, not a wait
            if g.fits_now(&self.fds, req.body_len())? {
                g.write(&self.fds, &req)
            } else {
                Err(self.full(&mut g))
            }
        });
        if let Err(e) = r {
            self.settle_if_needed(g);
            return back(
                e,
                Some(ZcBuf {
                    storage: slot,
                    node,
                }),
            );
        }
        g.publish(&self.fds);
        g.zc_live.remove(&slot.offset);
        slot.passed = true;
        let cap = u32::try_from(slot.len).unwrap_or(u32::MAX);
        self.prefetch(&mut g, cap);
        self.settle_if_needed(g);
        Ok(())
    }

    /// `zcb_free`: a slot goes back with `ZC_FREE`, answered.
    pub(super) fn zc_free(&self, h: u64, buf: ZcBuf) -> Result<(), CsError> {
        let slot = if buf.node == self.key() && !buf.storage.is_small() {
            buf.storage.into_any().downcast::<ZcSlot>().ok()
        } else {
            drop(buf);
            None
        };
        let Some(mut slot) = slot else {
            return self.lock().check(self.handle, h, true);
        };
        let mut g = self.lock();
        g.zc_live.remove(&slot.offset);
        slot.passed = true;
        g.check(self.handle, h, true)?;
        if g.gate().is_some() {
            // evicted or the daemon gone: freed with the connection
            return Ok(());
        }
        let (g, r) = self.send_and_wait(g, Op::ZcFree { slot: slot.slot }, None, State::gate);
        self.finish(g);
        match r {
            Ok(_) | Err(CsError::Library) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A buffer was dropped without being sent or freed: its slot goes
    /// back now or with the next request.
    fn slot_dropped(&self, slot: SlotId, offset: u64) {
        let mut g = self.lock();
        g.zc_live.remove(&offset);
        if g.gate().is_none() {
            g.zc_frees.push(slot);
            g.flush_frees(&self.fds);
        }
    }
}

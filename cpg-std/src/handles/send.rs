//! Sending: `mcast_joined` and `zcb_*` ([`SendOps`], the send half of
//! [`DynNode`]). A small message (or a zero-copy buffer) is staged on the
//! handle without the node lock when the handle is open for it; the rest
//! goes to the engine under the node lock, where staged messages drain
//! first (FIFO).

use std::io::IoSlice;

use cpg_core::engine::{FrameBuf, Request};
use cpg_core::group::LocalState;
use cpg_core::{CsError, Guarantee};

use super::mailbox::EVENT_OVERHEAD;
use super::ops::DynNode;
use super::staging::{Staging, SPARE_SMALL_ZC, STAGE_MSG_MAX};
use super::zc::{SmallZc, ZcBuf, ZcFrame, ZcSendError};
use super::{lock, HState, NodeState};

/// A refused zero-copy send: the code, the buffer back.
fn back(error: CsError, buf: ZcBuf) -> Result<(), ZcSendError> {
    Err(ZcSendError {
        error,
        buf: Some(buf),
    })
}

/// What the API layer calls to send: a supertrait of [`DynNode`],
/// implemented here beside the send paths (not forwarded from `ops`).
pub(crate) trait SendOps {
    /// `mcast_joined`: staged when small and the handle is open, through a
    /// driver buffer when large, else under the node lock.
    fn mcast_joined(
        &self,
        staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        iov: &[IoSlice<'_>],
    ) -> Result<(), CsError>;
    /// `zcb_alloc`: a heap buffer below `zc_copy_threshold`, else a driver
    /// buffer.
    fn zcb_alloc(&self, staging: &Staging, h: u64, size: usize) -> Result<ZcBuf, CsError>;
    /// `zcb_mcast_joined`: a small buffer is sent by copy (staged), a
    /// larger one staged as is; when the handle is not open for staging,
    /// under the node lock.
    fn zcb_mcast(
        &self,
        staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError>;
    /// `zcb_free`: the buffer goes back (dropping it would do the same; a
    /// daemon connection also waits for the daemon's answer).
    fn zcb_free(&self, h: u64, buf: ZcBuf) -> Result<(), CsError>;
}

impl<F: FrameBuf + Send + Sync + 'static> SendOps for NodeState<F> {
    fn mcast_joined(
        &self,
        staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        iov: &[IoSlice<'_>],
    ) -> Result<(), CsError> {
        let total: usize = iov.iter().map(|p| p.len()).sum();
        if total <= STAGE_MSG_MAX {
            let mut f = lock(&staging.st);
            if let Some(r) = f.stage(guarantee, iov, total) {
                drop(f);
                self.after_stage(h, r.is_ok().then_some(total));
                return r;
            }
        } else if let Some(full) = self.large_copy_refused(staging, total) {
            // A large copied message is copied once into a driver buffer
            // and sent from there like a zcb message: one copy, where the
            // engine path makes three (into the send queue, into each
            // fragment, into the reassembly). Measured, 1 member 64 KiB
            // AGREED: see the commit. No buffer free: the engine path.
            if full {
                // refused before the copy: a sender retrying TRY_AGAIN
                // would otherwise copy the whole message on every attempt
                self.after_stage(h, None);
                return Err(CsError::TryAgain);
            }
            if let Ok((mut buf, start)) = self.zc.alloc(total) {
                if let Some(bytes) = buf.unique_mut() {
                    let mut at = start;
                    for p in iov {
                        bytes[at..at + p.len()].copy_from_slice(p);
                        at += p.len();
                    }
                    let zb = ZcBuf {
                        storage: Box::new(ZcFrame {
                            buf,
                            start,
                            len: total,
                        }),
                        node: self.key(),
                    };
                    return self
                        .zcb_mcast(staging, h, guarantee, zb, total)
                        .map_err(|e| e.error);
                }
            }
        }
        let parts: Vec<&[u8]> = iov.iter().map(|s| &**s).collect();
        self.mcast(h, guarantee, &parts)
    }

    fn zcb_alloc(&self, staging: &Staging, h: u64, size: usize) -> Result<ZcBuf, CsError> {
        if size < self.zc_small {
            // Below zc_copy_threshold the message is copied into a frame
            // anyway: a heap buffer, no pool slot held, and no node lock
            // while the handle is known open.
            let spare = {
                let mut f = lock(&staging.st);
                let open = f.open;
                let spare = f.spare.pop();
                drop(f);
                if !open {
                    self.check(h, false)?;
                }
                spare
            };
            // a buffer of an earlier small send, reused: no allocation
            let storage = match spare {
                Some(mut b) => {
                    // contents are unspecified (as Corosync's shared
                    // memory): not zeroed again, only sized
                    if b.0.len() >= size {
                        b.0.truncate(size);
                    } else {
                        b.0.resize(size, 0);
                    }
                    b
                }
                None => Box::new(SmallZc(vec![0u8; size])),
            };
            return Ok(ZcBuf {
                storage,
                node: self.key(),
            });
        }
        if !lock(&staging.st).open {
            self.check(h, false)?;
        }
        let (buf, start) = self.zc.alloc(size)?;
        Ok(ZcBuf {
            storage: Box::new(ZcFrame {
                buf,
                start,
                len: size,
            }),
            node: self.key(),
        })
    }

    fn zcb_mcast(
        &self,
        staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        if buf.node != self.key() || len > buf.capacity() {
            return back(CsError::InvalidParam, buf);
        }
        let small = buf.storage.is_small();
        let buf = if small || len >= self.zc_small {
            match self.stage_buf(staging, h, guarantee, buf, len) {
                Ok(r) => return r,
                Err(buf) => buf,
            }
        } else {
            buf
        };
        if small {
            // not open for staging: the copying path, under the node lock
            let r = self.mcast_joined(staging, h, guarantee, &[IoSlice::new(&buf[..len])]);
            return r.or_else(|e| back(e, buf));
        }
        self.zcb_mcast_locked(h, guarantee, buf, len)
    }

    fn zcb_free(&self, h: u64, buf: ZcBuf) -> Result<(), CsError> {
        drop(buf);
        self.check(h, true)
    }
}

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    /// For a copied message of `total` bytes sent from a driver buffer:
    /// `None` when it does not take that path (larger than a driver
    /// buffer, or the handle not open for staging), else whether staging
    /// would refuse it now (above the staging bound the locked path
    /// decides later: not refused here). Asked before the copy.
    fn large_copy_refused(&self, staging: &Staging, total: usize) -> Option<bool> {
        if total > self.zc.max_len() {
            return None;
        }
        let st = lock(&staging.st);
        st.open.then(|| total <= st.max_len && st.zc_full(total))
    }

    /// `mcast_joined` under the node lock.
    fn mcast(&self, h: u64, guarantee: Guarantee, iov: &[&[u8]]) -> Result<(), CsError> {
        self.submit_with(|g, now| {
            let max = g.engine.config().max_message_size;
            let cap = g.queue_cap;
            let s = g.live(h)?;
            let total: usize = iov.iter().map(|p| p.len()).sum();
            if total > max {
                return Err(CsError::TooBig);
            }
            let group = match &s.group {
                Some((group, HState::JoinStarted | HState::Joined)) => group.clone(),
                _ => return Err(CsError::NotExist),
            };
            if s.mail.bytes() + s.inflight > cap / 2 || !lock(&s.staging.st).is_empty() {
                // the sender outruns its own dispatch: back-pressure
                // (TRY_AGAIN) instead of an eviction that would lose messages;
                // or staged messages the engine refused go first (FIFO)
                return Err(CsError::TryAgain);
            }
            let pid = s.pid;
            g.engine.submit(
                now,
                Request::Mcast {
                    pid,
                    group: &group,
                    guarantee,
                    iov,
                },
            )?;
            if let Ok(s) = g.get_mut(h) {
                s.inflight += EVENT_OVERHEAD + total;
            }
            Ok(())
        })
    }

    /// The staged path for a zero-copy buffer, under the handle's own lock
    /// (the node lock is not waited for): a small (heap) buffer's message is
    /// copied in and the buffer kept for reuse; a driver buffer joins the
    /// handle's FIFO itself. `Err` gives the buffer back when the handle is
    /// not open for staging.
    fn stage_buf(
        &self,
        staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<Result<(), ZcSendError>, ZcBuf> {
        let ZcBuf { storage, node } = buf;
        let mut f = lock(&staging.st);
        let staged = if storage.is_small() {
            match f.stage(guarantee, &[IoSlice::new(&storage.bytes()[..len])], len) {
                None => Err((None, storage)),
                Some(Err(e)) => Err((Some(e), storage)),
                Some(Ok(())) => {
                    if f.spare.len() < SPARE_SMALL_ZC {
                        if let Ok(b) = storage.into_any().downcast::<SmallZc>() {
                            f.spare.push(b);
                        }
                    }
                    Ok(())
                }
            }
        } else {
            f.stage_zc(guarantee, storage, len)
        };
        drop(f);
        match staged {
            Ok(()) => {
                self.after_stage(h, Some(len));
                Ok(Ok(()))
            }
            Err((Some(e), storage)) => {
                self.after_stage(h, None);
                Ok(back(e, ZcBuf { storage, node }))
            }
            Err((None, storage)) => Err(ZcBuf { storage, node }),
        }
    }

    /// A driver buffer under the node lock: checks, then below the copy
    /// threshold a copy (the slot goes back at once), else the buffer
    /// itself; the transport is woken when the engine may have work.
    fn zcb_mcast_locked(
        &self,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        let now = self.now();
        let mut g = lock(&self.locked);
        if !g.drain(now) {
            // staged multicasts the engine refused go first (FIFO)
            g.pump(now);
            drop(g);
            self.wake();
            return back(CsError::TryAgain, buf);
        }
        let max = g.engine.config().max_message_size;
        let fc = g.engine.flow_control_enabled();
        let cap = g.queue_cap;
        let s = match g.live(h) {
            Ok(s) => s,
            Err(e) => return back(e, buf),
        };
        if len > max {
            return back(CsError::TooBig, buf);
        }
        let group = match &s.group {
            Some((group, HState::JoinStarted | HState::Joined)) => group.clone(),
            _ => return back(CsError::NotExist, buf),
        };
        let pid = s.pid;
        if fc || s.mail.bytes() + s.inflight > cap / 2 {
            return back(CsError::TryAgain, buf);
        }
        debug_assert!(matches!(
            g.engine.groups().local_state(pid, &group),
            Some(LocalState::JoinStarted | LocalState::Joined)
        ));
        if len < g.engine.config().zc_copy_threshold {
            // Below the threshold the engine packs the message by copy
            // anyway: copy it now and give the slot back at once, rather
            // than hold a pool slot until the message is delivered back.
            let r = {
                let iov = [&buf.storage.bytes()[..len]];
                g.engine.submit(
                    now,
                    Request::Mcast {
                        pid,
                        group: &group,
                        guarantee,
                        iov: &iov,
                    },
                )
            };
            if let Err(e) = r {
                return back(e, buf);
            }
            if let Ok(s) = g.get_mut(h) {
                s.inflight += EVENT_OVERHEAD + len;
            }
            g.pump(now);
            drop(g);
            drop(buf);
            self.wake();
            return Ok(());
        }
        let frame = match buf.storage.into_any().downcast::<ZcFrame<F>>() {
            Ok(f) => *f,
            Err(_) => {
                return Err(ZcSendError {
                    error: CsError::InvalidParam,
                    buf: None,
                })
            }
        };
        let (start, cap) = (frame.start, frame.len);
        let r = g.engine.submit_zc(
            now,
            pid,
            &group,
            guarantee,
            frame.buf,
            frame.start..frame.start + len,
        );
        if r.is_ok() {
            if let Ok(s) = g.get_mut(h) {
                s.inflight += EVENT_OVERHEAD + len;
            }
        }
        g.pump(now);
        drop(g);
        self.wake();
        // A refused buffer comes back whole, so the caller may retry.
        r.map_err(|e| ZcSendError {
            error: e.error,
            buf: e.buf.map(|buf| ZcBuf {
                storage: Box::new(ZcFrame {
                    buf,
                    start,
                    len: cap,
                }),
                node: self.key(),
            }),
        })
    }
}

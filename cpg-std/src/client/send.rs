//! `mcast_joined` over the request ring, asynchronous as Corosync's
//! (`docs/spec/ipc.md` §7): answered here from what this side knows (the
//! join state, the largest message, flow control, room in the ring),
//! never by waiting for the daemon, which replies to a send only to
//! refuse it (a correct client never gets such a reply).
//!
//! A message whose records fit the ring's free room is written whole, its
//! pieces (§8) gathered from the caller's iovecs straight into the ring
//! (one copy), and published at once; one that does not fit now is
//! `TRY_AGAIN`. Only a message whose records take more than half the ring
//! (1 MiB rings: messages above ~512 KiB, where Corosync's own library
//! also switches to a synchronous fragmented send) is written as room
//! appears, holding the ring so nothing goes between its pieces.
//!
//! A message of [`SLOT_COPY_MIN`] up to [`SLOT_COPY_END`] goes through a
//! zero-copy slot instead when the connection has a zc region, the group
//! has several members on this node and a slot is at hand
//! (`docs/spec/ipc.md` §9, "Copying sends through a slot"): this side
//! copies it into the slot, where the ring path made the same copy into
//! the ring, and the daemon copies nothing, where the ring path had it
//! copy the message out of the ring into the buffer the engine sends from.

use std::io::IoSlice;
use std::ops::Range;

use cpg_core::ipc::request::MCAST_MORE_HEADER_LEN;
use cpg_core::ipc::request::{mcast_header, mcast_more_header, MCAST_HEADER_LEN};
use cpg_core::ipc::ring::record_len;
use cpg_core::ipc::{Message, Op, Request, RequestKind, Split};
use cpg_core::pool::SlotId;
use cpg_core::{CsError, Guarantee};

use super::conn::{ClientNode, Guard, State};
use super::echo::ECHO_MESSAGE_MAX;
use crate::handles::send::SendOps;
use crate::handles::staging::Staging;
use crate::handles::zc::{ZcBuf, ZcSendError};

/// How often a send refused for a full request ring looks for a dead
/// daemon: a dead one answers `LIBRARY` within this (a `TRY_AGAIN` before
/// it is retried like any other).
const FULL_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// Copying sends of `SLOT_COPY_MIN..SLOT_COPY_END` bytes go through a zc
/// slot when the handle's group has several members on this node: then
/// the daemon's one thread is busy copying each message to each of them
/// (3 clients × 64 KiB: 77 % of it in `memmove`, a quarter of that
/// copying requests out of the ring), and the copy it saves pays for
/// the slots allocated ahead (`ZC_ALLOC` requests and replies). It does
/// not pay otherwise (one cpgd, `cpgload` × 64 KiB copy, 3 s, alternated:
/// 1 client 3,110-3,807 MB/s through slots against 5,362-6,690 through
/// the ring; 3 clients 2,403-2,600 against 1,910-1,999; 3 × 1 MiB 1,931
/// against 3,109). Below 32 KiB the daemon packs the message into a
/// frame by copy anyway.
pub(super) const SLOT_COPY_MIN: usize = 32 << 10;
pub(super) const SLOT_COPY_END: usize = 512 << 10;

/// The bytes `range` of the concatenation of `iov`, as slices of it.
fn gather<'a>(iov: &[&'a [u8]], range: Range<usize>, out: &mut Vec<&'a [u8]>) {
    let mut at = 0usize;
    for part in iov {
        let (start, end) = (at, at + part.len());
        at = end;
        if end <= range.start || part.is_empty() {
            continue;
        }
        if start >= range.end {
            break;
        }
        let from = range.start.max(start) - start;
        let to = range.end.min(end) - start;
        out.push(&part[from..to]);
    }
}

/// Body length of piece `i` (the first is an `MCAST`, the rest
/// `MCAST_MORE`s).
fn piece_body(i: usize, r: &Range<usize>) -> usize {
    if i == 0 {
        MCAST_HEADER_LEN + r.len()
    } else {
        MCAST_MORE_HEADER_LEN + r.len()
    }
}

/// Write piece `i` (`r` of the message `iov`) of the message `req_id`.
fn write_piece(
    g: &mut State,
    req_id: u32,
    guarantee: Guarantee,
    total: u32,
    iov: &[&[u8]],
    i: usize,
    r: Range<usize>,
) -> Result<(), cpg_ipc::ring::WriteError> {
    let first = mcast_header(req_id, guarantee, total);
    let more = mcast_more_header(req_id);
    let mut parts: Vec<&[u8]> = Vec::with_capacity(iov.len() + 1);
    let kind = if i == 0 {
        parts.push(&first);
        RequestKind::Mcast
    } else {
        parts.push(&more);
        RequestKind::McastMore
    };
    gather(iov, r, &mut parts);
    let c = g.conn.as_mut().expect("an open handle has its connection");
    c.tx.write_parts(kind as u16, 0, &parts, 0)
}

impl ClientNode {
    /// The checks `mcast` answers locally, in the embedded node's order
    /// (the handle, then TOO_BIG, NOT_EXIST, TRY_AGAIN).
    pub(super) fn send_checks(&self, g: &mut Guard<'_>, len: usize) -> Result<(), CsError> {
        if let Some(e) = g.gate() {
            return Err(e);
        }
        if len > self.welcome.message_max as usize {
            return Err(CsError::TooBig);
        }
        if !g.ev.can_send() {
            return Err(CsError::NotExist);
        }
        if g.ev.leave_inflight.is_some() {
            // A LEAVE is in the ring, not yet answered: a message written
            // now goes after it, where the daemon refuses it (NOT_EXIST)
            // once the leave is taken, although this call would have said
            // CS_OK. Whether it is NOT_EXIST or a send depends on the
            // daemon's answer to the leave (it may refuse it): until then,
            // TRY_AGAIN.
            return Err(CsError::TryAgain);
        }
        if g.tx_busy {
            // another thread's message in pieces holds the ring
            return Err(CsError::TryAgain);
        }
        if g.ev.fc {
            // advisory (spec §7); read the ring for the edge that ends it
            self.pump(g);
            if let Some(e) = g.gate() {
                return Err(e);
            }
            if g.ev.fc {
                return Err(CsError::TryAgain);
            }
        }
        g.flush_frees(&self.fds);
        Ok(())
    }

    /// `TRY_AGAIN` for a full request ring, unless the daemon is gone.
    /// A full ring is nearly always a daemon behind (a sender retrying in
    /// a loop meets it tens of thousands of times a second), rarely one
    /// that died: the hang-up is looked for (a syscall) at most once per
    /// [`FULL_PROBE_EVERY`].
    pub(super) fn full(&self, g: &mut State) -> CsError {
        let now = std::time::Instant::now();
        if g.full_probed
            .is_some_and(|t| now.saturating_duration_since(t) < FULL_PROBE_EVERY)
        {
            return CsError::TryAgain;
        }
        g.full_probed = Some(now);
        if self.probe(g) {
            CsError::Library
        } else {
            CsError::TryAgain
        }
    }

    /// A copying send through a zc slot: the message copied into a slot
    /// of this connection allocated ahead, sent as `MCAST_ZC`. `None` when
    /// none can be had without risking a wait for good (`stashed_now`):
    /// the caller sends it through the ring.
    fn mcast_via_slot(
        &self,
        h: u64,
        guarantee: Guarantee,
        iov: &[&[u8]],
        total: usize,
    ) -> Option<Result<(), CsError>> {
        {
            // refused before anything is copied or allocated: a caller
            // that retries TRY_AGAIN in a loop copies nothing per attempt
            let mut g = self.lock();
            let probe = Request {
                req_id: 0,
                op: Op::McastZc {
                    guarantee,
                    reply: false,
                    slot: SlotId::from_parts(0, 0),
                    offset: 0,
                    len: 0,
                },
            };
            let r = g
                .check(self.handle, h, false)
                .and_then(|()| self.send_checks(&mut g, total))
                .and_then(|()| match g.fits_now(&self.fds, probe.body_len())? {
                    true => Ok(()),
                    false => Err(self.full(&mut g)),
                });
            if let Err(e) = r {
                self.settle_if_needed(g);
                return Some(Err(e));
            }
        }
        let given = self.stashed_now(total)?;
        let mut buf = match self.slot_buf(total, given) {
            Ok(buf) => buf,
            Err(e) => return Some(Err(e)),
        };
        let mut at = 0;
        for part in iov {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        // a refusal drops the buffer, which gives its slot back
        Some(self.zc_mcast(h, guarantee, buf, total).map_err(|e| e.error))
    }

    fn mcast_parts(&self, h: u64, guarantee: Guarantee, iov: &[&[u8]]) -> Result<(), CsError> {
        let total: usize = iov.iter().map(|p| p.len()).sum();
        if (SLOT_COPY_MIN..SLOT_COPY_END).contains(&total)
            && self.zc_region.1 != 0
            && self.lock().ev.local_members >= 2
        {
            if let Some(r) = self.mcast_via_slot(h, guarantee, iov, total) {
                return r;
            }
        }
        let mut g = self.lock();
        g.check(self.handle, h, false)?;
        if let Err(e) = self.send_checks(&mut g, total) {
            self.settle_if_needed(g);
            return Err(e);
        }
        let total32 = u32::try_from(total).map_err(|_| CsError::TooBig)?;
        let c = g.conn.as_mut().expect("an open handle has its connection");
        let ring = c.tx.ring();
        let split = Split::mcast(total, ring.body_max());
        let lens = split.clone().enumerate().map(|(i, r)| piece_body(i, &r));
        match c.tx.fits_all(lens.clone(), 0) {
            Ok(true) => {
                // nothing left to dispatch and alone in its group: the
                // application waits for this message's delivery next, and
                // no other member's client competes for the cores (see echo)
                let idle = g.ev.is_empty() && g.ev.group_members == 1 && total <= ECHO_MESSAGE_MAX;
                let req_id = g.alloc_id();
                for (i, r) in split.enumerate() {
                    if write_piece(&mut g, req_id, guarantee, total32, iov, i, r).is_err() {
                        // checked to fit: only a broken tail gets here
                        g.broken(&self.fds, "impossible request ring tail");
                        return Err(CsError::Library);
                    }
                }
                g.publish(&self.fds);
                let g = if idle { self.await_echo(g) } else { g };
                self.settle_if_needed(g);
                return Ok(());
            }
            Ok(false) => {}
            Err(_) => {
                g.broken(&self.fds, "impossible request ring tail");
                return Err(CsError::Library);
            }
        }
        let need = lens.fold(0usize, |a, n| {
            a.saturating_add(record_len(n).unwrap_or(usize::MAX))
        });
        if need <= ring.capacity() / 2 {
            // it fits once the daemon has read what is in the ring
            let e = self.full(&mut g);
            self.settle_if_needed(g);
            return Err(e);
        }
        self.mcast_large(g, guarantee, total32, iov, split)
    }

    /// A message larger than half the ring: written as room appears,
    /// holding the ring (`tx_busy`) until its last piece.
    fn mcast_large<'a>(
        &'a self,
        mut g: Guard<'a>,
        guarantee: Guarantee,
        total: u32,
        iov: &[&[u8]],
        split: Split,
    ) -> Result<(), CsError> {
        g.tx_busy = true;
        let req_id = g.alloc_id();
        let mut pieces = split.enumerate().peekable();
        let r = loop {
            while let Some((i, r)) = pieces.peek().cloned() {
                let len = piece_body(i, &r);
                let c = g.conn.as_mut().expect("finalize waits for tx_busy");
                match c.tx.fits(len, 0) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => {
                        g.broken(&self.fds, "impossible request ring tail");
                        break;
                    }
                }
                if write_piece(&mut g, req_id, guarantee, total, iov, i, r).is_err() {
                    g.broken(&self.fds, "impossible request ring tail");
                    break;
                }
                pieces.next();
            }
            g.publish(&self.fds);
            let Some((i, r)) = pieces.peek().cloned() else {
                break Ok(());
            };
            let len = piece_body(i, &r);
            // Finalize waits for the message to end (nothing may go between
            // its pieces); only the daemon's death stops it halfway.
            let (g2, room) = self.wait(g, |s| {
                if s.dead || s.evicted {
                    return Some(Err(CsError::Library));
                }
                s.room(&self.fds, len)
            });
            g = g2;
            if let Err(e) = room {
                break Err(e);
            }
        };
        g.tx_busy = false;
        // requests held back behind the message go now
        self.wake_waiters(&mut g);
        self.finish(g);
        r
    }
}

impl SendOps for ClientNode {
    fn mcast_joined(
        &self,
        _staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        iov: &[IoSlice<'_>],
    ) -> Result<(), CsError> {
        match iov {
            [one] => self.mcast_parts(h, guarantee, &[&**one]),
            _ => {
                let parts: Vec<&[u8]> = iov.iter().map(|s| &**s).collect();
                self.mcast_parts(h, guarantee, &parts)
            }
        }
    }

    fn zcb_alloc(&self, _staging: &Staging, h: u64, size: usize) -> Result<ZcBuf, CsError> {
        self.zc_alloc(h, size)
    }

    fn zcb_mcast(
        &self,
        _staging: &Staging,
        h: u64,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        if buf.node == self.key() && len <= buf.capacity() && buf.storage.is_small() {
            // a heap buffer: its message goes by copy, as an MCAST
            return self
                .mcast_parts(h, guarantee, &[&buf[..len]])
                .map_err(|error| ZcSendError {
                    error,
                    buf: Some(buf),
                });
        }
        self.zc_mcast(h, guarantee, buf, len)
    }

    fn zcb_free(&self, h: u64, buf: ZcBuf) -> Result<(), CsError> {
        self.zc_free(h, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::gather;

    #[test]
    fn gather_cuts_across_iovecs() {
        let iov: [&[u8]; 4] = [b"abc", b"", b"defg", b"hi"];
        let mut out = Vec::new();
        gather(&iov, 2..7, &mut out);
        assert_eq!(out, [&b"c"[..], b"defg"]);
        out.clear();
        gather(&iov, 0..9, &mut out);
        assert_eq!(out.concat(), b"abcdefghi");
        out.clear();
        gather(&iov, 7..9, &mut out);
        assert_eq!(out, [&b"hi"[..]]);
        out.clear();
        gather(&iov, 0..0, &mut out);
        assert!(out.is_empty());
    }
}

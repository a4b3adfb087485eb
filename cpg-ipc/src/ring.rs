//! The two ends of a shared ring: `cpg_core::ipc::{Producer, Consumer}`
//! (the bookkeeping) over the words and data area of a [`SharedMem`], with
//! the memory orderings of `cpg_core::ipc::wake`.
//!
//! Each end keeps its own index privately and only reads the other side's
//! (validated by `observe_*`); records are copied into and out of the
//! shared data area, so nothing the peer writes later changes what was
//! parsed.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use cpg_core::ipc::header::{offset, HEADER_LEN};
use cpg_core::ipc::ring::{RECORD_ALIGN, RECORD_HEADER_LEN};
use cpg_core::ipc::wake::{wants_wakeup, AWAKE, BELL, SLEEPING, WAITING};
use cpg_core::ipc::{
    Consumer, Direction, Message, MsgError, Producer, Reservation, Ring, RingError,
};

use crate::shm::SharedMem;

/// The words of one ring header in a mapping.
#[derive(Debug, Clone)]
struct Words {
    mem: Arc<SharedMem>,
    /// Offset of the header page in the mapping.
    base: usize,
}

impl Words {
    fn new(mem: Arc<SharedMem>, base: usize, ring: Ring) -> Option<Words> {
        let w = Words { mem, base };
        // every word must be addressable, and the data area inside the map
        w.mem.atomic_u64(base + offset::HEAD)?;
        w.mem.atomic_u64(base + offset::TAIL)?;
        w.mem.atomic_u32(base + offset::CONSUMER_SLEEPING)?;
        w.mem.atomic_u32(base + offset::PRODUCER_WAITING)?;
        (base.checked_add(HEADER_LEN + ring.capacity())? <= w.mem.len()).then_some(w)
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        self.mem
            .atomic_u64(self.base + off)
            .expect("checked in Words::new")
    }
    fn u32(&self, off: usize) -> &AtomicU32 {
        self.mem
            .atomic_u32(self.base + off)
            .expect("checked in Words::new")
    }
    fn head(&self) -> &AtomicU64 {
        self.u64(offset::HEAD)
    }
    fn tail(&self) -> &AtomicU64 {
        self.u64(offset::TAIL)
    }
    fn consumer_sleeping(&self) -> &AtomicU32 {
        self.u32(offset::CONSUMER_SLEEPING)
    }
    fn producer_waiting(&self) -> &AtomicU32 {
        self.u32(offset::PRODUCER_WAITING)
    }
    fn data(&self) -> usize {
        self.base + HEADER_LEN
    }
}

/// Swap a flag word back to awake; whether the other side asked for a
/// wake-up (the swap makes it once per sleep).
fn take_flag(flag: &AtomicU32) -> bool {
    wants_wakeup(flag.load(Ordering::Relaxed)) && wants_wakeup(flag.swap(AWAKE, Ordering::Relaxed))
}

/// Clear `bits` of a flag word; which of them were set (the
/// read-modify-write makes each wake-up once per sleep).
fn take_bits(flag: &AtomicU32, bits: u32) -> u32 {
    if flag.load(Ordering::Relaxed) & bits == 0 {
        return 0;
    }
    flag.fetch_and(!bits, Ordering::Relaxed) & bits
}

/// Whom a publish must wake (`cpg_core::ipc::wake`, "Which eventfd, and
/// the doorbell").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    /// A consumer thread sleeps on its eventfd: signal it.
    pub eventfd: bool,
    /// The consumer armed its doorbell: write one byte on its socket.
    pub bell: bool,
}

/// What went wrong writing a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// No room now (an ordinary result: wait for the consumer).
    Full,
    /// Larger than a record may be: send it in pieces.
    TooLarge,
    /// The consumer's index is impossible: the peer is broken or lying.
    Corrupt,
    /// The message refused to emit (a value out of its range).
    Msg(MsgError),
}

impl From<RingError> for WriteError {
    fn from(e: RingError) -> WriteError {
        match e {
            RingError::Full => WriteError::Full,
            RingError::TooLarge { .. } => WriteError::TooLarge,
            _ => WriteError::Corrupt,
        }
    }
}

/// The producing end of a ring.
#[derive(Debug)]
pub struct RingTx {
    words: Words,
    prod: Producer,
    scratch: Vec<u8>,
}

impl RingTx {
    /// The producer of the ring whose header page is at `base` in `mem`.
    /// `None` if the ring does not lie inside the mapping.
    pub fn new(mem: Arc<SharedMem>, base: usize, ring: Ring) -> Option<RingTx> {
        Some(RingTx {
            words: Words::new(mem, base, ring)?,
            prod: Producer::new(ring),
            scratch: Vec::new(),
        })
    }

    /// This producer rewinds to position 0 when it finds the ring empty
    /// ([`Producer::rewinding`]): a consumer that keeps up reads bytes
    /// still in the caches instead of cycling through the whole capacity.
    #[must_use]
    pub fn rewinding(mut self) -> RingTx {
        self.prod = self.prod.rewinding();
        self
    }

    /// The ring's geometry.
    pub fn ring(&self) -> Ring {
        self.prod.ring()
    }

    /// Read the consumer's tail (Acquire): room it released is reusable.
    ///
    /// # Errors
    /// `Corrupt` for an impossible tail.
    pub fn refresh(&mut self) -> Result<(), WriteError> {
        let tail = self.words.tail().load(Ordering::Acquire);
        self.prod.observe_tail(tail).map_err(WriteError::from)
    }

    /// Whether a record of `body_len` fits keeping `keep` free (after a
    /// refresh if it does not fit as last seen).
    ///
    /// # Errors
    /// `Corrupt` for an impossible tail.
    pub fn fits(&mut self, body_len: usize, keep: usize) -> Result<bool, WriteError> {
        if self.prod.can_reserve(body_len, keep) {
            return Ok(true);
        }
        self.refresh()?;
        Ok(self.prod.can_reserve(body_len, keep))
    }

    /// Whether records of these body lengths, written one after the other,
    /// all fit now keeping `keep` free after each (after a refresh if they
    /// do not fit as last seen). Nothing is written: a writer whose records
    /// must be consecutive (the pieces of one message) checks first, and
    /// writes none rather than some.
    ///
    /// # Errors
    /// `Corrupt` for an impossible tail.
    pub fn fits_all<I>(&mut self, body_lens: I, keep: usize) -> Result<bool, WriteError>
    where
        I: Iterator<Item = usize> + Clone,
    {
        // `Producer` is a value: reserving on a copy is a dry run.
        let dry = |mut p: Producer| {
            body_lens
                .clone()
                .all(|n| p.reserve_keeping(n, keep).is_ok())
        };
        if dry(self.prod) {
            return Ok(true);
        }
        self.refresh()?;
        Ok(dry(self.prod))
    }

    fn reserve(&mut self, body_len: usize, keep: usize) -> Result<Reservation, WriteError> {
        match self.prod.reserve_keeping(body_len, keep) {
            Err(RingError::Full) => {
                self.refresh()?;
                Ok(self.prod.reserve_keeping(body_len, keep)?)
            }
            r => Ok(r?),
        }
    }

    /// Write a PAD header (if any) and a record header for `res`.
    fn frame(&self, res: &Reservation, kind: u16, flags: u16) {
        let data = self.words.data();
        if let Some(pad) = res.pad {
            self.words.mem.copy_in(data + pad.pos, &pad.header());
        }
        self.words
            .mem
            .copy_in(data + res.pos, &res.header(kind, flags));
    }

    /// Write one record whose body is the concatenation of `parts`, keeping
    /// `keep` bytes free (not yet published).
    ///
    /// # Errors
    /// `Full`, `TooLarge`, `Corrupt`; nothing is written on error.
    pub fn write_parts(
        &mut self,
        kind: u16,
        flags: u16,
        parts: &[&[u8]],
        keep: usize,
    ) -> Result<(), WriteError> {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        let res = self.reserve(body_len, keep)?;
        self.frame(&res, kind, flags);
        let mut at = self.words.data() + res.body().start;
        for p in parts {
            self.words.mem.copy_in(at, p);
            at += p.len();
        }
        let padded = res.record().end - res.body().end;
        debug_assert!(padded < RECORD_ALIGN);
        self.words.mem.zero(at, padded);
        Ok(())
    }

    /// Write `msg` as one record keeping `keep` bytes free (not yet
    /// published). The body is emitted privately and copied in once.
    ///
    /// # Errors
    /// As [`RingTx::write_parts`]; `Msg` if the message refuses to emit.
    pub fn write<'a, M: Message<'a>>(&mut self, msg: &M, keep: usize) -> Result<(), WriteError> {
        let len = msg.body_len();
        self.scratch.clear();
        self.scratch.resize(len, 0);
        msg.emit_body(&mut self.scratch).map_err(WriteError::Msg)?;
        let body = std::mem::take(&mut self.scratch);
        let r = self.write_parts(msg.kind(), msg.flags(), &[&body], keep);
        self.scratch = body;
        r
    }

    /// Publish what was written (Release), then the wake-up check: `true`
    /// if a consumer thread said it sleeps on its eventfd and must be
    /// signalled. The doorbell bit is left alone: no event is in this
    /// batch (see [`RingTx::publish_events`]).
    pub fn publish(&mut self) -> bool {
        self.store_head() && take_bits(self.words.consumer_sleeping(), SLEEPING) != 0
    }

    /// [`RingTx::publish`] of a batch holding events (the daemon's event
    /// ring): the doorbell is taken too.
    pub fn publish_events(&mut self) -> Wake {
        if !self.store_head() {
            return Wake::default();
        }
        let flag = self.words.consumer_sleeping();
        if flag.load(Ordering::Relaxed) == AWAKE {
            return Wake::default();
        }
        let old = flag.swap(AWAKE, Ordering::Relaxed);
        Wake {
            eventfd: old & !BELL != 0,
            bell: old & BELL != 0,
        }
    }

    /// Store the head (Release) and fence (the wake-up protocol's P1, P2);
    /// `false` when nothing new was written.
    fn store_head(&mut self) -> bool {
        if self.prod.head() == self.prod.published() {
            return false;
        }
        self.words
            .head()
            .store(self.prod.publish(), Ordering::Release);
        fence(Ordering::SeqCst);
        true
    }

    /// Whether something written is not yet published.
    pub fn has_unpublished(&self) -> bool {
        self.prod.head() != self.prod.published()
    }

    /// About to wait for room for `body_len` (+`keep`): set
    /// `producer_waiting`, fence, re-check. `true`: room appeared (the flag
    /// is cleared again), do not sleep.
    ///
    /// # Errors
    /// `Corrupt` for an impossible tail.
    pub fn prepare_wait(&mut self, body_len: usize, keep: usize) -> Result<bool, WriteError> {
        self.words
            .producer_waiting()
            .store(WAITING, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.fits(body_len, keep)? {
            self.words
                .producer_waiting()
                .store(AWAKE, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    /// Bytes free as last seen.
    pub fn free(&self) -> usize {
        self.prod.free()
    }

    /// Bytes the next records may take as last seen: [`RingTx::free`], or
    /// less when the next record rewinds ([`cpg_core::ipc::Producer::room`]).
    pub fn room(&self) -> usize {
        self.prod.room()
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct RingRx {
    words: Words,
    cons: Consumer,
    dir: Direction,
}

/// One record copied out of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Its kind.
    pub kind: u16,
    /// Its flags.
    pub flags: u16,
}

/// A record of a ring this side consumes, read where it lies
/// ([`RingRx::next_held`]): its body stays this value's until the
/// consumer releases the ring past [`HeldRecord::end`], which its holder
/// does only once done with it. It keeps the mapping alive.
#[derive(Debug)]
pub struct HeldRecord {
    mem: Arc<SharedMem>,
    at: usize,
    len: usize,
    end: u64,
}

impl HeldRecord {
    /// The ring's tail past this record (for [`RingRx::release_to`]).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of the body.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body, writable (a C `deliver_fn` may fix byte order in place).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let Some(p) = self.mem.range_ptr(self.at, self.len) else {
            // checked by `next_held`
            return &mut [];
        };
        // Why this is sound: `next_held` gives each record out once (the
        // consumer's tail moves past it) and records do not overlap, so no
        // other slice of this process covers these bytes; the producer
        // writes only room the consumer released, and the holder releases
        // past `end` only once done with this value. A lying producer could
        // still write them meanwhile; that changes only the bytes shown here
        // (opaque payload, as `SharedMem::shared_bytes`).
        // SAFETY: one record inside the mapping `mem` keeps alive, borrowed
        // exclusively through `&mut self` (argument above).
        unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), self.len) }
    }
}

impl RingRx {
    /// The consumer of the ring of `dir` whose header page is at `base`.
    /// `None` if the ring does not lie inside the mapping.
    pub fn new(mem: Arc<SharedMem>, base: usize, ring: Ring, dir: Direction) -> Option<RingRx> {
        Some(RingRx {
            words: Words::new(mem, base, ring)?,
            cons: Consumer::new(ring),
            dir,
        })
    }

    /// Read the producer's head (Acquire); whether records are waiting.
    ///
    /// # Errors
    /// `Corrupt` for an impossible head.
    pub fn refresh(&mut self) -> Result<bool, RingError> {
        let head = self.words.head().load(Ordering::Acquire);
        self.cons.observe_head(head)?;
        Ok(!self.cons.is_empty())
    }

    /// Whether records were waiting as of the last refresh.
    pub fn has_records(&self) -> bool {
        !self.cons.is_empty()
    }

    /// The ring's geometry.
    pub fn ring(&self) -> Ring {
        self.cons.ring()
    }

    /// Bytes published (as of the last refresh) and not yet released:
    /// room the producer cannot use.
    pub fn unreleased(&self) -> usize {
        self.cons.head().wrapping_sub(self.cons.released()) as usize
    }

    /// The next record, its body copied into `body` (cleared first).
    /// `Ok(None)`: nothing published as of the last refresh.
    ///
    /// # Errors
    /// `RingError::Corrupt` for an impossible header or index: the peer is
    /// broken or lying.
    pub fn next_into(&mut self, body: &mut Vec<u8>) -> Result<Option<RecordInfo>, RingError> {
        let Some((info, at, len)) = self.next_in_place()? else {
            return Ok(None);
        };
        // appended from the shared bytes, not zero-filled then copied over:
        // the body is copied once, and only ever read from the copy
        let src = self
            .words
            .mem
            .shared_bytes(at, len)
            .ok_or(RingError::DataTooShort)?;
        body.clear();
        body.extend_from_slice(src);
        Ok(Some(info))
    }

    /// The next record without copying its body: its kind and flags, and
    /// where the body lies in the mapping (offset, length). The bytes stay
    /// the consumer's until [`RingRx::release`]; the producer may still
    /// scribble on them (a lying peer), so copy what decides anything.
    ///
    /// # Errors
    /// As [`RingRx::next_into`].
    pub fn next_in_place(&mut self) -> Result<Option<(RecordInfo, usize, usize)>, RingError> {
        let data = self.words.data();
        let mem = &self.words.mem;
        let rec = self.cons.next(self.dir, |pos| {
            let mut h = [0u8; RECORD_HEADER_LEN];
            mem.copy_out(data + pos, &mut h);
            h
        })?;
        Ok(rec.map(|r| {
            (
                RecordInfo {
                    kind: r.kind,
                    flags: r.flags,
                },
                data + r.body.start,
                r.body.len(),
            )
        }))
    }

    /// [`RingRx::next_in_place`], but only if `want` accepts the record's
    /// kind and flags; otherwise the record stays next.
    ///
    /// # Errors
    /// As [`RingRx::next_into`].
    pub fn next_in_place_if(
        &mut self,
        want: impl FnOnce(&RecordInfo) -> bool,
    ) -> Result<Option<(RecordInfo, usize, usize)>, RingError> {
        let before = self.cons;
        match self.next_in_place()? {
            Some(r) if want(&r.0) => Ok(Some(r)),
            _ => {
                self.cons = before;
                Ok(None)
            }
        }
    }

    /// The mapping the ring lies in.
    pub fn mem(&self) -> &Arc<SharedMem> {
        &self.words.mem
    }

    /// Release every record read (Release store of the tail), then the
    /// wake-up check: `true` if the producer waits for room and must be
    /// signalled.
    pub fn release(&mut self) -> bool {
        if self.cons.released() == self.cons.tail() {
            return false;
        }
        self.words
            .tail()
            .store(self.cons.release(), Ordering::Release);
        fence(Ordering::SeqCst);
        take_flag(self.words.producer_waiting())
    }

    /// Release the records before `pos` (a [`RecordAt::end`] of a record
    /// read; later ones stay the consumer's), then the wake-up check as
    /// [`RingRx::release`].
    pub fn release_to(&mut self, pos: u64) -> bool {
        let before = self.cons.released();
        let now = self.cons.release_to(pos);
        if now == before {
            return false;
        }
        self.words.tail().store(now, Ordering::Release);
        fence(Ordering::SeqCst);
        take_flag(self.words.producer_waiting())
    }

    /// The next record, kept where it lies: its kind and flags, and the
    /// [`HeldRecord`] that gives its body out until the holder lets the
    /// ring have it back with [`RingRx::release_to`]`(held.end())`.
    ///
    /// # Errors
    /// As [`RingRx::next_into`].
    pub fn next_held(&mut self) -> Result<Option<(RecordInfo, HeldRecord)>, RingError> {
        let Some((info, at, len)) = self.next_in_place()? else {
            return Ok(None);
        };
        // inside the mapping (the consumer keeps records in the data area)
        self.words
            .mem
            .range_ptr(at, len)
            .ok_or(RingError::DataTooShort)?;
        Ok(Some((
            info,
            HeldRecord {
                mem: self.words.mem.clone(),
                at,
                len,
                end: self.cons.tail(),
            },
        )))
    }

    /// About to sleep on an empty ring: set the `SLEEPING` bit of
    /// `consumer_sleeping`, fence, re-check the head. `Ok(true)`: still
    /// empty, sleep (the bit stays set until the producer's wake-up clears
    /// it, or [`RingRx::awake`]). `Ok(false)`: records arrived, the bit is
    /// cleared. The doorbell bit is left as it is.
    ///
    /// # Errors
    /// `Corrupt` for an impossible head.
    pub fn prepare_sleep(&mut self) -> Result<bool, RingError> {
        self.words
            .consumer_sleeping()
            .fetch_or(SLEEPING, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.refresh()? {
            self.awake();
            return Ok(false);
        }
        Ok(true)
    }

    /// Clear the `SLEEPING` bit (woken, or not going to sleep after all).
    pub fn awake(&self) {
        self.words
            .consumer_sleeping()
            .fetch_and(!SLEEPING, Ordering::Relaxed);
    }

    /// Arm the doorbell (the event ring's consumer, its socket drained):
    /// set the `BELL` bit, fence, re-check the head. `Ok(true)`: still
    /// empty, the next event rings. `Ok(false)`: records arrived meanwhile
    /// (the bit stays set: [`RingRx::disarm_bell`] says whether the
    /// producer took it).
    ///
    /// # Errors
    /// `Corrupt` for an impossible head.
    pub fn arm_bell(&mut self) -> Result<bool, RingError> {
        self.words
            .consumer_sleeping()
            .fetch_or(BELL, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(!self.refresh()?)
    }

    /// Whether the `BELL` bit is set (armed, not taken by the producer).
    pub fn bell_armed(&self) -> bool {
        self.words.consumer_sleeping().load(Ordering::Relaxed) & BELL != 0
    }

    /// Clear the `BELL` bit: `true` if it was still set (no doorbell byte
    /// is coming for what was published), `false` if the producer took it
    /// (one is, or came).
    pub fn disarm_bell(&self) -> bool {
        self.words
            .consumer_sleeping()
            .fetch_and(!BELL, Ordering::Relaxed)
            & BELL
            != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpg_core::ipc::header::{self, ConnLayout};
    use cpg_core::ipc::{Message, Op, Request, RING_CAPACITY_MIN};
    use cpg_core::GroupName;

    fn pair() -> (RingTx, RingRx) {
        let layout = ConnLayout::new(RING_CAPACITY_MIN, RING_CAPACITY_MIN, 0, 0).unwrap();
        let mem = Arc::new(SharedMem::create("t", layout.memfd_len() as usize).unwrap());
        let mut page = vec![0u8; HEADER_LEN];
        header::init(&mut page, Direction::Requests, layout.requests).unwrap();
        mem.copy_in(0, &page);
        let tx = RingTx::new(mem.clone(), 0, layout.requests).unwrap();
        let rx = RingRx::new(mem, 0, layout.requests, Direction::Requests).unwrap();
        (tx, rx)
    }

    #[test]
    fn records_through_shared_memory_with_wakeups() {
        let (mut tx, mut rx) = pair();
        assert!(rx.prepare_sleep().unwrap(), "empty: sleep");
        let join = Request {
            req_id: 9,
            op: Op::Join {
                group: GroupName::new(b"cib\0").unwrap(),
            },
        };
        tx.write(&join, 0).unwrap();
        assert!(tx.publish(), "the consumer sleeps: signal it");
        assert!(!tx.publish(), "nothing new: no signal");
        assert!(rx.refresh().unwrap());
        let mut body = Vec::new();
        let info = rx.next_into(&mut body).unwrap().unwrap();
        assert_eq!(Request::parse(info.kind, info.flags, &body), Ok(join));
        assert_eq!(rx.next_into(&mut body).unwrap(), None);
        assert!(!rx.release(), "the producer does not wait");
    }

    #[test]
    fn the_doorbell_rings_for_events_only_and_survives_sleeps() {
        let (mut tx, mut rx) = pair();
        let rec = |tx: &mut RingTx| {
            let kind = cpg_core::ipc::RequestKind::McastMore as u16;
            tx.write_parts(kind, 0, &[b"x"], 0).unwrap();
        };
        let drain = |rx: &mut RingRx| {
            rx.refresh().unwrap();
            let mut body = Vec::new();
            while rx.next_into(&mut body).unwrap().is_some() {}
            rx.release();
        };
        assert!(rx.arm_bell().unwrap(), "empty: armed");
        // a thread sleeps and wakes: the doorbell stays armed
        assert!(rx.prepare_sleep().unwrap());
        rec(&mut tx);
        assert!(tx.publish(), "a reply wakes the sleeper only");
        rx.awake();
        drain(&mut rx);
        rec(&mut tx);
        assert_eq!(
            tx.publish_events(),
            Wake {
                eventfd: false,
                bell: true
            },
            "an event rings the armed doorbell"
        );
        rec(&mut tx);
        assert_eq!(tx.publish_events(), Wake::default(), "once per arming");
        assert!(!rx.disarm_bell(), "the producer took it");
        drain(&mut rx);
        // armed, then records appear before the check: not taken
        rec(&mut tx);
        let head = tx.prod.publish();
        tx.words.head().store(head, Ordering::Release);
        assert!(!rx.arm_bell().unwrap(), "records came: the caller decides");
        assert!(rx.disarm_bell(), "still set: no byte is coming");
        drain(&mut rx);
        // both bits at once
        assert!(rx.arm_bell().unwrap());
        assert!(rx.prepare_sleep().unwrap());
        rec(&mut tx);
        assert_eq!(
            tx.publish_events(),
            Wake {
                eventfd: true,
                bell: true
            }
        );
    }

    #[test]
    fn full_ring_then_room_wakes_the_producer() {
        let (mut tx, mut rx) = pair();
        let big = vec![7u8; RING_CAPACITY_MIN / 4];
        let kind = cpg_core::ipc::RequestKind::McastMore as u16;
        let mut n = 0;
        while tx.write_parts(kind, 0, &[&big], 0).is_ok() {
            n += 1;
        }
        assert!(n >= 3);
        assert_eq!(tx.write_parts(kind, 0, &[&big], 0), Err(WriteError::Full));
        tx.publish();
        assert!(!tx.prepare_wait(big.len(), 0).unwrap(), "still full");
        rx.refresh().unwrap();
        let mut body = Vec::new();
        rx.next_into(&mut body).unwrap().unwrap();
        assert_eq!(body, big);
        assert!(rx.release(), "the producer waits: signal it");
        assert!(tx.fits(big.len(), 0).unwrap());
    }

    #[test]
    fn fits_all_is_a_dry_run() {
        let (mut tx, mut rx) = pair();
        let quarter = RING_CAPACITY_MIN / 4;
        let kind = cpg_core::ipc::RequestKind::McastMore as u16;
        assert!(tx.fits_all([quarter - 8; 3].into_iter(), 0).unwrap());
        assert!(!tx.fits_all([quarter; 5].into_iter(), 0).unwrap());
        assert_eq!(tx.free(), RING_CAPACITY_MIN, "nothing written");
        tx.write_parts(kind, 0, &[&vec![1u8; quarter]], 0).unwrap();
        tx.write_parts(kind, 0, &[&vec![2u8; quarter]], 0).unwrap();
        tx.publish();
        assert!(!tx.fits_all([quarter; 2].into_iter(), 0).unwrap());
        // the consumer makes room: the dry run refreshes the tail
        rx.refresh().unwrap();
        let mut body = Vec::new();
        rx.next_into(&mut body).unwrap().unwrap();
        rx.release();
        assert!(tx.fits_all([quarter; 2].into_iter(), 0).unwrap());
    }

    #[test]
    fn an_impossible_head_is_corrupt() {
        let (_tx, mut rx) = pair();
        rx.words.head().store(3, Ordering::Release);
        assert!(rx.refresh().is_err());
        rx.words
            .head()
            .store(10 * RING_CAPACITY_MIN as u64, Ordering::Release);
        assert!(rx.refresh().is_err());
    }
}

//! A handle's staging area: the part of a handle a multicast touches
//! without the node lock.
//!
//! `mcast_joined` of a small message (or `zcb_mcast_joined` of a buffer,
//! which moves, not its bytes) appends it to the handle's staging area
//! under this handle's own short lock and wakes the transport; the
//! transport's next step (and every operation under the node lock) moves
//! staged messages into the engine in order ("drain") before anything
//! else, so a staged message is ordered exactly as if it had been
//! submitted directly. `open` and `blocked` mirror the handle's state and
//! the engine's flow control; the node lock refreshes them after every
//! operation, and closes `open` (after a drain) before a handle is evicted,
//! finalized or stopped, so a message accepted here is never dropped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use cpg_core::engine::{Engine, FrameBuf, ZcError};
use cpg_core::{CsError, GroupName, Guarantee, Instant};

use super::lock;
use super::mailbox::EVENT_OVERHEAD;
use super::zc::{SmallZc, ZcFrame, ZcStorage};

/// Largest message that takes the staged send path (bigger ones go to the
/// engine directly: one copy, and few of them per second anyway).
pub(crate) const STAGE_MSG_MAX: usize = 16 * 1024;
/// Bytes a handle may have staged before `mcast` answers TRY_AGAIN.
const STAGE_BYTES: usize = 256 * 1024;
/// Most zero-copy buffers one handle may have staged.
const STAGE_ZC_MAX: usize = 64;
/// Most small zero-copy buffers a handle keeps for reuse.
pub(crate) const SPARE_SMALL_ZC: usize = 64;

/// A handle's staging area (see the module docs).
#[derive(Default)]
pub(crate) struct Staging {
    pub(crate) st: Mutex<StagingState>,
}

/// What the staging lock guards: the mirror of the handle's state, the
/// staged messages, and spare small buffers.
#[derive(Default)]
pub(crate) struct StagingState {
    /// Staging allowed: joined (or joining), not evicted, node running.
    pub(crate) open: bool,
    /// TRY_AGAIN: engine flow control or handle back-pressure.
    pub(crate) blocked: bool,
    /// Back-pressure budget left (half the queue cap minus the handle's
    /// queued events and undelivered multicasts) for staged messages, each
    /// counted as `EVENT_OVERHEAD` + its length.
    pub(crate) room: usize,
    /// The engine's `max_message_size`.
    pub(crate) max_len: usize,
    /// The handle's pid and group while `open`.
    pub(crate) pid: u32,
    pub(crate) group: Option<Arc<GroupName>>,
    /// The staged messages, in order.
    queue: Queue,
    /// Small zero-copy buffers whose messages went: reused by `zcb_alloc`.
    /// (Boxed: a `ZcBuf` holds it as `Box<dyn ZcStorage>` without a new
    /// allocation.)
    #[allow(clippy::vec_box)]
    pub(crate) spare: Vec<Box<SmallZc>>,
}

/// Staged messages: copied ones in one byte buffer, zero-copy buffers
/// between them (FIFO with them).
#[derive(Default)]
struct Queue {
    /// Copied messages: guarantee and end offset in `data`; the first
    /// starts at `head` (drained bytes are not shifted out at every drain).
    msgs: VecDeque<(Guarantee, usize)>,
    data: Vec<u8>,
    head: usize,
    /// Zero-copy buffers, each after the first `before` entries of `msgs`:
    /// the buffer travels, its bytes are not copied.
    zc: VecDeque<StagedZc>,
    /// Sum of the staged zero-copy messages' lengths.
    zc_bytes: usize,
}

/// A zero-copy message staged on a handle (see [`Queue::zc`]).
struct StagedZc {
    before: usize,
    guarantee: Guarantee,
    /// A `ZcFrame` of the node's frame type.
    storage: Box<dyn ZcStorage>,
    len: usize,
}

/// Where a drain submits: the engine (a test gives a fake).
pub(crate) trait Submit<F> {
    /// As [`Engine::submit_batch`].
    fn submit_batch<'a, I>(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
        msgs: I,
    ) -> (usize, Result<(), CsError>)
    where
        I: Iterator<Item = (Guarantee, &'a [u8])> + Clone;
    /// As [`Engine::submit_zc`].
    fn submit_zc(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
        guarantee: Guarantee,
        buf: F,
        payload: Range<usize>,
    ) -> Result<(), ZcError<F>>;
}

impl<F: FrameBuf> Submit<F> for Engine<F> {
    #[inline]
    fn submit_batch<'a, I>(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
        msgs: I,
    ) -> (usize, Result<(), CsError>)
    where
        I: Iterator<Item = (Guarantee, &'a [u8])> + Clone,
    {
        Engine::submit_batch(self, now, pid, group, msgs)
    }
    #[inline]
    fn submit_zc(
        &mut self,
        now: Instant,
        pid: u32,
        group: &GroupName,
        guarantee: Guarantee,
        buf: F,
        payload: Range<usize>,
    ) -> Result<(), ZcError<F>> {
        Engine::submit_zc(self, now, pid, group, guarantee, buf, payload)
    }
}

/// How a run of copied messages went.
enum Run {
    /// All went; their cost.
    All(usize),
    /// The engine refused one (TRY_AGAIN): it and those after it stay;
    /// the cost of those that went.
    Refused(usize),
    /// The engine takes nothing more (shut down): the queue was emptied.
    Closed,
}

impl Staging {
    /// Move the staged messages into the engine, in order; `inflight` (the
    /// handle's back-pressure count) grows by what went. False if the engine
    /// refused one (TRY_AGAIN): it and those after it stay staged.
    pub(crate) fn drain<F: FrameBuf + Send + Sync + 'static, E: Submit<F>>(
        &self,
        engine: &mut E,
        inflight: Option<&mut usize>,
        now: Instant,
    ) -> bool {
        let mut st = lock(&self.st);
        if st.queue.is_empty() {
            return true;
        }
        let StagingState {
            pid,
            group,
            queue,
            room,
            ..
        } = &mut *st;
        let Some(group) = group.as_deref() else {
            // staging requires a group: nothing can be here
            queue.clear();
            return true;
        };
        let (all, added) = queue.drain_into(engine, now, *pid, group);
        if let Some(i) = inflight {
            *i += added;
        }
        // what went now counts in the handle's inflight, not in the staging
        *room = room.saturating_sub(added);
        all
    }
}

impl StagingState {
    /// Nothing staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Stage a message: `None` if the handle is not open for staging (the
    /// caller takes the node lock path).
    pub(crate) fn stage(
        &mut self,
        guarantee: Guarantee,
        iov: &[IoSlice<'_>],
        total: usize,
    ) -> Option<Result<(), CsError>> {
        if !self.open || total > self.max_len {
            return None;
        }
        if self.blocked {
            return Some(Err(CsError::TryAgain));
        }
        let q = &mut self.queue;
        let staged = q.data.len() - q.head;
        let staged_cost = q.cost();
        // with nothing staged a message of any size is taken while the handle
        // is not blocked, as the locked path takes one (else one larger than
        // the room would be refused forever)
        if staged_cost > 0
            && (staged + total > STAGE_BYTES || staged_cost + EVENT_OVERHEAD + total > self.room)
        {
            return Some(Err(CsError::TryAgain));
        }
        q.push_copied(guarantee, iov, total);
        Some(Ok(()))
    }

    /// Whether [`StagingState::stage_zc`] would refuse a buffer of `len`
    /// bytes now with `TRY_AGAIN` (with nothing staged any size is taken,
    /// as in `stage`). A large copied send asks first, so that a refusal
    /// does not cost it a copy of the message into a driver buffer.
    pub(crate) fn zc_full(&self, len: usize) -> bool {
        let q = &self.queue;
        let staged_cost = q.cost();
        self.blocked
            || (staged_cost > 0
                && (q.zc.len() >= STAGE_ZC_MAX || staged_cost + EVENT_OVERHEAD + len > self.room))
    }

    /// Stage a zero-copy buffer, as [`StagingState::stage`]; a refused
    /// buffer comes back (with `None` for "not open").
    #[allow(clippy::type_complexity)]
    pub(crate) fn stage_zc(
        &mut self,
        guarantee: Guarantee,
        storage: Box<dyn ZcStorage>,
        len: usize,
    ) -> Result<(), (Option<CsError>, Box<dyn ZcStorage>)> {
        if !self.open || len > self.max_len {
            return Err((None, storage));
        }
        if self.zc_full(len) {
            return Err((Some(CsError::TryAgain), storage));
        }
        let q = &mut self.queue;
        let before = q.msgs.len();
        q.zc.push_back(StagedZc {
            before,
            guarantee,
            storage,
            len,
        });
        q.zc_bytes += len;
        Ok(())
    }
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.zc.is_empty()
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.data.clear();
        self.head = 0;
        self.zc.clear();
        self.zc_bytes = 0;
    }

    /// What the staged messages count against the room.
    fn cost(&self) -> usize {
        EVENT_OVERHEAD * (self.msgs.len() + self.zc.len())
            + (self.data.len() - self.head)
            + self.zc_bytes
    }

    fn push_copied(&mut self, guarantee: Guarantee, iov: &[IoSlice<'_>], total: usize) {
        if self.data.len() + total > STAGE_BYTES {
            // shift the staged bytes to the front (amortized: at most once per
            // STAGE_BYTES drained)
            let head = self.head;
            self.data.drain(..head);
            for m in self.msgs.iter_mut() {
                m.1 -= head;
            }
            self.head = 0;
        }
        for p in iov {
            self.data.extend_from_slice(p);
        }
        let end = self.data.len();
        self.msgs.push_back((guarantee, end));
    }

    /// Submit everything in order: copied runs between zero-copy buffers.
    /// Whether all went, and the cost of what went.
    fn drain_into<F: FrameBuf + Send + Sync + 'static, E: Submit<F>>(
        &mut self,
        engine: &mut E,
        now: Instant,
        pid: u32,
        group: &GroupName,
    ) -> (bool, usize) {
        let mut added = 0usize;
        loop {
            match self.submit_copied_run(engine, now, pid, group) {
                Run::All(a) => added += a,
                Run::Refused(a) => return (false, added + a),
                Run::Closed => return (true, added),
            }
            match self.submit_next_zc(engine, now, pid, group) {
                None => return (true, added),
                Some(Ok(a)) => added += a,
                Some(Err(())) => return (false, added),
            }
        }
    }

    /// The copied messages up to the next zero-copy one: one engine call
    /// and one allocation for the run.
    fn submit_copied_run<F, E: Submit<F>>(
        &mut self,
        engine: &mut E,
        now: Instant,
        pid: u32,
        group: &GroupName,
    ) -> Run {
        let run = self.zc.front().map_or(self.msgs.len(), |z| z.before);
        if run == 0 {
            return Run::All(0);
        }
        let bytes: &[u8] = &self.data;
        let mut at = self.head;
        // `move`: the iterator owns its position, so the engine's clones
        // each walk from the first message
        let items = self.msgs.iter().take(run).map(move |&(guarantee, end)| {
            let m = &bytes[at..end];
            at = end;
            (guarantee, m)
        });
        let (n, r) = engine.submit_batch(now, pid, group, items);
        // the handle was joined when it staged and every change of that
        // (leave, finalize, eviction, stop) closes staging and drains
        // first: only TRY_AGAIN, or LIBRARY once the engine shut down
        debug_assert!(
            n == run || matches!(r, Err(CsError::TryAgain | CsError::Library)),
            "staged message refused: {r:?}"
        );
        if n < run && r != Err(CsError::TryAgain) {
            // the engine takes nothing more (shut down): nothing to keep
            self.clear();
            return Run::Closed;
        }
        let went = self.pop_copied(n);
        if n < run {
            Run::Refused(went)
        } else {
            Run::All(went)
        }
    }

    /// Drop the first `n` copied messages (they went): their cost.
    fn pop_copied(&mut self, n: usize) -> usize {
        let end = if n == 0 {
            self.head
        } else {
            self.msgs[n - 1].1
        };
        let went = EVENT_OVERHEAD * n + (end - self.head);
        self.msgs.drain(..n);
        if self.msgs.is_empty() {
            self.data.clear();
            self.head = 0;
        } else {
            self.head = end;
        }
        for z in self.zc.iter_mut() {
            z.before -= n;
        }
        went
    }

    /// Submit the next zero-copy buffer (due: no copied message before
    /// it). `None` if there is none; `Err` if the engine refused it with
    /// TRY_AGAIN (it stays first); else the cost of what went.
    fn submit_next_zc<F: FrameBuf + Send + Sync + 'static, E: Submit<F>>(
        &mut self,
        engine: &mut E,
        now: Instant,
        pid: u32,
        group: &GroupName,
    ) -> Option<Result<usize, ()>> {
        let StagedZc {
            guarantee,
            storage,
            len,
            ..
        } = self.zc.pop_front()?;
        let frame = match storage.into_any().downcast::<ZcFrame<F>>() {
            Ok(b) => *b,
            Err(_) => {
                // only this node's zcb_mcast stages, with its own frames
                debug_assert!(false, "a staged zero-copy buffer of another type");
                self.zc_bytes -= len;
                return Some(Ok(0));
            }
        };
        let (start, cap) = (frame.start, frame.len);
        match engine.submit_zc(now, pid, group, guarantee, frame.buf, start..start + len) {
            Ok(()) => {
                self.zc_bytes -= len;
                Some(Ok(EVENT_OVERHEAD + len))
            }
            Err(e) if e.error != CsError::TryAgain => {
                debug_assert!(
                    e.error == CsError::Library,
                    "staged message refused: {:?}",
                    e.error
                );
                self.zc_bytes -= len;
                Some(Ok(0))
            }
            Err(e) => {
                match e.buf {
                    Some(buf) => self.zc.push_front(StagedZc {
                        before: 0,
                        guarantee,
                        storage: Box::new(ZcFrame {
                            buf,
                            start,
                            len: cap,
                        }),
                        len,
                    }),
                    None => self.zc_bytes -= len,
                }
                Some(Err(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Buf = Arc<[u8]>;

    /// An engine that takes `accept` messages, then answers TRY_AGAIN (or,
    /// `closed`, LIBRARY: shut down); it records what it took (zero-copy
    /// ones marked).
    #[derive(Default)]
    struct Fake {
        accept: usize,
        closed: bool,
        got: Vec<(Vec<u8>, bool)>,
    }

    impl Fake {
        fn accepting(accept: usize) -> Fake {
            Fake {
                accept,
                ..Fake::default()
            }
        }
        /// What a refusal answers.
        fn refusal(&self) -> CsError {
            if self.closed {
                CsError::Library
            } else {
                CsError::TryAgain
            }
        }
    }

    impl Submit<Buf> for Fake {
        fn submit_batch<'a, I>(
            &mut self,
            _: Instant,
            _: u32,
            _: &GroupName,
            msgs: I,
        ) -> (usize, Result<(), CsError>)
        where
            I: Iterator<Item = (Guarantee, &'a [u8])> + Clone,
        {
            let mut n = 0;
            for (_, m) in msgs {
                if self.accept == 0 {
                    return (n, Err(self.refusal()));
                }
                self.accept -= 1;
                self.got.push((m.to_vec(), false));
                n += 1;
            }
            (n, Ok(()))
        }
        fn submit_zc(
            &mut self,
            _: Instant,
            _: u32,
            _: &GroupName,
            _: Guarantee,
            buf: Buf,
            payload: Range<usize>,
        ) -> Result<(), ZcError<Buf>> {
            if self.accept == 0 {
                return Err(ZcError {
                    error: self.refusal(),
                    buf: Some(buf),
                });
            }
            self.accept -= 1;
            self.got.push((buf[payload].to_vec(), true));
            Ok(())
        }
    }

    fn open(room: usize) -> Staging {
        let s = Staging::default();
        {
            let mut st = lock(&s.st);
            st.open = true;
            st.room = room;
            st.max_len = 1 << 20;
            st.pid = 7;
            st.group = Some(Arc::new(GroupName::new(b"g").unwrap()));
        }
        s
    }

    fn stage(s: &Staging, m: &[u8]) -> Option<Result<(), CsError>> {
        lock(&s.st).stage(Guarantee::Agreed, &[IoSlice::new(m)], m.len())
    }

    /// A zero-copy buffer holding `m` after the headroom.
    fn zbuf(m: &[u8]) -> Box<dyn ZcStorage> {
        let h = cpg_core::limits::ZC_HEADROOM;
        let mut v = vec![0u8; h + m.len()];
        v[h..].copy_from_slice(m);
        Box::new(ZcFrame::<Buf> {
            buf: Arc::from(v),
            start: h,
            len: m.len(),
        })
    }

    fn stage_zc(s: &Staging, m: &[u8]) -> Result<(), Option<CsError>> {
        lock(&s.st)
            .stage_zc(Guarantee::Agreed, zbuf(m), m.len())
            .map_err(|(e, _)| e)
    }

    /// Stage each message in order: those starting with `Z` as zero-copy
    /// buffers, the others copied.
    fn stage_all(s: &Staging, msgs: &[&str]) {
        for m in msgs {
            if m.starts_with('Z') {
                stage_zc(s, m.as_bytes()).unwrap();
            } else {
                stage(s, m.as_bytes()).unwrap().unwrap();
            }
        }
    }

    fn drain(s: &Staging, e: &mut Fake, inflight: &mut usize) -> bool {
        s.drain(e, Some(inflight), Instant::ZERO)
    }

    fn got(e: &Fake) -> Vec<(&[u8], bool)> {
        e.got.iter().map(|(m, z)| (&m[..], *z)).collect()
    }

    const BIG: usize = 1 << 30;

    #[test]
    fn zc_full_answers_what_stage_zc_would_do() {
        // room for one 1,000-byte message and its overhead, not two
        let s = open(2 * EVENT_OVERHEAD + 1_500);
        let m = [7u8; 1_000];
        assert!(!lock(&s.st).zc_full(m.len()), "nothing staged: taken");
        stage_zc(&s, &m).unwrap();
        assert!(lock(&s.st).zc_full(m.len()), "the room is spent");
        assert_eq!(stage_zc(&s, &m), Err(Some(CsError::TryAgain)));
        assert!(!lock(&s.st).zc_full(100), "what still fits");
        stage_zc(&s, &[1u8; 100]).unwrap();
        lock(&s.st).blocked = true;
        assert!(lock(&s.st).zc_full(1), "a blocked handle takes nothing");
        assert_eq!(stage_zc(&s, &[1u8]), Err(Some(CsError::TryAgain)));
    }

    #[test]
    fn copied_and_zero_copy_messages_drain_in_the_order_staged() {
        let s = open(BIG);
        stage_all(&s, &["a", "b", "Z1", "c", "Z2", "Z3", "d"]);
        let mut e = Fake::accepting(usize::MAX);
        let mut inflight = 0;
        assert!(drain(&s, &mut e, &mut inflight));
        let expect: Vec<(&[u8], bool)> = vec![
            (b"a", false),
            (b"b", false),
            (b"Z1", true),
            (b"c", false),
            (b"Z2", true),
            (b"Z3", true),
            (b"d", false),
        ];
        assert_eq!(got(&e), expect);
        assert_eq!(inflight, 7 * EVENT_OVERHEAD + 10);
        assert!(lock(&s.st).is_empty());
        assert_eq!(lock(&s.st).queue.cost(), 0);
        // drained again: nothing to do
        assert!(drain(&s, &mut e, &mut inflight));
        assert_eq!(e.got.len(), 7);
    }

    #[test]
    fn staging_answers_try_again_at_the_budget() {
        let per = EVENT_OVERHEAD + 4;
        let s = open(3 * per);
        for _ in 0..3 {
            assert_eq!(stage(&s, b"abcd"), Some(Ok(())));
        }
        assert_eq!(stage(&s, b"abcd"), Some(Err(CsError::TryAgain)));
        assert_eq!(stage_zc(&s, b"wxyz"), Err(Some(CsError::TryAgain)));
        assert_eq!(lock(&s.st).queue.cost(), 3 * per);
    }

    #[test]
    fn an_empty_staging_area_takes_one_message_beyond_the_room() {
        let s = open(0);
        assert_eq!(stage(&s, b"more than no room"), Some(Ok(())));
        assert_eq!(stage(&s, b"x"), Some(Err(CsError::TryAgain)));
        let z = open(0);
        assert_eq!(stage_zc(&z, b"zero copy"), Ok(()));
        assert_eq!(stage_zc(&z, b"x"), Err(Some(CsError::TryAgain)));
    }

    #[test]
    fn blocked_closed_or_too_big_is_refused() {
        let s = open(BIG);
        lock(&s.st).blocked = true;
        assert_eq!(stage(&s, b"a"), Some(Err(CsError::TryAgain)));
        assert_eq!(stage_zc(&s, b"a"), Err(Some(CsError::TryAgain)));
        let mut st = lock(&s.st);
        st.blocked = false;
        st.max_len = 1;
        assert_eq!(st.stage(Guarantee::Agreed, &[IoSlice::new(b"ab")], 2), None);
        assert!(matches!(
            st.stage_zc(Guarantee::Agreed, zbuf(b"ab"), 2),
            Err((None, _))
        ));
        st.max_len = 10;
        st.open = false;
        assert_eq!(st.stage(Guarantee::Agreed, &[IoSlice::new(b"a")], 1), None);
        assert!(st.is_empty());
    }

    #[test]
    fn at_most_stage_zc_max_buffers_wait() {
        let s = open(BIG);
        for _ in 0..STAGE_ZC_MAX {
            stage_zc(&s, b"z").unwrap();
        }
        assert_eq!(stage_zc(&s, b"z"), Err(Some(CsError::TryAgain)));
        assert_eq!(stage(&s, b"copied"), Some(Ok(())));
    }

    #[test]
    fn a_refused_copied_message_stays_first_and_drains_later() {
        let s = open(BIG);
        stage_all(&s, &["a", "b", "Z1", "c", "Z2", "d"]);
        let mut e = Fake::accepting(3);
        let mut inflight = 0;
        assert!(!drain(&s, &mut e, &mut inflight), "c was refused");
        assert_eq!(inflight, 3 * EVENT_OVERHEAD + 4);
        // staged after the refusal: behind what waits
        stage_all(&s, &["e"]);
        assert!(!drain(&s, &mut e, &mut inflight), "still full");
        e.accept = usize::MAX;
        assert!(drain(&s, &mut e, &mut inflight));
        let order: Vec<&[u8]> = e.got.iter().map(|(m, _)| &m[..]).collect();
        assert_eq!(order, [&b"a"[..], b"b", b"Z1", b"c", b"Z2", b"d", b"e"]);
        assert_eq!(inflight, 7 * EVENT_OVERHEAD + 9);
        assert!(lock(&s.st).is_empty());
    }

    #[test]
    fn a_refused_zero_copy_buffer_stays_first_and_drains_later() {
        let s = open(BIG);
        stage_all(&s, &["a", "Z1", "b"]);
        let mut e = Fake::accepting(1);
        let mut inflight = 0;
        assert!(!drain(&s, &mut e, &mut inflight), "Z1 was refused");
        assert_eq!(got(&e), [(&b"a"[..], false)]);
        {
            let st = lock(&s.st);
            assert_eq!(st.queue.zc.len(), 1);
            assert_eq!(st.queue.zc[0].before, 0);
            assert_eq!(st.queue.zc_bytes, 2);
            assert_eq!(st.queue.cost(), 2 * EVENT_OVERHEAD + 3);
        }
        e.accept = usize::MAX;
        assert!(drain(&s, &mut e, &mut inflight));
        assert_eq!(got(&e), [(&b"a"[..], false), (b"Z1", true), (b"b", false)]);
    }

    #[test]
    fn the_room_shrinks_by_what_drained() {
        let s = open(1000);
        stage_all(&s, &["abcd"]);
        let mut e = Fake::accepting(usize::MAX);
        assert!(s.drain(&mut e, None, Instant::ZERO));
        assert_eq!(lock(&s.st).room, 1000 - EVENT_OVERHEAD - 4);
    }

    #[test]
    fn a_shut_down_engine_empties_the_staging_area() {
        let s = open(BIG);
        stage_all(&s, &["a", "Z"]);
        let mut closed = Fake {
            closed: true,
            ..Fake::default()
        };
        assert!(s.drain(&mut closed, None, Instant::ZERO));
        assert!(lock(&s.st).is_empty());
        assert_eq!(lock(&s.st).queue.cost(), 0);
    }

    #[test]
    fn staged_bytes_shift_to_the_front_when_the_buffer_would_grow_past_its_cap() {
        let s = open(BIG);
        let big = vec![1u8; STAGE_BYTES / 2];
        stage(&s, &big).unwrap().unwrap();
        stage(&s, b"x").unwrap().unwrap();
        let mut e = Fake::accepting(1);
        assert!(!s.drain(&mut e, None, Instant::ZERO));
        assert_eq!(lock(&s.st).queue.head, STAGE_BYTES / 2);
        let big2 = vec![2u8; STAGE_BYTES / 2 + 1];
        stage(&s, &big2).unwrap().unwrap();
        assert_eq!(lock(&s.st).queue.head, 0, "shifted");
        e.accept = usize::MAX;
        assert!(s.drain(&mut e, None, Instant::ZERO));
        assert_eq!(e.got[1].0, b"x");
        assert_eq!(e.got[2].0, big2);
    }
}

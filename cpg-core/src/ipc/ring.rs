//! One single-producer single-consumer byte ring: record framing and index
//! bookkeeping, pure.
//!
//! # What it owns
//!
//! A ring is `capacity` bytes of data (a power of two, [`RING_CAPACITY_MIN`]
//! ..= [`RING_CAPACITY_MAX`]) and two `u64` indices that only grow: `head`
//! (bytes the producer has written, published by the producer) and `tail`
//! (bytes the consumer is done with, published by the consumer). An index
//! names the position `index & (capacity - 1)`; indices wrap at 2⁶⁴ with
//! wrapping arithmetic, so only `head - tail` matters, and it is at most
//! `capacity`.
//!
//! Records are 8-byte aligned: an 8-byte header, then the body, padded to
//! 8 bytes:
//!
//! ```text
//! header  0..4 body length u32 | 4..6 kind u16 | 6..8 flags u16   (little-endian)
//! body    body length bytes, then zero to seven bytes of padding
//! ```
//!
//! A record never wraps around the end of the data area. When the next
//! record does not fit before the end, the producer first writes a PAD
//! record (kind 0, no flags) that fills the rest of the area, and the
//! record starts at position 0. A PAD is published together with the
//! record it makes room for. A record body is at most `capacity / 4`
//! bytes ([`Ring::body_max`]): so an empty ring always has room for the
//! largest record wherever its head stands (the PAD is shorter than the
//! record it precedes, and both together are under half the capacity).
//! A larger message travels in pieces ([`super::pieces`]).
//!
//! # What it must not do
//!
//! It holds no pointer and touches no shared memory: the caller passes
//! the indices in (read with the orderings of [`super::wake`]) and, to read
//! a record, a function that fetches the 8 header bytes at a position. It
//! trusts nothing: the indices the other side publishes and every header
//! are checked against each other and the capacity, and anything no honest
//! peer writes is a typed [`Corrupt`] (the daemon then disconnects that
//! client alone). No input makes it panic or hand out a position outside
//! the data area.
//!
//! # References
//! `docs/spec/ipc.md` "Rings"; smoltcp `storage::RingBuffer` (the
//! `Full`-is-a-result convention).

use core::fmt;
use core::ops::Range;

use super::codec::{Message, MsgError};
use super::header::LayoutError;
use super::{Direction, RING_CAPACITY_MAX, RING_CAPACITY_MIN};

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Alignment of every record (and of the indices).
pub const RECORD_ALIGN: usize = 8;
/// The kind of a PAD record (on both rings).
pub const KIND_PAD: u16 = 0;

/// Bytes of a record with a body of `body_len` bytes (header and padding
/// included), or `None` if that overflows.
pub const fn record_len(body_len: usize) -> Option<usize> {
    match body_len.checked_add(RECORD_HEADER_LEN + RECORD_ALIGN - 1) {
        Some(n) => Some(n & !(RECORD_ALIGN - 1)),
        None => None,
    }
}

/// [`record_len`] for constants (`body_len` far below `usize::MAX`).
pub(crate) const fn record_len_const(body_len: usize) -> usize {
    (body_len + RECORD_HEADER_LEN + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// The 8 bytes in front of every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// Bytes of the body (padding excluded).
    pub body_len: u32,
    /// [`KIND_PAD`], or the kind of a message.
    pub kind: u16,
    /// Defined per kind; undefined bits are an error of the message.
    pub flags: u16,
}

impl RecordHeader {
    /// Decode (no validation: [`Ring::next`] validates in context).
    pub const fn from_bytes(b: [u8; RECORD_HEADER_LEN]) -> RecordHeader {
        RecordHeader {
            body_len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// Encode.
    pub const fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let l = self.body_len.to_le_bytes();
        let k = self.kind.to_le_bytes();
        let f = self.flags.to_le_bytes();
        [l[0], l[1], l[2], l[3], k[0], k[1], f[0], f[1]]
    }
}

/// Why a ring operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingError {
    /// Not enough free bytes now (an ordinary result: wait or answer
    /// TRY_AGAIN).
    Full,
    /// A body above [`Ring::body_max`]: send it in pieces.
    TooLarge {
        /// Body bytes asked for.
        len: usize,
        /// The largest body of this ring.
        max: usize,
    },
    /// The other side published something no honest peer writes.
    Corrupt(Corrupt),
    /// The data slice given is shorter than the ring's capacity.
    DataTooShort,
}

/// What was impossible about the ring's shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corrupt {
    /// The indices are impossible: the tail ahead of the head, head and
    /// tail further apart than the capacity, an index moved backwards, or
    /// a tail past what was published.
    Indices,
    /// An index that is not a multiple of 8.
    Unaligned,
    /// A record longer than what the producer published.
    Overrun,
    /// A record that would cross the end of the data area.
    Wraps,
    /// A record body above `capacity / 4`.
    TooLong,
    /// A kind that does not travel on this ring.
    UnknownKind(u16),
    /// A PAD with flags, one that does not reach the end of the data area,
    /// one not followed by a published record, two in a row, or one in
    /// front of a record that would have fitted before the end.
    BadPad,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corrupt::Indices => write!(f, "impossible ring indices"),
            Corrupt::Unaligned => write!(f, "unaligned ring index"),
            Corrupt::Overrun => write!(f, "record runs past the published head"),
            Corrupt::Wraps => write!(f, "record crosses the end of the ring"),
            Corrupt::TooLong => write!(f, "record body above capacity / 4"),
            Corrupt::UnknownKind(k) => write!(f, "record kind {k:#06x} not on this ring"),
            Corrupt::BadPad => write!(f, "misplaced PAD record"),
        }
    }
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Full => write!(f, "ring full"),
            RingError::TooLarge { len, max } => {
                write!(f, "record body of {len} bytes above the ring's {max}")
            }
            RingError::Corrupt(c) => write!(f, "corrupt ring: {c}"),
            RingError::DataTooShort => write!(f, "data slice shorter than the ring"),
        }
    }
}

impl core::error::Error for RingError {}

impl From<Corrupt> for RingError {
    fn from(c: Corrupt) -> RingError {
        RingError::Corrupt(c)
    }
}

/// A PAD record to write before a reserved record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pad {
    /// Its position in the data area.
    pub pos: usize,
    /// Bytes from `pos` to the end of the data area (header included).
    pub len: usize,
}

impl Pad {
    /// Its header.
    pub const fn header(&self) -> [u8; RECORD_HEADER_LEN] {
        RecordHeader {
            // len ≤ capacity ≤ 2^30 for a PAD from `reserve`: fits.
            body_len: self.len.saturating_sub(RECORD_HEADER_LEN) as u32,
            kind: KIND_PAD,
            flags: 0,
        }
        .to_bytes()
    }
}

/// Room for one record, from [`Ring::reserve`]: write the PAD (if any) and
/// the record, then publish `new_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// A PAD to write first, up to the end of the data area.
    pub pad: Option<Pad>,
    /// Where the record (header first) goes.
    pub pos: usize,
    /// Bytes of the body.
    pub body_len: usize,
    /// Bytes of the record, header and padding included.
    pub record_len: usize,
    /// The head once this record is written.
    pub new_head: u64,
}

impl Reservation {
    /// The record's bytes in the data area.
    pub const fn record(&self) -> Range<usize> {
        self.pos..self.pos.saturating_add(self.record_len)
    }

    /// The body's bytes in the data area.
    pub const fn body(&self) -> Range<usize> {
        let start = self.pos.saturating_add(RECORD_HEADER_LEN);
        start..start.saturating_add(self.body_len)
    }

    /// The record header for a record of `kind` with `flags`.
    pub const fn header(&self, kind: u16, flags: u16) -> [u8; RECORD_HEADER_LEN] {
        RecordHeader {
            // body_len ≤ capacity / 4: fits.
            body_len: self.body_len as u32,
            kind,
            flags,
        }
        .to_bytes()
    }

    /// Write the PAD (if any) and the record (header, `body`, zero
    /// padding) into `data`, the ring's data area.
    ///
    /// # Errors
    /// [`MsgError::BufferTooSmall`] if `data` does not hold the record,
    /// [`MsgError::LengthMismatch`] if `body` is not `body_len` bytes.
    pub fn fill(
        &self,
        data: &mut [u8],
        kind: u16,
        flags: u16,
        body: &[u8],
    ) -> Result<(), MsgError> {
        if body.len() != self.body_len {
            return Err(MsgError::LengthMismatch);
        }
        let (header, rest) = self.frame(data)?;
        header.copy_from_slice(&self.header(kind, flags));
        let (b, pad) = rest.split_at_mut(self.body_len);
        b.copy_from_slice(body);
        pad.fill(0);
        Ok(())
    }

    /// Write the PAD (if any) and `msg` as the record into `data`, the
    /// ring's data area.
    ///
    /// # Errors
    /// [`MsgError::BufferTooSmall`] if `data` does not hold the record,
    /// [`MsgError::LengthMismatch`] if `msg` is not `body_len` bytes; the
    /// message's own emit errors.
    pub fn emit<'a, M: Message<'a>>(&self, data: &mut [u8], msg: &M) -> Result<(), MsgError> {
        if msg.body_len() != self.body_len {
            return Err(MsgError::LengthMismatch);
        }
        let (header, rest) = self.frame(data)?;
        let (b, pad) = rest.split_at_mut(self.body_len);
        msg.emit_body(b)?;
        pad.fill(0);
        header.copy_from_slice(&self.header(msg.kind(), msg.flags()));
        Ok(())
    }

    /// Check both ranges, write the PAD, split the record's bytes into
    /// header and rest. Nothing is written unless both fit.
    fn frame<'d>(&self, data: &'d mut [u8]) -> Result<(&'d mut [u8], &'d mut [u8]), MsgError> {
        let rec = self.record();
        if rec.end > data.len() || rec.len() < RECORD_HEADER_LEN.saturating_add(self.body_len) {
            return Err(MsgError::BufferTooSmall);
        }
        if let Some(pad) = self.pad {
            // A PAD from `reserve` is at least a header and ends where the
            // data area does.
            let h = pad
                .pos
                .checked_add(RECORD_HEADER_LEN)
                .filter(|&end| pad.len >= RECORD_HEADER_LEN && end <= data.len())
                .and_then(|end| data.get_mut(pad.pos..end))
                .ok_or(MsgError::BufferTooSmall)?;
            h.copy_from_slice(&pad.header());
        }
        let rec = data.get_mut(rec).ok_or(MsgError::BufferTooSmall)?;
        Ok(rec.split_at_mut(RECORD_HEADER_LEN))
    }
}

/// The next record, from [`Ring::next`]: its body lies at `body` in the
/// data area; once done with it, the consumer's tail is `new_tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// A kind this ring's direction carries (never PAD).
    pub kind: u16,
    /// The record's flags (the message checks them).
    pub flags: u16,
    /// The body's bytes in the data area.
    pub body: Range<usize>,
    /// The tail after this record (and a PAD before it, if any).
    pub new_tail: u64,
}

/// The geometry of one ring: its capacity. Every function is pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ring {
    capacity: usize,
}

impl Ring {
    /// A ring of `capacity` data bytes.
    ///
    /// # Errors
    /// [`LayoutError::Capacity`] unless `capacity` is a power of two in
    /// [`RING_CAPACITY_MIN`]`..=`[`RING_CAPACITY_MAX`].
    pub const fn new(capacity: usize) -> Result<Ring, LayoutError> {
        if !capacity.is_power_of_two()
            || capacity < RING_CAPACITY_MIN
            || capacity > RING_CAPACITY_MAX
        {
            return Err(LayoutError::Capacity(capacity));
        }
        Ok(Ring { capacity })
    }

    /// Bytes of data.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest record body: `capacity / 4`.
    pub const fn body_max(&self) -> usize {
        self.capacity / 4
    }

    /// The position an index names.
    pub const fn position(&self, index: u64) -> usize {
        // capacity ≤ 2^30: the masked value fits any usize.
        (index & (self.capacity as u64 - 1)) as usize
    }

    /// Bytes published and not yet consumed.
    ///
    /// # Errors
    /// [`Corrupt::Unaligned`], [`Corrupt::Indices`] (tail ahead of head, or
    /// further apart than the capacity).
    pub const fn used(&self, head: u64, tail: u64) -> Result<usize, RingError> {
        if (head | tail) % RECORD_ALIGN as u64 != 0 {
            return Err(RingError::Corrupt(Corrupt::Unaligned));
        }
        let used = head.wrapping_sub(tail);
        if used > self.capacity as u64 {
            return Err(RingError::Corrupt(Corrupt::Indices));
        }
        Ok(used as usize)
    }

    /// Bytes the producer may still write.
    ///
    /// # Errors
    /// As [`Ring::used`].
    pub const fn free(&self, head: u64, tail: u64) -> Result<usize, RingError> {
        match self.used(head, tail) {
            Ok(used) => Ok(self.capacity - used),
            Err(e) => Err(e),
        }
    }

    /// Room for a record with a body of `body_len` bytes at `head`.
    ///
    /// # Errors
    /// [`RingError::TooLarge`] above [`Ring::body_max`], [`RingError::Full`]
    /// when the record (and its PAD) do not fit now; as [`Ring::used`].
    pub const fn reserve(
        &self,
        head: u64,
        tail: u64,
        body_len: usize,
    ) -> Result<Reservation, RingError> {
        self.reserve_keeping(head, tail, body_len, 0)
    }

    /// [`Ring::reserve`], but [`RingError::Full`] unless `keep` bytes stay
    /// free afterwards (the daemon writes events keeping
    /// [`super::EVENT_RESERVE`] for replies).
    ///
    /// # Errors
    /// As [`Ring::reserve`].
    pub const fn reserve_keeping(
        &self,
        head: u64,
        tail: u64,
        body_len: usize,
        keep: usize,
    ) -> Result<Reservation, RingError> {
        let free = match self.free(head, tail) {
            Ok(f) => f,
            Err(e) => return Err(e),
        };
        if body_len > self.body_max() {
            return Err(RingError::TooLarge {
                len: body_len,
                max: self.body_max(),
            });
        }
        let record_len = record_len_const(body_len);
        let pos = self.position(head);
        let to_end = self.capacity - pos;
        let (pad, at, need) = if record_len <= to_end {
            (None, pos, record_len)
        } else {
            (Some(Pad { pos, len: to_end }), 0, to_end + record_len)
        };
        if need.saturating_add(keep) > free {
            return Err(RingError::Full);
        }
        Ok(Reservation {
            pad,
            pos: at,
            body_len,
            record_len,
            new_head: head.wrapping_add(need as u64),
        })
    }

    /// The next record between `tail` and `head` on a ring of `dir`,
    /// skipping a PAD. `read_header(pos)` returns the 8 bytes at `pos` of
    /// the data area (`pos ≤ capacity − 8`, a multiple of 8); it is called
    /// at most twice. `Ok(None)`: nothing published.
    ///
    /// # Errors
    /// [`RingError::Corrupt`] for impossible indices or headers (see
    /// [`Corrupt`]). Never panics, whatever the indices and header bytes.
    pub fn next(
        &self,
        head: u64,
        tail: u64,
        dir: Direction,
        read_header: impl FnMut(usize) -> [u8; RECORD_HEADER_LEN],
    ) -> Result<Option<Record>, RingError> {
        self.next_inner(head, tail, false, dir, read_header)
    }

    /// [`Ring::next`]; `drained`: everything before `tail` was released,
    /// so a PAD at `tail` may be a rewind (see [`Producer::rewinding`]).
    fn next_inner(
        &self,
        head: u64,
        tail: u64,
        drained: bool,
        dir: Direction,
        mut read_header: impl FnMut(usize) -> [u8; RECORD_HEADER_LEN],
    ) -> Result<Option<Record>, RingError> {
        let mut avail = self.used(head, tail)?;
        let mut tail = tail;
        let mut pad_len = None;
        // A PAD, then a record: two rounds at most.
        for _ in 0..2 {
            if avail == 0 {
                return Ok(None);
            }
            let pos = self.position(tail);
            let h = RecordHeader::from_bytes(read_header(pos));
            let body_len = h.body_len as usize;
            let rec = record_len(body_len).ok_or(Corrupt::TooLong)?;
            if rec > self.capacity - pos {
                return Err(Corrupt::Wraps.into());
            }
            if rec > avail {
                return Err(Corrupt::Overrun.into());
            }
            if h.kind == KIND_PAD {
                if pad_len.is_some() || h.flags != 0 || pos + rec != self.capacity || rec == avail {
                    return Err(Corrupt::BadPad.into());
                }
                pad_len = Some(rec);
                tail = tail.wrapping_add(rec as u64);
                avail -= rec;
                continue;
            }
            if !dir.accepts(h.kind) {
                return Err(Corrupt::UnknownKind(h.kind).into());
            }
            if body_len > self.body_max() {
                return Err(Corrupt::TooLong.into());
            }
            // a record that would have fitted before the end follows a
            // PAD only as a rewind: written onto a ring found empty
            if !drained && matches!(pad_len, Some(p) if rec <= p) {
                return Err(Corrupt::BadPad.into());
            }
            let start = pos + RECORD_HEADER_LEN;
            return Ok(Some(Record {
                kind: h.kind,
                flags: h.flags,
                body: start..start + body_len,
                new_tail: tail.wrapping_add(rec as u64),
            }));
        }
        // Only reachable after two PADs, which the first round refuses.
        Err(Corrupt::BadPad.into())
    }

    /// [`Ring::next`] over `data`, the ring's data area, with the body.
    ///
    /// # Errors
    /// As [`Ring::next`]; [`RingError::DataTooShort`] if `data` is shorter
    /// than the capacity.
    pub fn read<'d>(
        &self,
        data: &'d [u8],
        head: u64,
        tail: u64,
        dir: Direction,
    ) -> Result<Option<(Record, &'d [u8])>, RingError> {
        self.read_inner(data, head, tail, false, dir)
    }

    fn read_inner<'d>(
        &self,
        data: &'d [u8],
        head: u64,
        tail: u64,
        drained: bool,
        dir: Direction,
    ) -> Result<Option<(Record, &'d [u8])>, RingError> {
        let data = data.get(..self.capacity).ok_or(RingError::DataTooShort)?;
        let rec = self.next_inner(head, tail, drained, dir, |pos| header_at(data, pos))?;
        Ok(match rec {
            Some(r) => {
                let body = data.get(r.body.clone()).ok_or(RingError::DataTooShort)?;
                Some((r, body))
            }
            None => None,
        })
    }
}

/// The 8 bytes at `pos` of `data` (zeros past its end: never reached for a
/// slice of the whole data area).
fn header_at(data: &[u8], pos: usize) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0; RECORD_HEADER_LEN];
    if let Some(s) = data.get(pos..pos + RECORD_HEADER_LEN) {
        h.copy_from_slice(s);
    }
    h
}

/// The producer's side of a ring: its private head, what it published, and
/// the last tail it saw (validated).
///
/// Calling order (the std side): `observe_tail(tail.load(Acquire))`, then
/// `reserve` and write as many records as fit, then
/// `head.store(publish(), Release)` and the wake-up check of [`super::wake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    ring: Ring,
    head: u64,
    published: u64,
    tail: u64,
    rewind: bool,
}

impl Producer {
    /// A producer on a new ring (both indices 0).
    pub const fn new(ring: Ring) -> Producer {
        Producer {
            ring,
            head: 0,
            published: 0,
            tail: 0,
            rewind: false,
        }
    }

    /// This producer rewinds: a record reserved on a ring it finds empty
    /// (the last tail seen is its head) with its head in the second half
    /// starts at position 0, behind a PAD to the end, whatever room is
    /// left before the end. A stream the
    /// consumer keeps up with then cycles through the first few records'
    /// bytes, which stay in the caches of both sides, not through the
    /// whole capacity. The consumer accepts such a PAD only when it has
    /// released everything before it (`docs/spec/ipc.md` §4).
    #[must_use]
    pub const fn rewinding(mut self) -> Producer {
        self.rewind = true;
        self
    }

    /// The ring.
    pub const fn ring(&self) -> Ring {
        self.ring
    }

    /// The head including reserved records not yet published.
    pub const fn head(&self) -> u64 {
        self.head
    }

    /// The head last returned by [`Producer::publish`].
    pub const fn published(&self) -> u64 {
        self.published
    }

    /// The last tail seen.
    pub const fn tail(&self) -> u64 {
        self.tail
    }

    /// Take the consumer's published tail.
    ///
    /// # Errors
    /// [`Corrupt::Unaligned`]; [`Corrupt::Indices`] unless it lies between
    /// the last tail seen and the published head (it may not move back, nor
    /// past what was published). The producer is unchanged on error.
    pub const fn observe_tail(&mut self, tail: u64) -> Result<(), RingError> {
        if tail % RECORD_ALIGN as u64 != 0 {
            return Err(RingError::Corrupt(Corrupt::Unaligned));
        }
        if tail.wrapping_sub(self.tail) > self.published.wrapping_sub(self.tail) {
            return Err(RingError::Corrupt(Corrupt::Indices));
        }
        self.tail = tail;
        Ok(())
    }

    /// Bytes free now (as of the last tail seen).
    pub const fn free(&self) -> usize {
        // head - tail ≤ capacity holds: reserve checks it.
        self.ring.capacity - self.head.wrapping_sub(self.tail) as usize
    }

    /// Bytes the next records may take (as of the last tail seen): the
    /// free bytes, but on an empty ring this producer would rewind on,
    /// only those before its head (the PAD to the end counts as used until
    /// the consumer reads past it).
    pub const fn room(&self) -> usize {
        if self.rewinds_now() {
            self.ring.position(self.head)
        } else {
            self.free()
        }
    }

    /// Whether the next record rewinds, if it fits: a rewinding producer
    /// on an empty ring, its head in the second half. Only from there: the
    /// PAD counts as used until the consumer reads past it, so a rewind
    /// from position `pos` leaves `pos` bytes for the records after it.
    const fn rewinds_now(&self) -> bool {
        self.rewind
            && self.head == self.tail
            && self.ring.position(self.head) >= self.ring.capacity / 2
    }

    /// Reserve the next record (see [`Ring::reserve`]) and move the
    /// private head past it.
    ///
    /// # Errors
    /// As [`Ring::reserve`]; the producer is unchanged on error.
    pub const fn reserve(&mut self, body_len: usize) -> Result<Reservation, RingError> {
        self.reserve_keeping(body_len, 0)
    }

    /// [`Producer::reserve`] keeping `keep` bytes free.
    ///
    /// # Errors
    /// As [`Ring::reserve_keeping`].
    pub const fn reserve_keeping(
        &mut self,
        body_len: usize,
        keep: usize,
    ) -> Result<Reservation, RingError> {
        if let Some(r) = self.rewound(body_len, keep) {
            self.head = r.new_head;
            return Ok(r);
        }
        match self
            .ring
            .reserve_keeping(self.head, self.tail, body_len, keep)
        {
            Ok(r) => {
                self.head = r.new_head;
                Ok(r)
            }
            Err(e) => Err(e),
        }
    }

    /// The reservation of a rewind (see [`Producer::rewinding`]), if this
    /// record takes one ([`Producer::rewinds_now`]) and the PAD and the
    /// record fit with `keep` bytes left: at least a quarter of the ring
    /// beyond this record (a body is at most a quarter).
    const fn rewound(&self, body_len: usize, keep: usize) -> Option<Reservation> {
        if !self.rewinds_now() || body_len > self.ring.body_max() {
            return None;
        }
        let pos = self.ring.position(self.head);
        let record_len = record_len_const(body_len);
        let to_end = self.ring.capacity - pos;
        if to_end + record_len + keep > self.ring.capacity {
            return None;
        }
        Some(Reservation {
            pad: Some(Pad { pos, len: to_end }),
            pos: 0,
            body_len,
            record_len,
            new_head: self.head.wrapping_add((to_end + record_len) as u64),
        })
    }

    /// Whether a record of `body_len` would fit now, keeping `keep` free.
    pub const fn can_reserve(&self, body_len: usize, keep: usize) -> bool {
        self.rewound(body_len, keep).is_some()
            || self
                .ring
                .reserve_keeping(self.head, self.tail, body_len, keep)
                .is_ok()
    }

    /// Everything reserved is written: the head to store (Release).
    pub const fn publish(&mut self) -> u64 {
        self.published = self.head;
        self.head
    }
}

/// The consumer's side of a ring: its private tail, what it released, and
/// the last head it saw (validated).
///
/// Calling order (the std side): `observe_head(head.load(Acquire))`, then
/// `next` (or `read`) and use each body, then `tail.store(release(),
/// Release)` once done with every body returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumer {
    ring: Ring,
    tail: u64,
    released: u64,
    head: u64,
}

impl Consumer {
    /// A consumer on a new ring (both indices 0).
    pub const fn new(ring: Ring) -> Consumer {
        Consumer {
            ring,
            tail: 0,
            released: 0,
            head: 0,
        }
    }

    /// The ring.
    pub const fn ring(&self) -> Ring {
        self.ring
    }

    /// The tail past every record returned so far.
    pub const fn tail(&self) -> u64 {
        self.tail
    }

    /// The tail last returned by [`Consumer::release`].
    pub const fn released(&self) -> u64 {
        self.released
    }

    /// The last head seen.
    pub const fn head(&self) -> u64 {
        self.head
    }

    /// Whether every record published (as of the last head seen) was read.
    pub const fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// Take the producer's published head.
    ///
    /// # Errors
    /// [`Corrupt::Unaligned`]; [`Corrupt::Indices`] if it moved back or
    /// runs more than the capacity ahead of the released tail. The consumer
    /// is unchanged on error.
    pub const fn observe_head(&mut self, head: u64) -> Result<(), RingError> {
        if head % RECORD_ALIGN as u64 != 0 {
            return Err(RingError::Corrupt(Corrupt::Unaligned));
        }
        let ahead = head.wrapping_sub(self.released);
        if ahead > self.ring.capacity as u64 || self.head.wrapping_sub(self.released) > ahead {
            return Err(RingError::Corrupt(Corrupt::Indices));
        }
        self.head = head;
        Ok(())
    }

    /// The next record (see [`Ring::next`]); the private tail moves past it.
    ///
    /// # Errors
    /// As [`Ring::next`]; the consumer is unchanged on error.
    pub fn next(
        &mut self,
        dir: Direction,
        read_header: impl FnMut(usize) -> [u8; RECORD_HEADER_LEN],
    ) -> Result<Option<Record>, RingError> {
        let drained = self.released == self.tail;
        let rec = self
            .ring
            .next_inner(self.head, self.tail, drained, dir, read_header)?;
        if let Some(r) = &rec {
            self.tail = r.new_tail;
        }
        Ok(rec)
    }

    /// [`Consumer::next`] over `data`, the ring's data area, with the body.
    ///
    /// # Errors
    /// As [`Ring::read`].
    pub fn read<'d>(
        &mut self,
        data: &'d [u8],
        dir: Direction,
    ) -> Result<Option<(Record, &'d [u8])>, RingError> {
        let drained = self.released == self.tail;
        let rec = self
            .ring
            .read_inner(data, self.head, self.tail, drained, dir)?;
        if let Some((r, _)) = &rec {
            self.tail = r.new_tail;
        }
        Ok(rec)
    }

    /// Done with every body returned: the tail to store (Release).
    pub const fn release(&mut self) -> u64 {
        self.released = self.tail;
        self.tail
    }

    /// Done with the bodies before `pos`, a tail some [`Record::new_tail`]
    /// returned (records may be let go of in order while later ones are
    /// still in use): the tail to store (Release). A `pos` outside the
    /// records read and not yet released changes nothing.
    pub const fn release_to(&mut self, pos: u64) -> u64 {
        let read = self.tail.wrapping_sub(self.released);
        let upto = pos.wrapping_sub(self.released);
        if upto <= read {
            self.released = pos;
        }
        self.released
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::ipc::{EventKind, RequestKind};

    const CAP: usize = RING_CAPACITY_MIN;
    const JOIN: u16 = RequestKind::Join as u16;
    const FINALIZE: u16 = RequestKind::Finalize as u16;
    const REQ: Direction = Direction::Requests;

    fn ring() -> Ring {
        Ring::new(CAP).unwrap()
    }

    /// Reserve and fill one record; the new head.
    fn put(r: &Ring, data: &mut [u8], head: u64, tail: u64, kind: u16, body: &[u8]) -> u64 {
        let res = r.reserve(head, tail, body.len()).unwrap();
        res.fill(data, kind, 0, body).unwrap();
        res.new_head
    }

    fn header(body_len: u32, kind: u16, flags: u16) -> [u8; 8] {
        RecordHeader {
            body_len,
            kind,
            flags,
        }
        .to_bytes()
    }

    #[test]
    fn capacity_is_checked() {
        for bad in [
            0,
            1,
            CAP - 1,
            CAP + 8,
            CAP / 2,
            RING_CAPACITY_MAX * 2,
            3 << 20,
        ] {
            assert_eq!(Ring::new(bad), Err(LayoutError::Capacity(bad)), "{bad}");
        }
        for good in [CAP, CAP * 2, RING_CAPACITY_DEFAULT_T, RING_CAPACITY_MAX] {
            let r = Ring::new(good).unwrap();
            assert_eq!(r.capacity(), good);
            assert_eq!(r.body_max(), good / 4);
        }
    }
    const RING_CAPACITY_DEFAULT_T: usize = crate::ipc::RING_CAPACITY_DEFAULT;

    #[test]
    fn header_bytes() {
        let h = RecordHeader {
            body_len: 0x0102_0304,
            kind: 0x0506,
            flags: 0x0708,
        };
        assert_eq!(h.to_bytes(), [4, 3, 2, 1, 6, 5, 8, 7]);
        assert_eq!(RecordHeader::from_bytes(h.to_bytes()), h);
        assert_eq!(record_len(0), Some(8));
        assert_eq!(record_len(1), Some(16));
        assert_eq!(record_len(8), Some(16));
        assert_eq!(record_len(9), Some(24));
        assert_eq!(record_len(usize::MAX - 3), None);
    }

    #[test]
    fn write_then_read() {
        let r = ring();
        let mut data = vec![0xAA; CAP];
        let h = put(&r, &mut data, 0, 0, JOIN, b"hello");
        assert_eq!(h, 16);
        assert_eq!(&data[..8], &header(5, JOIN, 0));
        assert_eq!(&data[8..16], b"hello\0\0\0");
        let h = put(&r, &mut data, h, 0, FINALIZE, &[]);
        assert_eq!(h, 24);
        assert_eq!(r.used(h, 0), Ok(24));
        assert_eq!(r.free(h, 0), Ok(CAP - 24));
        let (rec, body) = r.read(&data, h, 0, REQ).unwrap().unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(
            (rec.kind, rec.flags, rec.body.clone(), rec.new_tail),
            (JOIN, 0, 8..13, 16)
        );
        let (rec, body) = r.read(&data, h, 16, REQ).unwrap().unwrap();
        assert_eq!((rec.kind, body, rec.new_tail), (FINALIZE, &[][..], 24));
        assert_eq!(r.read(&data, h, 24, REQ), Ok(None));
    }

    #[test]
    fn pad_at_the_end() {
        let r = ring();
        let mut data = vec![0; CAP];
        // Head 40 bytes before the end; a 40-byte body needs 48.
        let head = (CAP - 40) as u64;
        let res = r.reserve(head, head, 40).unwrap();
        assert_eq!(
            res.pad,
            Some(Pad {
                pos: CAP - 40,
                len: 40
            })
        );
        assert_eq!((res.pos, res.record_len, res.new_head), (0, 48, head + 88));
        res.fill(&mut data, JOIN, 0, &[7; 40]).unwrap();
        assert_eq!(&data[CAP - 40..CAP - 32], &header(32, KIND_PAD, 0));
        let (rec, body) = r.read(&data, res.new_head, head, REQ).unwrap().unwrap();
        assert_eq!((rec.body.clone(), rec.new_tail), (8..48, head + 88));
        assert_eq!(body, &[7; 40]);
        // Exactly fitting before the end needs no PAD.
        let res = r.reserve(head, head, 32).unwrap();
        assert_eq!(
            (res.pad, res.pos, res.new_head),
            (None, CAP - 40, head + 40)
        );
    }

    #[test]
    fn full_and_too_large() {
        let r = ring();
        assert_eq!(
            r.reserve(0, 0, CAP / 4 + 1),
            Err(RingError::TooLarge {
                len: CAP / 4 + 1,
                max: CAP / 4
            })
        );
        // Free 24 bytes: a 16-byte body fits, a 17-byte one does not.
        let head = (CAP - 24) as u64;
        assert!(r.reserve(head, 0, 16).is_ok());
        assert_eq!(r.reserve(head, 0, 17), Err(RingError::Full));
        // ... nor does it when `keep` must stay free.
        assert_eq!(r.reserve_keeping(head, 0, 0, 17), Err(RingError::Full));
        assert!(r.reserve_keeping(head, 0, 0, 16).is_ok());
        // The PAD counts: 48 bytes free at the end and 48 at the start. A
        // 48-byte record fits at the end; a 56-byte one would need a PAD of
        // 48 first and does not fit.
        let (head, tail) = ((2 * CAP - 48) as u64, (CAP + 48) as u64);
        assert_eq!(r.free(head, tail), Ok(96));
        assert_eq!(r.reserve(head, tail, 40).unwrap().pad, None);
        assert_eq!(r.reserve(head, tail, 48), Err(RingError::Full));
    }

    #[test]
    fn hand_built_reservations_do_not_panic() {
        let mut data = vec![0; 64];
        let res = Reservation {
            pad: Some(Pad {
                pos: usize::MAX,
                len: 3,
            }),
            pos: usize::MAX - 1,
            body_len: usize::MAX,
            record_len: usize::MAX,
            new_head: 0,
        };
        assert_eq!(
            res.fill(&mut data, JOIN, 0, &[]),
            Err(MsgError::LengthMismatch)
        );
        let res = Reservation { body_len: 0, ..res };
        assert_eq!(
            res.fill(&mut data, JOIN, 0, &[]),
            Err(MsgError::BufferTooSmall)
        );
        let res = Reservation {
            pad: Some(Pad { pos: 60, len: 3 }),
            pos: 0,
            record_len: 8,
            ..res
        };
        assert_eq!(
            res.fill(&mut data, JOIN, 0, &[]),
            Err(MsgError::BufferTooSmall)
        );
        let res = Reservation {
            pad: None,
            pos: 60,
            ..res
        };
        assert_eq!(
            res.fill(&mut data, JOIN, 0, &[]),
            Err(MsgError::BufferTooSmall)
        );
        assert_eq!(Pad { pos: 0, len: 0 }.header(), header(0, KIND_PAD, 0));
    }

    #[test]
    fn empty_ring_takes_the_largest_record_anywhere() {
        let r = ring();
        for pos in (0..CAP).step_by(8) {
            let idx = pos as u64 + 3 * CAP as u64;
            let res = r.reserve(idx, idx, r.body_max()).unwrap();
            assert!(res.new_head - idx <= CAP as u64);
        }
    }

    #[test]
    fn indices_wrap_at_u64() {
        let r = ring();
        let mut data = vec![0; CAP];
        // Two records across 2^64, the index wrapping to 0 between them.
        let tail = u64::MAX - 15;
        assert_eq!(r.position(tail), CAP - 16);
        let h1 = put(&r, &mut data, tail, tail, JOIN, b"abc");
        assert_eq!(h1, 0);
        let h2 = put(&r, &mut data, h1, tail, JOIN, b"defg");
        assert_eq!((h2, r.used(h2, tail)), (16, Ok(32)));
        let (rec, body) = r.read(&data, h2, tail, REQ).unwrap().unwrap();
        assert_eq!((body, rec.new_tail), (&b"abc"[..], 0));
        let (rec, body) = r.read(&data, h2, rec.new_tail, REQ).unwrap().unwrap();
        assert_eq!((body, rec.new_tail), (&b"defg"[..], 16));
        // A PAD across 2^64.
        let tail = u64::MAX - 7;
        let res = r.reserve(tail, tail, 8).unwrap();
        assert_eq!(
            (res.pad, res.pos, res.new_head),
            (
                Some(Pad {
                    pos: CAP - 8,
                    len: 8
                }),
                0,
                16
            )
        );
        res.fill(&mut data, JOIN, 0, b"12345678").unwrap();
        let (rec, body) = r.read(&data, 16, tail, REQ).unwrap().unwrap();
        assert_eq!((body, rec.new_tail), (&b"12345678"[..], 16));
    }

    #[test]
    fn impossible_indices() {
        let r = ring();
        let data = vec![0; CAP];
        for (head, tail, c) in [
            (4, 0, Corrupt::Unaligned),
            (8, 4, Corrupt::Unaligned),
            (0, 8, Corrupt::Indices),
            (CAP as u64 + 8, 0, Corrupt::Indices),
            (u64::MAX - 7, 0, Corrupt::Indices),
        ] {
            assert_eq!(r.read(&data, head, tail, REQ), Err(RingError::Corrupt(c)));
            assert_eq!(r.reserve(head, tail, 0), Err(RingError::Corrupt(c)));
        }
        assert_eq!(
            r.read(&data[..CAP - 1], 0, 0, REQ),
            Err(RingError::DataTooShort)
        );
    }

    #[test]
    fn corrupt_headers() {
        let r = ring();
        let at = |bytes: [u8; 8], pos: usize| {
            let mut data = vec![0; CAP];
            data[pos..pos + 8].copy_from_slice(&bytes);
            data
        };
        // Length beyond what was published.
        let d = at(header(9, JOIN, 0), 0);
        assert_eq!(r.read(&d, 16, 0, REQ), Err(Corrupt::Overrun.into()));
        assert!(r.read(&d, 24, 0, REQ).unwrap().is_some());
        // Crossing the end.
        let d = at(header(9, JOIN, 0), CAP - 16);
        let (head, tail) = (CAP as u64 + 64, (CAP - 16) as u64);
        assert_eq!(r.read(&d, head, tail, REQ), Err(Corrupt::Wraps.into()));
        // A length near u32::MAX.
        let d = at(header(u32::MAX, JOIN, 0), 0);
        assert_eq!(r.read(&d, CAP as u64, 0, REQ), Err(Corrupt::Wraps.into()));
        // Above capacity / 4 but published.
        let d = at(header((CAP / 4 + 1) as u32, JOIN, 0), 0);
        assert_eq!(r.read(&d, CAP as u64, 0, REQ), Err(Corrupt::TooLong.into()));
        // Unknown kinds, and an event kind on the request ring.
        for k in [0x7777, EventKind::Reply as u16, 0xFFFF] {
            let d = at(header(0, k, 0), 0);
            assert_eq!(r.read(&d, 8, 0, REQ), Err(Corrupt::UnknownKind(k).into()));
        }
        let d = at(header(0, EventKind::Reply as u16, 0), 0);
        assert!(r.read(&d, 8, 0, Direction::Events).unwrap().is_some());
    }

    #[test]
    fn corrupt_pads() {
        let r = ring();
        let pad_at = |pos: usize, flags: u16| {
            let mut data = vec![0; CAP];
            let len = CAP - pos;
            data[pos..pos + 8].copy_from_slice(&header((len - 8) as u32, KIND_PAD, flags));
            data
        };
        let tail = (CAP - 32) as u64;
        let ok_head = tail + 32 + 40; // PAD of 32, then a 40-byte record
        let mut d = pad_at(CAP - 32, 0);
        d[..8].copy_from_slice(&header(32, JOIN, 0));
        let (rec, _) = r.read(&d, ok_head, tail, REQ).unwrap().unwrap();
        assert_eq!((rec.body, rec.new_tail), (8..40, ok_head));
        // With flags.
        let mut f = d.clone();
        f[CAP - 32 + 6] = 1;
        assert_eq!(r.read(&f, ok_head, tail, REQ), Err(Corrupt::BadPad.into()));
        // Published alone.
        assert_eq!(
            r.read(&d, tail + 32, tail, REQ),
            Err(Corrupt::BadPad.into())
        );
        // Not reaching the end.
        let mut s = vec![0; CAP];
        s[CAP - 32..CAP - 24].copy_from_slice(&header(16, KIND_PAD, 0));
        assert_eq!(r.read(&s, ok_head, tail, REQ), Err(Corrupt::BadPad.into()));
        // In front of a record that would have fitted before the end.
        let mut n = pad_at(CAP - 32, 0);
        n[..8].copy_from_slice(&header(16, JOIN, 0));
        assert_eq!(
            r.read(&n, tail + 32 + 24, tail, REQ),
            Err(Corrupt::BadPad.into())
        );
        // Two in a row (the second at 0, as long as the whole ring).
        let mut t = pad_at(CAP - 32, 0);
        t[..8].copy_from_slice(&header((CAP - 8) as u32, KIND_PAD, 0));
        assert_eq!(
            r.read(&t, tail + 32 + 40, tail, REQ),
            Err(Corrupt::Overrun.into())
        );
        // A PAD over the whole ring at 0: never followed by anything.
        let w = pad_at(0, 0);
        assert_eq!(r.read(&w, CAP as u64, 0, REQ), Err(Corrupt::BadPad.into()));
        // A second PAD that fits the published bytes.
        let mut two = pad_at(CAP - 32, 0);
        two[..8].copy_from_slice(&header(8, KIND_PAD, 0));
        assert_eq!(
            r.read(&two, tail + 32 + 16, tail, REQ),
            Err(Corrupt::BadPad.into())
        );
    }

    #[test]
    fn producer_and_consumer() {
        let r = ring();
        let mut data = vec![0; CAP];
        let mut p = Producer::new(r);
        let mut c = Consumer::new(r);
        assert_eq!(c.read(&data, REQ), Ok(None));
        let res = p.reserve(3).unwrap();
        res.fill(&mut data, JOIN, 0, b"abc").unwrap();
        let res = p.reserve(0).unwrap();
        res.fill(&mut data, FINALIZE, 0, &[]).unwrap();
        assert_eq!((p.head(), p.published()), (24, 0));
        // The consumer sees nothing until the head is published.
        assert_eq!(c.read(&data, REQ), Ok(None));
        let head = p.publish();
        c.observe_head(head).unwrap();
        assert!(!c.is_empty());
        assert_eq!(c.read(&data, REQ).unwrap().unwrap().1, b"abc");
        assert_eq!(c.read(&data, REQ).unwrap().unwrap().0.kind, FINALIZE);
        assert_eq!(c.read(&data, REQ), Ok(None));
        assert!(c.is_empty());
        assert_eq!(p.free(), CAP - 24);
        let tail = c.release();
        p.observe_tail(tail).unwrap();
        assert_eq!(p.free(), CAP);
        // Lies are refused, and change nothing.
        assert_eq!(p.observe_tail(32), Err(Corrupt::Indices.into()));
        assert_eq!(p.observe_tail(16), Err(Corrupt::Indices.into()));
        assert_eq!(p.observe_tail(28), Err(Corrupt::Unaligned.into()));
        assert_eq!(p.tail(), 24);
        assert_eq!(c.observe_head(16), Err(Corrupt::Indices.into()));
        assert_eq!(
            c.observe_head(24 + CAP as u64 + 8),
            Err(Corrupt::Indices.into())
        );
        assert_eq!(c.observe_head(25), Err(Corrupt::Unaligned.into()));
        assert_eq!(c.head(), 24);
        c.observe_head(24 + CAP as u64).unwrap();
        // Full, then room again once the tail moves.
        let mut p = Producer::new(r);
        while p.reserve(r.body_max()).is_ok() {}
        assert_eq!(p.reserve(r.body_max()), Err(RingError::Full));
        assert!(!p.can_reserve(r.body_max(), 0));
        assert!(p.can_reserve(0, 0) && !p.can_reserve(0, p.free()));
        p.publish();
        p.observe_tail(r.body_max() as u64 + 8).unwrap();
        assert!(p.can_reserve(r.body_max(), 0));
    }

    #[test]
    fn release_to_lets_records_go_in_order() {
        let r = ring();
        let mut data = vec![0u8; CAP];
        let mut p = Producer::new(r);
        for len in [10, 20, 30] {
            let res = p.reserve(len).unwrap();
            res.fill(&mut data, JOIN, 0, &vec![1; len]).unwrap();
        }
        let mut c = Consumer::new(r);
        c.observe_head(p.publish()).unwrap();
        let ends: Vec<u64> = (0..3)
            .map(|_| c.read(&data, REQ).unwrap().unwrap().0.new_tail)
            .collect();
        assert_eq!(c.release_to(ends[0]), ends[0]);
        assert_eq!(c.release_to(ends[2] + 8), ends[0], "beyond what was read");
        assert_eq!(c.release_to(0), ends[0], "behind what was released");
        assert_eq!(c.release_to(ends[2]), ends[2]);
        p.observe_tail(ends[2]).unwrap();
        assert_eq!(c.release(), ends[2]);
    }

    /// A rewinding producer starts a record on a ring it finds empty at
    /// position 0, behind a PAD, once its head is in the ring's second
    /// half; a consumer that released everything reads it, one still
    /// holding a record before the PAD refuses it.
    #[test]
    fn a_rewind_on_an_empty_ring() {
        let r = ring();
        let mut data = vec![0u8; CAP];
        let mut p = Producer::new(r).rewinding();
        let mut c = Consumer::new(r);
        let half = CAP / 2;
        // records up to the middle, read and released as they come: the
        // ring is empty each time, but the head in the first half
        let mut n = 0u16;
        while r.position(p.head()) < half {
            let res = p.reserve(1000).unwrap();
            assert_eq!(
                res.record().start as u64,
                p.head() - 1008,
                "no rewind before the middle"
            );
            n += 1;
            res.fill(&mut data, JOIN, n, &[n as u8; 1000]).unwrap();
            c.observe_head(p.publish()).unwrap();
            assert_eq!(c.read(&data, REQ).unwrap().unwrap().0.flags, n);
            p.observe_tail(c.release()).unwrap();
        }
        let pad_at = p.head();
        assert_eq!(p.free(), CAP);
        assert_eq!(
            p.room(),
            r.position(pad_at),
            "a rewind leaves the bytes before the head"
        );
        // not empty: no rewind
        let mut busy = p;
        busy.reserve(8).unwrap();
        assert_ne!(busy.reserve(16).unwrap().record().start, 0);
        // empty, past the middle: the next record goes to 0, behind a PAD
        let res = p.reserve(16).unwrap();
        assert_eq!(res.record().start, 0);
        assert_eq!(
            p.head(),
            pad_at - r.position(pad_at) as u64 + CAP as u64 + 24
        );
        res.fill(&mut data, JOIN, 7, &[3; 16]).unwrap();
        let head = p.publish();
        c.observe_head(head).unwrap();
        let (rec, body) = c.read(&data, REQ).unwrap().unwrap();
        assert_eq!((rec.flags, body), (7, &[3u8; 16][..]));
        assert_eq!(rec.new_tail, head);
        // the same bytes to a consumer that read up to the PAD but still
        // holds its last record (the producer cannot have seen the ring
        // empty): a misplaced PAD
        let mut held = Consumer {
            ring: r,
            tail: pad_at,
            released: pad_at - 1008,
            head: pad_at,
        };
        held.observe_head(head).unwrap();
        assert_eq!(held.read(&data, REQ), Err(Corrupt::BadPad.into()));
        // a plain producer never rewinds
        let mut plain = Producer::new(r);
        while r.position(plain.head()) < half {
            plain.reserve(1000).unwrap();
        }
        let h = plain.publish();
        plain.observe_tail(h).unwrap();
        assert_ne!(plain.reserve(16).unwrap().record().start, 0);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(usize),
        Read,
        Publish,
        Release,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..CAP / 4 + 1).prop_map(Step::Write),
            2 => (0..64usize).prop_map(Step::Write),
            3 => Just(Step::Read),
            1 => Just(Step::Publish),
            1 => Just(Step::Release),
        ]
    }

    proptest! {
        /// Producer and consumer against a queue: every record read is the
        /// one written, in order; Full only when it really does not fit.
        #[test]
        fn ring_matches_a_queue(
            start in any::<u64>(),
            rewind in any::<bool>(),
            steps in vec(step(), 1..200),
        ) {
            let r = ring();
            let start = start & !7;
            let mut p = Producer { ring: r, head: start, published: start, tail: start, rewind };
            let mut c = Consumer { ring: r, tail: start, released: start, head: start };
            let mut data = vec![0u8; CAP];
            let mut written: VecDeque<(u16, Vec<u8>)> = VecDeque::new(); // published or not
            let mut unpublished = 0usize;
            let mut n = 0u8;
            for s in steps {
                match s {
                    Step::Write(len) => {
                        n = n.wrapping_add(1);
                        let body = vec![n; len];
                        let free = p.free();
                        let pos = r.position(p.head());
                        let rec = record_len(len).unwrap();
                        let need = if rec <= CAP - pos { rec } else { CAP - pos + rec };
                        // a rewind needs an empty ring, where anything fits
                        let empty = p.head() == p.tail();
                        match p.reserve(len) {
                            Ok(res) => {
                                prop_assert!(need <= free || (rewind && empty));
                                if rewind && empty && pos >= CAP / 2 && rec <= pos {
                                    prop_assert_eq!(res.record().start, 0, "rewound");
                                }
                                res.fill(&mut data, JOIN, u16::from(n), &body).unwrap();
                                written.push_back((u16::from(n), body));
                                unpublished += 1;
                            }
                            Err(RingError::Full) => prop_assert!(need > free),
                            Err(e) => prop_assert!(false, "{e:?}"),
                        }
                    }
                    Step::Publish => {
                        let h = p.publish();
                        c.observe_head(h).unwrap();
                        unpublished = 0;
                    }
                    Step::Read => {
                        match c.read(&data, REQ).unwrap() {
                            Some((rec, body)) => {
                                let (flags, want) = written.pop_front().unwrap();
                                prop_assert_eq!(rec.flags, flags);
                                prop_assert_eq!(body, &want[..]);
                            }
                            None => prop_assert_eq!(written.len(), unpublished),
                        }
                    }
                    Step::Release => {
                        let t = c.release();
                        p.observe_tail(t).unwrap();
                    }
                }
            }
        }

        /// Any indices and any bytes: a typed answer, never a panic, and a
        /// record always inside the data area.
        #[test]
        fn any_bytes_never_panic(
            head in any::<u64>(),
            tail in any::<u64>(),
            near in any::<bool>(),
            at in 0..CAP,
            bytes in vec(any::<u8>(), 0..256),
        ) {
            let r = ring();
            let mut data = vec![0; CAP];
            let at = at & !7;
            let n = bytes.len().min(CAP - at);
            data[at..at + n].copy_from_slice(&bytes[..n]);
            let tail = if near { (at as u64) | (tail & !(CAP as u64 - 1)) } else { tail };
            let head = if near { tail.wrapping_add(head % (CAP as u64 + 16)) } else { head };
            for dir in [Direction::Requests, Direction::Events] {
                if let Ok(Some((rec, body))) = r.read(&data, head, tail, dir) {
                    prop_assert!(rec.body.end <= CAP);
                    prop_assert_eq!(body.len(), rec.body.len());
                    prop_assert!(rec.new_tail.wrapping_sub(tail) <= head.wrapping_sub(tail));
                    prop_assert!(dir.accepts(rec.kind));
                }
            }
        }
    }
}

//! Field helpers, the error type of the messages, and the [`Message`]
//! trait that puts a message into a record and takes it out again.

use core::fmt;
use core::ops::Range;

use super::ring::{record_len, RecordHeader, RECORD_HEADER_LEN};
use crate::limits::GROUP_NAME_MAX;
use crate::types::{CsError, GroupName, CS_OK};

/// Why a message body was rejected (or could not be emitted). Copy, so a
/// daemon can count disconnects by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MsgError {
    /// Fewer bytes than the fixed part needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The body is longer or shorter than its fields say.
    LengthMismatch,
    /// A record kind this message family does not have.
    UnknownKind(u16),
    /// Record flags this kind does not define.
    BadFlags(u16),
    /// A reserved byte is not zero.
    Reserved,
    /// A field outside its range (zero node id, guarantee, reason, status,
    /// iteration type, a piece longer than the message, ...).
    Malformed,
    /// A count above its limit (members, nodes, iteration entries).
    TooManyEntries,
    /// A group name longer than 128 bytes.
    NameTooLong,
    /// A record header announcing a body above what this message family
    /// ever has (on the socket: more than `SETUP_BODY_MAX`).
    TooLong {
        /// Body bytes announced.
        len: usize,
        /// The most this family has.
        max: usize,
    },
    /// Not `Hello`'s magic: not a CPG client.
    BadMagic,
    /// A `Hello` of another IPC version (the daemon answers `Refused`
    /// with `CS_ERR_VERSION`).
    UnsupportedVersion(u16),
    /// The output buffer is smaller than the message.
    BufferTooSmall,
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsgError::Truncated { needed, got } => {
                write!(f, "truncated: need {needed} bytes, got {got}")
            }
            MsgError::LengthMismatch => write!(f, "length disagrees with the fields"),
            MsgError::UnknownKind(k) => write!(f, "unknown kind {k:#06x}"),
            MsgError::BadFlags(fl) => write!(f, "undefined flags {fl:#06x}"),
            MsgError::Reserved => write!(f, "reserved byte not zero"),
            MsgError::Malformed => write!(f, "field out of range"),
            MsgError::TooManyEntries => write!(f, "too many entries"),
            MsgError::NameTooLong => write!(f, "group name longer than 128 bytes"),
            MsgError::TooLong { len, max } => {
                write!(f, "record body of {len} bytes above {max}")
            }
            MsgError::BadMagic => write!(f, "bad magic"),
            MsgError::UnsupportedVersion(v) => write!(f, "unsupported IPC version {v}"),
            MsgError::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

impl core::error::Error for MsgError {}

/// A message that travels as one record: kind and flags in the record
/// header, the body after it.
pub trait Message<'a>: Sized {
    /// The largest body any message of this family has (what a stream
    /// reader may wait for; ring records are bounded by the ring).
    const BODY_MAX: usize = usize::MAX;
    /// The record kind.
    fn kind(&self) -> u16;
    /// The record flags.
    fn flags(&self) -> u16;
    /// Bytes of the body `emit_body` writes.
    fn body_len(&self) -> usize;
    /// Write the body into `buf`, returning its length.
    ///
    /// # Errors
    /// [`MsgError::BufferTooSmall`]; or whatever [`Message::parse`] would
    /// refuse in this value (a list above its limit, a value out of range),
    /// so nothing emitted fails to parse.
    fn emit_body(&self, buf: &mut [u8]) -> Result<usize, MsgError>;
    /// Parse a body of `kind` with `flags`.
    ///
    /// # Errors
    /// A [`MsgError`]; never panics.
    fn parse(kind: u16, flags: u16, body: &'a [u8]) -> Result<Self, MsgError>;
}

/// Bytes of `msg` as a whole record (header, body, padding to 8).
pub fn record_bytes_len<'a, M: Message<'a>>(msg: &M) -> usize {
    record_len(msg.body_len()).unwrap_or(usize::MAX)
}

/// Write `msg` as a record (header, body, zero padding) at the front of
/// `buf`, returning the record's length. The socket carries setup messages
/// this way; ring writers use [`super::Reservation::emit`].
///
/// # Errors
/// [`MsgError::BufferTooSmall`], or the message's own emit errors.
pub fn emit_record<'a, M: Message<'a>>(msg: &M, buf: &mut [u8]) -> Result<usize, MsgError> {
    let body_len = msg.body_len();
    let len = record_len(body_len).ok_or(MsgError::BufferTooSmall)?;
    let out = out_buf(buf, len)?;
    let header = RecordHeader {
        body_len: u32::try_from(body_len).map_err(|_| MsgError::BufferTooSmall)?,
        kind: msg.kind(),
        flags: msg.flags(),
    };
    let (head, rest) = out.split_at_mut(RECORD_HEADER_LEN);
    head.copy_from_slice(&header.to_bytes());
    let (body, pad) = rest.split_at_mut(body_len);
    let n = msg.emit_body(body)?;
    debug_assert_eq!(n, body_len);
    pad.fill(0);
    Ok(len)
}

/// Parse the record at the front of `bytes` (the socket's stream),
/// returning the message and the record's length (padding included).
///
/// # Errors
/// [`MsgError::Truncated`] while the record is not complete (read more),
/// [`MsgError::TooLong`] as soon as the header announces a body above
/// [`Message::BODY_MAX`] (do not wait for it), or the message's parse
/// error.
pub fn parse_record<'a, M: Message<'a>>(bytes: &'a [u8]) -> Result<(M, usize), MsgError> {
    check_len(bytes, RECORD_HEADER_LEN)?;
    let header = RecordHeader::from_bytes(get_bytes(bytes, 0..RECORD_HEADER_LEN));
    let body_len = header.body_len as usize;
    if body_len > M::BODY_MAX {
        return Err(MsgError::TooLong {
            len: body_len,
            max: M::BODY_MAX,
        });
    }
    let len = record_len(body_len).ok_or(MsgError::LengthMismatch)?;
    check_len(bytes, len)?;
    let body = bytes
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len)
        .ok_or(MsgError::LengthMismatch)?;
    Ok((M::parse(header.kind, header.flags, body)?, len))
}

/// A fixed range of bytes.
pub(super) type Field = Range<usize>;

// Panic-free little-endian accessors, as in `wire`: callers check lengths
// first, so a field out of range is a bug of this module; it trips a debug
// assertion and otherwise reads as zero / writes nothing.

pub(super) fn get_bytes<const N: usize>(data: &[u8], f: Field) -> [u8; N] {
    let mut out = [0; N];
    match data.get(f) {
        Some(s) if s.len() == N => out.copy_from_slice(s),
        _ => debug_assert!(false, "ipc field out of range"),
    }
    out
}

pub(super) fn get_u8(data: &[u8], at: usize) -> u8 {
    let b = data.get(at).copied();
    debug_assert!(b.is_some(), "ipc field out of range");
    b.unwrap_or(0)
}

pub(super) fn get_u16(data: &[u8], f: Field) -> u16 {
    u16::from_le_bytes(get_bytes(data, f))
}

pub(super) fn get_u32(data: &[u8], f: Field) -> u32 {
    u32::from_le_bytes(get_bytes(data, f))
}

pub(super) fn get_u64(data: &[u8], f: Field) -> u64 {
    u64::from_le_bytes(get_bytes(data, f))
}

pub(super) fn put_bytes(buf: &mut [u8], f: Field, src: &[u8]) {
    match buf.get_mut(f) {
        Some(d) if d.len() == src.len() => d.copy_from_slice(src),
        _ => debug_assert!(false, "ipc field out of range"),
    }
}

pub(super) fn put_u8(buf: &mut [u8], at: usize, v: u8) {
    match buf.get_mut(at) {
        Some(d) => *d = v,
        None => debug_assert!(false, "ipc field out of range"),
    }
}

pub(super) fn put_u16(buf: &mut [u8], f: Field, v: u16) {
    put_bytes(buf, f, &v.to_le_bytes());
}

pub(super) fn put_u32(buf: &mut [u8], f: Field, v: u32) {
    put_bytes(buf, f, &v.to_le_bytes());
}

pub(super) fn put_u64(buf: &mut [u8], f: Field, v: u64) {
    put_bytes(buf, f, &v.to_le_bytes());
}

pub(super) fn put_zero(buf: &mut [u8], f: Field) {
    match buf.get_mut(f) {
        Some(d) => d.fill(0),
        None => debug_assert!(false, "ipc field out of range"),
    }
}

/// [`MsgError::Truncated`] unless `data` holds at least `needed` bytes.
pub(super) fn check_len(data: &[u8], needed: usize) -> Result<(), MsgError> {
    if data.len() < needed {
        return Err(MsgError::Truncated {
            needed,
            got: data.len(),
        });
    }
    Ok(())
}

/// Exactly `len` bytes: fewer is `Truncated`, more is `LengthMismatch`.
pub(super) fn check_exact(data: &[u8], len: usize) -> Result<(), MsgError> {
    check_len(data, len)?;
    if data.len() != len {
        return Err(MsgError::LengthMismatch);
    }
    Ok(())
}

/// [`MsgError::Reserved`] unless every byte of `f` is zero.
pub(super) fn check_zero(data: &[u8], f: Field) -> Result<(), MsgError> {
    match data.get(f) {
        Some(s) if s.iter().all(|&b| b == 0) => Ok(()),
        Some(_) => Err(MsgError::Reserved),
        None => {
            debug_assert!(false, "ipc field out of range");
            Err(MsgError::LengthMismatch)
        }
    }
}

/// [`MsgError::BadFlags`] for any bit of `flags` outside `allowed`.
pub(super) fn check_flags(flags: u16, allowed: u16) -> Result<(), MsgError> {
    if flags & !allowed != 0 {
        return Err(MsgError::BadFlags(flags));
    }
    Ok(())
}

/// A 0/1 byte.
pub(super) fn get_bool(data: &[u8], at: usize) -> Result<bool, MsgError> {
    match get_u8(data, at) {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(MsgError::Malformed),
    }
}

/// `buf[..len]`, or [`MsgError::BufferTooSmall`].
pub(super) fn out_buf(buf: &mut [u8], len: usize) -> Result<&mut [u8], MsgError> {
    buf.get_mut(..len).ok_or(MsgError::BufferTooSmall)
}

/// A name-length byte: at most 128.
pub(super) fn get_name_len(data: &[u8], at: usize) -> Result<usize, MsgError> {
    let len = usize::from(get_u8(data, at));
    if len > GROUP_NAME_MAX {
        return Err(MsgError::NameTooLong);
    }
    Ok(len)
}

/// The group name in `data[at..at + len]` (`len` from [`get_name_len`]).
pub(super) fn get_name(data: &[u8], at: usize, len: usize) -> Result<GroupName, MsgError> {
    let end = at.checked_add(len).ok_or(MsgError::LengthMismatch)?;
    let bytes = data.get(at..end).ok_or(MsgError::LengthMismatch)?;
    GroupName::new(bytes).map_err(|_| MsgError::NameTooLong)
}

/// Write `name`'s length at `len_at` and its bytes from `at`.
pub(super) fn put_name(buf: &mut [u8], len_at: usize, at: usize, name: &GroupName) {
    // A GroupName holds at most 128 bytes: the length fits a u8.
    put_u8(buf, len_at, name.len() as u8);
    put_bytes(buf, at..at + name.len(), name.as_bytes());
}

/// A status word: `Ok(())` for `CS_OK`, the error for a known code,
/// [`MsgError::Malformed`] for anything else.
pub(super) fn get_status(data: &[u8], f: Field) -> Result<Result<(), CsError>, MsgError> {
    match get_u32(data, f) {
        CS_OK => Ok(Ok(())),
        code => CsError::from_code(code).map(Err).ok_or(MsgError::Malformed),
    }
}

/// An error word: a known code other than `CS_OK`.
pub(super) fn get_error(data: &[u8], f: Field) -> Result<CsError, MsgError> {
    match get_status(data, f)? {
        Ok(()) => Err(MsgError::Malformed),
        Err(e) => Ok(e),
    }
}

pub(super) fn status_code(status: Result<(), CsError>) -> u32 {
    match status {
        Ok(()) => CS_OK,
        Err(e) => e.code(),
    }
}

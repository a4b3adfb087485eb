//! CPG messages: what the group layer multicasts through Totem.

use super::{
    check_len, get_node_id, get_u16, get_u32, get_u8, out_buf, put_bytes, put_u16, put_u32, put_u8,
    put_zero,
};
use super::{NodeList, WireError};
use crate::limits::{GROUP_NAME_MAX, JOINLIST_MAX, NODES_MAX};
use crate::types::{GroupName, Guarantee, Reason};

/// Message kinds (byte 0).
mod kind {
    pub(super) const JOIN: u8 = 1;
    pub(super) const LEAVE: u8 = 2;
    pub(super) const MCAST: u8 = 3;
    pub(super) const JOINLIST: u8 = 4;
    pub(super) const DOWNLIST: u8 = 5;
}

/// Byte 0 of every message.
const KIND: usize = 0;

/// JOIN: `kind | 3 reserved | pid | flags | name_len | name`.
mod join_field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RESERVED: Field = 1..4;
    pub(super) const PID: Field = 4..8;
    pub(super) const FLAGS: Field = 8..12;
    pub(super) const NAME_LEN: usize = 12;
    pub(super) const NAME: Rest = 13..;
}

/// LEAVE: `kind | reason | 2 reserved | pid | name_len | name`.
mod leave_field {
    use crate::wire::field::{Field, Rest};

    pub(super) const REASON: usize = 1;
    pub(super) const RESERVED: Field = 2..4;
    pub(super) const PID: Field = 4..8;
    pub(super) const NAME_LEN: usize = 8;
    pub(super) const NAME: Rest = 9..;
}

/// MCAST: `kind | guarantee | 2 reserved | pid | name_len | name | payload`.
mod mcast_field {
    use crate::wire::field::{Field, Rest};

    pub(super) const GUARANTEE: usize = 1;
    pub(super) const RESERVED: Field = 2..4;
    pub(super) const PID: Field = 4..8;
    pub(super) const NAME_LEN: usize = 8;
    pub(super) const NAME: Rest = 9..;
}

/// JOINLIST and DOWNLIST: `kind | 1 reserved | count u16 | entries`.
mod list_field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RESERVED: usize = 1;
    pub(super) const COUNT: Field = 2..4;
    pub(super) const ENTRIES: Rest = 4..;
}

/// One joinlist entry: `pid | name_len | name`.
mod entry_field {
    use crate::wire::field::{Field, Rest};

    pub(super) const PID: Field = 0..4;
    pub(super) const NAME_LEN: usize = 4;
    pub(super) const NAME: Rest = 5..;
}

/// Bytes of a CPG JOIN in front of the group name.
pub const JOIN_HEADER_LEN: usize = join_field::NAME.start;
/// Bytes of a CPG LEAVE in front of the group name.
pub const LEAVE_HEADER_LEN: usize = leave_field::NAME.start;
/// Bytes of a JOINLIST or DOWNLIST in front of the entries.
pub const LIST_HEADER_LEN: usize = list_field::ENTRIES.start;
/// Bytes of a joinlist entry in front of the group name.
pub const JOINLIST_ENTRY_HEADER_LEN: usize = entry_field::NAME.start;
/// Bytes per node id in a downlist.
const NODE_ID_LEN: usize = 4;

static_assertions::const_assert_eq!(JOIN_HEADER_LEN, 13);
static_assertions::const_assert_eq!(LEAVE_HEADER_LEN, 9);
static_assertions::const_assert_eq!(mcast_field::NAME.start, 9);
static_assertions::const_assert_eq!(LIST_HEADER_LEN, 4);
static_assertions::const_assert_eq!(JOINLIST_ENTRY_HEADER_LEN, 5);
static_assertions::const_assert!(GROUP_NAME_MAX <= u8::MAX as usize);
static_assertions::const_assert!(JOINLIST_MAX <= u16::MAX as usize);

/// A group name whose length byte is at `len_at` and bytes start at
/// `name_at`, and the bytes after it.
fn get_name(data: &[u8], len_at: usize, name_at: usize) -> Result<(GroupName, &[u8]), WireError> {
    let (name, rest) = get_name_bytes(data, len_at, name_at)?;
    Ok((
        GroupName::new(name).map_err(|_| WireError::NameTooLong)?,
        rest,
    ))
}

/// [`get_name`] in place: the name's bytes (at most 128) and the rest.
fn get_name_bytes(data: &[u8], len_at: usize, name_at: usize) -> Result<(&[u8], &[u8]), WireError> {
    let len = usize::from(get_u8(data, len_at));
    if len > GROUP_NAME_MAX {
        return Err(WireError::NameTooLong);
    }
    let rest = data.get(name_at..).ok_or(WireError::LengthMismatch)?;
    if rest.len() < len {
        return Err(WireError::LengthMismatch);
    }
    Ok(rest.split_at(len))
}

/// Write `name`'s length at `len_at` and its bytes from `name_at`.
fn put_name(buf: &mut [u8], len_at: usize, name_at: usize, name: &GroupName) {
    // GroupName holds at most 128 bytes: the length fits a u8.
    put_u8(buf, len_at, name.len() as u8);
    put_bytes(buf, name_at..name_at + name.len(), name.as_bytes());
}

/// Parse the joinlist entry at the front of `data`: `(pid, name, rest)`.
fn get_joinlist_entry(data: &[u8]) -> Result<(u32, GroupName, &[u8]), WireError> {
    if data.len() < JOINLIST_ENTRY_HEADER_LEN {
        return Err(WireError::LengthMismatch);
    }
    let pid = get_u32(data, entry_field::PID);
    let (name, rest) = get_name(data, entry_field::NAME_LEN, entry_field::NAME.start)?;
    Ok((pid, name, rest))
}

/// A CPG message. `Mcast` borrows its payload; `JoinList` iterates lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgMsg<'a> {
    /// A process joins a group.
    Join {
        /// Process id.
        pid: u32,
        /// Group.
        group: GroupName,
        /// Model flags (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
        flags: u32,
    },
    /// A process leaves a group (reason LEAVE, or PROCDOWN on finalize).
    Leave {
        /// Process id.
        pid: u32,
        /// Group.
        group: GroupName,
        /// `Reason::Leave` or `Reason::ProcDown`.
        reason: Reason,
    },
    /// Application data for a group.
    Mcast {
        /// Sending process.
        pid: u32,
        /// Group.
        group: GroupName,
        /// Requested guarantee.
        guarantee: Guarantee,
        /// The application's bytes.
        payload: &'a [u8],
    },
    /// After a ring change: every (pid, group) joined on the sending node.
    JoinList(JoinListIter<'a>),
    /// After a ring change: the nodes the sender saw leave.
    DownList(NodeList),
}

/// An `MCAST` read in place: what [`CpgMsg::Mcast`] holds, its group
/// name borrowed rather than copied (the receive path parses one per
/// delivered message and needs the name only to look it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McastRef<'a> {
    /// Sending process.
    pub pid: u32,
    /// Group name bytes (at most 128).
    pub group: &'a [u8],
    /// Requested guarantee.
    pub guarantee: Guarantee,
    /// The application's bytes.
    pub payload: &'a [u8],
}

impl<'a> McastRef<'a> {
    /// `Ok(None)` for a message of another kind (for [`CpgMsg::parse`]);
    /// an `MCAST` is checked exactly as `CpgMsg::parse` checks it.
    ///
    /// # Errors
    /// [`WireError::Truncated`] for an empty message, and the errors of
    /// [`CpgMsg::parse`] for a malformed `MCAST`. Never panics.
    pub fn parse(data: &'a [u8]) -> Result<Option<McastRef<'a>>, WireError> {
        check_len(data, 1)?;
        if get_u8(data, KIND) != kind::MCAST {
            return Ok(None);
        }
        McastRef::parse_body(data).map(Some)
    }

    fn parse_body(data: &'a [u8]) -> Result<McastRef<'a>, WireError> {
        check_len(data, mcast_field::NAME.start)?;
        let guarantee =
            Guarantee::from_u8(get_u8(data, mcast_field::GUARANTEE)).ok_or(WireError::Malformed)?;
        let (group, payload) =
            get_name_bytes(data, mcast_field::NAME_LEN, mcast_field::NAME.start)?;
        Ok(McastRef {
            pid: get_u32(data, mcast_field::PID),
            group,
            guarantee,
            payload,
        })
    }
}

/// Entries of a checked joinlist: `(pid, group)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinListIter<'a> {
    data: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for JoinListIter<'a> {
    type Item = (u32, GroupName);
    fn next(&mut self) -> Option<(u32, GroupName)> {
        if self.remaining == 0 {
            return None;
        }
        match get_joinlist_entry(self.data) {
            Ok((pid, name, rest)) => {
                self.data = rest;
                self.remaining -= 1;
                Some((pid, name))
            }
            Err(_) => {
                // Unreachable for a list checked by `parse`; end quietly.
                self.data = &[];
                self.remaining = 0;
                None
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for JoinListIter<'_> {}

impl<'a> CpgMsg<'a> {
    /// Parse one CPG message (exact length).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below a message's fixed part,
    /// [`WireError::UnknownKind`], [`WireError::NameTooLong`] for a name
    /// length above 128, [`WireError::TooManyEntries`] for a list above its
    /// limit, [`WireError::Malformed`] for a bad reason, guarantee or zero
    /// node id, [`WireError::LengthMismatch`] unless the fields fill the
    /// message exactly. Never panics.
    pub fn parse(data: &'a [u8]) -> Result<CpgMsg<'a>, WireError> {
        check_len(data, 1)?;
        match get_u8(data, KIND) {
            kind::JOIN => {
                check_len(data, JOIN_HEADER_LEN)?;
                let (group, rest) = get_name(data, join_field::NAME_LEN, join_field::NAME.start)?;
                if !rest.is_empty() {
                    return Err(WireError::LengthMismatch);
                }
                Ok(CpgMsg::Join {
                    pid: get_u32(data, join_field::PID),
                    group,
                    flags: get_u32(data, join_field::FLAGS),
                })
            }
            kind::LEAVE => {
                check_len(data, LEAVE_HEADER_LEN)?;
                let reason = match Reason::from_u32(u32::from(get_u8(data, leave_field::REASON))) {
                    Some(r @ (Reason::Leave | Reason::ProcDown)) => r,
                    _ => return Err(WireError::Malformed),
                };
                let (group, rest) = get_name(data, leave_field::NAME_LEN, leave_field::NAME.start)?;
                if !rest.is_empty() {
                    return Err(WireError::LengthMismatch);
                }
                Ok(CpgMsg::Leave {
                    pid: get_u32(data, leave_field::PID),
                    group,
                    reason,
                })
            }
            kind::MCAST => {
                let m = McastRef::parse_body(data)?;
                Ok(CpgMsg::Mcast {
                    pid: m.pid,
                    group: GroupName::new(m.group).map_err(|_| WireError::NameTooLong)?,
                    guarantee: m.guarantee,
                    payload: m.payload,
                })
            }
            kind::JOINLIST => {
                check_len(data, LIST_HEADER_LEN)?;
                let count = usize::from(get_u16(data, list_field::COUNT));
                if count > JOINLIST_MAX {
                    return Err(WireError::TooManyEntries);
                }
                let entries = data.get(list_field::ENTRIES).unwrap_or(&[]);
                let mut rest = entries;
                for _ in 0..count {
                    let (_, _, r) = get_joinlist_entry(rest)?;
                    rest = r;
                }
                if !rest.is_empty() {
                    return Err(WireError::LengthMismatch);
                }
                Ok(CpgMsg::JoinList(JoinListIter {
                    data: entries,
                    remaining: count,
                }))
            }
            kind::DOWNLIST => {
                check_len(data, LIST_HEADER_LEN)?;
                let count = usize::from(get_u16(data, list_field::COUNT));
                if count > NODES_MAX {
                    return Err(WireError::TooManyEntries);
                }
                let ids = data.get(list_field::ENTRIES).unwrap_or(&[]);
                // count <= 64: no overflow.
                if ids.len() != count * NODE_ID_LEN {
                    return Err(WireError::LengthMismatch);
                }
                let mut list = NodeList::new();
                for id in ids.chunks_exact(NODE_ID_LEN) {
                    list.push(get_node_id(id, 0..NODE_ID_LEN)?)
                        .map_err(|_| WireError::TooManyEntries)?;
                }
                Ok(CpgMsg::DownList(list))
            }
            k => Err(WireError::UnknownKind(k)),
        }
    }
    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            CpgMsg::Join { group, .. } => JOIN_HEADER_LEN + group.len(),
            CpgMsg::Leave { group, .. } => LEAVE_HEADER_LEN + group.len(),
            CpgMsg::Mcast { group, payload, .. } => {
                mcast_header_len(group.len()).saturating_add(payload.len())
            }
            CpgMsg::JoinList(it) => LIST_HEADER_LEN.saturating_add(it.data.len()),
            CpgMsg::DownList(list) => LIST_HEADER_LEN + list.len() * NODE_ID_LEN,
        }
    }
    /// Emit into `buf`, returning the length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = out_buf(buf, len)?;
        match self {
            CpgMsg::Join { pid, group, flags } => {
                put_u8(out, KIND, kind::JOIN);
                put_zero(out, join_field::RESERVED);
                put_u32(out, join_field::PID, *pid);
                put_u32(out, join_field::FLAGS, *flags);
                put_name(out, join_field::NAME_LEN, join_field::NAME.start, group);
            }
            CpgMsg::Leave { pid, group, reason } => {
                put_u8(out, KIND, kind::LEAVE);
                // Reason values are 0..=5.
                put_u8(out, leave_field::REASON, *reason as u32 as u8);
                put_zero(out, leave_field::RESERVED);
                put_u32(out, leave_field::PID, *pid);
                put_name(out, leave_field::NAME_LEN, leave_field::NAME.start, group);
            }
            CpgMsg::Mcast {
                pid,
                group,
                guarantee,
                payload,
            } => {
                let at = emit_mcast_header(*pid, group, *guarantee, out)?;
                put_bytes(out, at..len, payload);
            }
            CpgMsg::JoinList(it) => {
                put_u8(out, KIND, kind::JOINLIST);
                put_u8(out, list_field::RESERVED, 0);
                // Only `parse` makes a JoinListIter: at most JOINLIST_MAX entries.
                put_u16(
                    out,
                    list_field::COUNT,
                    u16::try_from(it.remaining).unwrap_or(u16::MAX),
                );
                put_bytes(out, list_field::ENTRIES.start..len, it.data);
            }
            CpgMsg::DownList(list) => {
                put_u8(out, KIND, kind::DOWNLIST);
                put_u8(out, list_field::RESERVED, 0);
                // NodeList holds at most NODES_MAX (64) ids.
                put_u16(out, list_field::COUNT, list.len() as u16);
                let ids = out.get_mut(list_field::ENTRIES).unwrap_or(&mut []);
                for (slot, &id) in ids.chunks_exact_mut(NODE_ID_LEN).zip(list.iter()) {
                    put_u32(slot, 0..NODE_ID_LEN, id);
                }
            }
        }
        Ok(len)
    }
}

/// Bytes of a CPG MCAST header for a group name of `name_len` bytes: the
/// application payload follows it directly (zero-copy senders reserve this
/// much headroom).
pub const fn mcast_header_len(name_len: usize) -> usize {
    mcast_field::NAME.start.saturating_add(name_len)
}

/// Emit only the CPG MCAST header (the payload is written or already lies
/// right after it), returning its length.
///
/// # Errors
/// [`WireError::BufferTooSmall`].
pub fn emit_mcast_header(
    pid: u32,
    group: &GroupName,
    guarantee: Guarantee,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let len = mcast_header_len(group.len());
    let out = out_buf(buf, len)?;
    put_u8(out, KIND, kind::MCAST);
    put_u8(out, mcast_field::GUARANTEE, guarantee as u8);
    put_zero(out, mcast_field::RESERVED);
    put_u32(out, mcast_field::PID, pid);
    put_name(out, mcast_field::NAME_LEN, mcast_field::NAME.start, group);
    Ok(len)
}

/// Emit a joinlist of `entries` into `buf`, returning the length.
///
/// # Errors
/// [`WireError::BufferTooSmall`], [`WireError::TooManyEntries`] beyond `JOINLIST_MAX`.
pub fn emit_joinlist<'e>(
    entries: impl ExactSizeIterator<Item = (u32, &'e GroupName)>,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    if entries.len() > JOINLIST_MAX {
        return Err(WireError::TooManyEntries);
    }
    let head = out_buf(buf, LIST_HEADER_LEN)?;
    put_u8(head, KIND, kind::JOINLIST);
    put_u8(head, list_field::RESERVED, 0);
    let mut at = LIST_HEADER_LEN;
    let mut count = 0usize;
    // Counted as written: the header never disagrees with the entries,
    // whatever the iterator's `len()` claimed.
    for (pid, group) in entries {
        count += 1;
        if count > JOINLIST_MAX {
            return Err(WireError::TooManyEntries);
        }
        let end = at + JOINLIST_ENTRY_HEADER_LEN + group.len();
        let entry = buf.get_mut(at..end).ok_or(WireError::BufferTooSmall)?;
        put_u32(entry, entry_field::PID, pid);
        put_name(entry, entry_field::NAME_LEN, entry_field::NAME.start, group);
        at = end;
    }
    // count <= JOINLIST_MAX fits a u16 (asserted above).
    put_u16(buf, list_field::COUNT, count as u16);
    Ok(at)
}

/// Bytes a joinlist with these entries takes.
pub fn joinlist_len<'e>(entries: impl Iterator<Item = &'e GroupName>) -> usize {
    entries.fold(LIST_HEADER_LEN, |acc, g| {
        acc.saturating_add(JOINLIST_ENTRY_HEADER_LEN + g.len())
    })
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::{group_name, guarantee, leak, node_list};

    /// JOIN: pid 12345, flags 1, group "GROUP".
    static JOIN_BYTES: [u8; 18] = [
        1, 0, 0, 0, 0x39, 0x30, 0, 0, 0x01, 0, 0, 0, 5, b'G', b'R', b'O', b'U', b'P',
    ];
    /// LEAVE: PROCDOWN, pid 42, group "abc".
    static LEAVE_BYTES: [u8; 12] = [2, 5, 0, 0, 0x2A, 0, 0, 0, 3, b'a', b'b', b'c'];
    /// MCAST: AGREED, pid 7, group "gx", payload "data".
    static MCAST_BYTES: [u8; 15] = [
        3, 2, 0, 0, 0x07, 0, 0, 0, 2, b'g', b'x', b'd', b'a', b't', b'a',
    ];
    /// JOINLIST: (1, "a"), (2, "").
    static JOINLIST_BYTES: [u8; 15] = [4, 0, 2, 0, 1, 0, 0, 0, 1, b'a', 2, 0, 0, 0, 0];
    /// DOWNLIST: nodes 3 and 4.
    static DOWNLIST_BYTES: [u8; 12] = [5, 0, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0];

    fn name(s: &[u8]) -> GroupName {
        GroupName::new(s).unwrap()
    }

    fn fixtures() -> Vec<(&'static [u8], CpgMsg<'static>)> {
        vec![
            (
                &JOIN_BYTES[..],
                CpgMsg::Join {
                    pid: 12345,
                    group: name(b"GROUP"),
                    flags: 1,
                },
            ),
            (
                &LEAVE_BYTES[..],
                CpgMsg::Leave {
                    pid: 42,
                    group: name(b"abc"),
                    reason: Reason::ProcDown,
                },
            ),
            (
                &MCAST_BYTES[..],
                CpgMsg::Mcast {
                    pid: 7,
                    group: name(b"gx"),
                    guarantee: Guarantee::Agreed,
                    payload: b"data",
                },
            ),
            (
                &DOWNLIST_BYTES[..],
                CpgMsg::DownList([3, 4].into_iter().collect()),
            ),
        ]
    }

    fn emit_vec(m: &CpgMsg<'_>) -> Vec<u8> {
        let mut buf = vec![0xEE; m.buffer_len()];
        assert_eq!(m.emit(&mut buf), Ok(buf.len()));
        buf
    }

    #[test]
    fn deconstruct() {
        for (bytes, msg) in fixtures() {
            assert_eq!(CpgMsg::parse(bytes), Ok(msg));
        }
        let Ok(CpgMsg::JoinList(it)) = CpgMsg::parse(&JOINLIST_BYTES) else {
            panic!()
        };
        assert_eq!(it.len(), 2);
        assert_eq!(it.collect::<Vec<_>>(), [(1, name(b"a")), (2, name(b""))]);
    }

    #[test]
    fn construct() {
        for (bytes, msg) in fixtures() {
            assert_eq!(msg.buffer_len(), bytes.len());
            assert_eq!(emit_vec(&msg), bytes);
            let mut short = vec![0; bytes.len() - 1];
            assert_eq!(msg.emit(&mut short), Err(WireError::BufferTooSmall));
        }
        let (a, empty) = (name(b"a"), name(b""));
        let entries = [(1, &a), (2, &empty)];
        assert_eq!(
            joinlist_len(entries.iter().map(|e| e.1)),
            JOINLIST_BYTES.len()
        );
        let mut buf = [0xEE; 15];
        assert_eq!(emit_joinlist(entries.iter().copied(), &mut buf), Ok(15));
        assert_eq!(buf, JOINLIST_BYTES);
        assert_eq!(
            emit_joinlist(entries.iter().copied(), &mut buf[..14]),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            emit_joinlist(entries.iter().copied(), &mut buf[..3]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn round_trip() {
        for (bytes, msg) in fixtures() {
            assert_eq!(CpgMsg::parse(&emit_vec(&msg)), Ok(msg));
            // Every strict prefix is rejected.
            for n in 0..bytes.len() {
                if bytes[0] != kind::MCAST || n < bytes.len() - 4 {
                    assert!(CpgMsg::parse(&bytes[..n]).is_err(), "{bytes:?} prefix {n}");
                }
            }
        }
        let jl = CpgMsg::parse(&JOINLIST_BYTES).unwrap();
        assert_eq!(emit_vec(&jl), JOINLIST_BYTES);
        // A partly consumed joinlist emits what is left.
        let CpgMsg::JoinList(mut it) = jl else {
            panic!()
        };
        it.next();
        let rest = emit_vec(&CpgMsg::JoinList(it));
        let Ok(CpgMsg::JoinList(it)) = CpgMsg::parse(&rest) else {
            panic!()
        };
        assert_eq!(it.collect::<Vec<_>>(), [(2, name(b""))]);
    }

    #[test]
    fn mcast_header_for_zero_copy() {
        assert_eq!(mcast_header_len(0), 9);
        const LEN: usize = mcast_header_len(2);
        assert_eq!(LEN, 11);
        let mut buf = [0; 15];
        assert_eq!(
            emit_mcast_header(7, &name(b"gx"), Guarantee::Agreed, &mut buf),
            Ok(11)
        );
        buf[11..].copy_from_slice(b"data");
        assert_eq!(buf, MCAST_BYTES);
        assert_eq!(
            emit_mcast_header(7, &name(b"gx"), Guarantee::Agreed, &mut buf[..10]),
            Err(WireError::BufferTooSmall)
        );
        // An empty payload is a legal message.
        let Ok(CpgMsg::Mcast { payload, .. }) = CpgMsg::parse(&MCAST_BYTES[..11]) else {
            panic!()
        };
        assert!(payload.is_empty());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            CpgMsg::parse(&[]),
            Err(WireError::Truncated { needed: 1, got: 0 })
        );
        assert_eq!(
            CpgMsg::parse(&JOIN_BYTES[..12]),
            Err(WireError::Truncated {
                needed: 13,
                got: 12
            })
        );
        assert_eq!(
            CpgMsg::parse(&LEAVE_BYTES[..8]),
            Err(WireError::Truncated { needed: 9, got: 8 })
        );
        assert_eq!(
            CpgMsg::parse(&MCAST_BYTES[..2]),
            Err(WireError::Truncated { needed: 9, got: 2 })
        );
        assert_eq!(
            CpgMsg::parse(&JOINLIST_BYTES[..3]),
            Err(WireError::Truncated { needed: 4, got: 3 })
        );
        assert_eq!(
            CpgMsg::parse(&DOWNLIST_BYTES[..1]),
            Err(WireError::Truncated { needed: 4, got: 1 })
        );
    }

    #[test]
    fn unknown_kind() {
        for k in [0u8, 6, 0xFF] {
            assert_eq!(
                CpgMsg::parse(&[k, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(WireError::UnknownKind(k))
            );
        }
    }

    #[test]
    fn length_mismatch() {
        for bytes in [
            &JOIN_BYTES[..],
            &LEAVE_BYTES[..],
            &JOINLIST_BYTES[..],
            &DOWNLIST_BYTES[..],
        ] {
            let mut long = bytes.to_vec();
            long.push(0);
            assert_eq!(
                CpgMsg::parse(&long),
                Err(WireError::LengthMismatch),
                "{bytes:?}"
            );
        }
        // Name running past the end.
        assert_eq!(
            CpgMsg::parse(&JOIN_BYTES[..17]),
            Err(WireError::LengthMismatch)
        );
        assert_eq!(
            CpgMsg::parse(&MCAST_BYTES[..10]),
            Err(WireError::LengthMismatch)
        );
        // Joinlist: count says more (or fewer) than present.
        let mut jl = JOINLIST_BYTES.to_vec();
        jl[2] = 3;
        assert_eq!(CpgMsg::parse(&jl), Err(WireError::LengthMismatch));
        jl[2] = 1;
        assert_eq!(CpgMsg::parse(&jl), Err(WireError::LengthMismatch));
        let mut dl = DOWNLIST_BYTES.to_vec();
        dl[2] = 1;
        assert_eq!(CpgMsg::parse(&dl), Err(WireError::LengthMismatch));
    }

    #[test]
    fn too_many_entries() {
        let mut jl = vec![4, 0];
        jl.extend_from_slice(&((JOINLIST_MAX + 1) as u16).to_le_bytes());
        for pid in 0..=JOINLIST_MAX as u32 {
            jl.extend_from_slice(&pid.to_le_bytes());
            jl.push(0);
        }
        assert_eq!(CpgMsg::parse(&jl), Err(WireError::TooManyEntries));
        let mut dl = vec![5, 0, 65, 0];
        for id in 1..=65u32 {
            dl.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(CpgMsg::parse(&dl), Err(WireError::TooManyEntries));
        // Emitting a joinlist beyond the limit.
        let g = name(b"g");
        let many: Vec<(u32, &GroupName)> = (0..=JOINLIST_MAX as u32).map(|p| (p, &g)).collect();
        let mut buf = vec![0; 4096];
        assert_eq!(
            emit_joinlist(many.iter().copied(), &mut buf),
            Err(WireError::TooManyEntries)
        );
        let n = emit_joinlist(many[1..].iter().copied(), &mut buf).unwrap();
        let Ok(CpgMsg::JoinList(it)) = CpgMsg::parse(&buf[..n]) else {
            panic!()
        };
        assert_eq!(it.count(), JOINLIST_MAX);
    }

    #[test]
    fn name_too_long() {
        let mut m = vec![1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 129];
        m.extend_from_slice(&[b'x'; 129]);
        assert_eq!(CpgMsg::parse(&m), Err(WireError::NameTooLong));
        m[12] = 128;
        m.pop();
        assert!(matches!(CpgMsg::parse(&m), Ok(CpgMsg::Join { group, .. }) if group.len() == 128));
        let mut jl = JOINLIST_BYTES.to_vec();
        jl[8] = 200;
        assert_eq!(CpgMsg::parse(&jl), Err(WireError::NameTooLong));
        let mut l = LEAVE_BYTES.to_vec();
        l[8] = 0xFF;
        assert_eq!(CpgMsg::parse(&l), Err(WireError::NameTooLong));
    }

    #[test]
    fn bad_field_bytes() {
        for r in [0u8, 1, 3, 4, 6, 0xFF] {
            let mut l = LEAVE_BYTES.to_vec();
            l[1] = r;
            assert_eq!(CpgMsg::parse(&l), Err(WireError::Malformed), "reason {r}");
        }
        let mut l = LEAVE_BYTES.to_vec();
        l[1] = 2;
        assert!(matches!(
            CpgMsg::parse(&l),
            Ok(CpgMsg::Leave {
                reason: Reason::Leave,
                ..
            })
        ));
        let mut m = MCAST_BYTES.to_vec();
        m[1] = 4;
        assert_eq!(CpgMsg::parse(&m), Err(WireError::Malformed));
        let mut dl = DOWNLIST_BYTES.to_vec();
        dl[8] = 0;
        assert_eq!(CpgMsg::parse(&dl), Err(WireError::Malformed));
        // Reserved bytes are ignored.
        let mut j = JOIN_BYTES.to_vec();
        j[1] = 9;
        assert_eq!(CpgMsg::parse(&j), Ok(fixtures()[0].1.clone()));
    }

    fn msg() -> impl Strategy<Value = CpgMsg<'static>> {
        prop_oneof![
            (any::<u32>(), group_name(), any::<u32>())
                .prop_map(|(pid, group, flags)| CpgMsg::Join { pid, group, flags }),
            (any::<u32>(), group_name(), any::<bool>()).prop_map(|(pid, group, leave)| {
                CpgMsg::Leave {
                    pid,
                    group,
                    reason: if leave {
                        Reason::Leave
                    } else {
                        Reason::ProcDown
                    },
                }
            }),
            (
                any::<u32>(),
                group_name(),
                guarantee(),
                vec(any::<u8>(), 0..200)
            )
                .prop_map(|(pid, group, guarantee, payload)| CpgMsg::Mcast {
                    pid,
                    group,
                    guarantee,
                    payload: leak(payload)
                }),
            node_list(NODES_MAX).prop_map(CpgMsg::DownList),
        ]
    }

    proptest! {
        #[test]
        fn msg_round_trip(m in msg()) {
            let bytes = emit_vec(&m);
            prop_assert_eq!(CpgMsg::parse(&bytes), Ok(m));
        }

        #[test]
        fn joinlist_round_trip(entries in vec((any::<u32>(), group_name()), 0..40)) {
            let refs: Vec<(u32, &GroupName)> = entries.iter().map(|(p, g)| (*p, g)).collect();
            let mut buf = vec![0xEE; joinlist_len(entries.iter().map(|e| &e.1))];
            prop_assert_eq!(emit_joinlist(refs.iter().copied(), &mut buf), Ok(buf.len()));
            let msg = CpgMsg::parse(&buf).unwrap();
            prop_assert_eq!(emit_vec(&msg), buf.clone());
            let CpgMsg::JoinList(it) = msg else { panic!() };
            prop_assert_eq!(it.len(), entries.len());
            prop_assert_eq!(it.collect::<Vec<_>>(), entries);
        }

        #[test]
        fn any_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
            drain(&data);
        }

        /// The receive path's in-place read agrees with the full parse:
        /// on valid messages of every kind and on MCAST-kind noise.
        #[test]
        fn mcast_ref_agrees_with_parse(m in msg(), noise in vec(any::<u8>(), 0..200)) {
            let mut mcast_noise = noise;
            if let Some(k) = mcast_noise.first_mut() {
                *k = kind::MCAST;
            }
            for bytes in [emit_vec(&m), mcast_noise] {
                match (McastRef::parse(&bytes), CpgMsg::parse(&bytes)) {
                    (Ok(Some(r)), Ok(CpgMsg::Mcast { pid, group, guarantee, payload })) => {
                        prop_assert_eq!(
                            (r.pid, r.group, r.guarantee, r.payload),
                            (pid, group.as_bytes(), guarantee, payload)
                        );
                    }
                    (Ok(None), Ok(CpgMsg::Mcast { .. })) | (Ok(Some(_)), _) => {
                        prop_assert!(false, "the parsers disagree on {:?}", bytes);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (Err(_), Ok(_)) => prop_assert!(false, "McastRef refused {:?}", bytes),
                    (Ok(None), _) => {}
                }
            }
        }

        #[test]
        fn any_body_never_panics(kind in 0u8..=6, count in 0u16..4, body in vec(any::<u8>(), 0..64)) {
            // A plausible kind and count in front, so every parser is reached.
            let mut data = vec![kind, 0];
            data.extend_from_slice(&count.to_le_bytes());
            data.extend_from_slice(&body);
            drain(&data);
        }

        #[test]
        fn joinlists_of_short_names_never_panic(count in 0u16..4, body in vec(0u8..4, 0..40)) {
            let mut data = vec![kind::JOINLIST, 0];
            data.extend_from_slice(&count.to_le_bytes());
            data.extend_from_slice(&body);
            drain(&data);
        }
    }

    /// Parse, iterate fully and re-emit whatever parses.
    fn drain(data: &[u8]) {
        if let Ok(m) = CpgMsg::parse(data) {
            assert_eq!(m.buffer_len(), data.len());
            assert_eq!(CpgMsg::parse(&emit_vec(&m)), Ok(m.clone()));
            if let CpgMsg::JoinList(it) = m {
                let n = it.len();
                assert_eq!(it.count(), n);
            }
        }
    }
}

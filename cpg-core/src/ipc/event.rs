//! Events: daemon → client, on the event ring. Replies to requests travel
//! here too, in the reserve of the ring that events leave free
//! ([`super::EVENT_RESERVE`]).
//!
//! ```text
//! kind    name           body                                                          flags
//! 0x0301  REPLY          0..4 req_id | 4..8 cs_error | 8..10 request kind | 10..16 reserved
//!                        16.. body by request kind, on CS_OK only (empty on an error):   -
//!                          ZC_ALLOC             0..4 slot | 4..8 generation | 8..16 payload offset in the zc region
//!                                               16..20 payload capacity | 20..24 reserved
//!                          MEMBERSHIP_GET       0..4 total | 4..8 offset | 8..12 count | 12..16 reserved
//!                                               16.. count × member (12 bytes)
//!                          LOCAL_GET            0..4 node id
//!                          ITERATION_INITIALIZE 0..4 iteration id
//!                          ITERATION_NEXT       0..4 count (1..=16) | count × (node id, pid, name_len, name)
//!                          FLOW_CONTROL_STATE_GET  0 enabled (0/1) | 1..4 reserved
//!                          STATUS               see [`super::status`]
//!                          every other kind     empty
//! 0x0302  DELIVER        0..4 node id | 4..8 pid | 8..12 total_len | 12 name_len | 13..16 reserved
//!                        16..len−name_len first piece | the group name, last                -
//! 0x0303  DELIVER_MORE   the next piece (all of the body)                                    -
//! 0x0304  CONFCHG        0..2 members | 2..4 left | 4..6 joined | 6 name_len | 7 reserved
//!                        8.. members, left, joined (12 bytes each) | the group name, last    MORE
//! 0x0305  TOTEM_CONFCHG  0..4 ring rep | 4..8 reserved | 8..16 ring seq | 16..20 count
//!                        20..24 reserved | 24.. count × node id                              -
//! 0x0306  FLOW_CONTROL   0 enabled (0/1) | 1..4 reserved                                     -
//! 0x0307  EVICTED        0..4 cs_error                                                       -
//! ```
//!
//! A member is 12 bytes, `node id | pid | reason` (u32 each), Corosync's
//! `struct cpg_address` on a little-endian host: reason 0 in member lists,
//! LEAVE, NODEDOWN or PROCDOWN in left lists, JOIN or NODEUP in joined
//! lists. A delivered piece starts 8-byte aligned in the ring and the
//! member lists 4-byte aligned, so a client may hand them to a callback in
//! place.

use super::codec::{
    check_exact, check_flags, check_len, check_zero, get_bool, get_error, get_name, get_name_len,
    get_status, get_u16, get_u32, get_u64, out_buf, put_bytes, put_name, put_u16, put_u32, put_u64,
    put_u8, put_zero, status_code, Field, Message, MsgError,
};
use super::list::{IterEntries, List, ITER_ENTRY_HEADER_LEN};
use super::request::RequestKind;
use super::status::StatusReply;
use super::ITERATION_BATCH_MAX;
use crate::limits::{CPG_MEMBERS_MAX, GROUP_NAME_MAX, NODES_MAX};
use crate::pool::SlotId;
use crate::types::{CsError, GroupName, MemberAddr, NodeId, Reason, RingId};

/// Kinds of event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum EventKind {
    Reply = 0x0301,
    Deliver = 0x0302,
    DeliverMore = 0x0303,
    Confchg = 0x0304,
    TotemConfchg = 0x0305,
    FlowControl = 0x0306,
    Evicted = 0x0307,
    DeliverRef = 0x0308,
}

impl EventKind {
    /// Every event kind.
    pub const ALL: [EventKind; 8] = [
        EventKind::Reply,
        EventKind::Deliver,
        EventKind::DeliverMore,
        EventKind::Confchg,
        EventKind::TotemConfchg,
        EventKind::FlowControl,
        EventKind::Evicted,
        EventKind::DeliverRef,
    ];

    /// Decode a record kind.
    pub const fn from_u16(k: u16) -> Option<EventKind> {
        use EventKind::*;
        Some(match k {
            0x0301 => Reply,
            0x0302 => Deliver,
            0x0303 => DeliverMore,
            0x0304 => Confchg,
            0x0305 => TotemConfchg,
            0x0306 => FlowControl,
            0x0307 => Evicted,
            0x0308 => DeliverRef,
            _ => return None,
        })
    }
}

/// `CONFCHG` flag: the next `CONFCHG` continues this one's lists (a list
/// longer than `CPG_MEMBERS_MAX` travels in parts).
pub const FLAG_MORE: u16 = 0x0001;

/// Bytes in front of a `REPLY`'s body.
pub const REPLY_HEADER_LEN: usize = 16;
/// Bytes in front of a `DELIVER`'s piece.
pub const DELIVER_HEADER_LEN: usize = 16;
/// Bytes of a member entry.
const MEMBER_LEN: usize = 12;
/// Bytes of the largest `CONFCHG` body (full lists, longest name).
pub const CONFCHG_BODY_MAX: usize =
    confchg::LISTS + 3 * CPG_MEMBERS_MAX * MEMBER_LEN + GROUP_NAME_MAX;
/// Bytes of the largest `TOTEM_CONFCHG` body.
pub const TOTEM_CONFCHG_BODY_MAX: usize = totem::NODES + NODES_MAX * 4;

mod reply {
    use super::Field;
    pub(super) const REQ_ID: Field = 0..4;
    pub(super) const STATUS: Field = 4..8;
    pub(super) const OP: Field = 8..10;
    pub(super) const RESERVED: Field = 10..16;
    pub(super) const BODY: usize = super::REPLY_HEADER_LEN;
    // bodies, relative to BODY
    pub(super) const ZC_SLOT: Field = 0..4;
    pub(super) const ZC_GENERATION: Field = 4..8;
    pub(super) const ZC_OFFSET: Field = 8..16;
    pub(super) const ZC_CAPACITY: Field = 16..20;
    pub(super) const ZC_RESERVED: Field = 20..24;
    pub(super) const ZC_LEN: usize = 24;
    pub(super) const MG_TOTAL: Field = 0..4;
    pub(super) const MG_OFFSET: Field = 4..8;
    pub(super) const MG_COUNT: Field = 8..12;
    pub(super) const MG_RESERVED: Field = 12..16;
    pub(super) const MG_ENTRIES: usize = 16;
    pub(super) const WORD: Field = 0..4;
    pub(super) const IT_COUNT: Field = 0..4;
    pub(super) const IT_ENTRIES: usize = 4;
    pub(super) const FC_ENABLED: usize = 0;
    pub(super) const FC_RESERVED: Field = 1..4;
}

mod deliver {
    use super::Field;
    pub(super) const NODE_ID: Field = 0..4;
    pub(super) const PID: Field = 4..8;
    pub(super) const TOTAL_LEN: Field = 8..12;
    pub(super) const NAME_LEN: usize = 12;
    pub(super) const RESERVED: Field = 13..16;
    pub(super) const PIECE: usize = super::DELIVER_HEADER_LEN;
}

mod confchg {
    use super::Field;
    pub(super) const MEMBERS: Field = 0..2;
    pub(super) const LEFT: Field = 2..4;
    pub(super) const JOINED: Field = 4..6;
    pub(super) const NAME_LEN: usize = 6;
    pub(super) const RESERVED: Field = 7..8;
    pub(super) const LISTS: usize = 8;
}

mod totem {
    use super::Field;
    pub(super) const REP: Field = 0..4;
    pub(super) const RESERVED_A: Field = 4..8;
    pub(super) const SEQ: Field = 8..16;
    pub(super) const COUNT: Field = 16..20;
    pub(super) const RESERVED_B: Field = 20..24;
    pub(super) const NODES: usize = 24;
}

mod flow {
    use super::Field;
    pub(super) const ENABLED: usize = 0;
    pub(super) const RESERVED: Field = 1..4;
    pub(super) const LEN: usize = 4;
}

static_assertions::const_assert_eq!(deliver::PIECE % 8, 0);
static_assertions::const_assert_eq!(confchg::LISTS % 4, 0);
static_assertions::const_assert_eq!(reply::BODY % 8, 0);
static_assertions::const_assert_eq!((reply::BODY + reply::MG_ENTRIES) % 4, 0);
static_assertions::const_assert_eq!(totem::NODES % 4, 0);
static_assertions::const_assert!(CPG_MEMBERS_MAX <= u16::MAX as usize);

/// Bytes of the largest `REPLY` body (see [`super::REPLY_BODY_MAX`]).
pub(super) const fn reply_body_max() -> usize {
    let zc = reply::ZC_LEN;
    let membership = reply::MG_ENTRIES + CPG_MEMBERS_MAX * MEMBER_LEN;
    let iteration =
        reply::IT_ENTRIES + ITERATION_BATCH_MAX * (ITER_ENTRY_HEADER_LEN + GROUP_NAME_MAX);
    let mut max = zc;
    if membership > max {
        max = membership;
    }
    if iteration > max {
        max = iteration;
    }
    if super::status::STATUS_BODY_MAX > max {
        max = super::status::STATUS_BODY_MAX;
    }
    REPLY_HEADER_LEN + max
}

/// What a successful reply carries, by request kind.
// `Status` carries its counters inline (a few hundred bytes): a reply is
// made, emitted or read one at a time, never stored in bulk, and a view
// over bytes instead would make every reader decode them itself.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody<'a> {
    /// Nothing: `JOIN`, `LEAVE`, `MCAST`, `MCAST_ZC`, `ZC_FREE`,
    /// `ITERATION_FINALIZE`, `FINALIZE`.
    Done,
    /// `ZC_ALLOC`: the slot is the client's.
    ZcAlloc {
        /// The slot (give it back in `MCAST_ZC` or `ZC_FREE`).
        slot: SlotId,
        /// Where its payload starts, from the start of the zc region.
        offset: u64,
        /// Payload bytes it holds (at least what was asked).
        capacity: u32,
    },
    /// `MEMBERSHIP_GET`: members `offset..offset + members.len()` of
    /// `total`, sorted by (node id, pid).
    Membership {
        /// Members of the group now.
        total: u32,
        /// Index of the first member here.
        offset: u32,
        /// At most `CPG_MEMBERS_MAX` members.
        members: List<'a, MemberAddr>,
    },
    /// `LOCAL_GET`: this node's id.
    LocalGet {
        /// The node id.
        nodeid: NodeId,
    },
    /// `ITERATION_INITIALIZE`: the snapshot's id.
    IterationInitialize {
        /// Its id, for `ITERATION_NEXT` and `ITERATION_FINALIZE`.
        iter_id: u32,
    },
    /// `ITERATION_NEXT`: the next 1..=16 entries (past the end the reply
    /// is the error `NO_SECTIONS`).
    IterationNext {
        /// The entries.
        entries: IterEntries<'a>,
    },
    /// `FLOW_CONTROL_STATE_GET`.
    FlowControlState {
        /// `CPG_FLOW_CONTROL_ENABLED`.
        enabled: bool,
    },
    /// `STATUS`: ring, members, a page of links, counters.
    Status(StatusReply<'a>),
}

impl ReplyBody<'_> {
    /// Whether this body answers a request of `op`.
    pub const fn answers(&self, op: RequestKind) -> bool {
        use RequestKind as K;
        match self {
            ReplyBody::Done => matches!(
                op,
                K::Join
                    | K::Leave
                    | K::Mcast
                    | K::McastZc
                    | K::ZcFree
                    | K::IterationFinalize
                    | K::Finalize
            ),
            ReplyBody::ZcAlloc { .. } => matches!(op, K::ZcAlloc),
            ReplyBody::Membership { .. } => matches!(op, K::MembershipGet),
            ReplyBody::LocalGet { .. } => matches!(op, K::LocalGet),
            ReplyBody::IterationInitialize { .. } => matches!(op, K::IterationInitialize),
            ReplyBody::IterationNext { .. } => matches!(op, K::IterationNext),
            ReplyBody::FlowControlState { .. } => matches!(op, K::FlowControlStateGet),
            ReplyBody::Status(_) => matches!(op, K::Status),
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            ReplyBody::Done => 0,
            ReplyBody::ZcAlloc { .. } => reply::ZC_LEN,
            ReplyBody::Membership { members, .. } => {
                reply::MG_ENTRIES.saturating_add(members.wire_len())
            }
            ReplyBody::LocalGet { .. } | ReplyBody::IterationInitialize { .. } => reply::WORD.end,
            ReplyBody::IterationNext { entries } => {
                reply::IT_ENTRIES.saturating_add(entries.wire_len())
            }
            ReplyBody::FlowControlState { .. } => flow::LEN,
            ReplyBody::Status(s) => s.wire_len(),
        }
    }

    /// Whether `parse` would take this body back.
    fn is_valid(&self) -> bool {
        match self {
            ReplyBody::Membership {
                total,
                offset,
                members,
            } => {
                members.len() <= CPG_MEMBERS_MAX
                    && members.is_valid()
                    && (members.is_empty()
                        || u64::from(*offset) + members.len() as u64 <= u64::from(*total))
            }
            ReplyBody::LocalGet { nodeid } => *nodeid != 0,
            ReplyBody::Status(s) => s.is_valid(),
            ReplyBody::IterationNext { entries } => {
                (1..=ITERATION_BATCH_MAX).contains(&entries.len())
            }
            _ => true,
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The request's `req_id`.
    pub req_id: u32,
    /// The request's kind (never `MCAST_MORE`: a message in pieces is
    /// answered as its `MCAST`).
    pub op: RequestKind,
    /// `CS_OK` with the body, or the error (no body).
    pub result: Result<ReplyBody<'a>, CsError>,
}

/// A `DELIVER` body read in place: [`Event::Deliver`] with the group name
/// left as the body's bytes, for a reader that keeps one copy of the name
/// across many deliveries (a client's hot path) instead of a
/// [`GroupName`] per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverHead<'a> {
    /// The group name's bytes (at most 128).
    pub group: &'a [u8],
    /// The sending process.
    pub sender: MemberAddr,
    /// Bytes of the whole message.
    pub total_len: u32,
    /// The first piece.
    pub piece: &'a [u8],
}

impl<'a> DeliverHead<'a> {
    /// Parse a `DELIVER` body (flags checked by the caller: none).
    ///
    /// # Errors
    /// As [`Event::Deliver`] in [`Message::parse`]: length errors,
    /// [`MsgError::Reserved`], [`MsgError::NameTooLong`],
    /// [`MsgError::Malformed`] (node id 0, a piece longer than its
    /// message, an empty first piece of a non-empty message).
    pub fn parse(body: &'a [u8]) -> Result<DeliverHead<'a>, MsgError> {
        check_len(body, deliver::PIECE)?;
        check_zero(body, deliver::RESERVED)?;
        let name_len = get_name_len(body, deliver::NAME_LEN)?;
        let name_at = body
            .len()
            .checked_sub(name_len)
            .filter(|&at| at >= deliver::PIECE)
            .ok_or(MsgError::LengthMismatch)?;
        let group = body.get(name_at..).ok_or(MsgError::LengthMismatch)?;
        let piece = body.get(deliver::PIECE..name_at).unwrap_or(&[]);
        let sender = MemberAddr {
            nodeid: get_u32(body, deliver::NODE_ID),
            pid: get_u32(body, deliver::PID),
        };
        let total_len = get_u32(body, deliver::TOTAL_LEN);
        if sender.nodeid == 0
            || (piece.len() as u64) > u64::from(total_len)
            || (piece.is_empty() && total_len > 0)
        {
            return Err(MsgError::Malformed);
        }
        Ok(DeliverHead {
            group,
            sender,
            total_len,
            piece,
        })
    }

    /// Parse a `DELIVER_REF` body: the header of a `DELIVER` and the
    /// group name, no piece (`piece` is empty); the message is the next
    /// record of the delivery ring.
    ///
    /// # Errors
    /// As [`DeliverHead::parse`]; [`MsgError::LengthMismatch`] for bytes
    /// between the header and the name; [`MsgError::Malformed`] for an
    /// empty message (sent inline) or node id 0.
    pub fn parse_ref(body: &'a [u8]) -> Result<DeliverHead<'a>, MsgError> {
        check_len(body, deliver::PIECE)?;
        check_zero(body, deliver::RESERVED)?;
        let name_len = get_name_len(body, deliver::NAME_LEN)?;
        check_exact(body, deliver::PIECE + name_len)?;
        let sender = MemberAddr {
            nodeid: get_u32(body, deliver::NODE_ID),
            pid: get_u32(body, deliver::PID),
        };
        let total_len = get_u32(body, deliver::TOTAL_LEN);
        if sender.nodeid == 0 || total_len == 0 {
            return Err(MsgError::Malformed);
        }
        Ok(DeliverHead {
            group: body.get(deliver::PIECE..).unwrap_or(&[]),
            sender,
            total_len,
            piece: &[],
        })
    }
}

/// An event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The answer to a request.
    Reply(Reply<'a>),
    /// A message of the handle's group, whole or its first piece.
    Deliver {
        /// The group.
        group: GroupName,
        /// The sending process.
        sender: MemberAddr,
        /// Bytes of the whole message.
        total_len: u32,
        /// The first piece (`DELIVER_MORE`s follow with the rest).
        piece: &'a [u8],
    },
    /// The next piece of the message being delivered.
    DeliverMore {
        /// The piece (non-empty).
        piece: &'a [u8],
    },
    /// A message of the handle's group whose bytes are the next record of
    /// the delivery ring (`docs/spec/ipc.md` §6): read there in place.
    DeliverRef {
        /// The group.
        group: GroupName,
        /// The sending process.
        sender: MemberAddr,
        /// Bytes of the message (the delivery record's body), at least 1.
        total_len: u32,
    },
    /// A membership change of the handle's group, or a part of one.
    Confchg {
        /// The group.
        group: GroupName,
        /// More parts follow ([`FLAG_MORE`]): append their lists.
        more: bool,
        /// Members after the change (reason 0), at most `CPG_MEMBERS_MAX`.
        members: List<'a, MemberAddr>,
        /// Members that left, with LEAVE, NODEDOWN or PROCDOWN.
        left: List<'a, (MemberAddr, Reason)>,
        /// Members that joined, with JOIN or NODEUP.
        joined: List<'a, (MemberAddr, Reason)>,
    },
    /// The node membership after a ring change (model v1 totem confchg).
    TotemConfchg {
        /// The ring.
        ring_id: RingId,
        /// Its nodes, at most `NODES_MAX`.
        members: List<'a, NodeId>,
    },
    /// The node's send queue crossed its high-water mark (`true`: `mcast`
    /// answers TRY_AGAIN) or fell below it. Advisory: the client may answer
    /// TRY_AGAIN early and `flow_control_state_get` locally.
    FlowControl {
        /// `CPG_FLOW_CONTROL_ENABLED`.
        enabled: bool,
    },
    /// The daemon's last word to a client that stopped dispatching: the
    /// connection is closed; every call now answers `error`.
    Evicted {
        /// What the client's calls answer (`LIBRARY`).
        error: CsError,
    },
}

impl Event<'_> {
    /// The record kind.
    pub const fn event_kind(&self) -> EventKind {
        match self {
            Event::Reply(_) => EventKind::Reply,
            Event::Deliver { .. } => EventKind::Deliver,
            Event::DeliverMore { .. } => EventKind::DeliverMore,
            Event::DeliverRef { .. } => EventKind::DeliverRef,
            Event::Confchg { .. } => EventKind::Confchg,
            Event::TotemConfchg { .. } => EventKind::TotemConfchg,
            Event::FlowControl { .. } => EventKind::FlowControl,
            Event::Evicted { .. } => EventKind::Evicted,
        }
    }
}

/// The largest first piece of a `DELIVER` for a group name of `name_len`
/// bytes on a ring whose records carry `body_max` bytes.
pub const fn deliver_piece_max(body_max: usize, name_len: usize) -> usize {
    body_max.saturating_sub(DELIVER_HEADER_LEN + name_len)
}

/// The largest piece of a `DELIVER_MORE`: all of a record.
pub const fn deliver_more_piece_max(body_max: usize) -> usize {
    body_max
}

fn left_reason_ok(r: Reason) -> bool {
    matches!(r, Reason::Leave | Reason::NodeDown | Reason::ProcDown)
}

fn joined_reason_ok(r: Reason) -> bool {
    matches!(r, Reason::Join | Reason::NodeUp)
}

fn changes_ok(list: &List<'_, (MemberAddr, Reason)>, ok: fn(Reason) -> bool) -> bool {
    list.len() <= CPG_MEMBERS_MAX && list.is_valid() && list.iter().all(|(_, r)| ok(r))
}

impl<'a> Message<'a> for Event<'a> {
    fn kind(&self) -> u16 {
        self.event_kind() as u16
    }

    fn flags(&self) -> u16 {
        match self {
            Event::Confchg { more: true, .. } => FLAG_MORE,
            _ => 0,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Event::Reply(r) => reply::BODY + r.result.as_ref().map_or(0, ReplyBody::wire_len),
            Event::Deliver { group, piece, .. } => {
                (deliver::PIECE + group.len()).saturating_add(piece.len())
            }
            Event::DeliverMore { piece } => piece.len(),
            Event::DeliverRef { group, .. } => deliver::PIECE + group.len(),
            Event::Confchg {
                group,
                members,
                left,
                joined,
                ..
            } => (confchg::LISTS + group.len())
                .saturating_add(members.wire_len())
                .saturating_add(left.wire_len())
                .saturating_add(joined.wire_len()),
            Event::TotemConfchg { members, .. } => totem::NODES.saturating_add(members.wire_len()),
            Event::FlowControl { .. } => flow::LEN,
            Event::Evicted { .. } => 4,
        }
    }

    fn emit_body(&self, buf: &mut [u8]) -> Result<usize, MsgError> {
        let len = self.body_len();
        let out = out_buf(buf, len)?;
        match self {
            Event::Reply(r) => {
                if r.op == RequestKind::McastMore {
                    return Err(MsgError::Malformed);
                }
                if let Ok(body) = &r.result {
                    if !body.answers(r.op) || !body.is_valid() {
                        return Err(MsgError::Malformed);
                    }
                }
                put_u32(out, reply::REQ_ID, r.req_id);
                put_u32(out, reply::STATUS, status_code(r.result.map(|_| ())));
                put_u16(out, reply::OP, r.op as u16);
                put_zero(out, reply::RESERVED);
                let b = out.get_mut(reply::BODY..).unwrap_or(&mut []);
                match r.result {
                    Err(_) | Ok(ReplyBody::Done) => {}
                    Ok(ReplyBody::ZcAlloc {
                        slot,
                        offset,
                        capacity,
                    }) => {
                        put_u32(b, reply::ZC_SLOT, slot.index());
                        put_u32(b, reply::ZC_GENERATION, slot.generation());
                        put_u64(b, reply::ZC_OFFSET, offset);
                        put_u32(b, reply::ZC_CAPACITY, capacity);
                        put_zero(b, reply::ZC_RESERVED);
                    }
                    Ok(ReplyBody::Membership {
                        total,
                        offset,
                        members,
                    }) => {
                        put_u32(b, reply::MG_TOTAL, total);
                        put_u32(b, reply::MG_OFFSET, offset);
                        // ≤ CPG_MEMBERS_MAX (checked above).
                        put_u32(b, reply::MG_COUNT, members.len() as u32);
                        put_zero(b, reply::MG_RESERVED);
                        members.emit(b.get_mut(reply::MG_ENTRIES..).unwrap_or(&mut []));
                    }
                    Ok(ReplyBody::LocalGet { nodeid: w })
                    | Ok(ReplyBody::IterationInitialize { iter_id: w }) => {
                        put_u32(b, reply::WORD, w)
                    }
                    Ok(ReplyBody::IterationNext { entries }) => {
                        // ≤ ITERATION_BATCH_MAX (checked above).
                        put_u32(b, reply::IT_COUNT, entries.len() as u32);
                        entries.emit(b.get_mut(reply::IT_ENTRIES..).unwrap_or(&mut []));
                    }
                    Ok(ReplyBody::FlowControlState { enabled }) => {
                        put_u8(b, reply::FC_ENABLED, u8::from(enabled));
                        put_zero(b, reply::FC_RESERVED);
                    }
                    Ok(ReplyBody::Status(s)) => s.emit(b),
                }
            }
            Event::Deliver {
                group,
                sender,
                total_len,
                piece,
            } => {
                if sender.nodeid == 0
                    || (piece.len() as u64) > u64::from(*total_len)
                    || (piece.is_empty() && *total_len > 0)
                {
                    return Err(MsgError::Malformed);
                }
                put_u32(out, deliver::NODE_ID, sender.nodeid);
                put_u32(out, deliver::PID, sender.pid);
                put_u32(out, deliver::TOTAL_LEN, *total_len);
                put_zero(out, deliver::RESERVED);
                let name_at = deliver::PIECE + piece.len();
                put_bytes(out, deliver::PIECE..name_at, piece);
                put_name(out, deliver::NAME_LEN, name_at, group);
            }
            Event::DeliverMore { piece } => {
                if piece.is_empty() {
                    return Err(MsgError::Malformed);
                }
                put_bytes(out, 0..len, piece);
            }
            Event::DeliverRef {
                group,
                sender,
                total_len,
            } => {
                if sender.nodeid == 0 || *total_len == 0 {
                    return Err(MsgError::Malformed);
                }
                put_u32(out, deliver::NODE_ID, sender.nodeid);
                put_u32(out, deliver::PID, sender.pid);
                put_u32(out, deliver::TOTAL_LEN, *total_len);
                put_zero(out, deliver::RESERVED);
                put_name(out, deliver::NAME_LEN, deliver::PIECE, group);
            }
            Event::Confchg {
                group,
                members,
                left,
                joined,
                ..
            } => {
                if members.len() > CPG_MEMBERS_MAX
                    || left.len() > CPG_MEMBERS_MAX
                    || joined.len() > CPG_MEMBERS_MAX
                {
                    return Err(MsgError::TooManyEntries);
                }
                if !members.is_valid()
                    || !changes_ok(left, left_reason_ok)
                    || !changes_ok(joined, joined_reason_ok)
                {
                    return Err(MsgError::Malformed);
                }
                // Each ≤ CPG_MEMBERS_MAX ≤ u16::MAX.
                put_u16(out, confchg::MEMBERS, members.len() as u16);
                put_u16(out, confchg::LEFT, left.len() as u16);
                put_u16(out, confchg::JOINED, joined.len() as u16);
                put_zero(out, confchg::RESERVED);
                let mut at = confchg::LISTS;
                let n = members.wire_len();
                members.emit(out.get_mut(at..at + n).unwrap_or(&mut []));
                at += n;
                let n = left.wire_len();
                left.emit(out.get_mut(at..at + n).unwrap_or(&mut []));
                at += n;
                let n = joined.wire_len();
                joined.emit(out.get_mut(at..at + n).unwrap_or(&mut []));
                at += n;
                put_name(out, confchg::NAME_LEN, at, group);
            }
            Event::TotemConfchg { ring_id, members } => {
                if members.len() > NODES_MAX {
                    return Err(MsgError::TooManyEntries);
                }
                if ring_id.rep == 0 || !members.is_valid() {
                    return Err(MsgError::Malformed);
                }
                put_u32(out, totem::REP, ring_id.rep);
                put_zero(out, totem::RESERVED_A);
                put_u64(out, totem::SEQ, ring_id.seq);
                // ≤ NODES_MAX.
                put_u32(out, totem::COUNT, members.len() as u32);
                put_zero(out, totem::RESERVED_B);
                members.emit(out.get_mut(totem::NODES..).unwrap_or(&mut []));
            }
            Event::FlowControl { enabled } => {
                put_u8(out, flow::ENABLED, u8::from(*enabled));
                put_zero(out, flow::RESERVED);
            }
            Event::Evicted { error } => put_u32(out, 0..4, error.code()),
        }
        Ok(len)
    }

    /// # Errors
    /// [`MsgError::UnknownKind`], [`MsgError::BadFlags`] (only `CONFCHG`
    /// has one, [`FLAG_MORE`]), [`MsgError::Reserved`],
    /// [`MsgError::NameTooLong`], [`MsgError::TooManyEntries`] (member
    /// lists above `CPG_MEMBERS_MAX`, nodes above `NODES_MAX`, iteration
    /// entries above 16), [`MsgError::Malformed`] (an unknown status, `OK`
    /// in `EVICTED`, a reply to `MCAST_MORE` or to a request that is not a
    /// kind, a body on an error reply, node id 0, a reason out of place,
    /// a piece longer than its message, an empty piece, a membership page
    /// beyond its total, a flag byte not 0/1), length errors.
    fn parse(kind: u16, flags: u16, body: &'a [u8]) -> Result<Event<'a>, MsgError> {
        let kind = EventKind::from_u16(kind).ok_or(MsgError::UnknownKind(kind))?;
        check_flags(
            flags,
            if kind == EventKind::Confchg {
                FLAG_MORE
            } else {
                0
            },
        )?;
        match kind {
            EventKind::Reply => parse_reply(body).map(Event::Reply),
            EventKind::Deliver => {
                let d = DeliverHead::parse(body)?;
                Ok(Event::Deliver {
                    group: GroupName::new(d.group).map_err(|_| MsgError::NameTooLong)?,
                    sender: d.sender,
                    total_len: d.total_len,
                    piece: d.piece,
                })
            }
            EventKind::DeliverRef => {
                let d = DeliverHead::parse_ref(body)?;
                Ok(Event::DeliverRef {
                    group: GroupName::new(d.group).map_err(|_| MsgError::NameTooLong)?,
                    sender: d.sender,
                    total_len: d.total_len,
                })
            }
            EventKind::DeliverMore => {
                if body.is_empty() {
                    return Err(MsgError::Malformed);
                }
                Ok(Event::DeliverMore { piece: body })
            }
            EventKind::Confchg => {
                check_len(body, confchg::LISTS)?;
                check_zero(body, confchg::RESERVED)?;
                let counts = [
                    usize::from(get_u16(body, confchg::MEMBERS)),
                    usize::from(get_u16(body, confchg::LEFT)),
                    usize::from(get_u16(body, confchg::JOINED)),
                ];
                if counts.iter().any(|&n| n > CPG_MEMBERS_MAX) {
                    return Err(MsgError::TooManyEntries);
                }
                let name_len = get_name_len(body, confchg::NAME_LEN)?;
                // Counts ≤ 128: no overflow.
                let [m_end, l_end, j_end] = [
                    confchg::LISTS + counts[0] * MEMBER_LEN,
                    confchg::LISTS + (counts[0] + counts[1]) * MEMBER_LEN,
                    confchg::LISTS + (counts[0] + counts[1] + counts[2]) * MEMBER_LEN,
                ];
                check_exact(body, j_end + name_len)?;
                let slice = |f: Field| body.get(f).unwrap_or(&[]);
                let members = List::parse(slice(confchg::LISTS..m_end), counts[0])?;
                let left = List::parse(slice(m_end..l_end), counts[1])?;
                let joined = List::parse(slice(l_end..j_end), counts[2])?;
                if !changes_ok(&left, left_reason_ok) || !changes_ok(&joined, joined_reason_ok) {
                    return Err(MsgError::Malformed);
                }
                Ok(Event::Confchg {
                    group: get_name(body, j_end, name_len)?,
                    more: flags & FLAG_MORE != 0,
                    members,
                    left,
                    joined,
                })
            }
            EventKind::TotemConfchg => {
                check_len(body, totem::NODES)?;
                check_zero(body, totem::RESERVED_A)?;
                check_zero(body, totem::RESERVED_B)?;
                let count = get_u32(body, totem::COUNT) as usize;
                if count > NODES_MAX {
                    return Err(MsgError::TooManyEntries);
                }
                check_exact(body, totem::NODES + count * 4)?;
                let ring_id = RingId {
                    rep: get_u32(body, totem::REP),
                    seq: get_u64(body, totem::SEQ),
                };
                if ring_id.rep == 0 {
                    return Err(MsgError::Malformed);
                }
                Ok(Event::TotemConfchg {
                    ring_id,
                    members: List::parse(body.get(totem::NODES..).unwrap_or(&[]), count)?,
                })
            }
            EventKind::FlowControl => {
                check_exact(body, flow::LEN)?;
                check_zero(body, flow::RESERVED)?;
                Ok(Event::FlowControl {
                    enabled: get_bool(body, flow::ENABLED)?,
                })
            }
            EventKind::Evicted => {
                check_exact(body, 4)?;
                Ok(Event::Evicted {
                    error: get_error(body, 0..4)?,
                })
            }
        }
    }
}

fn parse_reply(body: &[u8]) -> Result<Reply<'_>, MsgError> {
    check_len(body, reply::BODY)?;
    check_zero(body, reply::RESERVED)?;
    let req_id = get_u32(body, reply::REQ_ID);
    let status = get_status(body, reply::STATUS)?;
    let op = RequestKind::from_u16(get_u16(body, reply::OP))
        .filter(|&k| k != RequestKind::McastMore)
        .ok_or(MsgError::Malformed)?;
    let b = body.get(reply::BODY..).unwrap_or(&[]);
    if let Err(e) = status {
        if !b.is_empty() {
            return Err(MsgError::LengthMismatch);
        }
        return Ok(Reply {
            req_id,
            op,
            result: Err(e),
        });
    }
    use RequestKind as K;
    let body = match op {
        K::Join
        | K::Leave
        | K::Mcast
        | K::McastZc
        | K::ZcFree
        | K::IterationFinalize
        | K::Finalize
        | K::McastMore => {
            check_exact(b, 0)?;
            ReplyBody::Done
        }
        K::ZcAlloc => {
            check_exact(b, reply::ZC_LEN)?;
            check_zero(b, reply::ZC_RESERVED)?;
            ReplyBody::ZcAlloc {
                slot: SlotId::from_parts(
                    get_u32(b, reply::ZC_SLOT),
                    get_u32(b, reply::ZC_GENERATION),
                ),
                offset: get_u64(b, reply::ZC_OFFSET),
                capacity: get_u32(b, reply::ZC_CAPACITY),
            }
        }
        K::MembershipGet => {
            check_len(b, reply::MG_ENTRIES)?;
            check_zero(b, reply::MG_RESERVED)?;
            let count = get_u32(b, reply::MG_COUNT) as usize;
            if count > CPG_MEMBERS_MAX {
                return Err(MsgError::TooManyEntries);
            }
            check_exact(b, reply::MG_ENTRIES + count * MEMBER_LEN)?;
            let total = get_u32(b, reply::MG_TOTAL);
            let offset = get_u32(b, reply::MG_OFFSET);
            if count > 0 && u64::from(offset) + count as u64 > u64::from(total) {
                return Err(MsgError::Malformed);
            }
            ReplyBody::Membership {
                total,
                offset,
                members: List::parse(b.get(reply::MG_ENTRIES..).unwrap_or(&[]), count)?,
            }
        }
        K::LocalGet => {
            check_exact(b, reply::WORD.end)?;
            match get_u32(b, reply::WORD) {
                0 => return Err(MsgError::Malformed),
                nodeid => ReplyBody::LocalGet { nodeid },
            }
        }
        K::IterationInitialize => {
            check_exact(b, reply::WORD.end)?;
            ReplyBody::IterationInitialize {
                iter_id: get_u32(b, reply::WORD),
            }
        }
        K::IterationNext => {
            check_len(b, reply::IT_ENTRIES)?;
            let count = get_u32(b, reply::IT_COUNT) as usize;
            if count > ITERATION_BATCH_MAX {
                return Err(MsgError::TooManyEntries);
            }
            if count == 0 {
                return Err(MsgError::Malformed);
            }
            ReplyBody::IterationNext {
                entries: IterEntries::parse(b.get(reply::IT_ENTRIES..).unwrap_or(&[]), count)?,
            }
        }
        K::Status => ReplyBody::Status(StatusReply::parse(b)?),
        K::FlowControlStateGet => {
            check_exact(b, flow::LEN)?;
            check_zero(b, reply::FC_RESERVED)?;
            ReplyBody::FlowControlState {
                enabled: get_bool(b, reply::FC_ENABLED)?,
            }
        }
    };
    Ok(Reply {
        req_id,
        op,
        result: Ok(body),
    })
}

/// A confchg cut into `CONFCHG` records of at most `CPG_MEMBERS_MAX`
/// entries per list: part `i` carries entries `128·i..128·(i+1)` of each
/// list, every part but the last has `more` set. One part when every list
/// fits.
#[derive(Debug, Clone)]
pub struct ConfchgParts<'a> {
    group: &'a GroupName,
    members: &'a [MemberAddr],
    left: &'a [(MemberAddr, Reason)],
    joined: &'a [(MemberAddr, Reason)],
    part: usize,
    parts: usize,
}

impl<'a> ConfchgParts<'a> {
    /// The parts of one confchg.
    pub fn new(
        group: &'a GroupName,
        members: &'a [MemberAddr],
        left: &'a [(MemberAddr, Reason)],
        joined: &'a [(MemberAddr, Reason)],
    ) -> ConfchgParts<'a> {
        let parts = [members.len(), left.len(), joined.len()]
            .into_iter()
            .map(|n| n.div_ceil(CPG_MEMBERS_MAX))
            .max()
            .unwrap_or(0)
            .max(1);
        ConfchgParts {
            group,
            members,
            left,
            joined,
            part: 0,
            parts,
        }
    }
}

fn chunk<T>(s: &[T], part: usize) -> &[T] {
    let start = part.saturating_mul(CPG_MEMBERS_MAX).min(s.len());
    let end = start.saturating_add(CPG_MEMBERS_MAX).min(s.len());
    s.get(start..end).unwrap_or(&[])
}

impl<'a> Iterator for ConfchgParts<'a> {
    type Item = Event<'a>;
    fn next(&mut self) -> Option<Event<'a>> {
        if self.part >= self.parts {
            return None;
        }
        let p = self.part;
        self.part += 1;
        Some(Event::Confchg {
            group: self.group.clone(),
            more: self.part < self.parts,
            members: List::from_slice(chunk(self.members, p)),
            left: List::from_slice(chunk(self.left, p)),
            joined: List::from_slice(chunk(self.joined, p)),
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.parts - self.part;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ConfchgParts<'_> {}

#[cfg(test)]
mod tests;

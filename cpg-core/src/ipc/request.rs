//! Requests: client → daemon, on the request ring. Every request starts
//! with the client's `req_id`; the daemon's `Reply` names it.
//!
//! ```text
//! kind    name                    body (after req_id u32 at 0..4)                       flags
//! 0x0201  JOIN                    4 name_len | 5..8 reserved | 8.. name                  -
//! 0x0202  LEAVE                   as JOIN                                                -
//! 0x0203  MCAST                   4 guarantee | 5..8 reserved | 8..12 total_len           REPLY
//!                                 12..16 reserved | 16.. first piece
//! 0x0204  MCAST_MORE              4..8 reserved | 8.. next piece (req_id of its MCAST)    -
//! 0x0205  MCAST_ZC                4 guarantee | 5..8 reserved | 8..12 slot | 12..16 generation
//!                                 16..20 offset in the slot's payload | 20..24 len      REPLY
//! 0x0206  ZC_ALLOC                4..8 len                                               -
//! 0x0207  ZC_FREE                 4..8 slot | 8..12 generation                           -
//! 0x0208  MEMBERSHIP_GET          4..8 offset | 8 name_len | 9..12 reserved | 12.. name  -
//! 0x0209  LOCAL_GET               -                                                      -
//! 0x020A  ITERATION_INITIALIZE    4 type (1..=3) | 5 name_len | 6..8 reserved | 8.. name (type 2 only)   -
//! 0x020B  ITERATION_NEXT          4..8 iteration id                                      -
//! 0x020C  ITERATION_FINALIZE      4..8 iteration id                                      -
//! 0x020D  FLOW_CONTROL_STATE_GET  -                                                      -
//! 0x020E  FINALIZE                -                                                      -
//! 0x020F  STATUS                  4..8 offset of the first link wanted                   -
//! ```
//!
//! Every body is exactly as long as its fields; reserved bytes are zero;
//! undefined flags are an error. `MCAST`'s and `MCAST_MORE`'s piece starts
//! 8-byte aligned in the ring.

use super::codec::{
    check_exact, check_flags, check_len, check_zero, get_name, get_name_len, get_u32, get_u8,
    out_buf, put_bytes, put_name, put_u32, put_u8, put_zero, Field, Message, MsgError,
};
use crate::limits::GROUP_NAME_MAX;
use crate::pool::SlotId;
use crate::types::{GroupName, Guarantee};

/// Kinds of request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum RequestKind {
    Join = 0x0201,
    Leave = 0x0202,
    Mcast = 0x0203,
    McastMore = 0x0204,
    McastZc = 0x0205,
    ZcAlloc = 0x0206,
    ZcFree = 0x0207,
    MembershipGet = 0x0208,
    LocalGet = 0x0209,
    IterationInitialize = 0x020A,
    IterationNext = 0x020B,
    IterationFinalize = 0x020C,
    FlowControlStateGet = 0x020D,
    Finalize = 0x020E,
    Status = 0x020F,
}

impl RequestKind {
    /// Every request kind.
    pub const ALL: [RequestKind; 15] = [
        RequestKind::Join,
        RequestKind::Leave,
        RequestKind::Mcast,
        RequestKind::McastMore,
        RequestKind::McastZc,
        RequestKind::ZcAlloc,
        RequestKind::ZcFree,
        RequestKind::MembershipGet,
        RequestKind::LocalGet,
        RequestKind::IterationInitialize,
        RequestKind::IterationNext,
        RequestKind::IterationFinalize,
        RequestKind::FlowControlStateGet,
        RequestKind::Finalize,
        RequestKind::Status,
    ];

    /// Decode a record kind.
    pub const fn from_u16(k: u16) -> Option<RequestKind> {
        use RequestKind::*;
        Some(match k {
            0x0201 => Join,
            0x0202 => Leave,
            0x0203 => Mcast,
            0x0204 => McastMore,
            0x0205 => McastZc,
            0x0206 => ZcAlloc,
            0x0207 => ZcFree,
            0x0208 => MembershipGet,
            0x0209 => LocalGet,
            0x020A => IterationInitialize,
            0x020B => IterationNext,
            0x020C => IterationFinalize,
            0x020D => FlowControlStateGet,
            0x020E => Finalize,
            0x020F => Status,
            _ => return None,
        })
    }
}

/// `MCAST` / `MCAST_ZC` flag: answer with a `Reply` on success too (without
/// it, the daemon replies to these only with an error).
pub const FLAG_REPLY: u16 = 0x0001;

/// Bytes in front of a `MCAST`'s first piece.
pub const MCAST_HEADER_LEN: usize = 16;
/// Bytes in front of a `MCAST_MORE`'s piece.
pub const MCAST_MORE_HEADER_LEN: usize = 8;
/// The largest fixed part of a request (the name-carrying ones with a
/// 128-byte name).
pub const REQUEST_FIXED_MAX: usize = 12 + GROUP_NAME_MAX;

mod field {
    use super::Field;
    pub(super) const REQ_ID: Field = 0..4;
    // JOIN, LEAVE
    pub(super) const NAME_LEN: usize = 4;
    pub(super) const NAME_RESERVED: Field = 5..8;
    pub(super) const NAME: usize = 8;
    // MCAST, MCAST_ZC
    pub(super) const GUARANTEE: usize = 4;
    pub(super) const GUARANTEE_RESERVED: Field = 5..8;
    pub(super) const TOTAL_LEN: Field = 8..12;
    pub(super) const MCAST_RESERVED: Field = 12..16;
    pub(super) const PIECE: usize = super::MCAST_HEADER_LEN;
    // MCAST_MORE
    pub(super) const MORE_RESERVED: Field = 4..8;
    pub(super) const MORE_PIECE: usize = super::MCAST_MORE_HEADER_LEN;
    // MCAST_ZC
    pub(super) const ZC_SLOT: Field = 8..12;
    pub(super) const ZC_GENERATION: Field = 12..16;
    pub(super) const ZC_OFFSET: Field = 16..20;
    pub(super) const ZC_LEN: Field = 20..24;
    pub(super) const MCAST_ZC_LEN: usize = 24;
    // ZC_ALLOC; ITERATION_NEXT / FINALIZE; ZC_FREE
    pub(super) const WORD: Field = 4..8;
    pub(super) const WORD2: Field = 8..12;
    // MEMBERSHIP_GET
    pub(super) const MG_OFFSET: Field = 4..8;
    pub(super) const MG_NAME_LEN: usize = 8;
    pub(super) const MG_RESERVED: Field = 9..12;
    pub(super) const MG_NAME: usize = 12;
    // ITERATION_INITIALIZE
    pub(super) const IT_TYPE: usize = 4;
    pub(super) const IT_NAME_LEN: usize = 5;
    pub(super) const IT_RESERVED: Field = 6..8;
    pub(super) const IT_NAME: usize = 8;
}

static_assertions::const_assert_eq!(field::PIECE % 8, 0);
static_assertions::const_assert_eq!(field::MORE_PIECE % 8, 0);
static_assertions::const_assert!(field::MG_NAME + GROUP_NAME_MAX <= REQUEST_FIXED_MAX);

/// What `cpg_iteration_initialize` walks (`cpg_iteration_type_t` with its
/// group argument; a combination Corosync refuses cannot be built).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IterScope {
    /// `CPG_ITERATION_NAME_ONLY` (1): one entry per group.
    NameOnly,
    /// `CPG_ITERATION_ONE_GROUP` (2): the members of this group.
    OneGroup(GroupName),
    /// `CPG_ITERATION_ALL` (3): every (group, member).
    All,
}

impl IterScope {
    /// The `cpg_iteration_type_t` value.
    pub const fn type_code(&self) -> u8 {
        match self {
            IterScope::NameOnly => 1,
            IterScope::OneGroup(_) => 2,
            IterScope::All => 3,
        }
    }
}

/// What a request asks (its kind and body after `req_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// `cpg_join`.
    Join {
        /// The group.
        group: GroupName,
    },
    /// `cpg_leave`.
    Leave {
        /// The group (must be the joined one: else NOT_EXIST).
        group: GroupName,
    },
    /// `cpg_mcast_joined`: a message, whole or its first piece.
    Mcast {
        /// The guarantee asked for.
        guarantee: Guarantee,
        /// Reply on success too ([`FLAG_REPLY`]).
        reply: bool,
        /// Bytes of the whole message.
        total_len: u32,
        /// The first piece (all of it when `total_len` fits one record);
        /// `MCAST_MORE`s with the same `req_id` follow with the rest.
        piece: &'a [u8],
    },
    /// The next piece of the message of the `MCAST` with this `req_id`.
    McastMore {
        /// The piece (non-empty).
        piece: &'a [u8],
    },
    /// `cpg_zcb_mcast_joined`: send `len` bytes at `offset` of an owned
    /// zero-copy slot's payload; the slot passes to the daemon.
    McastZc {
        /// The guarantee asked for.
        guarantee: Guarantee,
        /// Reply on success too ([`FLAG_REPLY`]).
        reply: bool,
        /// The slot (index and generation from `ZC_ALLOC`'s reply).
        slot: SlotId,
        /// Where the message starts in the slot's payload.
        offset: u32,
        /// Bytes of the message.
        len: u32,
    },
    /// `cpg_zcb_alloc`: a slot with at least `len` payload bytes.
    ZcAlloc {
        /// Payload bytes wanted.
        len: u32,
    },
    /// `cpg_zcb_free`: give an owned slot back.
    ZcFree {
        /// The slot.
        slot: SlotId,
    },
    /// `cpg_membership_get`: members from `offset` on (a group of more than
    /// `CPG_MEMBERS_MAX` members takes several requests).
    MembershipGet {
        /// The group.
        group: GroupName,
        /// Index of the first member wanted.
        offset: u32,
    },
    /// `cpg_local_get`.
    LocalGet,
    /// `cpg_iteration_initialize`: the daemon takes a snapshot.
    IterationInitialize {
        /// What to walk.
        scope: IterScope,
    },
    /// `cpg_iteration_next`: the next batch of the snapshot.
    IterationNext {
        /// The iteration.
        iter_id: u32,
    },
    /// `cpg_iteration_finalize`.
    IterationFinalize {
        /// The iteration.
        iter_id: u32,
    },
    /// `cpg_flow_control_state_get`.
    FlowControlStateGet,
    /// `cpg_finalize`: the daemon replies, then closes the connection.
    Finalize,
    /// Not a libcpg call: the node's ring, members, links and counters
    /// (`cpgtool status`), links from `link_offset` on.
    Status {
        /// Index of the first link wanted.
        link_offset: u32,
    },
}

impl Op<'_> {
    /// The record kind.
    pub const fn kind(&self) -> RequestKind {
        match self {
            Op::Join { .. } => RequestKind::Join,
            Op::Leave { .. } => RequestKind::Leave,
            Op::Mcast { .. } => RequestKind::Mcast,
            Op::McastMore { .. } => RequestKind::McastMore,
            Op::McastZc { .. } => RequestKind::McastZc,
            Op::ZcAlloc { .. } => RequestKind::ZcAlloc,
            Op::ZcFree { .. } => RequestKind::ZcFree,
            Op::MembershipGet { .. } => RequestKind::MembershipGet,
            Op::LocalGet => RequestKind::LocalGet,
            Op::IterationInitialize { .. } => RequestKind::IterationInitialize,
            Op::IterationNext { .. } => RequestKind::IterationNext,
            Op::IterationFinalize { .. } => RequestKind::IterationFinalize,
            Op::FlowControlStateGet => RequestKind::FlowControlStateGet,
            Op::Finalize => RequestKind::Finalize,
            Op::Status { .. } => RequestKind::Status,
        }
    }
}

/// A request: the client's id for it and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Chosen by the client; echoed by the reply. A message in pieces
    /// uses one `req_id` for all of them.
    pub req_id: u32,
    /// The operation.
    pub op: Op<'a>,
}

/// The largest first piece of a `MCAST` on a ring whose records carry
/// `body_max` bytes.
pub const fn mcast_piece_max(body_max: usize) -> usize {
    body_max.saturating_sub(MCAST_HEADER_LEN)
}

/// The largest piece of a `MCAST_MORE` on a ring whose records carry
/// `body_max` bytes.
pub const fn mcast_more_piece_max(body_max: usize) -> usize {
    body_max.saturating_sub(MCAST_MORE_HEADER_LEN)
}

/// The bytes of a `MCAST` body in front of its first piece (`req_id`,
/// guarantee, `total_len`, reserved zeros): for a writer that gathers the
/// piece from several buffers straight into the ring, so the payload is
/// copied once. The record's flags carry [`FLAG_REPLY`]; the piece follows
/// at offset [`MCAST_HEADER_LEN`] and must be what [`Message::emit_body`]
/// accepts (at most `total_len` bytes, non-empty unless the message is).
pub fn mcast_header(req_id: u32, guarantee: Guarantee, total_len: u32) -> [u8; MCAST_HEADER_LEN] {
    let mut h = [0u8; MCAST_HEADER_LEN];
    put_u32(&mut h, field::REQ_ID, req_id);
    put_u8(&mut h, field::GUARANTEE, guarantee as u8);
    put_u32(&mut h, field::TOTAL_LEN, total_len);
    h
}

/// The bytes of a `MCAST_MORE` body in front of its piece (`req_id`,
/// reserved zeros), as [`mcast_header`]; the piece must be non-empty.
pub fn mcast_more_header(req_id: u32) -> [u8; MCAST_MORE_HEADER_LEN] {
    let mut h = [0u8; MCAST_MORE_HEADER_LEN];
    put_u32(&mut h, field::REQ_ID, req_id);
    h
}

/// What an `MCAST` or `MCAST_MORE` record says in front of its piece:
/// the daemon parses this from a private copy of the head and hands the
/// piece (which decides nothing) to the engine straight from the ring, so
/// a message is not copied out of shared memory twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceHead {
    /// `MCAST`: a message, whole or its first piece.
    Mcast {
        /// Its request.
        req_id: u32,
        /// The guarantee asked for.
        guarantee: Guarantee,
        /// Reply on success too.
        reply: bool,
        /// Bytes of the whole message.
        total_len: u32,
    },
    /// `MCAST_MORE`: the next piece of the message of `req_id`.
    More {
        /// The request of its `MCAST`.
        req_id: u32,
    },
}

impl PieceHead {
    /// Bytes of the head in front of the piece, for a record of `kind`
    /// (`None` for kinds without a piece).
    pub const fn len_for(kind: u16) -> Option<usize> {
        match RequestKind::from_u16(kind) {
            Some(RequestKind::Mcast) => Some(MCAST_HEADER_LEN),
            Some(RequestKind::McastMore) => Some(MCAST_MORE_HEADER_LEN),
            _ => None,
        }
    }

    /// Parse `head` (exactly [`PieceHead::len_for`] bytes) of a record of
    /// `kind` with `flags` whose piece is `piece_len` bytes: the checks
    /// [`Request::parse`] makes, without the piece's bytes.
    ///
    /// # Errors
    /// As [`Request::parse`] for the same record.
    pub fn parse(
        kind: u16,
        flags: u16,
        head: &[u8],
        piece_len: usize,
    ) -> Result<PieceHead, MsgError> {
        let k = RequestKind::from_u16(kind).ok_or(MsgError::UnknownKind(kind))?;
        match k {
            RequestKind::Mcast => {
                check_flags(flags, FLAG_REPLY)?;
                check_exact(head, field::PIECE)?;
                let guarantee = guarantee_at(head)?;
                check_zero(head, field::GUARANTEE_RESERVED)?;
                check_zero(head, field::MCAST_RESERVED)?;
                let total_len = get_u32(head, field::TOTAL_LEN);
                if (piece_len as u64) > u64::from(total_len) || (piece_len == 0 && total_len > 0) {
                    return Err(MsgError::Malformed);
                }
                Ok(PieceHead::Mcast {
                    req_id: get_u32(head, field::REQ_ID),
                    guarantee,
                    reply: flags & FLAG_REPLY != 0,
                    total_len,
                })
            }
            RequestKind::McastMore => {
                check_flags(flags, 0)?;
                check_exact(head, field::MORE_PIECE)?;
                check_zero(head, field::MORE_RESERVED)?;
                if piece_len == 0 {
                    return Err(MsgError::Malformed);
                }
                Ok(PieceHead::More {
                    req_id: get_u32(head, field::REQ_ID),
                })
            }
            _ => Err(MsgError::UnknownKind(kind)),
        }
    }
}

fn guarantee_at(body: &[u8]) -> Result<Guarantee, MsgError> {
    Guarantee::from_u8(get_u8(body, field::GUARANTEE)).ok_or(MsgError::Malformed)
}

fn slot_at(body: &[u8], index: Field, generation: Field) -> SlotId {
    SlotId::from_parts(get_u32(body, index), get_u32(body, generation))
}

impl<'a> Message<'a> for Request<'a> {
    fn kind(&self) -> u16 {
        self.op.kind() as u16
    }

    fn flags(&self) -> u16 {
        match self.op {
            Op::Mcast { reply: true, .. } | Op::McastZc { reply: true, .. } => FLAG_REPLY,
            _ => 0,
        }
    }

    fn body_len(&self) -> usize {
        match &self.op {
            Op::Join { group } | Op::Leave { group } => field::NAME + group.len(),
            Op::Mcast { piece, .. } => field::PIECE.saturating_add(piece.len()),
            Op::McastMore { piece } => field::MORE_PIECE.saturating_add(piece.len()),
            Op::McastZc { .. } => field::MCAST_ZC_LEN,
            Op::ZcAlloc { .. }
            | Op::IterationNext { .. }
            | Op::IterationFinalize { .. }
            | Op::Status { .. } => field::WORD.end,
            Op::ZcFree { .. } => field::WORD2.end,
            Op::MembershipGet { group, .. } => field::MG_NAME + group.len(),
            Op::LocalGet | Op::FlowControlStateGet | Op::Finalize => field::REQ_ID.end,
            Op::IterationInitialize { scope } => {
                field::IT_NAME
                    + match scope {
                        IterScope::OneGroup(g) => g.len(),
                        _ => 0,
                    }
            }
        }
    }

    fn emit_body(&self, buf: &mut [u8]) -> Result<usize, MsgError> {
        let len = self.body_len();
        let out = out_buf(buf, len)?;
        put_u32(out, field::REQ_ID, self.req_id);
        match &self.op {
            Op::Join { group } | Op::Leave { group } => {
                put_zero(out, field::NAME_RESERVED);
                put_name(out, field::NAME_LEN, field::NAME, group);
            }
            Op::Mcast {
                guarantee,
                total_len,
                piece,
                ..
            } => {
                if (piece.len() as u64) > u64::from(*total_len)
                    || (piece.is_empty() && *total_len > 0)
                {
                    return Err(MsgError::Malformed);
                }
                put_u8(out, field::GUARANTEE, *guarantee as u8);
                put_zero(out, field::GUARANTEE_RESERVED);
                put_u32(out, field::TOTAL_LEN, *total_len);
                put_zero(out, field::MCAST_RESERVED);
                put_bytes(out, field::PIECE..len, piece);
            }
            Op::McastMore { piece } => {
                if piece.is_empty() {
                    return Err(MsgError::Malformed);
                }
                put_zero(out, field::MORE_RESERVED);
                put_bytes(out, field::MORE_PIECE..len, piece);
            }
            Op::McastZc {
                guarantee,
                slot,
                offset,
                len: n,
                ..
            } => {
                put_u8(out, field::GUARANTEE, *guarantee as u8);
                put_zero(out, field::GUARANTEE_RESERVED);
                put_u32(out, field::ZC_SLOT, slot.index());
                put_u32(out, field::ZC_GENERATION, slot.generation());
                put_u32(out, field::ZC_OFFSET, *offset);
                put_u32(out, field::ZC_LEN, *n);
            }
            Op::ZcAlloc { len: n } | Op::Status { link_offset: n } => put_u32(out, field::WORD, *n),
            Op::IterationNext { iter_id } | Op::IterationFinalize { iter_id } => {
                put_u32(out, field::WORD, *iter_id)
            }
            Op::ZcFree { slot } => {
                put_u32(out, field::WORD, slot.index());
                put_u32(out, field::WORD2, slot.generation());
            }
            Op::MembershipGet { group, offset } => {
                put_u32(out, field::MG_OFFSET, *offset);
                put_zero(out, field::MG_RESERVED);
                put_name(out, field::MG_NAME_LEN, field::MG_NAME, group);
            }
            Op::IterationInitialize { scope } => {
                put_u8(out, field::IT_TYPE, scope.type_code());
                put_zero(out, field::IT_RESERVED);
                match scope {
                    IterScope::OneGroup(g) => put_name(out, field::IT_NAME_LEN, field::IT_NAME, g),
                    _ => put_u8(out, field::IT_NAME_LEN, 0),
                }
            }
            Op::LocalGet | Op::FlowControlStateGet | Op::Finalize => {}
        }
        Ok(len)
    }

    /// # Errors
    /// [`MsgError::UnknownKind`], [`MsgError::BadFlags`] (only `MCAST` and
    /// `MCAST_ZC` have one, [`FLAG_REPLY`]), [`MsgError::Reserved`],
    /// [`MsgError::NameTooLong`], [`MsgError::Malformed`] (guarantee above
    /// 3, iteration type outside 1..=3 or a group given for another type
    /// than ONE_GROUP, a first piece longer than the message or empty
    /// while the message is not, an empty `MCAST_MORE`), length errors.
    fn parse(kind: u16, flags: u16, body: &'a [u8]) -> Result<Request<'a>, MsgError> {
        let kind = RequestKind::from_u16(kind).ok_or(MsgError::UnknownKind(kind))?;
        let allowed = match kind {
            RequestKind::Mcast | RequestKind::McastZc => FLAG_REPLY,
            _ => 0,
        };
        check_flags(flags, allowed)?;
        let reply = flags & FLAG_REPLY != 0;
        check_len(body, field::REQ_ID.end)?;
        let req_id = get_u32(body, field::REQ_ID);
        let op = match kind {
            RequestKind::Join | RequestKind::Leave => {
                check_len(body, field::NAME)?;
                check_zero(body, field::NAME_RESERVED)?;
                let len = get_name_len(body, field::NAME_LEN)?;
                check_exact(body, field::NAME + len)?;
                let group = get_name(body, field::NAME, len)?;
                if kind == RequestKind::Join {
                    Op::Join { group }
                } else {
                    Op::Leave { group }
                }
            }
            RequestKind::Mcast => {
                check_len(body, field::PIECE)?;
                let guarantee = guarantee_at(body)?;
                check_zero(body, field::GUARANTEE_RESERVED)?;
                check_zero(body, field::MCAST_RESERVED)?;
                let total_len = get_u32(body, field::TOTAL_LEN);
                let piece = body.get(field::PIECE..).unwrap_or(&[]);
                if (piece.len() as u64) > u64::from(total_len)
                    || (piece.is_empty() && total_len > 0)
                {
                    return Err(MsgError::Malformed);
                }
                Op::Mcast {
                    guarantee,
                    reply,
                    total_len,
                    piece,
                }
            }
            RequestKind::McastMore => {
                check_len(body, field::MORE_PIECE)?;
                check_zero(body, field::MORE_RESERVED)?;
                let piece = body.get(field::MORE_PIECE..).unwrap_or(&[]);
                if piece.is_empty() {
                    return Err(MsgError::Malformed);
                }
                Op::McastMore { piece }
            }
            RequestKind::McastZc => {
                check_exact(body, field::MCAST_ZC_LEN)?;
                let guarantee = guarantee_at(body)?;
                check_zero(body, field::GUARANTEE_RESERVED)?;
                Op::McastZc {
                    guarantee,
                    reply,
                    slot: slot_at(body, field::ZC_SLOT, field::ZC_GENERATION),
                    offset: get_u32(body, field::ZC_OFFSET),
                    len: get_u32(body, field::ZC_LEN),
                }
            }
            RequestKind::ZcAlloc => {
                check_exact(body, field::WORD.end)?;
                Op::ZcAlloc {
                    len: get_u32(body, field::WORD),
                }
            }
            RequestKind::Status => {
                check_exact(body, field::WORD.end)?;
                Op::Status {
                    link_offset: get_u32(body, field::WORD),
                }
            }
            RequestKind::ZcFree => {
                check_exact(body, field::WORD2.end)?;
                Op::ZcFree {
                    slot: slot_at(body, field::WORD, field::WORD2),
                }
            }
            RequestKind::MembershipGet => {
                check_len(body, field::MG_NAME)?;
                check_zero(body, field::MG_RESERVED)?;
                let len = get_name_len(body, field::MG_NAME_LEN)?;
                check_exact(body, field::MG_NAME + len)?;
                Op::MembershipGet {
                    group: get_name(body, field::MG_NAME, len)?,
                    offset: get_u32(body, field::MG_OFFSET),
                }
            }
            RequestKind::IterationInitialize => {
                check_len(body, field::IT_NAME)?;
                check_zero(body, field::IT_RESERVED)?;
                let len = get_name_len(body, field::IT_NAME_LEN)?;
                check_exact(body, field::IT_NAME + len)?;
                let scope = match get_u8(body, field::IT_TYPE) {
                    1 if len == 0 => IterScope::NameOnly,
                    2 => IterScope::OneGroup(get_name(body, field::IT_NAME, len)?),
                    3 if len == 0 => IterScope::All,
                    _ => return Err(MsgError::Malformed),
                };
                Op::IterationInitialize { scope }
            }
            RequestKind::IterationNext | RequestKind::IterationFinalize => {
                check_exact(body, field::WORD.end)?;
                let iter_id = get_u32(body, field::WORD);
                if kind == RequestKind::IterationNext {
                    Op::IterationNext { iter_id }
                } else {
                    Op::IterationFinalize { iter_id }
                }
            }
            RequestKind::LocalGet | RequestKind::FlowControlStateGet | RequestKind::Finalize => {
                check_exact(body, field::REQ_ID.end)?;
                match kind {
                    RequestKind::LocalGet => Op::LocalGet,
                    RequestKind::FlowControlStateGet => Op::FlowControlStateGet,
                    _ => Op::Finalize,
                }
            }
        };
        Ok(Request { req_id, op })
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::ipc::strategies::{group_name, guarantee, leak};

    proptest! {
        /// The head parser agrees with the whole-record parser on any bytes.
        #[test]
        fn piece_head_agrees_with_parse(
            more in any::<bool>(),
            flags in 0u16..4,
            body in vec(any::<u8>(), 0..64),
        ) {
            let kind = if more { RequestKind::McastMore } else { RequestKind::Mcast } as u16;
            let head_len = PieceHead::len_for(kind).unwrap();
            let whole = Request::parse(kind, flags, &body);
            if body.len() < head_len {
                prop_assert!(whole.is_err());
            } else {
                let head = PieceHead::parse(kind, flags, &body[..head_len], body.len() - head_len);
                match (whole, head) {
                    (Ok(Request { req_id, op: Op::Mcast { guarantee, reply, total_len, .. } }),
                     Ok(PieceHead::Mcast { req_id: r, guarantee: g, reply: y, total_len: t })) => {
                        prop_assert_eq!((req_id, guarantee, reply, total_len), (r, g, y, t));
                    }
                    (Ok(Request { req_id, op: Op::McastMore { .. } }), Ok(PieceHead::More { req_id: r })) => {
                        prop_assert_eq!(req_id, r);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
                }
            }
        }
    }

    fn name(s: &[u8]) -> GroupName {
        GroupName::new(s).unwrap()
    }

    fn emit(r: &Request<'_>) -> Vec<u8> {
        let mut buf = vec![0xEE; r.body_len()];
        assert_eq!(r.emit_body(&mut buf), Ok(buf.len()));
        buf
    }

    fn req(req_id: u32, op: Op<'static>) -> Request<'static> {
        Request { req_id, op }
    }

    /// Every request kind once, with its bytes (after the record header).
    fn fixtures() -> Vec<(u16, Vec<u8>, Request<'static>)> {
        let id = |n: u32| n.to_le_bytes().to_vec();
        let cat = |parts: &[&[u8]]| parts.concat();
        vec![
            (
                0,
                cat(&[&id(1), &[3, 0, 0, 0], b"cib"]),
                req(
                    1,
                    Op::Join {
                        group: name(b"cib"),
                    },
                ),
            ),
            (
                0,
                cat(&[&id(2), &[4, 0, 0, 0], b"cib\0"]),
                req(
                    2,
                    Op::Leave {
                        group: name(b"cib\0"),
                    },
                ),
            ),
            (
                FLAG_REPLY,
                cat(&[&id(3), &[3, 0, 0, 0], &[5, 0, 0, 0], &[0; 4], b"he"]),
                req(
                    3,
                    Op::Mcast {
                        guarantee: Guarantee::Safe,
                        reply: true,
                        total_len: 5,
                        piece: b"he",
                    },
                ),
            ),
            (
                0,
                cat(&[&id(3), &[0; 4], b"llo"]),
                req(3, Op::McastMore { piece: b"llo" }),
            ),
            (
                0,
                cat(&[&id(4), &[2, 0, 0, 0], &id(7), &id(9), &id(16), &id(1000)]),
                req(
                    4,
                    Op::McastZc {
                        guarantee: Guarantee::Agreed,
                        reply: false,
                        slot: SlotId::from_parts(7, 9),
                        offset: 16,
                        len: 1000,
                    },
                ),
            ),
            (
                0,
                cat(&[&id(5), &id(65536)]),
                req(5, Op::ZcAlloc { len: 65536 }),
            ),
            (
                0,
                cat(&[&id(6), &id(7), &id(10)]),
                req(
                    6,
                    Op::ZcFree {
                        slot: SlotId::from_parts(7, 10),
                    },
                ),
            ),
            (
                0,
                cat(&[&id(7), &id(128), &[1, 0, 0, 0], b"g"]),
                req(
                    7,
                    Op::MembershipGet {
                        group: name(b"g"),
                        offset: 128,
                    },
                ),
            ),
            (0, id(8), req(8, Op::LocalGet)),
            (
                0,
                cat(&[&id(9), &[2, 2, 0, 0], b"ab"]),
                req(
                    9,
                    Op::IterationInitialize {
                        scope: IterScope::OneGroup(name(b"ab")),
                    },
                ),
            ),
            (
                0,
                cat(&[&id(10), &[3, 0, 0, 0]]),
                req(
                    10,
                    Op::IterationInitialize {
                        scope: IterScope::All,
                    },
                ),
            ),
            (
                0,
                cat(&[&id(11), &[1, 0, 0, 0]]),
                req(
                    11,
                    Op::IterationInitialize {
                        scope: IterScope::NameOnly,
                    },
                ),
            ),
            (
                0,
                cat(&[&id(12), &id(4)]),
                req(12, Op::IterationNext { iter_id: 4 }),
            ),
            (
                0,
                cat(&[&id(13), &id(4)]),
                req(13, Op::IterationFinalize { iter_id: 4 }),
            ),
            (0, id(14), req(14, Op::FlowControlStateGet)),
            (0, id(0xFFFF_FFFF), req(0xFFFF_FFFF, Op::Finalize)),
            (
                0,
                cat(&[&id(15), &id(24)]),
                req(15, Op::Status { link_offset: 24 }),
            ),
        ]
    }

    #[test]
    fn every_kind_has_a_fixture() {
        for k in RequestKind::ALL {
            assert!(fixtures().iter().any(|(_, _, r)| r.op.kind() == k), "{k:?}");
            assert_eq!(RequestKind::from_u16(k as u16), Some(k));
        }
        assert_eq!(RequestKind::from_u16(0x0200), None);
        assert_eq!(RequestKind::from_u16(0x0210), None);
    }

    #[test]
    fn deconstruct_construct_round_trip() {
        for (flags, bytes, r) in fixtures() {
            let kind = r.kind();
            assert_eq!(Request::parse(kind, flags, &bytes), Ok(r.clone()), "{r:?}");
            assert_eq!((r.body_len(), r.flags()), (bytes.len(), flags));
            assert_eq!(emit(&r), bytes);
            let mut short = vec![0; bytes.len() - 1];
            assert_eq!(r.emit_body(&mut short), Err(MsgError::BufferTooSmall));
            // Every strict prefix is refused, but for a piece's tail.
            for n in 0..bytes.len() {
                let res = Request::parse(kind, flags, &bytes[..n]);
                match r.op {
                    Op::Mcast { .. } if n > field::PIECE => {
                        assert!(res.is_ok(), "a shorter first piece is still a piece")
                    }
                    Op::McastMore { .. } if n > field::MORE_PIECE => assert!(res.is_ok()),
                    _ => assert!(res.is_err(), "{r:?} prefix {n}"),
                }
            }
            // A stray byte more: refused, but for pieces.
            let mut long = bytes.clone();
            long.push(0);
            if !matches!(r.op, Op::Mcast { .. } | Op::McastMore { .. }) {
                assert!(Request::parse(kind, flags, &long).is_err(), "{r:?}");
            }
        }
    }

    #[test]
    fn refusals() {
        fn parse(k: RequestKind, f: u16, b: &[u8]) -> Result<Request<'_>, MsgError> {
            Request::parse(k as u16, f, b)
        }
        let fx = fixtures();
        let bytes = |i: usize| fx[i].1.clone();
        // Unknown kind, undefined flags.
        assert_eq!(
            Request::parse(0x0301, 0, &bytes(0)),
            Err(MsgError::UnknownKind(0x0301))
        );
        assert_eq!(
            parse(RequestKind::Join, FLAG_REPLY, &bytes(0)),
            Err(MsgError::BadFlags(1))
        );
        assert_eq!(
            parse(RequestKind::Mcast, 2, &bytes(2)),
            Err(MsgError::BadFlags(2))
        );
        // Reserved bytes.
        for (i, at) in [
            (0, 5),
            (0, 7),
            (2, 5),
            (2, 12),
            (2, 15),
            (3, 4),
            (4, 6),
            (7, 9),
            (9, 6),
        ] {
            let mut b = bytes(i);
            b[at] = 1;
            assert_eq!(
                parse(fx[i].2.op.kind(), fx[i].0, &b),
                Err(MsgError::Reserved),
                "{i} {at}"
            );
        }
        // Names.
        let mut b = bytes(0);
        b[4] = 129;
        assert_eq!(parse(RequestKind::Join, 0, &b), Err(MsgError::NameTooLong));
        b[4] = 4;
        assert_eq!(
            parse(RequestKind::Join, 0, &b),
            Err(MsgError::Truncated {
                needed: 12,
                got: 11
            })
        );
        b[4] = 2;
        assert_eq!(
            parse(RequestKind::Join, 0, &b),
            Err(MsgError::LengthMismatch)
        );
        // Guarantee, pieces.
        let mut b = bytes(2);
        b[4] = 4;
        assert_eq!(parse(RequestKind::Mcast, 0, &b), Err(MsgError::Malformed));
        let mut b = bytes(2);
        b[8] = 1; // total 1 < piece 2
        assert_eq!(parse(RequestKind::Mcast, 0, &b), Err(MsgError::Malformed));
        let b = bytes(2);
        assert_eq!(
            parse(RequestKind::Mcast, 0, &b[..16]),
            Err(MsgError::Malformed),
            "empty first piece of 5"
        );
        let mut b = bytes(2)[..16].to_vec();
        b[8] = 0;
        assert!(parse(RequestKind::Mcast, 0, &b).is_ok(), "an empty message");
        assert_eq!(
            parse(RequestKind::McastMore, 0, &bytes(3)[..8]),
            Err(MsgError::Malformed)
        );
        let mut b = bytes(4);
        b[4] = 9;
        assert_eq!(parse(RequestKind::McastZc, 0, &b), Err(MsgError::Malformed));
        // Iteration types and their group.
        for (t, named) in [(0u8, false), (4, false), (1, true), (3, true), (0, true)] {
            let mut b = if named { bytes(9) } else { bytes(10) };
            b[4] = t;
            assert_eq!(
                parse(RequestKind::IterationInitialize, 0, &b),
                Err(MsgError::Malformed),
                "{t} {named}"
            );
        }
        let mut b = bytes(9)[..8].to_vec();
        b[5] = 0;
        assert_eq!(
            parse(RequestKind::IterationInitialize, 0, &b),
            Ok(req(
                9,
                Op::IterationInitialize {
                    scope: IterScope::OneGroup(name(b""))
                }
            ))
        );
        // Emitting what parse refuses.
        let bad = req(
            1,
            Op::Mcast {
                guarantee: Guarantee::Agreed,
                reply: false,
                total_len: 1,
                piece: b"ab",
            },
        );
        assert_eq!(bad.emit_body(&mut [0; 64]), Err(MsgError::Malformed));
        let bad = req(1, Op::McastMore { piece: b"" });
        assert_eq!(bad.emit_body(&mut [0; 64]), Err(MsgError::Malformed));
    }

    #[test]
    fn mcast_headers_are_the_emitted_prefixes() {
        let piece = b"payload";
        let m = req(
            7,
            Op::Mcast {
                guarantee: Guarantee::Safe,
                reply: false,
                total_len: 100,
                piece,
            },
        );
        assert_eq!(
            &emit(&m)[..MCAST_HEADER_LEN],
            &mcast_header(7, Guarantee::Safe, 100)
        );
        let more = req(7, Op::McastMore { piece });
        assert_eq!(&emit(&more)[..MCAST_MORE_HEADER_LEN], &mcast_more_header(7));
    }

    #[test]
    fn piece_sizes() {
        assert_eq!(mcast_piece_max(16384), 16384 - 16);
        assert_eq!(mcast_more_piece_max(16384), 16384 - 8);
        assert_eq!(mcast_piece_max(3), 0);
        static PIECE: [u8; 100] = [0; 100];
        let r = req(
            1,
            Op::Mcast {
                guarantee: Guarantee::Agreed,
                reply: false,
                total_len: 1000,
                piece: &PIECE,
            },
        );
        assert_eq!(r.body_len(), MCAST_HEADER_LEN + 100);
    }

    pub(crate) fn request() -> impl Strategy<Value = Request<'static>> {
        let op = prop_oneof![
            group_name().prop_map(|group| Op::Join { group }),
            group_name().prop_map(|group| Op::Leave { group }),
            (
                guarantee(),
                any::<bool>(),
                vec(any::<u8>(), 0..300),
                0..10_000u32
            )
                .prop_map(|(guarantee, reply, piece, extra)| Op::Mcast {
                    guarantee,
                    reply,
                    total_len: piece.len() as u32 + if piece.is_empty() { 0 } else { extra },
                    piece: leak(piece),
                }),
            vec(any::<u8>(), 1..300).prop_map(|p| Op::McastMore { piece: leak(p) }),
            (
                guarantee(),
                any::<bool>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>()
            )
                .prop_map(|(guarantee, reply, i, g, offset, len)| Op::McastZc {
                    guarantee,
                    reply,
                    slot: SlotId::from_parts(i, g),
                    offset,
                    len,
                }),
            any::<u32>().prop_map(|len| Op::ZcAlloc { len }),
            (any::<u32>(), any::<u32>()).prop_map(|(i, g)| Op::ZcFree {
                slot: SlotId::from_parts(i, g)
            }),
            (group_name(), any::<u32>())
                .prop_map(|(group, offset)| Op::MembershipGet { group, offset }),
            Just(Op::LocalGet),
            prop_oneof![
                Just(IterScope::NameOnly),
                Just(IterScope::All),
                group_name().prop_map(IterScope::OneGroup)
            ]
            .prop_map(|scope| Op::IterationInitialize { scope }),
            any::<u32>().prop_map(|iter_id| Op::IterationNext { iter_id }),
            any::<u32>().prop_map(|iter_id| Op::IterationFinalize { iter_id }),
            any::<u32>().prop_map(|link_offset| Op::Status { link_offset }),
            Just(Op::FlowControlStateGet),
            Just(Op::Finalize),
        ];
        (any::<u32>(), op).prop_map(|(req_id, op)| Request { req_id, op })
    }

    proptest! {
        #[test]
        fn request_round_trip(r in request()) {
            let bytes = emit(&r);
            let back = Request::parse(r.kind(), r.flags(), &bytes);
            prop_assert_eq!(back, Ok(r));
        }

        #[test]
        fn any_bytes_never_panic(k in 0x0200u16..0x0210, flags in 0u16..3, body in vec(any::<u8>(), 0..200)) {
            if let Ok(r) = Request::parse(k, flags, &body) {
                // Canonical: emit gives back exactly the input.
                prop_assert_eq!(r.flags(), flags);
                prop_assert_eq!(emit(&r), body);
            }
        }

        #[test]
        fn small_names_never_panic(k in 0x0200u16..0x0210, id in any::<u32>(), bytes in vec(0u8..4, 0..24)) {
            let mut body = id.to_le_bytes().to_vec();
            body.extend_from_slice(&bytes);
            if let Ok(r) = Request::parse(k, 0, &body) {
                prop_assert_eq!(emit(&r), body);
            }
        }
    }
}

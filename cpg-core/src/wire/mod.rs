//! Every byte that crosses a host boundary: the frame header, the Totem
//! packets, the packing layer inside a multicast, and the CPG messages.
//!
//! All integers are little-endian. Parsing validates lengths, magic,
//! version, kind, cluster id, counts against lengths and field ranges, and
//! returns a typed [`WireError`]; it never panics on any input. Emitting
//! into a buffer of at least `buffer_len()` bytes cannot fail.
//!
//! Frame = [`FRAME_HEADER_LEN`]-byte header + body:
//!
//! ```text
//! header  0..2 magic 0xC9C7 | 2 version (1) | 3 kind | 4..8 cluster id
//!         8..12 sender node id | 12..16 body length | 16..24 authenticator (zero until auth lands)
//! TOKEN   ring id (rep u32, seq u64) | token_seq u32 | seq u32 | aru u32 | aru_addr u32
//!         fcc u32 | backlog u32 | retrans_flg u8 | rtr_count u8 | 2 reserved | rtr × (ring id, seq u32)
//! MCAST   ring id | seq u32 | guarantee u8 | encapsulated u8 | 2 reserved | payload
//! MERGE_DETECT, TOKEN_HOLD_CANCEL   ring id
//! JOIN    ring_seq u64 | flags u8 (bit 0 leave) | 1 reserved | proc_count u16 | fail_count u16
//!         2 reserved | proc ids u32 | fail ids u32
//! COMMIT  ring id | token_seq u32 | memb_index u16 | count u16 | addr u32 × count
//!         entry × count (old ring id, aru u32, high_delivered u32, received_flg u8, 3 reserved)
//! ```
//!
//! Inside a (non-encapsulated) MCAST payload, the packing layer
//! ([`pack`]): `fragmented u8 | continuation u8 | count u16 | count × u16
//! item lengths | items`. An encapsulated MCAST (recovery) carries a whole
//! old-ring MCAST frame as its payload. Each item is a piece of an
//! application-level message, a CPG message ([`cpg`]).
//!
//! # Fuzzing
//! With the private `_fuzzing` feature the authenticator check is bypassed
//! so fuzzers reach the body parsers.

pub mod commit;
pub mod cpg;
pub mod frame;
pub mod join;
pub mod mcast;
pub mod pack;
pub mod token;

pub use commit::{CommitEntry, CommitRepr};
pub use cpg::{CpgMsg, JoinListIter};
pub use frame::{emit_frame, parse_frame, Frame, FrameHeader, Kind, Packet};
pub use join::JoinRepr;
pub use mcast::McastRepr;
pub use pack::{PackHeader, Packed};
pub use token::{RtrEntry, TokenRepr};

use crate::limits::NODES_MAX;
use crate::types::NodeId;

/// Bytes of the frame header in front of every packet.
pub const FRAME_HEADER_LEN: usize = 24;
/// Frame magic (little-endian on the wire).
pub const MAGIC: u16 = 0xC9C7;
/// Wire version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of a ring id on the wire (rep u32 + seq u64).
pub const RING_ID_LEN: usize = 12;
/// Frame header + MCAST header: bytes in front of an MCAST payload.
pub const MCAST_HEADER_LEN: usize = FRAME_HEADER_LEN + 20;

/// A list of node ids with the ring's capacity.
pub type NodeList = heapless::Vec<NodeId, NODES_MAX>;

/// Why bytes were rejected. Copy, so drop counters can be indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the fixed part needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// A length field disagrees with the bytes present.
    LengthMismatch,
    /// Not our magic number.
    BadMagic,
    /// A wire version we do not speak.
    UnsupportedVersion(u8),
    /// An unknown packet or message kind.
    UnknownKind(u8),
    /// A frame of another cluster.
    ForeignCluster,
    /// The authenticator slot does not verify.
    BadAuth,
    /// A count above its limit (rtr list, node list, joinlist, items).
    TooManyEntries,
    /// A field with a value outside its range (flag byte, zero node id,
    /// reason, guarantee, index beyond count).
    Malformed,
    /// A group name longer than 128 bytes.
    NameTooLong,
    /// The output buffer is smaller than `buffer_len()`.
    BufferTooSmall,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated { needed, got } => write!(f, "truncated: need {needed} bytes, got {got}"),
            WireError::LengthMismatch => write!(f, "length field disagrees with the data"),
            WireError::BadMagic => write!(f, "bad magic"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            WireError::UnknownKind(k) => write!(f, "unknown kind {k}"),
            WireError::ForeignCluster => write!(f, "frame of another cluster"),
            WireError::BadAuth => write!(f, "authenticator does not verify"),
            WireError::TooManyEntries => write!(f, "too many entries"),
            WireError::Malformed => write!(f, "field out of range"),
            WireError::NameTooLong => write!(f, "group name longer than 128 bytes"),
            WireError::BufferTooSmall => write!(f, "output buffer too small"),
        }
    }
}

impl core::error::Error for WireError {}

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
//!         8..12 sender node id | 12..16 body length | 16..24 authenticator (control frames: `control_check`;
//!         MCAST: zero until frame authentication lands)
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
pub mod link;
pub mod mcast;
pub mod pack;
pub mod token;

pub use commit::{CommitEntry, CommitRepr};
pub use cpg::{CpgMsg, JoinListIter, McastRef};
pub use frame::{
    control_check, emit_frame, emit_mcast_head, frame_len, parse_frame, seal, Frame, FrameHeader,
    Kind, Packet,
};
pub use join::JoinRepr;
pub use link::{is_link_frame, LinkKind, LinkRepr, LINK_FRAME_LEN, LINK_MAGIC};
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
pub const VERSION: u8 = 2;
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
            WireError::Truncated { needed, got } => {
                write!(f, "truncated: need {needed} bytes, got {got}")
            }
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

static_assertions::const_assert_eq!(FRAME_HEADER_LEN, 24);
static_assertions::const_assert_eq!(MCAST_HEADER_LEN, 44);
static_assertions::const_assert_eq!(RING_ID_LEN, 12);

/// Byte ranges of fields (smoltcp style): each packet module declares its
/// own `field` module of these.
mod field {
    /// A fixed range of bytes.
    pub(super) type Field = core::ops::Range<usize>;
    /// Everything from an offset on.
    pub(super) type Rest = core::ops::RangeFrom<usize>;
}

use field::Field;

// Panic-free little-endian accessors. Callers check lengths before reading
// or writing, so a field out of range is a bug of this module: it trips a
// debug assertion (which fuzzers and tests run with) and otherwise reads as
// zero / writes nothing. Nothing here can panic on input.

/// The `N` bytes of `f`.
fn get_bytes<const N: usize>(data: &[u8], f: Field) -> [u8; N] {
    let mut out = [0; N];
    match data.get(f) {
        Some(s) if s.len() == N => out.copy_from_slice(s),
        _ => debug_assert!(false, "wire field out of range"),
    }
    out
}

fn get_u8(data: &[u8], at: usize) -> u8 {
    let b = data.get(at).copied();
    debug_assert!(b.is_some(), "wire field out of range");
    b.unwrap_or(0)
}

fn get_u16(data: &[u8], f: Field) -> u16 {
    u16::from_le_bytes(get_bytes(data, f))
}

fn get_u32(data: &[u8], f: Field) -> u32 {
    u32::from_le_bytes(get_bytes(data, f))
}

fn get_u64(data: &[u8], f: Field) -> u64 {
    u64::from_le_bytes(get_bytes(data, f))
}

fn put_bytes(buf: &mut [u8], f: Field, src: &[u8]) {
    match buf.get_mut(f) {
        Some(d) if d.len() == src.len() => d.copy_from_slice(src),
        _ => debug_assert!(false, "wire field out of range"),
    }
}

fn put_u8(buf: &mut [u8], at: usize, v: u8) {
    match buf.get_mut(at) {
        Some(d) => *d = v,
        None => debug_assert!(false, "wire field out of range"),
    }
}

fn put_u16(buf: &mut [u8], f: Field, v: u16) {
    put_bytes(buf, f, &v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], f: Field, v: u32) {
    put_bytes(buf, f, &v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], f: Field, v: u64) {
    put_bytes(buf, f, &v.to_le_bytes());
}

/// Zero the reserved bytes of `f`.
fn put_zero(buf: &mut [u8], f: Field) {
    match buf.get_mut(f) {
        Some(d) => d.fill(0),
        None => debug_assert!(false, "wire field out of range"),
    }
}

/// Sub-fields of a ring id at `f` (12 bytes): rep u32, then seq u64.
fn ring_id_fields(f: &Field) -> (Field, Field) {
    let mid = f.start.saturating_add(4);
    (f.start..mid, mid..f.end)
}

/// A ring id as it is, rep 0 included (old ring ids in commit entries).
fn get_ring_id_raw(data: &[u8], f: Field) -> crate::types::RingId {
    let (rep, seq) = ring_id_fields(&f);
    crate::types::RingId {
        rep: get_u32(data, rep),
        seq: get_u64(data, seq),
    }
}

/// A ring id; rep 0 is [`WireError::Malformed`].
fn get_ring_id(data: &[u8], f: Field) -> Result<crate::types::RingId, WireError> {
    let r = get_ring_id_raw(data, f);
    if r.rep == 0 {
        return Err(WireError::Malformed);
    }
    Ok(r)
}

fn put_ring_id(buf: &mut [u8], f: Field, r: crate::types::RingId) {
    let (rep, seq) = ring_id_fields(&f);
    put_u32(buf, rep, r.rep);
    put_u64(buf, seq, r.seq);
}

/// A node id; 0 is [`WireError::Malformed`].
fn get_node_id(data: &[u8], f: Field) -> Result<NodeId, WireError> {
    match get_u32(data, f) {
        0 => Err(WireError::Malformed),
        n => Ok(n),
    }
}

/// A flag byte: 0 or 1, anything else is [`WireError::Malformed`].
fn get_flag(data: &[u8], at: usize) -> Result<bool, WireError> {
    match get_u8(data, at) {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Malformed),
    }
}

/// [`WireError::Truncated`] unless `data` holds at least `needed` bytes.
fn check_len(data: &[u8], needed: usize) -> Result<(), WireError> {
    if data.len() < needed {
        return Err(WireError::Truncated {
            needed,
            got: data.len(),
        });
    }
    Ok(())
}

/// `buf[..len]`, or [`WireError::BufferTooSmall`].
fn out_buf(buf: &mut [u8], len: usize) -> Result<&mut [u8], WireError> {
    buf.get_mut(..len).ok_or(WireError::BufferTooSmall)
}

/// Proptest strategies shared by the wire tests.
#[cfg(test)]
mod strategies {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::types::{GroupName, Guarantee, RingId};

    prop_compose! {
        pub(super) fn ring_id()(rep in 1..=u32::MAX, seq in any::<u64>()) -> RingId {
            RingId { rep, seq }
        }
    }

    prop_compose! {
        /// Any ring id, rep 0 included.
        pub(super) fn ring_id_raw()(rep in any::<u32>(), seq in any::<u64>()) -> RingId {
            RingId { rep, seq }
        }
    }

    pub(super) fn node_id() -> impl Strategy<Value = NodeId> {
        1..=u32::MAX
    }

    pub(super) fn node_list(max: usize) -> impl Strategy<Value = NodeList> {
        vec(node_id(), 0..=max).prop_map(|v| v.into_iter().collect())
    }

    pub(super) fn guarantee() -> impl Strategy<Value = Guarantee> {
        (0u8..=3).prop_map(|g| Guarantee::from_u8(g).unwrap())
    }

    pub(super) fn group_name() -> impl Strategy<Value = GroupName> {
        vec(any::<u8>(), 0..=crate::limits::GROUP_NAME_MAX)
            .prop_map(|v| GroupName::new(&v).unwrap())
    }

    /// Bytes that live for the rest of the test run (borrowed payloads).
    pub(super) fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    prop_compose! {
        fn rtr_entry()(ring_id in ring_id(), seq in any::<u32>()) -> RtrEntry {
            RtrEntry { ring_id, seq }
        }
    }

    prop_compose! {
        pub(super) fn token()(
            ring_id in ring_id(),
            token_seq in any::<u32>(),
            seq in any::<u32>(),
            aru in any::<u32>(),
            aru_addr in any::<u32>(),
            fcc in any::<u32>(),
            backlog in any::<u32>(),
            retrans_flg in any::<bool>(),
            target in any::<u32>(),
            rtr in vec(rtr_entry(), 0..=crate::limits::RTR_MAX),
        ) -> TokenRepr {
            TokenRepr { ring_id, token_seq, seq, aru, aru_addr, fcc, backlog, retrans_flg, target, rtr: rtr.into_iter().collect() }
        }
    }

    prop_compose! {
        pub(super) fn mcast()(
            ring_id in ring_id(),
            seq in any::<u32>(),
            guarantee in guarantee(),
            encapsulated in any::<bool>(),
            payload in vec(any::<u8>(), 1..200),
        ) -> McastRepr<'static> {
            McastRepr { ring_id, seq, guarantee, encapsulated, payload: leak(payload) }
        }
    }

    prop_compose! {
        pub(super) fn join()(
            ring_seq in any::<u64>(),
            leave in any::<bool>(),
            proc_list in node_list(crate::limits::NODES_MAX),
            fail_list in node_list(crate::limits::NODES_MAX),
        ) -> JoinRepr {
            JoinRepr { ring_seq, leave, proc_list, fail_list }
        }
    }

    prop_compose! {
        fn commit_entry()(
            old_ring_id in ring_id_raw(),
            aru in any::<u32>(),
            high_delivered in any::<u32>(),
            received_flg in any::<bool>(),
        ) -> CommitEntry {
            CommitEntry { old_ring_id, aru, high_delivered, received_flg }
        }
    }

    pub(super) fn commit() -> impl Strategy<Value = CommitRepr> {
        (1..=crate::limits::NODES_MAX).prop_flat_map(|n| {
            (
                ring_id(),
                any::<u32>(),
                0..=n as u16,
                vec(node_id(), n),
                vec(commit_entry(), n),
            )
                .prop_map(|(ring_id, token_seq, memb_index, addr, entries)| {
                    CommitRepr {
                        ring_id,
                        token_seq,
                        memb_index,
                        addr: addr.into_iter().collect(),
                        entries: entries.into_iter().collect(),
                    }
                })
        })
    }

    pub(super) fn packet() -> impl Strategy<Value = Packet<'static>> {
        prop_oneof![
            token().prop_map(Packet::Token),
            mcast().prop_map(Packet::Mcast),
            ring_id().prop_map(Packet::MergeDetect),
            join().prop_map(Packet::Join),
            commit().prop_map(Packet::Commit),
            ring_id().prop_map(Packet::TokenHoldCancel),
        ]
    }

    /// A whole frame of `packet`.
    pub(super) fn frame_bytes(sender: NodeId, cluster_id: u32, packet: &Packet<'_>) -> Vec<u8> {
        let mut buf = vec![0xAA; frame_len(packet)];
        assert_eq!(
            emit_frame(sender, cluster_id, packet, &mut buf),
            Ok(buf.len())
        );
        buf
    }

    /// Rewrite the body length field of a frame to match its bytes.
    pub(super) fn fix_body_len(frame: &mut [u8]) {
        let body = (frame.len() - FRAME_HEADER_LEN) as u32;
        frame[12..16].copy_from_slice(&body.to_le_bytes());
    }

    /// Parse a frame of cluster 0x01020304 and re-emit it: must be `data`.
    pub(super) fn check_fixture(data: &[u8], sender: NodeId, packet: &Packet<'_>) {
        let frame = parse_frame(data, 0x0102_0304).unwrap();
        assert_eq!(frame.header.sender, sender);
        assert_eq!(frame.header.kind, packet.kind());
        assert_eq!(&frame.packet, packet);
        assert_eq!(frame_len(packet), data.len());
        assert_eq!(frame_bytes(sender, 0x0102_0304, packet), data);
        // Every strict prefix is rejected, and a stray byte too.
        for n in 0..data.len() {
            assert!(parse_frame(&data[..n], 0x0102_0304).is_err(), "prefix {n}");
        }
        if !matches!(packet, Packet::Mcast(_)) {
            let mut long = data.to_vec();
            long.push(0);
            fix_body_len(&mut long);
            assert_eq!(
                parse_frame(&long, 0x0102_0304).err(),
                Some(WireError::LengthMismatch)
            );
        }
    }
}

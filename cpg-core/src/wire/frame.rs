//! The frame header and dispatch to the packet body parsers.

use super::*;
use crate::hash::{fnv1a64_update, FNV1A64_OFFSET};
use crate::types::RingId;

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const MAGIC: Field = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const KIND: usize = 3;
    pub(super) const CLUSTER_ID: Field = 4..8;
    pub(super) const SENDER: Field = 8..12;
    pub(super) const BODY_LEN: Field = 12..16;
    pub(super) const AUTH: Field = 16..24;
    pub(super) const BODY: Rest = 24..;
}

static_assertions::const_assert_eq!(field::BODY.start, FRAME_HEADER_LEN);

/// Packet kind (byte 3 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Ordering token.
    Token = 0,
    /// Multicast data.
    Mcast = 1,
    /// Merge detection from an idle ring's rep.
    MergeDetect = 2,
    /// Membership JOIN (or LEAVE).
    Join = 3,
    /// Commit token.
    Commit = 4,
    /// Token hold cancel.
    TokenHoldCancel = 5,
}

impl Kind {
    /// Decode the kind byte.
    pub const fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Token,
            1 => Kind::Mcast,
            2 => Kind::MergeDetect,
            3 => Kind::Join,
            4 => Kind::Commit,
            5 => Kind::TokenHoldCancel,
            _ => return None,
        })
    }
}

/// The meaningful header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Packet kind.
    pub kind: Kind,
    /// Node that created the frame (the originator for MCAST).
    pub sender: NodeId,
}

/// A parsed packet body.
// The commit token is large by design (64 members, no heap); packets are
// parsed and handled in place, not queued.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Ordering token.
    Token(TokenRepr),
    /// Multicast data (borrows its payload).
    Mcast(McastRepr<'a>),
    /// Merge detect: the sender's ring.
    MergeDetect(RingId),
    /// JOIN or LEAVE.
    Join(JoinRepr),
    /// Commit token.
    Commit(CommitRepr),
    /// Token hold cancel for a ring.
    TokenHoldCancel(RingId),
}

/// A parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Header.
    pub header: FrameHeader,
    /// Body.
    pub packet: Packet<'a>,
}

impl<'a> Packet<'a> {
    /// The kind byte this packet is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Packet::Token(_) => Kind::Token,
            Packet::Mcast(_) => Kind::Mcast,
            Packet::MergeDetect(_) => Kind::MergeDetect,
            Packet::Join(_) => Kind::Join,
            Packet::Commit(_) => Kind::Commit,
            Packet::TokenHoldCancel(_) => Kind::TokenHoldCancel,
        }
    }

    /// Parse a body of `kind` (without the frame header). Truncation is
    /// reported relative to the body.
    ///
    /// # Errors
    /// Any [`WireError`]; never panics.
    pub fn parse(kind: Kind, body: &'a [u8]) -> Result<Packet<'a>, WireError> {
        Ok(match kind {
            Kind::Token => Packet::Token(TokenRepr::parse(body)?),
            Kind::Mcast => Packet::Mcast(McastRepr::parse(body)?),
            Kind::MergeDetect => Packet::MergeDetect(parse_ring_id_body(body)?),
            Kind::Join => Packet::Join(JoinRepr::parse(body)?),
            Kind::Commit => Packet::Commit(CommitRepr::parse(body)?),
            Kind::TokenHoldCancel => Packet::TokenHoldCancel(parse_ring_id_body(body)?),
        })
    }

    /// Bytes of the body (without the frame header).
    pub fn buffer_len(&self) -> usize {
        match self {
            Packet::Token(t) => t.buffer_len(),
            Packet::Mcast(m) => m.buffer_len(),
            Packet::MergeDetect(_) | Packet::TokenHoldCancel(_) => RING_ID_LEN,
            Packet::Join(j) => j.buffer_len(),
            Packet::Commit(c) => c.buffer_len(),
        }
    }

    /// Emit the body (without the frame header) into `buf`, returning its length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`]; [`WireError::Malformed`] for a commit
    /// token whose `addr` and `entries` differ in length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        match self {
            Packet::Token(t) => t.emit(buf),
            Packet::Mcast(m) => m.emit(buf),
            Packet::MergeDetect(r) | Packet::TokenHoldCancel(r) => {
                let out = out_buf(buf, RING_ID_LEN)?;
                put_ring_id(out, 0..RING_ID_LEN, *r);
                Ok(RING_ID_LEN)
            }
            Packet::Join(j) => j.emit(buf),
            Packet::Commit(c) => c.emit(buf),
        }
    }
}

/// MERGE_DETECT and TOKEN_HOLD_CANCEL: exactly one ring id.
fn parse_ring_id_body(body: &[u8]) -> Result<RingId, WireError> {
    check_len(body, RING_ID_LEN)?;
    if body.len() != RING_ID_LEN {
        return Err(WireError::LengthMismatch);
    }
    get_ring_id(body, 0..RING_ID_LEN)
}

/// The integrity check a control frame (every kind but MCAST) carries in
/// its authenticator slot: FNV-1a 64 over the frame with the slot zeroed.
///
/// Control frames steer the protocol (a commit token's entries decide the
/// transitional configuration; a token's seq and aru decide what is
/// ordered and freed), and a corruption the UDP checksum misses must not be
/// believed (issue 8): no plausibility check can tell a changed old-ring id
/// in a commit entry. They are small, so the check costs little. MCAST
/// frames carry zero until frame authentication covers every frame.
pub fn control_check(frame: &[u8]) -> [u8; 8] {
    let head = frame.get(..field::AUTH.start).unwrap_or(frame);
    let body = frame.get(field::BODY).unwrap_or(&[]);
    let h = fnv1a64_update(FNV1A64_OFFSET, head);
    let h = fnv1a64_update(h, &[0u8; 8]);
    fnv1a64_update(h, body).to_le_bytes()
}

/// Write the integrity check of a control frame into its authenticator
/// slot (see [`control_check`]); an MCAST frame, or bytes too short to be
/// a frame, are left alone. [`emit_frame`] seals what it emits; this is
/// for tools that build or edit frames (the simulator's tamper rules).
pub fn seal(frame: &mut [u8]) {
    let is_control = frame
        .get(field::KIND)
        .is_some_and(|&k| k != Kind::Mcast as u8);
    if is_control && frame.len() >= FRAME_HEADER_LEN {
        let check = control_check(frame);
        frame[field::AUTH].copy_from_slice(&check);
    }
}

/// Parse and validate a whole frame of `cluster_id`.
///
/// Checks, in order: length of the header, magic, version, kind, cluster
/// id, sender (non-zero), body length, body, authenticator (zero on an
/// MCAST, [`control_check`] on the others). Truncation inside the body is
/// reported relative to the whole frame.
///
/// # Errors
/// Any [`WireError`]; never panics.
///
/// # Fuzzing
/// With the private `_fuzzing` feature the authenticator is not checked.
pub fn parse_frame(data: &[u8], cluster_id: u32) -> Result<Frame<'_>, WireError> {
    check_len(data, FRAME_HEADER_LEN)?;
    if get_u16(data, field::MAGIC) != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = get_u8(data, field::VERSION);
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let kind_byte = get_u8(data, field::KIND);
    let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
    if get_u32(data, field::CLUSTER_ID) != cluster_id {
        return Err(WireError::ForeignCluster);
    }
    let sender = get_node_id(data, field::SENDER)?;
    let body = data.get(field::BODY).unwrap_or(&[]);
    if usize::try_from(get_u32(data, field::BODY_LEN)).ok() != Some(body.len()) {
        return Err(WireError::LengthMismatch);
    }
    let packet = Packet::parse(kind, body).map_err(|e| match e {
        WireError::Truncated { needed, got } => WireError::Truncated {
            needed: needed.saturating_add(FRAME_HEADER_LEN),
            got: got.saturating_add(FRAME_HEADER_LEN),
        },
        e => e,
    })?;
    #[cfg(not(feature = "_fuzzing"))]
    {
        let auth: [u8; 8] = get_bytes(data, field::AUTH);
        let expect = if kind == Kind::Mcast {
            [0; 8]
        } else {
            control_check(data)
        };
        if auth != expect {
            return Err(WireError::BadAuth);
        }
    }
    Ok(Frame {
        header: FrameHeader { kind, sender },
        packet,
    })
}

/// Emit a whole frame into `buf`, returning its length.
///
/// # Errors
/// [`WireError::BufferTooSmall`] if `buf` is shorter than the frame;
/// [`WireError::Malformed`] for a commit token whose `addr` and `entries`
/// differ in length, or a body over 4 GiB.
pub fn emit_frame(
    sender: NodeId,
    cluster_id: u32,
    packet: &Packet<'_>,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    if let Packet::Commit(c) = packet {
        c.check_emit()?;
    }
    let body_len = packet.buffer_len();
    let body_len32 = u32::try_from(body_len).map_err(|_| WireError::Malformed)?;
    let len = frame_len(packet);
    let out = out_buf(buf, len)?;
    put_u16(out, field::MAGIC, MAGIC);
    put_u8(out, field::VERSION, VERSION);
    put_u8(out, field::KIND, packet.kind() as u8);
    put_u32(out, field::CLUSTER_ID, cluster_id);
    put_u32(out, field::SENDER, sender);
    put_u32(out, field::BODY_LEN, body_len32);
    put_zero(out, field::AUTH);
    let body = out.get_mut(field::BODY).ok_or(WireError::BufferTooSmall)?;
    packet.emit(body)?;
    seal(out);
    Ok(len)
}

/// Emit only the frame header and the MCAST header ([`MCAST_HEADER_LEN`]
/// bytes) of a multicast whose payload of `payload_len` bytes is written,
/// or already lies, right after them: the zero-copy send path writes this
/// into the headroom in front of the application's bytes. `repr.payload`
/// is ignored.
///
/// # Errors
/// [`WireError::BufferTooSmall`] below [`MCAST_HEADER_LEN`] bytes,
/// [`WireError::Malformed`] for a payload over 4 GiB.
pub fn emit_mcast_head(
    sender: NodeId,
    cluster_id: u32,
    repr: &McastRepr<'_>,
    payload_len: usize,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let head = McastRepr {
        payload: &[],
        ..repr.clone()
    };
    let out = buf
        .get_mut(..MCAST_HEADER_LEN)
        .ok_or(WireError::BufferTooSmall)?;
    emit_frame(sender, cluster_id, &Packet::Mcast(head), out)?;
    let body_len = u32::try_from(payload_len.saturating_add(MCAST_HEADER_LEN - FRAME_HEADER_LEN))
        .map_err(|_| WireError::Malformed)?;
    put_u32(out, field::BODY_LEN, body_len);
    Ok(MCAST_HEADER_LEN)
}

/// Bytes `emit_frame` writes for `packet`.
pub fn frame_len(packet: &Packet<'_>) -> usize {
    FRAME_HEADER_LEN.saturating_add(packet.buffer_len())
}

/// The largest control frame a ring of `nodes` nodes can emit: a token
/// with a full retransmit list, a JOIN listing every node as both seen and
/// failed, or a commit token with an entry per node. Multicast frames are
/// cut to the frame budget; these cannot be, so the budget must hold them.
pub const fn largest_control_frame(nodes: usize) -> usize {
    use crate::limits::RTR_MAX;
    let token = super::token::TOKEN_FIXED_LEN + RTR_MAX * super::token::RTR_ENTRY_LEN;
    let join = super::join::JOIN_FIXED_LEN + 2 * nodes * 4;
    let commit = super::commit::COMMIT_FIXED_LEN + nodes * (4 + super::commit::COMMIT_ENTRY_LEN);
    let max = if token > join { token } else { join };
    FRAME_HEADER_LEN + if max > commit { max } else { commit }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::*;

    const CLUSTER: u32 = 0x0102_0304;

    #[test]
    fn largest_control_frame_is_the_largest_emitted() {
        use crate::limits::{NODES_MAX, RTR_MAX};
        use crate::wire::{CommitEntry, CommitRepr, JoinRepr, RtrEntry, TokenRepr};
        for n in [1usize, 2, 5, 17, NODES_MAX] {
            let ids: crate::wire::NodeList = (1..=n as u32).collect();
            let mut commit = CommitRepr {
                addr: ids.clone(),
                ..CommitRepr::default()
            };
            commit.entries = (0..n).map(|_| CommitEntry::default()).collect();
            let join = JoinRepr {
                proc_list: ids.clone(),
                fail_list: ids,
                ..JoinRepr::default()
            };
            let token = TokenRepr {
                rtr: (0..RTR_MAX)
                    .map(|_| RtrEntry {
                        ring_id: crate::types::RingId::default(),
                        seq: 0,
                    })
                    .collect(),
                ..TokenRepr::default()
            };
            let sizes = [
                frame_len(&Packet::Commit(commit)),
                frame_len(&Packet::Join(join)),
                frame_len(&Packet::Token(token)),
            ];
            assert_eq!(
                largest_control_frame(n),
                sizes.into_iter().max().unwrap(),
                "{n} nodes"
            );
        }
        // Corosync's defaults hold 64 nodes' tokens and joins at netmtu 1500,
        // the commit token of 51.
        assert!(largest_control_frame(51) <= 1500 - 28);
        assert!(largest_control_frame(52) > 1500 - 28);
        assert_eq!(largest_control_frame(1), 548);
    }

    /// MERGE_DETECT from node 2 of cluster 0x01020304, ring 1.0x0102030405060708.
    static MERGE_DETECT_BYTES: [u8; 36] = [
        0xC7, 0xC9, 0x02, 0x02, 0x04, 0x03, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00,
        0x00, //
        0x32, 0x7C, 0x0C, 0x4D, 0x29, 0x35, 0x2B, 0xA6, //
        0x01, 0x00, 0x00, 0x00, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    ];

    /// TOKEN_HOLD_CANCEL from node 7 of cluster 0x01020304, ring 3.8.
    static THC_BYTES: [u8; 36] = [
        0xC7, 0xC9, 0x02, 0x05, 0x04, 0x03, 0x02, 0x01, 0x07, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00,
        0x00, //
        0x3C, 0x62, 0x6A, 0x6E, 0x43, 0x1A, 0x52, 0xAE, //
        0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    const RING: RingId = RingId {
        rep: 1,
        seq: 0x0102_0304_0506_0708,
    };

    fn md() -> Vec<u8> {
        MERGE_DETECT_BYTES.to_vec()
    }

    #[test]
    fn merge_detect_deconstruct() {
        let f = parse_frame(&MERGE_DETECT_BYTES, CLUSTER).unwrap();
        assert_eq!(
            f.header,
            FrameHeader {
                kind: Kind::MergeDetect,
                sender: 2
            }
        );
        assert_eq!(f.packet, Packet::MergeDetect(RING));
    }

    #[test]
    fn merge_detect_construct() {
        let mut buf = [0xFF; 64];
        let n = emit_frame(2, CLUSTER, &Packet::MergeDetect(RING), &mut buf).unwrap();
        assert_eq!(&buf[..n], &MERGE_DETECT_BYTES[..]);
    }

    #[test]
    fn ring_id_bodies_round_trip() {
        check_fixture(&MERGE_DETECT_BYTES, 2, &Packet::MergeDetect(RING));
        check_fixture(
            &THC_BYTES,
            7,
            &Packet::TokenHoldCancel(RingId { rep: 3, seq: 8 }),
        );
    }

    #[test]
    fn kind_bytes() {
        for k in 0..=255u8 {
            match Kind::from_u8(k) {
                Some(kind) => assert_eq!(kind as u8, k),
                None => assert!(k > 5),
            }
        }
    }

    #[test]
    fn truncated_header() {
        assert_eq!(
            parse_frame(&MERGE_DETECT_BYTES[..5], CLUSTER),
            Err(WireError::Truncated { needed: 24, got: 5 })
        );
        assert_eq!(
            parse_frame(&[], CLUSTER),
            Err(WireError::Truncated { needed: 24, got: 0 })
        );
        assert_eq!(
            parse_frame(&MERGE_DETECT_BYTES[..23], CLUSTER),
            Err(WireError::Truncated {
                needed: 24,
                got: 23
            })
        );
    }

    #[test]
    fn truncated_body_counts_the_whole_frame() {
        let mut f = md();
        f.pop();
        fix_body_len(&mut f);
        assert_eq!(
            parse_frame(&f, CLUSTER),
            Err(WireError::Truncated {
                needed: 36,
                got: 35
            })
        );
    }

    #[test]
    fn bad_magic() {
        let mut f = md();
        f[0] = 0xC9;
        f[1] = 0xC7; // big-endian magic
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::BadMagic));
    }

    #[test]
    fn wrong_version() {
        let mut f = md();
        f[2] = VERSION + 1;
        assert_eq!(
            parse_frame(&f, CLUSTER),
            Err(WireError::UnsupportedVersion(VERSION + 1))
        );
        f[2] = 0;
        assert_eq!(
            parse_frame(&f, CLUSTER),
            Err(WireError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn unknown_kind() {
        let mut f = md();
        f[3] = 6;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::UnknownKind(6)));
        f[3] = 0xFF;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::UnknownKind(0xFF)));
    }

    #[test]
    fn foreign_cluster() {
        assert_eq!(
            parse_frame(&MERGE_DETECT_BYTES, CLUSTER + 1),
            Err(WireError::ForeignCluster)
        );
        assert_eq!(
            parse_frame(&MERGE_DETECT_BYTES, 0),
            Err(WireError::ForeignCluster)
        );
    }

    #[test]
    fn zero_sender() {
        let mut f = md();
        f[8] = 0;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
    }

    #[cfg(not(feature = "_fuzzing"))]
    #[test]
    fn bad_auth() {
        for i in 16..24 {
            let mut f = md();
            f[i] = 1;
            assert_eq!(
                parse_frame(&f, CLUSTER),
                Err(WireError::BadAuth),
                "byte {i}"
            );
        }
    }

    #[test]
    fn body_length_mismatch() {
        let mut f = md();
        f[12] = 0x0B;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
        f[12] = 0x0C;
        f[15] = 0x01; // 2^24 + 12
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
        let mut f = md();
        f.push(0); // a stray byte the length field does not count
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
        fix_body_len(&mut f); // counted, but the ring id body is exactly 12
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
    }

    #[test]
    fn zero_rep_is_malformed() {
        let mut f = md();
        f[24] = 0;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        f[3] = Kind::TokenHoldCancel as u8;
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
    }

    #[cfg(not(feature = "_fuzzing"))]
    #[test]
    fn control_frames_carry_an_integrity_check() {
        use crate::wire::strategies::*;
        let _ = ring_id();
        for (name, fixture) in [
            ("merge detect", &MERGE_DETECT_BYTES[..]),
            ("hold cancel", &THC_BYTES[..]),
        ] {
            assert!(parse_frame(fixture, CLUSTER).is_ok(), "{name}");
            for i in (0..fixture.len()).filter(|i| !(12..16).contains(i)) {
                for bit in [0x01u8, 0x80] {
                    let mut f = fixture.to_vec();
                    f[i] ^= bit;
                    assert!(
                        parse_frame(&f, CLUSTER).is_err(),
                        "{name}: byte {i} bit {bit:#x} changed, still parsed"
                    );
                }
            }
            let mut f = fixture.to_vec();
            f[16..24].fill(0);
            assert_eq!(
                parse_frame(&f, CLUSTER),
                Err(WireError::BadAuth),
                "{name}: an unsealed control frame"
            );
        }
    }

    #[test]
    fn checks_run_in_order() {
        // Every header field wrong: the first check in order reports.
        let mut f = md();
        #[cfg(not(feature = "_fuzzing"))]
        {
            f[16] ^= 1; // the integrity check comes last
            assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::BadAuth));
        }
        f[12] = 0; // body length
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
        f[8] = 0; // sender
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        f[4] = 9; // cluster
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::ForeignCluster));
        f[3] = 9; // kind
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::UnknownKind(9)));
        f[2] = 9; // version
        assert_eq!(
            parse_frame(&f, CLUSTER),
            Err(WireError::UnsupportedVersion(9))
        );
        f[0] = 0; // magic
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::BadMagic));
        assert_eq!(
            parse_frame(&f[..3], CLUSTER),
            Err(WireError::Truncated { needed: 24, got: 3 })
        );
    }

    #[test]
    fn emit_needs_room() {
        let p = Packet::MergeDetect(RING);
        assert_eq!(frame_len(&p), 36);
        let mut buf = [0; 35];
        assert_eq!(
            emit_frame(2, CLUSTER, &p, &mut buf),
            Err(WireError::BufferTooSmall)
        );
        let mut buf = [0; 36];
        assert_eq!(emit_frame(2, CLUSTER, &p, &mut buf), Ok(36));
    }

    #[test]
    fn emit_clears_a_reused_buffer() {
        let mut buf = [0xFF; 36];
        emit_frame(2, CLUSTER, &Packet::MergeDetect(RING), &mut buf).unwrap();
        assert_eq!(buf, MERGE_DETECT_BYTES);
    }

    #[test]
    fn commit_with_unequal_lists_is_not_emitted() {
        let mut c = CommitRepr {
            ring_id: RING,
            memb_index: 0,
            ..Default::default()
        };
        c.addr.push(1).unwrap();
        let mut buf = [0; 256];
        assert_eq!(
            emit_frame(1, CLUSTER, &Packet::Commit(c), &mut buf),
            Err(WireError::Malformed)
        );
    }

    /// A valid header of `kind` from node 1 of cluster 0 in front of `body`.
    fn with_header(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![0xC7, 0xC9, VERSION, kind, 0, 0, 0, 0, 1, 0, 0, 0];
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(body);
        f
    }

    proptest! {
        #[test]
        fn frame_round_trip(sender in node_id(), cluster in any::<u32>(), p in packet()) {
            let bytes = frame_bytes(sender, cluster, &p);
            prop_assert_eq!(bytes.len(), frame_len(&p));
            let f = parse_frame(&bytes, cluster).unwrap();
            prop_assert_eq!(f.header, FrameHeader { kind: p.kind(), sender });
            prop_assert_eq!(f.packet, p);
        }

        #[test]
        fn any_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
            let _ = parse_frame(&data, 0);
        }

        #[test]
        fn any_body_never_panics(kind in 0u8..=6, body in vec(any::<u8>(), 0..600)) {
            let f = with_header(kind, &body);
            if let Ok(frame) = parse_frame(&f, 0) {
                // Reserved bytes are ignored, so compare after a second pass.
                let again = frame_bytes(1, 0, &frame.packet);
                prop_assert_eq!(again.len(), f.len());
                prop_assert_eq!(parse_frame(&again, 0).unwrap(), frame);
            }
        }

        #[test]
        fn mutated_frames_never_panic(
            p in packet(),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut f = frame_bytes(1, 0, &p);
            for (at, v) in flips {
                let i = at.index(f.len());
                f[i] = v;
            }
            if let Ok(frame) = parse_frame(&f, 0) {
                // Whatever parses re-emits to the same length.
                prop_assert_eq!(frame_len(&frame.packet), f.len());
            }
        }
    }
}

#[cfg(test)]
mod zc_head_tests {
    use super::*;
    use crate::types::Guarantee;
    use crate::wire::pack::{emit_packed, emit_single_item_head, PackHeader};

    /// Headers written in front of a payload give the same bytes as a frame
    /// emitted whole.
    #[test]
    fn mcast_head_then_payload_equals_whole_frame() {
        let item = [9u8; 300];
        let ph = PackHeader {
            fragmented: 3,
            continuation: 2,
        };
        let mut packed = alloc::vec![0u8; 306];
        emit_packed(ph, &[&item], 0, &mut packed).unwrap();
        let repr = McastRepr {
            ring_id: RingId { rep: 2, seq: 12 },
            seq: 77,
            guarantee: Guarantee::Safe,
            encapsulated: false,
            payload: &packed,
        };
        let mut whole = alloc::vec![0u8; frame_len(&Packet::Mcast(repr.clone()))];
        emit_frame(2, 5, &Packet::Mcast(repr.clone()), &mut whole).unwrap();

        let mut inplace = alloc::vec![0u8; MCAST_HEADER_LEN + 6];
        inplace.extend_from_slice(&item);
        emit_mcast_head(2, 5, &repr, 306, &mut inplace).unwrap();
        emit_single_item_head(ph, 300, &mut inplace[MCAST_HEADER_LEN..]).unwrap();
        assert_eq!(inplace, whole);
        assert!(parse_frame(&inplace, 5).is_ok());
        assert_eq!(
            emit_mcast_head(2, 5, &repr, 1, &mut [0u8; 10]),
            Err(WireError::BufferTooSmall)
        );
    }
}

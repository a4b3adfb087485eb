//! The ORF (ordering) token.

use super::*;
use crate::limits::RTR_MAX;
use crate::types::RingId;

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RING_ID: Field = 0..12;
    pub(super) const TOKEN_SEQ: Field = 12..16;
    pub(super) const SEQ: Field = 16..20;
    pub(super) const ARU: Field = 20..24;
    pub(super) const ARU_ADDR: Field = 24..28;
    pub(super) const FCC: Field = 28..32;
    pub(super) const BACKLOG: Field = 32..36;
    pub(super) const RETRANS_FLG: usize = 36;
    pub(super) const RTR_COUNT: usize = 37;
    pub(super) const RESERVED: Field = 38..40;
    pub(super) const TARGET: Field = 40..44;
    pub(super) const RTR: Rest = 44..;
}

/// Fields of one retransmit request.
mod rtr_field {
    use crate::wire::field::Field;

    pub(super) const RING_ID: Field = 0..12;
    pub(super) const SEQ: Field = 12..16;
}

/// Bytes of the token body in front of the retransmit list.
pub const TOKEN_FIXED_LEN: usize = field::RTR.start;
/// Bytes per retransmit request.
pub const RTR_ENTRY_LEN: usize = rtr_field::SEQ.end;

static_assertions::const_assert_eq!(TOKEN_FIXED_LEN, 44);
static_assertions::const_assert_eq!(RTR_ENTRY_LEN, 16);
static_assertions::const_assert!(RTR_MAX <= u8::MAX as usize);

/// One retransmit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtrEntry {
    /// Ring the missing message belongs to.
    pub ring_id: RingId,
    /// Its sequence number.
    pub seq: u32,
}

/// The ordering token's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRepr {
    /// Ring this token circulates on.
    pub ring_id: RingId,
    /// Incremented by each holder; detects duplicates.
    pub token_seq: u32,
    /// Highest message seq assigned on the ring.
    pub seq: u32,
    /// All received up to (ring-wide low-water mark).
    pub aru: u32,
    /// Node that lowered `aru` (0: nobody).
    pub aru_addr: NodeId,
    /// Frames sent during the last rotation (flow control).
    pub fcc: u32,
    /// Frames queued ring-wide at last visits (flow control).
    pub backlog: u32,
    /// Recovery: someone still has old-ring copies queued.
    pub retrans_flg: bool,
    /// The node this copy is addressed to (the sender's successor). A token
    /// delivered anywhere else is dropped: without it a misdirected or
    /// replayed token, with a `token_seq` above the receiver's last one,
    /// would be accepted and two nodes would assign the same seqs
    /// (Corosync's header carries `target_nodeid` for the same reason).
    pub target: NodeId,
    /// Retransmit requests.
    pub rtr: heapless::Vec<RtrEntry, RTR_MAX>,
}

impl TokenRepr {
    /// Parse a TOKEN body (without the frame header).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below the fixed part, [`WireError::TooManyEntries`]
    /// above [`RTR_MAX`] requests, [`WireError::LengthMismatch`] unless the
    /// body holds exactly `rtr_count` requests, [`WireError::Malformed`] for a
    /// ring id with rep 0 or a `retrans_flg` other than 0/1. Never panics.
    pub fn parse(body: &[u8]) -> Result<TokenRepr, WireError> {
        check_len(body, TOKEN_FIXED_LEN)?;
        let ring_id = get_ring_id(body, field::RING_ID)?;
        let retrans_flg = get_flag(body, field::RETRANS_FLG)?;
        let count = usize::from(get_u8(body, field::RTR_COUNT));
        if count > RTR_MAX {
            return Err(WireError::TooManyEntries);
        }
        let list = body.get(field::RTR).unwrap_or(&[]);
        if Some(list.len()) != count.checked_mul(RTR_ENTRY_LEN) {
            return Err(WireError::LengthMismatch);
        }
        let mut rtr = heapless::Vec::new();
        for e in list.chunks_exact(RTR_ENTRY_LEN) {
            let entry = RtrEntry {
                ring_id: get_ring_id(e, rtr_field::RING_ID)?,
                seq: get_u32(e, rtr_field::SEQ),
            };
            rtr.push(entry).map_err(|_| WireError::TooManyEntries)?;
        }
        Ok(TokenRepr {
            ring_id,
            token_seq: get_u32(body, field::TOKEN_SEQ),
            seq: get_u32(body, field::SEQ),
            aru: get_u32(body, field::ARU),
            aru_addr: get_u32(body, field::ARU_ADDR),
            fcc: get_u32(body, field::FCC),
            backlog: get_u32(body, field::BACKLOG),
            retrans_flg,
            target: get_u32(body, field::TARGET),
            rtr,
        })
    }

    /// Bytes of the body `emit` writes.
    pub fn buffer_len(&self) -> usize {
        TOKEN_FIXED_LEN + self.rtr.len() * RTR_ENTRY_LEN
    }

    /// Emit the body (without the frame header), returning its length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`] below [`buffer_len`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = out_buf(buf, len)?;
        put_ring_id(out, field::RING_ID, self.ring_id);
        put_u32(out, field::TOKEN_SEQ, self.token_seq);
        put_u32(out, field::SEQ, self.seq);
        put_u32(out, field::ARU, self.aru);
        put_u32(out, field::ARU_ADDR, self.aru_addr);
        put_u32(out, field::FCC, self.fcc);
        put_u32(out, field::BACKLOG, self.backlog);
        put_u8(out, field::RETRANS_FLG, u8::from(self.retrans_flg));
        // RTR_MAX fits a u8 (asserted above).
        put_u8(out, field::RTR_COUNT, self.rtr.len() as u8);
        put_zero(out, field::RESERVED);
        put_u32(out, field::TARGET, self.target);
        let list = out.get_mut(field::RTR).unwrap_or(&mut []);
        for (e, r) in list.chunks_exact_mut(RTR_ENTRY_LEN).zip(self.rtr.iter()) {
            put_ring_id(e, rtr_field::RING_ID, r.ring_id);
            put_u32(e, rtr_field::SEQ, r.seq);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::*;

    const CLUSTER: u32 = 0x0102_0304;

    /// TOKEN from node 2: ring 1.4, token_seq 7, seq 0x10, aru 0x0e by node 3,
    /// fcc 5, backlog 6, retrans_flg set, one request (ring 1.4, seq 0x0f).
    static TOKEN_BYTES: [u8; 84] = [
        0xC7, 0xC9, 0x02, 0x00, 0x04, 0x03, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x3C, 0x00, 0x00,
        0x00, //
        0x7E, 0x8A, 0x37, 0x01, 0x71, 0x28, 0x47, 0x5F, //
        0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ring id
        0x07, 0x00, 0x00, 0x00, // token_seq
        0x10, 0x00, 0x00, 0x00, // seq
        0x0E, 0x00, 0x00, 0x00, // aru
        0x03, 0x00, 0x00, 0x00, // aru_addr
        0x05, 0x00, 0x00, 0x00, // fcc
        0x06, 0x00, 0x00, 0x00, // backlog
        0x01, 0x01, 0x00, 0x00, // retrans_flg, rtr_count, reserved
        0x03, 0x00, 0x00, 0x00, // target
        0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0F, 0x00, 0x00,
        0x00,
    ];

    const BODY: usize = FRAME_HEADER_LEN;

    fn repr() -> TokenRepr {
        let ring_id = RingId { rep: 1, seq: 4 };
        let mut rtr = heapless::Vec::new();
        rtr.push(RtrEntry { ring_id, seq: 0x0F }).unwrap();
        TokenRepr {
            ring_id,
            token_seq: 7,
            seq: 0x10,
            aru: 0x0E,
            aru_addr: 3,
            fcc: 5,
            backlog: 6,
            retrans_flg: true,
            target: 3,
            rtr,
        }
    }

    fn parse(data: &[u8]) -> Result<Frame<'_>, WireError> {
        parse_frame(data, CLUSTER)
    }

    #[test]
    fn deconstruct() {
        let f = parse(&TOKEN_BYTES).unwrap();
        assert_eq!(
            f.header,
            FrameHeader {
                kind: Kind::Token,
                sender: 2
            }
        );
        assert_eq!(f.packet, Packet::Token(repr()));
        assert_eq!(TokenRepr::parse(&TOKEN_BYTES[BODY..]), Ok(repr()));
    }

    #[test]
    fn construct() {
        let mut buf = [0xFF; 84];
        assert_eq!(
            emit_frame(2, CLUSTER, &Packet::Token(repr()), &mut buf),
            Ok(84)
        );
        assert_eq!(buf, TOKEN_BYTES);
        let mut body = [0xFF; 60];
        assert_eq!(repr().buffer_len(), 60);
        assert_eq!(repr().emit(&mut body), Ok(60));
        assert_eq!(body[..], TOKEN_BYTES[BODY..]);
        assert_eq!(repr().emit(&mut body[..59]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn round_trip() {
        check_fixture(&TOKEN_BYTES, 2, &Packet::Token(repr()));
        let empty = TokenRepr {
            ring_id: RingId { rep: 9, seq: 0 },
            ..Default::default()
        };
        let bytes = frame_bytes(9, CLUSTER, &Packet::Token(empty.clone()));
        assert_eq!(bytes.len(), FRAME_HEADER_LEN + TOKEN_FIXED_LEN);
        assert_eq!(parse(&bytes).unwrap().packet, Packet::Token(empty));
    }

    #[test]
    fn truncated() {
        let short = &TOKEN_BYTES[BODY..BODY + 43];
        assert_eq!(
            TokenRepr::parse(short),
            Err(WireError::Truncated {
                needed: 44,
                got: 43
            })
        );
        let mut f = TOKEN_BYTES[..BODY + 43].to_vec();
        fix_body_len(&mut f);
        assert_eq!(
            parse(&f),
            Err(WireError::Truncated {
                needed: 68,
                got: 67
            })
        );
    }

    #[test]
    fn rtr_count_disagrees_with_length() {
        let mut f = TOKEN_BYTES.to_vec();
        f[BODY + 37] = 2;
        assert_eq!(parse(&f), Err(WireError::LengthMismatch));
        f[BODY + 37] = 0;
        assert_eq!(parse(&f), Err(WireError::LengthMismatch));
        f.truncate(BODY + 44);
        fix_body_len(&mut f);
        crate::wire::seal(&mut f);
        assert!(matches!(parse(&f).unwrap().packet, Packet::Token(t) if t.rtr.is_empty()));
    }

    #[test]
    fn too_many_requests() {
        let mut body = TOKEN_BYTES[BODY..BODY + 44].to_vec();
        body[37] = 31;
        for _ in 0..31 {
            body.extend_from_slice(&TOKEN_BYTES[BODY + 44..]);
        }
        assert_eq!(TokenRepr::parse(&body), Err(WireError::TooManyEntries));
        body[37] = 30;
        body.truncate(44 + 30 * 16);
        assert_eq!(TokenRepr::parse(&body).unwrap().rtr.len(), 30);
        body[37] = 0xFF;
        assert_eq!(TokenRepr::parse(&body), Err(WireError::TooManyEntries));
    }

    #[test]
    fn bad_flag_byte() {
        let mut f = TOKEN_BYTES.to_vec();
        f[BODY + 36] = 2;
        assert_eq!(parse(&f), Err(WireError::Malformed));
        f[BODY + 36] = 0;
        crate::wire::seal(&mut f);
        assert!(matches!(parse(&f).unwrap().packet, Packet::Token(t) if !t.retrans_flg));
    }

    #[test]
    fn zero_reps() {
        let mut f = TOKEN_BYTES.to_vec();
        f[BODY] = 0;
        assert_eq!(parse(&f), Err(WireError::Malformed));
        let mut f = TOKEN_BYTES.to_vec();
        f[BODY + 44] = 0; // the request's ring
        assert_eq!(parse(&f), Err(WireError::Malformed));
    }

    #[test]
    fn aru_addr_may_be_zero_and_reserved_is_ignored() {
        let mut f = TOKEN_BYTES.to_vec();
        f[BODY + 24] = 0;
        f[BODY + 38] = 0xAB;
        crate::wire::seal(&mut f);
        let t = match parse(&f).unwrap().packet {
            Packet::Token(t) => t,
            p => panic!("{p:?}"),
        };
        assert_eq!(t.aru_addr, 0);
        let mut again = [0; 84];
        emit_frame(2, CLUSTER, &Packet::Token(t), &mut again).unwrap();
        assert_eq!(again[BODY + 38], 0);
    }

    proptest! {
        #[test]
        fn body_round_trip(t in token()) {
            let mut buf = vec![0; t.buffer_len()];
            prop_assert_eq!(t.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(TokenRepr::parse(&buf), Ok(t));
        }

        #[test]
        fn frame_round_trip(sender in node_id(), t in token()) {
            let p = Packet::Token(t);
            let bytes = frame_bytes(sender, CLUSTER, &p);
            prop_assert_eq!(parse(&bytes).map(|f| f.packet), Ok(p));
        }

        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = TokenRepr::parse(&body);
        }
    }
}

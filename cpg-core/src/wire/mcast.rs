//! Multicast data frames.

use super::*;
use crate::types::{Guarantee, RingId};

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RING_ID: Field = 0..12;
    pub(super) const SEQ: Field = 12..16;
    pub(super) const GUARANTEE: usize = 16;
    pub(super) const ENCAPSULATED: usize = 17;
    pub(super) const RESERVED: Field = 18..20;
    pub(super) const PAYLOAD: Rest = 20..;
}

/// Bytes of the MCAST body in front of the payload.
pub const MCAST_BODY_HEADER_LEN: usize = field::PAYLOAD.start;

static_assertions::const_assert_eq!(MCAST_BODY_HEADER_LEN, 20);
static_assertions::const_assert_eq!(FRAME_HEADER_LEN + MCAST_BODY_HEADER_LEN, MCAST_HEADER_LEN);

/// A multicast frame's fields; the payload is borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McastRepr<'a> {
    /// Ring the seq belongs to.
    pub ring_id: RingId,
    /// Sequence number in that ring.
    pub seq: u32,
    /// Delivery guarantee of every message packed in this frame.
    pub guarantee: Guarantee,
    /// Recovery copy: the payload is a whole old-ring MCAST frame.
    pub encapsulated: bool,
    /// Packed items (or, if encapsulated, the inner frame).
    pub payload: &'a [u8],
}

impl<'a> McastRepr<'a> {
    /// Parse an MCAST body (without the frame header); the payload borrows `body`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] below the fixed part, [`WireError::Malformed`]
    /// for a ring id with rep 0, a bad guarantee or encapsulated byte, or an
    /// empty payload. Never panics.
    pub fn parse(body: &'a [u8]) -> Result<McastRepr<'a>, WireError> {
        check_len(body, MCAST_BODY_HEADER_LEN)?;
        let ring_id = get_ring_id(body, field::RING_ID)?;
        let guarantee =
            Guarantee::from_u8(get_u8(body, field::GUARANTEE)).ok_or(WireError::Malformed)?;
        let encapsulated = get_flag(body, field::ENCAPSULATED)?;
        let payload = body.get(field::PAYLOAD).unwrap_or(&[]);
        if payload.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(McastRepr {
            ring_id,
            seq: get_u32(body, field::SEQ),
            guarantee,
            encapsulated,
            payload,
        })
    }

    /// Bytes of the body `emit` writes.
    pub fn buffer_len(&self) -> usize {
        MCAST_BODY_HEADER_LEN.saturating_add(self.payload.len())
    }

    /// Emit the body (without the frame header), returning its length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`] below [`buffer_len`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = out_buf(buf, len)?;
        put_ring_id(out, field::RING_ID, self.ring_id);
        put_u32(out, field::SEQ, self.seq);
        put_u8(out, field::GUARANTEE, self.guarantee as u8);
        put_u8(out, field::ENCAPSULATED, u8::from(self.encapsulated));
        put_zero(out, field::RESERVED);
        put_bytes(out, field::PAYLOAD.start..len, self.payload);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::strategies::*;

    const CLUSTER: u32 = 0x0102_0304;
    const BODY: usize = FRAME_HEADER_LEN;

    /// MCAST from node 3: ring 1.4, seq 0x11, SAFE, not encapsulated,
    /// payload = a packed payload with one item "hi".
    static MCAST_BYTES: [u8; 52] = [
        0xC7, 0xC9, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01, 0x03, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x00,
        0x00, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ring id
        0x11, 0x00, 0x00, 0x00, // seq
        0x03, 0x00, 0x00, 0x00, // guarantee, encapsulated, reserved
        0x00, 0x00, 0x01, 0x00, 0x02, 0x00, b'h', b'i', // payload
    ];

    fn repr() -> McastRepr<'static> {
        McastRepr {
            ring_id: RingId { rep: 1, seq: 4 },
            seq: 0x11,
            guarantee: Guarantee::Safe,
            encapsulated: false,
            payload: &MCAST_BYTES[MCAST_HEADER_LEN..],
        }
    }

    #[test]
    fn deconstruct() {
        let f = parse_frame(&MCAST_BYTES, CLUSTER).unwrap();
        assert_eq!(
            f.header,
            FrameHeader {
                kind: Kind::Mcast,
                sender: 3
            }
        );
        assert_eq!(f.packet, Packet::Mcast(repr()));
        let items: Vec<_> = Packed::parse(repr().payload).unwrap().items().collect();
        assert_eq!(items, [(6, &b"hi"[..])]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xFF; 52];
        assert_eq!(
            emit_frame(3, CLUSTER, &Packet::Mcast(repr()), &mut buf),
            Ok(52)
        );
        assert_eq!(buf, MCAST_BYTES);
        assert_eq!(
            emit_frame(3, CLUSTER, &Packet::Mcast(repr()), &mut buf[..51]),
            Err(WireError::BufferTooSmall)
        );
    }

    #[test]
    fn round_trip() {
        check_fixture(&MCAST_BYTES, 3, &Packet::Mcast(repr()));
        // Recovery: a whole old-ring MCAST frame inside a new-ring one.
        let outer = McastRepr {
            ring_id: RingId { rep: 1, seq: 8 },
            seq: 1,
            encapsulated: true,
            payload: &MCAST_BYTES,
            ..repr()
        };
        let bytes = frame_bytes(1, CLUSTER, &Packet::Mcast(outer.clone()));
        let Packet::Mcast(m) = parse_frame(&bytes, CLUSTER).unwrap().packet else {
            panic!()
        };
        assert_eq!(m, outer);
        assert_eq!(
            parse_frame(m.payload, CLUSTER).unwrap().packet,
            Packet::Mcast(repr())
        );
    }

    #[test]
    fn header_len_is_where_the_payload_starts() {
        assert_eq!(MCAST_HEADER_LEN, 44);
        assert_eq!(
            frame_len(&Packet::Mcast(repr())),
            MCAST_HEADER_LEN + repr().payload.len()
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            McastRepr::parse(&MCAST_BYTES[BODY..BODY + 19]),
            Err(WireError::Truncated {
                needed: 20,
                got: 19
            })
        );
        let mut f = MCAST_BYTES[..BODY + 10].to_vec();
        fix_body_len(&mut f);
        assert_eq!(
            parse_frame(&f, CLUSTER),
            Err(WireError::Truncated {
                needed: 44,
                got: 34
            })
        );
    }

    #[test]
    fn empty_payload_is_malformed() {
        let mut f = MCAST_BYTES[..MCAST_HEADER_LEN].to_vec();
        fix_body_len(&mut f);
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
    }

    #[test]
    fn bad_flag_bytes() {
        let mut f = MCAST_BYTES.to_vec();
        f[BODY + 16] = 4; // guarantee
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = MCAST_BYTES.to_vec();
        f[BODY + 17] = 2; // encapsulated
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = MCAST_BYTES.to_vec();
        f[BODY] = 0; // rep
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = MCAST_BYTES.to_vec();
        f[BODY + 18] = 0xEE; // reserved: ignored
        assert_eq!(
            parse_frame(&f, CLUSTER).unwrap().packet,
            Packet::Mcast(repr())
        );
    }

    #[test]
    fn body_length_mismatch() {
        let mut f = MCAST_BYTES.to_vec();
        f.push(0);
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
    }

    proptest! {
        #[test]
        fn body_round_trip(m in mcast()) {
            let mut buf = vec![0; m.buffer_len()];
            prop_assert_eq!(m.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(McastRepr::parse(&buf), Ok(m));
        }

        #[test]
        fn frame_round_trip(sender in node_id(), m in mcast()) {
            let p = Packet::Mcast(m);
            let bytes = frame_bytes(sender, CLUSTER, &p);
            prop_assert_eq!(parse_frame(&bytes, CLUSTER).map(|f| f.packet), Ok(p));
        }

        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = McastRepr::parse(&body);
        }
    }
}

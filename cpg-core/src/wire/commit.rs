//! The commit token.

use super::*;
use crate::limits::NODES_MAX;
use crate::types::RingId;

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RING_ID: Field = 0..12;
    pub(super) const TOKEN_SEQ: Field = 12..16;
    pub(super) const MEMB_INDEX: Field = 16..18;
    pub(super) const COUNT: Field = 18..20;
    pub(super) const ADDRS: Rest = 20..;
}

/// Fields of one member entry.
mod entry_field {
    use crate::wire::field::Field;

    pub(super) const OLD_RING_ID: Field = 0..12;
    pub(super) const ARU: Field = 12..16;
    pub(super) const HIGH_DELIVERED: Field = 16..20;
    pub(super) const RECEIVED_FLG: usize = 20;
    pub(super) const RESERVED: Field = 21..24;
}

/// Bytes of the commit body in front of the address list.
pub const COMMIT_FIXED_LEN: usize = field::ADDRS.start;
/// Bytes per member entry.
pub const COMMIT_ENTRY_LEN: usize = entry_field::RESERVED.end;
/// Bytes per member address.
const ADDR_LEN: usize = 4;

static_assertions::const_assert_eq!(COMMIT_FIXED_LEN, 20);
static_assertions::const_assert_eq!(COMMIT_ENTRY_LEN, 24);

/// One member's record in the commit token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitEntry {
    /// The ring the member last installed.
    pub old_ring_id: RingId,
    /// Its aru in that ring.
    pub aru: u32,
    /// Highest seq it delivered in that ring.
    pub high_delivered: u32,
    /// It held everything up to the highest aru of its old ring.
    pub received_flg: bool,
}

/// The commit token's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitRepr {
    /// The new ring.
    pub ring_id: RingId,
    /// Incremented per send.
    pub token_seq: u32,
    /// Entries filled so far (== count after the first rotation).
    pub memb_index: u16,
    /// Members of the new ring, ascending.
    pub addr: NodeList,
    /// One entry per member, same order as `addr`.
    pub entries: heapless::Vec<CommitEntry, NODES_MAX>,
}

impl CommitRepr {
    /// Parse a COMMIT body (without the frame header).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below the fixed part, [`WireError::TooManyEntries`]
    /// above [`NODES_MAX`] members, [`WireError::Malformed`] for a count of 0,
    /// `memb_index` beyond the count, a ring id with rep 0, a zero address or
    /// a `received_flg` other than 0/1, [`WireError::LengthMismatch`] unless
    /// addresses and entries fill the body exactly. Never panics.
    pub fn parse(body: &[u8]) -> Result<CommitRepr, WireError> {
        check_len(body, COMMIT_FIXED_LEN)?;
        let ring_id = get_ring_id(body, field::RING_ID)?;
        let memb_index = get_u16(body, field::MEMB_INDEX);
        let count16 = get_u16(body, field::COUNT);
        let count = usize::from(count16);
        if count == 0 {
            return Err(WireError::Malformed);
        }
        if count > NODES_MAX {
            return Err(WireError::TooManyEntries);
        }
        if memb_index > count16 {
            return Err(WireError::Malformed);
        }
        let rest = body.get(field::ADDRS).unwrap_or(&[]);
        // count <= 64: no overflow.
        if rest.len() != count * (ADDR_LEN + COMMIT_ENTRY_LEN) {
            return Err(WireError::LengthMismatch);
        }
        let (addrs, entry_bytes) = rest.split_at(count * ADDR_LEN);
        let mut addr = NodeList::new();
        for a in addrs.chunks_exact(ADDR_LEN) {
            addr.push(get_node_id(a, 0..ADDR_LEN)?)
                .map_err(|_| WireError::TooManyEntries)?;
        }
        let mut entries = heapless::Vec::new();
        for e in entry_bytes.chunks_exact(COMMIT_ENTRY_LEN) {
            let entry = CommitEntry {
                old_ring_id: get_ring_id_raw(e, entry_field::OLD_RING_ID),
                aru: get_u32(e, entry_field::ARU),
                high_delivered: get_u32(e, entry_field::HIGH_DELIVERED),
                received_flg: get_flag(e, entry_field::RECEIVED_FLG)?,
            };
            entries.push(entry).map_err(|_| WireError::TooManyEntries)?;
        }
        Ok(CommitRepr {
            ring_id,
            token_seq: get_u32(body, field::TOKEN_SEQ),
            memb_index,
            addr,
            entries,
        })
    }

    /// Bytes of the body `emit` writes (`addr.len()` members).
    pub fn buffer_len(&self) -> usize {
        COMMIT_FIXED_LEN + self.addr.len() * (ADDR_LEN + COMMIT_ENTRY_LEN)
    }

    /// The emit invariant: one entry per address.
    pub(super) fn check_emit(&self) -> Result<(), WireError> {
        if self.addr.len() != self.entries.len() {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// Emit the body (without the frame header), returning its length.
    ///
    /// # Errors
    /// [`WireError::Malformed`] if `addr` and `entries` differ in length;
    /// [`WireError::BufferTooSmall`] below [`buffer_len`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.check_emit()?;
        let len = self.buffer_len();
        let out = out_buf(buf, len)?;
        put_ring_id(out, field::RING_ID, self.ring_id);
        put_u32(out, field::TOKEN_SEQ, self.token_seq);
        put_u16(out, field::MEMB_INDEX, self.memb_index);
        // NodeList holds at most NODES_MAX (64) ids: they fit a u16.
        put_u16(out, field::COUNT, self.addr.len() as u16);
        let rest = out.get_mut(field::ADDRS).unwrap_or(&mut []);
        let (addrs, entry_bytes) = rest.split_at_mut(self.addr.len() * ADDR_LEN);
        for (out, &a) in addrs.chunks_exact_mut(ADDR_LEN).zip(self.addr.iter()) {
            put_u32(out, 0..ADDR_LEN, a);
        }
        for (out, e) in entry_bytes
            .chunks_exact_mut(COMMIT_ENTRY_LEN)
            .zip(self.entries.iter())
        {
            put_ring_id(out, entry_field::OLD_RING_ID, e.old_ring_id);
            put_u32(out, entry_field::ARU, e.aru);
            put_u32(out, entry_field::HIGH_DELIVERED, e.high_delivered);
            put_u8(out, entry_field::RECEIVED_FLG, u8::from(e.received_flg));
            put_zero(out, entry_field::RESERVED);
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
    const BODY: usize = FRAME_HEADER_LEN;

    /// COMMIT from node 1: ring 1.8, token_seq 2, memb_index 1, members
    /// [1, 2]; node 1 came from ring 1.4 (aru 0x10, delivered 0x0f, received),
    /// node 2's entry is not filled yet (zeroed).
    static COMMIT_BYTES: [u8; 100] = [
        0xC7, 0xC9, 0x02, 0x04, 0x04, 0x03, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x4C, 0x00, 0x00,
        0x00, //
        0x76, 0x7C, 0x76, 0xD0, 0xB9, 0xD9, 0xCD, 0x58, //
        0x01, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ring id
        0x02, 0x00, 0x00, 0x00, // token_seq
        0x01, 0x00, 0x02, 0x00, // memb_index, count
        0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // addr
        0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // entry 0: old ring
        0x10, 0x00, 0x00, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, // aru, high_delivered, flg
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // entry 1: zeroed
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// Body offset of the first entry.
    const ENTRIES: usize = BODY + 28;

    fn repr() -> CommitRepr {
        let mut entries = heapless::Vec::new();
        let filled = CommitEntry {
            old_ring_id: RingId { rep: 1, seq: 4 },
            aru: 0x10,
            high_delivered: 0x0F,
            received_flg: true,
        };
        entries.push(filled).unwrap();
        entries.push(CommitEntry::default()).unwrap();
        CommitRepr {
            ring_id: RingId { rep: 1, seq: 8 },
            token_seq: 2,
            memb_index: 1,
            addr: [1, 2].into_iter().collect(),
            entries,
        }
    }

    #[test]
    fn deconstruct() {
        let f = parse_frame(&COMMIT_BYTES, CLUSTER).unwrap();
        assert_eq!(
            f.header,
            FrameHeader {
                kind: Kind::Commit,
                sender: 1
            }
        );
        assert_eq!(f.packet, Packet::Commit(repr()));
    }

    #[test]
    fn construct() {
        let mut buf = [0xFF; 100];
        assert_eq!(
            emit_frame(1, CLUSTER, &Packet::Commit(repr()), &mut buf),
            Ok(100)
        );
        assert_eq!(buf, COMMIT_BYTES);
        assert_eq!(repr().emit(&mut buf[..75]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn round_trip() {
        check_fixture(&COMMIT_BYTES, 1, &Packet::Commit(repr()));
    }

    #[test]
    fn truncated() {
        assert_eq!(
            CommitRepr::parse(&COMMIT_BYTES[BODY..BODY + 19]),
            Err(WireError::Truncated {
                needed: 20,
                got: 19
            })
        );
    }

    #[test]
    fn counts() {
        let mut body = COMMIT_BYTES[BODY..].to_vec();
        body[16] = 0; // memb_index 0 (nothing filled) is fine
        assert_eq!(CommitRepr::parse(&body).unwrap().memb_index, 0);
        body[16] = 2; // == count: fine
        assert_eq!(CommitRepr::parse(&body).unwrap().memb_index, 2);
        body[16] = 3; // beyond count
        assert_eq!(CommitRepr::parse(&body), Err(WireError::Malformed));
        body[16] = 1;
        body[18] = 0; // count 0
        assert_eq!(CommitRepr::parse(&body), Err(WireError::Malformed));
        body[18] = 65;
        assert_eq!(CommitRepr::parse(&body), Err(WireError::TooManyEntries));
        body[18] = 3;
        assert_eq!(CommitRepr::parse(&body), Err(WireError::LengthMismatch));
        body[18] = 1;
        assert_eq!(CommitRepr::parse(&body), Err(WireError::LengthMismatch));
    }

    #[test]
    fn bad_fields() {
        let mut f = COMMIT_BYTES.to_vec();
        f[BODY] = 0; // ring rep
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = COMMIT_BYTES.to_vec();
        f[BODY + 24] = 0; // addr[1]
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = COMMIT_BYTES.to_vec();
        f[ENTRIES + 20] = 2; // received_flg
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::Malformed));
        let mut f = COMMIT_BYTES.to_vec();
        f[ENTRIES + 21] = 0x77; // reserved: ignored
        crate::wire::seal(&mut f);
        assert_eq!(
            parse_frame(&f, CLUSTER).unwrap().packet,
            Packet::Commit(repr())
        );
    }

    #[test]
    fn emit_needs_one_entry_per_addr() {
        let mut c = repr();
        c.entries.pop();
        let mut buf = [0; 128];
        assert_eq!(c.emit(&mut buf), Err(WireError::Malformed));
    }

    proptest! {
        #[test]
        fn body_round_trip(c in commit()) {
            let mut buf = vec![0; c.buffer_len()];
            prop_assert_eq!(c.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(CommitRepr::parse(&buf), Ok(c));
        }

        #[test]
        fn frame_round_trip(sender in node_id(), c in commit()) {
            let p = Packet::Commit(c);
            let bytes = frame_bytes(sender, CLUSTER, &p);
            prop_assert_eq!(parse_frame(&bytes, CLUSTER).map(|f| f.packet), Ok(p));
        }

        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = CommitRepr::parse(&body);
        }
    }
}

//! Membership JOIN (and LEAVE) messages.

use super::*;
use crate::limits::NODES_MAX;

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const RING_SEQ: Field = 0..8;
    pub(super) const FLAGS: usize = 8;
    pub(super) const RESERVED0: usize = 9;
    pub(super) const PROC_COUNT: Field = 10..12;
    pub(super) const FAIL_COUNT: Field = 12..14;
    pub(super) const RESERVED1: Field = 14..16;
    pub(super) const LISTS: Rest = 16..;
}

/// Bytes of the JOIN body in front of the node lists.
pub const JOIN_FIXED_LEN: usize = field::LISTS.start;
/// Flag bit: the sender is leaving.
const FLAG_LEAVE: u8 = 1;
/// Bytes per node id.
const NODE_ID_LEN: usize = 4;

static_assertions::const_assert_eq!(JOIN_FIXED_LEN, 16);

/// A JOIN: the sender's view of who is alive and who failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinRepr {
    /// Highest ring seq the sender has seen.
    pub ring_seq: u64,
    /// A clean shutdown: the sender is last in `fail`.
    pub leave: bool,
    /// Nodes believed alive.
    pub proc_list: NodeList,
    /// Nodes believed failed.
    pub fail_list: NodeList,
}

/// Read `count` non-zero node ids from `data` (exactly `count * 4` bytes).
fn get_node_list(data: &[u8]) -> Result<NodeList, WireError> {
    let mut list = NodeList::new();
    for id in data.chunks_exact(NODE_ID_LEN) {
        list.push(get_node_id(id, 0..NODE_ID_LEN)?)
            .map_err(|_| WireError::TooManyEntries)?;
    }
    Ok(list)
}

fn put_node_list(buf: &mut [u8], list: &[NodeId]) {
    for (out, &id) in buf.chunks_exact_mut(NODE_ID_LEN).zip(list.iter()) {
        put_u32(out, 0..NODE_ID_LEN, id);
    }
}

impl JoinRepr {
    /// Parse a JOIN body (without the frame header).
    ///
    /// # Errors
    /// [`WireError::Truncated`] below the fixed part, [`WireError::Malformed`]
    /// for unknown flag bits or a zero node id, [`WireError::TooManyEntries`]
    /// for a list above [`NODES_MAX`], [`WireError::LengthMismatch`] unless
    /// the lists fill the body exactly. Never panics.
    pub fn parse(body: &[u8]) -> Result<JoinRepr, WireError> {
        check_len(body, JOIN_FIXED_LEN)?;
        let flags = get_u8(body, field::FLAGS);
        if flags & !FLAG_LEAVE != 0 {
            return Err(WireError::Malformed);
        }
        let procs = usize::from(get_u16(body, field::PROC_COUNT));
        let fails = usize::from(get_u16(body, field::FAIL_COUNT));
        if procs > NODES_MAX || fails > NODES_MAX {
            return Err(WireError::TooManyEntries);
        }
        let lists = body.get(field::LISTS).unwrap_or(&[]);
        // Both counts are at most 64: no overflow.
        if lists.len() != (procs + fails) * NODE_ID_LEN {
            return Err(WireError::LengthMismatch);
        }
        let (proc_ids, fail_ids) = lists.split_at(procs * NODE_ID_LEN);
        Ok(JoinRepr {
            ring_seq: get_u64(body, field::RING_SEQ),
            leave: flags & FLAG_LEAVE != 0,
            proc_list: get_node_list(proc_ids)?,
            fail_list: get_node_list(fail_ids)?,
        })
    }

    /// Bytes of the body `emit` writes.
    pub fn buffer_len(&self) -> usize {
        JOIN_FIXED_LEN + (self.proc_list.len() + self.fail_list.len()) * NODE_ID_LEN
    }

    /// Emit the body (without the frame header), returning its length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`] below [`buffer_len`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        let out = out_buf(buf, len)?;
        put_u64(out, field::RING_SEQ, self.ring_seq);
        put_u8(out, field::FLAGS, if self.leave { FLAG_LEAVE } else { 0 });
        put_u8(out, field::RESERVED0, 0);
        // NodeList holds at most NODES_MAX (64) ids: they fit a u16.
        put_u16(out, field::PROC_COUNT, self.proc_list.len() as u16);
        put_u16(out, field::FAIL_COUNT, self.fail_list.len() as u16);
        put_zero(out, field::RESERVED1);
        let lists = out.get_mut(field::LISTS).unwrap_or(&mut []);
        let (proc_ids, fail_ids) = lists.split_at_mut(self.proc_list.len() * NODE_ID_LEN);
        put_node_list(proc_ids, &self.proc_list);
        put_node_list(fail_ids, &self.fail_list);
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

    /// LEAVE (a JOIN with the leave flag) from node 1: ring seq 8,
    /// procs [1, 2], fails [3].
    static JOIN_BYTES: [u8; 52] = [
        0xC7, 0xC9, 0x02, 0x03, 0x04, 0x03, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x00,
        0x00, //
        0xF9, 0xB0, 0x38, 0x4E, 0xEA, 0xCA, 0x30, 0x06, //
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ring_seq
        0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00,
        0x00, // flags, reserved, proc_count, fail_count, reserved
        0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // procs
        0x03, 0x00, 0x00, 0x00, // fails
    ];

    fn repr() -> JoinRepr {
        JoinRepr {
            ring_seq: 8,
            leave: true,
            proc_list: [1, 2].into_iter().collect(),
            fail_list: [3].into_iter().collect(),
        }
    }

    #[test]
    fn deconstruct() {
        let f = parse_frame(&JOIN_BYTES, CLUSTER).unwrap();
        assert_eq!(
            f.header,
            FrameHeader {
                kind: Kind::Join,
                sender: 1
            }
        );
        assert_eq!(f.packet, Packet::Join(repr()));
    }

    #[test]
    fn construct() {
        let mut buf = [0xFF; 52];
        assert_eq!(
            emit_frame(1, CLUSTER, &Packet::Join(repr()), &mut buf),
            Ok(52)
        );
        assert_eq!(buf, JOIN_BYTES);
        assert_eq!(repr().emit(&mut buf[..27]), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn round_trip() {
        check_fixture(&JOIN_BYTES, 1, &Packet::Join(repr()));
        let empty = JoinRepr::default();
        let bytes = frame_bytes(5, CLUSTER, &Packet::Join(empty.clone()));
        assert_eq!(bytes.len(), FRAME_HEADER_LEN + JOIN_FIXED_LEN);
        assert_eq!(
            parse_frame(&bytes, CLUSTER).unwrap().packet,
            Packet::Join(empty)
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            JoinRepr::parse(&JOIN_BYTES[BODY..BODY + 15]),
            Err(WireError::Truncated {
                needed: 16,
                got: 15
            })
        );
    }

    #[test]
    fn length_mismatch() {
        let mut f = JOIN_BYTES.to_vec();
        f[BODY + 12] = 2; // two fails, one present
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
        f[BODY + 12] = 0; // none, one present
        assert_eq!(parse_frame(&f, CLUSTER), Err(WireError::LengthMismatch));
    }

    #[test]
    fn too_many_entries() {
        let mut body = JOIN_BYTES[BODY..].to_vec();
        body[10] = 65;
        assert_eq!(JoinRepr::parse(&body), Err(WireError::TooManyEntries));
        body[10] = 2;
        body[12] = 0xFF;
        body[13] = 0xFF;
        assert_eq!(JoinRepr::parse(&body), Err(WireError::TooManyEntries));
        // 64 + 64 is the most.
        let full = JoinRepr {
            proc_list: (1..=64).collect(),
            fail_list: (65..=128).collect(),
            ..JoinRepr::default()
        };
        let mut buf = vec![0; full.buffer_len()];
        full.emit(&mut buf).unwrap();
        assert_eq!(JoinRepr::parse(&buf), Ok(full));
    }

    #[test]
    fn bad_flag_bits_and_zero_ids() {
        for flags in [2u8, 0x80, 0x03] {
            let mut f = JOIN_BYTES.to_vec();
            f[BODY + 8] = flags;
            assert_eq!(
                parse_frame(&f, CLUSTER),
                Err(WireError::Malformed),
                "flags {flags:#x}"
            );
        }
        let mut f = JOIN_BYTES.to_vec();
        f[BODY + 8] = 0;
        f[BODY + 9] = 0x55; // reserved: ignored
        crate::wire::seal(&mut f);
        assert!(matches!(parse_frame(&f, CLUSTER).unwrap().packet, Packet::Join(j) if !j.leave));
        for at in [16, 20, 24] {
            let mut f = JOIN_BYTES.to_vec();
            f[BODY + at] = 0;
            assert_eq!(
                parse_frame(&f, CLUSTER),
                Err(WireError::Malformed),
                "id at {at}"
            );
        }
    }

    proptest! {
        #[test]
        fn body_round_trip(j in join()) {
            let mut buf = vec![0; j.buffer_len()];
            prop_assert_eq!(j.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(JoinRepr::parse(&buf), Ok(j));
        }

        #[test]
        fn frame_round_trip(sender in node_id(), j in join()) {
            let p = Packet::Join(j);
            let bytes = frame_bytes(sender, CLUSTER, &p);
            prop_assert_eq!(parse_frame(&bytes, CLUSTER).map(|f| f.packet), Ok(p));
        }

        #[test]
        fn any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = JoinRepr::parse(&body);
        }
    }
}

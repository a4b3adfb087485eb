//! Link heartbeats: the transport's own ping and pong on each (peer, link),
//! never handed to the engine. A driver with redundant links
//! (`docs/spec/totem.md` §10) declares a link down and up by these alone,
//! independent of the token. They travel like any datagram (sealed when
//! frame sealing is on) and carry their own magic, so a receiver tells
//! them from a Totem frame by the first two bytes.
//!
//! ```text
//! 0..2 magic 0xC9C8 | 2 version (1) | 3 kind (0 ping, 1 pong) | 4..8 cluster id
//! 8..12 sender node id | 12..16 receiver node id | 16 link number | 17..20 reserved
//! 20..28 seq u64 | 28..36 stamp u64 (the pinger's clock in ns; a pong echoes seq and stamp)
//! ```

use super::*;

mod field {
    use crate::wire::field::Field;

    pub(super) const MAGIC: Field = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const KIND: usize = 3;
    pub(super) const CLUSTER_ID: Field = 4..8;
    pub(super) const SENDER: Field = 8..12;
    pub(super) const RECEIVER: Field = 12..16;
    pub(super) const LINK: usize = 16;
    pub(super) const RESERVED: Field = 17..20;
    pub(super) const SEQ: Field = 20..28;
    pub(super) const STAMP: Field = 28..36;
}

/// Magic of a link heartbeat (a Totem frame's is [`MAGIC`]).
pub const LINK_MAGIC: u16 = 0xC9C8;
/// Bytes of a heartbeat.
pub const LINK_FRAME_LEN: usize = field::STAMP.end;

static_assertions::const_assert_eq!(LINK_FRAME_LEN, 36);

/// Ping or pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Asks the receiver to answer on the same link.
    Ping = 0,
    /// The answer: `seq` and `stamp` of the ping.
    Pong = 1,
}

/// A heartbeat, every field valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRepr {
    /// Ping or pong.
    pub kind: LinkKind,
    /// The cluster (a heartbeat of another cluster is refused).
    pub cluster_id: u32,
    /// Who sent it (non-zero).
    pub sender: NodeId,
    /// Whom it is for (non-zero).
    pub receiver: NodeId,
    /// The link it was sent on.
    pub link: u8,
    /// The pinger's sequence number.
    pub seq: u64,
    /// The pinger's clock when it sent the ping (ns), echoed by the pong.
    pub stamp: u64,
}

/// Whether `data` starts like a heartbeat (the magic only): what a
/// receiver checks before choosing between this parser and the engine.
pub fn is_link_frame(data: &[u8]) -> bool {
    data.len() >= 2 && get_u16(data, field::MAGIC) == LINK_MAGIC
}

impl LinkRepr {
    /// Parse and validate a heartbeat of cluster `cluster_id`.
    ///
    /// # Errors
    /// [`WireError`]: short or long, bad magic, version or kind, another
    /// cluster, a zero node id or non-zero reserved bytes.
    pub fn parse(data: &[u8], cluster_id: u32) -> Result<LinkRepr, WireError> {
        if data.len() < LINK_FRAME_LEN {
            return Err(WireError::Truncated {
                needed: LINK_FRAME_LEN,
                got: data.len(),
            });
        }
        if data.len() != LINK_FRAME_LEN {
            return Err(WireError::LengthMismatch);
        }
        if get_u16(data, field::MAGIC) != LINK_MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = get_u8(data, field::VERSION);
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let kind = match get_u8(data, field::KIND) {
            0 => LinkKind::Ping,
            1 => LinkKind::Pong,
            k => return Err(WireError::UnknownKind(k)),
        };
        if get_u32(data, field::CLUSTER_ID) != cluster_id {
            return Err(WireError::ForeignCluster);
        }
        let sender = get_u32(data, field::SENDER);
        let receiver = get_u32(data, field::RECEIVER);
        if sender == 0 || receiver == 0 || get_bytes::<3>(data, field::RESERVED) != [0; 3] {
            return Err(WireError::Malformed);
        }
        Ok(LinkRepr {
            kind,
            cluster_id,
            sender,
            receiver,
            link: get_u8(data, field::LINK),
            seq: get_u64(data, field::SEQ),
            stamp: get_u64(data, field::STAMP),
        })
    }

    /// The heartbeat's bytes.
    pub fn emit(&self) -> [u8; LINK_FRAME_LEN] {
        let mut b = [0u8; LINK_FRAME_LEN];
        put_u16(&mut b, field::MAGIC, LINK_MAGIC);
        put_u8(&mut b, field::VERSION, VERSION);
        put_u8(&mut b, field::KIND, self.kind as u8);
        put_u32(&mut b, field::CLUSTER_ID, self.cluster_id);
        put_u32(&mut b, field::SENDER, self.sender);
        put_u32(&mut b, field::RECEIVER, self.receiver);
        put_u8(&mut b, field::LINK, self.link);
        put_zero(&mut b, field::RESERVED);
        put_u64(&mut b, field::SEQ, self.seq);
        put_u64(&mut b, field::STAMP, self.stamp);
        b
    }

    /// The pong that answers this ping (sender and receiver swapped).
    pub fn pong(&self) -> LinkRepr {
        LinkRepr {
            kind: LinkKind::Pong,
            sender: self.receiver,
            receiver: self.sender,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> LinkRepr {
        LinkRepr {
            kind: LinkKind::Ping,
            cluster_id: 7,
            sender: 1,
            receiver: 2,
            link: 3,
            seq: 9,
            stamp: 123_456_789,
        }
    }

    #[test]
    fn round_trip_and_pong() {
        let b = ping().emit();
        assert!(is_link_frame(&b));
        assert_eq!(LinkRepr::parse(&b, 7), Ok(ping()));
        let pong = ping().pong();
        assert_eq!((pong.sender, pong.receiver, pong.seq), (2, 1, 9));
        assert_eq!(LinkRepr::parse(&pong.emit(), 7), Ok(pong));
    }

    #[test]
    fn a_totem_frame_is_not_a_heartbeat() {
        let mut b = ping().emit();
        b[..2].copy_from_slice(&MAGIC.to_le_bytes());
        assert!(!is_link_frame(&b));
        assert_eq!(LinkRepr::parse(&b, 7), Err(WireError::BadMagic));
        assert!(!is_link_frame(&[0xC8]));
    }

    #[test]
    fn refusals_are_typed() {
        let b = ping().emit();
        assert_eq!(LinkRepr::parse(&b, 8), Err(WireError::ForeignCluster));
        assert!(matches!(
            LinkRepr::parse(&b[..35], 7),
            Err(WireError::Truncated { .. })
        ));
        let mut long = [0u8; 37];
        long[..36].copy_from_slice(&b);
        assert_eq!(LinkRepr::parse(&long, 7), Err(WireError::LengthMismatch));
        let mut k = b;
        k[3] = 2;
        assert_eq!(LinkRepr::parse(&k, 7), Err(WireError::UnknownKind(2)));
        let mut v = b;
        v[2] = 9;
        assert_eq!(
            LinkRepr::parse(&v, 7),
            Err(WireError::UnsupportedVersion(9))
        );
        let mut z = b;
        z[8..12].fill(0);
        assert_eq!(LinkRepr::parse(&z, 7), Err(WireError::Malformed));
        let mut r = b;
        r[18] = 1;
        assert_eq!(LinkRepr::parse(&r, 7), Err(WireError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = LinkRepr::parse(&data, 7);
            let _ = is_link_frame(&data);
        }
    }
}

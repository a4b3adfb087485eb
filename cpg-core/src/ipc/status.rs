//! `STATUS`: what the node is doing, for `cpgtool status` against cpgd
//! (Corosync's `corosync-cfgtool -s` and `corosync-cmapctl -m stats` in
//! one request). The request is `0..4 req_id | 4..8 link offset`; the
//! reply body (after the `REPLY` header) is:
//!
//! ```text
//! 0..4 node id (non-zero) | 4 totem state (1 operational, 2 gather, 3 commit, 4 recovery)
//! 5 cluster name length | 6 members (≤ 64) | 7 links here (≤ 24)
//! 8..12 ring rep | 12..16 links in all | 16..24 ring seq
//! 24..28 offset of the first link here | 28..32 counters (exactly STATUS_COUNTERS)
//! 32.. counters (u64 each, in StatusCounters order) | members (node id, u32 each)
//! | links (48 bytes each) | the cluster name, last
//!
//! link: 0..4 node id | 4 link number | 5 state (0 not measured, 1 up, 2 down)
//!       6 family (4 or 6) | 7 reserved | 8..10 port | 10..12 reserved
//!       12..28 address (IPv4: 12..16, the rest zero) | 28..32 reserved
//!       32..40 frames received | 40..48 frames sent (u64::MAX: not counted)
//! ```
//!
//! Links are paged (`offset`), as `MEMBERSHIP_GET`'s members are, so a
//! reply stays within [`super::REPLY_BODY_MAX`] whatever the node list.
//! A link's state is only what the transport measured: a transport that
//! does not watch links says "not measured", never "up".

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::{
    check_exact, check_len, check_zero, get_bytes, get_u16, get_u32, get_u64, get_u8, put_bytes,
    put_u16, put_u32, put_u64, put_u8, put_zero, Field, MsgError,
};
use super::list::{sealed, Entry, List};
use crate::limits::NODES_MAX;
use crate::types::{NodeId, RingId};

macro_rules! status_counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The counters of a `STATUS` reply, in wire order (one u64 each):
        /// the engine's, the transport's and the handle layer's, summed
        /// the way an operator reads them.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct StatusCounters {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl StatusCounters {
            /// Every counter's name, in wire order.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($name), )*];

            /// The values in wire order.
            pub const fn to_array(&self) -> [u64; STATUS_COUNTERS] {
                [$( self.$name, )*]
            }

            /// From values in wire order.
            pub const fn from_array(a: [u64; STATUS_COUNTERS]) -> StatusCounters {
                let [$( $name, )*] = a;
                StatusCounters { $( $name, )* }
            }
        }
    };
}

status_counters! {
    /// Frames sent (one per destination).
    frames_tx,
    /// Frames received.
    frames_rx,
    /// Bytes of frames sent.
    bytes_tx,
    /// Bytes of frames received.
    bytes_rx,
    /// Messages retransmitted.
    retransmissions,
    /// Token visits (rotations seen by this node).
    token_rotations,
    /// Ring changes (new memberships installed).
    ring_changes,
    /// Tokens lost (in operational and recovery state).
    token_losses,
    /// Frames dropped by the engine (every reason).
    frames_dropped,
    /// Sends the kernel took without a user-space copy (`SendZc`, `SendMsgZc`).
    sends_zc,
    /// Sends the kernel copied (`WriteFixed`, `Send`, `SendMsg`, `sendmsg`).
    sends_copy,
    /// Zero-copy sends the kernel copied after all (its notification said so).
    sends_zc_copied,
    /// Frame bytes copied in user space by the transport.
    bytes_copied,
    /// `TRY_AGAIN` answers to sends.
    try_again,
    /// Handles evicted as slow consumers.
    evictions,
    /// Messages the node delivered up to its groups (once per message,
    /// however many local members received it).
    deliveries,
    /// Handles open now (a gauge).
    handles,
    /// IPC connections open now (a gauge; 0 on an embedded node).
    ipc_connections,
    /// IPC connections accepted since start.
    ipc_accepted,
    /// IPC connections cut for a malformed record or a lie.
    ipc_cut,
}

/// Counters in a `STATUS` reply.
pub const STATUS_COUNTERS: usize = StatusCounters::NAMES.len();
/// Most links one `STATUS` reply carries (the rest: ask from an offset).
pub const STATUS_LINKS_MAX: usize = 24;
/// Bytes of one link entry.
pub const STATUS_LINK_LEN: usize = 48;

mod field {
    use super::Field;
    pub(super) const NODE_ID: Field = 0..4;
    pub(super) const STATE: usize = 4;
    pub(super) const NAME_LEN: usize = 5;
    pub(super) const MEMBERS: usize = 6;
    pub(super) const LINKS: usize = 7;
    pub(super) const RING_REP: Field = 8..12;
    pub(super) const LINK_TOTAL: Field = 12..16;
    pub(super) const RING_SEQ: Field = 16..24;
    pub(super) const LINK_OFFSET: Field = 24..28;
    pub(super) const COUNTERS: Field = 28..32;
    pub(super) const BODY: usize = 32;
    // a link
    pub(super) const L_NODE: Field = 0..4;
    pub(super) const L_LINK: usize = 4;
    pub(super) const L_STATE: usize = 5;
    pub(super) const L_FAMILY: usize = 6;
    pub(super) const L_RESERVED_A: Field = 7..8;
    pub(super) const L_PORT: Field = 8..10;
    pub(super) const L_RESERVED_B: Field = 10..12;
    pub(super) const L_ADDR: Field = 12..28;
    pub(super) const L_ADDR_V4_REST: Field = 16..28;
    pub(super) const L_RESERVED_C: Field = 28..32;
    pub(super) const L_RX: Field = 32..40;
    pub(super) const L_TX: Field = 40..48;
}

/// The largest `STATUS` reply body.
pub const STATUS_BODY_MAX: usize =
    field::BODY + 8 * STATUS_COUNTERS + 4 * NODES_MAX + STATUS_LINKS_MAX * STATUS_LINK_LEN + 255;

static_assertions::const_assert_eq!(field::BODY % 8, 0);
static_assertions::const_assert!(STATUS_LINKS_MAX <= u8::MAX as usize);
static_assertions::const_assert!(NODES_MAX <= u8::MAX as usize);

/// The Totem state in a `STATUS` reply (`cpg_core::engine::State`, which
/// the IPC does not depend on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum StatusState {
    Operational = 1,
    Gather = 2,
    Commit = 3,
    Recovery = 4,
}

impl StatusState {
    /// Decode a state byte.
    pub const fn from_u8(v: u8) -> Option<StatusState> {
        Some(match v {
            1 => StatusState::Operational,
            2 => StatusState::Gather,
            3 => StatusState::Commit,
            4 => StatusState::Recovery,
            _ => return None,
        })
    }

    /// Its name, as `cpgtool status` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            StatusState::Operational => "operational",
            StatusState::Gather => "gather",
            StatusState::Commit => "commit",
            StatusState::Recovery => "recovery",
        }
    }
}

/// What the transport knows of a link's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// The transport does not watch this link (no heartbeat of its own):
    /// neither up nor down is claimed.
    NotMeasured = 0,
    /// Its heartbeats arrive.
    Up = 1,
    /// Its heartbeats stopped.
    Down = 2,
}

impl LinkState {
    /// Decode a state byte.
    pub const fn from_u8(v: u8) -> Option<LinkState> {
        Some(match v {
            0 => LinkState::NotMeasured,
            1 => LinkState::Up,
            2 => LinkState::Down,
            _ => return None,
        })
    }

    /// Its name, as `cpgtool status` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            LinkState::NotMeasured => "not measured",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// One link to one node: its address and what is known of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLink {
    /// The node at the other end (this node's own entry is its own address).
    pub nodeid: NodeId,
    /// The link number (0 while a node has one address).
    pub link: u8,
    /// Up, down, or not measured.
    pub state: LinkState,
    /// The node's address on this link.
    pub addr: SocketAddr,
    /// Frames received from it on this link, if counted.
    pub frames_rx: Option<u64>,
    /// Frames sent to it on this link, if counted.
    pub frames_tx: Option<u64>,
}

impl sealed::Sealed for StatusLink {}

fn opt(v: u64) -> Option<u64> {
    (v != u64::MAX).then_some(v)
}

impl Entry for StatusLink {
    const LEN: usize = STATUS_LINK_LEN;
    fn read(b: &[u8]) -> Result<StatusLink, MsgError> {
        check_zero(b, field::L_RESERVED_A)?;
        check_zero(b, field::L_RESERVED_B)?;
        check_zero(b, field::L_RESERVED_C)?;
        let nodeid = get_u32(b, field::L_NODE);
        let state = LinkState::from_u8(get_u8(b, field::L_STATE)).ok_or(MsgError::Malformed)?;
        let ip = match get_u8(b, field::L_FAMILY) {
            4 => {
                check_zero(b, field::L_ADDR_V4_REST)?;
                let a: [u8; 16] = get_bytes(b, field::L_ADDR);
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            }
            6 => IpAddr::V6(Ipv6Addr::from(get_bytes::<16>(b, field::L_ADDR))),
            _ => return Err(MsgError::Malformed),
        };
        if nodeid == 0 {
            return Err(MsgError::Malformed);
        }
        Ok(StatusLink {
            nodeid,
            link: get_u8(b, field::L_LINK),
            state,
            addr: SocketAddr::new(ip, get_u16(b, field::L_PORT)),
            frames_rx: opt(get_u64(b, field::L_RX)),
            frames_tx: opt(get_u64(b, field::L_TX)),
        })
    }
    fn write(&self, out: &mut [u8]) {
        put_u32(out, field::L_NODE, self.nodeid);
        put_u8(out, field::L_LINK, self.link);
        put_u8(out, field::L_STATE, self.state as u8);
        put_zero(out, field::L_RESERVED_A);
        put_u16(out, field::L_PORT, self.addr.port());
        put_zero(out, field::L_RESERVED_B);
        match self.addr.ip() {
            IpAddr::V4(a) => {
                put_u8(out, field::L_FAMILY, 4);
                put_zero(out, field::L_ADDR);
                put_bytes(out, 12..16, &a.octets());
            }
            IpAddr::V6(a) => {
                put_u8(out, field::L_FAMILY, 6);
                put_bytes(out, field::L_ADDR, &a.octets());
            }
        }
        put_zero(out, field::L_RESERVED_C);
        put_u64(out, field::L_RX, self.frames_rx.unwrap_or(u64::MAX));
        put_u64(out, field::L_TX, self.frames_tx.unwrap_or(u64::MAX));
    }
    fn is_valid(&self) -> bool {
        // u64::MAX is the wire's "not counted": a count of it would read back as None
        self.nodeid != 0 && self.frames_rx != Some(u64::MAX) && self.frames_tx != Some(u64::MAX)
    }
}

/// A `STATUS` reply's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusReply<'a> {
    /// This node.
    pub node_id: NodeId,
    /// Its Totem state.
    pub state: StatusState,
    /// Its ring.
    pub ring: RingId,
    /// The cluster name (at most 255 bytes).
    pub cluster_name: &'a [u8],
    /// The ring's members (at most 64).
    pub members: List<'a, NodeId>,
    /// Links in all (every node of the node list, each of its links).
    pub link_total: u32,
    /// Index of the first link here.
    pub link_offset: u32,
    /// Links `link_offset..link_offset + links.len()` (at most 24).
    pub links: List<'a, StatusLink>,
    /// The counters.
    pub counters: StatusCounters,
}

impl StatusReply<'_> {
    /// Bytes of the body.
    pub fn wire_len(&self) -> usize {
        (field::BODY + 8 * STATUS_COUNTERS)
            .saturating_add(self.members.wire_len())
            .saturating_add(self.links.wire_len())
            .saturating_add(self.cluster_name.len())
    }

    /// Whether [`StatusReply::parse`] would take this value back.
    pub fn is_valid(&self) -> bool {
        self.node_id != 0
            && self.cluster_name.len() <= 255
            && self.members.len() <= NODES_MAX
            && self.members.is_valid()
            && self.links.len() <= STATUS_LINKS_MAX
            && self.links.is_valid()
            && (self.links.is_empty()
                || u64::from(self.link_offset) + self.links.len() as u64
                    <= u64::from(self.link_total))
    }

    /// Write the body into `out` (exactly [`StatusReply::wire_len`] bytes,
    /// checked by the caller, as is [`StatusReply::is_valid`]).
    pub(super) fn emit(&self, out: &mut [u8]) {
        put_u32(out, field::NODE_ID, self.node_id);
        put_u8(out, field::STATE, self.state as u8);
        // ≤ 255, 64 and 24 (is_valid)
        put_u8(out, field::NAME_LEN, self.cluster_name.len() as u8);
        put_u8(out, field::MEMBERS, self.members.len() as u8);
        put_u8(out, field::LINKS, self.links.len() as u8);
        put_u32(out, field::RING_REP, self.ring.rep);
        put_u32(out, field::LINK_TOTAL, self.link_total);
        put_u64(out, field::RING_SEQ, self.ring.seq);
        put_u32(out, field::LINK_OFFSET, self.link_offset);
        put_u32(out, field::COUNTERS, STATUS_COUNTERS as u32);
        let mut at = field::BODY;
        for v in self.counters.to_array() {
            put_u64(out, at..at + 8, v);
            at += 8;
        }
        let m = self.members.wire_len();
        self.members
            .emit(out.get_mut(at..at + m).unwrap_or(&mut []));
        at += m;
        let l = self.links.wire_len();
        self.links.emit(out.get_mut(at..at + l).unwrap_or(&mut []));
        at += l;
        put_bytes(out, at..at + self.cluster_name.len(), self.cluster_name);
    }

    /// Parse a reply body.
    ///
    /// # Errors
    /// [`MsgError`]: truncated, a length that disagrees with the counts,
    /// another number of counters, a count above its limit, a state,
    /// family or node id out of range, a reserved byte set. Never panics.
    pub fn parse(b: &[u8]) -> Result<StatusReply<'_>, MsgError> {
        check_len(b, field::BODY)?;
        let node_id = get_u32(b, field::NODE_ID);
        let state = StatusState::from_u8(get_u8(b, field::STATE)).ok_or(MsgError::Malformed)?;
        if node_id == 0 {
            return Err(MsgError::Malformed);
        }
        if get_u32(b, field::COUNTERS) as usize != STATUS_COUNTERS {
            return Err(MsgError::Malformed);
        }
        let name_len = usize::from(get_u8(b, field::NAME_LEN));
        let members = usize::from(get_u8(b, field::MEMBERS));
        let links = usize::from(get_u8(b, field::LINKS));
        if members > NODES_MAX || links > STATUS_LINKS_MAX {
            return Err(MsgError::TooManyEntries);
        }
        let m_at = field::BODY + 8 * STATUS_COUNTERS;
        let l_at = m_at + 4 * members;
        let n_at = l_at + STATUS_LINK_LEN * links;
        check_exact(b, n_at + name_len)?;
        let mut values = [0u64; STATUS_COUNTERS];
        for (i, v) in values.iter_mut().enumerate() {
            let at = field::BODY + 8 * i;
            *v = get_u64(b, at..at + 8);
        }
        let link_total = get_u32(b, field::LINK_TOTAL);
        let link_offset = get_u32(b, field::LINK_OFFSET);
        if links > 0 && u64::from(link_offset) + links as u64 > u64::from(link_total) {
            return Err(MsgError::Malformed);
        }
        Ok(StatusReply {
            node_id,
            state,
            ring: RingId {
                rep: get_u32(b, field::RING_REP),
                seq: get_u64(b, field::RING_SEQ),
            },
            cluster_name: b.get(n_at..).unwrap_or(&[]),
            members: List::parse(b.get(m_at..l_at).unwrap_or(&[]), members)?,
            link_total,
            link_offset,
            links: List::parse(b.get(l_at..n_at).unwrap_or(&[]), links)?,
            counters: StatusCounters::from_array(values),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> [StatusLink; 2] {
        [
            StatusLink {
                nodeid: 1,
                link: 0,
                state: LinkState::NotMeasured,
                addr: "127.0.0.1:5405".parse().unwrap(),
                frames_rx: None,
                frames_tx: Some(7),
            },
            StatusLink {
                nodeid: 2,
                link: 1,
                state: LinkState::Up,
                addr: "[fd00::2]:5406".parse().unwrap(),
                frames_rx: Some(3),
                frames_tx: None,
            },
        ]
    }

    fn sample<'a>(links: &'a [StatusLink], members: &'a [NodeId]) -> StatusReply<'a> {
        let mut c = [0u64; STATUS_COUNTERS];
        for (i, v) in c.iter_mut().enumerate() {
            *v = i as u64 * 1000 + 1;
        }
        StatusReply {
            node_id: 1,
            state: StatusState::Operational,
            ring: RingId { rep: 1, seq: 0x1f },
            cluster_name: b"demo",
            members: List::from_slice(members),
            link_total: 2,
            link_offset: 0,
            links: List::from_slice(links),
            counters: StatusCounters::from_array(c),
        }
    }

    fn emitted(r: &StatusReply<'_>) -> std::vec::Vec<u8> {
        assert!(r.is_valid());
        let mut out = std::vec![0u8; r.wire_len()];
        r.emit(&mut out);
        out
    }

    #[test]
    fn round_trip() {
        let l = links();
        let r = sample(&l, &[1, 2]);
        let bytes = emitted(&r);
        assert!(bytes.len() <= STATUS_BODY_MAX);
        let back = StatusReply::parse(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.counters.retransmissions, 4001);
        assert_eq!(back.links.get(1).unwrap().addr.port(), 5406);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let l = links();
        let bytes = emitted(&sample(&l, &[1, 2]));
        for n in 0..bytes.len() {
            assert!(StatusReply::parse(&bytes[..n]).is_err(), "{n}");
        }
        let err = StatusReply::parse(&bytes[..5]);
        assert_eq!(
            err,
            Err(MsgError::Truncated {
                needed: field::BODY,
                got: 5
            })
        );
    }

    #[test]
    fn malformed_fields_are_typed_errors() {
        let l = links();
        let good = emitted(&sample(&l, &[1, 2]));
        let with = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            b
        };
        // state, node id 0, counter count, too many members / links
        assert_eq!(
            StatusReply::parse(&with(field::STATE, 9)),
            Err(MsgError::Malformed)
        );
        let mut zero_node = good.clone();
        zero_node[0..4].fill(0);
        assert_eq!(StatusReply::parse(&zero_node), Err(MsgError::Malformed));
        assert_eq!(
            StatusReply::parse(&with(field::COUNTERS.start, 3)),
            Err(MsgError::Malformed)
        );
        assert_eq!(
            StatusReply::parse(&with(field::MEMBERS, 65)),
            Err(MsgError::TooManyEntries)
        );
        assert_eq!(
            StatusReply::parse(&with(field::LINKS, 25)),
            Err(MsgError::TooManyEntries)
        );
        // a link's family, state, reserved byte
        let l0 = field::BODY + 8 * STATUS_COUNTERS + 8;
        assert_eq!(
            StatusReply::parse(&with(l0 + field::L_FAMILY, 5)),
            Err(MsgError::Malformed)
        );
        assert_eq!(
            StatusReply::parse(&with(l0 + field::L_STATE, 3)),
            Err(MsgError::Malformed)
        );
        assert_eq!(
            StatusReply::parse(&with(l0 + 7, 1)),
            Err(MsgError::Reserved)
        );
        // a longer body than the counts say
        let mut long = good.clone();
        long.push(0);
        assert_eq!(StatusReply::parse(&long), Err(MsgError::LengthMismatch));
        // a page past the total
        let mut past = good.clone();
        past[field::LINK_OFFSET].fill(0);
        past[field::LINK_OFFSET.start] = 1;
        assert_eq!(StatusReply::parse(&past), Err(MsgError::Malformed));
    }

    #[test]
    fn largest_reply_fits_its_bound() {
        let link = links()[1];
        let ls = [link; STATUS_LINKS_MAX];
        let ms: std::vec::Vec<NodeId> = (1..=NODES_MAX as u32).collect();
        let name = [b'x'; 255];
        let mut r = sample(&ls, &ms);
        r.cluster_name = &name;
        r.link_total = STATUS_LINKS_MAX as u32;
        assert_eq!(r.wire_len(), STATUS_BODY_MAX);
        assert_eq!(StatusReply::parse(&emitted(&r)), Ok(r));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2400)) {
            let _ = StatusReply::parse(&b);
        }
    }
}

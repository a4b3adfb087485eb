//! The local IPC between `cpgd` and its client processes: the formats and
//! the bookkeeping, with no memory map, no atomic and no syscall.
//!
//! `docs/spec/ipc.md` is the protocol; this module is the part of it that
//! is pure. A Unix stream socket carries the setup ([`setup`]: `Hello`,
//! then `Welcome` with three file descriptors, or `Refused`) and nothing
//! else; data moves through two shared-memory rings per connection, a
//! request ring (client → daemon, [`request`]) and an event ring (daemon →
//! client, [`event`]), each single-producer single-consumer, in one memfd
//! with the connection's zero-copy region ([`header::ConnLayout`]).
//!
//! | module | owns | guarantees |
//! |---|---|---|
//! | [`header`] | the header page of a ring region (magic, version, capacity, the index and flag words, one cache line each) and the layout of a connection's memfd | offsets pinned at compile time |
//! | [`ring`] | record framing and index bookkeeping: room, `reserve` (PAD at the end), reading the next record with full validation, `Producer` / `Consumer` | every impossible index or header is a typed [`ring::Corrupt`], never a panic or an out-of-range position |
//! | [`wake`] | the wake-up protocol's flag values, with the protocol and its memory orderings in the docs and a store-buffer model in the tests | a consumer that sleeps is woken by the next publish; no syscall per message |
//! | [`setup`], [`request`], [`event`] | the message catalogue: typed views, `emit` into caller buffers | parse validates kind, flags, reserved bytes, lengths, counts and values; emit refuses what parse would refuse |
//! | [`pieces`] | a message larger than one record, sent as a first piece and continuations | pieces add up to the announced length, or a typed error |
//!
//! What the std side does (`cpgd`, the client library): it maps the memfd,
//! reads and writes the four words of each ring header with atomics
//! (orderings in [`wake`]), copies a record out of shared memory before it
//! trusts it, and calls these functions for everything else.
//!
//! Without `alloc`: lists in messages are views over checked bytes (after
//! parse) or over the caller's slices (to emit), never `Vec`s.
//!
//! # Example
//!
//! A request through a ring, both sides (a slice stands for the shared
//! data area and plain values for the shared indices; the std side loads
//! and stores them with the orderings of [`wake`]):
//!
//! ```
//! use cpg_core::ipc::{Consumer, Direction, Message, Op, Producer, Request, Ring};
//! use cpg_core::GroupName;
//!
//! let ring = Ring::new(cpg_core::ipc::RING_CAPACITY_MIN).unwrap();
//! let mut data = vec![0u8; ring.capacity()];
//! let (mut client, mut daemon) = (Producer::new(ring), Consumer::new(ring));
//!
//! // Client: reserve, emit, publish (then the wake-up check).
//! let join = Request { req_id: 1, op: Op::Join { group: GroupName::new(b"cib").unwrap() } };
//! let res = client.reserve(join.body_len()).unwrap();
//! res.emit(&mut data, &join).unwrap();
//! let head = client.publish();
//!
//! // Daemon: take the head, read the record, parse a private copy of it.
//! daemon.observe_head(head).unwrap();
//! let (rec, body) = daemon.read(&data, Direction::Requests).unwrap().unwrap();
//! let copy = body.to_vec();
//! assert_eq!(Request::parse(rec.kind, rec.flags, &copy), Ok(join));
//! assert_eq!(daemon.read(&data, Direction::Requests), Ok(None));
//!
//! // Daemon: done with the bodies, release; the client takes the tail.
//! client.observe_tail(daemon.release()).unwrap();
//! assert_eq!(client.free(), ring.capacity());
//! ```
//!
//! # References
//! `docs/spec/ipc.md`; `docs/spec/cpg-api.md` §4 (the functions served),
//! §11 (Corosync's libqb IPC, which this replaces).

mod codec;
pub mod event;
pub mod header;
mod list;
pub mod pieces;
pub mod request;
pub mod ring;
pub mod setup;
pub mod status;
pub mod wake;

pub use codec::{emit_record, parse_record, record_bytes_len, Message, MsgError};
pub use event::{ConfchgParts, DeliverHead, Event, EventKind, Reply, ReplyBody};
pub use header::{ConnLayout, LayoutError};
pub use list::{Entry, IterEntries, IterEntriesIter, IterEntry, List, ListIter};
pub use pieces::{Assembly, PieceError, Split};
pub use request::{IterScope, Op, PieceHead, Request, RequestKind};
pub use ring::{
    Consumer, Corrupt, Pad, Producer, Record, RecordHeader, Reservation, Ring, RingError,
};
pub use setup::{Hello, Model, Setup, SetupKind, Welcome};
pub use status::{
    LinkState, StatusCounters, StatusLink, StatusReply, StatusState, STATUS_COUNTERS,
    STATUS_LINKS_MAX,
};

/// The IPC version this build speaks (in `Hello` and the ring headers).
pub const VERSION: u16 = 2;

/// `Hello`'s magic: `"CPGD"` in little-endian byte order.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"CPGD");

/// Bytes of a page: the ring header page, the alignment of every region.
pub const PAGE_LEN: usize = 4096;

/// Smallest ring capacity (bytes of data, a power of two).
pub const RING_CAPACITY_MIN: usize = 1 << 16;
/// Largest ring capacity.
pub const RING_CAPACITY_MAX: usize = 1 << 30;
/// The capacity a daemon offers unless configured otherwise (each ring).
pub const RING_CAPACITY_DEFAULT: usize = 1 << 20;

/// Largest zero-copy region of one connection (bytes; a multiple of
/// [`PAGE_LEN`], 0 for none).
pub const ZC_REGION_MAX: u64 = 1 << 40;

/// Most entries one `IterationNext` reply carries.
pub const ITERATION_BATCH_MAX: usize = 16;

/// Largest body of a `Reply` (the largest batch of iteration entries with
/// the longest group names).
pub const REPLY_BODY_MAX: usize = event::reply_body_max();

/// Bytes of the event ring the daemon keeps free for replies and the
/// final `Evicted`: it writes an event only if that much stays free
/// afterwards, so a reply never waits behind events the client has not
/// dispatched. Two of the largest reply records: a reply that does not fit
/// before the end of the ring needs a PAD as long as itself, at most.
pub const EVENT_RESERVE: usize = 2 * ring::record_len_const(REPLY_BODY_MAX);

/// Which ring a record travels on: each accepts its own kinds (and PAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The request ring, client → daemon ([`RequestKind`]).
    Requests,
    /// The event ring, daemon → client ([`EventKind`]).
    Events,
    /// The delivery ring, daemon → client: message bytes only
    /// ([`DELIVERY_DATA`]), each announced by a `DELIVER_REF` event.
    Deliveries,
}

/// The one record kind of the delivery ring: a message's bytes.
pub const DELIVERY_DATA: u16 = 0x0401;

impl Direction {
    /// Whether a data record of `kind` may travel this way (PAD is not a
    /// data record: [`ring`] handles it).
    pub const fn accepts(self, kind: u16) -> bool {
        match self {
            Direction::Requests => RequestKind::from_u16(kind).is_some(),
            Direction::Events => EventKind::from_u16(kind).is_some(),
            Direction::Deliveries => kind == DELIVERY_DATA,
        }
    }

    /// The value in a ring header's direction word.
    pub const fn code(self) -> u16 {
        match self {
            Direction::Requests => 1,
            Direction::Events => 2,
            Direction::Deliveries => 3,
        }
    }

    /// Decode a direction word.
    pub const fn from_code(code: u16) -> Option<Direction> {
        match code {
            1 => Some(Direction::Requests),
            2 => Some(Direction::Events),
            3 => Some(Direction::Deliveries),
            _ => None,
        }
    }
}

// Every fixed-size message fits one record of the smallest ring.
static_assertions::const_assert!(REPLY_BODY_MAX <= RING_CAPACITY_MIN / 4);
static_assertions::const_assert!(event::CONFCHG_BODY_MAX <= RING_CAPACITY_MIN / 4);
static_assertions::const_assert!(event::TOTEM_CONFCHG_BODY_MAX <= RING_CAPACITY_MIN / 4);
static_assertions::const_assert!(request::REQUEST_FIXED_MAX <= RING_CAPACITY_MIN / 4);
// The reserve leaves most of the smallest ring to events.
static_assertions::const_assert!(EVENT_RESERVE <= RING_CAPACITY_MIN / 8);
static_assertions::const_assert!(RING_CAPACITY_MIN.is_power_of_two());
static_assertions::const_assert!(RING_CAPACITY_MAX.is_power_of_two());
static_assertions::const_assert!(RING_CAPACITY_DEFAULT.is_power_of_two());
static_assertions::const_assert!(RING_CAPACITY_MIN % PAGE_LEN == 0);
// Ring positions and body lengths fit a u32 (and a 32-bit usize).
static_assertions::const_assert!(RING_CAPACITY_MAX <= u32::MAX as usize);

/// Proptest strategies shared by the message tests.
#[cfg(test)]
mod strategies {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use crate::types::{GroupName, Guarantee, MemberAddr, Reason};

    pub(super) fn group_name() -> impl Strategy<Value = GroupName> {
        vec(any::<u8>(), 0..=crate::limits::GROUP_NAME_MAX)
            .prop_map(|v| GroupName::new(&v).unwrap())
    }

    pub(super) fn guarantee() -> impl Strategy<Value = Guarantee> {
        (0u8..=3).prop_map(|g| Guarantee::from_u8(g).unwrap())
    }

    pub(super) fn member() -> impl Strategy<Value = MemberAddr> {
        (1..=u32::MAX, any::<u32>()).prop_map(|(nodeid, pid)| MemberAddr { nodeid, pid })
    }

    pub(super) fn change(
        reasons: &'static [Reason],
    ) -> impl Strategy<Value = (MemberAddr, Reason)> {
        (member(), proptest::sample::select(reasons))
    }

    /// Bytes that live for the rest of the test run (borrowed pieces and lists).
    pub(super) fn leak<T>(v: Vec<T>) -> &'static [T] {
        Box::leak(v.into_boxed_slice())
    }
}

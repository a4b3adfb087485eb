//! Connection setup, over the Unix stream socket (not the rings): the
//! client's `Hello`, the daemon's `Welcome` (with three file descriptors
//! alongside) or `Refused`.
//!
//! Each message is one record on the stream, framed like a ring record
//! (8-byte header, body padded to 8: [`super::emit_record`],
//! [`super::parse_record`]). After `Welcome` the socket carries no record:
//! it stays open for the life of the connection, its hang-up is how each
//! side learns that the other is gone, and it is the fd an application
//! polls (`cpg_fd_get`), made readable by single doorbell bytes
//! ([`super::wake`], "The doorbell").
//!
//! ```text
//! HELLO    0x0101  0..4 magic "CPGD" | 4..6 version | 6..8 options (bit 0: totem callback)
//!                  8..12 model (1) | 12..16 model flags
//! WELCOME  0x0102  0..2 version | 2..4 reserved | 4..8 node id | 8..16 connection id
//!                  16..20 request ring capacity | 20..24 event ring capacity | 24..32 zc region bytes
//!                  32..36 max message bytes | 36..40 delivery ring capacity (0: none)
//!                  + SCM_RIGHTS: [memfd, daemon's eventfd, client's eventfd]
//! REFUSED  0x0103  0..4 cs_error
//! ```
//!
//! The connecting process's pid, uid and gid come from `SO_PEERCRED`, never
//! from the message: a client cannot claim another process's identity.

use super::codec::{
    check_exact, check_flags, check_zero, get_error, get_u16, get_u32, get_u64, out_buf, put_u16,
    put_u32, put_u64, put_zero, Message, MsgError,
};
use super::header::ConnLayout;
use super::ring::record_len_const;
use super::{HELLO_MAGIC, VERSION};
use crate::types::{CsError, NodeId};

/// Kinds of setup records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SetupKind {
    /// [`Hello`].
    Hello = 0x0101,
    /// [`Welcome`].
    Welcome = 0x0102,
    /// [`Setup::Refused`].
    Refused = 0x0103,
}

impl SetupKind {
    /// Decode a record kind.
    pub const fn from_u16(k: u16) -> Option<SetupKind> {
        match k {
            0x0101 => Some(SetupKind::Hello),
            0x0102 => Some(SetupKind::Welcome),
            0x0103 => Some(SetupKind::Refused),
            _ => None,
        }
    }
}

mod hello {
    use crate::ipc::codec::Field;
    pub(super) const MAGIC: Field = 0..4;
    pub(super) const VERSION: Field = 4..6;
    pub(super) const OPTIONS: Field = 6..8;
    pub(super) const MODEL: Field = 8..12;
    pub(super) const MODEL_FLAGS: Field = 12..16;
    pub(super) const LEN: usize = 16;
}

mod welcome {
    use crate::ipc::codec::Field;
    pub(super) const VERSION: Field = 0..2;
    pub(super) const RESERVED_A: Field = 2..4;
    pub(super) const NODE_ID: Field = 4..8;
    pub(super) const CONN_ID: Field = 8..16;
    pub(super) const REQUEST_CAPACITY: Field = 16..20;
    pub(super) const EVENT_CAPACITY: Field = 20..24;
    pub(super) const ZC_LEN: Field = 24..32;
    pub(super) const MESSAGE_MAX: Field = 32..36;
    pub(super) const DELIVERY_CAPACITY: Field = 36..40;
    pub(super) const LEN: usize = 40;
}

mod refused {
    use crate::ipc::codec::Field;
    pub(super) const CS_ERROR: Field = 0..4;
    pub(super) const LEN: usize = 4;
}

/// Bytes of the largest setup body.
pub const SETUP_BODY_MAX: usize = welcome::LEN;
/// Bytes of the largest setup record: a reader of the socket needs no more.
pub const SETUP_RECORD_MAX: usize = record_len_const(SETUP_BODY_MAX);

/// File descriptors that travel with `Welcome` (`SCM_RIGHTS`), in order.
pub const WELCOME_FDS: usize = 3;
/// Index of the memfd (both rings and the zero-copy region).
pub const FD_MEMFD: usize = 0;
/// Index of the daemon's eventfd: the client signals it (request ring
/// data, event ring room).
pub const FD_DAEMON_WAKE: usize = 1;
/// Index of the client's eventfd: the daemon signals it (event ring data,
/// request ring room) for the client's sleeping threads. (The application
/// polls the socket: [`super::wake`], "Which eventfd, and the doorbell".)
pub const FD_CLIENT_WAKE: usize = 2;

/// `cpg_model_t` with its flags: what the handle asked for at
/// `cpg_model_initialize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Model {
    /// `CPG_MODEL_V1`, no flags.
    V1,
    /// `CPG_MODEL_V1` with `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`.
    V1InitialTotemConfchg,
}

/// `CPG_MODEL_V1`.
const MODEL_V1: u32 = 1;
/// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`.
const FLAG_INITIAL_TOTEM_CONF: u32 = 1;
/// `Hello` option: the handle has a totem confchg callback.
const OPTION_TOTEM: u16 = 1;

/// The client's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The handle's model.
    pub model: Model,
    /// The handle has a totem confchg callback: the daemon sends it every
    /// `TOTEM_CONFCHG` (without one, only the initial one its model asks
    /// for), so every event the daemon writes is one the client
    /// dispatches (as an embedded handle's).
    pub totem: bool,
}

/// The daemon's answer: the connection exists. The three fds travel in the
/// same `sendmsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Welcome {
    /// This node's id (`cpg_local_get` can be answered from it).
    pub node_id: NodeId,
    /// The daemon's id for this connection (logs; the C handle may use it).
    pub conn_id: u64,
    /// Data bytes of the request ring.
    pub request_capacity: u32,
    /// Data bytes of the event ring.
    pub event_capacity: u32,
    /// Bytes of the zero-copy region (0: no zero-copy buffers).
    pub zc_len: u64,
    /// The largest message `mcast` accepts (above it: TOO_BIG).
    pub message_max: u32,
    /// Data bytes of the delivery ring (0: none, every message travels in
    /// the event ring).
    pub delivery_capacity: u32,
}

impl Welcome {
    /// Where everything lies in the memfd.
    ///
    /// # Errors
    /// Never for a `Welcome` that parsed; a [`super::LayoutError`] for one
    /// built with bad sizes.
    pub const fn layout(&self) -> Result<ConnLayout, super::LayoutError> {
        ConnLayout::new(
            self.request_capacity as usize,
            self.event_capacity as usize,
            self.zc_len,
            self.delivery_capacity as usize,
        )
    }
}

/// A setup record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    /// Client → daemon.
    Hello(Hello),
    /// Daemon → client: accepted.
    Welcome(Welcome),
    /// Daemon → client: not accepted (`ACCESS`, `VERSION`, `TRY_AGAIN`
    /// while starting, `NO_RESOURCES` at the connection limit,
    /// `INVALID_PARAM`); the daemon closes the socket after it.
    Refused(CsError),
}

impl Message<'_> for Setup {
    const BODY_MAX: usize = SETUP_BODY_MAX;

    fn kind(&self) -> u16 {
        (match self {
            Setup::Hello(_) => SetupKind::Hello,
            Setup::Welcome(_) => SetupKind::Welcome,
            Setup::Refused(_) => SetupKind::Refused,
        }) as u16
    }

    fn flags(&self) -> u16 {
        0
    }

    fn body_len(&self) -> usize {
        match self {
            Setup::Hello(_) => hello::LEN,
            Setup::Welcome(_) => welcome::LEN,
            Setup::Refused(_) => refused::LEN,
        }
    }

    fn emit_body(&self, buf: &mut [u8]) -> Result<usize, MsgError> {
        let len = self.body_len();
        let out = out_buf(buf, len)?;
        match self {
            Setup::Hello(h) => {
                put_u32(out, hello::MAGIC, HELLO_MAGIC);
                put_u16(out, hello::VERSION, VERSION);
                put_u16(out, hello::OPTIONS, if h.totem { OPTION_TOTEM } else { 0 });
                put_u32(out, hello::MODEL, MODEL_V1);
                let flags = match h.model {
                    Model::V1 => 0,
                    Model::V1InitialTotemConfchg => FLAG_INITIAL_TOTEM_CONF,
                };
                put_u32(out, hello::MODEL_FLAGS, flags);
            }
            Setup::Welcome(w) => {
                if w.node_id == 0 || w.message_max == 0 || w.layout().is_err() {
                    return Err(MsgError::Malformed);
                }
                put_u16(out, welcome::VERSION, VERSION);
                put_zero(out, welcome::RESERVED_A);
                put_u32(out, welcome::NODE_ID, w.node_id);
                put_u64(out, welcome::CONN_ID, w.conn_id);
                put_u32(out, welcome::REQUEST_CAPACITY, w.request_capacity);
                put_u32(out, welcome::EVENT_CAPACITY, w.event_capacity);
                put_u64(out, welcome::ZC_LEN, w.zc_len);
                put_u32(out, welcome::MESSAGE_MAX, w.message_max);
                put_u32(out, welcome::DELIVERY_CAPACITY, w.delivery_capacity);
            }
            Setup::Refused(e) => put_u32(out, refused::CS_ERROR, e.code()),
        }
        Ok(len)
    }

    /// # Errors
    /// [`MsgError::UnknownKind`], [`MsgError::BadFlags`] (setup records
    /// have none), [`MsgError::BadMagic`], [`MsgError::UnsupportedVersion`]
    /// (checked right after the magic, so any future `Hello` gets a
    /// `Refused` with `VERSION`), [`MsgError::Reserved`],
    /// [`MsgError::Malformed`] (another model, undefined model flags, node
    /// id 0, bad ring or region sizes, max message 0, an unknown or OK
    /// status in `Refused`), length errors.
    fn parse(kind: u16, flags: u16, body: &[u8]) -> Result<Setup, MsgError> {
        let kind = SetupKind::from_u16(kind).ok_or(MsgError::UnknownKind(kind))?;
        check_flags(flags, 0)?;
        match kind {
            SetupKind::Hello => {
                super::codec::check_len(body, hello::VERSION.end)?;
                if get_u32(body, hello::MAGIC) != HELLO_MAGIC {
                    return Err(MsgError::BadMagic);
                }
                let version = get_u16(body, hello::VERSION);
                if version != VERSION {
                    return Err(MsgError::UnsupportedVersion(version));
                }
                check_exact(body, hello::LEN)?;
                let options = get_u16(body, hello::OPTIONS);
                if options & !OPTION_TOTEM != 0 {
                    return Err(MsgError::Reserved);
                }
                if get_u32(body, hello::MODEL) != MODEL_V1 {
                    return Err(MsgError::Malformed);
                }
                let model = match get_u32(body, hello::MODEL_FLAGS) {
                    0 => Model::V1,
                    FLAG_INITIAL_TOTEM_CONF => Model::V1InitialTotemConfchg,
                    _ => return Err(MsgError::Malformed),
                };
                Ok(Setup::Hello(Hello {
                    model,
                    totem: options & OPTION_TOTEM != 0,
                }))
            }
            SetupKind::Welcome => {
                check_exact(body, welcome::LEN)?;
                let version = get_u16(body, welcome::VERSION);
                if version != VERSION {
                    return Err(MsgError::UnsupportedVersion(version));
                }
                check_zero(body, welcome::RESERVED_A)?;
                let w = Welcome {
                    node_id: get_u32(body, welcome::NODE_ID),
                    conn_id: get_u64(body, welcome::CONN_ID),
                    request_capacity: get_u32(body, welcome::REQUEST_CAPACITY),
                    event_capacity: get_u32(body, welcome::EVENT_CAPACITY),
                    zc_len: get_u64(body, welcome::ZC_LEN),
                    message_max: get_u32(body, welcome::MESSAGE_MAX),
                    delivery_capacity: get_u32(body, welcome::DELIVERY_CAPACITY),
                };
                if w.node_id == 0 || w.message_max == 0 || w.layout().is_err() {
                    return Err(MsgError::Malformed);
                }
                Ok(Setup::Welcome(w))
            }
            SetupKind::Refused => {
                check_exact(body, refused::LEN)?;
                Ok(Setup::Refused(get_error(body, refused::CS_ERROR)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ipc::{emit_record, parse_record, record_bytes_len, RING_CAPACITY_MIN};

    /// HELLO record: model V1 with the initial totem confchg, a totem callback.
    static HELLO_BYTES: [u8; 24] = [
        16, 0, 0, 0, 0x01, 0x01, 0, 0, // header
        b'C', b'P', b'G', b'D', 2, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0,
    ];
    /// WELCOME record: node 3, connection 0x0102030405060708, rings of 64
    /// KiB and 1 MiB, 2 pages of zero-copy region, 64 MiB messages.
    static WELCOME_BYTES: [u8; 48] = [
        40, 0, 0, 0, 0x02, 0x01, 0, 0, // header
        2, 0, 0, 0, 3, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, //
        0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, //
        0, 0, 0, 4, 0, 0, 0x10, 0,
    ];
    /// REFUSED record: ACCESS, with its padding.
    static REFUSED_BYTES: [u8; 16] = [4, 0, 0, 0, 0x03, 0x01, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0];

    fn welcome() -> Welcome {
        Welcome {
            node_id: 3,
            conn_id: 0x0102_0304_0506_0708,
            request_capacity: 1 << 16,
            event_capacity: 1 << 20,
            zc_len: 2 * 4096,
            message_max: 64 << 20,
            delivery_capacity: 1 << 20,
        }
    }

    fn fixtures() -> [(&'static [u8], Setup); 3] {
        [
            (
                &HELLO_BYTES,
                Setup::Hello(Hello {
                    model: Model::V1InitialTotemConfchg,
                    totem: true,
                }),
            ),
            (&WELCOME_BYTES, Setup::Welcome(welcome())),
            (&REFUSED_BYTES, Setup::Refused(CsError::Access)),
        ]
    }

    #[test]
    fn deconstruct() {
        for (bytes, msg) in fixtures() {
            assert_eq!(parse_record::<Setup>(bytes), Ok((msg, bytes.len())));
        }
    }

    #[test]
    fn construct() {
        for (bytes, msg) in fixtures() {
            assert_eq!(record_bytes_len(&msg), bytes.len());
            let mut buf = vec![0xEE; bytes.len()];
            assert_eq!(emit_record(&msg, &mut buf), Ok(bytes.len()));
            assert_eq!(buf, bytes);
            assert_eq!(
                emit_record(&msg, &mut buf[..bytes.len() - 1]),
                Err(MsgError::BufferTooSmall)
            );
            assert!(bytes.len() <= SETUP_RECORD_MAX);
        }
    }

    #[test]
    fn round_trip_and_prefixes() {
        for (bytes, msg) in fixtures() {
            let mut buf = vec![0; bytes.len()];
            emit_record(&msg, &mut buf).unwrap();
            assert_eq!(parse_record::<Setup>(&buf), Ok((msg, bytes.len())));
            for n in 0..bytes.len() {
                assert!(
                    matches!(
                        parse_record::<Setup>(&bytes[..n]),
                        Err(MsgError::Truncated { .. })
                    ),
                    "prefix {n}"
                );
            }
            // A header announcing a long body is refused at once.
            let mut long = bytes[..8].to_vec();
            long[..4].copy_from_slice(&41u32.to_le_bytes());
            assert_eq!(
                parse_record::<Setup>(&long),
                Err(MsgError::TooLong { len: 41, max: 40 })
            );
            // A stream: two records back to back.
            let two = [bytes, bytes].concat();
            assert_eq!(parse_record::<Setup>(&two), Ok((msg, bytes.len())));
        }
        let layout = welcome().layout().unwrap();
        assert_eq!(layout.requests.capacity(), RING_CAPACITY_MIN);
        assert_eq!(layout.zc_region.len, 8192);
    }

    #[test]
    fn refusals() {
        let body = |b: &[u8]| -> Vec<u8> { b[8..].to_vec() };
        let hello = body(&HELLO_BYTES);
        let parse = |k: SetupKind, b: &[u8]| Setup::parse(k as u16, 0, b);
        let mut b = hello.clone();
        b[0] = b'X';
        assert_eq!(parse(SetupKind::Hello, &b), Err(MsgError::BadMagic));
        let mut b = hello.clone();
        b[4] = 1;
        assert_eq!(
            parse(SetupKind::Hello, &b),
            Err(MsgError::UnsupportedVersion(1))
        );
        // A future Hello of another length still gets its version answer.
        let mut b = hello.clone();
        b[4] = 9;
        b.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse(SetupKind::Hello, &b),
            Err(MsgError::UnsupportedVersion(9))
        );
        let mut b = hello.clone();
        b[6] = 2;
        assert_eq!(parse(SetupKind::Hello, &b), Err(MsgError::Reserved));
        let mut b = hello.clone();
        b[7] = 0x80;
        assert_eq!(parse(SetupKind::Hello, &b), Err(MsgError::Reserved));
        let mut b = hello.clone();
        b[8] = 2;
        assert_eq!(parse(SetupKind::Hello, &b), Err(MsgError::Malformed));
        let mut b = hello.clone();
        b[12] = 3;
        assert_eq!(parse(SetupKind::Hello, &b), Err(MsgError::Malformed));
        assert_eq!(
            Setup::parse(SetupKind::Hello as u16, 1, &hello),
            Err(MsgError::BadFlags(1))
        );
        assert_eq!(
            Setup::parse(0x0104, 0, &hello),
            Err(MsgError::UnknownKind(0x0104))
        );
        let w = body(&WELCOME_BYTES);
        for (at, v, e) in [
            (0, 1, MsgError::UnsupportedVersion(1)),
            (2, 1, MsgError::Reserved),
            (37, 1, MsgError::Malformed), // delivery ring not a power of two
            (4, 0, MsgError::Malformed),  // node id 0
            (18, 0x11, MsgError::Malformed), // capacity not a power of two
            (24, 1, MsgError::Malformed), // zc region not page sized
            (35, 0, MsgError::Malformed), // max message 0
        ] {
            let mut b = w.clone();
            b[at] = v;
            assert_eq!(parse(SetupKind::Welcome, &b), Err(e), "byte {at}");
        }
        let mut b = w.clone();
        b.push(0);
        assert_eq!(parse(SetupKind::Welcome, &b), Err(MsgError::LengthMismatch));
        for code in [0u32, 1, 29, 31, 99, 101] {
            assert_eq!(
                parse(SetupKind::Refused, &code.to_le_bytes()),
                Err(MsgError::Malformed),
                "{code}"
            );
        }
        // Emitting what parse refuses is refused.
        let mut bad = welcome();
        bad.event_capacity = 1000;
        assert_eq!(
            Setup::Welcome(bad).emit_body(&mut [0; 64]),
            Err(MsgError::Malformed)
        );
    }

    fn setup() -> impl Strategy<Value = Setup> {
        prop_oneof![
            (any::<bool>(), any::<bool>()).prop_map(|(b, totem)| Setup::Hello(Hello {
                model: if b {
                    Model::V1
                } else {
                    Model::V1InitialTotemConfchg
                },
                totem,
            })),
            (
                1..=u32::MAX,
                any::<u64>(),
                16..=30u32,
                16..=30u32,
                0..1000u64,
                1..=u32::MAX,
                prop_oneof![Just(0u32), (16..=30u32).prop_map(|d| 1 << d)]
            )
                .prop_map(
                    |(node_id, conn_id, r, e, pages, message_max, delivery_capacity)| {
                        Setup::Welcome(Welcome {
                            node_id,
                            conn_id,
                            request_capacity: 1 << r,
                            event_capacity: 1 << e,
                            zc_len: pages * 4096,
                            message_max,
                            delivery_capacity,
                        })
                    }
                ),
            (2u32..=100)
                .prop_filter_map("a cs_error", CsError::from_code)
                .prop_map(Setup::Refused),
        ]
    }

    proptest! {
        #[test]
        fn setup_round_trip(m in setup()) {
            let mut buf = vec![0; record_bytes_len(&m)];
            prop_assert_eq!(emit_record(&m, &mut buf), Ok(buf.len()));
            prop_assert_eq!(parse_record::<Setup>(&buf), Ok((m, buf.len())));
        }

        #[test]
        fn any_bytes_never_panic(kind in 0x0100u16..0x0105, flags in 0u16..2, body in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = Setup::parse(kind, flags, &body) {
                let mut buf = vec![0; m.body_len()];
                prop_assert_eq!(m.emit_body(&mut buf), Ok(body.len()));
                prop_assert_eq!(buf, body);
            }
        }
    }
}

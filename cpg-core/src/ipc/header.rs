//! The header page of a ring region, and the layout of a connection's
//! shared memory (one memfd: request ring, event ring, zero-copy region).
//!
//! ```text
//! ring region   0 .. 4096     header page (below)
//!               4096 ..       data: capacity bytes of records (`ring`)
//!
//! header page   offset  size  word                written by          accessed as
//!               0       4     magic "CPGR"        daemon, at setup    bytes (LE), read-only after
//!               4       2     version (1)         daemon, at setup    bytes (LE)
//!               6       2     direction 1 req / 2 ev   daemon, at setup    bytes (LE)
//!               128     8     capacity            daemon, at setup    bytes (LE)
//!               256     8     head                the producer        AtomicU64 (host order)
//!               384     8     tail                the consumer        AtomicU64 (host order)
//!               512     4     consumer_sleeping   the consumer (the producer clears it)   AtomicU32
//!               640     4     producer_waiting    the producer (the consumer clears it)   AtomicU32
//!               everything else: zero
//! ```
//!
//! Each word lives on a cache line of its own, and the words the two sides
//! write are 128 bytes apart: two 64-byte lines, because x86's adjacent-line
//! prefetcher pairs lines and some aarch64 cores have 128-byte lines
//! (crossbeam's `CachePadded` pads to 128 for the same reason). The atomic
//! words are in the host's byte order: both processes run on one host;
//! zero, their initial value, reads the same either way.
//!
//! A connection's memfd holds, page aligned and in this order, the request
//! ring region, the event ring region and the zero-copy region
//! ([`ConnLayout`]); `Welcome` carries the three sizes it follows from.
//!
//! # References
//! `docs/spec/ipc.md` "Shared memory".

use core::fmt;

use super::codec::{get_bytes, get_u16, get_u32, put_u16, put_u32, put_u64};
use super::ring::Ring;
use super::{Direction, PAGE_LEN, VERSION, ZC_REGION_MAX};

/// Byte offsets of the words of a ring's header page.
pub mod offset {
    /// `u32` magic, [`super::RING_MAGIC`].
    pub const MAGIC: usize = 0;
    /// `u16` IPC version.
    pub const VERSION: usize = 4;
    /// `u16` direction ([`crate::ipc::Direction::code`]).
    pub const DIRECTION: usize = 6;
    /// `u64` capacity of the data area.
    pub const CAPACITY: usize = 128;
    /// `u64` head: bytes written by the producer (atomic).
    pub const HEAD: usize = 256;
    /// `u64` tail: bytes consumed by the consumer (atomic).
    pub const TAIL: usize = 384;
    /// `u32` consumer_sleeping ([`crate::ipc::wake`]; atomic).
    pub const CONSUMER_SLEEPING: usize = 512;
    /// `u32` producer_waiting ([`crate::ipc::wake`]; atomic).
    pub const PRODUCER_WAITING: usize = 640;
    /// The data area.
    pub const DATA: usize = crate::ipc::PAGE_LEN;
}

/// Bytes of the header page (the data area starts here).
pub const HEADER_LEN: usize = PAGE_LEN;
/// The cache line the words are aligned to.
pub const CACHE_LINE: usize = 64;
/// Distance between words written by different sides (two lines).
pub const WORD_SPACING: usize = 2 * CACHE_LINE;
/// A ring header's magic: `"CPGR"` in little-endian byte order.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"CPGR");

static_assertions::const_assert_eq!(offset::DATA, HEADER_LEN);
static_assertions::const_assert!(offset::MAGIC + 4 <= offset::VERSION);
static_assertions::const_assert!(offset::VERSION + 2 <= offset::DIRECTION);
static_assertions::const_assert!(offset::DIRECTION + 2 <= CACHE_LINE);
static_assertions::const_assert_eq!(offset::CAPACITY, WORD_SPACING);
static_assertions::const_assert_eq!(offset::HEAD, offset::CAPACITY + WORD_SPACING);
static_assertions::const_assert_eq!(offset::TAIL, offset::HEAD + WORD_SPACING);
static_assertions::const_assert_eq!(offset::CONSUMER_SLEEPING, offset::TAIL + WORD_SPACING);
static_assertions::const_assert_eq!(
    offset::PRODUCER_WAITING,
    offset::CONSUMER_SLEEPING + WORD_SPACING
);
static_assertions::const_assert!(offset::PRODUCER_WAITING + WORD_SPACING <= HEADER_LEN);
// Atomic words are naturally aligned (the region is page aligned).
static_assertions::const_assert!(offset::HEAD % 8 == 0 && offset::TAIL % 8 == 0);
static_assertions::const_assert!(
    offset::CONSUMER_SLEEPING % 4 == 0 && offset::PRODUCER_WAITING % 4 == 0
);
static_assertions::const_assert!(HEADER_LEN % 8 == 0);

/// Why a layout or a ring header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayoutError {
    /// A ring capacity that is not a power of two in
    /// `RING_CAPACITY_MIN..=RING_CAPACITY_MAX`.
    Capacity(usize),
    /// A zero-copy region that is not a multiple of a page, or above
    /// [`ZC_REGION_MAX`].
    ZcRegion(u64),
    /// A header page slice shorter than [`HEADER_LEN`].
    TooShort,
    /// Not a ring header.
    BadMagic,
    /// A ring header of another IPC version.
    UnsupportedVersion(u16),
    /// The header of a ring of the other direction (or none).
    WrongDirection(u16),
    /// The header's capacity disagrees with `Welcome`.
    CapacityMismatch {
        /// What `Welcome` said.
        expected: usize,
        /// What the header says.
        found: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Capacity(c) => write!(f, "ring capacity {c} not a power of two in range"),
            LayoutError::ZcRegion(l) => write!(
                f,
                "zero-copy region of {l} bytes not page sized or too large"
            ),
            LayoutError::TooShort => write!(f, "header page shorter than {HEADER_LEN} bytes"),
            LayoutError::BadMagic => write!(f, "not a ring header"),
            LayoutError::UnsupportedVersion(v) => write!(f, "ring header of IPC version {v}"),
            LayoutError::WrongDirection(d) => write!(f, "ring header of direction {d}"),
            LayoutError::CapacityMismatch { expected, found } => {
                write!(f, "ring header capacity {found}, expected {expected}")
            }
        }
    }
}

impl core::error::Error for LayoutError {}

/// Write a fresh header page for a ring of `dir` (the daemon, before it
/// sends the memfd): immutable words set, indices and flags zero.
///
/// # Errors
/// [`LayoutError::TooShort`] if `page` is shorter than [`HEADER_LEN`].
pub fn init(page: &mut [u8], dir: Direction, ring: Ring) -> Result<(), LayoutError> {
    let page = page.get_mut(..HEADER_LEN).ok_or(LayoutError::TooShort)?;
    page.fill(0);
    put_u32(page, offset::MAGIC..offset::MAGIC + 4, RING_MAGIC);
    put_u16(page, offset::VERSION..offset::VERSION + 2, VERSION);
    put_u16(page, offset::DIRECTION..offset::DIRECTION + 2, dir.code());
    put_u64(
        page,
        offset::CAPACITY..offset::CAPACITY + 8,
        ring.capacity() as u64,
    );
    Ok(())
}

/// Check the header page of a ring the client mapped against what
/// `Welcome` said, returning the ring.
///
/// # Errors
/// [`LayoutError::TooShort`], [`LayoutError::BadMagic`],
/// [`LayoutError::UnsupportedVersion`], [`LayoutError::WrongDirection`],
/// [`LayoutError::Capacity`], [`LayoutError::CapacityMismatch`].
pub fn check(page: &[u8], dir: Direction, capacity: usize) -> Result<Ring, LayoutError> {
    let page = page.get(..HEADER_LEN).ok_or(LayoutError::TooShort)?;
    if get_u32(page, offset::MAGIC..offset::MAGIC + 4) != RING_MAGIC {
        return Err(LayoutError::BadMagic);
    }
    let version = get_u16(page, offset::VERSION..offset::VERSION + 2);
    if version != VERSION {
        return Err(LayoutError::UnsupportedVersion(version));
    }
    let d = get_u16(page, offset::DIRECTION..offset::DIRECTION + 2);
    if Direction::from_code(d) != Some(dir) {
        return Err(LayoutError::WrongDirection(d));
    }
    let ring = Ring::new(capacity)?;
    let found = u64::from_le_bytes(get_bytes(page, offset::CAPACITY..offset::CAPACITY + 8));
    if found != capacity as u64 {
        return Err(LayoutError::CapacityMismatch {
            expected: capacity,
            found,
        });
    }
    Ok(ring)
}

/// Bytes of a ring region: the header page and the data.
pub const fn region_len(ring: Ring) -> usize {
    HEADER_LEN + ring.capacity()
}

/// A byte range of the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// Offset from the start of the memfd (a multiple of a page).
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl Region {
    /// The offset just past it.
    pub const fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Where everything lies in a connection's memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnLayout {
    /// The request ring (client → daemon).
    pub requests: Ring,
    /// The event ring (daemon → client).
    pub events: Ring,
    /// The request ring's region (header page first).
    pub requests_region: Region,
    /// The event ring's region (header page first).
    pub events_region: Region,
    /// The zero-copy region (slots; may be empty).
    pub zc_region: Region,
    /// The delivery ring (daemon → client), if the connection has one.
    pub deliveries: Option<Ring>,
    /// The delivery ring's region (header page first; empty without one).
    pub deliveries_region: Region,
}

impl ConnLayout {
    /// The layout for these sizes.
    ///
    /// # Errors
    /// [`LayoutError::Capacity`] for a bad ring capacity (a delivery
    /// capacity of 0 means no delivery ring), [`LayoutError::ZcRegion`] for
    /// a zero-copy region that is not a multiple of a page or above
    /// [`ZC_REGION_MAX`].
    pub const fn new(
        request_capacity: usize,
        event_capacity: usize,
        zc_len: u64,
        delivery_capacity: usize,
    ) -> Result<ConnLayout, LayoutError> {
        let requests = match Ring::new(request_capacity) {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        let events = match Ring::new(event_capacity) {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        if zc_len % PAGE_LEN as u64 != 0 || zc_len > ZC_REGION_MAX {
            return Err(LayoutError::ZcRegion(zc_len));
        }
        let requests_region = Region {
            offset: 0,
            len: region_len(requests) as u64,
        };
        let events_region = Region {
            offset: requests_region.end(),
            len: region_len(events) as u64,
        };
        let zc_region = Region {
            offset: events_region.end(),
            len: zc_len,
        };
        let deliveries = if delivery_capacity == 0 {
            None
        } else {
            match Ring::new(delivery_capacity) {
                Ok(r) => Some(r),
                Err(e) => return Err(e),
            }
        };
        let deliveries_region = Region {
            offset: zc_region.end(),
            len: match deliveries {
                Some(r) => region_len(r) as u64,
                None => 0,
            },
        };
        Ok(ConnLayout {
            requests,
            events,
            requests_region,
            events_region,
            zc_region,
            deliveries,
            deliveries_region,
        })
    }

    /// Bytes of the memfd.
    pub const fn memfd_len(&self) -> u64 {
        self.deliveries_region.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{RING_CAPACITY_MAX, RING_CAPACITY_MIN};

    #[test]
    fn header_page_round_trip() {
        let ring = Ring::new(RING_CAPACITY_MIN).unwrap();
        let mut page = vec![0xEE; HEADER_LEN + 16];
        init(&mut page, Direction::Events, ring).unwrap();
        assert_eq!(&page[..8], b"CPGR\x02\x00\x02\x00");
        assert_eq!(&page[128..136], &(RING_MAGIC_CAP).to_le_bytes());
        assert!(page[8..128]
            .iter()
            .chain(&page[136..HEADER_LEN])
            .all(|&b| b == 0));
        assert_eq!(page[HEADER_LEN], 0xEE, "only the header page is written");
        assert_eq!(check(&page, Direction::Events, RING_CAPACITY_MIN), Ok(ring));
        assert_eq!(
            check(&page, Direction::Requests, RING_CAPACITY_MIN),
            Err(LayoutError::WrongDirection(2))
        );
        assert_eq!(
            check(&page, Direction::Events, 2 * RING_CAPACITY_MIN),
            Err(LayoutError::CapacityMismatch {
                expected: 2 * RING_CAPACITY_MIN,
                found: RING_CAPACITY_MIN as u64
            })
        );
        assert_eq!(
            check(&page, Direction::Events, 3),
            Err(LayoutError::Capacity(3))
        );
        assert_eq!(
            check(&page[..100], Direction::Events, RING_CAPACITY_MIN),
            Err(LayoutError::TooShort)
        );
        assert_eq!(
            init(&mut page[..100], Direction::Events, ring),
            Err(LayoutError::TooShort)
        );
        let mut bad = page.clone();
        bad[0] ^= 1;
        assert_eq!(
            check(&bad, Direction::Events, RING_CAPACITY_MIN),
            Err(LayoutError::BadMagic)
        );
        let mut bad = page.clone();
        bad[4] = 3;
        assert_eq!(
            check(&bad, Direction::Events, RING_CAPACITY_MIN),
            Err(LayoutError::UnsupportedVersion(3))
        );
        let mut bad = page;
        bad[6] = 0;
        assert_eq!(
            check(&bad, Direction::Events, RING_CAPACITY_MIN),
            Err(LayoutError::WrongDirection(0))
        );
    }
    const RING_MAGIC_CAP: u64 = RING_CAPACITY_MIN as u64;

    #[test]
    fn conn_layout() {
        let l = ConnLayout::new(1 << 16, 1 << 20, 8 * 4096, 0).unwrap();
        assert_eq!(
            l.requests_region,
            Region {
                offset: 0,
                len: 4096 + (1 << 16)
            }
        );
        assert_eq!(l.events_region.offset, 4096 + (1 << 16));
        assert_eq!(l.zc_region.offset, 2 * 4096 + (1 << 16) + (1 << 20));
        assert_eq!(l.memfd_len(), l.zc_region.offset + 8 * 4096);
        for r in [l.requests_region, l.events_region, l.zc_region] {
            assert_eq!(r.offset % PAGE_LEN as u64, 0);
        }
        assert_eq!((l.deliveries, l.deliveries_region.len), (None, 0));
        let d = ConnLayout::new(1 << 16, 1 << 20, 8 * 4096, 1 << 20).unwrap();
        assert_eq!(d.deliveries, Some(Ring::new(1 << 20).unwrap()));
        assert_eq!(d.deliveries_region.offset, l.memfd_len());
        assert_eq!(d.memfd_len(), l.memfd_len() + 4096 + (1 << 20));
        assert_eq!(
            ConnLayout::new(1 << 16, 1 << 16, 0, 1000),
            Err(LayoutError::Capacity(1000))
        );
        assert_eq!(
            ConnLayout::new(1 << 16, 1 << 16, 0, 0)
                .unwrap()
                .zc_region
                .len,
            0
        );
        assert_eq!(
            ConnLayout::new(1000, 1 << 16, 0, 0),
            Err(LayoutError::Capacity(1000))
        );
        assert_eq!(
            ConnLayout::new(1 << 16, 1 << 31, 0, 0),
            Err(LayoutError::Capacity(1 << 31))
        );
        assert_eq!(
            ConnLayout::new(1 << 16, 1 << 16, 100, 0),
            Err(LayoutError::ZcRegion(100))
        );
        assert_eq!(
            ConnLayout::new(1 << 16, 1 << 16, ZC_REGION_MAX + 4096, 0),
            Err(LayoutError::ZcRegion(ZC_REGION_MAX + 4096))
        );
        let big = ConnLayout::new(RING_CAPACITY_MAX, RING_CAPACITY_MAX, ZC_REGION_MAX, 0).unwrap();
        assert_eq!(
            big.memfd_len(),
            2 * (4096 + RING_CAPACITY_MAX as u64) + ZC_REGION_MAX
        );
    }
}

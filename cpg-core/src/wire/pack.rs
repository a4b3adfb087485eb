//! The packing layer inside an MCAST payload: several small messages per
//! frame, large messages fragmented across frames.
//!
//! `fragmented u8 | continuation u8 | count u16 | count × u16 length | items
//! | padding`. `fragmented = k ≠ 0`: the last item continues in the next
//! frame of this sender, whose `continuation` is `k`. The lengths add up
//! to the bytes after the table, or to at most [`PACK_PAD_MAX`] fewer:
//! the padding, zero bytes. A sender fills every frame of a burst to one
//! size (so the transport can hand the run to the kernel as one UDP GSO
//! send), and the only gap item boundaries cannot close is one too small
//! for another item's length and a byte of it.

use super::{check_len, get_u16, get_u8, out_buf, put_bytes, put_u16, put_u8, WireError};

mod field {
    use crate::wire::field::{Field, Rest};

    pub(super) const FRAGMENTED: usize = 0;
    pub(super) const CONTINUATION: usize = 1;
    pub(super) const COUNT: Field = 2..4;
    pub(super) const LENGTHS: Rest = 4..;
}

/// Bytes of the fixed part.
pub const PACK_HEADER_LEN: usize = 4;
/// Bytes per item (its u16 length).
pub const PACK_ITEM_OVERHEAD: usize = 2;
/// Most zero bytes a packed payload may end with after its items: a gap
/// smaller than an item's length and one byte of it.
pub const PACK_PAD_MAX: usize = PACK_ITEM_OVERHEAD;

static_assertions::const_assert_eq!(PACK_HEADER_LEN, field::LENGTHS.start);

/// The packing header's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackHeader {
    /// Non-zero: the last item is continued in the next frame.
    pub fragmented: u8,
    /// Non-zero: the first item continues the previous frame's last item.
    pub continuation: u8,
}

/// A checked packed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed<'a> {
    /// Flags.
    pub header: PackHeader,
    data: &'a [u8],
    count: usize,
    pad: usize,
}

impl<'a> Packed<'a> {
    /// Check a payload: count ≥ 1, the lengths add up to the bytes after
    /// the table but for at most [`PACK_PAD_MAX`] zero bytes of padding.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the fixed part or the length table is
    /// cut short, [`WireError::Malformed`] for a count of 0,
    /// [`WireError::LengthMismatch`] unless the item lengths add up to the
    /// bytes after the table or to at most `PACK_PAD_MAX` fewer, all of
    /// them zero. Never panics.
    pub fn parse(data: &'a [u8]) -> Result<Packed<'a>, WireError> {
        check_len(data, PACK_HEADER_LEN)?;
        let count = usize::from(get_u16(data, field::COUNT));
        if count == 0 {
            return Err(WireError::Malformed);
        }
        // count <= 65,535: the table ends below 2^18.
        let table_end = PACK_HEADER_LEN + count * PACK_ITEM_OVERHEAD;
        check_len(data, table_end)?;
        let (table, items) = data.split_at(table_end);
        let table = table.get(field::LENGTHS).unwrap_or(&[]);
        let mut total: usize = 0;
        for len in table.chunks_exact(PACK_ITEM_OVERHEAD) {
            total = total
                .checked_add(usize::from(get_u16(len, 0..2)))
                .ok_or(WireError::LengthMismatch)?;
        }
        let pad = items
            .len()
            .checked_sub(total)
            .ok_or(WireError::LengthMismatch)?;
        if pad > PACK_PAD_MAX || items.iter().rev().take(pad).any(|&b| b != 0) {
            return Err(WireError::LengthMismatch);
        }
        let header = PackHeader {
            fragmented: get_u8(data, field::FRAGMENTED),
            continuation: get_u8(data, field::CONTINUATION),
        };
        Ok(Packed {
            header,
            data,
            count,
            pad,
        })
    }
    /// Number of items.
    pub fn count(&self) -> usize {
        self.count
    }
    /// Zero bytes after the items (at most [`PACK_PAD_MAX`]).
    pub fn pad(&self) -> usize {
        self.pad
    }
    /// The items in order, with their byte offsets inside the payload.
    pub fn items(&self) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
        let table_end =
            PACK_HEADER_LEN.saturating_add(self.count.saturating_mul(PACK_ITEM_OVERHEAD));
        let (table, items) = match (
            self.data.get(field::LENGTHS.start..table_end),
            self.data.get(table_end..),
        ) {
            (Some(t), Some(i)) => (t, i),
            _ => (&[][..], &[][..]),
        };
        Items {
            table,
            items,
            offset: table_end,
        }
    }
    /// The whole checked payload.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }
}

/// Iterator behind [`Packed::items`].
struct Items<'a> {
    /// Lengths not yet consumed.
    table: &'a [u8],
    /// Item bytes not yet consumed.
    items: &'a [u8],
    /// Offset of `items` inside the payload.
    offset: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = (usize, &'a [u8]);
    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        let (len, table) = (
            self.table.get(..PACK_ITEM_OVERHEAD)?,
            self.table.get(PACK_ITEM_OVERHEAD..)?,
        );
        let len = usize::from(get_u16(len, 0..PACK_ITEM_OVERHEAD));
        let (item, items) = (self.items.get(..len)?, self.items.get(len..)?);
        let offset = self.offset;
        self.table = table;
        self.items = items;
        self.offset = offset.saturating_add(len);
        Some((offset, item))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.table.len() / PACK_ITEM_OVERHEAD))
    }
}

/// Bytes a packed payload with these item lengths takes.
pub fn packed_len(item_lens: impl Iterator<Item = usize>) -> usize {
    item_lens.fold(PACK_HEADER_LEN, |acc, len| {
        acc.saturating_add(PACK_ITEM_OVERHEAD).saturating_add(len)
    })
}

/// Emit the packing header of a frame carrying exactly one item of
/// `item_len` bytes, which follows it (zero-copy path): returns the header
/// length, `PACK_HEADER_LEN + PACK_ITEM_OVERHEAD`.
///
/// # Errors
/// [`WireError::BufferTooSmall`], [`WireError::Malformed`] (an item over 65,535 bytes).
pub fn emit_single_item_head(
    header: PackHeader,
    item_len: usize,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let len16 = u16::try_from(item_len).map_err(|_| WireError::Malformed)?;
    let n = PACK_HEADER_LEN + PACK_ITEM_OVERHEAD;
    let out = out_buf(buf, n)?;
    put_u8(out, field::FRAGMENTED, header.fragmented);
    put_u8(out, field::CONTINUATION, header.continuation);
    put_u16(out, field::COUNT, 1);
    put_u16(out, PACK_HEADER_LEN..n, len16);
    Ok(n)
}

/// Emit a packed payload of `items` followed by `pad` zero bytes into
/// `buf`, returning its length.
///
/// # Errors
/// [`WireError::BufferTooSmall`], [`WireError::TooManyEntries`] (0 or more
/// than 65,535 items), [`WireError::Malformed`] (an item over 65,535 bytes,
/// or `pad` over [`PACK_PAD_MAX`]).
pub fn emit_packed(
    header: PackHeader,
    items: &[&[u8]],
    pad: usize,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let count = u16::try_from(items.len()).map_err(|_| WireError::TooManyEntries)?;
    if count == 0 {
        return Err(WireError::TooManyEntries);
    }
    if items.iter().any(|i| i.len() > usize::from(u16::MAX)) || pad > PACK_PAD_MAX {
        return Err(WireError::Malformed);
    }
    let len = packed_len(items.iter().map(|i| i.len())) + pad;
    let out = out_buf(buf, len)?;
    put_u8(out, field::FRAGMENTED, header.fragmented);
    put_u8(out, field::CONTINUATION, header.continuation);
    put_u16(out, field::COUNT, count);
    let table_end = PACK_HEADER_LEN + items.len() * PACK_ITEM_OVERHEAD;
    let (table, body) = out.split_at_mut(table_end);
    let table = table.get_mut(field::LENGTHS).unwrap_or(&mut []);
    let mut at = 0usize;
    for (slot, item) in table.chunks_exact_mut(PACK_ITEM_OVERHEAD).zip(items.iter()) {
        // Checked above: every item fits a u16.
        put_u16(slot, 0..PACK_ITEM_OVERHEAD, item.len() as u16);
        put_bytes(body, at..at + item.len(), item);
        at += item.len();
    }
    body.get_mut(at..).unwrap_or(&mut []).fill(0);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Fragmented (continued as 1), three items: "hi", "", "abc".
    static PACKED_BYTES: [u8; 15] = [
        0x01, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x00, b'h', b'i', b'a', b'b', b'c',
    ];

    const HEADER: PackHeader = PackHeader {
        fragmented: 1,
        continuation: 0,
    };
    const ITEMS: [&[u8]; 3] = [b"hi", b"", b"abc"];

    #[test]
    fn deconstruct() {
        let p = Packed::parse(&PACKED_BYTES).unwrap();
        assert_eq!(p.header, HEADER);
        assert_eq!(p.count(), 3);
        let items: Vec<_> = p.items().collect();
        assert_eq!(items, [(10, &b"hi"[..]), (12, &b""[..]), (12, &b"abc"[..])]);
        for (at, item) in p.items() {
            assert_eq!(&PACKED_BYTES[at..at + item.len()], item);
        }
        assert_eq!(p.as_bytes(), &PACKED_BYTES[..]);
    }

    #[test]
    fn construct() {
        let mut buf = [0xFF; 15];
        assert_eq!(packed_len(ITEMS.iter().map(|i| i.len())), 15);
        assert_eq!(emit_packed(HEADER, &ITEMS, 0, &mut buf), Ok(15));
        assert_eq!(buf, PACKED_BYTES);
    }

    #[test]
    fn emit_errors() {
        let mut buf = [0; 64];
        assert_eq!(
            emit_packed(HEADER, &ITEMS, 0, &mut buf[..14]),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(
            emit_packed(HEADER, &[], 0, &mut buf),
            Err(WireError::TooManyEntries)
        );
        let big = vec![0u8; 65_536];
        assert_eq!(
            emit_packed(HEADER, &[&big], 0, &mut buf),
            Err(WireError::Malformed)
        );
        let empties: Vec<&[u8]> = vec![&[]; 65_536];
        assert_eq!(
            emit_packed(HEADER, &empties, 0, &mut buf),
            Err(WireError::TooManyEntries)
        );
        let mut big_buf = vec![0; packed_len(empties[1..].iter().map(|i| i.len()))];
        assert_eq!(
            emit_packed(HEADER, &empties[1..], 0, &mut big_buf),
            Ok(4 + 2 * 65_535)
        );
        assert_eq!(Packed::parse(&big_buf).unwrap().items().count(), 65_535);
        let max = vec![7u8; 65_535];
        let mut max_buf = vec![0; 4 + 2 + 65_535];
        assert_eq!(
            emit_packed(HEADER, &[&max], 0, &mut max_buf),
            Ok(max_buf.len())
        );
        assert_eq!(
            Packed::parse(&max_buf).unwrap().items().next(),
            Some((6, &max[..]))
        );
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Packed::parse(&PACKED_BYTES[..3]),
            Err(WireError::Truncated { needed: 4, got: 3 })
        );
        assert_eq!(
            Packed::parse(&PACKED_BYTES[..7]),
            Err(WireError::Truncated { needed: 10, got: 7 })
        );
        assert_eq!(
            Packed::parse(&[0, 0, 0xFF, 0xFF]),
            Err(WireError::Truncated {
                needed: 4 + 2 * 65_535,
                got: 4
            })
        );
    }

    /// Up to `PACK_PAD_MAX` zero bytes may follow the items; more, or a
    /// non-zero one, and the lengths do not add up.
    #[test]
    fn padding_is_a_few_zero_bytes() {
        for pad in 0..=PACK_PAD_MAX {
            let mut buf = vec![0xAA; PACKED_BYTES.len() + pad];
            assert_eq!(emit_packed(HEADER, &ITEMS, pad, &mut buf), Ok(buf.len()));
            assert_eq!(&buf[..PACKED_BYTES.len()], &PACKED_BYTES[..]);
            let p = Packed::parse(&buf).expect("padded");
            assert_eq!(p.pad(), pad);
            let items: Vec<&[u8]> = p.items().map(|(_, i)| i).collect();
            assert_eq!(items, ITEMS);
            if pad > 0 {
                let last = buf.len() - 1;
                buf[last] = 1;
                assert_eq!(Packed::parse(&buf), Err(WireError::LengthMismatch));
            }
        }
        let mut over = PACKED_BYTES.to_vec();
        over.extend_from_slice(&[0; PACK_PAD_MAX + 1]);
        assert_eq!(Packed::parse(&over), Err(WireError::LengthMismatch));
        let mut buf = [0u8; 32];
        assert_eq!(
            emit_packed(HEADER, &ITEMS, PACK_PAD_MAX + 1, &mut buf),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn count_zero_is_malformed() {
        assert_eq!(Packed::parse(&[0, 0, 0, 0]), Err(WireError::Malformed));
        assert_eq!(
            Packed::parse(&[0, 0, 0, 0, 1, 2]),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn lengths_must_add_up() {
        assert_eq!(
            Packed::parse(&PACKED_BYTES[..14]),
            Err(WireError::LengthMismatch)
        );
        let mut long = PACKED_BYTES.to_vec();
        long.push(b'!');
        assert_eq!(Packed::parse(&long), Err(WireError::LengthMismatch));
        let mut f = PACKED_BYTES.to_vec();
        f[4] = 3;
        assert_eq!(Packed::parse(&f), Err(WireError::LengthMismatch));
        f[4] = 0xFF;
        f[5] = 0xFF;
        assert_eq!(Packed::parse(&f), Err(WireError::LengthMismatch));
    }

    #[test]
    fn flag_bytes_are_opaque() {
        let mut f = PACKED_BYTES.to_vec();
        f[0] = 0;
        f[1] = 0xFE;
        assert_eq!(
            Packed::parse(&f).unwrap().header,
            PackHeader {
                fragmented: 0,
                continuation: 0xFE
            }
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            fragmented in any::<u8>(),
            continuation in any::<u8>(),
            items in vec(vec(any::<u8>(), 0..64), 1..40),
        ) {
            let header = PackHeader { fragmented, continuation };
            let refs: Vec<&[u8]> = items.iter().map(|i| &i[..]).collect();
            let mut buf = vec![0; packed_len(items.iter().map(|i| i.len()))];
            prop_assert_eq!(emit_packed(header, &refs, 0, &mut buf), Ok(buf.len()));
            let p = Packed::parse(&buf).unwrap();
            prop_assert_eq!(p.header, header);
            prop_assert_eq!(p.count(), items.len());
            let got: Vec<&[u8]> = p.items().map(|(_, i)| i).collect();
            prop_assert_eq!(got, refs);
            for (at, item) in p.items() {
                prop_assert_eq!(&buf[at..at + item.len()], item);
            }
        }

        #[test]
        fn any_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
            if let Ok(p) = Packed::parse(&data) {
                prop_assert_eq!(p.items().count(), p.count());
                prop_assert_eq!(packed_len(p.items().map(|(_, i)| i.len())) + p.pad(), data.len());
            }
        }

        #[test]
        fn small_tables_never_panic(count in 0u16..8, lens in vec(0u16..8, 0..10), rest in vec(any::<u8>(), 0..64)) {
            // A plausible header in front, so the length checks get exercised.
            let mut data = vec![0, 0];
            data.extend_from_slice(&count.to_le_bytes());
            for l in lens {
                data.extend_from_slice(&l.to_le_bytes());
            }
            data.extend_from_slice(&rest);
            if let Ok(p) = Packed::parse(&data) {
                prop_assert_eq!(p.items().count(), usize::from(count));
            }
        }
    }
}

//! The packing layer inside an MCAST payload: several small messages per
//! frame, large messages fragmented across frames.
//!
//! `fragmented u8 | continuation u8 | count u16 | count × u16 length | items`.
//! `fragmented = k ≠ 0`: the last item continues in the next frame of this
//! sender, whose `continuation` is `k`. Lengths add up exactly.

use super::WireError;

/// Bytes of the fixed part.
pub const PACK_HEADER_LEN: usize = 4;
/// Bytes per item (its u16 length).
pub const PACK_ITEM_OVERHEAD: usize = 2;

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
}

impl<'a> Packed<'a> {
    /// Check a payload: counts and lengths must add up exactly, count ≥ 1.
    ///
    /// # Errors
    /// [`WireError`]; never panics.
    pub fn parse(data: &'a [u8]) -> Result<Packed<'a>, WireError> {
        let _ = data;
        todo!("wire helper")
    }
    /// Number of items.
    pub fn count(&self) -> usize {
        self.count
    }
    /// The items in order, with their byte offsets inside the payload.
    pub fn items(&self) -> impl Iterator<Item = (usize, &'a [u8])> + 'a {
        let _ = self.data;
        todo!("wire helper");
        #[allow(unreachable_code)]
        core::iter::empty()
    }
}

/// Bytes a packed payload with these item lengths takes.
pub fn packed_len(item_lens: impl Iterator<Item = usize>) -> usize {
    let _ = item_lens;
    todo!("wire helper")
}

/// Emit a packed payload of `items` into `buf`, returning its length.
///
/// # Errors
/// [`WireError::BufferTooSmall`], [`WireError::TooManyEntries`] (0 or more
/// than 65,535 items), [`WireError::Malformed`] (an item over 65,535 bytes).
pub fn emit_packed(header: PackHeader, items: &[&[u8]], buf: &mut [u8]) -> Result<usize, WireError> {
    let _ = (header, items, buf);
    todo!("wire helper")
}

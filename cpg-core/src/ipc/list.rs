//! Lists inside messages, without a heap: after parse, a view over the
//! checked bytes; to emit, a view over the caller's slice. Both compare
//! equal element by element.

use core::fmt;

use super::codec::{get_name, get_name_len, get_u32, put_name, put_u32, MsgError};
use crate::types::{GroupName, MemberAddr, NodeId, Reason};

pub(super) mod sealed {
    pub trait Sealed {}
}

/// A fixed-size list entry. Implemented for [`MemberAddr`] (a member, 12
/// bytes: node id, pid, reason 0: Corosync's `struct cpg_address`),
/// `(MemberAddr, Reason)` (a member that left or joined, 12 bytes, the same
/// struct) and [`NodeId`] (4 bytes); not for other types.
pub trait Entry: Copy + PartialEq + fmt::Debug + sealed::Sealed {
    /// Bytes per entry.
    const LEN: usize;
    /// Decode one entry (`bytes` is `LEN` long).
    ///
    /// # Errors
    /// [`MsgError::Malformed`] for a value out of range.
    fn read(bytes: &[u8]) -> Result<Self, MsgError>;
    /// Encode one entry into `out` (`LEN` long).
    fn write(&self, out: &mut [u8]);
    /// Whether `read` would take this value back.
    fn is_valid(&self) -> bool;
}

impl sealed::Sealed for MemberAddr {}
impl sealed::Sealed for (MemberAddr, Reason) {}
impl sealed::Sealed for NodeId {}

impl Entry for MemberAddr {
    const LEN: usize = 12;
    fn read(b: &[u8]) -> Result<MemberAddr, MsgError> {
        let m = MemberAddr {
            nodeid: get_u32(b, 0..4),
            pid: get_u32(b, 4..8),
        };
        if m.nodeid == 0 || get_u32(b, 8..12) != Reason::Undefined as u32 {
            return Err(MsgError::Malformed);
        }
        Ok(m)
    }
    fn write(&self, out: &mut [u8]) {
        put_u32(out, 0..4, self.nodeid);
        put_u32(out, 4..8, self.pid);
        put_u32(out, 8..12, Reason::Undefined as u32);
    }
    fn is_valid(&self) -> bool {
        self.nodeid != 0
    }
}

impl Entry for (MemberAddr, Reason) {
    const LEN: usize = 12;
    fn read(b: &[u8]) -> Result<(MemberAddr, Reason), MsgError> {
        let m = MemberAddr {
            nodeid: get_u32(b, 0..4),
            pid: get_u32(b, 4..8),
        };
        let reason = Reason::from_u32(get_u32(b, 8..12)).ok_or(MsgError::Malformed)?;
        if m.nodeid == 0 {
            return Err(MsgError::Malformed);
        }
        Ok((m, reason))
    }
    fn write(&self, out: &mut [u8]) {
        put_u32(out, 0..4, self.0.nodeid);
        put_u32(out, 4..8, self.0.pid);
        put_u32(out, 8..12, self.1 as u32);
    }
    fn is_valid(&self) -> bool {
        self.0.nodeid != 0
    }
}

impl Entry for NodeId {
    const LEN: usize = 4;
    fn read(b: &[u8]) -> Result<NodeId, MsgError> {
        match get_u32(b, 0..4) {
            0 => Err(MsgError::Malformed),
            n => Ok(n),
        }
    }
    fn write(&self, out: &mut [u8]) {
        put_u32(out, 0..4, *self);
    }
    fn is_valid(&self) -> bool {
        *self != 0
    }
}

#[derive(Clone, Copy)]
enum Src<'a, T> {
    /// Checked bytes: `count × T::LEN`, every entry valid.
    Bytes(&'a [u8]),
    /// The caller's entries (checked when emitted).
    Slice(&'a [T]),
}

/// A list of fixed-size entries: parsed (a view over checked bytes) or to
/// emit (a view over a slice).
#[derive(Clone, Copy)]
pub struct List<'a, T: Entry> {
    src: Src<'a, T>,
}

impl<'a, T: Entry> List<'a, T> {
    /// A list to emit.
    pub const fn from_slice(entries: &'a [T]) -> List<'a, T> {
        List {
            src: Src::Slice(entries),
        }
    }

    /// An empty list.
    pub const fn empty() -> List<'a, T> {
        List::from_slice(&[])
    }

    /// Check `count` entries in `bytes` (exactly that long).
    pub(super) fn parse(bytes: &'a [u8], count: usize) -> Result<List<'a, T>, MsgError> {
        if count.checked_mul(T::LEN) != Some(bytes.len()) {
            return Err(MsgError::LengthMismatch);
        }
        for e in bytes.chunks_exact(T::LEN) {
            T::read(e)?;
        }
        Ok(List {
            src: Src::Bytes(bytes),
        })
    }

    /// Entries.
    pub fn len(&self) -> usize {
        match self.src {
            Src::Bytes(b) => b.len() / T::LEN,
            Src::Slice(s) => s.len(),
        }
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes these entries take in a message.
    pub fn wire_len(&self) -> usize {
        self.len().saturating_mul(T::LEN)
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> Option<T> {
        match self.src {
            Src::Bytes(b) => {
                let start = i.checked_mul(T::LEN)?;
                T::read(b.get(start..start.checked_add(T::LEN)?)?).ok()
            }
            Src::Slice(s) => s.get(i).copied(),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> ListIter<'a, T> {
        ListIter { list: *self, at: 0 }
    }

    /// A parsed list's bytes (entries in wire order: for `MemberAddr` and
    /// `(MemberAddr, Reason)` Corosync's `struct cpg_address` array on a
    /// little-endian host, for `NodeId` a `uint32_t` array); `None` for a
    /// list made from a slice.
    pub fn wire_bytes(&self) -> Option<&'a [u8]> {
        match self.src {
            Src::Bytes(b) => Some(b),
            Src::Slice(_) => None,
        }
    }

    /// Whether every entry is valid.
    pub(super) fn is_valid(&self) -> bool {
        match self.src {
            Src::Bytes(_) => true,
            Src::Slice(s) => s.iter().all(Entry::is_valid),
        }
    }

    /// Write the entries into `out` (`wire_len()` bytes).
    pub(super) fn emit(&self, out: &mut [u8]) {
        match self.src {
            Src::Bytes(b) => {
                if let Some(d) = out.get_mut(..b.len()) {
                    d.copy_from_slice(b);
                }
            }
            Src::Slice(s) => {
                for (e, o) in s.iter().zip(out.chunks_exact_mut(T::LEN)) {
                    e.write(o);
                }
            }
        }
    }
}

impl<T: Entry> PartialEq for List<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Entry> Eq for List<'_, T> {}

impl<T: Entry> fmt::Debug for List<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Entry> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = ListIter<'a, T>;
    fn into_iter(self) -> ListIter<'a, T> {
        self.iter()
    }
}

/// The entries of a [`List`].
#[derive(Clone)]
pub struct ListIter<'a, T: Entry> {
    list: List<'a, T>,
    at: usize,
}

impl<T: Entry> Iterator for ListIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        let e = self.list.get(self.at)?;
        self.at += 1;
        Some(e)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.list.len().saturating_sub(self.at);
        (n, Some(n))
    }
}

impl<T: Entry> ExactSizeIterator for ListIter<'_, T> {}

/// One entry of an iteration (`cpg_iteration_description_t`): a group
/// and one of its members (node id and pid 0 for `NameOnly`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IterEntry {
    /// The group.
    pub group: GroupName,
    /// The member's node (0 for `NameOnly`).
    pub nodeid: NodeId,
    /// The member's pid (0 for `NameOnly`).
    pub pid: u32,
}

/// Bytes of an iteration entry in front of its name: node id, pid, name
/// length.
pub(super) const ITER_ENTRY_HEADER_LEN: usize = 9;

impl IterEntry {
    /// Bytes this entry takes in a message.
    pub fn wire_len(&self) -> usize {
        ITER_ENTRY_HEADER_LEN + self.group.len()
    }

    /// Parse the entry at the front of `data`: the entry and the rest.
    fn read(data: &[u8]) -> Result<(IterEntry, &[u8]), MsgError> {
        if data.len() < ITER_ENTRY_HEADER_LEN {
            return Err(MsgError::LengthMismatch);
        }
        let len = get_name_len(data, 8)?;
        let group = get_name(data, ITER_ENTRY_HEADER_LEN, len)?;
        let e = IterEntry {
            group,
            nodeid: get_u32(data, 0..4),
            pid: get_u32(data, 4..8),
        };
        Ok((e, data.get(ITER_ENTRY_HEADER_LEN + len..).unwrap_or(&[])))
    }

    fn write(&self, out: &mut [u8]) {
        put_u32(out, 0..4, self.nodeid);
        put_u32(out, 4..8, self.pid);
        put_name(out, 8, ITER_ENTRY_HEADER_LEN, &self.group);
    }
}

#[derive(Clone, Copy)]
enum IterSrc<'a> {
    Bytes { data: &'a [u8], count: usize },
    Slice(&'a [IterEntry]),
}

/// The entries of an `IterationNext` reply: parsed or to emit.
#[derive(Clone, Copy)]
pub struct IterEntries<'a> {
    src: IterSrc<'a>,
}

impl<'a> IterEntries<'a> {
    /// Entries to emit.
    pub const fn from_slice(entries: &'a [IterEntry]) -> IterEntries<'a> {
        IterEntries {
            src: IterSrc::Slice(entries),
        }
    }

    /// Check `count` entries filling `data` exactly.
    pub(super) fn parse(data: &'a [u8], count: usize) -> Result<IterEntries<'a>, MsgError> {
        let mut rest = data;
        for _ in 0..count {
            rest = IterEntry::read(rest)?.1;
        }
        if !rest.is_empty() {
            return Err(MsgError::LengthMismatch);
        }
        Ok(IterEntries {
            src: IterSrc::Bytes { data, count },
        })
    }

    /// Entries.
    pub fn len(&self) -> usize {
        match self.src {
            IterSrc::Bytes { count, .. } => count,
            IterSrc::Slice(s) => s.len(),
        }
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes these entries take in a message.
    pub fn wire_len(&self) -> usize {
        match self.src {
            IterSrc::Bytes { data, .. } => data.len(),
            IterSrc::Slice(s) => s.iter().map(IterEntry::wire_len).sum(),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> IterEntriesIter<'a> {
        match self.src {
            IterSrc::Bytes { data, count } => IterEntriesIter {
                src: IterSrc::Bytes { data, count },
            },
            IterSrc::Slice(s) => IterEntriesIter {
                src: IterSrc::Slice(s),
            },
        }
    }

    /// Write the entries into `out` (`wire_len()` bytes).
    pub(super) fn emit(&self, out: &mut [u8]) {
        match self.src {
            IterSrc::Bytes { data, .. } => {
                if let Some(d) = out.get_mut(..data.len()) {
                    d.copy_from_slice(data);
                }
            }
            IterSrc::Slice(s) => {
                let mut at = 0;
                for e in s {
                    let end = at + e.wire_len();
                    if let Some(o) = out.get_mut(at..end) {
                        e.write(o);
                    }
                    at = end;
                }
            }
        }
    }
}

impl PartialEq for IterEntries<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for IterEntries<'_> {}

impl fmt::Debug for IterEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The entries of [`IterEntries`].
pub struct IterEntriesIter<'a> {
    src: IterSrc<'a>,
}

impl Iterator for IterEntriesIter<'_> {
    type Item = IterEntry;
    fn next(&mut self) -> Option<IterEntry> {
        match &mut self.src {
            IterSrc::Bytes { data, count } => {
                if *count == 0 {
                    return None;
                }
                match IterEntry::read(data) {
                    Ok((e, rest)) => {
                        *data = rest;
                        *count -= 1;
                        Some(e)
                    }
                    Err(_) => {
                        // Unreachable for checked entries; end quietly.
                        *count = 0;
                        None
                    }
                }
            }
            IterSrc::Slice(s) => {
                let (first, rest) = s.split_first()?;
                *s = rest;
                Some(first.clone())
            }
        }
    }
}

//! Identifiers, names and status codes shared by every layer.
//!
//! Numeric values match Corosync's `corotypes.h` and `cpg.h` exactly, so the
//! C ABI (`cpg-capi`, later) can pass them through unchanged.
//!
//! # References
//! `docs/spec/cpg-api.md` §2 (status codes) and §3 (types).

use core::fmt;

use crate::limits::GROUP_NAME_MAX;

/// A Totem node id: non-zero; rings are ordered by ascending node id.
pub type NodeId = u32;

/// A ring's identity: its representative (lowest member) and a sequence
/// number that strictly increases at every ring a node enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RingId {
    /// Lowest node id of the ring (the node that created its commit token).
    pub rep: NodeId,
    /// Ring sequence number (grows by 4 per new ring, as in Corosync).
    pub seq: u64,
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.rep, self.seq)
    }
}

/// Corosync's `cs_error_t`. `CS_OK` (1) is not an error and has no variant:
/// success is `Ok(..)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum CsError {
    Library = 2,
    Version = 3,
    Init = 4,
    Timeout = 5,
    TryAgain = 6,
    InvalidParam = 7,
    NoMemory = 8,
    BadHandle = 9,
    Busy = 10,
    Access = 11,
    NotExist = 12,
    NameTooLong = 13,
    Exist = 14,
    NoSpace = 15,
    Interrupt = 16,
    NameNotFound = 17,
    NoResources = 18,
    NotSupported = 19,
    BadOperation = 20,
    FailedOperation = 21,
    MessageError = 22,
    QueueFull = 23,
    QueueNotAvailable = 24,
    BadFlags = 25,
    TooBig = 26,
    NoSections = 27,
    ContextNotFound = 28,
    TooManyGroups = 30,
    Security = 100,
}

/// `CS_OK`'s numeric value (success), for code that talks in raw numbers.
pub const CS_OK: u32 = 1;

impl CsError {
    /// The numeric `cs_error_t` value.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// Decode a numeric `cs_error_t`; `None` for `CS_OK` and unknown values.
    pub const fn from_code(code: u32) -> Option<CsError> {
        use CsError::*;
        Some(match code {
            2 => Library,
            3 => Version,
            4 => Init,
            5 => Timeout,
            6 => TryAgain,
            7 => InvalidParam,
            8 => NoMemory,
            9 => BadHandle,
            10 => Busy,
            11 => Access,
            12 => NotExist,
            13 => NameTooLong,
            14 => Exist,
            15 => NoSpace,
            16 => Interrupt,
            17 => NameNotFound,
            18 => NoResources,
            19 => NotSupported,
            20 => BadOperation,
            21 => FailedOperation,
            22 => MessageError,
            23 => QueueFull,
            24 => QueueNotAvailable,
            25 => BadFlags,
            26 => TooBig,
            27 => NoSections,
            28 => ContextNotFound,
            30 => TooManyGroups,
            100 => Security,
            _ => return None,
        })
    }
}

impl fmt::Display for CsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CsError::TryAgain => "try again",
            CsError::InvalidParam => "invalid parameter",
            CsError::BadHandle => "bad handle",
            CsError::NotExist => "does not exist",
            CsError::NameTooLong => "name too long",
            CsError::Exist => "already exists",
            CsError::NoSpace => "no space",
            CsError::TooBig => "too big",
            CsError::NoSections => "no more sections",
            CsError::Library => "library error",
            _ => "error",
        };
        write!(f, "{} (cs_error {})", s, self.code())
    }
}

impl core::error::Error for CsError {}

/// `cpg_reason_t`: why a member appears in a left or joined list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Reason {
    /// Member-list entries carry 0.
    Undefined = 0,
    /// `cpg_join`.
    Join = 1,
    /// `cpg_leave`.
    Leave = 2,
    /// The member's node left the ring.
    NodeDown = 3,
    /// The member's node (re)joined the ring, or partitions merged.
    NodeUp = 4,
    /// The member's process ended or finalized its handle while joined.
    ProcDown = 5,
}

impl Reason {
    /// Decode the numeric value.
    pub const fn from_u32(v: u32) -> Option<Reason> {
        Some(match v {
            0 => Reason::Undefined,
            1 => Reason::Join,
            2 => Reason::Leave,
            3 => Reason::NodeDown,
            4 => Reason::NodeUp,
            5 => Reason::ProcDown,
            _ => return None,
        })
    }
}

/// `cpg_guarantee_t`. We honour SAFE (Corosync ignores it); UNORDERED and
/// FIFO are delivered as AGREED (stronger satisfies weaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Guarantee {
    /// Delivered as AGREED.
    Unordered = 0,
    /// Delivered as AGREED.
    Fifo = 1,
    /// Total order.
    Agreed = 2,
    /// Total order, and delivered only once every member holds the message.
    Safe = 3,
}

impl Guarantee {
    /// Decode the numeric value.
    pub const fn from_u8(v: u8) -> Option<Guarantee> {
        Some(match v {
            0 => Guarantee::Unordered,
            1 => Guarantee::Fifo,
            2 => Guarantee::Agreed,
            3 => Guarantee::Safe,
            _ => return None,
        })
    }
    /// Whether delivery must wait until every member holds the message.
    pub const fn is_safe(self) -> bool {
        matches!(self, Guarantee::Safe)
    }
}

/// A CPG group name: 0..=128 arbitrary bytes, where the length counts
/// (`"GROUP"` with length 5 and with length 6 are different groups).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupName {
    bytes: heapless::Vec<u8, GROUP_NAME_MAX>,
}

impl GroupName {
    /// A name from bytes.
    ///
    /// # Errors
    /// [`CsError::NameTooLong`] above 128 bytes.
    pub fn new(bytes: &[u8]) -> Result<GroupName, CsError> {
        let mut v = heapless::Vec::new();
        v.extend_from_slice(bytes)
            .map_err(|_| CsError::NameTooLong)?;
        Ok(GroupName { bytes: v })
    }
    /// The name's bytes (exactly `len()` of them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Zero-length name (a legal group).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Maps keyed by name are searched with the bytes of a message in place
/// (`Eq`, `Ord` and `Hash` are the bytes' own, as `Borrow` requires).
impl core::borrow::Borrow<[u8]> for GroupName {
    fn borrow(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName(\"")?;
        for &b in self.bytes.iter() {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{:02x}", b)?;
            }
        }
        write!(f, "\")")
    }
}

/// A CPG member: a process on a node, `(nodeid, pid)` as in Corosync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberAddr {
    /// The member's node.
    pub nodeid: NodeId,
    /// The member's process id on that node.
    pub pid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_match_corosync() {
        assert_eq!(CsError::TryAgain.code(), 6);
        assert_eq!(CsError::NotExist.code(), 12);
        assert_eq!(CsError::NameTooLong.code(), 13);
        assert_eq!(CsError::Exist.code(), 14);
        assert_eq!(CsError::TooBig.code(), 26);
        assert_eq!(CsError::NoSections.code(), 27);
        for c in 0..200 {
            if let Some(e) = CsError::from_code(c) {
                assert_eq!(e.code(), c);
            }
        }
        assert_eq!(CsError::from_code(CS_OK), None);
    }

    #[test]
    fn group_name_length_counts() {
        let a = GroupName::new(b"GROUP").unwrap();
        let b = GroupName::new(b"GROUP\0").unwrap();
        assert_ne!(a, b);
        assert!(GroupName::new(&[0u8; 128]).is_ok());
        assert_eq!(GroupName::new(&[0u8; 129]), Err(CsError::NameTooLong));
    }
}

//! CPG messages: what the group layer multicasts through Totem.

use super::{NodeList, WireError};
use crate::types::{Guarantee, GroupName, Reason};

/// A CPG message. `Mcast` borrows its payload; `JoinList` iterates lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgMsg<'a> {
    /// A process joins a group.
    Join {
        /// Process id.
        pid: u32,
        /// Group.
        group: GroupName,
        /// Model flags (`CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`).
        flags: u32,
    },
    /// A process leaves a group (reason LEAVE, or PROCDOWN on finalize).
    Leave {
        /// Process id.
        pid: u32,
        /// Group.
        group: GroupName,
        /// `Reason::Leave` or `Reason::ProcDown`.
        reason: Reason,
    },
    /// Application data for a group.
    Mcast {
        /// Sending process.
        pid: u32,
        /// Group.
        group: GroupName,
        /// Requested guarantee.
        guarantee: Guarantee,
        /// The application's bytes.
        payload: &'a [u8],
    },
    /// After a ring change: every (pid, group) joined on the sending node.
    JoinList(JoinListIter<'a>),
    /// After a ring change: the nodes the sender saw leave.
    DownList(NodeList),
}

/// Entries of a checked joinlist: `(pid, group)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinListIter<'a> {
    data: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for JoinListIter<'a> {
    type Item = (u32, GroupName);
    fn next(&mut self) -> Option<(u32, GroupName)> {
        let _ = (self.data, self.remaining);
        todo!("wire helper")
    }
}

impl<'a> CpgMsg<'a> {
    /// Parse one CPG message (exact length).
    ///
    /// # Errors
    /// [`WireError`]; never panics.
    pub fn parse(data: &'a [u8]) -> Result<CpgMsg<'a>, WireError> {
        let _ = data;
        todo!("wire helper")
    }
    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        todo!("wire helper")
    }
    /// Emit into `buf`, returning the length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let _ = buf;
        todo!("wire helper")
    }
}

/// Bytes of a CPG MCAST header for a group name of `name_len` bytes: the
/// application payload follows it directly (zero-copy senders reserve this
/// much headroom).
pub const fn mcast_header_len(name_len: usize) -> usize {
    let _ = name_len;
    0
}

/// Emit only the CPG MCAST header (the payload is written or already lies
/// right after it), returning its length.
///
/// # Errors
/// [`WireError::BufferTooSmall`].
pub fn emit_mcast_header(pid: u32, group: &GroupName, guarantee: Guarantee, buf: &mut [u8]) -> Result<usize, WireError> {
    let _ = (pid, group, guarantee, buf);
    todo!("wire helper")
}

/// Emit a joinlist of `entries` into `buf`, returning the length.
///
/// # Errors
/// [`WireError::BufferTooSmall`], [`WireError::TooManyEntries`] beyond `JOINLIST_MAX`.
pub fn emit_joinlist<'e>(entries: impl ExactSizeIterator<Item = (u32, &'e GroupName)>, buf: &mut [u8]) -> Result<usize, WireError> {
    let _ = (entries, buf);
    todo!("wire helper")
}

/// Bytes a joinlist with these entries takes.
pub fn joinlist_len<'e>(entries: impl Iterator<Item = &'e GroupName>) -> usize {
    let _ = entries;
    todo!("wire helper")
}

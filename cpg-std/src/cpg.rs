//! The `Cpg` handle: Corosync's CPG functions with Rust types.
//!
//! Every function of `docs/spec/cpg-api.md` §4 is here, with the decisions of
//! §0: `Result<_, CsError>` (Corosync's numeric codes), `&[IoSlice]` for
//! `mcast_joined`, a [`ZcBuf`] moved into [`Cpg::zcb_mcast_joined`], the
//! handle's eventfd through [`AsFd`], and [`Cpg::dispatch`] in the four
//! Corosync modes.
//!
//! A `Cpg` is `Send + Sync`: one thread may block in `dispatch` while
//! another multicasts, and `finalize` from another thread makes the blocked
//! `dispatch` return `BAD_HANDLE` (`docs/ARCHITECTURE.md` "Threads").

use std::any::Any;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, Reason, RingId};

use crate::core::NodeOps;
use crate::node::Node;

/// `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`: deliver one totem confchg
/// right after the handle's own join confchg.
pub const MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: u32 = 0x01;

/// What `cpg_max_atomic_msgsize_get` reports (Corosync's figure).
pub const MAX_ATOMIC_MSGSIZE: u32 = cpg_core::limits::MAX_ATOMIC_MSG_SIZE;

/// `cs_dispatch_flags_t` (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DispatchFlags {
    /// Block until one event, dispatch it, return.
    One = 1,
    /// Dispatch every pending event without waiting; `Ok` when drained.
    All = 2,
    /// Dispatch forever; returns only on an error (finalize: `BAD_HANDLE`).
    Blocking = 3,
    /// One pending event, or `TRY_AGAIN` when there is none.
    OneNonblocking = 4,
}

/// `cpg_iteration_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IterationType {
    /// One entry per group, nodeid = pid = 0 (the group must be `None`).
    NameOnly = 1,
    /// The members of one group (the group must be given).
    OneGroup = 2,
    /// Every (group, nodeid, pid) (the group must be `None`).
    All = 3,
}

/// `cpg_flow_control_state_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FlowControlState {
    /// Sends are accepted.
    Disabled = 0,
    /// The local send queue is at its high-water mark: `mcast` answers TRY_AGAIN.
    Enabled = 1,
}

/// `cpg_iteration_description_t`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IterationDescription {
    /// Group.
    pub group: GroupName,
    /// Member's node (0 for `NameOnly`).
    pub nodeid: NodeId,
    /// Member's process (0 for `NameOnly`).
    pub pid: u32,
}

/// A message handed to the deliver callback (valid during the call).
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// Group.
    pub group: &'a GroupName,
    /// Sending process.
    pub sender: MemberAddr,
    /// Guarantee it was sent with.
    pub guarantee: Guarantee,
    /// The message bytes.
    pub msg: &'a [u8],
}

/// A group membership change handed to the confchg callback.
#[derive(Debug, Clone, Copy)]
pub struct ConfChg<'a> {
    /// Group.
    pub group: &'a GroupName,
    /// Members after the change, sorted by (nodeid, pid).
    pub members: &'a [MemberAddr],
    /// Members that left, with reasons.
    pub left: &'a [(MemberAddr, Reason)],
    /// Members that joined, with reasons.
    pub joined: &'a [(MemberAddr, Reason)],
}

/// The deliver callback.
pub type DeliverFn = Box<dyn FnMut(&Cpg, &Delivery<'_>) + Send>;
/// The confchg callback.
pub type ConfChgFn = Box<dyn FnMut(&Cpg, &ConfChg<'_>) + Send>;
/// The model v1 totem confchg callback: ring id and node list.
pub type TotemConfChgFn = Box<dyn FnMut(&Cpg, RingId, &[NodeId]) + Send>;

/// `cpg_callbacks_t` (for [`Cpg::initialize`]).
#[derive(Default)]
pub struct Callbacks {
    /// Messages.
    pub deliver: Option<DeliverFn>,
    /// Group membership changes.
    pub confchg: Option<ConfChgFn>,
}

/// `cpg_model_v1_data_t`. A `None` callback consumes its events silently.
#[derive(Default)]
pub struct ModelV1 {
    /// Messages.
    pub deliver: Option<DeliverFn>,
    /// Group membership changes.
    pub confchg: Option<ConfChgFn>,
    /// Ring changes; registered = receives every totem confchg of the node.
    pub totem_confchg: Option<TotemConfChgFn>,
    /// Only [`MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`] is legal.
    pub flags: u32,
}

impl From<Callbacks> for ModelV1 {
    fn from(c: Callbacks) -> ModelV1 {
        ModelV1 {
            deliver: c.deliver,
            confchg: c.confchg,
            totem_confchg: None,
            flags: 0,
        }
    }
}

impl std::fmt::Debug for ModelV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelV1")
            .field("deliver", &self.deliver.is_some())
            .field("confchg", &self.confchg.is_some())
            .field("totem_confchg", &self.totem_confchg.is_some())
            .field("flags", &self.flags)
            .finish()
    }
}

/// The opaque per-handle context (`cpg_context_get/set`).
pub type Context = Option<Arc<dyn Any + Send + Sync>>;

/// A CPG handle on a [`Node`]. Dropping it finalizes it.
pub struct Cpg {
    pub(crate) ops: Arc<dyn NodeOps>,
    pub(crate) handle: u64,
    pub(crate) fd: Arc<OwnedFd>,
    pub(crate) fast: Arc<crate::core::HandleFast>,
}

impl std::fmt::Debug for Cpg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cpg({:#018x})", self.handle)
    }
}

impl Cpg {
    /// `cpg_initialize`: model v1 without a totem callback, no context.
    ///
    /// # Errors
    /// `LIBRARY` if the node is stopped.
    pub fn initialize(node: &Node, callbacks: Callbacks) -> Result<Cpg, CsError> {
        Self::model_initialize(node, callbacks.into(), None)
    }

    /// `cpg_model_initialize` with model v1.
    ///
    /// # Errors
    /// `INVALID_PARAM` for a flag other than 0x01; `LIBRARY` if the node is
    /// stopped; `NO_RESOURCES` when the handle table is full.
    pub fn model_initialize(node: &Node, model: ModelV1, context: Context) -> Result<Cpg, CsError> {
        Self::model_initialize_with_pid(node, std::process::id(), model, context)
    }

    /// As [`Cpg::model_initialize`], as process `pid`: lets one test process
    /// play several CPG processes (members are `(nodeid, pid)`).
    ///
    /// # Errors
    /// As [`Cpg::model_initialize`].
    pub fn model_initialize_with_pid(
        node: &Node,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        if model.flags & !MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0 {
            return Err(CsError::InvalidParam);
        }
        let ops = node.ops();
        let (handle, fd, fast) = ops.open(pid, model, context)?;
        Ok(Cpg {
            ops,
            handle,
            fd,
            fast,
        })
    }

    /// The raw `cpg_handle_t` (random check value in the high 32 bits, slot
    /// index in the low 32).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// `cpg_finalize`. A joined handle leaves with reason PROCDOWN; a
    /// `dispatch` blocked on another thread returns `BAD_HANDLE`.
    ///
    /// # Errors
    /// `BAD_HANDLE` the second time.
    pub fn finalize(&self) -> Result<(), CsError> {
        self.ops.finalize(self.handle)
    }

    /// `cpg_fd_get`: poll it for readability; readable while events are
    /// pending (and forever once the handle is finalized or evicted).
    ///
    /// # Errors
    /// `BAD_HANDLE` after finalize.
    pub fn fd_get(&self) -> Result<BorrowedFd<'_>, CsError> {
        self.ops.check(self.handle, true)?;
        Ok(self.fd.as_fd())
    }

    /// `cpg_dispatch` (spec §5); callbacks run on this thread.
    ///
    /// # Errors
    /// `TRY_AGAIN` (`OneNonblocking`, nothing pending); `BAD_HANDLE` if the
    /// handle is (or gets) finalized; `LIBRARY` if it was evicted as a slow
    /// consumer or the node stopped; `BUSY` when called from inside one of
    /// this handle's own callbacks.
    pub fn dispatch(&self, flags: DispatchFlags) -> Result<(), CsError> {
        self.ops.dispatch(self, self.handle, flags)
    }

    /// `cpg_join`. One group per handle.
    ///
    /// # Errors
    /// `EXIST` (this handle is in a group, or this process already is in
    /// `group` through another handle); `TRY_AGAIN` (own leave not yet
    /// delivered, or the send queue is full); `LIBRARY`, `BAD_HANDLE`.
    pub fn join(&self, group: &GroupName) -> Result<(), CsError> {
        self.ops.join(self.handle, group)
    }

    /// `cpg_leave`. After the own LEAVE confchg the handle may join again.
    ///
    /// # Errors
    /// `NOT_EXIST` (not joined, already leaving, or another group's name);
    /// `TRY_AGAIN` (send queue full); `LIBRARY`, `BAD_HANDLE`.
    pub fn leave(&self, group: &GroupName) -> Result<(), CsError> {
        self.ops.leave(self.handle, group)
    }

    /// `cpg_mcast_joined`: the iovecs are concatenated and copied once
    /// into the send queue.
    ///
    /// # Errors
    /// `TOO_BIG` above `max_message_size`; `NOT_EXIST` when not joined
    /// (or leaving); `TRY_AGAIN` while flow control is on or while this handle holds
    /// more than half its queue cap of undispatched events; `LIBRARY`,
    /// `BAD_HANDLE`.
    pub fn mcast_joined(&self, guarantee: Guarantee, iov: &[IoSlice<'_>]) -> Result<(), CsError> {
        self.ops.mcast_fast(&self.fast, self.handle, guarantee, iov)
    }

    /// `cpg_membership_get` into a caller array: `Ok(n)` with the first `n`
    /// entries written.
    ///
    /// # Errors
    /// `NO_SPACE` when `out` is too small, with `*needed` set to the count
    /// and nothing written; `BAD_HANDLE`, `LIBRARY`.
    pub fn membership_get_into(
        &self,
        group: &GroupName,
        out: &mut [MemberAddr],
        needed: &mut usize,
    ) -> Result<usize, CsError> {
        let m = self.ops.membership(self.handle, group)?;
        *needed = m.len();
        if m.len() > out.len() {
            return Err(CsError::NoSpace);
        }
        out[..m.len()].copy_from_slice(&m);
        Ok(m.len())
    }

    /// `cpg_membership_get`: the group's current members as this node
    /// knows them (the caller need not be a member), sorted.
    ///
    /// # Errors
    /// `BAD_HANDLE`, `LIBRARY`.
    pub fn membership_get(&self, group: &GroupName) -> Result<Vec<MemberAddr>, CsError> {
        self.ops.membership(self.handle, group)
    }

    /// `cpg_local_get`: this node's id.
    ///
    /// # Errors
    /// `BAD_HANDLE`, `LIBRARY`.
    pub fn local_get(&self) -> Result<NodeId, CsError> {
        self.ops.local_get(self.handle)
    }

    /// `cpg_flow_control_state_get`: real (spec §0).
    ///
    /// # Errors
    /// `BAD_HANDLE`, `LIBRARY`.
    pub fn flow_control_state_get(&self) -> Result<FlowControlState, CsError> {
        Ok(if self.ops.flow_control(self.handle)? {
            FlowControlState::Enabled
        } else {
            FlowControlState::Disabled
        })
    }

    /// `cpg_context_get`.
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn context_get(&self) -> Result<Context, CsError> {
        self.ops.context_get(self.handle)
    }

    /// `cpg_context_set`.
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn context_set(&self, context: Context) -> Result<(), CsError> {
        self.ops.context_set(self.handle, context)
    }

    /// `cpg_max_atomic_msgsize_get`: 1,047,552 (Corosync's figure; larger
    /// messages are fragmented by the engine, up to `max_message_size`).
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn max_atomic_msgsize_get(&self) -> Result<u32, CsError> {
        self.ops.check(self.handle, true)?;
        Ok(MAX_ATOMIC_MSGSIZE)
    }

    /// `cpg_iteration_initialize`: a snapshot of the group table now.
    ///
    /// # Errors
    /// `INVALID_PARAM` for `OneGroup` without a group or another type with
    /// one; `BAD_HANDLE`, `LIBRARY`.
    pub fn iteration_initialize(
        &self,
        ty: IterationType,
        group: Option<&GroupName>,
    ) -> Result<Iteration, CsError> {
        let entries = self.ops.snapshot(self.handle, ty, group)?;
        Ok(Iteration {
            ops: self.ops.clone(),
            parent: self.handle,
            entries: entries.into_iter(),
            finalized: false,
        })
    }

    /// `cpg_zcb_alloc`: a zero-copy buffer of `size` payload bytes (a slot
    /// of the registered pool, or below `zc_copy_threshold` a reused heap
    /// buffer). Its contents are unspecified, as Corosync's: a reused
    /// buffer may hold this handle's earlier bytes.
    ///
    /// # Errors
    /// `TOO_BIG` above the largest slot class; `TRY_AGAIN` when the pool is
    /// exhausted; `BAD_HANDLE`, `LIBRARY`.
    pub fn zcb_alloc(&self, size: usize) -> Result<ZcBuf, CsError> {
        self.ops.zcb_alloc(&self.fast, self.handle, size)
    }

    /// `cpg_zcb_free`: gives the buffer back.
    ///
    /// # Errors
    /// `BAD_HANDLE` (the buffer is freed all the same).
    pub fn zcb_free(&self, buf: ZcBuf) -> Result<(), CsError> {
        drop(buf);
        self.ops.check(self.handle, true)
    }

    /// `cpg_zcb_mcast_joined`: multicast the first `len` bytes of `buf`
    /// without copying them (at or above `zc_copy_threshold`). The buffer
    /// is moved in: the network may read it until every member holds the
    /// message, and it returns to the pool afterwards.
    ///
    /// # Errors
    /// As [`Cpg::mcast_joined`], plus `INVALID_PARAM` for `len` beyond the
    /// buffer or a buffer of another node. When the error is found before
    /// the buffer was handed to the engine (always for `NOT_EXIST`,
    /// `TOO_BIG`, `INVALID_PARAM` and flow control's `TRY_AGAIN`), the
    /// buffer comes back in the error.
    pub fn zcb_mcast_joined(
        &self,
        guarantee: Guarantee,
        buf: ZcBuf,
        len: usize,
    ) -> Result<(), ZcSendError> {
        self.ops
            .zcb_mcast(&self.fast, self.handle, guarantee, buf, len)
    }
}

impl AsFd for Cpg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Cpg {
    fn drop(&mut self) {
        let _ = self.ops.finalize(self.handle);
    }
}

/// `cpg_iteration_*`: a snapshot walked with [`Iteration::next_entry`].
pub struct Iteration {
    ops: Arc<dyn NodeOps>,
    parent: u64,
    entries: std::vec::IntoIter<IterationDescription>,
    finalized: bool,
}

impl Iteration {
    /// `cpg_iteration_next`.
    ///
    /// # Errors
    /// `NO_SECTIONS` past the end; `BAD_HANDLE` once this iteration or its
    /// handle is finalized; `LIBRARY` if the handle was evicted.
    pub fn next_entry(&mut self) -> Result<IterationDescription, CsError> {
        if self.finalized {
            return Err(CsError::BadHandle);
        }
        self.ops.check(self.parent, false)?;
        self.entries.next().ok_or(CsError::NoSections)
    }

    /// `cpg_iteration_finalize`.
    ///
    /// # Errors
    /// `BAD_HANDLE` if already finalized (or its handle is).
    pub fn finalize(&mut self) -> Result<(), CsError> {
        if self.finalized {
            return Err(CsError::BadHandle);
        }
        self.finalized = true;
        self.ops.check(self.parent, true)
    }
}

impl Iterator for Iteration {
    type Item = IterationDescription;
    fn next(&mut self) -> Option<IterationDescription> {
        self.next_entry().ok()
    }
}

/// The bytes behind a [`ZcBuf`]: a driver buffer of the node's frame type.
pub(crate) trait ZcStorage: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// A heap buffer below `zc_copy_threshold` (sent by copy).
    fn is_small(&self) -> bool {
        false
    }
}

/// A zero-copy buffer (`cpg_zcb_alloc`): write the message into it, then
/// move it into [`Cpg::zcb_mcast_joined`]. Dereferences to its payload
/// bytes; dropping it frees it.
pub struct ZcBuf {
    pub(crate) storage: Box<dyn ZcStorage>,
    pub(crate) node: usize,
}

impl ZcBuf {
    /// Payload capacity in bytes (the size asked for).
    pub fn capacity(&self) -> usize {
        self.storage.bytes().len()
    }
    /// Address of the first payload byte (for zero-copy proofs).
    pub fn as_ptr(&self) -> *const u8 {
        self.storage.bytes().as_ptr()
    }
}

impl std::ops::Deref for ZcBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.storage.bytes()
    }
}

impl std::ops::DerefMut for ZcBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.storage.bytes_mut()
    }
}

impl std::fmt::Debug for ZcBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZcBuf")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A failed [`Cpg::zcb_mcast_joined`]: the code, and the buffer when it was
/// not consumed.
#[derive(Debug)]
pub struct ZcSendError {
    /// The status code.
    pub error: CsError,
    /// The buffer, back to the caller (retry, or free it).
    pub buf: Option<ZcBuf>,
}

impl std::fmt::Display for ZcSendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ZcSendError {}

impl From<ZcSendError> for CsError {
    fn from(e: ZcSendError) -> CsError {
        e.error
    }
}

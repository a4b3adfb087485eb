//! The `Cpg` handle: Corosync's CPG functions with Rust types.
//!
//! Every function of `docs/spec/cpg-api.md` §4 is here, with the decisions of
//! §0: `Result<_, CsError>` (Corosync's numeric codes), `&[IoSlice]` for
//! `mcast_joined`, a [`ZcBuf`] moved into [`Cpg::zcb_mcast_joined`], the
//! handle's pollable fd through [`AsFd`], and [`Cpg::dispatch`] in the four
//! Corosync modes.
//!
//! A `Cpg` is `Send + Sync`: one thread may block in `dispatch` while
//! another multicasts, and `finalize` from another thread makes the blocked
//! `dispatch` return `BAD_HANDLE` (`docs/ARCHITECTURE.md` "Threads").

use std::any::Any;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use cpg_core::ipc::IterScope;
use cpg_core::{CsError, GroupName, Guarantee, MemberAddr, NodeId, RingId};

use crate::handles::dispatch::{DispatchMode, EventSink, HandleEvent};
use crate::handles::ops::{DynNode, HandleOptions, IterStart};
use crate::handles::staging::Staging;
use crate::node::Node;

pub use crate::handles::dispatch::{ConfChg, Delivery};
pub use crate::handles::route::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
pub use crate::handles::zc::{ZcBuf, ZcSendError};
pub use crate::handles::Context;

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

/// A CPG handle on a [`Node`] ([`Cpg::model_initialize`]) or on a
/// connection to `cpgd` ([`Cpg::connect`]). Dropping it finalizes it.
pub struct Cpg {
    node: Arc<dyn DynNode>,
    handle: u64,
    fd: Arc<OwnedFd>,
    staging: Arc<Staging>,
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

    /// As [`Cpg::model_initialize`], on behalf of process `pid` of this
    /// host: what a daemon serving other processes (`cpgd`) opens for each
    /// client connection, so the member is the client's real pid (from
    /// `SO_PEERCRED`), never the daemon's.
    ///
    /// # Errors
    /// As [`Cpg::model_initialize`].
    pub fn model_initialize_for_process(
        node: &Node,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        Self::model_initialize_with_pid(node, pid, model, context)
    }

    /// As [`Cpg::model_initialize_for_process`], for a client of a daemon
    /// whose model's callbacks forward events elsewhere: `totem_events`
    /// says whether the handle receives every totem confchg (the client
    /// has a totem callback), whatever `model.totem_confchg` is (it must be
    /// set for the initial one the flag asks for to be handed out).
    ///
    /// # Errors
    /// As [`Cpg::model_initialize`].
    #[doc(hidden)]
    pub fn model_initialize_for_client(
        node: &Node,
        pid: u32,
        model: ModelV1,
        totem_events: bool,
        context: Context,
    ) -> Result<Cpg, CsError> {
        Self::open_on(node, pid, model, totem_events, context)
    }

    /// As [`Cpg::model_initialize`], as process `pid`: lets one process
    /// play several CPG processes (members are `(nodeid, pid)`; the
    /// idiomatic layer's `JoinOptions::pid`, and tests through
    /// [`crate::testing::model_initialize_with_pid`]).
    ///
    /// # Errors
    /// As [`Cpg::model_initialize`].
    pub(crate) fn model_initialize_with_pid(
        node: &Node,
        pid: u32,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        let totem = model.totem_confchg.is_some();
        Self::open_on(node, pid, model, totem, context)
    }

    fn open_on(
        node: &Node,
        pid: u32,
        model: ModelV1,
        wants_totem: bool,
        context: Context,
    ) -> Result<Cpg, CsError> {
        if model.flags & !MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0 {
            return Err(CsError::InvalidParam);
        }
        let node = node.dyn_node();
        let options = HandleOptions {
            flags: model.flags,
            wants_totem,
            callbacks: Arc::new(Mutex::new(model)),
        };
        let (handle, fd, staging) = node.open(pid, options, context)?;
        Ok(Cpg {
            node,
            handle,
            fd,
            staging,
        })
    }

    /// `cpg_model_initialize` on a connection to `cpgd`, the per-host
    /// daemon (`docs/spec/ipc.md`): one connection per handle, as in
    /// Corosync. The socket is `socket`, else `$CPGD_SOCKET`
    /// ([`crate::SOCKET_ENV`]), else [`crate::DEFAULT_SOCKET`]. The handle
    /// behaves as one opened on an embedded [`Node`].
    ///
    /// # Errors
    /// `INVALID_PARAM` for a flag other than 0x01 (before connecting);
    /// the daemon's refusal (`ACCESS` for a user it does not serve,
    /// `TRY_AGAIN` while it is not yet in a ring, `NO_RESOURCES` at its
    /// connection limit, `VERSION`); `LIBRARY` when no daemon listens.
    pub fn connect(
        socket: Option<&std::path::Path>,
        model: ModelV1,
        context: Context,
    ) -> Result<Cpg, CsError> {
        let path = crate::client::socket_path(socket);
        let totem = model.totem_confchg.is_some();
        let client = crate::client::ClientNode::connect(&path, model.flags, totem)?;
        let options = HandleOptions {
            flags: model.flags,
            wants_totem: model.totem_confchg.is_some(),
            callbacks: Arc::new(Mutex::new(model)),
        };
        let (handle, fd, staging) = client.open(std::process::id(), options, context)?;
        Ok(Cpg {
            node: client,
            handle,
            fd,
            staging,
        })
    }

    /// `cpg_initialize` on a connection to `cpgd` at the default socket
    /// (`$CPGD_SOCKET`, else [`crate::DEFAULT_SOCKET`]): model v1 without a
    /// totem callback, no context.
    ///
    /// # Errors
    /// As [`Cpg::connect`].
    pub fn initialize_daemon(callbacks: Callbacks) -> Result<Cpg, CsError> {
        Self::connect(None, callbacks.into(), None)
    }

    /// The raw `cpg_handle_t` (random check value in the high 32 bits; the
    /// low 32: the slot index on a node, the daemon's connection id on a
    /// connection).
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// `cpg_finalize`. A joined handle leaves with reason PROCDOWN; a
    /// `dispatch` blocked on another thread returns `BAD_HANDLE`.
    ///
    /// # Errors
    /// `BAD_HANDLE` the second time.
    pub fn finalize(&self) -> Result<(), CsError> {
        self.node.finalize(self.handle)
    }

    /// `cpg_fd_get`: poll it for readability; readable while events are
    /// pending (and forever once the handle is finalized or evicted). On
    /// an embedded node an eventfd; on a connection to cpgd the
    /// connection's Unix socket (its `SO_PEERCRED` names the daemon).
    ///
    /// # Errors
    /// `BAD_HANDLE` after finalize.
    pub fn fd_get(&self) -> Result<BorrowedFd<'_>, CsError> {
        self.node.check(self.handle, true)?;
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
        let mode = match flags {
            DispatchFlags::One => DispatchMode {
                limit: 1,
                block: true,
            },
            DispatchFlags::All => DispatchMode {
                limit: usize::MAX,
                block: false,
            },
            DispatchFlags::Blocking => DispatchMode {
                limit: usize::MAX,
                block: true,
            },
            DispatchFlags::OneNonblocking => DispatchMode {
                limit: 1,
                block: false,
            },
        };
        self.node
            .dispatch(self.handle, mode, &mut RunCallbacks { cpg: self })
    }

    /// Dispatch at most `limit` pending events without waiting: cpgd moves
    /// a bounded batch into a client's event ring per call (one node lock,
    /// one mailbox lock per batch), never more than the ring can take soon.
    ///
    /// # Errors
    /// As [`Cpg::dispatch`] with `OneNonblocking` (`TRY_AGAIN`: nothing
    /// pending); `INVALID_PARAM` for a limit of 0.
    #[doc(hidden)]
    pub fn dispatch_up_to(&self, limit: usize) -> Result<(), CsError> {
        if limit == 0 {
            return Err(CsError::InvalidParam);
        }
        let mode = DispatchMode {
            limit,
            block: false,
        };
        self.node
            .dispatch(self.handle, mode, &mut RunCallbacks { cpg: self })
    }

    /// `cpg_join`. One group per handle.
    ///
    /// # Errors
    /// `EXIST` (this handle is in a group, or this process already is in
    /// `group` through another handle); `TRY_AGAIN` (own leave not yet
    /// delivered, or the send queue is full); `LIBRARY`, `BAD_HANDLE`.
    pub fn join(&self, group: &GroupName) -> Result<(), CsError> {
        self.node.join(self.handle, group)
    }

    /// `cpg_leave`. After the own LEAVE confchg the handle may join again.
    ///
    /// # Errors
    /// `NOT_EXIST` (not joined, already leaving, or another group's name);
    /// `TRY_AGAIN` (send queue full); `LIBRARY`, `BAD_HANDLE`.
    pub fn leave(&self, group: &GroupName) -> Result<(), CsError> {
        self.node.leave(self.handle, group)
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
        self.node
            .mcast_joined(&self.staging, self.handle, guarantee, iov)
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
        let m = self.node.membership(self.handle, group)?;
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
        self.node.membership(self.handle, group)
    }

    /// `cpg_local_get`: this node's id.
    ///
    /// # Errors
    /// `BAD_HANDLE`, `LIBRARY`.
    pub fn local_get(&self) -> Result<NodeId, CsError> {
        self.node.local_get(self.handle)
    }

    /// The node's ring, members, links and counters, asked of cpgd
    /// (`STATUS`, `docs/spec/ipc.md`): what `cpgtool status --daemon`
    /// prints. Not a Corosync function.
    ///
    /// # Errors
    /// `NOT_SUPPORTED` on a handle of an embedded node (ask the node:
    /// [`crate::Node::status_report`]); `BAD_HANDLE`, `LIBRARY`.
    pub fn status_report(&self) -> Result<crate::status::StatusReport, CsError> {
        let first = self.node.status_page(self.handle, 0)?;
        let mut links = first.links.clone();
        // later pages, while the daemon says more links follow; a page
        // that does not move on ends it (a node list that shrank)
        while (links.len() as u64) < u64::from(first.link_total) {
            let p = self.node.status_page(self.handle, links.len() as u32)?;
            if p.links.is_empty() || p.link_offset as usize != links.len() {
                break;
            }
            links.extend(p.links);
        }
        Ok(crate::status::StatusReport::from_page(
            &first, links, "cpgd",
        ))
    }

    /// `cpg_flow_control_state_get`: real (spec §0).
    ///
    /// # Errors
    /// `BAD_HANDLE`, `LIBRARY`.
    pub fn flow_control_state_get(&self) -> Result<FlowControlState, CsError> {
        Ok(if self.node.flow_control(self.handle)? {
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
        self.node.context_get(self.handle)
    }

    /// `cpg_context_set`.
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn context_set(&self, context: Context) -> Result<(), CsError> {
        self.node.context_set(self.handle, context)
    }

    /// `cpg_max_atomic_msgsize_get`: 1,047,552 (Corosync's figure; larger
    /// messages are fragmented by the engine, up to `max_message_size`).
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn max_atomic_msgsize_get(&self) -> Result<u32, CsError> {
        self.node.check(self.handle, true)?;
        Ok(MAX_ATOMIC_MSGSIZE)
    }

    /// The largest message this handle's node takes (its
    /// `max_message_size`, 64 MiB by default): every message up to it is
    /// delivered whole, as one callback, on every member or on none; a
    /// larger one is `TOO_BIG`. What `libcpg.so.4` answers for
    /// `cpg_max_atomic_msgsize_get`.
    ///
    /// # Errors
    /// `BAD_HANDLE`.
    pub fn max_message_size(&self) -> Result<usize, CsError> {
        self.node.check(self.handle, true)?;
        Ok(self.node.message_max())
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
        let scope = match (ty, group) {
            (IterationType::OneGroup, Some(name)) => IterScope::OneGroup(name.clone()),
            (IterationType::NameOnly, None) => IterScope::NameOnly,
            (IterationType::All, None) => IterScope::All,
            _ => return Err(CsError::InvalidParam),
        };
        let source = match self.node.iteration_initialize(self.handle, &scope)? {
            IterStart::Snapshot(entries) => IterSource::Snapshot(entries.into_iter()),
            IterStart::Daemon(id) => IterSource::Daemon {
                id,
                batch: VecDeque::new(),
                ended: false,
            },
        };
        Ok(Iteration {
            node: self.node.clone(),
            parent: self.handle,
            source,
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
        self.node.zcb_alloc(&self.staging, self.handle, size)
    }

    /// A zero-copy buffer over a driver buffer made elsewhere: what cpgd
    /// sends a client's slot with (`cpg_uring::RxBuf::external`, memory the
    /// daemon never writes, so the buffer has no writable bytes). Its
    /// message is the whole buffer; `zcb_mcast_joined` then hands it to the
    /// engine without a copy. A node whose transport has another frame type
    /// (the in-process loopback) refuses it there with `INVALID_PARAM`.
    #[doc(hidden)]
    pub fn zcb_over_driver_buf(&self, buf: cpg_uring::RxBuf) -> ZcBuf {
        let len = buf.len();
        ZcBuf {
            storage: Box::new(crate::handles::zc::ZcFrame { buf, start: 0, len }),
            // the node's key: its state's address, the data pointer of the
            // trait object
            node: Arc::as_ptr(&self.node) as *const u8 as usize,
        }
    }

    /// `cpg_zcb_free`: gives the buffer back.
    ///
    /// # Errors
    /// `BAD_HANDLE` (the buffer is freed all the same).
    pub fn zcb_free(&self, buf: ZcBuf) -> Result<(), CsError> {
        self.node.zcb_free(self.handle, buf)
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
        self.node
            .zcb_mcast(&self.staging, self.handle, guarantee, buf, len)
    }
}

/// Runs a handle's callbacks on the events its node hands out.
struct RunCallbacks<'a> {
    cpg: &'a Cpg,
}

impl EventSink for RunCallbacks<'_> {
    fn event(&mut self, callbacks: &mut (dyn Any + Send), ev: HandleEvent<'_>) {
        let Some(cb) = callbacks.downcast_mut::<ModelV1>() else {
            // a handle is opened with its ModelV1 (`model_initialize_with_pid`)
            return;
        };
        let cpg = self.cpg;
        match ev {
            HandleEvent::Deliver(d) => {
                if let Some(f) = cb.deliver.as_mut() {
                    f(cpg, &d);
                }
            }
            HandleEvent::ConfChg(c) => {
                if let Some(f) = cb.confchg.as_mut() {
                    f(cpg, &c);
                }
            }
            HandleEvent::Totem(ring, members) => {
                if let Some(f) = cb.totem_confchg.as_mut() {
                    f(cpg, ring, members);
                }
            }
        }
    }
}

impl AsFd for Cpg {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Cpg {
    fn drop(&mut self) {
        let _ = self.node.finalize(self.handle);
    }
}

/// `cpg_iteration_*`: a snapshot of the group table walked with
/// [`Iteration::next_entry`] (taken by the embedded node at initialize, or
/// kept by cpgd and fetched in batches of up to 16).
pub struct Iteration {
    node: Arc<dyn DynNode>,
    parent: u64,
    source: IterSource,
    finalized: bool,
}

/// Where an iteration's entries come from.
enum IterSource {
    Snapshot(std::vec::IntoIter<IterationDescription>),
    Daemon {
        id: u32,
        batch: VecDeque<IterationDescription>,
        ended: bool,
    },
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
        self.node.check(self.parent, false)?;
        match &mut self.source {
            IterSource::Snapshot(entries) => entries.next().ok_or(CsError::NoSections),
            IterSource::Daemon { id, batch, ended } => {
                if batch.is_empty() && !*ended {
                    batch.extend(self.node.iteration_next(self.parent, *id)?);
                    *ended = batch.is_empty();
                }
                batch.pop_front().ok_or(CsError::NoSections)
            }
        }
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
        match self.source {
            IterSource::Snapshot(_) => self.node.check(self.parent, true),
            IterSource::Daemon { id, .. } => self.node.iteration_finalize(self.parent, id, true),
        }
    }
}

impl Drop for Iteration {
    fn drop(&mut self) {
        if let (false, IterSource::Daemon { id, .. }) = (self.finalized, &self.source) {
            // the daemon's snapshot is freed now, not at the handle's end
            let _ = self.node.iteration_finalize(self.parent, *id, false);
        }
    }
}

impl Iterator for Iteration {
    type Item = IterationDescription;
    fn next(&mut self) -> Option<IterationDescription> {
        self.next_entry().ok()
    }
}

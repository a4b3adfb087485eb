//! A CPG handle over a connection to `cpgd`, the per-host daemon: the
//! client library of `docs/spec/ipc.md`.
//!
//! One connection per handle, as in Corosync (the handle is the
//! connection). [`ClientNode`] implements the surface the embedded node
//! implements ([`DynNode`] with its supertraits `SendOps` and
//! `DispatchOps`), so a [`crate::Cpg`] opened with [`crate::Cpg::connect`]
//! behaves as one opened on a [`crate::Node`].
//!
//! | module | owns |
//! |---|---|
//! | [`conn`] | setup, the connection's state under its one lock, requests and their replies, waiting (ring wake-ups, the daemon's death), the pollable fd |
//! | [`events`] | the event ring read into the handle's queue (pieces, confchg parts, flow control, eviction), the join state, dispatch |
//! | [`echo`] | a short wait in `mcast_joined` for the message's own delivery, while such waits pay |
//! | [`send`] | `mcast_joined`: a message into the request ring whole or in pieces, answered locally (asynchronous, spec §7) |
//! | [`zc`] | zero-copy buffers: slots of the connection's zc region (the crate's one `unsafe`) |
//!
//! This module: the handle's functions that are requests and replies
//! (join, leave, queries, iteration, finalize) or local.
//!
//! Threads: the state is behind one mutex, never held while a callback
//! runs or while a thread sleeps. A thread waiting for its reply reads the
//! event ring and keeps the events it reads past, in order, for the next
//! dispatch.
//!
//! The pollable fd (`fd_get`) is the connection's socket, as Corosync's
//! is (its peer credentials are the daemon's), level-triggered through
//! doorbell bytes (`docs/spec/ipc.md` §5): the daemon writes one with the
//! first event after this side armed the doorbell; this side reads them
//! back only when it returns with nothing pending, and arms again. So it
//! is readable while events are pending (a dispatch that leaves events
//! behind leaves the byte), never for a reply alone, and for good once the
//! socket hangs up (the daemon died, or this side closed it: finalize, an
//! eviction, a protocol error). This side's threads sleep on the client
//! eventfd, not on the socket.

mod conn;
mod echo;
mod events;
mod send;
mod zc;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cpg_core::ipc::{IterScope, Op};
use cpg_core::{CsError, GroupName, MemberAddr, NodeId};

pub(crate) use self::conn::ClientNode;
use self::conn::{Answer, Phase, State};
use crate::cpg::IterationDescription;
use crate::handles::ops::{DynNode, HandleOptions, IterStart};
use crate::handles::staging::Staging;
use crate::handles::Context;

/// Where `cpgd` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/cpgd/cpgd.sock";

/// The environment variable that names cpgd's socket (read when
/// [`crate::Cpg::connect`] is given no path).
pub const SOCKET_ENV: &str = "CPGD_SOCKET";

/// The socket to connect to: `path`, else `$CPGD_SOCKET`, else
/// [`DEFAULT_SOCKET`].
pub(crate) fn socket_path(path: Option<&Path>) -> PathBuf {
    match path {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(SOCKET_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from),
    }
}

/// The result of a request whose reply has a body of one kind: anything
/// else cannot come (the reply's kind is checked when it is read).
fn unexpected<T>(_: Answer) -> Result<T, CsError> {
    Err(CsError::Library)
}

impl DynNode for ClientNode {
    fn open(
        &self,
        _pid: u32,
        options: HandleOptions,
        context: Context,
    ) -> Result<(u64, Arc<OwnedFd>, Arc<Staging>), CsError> {
        // the daemon knows this process's pid from the socket (SO_PEERCRED)
        let mut g = self.lock();
        if g.opened {
            return Err(CsError::Exist);
        }
        g.opened = true;
        g.callbacks = Some(options.callbacks);
        g.context = context;
        g.ev.wants_totem = options.wants_totem;
        // the doorbell armed: the application may poll from now on
        self.finish(g);
        // No staging: the request ring is this handle's queue.
        Ok((
            self.handle,
            self.fds.sock.clone(),
            Arc::new(Staging::default()),
        ))
    }

    fn finalize(&self, h: u64) -> Result<(), CsError> {
        let mut g = self.lock();
        if h != self.handle || g.phase != Phase::Open {
            return Err(CsError::BadHandle);
        }
        g.phase = Phase::Finalizing;
        // a thread blocked in dispatch (or waiting for a reply) returns
        // BAD_HANDLE now
        self.wake_waiters(&mut g);
        if !(g.dead || g.evicted) {
            // The daemon replies, then closes; a joined handle's members
            // see PROCDOWN. Its death meanwhile ends the wait too.
            let gate = |s: &State| (s.dead || s.evicted).then_some(CsError::Library);
            let (g2, _) = self.send_and_wait(g, Op::Finalize, None, gate);
            g = g2;
        }
        g.phase = Phase::Finalized;
        // unmapped now, or when the last zero-copy buffer is dropped
        g.conn = None;
        g.ev.clear();
        g.callbacks = None;
        g.replies.clear();
        // the daemon sees the hang-up (if it has not closed first), and
        // the pollable fd stays readable from now on
        let _ = rustix::net::shutdown(&*self.fds.sock, rustix::net::Shutdown::Both);
        self.wake_waiters(&mut g);
        // a finalized handle is gone whatever the daemon said, as
        // Corosync's; one the daemon evicted or lost finalizes fine
        Ok(())
    }

    fn check(&self, h: u64, local_only: bool) -> Result<(), CsError> {
        self.lock().check(self.handle, h, local_only)
    }

    fn join(&self, h: u64, group: &GroupName) -> Result<(), CsError> {
        self.request(
            h,
            Op::Join {
                group: group.clone(),
            },
        )
        .map(|_| ())
    }

    fn leave(&self, h: u64, group: &GroupName) -> Result<(), CsError> {
        self.request(
            h,
            Op::Leave {
                group: group.clone(),
            },
        )
        .map(|_| ())
    }

    fn membership(&self, h: u64, group: &GroupName) -> Result<Vec<MemberAddr>, CsError> {
        // one request per CPG_MEMBERS_MAX members
        let mut out: Vec<MemberAddr> = Vec::new();
        loop {
            let offset = u32::try_from(out.len()).map_err(|_| CsError::Library)?;
            let op = Op::MembershipGet {
                group: group.clone(),
                offset,
            };
            let (total, members) = match self.request(h, op)? {
                Answer::Membership {
                    total,
                    offset: o,
                    members,
                } if o == offset || members.is_empty() => (total, members),
                a => return unexpected(a),
            };
            let last = members.is_empty();
            out.extend(members);
            if last || out.len() >= total as usize {
                return Ok(out);
            }
        }
    }

    fn status_page(&self, h: u64, link_offset: u32) -> Result<crate::status::StatusPage, CsError> {
        match self.request(h, Op::Status { link_offset })? {
            Answer::Status(p) => Ok(*p),
            _ => Err(CsError::Library),
        }
    }

    fn local_get(&self, h: u64) -> Result<NodeId, CsError> {
        // answered from Welcome (a daemon's node id never changes), but a
        // dead daemon is reported as Corosync's round trip would
        let mut g = self.lock();
        g.check(self.handle, h, false)?;
        if self.probe(&mut g) {
            return Err(CsError::Library);
        }
        Ok(self.welcome.node_id)
    }

    fn flow_control(&self, h: u64) -> Result<bool, CsError> {
        // Answered from the daemon's FLOW_CONTROL events, read now
        // (docs/spec/ipc.md §6): a FLOW_CONTROL_STATE_GET request would
        // wait behind the multicasts the daemon holds back while flow
        // control is on, which is when it is asked. A dead daemon is
        // reported as Corosync's round trip would.
        let mut g = self.lock();
        g.check(self.handle, h, false)?;
        self.pump(&mut g);
        let r = if self.probe(&mut g) {
            Err(CsError::Library)
        } else {
            g.gate().map_or(Ok(g.ev.fc), Err)
        };
        self.settle_if_needed(g);
        r
    }

    fn context_get(&self, h: u64) -> Result<Context, CsError> {
        let g = self.lock();
        g.check(self.handle, h, true)?;
        Ok(g.context.clone())
    }

    fn context_set(&self, h: u64, c: Context) -> Result<(), CsError> {
        let mut g = self.lock();
        g.check(self.handle, h, true)?;
        g.context = c;
        Ok(())
    }

    fn message_max(&self) -> usize {
        self.welcome.message_max as usize
    }

    fn iteration_initialize(&self, h: u64, scope: &IterScope) -> Result<IterStart, CsError> {
        let op = Op::IterationInitialize {
            scope: scope.clone(),
        };
        match self.request(h, op)? {
            Answer::IterationInitialize(id) => Ok(IterStart::Daemon(id)),
            a => unexpected(a),
        }
    }

    fn iteration_next(&self, h: u64, id: u32) -> Result<Vec<IterationDescription>, CsError> {
        match self.request(h, Op::IterationNext { iter_id: id }) {
            Ok(Answer::IterationNext(entries)) => Ok(entries),
            Ok(a) => unexpected(a),
            // past the end
            Err(CsError::NoSections) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn iteration_finalize(&self, h: u64, id: u32, wait: bool) -> Result<(), CsError> {
        if !wait {
            let mut g = self.lock();
            if g.check(self.handle, h, false).is_ok() {
                self.send_detached(&mut g, Op::IterationFinalize { iter_id: id });
            }
            return Ok(());
        }
        match self.request(h, Op::IterationFinalize { iter_id: id }) {
            // the daemon frees its iterations with the connection
            Ok(_) | Err(CsError::Library) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

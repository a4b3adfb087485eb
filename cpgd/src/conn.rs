//! One client connection: the handle opened for its process, its request
//! ring, and what each request does (`docs/spec/ipc.md` §6–§10).
//!
//! Requests are copied out of shared memory before they are parsed; a
//! record that does not parse, pieces that do not add up, an impossible
//! index or a slot the client does not own end this connection only
//! ([`Verdict::Disconnect`]). A well-formed request that makes no sense now
//! gets an error reply, exactly as the embedded handle answers it.

use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cpg_core::ipc::{
    Assembly, Event, IterEntries, IterEntry, IterScope, List, Message, Op, PieceHead, Reply,
    ReplyBody, Request, RequestKind, ITERATION_BATCH_MAX,
};
use cpg_core::limits::CPG_MEMBERS_MAX;
use cpg_core::{CsError, GroupName, Guarantee};
use cpg_ipc::{DaemonConn, PeerCred, RingRx, SharedMem};
use cpg_std::cpg::{FlowControlState, Iteration, IterationType, ModelV1};
use cpg_std::{Cpg, Node};

use crate::events::EventOut;
use crate::zc::{ConnRegion, SlotLie, ZcSlots};
use cpg_std::cpg::{ZcBuf, ZcSendError};
use cpg_uring::{ExternalRegion, ExternalRegions, RegionId, RxBuf};

/// Why a connection is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The client hung up (exit, kill): PROCDOWN for its members.
    HangUp,
    /// `FINALIZE` was answered.
    Finalized,
    /// A malformed record, impossible index, or lie.
    Malformed(&'static str),
    /// Evicted as a slow consumer.
    Evicted,
}

/// What serving a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Carry on.
    Keep,
    /// Close it.
    Disconnect(Cut),
}

/// A multicast the engine answered TRY_AGAIN: retried before any other
/// request of the connection (the daemon never answers TRY_AGAIN for a
/// send it took).
#[derive(Debug)]
struct Stalled {
    req_id: u32,
    guarantee: Guarantee,
    reply: bool,
    what: StalledData,
}

#[derive(Debug)]
enum StalledData {
    /// A copy of the message.
    Copy(Vec<u8>),
    /// A client slot, by reference (zero copy).
    Zc(ZcBuf, usize),
}

/// A message arriving in pieces.
#[derive(Debug)]
struct Partial {
    req_id: u32,
    guarantee: Guarantee,
    reply: bool,
    data: Vec<u8>,
    /// Refused at the first piece: its continuations are dropped.
    refused: bool,
}

/// Counters of one connection (summed into the daemon's).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnCounters {
    pub(crate) requests: u64,
    pub(crate) mcasts: u64,
    pub(crate) zc_mcasts: u64,
    pub(crate) request_bytes_copied: u64,
    pub(crate) stalls: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A live connection.
pub(crate) struct Live {
    pub(crate) cred: PeerCred,
    pub(crate) cpg: Cpg,
    mem: Arc<SharedMem>,
    requests: RingRx,
    pub(crate) daemon_wake: cpg_ipc::EventFd,
    pub(crate) client_wake: cpg_ipc::EventFd,
    /// The connection's socket (a duplicate): the client's doorbell.
    bell: OwnedFd,
    pub(crate) out: Arc<Mutex<EventOut>>,
    zc: ZcSlots,
    body: Vec<u8>,
    assembly: Assembly,
    partial: Option<Partial>,
    stalled: Option<Stalled>,
    iterations: HashMap<u32, Iteration>,
    next_iter: u32,
    message_max: usize,
    pub(crate) counters: ConnCounters,
    /// Waiting for event ring room (the handle is not dispatched).
    pub(crate) blocked_events: bool,
    /// The zero-copy region as the driver sends from it, and its
    /// registration (None without one: the loopback transport, no region).
    region: Option<Arc<ConnRegion>>,
    registration: Option<(ExternalRegions, RegionId)>,
    /// Slots whose payload the engine holds by reference, by the start of
    /// the buffer in the region.
    zc_inflight: HashMap<usize, cpg_core::pool::SlotId>,
    /// Below this a zero-copy message is copied (the node's `zc_copy_threshold`).
    zc_threshold: usize,
    /// What `STATUS` answers.
    status: cpg_std::status::StatusSource,
}

/// Records and bytes one visit may take from a connection (fairness).
const VISIT_RECORDS: usize = 256;
const VISIT_EVENTS: usize = 256;
/// Events one dispatch moves into the ring at most (fewer when recent
/// deliveries were large, `EventOut::batch`): what does not fit waits in
/// the connection (at most this many events beyond the ring), the rest
/// stays in the handle's bounded queue.
const DISPATCH_BATCH: usize = 32;

impl Live {
    /// Open the handle for `cred.pid` on `node` with the connection's
    /// callbacks writing into its event ring. `totem`: the client has a
    /// totem callback (`Hello`): it gets every totem confchg, else only
    /// the initial one `initial_totem` asks for, as an embedded handle.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        node: &Node,
        cred: PeerCred,
        initial_totem: bool,
        totem: bool,
        sock: &UnixStream,
        conn: DaemonConn,
        zc_pool: &cpg_core::pool::PoolConfig,
        message_max: usize,
        zc_threshold: usize,
        status: cpg_std::status::StatusSource,
    ) -> Result<Live, CsError> {
        let DaemonConn {
            mem,
            requests,
            events,
            deliveries,
            daemon_wake,
            client_wake,
            layout,
            ..
        } = conn;
        let out = Arc::new(Mutex::new(EventOut::new(events, deliveries)));
        let (o1, o2, o3) = (out.clone(), out.clone(), out.clone());
        let model = ModelV1 {
            deliver: Some(Box::new(move |_, d| {
                lock(&o1).deliver(d.group, d.sender, d.msg);
            })),
            confchg: Some(Box::new(move |_, c| {
                lock(&o2).confchg(c.group, c.members, c.left, c.joined);
            })),
            // Registered so the initial one can come; the node hands out
            // every totem confchg only if the client has a callback.
            totem_confchg: Some(Box::new(move |_, ring, nodes| {
                lock(&o3).totem(ring, nodes);
            })),
            flags: if initial_totem {
                cpg_std::cpg::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
            } else {
                0
            },
        };
        let cpg = Cpg::model_initialize_for_client(node, cred.pid, model, totem, None)?;
        let bell = sock
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| CsError::NoResources)?;
        let region_off = usize::try_from(layout.zc_region.offset).map_err(|_| CsError::Library)?;
        let region_len = usize::try_from(layout.zc_region.len).map_err(|_| CsError::Library)?;
        let zc = ZcSlots::new(zc_pool, region_off).ok_or(CsError::NoResources)?;
        let region = ConnRegion::new(mem.clone(), region_off, region_len).map(Arc::new);
        // registered with io_uring as a fixed buffer where the transport
        // can (the driver falls back to its non-fixed zero-copy paths)
        let registration = match (&region, node.external_regions()) {
            (Some(r), Some(regs)) => {
                let dynr: Arc<dyn ExternalRegion> = r.clone();
                regs.add(dynr).ok().map(|id| (regs, id))
            }
            _ => None,
        };
        Ok(Live {
            cred,
            cpg,
            mem,
            requests,
            daemon_wake,
            client_wake,
            bell,
            out,
            zc,
            body: Vec::new(),
            assembly: Assembly::new(),
            partial: None,
            stalled: None,
            iterations: HashMap::new(),
            next_iter: 1,
            message_max,
            counters: ConnCounters::default(),
            blocked_events: false,
            region,
            registration,
            zc_inflight: HashMap::new(),
            zc_threshold,
            status,
        })
    }

    /// Give the zero-copy region's registration back (the driver keeps the
    /// mapping until its last send from it is done).
    pub(crate) fn unregister(&mut self) {
        if let Some((regs, id)) = self.registration.take() {
            let _ = regs.remove(id);
        }
    }

    /// The zero-copy region's address and length in this process.
    pub(crate) fn zc_region_addr(&self) -> Option<(usize, usize)> {
        self.region
            .as_ref()
            .map(|r| (r.base().as_ptr() as usize, r.len()))
    }

    /// Slots whose sends are all done are free again.
    fn reap_slots(&mut self) {
        if let Some(r) = &self.region {
            for start in r.take_released() {
                if let Some(slot) = self.zc_inflight.remove(&start) {
                    self.zc.finished(slot);
                }
            }
        }
    }

    /// Whether a multicast waits for the engine (retry on a short timer).
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// The node's flow control now, as this connection's handle reads it.
    pub(crate) fn node_flow_control(&self) -> Option<bool> {
        self.cpg
            .flow_control_state_get()
            .ok()
            .map(|s| s == FlowControlState::Enabled)
    }

    /// Tell the client of an edge of the node's flow control: the event
    /// goes in order with the others, and the client is woken if it sleeps.
    pub(crate) fn flow_control(&mut self, enabled: bool) {
        let wake = {
            let mut o = lock(&self.out);
            o.flow_control(enabled);
            o.publish()
        };
        self.wake(wake, false);
    }

    /// Wake the client as the event ring's publish said (and, with
    /// `eventfd`, for room made in its request ring).
    fn wake(&self, wake: cpg_ipc::ring::Wake, eventfd: bool) {
        if wake.eventfd || eventfd {
            self.client_wake.signal();
        }
        if wake.bell {
            cpg_ipc::bell::ring(self.bell.as_fd());
        }
    }

    /// Zero-copy slots the client holds.
    pub(crate) fn zc_in_use(&self) -> usize {
        self.zc.in_use()
    }

    /// Serve the connection: events into the ring, then requests, then
    /// publish and wake the client if it sleeps.
    pub(crate) fn service(&mut self) -> Verdict {
        self.daemon_wake.drain();
        self.reap_slots();
        let v = self.dispatch_events();
        if v != Verdict::Keep {
            return v;
        }
        let v = self.take_requests();
        // publish whatever replies and events were written
        let wake = lock(&self.out).publish();
        let room = self.requests.release();
        self.wake(wake, room);
        if lock(&self.out).broken {
            return Verdict::Disconnect(Cut::Malformed("event ring indices"));
        }
        v
    }

    fn dispatch_events(&mut self) -> Verdict {
        let mut n = 0;
        loop {
            let clear = {
                let mut o = lock(&self.out);
                o.flush();
                o.is_clear()
            };
            if !clear {
                // wait for the client to make room; it signals our eventfd
                if lock(&self.out).prepare_wait() {
                    continue;
                }
                self.blocked_events = true;
                // the node may have evicted the handle meanwhile (its queue
                // reached the cap while the client read nothing)
                if self.cpg.local_get() == Err(CsError::Library) {
                    return self.evicted();
                }
                return Verdict::Keep;
            }
            self.blocked_events = false;
            if n >= VISIT_EVENTS {
                return Verdict::Keep;
            }
            let batch = lock(&self.out).batch(DISPATCH_BATCH);
            n += batch;
            match self.cpg.dispatch_up_to(batch) {
                Ok(()) => {}
                Err(CsError::TryAgain) | Err(CsError::BadHandle) => return Verdict::Keep,
                // evicted by the node's slow-consumer policy (or the node
                // stopped)
                Err(_) => return self.evicted(),
            }
        }
    }

    /// The handle is gone under the client: the last word goes in the
    /// reply reserve (the socket's close says the same if even that is full).
    fn evicted(&mut self) -> Verdict {
        let mut o = lock(&self.out);
        o.reply(&Event::Evicted {
            error: CsError::Library,
        });
        let wake = o.publish();
        drop(o);
        self.wake(wake, false);
        Verdict::Disconnect(Cut::Evicted)
    }

    fn take_requests(&mut self) -> Verdict {
        if !self.retry_stalled() {
            return Verdict::Keep;
        }
        for _ in 0..VISIT_RECORDS {
            if !lock(&self.out).reply_fits() {
                // a reply to the next request might not fit: wait for room
                if !lock(&self.out).prepare_wait() {
                    self.blocked_events = true;
                    return Verdict::Keep;
                }
            }
            match self.requests.refresh() {
                Ok(_) => {}
                Err(_) => return Verdict::Disconnect(Cut::Malformed("request ring indices")),
            }
            let (info, at, len) = match self.requests.next_in_place() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // sleep until the client signals (the flag stays set)
                    match self.requests.prepare_sleep() {
                        Ok(true) => return Verdict::Keep,
                        Ok(false) => continue,
                        Err(_) => {
                            return Verdict::Disconnect(Cut::Malformed("request ring indices"))
                        }
                    }
                }
                Err(_) => return Verdict::Disconnect(Cut::Malformed("request ring record")),
            };
            self.counters.requests += 1;
            let v = match PieceHead::len_for(info.kind) {
                // a message piece: its head is parsed from a private copy,
                // its bytes go to the engine from the ring (one copy)
                Some(head_len) if len >= head_len => {
                    let mut head = [0u8; 16];
                    let head = &mut head[..head_len];
                    self.mem.copy_out(at, head);
                    match PieceHead::parse(info.kind, info.flags, head, len - head_len) {
                        Ok(h) => {
                            let mem = self.mem.clone();
                            let piece = mem
                                .shared_bytes(at + head_len, len - head_len)
                                .unwrap_or(&[]);
                            self.piece(h, piece)
                        }
                        Err(_) => Verdict::Disconnect(Cut::Malformed("request record")),
                    }
                }
                _ => {
                    let mut body = std::mem::take(&mut self.body);
                    body.resize(len, 0);
                    self.mem.copy_out(at, &mut body);
                    let v = match Request::parse(info.kind, info.flags, &body) {
                        Ok(req) => self.handle(req),
                        Err(_) => Verdict::Disconnect(Cut::Malformed("request record")),
                    };
                    self.body = body;
                    v
                }
            };
            if v != Verdict::Keep || self.stalled.is_some() {
                return v;
            }
        }
        Verdict::Keep
    }

    fn reply(&mut self, req_id: u32, op: RequestKind, result: Result<ReplyBody<'_>, CsError>) {
        lock(&self.out).reply(&Event::Reply(Reply { req_id, op, result }));
    }

    fn done(&mut self, req_id: u32, op: RequestKind, r: Result<(), CsError>) {
        self.reply(req_id, op, r.map(|()| ReplyBody::Done));
    }

    fn handle(&mut self, req: Request<'_>) -> Verdict {
        let id = req.req_id;
        let kind = req.op.kind();
        if self.partial.is_some() && !matches!(req.op, Op::McastMore { .. }) {
            return Verdict::Disconnect(Cut::Malformed("a request inside a message's pieces"));
        }
        match req.op {
            Op::Join { group } => {
                let r = self.cpg.join(&group);
                self.done(id, kind, r);
            }
            Op::Leave { group } => {
                let r = self.cpg.leave(&group);
                self.done(id, kind, r);
            }
            Op::Mcast {
                guarantee,
                reply,
                total_len,
                piece,
            } => {
                let h = PieceHead::Mcast {
                    req_id: id,
                    guarantee,
                    reply,
                    total_len,
                };
                return self.piece(h, piece);
            }
            Op::McastMore { piece } => return self.piece(PieceHead::More { req_id: id }, piece),
            Op::McastZc {
                guarantee,
                reply,
                slot,
                offset,
                len,
            } => {
                let (at, n) = match self.zc.range(slot, offset, len) {
                    Ok(r) => r,
                    Err(SlotLie::NotOwned) => {
                        return Verdict::Disconnect(Cut::Malformed(
                            "MCAST_ZC of a slot it does not own",
                        ))
                    }
                    Err(SlotLie::Range) => {
                        return Verdict::Disconnect(Cut::Malformed(
                            "MCAST_ZC range outside its slot",
                        ))
                    }
                };
                self.counters.zc_mcasts += 1;
                if n >= self.zc_threshold {
                    if let Some(v) = self.send_zc(id, guarantee, reply, slot, offset, n) {
                        return v;
                    }
                }
                let mem = self.mem.clone();
                let bytes = mem.shared_bytes(at, n).unwrap_or(&[]);
                let v = self.send(id, guarantee, reply, bytes);
                // sent by copy (or refused, or held as a stalled copy): the
                // slot is free again
                self.zc.done(slot);
                return v;
            }
            Op::ZcAlloc { len } => {
                let r = self.zc.alloc(len as usize);
                match r {
                    Ok((slot, offset, capacity)) => self.reply(
                        id,
                        kind,
                        Ok(ReplyBody::ZcAlloc {
                            slot,
                            offset,
                            capacity,
                        }),
                    ),
                    Err(e) => self.reply(id, kind, Err(e)),
                }
            }
            Op::ZcFree { slot } => {
                if self.zc.free(slot).is_err() {
                    return Verdict::Disconnect(Cut::Malformed(
                        "ZC_FREE of a slot it does not own",
                    ));
                }
                self.done(id, kind, Ok(()));
            }
            Op::MembershipGet { group, offset } => self.membership(id, &group, offset),
            Op::LocalGet => {
                let r = self.cpg.local_get();
                self.reply(id, kind, r.map(|nodeid| ReplyBody::LocalGet { nodeid }));
            }
            Op::IterationInitialize { scope } => {
                let (ty, group) = match &scope {
                    IterScope::NameOnly => (IterationType::NameOnly, None),
                    IterScope::OneGroup(g) => (IterationType::OneGroup, Some(g)),
                    IterScope::All => (IterationType::All, None),
                };
                match self.cpg.iteration_initialize(ty, group) {
                    Ok(it) => {
                        if self.iterations.len() >= 64 {
                            self.reply(id, kind, Err(CsError::NoResources));
                        } else {
                            let iter_id = self.next_iter;
                            self.next_iter = self.next_iter.wrapping_add(1).max(1);
                            self.iterations.insert(iter_id, it);
                            self.reply(id, kind, Ok(ReplyBody::IterationInitialize { iter_id }));
                        }
                    }
                    Err(e) => self.reply(id, kind, Err(e)),
                }
            }
            Op::IterationNext { iter_id } => self.iteration_next(id, iter_id),
            Op::IterationFinalize { iter_id } => {
                let r = match self.iterations.remove(&iter_id) {
                    Some(mut it) => it.finalize(),
                    None => Err(CsError::BadHandle),
                };
                self.done(id, kind, r);
            }
            Op::FlowControlStateGet => {
                let r = self.cpg.flow_control_state_get();
                self.reply(
                    id,
                    kind,
                    r.map(|s| ReplyBody::FlowControlState {
                        enabled: s == FlowControlState::Enabled,
                    }),
                );
            }
            Op::Status { link_offset } => {
                let st = self.status.clone();
                st.reply_page(link_offset, |p| {
                    self.reply(id, kind, Ok(ReplyBody::Status(*p)));
                });
            }
            Op::Finalize => {
                let r = self.cpg.finalize();
                self.done(id, kind, r);
                return Verdict::Disconnect(Cut::Finalized);
            }
        }
        Verdict::Keep
    }

    /// An `MCAST` or `MCAST_MORE` piece (`piece` may lie in shared memory:
    /// it is only copied, never looked at).
    fn piece(&mut self, head: PieceHead, piece: &[u8]) -> Verdict {
        if self.partial.is_some() && matches!(head, PieceHead::Mcast { .. }) {
            return Verdict::Disconnect(Cut::Malformed("a request inside a message's pieces"));
        }
        match head {
            PieceHead::Mcast {
                req_id: id,
                guarantee,
                reply,
                total_len,
            } => {
                if total_len as usize > self.message_max {
                    if self.assembly.first(id, total_len, piece.len()).is_err() {
                        return Verdict::Disconnect(Cut::Malformed("MCAST pieces"));
                    }
                    self.done(id, RequestKind::Mcast, Err(CsError::TooBig));
                    self.finish_or_keep_partial(id, guarantee, reply, Vec::new(), true);
                    return Verdict::Keep;
                }
                let first = match self.assembly.first(id, total_len, piece.len()) {
                    Ok(p) => p,
                    Err(_) => return Verdict::Disconnect(Cut::Malformed("MCAST pieces")),
                };
                if first.complete {
                    return self.send(id, guarantee, reply, piece);
                }
                let mut data = Vec::with_capacity(total_len as usize);
                data.extend_from_slice(piece);
                self.partial = Some(Partial {
                    req_id: id,
                    guarantee,
                    reply,
                    data,
                    refused: false,
                });
                Verdict::Keep
            }
            PieceHead::More { req_id: id } => {
                let p = match self.assembly.more(id, piece.len()) {
                    Ok(p) => p,
                    Err(_) => return Verdict::Disconnect(Cut::Malformed("MCAST_MORE pieces")),
                };
                let Some(partial) = self.partial.as_mut() else {
                    return Verdict::Disconnect(Cut::Malformed("MCAST_MORE without MCAST"));
                };
                if !partial.refused {
                    partial.data.extend_from_slice(piece);
                }
                if p.complete {
                    let partial = self.partial.take().expect("checked above");
                    if !partial.refused {
                        return self.send(
                            partial.req_id,
                            partial.guarantee,
                            partial.reply,
                            &partial.data,
                        );
                    }
                }
                Verdict::Keep
            }
        }
    }

    fn finish_or_keep_partial(
        &mut self,
        req_id: u32,
        guarantee: Guarantee,
        reply: bool,
        data: Vec<u8>,
        refused: bool,
    ) {
        if self.assembly.is_idle() {
            return;
        }
        self.partial = Some(Partial {
            req_id,
            guarantee,
            reply,
            data,
            refused,
        });
    }

    /// Hand a client's slot to the engine by reference: the kernel reads the
    /// payload from the client's shared memory (no copy in user space). The
    /// slot is the daemon's until the engine and every send are done with
    /// it. `None` when this connection cannot (no region): copy instead.
    fn send_zc(
        &mut self,
        req_id: u32,
        guarantee: Guarantee,
        reply: bool,
        slot: cpg_core::pool::SlotId,
        offset: u32,
        len: usize,
    ) -> Option<Verdict> {
        let region = self.region.clone()?;
        let start = self.zc.payload_offset(slot)? + offset as usize;
        let dynr: Arc<dyn ExternalRegion> = region;
        let buf = RxBuf::external(dynr, start..start + len).ok()?;
        self.zc.sent(slot);
        self.zc_inflight.insert(start, slot);
        let zb = self.cpg.zcb_over_driver_buf(buf);
        self.counters.mcasts += 1;
        Some(self.submit_zc(req_id, guarantee, reply, zb, len))
    }

    fn submit_zc(
        &mut self,
        req_id: u32,
        guarantee: Guarantee,
        reply: bool,
        zb: ZcBuf,
        len: usize,
    ) -> Verdict {
        match self.cpg.zcb_mcast_joined(guarantee, zb, len) {
            Ok(()) => {
                if reply {
                    self.done(req_id, RequestKind::McastZc, Ok(()));
                }
            }
            Err(ZcSendError {
                error: CsError::TryAgain,
                buf: Some(b),
            }) => {
                self.counters.stalls += 1;
                self.stalled = Some(Stalled {
                    req_id,
                    guarantee,
                    reply,
                    what: StalledData::Zc(b, len),
                });
            }
            // the buffer, if any, drops here: its slot comes back through
            // the region's release hook
            Err(e) => self.done(req_id, RequestKind::McastZc, Err(e.error)),
        }
        Verdict::Keep
    }

    /// Hand a whole message to the handle: by copy into the engine.
    fn send(&mut self, req_id: u32, guarantee: Guarantee, reply: bool, data: &[u8]) -> Verdict {
        self.counters.mcasts += 1;
        self.counters.request_bytes_copied += data.len() as u64;
        match self.cpg.mcast_joined(guarantee, &[IoSlice::new(data)]) {
            Ok(()) => {
                if reply {
                    self.done(req_id, RequestKind::Mcast, Ok(()));
                }
            }
            Err(CsError::TryAgain) => {
                self.counters.stalls += 1;
                self.stalled = Some(Stalled {
                    req_id,
                    guarantee,
                    reply,
                    what: StalledData::Copy(data.to_vec()),
                });
            }
            Err(e) => self.done(req_id, RequestKind::Mcast, Err(e)),
        }
        Verdict::Keep
    }

    /// Retry a stalled multicast; `true` when none is stalled any more.
    fn retry_stalled(&mut self) -> bool {
        let Some(s) = self.stalled.take() else {
            return true;
        };
        match s.what {
            StalledData::Copy(data) => {
                match self.cpg.mcast_joined(s.guarantee, &[IoSlice::new(&data)]) {
                    Ok(()) => {
                        if s.reply {
                            self.done(s.req_id, RequestKind::Mcast, Ok(()));
                        }
                    }
                    Err(CsError::TryAgain) => {
                        self.stalled = Some(Stalled {
                            what: StalledData::Copy(data),
                            ..s
                        });
                    }
                    Err(e) => self.done(s.req_id, RequestKind::Mcast, Err(e)),
                }
            }
            StalledData::Zc(zb, len) => {
                self.counters.stalls = self.counters.stalls.saturating_sub(1);
                self.submit_zc(s.req_id, s.guarantee, s.reply, zb, len);
            }
        }
        self.stalled.is_none()
    }

    fn membership(&mut self, id: u32, group: &GroupName, offset: u32) {
        let kind = RequestKind::MembershipGet;
        match self.cpg.membership_get(group) {
            Ok(all) => {
                let total = all.len();
                let start = (offset as usize).min(total);
                let end = (start + CPG_MEMBERS_MAX).min(total);
                let members = &all[start..end];
                self.reply(
                    id,
                    kind,
                    Ok(ReplyBody::Membership {
                        total: total as u32,
                        offset: start as u32,
                        members: List::from_slice(members),
                    }),
                );
            }
            Err(e) => self.reply(id, kind, Err(e)),
        }
    }

    fn iteration_next(&mut self, id: u32, iter_id: u32) {
        let kind = RequestKind::IterationNext;
        let Some(it) = self.iterations.get_mut(&iter_id) else {
            self.reply(id, kind, Err(CsError::BadHandle));
            return;
        };
        let mut batch: Vec<IterEntry> = Vec::with_capacity(ITERATION_BATCH_MAX);
        let mut err = None;
        while batch.len() < ITERATION_BATCH_MAX {
            match it.next_entry() {
                Ok(d) => batch.push(IterEntry {
                    group: d.group,
                    nodeid: d.nodeid,
                    pid: d.pid,
                }),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if batch.is_empty() {
            self.reply(id, kind, Err(err.unwrap_or(CsError::NoSections)));
            return;
        }
        self.reply(
            id,
            kind,
            Ok(ReplyBody::IterationNext {
                entries: IterEntries::from_slice(&batch),
            }),
        );
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("cred", &self.cred).finish()
    }
}

// `Message` is used through `Request::parse`.
#[allow(unused_imports)]
use Message as _;

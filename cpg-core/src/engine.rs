//! The engine a driver runs: Totem ordering and membership ([`crate::totem`])
//! with the CPG group layer ([`crate::group`]) on top, behind the sans-IO
//! contract of `docs/ARCHITECTURE.md`.
//!
//! # Calling order
//! After every `handle_packet`, `handle_timeout` or `submit`:
//! 1. drain [`Engine::poll_persist`] and make the ring seq durable,
//! 2. drain [`Engine::poll_transmit`] and send,
//! 3. drain [`Engine::poll_event`] and hand deliveries to the application,
//! 4. drain [`Engine::poll_release`] and recycle those receive buffers,
//! 5. arm a timer for [`Engine::poll_timeout`].
//!
//! # Buffers
//! A received frame is an owned handle `F` (`Clone + AsRef<[u8]>`): the
//! driver's receive buffer. The engine keeps it as long as it needs it (to
//! fill gaps, to serve retransmissions until every member has it, and to
//! hand deliveries to the application by reference) and hands it back
//! through `poll_release`. Deliveries borrow from their frame through a
//! clone of the handle, never a copy of the bytes.

use alloc::vec::Vec;

use crate::types::{GroupName, Guarantee, MemberAddr, NodeId, RingId};

// The vocabulary of the layers below, under the paths drivers have always
// used (`cpg_core::engine::FrameRef`, ...): buffers and frames (`frame`),
// Totem's state, counters, options and configuration changes (`totem`),
// the group layer's requests and events (`group`).
pub use crate::frame::{Dest, FrameBuf, FrameRef, Payload, Transmit, ZcError};
pub use crate::group::{Event, Request};
pub use crate::totem::Options as EngineOptions;
pub use crate::totem::{ConfigChange, State, Stats, TraceDeliver};

/// Totem + CPG groups for one node: the whole protocol behind the sans-IO
/// contract (see the module docs for the calling order).
///
/// `Clone` copies the whole protocol state and shares the frame handles
/// (`F`) it holds: simulators snapshot a warmed-up cluster once and run
/// every fuzz input from a copy. A driver runs one engine per node; a copy
/// next to it would send and release the same buffers twice.
#[derive(Clone)]
pub struct Engine<F> {
    totem: crate::totem::Totem<F>,
    groups: crate::group::Groups,
    events: alloc::collections::VecDeque<Event<F>>,
    flow_control: bool,
}

impl<F: FrameBuf> Engine<F> {
    /// A node that starts alone in GATHER. `initial_ring_seq` is the ring seq
    /// persisted by the previous incarnation plus one (1 on first start);
    /// 0 is refused so a restarted node never reuses a ring id.
    ///
    /// # Errors
    /// A [`crate::limits::ConfigError`] naming the bad setting.
    pub fn new(
        config: crate::limits::Config,
        options: EngineOptions,
        initial_ring_seq: u64,
        now: crate::Instant,
    ) -> Result<Self, crate::limits::ConfigError> {
        let groups = crate::group::Groups::new(config.node_id, config.max_message_size);
        let totem = crate::totem::Totem::new(config, options, initial_ring_seq, now)?;
        let mut e = Engine {
            totem,
            groups,
            events: alloc::collections::VecDeque::new(),
            flow_control: false,
        };
        e.pump(now);
        Ok(e)
    }

    /// A frame arrived from `from` (the transport's idea of the peer).
    pub fn handle_packet(&mut self, now: crate::Instant, from: NodeId, frame: F) {
        self.totem.handle_packet(now, from, frame);
        self.pump(now);
    }

    /// A deadline from [`Engine::poll_timeout`] passed (spurious calls are no-ops).
    pub fn handle_timeout(&mut self, now: crate::Instant) {
        self.totem.handle_timeout(now);
        self.pump(now);
    }

    /// A local process's request.
    ///
    /// # Errors
    /// Corosync's codes, with section 0's fixes: `Exist` (already joined or
    /// joining), `TryAgain` (send queue full, or a leave of the same
    /// process/group still in flight), `NotExist` (mcast or leave when not
    /// joined), `TooBig` (above `max_message_size`), `InvalidParam`,
    /// `Library` (after shutdown).
    pub fn submit(&mut self, now: crate::Instant, req: Request<'_>) -> Result<(), crate::CsError> {
        if self.totem.is_shut_down() {
            return Err(crate::CsError::Library);
        }
        let r = self.groups.submit(now, req, &mut self.totem);
        self.pump(now);
        r
    }

    /// `cpg_mcast_joined` for a run of one process's messages to one group,
    /// each with its guarantee. The engine takes them in order until its
    /// send queue is full, copying the ones it takes into one shared
    /// allocation instead of one per message (the staged small-message path
    /// of a handle layer). The iterator is walked at most twice (sizes,
    /// then bytes). Returns how many it took, and `Ok` if it took them all,
    /// otherwise the error of the first one it did not take: `TryAgain`
    /// (queue full), `NotExist` (not joined: none taken), `TooBig`,
    /// `Library` (after shutdown).
    pub fn submit_batch<'a>(
        &mut self,
        now: crate::Instant,
        pid: u32,
        group: &GroupName,
        msgs: impl Iterator<Item = (Guarantee, &'a [u8])> + Clone,
    ) -> (usize, Result<(), crate::CsError>) {
        if self.totem.is_shut_down() {
            return (0, Err(crate::CsError::Library));
        }
        let r = self
            .groups
            .submit_batch(now, pid, group, msgs, &mut self.totem);
        self.pump(now);
        r
    }

    /// Zero-copy `cpg_zcb_mcast_joined`: `buf[payload]` is the message,
    /// written by the application into a buffer it no longer touches. The
    /// engine writes every header into the headroom in front of `payload`
    /// (keep [`crate::limits::ZC_HEADROOM`] bytes free there) and sends the
    /// payload from where it lies: never copied in user space once it is at
    /// least `zc_copy_threshold` bytes. The buffer comes back through
    /// `poll_release` (once per frame that referenced it) when every member
    /// holds the message.
    ///
    /// A buffer whose [`FrameBuf::headers_inside`] is false (memory a
    /// client can still write, e.g. cpgd's shared memory) needs no
    /// headroom and is never written: every header is built in engine
    /// memory and each frame is a [`FrameRef::Gather`] of those headers and
    /// a range of `buf[payload]`, at any size, so the payload is never
    /// copied in user space (except into a recovery copy when a ring
    /// changes under it, as any frame). The wire bytes are those of the
    /// copying path. The sender's own delivery reads `buf[payload]` too.
    ///
    /// # Errors
    /// As [`Engine::submit`] for a `Request::Mcast`; `InvalidParam` for a
    /// range outside the buffer. The buffer comes back inside the error, so
    /// a caller can retry after TRY_AGAIN without losing its contents.
    pub fn submit_zc(
        &mut self,
        now: crate::Instant,
        pid: u32,
        group: &GroupName,
        guarantee: Guarantee,
        buf: F,
        payload: core::ops::Range<usize>,
    ) -> Result<(), ZcError<F>> {
        if self.totem.is_shut_down() {
            return Err(ZcError {
                error: crate::CsError::Library,
                buf: Some(buf),
            });
        }
        let r = self.groups.submit_zc(
            now,
            crate::group::McastTo {
                pid,
                group,
                guarantee,
            },
            buf,
            payload,
            &mut self.totem,
        );
        self.pump(now);
        r
    }

    /// Clean shutdown: multicast a LEAVE so others need not wait for a token
    /// loss; afterwards the engine ignores every input.
    pub fn shutdown(&mut self, now: crate::Instant) {
        self.totem.shutdown();
        self.pump(now);
    }

    /// A ring seq to make durable before any later transmit is sent.
    pub fn poll_persist(&mut self) -> Option<u64> {
        self.totem.poll_persist()
    }
    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<F>> {
        self.totem.poll_transmit()
    }
    /// The frame [`Engine::poll_transmit`] would return next, left queued.
    pub fn peek_transmit(&self) -> Option<&Transmit<F>> {
        self.totem.peek_transmit()
    }
    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event<F>> {
        self.events.pop_front()
    }
    /// A receive buffer the engine no longer holds.
    pub fn poll_release(&mut self) -> Option<F> {
        self.totem.poll_release()
    }
    /// The earliest deadline, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<crate::Instant> {
        self.totem.poll_timeout()
    }
    /// A one-line dump of the Totem state (failure reports, debugging).
    pub fn debug_line(&self) -> alloc::string::String {
        self.totem.debug_line()
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.totem.stats
    }
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.totem.node_id()
    }
    /// The configuration in force.
    pub fn config(&self) -> &crate::limits::Config {
        self.totem.config()
    }
    /// Totem membership state.
    pub fn state(&self) -> State {
        self.totem.state
    }
    /// Current (last entered) ring id.
    pub fn ring_id(&self) -> RingId {
        self.totem.my_ring_id
    }
    /// Members of the last installed ring.
    pub fn members(&self) -> &[NodeId] {
        &self.totem.memb
    }
    /// Whether this node holds (or has held and safely released) message
    /// `seq` of ring `ring`: used by the SAFE checker.
    pub fn holds(&self, ring: RingId, seq: u32) -> bool {
        self.totem.holds(ring, seq)
    }
    /// Current members of a group as this node knows them, sorted.
    pub fn group_members(&self, group: &GroupName) -> Vec<MemberAddr> {
        self.groups.members(group)
    }
    /// The CPG layer (groups, local states, last totem configuration).
    pub fn groups(&self) -> &crate::group::Groups {
        &self.groups
    }
    /// Bytes of the frames the receive windows hold, and of those above the
    /// seq the ring has reached as far as this node knows (at most
    /// `Config::recv_window_bytes_effective` per window; spec §3.7).
    pub fn window_bytes(&self) -> (usize, usize) {
        self.totem.window_bytes()
    }
    /// Whether the local send queue is at its high-water mark (mcast would
    /// answer TRY_AGAIN).
    pub fn flow_control_enabled(&self) -> bool {
        self.totem.flow_control_enabled()
    }
    /// Bytes of payload one frame carries (for sizing benchmarks).
    pub fn frame_payload_cap(&self) -> usize {
        self.totem.frame_payload_cap()
    }

    fn pump(&mut self, now: crate::Instant) {
        while let Some(ev) = self.totem.events.pop_front() {
            self.groups
                .on_totem_event(now, ev, &mut self.totem, &mut self.events);
        }
        let fc = self.totem.flow_control_enabled();
        if fc != self.flow_control {
            self.flow_control = fc;
            self.events.push_back(Event::FlowControl(fc));
        }
        self.totem.stats.dropped_malformed = self
            .totem
            .stats
            .dropped_malformed
            .max(self.groups.malformed);
    }
}

/// Check a configuration as [`Engine::new`] will: every setting
/// ([`crate::limits::Config::validate`]) and that the node list's largest
/// control frame fits `netmtu − frame_overhead`.
///
/// # Errors
/// A [`crate::limits::ConfigError`] naming the problem.
pub fn validate_config(config: &crate::limits::Config) -> Result<(), crate::limits::ConfigError> {
    crate::totem::validate_config(config)
}

#[cfg(test)]
mod tests {
    use alloc::collections::VecDeque;
    use alloc::sync::Arc;
    use alloc::vec;

    use super::*;
    use crate::frame::testing::TestBuf;
    use crate::limits::Config;
    use crate::wire::cpg::mcast_header_len;
    use crate::{Duration, Instant};

    /// MCAST frames' kind byte (frame header offset 3).
    const KIND_MCAST: u8 = 1;
    const PID: u32 = 7;

    fn group() -> GroupName {
        GroupName::new(b"zc-group").expect("short name")
    }

    /// A multicast frame of node 1 that read a shared buffer: the bytes in
    /// engine memory in front, and the range read from the buffer.
    struct GatherSend {
        head_len: usize,
        buf: usize,
        seg: usize,
        len: usize,
    }

    /// Engines `1..=n` on a lossless in-order network, every frame delivered
    /// at once; time jumps to the next deadline when nothing is in flight.
    struct Net {
        engines: Vec<Engine<TestBuf>>,
        now: Instant,
        queue: VecDeque<(usize, NodeId, TestBuf)>,
        /// Every multicast frame each node sent, as bytes.
        mcasts: Vec<Vec<Vec<u8>>>,
        /// Node 1's multicasts that read a shared buffer.
        gathers: Vec<GatherSend>,
        /// Node 1's multicasts that read no shared buffer.
        mcasts_without_shared: usize,
        events: Vec<Vec<Event<TestBuf>>>,
        released: Vec<TestBuf>,
    }

    impl Net {
        fn new(n: usize) -> Net {
            let ids: Vec<NodeId> = (1..=n as NodeId).collect();
            let engines = ids
                .iter()
                .map(|&id| {
                    let options = EngineOptions {
                        trace: true,
                        seq_base: 0,
                    };
                    Engine::new(Config::fast(id, &ids), options, 1, Instant::ZERO).expect("config")
                })
                .collect();
            let mut net = Net {
                engines,
                now: Instant::ZERO,
                queue: VecDeque::new(),
                mcasts: vec![Vec::new(); n],
                gathers: Vec::new(),
                mcasts_without_shared: 0,
                events: vec![Vec::new(); n],
                released: Vec::new(),
            };
            for i in 0..n {
                net.drain(i);
            }
            assert!(
                net.run_until(Duration::from_millis(5_000), |n| n.engines.iter().all(
                    |e| e.state() == State::Operational && e.members().len() == n.engines.len()
                ))
            );
            let g = group();
            for i in 0..n {
                let now = net.now;
                let join = Request::Join {
                    pid: PID,
                    group: &g,
                    flags: 0,
                };
                net.engines[i].submit(now, join).expect("join");
                net.drain(i);
            }
            assert!(net.run_until(Duration::from_millis(5_000), |n| n
                .engines
                .iter()
                .all(|e| e.group_members(&g).len() == n.engines.len())));
            net
        }

        fn drain(&mut self, i: usize) {
            let from = i as NodeId + 1;
            let n = self.engines.len();
            while let Some(t) = self.engines[i].poll_transmit() {
                let [head, _] = t.frame.segments();
                if head.get(3) == Some(&KIND_MCAST) {
                    self.mcasts[i].push(t.frame.to_vec());
                    if i == 0 {
                        match &t.frame {
                            FrameRef::Gather {
                                head,
                                buf: buf @ TestBuf::Shared(_),
                                range,
                            } => self.gathers.push(GatherSend {
                                head_len: head.len(),
                                buf: buf.as_ref().as_ptr() as usize,
                                seg: t.frame.segments()[1].as_ptr() as usize,
                                len: range.len(),
                            }),
                            FrameRef::Rx(TestBuf::Shared(_))
                            | FrameRef::Slot {
                                buf: TestBuf::Shared(_),
                                ..
                            } => panic!("a shared buffer sent as a whole frame"),
                            _ => self.mcasts_without_shared += 1,
                        }
                    }
                }
                let frame = match t.frame {
                    FrameRef::Own(a) => TestBuf::Rx(a),
                    FrameRef::Rx(f) => f,
                    other => TestBuf::Rx(Arc::from(other.to_vec())),
                };
                match t.dest {
                    Dest::Node(to) => self.queue.push_back((to as usize - 1, from, frame)),
                    Dest::AllOthers => {
                        for j in (0..n).filter(|&j| j != i) {
                            self.queue.push_back((j, from, frame.clone()));
                        }
                    }
                }
            }
            while let Some(ev) = self.engines[i].poll_event() {
                self.events[i].push(ev);
            }
            while let Some(b) = self.engines[i].poll_release() {
                self.released.push(b);
            }
        }

        fn step(&mut self) -> bool {
            if let Some((to, from, frame)) = self.queue.pop_front() {
                let now = self.now;
                self.engines[to].handle_packet(now, from, frame);
                self.drain(to);
                return true;
            }
            let Some(next) = self.engines.iter().filter_map(|e| e.poll_timeout()).min() else {
                return false;
            };
            self.now = self.now.max(next);
            for i in 0..self.engines.len() {
                if self.engines[i]
                    .poll_timeout()
                    .is_some_and(|d| d <= self.now)
                {
                    let now = self.now;
                    self.engines[i].handle_timeout(now);
                    self.drain(i);
                }
            }
            true
        }

        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
            let end = self.now + limit;
            while self.now < end {
                if done(self) {
                    return true;
                }
                if !self.step() {
                    break;
                }
            }
            done(self)
        }

        /// Every delivery at node `i + 1`: (sender, guarantee, bytes).
        fn delivered(&self, i: usize) -> Vec<(MemberAddr, Guarantee, Vec<u8>)> {
            self.events[i]
                .iter()
                .filter_map(|e| match e {
                    Event::Deliver {
                        sender,
                        guarantee,
                        payload,
                        ..
                    } => Some((*sender, *guarantee, payload.bytes().to_vec())),
                    _ => None,
                })
                .collect()
        }
    }

    fn payload(len: usize, k: usize) -> Vec<u8> {
        (0..len).map(|b| (b * 31 + k * 7 + b / 251) as u8).collect()
    }

    /// The sizes the zero-copy tests send: empty, one byte, around one
    /// frame's room, several frames, 1 MiB.
    fn sizes(cap: usize) -> Vec<usize> {
        let room = cap - 6 - mcast_header_len(group().len());
        vec![0, 1, room - 1, room, room + 1, 5 * cap + 3, 1 << 20]
    }

    /// A buffer whose headers stay outside (`headers_inside` false; any
    /// request for write access panics) is sent by reference, byte for
    /// byte as the copying path sends the same message, and delivered the
    /// same everywhere; its sender delivers it from the buffer itself and
    /// hands the buffer back once every frame is stable.
    #[test]
    fn shared_buffers_are_sent_by_reference_as_the_copying_path_sends() {
        let mut zc = Net::new(3);
        let mut copied = Net::new(3);
        let cap = zc.engines[0].frame_payload_cap();
        let g = group();
        for (k, len) in sizes(cap).into_iter().enumerate() {
            for guarantee in [Guarantee::Agreed, Guarantee::Safe] {
                let bytes = payload(len, k);
                // the payload sits in the middle of the buffer, no headroom
                let mut mem = vec![0xEEu8; len + 3];
                mem[1..1 + len].copy_from_slice(&bytes);
                let buf: Arc<[u8]> = Arc::from(mem);
                let (lo, hi) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
                let zc_before = zc.mcasts[0].len();
                let copied_before = copied.mcasts[0].len();
                zc.gathers.clear();
                zc.mcasts_without_shared = 0;
                let now = zc.now;
                zc.engines[0]
                    .submit_zc(
                        now,
                        PID,
                        &g,
                        guarantee,
                        TestBuf::Shared(buf.clone()),
                        1..1 + len,
                    )
                    .expect("submit_zc");
                zc.drain(0);
                let now = copied.now;
                let iov = [&bytes[..]];
                let req = Request::Mcast {
                    pid: PID,
                    group: &g,
                    guarantee,
                    iov: &iov,
                };
                copied.engines[0].submit(now, req).expect("submit");
                copied.drain(0);
                for net in [&mut zc, &mut copied] {
                    let want = net.delivered(0).len() + 1;
                    assert!(
                        net.run_until(Duration::from_millis(60_000), |n| (0..3)
                            .all(|i| n.delivered(i).len() == want)),
                        "size {len}: not delivered"
                    );
                }
                // the same frames on the wire
                assert_eq!(
                    zc.mcasts[0][zc_before..],
                    copied.mcasts[0][copied_before..],
                    "size {len} {guarantee:?}: the wire differs from the copying path"
                );
                // every payload byte went out by reference to the buffer,
                // behind nothing but headers
                assert_eq!(zc.mcasts_without_shared, 0, "size {len}: a copied frame");
                let frames = (mcast_header_len(g.len()) + len).div_ceil(cap - 6);
                assert_eq!(zc.gathers.len(), frames, "size {len}: frames");
                let by_ref: usize = zc.gathers.iter().map(|s| s.len).sum();
                assert_eq!(by_ref, len, "size {len}: bytes sent by reference");
                for s in &zc.gathers {
                    assert_eq!(s.buf, lo);
                    assert!(s.len == 0 || (s.seg > lo && s.seg + s.len < hi));
                    assert!(
                        s.head_len <= crate::totem::pg::ZC_HEADROOM + mcast_header_len(g.len())
                    );
                }
                // every node delivered the same message
                for i in 0..3 {
                    let got = zc.delivered(i).pop().expect("delivery");
                    assert_eq!(got, copied.delivered(i).pop().expect("delivery"));
                    assert_eq!(got.2, bytes, "size {len}: node {} got other bytes", i + 1);
                    assert_eq!(got.1, guarantee);
                }
                // the sender's own delivery reads the buffer
                let own = zc.events[0].iter().rev().find_map(|e| match e {
                    Event::Deliver { payload, .. } => Some(payload.bytes().as_ptr() as usize),
                    _ => None,
                });
                if len > 0 {
                    assert_eq!(own, Some(lo + 1), "size {len}: own delivery was copied");
                }
            }
        }
        // once stable, the buffer comes back, once per frame that read it
        zc.events.iter_mut().for_each(Vec::clear);
        zc.released.clear();
        let buf: Arc<[u8]> = Arc::from(&b"x"[..]);
        let now = zc.now;
        let shared = TestBuf::Shared(buf.clone());
        zc.engines[0]
            .submit_zc(now, PID, &g, Guarantee::Agreed, shared, 0..1)
            .expect("submit_zc");
        zc.drain(0);
        let mine = |n: &Net| {
            n.released
                .iter()
                .filter(|b| matches!(b, TestBuf::Shared(s) if Arc::ptr_eq(s, &buf)))
                .count()
        };
        assert!(zc.run_until(Duration::from_millis(5_000), |n| mine(n) == 1));
        zc.run_until(Duration::from_millis(1_000), |_| false);
        assert_eq!(mine(&zc), 1);
    }
}

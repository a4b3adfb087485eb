//! What a transport calls on its node: packets and timer expiries in,
//! transmits out, the next deadline; the record of sends read from
//! zero-copy buffers (the zero-copy proof). A frame goes to the engine at
//! once, unless `slow_consumer = "throttle"` makes the transport wait a
//! bounded time for a backlogged handle first ([`super::throttle`]).

use std::sync::{Arc, MutexGuard};

use cpg_core::engine::{Engine, FrameBuf, Transmit};
use cpg_core::{Instant, NodeId};

use super::{lock, Locked, NodeState};

/// CLOCK_MONOTONIC as an engine instant: the clock every transport uses
/// (the io_uring driver arms absolute timeouts on it). One definition, in
/// cpg-uring.
pub(crate) use cpg_uring::now as monotonic_now;

/// One transmit that read from a driver buffer (a zero-copy buffer): the
/// buffer's address and length, and the bytes the send reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufSend {
    /// Start address of the whole buffer.
    pub buf_addr: usize,
    /// Length of the whole buffer.
    pub buf_len: usize,
    /// Address of the bytes read from it.
    pub read_addr: usize,
    /// How many.
    pub read_len: usize,
}

/// One input of [`NodeState::step`].
#[derive(Debug)]
pub(crate) enum StepInput<F> {
    /// Nothing new (local requests may have queued work).
    Wake,
    /// A frame arrived from a node.
    Packet(NodeId, F),
    /// The deadline from the last step may have passed.
    Timeout,
}

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    /// The node's clock (the engine's `now`).
    pub(crate) fn now(&self) -> Instant {
        monotonic_now()
    }

    /// How application threads wake the transport's loop after queuing
    /// work; a node has one transport, so only the first call counts.
    pub(crate) fn set_waker(&self, w: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(w);
    }

    /// A frame arrived from node `from`.
    pub(crate) fn handle_packet(&self, from: NodeId, frame: F) {
        let g = lock(&self.locked);
        let mut g = self.throttle(g);
        let now = self.now();
        g.drain(now);
        g.engine.handle_packet(now, from, frame);
        g.pump(now);
        g.refresh_staging();
    }

    /// After a batch of [`NodeState::step`] calls (before the transport
    /// waits): wakes the handles' dispatchers once for the whole batch.
    pub(crate) fn batch_done(&self) {
        self.dirty.kick();
    }

    /// The deadline from [`NodeState::poll_outputs`] may have passed.
    pub(crate) fn handle_timeout(&self) {
        let now = self.now();
        let mut g = lock(&self.locked);
        g.drain(now);
        if g.engine.poll_timeout().is_some_and(|t| t <= now) {
            g.engine.handle_timeout(now);
        }
        g.pump(now);
        g.refresh_staging();
    }

    /// Persist ring seqs, hand every transmit to `send`, recycle released
    /// buffers; returns the next deadline. Call after every input and wake.
    pub(crate) fn poll_outputs(&self, send: &mut dyn FnMut(Transmit<F>)) -> Option<Instant> {
        let mut g = lock(&self.locked);
        let now = self.now();
        g.drain(now);
        g.pump(now);
        g.refresh_staging();
        self.outputs_locked(&mut g, send)
    }

    /// `input`, then every output to `send`, then `look` at the engine,
    /// all under one lock (the cheap path for a transport loop); returns
    /// the next deadline and what `look` returned. A transport that steps
    /// must call [`NodeState::batch_done`] after each batch of steps, before
    /// it waits: handles are signalled there, not at every step.
    pub(crate) fn step<R>(
        &self,
        input: StepInput<F>,
        send: &mut dyn FnMut(Transmit<F>),
        look: impl FnOnce(&Engine<F>) -> R,
    ) -> (Option<Instant>, R) {
        let mut g = lock(&self.locked);
        // a transport that steps calls batch_done after each batch
        g.defer_kicks = true;
        let now = self.now();
        g.drain(now);
        g.pump(now);
        match input {
            StepInput::Wake => {}
            StepInput::Packet(from, frame) => {
                g = self.throttle(g);
                let now = self.now();
                g.engine.handle_packet(now, from, frame);
                g.pump(now);
            }
            StepInput::Timeout => {
                let now = self.now();
                if g.engine.poll_timeout().is_some_and(|t| t <= now) {
                    g.engine.handle_timeout(now);
                }
                g.pump(now);
            }
        }
        g.refresh_staging();
        let d = self.outputs_locked(&mut g, send);
        (d, look(&g.engine))
    }

    fn outputs_locked(
        &self,
        g: &mut MutexGuard<'_, Locked<F>>,
        send: &mut dyn FnMut(Transmit<F>),
    ) -> Option<Instant> {
        while let Some(seq) = g.engine.poll_persist() {
            if let Some(store) = &g.store {
                if let Err(e) = store.store(seq) {
                    eprintln!(
                        "cpg node {}: cannot persist ring seq {seq}: {e}",
                        self.node_id
                    );
                }
            }
        }
        let mut record = lock(&self.record);
        // frames a sender's thread took off the engine go first
        while let Some(t) = g.deferred.pop_front().or_else(|| g.engine.poll_transmit()) {
            if let (Some(rec), Some(b)) = (record.as_mut(), t.frame.buf()) {
                let (bp, bl) = (b.as_ref().as_ptr() as usize, b.as_ref().len());
                for seg in t.frame.segments() {
                    let (p, l) = (seg.as_ptr() as usize, seg.len());
                    if l > 0 && p >= bp && p < bp + bl {
                        rec.push(BufSend {
                            buf_addr: bp,
                            buf_len: bl,
                            read_addr: p,
                            read_len: l,
                        });
                    }
                }
            }
            send(t);
        }
        drop(record);
        while g.engine.poll_release().is_some() {}
        g.transport_deadline = g.engine.poll_timeout();
        g.transport_deadline
    }

    /// Look at the engine (state, ring id, stats).
    pub(crate) fn with_engine<R>(&self, f: impl FnOnce(&Engine<F>) -> R) -> R {
        f(&lock(&self.locked).engine)
    }
}

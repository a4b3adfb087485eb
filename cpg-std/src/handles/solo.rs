//! A ring of this node alone: the sender's thread carries the token.
//!
//! On a one-node ring the token goes from this node to itself: the
//! transport loops it back without a syscall, and every visit orders and
//! delivers what was staged. Left to the transport thread, a message sent
//! by a client waits for that thread to see the token, and its delivery
//! then waits for the client's thread to be woken: on a virtual machine
//! whose idle cores halt, each wake-up across cores costs tens of
//! microseconds, more than everything else in the round trip.
//!
//! So the thread that just staged a small message (it holds the node lock
//! already, [`NodeState::after_stage`]) for a handle with nothing
//! undispatched (its application waits for this message) takes a token
//! for this node that the engine has queued and hands it back to the
//! engine itself, for at most [`SOLO_VISITS`] visits: its message is ordered and delivered
//! before the send returns, and its mailbox is signalled by the sender
//! itself. Frames for the other configured nodes that those visits
//! produce (a data frame multicast to nodes outside the ring, by which a
//! partitioned node finds the others) go to [`Locked::deferred`] and
//! leave through the transport, in order, before the engine's next ones.
//! The transport is woken only if it has something to do: frames to send
//! (deferred, or queued in the engine past the carried visits), or an
//! engine deadline earlier than the one it waits for.
//!
//! A streaming sender (its handle's mailbox not empty) is left to the
//! transport: carried, each of its messages would cost two visits and a
//! mailbox signal of its own, where the transport's rotations order them
//! in batches (1 member, 64 B: 1.9-3.3M msgs/s carried, 4.5M not).
//!
//! # What it must not do
//! Run on a ring with other members (their token and frames need the
//! network), outside the operational state, on a frozen node (a test's
//! stand-in for a stopped engine thread), or with the throttle policy
//! (which makes the thread that hands the engine a frame wait for
//! consumers: here, the sender waiting for itself).

use std::sync::Arc;

use cpg_core::engine::{Dest, FrameBuf, FrameRef, State};
use cpg_core::Instant;

use super::staging::STAGE_MSG_MAX;
use super::{Locked, NodeState};
use crate::transport::Gate;

impl<F: FrameBuf> Locked<F> {
    /// After a sender carried the token: whether the transport must wake
    /// (frames to send, or a deadline earlier than the one it waits for).
    pub(crate) fn transport_needed(&self) -> bool {
        let earlier = match (self.engine.poll_timeout(), self.transport_deadline) {
            (Some(t), Some(armed)) => t < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        earlier || !self.deferred.is_empty() || self.engine.peek_transmit().is_some()
    }
}

/// What a transport that loops frames for this node back tells the node.
pub(crate) struct LoopBack<F> {
    /// How the engine's bytes become a received frame.
    pub(crate) frame: Arc<dyn Fn(Arc<[u8]>) -> F + Send + Sync>,
    /// Whether other nodes are configured: without, a frame to all others
    /// goes nowhere and is not handed to the transport (nor recorded by
    /// the zero-copy proof's record of sends: nothing is sent).
    pub(crate) peers: bool,
    /// The transport's freeze switch: a frozen node's token stays put.
    pub(crate) gate: Arc<Gate>,
}

/// Token visits a sender carries at most: its message is ordered and
/// delivered AGREED on the first, the aru is seen a second time on the
/// second, and on the third it is safe (delivered SAFE, its buffers
/// released) and the token is held (`docs/spec/totem.md` §3.9): nothing
/// is left for the transport.
pub(crate) const SOLO_VISITS: usize = 3;

/// The largest message whose sender carries the token: one that fits in a
/// handle's staging area. Measured, 1 member, 1 MiB AGREED: carried on
/// the sender's thread 25.6-27.1k msgs/s against 30.7-38.0k on the
/// transport's.
pub(crate) const SOLO_MESSAGE_MAX: usize = STAGE_MSG_MAX;

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    /// How frames for this node come back as received ones; a node has one
    /// transport, so only the first call counts.
    pub(crate) fn set_loop_back(&self, f: LoopBack<F>) {
        let _ = self.loop_back.set(f);
    }

    /// On a ring of this node alone, hand the engine's queued token for
    /// this node back to it here, up to [`SOLO_VISITS`] visits; true if
    /// any visit ran (mailboxes may need a signal).
    pub(crate) fn carry_solo_token(
        &self,
        g: &mut Locked<F>,
        h: u64,
        staged: Option<usize>,
        now: Instant,
    ) -> bool {
        let Some(loop_back) = self.loop_back.get() else {
            return false;
        };
        let me = self.node_id;
        // the ring first: on a ring with other members (every send of a
        // cluster) nothing else is looked at
        if g.engine.state() != State::Operational || g.engine.members() != [me] {
            return false;
        }
        // events of this handle not dispatched yet: its application is
        // not waiting for this message but streaming, and the transport's
        // rotations order its messages in batches
        let waiting = g.get(h).is_ok_and(|s| s.mail.bytes() == 0);
        // a large message's visits (its fragments, its reassembly) are
        // better done beside the sender than after it: the wake-up is
        // small against its copies
        let small = staged.is_some_and(|n| n <= SOLO_MESSAGE_MAX);
        if !waiting || !small || g.throttle.is_some() || !loop_back.gate.is_open() {
            return false;
        }
        let mut visits = 0;
        while visits < SOLO_VISITS && g.engine.state() == State::Operational {
            let Some(t) = g.engine.peek_transmit() else {
                break;
            };
            match (t.dest, &t.frame) {
                (Dest::Node(n), FrameRef::Own(_)) if n == me => {
                    let Some(t) = g.engine.poll_transmit() else {
                        break;
                    };
                    let FrameRef::Own(bytes) = t.frame else {
                        unreachable!("peeked as an own frame");
                    };
                    g.engine.handle_packet(now, me, (loop_back.frame)(bytes));
                    g.pump(now);
                    g.stats.solo_visits += 1;
                    visits += 1;
                }
                (Dest::AllOthers, _) => {
                    if let Some(t) = g.engine.poll_transmit() {
                        if loop_back.peers {
                            g.deferred.push_back(t);
                        }
                    }
                }
                _ => break,
            }
        }
        // what the visits released goes back now (pool slots, receive
        // buffers), as the transport's outputs would: the transport may
        // not be woken for a while
        while g.engine.poll_release().is_some() {}
        visits > 0
    }
}

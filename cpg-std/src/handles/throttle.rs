//! The opt-in receive throttle (`slow_consumer = "throttle"`): while a
//! handle holds more than half its queue cap, the transport waits for it to
//! dispatch before handing the engine the next frame, so frames (and the
//! token behind them) wait in the socket and the ring slows down for it.
//! Bounded twice, so no local consumer can stall the ring:
//! - per token rotation, the waits of this node add up to at most the
//!   budget ([`crate::NodeConfig::throttle_budget`]); once it is spent,
//!   frames go in without waiting until the token next visits;
//! - a handle over half its cap that dispatches nothing for the stall limit
//!   ([`crate::NodeConfig::throttle_stall_limit`]) is evicted.
//!
//! A handle that reaches its cap is evicted as under the default policy
//! (`route`'s flush). Without the throttle (`slow_consumer = "evict"`, the
//! default) none of this runs: the transport never waits.

use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cpg_core::engine::FrameBuf;

use super::{Locked, NodeState};

/// The throttle's settings and its budget.
#[derive(Debug, Clone)]
pub(crate) struct Throttle {
    /// Longest total wait per token rotation.
    budget: Duration,
    /// Longest a backlogged handle may go without dispatching.
    stall_limit: Duration,
    /// The engine's token visit count when the budget was last renewed.
    rotation: u64,
    /// What is left of this rotation's budget.
    left: Duration,
}

impl Throttle {
    pub(crate) fn new(budget: Duration, stall_limit: Duration) -> Throttle {
        Throttle {
            budget,
            stall_limit,
            rotation: u64::MAX,
            left: budget,
        }
    }
}

impl<F> Locked<F> {
    /// A live handle holds more than half its queue cap.
    pub(crate) fn backlogged(&self) -> bool {
        let half = self.queue_cap / 2;
        self.slots
            .iter()
            .filter_map(|s| s.state.as_ref())
            .any(|s| !s.evicted && s.mail.bytes() > half)
    }
}

impl<F: FrameBuf + Send + Sync + 'static> Locked<F> {
    /// Evict every handle that has been over half its cap without
    /// dispatching a single batch for the stall limit; start or restart
    /// the clock of the others that are backlogged.
    fn evict_stalled(&mut self, now: Instant, limit: Duration) {
        let half = self.queue_cap / 2;
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].state.as_mut() else {
                continue;
            };
            if s.evicted || s.mail.bytes() <= half {
                s.stuck = None;
                continue;
            }
            let pops = s.mail.pops.load(Ordering::Relaxed);
            match s.stuck {
                Some((p, since)) if p == pops => {
                    if now.duration_since(since) >= limit {
                        self.evict(
                            i,
                            "it dispatched nothing for the stall limit while over half its queue",
                        );
                        self.stats.evictions_stalled += 1;
                    }
                }
                _ => s.stuck = Some((pops, now)),
            }
        }
    }
}

impl<F: FrameBuf + Send + Sync + 'static> NodeState<F> {
    /// Before a frame goes to the engine: with the throttle on, evict
    /// stalled handles, then wait while a handle is backlogged, within what
    /// is left of this rotation's budget. Returns at once without it.
    pub(crate) fn throttle<'a>(
        &self,
        mut g: MutexGuard<'a, Locked<F>>,
    ) -> MutexGuard<'a, Locked<F>> {
        let Some(t) = &g.throttle else {
            return g;
        };
        let limit = t.stall_limit;
        let start = Instant::now();
        g.evict_stalled(start, limit);
        if !g.backlogged() {
            return g;
        }
        let visits = g.engine.stats().token_visits;
        let t = g.throttle.as_mut().expect("checked above");
        if t.rotation != visits {
            // the token came by since the last wait: a fresh budget
            t.rotation = visits;
            t.left = t.budget;
        }
        if t.left.is_zero() {
            return g;
        }
        let end = start + t.left;
        g.stats.backpressure_waits += 1;
        g.room_waiters += 1;
        while g.backlogged() && !g.stopped {
            // the dispatchers must hear of what this batch queued, or they
            // would not drain what is waited for (kicks are deferred to the
            // end of the transport's batch)
            g.dirty.kick();
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                break;
            };
            g = self
                .room
                .wait_timeout(g, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        g.room_waiters -= 1;
        let waited = start.elapsed();
        g.stats.backpressure_wait += waited;
        let t = g.throttle.as_mut().expect("checked above");
        t.left = t.left.saturating_sub(waited);
        if t.left.is_zero() {
            g.stats.backpressure_budget_spent += 1;
        }
        g
    }
}

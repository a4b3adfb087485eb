//! The timer table: one optional deadline per timer kind. A timer that
//! fires after its state has moved on finds itself disarmed (no-op).

use crate::time::Instant;

/// Every timer the engine arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Token loss (OPERATIONAL, COMMIT, RECOVERY; GATHER after an agreed consensus timeout).
    TokenLoss = 0,
    /// Resend the saved token / commit token.
    TokenRetransmit = 1,
    /// Release a held token on an idle ring.
    Hold = 2,
    /// Resend JOIN in GATHER.
    Join = 3,
    /// Bound on one GATHER round.
    Consensus = 4,
    /// MERGE_DETECT from the rep of an idle ring.
    Merge = 5,
}

pub(crate) const TIMERS: [Timer; 6] = [
    Timer::TokenLoss,
    Timer::TokenRetransmit,
    Timer::Hold,
    Timer::Join,
    Timer::Consensus,
    Timer::Merge,
];

#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 6],
}

impl TimerTable {
    pub(crate) fn arm(&mut self, t: Timer, at: Instant) {
        self.deadlines[t as usize] = Some(at);
    }
    pub(crate) fn cancel(&mut self, t: Timer) {
        self.deadlines[t as usize] = None;
    }
    pub(crate) fn is_armed(&self, t: Timer) -> bool {
        self.deadlines[t as usize].is_some()
    }
    pub(crate) fn cancel_all(&mut self) {
        self.deadlines = [None; 6];
    }
    /// Earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
    /// Disarm and return the first (in table order) timer due at `now`.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for t in TIMERS {
            if let Some(d) = self.deadlines[t as usize] {
                if d <= now {
                    self.deadlines[t as usize] = None;
                    return Some(t);
                }
            }
        }
        None
    }
}

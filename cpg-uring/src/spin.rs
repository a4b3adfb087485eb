//! A short, adaptive spin before the loop sleeps in `io_uring_enter`.
//!
//! Waking a thread that sleeps costs tens of microseconds (and far more on
//! a busy host); in a request/answer exchange (one message in flight, a
//! token on a small ring) the loop goes to sleep only to be woken again
//! almost at once. So, while traffic is recent, the loop first polls the
//! completion queue for up to [`Spin::budget`] before it sleeps. "Recent"
//! means the previous wait ended within [`HOT_FACTOR`] × the budget: an
//! idle node's waits run to its timers (milliseconds at least), so it never
//! spins and stays near 0 % CPU; a loaded one spins at most one budget per
//! wait, and not at all once its waits grow long.
//!
//! Spinning pays only while the core is otherwise free. Between polls the
//! loop yields; a yield that takes longer than [`CONTENDED_YIELD`] means
//! a busy thread was runnable here and ran a whole slice (milliseconds) in
//! between, and every message that arrived meanwhile waited for it, where
//! a sleeping loop would have been woken at once (a waker preempts). So
//! such a yield ends the spin and turns spinning off for
//! [`CONTENDED_BACKOFF`].
//!
//! # What it must not do
//! Decide anything about frames or timers; spin when the budget is 0; spin
//! on a core another thread wants.

use std::time::{Duration, Instant};

/// Default spin budget (`TransportConfig::spin`): longer than a wake-up on
/// an idle host, short against the token and the hold timers.
pub const SPIN_DEFAULT: Duration = Duration::from_micros(50);

/// A wait at most this many budgets long counts as recent traffic.
pub const HOT_FACTOR: u32 = 4;

/// A yield longer than this gave the core to another thread for a whole
/// time slice (milliseconds): a thread that does not sleep soon. The
/// thread the loop waits for (a client, the engine) also takes the core
/// when the loop yields, but only for the tens of microseconds its step
/// takes, and the spin is for exactly that.
pub const CONTENDED_YIELD: Duration = Duration::from_millis(1);

/// How long spinning stays off after a contended yield (busy threads
/// stay busy; each new try can cost one slice).
pub const CONTENDED_BACKOFF: Duration = Duration::from_secs(1);

/// The spin policy of one loop.
#[derive(Debug, Clone)]
pub struct Spin {
    budget: Duration,
    hot: bool,
    /// Spinning is off until then: a yield found the core contended.
    contended_until: Option<Instant>,
}

impl Spin {
    /// A loop's policy with `budget` (zero: never spin); not hot yet.
    pub fn new(budget: Duration) -> Spin {
        Spin {
            budget,
            hot: false,
            contended_until: None,
        }
    }

    /// The budget in force.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the next wait should spin first.
    pub fn should_spin(&mut self) -> bool {
        if !self.hot || self.budget.is_zero() {
            return false;
        }
        match self.contended_until {
            Some(t) if Instant::now() < t => false,
            Some(_) => {
                self.contended_until = None;
                true
            }
            None => true,
        }
    }

    /// The last wait (spin included) took `waited`.
    pub fn waited(&mut self, waited: Duration) {
        self.hot = waited <= self.budget.saturating_mul(HOT_FACTOR);
    }

    /// Call `ready` (which may enter the kernel to collect completions)
    /// until it says a completion is there or the budget has passed;
    /// whether one came. A contended yield ends it at once (one last
    /// `ready`) and turns spinning off for [`CONTENDED_BACKOFF`].
    ///
    /// # Errors
    /// `ready`'s.
    pub fn spin<E>(&mut self, ready: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
        // Yield rather than burn: on a host with fewer free cores than
        // runnable threads the thread this loop waits for (a member about
        // to send) may need this very core.
        self.spin_with(ready, std::thread::yield_now)
    }

    fn spin_with<E>(
        &mut self,
        mut ready: impl FnMut() -> Result<bool, E>,
        mut yield_now: impl FnMut(),
    ) -> Result<bool, E> {
        let start = Instant::now();
        loop {
            if ready()? {
                return Ok(true);
            }
            let before = Instant::now();
            if before.duration_since(start) >= self.budget {
                return Ok(false);
            }
            yield_now();
            let after = Instant::now();
            if after.duration_since(before) > CONTENDED_YIELD {
                self.contended_until = Some(after + CONTENDED_BACKOFF);
                return ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_only_after_short_waits() {
        let mut s = Spin::new(SPIN_DEFAULT);
        assert!(!s.should_spin(), "a fresh loop has no recent traffic");
        s.waited(Duration::from_micros(20));
        assert!(s.should_spin());
        s.waited(s.budget() * HOT_FACTOR);
        assert!(s.should_spin());
        s.waited(Duration::from_millis(200)); // an idle node's timer wait
        assert!(!s.should_spin());
        let mut off = Spin::new(Duration::ZERO);
        off.waited(Duration::ZERO);
        assert!(!off.should_spin());
    }

    #[test]
    fn a_contended_yield_stops_spinning_for_a_while() {
        let mut s = Spin::new(Duration::from_secs(3600));
        s.waited(Duration::ZERO);
        assert!(s.should_spin());
        let mut polls = 0;
        let slow_yield = || std::thread::sleep(CONTENDED_YIELD * 3);
        let got = s.spin_with(
            || {
                polls += 1;
                Ok::<_, ()>(false)
            },
            slow_yield,
        );
        assert_eq!(got, Ok(false));
        assert_eq!(polls, 2, "one poll, the contended yield, one last poll");
        s.waited(Duration::ZERO);
        assert!(!s.should_spin(), "off during the backoff, however hot");
        s.contended_until = Some(Instant::now());
        assert!(s.should_spin(), "back on once it has passed");
        // a free core's yields keep the spin going until ready
        let mut n = 0;
        let got = s.spin_with(
            || {
                n += 1;
                Ok::<_, ()>(n == 50)
            },
            || {},
        );
        assert_eq!(got, Ok(true));
        assert!(s.should_spin());
    }

    #[test]
    fn spin_stops_on_ready_or_error() {
        let mut s = Spin::new(Duration::from_secs(3600));
        let mut n = 0;
        // yields that never wait (a real one may, on a loaded test host)
        assert_eq!(
            s.spin_with(
                || {
                    n += 1;
                    Ok::<_, ()>(n == 3)
                },
                || {}
            ),
            Ok(true)
        );
        assert_eq!(s.spin(|| Err::<bool, _>(7)), Err(7));
        let mut none = Spin::new(Duration::ZERO);
        assert_eq!(none.spin(|| Ok::<_, ()>(false)), Ok(false));
    }
}

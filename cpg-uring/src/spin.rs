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
//! # What it must not do
//! Decide anything about frames or timers; spin when the budget is 0.

use std::time::{Duration, Instant};

/// Default spin budget (`TransportConfig::spin`): longer than a wake-up on
/// an idle host, short against the token and the hold timers.
pub const SPIN_DEFAULT: Duration = Duration::from_micros(50);

/// A wait at most this many budgets long counts as recent traffic.
pub const HOT_FACTOR: u32 = 4;

/// The spin policy of one loop.
#[derive(Debug, Clone)]
pub struct Spin {
    budget: Duration,
    hot: bool,
}

impl Spin {
    /// A loop's policy with `budget` (zero: never spin); not hot yet.
    pub fn new(budget: Duration) -> Spin {
        Spin { budget, hot: false }
    }

    /// The budget in force.
    #[cfg(test)]
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the next wait should spin first.
    pub fn should_spin(&self) -> bool {
        self.hot && !self.budget.is_zero()
    }

    /// The last wait (spin included) took `waited`.
    pub fn waited(&mut self, waited: Duration) {
        self.hot = waited <= self.budget.saturating_mul(HOT_FACTOR);
    }

    /// Call `ready` (which may enter the kernel to collect completions)
    /// until it says a completion is there or the budget has passed;
    /// whether one came.
    ///
    /// # Errors
    /// `ready`'s.
    pub fn spin<E>(&self, mut ready: impl FnMut() -> Result<bool, E>) -> Result<bool, E> {
        let start = Instant::now();
        loop {
            if ready()? {
                return Ok(true);
            }
            if start.elapsed() >= self.budget {
                return Ok(false);
            }
            // Yield rather than burn: on a host with fewer free cores than
            // runnable threads the thread this loop waits for (a member
            // about to send) may need this very core.
            std::thread::yield_now();
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
    fn spin_stops_on_ready_or_error() {
        let s = Spin::new(Duration::from_secs(3600));
        let mut n = 0;
        assert_eq!(
            s.spin(|| {
                n += 1;
                Ok::<_, ()>(n == 3)
            }),
            Ok(true)
        );
        assert_eq!(s.spin(|| Err::<bool, _>(7)), Err(7));
        let none = Spin::new(Duration::ZERO);
        assert_eq!(none.spin(|| Ok::<_, ()>(false)), Ok(false));
    }
}

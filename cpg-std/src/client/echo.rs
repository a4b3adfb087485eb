//! A short wait in `mcast_joined` for the message's own delivery.
//!
//! An application that sends one message and then waits for it (a
//! request and its answer, a lock, a barrier) sends, then sleeps in `poll`
//! on the handle's fd until cpgd's doorbell byte wakes it. On a ring of
//! one node cpgd delivers within microseconds of reading the request (its
//! thread carries the token: `handles/solo.rs`), but by then the
//! application sleeps, and waking a sleeping thread costs tens of
//! microseconds on a virtual machine whose idle cores halt: most of the
//! round trip.
//!
//! So when the handle had nothing left to dispatch at the send (the
//! application waits for this message next), it is the only member of
//! its group (the deliveries it reads are its own, and no other member's
//! client on this host competes for the cores: 3 clients of one cpgd on 2
//! cores, each waiting, had p99.9 680-2,500 us against 106-163 us without
//! the wait) and the message is small,
//! the send reads the event ring for up to [`ECHO_BUDGET`] before it
//! returns: the delivery is then in the handle's queue, and the doorbell
//! byte on the socket, when the application polls, and it does not sleep.
//! Corosync's `cpg_mcast_joined` waits for the daemon's answer on every
//! send; this waits at most the budget, and only while waiting pays: a
//! [`ECHO_MISSES`] waits in a row that end with nothing read (other nodes
//! on the ring, so the delivery takes a network round trip, or a daemon
//! asleep) turn it off for [`ECHO_COOLDOWN`], so sends cost at most that
//! many budgets of CPU per cooldown when waiting does not pay.
//!
//! # What it must not do
//! Wait while events are pending, for a large message, past the budget,
//! or during a cooldown; hold the handle's lock while it spins (another
//! thread of the handle may dispatch meanwhile); keep a core from a
//! thread that wants it for longer than [`ECHO_SPIN_ONLY`].

use std::time::{Duration, Instant};

use super::conn::{ClientNode, Guard};

/// The longest wait: about one wake-up of a sleeping thread on a 2-core
/// VM (17-25 us at the median); waiting longer would cost more than the
/// sleep it saves.
pub(super) const ECHO_BUDGET: Duration = Duration::from_micros(50);

/// How long waiting stays off after [`ECHO_MISSES`] waits in a row read
/// nothing.
pub(super) const ECHO_COOLDOWN: Duration = Duration::from_millis(10);

/// Waits in a row that read nothing before waiting goes off: one miss in
/// a thousand is a late daemon (its thread was preempted), not a ring
/// whose deliveries take a network round trip.
pub(super) const ECHO_MISSES: u32 = 3;

/// The largest message a send waits for: one that fits in a handle's
/// staging area (`handles/staging.rs`), as the daemon's carried sends.
pub(super) const ECHO_MESSAGE_MAX: usize = crate::handles::staging::STAGE_MSG_MAX;

/// The first part of a wait only spins; after it each read is preceded by
/// a yield, so that the daemon, or another client, that wants this core
/// gets it (3 clients of one cpgd on 2 cores, spinning throughout: p99.9
/// 158-3,850 us against 114-545 us yielding after this).
pub(super) const ECHO_SPIN_ONLY: Duration = Duration::from_micros(10);

/// Between two reads of a wait that began at `start`.
fn pause(start: Instant) {
    if start.elapsed() < ECHO_SPIN_ONLY {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Whether a send waits for its own delivery now.
#[derive(Debug, Default)]
pub(super) struct EchoWait {
    /// Waiting is off until then: the last waits read nothing.
    cold_until: Option<Instant>,
    /// Waits in a row that read nothing.
    misses: u32,
}

impl EchoWait {
    fn should_wait(&mut self, now: Instant) -> bool {
        match self.cold_until {
            Some(t) if now < t => false,
            _ => {
                self.cold_until = None;
                true
            }
        }
    }

    /// A wait read a record.
    fn hit(&mut self) {
        self.misses = 0;
    }

    /// A wait read nothing within the budget, ending at `now`.
    fn missed(&mut self, now: Instant) {
        self.misses += 1;
        if self.misses >= ECHO_MISSES {
            self.misses = 0;
            self.cold_until = Some(now + ECHO_COOLDOWN);
        }
    }
}

impl ClientNode {
    /// After a small send with nothing pending: read the event ring for up
    /// to [`ECHO_BUDGET`] until a record arrives (see the module docs).
    pub(super) fn await_echo<'a>(&'a self, mut g: Guard<'a>) -> Guard<'a> {
        let start = Instant::now();
        if !g.echo.should_wait(start) {
            return g;
        }
        loop {
            if self.pump(&mut g) {
                g.echo.hit();
                // a byte comes only if the daemon took the armed bell (or
                // owes one, or an echo was asked): else waiting is for
                // nothing
                let bell = g.bell.armed || g.bell.owed > 0 || g.bell.echoes > 0;
                if !bell {
                    return g;
                }
                drop(g);
                if !self.await_bell(start) {
                    let mut g = self.lock();
                    g.echo.missed(Instant::now());
                    return g;
                }
                return self.lock();
            }
            if g.dead || g.evicted || g.conn.is_none() {
                return g;
            }
            let now = Instant::now();
            if now.duration_since(start) >= ECHO_BUDGET {
                g.echo.missed(now);
                return g;
            }
            drop(g);
            pause(start);
            g = self.lock();
        }
    }

    /// The delivery is read: its doorbell byte, which the daemon writes
    /// right after publishing it, is what makes the application's poll
    /// return without sleeping. Wait for it within the same budget.
    /// Whether the byte came within the budget.
    fn await_bell(&self, start: Instant) -> bool {
        use std::os::fd::AsFd;
        let sock = self.fds.sock.as_fd();
        loop {
            if cpg_ipc::bell::pending(sock) > 0 {
                return true;
            }
            if start.elapsed() >= ECHO_BUDGET {
                return false;
            }
            pause(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_in_a_row_turn_the_wait_off_for_the_cooldown_and_a_hit_resets_them() {
        let t0 = Instant::now();
        let mut e = EchoWait::default();
        assert!(e.should_wait(t0));
        for _ in 0..ECHO_MISSES - 1 {
            e.missed(t0);
            assert!(e.should_wait(t0), "fewer misses than the limit keep it on");
        }
        e.hit();
        e.missed(t0);
        assert!(e.should_wait(t0), "a hit started the count again");
        for _ in 0..ECHO_MISSES - 1 {
            e.missed(t0);
        }
        assert!(!e.should_wait(t0));
        assert!(!e.should_wait(t0 + ECHO_COOLDOWN - Duration::from_micros(1)));
        assert!(e.should_wait(t0 + ECHO_COOLDOWN));
        assert!(e.should_wait(t0 + ECHO_COOLDOWN), "on again after it");
    }
}

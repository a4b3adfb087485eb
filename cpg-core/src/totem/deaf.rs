//! Who cannot hear whom: one-way link failures, remembered.
//!
//! A JOIN listing node Y in its fail set says its sender X did not hear Y
//! through a whole GATHER round. With a one-way failure (Y's packets to X
//! lost, X's to Y arriving) Totem alone never settles: Y keeps hearing X
//! and the others, believes a ring with X is possible, and either commits
//! one that dies with its token or drags the ring X belongs to back into
//! GATHER with its JOINs and merge detects, which X then answers by failing
//! Y again: Y has no configuration for as long as the fault lasts, and the
//! others re-form every few token timeouts (issue 8 bug 3).
//!
//! So each node remembers such reports, and until X shows it hears Y again:
//! - Y does not count X's JOIN towards consensus (a ring with X would die
//!   with its first token): the round's timeout fails X, and Y forms a ring
//!   with the nodes it can reach, or alone;
//! - Y does not try to merge with a ring whose rep or sender is X, and a
//!   member of X's ring ignores Y's JOINs and merge detects, so neither
//!   side is pulled back into GATHER by traffic that cannot lead to a ring.
//!
//! X shows it hears Y again with a JOIN whose proc set holds Y and whose
//! fail set does not, sent at least one consensus round after the report
//! (earlier JOINs may predate it); a ring installed with both lifts it too.
//! A report the receiver already acted on (Y is in its own fail set) is
//! not recorded: it is hearsay, the others adopting a verdict, and would
//! keep the true reporter from merging once it hears Y again. Reports not
//! renewed expire after a hold (`Totem::deaf_hold`), the bound on a heal
//! whose evidence was missed.

use crate::limits::NODES_MAX;
use crate::time::{Duration, Instant};
use crate::types::NodeId;

/// One report: `reporter` did not hear `reported`, last said at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    reporter: NodeId,
    reported: NodeId,
    at: Instant,
}

/// The reports in force, at most [`NODES_MAX`] (the oldest gives way).
#[derive(Debug, Clone, Default)]
pub(crate) struct Deaf {
    reports: heapless::Vec<Report, NODES_MAX>,
}

impl Deaf {
    /// `reporter`'s JOIN: record who it failed, lift who it hears again.
    /// `settle` is how old a report must be before a JOIN can lift it.
    /// `my_fail`: who the receiver already failed (reports of them are hearsay).
    pub(crate) fn observe_join(
        &mut self,
        now: Instant,
        reporter: NodeId,
        proc_list: &[NodeId],
        fail_list: &[NodeId],
        my_fail: &[NodeId],
        settle: Duration,
    ) {
        for &y in fail_list
            .iter()
            .filter(|&&y| y != reporter && !my_fail.contains(&y))
        {
            self.report(now, reporter, y);
        }
        self.reports.retain(|r| {
            !(r.reporter == reporter
                && proc_list.contains(&r.reported)
                && !fail_list.contains(&r.reported)
                && now.0.saturating_sub(r.at.0) >= settle.0)
        });
    }

    fn report(&mut self, now: Instant, reporter: NodeId, reported: NodeId) {
        if let Some(r) = self
            .reports
            .iter_mut()
            .find(|r| r.reporter == reporter && r.reported == reported)
        {
            r.at = now;
            return;
        }
        if self.reports.is_full() {
            if let Some(oldest) = (0..self.reports.len()).min_by_key(|&i| self.reports[i].at) {
                self.reports.swap_remove(oldest);
            }
        }
        let _ = self.reports.push(Report {
            reporter,
            reported,
            at: now,
        });
    }

    /// Whether `reporter` is known not to hear `reported`.
    pub(crate) fn cannot_hear(&self, reporter: NodeId, reported: NodeId) -> bool {
        self.reports
            .iter()
            .any(|r| r.reporter == reporter && r.reported == reported)
    }

    /// Forget reports not renewed within `hold`.
    pub(crate) fn expire(&mut self, now: Instant, hold: Duration) {
        self.reports
            .retain(|r| now.0.saturating_sub(r.at.0) < hold.0);
    }

    /// Whether some node of `ring` (other than `sender`) cannot hear `sender`.
    pub(crate) fn ring_deaf_to(&self, ring: &[NodeId], sender: NodeId) -> bool {
        ring.iter()
            .any(|&m| m != sender && self.cannot_hear(m, sender))
    }

    /// A ring holding every node of `members` was installed: they hear each other.
    pub(crate) fn installed(&mut self, members: &[NodeId]) {
        self.reports
            .retain(|r| !(members.contains(&r.reporter) && members.contains(&r.reported)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(100);

    fn at(ms: u64) -> Instant {
        Instant(ms * 1_000_000)
    }

    #[test]
    fn a_report_holds_until_the_reporter_hears_again() {
        let mut d = Deaf::default();
        d.observe_join(at(0), 2, &[1, 2, 3], &[1], &[], SETTLE);
        assert!(d.cannot_hear(2, 1));
        assert!(d.ring_deaf_to(&[2, 3], 1));
        assert!(!d.ring_deaf_to(&[3], 1));
        // A JOIN sent before the report reached everyone does not lift it ...
        d.observe_join(at(50), 2, &[1, 2, 3], &[], &[], SETTLE);
        assert!(d.cannot_hear(2, 1));
        // ... one a round later does.
        d.observe_join(at(200), 2, &[1, 2, 3], &[], &[], SETTLE);
        assert!(!d.cannot_hear(2, 1));
    }

    #[test]
    fn hearsay_and_old_reports_are_not_kept() {
        let mut d = Deaf::default();
        d.observe_join(at(0), 3, &[1, 2, 3], &[1], &[1], SETTLE);
        assert!(
            !d.cannot_hear(3, 1),
            "I had failed 1 already: 3 adopts my verdict"
        );
        d.observe_join(at(0), 2, &[1, 2, 3], &[1], &[], SETTLE);
        d.expire(at(999), Duration::from_millis(1000));
        assert!(d.cannot_hear(2, 1));
        d.expire(at(1000), Duration::from_millis(1000));
        assert!(!d.cannot_hear(2, 1));
    }

    #[test]
    fn a_leave_or_an_install_is_not_deafness() {
        let mut d = Deaf::default();
        d.observe_join(at(0), 2, &[1, 3], &[2], &[], SETTLE);
        assert!(!d.cannot_hear(2, 2));
        d.observe_join(at(0), 2, &[1, 2, 3], &[1, 3], &[], SETTLE);
        d.installed(&[1, 2]);
        assert!(!d.cannot_hear(2, 1));
        assert!(d.cannot_hear(2, 3));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut d = Deaf::default();
        for y in 1..=(NODES_MAX as u32 + 10) {
            d.observe_join(at(u64::from(y)), 1000, &[], &[y], &[], SETTLE);
        }
        assert_eq!(d.reports.len(), NODES_MAX);
        assert!(!d.cannot_hear(1000, 1));
        assert!(d.cannot_hear(1000, NODES_MAX as u32 + 10));
    }
}

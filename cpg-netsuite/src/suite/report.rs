//! What a phase measured, and the table the binary prints.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::phase::Phase;
use crate::net::StageStats;

/// The outcome of one phase.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// Which.
    pub phase: Phase,
    /// At how many nodes.
    pub nodes: u32,
    /// From the fault to the configurations it must cause (partition,
    /// one-way, SIGSTOP, SIGKILL, a node quitting): failure detection.
    pub split: Option<Duration>,
    /// From the heal to one configuration of all (the worst heal of the phase).
    pub recovery: Option<Duration>,
    /// The liveness bound both are held to.
    pub bound: Duration,
    /// Deliveries logged, all processes together.
    pub delivered: u64,
    /// What the stage did, in phases that use it.
    pub stage: Option<StageStats>,
    /// Datagrams the iptables rules matched, in phases that use them.
    pub matched: Option<u64>,
    /// Liveness failures and errors.
    pub failures: Vec<String>,
    /// Safety violations the checker found.
    pub violations: Vec<String>,
    /// The log, kept when the phase failed.
    pub logs: Option<PathBuf>,
}

impl PhaseReport {
    /// Nothing measured yet.
    pub fn new(phase: Phase, nodes: u32, bound: Duration) -> PhaseReport {
        PhaseReport {
            phase,
            nodes,
            split: None,
            recovery: None,
            bound,
            delivered: 0,
            stage: None,
            matched: None,
            failures: Vec::new(),
            violations: Vec::new(),
            logs: None,
        }
    }

    /// No failure, no violation.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.violations.is_empty()
    }

    /// The table's header line.
    pub fn header() -> String {
        format!(
            "{:<10} {:>5} {:>10} {:>10} {:>7} {:>9}  result",
            "phase", "nodes", "detect", "recovery", "bound", "delivered"
        )
    }

    /// One table line, then the failures and violations (the first few).
    pub fn line(&self) -> String {
        let ms =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{} ms", d.as_millis()));
        let mut s = format!(
            "{:<10} {:>5} {:>10} {:>10} {:>5} s {:>9}  {}",
            self.phase.name(),
            self.nodes,
            ms(self.split),
            ms(self.recovery),
            self.bound.as_secs_f64(),
            self.delivered,
            if self.passed() { "ok" } else { "FAILED" }
        );
        if let Some(st) = self.stage {
            let _ = write!(
                s,
                "  (stage: {} datagrams, {} reordered, {} corrupted)",
                st.packets, st.reordered, st.corrupted
            );
        }
        if let Some(m) = self.matched {
            let _ = write!(s, "  (iptables: {m} datagrams matched)");
        }
        for f in &self.failures {
            let _ = write!(s, "\n    liveness: {f}");
        }
        for v in self.violations.iter().take(5) {
            let _ = write!(s, "\n    safety: {v}");
        }
        if self.violations.len() > 5 {
            let _ = write!(s, "\n    ... {} violations in all", self.violations.len());
        }
        if let Some(p) = &self.logs {
            let _ = write!(s, "\n    log: {}", p.display());
        }
        s
    }
}

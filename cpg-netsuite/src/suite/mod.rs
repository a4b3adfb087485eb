//! The fault phases, the profiles that size them, the runner and its report.

pub mod links;
mod phase;
mod report;
mod run;

pub use phase::{Phase, Profile};
pub use report::PhaseReport;
pub use run::{run_phase, Options};

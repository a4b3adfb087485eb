//! Errors of the std layer that more than one layer returns.

use std::io;

use crate::state::StateError;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The persistent state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The engine refused the settings.
    #[error("engine: {0}")]
    Engine(cpg_core::limits::ConfigError),
    /// The transport could not start (socket, ring, memory).
    #[error("transport: {0}")]
    Transport(#[from] io::Error),
    /// The io_uring driver could not start.
    #[error("io_uring transport: {0}")]
    Uring(#[from] cpg_uring::DriverError),
}

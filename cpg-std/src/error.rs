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
    #[error("io_uring transport: {0}{hint}", hint = uring_hint(.0))]
    Uring(#[from] cpg_uring::DriverError),
}

/// What to change when io_uring itself is missing or too old: the plain UDP
/// transport, `transport = "udp"` in the node configuration
/// ([`crate::config::TransportKind::Udp`]).
fn uring_hint(e: &cpg_uring::DriverError) -> &'static str {
    if e.is_uring_unsupported() {
        " (or set transport = \"udp\" in the node configuration to run on plain UDP sockets)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_unsupported_names_the_toml_setting() {
        let e = StartError::from(cpg_uring::DriverError::UringUnavailable {
            err: io::Error::from_raw_os_error(38),
            cause: "no io_uring".into(),
        });
        let s = e.to_string();
        assert!(s.contains("transport = \"udp\""), "{s}");
        assert!(!s.contains("fallback_syscalls"), "{s}");
        let e = StartError::from(cpg_uring::DriverError::Config("x".into()));
        assert!(!e.to_string().contains("udp"));
    }
}

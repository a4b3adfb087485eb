//! Errors of the std layer that more than one layer returns.

use std::io;

use crate::config::{ConfigError, TRANSPORT_UDP_SETTING};
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
    /// The settings do not work together (a [`crate::NodeConfig`] changed
    /// after validation).
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The transport could not start (socket, ring, memory).
    #[error("transport: {0}")]
    Transport(#[from] io::Error),
    /// The io_uring driver could not start.
    #[error("io_uring transport: {0}{hint}", hint = UringHint(.0))]
    Uring(#[from] cpg_uring::DriverError),
}

/// What to change when io_uring itself is missing or too old: the plain UDP
/// transport, [`TRANSPORT_UDP_SETTING`] in the node configuration
/// ([`crate::config::TransportKind::Udp`]; cpg-uring's error names no
/// setting, since it cannot know which layer the user configures).
struct UringHint<'a>(&'a cpg_uring::DriverError);

impl std::fmt::Display for UringHint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_uring_unsupported() {
            write!(
                f,
                " (or set {TRANSPORT_UDP_SETTING} in the node configuration to run on plain UDP sockets)"
            )
        } else {
            Ok(())
        }
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
        assert!(s.contains(TRANSPORT_UDP_SETTING), "{s}");
        assert!(s.contains("transport = \"udp\""), "{s}");
        assert!(!s.contains("fallback_syscalls"), "{s}");
        let e = StartError::from(cpg_uring::DriverError::Config("x".into()));
        assert!(!e.to_string().contains("udp"));
    }
}

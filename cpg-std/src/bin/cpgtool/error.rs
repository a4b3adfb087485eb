//! What can stop a cpgtool command.

use std::path::PathBuf;

use cpg_std::{ConfigError, CsError, StartError};

/// Why a cpgtool command failed (printed as `cpgtool: {error}`, exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] cpg_std::crypto::KeyFileError),
    #[error("node {node}: {source}")]
    Start { node: u32, source: StartError },
    #[error("group {name:?}: {source}")]
    GroupName { name: String, source: CsError },
    /// A Cpg call that the command cannot do without.
    #[error("{call}: {source}")]
    Cpg { call: &'static str, source: CsError },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// A command-line value out of range.
    #[error("{0}")]
    Usage(&'static str),
    #[error("no IPv4 loopback address")]
    NoLoopback,
    #[error("timed out")]
    TimedOut,
    #[error("all nodes exited")]
    AllExited,
    /// What was being waited for when the inner error happened.
    #[error("{what}: {source}")]
    While { what: String, source: Box<Error> },
    /// A run that finished but whose checks failed.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Wrap with what was being done (`node 2 not ready: timed out`).
    pub(crate) fn context(self, what: impl Into<String>) -> Error {
        Error::While {
            what: what.into(),
            source: Box::new(self),
        }
    }
}

/// The result of a cpgtool step.
pub(crate) type Res<T> = Result<T, Error>;

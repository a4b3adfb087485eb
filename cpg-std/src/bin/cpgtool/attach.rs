//! Where a cpgtool process gets its handle: a node of its own (the
//! embedded default: `--config F [--nodeid N]`) or the host's cpgd
//! (`--daemon [SOCKET]`; without a path, `CPGD_SOCKET`, then
//! `/run/cpgd/cpgd.sock`). Everything after `open` is the same `Cpg` API.

use std::path::PathBuf;

use clap::Args;
use cpg_std::{Cpg, ModelV1, Node};

use crate::config::start_node_with;
use crate::error::{Error, Res};

/// `--config F [--nodeid N]` or `--daemon [SOCKET]`.
#[derive(Args, Clone, Debug)]
pub(crate) struct AttachArgs {
    /// Cluster configuration (TOML): run a node of this process's own.
    #[arg(long, required_unless_present = "daemon", conflicts_with = "daemon")]
    pub config: Option<PathBuf>,
    /// This node (overrides the file's nodeid).
    #[arg(long, requires = "config")]
    pub nodeid: Option<u32>,
    /// Be a client of the host's cpgd instead (its socket; default
    /// `CPGD_SOCKET`, then /run/cpgd/cpgd.sock).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub daemon: Option<PathBuf>,
    /// Answer `cpgtool status --node PATH` on this Unix socket (a node of
    /// this process's own; ask cpgd with `cpgtool status --daemon`).
    #[arg(long, conflicts_with = "daemon")]
    pub status_socket: Option<PathBuf>,
}

/// A handle and, when embedded, the node it runs on.
pub(crate) struct Attached {
    pub node: Option<Node>,
    pub cpg: Cpg,
    /// The largest message the node accepts.
    pub max_message_size: usize,
    /// The status socket while it serves (`--status-socket`).
    pub status: Option<crate::status::SocketGuard>,
}

impl AttachArgs {
    /// The daemon socket asked for, if any (`None` inside: the default).
    pub fn daemon_socket(&self) -> Option<Option<PathBuf>> {
        self.daemon
            .as_ref()
            .map(|p| (!p.as_os_str().is_empty()).then(|| p.clone()))
    }

    /// Open a handle with `model`.
    pub fn open(&self, model: ModelV1) -> Res<Attached> {
        if let Some(sock) = self.daemon_socket() {
            let cpg = Cpg::connect(sock.as_deref(), model, None).map_err(|source| Error::Cpg {
                call: "connect (cpgd)",
                source,
            })?;
            return Ok(Attached {
                node: None,
                cpg,
                max_message_size: cpg_core::limits::MAX_MESSAGE_SIZE_DEFAULT,
                status: None,
            });
        }
        let config = self.config.as_ref().ok_or(Error::Usage(
            "--config FILE or --daemon [SOCKET] is required",
        ))?;
        let (node, settings) = start_node_with(config, self.nodeid)?;
        let cpg = Cpg::model_initialize(&node, model, None).map_err(|source| Error::Cpg {
            call: "model_initialize",
            source,
        })?;
        let status = match &self.status_socket {
            Some(path) => Some(crate::status::serve(path, node.status_source())?),
            None => None,
        };
        Ok(Attached {
            node: Some(node),
            cpg,
            max_message_size: settings.engine.max_message_size,
            status,
        })
    }
}

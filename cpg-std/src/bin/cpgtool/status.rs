//! `cpgtool status`: the ring, its members, each link and the counters of
//! a running node, as `corosync-cfgtool -s` and `corosync-cmapctl -m
//! stats` show them; `--json` prints one JSON object, `--watch` reprints
//! once a second until interrupted.
//!
//! Two sources: cpgd (`--daemon [SOCKET]`, the default: the IPC's
//! `STATUS` request) or an embedded `cpgtool node` started with
//! `--status-socket PATH` (`--node PATH`): the node answers each
//! connection to that Unix socket with one JSON line, its
//! [`StatusReport`], and closes it. Nothing is read from the connection,
//! so a client can only ask, never change anything.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use cpg_std::status::{StatusReport, StatusSource};
use cpg_std::{Cpg, ModelV1};

use crate::error::{Error, Res};

/// `cpgtool status` arguments.
#[derive(Args, Clone, Debug)]
pub(crate) struct StatusArgs {
    /// Ask cpgd (the default) at this socket (default `CPGD_SOCKET`, then
    /// /run/cpgd/cpgd.sock).
    #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "node")]
    pub daemon: Option<PathBuf>,
    /// Ask an embedded `cpgtool node` at its `--status-socket`.
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// One JSON object instead of the text view.
    #[arg(long)]
    pub json: bool,
    /// Refresh once a second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// Where the reports come from.
enum Source {
    Daemon(Cpg),
    Node(PathBuf),
}

impl Source {
    fn report(&self) -> Res<StatusReport> {
        match self {
            Source::Daemon(cpg) => cpg.status_report().map_err(|source| Error::Cpg {
                call: "status (cpgd)",
                source,
            }),
            Source::Node(path) => ask_node(path),
        }
    }
}

/// One report from a node's status socket.
fn ask_node(path: &Path) -> Res<StatusReport> {
    let io = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let s = UnixStream::connect(path).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = String::new();
    // a report is a few KiB; a node that sends more is not a node
    BufReader::new(std::io::Read::take(s, 1 << 20))
        .read_line(&mut line)
        .map_err(io)?;
    serde_json::from_str(&line)
        .map_err(|e| Error::Failed(format!("{}: not a status report ({e})", path.display())))
}

/// `cpgtool status`.
pub(crate) fn status_main(a: &StatusArgs) -> Res<()> {
    let source = match &a.node {
        Some(p) => Source::Node(p.clone()),
        None => {
            let sock = a
                .daemon
                .as_ref()
                .filter(|p| !p.as_os_str().is_empty())
                .cloned();
            let cpg =
                Cpg::connect(sock.as_deref(), ModelV1::default(), None).map_err(|source| {
                    Error::Cpg {
                        call: "connect (cpgd)",
                        source,
                    }
                })?;
            Source::Daemon(cpg)
        }
    };
    let r = loop {
        let r = source.report().and_then(|r| print(&r, a.json, a.watch));
        if r.is_err() || !a.watch {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if let Source::Daemon(cpg) = source {
        let _ = cpg.finalize();
    }
    r
}

fn print(r: &StatusReport, json: bool, watch: bool) -> Res<()> {
    let text = if json {
        serde_json::to_string(r).map_err(|e| Error::Failed(e.to_string()))? + "\n"
    } else {
        r.text()
    };
    let mut out = std::io::stdout().lock();
    if watch && !json {
        // clear the screen and go home, as watch(1) does
        let _ = write!(out, "\x1b[2J\x1b[H");
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            what: "stdout",
            source,
        })
}

/// Serve `source`'s report on a Unix socket at `path` from a thread of
/// its own (`cpgtool node --status-socket`): each connection gets one JSON
/// line. A stale socket file is replaced; the socket is removed when the
/// returned guard drops.
pub(crate) fn serve(path: &Path, source: StatusSource) -> Res<SocketGuard> {
    let io = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io)?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let r = source.report();
                if let Ok(mut line) = serde_json::to_string(&r) {
                    line.push('\n');
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(line.as_bytes());
                }
            }
        })
        .map_err(|source| Error::Io {
            what: "status thread",
            source,
        })?;
    Ok(SocketGuard(path.to_path_buf()))
}

/// Removes the status socket's file when dropped.
pub(crate) struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

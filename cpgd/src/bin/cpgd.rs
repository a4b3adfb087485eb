//! `cpgd --config FILE [--nodeid N] [--log-level LEVEL]`: one CPG node per
//! host serving client processes, in the foreground (systemd's `Type=simple`,
//! tests). SIGTERM or SIGINT stops it gracefully (the ring learns at once);
//! SIGKILL is a node failure like any other.

use std::path::PathBuf;
use std::process::ExitCode;

use cpgd::{Daemon, StopMode};
use signal_hook::consts::{SIGINT, SIGTERM};

const USAGE: &str =
    "usage: cpgd (--config FILE | --corosync-conf FILE) [--nodeid N] [--log-level error|warn|info|debug|trace]

Runs one CPG node for this host and serves client processes on the
[ipc] socket of FILE (default /run/cpgd/cpgd.sock). With --corosync-conf,
Corosync's file is read directly (what it does not carry over is logged);
the node is --nodeid, else the nodelist entry whose address is local. Clients: Cpg::connect
in Rust, cpgtool chat --daemon, cpgtool groups.";

struct Args {
    config: PathBuf,
    corosync: bool,
    nodeid: Option<u32>,
    level: log::LevelFilter,
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut corosync = false;
    let mut nodeid = None;
    let mut level = std::env::var("CPGD_LOG")
        .ok()
        .and_then(|l| cpgd::logger::parse_level(&l))
        .unwrap_or(log::LevelFilter::Info);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?))
            }
            "--corosync-conf" => {
                config = Some(PathBuf::from(
                    it.next().ok_or("--corosync-conf needs a file")?,
                ));
                corosync = true;
            }
            "--nodeid" | "-n" => {
                let v = it.next().ok_or("--nodeid needs a number")?;
                nodeid = Some(
                    v.parse()
                        .map_err(|_| format!("--nodeid {v}: not a node id"))?,
                );
            }
            "--log-level" => {
                let v = it.next().ok_or("--log-level needs a level")?;
                level = cpgd::logger::parse_level(&v)
                    .ok_or(format!("--log-level {v}: unknown level"))?;
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        config: config.ok_or("--config FILE or --corosync-conf FILE is required")?,
        corosync,
        nodeid,
        level,
    })
}

fn main() -> ExitCode {
    cpg_std::malloc::tune();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cpgd: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    cpgd::logger::init(args.level);
    let loaded = if args.corosync {
        cpg_std::config::corosync::load(&args.config).map(|(f, notes)| {
            for n in notes {
                log::warn!(target: "cpgd", "{}: {}", args.config.display(), n.0);
            }
            f
        })
    } else {
        cpg_std::ConfigFile::load(&args.config)
    };
    let file = match loaded {
        Ok(f) => f,
        Err(e) => {
            log::error!(target: "cpgd", "{e}");
            return ExitCode::from(1);
        }
    };
    let nodeid = args.nodeid.or(file.nodeid).or_else(|| local_node(&file));
    let config = match file.validate(nodeid) {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: "cpgd", "{}: {e}", args.config.display());
            return ExitCode::from(1);
        }
    };
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            log::error!(target: "cpgd", "signals: {e}");
            return ExitCode::from(1);
        }
    };
    match cpgd::cpu::place(config.ipc.cpu, config.node_id) {
        Ok(Some(n)) => log::info!(target: "cpgd", "threads on CPU {n} (ipc.cpu)"),
        Ok(None) => {}
        Err(e) => {
            log::error!(target: "cpgd", "{e}");
            return ExitCode::from(1);
        }
    }
    let daemon = match Daemon::start(&config) {
        Ok(d) => d,
        Err(e) => {
            log::error!(target: "cpgd", "{e}");
            return ExitCode::from(1);
        }
    };
    let stopper = daemon.stopper();
    let handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!(target: "cpgd", "signal {sig}: stopping");
            stopper.stop(StopMode::Graceful);
        }
    });
    daemon.wait();
    handle.close();
    ExitCode::SUCCESS
}

/// The nodelist entry whose address belongs to this host (Corosync finds
/// its node the same way): the first one a UDP socket can bind to.
fn local_node(file: &cpg_std::ConfigFile) -> Option<u32> {
    file.nodelist
        .iter()
        .find(|n| std::net::UdpSocket::bind((n.addr.ip(), 0)).is_ok())
        .map(|n| n.nodeid)
}

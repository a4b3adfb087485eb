//! `cpgtool`: run a node, chat in a group, and show a cluster at work.
//!
//! - `cpgtool demo [--nodes 3]`: writes a config with free loopback ports,
//!   starts N node processes, joins a group, streams numbered messages from
//!   every node, checks every node delivered the identical sequence,
//!   SIGKILLs one node and shows the survivors carry on.
//! - `cpgtool chat --config F --nodeid N GROUP`: Corosync's `testcpg`.
//! - `cpgtool node --config F --nodeid N`: one node process driven by JSON
//!   lines on stdin, reporting JSON lines on stdout (used by `demo` and the
//!   tests; the protocol is described at [`node::node_main`]).
//! - `cpgtool config --nodes N --out F`: write a config for N nodes
//!   (frames encrypted with a key made beside it).
//! - `cpgtool keygen PATH`: write a cluster key.
//! - `cpgtool status [--daemon [SOCKET] | --node SOCKET] [--json] [--watch]`:
//!   ring, members, links and counters of cpgd or of a `cpgtool node`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cpg_std::config::TransportKind;

mod attach;
mod bench;
mod chat;
mod cluster;
mod config;
mod demo;
mod error;
mod member;
mod message;
mod node;
mod status;
use cpg_std::cpgtool_proto as proto;

use config::{CryptoArg, Protection, Transport};

/// Lock `m`, taking the guard even if a thread panicked while holding it:
/// the crate's one mutex-poison policy.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Parser)]
#[command(
    name = "cpgtool",
    version,
    about = "Closed process groups: run a node, chat, demo a cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log on stderr at this level (off, error, warn, info, debug, trace;
    /// default `CPG_LOG`, else off): the operator's lines (`cpg::totem`
    /// memberships and token losses, `cpg::group` evictions). Child node
    /// processes (demo, bench) inherit `CPG_LOG`.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

/// The stderr logger at `--log-level`, else `CPG_LOG`, else off (so
/// `demo`'s story and `node`'s JSON lines stay as they are by default).
fn init_logging(flag: Option<&str>) -> Result<(), error::Error> {
    let from_env = std::env::var("CPG_LOG").ok();
    let level = match flag.or(from_env.as_deref()) {
        None => log::LevelFilter::Off,
        Some(l) => cpg_std::logger::parse_level(l).ok_or(error::Error::Usage(
            "--log-level (or CPG_LOG): off, error, warn, info, debug or trace",
        ))?,
    };
    if level != log::LevelFilter::Off {
        cpg_std::logger::init(level);
    }
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N node processes on free loopback ports and show the story:
    /// joins, a numbered stream from every node, an order check, a node
    /// SIGKILLed mid-stream, failure detection, a summary.
    Demo {
        /// Node processes to start.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Messages each node sends in the ordered-stream phase.
        #[arg(long, default_value_t = 5000)]
        messages: u64,
        /// Bytes per message.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Token timeout in milliseconds (failure detection time).
        #[arg(long, default_value_t = 1000)]
        token_ms: u64,
        /// Transport.
        #[arg(long, value_enum, default_value_t = Transport::Uring)]
        transport: Transport,
    },
    /// Behave like Corosync's testcpg on a node of its own (`--config`) or
    /// as a client of the host's cpgd (`--daemon [SOCKET]`): stdin lines are
    /// multicast; deliveries, confchgs and totem confchgs are printed.
    /// Commands: /members, /groups, /leave, /join NAME, /quit.
    Chat {
        #[command(flatten)]
        attach: attach::AttachArgs,
        /// Group to join.
        group: String,
    },
    /// Every group and its members, as corosync-cpgtool prints them (a
    /// client of cpgd by default, or `--config` for a node of its own).
    Groups {
        /// cpgd's socket (default `CPGD_SOCKET`, then /run/cpgd/cpgd.sock).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// One node process (or cpgd client, `--daemon`) controlled by JSON
    /// lines on stdin.
    Node {
        #[command(flatten)]
        attach: attach::AttachArgs,
        /// Join this group at once.
        #[arg(long)]
        join: Option<String>,
        /// Report every delivery (not only messages of 64 KiB and more).
        #[arg(long)]
        verbose: bool,
    },
    /// The ring, its members, each link and the counters of cpgd (the
    /// default) or of a `cpgtool node` (`--node SOCKET`), as
    /// corosync-cfgtool -s and corosync-cmapctl -m stats show them.
    Status(status::StatusArgs),
    /// Throughput and latency of M member processes in one group
    /// (`--matrix` runs every row); see `cpgtool bench --help`.
    Bench(bench::BenchArgs),
    /// One member process of `cpgtool bench` (started by it).
    #[command(hide = true)]
    BenchMember(member::MemberArgs),
    /// Write a configuration for N nodes on free 127.0.0.1 ports.
    Config {
        /// Read this corosync.conf instead and write it as our TOML (every
        /// setting not carried over is named on stderr).
        #[arg(long)]
        from_corosync: Option<PathBuf>,
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// State directory for the nodes.
        #[arg(long, default_value = "/tmp/cpg-state")]
        state_dir: PathBuf,
        /// Frame protection; the key is `authkey` beside the config file
        /// (made if missing: copy it to every node).
        #[arg(long, value_enum, default_value_t = CryptoArg::Encrypt)]
        crypto: CryptoArg,
    },
    /// Write a new random cluster key (256 bytes, mode 0400), as
    /// corosync-keygen does; every node needs the same file.
    Keygen {
        /// Where to write it (never over an existing file).
        path: PathBuf,
    },
}

fn main() {
    cpg_std::malloc::tune();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref()) {
        eprintln!("cpgtool: {e}");
        std::process::exit(2);
    }
    let r = match cli.cmd {
        Cmd::Demo {
            nodes,
            messages,
            size,
            token_ms,
            transport,
        } => demo::demo(&demo::DemoArgs {
            nodes,
            messages,
            size,
            token_ms,
            transport: transport.into(),
        }),
        Cmd::Chat { attach, group } => chat::chat(&attach, &group),
        Cmd::Groups { daemon } => chat::groups(daemon.as_deref()),
        Cmd::Node {
            attach,
            join,
            verbose,
        } => node::node_main(&attach, join, verbose),
        Cmd::Status(a) => status::status_main(&a),
        Cmd::Bench(a) => bench::bench_main(&a),
        Cmd::BenchMember(a) => member::member_main(&a),
        Cmd::Config {
            from_corosync: Some(conf),
            out,
            ..
        } => config::from_corosync(&conf, &out),
        Cmd::Config {
            from_corosync: None,
            nodes,
            out,
            state_dir,
            crypto,
        } => config::write_config(
            nodes,
            &out,
            &state_dir,
            1000,
            TransportKind::Uring,
            &Protection::beside(&out, crypto.into()),
        ),
        Cmd::Keygen { path } => cpg_std::crypto::generate_key(&path)
            .map(|()| println!("cpgtool keygen: wrote {} (mode 0400)", path.display()))
            .map_err(Into::into),
    };
    if let Err(e) = r {
        eprintln!("cpgtool: {e}");
        std::process::exit(1);
    }
}

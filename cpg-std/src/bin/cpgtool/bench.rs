//! `cpgtool bench`: throughput and latency of M member processes on one
//! host (issue 4).
//!
//! The driver (`cpgtool bench`) writes a cluster config with M nodes on
//! free 127.0.0.1 ports (the `demo`'s config writer), starts M member
//! processes (`cpgtool bench-member`, one node each, the `node` process
//! model), waits until each sees all M members in the group, starts them
//! together, prints a progress line while they run, collects one result
//! line from each and prints the row (per member: the mean over the M
//! processes) as a table line or, with `--json`, as one JSON line.
//!
//! A member multicasts as fast as flow control allows for `--seconds`,
//! counting every message it delivers (its own included) between the start
//! and the end of the sending window; then it multicasts an END marker with
//! the number of sends accepted and waits for every member's END, so
//! `lost` (accepted sends not delivered) is exact. The latency run keeps
//! one 64 B message in flight per member and records the round trip from
//! just before the send to its own delivery in an HDR histogram.
//!
//! Why `hdrhistogram`: percentiles up to p99.9 over 10^4..10^6 samples
//! spanning µs to ms need a fixed relative error at every magnitude with
//! constant memory; the HDR histogram is the standard structure for that
//! (Corosync's side, `benches/corosync/cpgload.c`, uses the same bucket
//! scheme), and its recorded buckets travel between processes as
//! (value, count) pairs.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use cpg_std::config::{ConfigFile, TransportKind};
use cpg_std::Guarantee;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::config::{write_config_with, CryptoArg, Protection, Transport};
use crate::error::{Error, Res};
use crate::member::{new_histogram, HDR};
use crate::proto::{Event, MemberResult, Report};

/// `--guarantee` of a bench run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchGuarantee {
    Agreed,
    Safe,
}

impl BenchGuarantee {
    /// The name on the command line and in the JSON rows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BenchGuarantee::Agreed => "agreed",
            BenchGuarantee::Safe => "safe",
        }
    }
}

impl From<BenchGuarantee> for Guarantee {
    fn from(g: BenchGuarantee) -> Guarantee {
        match g {
            BenchGuarantee::Agreed => Guarantee::Agreed,
            BenchGuarantee::Safe => Guarantee::Safe,
        }
    }
}

/// `--send`: how a bench member multicasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SendMode {
    /// `mcast_joined`: the bytes are copied.
    Copy,
    /// `zcb_alloc` + `zcb_mcast_joined`: zero-copy buffers.
    Zcb,
}

impl SendMode {
    /// The name on the command line and in the JSON rows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SendMode::Copy => "copy",
            SendMode::Zcb => "zcb",
        }
    }
}

/// `cpgtool bench` options (benches/compare.sh calls exactly these).
#[derive(Args, Clone, Debug)]
pub(crate) struct BenchArgs {
    /// Member processes (one node each).
    #[arg(long, default_value_t = 1)]
    pub members: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The delivery guarantee.
    #[arg(long, value_enum, default_value_t = BenchGuarantee::Agreed)]
    pub guarantee: BenchGuarantee,
    /// copy (`mcast_joined`) or zcb (`zcb_mcast_joined`).
    #[arg(long, value_enum, default_value_t = SendMode::Copy)]
    pub send: SendMode,
    /// Sending window in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Latency run: one 64 B message in flight per member.
    #[arg(long)]
    pub latency: bool,
    /// Latency run: busy-poll the handle (dispatch without sleeping in
    /// poll) instead of waiting on its fd.
    #[arg(long)]
    pub busy_poll: bool,
    /// The path MTU (`netmtu`: the whole IP packet, up to 65,535; frames are 28 B smaller) instead of the default "auto" (the kernel's path MTU: 65,535 on loopback).
    #[arg(long)]
    pub netmtu: Option<usize>,
    /// UDP segmentation offload off (`gso = false`): one datagram per
    /// send, for an A/B against the default (on where the kernel has it).
    #[arg(long)]
    pub no_gso: bool,
    /// UDP generic receive offload off (`gro = false`): one datagram per
    /// receive (and receive buffers sized to the frame), for an A/B
    /// against the default (on where the kernel has it).
    #[arg(long)]
    pub no_gro: bool,
    /// Totem `window_size` instead of the default.
    #[arg(long)]
    pub window: Option<u32>,
    /// Totem `max_messages` instead of the default.
    #[arg(long)]
    pub max_messages: Option<u32>,
    /// One JSON line per run on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run the whole matrix (members {1,3} × sizes × guarantees × sends,
    /// latency rows, tuned-setting rows) and print the table.
    #[arg(long, alias = "all")]
    pub matrix: bool,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Uring)]
    pub transport: Transport,
    /// Frame protection (`none` by default, as in the Corosync baseline
    /// rows; `encrypt` measures the cost of sealing).
    #[arg(long, value_enum, default_value_t = CryptoArg::None)]
    pub crypto: CryptoArg,
    /// Keep the run's directory (config, member stderr) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// The members are client processes of one cpgd (Corosync's topology:
    /// one node, M processes over shared memory) instead of M nodes. The
    /// `cpgd` binary is taken from beside this one.
    #[arg(long)]
    pub daemon: bool,
}

// ---- driver ---------------------------------------------------------------

/// One row's parameters.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    members: u32,
    size: usize,
    guarantee: BenchGuarantee,
    send: SendMode,
    seconds: f64,
    latency: bool,
    busy_poll: bool,
    netmtu: Option<usize>,
    window: Option<u32>,
    max_messages: Option<u32>,
    transport: TransportKind,
    crypto: CryptoArg,
    daemon: bool,
    gso: bool,
    gro: bool,
}

/// One row's result (per member: the mean over the member processes).
#[derive(Clone, Debug)]
struct RowResult {
    row: Row,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    delivered: u64,
    lost: u64,
    latency: Option<(f64, f64, f64, u64)>,
    netmtu: usize,
    window_size: u32,
    max_messages: u32,
    rotation_us: Option<f64>,
    secs: f64,
    error: Option<String>,
    load: f64,
}

fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

fn run_row(exe: &Path, row: &Row, show_progress: bool, keep: bool) -> Res<RowResult> {
    let dir = std::env::temp_dir().join(format!(
        "cpgtool-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|source| Error::File {
        path: dir.clone(),
        source,
    })?;
    let config = dir.join("cluster.toml");
    let (netmtu, window, maxm, gso, gro) =
        (row.netmtu, row.window, row.max_messages, row.gso, row.gro);
    let socket = dir.join("cpgd.sock");
    let sock = socket.clone();
    let daemon = row.daemon;
    write_config_with(
        if row.daemon { 1 } else { row.members },
        &config,
        &dir.join("state"),
        1000,
        row.transport,
        &Protection::beside(&config, row.crypto.into()),
        |f| {
            if let Some(v) = netmtu {
                f.netmtu = v.into();
            }
            if let Some(v) = window {
                f.totem.window_size = Some(v);
            }
            if let Some(v) = maxm {
                f.totem.max_messages = Some(v);
            }
            f.gso = gso;
            f.gro = gro;
            if daemon {
                f.ipc.socket = sock;
            }
        },
    )?;
    let eng = ConfigFile::load(&config)?
        .validate(Some(1))?
        .with_path_mtu()?
        .engine;
    let cpgd = if row.daemon {
        Some(start_cpgd(exe, &config, &socket, &dir)?)
    } else {
        None
    };
    let attach = match &cpgd {
        Some(_) => Attach::Daemon(&socket),
        None => Attach::Nodes(&config),
    };
    let r = run_row_in(exe, row, attach, show_progress, &eng);
    if let Some(mut d) = cpgd {
        stop_cpgd(&mut d);
    }
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("cpgtool bench: run directory kept: {}", dir.display());
    }
    r
}

/// Where the members get their handles.
#[derive(Clone, Copy)]
enum Attach<'a> {
    /// A node each, from this config.
    Nodes(&'a Path),
    /// Clients of the cpgd at this socket.
    Daemon(&'a Path),
}

/// Start `cpgd --config CONFIG` (from beside `exe`) and wait until it
/// accepts connections on `socket`.
fn start_cpgd(exe: &Path, config: &Path, socket: &Path, dir: &Path) -> Res<std::process::Child> {
    let bin = exe.with_file_name("cpgd");
    let err = std::fs::File::create(dir.join("cpgd.stderr")).map_err(|source| Error::File {
        path: dir.join("cpgd.stderr"),
        source,
    })?;
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(config)
        .args(["--nodeid", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|source| Error::File { path: bin, source })?;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(Error::Failed(format!(
                "cpgd exited at start (see {})",
                dir.join("cpgd.stderr").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_cpgd(&mut child);
    Err(Error::TimedOut.context("cpgd did not listen"))
}

/// SIGTERM, then wait (SIGKILL after 10 s).
fn stop_cpgd(child: &mut std::process::Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_row_in(
    exe: &Path,
    row: &Row,
    attach: Attach<'_>,
    show_progress: bool,
    eng: &cpg_core::limits::Config,
) -> Res<RowResult> {
    let load = loadavg();
    let mut c = spawn_members(exe, row, attach)?;
    for id in 1..=row.members {
        c.wait_event(id, Duration::from_secs(90), |e| {
            matches!(e, Event::Ready { .. })
        })
        .map_err(|e| e.context(format!("member {id} not ready")))?;
    }
    for id in 1..=row.members {
        c.send_line(id, "go");
    }
    let results = collect_results(&mut c, row, show_progress)?;
    stop_members(&mut c);
    Ok(aggregate(row, &results, eng, load))
}

/// Start the row's `bench-member` processes.
fn spawn_members(exe: &Path, row: &Row, attach: Attach<'_>) -> Res<Cluster> {
    let (flag, path) = match attach {
        Attach::Nodes(p) => ("--config", p.to_path_buf()),
        Attach::Daemon(p) => ("--daemon", p.to_path_buf()),
    };
    let daemon = matches!(attach, Attach::Daemon(_));
    let r = row.clone();
    Cluster::start_with(exe, row.members, move |id| {
        let mut v: Vec<String> = vec![
            "bench-member".into(),
            flag.into(),
            path.display().to_string(),
            "--nodeid".into(),
            if daemon { "1".into() } else { id.to_string() },
            "--members".into(),
            r.members.to_string(),
            "--size".into(),
            r.size.to_string(),
            "--guarantee".into(),
            r.guarantee.name().into(),
            "--send".into(),
            r.send.name().into(),
            "--seconds".into(),
            r.seconds.to_string(),
        ];
        if r.latency {
            v.push("--latency".into());
        }
        if r.busy_poll {
            v.push("--busy-poll".into());
        }
        v
    })
}

/// Every member's result, showing the progress line meanwhile.
fn collect_results(c: &mut Cluster, row: &Row, show_progress: bool) -> Res<Vec<MemberResult>> {
    let t0 = Instant::now();
    let n = row.members as usize;
    let mut results: Vec<Option<MemberResult>> = vec![None; n];
    let mut progress = vec![0u64; n];
    let mut last_print = Instant::now();
    let bound = Duration::from_secs_f64(row.seconds) + Duration::from_secs(60);
    while results.iter().any(Option::is_none) {
        let left = bound
            .checked_sub(t0.elapsed())
            .ok_or(Error::TimedOut)
            .map_err(|e| e.context("waiting for member results"))?;
        let (id, r, _) = c.wait(left, |_, r| {
            matches!(r, Report::Event(Event::Progress { .. } | Event::Result(_)))
        })?;
        let i = id as usize - 1;
        match r {
            Report::Event(Event::Progress { delivered, .. }) => progress[i] = delivered,
            Report::Event(Event::Result(m)) => results[i] = Some(m),
            _ => {}
        }
        if show_progress && last_print.elapsed() >= Duration::from_millis(250) {
            let el = t0.elapsed().as_secs_f64().min(row.seconds).max(1e-3);
            let rate: f64 = progress.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / el;
            eprint!(
                "\r  {:<40} {:>5.1}/{:.0} s  {:>12.0} msgs/s {:>9.1} MB/s per member   ",
                describe(row),
                el,
                row.seconds,
                rate,
                rate * row.size.max(HDR) as f64 / 1e6
            );
            let _ = std::io::stderr().flush();
            last_print = Instant::now();
        }
    }
    if show_progress {
        eprint!("\r{:<110}\r", "");
    }
    Ok(results.into_iter().flatten().collect())
}

/// Tell every member to quit; kill one that has not after 15 s.
fn stop_members(c: &mut Cluster) {
    for id in 1..=c.procs.len() as u32 {
        c.send_line(id, "quit");
    }
    for p in &mut c.procs {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > end => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        p.alive = false;
    }
}

/// The row's figures: per member, the mean over the member processes.
fn aggregate(
    row: &Row,
    results: &[MemberResult],
    eng: &cpg_core::limits::Config,
    load: f64,
) -> RowResult {
    let mut msgs = 0.0;
    let mut mb = 0.0;
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut secs = 0.0;
    let mut rot = 0.0;
    let mut errors = Vec::new();
    let mut hist = new_histogram();
    for v in results {
        let s = v.secs;
        if s > 0.0 {
            msgs += v.delivered as f64 / s;
            mb += v.bytes as f64 / s / 1e6;
        }
        secs += s;
        delivered += v.delivered;
        lost += v.lost;
        if v.token_rotations > 0 {
            rot += s * 1e6 / v.token_rotations as f64;
        }
        if let Some(e) = v.send_error {
            errors.push(format!("node {}: send error {e}", v.nodeid));
        }
        if !v.drained {
            errors.push(format!("node {}: not every END arrived", v.nodeid));
        }
        for &(val, cnt) in &v.hist {
            let _ = hist.record_n(val, cnt);
        }
    }
    let k = results.len().max(1) as f64;
    let latency = (row.latency && !hist.is_empty()).then(|| {
        (
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            hist.value_at_quantile(0.999) as f64 / 1e3,
            hist.len(),
        )
    });
    RowResult {
        row: row.clone(),
        msgs_per_sec: msgs / k,
        mb_per_sec: mb / k,
        delivered: (delivered as f64 / k) as u64,
        lost,
        latency,
        netmtu: eng.netmtu,
        window_size: eng.window_size,
        max_messages: eng.max_messages,
        rotation_us: (rot > 0.0).then_some(rot / k),
        secs: secs / k,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        load,
    }
}

fn describe(r: &Row) -> String {
    format!(
        "{}m {} {} {}{}",
        r.members,
        human_size(r.size),
        r.guarantee.name(),
        r.send.name(),
        if r.latency { " latency" } else { "" }
    )
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n & ((1 << 20) - 1) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n & 1023 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn to_json(r: &RowResult) -> Value {
    let mut v = json!({
        "system":if r.row.daemon { "cpg-rs-cpgd" } else { "cpg-rs" },"members":r.row.members,"size":r.row.size,
        "guarantee":r.row.guarantee.name(),"send":r.row.send.name(),"seconds":(r.secs * 1000.0).round() / 1000.0,
        "msgs_per_sec":(r.msgs_per_sec * 10.0).round() / 10.0,
        "mb_per_sec":(r.mb_per_sec * 1000.0).round() / 1000.0,
        "delivered":r.delivered,"lost":r.lost,
        "latency_us": r.latency.map(|(a, b, c, n)| json!({"p50":a,"p99":b,"p999":c,"samples":n})),
        "settings":{"netmtu":r.netmtu,"window_size":r.window_size,"max_messages":r.max_messages,"crypto":format!("{:?}", r.row.crypto).to_lowercase(),"gso":r.row.gso,"gro":r.row.gro},
        "name":r.row.name,
        "token_rotation_us":r.rotation_us.map(|x| (x * 10.0).round() / 10.0),
        "load":r.load,
    });
    if r.row.busy_poll {
        v["busy_poll"] = json!(true);
    }
    if let Some(e) = &r.error {
        v["error"] = json!(e);
    }
    v
}

fn table_header() {
    println!(
        "{:<22} {:>3} {:>8} {:>6} {:>4} {:>13} {:>10} {:>5} {:>28} {:>9} {:>5}",
        "row",
        "M",
        "size",
        "guar",
        "send",
        "msgs/s/member",
        "MB/s",
        "lost",
        "latency p50/p99/p99.9 µs",
        "rot µs",
        "load"
    );
}

fn table_line(r: &RowResult) {
    let lat = r
        .latency
        .map(|(a, b, c, _)| format!("{a:.1} / {b:.1} / {c:.1}"))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<22} {:>3} {:>8} {:>6} {:>4} {:>13.0} {:>10.1} {:>5} {:>28} {:>9} {:>5.2}{}",
        r.row.name,
        r.row.members,
        human_size(r.row.size),
        r.row.guarantee.name(),
        r.row.send.name(),
        r.msgs_per_sec,
        r.mb_per_sec,
        r.lost,
        lat,
        r.rotation_us
            .map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "-".into()),
        r.load,
        r.error
            .as_ref()
            .map(|e| format!("  ERROR: {e}"))
            .unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
}

/// The settings one tuned row changes (None: the default).
pub(crate) struct Tuned {
    /// Row name.
    pub name: &'static str,
    /// Frame size.
    pub netmtu: Option<usize>,
    /// Totem `window_size`.
    pub window: Option<u32>,
    /// Totem `max_messages`.
    pub max_messages: Option<u32>,
}

/// The tuned rows of `--matrix`: larger frames on loopback (the IPv4 UDP
/// maximum), a larger token-visit budget (3x Corosync's 50/17, measured
/// best of 150/50, 300/100 and 500/200 for 3 members), and both.
pub(crate) const TUNED: &[Tuned] = &[
    Tuned {
        name: "netmtu=65535",
        netmtu: Some(65_535),
        window: None,
        max_messages: None,
    },
    Tuned {
        name: "window=150,maxmsg=50",
        netmtu: None,
        window: Some(150),
        max_messages: Some(50),
    },
    Tuned {
        name: "all three",
        netmtu: Some(65_535),
        window: Some(150),
        max_messages: Some(50),
    },
];

pub(crate) fn bench_main(a: &BenchArgs) -> Res<()> {
    if !(1..=16).contains(&a.members) {
        return Err(Error::Usage("--members must be in 1..=16"));
    }
    if a.seconds <= 0.0 {
        return Err(Error::Usage("--seconds must be positive"));
    }
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "current_exe",
        source,
    })?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let out = Output {
        json: a.json,
        show_progress: !a.json || tty,
        keep: a.keep,
    };
    let base = base_row(a);
    let lost = if a.matrix {
        run_matrix(&exe, &matrix_rows(&base), &out)
    } else {
        run_single(&exe, base, &out)?
    };
    if lost > 0 {
        return Err(Error::Failed(format!(
            "{lost} accepted messages were not delivered"
        )));
    }
    Ok(())
}

/// How rows are shown.
struct Output {
    /// One JSON line per row instead of the table.
    json: bool,
    /// The progress line on stderr.
    show_progress: bool,
    /// Keep each run's directory.
    keep: bool,
}

impl Output {
    fn header(&self) {
        if !self.json {
            table_header();
        }
    }

    fn row(&self, r: &RowResult) {
        if self.json {
            println!("{}", to_json(r));
        } else {
            table_line(r);
        }
    }

    /// A row that did not run.
    fn failed(&self, row: &Row, e: &Error) {
        if self.json {
            println!(
                "{}",
                json!({"system":"cpg-rs","members":row.members,"size":row.size,
                "guarantee":row.guarantee.name(),"send":row.send.name(),"seconds":row.seconds,
                "latency":row.latency,"name":row.name,"error":e.to_string()})
            );
        } else {
            println!("{:<22} {} ERROR: {e}", row.name, describe(row));
        }
    }
}

/// The row the command line describes.
fn base_row(a: &BenchArgs) -> Row {
    Row {
        name: "default".into(),
        members: a.members,
        size: a.size,
        guarantee: a.guarantee,
        send: a.send,
        seconds: a.seconds,
        latency: a.latency,
        busy_poll: a.busy_poll,
        netmtu: a.netmtu,
        window: a.window,
        max_messages: a.max_messages,
        transport: TransportKind::from(a.transport),
        crypto: a.crypto,
        daemon: a.daemon,
        gso: !a.no_gso,
        gro: !a.no_gro,
    }
}

/// One row (the command line's); its lost messages. An error ends the
/// command.
fn run_single(exe: &Path, mut row: Row, out: &Output) -> Res<u64> {
    if row.latency {
        row.size = 64;
    }
    row.name = name_of(&row);
    let r = run_row(exe, &row, out.show_progress, out.keep)?;
    out.header();
    out.row(&r);
    Ok(r.lost)
}

/// Every row of the matrix, one after the other; the lost messages over
/// all. A row that fails is shown as such and the next runs.
fn run_matrix(exe: &Path, rows: &[Row], out: &Output) -> u64 {
    out.header();
    let mut lost = 0;
    for row in rows {
        let mut row = row.clone();
        if row.name == "default" || row.name.is_empty() {
            row.name = name_of(&row);
        }
        match run_row(exe, &row, out.show_progress, out.keep) {
            Ok(r) => {
                lost += r.lost;
                out.row(&r);
            }
            Err(e) => out.failed(&row, &e),
        }
    }
    lost
}

/// The `--matrix` rows for members 1 and 3: sizes × guarantees × sends with
/// the default settings, the tuned rows, then the latency rows.
fn matrix_rows(base: &Row) -> Vec<Row> {
    // the defaults: no tuned setting, no latency
    let plain = Row {
        latency: false,
        busy_poll: false,
        netmtu: None,
        window: None,
        max_messages: None,
        ..base.clone()
    };
    let mut rows = Vec::new();
    for members in [1u32, 3] {
        for size in [64usize, 1024, 65_536, 1_048_576] {
            for guarantee in [BenchGuarantee::Agreed, BenchGuarantee::Safe] {
                for send in [SendMode::Copy, SendMode::Zcb] {
                    rows.push(Row {
                        members,
                        size,
                        guarantee,
                        send,
                        ..plain.clone()
                    });
                }
            }
        }
        for t in TUNED {
            for size in [64usize, 65_536, 1_048_576] {
                for send in [SendMode::Copy, SendMode::Zcb] {
                    rows.push(Row {
                        name: t.name.into(),
                        members,
                        size,
                        guarantee: BenchGuarantee::Agreed,
                        send,
                        netmtu: t.netmtu,
                        window: t.window,
                        max_messages: t.max_messages,
                        ..plain.clone()
                    });
                }
            }
        }
        for guarantee in [BenchGuarantee::Agreed, BenchGuarantee::Safe] {
            for busy_poll in [false, true] {
                rows.push(Row {
                    members,
                    size: 64,
                    guarantee,
                    send: SendMode::Copy,
                    latency: true,
                    busy_poll,
                    ..plain.clone()
                });
            }
        }
    }
    rows
}

fn name_of(r: &Row) -> String {
    let mut parts = Vec::new();
    if let Some(v) = r.netmtu {
        parts.push(format!("netmtu={v}"));
    }
    if let Some(v) = r.window {
        parts.push(format!("window={v}"));
    }
    if let Some(v) = r.max_messages {
        parts.push(format!("maxmsg={v}"));
    }
    if r.busy_poll {
        parts.push("busy-poll".into());
    }
    if !r.gso {
        parts.push("no-gso".into());
    }
    if !r.gro {
        parts.push("no-gro".into());
    }
    if r.crypto != CryptoArg::None {
        parts.push(format!("crypto={:?}", r.crypto).to_lowercase());
    }
    if parts.is_empty() {
        "default".into()
    } else {
        parts.join(",")
    }
}

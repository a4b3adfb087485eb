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

use std::io::{BufRead, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use cpg_std::config::{ConfigFile, TransportKind};
use cpg_std::{Cpg, CsError, DispatchFlags, Guarantee, ModelV1};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::config::{group_name, start_node, write_config_with};
use crate::Res;

/// `cpgtool bench` options (benches/compare.sh calls exactly these).
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Member processes (one node each).
    #[arg(long, default_value_t = 1)]
    pub members: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// agreed or safe.
    #[arg(long, default_value = "agreed")]
    pub guarantee: String,
    /// copy (`mcast_joined`) or zcb (`zcb_mcast_joined`).
    #[arg(long, default_value = "copy")]
    pub send: String,
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
    /// The path MTU (`netmtu`: the whole IP packet, up to 65,535; frames are 28 B smaller) instead of the default 1500.
    #[arg(long)]
    pub netmtu: Option<usize>,
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
    /// Transport: uring (default) or udp.
    #[arg(long, default_value = "uring")]
    pub transport: String,
    /// Keep the run's directory (config, member stderr) for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// `cpgtool bench-member` (started by `cpgtool bench`).
#[derive(Args, Clone, Debug)]
pub struct MemberArgs {
    /// Cluster configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// This node.
    #[arg(long)]
    pub nodeid: u32,
    /// Members to wait for.
    #[arg(long)]
    pub members: u32,
    /// Message size.
    #[arg(long)]
    pub size: usize,
    /// agreed or safe.
    #[arg(long)]
    pub guarantee: String,
    /// copy or zcb.
    #[arg(long)]
    pub send: String,
    /// Sending window.
    #[arg(long)]
    pub seconds: f64,
    /// Latency run.
    #[arg(long)]
    pub latency: bool,
    /// Busy-poll in the latency run.
    #[arg(long)]
    pub busy_poll: bool,
    /// Group name.
    #[arg(long, default_value = "cpgbench")]
    pub group: String,
}

// ---- message format -------------------------------------------------------

const MAGIC: u32 = 0x4843_4e42; // "BNCH"
const KIND_DATA: u32 = 0;
const KIND_END: u32 = 1;
/// magic u32 | kind u32 | counter u64 | total u64 | pad u64
const HDR: usize = 32;

fn put_header(buf: &mut [u8], kind: u32, counter: u64, total: u64) {
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&kind.to_le_bytes());
    buf[8..16].copy_from_slice(&counter.to_le_bytes());
    buf[16..24].copy_from_slice(&total.to_le_bytes());
}

fn get_header(m: &[u8]) -> Option<(u32, u64, u64)> {
    if m.len() < HDR || m[0..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let kind = u32::from_le_bytes(m[4..8].try_into().ok()?);
    let counter = u64::from_le_bytes(m[8..16].try_into().ok()?);
    let total = u64::from_le_bytes(m[16..24].try_into().ok()?);
    Some((kind, counter, total))
}

// ---- member process -------------------------------------------------------

#[derive(Default, Clone, Copy)]
struct Sender {
    nodeid: u32,
    pid: u32,
    next: u64,
    unique: u64,
    gaps: u64,
    dups: u64,
    end: Option<u64>,
}

#[derive(Default)]
struct Counts {
    senders: Vec<Sender>,
    foreign: u64,
    members: usize,
    member_pids: Vec<(u32, u32)>,
    /// Latency: the own counter awaited, and when it arrived.
    await_counter: Option<u64>,
    await_at: Option<Instant>,
}

struct MemberState {
    msgs: AtomicU64,
    bytes: AtomicU64,
    counts: Mutex<Counts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn emit(v: Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

fn parse_guarantee(s: &str) -> Res<Guarantee> {
    match s {
        "agreed" => Ok(Guarantee::Agreed),
        "safe" => Ok(Guarantee::Safe),
        g => Err(format!("--guarantee {g:?}: agreed or safe")),
    }
}

fn parse_zc(s: &str) -> Res<bool> {
    match s {
        "copy" => Ok(false),
        "zcb" => Ok(true),
        s => Err(format!("--send {s:?}: copy or zcb")),
    }
}

/// Wait a little after TRY_AGAIN: yield first, then sleep briefly.
fn backoff(spins: &mut u32) {
    // Measured (3 members, 64 B / 64 KiB / 1 MiB): 2 yields then 50 µs
    // sleeps beat 16 yields then 20 µs (cpgload's shape) by 5..20%: a
    // yielding sender context-switches against its own node's threads on
    // a 2-core machine (perf: 7% of samples in sched_yield).
    *spins += 1;
    if *spins < 2 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Send one message; retries TRY_AGAIN until `deadline`. `Ok(false)`: the
/// deadline passed first.
#[allow(clippy::too_many_arguments)]
fn send_one(
    cpg: &Cpg,
    g: Guarantee,
    zc: bool,
    copy_buf: &mut [u8],
    kind: u32,
    counter: u64,
    total: u64,
    deadline: Instant,
) -> Result<bool, CsError> {
    let len = copy_buf.len();
    let mut spins = 0;
    if zc {
        let mut buf = loop {
            match cpg.zcb_alloc(len) {
                Ok(b) => break b,
                Err(CsError::TryAgain) => {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                    backoff(&mut spins);
                }
                Err(e) => return Err(e),
            }
        };
        put_header(&mut buf, kind, counter, total);
        loop {
            match cpg.zcb_mcast_joined(g, buf, len) {
                Ok(()) => return Ok(true),
                Err(e) if e.error == CsError::TryAgain => {
                    let Some(b) = e.buf else {
                        return Err(CsError::TryAgain);
                    };
                    buf = b;
                    if Instant::now() >= deadline {
                        let _ = cpg.zcb_free(buf);
                        return Ok(false);
                    }
                    backoff(&mut spins);
                }
                Err(e) => return Err(e.error),
            }
        }
    } else {
        put_header(copy_buf, kind, counter, total);
        loop {
            match cpg.mcast_joined(g, &[IoSlice::new(copy_buf)]) {
                Ok(()) => return Ok(true),
                Err(CsError::TryAgain) => {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                    backoff(&mut spins);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One member process: a node, a handle, the group; `go` on stdin starts
/// the run; one `{"ev":"result",...}` line at the end; `quit` ends it.
pub fn member_main(a: &MemberArgs) -> Res<()> {
    let g = parse_guarantee(&a.guarantee)?;
    let zc = parse_zc(&a.send)?;
    let size = if a.latency { 64 } else { a.size }.max(HDR);
    let node = start_node(&a.config, Some(a.nodeid))?;
    let me = node.node_id();
    let pid = std::process::id();
    let st = Arc::new(MemberState {
        msgs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        counts: Mutex::new(Counts::default()),
    });
    let (s1, s2) = (st.clone(), st.clone());
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            let mut c = lock(&s1.counts);
            let Some((kind, counter, total)) = get_header(d.msg) else {
                c.foreign += 1;
                return;
            };
            let (n, p) = (d.sender.nodeid, d.sender.pid);
            let i = match c.senders.iter().position(|s| s.nodeid == n && s.pid == p) {
                Some(i) => i,
                None => {
                    c.senders.push(Sender {
                        nodeid: n,
                        pid: p,
                        ..Sender::default()
                    });
                    c.senders.len() - 1
                }
            };
            let s = &mut c.senders[i];
            if kind == KIND_END {
                s.end = Some(total);
                return;
            }
            if counter < s.next {
                s.dups += 1;
                return;
            }
            s.gaps += counter - s.next;
            s.next = counter + 1;
            s.unique += 1;
            s1.msgs.fetch_add(1, Ordering::Relaxed);
            s1.bytes.fetch_add(d.msg.len() as u64, Ordering::Relaxed);
            if n == me && p == pid && c.await_counter == Some(counter) {
                c.await_at = Some(Instant::now());
            }
        })),
        confchg: Some(Box::new(move |_, c| {
            let mut k = lock(&s2.counts);
            k.members = c.members.len();
            k.member_pids = c.members.iter().map(|m| (m.nodeid, m.pid)).collect();
        })),
        totem_confchg: None,
        flags: 0,
    };
    let cpg = Arc::new(Cpg::model_initialize(&node, model, None).map_err(|e| e.to_string())?);
    let group = group_name(&a.group)?;
    let t_join = Instant::now();
    loop {
        match cpg.join(&group) {
            Ok(()) => break,
            Err(CsError::TryAgain) if t_join.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("join: {e}")),
        }
    }
    // our own sender entry exists from the start: a message of ours that
    // never comes back is counted lost even if none does
    lock(&st.counts).senders.push(Sender {
        nodeid: me,
        pid,
        ..Sender::default()
    });
    let dispatcher = if a.latency {
        None
    } else {
        let d = cpg.clone();
        Some(std::thread::spawn(move || {
            d.dispatch(DispatchFlags::Blocking)
        }))
    };
    let dispatch_some = |wait_ms: i32| {
        if a.busy_poll {
            // poll without sleeping; yield so that a node thread sharing
            // this core runs at once
            let _ = cpg.dispatch(DispatchFlags::All);
            std::thread::yield_now();
        } else {
            let fd = match cpg.fd_get() {
                Ok(f) => f,
                Err(_) => return,
            };
            let mut p = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(wait_ms) * 1_000_000,
            };
            if rustix::event::poll(&mut p, Some(&ts)).unwrap_or(0) > 0 {
                let _ = cpg.dispatch(DispatchFlags::All);
            }
        }
    };
    // wait (bounded) for every member
    let t_wait = Instant::now();
    while lock(&st.counts).members < a.members as usize {
        if t_wait.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "node {me}: the group did not reach {} members in 60 s",
                a.members
            ));
        }
        if a.latency {
            dispatch_some(10);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let start_members: Vec<(u32, u32)> = lock(&st.counts).member_pids.clone();
    emit(json!({"ev":"ready","nodeid":me,"pid":pid}));
    // wait for "go"
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "go" => break,
            Some(Ok(_)) => continue,
            _ => return Err("stdin closed before go".into()),
        }
    }
    let rot0 = node.status().engine.token_visits;
    let m0 = st.msgs.load(Ordering::Relaxed);
    let b0 = st.bytes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let t_end = t0 + Duration::from_secs_f64(a.seconds);
    let mut copy_buf = vec![0u8; size];
    let mut counter = 0u64;
    let mut accepted = 0u64;
    let mut send_error = None;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let mut latency_lost = 0u64;
    let progress = Arc::new(AtomicBool::new(true));
    let prog = {
        let (st, p) = (st.clone(), progress.clone());
        std::thread::spawn(move || {
            while p.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                emit(
                    json!({"ev":"progress","delivered":st.msgs.load(Ordering::Relaxed) - m0,
                    "secs":t0.elapsed().as_secs_f64()}),
                );
            }
        })
    };
    if a.latency {
        const WARMUP: u64 = 100;
        let mut n = 0u64;
        while Instant::now() < t_end {
            {
                let mut c = lock(&st.counts);
                c.await_counter = Some(counter);
                c.await_at = None;
            }
            let ts = Instant::now();
            match send_one(&cpg, g, zc, &mut copy_buf, KIND_DATA, counter, 0, t_end) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    send_error = Some(e.code());
                    break;
                }
            }
            counter += 1;
            accepted += 1;
            let bound = Instant::now() + Duration::from_secs(5);
            let got = loop {
                if let Some(at) = lock(&st.counts).await_at {
                    break Some(at);
                }
                if Instant::now() > bound {
                    break None;
                }
                dispatch_some(100);
            };
            match got {
                Some(at) => {
                    if n >= WARMUP {
                        let ns = at.saturating_duration_since(ts).as_nanos() as u64;
                        let _ = hist.record(ns.max(1));
                    }
                    n += 1;
                }
                None => latency_lost += 1,
            }
        }
    } else {
        while Instant::now() < t_end {
            match send_one(&cpg, g, zc, &mut copy_buf, KIND_DATA, counter, 0, t_end) {
                Ok(true) => {
                    counter += 1;
                    accepted += 1;
                }
                Ok(false) => break,
                Err(e) => {
                    send_error = Some(e.code());
                    break;
                }
            }
        }
    }
    let t1 = Instant::now();
    let m1 = st.msgs.load(Ordering::Relaxed);
    let b1 = st.bytes.load(Ordering::Relaxed);
    let rot1 = node.status().engine.token_visits;
    progress.store(false, Ordering::Relaxed);
    let _ = prog.join();
    // END marker (copying path, small), then wait (bounded) for every END
    let drain_bound = Instant::now() + Duration::from_secs(20);
    let mut end_buf = vec![0u8; HDR];
    let end_ok = matches!(
        send_one(
            &cpg,
            g,
            false,
            &mut end_buf,
            KIND_END,
            counter,
            accepted,
            drain_bound
        ),
        Ok(true)
    );
    let all_ends = |c: &Counts| {
        start_members.iter().all(|(n, p)| {
            c.senders
                .iter()
                .any(|s| s.nodeid == *n && s.pid == *p && s.end.is_some())
        })
    };
    let drained = loop {
        if all_ends(&lock(&st.counts)) {
            break true;
        }
        if Instant::now() > drain_bound {
            break false;
        }
        if a.latency {
            dispatch_some(5);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let (lost, gaps, dups, foreign, own_delivered) = {
        let c = lock(&st.counts);
        let mut lost = 0u64;
        let (mut gaps, mut dups, mut own) = (0, 0, 0);
        for s in &c.senders {
            gaps += s.gaps;
            dups += s.dups;
            let expect = if s.nodeid == me && s.pid == pid {
                own = s.unique;
                accepted
            } else {
                s.end.unwrap_or(s.next)
            };
            lost += expect.saturating_sub(s.unique);
        }
        (lost, gaps, dups, c.foreign, own)
    };
    let secs = (t1 - t0).as_secs_f64();
    let hist_pairs: Vec<(u64, u64)> = hist
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    let rotations = rot1.saturating_sub(rot0);
    emit(json!({"ev":"result","nodeid":me,"pid":pid,"secs":secs,
        "delivered":m1 - m0,"bytes":b1 - b0,"accepted":accepted,"own_delivered":own_delivered,
        "lost":lost + latency_lost,"gaps":gaps,"dups":dups,"foreign":foreign,"drained":drained,
        "end_sent":end_ok,"send_error":send_error,"token_rotations":rotations,
        "hist":hist_pairs}));
    // stay in the group until the driver says quit (nobody's tail is cut)
    for l in lines.by_ref() {
        match l {
            Ok(l) if l.trim() == "quit" => break,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let _ = cpg.finalize();
    if let Some(d) = dispatcher {
        let _ = d.join();
    }
    node.stop();
    Ok(())
}

// ---- driver ---------------------------------------------------------------

/// One row's parameters.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    members: u32,
    size: usize,
    guarantee: String,
    send: String,
    seconds: f64,
    latency: bool,
    busy_poll: bool,
    netmtu: Option<usize>,
    window: Option<u32>,
    max_messages: Option<u32>,
    transport: TransportKind,
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
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("cluster.toml");
    let (netmtu, window, maxm) = (row.netmtu, row.window, row.max_messages);
    write_config_with(
        row.members,
        &config,
        &dir.join("state"),
        1000,
        row.transport,
        |f| {
            if let Some(v) = netmtu {
                f.netmtu = v;
            }
            if let Some(v) = window {
                f.totem.window_size = Some(v);
            }
            if let Some(v) = maxm {
                f.totem.max_messages = Some(v);
            }
        },
    )?;
    let file = ConfigFile::load(&config).map_err(|e| e.to_string())?;
    let eng = file.validate(Some(1)).map_err(|e| e.to_string())?.engine;
    let r = run_row_in(exe, row, &config, show_progress, &eng);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("cpgtool bench: run directory kept: {}", dir.display());
    }
    r
}

fn run_row_in(
    exe: &Path,
    row: &Row,
    config: &Path,
    show_progress: bool,
    eng: &cpg_core::limits::Config,
) -> Res<RowResult> {
    let load = loadavg();
    let cfg = config.to_path_buf();
    let r = row.clone();
    let mut c = Cluster::start_with(exe, row.members, move |id| {
        let mut v: Vec<String> = vec![
            "bench-member".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--nodeid".into(),
            id.to_string(),
            "--members".into(),
            r.members.to_string(),
            "--size".into(),
            r.size.to_string(),
            "--guarantee".into(),
            r.guarantee.clone(),
            "--send".into(),
            r.send.clone(),
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
    })?;
    for id in 1..=row.members {
        c.wait(Duration::from_secs(90), |i, v| {
            i == id && v["ev"] == "ready"
        })
        .map_err(|e| format!("member {id} not ready: {e}"))?;
    }
    for id in 1..=row.members {
        c.send_line(id, "go");
    }
    let t0 = Instant::now();
    let n = row.members as usize;
    let mut results: Vec<Option<Value>> = vec![None; n];
    let mut progress = vec![0u64; n];
    let mut last_print = Instant::now();
    let bound = Duration::from_secs_f64(row.seconds) + Duration::from_secs(60);
    while results.iter().any(Option::is_none) {
        let left = bound
            .checked_sub(t0.elapsed())
            .ok_or("timed out waiting for member results")?;
        let (id, v, _) = c.wait(left, |_, v| v["ev"] == "progress" || v["ev"] == "result")?;
        let i = id as usize - 1;
        if v["ev"] == "progress" {
            progress[i] = v["delivered"].as_u64().unwrap_or(0);
        } else {
            results[i] = Some(v);
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
    for id in 1..=row.members {
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
    let results: Vec<Value> = results.into_iter().flatten().collect();
    let mut msgs = 0.0;
    let mut mb = 0.0;
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut secs = 0.0;
    let mut rot = 0.0;
    let mut errors = Vec::new();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    for v in &results {
        let s = v["secs"].as_f64().unwrap_or(0.0);
        let d = v["delivered"].as_u64().unwrap_or(0);
        let b = v["bytes"].as_u64().unwrap_or(0);
        if s > 0.0 {
            msgs += d as f64 / s;
            mb += b as f64 / s / 1e6;
        }
        secs += s;
        delivered += d;
        lost += v["lost"].as_u64().unwrap_or(0);
        let r = v["token_rotations"].as_u64().unwrap_or(0);
        if r > 0 {
            rot += s * 1e6 / r as f64;
        }
        if let Some(e) = v["send_error"].as_u64() {
            errors.push(format!("node {}: send error {e}", v["nodeid"]));
        }
        if v["drained"] != true {
            errors.push(format!("node {}: not every END arrived", v["nodeid"]));
        }
        if let Some(pairs) = v["hist"].as_array() {
            for p in pairs {
                if let (Some(val), Some(cnt)) = (p[0].as_u64(), p[1].as_u64()) {
                    let _ = hist.record_n(val, cnt);
                }
            }
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
    Ok(RowResult {
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
    })
}

fn describe(r: &Row) -> String {
    format!(
        "{}m {} {} {}{}",
        r.members,
        human_size(r.size),
        r.guarantee,
        r.send,
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
        "system":"cpg-rs","members":r.row.members,"size":r.row.size,
        "guarantee":r.row.guarantee,"send":r.row.send,"seconds":(r.secs * 1000.0).round() / 1000.0,
        "msgs_per_sec":(r.msgs_per_sec * 10.0).round() / 10.0,
        "mb_per_sec":(r.mb_per_sec * 1000.0).round() / 1000.0,
        "delivered":r.delivered,"lost":r.lost,
        "latency_us": r.latency.map(|(a, b, c, n)| json!({"p50":a,"p99":b,"p999":c,"samples":n})),
        "settings":{"netmtu":r.netmtu,"window_size":r.window_size,"max_messages":r.max_messages},
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
        r.row.guarantee,
        r.row.send,
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
pub struct Tuned {
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
pub const TUNED: &[Tuned] = &[
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

pub fn bench_main(a: &BenchArgs) -> Res<()> {
    parse_guarantee(&a.guarantee)?;
    parse_zc(&a.send)?;
    if !(1..=16).contains(&a.members) {
        return Err("--members must be in 1..=16".into());
    }
    if a.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    let transport = match a.transport.as_str() {
        "uring" => TransportKind::Uring,
        "udp" => TransportKind::Udp,
        t => return Err(format!("unknown transport {t:?} (uring or udp)")),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let base = Row {
        name: "default".into(),
        members: a.members,
        size: a.size,
        guarantee: a.guarantee.clone(),
        send: a.send.clone(),
        seconds: a.seconds,
        latency: a.latency,
        busy_poll: a.busy_poll,
        netmtu: a.netmtu,
        window: a.window,
        max_messages: a.max_messages,
        transport,
    };
    if !a.matrix {
        let mut row = base;
        if row.latency {
            row.size = 64;
        }
        row.name = name_of(&row);
        let r = run_row(&exe, &row, !a.json || tty, a.keep)?;
        if a.json {
            println!("{}", to_json(&r));
        } else {
            table_header();
            table_line(&r);
        }
        return if r.lost > 0 {
            Err(format!("{} accepted messages were not delivered", r.lost))
        } else {
            Ok(())
        };
    }
    let mut rows = Vec::new();
    for m in [1u32, 3] {
        for size in [64usize, 1024, 65_536, 1_048_576] {
            for g in ["agreed", "safe"] {
                for s in ["copy", "zcb"] {
                    rows.push(Row {
                        members: m,
                        size,
                        guarantee: g.into(),
                        send: s.into(),
                        latency: false,
                        busy_poll: false,
                        netmtu: None,
                        window: None,
                        max_messages: None,
                        ..base.clone()
                    });
                }
            }
        }
        for t in TUNED {
            for size in [64usize, 65_536, 1_048_576] {
                for s in ["copy", "zcb"] {
                    rows.push(Row {
                        name: t.name.into(),
                        members: m,
                        size,
                        guarantee: "agreed".into(),
                        send: s.into(),
                        latency: false,
                        busy_poll: false,
                        netmtu: t.netmtu,
                        window: t.window,
                        max_messages: t.max_messages,
                        ..base.clone()
                    });
                }
            }
        }
        for g in ["agreed", "safe"] {
            for busy in [false, true] {
                rows.push(Row {
                    members: m,
                    size: 64,
                    guarantee: g.into(),
                    send: "copy".into(),
                    latency: true,
                    busy_poll: busy,
                    netmtu: None,
                    window: None,
                    max_messages: None,
                    ..base.clone()
                });
            }
        }
    }
    if !a.json {
        table_header();
    }
    let mut lost = 0;
    for mut row in rows {
        if row.name == "default" || row.name.is_empty() {
            row.name = name_of(&row);
        }
        match run_row(&exe, &row, !a.json || tty, a.keep) {
            Ok(r) => {
                lost += r.lost;
                if a.json {
                    println!("{}", to_json(&r));
                } else {
                    table_line(&r);
                }
            }
            Err(e) => {
                if a.json {
                    println!(
                        "{}",
                        json!({"system":"cpg-rs","members":row.members,"size":row.size,
                        "guarantee":row.guarantee,"send":row.send,"seconds":row.seconds,
                        "latency":row.latency,"name":row.name,"error":e})
                    );
                } else {
                    println!("{:<22} {} ERROR: {e}", row.name, describe(&row));
                }
            }
        }
    }
    if lost > 0 {
        return Err(format!("{lost} accepted messages were not delivered"));
    }
    Ok(())
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
    if parts.is_empty() {
        "default".into()
    } else {
        parts.join(",")
    }
}

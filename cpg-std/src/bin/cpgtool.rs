//! `cpgtool`: run a node, chat in a group, and show a cluster at work.
//!
//! - `cpgtool demo [--nodes 3]`: writes a config with free loopback ports,
//!   starts N node processes, joins a group, streams numbered messages from
//!   every node, checks every node delivered the identical sequence,
//!   SIGKILLs one node and shows the survivors carry on.
//! - `cpgtool chat --config F --nodeid N GROUP`: Corosync's `testcpg`.
//! - `cpgtool node --config F --nodeid N`: one node process driven by JSON
//!   lines on stdin, reporting JSON lines on stdout (used by `demo` and the
//!   tests; the protocol is described at [`node_main`]).
//! - `cpgtool config --nodes N --out F`: write a config for N nodes.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IoSlice, Write};
use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cpg_std::config::{ConfigFile, TransportKind};
use cpg_std::{
    Cpg, CsError, DispatchFlags, GroupName, Guarantee, IterationType, MemberAddr, ModelV1, Node,
    Reason, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
use serde_json::{json, Value};

#[path = "cpgtool-parts/bench.rs"]
mod bench;

#[derive(Parser)]
#[command(
    name = "cpgtool",
    version,
    about = "Closed process groups: run a node, chat, demo a cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
        /// Transport: uring or udp.
        #[arg(long, default_value = "uring")]
        transport: String,
    },
    /// Run a node and behave like Corosync's testcpg: stdin lines are
    /// multicast; deliveries, confchgs and totem confchgs are printed.
    /// Commands: /members, /groups, /leave, /join NAME, /quit.
    Chat {
        /// Cluster configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// This node (overrides the file's nodeid).
        #[arg(long)]
        nodeid: Option<u32>,
        /// Group to join.
        group: String,
    },
    /// Run one node process controlled by JSON lines on stdin.
    Node {
        /// Cluster configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// This node (overrides the file's nodeid).
        #[arg(long)]
        nodeid: Option<u32>,
        /// Join this group at once.
        #[arg(long)]
        join: Option<String>,
        /// Report every delivery (not only messages of 64 KiB and more).
        #[arg(long)]
        verbose: bool,
    },
    /// Throughput and latency of M member processes in one group
    /// (`--matrix` runs every row); see `cpgtool bench --help`.
    Bench(bench::BenchArgs),
    /// One member process of `cpgtool bench` (started by it).
    #[command(hide = true)]
    BenchMember(bench::MemberArgs),
    /// Write a configuration for N nodes on free 127.0.0.1 ports.
    Config {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// State directory for the nodes.
        #[arg(long, default_value = "/tmp/cpg-state")]
        state_dir: PathBuf,
    },
}

/// glibc malloc for a process that moves large messages: keep freed memory
/// (no trimming back to the kernel, blocks up to 32 MiB from the heap, not
/// a fresh mmap each): otherwise every 1 MiB message costs a mmap, 256 page
/// faults with zeroing and a munmap (perf: exc_page_fault, clear_page_erms;
/// 1 member 1 MiB copying at netmtu 65507: 1.3..1.6 -> 3.0..3.3 GB/s).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes allocator parameters; called first thing
    // in main, before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
        mallopt(M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() {
    tune_malloc();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Demo {
            nodes,
            messages,
            size,
            token_ms,
            transport,
        } => demo(nodes, messages, size, token_ms, &transport),
        Cmd::Chat {
            config,
            nodeid,
            group,
        } => chat(&config, nodeid, &group),
        Cmd::Node {
            config,
            nodeid,
            join,
            verbose,
        } => node_main(&config, nodeid, join, verbose),
        Cmd::Bench(a) => bench::bench_main(&a),
        Cmd::BenchMember(a) => bench::member_main(&a),
        Cmd::Config {
            nodes,
            out,
            state_dir,
        } => write_config(nodes, &out, &state_dir, 1000, TransportKind::Uring),
    };
    if let Err(e) = r {
        eprintln!("cpgtool: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

fn start_node(config: &Path, nodeid: Option<u32>) -> Res<Node> {
    let file = ConfigFile::load(config).map_err(|e| e.to_string())?;
    let c = file.validate(nodeid).map_err(|e| e.to_string())?;
    Node::start(&c).map_err(|e| format!("node {}: {e}", c.node_id))
}

fn group_name(s: &str) -> Res<GroupName> {
    GroupName::new(s.as_bytes()).map_err(|e| format!("group {s:?}: {e}"))
}

fn free_ports(n: u32) -> Res<Vec<SocketAddrV4>> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    socks
        .iter()
        .map(|s| match s.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => Ok(a),
            _ => Err("no IPv4 loopback address".to_string()),
        })
        .collect()
}

fn write_config(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
) -> Res<()> {
    write_config_with(n, out, state_dir, token_ms, transport, |_| {})
}

fn write_config_with(
    n: u32,
    out: &Path,
    state_dir: &Path,
    token_ms: u64,
    transport: TransportKind,
    tweak: impl FnOnce(&mut ConfigFile),
) -> Res<()> {
    let addrs = free_ports(n)?;
    let nodes: Vec<(u32, SocketAddrV4)> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u32 + 1, *a))
        .collect();
    let mut f = ConfigFile::new("cpgtool", &nodes);
    f.state_dir = state_dir.to_path_buf();
    f.totem.token_ms = Some(token_ms);
    f.transport = transport;
    tweak(&mut f);
    std::fs::write(out, f.to_toml()).map_err(|e| format!("{}: {e}", out.display()))
}

// ---- message format -------------------------------------------------------

const MAGIC: &[u8; 4] = b"CPGT";
const HEADER: usize = 20;

/// The size of message `seq` of a stream of sizes `size..=size_max`: spread
/// over the range by a hash of `seq`, so every run sends the same sizes.
fn sized(size: usize, size_max: usize, seq: u64) -> usize {
    let span = (size_max - size) as u64 + 1;
    size + (fnv(FNV0, &seq.to_le_bytes()) % span) as usize
}

/// A numbered test message: magic | nodeid u32 | seq u64 | len u32 | pattern.
fn fill_message(buf: &mut [u8], nodeid: u32, seq: u64) {
    let len = buf.len();
    if len < HEADER {
        buf.fill(b'.');
        return;
    }
    buf[..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&nodeid.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, b) in buf[HEADER..].iter_mut().enumerate() {
        *b = pattern(nodeid, seq, i);
    }
}

fn pattern(nodeid: u32, seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31) as usize ^ i.wrapping_mul(7) ^ (i >> 8) ^ nodeid as usize) as u8
}

/// (nodeid, seq, intact) of a numbered message; None for other bytes.
fn check_message(m: &[u8]) -> Option<(u32, u64, bool)> {
    if m.len() < HEADER || &m[..4] != MAGIC {
        return None;
    }
    let nodeid = u32::from_le_bytes(m[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(m[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(m[16..20].try_into().ok()?) as usize;
    let ok = len == m.len()
        && m[HEADER..]
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(nodeid, seq, i));
    Some((nodeid, seq, ok))
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

// ---- node process ---------------------------------------------------------

#[derive(Default)]
struct Tally {
    delivered: u64,
    digest: u64,
    corrupt: u64,
    fifo_violations: u64,
    last: HashMap<(u32, u32), u64>,
    per_sender: BTreeMap<String, u64>,
}

struct Out(Mutex<std::io::Stdout>);

impl Out {
    fn emit(&self, v: Value) {
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }
}

fn addr(m: &MemberAddr) -> Value {
    json!([m.nodeid, m.pid])
}

fn reason_list(l: &[(MemberAddr, Reason)]) -> Value {
    Value::Array(
        l.iter()
            .map(|(m, r)| json!([m.nodeid, m.pid, *r as u32]))
            .collect(),
    )
}

fn guarantee_of(v: &Value) -> Guarantee {
    match v.get("guarantee").and_then(Value::as_str) {
        Some("safe") => Guarantee::Safe,
        Some("fifo") => Guarantee::Fifo,
        Some("unordered") => Guarantee::Unordered,
        _ => Guarantee::Agreed,
    }
}

/// Send one numbered message of `size` bytes, retrying TRY_AGAIN.
fn send_numbered(
    cpg: &Cpg,
    nodeid: u32,
    seq: u64,
    size: usize,
    zc: bool,
    g: Guarantee,
    stop: &AtomicBool,
) -> Result<(), CsError> {
    let size = size.max(HEADER);
    if zc {
        let mut buf = loop {
            match cpg.zcb_alloc(size) {
                Ok(b) => break b,
                Err(CsError::TryAgain) if !stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(e) => return Err(e),
            }
        };
        fill_message(&mut buf, nodeid, seq);
        loop {
            match cpg.zcb_mcast_joined(g, buf, size) {
                Ok(()) => return Ok(()),
                Err(e) if e.error == CsError::TryAgain && !stop.load(Ordering::Relaxed) => {
                    match e.buf {
                        Some(b) => {
                            buf = b;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        None => return Err(CsError::TryAgain),
                    }
                }
                Err(e) => return Err(e.error),
            }
        }
    } else {
        let mut m = vec![0u8; size];
        fill_message(&mut m, nodeid, seq);
        // two iovecs: header and body
        let (a, b) = m.split_at(HEADER);
        loop {
            match cpg.mcast_joined(g, &[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(()) => return Ok(()),
                Err(CsError::TryAgain) if !stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One node process. stdin, one JSON object per line:
///
/// | command | reply (`{"re": cmd, ...}`) |
/// |---|---|
/// | `{"cmd":"join","group":"g"}` / `leave` | `ok` or `err` (cs_error code) |
/// | `{"cmd":"mcast","data":"text","guarantee":"agreed"}` | `ok` / `err` |
/// | `{"cmd":"stream","count":N,"size":S,"size_max":M,"zc":false,"rate":0,"guarantee":"agreed"}` | `sent` and `first` (its first seq) when done (runs on its own thread); sizes spread over `S..=M` when `size_max` is given |
/// | `{"cmd":"stop_stream"}` | `ok` (the stream's own reply follows) |
/// | `{"cmd":"big","size":S,"zc":false}` | `ok` / `err` |
/// | `{"cmd":"members","group":"g"}` | `members` |
/// | `{"cmd":"status"}` | `delivered`, `digest`, `corrupt`, `fifo_violations`, `per_sender`, `ring`, `members` |
/// | `{"cmd":"quit"}` | process exits 0 |
///
/// Events on stdout: `{"ev":"ready"}`, `{"ev":"confchg",...,"delivered","digest"}`
/// (the count and digest of deliveries before it), `{"ev":"totem"}`,
/// `{"ev":"deliver"}` (messages ≥ 64 KiB, or all with `--verbose`; `origin`,
/// `seq` and `intact` are what the numbered message says of itself).
fn node_main(config: &Path, nodeid: Option<u32>, join: Option<String>, verbose: bool) -> Res<()> {
    let node = start_node(config, nodeid)?;
    let me = node.node_id();
    let out = Arc::new(Out(Mutex::new(std::io::stdout())));
    let tally = Arc::new(Mutex::new(Tally {
        digest: FNV0,
        ..Tally::default()
    }));
    let (t1, t2, o1, o2, o3) = (
        tally.clone(),
        tally.clone(),
        out.clone(),
        out.clone(),
        out.clone(),
    );
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            let mut t = t1.lock().unwrap_or_else(|e| e.into_inner());
            t.delivered += 1;
            let body = fnv(FNV0, d.msg);
            let mut h = t.digest;
            h = fnv(h, &d.sender.nodeid.to_le_bytes());
            h = fnv(h, &d.sender.pid.to_le_bytes());
            h = fnv(h, &(d.msg.len() as u64).to_le_bytes());
            t.digest = fnv(h, &body.to_le_bytes());
            *t.per_sender.entry(d.sender.nodeid.to_string()).or_default() += 1;
            let checked = check_message(d.msg);
            if let Some((n, seq, ok)) = checked {
                if !ok || n != d.sender.nodeid {
                    t.corrupt += 1;
                }
                let key = (d.sender.nodeid, d.sender.pid);
                if let Some(last) = t.last.get(&key) {
                    if seq != last + 1 {
                        t.fifo_violations += 1;
                    }
                }
                t.last.insert(key, seq);
            }
            if verbose || d.msg.len() >= 65_536 {
                let (origin, seq, ok) = checked
                    .map_or((Value::Null, Value::Null, Value::Null), |(n, s, ok)| {
                        (json!(n), json!(s), json!(ok))
                    });
                o1.emit(json!({"ev":"deliver","from":addr(&d.sender),"len":d.msg.len(),"seq":seq,"intact":ok,
                    "origin":origin,"digest":format!("{body:016x}"),"delivered":t.delivered}));
            }
        })),
        confchg: Some(Box::new(move |_, c| {
            let t = t2.lock().unwrap_or_else(|e| e.into_inner());
            o2.emit(
                json!({"ev":"confchg","group":String::from_utf8_lossy(c.group.as_bytes()),
                "members":c.members.iter().map(addr).collect::<Vec<_>>(),
                "left":reason_list(c.left),"joined":reason_list(c.joined),
                "delivered":t.delivered,"digest":format!("{:016x}",t.digest)}),
            );
        })),
        totem_confchg: Some(Box::new(move |_, ring, members| {
            o3.emit(json!({"ev":"totem","ring":ring.to_string(),"members":members}));
        })),
        flags: MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    };
    let cpg = Arc::new(Cpg::model_initialize(&node, model, None).map_err(|e| e.to_string())?);
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    out.emit(json!({"ev":"ready","nodeid":me,"pid":std::process::id()}));
    if let Some(g) = join {
        let r = cpg.join(&group_name(&g)?);
        out.emit(json!({"re":"join","ok":r.is_ok(),"err":r.err().map(|e| e.code())}));
    }
    let stream_stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let reply = |cmd: &str, r: Result<(), CsError>| match r {
        Ok(()) => out.emit(json!({"re":cmd,"ok":true})),
        Err(e) => out.emit(json!({"re":cmd,"ok":false,"err":e.code(),"error":e.to_string()})),
    };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                out.emit(json!({"re":"error","error":e.to_string()}));
                continue;
            }
        };
        let cmd = v.get("cmd").and_then(Value::as_str).unwrap_or("");
        let gname = v.get("group").and_then(Value::as_str).unwrap_or("");
        match cmd {
            "join" => reply(
                "join",
                group_name(gname)
                    .map_err(|_| CsError::NameTooLong)
                    .and_then(|g| cpg.join(&g)),
            ),
            "leave" => reply(
                "leave",
                group_name(gname)
                    .map_err(|_| CsError::NameTooLong)
                    .and_then(|g| cpg.leave(&g)),
            ),
            "mcast" => {
                let data = v.get("data").and_then(Value::as_str).unwrap_or("");
                reply(
                    "mcast",
                    cpg.mcast_joined(guarantee_of(&v), &[IoSlice::new(data.as_bytes())]),
                );
            }
            "big" => {
                let size = v.get("size").and_then(Value::as_u64).unwrap_or(1 << 20) as usize;
                let zc = v.get("zc").and_then(Value::as_bool).unwrap_or(false);
                let s = seq.fetch_add(1, Ordering::SeqCst);
                reply(
                    "big",
                    send_numbered(
                        &cpg,
                        me,
                        s,
                        size,
                        zc,
                        guarantee_of(&v),
                        &AtomicBool::new(false),
                    ),
                );
            }
            "stream" => {
                let count = v.get("count").and_then(Value::as_u64).unwrap_or(1000);
                let size = v.get("size").and_then(Value::as_u64).unwrap_or(64) as usize;
                let size_max = v
                    .get("size_max")
                    .and_then(Value::as_u64)
                    .map_or(size, |m| (m as usize).max(size));
                let zc = v.get("zc").and_then(Value::as_bool).unwrap_or(false);
                let rate = v.get("rate").and_then(Value::as_u64).unwrap_or(0);
                let g = guarantee_of(&v);
                stream_stop.store(false, Ordering::SeqCst);
                let (c, o, stop, seq) =
                    (cpg.clone(), out.clone(), stream_stop.clone(), seq.clone());
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut sent = 0u64;
                    let mut err = None;
                    // the accepted messages of this stream are first..first + sent:
                    // a failed send ends the stream, so no accepted seq follows it
                    let first = seq.load(Ordering::SeqCst);
                    while sent < count && !stop.load(Ordering::SeqCst) {
                        if rate > 0 {
                            let due = t0 + Duration::from_secs_f64(sent as f64 / rate as f64);
                            if let Some(w) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(w);
                            }
                        }
                        let s = seq.fetch_add(1, Ordering::SeqCst);
                        match send_numbered(&c, me, s, sized(size, size_max, s), zc, g, &stop) {
                            Ok(()) => sent += 1,
                            Err(e) => {
                                err = Some(e.code());
                                break;
                            }
                        }
                    }
                    o.emit(json!({"re":"stream","sent":sent,"first":first,"err":err}));
                });
            }
            "stop_stream" => {
                stream_stop.store(true, Ordering::SeqCst);
                reply("stop_stream", Ok(()));
            }
            "members" => match group_name(gname)
                .map_err(|_| CsError::NameTooLong)
                .and_then(|g| cpg.membership_get(&g))
            {
                Ok(m) => out
                    .emit(json!({"re":"members","members":m.iter().map(addr).collect::<Vec<_>>()})),
                Err(e) => reply("members", Err(e)),
            },
            "status" => {
                let st = node.status();
                let t = tally.lock().unwrap_or_else(|e| e.into_inner());
                out.emit(json!({"re":"status","delivered":t.delivered,"digest":format!("{:016x}",t.digest),
                    "corrupt":t.corrupt,"fifo_violations":t.fifo_violations,"per_sender":t.per_sender,
                    "ring":st.ring_id.to_string(),"members":st.members,
                    "transport":node.transport_counters().map(|c| json!({"frames_sent":c.frames_sent,
                        "bytes_copied":c.bytes_copied,"sends_zc_fixed":c.sends_zc_fixed,
                        "sends_write_fixed":c.sends_write_fixed,"sends_gather":c.sends_gather,
                        "sends_gather_zc":c.sends_gather_zc}))}));
            }
            "quit" => break,
            other => out.emit(json!({"re":"error","error":format!("unknown command {other:?}")})),
        }
    }
    stream_stop.store(true, Ordering::SeqCst);
    let _ = cpg.finalize();
    let _ = dispatcher.join();
    node.stop();
    Ok(())
}

// ---- chat (testcpg) -------------------------------------------------------

fn chat(config: &Path, nodeid: Option<u32>, group: &str) -> Res<()> {
    let node = start_node(config, nodeid)?;
    let stamp = || {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let s = d.as_secs() % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            d.subsec_millis()
        )
    };
    let reason = |r: Reason| match r {
        Reason::Join => "1 (JOIN)",
        Reason::Leave => "2 (LEAVE)",
        Reason::NodeDown => "3 (NODEDOWN)",
        Reason::NodeUp => "4 (NODEUP)",
        Reason::ProcDown => "5 (PROCDOWN)",
        Reason::Undefined => "0",
    };
    let model = ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            println!(
                "{} DeliverCallback: message (len={})from node/pid {}/{}: '{}'",
                stamp(),
                d.msg.len(),
                d.sender.nodeid,
                d.sender.pid,
                String::from_utf8_lossy(d.msg).trim_end_matches('\0')
            );
        })),
        confchg: Some(Box::new(move |cpg, c| {
            println!(
                "{} ConfchgCallback: group '{}'",
                stamp(),
                String::from_utf8_lossy(c.group.as_bytes())
            );
            for (m, r) in c.left {
                println!(
                    "left node/pid {}/{} reason: {}",
                    m.nodeid,
                    m.pid,
                    reason(*r)
                );
            }
            for (m, r) in c.joined {
                println!(
                    "joined node/pid {}/{} reason: {}",
                    m.nodeid,
                    m.pid,
                    reason(*r)
                );
            }
            println!("nodes in group now {}", c.members.len());
            for m in c.members {
                println!("node/pid {}/{}", m.nodeid, m.pid);
            }
            let me = MemberAddr {
                nodeid: cpg.local_get().unwrap_or(0),
                pid: std::process::id(),
            };
            if c.left.iter().any(|(m, _)| *m == me) {
                println!("We have left the group");
            }
        })),
        totem_confchg: Some(Box::new(move |_, ring, members| {
            println!("{} TotemConfchgCallback: ringid ({ring})", stamp());
            let list: Vec<String> = members.iter().map(|n| n.to_string()).collect();
            println!("active processors {}: {}", members.len(), list.join(" "));
        })),
        flags: MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    };
    let cpg = Arc::new(Cpg::model_initialize(&node, model, None).map_err(|e| e.to_string())?);
    println!(
        "Local node id is {:x}",
        cpg.local_get().map_err(|e| e.to_string())?
    );
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    let mut current = Some(group_name(group)?);
    if let Some(g) = &current {
        join_retry(&cpg, g)?;
    }
    println!("Type EXIT or /quit to finish; /members, /groups, /leave, /join NAME");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end().to_string();
        if line == "EXIT" || line == "/quit" {
            break;
        } else if line == "/members" {
            let g = current.clone().unwrap_or_default();
            match cpg.membership_get(&g) {
                Ok(m) => {
                    println!("membership list ({} entries):", m.len());
                    for a in m {
                        println!("node/pid {}/{}", a.nodeid, a.pid);
                    }
                }
                Err(e) => println!("membership_get: {e}"),
            }
        } else if line == "/groups" {
            match cpg.iteration_initialize(IterationType::All, None) {
                Ok(it) => {
                    for d in it {
                        println!(
                            "group '{}' node/pid {}/{}",
                            String::from_utf8_lossy(d.group.as_bytes()),
                            d.nodeid,
                            d.pid
                        );
                    }
                }
                Err(e) => println!("iteration: {e}"),
            }
        } else if line == "/leave" {
            match &current {
                Some(g) => match cpg.leave(g) {
                    Ok(()) => current = None,
                    Err(e) => println!("leave: {e}"),
                },
                None => println!("not in a group"),
            }
        } else if let Some(name) = line.strip_prefix("/join ") {
            let g = group_name(name.trim())?;
            match join_retry(&cpg, &g) {
                Ok(()) => current = Some(g),
                Err(e) => println!("join: {e}"),
            }
        } else {
            let mut data = line.into_bytes();
            data.push(0); // testcpg sends the NUL too
            loop {
                match cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(&data)]) {
                    Ok(()) => break,
                    Err(CsError::TryAgain) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => {
                        println!("mcast: {e}");
                        break;
                    }
                }
            }
        }
    }
    let r = cpg.finalize();
    println!(
        "Finalize result is {} (should be 1)",
        r.map_or_else(|e| e.code(), |()| cpg_core::types::CS_OK)
    );
    let _ = dispatcher.join();
    node.stop();
    Ok(())
}

/// Join, retrying while the own leave is still in flight (TRY_AGAIN).
fn join_retry(cpg: &Cpg, g: &GroupName) -> Res<()> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match cpg.join(g) {
            Ok(()) => return Ok(()),
            Err(CsError::TryAgain) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

// ---- demo -----------------------------------------------------------------

struct Proc {
    id: u32,
    child: Child,
    stdin: ChildStdin,
    alive: bool,
}

struct Cluster {
    procs: Vec<Proc>,
    events: Receiver<(u32, Value)>,
    /// Events read while waiting for something else.
    backlog: Vec<(u32, Value, Instant)>,
    /// Confchg and totem events not yet shown.
    log: Vec<(u32, Value, Instant)>,
}

impl Cluster {
    fn start(exe: &Path, config: &Path, n: u32) -> Res<Cluster> {
        let config = config.to_path_buf();
        Self::start_with(exe, n, move |id| {
            vec![
                "node".into(),
                "--config".into(),
                config.display().to_string(),
                "--nodeid".into(),
                id.to_string(),
            ]
        })
    }

    /// Start `n` processes of `exe` with the arguments `args(id)`; each
    /// stdout line that is JSON becomes an event of its id.
    fn start_with(exe: &Path, n: u32, args: impl Fn(u32) -> Vec<String>) -> Res<Cluster> {
        let (tx, rx) = channel();
        let mut procs = Vec::new();
        for id in 1..=n {
            let mut child = Command::new(exe)
                .args(args(id))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn node {id}: {e}"))?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if tx.send((id, v)).is_err() {
                            break;
                        }
                    }
                }
            });
            procs.push(Proc {
                id,
                child,
                stdin,
                alive: true,
            });
        }
        Ok(Cluster {
            procs,
            events: rx,
            backlog: Vec::new(),
            log: Vec::new(),
        })
    }

    fn send_line(&mut self, id: u32, line: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            let _ = writeln!(p.stdin, "{line}");
            let _ = p.stdin.flush();
        }
    }

    fn send(&mut self, id: u32, v: Value) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == id && p.alive) {
            let _ = writeln!(p.stdin, "{v}");
            let _ = p.stdin.flush();
        }
    }

    /// Wait for an event from `id` matching `f` (earlier non-matching
    /// events stay in the backlog).
    fn wait(
        &mut self,
        deadline: Duration,
        mut f: impl FnMut(u32, &Value) -> bool,
    ) -> Res<(u32, Value, Instant)> {
        if let Some(i) = self.backlog.iter().position(|(id, v, _)| f(*id, v)) {
            return Ok(self.backlog.remove(i));
        }
        let end = Instant::now() + deadline;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .ok_or("timed out")?;
            match self.events.recv_timeout(left) {
                Ok((id, v)) => {
                    let at = Instant::now();
                    if v["ev"] == "confchg" || v["ev"] == "totem" {
                        self.log.push((id, v.clone(), at));
                    }
                    if f(id, &v) {
                        return Ok((id, v, at));
                    }
                    self.backlog.push((id, v, at));
                }
                Err(RecvTimeoutError::Timeout) => return Err("timed out".into()),
                Err(RecvTimeoutError::Disconnected) => return Err("all nodes exited".into()),
            }
        }
    }

    fn status(&mut self, id: u32) -> Res<Value> {
        self.send(id, json!({"cmd":"status"}));
        self.wait(Duration::from_secs(20), |i, v| {
            i == id && v["re"] == "status"
        })
        .map(|(_, v, _)| v)
    }

    fn alive(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.alive)
            .map(|p| p.id)
            .collect()
    }

    /// Print the confchgs and totem confchgs received so far.
    fn show_confchgs(&mut self, t0: Instant) {
        while let Ok((id, v)) = self.events.try_recv() {
            let at = Instant::now();
            if v["ev"] == "confchg" || v["ev"] == "totem" {
                self.log.push((id, v.clone(), at));
            }
            self.backlog.push((id, v, at));
        }
        for (id, v, at) in self.log.drain(..) {
            if v["ev"] == "confchg" {
                println!(
                    "  [{:>6.3}s] node {id}: {}",
                    (at - t0).as_secs_f64(),
                    describe_confchg(&v)
                );
            } else {
                println!(
                    "  [{:>6.3}s] node {id}: totem confchg: ring {} members {}",
                    (at - t0).as_secs_f64(),
                    v["ring"].as_str().unwrap_or(""),
                    v["members"]
                );
            }
        }
        // only replies are waited for later
        self.backlog.retain(|(_, v, _)| v.get("re").is_some());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn describe_confchg(v: &Value) -> String {
    let name = |r: u64| match r {
        1 => "JOIN",
        2 => "LEAVE",
        3 => "NODEDOWN",
        4 => "NODEUP",
        5 => "PROCDOWN",
        _ => "?",
    };
    let list = |k: &str| -> String {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{}/{} {}", e[0], e[1], name(e[2].as_u64().unwrap_or(0))))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let members = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| format!("{}/{}", m[0], m[1]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let mut s = format!(
        "confchg '{}' members [{members}]",
        v["group"].as_str().unwrap_or("")
    );
    let (j, l) = (list("joined"), list("left"));
    if !j.is_empty() {
        s += &format!(" joined {j}");
    }
    if !l.is_empty() {
        s += &format!(" left {l}");
    }
    s
}

fn demo(n: u32, messages: u64, size: usize, token_ms: u64, transport: &str) -> Res<()> {
    if !(2..=16).contains(&n) {
        return Err("--nodes must be in 2..=16".into());
    }
    let transport = match transport {
        "uring" => TransportKind::Uring,
        "udp" => TransportKind::Udp,
        t => return Err(format!("unknown transport {t:?} (uring or udp)")),
    };
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("cpgtool-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("cluster.toml");
    // no per-node token coefficient: failure detection = token + consensus
    // (+ the consensus round's jitter, below consensus/2)
    write_config_with(n, &config, &dir.join("state"), token_ms, transport, |f| {
        f.totem.token_coefficient_ms = Some(0)
    })?;
    let file = ConfigFile::load(&config).map_err(|e| e.to_string())?;
    let eng = file.validate(Some(1)).map_err(|e| e.to_string())?.engine;
    let (token_eff, consensus) = (
        eng.token_effective().as_millis(),
        eng.consensus_effective().as_millis(),
    );
    let ports: Vec<String> = file
        .nodelist
        .iter()
        .map(|e| e.addr.port().to_string())
        .collect();
    println!(
        "cpgtool demo: {n} node processes on 127.0.0.1 ports {} ({transport:?} transport, token {token_eff} ms, consensus {consensus} ms)",
        ports.join(", ")
    );
    println!("  config: {}", config.display());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Cluster::start(&exe, &config, n)?;
    for id in 1..=n {
        c.wait(Duration::from_secs(30), |i, v| {
            i == id && v["ev"] == "ready"
        })
        .map_err(|e| format!("node {id} not ready: {e}"))?;
    }
    let t_ring = Instant::now();
    loop {
        let st: Vec<Value> = (1..=n).map(|id| c.status(id)).collect::<Res<_>>()?;
        if st.iter().all(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.len() == n as usize)
                && s["ring"] == st[0]["ring"]
        }) {
            println!(
                "  ring {} formed by all {n} nodes in {:.2} s",
                st[0]["ring"].as_str().unwrap_or(""),
                t_ring.elapsed().as_secs_f64()
            );
            break;
        }
        if t_ring.elapsed() > Duration::from_secs(60) {
            return Err("the ring did not form in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.log.clear();
    println!("\n1. every node joins group 'demo'");
    for id in 1..=n {
        c.send(id, json!({"cmd":"join","group":"demo"}));
    }
    for id in 1..=n {
        c.wait(Duration::from_secs(30), |i, v| {
            i == id
                && v["ev"] == "confchg"
                && v["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == n as usize)
        })
        .map_err(|e| format!("node {id} never saw {n} members: {e}"))?;
    }
    c.show_confchgs(t0);

    println!("\n2. every node multicasts {messages} numbered messages of {size} bytes (AGREED)");
    let total = messages * u64::from(n);
    let t_stream = Instant::now();
    for id in 1..=n {
        c.send(id, json!({"cmd":"stream","count":messages,"size":size}));
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let statuses = loop {
        let st: Vec<Value> = (1..=n).map(|id| c.status(id)).collect::<Res<_>>()?;
        let counts: Vec<u64> = st
            .iter()
            .map(|s| s["delivered"].as_u64().unwrap_or(0))
            .collect();
        let done = counts.iter().all(|&x| x >= total);
        if (tty && last_print.elapsed() >= Duration::from_millis(250)) || done {
            let line: Vec<String> = counts
                .iter()
                .enumerate()
                .map(|(i, x)| format!("node {}: {x:>7}/{total}", i + 1))
                .collect();
            print!("\r  delivered  {}", line.join("   "));
            let _ = std::io::stdout().flush();
            last_print = Instant::now();
        }
        if counts.iter().all(|&x| x >= total) {
            println!();
            break st;
        }
        if t_stream.elapsed() > Duration::from_secs(300) {
            return Err("the stream did not complete in 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stream_secs = t_stream.elapsed().as_secs_f64();
    let digests: Vec<&str> = statuses
        .iter()
        .map(|s| s["digest"].as_str().unwrap_or(""))
        .collect();
    let order_ok = digests.iter().all(|d| *d == digests[0]);
    let corrupt: u64 = statuses
        .iter()
        .map(|s| s["corrupt"].as_u64().unwrap_or(0))
        .sum();
    let fifo: u64 = statuses
        .iter()
        .map(|s| s["fifo_violations"].as_u64().unwrap_or(0))
        .sum();
    for (i, d) in digests.iter().enumerate() {
        println!(
            "  node {}: {} messages, sequence digest {d}",
            i + 1,
            statuses[i]["delivered"]
        );
    }
    println!(
        "  order check: {} ({} messages in {:.2} s, {:.0} msg/s per node; corrupt {corrupt}, FIFO violations {fifo})",
        if order_ok { "identical sequence on every node" } else { "MISMATCH" },
        total,
        stream_secs,
        total as f64 / stream_secs
    );
    c.show_confchgs(t0);

    let victim = n;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    println!("\n3. every node streams at 1000 msg/s; node {victim} is SIGKILLed mid-stream");
    for id in 1..=n {
        c.send(
            id,
            json!({"cmd":"stream","count":u64::MAX / 2,"size":size,"rate":1000}),
        );
    }
    let base: Vec<u64> = (1..=n)
        .map(|id| c.status(id).map(|s| s["delivered"].as_u64().unwrap_or(0)))
        .collect::<Res<_>>()?;
    // let the stream run a little
    let warm = Instant::now();
    loop {
        let d = c.status(1)?["delivered"].as_u64().unwrap_or(0);
        if d >= base[0] + 500 || warm.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = c
        .procs
        .iter_mut()
        .find(|p| p.id == victim)
        .ok_or("no victim")?;
    let t_kill = Instant::now();
    p.child.kill().map_err(|e| e.to_string())?; // SIGKILL
    let _ = p.child.wait();
    p.alive = false;
    println!(
        "  [{:>6.3}s] node {victim}: SIGKILL",
        (t_kill - t0).as_secs_f64()
    );
    let mut down = Vec::new();
    for id in c.alive() {
        let (_, v, at) = c
            .wait(Duration::from_secs(60), |i, v| {
                i == id
                    && v["ev"] == "confchg"
                    && v["left"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|e| e[0] == victim && e[2] == 3))
            })
            .map_err(|e| format!("node {id} never saw NODEDOWN: {e}"))?;
        println!(
            "  [{:>6.3}s] node {id}: {}",
            (at - t0).as_secs_f64(),
            describe_confchg(&v)
        );
        println!(
            "            delivered {} before it, digest {}",
            v["delivered"],
            v["digest"].as_str().unwrap_or("")
        );
        down.push((v, at));
    }
    c.log.retain(|(_, v, _)| {
        !(v["ev"] == "confchg"
            && v["left"]
                .as_array()
                .is_some_and(|l| l.iter().any(|e| e[0] == victim && e[2] == 3)))
    });
    let detect = down
        .iter()
        .map(|(_, at)| *at - t_kill)
        .max()
        .unwrap_or_default();
    let same_point = down.iter().all(|(v, _)| {
        v["delivered"] == down[0].0["delivered"] && v["digest"] == down[0].0["digest"]
    });
    println!(
        "  NODEDOWN at the same point of the stream on every survivor: {}",
        if same_point { "yes" } else { "NO" }
    );
    // survivors keep delivering
    let after: Vec<u64> = c
        .alive()
        .into_iter()
        .map(|id| c.status(id).map(|s| s["delivered"].as_u64().unwrap_or(0)))
        .collect::<Res<_>>()?;
    let t_more = Instant::now();
    let mut more = vec![0u64; after.len()];
    while t_more.elapsed() < Duration::from_secs(2) {
        for (k, id) in c.alive().into_iter().enumerate() {
            more[k] = c.status(id)?["delivered"].as_u64().unwrap_or(0) - after[k];
        }
        let line: Vec<String> = c
            .alive()
            .iter()
            .zip(&more)
            .map(|(id, m)| format!("node {id}: +{m}"))
            .collect();
        if tty {
            print!(
                "\r  survivors keep delivering after NODEDOWN  {}",
                line.join("   ")
            );
            let _ = std::io::stdout().flush();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if !tty {
        let line: Vec<String> = c
            .alive()
            .iter()
            .zip(&more)
            .map(|(id, m)| format!("node {id}: +{m}"))
            .collect();
        print!(
            "  survivors keep delivering after NODEDOWN  {}",
            line.join("   ")
        );
    }
    println!();
    for id in c.alive() {
        c.send(id, json!({"cmd":"stop_stream"}));
    }
    for id in c.alive() {
        let _ = c.wait(Duration::from_secs(30), |i, v| {
            i == id && v["re"] == "stream"
        });
    }
    // the streams stopped: once the last accepted messages are delivered,
    // every survivor holds the same sequence
    let quiet = Instant::now();
    let survivors_agree = loop {
        let st: Vec<Value> = c
            .alive()
            .into_iter()
            .map(|id| c.status(id))
            .collect::<Res<_>>()?;
        if st.iter().all(|s| s["digest"] == st[0]["digest"]) {
            println!(
                "  survivors stopped streaming: {} messages each, identical digest {}",
                st[0]["delivered"],
                st[0]["digest"].as_str().unwrap_or("")
            );
            break true;
        }
        if quiet.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    c.show_confchgs(t0);
    for id in c.alive() {
        c.send(id, json!({"cmd":"quit"}));
    }
    for p in &mut c.procs {
        if p.alive {
            let _ = p.child.wait();
            p.alive = false;
        }
    }
    let ok = order_ok && same_point && survivors_agree && corrupt == 0 && fifo == 0;
    println!("\n┌──────────────────────────── summary ─────────────────────────────────────┐");
    println!(
        "│ nodes                    {:<48}│",
        format!("{n} processes, {transport:?} transport")
    );
    println!(
        "│ ordered stream           {:<48}│",
        format!(
            "{total} messages x {size} B, {:.0} msg/s",
            total as f64 / stream_secs
        )
    );
    println!(
        "│ total order              {:<48}│",
        if order_ok {
            "identical on every node"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "│ integrity / FIFO         {:<48}│",
        format!("{corrupt} corrupt, {fifo} out of order")
    );
    println!(
        "│ failure detection        {:<48}│",
        format!(
            "{:.0} ms after SIGKILL (bound {}-{} ms)",
            detect.as_secs_f64() * 1000.0,
            token_eff + consensus,
            // the consensus round carries a jitter below consensus/2
            token_eff + consensus + consensus / 2
        )
    );
    println!(
        "│ NODEDOWN point           {:<48}│",
        if same_point {
            "same on every survivor"
        } else {
            "DIFFERS"
        }
    );
    println!(
        "│ survivors after failure  {:<48}│",
        if survivors_agree {
            "kept delivering, same sequence"
        } else {
            "DIVERGED"
        }
    );
    println!(
        "│ result                   {:<48}│",
        if ok { "OK" } else { "FAILED" }
    );
    println!("└──────────────────────────────────────────────────────────────────────────┘");
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        Ok(())
    } else {
        Err("demo checks failed".into())
    }
}

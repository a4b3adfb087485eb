//! `cpgtool node`: one node process driven by [`proto::Command`] lines on
//! stdin, writing [`proto::Reply`] and [`proto::Event`] lines on stdout.
//!
//! | command | reply (`{"re": cmd, ...}`) |
//! |---|---|
//! | `{"cmd":"join","group":"g"}` / `leave` | `ok` or `err` (cs_error code) |
//! | `{"cmd":"mcast","data":"text","guarantee":"agreed"}` | `ok` / `err` |
//! | `{"cmd":"stream","count":N,"size":S,"size_max":M,"zc":false,"rate":0,"guarantee":"agreed"}` | `sent` and `first` (its first seq) when done (runs on its own thread); sizes spread over `S..=M` when `size_max` is given |
//! | `{"cmd":"stop_stream"}` | `ok` (the stream's own reply follows) |
//! | `{"cmd":"big","size":S,"zc":false}` | `ok` / `err` |
//! | `{"cmd":"members","group":"g"}` | `members` |
//! | `{"cmd":"status"}` | `delivered`, `digest`, `corrupt`, `fifo_violations`, `per_sender`, `ring`, `members`, `transport` (the io_uring driver's send, receive-drop and frame-sealing counters), `handles` (the handle layer's: evictions, back-pressure waits) |
//! | `{"cmd":"quit"}` | process exits 0 |
//!
//! Every line is checked before it runs ([`proto::parse_line`]): a line
//! longer than [`proto::LINE_BYTES_MAX`], not UTF-8 or not a command is
//! answered `{"re":"error","error":...}`; a size above the node's
//! `max_message_size` (TOO_BIG), a group name over 128 bytes
//! (NAME_TOO_LONG), an inverted size range (INVALID_PARAM) or a stream
//! while one runs (BUSY) is answered with the command's own reply,
//! `ok: false`, the code and why. Nothing a line says can panic the node.
//!
//! With `--status-socket PATH` (an embedded node), each connection to
//! that Unix socket gets the node's `StatusReport` as one JSON line
//! (`cpgtool status --node PATH`); with `--log-level` (or `CPG_LOG`) the
//! operator's log lines go to stderr, never into the JSON on stdout.
//!
//! Events on stdout: `{"ev":"ready"}`, `{"ev":"confchg",...,"delivered","digest"}`
//! (the count and digest of deliveries before it), `{"ev":"totem"}`,
//! `{"ev":"deliver"}` (messages ≥ 64 KiB, or all with `--verbose`; `origin`,
//! `seq` and `intact` are what the numbered message says of itself).

use std::collections::{BTreeMap, HashMap};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::time::{Duration, Instant};

use cpg_std::{
    Cpg, CsError, DispatchFlags, Guarantee, ModelV1, Node, MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
use serde::Serialize;

use crate::attach::{AttachArgs, Attached};
use crate::config::group_name;
use crate::error::{Error, Res};
use crate::message::{check_message, fill_message, sized, HEADER};
use crate::proto::{
    self, Addr, Change, Command, Confchg, Deliver, Event, MembersReply, Outcome, Reply, Status,
    Stream,
};
use cpg_core::hash::{fnv1a64, fnv1a64_update as fnv, FNV1A64_OFFSET};

/// What this node delivered so far.
struct Tally {
    delivered: u64,
    /// FNV-1a over (sender nodeid, pid, length, body digest) of every delivery.
    digest: u64,
    corrupt: u64,
    fifo_violations: u64,
    last: HashMap<(u32, u32), u64>,
    per_sender: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            delivered: 0,
            digest: FNV1A64_OFFSET,
            corrupt: 0,
            fifo_violations: 0,
            last: HashMap::new(),
            per_sender: BTreeMap::new(),
        }
    }

    /// Count one delivery; returns the body's digest and what a numbered
    /// message says of itself (origin, seq, intact).
    fn record(&mut self, sender: Addr, msg: &[u8]) -> (u64, Option<(u32, u64, bool)>) {
        self.delivered += 1;
        let body = fnv1a64(msg);
        let mut h = self.digest;
        h = fnv(h, &sender.0.to_le_bytes());
        h = fnv(h, &sender.1.to_le_bytes());
        h = fnv(h, &(msg.len() as u64).to_le_bytes());
        self.digest = fnv(h, &body.to_le_bytes());
        *self.per_sender.entry(sender.0.to_string()).or_default() += 1;
        let checked = check_message(msg);
        if let Some((n, seq, ok)) = checked {
            if !ok || n != sender.0 {
                self.corrupt += 1;
            }
            let key = (sender.0, sender.1);
            if self.last.get(&key).is_some_and(|last| seq != last + 1) {
                self.fifo_violations += 1;
            }
            self.last.insert(key, seq);
        }
        (body, checked)
    }

    fn digest_hex(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

/// Stdout, shared by the callbacks, the command loop and the stream thread.
struct Out(Mutex<std::io::Stdout>);

impl Out {
    fn emit(&self, msg: &impl Serialize) {
        proto::emit(&mut *lock(&self.0), msg);
    }
}

/// The callbacks: tally every delivery, report confchgs, totem confchgs
/// and (large or `verbose`) deliveries.
fn model(tally: Arc<Mutex<Tally>>, out: Arc<Out>, verbose: bool) -> ModelV1 {
    let (t1, t2, o1, o2, o3) = (tally.clone(), tally, out.clone(), out.clone(), out);
    ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            let from = Addr::from(&d.sender);
            let mut t = lock(&t1);
            let (body, checked) = t.record(from, d.msg);
            if verbose || d.msg.len() >= 65_536 {
                o1.emit(&Event::Deliver(Deliver {
                    from,
                    len: d.msg.len(),
                    origin: checked.map(|c| c.0),
                    seq: checked.map(|c| c.1),
                    intact: checked.map(|c| c.2),
                    digest: format!("{body:016x}"),
                    delivered: t.delivered,
                }));
            }
        })),
        confchg: Some(Box::new(move |_, c| {
            let t = lock(&t2);
            o2.emit(&Event::Confchg(Confchg {
                group: String::from_utf8_lossy(c.group.as_bytes()).into_owned(),
                members: c.members.iter().map(Addr::from).collect(),
                left: c.left.iter().map(Change::from_pair).collect(),
                joined: c.joined.iter().map(Change::from_pair).collect(),
                delivered: t.delivered,
                digest: t.digest_hex(),
            }));
        })),
        totem_confchg: Some(Box::new(move |_, ring, members| {
            o3.emit(&Event::Totem {
                ring: ring.to_string(),
                members: members.to_vec(),
            });
        })),
        flags: MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
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
    let retry = || !stop.load(Ordering::Relaxed);
    let pause = || std::thread::sleep(Duration::from_micros(200));
    if !zc {
        let mut m = vec![0u8; size];
        fill_message(&mut m, nodeid, seq);
        // two iovecs: header and body
        let (a, b) = m.split_at(HEADER);
        loop {
            match cpg.mcast_joined(g, &[IoSlice::new(a), IoSlice::new(b)]) {
                Err(CsError::TryAgain) if retry() => pause(),
                r => return r,
            }
        }
    }
    let mut buf = loop {
        match cpg.zcb_alloc(size) {
            Ok(b) => break b,
            Err(CsError::TryAgain) if retry() => pause(),
            Err(e) => return Err(e),
        }
    };
    fill_message(&mut buf, nodeid, seq);
    loop {
        match cpg.zcb_mcast_joined(g, buf, size) {
            Ok(()) => return Ok(()),
            Err(e) if e.error == CsError::TryAgain && retry() => match e.buf {
                Some(b) => {
                    buf = b;
                    pause();
                }
                None => return Err(CsError::TryAgain),
            },
            Err(e) => return Err(e.error),
        }
    }
}

/// The running node process: its node, handle, tally and stream state.
struct NodeProc {
    /// None for a client of cpgd.
    node: Option<Node>,
    me: u32,
    cpg: Arc<Cpg>,
    out: Arc<Out>,
    tally: Arc<Mutex<Tally>>,
    stream_stop: Arc<AtomicBool>,
    /// The next seq of a numbered message (streams and `big` share it).
    seq: Arc<AtomicU64>,
    /// Whether a stream runs (one at a time).
    streaming: Arc<AtomicBool>,
    /// What a command may ask for.
    limits: proto::Limits,
}

impl NodeProc {
    /// Handle one command; `false` on `quit`.
    fn handle(&self, cmd: Command) -> bool {
        let cpg = &self.cpg;
        let with_group = |g: &str, f: &dyn Fn(&cpg_std::GroupName) -> Result<(), CsError>| {
            Outcome::from(
                group_name(g)
                    .map_err(|_| CsError::NameTooLong)
                    .and_then(|g| f(&g)),
            )
        };
        let reply = match cmd {
            Command::Join { group } => Reply::Join(with_group(&group, &|g| cpg.join(g))),
            Command::Leave { group } => Reply::Leave(with_group(&group, &|g| cpg.leave(g))),
            Command::Mcast { data, guarantee } => Reply::Mcast(
                cpg.mcast_joined(guarantee.into(), &[IoSlice::new(data.as_bytes())])
                    .into(),
            ),
            Command::Big {
                size,
                zc,
                guarantee,
            } => {
                let s = self.seq.fetch_add(1, Ordering::SeqCst);
                let never = AtomicBool::new(false);
                let r = send_numbered(cpg, self.me, s, size, zc, guarantee.into(), &never);
                Reply::Big(r.into())
            }
            Command::Stream(s) => match self.start_stream(s) {
                None => return true,
                Some(refusal) => refusal,
            },
            Command::StopStream => {
                self.stream_stop.store(true, Ordering::SeqCst);
                Reply::StopStream(Ok(()).into())
            }
            Command::Members { group } => Reply::Members(
                match group_name(&group)
                    .map_err(|_| CsError::NameTooLong)
                    .and_then(|g| cpg.membership_get(&g))
                {
                    Ok(m) => MembersReply::List {
                        members: m.iter().map(Addr::from).collect(),
                    },
                    Err(e) => MembersReply::Failed(Err(e).into()),
                },
            ),
            Command::Status => Reply::Status(self.status()),
            Command::Quit => return false,
        };
        self.out.emit(&reply);
        true
    }

    fn status(&self) -> Status {
        let st = self.node.as_ref().map(|n| n.status());
        let t = lock(&self.tally);
        Status {
            delivered: t.delivered,
            digest: t.digest_hex(),
            corrupt: t.corrupt,
            fifo_violations: t.fifo_violations,
            per_sender: t.per_sender.clone(),
            ring: st
                .as_ref()
                .map(|s| s.ring_id.to_string())
                .unwrap_or_default(),
            members: st.map(|s| s.members).unwrap_or_default(),
            transport: self
                .node
                .as_ref()
                .and_then(|n| n.transport_counters())
                .map(|c| Box::new(c.into())),
            handles: self.node.as_ref().map(|n| Box::new(n.stats().into())),
        }
    }

    /// Run the stream on its own thread; it replies when done. A stream
    /// while one runs is refused (BUSY; the refusal is returned): a second
    /// one would reset the first one's stop flag, and each would hold a thread.
    fn start_stream(&self, s: Stream) -> Option<Reply> {
        if self.streaming.swap(true, Ordering::SeqCst) {
            let why = "a stream is already running: stop_stream first";
            return Some(Command::Stream(s).refused(CsError::Busy, why));
        }
        self.stream_stop.store(false, Ordering::SeqCst);
        let (cpg, out, stop, seq, me, streaming) = (
            self.cpg.clone(),
            self.out.clone(),
            self.stream_stop.clone(),
            self.seq.clone(),
            self.me,
            self.streaming.clone(),
        );
        std::thread::spawn(move || {
            let reply = run_stream(&cpg, me, &s, &stop, &seq);
            // free before the reply, so a driver may start the next at once
            streaming.store(false, Ordering::SeqCst);
            out.emit(&reply);
        });
        None
    }
}

/// Send the numbered stream `s` until done or `stop`.
fn run_stream(cpg: &Cpg, me: u32, s: &Stream, stop: &AtomicBool, seq: &AtomicU64) -> Reply {
    let size_max = s.size_max.map_or(s.size, |m| m.max(s.size));
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut err = None;
    // the accepted messages of this stream are first..first + sent:
    // a failed send ends the stream, so no accepted seq follows it
    let first = seq.load(Ordering::SeqCst);
    while sent < s.count && !stop.load(Ordering::SeqCst) {
        if s.rate > 0 {
            let due = t0 + Duration::from_secs_f64(sent as f64 / s.rate as f64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        let k = seq.fetch_add(1, Ordering::SeqCst);
        let size = sized(s.size, size_max, k);
        match send_numbered(cpg, me, k, size, s.zc, s.guarantee.into(), stop) {
            Ok(()) => sent += 1,
            Err(e) => {
                err = Some(e.code());
                break;
            }
        }
    }
    Reply::Stream {
        sent,
        first,
        err,
        error: None,
    }
}

/// `cpgtool node`: start the node, report `ready`, optionally join, then
/// handle commands until `quit` or the end of stdin.
pub(crate) fn node_main(attach: &AttachArgs, join: Option<String>, verbose: bool) -> Res<()> {
    let out = Arc::new(Out(Mutex::new(std::io::stdout())));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let model = model(tally.clone(), out.clone(), verbose);
    // `_status` serves `--status-socket` until the node stops
    let Attached {
        node,
        cpg,
        max_message_size,
        status: _status,
    } = attach.open(model)?;
    let me = cpg.local_get().map_err(|source| Error::Cpg {
        call: "local_get",
        source,
    })?;
    let cpg = Arc::new(cpg);
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    out.emit(&Event::Ready {
        nodeid: me,
        pid: std::process::id(),
    });
    if let Some(g) = join {
        let r = cpg.join(&group_name(&g)?);
        out.emit(&Reply::Join(r.into()));
    }
    let p = NodeProc {
        node,
        me,
        cpg,
        out,
        tally,
        stream_stop: Arc::new(AtomicBool::new(false)),
        seq: Arc::new(AtomicU64::new(0)),
        streaming: Arc::new(AtomicBool::new(false)),
        limits: proto::Limits { max_message_size },
    };
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        match proto::read_line(&mut stdin, &mut line, proto::LINE_BYTES_MAX) {
            Err(_) | Ok(proto::Line::End) => break,
            Ok(proto::Line::TooLong { len }) => p.out.emit(&Reply::Error {
                error: format!(
                    "line of {len} bytes is longer than {} and was skipped",
                    proto::LINE_BYTES_MAX
                ),
            }),
            Ok(proto::Line::Complete) => match proto::parse_line(&line, &p.limits) {
                Ok(cmd) => {
                    if !p.handle(cmd) {
                        break;
                    }
                }
                Err(reply) => p.out.emit(&reply),
            },
        }
    }
    p.stream_stop.store(true, Ordering::SeqCst);
    let _ = p.cpg.finalize();
    let _ = dispatcher.join();
    if let Some(n) = p.node {
        n.stop();
    }
    Ok(())
}

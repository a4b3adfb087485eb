//! `cpgtool bench-member`: one member process of `cpgtool bench`.
//!
//! A node, a handle, the group; once it sees every member it reports
//! `{"ev":"ready"}`; `go` on stdin starts the run, `{"ev":"progress"}`
//! lines follow every 250 ms, one `{"ev":"result"}` ends it; `quit` exits.

use std::io::{BufRead, IoSlice};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use std::time::{Duration, Instant};

use clap::Args;
use cpg_std::{Cpg, CsError, DispatchFlags, GroupName, Guarantee, ModelV1, Node, NodeId};
use hdrhistogram::Histogram;

use crate::bench::{BenchGuarantee, SendMode};
use crate::config::{group_name, start_node};
use crate::error::{Error, Res};
use crate::proto::{self, Event, MemberResult};

/// `cpgtool bench-member` (started by `cpgtool bench`).
#[derive(Args, Clone, Debug)]
pub(crate) struct MemberArgs {
    /// Cluster configuration (TOML): a node of this process's own.
    #[arg(long, required_unless_present = "daemon")]
    pub config: Option<PathBuf>,
    /// This node (with `--daemon`: cpgd's node).
    #[arg(long)]
    pub nodeid: u32,
    /// Be a client of this cpgd socket instead of running a node.
    #[arg(long, conflicts_with = "config")]
    pub daemon: Option<PathBuf>,
    /// Members to wait for.
    #[arg(long)]
    pub members: u32,
    /// Message size.
    #[arg(long)]
    pub size: usize,
    /// The delivery guarantee.
    #[arg(long, value_enum)]
    pub guarantee: BenchGuarantee,
    /// How to send.
    #[arg(long, value_enum)]
    pub send: SendMode,
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
pub(crate) const HDR: usize = 32;

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

fn emit(ev: &Event) {
    proto::emit(&mut std::io::stdout().lock(), ev);
}

/// An empty latency histogram: 1 ns .. 60 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
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
pub(crate) fn member_main(a: &MemberArgs) -> Res<()> {
    let m = Member::start(a)?;
    // the latency run dispatches on its own thread, between sends
    let dispatcher = (!a.latency).then(|| {
        let d = m.cpg.clone();
        std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking))
    });
    m.wait_for_members(a.members)?;
    let start_members = lock(&m.st.counts).member_pids.clone();
    emit(&Event::Ready {
        nodeid: m.me,
        pid: m.pid,
    });
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    if !wait_for_line(&mut lines, "go") {
        return Err(Error::Failed("stdin closed before go".into()));
    }
    let run = m.run(a.seconds);
    let (end_sent, drained) = m.send_end_and_drain(&run.window, &start_members);
    emit(&Event::Result(m.result(&run, end_sent, drained)));
    // stay in the group until the driver says quit (nobody's tail is cut)
    wait_for_line(&mut lines, "quit");
    m.stop(dispatcher);
    Ok(())
}

/// Read lines until one is `word`: false if stdin ends (or fails) first.
fn wait_for_line(lines: &mut impl Iterator<Item = std::io::Result<String>>, word: &str) -> bool {
    for l in lines {
        match l {
            Ok(l) if l.trim() == word => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// A member's node, handle and counters.
struct Member {
    /// None for a client of cpgd.
    node: Option<Node>,
    cpg: Arc<Cpg>,
    st: Arc<MemberState>,
    me: NodeId,
    pid: u32,
    g: Guarantee,
    zc: bool,
    /// Message size (header included).
    size: usize,
    latency: bool,
    busy_poll: bool,
}

/// The sends of one window.
struct Window {
    counter: u64,
    accepted: u64,
    send_error: Option<u32>,
    hist: Histogram<u64>,
    latency_lost: u64,
}

/// What the sending window measured.
struct Run {
    window: Window,
    secs: f64,
    delivered: u64,
    bytes: u64,
    token_rotations: u64,
    frames_sent: u64,
    gso_datagrams: u64,
    gso_sends: u64,
}

/// The counters over every sender, at the end.
struct Tally {
    lost: u64,
    gaps: u64,
    dups: u64,
    foreign: u64,
    own_delivered: u64,
}

impl Member {
    /// Start the node, open the handle, join the group.
    fn start(a: &MemberArgs) -> Res<Member> {
        let node = match &a.config {
            Some(c) if a.daemon.is_none() => Some(start_node(c, Some(a.nodeid))?),
            _ => None,
        };
        let me = node.as_ref().map_or(a.nodeid, Node::node_id);
        let pid = std::process::id();
        let st = Arc::new(MemberState {
            msgs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
        });
        let model = counting_model(&st, me, pid);
        let cpg = match &node {
            Some(n) => Cpg::model_initialize(n, model, None),
            None => Cpg::connect(a.daemon.as_deref(), model, None),
        }
        .map_err(|source| Error::Cpg {
            call: "model_initialize",
            source,
        })?;
        join(&cpg, &group_name(&a.group)?)?;
        // our own sender entry exists from the start: a message of ours that
        // never comes back is counted lost even if none does
        lock(&st.counts).senders.push(Sender {
            nodeid: me,
            pid,
            ..Sender::default()
        });
        Ok(Member {
            node,
            cpg: Arc::new(cpg),
            st,
            me,
            pid,
            g: Guarantee::from(a.guarantee),
            zc: a.send == SendMode::Zcb,
            size: if a.latency { 64 } else { a.size }.max(HDR),
            latency: a.latency,
            busy_poll: a.busy_poll,
        })
    }

    /// Dispatch what is there (busy-poll), or wait up to `wait_ms` on the
    /// handle's fd and dispatch.
    fn dispatch_some(&self, wait_ms: i32) {
        if self.busy_poll {
            // poll without sleeping; yield so that a node thread sharing
            // this core runs at once
            let _ = self.cpg.dispatch(DispatchFlags::All);
            std::thread::yield_now();
            return;
        }
        let Ok(fd) = self.cpg.fd_get() else {
            return;
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
            let _ = self.cpg.dispatch(DispatchFlags::All);
        }
    }

    /// Let a little time pass while waiting: the latency run dispatches
    /// (up to `wait_ms`), the others sleep `sleep` (their dispatcher thread
    /// delivers).
    fn idle(&self, wait_ms: i32, sleep: Duration) {
        if self.latency {
            self.dispatch_some(wait_ms);
        } else {
            std::thread::sleep(sleep);
        }
    }

    /// Wait (bounded) until the group has `members` members.
    fn wait_for_members(&self, members: u32) -> Res<()> {
        let t_wait = Instant::now();
        while lock(&self.st.counts).members < members as usize {
            if t_wait.elapsed() > Duration::from_secs(60) {
                return Err(Error::Failed(format!(
                    "node {}: the group did not reach {members} members in 60 s",
                    self.me
                )));
            }
            self.idle(10, Duration::from_millis(2));
        }
        Ok(())
    }

    /// The sending window: `seconds` of sends, with progress lines.
    fn run(&self, seconds: f64) -> Run {
        let rot0 = self.token_visits();
        let c0 = self.transport_counters();
        let m0 = self.st.msgs.load(Ordering::Relaxed);
        let b0 = self.st.bytes.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let t_end = t0 + Duration::from_secs_f64(seconds);
        let mut w = Window {
            counter: 0,
            accepted: 0,
            send_error: None,
            hist: new_histogram(),
            latency_lost: 0,
        };
        let progress = Arc::new(AtomicBool::new(true));
        let prog = spawn_progress(&self.st, &progress, m0, t0);
        if self.latency {
            self.send_one_at_a_time(&mut w, t_end);
        } else {
            self.send_flat_out(&mut w, t_end);
        }
        let t1 = Instant::now();
        let m1 = self.st.msgs.load(Ordering::Relaxed);
        let b1 = self.st.bytes.load(Ordering::Relaxed);
        let rot1 = self.token_visits();
        let c1 = self.transport_counters();
        progress.store(false, Ordering::Relaxed);
        let _ = prog.join();
        Run {
            window: w,
            secs: (t1 - t0).as_secs_f64(),
            delivered: m1 - m0,
            bytes: b1 - b0,
            token_rotations: rot1.saturating_sub(rot0),
            frames_sent: c1.frames_sent.saturating_sub(c0.frames_sent),
            gso_datagrams: c1.gso_datagrams.saturating_sub(c0.gso_datagrams),
            gso_sends: c1.gso_sends.saturating_sub(c0.gso_sends),
        }
    }

    /// Throughput: send as fast as flow control allows until `t_end`.
    fn send_flat_out(&self, w: &mut Window, t_end: Instant) {
        let mut buf = vec![0u8; self.size];
        while Instant::now() < t_end {
            match send_one(
                &self.cpg, self.g, self.zc, &mut buf, KIND_DATA, w.counter, 0, t_end,
            ) {
                Ok(true) => {
                    w.counter += 1;
                    w.accepted += 1;
                }
                Ok(false) => break,
                Err(e) => {
                    w.send_error = Some(e.code());
                    break;
                }
            }
        }
    }

    /// Latency: one message in flight; record from just before its send to
    /// its own delivery (after a warm-up).
    fn send_one_at_a_time(&self, w: &mut Window, t_end: Instant) {
        const WARMUP: u64 = 100;
        let mut buf = vec![0u8; self.size];
        let mut n = 0u64;
        while Instant::now() < t_end {
            {
                let mut c = lock(&self.st.counts);
                c.await_counter = Some(w.counter);
                c.await_at = None;
            }
            let ts = Instant::now();
            match send_one(
                &self.cpg, self.g, self.zc, &mut buf, KIND_DATA, w.counter, 0, t_end,
            ) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    w.send_error = Some(e.code());
                    break;
                }
            }
            w.counter += 1;
            w.accepted += 1;
            match self.await_own(Instant::now() + Duration::from_secs(5)) {
                Some(at) => {
                    if n >= WARMUP {
                        let ns = at.saturating_duration_since(ts).as_nanos() as u64;
                        let _ = w.hist.record(ns.max(1));
                    }
                    n += 1;
                }
                None => w.latency_lost += 1,
            }
        }
    }

    /// When the awaited own message arrived; None if not by `bound`.
    fn await_own(&self, bound: Instant) -> Option<Instant> {
        loop {
            if let Some(at) = lock(&self.st.counts).await_at {
                return Some(at);
            }
            if Instant::now() > bound {
                return None;
            }
            self.dispatch_some(100);
        }
    }

    /// Multicast our END marker (copying path, small), then wait (bounded)
    /// for the END of every member there at the start: (END sent, every
    /// END arrived).
    fn send_end_and_drain(&self, w: &Window, start_members: &[(u32, u32)]) -> (bool, bool) {
        let drain_bound = Instant::now() + Duration::from_secs(20);
        let mut end_buf = vec![0u8; HDR];
        let end_sent = matches!(
            send_one(
                &self.cpg,
                self.g,
                false,
                &mut end_buf,
                KIND_END,
                w.counter,
                w.accepted,
                drain_bound
            ),
            Ok(true)
        );
        let drained = loop {
            if lock(&self.st.counts).all_ended(start_members) {
                break true;
            }
            if Instant::now() > drain_bound {
                break false;
            }
            self.idle(5, Duration::from_millis(1));
        };
        (end_sent, drained)
    }

    /// The result line.
    fn result(&self, run: &Run, end_sent: bool, drained: bool) -> MemberResult {
        let w = &run.window;
        let t = lock(&self.st.counts).tally(self.me, self.pid, w.accepted);
        MemberResult {
            nodeid: self.me,
            pid: self.pid,
            secs: run.secs,
            delivered: run.delivered,
            bytes: run.bytes,
            accepted: w.accepted,
            own_delivered: t.own_delivered,
            lost: t.lost + w.latency_lost,
            gaps: t.gaps,
            dups: t.dups,
            foreign: t.foreign,
            drained,
            end_sent,
            send_error: w.send_error,
            token_rotations: run.token_rotations,
            frames_sent: run.frames_sent,
            gso_datagrams: run.gso_datagrams,
            gso_sends: run.gso_sends,
            hist: w
                .hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// Leave, let the dispatcher thread end, stop the node.
    fn stop(self, dispatcher: Option<std::thread::JoinHandle<Result<(), CsError>>>) {
        let _ = self.cpg.finalize();
        if let Some(d) = dispatcher {
            let _ = d.join();
        }
        if let Some(n) = self.node {
            n.stop();
        }
    }

    /// The node's token visits so far (0 for a client of cpgd, which does
    /// not see them).
    /// The transport's counters now (all 0 without the io_uring transport).
    fn transport_counters(&self) -> cpg_uring::Snapshot {
        self.node
            .as_ref()
            .and_then(|n| n.transport_counters())
            .unwrap_or_default()
    }

    fn token_visits(&self) -> u64 {
        self.node
            .as_ref()
            .map_or(0, |n| n.status().engine.token_visits)
    }
}

/// The callbacks: count deliveries into `st`, note membership.
fn counting_model(st: &Arc<MemberState>, me: NodeId, pid: u32) -> ModelV1 {
    let (s1, s2) = (st.clone(), st.clone());
    ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            s1.deliver(d.sender.nodeid, d.sender.pid, d.msg, (me, pid));
        })),
        confchg: Some(Box::new(move |_, c| {
            let mut k = lock(&s2.counts);
            k.members = c.members.len();
            k.member_pids = c.members.iter().map(|m| (m.nodeid, m.pid)).collect();
        })),
        totem_confchg: None,
        flags: 0,
    }
}

/// Join `group`, retrying TRY_AGAIN for up to 30 s.
fn join(cpg: &Cpg, group: &GroupName) -> Res<()> {
    let t_join = Instant::now();
    loop {
        match cpg.join(group) {
            Ok(()) => return Ok(()),
            Err(CsError::TryAgain) if t_join.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(source) => {
                return Err(Error::Cpg {
                    call: "join",
                    source,
                })
            }
        }
    }
}

/// A `{"ev":"progress"}` line every 250 ms until `running` clears.
fn spawn_progress(
    st: &Arc<MemberState>,
    running: &Arc<AtomicBool>,
    m0: u64,
    t0: Instant,
) -> std::thread::JoinHandle<()> {
    let (st, p) = (st.clone(), running.clone());
    std::thread::spawn(move || {
        while p.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            emit(&Event::Progress {
                delivered: st.msgs.load(Ordering::Relaxed) - m0,
                secs: t0.elapsed().as_secs_f64(),
            });
        }
    })
}

impl MemberState {
    /// Count one delivered message from `(n, p)`; `own` is this process.
    fn deliver(&self, n: NodeId, p: u32, msg: &[u8], own: (NodeId, u32)) {
        let mut c = lock(&self.counts);
        let Some((kind, counter, total)) = get_header(msg) else {
            c.foreign += 1;
            return;
        };
        let s = c.sender_mut(n, p);
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
        self.msgs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(msg.len() as u64, Ordering::Relaxed);
        if (n, p) == own && c.await_counter == Some(counter) {
            c.await_at = Some(Instant::now());
        }
    }
}

impl Counts {
    /// The entry of sender `(n, p)`, made on its first message.
    fn sender_mut(&mut self, n: NodeId, p: u32) -> &mut Sender {
        let i = match self
            .senders
            .iter()
            .position(|s| s.nodeid == n && s.pid == p)
        {
            Some(i) => i,
            None => {
                self.senders.push(Sender {
                    nodeid: n,
                    pid: p,
                    ..Sender::default()
                });
                self.senders.len() - 1
            }
        };
        &mut self.senders[i]
    }

    /// Has every one of `members` sent its END?
    fn all_ended(&self, members: &[(u32, u32)]) -> bool {
        members.iter().all(|(n, p)| {
            self.senders
                .iter()
                .any(|s| s.nodeid == *n && s.pid == *p && s.end.is_some())
        })
    }

    /// Losses, gaps and duplicates over every sender; ours is expected to
    /// deliver all `accepted` sends, another its END's count (or as far as
    /// it got).
    fn tally(&self, me: NodeId, pid: u32, accepted: u64) -> Tally {
        let mut t = Tally {
            lost: 0,
            gaps: 0,
            dups: 0,
            foreign: self.foreign,
            own_delivered: 0,
        };
        for s in &self.senders {
            t.gaps += s.gaps;
            t.dups += s.dups;
            let expect = if s.nodeid == me && s.pid == pid {
                t.own_delivered = s.unique;
                accepted
            } else {
                s.end.unwrap_or(s.next)
            };
            t.lost += expect.saturating_sub(s.unique);
        }
        t
    }
}

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
use cpg_std::{Cpg, CsError, DispatchFlags, Guarantee, ModelV1};
use hdrhistogram::Histogram;

use crate::bench::{BenchGuarantee, SendMode};
use crate::config::{group_name, start_node};
use crate::error::{Error, Res};
use crate::proto::{self, Event, MemberResult};

/// `cpgtool bench-member` (started by `cpgtool bench`).
#[derive(Args, Clone, Debug)]
pub(crate) struct MemberArgs {
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
    let g = Guarantee::from(a.guarantee);
    let zc = a.send == SendMode::Zcb;
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
    let cpg = Cpg::model_initialize(&node, model, None).map_err(|source| Error::Cpg {
        call: "model_initialize",
        source,
    })?;
    let cpg = Arc::new(cpg);
    let group = group_name(&a.group)?;
    let t_join = Instant::now();
    loop {
        match cpg.join(&group) {
            Ok(()) => break,
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
            return Err(Error::Failed(format!(
                "node {me}: the group did not reach {} members in 60 s",
                a.members
            )));
        }
        if a.latency {
            dispatch_some(10);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let start_members: Vec<(u32, u32)> = lock(&st.counts).member_pids.clone();
    emit(&Event::Ready { nodeid: me, pid });
    // wait for "go"
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.trim() == "go" => break,
            Some(Ok(_)) => continue,
            _ => return Err(Error::Failed("stdin closed before go".into())),
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
    let mut hist = new_histogram();
    let mut latency_lost = 0u64;
    let progress = Arc::new(AtomicBool::new(true));
    let prog = {
        let (st, p) = (st.clone(), progress.clone());
        std::thread::spawn(move || {
            while p.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                emit(&Event::Progress {
                    delivered: st.msgs.load(Ordering::Relaxed) - m0,
                    secs: t0.elapsed().as_secs_f64(),
                });
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
    emit(&Event::Result(MemberResult {
        nodeid: me,
        pid,
        secs,
        delivered: m1 - m0,
        bytes: b1 - b0,
        accepted,
        own_delivered,
        lost: lost + latency_lost,
        gaps,
        dups,
        foreign,
        drained,
        end_sent: end_ok,
        send_error,
        token_rotations: rotations,
        hist: hist_pairs,
    }));
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

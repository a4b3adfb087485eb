//! `cpgtool node`: one node process driven by JSON lines on stdin.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IoSlice, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpg_std::{
    Cpg, CsError, DispatchFlags, Guarantee, MemberAddr, ModelV1, Reason,
    MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};
use serde_json::{json, Value};

use crate::config::{group_name, start_node};
use crate::message::{check_message, fill_message, fnv, sized, FNV0, HEADER};
use crate::Res;

// ---- node process ---------------------------------------------------------

#[derive(Default)]
pub(crate) struct Tally {
    delivered: u64,
    digest: u64,
    corrupt: u64,
    fifo_violations: u64,
    last: HashMap<(u32, u32), u64>,
    per_sender: BTreeMap<String, u64>,
}

pub(crate) struct Out(Mutex<std::io::Stdout>);

impl Out {
    fn emit(&self, v: Value) {
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }
}

pub(crate) fn addr(m: &MemberAddr) -> Value {
    json!([m.nodeid, m.pid])
}

pub(crate) fn reason_list(l: &[(MemberAddr, Reason)]) -> Value {
    Value::Array(
        l.iter()
            .map(|(m, r)| json!([m.nodeid, m.pid, *r as u32]))
            .collect(),
    )
}

pub(crate) fn guarantee_of(v: &Value) -> Guarantee {
    match v.get("guarantee").and_then(Value::as_str) {
        Some("safe") => Guarantee::Safe,
        Some("fifo") => Guarantee::Fifo,
        Some("unordered") => Guarantee::Unordered,
        _ => Guarantee::Agreed,
    }
}

/// Send one numbered message of `size` bytes, retrying TRY_AGAIN.
pub(crate) fn send_numbered(
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
pub(crate) fn node_main(
    config: &Path,
    nodeid: Option<u32>,
    join: Option<String>,
    verbose: bool,
) -> Res<()> {
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

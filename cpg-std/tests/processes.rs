//! Real node processes (`cpgtool node`) on 127.0.0.1: total order, FIFO,
//! SAFE and AGREED, 1 MiB and 16 MiB messages intact, zero-copy and
//! copying sends (once with `zerocopy = always`); a node SIGKILLed
//! mid-stream and restarted; a node SIGSTOPped past the token timeout.

mod common;

use common::procs::*;
use cpg_std::config::ZeroCopy;
use rustix::process::Signal;
use serde_json::{json, Value};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn order_fifo_safe_agreed_big(name: &str, zc: ZeroCopy) {
    let mut p = Procs::start(name, 3, |f| f.zerocopy = zc);
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "order");
    let mut expected = 0u64;
    // copying AGREED stream, zero-copy SAFE stream, and small SAFE copies
    let at = p.mark();
    for id in ids {
        p.send(
            id,
            json!({"cmd":"stream","count":400,"size":300,"guarantee":"agreed"}),
        );
    }
    for id in ids {
        let r = p.wait_since(at, id, |v| v["re"] == "stream");
        assert_eq!(u(&r["sent"]), 400, "{r}");
    }
    expected += 1200;
    let at = p.mark();
    for id in ids {
        p.send(
            id,
            json!({"cmd":"stream","count":200,"size":4000,"guarantee":"safe","zc":true}),
        );
    }
    for id in ids {
        let r = p.wait_since(at, id, |v| v["re"] == "stream");
        assert_eq!(u(&r["sent"]), 200, "{r}");
    }
    expected += 600;
    let at = p.mark();
    for id in ids {
        p.send(
            id,
            json!({"cmd":"stream","count":50,"size":40,"guarantee":"safe"}),
        );
    }
    for id in ids {
        p.wait_since(at, id, |v| v["re"] == "stream");
    }
    expected += 150;
    // big messages: 1 MiB copied, 1 MiB zero-copy, 16 MiB copied
    let at = p.mark();
    for (id, size, zc) in [
        (1, 1 << 20, false),
        (2, 1 << 20, true),
        (3, 16 << 20, false),
    ] {
        let r = p.call(
            id,
            json!({"cmd":"big","size":size,"zc":zc,"guarantee":"agreed"}),
        );
        assert_eq!(r["ok"], true, "big {size} zc {zc} on node {id}: {r}");
    }
    expected += 3;
    for id in ids {
        for size in [1u64 << 20, 16 << 20] {
            let d = p.wait_since(at, id, |v| v["ev"] == "deliver" && u(&v["len"]) == size);
            assert_eq!(
                d["intact"], true,
                "node {id}: {size}-byte message corrupted"
            );
        }
    }
    let st: Vec<Value> = ids
        .iter()
        .map(|&id| p.until_status(id, |s| u(&s["delivered"]) >= expected))
        .collect();
    for s in &st {
        assert_eq!(u(&s["delivered"]), expected, "exactly what was sent: {s}");
        assert_eq!(s["digest"], st[0]["digest"], "identical total order");
        assert_eq!(u(&s["corrupt"]), 0);
        assert_eq!(u(&s["fifo_violations"]), 0, "FIFO per sender");
    }
    let t = &st[0]["transport"];
    assert!(
        u(&t["sends_write_fixed"])
            + u(&t["sends_zc_fixed"])
            + u(&t["sends_gather"])
            + u(&t["sends_gather_zc"])
            > 0,
        "{t}"
    );
    if zc == ZeroCopy::Always {
        assert!(
            u(&t["sends_zc_fixed"]) + u(&t["sends_gather_zc"]) > 0,
            "SendZc used with zerocopy = always: {t}"
        );
    }
    for id in ids {
        p.send(id, json!({"cmd":"quit"}));
    }
}

#[test]
fn three_processes_order_fifo_safe_agreed_and_big_messages() {
    order_fifo_safe_agreed_big("order-auto", ZeroCopy::Auto);
}

#[test]
fn three_processes_with_zerocopy_always() {
    order_fifo_safe_agreed_big("order-always", ZeroCopy::Always);
}

#[test]
fn sigkill_mid_stream_then_restart_rejoins_with_nodeup() {
    let mut p = Procs::start("kill", 3, |_| {});
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "kill");
    let victim_pid = p.pid(3);
    let at = p.mark();
    for id in ids {
        p.send(
            id,
            json!({"cmd":"stream","count":1_000_000,"size":200,"rate":800}),
        );
    }
    p.until_status(1, |s| u(&s["delivered"]) >= 600);
    p.kill(3);
    let down: Vec<Value> = [1, 2]
        .iter()
        .map(|&id| {
            p.wait_since(at, id, |v| {
                v["ev"] == "confchg"
                    && left_of(v)
                        .iter()
                        .any(|&(n, pid, r)| n == 3 && pid == u64::from(victim_pid) && r == 3)
            })
        })
        .collect();
    assert_eq!(
        down[0]["delivered"], down[1]["delivered"],
        "NODEDOWN at the same point of the stream"
    );
    assert_eq!(
        down[0]["digest"], down[1]["digest"],
        "same messages before NODEDOWN"
    );
    assert!(u(&down[0]["delivered"]) > 0);
    // stop the survivors' streams: everything they had accepted is delivered on both
    let at = p.mark();
    for id in [1, 2] {
        p.send(id, json!({"cmd":"stop_stream"}));
    }
    let mut sent = Vec::new();
    for id in [1u32, 2] {
        let r = p.wait_since(at, id, |v| v["re"] == "stream");
        sent.push((id, u(&r["sent"])));
    }
    for id in [1, 2] {
        let s = p.until_status(id, |s| {
            sent.iter()
                .all(|(n, k)| u(&s["per_sender"][n.to_string()]) == *k)
        });
        assert_eq!(u(&s["fifo_violations"]), 0);
        assert_eq!(u(&s["corrupt"]), 0);
    }
    let (a, b) = (p.status(1), p.status(2));
    assert_eq!(
        a["digest"], b["digest"],
        "survivors delivered the same sequence"
    );
    let old_ring = a["ring"].as_str().unwrap().to_string();

    // restart node 3 while 1 and 2 are stopped, so that it forms a ring of
    // its own, joins there, and then merges: the others see NODEUP
    p.signal(1, Signal::STOP);
    p.signal(2, Signal::STOP);
    let at = p.mark();
    p.spawn(3, &["--join", "kill"]);
    let new_pid = p.pid(3);
    p.wait_since(at, 3, |v| v["ev"] == "ready");
    let own = p.wait_since(at, 3, |v| {
        v["ev"] == "confchg"
            && joined_of(v)
                .iter()
                .any(|&(n, pid, r)| n == 3 && pid == u64::from(new_pid) && r == 1)
    });
    assert_eq!(
        own["members"].as_array().unwrap().len(),
        1,
        "joined in a ring of its own: {own}"
    );
    let at = p.mark();
    p.signal(1, Signal::CONT);
    p.signal(2, Signal::CONT);
    for id in [1, 2] {
        p.wait_since(at, id, |v| {
            v["ev"] == "confchg"
                && joined_of(v)
                    .iter()
                    .any(|&(n, pid, r)| n == 3 && pid == u64::from(new_pid) && r == 4)
        });
    }
    p.wait_ring(&ids);
    // the restarted node never reuses a ring id
    let (old_seq, new_seq) = (
        u64::from_str_radix(old_ring.split('.').nth(1).unwrap(), 16).unwrap(),
        u64::from_str_radix(
            p.status(3)["ring"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap(),
            16,
        )
        .unwrap(),
    );
    assert!(
        new_seq > old_seq,
        "ring seq {new_seq:x} after restart, {old_seq:x} before"
    );
    // everyone delivers again
    let before: Vec<Value> = ids
        .iter()
        .map(|&id| p.status(id)["per_sender"].clone())
        .collect();
    for id in ids {
        assert_eq!(
            p.call(id, json!({"cmd":"mcast","data":format!("hello from {id}")}))["ok"],
            true
        );
    }
    for (k, id) in ids.iter().enumerate() {
        let b = before[k].clone();
        p.until_status(*id, |s| {
            ids.iter()
                .all(|n| u(&s["per_sender"][n.to_string()]) > u(&b[n.to_string()]))
        });
    }
    for id in ids {
        p.send(id, json!({"cmd":"quit"}));
    }
}

#[test]
fn sigstop_past_the_token_timeout_then_sigcont_merges_back() {
    let mut p = Procs::start("stop", 3, |_| {});
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "stop");
    let pid2 = p.pid(2);
    let at = p.mark();
    p.signal(2, Signal::STOP);
    // expelled: the others see NODEDOWN (waiting on the event, not a sleep)
    for id in [1, 3] {
        p.wait_since(at, id, |v| {
            v["ev"] == "confchg"
                && left_of(v)
                    .iter()
                    .any(|&(n, pid, r)| n == 2 && pid == u64::from(pid2) && r == 3)
        });
    }
    // the remaining two keep working meanwhile
    assert_eq!(
        p.call(1, json!({"cmd":"mcast","data":"while 2 is stopped"}))["ok"],
        true
    );
    p.until_status(3, |s| u(&s["per_sender"]["1"]) >= 1);
    let at = p.mark();
    p.signal(2, Signal::CONT);
    // merges back: NODEUP on the others, and node 2 sees the others again
    for id in [1, 3] {
        p.wait_since(at, id, |v| {
            v["ev"] == "confchg"
                && joined_of(v)
                    .iter()
                    .any(|&(n, pid, r)| n == 2 && pid == u64::from(pid2) && r == 4)
        });
    }
    p.wait_since(at, 2, |v| {
        v["ev"] == "confchg" && v["members"].as_array().map(|m| m.len()) == Some(3)
    });
    p.wait_ring(&ids);
    // nobody hangs: every node multicasts and every node delivers it
    let before: Vec<Value> = ids
        .iter()
        .map(|&id| p.status(id)["per_sender"].clone())
        .collect();
    for id in ids {
        assert_eq!(
            p.call(
                id,
                json!({"cmd":"mcast","data":format!("after from {id}"),"guarantee":"safe"})
            )["ok"],
            true
        );
    }
    for (k, id) in ids.iter().enumerate() {
        let b = before[k].clone();
        p.until_status(*id, |s| {
            ids.iter()
                .all(|n| u(&s["per_sender"][n.to_string()]) > u(&b[n.to_string()]))
        });
    }
    for id in ids {
        p.send(id, json!({"cmd":"quit"}));
    }
}

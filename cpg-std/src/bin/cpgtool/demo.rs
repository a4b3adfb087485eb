//! `cpgtool demo`: N node processes on loopback, the whole story.

use std::io::Write;
use std::time::{Duration, Instant};

use cpg_std::config::{ConfigFile, TransportKind};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::config::write_config_with;
use crate::Res;

pub(crate) fn describe_confchg(v: &Value) -> String {
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

pub(crate) fn demo(n: u32, messages: u64, size: usize, token_ms: u64, transport: &str) -> Res<()> {
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

//! `cpgtool demo`: N node processes on loopback tell the whole story in
//! named steps: start and form the ring, join, an ordered stream and its
//! check, a SIGKILL mid-stream, failure detection, survivors carrying on,
//! a summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cpg_std::config::{ConfigFile, TransportKind};

use crate::cluster::Cluster;
use crate::config::{write_config_with, Protection};
use crate::error::{Error, Res};
use crate::proto::{Command, Confchg, Event, Reply, Status, Stream};
use cpg_std::crypto::Crypto;

/// `cpgtool demo`'s options.
pub(crate) struct DemoArgs {
    pub nodes: u32,
    pub messages: u64,
    pub size: usize,
    pub token_ms: u64,
    pub transport: TransportKind,
}

/// What step 2 (the ordered stream) found.
struct StreamCheck {
    total: u64,
    secs: f64,
    order_ok: bool,
    corrupt: u64,
    fifo: u64,
}

/// What step 3 (the SIGKILL) found.
struct FailureCheck {
    /// From the SIGKILL to the last survivor's NODEDOWN.
    detect: Duration,
    same_point: bool,
    survivors_agree: bool,
}

/// The running demo: its processes and the timings of its config.
struct Demo<'a> {
    a: &'a DemoArgs,
    c: Cluster,
    t0: Instant,
    dir: PathBuf,
    /// Effective token timeout and consensus timeout, ms.
    token_eff: u64,
    consensus: u64,
    tty: bool,
}

pub(crate) fn demo(a: &DemoArgs) -> Res<()> {
    if !(2..=16).contains(&a.nodes) {
        return Err(Error::Usage("--nodes must be in 2..=16"));
    }
    let mut d = Demo::start(a)?;
    d.form_ring()?;
    d.join_group()?;
    let stream = d.ordered_stream()?;
    let failure = d.kill_one()?;
    d.quit();
    let ok = d.summary(&stream, &failure);
    let _ = std::fs::remove_dir_all(&d.dir);
    if ok {
        Ok(())
    } else {
        Err(Error::Failed("demo checks failed".into()))
    }
}

/// `confchg 'g' members [1/10 2/11] joined 2/11 JOIN left ...`.
fn describe_confchg(c: &Confchg) -> String {
    let name = |r: u32| match r {
        1 => "JOIN",
        2 => "LEAVE",
        3 => "NODEDOWN",
        4 => "NODEUP",
        5 => "PROCDOWN",
        _ => "?",
    };
    let list = |l: &[crate::proto::Change]| {
        l.iter()
            .map(|e| format!("{}/{} {}", e.0, e.1, name(e.2)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let members: Vec<String> = c
        .members
        .iter()
        .map(|m| format!("{}/{}", m.0, m.1))
        .collect();
    let mut s = format!("confchg '{}' members [{}]", c.group, members.join(" "));
    let (j, l) = (list(&c.joined), list(&c.left));
    if !j.is_empty() {
        s += &format!(" joined {j}");
    }
    if !l.is_empty() {
        s += &format!(" left {l}");
    }
    s
}

impl Demo<'_> {
    /// Write the config and start the node processes; wait for `ready`.
    fn start(a: &DemoArgs) -> Res<Demo<'_>> {
        let n = a.nodes;
        let t0 = Instant::now();
        let dir = std::env::temp_dir().join(format!("cpgtool-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::File {
            path: dir.clone(),
            source,
        })?;
        let config = dir.join("cluster.toml");
        // no per-node token coefficient: failure detection = token + consensus
        // (+ the consensus round's jitter, below consensus/2)
        write_config_with(
            n,
            &config,
            &dir.join("state"),
            a.token_ms,
            a.transport,
            &Protection::beside(&config, Crypto::Encrypt),
            |f| f.totem.token_coefficient_ms = Some(0),
        )?;
        let file = ConfigFile::load(&config)?;
        let eng = file.validate(Some(1))?.engine;
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
            "cpgtool demo: {n} node processes on 127.0.0.1 ports {} ({:?} transport, frames encrypted with a new cluster key, token {token_eff} ms, consensus {consensus} ms)",
            ports.join(", "),
            a.transport
        );
        println!("  config: {}", config.display());
        let exe = std::env::current_exe().map_err(|source| Error::Io {
            what: "current_exe",
            source,
        })?;
        let mut c = Cluster::start(&exe, &config, n)?;
        for id in 1..=n {
            c.wait_event(id, Duration::from_secs(30), |e| {
                matches!(e, Event::Ready { .. })
            })
            .map_err(|e| e.context(format!("node {id} not ready")))?;
        }
        Ok(Demo {
            a,
            c,
            t0,
            dir,
            token_eff,
            consensus,
            tty: std::io::stdout().is_terminal(),
        })
    }

    fn all(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.a.nodes
    }

    /// Wait until every node reports the same ring of all N nodes.
    fn form_ring(&mut self) -> Res<()> {
        let n = self.a.nodes;
        let t_ring = Instant::now();
        loop {
            let st = self.c.statuses(self.all())?;
            if st
                .iter()
                .all(|s| s.members.len() == n as usize && s.ring == st[0].ring)
            {
                println!(
                    "  ring {} formed by all {n} nodes in {:.2} s",
                    st[0].ring,
                    t_ring.elapsed().as_secs_f64()
                );
                self.c.log.clear();
                return Ok(());
            }
            if t_ring.elapsed() > Duration::from_secs(60) {
                return Err(Error::Failed("the ring did not form in 60 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Print the confchgs and totem confchgs received so far.
    fn show_confchgs(&mut self) {
        self.c.drain_events();
        for (id, e, at) in self.c.log.drain(..) {
            let secs = (at - self.t0).as_secs_f64();
            match e {
                Event::Confchg(c) => {
                    println!("  [{secs:>6.3}s] node {id}: {}", describe_confchg(&c))
                }
                Event::Totem { ring, members } => println!(
                    "  [{secs:>6.3}s] node {id}: totem confchg: ring {ring} members {}",
                    serde_json::to_string(&members).unwrap_or_default()
                ),
                _ => {}
            }
        }
    }

    /// Step 1: every node joins group 'demo' and sees all N members.
    fn join_group(&mut self) -> Res<()> {
        let n = self.a.nodes;
        println!("\n1. every node joins group 'demo'");
        for id in self.all() {
            self.c.send(
                id,
                &Command::Join {
                    group: "demo".into(),
                },
            );
        }
        for id in self.all() {
            self.c
                .wait_event(
                    id,
                    Duration::from_secs(30),
                    |e| matches!(e, Event::Confchg(c) if c.members.len() == n as usize),
                )
                .map_err(|e| e.context(format!("node {id} never saw {n} members")))?;
        }
        self.show_confchgs();
        Ok(())
    }

    /// Step 2: every node streams `messages` numbered messages; every
    /// node must deliver the identical sequence, intact and FIFO.
    fn ordered_stream(&mut self) -> Res<StreamCheck> {
        let (n, messages, size) = (self.a.nodes, self.a.messages, self.a.size);
        println!(
            "\n2. every node multicasts {messages} numbered messages of {size} bytes (AGREED)"
        );
        let total = messages * u64::from(n);
        let t_stream = Instant::now();
        for id in self.all() {
            self.c
                .send(id, &Command::Stream(Stream::new(messages, size)));
        }
        let statuses = self.await_delivered(total, t_stream)?;
        let secs = t_stream.elapsed().as_secs_f64();
        let order_ok = statuses.iter().all(|s| s.digest == statuses[0].digest);
        let corrupt: u64 = statuses.iter().map(|s| s.corrupt).sum();
        let fifo: u64 = statuses.iter().map(|s| s.fifo_violations).sum();
        for (i, s) in statuses.iter().enumerate() {
            println!(
                "  node {}: {} messages, sequence digest {}",
                i + 1,
                s.delivered,
                s.digest
            );
        }
        println!(
            "  order check: {} ({} messages in {:.2} s, {:.0} msg/s per node; corrupt {corrupt}, FIFO violations {fifo})",
            if order_ok { "identical sequence on every node" } else { "MISMATCH" },
            total,
            secs,
            total as f64 / secs
        );
        self.show_confchgs();
        Ok(StreamCheck {
            total,
            secs,
            order_ok,
            corrupt,
            fifo,
        })
    }

    /// Poll every node's status (showing progress) until each delivered `total`.
    fn await_delivered(&mut self, total: u64, since: Instant) -> Res<Vec<Status>> {
        let mut last_print = Instant::now() - Duration::from_secs(1);
        loop {
            let st = self.c.statuses(self.all())?;
            let done = st.iter().all(|s| s.delivered >= total);
            if (self.tty && last_print.elapsed() >= Duration::from_millis(250)) || done {
                let line: Vec<String> = st
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("node {}: {:>7}/{total}", i + 1, s.delivered))
                    .collect();
                print!("\r  delivered  {}", line.join("   "));
                let _ = std::io::stdout().flush();
                last_print = Instant::now();
            }
            if done {
                println!();
                return Ok(st);
            }
            if since.elapsed() > Duration::from_secs(300) {
                return Err(Error::Failed("the stream did not complete in 300 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Step 3: a rate-limited stream, node N SIGKILLed in it; every
    /// survivor must see NODEDOWN at the same point and keep delivering.
    fn kill_one(&mut self) -> Res<FailureCheck> {
        let victim = self.a.nodes;
        println!("\n3. every node streams at 1000 msg/s; node {victim} is SIGKILLed mid-stream");
        let mut s = Stream::new(u64::MAX / 2, self.a.size);
        s.rate = 1000;
        for id in self.all() {
            self.c.send(id, &Command::Stream(s.clone()));
        }
        self.warm_up()?;
        let t_kill = self.sigkill(victim)?;
        let down = self.await_nodedown(victim)?;
        let detect = down
            .iter()
            .map(|(_, at)| *at - t_kill)
            .max()
            .unwrap_or_default();
        let same_point = down
            .iter()
            .all(|(c, _)| c.delivered == down[0].0.delivered && c.digest == down[0].0.digest);
        println!(
            "  NODEDOWN at the same point of the stream on every survivor: {}",
            if same_point { "yes" } else { "NO" }
        );
        self.survivors_deliver()?;
        let survivors_agree = self.stop_streams()?;
        self.show_confchgs();
        Ok(FailureCheck {
            detect,
            same_point,
            survivors_agree,
        })
    }

    /// Let the stream run a little (500 deliveries on node 1, at most 30 s).
    fn warm_up(&mut self) -> Res<()> {
        let base = self.c.statuses(self.all())?;
        let warm = Instant::now();
        loop {
            let d = self.c.status(1)?.delivered;
            if d >= base[0].delivered + 500 || warm.elapsed() > Duration::from_secs(30) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigkill(&mut self, victim: u32) -> Res<Instant> {
        let p = self
            .c
            .procs
            .iter_mut()
            .find(|p| p.id == victim)
            .ok_or(Error::Usage("no victim"))?;
        let t_kill = Instant::now();
        p.child.kill().map_err(|source| Error::Io {
            what: "SIGKILL",
            source,
        })?;
        let _ = p.child.wait();
        p.alive = false;
        println!(
            "  [{:>6.3}s] node {victim}: SIGKILL",
            (t_kill - self.t0).as_secs_f64()
        );
        Ok(t_kill)
    }

    /// Every survivor's NODEDOWN confchg for `victim`, and when it came.
    fn await_nodedown(&mut self, victim: u32) -> Res<Vec<(Confchg, Instant)>> {
        let mut down = Vec::new();
        for id in self.c.alive() {
            let (e, at) = self
                .c
                .wait_event(
                    id,
                    Duration::from_secs(60),
                    |e| matches!(e, Event::Confchg(c) if c.is_nodedown_of(victim)),
                )
                .map_err(|e| e.context(format!("node {id} never saw NODEDOWN")))?;
            let Event::Confchg(c) = e else {
                unreachable!("matched a confchg")
            };
            println!(
                "  [{:>6.3}s] node {id}: {}",
                (at - self.t0).as_secs_f64(),
                describe_confchg(&c)
            );
            println!(
                "            delivered {} before it, digest {}",
                c.delivered, c.digest
            );
            down.push((c, at));
        }
        self.c
            .log
            .retain(|(_, e, _)| !matches!(e, Event::Confchg(c) if c.is_nodedown_of(victim)));
        Ok(down)
    }

    /// Show for 2 s how many more messages each survivor delivers.
    fn survivors_deliver(&mut self) -> Res<()> {
        let alive = self.c.alive();
        let after = self.c.statuses(alive.iter().copied())?;
        let t_more = Instant::now();
        let mut more = vec![0u64; after.len()];
        let line = |more: &[u64]| {
            alive
                .iter()
                .zip(more)
                .map(|(id, m)| format!("node {id}: +{m}"))
                .collect::<Vec<_>>()
                .join("   ")
        };
        while t_more.elapsed() < Duration::from_secs(2) {
            for (k, id) in alive.iter().enumerate() {
                more[k] = self.c.status(*id)?.delivered - after[k].delivered;
            }
            if self.tty {
                print!(
                    "\r  survivors keep delivering after NODEDOWN  {}",
                    line(&more)
                );
                let _ = std::io::stdout().flush();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if !self.tty {
            print!(
                "  survivors keep delivering after NODEDOWN  {}",
                line(&more)
            );
        }
        println!();
        Ok(())
    }

    /// Stop the survivors' streams; once the last accepted messages are
    /// delivered, every survivor must hold the same sequence.
    fn stop_streams(&mut self) -> Res<bool> {
        for id in self.c.alive() {
            self.c.send(id, &Command::StopStream);
        }
        for id in self.c.alive() {
            let _ = self.c.wait_reply(id, Duration::from_secs(30), |r| {
                matches!(r, Reply::Stream { .. })
            });
        }
        let quiet = Instant::now();
        loop {
            let st = self.c.statuses(self.c.alive())?;
            if st.iter().all(|s| s.digest == st[0].digest) {
                println!(
                    "  survivors stopped streaming: {} messages each, identical digest {}",
                    st[0].delivered, st[0].digest
                );
                return Ok(true);
            }
            if quiet.elapsed() > Duration::from_secs(20) {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tell the survivors to quit and wait for them.
    fn quit(&mut self) {
        for id in self.c.alive() {
            self.c.send(id, &Command::Quit);
        }
        for p in &mut self.c.procs {
            if p.alive {
                let _ = p.child.wait();
                p.alive = false;
            }
        }
    }

    /// Print the summary box; whether every check passed.
    fn summary(&self, s: &StreamCheck, f: &FailureCheck) -> bool {
        let (n, size, transport) = (self.a.nodes, self.a.size, self.a.transport);
        let (token_eff, consensus) = (self.token_eff, self.consensus);
        let ok = s.order_ok && f.same_point && f.survivors_agree && s.corrupt == 0 && s.fifo == 0;
        let pick = |good: bool, yes: &'static str, no: &'static str| if good { yes } else { no };
        let row = |label: &str, value: &str| println!("│ {label:<24} {value:<48}│");
        println!("\n┌──────────────────────────── summary ─────────────────────────────────────┐");
        row(
            "nodes",
            &format!("{n} processes, {transport:?} transport, AES-256-GCM"),
        );
        row(
            "ordered stream",
            &format!(
                "{} messages x {size} B, {:.0} msg/s",
                s.total,
                s.total as f64 / s.secs
            ),
        );
        row(
            "total order",
            pick(s.order_ok, "identical on every node", "MISMATCH"),
        );
        row(
            "integrity / FIFO",
            &format!("{} corrupt, {} out of order", s.corrupt, s.fifo),
        );
        row(
            "failure detection",
            &format!(
                "{:.0} ms after SIGKILL (bound {}-{} ms)",
                f.detect.as_secs_f64() * 1000.0,
                token_eff + consensus,
                // the consensus round carries a jitter below consensus/2
                token_eff + consensus + consensus / 2
            ),
        );
        row(
            "NODEDOWN point",
            pick(f.same_point, "same on every survivor", "DIFFERS"),
        );
        row(
            "survivors after failure",
            pick(
                f.survivors_agree,
                "kept delivering, same sequence",
                "DIVERGED",
            ),
        );
        row("result", pick(ok, "OK", "FAILED"));
        println!("└──────────────────────────────────────────────────────────────────────────┘");
        ok
    }
}

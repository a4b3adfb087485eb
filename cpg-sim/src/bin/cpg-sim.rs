//! Tell the story of one simulated cluster under faults.
//!
//! ```text
//! cargo run --release -p cpg-sim -- --nodes 5 --seed 7 [--duration-ms N] [--swarm] [--quiet]
//! ```
//! `--nodes N` runs N nodes with the fault mix drawn from the seed;
//! `--swarm` takes everything (cluster size too) from the seed, exactly as
//! the sweep test does, so a sweep failure can be told as a story.

use std::process::ExitCode;

use cpg_core::engine::ConfigChange;
use cpg_core::Duration;
use cpg_sim::node::stats_fields;
use cpg_sim::{Sim, SimOptions};

struct Args {
    nodes: Option<usize>,
    seed: u64,
    duration_ms: Option<u64>,
    swarm: bool,
    quiet: bool,
    trace: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: cpg-sim [--nodes N] [--seed S] [--duration-ms MS] [--swarm] [--quiet] [--trace]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        nodes: None,
        seed: 7,
        duration_ms: None,
        swarm: false,
        quiet: false,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> u64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                usage()
            })
        };
        match arg.as_str() {
            "--nodes" => a.nodes = Some(num("--nodes") as usize),
            "--seed" => a.seed = num("--seed"),
            "--duration-ms" => a.duration_ms = Some(num("--duration-ms")),
            "--swarm" => a.swarm = true,
            "--quiet" => a.quiet = true,
            "--trace" => a.trace = true,
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other}");
                usage()
            }
        }
    }
    a
}

fn secs(t: cpg_core::Instant) -> f64 {
    t.0 as f64 / 1e9
}

fn main() -> ExitCode {
    let args = parse();
    let mut opts = SimOptions::swarm(args.seed);
    if !args.swarm {
        let n = args
            .nodes
            .unwrap_or(5)
            .clamp(1, cpg_core::limits::NODES_MAX);
        opts.nodes = (1..=n as u32).collect();
    }
    if let Some(ms) = args.duration_ms {
        opts.safety_duration = Duration::from_millis(ms);
    }
    opts.log_all = true;
    opts.trace_packets = args.trace;
    println!(
        "cpg-sim: seed {}, {} nodes {:?}, safety phase {} ms",
        args.seed,
        opts.nodes.len(),
        opts.nodes,
        opts.safety_duration.as_millis()
    );
    println!("faults: {}", opts.faults.summary());
    println!("workload: {:?}", opts.workload);
    if opts.seq_base != 0 {
        println!("message seqs start at {:#x} (serial wrap)", opts.seq_base);
    }
    let mut sim = Sim::new(args.seed, opts);
    sim.replay_hint = format!(
        "cargo run --release -p cpg-sim -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let d = sim.opts.safety_duration;
    let bound = sim.opts.converge_bound;
    let result = sim
        .run_safety(d)
        .and_then(|_| sim.heal())
        .and_then(|_| sim.run_until_converged(bound));

    if !args.quiet {
        println!("\n== story");
        for l in &sim.log {
            println!("{:>9.3}s {}", secs(l.at), l.text);
        }
    }
    println!("\n== ring changes (regular configurations)");
    for (t, n, c) in &sim.config_log {
        if let ConfigChange::Regular {
            ring_id,
            members,
            joined,
        } = c
        {
            println!(
                "{:>9.3}s node {n:>3} ring {ring_id} members {:?} joined {:?}",
                secs(*t),
                &members[..],
                &joined[..]
            );
        }
    }
    println!("\n== group confchgs: {}", sim.confchg_log.len());
    println!("\n== per node");
    for n in &sim.nodes {
        let s = n.total_stats();
        let state = match &n.engine {
            Some(e) => format!("{:?} in {} {:?}", e.state(), e.ring_id(), e.members()),
            None => "down".into(),
        };
        println!(
            "node {:>3}: {state}; incarnations {}, delivered {} app messages / {} frames, {} rings installed",
            n.id, n.incarnation, s.app_delivered, s.frames_delivered, s.ring_changes
        );
        for (k, v) in stats_fields(&s) {
            if v > 0 && !args.quiet {
                print!(" {k}={v}");
            }
        }
        if !args.quiet {
            println!();
        }
    }
    let ns = &sim.net.stats;
    println!("\n== faults");
    println!(
        "network: sent {} delivered {} lost {} cut {} duplicated {} garbage {} replayed {}",
        ns.sent, ns.delivered, ns.lost, ns.cut, ns.duplicated, ns.garbage, ns.replayed
    );
    let c = &sim.counters;
    println!(
        "cluster: crashes {} restarts {} partitions {} one-way blocks {}; accepted {} mcasts, {} TRY_AGAIN",
        c.crashes, c.restarts, c.partitions, c.one_way_blocks, c.accepted, c.try_again
    );
    println!("\n== coverage\n{}", sim.coverage());
    match result {
        Ok(()) => {
            println!(
                "converged at {:.3}s (healed at {:.3}s)",
                sim.converged_at.map_or(0.0, secs),
                sim.healed_at.map_or(0.0, secs)
            );
            println!("all invariants held");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("\nINVARIANT VIOLATED\n{e}");
            for n in &sim.nodes {
                if let Some(en) = &n.engine {
                    println!(
                        "node {}: {:?} ring {} members {:?} next timeout {:?}",
                        n.id,
                        en.state(),
                        en.ring_id(),
                        en.members(),
                        en.poll_timeout()
                    );
                }
            }
            ExitCode::FAILURE
        }
    }
}

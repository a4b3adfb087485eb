//! Seed sweep (VOPR style): each seed draws its own cluster size, fault mix
//! and workload ([`SimOptions::swarm`]), runs a safety phase with faults on
//! and every checker after every step, heals, and must converge.
//!
//! ```text
//! cargo test -p cpg-sim --release --test sweep -- --nocapture              # 200 seeds
//! CPG_SIM_SEED=42 cargo test -p cpg-sim --release --test sweep -- --nocapture   # replay one
//! CPG_SIM_SEEDS=10000 cargo test -p cpg-sim --release --test sweep -- --nocapture
//! CPG_SIM_SEED_BASE=50000 CPG_SIM_SEEDS=1000 ...                            # other seeds
//! cargo test -p cpg-sim --release --test sweep -- --ignored --nocapture     # 10,000 seeds
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant as WallClock;

use cpg_sim::{catch, seeds, seeds_or, Coverage, Sim, SimOptions};

struct Outcome {
    seed: u64,
    mix: String,
    nodes: usize,
    result: Result<(Coverage, u64), String>,
}

fn run_one(seed: u64) -> Outcome {
    let opts = SimOptions::swarm(seed);
    let mix = opts.faults.mix_tag();
    let nodes = opts.nodes.len();
    let result = match catch(|| Sim::run_seed(seed)) {
        Ok(Ok(sim)) => Ok((sim.coverage(), sim.now.0)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "seed {seed}: engine panicked: {panic}\nreplay: {}",
            cpg_sim::replay_command(seed)
        )),
    };
    Outcome {
        seed,
        mix,
        nodes,
        result,
    }
}

fn sweep(seeds: Vec<u64>) {
    let started = WallClock::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let queue = Mutex::new(seeds.clone().into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(seed) = queue.lock().unwrap().next() else {
                    break;
                };
                let o = run_one(seed);
                results.lock().unwrap().push(o);
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|o| o.seed);
    let mut cov = Coverage::default();
    let mut mixes: BTreeMap<String, usize> = BTreeMap::new();
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut virt = 0u64;
    for o in &results {
        match &o.result {
            Ok((c, t)) => {
                cov.merge(c);
                virt += t;
                *mixes.entry(o.mix.clone()).or_default() += 1;
                *sizes.entry(o.nodes).or_default() += 1;
            }
            Err(e) => failures.push((o.seed, e.clone())),
        }
    }
    let passed = results.len() - failures.len();
    println!(
        "sweep: {} seeds, {} passed, {} failed, {:.1}s wall, {:.0}s virtual, {} threads",
        results.len(),
        passed,
        failures.len(),
        started.elapsed().as_secs_f64(),
        virt as f64 / 1e9,
        threads
    );
    println!("passed by cluster size: {sizes:?}");
    println!("passed by fault mix (L loss, D dup, J jitter, G garbage, R replay, P partitions, C crashes, O one-way): {} mixes", mixes.len());
    for (m, n) in &mixes {
        println!("  {m} {n}");
    }
    println!("coverage (summed over passing seeds):\n{cov}");
    if !failures.is_empty() {
        println!("failures (one line each):");
        for (seed, e) in &failures {
            let first = e.lines().next().unwrap_or("");
            let short: String = first.chars().take(220).collect();
            println!("  seed {seed:>6}: {short}");
        }
        for (seed, e) in failures.iter().take(3) {
            println!("---- seed {seed} FAILED ----\n{e}\n");
        }
        let list: Vec<u64> = failures.iter().map(|f| f.0).collect();
        panic!(
            "{} of {} seeds failed: {:?}\nfirst failure:\n{}\nreplay: {}",
            failures.len(),
            results.len(),
            list,
            failures[0].1,
            cpg_sim::replay_command(failures[0].0)
        );
    }
}

#[test]
fn sim_random_seeds() {
    sweep(seeds());
}

/// The long sweep: `cargo test -p cpg-sim --release --test sweep -- --ignored --nocapture`
/// (or `CPG_SIM_SEEDS=10000` with `sim_random_seeds`).
#[test]
#[ignore = "long: 10,000 seeds"]
fn sim_random_seeds_10k() {
    sweep(seeds_or(10_000));
}

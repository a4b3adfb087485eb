//! `cpg-netsuite`: run the fault phases and print a table.
//!
//! ```text
//! cpg-netsuite [--profile short|long] [--nodes N] [--phase NAME]... [--seed S] [--keep-logs]
//! ```
//!
//! Exits 1 if any phase failed, 2 on a usage error or missing prerequisite.

use cpg_netsuite::suite::{run_phase, Options, Phase, PhaseReport, Profile};

fn usage(msg: &str) -> ! {
    eprintln!("cpg-netsuite: {msg}");
    eprintln!(
        "usage: cpg-netsuite [--profile short|long] [--nodes N] [--phase NAME]... [--seed S] [--keep-logs]"
    );
    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
    eprintln!("phases: {}", names.join(", "));
    std::process::exit(2);
}

fn main() {
    let mut profile = Profile::LONG;
    let mut nodes = 5;
    let mut phases = Vec::new();
    let mut seed = 1;
    let mut keep_logs = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--profile" => {
                let v = value();
                profile =
                    Profile::from_name(&v).unwrap_or_else(|| usage(&format!("no profile {v:?}")));
            }
            "--nodes" => {
                nodes = value()
                    .parse()
                    .ok()
                    .filter(|n| (2..=200).contains(n))
                    .unwrap_or_else(|| usage("--nodes must be 2..=200"));
            }
            "--phase" => {
                let v = value();
                phases.push(
                    Phase::from_name(&v).unwrap_or_else(|| usage(&format!("no phase {v:?}"))),
                );
            }
            "--seed" => {
                seed = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--seed takes a number"))
            }
            "--keep-logs" => keep_logs = true,
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if phases.is_empty() {
        phases = Phase::ALL.to_vec();
    }
    if let Some(why) = cpg_netsuite::missing_prerequisite() {
        usage(&why);
    }
    let cpgtool = cpg_netsuite::find_cpgtool().unwrap_or_else(|e| usage(&e));
    let opts = Options {
        cpgtool,
        profile,
        nodes,
        seed,
        keep_logs,
    };
    println!(
        "cpg-netsuite: {} profile, {nodes} nodes, token {} ms, liveness bound {:.1} s",
        profile.name,
        profile.token_ms,
        profile.bound().as_secs_f64()
    );
    println!("{}", PhaseReport::header());
    let mut failed = 0;
    for phase in phases {
        let r = run_phase(&opts, phase);
        println!("{}", r.line());
        if !r.passed() {
            failed += 1;
        }
    }
    if failed > 0 {
        println!("{failed} phase(s) failed");
        std::process::exit(1);
    }
}

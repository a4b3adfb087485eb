//! IPv6 and redundant links in network namespaces (`cpg_netsuite::suite::links`):
//! a ring over IPv6 ULA addresses, and links cut one at a time under load
//! with no membership change.
//!
//! Needs root, `ip`, `iptables` and `ip6tables`; without them each test
//! says why and passes, except under `CI=true`, where a missing
//! prerequisite fails the test rather than hiding it.

use std::sync::Mutex;
use std::time::Instant;

use cpg_netsuite::suite::links::{self, LinkReport};

/// One run at a time (and not beside the fault phases of `faults.rs`, a
/// separate test binary that cargo runs after this one).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(name: &str, f: impl FnOnce(&std::path::Path) -> LinkReport) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let missing = cpg_netsuite::missing_prerequisite().or_else(|| {
        (!cpg_netsuite::net::exists("ip6tables"))
            .then(|| "`ip6tables` not found (apt-get install iptables)".to_string())
    });
    if let Some(why) = missing {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the link tests cannot run in CI: {why}"
        );
        eprintln!("skipping {name}: {why}");
        return;
    }
    let cpgtool = cpg_netsuite::find_cpgtool().unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let r = f(&cpgtool);
    println!("{name}: {r} ({:.1} s)", t.elapsed().as_secs_f64());
    for (link, text) in &r.status_during_cut {
        println!("{name}: cpgtool status on node 1 while link {link} is cut:\n{text}");
    }
    assert!(r.passed(), "{name} failed: {r}");
}

#[test]
fn ring_over_ipv6_delivers_in_order() {
    run("ipv6", links::run_ipv6);
}

/// Passive mode: link 0 carries everything; cutting it moves the ring to
/// link 1 with no membership change; cutting link 1 (standing by) costs
/// nothing but its heartbeats.
#[test]
fn passive_link_cut_under_load_changes_no_membership() {
    run("links-passive", |p| {
        links::run_link_cuts(p, cpg_std::config::LinkMode::Passive)
    });
}

/// Active mode: both links carry frames; either cut leaves the other.
#[test]
fn active_link_cut_under_load_changes_no_membership() {
    run("links-active", |p| {
        links::run_link_cuts(p, cpg_std::config::LinkMode::Active)
    });
}

//! Running one phase: a fresh topology and cluster, the stream, the fault,
//! the heal, the measures and the checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::phase::{Phase, Profile};
use super::report::PhaseReport;
use crate::check::{check, liveness};
use crate::cluster::{Cluster, Event, Load, Member, GROUP};
use crate::net::{rules, Fault, Stage, Topology};

/// Everything a phase needs besides its name.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `cpgtool` binary the nodes run.
    pub cpgtool: PathBuf,
    /// Durations and intensities.
    pub profile: Profile,
    /// Nodes (2..=200; the partition phases cut off the last one, or the
    /// last two from 5 nodes on).
    pub nodes: u32,
    /// Seed of the stage's random choices.
    pub seed: u64,
    /// Keep the logs of phases that passed too.
    pub keep_logs: bool,
}

/// Run `phase`; the report says what was measured and what failed.
pub fn run_phase(opts: &Options, phase: Phase) -> PhaseReport {
    let mut rep = PhaseReport::new(phase, opts.nodes, opts.profile.bound());
    let dir = std::env::temp_dir().join(format!(
        "cpg-netsuite-{}-{}-{}n",
        std::process::id(),
        phase.name(),
        opts.nodes
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = None;
    if let Err(e) = run_inner(opts, phase, &dir, &mut rep, &mut log) {
        rep.failures.push(e);
    }
    rep.logs = keep_or_clean(&dir, rep.passed() && !opts.keep_logs, log);
    rep
}

/// A run's end: its directory removed (`clean`), or its log written there
/// as `log.txt`, whose path is returned.
pub(super) fn keep_or_clean(
    dir: &Path,
    clean: bool,
    log: Option<crate::cluster::Log>,
) -> Option<PathBuf> {
    if clean {
        let _ = std::fs::remove_dir_all(dir);
        return None;
    }
    let path = dir.join("log.txt");
    log?.dump(&path).ok().map(|_| path)
}

/// Sides of a partition: (the majority, the part cut off).
fn sides(n: u32) -> (Vec<u32>, Vec<u32>) {
    let cut = if n >= 5 { 2 } else { 1 };
    ((1..=n - cut).collect(), (n - cut + 1..=n).collect())
}

fn run_inner(
    opts: &Options,
    phase: Phase,
    dir: &Path,
    rep: &mut PhaseReport,
    log_out: &mut Option<crate::cluster::Log>,
) -> Result<(), String> {
    let p = opts.profile;
    let n = opts.nodes;
    let bound = p.bound();
    let all: Vec<u32> = (1..=n).collect();
    let (major, minor) = sides(n);
    let topo = Topology::create(n)?;
    let load = Load {
        token_ms: p.token_ms,
        rate: p.rate,
        size_min: p.size_min,
        size_max: p.size_max,
    };
    let mut c = Cluster::start(&opts.cpgtool, &topo, dir, load)?;
    *log_out = Some(c.log().clone());
    c.join(&all)?;
    if !c.wait_whole(Duration::from_secs(30)) {
        return Err(format!(
            "no ring of all nodes before any fault: {:?}",
            views(&c)
        ));
    }
    c.stream(&all);
    std::thread::sleep(p.steady);

    // the fault, up to the heal; `heal` is when the last fault was lifted
    let stage_of = |phase| match phase {
        Phase::Delay => Some(p.delay),
        Phase::Reorder => Some(p.reorder),
        Phase::Corrupt => Some(p.corrupt),
        _ => None,
    };
    let heal = match phase {
        Phase::Loss | Phase::Duplicate | Phase::Delay | Phase::Reorder | Phase::Corrupt => {
            let stage = match stage_of(phase) {
                Some(params) => Some(Stage::start(&topo, params, opts.seed)?),
                None => None,
            };
            let fault = match phase {
                Phase::Loss => Fault::Loss {
                    percent: p.loss_percent,
                },
                Phase::Duplicate => Fault::Duplicate {
                    percent: p.dup_percent,
                },
                _ => Fault::Stage,
            };
            rules::apply(&topo, &[fault])?;
            std::thread::sleep(p.fault);
            if stage.is_none() {
                rep.matched = Some(rules::matched(&topo)?);
            }
            rules::clear(&topo)?;
            rep.stage = stage.map(Stage::stop);
            c.log().now()
        }
        Phase::Partition | Phase::Mute => {
            let faults = if phase == Phase::Partition {
                rules::partition(&topo, &minor)
            } else {
                minor.iter().flat_map(|&m| rules::mute(&topo, m)).collect()
            };
            let t = c.log().now();
            rules::apply(&topo, &faults)?;
            // each side forms its own configuration (a muted node alone, as
            // it reaches nobody)
            let parts = if phase == Phase::Partition {
                vec![c.members_of(&major), c.members_of(&minor)]
            } else {
                let mut v = vec![c.members_of(&major)];
                v.extend(minor.iter().map(|&m| c.members_of(&[m])));
                v
            };
            expect_split(&c, rep, t, bound, |r| liveness::split(r, &parts));
            sleep_until(&c, t + p.fault);
            rep.matched = Some(rules::matched(&topo)?);
            rules::clear(&topo)?;
            c.log().now()
        }
        Phase::OneWay => {
            // node n's datagrams to node 1 are lost, node 1's to n arrive:
            // every node must settle in a ring that does not hold both
            let t = c.log().now();
            rules::apply(&topo, &[Fault::Cut { from: n, to: 1 }])?;
            let who = c.running();
            expect_split(&c, rep, t, bound, |r| liveness::apart(r, t, &who, 1, n));
            sleep_until(&c, t + p.fault);
            rep.matched = Some(rules::matched(&topo)?);
            rules::clear(&topo)?;
            c.log().now()
        }
        Phase::Fragments => {
            // enough loss that the survivors miss messages at the ring
            // change (so recovery re-sends copies), little enough that
            // failure detection stays near token + consensus
            let loss = Fault::Loss {
                percent: p.loss_percent / 2,
            };
            rules::apply(&topo, &[Fault::DropFragments, loss])?;
            std::thread::sleep(p.fault / 2);
            let t = c.log().now();
            rules::apply(&topo, &rules::partition(&topo, &minor))?;
            let parts = [c.members_of(&major), c.members_of(&minor)];
            expect_split(&c, rep, t, bound, |r| liveness::split(r, &parts));
            sleep_until(&c, t + p.fault / 2);
            // heal the partition and the loss only: the path still drops fragments
            rep.matched = Some(rules::matched(&topo)?);
            rules::clear(&topo)?;
            rules::apply(&topo, &[Fault::DropFragments])?;
            c.log().now()
        }
        Phase::Pause => {
            let t = c.log().now();
            for &m in &minor {
                c.pause(m);
            }
            let parts = [c.members_of(&major)];
            expect_split(&c, rep, t, bound, |r| liveness::split(r, &parts));
            sleep_until(&c, t + p.fault);
            for &m in &minor {
                c.resume(m);
            }
            c.log().now()
        }
        Phase::Kill => {
            let t = c.log().now();
            for &m in &minor {
                c.kill(m);
            }
            let parts = [c.members_of(&major)];
            expect_split(&c, rep, t, bound, |r| liveness::split(r, &parts));
            sleep_until(&c, t + p.fault);
            let heal = c.log().now();
            for &m in &minor {
                c.restart(&topo, m)?;
            }
            c.join(&minor)?;
            c.stream(&minor);
            heal
        }
        Phase::Rolling => {
            let mut heal = c.log().now();
            for &id in &all {
                let t = c.log().now();
                c.quit(id)?;
                let rest: Vec<u32> = all.iter().copied().filter(|&x| x != id).collect();
                let parts = [c.members_of(&rest)];
                expect_split(&c, rep, t, bound, |r| liveness::split(r, &parts));
                heal = c.log().now();
                c.restart(&topo, id)?;
                c.join(&[id])?;
                c.stream(&[id]);
                if id != n {
                    settle(&c, rep, heal, bound);
                }
            }
            heal
        }
    };
    settle(&c, rep, heal, bound);
    std::thread::sleep(p.steady);

    let running: Vec<u32> = c.running().iter().map(|m| m.0).collect();
    c.stop_streams(&running, Duration::from_secs(10))?;
    let drained = c.drain("x", Duration::from_secs(20));
    if let Err(e) = &drained {
        rep.failures.push(format!(
            "after the heal: {e} (accepted messages not delivered: the ring does not move)"
        ));
    }
    rules::clear(&topo)?;
    let records = c.log().snapshot();
    rep.delivered = records
        .iter()
        .filter(|r| matches!(r.ev, Event::Deliver { .. }))
        .count() as u64;
    rep.violations = check(&records, &c.facts(drained.is_ok()))
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(())
}

/// Wait for one configuration of every running process after `heal`;
/// record the time to it (the worst of several heals) or the stall.
fn settle(c: &Cluster, rep: &mut PhaseReport, heal: Duration, bound: Duration) {
    if c.wait_whole(bound) {
        let who = c.running();
        let t = liveness::settle_time(&c.log().snapshot(), &who, heal);
        rep.recovery = Some(rep.recovery.map_or(t, |r| r.max(t)));
        return;
    }
    // longer, to tell a slow recovery from a stall in the report
    let late = c.wait_whole(Duration::from_secs(20));
    rep.failures.push(format!(
        "no single configuration within {:.1} s of the heal ({}); views: {:?}",
        bound.as_secs_f64(),
        if late {
            format!(
                "reached after {:.1} s",
                (c.log().now() - heal).as_secs_f64()
            )
        } else {
            "nor 20 s later".to_string()
        },
        views(c)
    ));
}

/// Wait until the fault has the effect `done` describes (each side of a
/// partition in its own ring, ...); record the time (failure detection)
/// or the failure.
fn expect_split(
    c: &Cluster,
    rep: &mut PhaseReport,
    fault: Duration,
    bound: Duration,
    done: impl FnMut(&[crate::cluster::Record]) -> bool,
) {
    if c.log().wait_until(bound, done) {
        let t = c.log().now() - fault;
        rep.split = Some(rep.split.map_or(t, |s| s.max(t)));
    } else {
        rep.failures.push(format!(
            "{:.1} s after the fault the nodes were not in the configurations it must cause; views: {:?}",
            bound.as_secs_f64(),
            views(c)
        ));
    }
}

fn sleep_until(c: &Cluster, at: Duration) {
    if let Some(d) = at.checked_sub(c.log().now()) {
        std::thread::sleep(d);
    }
}

/// A process, its latest ring (id, nodes) and how many members its group has.
type ViewLine = (Member, Option<(String, Vec<u32>)>, usize);

fn views(c: &Cluster) -> Vec<ViewLine> {
    let v = liveness::views(&c.log().snapshot(), GROUP, &c.running());
    v.into_iter()
        .map(|(m, x)| {
            (
                m,
                x.ring.map(|(id, n)| (id, n.into_iter().collect())),
                x.members.map_or(0, |s| s.len()),
            )
        })
        .collect()
}

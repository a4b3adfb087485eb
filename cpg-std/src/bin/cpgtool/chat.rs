//! `cpgtool chat`: Corosync's `testcpg`. Stdin lines are multicast;
//! deliveries, confchgs and totem confchgs are printed in testcpg's words.

use std::io::{BufRead, IoSlice};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpg_std::{
    Cpg, CsError, DispatchFlags, GroupName, Guarantee, IterationType, MemberAddr, ModelV1, Reason,
    MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
};

use crate::attach::{AttachArgs, Attached};
use crate::config::group_name;
use crate::error::{Error, Res};

/// `HH:MM:SS.mmm` (UTC), testcpg's time stamp.
fn stamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

fn reason(r: Reason) -> &'static str {
    match r {
        Reason::Join => "1 (JOIN)",
        Reason::Leave => "2 (LEAVE)",
        Reason::NodeDown => "3 (NODEDOWN)",
        Reason::NodeUp => "4 (NODEUP)",
        Reason::ProcDown => "5 (PROCDOWN)",
        Reason::Undefined => "0",
    }
}

/// testcpg's callbacks: print every delivery, confchg and totem confchg.
fn model() -> ModelV1 {
    ModelV1 {
        deliver: Some(Box::new(move |_, d| {
            println!(
                "{} DeliverCallback: message (len={})from node/pid {}/{}: '{}'",
                stamp(),
                d.msg.len(),
                d.sender.nodeid,
                d.sender.pid,
                String::from_utf8_lossy(d.msg).trim_end_matches('\0')
            );
        })),
        confchg: Some(Box::new(move |cpg, c| {
            println!(
                "{} ConfchgCallback: group '{}'",
                stamp(),
                String::from_utf8_lossy(c.group.as_bytes())
            );
            for (m, r) in c.left {
                println!(
                    "left node/pid {}/{} reason: {}",
                    m.nodeid,
                    m.pid,
                    reason(*r)
                );
            }
            for (m, r) in c.joined {
                println!(
                    "joined node/pid {}/{} reason: {}",
                    m.nodeid,
                    m.pid,
                    reason(*r)
                );
            }
            println!("nodes in group now {}", c.members.len());
            for m in c.members {
                println!("node/pid {}/{}", m.nodeid, m.pid);
            }
            let me = MemberAddr {
                nodeid: cpg.local_get().unwrap_or(0),
                pid: std::process::id(),
            };
            if c.left.iter().any(|(m, _)| *m == me) {
                println!("We have left the group");
            }
        })),
        totem_confchg: Some(Box::new(move |_, ring, members| {
            println!("{} TotemConfchgCallback: ringid ({ring})", stamp());
            let list: Vec<String> = members.iter().map(|n| n.to_string()).collect();
            println!("active processors {}: {}", members.len(), list.join(" "));
        })),
        flags: MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    }
}

pub(crate) fn chat(attach: &AttachArgs, group: &str) -> Res<()> {
    // `_status` serves `--status-socket` until the chat ends
    let Attached {
        node,
        cpg,
        status: _status,
        ..
    } = attach.open(model())?;
    let cpg = Arc::new(cpg);
    let local = cpg.local_get().map_err(|source| Error::Cpg {
        call: "local_get",
        source,
    })?;
    println!("Local node id is {local:x}");
    let d = cpg.clone();
    let dispatcher = std::thread::spawn(move || d.dispatch(DispatchFlags::Blocking));
    let mut current = Some(group_name(group)?);
    if let Some(g) = &current {
        join_retry(&cpg, g).map_err(|source| Error::Cpg {
            call: "join",
            source,
        })?;
    }
    println!("Type EXIT or /quit to finish; /members, /groups, /leave, /join NAME");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if !chat_line(&cpg, &mut current, line.trim_end())? {
            break;
        }
    }
    let r = cpg.finalize();
    println!(
        "Finalize result is {} (should be 1)",
        r.map_or_else(|e| e.code(), |()| cpg_core::types::CS_OK)
    );
    let _ = dispatcher.join();
    if let Some(n) = node {
        n.stop();
    }
    Ok(())
}

/// `cpgtool groups`: every group and its members through cpgd, in
/// corosync-cpgtool's layout.
pub(crate) fn groups(socket: Option<&Path>) -> Res<()> {
    let cpg = Cpg::connect(socket, ModelV1::default(), None).map_err(|source| Error::Cpg {
        call: "connect (cpgd)",
        source,
    })?;
    let it = cpg
        .iteration_initialize(IterationType::All, None)
        .map_err(|source| Error::Cpg {
            call: "iteration_initialize",
            source,
        })?;
    let mut by_group: std::collections::BTreeMap<Vec<u8>, Vec<(u32, u32)>> = Default::default();
    for d in it {
        by_group
            .entry(d.group.as_bytes().to_vec())
            .or_default()
            .push((d.nodeid, d.pid));
    }
    println!("Group Name\t       PID\t   Node ID");
    for (g, mut members) in by_group {
        members.sort_unstable();
        println!("{}", printable(&g));
        for (node, pid) in members {
            println!("\t\t{pid:>10}\t{node:>10}");
        }
    }
    let _ = cpg.finalize();
    Ok(())
}

/// A group name as corosync-cpgtool shows it: printable bytes as they are,
/// a trailing NUL dropped, anything else as `\xNN`.
fn printable(name: &[u8]) -> String {
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    name.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// One stdin line: a command or a message; `false` to quit.
fn chat_line(cpg: &Cpg, current: &mut Option<GroupName>, line: &str) -> Res<bool> {
    match line {
        "EXIT" | "/quit" => return Ok(false),
        "/members" => show_members(cpg, &current.clone().unwrap_or_default()),
        "/groups" => show_groups(cpg),
        "/leave" => match current {
            Some(g) => match cpg.leave(g) {
                Ok(()) => *current = None,
                Err(e) => println!("leave: {e}"),
            },
            None => println!("not in a group"),
        },
        _ => {
            if let Some(name) = line.strip_prefix("/join ") {
                let g = group_name(name.trim())?;
                match join_retry(cpg, &g) {
                    Ok(()) => *current = Some(g),
                    Err(e) => println!("join: {e}"),
                }
            } else {
                send_text(cpg, line);
            }
        }
    }
    Ok(true)
}

fn show_members(cpg: &Cpg, g: &GroupName) {
    match cpg.membership_get(g) {
        Ok(m) => {
            println!("membership list ({} entries):", m.len());
            for a in m {
                println!("node/pid {}/{}", a.nodeid, a.pid);
            }
        }
        Err(e) => println!("membership_get: {e}"),
    }
}

fn show_groups(cpg: &Cpg) {
    match cpg.iteration_initialize(IterationType::All, None) {
        Ok(it) => {
            for d in it {
                println!(
                    "group '{}' node/pid {}/{}",
                    String::from_utf8_lossy(d.group.as_bytes()),
                    d.nodeid,
                    d.pid
                );
            }
        }
        Err(e) => println!("iteration: {e}"),
    }
}

/// Multicast `line` AGREED with its NUL (as testcpg does), retrying TRY_AGAIN.
fn send_text(cpg: &Cpg, line: &str) {
    let mut data = line.as_bytes().to_vec();
    data.push(0);
    loop {
        match cpg.mcast_joined(Guarantee::Agreed, &[IoSlice::new(&data)]) {
            Ok(()) => break,
            Err(CsError::TryAgain) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                println!("mcast: {e}");
                break;
            }
        }
    }
}

/// Join, retrying while the own leave is still in flight (TRY_AGAIN).
fn join_retry(cpg: &Cpg, g: &GroupName) -> Result<(), CsError> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match cpg.join(g) {
            Err(CsError::TryAgain) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

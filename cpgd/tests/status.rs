//! `cpgtool status --daemon SOCKET` against real cpgd processes, each
//! logging at info into a file: the node, ring, members, links and
//! counters over the IPC's `STATUS` (2 client processes on the daemon
//! asked), counters that move with traffic, `--json` with the right keys;
//! a SIGKILLed cpgd is `Members left: 2` in the survivor's membership line.

mod daemons;
#[path = "../../cpg-std/tests/common/procs.rs"]
mod procs;

use std::path::Path;
use std::time::Instant;

use cpg_std::cpgtool_proto::{Command, Stream};
use daemons::Daemons;
use procs::*;
use serde_json::Value;

fn json_of(sock: &Path) -> Value {
    cpgtool_status_json(&["--daemon", &sock.display().to_string()])
}

fn members(v: &Value) -> Vec<u64> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodeid"].as_u64().unwrap())
        .collect()
}

#[test]
fn status_of_cpgd_with_two_clients_and_the_membership_line_after_a_kill() {
    let mut d = Daemons::start_logged("status", 2);
    let mut p = Procs::start("status-clients", 0, |_| {});
    for c in 1..=2 {
        let at = p.mark();
        let s = d.socket(1).display().to_string();
        p.spawn_node_args(c, &["node", "--daemon", &s]);
        p.wait_ready(at, c);
    }
    p.join_all(&[1, 2], "status");
    // the ring of both daemons is formed once cpgd 1 reports both
    let end = Instant::now() + DEADLINE;
    let v = loop {
        let v = json_of(&d.socket(1));
        if members(&v) == [1, 2] && v["state"] == "operational" {
            break v;
        }
        assert!(Instant::now() < end, "no ring of 2: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(v["source"], "cpgd");
    assert_eq!(v["node_id"], 1);
    assert_eq!(v["cluster_name"], "status");
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    for l in links {
        // one link: no heartbeats; the peer's datagrams are counted
        assert_eq!(l["status"], "not measured", "{l}");
        if l["nodeid"] == 1 {
            assert!(l["frames_rx"].is_null() && l["frames_tx"].is_null(), "{l}");
        } else {
            assert!(l["frames_tx"].as_u64().unwrap() > 0, "{l}");
        }
    }
    for name in cpg_core::ipc::StatusCounters::NAMES {
        status_counter(&v, name);
    }
    // the two clients (and the asking connection) are handles of cpgd 1
    assert!(status_counter(&v, "handles") >= 2, "{v}");
    assert!(status_counter(&v, "ipc_connections") >= 2, "{v}");
    assert!(status_counter(&v, "ipc_accepted") >= 2, "{v}");

    let at = p.mark();
    p.send(1, &Command::Stream(Stream::new(300, 1000)));
    assert_eq!(p.wait_stream_sent(at, 1), 300);
    p.until_status(2, |s| s.delivered >= 300);
    let after = json_of(&d.socket(1));
    for name in [
        "frames_tx",
        "frames_rx",
        "bytes_tx",
        "token_rotations",
        "deliveries",
    ] {
        assert!(
            status_counter(&after, name) > status_counter(&v, name),
            "{name}: {} then {}",
            status_counter(&v, name),
            status_counter(&after, name)
        );
    }
    // the node delivered all 300 (once each, however many handles)
    assert!(status_counter(&after, "deliveries") >= 300, "{after}");
    let s1 = d.socket(1).display().to_string();
    let text = cpgtool_status(&["--daemon", &s1]);
    for want in [
        "Local node ID 1, cluster status (cpgd)",
        "LINK ID 0",
        "stats.ipc_connections (u64) = ",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }

    // SIGKILL cpgd 2: cpgd 1 logs the membership without it
    d.kill(2);
    let end = Instant::now() + DEADLINE;
    while members(&json_of(&d.socket(1))) != [1] {
        assert!(Instant::now() < end, "cpgd 1 never lost node 2");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ring = json_of(&d.socket(1))["ring_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = d.log(1);
    let line =
        format!("[notice] cpg::totem: A new membership ({ring}) was formed. Members left: 2");
    assert!(log.contains(&line), "{line:?} in:\n{log}");
}

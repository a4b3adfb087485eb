//! `cpgtool status --node SOCKET` against real embedded `cpgtool node`
//! processes (each with `--status-socket`), and the operator's log lines
//! on their stderr (`--log-level info`): the ring and its members, every
//! link, counters that move with traffic, `--json` with the right keys,
//! `--watch` reprinting; a SIGKILLed node is `Members left: 3` in the
//! survivors' membership line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::procs::*;
use cpg_std::cpgtool_proto::{Command, Stream};
use cpg_std::status::StatusReport;
use serde_json::Value;

fn socket(id: u32) -> PathBuf {
    std::env::temp_dir().join(format!("cpg-status-{}-{id}.sock", std::process::id()))
}

fn json_of(sock: &Path) -> Value {
    cpgtool_status_json(&["--node", &sock.display().to_string()])
}

#[test]
fn status_of_embedded_nodes_and_the_membership_line_after_a_kill() {
    let pattern = std::env::temp_dir()
        .join(format!("cpg-status-{}-{{id}}.sock", std::process::id()))
        .display()
        .to_string();
    let mut p = Procs::start_logged(
        "status",
        3,
        &["--log-level", "info", "--status-socket", &pattern],
        |_| {},
    );
    let ids = [1, 2, 3];
    p.wait_ring(&ids);
    p.join_all(&ids, "status");

    let v = json_of(&socket(1));
    for key in [
        "source",
        "node_id",
        "cluster_name",
        "ring_id",
        "state",
        "members",
        "links",
        "counters",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert_eq!(v["source"], "node");
    assert_eq!(v["node_id"], 1);
    assert_eq!(v["cluster_name"], "status");
    assert_eq!(v["state"], "operational");
    let members: Vec<u64> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodeid"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [1, 2, 3]);
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), 3, "one link to each node of the node list");
    for l in links {
        // one link: no heartbeats, nothing claimed; each peer's
        // datagrams are counted, this node's own entry has none
        assert_eq!(l["status"], "not measured", "{l}");
        if l["nodeid"] == 1 {
            assert!(l["frames_rx"].is_null() && l["frames_tx"].is_null(), "{l}");
        } else {
            assert!(l["frames_tx"].as_u64().unwrap() > 0, "{l}");
        }
        assert!(l["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
    }
    for name in cpg_core::ipc::StatusCounters::NAMES {
        status_counter(&v, name);
    }
    let report: StatusReport = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        report.ring_id,
        p.status(1).ring,
        "the ring the node reports"
    );

    // traffic moves the counters
    let at = p.mark();
    p.send(1, &Command::Stream(Stream::new(300, 1000)));
    assert_eq!(p.wait_stream_sent(at, 1), 300);
    p.until_status(1, |s| s.delivered >= 300);
    let after = json_of(&socket(1));
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
    assert!(status_counter(&after, "deliveries") >= 300);
    assert!(status_counter(&after, "sends_copy") + status_counter(&after, "sends_zc") > 0);
    assert_eq!(
        status_counter(&after, "ring_changes"),
        status_counter(&v, "ring_changes")
    );

    // the text view
    let s1 = socket(1).display().to_string();
    let text = cpgtool_status(&["--node", &s1]);
    for want in [
        "Local node ID 1, cluster status (node)",
        "state operational",
        "LINK ID 0",
        "nodeid   1:\tlocalhost",
        "nodeid   2:\tnot measured",
        "stats.deliveries (u64) = ",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }

    // --watch reprints (two reports, then we stop it)
    let mut w = std::process::Command::new(cpgtool_exe())
        .args(["status", "--node", &s1, "--json", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(w.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        let r: StatusReport = serde_json::from_str(&line).unwrap();
        assert_eq!(r.node_id, 1);
    }
    w.kill().unwrap();
    w.wait().unwrap();

    // SIGKILL node 3: the survivors log the new membership without it
    const LOST: &str = "[warning] cpg::totem: Token has not been received in ";
    let lost_before: Vec<usize> = [1, 2]
        .map(|id| p.stderr_of(id).matches(LOST).count())
        .into();
    let at = p.mark();
    p.kill(3);
    let mut token_lost = false;
    for id in [1, 2] {
        p.wait_confchg(at, id, |c| c.is_nodedown_of(3));
        let log = p.stderr_of(id);
        // logged when the ring is installed, before its confchg reached us
        let line = log
            .lines()
            .find(|l| l.ends_with(") was formed. Members left: 3"))
            .unwrap_or_else(|| panic!("node {id}: no membership line without 3 in:\n{log}"));
        let ring = line
            .strip_prefix("[notice] cpg::totem: A new membership (")
            .and_then(|r| r.strip_suffix(") was formed. Members left: 3"))
            .unwrap_or_else(|| panic!("node {id}: {line:?}"));
        let (rep, seq) = ring.split_once('.').unwrap();
        assert!(u32::from_str_radix(rep, 16).is_ok() && u64::from_str_radix(seq, 16).is_ok());
        // whoever timed out first says so (the other may follow its JOIN)
        token_lost |= log.matches(LOST).count() > lost_before[id as usize - 1];
    }
    assert!(token_lost, "a survivor logged the token loss");
    let v = json_of(&socket(1));
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert!(status_counter(&v, "ring_changes") > status_counter(&after, "ring_changes"));
}

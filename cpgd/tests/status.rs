//! `cpgtool status --daemon SOCKET` against real cpgd processes, each
//! logging at info into a file: the node, ring, members, links and
//! counters over the IPC's `STATUS` (2 client processes on the daemon
//! asked), counters that move with traffic, `--json` with the right keys;
//! a SIGKILLed cpgd is `Members left: 2` in the survivor's membership line.

#[path = "../../cpg-std/tests/common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

use cpg_std::config::ConfigFile;
use cpg_std::cpgtool_proto::{Command, Stream};
use procs::*;
use serde_json::Value;

struct Daemons {
    dir: PathBuf,
    procs: Vec<Option<Child>>,
}

impl Daemons {
    fn start(name: &str, n: u32) -> Daemons {
        let dir = std::env::temp_dir().join(format!("cpgd-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = ConfigFile::new(name, &local_nodes(n as usize));
        file.state_dir = dir.join("state");
        file.totem.token_ms = Some(2000);
        file.totem.token_coefficient_ms = Some(0);
        let mut d = Daemons {
            dir,
            procs: Vec::new(),
        };
        for id in 1..=n {
            let mut f = file.clone();
            f.ipc.socket = d.socket(id);
            let config = d.dir.join(format!("cpgd-{id}.toml"));
            std::fs::write(&config, f.to_toml()).unwrap();
            let log = std::fs::File::create(d.log_path(id)).unwrap();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_cpgd"))
                .arg("--config")
                .arg(&config)
                .args(["--nodeid", &id.to_string(), "--log-level", "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn cpgd");
            d.procs.push(Some(child));
            let end = Instant::now() + DEADLINE;
            while std::os::unix::net::UnixStream::connect(d.socket(id)).is_err() {
                assert!(Instant::now() < end, "cpgd {id} never listened");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        d
    }

    fn socket(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.sock"))
    }

    fn log_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("cpgd-{id}.log"))
    }

    fn log(&self, id: u32) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    fn kill(&mut self, id: u32) {
        let mut c = self.procs[id as usize - 1].take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(args: &[&str]) -> String {
    let out = std::process::Command::new(cpgtool_exe())
        .arg("status")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cpgtool status");
    assert!(out.status.success(), "cpgtool status {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(sock: &Path) -> Value {
    let s = sock.display().to_string();
    serde_json::from_str(&status(&["--daemon", &s, "--json"])).expect("one JSON object")
}

fn counter(v: &Value, name: &str) -> u64 {
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {v}"))
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
    let mut d = Daemons::start("status", 2);
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
        assert_eq!(l["status"], "not measured", "{l}");
        assert!(l["frames_rx"].is_null() && l["frames_tx"].is_null(), "{l}");
    }
    for name in cpg_core::ipc::StatusCounters::NAMES {
        counter(&v, name);
    }
    // the two clients (and the asking connection) are handles of cpgd 1
    assert!(counter(&v, "handles") >= 2, "{v}");
    assert!(counter(&v, "ipc_connections") >= 2, "{v}");
    assert!(counter(&v, "ipc_accepted") >= 2, "{v}");

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
            counter(&after, name) > counter(&v, name),
            "{name}: {} then {}",
            counter(&v, name),
            counter(&after, name)
        );
    }
    // the node delivered all 300 (once each, however many handles)
    assert!(counter(&after, "deliveries") >= 300, "{after}");
    let s1 = d.socket(1).display().to_string();
    let text = status(&["--daemon", &s1]);
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

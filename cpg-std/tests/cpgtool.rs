//! The `cpgtool` faces a person uses: `demo` end to end, and `chat`
//! behaving like Corosync's testcpg between two processes.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_cpgtool");

#[test]
fn demo_runs_end_to_end_and_every_check_passes() {
    let out = Command::new(EXE)
        .args([
            "demo",
            "--nodes",
            "3",
            "--messages",
            "500",
            "--token-ms",
            "2000",
        ])
        .output()
        .expect("run cpgtool demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "identical sequence on every node",
        "NODEDOWN at the same point of the stream on every survivor: yes",
        "NODEDOWN",
        "result                   OK",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

struct Chat {
    child: std::process::Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Chat {
    fn start(config: &std::path::Path, id: u32, group: &str) -> Chat {
        let mut child = Command::new(EXE)
            .args(["chat", "--config"])
            .arg(config)
            .args(["--nodeid", &id.to_string(), group])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Chat {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }
    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
    /// Wait for a line containing `needle` (searching everything printed so far).
    fn expect(&mut self, needle: &str) -> usize {
        let end = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        loop {
            while i < self.seen.len() {
                if self.seen[i].contains(needle) {
                    return i;
                }
                i += 1;
            }
            let left = end
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no line with {needle:?}; output so far:\n{}",
                        self.seen.join("\n")
                    )
                });
            if let Ok(l) = self.lines.recv_timeout(left) {
                self.seen.push(l);
            }
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn chat_behaves_like_testcpg() {
    let dir = std::env::temp_dir().join(format!("cpgtool-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    let ok = Command::new(EXE)
        .args(["config", "--nodes", "2", "--out"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .status()
        .unwrap();
    assert!(ok.success());
    let mut one = Chat::start(&config, 1, "GROUP");
    let mut two = Chat::start(&config, 2, "GROUP");
    one.expect("Local node id is 1");
    one.expect("nodes in group now 2");
    two.expect("nodes in group now 2");
    two.expect("TotemConfchgCallback");
    one.say("hello there");
    two.expect("DeliverCallback: message (len=12)from node/pid 1/");
    two.expect("'hello there'");
    one.expect("'hello there'"); // the sender receives its own message
    one.say("/members");
    one.expect("membership list (2 entries):");
    one.say("/groups");
    one.expect("group 'GROUP' node/pid 2/");
    one.say("/leave");
    one.expect("We have left the group");
    two.expect("reason: 2 (LEAVE)");
    one.say("/join other");
    one.expect("ConfchgCallback: group 'other'");
    one.say("EXIT");
    one.expect("Finalize result is 1 (should be 1)");
    two.say("EXIT");
    two.expect("Finalize result is 1 (should be 1)");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cpgtool bench --json`: one JSON line per run with the fields
/// benches/compare.sh reads, nothing lost, for 1 and 3 members, copying and
/// zero-copy, and a latency run with percentiles.
#[test]
fn bench_prints_one_json_line_per_run() {
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(EXE)
            .args(["bench", "--seconds", "0.3", "--json"])
            .args(args)
            .output()
            .expect("run cpgtool bench");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "bench {args:?} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(lines.len(), 1, "one JSON line per run: {text}");
        serde_json::from_str(lines[0]).expect("valid JSON")
    };
    for (m, send, g) in [("1", "copy", "agreed"), ("3", "zcb", "safe")] {
        let v = run(&[
            "--members",
            m,
            "--size",
            "1024",
            "--send",
            send,
            "--guarantee",
            g,
        ]);
        assert_eq!(v["system"], "cpg-rs");
        assert_eq!(v["members"].as_u64().unwrap().to_string(), m);
        assert_eq!(v["size"], 1024);
        assert_eq!(v["send"], send);
        assert_eq!(v["guarantee"], g);
        assert_eq!(v["lost"], 0, "{v}");
        assert!(v["delivered"].as_u64().unwrap() > 0, "{v}");
        assert!(v["msgs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["mb_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["latency_us"].is_null());
        // netmtu = "auto": loopback's path MTU (65,536 capped at 65,535)
        let lo = std::net::Ipv4Addr::LOCALHOST;
        let mtu = cpg_uring::path_mtu(lo.into(), (lo, 9).into()).unwrap();
        assert_eq!(v["settings"]["netmtu"], mtu.min(65_535), "{v}");
        assert!(v["settings"]["window_size"].as_u64().is_some());
        assert!(v["settings"]["max_messages"].as_u64().is_some());
        assert!(v.get("error").is_none(), "{v}");
    }
    let v = run(&["--members", "1", "--latency", "--netmtu", "9000"]);
    assert_eq!(v["size"], 64);
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["settings"]["netmtu"], 9000);
    let l = &v["latency_us"];
    let (p50, p99, p999) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["p999"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{v}");
    assert!(l["samples"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn config_from_corosync_writes_our_toml_and_names_what_it_drops() {
    let dir = std::env::temp_dir().join(format!("cpgtool-from-cs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("corosync.conf");
    std::fs::write(
        &conf,
        "totem {\n version: 2\n cluster_name: prod\n token: 5000\n crypto_cipher: aes256\n \
         crypto_hash: sha256\n}\nquorum {\n provider: corosync_votequorum\n}\nnodelist {\n \
         node {\n  nodeid: 1\n  ring0_addr: 10.0.0.1\n  ring1_addr: 10.1.0.1\n }\n node {\n  \
         nodeid: 2\n  ring0_addr: 10.0.0.2\n  ring1_addr: 10.1.0.2\n  knet_x: 1\n }\n}\n",
    )
    .unwrap();
    let out = dir.join("cpg.toml");
    let o = Command::new(EXE)
        .args(["config", "--from-corosync"])
        .arg(&conf)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("quorum"), "{err}");
    assert!(err.contains("knet_x"), "{err}");
    let f = cpg_std::ConfigFile::load(&out).unwrap();
    assert_eq!(f.cluster_name, "prod");
    assert_eq!(f.totem.token_ms, Some(5000));
    assert_eq!(f.nodelist.len(), 2);
    assert_eq!(f.nodelist[1].addr, "10.0.0.2:5405".parse().unwrap());
    // ring1_addr is link 1
    assert_eq!(f.nodelist[1].links, ["10.1.0.2:5405".parse().unwrap()]);
    assert_eq!(f.validate(Some(1)).unwrap().links.extra.len(), 1);
    // a host name is refused with the reason, nothing written
    std::fs::write(&conf, "totem {\n cluster_name: x\n}\nnodelist {\n node {\n  nodeid: 1\n  ring0_addr: node1\n }\n}\n").unwrap();
    let o = Command::new(EXE)
        .args(["config", "--from-corosync"])
        .arg(&conf)
        .arg("--out")
        .arg(dir.join("no.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an IPv4 or IPv6 address"));
    let _ = std::fs::remove_dir_all(dir);
}

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

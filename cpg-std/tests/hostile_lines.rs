//! A `cpgtool node` process fed hostile command lines (security issue
//! "Config and tool edges"): huge sizes, negative and overflowing numbers,
//! wrong types, over-long names and lines, bytes that are not UTF-8, a
//! second stream while one runs. Every line must be answered with a short
//! error and the process must stay alive and keep working; before the fix
//! `{"cmd":"big","size":18446744073709551615}` panicked ("capacity
//! overflow", exit 101) and a non-UTF-8 line ended the command loop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use cpg_std::config::ConfigFile;
use cpg_std::cpgtool_proto::{Event, Reply, Report, LINE_BYTES_MAX};
use cpg_std::CsError;

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dir: std::path::PathBuf,
}

impl Node {
    fn start(name: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("cpg-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = sock.local_addr().unwrap() else {
            unreachable!()
        };
        drop(sock);
        let mut file = ConfigFile::new(name, &[(1, addr)]);
        file.state_dir = dir.join("state");
        file.totem.token_ms = Some(1000);
        let config = dir.join("cluster.toml");
        std::fs::write(&config, file.to_toml()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cpgtool"))
            .args(["node", "--config"])
            .arg(&config)
            .args(["--nodeid", "1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cpgtool node");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut n = Node {
            child,
            stdin,
            lines,
            dir,
        };
        n.next_where(|r| matches!(r, Report::Event(Event::Ready { .. })));
        n
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next stdout line that `f` picks (events in between are skipped).
    fn next_where(&mut self, f: impl Fn(&Report) -> bool) -> (String, Report) {
        loop {
            let line = match self.lines.recv_timeout(WAIT) {
                Ok(l) => l,
                Err(e) => panic!(
                    "no answer ({e}); process status {:?}",
                    self.child.try_wait()
                ),
            };
            let r: Report = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a protocol line ({e}): {line}"));
            if f(&r) {
                return (line, r);
            }
        }
    }

    /// The reply to the line just written (events are skipped).
    fn reply(&mut self) -> (String, Reply) {
        match self.next_where(|r| matches!(r, Report::Reply(_))) {
            (line, Report::Reply(re)) => (line, re),
            _ => unreachable!(),
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `re` refuses the line: an `error` reply, a failed outcome, or
/// a stream that sent nothing and says why.
fn refused(re: &Reply) -> bool {
    match re {
        Reply::Error { .. } => true,
        Reply::Join(o) | Reply::Leave(o) | Reply::Mcast(o) | Reply::Big(o) => {
            !o.ok && o.err.is_some()
        }
        Reply::Members(cpg_std::cpgtool_proto::MembersReply::Failed(o)) => !o.ok,
        Reply::Stream { sent, err, .. } => *sent == 0 && err.is_some(),
        _ => false,
    }
}

#[test]
fn hostile_lines_get_short_errors_and_the_node_stays_alive() {
    let mut n = Node::start("hostile");
    let long = "g".repeat(200);
    let huge = "h".repeat(LINE_BYTES_MAX + 10);
    let lines: Vec<Vec<u8>> = [
        // sizes beyond the max message size (the reported panic first)
        r#"{"cmd":"big","size":18446744073709551615}"#.to_string(),
        r#"{"cmd":"big","size":18446744073709551615,"zc":true}"#.to_string(),
        r#"{"cmd":"big","size":68719476736}"#.to_string(),
        r#"{"cmd":"stream","count":5,"size":18446744073709551615}"#.to_string(),
        r#"{"cmd":"stream","count":5,"size":0,"size_max":18446744073709551615}"#.to_string(),
        r#"{"cmd":"stream","count":5,"size":100,"size_max":10}"#.to_string(),
        // negative, overflowing and fractional numbers
        r#"{"cmd":"big","size":-1}"#.to_string(),
        r#"{"cmd":"big","size":18446744073709551616}"#.to_string(),
        r#"{"cmd":"big","size":1e300}"#.to_string(),
        r#"{"cmd":"stream","count":-5}"#.to_string(),
        r#"{"cmd":"stream","count":1,"rate":-1}"#.to_string(),
        // wrong types and shapes
        r#"{"cmd":"big","size":"huge"}"#.to_string(),
        r#"{"cmd":"mcast","data":12}"#.to_string(),
        r#"{"cmd":"join","group":["a"]}"#.to_string(),
        r#"{"cmd":"stream","zc":"yes"}"#.to_string(),
        r#"{"cmd":"nope"}"#.to_string(),
        r#"{"cmd":7}"#.to_string(),
        r#"{}"#.to_string(),
        "[]".to_string(),
        "null".to_string(),
        String::new(),
        "{".repeat(100_000),
        format!(r#"{{"cmd":"{}"}}"#, "x".repeat(100_000)),
        format!(r#"{{"cmd":"big","size":"{}"}}"#, "9".repeat(100_000)),
        // names too long for a group
        format!(r#"{{"cmd":"join","group":"{long}"}}"#),
        format!(r#"{{"cmd":"leave","group":"{long}"}}"#),
        format!(r#"{{"cmd":"members","group":"{long}"}}"#),
        // a line longer than the protocol reads
        format!(r#"{{"cmd":"mcast","data":"{huge}"}}"#),
        huge.clone(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"cmd\":\"status\"\xc3}".to_vec(),
    ])
    .collect();
    for line in &lines {
        n.write(line);
        let (text, re) = n.reply();
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        assert!(refused(&re), "not refused: {shown} -> {text}");
        assert!(
            text.len() < 1000,
            "{} bytes of reply to {shown}",
            text.len()
        );
        assert!(n.alive(), "process died on {shown}");
    }
    // the big refusal names the size, the limit and TOO_BIG
    n.write(br#"{"cmd":"big","size":18446744073709551615}"#);
    match n.reply().1 {
        Reply::Big(o) => {
            assert_eq!(o.err, Some(CsError::TooBig.code()));
            let why = o.error.unwrap_or_default();
            assert!(
                why.contains("18446744073709551615") && why.contains("67108864"),
                "{why}"
            );
        }
        r => panic!("{r:?}"),
    }
    // a second stream while one runs is refused (it used to start a second
    // thread and reset the first one's stop flag)
    n.write(br#"{"cmd":"join","group":"g"}"#);
    assert!(matches!(n.reply().1, Reply::Join(o) if o.ok));
    n.write(br#"{"cmd":"stream","count":18446744073709551615,"rate":1}"#);
    n.write(br#"{"cmd":"stream","count":1}"#);
    match n.reply().1 {
        Reply::Stream { sent: 0, err, .. } => assert_eq!(err, Some(CsError::Busy.code())),
        r => panic!("second stream not refused: {r:?}"),
    }
    n.write(br#"{"cmd":"stop_stream"}"#);
    let mut stop_replied = false;
    let mut stream_ended = false;
    while !(stop_replied && stream_ended) {
        match n.reply().1 {
            Reply::StopStream(o) => stop_replied = o.ok,
            Reply::Stream { err: None, .. } => stream_ended = true,
            r => panic!("{r:?}"),
        }
    }
    // and the node still works
    n.write(br#"{"cmd":"mcast","data":"still here"}"#);
    assert!(matches!(n.reply().1, Reply::Mcast(o) if o.ok));
    n.write(br#"{"cmd":"status"}"#);
    assert!(matches!(n.reply().1, Reply::Status(_)));
    n.write(br#"{"cmd":"quit"}"#);
    let status = n.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

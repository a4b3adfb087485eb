//! The line protocol between `cpgtool` and its child processes: one JSON
//! object per line. Not part of the API: it lives in the library so that
//! the binary and the integration tests (`cpg-std/tests/common/procs.rs`)
//! share one definition.
//!
//! - [`Command`] (`{"cmd": ...}`): what a `cpgtool node` process reads on
//!   stdin (written by `demo`, the tests in `cpg-std/tests` and
//!   `cpg-netsuite`).
//! - [`Reply`] (`{"re": ...}`) and [`Event`] (`{"ev": ...}`): what `node`
//!   and `bench-member` write on stdout; [`Report`] is either.
//! - What both drivers of child processes (cpgtool's `cluster.rs`, the
//!   tests' `procs.rs`) do alike: read a child's stdout into reports
//!   ([`spawn_reader`]) and match a reply to its command
//!   ([`Command::is_answered_by`], [`Reply::outcome`]).
//!
//! Field names and shapes are the protocol: `cpg-netsuite/src/cluster/`
//! parses the same objects as untyped JSON. [`emit`] writes through
//! [`serde_json::Value`], so keys come out sorted, as they always have.
//! Fields a reader may omit have the defaults the node always applied.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use crate::{CsError, MemberAddr, Reason};
use serde::{Deserialize, Serialize};

/// Write one protocol object as a line and flush.
pub fn emit(out: &mut impl Write, msg: &impl Serialize) {
    // through Value: its map keeps keys sorted, the order readers have seen
    if let Ok(v) = serde_json::to_value(msg) {
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
}

/// The delivery guarantee of a `mcast`, `big` or `stream` command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Guarantee {
    Unordered,
    Fifo,
    #[default]
    Agreed,
    Safe,
}

impl From<Guarantee> for crate::Guarantee {
    fn from(g: Guarantee) -> Self {
        match g {
            Guarantee::Unordered => crate::Guarantee::Unordered,
            Guarantee::Fifo => crate::Guarantee::Fifo,
            Guarantee::Agreed => crate::Guarantee::Agreed,
            Guarantee::Safe => crate::Guarantee::Safe,
        }
    }
}

/// A command on a node process's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Join `group`: replies [`Reply::Join`].
    Join {
        #[serde(default)]
        group: String,
    },
    /// Leave `group`: replies [`Reply::Leave`].
    Leave {
        #[serde(default)]
        group: String,
    },
    /// Multicast the text `data`: replies [`Reply::Mcast`].
    Mcast {
        #[serde(default)]
        data: String,
        #[serde(default)]
        guarantee: Guarantee,
    },
    /// A numbered stream on its own thread: replies [`Reply::Stream`] when done.
    Stream(Stream),
    /// End the running stream: replies [`Reply::StopStream`] (the stream's
    /// own reply follows).
    StopStream,
    /// One numbered message of `size` bytes: replies [`Reply::Big`].
    Big {
        #[serde(default = "big_size")]
        size: usize,
        #[serde(default)]
        zc: bool,
        #[serde(default)]
        guarantee: Guarantee,
    },
    /// The members of `group`: replies [`Reply::Members`].
    Members {
        #[serde(default)]
        group: String,
    },
    /// Counters and ring: replies [`Reply::Status`].
    Status,
    /// Leave every group and exit 0.
    Quit,
}

fn big_size() -> usize {
    1 << 20
}

impl Command {
    /// Whether `re` is the reply to this command: the reply named after it.
    /// `Quit` has none.
    pub fn is_answered_by(&self, re: &Reply) -> bool {
        matches!(
            (self, re),
            (Command::Join { .. }, Reply::Join(_))
                | (Command::Leave { .. }, Reply::Leave(_))
                | (Command::Mcast { .. }, Reply::Mcast(_))
                | (Command::Stream(_), Reply::Stream { .. })
                | (Command::StopStream, Reply::StopStream(_))
                | (Command::Big { .. }, Reply::Big(_))
                | (Command::Members { .. }, Reply::Members(_))
                | (Command::Status, Reply::Status(_))
        )
    }
}

/// `{"cmd":"stream",...}`: `count` numbered messages of `size..=size_max`
/// bytes (spread by a hash of the seq), `rate` per second (0: as fast as
/// flow control allows), zero-copy buffers with `zc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    #[serde(default = "stream_count")]
    pub count: u64,
    #[serde(default = "stream_size")]
    pub size: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_max: Option<usize>,
    #[serde(default)]
    pub zc: bool,
    #[serde(default)]
    pub rate: u64,
    #[serde(default)]
    pub guarantee: Guarantee,
}

fn stream_count() -> u64 {
    1000
}

fn stream_size() -> usize {
    64
}

impl Stream {
    /// `count` messages of `size` bytes, AGREED, unthrottled, copying.
    pub fn new(count: u64, size: usize) -> Stream {
        Stream {
            count,
            size,
            size_max: None,
            zc: false,
            rate: 0,
            guarantee: Guarantee::Agreed,
        }
    }
}

/// `[nodeid, pid]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr(pub u32, pub u32);

impl From<&MemberAddr> for Addr {
    fn from(m: &MemberAddr) -> Addr {
        Addr(m.nodeid, m.pid)
    }
}

/// `[nodeid, pid, reason]` of a member that joined or left (reason: the
/// cs numbering, 1 JOIN .. 5 PROCDOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change(pub u32, pub u32, pub u32);

impl Change {
    pub const NODEDOWN: u32 = Reason::NodeDown as u32;

    pub fn from_pair((m, r): &(MemberAddr, Reason)) -> Change {
        Change(m.nodeid, m.pid, *r as u32)
    }
}

/// A reply to a [`Command`], named after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "re", rename_all = "snake_case")]
pub enum Reply {
    Join(Outcome),
    Leave(Outcome),
    Mcast(Outcome),
    Big(Outcome),
    StopStream(Outcome),
    Members(MembersReply),
    /// The accepted messages of the stream are `first..first + sent`; `err`
    /// is the cs_error that ended it early.
    Stream {
        sent: u64,
        first: u64,
        err: Option<u32>,
    },
    Status(Status),
    /// A line that is not a command.
    Error {
        error: String,
    },
}

impl Reply {
    /// The [`Outcome`] of a reply that is one (`join`, `leave`, `mcast`,
    /// `big`, `stop_stream`).
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Reply::Join(o)
            | Reply::Leave(o)
            | Reply::Mcast(o)
            | Reply::Big(o)
            | Reply::StopStream(o) => Some(o),
            _ => None,
        }
    }
}

/// `ok`, and on failure the cs_error code and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Result<(), CsError>> for Outcome {
    fn from(r: Result<(), CsError>) -> Outcome {
        match r {
            Ok(()) => Outcome {
                ok: true,
                err: None,
                error: None,
            },
            Err(e) => Outcome {
                ok: false,
                err: Some(e.code()),
                error: Some(e.to_string()),
            },
        }
    }
}

/// `members`, or the failed [`Outcome`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MembersReply {
    List { members: Vec<Addr> },
    Failed(Outcome),
}

/// `{"re":"status",...}`: the delivery tally, the ring, transport counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub delivered: u64,
    /// FNV-1a over every delivery (sender, length, body digest), hex.
    pub digest: String,
    pub corrupt: u64,
    pub fifo_violations: u64,
    /// Deliveries per sender nodeid.
    pub per_sender: BTreeMap<String, u64>,
    pub ring: String,
    /// Ring members.
    pub members: Vec<u32>,
    pub transport: Option<TransportCounters>,
}

/// The io_uring driver's send counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounters {
    pub frames_sent: u64,
    pub bytes_copied: u64,
    pub sends_zc_fixed: u64,
    pub sends_write_fixed: u64,
    pub sends_gather: u64,
    pub sends_gather_zc: u64,
}

impl From<cpg_uring::Snapshot> for TransportCounters {
    fn from(c: cpg_uring::Snapshot) -> Self {
        TransportCounters {
            frames_sent: c.frames_sent,
            bytes_copied: c.bytes_copied,
            sends_zc_fixed: c.sends_zc_fixed,
            sends_write_fixed: c.sends_write_fixed,
            sends_gather: c.sends_gather,
            sends_gather_zc: c.sends_gather_zc,
        }
    }
}

/// Something that happened in a node or bench-member process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The node runs (a bench member: and sees every member).
    Ready {
        nodeid: u32,
        pid: u32,
    },
    Confchg(Confchg),
    /// A totem confchg: the ring and its members.
    Totem {
        ring: String,
        members: Vec<u32>,
    },
    Deliver(Deliver),
    /// Bench member: deliveries since `go`.
    Progress {
        delivered: u64,
        secs: f64,
    },
    /// Bench member: the run's result.
    Result(MemberResult),
}

/// A group confchg, with the count and digest of deliveries before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confchg {
    pub group: String,
    pub members: Vec<Addr>,
    pub left: Vec<Change>,
    pub joined: Vec<Change>,
    pub delivered: u64,
    pub digest: String,
}

impl Confchg {
    /// Whether `node` left with NODEDOWN.
    pub fn is_nodedown_of(&self, node: u32) -> bool {
        self.left
            .iter()
            .any(|c| c.0 == node && c.2 == Change::NODEDOWN)
    }
}

/// One delivery (messages of 64 KiB and more, or all with `--verbose`);
/// `origin`, `seq` and `intact` are what a numbered message says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deliver {
    pub from: Addr,
    pub len: usize,
    pub origin: Option<u32>,
    pub seq: Option<u64>,
    pub intact: Option<bool>,
    /// FNV-1a of the body, hex.
    pub digest: String,
    /// Deliveries so far, this one included.
    pub delivered: u64,
}

/// A bench member's result (`{"ev":"result",...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberResult {
    pub nodeid: u32,
    pub pid: u32,
    pub secs: f64,
    pub delivered: u64,
    pub bytes: u64,
    pub accepted: u64,
    pub own_delivered: u64,
    pub lost: u64,
    pub gaps: u64,
    pub dups: u64,
    pub foreign: u64,
    pub drained: bool,
    pub end_sent: bool,
    pub send_error: Option<u32>,
    pub token_rotations: u64,
    /// Latency histogram buckets, (value ns, count).
    pub hist: Vec<(u64, u64)>,
}

/// One stdout line of a child process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Report {
    Reply(Reply),
    Event(Event),
}

/// Read child process `id`'s stdout on a thread of its own: each line is
/// sent to `tx` as a [`Report`] of `id`, a line that is none is printed on
/// stderr. The thread ends with the stream or when `tx`'s receiver is gone.
pub fn spawn_reader(
    id: u32,
    stdout: impl Read + Send + 'static,
    tx: Sender<(u32, Report)>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Report>(&line) {
                Ok(r) => {
                    if tx.send((id, r)).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("cpgtool: node {id}: unreadable line ({e}): {line}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(msg: &impl Serialize) -> String {
        let mut v = Vec::new();
        emit(&mut v, msg);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn commands_parse_with_the_nodes_defaults() {
        let c: Command = serde_json::from_str(r#"{"cmd":"stream","count":5}"#).unwrap();
        let mut s = Stream::new(5, 64);
        assert_eq!(c, Command::Stream(s.clone()));
        let c: Command = serde_json::from_str(
            r#"{"cmd":"stream","count":5,"size":8,"size_max":9,"zc":true,"rate":3,"guarantee":"safe"}"#,
        )
        .unwrap();
        (s.size, s.size_max, s.zc, s.rate, s.guarantee) = (8, Some(9), true, 3, Guarantee::Safe);
        assert_eq!(c, Command::Stream(s));
        let c: Command = serde_json::from_str(r#"{"cmd":"big"}"#).unwrap();
        assert_eq!(
            c,
            Command::Big {
                size: 1 << 20,
                zc: false,
                guarantee: Guarantee::Agreed
            }
        );
        assert_eq!(
            line(&Command::StopStream),
            "{\"cmd\":\"stop_stream\"}\n".to_string()
        );
        assert!(serde_json::from_str::<Command>(r#"{"cmd":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"cmd":"mcast","guarantee":"x"}"#).is_err());
    }

    #[test]
    fn replies_keep_their_shapes() {
        assert_eq!(
            line(&Reply::Join(Ok(()).into())),
            "{\"ok\":true,\"re\":\"join\"}\n"
        );
        assert_eq!(
            line(&Reply::Mcast(Err(CsError::TryAgain).into())),
            format!(
                "{{\"err\":{},\"error\":\"{}\",\"ok\":false,\"re\":\"mcast\"}}\n",
                CsError::TryAgain.code(),
                CsError::TryAgain
            )
        );
        let m = Reply::Members(MembersReply::List {
            members: vec![Addr(1, 7)],
        });
        assert_eq!(line(&m), "{\"members\":[[1,7]],\"re\":\"members\"}\n");
        let s = Reply::Stream {
            sent: 3,
            first: 0,
            err: None,
        };
        assert_eq!(
            line(&s),
            "{\"err\":null,\"first\":0,\"re\":\"stream\",\"sent\":3}\n"
        );
        for r in [m, s, Reply::Leave(Err(CsError::NotExist).into())] {
            let back: Report = serde_json::from_str(&line(&r)).unwrap();
            assert_eq!(back, Report::Reply(r));
        }
    }

    #[test]
    fn a_reply_answers_the_command_named_alike() {
        let join = Command::Join { group: "g".into() };
        let ok = Reply::Join(Ok(()).into());
        assert!(join.is_answered_by(&ok));
        assert!(!join.is_answered_by(&Reply::Leave(Ok(()).into())));
        assert!(!Command::Quit.is_answered_by(&ok));
        assert!(
            Command::Stream(Stream::new(1, 1)).is_answered_by(&Reply::Stream {
                sent: 1,
                first: 0,
                err: None
            })
        );
        assert_eq!(ok.outcome().map(|o| o.ok), Some(true));
        let members = Reply::Members(MembersReply::List { members: vec![] });
        assert!(Command::Members { group: "g".into() }.is_answered_by(&members));
        assert_eq!(members.outcome(), None);
    }

    #[test]
    fn the_reader_turns_lines_into_reports() {
        let (tx, rx) = std::sync::mpsc::channel();
        let text = format!(
            "{}\nnot json\n{}\n",
            serde_json::to_string(&Reply::Join(Ok(()).into())).unwrap(),
            serde_json::to_string(&Event::Ready { nodeid: 1, pid: 2 }).unwrap()
        );
        spawn_reader(7, std::io::Cursor::new(text), tx)
            .join()
            .unwrap();
        let got: Vec<_> = rx.iter().collect();
        assert_eq!(
            got,
            [
                (7, Report::Reply(Reply::Join(Ok(()).into()))),
                (7, Report::Event(Event::Ready { nodeid: 1, pid: 2 }))
            ]
        );
    }

    #[test]
    fn events_round_trip() {
        let c = Event::Confchg(Confchg {
            group: "g".into(),
            members: vec![Addr(1, 2)],
            left: vec![Change(3, 4, Change::NODEDOWN)],
            joined: vec![],
            delivered: 9,
            digest: "00ff".into(),
        });
        assert_eq!(
            line(&c),
            "{\"delivered\":9,\"digest\":\"00ff\",\"ev\":\"confchg\",\"group\":\"g\",\
             \"joined\":[],\"left\":[[3,4,3]],\"members\":[[1,2]]}\n"
        );
        let d = Event::Deliver(Deliver {
            from: Addr(1, 2),
            len: 10,
            origin: None,
            seq: None,
            intact: None,
            digest: "ab".into(),
            delivered: 1,
        });
        for e in [c, d, Event::Ready { nodeid: 1, pid: 2 }] {
            let back: Report = serde_json::from_str(&line(&e)).unwrap();
            assert_eq!(back, Report::Event(e));
        }
    }
}

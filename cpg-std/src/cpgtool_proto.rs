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
//!
//! Field names and shapes are the protocol: `cpg-netsuite/src/cluster/`
//! parses the same objects as untyped JSON. [`emit`] writes through
//! [`serde_json::Value`], so keys come out sorted, as they always have.
//! Fields a reader may omit have the defaults the node always applied.

use std::collections::BTreeMap;
use std::io::Write;

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
    /// Boxed: the largest part of the largest [`Reply`].
    pub transport: Option<Box<TransportCounters>>,
}

/// The io_uring driver's send counters, and its receive drops and frame
/// sealing counters (`cpg_uring::Counters`; absent from older nodes' lines:
/// read as 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportCounters {
    pub frames_sent: u64,
    pub bytes_copied: u64,
    pub sends_zc_fixed: u64,
    pub sends_write_fixed: u64,
    pub sends_gather: u64,
    pub sends_gather_zc: u64,
    /// Frames received and handed to the engine (loopback included).
    #[serde(default)]
    pub frames_received: u64,
    /// Datagrams from an address outside the node list.
    #[serde(default)]
    pub rx_unknown_source: u64,
    /// Datagrams larger than a receive buffer.
    #[serde(default)]
    pub rx_truncated: u64,
    /// Received frames copied to the heap (few receive buffers left).
    #[serde(default)]
    pub rx_copied_frames: u64,
    /// Frames sealed (`crypto` on).
    #[serde(default)]
    pub frames_sealed: u64,
    /// Datagrams opened (tag checked).
    #[serde(default)]
    pub frames_opened: u64,
    /// Dropped: shorter than a seal trailer.
    #[serde(default)]
    pub open_short: u64,
    /// Dropped: another key, cluster name or crypto mode.
    #[serde(default)]
    pub open_foreign_key: u64,
    /// Dropped: the nonce names another node than the source address.
    #[serde(default)]
    pub open_source_mismatch: u64,
    /// Dropped: forged or altered.
    #[serde(default)]
    pub open_bad_tag: u64,
    /// Dropped: seen before, or older than the replay window.
    #[serde(default)]
    pub open_replay: u64,
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
            frames_received: c.frames_received,
            rx_unknown_source: c.rx_unknown_source,
            rx_truncated: c.rx_truncated,
            rx_copied_frames: c.rx_copied_frames,
            frames_sealed: c.frames_sealed,
            frames_opened: c.frames_opened,
            open_short: c.open_short,
            open_foreign_key: c.open_foreign_key,
            open_source_mismatch: c.open_source_mismatch,
            open_bad_tag: c.open_bad_tag,
            open_replay: c.open_replay,
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

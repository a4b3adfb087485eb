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
//!
//! A node reads lines of at most [`LINE_BYTES_MAX`] bytes ([`read_line`])
//! and turns each into a command with [`parse_line`], which checks every
//! argument against the node's [`Limits`] ([`Command::check`]) before
//! anything is allocated or sent. Whatever it refuses is answered, never
//! a panic: an unreadable line with [`Reply::Error`], a command with bad
//! arguments with its own reply kind carrying the cs_error and why
//! ([`Command::refused`]), and any input quoted in an answer is cut to a
//! short excerpt.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use crate::config::excerpt_quotes;
use crate::{CsError, MemberAddr, Reason};
use cpg_core::limits::GROUP_NAME_MAX;
use serde::{Deserialize, Serialize};

/// Longest command line a node reads (1 MiB, newline excluded); a longer
/// one is answered with [`Reply::Error`] and skipped. A `mcast`'s text
/// travels in the line, so larger messages go through `big`.
pub const LINE_BYTES_MAX: usize = 1 << 20;

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

/// What a node lets a command ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The node's `max_message_size`: the largest `big`, `stream` or
    /// `mcast` message.
    pub max_message_size: usize,
}

/// Why a command's arguments were refused: the cs_error it answers and a
/// sentence naming the argument, its value and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: CsError,
    pub why: String,
}

impl Refusal {
    fn new(code: CsError, why: String) -> Refusal {
        Refusal { code, why }
    }
}

impl Outcome {
    /// A failed outcome: `code` and, as its text, the code's and `why`.
    pub fn refused(code: CsError, why: &str) -> Outcome {
        Outcome {
            ok: false,
            err: Some(code.code()),
            error: Some(format!("{code}: {why}")),
        }
    }
}

impl Command {
    /// Check every argument against `limits`, before anything is
    /// allocated or sent: sizes up to the max message size, a size range
    /// the right way round, group names up to 128 bytes. A stream's
    /// `count` and `rate` are not bounded: they allocate nothing, and
    /// `u64::MAX / 4` is how drivers say "until `stop_stream`".
    ///
    /// # Errors
    /// The first argument out of bounds, as a [`Refusal`].
    pub fn check(&self, limits: &Limits) -> Result<(), Refusal> {
        let max = limits.max_message_size;
        let size = |what: &str, n: usize| {
            if n > max {
                Err(Refusal::new(
                    CsError::TooBig,
                    format!("{what} {n} is above max_message_size {max}"),
                ))
            } else {
                Ok(())
            }
        };
        let name = |g: &str| {
            if g.len() > GROUP_NAME_MAX {
                Err(Refusal::new(
                    CsError::NameTooLong,
                    format!(
                        "group name of {} bytes is longer than {GROUP_NAME_MAX}",
                        g.len()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Command::Join { group } | Command::Leave { group } | Command::Members { group } => {
                name(group)
            }
            Command::Mcast { data, .. } => size("data of", data.len()),
            Command::Big { size: n, .. } => size("size", *n),
            Command::Stream(s) => {
                size("size", s.size)?;
                if let Some(m) = s.size_max {
                    size("size_max", m)?;
                    if m < s.size {
                        return Err(Refusal::new(
                            CsError::InvalidParam,
                            format!("size_max {m} is below size {}", s.size),
                        ));
                    }
                }
                Ok(())
            }
            Command::StopStream | Command::Status | Command::Quit => Ok(()),
        }
    }

    /// The reply that refuses this command with `code`, saying `why`: the
    /// command's own reply kind, so a driver waiting for it gets it.
    pub fn refused(&self, code: CsError, why: &str) -> Reply {
        let o = || Outcome::refused(code, why);
        match self {
            Command::Join { .. } => Reply::Join(o()),
            Command::Leave { .. } => Reply::Leave(o()),
            Command::Mcast { .. } => Reply::Mcast(o()),
            Command::Big { .. } => Reply::Big(o()),
            Command::StopStream => Reply::StopStream(o()),
            Command::Members { .. } => Reply::Members(MembersReply::Failed(o())),
            Command::Stream(_) => Reply::Stream {
                sent: 0,
                first: 0,
                err: Some(code.code()),
                error: Some(format!("{code}: {why}")),
            },
            Command::Status | Command::Quit => Reply::Error {
                error: format!("{code}: {why}"),
            },
        }
    }
}

/// One line of a node's stdin as a checked command, or the reply that
/// answers it: [`Reply::Error`] for a line that is not UTF-8 or not a
/// command (the parser's message, its quotes cut to short excerpts), the
/// command's own refusal for arguments out of bounds ([`Command::check`]).
///
/// # Errors
/// The reply to send instead of running the line.
pub fn parse_line(line: &[u8], limits: &Limits) -> Result<Command, Box<Reply>> {
    let error = |error| Box::new(Reply::Error { error });
    let text = std::str::from_utf8(line)
        .map_err(|e| error(format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
    let cmd: Command =
        serde_json::from_str(text).map_err(|e| error(excerpt_quotes(&e.to_string())))?;
    match cmd.check(limits) {
        Ok(()) => Ok(cmd),
        Err(r) => Err(Box::new(cmd.refused(r.code, &r.why))),
    }
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// A line (without its newline) is in the buffer.
    Complete,
    /// A line of `len` bytes, longer than the limit, was skipped; the
    /// buffer holds its first bytes.
    TooLong { len: u64 },
    /// The end of the input.
    End,
}

/// Read one line of at most `max` bytes into `buf` (cleared first),
/// without ever holding more than `max` bytes of it: the rest of a longer
/// line is read and dropped. A last line without a newline counts.
///
/// # Errors
/// The reader's error.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    let mut len: u64 = 0;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if !any {
                return Ok(Line::End);
            }
            break;
        }
        any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len() as u64;
        let used = part.len() + usize::from(newline.is_some());
        r.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if len > max as u64 {
        Ok(Line::TooLong { len })
    } else {
        Ok(Line::Complete)
    }
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
    /// is the cs_error that ended it early (or refused it: then `error`
    /// says why).
    Stream {
        sent: u64,
        first: u64,
        err: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
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
            error: None,
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
                err: None,
                error: None
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
    const LIMITS: Limits = Limits {
        max_message_size: 1 << 20,
    };

    fn error_of(r: Result<Command, Box<Reply>>) -> String {
        match r.map_err(|b| *b) {
            Err(Reply::Error { error }) => error,
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn arguments_out_of_bounds_are_refused_with_the_commands_reply() {
        // Security issue "Config and tool edges": this line panicked the
        // node ("capacity overflow") allocating its message.
        let r =
            parse_line(br#"{"cmd":"big","size":18446744073709551615}"#, &LIMITS).map_err(|b| *b);
        let Err(Reply::Big(o)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(o.err, Some(CsError::TooBig.code()));
        assert!(o
            .error
            .unwrap()
            .contains("18446744073709551615 is above max_message_size 1048576"));
        let cases: [(&[u8], Option<CsError>); 6] = [
            (
                br#"{"cmd":"big","size":1048577,"zc":true}"#,
                Some(CsError::TooBig),
            ),
            (br#"{"cmd":"stream","size":1048577}"#, Some(CsError::TooBig)),
            (
                br#"{"cmd":"stream","size_max":18446744073709551615}"#,
                Some(CsError::TooBig),
            ),
            (
                br#"{"cmd":"stream","size":9,"size_max":8}"#,
                Some(CsError::InvalidParam),
            ),
            (br#"{"cmd":"mcast","data":"x"}"#, None),
            (br#"{"cmd":"join","group":"g"}"#, None),
        ];
        for (line, code) in cases {
            let code = code.map(CsError::code);
            match parse_line(line, &LIMITS).map_err(|b| *b) {
                Ok(_) => assert_eq!(code, None),
                Err(Reply::Stream { err, sent: 0, .. }) => assert_eq!(err, code),
                Err(Reply::Big(o)) => assert_eq!(o.err, code),
                Err(r) => panic!("{r:?}"),
            }
        }
        let long = format!(r#"{{"cmd":"members","group":"{}"}}"#, "n".repeat(129));
        let r = parse_line(long.as_bytes(), &LIMITS).map_err(|b| *b);
        assert!(
            matches!(&r, Err(Reply::Members(MembersReply::Failed(o))) if o.err == Some(CsError::NameTooLong.code())),
            "{r:?}"
        );
        let at_limit = format!(r#"{{"cmd":"big","size":{}}}"#, LIMITS.max_message_size);
        assert!(parse_line(at_limit.as_bytes(), &LIMITS).is_ok());
    }

    #[test]
    fn unreadable_lines_are_errors_quoting_short_excerpts() {
        let e = error_of(parse_line(&[0xff, b'{', b'}'], &LIMITS));
        assert!(e.contains("not UTF-8"), "{e}");
        for line in [
            format!(r#"{{"cmd":"{}"}}"#, "v".repeat(100_000)),
            format!(r#"{{"cmd":"big","size":"{}"}}"#, "v".repeat(100_000)),
            format!(r#"{{"cmd":"big","size":"\"{}"}}"#, "v\\\"".repeat(50_000)),
        ] {
            let e = error_of(parse_line(line.as_bytes(), &LIMITS));
            assert!(e.len() < 500 && !e.contains(&"v".repeat(81)), "{e}");
        }
        for line in ["", "null", "[]", "{}", r#"{"cmd":"big","size":-1}"#, "{{{{"] {
            error_of(parse_line(line.as_bytes(), &LIMITS));
        }
    }

    #[test]
    fn read_line_never_holds_more_than_the_limit() {
        let input = b"short\nabcdefghij\n\nlast".to_vec();
        let mut r = std::io::BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, 5).unwrap();
            assert!(buf.len() <= 5);
            if l == Line::End {
                break;
            }
            got.push((l, String::from_utf8(buf.clone()).unwrap()));
        }
        assert_eq!(
            got,
            [
                (Line::Complete, "short".to_string()),
                (Line::TooLong { len: 10 }, "abcde".to_string()),
                (Line::Complete, String::new()),
                (Line::Complete, "last".to_string()),
            ]
        );
    }

    /// Pieces random command lines are made of: keys, values, numbers at
    /// and around every boundary, wrong types.
    fn line_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let cmd = prop_oneof![
            Just("join"),
            Just("leave"),
            Just("mcast"),
            Just("stream"),
            Just("stop_stream"),
            Just("big"),
            Just("members"),
            Just("status"),
            Just("nope"),
        ];
        let key = prop_oneof![
            Just("size"),
            Just("size_max"),
            Just("count"),
            Just("rate"),
            Just("zc"),
            Just("guarantee"),
            Just("group"),
            Just("data"),
            Just("cmd"),
        ];
        let value = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_string()),
            Just("1e300".to_string()),
            Just("-0.5".to_string()),
            (0usize..3).prop_map(|k| (LIMITS.max_message_size + k - 1).to_string()),
            "[a-z\\\\\"]{0,200}".prop_map(|t| format!("\"{t}\"")),
            Just("true".to_string()),
            Just("null".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("\"safe\"".to_string()),
        ];
        (cmd, proptest::collection::vec((key, value), 0..5)).prop_map(|(cmd, fields)| {
            let mut line = format!(r#"{{"cmd":"{cmd}""#);
            for (k, v) in fields {
                line.push_str(&format!(r#","{k}":{v}"#));
            }
            line.push('}');
            line
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_are_answered_never_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Err(reply) = parse_line(&bytes, &LIMITS) {
                proptest::prop_assert!(line(&reply).len() < 1000);
            }
        }

        #[test]
        fn command_like_lines_are_checked_or_answered(text in line_strategy()) {
            match parse_line(text.as_bytes(), &LIMITS) {
                // whatever parses is within the limits
                Ok(cmd) => {
                    proptest::prop_assert_eq!(cmd.check(&LIMITS), Ok(()));
                    if let Command::Big { size, .. } = cmd {
                        proptest::prop_assert!(size <= LIMITS.max_message_size);
                    }
                    if let Command::Stream(s) = cmd {
                        proptest::prop_assert!(s.size <= s.size_max.unwrap_or(s.size));
                        proptest::prop_assert!(s.size_max.unwrap_or(s.size) <= LIMITS.max_message_size);
                    }
                }
                Err(reply) => {
                    let l = line(&reply);
                    proptest::prop_assert!(l.len() < 1000, "{}", l);
                    let back: Report = serde_json::from_str(&l).unwrap();
                    proptest::prop_assert_eq!(back, Report::Reply(*reply));
                }
            }
        }
    }
}

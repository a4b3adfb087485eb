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

/// `{"re":"status",...}`: the delivery tally, the ring, transport and
/// handle-layer counters.
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
    /// The node's handle-layer counters ([`crate::NodeStats`]): evictions
    /// and the slow-consumer policy at work. Absent from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles: Option<Box<HandleCounters>>,
}

/// [`crate::NodeStats`] on the wire (durations in microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleCounters {
    pub handles: usize,
    pub evictions: u64,
    pub evictions_stalled: u64,
    pub queue_peak_bytes: usize,
    pub backpressure_waits: u64,
    pub backpressure_wait_us: u64,
    pub backpressure_budget_spent: u64,
    /// Absent from older nodes: read as 0.
    #[serde(default)]
    pub solo_visits: u64,
}

impl From<crate::NodeStats> for HandleCounters {
    fn from(s: crate::NodeStats) -> Self {
        HandleCounters {
            handles: s.handles,
            evictions: s.evictions,
            evictions_stalled: s.evictions_stalled,
            queue_peak_bytes: s.queue_peak_bytes,
            backpressure_waits: s.backpressure_waits,
            backpressure_wait_us: u64::try_from(s.backpressure_wait.as_micros())
                .unwrap_or(u64::MAX),
            backpressure_budget_spent: s.backpressure_budget_spent,
            solo_visits: s.solo_visits,
        }
    }
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
    /// Dropped: sealed for another node.
    #[serde(default)]
    pub open_misdirected: u64,
    /// Dropped: forged or altered.
    #[serde(default)]
    pub open_bad_tag: u64,
    /// Dropped: seen before, or older than the replay window.
    #[serde(default)]
    pub open_replay: u64,
    /// GSO sends: runs of frames to one peer in one send (`UDP_SEGMENT`).
    #[serde(default)]
    pub gso_sends: u64,
    /// Datagrams those GSO sends carried.
    #[serde(default)]
    pub gso_datagrams: u64,
    /// Receives the kernel coalesced (UDP GRO: more than one datagram).
    #[serde(default)]
    pub gro_receives: u64,
    /// Datagrams those coalesced receives carried.
    #[serde(default)]
    pub gro_segments: u64,
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
            open_misdirected: c.open_misdirected,
            open_bad_tag: c.open_bad_tag,
            open_replay: c.open_replay,
            gso_sends: c.gso_sends,
            gso_datagrams: c.gso_datagrams,
            gro_receives: c.gro_receives,
            gro_segments: c.gro_segments,
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
    /// Frames this node's transport sent during the window (one per
    /// destination), and how many of them left in UDP GSO sends, in how
    /// many such sends (0 without the io_uring transport).
    #[serde(default)]
    pub frames_sent: u64,
    #[serde(default)]
    pub gso_datagrams: u64,
    #[serde(default)]
    pub gso_sends: u64,
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
mod tests;

//! What the node processes said: every JSON line of every process, stamped
//! when the suite read it, in one shared log. The checker reads it; the
//! runner waits on it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A CPG member: (nodeid, pid). A restarted node is a new member.
pub type Member = (u32, u32);

/// One line of a node process, typed where the checker needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The process is up.
    Ready,
    /// A delivery.
    Deliver {
        /// Sender.
        from: Member,
        /// Length in bytes.
        len: u64,
        /// The numbered message's own nodeid, seq and pattern check (None
        /// for a message that is not numbered, e.g. a marker).
        numbered: Option<(u32, u64, bool)>,
        /// FNV-1a of the bytes.
        digest: String,
    },
    /// A CPG configuration change of a group.
    Confchg {
        /// Group.
        group: String,
        /// Members after the change.
        members: Vec<Member>,
        /// (nodeid, pid, reason) that left.
        left: Vec<(u32, u32, u32)>,
        /// (nodeid, pid, reason) that joined.
        joined: Vec<(u32, u32, u32)>,
    },
    /// A Totem configuration (ring) change.
    Totem {
        /// Ring id as printed (`rep.seq`).
        ring: String,
        /// Node ids.
        members: Vec<u32>,
    },
    /// A reply to a command (`{"re": ...}`).
    Reply(Value),
    /// Anything else.
    Other(Value),
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64().map_or(0, |x| x as u32)
}

fn member(v: &Value) -> Member {
    (u32_of(&v[0]), u32_of(&v[1]))
}

fn triples(v: &Value) -> Vec<(u32, u32, u32)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| (u32_of(&e[0]), u32_of(&e[1]), u32_of(&e[2])))
                .collect()
        })
        .unwrap_or_default()
}

impl Event {
    /// Type one JSON line of `cpgtool node`.
    pub fn parse(v: Value) -> Event {
        if v.get("re").is_some() {
            return Event::Reply(v);
        }
        match v["ev"].as_str() {
            Some("ready") => Event::Ready,
            Some("deliver") => Event::Deliver {
                from: member(&v["from"]),
                len: v["len"].as_u64().unwrap_or(0),
                numbered: match (
                    v["origin"].as_u64(),
                    v["seq"].as_u64(),
                    v["intact"].as_bool(),
                ) {
                    (Some(o), Some(s), Some(i)) => Some((o as u32, s, i)),
                    _ => None,
                },
                digest: v["digest"].as_str().unwrap_or("").to_string(),
            },
            Some("confchg") => Event::Confchg {
                group: v["group"].as_str().unwrap_or("").to_string(),
                members: v["members"]
                    .as_array()
                    .map(|a| a.iter().map(member).collect())
                    .unwrap_or_default(),
                left: triples(&v["left"]),
                joined: triples(&v["joined"]),
            },
            Some("totem") => Event::Totem {
                ring: v["ring"].as_str().unwrap_or("").to_string(),
                members: v["members"]
                    .as_array()
                    .map(|a| a.iter().map(u32_of).collect())
                    .unwrap_or_default(),
            },
            _ => Event::Other(v),
        }
    }

    /// A configuration event (CPG confchg or Totem ring change)?
    pub fn is_config(&self) -> bool {
        matches!(self, Event::Confchg { .. } | Event::Totem { .. })
    }
}

/// One line, stamped.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the suite read it, from the log's start.
    pub at: Duration,
    /// The process that said it.
    pub who: Member,
    /// What it said.
    pub ev: Event,
    /// The line as read.
    pub raw: Value,
}

impl Record {
    /// Parse `node pid {json}` lines (the format [`Log::dump`] writes),
    /// stamping them 1 ms apart: hand-written logs for the checker's tests.
    pub fn parse_lines(text: &str) -> Vec<Record> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, l)| {
                let mut parts = l.splitn(3, ' ');
                let node = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                let pid = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                let json = parts.next().unwrap_or("{}");
                let json = json.split(" # ").next().unwrap_or(json);
                let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                Record {
                    at: Duration::from_millis(i as u64),
                    who: (node, pid),
                    ev: Event::parse(v.clone()),
                    raw: v,
                }
            })
            .collect()
    }
}

/// The shared log: appended by the reader threads, read by the runner.
#[derive(Clone)]
pub struct Log {
    inner: Arc<(Mutex<Vec<Record>>, Condvar)>,
    start: Instant,
}

impl Log {
    /// An empty log whose clock starts now.
    pub fn new() -> Log {
        Log {
            inner: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
            start: Instant::now(),
        }
    }

    /// Time since the log started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Append a line of `who`, stamped now.
    pub fn push(&self, who: Member, v: Value) {
        let r = Record {
            at: self.now(),
            who,
            ev: Event::parse(v.clone()),
            raw: v,
        };
        self.lock().push(r);
        self.inner.1.notify_all();
    }

    /// The records (locked while the guard lives).
    pub fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        crate::lock(&self.inner.0)
    }

    /// A copy of every record.
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Wait until `f` holds over the records or `timeout` passes; whether it held.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&[Record]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if f(&g) {
                return true;
            }
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return false;
            };
            // the condvar wakes on every line; the cap bounds a missed wake-up
            let (g2, _) = self
                .inner
                .1
                .wait_timeout(g, left.min(Duration::from_millis(50)))
                .unwrap_or_else(PoisonError::into_inner);
            g = g2;
        }
    }

    /// Write the log as `node pid {json}` lines (what [`Record::parse_lines`] reads).
    ///
    /// # Errors
    /// The file could not be written.
    pub fn dump(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in self.lock().iter() {
            writeln!(f, "{} {} {} # at {:?}", r.who.0, r.who.1, r.raw, r.at)?;
        }
        Ok(())
    }
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

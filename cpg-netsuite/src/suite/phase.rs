//! The fault phases and the two profiles that size them.

use std::fmt;
use std::time::Duration;

use crate::net::StageParams;

/// One fault phase: a fresh cluster under a rate-limited checksummed
/// stream from every node, the fault, the heal, one configuration, a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Random loss of datagrams on every node (iptables `statistic`).
    Loss,
    /// Delay with jitter (stage).
    Delay,
    /// Reordering: a fraction held back so later datagrams overtake (stage).
    Reorder,
    /// Duplication (iptables `TEE`).
    Duplicate,
    /// Control frames corrupted past the UDP checksum (stage).
    Corrupt,
    /// The last node cut off both ways (5 nodes: the last two).
    Partition,
    /// One link works one way only: the last node's datagrams to node 1
    /// are dropped, node 1's to it arrive (issue 8, bug 3).
    OneWay,
    /// The last node's outgoing datagrams all dropped; it still hears the
    /// others.
    Mute,
    /// Every node drops received IP fragments; a membership change (the
    /// last node partitioned for a while, under loss, so the survivors'
    /// recovery has messages to re-send) happens, and the ring must re-form
    /// and deliver with fragments still dropped (issue 8, bug 1).
    Fragments,
    /// SIGSTOP the last node past the failure timeout, then SIGCONT.
    Pause,
    /// SIGKILL the last node, restart it with the same nodeid and state.
    Kill,
    /// Every node in turn quits and restarts.
    Rolling,
}

impl Phase {
    /// Every phase, in the order a profile runs them.
    pub const ALL: [Phase; 12] = [
        Phase::Loss,
        Phase::Delay,
        Phase::Reorder,
        Phase::Duplicate,
        Phase::Corrupt,
        Phase::Partition,
        Phase::OneWay,
        Phase::Mute,
        Phase::Fragments,
        Phase::Pause,
        Phase::Kill,
        Phase::Rolling,
    ];

    /// Short name (command line, table).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Loss => "loss",
            Phase::Delay => "delay",
            Phase::Reorder => "reorder",
            Phase::Duplicate => "duplicate",
            Phase::Corrupt => "corrupt",
            Phase::Partition => "partition",
            Phase::OneWay => "one-way",
            Phase::Mute => "mute",
            Phase::Fragments => "fragments",
            Phase::Pause => "sigstop",
            Phase::Kill => "sigkill",
            Phase::Rolling => "rolling",
        }
    }

    /// The phase called `name`.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long and how hard: the short profile runs in `cargo test`, the long
/// one from the binary.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Name.
    pub name: &'static str,
    /// How long a network fault lasts.
    pub fault: Duration,
    /// Stream before the fault and after the heal.
    pub steady: Duration,
    /// Token timeout (failure detection = token + consensus = 2.2 × token).
    pub token_ms: u64,
    /// Added to token + consensus for the liveness bound (scheduling on a
    /// loaded 2-core machine, process start-up for restarts).
    pub margin: Duration,
    /// Messages per second per node.
    pub rate: u32,
    /// Message sizes (a spread, so frames fill and messages fragment).
    pub size_min: u32,
    /// See `size_min`.
    pub size_max: u32,
    /// Loss percentage.
    pub loss_percent: u32,
    /// Duplication percentage.
    pub dup_percent: u32,
    /// The delay phase's stage.
    pub delay: StageParams,
    /// The reorder phase's stage.
    pub reorder: StageParams,
    /// The corrupt phase's stage.
    pub corrupt: StageParams,
}

impl Profile {
    /// A few seconds per phase; `cargo test` runs it at 3 nodes.
    pub const SHORT: Profile = Profile {
        name: "short",
        fault: Duration::from_secs(4),
        steady: Duration::from_secs(1),
        token_ms: 1000,
        margin: Duration::from_secs(3),
        rate: 200,
        size_min: 64,
        size_max: 3000,
        loss_percent: 10,
        dup_percent: 20,
        delay: StageParams {
            delay_ms: 20,
            jitter_ms: 30,
            reorder_percent: 0,
            reorder_ms: 0,
            corrupt_percent: 0,
        },
        reorder: StageParams {
            delay_ms: 1,
            jitter_ms: 2,
            reorder_percent: 25,
            reorder_ms: 15,
            corrupt_percent: 0,
        },
        corrupt: StageParams {
            delay_ms: 0,
            jitter_ms: 0,
            reorder_percent: 0,
            reorder_ms: 0,
            corrupt_percent: 10,
        },
    };

    /// Longer faults, more load, harsher settings.
    pub const LONG: Profile = Profile {
        name: "long",
        fault: Duration::from_secs(20),
        steady: Duration::from_secs(3),
        token_ms: 1000,
        margin: Duration::from_secs(3),
        rate: 300,
        size_min: 64,
        size_max: 6000,
        loss_percent: 20,
        dup_percent: 30,
        delay: StageParams {
            delay_ms: 40,
            jitter_ms: 60,
            reorder_percent: 0,
            reorder_ms: 0,
            corrupt_percent: 0,
        },
        reorder: StageParams {
            delay_ms: 1,
            jitter_ms: 5,
            reorder_percent: 40,
            reorder_ms: 30,
            corrupt_percent: 0,
        },
        corrupt: StageParams {
            delay_ms: 0,
            jitter_ms: 0,
            reorder_percent: 0,
            reorder_ms: 0,
            corrupt_percent: 20,
        },
    };

    /// The profile called `name`.
    pub fn from_name(name: &str) -> Option<Profile> {
        [Profile::SHORT, Profile::LONG]
            .into_iter()
            .find(|p| p.name == name)
    }

    /// Token + consensus (1.2 × token) + margin: longer than this from a
    /// heal (or a failure) to one configuration is a stall.
    pub fn bound(&self) -> Duration {
        Duration::from_millis(self.token_ms * 22 / 10) + self.margin
    }
}

//! The handle queue cap and the slow-consumer policy: how large a
//! handle's queue of undispatched events may grow (`handle_queue_bytes`,
//! never less than two maximum-size messages and 64 KiB), and what is done
//! about a handle that dispatches too slowly (`slow_consumer`). The policy
//! itself is `docs/ARCHITECTURE.md`, Policies; the handle layer carries it
//! out (`crate::handles::route` evicts at the cap, `crate::handles::throttle`
//! is the opt-in throttle).

use cpg_core::limits;
use serde::{Deserialize, Serialize};

use super::{ConfigError, NodeConfig};

/// Smallest per-handle queue cap accepted: what the smallest
/// `max_message_size` (1 byte) needs, [`handle_queue_bytes_min`]`(1)`.
pub const HANDLE_QUEUE_BYTES_MIN: usize = handle_queue_bytes_min(1);
/// Largest per-handle queue cap accepted (64 GiB).
pub const HANDLE_QUEUE_BYTES_MAX: usize = 64 << 30;
/// What a handle's queue cap holds beyond two maximum-size messages: room
/// for the small events (and each event's fixed cost) around them.
pub const HANDLE_QUEUE_SLACK: usize = 64 * 1024;
/// Default per-handle queue cap: [`handle_queue_bytes_min`] of the default
/// `max_message_size` (128 MiB + 64 KiB).
pub const HANDLE_QUEUE_BYTES_DEFAULT: usize =
    handle_queue_bytes_min(limits::MAX_MESSAGE_SIZE_DEFAULT);

/// The smallest queue cap that works with `max_message_size`: two
/// maximum-size messages plus [`HANDLE_QUEUE_SLACK`], so a handle holding
/// small undispatched events still takes a maximum-size message (its own
/// included) without being evicted. Also what `handle_queue_bytes = 0`
/// (the default) stands for.
pub const fn handle_queue_bytes_min(max_message_size: usize) -> usize {
    max_message_size
        .saturating_mul(2)
        .saturating_add(HANDLE_QUEUE_SLACK)
}

/// What a node does about a local handle that dispatches more slowly than
/// the ring delivers to it (`slow_consumer = "evict"` or `"throttle"`).
/// Either way a handle's queue is capped (`handle_queue_bytes`) and a
/// handle that falls a full cap behind is evicted; the policies differ in
/// whether the ring waits for it first. See `docs/ARCHITECTURE.md`,
/// Policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// The ring never waits for a local consumer: a handle that falls a
    /// full queue cap behind is evicted at once (LIBRARY on its next call,
    /// PROCDOWN for the others). The default.
    #[default]
    Evict,
    /// While a handle holds more than half its cap, the transport waits
    /// for it to dispatch before handing the engine more frames, at most
    /// [`NodeConfig::throttle_budget`] per token rotation; a backlogged
    /// handle that dispatches nothing for [`NodeConfig::throttle_stall_limit`]
    /// is evicted, and one that reaches its cap is evicted as with `Evict`.
    Throttle,
}

/// `cap` holds two messages of `max_message_size` and the slack.
pub(super) fn check_queue(cap: usize, max_message_size: usize) -> Result<(), ConfigError> {
    let min = handle_queue_bytes_min(max_message_size);
    if cap < min {
        return Err(ConfigError::QueueTooSmall {
            handle_queue_bytes: cap,
            max_message_size,
            min,
        });
    }
    Ok(())
}

impl NodeConfig {
    /// The queue cap holds two maximum-size messages and the slack (what
    /// [`super::ConfigFile::validate`] checks; [`crate::Node`] checks it again at
    /// start, for a config changed after validation).
    ///
    /// # Errors
    /// [`ConfigError::QueueTooSmall`], naming both settings.
    pub fn check_queue(&self) -> Result<(), ConfigError> {
        check_queue(self.handle_queue_bytes, self.engine.max_message_size)
    }

    /// With [`SlowConsumer::Throttle`]: the longest this node's transport
    /// waits for backlogged handles per token rotation, min(token timeout
    /// / (4 × nodes), 100 ms). Even if every node waits its whole budget, a
    /// rotation grows by at most a quarter of the token timeout.
    pub fn throttle_budget(&self) -> std::time::Duration {
        let nodes = self.engine.nodes.len().max(1) as u64;
        let ns = self.engine.token_effective().0 / (4 * nodes);
        std::time::Duration::from_nanos(ns.min(100_000_000))
    }

    /// With [`SlowConsumer::Throttle`]: how long a handle holding more
    /// than half its cap may go without dispatching a single event before
    /// it is evicted: the token timeout (how long the ring waits for a
    /// silent node).
    pub fn throttle_stall_limit(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.engine.token_effective().0)
    }
}

//! The handle queue cap: how large a handle's queue of undispatched
//! events may grow (`handle_queue_bytes`, never less than two maximum-size
//! messages and 64 KiB). The handle layer evicts a handle whose queue
//! would go over it (`crate::handles::route`).

use cpg_core::limits;

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
    /// [`super::ConfigFile::validate`] checks; [`crate::Node`] checks it
    /// again at start, for a config changed after validation).
    ///
    /// # Errors
    /// [`ConfigError::QueueTooSmall`], naming both settings.
    pub fn check_queue(&self) -> Result<(), ConfigError> {
        check_queue(self.handle_queue_bytes, self.engine.max_message_size)
    }
}

//! The range of every numeric setting (the README's "Configuration" table).
//!
//! Timers take 30 ms (Corosync's `MINIMUM_TIMEOUT`; `hold` 14 ms) to one
//! hour: Corosync has no upper bound but its 32-bit milliseconds; an hour
//! is far above any useful token (Corosync's default is 3 s, clouds use
//! 30 s) and keeps every derived timer exact. The flow-control counts stay
//! inside the engine's receive window; the byte sizes inside what one
//! host can hold.

use std::fmt;

use cpg_core::limits;

use super::{ConfigError, HANDLE_QUEUE_BYTES_MAX, HANDLE_QUEUE_BYTES_MIN, ZC_HEADROOM};

/// The allowed values of one numeric setting, checked before the value is
/// used in any computation. `Display` shows the range as errors and the
/// README quote it: `30..=3600000 ms`, `0 (derived) or 14..=3600000 ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The setting as written in the file (`totem.token_ms`).
    pub field: &'static str,
    /// Smallest value.
    pub min: u64,
    /// Largest value.
    pub max: u64,
    /// `"ms"`, `"bytes"` or `""` (a count).
    pub unit: &'static str,
    /// When 0 is allowed below `min`: what it stands for.
    pub zero: Option<&'static str>,
}

impl Range {
    /// `value` if it lies in the range.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the setting, the value and the range.
    pub fn check(&self, value: u64) -> Result<u64, ConfigError> {
        if (self.min..=self.max).contains(&value) || (value == 0 && self.zero.is_some()) {
            Ok(value)
        } else {
            Err(ConfigError::OutOfRange {
                value,
                range: *self,
            })
        }
    }

    /// [`Range::check`] for a `usize` setting.
    ///
    /// # Errors
    /// As [`Range::check`].
    pub fn check_usize(&self, value: usize) -> Result<usize, ConfigError> {
        self.check(u64::try_from(value).unwrap_or(u64::MAX))
            .map(|_| value)
    }

    /// [`Range::check`] for a `u32` setting.
    ///
    /// # Errors
    /// As [`Range::check`].
    pub fn check_u32(&self, value: u32) -> Result<u32, ConfigError> {
        self.check(u64::from(value)).map(|_| value)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(zero) = self.zero {
            write!(f, "0 ({zero}) or ")?;
        }
        write!(f, "{}..={}", self.min, self.max)?;
        if !self.unit.is_empty() {
            write!(f, " {}", self.unit)?;
        }
        Ok(())
    }
}

const fn r(field: &'static str, min: u64, max: u64, unit: &'static str) -> Range {
    Range {
        field,
        min,
        max,
        unit,
        zero: None,
    }
}
const fn derived(field: &'static str, min: u64, zero: &'static str) -> Range {
    Range {
        field,
        min,
        max: TIMER_MS_MAX,
        unit: "ms",
        zero: Some(zero),
    }
}

/// Longest timer setting in milliseconds (one hour, `limits::TIMER_MAX`).
pub const TIMER_MS_MAX: u64 = limits::TIMER_MAX.as_millis();
/// Shortest timeout in milliseconds (Corosync's `MINIMUM_TIMEOUT`).
pub const TIMER_MS_MIN: u64 = 30;

/// `netmtu`: the whole IP packet.
pub const NETMTU: Range = r(
    "netmtu",
    limits::NETMTU_MIN as u64,
    limits::NETMTU_MAX as u64,
    "bytes",
);
/// `max_message_size`: up to 1 GiB.
pub const MAX_MESSAGE_SIZE: Range = r("max_message_size", 1, 1 << 30, "bytes");
/// `handle_queue_bytes`: 64 KiB + 2 bytes to 64 GiB, and at least
/// `2 × max_message_size + 64 KiB` (checked once both are in range); 0
/// derives it.
pub const HANDLE_QUEUE_BYTES: Range = Range {
    field: "handle_queue_bytes",
    min: HANDLE_QUEUE_BYTES_MIN as u64,
    max: HANDLE_QUEUE_BYTES_MAX as u64,
    unit: "bytes",
    zero: Some("2 × max_message_size + 64 KiB"),
};
/// `zc_copy_threshold`: at most the smallest "largest zero-copy buffer" (1 MiB).
pub const ZC_COPY_THRESHOLD: Range = r("zc_copy_threshold", 0, 1 << 20, "bytes");
/// `totem.token_ms`.
pub const TOKEN_MS: Range = r("totem.token_ms", TIMER_MS_MIN, TIMER_MS_MAX, "ms");
/// `totem.token_coefficient_ms` (0: the token does not grow with the node count).
pub const TOKEN_COEFFICIENT_MS: Range = r("totem.token_coefficient_ms", 0, TIMER_MS_MAX, "ms");
/// `totem.token_retransmits_before_loss_const`.
pub const TOKEN_RETRANSMITS: Range = r("totem.token_retransmits_before_loss_const", 1, 100, "");
/// `totem.join_ms`.
pub const JOIN_MS: Range = r("totem.join_ms", TIMER_MS_MIN, TIMER_MS_MAX, "ms");
/// `totem.consensus_ms` (0: 1.2 × the token timeout).
pub const CONSENSUS_MS: Range = derived("totem.consensus_ms", TIMER_MS_MIN, "1.2 × token");
/// `totem.merge_ms`.
pub const MERGE_MS: Range = r("totem.merge_ms", TIMER_MS_MIN, TIMER_MS_MAX, "ms");
/// `totem.hold_ms` (0: derived from the token retransmit timeout).
pub const HOLD_MS: Range = derived("totem.hold_ms", 14, "derived from token");
/// `totem.fail_recv_const`.
pub const FAIL_RECV_CONST: Range = r("totem.fail_recv_const", 1, 1_000_000, "");
/// `totem.seqno_unchanged_const`.
pub const SEQNO_UNCHANGED_CONST: Range = r("totem.seqno_unchanged_const", 1, 1_000_000, "");
/// `totem.max_messages` (also at most `window_size`).
pub const MAX_MESSAGES: Range = r(
    "totem.max_messages",
    1,
    (limits::RECV_WINDOW / 4) as u64,
    "",
);
/// `totem.window_size`: a quarter of the receive window.
pub const WINDOW_SIZE: Range = r("totem.window_size", 1, (limits::RECV_WINDOW / 4) as u64, "");
/// `totem.miss_count_const`.
pub const MISS_COUNT_CONST: Range = r("totem.miss_count_const", 1, 1000, "");
/// `totem.send_queue_frames`.
pub const SEND_QUEUE_FRAMES: Range = r("totem.send_queue_frames", 1, 1 << 20, "");
/// `pool.headroom`.
pub const POOL_HEADROOM: Range = r("pool.headroom", ZC_HEADROOM as u64, 64 * 1024, "bytes");
/// `pool.classes[].slot_size`: up to 2 GiB.
pub const POOL_SLOT_SIZE: Range = r("pool.classes.slot_size", 1, 2 << 30, "bytes");
/// `pool.classes[].count`.
pub const POOL_SLOT_COUNT: Range = r("pool.classes.count", 1, 1 << 20, "");
/// `pool.rx_buffers` (also a power of two).
pub const POOL_RX_BUFFERS: Range = r("pool.rx_buffers", 2, 32768, "");
/// `pool.rx_buffer_size`; the real minimum is the frame size plus the
/// receive headroom, which depends on `netmtu`.
pub const POOL_RX_BUFFER_SIZE: Range = r("pool.rx_buffer_size", 1, 1 << 20, "bytes");

/// Every range, in file order.
pub const ALL: &[Range] = &[
    NETMTU,
    MAX_MESSAGE_SIZE,
    HANDLE_QUEUE_BYTES,
    ZC_COPY_THRESHOLD,
    TOKEN_MS,
    TOKEN_COEFFICIENT_MS,
    TOKEN_RETRANSMITS,
    JOIN_MS,
    CONSENSUS_MS,
    MERGE_MS,
    HOLD_MS,
    FAIL_RECV_CONST,
    SEQNO_UNCHANGED_CONST,
    MAX_MESSAGES,
    WINDOW_SIZE,
    MISS_COUNT_CONST,
    SEND_QUEUE_FRAMES,
    POOL_HEADROOM,
    POOL_SLOT_SIZE,
    POOL_SLOT_COUNT,
    POOL_RX_BUFFERS,
    POOL_RX_BUFFER_SIZE,
    super::ipc::IPC_RING_BYTES,
    super::ipc::IPC_MAX_CONNECTIONS,
    super::ipc::IPC_ZC_SLOT_SIZE,
    super::ipc::IPC_ZC_SLOT_COUNT,
    super::links::LINK_PING_INTERVAL_MS,
    super::links::LINK_PING_TIMEOUT_MS,
];

//! Totem's counters: traffic, drops by reason, and protocol coverage.

/// Counters: traffic, drops by reason, and protocol coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to `poll_transmit` (a multicast to all counts once).
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Frames passed to `handle_packet`.
    pub frames_received: u64,
    /// Bytes of those frames.
    pub bytes_received: u64,
    /// Frames dropped because they did not parse (malformed, truncated,
    /// foreign cluster, bad version, ...).
    pub dropped_malformed: u64,
    /// Frames dropped because they belong to another (old or foreign) ring
    /// or are stale duplicates.
    pub dropped_stale: u64,
    /// Frames from nodes outside the node list.
    pub dropped_unknown_node: u64,
    /// Frames that parse but no honest node could have sent (a token whose
    /// aru is above its seq, a JOIN naming nodes outside the node list, a
    /// frame longer than the cluster's netmtu lets a node send, ...):
    /// corruption the checksum missed, or a forgery.
    pub dropped_implausible: u64,
    /// JOINs and commit tokens whose ring seq no honest node could send:
    /// above `limits::RING_SEQ_MAX`, or further above the highest ring seq
    /// this node knows than `limits::RING_SEQ_JUMP_MAX` (a commit token:
    /// half of it). Adopted, they would use up the ring seq space.
    pub dropped_ring_seq_jump: u64,
    /// Multicasts refused because they lie above the highest seq a token
    /// has shown this node and the window already holds
    /// `recv_window_bytes` (or two rotations' worth of frames) of such
    /// frames: they come back by retransmission once the ring gets there.
    pub dropped_window_bytes: u64,
    /// Messages re-multicast to serve retransmit requests.
    pub retransmissions: u64,
    /// Tokens accepted.
    pub token_visits: u64,
    /// Regular configurations installed.
    pub ring_changes: u64,
    /// Regular configurations that joined members of another old ring (merges).
    pub merges: u64,
    /// Token losses detected, by state at the time.
    pub token_losses_operational: u64,
    /// Token losses detected in COMMIT or RECOVERY.
    pub token_losses_recovery: u64,
    /// Consensus timeouts in GATHER.
    pub consensus_timeouts: u64,
    /// Old-ring messages recovered (delivered from recovery copies).
    pub recovered_messages: u64,
    /// Messages delivered in a transitional configuration.
    pub transitional_deliveries: u64,
    /// SAFE frames delivered.
    pub safe_deliveries: u64,
    /// Frames delivered (Totem level, in order).
    pub frames_delivered: u64,
    /// Messages reassembled from fragments.
    pub fragmented_reassembled: u64,
    /// Partial assemblies discarded at a configuration change.
    pub fragments_discarded: u64,
    /// Fragmented messages re-sent whole in a new ring.
    pub fragmented_resent: u64,
    /// Times this node declared itself failed to receive.
    pub failed_to_recv: u64,
    /// Tokens held on an idle ring.
    pub token_holds: u64,
    /// Tokens whose flow-control count could not be true (above
    /// `window_size`, or full after a rotation without new frames): reset.
    pub token_fcc_clamped: u64,
    /// Merges not attempted because a node of one side is known not to
    /// hear the other (a one-way link failure).
    pub merges_suppressed: u64,
    /// Rings left because the token kept rotating with frames waiting and
    /// the ring's aru did not move for a token timeout.
    pub flow_stalls: u64,
    /// Submits refused with TRY_AGAIN.
    pub try_again: u64,
    /// Application messages delivered to local members.
    pub app_delivered: u64,
}

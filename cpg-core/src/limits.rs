//! Every limit, default and timer in one place (`docs/ARCHITECTURE.md` "Limits",
//! `docs/spec/totem.md` §7). Hard limits are constants; everything a deployment may tune
//! lives in [`Config`], validated by [`Config::validate`].

use crate::time::Duration;
use crate::types::NodeId;

/// Most nodes in one ring (and in a node list).
pub const NODES_MAX: usize = 64;
/// Members per group shown in a confchg (Corosync's `CPG_MEMBERS_MAX`).
pub const CPG_MEMBERS_MAX: usize = 128;
/// Longest group name in bytes (`CPG_MAX_NAME_LENGTH`).
pub const GROUP_NAME_MAX: usize = 128;
/// Largest UDP payload over IPv4: no frame is ever larger.
pub const FRAME_MAX: usize = 65_507;
/// Default `netmtu`: as in Corosync, the size of the whole IP packet on the path.
pub const NETMTU_DEFAULT: usize = 1500;
/// Smallest `netmtu` we accept (IPv4's minimum reassembly size: room for
/// headers, the largest token and a useful payload).
pub const NETMTU_MIN: usize = 576;
/// Largest `netmtu`: the largest IPv4 packet.
pub const NETMTU_MAX: usize = 65_535;
/// Bytes an IPv4 path adds around a frame (20 IP + 8 UDP).
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// Bytes an IPv6 path adds around a frame (40 IP + 8 UDP).
pub const IPV6_UDP_OVERHEAD: usize = 48;
/// What `cpg_max_atomic_msgsize_get` reports (Corosync's figure).
pub const MAX_ATOMIC_MSG_SIZE: u32 = 1_047_552;
/// Default largest message `mcast` accepts; above it `TOO_BIG`.
pub const MAX_MESSAGE_SIZE_DEFAULT: usize = 64 * 1024 * 1024;
/// Bytes of frames the local send queue holds by default: Corosync sizes
/// its new-message queue in frames of the ring's MTU, so its depth in
/// bytes (and in time) does not grow with the MTU; neither does ours.
pub const SEND_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// The least default send queue, in frames (a large-MTU ring).
pub const SEND_QUEUE_FRAMES_MIN: usize = 64;

/// The default `Config::send_queue_frames` for frames of `netmtu` bytes:
/// [`SEND_QUEUE_BYTES`] of them, at least [`SEND_QUEUE_FRAMES_MIN`] (2796
/// at 1500, 466 at 9000, 64 at 65,535).
pub const fn send_queue_frames_for(netmtu: usize) -> usize {
    let frames = SEND_QUEUE_BYTES / if netmtu == 0 { 1 } else { netmtu };
    if frames < SEND_QUEUE_FRAMES_MIN {
        SEND_QUEUE_FRAMES_MIN
    } else {
        frames
    }
}
/// Entries in a token's retransmit list.
pub const RTR_MAX: usize = 30;
/// Receive window in message sequence numbers (`QUEUE_RTR_ITEMS_SIZE_MAX`).
pub const RECV_WINDOW: u32 = 16_384;
/// Default `zc_copy_threshold` (bytes).
pub const ZC_COPY_THRESHOLD_DEFAULT: usize = 1024;
/// Headroom a zero-copy buffer keeps in front of the application's payload
/// for the frame, multicast, packing and CPG headers (the longest group name
/// included): a multicast never moves the payload.
pub const ZC_HEADROOM: usize = 256;
/// Longest setting of any timer (`token`, `token_coefficient`, `join`,
/// `consensus`, `merge`, `hold`). Far above any useful value (Corosync's
/// default token is 3 s) and far enough below `u64` nanoseconds that the
/// derived timers (64 coefficients on top of the token, × 12/10 for
/// consensus) stay exact.
pub const TIMER_MAX: Duration = Duration::from_millis(3_600_000);
/// Highest ring seq a frame may carry. A ring seq grows by 4 per new ring:
/// 2^60 rings (36 billion years at one per second) never reach it honestly.
/// A JOIN or commit token claiming more is corrupted or forged, and
/// adopting it would leave no room to grow: the next ring's seq would
/// overflow, and the cluster could never form a ring again.
pub const RING_SEQ_MAX: u64 = 1 << 62;
/// How far above the highest ring seq a node knows a JOIN's ring seq may
/// be (2^40): a ring seq grows by 4 per membership change, so 2^38 changes
/// (8,700 years at one per second) stay below it. Further is a jump no
/// honest node could make: the JOIN is dropped. A JOIN raises the base of
/// the next ring's seq by at most a quarter of it above the ring this node
/// is in, and a commit token may name at most half of it above the highest
/// ring seq the node knows (`docs/spec/totem.md` §1.2): so one forged or
/// corrupted frame moves a node's ring seq by at most half of it, which its
/// ring can follow, and a flood of forged JOINs moves it no further than one.
pub const RING_SEQ_JUMP_MAX: u64 = 1 << 40;
/// Most processes one node lists in a joinlist (one frame's worth is plenty;
/// larger lists are split over several messages).
pub const JOINLIST_MAX: usize = 256;

/// Tunable settings of one engine. Defaults are Corosync 3's.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (non-zero, present in `nodes`).
    pub node_id: NodeId,
    /// The static node list (ids); nodes outside it are refused.
    pub nodes: heapless::Vec<NodeId, NODES_MAX>,
    /// Cluster id carried in every frame; traffic of another cluster is dropped.
    pub cluster_id: u32,
    /// The path's IP MTU (Corosync's `netmtu`): a frame is at most
    /// `netmtu − frame_overhead` bytes (and 65,507), so it is never
    /// IP-fragmented on a path of that MTU.
    pub netmtu: usize,
    /// Bytes outside the frame that count against `netmtu`: IP and UDP
    /// headers ([`IPV4_UDP_OVERHEAD`], [`IPV6_UDP_OVERHEAD`]) plus whatever
    /// the transport adds to each datagram (authentication, encryption).
    pub frame_overhead: usize,
    /// Token loss timeout before the node-count coefficient.
    pub token: Duration,
    /// Added to `token` per node beyond 2 in the node list.
    pub token_coefficient: Duration,
    /// Retransmits of the token that fit in one `token` period.
    pub token_retransmits_before_loss_const: u32,
    /// JOIN resend period in GATHER.
    pub join: Duration,
    /// Bound on one GATHER round (0 = 1.2 × effective token).
    pub consensus: Duration,
    /// Period of MERGE_DETECT from the rep of an idle ring.
    pub merge: Duration,
    /// Token hold on an idle ring (0 = derived from token_retransmit).
    pub hold: Duration,
    /// Visits a node may pin the aru before declaring itself failed.
    pub fail_recv_const: u32,
    /// Visits with an unchanged seq before the ring counts as idle.
    pub seqno_unchanged_const: u32,
    /// Frames (new + retransmitted) one node may send per token visit.
    pub max_messages: u32,
    /// Frames the whole ring may send per rotation.
    pub window_size: u32,
    /// Visits a gap must persist before it is requested.
    pub miss_count_const: u32,
    /// Frames the local send queue may hold; full → TRY_AGAIN. Set it to
    /// [`send_queue_frames_for`] the netmtu when changing the netmtu.
    pub send_queue_frames: usize,
    /// Largest application message accepted by `mcast`.
    pub max_message_size: usize,
    /// Zero-copy messages at least this long (CPG header included) get
    /// frames of their own and are never copied in user space; shorter ones
    /// are packed with others by copy (one frame per tiny message would cost
    /// more than the copy). Measured by `benches/benches/totem.rs`. A
    /// buffer that keeps its headers outside (`FrameBuf::headers_inside`
    /// false) is never copied, whatever its length.
    pub zc_copy_threshold: usize,
    /// Bytes of frames each receive window may hold above the highest seq a
    /// token has shown this node: frames the ring has not reached yet as far
    /// as this node knows (an honest ring puts at most one rotation there).
    /// Beyond it, or beyond [`Config::recv_ahead_frames_max`] such frames,
    /// a frame is refused (counted as `dropped_window_bytes`) and comes back
    /// by retransmission once a token shows the ring got there; frames at
    /// or below that seq are always taken, so a gap is always filled.
    /// 0 = two rotations of full frames
    /// ([`Config::recv_window_bytes_effective`]); set, at least one
    /// ([`Config::recv_window_bytes_min`]). More than two has no effect:
    /// no more frames than two rotations are held ahead.
    pub recv_window_bytes: usize,
}

impl Config {
    /// Corosync's defaults for `node_id` in `nodes`.
    pub fn new(node_id: NodeId, nodes: &[NodeId]) -> Config {
        let mut list = heapless::Vec::new();
        for &n in nodes.iter().take(NODES_MAX) {
            let _ = list.push(n);
        }
        Config {
            node_id,
            nodes: list,
            cluster_id: 0,
            netmtu: NETMTU_DEFAULT,
            frame_overhead: IPV4_UDP_OVERHEAD,
            token: Duration::from_millis(3000),
            token_coefficient: Duration::from_millis(650),
            token_retransmits_before_loss_const: 4,
            join: Duration::from_millis(50),
            consensus: Duration::ZERO,
            merge: Duration::from_millis(200),
            hold: Duration::ZERO,
            fail_recv_const: 2500,
            seqno_unchanged_const: 30,
            max_messages: 17,
            window_size: 50,
            miss_count_const: 5,
            send_queue_frames: send_queue_frames_for(NETMTU_DEFAULT),
            max_message_size: MAX_MESSAGE_SIZE_DEFAULT,
            zc_copy_threshold: ZC_COPY_THRESHOLD_DEFAULT,
            recv_window_bytes: 0,
        }
    }

    /// Timers scaled down for simulation and tests (token 300 ms): the same
    /// ratios as Corosync's, ten times faster.
    pub fn fast(node_id: NodeId, nodes: &[NodeId]) -> Config {
        let mut c = Config::new(node_id, nodes);
        c.token = Duration::from_millis(300);
        c.token_coefficient = Duration::from_millis(65);
        c.join = Duration::from_millis(30);
        c.merge = Duration::from_millis(60);
        c
    }

    /// The token timeout in force: `token` plus the coefficient per node beyond 2.
    pub fn token_effective(&self) -> Duration {
        // Saturating here and below: `validate` calls these on settings it
        // has not bounded yet.
        let extra = self.nodes.len().saturating_sub(2) as u64;
        let coefficients = extra.saturating_mul(self.token_coefficient.0);
        Duration(self.token.0.saturating_add(coefficients))
    }
    /// `token / (retransmits + 0.2)`.
    pub fn token_retransmit(&self) -> Duration {
        let t = self.token_effective().0;
        let r = u64::from(self.token_retransmits_before_loss_const);
        Duration(t.saturating_mul(10) / (r * 10 + 2))
    }
    /// `token_retransmit × 0.8 − 10 ms` unless set.
    pub fn hold_effective(&self) -> Duration {
        if self.hold.0 != 0 {
            return self.hold;
        }
        let h = self.token_retransmit().0.saturating_mul(8) / 10;
        Duration(
            h.saturating_sub(Duration::from_millis(10).0)
                .max(Duration::from_millis(14).0),
        )
    }
    /// `1.2 × token` unless set.
    pub fn consensus_effective(&self) -> Duration {
        if self.consensus.0 != 0 {
            return self.consensus;
        }
        Duration(self.token_effective().0.saturating_mul(12) / 10)
    }
    /// Most frames the ring may send between two visits of the token to
    /// one node: `window_size + max_messages × nodes` (each holder sends at
    /// most `max_messages` per visit, the ring about `window_size` per
    /// rotation). A token whose seq moved further is dropped (spec §3.2).
    pub fn rotation_frames_max(&self) -> u32 {
        let per_node = self.max_messages.saturating_mul(self.nodes.len() as u32);
        self.window_size.saturating_add(per_node)
    }
    /// The smallest `recv_window_bytes` accepted: one rotation of
    /// [`Config::frame_max`] frames, more than an honest ring can put above
    /// the last token a node saw (`max_messages` per other node).
    pub fn recv_window_bytes_min(&self) -> usize {
        (self.rotation_frames_max() as usize).saturating_mul(self.frame_max())
    }
    /// Most frames a receive window holds above the seq the ring has
    /// reached: two rotations ([`Config::rotation_frames_max`]). An honest
    /// ring puts at most `max_messages` per other node there; the bound
    /// matters for small frames, each of which pins a driver receive buffer
    /// while held.
    pub fn recv_ahead_frames_max(&self) -> u32 {
        self.rotation_frames_max().saturating_mul(2)
    }
    /// `recv_window_bytes` unless 0; then two rotations of full frames,
    /// `2 × (window_size + max_messages × nodes) × frame_max`: 297 KB for 3
    /// nodes at netmtu 1500, 13 MB with 65,507-byte frames, 149 MB for 64
    /// nodes with those.
    pub fn recv_window_bytes_effective(&self) -> usize {
        if self.recv_window_bytes != 0 {
            return self.recv_window_bytes;
        }
        (self.recv_ahead_frames_max() as usize).saturating_mul(self.frame_max())
    }
    /// Largest frame (UDP payload) in force: `netmtu − frame_overhead`,
    /// at most 65,507. Every datagram the engine emits fits in it.
    pub fn frame_max(&self) -> usize {
        self.netmtu
            .saturating_sub(self.frame_overhead)
            .min(FRAME_MAX)
    }

    /// Check every setting; the first problem found is returned.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.nodes.contains(&0) {
            return Err(ConfigError::ZeroNodeId);
        }
        if !self.nodes.contains(&self.node_id) {
            return Err(ConfigError::SelfNotInNodeList);
        }
        for (i, a) in self.nodes.iter().enumerate() {
            if self.nodes[..i].contains(a) {
                return Err(ConfigError::DuplicateNode(*a));
            }
        }
        if self.netmtu < NETMTU_MIN || self.netmtu > NETMTU_MAX {
            return Err(ConfigError::NetMtu(self.netmtu));
        }
        if self.frame_overhead < IPV4_UDP_OVERHEAD
            || self.netmtu.saturating_sub(self.frame_overhead) < NETMTU_MIN - IPV6_UDP_OVERHEAD
        {
            return Err(ConfigError::FrameOverhead(self.frame_overhead));
        }
        for (name, d) in [
            ("token", self.token),
            ("token_coefficient", self.token_coefficient),
            ("join", self.join),
            ("consensus", self.consensus),
            ("merge", self.merge),
            ("hold", self.hold),
        ] {
            if d > TIMER_MAX {
                return Err(ConfigError::TimerTooLong(name));
            }
        }
        let min = Duration::from_millis(30);
        for (name, d) in [
            ("token", self.token_effective()),
            ("token_retransmit", self.token_retransmit()),
            ("join", self.join),
            ("consensus", self.consensus_effective()),
            ("merge", self.merge),
        ] {
            if d < min {
                return Err(ConfigError::TimerTooShort(name));
            }
        }
        if self.hold_effective() < Duration::from_millis(14) {
            return Err(ConfigError::TimerTooShort("hold"));
        }
        if self.consensus_effective() < self.join {
            return Err(ConfigError::ConsensusBelowJoin);
        }
        if self.token_retransmits_before_loss_const == 0 {
            return Err(ConfigError::Zero("token_retransmits_before_loss_const"));
        }
        if self.max_messages == 0 || self.window_size == 0 || self.window_size < self.max_messages {
            return Err(ConfigError::Window);
        }
        if self.window_size > RECV_WINDOW / 4 {
            return Err(ConfigError::Window);
        }
        if self.send_queue_frames == 0 {
            return Err(ConfigError::Zero("send_queue_frames"));
        }
        if self.fail_recv_const == 0
            || self.seqno_unchanged_const == 0
            || self.miss_count_const == 0
        {
            return Err(ConfigError::Zero(
                "fail_recv_const/seqno_unchanged_const/miss_count_const",
            ));
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize / 2 {
            return Err(ConfigError::MaxMessageSize);
        }
        if self.recv_window_bytes != 0 && self.recv_window_bytes < self.recv_window_bytes_min() {
            return Err(ConfigError::RecvWindowBytes {
                min: self.recv_window_bytes_min(),
            });
        }
        Ok(())
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Node ids must be non-zero.
    ZeroNodeId,
    /// `node_id` is not in `nodes`.
    SelfNotInNodeList,
    /// A node id appears twice in `nodes`.
    DuplicateNode(NodeId),
    /// `netmtu` outside 576..=65,535.
    NetMtu(usize),
    /// `frame_overhead` below the IPv4 headers, or leaving too small a frame.
    FrameOverhead(usize),
    /// The largest control frame for this node list (commit token, JOIN)
    /// does not fit `netmtu − frame_overhead`.
    FrameTooSmall {
        /// Bytes the largest control frame needs.
        need: usize,
        /// Bytes a frame may have.
        have: usize,
    },
    /// A timeout below 30 ms (or `hold` below 14 ms).
    TimerTooShort(&'static str),
    /// A timer above [`TIMER_MAX`] (one hour).
    TimerTooLong(&'static str),
    /// `consensus` must be at least `join`.
    ConsensusBelowJoin,
    /// `max_messages`/`window_size` zero, inverted or beyond the receive window.
    Window,
    /// A count that must be positive is zero.
    Zero(&'static str),
    /// `max_message_size` zero or beyond 2 GiB.
    MaxMessageSize,
    /// The engine needs the ring seq persisted by the previous incarnation
    /// (+1): not 0, and at most [`RING_SEQ_MAX`].
    NoInitialRingSeq,
    /// `recv_window_bytes` set below one rotation of full frames: honest
    /// traffic could be refused.
    RecvWindowBytes {
        /// The smallest value accepted for these settings.
        min: usize,
    },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::ZeroNodeId => write!(f, "node ids must be non-zero"),
            ConfigError::SelfNotInNodeList => write!(f, "node_id is not in the node list"),
            ConfigError::DuplicateNode(n) => write!(f, "node {n} appears twice in the node list"),
            ConfigError::NetMtu(m) => write!(f, "netmtu {m} outside {NETMTU_MIN}..={NETMTU_MAX}"),
            ConfigError::FrameOverhead(o) => {
                write!(f, "frame_overhead {o} below {IPV4_UDP_OVERHEAD} or leaves a frame under {} B", NETMTU_MIN - IPV6_UDP_OVERHEAD)
            }
            ConfigError::FrameTooSmall { need, have } => write!(
                f,
                "the node list's largest control frame needs {need} B but netmtu leaves {have} B: raise netmtu or shorten the node list"
            ),
            ConfigError::TimerTooShort(t) => write!(f, "timer {t} too short (min 30 ms, hold 14 ms)"),
            ConfigError::TimerTooLong(t) => write!(f, "timer {t} too long (max 1 hour)"),
            ConfigError::ConsensusBelowJoin => write!(f, "consensus must be >= join"),
            ConfigError::Window => write!(f, "need 0 < max_messages <= window_size <= 4096"),
            ConfigError::Zero(n) => write!(f, "{n} must be positive"),
            ConfigError::MaxMessageSize => write!(f, "max_message_size must be in 1..=2 GiB"),
            ConfigError::NoInitialRingSeq => {
                write!(
                    f,
                    "initial ring seq must be the persisted seq + 1, in 1..={RING_SEQ_MAX}"
                )
            }
            ConfigError::RecvWindowBytes { min } => write!(
                f,
                "recv_window_bytes below {min} B (one token rotation of full frames): use 0 for the default or at least that"
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corosync_default_timers() {
        let c = Config::new(1, &[1, 2]);
        assert_eq!(c.token_effective().as_millis(), 3000);
        assert_eq!(c.token_retransmit().as_millis(), 714);
        assert_eq!(c.hold_effective().as_millis(), 561);
        assert_eq!(c.consensus_effective().as_millis(), 3600);
        c.validate().unwrap();
        let c3 = Config::new(1, &[1, 2, 3]);
        assert_eq!(c3.token_effective().as_millis(), 3650);
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(
            Config::new(3, &[1, 2]).validate(),
            Err(ConfigError::SelfNotInNodeList)
        );
        assert_eq!(
            Config::new(1, &[1, 1]).validate(),
            Err(ConfigError::DuplicateNode(1))
        );
        let mut c = Config::new(1, &[1]);
        c.netmtu = 70_000;
        assert_eq!(c.validate(), Err(ConfigError::NetMtu(70_000)));
        let mut c = Config::new(1, &[1]);
        c.frame_overhead = 10;
        assert_eq!(c.validate(), Err(ConfigError::FrameOverhead(10)));
        let mut c = Config::new(1, &[1]);
        c.join = Duration::from_millis(5);
        assert_eq!(c.validate(), Err(ConfigError::TimerTooShort("join")));
    }

    #[test]
    fn netmtu_is_the_ip_packet() {
        let mut c = Config::new(1, &[1]);
        assert_eq!(c.frame_max(), 1500 - 28);
        c.frame_overhead = IPV6_UDP_OVERHEAD + 16;
        assert_eq!(c.frame_max(), 1500 - 64);
        c.frame_overhead = IPV4_UDP_OVERHEAD;
        c.netmtu = NETMTU_MAX;
        c.validate().unwrap();
        assert_eq!(c.frame_max(), FRAME_MAX);
    }

    #[test]
    fn recv_window_bytes_default_and_bounds() {
        let c = Config::new(1, &[1, 2, 3]);
        assert_eq!(c.rotation_frames_max(), 50 + 17 * 3);
        assert_eq!(c.recv_ahead_frames_max(), 2 * 101);
        assert_eq!(c.recv_window_bytes_min(), 101 * 1472);
        assert_eq!(c.recv_window_bytes_effective(), 2 * 101 * 1472);
        let nodes: heapless::Vec<NodeId, NODES_MAX> = (1..=64).collect();
        let mut c = Config::new(1, &nodes);
        c.netmtu = NETMTU_MAX;
        let min = (50 + 17 * 64) * FRAME_MAX;
        assert_eq!(c.recv_window_bytes_effective(), 2 * min);
        c.validate().unwrap();
        c.recv_window_bytes = min - 1;
        assert_eq!(c.validate(), Err(ConfigError::RecvWindowBytes { min }));
        c.recv_window_bytes = min;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.recv_window_bytes_effective(), min);
    }

    #[test]
    fn huge_timers_are_refused_not_wrapped() {
        // Found by the cpg-std `config` fuzz target: token_ms near i64::MAX
        // overflowed `from_millis` (a panic with overflow checks, a wrapped
        // and possibly accepted timer without), and large but representable
        // values overflowed the derived timers inside `validate`.
        assert_eq!(Duration::from_millis(u64::MAX), Duration(u64::MAX));
        let mut c = Config::new(1, &[1, 2, 3]);
        c.token = Duration::from_millis(i64::MAX as u64);
        assert_eq!(c.validate(), Err(ConfigError::TimerTooLong("token")));
        let mut c = Config::new(1, &[1, 2, 3]);
        c.token = Duration(u64::MAX / 4);
        assert!(c.token_retransmit() > TIMER_MAX && c.consensus_effective() > TIMER_MAX);
        assert_eq!(c.validate(), Err(ConfigError::TimerTooLong("token")));
        for name in ["token_coefficient", "join", "consensus", "merge", "hold"] {
            let mut c = Config::new(1, &[1, 2, 3]);
            let d = Duration(TIMER_MAX.0 + 1);
            match name {
                "token_coefficient" => c.token_coefficient = d,
                "join" => c.join = d,
                "consensus" => c.consensus = d,
                "merge" => c.merge = d,
                _ => c.hold = d,
            }
            assert_eq!(c.validate(), Err(ConfigError::TimerTooLong(name)));
        }
        let mut c = Config::new(1, &[1, 2]);
        c.token = TIMER_MAX;
        c.consensus = TIMER_MAX;
        assert_eq!(c.validate(), Ok(()), "the bound itself is allowed");
    }
}

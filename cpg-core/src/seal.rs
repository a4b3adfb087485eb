//! Frame sealing: every datagram authenticated (and by default encrypted)
//! with a cluster key, checked before a single byte of it is parsed.
//!
//! A sealed datagram is the frame followed by a 36-byte trailer:
//!
//! ```text
//! | frame (plaintext or ciphertext) | nonce (12) | destination (4) | key id (4) | tag (16) |
//!   nonce = sender node id (u32 BE) | epoch (u32 BE) | counter (u32 BE)
//!   destination = the node it is for (u32 BE), 0 for every peer
//! ```
//!
//! The trailer sits at the end so that opening a received buffer in place
//! leaves the frame at offset 0: the receive buffer is handed on, only
//! shorter, with no copy.
//!
//! - **Cipher**: AES-256-GCM, behind [`FrameCipher`] so a driver can plug
//!   in the fastest implementation it has (`cpg-uring` uses `ring`'s
//!   assembly; feature `seal-soft` gives [`SoftAesGcm`], portable RustCrypto
//!   code for no_std targets; both give the same bytes).
//!   [`Mode::Encrypt`] encrypts the frame and authenticates it with the
//!   nonce and key id; [`Mode::Authenticate`] sends the frame in clear and
//!   authenticates all of it (GMAC: the frame is associated data, the
//!   message is empty).
//! - **Key**: HKDF-SHA-256 of the key file's bytes, salted with the cluster
//!   name, so one key file shared by two clusters still gives two keys. The
//!   key id is a second HKDF output over the key and the mode: a datagram of
//!   another cluster, key or mode is told apart from a forgery (counted as
//!   [`OpenError::ForeignKey`], not [`OpenError::BadTag`]).
//! - **Nonces never repeat**: the sender's node id makes them unique across
//!   the cluster; the epoch, which the caller persists and raises at every
//!   start (see [`Sealer::new`]), across restarts; the counter within one
//!   epoch. When the counter runs out, [`Sealer::seal`] refuses until the
//!   caller persists a new epoch ([`Sealer::renew`]).
//! - **Replays**: per sender, the highest (epoch, counter) seen and a
//!   1,024-frame window below it; anything older, or seen, is dropped. A
//!   datagram whose nonce names another node than the address it came from
//!   is dropped too ([`OpenError::SourceMismatch`]), and so is one sealed
//!   for another node (a token re-sent elsewhere: [`OpenError::Misdirected`]).
//!   Not covered: a receiver that restarts has no window, so it accepts a
//!   replay of a datagram sealed before its restart once, in the sender's
//!   current epoch; the engine then judges it as it judges any duplicate
//!   or stale frame (no state is lost, as with an unsealed duplicate).

use hkdf::Hkdf;
use sha2::Sha256;

use crate::limits::NODES_MAX;
use crate::types::NodeId;

/// Bytes a sealed datagram carries beyond its frame.
pub const SEAL_OVERHEAD: usize = HEAD_LEN + TAG_LEN;
/// Shortest key file accepted (256 bits).
pub const KEY_FILE_MIN: usize = 32;
/// Longest key file accepted (Corosync's `authkey` is at most 4,096 bytes).
pub const KEY_FILE_MAX: usize = 4096;
/// Frames below the highest one seen that can still arrive (reordered).
pub const REPLAY_WINDOW: u32 = 1024;

/// Nonce bytes (AES-GCM's 96 bits).
pub const NONCE_LEN: usize = 12;
/// Key id bytes.
pub const KEY_ID_LEN: usize = 4;
/// Destination bytes.
pub const DEST_LEN: usize = 4;
/// The trailer before the tag: nonce, destination, key id.
pub const HEAD_LEN: usize = NONCE_LEN + DEST_LEN + KEY_ID_LEN;
/// The destination of a datagram sealed once for every peer.
pub const DEST_ALL: NodeId = 0;
/// Authentication tag bytes.
pub const TAG_LEN: usize = 16;
const WINDOW_WORDS: usize = REPLAY_WINDOW as usize / 64;

/// What sealing protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Frames in clear, each authenticated (a forged or altered frame is
    /// dropped; a listener reads them).
    Authenticate,
    /// Frames encrypted and authenticated.
    Encrypt,
}

impl Mode {
    fn label(self) -> &'static [u8] {
        match self {
            Mode::Authenticate => b"authenticate",
            Mode::Encrypt => b"encrypt",
        }
    }
}

/// A key file that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Shorter than [`KEY_FILE_MIN`] or longer than [`KEY_FILE_MAX`] bytes.
    Length(usize),
    /// Every byte the same (an empty or zeroed file).
    Constant,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "key is {n} bytes; it must be {KEY_FILE_MIN} to {KEY_FILE_MAX} random bytes"
            ),
            KeyError::Constant => write!(f, "key bytes are all the same: not a random key"),
        }
    }
}

/// AES-256-GCM, in place, with a detached tag: what sealing needs of a
/// cipher. Implementations must be the standard algorithm (NIST SP
/// 800-38D), so that nodes with different implementations interoperate.
pub trait FrameCipher {
    /// Encrypt `buf` in place (nothing for an empty `buf`) and return the
    /// tag over `aad` and the ciphertext.
    ///
    /// # Errors
    /// `Err(())` if the cipher refuses (lengths beyond GCM's limits).
    #[allow(clippy::result_unit_err)]
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ()>;
    /// Check `tag` over `aad` and `buf`, then decrypt `buf` in place.
    ///
    /// # Errors
    /// `Err(())` for a tag that does not match (`buf` is then garbage).
    #[allow(clippy::result_unit_err)]
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()>;
}

/// The cluster's frame key, derived from the key file: the 256-bit
/// AES key (zeroed on drop), its id and the mode.
pub struct KeyMaterial {
    key: [u8; 32],
    id: [u8; KEY_ID_LEN],
    mode: Mode,
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key itself.
        f.debug_struct("KeyMaterial")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish()
    }
}

impl KeyMaterial {
    /// Derive the frame key of `cluster` from the key file's bytes.
    ///
    /// # Errors
    /// [`KeyError`] for a key file of the wrong length or with no entropy.
    pub fn derive(secret: &[u8], cluster: &str, mode: Mode) -> Result<KeyMaterial, KeyError> {
        if !(KEY_FILE_MIN..=KEY_FILE_MAX).contains(&secret.len()) {
            return Err(KeyError::Length(secret.len()));
        }
        if secret.iter().all(|&b| b == secret[0]) {
            return Err(KeyError::Constant);
        }
        let hk = Hkdf::<Sha256>::new(Some(cluster.as_bytes()), secret);
        let mut key = [0u8; 32];
        let mut id = [0u8; KEY_ID_LEN];
        // Both lengths are far below HKDF-SHA-256's limit (8,160 bytes),
        // so neither expansion can fail.
        let _ = hk.expand(b"cpg-rs frame key v1", &mut key);
        let _ = hk.expand_multi_info(&[b"cpg-rs key id v1 ", mode.label()], &mut id);
        Ok(KeyMaterial { key, id, mode })
    }

    /// The 256-bit AES key, for building a [`FrameCipher`].
    pub fn aes256_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The mode this key seals in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Four bytes naming the key, cluster and mode (not secret: every
    /// datagram carries them).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }
}

/// A key ready to seal: the cipher, its id and mode.
#[derive(Debug, Clone)]
pub struct Key<C> {
    cipher: C,
    id: [u8; KEY_ID_LEN],
    mode: Mode,
}

impl<C: FrameCipher> Key<C> {
    /// Pair a cipher built from `material.aes256_key()` with the
    /// material's id and mode.
    pub fn new(material: &KeyMaterial, cipher: C) -> Key<C> {
        Key {
            cipher,
            id: material.id,
            mode: material.mode,
        }
    }

    /// The mode this key seals in.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// Check a [`FrameCipher`] against NIST's AES-256-GCM test case 16 (GCM
/// spec, McGrew & Viega): seal, open, and refuse a flipped tag. A driver
/// runs it once before trusting a cipher; `make` builds the cipher for a
/// raw 256-bit key.
pub fn known_answer<C: FrameCipher>(make: impl Fn(&[u8; 32]) -> C) -> bool {
    const K: [u8; 32] = hex32(*b"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    const IV: [u8; 12] = [
        0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce, 0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88,
    ];
    const AAD: [u8; 20] = [
        0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe,
        0xef, 0xab, 0xad, 0xda, 0xd2,
    ];
    const P: [u8; 60] = [
        0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5, 0xa5, 0x59, 0x09, 0xc5, 0xaf, 0xf5, 0x26,
        0x9a, 0x86, 0xa7, 0xa9, 0x53, 0x15, 0x34, 0xf7, 0xda, 0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31,
        0x8a, 0x72, 0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53, 0x2f, 0xcf, 0x0e, 0x24, 0x49,
        0xa6, 0xb5, 0x25, 0xb1, 0x6a, 0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57, 0xba, 0x63, 0x7b, 0x39,
    ];
    const C: [u8; 60] = [
        0x52, 0x2d, 0xc1, 0xf0, 0x99, 0x56, 0x7d, 0x07, 0xf4, 0x7f, 0x37, 0xa3, 0x2a, 0x84, 0x42,
        0x7d, 0x64, 0x3a, 0x8c, 0xdc, 0xbf, 0xe5, 0xc0, 0xc9, 0x75, 0x98, 0xa2, 0xbd, 0x25, 0x55,
        0xd1, 0xaa, 0x8c, 0xb0, 0x8e, 0x48, 0x59, 0x0d, 0xbb, 0x3d, 0xa7, 0xb0, 0x8b, 0x10, 0x56,
        0x82, 0x88, 0x38, 0xc5, 0xf6, 0x1e, 0x63, 0x93, 0xba, 0x7a, 0x0a, 0xbc, 0xc9, 0xf6, 0x62,
    ];
    const T: [u8; 16] = [
        0x76, 0xfc, 0x6e, 0xce, 0x0f, 0x4e, 0x17, 0x68, 0xcd, 0xdf, 0x88, 0x53, 0xbb, 0x2d, 0x55,
        0x1b,
    ];
    let c = make(&K);
    let mut buf = P;
    if c.seal(&IV, &AAD, &mut buf) != Ok(T) || buf != C {
        return false;
    }
    let mut bad = T;
    bad[0] ^= 1;
    if c.open(&IV, &AAD, &mut buf.clone(), &bad).is_ok() {
        return false;
    }
    c.open(&IV, &AAD, &mut buf, &T).is_ok() && buf == P
}

const fn hex32(s: [u8; 64]) -> [u8; 32] {
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nib(s[2 * i]) << 4 | nib(s[2 * i + 1]);
        i += 1;
    }
    out
}

/// RustCrypto's portable AES-256-GCM (feature `seal-soft`).
#[cfg(feature = "seal-soft")]
#[derive(Clone)]
pub struct SoftAesGcm(aes_gcm::Aes256Gcm);

#[cfg(feature = "seal-soft")]
impl core::fmt::Debug for SoftAesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SoftAesGcm")
    }
}

#[cfg(feature = "seal-soft")]
impl SoftAesGcm {
    /// The cipher for `material`'s key.
    pub fn new(material: &KeyMaterial) -> SoftAesGcm {
        SoftAesGcm::with_key(material.aes256_key())
    }

    /// The cipher for a raw 256-bit key.
    pub fn with_key(key: &[u8; 32]) -> SoftAesGcm {
        use aes_gcm::aead::KeyInit;
        SoftAesGcm(aes_gcm::Aes256Gcm::new(key.into()))
    }
}

#[cfg(feature = "seal-soft")]
impl FrameCipher for SoftAesGcm {
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ()> {
        use aes_gcm::aead::AeadInPlace;
        self.0
            .encrypt_in_place_detached(nonce.into(), aad, buf)
            .map(Into::into)
            .map_err(|_| ())
    }
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        use aes_gcm::aead::AeadInPlace;
        self.0
            .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
            .map_err(|_| ())
    }
}

/// Why a frame was not sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The output buffer is shorter than the frame plus [`SEAL_OVERHEAD`].
    OutTooSmall,
    /// This epoch's counters are spent: persist a higher epoch and
    /// [`Sealer::renew`] before sealing again.
    EpochSpent,
    /// The cipher refused (a frame longer than GCM allows; not reachable
    /// with datagram-sized frames).
    Cipher,
}

/// Seals this node's outgoing frames.
#[derive(Debug)]
pub struct Sealer<C> {
    key: Key<C>,
    node: NodeId,
    epoch: u32,
    /// The next counter; `None` once the epoch is spent.
    next: Option<u32>,
}

impl<C: FrameCipher> Sealer<C> {
    /// A sealer for `node` in `epoch`. The caller guarantees that `epoch`
    /// was never used by this node before: it persists the epoch before
    /// the first frame goes out, and starts above both the last persisted
    /// one and the wall clock in seconds (so a lost state directory does
    /// not reuse an old epoch either).
    pub fn new(key: Key<C>, node: NodeId, epoch: u32) -> Sealer<C> {
        Sealer {
            key,
            node,
            epoch,
            next: Some(0),
        }
    }

    /// The epoch in use.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Move to a new, persisted epoch (after [`SealError::EpochSpent`]).
    /// An epoch not above the current one is ignored: nonces never repeat.
    pub fn renew(&mut self, epoch: u32) -> bool {
        if epoch <= self.epoch {
            return false;
        }
        self.epoch = epoch;
        self.next = Some(0);
        true
    }

    /// Seal the frame made of `segments` (in order), for node `dest`
    /// ([`DEST_ALL`] for every peer), into `out`; returns the datagram's
    /// length (the frame's plus [`SEAL_OVERHEAD`]).
    ///
    /// # Errors
    /// [`SealError`]; nothing was consumed then (the counter is kept).
    pub fn seal(
        &mut self,
        segments: [&[u8]; 2],
        dest: NodeId,
        out: &mut [u8],
    ) -> Result<usize, SealError> {
        let frame_len = segments[0].len() + segments[1].len();
        let total = frame_len + SEAL_OVERHEAD;
        let out = out.get_mut(..total).ok_or(SealError::OutTooSmall)?;
        let counter = self.next.ok_or(SealError::EpochSpent)?;
        let (frame, trailer) = out.split_at_mut(frame_len);
        let (a, b) = frame.split_at_mut(segments[0].len());
        a.copy_from_slice(segments[0]);
        b.copy_from_slice(segments[1]);
        let (head, _) = trailer.split_at_mut(HEAD_LEN);
        head[0..4].copy_from_slice(&self.node.to_be_bytes());
        head[4..8].copy_from_slice(&self.epoch.to_be_bytes());
        head[8..12].copy_from_slice(&counter.to_be_bytes());
        head[12..16].copy_from_slice(&dest.to_be_bytes());
        head[16..20].copy_from_slice(&self.key.id);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&head[..NONCE_LEN]);
        let tag = match self.key.mode {
            Mode::Encrypt => self.key.cipher.seal(&nonce, head, frame),
            Mode::Authenticate => {
                // GMAC over frame and trailer head: one associated-data
                // slice, so the frame is authenticated where it lies.
                let aad = out.get(..frame_len + HEAD_LEN).unwrap_or(&[]);
                self.key.cipher.seal(&nonce, aad, &mut [])
            }
        }
        .map_err(|()| SealError::Cipher)?;
        out[frame_len + HEAD_LEN..].copy_from_slice(&tag);
        self.next = counter.checked_add(1);
        Ok(total)
    }
}

/// Why a received datagram was dropped. Each has a counter in
/// [`OpenStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than the trailer: not a sealed datagram.
    Short,
    /// Sealed with another key, cluster name or mode.
    ForeignKey,
    /// The nonce names another node than the address it came from.
    SourceMismatch,
    /// Sealed for another node (a unicast frame re-sent elsewhere).
    Misdirected,
    /// Authentication failed: forged or altered.
    BadTag,
    /// Seen before, or older than the replay window.
    Replay,
    /// More senders than a ring can have (cannot happen with the
    /// transport's nodelist check in front).
    TooManySenders,
}

/// Drops by reason, for the node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Datagrams opened.
    pub opened: u64,
    /// [`OpenError::Short`].
    pub short: u64,
    /// [`OpenError::ForeignKey`].
    pub foreign_key: u64,
    /// [`OpenError::SourceMismatch`].
    pub source_mismatch: u64,
    /// [`OpenError::Misdirected`].
    pub misdirected: u64,
    /// [`OpenError::BadTag`].
    pub bad_tag: u64,
    /// [`OpenError::Replay`].
    pub replay: u64,
    /// [`OpenError::TooManySenders`].
    pub too_many_senders: u64,
}

impl OpenStats {
    fn count(&mut self, r: Result<usize, OpenError>) {
        let c = match r {
            Ok(_) => &mut self.opened,
            Err(OpenError::Short) => &mut self.short,
            Err(OpenError::ForeignKey) => &mut self.foreign_key,
            Err(OpenError::SourceMismatch) => &mut self.source_mismatch,
            Err(OpenError::Misdirected) => &mut self.misdirected,
            Err(OpenError::BadTag) => &mut self.bad_tag,
            Err(OpenError::Replay) => &mut self.replay,
            Err(OpenError::TooManySenders) => &mut self.too_many_senders,
        };
        *c += 1;
    }

    /// Datagrams dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.short
            + self.foreign_key
            + self.source_mismatch
            + self.misdirected
            + self.bad_tag
            + self.replay
            + self.too_many_senders
    }
}

/// One sender's replay state: the highest (epoch, counter) accepted and
/// which of the [`REPLAY_WINDOW`] counters below it were seen (bit `i` of
/// the bitmap: `top - i`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    epoch: u32,
    top: u32,
    seen: [u64; WINDOW_WORDS],
}

impl Window {
    fn fresh(epoch: u32, counter: u32) -> Window {
        let mut seen = [0; WINDOW_WORDS];
        seen[0] = 1;
        Window {
            epoch,
            top: counter,
            seen,
        }
    }

    fn bit(&self, back: u32) -> bool {
        let i = back as usize;
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether (epoch, counter) may be accepted (not yet recorded).
    fn admits(&self, epoch: u32, counter: u32) -> bool {
        if epoch != self.epoch {
            return epoch > self.epoch;
        }
        if counter > self.top {
            return true;
        }
        let back = self.top - counter;
        back < REPLAY_WINDOW && !self.bit(back)
    }

    /// Record an admitted (epoch, counter).
    fn record(&mut self, epoch: u32, counter: u32) {
        if epoch > self.epoch {
            *self = Window::fresh(epoch, counter);
            return;
        }
        if counter > self.top {
            self.shift(counter - self.top);
            self.top = counter;
            self.seen[0] |= 1;
        } else {
            let i = (self.top - counter) as usize;
            self.seen[i / 64] |= 1 << (i % 64);
        }
    }

    /// Move the window up by `by` counters.
    fn shift(&mut self, by: u32) {
        if by >= REPLAY_WINDOW {
            self.seen = [0; WINDOW_WORDS];
            return;
        }
        let words = by as usize / 64;
        let bits = by % 64;
        for i in (0..WINDOW_WORDS).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let below = i.checked_sub(words + 1).map_or(0, |j| self.seen[j]);
            self.seen[i] = if bits == 0 {
                lo
            } else {
                (lo << bits) | (below >> (64 - bits))
            };
        }
    }
}

/// Opens received datagrams: key, source, replay and tag checks, in place.
#[derive(Debug)]
pub struct Opener<C> {
    key: Key<C>,
    me: NodeId,
    windows: heapless::Vec<(NodeId, Window), NODES_MAX>,
    stats: OpenStats,
}

impl<C: FrameCipher> Opener<C> {
    /// An opener for datagrams sealed with `key`, received by node `me`.
    pub fn new(key: Key<C>, me: NodeId) -> Opener<C> {
        Opener {
            key,
            me,
            windows: heapless::Vec::new(),
            stats: OpenStats::default(),
        }
    }

    /// Drops and opens so far.
    pub fn stats(&self) -> OpenStats {
        self.stats
    }

    /// Check and open the datagram in `buf`, which came from node `from`
    /// (the transport's nodelist lookup of the source address). On success
    /// the frame is `buf[..n]` (decrypted in place) and `n` is returned;
    /// on error `buf` must be dropped unread. Counted either way.
    ///
    /// # Errors
    /// [`OpenError`], checked in this order: length, key id, source,
    /// destination, replay, tag. The replay window moves only after the tag checks.
    pub fn open(&mut self, from: NodeId, buf: &mut [u8]) -> Result<usize, OpenError> {
        let r = self.open_inner(from, buf);
        self.stats.count(r);
        r
    }

    fn open_inner(&mut self, from: NodeId, buf: &mut [u8]) -> Result<usize, OpenError> {
        let frame_len = buf
            .len()
            .checked_sub(SEAL_OVERHEAD)
            .ok_or(OpenError::Short)?;
        let (frame, trailer) = buf.split_at_mut(frame_len);
        let (head, tag) = trailer.split_at(HEAD_LEN);
        if head[NONCE_LEN + DEST_LEN..] != self.key.id {
            return Err(OpenError::ForeignKey);
        }
        let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (node, epoch, counter, dest) = (word(0), word(4), word(8), word(12));
        if node != from {
            return Err(OpenError::SourceMismatch);
        }
        if dest != DEST_ALL && dest != self.me {
            return Err(OpenError::Misdirected);
        }
        let slot = self.windows.iter().position(|(n, _)| *n == node);
        if let Some(i) = slot {
            if !self.windows[i].1.admits(epoch, counter) {
                return Err(OpenError::Replay);
            }
        } else if self.windows.is_full() {
            return Err(OpenError::TooManySenders);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&head[..NONCE_LEN]);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let verified = match self.key.mode {
            Mode::Encrypt => self.key.cipher.open(&nonce, head, frame, &tag_bytes),
            Mode::Authenticate => {
                let aad = buf.get(..frame_len + HEAD_LEN).unwrap_or(&[]);
                self.key.cipher.open(&nonce, aad, &mut [], &tag_bytes)
            }
        };
        if verified.is_err() {
            return Err(OpenError::BadTag);
        }
        match slot {
            Some(i) => self.windows[i].1.record(epoch, counter),
            None => {
                // Room was checked above.
                let _ = self.windows.push((node, Window::fresh(epoch, counter)));
            }
        }
        Ok(frame_len)
    }
}

#[cfg(all(test, feature = "seal-soft"))]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdefXYZ";

    fn key(secret: &[u8], cluster: &str, mode: Mode) -> Key<SoftAesGcm> {
        let m = KeyMaterial::derive(secret, cluster, mode).unwrap();
        Key::new(&m, SoftAesGcm::new(&m))
    }

    fn pair(mode: Mode) -> (Sealer<SoftAesGcm>, Opener<SoftAesGcm>) {
        let k = key(SECRET, "alpha", mode);
        (Sealer::new(k.clone(), 2, 7), Opener::new(k, 1))
    }

    fn seal(s: &mut Sealer<SoftAesGcm>, a: &[u8], b: &[u8]) -> std::vec::Vec<u8> {
        let mut out = std::vec![0u8; a.len() + b.len() + SEAL_OVERHEAD];
        let n = s.seal([a, b], DEST_ALL, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn soft_cipher_passes_the_known_answer() {
        assert!(known_answer(SoftAesGcm::with_key));
    }

    #[test]
    fn round_trip_both_modes() {
        for mode in [Mode::Encrypt, Mode::Authenticate] {
            let (mut s, mut o) = pair(mode);
            let mut d = seal(&mut s, b"hello ", b"world");
            assert_eq!(d.len(), 11 + SEAL_OVERHEAD);
            if mode == Mode::Encrypt {
                assert_ne!(&d[..11], b"hello world");
            } else {
                assert_eq!(&d[..11], b"hello world");
            }
            let n = o.open(2, &mut d).unwrap();
            assert_eq!(&d[..n], b"hello world");
            assert_eq!(o.stats().opened, 1);
        }
    }

    #[test]
    fn every_flipped_bit_is_a_bad_tag_or_foreign() {
        for mode in [Mode::Encrypt, Mode::Authenticate] {
            let (mut s, _) = pair(mode);
            let d = seal(&mut s, b"frame bytes", b"");
            for bit in 0..d.len() * 8 {
                let (_, mut o) = pair(mode);
                let mut x = d.clone();
                x[bit / 8] ^= 1 << (bit % 8);
                let e = o.open(2, &mut x).unwrap_err();
                let trailer = d.len() - SEAL_OVERHEAD;
                let want = match (bit / 8).checked_sub(trailer) {
                    Some(0..=3) => OpenError::SourceMismatch,
                    // Destination 0 flipped to this node (1) passes its check.
                    Some(15) if bit % 8 == 0 => OpenError::BadTag,
                    Some(12..=15) => OpenError::Misdirected,
                    Some(16..=19) => OpenError::ForeignKey,
                    _ => OpenError::BadTag,
                };
                assert_eq!(e, want, "bit {bit}");
            }
        }
    }

    #[test]
    fn foreign_cluster_key_or_mode() {
        let (mut s, _) = pair(Mode::Encrypt);
        let d = seal(&mut s, b"x", b"");
        let others = [
            key(SECRET, "beta", Mode::Encrypt),
            key(
                b"another key, thirty-two bytes long",
                "alpha",
                Mode::Encrypt,
            ),
            key(SECRET, "alpha", Mode::Authenticate),
        ];
        for k in others {
            let mut o = Opener::new(k, 1);
            assert_eq!(o.open(2, &mut d.clone()), Err(OpenError::ForeignKey));
            assert_eq!(o.stats().foreign_key, 1);
        }
    }

    #[test]
    fn replays_and_old_epochs_dropped() {
        let (mut s, mut o) = pair(Mode::Encrypt);
        let first = seal(&mut s, b"one", b"");
        let second = seal(&mut s, b"two", b"");
        assert!(o.open(2, &mut second.clone()).is_ok());
        // Reordered, not yet seen: accepted once.
        assert!(o.open(2, &mut first.clone()).is_ok());
        assert_eq!(o.open(2, &mut first.clone()), Err(OpenError::Replay));
        assert_eq!(o.open(2, &mut second.clone()), Err(OpenError::Replay));
        // A restart in a higher epoch is accepted; the old epoch is then dead.
        assert!(s.renew(8));
        let third = seal(&mut s, b"three", b"");
        assert!(o.open(2, &mut third.clone()).is_ok());
        let (mut old, _) = pair(Mode::Encrypt);
        for _ in 0..5 {
            seal(&mut old, b"", b"");
        }
        let stale = seal(&mut old, b"stale", b"");
        assert_eq!(o.open(2, &mut stale.clone()), Err(OpenError::Replay));
        assert_eq!(o.stats().replay, 3);
    }

    #[test]
    fn window_edges() {
        let mut w = Window::fresh(1, 5000);
        assert!(!w.admits(1, 5000));
        assert!(w.admits(1, 5000 - (REPLAY_WINDOW - 1)));
        assert!(!w.admits(1, 5000 - REPLAY_WINDOW));
        w.record(1, 4000);
        assert!(!w.admits(1, 4000));
        w.record(1, 5070);
        assert!(!w.admits(1, 4000), "kept across a shift");
        assert!(!w.admits(1, 5000), "kept across a shift");
        assert!(w.admits(1, 5069));
        w.record(1, 5000 + 3 * REPLAY_WINDOW);
        assert!(w.admits(1, 5000 + 3 * REPLAY_WINDOW - 1));
        assert!(!w.admits(0, u32::MAX));
    }

    #[test]
    fn window_matches_a_set_model() {
        // Pseudo-random arrivals: the bitmap says exactly what a set of
        // seen counters plus the window rule says.
        let mut w = Window::fresh(0, 0);
        let mut seen = std::collections::BTreeSet::from([0u32]);
        let mut top = 0u32;
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let c = (top + 40).saturating_sub(x % 1500);
            let model = !seen.contains(&c) && (c > top || top - c < REPLAY_WINDOW);
            assert_eq!(w.admits(0, c), model, "counter {c} top {top}");
            if model {
                w.record(0, c);
                seen.insert(c);
                top = top.max(c);
            }
        }
    }

    #[test]
    fn unicast_opens_only_at_its_destination() {
        let (mut s, _) = pair(Mode::Encrypt);
        let k = key(SECRET, "alpha", Mode::Encrypt);
        let mut out = std::vec![0u8; 1 + SEAL_OVERHEAD];
        s.seal([b"t", b""], 3, &mut out).unwrap();
        let mut at1 = Opener::new(k.clone(), 1);
        assert_eq!(at1.open(2, &mut out.clone()), Err(OpenError::Misdirected));
        assert_eq!(at1.stats().misdirected, 1);
        assert_eq!(Opener::new(k, 3).open(2, &mut out), Ok(1));
    }

    #[test]
    fn source_must_match_nonce() {
        let (mut s, mut o) = pair(Mode::Authenticate);
        let mut d = seal(&mut s, b"x", b"");
        assert_eq!(o.open(3, &mut d), Err(OpenError::SourceMismatch));
    }

    #[test]
    fn short_and_small_buffers() {
        let (mut s, mut o) = pair(Mode::Encrypt);
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(o.open(2, &mut std::vec![0; len]), Err(OpenError::Short));
        }
        let mut out = [0u8; SEAL_OVERHEAD + 2];
        assert_eq!(
            s.seal([b"abc", b""], DEST_ALL, &mut out),
            Err(SealError::OutTooSmall)
        );
        assert_eq!(o.stats().dropped(), SEAL_OVERHEAD as u64);
    }

    #[test]
    fn spent_epoch_refuses_until_renewed() {
        let (mut s, _) = pair(Mode::Encrypt);
        s.next = Some(u32::MAX);
        seal(&mut s, b"last", b"");
        let mut out = [0u8; 64];
        assert_eq!(
            s.seal([b"x", b""], DEST_ALL, &mut out),
            Err(SealError::EpochSpent)
        );
        assert!(!s.renew(7), "the same epoch again would repeat nonces");
        assert!(s.renew(9));
        assert!(s.seal([b"x", b""], DEST_ALL, &mut out).is_ok());
    }

    #[test]
    fn bad_key_files() {
        assert_eq!(
            KeyMaterial::derive(&[1; 31], "c", Mode::Encrypt).unwrap_err(),
            KeyError::Length(31)
        );
        assert_eq!(
            KeyMaterial::derive(&[0; 64], "c", Mode::Encrypt).unwrap_err(),
            KeyError::Constant
        );
        assert!(KeyMaterial::derive(&[7; 5000], "c", Mode::Encrypt).is_err());
    }
}

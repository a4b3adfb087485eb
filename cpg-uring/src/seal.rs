//! Frame sealing on the wire (`cpg_core::seal`): the cipher (`ring`'s
//! AES-256-GCM), the epoch source the caller persists, and the per-driver
//! sealer and opener.

use std::io;
use std::sync::Arc;

use cpg_core::seal::{
    self, FrameCipher, Key, KeyMaterial, OpenError, Opener, SealError, Sealer, NONCE_LEN,
    SEAL_OVERHEAD, TAG_LEN,
};
use cpg_core::NodeId;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

/// AES-256-GCM by `ring` (assembly with AES-NI, VAES and CLMUL).
pub struct RingAesGcm(LessSafeKey);

impl std::fmt::Debug for RingAesGcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingAesGcm")
    }
}

impl RingAesGcm {
    /// The cipher for a raw 256-bit key.
    pub fn with_key(key: &[u8; 32]) -> RingAesGcm {
        // A 32-byte key is exactly what AES_256_GCM takes.
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .unwrap_or_else(|_| unreachable!("AES-256 takes a 32-byte key"));
        RingAesGcm(LessSafeKey::new(unbound))
    }
}

impl FrameCipher for RingAesGcm {
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], ()> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| ())?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), ()> {
        let tag = Tag::from(*tag);
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                tag,
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| ())
    }
}

/// Hands out sealing epochs: each call returns an epoch above every one
/// returned before, by this node, ever (persisted before it is returned).
pub trait EpochSource: Send + Sync {
    /// The next epoch.
    ///
    /// # Errors
    /// The epoch could not be persisted: the driver then sends nothing.
    fn next_epoch(&self) -> io::Result<u32>;
}

/// What a driver needs to seal: the derived key and the epoch source.
#[derive(Clone)]
pub struct SealSpec {
    /// The cluster's frame key.
    pub key: Arc<KeyMaterial>,
    /// Where epochs come from.
    pub epochs: Arc<dyn EpochSource>,
}

impl std::fmt::Debug for SealSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealSpec").field("key", &self.key).finish()
    }
}

/// One driver's sealing state.
pub(crate) struct FrameSeal {
    sealer: Sealer<RingAesGcm>,
    opener: Opener<RingAesGcm>,
    epochs: Arc<dyn EpochSource>,
}

impl FrameSeal {
    /// Check the cipher, take a first epoch.
    pub(crate) fn new(spec: &SealSpec, node: NodeId) -> io::Result<FrameSeal> {
        if !seal::known_answer(RingAesGcm::with_key) {
            return Err(io::Error::other("AES-256-GCM failed its known-answer test"));
        }
        let epoch = spec.epochs.next_epoch()?;
        let key = || Key::new(&spec.key, RingAesGcm::with_key(spec.key.aes256_key()));
        Ok(FrameSeal {
            sealer: Sealer::new(key(), node, epoch),
            opener: Opener::new(key(), node),
            epochs: spec.epochs.clone(),
        })
    }

    /// Seal the frame made of `segments`, for node `dest`
    /// (`cpg_core::seal::DEST_ALL`: every peer), into a new buffer.
    ///
    /// # Errors
    /// A spent epoch whose successor could not be persisted, or a frame
    /// the cipher refuses (an engine bug).
    pub(crate) fn seal(&mut self, segments: [&[u8]; 2], dest: NodeId) -> io::Result<Arc<[u8]>> {
        let len = segments[0].len() + segments[1].len() + SEAL_OVERHEAD;
        // One allocation, straight into the Arc (a Vec would be copied).
        let mut out: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let buf = Arc::get_mut(&mut out).unwrap_or_else(|| unreachable!("a new Arc is unique"));
        let mut sealed = self.sealer.seal(segments, dest, buf);
        if sealed == Err(SealError::EpochSpent) {
            let next = self.epochs.next_epoch()?;
            if !self.sealer.renew(next) {
                return Err(io::Error::other("the epoch source went backwards"));
            }
            sealed = self.sealer.seal(segments, dest, buf);
        }
        match sealed {
            Ok(_) => Ok(out),
            Err(e) => Err(io::Error::other(format!("sealing refused: {e:?}"))),
        }
    }

    /// Open a datagram from `from` in place; the frame is `buf[..n]`.
    pub(crate) fn open(&mut self, from: NodeId, buf: &mut [u8]) -> Result<usize, OpenError> {
        self.opener.open(from, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpg_core::seal::{Mode, SoftAesGcm};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn ring_passes_the_known_answer() {
        assert!(seal::known_answer(RingAesGcm::with_key));
    }

    /// ring and the portable cipher give the same datagrams: a node built
    /// either way talks to the other.
    #[test]
    fn ring_and_soft_interoperate() {
        for mode in [Mode::Encrypt, Mode::Authenticate] {
            let m = KeyMaterial::derive(
                &[5u8; 31].iter().chain(&[6]).copied().collect::<Vec<_>>(),
                "c",
                mode,
            )
            .unwrap();
            let hard = || Key::new(&m, RingAesGcm::with_key(m.aes256_key()));
            let soft = || Key::new(&m, SoftAesGcm::new(&m));
            let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let mut a = vec![0u8; frame.len() + SEAL_OVERHEAD];
            let mut b = a.clone();
            Sealer::new(hard(), 4, 9)
                .seal([&frame[..1000], &frame[1000..]], 0, &mut a)
                .unwrap();
            Sealer::new(soft(), 4, 9)
                .seal([&frame, &[]], 0, &mut b)
                .unwrap();
            assert_eq!(a, b, "{mode:?}");
            let n = Opener::new(soft(), 1).open(4, &mut a).unwrap();
            assert_eq!(&a[..n], &frame[..]);
            let n = Opener::new(hard(), 1).open(4, &mut b).unwrap();
            assert_eq!(&b[..n], &frame[..]);
        }
    }

    struct Counting(AtomicU32);
    impl EpochSource for Counting {
        fn next_epoch(&self) -> io::Result<u32> {
            Ok(self.0.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    #[test]
    fn sealed_frames_open_once() {
        let key: Vec<u8> = (0..64u8).collect();
        let spec = SealSpec {
            key: Arc::new(KeyMaterial::derive(&key, "c", Mode::Encrypt).unwrap()),
            epochs: Arc::new(Counting(AtomicU32::new(100))),
        };
        let mut tx = FrameSeal::new(&spec, 1).unwrap();
        let mut rx = FrameSeal::new(&spec, 2).unwrap();
        let d = tx.seal([b"abc", b"def"], 2).unwrap();
        assert_eq!(
            FrameSeal::new(&spec, 3).unwrap().open(1, &mut d.to_vec()),
            Err(OpenError::Misdirected)
        );
        let mut v = d.to_vec();
        assert_eq!(rx.open(1, &mut v), Ok(6));
        assert_eq!(&v[..6], b"abcdef");
        assert_eq!(rx.open(1, &mut d.to_vec()), Err(OpenError::Replay));
    }
}

//! Zero-copy buffers: where they come from ([`ZcAllocator`]: the driver's
//! pool, or [`HeapZc`] for the loopback transport), what a [`ZcBuf`]
//! holds (a driver buffer, or below `zc_copy_threshold` a reusable heap
//! buffer), and the refusal that hands a buffer back ([`ZcSendError`]).

use std::any::Any;
use std::sync::Arc;

use cpg_core::engine::FrameBuf;
use cpg_core::CsError;

/// Allocates zero-copy buffers of the node's frame type.
pub(crate) trait ZcAllocator<F>: Send + Sync {
    /// A buffer with `len` payload bytes at `offset` (≥ `ZC_HEADROOM`),
    /// headroom in front of it.
    ///
    /// # Errors
    /// `TOO_BIG` above [`ZcAllocator::max_len`]; `TRY_AGAIN` when exhausted.
    fn alloc(&self, len: usize) -> Result<(F, usize), CsError>;
    /// Largest payload.
    fn max_len(&self) -> usize;
}

/// Zero-copy buffers on the heap (`Arc<[u8]>`), for the loopback transport.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeapZc {
    /// Largest payload.
    pub(crate) max: usize,
}

impl ZcAllocator<Arc<[u8]>> for HeapZc {
    fn alloc(&self, len: usize) -> Result<(Arc<[u8]>, usize), CsError> {
        if len > self.max {
            return Err(CsError::TooBig);
        }
        let h = cpg_core::limits::ZC_HEADROOM;
        Ok((Arc::from(vec![0u8; h + len]), h))
    }
    fn max_len(&self) -> usize {
        self.max
    }
}

/// The bytes behind a [`ZcBuf`]: a driver buffer of the node's frame type.
pub(crate) trait ZcStorage: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// A heap buffer below `zc_copy_threshold` (sent by copy).
    fn is_small(&self) -> bool {
        false
    }
}

/// A zero-copy buffer below `zc_copy_threshold`: on the heap, since its
/// message is copied into a packed frame anyway.
pub(crate) struct SmallZc(pub(crate) Vec<u8>);

impl ZcStorage for SmallZc {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
    fn is_small(&self) -> bool {
        true
    }
}

/// A driver buffer: `len` payload bytes at `start`, headroom in front.
pub(crate) struct ZcFrame<F> {
    pub(crate) buf: F,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

impl<F: FrameBuf + Send + Sync + 'static> ZcStorage for ZcFrame<F> {
    fn bytes(&self) -> &[u8] {
        &self.buf.as_ref()[self.start..self.start + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (s, l) = (self.start, self.len);
        // A ZcBuf never clones its buffer, so it is the only handle; a
        // buffer over memory this process must not write (a cpgd client's
        // slot, `Cpg::zcb_over_driver_buf`) has no writable bytes.
        match self.buf.unique_mut() {
            Some(b) => &mut b[s..s + l],
            None => &mut [],
        }
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A zero-copy buffer (`cpg_zcb_alloc`): write the message into it, then
/// move it into [`crate::Cpg::zcb_mcast_joined`]. Dereferences to its
/// payload bytes; dropping it frees it.
pub struct ZcBuf {
    pub(crate) storage: Box<dyn ZcStorage>,
    /// The node it belongs to (its state's address).
    pub(crate) node: usize,
}

impl ZcBuf {
    /// Payload capacity in bytes (the size asked for).
    pub fn capacity(&self) -> usize {
        self.storage.bytes().len()
    }
    /// Address of the first payload byte (for zero-copy proofs).
    pub fn as_ptr(&self) -> *const u8 {
        self.storage.bytes().as_ptr()
    }
}

impl std::ops::Deref for ZcBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.storage.bytes()
    }
}

impl std::ops::DerefMut for ZcBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.storage.bytes_mut()
    }
}

impl std::fmt::Debug for ZcBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZcBuf")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A failed [`crate::Cpg::zcb_mcast_joined`]: the code, and the buffer when
/// it was not consumed.
#[derive(Debug)]
pub struct ZcSendError {
    /// The status code.
    pub error: CsError,
    /// The buffer, back to the caller (retry, or free it).
    pub buf: Option<ZcBuf>,
}

impl std::fmt::Display for ZcSendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ZcSendError {}

impl From<ZcSendError> for CsError {
    fn from(e: ZcSendError) -> CsError {
        e.error
    }
}

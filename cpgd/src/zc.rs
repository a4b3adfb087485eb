//! A connection's zero-copy slots: `cpg_core::pool` bookkeeping over the
//! zero-copy region of the connection's memfd (no headroom: headers never
//! live in client memory, `docs/spec/ipc.md` §9).
//!
//! A slot the client names must be one `ZC_ALLOC` gave it and it still
//! owns; anything else is a lie and costs the connection.

use std::ops::Range;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use cpg_core::pool::{AllocError, PoolConfig, SlotId, SlotState, VecPool};
use cpg_core::CsError;
use cpg_ipc::SharedMem;
use cpg_uring::ExternalRegion;

/// A connection's zero-copy region as the io_uring driver sees it: memory
/// the daemon maps (read-write, so the kernel can pin it as a fixed buffer)
/// but never writes. Holding it keeps the mapping alive until the last send
/// from it is done, even after the connection closed.
#[derive(Debug)]
pub(crate) struct ConnRegion {
    /// Keeps the mapping `base` points into alive.
    _mem: Arc<SharedMem>,
    base: NonNull<u8>,
    len: usize,
    /// Starts (region offsets) of buffers no send or engine holds any more:
    /// their slots are free again (the daemon loop takes them).
    released: Mutex<Vec<usize>>,
}

impl ConnRegion {
    /// The region `off..off+len` of `mem`; `None` if empty or out of range.
    pub(crate) fn new(mem: Arc<SharedMem>, off: usize, len: usize) -> Option<ConnRegion> {
        let base = mem.range_ptr(off, len).filter(|_| len > 0)?;
        Some(ConnRegion {
            _mem: mem,
            base,
            len,
            released: Mutex::new(Vec::new()),
        })
    }

    /// The buffers released since the last call.
    pub(crate) fn take_released(&self) -> Vec<usize> {
        std::mem::take(&mut *self.released.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

// SAFETY: `base..base+len` lies in `mem`'s mapping (checked by `range_ptr`
// in `new`), which this value keeps alive (the `Arc`) and never remaps, so
// both values are constant and the memory stays mapped and readable until
// drop; `len` is at most the mapping's length, below `isize::MAX`. The
// pointer is only ever handed to the driver; the daemon does not write
// through it.
unsafe impl ExternalRegion for ConnRegion {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
    fn release(&self, range: Range<usize>) {
        // never panics: a poisoned lock is taken as it is
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(range.start);
    }
}

// SAFETY (for the auto traits): `NonNull` is not `Send`/`Sync`, but the
// pointer is only an address handed to the kernel; the memory behind it is
// shared memory reachable from any thread through the mapping as well.
unsafe impl Send for ConnRegion {}
// SAFETY: as above; `&ConnRegion` only reads constants or locks.
unsafe impl Sync for ConnRegion {}

/// Why a named slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotLie {
    /// Not a slot of this connection, or not owned by the client now.
    NotOwned,
    /// The range is outside the slot's payload.
    Range,
}

/// The slots of one connection.
#[derive(Debug)]
pub(crate) struct ZcSlots {
    pool: VecPool,
    /// Offset of the zero-copy region in the memfd.
    region: usize,
}

impl ZcSlots {
    pub(crate) fn new(config: &PoolConfig, region: usize) -> Option<ZcSlots> {
        Some(ZcSlots {
            pool: VecPool::new_vec(config).ok()?,
            region,
        })
    }

    /// `ZC_ALLOC`: a slot, its payload offset in the region, its capacity.
    pub(crate) fn alloc(&mut self, len: usize) -> Result<(SlotId, u64, u32), CsError> {
        let id = self.pool.alloc(len).map_err(|e| match e {
            AllocError::TooBig { .. } => CsError::TooBig,
            AllocError::Exhausted => CsError::TryAgain,
        })?;
        let off = self.pool.payload_offset(id).map_err(|_| CsError::Library)?;
        let class = self.pool.class_of(id).map_err(|_| CsError::Library)?;
        let cap = self
            .pool
            .class(class)
            .map(|c| c.payload_capacity)
            .unwrap_or(0);
        Ok((id, off as u64, u32::try_from(cap).unwrap_or(u32::MAX)))
    }

    /// `ZC_FREE`.
    pub(crate) fn free(&mut self, id: SlotId) -> Result<(), SlotLie> {
        self.owned(id)?;
        self.pool.release(id).map_err(|_| SlotLie::NotOwned)
    }

    fn owned(&self, id: SlotId) -> Result<(), SlotLie> {
        match self.pool.state(id) {
            Ok(SlotState::Owned) => Ok(()),
            _ => Err(SlotLie::NotOwned),
        }
    }

    /// `MCAST_ZC`: the memfd range of `len` bytes at `offset` of slot `id`'s
    /// payload, if the client owns the slot and the range lies inside it.
    pub(crate) fn range(
        &self,
        id: SlotId,
        offset: u32,
        len: u32,
    ) -> Result<(usize, usize), SlotLie> {
        self.owned(id)?;
        let class = self.pool.class_of(id).map_err(|_| SlotLie::NotOwned)?;
        let cap = self
            .pool
            .class(class)
            .map(|c| c.payload_capacity)
            .ok_or(SlotLie::NotOwned)?;
        let end = (offset as usize)
            .checked_add(len as usize)
            .ok_or(SlotLie::Range)?;
        if end > cap {
            return Err(SlotLie::Range);
        }
        let payload = self
            .pool
            .payload_offset(id)
            .map_err(|_| SlotLie::NotOwned)?;
        Ok((self.region + payload + offset as usize, len as usize))
    }

    /// The message left the slot (sent by copy, or refused): it is free.
    pub(crate) fn done(&mut self, id: SlotId) {
        let _ = self.pool.release(id);
    }

    /// The slot's payload went to the engine by reference: no longer the
    /// client's (naming it again is a lie) until [`ZcSlots::finished`].
    pub(crate) fn sent(&mut self, id: SlotId) {
        let _ = self.pool.enqueue(id);
    }

    /// The engine and every send are done with a slot [`ZcSlots::sent`]
    /// handed over: free.
    pub(crate) fn finished(&mut self, id: SlotId) {
        if matches!(self.pool.state(id), Ok(SlotState::Queued)) {
            let _ = self.pool.begin_send(id);
            let _ = self.pool.on_send_complete(id);
            let _ = self.pool.mark_stable(id);
        }
    }

    /// Offset of the slot's payload in the zero-copy region.
    pub(crate) fn payload_offset(&self, id: SlotId) -> Option<usize> {
        self.pool.payload_offset(id).ok()
    }

    /// Slots the client holds now.
    pub(crate) fn in_use(&self) -> usize {
        self.pool.slot_count() - self.pool.free_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpg_core::pool::ClassSpec;

    #[test]
    fn alloc_range_free_and_lies() {
        let cfg = PoolConfig::new(0, &[ClassSpec::new(4096, 2), ClassSpec::new(65536, 1)]).unwrap();
        let mut z = ZcSlots::new(&cfg, 1 << 20).unwrap();
        let (a, off, cap) = z.alloc(100).unwrap();
        assert_eq!(cap, 4096);
        assert_eq!(z.range(a, 0, 100), Ok(((1 << 20) + off as usize, 100)));
        assert_eq!(z.range(a, 4000, 100), Err(SlotLie::Range));
        assert_eq!(z.range(a, u32::MAX, 2), Err(SlotLie::Range));
        let forged = SlotId::from_parts(a.index(), a.generation().wrapping_add(1));
        assert_eq!(z.range(forged, 0, 1), Err(SlotLie::NotOwned));
        assert_eq!(
            z.range(SlotId::from_parts(99, 0), 0, 1),
            Err(SlotLie::NotOwned)
        );
        assert_eq!(z.alloc(70000), Err(CsError::TooBig));
        let (b, _, _) = z.alloc(5000).unwrap();
        assert_eq!(z.alloc(5000), Err(CsError::TryAgain));
        assert_eq!(z.in_use(), 2);
        z.free(b).unwrap();
        assert_eq!(z.free(b), Err(SlotLie::NotOwned), "double free is a lie");
        z.done(a);
        assert_eq!(z.in_use(), 0);
    }
}

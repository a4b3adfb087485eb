//! The handle table: `cpg_handle_t` and `cpg_iteration_handle_t` values
//! as Corosync makes them (a random check in the high 32 bits, a slot
//! index in the low 32), never pointers. A value whose slot is empty, of
//! another kind, or whose check differs (a finalized handle whose slot was
//! reused, garbage) is `BAD_HANDLE`; nothing is dereferenced on its word.
//!
//! The table lock is held only to look a value up or change the table,
//! never while a request waits or a callback runs: a lookup hands out an
//! `Arc` of the entry, so a handle finalized by one thread stays alive
//! until the calls other threads are making on it return.
//!
//! After `fork()` the child inherits the parent's connections (their fds
//! and shared memory), which it must not use: that would be the parent's
//! traffic. A `pthread_atfork` handler counts forks; an entry made before
//! the last fork answers `BAD_HANDLE` and is never touched (not even
//! finalized, which would close the parent's connection). The same
//! handler holds the table lock across `fork()`, so the child never
//! inherits it locked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use cpg_core::CsError;
use cpg_std::cpg::{Iteration, ZcBuf};
use cpg_std::Cpg;

/// An open `cpg_handle_t`.
pub(crate) struct Handle {
    pub(crate) cpg: Cpg,
    /// The fork generation it was made in.
    generation: u32,
    /// `cpg_context_set`'s pointer.
    pub(crate) context: AtomicUsize,
    /// The buffers `cpg_zcb_alloc` handed out, by address.
    pub(crate) zc: Mutex<HashMap<usize, ZcBuf>>,
}

/// An open `cpg_iteration_handle_t`.
pub(crate) struct IterHandle {
    /// Its `cpg_handle_t` (finalizing that one ends this one).
    pub(crate) parent: u64,
    generation: u32,
    pub(crate) it: Mutex<Iteration>,
}

enum Obj {
    /// Taken by an initialize that has not finished (its callbacks know
    /// the value before the connection exists).
    Reserved,
    Handle(Arc<Handle>),
    Iter(Arc<IterHandle>),
}

struct Slot {
    check: u32,
    obj: Option<Obj>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    slots: Vec::new(),
    free: Vec::new(),
});

/// Forks seen by this process (bumped in the child).
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

static ATFORK: Once = Once::new();

thread_local! {
    /// The table lock, held by the forking thread across `fork()`.
    static HELD: RefCell<Option<MutexGuard<'static, Table>>> = const { RefCell::new(None) };
}

extern "C" fn atfork_prepare() {
    let g = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    HELD.with(|h| *h.borrow_mut() = Some(g));
}

extern "C" fn atfork_parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn atfork_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    HELD.with(|h| drop(h.borrow_mut().take()));
}

fn table() -> MutexGuard<'static, Table> {
    ATFORK.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` of this
        // library, valid while it is loaded; glibc's pthread_atfork records
        // this library's `__dso_handle` and drops them at its dlclose.
        unsafe {
            libc::pthread_atfork(
                Some(atfork_prepare),
                Some(atfork_parent),
                Some(atfork_child),
            );
        }
    });
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

fn generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A random check value: never 0 (no handle) nor all ones (libqb's
/// "skip the check" value).
fn random_check() -> u32 {
    loop {
        let mut b = [0u8; 4];
        // SAFETY: `b` is 4 writable bytes; getrandom writes at most that.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let v = if n == 4 {
            u32::from_ne_bytes(b)
        } else {
            // no getrandom (very old kernels): time and a counter
            static N: AtomicU32 = AtomicU32::new(0x9e37_79b9);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            t.wrapping_mul(0x85eb_ca6b) ^ N.fetch_add(0x9e37_79b9, Ordering::Relaxed)
        };
        if v != 0 && v != u32::MAX {
            return v;
        }
    }
}

fn split(h: u64) -> (u32, usize) {
    ((h >> 32) as u32, (h & 0xFFFF_FFFF) as usize)
}

/// Take a slot for a handle being made; its value, before the connection
/// exists (the callbacks carry it).
pub(crate) fn reserve() -> Result<u64, CsError> {
    let check = random_check();
    let mut t = table();
    let idx = match t.free.pop() {
        Some(i) => i,
        None => {
            if t.slots.len() >= u32::MAX as usize {
                return Err(CsError::NoResources);
            }
            t.slots.push(Slot {
                check: 0,
                obj: None,
            });
            (t.slots.len() - 1) as u32
        }
    };
    let s = &mut t.slots[idx as usize];
    s.check = check;
    s.obj = Some(Obj::Reserved);
    Ok((u64::from(check) << 32) | u64::from(idx))
}

/// Fill a reserved slot with its handle.
pub(crate) fn fill(h: u64, cpg: Cpg) {
    let handle = Arc::new(Handle {
        cpg,
        generation: generation(),
        context: AtomicUsize::new(0),
        zc: Mutex::new(HashMap::new()),
    });
    let (check, idx) = split(h);
    let mut t = table();
    if let Some(s) = t.slots.get_mut(idx) {
        if s.check == check {
            s.obj = Some(Obj::Handle(handle));
        }
    }
}

/// Give a slot back (a failed initialize, a finalize).
fn release(t: &mut Table, idx: usize) {
    if let Some(s) = t.slots.get_mut(idx) {
        s.obj = None;
        s.check = 0;
        t.free.push(idx as u32);
    }
}

/// Give a reserved slot back (the initialize failed).
pub(crate) fn unreserve(h: u64) {
    let (check, idx) = split(h);
    let mut t = table();
    if t.slots.get(idx).is_some_and(|s| s.check == check) {
        release(&mut t, idx);
    }
}

/// The open handle `h` names.
///
/// # Errors
/// `BAD_HANDLE` for anything else (empty, another kind, a stale check,
/// made before a fork).
pub(crate) fn handle(h: u64) -> Result<Arc<Handle>, CsError> {
    let (check, idx) = split(h);
    let t = table();
    match t.slots.get(idx) {
        Some(Slot {
            check: c,
            obj: Some(Obj::Handle(x)),
        }) if *c == check && x.generation == generation() => Ok(x.clone()),
        _ => Err(CsError::BadHandle),
    }
}

/// Take handle `h` out of the table (finalize) with its iterations.
///
/// # Errors
/// `BAD_HANDLE` as for [`handle`].
pub(crate) fn remove_handle(h: u64) -> Result<(Arc<Handle>, Vec<Arc<IterHandle>>), CsError> {
    let (check, idx) = split(h);
    let mut t = table();
    let x = match t.slots.get(idx) {
        Some(Slot {
            check: c,
            obj: Some(Obj::Handle(x)),
        }) if *c == check && x.generation == generation() => x.clone(),
        _ => return Err(CsError::BadHandle),
    };
    release(&mut t, idx);
    let iters: Vec<usize> = t
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.obj {
            Some(Obj::Iter(it)) if it.parent == h => Some(i),
            _ => None,
        })
        .collect();
    let mut gone = Vec::with_capacity(iters.len());
    for i in iters {
        if let Some(Obj::Iter(it)) = t.slots[i].obj.take() {
            gone.push(it);
        }
        release(&mut t, i);
    }
    Ok((x, gone))
}

/// Register an iteration of handle `parent`; its value.
///
/// # Errors
/// `NO_RESOURCES` when the table is full.
pub(crate) fn add_iteration(parent: u64, it: Iteration) -> Result<u64, CsError> {
    let h = reserve()?;
    let (check, idx) = split(h);
    let mut t = table();
    let entry = Arc::new(IterHandle {
        parent,
        generation: generation(),
        it: Mutex::new(it),
    });
    match t.slots.get_mut(idx) {
        Some(s) if s.check == check => s.obj = Some(Obj::Iter(entry)),
        _ => return Err(CsError::Library),
    }
    Ok(h)
}

/// The open iteration `h` names.
///
/// # Errors
/// `BAD_HANDLE` as for [`handle`].
pub(crate) fn iteration(h: u64) -> Result<Arc<IterHandle>, CsError> {
    let (check, idx) = split(h);
    let t = table();
    match t.slots.get(idx) {
        Some(Slot {
            check: c,
            obj: Some(Obj::Iter(x)),
        }) if *c == check && x.generation == generation() => Ok(x.clone()),
        _ => Err(CsError::BadHandle),
    }
}

/// Take iteration `h` out of the table.
///
/// # Errors
/// `BAD_HANDLE` as for [`handle`].
pub(crate) fn remove_iteration(h: u64) -> Result<Arc<IterHandle>, CsError> {
    let (check, idx) = split(h);
    let mut t = table();
    let x = match t.slots.get(idx) {
        Some(Slot {
            check: c,
            obj: Some(Obj::Iter(x)),
        }) if *c == check && x.generation == generation() => x.clone(),
        _ => return Err(CsError::BadHandle),
    };
    release(&mut t, idx);
    Ok(x)
}

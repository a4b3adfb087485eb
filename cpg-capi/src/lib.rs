//! `libcpg.so.4`: Corosync's CPG C API over cpgd, so programs written for
//! Corosync's libcpg run unchanged (`LD_LIBRARY_PATH`, or installed in its
//! place) against `cpgd`.
//!
//! Every function is [`cpg_std::Cpg`] opened with [`Cpg::connect`]: this
//! crate translates C arguments and results and speaks no protocol of its
//! own. The behaviour is `docs/spec/cpg-api.md` (section 0: our codes and
//! fixes); what is particular to the C ABI:
//!
//! | topic | here |
//! |---|---|
//! | handles | Corosync-style `u64` values of a table ([`table`]): stale, garbage and finalized ones are `CS_ERR_BAD_HANDLE`, never a crash |
//! | `fork()` | a handle made before the last fork is `CS_ERR_BAD_HANDLE` in the child, and never touched there (the connection is the parent's) |
//! | bad input | NULL pointers and unknown enum values are `CS_ERR_INVALID_PARAM`, names over 128 bytes `CS_ERR_NAME_TOO_LONG`, checked before anything is sent |
//! | panics | caught at every exported function (`CS_ERR_LIBRARY`), never unwound into C |
//! | callbacks | run in the thread calling `cpg_dispatch`, no lock of this library held: they may call anything, `cpg_finalize` of their own handle included |
//! | `cpg_membership_get` | `*member_list_entries` is the capacity (as Corosync's man page says): never written past; a list that does not fit is `CS_ERR_NO_SPACE` with the count needed |
//! | `cpg_max_atomic_msgsize_get` | the daemon's `max_message_size` (64 MiB by default): every message up to it is delivered whole, as one callback, on every member or on none |
//! | zero copy | `cpg_zcb_alloc` hands out a slot of the connection's shared region (from 2 KiB; smaller buffers are heap, packed into a frame by copy anyway); `cpg_zcb_mcast_joined` keeps Corosync's contract that the buffer stays the caller's: the message is copied once into a fresh slot that travels to the kernel without another copy, and the caller's buffer is untouched |
//!
//! The shared library itself is linked by `build-lib.sh` from this
//! crate's static library, with a version script that exports exactly
//! Debian's 20 symbols at their versions (`libcpg.versions`).
//!
//! # Safety
//! The exported functions are `unsafe extern "C"`: their pointer
//! arguments must be NULL or valid for what the C prototype says, as for
//! any C library. Everything that can be checked is (NULL, lengths, enum
//! values, handles); raw pointers are read and written only in [`cptr`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod abi;
mod callbacks;
mod cptr;
mod table;

use std::ffi::{c_int, c_uint, c_void};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use cpg_core::types::CS_OK;
use cpg_core::{CsError, Guarantee};
use cpg_std::cpg::{DispatchFlags, FlowControlState, IterationType, ModelV1};
use cpg_std::Cpg;

use crate::abi::{
    cpg_address, cpg_callbacks_t, cpg_handle_t, cpg_iteration_description_t,
    cpg_iteration_handle_t, cpg_model_v1_data_t, cpg_name, cs_error_t, CPG_MODEL_V1,
};

/// Run `f` as an exported function's body: its result as a `cs_error_t`;
/// a panic is `CS_ERR_LIBRARY` (never unwound into C).
fn boundary(f: impl FnOnce() -> Result<(), CsError>) -> cs_error_t {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CS_OK,
        Ok(Err(e)) => e.code(),
        Err(_) => CsError::Library.code(),
    }
}

/// The guarantee argument: 0..=3, anything else `INVALID_PARAM`.
fn guarantee(g: c_uint) -> Result<Guarantee, CsError> {
    u8::try_from(g)
        .ok()
        .and_then(Guarantee::from_u8)
        .ok_or(CsError::InvalidParam)
}

/// Open a handle with `model` on the daemon (`$CPGD_SOCKET`, else the
/// default socket) and store it at `out`.
///
/// # Safety
/// `out` is NULL or writable.
unsafe fn open(out: *mut cpg_handle_t, data: Option<cpg_model_v1_data_t>) -> Result<(), CsError> {
    cptr::non_null(out)?;
    let flags = data.map_or(0, |d| d.flags);
    if flags & !cpg_std::MODEL_V1_DELIVER_INITIAL_TOTEM_CONF != 0 {
        return Err(CsError::InvalidParam);
    }
    let h = table::reserve()?;
    let model = match data {
        Some(d) => ModelV1 {
            deliver: callbacks::deliver(h, d.cpg_deliver_fn),
            confchg: callbacks::confchg(h, d.cpg_confchg_fn),
            totem_confchg: callbacks::totem(h, d.cpg_totem_confchg_fn),
            flags,
        },
        None => ModelV1::default(),
    };
    match Cpg::connect(None, model, None) {
        Ok(cpg) => {
            table::fill(h, cpg);
            // SAFETY: checked non-NULL above; writable (caller).
            unsafe { cptr::write(out, h) }
        }
        Err(e) => {
            table::unreserve(h);
            Err(e)
        }
    }
}

/// `cpg_initialize`: model v1 with `callbacks` (NULL: none), no totem
/// callback, no context.
///
/// # Safety
/// `handle` is NULL or writable; `callbacks` is NULL or a readable
/// `cpg_callbacks_t` whose non-NULL members are functions of their type.
#[no_mangle]
pub unsafe extern "C" fn cpg_initialize(
    handle: *mut cpg_handle_t,
    callbacks: *mut cpg_callbacks_t,
) -> cs_error_t {
    boundary(|| {
        // SAFETY: NULL or readable (caller).
        let cb = unsafe { cptr::read(callbacks.cast_const()) };
        let data = cb.map(|c| cpg_model_v1_data_t {
            model: CPG_MODEL_V1,
            cpg_deliver_fn: c.cpg_deliver_fn,
            cpg_confchg_fn: c.cpg_confchg_fn,
            cpg_totem_confchg_fn: None,
            flags: 0,
        });
        // SAFETY: `handle` as promised by the caller.
        unsafe { open(handle, data) }
    })
}

/// `cpg_model_initialize`: only `CPG_MODEL_V1`; `model_data` NULL or a
/// `cpg_model_v1_data_t` (its embedded model field is not checked, as in
/// Corosync); a flag other than `CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF`
/// is `CS_ERR_INVALID_PARAM`. `context` is `cpg_context_get`'s.
///
/// # Safety
/// `handle` is NULL or writable; `model_data` is NULL or a readable
/// `cpg_model_v1_data_t` whose non-NULL callbacks are functions of their
/// type.
#[no_mangle]
pub unsafe extern "C" fn cpg_model_initialize(
    handle: *mut cpg_handle_t,
    model: c_uint,
    model_data: *mut c_void,
    context: *mut c_void,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(handle)?;
        if model != CPG_MODEL_V1 {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: NULL or a readable cpg_model_v1_data_t (caller).
        let data = unsafe { cptr::read(model_data.cast_const().cast::<cpg_model_v1_data_t>()) };
        // SAFETY: `handle` as promised by the caller.
        unsafe { open(handle, data) }?;
        // SAFETY: `open` stored the new handle there.
        let h = unsafe { cptr::read(handle.cast_const()) }.ok_or(CsError::Library)?;
        table::handle(h)?
            .context
            .store(context as usize, Ordering::Relaxed);
        Ok(())
    })
}

/// `cpg_finalize`: the handle, its iterations and its zero-copy buffers
/// are gone whatever the daemon says; a joined handle leaves with reason
/// PROCDOWN; a `cpg_dispatch` blocked in another thread returns
/// `CS_ERR_BAD_HANDLE`. Callable from the handle's own callbacks.
#[no_mangle]
pub extern "C" fn cpg_finalize(handle: cpg_handle_t) -> cs_error_t {
    boundary(|| {
        let (h, iterations) = table::remove_handle(handle)?;
        // iterations first: each tells the daemon to drop its snapshot
        drop(iterations);
        let r = h.cpg.finalize();
        // the buffers' slots are freed by the daemon with the connection
        let bufs = std::mem::take(&mut *h.zc.lock().unwrap_or_else(|e| e.into_inner()));
        drop(bufs);
        r
    })
}

/// `cpg_fd_get`: the fd to poll for `POLLIN`; the same for the handle's
/// life.
///
/// # Safety
/// `fd` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_fd_get(handle: cpg_handle_t, fd: *mut c_int) -> cs_error_t {
    boundary(|| {
        cptr::non_null(fd)?;
        let h = table::handle(handle)?;
        let raw = h.cpg.fd_get()?.as_raw_fd();
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(fd, raw) }
    })
}

/// `cpg_max_atomic_msgsize_get`: the largest message the daemon takes,
/// every one of which is delivered whole, as one callback.
///
/// # Safety
/// `size` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_max_atomic_msgsize_get(
    handle: cpg_handle_t,
    size: *mut u32,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(size)?;
        let h = table::handle(handle)?;
        let max = h.cpg.max_message_size()?;
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(size, u32::try_from(max).unwrap_or(u32::MAX)) }
    })
}

/// `cpg_context_get`.
///
/// # Safety
/// `context` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_context_get(
    handle: cpg_handle_t,
    context: *mut *mut c_void,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(context)?;
        let h = table::handle(handle)?;
        let c = h.context.load(Ordering::Relaxed) as *mut c_void;
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(context, c) }
    })
}

/// `cpg_context_set`.
#[no_mangle]
pub extern "C" fn cpg_context_set(handle: cpg_handle_t, context: *mut c_void) -> cs_error_t {
    boundary(|| {
        let h = table::handle(handle)?;
        h.context.store(context as usize, Ordering::Relaxed);
        Ok(())
    })
}

/// `cpg_dispatch` in the four Corosync modes; callbacks run in this thread.
#[no_mangle]
pub extern "C" fn cpg_dispatch(handle: cpg_handle_t, dispatch_types: c_uint) -> cs_error_t {
    boundary(|| {
        let flags = match dispatch_types {
            1 => DispatchFlags::One,
            2 => DispatchFlags::All,
            3 => DispatchFlags::Blocking,
            4 => DispatchFlags::OneNonblocking,
            _ => return Err(CsError::InvalidParam),
        };
        let h = table::handle(handle)?;
        h.cpg.dispatch(flags)
    })
}

/// `cpg_join`. One group per handle.
///
/// # Safety
/// `group` is NULL or a readable `struct cpg_name`.
#[no_mangle]
pub unsafe extern "C" fn cpg_join(handle: cpg_handle_t, group: *const cpg_name) -> cs_error_t {
    boundary(|| {
        // SAFETY: NULL or readable (caller).
        let g = unsafe { cptr::group_name(group) }?;
        table::handle(handle)?.cpg.join(&g)
    })
}

/// `cpg_leave`: the joined group only (another name is `CS_ERR_NOT_EXIST`).
///
/// # Safety
/// `group` is NULL or a readable `struct cpg_name`.
#[no_mangle]
pub unsafe extern "C" fn cpg_leave(handle: cpg_handle_t, group: *const cpg_name) -> cs_error_t {
    boundary(|| {
        // SAFETY: NULL or readable (caller).
        let g = unsafe { cptr::group_name(group) }?;
        table::handle(handle)?.cpg.leave(&g)
    })
}

/// `cpg_mcast_joined`: the iovecs' bytes, concatenated, as one message.
///
/// # Safety
/// `iovec` is NULL or `iov_len` readable `struct iovec`s naming readable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn cpg_mcast_joined(
    handle: cpg_handle_t,
    guarantee: c_uint,
    iovec: *const libc::iovec,
    iov_len: c_uint,
) -> cs_error_t {
    boundary(|| {
        let g = self::guarantee(guarantee)?;
        // SAFETY: as promised by the caller; the slices live for this call.
        let iov = unsafe { cptr::iovecs(iovec, iov_len) }?;
        table::handle(handle)?.cpg.mcast_joined(g, &iov)
    })
}

/// `cpg_membership_get`: `*member_list_entries` is the capacity of
/// `member_list` on entry (negative: `CS_ERR_INVALID_PARAM`) and the count
/// on return; a list longer than the capacity is `CS_ERR_NO_SPACE` with
/// the count needed and nothing written.
///
/// # Safety
/// `group_name` is NULL or readable; `member_list_entries` NULL or
/// readable and writable; `member_list` NULL or `*member_list_entries`
/// writable entries.
#[no_mangle]
pub unsafe extern "C" fn cpg_membership_get(
    handle: cpg_handle_t,
    group_name: *mut cpg_name,
    member_list: *mut cpg_address,
    member_list_entries: *mut c_int,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(member_list)?;
        // SAFETY: NULL or readable (caller).
        let cap =
            unsafe { cptr::read(member_list_entries.cast_const()) }.ok_or(CsError::InvalidParam)?;
        let cap = usize::try_from(cap).map_err(|_| CsError::InvalidParam)?;
        // SAFETY: NULL or readable (caller).
        let g = unsafe { cptr::group_name(group_name.cast_const()) }?;
        let mut members = table::handle(handle)?.cpg.membership_get(&g)?;
        members.sort_by_key(|m| (m.nodeid, m.pid));
        let n = c_int::try_from(members.len()).map_err(|_| CsError::NoSpace)?;
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(member_list_entries, n) }?;
        if members.len() > cap {
            return Err(CsError::NoSpace);
        }
        for (i, m) in members.iter().enumerate() {
            let a = cpg_address {
                nodeid: m.nodeid,
                pid: m.pid,
                reason: 0,
            };
            // SAFETY: `i < members.len() <= cap` entries are writable
            // (caller: the capacity it gave).
            unsafe { cptr::write(member_list.add(i), a) }?;
        }
        Ok(())
    })
}

/// `cpg_local_get`: this node's id.
///
/// # Safety
/// `local_nodeid` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_local_get(
    handle: cpg_handle_t,
    local_nodeid: *mut c_uint,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(local_nodeid)?;
        let id = table::handle(handle)?.cpg.local_get()?;
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(local_nodeid, id) }
    })
}

/// `cpg_flow_control_state_get`: real (`docs/spec/cpg-api.md` §0).
///
/// # Safety
/// `flow_control_enabled` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_flow_control_state_get(
    handle: cpg_handle_t,
    flow_control_enabled: *mut c_uint,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(flow_control_enabled)?;
        let s = table::handle(handle)?.cpg.flow_control_state_get()?;
        let v = match s {
            FlowControlState::Disabled => 0,
            FlowControlState::Enabled => 1,
        };
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(flow_control_enabled, v) }
    })
}

/// `cpg_zcb_alloc`: a buffer of `size` bytes for `cpg_zcb_mcast_joined`
/// (from 2 KiB, a slot of the connection's shared region).
///
/// # Safety
/// `buffer` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_zcb_alloc(
    handle: cpg_handle_t,
    size: usize,
    buffer: *mut *mut c_void,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(buffer)?;
        let h = table::handle(handle)?;
        // never 0 bytes: every buffer has an address of its own
        let mut buf = h.cpg.zcb_alloc(size.max(1))?;
        let p = buf.as_mut_ptr();
        h.zc.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p as usize, buf);
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(buffer, p.cast::<c_void>()) }
    })
}

/// `cpg_zcb_free`: a buffer of this handle's `cpg_zcb_alloc` (any other
/// address is `CS_ERR_INVALID_PARAM`).
#[no_mangle]
pub extern "C" fn cpg_zcb_free(handle: cpg_handle_t, buffer: *mut c_void) -> cs_error_t {
    boundary(|| {
        let h = table::handle(handle)?;
        let buf =
            h.zc.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(buffer as usize))
                .ok_or(CsError::InvalidParam)?;
        h.cpg.zcb_free(buf)
    })
}

/// `cpg_zcb_mcast_joined`: the first `msg_len` bytes of a `cpg_zcb_alloc`
/// buffer of this handle. The buffer stays the caller's, unchanged
/// (Corosync's contract): its bytes are copied once into a fresh buffer
/// of the connection's shared region, which travels to the kernel without
/// another copy.
#[no_mangle]
pub extern "C" fn cpg_zcb_mcast_joined(
    handle: cpg_handle_t,
    guarantee: c_uint,
    msg: *mut c_void,
    msg_len: usize,
) -> cs_error_t {
    boundary(|| {
        let g = self::guarantee(guarantee)?;
        let h = table::handle(handle)?;
        let key = msg as usize;
        let cap = match h.zc.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            Some(b) => b.capacity(),
            None => return Err(CsError::InvalidParam),
        };
        if msg_len > h.cpg.max_message_size()? {
            return Err(CsError::TooBig);
        }
        if msg_len > cap {
            return Err(CsError::InvalidParam);
        }
        let mut fresh = h.cpg.zcb_alloc(msg_len.max(1))?;
        {
            let zc = h.zc.lock().unwrap_or_else(|e| e.into_inner());
            // freed by another thread meanwhile (the caller's race): nothing sent
            let src = zc.get(&key).ok_or(CsError::InvalidParam)?;
            fresh[..msg_len].copy_from_slice(&src[..msg_len]);
        }
        h.cpg
            .zcb_mcast_joined(g, fresh, msg_len)
            .map_err(|e| e.error)
    })
}

/// `cpg_iteration_initialize`: a snapshot of the group table
/// (`CPG_ITERATION_ONE_GROUP` needs a group, the others refuse one).
///
/// # Safety
/// `group` is NULL or readable; `cpg_iteration_handle` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_iteration_initialize(
    handle: cpg_handle_t,
    iteration_type: c_uint,
    group: *const cpg_name,
    cpg_iteration_handle: *mut cpg_iteration_handle_t,
) -> cs_error_t {
    boundary(|| {
        let g = if group.is_null() {
            None
        } else {
            // SAFETY: non-NULL and readable (caller).
            Some(unsafe { cptr::group_name(group) }?)
        };
        cptr::non_null(cpg_iteration_handle)?;
        let ty = match (iteration_type, g.is_some()) {
            (1, false) => IterationType::NameOnly,
            (2, true) => IterationType::OneGroup,
            (3, false) => IterationType::All,
            _ => return Err(CsError::InvalidParam),
        };
        let h = table::handle(handle)?;
        let it = h.cpg.iteration_initialize(ty, g.as_ref())?;
        let ih = table::add_iteration(handle, it)?;
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(cpg_iteration_handle, ih) }
    })
}

/// `cpg_iteration_next`: the next entry, `CS_ERR_NO_SECTIONS` past the end.
///
/// # Safety
/// `description` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cpg_iteration_next(
    handle: cpg_iteration_handle_t,
    description: *mut cpg_iteration_description_t,
) -> cs_error_t {
    boundary(|| {
        cptr::non_null(description)?;
        let it = table::iteration(handle)?;
        let e = it
            .it
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_entry()?;
        let d = cpg_iteration_description_t {
            group: cptr::c_name(&e.group),
            nodeid: e.nodeid,
            pid: e.pid,
        };
        // SAFETY: checked non-NULL; writable (caller).
        unsafe { cptr::write(description, d) }
    })
}

/// `cpg_iteration_finalize`.
#[no_mangle]
pub extern "C" fn cpg_iteration_finalize(handle: cpg_iteration_handle_t) -> cs_error_t {
    boundary(|| {
        let it = table::remove_iteration(handle)?;
        let r = it.it.lock().unwrap_or_else(|e| e.into_inner()).finalize();
        r
    })
}

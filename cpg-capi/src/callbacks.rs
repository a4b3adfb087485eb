//! The application's C callbacks as the Rust handle's closures: events
//! turned into C arguments (a `struct cpg_name`, `struct cpg_address`
//! arrays, a `struct cpg_ring_id`), then the function pointer called, in
//! the thread that called `cpg_dispatch`.

use std::ffi::c_void;

use cpg_core::{MemberAddr, Reason};
use cpg_std::cpg::{ConfChgFn, DeliverFn, TotemConfChgFn};

use crate::abi::{
    cpg_address, cpg_confchg_fn_t, cpg_deliver_fn_t, cpg_handle_t, cpg_ring_id,
    cpg_totem_confchg_fn_t,
};
use crate::cptr::c_name;

/// Above this a delivery's copy buffer is given back after the callback
/// (one huge message must not pin its size for the handle's life).
const SCRATCH_KEEP: usize = 1 << 20;

/// `deliver_fn` as a closure. `msg` is writable in C (programs fix byte
/// order in place), so the callback gets memory it may write: the
/// delivery's own copy where it has one (every delivery from cpgd), else a
/// copy in a buffer of this closure.
pub(crate) fn deliver(h: cpg_handle_t, f: cpg_deliver_fn_t) -> Option<DeliverFn> {
    let f = f?;
    let mut scratch: Vec<u8> = Vec::new();
    Some(Box::new(move |_, d| {
        let name = c_name(d.group);
        let len = d.msg.len();
        let msg = match d.writable() {
            Some(p) => p.as_ptr(),
            None => {
                scratch.clear();
                scratch.extend_from_slice(d.msg);
                scratch.as_mut_ptr()
            }
        };
        // Why this is sound: `f` is the application's deliver_fn (the contract of
        // cpg_initialize / cpg_model_initialize); every pointer passed is
        // valid for the call: `name` on this stack; `msg` either the
        // delivery's own writable copy of `len` bytes (`Delivery::writable`:
        // nothing reads `d.msg` after this call) or `scratch`, holding
        // exactly `len` bytes this closure owns.
        // SAFETY: the application's own deliver_fn, called with pointers valid for the call.
        unsafe {
            f(
                h,
                &name,
                d.sender.nodeid,
                d.sender.pid,
                msg.cast::<c_void>(),
                len,
            )
        };
        if scratch.capacity() > SCRATCH_KEEP {
            scratch = Vec::new();
        }
    }))
}

fn address(m: &MemberAddr, reason: u32) -> cpg_address {
    cpg_address {
        nodeid: m.nodeid,
        pid: m.pid,
        reason,
    }
}

/// `confchg_fn` as a closure: the three lists as `struct cpg_address`
/// arrays (members sorted by nodeid, then pid; reason 0 in the member
/// list).
pub(crate) fn confchg(h: cpg_handle_t, f: cpg_confchg_fn_t) -> Option<ConfChgFn> {
    let f = f?;
    let (mut members, mut left, mut joined) = (Vec::new(), Vec::new(), Vec::new());
    Some(Box::new(move |_, c| {
        let name = c_name(c.group);
        members.clear();
        members.extend(c.members.iter().map(|m| address(m, 0)));
        members.sort_by_key(|a: &cpg_address| (a.nodeid, a.pid));
        left.clear();
        left.extend(c.left.iter().map(|(m, r)| address(m, reason(*r))));
        joined.clear();
        joined.extend(c.joined.iter().map(|(m, r)| address(m, reason(*r))));
        // SAFETY: `f` is the application's confchg_fn; each array holds
        // exactly the count passed beside it and lives for the call.
        unsafe {
            f(
                h,
                &name,
                members.as_ptr(),
                members.len(),
                left.as_ptr(),
                left.len(),
                joined.as_ptr(),
                joined.len(),
            )
        };
    }))
}

fn reason(r: Reason) -> u32 {
    r as u32
}

/// `totem_confchg_fn` as a closure: the ring id by value, the node ids as
/// a `uint32_t` array.
pub(crate) fn totem(h: cpg_handle_t, f: cpg_totem_confchg_fn_t) -> Option<TotemConfChgFn> {
    let f = f?;
    Some(Box::new(move |_, ring, nodes| {
        let id = cpg_ring_id {
            nodeid: ring.rep,
            seq: ring.seq,
        };
        // SAFETY: `f` is the application's totem_confchg_fn; `nodes` is a
        // slice of `u32` (NodeId) of the count passed, alive for the call.
        unsafe { f(h, id, nodes.len() as u32, nodes.as_ptr()) };
    }))
}

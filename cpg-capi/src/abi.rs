//! The C types of `<corosync/cpg.h>` and `<corosync/corotypes.h>` as
//! `#[repr(C)]` mirrors, pinned to Corosync's layout at compile time (the
//! C side is pinned by `tests/c/abi.c`, compiled against both headers).
//!
//! Enumerations cross the boundary as their integer type: a C caller may
//! pass any value, and every value is checked before it is believed.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_uint, c_void};
use std::mem::{offset_of, size_of};

/// `cs_error_t`: a C enum of non-negative values, so an `unsigned int`.
pub type cs_error_t = c_uint;
/// `cpg_handle_t`.
pub type cpg_handle_t = u64;
/// `cpg_iteration_handle_t`.
pub type cpg_iteration_handle_t = u64;

/// `CPG_MAX_NAME_LENGTH`.
pub const CPG_MAX_NAME_LENGTH: usize = 128;
/// `CPG_MODEL_V1`.
pub const CPG_MODEL_V1: c_uint = 1;

/// `struct cpg_name`: `length` bytes of `value`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cpg_name {
    pub length: u32,
    pub value: [c_char; CPG_MAX_NAME_LENGTH],
}

/// `struct cpg_address`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct cpg_address {
    pub nodeid: u32,
    pub pid: u32,
    pub reason: u32,
}

/// `struct cpg_ring_id` (4 bytes of padding after `nodeid`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct cpg_ring_id {
    pub nodeid: u32,
    pub seq: u64,
}

/// `struct cpg_iteration_description_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cpg_iteration_description_t {
    pub group: cpg_name,
    pub nodeid: u32,
    pub pid: u32,
}

/// `cpg_deliver_fn_t`.
pub type cpg_deliver_fn_t = Option<
    unsafe extern "C" fn(
        handle: cpg_handle_t,
        group_name: *const cpg_name,
        nodeid: u32,
        pid: u32,
        msg: *mut c_void,
        msg_len: usize,
    ),
>;

/// `cpg_confchg_fn_t`.
pub type cpg_confchg_fn_t = Option<
    unsafe extern "C" fn(
        handle: cpg_handle_t,
        group_name: *const cpg_name,
        member_list: *const cpg_address,
        member_list_entries: usize,
        left_list: *const cpg_address,
        left_list_entries: usize,
        joined_list: *const cpg_address,
        joined_list_entries: usize,
    ),
>;

/// `cpg_totem_confchg_fn_t`.
pub type cpg_totem_confchg_fn_t = Option<
    unsafe extern "C" fn(
        handle: cpg_handle_t,
        ring_id: cpg_ring_id,
        member_list_entries: u32,
        member_list: *const u32,
    ),
>;

/// `cpg_callbacks_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cpg_callbacks_t {
    pub cpg_deliver_fn: cpg_deliver_fn_t,
    pub cpg_confchg_fn: cpg_confchg_fn_t,
}

/// `cpg_model_v1_data_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cpg_model_v1_data_t {
    pub model: c_uint,
    pub cpg_deliver_fn: cpg_deliver_fn_t,
    pub cpg_confchg_fn: cpg_confchg_fn_t,
    pub cpg_totem_confchg_fn: cpg_totem_confchg_fn_t,
    pub flags: c_uint,
}

// Corosync's layout on LP64 (docs/spec/cpg-api.md §3).
const _: () = assert!(size_of::<cpg_name>() == 132);
const _: () = assert!(offset_of!(cpg_name, value) == 4);
const _: () = assert!(size_of::<cpg_address>() == 12);
const _: () = assert!(size_of::<cpg_ring_id>() == 16);
const _: () = assert!(offset_of!(cpg_ring_id, seq) == 8);
const _: () = assert!(size_of::<cpg_iteration_description_t>() == 140);
const _: () = assert!(offset_of!(cpg_iteration_description_t, nodeid) == 132);
const _: () = assert!(offset_of!(cpg_iteration_description_t, pid) == 136);
const _: () = assert!(size_of::<cpg_callbacks_t>() == 16);
const _: () = assert!(size_of::<cpg_model_v1_data_t>() == 40);
const _: () = assert!(offset_of!(cpg_model_v1_data_t, cpg_deliver_fn) == 8);
const _: () = assert!(offset_of!(cpg_model_v1_data_t, cpg_totem_confchg_fn) == 24);
const _: () = assert!(offset_of!(cpg_model_v1_data_t, flags) == 32);

//! Raw pointers from C, through a few small helpers: every other module
//! works with Rust values. NULL is always checked here; what cannot be
//! checked (that a non-NULL pointer names memory of the right size) is the
//! C caller's side of the contract, as for any C library.

use std::ffi::c_uint;
use std::io::IoSlice;

use cpg_core::{CsError, GroupName};

use crate::abi::{cpg_name, CPG_MAX_NAME_LENGTH};

/// The value `p` points to; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a readable `T` (any alignment).
pub(crate) unsafe fn read<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller promises a readable `T` there;
    // unaligned reads make no alignment demand on C memory.
    Some(unsafe { p.read_unaligned() })
}

/// Store `v` where `p` points; `Err(INVALID_PARAM)` for NULL.
///
/// # Safety
/// `p` is NULL or points to a writable `T` (any alignment).
pub(crate) unsafe fn write<T>(p: *mut T, v: T) -> Result<(), CsError> {
    if p.is_null() {
        return Err(CsError::InvalidParam);
    }
    // SAFETY: non-NULL, and the caller promises a writable `T` there.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Fail with `INVALID_PARAM` for a NULL out-pointer (checked before
/// anything is done, so a call with one has no effect).
pub(crate) fn non_null<T>(p: *const T) -> Result<(), CsError> {
    if p.is_null() {
        Err(CsError::InvalidParam)
    } else {
        Ok(())
    }
}

/// The group a `const struct cpg_name *` names: `length` bytes of `value`
/// (the length counts; a trailing NUL is part of the name).
///
/// # Errors
/// `INVALID_PARAM` for NULL, `NAME_TOO_LONG` above 128 bytes.
///
/// # Safety
/// `p` is NULL or points to a readable `struct cpg_name`.
pub(crate) unsafe fn group_name(p: *const cpg_name) -> Result<GroupName, CsError> {
    if p.is_null() {
        return Err(CsError::InvalidParam);
    }
    // SAFETY: non-NULL and a readable `struct cpg_name` (caller), so its
    // `length` field is readable; no reference to C memory is made.
    let len = unsafe { std::ptr::addr_of!((*p).length).read_unaligned() } as usize;
    if len > CPG_MAX_NAME_LENGTH {
        return Err(CsError::NameTooLong);
    }
    // SAFETY: `value` is 128 readable bytes of the same struct and
    // `len <= 128`; the bytes are copied out at once (`GroupName::new`).
    let bytes =
        unsafe { std::slice::from_raw_parts(std::ptr::addr_of!((*p).value).cast::<u8>(), len) };
    GroupName::new(bytes)
}

/// A group name as C sees it (the unused tail zeroed).
pub(crate) fn c_name(group: &GroupName) -> cpg_name {
    let mut n = cpg_name {
        length: group.len() as u32,
        value: [0; CPG_MAX_NAME_LENGTH],
    };
    for (d, s) in n.value.iter_mut().zip(group.as_bytes()) {
        *d = *s as std::ffi::c_char;
    }
    n
}

/// The buffers of a call's iovecs: up to 4 on the stack (a send of one or
/// a few iovecs allocates nothing), more in a `Vec`.
pub(crate) struct Iovecs<'a> {
    few: [IoSlice<'a>; 4],
    len: usize,
    many: Vec<IoSlice<'a>>,
}

impl<'a> Iovecs<'a> {
    fn push(&mut self, s: IoSlice<'a>) {
        if !self.many.is_empty() {
            self.many.push(s);
        } else if self.len < self.few.len() {
            self.few[self.len] = s;
            self.len += 1;
        } else {
            self.many.reserve(self.len + 1);
            self.many.extend_from_slice(&self.few);
            self.many.push(s);
        }
    }
}

impl<'a> std::ops::Deref for Iovecs<'a> {
    type Target = [IoSlice<'a>];
    fn deref(&self) -> &[IoSlice<'a>] {
        if self.many.is_empty() {
            &self.few[..self.len]
        } else {
            &self.many
        }
    }
}

/// The buffers of `iov_len` iovecs at `iov`.
///
/// # Errors
/// `INVALID_PARAM` for a NULL array with entries, or a NULL base with a
/// length; `TOO_BIG` when the lengths add up past `isize::MAX`.
///
/// # Safety
/// `iov` is NULL or points to `iov_len` readable `struct iovec`s, each
/// naming `iov_len` readable bytes (or a NULL base with length 0), valid
/// for `'a`.
pub(crate) unsafe fn iovecs<'a>(
    iov: *const libc::iovec,
    iov_len: c_uint,
) -> Result<Iovecs<'a>, CsError> {
    let n = iov_len as usize;
    let mut out = Iovecs {
        few: [IoSlice::new(&[]); 4],
        len: 0,
        many: Vec::new(),
    };
    if n == 0 {
        return Ok(out);
    }
    if iov.is_null() {
        return Err(CsError::InvalidParam);
    }
    let mut total: usize = 0;
    for i in 0..n {
        // SAFETY: `i < iov_len` entries are readable (caller).
        let v = unsafe { iov.add(i).read_unaligned() };
        total = total.checked_add(v.iov_len).ok_or(CsError::TooBig)?;
        if total > isize::MAX as usize {
            return Err(CsError::TooBig);
        }
        if v.iov_len == 0 {
            out.push(IoSlice::new(&[]));
            continue;
        }
        if v.iov_base.is_null() {
            return Err(CsError::InvalidParam);
        }
        // SAFETY: the caller promises `iov_len` readable bytes at a
        // non-NULL base for `'a`; the length is at most isize::MAX.
        let bytes = unsafe { std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len) };
        out.push(IoSlice::new(bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_keep_their_order_on_the_stack_and_past_it() {
        let data: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        for n in 0..=data.len() {
            let mut raw: Vec<libc::iovec> = data[..n]
                .iter()
                .map(|d| libc::iovec {
                    iov_base: d.as_ptr() as *mut libc::c_void,
                    iov_len: d.len(),
                })
                .collect();
            if n == 2 {
                // an empty iovec may have a NULL base
                raw[1] = libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
            }
            // SAFETY: `raw` names `n` live buffers of `data`.
            let got = unsafe { iovecs(raw.as_ptr(), n as c_uint) }.unwrap();
            let got: Vec<&[u8]> = got.iter().map(|s| &**s).collect();
            let want: Vec<&[u8]> = (0..n)
                .map(|i| {
                    if n == 2 && i == 1 {
                        &[][..]
                    } else {
                        &data[i][..]
                    }
                })
                .collect();
            assert_eq!(got, want, "{n} iovecs");
        }
        // SAFETY: a NULL array with entries is refused before any read.
        let e = unsafe { iovecs(std::ptr::null(), 1) }.err();
        assert_eq!(e, Some(CsError::InvalidParam));
    }
}

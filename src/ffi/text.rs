//! Strings across the boundary: checked input strings, caller-buffer output,
//! and the per-thread message of the last failed call.

use super::result::vic_result;
use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr};

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub fn set_last_error(code: vic_result, message: &str) {
    let name = code.name();
    LAST_ERROR.with(|e| *e.borrow_mut() = format!("{name}: {message}"));
}

/// Record `err` as this thread's last error and return its code.
pub fn fail(err: &Error) -> vic_result {
    let code = vic_result::from(err.kind);
    set_last_error(code, &err.message);
    code
}

pub fn invalid(message: &str) -> vic_result {
    set_last_error(vic_result::InvalidArgument, message);
    vic_result::InvalidArgument
}

/// Borrow a NUL-terminated UTF-8 string from C.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string alive for `'a`.
pub unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, vic_result> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| invalid(&format!("{what} is not valid UTF-8: {e}")))
}

/// Copy `text` plus a NUL into `buf` of `len` bytes; `*out_n` gets the text
/// length (without the NUL) whether or not it fit.
///
/// # Safety
/// `buf` is NULL or valid for `len` writable bytes; `out_n` is NULL or valid.
pub unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize, out_n: *mut usize) -> vic_result {
    if out_n.is_null() {
        return invalid("out_n is NULL");
    }
    // SAFETY: checked non-NULL above; valid per the caller's contract.
    unsafe { *out_n = text.len() };
    if buf.is_null() || len <= text.len() {
        if !buf.is_null() && len > 0 {
            // SAFETY: at least one writable byte.
            unsafe { *buf = 0 };
        }
        return vic_result::BufferTooSmall;
    }
    // SAFETY: `len > text.len()`, so text plus NUL fits; the regions cannot
    // overlap because `text` is Rust-owned.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    vic_result::Ok
}

/// Copy the message of the last call that failed on this thread.
///
/// The text starts with the result name, e.g. `INVALID_ARGUMENT: options:
/// unknown field ...`; it is empty when no call failed yet on this thread.
/// Write the length of the text (without NUL) to `*out_n`, and the text
/// plus a NUL into `buf` when `len` is larger than that length.
///
/// Returns OK, BUFFER_TOO_SMALL (call again with `len >= *out_n + 1`; `buf`
/// may be NULL to ask for the length), or INVALID_ARGUMENT if `out_n` is
/// NULL. The caller owns `buf`. Never blocks; the message is per thread.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `out_n` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vic_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> vic_result {
    super::panic::guard(|| {
        let text = LAST_ERROR.with(|e| e.borrow().clone());
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&text, buf, len, out_n) }
    })
}

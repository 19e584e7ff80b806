//! Library version.

use std::ffi::c_char;

/// The library version, e.g. "0.1.0" (also VICPULL_VERSION in the header).
///
/// Returns a static NUL-terminated string: never NULL, never freed.
/// Never blocks; any thread.
#[no_mangle]
pub extern "C" fn vic_version() -> *const c_char {
    super::panic::guard(|| concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast())
}

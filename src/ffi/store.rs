//! Store maintenance from C.

use super::panic::guard;
use super::result::vic_result;
use super::text::{self, c_str};
use crate::store::Store;
use std::ffi::c_char;
use std::time::Duration;

/// Remove resumable partial downloads older than `max_age_secs`, then the
/// oldest ones until the rest fit in `max_total_bytes`, plus temp files
/// left by processes that died. Partials another pull is downloading right
/// now are left alone. Pass 0, 0 to remove every idle partial.
///
/// `store` is the layout directory (borrowed for the call). On OK the
/// number of files and bytes removed go to `*out_removed` and `*out_bytes`
/// (either may be NULL). Nothing is ever created: a path that holds no
/// store reports 0 files. Returns OK, INVALID_ARGUMENT (NULL, empty or
/// non-UTF-8 path) or STORE_IO. Blocks on file I/O; any thread.
///
/// # Safety
/// `store` is NULL or a NUL-terminated string; each out pointer is NULL or
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vic_store_purge_partials(
    store: *const c_char,
    max_age_secs: u64,
    max_total_bytes: u64,
    out_removed: *mut u64,
    out_bytes: *mut u64,
) -> vic_result {
    guard(|| {
        // SAFETY: caller contract: NULL or a NUL-terminated string.
        let path = match unsafe { c_str(store, "store") } {
            Ok(p) => p,
            Err(code) => return code,
        };
        let report = Store::existing(std::path::Path::new(path))
            .and_then(|s| s.purge_partials(Duration::from_secs(max_age_secs), max_total_bytes));
        match report {
            Ok(r) => {
                // SAFETY: each is NULL or valid for a write.
                unsafe {
                    if let Some(p) = out_removed.as_mut() {
                        *p = r.removed;
                    }
                    if let Some(p) = out_bytes.as_mut() {
                        *p = r.bytes;
                    }
                }
                vic_result::Ok
            }
            Err(e) => text::fail(&e),
        }
    })
}

//! No panic crosses `extern "C"`: each export runs its body in `guard`, and
//! the return type decides what a caught panic turns into.

use super::result::vic_result;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The value an export returns when its body panicked.
pub trait Fallback {
    fn on_panic() -> Self;
}

impl Fallback for vic_result {
    fn on_panic() -> Self {
        vic_result::Internal
    }
}

impl Fallback for () {
    fn on_panic() -> Self {}
}

impl Fallback for *const c_char {
    fn on_panic() -> Self {
        std::ptr::null()
    }
}

/// Run an export's body, turning a panic into its fallback and recording
/// the panic text as this thread's last error.
pub fn guard<R: Fallback>(body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let what = panic_text(payload.as_ref());
            super::text::set_last_error(vic_result::Internal, &format!("internal panic: {what}"));
            R::on_panic()
        }
    }
}

pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

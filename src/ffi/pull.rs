//! `vic_pull`: one image pull driven from C.
//!
//! Lifecycle: `vic_pull_start` returns a handle at once; the pull runs on
//! library threads and reports through the callbacks. `vic_pull_poll` reads
//! state and counters (optionally waiting), `vic_pull_cancel` asks it to
//! stop, `vic_pull_free` ends it and releases the handle. Callbacks of one
//! pull run on one library thread, in order, never concurrently; `on_done`
//! runs exactly once and last, then the finalizer.

use super::callbacks::{self, vic_callbacks, Outcome, Shared};
use super::panic::guard;
use super::result::vic_result;
use super::text::{self, c_str, copy_out};
use crate::options::PullOptions;
use crate::pull::PullHandle;
use std::ffi::c_char;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An image pull in progress or finished. Opaque; create with
/// vic_pull_start, release with vic_pull_free.
#[allow(non_camel_case_types)]
pub struct vic_pull {
    core: PullHandle,
    shared: Arc<Shared>,
    delivery: Option<std::thread::JoinHandle<()>>,
}

/// Where a pull stands.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum vic_pull_state {
    /// Still running, or its callbacks have not all returned yet.
    Pending = 0,
    /// Finished successfully; the result JSON is available.
    Done = 1,
    /// Finished with an error; see `result` and vic_pull_error_message.
    Failed = 2,
    /// Finished because it was cancelled.
    Cancelled = 3,
}

/// A snapshot of a pull, filled by vic_pull_poll.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct vic_pull_status {
    pub state: vic_pull_state,
    /// PENDING while running; the final code once finished.
    pub result: vic_result,
    /// Distinct layers of the image (a digest listed twice counts once).
    pub layers_total: u32,
    /// Layers committed or already present.
    pub layers_done: u32,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// Start pulling an image described by `options_json`; returns at once.
///
/// `options_json` (UTF-8 JSON object, borrowed for the call only) keys:
/// `reference` (required, e.g. "busybox", "host:5000/a/b:tag",
/// "repo@sha256:...", "repo@sha512:..."), `store` (required, directory of the
/// OCI layout, created if missing), `platform` ("os/arch[/variant]", default
/// the host), `plain_http` (true, or a list of "host:port" reached over plain
/// HTTP), `username` + `password`, or `token`, `max_concurrent_downloads`
/// (1-64, default 3), `max_attempts` (1-100, default 5; per blob, manifest,
/// config and token request), `verify_diff_ids`
/// (default true: inflate gzip and zstd layers to check their diffIDs),
/// `max_layer_uncompressed_bytes` (1 MiB to 1 PiB, default 64 GiB) and
/// `max_compression_ratio` (10-1000000, default none): inflating a layer
/// stops, and the pull fails with REGISTRY (not retried), as soon as the
/// layer passes that many bytes, or, once 256 MiB are out, that many inflated
/// bytes per compressed byte; with verify_diff_ids false nothing is inflated
/// and neither applies, `priority` (integer, default 0: download slots go to
/// higher priorities first, then round-robin between pulls),
/// `low_speed_limit` (bytes/s, default 1024) and `low_speed_time_secs`
/// (default 30): a connection slower than that over that window is replaced
/// and resumed, `partial_max_age_secs` (default 604800) and
/// `partial_max_bytes` (default 8 GiB): limits for kept partial downloads,
/// applied when a store is first used in the process, `os_version` (Windows
/// host build such as "10.0.20348.1234": index entries must match its build
/// number),
/// `registries` (object keyed by "host[:port]" or "docker.io", each with
/// `mirrors` (list of "http(s)://host[:port][/prefix]" tried in order before
/// the registry), `insecure` (TLS without verification), `ca_file`,
/// `client_cert` + `client_key` (PEM paths)), `ca_file` (extra PEM roots for
/// every registry), `certs_dir` (Docker certs.d layout: ".crt" files and
/// ".cert" + ".key" pairs in "<dir>/<host:port>/"), `docker_config` (path of
/// a Docker config.json, or false; default $DOCKER_CONFIG/config.json or
/// ~/.docker/config.json, read only when a registry asks for credentials),
/// `credential_helpers_dir` (searched for docker-credential-* before PATH),
/// `max_retry_wait_secs` (0-3600, default 60: the longest Retry-After waited
/// out; a longer one fails at once with RATE_LIMITED),
/// `allow_foreign_layers` (default false: fetch non-distributable layers
/// from the URLs their descriptors list, before the registry), `proxy`
/// (object with `http` and `https` proxy URLs, "http(s)://[user:pass@]
/// host[:port]", and `no_proxy` ("host,.domain,host:port,10.0.0.0/8,*"),
/// replacing the environment whole; false for no proxy; absent or true:
/// HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, upper or lower case;
/// SOCKS is INVALID_ARGUMENT; localhost and loopback addresses always go
/// direct), `hosts` (object mapping host names to an IP
/// address or a list of them, used instead of DNS; a name resolving only to
/// link-local or metadata addresses, pinned or not, fails the request with
/// REGISTRY). Unknown keys and wrong types are INVALID_ARGUMENT.
///
/// `callbacks` may be NULL (poll instead); it is copied, so the struct may
/// be freed after the call, but `user_data` must stay valid until the
/// finalizer runs. Callbacks run on a library thread dedicated to this
/// pull, never concurrently, in order; on_done exactly once, last; then the
/// finalizer. No callback runs before this call has written `*out`. From
/// its own callbacks a host may call vic_pull_cancel, vic_pull_poll (which
/// then never waits) and vic_pull_free (which then returns at once; see
/// there).
///
/// On OK, `*out` receives a handle the caller owns and must release with
/// vic_pull_free; on any other result `*out` is untouched and
/// vic_last_error_message tells why. Returns INVALID_ARGUMENT (NULL pointer,
/// bad UTF-8 or JSON, unknown option), BAD_REFERENCE, UNSUPPORTED (a
/// digest algorithm other than sha256 and sha512), or INTERNAL.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `callbacks` is NULL or
/// valid for reads; `out` is valid for a write. The callbacks must be safe
/// to call from a library thread with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn vic_pull_start(
    options_json: *const c_char,
    callbacks: *const vic_callbacks,
    out: *mut *mut vic_pull,
) -> vic_result {
    guard(|| {
        if out.is_null() {
            return text::invalid("out is NULL");
        }
        // SAFETY: caller contract: NULL or a NUL-terminated string.
        let json = match unsafe { c_str(options_json, "options_json") } {
            Ok(s) => s,
            Err(code) => return code,
        };
        let mut checked = match PullOptions::from_json(json).and_then(PullOptions::check) {
            Ok(c) => c,
            Err(e) => return text::fail(&e),
        };
        super::log::install();
        // SAFETY: NULL or valid for reads per the caller contract.
        let host = callbacks::host(unsafe { callbacks.as_ref() });
        checked.commit_hook = host.has_commit_hook();
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Shared::new();
        let (go, wait_for_handle) = std::sync::mpsc::channel();
        let delivery = match callbacks::spawn(host, rx, shared.clone(), wait_for_handle) {
            Ok(h) => h,
            Err(e) => {
                return text::fail(&crate::Error::new(
                    crate::ErrorKind::Internal,
                    format!("cannot start the callback thread: {e}"),
                ))
            }
        };
        let core = crate::pull::start(checked, tx);
        let pull = Box::new(vic_pull {
            core,
            shared,
            delivery: Some(delivery),
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(pull) };
        let _ = go.send(());
        vic_result::Ok
    })
}

/// Borrow a handle the caller passed in, refusing NULL.
///
/// # Safety
/// `pull` is NULL or a live handle from vic_pull_start.
unsafe fn live<'a>(pull: *const vic_pull) -> Result<&'a vic_pull, vic_result> {
    // SAFETY: NULL or live per the caller contract.
    unsafe { pull.as_ref() }.ok_or_else(|| text::invalid("pull is NULL"))
}

fn state_of(o: &Outcome) -> vic_pull_state {
    match o.result {
        vic_result::Ok => vic_pull_state::Done,
        vic_result::Cancelled => vic_pull_state::Cancelled,
        _ => vic_pull_state::Failed,
    }
}

/// Report the pull's state and counters in `*out`, waiting up to
/// `timeout_ms` for it to finish (0 never blocks).
///
/// The state turns terminal only after on_done and the finalizer returned,
/// so once poll reports DONE, FAILED or CANCELLED no callback of this pull
/// runs again. Called from one of this pull's own callbacks it never waits.
/// Returns OK (the pull's own outcome is in `out->result`) or
/// INVALID_ARGUMENT for NULL pointers. `*out` is written only on OK. Any
/// thread; may block up to `timeout_ms`.
///
/// # Safety
/// `pull` is NULL or a live handle from vic_pull_start (not freed); `out` is
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vic_pull_poll(
    pull: *mut vic_pull,
    timeout_ms: u32,
    out: *mut vic_pull_status,
) -> vic_result {
    guard(|| {
        // SAFETY: NULL or live per the caller contract.
        let pull = match unsafe { live(pull) } {
            Ok(p) => p,
            Err(code) => return code,
        };
        if out.is_null() {
            return text::invalid("out is NULL");
        }
        let wait = if pull.shared.on_delivery_thread() {
            0
        } else {
            timeout_ms
        };
        let deadline = Instant::now() + Duration::from_millis(wait as u64);
        let mut t = pull.shared.terminal();
        while !t.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            t = pull
                .shared
                .finished
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let (state, result) = match (&t.outcome, t.finished) {
            (Some(o), true) => (state_of(o), o.result),
            _ => (vic_pull_state::Pending, vic_result::Pending),
        };
        drop(t);
        let c = &pull.core.counters;
        let status = vic_pull_status {
            state,
            result,
            layers_total: c.layers_total.load(Ordering::Relaxed),
            layers_done: c.layers_done.load(Ordering::Relaxed),
            bytes_total: c.bytes_total.load(Ordering::Relaxed),
            bytes_done: c.bytes_done.load(Ordering::Relaxed),
        };
        // SAFETY: checked non-NULL above.
        unsafe { *out = status };
        vic_result::Ok
    })
}

/// Ask the pull to stop. Returns at once; idempotent; a finished pull is
/// unaffected. The pull then ends with CANCELLED (on_done tells), and
/// downloads other pulls still watch go on for them. NULL is a no-op.
/// Any thread, including this pull's callbacks; never blocks.
///
/// # Safety
/// `pull` is NULL or a live handle from vic_pull_start (not freed).
#[no_mangle]
pub unsafe extern "C" fn vic_pull_cancel(pull: *mut vic_pull) {
    guard(|| {
        // SAFETY: NULL or live per the caller contract.
        if let Some(p) = unsafe { pull.as_ref() } {
            p.core.cancel();
        }
    })
}

/// Cancel the pull if it still runs, wait until none of its callbacks can
/// run any more, then free the handle. Progress events not yet delivered
/// are dropped, but on_done (if not yet delivered) and the finalizer still
/// run exactly once before this returns. NULL is a no-op; freeing twice is
/// undefined behaviour. Blocks until the callback thread is done (usually
/// milliseconds). Called from one of this pull's own callbacks it does not
/// wait: on_done and the finalizer then run after that callback returns.
///
/// # Safety
/// `pull` is NULL or a live handle from vic_pull_start; it is dead after.
#[no_mangle]
pub unsafe extern "C" fn vic_pull_free(pull: *mut vic_pull) {
    guard(|| {
        if pull.is_null() {
            return;
        }
        // SAFETY: a live handle from vic_pull_start, owned by the caller and
        // handed back here exactly once.
        let mut p = unsafe { Box::from_raw(pull) };
        p.core.cancel();
        p.shared.quiet.store(true, Ordering::Release);
        if let Some(h) = p.delivery.take() {
            if !p.shared.on_delivery_thread() {
                let _ = h.join();
            }
        }
    })
}

/// Copy the result JSON of a successful pull into `buf` (see
/// vic_last_error_message for the buffer convention): reference, digest
/// (what the reference resolved to: the index digest for multi-platform
/// images), manifest_digest and manifest_media_type (the registry's
/// manifest), stored_manifest_digest (what index.json names: the same for
/// OCI images, the OCI rewrite of a Docker schema2 manifest, as `skopeo
/// copy` makes), config_digest, platform, store, layers [{digest, diff_id,
/// size, media_type}], bytes_downloaded, bytes_reused, bytes_shared,
/// bytes_resumed, retries {cause: count}, rate_limit_remaining, up_to_date.
///
/// Returns OK, BUFFER_TOO_SMALL (`*out_n` holds the length), PENDING while
/// the pull runs, or INVALID_ARGUMENT (NULL pointers, or the pull failed).
/// Readable from inside on_done. Any thread; never blocks.
///
/// # Safety
/// `pull` is NULL or a live handle; `buf` is NULL or valid for `len` bytes;
/// `out_n` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vic_pull_result_json(
    pull: *const vic_pull,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> vic_result {
    guard(|| {
        // SAFETY: NULL or live per the caller contract.
        let pull = match unsafe { live(pull) } {
            Ok(p) => p,
            Err(code) => return code,
        };
        let t = pull.shared.terminal();
        match &t.outcome {
            None => vic_result::Pending,
            Some(Outcome { json: Some(j), .. }) => {
                // SAFETY: forwarded caller contract.
                unsafe { copy_out(j, buf, len, out_n) }
            }
            Some(_) => text::invalid("the pull did not succeed, so it has no result"),
        }
    })
}

/// Copy the error text of a failed or cancelled pull into `buf` (see
/// vic_last_error_message for the buffer convention). The text is empty
/// while the pull runs or when it succeeded.
///
/// Returns OK, BUFFER_TOO_SMALL, or INVALID_ARGUMENT for NULL pointers.
/// Readable from inside on_done. Any thread; never blocks.
///
/// # Safety
/// `pull` is NULL or a live handle; `buf` is NULL or valid for `len` bytes;
/// `out_n` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn vic_pull_error_message(
    pull: *const vic_pull,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> vic_result {
    guard(|| {
        // SAFETY: NULL or live per the caller contract.
        let pull = match unsafe { live(pull) } {
            Ok(p) => p,
            Err(code) => return code,
        };
        let t = pull.shared.terminal();
        let msg = t
            .outcome
            .as_ref()
            .map(|o| o.message.clone())
            .unwrap_or_default();
        drop(t);
        // SAFETY: forwarded caller contract.
        unsafe { copy_out(&msg, buf, len, out_n) }
    })
}

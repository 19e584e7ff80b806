//! Callback delivery. Each pull has one library thread that drains its event
//! queue in order, so callbacks of one pull never overlap and never run
//! while vicpull holds a lock. `on_done` is the last callback; the finalizer
//! runs after it, exactly once; only then does the pull read as finished.

use super::result::vic_result;
use crate::progress::{Event, EventReceiver, Kind, LayerCommit};
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

/// One progress event. Pointers are valid only during the callback.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct vic_progress {
    /// The layer digest ("sha256:..."), or NULL for image-level messages.
    pub layer_digest: *const c_char,
    pub kind: Kind,
    /// Bytes so far for DOWNLOADING; the attempt number for RETRYING.
    pub current: u64,
    /// Layer size for DOWNLOADING and PULLING_FS_LAYER; else 0.
    pub total: u64,
    /// Docker's wording: "Downloading", "Pull complete",
    /// "Digest: sha256:...", "Status: Downloaded newer image for REF".
    pub message: *const c_char,
}

/// Called for each progress event of one pull, in order, never concurrently,
/// on that pull's library thread.
#[allow(non_camel_case_types)]
pub type vic_progress_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, progress: *const vic_progress)>;

/// Called exactly once per pull, last. `message` is NULL on success, else
/// the error text; valid only during the call. The result JSON and error
/// text can be read from inside this callback.
#[allow(non_camel_case_types)]
pub type vic_done_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, result: u32, message: *const c_char)>;

/// Called exactly once, after the last callback of the pull, to release
/// `user_data`.
#[allow(non_camel_case_types)]
pub type vic_finalizer = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// A verified layer offered to the host's commit hook. Pointers are valid
/// only during the call.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct vic_layer_commit {
    /// Position in the manifest; a digest listed twice is offered twice.
    pub index: u32,
    pub digest: *const c_char,
    /// "sha256:..." of the uncompressed tar, or NULL when diffID checking
    /// is off.
    pub diff_id: *const c_char,
    pub media_type: *const c_char,
    pub size: u64,
    /// The verified blob's file in the store (read it, do not move it).
    pub path: *const c_char,
}

/// Called for each layer in manifest order, parent before child, after the
/// layer verified and before it is reported "Pull complete"; on the pull's
/// callback thread, serialised with its other callbacks. Return 0 to accept;
/// anything else fails the pull with VIC_RESULT_HOST_REJECTED and the text
/// the hook wrote into `err_buf` (`err_len` bytes, NUL-terminate it).
#[allow(non_camel_case_types)]
pub type vic_commit_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        layer: *const vic_layer_commit,
        err_buf: *mut c_char,
        err_len: usize,
    ) -> i32,
>;

/// Host callbacks for one pull. Every member may be NULL; zero the struct
/// and set members by name. A callback must return normally (never end its
/// thread or longjmp out of it).
///
/// ABI: members are only ever appended, and the library reads every member
/// of the version it was built as, so a host must be compiled against the
/// header of the library it loads (the soname changes whenever this struct
/// grows after a release).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct vic_callbacks {
    pub user_data: *mut c_void,
    pub on_progress: vic_progress_callback,
    pub on_done: vic_done_callback,
    pub finalizer: vic_finalizer,
    /// Optional: lets the host take each verified layer in order (e.g. into
    /// its own disk images) and veto the pull.
    pub on_commit: vic_commit_callback,
}

pub(crate) struct Host(vic_callbacks);

impl Host {
    pub fn has_commit_hook(&self) -> bool {
        self.0.on_commit.is_some()
    }
}

// SAFETY: vic_pull_start's contract makes the host promise its callbacks and
// user_data may be used from a library thread; we use them from one thread.
unsafe impl Send for Host {}

/// The state shared by the handle and the delivery thread.
pub(crate) struct Shared {
    pub terminal: Mutex<Terminal>,
    /// Signalled once `Terminal::finished` turns true.
    pub finished: Condvar,
    /// Set by vic_pull_free: drop progress, still deliver on_done.
    pub quiet: AtomicBool,
    pub thread: Mutex<Option<ThreadId>>,
}

#[derive(Default)]
pub(crate) struct Terminal {
    /// Set just before on_done, so the callback can read the result.
    pub outcome: Option<Outcome>,
    /// Set after on_done and the finalizer returned: the pull is over.
    pub finished: bool,
}

pub(crate) struct Outcome {
    pub result: vic_result,
    pub message: String,
    pub json: Option<String>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            terminal: Mutex::new(Terminal::default()),
            finished: Condvar::new(),
            quiet: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    pub fn terminal(&self) -> std::sync::MutexGuard<'_, Terminal> {
        self.terminal.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn on_delivery_thread(&self) -> bool {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) == Some(std::thread::current().id())
    }
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Start the delivery thread for one pull. It delivers nothing until `go`
/// fires (or is dropped), so no callback runs before vic_pull_start has
/// handed the host its handle.
pub(crate) fn spawn(
    host: Host,
    events: EventReceiver,
    shared: Arc<Shared>,
    go: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut slot = shared.thread.lock().unwrap_or_else(|p| p.into_inner());
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name("vicpull-callbacks".into())
        .spawn(move || {
            let _ = go.recv();
            let keep = s.clone();
            let caught =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| deliver(host, events, s)));
            if caught.is_err() {
                // Never leave a poller or vic_pull_free waiting forever.
                let mut t = keep.terminal();
                t.outcome.get_or_insert(Outcome {
                    result: vic_result::Internal,
                    message: "internal panic while delivering callbacks".into(),
                    json: None,
                });
                t.finished = true;
                keep.finished.notify_all();
            }
        })?;
    *slot = Some(handle.thread().id());
    Ok(handle)
}

fn deliver(host: Host, events: EventReceiver, shared: Arc<Shared>) {
    let cb = host.0;
    let mut outcome = None;
    for event in events.iter() {
        match event {
            Event::Progress(p) => {
                let Some(f) = cb.on_progress else { continue };
                if shared.quiet.load(Ordering::Acquire) {
                    continue;
                }
                let layer = p.layer.as_deref().map(c_string);
                let message = c_string(&p.message);
                let params = vic_progress {
                    layer_digest: layer.as_ref().map_or(std::ptr::null(), |l| l.as_ptr()),
                    kind: p.kind,
                    current: p.current,
                    total: p.total,
                    message: message.as_ptr(),
                };
                // SAFETY: host callback per vic_pull_start's contract; the
                // params and their strings outlive the call.
                unsafe { f(cb.user_data, &params) };
            }
            Event::Commit(layer, reply) => {
                let answer = match (cb.on_commit, shared.quiet.load(Ordering::Acquire)) {
                    (_, true) => Err("the pull is being freed".to_string()),
                    (None, false) => Ok(()),
                    (Some(f), false) => offer(f, cb.user_data, &layer),
                };
                let _ = reply.send(answer);
            }
            Event::Done(r) => {
                outcome = Some(match r {
                    Ok(res) => Outcome {
                        result: vic_result::Ok,
                        message: String::new(),
                        json: serde_json::to_string_pretty(&res).ok(),
                    },
                    Err(e) => Outcome {
                        result: e.kind.into(),
                        message: e.message,
                        json: None,
                    },
                });
                break;
            }
        }
    }
    // The pull task always sends Done; a missing one means it panicked.
    let outcome = outcome.unwrap_or_else(|| Outcome {
        result: vic_result::Internal,
        message: "the pull task stopped without a result (panic)".into(),
        json: None,
    });
    let (code, message) = (outcome.result, c_string(&outcome.message));
    // Publish before on_done so the callback can read the result JSON.
    shared.terminal().outcome = Some(outcome);
    if let Some(f) = cb.on_done {
        let msg = if code == vic_result::Ok {
            std::ptr::null()
        } else {
            message.as_ptr()
        };
        // SAFETY: host callback per vic_pull_start's contract.
        unsafe { f(cb.user_data, code as u32, msg) };
    }
    if let Some(fin) = cb.finalizer {
        // SAFETY: host finalizer, called once, after the last callback.
        unsafe { fin(cb.user_data) };
    }
    *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
    shared.terminal().finished = true;
    shared.finished.notify_all();
}

fn offer(
    f: unsafe extern "C" fn(*mut c_void, *const vic_layer_commit, *mut c_char, usize) -> i32,
    user_data: *mut c_void,
    layer: &LayerCommit,
) -> Result<(), String> {
    let digest = c_string(&layer.digest);
    let diff_id = layer.diff_id.as_deref().map(c_string);
    let media_type = c_string(&layer.media_type);
    let path = c_string(&layer.path);
    let params = vic_layer_commit {
        index: layer.index,
        digest: digest.as_ptr(),
        diff_id: diff_id.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
        media_type: media_type.as_ptr(),
        size: layer.size,
        path: path.as_ptr(),
    };
    let mut err = vec![0u8; 1024];
    // SAFETY: host callback per vic_pull_start's contract; params, strings
    // and the error buffer outlive the call.
    let rc = unsafe { f(user_data, &params, err.as_mut_ptr().cast(), err.len() - 1) };
    if rc == 0 {
        return Ok(());
    }
    let end = err.iter().position(|b| *b == 0).unwrap_or(err.len());
    let text = String::from_utf8_lossy(&err[..end]).into_owned();
    Err(if text.is_empty() {
        format!("hook returned {rc}")
    } else {
        text
    })
}

pub(crate) fn host(cb: Option<&vic_callbacks>) -> Host {
    Host(cb.copied().unwrap_or(vic_callbacks {
        user_data: std::ptr::null_mut(),
        on_progress: None,
        on_done: None,
        finalizer: None,
        on_commit: None,
    }))
}

//! Drive vicpull through its C ABI from Rust tests, exactly as a C host
//! would: JSON options in, callbacks recorded, poll until finished.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vicpull::ffi::callbacks::{vic_callbacks, vic_layer_commit, vic_progress};
use vicpull::ffi::pull::{
    vic_pull, vic_pull_cancel, vic_pull_error_message, vic_pull_free, vic_pull_poll,
    vic_pull_result_json, vic_pull_start, vic_pull_state, vic_pull_status,
};
use vicpull::ffi::result::vic_result;
use vicpull::ffi::text::vic_last_error_message;
use vicpull::progress::Kind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    pub layer: Option<String>,
    pub kind: Kind,
    pub current: u64,
    pub total: u64,
    pub message: String,
}

/// What the callbacks saw, shared with the callback thread.
#[derive(Default)]
pub struct Seen {
    pub events: Vec<Ev>,
    pub done: Vec<(u32, Option<String>)>,
    pub finalized: u32,
    /// A callback arrived after on_done or the finalizer (must never happen).
    pub late: u32,
    /// Two callbacks ran at once (must never happen).
    pub overlapped: u32,
    busy: bool,
    /// Layers the commit hook saw: (digest, diffID, path).
    pub commits: Vec<(String, String, String)>,
    /// Refuse the commit at this index (0-based count of offers).
    pub refuse_at: Option<usize>,
}

pub type Recorder = Arc<Mutex<Seen>>;

fn enter(s: &mut Seen) {
    if !s.done.is_empty() || s.finalized > 0 {
        s.late += 1;
    }
    if s.busy {
        s.overlapped += 1;
    }
}

unsafe extern "C" fn on_progress(user: *mut c_void, p: *const vic_progress) {
    // SAFETY: user is the Arc<Mutex<Seen>> leaked in start(); p is valid
    // for the duration of the call.
    let (rec, p) = unsafe { (&*(user as *const Mutex<Seen>), &*p) };
    let mut s = rec.lock().unwrap();
    enter(&mut s);
    s.busy = true;
    let text = |c: *const c_char| {
        // SAFETY: NUL-terminated strings valid during the call.
        (!c.is_null()).then(|| unsafe { CStr::from_ptr(c) }.to_string_lossy().into_owned())
    };
    let ev = Ev {
        layer: text(p.layer_digest),
        kind: p.kind,
        current: p.current,
        total: p.total,
        message: text(p.message).unwrap_or_default(),
    };
    s.events.push(ev);
    s.busy = false;
}

unsafe extern "C" fn on_done(user: *mut c_void, code: u32, msg: *const c_char) {
    // SAFETY: as in on_progress.
    let rec = unsafe { &*(user as *const Mutex<Seen>) };
    let mut s = rec.lock().unwrap();
    enter(&mut s);
    // SAFETY: NULL or a NUL-terminated string valid during the call.
    let m = (!msg.is_null()).then(|| unsafe { CStr::from_ptr(msg) }.to_string_lossy().into());
    s.done.push((code, m));
}

unsafe extern "C" fn on_commit(
    user: *mut c_void,
    l: *const vic_layer_commit,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    // SAFETY: as in on_progress; `l` and its strings are valid during the call.
    let (rec, l) = unsafe { (&*(user as *const Mutex<Seen>), &*l) };
    let mut s = rec.lock().unwrap();
    enter(&mut s);
    // SAFETY: NUL-terminated strings (diff_id may be NULL).
    let text = |c: *const c_char| unsafe {
        if c.is_null() {
            String::new()
        } else {
            CStr::from_ptr(c).to_string_lossy().into()
        }
    };
    s.commits
        .push((text(l.digest), text(l.diff_id), text(l.path)));
    if s.refuse_at == Some(s.commits.len() - 1) {
        let msg = b"disk image full\0";
        assert!(err_len >= msg.len());
        // SAFETY: the library gives err_len writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), msg.len()) };
        return 1;
    }
    0
}

unsafe extern "C" fn finalize(user: *mut c_void) {
    // SAFETY: the pointer came from Arc::into_raw in start(); this is the
    // one place that gives that reference back.
    let rec = unsafe { Arc::from_raw(user as *const Mutex<Seen>) };
    let mut s = rec.lock().unwrap();
    if s.finalized > 0 {
        s.late += 1;
    }
    s.finalized += 1;
}

type TextFn = unsafe extern "C" fn(*const vic_pull, *mut c_char, usize, *mut usize) -> vic_result;

pub struct Pull {
    pub handle: *mut vic_pull,
    pub seen: Recorder,
}

// SAFETY: the C API allows a handle to be used from any thread.
unsafe impl Send for Pull {}

pub struct Outcome {
    pub code: vic_result,
    pub message: String,
    pub json: Option<serde_json::Value>,
    pub elapsed: Duration,
}

pub fn last_error() -> String {
    let mut n = 0usize;
    // SAFETY: NULL buffer asks for the length; out_n is valid.
    unsafe { vic_last_error_message(std::ptr::null_mut(), 0, &mut n) };
    let mut buf = vec![0u8; n + 1];
    // SAFETY: buf has n + 1 bytes.
    let rc = unsafe { vic_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut n) };
    assert_eq!(rc, vic_result::Ok);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Start a pull; on failure return the code and vic_last_error_message.
pub fn start(options: &serde_json::Value) -> Result<Pull, (vic_result, String)> {
    start_with(options, false, None)
}

/// Start with the commit hook set (refusing the offer at `refuse_at`).
pub fn start_with(
    options: &serde_json::Value,
    hook: bool,
    refuse_at: Option<usize>,
) -> Result<Pull, (vic_result, String)> {
    let json = CString::new(options.to_string()).unwrap();
    let seen: Recorder = Arc::default();
    seen.lock().unwrap().refuse_at = refuse_at;
    let user = Arc::into_raw(seen.clone()) as *mut c_void;
    let cbs = vic_callbacks {
        user_data: user,
        on_progress: Some(on_progress),
        on_done: Some(on_done),
        finalizer: Some(finalize),
        on_commit: if hook { Some(on_commit) } else { None },
    };
    let mut handle = std::ptr::null_mut();
    // SAFETY: valid string, callbacks and out pointer.
    let rc = unsafe { vic_pull_start(json.as_ptr(), &cbs, &mut handle) };
    if rc != vic_result::Ok {
        // SAFETY: not handed to the library, so we still own it.
        drop(unsafe { Arc::from_raw(user as *const Mutex<Seen>) });
        return Err((rc, last_error()));
    }
    Ok(Pull { handle, seen })
}

impl Pull {
    pub fn poll(&self, timeout_ms: u32) -> vic_pull_status {
        let mut st = std::mem::MaybeUninit::<vic_pull_status>::uninit();
        // SAFETY: live handle, valid out pointer.
        let rc = unsafe { vic_pull_poll(self.handle, timeout_ms, st.as_mut_ptr()) };
        assert_eq!(rc, vic_result::Ok);
        // SAFETY: written on OK.
        unsafe { st.assume_init() }
    }

    pub fn cancel(&self) {
        // SAFETY: live handle.
        unsafe { vic_pull_cancel(self.handle) };
    }

    fn text(&self, f: TextFn) -> (vic_result, String) {
        let mut n = 0usize;
        // SAFETY: live handle; NULL buffer asks for the length.
        let rc = unsafe { f(self.handle, std::ptr::null_mut(), 0, &mut n) };
        if rc != vic_result::BufferTooSmall && rc != vic_result::Ok {
            return (rc, String::new());
        }
        let mut buf = vec![0u8; n + 1];
        // SAFETY: buf has n + 1 bytes.
        let rc = unsafe { f(self.handle, buf.as_mut_ptr().cast(), buf.len(), &mut n) };
        (rc, String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Poll until finished (panics after `limit`), then read the outcome.
    pub fn wait(&self, limit: Duration) -> Outcome {
        let t0 = Instant::now();
        loop {
            let st = self.poll(100);
            if st.state != vic_pull_state::Pending {
                let (_, message) = self.text(vic_pull_error_message);
                let (rc, json) = self.text(vic_pull_result_json);
                let json = (rc == vic_result::Ok).then(|| serde_json::from_str(&json).unwrap());
                return Outcome {
                    code: st.result,
                    message,
                    json,
                    elapsed: t0.elapsed(),
                };
            }
            assert!(t0.elapsed() < limit, "pull did not finish within {limit:?}");
        }
    }

    pub fn events(&self) -> Vec<Ev> {
        self.seen.lock().unwrap().events.clone()
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        // SAFETY: live handle, freed exactly once here.
        unsafe { vic_pull_free(self.handle) };
        if std::thread::panicking() {
            return;
        }
        let s = self.seen.lock().unwrap();
        assert_eq!(s.finalized, 1, "finalizer must run exactly once by free");
        assert_eq!(s.done.len(), 1, "on_done must run exactly once");
        assert_eq!(s.late, 0, "a callback ran after on_done/finalizer");
        assert_eq!(s.overlapped, 0, "callbacks of one pull overlapped");
    }
}

/// Pull to the end with a generous guard.
pub fn pull(options: serde_json::Value) -> (Outcome, Vec<Ev>) {
    let p = start(&options).unwrap_or_else(|(c, m)| panic!("start failed: {c:?} {m}"));
    let out = p.wait(Duration::from_secs(120));
    let ev = p.events();
    (out, ev)
}

/// True when the store's ingest area holds no temp file.
pub fn leftovers_empty(store: &std::path::Path) -> bool {
    super::fixtures::leftovers(store).is_empty()
}

/// Pull with the commit hook set; returns what the hook saw.
pub fn pull_with_hook(
    options: serde_json::Value,
    refuse_at: Option<usize>,
) -> (Outcome, Vec<(String, String, String)>) {
    let p = start_with(&options, true, refuse_at).unwrap_or_else(|(c, m)| panic!("{c:?} {m}"));
    let out = p.wait(Duration::from_secs(120));
    let commits = p.seen.lock().unwrap().commits.clone();
    (out, commits)
}

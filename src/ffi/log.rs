//! Logging goes to the host, never to stdout: a registered callback gets
//! level and message. Without one the library is silent, unless VICPULL_LOG
//! (error, warn, info, debug, trace) asks for lines on stderr.

use super::result::vic_result;
use std::ffi::{c_char, c_void, CString};
use std::sync::{Once, RwLock};

/// Severity of a log line; lower is more severe.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum vic_log_level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// One log line. Pointers are valid only during the callback.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct vic_log_params {
    pub level: vic_log_level,
    /// The module that logged, e.g. "vicpull::transfer::download".
    pub target: *const c_char,
    pub message: *const c_char,
}

/// A host log sink. May be called from any library thread, concurrently:
/// it must be thread-safe and must not call back into vicpull.
#[allow(non_camel_case_types)]
pub type vic_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, params: *const vic_log_params)>;

struct Sink {
    callback: vic_log_callback,
    user_data: *mut c_void,
    level: vic_log_level,
}

// SAFETY: the host promises (in vic_log_set's contract) that its callback
// and user_data may be used from any thread.
unsafe impl Send for Sink {}
// SAFETY: as above; the sink itself is only read through the RwLock.
unsafe impl Sync for Sink {}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
static INSTALL: Once = Once::new();

struct HostLogger;

fn to_level(l: log::Level) -> vic_log_level {
    match l {
        log::Level::Error => vic_log_level::Error,
        log::Level::Warn => vic_log_level::Warn,
        log::Level::Info => vic_log_level::Info,
        log::Level::Debug => vic_log_level::Debug,
        log::Level::Trace => vic_log_level::Trace,
    }
}

fn env_level() -> vic_log_level {
    match std::env::var("VICPULL_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => vic_log_level::Error,
        "warn" => vic_log_level::Warn,
        "info" => vic_log_level::Info,
        "debug" => vic_log_level::Debug,
        "trace" => vic_log_level::Trace,
        _ => vic_log_level::Off,
    }
}

impl log::Log for HostLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("vicpull")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = to_level(record.level());
        let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
        match sink.as_ref() {
            Some(s) if level <= s.level => {
                let Some(cb) = s.callback else { return };
                let msg = CString::new(record.args().to_string().replace('\0', " "));
                let target = CString::new(record.target()).unwrap_or_default();
                let msg = msg.unwrap_or_default();
                let params = vic_log_params {
                    level,
                    target: target.as_ptr(),
                    message: msg.as_ptr(),
                };
                // SAFETY: a host callback registered through vic_log_set;
                // the params and strings outlive the call.
                unsafe { cb(s.user_data, &params) };
            }
            Some(_) => {}
            None if level <= env_level() => {
                eprintln!("vicpull {:?} {}: {}", level, record.target(), record.args());
            }
            None => {}
        }
    }

    fn flush(&self) {}
}

/// Install the forwarding logger once. If the host process (a Rust program)
/// already set a `log` logger, vicpull logs through that one instead.
pub fn install() {
    INSTALL.call_once(|| {
        if log::set_logger(&HostLogger).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}

/// Send vicpull's log lines at `level` and more severe to `callback`.
///
/// Replaces any earlier callback; NULL `callback` (or level OFF) silences
/// the library again (VICPULL_LOG then applies). `user_data` is passed back
/// unchanged; the host owns it and must keep it valid until the callback is
/// replaced. The callback may run on any vicpull thread, concurrently, and
/// must not call vicpull functions. This call may block briefly while a log
/// line is being delivered. Returns OK, or INVALID_ARGUMENT for an unknown
/// level value.
///
/// # Safety
/// `callback`, if set, must be safe to call from any thread with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn vic_log_set(
    callback: vic_log_callback,
    user_data: *mut c_void,
    level: u32,
) -> vic_result {
    super::panic::guard(|| {
        let level = match level {
            0 => vic_log_level::Off,
            1 => vic_log_level::Error,
            2 => vic_log_level::Warn,
            3 => vic_log_level::Info,
            4 => vic_log_level::Debug,
            5 => vic_log_level::Trace,
            _ => return super::text::invalid(&format!("log level {level} is not a vic_log_level")),
        };
        install();
        let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
        *sink = (callback.is_some() && level != vic_log_level::Off).then_some(Sink {
            callback,
            user_data,
            level,
        });
        vic_result::Ok
    })
}

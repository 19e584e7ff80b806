//! The one result enum of the C API. Values are fixed forever: a retired
//! code stays reserved, never reused.

use crate::error::ErrorKind;

/// Result of every vicpull call and of a finished pull.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum vic_result {
    /// Success.
    Ok = 0,
    /// The pull is still running.
    Pending = 1,
    /// A NULL pointer, invalid UTF-8, bad JSON, an unknown option or a value
    /// out of range.
    InvalidArgument = 2,
    /// The image reference is malformed; the message names the part.
    BadReference = 3,
    /// The registry or its token server refused the credentials.
    Auth = 4,
    /// The repository, tag, blob or a matching platform does not exist.
    NotFound = 5,
    /// Connection failed, reset or timed out (after the allowed retries).
    Network = 6,
    /// The registry answered something the protocol does not allow.
    Registry = 7,
    /// Bytes did not match their digest (or a layer its diffID).
    DigestMismatch = 8,
    /// A media type, digest algorithm or manifest schema vicpull cannot use.
    Unsupported = 9,
    /// Reading or writing the store failed.
    StoreIo = 10,
    /// The pull was cancelled.
    Cancelled = 11,
    /// A bug in vicpull: a caught panic or a broken invariant.
    Internal = 12,
    /// The registry kept answering 429 Too Many Requests.
    RateLimited = 13,
    /// The caller's buffer is too small; `*out_n` holds the length needed.
    BufferTooSmall = 14,
    /// The host's commit hook refused a layer; the message is the host's.
    HostRejected = 15,
}

impl From<ErrorKind> for vic_result {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::InvalidArgument => vic_result::InvalidArgument,
            ErrorKind::BadReference => vic_result::BadReference,
            ErrorKind::Auth => vic_result::Auth,
            ErrorKind::NotFound => vic_result::NotFound,
            ErrorKind::Network => vic_result::Network,
            ErrorKind::Registry => vic_result::Registry,
            ErrorKind::DigestMismatch => vic_result::DigestMismatch,
            ErrorKind::Unsupported => vic_result::Unsupported,
            ErrorKind::StoreIo => vic_result::StoreIo,
            ErrorKind::Cancelled => vic_result::Cancelled,
            ErrorKind::RateLimited => vic_result::RateLimited,
            ErrorKind::HostRejected => vic_result::HostRejected,
            ErrorKind::Internal => vic_result::Internal,
        }
    }
}

impl vic_result {
    /// NUL-terminated so C can take it as is (cbindgen 0.24 cannot parse
    /// C-string literals).
    fn name_nul(self) -> &'static str {
        match self {
            vic_result::Ok => "OK\0",
            vic_result::Pending => "PENDING\0",
            vic_result::InvalidArgument => "INVALID_ARGUMENT\0",
            vic_result::BadReference => "BAD_REFERENCE\0",
            vic_result::Auth => "AUTH\0",
            vic_result::NotFound => "NOT_FOUND\0",
            vic_result::Network => "NETWORK\0",
            vic_result::Registry => "REGISTRY\0",
            vic_result::DigestMismatch => "DIGEST_MISMATCH\0",
            vic_result::Unsupported => "UNSUPPORTED\0",
            vic_result::StoreIo => "STORE_IO\0",
            vic_result::Cancelled => "CANCELLED\0",
            vic_result::Internal => "INTERNAL\0",
            vic_result::RateLimited => "RATE_LIMITED\0",
            vic_result::BufferTooSmall => "BUFFER_TOO_SMALL\0",
            vic_result::HostRejected => "HOST_REJECTED\0",
        }
    }

    pub fn name(self) -> &'static str {
        let n = self.name_nul();
        &n[..n.len() - 1]
    }

    fn from_u32(v: u32) -> Option<vic_result> {
        use vic_result::*;
        const ALL: [vic_result; 16] = [
            Ok,
            Pending,
            InvalidArgument,
            BadReference,
            Auth,
            NotFound,
            Network,
            Registry,
            DigestMismatch,
            Unsupported,
            StoreIo,
            Cancelled,
            Internal,
            RateLimited,
            BufferTooSmall,
            HostRejected,
        ];
        ALL.into_iter().find(|r| *r as u32 == v)
    }
}

/// The constant name of a result code, e.g. "DIGEST_MISMATCH".
///
/// Returns a static NUL-terminated string (never NULL, never freed);
/// "UNKNOWN" for a value that is not a vic_result. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn vic_result_name(result: u32) -> *const std::ffi::c_char {
    super::panic::guard(|| match vic_result::from_u32(result) {
        Some(r) => r.name_nul().as_ptr().cast(),
        None => c"UNKNOWN".as_ptr(),
    })
}

//! One error type for the core; its kind maps one to one onto the C result codes.

use std::fmt;

/// What went wrong, coarse enough for a caller to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
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
    RateLimited,
    /// The host's commit hook refused a layer.
    HostRejected,
    Internal,
}

/// A failure with a message meant for people: it names the reference, digest
/// or option involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// Transient failures may be retried by the transfer manager.
    pub transient: bool,
    /// How long the server asked us to wait (Retry-After), if it said.
    pub retry_after: Option<std::time::Duration>,
    /// The connection stalled (low-speed limit): reconnect before counting
    /// it as a failed attempt.
    pub stall: bool,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            transient: false,
            retry_after: None,
            stall: false,
        }
    }

    pub fn transient(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            transient: true,
            retry_after: None,
            stall: false,
        }
    }

    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "pull cancelled")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub fn store(context: &str, err: std::io::Error) -> Self {
        Error::new(ErrorKind::StoreIo, format!("{context}: {err}"))
    }

    /// Prefix the message with where it happened, keeping kind and transience.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Text a registry sent, made safe to print: control characters (which
/// could clear a terminal or forge lines) become `\u{..}` escapes, and
/// secrets it echoes back (our Authorization header) become `***`.
pub fn printable(text: &str) -> String {
    let text = &crate::secrets::scrub(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::printable("a\x1b[2Jb\r\nc"),
            "a\\u{1b}[2Jb\\u{d}\\u{a}c"
        );
        assert_eq!(super::printable("plain text"), "plain text");
    }
}

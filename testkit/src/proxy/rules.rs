//! What a fault is: which requests it matches, what it does, and how often.

use std::sync::Arc;
use std::time::Duration;

/// Which requests a rule applies to, by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every request.
    Any,
    /// Every blob request (`/v2/<repo>/blobs/<digest>`), not uploads.
    AnyBlob,
    /// Blob requests for this digest, in any repository.
    Blob(String),
    /// Manifest requests for this tag or digest (`/v2/<repo>/manifests/<reference>`).
    Manifest(String),
    /// Any path containing this text.
    PathContains(String),
}

impl Match {
    pub fn blob(digest: &str) -> Match {
        Match::Blob(digest.to_string())
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Match::Any => true,
            Match::AnyBlob => blob_digest(path).is_some(),
            Match::Blob(d) => blob_digest(path) == Some(d.as_str()),
            Match::Manifest(r) => path
                .rsplit_once("/manifests/")
                .is_some_and(|(repo, rest)| repo.starts_with("/v2/") && rest == r),
            Match::PathContains(s) => path.contains(s.as_str()),
        }
    }
}

/// The digest in a blob path (`/v2/<repo>/blobs/<digest>`), if it is one.
pub fn blob_digest(path: &str) -> Option<&str> {
    let (repo, digest) = path.rsplit_once("/blobs/")?;
    let is_blob = repo.starts_with("/v2/") && !digest.is_empty() && !digest.contains('/');
    (is_blob && digest != "uploads").then_some(digest)
}

/// How a cut connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// SO_LINGER 0 then close: the client sees ECONNRESET.
    Rst,
    /// An orderly shutdown: the client sees end of stream in the middle of the body.
    Fin,
}

/// What to do to one request or its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this instead of asking upstream. `Content-Length` is added.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// XOR 0xff into the byte at this offset of the blob (counted from the blob's start, so
    /// range responses are hit only if they cover it). The length stays the same.
    Corrupt { offset: u64 },
    /// Send the body at most this fast.
    Throttle { bytes_per_sec: u64 },
    /// Send this many body bytes of the response, then end the connection.
    Cut { after: u64, mode: CutMode },
    /// Send this many body bytes, then send nothing more and keep the connection open until
    /// the client leaves (for read-timeout tests).
    Stall { after: u64 },
    /// Drop the client's `Range` header, so upstream answers 200 with the whole body.
    StripRange,
    /// Wait this long before doing anything else with the request.
    Delay(Duration),
    /// End the connection without answering.
    Hangup(CutMode),
}

impl Action {
    /// Whether the action changes a response body; such rules count only GET requests,
    /// because HEAD answers and canned answers have no upstream body to change.
    pub fn shapes_body(&self) -> bool {
        matches!(
            self,
            Action::Corrupt { .. }
                | Action::Throttle { .. }
                | Action::Cut { .. }
                | Action::Stall { .. }
        )
    }
}

/// A request as hooks see it.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// 0 for the first request the proxy received, then 1, 2...
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The client's header fields in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RequestInfo {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The digest if this is a blob request.
    pub fn blob_digest(&self) -> Option<&str> {
        blob_digest(&self.path)
    }
}

/// A test-supplied fault: called for every request, outside any lock, on the proxy thread.
pub type Hook = Arc<dyn Fn(&RequestInfo) -> Option<Action> + Send + Sync>;

/// Identifies a rule added to a proxy, to remove it or ask how often it fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(pub(crate) u64);

/// A rule: an action for matching requests, for the first `left` of them or for all.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: RuleId,
    pub target: Match,
    pub action: Action,
    /// Remaining uses; `None` means unlimited.
    pub left: Option<u64>,
    pub fired: u64,
}

impl Rule {
    /// Takes one use of the rule if it applies to this request.
    pub fn fire(&mut self, method: &str, path: &str) -> Option<Action> {
        if self.left == Some(0) || !self.target.matches(path) {
            return None;
        }
        if self.action.shapes_body() && method != "GET" {
            return None;
        }
        if let Some(n) = &mut self.left {
            *n -= 1;
        }
        self.fired += 1;
        Some(self.action.clone())
    }
}

/// An answer the proxy makes up instead of asking upstream.
#[derive(Debug)]
pub(crate) struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Everything the rules and hooks decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub respond: Option<Canned>,
    pub corrupt: Vec<u64>,
    pub throttle: Option<u64>,
    /// Bytes to send, then how to end; the smallest cut wins.
    pub cut: Option<(u64, CutMode)>,
    pub stall: Option<u64>,
    pub strip_range: bool,
    pub delay: Duration,
    pub hangup: Option<CutMode>,
}

impl Plan {
    /// Adds one action. When several actions of one kind apply, the strictest wins (first
    /// canned answer, slowest throttle, earliest cut or stall, longest delays add up).
    pub fn add(&mut self, action: Action) {
        match action {
            Action::Respond {
                status,
                headers,
                body,
            } => {
                self.respond.get_or_insert(Canned {
                    status,
                    headers,
                    body,
                });
            }
            Action::Corrupt { offset } => self.corrupt.push(offset),
            Action::Throttle { bytes_per_sec } => {
                let bps = bytes_per_sec.max(1);
                self.throttle = Some(self.throttle.map_or(bps, |t| t.min(bps)));
            }
            Action::Cut { after, mode } => {
                if self.cut.map_or(true, |(a, _)| after < a) {
                    self.cut = Some((after, mode));
                }
            }
            Action::Stall { after } => {
                self.stall = Some(self.stall.map_or(after, |s| s.min(after)));
            }
            Action::StripRange => self.strip_range = true,
            Action::Delay(d) => self.delay += d,
            Action::Hangup(mode) => {
                self.hangup.get_or_insert(mode);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths() {
        assert_eq!(blob_digest("/v2/a/b/blobs/sha256:ab"), Some("sha256:ab"));
        assert_eq!(blob_digest("/v2/a/blobs/uploads/"), None);
        assert_eq!(blob_digest("/v2/a/blobs/uploads/123"), None);
        assert_eq!(blob_digest("/v2/a/manifests/latest"), None);
        assert!(Match::Manifest("latest".into()).matches("/v2/a/b/manifests/latest"));
        assert!(!Match::Manifest("latest".into()).matches("/v2/a/manifests/v1"));
    }

    #[test]
    fn limited_rules_run_out_and_body_rules_skip_head() {
        let mut rule = Rule {
            id: RuleId(0),
            target: Match::blob("sha256:ab"),
            action: Action::Corrupt { offset: 1 },
            left: Some(1),
            fired: 0,
        };
        assert!(rule.fire("HEAD", "/v2/r/blobs/sha256:ab").is_none());
        assert!(rule.fire("GET", "/v2/r/blobs/sha256:ab").is_some());
        assert!(rule.fire("GET", "/v2/r/blobs/sha256:ab").is_none());
        assert_eq!(rule.fired, 1);
    }
}

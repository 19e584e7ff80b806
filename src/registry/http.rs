//! The one HTTP client and the helpers that turn responses into errors.

use crate::error::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::sync::OnceLock;
use std::time::Duration;

pub const USER_AGENT: &str = concat!("vicpull/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 10;

/// Shared by every pull so connections are reused. reqwest drops
/// Authorization when a redirect leaves the origin, and decompresses
/// nothing because no compression feature is enabled: digests cover the
/// bytes as sent.
pub fn client() -> Result<reqwest::Client> {
    static CLIENT: OnceLock<std::result::Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot build HTTP client: {e}"),
            )
        })
}

/// Read a body, failing as soon as it passes `cap` bytes.
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big(resp.url().as_str(), cap));
    }
    let url = resp.url().to_string();
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| network(&url, &e))?;
        if out.len() + chunk.len() > cap {
            return Err(too_big(&url, cap));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_big(url: &str, cap: usize) -> Error {
    Error::new(
        ErrorKind::Registry,
        format!("response from {url} is larger than {cap} bytes"),
    )
}

pub fn network(what: &str, e: &reqwest::Error) -> Error {
    // Walk the source chain: reqwest's own text ("error sending request")
    // hides the cause a person needs ("connection refused").
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Error::transient(ErrorKind::Network, format!("{what}: {msg}"))
}

/// Seconds to wait from a Retry-After header (delta-seconds form).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    // TODO: Retry-After in HTTP-date form is ignored (falls back to backoff).
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Turn a non-success answer into an error of the right kind; 429 and 5xx
/// are transient.
pub fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8], what: &str) -> Error {
    let detail = registry_message(body);
    let text = match detail {
        Some(d) => format!("{what}: HTTP {status}: {d}"),
        None => format!("{what}: HTTP {status}"),
    };
    match status.as_u16() {
        401 | 403 => Error::new(ErrorKind::Auth, text),
        404 => Error::new(ErrorKind::NotFound, text),
        429 => {
            let wait = retry_after(headers);
            let shown = wait.map(|d| format!(" (retry after {}s)", d.as_secs()));
            let mut e = Error::transient(ErrorKind::RateLimited, text + &shown.unwrap_or_default());
            e.retry_after = wait;
            e
        }
        408 | 500..=599 => {
            let mut e = Error::transient(ErrorKind::Registry, text);
            e.retry_after = retry_after(headers);
            e
        }
        _ => Error::new(ErrorKind::Registry, text),
    }
}

/// The first `errors[].message` of a registry error body, if any.
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
    Some(format!("{code} {msg}").trim().to_string())
}

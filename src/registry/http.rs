//! How every HTTP client is built, and the helpers that turn responses into errors.

use super::proxy::Proxies;
use super::resolve::{Hosts, Refused};
use crate::error::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

pub const USER_AGENT: &str = concat!("vicpull/", env!("CARGO_PKG_VERSION"));
/// Redirect hops followed for one request (Go's default, so Docker's).
pub const MAX_REDIRECTS: usize = 10;

/// The settings every client shares; TLS material is added per host
/// (`tls::client_for`, which also caches the clients so connections are
/// reused). reqwest drops Authorization when a redirect leaves the origin
/// (host or port), and decompresses nothing because no compression feature
/// is enabled: digests cover the bytes as sent. Every name goes through the
/// guarded resolver, and proxies are vicpull's own decision.
pub fn builder(proxies: &Proxies, hosts: &Hosts) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .dns_resolver(super::resolve::Guarded::new(hosts.clone()))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                let why = format!("more than {MAX_REDIRECTS} redirects");
                return attempt.error(why);
            }
            match super::guard::refused(attempt.url()) {
                Some(why) => attempt.error(format!("redirect refused: {why}")),
                None => attempt.follow(),
            }
        }));
    proxies.apply(b)
}

/// Read a body, failing as soon as it passes `cap` bytes.
pub async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
    read_capped_within(resp, cap, None).await
}

/// `read_capped`, and a body that sends nothing for `stall` has stalled: a
/// transient failure, so the caller retries on a fresh connection instead
/// of waiting out the read timeout.
pub async fn read_capped_within(
    resp: reqwest::Response,
    cap: usize,
    stall: Option<Duration>,
) -> Result<Vec<u8>> {
    let url = super::guard::shown(resp.url());
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big(&url, cap));
    }
    let read = async {
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        loop {
            let next = match stall {
                Some(gap) => tokio::time::timeout(gap, body.next()).await.map_err(|_| {
                    let mut e = Error::transient(
                        ErrorKind::Network,
                        format!(
                            "response from {url} stalled: nothing for {}s",
                            gap.as_secs()
                        ),
                    );
                    e.stall = true;
                    e
                })?,
                None => body.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| network(&url, &e))?;
            if out.len() + chunk.len() > cap {
                return Err(too_big(&url, cap));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    // A server that drips a small body byte by byte never trips the read
    // timeout; the whole body gets one deadline instead.
    match tokio::time::timeout(SMALL_BODY_DEADLINE, read).await {
        Ok(r) => r,
        Err(_) => Err(Error::transient(
            ErrorKind::Network,
            format!("response from {url} took longer than {SMALL_BODY_DEADLINE:?} to arrive"),
        )),
    }
}

/// The longest a manifest, config, token or error body may take to arrive.
pub const SMALL_BODY_DEADLINE: Duration = Duration::from_secs(60);

fn too_big(url: &str, cap: usize) -> Error {
    Error::new(
        ErrorKind::Registry,
        format!("response from {url} is larger than {cap} bytes"),
    )
}

pub fn network(what: &str, e: &reqwest::Error) -> Error {
    // Walk the source chain: reqwest's own text ("error sending request")
    // hides the cause a person needs ("connection refused"). The URL is
    // shown without its query, which holds the secret of a signed URL.
    let mut msg = match e.url() {
        Some(u) => format!("{} ({})", super::guard::shown(u), error_text(e)),
        None => error_text(e),
    };
    let mut refused = false;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        refused |= s.downcast_ref::<Refused>().is_some();
        src = s.source();
    }
    if let Some(p) = super::proxy::failed_proxy(e) {
        msg.push_str(&format!(" (through proxy {p})"));
    }
    let mut err = Error::transient(ErrorKind::Network, format!("{what}: {msg}"));
    // A name that resolves only to forbidden addresses: refused for good,
    // with the kind a refused redirect gets.
    if refused {
        err.kind = ErrorKind::Registry;
        err.transient = false;
        return err;
    }
    // A certificate that does not verify will not verify on the next try,
    // nor will a request we could not even build (a bad header value) or a
    // redirect we refused.
    err.transient =
        !(msg.contains("invalid peer certificate") || e.is_builder() || e.is_redirect());
    if !err.transient && (e.is_builder() || e.is_redirect()) {
        err.kind = ErrorKind::Registry;
    }
    err
}

/// reqwest's own text for `e`, without the URL it would append.
fn error_text(e: &reqwest::Error) -> String {
    let mut bare = e.to_string();
    if let Some(u) = e.url() {
        bare = bare.replace(&format!(" for url ({u})"), "");
    }
    bare
}

/// How long a Retry-After asks us to wait (seconds or HTTP-date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    super::ratelimit::retry_after(headers)
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
        // Only a proxy answers 407: its credentials go in the proxy URL.
        407 => Error::new(
            ErrorKind::Auth,
            format!("{text}: the HTTP proxy wants credentials (proxy URL user:password)"),
        ),
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
    Some(crate::error::printable(format!("{code} {msg}").trim()))
}

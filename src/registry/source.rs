//! One place a repository can be read from: the registry itself or one of
//! its mirrors. A source sends requests with its own credentials, answers a
//! 401 once, and waits out rate limits at its host's shared gate.

use super::auth::{Auth, CredSource};
use super::ratelimit::{self, Gate};
use super::settings::Settings;
use super::{guard, http, tls};
use crate::error::{Error, ErrorKind, Result};
use crate::options::Credentials;
use reqwest::header::AUTHORIZATION;
use reqwest::{Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Largest error body we read for its message.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Rate-limit waits for one request before giving up.
const RATE_RETRIES: u32 = 4;

pub struct Source {
    name: String,
    /// `scheme://host[:port][/prefix]/v2/<repository>/`
    api: String,
    /// `ns=<registry>` on mirror requests, as containerd sends it, so a
    /// P2P mirror (Spegel, Dragonfly) knows which upstream is meant.
    query: Option<String>,
    origin: String,
    http: reqwest::Client,
    auth: Auth,
    gate: Arc<Gate>,
    mirror: bool,
    max_wait: Duration,
}

fn host_port(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

impl Source {
    pub fn registry(
        registry: &str,
        repository: &str,
        plain_http: bool,
        credentials: Credentials,
        settings: &Arc<Settings>,
    ) -> Result<Source> {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if plain_http { "http" } else { "https" };
        let api = format!("{scheme}://{host}/v2/{repository}/");
        // Compared with answers' final URLs, so written as the URL type
        // writes origins (lower case, no default port).
        let origin = reqwest::Url::parse(&api)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| format!("{scheme}://{host}"));
        let creds = match credentials {
            Credentials::Anonymous => CredSource::DockerConfig(registry.to_string()),
            given => CredSource::Given(given),
        };
        Ok(Source {
            name: format!("registry {registry}"),
            api,
            query: None,
            origin,
            http: tls::client_for(settings, host)?,
            auth: Auth::new(creds, settings.clone(), repository),
            gate: ratelimit::gate(host),
            mirror: false,
            max_wait: settings.max_retry_wait,
        })
    }

    pub fn mirror(
        url: &reqwest::Url,
        registry: &str,
        repository: &str,
        settings: &Arc<Settings>,
    ) -> Result<Source> {
        let host = host_port(url);
        let prefix = url.path().trim_end_matches('/').trim_end_matches("/v2");
        let origin = url.origin().ascii_serialization();
        // Mirrors get no credentials from the options: those are for the
        // registry named in the reference, and must not leak to a cache.
        let creds = CredSource::DockerConfig(host.clone());
        Ok(Source {
            name: format!("mirror {origin}{prefix}"),
            api: format!("{origin}{prefix}/v2/{repository}/"),
            query: Some(format!("ns={registry}")),
            origin,
            http: tls::client_for(settings, &host)?,
            auth: Auth::new(creds, settings.clone(), repository),
            gate: ratelimit::gate(&host),
            mirror: true,
            max_wait: settings.max_retry_wait,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// GET `path` under the repository. A 401 is answered once with fresh
    /// credentials; one from another origin (storage a redirect led to) is
    /// not ours to answer and comes back as is. A 429 (or 503 with
    /// Retry-After) pauses the host's gate; with `wait` the pause is waited
    /// out here, up to the configured longest wait, else it comes back as
    /// a transient RateLimited error whose `retry_after` is the pause, for a
    /// caller with its own retry loop (blob transfers, which report the
    /// wait as progress). Mirrors do not wait at all: the next source is
    /// asked instead.
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
        wait: bool,
    ) -> Result<Response> {
        let mut url = match &self.query {
            Some(q) => format!("{}{path}?{q}", self.api),
            None => format!("{}{path}", self.api),
        };
        let (mut renewed, mut rehomed) = (false, false);
        let mut waits = 0;
        loop {
            self.gate.wait().await;
            let mut req = self.http.get(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let sent = self.auth.header();
            if let Some(h) = &sent {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| http::network(what, &e))?;
            let status = resp.status();
            let home = self.at_origin(resp.url());
            // Redirected away and back to our origin: the client dropped
            // Authorization on the hop out and never adds it back (Go's
            // does), so ask that final URL directly, once, with it.
            let moved = || reqwest::Url::parse(&url).map_or(true, |u| &u != resp.url());
            if status == StatusCode::UNAUTHORIZED && home && !rehomed && moved() {
                rehomed = true;
                url = resp.url().to_string();
                if sent.is_some() {
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED && home && !renewed {
                renewed = true;
                self.auth
                    .on_unauthorized(resp.headers(), sent.as_deref(), what)
                    .await?;
                continue;
            }
            let asked = ratelimit::retry_after(resp.headers());
            let limited = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::SERVICE_UNAVAILABLE && asked.is_some());
            if !limited || self.mirror {
                if !limited {
                    self.gate.passed();
                }
                return Ok(resp);
            }
            let too_long = asked.is_some_and(|w| w > self.max_wait);
            if too_long || (wait && waits >= RATE_RETRIES) {
                let mut e = fail(resp, what).await;
                e.kind = ErrorKind::RateLimited;
                e.transient = false;
                e.retry_after = asked;
                if too_long {
                    e.message.push_str(&format!(
                        "; that is longer than the {}s we wait (max_retry_wait_secs)",
                        self.max_wait.as_secs()
                    ));
                } else {
                    e.message
                        .push_str(&format!("; still limited after {waits} waits"));
                }
                return Err(e);
            }
            let applied = self.gate.pause(asked);
            log::info!(
                "{}: {what}: HTTP {status}; requests to it pause {applied:?}",
                self.name
            );
            if !wait {
                let mut e = fail(resp, what).await;
                e.kind = ErrorKind::RateLimited;
                e.transient = true;
                e.retry_after = Some(applied);
                return Err(e);
            }
            waits += 1;
        }
    }

    /// The error for a blob answer that is neither 200 nor 206. Storage a
    /// redirect led to (another origin) that refuses us has most likely
    /// expired its signed URL: transient, so the next attempt asks the
    /// registry for a fresh one.
    ///
    /// Its 401 or 403 is Registry, not Auth: our credentials never went
    /// there, and what it refused is a URL the registry handed out.
    pub async fn fail_blob(&self, resp: Response, what: &str) -> Error {
        let status = resp.status();
        if !self.at_origin(resp.url()) && status == StatusCode::RANGE_NOT_SATISFIABLE {
            // Storage that refuses our Range: not retried as such, so the
            // transfer starts over from byte 0 without one.
            return Error::new(
                ErrorKind::Registry,
                format!(
                    "{what}: storage at {} refused the Range request (HTTP {status})",
                    guard::shown(resp.url())
                ),
            );
        }
        if !self.at_origin(resp.url()) && status.is_client_error() {
            let e = Error::transient(
                ErrorKind::Registry,
                format!(
                    "{what}: storage at {} answered HTTP {} (signed URL expired?)",
                    guard::shown(resp.url()),
                    resp.status()
                ),
            );
            return e;
        }
        fail(resp, what).await
    }

    /// Whether `u` is on this source's own origin (scheme, host, port).
    fn at_origin(&self, u: &reqwest::Url) -> bool {
        u.origin().ascii_serialization() == self.origin
    }
}

/// Turn a non-success answer into an error, reading a capped body for the
/// registry's message.
pub async fn fail(resp: Response, what: &str) -> Error {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = http::read_capped(resp, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    http::status_error(status, &headers, &body, what)
}

/// Whether an error from a mirror lets the next source be tried. Auth and
/// bad input are the caller's to fix, so they stop the pull.
pub fn falls_back(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::NotFound
            | ErrorKind::Network
            | ErrorKind::RateLimited
            | ErrorKind::Registry
            | ErrorKind::DigestMismatch
    )
}

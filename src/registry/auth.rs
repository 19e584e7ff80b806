//! Registry authentication: anonymous, basic, and the bearer-token challenge
//! flow. One token per repository scope, fetched once however many requests
//! hit the 401 at the same moment, and renewed once when it is rejected.
//! Credentials come from the options, else from the Docker config, looked up
//! only when a registry first asks for them.

use super::challenge::{self, Challenge};
use super::dockerconfig::{self, Found};
use super::http::{read_capped, status_error};
use super::settings::Settings;
use super::{guard, ratelimit, tls};
use crate::error::{Error, ErrorKind, Result};
use crate::options::Credentials;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Token lifetimes below this are raised to it (distribution's own floor).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Largest token answer we read; real ones are a few KiB.
pub const MAX_TOKEN_BODY: usize = 1 << 20;
/// 429s from a token server we wait out for one token, at most (fewer when
/// max_attempts says so).
const TOKEN_RATE_RETRIES: u32 = 4;

/// Where this host's credentials come from.
#[derive(Clone, Debug)]
pub enum CredSource {
    /// Given in the options (Anonymous when none were).
    Given(Credentials),
    /// Looked up in the Docker config for this host on the first 401.
    DockerConfig(String),
}

#[derive(Clone)]
struct Current {
    header: String,
    expires: Option<Instant>,
}

pub struct Auth {
    source: CredSource,
    settings: Arc<Settings>,
    /// Resolved credentials, once a registry asked for them.
    found: tokio::sync::OnceCell<Option<Found>>,
    /// `repository:<repo>:pull`, used when the challenge names no scope.
    default_scope: String,
    current: Mutex<Option<Current>>,
    /// Serialises renewals so concurrent 401s cause one token fetch.
    renewing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    /// Seen as an integer, a float and a quoted number in the wild; any
    /// of those counts, anything else means the 60 s default.
    #[serde(default)]
    expires_in: serde_json::Value,
}

/// Seconds from `expires_in`, when it holds a usable number.
fn lifetime_secs(v: &serde_json::Value) -> Option<u64> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0).then(|| secs.min(u32::MAX as f64) as u64)
}

impl Auth {
    pub fn new(source: CredSource, settings: Arc<Settings>, repository: &str) -> Auth {
        let current = match &source {
            CredSource::Given(Credentials::Token(t)) => Some(Current {
                header: format!("Bearer {t}"),
                expires: None,
            }),
            _ => None,
        };
        Auth {
            source,
            settings,
            found: tokio::sync::OnceCell::new(),
            default_scope: format!("repository:{repository}:pull"),
            current: Mutex::new(current),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    /// The Authorization value to send now, if any.
    pub fn header(&self) -> Option<String> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        cur.as_ref()
            .filter(|c| c.expires.map_or(true, |e| Instant::now() < e))
            .map(|c| c.header.clone())
    }

    async fn credentials(&self) -> Result<Option<Found>> {
        let found = self.found.get_or_try_init(|| async {
            match &self.source {
                CredSource::Given(Credentials::Anonymous) => Ok(None),
                CredSource::Given(Credentials::Basic { username, password }) => {
                    Ok(Some(Found::Basic {
                        username: username.clone(),
                        password: password.clone(),
                    }))
                }
                CredSource::Given(Credentials::Token(t)) => Ok(Some(Found::Bearer(t.clone()))),
                CredSource::DockerConfig(host) => {
                    let (s, h) = (self.settings.clone(), host.clone());
                    tokio::task::spawn_blocking(move || dockerconfig::lookup(&s, &h))
                        .await
                        .map_err(|e| Error::new(ErrorKind::Internal, format!("lookup: {e}")))?
                }
            }
        });
        let found = found.await?.clone();
        match &found {
            Some(Found::Basic { username, password }) => {
                crate::secrets::remember_basic(username, password)
            }
            Some(Found::Bearer(t) | Found::Identity(t)) => crate::secrets::remember(t),
            None => {}
        }
        Ok(found)
    }

    /// Answer a 401. `sent` is the Authorization the failed request carried,
    /// so a caller that lost the race to renew just picks up the new value.
    pub async fn on_unauthorized(
        &self,
        headers: &HeaderMap,
        sent: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let _guard = self.renewing.lock().await;
        let now = self.header();
        if now.is_some() && now.as_deref() != sent {
            return Ok(());
        }
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let creds = self.credentials().await?;
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        let next = match (bearer, &creds) {
            // A registry token from the options or the Docker config is sent
            // as is; only its rejection is final.
            (_, Some(Found::Bearer(t))) if sent != Some(format!("Bearer {t}").as_str()) => {
                Current {
                    header: format!("Bearer {t}"),
                    expires: None,
                }
            }
            (_, Some(Found::Bearer(_))) => {
                return Err(auth_error(what, "the registry rejected the token given"));
            }
            (Some(c), _) => self.fetch_token(c, creds.as_ref(), what).await?,
            (None, Some(Found::Basic { username, password })) if basic => Current {
                header: basic_header(username, password),
                expires: None,
            },
            (None, Some(_)) if challenges.is_empty() => {
                return Err(auth_error(
                    what,
                    "the registry sent 401 without a challenge",
                ));
            }
            (None, None | Some(Found::Identity(_))) if basic => {
                return Err(auth_error(
                    what,
                    "the registry wants basic credentials; none given",
                ));
            }
            _ => {
                let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
                return Err(auth_error(
                    what,
                    &format!("no supported challenge among [{}]", schemes.join(", ")),
                ));
            }
        };
        if sent == Some(next.header.as_str()) {
            return Err(auth_error(what, "the registry rejected fresh credentials"));
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
        Ok(())
    }

    async fn fetch_token(
        &self,
        c: &Challenge,
        creds: Option<&Found>,
        what: &str,
    ) -> Result<Current> {
        let realm = c
            .param("realm")
            .ok_or_else(|| auth_error(what, "the bearer challenge has no realm"))?;
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| auth_error(what, &format!("token realm {realm:?} is not a URL: {e}")))?;
        if let Some(why) = guard::refused(&url) {
            return Err(auth_error(what, &format!("token realm refused: {why}")));
        }
        let service = c.param("service");
        // Several scopes come space-separated; the token API wants one
        // parameter each, every one of them whole.
        let scope = c.param("scope").unwrap_or(&self.default_scope);
        let scopes: Vec<&str> = scope.split_ascii_whitespace().collect();
        let realm_shown = guard::shown(&url);
        let host = url.host_str().unwrap_or_default().to_string();
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let http = tls::client_for(&self.settings, &host)?;
        let refresh = match creds {
            Some(Found::Identity(t)) => Some(t.as_str()),
            _ => None,
        };
        if refresh.is_none() {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scopes {
                q.append_pair("scope", s);
            }
        }
        let gate = ratelimit::gate(&host);
        let mut waits = 0;
        let resp = loop {
            gate.wait().await;
            let req = match refresh {
                // An identity token is an OAuth2 refresh token: POST it.
                Some(t) => {
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", t),
                        ("client_id", "vicpull"),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    form.push(("scope", scope));
                    http.post(url.clone()).form(&form)
                }
                None => {
                    let req = http.get(url.clone());
                    match creds {
                        Some(Found::Basic { username, password }) => {
                            req.basic_auth(username, Some(password))
                        }
                        _ => req,
                    }
                }
            };
            let resp = req.send().await.map_err(|e| {
                super::http::network(&format!("token request to {realm_shown}"), &e)
            })?;
            let max_waits = TOKEN_RATE_RETRIES.min(self.settings.max_attempts - 1);
            if resp.status().as_u16() == 429 && waits < max_waits {
                let wait = ratelimit::retry_after(resp.headers());
                if wait.is_some_and(|w| w > self.settings.max_retry_wait) {
                    break resp;
                }
                waits += 1;
                let applied = gate.pause(wait);
                log::info!("auth: {realm_shown} rate limited; waiting {applied:?}");
                continue;
            }
            gate.passed();
            break resp;
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
            let mut err = status_error(
                status,
                &headers,
                &body,
                &format!("token for {what} from {realm_shown}"),
            );
            if matches!(status.as_u16(), 401 | 403) {
                err.kind = ErrorKind::Auth;
            }
            // Retries were spent here; the caller must not start over.
            err.transient = false;
            return Err(err);
        }
        let body = read_capped(resp, MAX_TOKEN_BODY).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            auth_error(
                what,
                &format!("token response from {realm_shown} is not JSON: {e}"),
            )
        })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token);
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            auth_error(
                what,
                &format!("token response from {realm_shown} held neither token nor access_token"),
            )
        })?;
        let asked = Duration::from_secs(lifetime_secs(&parsed.expires_in).unwrap_or(60));
        if asked < MIN_TOKEN_LIFETIME {
            log::debug!("auth: increasing token expiration from {asked:?} to 60s");
        }
        let lifetime = asked.max(MIN_TOKEN_LIFETIME);
        log::debug!(
            "auth: token for {what} from {realm_shown}, valid {}s",
            lifetime.as_secs()
        );
        crate::secrets::remember(&token);
        Ok(Current {
            header: format!("Bearer {token}"),
            expires: Some(Instant::now() + lifetime),
        })
    }
}

fn auth_error(what: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::Auth,
        format!("authentication for {what} failed: {why}"),
    )
}

fn basic_header(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with or without padding; None when malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b"u1:p1"), "dTE6cDE=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
        for s in [&b"u1:p1"[..], b"ab", b"abc", b"", b"a:b:c\xff"] {
            assert_eq!(super::base64_decode(&super::base64(s)).unwrap(), s);
        }
        assert_eq!(super::base64_decode("YWI").unwrap(), b"ab");
        assert!(super::base64_decode("a b").is_none());
    }

    #[test]
    fn s01_expires_in_in_every_spelling_seen() {
        use serde_json::json;
        let f = |v: serde_json::Value| super::lifetime_secs(&v);
        assert_eq!(f(json!(300)), Some(300));
        assert_eq!(f(json!(299.9)), Some(299));
        assert_eq!(f(json!("300")), Some(300));
        assert_eq!(f(json!(" 300 ")), Some(300));
        for bad in [
            json!(0),
            json!(-5),
            json!("soon"),
            json!(null),
            json!([1]),
            json!(1e300),
        ] {
            assert!(
                f(bad.clone()).map_or(true, |s| s == u32::MAX as u64),
                "{bad}"
            );
        }
    }
}

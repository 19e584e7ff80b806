//! Registry authentication: anonymous, basic, and the bearer-token challenge
//! flow. One token per repository scope, fetched once however many requests
//! hit the 401 at the same moment, and renewed once when it is rejected.

use super::challenge::{self, Challenge};
use super::http::{read_capped, status_error};
use crate::error::{Error, ErrorKind, Result};
use crate::options::Credentials;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token lifetimes below this are raised to it (distribution's own floor).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_TOKEN_BODY: usize = 1 << 20;

#[derive(Clone)]
struct Current {
    header: String,
    expires: Option<Instant>,
}

pub struct Auth {
    credentials: Credentials,
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
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(credentials: Credentials, repository: &str) -> Auth {
        let current = match &credentials {
            Credentials::Token(t) => Some(Current {
                header: format!("Bearer {t}"),
                expires: None,
            }),
            _ => None,
        };
        Auth {
            credentials,
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

    /// Answer a 401. `sent` is the Authorization the failed request carried,
    /// so a caller that lost the race to renew just picks up the new value.
    pub async fn on_unauthorized(
        &self,
        http: &reqwest::Client,
        headers: &HeaderMap,
        sent: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let _guard = self.renewing.lock().await;
        if self.header().as_deref() != sent && self.header().is_some() {
            return Ok(());
        }
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        let next = match (bearer, &self.credentials) {
            (Some(c), _) => self.fetch_token(http, c, what).await?,
            (None, Credentials::Basic { username, password }) if basic => Current {
                header: basic_header(username, password),
                expires: None,
            },
            (None, Credentials::Basic { .. }) if challenges.is_empty() => {
                return Err(auth_error(
                    what,
                    "the registry sent 401 without a challenge",
                ));
            }
            (None, Credentials::Anonymous | Credentials::Token(_)) if basic => {
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
        http: &reqwest::Client,
        c: &Challenge,
        what: &str,
    ) -> Result<Current> {
        let realm = c
            .param("realm")
            .ok_or_else(|| auth_error(what, "the bearer challenge has no realm"))?;
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| auth_error(what, &format!("token realm {realm:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(auth_error(
                what,
                &format!("token realm {realm:?} is not http(s)"),
            ));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = c.param("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", c.param("scope").unwrap_or(&self.default_scope));
        }
        let mut req = http.get(url.clone());
        if let Credentials::Basic { username, password } = &self.credentials {
            req = req.basic_auth(username, Some(password));
        }
        let realm_shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        let resp = req.send().await.map_err(|e| {
            Error::transient(
                ErrorKind::Network,
                format!("token request to {realm_shown}: {e}"),
            )
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_capped(resp, 64 * 1024).await.unwrap_or_default();
            let mut err = status_error(
                status,
                &headers,
                &body,
                &format!("token from {realm_shown}"),
            );
            if matches!(status.as_u16(), 401 | 403) {
                err.kind = ErrorKind::Auth;
            }
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
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60)).max(MIN_TOKEN_LIFETIME);
        log::debug!(
            "auth: token for {what} from {realm_shown}, valid {}s",
            lifetime.as_secs()
        );
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

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b"u1:p1"), "dTE6cDE=");
        assert_eq!(super::base64(b"ab"), "YWI=");
        assert_eq!(super::base64(b"abc"), "YWJj");
    }
}

//! A registry client for one repository: manifests and blobs over the
//! distribution API, with auth handled transparently.

mod auth;
pub mod challenge;
pub mod http;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{ACCEPT, MAX_MANIFEST_BYTES};
use crate::options::Credentials;
use auth::Auth;
use reqwest::header::{ACCEPT as ACCEPT_H, AUTHORIZATION, CONTENT_TYPE, RANGE};
use reqwest::{Response, StatusCode};

pub struct Client {
    http: reqwest::Client,
    /// `https://host:port` or `http://...` for plain-HTTP registries.
    base: String,
    repository: String,
    auth: Auth,
}

/// A fetched manifest: raw bytes (digests cover these) and Content-Type.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

impl Client {
    pub fn new(
        registry: &str,
        repository: &str,
        plain_http: bool,
        credentials: Credentials,
    ) -> Result<Client> {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Client {
            http: http::client()?,
            base: format!("{scheme}://{host}"),
            repository: repository.to_string(),
            auth: Auth::new(credentials, repository),
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Send a GET, answering one 401 with fresh credentials.
    async fn get(&self, path: &str, headers: &[(&str, String)], what: &str) -> Result<Response> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let mut renewed = false;
        loop {
            let mut req = self.http.get(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let sent = self.auth.header();
            if let Some(h) = &sent {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| http::network(what, &e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                self.auth
                    .on_unauthorized(&self.http, resp.headers(), sent.as_deref(), what)
                    .await?;
                continue;
            }
            return Ok(resp);
        }
    }

    async fn fail(resp: Response, what: &str) -> Error {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = http::read_capped(resp, 64 * 1024).await.unwrap_or_default();
        http::status_error(status, &headers, &body, what)
    }

    /// GET a manifest by tag or digest, size-capped while reading.
    pub async fn manifest(&self, reference: &str) -> Result<Fetched> {
        let what = format!("manifest {}:{reference}", self.repository);
        let resp = self
            .get(
                &format!("manifests/{reference}"),
                &[(ACCEPT_H.as_str(), ACCEPT.into())],
                &what,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Self::fail(resp, &what).await);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = http::read_capped(resp, MAX_MANIFEST_BYTES).await?;
        Ok(Fetched {
            bytes,
            content_type,
        })
    }

    /// GET a small blob (a config) whole, verified against its digest.
    pub async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let what = format!("blob {digest}");
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("{what} is too large ({size})"),
            ));
        }
        let resp = self.get(&format!("blobs/{digest}"), &[], &what).await?;
        if !resp.status().is_success() {
            return Err(Self::fail(resp, &what).await);
        }
        let bytes = http::read_capped(resp, MAX_MANIFEST_BYTES).await?;
        let got = Digest::of(&bytes);
        if got != *digest {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!("digest mismatch for {what}: got {got}"),
            ));
        }
        Ok(bytes)
    }

    /// Open a blob for streaming, from `offset` when resuming. The caller
    /// checks whether a ranged request was honoured (206) or not (200).
    pub async fn open_blob(&self, digest: &Digest, offset: u64) -> Result<Response> {
        let what = format!("blob {digest}");
        // No `Range: bytes=0-` on a fresh download: some servers reject it.
        let range = (offset > 0).then(|| (RANGE.as_str(), format!("bytes={offset}-")));
        let resp = self
            .get(&format!("blobs/{digest}"), range.as_slice(), &what)
            .await?;
        let ok = resp.status() == StatusCode::OK || resp.status() == StatusCode::PARTIAL_CONTENT;
        if !ok {
            return Err(Self::fail(resp, &what).await);
        }
        Ok(resp)
    }
}

//! A registry client for one repository: manifests and blobs over the
//! distribution API, with auth, rate limits and mirrors handled here so
//! callers see one source that either answers or fails clearly.

pub(crate) mod auth;
pub mod challenge;
mod dockerconfig;
mod foreign;
pub mod guard;
pub mod http;
pub mod proxy;
pub mod ratelimit;
pub mod resolve;
pub mod settings;
mod source;
mod tls;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{ACCEPT, MAX_MANIFEST_BYTES};
use crate::options::Checked;
use reqwest::header::{ACCEPT as ACCEPT_H, CONTENT_TYPE, RANGE};
use reqwest::{Response, StatusCode};
use source::Source;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use settings::Settings;

/// The pause before retrying a manifest or config, times the attempt
/// (max_attempts tries in all).
const SMALL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// Foreign URLs tried per layer; more are ignored.
const MAX_FOREIGN_URLS: usize = 4;

/// Largest config blob we read whole.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

pub struct Client {
    repository: String,
    /// Mirrors in the order given, then the registry itself (always last).
    sources: Vec<Source>,
    /// Per blob, the source its last open went to: a second open means that
    /// attempt failed, so a mirror is not asked again for that blob.
    opened: Mutex<HashMap<Digest, usize>>,
    /// Per blob, why its last attempt failed, as the transfer reported it.
    failures: Mutex<HashMap<Digest, String>>,
    /// Foreign-layer URLs by digest, as the manifest listed them.
    foreign: Mutex<HashMap<Digest, Vec<reqwest::Url>>>,
    settings: Arc<Settings>,
    /// The last RateLimit-Remaining a source sent, as sent.
    rate_remaining: Mutex<Option<String>>,
    /// A manifest or config body that sends nothing for this long has
    /// stalled (low_speed_time_secs, unless low_speed_limit is 0).
    stall: Option<std::time::Duration>,
}

/// A blob answer we can stream: the whole blob or the asked-for range.
fn ok_blob(resp: &Response) -> bool {
    matches!(resp.status(), StatusCode::OK | StatusCode::PARTIAL_CONTENT)
}

/// A fetched manifest: raw bytes (digests cover these) and Content-Type.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// A mirror's base URL (HTTPS when it names no scheme); Err says why it
/// cannot be one.
pub fn mirror_url(m: &str) -> std::result::Result<reqwest::Url, String> {
    let with_scheme = if m.contains("://") {
        m.to_string()
    } else {
        format!("https://{m}")
    };
    let u = reqwest::Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("a mirror must be an http(s) URL with a host".into());
    }
    if u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err("a mirror URL takes no query or credentials".into());
    }
    if let Some(why) = guard::refused(&u) {
        return Err(why);
    }
    Ok(u)
}

impl Client {
    pub fn new(registry: &str, repository: &str, o: &Checked) -> Result<Client> {
        let settings = Arc::new(o.registry_settings.clone());
        let mut sources = Vec::new();
        if let Some(h) = settings.host(registry) {
            for m in &h.mirrors {
                let url =
                    mirror_url(m).map_err(|why| Error::invalid(format!("mirror {m}: {why}")))?;
                sources.push(Source::mirror(&url, registry, repository, &settings)?);
            }
        }
        let plain = o.uses_plain_http(registry);
        sources.push(Source::registry(
            registry,
            repository,
            plain,
            o.credentials.clone(),
            &settings,
        )?);
        Ok(Client {
            repository: repository.to_string(),
            sources,
            opened: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            foreign: Mutex::new(HashMap::new()),
            settings,
            rate_remaining: Mutex::new(None),
            stall: (o.low_speed.bytes_per_sec > 0).then_some(o.low_speed.window),
        })
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The registry's RateLimit-Remaining as last seen, if it sends one.
    pub fn rate_limit_remaining(&self) -> Option<String> {
        self.rate_remaining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note(&self, resp: &Response) {
        let v = resp.headers().get("ratelimit-remaining");
        if let Some(v) = v.and_then(|v| v.to_str().ok()) {
            *self
                .rate_remaining
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(v.to_string());
        }
    }

    /// Try each source in turn while its errors allow a fallback
    /// (`source::falls_back`); the registry's own answer (the last source)
    /// is final.
    async fn each_source<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let last = self.sources.len() - 1;
        for i in 0..last {
            match f(i).await {
                Ok(v) => return Ok(v),
                Err(e) if source::falls_back(&e) => {
                    log::warn!(
                        "{}: {what}: {e}; trying {}",
                        self.sources[i].name(),
                        self.sources[i + 1].name()
                    );
                }
                Err(e) => return Err(e.context(self.sources[i].name())),
            }
        }
        // Manifests and configs have no transfer loop around them: a
        // transient failure of the registry itself is retried here.
        let mut attempt = 1;
        loop {
            match f(last).await {
                Err(e) if e.transient && attempt < self.settings.max_attempts => {
                    log::info!("{what}: {e}; attempt {} shortly", attempt + 1);
                    tokio::time::sleep(SMALL_BACKOFF * attempt).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// GET a manifest by tag or digest, size-capped while reading. With
    /// `expected`, the body must hash to it; a mirror that fails that is
    /// skipped. A Docker-Content-Digest header is held to the body too.
    pub async fn manifest(&self, reference: &str, expected: Option<&Digest>) -> Result<Fetched> {
        // Tags join with ':', digests (`sha256:...`) with '@'.
        let sep = if reference.contains(':') { '@' } else { ':' };
        let what = format!("manifest {}{sep}{reference}", self.repository);
        self.each_source(&what, |i| self.manifest_from(i, reference, expected, &what))
            .await
    }

    async fn manifest_from(
        &self,
        i: usize,
        reference: &str,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Fetched> {
        let src = &self.sources[i];
        let accept = [(ACCEPT_H.as_str(), ACCEPT.to_string())];
        let resp = src
            .get(&format!("manifests/{reference}"), &accept, what, true)
            .await?;
        self.note(&resp);
        if !resp.status().is_success() {
            return Err(source::fail(resp, what).await);
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v.trim()).ok());
        let bytes = http::read_capped_within(resp, MAX_MANIFEST_BYTES, self.stall).await?;
        // Each digest is checked in its own algorithm: a registry may name
        // the body by sha256 in its header when it was asked for sha512.
        let mismatch = |want: &Digest, by: &str| {
            let got = Digest::of_with(want.algorithm(), &bytes);
            Error::new(
                ErrorKind::DigestMismatch,
                format!("manifest digest mismatch for {what}: expected {want} ({by}), got {got}"),
            )
        };
        if let Some(want) = expected {
            if !want.matches(&bytes) {
                return Err(mismatch(want, "pulled by digest"));
            }
        }
        // A header in an algorithm we do not parse is not compared.
        if let Some(h) = header {
            if !h.matches(&bytes) {
                return Err(mismatch(&h, "Docker-Content-Digest"));
            }
        }
        Ok(Fetched {
            bytes,
            content_type,
        })
    }

    /// GET a small blob (a config) whole, verified against its digest.
    pub async fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let what = format!("blob {digest} of {}", self.repository);
        if size > MAX_CONFIG_BYTES as u64 {
            return Err(Error::new(
                ErrorKind::Registry,
                format!("{what} is too large ({size} bytes, at most {MAX_CONFIG_BYTES})"),
            ));
        }
        let what = &what;
        self.each_source(what, |i| async move {
            let src = &self.sources[i];
            let resp = src.get(&format!("blobs/{digest}"), &[], what, true).await?;
            if !resp.status().is_success() {
                return Err(src.fail_blob(resp, what).await);
            }
            let bytes = http::read_capped_within(resp, MAX_CONFIG_BYTES, self.stall).await?;
            // The manifest's size is held to the body like the digest is,
            // as for layers: a descriptor that lies about either is refused.
            if bytes.len() as u64 != size {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "size mismatch for {what}: the manifest says {size} bytes, got {}",
                        bytes.len()
                    ),
                ));
            }
            let got = Digest::of_with(digest.algorithm(), &bytes);
            if got != *digest {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!("digest mismatch for {what}: got {got}"),
                ));
            }
            Ok(bytes)
        })
        .await
    }

    /// Note why an attempt at `digest` failed after `open_blob` succeeded
    /// (cut, short, wrong bytes), so the warning that names the source it
    /// came from can say why the next source is asked.
    pub fn blob_failed(&self, digest: &Digest, e: &Error) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.insert(digest.clone(), e.message.clone());
    }

    /// Open a blob for streaming, from `offset` when resuming. The caller
    /// checks whether a ranged request was honoured (206) or not (200).
    ///
    /// Each call after the first for a digest means the previous attempt
    /// failed; a mirror gets one attempt per blob, then the next source is
    /// asked, with a Range from `offset` so a blob a mirror died in the
    /// middle of continues instead of starting over.
    pub async fn open_blob(&self, digest: &Digest, offset: u64) -> Result<Response> {
        let what = format!("blob {digest} of {}", self.repository);
        let urls = self.foreign_urls(digest, true);
        let last = urls.len() + self.sources.len() - 1;
        let name = |i: usize| match urls.get(i) {
            Some(u) => format!("foreign URL {}", guard::shown(u)),
            None => self.sources[i - urls.len()].name().to_string(),
        };
        let first = {
            let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
            match opened.get(digest) {
                Some(&i) if i < last => {
                    let why = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                    let why = why
                        .get(digest)
                        .map_or("the transfer broke off", |w| w.as_str());
                    log::warn!(
                        "{}: {what}: {why}; continuing from {} at byte {offset}",
                        name(i),
                        name(i + 1)
                    );
                    i + 1
                }
                Some(&i) => i,
                None => 0,
            }
        };
        // No `Range: bytes=0-` on a fresh download: some servers reject it.
        let range = (offset > 0).then(|| (RANGE.as_str(), format!("bytes={offset}-")));
        let mut i = first;
        loop {
            self.opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(digest.clone(), i);
            let r = match urls.get(i) {
                Some(u) => foreign::open(&self.settings, u, range.as_ref(), &what).await,
                None => {
                    let src = &self.sources[i - urls.len()];
                    let path = format!("blobs/{digest}");
                    match src.get(&path, range.as_slice(), &what, false).await {
                        Ok(resp) if !ok_blob(&resp) => Err(src.fail_blob(resp, &what).await),
                        r => r,
                    }
                }
            };
            let e = match r {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            // A foreign URL that fails leaves the registry to try.
            if i < last && (i < urls.len() || source::falls_back(&e)) {
                log::warn!("{}: {e}; trying {}", name(i), name(i + 1));
                i += 1;
                continue;
            }
            let e = match self.foreign_urls(digest, false) {
                hosts if e.kind == ErrorKind::NotFound && !hosts.is_empty() && urls.is_empty() => {
                    let shown: Vec<String> = hosts.iter().map(guard::shown).collect();
                    e.context(format!(
                        "foreign layer (allow_foreign_layers would fetch it from {})",
                        shown.join(", ")
                    ))
                }
                _ => e,
            };
            return Err(if i < last { e.context(name(i)) } else { e });
        }
    }

    /// Remember the URLs foreign (non-distributable) layers list. They are
    /// fetched from only when `allow_foreign_layers` is set, before the
    /// registry; a URL that is not http(s) or points at a link-local or
    /// metadata address is dropped.
    pub fn note_foreign(&self, layers: &[crate::manifest::Descriptor]) {
        let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        for l in layers {
            let (Some(urls), Ok(d)) = (&l.urls, l.parsed_digest()) else {
                continue;
            };
            let ok = urls.iter().filter_map(|u| match reqwest::Url::parse(u) {
                Ok(url) if guard::refused(&url).is_none() => Some(url),
                Ok(url) => {
                    let why = guard::refused(&url).unwrap_or_default();
                    log::warn!(
                        "layer {d}: foreign URL {} refused: {why}",
                        guard::shown(&url)
                    );
                    None
                }
                Err(_) => None,
            });
            let ok: Vec<reqwest::Url> = ok.take(MAX_FOREIGN_URLS).collect();
            f.insert(d, ok);
        }
    }

    /// The foreign URLs of `digest`: to fetch from (`usable`, only when
    /// allowed), or all of them (to name in an error).
    fn foreign_urls(&self, digest: &Digest, usable: bool) -> Vec<reqwest::Url> {
        if usable && !self.settings.allow_foreign_layers {
            return Vec::new();
        }
        let f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        f.get(digest).cloned().unwrap_or_default()
    }
}

//! The body of one transfer: take the store's download lock for the digest
//! (other processes wait, then find the blob), wait for a slot, resume from
//! a kept partial, stream the blob through the verifier, retry transient
//! failures with Range from the byte reached, then commit.

use super::{Blob, Manager, Request, State, Stats, Transfer};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Throttle;
use crate::store::{BlobLock, TempBlob};
use crate::verify::BlobHasher;
use futures_util::StreamExt;
use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest Retry-After we honour; a longer one fails the transfer at once.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How often a process waiting on another's download looks again.
const LOCK_POLL: Duration = Duration::from_millis(100);
/// Stalls in a row, with no byte gained between them, that count as one
/// failed attempt.
const STALLS_PER_ATTEMPT: u32 = 3;
/// Resumes after a connection that made progress, beyond max_attempts.
const MAX_PROGRESS_RECONNECTS: u32 = 200;

pub(super) async fn run(manager: Arc<Manager>, t: Arc<Transfer>, req: Request) {
    let result = tokio::select! {
        r = fetch(&manager, &t, &req) => r,
        _ = t.cancel.cancelled() => Err(Error::cancelled()),
    };
    if let Err(e) = &result {
        log::debug!("transfer {}: {e}", t.digest);
    }
    manager.finish(&t, result);
}

fn present(manager: &Manager, req: &Request) -> Option<Blob> {
    let store = manager.store();
    store.verified(&req.digest, req.size).map(|diff_id| Blob {
        digest: req.digest.clone(),
        size: req.size,
        diff_id,
        path: store.blob_path(&req.digest),
        fetched: false,
        stats: Stats::default(),
    })
}

/// Own the digest across processes, or learn that another process
/// finished it while we waited.
async fn lock_or_present(manager: &Manager, t: &Transfer, req: &Request) -> Result<LockOr> {
    loop {
        if let Some(b) = present(manager, req) {
            return Ok(LockOr::Present(b));
        }
        if let Some(lock) = manager.store().try_lock_blob(&req.digest)? {
            // It may have landed between our look and the lock.
            return Ok(match present(manager, req) {
                Some(b) => LockOr::Present(b),
                None => LockOr::Lock(lock),
            });
        }
        t.state.send_replace(State::Waiting);
        tokio::time::sleep(LOCK_POLL).await;
    }
}

enum LockOr {
    Lock(BlobLock),
    Present(Blob),
}

async fn fetch(manager: &Manager, t: &Transfer, req: &Request) -> Result<Blob> {
    let lock = match lock_or_present(manager, t, req).await? {
        LockOr::Present(b) => return Ok(b),
        LockOr::Lock(l) => l,
    };
    let _slot = manager.slots.acquire(req.pull_id, req.priority).await;
    let store = manager.store();
    let encoding = req.encoding.filter(|_| req.verify_diff_id);
    let mut hasher = BlobHasher::new(encoding);
    let mut temp = store.open_partial(&req.digest, &lock)?;
    // Kept on every way out but success and a proven mismatch, so a cancel,
    // a crash or exhausted retries leave bytes the next pull resumes from.
    temp.keep_on_drop(true);
    let mut stats = Stats { resumed_bytes: temp.len()?, ..Stats::default() };
    if stats.resumed_bytes > req.size {
        temp.reset()?;
        stats.resumed_bytes = 0;
    } else if stats.resumed_bytes > 0 {
        log::info!("blob {}: resuming from byte {}", req.digest, stats.resumed_bytes);
        temp.replay(|b| hasher.update(b))?;
    }

    let mut attempt = 1;
    let mut mismatches = 0;
    let mut stalls = 0;
    let mut stalled_at = u64::MAX;
    let mut reconnects = 0;
    loop {
        let before = hasher.size();
        let mut restarted = false;
        let outcome = match attempt_once(req, t, &mut temp, &mut hasher, &mut stats, &mut restarted)
            .await
        {
            Ok(()) => {
                t.state.send_replace(State::Verifying);
                check(req, std::mem::replace(&mut hasher, BlobHasher::new(encoding)))
            }
            Err(e) => Err(e),
        };
        let err = match outcome {
            Ok(diff_id) => {
                let path = store.commit(temp, &req.digest, diff_id.as_ref())?;
                drop(lock);
                let digest = req.digest.clone();
                let size = req.size;
                return Ok(Blob { digest, size, diff_id, path, fetched: true, stats });
            }
            Err(e) => e,
        };
        if err.stall {
            // Replace the connection at once; only a run of stalls with no
            // progress between them costs an attempt.
            stalls = if hasher.size() == stalled_at { stalls + 1 } else { 1 };
            stalled_at = hasher.size();
            *stats.retries.entry("stall".into()).or_default() += 1;
            if stalls < STALLS_PER_ATTEMPT {
                log::info!("blob {}: {err}; reconnecting", req.digest);
                continue;
            }
            stalls = 0;
        }
        // A connection that died after delivering new bytes is resumed at
        // once and costs no attempt: a flaky link still converges, and a
        // server that ignores Range (a restart) still counts.
        let gained = !restarted && hasher.size() > before;
        if err.transient && !err.stall && gained && reconnects < MAX_PROGRESS_RECONNECTS {
            reconnects += 1;
            *stats.retries.entry(cause(&err).into()).or_default() += 1;
            log::info!("blob {}: {err}; resuming at {}", req.digest, hasher.size());
            continue;
        }
        // A bad digest may come from a resume gone wrong: one full
        // re-download is allowed before it counts as permanent.
        let retry_mismatch = err.kind == ErrorKind::DigestMismatch && mismatches == 0;
        if err.kind == ErrorKind::DigestMismatch {
            mismatches += 1;
            temp.reset()?;
            hasher = BlobHasher::new(encoding);
        }
        if !(err.transient || retry_mismatch) || attempt >= req.max_attempts {
            if err.kind == ErrorKind::DigestMismatch || !err.transient {
                temp.keep_on_drop(false);
            }
            return Err(err);
        }
        let delay = match err.retry_after {
            Some(d) if d > MAX_SERVER_WAIT => return Err(err),
            Some(d) => d,
            None => backoff(attempt),
        };
        attempt += 1;
        *stats.retries.entry(cause(&err).into()).or_default() += 1;
        log::info!("blob {}: {err}; attempt {attempt} in {delay:?}", req.digest);
        t.state.send_replace(State::Retrying {
            attempt,
            delay_secs: delay.as_secs_f64().ceil() as u64,
            reason: err.message.clone(),
        });
        tokio::time::sleep(delay).await;
    }
}

fn cause(e: &Error) -> &'static str {
    match e.kind {
        _ if e.stall => "stall",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::DigestMismatch => "digest_mismatch",
        ErrorKind::Network => "network",
        _ => "server",
    }
}

/// Exponential backoff with +-25% jitter.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(10).saturating_sub(1));
    let base = exp.min(BACKOFF_CAP);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.75 + (nanos % 1000) as f64 / 2000.0;
    base.mul_f64(jitter)
}

/// Digest and size must match; a bad layer encoding is permanent.
fn check(req: &Request, hasher: BlobHasher) -> Result<Option<crate::digest::Digest>> {
    let v = hasher.finish();
    if v.digest != req.digest || v.size != req.size {
        return Err(Error::new(
            ErrorKind::DigestMismatch,
            format!(
                "digest mismatch for blob {}: got {} ({} bytes, expected {})",
                req.digest, v.digest, v.size, req.size
            ),
        ));
    }
    match v.diff_id {
        None => Ok(None),
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(why)) => {
            Err(Error::new(ErrorKind::Unsupported, format!("layer {}: {why}", req.digest)))
        }
    }
}

/// One HTTP exchange, resuming from what the hasher has already seen.
async fn attempt_once(
    req: &Request,
    t: &Transfer,
    temp: &mut TempBlob,
    hasher: &mut BlobHasher,
    stats: &mut Stats,
    restarted: &mut bool,
) -> Result<()> {
    if hasher.size() == req.size {
        return Ok(()); // a kept partial that was already complete
    }
    let offset = hasher.size();
    let resp = req.source.open_blob(&req.digest, offset).await?;
    if offset > 0 {
        let honoured = resp.status() == StatusCode::PARTIAL_CONTENT
            && content_range_start(&resp) == Some(offset);
        if !honoured {
            // A 200 carries the whole blob: start over from its first byte.
            // A 206 for another span cannot be trusted at all.
            log::info!("blob {}: server did not resume at {offset}; restarting", req.digest);
            temp.reset()?;
            *hasher = BlobHasher::new_like(hasher);
            *restarted = true;
            if resp.status() != StatusCode::OK {
                return Err(Error::transient(
                    ErrorKind::Registry,
                    format!("blob {}: answered a Range request with another span", req.digest),
                ));
            }
        }
    }
    let total = req.size;
    t.state.send_replace(State::Downloading { current: hasher.size(), total });
    let mut throttle = Throttle::new();
    let mut body = resp.bytes_stream();
    let mut window = Window::new(req.low_speed, hasher.size());
    loop {
        let chunk = match tokio::time::timeout(window.left(), body.next()).await {
            Err(_) => None,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let mut err = crate::registry::http::network(&format!("blob {}", req.digest), &e);
                err.message.push_str(&format!(" after {} of {total} bytes", hasher.size()));
                return Err(err);
            }
            Ok(Some(Ok(chunk))) => Some(chunk),
        };
        if let Some(chunk) = chunk {
            if hasher.size() + chunk.len() as u64 > total {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!("blob {}: the server sent more than {total} bytes", req.digest),
                ));
            }
            stats.fetched_bytes += chunk.len() as u64;
            hasher.update(&chunk);
            temp.write_all(&chunk)?;
            if throttle.ready(hasher.size()) {
                t.state.send_replace(State::Downloading { current: hasher.size(), total });
            }
        }
        if window.over() {
            if window.stalled(hasher.size()) {
                let mut e = Error::transient(
                    ErrorKind::Network,
                    format!(
                        "blob {}: stalled below {} bytes/s for {:?} after {} of {total} bytes",
                        req.digest,
                        req.low_speed.bytes_per_sec,
                        req.low_speed.window,
                        hasher.size()
                    ),
                );
                e.stall = true;
                return Err(e);
            }
            window = Window::new(req.low_speed, hasher.size());
        }
    }
    if hasher.size() < total {
        return Err(Error::transient(
            ErrorKind::Network,
            format!("blob {}: unexpected EOF after {} of {total} bytes", req.digest, hasher.size()),
        ));
    }
    t.state.send_replace(State::Downloading { current: total, total });
    Ok(())
}

/// One low-speed measuring window.
struct Window {
    limit: super::LowSpeed,
    ends: Instant,
    start_bytes: u64,
}

impl Window {
    fn new(limit: super::LowSpeed, bytes: u64) -> Window {
        Window { limit, ends: Instant::now() + limit.window, start_bytes: bytes }
    }

    fn left(&self) -> Duration {
        self.ends.saturating_duration_since(Instant::now())
    }

    fn over(&self) -> bool {
        Instant::now() >= self.ends
    }

    fn stalled(&self, bytes: u64) -> bool {
        let want = self.limit.bytes_per_sec as f64 * self.limit.window.as_secs_f64();
        ((bytes - self.start_bytes) as f64) < want
    }
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let span = v.trim().strip_prefix("bytes ")?;
    span.split('-').next()?.trim().parse().ok()
}

//! The body of one transfer: take the store's download lock for the digest
//! (other processes wait, then find the blob), wait for a slot, resume from
//! a kept partial, stream the blob through the verifier, retry transient
//! failures with Range from the byte reached, then commit.

use super::sink::{Parts, Sink};
use super::{Blob, Manager, Request, State, Stats, Transfer};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Throttle;
use crate::store::BlobLock;
use crate::verify::{BlobHasher, Inflated, OverLimit};
use futures_util::StreamExt;
use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let (alive, closed) = tokio::sync::oneshot::channel();
    let result = tokio::select! {
        r = fetch(&manager, &t, &req, alive) => r,
        _ = t.cancel.cancelled() => Err(Error::cancelled()),
    };
    // A cancelled download's writer may still hold the partial and the
    // lock for a moment: Done waits until they are released.
    let _ = closed.await;
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
        inflated: None,
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

async fn fetch(
    manager: &Manager,
    t: &Transfer,
    req: &Request,
    alive: tokio::sync::oneshot::Sender<()>,
) -> Result<Blob> {
    let lock = match lock_or_present(manager, t, req).await? {
        LockOr::Present(b) => return Ok(b),
        LockOr::Lock(l) => l,
    };
    let _slot = manager.slots.acquire(req.pull_id, req.priority).await;
    let store = manager.store().clone();
    let (algorithm, diff) = (req.digest.algorithm(), req.check);
    let mut temp = store.open_partial(&req.digest, &lock)?;
    // Kept on every way out but success and a proven mismatch, so a cancel,
    // a crash or exhausted retries leave bytes the next pull resumes from.
    temp.keep_on_drop(true);
    let (size, digest) = (req.size, req.digest.clone());
    let (mut parts, resumed) = blocking(move || {
        let mut hasher = BlobHasher::new(algorithm, diff);
        let mut resumed = temp.len()?;
        if resumed > size {
            temp.reset()?;
            resumed = 0;
        } else if resumed > 0 {
            log::info!("blob {digest}: resuming from byte {resumed}");
            temp.replay(|b| hasher.update(b))?;
        }
        Ok((
            Parts {
                temp,
                hasher,
                lock,
                _alive: alive,
            },
            resumed,
        ))
    })
    .await?;
    let mut stats = Stats {
        resumed_bytes: resumed,
        ..Stats::default()
    };

    let mut attempt = 1;
    let mut mismatches = 0;
    let mut stalls = 0;
    let mut stalled_at = u64::MAX;
    let mut reconnects = 0;
    loop {
        let before = parts.hasher.size();
        let mut restarted = false;
        let (back, result) = attempt_once(req, t, parts, &mut stats, &mut restarted).await?;
        parts = back;
        let outcome = result.and_then(|()| {
            t.state.send_replace(State::Verifying);
            check(
                req,
                t,
                std::mem::replace(&mut parts.hasher, BlobHasher::new(algorithm, diff)),
            )
        });
        let err = match outcome {
            Ok((diff_id, inflated)) => {
                let Parts {
                    temp, lock, _alive, ..
                } = parts;
                let (d, id) = (req.digest.clone(), diff_id.clone());
                // The commit (rename, verified mark) runs on to the end even
                // when a cancel drops this future: `_alive` goes with it, so
                // Done, and the pull's on_done, wait until it has finished.
                let path = blocking(move || {
                    let r = store.commit(temp, &d, id.as_ref());
                    drop(_alive);
                    r
                })
                .await?;
                drop(lock);
                let digest = req.digest.clone();
                return Ok(Blob {
                    digest,
                    size: req.size,
                    diff_id,
                    inflated,
                    path,
                    fetched: true,
                    stats,
                });
            }
            Err(e) => e,
        };
        // Lets the source move on from a mirror that failed us, and name
        // the reason when it does.
        req.source.blob_failed(&req.digest, &err);
        let now = parts.hasher.size();
        if err.stall {
            // Replace the connection at once; only a run of stalls without
            // real progress between them (less than one low-speed window's
            // worth) costs an attempt, so a server that trickles a few
            // bytes per connection cannot keep us reconnecting forever.
            let enough = req.low_speed.bytes_per_sec * req.low_speed.window.as_secs().max(1);
            let progressed = stalled_at != u64::MAX && now.saturating_sub(stalled_at) >= enough;
            stalls = if stalled_at == u64::MAX || progressed {
                1
            } else {
                stalls + 1
            };
            stalled_at = now;
            *stats.retries.entry("stall".into()).or_default() += 1;
            if stalls < STALLS_PER_ATTEMPT {
                log::info!("{}; reconnecting", named(&err, &req.digest));
                continue;
            }
            stalls = 0;
        }
        // A connection that died after delivering new bytes is resumed at
        // once and costs no attempt: a flaky link still converges, and a
        // server that ignores Range (a restart) still counts.
        let gained = !restarted && now > before;
        if err.transient && !err.stall && gained && reconnects < MAX_PROGRESS_RECONNECTS {
            reconnects += 1;
            *stats.retries.entry(cause(&err).into()).or_default() += 1;
            log::info!("{}; resuming at {now}", named(&err, &req.digest));
            continue;
        }
        // A bad digest may come from a resume gone wrong: one full
        // re-download is allowed before it counts as permanent.
        let retry_mismatch = err.kind == ErrorKind::DigestMismatch && mismatches == 0;
        if err.kind == ErrorKind::DigestMismatch {
            mismatches += 1;
            parts.temp.reset()?;
            parts.hasher = BlobHasher::new(algorithm, diff);
        }
        if !(err.transient || retry_mismatch) || attempt >= req.max_attempts {
            if err.kind == ErrorKind::DigestMismatch || !err.transient {
                parts.temp.keep_on_drop(false);
            }
            return Err(err);
        }
        let delay = match err.retry_after {
            // Longer than the options allow: fail now, naming the wait.
            Some(d) if d > req.max_retry_wait => return Err(err),
            Some(d) => d,
            None => backoff(attempt),
        };
        attempt += 1;
        *stats.retries.entry(cause(&err).into()).or_default() += 1;
        log::info!(
            "{}; attempt {attempt} in {delay:?}",
            named(&err, &req.digest)
        );
        t.state.send_replace(State::Retrying {
            attempt,
            delay_secs: delay.as_secs_f64().ceil() as u64,
            reason: err.message.clone(),
        });
        tokio::time::sleep(delay).await;
    }
}

/// Run file work (replaying a partial, fsync and rename) off the async
/// threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("file task failed: {e}")))?
}

/// The error's text, prefixed with the blob only if it does not name it.
fn named(err: &Error, digest: &Digest) -> String {
    let d = digest.to_string();
    if err.message.contains(&d) {
        err.message.clone()
    } else {
        format!("blob {d}: {}", err.message)
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

/// The error for a layer that inflated past its transfer's limits; the
/// transfer remembers it, for pulls with looser limits.
fn over_limit(t: &Transfer, o: &OverLimit, digest: &Digest) -> Error {
    t.stopped_at_limit.store(true, Ordering::Release);
    o.error(digest)
}

/// Inflate limits first (the digest of a blob cut short there is
/// unknown), then digest and size; a bad layer encoding is permanent.
fn check(
    req: &Request,
    t: &Transfer,
    hasher: BlobHasher,
) -> Result<(Option<Digest>, Option<Inflated>)> {
    let v = hasher.finish();
    if let Some(o) = &v.over_limit {
        return Err(over_limit(t, o, &req.digest));
    }
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
        None => Ok((None, v.inflated)),
        Some(Ok(d)) => Ok((Some(d), v.inflated)),
        Some(Err(why)) => Err(Error::new(
            ErrorKind::Unsupported,
            format!("layer {}: {why}", req.digest),
        )),
    }
}

/// One HTTP exchange, resuming from what the hasher has already seen. The
/// parts always come back (unless the writer itself broke), with the
/// exchange's own outcome beside them.
async fn attempt_once(
    req: &Request,
    t: &Transfer,
    mut parts: Parts,
    stats: &mut Stats,
    restarted: &mut bool,
) -> Result<(Parts, Result<()>)> {
    let offset = parts.hasher.size();
    if offset == req.size {
        return Ok((parts, Ok(()))); // a kept partial that was already complete
    }
    let resp = match req.source.open_blob(&req.digest, offset).await {
        Ok(r) => r,
        // Some servers and CDNs answer any ranged request with 400 or 416:
        // start over from byte 0 without Range (this counts as an attempt).
        Err(e) if offset > 0 && !e.transient && e.kind == ErrorKind::Registry => {
            log::info!("blob {}: {e}; restarting without Range", req.digest);
            parts.temp.reset()?;
            parts.hasher = BlobHasher::new_like(&parts.hasher);
            *restarted = true;
            let why = format!("{}; retrying from byte 0 without Range", e.message);
            return Ok((parts, Err(Error::transient(ErrorKind::Registry, why))));
        }
        Err(e) => return Ok((parts, Err(e))),
    };
    if offset > 0 {
        let honoured = resp.status() == StatusCode::PARTIAL_CONTENT
            && content_range_start(&resp) == Some(offset);
        if !honoured {
            // A 200 carries the whole blob: start over from its first byte.
            // A 206 for another span cannot be trusted at all.
            log::info!(
                "blob {}: server did not resume at {offset}; restarting",
                req.digest
            );
            parts.temp.reset()?;
            parts.hasher = BlobHasher::new_like(&parts.hasher);
            *restarted = true;
            if resp.status() != StatusCode::OK {
                let e = Error::transient(
                    ErrorKind::Registry,
                    format!(
                        "blob {}: answered a Range request with another span",
                        req.digest
                    ),
                );
                return Ok((parts, Err(e)));
            }
        }
    }
    if let Some(e) = announced_wrong_size(req, &resp) {
        return Ok((parts, Err(e)));
    }
    let total = req.size;
    let mut size = parts.hasher.size();
    t.state.send_replace(State::Downloading {
        current: size,
        total,
    });
    let sink = Sink::start(parts);
    let result = stream(req, t, resp, &sink, &mut size, stats).await;
    let (parts, write_error) = sink.finish().await?;
    if let Some(o) = parts.hasher.over_limit() {
        let e = over_limit(t, o, &req.digest);
        return Ok((parts, Err(e)));
    }
    if let Some(e) = write_error {
        return Ok((parts, Err(e)));
    }
    if result.is_ok() {
        t.state.send_replace(State::Downloading {
            current: total,
            total,
        });
    }
    Ok((parts, result))
}

/// Move the body into the sink, watching for overruns, EOF and stalls.
async fn stream(
    req: &Request,
    t: &Transfer,
    resp: reqwest::Response,
    sink: &Sink,
    size: &mut u64,
    stats: &mut Stats,
) -> Result<()> {
    let total = req.size;
    let mut throttle = Throttle::new();
    let mut body = resp.bytes_stream();
    let mut window = Window::new(req.low_speed, *size);
    loop {
        let chunk = match tokio::time::timeout(window.left(), body.next()).await {
            Err(_) => None,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let mut err = crate::registry::http::network(&format!("blob {}", req.digest), &e);
                err.message
                    .push_str(&format!(" after {size} of {total} bytes"));
                return Err(err);
            }
            Ok(Some(Ok(chunk))) => Some(chunk),
        };
        if let Some(chunk) = chunk {
            if *size + chunk.len() as u64 > total {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "blob {}: the server sent more than {total} bytes",
                        req.digest
                    ),
                ));
            }
            *size += chunk.len() as u64;
            stats.fetched_bytes += chunk.len() as u64;
            sink.push(chunk).await?;
            if throttle.ready(*size) {
                t.state.send_replace(State::Downloading {
                    current: *size,
                    total,
                });
            }
        }
        if window.over() {
            if window.stalled(*size) {
                let mut e = Error::transient(
                    ErrorKind::Network,
                    format!(
                        "blob {}: stalled below {} bytes/s for {:?} after {size} of {total} bytes",
                        req.digest, req.low_speed.bytes_per_sec, req.low_speed.window,
                    ),
                );
                e.stall = true;
                return Err(e);
            }
            window = Window::new(req.low_speed, *size);
        }
    }
    if *size < total {
        return Err(Error::transient(
            ErrorKind::Network,
            format!(
                "blob {}: unexpected EOF after {size} of {total} bytes",
                req.digest
            ),
        ));
    }
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
        Window {
            limit,
            ends: Instant::now() + limit.window,
            start_bytes: bytes,
        }
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

/// A whole answer (200) whose Content-Length, or a range (206) whose
/// Content-Range total, is not the descriptor's size carries another blob
/// (or a server's error page), not one that will be cut short: it fails as
/// a mismatch before a byte is read, so it is neither resumed nor written.
fn announced_wrong_size(req: &Request, resp: &reqwest::Response) -> Option<Error> {
    let (announced, by) = match resp.status() {
        StatusCode::PARTIAL_CONTENT => (content_range_total(resp)?, "Content-Range total"),
        _ => (resp.content_length()?, "Content-Length"),
    };
    (announced != req.size).then(|| {
        Error::new(
            ErrorKind::DigestMismatch,
            format!(
                "size mismatch for blob {}: expected {} bytes, the server announced {announced} \
                 ({by})",
                req.digest, req.size
            ),
        )
    })
}

/// The total of `Content-Range: bytes a-b/total`; none when it is `*`.
fn content_range_total(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    v.rsplit('/').next()?.trim().parse().ok()
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let span = v.trim().strip_prefix("bytes ")?;
    span.split('-').next()?.trim().parse().ok()
}

//! The body of one transfer: wait for a slot, stream the blob through the
//! verifier into a temp file, retry transient failures (resuming with Range
//! where the server allows it), then commit.

use super::{Blob, Manager, Request, State, Transfer};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Throttle;
use crate::store::TempBlob;
use crate::verify::BlobHasher;
use futures_util::StreamExt;
use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Longest Retry-After we honour; a longer one fails the transfer at once.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

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

async fn fetch(manager: &Manager, t: &Transfer, req: &Request) -> Result<Blob> {
    let store = manager.store();
    let _slot = manager
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::new(ErrorKind::Internal, "download slots closed"))?;
    // Another transfer (or process) may have finished it while we queued.
    if let Some(diff_id) = store.verified(&req.digest, req.size) {
        return Ok(Blob {
            digest: req.digest.clone(),
            size: req.size,
            diff_id,
            path: store.blob_path(&req.digest),
            fetched: false,
        });
    }
    let encoding = req.encoding.filter(|_| req.verify_diff_id);
    let mut temp = store.temp_blob(&req.digest)?;
    let mut hasher = BlobHasher::new(encoding);
    let mut attempt = 1;
    let mut mismatches = 0;
    loop {
        let outcome = match attempt_once(req, t, &mut temp, &mut hasher).await {
            Ok(()) => {
                t.state.send_replace(State::Verifying);
                check(
                    req,
                    std::mem::replace(&mut hasher, BlobHasher::new(encoding)),
                )
            }
            Err(e) => Err(e),
        };
        let err = match outcome {
            Ok(diff_id) => {
                let path = store.commit(temp, &req.digest, diff_id.as_ref())?;
                let digest = req.digest.clone();
                return Ok(Blob {
                    digest,
                    size: req.size,
                    diff_id,
                    path,
                    fetched: true,
                });
            }
            Err(e) => e,
        };
        // A bad digest may come from a resume gone wrong: one full
        // re-download is allowed before it counts as permanent.
        let retry_mismatch = err.kind == ErrorKind::DigestMismatch && mismatches == 0;
        if err.kind == ErrorKind::DigestMismatch {
            mismatches += 1;
            temp.reset()?;
            hasher = BlobHasher::new(encoding);
        }
        if !(err.transient || retry_mismatch) || attempt >= req.max_attempts {
            return Err(err);
        }
        let delay = match err.retry_after {
            Some(d) if d > MAX_SERVER_WAIT => return Err(err),
            Some(d) => d,
            None => backoff(attempt),
        };
        attempt += 1;
        log::info!("blob {}: {err}; attempt {attempt} in {delay:?}", req.digest);
        t.state.send_replace(State::Retrying {
            attempt,
            delay_secs: delay.as_secs_f64().ceil() as u64,
            reason: err.message.clone(),
        });
        tokio::time::sleep(delay).await;
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
        Some(Err(why)) => Err(Error::new(
            ErrorKind::Unsupported,
            format!("layer {}: {why}", req.digest),
        )),
    }
}

/// One HTTP exchange, resuming from what the hasher has already seen.
async fn attempt_once(
    req: &Request,
    t: &Transfer,
    temp: &mut TempBlob,
    hasher: &mut BlobHasher,
) -> Result<()> {
    let offset = hasher.size();
    let resp = req.source.open_blob(&req.digest, offset).await?;
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
            temp.reset()?;
            *hasher = BlobHasher::new_like(hasher);
            if resp.status() != StatusCode::OK {
                return Err(Error::transient(
                    ErrorKind::Registry,
                    format!(
                        "blob {}: answered a Range request with another span",
                        req.digest
                    ),
                ));
            }
        }
    }
    let total = req.size;
    t.state.send_replace(State::Downloading {
        current: hasher.size(),
        total,
    });
    let mut throttle = Throttle::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            let mut err = crate::registry::http::network(&format!("blob {}", req.digest), &e);
            err.message
                .push_str(&format!(" after {} of {total} bytes", hasher.size()));
            err
        })?;
        if hasher.size() + chunk.len() as u64 > total {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!(
                    "blob {}: the server sent more than {total} bytes",
                    req.digest
                ),
            ));
        }
        hasher.update(&chunk);
        temp.write_all(&chunk)?;
        if throttle.ready(hasher.size()) {
            t.state.send_replace(State::Downloading {
                current: hasher.size(),
                total,
            });
        }
    }
    if hasher.size() < total {
        return Err(Error::transient(
            ErrorKind::Network,
            format!(
                "blob {}: unexpected EOF after {} of {total} bytes",
                req.digest,
                hasher.size()
            ),
        ));
    }
    t.state.send_replace(State::Downloading {
        current: total,
        total,
    });
    Ok(())
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let span = v.trim().strip_prefix("bytes ")?;
    span.split('-').next()?.trim().parse().ok()
}

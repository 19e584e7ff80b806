//! The layer half of a pull: which layers to fetch, forwarding transfer
//! states as this pull's progress, and "Pull complete" in layer order.

use super::{Counters, LayerResult};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{layer_encoding, Descriptor, LayerEncoding};
use crate::options::Checked;
use crate::progress::{Event, EventSender, Kind, Progress};
use crate::registry::Client;
use crate::store::Store;
use crate::transfer::{self, Blob, Manager, State, Watcher};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

struct Position {
    digest: Digest,
    size: u64,
    media_type: String,
    encoding: LayerEncoding,
}

pub struct Plan {
    positions: Vec<Position>,
    /// Index of each digest's first position, in layer order: the same
    /// digest twice is one transfer.
    unique: Vec<usize>,
    verify_diff_ids: bool,
    max_attempts: u32,
    pull_id: u64,
    priority: i32,
    low_speed: transfer::LowSpeed,
}

/// A layer this pull has in the store now.
pub struct Done {
    pub blob: Blob,
    /// Bytes a transfer fetched for it (0 when it was already present).
    pub downloaded: u64,
}

fn emit(events: &EventSender, p: Progress) {
    let _ = events.send(Event::Progress(p));
}

impl Plan {
    pub fn new(layers: &[Descriptor], o: &Checked, pull_id: u64) -> Result<Plan> {
        let mut positions = Vec::with_capacity(layers.len());
        let mut unique = Vec::new();
        for (i, d) in layers.iter().enumerate() {
            let digest = d.parsed_digest()?;
            let encoding = layer_encoding(&d.media_type).map_err(|e| e.context(&digest))?;
            if !positions.iter().any(|p: &Position| p.digest == digest) {
                unique.push(i);
            }
            positions.push(Position {
                digest,
                size: d.size,
                media_type: d.media_type.clone(),
                encoding,
            });
        }
        Ok(Plan {
            positions,
            unique,
            verify_diff_ids: o.verify_diff_ids,
            max_attempts: o.max_attempts,
            pull_id,
            priority: o.priority,
            low_speed: o.low_speed,
        })
    }

    /// Get every layer into the store, reporting progress per layer.
    pub async fn fetch(
        &self,
        manager: &Arc<Manager>,
        client: &Arc<Client>,
        events: &EventSender,
        counters: &Arc<Counters>,
        settle: &Mutex<Vec<transfer::Settle>>,
    ) -> Result<HashMap<Digest, Done>> {
        let store = manager.store();
        counters
            .layers_total
            .store(self.unique.len() as u32, Ordering::Relaxed);
        let total: u64 = self.unique.iter().map(|&i| self.positions[i].size).sum();
        counters.bytes_total.store(total, Ordering::Relaxed);

        let mut done = HashMap::new();
        let mut pending = Vec::new();
        for &i in &self.unique {
            let p = &self.positions[i];
            match self.existing(store, p).await? {
                Some(blob) => {
                    emit(
                        events,
                        Progress::layer(&p.digest.to_string(), Kind::AlreadyExists, 0, 0),
                    );
                    counters.bytes_done.fetch_add(p.size, Ordering::Relaxed);
                    done.insert(
                        p.digest.clone(),
                        Done {
                            blob,
                            downloaded: 0,
                        },
                    );
                }
                None => {
                    let d = p.digest.to_string();
                    emit(events, Progress::layer(&d, Kind::PullingFsLayer, 0, p.size));
                    pending.push(i);
                }
            }
        }

        // Driven inside this task (not spawned), so dropping the pull drops
        // its watchers at once.
        let mut running = FuturesUnordered::new();
        for &i in &pending {
            let p = &self.positions[i];
            let watcher = manager.watch(transfer::Request {
                digest: p.digest.clone(),
                size: p.size,
                encoding: Some(p.encoding),
                verify_diff_id: self.verify_diff_ids,
                source: client.clone(),
                max_attempts: self.max_attempts,
                pull_id: self.pull_id,
                priority: self.priority,
                low_speed: self.low_speed,
            });
            settle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(watcher.settle_handle());
            let (d, events, counters) = (p.digest.clone(), events.clone(), counters.clone());
            running.push(forward(watcher, d, p.size, events, counters));
        }

        // "Pull complete" goes out in layer order, parent before child.
        let mut next = 0;
        let mut commit_ready = |done: &HashMap<Digest, Done>| {
            while next < self.unique.len() {
                let p = &self.positions[self.unique[next]];
                let Some(d) = done.get(&p.digest) else { break };
                if d.downloaded > 0 || pending.contains(&self.unique[next]) {
                    let digest = p.digest.to_string();
                    emit(events, Progress::layer(&digest, Kind::PullComplete, 0, 0));
                }
                counters.layers_done.fetch_add(1, Ordering::Relaxed);
                next += 1;
            }
        };
        commit_ready(&done);
        while let Some((digest, outcome)) = running.next().await {
            done.insert(digest, outcome?);
            commit_ready(&done);
        }
        Ok(done)
    }

    /// A layer already in the store, verified by us earlier or now.
    async fn existing(&self, store: &Arc<Store>, p: &Position) -> Result<Option<Blob>> {
        let blob = |diff_id| Blob {
            digest: p.digest.clone(),
            size: p.size,
            diff_id,
            path: store.blob_path(&p.digest),
            fetched: false,
            stats: transfer::Stats::default(),
        };
        match store.verified(&p.digest, p.size) {
            Some(diff_id) if diff_id.is_some() || !self.verify_diff_ids => {
                return Ok(Some(blob(diff_id)))
            }
            _ if !store.blob_path(&p.digest).exists() => return Ok(None),
            _ => {}
        }
        // On disk but never verified by us (or without its diffID): hash it.
        let (s, d, size, enc) = (store.clone(), p.digest.clone(), p.size, p.encoding);
        let checked = tokio::task::spawn_blocking(move || s.verify_existing(&d, size, Some(enc)))
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("verify task failed: {e}")))??;
        Ok(checked.map(blob))
    }
}

/// Turn one transfer's states into this pull's events for that layer.
async fn forward(
    mut watcher: Watcher,
    digest: Digest,
    size: u64,
    events: EventSender,
    counters: Arc<Counters>,
) -> (Digest, Result<Done>) {
    let id = digest.to_string();
    let mut counted = 0u64;
    let mut shown = 0u64;
    let mut last_kind = None;
    let mut say = |kind: Kind, current: u64, total: u64, message: Option<String>| {
        if kind != Kind::Downloading && last_kind == Some(kind) {
            return;
        }
        last_kind = Some(kind);
        let mut p = Progress::layer(&id, kind, current, total);
        if let Some(m) = message {
            p.message = m;
        }
        emit(&events, p);
    };
    loop {
        let state = watcher.rx.borrow_and_update().clone();
        match state {
            State::Waiting => say(Kind::Waiting, 0, 0, None),
            State::Downloading { current, total } => {
                // A restart makes current go back; the counter follows.
                if current >= counted {
                    counters
                        .bytes_done
                        .fetch_add(current - counted, Ordering::Relaxed);
                } else {
                    counters
                        .bytes_done
                        .fetch_sub(counted - current, Ordering::Relaxed);
                }
                counted = current;
                shown = current;
                say(Kind::Downloading, current, total, None);
            }
            State::Retrying {
                attempt,
                delay_secs,
                reason,
            } => {
                let m = format!("Retrying in {delay_secs} seconds (attempt {attempt}): {reason}");
                say(Kind::Retrying, attempt as u64, 0, Some(m));
            }
            State::Verifying => {
                // The watch channel keeps only the latest state; the final
                // byte count is reported even if its update was overtaken.
                if shown < size {
                    say(Kind::Downloading, size, size, None);
                    shown = size;
                }
                say(Kind::VerifyingChecksum, 0, 0, None)
            }
            State::Done(Ok(blob)) => {
                counters
                    .bytes_done
                    .fetch_add(blob.size.saturating_sub(counted), Ordering::Relaxed);
                if blob.fetched {
                    if shown < size {
                        say(Kind::Downloading, size, size, None);
                    }
                    say(Kind::VerifyingChecksum, 0, 0, None);
                    say(Kind::DownloadComplete, 0, 0, None);
                }
                let downloaded = if blob.fetched { blob.size } else { 0 };
                return (digest, Ok(Done { blob, downloaded }));
            }
            State::Done(Err(e)) => return (digest, Err(e)),
        }
        if watcher.rx.changed().await.is_err() {
            let e = Error::new(ErrorKind::Internal, format!("transfer of {id} vanished"));
            return (digest, Err(e));
        }
    }
}

/// Hold every computed diffID to the config, position by position.
pub fn check_diff_ids(
    plan: &Plan,
    done: &HashMap<Digest, Done>,
    diff_ids: &[String],
    o: &Checked,
    store: &Store,
) -> Result<Vec<LayerResult>> {
    let mut out = Vec::with_capacity(plan.positions.len());
    for (i, p) in plan.positions.iter().enumerate() {
        let blob = &done
            .get(&p.digest)
            .ok_or_else(|| Error::new(ErrorKind::Internal, format!("layer {} missing", p.digest)))?
            .blob;
        let mut diff_id = blob.diff_id.clone();
        if o.verify_diff_ids && diff_id.is_none() {
            // Another pull fetched it without diffIDs: compute them from disk.
            diff_id = store
                .verify_existing(&p.digest, p.size, Some(p.encoding))?
                .flatten();
        }
        if o.verify_diff_ids {
            let want = diff_ids.get(i).map(String::as_str).unwrap_or("");
            let got = diff_id.as_ref().map(|d| d.to_string()).unwrap_or_default();
            if got != want {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "layer {} has diffID {got} but the config says {want}",
                        p.digest
                    ),
                ));
            }
        }
        out.push(LayerResult {
            digest: p.digest.to_string(),
            diff_id: diff_id.map(|d| d.to_string()),
            size: p.size,
            media_type: p.media_type.clone(),
        });
    }
    Ok(out)
}

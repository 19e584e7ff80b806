//! The layer half of a pull: which layers to fetch, forwarding transfer
//! states as this pull's progress, and "Pull complete" in layer order.

use super::commit::Committer;
use super::{Counters, LayerResult};
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{layer_encoding, Descriptor, LayerEncoding};
use crate::options::Checked;
use crate::progress::{Event, EventSender, Kind, Progress};
use crate::registry::Client;
use crate::store::Store;
use crate::transfer::{self, Blob, Manager, State, Watcher};
use crate::verify::{DiffCheck, InflateLimits};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

pub struct Position {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub encoding: LayerEncoding,
    /// What the config's diffID for this position is hashed with.
    pub diff_algorithm: Algorithm,
}

pub struct Plan {
    positions: Vec<Position>,
    /// Index of each digest's first position, in layer order: the same
    /// digest twice is one transfer.
    unique: Vec<usize>,
    verify_diff_ids: bool,
    inflate_limits: InflateLimits,
    max_attempts: u32,
    pull_id: u64,
    priority: i32,
    low_speed: transfer::LowSpeed,
    max_retry_wait: std::time::Duration,
}

/// A layer this pull has in the store now.
pub struct Done {
    pub blob: Blob,
    pub account: Account,
}

/// Where a pull's bytes came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// Fetched from a registry by transfers this pull started.
    pub bytes_downloaded: u64,
    /// Already in the store.
    pub bytes_reused: u64,
    /// Fetched by a transfer another pull started (this pull watched it).
    pub bytes_shared: u64,
    /// Taken from partials an earlier, interrupted download kept.
    pub bytes_resumed: u64,
    /// Retries by cause: network, server, rate_limited, digest_mismatch, stall.
    pub retries: std::collections::BTreeMap<String, u32>,
}

impl Account {
    pub fn add(&mut self, other: &Account) {
        self.bytes_downloaded += other.bytes_downloaded;
        self.bytes_reused += other.bytes_reused;
        self.bytes_shared += other.bytes_shared;
        self.bytes_resumed += other.bytes_resumed;
        for (k, v) in &other.retries {
            *self.retries.entry(k.clone()).or_default() += v;
        }
    }
}

fn emit(events: &EventSender, p: Progress) {
    let _ = events.send(Event::Progress(p));
}

impl Plan {
    /// `diff_ids` are the config's, in layer order (unused when diffIDs
    /// are not checked).
    pub fn new(
        layers: &[Descriptor],
        diff_ids: &[String],
        o: &Checked,
        pull_id: u64,
    ) -> Result<Plan> {
        let mut positions = Vec::with_capacity(layers.len());
        let mut unique = Vec::new();
        for (i, d) in layers.iter().enumerate() {
            let digest = d.parsed_digest()?;
            let encoding = layer_encoding(&d.media_type).map_err(|e| e.context(&digest))?;
            let diff_algorithm = match diff_ids.get(i).map(|s| Digest::parse(s)) {
                Some(Ok(id)) => id.algorithm(),
                Some(Err(e)) if o.verify_diff_ids && e.kind == ErrorKind::Unsupported => {
                    return Err(e.context(format!("the config's diffID for layer {digest}")))
                }
                // A malformed one fails the diffID comparison, naming both.
                _ => Algorithm::Sha256,
            };
            match positions.iter().find(|p: &&Position| p.digest == digest) {
                None => unique.push(i),
                // One blob has one size: a manifest that says otherwise
                // would be stored describing bytes that are not there.
                Some(p) if p.size != d.size => {
                    return Err(Error::new(
                        ErrorKind::Registry,
                        format!(
                            "the manifest lists layer {digest} with sizes {} and {}",
                            p.size, d.size
                        ),
                    ))
                }
                Some(_) => {}
            }
            positions.push(Position {
                digest,
                size: d.size,
                media_type: d.media_type.clone(),
                encoding,
                diff_algorithm,
            });
        }
        Ok(Plan {
            positions,
            unique,
            verify_diff_ids: o.verify_diff_ids,
            inflate_limits: o.inflate_limits,
            max_attempts: o.max_attempts,
            pull_id,
            priority: o.priority,
            low_speed: o.low_speed,
            max_retry_wait: o.registry_settings.max_retry_wait,
        })
    }

    /// Get every layer into the store, reporting progress per layer, and
    /// commit them in order. Returns the layers and where their bytes
    /// came from.
    // Each argument is a separate handle the pull owns; a struct bundling
    // them would exist for this call alone.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        manager: &Arc<Manager>,
        client: &Arc<Client>,
        events: &EventSender,
        counters: &Arc<Counters>,
        settle: &Mutex<Vec<transfer::Settle>>,
        diff_ids: &[String],
        commit_hook: bool,
    ) -> Result<(Vec<LayerResult>, Account)> {
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
                    let account = Account {
                        bytes_reused: p.size,
                        ..Account::default()
                    };
                    done.insert(p.digest.clone(), Done { blob, account });
                }
                None => {
                    let d = p.digest.to_string();
                    emit(events, Progress::layer(&d, Kind::PullingFsLayer, 0, p.size));
                    pending.push(i);
                }
            }
        }

        let needed: u64 = pending.iter().map(|&i| self.positions[i].size).sum();
        store.check_free_space(needed)?;

        // Driven inside this task (not spawned), so dropping the pull drops
        // its watchers at once.
        let mut running = FuturesUnordered::new();
        for &i in &pending {
            let p = &self.positions[i];
            running.push(self.follow(manager, client, settle, p, events, counters));
        }

        // Commits (and "Pull complete") go out in layer order.
        let mut committer = Committer::new(self, diff_ids, self.verify_diff_ids, commit_hook);
        for &i in &pending {
            committer.will_fetch(&self.positions[i].digest);
        }
        committer.advance(&done, store, events, counters).await?;
        while let Some((digest, outcome)) = running.next().await {
            done.insert(digest, outcome?);
            committer.advance(&done, store, events, counters).await?;
        }
        let mut account = Account::default();
        done.values().for_each(|d| account.add(&d.account));
        Ok((committer.results, account))
    }

    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// How this pull checks layer `p`: None when it does not check diffIDs
    /// (then nothing is inflated, so no inflate limit applies).
    pub fn check(&self, p: &Position) -> Option<DiffCheck> {
        self.verify_diff_ids.then_some(DiffCheck {
            encoding: p.encoding,
            algorithm: p.diff_algorithm,
            limits: self.inflate_limits,
        })
    }

    fn watch(
        &self,
        manager: &Arc<Manager>,
        client: &Arc<Client>,
        settle: &Mutex<Vec<transfer::Settle>>,
        p: &Position,
    ) -> Watcher {
        let watcher = manager.watch(transfer::Request {
            digest: p.digest.clone(),
            size: p.size,
            check: self.check(p),
            source: client.clone(),
            max_attempts: self.max_attempts,
            pull_id: self.pull_id,
            priority: self.priority,
            low_speed: self.low_speed,
            max_retry_wait: self.max_retry_wait,
        });
        settle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher.settle_handle());
        watcher
    }

    /// Follow layer `p` to its end, held to this pull's inflate limits:
    /// a transfer it shares may have run with another pull's.
    async fn follow(
        &self,
        manager: &Arc<Manager>,
        client: &Arc<Client>,
        settle: &Mutex<Vec<transfer::Settle>>,
        p: &Position,
        events: &EventSender,
        counters: &Arc<Counters>,
    ) -> (Digest, Result<Done>) {
        let mut watcher = self.watch(manager, client, settle, p);
        // At most one fresh transfer: ours runs with our own limits.
        let mut rewatched = false;
        loop {
            let (d, ev, c) = (p.digest.clone(), events.clone(), counters.clone());
            let (digest, outcome) = forward(&mut watcher, d, p.size, ev, c).await;
            let Some(check) = self.check(p) else {
                return (digest, outcome);
            };
            match (&outcome, watcher.stopped_at_limit()) {
                (Err(_), Some(theirs)) if !rewatched && check.limits.looser_than(&theirs) => {
                    log::info!(
                        "layer {digest}: another pull's inflate limits stopped it; \
                         fetching it again under this pull's"
                    );
                    drop(watcher);
                    watcher = self.watch(manager, client, settle, p);
                    rewatched = true;
                    continue;
                }
                _ => {}
            }
            let seen = outcome.as_ref().ok().and_then(|d| d.blob.inflated);
            if let Some(o) = seen.and_then(|s| check.limits.check(&s)) {
                return (digest, Err(o.error(&p.digest)));
            }
            return (digest, outcome);
        }
    }

    /// A layer already in the store, verified by us earlier or now.
    async fn existing(&self, store: &Arc<Store>, p: &Position) -> Result<Option<Blob>> {
        let blob = |diff_id| Blob {
            digest: p.digest.clone(),
            size: p.size,
            diff_id,
            inflated: None,
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
        let (s, d, size, check) = (store.clone(), p.digest.clone(), p.size, self.check(p));
        let checked = tokio::task::spawn_blocking(move || s.verify_existing(&d, size, check))
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("verify task failed: {e}")))??;
        Ok(checked.map(blob))
    }
}

/// Turn one transfer's states into this pull's events for that layer.
async fn forward(
    watcher: &mut Watcher,
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
        // Repeats of a step are dropped; byte counts and each retry
        // (a new attempt number) always go out.
        if kind != Kind::Downloading && last_kind == Some((kind, current)) {
            return;
        }
        last_kind = Some((kind, current));
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
                let unit = if delay_secs == 1 { "second" } else { "seconds" };
                let m = format!("Retrying in {delay_secs} {unit} (attempt {attempt}): {reason}");
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
                let account = match (blob.fetched, watcher.joined) {
                    (false, _) => Account {
                        bytes_reused: blob.size,
                        ..Account::default()
                    },
                    (true, true) => Account {
                        bytes_shared: blob.size,
                        ..Account::default()
                    },
                    (true, false) => Account {
                        bytes_downloaded: blob.stats.fetched_bytes,
                        bytes_resumed: blob.stats.resumed_bytes,
                        retries: blob.stats.retries.clone(),
                        ..Account::default()
                    },
                };
                return (digest, Ok(Done { blob, account }));
            }
            State::Done(Err(e)) => {
                // Not done after all (this pull may fetch it again).
                counters.bytes_done.fetch_sub(counted, Ordering::Relaxed);
                return (digest, Err(e));
            }
        }
        if watcher.rx.changed().await.is_err() {
            let e = Error::new(ErrorKind::Internal, format!("transfer of {id} vanished"));
            return (digest, Err(e));
        }
    }
}

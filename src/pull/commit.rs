//! Committing layers in manifest order, parent before child: check the
//! diffID against the config, offer the layer to the host's commit hook,
//! then report "Pull complete". A child never commits before its parent,
//! and nothing after a failed layer commits at all.

use super::layers::{Done, Plan, Position};
use super::{Counters, LayerResult};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Event, EventSender, Kind, LayerCommit, Progress};
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Committer<'a> {
    plan: &'a Plan,
    diff_ids: &'a [String],
    verify_diff_ids: bool,
    /// Whether the host registered a commit hook.
    hook: bool,
    /// Digests this pull downloaded (they get "Pull complete").
    fetched: HashSet<Digest>,
    completed: HashSet<Digest>,
    next: usize,
    pub results: Vec<LayerResult>,
}

impl<'a> Committer<'a> {
    pub fn new(plan: &'a Plan, diff_ids: &'a [String], verify: bool, hook: bool) -> Self {
        Committer {
            plan,
            diff_ids,
            verify_diff_ids: verify,
            hook,
            fetched: HashSet::new(),
            completed: HashSet::new(),
            next: 0,
            results: Vec::new(),
        }
    }

    pub fn will_fetch(&mut self, digest: &Digest) {
        self.fetched.insert(digest.clone());
    }

    /// Commit every position whose layer (and every parent) is ready.
    pub async fn advance(
        &mut self,
        done: &HashMap<Digest, Done>,
        store: &Arc<Store>,
        events: &EventSender,
        counters: &Counters,
    ) -> Result<()> {
        while let Some(p) = self.plan.positions().get(self.next) {
            let Some(d) = done.get(&p.digest) else { break };
            let diff_id = self.diff_id(p, d, store).await?;
            if self.hook {
                self.offer(p, d, diff_id.as_ref(), events).await?;
            }
            if self.completed.insert(p.digest.clone()) {
                if self.fetched.contains(&p.digest) {
                    let id = p.digest.to_string();
                    let _ = events.send(Event::Progress(Progress::layer(
                        &id,
                        Kind::PullComplete,
                        0,
                        0,
                    )));
                }
                counters.layers_done.fetch_add(1, Ordering::Relaxed);
            }
            self.results.push(LayerResult {
                digest: p.digest.to_string(),
                diff_id: diff_id.map(|d| d.to_string()),
                size: p.size,
                media_type: p.media_type.clone(),
            });
            self.next += 1;
        }
        Ok(())
    }

    /// The layer's diffID, held to what the config promises.
    async fn diff_id(&self, p: &Position, d: &Done, store: &Arc<Store>) -> Result<Option<Digest>> {
        let mut diff_id = d.blob.diff_id.clone();
        let Some(check) = self.plan.check(p).filter(|_| self.verify_diff_ids) else {
            return Ok(diff_id);
        };
        if !diff_id
            .as_ref()
            .is_some_and(|d| d.algorithm() == check.algorithm)
        {
            // Fetched by a pull that skipped diffIDs, or whose config hashes
            // them with another algorithm: compute it from disk.
            let (s, dg, size) = (store.clone(), p.digest.clone(), p.size);
            diff_id =
                tokio::task::spawn_blocking(move || s.verify_existing(&dg, size, Some(check)))
                    .await
                    .map_err(|e| Error::new(ErrorKind::Internal, format!("verify task: {e}")))??
                    .flatten();
        }
        let index = self.next;
        let want = self.diff_ids.get(index).map(String::as_str).unwrap_or("");
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
        Ok(diff_id)
    }

    /// Ask the host's commit hook, through the pull's callback thread so it
    /// never overlaps the pull's other callbacks.
    async fn offer(
        &self,
        p: &Position,
        d: &Done,
        diff_id: Option<&Digest>,
        events: &EventSender,
    ) -> Result<()> {
        let layer = LayerCommit {
            index: self.next as u32,
            digest: p.digest.to_string(),
            diff_id: diff_id.map(|d| d.to_string()),
            media_type: p.media_type.clone(),
            size: p.size,
            path: d.blob.path.display().to_string(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        events
            .send(Event::Commit(layer, tx))
            .map_err(|_| Error::new(ErrorKind::Internal, "callback thread is gone"))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Error::new(
                ErrorKind::HostRejected,
                format!("the host's commit hook refused layer {}: {why}", p.digest),
            )),
            Err(_) => Err(Error::new(ErrorKind::Internal, "commit hook got no answer")),
        }
    }
}

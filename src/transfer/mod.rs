//! The deduplicating transfer manager: one download per blob digest however
//! many pulls want it.
//!
//! Lifecycle
//! - One `Manager` per store directory in this process (`for_store`). It owns
//!   the download slots (`slots.rs`: each pull keeps to its own limit, the
//!   store to the largest limit of the pulls running; by priority, then
//!   round-robin between pulls, then first come first served) and the
//!   in-flight table `digest -> Transfer`.
//! - `Manager::watch` either joins the transfer already in flight for that
//!   digest or creates one and spawns its task. Either way the caller gets a
//!   `Watcher`; dropping it is the release, so watch and release always pair.
//! - A transfer belongs to no pull. Its task runs while at least one watcher
//!   remains; when the last one is dropped before the end, the transfer's own
//!   cancel token fires and its task stops. Watcher counts change only under
//!   the table lock, so a new watcher never joins a transfer being cancelled.
//!   A pull that was cancelled waits (`Settle`) until transfers only it
//!   watched have stopped, so nothing of it runs after its on_done.
//! - The task (`download.rs`): take the store's flock for the digest (other
//!   processes show Waiting and later find the blob in the store), take a
//!   slot, replay the kept partial (if any) through the verifier, then fetch
//!   the rest with Range. A connection that delivered bytes before dying is
//!   resumed at once; other transient failures back off (Retry-After
//!   honoured up to 60 s) up to max_attempts; a stalled connection
//!   (low-speed limit) is replaced, and only a run of stalls costs an
//!   attempt. The partial is kept on cancel, crash or exhausted retries, and
//!   removed on a proven digest mismatch.
//! - States go out on a `watch` channel: Waiting (lock or slot), Downloading,
//!   Retrying, Verifying, then exactly one Done. A watcher that joins late
//!   sees the current state first, then every later change; pulls fill in
//!   the final byte count if an update was overtaken.
//! - A transfer leaves the table before it publishes Done, so a failure is
//!   never inherited: the next pull of that digest starts a fresh transfer.
//! - A layer is inflated (for its diffID) with the limits of the pull that
//!   started its transfer. A pull that joins holds the result to its own
//!   limits (`Blob::inflated`); one with looser limits whose transfer
//!   stopped at the starter's cap starts a transfer of its own.
//! - The verified blob is renamed into blobs/ by the transfer; committing it
//!   to an image (diffID check, host hook, "Pull complete", in layer order)
//!   is each pull's own business (`pull/commit.rs`).
//! - Callbacks never run here: pulls turn states into their own events.

mod download;
mod sink;
mod slots;

pub use slots::Slots;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::registry::Client;
use crate::store::Store;
use crate::verify::{DiffCheck, InflateLimits, Inflated};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A verified blob now in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    /// The uncompressed tar's digest, when it was computed.
    pub diff_id: Option<Digest>,
    /// How far the layer inflated, when this transfer inflated it.
    pub inflated: Option<Inflated>,
    pub path: PathBuf,
    /// False when the blob turned out to be in the store already.
    pub fetched: bool,
    pub stats: Stats,
}

/// What one transfer cost, for a pull's accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Body bytes received from registries (restarts count again).
    pub fetched_bytes: u64,
    /// Bytes a kept partial already held when this transfer started.
    pub resumed_bytes: u64,
    /// Retries by cause: "network", "server", "rate_limited",
    /// "digest_mismatch", "stall".
    pub retries: std::collections::BTreeMap<String, u32>,
}

/// curl-style low-speed limit: fewer than `bytes_per_sec` on average over
/// `window` means the connection stalled; it is replaced and the download
/// resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowSpeed {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub enum State {
    Waiting,
    Downloading {
        current: u64,
        total: u64,
    },
    Retrying {
        attempt: u32,
        delay_secs: u64,
        reason: String,
    },
    Verifying,
    Done(std::result::Result<Blob, Error>),
}

/// What to fetch and from where. The first pull to ask for a digest
/// supplies the source every later watcher shares.
pub struct Request {
    pub digest: Digest,
    pub size: u64,
    /// How the diffID is computed and how far the layer may inflate; None
    /// for non-layer blobs, or when diffIDs are not checked.
    pub check: Option<DiffCheck>,
    pub source: Arc<Client>,
    pub max_attempts: u32,
    /// The pull that asked first: decides its place in the slot queue.
    pub pull_id: u64,
    pub priority: i32,
    pub low_speed: LowSpeed,
    /// The longest Retry-After waited out (max_retry_wait_secs).
    pub max_retry_wait: Duration,
}

struct Transfer {
    digest: Digest,
    state: watch::Sender<State>,
    /// Fires when the last watcher leaves; never by a single pull.
    cancel: CancellationToken,
    /// Guarded by the manager's table lock.
    watchers: Mutex<usize>,
    /// The limits the layer is inflated with (its first request's).
    limits: Option<InflateLimits>,
    /// Set before Done when inflating stopped at one of `limits`.
    stopped_at_limit: AtomicBool,
}

pub struct Manager {
    store: Arc<Store>,
    /// Download slots: by priority, round-robin between pulls, then FIFO.
    slots: Arc<Slots>,
    inflight: Mutex<HashMap<Digest, Arc<Transfer>>>,
    /// Configs being fetched whole, so pulls asking at once share one GET.
    small: Mutex<HashMap<Digest, SmallCell>>,
}

type SmallCell = Arc<tokio::sync::OnceCell<Vec<u8>>>;

/// A pull's hold on a shared small blob; the last one leaving drops it.
pub struct SmallHold {
    manager: Arc<Manager>,
    digest: Digest,
    cell: SmallCell,
}

impl Drop for SmallHold {
    fn drop(&mut self) {
        let mut all = self.manager.small_table();
        // Clones are made under this lock: two are the table's and ours.
        if Arc::strong_count(&self.cell) == 2 {
            all.remove(&self.digest);
        }
    }
}

/// Slots while no pull is registered; every pull brings its own limit.
const IDLE_SLOTS: usize = 3;

static MANAGERS: Mutex<Vec<(PathBuf, Weak<Manager>)>> = Mutex::new(Vec::new());

/// The manager shared by every pull into `root` in this process.
pub fn for_store(root: &Path, tidy: (Duration, u64)) -> Result<Arc<Manager>> {
    let store = Store::open(root)?;
    // Old partials and leftovers of killed processes, once per process.
    if let Err(e) = store.purge_partials(tidy.0, tidy.1) {
        log::warn!("store {}: cannot tidy the ingest area: {e}", root.display());
    }
    let key = std::fs::canonicalize(root)
        .map_err(|e| Error::store(&format!("cannot resolve {}", root.display()), e))?;
    let mut all = MANAGERS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(m) = all
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(m);
    }
    let m = Arc::new(Manager {
        store: Arc::new(store),
        slots: Slots::new(IDLE_SLOTS),
        inflight: Mutex::new(HashMap::new()),
        small: Mutex::new(HashMap::new()),
    });
    all.push((key, Arc::downgrade(&m)));
    Ok(m)
}

impl Manager {
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Register a pull's download limit (max_concurrent_downloads) until
    /// the guard drops.
    pub fn enter_pull(&self, pull_id: u64, limit: usize) -> slots::PullSlots {
        self.slots.enter(pull_id, limit)
    }

    /// A small blob (a config) fetched whole by `fetch`, which the caller
    /// verifies: pulls that ask while another holds it wait for one fetch
    /// and share its bytes; a failed or cancelled fetch is not inherited,
    /// the next waiter fetches itself. Each pull holds the result until it
    /// ends (the config reaches the store only with its image).
    pub async fn small_blob<F, Fut>(
        self: &Arc<Self>,
        digest: &Digest,
        fetch: F,
    ) -> Result<(Vec<u8>, SmallHold)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>>>,
    {
        let cell = self
            .small_table()
            .entry(digest.clone())
            .or_default()
            .clone();
        let hold = SmallHold {
            manager: self.clone(),
            digest: digest.clone(),
            cell,
        };
        let bytes = hold.cell.get_or_try_init(fetch).await?.clone();
        Ok((bytes, hold))
    }

    fn small_table(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, SmallCell>> {
        self.small.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Transfer>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the transfer for `req.digest`, starting it if none is in flight.
    pub fn watch(self: &Arc<Self>, req: Request) -> Watcher {
        let mut table = self.table();
        if let Some(t) = table.get(&req.digest) {
            if !t.cancel.is_cancelled() {
                *t.watchers.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                let rx = t.state.subscribe();
                return Watcher {
                    manager: self.clone(),
                    transfer: t.clone(),
                    rx,
                    joined: true,
                };
            }
        }
        let (tx, rx) = watch::channel(State::Waiting);
        let t = Arc::new(Transfer {
            digest: req.digest.clone(),
            state: tx,
            cancel: CancellationToken::new(),
            watchers: Mutex::new(1),
            limits: req.check.map(|c| c.limits),
            stopped_at_limit: AtomicBool::new(false),
        });
        table.insert(req.digest.clone(), t.clone());
        drop(table);
        tokio::spawn(download::run(self.clone(), t.clone(), req));
        Watcher {
            manager: self.clone(),
            transfer: t,
            rx,
            joined: false,
        }
    }

    fn release(&self, t: &Arc<Transfer>) {
        let mut table = self.table();
        let mut n = t.watchers.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 && !matches!(*t.state.borrow(), State::Done(_)) {
            t.cancel.cancel();
            if table.get(&t.digest).is_some_and(|cur| Arc::ptr_eq(cur, t)) {
                table.remove(&t.digest);
            }
        }
    }

    /// Leave the table, then publish the outcome to every watcher.
    fn finish(&self, t: &Arc<Transfer>, result: std::result::Result<Blob, Error>) {
        {
            let mut table = self.table();
            if table.get(&t.digest).is_some_and(|cur| Arc::ptr_eq(cur, t)) {
                table.remove(&t.digest);
            }
        }
        t.state.send_replace(State::Done(result));
    }

    /// Digests being downloaded now (for tests and diagnostics).
    pub fn in_flight(&self) -> Vec<Digest> {
        self.table().keys().cloned().collect()
    }
}

/// One pull's interest in a transfer. Dropping it releases that interest.
pub struct Watcher {
    manager: Arc<Manager>,
    transfer: Arc<Transfer>,
    pub rx: watch::Receiver<State>,
    /// True when the transfer was already in flight for another pull.
    pub joined: bool,
}

impl Watcher {
    /// The transfer failed because its layer inflated past `limits`, the
    /// limits it was inflated with: a pull whose own limits are looser must
    /// not take that answer.
    pub fn stopped_at_limit(&self) -> Option<InflateLimits> {
        let t = &self.transfer;
        t.limits
            .filter(|_| t.stopped_at_limit.load(Ordering::Acquire))
    }

    /// A handle to wait for this transfer to wind down after a cancel.
    pub fn settle_handle(&self) -> Settle {
        Settle(self.transfer.clone())
    }
}

/// Lets a cancelled pull wait until transfers it alone watched have
/// stopped and removed their temp files, so nothing of it runs after its
/// on_done.
pub struct Settle(Arc<Transfer>);

impl Settle {
    pub async fn wait(&self) {
        if !self.0.cancel.is_cancelled() {
            return; // still wanted by another pull: not ours to wait for
        }
        let mut rx = self.0.state.subscribe();
        let _ = rx.wait_for(|s| matches!(s, State::Done(_))).await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.manager.release(&self.transfer);
    }
}

//! One image pull: resolve the reference, fetch and verify manifests and
//! config, download layers through the transfer manager, commit in order,
//! and name the image in the store's index.json.

mod commit;
pub mod layers;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{self, Parsed};
use crate::options::Checked;
use crate::progress::{Event, EventSender, Kind, Progress};
use crate::registry::Client;
use crate::transfer;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Aggregate counters a host can poll while the pull runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub layers_total: AtomicU32,
    pub layers_done: AtomicU32,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LayerResult {
    pub digest: String,
    pub diff_id: Option<String>,
    pub size: u64,
    pub media_type: String,
}

/// What a finished pull hands back (as JSON through the C API).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PullResult {
    pub reference: String,
    /// What the tag resolved to: the index digest for multi-platform images.
    pub digest: String,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The manifest index.json points at: the registry's own for OCI
    /// images, its OCI rewrite for Docker schema2 ones.
    pub stored_manifest_digest: String,
    pub config_digest: String,
    pub platform: Option<String>,
    pub store: String,
    pub layers: Vec<LayerResult>,
    /// Where the layer bytes came from, and retries by cause.
    #[serde(flatten)]
    pub account: layers::Account,
    pub up_to_date: bool,
    /// The registry's RateLimit-Remaining header as last sent (Docker Hub:
    /// `76;w=21600`), when it sends one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_remaining: Option<String>,
}

/// A running pull. Dropping it does not stop the pull; `cancel` does.
pub struct PullHandle {
    cancel: CancellationToken,
    pub counters: Arc<Counters>,
}

impl PullHandle {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Start a pull on the library runtime. Events arrive on `events`, and
/// `Event::Done` is always the last one sent.
pub fn start(opts: Checked, events: EventSender) -> PullHandle {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let pull_id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cancel = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let handle = PullHandle {
        cancel: cancel.clone(),
        counters: counters.clone(),
    };
    crate::runtime::get().spawn(async move {
        let settle = Mutex::new(Vec::new());
        let result = tokio::select! {
            r = run(pull_id, &opts, &events, &counters, &settle) => r,
            _ = cancel.cancelled() => Err(Error::cancelled()),
        };
        // Transfers only this pull watched were cancelled when run() was
        // dropped; let them remove their temp files before on_done.
        let handles = std::mem::take(&mut *settle.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures_util::future::join_all(handles.iter().map(|h| h.wait()));
        if tokio::time::timeout(SETTLE_LIMIT, all).await.is_err() {
            log::warn!(
                "pull {}: transfers still stopping after {SETTLE_LIMIT:?}",
                opts.reference
            );
        }
        if let Err(e) = &result {
            log::info!("pull {}: {e}", opts.reference);
        }
        let _ = events.send(Event::Done(result));
    });
    handle
}

fn emit(events: &EventSender, p: Progress) {
    let _ = events.send(Event::Progress(p));
}

/// How long a cancelled pull waits for its transfers to stop.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn run(
    pull_id: u64,
    o: &Checked,
    events: &EventSender,
    counters: &Arc<Counters>,
    settle: &Mutex<Vec<transfer::Settle>>,
) -> Result<PullResult> {
    let r = &o.reference;
    let shown = r.to_string();
    let label = r.tag.clone().unwrap_or_else(|| r.manifest_ref());
    emit(
        events,
        Progress::image(
            Kind::PullingFrom,
            format!("{label}: Pulling from {}", r.repository),
        ),
    );

    let manager = transfer::for_store(&o.store, (o.partial_max_age, o.partial_max_bytes))?;
    let _slots = manager.enter_pull(pull_id, o.max_concurrent_downloads);
    let store = manager.store().clone();
    let client = Arc::new(Client::new(&r.registry, &r.repository, o)?);

    // Pulled by digest, the body is held to it whatever the headers say.
    let top = client
        .manifest(&r.manifest_ref(), r.digest.as_ref())
        .await?;
    // Named in the algorithm of the digest pulled by, else the registry's.
    let top_digest = r.digest.clone().unwrap_or_else(|| Digest::of(&top.bytes));
    let (image, image_bytes, image_digest, platform) =
        resolve(&client, top, &top_digest, o, &shown).await?;

    client.note_foreign(&image.layers);
    let config_digest = image.config.parsed_digest()?;
    log::debug!(
        "pull {shown}: manifest {image_digest} ({}), {} layers",
        image.media_type,
        image.layers.len()
    );
    let (config, _config_hold) = match store.verified(&config_digest, image.config.size) {
        Some(_) => {
            let bytes = std::fs::read(store.blob_path(&config_digest))
                .map_err(|e| Error::store("cannot read a stored config", e))?;
            (bytes, None)
        }
        None => {
            let fetch = || client.small_blob(&config_digest, image.config.size);
            let (bytes, hold) = manager.small_blob(&config_digest, fetch).await?;
            (bytes, Some(hold))
        }
    };
    let diff_ids = manifest::config_diff_ids(&config, &shown)?;
    let platform = match (platform, manifest::config_platform(&config)) {
        (Some(p), _) => Some(p),
        (None, Some(have)) => {
            // A single-platform image: an explicit --platform that it does
            // not satisfy is an error, as with docker pull --platform.
            if o.platform_explicit && !o.platform.matches(&have) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{shown} is an image for {have}, not {}", o.platform),
                ));
            }
            Some(have.normalized().to_string())
        }
        (None, None) => None,
    };
    if o.verify_diff_ids && diff_ids.len() != image.layers.len() {
        return Err(Error::new(
            ErrorKind::Registry,
            format!(
                "{shown}: the config lists {} diffIDs for {} layers",
                diff_ids.len(),
                image.layers.len()
            ),
        ));
    }

    // A layer that is the config's blob (an artifact's config and content)
    // must not be fetched again: store the verified config first. Otherwise
    // the config waits until every layer verified, so a failed pull leaves
    // nothing of the image but layer blobs.
    let config_is_layer = image.layers.iter().any(|l| l.digest == image.config.digest);
    if config_is_layer {
        store.put_blob(&config_digest, &config)?;
    }
    let plan = layers::Plan::new(&image.layers, &diff_ids, o, pull_id)?;
    let (layers, account) = plan
        .fetch(
            &manager,
            &client,
            events,
            counters,
            settle,
            &diff_ids,
            o.commit_hook,
        )
        .await?;

    // The image becomes visible only now that every layer verified.
    // The registry's manifest is kept too; the layout names the OCI form.
    let previous = store.ref_digest(&shown)?;
    if !config_is_layer {
        store.put_blob(&config_digest, &config)?;
    }
    store.put_blob(&image_digest, &image_bytes)?;
    let (stored_digest, stored_type) = match manifest::as_oci(&image) {
        Some(oci) => {
            let d = Digest::of(&oci);
            store.put_blob(&d, &oci)?;
            (d, manifest::OCI_MANIFEST)
        }
        None => (image_digest.clone(), image.media_type.as_str()),
    };
    store.sync_blobs()?;
    let stored_size = std::fs::metadata(store.blob_path(&stored_digest))
        .map_err(|e| Error::store("cannot stat the stored manifest", e))?
        .len();
    store.set_ref(&shown, stored_type, &stored_digest, stored_size)?;
    log::info!(
        "pull {shown}: stored as {stored_digest} in {}",
        store.root().display()
    );

    let fetched = account.bytes_downloaded + account.bytes_shared + account.bytes_resumed;
    let up_to_date = previous.as_deref() == Some(&stored_digest.to_string()) && fetched == 0;
    emit(
        events,
        Progress::image(Kind::Digest, format!("Digest: {top_digest}")),
    );
    let status = if up_to_date {
        format!("Status: Image is up to date for {shown}")
    } else {
        format!("Status: Downloaded newer image for {shown}")
    };
    emit(events, Progress::image(Kind::Status, status));
    Ok(PullResult {
        reference: shown,
        digest: top_digest.to_string(),
        manifest_digest: image_digest.to_string(),
        manifest_media_type: image.media_type.clone(),
        stored_manifest_digest: stored_digest.to_string(),
        config_digest: config_digest.to_string(),
        platform,
        store: std::fs::canonicalize(store.root())
            .unwrap_or_else(|_| store.root().to_path_buf())
            .display()
            .to_string(),
        layers,
        account,
        up_to_date,
        rate_limit_remaining: client.rate_limit_remaining(),
    })
}

/// Follow indexes (nested ones too, to a bounded depth) down to the image
/// manifest for the wanted platform. Each child is fetched by digest and
/// held to its descriptor's digest and size.
async fn resolve(
    client: &Client,
    top: crate::registry::Fetched,
    top_digest: &Digest,
    o: &Checked,
    shown: &str,
) -> Result<(manifest::ImageManifest, Vec<u8>, Digest, Option<String>)> {
    let (mut bytes, mut content_type) = (top.bytes, top.content_type);
    let mut digest = top_digest.clone();
    let mut platform = None;
    for _ in 0..=manifest::MAX_INDEX_DEPTH {
        let what = format!("{shown} (index {digest})");
        let index = match manifest::parse(&bytes, content_type.as_deref(), shown)? {
            Parsed::Image(m) => return Ok((*m, bytes, digest, platform)),
            Parsed::Index(index) => index,
        };
        let d = manifest::select_platform(&index, &o.platform, &what)?.clone();
        let want = d.parsed_digest()?;
        let child = client.manifest(&want.to_string(), Some(&want)).await?;
        if child.bytes.len() as u64 != d.size {
            return Err(Error::new(
                ErrorKind::DigestMismatch,
                format!(
                    "manifest size mismatch in {what}: {want} is {} bytes, the index says {}",
                    child.bytes.len(),
                    d.size
                ),
            ));
        }
        platform = d.platform.map(|p| p.to_string()).or(platform);
        (bytes, content_type, digest) = (child.bytes, child.content_type, want);
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "{shown}: indexes nested deeper than {} are not followed",
            manifest::MAX_INDEX_DEPTH
        ),
    ))
}

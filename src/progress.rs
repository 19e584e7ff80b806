//! Progress events with Docker's wording, and the throttle that keeps byte
//! updates from flooding a host callback.

use crate::error::Error;
use crate::pull::PullResult;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a progress event reports. Values are fixed (C: vic_progress_kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Image level: "TAG: Pulling from REPO".
    PullingFrom = 0,
    PullingFsLayer = 1,
    Waiting = 2,
    Downloading = 3,
    VerifyingChecksum = 4,
    DownloadComplete = 5,
    PullComplete = 6,
    AlreadyExists = 7,
    /// "Retrying in N seconds"; `current` is the attempt about to start.
    Retrying = 8,
    /// Image level: "Digest: sha256:...".
    Digest = 9,
    /// Image level: "Status: Downloaded newer image for REF" or "up to date".
    Status = 10,
}

impl Kind {
    pub fn docker_text(self) -> &'static str {
        match self {
            Kind::PullingFrom => "Pulling from",
            Kind::PullingFsLayer => "Pulling fs layer",
            Kind::Waiting => "Waiting",
            Kind::Downloading => "Downloading",
            Kind::VerifyingChecksum => "Verifying Checksum",
            Kind::DownloadComplete => "Download complete",
            Kind::PullComplete => "Pull complete",
            Kind::AlreadyExists => "Already exists",
            Kind::Retrying => "Retrying",
            Kind::Digest => "Digest",
            Kind::Status => "Status",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Layer digest, or None for image-level messages.
    pub layer: Option<String>,
    pub kind: Kind,
    pub current: u64,
    pub total: u64,
    /// The line docker would print after the layer id.
    pub message: String,
}

impl Progress {
    pub fn layer(digest: &str, kind: Kind, current: u64, total: u64) -> Progress {
        Progress {
            layer: Some(digest.to_string()),
            kind,
            current,
            total,
            message: kind.docker_text().to_string(),
        }
    }

    pub fn image(kind: Kind, message: String) -> Progress {
        Progress {
            layer: None,
            kind,
            current: 0,
            total: 0,
            message,
        }
    }
}

/// A verified layer offered to the host before it counts as committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerCommit {
    /// Position in the manifest (a digest listed twice is offered twice).
    pub index: u32,
    pub digest: String,
    pub diff_id: Option<String>,
    pub media_type: String,
    pub size: u64,
    /// The blob's file in the store.
    pub path: String,
}

/// What a pull tells its host, in order; `Done` is always last.
#[derive(Debug)]
pub enum Event {
    Progress(Progress),
    /// Ask the host's commit hook; it answers Ok or the host's message.
    Commit(
        LayerCommit,
        tokio::sync::oneshot::Sender<Result<(), String>>,
    ),
    Done(Result<PullResult, Error>),
}

pub type EventSender = mpsc::Sender<Event>;
pub type EventReceiver = mpsc::Receiver<Event>;

/// Lets a byte update through at most every 100 ms, and only once 32 KiB more
/// arrived (or a whole second passed, so a trickle still shows). The caller
/// always reports the final byte itself.
pub struct Throttle {
    last_at: Instant,
    last_bytes: u64,
}

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const SLOW_INTERVAL: Duration = Duration::from_secs(1);
const MIN_BYTES: u64 = 32 * 1024;

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            last_at: Instant::now(),
            last_bytes: 0,
        }
    }

    pub fn ready(&mut self, bytes: u64) -> bool {
        let now = Instant::now();
        let since = now.duration_since(self.last_at);
        let moved = bytes.saturating_sub(self.last_bytes);
        let due =
            moved > 0 && since >= MIN_INTERVAL && (moved >= MIN_BYTES || since >= SLOW_INTERVAL);
        if due {
            self.last_at = now;
            self.last_bytes = bytes;
        }
        due
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

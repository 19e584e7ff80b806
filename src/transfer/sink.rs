//! Where a download's bytes go: a blocking worker that hashes, inflates and
//! writes each chunk, off the async I/O threads. The network side keeps
//! reading while the worker digests, and transfers spread over all cores.
//! A bounded queue keeps memory flat whatever the layer size.

use crate::error::{Error, ErrorKind, Result};
use crate::store::{BlobLock, TempBlob};
use crate::verify::BlobHasher;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks in flight between the network and the worker. hyper hands out
/// chunks of up to a few hundred KiB on a fast link, so a short queue keeps
/// each transfer to about 1-2 MiB of buffers.
const QUEUE: usize = 4;

/// Everything a download owns on disk and in memory. It always travels
/// together, so a cancelled download drops the partial before the lock.
pub struct Parts {
    pub temp: TempBlob,
    pub hasher: BlobHasher,
    pub lock: BlobLock,
    /// Dropped last: tells the transfer that the partial is closed and the
    /// lock released, even when the parts die on the writer thread.
    pub _alive: tokio::sync::oneshot::Sender<()>,
}

pub struct Sink {
    tx: mpsc::Sender<Bytes>,
    worker: JoinHandle<(Parts, Option<Error>)>,
}

impl Sink {
    pub fn start(parts: Parts) -> Sink {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let worker = tokio::task::spawn_blocking(move || {
            let mut parts = parts;
            let mut failed = None;
            while let Some(chunk) = rx.blocking_recv() {
                if failed.is_some() {
                    continue; // drain, so the sender never blocks forever
                }
                parts.hasher.update(&chunk);
                if parts.hasher.over_limit().is_some() {
                    // A layer inflating past its caps: stop here, which also
                    // stops the download (its next push fails). The caller
                    // reads the reason from the hasher.
                    break;
                }
                if let Err(e) = parts.temp.write_all(&chunk) {
                    failed = Some(e);
                }
            }
            (parts, failed)
        });
        Sink { tx, worker }
    }

    /// Queue one chunk; waits while the worker is behind.
    pub async fn push(&self, chunk: Bytes) -> Result<()> {
        self.tx
            .send(chunk)
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "blob writer stopped"))
    }

    /// Wait for the worker to digest everything queued; hand back the parts
    /// and a write error, if one happened.
    pub async fn finish(self) -> Result<(Parts, Option<Error>)> {
        drop(self.tx);
        self.worker
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("blob writer failed: {e}")))
    }
}

//! Scratch directories that disappear with their owner.
//!
//! Hand-rolled instead of pulling in `tempfile`: the kit only needs "a fresh, private directory
//! removed on drop", and every dependency here is built for every test run.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes directories made by one process in the same nanosecond.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory under the system temp dir, removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/<prefix>-<pid>-<n>-<nanos>`; panics if no directory can be made.
    pub fn new(prefix: &str) -> TempDir {
        Self::try_new(prefix).unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"))
    }

    /// Like [`TempDir::new`] but returns the error.
    pub fn try_new(prefix: &str) -> io::Result<TempDir> {
        let base = std::env::temp_dir();
        let mut last_err = None;
        // create_dir fails on an existing name, so a collision just moves on to the next one.
        for _ in 0..16 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no free temp dir name")))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a failing cleanup must not turn a passing test into a panic.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

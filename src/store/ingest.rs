//! The ingest area (`.vicpull/ingest/`): bytes on their way into blobs/.
//!
//! `<name>` is `Digest::file_name`: the hex for sha256, `sha512-<hex>`.
//!
//! - `<name>.partial`: a layer being downloaded, kept when a download stops
//!   early so the next pull (in any process) resumes from its length.
//! - `<name>.lock`: flock'd by the one process downloading that blob; others
//!   wait, then find the blob in blobs/. The owner unlinks it on release.
//! - `<name>.<pid>.<seq>.tmp`: small one-shot writes; a dead pid's are stale.

use super::{io, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bytes on their way into the store. Dropped, the file is removed unless
/// it was marked to be kept as a resumable partial.
pub struct TempBlob {
    path: PathBuf,
    file: Option<File>,
    keep: bool,
}

impl TempBlob {
    pub(super) fn create(path: PathBuf) -> Result<TempBlob> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io(format!("cannot create {}", path.display())))?;
        Ok(TempBlob {
            path,
            file: Some(file),
            keep: false,
        })
    }

    /// Bytes already written (a resumed partial starts non-empty).
    pub fn len(&self) -> Result<u64> {
        let f = self.file.as_ref().expect("temp blob already committed");
        f.metadata()
            .map(|m| m.len())
            .map_err(io("cannot stat a temp blob"))
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self.file.as_mut().expect("temp blob already committed");
        f.write_all(bytes)
            .map_err(io("cannot write to the ingest area"))
    }

    /// Drop everything written so far (a restart from byte 0).
    pub fn reset(&mut self) -> Result<()> {
        let f = self.file.as_mut().expect("temp blob already committed");
        f.set_len(0).map_err(io("cannot truncate a temp blob"))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io("cannot seek a temp blob"))
            .map(|_| ())
    }

    /// Keep (true) or remove (false) the file when this is dropped.
    pub fn keep_on_drop(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Feed the bytes already on disk to `sink`, in order, then leave the
    /// file positioned at its end for appending.
    pub fn replay(&mut self, mut sink: impl FnMut(&[u8])) -> Result<u64> {
        let f = self.file.as_mut().expect("temp blob already committed");
        f.seek(SeekFrom::Start(0))
            .map_err(io("cannot seek a partial"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io("cannot read a partial"))?;
            if n == 0 {
                break;
            }
            sink(&buf[..n]);
            total += n as u64;
        }
        Ok(total)
    }

    /// fsync and rename to `dest`; the temp file is gone afterwards.
    pub(super) fn persist(mut self, dest: &Path) -> Result<()> {
        let file = self.file.take().expect("temp blob committed twice");
        file.sync_all().map_err(io("cannot fsync a blob"))?;
        drop(file);
        fs::rename(&self.path, dest)
            .map_err(io(format!("cannot rename into {}", dest.display())))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.keep && !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The right to download one blob into this store, across processes.
/// Released (and its file unlinked) on drop.
pub struct BlobLock {
    path: PathBuf,
    file: File,
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a waiter that opened the old
        // file notices the inode is gone and retries on a fresh one.
        let _ = fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub removed: u64,
    pub bytes: u64,
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Store {
    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir()
            .join(format!("{}.partial", digest.file_name()))
    }

    /// Take the download lock for `digest` without waiting: None when
    /// another process (or another handle in this one) holds it.
    pub fn try_lock_blob(&self, digest: &Digest) -> Result<Option<BlobLock>> {
        let path = self
            .ingest_dir()
            .join(format!("{}.lock", digest.file_name()));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io(format!("cannot open {}", path.display())))?;
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Ok(None);
                }
                return Err(Error::store("cannot lock a blob download", e));
            }
            // The holder before us may have unlinked the file after we
            // opened it: the lock only counts on the file the path names.
            let same = match (file.metadata(), fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if same {
                return Ok(Some(BlobLock { path, file }));
            }
        }
    }

    /// The partial for `digest`, created empty if there is none. Only the
    /// lock holder may call this.
    pub fn open_partial(&self, digest: &Digest, _lock: &BlobLock) -> Result<TempBlob> {
        let path = self.partial_path(digest);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        Ok(TempBlob {
            path,
            file: Some(file),
            keep: false,
        })
    }

    /// Remove partials older than `max_age`, then the oldest ones until the
    /// rest fit in `max_total` bytes, and temp files of dead processes.
    /// Partials being downloaded (locked) are left alone.
    pub fn purge_partials(&self, max_age: Duration, max_total: u64) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let mut partials = Vec::new();
        let dir = self.ingest_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(Error::store("cannot list the ingest area", e)),
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            let mut parts = name.split('.');
            let stem = parts.next().unwrap_or("");
            let stale_tmp = name.ends_with(".tmp")
                && parts
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| !pid_alive(p));
            if stale_tmp {
                if fs::remove_file(entry.path()).is_ok() {
                    report.removed += 1;
                    report.bytes += meta.len();
                }
                continue;
            }
            if !name.ends_with(".partial") {
                continue;
            }
            let Some(digest) = Digest::from_file_name(stem) else {
                continue;
            };
            let age = now
                .duration_since(meta.modified().unwrap_or(now))
                .unwrap_or_default();
            partials.push((digest, age, meta.len()));
        }
        // Oldest first, so the size cap drops the least recently used.
        partials.sort_by_key(|p| std::cmp::Reverse(p.1));
        let mut total: u64 = partials.iter().map(|p| p.2).sum();
        for (digest, age, len) in partials {
            if age <= max_age && total <= max_total {
                continue;
            }
            let Some(_lock) = self.try_lock_blob(&digest)? else {
                continue;
            };
            if fs::remove_file(self.partial_path(&digest)).is_ok() {
                report.removed += 1;
                report.bytes += len;
                total -= len;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn store(tag: &str) -> (Store, PathBuf) {
        let d = std::env::temp_dir().join(format!("vicpull-ingest-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        (Store::open(&d).unwrap(), d)
    }

    #[test]
    fn lock_is_exclusive_and_leaves_no_file() {
        let (s, root) = store("lock");
        let d = Digest::of(b"x");
        let a = s.try_lock_blob(&d).unwrap().expect("first lock");
        assert!(
            s.try_lock_blob(&d).unwrap().is_none(),
            "second lock must wait"
        );
        drop(a);
        let b = s.try_lock_blob(&d).unwrap().expect("lock after release");
        drop(b);
        assert_eq!(
            fs::read_dir(s.ingest_dir()).unwrap().count(),
            0,
            "lock file left behind"
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn algorithms_never_share_a_lock_or_partial() {
        let (s, root) = store("algos");
        let a = Digest::of(b"same bytes");
        let b = Digest::of_with(Algorithm::Sha512, b"same bytes");
        let la = s.try_lock_blob(&a).unwrap().expect("sha256 lock");
        let lb = s
            .try_lock_blob(&b)
            .unwrap()
            .expect("sha512 lock, held at once");
        let mut pa = s.open_partial(&a, &la).unwrap();
        pa.write_all(b"x").unwrap();
        assert!(s.open_partial(&b, &lb).unwrap().is_empty().unwrap());
        let names: Vec<String> = fs::read_dir(s.ingest_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&format!("sha512-{}.lock", b.hex())),
            "{names:?}"
        );
        drop((pa, la, lb));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn partial_survives_and_replays() {
        let (s, root) = store("partial");
        let d = Digest::of(b"hello world");
        let lock = s.try_lock_blob(&d).unwrap().unwrap();
        let mut p = s.open_partial(&d, &lock).unwrap();
        p.write_all(b"hello ").unwrap();
        p.keep_on_drop(true);
        drop(p);
        let mut p = s.open_partial(&d, &lock).unwrap();
        let mut seen = Vec::new();
        assert_eq!(p.replay(|b| seen.extend_from_slice(b)).unwrap(), 6);
        p.write_all(b"world").unwrap();
        assert_eq!(seen, b"hello ");
        assert_eq!(p.len().unwrap(), 11);
        drop(p);
        drop(lock);
        assert_eq!(fs::read_dir(s.ingest_dir()).unwrap().count(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn purge_respects_age_size_and_locks() {
        let (s, root) = store("purge");
        // One of each algorithm: the sha512 partial is found by its name too.
        let b = Digest::of_with(Algorithm::Sha512, b"b");
        let a = Digest::of(b"a");
        for d in [&a, &b] {
            let lock = s.try_lock_blob(d).unwrap().unwrap();
            let mut p = s.open_partial(d, &lock).unwrap();
            p.write_all(&[0u8; 100]).unwrap();
            p.keep_on_drop(true);
        }
        let held = s.try_lock_blob(&a).unwrap().unwrap();
        let r = s.purge_partials(Duration::ZERO, u64::MAX).unwrap();
        assert_eq!(
            r,
            PurgeReport {
                removed: 1,
                bytes: 100
            },
            "only the unlocked one"
        );
        drop(held);
        let r = s.purge_partials(Duration::from_secs(3600), 50).unwrap();
        assert_eq!(r.removed, 1, "the size cap removes the rest");
        fs::write(
            s.ingest_dir().join(format!("{}.999999999.0.tmp", a.hex())),
            b"x",
        )
        .unwrap();
        assert_eq!(
            s.purge_partials(Duration::from_secs(3600), u64::MAX)
                .unwrap()
                .removed,
            1
        );
        fs::remove_dir_all(root).unwrap();
    }
}

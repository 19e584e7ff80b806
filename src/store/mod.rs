//! The store: an OCI image layout directory (oci-layout, index.json,
//! blobs/sha256/..., blobs/sha512/... once a blob is named so) that skopeo,
//! umoci and containerd tools can read.
//!
//! Nothing unverified is ever visible under blobs/: bytes land in
//! `.vicpull/ingest/`, are verified, fsync'd, then renamed into place.
//! `.vicpull/verified/<name>` records that we verified a blob ourselves (and
//! its diffID), so a blob someone else left is re-hashed before it is trusted.
//! Files of our own areas are named by `Digest::file_name` (the hex for
//! sha256, `sha512-<hex>` for sha512), so algorithms never share a name.

use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::verify::{BlobHasher, DiffCheck};
mod ingest;

pub use ingest::{BlobLock, PurgeReport, TempBlob};

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) fn io(context: impl AsRef<str>) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::store(context.as_ref(), e)
}

impl Store {
    /// Open or create a layout at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
        };
        let sha256 = store.blobs_dir(Algorithm::Sha256);
        for dir in [sha256, store.ingest_dir(), store.verified_dir()] {
            fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _lock = store.lock_index()?;
            if !index.exists() {
                store.write_atomic(&index, br#"{"schemaVersion":2,"manifests":[]}"#)?;
            }
        }
        Ok(store)
    }

    /// A handle on `root` that creates nothing (for maintenance: a path
    /// that holds no store simply has nothing to tidy).
    pub fn existing(root: &Path) -> Result<Store> {
        if root.as_os_str().is_empty() {
            return Err(Error::invalid("store path is empty"));
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root.join("blobs").join(algorithm.name())
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join(".vicpull").join("ingest")
    }

    fn verified_dir(&self) -> PathBuf {
        self.root.join(".vicpull").join("verified")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir(digest.algorithm()).join(digest.hex())
    }

    fn mark_path(&self, digest: &Digest) -> PathBuf {
        self.verified_dir().join(digest.file_name())
    }

    /// A blob we verified earlier: Some(diffID if it was a layer).
    pub fn verified(&self, digest: &Digest, size: u64) -> Option<Option<Digest>> {
        let meta = fs::metadata(self.blob_path(digest)).ok()?;
        if meta.len() != size {
            return None;
        }
        let mark = fs::read_to_string(self.mark_path(digest)).ok()?;
        let mark = mark.trim();
        if mark.is_empty() {
            Some(None)
        } else {
            Digest::parse(mark).ok().map(Some)
        }
    }

    /// Re-hash a blob we did not write (or whose diffID we lack, or have in
    /// another algorithm). A blob that fails is moved out of blobs/ and None
    /// is returned; a layer that inflates past its limits is an error and
    /// stays (its bytes may be right, this pull just will not use them).
    pub fn verify_existing(
        &self,
        digest: &Digest,
        size: u64,
        check: Option<DiffCheck>,
    ) -> Result<Option<Option<Digest>>> {
        let path = self.blob_path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::store(&format!("cannot open {}", path.display()), e)),
        };
        let mut hasher = BlobHasher::new(digest.algorithm(), check);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(io(format!("cannot read {}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some(o) = hasher.over_limit() {
                return Err(o.error(digest));
            }
        }
        let v = hasher.finish();
        if let Some(o) = v.over_limit {
            return Err(o.error(digest));
        }
        let diff_id = match v.diff_id {
            Some(Ok(d)) => Some(d),
            None => None,
            Some(Err(_)) => return self.evict(digest).map(|_| None),
        };
        if v.digest != *digest || v.size != size {
            return self.evict(digest).map(|_| None);
        }
        self.mark_verified(digest, diff_id.as_ref())?;
        Ok(Some(diff_id))
    }

    fn evict(&self, digest: &Digest) -> Result<()> {
        log::warn!("store: {digest} on disk does not verify; fetching it again");
        let _ = fs::remove_file(self.mark_path(digest));
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::store("cannot remove a corrupt blob", e)),
        }
    }

    /// Not fsync'd: a mark lost in a crash only costs a re-hash, and the
    /// blob it vouches for was fsync'd before it became visible.
    fn mark_verified(&self, digest: &Digest, diff_id: Option<&Digest>) -> Result<()> {
        let text = diff_id.map(|d| d.to_string()).unwrap_or_default();
        let path = self.mark_path(digest);
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{seq}", std::process::id()));
        let res = fs::write(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::store("cannot mark a blob verified", e));
        }
        Ok(())
    }

    /// A fresh temp file in the ingest area, named after this process so a
    /// later run can tell it is stale; removed on drop unless committed.
    pub fn temp_blob(&self, digest: &Digest) -> Result<TempBlob> {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.{}.{seq}.tmp", digest.file_name(), std::process::id());
        TempBlob::create(self.ingest_dir().join(name))
    }

    /// Make a verified temp blob visible: fsync, rename, fsync the directory.
    pub fn commit(
        &self,
        temp: TempBlob,
        digest: &Digest,
        diff_id: Option<&Digest>,
    ) -> Result<PathBuf> {
        let dest = self.blob_path(digest);
        if digest.algorithm() != Algorithm::Sha256 {
            self.blobs_dir_for(digest.algorithm())?;
        }
        // The bytes are fsync'd before the rename, so the name never points
        // at unwritten data. The directory entry itself is made durable by
        // `sync_blobs`, once per pull, before index.json names the image.
        temp.persist(&dest)?;
        self.mark_verified(digest, diff_id)?;
        Ok(dest)
    }

    /// blobs/<algorithm>, created (durably) if this is its first blob.
    fn blobs_dir_for(&self, algorithm: Algorithm) -> Result<()> {
        let dir = self.blobs_dir(algorithm);
        if dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        sync_dir(&self.root.join("blobs"))
    }

    /// Make every rename into blobs/ durable (one fsync per algorithm's
    /// directory; sha512 only when the store has one).
    pub fn sync_blobs(&self) -> Result<()> {
        sync_dir(&self.blobs_dir(Algorithm::Sha256))?;
        let sha512 = self.blobs_dir(Algorithm::Sha512);
        if sha512.is_dir() {
            sync_dir(&sha512)?;
        }
        Ok(())
    }

    /// Fail early, and clearly, when `needed` more bytes cannot fit.
    pub fn check_free_space(&self, needed: u64) -> Result<()> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid("store path contains a NUL byte"))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: a NUL-terminated path and a buffer statvfs fills on success.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::store(
                "cannot read free space",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: statvfs returned 0, so the struct is initialised.
        let st = unsafe { st.assume_init() };
        // Both are u64 on 64-bit Linux but narrower on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        if needed > free {
            return Err(Error::new(
                ErrorKind::StoreIo,
                format!(
                    "store {} needs {needed} more bytes for this pull but has {free} free",
                    self.root.display()
                ),
            ));
        }
        Ok(())
    }

    /// Store small verified bytes (manifests, configs).
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.verified(digest, bytes.len() as u64).is_some() {
            return Ok(());
        }
        let mut temp = self.temp_blob(digest)?;
        temp.write_all(bytes)?;
        self.commit(temp, digest, None).map(|_| ())
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{seq}", std::process::id()));
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::store(&format!("cannot write {}", path.display()), e));
        }
        sync_dir(path.parent().unwrap_or(&self.root))
    }

    /// Exclusive lock over index.json, across threads and processes.
    fn lock_index(&self) -> Result<File> {
        let path = self.root.join(".vicpull").join("index.lock");
        fs::create_dir_all(self.root.join(".vicpull")).map_err(io("cannot create .vicpull"))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open the index lock"))?;
        // SAFETY: flock on a descriptor we own; the lock is released when the
        // returned File is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::store(
                "cannot lock index.json",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(f)
    }

    fn read_index(&self) -> Result<serde_json::Value> {
        let path = self.root.join("index.json");
        let text = fs::read(&path).map_err(io("cannot read index.json"))?;
        let bad = |why: String| Error::new(ErrorKind::StoreIo, format!("{} {why}", path.display()));
        let index: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
        // Refuse rather than overwrite what another tool wrote.
        match index.get("manifests") {
            _ if !index.is_object() => Err(bad("is not a JSON object".into())),
            Some(m) if !m.is_array() => Err(bad("has a \"manifests\" that is not a list".into())),
            _ => Ok(index),
        }
    }

    /// The manifest digest a name points at now, if any.
    pub fn ref_digest(&self, name: &str) -> Result<Option<String>> {
        let index = self.read_index()?;
        Ok(entries(&index)
            .iter()
            .find(|m| m["annotations"][REF_NAME] == name)
            .and_then(|m| m["digest"].as_str().map(str::to_string)))
    }

    /// Point `name` at a manifest, replacing any older entry of that name.
    pub fn set_ref(&self, name: &str, media_type: &str, digest: &Digest, size: u64) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let same = entries(&index).iter().any(|m| {
            m["annotations"][REF_NAME] == name
                && m["digest"] == digest.to_string().as_str()
                && m["mediaType"] == media_type
                && m["size"] == size
        });
        if same {
            return Ok(()); // already named so: no rewrite, no fsync
        }
        let mut list: Vec<serde_json::Value> = entries(&index)
            .iter()
            .filter(|m| m["annotations"][REF_NAME] != name)
            .cloned()
            .collect();
        list.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": { REF_NAME: name, CONTAINERD_NAME: name },
        }));
        index["manifests"] = serde_json::Value::Array(list);
        if index.get("schemaVersion").is_none() {
            index["schemaVersion"] = 2.into();
        }
        let bytes = serde_json::to_vec_pretty(&index).expect("index serialises");
        self.write_atomic(&self.root.join("index.json"), &bytes)
    }
}

fn entries(index: &serde_json::Value) -> Vec<serde_json::Value> {
    index["manifests"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot fsync {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vicpull-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn commit_is_atomic_and_index_updates() {
        let root = tmpdir("commit");
        let s = Store::open(&root).unwrap();
        let d = Digest::of(b"abc");
        s.put_blob(&d, b"abc").unwrap();
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"abc");
        assert_eq!(fs::read_dir(s.ingest_dir()).unwrap().count(), 0);
        s.set_ref("r:1", "m", &d, 3).unwrap();
        s.set_ref("r:1", "m", &d, 3).unwrap();
        s.set_ref("r:2", "m", &d, 3).unwrap();
        let idx = s.read_index().unwrap();
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(s.ref_digest("r:1").unwrap(), Some(d.to_string()));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn index_that_is_not_an_object_is_an_error_not_a_panic() {
        let root = tmpdir("badindex");
        let s = Store::open(&root).unwrap();
        let d = Digest::of(b"abc");
        for text in ["[]", "\"str\"", "5", r#"{"manifests":5}"#] {
            fs::write(root.join("index.json"), text).unwrap();
            let e = s.set_ref("r:1", "m", &d, 3).unwrap_err();
            assert_eq!(e.kind, ErrorKind::StoreIo, "{text}");
            assert_eq!(fs::read_to_string(root.join("index.json")).unwrap(), text);
        }
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn free_space_check_names_the_need() {
        let root = tmpdir("space");
        let s = Store::open(&root).unwrap();
        s.check_free_space(1).unwrap();
        let e = s.check_free_space(u64::MAX).unwrap_err();
        assert_eq!(e.kind, ErrorKind::StoreIo);
        assert!(
            e.message.contains("more bytes for this pull"),
            "{}",
            e.message
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn sha512_blobs_go_under_their_own_directory() {
        let root = tmpdir("sha512");
        let s = Store::open(&root).unwrap();
        let d = Digest::of_with(Algorithm::Sha512, b"abc");
        s.put_blob(&d, b"abc").unwrap();
        let path = root.join("blobs/sha512").join(d.hex());
        assert_eq!(s.blob_path(&d), path);
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        assert_eq!(s.verified(&d, 3), Some(None));
        assert!(s.verified(&Digest::of(b"abc"), 3).is_none());
        s.sync_blobs().unwrap();
        // Bytes that do not hash to the sha512 name are evicted.
        fs::write(&path, b"abd").unwrap();
        fs::remove_file(s.mark_path(&d)).unwrap();
        assert_eq!(s.verify_existing(&d, 3, None).unwrap(), None);
        assert!(!path.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn corrupt_blob_is_evicted() {
        let root = tmpdir("evict");
        let s = Store::open(&root).unwrap();
        let d = Digest::of(b"good");
        fs::write(s.blob_path(&d), b"bad!").unwrap();
        assert_eq!(s.verified(&d, 4), None);
        assert_eq!(s.verify_existing(&d, 4, None).unwrap(), None);
        assert!(!s.blob_path(&d).exists());
        fs::remove_dir_all(root).unwrap();
    }
}

//! Layers: a blob plus the digests a manifest and a config need.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use flate2::write::GzEncoder;

use super::tarball::{self, TarWriter};
use super::Format;
use crate::digest::{digest_with, sha256_digest, Algorithm};
use crate::rng::Rng;

/// How a layer's tar is stored in its blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// Docker's 32-byte gzip of an empty tar (1024 zero bytes), known to every registry.
const EMPTY_GZIP: [u8; 32] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60, 0x14,
    0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04, 0x00, 0x00,
];

/// One layer blob and what describes it. Cloning is cheap (the bytes are shared), so the
/// same layer can appear twice in an image.
#[derive(Clone)]
pub struct Layer {
    blob: Arc<[u8]>,
    digest: String,
    diff_id: String,
    compression: Compression,
    media_type: Option<String>,
}

impl Layer {
    /// A gzip layer holding the regular files and directories under `path`, at most
    /// `max_bytes` of file content; see [`tarball::dir_tar`] for the exact rules.
    pub fn tar_of_dir(path: impl AsRef<Path>, max_bytes: u64) -> Layer {
        Layer::from_tar(tarball::dir_tar(path, max_bytes), Compression::Gzip)
    }

    /// Like [`Layer::tar_of_dir`] with a choice of compression.
    pub fn tar_of_dir_with(path: impl AsRef<Path>, max_bytes: u64, c: Compression) -> Layer {
        Layer::from_tar(tarball::dir_tar(path, max_bytes), c)
    }

    /// A layer from tar bytes; gzip uses level 6, what `docker push` uses by default.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
        match compression {
            Compression::Gzip => Layer::gzip_of(&tar, 6),
            Compression::None => {
                let digest = sha256_digest(&tar);
                Layer::from_parts(tar, digest.clone(), digest, Compression::None)
            }
        }
    }

    /// A gzip layer with one file, `random-<seed>.bin`, of `size` incompressible bytes.
    pub fn random(size: usize, seed: u64) -> Layer {
        let mut data = vec![0u8; size];
        Rng::new(seed).fill(&mut data);
        let mut tar = TarWriter::new();
        tar.file(&format!("random-{seed}.bin"), false, &data);
        // Level 1: random bytes do not compress anyway, so spend no time trying.
        Layer::gzip_of(&tar.finish(), 1)
    }

    /// Docker's well-known empty gzip layer (32 bytes).
    pub fn empty_gzip() -> Layer {
        Layer::from_parts(
            EMPTY_GZIP.to_vec(),
            sha256_digest(&EMPTY_GZIP),
            sha256_digest(&[0u8; 1024]),
            Compression::Gzip,
        )
    }

    /// A layer from raw parts, for blobs the other constructors cannot make (say, a gzip that
    /// does not match its diff_id). Nothing is checked.
    pub fn from_blob(blob: Vec<u8>, diff_id: &str, compression: Compression) -> Layer {
        let digest = sha256_digest(&blob);
        Layer::from_parts(blob, digest, diff_id.to_string(), compression)
    }

    /// The same layer announced with another media type in manifests.
    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.media_type = Some(media_type.to_string());
        self
    }

    /// The same blob named by its digest in `algorithm` (the registry takes sha512 uploads).
    pub fn with_digest_algorithm(mut self, algorithm: Algorithm) -> Layer {
        self.digest = digest_with(algorithm, &self.blob);
        self
    }

    /// The same layer with its diff_id in `algorithm`, from the tar inside the blob. Only for
    /// gzip and plain blobs that hold what their diff_id says.
    pub fn with_diff_id_algorithm(mut self, algorithm: Algorithm) -> Layer {
        let tar = match self.compression {
            Compression::None => self.blob.to_vec(),
            Compression::Gzip => {
                let mut tar = Vec::new();
                let mut gz = flate2::read::MultiGzDecoder::new(&self.blob[..]);
                std::io::Read::read_to_end(&mut gz, &mut tar).expect("a gzip layer");
                tar
            }
        };
        self.diff_id = digest_with(algorithm, &tar);
        self
    }

    /// The same blob with another diff_id written into image configs (to test verification).
    pub fn with_diff_id(mut self, diff_id: &str) -> Layer {
        self.diff_id = diff_id.to_string();
        self
    }

    /// The blob as stored in the registry.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The blob's digest, "sha256:<hex>" (or "sha512:<hex>", see `with_digest_algorithm`).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The digest of the uncompressed tar, as listed in the config's `rootfs.diff_ids`.
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// The blob size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The media type a manifest of `format` gives this layer (an override wins).
    pub fn media_type(&self, format: Format) -> String {
        if let Some(mt) = &self.media_type {
            return mt.clone();
        }
        let mt = match (format, self.compression) {
            (Format::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            // Docker has no official type for plain tar layers; this one is what tools emit.
            (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Format::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        };
        mt.to_string()
    }

    fn gzip_of(tar: &[u8], level: u32) -> Layer {
        // GzEncoder writes mtime 0 and no file name, so the output depends on the input only.
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        enc.write_all(tar).expect("gzip into a Vec");
        let blob = enc.finish().expect("gzip into a Vec");
        let digest = sha256_digest(&blob);
        Layer::from_parts(blob, digest, sha256_digest(tar), Compression::Gzip)
    }

    fn from_parts(blob: Vec<u8>, digest: String, diff_id: String, c: Compression) -> Layer {
        Layer {
            blob: blob.into(),
            digest,
            diff_id,
            compression: c,
            media_type: None,
        }
    }
}

impl fmt::Debug for Layer {
    // The blob can be megabytes: show what identifies it instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("digest", &self.digest)
            .field("diff_id", &self.diff_id)
            .field("size", &self.blob.len())
            .field("compression", &self.compression)
            .field("media_type", &self.media_type)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_gzip_has_the_well_known_digests() {
        let l = Layer::empty_gzip();
        assert_eq!(l.size(), 32);
        assert_eq!(
            l.digest(),
            "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
        );
        assert_eq!(
            l.diff_id(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(l.blob()), &mut tar).unwrap();
        assert_eq!(tar, vec![0u8; 1024]);
    }

    #[test]
    fn random_layers_are_deterministic_and_incompressible() {
        let a = Layer::random(64 * 1024, 1);
        assert_eq!(a.digest(), Layer::random(64 * 1024, 1).digest());
        assert_ne!(a.digest(), Layer::random(64 * 1024, 2).digest());
        assert!(
            a.size() > 64 * 1024,
            "random data should not shrink: {}",
            a.size()
        );
    }

    #[test]
    fn dir_layers_are_deterministic_and_capped() {
        let dir = crate::TempDir::new("testkit-layer");
        let write = |name: &str, len: usize| {
            std::fs::write(dir.path().join(name), vec![b'x'; len]).unwrap();
        };
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write("a.txt", 3000);
        write("b.txt", 5000);
        write("c.txt", 10);
        write("sub/d.txt", 1);
        let tar = tarball::dir_tar(dir.path(), 3010);
        assert_eq!(tar, tarball::dir_tar(dir.path(), 3010));

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&tar[..]);
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        // b.txt would pass the cap and is skipped; a.txt and c.txt fill it exactly, so the
        // walk stops before sub/.
        let root = tarball::entry_name(dir.path());
        let has = |n: &str| names.contains(&format!("{root}/{n}"));
        assert!(has("a.txt") && has("c.txt"), "{names:?}");
        assert!(!has("b.txt") && !has("sub/d.txt"), "{names:?}");
        let plain = Layer::tar_of_dir_with(dir.path(), 3010, Compression::None);
        assert_eq!(plain.digest(), plain.diff_id());
    }
}

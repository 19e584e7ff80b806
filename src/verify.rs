//! One streaming pass per blob: sha256 of the bytes as sent and, for layers,
//! the diffID (sha256 of the uncompressed tar). Memory is constant whatever
//! the layer size: each chunk is hashed, inflated and dropped.

use crate::digest::Digest;
use crate::manifest::LayerEncoding;
use flate2::write::MultiGzDecoder;
use sha2::{Digest as _, Sha256};
use std::io::Write;

/// Feeds inflated bytes into a sha256.
struct HashWriter {
    hash: Sha256,
    bytes: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Diff {
    /// Config and manifests, or diffID checking turned off.
    None,
    /// An uncompressed tar: the diffID is the blob digest.
    SameAsBlob,
    Gzip {
        decoder: MultiGzDecoder<HashWriter>,
        error: Option<String>,
    },
}

pub struct BlobHasher {
    blob: Sha256,
    size: u64,
    head: Vec<u8>,
    diff: Diff,
}

/// What one pass found.
pub struct Verified {
    pub digest: Digest,
    pub size: u64,
    /// None when not computed; Err when the bytes are not what the media
    /// type says (the digest may still be right).
    pub diff_id: Option<Result<Digest, String>>,
}

impl BlobHasher {
    pub fn new(encoding: Option<LayerEncoding>) -> BlobHasher {
        let diff = match encoding {
            None => Diff::None,
            Some(LayerEncoding::Plain) => Diff::SameAsBlob,
            Some(LayerEncoding::Gzip) => Diff::Gzip {
                decoder: MultiGzDecoder::new(HashWriter {
                    hash: Sha256::new(),
                    bytes: 0,
                }),
                error: None,
            },
        };
        BlobHasher {
            blob: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(8),
            diff,
        }
    }

    /// A fresh hasher computing the same things.
    pub fn new_like(other: &BlobHasher) -> BlobHasher {
        let encoding = match other.diff {
            Diff::None => None,
            Diff::SameAsBlob => Some(LayerEncoding::Plain),
            Diff::Gzip { .. } => Some(LayerEncoding::Gzip),
        };
        BlobHasher::new(encoding)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.blob.update(chunk);
        self.size += chunk.len() as u64;
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if let Diff::Gzip { decoder, error } = &mut self.diff {
            // A broken stream is reported after the digest check, which
            // decides whether the bytes or the media type are to blame.
            if error.is_none() {
                if let Err(e) = decoder.write_all(chunk) {
                    *error = Some(e.to_string());
                }
            }
        }
    }

    pub fn finish(self) -> Verified {
        let digest = Digest::from_hasher(self.blob);
        let diff_id = match self.diff {
            Diff::None => None,
            Diff::SameAsBlob => Some(Ok(digest.clone())),
            Diff::Gzip { mut decoder, error } => {
                let error = match error {
                    Some(e) => Some(e),
                    None => decoder.try_finish().err().map(|e| e.to_string()),
                };
                Some(match error {
                    Some(e) => Err(gzip_problem(&self.head, &e)),
                    None => match decoder.finish() {
                        Ok(w) => Ok(Digest::from_hasher(w.hash)),
                        Err(e) => Err(gzip_problem(&self.head, &e.to_string())),
                    },
                })
            }
        };
        Verified {
            digest,
            size: self.size,
            diff_id,
        }
    }
}

/// Name what the bytes look like, so "declared gzip, got zstd" is obvious.
fn gzip_problem(head: &[u8], err: &str) -> String {
    let magic = if head.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if head.is_empty() {
        "an empty blob"
    } else {
        "neither gzip nor zstd (plain tar?)"
    };
    format!("declared gzip but the bytes are {magic}: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_GZ: [u8; 32] = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60,
        0x14, 0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04,
        0x00, 0x00,
    ];

    #[test]
    fn empty_gzip_layer_constants() {
        let mut h = BlobHasher::new(Some(LayerEncoding::Gzip));
        for b in EMPTY_GZ.chunks(3) {
            h.update(b);
        }
        let v = h.finish();
        assert_eq!(
            v.digest.to_string(),
            "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
        );
        assert_eq!(
            v.diff_id.unwrap().unwrap().to_string(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }

    #[test]
    fn multi_member_gzip_and_wrong_magic() {
        use flate2::{write::GzEncoder, Compression};
        let mut both = Vec::new();
        for part in [&b"hello "[..], &b"world"[..]] {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(part).unwrap();
            both.extend(e.finish().unwrap());
        }
        let mut h = BlobHasher::new(Some(LayerEncoding::Gzip));
        h.update(&both);
        assert_eq!(
            h.finish().diff_id.unwrap().unwrap(),
            Digest::of(b"hello world")
        );

        let mut h = BlobHasher::new(Some(LayerEncoding::Gzip));
        h.update(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
        let err = h.finish().diff_id.unwrap().unwrap_err();
        assert!(err.contains("zstd"), "{err}");
    }
}

//! One streaming pass per blob: sha256 of the bytes as sent and, for layers,
//! the diffID (sha256 of the uncompressed tar). Memory is constant whatever
//! the layer size: each chunk is hashed, inflated and dropped. The first
//! bytes are kept to tell a layer whose media type lies about its encoding.

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
        decoder: Box<MultiGzDecoder<HashWriter>>,
        error: Option<String>,
    },
    /// Every frame of the stream is decoded, as for multi-member gzip.
    Zstd {
        /// None only when libzstd could not start one (out of memory).
        decoder: Option<Box<zstd::stream::write::Decoder<'static, HashWriter>>>,
        error: Option<String>,
    },
}

/// Bytes kept from the start of a blob: enough for the tar magic at 257.
const HEAD: usize = 262;

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
                decoder: Box::new(MultiGzDecoder::new(HashWriter::new())),
                error: None,
            },
            Some(LayerEncoding::Zstd) => match zstd::stream::write::Decoder::new(HashWriter::new())
            {
                Ok(d) => Diff::Zstd {
                    decoder: Some(Box::new(d)),
                    error: None,
                },
                Err(e) => Diff::Zstd {
                    decoder: None,
                    error: Some(format!("cannot start a zstd decoder: {e}")),
                },
            },
        };
        BlobHasher {
            blob: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(HEAD),
            diff,
        }
    }

    /// A fresh hasher computing the same things.
    pub fn new_like(other: &BlobHasher) -> BlobHasher {
        let encoding = match other.diff {
            Diff::None => None,
            Diff::SameAsBlob => Some(LayerEncoding::Plain),
            Diff::Gzip { .. } => Some(LayerEncoding::Gzip),
            Diff::Zstd { .. } => Some(LayerEncoding::Zstd),
        };
        BlobHasher::new(encoding)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.blob.update(chunk);
        self.size += chunk.len() as u64;
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        // A broken stream is reported after the digest check, which
        // decides whether the bytes or the media type are to blame.
        let (written, error) = match &mut self.diff {
            Diff::Gzip { decoder, error } => {
                (error.is_none().then(|| decoder.write_all(chunk)), error)
            }
            Diff::Zstd {
                decoder: Some(decoder),
                error,
            } => (error.is_none().then(|| decoder.write_all(chunk)), error),
            Diff::Zstd { decoder: None, .. } => return,
            Diff::None | Diff::SameAsBlob => return,
        };
        if let Some(Err(e)) = written {
            *error = Some(e.to_string());
        }
    }

    pub fn finish(self) -> Verified {
        let digest = Digest::from_hasher(self.blob);
        let head = &self.head;
        let diff_id = match self.diff {
            Diff::None => None,
            Diff::SameAsBlob => Some(match magic(head) {
                m @ (Magic::Gzip | Magic::Zstd) => Err(problem("uncompressed tar", m, None)),
                _ => Ok(digest.clone()),
            }),
            Diff::Gzip { mut decoder, error } => {
                let error = error.or_else(|| decoder.try_finish().err().map(|e| e.to_string()));
                Some(match error {
                    Some(e) => Err(problem("gzip", magic(head), Some(&e))),
                    None => match decoder.finish() {
                        Ok(w) => Ok(Digest::from_hasher(w.hash)),
                        Err(e) => Err(problem("gzip", magic(head), Some(&e.to_string()))),
                    },
                })
            }
            Diff::Zstd { decoder, error } => Some(match (error, decoder) {
                (Some(e), _) => Err(problem("zstd", magic(head), Some(&e))),
                (None, None) => Err("no zstd decoder".to_string()),
                (None, Some(d)) => match d.finish() {
                    Ok(w) => Ok(Digest::from_hasher(w.hash)),
                    Err(e) => Err(problem("zstd", magic(head), Some(&e.to_string()))),
                },
            }),
        };
        Verified {
            digest,
            size: self.size,
            diff_id,
        }
    }
}

/// What the first bytes of a blob say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Magic {
    Gzip,
    Zstd,
    Tar,
    Empty,
    Unknown,
}

fn magic(head: &[u8]) -> Magic {
    if head.starts_with(&[0x1f, 0x8b]) {
        Magic::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Magic::Zstd
    } else if head.get(257..262) == Some(b"ustar") {
        Magic::Tar
    } else if head.is_empty() {
        Magic::Empty
    } else {
        Magic::Unknown
    }
}

/// Name what the bytes look like, so "declared gzip, got zstd" is obvious.
fn problem(declared: &str, found: Magic, err: Option<&str>) -> String {
    let found = match found {
        Magic::Gzip => "gzip (magic 1f 8b)",
        Magic::Zstd => "zstd (magic 28 b5 2f fd)",
        Magic::Tar => "an uncompressed tar (ustar at 257)",
        Magic::Empty => "an empty blob",
        Magic::Unknown => "neither gzip, zstd nor tar",
    };
    match err {
        Some(e) => format!("declared {declared} but the bytes are {found}: {e}"),
        None => format!("declared {declared} but the bytes are {found}"),
    }
}

impl HashWriter {
    fn new() -> HashWriter {
        HashWriter {
            hash: Sha256::new(),
            bytes: 0,
        }
    }
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

    #[test]
    fn s15_zstd_frames_and_declared_type_lies() {
        let tar = vec![7u8; 3000];
        let mut both = zstd::bulk::compress(&tar[..1000], 3).unwrap();
        both.extend(zstd::bulk::compress(&tar[1000..], 3).unwrap());
        let mut h = BlobHasher::new(Some(LayerEncoding::Zstd));
        for c in both.chunks(7) {
            h.update(c);
        }
        assert_eq!(h.finish().diff_id.unwrap().unwrap(), Digest::of(&tar));

        // A truncated frame is not a complete layer.
        let mut h = BlobHasher::new(Some(LayerEncoding::Zstd));
        h.update(&both[..both.len() - 3]);
        assert!(h.finish().diff_id.unwrap().is_err());

        let mut h = BlobHasher::new(Some(LayerEncoding::Zstd));
        h.update(&EMPTY_GZ);
        let err = h.finish().diff_id.unwrap().unwrap_err();
        assert!(
            err.contains("declared zstd") && err.contains("gzip (magic 1f 8b)"),
            "{err}"
        );

        let mut h = BlobHasher::new(Some(LayerEncoding::Plain));
        h.update(&both);
        let err = h.finish().diff_id.unwrap().unwrap_err();
        assert!(
            err.contains("declared uncompressed tar") && err.contains("zstd"),
            "{err}"
        );

        let mut plain = vec![0u8; 1024];
        plain[257..262].copy_from_slice(b"ustar");
        let mut h = BlobHasher::new(Some(LayerEncoding::Gzip));
        h.update(&plain);
        let err = h.finish().diff_id.unwrap().unwrap_err();
        assert!(err.contains("an uncompressed tar (ustar at 257)"), "{err}");
    }
}

//! One streaming pass per blob: the digest of the bytes as sent and, for
//! layers, the diffID (the digest of the uncompressed tar), each in the
//! algorithm its own digest names. Memory is constant whatever the layer
//! size: each chunk is hashed, inflated and dropped. The first bytes are
//! kept to tell a layer whose media type lies about its encoding.
//!
//! Inflating is the largest cost of a pull (bench/profile.sh measures each
//! stage), and the one a hostile registry can blow up: `limits.rs` caps it
//! per layer. Gzip goes through zlib-rs by default (`flate.rs`); the `isal`
//! feature uses Intel ISA-L instead (`igzip.rs`), which inflated about 15%
//! faster on an AMD EPYC with AVX-512, and needs the system libisal. Both
//! take every member of a multi-member stream and reject a truncated or
//! corrupt one. Zstd goes through libzstd (`unzstd.rs`).

#[cfg(not(feature = "isal"))]
mod flate;
#[cfg(feature = "isal")]
mod igzip;
mod limits;
#[cfg(test)]
mod tests;
mod unzstd;

pub use limits::{Cap, InflateLimits, Inflated, OverLimit, RATIO_FLOOR};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::manifest::LayerEncoding;
#[cfg(not(feature = "isal"))]
use flate::Gunzip;
#[cfg(feature = "isal")]
use igzip::Gunzip;
use limits::TarSink;
use unzstd::Unzstd;

/// How to check a layer: its encoding, the algorithm of the diffID the
/// config lists, and how far it may inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiffCheck {
    pub encoding: LayerEncoding,
    pub algorithm: Algorithm,
    pub limits: InflateLimits,
}

enum Decoder {
    Gzip(Box<Gunzip>),
    Zstd(Unzstd),
}

impl Decoder {
    fn write_all(&mut self, chunk: &[u8]) -> Result<(), String> {
        match self {
            Decoder::Gzip(d) => d.write_all(chunk),
            Decoder::Zstd(d) => d.write_all(chunk),
        }
    }

    fn sink(&self) -> &TarSink {
        match self {
            Decoder::Gzip(d) => d.sink(),
            Decoder::Zstd(d) => d.sink(),
        }
    }

    fn end(&mut self) -> Result<(), String> {
        match self {
            Decoder::Gzip(d) => d.end(),
            Decoder::Zstd(d) => d.end(),
        }
    }

    fn finish(self) -> Result<TarSink, String> {
        match self {
            Decoder::Gzip(d) => d.finish(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

enum Diff {
    /// Config and manifests, or diffID checking turned off.
    None,
    /// An uncompressed tar: the diffID is the blob digest, hashed again
    /// only when the config uses another algorithm for it.
    Plain(Option<Hasher>),
    Inflate {
        /// None only when libzstd could not start one (out of memory).
        decoder: Option<Decoder>,
        /// The first failure; nothing is inflated after it.
        error: Option<String>,
        declared: &'static str,
    },
}

/// Bytes kept from the start of a blob: enough for the tar magic at 257.
const HEAD: usize = 262;

pub struct BlobHasher {
    algorithm: Algorithm,
    check: Option<DiffCheck>,
    blob: Hasher,
    size: u64,
    head: Vec<u8>,
    diff: Diff,
}

/// What one pass found.
pub struct Verified {
    pub digest: Digest,
    pub size: u64,
    /// None when not computed (or inflating stopped at a limit); Err when
    /// the bytes are not what the media type says (the digest may still be
    /// right).
    pub diff_id: Option<Result<Digest, String>>,
    /// How far a compressed layer inflated.
    pub inflated: Option<Inflated>,
    /// Inflating stopped at a cap: the layer must not be used.
    pub over_limit: Option<OverLimit>,
}

impl BlobHasher {
    /// Hash a blob in `algorithm` (its digest's); with `check`, compute the
    /// diffID of a layer too.
    pub fn new(algorithm: Algorithm, check: Option<DiffCheck>) -> BlobHasher {
        let diff = match check {
            None => Diff::None,
            Some(c) => {
                let sink = || TarSink::new(c.algorithm.hasher(), c.limits);
                match c.encoding {
                    LayerEncoding::Plain => {
                        Diff::Plain((c.algorithm != algorithm).then(|| c.algorithm.hasher()))
                    }
                    LayerEncoding::Gzip => Diff::Inflate {
                        decoder: Some(Decoder::Gzip(Box::new(Gunzip::new(sink())))),
                        error: None,
                        declared: "gzip",
                    },
                    LayerEncoding::Zstd => match Unzstd::new(sink()) {
                        Ok(d) => Diff::Inflate {
                            decoder: Some(Decoder::Zstd(d)),
                            error: None,
                            declared: "zstd",
                        },
                        Err(e) => Diff::Inflate {
                            decoder: None,
                            error: Some(e),
                            declared: "zstd",
                        },
                    },
                }
            }
        };
        BlobHasher {
            algorithm,
            check,
            blob: algorithm.hasher(),
            size: 0,
            head: Vec::with_capacity(HEAD),
            diff,
        }
    }

    /// A fresh hasher computing the same things.
    pub fn new_like(other: &BlobHasher) -> BlobHasher {
        BlobHasher::new(other.algorithm, other.check)
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
        match &mut self.diff {
            Diff::Inflate {
                decoder: Some(d),
                error: error @ None,
                ..
            } => {
                if let Err(e) = d.write_all(chunk) {
                    *error = Some(e);
                }
            }
            Diff::Plain(Some(h)) => h.update(chunk),
            _ => {}
        }
    }

    /// Inflating passed a cap: stop feeding this hasher.
    pub fn over_limit(&self) -> Option<&OverLimit> {
        match &self.diff {
            Diff::Inflate {
                decoder: Some(d), ..
            } => d.sink().over(),
            _ => None,
        }
    }

    pub fn finish(self) -> Verified {
        let digest = self.blob.finish();
        let head = &self.head;
        let mut verified = Verified {
            digest,
            size: self.size,
            diff_id: None,
            inflated: None,
            over_limit: None,
        };
        match self.diff {
            Diff::None => {}
            Diff::Plain(hash) => {
                verified.diff_id = Some(match magic(head) {
                    m @ (Magic::Gzip | Magic::Zstd) => Err(problem("uncompressed tar", m, None)),
                    _ => Ok(hash.map_or_else(|| verified.digest.clone(), Hasher::finish)),
                })
            }
            Diff::Inflate {
                decoder,
                error,
                declared,
            } => {
                let ended = match (decoder, error) {
                    (Some(mut d), None) => {
                        // Ending the stream hashes what the decoder still
                        // holds, which may pass a cap too.
                        let r = d.end();
                        verified.inflated = Some(d.sink().seen());
                        verified.over_limit = d.sink().over().copied();
                        r.and_then(|()| d.finish())
                    }
                    (Some(d), Some(e)) => {
                        verified.inflated = Some(d.sink().seen());
                        verified.over_limit = d.sink().over().copied();
                        Err(e)
                    }
                    (None, e) => Err(e.unwrap_or_default()),
                };
                if verified.over_limit.is_none() {
                    verified.diff_id = Some(match ended {
                        Ok(sink) => Ok(sink.finish()),
                        Err(e) => Err(problem(declared, magic(head), Some(&e))),
                    });
                }
            }
        }
        verified
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

/// Name what the bytes look like, so "declared gzip, got zstd" is obvious;
/// when they are what was declared, the stream itself is broken.
fn problem(declared: &str, found: Magic, err: Option<&str>) -> String {
    if let (("zstd", Magic::Zstd), Some(e)) = ((declared, &found), err) {
        if e.contains("too much memory") {
            return format!(
                "its zstd frames need a window larger than the decoder's 128 MiB limit \
                 (made with zstd --long?): {e}"
            );
        }
    }
    if let (("gzip", Magic::Gzip) | ("zstd", Magic::Zstd), Some(e)) = ((declared, &found), err) {
        return format!("its {declared} stream is corrupt or has trailing data: {e}");
    }
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

//! Caps on inflating a layer, against gzip and zstd bombs: a few MiB that
//! inflate to many GiB cost tens of seconds of CPU for nothing. Inflating
//! stops as soon as a cap is passed, so the CPU spent stays bounded by the
//! bytes downloaded.

use crate::digest::{Digest, Hasher};
use crate::error::{Error, ErrorKind};
use std::io::Write;

/// Below this many inflated bytes the ratio is not checked: small layers
/// often have huge ratios (Docker's 32-byte empty layer inflates to 1 KiB,
/// a layer of one empty file even further) and cost nothing to inflate.
pub const RATIO_FLOOR: u64 = 256 << 20;

/// How far one layer may inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InflateLimits {
    /// Inflated bytes (max_layer_uncompressed_bytes).
    pub max_bytes: u64,
    /// Inflated bytes per compressed byte, past RATIO_FLOOR
    /// (max_compression_ratio).
    pub max_ratio: u64,
}

impl Default for InflateLimits {
    /// 64 GiB is beyond any real layer (Docker Hub's largest images are a
    /// few tens of GiB in all) yet bounds a bomb to about a minute of CPU.
    ///
    /// No ratio cap by default: a layer holding a zero-filled file (a blank
    /// VM disk, a preallocated swap file) is a run of zeros, and deflate
    /// packs that at its limit of about 1032:1 (zstd at 30000:1), exactly as
    /// a bomb does; no ratio tells them apart, and refusing disk images is
    /// worse for a VM host than inflating a bomb up to the size cap (CPU
    /// only: nothing inflated is written). Hosts pulling from registries
    /// they do not trust set max_compression_ratio (100 stops any bomb
    /// after 256 MiB; layers without big zero runs sit at 2-10:1).
    fn default() -> InflateLimits {
        InflateLimits {
            max_bytes: 64 << 30,
            max_ratio: u64::MAX,
        }
    }
}

// Constructors are functions, not associated consts: cbindgen would put
// the type in the C header for those.
impl InflateLimits {
    /// No cap at all (benchmarks, and checks that must not stop early).
    pub fn unlimited() -> InflateLimits {
        InflateLimits {
            max_bytes: u64::MAX,
            max_ratio: u64::MAX,
        }
    }

    /// Whether `self` lets through something `other` stops.
    pub fn looser_than(&self, other: &InflateLimits) -> bool {
        self.max_bytes > other.max_bytes || self.max_ratio > other.max_ratio
    }

    /// Whether a layer that inflated as `seen` says passes these limits.
    pub fn check(&self, seen: &Inflated) -> Option<OverLimit> {
        let (peak_out, peak_in) = seen.peak;
        if seen.bytes > self.max_bytes {
            Some(OverLimit {
                cap: Cap::Size,
                limit: self.max_bytes,
                inflated: seen.bytes,
                compressed: seen.compressed,
            })
        } else if peak_out > RATIO_FLOOR && over_ratio(peak_out, peak_in, self.max_ratio) {
            Some(OverLimit {
                cap: Cap::Ratio,
                limit: self.max_ratio,
                inflated: peak_out,
                compressed: peak_in,
            })
        } else {
            None
        }
    }
}

fn over_ratio(out: u64, input: u64, max: u64) -> bool {
    out as u128 > input as u128 * max as u128
}

/// How far a layer inflated, for pulls that share its transfer but not its
/// limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflated {
    pub bytes: u64,
    /// Compressed bytes fed in.
    pub compressed: u64,
    /// The (inflated, compressed) pair with the highest ratio seen past
    /// RATIO_FLOOR, or (0, 0).
    pub peak: (u64, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    Size,
    Ratio,
}

/// Inflating passed a cap: where it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub cap: Cap,
    pub limit: u64,
    pub inflated: u64,
    pub compressed: u64,
}

impl OverLimit {
    /// The pull's error. Not transient: the same bytes would do the same
    /// again, so nothing is retried or downloaded twice.
    pub fn error(&self, layer: &Digest) -> Error {
        let (what, option) = match self.cap {
            Cap::Size => (
                format!("more than {} bytes", self.limit),
                "max_layer_uncompressed_bytes",
            ),
            Cap::Ratio => (
                format!(
                    "a ratio of {}:1, over {}:1",
                    self.inflated / self.compressed.max(1),
                    self.limit
                ),
                "max_compression_ratio",
            ),
        };
        Error::new(
            ErrorKind::Registry,
            format!(
                "layer {layer} inflates to {what} (stopped after inflating {} bytes from {} \
                 compressed bytes; a decompression bomb?): raise {option} to pull it",
                self.inflated, self.compressed
            ),
        )
    }
}

/// Where inflated bytes go: the diffID hash, counted and held to the
/// limits. Once over a limit every write fails, which makes the decoder
/// stop at once.
pub(super) struct TarSink {
    hash: Hasher,
    limits: InflateLimits,
    seen: Inflated,
    over: Option<OverLimit>,
}

impl TarSink {
    pub(super) fn new(hash: Hasher, limits: InflateLimits) -> TarSink {
        TarSink {
            hash,
            limits,
            seen: Inflated::default(),
            over: None,
        }
    }

    /// Count compressed bytes the decoder has consumed. Decoders hand out
    /// the output of input they consumed earlier (or in the same call, once
    /// counted), so the ratio seen is never above the true one, and below
    /// it only by the little output a decoder holds back (32 KiB or so):
    /// this matters because deflate's ceiling is only 3% over the default.
    pub(super) fn feed(&mut self, n: usize) {
        self.seen.compressed += n as u64;
    }

    pub(super) fn over(&self) -> Option<&OverLimit> {
        self.over.as_ref()
    }

    pub(super) fn seen(&self) -> Inflated {
        self.seen
    }

    pub(super) fn finish(self) -> Digest {
        self.hash.finish()
    }
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.over.is_none() {
            let s = &mut self.seen;
            s.bytes += buf.len() as u64;
            let (out, input) = s.peak;
            let higher = s.bytes > RATIO_FLOOR
                && s.bytes as u128 * input as u128 >= out as u128 * s.compressed as u128;
            if higher {
                s.peak = (s.bytes, s.compressed);
            }
            self.over = self.limits.check(s);
        }
        if self.over.is_some() {
            return Err(std::io::Error::other("inflate limit passed"));
        }
        self.hash.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Write `chunk` whole through a streaming `decoder` whose sink is a
/// `TarSink`, telling the sink how much input each write consumed, so the
/// ratio it checks is exact.
pub(super) fn write_through<D: Write>(
    decoder: &mut D,
    sink: impl Fn(&mut D) -> &mut TarSink,
    mut chunk: &[u8],
    format: &str,
) -> Result<(), String> {
    while !chunk.is_empty() {
        let n = decoder.write(chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{format} stream takes no more input"));
        }
        sink(decoder).feed(n);
        chunk = &chunk[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn sink(max_bytes: u64, max_ratio: u64) -> TarSink {
        let limits = InflateLimits {
            max_bytes,
            max_ratio,
        };
        TarSink::new(Algorithm::Sha256.hasher(), limits)
    }

    #[test]
    fn size_cap_stops_writes() {
        let mut s = sink(10, u64::MAX);
        s.feed(1);
        assert!(s.write_all(&[0; 10]).is_ok());
        assert!(s.write_all(&[0]).is_err());
        assert!(s.write_all(&[0]).is_err(), "stays stopped");
        let o = s.over().copied().unwrap();
        assert_eq!((o.cap, o.limit, o.inflated), (Cap::Size, 10, 11));
    }

    #[test]
    fn ratio_is_checked_only_past_the_floor() {
        // Uncapped, to record the peak ratio, which is what another pull's
        // tighter limit is held to.
        let mut s = sink(u64::MAX, u64::MAX);
        s.feed(256 << 10);
        let block = vec![0u8; 1 << 20];
        for _ in 0..256 {
            s.write_all(&block).unwrap(); // 1024:1, not past the floor yet
        }
        assert_eq!(s.seen().peak, (0, 0));
        assert!(InflateLimits::default().check(&s.seen()).is_none());
        s.write_all(&block).unwrap();
        s.feed(256 << 20);
        s.write_all(&block).unwrap();
        let seen = s.seen();
        assert_eq!(seen.peak, (257 << 20, 256 << 10));
        assert!(InflateLimits {
            max_ratio: 1000,
            ..InflateLimits::unlimited()
        }
        .check(&seen)
        .is_some_and(|o| o.cap == Cap::Ratio));
        assert!(InflateLimits {
            max_ratio: 1028,
            ..InflateLimits::unlimited()
        }
        .check(&seen)
        .is_none());
        assert!(
            InflateLimits::default().check(&seen).is_none(),
            "no ratio cap unless asked for"
        );
        let e = InflateLimits {
            max_ratio: 1000,
            ..InflateLimits::default()
        }
        .check(&seen)
        .unwrap()
        .error(&Digest::of(b""));
        assert!(
            e.message.contains("ratio of 1028:1, over 1000:1")
                && e.message.contains("max_compression_ratio"),
            "{}",
            e.message
        );
    }
}

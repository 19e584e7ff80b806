//! Benchmark images: seeded layers that compress about as well as real ones.
//!
//! Real image layers shrink about 2.6 times under gzip. A mix of log-like text lines (which
//! compress well) and blocks of random bytes (which do not) lands near that ratio, so transfer
//! and decompression costs resemble a real pull.

use crate::image::tarball::TarWriter;
use crate::image::{Compression, Format, ImageSpec, Layer};
use crate::rng::Rng;

/// Files in a bench layer hold at most this much; a layer has as many as its size needs.
const FILE_BYTES: usize = 1 << 20;
/// Content comes in blocks of this size, each either text or random.
const BLOCK: usize = 4096;
/// Out of 1000 blocks, this many are random bytes; tuned for a gzip ratio near 2.6
/// (measured 2.60 on a 64 MiB layer; 180 gave 2.42).
const RANDOM_PER_MILLE: u64 = 150;

const WORDS: [&str; 32] = [
    "layer", "blob", "digest", "manifest", "config", "pull", "push", "registry", "index",
    "platform", "linux", "amd64", "arm64", "token", "retry", "range", "bytes", "chunk", "gzip",
    "tar", "verify", "commit", "rename", "fsync", "queue", "worker", "done", "start", "error",
    "warn", "info", "debug",
];

/// Layer `index` of a bench image: a gzip tar (level 6) of files holding `content_bytes`
/// bytes in total. Same arguments, same digest.
pub fn bench_layer(seed: u64, index: u32, content_bytes: u64) -> Layer {
    let mut rng = Rng::new(seed ^ (u64::from(index) << 32) ^ 0x6265_6e63_6800);
    let mut tar = TarWriter::new();
    let mut left = content_bytes as usize;
    let mut n = 0;
    while left > 0 {
        let len = left.min(FILE_BYTES);
        tar.file(
            &format!("bench/{index}/file-{n:05}.dat"),
            false,
            &mixed_bytes(&mut rng, len),
        );
        left -= len;
        n += 1;
    }
    Layer::from_tar(tar.finish(), Compression::Gzip)
}

/// A linux/amd64 image of `layers` bench layers of `layer_bytes` content each.
pub fn bench_image(seed: u64, layers: u32, layer_bytes: u64, format: Format) -> ImageSpec {
    let all = (0..layers)
        .map(|i| bench_layer(seed, i, layer_bytes))
        .collect();
    ImageSpec::new(all).format(format)
}

/// Like [`bench_image`], but the first `base.1` layers come from seed `base.0`: images
/// made with the same base and different seeds share those layers (and nothing else).
pub fn bench_image_on_base(
    base: (u64, u32),
    seed: u64,
    layers: u32,
    layer_bytes: u64,
    format: Format,
) -> ImageSpec {
    let (base_seed, base_layers) = base;
    let all = (0..layers)
        .map(|i| {
            let s = if i < base_layers { base_seed } else { seed };
            bench_layer(s, i, layer_bytes)
        })
        .collect();
    ImageSpec::new(all).format(format)
}

/// `len` bytes of text blocks and random blocks in a seeded order.
fn mixed_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + BLOCK);
    let mut block = vec![0u8; BLOCK];
    while out.len() < len {
        if rng.below(1000) < RANDOM_PER_MILLE {
            rng.fill(&mut block);
            out.extend_from_slice(&block);
        } else {
            let end = out.len() + BLOCK;
            while out.len() < end {
                text_line(rng, &mut out);
            }
        }
    }
    out.truncate(len);
    out
}

/// One log-like line: a counter, a level and a few words with numbers.
fn text_line(rng: &mut Rng, out: &mut Vec<u8>) {
    let words = 4 + rng.below(8);
    // Small numbers keep the text about 4x compressible, like real text files.
    let mut line = format!(
        "{:08} {}",
        rng.below(1000),
        WORDS[rng.below(3) as usize + 28]
    );
    for _ in 0..words {
        line.push(' ');
        line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
        if rng.below(4) == 0 {
            line.push_str(&format!("={}", rng.below(100)));
        }
    }
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn ratio_is_near_real_layers() {
        let layer = super::bench_layer(1, 0, 1 << 20);
        let ratio = (1u64 << 20) as f64 / layer.size() as f64;
        assert!((2.4..2.8).contains(&ratio), "gzip ratio {ratio:.2}");
        assert_eq!(layer.digest(), super::bench_layer(1, 0, 1 << 20).digest());
    }

    #[test]
    fn images_on_one_base_share_only_the_base() {
        use crate::image::Format;
        let digests = |seed| -> Vec<String> {
            super::bench_image_on_base((7, 2), seed, 3, 4096, Format::Docker)
                .layers
                .iter()
                .map(|l| l.digest().to_string())
                .collect()
        };
        let (a, b) = (digests(1), digests(2));
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
    }
}

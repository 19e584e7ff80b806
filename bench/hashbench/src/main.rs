//! hashbench MODE [--chunk BYTES] [--repeat N] FILE...
//!
//! Reads each gzip layer FILE into memory, then times one stage over all of
//! them, fed in chunks as the download sink feeds them:
//!   hash      BlobHasher for a gzip layer: blob sha256 + inflate + tar sha256
//!   digest    BlobHasher without diffID: blob sha256 only
//!   inflate   flate2 MultiGzDecoder into a sink (zlib-rs, or zlib-ng with
//!             --features zlib-ng): inflate alone
//!   tar-sha   sha256 of the inflated tar (inflated beforehand, not timed)
//! Prints bytes in and out, wall and CPU seconds, and MiB/s of compressed
//! input per CPU second, the figure the stage limits use.

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::time::Instant;
use vicpull::digest::Algorithm;
use vicpull::manifest::LayerEncoding;
use vicpull::verify::{BlobHasher, DiffCheck, InflateLimits};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = args
        .split_first()
        .expect("usage: hashbench MODE [--chunk N] FILE...");
    let mut chunk = 64 * 1024;
    let mut repeat = 1;
    let mut files = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--chunk" => chunk = it.next().and_then(|v| v.parse().ok()).expect("--chunk N"),
            "--repeat" => repeat = it.next().and_then(|v| v.parse().ok()).expect("--repeat N"),
            f => files.push(std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"))),
        }
    }
    let compressed: u64 = files.iter().map(|f| f.len() as u64).sum();
    let tars: Vec<Vec<u8>> = if mode == "tar-sha" {
        files.iter().map(|f| gunzip(f)).collect()
    } else {
        Vec::new()
    };

    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut out_bytes = 0u64;
    for _ in 0..repeat {
        for (i, f) in files.iter().enumerate() {
            out_bytes += match mode.as_str() {
                "hash" => hash(f, chunk, Some(LayerEncoding::Gzip)),
                "digest" => hash(f, chunk, None),
                "inflate" => inflate(f, chunk),
                "tar-sha" => sha(&tars[i], chunk),
                m => panic!("unknown mode {m}"),
            };
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mib = (compressed * repeat) as f64 / 1048576.0;
    println!(
        "{mode}: {:.1} MiB in, {:.1} MiB out, {wall:.3} s wall, {cpu:.3} s cpu, \
         {:.0} MiB/s of compressed input per cpu second",
        mib,
        out_bytes as f64 / 1048576.0,
        mib / cpu
    );
}

/// Bytes of tar the diffID covered (the blob size when there is none).
fn hash(blob: &[u8], chunk: usize, encoding: Option<LayerEncoding>) -> u64 {
    let check = encoding.map(|encoding| DiffCheck {
        encoding,
        algorithm: Algorithm::Sha256,
        limits: InflateLimits::default(),
    });
    let mut h = BlobHasher::new(Algorithm::Sha256, check);
    for c in blob.chunks(chunk) {
        h.update(c);
    }
    let v = h.finish();
    match v.diff_id {
        Some(Ok(d)) => {
            eprintln!("{} diffID {d}", v.digest);
            // The same count as the inflate mode, for the MiB out column.
            tar_len(blob)
        }
        Some(Err(e)) => panic!("{}: {e}", v.digest),
        None => v.size,
    }
}

fn inflate(blob: &[u8], chunk: usize) -> u64 {
    let mut d = flate2::write::MultiGzDecoder::new(Count(0));
    for c in blob.chunks(chunk) {
        d.write_all(c).expect("inflate");
    }
    d.finish().expect("inflate").0
}

fn sha(tar: &[u8], chunk: usize) -> u64 {
    let mut h = Sha256::new();
    for c in tar.chunks(chunk) {
        h.update(c);
    }
    std::hint::black_box(h.finalize());
    tar.len() as u64
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut d = flate2::write::MultiGzDecoder::new(Vec::new());
    d.write_all(blob).expect("inflate");
    d.finish().expect("inflate")
}

/// The gzip trailer's ISIZE: the tar length mod 2^32 (layers here are smaller).
fn tar_len(blob: &[u8]) -> u64 {
    let n = blob.len();
    u64::from(u32::from_le_bytes(blob[n - 4..].try_into().unwrap()))
}

struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

//! One streaming pass per blob: sha256 of the bytes as sent and, for layers,
//! the diffID (sha256 of the uncompressed tar). Memory is constant whatever
//! the layer size: each chunk is hashed, inflated and dropped. The first
//! bytes are kept to tell a layer whose media type lies about its encoding.
//!
//! Inflating is the largest cost of a pull (bench/profile.sh measures each
//! stage). Gzip goes through zlib-rs by default; the `isal` feature uses
//! Intel ISA-L instead, which inflated about 15% faster on an AMD EPYC with
//! AVX-512, and needs the system libisal. Both take every member of a
//! multi-member stream and reject a truncated or corrupt one.

use crate::digest::Digest;
use crate::manifest::LayerEncoding;
use sha2::{Digest as _, Sha256};
use std::io::Write;

#[cfg(not(feature = "isal"))]
use flate::Gunzip;
#[cfg(feature = "isal")]
use igzip::Gunzip;

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
        decoder: Box<Gunzip>,
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
                decoder: Box::new(Gunzip::new(HashWriter::new())),
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
            } => (
                error
                    .is_none()
                    .then(|| decoder.write_all(chunk).map_err(|e| e.to_string())),
                error,
            ),
            Diff::Zstd { decoder: None, .. } => return,
            Diff::None | Diff::SameAsBlob => return,
        };
        if let Some(Err(e)) = written {
            *error = Some(e);
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
            Diff::Gzip { decoder, error } => {
                Some(match error.map_or_else(|| decoder.finish(), Err) {
                    Ok(w) => Ok(Digest::from_hasher(w.hash)),
                    Err(e) => Err(problem("gzip", magic(head), Some(&e))),
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

/// Gzip through flate2 and zlib-rs: pure Rust, the default.
#[cfg(not(feature = "isal"))]
mod flate {
    use super::HashWriter;
    use flate2::write::MultiGzDecoder;
    use std::io::Write;

    pub(super) struct Gunzip(MultiGzDecoder<HashWriter>);

    impl Gunzip {
        pub(super) fn new(sink: HashWriter) -> Gunzip {
            Gunzip(MultiGzDecoder::new(sink))
        }

        pub(super) fn write_all(&mut self, chunk: &[u8]) -> Result<(), String> {
            self.0.write_all(chunk).map_err(|e| e.to_string())
        }

        /// The sink, once the last member has ended cleanly.
        pub(super) fn finish(self) -> Result<HashWriter, String> {
            self.0.finish().map_err(|e| e.to_string())
        }
    }
}

/// Gzip through Intel ISA-L's stateful inflate (igzip), for the `isal`
/// feature. isa-l does the deflate blocks, the header and the trailer
/// (CRC-32 and length); this side chains the members of a multi-member
/// stream, as MultiGzDecoder does, and keeps every call bounded.
///
/// isal-sys's bindings were generated from isa-l 2.31; Debian 12's 2.30 has
/// the same inflate_state layout (checked field by field with offsetof).
#[cfg(feature = "isal")]
mod igzip {
    use super::HashWriter;
    use isal_sys::igzip_lib as isal;
    use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
    use std::io::Write as _;
    use std::ptr;

    /// Inflated bytes per call. isa-l decodes straight into a buffer this
    /// big, and copies only its 32 KiB window out of it after each call.
    const OUT: usize = 128 * 1024;

    pub(super) struct Gunzip {
        /// About 85 KiB (window and tables): on the heap, never moved.
        state: Box<isal::inflate_state>,
        /// The header of the current member, parsed here rather than by
        /// isal_inflate: that one forgets the header's flags when the header
        /// is split between two chunks, and then misreads FEXTRA, FNAME,
        /// FCOMMENT or FHCRC (gzip_header_fields_split_anywhere shows it).
        header: isal::isal_gzip_header,
        out: Box<[u8]>,
        sink: HashWriter,
    }

    // SAFETY: the raw pointers in `state` and `header` point into nothing
    // between calls (next_in and next_out are set before each isal_inflate
    // and cleared after it; the header's name buffers are always null), and
    // isa-l keeps no thread-local state, so the decoder may move to another
    // thread. It is never shared: every method takes &mut self.
    unsafe impl Send for Gunzip {}

    impl Gunzip {
        pub(super) fn new(sink: HashWriter) -> Gunzip {
            let layout = Layout::new::<isal::inflate_state>();
            // SAFETY: the layout is not zero-sized; zeroed memory is a valid
            // inflate_state (integers, arrays and raw pointers), which
            // isal_inflate_init then sets up; the Box frees it with the same
            // layout.
            let mut state = unsafe {
                let p = alloc_zeroed(layout).cast::<isal::inflate_state>();
                if p.is_null() {
                    handle_alloc_error(layout);
                }
                isal::isal_inflate_init(p);
                Box::from_raw(p)
            };
            state.crc_flag = isal::ISAL_GZIP;
            Gunzip {
                state,
                header: new_header(),
                out: vec![0; OUT].into_boxed_slice(),
                sink,
            }
        }

        pub(super) fn write_all(&mut self, mut chunk: &[u8]) -> Result<(), String> {
            while !chunk.is_empty() {
                if self.member_ended() {
                    // The bytes after a member are the next member.
                    // SAFETY: `state` was set up by isal_inflate_init.
                    unsafe { isal::isal_inflate_reset(&mut *self.state) };
                    self.header = new_header();
                }
                let len = chunk.len().min(u32::MAX as usize);
                self.state.next_in = chunk.as_ptr().cast_mut();
                self.state.avail_in = len as u32;
                let result = self.inflate();
                let used = len - self.state.avail_in as usize;
                self.state.next_in = ptr::null_mut();
                self.state.avail_in = 0;
                result?;
                chunk = &chunk[used..];
            }
            Ok(())
        }

        /// The sink, once the last member has ended cleanly.
        pub(super) fn finish(self) -> Result<HashWriter, String> {
            if self.member_ended() {
                Ok(self.sink)
            } else {
                Err("unexpected end of gzip stream".to_string())
            }
        }

        fn member_ended(&self) -> bool {
            self.state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH
        }

        /// Take the input set in `state` until it is used up or the member
        /// ends; hash what comes out.
        fn inflate(&mut self) -> Result<(), String> {
            if self.state.wrapper_flag == 0 {
                // SAFETY: next_in/avail_in describe a live slice; the header
                // has no name, comment or extra buffers to write to.
                let ret =
                    unsafe { isal::isal_read_gzip_header(&mut *self.state, &mut self.header) };
                if ret < 0 {
                    return Err(message(ret));
                }
                if self.state.wrapper_flag == 0 {
                    // The header goes on in the next chunk: isa-l kept what
                    // it needs and took all the input.
                    return match self.state.avail_in {
                        0 => Ok(()),
                        _ => Err(message(ret)),
                    };
                }
            }
            loop {
                let before = self.state.avail_in;
                self.state.next_out = self.out.as_mut_ptr();
                self.state.avail_out = OUT as u32;
                // SAFETY: next_in/avail_in describe a live slice and
                // next_out/avail_out the whole of `out`; isa-l reads and
                // writes only within them.
                let ret = unsafe { isal::isal_inflate(&mut *self.state) };
                let made = OUT - self.state.avail_out as usize;
                self.state.next_out = ptr::null_mut();
                self.state.avail_out = 0;
                let _ = self.sink.write(&self.out[..made]);
                if ret < 0 {
                    return Err(message(ret));
                }
                if self.member_ended() || (made < OUT && self.state.avail_in == 0) {
                    return Ok(());
                }
                if made == 0 && self.state.avail_in == before {
                    // Room to write and input to read, yet nothing moved:
                    // stop rather than spin on bytes isa-l will not take.
                    return Err("gzip stream makes no progress".to_string());
                }
            }
        }
    }

    fn new_header() -> isal::isal_gzip_header {
        // SAFETY: zeroed memory is a valid isal_gzip_header (integers and
        // null pointers), which isal_gzip_header_init then fills in.
        unsafe {
            let mut h: isal::isal_gzip_header = std::mem::zeroed();
            isal::isal_gzip_header_init(&mut h);
            h
        }
    }

    /// isa-l's error codes (igzip_lib.h), in words like zlib's.
    fn message(code: i32) -> String {
        let what = match code {
            isal::ISAL_INVALID_BLOCK => "invalid deflate block",
            isal::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
            isal::ISAL_INVALID_LOOKBACK => "invalid deflate distance too far back",
            isal::ISAL_INVALID_WRAPPER => "invalid gzip header",
            isal::ISAL_UNSUPPORTED_METHOD => "gzip header names an unknown compression method",
            isal::ISAL_INCORRECT_CHECKSUM => "corrupt gzip stream: checksum or length mismatch",
            _ => return format!("isa-l inflate failed with code {code}"),
        };
        what.to_string()
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

    /// The tests below hold for both gzip backends (run them with and
    /// without `--features isal`).
    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        use flate2::{write::GzEncoder, Compression};
        let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip_diff_id(chunks: &[&[u8]]) -> Result<Digest, String> {
        let mut h = BlobHasher::new(Some(LayerEncoding::Gzip));
        for c in chunks {
            h.update(c);
        }
        h.finish().diff_id.unwrap()
    }

    /// Text and incompressible runs from a fixed LCG, like a layer's files.
    fn mixed(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if x >> 60 == 0 {
                out.extend((0..4096).map(|i| (x >> (i % 57)) as u8 ^ i as u8));
            } else {
                out.extend_from_slice(format!("line {} of layer {}\n", x >> 40, x % 97).as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn gzip_members_in_any_chunking() {
        let data = mixed(400_000);
        let (a, b) = data.split_at(150_000);
        let (b, c) = b.split_at(5);
        // Stored blocks, a 5-byte member and a large one, back to back.
        let mut blob = gzip(a, 0);
        blob.extend(gzip(b, 9));
        blob.extend(gzip(c, 6));
        let want = Digest::of(&data);
        for size in [1usize << 30, 65_539, 4096, 7] {
            let chunks: Vec<&[u8]> = blob.chunks(size).collect();
            assert_eq!(gzip_diff_id(&chunks), Ok(want.clone()), "chunks of {size}");
        }
        // Every split around the second member's 10-byte header and short body.
        let start = gzip(a, 0).len();
        for cut in start - 12..start + 40 {
            let (x, y) = blob.split_at(cut);
            assert_eq!(gzip_diff_id(&[x, y]), Ok(want.clone()), "split at {cut}");
        }
    }

    /// A header with every optional field: FEXTRA, FNAME, FCOMMENT and
    /// FHCRC, then the deflate body and trailer of a plain member.
    fn gzip_with_all_header_fields(data: &[u8]) -> Vec<u8> {
        let mut head = vec![0x1f, 0x8b, 8, 0x1e, 0, 0, 0, 0, 0, 255];
        head.extend([5, 0, b'x', b'y', 1, 0, 7]);
        head.extend(b"layer.tar\0a comment\0");
        // The CRC-32 of the header, read from the trailer of a gzip of it.
        let g = gzip(&head, 1);
        head.extend_from_slice(&g[g.len() - 8..g.len() - 6]);
        head.extend_from_slice(&gzip(data, 6)[10..]);
        head
    }

    #[test]
    fn gzip_header_fields_split_anywhere() {
        let data = mixed(100_000);
        let blob = gzip_with_all_header_fields(&data);
        let want = Digest::of(&data);
        for cut in 0..60 {
            let (x, y) = blob.split_at(cut);
            assert_eq!(gzip_diff_id(&[x, y]), Ok(want.clone()), "split at {cut}");
        }
        let bytes: Vec<&[u8]> = blob.chunks(1).collect();
        assert_eq!(gzip_diff_id(&bytes), Ok(want));
    }

    #[test]
    fn gzip_truncated_corrupt_or_trailing_bytes_fail() {
        let data = mixed(50_000);
        let blob = gzip(&data, 6);
        assert!(gzip_diff_id(&[]).is_err(), "empty blob");
        for end in (0..blob.len())
            .step_by(97)
            .chain(blob.len() - 8..blob.len())
        {
            assert!(gzip_diff_id(&[&blob[..end]]).is_err(), "cut at {end}");
        }
        for at in [blob.len() - 8, blob.len() - 1, blob.len() / 2] {
            let mut bad = blob.clone();
            bad[at] ^= 0x10;
            assert!(gzip_diff_id(&[&bad]).is_err(), "flipped byte {at}");
        }
        for tail in [
            &[0u8; 4][..],
            &[0; 20],
            &[0x1f],
            b"not a gzip member at all",
        ] {
            let err = gzip_diff_id(&[&blob, tail]).unwrap_err();
            assert!(
                err.starts_with("declared gzip but the bytes are gzip"),
                "{err}"
            );
        }
    }
}

//! The hasher's behaviour on real gzip and zstd streams; the gzip tests
//! hold for both backends (run them with and without `--features isal`).

use super::*;
use std::io::Write;

/// A hasher for a layer of `encoding`, sha256 throughout, no caps.
fn layer(encoding: LayerEncoding) -> BlobHasher {
    layer_with(encoding, Algorithm::Sha256, InflateLimits::unlimited())
}

fn layer_with(encoding: LayerEncoding, diff: Algorithm, limits: InflateLimits) -> BlobHasher {
    let check = DiffCheck {
        encoding,
        algorithm: diff,
        limits,
    };
    BlobHasher::new(Algorithm::Sha256, Some(check))
}

const EMPTY_GZ: [u8; 32] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60, 0x14,
    0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04, 0x00, 0x00,
];

#[test]
fn empty_gzip_layer_constants() {
    let mut h = layer(LayerEncoding::Gzip);
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
    let mut h = layer(LayerEncoding::Gzip);
    h.update(&both);
    assert_eq!(
        h.finish().diff_id.unwrap().unwrap(),
        Digest::of(b"hello world")
    );

    let mut h = layer(LayerEncoding::Gzip);
    h.update(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
    let err = h.finish().diff_id.unwrap().unwrap_err();
    assert!(err.contains("zstd"), "{err}");
}

#[test]
fn s15_zstd_frames_and_declared_type_lies() {
    let tar = vec![7u8; 3000];
    let mut both = zstd::bulk::compress(&tar[..1000], 3).unwrap();
    both.extend(zstd::bulk::compress(&tar[1000..], 3).unwrap());
    let mut h = layer(LayerEncoding::Zstd);
    for c in both.chunks(7) {
        h.update(c);
    }
    assert_eq!(h.finish().diff_id.unwrap().unwrap(), Digest::of(&tar));

    // A truncated frame is not a complete layer.
    let mut h = layer(LayerEncoding::Zstd);
    h.update(&both[..both.len() - 3]);
    assert!(h.finish().diff_id.unwrap().is_err());

    let mut h = layer(LayerEncoding::Zstd);
    h.update(&EMPTY_GZ);
    let err = h.finish().diff_id.unwrap().unwrap_err();
    assert!(
        err.contains("declared zstd") && err.contains("gzip (magic 1f 8b)"),
        "{err}"
    );

    let mut h = layer(LayerEncoding::Plain);
    h.update(&both);
    let err = h.finish().diff_id.unwrap().unwrap_err();
    assert!(
        err.contains("declared uncompressed tar") && err.contains("zstd"),
        "{err}"
    );

    let mut plain = vec![0u8; 1024];
    plain[257..262].copy_from_slice(b"ustar");
    let mut h = layer(LayerEncoding::Gzip);
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
    let mut h = layer(LayerEncoding::Gzip);
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
            err.starts_with("its gzip stream is corrupt or has trailing data"),
            "{err}"
        );
    }
}

#[test]
fn sha512_blob_and_diff_ids() {
    let tar = mixed(70_000);
    let blob = gzip(&tar, 6);
    let check = DiffCheck {
        encoding: LayerEncoding::Gzip,
        algorithm: Algorithm::Sha512,
        limits: InflateLimits::default(),
    };
    let mut h = BlobHasher::new(Algorithm::Sha512, Some(check));
    h.update(&blob);
    let v = BlobHasher::new_like(&h).finish();
    assert_eq!(v.size, 0, "new_like starts afresh");
    let v = h.finish();
    assert_eq!(v.digest, Digest::of_with(Algorithm::Sha512, &blob));
    let diff_id = v.diff_id.unwrap().unwrap();
    assert_eq!(diff_id, Digest::of_with(Algorithm::Sha512, &tar));
    assert_eq!(v.inflated.unwrap().bytes, tar.len() as u64);

    // A plain tar whose config uses the other algorithm is hashed twice.
    let mut h = layer_with(
        LayerEncoding::Plain,
        Algorithm::Sha512,
        InflateLimits::unlimited(),
    );
    h.update(&tar);
    let v = h.finish();
    assert_eq!(v.digest, Digest::of(&tar));
    assert_eq!(
        v.diff_id.unwrap().unwrap(),
        Digest::of_with(Algorithm::Sha512, &tar)
    );
    let mut h = layer(LayerEncoding::Plain);
    h.update(&tar);
    assert_eq!(h.finish().diff_id.unwrap().unwrap(), Digest::of(&tar));
}

/// `members` gzip members of `each` zeros, back to back: a bomb made
/// without holding or compressing all of it.
fn gzip_zeros(each: usize, members: usize) -> Vec<u8> {
    let one = gzip(&vec![0u8; each], 9);
    one.repeat(members)
}

fn feed_all(h: &mut BlobHasher, blob: &[u8]) {
    for c in blob.chunks(256 << 10) {
        h.update(c);
        if h.over_limit().is_some() {
            return;
        }
    }
}

#[test]
fn gzip_bomb_stops_just_past_the_ratio_floor() {
    let blob = gzip_zeros(16 << 20, 64); // 1 GiB of zeros
    let ratio = (1u64 << 30) / blob.len() as u64;
    assert!(ratio > 1000, "deflate of zeros reaches {ratio}:1");
    let mut h = layer_with(
        LayerEncoding::Gzip,
        Algorithm::Sha256,
        InflateLimits {
            max_ratio: 1000,
            ..InflateLimits::default()
        },
    );
    feed_all(&mut h, &blob);
    let o = *h.over_limit().expect("the ratio cap trips");
    assert_eq!(o.cap, Cap::Ratio);
    assert!(
        o.inflated <= RATIO_FLOOR + (1 << 20),
        "inflated {}",
        o.inflated
    );
    let v = h.finish();
    assert_eq!(v.over_limit, Some(o));
    assert!(v.diff_id.is_none());
}

#[test]
fn zstd_bomb_and_size_cap_stop_early() {
    let frame = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap();
    let blob = frame.repeat(64); // 1 GiB
    assert!((1u64 << 30) / blob.len() as u64 > 10_000);
    let mut h = layer_with(
        LayerEncoding::Zstd,
        Algorithm::Sha256,
        InflateLimits {
            max_ratio: 1000,
            ..InflateLimits::default()
        },
    );
    feed_all(&mut h, &blob);
    let o = *h.over_limit().expect("the ratio cap trips");
    assert_eq!(o.cap, Cap::Ratio);
    assert!(
        o.inflated <= RATIO_FLOOR + (1 << 20),
        "inflated {}",
        o.inflated
    );

    // An ordinary layer, held to a small size cap, stops at it.
    let tar = mixed(3 << 20);
    let limits = InflateLimits {
        max_bytes: 1 << 20,
        ..InflateLimits::default()
    };
    for (enc, blob) in [
        (LayerEncoding::Gzip, gzip(&tar, 6)),
        (LayerEncoding::Zstd, zstd::bulk::compress(&tar, 3).unwrap()),
    ] {
        let mut h = layer_with(enc, Algorithm::Sha256, limits);
        feed_all(&mut h, &blob);
        let o = h.finish().over_limit.expect("size cap");
        assert_eq!((o.cap, o.limit), (Cap::Size, 1 << 20));
        assert!(o.inflated < 2 << 20, "{enc:?} inflated {}", o.inflated);
    }
}

#[test]
fn high_ratio_below_the_floor_passes() {
    // Docker's empty layer is 32:1; 64 MiB of zeros is over 1000:1.
    let blob = gzip_zeros(16 << 20, 4);
    let mut h = layer_with(
        LayerEncoding::Gzip,
        Algorithm::Sha256,
        InflateLimits::default(),
    );
    feed_all(&mut h, &blob);
    let v = h.finish();
    assert!(v.over_limit.is_none());
    assert_eq!(
        v.diff_id.unwrap().unwrap(),
        Digest::of(&vec![0u8; 64 << 20])
    );
}

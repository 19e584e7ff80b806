//! Decompression bombs: layers pushed to the real registry that inflate far beyond their size.
//! Inflating (for the diffID) stops at `max_compression_ratio` (opt-in) once 256 MiB are out,
//! or at `max_layer_uncompressed_bytes` (64 GiB by default); the pull fails at once, without
//! retries, and nothing of the layer stays in the store. With the default caps a layer holding
//! a big zero-filled file (a blank VM disk: a bomb's shape, but real) still pulls.

mod common;
mod registry_kit;

use std::io::Write;
use std::time::Duration;

use common::capi;
use common::fixtures::Env;
use registry_kit::{assert_nothing_written, options};
use serde_json::Value;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::image::tarball::TarWriter;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{Compression, Format, ImageSpec, Layer};

const ZSTD_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const GIB: u64 = 1 << 30;

/// How long a bomb may take to fail. Most of it is hashing the 256 MiB inflated before the
/// ratio is checked: sha256 runs at about 1.5 GiB/s in a release build but only about 50 MiB/s
/// in an unoptimized one (measured), which the test binaries are by default.
fn bomb_time_limit() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(5)
    }
}

/// A 4 GiB run of zeros as gzip, about 4 MiB: one member of 16 MiB of zeros, compressed once
/// by streaming it through the encoder, then repeated (multi-member gzip is one stream).
/// Neither the 4 GiB nor a 16 MiB buffer is ever held.
fn gzip_bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = [0u8; 64 << 10];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap().repeat(256)
}

/// The same 4 GiB of zeros as zstd frames (about 32 KiB: zstd reaches 30000:1 and more).
fn zstd_bomb() -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = [0u8; 64 << 10];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap().repeat(256)
}

/// A diffID the bomb never gets to be compared with (computing the real one would take
/// hashing 4 GiB).
fn unreached_diff_id() -> String {
    format!("sha256:{}", "0".repeat(64))
}

/// "stopped after inflating N bytes" in a cap error.
fn inflated_bytes(message: &str) -> u64 {
    let rest = message
        .split("stopped after inflating ")
        .nth(1)
        .unwrap_or_else(|| panic!("no inflated count in: {message}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// Pull `fx/bomb:1` whose only layer is `layer`, expecting the ratio cap.
fn assert_ratio_cap_stops(layer: Layer, format: Format) {
    let env = Env::new();
    let digest = layer.digest().to_string();
    let compressed = layer.size();
    env.push("fx/bomb", "1", &ImageSpec::new(vec![layer]).format(format));

    let mut o = options(&env, "fx/bomb:1");
    o["max_compression_ratio"] = 1000.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    for part in [
        digest.as_str(),
        "over 1000:1",
        "raise max_compression_ratio",
    ] {
        assert!(out.message.contains(part), "{part}: {}", out.message);
    }
    let inflated = inflated_bytes(&out.message);
    assert!(
        inflated <= (256 << 20) + (1 << 20),
        "inflated {inflated} bytes"
    );
    assert!(
        out.elapsed < bomb_time_limit(),
        "{compressed} bytes of bomb took {:?} to fail",
        out.elapsed
    );
    println!(
        "bomb of {compressed} bytes: failed after {:?}, {inflated} bytes inflated",
        out.elapsed
    );
    // Not transient: one GET, no retry, no second download.
    assert_eq!(env.proxy.count_gets(&digest), 1);
    assert_nothing_written(env.store());
}

#[test]
fn bombs_gzip_bomb_stops_at_the_ratio_cap() {
    let blob = gzip_bomb();
    assert!(
        4 * GIB / blob.len() as u64 > 1000,
        "{} bytes of gzip",
        blob.len()
    );
    let layer = Layer::from_blob(blob, &unreached_diff_id(), Compression::Gzip);
    assert_ratio_cap_stops(layer, Format::Docker);
}

#[test]
fn bombs_zstd_bomb_stops_at_the_ratio_cap() {
    let blob = zstd_bomb();
    let layer =
        Layer::from_blob(blob, &unreached_diff_id(), Compression::Gzip).with_media_type(ZSTD_LAYER);
    assert_ratio_cap_stops(layer, Format::Oci);
}

/// A layer of `size` incompressible bytes (its tar is a little larger).
fn random_image(size: usize, seed: u64) -> (ImageSpec, Layer) {
    let layer = Layer::random(size, seed);
    (ImageSpec::new(vec![layer.clone()]), layer)
}

#[test]
fn bombs_size_cap_on_a_normal_layer() {
    let env = Env::new();
    let (spec, layer) = random_image(3 << 20, 61);
    env.push("fx/app", "1", &spec);
    let mut o = options(&env, "fx/app:1");
    o["max_layer_uncompressed_bytes"] = (1u64 << 20).into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    for part in [
        layer.digest(),
        "more than 1048576 bytes",
        "raise max_layer_uncompressed_bytes",
    ] {
        assert!(out.message.contains(part), "{part}: {}", out.message);
    }
    let inflated = inflated_bytes(&out.message);
    assert!(
        inflated > 1 << 20 && inflated < (1 << 20) + (256 << 10),
        "{inflated}"
    );
    assert_eq!(env.proxy.count_gets(layer.digest()), 1);
    assert_nothing_written(env.store());

    // The same image within the default caps pulls.
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn bombs_high_ratio_layer_below_the_floor_pulls() {
    // A real tar holding one 48 MiB file of zeros: over 1000:1 as gzip, but the whole layer
    // inflates to less than the 256 MiB the ratio waits for.
    let mut tar = TarWriter::new();
    tar.file("zeros.img", false, &vec![0u8; 48 << 20]);
    let tar = tar.finish();
    let layer = Layer::from_tar(tar.clone(), Compression::Gzip);
    assert!(tar.len() as u64 / layer.size() > 1000, "{}", layer.size());
    let env = Env::new();
    let spec = ImageSpec::new(vec![Layer::empty_gzip(), layer.clone()]);
    env.push("fx/app", "zeros", &spec);
    let mut o = options(&env, "fx/app:zeros");
    o["max_compression_ratio"] = 1000.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json: Value = out.json.unwrap();
    assert_eq!(json["layers"][1]["diff_id"], layer.diff_id());
}

#[test]
fn bombs_shared_transfer_each_pull_gets_its_own_limits() {
    // Two pulls of one layer at once share its transfer; the one with a 1 MiB cap must fail
    // and the one with the default caps must succeed, whichever of them started the transfer.
    for tight_first in [true, false] {
        let env = Env::new();
        let (spec, layer) = random_image(3 << 20, 62);
        env.push("fx/app", "1", &spec);
        // Slow enough that the second pull joins the transfer in flight.
        env.proxy
            .throttle(Match::blob(layer.digest()), 4 << 20, Some(1));
        let mut tight = options(&env, "fx/app:1");
        tight["max_layer_uncompressed_bytes"] = (1u64 << 20).into();
        let loose = options(&env, "fx/app:1");
        let (first, second) = if tight_first {
            (&tight, &loose)
        } else {
            (&loose, &tight)
        };
        let a = capi::start(first).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let b = capi::start(second).unwrap();
        let (oa, ob) = (
            a.wait(Duration::from_secs(60)),
            b.wait(Duration::from_secs(60)),
        );
        let (t, l) = if tight_first { (oa, ob) } else { (ob, oa) };
        assert_eq!(t.code, vic_result::Registry, "tight: {}", t.message);
        assert!(
            t.message.contains("max_layer_uncompressed_bytes"),
            "{}",
            t.message
        );
        assert_eq!(l.code, vic_result::Ok, "loose: {}", l.message);
        let gets = env.proxy.count_gets(layer.digest());
        // The tight pull's transfer stopped at its cap: the loose one fetched its own.
        let want = if tight_first { 2 } else { 1 };
        assert_eq!(gets, want, "tight first: {tight_first}");
    }
}

#[test]
fn bombs_inflate_limit_options_are_checked() {
    let env = Env::new();
    for (key, value) in [
        ("max_layer_uncompressed_bytes", Value::from(0)),
        ("max_layer_uncompressed_bytes", Value::from(1u64 << 60)),
        ("max_compression_ratio", Value::from(0)),
        ("max_compression_ratio", Value::from(u64::MAX)),
        ("max_compression_ratio", Value::from(-5)),
        ("max_compression_ratio", Value::from("1000")),
    ] {
        let mut o = options(&env, "fx/app:1");
        o[key] = value.clone();
        let (code, msg) = capi::start(&o).err().expect("start must fail");
        assert_eq!(code, vic_result::InvalidArgument, "{key}={value}: {msg}");
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn bombs_zero_filled_disk_image_pulls_with_the_default_caps() {
    // A blank 300 MiB raw disk in a layer, as VM images carry: gzip packs it at deflate's
    // limit (~1030:1) and zstd far beyond, past the 256 MiB floor. Nothing tells it apart
    // from a bomb by ratio, so by default only the size cap applies and it must pull.
    let mut tar = TarWriter::new();
    tar.file("disk.raw", false, &vec![0u8; 300 << 20]);
    let tar = tar.finish();
    let gz = Layer::from_tar(tar.clone(), Compression::Gzip);
    assert!(tar.len() as u64 / gz.size() > 1000, "{}", gz.size());
    let zstd = zstd::bulk::compress(&tar, 3).unwrap();
    let zst = Layer::from_blob(zstd, gz.diff_id(), Compression::Gzip).with_media_type(ZSTD_LAYER);
    let env = Env::new();
    env.push("fx/disk", "gz", &ImageSpec::new(vec![gz.clone()]));
    let oci = ImageSpec::new(vec![zst.clone()]).format(Format::Oci);
    env.push("fx/disk", "zst", &oci);
    for (tag, layer) in [("gz", &gz), ("zst", &zst)] {
        let (out, _) = capi::pull(options(&env, &format!("fx/disk:{tag}")));
        assert_eq!(out.code, vic_result::Ok, "{tag}: {}", out.message);
        let json: Value = out.json.unwrap();
        assert_eq!(json["layers"][0]["diff_id"], layer.diff_id(), "{tag}");
    }
}

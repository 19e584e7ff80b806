//! S15: uncompressed and zstd layers (OCI's `+zstd` and Docker's `tar.zstd`), and a layer
//! whose media type says gzip while its bytes are zstd.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::Env;
use registry_kit::{has_blob, options};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::image::tarball::dir_tar;
use vicpull_testkit::{sha256_digest, Compression, Format, ImageSpec, Layer, PushedImage};

const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn tar_of(dir: &str, max: u64) -> Vec<u8> {
    dir_tar(dir, max)
}

/// A zstd layer of `tar`, written as two frames (as a parallel compressor would).
fn zstd_layer(tar: &[u8], media_type: &str) -> Layer {
    let half = tar.len() / 2;
    let mut blob = zstd::bulk::compress(&tar[..half], 3).unwrap();
    blob.extend(zstd::bulk::compress(&tar[half..], 3).unwrap());
    Layer::from_blob(blob, &sha256_digest(tar), Compression::Gzip).with_media_type(media_type)
}

/// The pull succeeds and each diffID matches the config, in order.
fn pulls_with_diff_ids(env: &Env, repo_tag: &str, pushed: &PushedImage) -> serde_json::Value {
    let (out, _) = capi::pull(options(env, repo_tag));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let j = out.json.unwrap();
    let config: serde_json::Value = serde_json::from_slice(&pushed.config_bytes).unwrap();
    let layers = j["layers"].as_array().unwrap();
    assert_eq!(layers.len(), pushed.layers.len());
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["diff_id"], config["rootfs"]["diff_ids"][i], "layer {i}");
        assert_eq!(l["media_type"], pushed.layers[i].media_type.as_str());
    }
    j
}

#[test]
fn s15_oci_image_with_tar_zstd_and_gzip_layers() {
    let env = Env::new();
    let plain = Layer::from_tar(tar_of("/etc", 96 << 10), Compression::None);
    let zst = zstd_layer(&tar_of("/usr/share/doc", 256 << 10), OCI_ZSTD);
    let gz = Layer::tar_of_dir("/usr/include", 128 << 10);
    let spec = ImageSpec::new(vec![plain.clone(), zst, gz]).format(Format::Oci);
    let pushed = env.push("fx/fmt-oci", "1", &spec);
    assert_eq!(
        pushed.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );
    let j = pulls_with_diff_ids(&env, "fx/fmt-oci:1", &pushed);
    assert_eq!(
        j["layers"][0]["diff_id"],
        plain.digest(),
        "a plain tar's diffID is its digest"
    );
}

#[test]
fn s15_docker_image_with_tar_and_docker_zstd_layers() {
    let env = Env::new();
    let plain = Layer::from_tar(tar_of("/etc", 64 << 10), Compression::None);
    let zst = zstd_layer(&tar_of("/usr/share/doc", 128 << 10), DOCKER_ZSTD);
    let spec = ImageSpec::new(vec![plain, zst]).format(Format::Docker);
    let pushed = env.push("fx/fmt-d2", "1", &spec);
    assert_eq!(
        pushed.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    pulls_with_diff_ids(&env, "fx/fmt-d2:1", &pushed);
    // Docker's zstd type is accepted like OCI's, and the stored OCI form says so.
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:{}",
            env.store().display(),
            env.reference("fx/fmt-d2:1")
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(raw["layers"][1]["mediaType"], OCI_ZSTD);
}

#[test]
fn s15_declared_gzip_with_zstd_bytes_names_layer_type_and_magic() {
    let env = Env::new();
    let liar = zstd_layer(&tar_of("/etc", 32 << 10), OCI_GZIP);
    let spec = ImageSpec::new(vec![liar.clone()]).format(Format::Oci);
    env.push("fx/fmt-lie", "1", &spec);
    let (out, _) = capi::pull(options(&env, "fx/fmt-lie:1"));
    assert_ne!(out.code, vic_result::Ok);
    for part in [liar.digest(), "declared gzip", "zstd (magic 28 b5 2f fd)"] {
        assert!(
            out.message.contains(part),
            "{part} missing: {}",
            out.message
        );
    }
    // The image is not marked complete (the blob itself may stay: its digest is right).
    let refs = common::fixtures::named_images(env.store());
    assert_eq!(refs, 0);
    let _ = has_blob(env.store(), liar.digest());
}

#[test]
fn s15_declared_plain_tar_with_gzip_bytes_is_refused() {
    let env = Env::new();
    let gz = Layer::tar_of_dir("/etc", 32 << 10)
        .with_media_type("application/vnd.oci.image.layer.v1.tar");
    let spec = ImageSpec::new(vec![gz.clone()]).format(Format::Oci);
    env.push("fx/fmt-lie", "2", &spec);
    let (out, _) = capi::pull(options(&env, "fx/fmt-lie:2"));
    assert_ne!(out.code, vic_result::Ok);
    for part in [
        gz.digest(),
        "declared uncompressed tar",
        "gzip (magic 1f 8b)",
    ] {
        assert!(
            out.message.contains(part),
            "{part} missing: {}",
            out.message
        );
    }
}

//! Uploading images through the registry HTTP API (distribution spec, monolithic uploads).
//!
//! Everything here panics with the registry's answer on failure: these are test fixtures, and
//! a failed push means the test cannot run at all.

use std::collections::HashSet;

use super::spec::index_bytes;
use super::{Format, ImageSpec, Platform};
use crate::digest::sha256_digest;
use crate::http;

/// A layer as listed in a pushed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
}

/// What [`push_image`] stored.
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub manifest_media_type: String,
    pub config_digest: String,
    pub config_bytes: Vec<u8>,
    /// In manifest order, repeats included.
    pub layers: Vec<LayerInfo>,
}

/// What [`push_index`] stored.
#[derive(Clone, Debug)]
pub struct PushedIndex {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// In index order.
    pub children: Vec<PushedImage>,
}

/// Pushes the blobs (each distinct one once), the config and the manifest of `spec`, then
/// tags the manifest as `tag` in `repo` on the registry at `addr` ("127.0.0.1:PORT").
pub fn push_image(addr: &str, repo: &str, tag: &str, spec: &ImageSpec) -> PushedImage {
    push_image_blobs(addr, repo, spec);
    let image = describe(spec);
    put_manifest(
        addr,
        repo,
        tag,
        &image.manifest_media_type,
        &image.manifest_bytes,
    );
    image
}

/// Pushes every child by digest, then a manifest list (Docker) or index (OCI) as `tag`.
/// Each child is listed with the platform paired with it, which need not match its config.
pub fn push_index(
    addr: &str,
    repo: &str,
    tag: &str,
    children: &[(ImageSpec, Platform)],
    format: Format,
) -> PushedIndex {
    let mut pushed = Vec::new();
    for (spec, _) in children {
        push_image_blobs(addr, repo, spec);
        let image = describe(spec);
        put_manifest(
            addr,
            repo,
            &image.manifest_digest,
            &image.manifest_media_type,
            &image.manifest_bytes,
        );
        pushed.push(image);
    }
    let entries: Vec<(&str, &[u8], &Platform)> = pushed
        .iter()
        .zip(children)
        .map(|(p, (_, platform))| {
            (
                p.manifest_media_type.as_str(),
                p.manifest_bytes.as_slice(),
                platform,
            )
        })
        .collect();
    let bytes = index_bytes(format, &entries);
    let media_type = format.index_media_type().to_string();
    let digest = put_manifest(addr, repo, tag, &media_type, &bytes);
    PushedIndex {
        digest,
        bytes,
        media_type,
        children: pushed,
    }
}

/// Uploads `bytes` as a blob of `repo` unless the registry already has it; returns the digest.
pub fn push_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    push_blob_as(addr, repo, bytes, &sha256_digest(bytes))
}

/// Like [`push_blob`], naming the blob by `digest` ("sha512:..." works: distribution checks
/// it and serves the blob under both names).
pub fn push_blob_as(addr: &str, repo: &str, bytes: &[u8], digest: &str) -> String {
    let digest = digest.to_string();
    let head = http::request(
        addr,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    );
    if head.is_ok_and(|r| r.status == 200) {
        return digest;
    }

    let start = send(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    );
    expect_status(&start, 202, "start blob upload");
    let location = start
        .header("location")
        .expect("upload answer without Location");
    let sep = if location.contains('?') { '&' } else { '?' };
    let target = format!("{location}{sep}digest={digest}");
    let headers = [("Content-Type", "application/octet-stream")];
    let done = send(addr, "PUT", &target, &headers, bytes);
    expect_status(&done, 201, "finish blob upload");
    digest
}

/// PUTs a manifest (or index) under `reference` (a tag or its digest); returns its digest.
/// Panics unless the registry accepts it and reports the same digest.
pub fn put_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let digest = sha256_digest(bytes);
    let path = format!("/v2/{repo}/manifests/{reference}");
    let resp = send(addr, "PUT", &path, &[("Content-Type", media_type)], bytes);
    expect_status(&resp, 201, "put manifest");
    if let Some(reported) = resp.header("docker-content-digest") {
        assert_eq!(
            reported, digest,
            "registry stored the manifest under another digest"
        );
    }
    digest
}

fn push_image_blobs(addr: &str, repo: &str, spec: &ImageSpec) {
    let mut done = HashSet::new();
    for layer in &spec.layers {
        if done.insert(layer.digest()) {
            push_blob_as(addr, repo, layer.blob(), layer.digest());
        }
    }
    push_blob_as(addr, repo, &spec.config_bytes(), &spec.config_digest());
}

/// The documents and digests of `spec`, as a push stores them.
fn describe(spec: &ImageSpec) -> PushedImage {
    let config_bytes = spec.config_bytes();
    let manifest_bytes = spec.manifest_bytes();
    let layers = spec.layers.iter().map(|l| LayerInfo {
        digest: l.digest().to_string(),
        diff_id: l.diff_id().to_string(),
        size: l.size(),
        media_type: l.media_type(spec.format),
    });
    PushedImage {
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest_bytes,
        manifest_media_type: spec.format.manifest_media_type().to_string(),
        config_digest: spec.config_digest(),
        config_bytes,
        layers: layers.collect(),
    }
}

fn send(addr: &str, method: &str, target: &str, h: &[(&str, &str)], b: &[u8]) -> http::Response {
    http::request(addr, method, target, h, b)
        .unwrap_or_else(|e| panic!("testkit: {method} {target} on {addr} failed: {e}"))
}

fn expect_status(resp: &http::Response, want: u16, what: &str) {
    assert_eq!(
        resp.status,
        want,
        "testkit: {what}: registry answered {}: {}",
        resp.status,
        resp.text()
    );
}

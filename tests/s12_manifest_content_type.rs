//! S12: manifests served with a missing, wrong or parameterised Content-Type. Detection goes
//! body `mediaType`, then the header (parameters dropped, any case), then the structure.

mod common;
mod registry_kit;

use std::sync::{Arc, Mutex};

use common::capi;
use common::fixtures::Env;
use registry_kit::{assert_nothing_written, options};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{push_index, Format, ImageSpec, Layer, Platform};

fn image(format: Format, seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(24 << 10, seed)]).format(format)
}

/// Answer the tag's manifest GET with `body` and `content_type` (None: no header).
fn serve(env: &Env, tag: &str, content_type: Option<&str>, body: &[u8]) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("Content-Type", c))
        .into_iter()
        .collect();
    env.proxy
        .respond(Match::Manifest(tag.to_string()), 200, &headers, body, None);
}

fn without_media_type(bytes: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    v.as_object_mut().unwrap().remove("mediaType");
    serde_json::to_vec(&v).unwrap()
}

fn pull_ok(env: &Env, repo_tag: &str) -> Value {
    let mut o = options(env, repo_tag);
    // The index has an arm64 child; single images are amd64, and an
    // explicit platform they do not match is refused (as docker does).
    if repo_tag.starts_with("fx/multi") {
        o["platform"] = "linux/arm64".into();
    }
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    out.json.unwrap()
}

#[test]
fn s12_request_accepts_all_four_types() {
    let env = Env::new();
    env.push("fx/app", "1", &image(Format::Docker, 1));
    let accepts: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = accepts.clone();
    env.proxy.hook(move |r| {
        if r.path.contains("/manifests/") {
            seen.lock()
                .unwrap()
                .push(r.header("accept").unwrap_or("").to_string());
        }
        None
    });
    pull_ok(&env, "fx/app:1");
    let all = accepts.lock().unwrap().clone();
    assert!(!all.is_empty());
    for a in all {
        for t in [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
        ] {
            assert!(a.contains(t), "{t} missing from Accept: {a}");
        }
    }
}

#[test]
fn s12a_octet_stream_with_oci_media_type_in_body() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &image(Format::Oci, 2));
    serve(
        &env,
        "1",
        Some("application/octet-stream"),
        &p.manifest_bytes,
    );
    let j = pull_ok(&env, "fx/app:1");
    assert_eq!(
        j["manifest_media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn s12b_text_plain_with_schema2_body() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &image(Format::Docker, 3));
    serve(
        &env,
        "1",
        Some("text/plain; charset=utf-8"),
        &p.manifest_bytes,
    );
    let j = pull_ok(&env, "fx/app:1");
    assert_eq!(
        j["manifest_media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

fn multi(env: &Env, format: Format) -> vicpull_testkit::PushedIndex {
    push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (image(Format::Oci, 4), Platform::new("linux", "amd64")),
            (image(Format::Oci, 5), Platform::new("linux", "arm64")),
        ],
        format,
    )
}

#[test]
fn s12c_index_type_with_parameter_and_mixed_case() {
    for ct in [
        "application/vnd.oci.image.index.v1+json; charset=utf-8",
        "Application/Vnd.OCI.Image.Index.v1+JSON; charset=utf-8",
    ] {
        let env = Env::new();
        let idx = multi(&env, Format::Oci);
        // The body keeps its mediaType: the header is the one under test.
        serve(&env, "1", Some(ct), &idx.bytes);
        let j = pull_ok(&env, "fx/multi:1");
        assert_eq!(
            j["manifest_digest"],
            idx.children[1].manifest_digest.as_str(),
            "{ct}"
        );
        assert_eq!(j["digest"], idx.digest.as_str());
    }
}

#[test]
fn s12d_no_content_type_and_no_media_type_in_an_oci_manifest() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &image(Format::Oci, 6));
    serve(&env, "1", None, &without_media_type(&p.manifest_bytes));
    let j = pull_ok(&env, "fx/app:1");
    assert_eq!(
        j["manifest_media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(j["config_digest"], p.config_digest.as_str());
}

#[test]
fn s12e_no_content_type_and_no_media_type_in_an_index() {
    let env = Env::new();
    let idx = multi(&env, Format::Oci);
    serve(&env, "1", None, &without_media_type(&idx.bytes));
    let j = pull_ok(&env, "fx/multi:1");
    assert_eq!(
        j["manifest_digest"],
        idx.children[1].manifest_digest.as_str()
    );
}

#[test]
fn s12f_header_says_manifest_but_body_is_an_index() {
    let env = Env::new();
    let idx = multi(&env, Format::Oci);
    for body in [idx.bytes.clone(), without_media_type(&idx.bytes)] {
        env.proxy.clear_faults();
        serve(
            &env,
            "1",
            Some("application/vnd.oci.image.manifest.v1+json"),
            &body,
        );
        let (out, _) = capi::pull(options(&env, "fx/multi:1"));
        assert_eq!(out.code, vic_result::Registry, "{}", out.message);
        assert!(
            out.message.contains("media type conflict"),
            "{}",
            out.message
        );
        assert!(out.message.contains("fx/multi:1"), "{}", out.message);
        assert_nothing_written(env.store());
    }
}

#[test]
fn s12g_schema1_is_unsupported() {
    let env = Env::new();
    let empty = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    let body = json!({
        "schemaVersion": 1, "name": "fx/app", "tag": "1", "architecture": "amd64",
        "fsLayers": [{"blobSum": empty}],
        "history": [{"v1Compatibility": "{}"}], "signatures": [],
    })
    .to_string();
    let body = body.as_bytes();
    serve(
        &env,
        "1",
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        body,
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(out.message.contains("schema1"), "{}", out.message);
    assert!(out.message.contains("fx/app:1"), "{}", out.message);
    assert_nothing_written(env.store());
}

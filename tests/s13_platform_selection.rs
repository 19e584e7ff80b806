//! S13: platform selection from an index: arm64 variants, arm's default v7, no match,
//! Windows os.version, attestation entries, entry order; plus nested indexes.
//! S20a/e: manifests that do not match the digest they were asked by.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::Env;
use registry_kit::{assert_nothing_written, options};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::image::put_manifest;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{push_index, sha256_digest, Format, ImageSpec, Layer, Platform, PushedIndex};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn child(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(16 << 10, seed)]).format(Format::Oci)
}

/// fx/multi:1 with the seven children of S13 (the last one an attestation), and the same
/// entries in reverse order as fx/multi:rev.
fn push_multi(env: &Env) -> PushedIndex {
    let win = |v: &str| Platform::new("windows", "amd64").os_version(v);
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (child(1), Platform::new("linux", "amd64")),
            (child(2), Platform::new("linux", "arm64")),
            (child(3), Platform::new("linux", "arm").variant("v7")),
            (child(4), Platform::new("linux", "arm").variant("v6")),
            (child(5), win("10.0.17763.5000")),
            (child(6), win("10.0.20348.2000")),
            (child(7), Platform::new("unknown", "unknown")),
        ],
        Format::Oci,
    );
    let mut doc: Value = serde_json::from_slice(&idx.bytes).unwrap();
    doc["manifests"][6]["annotations"] =
        json!({"vnd.docker.reference.type": "attestation-manifest"});
    let bytes = serde_json::to_vec(&doc).unwrap();
    let digest = put_manifest(env.registry.addr(), "fx/multi", "1", OCI_INDEX, &bytes);
    doc["manifests"].as_array_mut().unwrap().reverse();
    let rev = serde_json::to_vec(&doc).unwrap();
    put_manifest(env.registry.addr(), "fx/multi", "rev", OCI_INDEX, &rev);
    PushedIndex {
        digest,
        bytes,
        ..idx
    }
}

fn pull(env: &Env, repo_tag: &str, platform: &str, os_version: Option<&str>) -> capi::Outcome {
    let mut o = options(env, repo_tag);
    o["platform"] = platform.into();
    if let Some(v) = os_version {
        o["os_version"] = v.into();
    }
    capi::pull(o).0
}

#[test]
fn s13_choices_do_not_depend_on_entry_order() {
    let env = Env::new();
    let idx = push_multi(&env);
    let cases: [(&str, Option<&str>, usize); 5] = [
        ("linux/arm64/v8", None, 1),                   // a
        ("linux/arm", None, 2),                        // c: v7 by default, not v6
        ("windows/amd64", Some("10.0.20348.1234"), 5), // e: build matches, revision ignored
        ("windows/amd64", Some("10.0.17763.99"), 4),   // f
        ("linux/arm/v6", None, 3),
    ];
    for tag in ["1", "rev"] {
        for (platform, version, want) in cases {
            env.proxy.clear_log();
            let out = pull(&env, &format!("fx/multi:{tag}"), platform, version);
            assert_eq!(
                out.code,
                vic_result::Ok,
                "{platform} {tag}: {}",
                out.message
            );
            let j = out.json.unwrap();
            let chosen = &idx.children[want].manifest_digest;
            assert_eq!(
                j["manifest_digest"],
                chosen.as_str(),
                "{platform} {version:?} {tag}"
            );
            // The child was fetched by its digest (and held to it).
            let by_digest = env
                .proxy
                .requests()
                .iter()
                .any(|r| r.path.ends_with(&format!("/manifests/{chosen}")));
            assert!(by_digest, "{platform}: child not fetched by digest");
        }
    }
}

#[test]
fn s13b_arm64_host_takes_an_arm64_v8_only_index() {
    let env = Env::new();
    let idx = push_index(
        env.registry.addr(),
        "fx/v8only",
        "1",
        &[(child(8), Platform::new("linux", "arm64").variant("v8"))],
        Format::Docker,
    );
    let out = pull(&env, "fx/v8only:1", "linux/arm64", None);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        out.json.unwrap()["manifest_digest"],
        idx.children[0].manifest_digest.as_str()
    );
}

#[test]
fn s13d_no_match_lists_what_exists_and_fetches_only_the_index() {
    let env = Env::new();
    let idx = push_multi(&env);
    let out = pull(&env, "fx/multi:1", "linux/riscv64", None);
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains(&idx.digest), "{}", out.message);
    for p in [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "windows/amd64",
    ] {
        assert!(out.message.contains(p), "{p} missing: {}", out.message);
    }
    assert!(
        !out.message.contains("unknown"),
        "attestations listed: {}",
        out.message
    );
    let reqs = env.proxy.requests();
    assert_eq!(reqs.len(), 1, "only the index: {reqs:?}");
    assert_nothing_written(env.store());
}

#[test]
fn s13_windows_without_a_wanted_version_takes_the_newest_build() {
    let env = Env::new();
    let idx = push_multi(&env);
    let out = pull(&env, "fx/multi:rev", "windows/amd64", None);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        out.json.unwrap()["manifest_digest"],
        idx.children[5].manifest_digest.as_str()
    );
}

#[test]
fn s20e_index_child_with_the_wrong_digest_writes_nothing() {
    let env = Env::new();
    let idx = push_multi(&env);
    let wanted = idx.children[1].manifest_digest.clone();
    let other = &idx.children[0].manifest_bytes;
    env.proxy.respond(
        Match::Manifest(wanted.clone()),
        200,
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        other,
        None,
    );
    let out = pull(&env, "fx/multi:1", "linux/arm64", None);
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(out.message.contains(&wanted), "{}", out.message);
    assert!(
        out.message.contains(&sha256_digest(other)),
        "{}",
        out.message
    );
    let blobs = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blobs, 0);
    assert_nothing_written(env.store());
}

#[test]
fn s20a_manifest_by_digest_with_other_body_writes_nothing() {
    let env = Env::new();
    let a = env.push("fx/app", "1", &child(11));
    let b = env.push("fx/app", "2", &child(12));
    // A different valid manifest, labelled with the digest that was asked for.
    env.proxy.respond(
        Match::Manifest(a.manifest_digest.clone()),
        200,
        &[
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ("Docker-Content-Digest", &a.manifest_digest),
        ],
        &b.manifest_bytes,
        None,
    );
    let (out, _) = capi::pull(options(&env, &format!("fx/app@{}", a.manifest_digest)));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(
        out.message.contains("manifest digest mismatch"),
        "{}",
        out.message
    );
    assert!(out.message.contains(&a.manifest_digest), "{}", out.message);
    assert!(out.message.contains(&b.manifest_digest), "{}", out.message);
    let blobs = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blobs, 0, "no blob requests");
    assert_nothing_written(env.store());
}

#[test]
fn s20_docker_content_digest_header_is_held_to_the_body() {
    let env = Env::new();
    let a = env.push("fx/app", "1", &child(13));
    let b = env.push("fx/app", "2", &child(14));
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &[("Docker-Content-Digest", &b.manifest_digest)],
        &a.manifest_bytes,
        None,
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(
        out.message.contains("Docker-Content-Digest"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

/// An index whose only entry is another index (no platform), `depth` levels deep.
fn nest(env: &Env, inner: &[u8], depth: usize) -> String {
    let mut bytes = inner.to_vec();
    let mut digest = String::new();
    for level in 0..depth {
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": OCI_INDEX,
                "digest": sha256_digest(&bytes),
                "size": bytes.len(),
            }],
        });
        let next = serde_json::to_vec(&doc).unwrap();
        put_manifest(
            env.registry.addr(),
            "fx/multi",
            &sha256_digest(&bytes),
            OCI_INDEX,
            &bytes,
        );
        digest = put_manifest(
            env.registry.addr(),
            "fx/multi",
            &format!("n{}", level + 1),
            OCI_INDEX,
            &next,
        );
        bytes = next;
    }
    digest
}

#[test]
fn nested_indexes_are_followed_to_a_bounded_depth() {
    let env = Env::new();
    let idx = push_multi(&env);
    nest(&env, &idx.bytes, 2);
    let out = pull(&env, "fx/multi:n2", "linux/arm64", None);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let j = out.json.unwrap();
    assert_eq!(
        j["manifest_digest"],
        idx.children[1].manifest_digest.as_str()
    );
    assert_eq!(j["platform"], "linux/arm64");

    nest(&env, &idx.bytes, 6);
    let out = pull(&env, "fx/multi:n6", "linux/arm64", None);
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(out.message.contains("nested deeper"), "{}", out.message);
}

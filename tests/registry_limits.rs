//! The hostile-registry profile: size caps on manifests, configs, tokens and error bodies, a
//! layer-count cap and a redirect-hop cap, each failing clearly instead of reading on.
//! (Refusals of literal link-local and metadata addresses are unit tests in
//! src/registry/guard.rs; names that resolve to them are refused end to end in
//! tests/registry_dns_guard.rs, inside the resolver, before any connection.)

mod common;
mod registry_kit;

use std::time::{Duration, Instant};

use common::capi;
use common::fixtures::Env;
use registry_kit::{assert_nothing_written, bearer_front, options, TokenServer};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{Format, ImageSpec, Layer, Reply};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn small(env: &Env) -> vicpull_testkit::PushedImage {
    let spec = ImageSpec::new(vec![Layer::random(16 << 10, 41)]).format(Format::Oci);
    env.push("fx/app", "1", &spec)
}

#[test]
fn limits_manifest_over_4_mib_is_refused() {
    let env = Env::new();
    small(&env);
    let huge = vec![b' '; (4 << 20) + 1];
    let ct = [("Content-Type", OCI_MANIFEST)];
    env.proxy
        .respond(Match::Manifest("1".into()), 200, &ct, &huge, None);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    assert!(
        out.message.contains("larger than 4194304 bytes"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

#[test]
fn limits_layer_count_cap() {
    let env = Env::new();
    small(&env);
    let layer = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": format!("sha256:{}", "ab".repeat(32)),
        "size": 1,
    });
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", "cd".repeat(32)), "size": 2},
        "layers": vec![layer; 1001],
    });
    let ct = [("Content-Type", OCI_MANIFEST)];
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &ct,
        body.to_string().as_bytes(),
        None,
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(out.message.contains("1001 layers"), "{}", out.message);
    assert_nothing_written(env.store());
}

#[test]
fn limits_config_size_is_checked_before_fetching() {
    let env = Env::new();
    let p = small(&env);
    let mut m: serde_json::Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
    m["config"]["size"] = json!(64u64 << 20);
    let ct = [("Content-Type", OCI_MANIFEST)];
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &ct,
        m.to_string().as_bytes(),
        None,
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    assert!(out.message.contains("too large"), "{}", out.message);
    assert_eq!(env.proxy.count_gets(&p.config_digest), 0);
}

#[test]
fn limits_token_answer_over_1_mib_is_refused() {
    let env = Env::new();
    small(&env);
    let auth = TokenServer::start_with(|_, _| {
        let pad = "x".repeat((1 << 20) + 10);
        Reply::json(200, &json!({"token": "T", "pad": pad}))
    });
    bearer_front(&env.proxy, &["T"], auth.challenge());
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_ne!(out.code, vic_result::Ok);
    assert!(
        out.message.contains("larger than 1048576 bytes"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

#[test]
fn limits_error_body_is_not_read_past_its_cap() {
    let env = Env::new();
    small(&env);
    // 32 MiB of error text: only the first 64 KiB may be read, and the message stays short.
    let body = vec![b'e'; 32 << 20];
    env.proxy
        .respond(Match::Manifest("1".into()), 404, &[], &body, None);
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(
        out.message.len() < 1000,
        "{} bytes of message",
        out.message.len()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn limits_redirect_loop_stops_at_the_hop_cap() {
    let env = Env::new();
    let p = small(&env);
    let l = p.layers[0].digest.clone();
    let self_url = format!("{}/v2/fx/app/blobs/{l}", env.proxy.url());
    env.proxy
        .respond(Match::blob(&l), 302, &[("Location", &self_url)], b"", None);
    let mut o = options(&env, "fx/app:1");
    o["max_attempts"] = 1.into();
    let (out, _) = capi::pull(o);
    assert_ne!(out.code, vic_result::Ok);
    assert!(
        out.message.contains("more than 10 redirects"),
        "{}",
        out.message
    );
    assert_eq!(env.proxy.count_gets(&l), 11, "the first GET and 10 hops");
}

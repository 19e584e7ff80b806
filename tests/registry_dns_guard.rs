//! Names that resolve to link-local or metadata addresses are refused in the lookup the
//! connect uses, so a token realm, a redirect or a mirror cannot reach the metadata service
//! by name. The `hosts` option pins names to addresses (no /etc/hosts edits): it lets these
//! tests use real names against the real registry, and what it returns is filtered like DNS.
//!
//! No test here connects anywhere but loopback: a forbidden mapping fails inside the
//! resolver, before any socket is opened.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::Env;
use registry_kit::{assert_nothing_written, bearer_front, options, TokenServer};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{ImageSpec, Layer, PushedImage};

fn small(env: &Env) -> PushedImage {
    let spec = ImageSpec::new(vec![
        Layer::random(24 << 10, 57),
        Layer::random(8 << 10, 58),
    ]);
    env.push("fx/app", "1", &spec)
}

/// The front's port (the proxy listens on 127.0.0.1).
fn port(env: &Env) -> String {
    env.proxy.addr().rsplit_once(':').unwrap().1.to_string()
}

#[test]
fn dns_guard_hosts_pin_pulls_from_the_real_registry_by_name() {
    let env = Env::new();
    let p = small(&env);
    let name = format!("registry.test:{}", port(&env));
    let mut o = options(&env, "fx/app:1");
    o["reference"] = format!("{name}/fx/app:1").into();
    o["plain_http"] = json!([name]);
    o["hosts"] = json!({"Registry.Test": "127.0.0.1"});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for l in &p.layers {
        assert!(registry_kit::has_blob(env.store(), &l.digest));
    }
    assert_eq!(env.proxy.count_gets(&p.layers[0].digest), 1);
}

#[test]
fn dns_guard_token_realm_pinned_to_loopback_is_used() {
    // The harmless twin of the refusal below: a realm name pinned to the token server gives
    // a token, so the refusal is the filter's doing and not a lookup that cannot work.
    let env = Env::new();
    small(&env);
    let auth = TokenServer::start(vec![json!({"token": "T"})]);
    let auth_port = auth.stub.addr().rsplit_once(':').unwrap().1.to_string();
    let challenge = format!(
        r#"Bearer realm="http://auth.test:{auth_port}/token",service="reg.test",scope="{}""#,
        registry_kit::SCOPE
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let mut o = options(&env, "fx/app:1");
    o["hosts"] = json!({"auth.test": "127.0.0.1"});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

/// A pull whose token realm is `http://evil.test:PORT/token`, evil.test pinned to `ip`.
fn realm_pull(ip: &str) -> (capi::Outcome, Env) {
    let env = Env::new();
    small(&env);
    let challenge = r#"Bearer realm="http://evil.test:8080/token",service="reg.test""#;
    bearer_front(&env.proxy, &["T"], challenge.to_string());
    let mut o = options(&env, "fx/app:1");
    o["hosts"] = json!({"evil.test": ip});
    o["max_attempts"] = 1.into();
    let (out, _) = capi::pull(o);
    (out, env)
}

#[test]
fn dns_guard_token_realm_name_resolving_to_metadata_is_refused() {
    for ip in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"] {
        let (out, env) = realm_pull(ip);
        assert_eq!(out.code, vic_result::Registry, "{ip}: {}", out.message);
        assert!(
            out.message
                .contains("evil.test resolves only to link-local or metadata addresses"),
            "{ip}: {}",
            out.message
        );
        assert!(out.message.contains("token request"), "{}", out.message);
        assert_nothing_written(env.store());
    }
}

#[test]
fn dns_guard_blob_redirect_to_a_name_resolving_to_metadata_is_refused() {
    let env = Env::new();
    let p = small(&env);
    let l = &p.layers[0].digest;
    let to = "http://evil.test/latest/meta-data/iam/security-credentials/";
    env.proxy
        .respond(Match::blob(l), 302, &[("Location", to)], b"", None);
    let mut o = options(&env, "fx/app:1");
    o["hosts"] = json!({"evil.test": ["169.254.169.254", "fe80::1"]});
    o["max_attempts"] = 3.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    assert!(
        out.message
            .contains("evil.test resolves only to link-local"),
        "{}",
        out.message
    );
    // Refused for good: not retried.
    assert_eq!(env.proxy.count_gets(l), 1, "a refusal is not transient");
}

#[test]
fn dns_guard_mixed_answer_keeps_only_the_allowed_address() {
    // A name with a forbidden and an allowed address connects to the allowed one.
    let env = Env::new();
    small(&env);
    let name = format!("mixed.test:{}", port(&env));
    let mut o = options(&env, "fx/app:1");
    o["reference"] = format!("{name}/fx/app:1").into();
    o["plain_http"] = json!([name]);
    o["hosts"] = json!({"mixed.test": ["169.254.169.254", "127.0.0.1"]});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn dns_guard_localhost_still_works() {
    let env = Env::new();
    small(&env);
    let name = format!("localhost:{}", port(&env));
    let mut o = options(&env, "fx/app:1");
    o["reference"] = format!("{name}/fx/app:1").into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn dns_guard_bad_hosts_entries_are_invalid_arguments() {
    let env = Env::new();
    for hosts in [
        json!({"r.test": "not-an-ip"}),
        json!({"r.test:5000": "127.0.0.1"}),
        json!({"r.test": []}),
        json!({"r.test": 5}),
        json!({"r.test": "0.0.0.0"}),
        json!({"r.test": "::"}),
        json!({"r.test": "224.0.0.1"}),
    ] {
        let mut o = options(&env, "fx/app:1");
        o["hosts"] = hosts.clone();
        let Err((code, message)) = capi::start(&o) else {
            panic!("{hosts} was accepted");
        };
        assert_eq!(code, vic_result::InvalidArgument, "{hosts}: {message}");
        assert!(message.contains("hosts"), "{hosts}: {message}");
    }
}

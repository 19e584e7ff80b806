//! S01: the token endpoint answers `access_token` only, both, `token` only, neither, or a
//! tiny `expires_in`. One token fetch per pull, even with three downloads at once.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::{app_image, Env};
use registry_kit::{assert_nothing_written, bearer_front, options, TokenServer};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;

/// Pull fx/app:1 behind a front that accepts only `token`; returns the token server and
/// what the front saw.
fn run(body: serde_json::Value, token: &str, slow: bool) -> (capi::Outcome, TokenServer, Env) {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &app_image());
    let auth = TokenServer::start(vec![body]);
    let seen = bearer_front(&env.proxy, &[token], auth.challenge());
    if slow {
        // Long enough to outlive a 1 s token that was not raised to 60 s.
        env.proxy
            .throttle(Match::blob(&pushed.layers[3].digest), 400 << 10, None);
    }
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(o);
    if out.code == vic_result::Ok {
        // Every registry request after the token carries exactly the issued value.
        let all = seen.all();
        let first = all.iter().position(|(_, a)| a.is_some()).unwrap();
        assert!(all[..first].iter().all(|(p, _)| p.contains("/manifests/")));
        for (path, a) in &all[first..] {
            assert_eq!(
                a.as_deref(),
                Some(format!("Bearer {token}").as_str()),
                "{path}"
            );
        }
        let blobs = all.iter().filter(|(p, _)| p.contains("/blobs/")).count();
        assert!(blobs >= 5, "config and 4 layers fetched: {blobs}");
        for l in &pushed.layers {
            assert!(registry_kit::has_blob(env.store(), &l.digest));
        }
    }
    (out, auth, env)
}

#[test]
fn s01a_access_token_only() {
    let (out, auth, _env) = run(json!({"access_token":"TA","expires_in":300}), "TA", false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1, "one token fetch for the whole pull");
}

#[test]
fn s01b_token_and_access_token() {
    let now = "2026-01-01T00:00:00Z";
    let body = json!({"token":"TT","access_token":"TT","expires_in":300,"issued_at":now});
    let (out, auth, _env) = run(body, "TT", false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

#[test]
fn s01c_token_without_expires_in_lasts_60s() {
    let (out, auth, _env) = run(json!({"token":"TT"}), "TT", true);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

#[test]
fn s01d_no_token_fails_before_any_authorized_request() {
    let (out, auth, env) = run(json!({"expires_in":300}), "never", false);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(
        out.message.contains("neither token nor access_token"),
        "{}",
        out.message
    );
    assert!(
        out.message.contains(&auth.realm()),
        "names AUTH/token: {}",
        out.message
    );
    assert_eq!(auth.calls(), 1, "no retry loop on a useless answer");
    let blob_requests = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_requests, 0);
    assert_nothing_written(env.store());
}

#[test]
fn s01e_one_second_lifetime_is_raised_to_60s() {
    let t0 = std::time::Instant::now();
    let (out, auth, _env) = run(json!({"token":"TT","expires_in":1}), "TT", true);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(
        t0.elapsed().as_secs_f64() > 2.0,
        "the pull outlived the raw 1 s lifetime"
    );
    assert_eq!(auth.calls(), 1);
}

#[test]
fn s01f_expires_in_as_a_string_or_float_and_empty_token_field() {
    // Both spellings appear in real token servers; neither may fail the pull.
    let body = json!({"token":"","access_token":"TA","expires_in":"300"});
    let (out, auth, _env) = run(body, "TA", false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
    let body = json!({"token":"TT","expires_in":300.5,"refresh_token":null});
    let (out, auth, _env) = run(body, "TT", false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

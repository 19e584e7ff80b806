//! S02: WWW-Authenticate variants end to end: a scope with a comma, unquoted values,
//! several challenges in one header or in two, odd case and spacing, quoted-pairs.
//! The token server answers 400 to any truncated scope.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::Env;
use registry_kit::{front, options, Gate, TokenServer, SERVICE};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::{ImageSpec, Layer};

const BASIC_U1_P1: &str = "Basic dTE6cDE=";

/// Pull fx/app:1 whose registry challenges with `challenges(realm)`; the front accepts the
/// token "T" and, when `basic_ok`, Basic u1:p1.
fn run(
    challenges: impl Fn(&str) -> Vec<String>,
    credentials: bool,
    basic_ok: bool,
) -> (capi::Outcome, TokenServer) {
    let env = Env::new();
    env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(40 << 10, 21)]),
    );
    let auth = TokenServer::start(vec![json!({"token":"T","expires_in":300})]);
    let values = challenges(&auth.realm());
    let basic_ok = basic_ok && credentials;
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T") => Gate::Pass,
        Some(BASIC_U1_P1) if basic_ok => Gate::Pass,
        _ => Gate::Challenge(values.clone()),
    });
    let mut o = options(&env, "fx/app:1");
    if credentials {
        o["username"] = "u1".into();
        o["password"] = "p1".into();
    }
    let (out, _) = capi::pull(o);
    (out, auth)
}

/// Each token request carried one whole scope, and the service.
fn token_requests_were_whole(auth: &TokenServer, scope: &str) {
    let reqs = auth.stub.requests();
    assert!(!reqs.is_empty());
    for r in reqs {
        assert_eq!(r.params("scope"), vec![scope.to_string()], "{:?}", r.query);
        assert_eq!(
            r.param("service").as_deref(),
            Some(SERVICE),
            "{:?}",
            r.query
        );
    }
}

#[test]
fn s02a_scope_with_comma_is_sent_whole() {
    let (out, auth) = run(
        |realm| {
            vec![format!(
                r#"Bearer realm="{realm}",service="reg.test",scope="repository:fx/app:pull,push""#
            )]
        },
        false,
        false,
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    token_requests_were_whole(&auth, "repository:fx/app:pull,push");
}

#[test]
fn s02b_unquoted_service() {
    let (out, auth) = run(
        |realm| {
            vec![format!(
                r#"Bearer realm="{realm}",service=reg.test,scope="repository:fx/app:pull""#
            )]
        },
        false,
        false,
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    token_requests_were_whole(&auth, "repository:fx/app:pull");
}

fn basic_then_bearer(realm: &str) -> Vec<String> {
    vec![format!(
        r#"Basic realm="reg.test", Bearer realm="{realm}",{}"#,
        r#"service="reg.test",scope="repository:fx/app:pull""#
    )]
}

#[test]
fn s02c_basic_and_bearer_in_one_header_uses_bearer() {
    let (out, auth) = run(basic_then_bearer, false, false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    token_requests_were_whole(&auth, "repository:fx/app:pull");
    assert!(auth.stub.requests()[0].header("authorization").is_none());
}

#[test]
fn s02c_with_credentials_still_uses_bearer() {
    let (out, auth) = run(basic_then_bearer, true, false);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let first = &auth.stub.requests()[0];
    assert_eq!(
        first.header("authorization"),
        Some(BASIC_U1_P1),
        "creds go to the realm"
    );
}

#[test]
fn s02d_negotiate_and_basic_as_two_headers() {
    let (out, auth) = run(
        |_| {
            vec![
                "Negotiate".to_string(),
                r#"Basic realm="reg.test""#.to_string(),
            ]
        },
        true,
        true,
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 0, "no token server involved");
}

#[test]
fn s02d_without_credentials_says_basic_is_wanted() {
    let (out, _) = run(
        |_| {
            vec![
                "Negotiate".to_string(),
                r#"Basic realm="reg.test""#.to_string(),
            ]
        },
        false,
        true,
    );
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains("basic credentials"), "{}", out.message);
}

#[test]
fn s02e_case_and_spacing() {
    let (out, auth) = run(
        |realm| vec![format!(r#"bearer  Realm="{realm}" , SERVICE="reg.test""#)],
        false,
        false,
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    // No scope in the challenge: the client asks for its own.
    token_requests_were_whole(&auth, "repository:fx/app:pull");
}

#[test]
fn s02f_quoted_pair_and_comma_before_the_scope() {
    let (out, auth) = run(
        |realm| {
            vec![format!(
                r#"Bearer realm="{realm}",error="invalid_token",{}{}"#,
                r#"error_description="bad \"x\", y","#,
                r#"service="reg.test",scope="repository:fx/app:pull""#
            )]
        },
        false,
        false,
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    token_requests_were_whole(&auth, "repository:fx/app:pull");
}

//! Variants of the pull scenarios (pull-scenarios.md S01-S20, not S21): more cases of the same
//! kinds than the scenario tests pin down, named `vNN_<scenario>_<case>`. Each asserts what
//! docker / containerd / skopeo users would expect; they were written as probes by a tester,
//! and the 11 that failed were fixed in the product, not in the test.

mod common;
mod registry_kit;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::capi;
use common::fixtures::{app_image, assert_blobs_verify, leftovers, Env};
use registry_kit::{
    assert_nothing_written, bearer_front, capture_logs, front, has_blob, index_with, log_lines,
    options, pull_platform, respond, serve_range, unauthorized, Gate, TokenServer, SCOPE, SERVICE,
};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull::progress::Kind;
use vicpull_testkit::image::put_manifest;
use vicpull_testkit::image::tarball::{dir_tar, TarWriter};
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{
    sha256_digest, Compression, FaultProxy, Format, ImageSpec, Layer, Platform, PushedImage,
    Registry, Reply, Stub, StubRequest,
};

// ---------------------------------------------------------------- shared helpers

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Two incompressible layers (40 KiB and 600 KiB), Docker schema2.
fn small_spec(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::random(40 << 10, seed),
        Layer::random(600 << 10, seed + 1),
    ])
}

fn blob_gets(env: &Env, digest: &str) -> Vec<vicpull_testkit::proxy::RequestLog> {
    env.proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(digest))
        .collect()
}

fn lock_files(store: &std::path::Path) -> Vec<String> {
    leftovers(store)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect()
}

/// A raw HTTP/1.1 server on a loopback address whose handler writes whole answers (head and
/// body) itself: for what the stub cannot send (no Content-Length, chunked). Every
/// connection is closed after one answer.
struct RawServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    hits: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(ip: &str, answer: impl Fn(usize, &str) -> Vec<u8> + Send + 'static) -> RawServer {
        assert!(ip.starts_with("127."));
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (stop.clone(), hits.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => break,
                    }
                }
                let n = h.fetch_add(1, Ordering::SeqCst);
                let out = answer(n, &String::from_utf8_lossy(&head));
                let _ = c.write_all(&out);
                let _ = c.flush();
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        });
        RawServer {
            addr,
            stop,
            thread: Some(thread),
            hits,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- S01 token responses

/// Pull fx/app:1 behind a Bearer front that accepts `token`, with the token server answering
/// `answer(n, request)`.
fn token_run(
    answer: impl Fn(usize, &StubRequest) -> Reply + Send + Sync + 'static,
    token: &str,
    extra: Value,
) -> (capi::Outcome, TokenServer, Env) {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(11));
    let auth = TokenServer::start_with(answer);
    bearer_front(&env.proxy, &[token], auth.challenge());
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    if let Value::Object(m) = extra {
        for (k, v) in m {
            o[k] = v;
        }
    }
    let (out, _) = capi::pull(o);
    (out, auth, env)
}

fn token_body(body: Value) -> impl Fn(usize, &StubRequest) -> Reply + Send + Sync + 'static {
    move |_, _| Reply::json(200, &body)
}

fn no_blob_requests(env: &Env) -> bool {
    env.proxy
        .requests()
        .iter()
        .all(|r| !r.path.contains("/blobs/"))
}

// S01: an extra level of nesting hides the token: fail clearly, before any blob request.
#[test]
fn v01_s01_token_nested_under_data_fails_clearly() {
    let (out, auth, env) = token_run(token_body(json!({"data":{"token":"T"}})), "T", json!({}));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains(&auth.realm()), "{}", out.message);
    assert_eq!(auth.calls(), 1);
    assert!(no_blob_requests(&env));
    assert_nothing_written(env.store());
}

// S01: an `expires_in` too large for any duration type must not overflow or fail.
#[test]
fn v02_s01_expires_in_u64_max() {
    let body = json!({"token":"T","expires_in":u64::MAX});
    let (out, auth, _env) = token_run(token_body(body), "T", json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S01: a float `expires_in` of 1e300.
#[test]
fn v03_s01_expires_in_huge_float() {
    let body = json!({"token":"T","expires_in":1e300});
    let (out, auth, _env) = token_run(token_body(body), "T", json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S01: a negative `expires_in` is raised to the 60 s floor like a small one.
#[test]
fn v04_s01_expires_in_negative() {
    let body = json!({"token":"T","expires_in":-30});
    let (out, auth, _env) = token_run(token_body(body), "T", json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S01: `issued_at` years in the past (server clock skew): still one token for the pull.
#[test]
fn v05_s01_issued_at_long_past() {
    let body = json!({"token":"T","expires_in":300,"issued_at":"2001-01-01T00:00:00Z"});
    let (out, auth, _env) = token_run(token_body(body), "T", json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        auth.calls(),
        1,
        "a token per request would be a thundering herd"
    );
}

// S01: `issued_at` in the future.
#[test]
fn v06_s01_issued_at_in_future() {
    let body = json!({"token":"T","expires_in":300,"issued_at":"2100-01-01T00:00:00Z"});
    let (out, auth, _env) = token_run(token_body(body), "T", json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S01: a 200 with an HTML login page instead of JSON: an auth error naming the realm.
#[test]
fn v07_s01_html_200_from_token_endpoint() {
    let html = "<html><body><form>Sign in</form></body></html>";
    let (out, auth, env) = token_run(
        move |_, _| {
            Reply::new(200)
                .header("Content-Type", "text/html")
                .body(html)
        },
        "T",
        json!({}),
    );
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains(&auth.realm()), "{}", out.message);
    assert!(auth.calls() <= 2, "token calls: {}", auth.calls());
    assert!(no_blob_requests(&env));
    assert_nothing_written(env.store());
}

// S01: a token with every token68 character is sent back verbatim.
#[test]
fn v08_s01_token68_characters_sent_verbatim() {
    let t = "eyJh.b-c_d~e+f/g==";
    let (out, auth, _env) = token_run(token_body(json!({"access_token": t})), t, json!({}));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S01: the token endpoint refuses the credentials (401): auth error naming the realm, and
// the password appears nowhere (message, logs).
#[test]
fn v09_s01_token_endpoint_401_hides_password() {
    capture_logs();
    let pw = "pw-S3CRET-9xq";
    let (out, auth, env) = token_run(
        |_, _| Reply::json(401, &json!({"details":"incorrect username or password"})),
        "T",
        json!({"username":"u1","password":pw}),
    );
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains(&auth.realm()), "{}", out.message);
    assert!(auth.calls() <= 2, "token calls: {}", auth.calls());
    let basic = "dTE6cHctUzNDUkVULTl4cQ"; // base64("u1:pw-S3CRET-9xq") without padding
    assert!(!out.message.contains(pw) && !out.message.contains(basic));
    for l in log_lines() {
        assert!(!l.contains(pw) && !l.contains(basic), "secret in log: {l}");
    }
    assert_nothing_written(env.store());
}

// S01: a token the registry keeps refusing: auth error, no loop, the token never shown.
#[test]
fn v10_s01_refused_token_never_in_message_or_logs() {
    capture_logs();
    let t = "TOKSECRET4242";
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(12));
    let auth = TokenServer::start(vec![json!({"token": t})]);
    bearer_front(&env.proxy, &["never"], auth.challenge());
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(auth.calls() <= 3, "token calls: {}", auth.calls());
    assert!(out.message.contains("fx/app"), "{}", out.message);
    assert!(!out.message.contains(t), "{}", out.message);
    for l in log_lines() {
        assert!(!l.contains(t), "token in log: {l}");
    }
}

// ---------------------------------------------------------------- S02 challenges

/// Pull fx/app:1 whose registry challenges with `values(realm)`; "Bearer T" passes.
fn challenge_run(values: impl Fn(&str) -> Vec<String>) -> (capi::Outcome, TokenServer, Env) {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(13));
    let auth = TokenServer::start(vec![json!({"token":"T","expires_in":300})]);
    let v = values(&auth.realm());
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T") => Gate::Pass,
        _ => Gate::Challenge(v.clone()),
    });
    let t0 = Instant::now();
    let (mut out, _) = capi::pull(options(&env, "fx/app:1"));
    out.elapsed = t0.elapsed();
    (out, auth, env)
}

// S02: a realm that already carries a query keeps it, and service/scope are appended.
#[test]
fn v11_s02_realm_with_query() {
    let (out, auth, _env) = challenge_run(|realm| {
        vec![format!(
            r#"Bearer realm="{realm}?account=a1",service="{SERVICE}",scope="{SCOPE}""#
        )]
    });
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for r in auth.stub.requests() {
        assert_eq!(r.path, "/token");
        assert_eq!(r.param("account").as_deref(), Some("a1"), "{:?}", r.query);
        assert_eq!(r.params("scope"), vec!["repository:fx/app:pull"]);
    }
}

// S02: a challenge with no scope: the client asks for its own `repository:<repo>:pull`.
#[test]
fn v12_s02_missing_scope_uses_default() {
    let (out, auth, _env) =
        challenge_run(|realm| vec![format!(r#"Bearer realm="{realm}",service="{SERVICE}""#)]);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for r in auth.stub.requests() {
        assert_eq!(r.params("scope"), vec!["repository:fx/app:pull"]);
    }
}

// S02: Basic and Bearer as two header lines, pulling anonymously: Bearer is used.
#[test]
fn v13_s02_basic_then_bearer_as_two_headers_anonymous() {
    let (out, auth, _env) = challenge_run(|realm| {
        vec![
            r#"Basic realm="reg.test""#.to_string(),
            format!(r#"Bearer realm="{realm}",service="{SERVICE}",scope="repository:fx/app:pull""#),
        ]
    });
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S02: upper-case scheme, parameters in another order, spaces around commas and `=`.
#[test]
fn v14_s02_uppercase_scheme_reordered_params() {
    let (out, _auth, _env) = challenge_run(|realm| {
        vec![format!(
            r#"BEARER scope="repository:fx/app:pull" ,  service = "{SERVICE}",realm= "{realm}""#
        )]
    });
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S02: only an unknown scheme offered: a prompt auth error that names the scheme.
#[test]
fn v15_s02_only_negotiate_fails_fast() {
    let (out, auth, _env) = challenge_run(|_| vec!["Negotiate".to_string()]);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    assert!(
        out.message.to_lowercase().contains("negotiate"),
        "{}",
        out.message
    );
    assert_eq!(auth.calls(), 0);
}

// S02: `Bearer` with a token68 and no realm: auth error, no panic, no token request.
#[test]
fn v16_s02_bearer_token68_without_realm() {
    let (out, auth, _env) = challenge_run(|_| vec!["Bearer dG9rZW42OA==".to_string()]);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(
        out.message.to_lowercase().contains("realm"),
        "{}",
        out.message
    );
    assert_eq!(auth.calls(), 0);
}

// S02: an `error="insufficient_scope"` in the very first challenge is not a failure.
#[test]
fn v17_s02_error_param_on_first_challenge() {
    const ERR: &str = r#"error="insufficient_scope""#;
    let (out, auth, _env) = challenge_run(|realm| {
        vec![format!(
            r#"Bearer realm="{realm}",service="{SERVICE}",scope="{SCOPE}",{ERR}"#
        )]
    });
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 1);
}

// S02: an empty quoted service and a realm whose query holds a comma.
#[test]
fn v18_s02_empty_service_and_comma_in_realm_query() {
    let (out, auth, _env) = challenge_run(|realm| {
        vec![format!(
            r#"Bearer realm="{realm}?x=1,2",service="",scope="repository:fx/app:pull""#
        )]
    });
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for r in auth.stub.requests() {
        assert_eq!(r.param("x").as_deref(), Some("1,2"), "{:?}", r.query);
    }
}

// ---------------------------------------------------------------- S04 token expiry

// S04: the blob redirects to same-origin storage that rejects the first token (expired)
// with a 401: the client renews once and succeeds.
#[test]
fn v20_s04_401_after_same_origin_redirect_renews() {
    let env = Env::new();
    let spec = small_spec(20);
    let pushed = env.push("fx/app", "1", &spec);
    let big = pushed.layers[1].digest.clone();
    let big_bytes = spec.layers[1].blob().to_vec();
    let auth = TokenServer::start(vec![json!({"token":"T1"}), json!({"token":"T2"})]);
    let challenge = auth.challenge();
    let expired = format!("{challenge},error=\"invalid_token\"");
    env.proxy.hook(move |r| {
        let a = r.header("authorization");
        if r.path.starts_with("/_storage/") {
            return Some(if a == Some("Bearer T2") {
                respond(200, &[], &big_bytes)
            } else {
                unauthorized(std::slice::from_ref(&expired))
            });
        }
        if !matches!(a, Some("Bearer T1") | Some("Bearer T2")) {
            return Some(unauthorized(std::slice::from_ref(&challenge)));
        }
        if r.blob_digest() == Some(big.as_str()) {
            let loc = format!("/_storage/{}", hex(&big));
            return Some(respond(307, &[("Location", &loc)], b""));
        }
        None
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 2);
    assert_blobs_verify(env.store());
}

// S04: a storage host on 127.0.0.2 answers 401 with the registry's own challenge: the
// registry token must never be sent there; going back to the registry for a fresh
// Location succeeds.
#[test]
fn v21_s04_cdn_401_with_bearer_challenge_gets_no_token() {
    let env = Env::new();
    let spec = small_spec(21);
    let pushed = env.push("fx/app", "1", &spec);
    let big = pushed.layers[1].digest.clone();
    let bytes = spec.layers[1].blob().to_vec();
    let auth = TokenServer::start(vec![json!({"token":"T"})]);
    let challenge = auth.challenge();
    let ch2 = challenge.clone();
    let first = AtomicBool::new(true);
    let cdn = Stub::start("127.0.0.2", move |r| {
        if r.header("authorization").is_some() || first.swap(false, Ordering::SeqCst) {
            return Reply::new(401).header("WWW-Authenticate", &ch2);
        }
        serve_range(r, &bytes)
    });
    let cdn_url = cdn.url();
    let b2 = big.clone();
    bearer_front(&env.proxy, &["T"], challenge);
    env.proxy.hook(move |r| {
        (r.blob_digest() == Some(b2.as_str()) && r.header("authorization") == Some("Bearer T"))
            .then(|| {
                let loc = format!("{cdn_url}/store/{}?sig=1", hex(&b2));
                respond(307, &[("Location", &loc)], b"")
            })
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    for q in cdn.requests() {
        assert!(q.header("authorization").is_none(), "token sent to the CDN");
    }
    if out.code != vic_result::Ok {
        for r in env.proxy.requests() {
            eprintln!(
                "REG {} {} {} auth={}",
                r.method, r.path, r.status, r.has_authorization
            );
        }
        for r in cdn.requests() {
            eprintln!("CDN {} {} {:?}", r.method, r.path, r.query);
        }
        eprintln!("token calls {}", auth.calls());
    }
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S04: the config blob (not a layer) is the request that meets the expired token.
#[test]
fn v22_s04_config_fetch_meets_expired_token() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(22));
    let cfg = pushed.config_digest.clone();
    let auth = TokenServer::start(vec![json!({"token":"T1"}), json!({"token":"T2"})]);
    let challenge = auth.challenge();
    let expired = format!("{challenge},error=\"invalid_token\"");
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T1") if r.path.ends_with(&cfg) => Gate::Challenge(vec![expired.clone()]),
        Some("Bearer T1") | Some("Bearer T2") => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 2);
}

// S04: a 403 DENIED on a blob with a valid token: an auth error naming the blob, after a
// bounded number of tries (no token loop).
#[test]
fn v23_s04_403_denied_on_blob_is_bounded() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(23));
    let big = pushed.layers[1].digest.clone();
    let auth = TokenServer::start(vec![json!({"token":"T"})]);
    bearer_front(&env.proxy, &["T"], auth.challenge());
    let body =
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
    env.proxy.respond(
        Match::blob(&big),
        403,
        &[("Content-Type", "application/json")],
        body,
        None,
    );
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains(&big), "{}", out.message);
    assert!(auth.calls() <= 2, "token calls {}", auth.calls());
    assert!(env.proxy.count_gets(&big) <= 5);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(!has_blob(env.store(), &big));
}

// ---------------------------------------------------------------- S05 redirects

/// fx/app:1 with two layers; blob GETs of both layers are redirected by the front to
/// `location(hex)` with `status`. Returns (env, spec bytes by hex, pushed).
fn redirect_env(
    status: u16,
    location: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (Env, HashMap<String, Vec<u8>>, PushedImage) {
    let env = Env::new();
    let spec = small_spec(30);
    let pushed = env.push("fx/app", "1", &spec);
    let mut bytes = HashMap::new();
    for l in &spec.layers {
        bytes.insert(hex(l.digest()).to_string(), l.blob().to_vec());
    }
    let hexes: Vec<String> = bytes.keys().cloned().collect();
    env.proxy.hook(move |r| {
        let h = hex(r.blob_digest()?).to_string();
        hexes
            .contains(&h)
            .then(|| respond(status, &[("Location", &location(&h))], b""))
    });
    (env, bytes, pushed)
}

fn no_auth_seen(stub: &Stub) {
    for q in stub.requests() {
        assert!(
            q.header("authorization").is_none(),
            "Authorization leaked: {q:?}"
        );
    }
}

// S05: a chain REG -> 127.0.0.2 -> 127.0.0.3; no Authorization on either hop.
#[test]
fn v30_s05_redirect_chain_over_two_hosts() {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let s3 = store.clone();
    let cdn2 = Stub::start("127.0.0.3", move |r| {
        let h = r.path.trim_start_matches("/obj/");
        match s3.lock().unwrap().get(h) {
            Some(b) if r.query.as_deref() == Some("sig=2") => serve_range(r, b),
            _ => Reply::new(403),
        }
    });
    let cdn2_url = cdn2.url();
    let cdn1 = Stub::start("127.0.0.2", move |r| {
        let h = r.path.trim_start_matches("/store/");
        Reply::new(302).header("Location", &format!("{cdn2_url}/obj/{h}?sig=2"))
    });
    let cdn1_url = cdn1.url();
    let (env, bytes, _) = redirect_env(307, move |h| format!("{cdn1_url}/store/{h}?sig=1"));
    *store.lock().unwrap() = bytes;
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    no_auth_seen(&cdn1);
    no_auth_seen(&cdn2);
    assert_eq!(cdn2.requests().len(), 2);
}

// S05: the storage host answers with a relative Location (resolved against itself).
#[test]
fn v31_s05_relative_location_on_storage_host() {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let s = store.clone();
    let cdn = Stub::start("127.0.0.2", move |r| {
        if let Some(h) = r.path.strip_prefix("/a/") {
            return Reply::new(302).header("Location", &format!("../b/{h}?sig=2"));
        }
        let h = r.path.trim_start_matches("/b/");
        match s.lock().unwrap().get(h) {
            Some(b) => serve_range(r, b),
            None => Reply::new(404),
        }
    });
    let url = cdn.url();
    let (env, bytes, _) = redirect_env(307, move |h| format!("{url}/a/{h}?sig=1"));
    *store.lock().unwrap() = bytes;
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    no_auth_seen(&cdn);
    assert!(cdn.requests().iter().any(|q| q.path.starts_with("/b/")));
}

// S05: 303 See Other to the storage host.
#[test]
fn v32_s05_303_see_other() {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let s = store.clone();
    let cdn = Stub::start("127.0.0.2", move |r| {
        match s.lock().unwrap().get(r.path.trim_start_matches("/s/")) {
            Some(b) if r.method == "GET" => serve_range(r, b),
            _ => Reply::new(404),
        }
    });
    let url = cdn.url();
    let (env, bytes, _) = redirect_env(303, move |h| format!("{url}/s/{h}"));
    *store.lock().unwrap() = bytes;
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    no_auth_seen(&cdn);
}

// S05: percent-escapes in the Location path and query reach the storage host byte for byte.
#[test]
fn v33_s05_location_percent_encoding_kept() {
    let store: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let s = store.clone();
    const QUERY: &str = "X-Sig=a%2Bb%3D%3D&e=%7E&sp=a+b&p=%252F";
    let cdn = Stub::start("127.0.0.2", move |r| {
        let Some(rest) = r.path.strip_prefix("/store/") else {
            return Reply::new(404);
        };
        let Some(h) = rest.strip_suffix("/x%2Fy%20z") else {
            return Reply::new(403).body(format!("path changed: {}", r.path));
        };
        if r.query.as_deref() != Some(QUERY) {
            return Reply::new(403).body(format!("query changed: {:?}", r.query));
        }
        match s.lock().unwrap().get(h) {
            Some(b) => serve_range(r, b),
            None => Reply::new(404),
        }
    });
    let url = cdn.url();
    let (env, bytes, _) = redirect_env(307, move |h| format!("{url}/store/{h}/x%2Fy%20z?{QUERY}"));
    *store.lock().unwrap() = bytes;
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(cdn.requests().len(), 2, "{:?}", cdn.requests());
}

// S05: a storage host that redirects to itself forever: a bounded failure naming the blob.
#[test]
fn v34_s05_redirect_loop_is_bounded() {
    let cdn = Stub::start("127.0.0.2", |r| {
        let q = r.query.clone().unwrap_or_default();
        Reply::new(302).header("Location", &format!("{}?{q}x", r.path))
    });
    let url = cdn.url();
    let (env, _, pushed) = redirect_env(307, move |h| format!("{url}/loop/{h}?x"));
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_ne!(out.code, vic_result::Ok);
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let named = pushed
        .layers
        .iter()
        .any(|l| out.message.contains(&l.digest));
    assert!(named, "{}", out.message);
    assert!(
        out.message.to_lowercase().contains("redirect"),
        "{}",
        out.message
    );
    assert!(
        cdn.requests().len() < 200,
        "{} requests",
        cdn.requests().len()
    );
    for l in &pushed.layers {
        assert!(!has_blob(env.store(), &l.digest));
    }
}

// S05: REG -> storage on 127.0.0.2 -> back to REG's own `/_storage/`, which wants the token:
// docker (Go's client) sends the registry's Authorization again once back on its origin.
#[test]
fn v35_s05_redirect_back_to_origin_needs_the_token_again() {
    let cdn = Stub::start("127.0.0.2", |_| Reply::new(404));
    let cdn_url = cdn.url();
    drop(cdn);
    let env = Env::new();
    let spec = small_spec(35);
    let pushed = env.push("fx/app", "1", &spec);
    let big = pushed.layers[1].digest.clone();
    let bytes = spec.layers[1].blob().to_vec();
    let origin = env.proxy.url();
    let cdn = Stub::start("127.0.0.2", move |r| {
        if r.header("authorization").is_some() {
            return Reply::new(400);
        }
        Reply::new(307).header("Location", &format!("{origin}/_storage{}", r.path))
    });
    let _ = cdn_url;
    let cdn_url = cdn.url();
    let auth = TokenServer::start(vec![json!({"token":"T"})]);
    let challenge = auth.challenge();
    env.proxy.hook(move |r| {
        let ok = r.header("authorization") == Some("Bearer T");
        if r.path.starts_with("/_storage/") {
            return Some(if ok {
                respond(200, &[], &bytes)
            } else {
                unauthorized(std::slice::from_ref(&challenge))
            });
        }
        if !ok {
            return Some(unauthorized(std::slice::from_ref(&challenge)));
        }
        (r.blob_digest() == Some(big.as_str())).then(|| {
            let loc = format!("{cdn_url}/{}", hex(&big));
            respond(307, &[("Location", &loc)], b"")
        })
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    no_auth_seen(&cdn);
    if out.code != vic_result::Ok {
        for r in env.proxy.requests() {
            eprintln!(
                "REG {} {} {} auth={}",
                r.method, r.path, r.status, r.has_authorization
            );
        }
        for r in cdn.requests() {
            eprintln!("CDN {} {} {:?}", r.method, r.path, r.query);
        }
        eprintln!("token calls {}", auth.calls());
    }
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S05: the manifest (not a blob) redirected to another host, which refuses Authorization.
#[test]
fn v36_s05_manifest_redirect_to_other_host() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(36));
    let (mt, body) = (
        pushed.manifest_media_type.clone(),
        pushed.manifest_bytes.clone(),
    );
    let cdn = Stub::start("127.0.0.2", move |r| {
        if r.header("authorization").is_some() {
            return Reply::new(400);
        }
        Reply::new(200)
            .header("Content-Type", &mt)
            .body(body.clone())
    });
    let url = cdn.url();
    let auth = TokenServer::start(vec![json!({"token":"T"})]);
    bearer_front(&env.proxy, &["T"], auth.challenge());
    env.proxy.hook(move |r| {
        let ok = r.header("authorization") == Some("Bearer T");
        (ok && r.path.ends_with("/manifests/1"))
            .then(|| respond(307, &[("Location", &format!("{url}/m/1"))], b""))
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    no_auth_seen(&cdn);
    assert!(!cdn.requests().is_empty());
}

// ---------------------------------------------------------------- S07/S08 transport

/// fx/app:1 with L1 (64 KiB) and L2 (1 MiB + 123), plain registry behind the front.
fn transfer_env() -> (Env, PushedImage, ImageSpec) {
    let env = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random(64 << 10, 40),
        Layer::random((1 << 20) + 123, 41),
    ]);
    let pushed = env.push("fx/app", "1", &spec);
    (env, pushed, spec)
}

/// After a cut at 300 000, the first ranged request for L2 gets `action`.
fn on_first_resume(env: &Env, digest: &str, action: Action) {
    env.proxy.cut(digest, 300_000, CutMode::Rst, Some(1));
    let d = digest.to_string();
    let once = AtomicBool::new(false);
    env.proxy.hook(move |r| {
        let ranged = r.header("range").is_some();
        (r.path.ends_with(&d) && ranged && !once.swap(true, Ordering::SeqCst))
            .then(|| action.clone())
    });
}

// S07: a 206 whose Content-Range starts one byte later than asked (with matching body).
#[test]
fn v40_s07_206_starting_after_the_asked_offset() {
    let (env, pushed, spec) = transfer_env();
    let l2 = &spec.layers[1];
    let size = l2.size();
    let action = respond(
        206,
        &[(
            "Content-Range",
            &format!("bytes 300001-{}/{size}", size - 1),
        )],
        &l2.blob()[300_001..],
    );
    on_first_resume(&env, l2.digest(), action);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    let wire: u64 = blob_gets(&env, l2.digest())
        .iter()
        .map(|r| r.body_bytes_sent)
        .sum();
    assert!(wire <= 2 * size + 1, "{wire}");
    assert_blobs_verify(env.store());
}

// S07: a 206 with the right start but a wrong total size in Content-Range.
#[test]
fn v41_s07_206_with_wrong_total() {
    let (env, _, spec) = transfer_env();
    let l2 = &spec.layers[1];
    let size = l2.size();
    let action = respond(
        206,
        &[("Content-Range", &format!("bytes 300000-{}/999", size - 1))],
        &l2.blob()[300_000..],
    );
    on_first_resume(&env, l2.digest(), action);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_blobs_verify(env.store());
}

// S08: a reset in the middle of the config blob.
#[test]
fn v42_s08_reset_during_config_fetch() {
    let env = Env::new();
    let mut spec = small_spec(42);
    // A config larger than one read: many layers make a long diff_ids list.
    for i in 0..40 {
        spec.layers.push(Layer::random(64, 1000 + i));
    }
    let pushed = env.push("fx/app", "1", &spec);
    env.proxy
        .cut(&pushed.config_digest, 100, CutMode::Rst, Some(1));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(&pushed.config_digest), 2);
    assert_blobs_verify(env.store());
}

// S08: a reset in the middle of the manifest body.
#[test]
fn v43_s08_reset_during_manifest_fetch() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(43));
    let cut = Action::Cut {
        after: 40,
        mode: CutMode::Rst,
    };
    env.proxy
        .add_rule(Match::Manifest("1".into()), cut, Some(1));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S08: an early clean FIN in the middle of the manifest body.
#[test]
fn v44_s08_fin_during_manifest_fetch() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(44));
    let cut = Action::Cut {
        after: 40,
        mode: CutMode::Fin,
    };
    env.proxy
        .add_rule(Match::Manifest("1".into()), cut, Some(1));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S08: the manifest body stalls after 10 bytes; the low-speed timeout replaces it.
#[test]
fn v45_s08_stall_during_manifest_fetch() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(45));
    env.proxy.add_rule(
        Match::Manifest("1".into()),
        Action::Stall { after: 10 },
        Some(1),
    );
    let mut o = options(&env, "fx/app:1");
    o["low_speed_time_secs"] = 2.into();
    let t0 = Instant::now();
    let p = capi::start(&o).unwrap();
    let out = p.wait(Duration::from_secs(180));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

// S08: the first answer for a layer is longer than the descriptor size (extra bytes): the
// pull still ends with the right blob, and never stores the long one.
#[test]
fn v46_s08_body_longer_than_descriptor() {
    let (env, pushed, spec) = transfer_env();
    let l1 = &spec.layers[0];
    let mut long = l1.blob().to_vec();
    long.extend(vec![7u8; 64 << 10]);
    env.proxy
        .respond(Match::blob(l1.digest()), 200, &[], &long, Some(1));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[0].digest));
    assert_blobs_verify(env.store());
    assert!(leftovers(env.store())
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp")));
}

/// fx/app:1 whose big layer GET redirects to a raw server on 127.0.0.2.
fn raw_redirect(
    answer: impl Fn(usize, &str, &[u8]) -> Vec<u8> + Send + 'static,
) -> (Env, RawServer, Layer) {
    let (env, _, spec) = transfer_env();
    let l2 = spec.layers[1].clone();
    let bytes = l2.blob().to_vec();
    let raw = RawServer::start("127.0.0.2", move |n, head| answer(n, head, &bytes));
    let url = raw.url();
    let d = l2.digest().to_string();
    env.proxy.hook(move |r| {
        (r.blob_digest() == Some(d.as_str()))
            .then(|| respond(307, &[("Location", &format!("{url}/b/{}", hex(&d)))], b""))
    });
    (env, raw, l2)
}

fn close_delimited(body: &[u8]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    out.extend_from_slice(body);
    out
}

// S08: a 200 with no Content-Length (body ends at close).
#[test]
fn v47_s08_200_without_content_length() {
    let (env, raw, l2) = raw_redirect(|_, _, b| close_delimited(b));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), l2.digest()));
    assert_eq!(raw.hits.load(Ordering::SeqCst), 1);
}

// S08: no Content-Length and the connection closes early once: a retry finishes the blob.
#[test]
fn v48_s08_close_delimited_body_cut_short_once() {
    let (env, raw, l2) = raw_redirect(|n, head, b| {
        let from = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(str::to_string)
            })
            .and_then(|v| v.trim_end_matches('-').trim().parse::<usize>().ok());
        match (n, from) {
            (0, _) => close_delimited(&b[..b.len() / 2]),
            (_, Some(f)) => {
                let mut out = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {f}-{}/{}\r\n\
                     Connection: close\r\n\r\n",
                    b.len() - 1,
                    b.len()
                )
                .into_bytes();
                out.extend_from_slice(&b[f..]);
                out
            }
            _ => close_delimited(b),
        }
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), l2.digest()));
    assert!(raw.hits.load(Ordering::SeqCst) >= 2);
    assert_blobs_verify(env.store());
}

// S08: a chunked body with odd chunk sizes and a chunk extension.
#[test]
fn v49_s08_chunked_body() {
    let (env, _raw, l2) = raw_redirect(|_, _, b| {
        let mut out =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for (i, c) in b.chunks(7777).enumerate() {
            out.extend(format!("{:x};n={i}\r\n", c.len()).into_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), l2.digest()));
}

// ---------------------------------------------------------------- S10 mirrors

struct Pair {
    up: Env,
    _mirror_registry: Registry,
    mirror: FaultProxy,
    pushed: PushedImage,
}

fn pair() -> Pair {
    let up = Env::new();
    let spec = app_image();
    let pushed = up.push("fx/app", "1", &spec);
    let mirror_registry = Registry::start();
    vicpull_testkit::push_image(mirror_registry.addr(), "fx/app", "1", &spec);
    let mirror = FaultProxy::start(mirror_registry.addr());
    Pair {
        up,
        _mirror_registry: mirror_registry,
        mirror,
        pushed,
    }
}

fn mirror_options(p: &Pair, reference: &str, mirror_url: &str) -> Value {
    let mut o = p.up.options(reference);
    o["docker_config"] = false.into();
    o["registries"] = json!({ p.up.proxy.addr(): {"mirrors": [mirror_url]} });
    o
}

// S10: each blob fails on the mirror in its own way (404, 503, wrong bytes, reset every
// time); all of them come from upstream, and the good one only from the mirror.
#[test]
fn v50_s10_different_failure_per_blob() {
    let p = pair();
    let l = &p.pushed.layers;
    let unknown = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#;
    p.mirror
        .respond(Match::blob(&l[0].digest), 404, &[], unknown, None);
    p.mirror
        .respond(Match::blob(&l[1].digest), 503, &[], b"", None);
    p.mirror.corrupt(&l[2].digest, 100, None);
    p.mirror
        .cut(&p.pushed.config_digest, 10, CutMode::Rst, None);
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1", &p.mirror.url()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for d in [
        &l[0].digest,
        &l[1].digest,
        &l[2].digest,
        &p.pushed.config_digest,
    ] {
        assert!(p.up.proxy.count_gets(d) >= 1, "{d} not from upstream");
    }
    assert_eq!(p.up.proxy.count_gets(&l[3].digest), 0);
    assert_blobs_verify(p.up.store());
}

// S10: pulling by digest, the mirror answers with another manifest: not accepted, upstream
// serves the right one.
#[test]
fn v51_s10_mirror_serves_other_manifest_for_a_digest() {
    let p = pair();
    let other = small_spec(51);
    let other_pushed =
        vicpull_testkit::push_image(p._mirror_registry.addr(), "fx/app", "x", &other);
    let m = p.pushed.manifest_digest.clone();
    p.mirror.respond(
        Match::Manifest(m.clone()),
        200,
        &[("Content-Type", other_pushed.manifest_media_type.as_str())],
        &other_pushed.manifest_bytes,
        None,
    );
    let (out, _) = capi::pull(mirror_options(&p, &format!("fx/app@{m}"), &p.mirror.url()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["manifest_digest"], m.as_str());
    assert!(!has_blob(p.up.store(), &other_pushed.manifest_digest));
}

// S10: a mirror that refuses connections: fall back at once.
#[test]
fn v52_s10_dead_mirror_falls_back_quickly() {
    let p = pair();
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let t0 = Instant::now();
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1", &format!("http://{dead}")));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

// S10/S14: a mirror answering 429 with a long Retry-After: move on to upstream now.
#[test]
fn v53_s10_mirror_429_long_wait_moves_on() {
    let p = pair();
    p.mirror
        .respond(Match::Any, 429, &[("Retry-After", "3600")], b"", None);
    let t0 = Instant::now();
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1", &p.mirror.url()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

// S10: the mirror stalls in the middle of one blob: low-speed timeout, then upstream.
#[test]
fn v54_s10_mirror_stalls_mid_blob() {
    let p = pair();
    let big = p.pushed.layers[3].digest.clone();
    p.mirror
        .add_rule(Match::blob(&big), Action::Stall { after: 4096 }, None);
    let mut o = mirror_options(&p, "fx/app:1", &p.mirror.url());
    o["low_speed_time_secs"] = 2.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(has_blob(p.up.store(), &big));
}

// ---------------------------------------------------------------- S12 content types

fn serve_manifest(env: &Env, tag: &str, content_type: Option<&str>, body: &[u8]) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("Content-Type", c))
        .into_iter()
        .collect();
    env.proxy
        .respond(Match::Manifest(tag.to_string()), 200, &headers, body, None);
}

fn pull_tag(env: &Env, repo_tag: &str) -> capi::Outcome {
    capi::pull(options(env, repo_tag)).0
}

// S12: a schema2 manifest labelled plain `application/json`.
#[test]
fn v60_s12_schema2_as_application_json() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(60));
    serve_manifest(&env, "1", Some("application/json"), &p.manifest_bytes);
    let out = pull_tag(&env, "fx/app:1");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S12: the schema2 type itself with a charset parameter.
#[test]
fn v61_s12_schema2_type_with_charset() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(61));
    let ct = "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8";
    serve_manifest(&env, "1", Some(ct), &p.manifest_bytes);
    let out = pull_tag(&env, "fx/app:1");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S12: an upper-case OCI type in the header and no mediaType in the body.
#[test]
fn v62_s12_uppercase_oci_type_no_body_media_type() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(62).format(Format::Oci));
    let mut v: Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
    v.as_object_mut().unwrap().remove("mediaType");
    let body = serde_json::to_vec(&v).unwrap();
    serve_manifest(
        &env,
        "1",
        Some("Application/VND.OCI.Image.Manifest.v1+JSON"),
        &body,
    );
    let out = pull_tag(&env, "fx/app:1");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S12: the body's mediaType says index but the structure is an image manifest
// (config + layers, no manifests): a media type conflict, nothing written.
#[test]
fn v63_s12_body_media_type_contradicts_structure() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(63).format(Format::Oci));
    let mut v: Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
    v["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
    let body = serde_json::to_vec(&v).unwrap();
    serve_manifest(
        &env,
        "1",
        Some("application/vnd.oci.image.index.v1+json"),
        &body,
    );
    let out = pull_tag(&env, "fx/app:1");
    assert_ne!(out.code, vic_result::Ok);
    assert!(out.message.contains("fx/app"), "{}", out.message);
    assert!(
        out.message.to_lowercase().contains("conflict"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

// S12: the header says index and the body is an OCI image manifest (mirror of case f).
#[test]
fn v64_s12_header_index_body_manifest() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(64).format(Format::Oci));
    serve_manifest(
        &env,
        "1",
        Some("application/vnd.oci.image.index.v1+json"),
        &p.manifest_bytes,
    );
    let out = pull_tag(&env, "fx/app:1");
    assert_ne!(out.code, vic_result::Ok);
    assert!(
        out.message.to_lowercase().contains("conflict"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

// S12/S20: a pretty-printed manifest (indent, trailing newline) is hashed as sent and
// stored byte for byte.
#[test]
fn v65_s12_pretty_printed_manifest_kept_byte_for_byte() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(65).format(Format::Oci));
    let v: Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
    let mut pretty = serde_json::to_vec_pretty(&v).unwrap();
    pretty.extend_from_slice(b"\n");
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let d = put_manifest(env.registry.addr(), "fx/app", "pretty", mt, &pretty);
    let out = pull_tag(&env, &format!("fx/app@{d}"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let stored = std::fs::read(env.store().join("blobs/sha256").join(hex(&d))).unwrap();
    assert_eq!(stored, pretty);
}

// ---------------------------------------------------------------- S13 platforms

fn child(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(16 << 10, seed)]).format(Format::Oci)
}

fn chose(out: &capi::Outcome, digest: &str) {
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.as_ref().unwrap()["manifest_digest"], digest);
}

// S13: an entry with no platform at all is skipped, not a crash or a match.
#[test]
fn v70_s13_entry_without_platform_is_skipped() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(70), Platform::new("linux", "amd64")),
            (child(71), Platform::new("linux", "amd64")),
        ],
        |d| {
            d["manifests"][0]
                .as_object_mut()
                .unwrap()
                .remove("platform");
        },
    );
    chose(&pull_platform(&env, "1", "linux/amd64"), &kids[1]);
}

// S13: two entries for the same platform: the first one wins (containerd's rule).
#[test]
fn v71_s13_duplicate_entries_take_the_first() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(72), Platform::new("linux", "arm64")),
            (child(73), Platform::new("linux", "amd64")),
            (child(74), Platform::new("linux", "amd64")),
        ],
        |_| {},
    );
    chose(&pull_platform(&env, "1", "linux/amd64"), &kids[1]);
}

// S13: `linux/arm/v8` (32-bit on an ARMv8 CPU) runs v7 code: takes arm/v7 over arm/v6.
#[test]
fn v72_s13_arm_v8_takes_v7() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(75), Platform::new("linux", "amd64")),
            (child(76), Platform::new("linux", "arm").variant("v6")),
            (child(77), Platform::new("linux", "arm").variant("v7")),
        ],
        |_| {},
    );
    chose(&pull_platform(&env, "1", "linux/arm/v8"), &kids[2]);
}

// S13: an arm/v7 host takes arm/v6 when no v7 entry exists.
#[test]
fn v73_s13_arm_v7_falls_back_to_v6() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(78), Platform::new("linux", "amd64")),
            (child(79), Platform::new("linux", "arm").variant("v6")),
        ],
        |_| {},
    );
    chose(&pull_platform(&env, "1", "linux/arm/v7"), &kids[1]);
}

// S13: the platform option in upper case, and the x86_64 / aarch64 aliases.
#[test]
fn v74_s13_platform_option_case_and_aliases() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(80), Platform::new("linux", "amd64")),
            (child(81), Platform::new("linux", "arm64")),
        ],
        |_| {},
    );
    chose(&pull_platform(&env, "1", "Linux/AMD64"), &kids[0]);
    chose(&pull_platform(&env, "1", "linux/x86_64"), &kids[0]);
    chose(&pull_platform(&env, "1", "linux/aarch64"), &kids[1]);
}

// S13: index entries written in upper case (`Linux`/`AMD64`) still match.
#[test]
fn v75_s13_uppercase_index_entry() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(82), Platform::new("linux", "arm64")),
            (child(83), Platform::new("linux", "amd64")),
        ],
        |d| {
            d["manifests"][1]["platform"] = json!({"os":"Linux","architecture":"AMD64"});
        },
    );
    chose(&pull_platform(&env, "1", "linux/amd64"), &kids[1]);
}

// S13: an arm64 entry with variant "8" (no leading v) is arm64/v8.
#[test]
fn v76_s13_arm64_variant_without_v() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(84), Platform::new("linux", "amd64")),
            (child(85), Platform::new("linux", "arm64").variant("8")),
        ],
        |_| {},
    );
    chose(&pull_platform(&env, "1", "linux/arm64"), &kids[1]);
}

// ---------------------------------------------------------------- S14 rate limits

// S14: 503 with Retry-After on the manifest: waited out, then success.
#[test]
fn v80_s14_503_retry_after_on_manifest() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(80));
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let t = times.clone();
    env.proxy.hook(move |r| {
        if r.path.ends_with("/manifests/1") {
            t.lock().unwrap().push(Instant::now());
        }
        None
    });
    env.proxy.respond(
        Match::Manifest("1".into()),
        503,
        &[("Retry-After", "1")],
        b"busy",
        Some(2),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let t = times.lock().unwrap().clone();
    assert!(t.len() >= 3, "{}", t.len());
    for w in t[..3].windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(950),
            "{:?}",
            w[1] - w[0]
        );
    }
}

// S14: the token endpoint answers 429 for ever: a rate-limit error in bounded time.
#[test]
fn v81_s14_token_endpoint_429_forever() {
    let t0 = Instant::now();
    let (out, auth, env) = token_run(
        |_, _| Reply::new(429).header("Retry-After", "1"),
        "T",
        json!({"max_attempts": 3}),
    );
    assert_eq!(out.code, vic_result::RateLimited, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(auth.calls() <= 4, "token calls {}", auth.calls());
    assert!(out.message.contains(&auth.realm()), "{}", out.message);
    assert_nothing_written(env.store());
}

// S14: `Retry-After: 0` on a blob: retried at once, success.
#[test]
fn v82_s14_retry_after_zero() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(82));
    let d = p.layers[0].digest.clone();
    env.proxy
        .respond(Match::blob(&d), 429, &[("Retry-After", "0")], b"", Some(2));
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(&d), 3);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

// S14: a 500 on the manifest every time: a registry error naming the reference, bounded.
#[test]
fn v83_s14_manifest_500_forever_is_bounded() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(83));
    env.proxy
        .respond(Match::Manifest("1".into()), 500, &[], b"oops", None);
    let mut o = options(&env, "fx/app:1");
    o["max_attempts"] = 3.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    assert!(out.message.contains("fx/app"), "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let n = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/manifests/1"))
        .count();
    assert!(n <= 3, "{n} manifest requests with max_attempts 3");
    assert_nothing_written(env.store());
}

// S14: `Retry-After: 1.5` (not an integer) is treated like a missing value.
#[test]
fn v84_s14_fractional_retry_after() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(84));
    let d = p.layers[0].digest.clone();
    env.proxy.respond(
        Match::blob(&d),
        429,
        &[("Retry-After", "1.5")],
        b"",
        Some(1),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S14: cancel while waiting out a token endpoint 429: prompt.
#[test]
fn v85_s14_cancel_during_token_429_wait() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(85));
    let auth = TokenServer::start_with(|_, _| Reply::new(429).header("Retry-After", "30"));
    bearer_front(&env.proxy, &["T"], auth.challenge());
    let p = capi::start(&options(&env, "fx/app:1")).unwrap();
    let t0 = Instant::now();
    while auth.calls() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t1 = Instant::now();
    p.cancel();
    let out = p.wait(Duration::from_secs(10));
    assert_eq!(out.code, vic_result::Cancelled, "{}", out.message);
    assert!(
        t1.elapsed() < Duration::from_millis(500),
        "{:?}",
        t1.elapsed()
    );
}

// ---------------------------------------------------------------- S15 layer formats

const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn some_tar() -> Vec<u8> {
    let mut t = TarWriter::new();
    t.dir("etc/");
    t.file("etc/hello.txt", false, &b"hello variants\n".repeat(2000));
    t.file("bin/tool", true, &[0x7fu8; 5000]);
    t.finish()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Push a one-layer OCI image of `blob` (whose tar is `tar`) and pull it with diffIDs
/// checked.
fn pull_layer(blob: Vec<u8>, tar: &[u8], media_type: &str) -> (capi::Outcome, Env) {
    let env = Env::new();
    let layer =
        Layer::from_blob(blob, &sha256_digest(tar), Compression::Gzip).with_media_type(media_type);
    env.push(
        "fx/fmt",
        "1",
        &ImageSpec::new(vec![layer]).format(Format::Oci),
    );
    let (out, _) = capi::pull(options(&env, "fx/fmt:1"));
    (out, env)
}

// S15: a gzip layer followed by zero padding (as some tape-style writers leave). Go's gzip
// reader, which docker and containerd unpack with, refuses it, so vicpull does too, with a
// message that says what is wrong with which layer.
#[test]
fn v90_s15_gzip_with_trailing_zero_padding() {
    let tar = some_tar();
    let mut blob = gzip(&tar);
    blob.extend(vec![0u8; 1024]);
    let d = sha256_digest(&blob);
    let (out, env) = pull_layer(blob, &tar, OCI_GZIP);
    assert_eq!(out.code, vic_result::Unsupported, "{}", out.message);
    assert!(out.message.contains(&d), "{}", out.message);
    assert!(
        out.message
            .contains("gzip stream is corrupt or has trailing data"),
        "{}",
        out.message
    );
    assert_nothing_written(env.store());
}

// S15: a gzip layer of two members (concatenated gzip streams are one valid gzip file).
#[test]
fn v91_s15_gzip_two_members() {
    let tar = some_tar();
    let half = tar.len() / 2;
    let mut blob = gzip(&tar[..half]);
    blob.extend(gzip(&tar[half..]));
    let (out, _) = pull_layer(blob, &tar, OCI_GZIP);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

/// A zstd skippable frame with `n` payload bytes.
fn skippable(n: u32) -> Vec<u8> {
    let mut f = vec![0x50, 0x2a, 0x4d, 0x18];
    f.extend(n.to_le_bytes());
    f.extend(vec![0xabu8; n as usize]);
    f
}

// S15: a zstd layer that starts with a skippable frame (as seekable-zstd writers emit).
#[test]
fn v92_s15_zstd_leading_skippable_frame() {
    let tar = some_tar();
    let mut blob = skippable(16);
    blob.extend(zstd::bulk::compress(&tar, 3).unwrap());
    let (out, _) = pull_layer(blob, &tar, OCI_ZSTD);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S15: a zstd layer that ends with a skippable frame (zstd:chunked puts its index there).
#[test]
fn v93_s15_zstd_trailing_skippable_frame() {
    let tar = some_tar();
    let mut blob = zstd::bulk::compress(&tar, 3).unwrap();
    blob.extend(skippable(64));
    let (out, _) = pull_layer(blob, &tar, OCI_ZSTD);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S15: a gzip header with FNAME and FEXTRA fields.
#[test]
fn v94_s15_gzip_with_name_and_extra_fields() {
    let tar = some_tar();
    let mut e = flate2::GzBuilder::new()
        .filename("layer.tar")
        .extra(vec![1, 2, 3, 4])
        .comment("made by a test")
        .write(Vec::new(), flate2::Compression::new(6));
    e.write_all(&tar).unwrap();
    let blob = e.finish().unwrap();
    let (out, _) = pull_layer(blob, &tar, OCI_GZIP);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

/// `tar` with the ustar magic of every header removed (a pre-POSIX v7 tar).
fn v7_tar(mut tar: Vec<u8>) -> Vec<u8> {
    let mut off = 0;
    while off + 512 <= tar.len() && tar[off..off + 512].iter().any(|b| *b != 0) {
        let h = &mut tar[off..off + 512];
        let size = std::str::from_utf8(&h[124..136])
            .unwrap()
            .trim_matches(|c: char| c == '\0' || c == ' ');
        let size = u64::from_str_radix(size, 8).unwrap();
        for b in &mut h[257..265] {
            *b = 0;
        }
        for b in &mut h[148..156] {
            *b = b' ';
        }
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        off += 512 + size.div_ceil(512) as usize * 512;
    }
    tar
}

// S15: an uncompressed layer in the old v7 tar format (no `ustar` at offset 257).
#[test]
fn v95_s15_plain_v7_tar_layer() {
    let mut t = TarWriter::new();
    t.file("hello.txt", false, b"old tar\n");
    let tar = v7_tar(t.finish());
    let (out, _) = pull_layer(tar.clone(), &tar, OCI_TAR);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// S15: an uncompressed layer whose blob is the tar of a real directory, Docker type.
#[test]
fn v96_s15_docker_plain_tar_of_real_files() {
    let tar = dir_tar("/etc", 256 << 10);
    let (out, _) = pull_layer(
        tar.clone(),
        &tar,
        "application/vnd.docker.image.rootfs.diff.tar",
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

// ---------------------------------------------------------------- S17 dedup

// S17: one layer three times: one GET, three positions in the result.
#[test]
fn v100_s17_same_layer_three_times() {
    let env = Env::new();
    let la = Layer::random(300 << 10, 100);
    env.push(
        "fx/dup",
        "1",
        &ImageSpec::new(vec![la.clone(), la.clone(), la.clone()]),
    );
    let p = capi::start(&options(&env, "fx/dup:1")).unwrap();
    let out = p.wait(Duration::from_secs(10));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(la.digest()), 1);
    assert_eq!(out.json.unwrap()["layers"].as_array().unwrap().len(), 3);
    assert!(!p.events().iter().any(|e| e.kind == Kind::Retrying));
}

const EMPTY_TAR_DIFF_ID: &str =
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

// S17: a layer whose blob is byte-identical to the config (same digest for both roles):
// fetched once, stored once.
#[test]
fn v101_s17_config_digest_equals_layer_digest() {
    let env = Env::new();
    let config = serde_json::to_vec(&json!({
        "architecture":"amd64","os":"linux",
        "rootfs":{"type":"layers","diff_ids":[EMPTY_TAR_DIFF_ID]}
    }))
    .unwrap();
    let cd = vicpull_testkit::image::push_blob(env.registry.addr(), "fx/same", &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion":2,
        "mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":OCI_CONFIG,"digest":cd,"size":config.len()},
        "layers":[{"mediaType":OCI_TAR,"digest":cd,"size":config.len()}]
    }))
    .unwrap();
    put_manifest(
        env.registry.addr(),
        "fx/same",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );
    let mut o = options(&env, "fx/same:1");
    o["verify_diff_ids"] = false.into();
    let p = capi::start(&o).unwrap();
    let out = p.wait(Duration::from_secs(20));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(&cd), 1);
}

// S17: a repeated layer cut once mid-blob: one resume, no deadlock between the positions.
#[test]
fn v102_s17_repeated_layer_cut_once() {
    let env = Env::new();
    let (la, lb) = (Layer::random(800 << 10, 102), Layer::random(30 << 10, 103));
    env.push(
        "fx/dup",
        "1",
        &ImageSpec::new(vec![la.clone(), lb, la.clone()]),
    );
    env.proxy.cut(la.digest(), 200_000, CutMode::Rst, Some(1));
    let p = capi::start(&options(&env, "fx/dup:1")).unwrap();
    let out = p.wait(Duration::from_secs(20));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(la.digest()), 2);
}

// ---------------------------------------------------------------- S18/S19 concurrency

fn wait_downloading(p: &capi::Pull, digest: &str, bytes: u64) {
    let t0 = Instant::now();
    while !p.events().iter().any(|e| {
        e.layer.as_deref() == Some(digest) && e.kind == Kind::Downloading && e.current >= bytes
    }) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{digest} stuck");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// S19: cancel pull b while its manifest fetch hangs, while pull a downloads the layer b
// wants: b ends promptly as cancelled, a finishes with one GET of the shared layer.
#[test]
fn v110_s19_cancel_during_manifest_fetch_while_other_downloads() {
    let env = Env::new();
    let s1 = Layer::random(3 << 20, 110);
    env.push(
        "fx/a",
        "1",
        &ImageSpec::new(vec![s1.clone(), Layer::random(1 << 10, 111)]),
    );
    env.push(
        "fx/b",
        "b1",
        &ImageSpec::new(vec![s1.clone(), Layer::random(1 << 10, 112)]),
    );
    env.proxy.throttle(Match::blob(s1.digest()), 1 << 20, None);
    env.proxy.add_rule(
        Match::Manifest("b1".into()),
        Action::Delay(Duration::from_secs(5)),
        None,
    );
    let a = capi::start(&options(&env, "fx/a:1")).unwrap();
    wait_downloading(&a, s1.digest(), 256 << 10);
    let b = capi::start(&options(&env, "fx/b:b1")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    b.cancel();
    let out = b.wait(Duration::from_secs(5));
    assert_eq!(out.code, vic_result::Cancelled, "{}", out.message);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    let out = a.wait(Duration::from_secs(30));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(s1.digest()), 1);
}

// S19: cancel the pull that owns the shared download while the other is attached: the
// other finishes, resuming rather than fetching the layer again from 0.
#[test]
fn v111_s19_cancel_owner_other_resumes() {
    let env = Env::new();
    let s1 = Layer::random(4 << 20, 113);
    env.push("fx/a", "1", &ImageSpec::new(vec![s1.clone()]));
    env.push(
        "fx/b",
        "1",
        &ImageSpec::new(vec![s1.clone(), Layer::random(1 << 10, 114)]),
    );
    env.proxy.throttle(Match::blob(s1.digest()), 2 << 20, None);
    let a = capi::start(&options(&env, "fx/a:1")).unwrap();
    wait_downloading(&a, s1.digest(), 1 << 20);
    let b = capi::start(&options(&env, "fx/b:1")).unwrap();
    wait_downloading(&b, s1.digest(), 1);
    a.cancel();
    assert_eq!(a.wait(Duration::from_secs(5)).code, vic_result::Cancelled);
    let out = b.wait(Duration::from_secs(30));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let wire: u64 = blob_gets(&env, s1.digest())
        .iter()
        .map(|r| r.body_bytes_sent)
        .sum();
    assert!(
        wire < s1.size() + (256 << 10),
        "{wire} bytes for {}",
        s1.size()
    );
}

// S18: the same image pulled into two different stores at once: both complete.
#[test]
fn v112_s18_same_image_two_stores_at_once() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(115));
    env.proxy.throttle(Match::AnyBlob, 2 << 20, None);
    let other = vicpull_testkit::TempDir::new("vicpull-store2");
    let mut o2 = options(&env, "fx/app:1");
    o2["store"] = json!(other.path());
    let a = capi::start(&options(&env, "fx/app:1")).unwrap();
    let b = capi::start(&o2).unwrap();
    for p in [&a, &b] {
        let out = p.wait(Duration::from_secs(30));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    for l in &pushed.layers {
        assert!(has_blob(env.store(), &l.digest));
        assert!(has_blob(other.path(), &l.digest));
    }
    assert_blobs_verify(other.path());
}

// S18: the same image by tag and by digest at once: one GET per blob.
#[test]
fn v113_s18_by_tag_and_by_digest_at_once() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(116));
    env.proxy.throttle(Match::AnyBlob, 1 << 20, None);
    let a = capi::start(&options(&env, "fx/app:1")).unwrap();
    let by_digest = format!("fx/app@{}", pushed.manifest_digest);
    let b = capi::start(&options(&env, &by_digest)).unwrap();
    for p in [&a, &b] {
        let out = p.wait(Duration::from_secs(30));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1, "{}", l.digest);
    }
}

// S19: cancel right after start: cancelled, no blob, no lock file left.
#[test]
fn v114_s19_cancel_right_after_start() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(117));
    let p = capi::start(&options(&env, "fx/app:1")).unwrap();
    p.cancel();
    let out = p.wait(Duration::from_secs(5));
    assert_eq!(out.code, vic_result::Cancelled, "{}", out.message);
    assert!(
        lock_files(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
    // Nothing but verified blobs may exist; and a fresh pull works.
    assert_blobs_verify_if_any(env.store());
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

fn assert_blobs_verify_if_any(store: &std::path::Path) {
    if store.join("blobs/sha256").is_dir() {
        assert_blobs_verify(store);
    }
}

// ---------------------------------------------------------------- S20 integrity

// S20: by digest, the body differs only by a trailing newline: still a mismatch.
#[test]
fn v120_s20_manifest_body_with_extra_newline() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(120));
    let mut body = p.manifest_bytes.clone();
    body.push(b'\n');
    env.proxy.respond(
        Match::Manifest(p.manifest_digest.clone()),
        200,
        &[("Content-Type", p.manifest_media_type.as_str())],
        &body,
        None,
    );
    let (out, _) = capi::pull(options(&env, &format!("fx/app@{}", p.manifest_digest)));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(out.message.contains(&p.manifest_digest), "{}", out.message);
    assert!(no_blob_requests(&env));
    assert_nothing_written(env.store());
}

// S20: the store holds a truncated file under the right blob name: re-fetched, replaced.
#[test]
fn v121_s20_truncated_blob_file_in_store() {
    let (env, pushed, spec) = transfer_env();
    let l2 = &spec.layers[1];
    let dir = env.store().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex(l2.digest())), &l2.blob()[..1000]).unwrap();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert_blobs_verify(env.store());
    assert_eq!(env.proxy.count_gets(l2.digest()), 1);
}

// S20: a kept partial in the ingest area holds wrong bytes: the pull must not glue onto it
// for ever; it ends verified with at most one extra download.
#[test]
fn v122_s20_corrupt_partial_in_ingest() {
    let (env, _, spec) = transfer_env();
    let l2 = &spec.layers[1];
    let ingest = env.store().join(".vicpull/ingest");
    std::fs::create_dir_all(&ingest).unwrap();
    let mut junk = l2.blob()[..100_000].to_vec();
    junk[5000] ^= 0xff;
    std::fs::write(ingest.join(format!("{}.partial", hex(l2.digest()))), junk).unwrap();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_blobs_verify(env.store());
    let wire: u64 = blob_gets(&env, l2.digest())
        .iter()
        .map(|r| r.body_bytes_sent)
        .sum();
    assert!(wire <= 2 * l2.size(), "{wire}");
}

// S20: the registry answers one blob with another valid blob's bytes every time:
// a digest mismatch naming it, bounded GETs, no file for it.
#[test]
fn v123_s20_blob_answered_with_another_blob() {
    let (env, pushed, spec) = transfer_env();
    let (l1, l2) = (&spec.layers[0], &spec.layers[1]);
    env.proxy
        .respond(Match::blob(l2.digest()), 200, &[], l1.blob(), None);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::DigestMismatch, "{}", out.message);
    assert!(out.message.contains(l2.digest()), "{}", out.message);
    let sizes = format!(
        "expected {} bytes, the server announced {}",
        l2.size(),
        l1.size()
    );
    assert!(out.message.contains(&sizes), "{}", out.message);
    assert!(env.proxy.count_gets(l2.digest()) <= 5);
    assert!(!has_blob(env.store(), &pushed.layers[1].digest));
    assert!(leftovers(env.store()).iter().all(|p| {
        let p = p.to_string_lossy();
        !p.ends_with(".lock") && !p.ends_with(".partial")
    }));
}

// S20: an empty file under the config's name: re-hashed and replaced.
#[test]
fn v124_s20_empty_file_under_config_name() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(124));
    let dir = env.store().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex(&pushed.config_digest)), b"").unwrap();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- more variants

// S04/S05: the storage host answers 401 once with no challenge at all: go back to the
// registry for the blob (as docker's layer retry does) and succeed.
#[test]
fn v25_s04_cdn_plain_401_once_is_retried_through_the_registry() {
    let env = Env::new();
    let spec = small_spec(25);
    let pushed = env.push("fx/app", "1", &spec);
    let big = pushed.layers[1].digest.clone();
    let bytes = spec.layers[1].blob().to_vec();
    let first = AtomicBool::new(true);
    let cdn = Stub::start("127.0.0.2", move |r| {
        if first.swap(false, Ordering::SeqCst) {
            return Reply::new(401).body("<Error><Code>AccessDenied</Code></Error>");
        }
        serve_range(r, &bytes)
    });
    let url = cdn.url();
    let b2 = big.clone();
    env.proxy.hook(move |r| {
        (r.blob_digest() == Some(b2.as_str())).then(|| {
            respond(
                307,
                &[("Location", &format!("{url}/s/{}?sig=1", hex(&b2)))],
                b"",
            )
        })
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &big));
}

// S04/S05: the storage host refuses every signed URL with the registry's own Bearer
// challenge: no token goes there and none is fetched for it; after max_attempts fresh
// redirects the pull fails as REGISTRY (not AUTH: our credentials were never refused),
// naming the storage host (without the signature) and the blob; nothing is left behind.
#[test]
fn v25b_s04_cdn_401_every_time_fails_naming_the_storage_host() {
    let env = Env::new();
    let spec = small_spec(25);
    let pushed = env.push("fx/app", "1", &spec);
    let big = pushed.layers[1].digest.clone();
    let auth = TokenServer::start(vec![json!({"token":"T"})]);
    let challenge = auth.challenge();
    let ch2 = challenge.clone();
    let cdn = Stub::start("127.0.0.2", move |_| {
        Reply::new(401)
            .header("WWW-Authenticate", &ch2)
            .body("<Error><Code>AccessDenied</Code></Error>")
    });
    let url = cdn.url();
    let b2 = big.clone();
    bearer_front(&env.proxy, &["T"], challenge);
    env.proxy.hook(move |r| {
        (r.blob_digest() == Some(b2.as_str()) && r.header("authorization") == Some("Bearer T"))
            .then(|| {
                let loc = format!("{url}/s/{}?sig=SECRET", hex(&b2));
                respond(307, &[("Location", &loc)], b"")
            })
    });
    let mut o = options(&env, "fx/app:1");
    o["max_attempts"] = 3.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Registry, "{}", out.message);
    assert!(out.message.contains(&big), "{}", out.message);
    assert!(out.message.contains("127.0.0.2"), "{}", out.message);
    assert!(!out.message.contains("SECRET"), "{}", out.message);
    assert!(!out.message.contains("credentials"), "{}", out.message);
    let hits = cdn.requests();
    assert!(hits.iter().all(|q| q.header("authorization").is_none()));
    assert_eq!(hits.len(), 3, "one storage request per attempt");
    assert_eq!(auth.calls(), 1, "no token fetched for the storage host");
    assert!(!has_blob(env.store(), &big));
    assert!(lock_files(env.store()).is_empty());
}

// S04/S10: a mirror whose storage redirect answers 401 for a blob: no token for it, the
// blob comes from the registry.
#[test]
fn v25c_s10_mirror_storage_401_falls_back_to_the_registry() {
    let p = pair();
    let big = p.pushed.layers[3].digest.clone();
    let cdn = Stub::start("127.0.0.2", |_| {
        Reply::new(401).body("<Error><Code>AccessDenied</Code></Error>")
    });
    let url = cdn.url();
    let b2 = big.clone();
    p.mirror.hook(move |r| {
        (r.blob_digest() == Some(b2.as_str())).then(|| {
            let loc = format!("{url}/s/{}?sig=1", hex(&b2));
            respond(307, &[("Location", &loc)], b"")
        })
    });
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1", &p.mirror.url()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(cdn.requests().len(), 1);
    assert_eq!(p.up.proxy.count_gets(&big), 1);
    assert_blobs_verify(p.up.store());
}

// S10/S20: a mirror answers a layer with another (complete, self-consistent) blob: the
// layer comes from the registry in one GET.
#[test]
fn v123b_s20_mirror_answers_with_another_blob() {
    let p = pair();
    let l = &p.pushed.layers;
    p.mirror
        .respond(Match::blob(&l[3].digest), 200, &[], &[7u8; 5000], None);
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1", &p.mirror.url()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(p.mirror.count_gets(&l[3].digest), 1);
    assert_eq!(p.up.proxy.count_gets(&l[3].digest), 1);
    assert_blobs_verify(p.up.store());
}

// S15: a gzip layer with non-zero junk after the stream: refusing it is fine, but the
// message must name the layer and not claim the bytes disagree with the declared type.
#[test]
fn v97_s15_gzip_trailing_junk_message_is_clear() {
    let tar = some_tar();
    let mut blob = gzip(&tar);
    blob.extend_from_slice(b"JUNKJUNKJUNK");
    let d = sha256_digest(&blob);
    let (out, env) = pull_layer(blob, &tar, OCI_GZIP);
    if out.code != vic_result::Ok {
        assert!(out.message.contains(&d), "{}", out.message);
        assert!(
            !out.message.contains("declared gzip but the bytes are gzip"),
            "self-contradicting message: {}",
            out.message
        );
        assert!(env.store().join("index.json").exists() || !out.message.is_empty());
    }
}

// S08: every answer for a layer is longer than the descriptor: a bounded failure naming the
// blob with a size/digest error (not a network error), and no blob file.
#[test]
fn v46b_s08_body_always_longer_than_descriptor() {
    let (env, pushed, spec) = transfer_env();
    let l1 = &spec.layers[0];
    let mut long = l1.blob().to_vec();
    long.extend(vec![7u8; 4096]);
    env.proxy
        .respond(Match::blob(l1.digest()), 200, &[], &long, None);
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert!(
        matches!(out.code, vic_result::DigestMismatch | vic_result::Registry),
        "{:?}: {}",
        out.code,
        out.message
    );
    assert!(out.message.contains(l1.digest()), "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(!has_blob(env.store(), &pushed.layers[0].digest));
}

// S14: `Retry-After` as an HTTP-date already in the past: retry at once.
#[test]
fn v86_s14_retry_after_date_in_the_past() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(86));
    let d = p.layers[0].digest.clone();
    let past = [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")];
    env.proxy.respond(Match::blob(&d), 429, &past, b"", Some(2));
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

// S01: the issued token appears in no progress message and not in the result JSON.
#[test]
fn v19_s01_token_not_in_progress_or_result() {
    let t = "TOKVISIBLE777";
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(19));
    let auth = TokenServer::start(vec![json!({"token": t})]);
    bearer_front(&env.proxy, &[t], auth.challenge());
    let (out, events) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(!out.json.unwrap().to_string().contains(t));
    for e in events {
        assert!(!e.message.contains(t), "{e:?}");
    }
    let idx = std::fs::read_to_string(env.store().join("index.json")).unwrap();
    assert!(!idx.contains(t));
}

// S08: the config blob stalls after a few bytes: low_speed_time_secs replaces it quickly.
#[test]
fn v45b_s08_stall_during_config_fetch() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_spec(145));
    env.proxy.add_rule(
        Match::blob(&p.config_digest),
        Action::Stall { after: 10 },
        Some(1),
    );
    let mut o = options(&env, "fx/app:1");
    o["low_speed_time_secs"] = 2.into();
    let t0 = Instant::now();
    let pull = capi::start(&o).unwrap();
    let out = pull.wait(Duration::from_secs(180));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

//! Third round of variant probes on the pull scenarios (pull-scenarios.md S01-S20, not S21),
//! named `xNN_<scenario>_<case>`: auth shapes, mirror keys, platform variants and store
//! states that tests/scenario_variants.rs and scenario_variants_2.rs leave out. Each asserts
//! what docker / containerd users would expect. The 5 that failed when written are ignored
//! as findings: x02 and x11 (stalled TLS handshake), x05 (401 right after a fresh token),
//! x21 (amd64/v2 host), x34 (config fetched by each concurrent pull).

mod common;
mod registry_kit;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::capi;
use common::fixtures::{assert_blobs_verify, index_json, leftovers, named_images, Env};
use registry_kit::{bearer_front, front, has_blob, options, Gate, SERVICE};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::image::put_manifest;
use vicpull_testkit::proxy::{Action, Match};
use vicpull_testkit::{
    push_image, push_index, FaultProxy, Format, ImageSpec, Layer, Platform, PushedImage, Registry,
    Reply, Stub,
};

// ---------------------------------------------------------------- shared helpers

fn small_spec(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![
        Layer::random(40 << 10, seed),
        Layer::random(300 << 10, seed + 1),
    ])
}

fn no_temp_files(store: &std::path::Path) {
    assert!(leftovers(store).is_empty(), "{:?}", leftovers(store));
}

/// Two scopes in one challenge value, space-separated as distribution writes them.
const TWO_SCOPES: &str = "repository:fx/app:pull repository:fx/base:pull";

/// base64 of "u1:p1" (RFC 4648).
const BASIC_U1_P1: &str = "Basic dTE6cDE=";

/// A token stub that needs Basic u1:p1 on `/token`, answers `/hop` with a 302 to `/token`,
/// and records every scope asked for.
struct BasicTokenStub {
    stub: Stub,
    scopes: Arc<Mutex<Vec<Vec<String>>>>,
    issued: Arc<AtomicUsize>,
}

impl BasicTokenStub {
    fn start() -> BasicTokenStub {
        let scopes: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let issued = Arc::new(AtomicUsize::new(0));
        let (s2, i2) = (scopes.clone(), issued.clone());
        let stub = Stub::start("127.0.0.1", move |r| {
            if r.path == "/hop" {
                let loc = format!("/token?{}", r.query.clone().unwrap_or_default());
                return Reply::new(302).header("Location", &loc);
            }
            if r.path != "/token" {
                return Reply::new(404);
            }
            if r.header("authorization") != Some(BASIC_U1_P1) {
                return Reply::json(401, &json!({"errors":[{"code":"UNAUTHORIZED"}]}))
                    .header("WWW-Authenticate", "Basic realm=\"tok\"");
            }
            s2.lock().unwrap().push(r.params("scope"));
            i2.fetch_add(1, Ordering::SeqCst);
            Reply::json(200, &json!({"token": "T"}))
        });
        BasicTokenStub {
            stub,
            scopes,
            issued,
        }
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn with_creds(mut o: Value) -> Value {
    o["username"] = "u1".into();
    o["password"] = "p1".into();
    o
}

fn secret_free(out: &capi::Outcome) {
    assert!(!out.message.contains("u1:p1"), "{}", out.message);
    assert!(!out.message.contains("dTE6cDE"), "{}", out.message);
}

// ---------------------------------------------------------------- S01/S02/S04 auth

// S01/S02: the token endpoint needs the options' Basic credentials and the challenge asks
// for two scopes in one space-separated value: both scopes are asked for (containerd splits
// them), Basic goes to the realm, the Bearer token to the registry.
#[test]
fn x01_s01_basic_token_endpoint_with_two_scopes() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(1));
    let tok = BasicTokenStub::start();
    let challenge = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="{TWO_SCOPES}""#,
        tok.stub.url()
    );
    let seen = bearer_front(&env.proxy, &["T"], challenge);
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let scopes: Vec<String> = tok.scopes.lock().unwrap().concat();
    let joined = scopes.join(" ");
    assert!(joined.contains("repository:fx/app:pull"), "{scopes:?}");
    assert!(joined.contains("repository:fx/base:pull"), "{scopes:?}");
    for (path, auth) in seen.all() {
        assert_ne!(
            auth.as_deref(),
            Some(BASIC_U1_P1),
            "Basic sent to registry {path}"
        );
    }
    assert!(tok.issued() <= 2, "{}", tok.issued());
}

// S02: the realm is https while only the registry is plain http (plain_http): the realm is
// not downgraded to http (credentials would travel in clear); the pull fails soon with an
// auth/network error naming the realm, and nothing is written.
#[test]
#[ignore = "finding: an https realm whose server never answers the TLS handshake takes \
            155 s to fail (NETWORK 'token request to https://127.0.0.1:P/token: \
            https://127.0.0.1:P/token (error sending request): client error (Connect): \
            operation timed out'); no short handshake timeout, URL said twice"]
fn x02_s02_https_realm_with_plain_http_registry_not_downgraded() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(2));
    let tok = BasicTokenStub::start();
    let realm = format!("https://{}/token", tok.stub.addr());
    let challenge =
        format!(r#"Bearer realm="{realm}",service="{SERVICE}",scope="repository:fx/app:pull""#);
    bearer_front(&env.proxy, &["T"], challenge);
    let t0 = Instant::now();
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert_ne!(out.code, vic_result::Ok);
    assert!(
        matches!(out.code, vic_result::Auth | vic_result::Network),
        "{:?} {}",
        out.code,
        out.message
    );
    assert!(out.message.contains(tok.stub.addr()), "{}", out.message);
    assert_eq!(tok.issued(), 0, "token fetched over plain http");
    secret_free(&out);
    registry_kit::assert_nothing_written(env.store());
}

// S01: the realm answers 302 to another path on the same host: the redirect is followed
// (with the Basic credentials, same origin) and the pull succeeds.
#[test]
fn x03_s01_token_endpoint_redirects_to_other_path() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(3));
    let tok = BasicTokenStub::start();
    let challenge = format!(
        r#"Bearer realm="{}/hop",service="{SERVICE}",scope="repository:fx/app:pull""#,
        tok.stub.url()
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(tok.issued(), 1);
    assert_blobs_verify(env.store());
}

// S02: WWW-Authenticate on two header lines, Basic first and Bearer second, with the
// options' credentials: Bearer wins (Basic goes to the realm, never straight to the
// registry).
#[test]
fn x04_s02_basic_line_then_bearer_line_with_credentials() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(4));
    let tok = BasicTokenStub::start();
    let bearer = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:fx/app:pull""#,
        tok.stub.url()
    );
    let seen = front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T") => Gate::Pass,
        _ => Gate::Challenge(vec![r#"Basic realm="registry""#.into(), bearer.clone()]),
    });
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(tok.issued() >= 1);
    let basic = seen
        .all()
        .iter()
        .filter(|(_, a)| a.as_deref() == Some(BASIC_U1_P1))
        .count();
    assert_eq!(basic, 0, "Basic credentials sent to the registry");
}

// S04: the manifest is refused (401 invalid_token) right after a token was issued: one
// renewal, then success; no loop.
#[test]
#[ignore = "finding (containerd fails alike): 401 invalid_token on the manifest with the \
            token just issued is final, no renewal: AUTH 'manifest fx/app:1: HTTP 401 \
            Unauthorized: UNAUTHORIZED auth required' after 1 token call"]
fn x05_s04_manifest_401_after_fresh_token_renews_once() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(5));
    let auth = registry_kit::TokenServer::start(vec![json!({"token":"T1"}), json!({"token":"T2"})]);
    let challenge = auth.challenge();
    let expired = format!("{challenge},error=\"invalid_token\"");
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T1") if r.path.contains("/manifests/") => {
            Gate::Challenge(vec![expired.clone()])
        }
        Some("Bearer T1") | Some("Bearer T2") => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.calls(), 2);
    assert_blobs_verify(env.store());
}

// S04: a 403 DENIED on the manifest with a valid token: an auth error naming the
// repository, with a bounded number of tries and token calls.
#[test]
fn x06_s04_manifest_403_denied_is_clear_and_bounded() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(6));
    let auth = registry_kit::TokenServer::start(vec![json!({"token":"T"})]);
    bearer_front(&env.proxy, &["T"], auth.challenge());
    let body =
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
    env.proxy.hook(move |r| {
        (r.path.contains("/manifests/") && r.header("authorization") == Some("Bearer T")).then(
            || Action::Respond {
                status: 403,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.to_vec(),
            },
        )
    });
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains("fx/app"), "{}", out.message);
    assert!(auth.calls() <= 2, "token calls {}", auth.calls());
    let gets = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert!(gets <= 4, "manifest requests {gets}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    registry_kit::assert_nothing_written(env.store());
}

// ---------------------------------------------------------------- S10 mirrors

/// Upstream with fx/app:1 and a mirror registry holding the same image behind a proxy.
struct Pair {
    up: Env,
    mirror_registry: Registry,
    mirror: FaultProxy,
    pushed: PushedImage,
}

fn pair(seed: u64) -> Pair {
    let up = Env::new();
    let spec = small_spec(seed);
    let pushed = up.push("fx/app", "1", &spec);
    let mirror_registry = Registry::start();
    push_image(mirror_registry.addr(), "fx/app", "1", &spec);
    let mirror = FaultProxy::start(mirror_registry.addr());
    Pair {
        up,
        mirror_registry,
        mirror,
        pushed,
    }
}

fn with_registries(p: &Pair, registries: Value) -> Value {
    let mut o = options(&p.up, "fx/app:1");
    o["registries"] = registries;
    o
}

fn upstream_blob_gets(p: &Pair) -> usize {
    let mut n = p.up.proxy.count_gets(&p.pushed.config_digest);
    for l in &p.pushed.layers {
        n += p.up.proxy.count_gets(&l.digest);
    }
    n
}

fn mirror_blob_gets(p: &Pair) -> usize {
    let mut n = p.mirror.count_gets(&p.pushed.config_digest);
    for l in &p.pushed.layers {
        n += p.mirror.count_gets(&l.digest);
    }
    n
}

// S10: a `registries` entry keyed by docker.io or index.docker.io does not apply to a
// reference on 127.0.0.1:PORT: the mirror sees nothing.
#[test]
fn x10_s10_docker_io_keys_do_not_apply_to_other_hosts() {
    let p = pair(10);
    let url = p.mirror.url();
    let reg = json!({"docker.io": {"mirrors": [url]}, "index.docker.io": {"mirrors": [url]}});
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(
        p.mirror.requests().is_empty(),
        "{:?}",
        p.mirror.requests().len()
    );
    assert!(upstream_blob_gets(&p) >= 3);
}

// S10: a mirror given as bare host:port is https (containerd's hosts.toml default), even
// with plain_http, which is for the registry. Here it speaks plain http and never answers
// the ClientHello: the pull falls back to upstream soon (Go clients give a TLS handshake
// 10 s), and the mirror never sees a plain-text request.
#[test]
#[ignore = "finding: a mirror that stalls the TLS handshake is left only after 90 s (then \
            upstream, Ok); no short handshake timeout"]
fn x11_s10_bare_host_port_mirror_is_https_and_falls_back_soon() {
    let p = pair(11);
    let reg = json!({ p.up.proxy.addr(): {"mirrors": [p.mirror.addr()]} });
    let t0 = Instant::now();
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(mirror_blob_gets(&p), 0);
    assert_eq!(upstream_blob_gets(&p), 3);
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    assert_blobs_verify(p.up.store());
}

// S10: two mirrors, the first dead (connection refused), the second good: manifest and
// blobs come from the second; upstream serves neither.
#[test]
fn x12_s10_first_mirror_dead_second_serves_all() {
    let p = pair(12);
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mirrors = json!([format!("http://{dead}"), p.mirror.url()]);
    let reg = json!({ p.up.proxy.addr(): {"mirrors": mirrors} });
    let t0 = Instant::now();
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(upstream_blob_gets(&p), 0, "upstream served blobs");
    let up_manifests =
        p.up.proxy
            .requests()
            .iter()
            .filter(|r| r.path.contains("/manifests/"))
            .count();
    assert_eq!(up_manifests, 0, "upstream served the manifest");
    assert_eq!(mirror_blob_gets(&p), 3);
}

// ---------------------------------------------------------------- S12/S13 platforms

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn child(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(20 << 10, seed)])
}

fn index_with(
    env: &Env,
    children: Vec<(ImageSpec, Platform)>,
    edit: impl FnOnce(&mut Value),
) -> Vec<String> {
    let idx = push_index(env.registry.addr(), "fx/multi", "1", &children, Format::Oci);
    let mut doc: Value = serde_json::from_slice(&idx.bytes).unwrap();
    edit(&mut doc);
    let bytes = serde_json::to_vec(&doc).unwrap();
    put_manifest(env.registry.addr(), "fx/multi", "1", OCI_INDEX, &bytes);
    idx.children
        .iter()
        .map(|c| c.manifest_digest.clone())
        .collect()
}

fn pull_platform(env: &Env, platform: &str) -> capi::Outcome {
    let mut o = options(env, "fx/multi:1");
    o["platform"] = platform.into();
    capi::pull(o).0
}

fn chosen(out: &capi::Outcome) -> String {
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    out.json.as_ref().unwrap()["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

// S13: the same platform listed twice with different digests: the first wins, and so
// again on a second pull into a fresh store (stable).
#[test]
fn x20_s13_same_platform_twice_first_wins_stably() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![
            (child(200), Platform::new("linux", "amd64")),
            (child(201), Platform::new("linux", "amd64")),
        ],
        |_| {},
    );
    assert_ne!(kids[0], kids[1]);
    assert_eq!(chosen(&pull_platform(&env, "linux/amd64")), kids[0]);
    let other = vicpull_testkit::TempDir::new("vicpull-store");
    let mut o = options(&env, "fx/multi:1");
    o["platform"] = "linux/amd64".into();
    o["store"] = json!(other.path());
    assert_eq!(chosen(&capi::pull(o).0), kids[0]);
}

// S13: `linux/amd64/v2` against an index with only plain amd64 (and arm64): an amd64/v2
// host runs v1 code, so containerd takes the plain amd64 entry.
#[test]
fn x21_s13_amd64_v2_takes_plain_amd64() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![
            (child(210), Platform::new("linux", "arm64")),
            (child(211), Platform::new("linux", "amd64")),
        ],
        |_| {},
    );
    assert_eq!(chosen(&pull_platform(&env, "linux/amd64/v2")), kids[1]);
}

// S13: amd64 and amd64/v3 offered: `linux/amd64/v3` takes v3; plain `linux/amd64` (v1)
// never takes v3 code it may not run.
#[test]
fn x22_s13_amd64_v3_entry_only_for_v3_hosts() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![
            (child(221), Platform::new("linux", "amd64").variant("v3")),
            (child(220), Platform::new("linux", "amd64")),
        ],
        |_| {},
    );
    assert_eq!(chosen(&pull_platform(&env, "linux/amd64/v3")), kids[0]);
    let other = vicpull_testkit::TempDir::new("vicpull-store");
    let mut o = options(&env, "fx/multi:1");
    o["platform"] = "linux/amd64".into();
    o["store"] = json!(other.path());
    assert_eq!(chosen(&capi::pull(o).0), kids[1]);
}

// S13: Windows entries with os.version but no variant, asked as `windows/amd64`: one of
// them is taken, never the linux entry (vicpull takes the newer os.version).
#[test]
fn x23_s13_windows_os_version_without_variant() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![
            (child(230), Platform::new("linux", "amd64")),
            (
                child(231),
                Platform::new("windows", "amd64").os_version("10.0.17763.5576"),
            ),
            (
                child(232),
                Platform::new("windows", "amd64").os_version("10.0.20348.2340"),
            ),
        ],
        |_| {},
    );
    let got = chosen(&pull_platform(&env, "windows/amd64"));
    assert!(
        got == kids[1] || got == kids[2],
        "{got} is not a windows entry"
    );
}

// ---------------------------------------------------------------- S17/S18/S20 store

fn refs_named(store: &std::path::Path, suffix: &str) -> Vec<Value> {
    index_json(store)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
        .cloned()
        .collect()
}

// S18: the same image by tag and by digest at once: blobs fetched once, one entry for the
// tag, the manifest stored once, no temp files.
#[test]
fn x30_s18_by_tag_and_by_digest_store_state() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(30));
    env.proxy.throttle(Match::AnyBlob, 1 << 20, None);
    let a = capi::start(&options(&env, "fx/app:1")).unwrap();
    let by_digest = format!("fx/app@{}", pushed.manifest_digest);
    let b = capi::start(&options(&env, &by_digest)).unwrap();
    let mut stored = Vec::new();
    for p in [&a, &b] {
        let out = p.wait(Duration::from_secs(30));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
        stored.push(out.json.unwrap()["stored_manifest_digest"].clone());
    }
    assert_eq!(stored[0], stored[1]);
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1, "{}", l.digest);
    }
    assert_eq!(
        refs_named(env.store(), ":1").len(),
        1,
        "{}",
        index_json(env.store())
    );
    let same: Vec<_> = index_json(env.store())["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["digest"] == stored[0])
        .cloned()
        .collect();
    assert!(!same.is_empty() && same.len() <= 2, "{same:?}");
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// S20: a layer file already in the store but zero bytes long: not trusted; fetched again
// and verified.
#[test]
fn x31_s20_zero_length_layer_file_in_store() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(31));
    let big = pushed.layers[1].digest.clone();
    let dir = env.store().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(big.trim_start_matches("sha256:")), b"").unwrap();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(&big), 1);
    assert!(has_blob(env.store(), &big));
    assert_blobs_verify(env.store());
}

// S20: the store names fx/app:1 with an older digest; the tag moved upstream: a re-pull
// updates the entry in place (one entry for the ref, the new digest).
#[test]
fn x32_s20_ref_with_other_digest_is_updated() {
    let env = Env::new();
    let old = env.push("fx/app", "1", &small_spec(32));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let new = env.push("fx/app", "1", &small_spec(34));
    assert_ne!(old.manifest_digest, new.manifest_digest);
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    assert_eq!(json["manifest_digest"], new.manifest_digest.as_str());
    let refs = refs_named(env.store(), ":1");
    assert_eq!(refs.len(), 1, "{}", index_json(env.store()));
    // The store keeps an OCI conversion: its digest is reported as stored_manifest_digest.
    assert_eq!(refs[0]["digest"], json["stored_manifest_digest"]);
    assert_eq!(named_images(env.store()), 1, "{}", index_json(env.store()));
    assert_blobs_verify(env.store());
}

// S18: two tags of one image pulled at once: each tag gets its own entry, every blob is
// fetched once.
#[test]
fn x33_s18_two_tags_of_one_image_concurrently() {
    let env = Env::new();
    let spec = small_spec(36);
    let pushed = env.push("fx/app", "1", &spec);
    env.push("fx/app", "2", &spec);
    env.proxy.throttle(Match::AnyBlob, 1 << 20, None);
    let a = capi::start(&options(&env, "fx/app:1")).unwrap();
    let b = capi::start(&options(&env, "fx/app:2")).unwrap();
    for p in [&a, &b] {
        let out = p.wait(Duration::from_secs(30));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1, "{}", l.digest);
    }
    assert_eq!(refs_named(env.store(), ":1").len(), 1);
    assert_eq!(refs_named(env.store(), ":2").len(), 1);
    assert_eq!(named_images(env.store()), 2, "{}", index_json(env.store()));
    no_temp_files(env.store());
}

// S18: two concurrent pulls that share one image (two tags; a tag and its digest): the
// config blob, like the layers, is fetched once.
#[test]
fn x34_s18_config_fetched_once_for_concurrent_pulls() {
    let env = Env::new();
    let spec = small_spec(38);
    let pushed = env.push("fx/app", "1", &spec);
    env.push("fx/app", "2", &spec);
    env.proxy.throttle(Match::AnyBlob, 1 << 20, None);
    let by_digest = format!("fx/app@{}", pushed.manifest_digest);
    let pulls: Vec<_> = ["fx/app:1", "fx/app:2", by_digest.as_str()]
        .iter()
        .map(|r| capi::start(&options(&env, r)).unwrap())
        .collect();
    for p in &pulls {
        let out = p.wait(Duration::from_secs(30));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    assert_eq!(
        env.proxy.count_gets(&pushed.config_digest),
        1,
        "config GETs"
    );
    assert_blobs_verify(env.store());
}

// S20: the store's index.json names the ref twice (an older writer's duplicates, other
// digests): a re-pull leaves exactly one entry for it, with the pulled digest.
#[test]
fn x35_s20_duplicate_ref_entries_collapse_on_repull() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(40));
    let name = env.reference("fx/app:1");
    let stale = |c: char| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", c.to_string().repeat(64)),
            "size": 100,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            }
        })
    };
    std::fs::create_dir_all(env.store()).unwrap();
    std::fs::write(
        env.store().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [stale('a'), stale('b')]});
    std::fs::write(env.store().join("index.json"), index.to_string()).unwrap();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let json = out.json.unwrap();
    let refs = refs_named(env.store(), ":1");
    assert_eq!(refs.len(), 1, "{}", index_json(env.store()));
    assert_eq!(refs[0]["digest"], json["stored_manifest_digest"]);
}

// S01: the realm redirects to a token host on another address (127.0.0.2): the options'
// Basic credentials do not follow a cross-host redirect (Go's client drops them).
#[test]
fn x07_s01_basic_credentials_not_sent_across_token_redirect() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(7));
    let other = Stub::start("127.0.0.2", |_| Reply::json(200, &json!({"token": "T"})));
    let target = format!("{}/token", other.url());
    let hop = Stub::start("127.0.0.1", move |r| {
        let loc = format!("{target}?{}", r.query.clone().unwrap_or_default());
        Reply::new(302).header("Location", &loc)
    });
    let challenge = format!(
        r#"Bearer realm="{}/hop",service="{SERVICE}",scope="repository:fx/app:pull""#,
        hop.url()
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    for q in other.requests() {
        assert!(
            q.header("authorization").is_none(),
            "credentials followed the redirect"
        );
    }
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    secret_free(&out);
}

// S10: a `registries` key naming the same host on another port does not apply.
#[test]
fn x13_s10_key_with_other_port_does_not_apply() {
    let p = pair(13);
    let port: u16 =
        p.up.proxy
            .addr()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
    let key = format!("127.0.0.1:{}", if port == 65535 { 1 } else { port + 1 });
    let reg = json!({ key: {"mirrors": [p.mirror.url()]} });
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(p.mirror.requests().is_empty());
    assert_eq!(upstream_blob_gets(&p), 3);
}

// S13: `linux/amd64/v1` is the plain amd64 baseline: it takes the entry without a variant.
#[test]
fn x24_s13_amd64_v1_takes_plain_amd64() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![
            (child(240), Platform::new("linux", "arm64")),
            (child(241), Platform::new("linux", "amd64")),
        ],
        |_| {},
    );
    assert_eq!(chosen(&pull_platform(&env, "linux/amd64/v1")), kids[1]);
}

// S13: only amd64/v3 offered and plain `linux/amd64` asked: NOT_FOUND listing what is there
// (v3 code may not run on a v1 host), nothing written.
#[test]
fn x25_s13_only_amd64_v3_for_plain_amd64_is_not_found() {
    let env = Env::new();
    index_with(
        &env,
        vec![(child(250), Platform::new("linux", "amd64").variant("v3"))],
        |_| {},
    );
    let out = pull_platform(&env, "linux/amd64");
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains("linux/amd64/v3"), "{}", out.message);
    registry_kit::assert_nothing_written(env.store());
}

// S17: pulled by tag, then by digest into the same store: nothing is downloaded again and
// the tag's entry stays.
#[test]
fn x36_s17_by_digest_after_tag_downloads_nothing() {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &small_spec(42));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    env.proxy.clear_log();
    let by_digest = format!("fx/app@{}", pushed.manifest_digest);
    let (out, _) = capi::pull(options(&env, &by_digest));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let blob_gets = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0);
    assert_eq!(out.json.unwrap()["bytes_downloaded"], 0);
    assert_eq!(
        refs_named(env.store(), ":1").len(),
        1,
        "{}",
        index_json(env.store())
    );
}

fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

// S02: an https realm on a port where nothing listens: fails soon, naming the realm's
// host, with no secret in the message.
#[test]
fn x08_s02_dead_https_realm_fails_soon_and_clearly() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(8));
    let dead = dead_addr();
    let challenge = format!(
        r#"Bearer realm="https://{dead}/token",service="{SERVICE}",scope="repository:fx/app:pull""#
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let t0 = Instant::now();
    let (out, _) = capi::pull(with_creds(options(&env, "fx/app:1")));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(
        matches!(out.code, vic_result::Auth | vic_result::Network),
        "{:?} {}",
        out.code,
        out.message
    );
    assert!(out.message.contains(&dead), "{}", out.message);
    secret_free(&out);
    registry_kit::assert_nothing_written(env.store());
}

// S01: the realm redirects to itself forever: bounded (10 hops), a clear error soon, no
// token storm.
#[test]
fn x09_s01_token_redirect_loop_is_bounded() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(9));
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let tok = Stub::start("127.0.0.1", move |r| {
        h2.fetch_add(1, Ordering::SeqCst);
        let loc = format!("/token?{}", r.query.clone().unwrap_or_default());
        Reply::new(302).header("Location", &loc)
    });
    let challenge = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:fx/app:pull""#,
        tok.url()
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(
        matches!(out.code, vic_result::Auth | vic_result::Registry),
        "{:?} {}",
        out.code,
        out.message
    );
    assert!(
        out.message.to_lowercase().contains("redirect"),
        "{}",
        out.message
    );
    let n = hits.load(Ordering::SeqCst);
    assert!(n <= 40, "token endpoint hit {n} times");
    registry_kit::assert_nothing_written(env.store());
}

// S10: two mirrors over one cache; the first lacks one layer (404): that layer comes from
// the second mirror, not from upstream; everything else from the first.
#[test]
fn x14_s10_blob_missing_on_first_mirror_comes_from_second() {
    let p = pair(14);
    let second = FaultProxy::start(p.mirror_registry.addr());
    let big = p.pushed.layers[1].digest.clone();
    let unknown = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#;
    p.mirror.respond(Match::blob(&big), 404, &[], unknown, None);
    let mirrors = json!([p.mirror.url(), second.url()]);
    let reg = json!({ p.up.proxy.addr(): {"mirrors": mirrors} });
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(upstream_blob_gets(&p), 0, "upstream served blobs");
    assert_eq!(second.count_gets(&big), 1);
    assert_eq!(p.mirror.count_gets(&p.pushed.layers[0].digest), 1);
    assert_blobs_verify(p.up.store());
}

// S01: the token endpoint wants Basic credentials and none are given: AUTH soon, naming
// the registry or realm, after a bounded number of token requests.
#[test]
fn x15_s01_basic_token_endpoint_without_credentials() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(15));
    let tok = BasicTokenStub::start();
    let challenge = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:fx/app:pull""#,
        tok.stub.url()
    );
    bearer_front(&env.proxy, &["T"], challenge);
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let asked = tok.stub.requests().len();
    assert!(asked <= 3, "token endpoint asked {asked} times");
    assert!(
        out.message.contains(tok.stub.addr()) || out.message.contains(env.proxy.addr()),
        "{}",
        out.message
    );
    registry_kit::assert_nothing_written(env.store());
}

// S04: as x05 but the refusal is a plain challenge (no error param) and only the second
// manifest request (the by-digest one for an index child) is refused: renewal once.
#[test]
fn x05b_s04_child_manifest_401_after_index_renews_once() {
    let env = Env::new();
    let kids = index_with(
        &env,
        vec![(child(55), Platform::new("linux", "amd64"))],
        |_| {},
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let tok = Stub::start("127.0.0.1", move |_| {
        let n = c2.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::json(200, &json!({ "token": format!("T{n}") }))
    });
    let challenge = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:fx/multi:pull""#,
        tok.url()
    );
    let kid = kids[0].clone();
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T1") if r.path.ends_with(&kid) => Gate::Challenge(vec![challenge.clone()]),
        Some(a) if a.starts_with("Bearer T") => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    });
    let out = pull_platform(&env, "linux/amd64");
    assert_eq!(chosen(&out), kids[0]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// S10: a mirror URL with a trailing slash is the same mirror: used for everything.
#[test]
fn x16_s10_mirror_url_with_trailing_slash() {
    let p = pair(16);
    let reg = json!({ p.up.proxy.addr(): {"mirrors": [format!("{}/", p.mirror.url())]} });
    let (out, _) = capi::pull(with_registries(&p, reg));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(upstream_blob_gets(&p), 0);
    assert_eq!(mirror_blob_gets(&p), 3);
    for r in p.mirror.requests() {
        assert!(!r.path.starts_with("//"), "{}", r.path);
    }
}

// S04: an anonymous registry (no challenge at all) answers the manifest 403 DENIED: AUTH
// naming the repository, one or two tries, nothing written.
#[test]
fn x17_s04_anonymous_manifest_403_denied() {
    let env = Env::new();
    env.push("fx/app", "1", &small_spec(17));
    let body =
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
    env.proxy.hook(move |r| {
        r.path.contains("/manifests/").then(|| Action::Respond {
            status: 403,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_vec(),
        })
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains("fx/app"), "{}", out.message);
    assert!(out.message.contains("denied"), "{}", out.message);
    let tries = env.proxy.requests().len();
    assert!(tries <= 3, "{tries} requests");
    registry_kit::assert_nothing_written(env.store());
}

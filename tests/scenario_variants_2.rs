//! Second round of variant probes on the pull scenarios (pull-scenarios.md S01-S20, not S21),
//! named `wNN_<scenario>_<case>`: cases tests/scenario_variants.rs does not cover. Each
//! asserts what docker / containerd / skopeo users would expect. The 5 that failed when
//! written (w03, w11, w30, w34, w36) were fixed in the product.

mod common;
mod registry_kit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::capi;
use common::fixtures::{assert_blobs_verify, leftovers, Env};
use registry_kit::{
    front, has_blob, index_with, options, pull_platform, respond, serve_range, Gate, TokenServer,
    OCI_INDEX,
};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull::progress::Kind;
use vicpull_testkit::image::put_manifest;
use vicpull_testkit::image::tarball::TarWriter;
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{
    push_image, push_index, sha256_digest, Compression, FaultProxy, Format, ImageSpec, Layer,
    Platform, PushedImage, Registry, Reply, Stub, StubRequest,
};

// ---------------------------------------------------------------- shared helpers

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

fn wire_bytes(env: &Env, digest: &str) -> u64 {
    env.proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(digest))
        .map(|r| r.body_bytes_sent)
        .sum()
}

fn wait_downloading(p: &capi::Pull, digest: &str, bytes: u64) {
    let t0 = Instant::now();
    while !p.events().iter().any(|e| {
        e.layer.as_deref() == Some(digest) && e.kind == Kind::Downloading && e.current >= bytes
    }) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{digest} stuck");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn no_temp_files(store: &std::path::Path) {
    assert!(leftovers(store).is_empty(), "{:?}", leftovers(store));
}

/// fx/app:1 with L1 (64 KiB) and L2 (1 MiB + 123).
fn transfer_env(seed: u64) -> (Env, PushedImage, ImageSpec) {
    let env = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random(64 << 10, seed),
        Layer::random((1 << 20) + 123, seed + 1),
    ]);
    let pushed = env.push("fx/app", "1", &spec);
    (env, pushed, spec)
}

/// After a cut at 300 000, the first ranged request for `digest` gets `action`.
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

// ---------------------------------------------------------------- S04 token expiry

// S04: two big layers are both cut mid-body; every resume (Range) request meets an expired
// token (401 invalid_token). One renewal serves both resumes; the pull completes with
// both layers resumed rather than fetched again whole.
#[test]
fn w01_s04_token_expires_during_resumes_on_two_layers() {
    let env = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random((1 << 20) + 7, 201),
        Layer::random((1 << 20) + 9, 202),
    ]);
    let pushed = env.push("fx/app", "1", &spec);
    for l in &spec.layers {
        env.proxy.cut(l.digest(), 400_000, CutMode::Rst, Some(1));
    }
    let auth = TokenServer::start(vec![json!({"token":"T1"}), json!({"token":"T2"})]);
    let challenge = auth.challenge();
    let expired = format!("{challenge},error=\"invalid_token\"");
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T1") if r.header("range").is_some() => Gate::Challenge(vec![expired.clone()]),
        Some("Bearer T1") | Some("Bearer T2") => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    });
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(auth.calls() <= 3, "token calls {}", auth.calls());
    for l in &spec.layers {
        let w = wire_bytes(&env, l.digest());
        assert!(
            w < l.size() + 450_000,
            "{w} bytes on the wire for {}",
            l.size()
        );
    }
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- S05 redirects

/// fx/app:1 (two layers) whose layer GETs redirect to a storage host on 127.0.0.2 that
/// answers with `answer(n-th request for this blob, request, bytes)`.
fn storage_env(
    seed: u64,
    answer: impl Fn(usize, &StubRequest, &[u8]) -> Reply + Send + Sync + 'static,
) -> (Env, ImageSpec, Stub) {
    let env = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random(40 << 10, seed),
        Layer::random((1 << 20) + 5, seed + 1),
    ]);
    env.push("fx/app", "1", &spec);
    let mut bytes = HashMap::new();
    for l in &spec.layers {
        bytes.insert(hex(l.digest()).to_string(), l.blob().to_vec());
    }
    let counts: Mutex<HashMap<String, usize>> = Mutex::default();
    let cdn = Stub::start("127.0.0.2", move |r| {
        let h = r.path.trim_start_matches("/s/").to_string();
        let Some(b) = bytes.get(&h) else {
            return Reply::new(404);
        };
        let n = {
            let mut c = counts.lock().unwrap();
            let e = c.entry(h).or_insert(0);
            *e += 1;
            *e - 1
        };
        answer(n, r, b)
    });
    let url = cdn.url();
    let hexes: Vec<String> = spec.layers.iter().map(|l| hex(l.digest()).into()).collect();
    env.proxy.hook(move |r| {
        let h = hex(r.blob_digest()?).to_string();
        hexes
            .contains(&h)
            .then(|| respond(307, &[("Location", &format!("{url}/s/{h}?sig=1"))], b""))
    });
    (env, spec, cdn)
}

// S05: the storage host ignores Range: the first answer is cut mid-body, the resume gets
// 200 with the whole blob. The blob is taken from 0 and verified.
#[test]
fn w02_s05_storage_ignores_range_on_resume() {
    let (env, spec, cdn) = storage_env(210, |n, _, b| {
        let r = Reply::new(200).body(b.to_vec());
        if n == 0 && b.len() > 100_000 {
            r.cut_after(300_000)
        } else {
            r
        }
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), spec.layers[1].digest()));
    assert!(cdn.requests().len() <= 5, "{}", cdn.requests().len());
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// S05: the storage host answers 416 to every Range request after a cut: the client starts
// over from 0 (no Range) rather than failing or looping.
#[test]
fn w03_s05_storage_416_on_resume() {
    let (env, spec, cdn) = storage_env(212, |n, r, b| {
        if r.header("range").is_some() {
            return Reply::new(416).header("Content-Range", &format!("bytes */{}", b.len()));
        }
        let full = Reply::new(200).body(b.to_vec());
        if n == 0 && b.len() > 100_000 {
            full.cut_after(300_000)
        } else {
            full
        }
    });
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    let ranged = cdn
        .requests()
        .iter()
        .filter(|q| q.header("range").is_some())
        .count();
    eprintln!(
        "storage requests {} (ranged {ranged}), {:?}",
        cdn.requests().len(),
        t0.elapsed()
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(cdn.requests().len() <= 6, "{}", cdn.requests().len());
    assert!(has_blob(env.store(), spec.layers[1].digest()));
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- S07 partial content

// S07: the resume's 206 body is 100 bytes longer than its Content-Range says: the extra
// bytes must never reach the stored blob; the pull still ends with a verified blob.
#[test]
fn w04_s07_206_body_longer_than_content_range() {
    let (env, pushed, spec) = transfer_env(220);
    let l2 = &spec.layers[1];
    let size = l2.size();
    let mut body = l2.blob()[300_000..].to_vec();
    body.extend(vec![0x5au8; 100]);
    let cr = format!("bytes 300000-{}/{size}", size - 1);
    on_first_resume(
        &env,
        l2.digest(),
        respond(206, &[("Content-Range", &cr)], &body),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// S07: the resume's 206 body is shorter than its Content-Range (Content-Length matches the
// short body): treated as a cut, resumed again, verified.
#[test]
fn w05_s07_206_body_shorter_than_content_range() {
    let (env, pushed, spec) = transfer_env(222);
    let l2 = &spec.layers[1];
    let size = l2.size();
    let body = l2.blob()[300_000..600_000].to_vec();
    let cr = format!("bytes 300000-{}/{size}", size - 1);
    on_first_resume(
        &env,
        l2.digest(),
        respond(206, &[("Content-Range", &cr)], &body),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert!(env.proxy.count_gets(l2.digest()) <= 4);
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// ---------------------------------------------------------------- S10 mirrors

struct Pair {
    up: Env,
    mirror_registry: Registry,
    mirror: FaultProxy,
    pushed: PushedImage,
}

fn pair(seed: u64) -> Pair {
    let up = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random(50 << 10, seed),
        Layer::random(700 << 10, seed + 1),
    ]);
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

fn mirror_options(p: &Pair, reference: &str) -> Value {
    let mut o = p.up.options(reference);
    o["docker_config"] = false.into();
    o["registries"] = json!({ p.up.proxy.addr(): {"mirrors": [p.mirror.url()]} });
    o
}

// S10: a stale mirror: its tag points at an older image. Like docker and containerd, a tag
// is taken from the first mirror that answers; the result must be that one image, whole and
// consistent (config and layers of the mirror's manifest), never a mix with upstream's.
#[test]
fn w06_s10_stale_mirror_tag_gives_one_consistent_image() {
    let p = pair(230);
    let old = ImageSpec::new(vec![Layer::random(30 << 10, 232)]);
    let old_pushed = push_image(p.mirror_registry.addr(), "fx/app", "1", &old);
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let got = out.json.unwrap()["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let image = if got == old_pushed.manifest_digest {
        &old_pushed
    } else {
        assert_eq!(got, p.pushed.manifest_digest);
        &p.pushed
    };
    for l in &image.layers {
        assert!(has_blob(p.up.store(), &l.digest));
    }
    assert!(has_blob(p.up.store(), &image.config_digest));
    assert_blobs_verify(p.up.store());
}

// S10: the mirror redirects blob GETs to its storage host (127.0.0.2): followed, no
// upstream blob traffic, no credentials sent to the storage host.
#[test]
fn w07_s10_mirror_redirects_blobs_to_storage() {
    let p = pair(234);
    let mut bytes = HashMap::new();
    let spec_layers = [Layer::random(50 << 10, 234), Layer::random(700 << 10, 235)];
    for l in &spec_layers {
        bytes.insert(hex(l.digest()).to_string(), l.blob().to_vec());
    }
    let cdn = Stub::start("127.0.0.2", move |r| {
        match bytes.get(r.path.trim_start_matches("/m/")) {
            Some(b) => serve_range(r, b),
            None => Reply::new(404),
        }
    });
    let url = cdn.url();
    let layer_hexes: Vec<String> = spec_layers.iter().map(|l| hex(l.digest()).into()).collect();
    p.mirror.hook(move |r| {
        let h = hex(r.blob_digest()?).to_string();
        layer_hexes
            .contains(&h)
            .then(|| respond(302, &[("Location", &format!("{url}/m/{h}"))], b""))
    });
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for l in &p.pushed.layers {
        assert_eq!(
            p.up.proxy.count_gets(&l.digest),
            0,
            "{} from upstream",
            l.digest
        );
    }
    assert_eq!(cdn.requests().len(), 2);
    for q in cdn.requests() {
        assert!(q.header("authorization").is_none());
    }
    assert_blobs_verify(p.up.store());
}

// ---------------------------------------------------------------- S12 content types

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
fn child(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(20 << 10, seed)])
}

// S12: an OCI index (mediaType in the body) served with the Docker manifest-list
// Content-Type: both are indexes, the platform is resolved as usual.
#[test]
fn w08_s12_oci_index_served_as_docker_list() {
    let env = Env::new();
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (child(240), Platform::new("linux", "arm64")),
            (child(241), Platform::new("linux", "amd64")),
        ],
        Format::Oci,
    );
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &[("Content-Type", DOCKER_LIST)],
        &idx.bytes,
        None,
    );
    let mut o = options(&env, "fx/multi:1");
    o["platform"] = "linux/amd64".into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        out.json.unwrap()["manifest_digest"],
        idx.children[1].manifest_digest.as_str()
    );
}

// S12: an OCI index whose child is a Docker schema2 manifest (buildx mixes them).
#[test]
fn w09_s12_oci_index_with_docker_child() {
    let env = Env::new();
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (child(242), Platform::new("linux", "amd64")),
            (
                child(243).format(Format::Oci),
                Platform::new("linux", "arm64"),
            ),
        ],
        Format::Oci,
    );
    assert_eq!(
        idx.children[0].manifest_media_type,
        Format::Docker.manifest_media_type()
    );
    let mut o = options(&env, "fx/multi:1");
    o["platform"] = "linux/amd64".into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        out.json.unwrap()["manifest_digest"],
        idx.children[0].manifest_digest.as_str()
    );
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- S13 platforms

// S13: linux entries that carry an `os.version` (some builders write the kernel version):
// os.version only matters for Windows; `linux/amd64` still matches.
#[test]
fn w10_s13_linux_entry_with_os_version() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (
                child(250),
                Platform::new("linux", "arm64").os_version("6.1"),
            ),
            (
                child(251),
                Platform::new("linux", "amd64").os_version("5.15.0"),
            ),
        ],
        |_| {},
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["manifest_digest"], kids[1].as_str());
}

// S13: `linux/arm64/v9` runs arm64/v8 code: takes the v8 entry (containerd's arm64 rule),
// never the amd64 one.
#[test]
fn w11_s13_arm64_v9_takes_v8() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(252), Platform::new("linux", "amd64")),
            (child(253), Platform::new("linux", "arm64").variant("v8")),
        ],
        |_| {},
    );
    let out = pull_platform(&env, "1", "linux/arm64/v9");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["manifest_digest"], kids[1].as_str());
}

// S13: an index holding only attestation manifests (unknown/unknown, buildx's reference
// annotations): NotFound naming the wanted platform, nothing written.
#[test]
fn w12_s13_index_with_only_attestations() {
    let env = Env::new();
    index_with(
        &env,
        "1",
        vec![
            (child(254), Platform::new("unknown", "unknown")),
            (child(255), Platform::new("unknown", "unknown")),
        ],
        |d| {
            for m in d["manifests"].as_array_mut().unwrap() {
                m["annotations"] = json!({
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": "sha256:".to_string() + &"0".repeat(64),
                });
            }
        },
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains("linux/amd64"), "{}", out.message);
    assert!(
        env.proxy
            .requests()
            .iter()
            .all(|r| !r.path.contains("/blobs/")),
        "blobs fetched"
    );
    registry_kit::assert_nothing_written(env.store());
}

// ---------------------------------------------------------------- S14 rate limits

// S14: the first GET of every blob answers 429 with Retry-After: 1, with 3 parallel
// downloads: each blob is asked twice, and the waits overlap (total time well under the
// sum of the waits).
#[test]
fn w13_s14_429_on_every_blob_with_three_parallel() {
    let env = Env::new();
    let spec = ImageSpec::new(vec![
        Layer::random(30 << 10, 260),
        Layer::random(31 << 10, 261),
        Layer::random(32 << 10, 262),
        Layer::random(33 << 10, 263),
        Layer::random(34 << 10, 264),
    ]);
    let pushed = env.push("fx/app", "1", &spec);
    let seen: Mutex<HashMap<String, usize>> = Mutex::default();
    env.proxy.hook(move |r| {
        let d = r.blob_digest()?.to_string();
        if r.method != "GET" {
            return None;
        }
        let mut s = seen.lock().unwrap();
        let n = s.entry(d).or_insert(0);
        *n += 1;
        (*n == 1).then(|| {
            respond(
                429,
                &[("Retry-After", "1")],
                br#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#,
            )
        })
    });
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(o);
    let took = t0.elapsed();
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    // 6 blobs (5 layers + config): at least 6 s if their 1 s waits ran one after the
    // other, about 3 s in parallel; the margin is for a loaded 2-core machine.
    assert!(took < Duration::from_millis(5900), "{took:?}");
    let mut digests: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
    digests.push(&pushed.config_digest);
    for d in digests {
        assert_eq!(env.proxy.count_gets(d), 2, "{d}");
    }
}

// ---------------------------------------------------------------- S15 layer formats

fn some_tar() -> Vec<u8> {
    let mut t = TarWriter::new();
    t.dir("etc/");
    t.file("etc/hello.txt", false, &b"hello again\n".repeat(3000));
    t.finish()
}

/// Push a one-layer Docker image of `blob` announced as `media_type` (diff_id from `tar`).
fn pull_docker_layer(blob: Vec<u8>, tar: &[u8], media_type: &str) -> (capi::Outcome, Env) {
    let env = Env::new();
    let layer =
        Layer::from_blob(blob, &sha256_digest(tar), Compression::None).with_media_type(media_type);
    env.push("fx/fmt", "1", &ImageSpec::new(vec![layer]));
    let (out, _) = capi::pull(options(&env, "fx/fmt:1"));
    (out, env)
}

// S15: a zstd layer announced with Docker's `rootfs.diff.tar.zstd` type (moby writes it).
#[test]
fn w14_s15_docker_zstd_media_type() {
    let tar = some_tar();
    let blob = zstd::bulk::compress(&tar, 3).unwrap();
    let (out, env) = pull_docker_layer(
        blob,
        &tar,
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
    );
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_blobs_verify(env.store());
}

// S15: a 0-byte blob declared as an uncompressed tar: Go's tar reader sees an empty archive,
// so docker and containerd accept it; vicpull should too (diff_id = sha256 of nothing).
#[test]
fn w15_s15_zero_byte_layer_as_tar() {
    let (out, env) = pull_docker_layer(Vec::new(), &[], "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- S17 dedup

// S17: one digest at positions 1 and 3 with Docker's empty gzip layer between: one GET of
// the repeated layer, three layers in the result in manifest order.
#[test]
fn w16_s17_same_layer_around_empty_gzip() {
    let env = Env::new();
    let la = Layer::random(400 << 10, 270);
    let e = Layer::empty_gzip();
    env.push(
        "fx/dup",
        "1",
        &ImageSpec::new(vec![la.clone(), e.clone(), la.clone()]),
    );
    let (out, ev) = capi::pull(options(&env, "fx/dup:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(la.digest()), 1);
    assert!(env.proxy.count_gets(e.digest()) <= 1);
    let layers = out.json.unwrap()["layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 3, "{layers:?}");
    let text = serde_json::to_string(&layers).unwrap();
    assert!(text.find(la.digest()).unwrap() < text.find(e.digest()).unwrap());
    assert_eq!(text.matches(la.digest()).count(), 2, "{text}");
    assert!(!ev.iter().any(|x| x.kind == Kind::Retrying));
    assert_blobs_verify(env.store());
}

// ---------------------------------------------------------------- S18 concurrency

// S18: three pulls of overlapping images started 50 ms apart into one store: all succeed,
// each shared blob crosses the wire once.
#[test]
fn w17_s18_three_overlapping_pulls_50ms_apart() {
    let env = Env::new();
    let s = Layer::random(2 << 20, 280);
    let x = Layer::random(300 << 10, 281);
    env.push("fx/a", "1", &ImageSpec::new(vec![s.clone(), x.clone()]));
    env.push(
        "fx/b",
        "1",
        &ImageSpec::new(vec![s.clone(), Layer::random(20 << 10, 282)]),
    );
    env.push(
        "fx/c",
        "1",
        &ImageSpec::new(vec![x.clone(), s.clone(), Layer::random(20 << 10, 283)]),
    );
    env.proxy.throttle(Match::AnyBlob, 4 << 20, None);
    let mut pulls = Vec::new();
    for r in ["fx/a:1", "fx/b:1", "fx/c:1"] {
        pulls.push(capi::start(&options(&env, r)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &pulls {
        let out = p.wait(Duration::from_secs(60));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    assert_eq!(env.proxy.count_gets(s.digest()), 1);
    assert_eq!(env.proxy.count_gets(x.digest()), 1);
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// ---------------------------------------------------------------- S19 cancel

// S19: cancel a pull mid-transfer and at once (without waiting for it to stop) pull the same
// image again: the first ends Cancelled, the second succeeds, the store verifies, nothing
// is left in ingest, and the second does not start the big layer over from 0.
#[test]
fn w18_s19_cancel_then_immediate_repull() {
    let env = Env::new();
    let big = Layer::random(4 << 20, 290);
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![big.clone(), Layer::random(10 << 10, 291)]),
    );
    env.proxy.throttle(Match::blob(big.digest()), 2 << 20, None);
    let a = capi::start(&options(&env, "fx/app:1")).unwrap();
    wait_downloading(&a, big.digest(), 1 << 20);
    a.cancel();
    let b = capi::start(&options(&env, "fx/app:1")).unwrap();
    let oa = a.wait(Duration::from_secs(10));
    assert_eq!(oa.code, vic_result::Cancelled, "{}", oa.message);
    let ob = b.wait(Duration::from_secs(30));
    assert_eq!(ob.code, vic_result::Ok, "{}", ob.message);
    assert_eq!(
        ob.json.unwrap()["manifest_digest"],
        pushed.manifest_digest.as_str()
    );
    assert_blobs_verify(env.store());
    drop(a);
    drop(b);
    no_temp_files(env.store());
    let w = wire_bytes(&env, big.digest());
    assert!(w < big.size() + (1 << 20), "{w} bytes for {}", big.size());
}

// ---------------------------------------------------------------- S20 integrity

// S20: the manifest declares size 0 for a layer whose blob is not empty: refused as a
// digest/size mismatch naming the layer, blob not stored, no temp file left.
#[test]
fn w19_s20_layer_size_zero_blob_not_empty() {
    let env = Env::new();
    let spec = ImageSpec::new(vec![Layer::random(100 << 10, 300)]);
    let pushed = env.push("fx/app", "1", &spec);
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    m["layers"][0]["size"] = 0.into();
    put_manifest(
        env.registry.addr(),
        "fx/app",
        "z",
        &pushed.manifest_media_type,
        &serde_json::to_vec(&m).unwrap(),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:z"));
    assert_ne!(
        out.code,
        vic_result::Ok,
        "a layer of declared size 0 was accepted"
    );
    assert!(
        matches!(out.code, vic_result::DigestMismatch | vic_result::Registry),
        "{:?} {}",
        out.code,
        out.message
    );
    let d = &pushed.layers[0].digest;
    assert!(out.message.contains(d.as_str()), "{}", out.message);
    assert!(!has_blob(env.store(), d));
    no_temp_files(env.store());
    // Bounded: no retry storm on a blob that can never match.
    assert!(env.proxy.count_gets(d) <= 2, "{}", env.proxy.count_gets(d));
}

// ---------------------------------------------------------------- more variants

// S14: every blob GET answers 429 with Retry-After: 1 for ever: RateLimited in bounded time
// and a bounded number of requests, nothing stored.
#[test]
fn w20_s14_429_forever_on_blobs_is_bounded() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(30 << 10, 310)]),
    );
    env.proxy.respond(
        Match::AnyBlob,
        429,
        &[("Retry-After", "1")],
        br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        None,
    );
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(o);
    let took = t0.elapsed();
    assert_eq!(out.code, vic_result::RateLimited, "{}", out.message);
    assert!(took < Duration::from_secs(30), "{took:?}");
    let blob_requests = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert!(blob_requests <= 20, "{blob_requests} blob requests");
    assert!(!has_blob(env.store(), &pushed.layers[0].digest));
    no_temp_files(env.store());
}

// S10/S05: the mirror redirects a blob to storage that answers 404: that blob comes from
// upstream, the rest from the mirror.
#[test]
fn w21_s10_mirror_redirect_to_dead_storage_falls_back() {
    let p = pair(320);
    let cdn = Stub::start("127.0.0.2", |_| Reply::new(404));
    let url = cdn.url();
    let big = p.pushed.layers[1].digest.clone();
    let b = big.clone();
    p.mirror.hook(move |r| {
        (r.blob_digest() == Some(b.as_str()))
            .then(|| respond(302, &[("Location", &format!("{url}/x/{}", hex(&b)))], b""))
    });
    let t0 = Instant::now();
    let (out, _) = capi::pull(mirror_options(&p, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(p.up.proxy.count_gets(&big), 1);
    assert_eq!(p.up.proxy.count_gets(&p.pushed.layers[0].digest), 0);
    assert_blobs_verify(p.up.store());
}

// S20: the manifest declares a layer larger than its blob: refused (size/digest mismatch
// naming the layer) in bounded time, nothing stored for it.
#[test]
fn w22_s20_layer_size_larger_than_blob() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(100 << 10, 330)]),
    );
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    let real = m["layers"][0]["size"].as_u64().unwrap();
    m["layers"][0]["size"] = (real + 1000).into();
    put_manifest(
        env.registry.addr(),
        "fx/app",
        "big",
        &pushed.manifest_media_type,
        &serde_json::to_vec(&m).unwrap(),
    );
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:big"));
    assert!(
        matches!(out.code, vic_result::DigestMismatch | vic_result::Registry),
        "{:?} {}",
        out.code,
        out.message
    );
    let d = &pushed.layers[0].digest;
    assert!(out.message.contains(d.as_str()), "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(env.proxy.count_gets(d) <= 4, "{}", env.proxy.count_gets(d));
    assert!(!has_blob(env.store(), d));
    no_temp_files(env.store());
}

// S15: a 0-byte blob declared as a gzip layer: not a gzip stream; fails clearly naming the
// layer, no panic, nothing left behind.
#[test]
fn w23_s15_zero_byte_layer_as_gzip() {
    let (out, env) = pull_docker_layer(
        Vec::new(),
        &[],
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    assert!(
        matches!(
            out.code,
            vic_result::Unsupported | vic_result::DigestMismatch
        ),
        "{:?} {}",
        out.code,
        out.message
    );
    assert!(out.message.contains(&sha256_digest(&[])), "{}", out.message);
    no_temp_files(env.store());
}

// S18: three pulls of the same image at the same moment, the big layer's first GET cut
// mid-body: all three succeed, the layer is fetched by one resume, not three downloads.
#[test]
fn w24_s18_three_same_pulls_with_cut() {
    let env = Env::new();
    let big = Layer::random(2 << 20, 340);
    env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![big.clone(), Layer::random(10 << 10, 341)]),
    );
    env.proxy.throttle(Match::blob(big.digest()), 4 << 20, None);
    env.proxy.cut(big.digest(), 500_000, CutMode::Rst, Some(1));
    let pulls: Vec<capi::Pull> = (0..3)
        .map(|_| capi::start(&options(&env, "fx/app:1")).unwrap())
        .collect();
    for p in &pulls {
        let out = p.wait(Duration::from_secs(60));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    assert!(
        env.proxy.count_gets(big.digest()) <= 2,
        "{}",
        env.proxy.count_gets(big.digest())
    );
    let w = wire_bytes(&env, big.digest());
    assert!(w < big.size() + (600 << 10), "{w} bytes for {}", big.size());
    assert_blobs_verify(env.store());
}

// S19/S14: cancel while a blob GET waits out Retry-After: 30: ends Cancelled at once.
#[test]
fn w25_s19_cancel_during_blob_429_wait() {
    let env = Env::new();
    env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(30 << 10, 350)]),
    );
    env.proxy
        .respond(Match::AnyBlob, 429, &[("Retry-After", "30")], b"", None);
    let mut o = options(&env, "fx/app:1");
    o["max_retry_wait_secs"] = 60.into();
    let p = capi::start(&o).unwrap();
    let t0 = Instant::now();
    while !env
        .proxy
        .requests()
        .iter()
        .any(|r| r.path.contains("/blobs/"))
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no blob request");
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
    drop(p);
    no_temp_files(env.store());
}

// S13: an index with only windows entries, asked for linux/amd64: NotFound that lists what
// the index offers, no blob fetched.
#[test]
fn w26_s13_windows_only_index_for_linux() {
    let env = Env::new();
    index_with(
        &env,
        "1",
        vec![(
            child(360),
            Platform::new("windows", "amd64").os_version("10.0.20348.2113"),
        )],
        |_| {},
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(out.message.contains("windows/amd64"), "{}", out.message);
    registry_kit::assert_nothing_written(env.store());
}

// S07: the resume is answered 206 with no Content-Range at all: not trusted; the blob is
// fetched again and verified.
#[test]
fn w27_s07_206_without_content_range() {
    let (env, pushed, spec) = transfer_env(370);
    let l2 = &spec.layers[1];
    on_first_resume(&env, l2.digest(), respond(206, &[], &l2.blob()[300_000..]));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert_blobs_verify(env.store());
    no_temp_files(env.store());
}

// S14: Retry-After as an HTTP date 2 s ahead on the manifest: waited (about 2 s), success.
#[test]
fn w28_s14_retry_after_http_date_in_future() {
    let env = Env::new();
    env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(10 << 10, 380)]),
    );
    let when = httpdate(std::time::SystemTime::now() + Duration::from_secs(3));
    env.proxy.respond(
        Match::Manifest("1".into()),
        429,
        &[("Retry-After", &when)],
        b"",
        Some(1),
    );
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "did not wait: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// IMF-fixdate of `t` (RFC 9110), without a date crate.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// S05 contrast to w03: the registry itself (same origin) answers 416 to the resume: the
// blob is fetched again from byte 0 and the pull succeeds.
#[test]
fn w29_s05_same_origin_416_on_resume_restarts() {
    let (env, pushed, spec) = transfer_env(390);
    let l2 = &spec.layers[1];
    let cr = format!("bytes */{}", l2.size());
    env.proxy.cut(l2.digest(), 300_000, CutMode::Rst, Some(1));
    let d = l2.digest().to_string();
    env.proxy.hook(move |r| {
        (r.path.ends_with(&d) && r.header("range").is_some())
            .then(|| respond(416, &[("Content-Range", &cr)], b""))
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(env.store(), &pushed.layers[1].digest));
    assert!(env.proxy.count_gets(l2.digest()) <= 4);
    assert_blobs_verify(env.store());
}

// S13: `linux/arm64/v8.2` (a CPU feature level) runs plain arm64 (v8) images.
#[test]
fn w30_s13_arm64_v8_2_takes_plain_arm64() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![
            (child(392), Platform::new("linux", "amd64")),
            (child(393), Platform::new("linux", "arm64")),
        ],
        |_| {},
    );
    let out = pull_platform(&env, "1", "linux/arm64/v8.2");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["manifest_digest"], kids[1].as_str());
}

// S12: a Docker manifest list served with the OCI image-index Content-Type.
#[test]
fn w31_s12_docker_list_served_as_oci_index() {
    let env = Env::new();
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[
            (child(394), Platform::new("linux", "arm64")),
            (child(395), Platform::new("linux", "amd64")),
        ],
        Format::Docker,
    );
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &[("Content-Type", OCI_INDEX)],
        &idx.bytes,
        None,
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        out.json.unwrap()["manifest_digest"],
        idx.children[1].manifest_digest.as_str()
    );
}

// S12: an index body (mediaType index, `manifests` list) served with an image-manifest
// Content-Type: resolved as an index (the body says what it is), or refused clearly; never
// a blob fetch of nonsense.
#[test]
fn w32_s12_index_body_with_manifest_content_type() {
    let env = Env::new();
    let idx = push_index(
        env.registry.addr(),
        "fx/multi",
        "1",
        &[(child(396), Platform::new("linux", "amd64"))],
        Format::Oci,
    );
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &[("Content-Type", Format::Oci.manifest_media_type())],
        &idx.bytes,
        None,
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    if out.code == vic_result::Ok {
        assert_eq!(
            out.json.unwrap()["manifest_digest"],
            idx.children[0].manifest_digest.as_str()
        );
    } else {
        assert!(
            matches!(out.code, vic_result::Registry | vic_result::Unsupported),
            "{:?} {}",
            out.code,
            out.message
        );
        assert!(out.message.contains("index"), "{}", out.message);
        registry_kit::assert_nothing_written(env.store());
    }
}

// S17: Docker's empty gzip layer at positions 1 and 3 around a real layer.
#[test]
fn w33_s17_empty_gzip_at_both_ends() {
    let env = Env::new();
    let la = Layer::random(100 << 10, 397);
    let e = Layer::empty_gzip();
    env.push(
        "fx/dup",
        "1",
        &ImageSpec::new(vec![e.clone(), la.clone(), e.clone()]),
    );
    let (out, _) = capi::pull(options(&env, "fx/dup:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(env.proxy.count_gets(e.digest()) <= 1);
    assert_eq!(env.proxy.count_gets(la.digest()), 1);
    assert_eq!(out.json.unwrap()["layers"].as_array().unwrap().len(), 3);
    assert_blobs_verify(env.store());
}

// S20: the config descriptor says size 0 but the config is not empty: refused naming the
// config, nothing stored for it.
#[test]
fn w34_s20_config_size_zero() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(10 << 10, 398)]),
    );
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    m["config"]["size"] = 0.into();
    put_manifest(
        env.registry.addr(),
        "fx/app",
        "c0",
        &pushed.manifest_media_type,
        &serde_json::to_vec(&m).unwrap(),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:c0"));
    assert!(
        matches!(out.code, vic_result::DigestMismatch | vic_result::Registry),
        "{:?} {}",
        out.code,
        out.message
    );
    assert!(
        out.message.contains(&pushed.config_digest),
        "{}",
        out.message
    );
    assert!(!has_blob(env.store(), &pushed.config_digest));
    no_temp_files(env.store());
}

// S14: 503 without Retry-After on every blob, for ever: fails in bounded time with the
// status in the message, bounded requests.
#[test]
fn w35_s14_blob_503_forever_is_bounded() {
    let env = Env::new();
    env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(10 << 10, 399)]),
    );
    env.proxy
        .respond(Match::AnyBlob, 503, &[], b"unavailable", None);
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_ne!(out.code, vic_result::Ok);
    assert!(out.message.contains("503"), "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let n = env
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert!(n <= 12, "{n} blob requests");
    no_temp_files(env.store());
}

// S20: the config descriptor says one byte less than the config really is: refused
// (docker and containerd check the size of every descriptor they fetch).
#[test]
fn w36_s20_config_size_one_byte_short() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(10 << 10, 400)]),
    );
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    m["config"]["size"] = (pushed.config_bytes.len() as u64 - 1).into();
    put_manifest(
        env.registry.addr(),
        "fx/app",
        "c1",
        &pushed.manifest_media_type,
        &serde_json::to_vec(&m).unwrap(),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:c1"));
    assert_ne!(out.code, vic_result::Ok, "config size mismatch accepted");
    assert!(
        out.message.contains(&pushed.config_digest),
        "{}",
        out.message
    );
    assert!(!has_blob(env.store(), &pushed.config_digest));
}

// S05: the storage host answers 403 to the resume (its signed URL expired): the client asks
// the registry for a fresh Location and completes, resuming rather than restarting.
#[test]
fn w37_s05_storage_403_on_resume_gets_fresh_url() {
    let (env, spec, cdn) = storage_env(410, |n, r, b| {
        if r.header("range").is_some() && n == 1 {
            return Reply::new(403).body("Request has expired");
        }
        let reply = serve_range(r, b);
        if n == 0 && b.len() > 100_000 {
            reply.cut_after(300_000)
        } else {
            reply
        }
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let big = spec.layers[1].digest();
    assert!(env.proxy.count_gets(big) >= 2, "no fresh Location asked");
    assert!(cdn.requests().len() <= 6, "{}", cdn.requests().len());
    assert_blobs_verify(env.store());
}

// S12/S20: an index entry declares size 0 for its child manifest: refused, as containerd
// checks the size of what a descriptor names.
#[test]
fn w38_s12_index_child_size_zero() {
    let env = Env::new();
    let kids = index_with(
        &env,
        "1",
        vec![(child(412), Platform::new("linux", "amd64"))],
        |d| d["manifests"][0]["size"] = 0.into(),
    );
    let out = pull_platform(&env, "1", "linux/amd64");
    assert_ne!(out.code, vic_result::Ok, "child size mismatch accepted");
    assert!(out.message.contains(&kids[0]), "{}", out.message);
    registry_kit::assert_nothing_written(env.store());
}

// S20: a layer declared one byte shorter than its blob: refused naming the layer.
#[test]
fn w39_s20_layer_size_one_byte_short() {
    let env = Env::new();
    let pushed = env.push(
        "fx/app",
        "1",
        &ImageSpec::new(vec![Layer::random(50 << 10, 414)]),
    );
    let mut m: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    let real = m["layers"][0]["size"].as_u64().unwrap();
    m["layers"][0]["size"] = (real - 1).into();
    put_manifest(
        env.registry.addr(),
        "fx/app",
        "s1",
        &pushed.manifest_media_type,
        &serde_json::to_vec(&m).unwrap(),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:s1"));
    assert_ne!(out.code, vic_result::Ok, "layer size mismatch accepted");
    let d = &pushed.layers[0].digest;
    assert!(out.message.contains(d.as_str()), "{}", out.message);
    assert!(!has_blob(env.store(), d));
    no_temp_files(env.store());
}

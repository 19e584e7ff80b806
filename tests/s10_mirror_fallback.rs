//! S10: a mirror that has the manifest but answers the big layer badly (404, empty 200,
//! 503, 401, wrong bytes, a reset mid-blob) must not fail the pull: the layer comes from
//! upstream, and a blob cut short continues there with a Range. Plus a real pull-through
//! cache (docker-registry with `proxy: remoteurl:`) in front of the upstream.

mod common;
mod registry_kit;

use common::capi;
use common::fixtures::{app_image, Env};
use registry_kit::{capture_logs, has_blob, log_lines};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{FaultProxy, PushedImage, Registry, RegistryOptions, TempDir};

/// Upstream registry (behind `up`) and a mirror registry (behind `mirror`) holding the
/// same image.
struct Pair {
    up: Env,
    _mirror_registry: Registry,
    mirror: FaultProxy,
    pushed: PushedImage,
}

impl Pair {
    fn new() -> Pair {
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

    fn l2(&self) -> String {
        self.pushed.layers[3].digest.clone()
    }

    fn options(&self) -> serde_json::Value {
        let mut o = self.up.options("fx/app:1");
        o["docker_config"] = false.into();
        o["registries"] = json!({
            self.up.proxy.addr(): {"mirrors": [self.mirror.url()]}
        });
        o
    }

    /// L2 came from upstream, everything else from the mirror only.
    fn assert_only_l2_from_upstream(&self) {
        assert!(has_blob(self.up.store(), &self.l2()));
        assert!(self.up.proxy.count_gets(&self.l2()) >= 1);
        for l in &self.pushed.layers[..3] {
            assert_eq!(
                self.up.proxy.count_gets(&l.digest),
                0,
                "{} from upstream",
                l.digest
            );
        }
        assert_eq!(self.up.proxy.count_gets(&self.pushed.config_digest), 0);
        let up_manifests = self
            .up
            .proxy
            .requests()
            .iter()
            .filter(|r| r.path.contains("/manifests/"))
            .count();
        assert_eq!(up_manifests, 0, "the mirror resolved the tag");
    }

    /// One warning names the mirror, the blob and why the mirror failed.
    fn warned(&self, why: &str) {
        let mirror = self.mirror.addr();
        let lines = log_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains(mirror) && l.contains(&self.l2()) && l.contains(why)),
            "no warning naming {mirror} and {why:?}: {lines:#?}"
        );
    }
}

fn pull_ok(pair: &Pair) -> serde_json::Value {
    capture_logs();
    let (out, _) = capi::pull(pair.options());
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    out.json.unwrap()
}

#[test]
fn s10a_blob_unknown_on_the_mirror() {
    let pair = Pair::new();
    let body = format!(
        r#"{{"errors":[{{"code":"BLOB_UNKNOWN","message":"blob unknown","detail":"{}"}}]}}"#,
        pair.l2()
    );
    let headers = [("Content-Type", "application/json")];
    pair.mirror.respond(
        Match::blob(&pair.l2()),
        404,
        &headers,
        body.as_bytes(),
        None,
    );
    pull_ok(&pair);
    pair.assert_only_l2_from_upstream();
    pair.warned("BLOB_UNKNOWN");
    // Each query to the mirror says which registry it stands for.
    let ns = format!("ns={}", pair.up.proxy.addr());
    assert!(pair
        .mirror
        .requests()
        .iter()
        .all(|r| r.query.as_deref() == Some(ns.as_str())));
}

#[test]
fn s10b_empty_200_from_the_mirror() {
    let pair = Pair::new();
    pair.mirror.cut(&pair.l2(), 0, CutMode::Fin, None);
    pull_ok(&pair);
    pair.assert_only_l2_from_upstream();
    pair.warned("end of file");
}

#[test]
fn s10c_503_from_the_mirror() {
    let pair = Pair::new();
    pair.mirror
        .respond(Match::blob(&pair.l2()), 503, &[], b"busy", None);
    pull_ok(&pair);
    pair.assert_only_l2_from_upstream();
    pair.warned("503");
}

#[test]
fn s10d_auth_failure_on_the_mirror_is_an_error_naming_it() {
    let pair = Pair::new();
    let action = Action::Respond {
        status: 401,
        headers: vec![("WWW-Authenticate".into(), r#"Basic realm="mirror""#.into())],
        body: Vec::new(),
    };
    pair.mirror.add_rule(Match::blob(&pair.l2()), action, None);
    let (out, _) = capi::pull(pair.options());
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains(pair.mirror.addr()), "{}", out.message);
    assert_eq!(
        pair.up.proxy.count_gets(&pair.l2()),
        0,
        "no silent fallback on auth"
    );
}

#[test]
fn s10e_wrong_bytes_from_the_mirror() {
    let pair = Pair::new();
    pair.mirror.corrupt(&pair.l2(), 1000, None);
    pull_ok(&pair);
    pair.assert_only_l2_from_upstream();
    assert_eq!(pair.up.proxy.count_gets(&pair.l2()), 1);
    pair.warned("digest mismatch");
}

#[test]
fn s10_mirror_dies_mid_blob_and_upstream_continues_with_range() {
    let pair = Pair::new();
    let cut_at = 300_000;
    pair.mirror.cut(&pair.l2(), cut_at, CutMode::Rst, None);
    pull_ok(&pair);
    let up: Vec<_> = pair
        .up
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&pair.l2()))
        .collect();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(
        up[0].range.as_deref(),
        Some(format!("bytes={cut_at}-").as_str())
    );
    assert_eq!(up[0].status, 206);
    let size = pair.pushed.layers[3].size;
    assert_eq!(pair.up.proxy.total_body_bytes(&pair.l2()), size - cut_at);
}

#[test]
fn s10_manifest_missing_on_the_mirror_falls_back_to_upstream() {
    let pair = Pair::new();
    pair.mirror
        .respond(Match::Manifest("1".into()), 404, &[], b"", None);
    pull_ok(&pair);
    let up_manifests = pair
        .up
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(up_manifests, 1);
}

#[test]
fn s10_pull_through_cache_fills_then_serves_and_survives_its_death() {
    let up = Env::new();
    let pushed = up.push("fx/app", "1", &app_image());
    let l2 = pushed.layers[3].digest.clone();
    let dir = TempDir::new("vicpull-cache");
    let cache = Registry::start_with(
        RegistryOptions::new()
            .dir(dir.path())
            .proxy_of(&up.proxy.url()),
    );
    let front = FaultProxy::start(cache.addr());
    let options = |store: &std::path::Path| {
        json!({
            "reference": up.reference("fx/app:1"),
            "store": store,
            "plain_http": true,
            "docker_config": false,
            "registries": {up.proxy.addr(): {"mirrors": [front.url()]}},
        })
    };

    // Cold cache: it fetches from upstream as we pull through it.
    let (out, _) = capi::pull(options(up.store()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(front.count_gets(&l2) >= 1);

    // Warm cache: a second machine's pull does not touch upstream for blobs.
    up.proxy.clear_log();
    let second = TempDir::new("vicpull-store2");
    let (out, _) = capi::pull(options(second.path()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let up_blobs = up
        .proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .count();
    assert_eq!(up_blobs, 0, "{:?}", up.proxy.requests());

    // The cache dies in the middle of L2: upstream continues from the byte reached.
    up.proxy.clear_log();
    let third = TempDir::new("vicpull-store3");
    front.cut(&l2, 200_000, CutMode::Rst, None);
    let (out, _) = capi::pull(options(third.path()));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let resumed: Vec<_> = up
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&l2))
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0].range.as_deref(), Some("bytes=200000-"));
}

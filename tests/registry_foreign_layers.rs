//! Foreign (non-distributable) layers: fetched from the URLs in their descriptor only when
//! `allow_foreign_layers` is set, without the registry's credentials, and with the registry
//! as the fallback; otherwise a clear error that names the option.

mod common;
mod registry_kit;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::capi;
use common::fixtures::Env;
use registry_kit::options;
use serde_json::Value;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::image::push_blob;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{ImageSpec, Layer, Reply, Stub};

const FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

struct Foreign {
    env: Env,
    cdn: Stub,
    layer: Layer,
    cdn_down: Arc<AtomicBool>,
}

/// fx/win:1 whose only layer is foreign, served by a CDN on 127.0.0.2. The registry has the
/// config; it has the layer only when `registry_has_layer`.
fn setup(registry_has_layer: bool) -> Foreign {
    let env = Env::new();
    let layer = Layer::random(40 << 10, 51);
    let spec = ImageSpec::new(vec![layer.clone()]);
    push_blob(env.registry.addr(), "fx/win", &spec.config_bytes());
    if registry_has_layer {
        push_blob(env.registry.addr(), "fx/win", layer.blob());
    }
    let (bytes, down) = (layer.blob().to_vec(), Arc::new(AtomicBool::new(false)));
    let cdn_down = down.clone();
    let cdn = Stub::start("127.0.0.2", move |r| {
        if down.load(Ordering::SeqCst) || r.header("authorization").is_some() {
            Reply::new(503)
        } else {
            Reply::new(200).body(bytes.clone())
        }
    });
    let mut m: Value = serde_json::from_slice(&spec.manifest_bytes()).unwrap();
    m["layers"][0]["mediaType"] = FOREIGN.into();
    m["layers"][0]["urls"] = vec![format!("{}/layers/win.tar.gz", cdn.url())].into();
    let ct = [(
        "Content-Type",
        "application/vnd.docker.distribution.manifest.v2+json",
    )];
    let body = serde_json::to_vec(&m).unwrap();
    env.proxy
        .respond(Match::Manifest("1".into()), 200, &ct, &body, None);
    Foreign {
        env,
        cdn,
        layer,
        cdn_down,
    }
}

#[test]
fn foreign_layer_without_the_option_is_a_clear_error() {
    let f = setup(false);
    let (out, _) = capi::pull(options(&f.env, "fx/win:1"));
    assert_eq!(out.code, vic_result::NotFound, "{}", out.message);
    assert!(
        out.message.contains("allow_foreign_layers"),
        "{}",
        out.message
    );
    assert!(out.message.contains(&f.cdn.url()), "{}", out.message);
    assert!(
        f.cdn.requests().is_empty(),
        "not fetched without the option"
    );
}

#[test]
fn foreign_layer_with_the_option_comes_from_its_url() {
    let f = setup(false);
    let mut o = options(&f.env, "fx/win:1");
    o["allow_foreign_layers"] = true.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(f.cdn.requests().len(), 1);
    assert_eq!(f.env.proxy.count_gets(f.layer.digest()), 0);
    assert_eq!(out.json.unwrap()["layers"][0]["media_type"], FOREIGN);
}

#[test]
fn foreign_layer_url_down_falls_back_to_the_registry() {
    let f = setup(true);
    f.cdn_down.store(true, Ordering::SeqCst);
    let mut o = options(&f.env, "fx/win:1");
    o["allow_foreign_layers"] = true.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(f.cdn.requests().len(), 1);
    assert_eq!(f.env.proxy.count_gets(f.layer.digest()), 1);
}

//! S05: blob GETs answered with a redirect to storage on another host (a CDN on 127.0.0.2)
//! that authenticates by signed query and refuses any Authorization header.

mod common;
mod registry_kit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::capi;
use common::fixtures::{app_image, Env};
use registry_kit::{options, respond, serve_range, unauthorized, TokenServer};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::{PushedImage, Reply, Stub};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    A307,
    B302,
    CSameOrigin,
    DExpires,
}

/// (path, Authorization) of requests, as a front saw them.
type AuthLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Run {
    out: capi::Outcome,
    env: Env,
    cdn: Stub,
    pushed: PushedImage,
    /// (path, Authorization) of every blob GET the registry front saw.
    reg_blobs: AuthLog,
    /// Locations handed out, in order.
    locations: Arc<Mutex<Vec<String>>>,
}

fn run(v: Variant) -> Run {
    let env = Env::new();
    let spec = app_image();
    let pushed = env.push("fx/app", "1", &spec);
    let auth = TokenServer::start(vec![json!({"token":"T","expires_in":300})]);
    let challenge = auth.challenge();

    // Blobs the redirect applies to: L1 (first layer) and L2 (the big random one).
    let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
    for i in [0, 3] {
        let hex = pushed.layers[i]
            .digest
            .trim_start_matches("sha256:")
            .to_string();
        bytes.insert(hex, spec.layers[i].blob().to_vec());
    }
    let bytes = Arc::new(bytes);
    let l2_hex = pushed.layers[3]
        .digest
        .trim_start_matches("sha256:")
        .to_string();

    // The CDN: signed URLs are single-use in variant d once cut.
    let expired: Arc<Mutex<Vec<String>>> = Arc::default();
    let (cdn_bytes, cdn_expired, cut_hex) = (bytes.clone(), expired.clone(), l2_hex.clone());
    let cut_done = Arc::new(AtomicUsize::new(0));
    let cdn = Stub::start("127.0.0.2", move |r| {
        if r.header("authorization").is_some() {
            let xml = "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism \
                       allowed</Message></Error>";
            return Reply::new(400)
                .header("Content-Type", "application/xml")
                .body(xml);
        }
        let q = r.query.clone().unwrap_or_default();
        if !q.starts_with("X-Sig=ab%2Fcd&X-Exp=") || cdn_expired.lock().unwrap().contains(&q) {
            return Reply::new(403).body("<Error><Code>AccessDenied</Code></Error>");
        }
        let hex = r.path.trim_start_matches("/store/");
        let Some(b) = cdn_bytes.get(hex) else {
            return Reply::new(404);
        };
        let reply = serve_range(r, b);
        let first_l2 = hex == cut_hex && cut_done.fetch_add(1, Ordering::SeqCst) == 0;
        if v == Variant::DExpires && first_l2 {
            cdn_expired.lock().unwrap().push(q);
            return reply.cut_after(8192);
        }
        reply
    });

    let reg_blobs: AuthLog = Arc::default();
    let locations: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen, locs, cdn_url) = (reg_blobs.clone(), locations.clone(), cdn.url());
    let nonce = Arc::new(AtomicUsize::new(600));
    let redirected: Vec<String> = bytes.keys().cloned().collect();
    let (store_bytes, expired_reg) = (bytes.clone(), expired.clone());
    env.proxy.hook(move |r| {
        let auth = r.header("authorization").map(str::to_string);
        if let Some(hex) = r.path.strip_prefix("/_storage/") {
            // Same-origin storage (variant c) wants the registry's token too.
            if auth.as_deref() != Some("Bearer T") {
                return Some(unauthorized(std::slice::from_ref(&challenge)));
            }
            let b = &store_bytes[hex];
            return Some(respond(200, &[], b));
        }
        if auth.as_deref() != Some("Bearer T") {
            return Some(unauthorized(std::slice::from_ref(&challenge)));
        }
        let hex = r.blob_digest()?.trim_start_matches("sha256:").to_string();
        seen.lock().unwrap().push((r.path.clone(), auth));
        if !redirected.contains(&hex) {
            return None;
        }
        let location = match v {
            Variant::CSameOrigin => format!("/_storage/{hex}"),
            _ => {
                // In variant d the second answer is a stale URL, already expired.
                let stale = expired_reg.lock().unwrap().first().cloned();
                let n = locs
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains(&hex))
                    .count();
                match stale {
                    Some(q) if v == Variant::DExpires && n == 1 => {
                        format!("{cdn_url}/store/{hex}?{q}")
                    }
                    _ => {
                        let exp = nonce.fetch_add(1, Ordering::SeqCst);
                        format!("{cdn_url}/store/{hex}?X-Sig=ab%2Fcd&X-Exp={exp}")
                    }
                }
            }
        };
        locs.lock().unwrap().push(location.clone());
        let status = if v == Variant::B302 { 302 } else { 307 };
        Some(respond(status, &[("Location", &location)], b""))
    });

    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    Run {
        out,
        env,
        cdn,
        pushed,
        reg_blobs,
        locations,
    }
}

fn assert_cdn_clean(r: &Run) {
    let reqs = r.cdn.requests();
    assert!(!reqs.is_empty(), "the CDN served the redirected blobs");
    for q in &reqs {
        assert!(
            q.header("authorization").is_none(),
            "Authorization leaked: {q:?}"
        );
    }
    // Byte for byte: every query the CDN saw is one the registry handed out.
    let locs = r.locations.lock().unwrap().clone();
    for q in &reqs {
        let raw = format!("{}?{}", q.path, q.query.clone().unwrap_or_default());
        assert!(
            locs.iter().any(|l| l.ends_with(&raw)),
            "{raw} not in {locs:?}"
        );
    }
    for (path, a) in r.reg_blobs.lock().unwrap().iter() {
        assert_eq!(a.as_deref(), Some("Bearer T"), "{path}");
    }
}

#[test]
fn s05a_307_to_other_host_drops_authorization() {
    let r = run(Variant::A307);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    assert_cdn_clean(&r);
    assert_eq!(r.cdn.requests().len(), 2, "L1 and L2 once each");
}

#[test]
fn s05b_302_to_other_host_drops_authorization() {
    let r = run(Variant::B302);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    assert_cdn_clean(&r);
}

#[test]
fn s05c_same_origin_redirect_keeps_authorization() {
    let r = run(Variant::CSameOrigin);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    let storage: Vec<_> = r
        .env
        .proxy
        .requests()
        .into_iter()
        .filter(|q| q.path.starts_with("/_storage/"))
        .collect();
    assert_eq!(storage.len(), 2, "{storage:?}");
    assert!(storage
        .iter()
        .all(|q| q.has_authorization && q.status == 200));
    assert!(r.cdn.requests().is_empty());
}

#[test]
fn s05d_expired_signed_url_goes_back_to_the_registry() {
    let r = run(Variant::DExpires);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    assert_cdn_clean(&r);
    let l2 = &r.pushed.layers[3].digest;
    let reg_l2 = r
        .reg_blobs
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with(l2.as_str()))
        .count();
    // Cut at 8192, then a stale (expired) URL refused with 403, then a fresh one.
    assert_eq!(reg_l2, 3, "at most 3 attempts for L2");
    let cdn = r.cdn.requests();
    let hex = l2.trim_start_matches("sha256:");
    let l2_cdn: Vec<_> = cdn.iter().filter(|q| q.path.ends_with(hex)).collect();
    assert_eq!(l2_cdn.len(), 3, "{l2_cdn:?}");
    let last = l2_cdn.last().unwrap();
    assert_eq!(last.header("range"), Some("bytes=8192-"), "{l2_cdn:?}");
}

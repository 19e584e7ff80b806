//! S04: the bearer token expires in the middle of a pull. The registry rejects T1 for the
//! big layer L2; the client renews once (T2) and carries on, resuming where it was.

mod common;
mod registry_kit;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::capi;
use common::fixtures::{app_image, Env};
use registry_kit::{front, has_blob, options, Gate, TokenServer};
use serde_json::json;
use std::time::Duration;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::{Action, CutMode};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// T1 rejected for L2, T2 accepted.
    A,
    /// The first L2 GET with T1 is accepted and cut after 4096 bytes.
    B,
    /// T2 is rejected for L2 as well.
    C,
}

struct Run {
    out: capi::Outcome,
    auth: TokenServer,
    env: Env,
    l2: String,
    l2_size: u64,
}

fn run(v: Variant) -> Run {
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &app_image());
    let l2 = pushed.layers[3].digest.clone();
    let auth = TokenServer::start(vec![
        json!({"token":"T1","expires_in":60}),
        json!({"token":"T2","expires_in":60}),
        json!({"token":"T3","expires_in":60}),
    ]);
    let challenge = auth.challenge();
    let invalid = format!("{challenge},error=\"invalid_token\"");
    let l2_with_t1 = Arc::new(AtomicUsize::new(0));
    let target = l2.clone();
    if v == Variant::B {
        env.proxy.cut(&l2, 4096, CutMode::Rst, Some(1));
    }
    front(&env.proxy, move |r| {
        let is_l2 = r.blob_digest() == Some(target.as_str());
        match r.header("authorization") {
            Some("Bearer T1") if !is_l2 => Gate::Pass,
            Some("Bearer T1") => {
                let n = l2_with_t1.fetch_add(1, Ordering::SeqCst);
                if v == Variant::B && n == 0 {
                    Gate::Pass
                } else {
                    Gate::Challenge(vec![invalid.clone()])
                }
            }
            Some("Bearer T2") if !(is_l2 && v == Variant::C) => Gate::Pass,
            Some("Bearer T2") => Gate::Challenge(vec![invalid.clone()]),
            _ => Gate::Challenge(vec![challenge.clone()]),
        }
    });
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    Run {
        out,
        auth,
        env,
        l2,
        l2_size: pushed.layers[3].size,
    }
}

#[test]
fn s04a_rejected_token_is_renewed_once() {
    let r = run(Variant::A);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    assert_eq!(r.auth.calls(), 2, "T1, then T2 once");
    assert_eq!(r.env.proxy.count_gets(&r.l2), 2, "one 401, one success");
}

#[test]
fn s04b_resume_after_reset_renews_and_keeps_the_offset() {
    let r = run(Variant::B);
    assert_eq!(r.out.code, vic_result::Ok, "{}", r.out.message);
    assert_eq!(r.auth.calls(), 2);
    let l2_gets: Vec<_> = r
        .env
        .proxy
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with(&r.l2) && q.method == "GET")
        .collect();
    let last = l2_gets.last().unwrap();
    assert_eq!(last.range.as_deref(), Some("bytes=4096-"), "{l2_gets:?}");
    assert_eq!(last.status, 206);
    let wire = r.env.proxy.total_body_bytes(&r.l2);
    assert!(
        wire <= r.l2_size + 4096 + 200,
        "{wire} bytes for L2 of {}",
        r.l2_size
    );
}

#[test]
fn s04c_second_rejection_fails_naming_repo_and_blob() {
    let r = run(Variant::C);
    assert_eq!(r.out.code, vic_result::Auth, "{}", r.out.message);
    assert!(r.out.message.contains("fx/app"), "{}", r.out.message);
    assert!(r.out.message.contains(&r.l2), "{}", r.out.message);
    assert!(r.auth.calls() <= 2, "no renewal loop: {}", r.auth.calls());
    assert!(!has_blob(r.env.store(), &r.l2));
    let refs = common::fixtures::index_json(r.env.store())["manifests"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(refs, 0);
}

#[test]
fn s04d_three_downloads_rejected_together_renew_once() {
    // Every blob with T1 is refused: the three downloads running at once all
    // get their 401 together, and still only one T2 is fetched.
    let env = Env::new();
    let pushed = env.push("fx/app", "1", &app_image());
    let auth = TokenServer::start(vec![
        json!({"token":"T1","expires_in":60}),
        json!({"token":"T2","expires_in":60}),
    ]);
    let challenge = auth.challenge();
    let config = pushed.config_digest.clone();
    // The refusals of T1 come back slowly, so all three downloads have sent theirs first.
    let slow = config.clone();
    env.proxy.hook(move |r| {
        let layer = r.blob_digest().is_some_and(|d| d != slow);
        let t1 = r.header("authorization") == Some("Bearer T1");
        (layer && t1).then_some(Action::Delay(Duration::from_millis(500)))
    });
    let layer_401s = Arc::new(AtomicUsize::new(0));
    let counted = layer_401s.clone();
    front(&env.proxy, move |r| match r.header("authorization") {
        Some("Bearer T1") if r.blob_digest().map_or(true, |d| d == config) => Gate::Pass,
        Some("Bearer T1") => {
            counted.fetch_add(1, Ordering::SeqCst);
            Gate::Challenge(vec![challenge.clone()])
        }
        Some("Bearer T2") => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    });
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        layer_401s.load(Ordering::SeqCst),
        3,
        "downloads refused together"
    );
    assert_eq!(auth.calls(), 2);
}

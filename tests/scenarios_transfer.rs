//! pull-scenarios.md cases about resuming, resets, stalls, integrity and
//! concurrency (S07, S08, S17-S20), against the real registry behind the
//! fault front.

mod common;

use common::capi;
use common::fixtures::{assert_blobs_verify, leftovers, named_images, Env};
use std::time::{Duration, Instant};
use vicpull::ffi::result::vic_result;
use vicpull::progress::Kind;
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{ImageSpec, Layer};

/// fx/app:1 with L1 (~64 KiB of real files) and L2 (incompressible).
fn app(env: &Env, l2_size: usize) -> (Layer, Layer) {
    let l1 = common::fixtures::real_files(&["/usr/share/doc"], 64 << 10);
    let l2 = Layer::random(l2_size, 0x5eed);
    env.push("fx/app", "1", &ImageSpec::new(vec![l1.clone(), l2.clone()]));
    (l1, l2)
}

fn blob_requests(env: &Env, digest: &str) -> Vec<vicpull_testkit::proxy::RequestLog> {
    env.proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(digest))
        .collect()
}

fn stored(env: &Env, digest: &str) -> bool {
    env.store()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

/// S07: resume answered with something other than a 206 at our offset.
fn s07_case(action: Action, label: &str) {
    let env = Env::new();
    let (_, l2) = app(&env, (1 << 20) + 123);
    let size = l2.size();
    env.proxy.cut(l2.digest(), 300_000, CutMode::Rst, Some(1));
    let d = l2.digest().to_string();
    let mut fired = false;
    let once = std::sync::Mutex::new(false);
    env.proxy.hook(move |r| {
        let ranged = r
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("range"));
        let mut done = once.lock().unwrap();
        (r.path.ends_with(&d) && ranged && !*done).then(|| {
            *done = true;
            action.clone()
        })
    });
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{label}: {}", out.message);
    let reqs = blob_requests(&env, l2.digest());
    let wire: u64 = reqs.iter().map(|r| r.body_bytes_sent).sum();
    assert!(wire <= 2 * size, "{label}: {wire} bytes on the wire");
    assert_blobs_verify(env.store());
    // Every request after the refused resume starts from 0 without Range.
    assert!(reqs.last().unwrap().range.is_none(), "{label}: {reqs:?}");
    fired |= reqs.len() >= 3;
    assert!(
        fired,
        "{label}: expected a refused resume and a restart: {reqs:?}"
    );
}

#[test]
fn s07_a_honoured_range_resumes_exactly_the_rest() {
    let env = Env::new();
    let (_, l2) = app(&env, (1 << 20) + 123);
    env.proxy.cut(l2.digest(), 300_000, CutMode::Rst, Some(1));
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let reqs = blob_requests(&env, l2.digest());
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(reqs[1].body_bytes_sent, l2.size() - 300_000);
}

#[test]
fn s07_b_full_200_to_a_range_request_restarts_from_zero() {
    let env = Env::new();
    let (_, l2) = app(&env, (1 << 20) + 123);
    let size = l2.size();
    env.proxy.cut(l2.digest(), 300_000, CutMode::Rst, Some(1));
    env.proxy.ignore_range(Match::blob(l2.digest()), None);
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let wire: u64 = blob_requests(&env, l2.digest())
        .iter()
        .map(|r| r.body_bytes_sent)
        .sum();
    assert!(wire <= 2 * size);
    assert_blobs_verify(env.store());
}

#[test]
fn s07_c_d_e_f_untrustworthy_or_refused_range_restarts_without_range() {
    let size = (1u64 << 20) + 123;
    let whole = format!("bytes 0-{}/{size}", size - 1);
    s07_case(
        Action::Respond {
            status: 206,
            headers: vec![("Content-Range".into(), whole)],
            body: vec![0u8; 16],
        },
        "c: 206 for the wrong span",
    );
    s07_case(
        Action::Respond {
            status: 206,
            headers: vec![],
            body: vec![0u8; 16],
        },
        "d: 206 without Content-Range",
    );
    s07_case(
        Action::Respond {
            status: 416,
            headers: vec![("Content-Range".into(), format!("bytes */{size}"))],
            body: vec![],
        },
        "e: 416",
    );
    s07_case(
        Action::Respond {
            status: 400,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: b"<Error><Code>InvalidArgument</Code></Error>".to_vec(),
        },
        "f: 400 for any Range",
    );
}

#[test]
fn s07_g_a_fresh_download_never_sends_range_zero() {
    let env = Env::new();
    let (_, _) = app(&env, 256 << 10);
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    for r in env.proxy.requests() {
        assert_ne!(r.range.as_deref(), Some("bytes=0-"), "{r:?}");
    }
}

#[test]
fn s08_a_reset_then_early_fin_then_complete() {
    let env = Env::new();
    let size = 4_194_304;
    let (l1, l2) = app(&env, size);
    let d = l2.digest().to_string();
    let n = std::sync::atomic::AtomicU32::new(0);
    env.proxy.hook(move |r| {
        if !r.path.ends_with(&d) || r.method != "GET" {
            return None;
        }
        match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Some(Action::Cut {
                after: 1_000_000,
                mode: CutMode::Rst,
            }),
            1 => Some(Action::Cut {
                after: 1_500_000,
                mode: CutMode::Fin,
            }),
            _ => None,
        }
    });
    let (out, events) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(l1.digest()), 1);
    let ranges: Vec<Option<String>> = blob_requests(&env, l2.digest())
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some("bytes=1000000-".into()),
            Some("bytes=2500000-".into())
        ]
    );
    // Progress for L2 never goes backwards.
    let mut last = 0;
    for e in events
        .iter()
        .filter(|e| e.layer.as_deref() == Some(l2.digest()))
    {
        if e.kind == Kind::Downloading {
            assert!(
                e.current >= last,
                "progress went back from {last} to {}",
                e.current
            );
            last = e.current;
        }
    }
}

#[test]
fn s08_b_reset_on_every_attempt_fails_naming_the_blob_and_keeps_l1() {
    let env = Env::new();
    let (l1, l2) = app(&env, 1 << 20);
    env.proxy.cut(l2.digest(), 0, CutMode::Rst, None);
    let mut opts = env.options("fx/app:1");
    opts["max_attempts"] = 3.into();
    let t0 = Instant::now();
    let (out, events) = capi::pull(opts.clone());
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(out.message.contains(l2.digest()), "{}", out.message);
    let m = out.message.to_lowercase();
    assert!(
        m.contains("reset") || m.contains("eof") || m.contains("closed"),
        "{m}"
    );
    assert_eq!(env.proxy.count_gets(l2.digest()), 3);
    // Backoff grows: 0.5 s then 1 s (each +-25%).
    assert!(
        t0.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        t0.elapsed()
    );
    let retries = events.iter().filter(|e| e.kind == Kind::Retrying).count();
    assert_eq!(retries, 2);
    assert!(stored(&env, l1.digest()), "L1 stays committed");
    assert!(!stored(&env, l2.digest()));
    assert_eq!(named_images(env.store()), 0);

    env.proxy.clear_faults();
    env.proxy.clear_log();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        env.proxy.count_gets(l1.digest()),
        0,
        "L1 is not fetched again"
    );
}

#[test]
fn s08_c_silence_after_100_bytes_is_not_a_hang() {
    let env = Env::new();
    let (_, l2) = app(&env, 1 << 20);
    env.proxy
        .add_rule(Match::blob(l2.digest()), Action::Stall { after: 100 }, None);
    let mut opts = env.options("fx/app:1");
    opts["max_attempts"] = 2.into();
    opts["low_speed_time_secs"] = 1.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(opts);
    // Every connection stalls: 3 stalls make one attempt, 2 attempts.
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(out.message.contains("stalled"), "{}", out.message);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn s17_empty_gzip_layer_repeated_many_times() {
    let env = Env::new();
    let e = Layer::empty_gzip();
    let la = Layer::random(32 << 10, 1);
    let mut layers = vec![la.clone()];
    layers.extend(std::iter::repeat(e.clone()).take(20));
    env.push("fx/legacy", "1", &ImageSpec::new(layers));
    let (out, events) = capi::pull(env.options("fx/legacy:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(e.digest()), 1);
    assert_eq!(out.json.unwrap()["layers"].as_array().unwrap().len(), 21);
    assert!(!events
        .iter()
        .any(|ev| ev.message.to_lowercase().contains("error")));
}

#[test]
fn s18_ii_ten_simultaneous_pulls_of_one_image() {
    let env = Env::new();
    let layers = vec![
        Layer::random(2 << 20, 1),
        Layer::random(2 << 20, 2),
        Layer::random(1 << 20, 3),
    ];
    let pushed = env.push("fx/a", "1", &ImageSpec::new(layers));
    env.proxy.throttle(Match::AnyBlob, 8 << 20, None);
    let single_store = vicpull_testkit::TempDir::new("vicpull-single");
    let mut opts = env.options("fx/a:1");
    opts["store"] = single_store.path().to_str().unwrap().into();
    let t0 = Instant::now();
    assert_eq!(capi::pull(opts).0.code, vic_result::Ok);
    let single = t0.elapsed();
    env.proxy.clear_log();

    let t0 = Instant::now();
    let pulls: Vec<_> = (0..10)
        .map(|_| capi::start(&env.options("fx/a:1")).unwrap())
        .collect();
    for p in &pulls {
        assert_eq!(p.wait(Duration::from_secs(60)).code, vic_result::Ok);
    }
    let ten = t0.elapsed();
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1);
    }
    assert!(
        ten < single.mul_f64(1.5),
        "10 pulls took {ten:?}, one took {single:?}"
    );
}

#[test]
fn s20_c_corrupt_same_size_blob_in_the_store_is_rehashed_and_replaced() {
    let env = Env::new();
    let (_, l2) = app(&env, 1 << 20);
    let path = env
        .store()
        .join("blobs/sha256")
        .join(l2.digest().trim_start_matches("sha256:"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bad = l2.blob().to_vec();
    bad[12_345] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(
        env.proxy.count_gets(l2.digest()),
        1,
        "replaced after one GET"
    );
    assert_eq!(std::fs::read(&path).unwrap(), l2.blob());
    assert_blobs_verify(env.store());
}

#[test]
fn s20_b_flipped_byte_on_every_attempt_names_expected_and_actual() {
    let env = Env::new();
    let (_, l2) = app(&env, 1 << 20);
    env.proxy.corrupt(l2.digest(), 12_345, None);
    let (out, _) = capi::pull(env.options("fx/app:1"));
    assert_eq!(out.code, vic_result::DigestMismatch);
    assert!(out.message.contains(l2.digest()), "{}", out.message);
    assert!(out.message.contains("got sha256:"), "{}", out.message);
    assert_eq!(
        env.proxy.count_gets(l2.digest()),
        2,
        "bounded: one full re-download"
    );
    assert!(!stored(&env, l2.digest()));
    assert!(
        leftovers(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
}

//! The deduplicating transfer manager under concurrency and faults, against
//! a real registry behind the fault proxy.

mod common;

use common::capi::{self, Pull};
use common::fixtures::{assert_blobs_verify, leftovers, named_images, Env};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vicpull::ffi::result::vic_result;
use vicpull::progress::Kind;
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{ImageSpec, Layer};

fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

/// Wait until `p` has reported at least `bytes` of `digest`.
fn wait_bytes(p: &Pull, digest: &str, bytes: u64) {
    let t0 = Instant::now();
    while !p.events().iter().any(|e| {
        e.layer.as_deref() == Some(digest) && e.kind == Kind::Downloading && e.current >= bytes
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{digest} never reached {bytes}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn s18_eight_pulls_sharing_three_base_layers_fetch_each_blob_once() {
    let env = Env::new();
    let base = [
        Layer::random(700 << 10, 101),
        Layer::random(500 << 10, 102),
        Layer::random(300 << 10, 103),
    ];
    let mut uniques = Vec::new();
    for i in 0..8u64 {
        let own = Layer::random(100 << 10, 200 + i);
        uniques.push(own.digest().to_string());
        let spec = ImageSpec::new(vec![base[0].clone(), base[1].clone(), base[2].clone(), own]);
        env.push(&format!("fx/app{i}"), "1", &spec);
    }
    // Slow the shared layers so all eight pulls overlap on them.
    env.proxy.throttle(Match::AnyBlob, 4 << 20, None);
    let pulls: Vec<Pull> = (0..8)
        .map(|i| capi::start(&env.options(&format!("fx/app{i}:1"))).unwrap())
        .collect();
    for p in &pulls {
        let out = p.wait(Duration::from_secs(60));
        assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    }
    for d in base.iter().map(|l| l.digest().to_string()).chain(uniques) {
        assert_eq!(env.proxy.count_gets(&d), 1, "GETs of {d}");
    }
    assert_blobs_verify(env.store());
    assert_eq!(named_images(env.store()), 8);
}

#[test]
fn s19_cancel_one_pull_while_another_shares_the_layer() {
    let env = Env::new();
    let s1 = Layer::random(6 << 20, 1);
    let (a2, b2) = (Layer::random(64 << 10, 2), Layer::random(64 << 10, 3));
    env.push("fx/a", "1", &ImageSpec::new(vec![s1.clone(), a2]));
    env.push("fx/b", "1", &ImageSpec::new(vec![s1.clone(), b2]));
    env.proxy.throttle(Match::blob(s1.digest()), 2 << 20, None);

    let a = capi::start(&env.options("fx/a:1")).unwrap();
    wait_bytes(&a, s1.digest(), 1 << 20);
    let b = capi::start(&env.options("fx/b:1")).unwrap();
    wait_bytes(&b, s1.digest(), 1);
    // b attached to the running transfer: its first byte count is not 0.
    let first_b = b
        .events()
        .into_iter()
        .find(|e| e.layer.as_deref() == Some(s1.digest()) && e.kind == Kind::Downloading)
        .unwrap();
    assert!(
        first_b.current >= 1 << 20,
        "b started from {} instead of joining",
        first_b.current
    );

    let t0 = Instant::now();
    a.cancel();
    let out = a.wait(Duration::from_secs(5));
    assert_eq!(out.code, vic_result::Cancelled);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "cancel took {:?}",
        t0.elapsed()
    );
    let n_a = a.events().len();
    let out = b.wait(Duration::from_secs(30));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(a.events().len(), n_a, "no callback of a after its on_done");
    let log: Vec<_> = env
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(s1.digest()))
        .collect();
    assert_eq!(log.len(), 1, "S1 fetched once, never restarted: {log:?}");
    assert!(log[0].range.is_none());
    let acct = out.json.unwrap();
    assert_eq!(acct["bytes_shared"], s1.size(), "b reports S1 as shared");
}

#[test]
fn s19_cancel_both_then_pull_again_resumes_without_waiting_on_a_ghost() {
    let env = Env::new();
    let s1 = Layer::random(6 << 20, 21);
    let spec_a = ImageSpec::new(vec![s1.clone(), Layer::random(32 << 10, 22)]);
    env.push("fx/a", "1", &spec_a);
    env.push(
        "fx/b",
        "1",
        &ImageSpec::new(vec![s1.clone(), Layer::random(32 << 10, 23)]),
    );
    let slow = env.proxy.throttle(Match::blob(s1.digest()), 1 << 20, None);
    let a = capi::start(&env.options("fx/a:1")).unwrap();
    let b = capi::start(&env.options("fx/b:1")).unwrap();
    wait_bytes(&a, s1.digest(), 3 << 20);
    a.cancel();
    b.cancel();
    assert_eq!(a.wait(Duration::from_secs(5)).code, vic_result::Cancelled);
    assert_eq!(b.wait(Duration::from_secs(5)).code, vic_result::Cancelled);
    drop((a, b));
    env.proxy.remove_rule(slow);

    let t0 = Instant::now();
    let (out, events) = capi::pull(env.options("fx/a:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let started = events
        .iter()
        .position(|e| e.kind == Kind::Downloading)
        .unwrap();
    assert!(started > 0 && t0.elapsed() < Duration::from_secs(10));
    let ranged: Vec<_> = env
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(s1.digest()) && r.range.is_some())
        .collect();
    assert_eq!(
        ranged.len(),
        1,
        "the new pull resumes S1 from the kept partial"
    );
    let json = out.json.unwrap();
    assert!(json["bytes_resumed"].as_u64().unwrap() >= 3 << 20, "{json}");
    assert_blobs_verify(env.store());
}

#[test]
fn cancel_at_60_percent_then_pull_again_downloads_only_the_rest() {
    let env = Env::new();
    let big = Layer::random(8 << 20, 31);
    env.push("fx/big", "1", &ImageSpec::new(vec![big.clone()]));
    let slow = env.proxy.throttle(Match::blob(big.digest()), 4 << 20, None);
    let p = capi::start(&env.options("fx/big:1")).unwrap();
    let sixty = big.size() * 6 / 10;
    wait_bytes(&p, big.digest(), sixty);
    p.cancel();
    assert_eq!(p.wait(Duration::from_secs(5)).code, vic_result::Cancelled);
    drop(p);
    env.proxy.remove_rule(slow);
    let first = env.proxy.total_body_bytes(big.digest());
    env.proxy.clear_log();

    let (out, _) = capi::pull(env.options("fx/big:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let second = env.proxy.total_body_bytes(big.digest());
    let req = &env
        .proxy
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with(big.digest()))
        .unwrap();
    let offset: u64 = req
        .range
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(
        offset >= sixty,
        "resumed at {offset}, before the 60% mark {sixty}"
    );
    assert_eq!(offset + second, big.size(), "exactly the rest was fetched");
    assert!(
        second <= big.size() * 45 / 100,
        "second pull fetched {second} bytes"
    );
    assert!(first + second < big.size() * 12 / 10);
    assert_blobs_verify(env.store());
    assert!(
        leftovers(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
}

#[test]
fn s08_connection_reset_at_50_random_offsets_still_converges() {
    let env = Env::new();
    let big = Layer::random(4 << 20, 41);
    env.push("fx/big", "1", &ImageSpec::new(vec![big.clone()]));
    let (digest, size) = (big.digest().to_string(), big.size());
    let cuts = Arc::new(AtomicU64::new(0));
    let seed = Arc::new(AtomicU64::new(0x9e3779b97f4a7c15));
    let c = cuts.clone();
    env.proxy.hook(move |r| {
        if r.method != "GET" || !r.path.ends_with(&digest) || c.load(Ordering::SeqCst) >= 50 {
            return None;
        }
        c.fetch_add(1, Ordering::SeqCst);
        let mut x = seed.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, Ordering::SeqCst);
        Some(Action::Cut {
            after: 1 + x % (size / 60),
            mode: CutMode::Rst,
        })
    });
    let mut opts = env.options("fx/big:1");
    opts["max_attempts"] = 3.into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(cuts.load(Ordering::SeqCst), 50);
    let sent = env.proxy.total_body_bytes(big.digest());
    assert!(
        sent < size * 12 / 10,
        "sent {sent} for a {size}-byte blob: resume failed"
    );
    assert_eq!(env.proxy.count_gets(big.digest()), 51);
    assert_blobs_verify(env.store());
}

#[test]
fn s07_reset_with_a_proxy_that_ignores_range_restarts_and_succeeds() {
    let env = Env::new();
    let big = Layer::random(1 << 20, 51);
    env.push("fx/big", "1", &ImageSpec::new(vec![big.clone()]));
    env.proxy.cut(big.digest(), 300_000, CutMode::Rst, Some(1));
    env.proxy.ignore_range(Match::blob(big.digest()), None);
    let (out, _) = capi::pull(env.options("fx/big:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let gets = env.proxy.count_gets(big.digest());
    assert_eq!(gets, 2);
    assert!(env.proxy.total_body_bytes(big.digest()) <= 2 * big.size());
    assert_blobs_verify(env.store());
}

#[test]
fn s14_429_with_retry_after_waits_then_succeeds() {
    let env = Env::new();
    let l = Layer::random(64 << 10, 61);
    env.push("fx/rl", "1", &ImageSpec::new(vec![l.clone()]));
    let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;
    env.proxy.respond(
        Match::blob(l.digest()),
        429,
        &[("Retry-After", "1")],
        body,
        Some(1),
    );
    let t0 = Instant::now();
    let (out, events) = capi::pull(env.options("fx/rl:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(env.proxy.count_gets(l.digest()), 2, "one retry");
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let retry = events
        .iter()
        .find(|e| e.kind == Kind::Retrying)
        .expect("a Retrying event");
    assert!(
        retry.message.starts_with("Retrying in 1 second"),
        "{}",
        retry.message
    );
    assert_eq!(out.json.unwrap()["retries"]["rate_limited"], 1);
}

#[test]
fn stalled_connection_is_replaced_and_the_pull_completes() {
    let env = Env::new();
    let big = Layer::random(2 << 20, 71);
    env.push("fx/stall", "1", &ImageSpec::new(vec![big.clone()]));
    let thirty = big.size() * 3 / 10;
    env.proxy.add_rule(
        Match::blob(big.digest()),
        Action::Stall { after: thirty },
        Some(1),
    );
    let mut opts = env.options("fx/stall:1");
    opts["low_speed_limit"] = 1000.into();
    opts["low_speed_time_secs"] = 1.into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    let reqs: Vec<_> = env
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(big.digest()))
        .collect();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={thirty}-").as_str())
    );
    assert_eq!(out.json.unwrap()["retries"]["stall"], 1);
}

#[test]
fn one_layer_pull_is_not_starved_by_a_forty_layer_pull() {
    let env = Env::new();
    let many: Vec<Layer> = (0..40).map(|i| Layer::random(40 << 10, 1000 + i)).collect();
    env.push("fx/many", "1", &ImageSpec::new(many));
    let one = Layer::random(40 << 10, 2000);
    env.push("fx/one", "1", &ImageSpec::new(vec![one.clone()]));
    // About 0.2 s per layer: the 40-layer pull needs ~3 s at 3 slots.
    env.proxy.throttle(Match::AnyBlob, 200 << 10, None);
    let mut opts = env.options("fx/many:1");
    opts["max_concurrent_downloads"] = 3.into();
    let big = capi::start(&opts).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let small = capi::start(&env.options("fx/one:1")).unwrap();
    let t0 = Instant::now();
    let out = small.wait(Duration::from_secs(30));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let small_took = t0.elapsed();
    assert!(
        big.poll(0).state == vicpull::ffi::pull::vic_pull_state::Pending,
        "the 40-layer pull should still be running"
    );
    assert!(
        small_took < Duration::from_secs(1),
        "1-layer pull waited {small_took:?}"
    );
    assert_eq!(big.wait(Duration::from_secs(60)).code, vic_result::Ok);
}

#[test]
fn a_later_pull_with_a_higher_limit_widens_the_pool_but_not_the_first_pull() {
    let env = Env::new();
    let slow: Vec<Layer> = (0..6).map(|i| Layer::random(100 << 10, 3000 + i)).collect();
    env.push("fx/slow", "1", &ImageSpec::new(slow));
    let wide: Vec<Layer> = (0..4).map(|i| Layer::random(100 << 10, 3100 + i)).collect();
    env.push("fx/wide", "1", &ImageSpec::new(wide));
    // About 0.5 s per layer and connection.
    env.proxy.throttle(Match::AnyBlob, 200 << 10, None);
    let mut opts = env.options("fx/slow:1");
    opts["max_concurrent_downloads"] = 1.into();
    let t_slow = Instant::now();
    let slow = capi::start(&opts).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let mut opts = env.options("fx/wide:1");
    opts["max_concurrent_downloads"] = 4.into();
    let t_wide = Instant::now();
    let out = capi::start(&opts).unwrap().wait(Duration::from_secs(30));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let wide_took = t_wide.elapsed();
    // Held to the first pull's single slot it would need ~4 s.
    assert!(
        wide_took < Duration::from_millis(1600),
        "the limit-4 pull took {wide_took:?}"
    );
    assert!(slow.poll(0).state == vicpull::ffi::pull::vic_pull_state::Pending);
    assert_eq!(slow.wait(Duration::from_secs(30)).code, vic_result::Ok);
    let slow_took = t_slow.elapsed();
    // Six layers one at a time: the wider pool did not widen this pull.
    assert!(
        slow_took > Duration::from_millis(2700),
        "the limit-1 pull took {slow_took:?}"
    );
}

#[test]
fn connections_are_kept_alive_within_a_pull_and_across_pulls() {
    let env = Env::new();
    let layers: Vec<Layer> = (0..12).map(|i| Layer::random(20 << 10, 3200 + i)).collect();
    env.push("fx/many", "1", &ImageSpec::new(layers));
    let others: Vec<Layer> = (0..6).map(|i| Layer::random(20 << 10, 3300 + i)).collect();
    env.push("fx/more", "1", &ImageSpec::new(others));
    let mut opts = env.options("fx/many:1");
    opts["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let (requests, first) = (env.proxy.requests().len(), env.proxy.connections());
    assert!(requests >= 14, "manifest, config, 12 layers: {requests}");
    // Three downloads at a time need three connections, plus one spare at most.
    assert!(first <= 4, "{first} connections for {requests} requests");

    let mut opts = env.options("fx/more:1");
    opts["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(opts);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let second = env.proxy.connections() - first;
    assert!(second <= 1, "the next pull opened {second} new connections");
}

#[test]
fn commit_hook_sees_layers_in_order_and_can_refuse() {
    let env = Env::new();
    let layers = vec![
        Layer::random(200 << 10, 81),
        Layer::random(20 << 10, 82),
        Layer::random(100 << 10, 83),
        Layer::random(20 << 10, 82),
    ];
    let pushed = env.push("fx/hook", "1", &ImageSpec::new(layers));
    // The smaller child finishes first; commits must still go in order.
    env.proxy
        .throttle(Match::blob(&pushed.layers[0].digest), 1 << 20, None);
    let (out, commits) = capi::pull_with_hook(env.options("fx/hook:1"), None);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let order: Vec<&str> = commits.iter().map(|c| c.0.as_str()).collect();
    let want: Vec<&str> = pushed.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(order, want, "parent before child, repeats included");
    for (c, l) in commits.iter().zip(&pushed.layers) {
        assert_eq!(c.1, l.diff_id, "the hook gets the verified diffID");
        assert!(std::path::Path::new(&c.2).ends_with(hex(&l.digest)));
    }

    let env = Env::new();
    env.push(
        "fx/hook",
        "1",
        &ImageSpec::new(vec![
            Layer::random(10 << 10, 84),
            Layer::random(10 << 10, 85),
        ]),
    );
    let (out, commits) = capi::pull_with_hook(env.options("fx/hook:1"), Some(1));
    assert_eq!(out.code, vic_result::HostRejected);
    assert!(out.message.contains("disk image full"), "{}", out.message);
    assert_eq!(commits.len(), 2, "the refused layer was offered");
    assert_eq!(named_images(env.store()), 0);
}

#[test]
fn purge_removes_idle_partials_on_demand() {
    use vicpull::ffi::store::vic_store_purge_partials;
    let env = Env::new();
    let big = Layer::random(4 << 20, 91);
    env.push("fx/purge", "1", &ImageSpec::new(vec![big.clone()]));
    env.proxy.throttle(Match::blob(big.digest()), 2 << 20, None);
    let p = capi::start(&env.options("fx/purge:1")).unwrap();
    wait_bytes(&p, big.digest(), 1 << 20);
    p.cancel();
    assert_eq!(p.wait(Duration::from_secs(5)).code, vic_result::Cancelled);
    assert_eq!(leftovers(env.store()).len(), 1, "the partial is kept");

    let store = std::ffi::CString::new(env.store().to_str().unwrap()).unwrap();
    let (mut removed, mut bytes) = (0u64, 0u64);
    // SAFETY: valid string and out pointers.
    let rc = unsafe { vic_store_purge_partials(store.as_ptr(), 0, 0, &mut removed, &mut bytes) };
    assert_eq!(rc, vic_result::Ok);
    assert_eq!(removed, 1);
    assert!(bytes >= 1 << 20, "{bytes}");
    assert!(
        leftovers(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
    // SAFETY: NULL store is refused.
    let rc = unsafe {
        vic_store_purge_partials(
            std::ptr::null(),
            0,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, vic_result::InvalidArgument);
    // A path that holds no store has nothing to purge, and nothing is
    // created there; an empty path is refused.
    let nowhere = env.store().join("not-a-store");
    let c = std::ffi::CString::new(nowhere.to_str().unwrap()).unwrap();
    // SAFETY: valid strings; out pointers valid.
    let rc = unsafe { vic_store_purge_partials(c.as_ptr(), 0, 0, &mut removed, &mut bytes) };
    assert_eq!((rc, removed, bytes), (vic_result::Ok, 0, 0));
    assert!(!nowhere.exists());
    // SAFETY: as above.
    let rc = unsafe { vic_store_purge_partials(c"".as_ptr(), 0, 0, &mut removed, &mut bytes) };
    assert_eq!(rc, vic_result::InvalidArgument);
}

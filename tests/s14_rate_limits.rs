//! S14: 429 with and without Retry-After (seconds, HTTP-date, junk, too long), from the
//! registry and from the token server; one shared pause per host; RateLimit-Remaining.

mod common;
mod registry_kit;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::capi;
use common::fixtures::{app_image, Env};
use registry_kit::{bearer_front, options, TokenServer};
use serde_json::json;
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{Format, ImageSpec, Layer, Reply};

const SLOW_DOWN: &[u8] = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;

/// Arrival times of every request, by path.
type Times = Arc<Mutex<Vec<(String, Instant)>>>;

fn clock(env: &Env) -> Times {
    let times: Times = Arc::default();
    let t = times.clone();
    env.proxy.hook(move |r| {
        t.lock().unwrap().push((r.path.clone(), Instant::now()));
        None
    });
    times
}

fn arrivals(times: &Times, suffix: &str) -> Vec<Instant> {
    let all = times.lock().unwrap();
    all.iter()
        .filter(|(p, _)| p.ends_with(suffix))
        .map(|(_, t)| *t)
        .collect()
}

fn small_image(seed: u64) -> ImageSpec {
    ImageSpec::new(vec![Layer::random(20 << 10, seed)]).format(Format::Oci)
}

#[test]
fn s14a_retry_after_seconds_is_honoured() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &app_image());
    let l1 = p.layers[0].digest.clone();
    let times = clock(&env);
    let headers = [("Retry-After", "2"), ("Content-Type", "application/json")];
    env.proxy
        .respond(Match::blob(&l1), 429, &headers, SLOW_DOWN, Some(2));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let t = arrivals(&times, &l1);
    assert_eq!(t.len(), 3, "two 429s, then the blob");
    for w in t.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(1950), "retried after {gap:?}");
    }
}

/// An IMF-fixdate `secs` from now.
fn http_date_in(secs: u64) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    let (days, rem) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, restated).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    format!(
        "{wd}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        months[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn s14b_retry_after_http_date_on_the_manifest() {
    let env = Env::new();
    env.push("fx/app", "1", &small_image(1));
    let times = clock(&env);
    let date = http_date_in(3);
    let headers = [("Retry-After", date.as_str())];
    env.proxy.respond(
        Match::Manifest("1".into()),
        429,
        &headers,
        SLOW_DOWN,
        Some(1),
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let t = arrivals(&times, "/manifests/1");
    assert_eq!(t.len(), 2);
    let gap = t[1] - t[0];
    // The date has one-second resolution: the wait is 2 to 3 s.
    assert!(
        gap >= Duration::from_millis(1900),
        "waited {gap:?} for {date}"
    );
    assert!(
        gap <= Duration::from_millis(3600),
        "waited {gap:?} for {date}"
    );
}

fn without_usable_retry_after(retry_after: Option<&str>) {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_image(2));
    let l = p.layers[0].digest.clone();
    let times = clock(&env);
    let headers: Vec<(&str, &str)> = retry_after
        .map(|v| ("Retry-After", v))
        .into_iter()
        .collect();
    env.proxy
        .respond(Match::blob(&l), 429, &headers, SLOW_DOWN, Some(2));
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let t = arrivals(&times, &l);
    assert_eq!(t.len(), 3, "within the attempt limit");
    let (g1, g2) = (t[1] - t[0], t[2] - t[1]);
    assert!(g1 >= Duration::from_millis(700), "first backoff {g1:?}");
    assert!(g2 > g1, "backoff grows: {g1:?} then {g2:?}");
}

#[test]
fn s14c_no_retry_after_backs_off_and_grows() {
    without_usable_retry_after(None);
}

#[test]
fn s14e_unreadable_retry_after_is_like_none() {
    without_usable_retry_after(Some("soon"));
}

#[test]
fn s14d_retry_after_beyond_the_cap_fails_fast_with_the_wait() {
    let env = Env::new();
    env.push("fx/app", "1", &small_image(3));
    env.proxy.respond(
        Match::Manifest("1".into()),
        429,
        &[("Retry-After", "3600")],
        SLOW_DOWN,
        None,
    );
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(out.code, vic_result::RateLimited, "{}", out.message);
    assert!(
        out.message.contains("3600"),
        "the wait is named: {}",
        out.message
    );
    assert!(
        out.message.contains("max_retry_wait_secs"),
        "{}",
        out.message
    );
}

#[test]
fn s14d_cancel_during_a_rate_limit_wait_is_prompt() {
    let env = Env::new();
    env.push("fx/app", "1", &small_image(4));
    let rule = env.proxy.respond(
        Match::Manifest("1".into()),
        429,
        &[("Retry-After", "30")],
        SLOW_DOWN,
        None,
    );
    let p = capi::start(&options(&env, "fx/app:1")).unwrap();
    let t0 = Instant::now();
    while env.proxy.fired(rule) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let t1 = Instant::now();
    p.cancel();
    let out = p.wait(Duration::from_secs(5));
    assert_eq!(out.code, vic_result::Cancelled, "{}", out.message);
    assert!(
        t1.elapsed() < Duration::from_millis(250),
        "{:?}",
        t1.elapsed()
    );
}

#[test]
fn s14f_token_endpoint_429_is_waited_out() {
    let env = Env::new();
    env.push("fx/app", "1", &small_image(5));
    let auth = TokenServer::start_with(|n, _| {
        if n == 0 {
            Reply::new(429).header("Retry-After", "1").body(SLOW_DOWN)
        } else {
            Reply::json(200, &json!({"token":"T"}))
        }
    });
    bearer_front(&env.proxy, &["T"], auth.challenge());
    let t0 = Instant::now();
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(auth.stub.requests().len(), 2, "one 429, then the token");
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was kept"
    );
}

#[test]
fn s14_a_429_pauses_every_transfer_to_that_host() {
    let env = Env::new();
    let spec = ImageSpec::new((10..16).map(|seed| Layer::random(8 << 10, seed)).collect());
    let config = env.push("fx/app", "1", &spec).config_digest;
    let times = clock(&env);
    // The first layer GET, whichever it is, gets the 429.
    let limited: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mark = limited.clone();
    env.proxy.hook(move |r| {
        let mut m = mark.lock().unwrap();
        if r.blob_digest().map_or(true, |d| d == config) || m.is_some() {
            return None;
        }
        *m = Some(Instant::now());
        Some(vicpull_testkit::proxy::Action::Respond {
            status: 429,
            headers: vec![("Retry-After".into(), "2".into())],
            body: SLOW_DOWN.to_vec(),
        })
    });
    let mut o = options(&env, "fx/app:1");
    o["max_concurrent_downloads"] = 3.into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let t0 = limited.lock().unwrap().expect("a 429 was sent");
    let blob_gets: Vec<Instant> = times
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.contains("/blobs/"))
        .map(|(_, t)| *t)
        .collect();
    // Requests already under way may land; none starts during the pause.
    let after: Vec<Duration> = blob_gets
        .iter()
        .filter(|t| **t > t0 + Duration::from_millis(50))
        .map(|t| *t - t0)
        .collect();
    assert!(
        after.len() >= 4,
        "the retry and the queued layers: {after:?}"
    );
    for gap in &after {
        assert!(
            *gap >= Duration::from_millis(1900),
            "a request {gap:?} after the 429"
        );
    }
}

#[test]
fn rate_limit_remaining_is_reported() {
    let env = Env::new();
    let p = env.push("fx/app", "1", &small_image(6));
    env.proxy.respond(
        Match::Manifest("1".into()),
        200,
        &[
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ("RateLimit-Limit", "100;w=21600"),
            ("RateLimit-Remaining", "76;w=21600"),
        ],
        &p.manifest_bytes,
        None,
    );
    let (out, _) = capi::pull(options(&env, "fx/app:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(out.json.unwrap()["rate_limit_remaining"], "76;w=21600");
}

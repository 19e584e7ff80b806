//! Two processes sharing one store: each layer is fetched once, and a
//! process killed mid-blob leaves nothing that blocks or corrupts the next.

mod common;

use common::capi;
use common::fixtures::{assert_blobs_verify, leftovers, Env};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{ImageSpec, Layer};

/// The `vicpull-pull` binary, which cargo builds for integration tests.
fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vicpull-pull"))
}

fn spawn(opts: &serde_json::Value) -> Child {
    Command::new(example())
        .arg(opts.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn s18_two_processes_into_one_store_fetch_each_layer_once() {
    let env = Env::new();
    let layers = vec![
        Layer::random(3 << 20, 1),
        Layer::random(2 << 20, 2),
        Layer::random(512 << 10, 3),
    ];
    let pushed = env.push("fx/two", "1", &ImageSpec::new(layers));
    env.proxy.throttle(Match::AnyBlob, 4 << 20, None);
    let opts = env.options("fx/two:1");
    let a = spawn(&opts);
    std::thread::sleep(Duration::from_millis(100));
    let b = spawn(&opts);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {err}");
    }
    for l in &pushed.layers {
        assert_eq!(env.proxy.count_gets(&l.digest), 1, "GETs of {}", l.digest);
    }
    assert_blobs_verify(env.store());
    assert!(
        leftovers(env.store()).is_empty(),
        "no lock or temp files: {:?}",
        leftovers(env.store())
    );
}

#[test]
fn kill_9_mid_blob_then_pull_again_resumes_and_verifies() {
    let env = Env::new();
    let big = Layer::random(6 << 20, 9);
    env.push("fx/kill", "1", &ImageSpec::new(vec![big.clone()]));
    let slow = env.proxy.throttle(Match::blob(big.digest()), 2 << 20, None);
    let mut child = spawn(&env.options("fx/kill:1"));
    let partial = env.store().join(".vicpull/ingest").join(format!(
        "{}.partial",
        big.digest().trim_start_matches("sha256:")
    ));
    let t0 = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "child never got 2 MiB in"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    env.proxy.remove_rule(slow);
    env.proxy.clear_log();

    let (out, _) = capi::pull(env.options("fx/kill:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let req = env
        .proxy
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with(big.digest()))
        .unwrap();
    assert!(req.range.is_some(), "the kept partial was resumed");
    assert_blobs_verify(env.store());
    assert!(
        leftovers(env.store()).is_empty(),
        "{:?}",
        leftovers(env.store())
    );
}

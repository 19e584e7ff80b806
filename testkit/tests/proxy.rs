//! The fault proxy in front of a real registry, checked with reqwest (a hyper client with a
//! keep-alive pool, like the library's).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use vicpull_testkit::proxy::{Action, CutMode, Match};
use vicpull_testkit::{push_image, FaultProxy, ImageSpec, Layer, PushedImage, Registry};

const BLOB: usize = 256 * 1024;

struct Fixture {
    _reg: Registry,
    proxy: FaultProxy,
    layer: Layer,
    image: PushedImage,
    client: Client,
}

fn fixture() -> Fixture {
    let reg = Registry::start();
    let layer = Layer::random(BLOB, 42);
    let image = push_image(
        reg.addr(),
        "kit/proxy",
        "v1",
        &ImageSpec::new(vec![layer.clone()]),
    );
    let proxy = FaultProxy::start(reg.addr());
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Fixture {
        _reg: reg,
        proxy,
        layer,
        image,
        client,
    }
}

impl Fixture {
    fn blob_url(&self) -> String {
        format!(
            "{}/v2/kit/proxy/blobs/{}",
            self.proxy.url(),
            self.layer.digest()
        )
    }

    fn get_blob(&self) -> Vec<u8> {
        let resp = self.client.get(self.blob_url()).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.bytes().unwrap().to_vec()
    }

    /// Reads a blob GET until the body ends or fails; returns the bytes that arrived.
    fn get_blob_partial(&self) -> (Vec<u8>, bool) {
        let mut resp = self.client.get(self.blob_url()).send().unwrap();
        let mut body = Vec::new();
        let complete = resp.read_to_end(&mut body).is_ok();
        (body, complete)
    }
}

#[test]
fn corrupt_flips_exactly_one_byte_once() {
    let f = fixture();
    let rule = f.proxy.corrupt(f.layer.digest(), 1000, Some(1));

    let bad = f.get_blob();
    assert_eq!(bad.len(), f.layer.blob().len());
    let diffs: Vec<usize> = (0..bad.len())
        .filter(|&i| bad[i] != f.layer.blob()[i])
        .collect();
    assert_eq!(diffs, vec![1000]);
    assert_eq!(f.proxy.count_gets(f.layer.digest()), 1);
    assert_eq!(f.proxy.fired(rule), 1);

    // The rule was for one request only; the same (kept-alive) client now gets good bytes.
    assert_eq!(f.get_blob(), f.layer.blob());
    assert_eq!(f.proxy.count_gets(f.layer.digest()), 2);
    let total = f.layer.size() * 2;
    assert_eq!(f.proxy.total_body_bytes(f.layer.digest()), total);
}

#[test]
fn corrupt_offsets_count_from_the_blob_start_in_range_answers() {
    let f = fixture();
    f.proxy.corrupt(f.layer.digest(), 5000, None);
    let resp = f
        .client
        .get(f.blob_url())
        .header("Range", "bytes=4096-8191")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    let part = resp.bytes().unwrap();
    let want = &f.layer.blob()[4096..8192];
    let diffs: Vec<usize> = (0..part.len()).filter(|&i| part[i] != want[i]).collect();
    assert_eq!(diffs, vec![5000 - 4096]);
    let log = f.proxy.requests();
    assert_eq!(
        log.last().unwrap().range.as_deref(),
        Some("bytes=4096-8191")
    );
    assert_eq!(log.last().unwrap().status, 206);
}

#[test]
fn throttle_limits_the_rate() {
    let f = fixture();
    // 256 KiB at 1 MiB/s: about 250 ms.
    f.proxy.throttle(Match::AnyBlob, 1 << 20, None);
    let start = Instant::now();
    assert_eq!(f.get_blob(), f.layer.blob());
    let secs = start.elapsed().as_secs_f64();
    let rate = f.layer.size() as f64 / secs;
    // The throttle guarantees the upper bound, give or take the first piece (1/20 s of
    // data goes out at once, so a short body can beat the rate by one piece); the lower
    // one is loose because a loaded 2-core CI machine can lag behind the schedule.
    assert!(
        rate <= 1.3 * (1 << 20) as f64,
        "rate {rate:.0} B/s in {secs:.3}s"
    );
    assert!(
        rate >= 0.3 * (1 << 20) as f64,
        "rate {rate:.0} B/s in {secs:.3}s"
    );
}

#[test]
fn cut_with_rst_or_fin_gives_a_short_body() {
    let f = fixture();
    for mode in [CutMode::Rst, CutMode::Fin] {
        f.proxy.cut(f.layer.digest(), 10_000, mode, Some(1));
        let (body, complete) = f.get_blob_partial();
        assert!(!complete, "{mode:?}: the client should see an error");
        assert_eq!(body.len(), 10_000, "{mode:?}");
        assert_eq!(&body[..], &f.layer.blob()[..10_000]);
        // Only the first GET is cut.
        assert_eq!(f.get_blob(), f.layer.blob());
    }
    assert_eq!(f.proxy.count_gets(f.layer.digest()), 4);
}

#[test]
fn status_override_answers_429_then_forwards() {
    let f = fixture();
    let manifest = Match::Manifest("v1".into());
    f.proxy.respond(
        manifest,
        429,
        &[("Retry-After", "1")],
        b"slow down",
        Some(1),
    );
    let url = format!("{}/v2/kit/proxy/manifests/v1", f.proxy.url());
    let accept = f.image.manifest_media_type.as_str();

    let first = f.client.get(&url).header("Accept", accept).send().unwrap();
    assert_eq!(first.status().as_u16(), 429);
    assert_eq!(first.headers()["retry-after"], "1");
    assert_eq!(first.bytes().unwrap().as_ref(), b"slow down");

    let second = f.client.get(&url).header("Accept", accept).send().unwrap();
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(
        second.bytes().unwrap().as_ref(),
        f.image.manifest_bytes.as_slice()
    );
    let statuses: Vec<u16> = f.proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 200]);
}

#[test]
fn ignore_range_gives_the_whole_body() {
    let f = fixture();
    f.proxy.ignore_range(Match::AnyBlob, None);
    let resp = f
        .client
        .get(f.blob_url())
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), f.layer.blob());
}

#[test]
fn hooks_head_requests_and_authorization_are_seen() {
    let f = fixture();
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    f.proxy.hook(move |req| {
        seen.fetch_add(1, Ordering::Relaxed);
        // Fail the very first request only.
        (req.seq == 0).then(|| Action::Respond {
            status: 503,
            headers: vec![],
            body: vec![],
        })
    });
    let url = format!("{}/v2/", f.proxy.url());
    assert_eq!(f.client.get(&url).send().unwrap().status().as_u16(), 503);
    let resp = f.client.get(&url).bearer_auth("t0k3n").send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let head = f.client.head(f.blob_url()).send().unwrap();
    assert_eq!(head.status().as_u16(), 200);
    // The entity's length survives the proxy (reqwest's content_length() is 0 for HEAD).
    let length = head.headers()["content-length"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(length, f.layer.size().to_string());

    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let log = f.proxy.requests();
    assert_eq!(log.len(), 3);
    assert!(!log[0].has_authorization && log[1].has_authorization);
    assert_eq!(
        (log[2].method.as_str(), log[2].body_bytes_sent),
        ("HEAD", 0)
    );
    // HEAD is not a GET: it does not count as a blob download.
    assert_eq!(f.proxy.count_gets(f.layer.digest()), 0);
}

#[test]
fn stall_trips_the_client_timeout() {
    let f = fixture();
    f.proxy
        .add_rule(Match::AnyBlob, Action::Stall { after: 100 }, Some(1));
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = Instant::now();
    let got = client.get(f.blob_url()).send().and_then(|r| r.bytes());
    assert!(got.is_err(), "a stalled body must not complete");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(f.proxy.total_body_bytes(f.layer.digest()), 100);
}

#[test]
fn chunked_upstream_bodies_are_relayed_and_faulted() {
    // A one-shot fake upstream that answers with a chunked body, as some registries do.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap().to_string();
    let server = thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = upstream.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
            s.write_all(answer.as_bytes()).unwrap();
        }
    });
    let proxy = FaultProxy::start(&addr);
    let client = Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/v2/x/blobs/sha256:00", proxy.url());
    assert_eq!(
        client.get(&url).send().unwrap().text().unwrap(),
        "hello world"
    );
    proxy.corrupt("sha256:00", 6, Some(1));
    let bytes = client.get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(bytes.as_ref(), b"hello \x88orld");
    server.join().unwrap();
}

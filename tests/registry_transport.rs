//! Transport rules the registry cannot break: digests cover the bytes as sent, so the HTTP
//! client must neither ask for nor undo a Content-Encoding (S3 and some CDNs tag gzip
//! layers `Content-Encoding: gzip`, and a decoding client then hashes the tar instead).

mod common;

use common::capi;
use common::fixtures::Env;
use std::sync::{Arc, Mutex};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::proxy::{Action, Match};
use vicpull_testkit::{ImageSpec, Layer};

#[test]
fn transport_content_encoding_gzip_is_not_decoded_and_never_asked_for() {
    let env = Env::new();
    let layer = Layer::random(64 << 10, 4100);
    env.push("fx/enc", "1", &ImageSpec::new(vec![layer.clone()]));
    let encodings = Arc::new(Mutex::new(Vec::new()));
    let seen = encodings.clone();
    env.proxy.hook(move |r| {
        seen.lock()
            .unwrap()
            .push(r.header("accept-encoding").map(str::to_string));
        None
    });
    let headers = vec![
        (
            "Content-Type".to_string(),
            "application/octet-stream".to_string(),
        ),
        ("Content-Encoding".to_string(), "gzip".to_string()),
    ];
    let rule = env.proxy.add_rule(
        Match::blob(layer.digest()),
        Action::Respond {
            status: 200,
            headers,
            body: layer.blob().to_vec(),
        },
        None,
    );
    let (out, _) = capi::pull(env.options("fx/enc:1"));
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(env.proxy.fired(rule) >= 1, "the encoded answer was served");
    let json = out.json.unwrap();
    assert_eq!(json["layers"][0]["digest"], layer.digest(), "{json}");
    for e in encodings.lock().unwrap().iter().flatten() {
        assert_eq!(e, "identity", "a request asked for {e}");
    }
}

//! HTTP proxies between vicpull and the real registry: the `proxy` option (absolute-form
//! GETs for http, CONNECT tunnels for https), its no_proxy list, proxy credentials that
//! reach the proxy and nothing else, a dead proxy, and the environment variables, which
//! apply when the option is absent and not with `"proxy": false`.
//!
//! Loopback addresses always go direct (Go's rule, so docker's and skopeo's), so these
//! tests name the registry `registry.test`, pinned to 127.0.0.1 with the `hosts` option;
//! the test proxy maps `*.test` to 127.0.0.1 too.

mod common;
mod registry_kit;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::capi;
use registry_kit::{capture_logs, has_blob, log_lines};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::forward::dead_addr;
use vicpull_testkit::{
    push_image, Format, ForwardProxy, ImageSpec, Layer, PushedImage, Registry, RegistryOptions,
    TempDir,
};

/// A real registry holding fx/app:1 (two layers).
struct Reg {
    registry: Registry,
    image: PushedImage,
}

impl Reg {
    fn start() -> Reg {
        let registry = Registry::start();
        let spec = ImageSpec::new(vec![
            Layer::random(40 << 10, 71),
            Layer::random(9 << 10, 72),
        ]);
        let image = push_image(registry.addr(), "fx/app", "1", &spec);
        Reg { registry, image }
    }

    /// `registry.test:PORT`: the registry by a name that is not loopback.
    fn named(&self) -> String {
        named(self.registry.addr())
    }

    /// The URLs of every GET a pull makes: manifest, config, each layer.
    fn get_urls(&self) -> Vec<String> {
        let base = format!("http://{}/v2/fx/app", self.named());
        let mut v = vec![
            format!("{base}/manifests/1"),
            format!("{base}/blobs/{}", self.image.config_digest),
        ];
        v.extend(
            self.image
                .layers
                .iter()
                .map(|l| format!("{base}/blobs/{}", l.digest)),
        );
        v
    }
}

/// `127.0.0.1:PORT` -> `registry.test:PORT`.
fn named(addr: &str) -> String {
    format!("registry.test:{}", addr.rsplit_once(':').unwrap().1)
}

fn options(reg: &Reg, store: &Path) -> Value {
    json!({
        "reference": format!("{}/fx/app:1", reg.named()),
        "hosts": {"registry.test": "127.0.0.1"},
        "store": store,
        "plain_http": true,
        "docker_config": false,
        "max_attempts": 1,
    })
}

fn assert_pulled(reg: &Reg, store: &Path) {
    for l in &reg.image.layers {
        assert!(has_blob(store, &l.digest), "layer {} missing", l.digest);
    }
}

#[test]
fn proxy_option_carries_every_registry_get() {
    let reg = Reg::start();
    let proxy = ForwardProxy::start();
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["proxy"] = json!({"http": proxy.url()});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_pulled(&reg, store.path());
    let seen = proxy.targets("GET");
    for want in reg.get_urls() {
        assert!(
            seen.contains(&want),
            "the proxy did not see {want}: {seen:?}"
        );
    }
    assert!(proxy
        .requests()
        .iter()
        .all(|r| r.proxy_authorization.is_none()));

    // The same registry by its loopback address goes direct, proxy or not.
    let before = proxy.requests().len();
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["reference"] = format!("{}/fx/app:1", reg.registry.addr()).into();
    o["proxy"] = json!({"http": proxy.url()});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(proxy.requests().len(), before, "loopback was proxied");
}

#[test]
fn proxy_no_proxy_naming_the_registry_goes_direct() {
    let reg = Reg::start();
    let proxy = ForwardProxy::start();
    let port = reg.registry.addr().rsplit_once(':').unwrap().1.to_string();
    for no_proxy in [
        "registry.test".to_string(),
        format!("registry.test:{port}"),
        ".test".into(),
    ] {
        let store = TempDir::new("vicpull-store");
        let mut o = options(&reg, store.path());
        o["proxy"] = json!({"http": proxy.url(), "no_proxy": format!("other.test, {no_proxy}")});
        let (out, _) = capi::pull(o);
        assert_eq!(out.code, vic_result::Ok, "{no_proxy}: {}", out.message);
        assert_pulled(&reg, store.path());
        assert!(
            proxy.requests().is_empty(),
            "{no_proxy}: {:?}",
            proxy.requests()
        );
    }
    // Another port on the same host is not covered by a host:port entry.
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["proxy"] = json!({"http": proxy.url(), "no_proxy": "registry.test:1"});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(!proxy.requests().is_empty());
}

const SECRET: &str = "pr0xy-s3cret";

#[test]
fn proxy_credentials_are_sent_and_never_shown() {
    capture_logs();
    let reg = Reg::start();
    let proxy = ForwardProxy::start();
    proxy.require_auth("puser", SECRET);
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["proxy"] = json!({"http": format!("http://puser:{SECRET}@{}", proxy.addr())});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_pulled(&reg, store.path());
    let reqs = proxy.requests();
    assert!(reqs.len() >= 4, "{reqs:?}");
    // base64("puser:pr0xy-s3cret")
    let want = "Basic cHVzZXI6cHIweHktczNjcmV0";
    assert!(
        reqs.iter()
            .all(|r| r.proxy_authorization.as_deref() == Some(want)),
        "{reqs:?}"
    );
    assert!(!out.json.unwrap().to_string().contains(SECRET));

    // A wrong password: the proxy's 407 fails the pull; neither password is shown.
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["proxy"] = json!({"http": format!("http://puser:wrong-{SECRET}@{}", proxy.addr())});
    let (out, _) = capi::pull(o);
    assert_ne!(out.code, vic_result::Ok);
    assert!(out.message.contains("407"), "{}", out.message);
    assert!(!out.message.contains(SECRET), "{}", out.message);

    let lines = log_lines();
    let ours = lines.iter().filter(|l| l.contains(&reg.named()));
    assert!(
        ours.count() > 0,
        "no log lines about this pull were captured"
    );
    for l in &lines {
        assert!(
            !l.contains(SECRET),
            "a log line shows the proxy password: {l}"
        );
    }
}

#[test]
fn proxy_dead_is_a_network_error_naming_it() {
    let reg = Reg::start();
    let dead = dead_addr();
    let store = TempDir::new("vicpull-store");
    let mut o = options(&reg, store.path());
    o["proxy"] = json!({"http": format!("http://puser:{SECRET}@{dead}")});
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(
        out.message
            .contains(&format!("through proxy http://{dead}")),
        "{}",
        out.message
    );
    assert!(!out.message.contains(SECRET), "{}", out.message);
}

#[test]
fn proxy_bad_urls_are_invalid_arguments_without_credentials() {
    let reg = Reg::start();
    let store = TempDir::new("vicpull-store");
    for bad in [
        json!({"http": format!("socks5://u:{SECRET}@127.0.0.1:1080")}),
        json!({"https": format!("ftp://u:{SECRET}@127.0.0.1")}),
        json!({"http": "http://127.0.0.1:3128/some/path"}),
        json!({"http": "http://127.0.0.1:3128", "no_proxy": "10.0.0.0/40"}),
        json!({"http": "http://127.0.0.1:3128", "bogus": 1}),
        json!("http://127.0.0.1:3128"),
    ] {
        let mut o = options(&reg, store.path());
        o["proxy"] = bad.clone();
        let Err((code, message)) = capi::start(&o) else {
            panic!("{bad} was accepted");
        };
        assert_eq!(code, vic_result::InvalidArgument, "{bad}: {message}");
        assert!(message.contains("proxy"), "{bad}: {message}");
        assert!(!message.contains(SECRET), "{bad}: {message}");
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl {args:?}: {err}");
}

#[test]
fn proxy_https_goes_through_a_connect_tunnel() {
    // A self-signed certificate for 127.0.0.1, trusted through ca_file.
    let pki = TempDir::new("vicpull-proxy-pki");
    openssl(
        pki.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-subj",
            "/CN=registry.test",
            "-addext",
            "subjectAltName=DNS:registry.test,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "2",
        ],
    );
    let data = TempDir::new("vicpull-proxy-registry");
    let plain = Registry::start_with(RegistryOptions::new().dir(data.path()));
    let spec = ImageSpec::new(vec![Layer::random(30 << 10, 73)]).format(Format::Oci);
    let image = push_image(plain.addr(), "fx/app", "1", &spec);
    let tls = Registry::start_with(
        RegistryOptions::new()
            .dir(data.path())
            .tls(pki.path().join("server.crt"), pki.path().join("server.key")),
    );

    let proxy = ForwardProxy::start();
    proxy.require_auth("puser", SECRET);
    let store = TempDir::new("vicpull-store");
    let o = json!({
        "reference": format!("{}/fx/app:1", named(tls.addr())),
        "hosts": {"registry.test": "127.0.0.1"},
        "store": store.path(),
        "docker_config": false,
        "max_attempts": 1,
        "ca_file": pki.path().join("server.crt"),
        "proxy": {"https": format!("http://puser:{SECRET}@{}", proxy.addr())},
    });
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert!(has_blob(store.path(), &image.layers[0].digest));
    let reqs = proxy.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.method, "CONNECT", "{reqs:?}");
        assert_eq!(r.target, named(tls.addr()), "{reqs:?}");
        assert!(r.proxy_authorization.is_some(), "{reqs:?}");
    }
}

fn vicpull_pull() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vicpull-pull"))
}

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Pull in a child process with `env` set on the child only; true when it succeeded.
fn child_pull(o: &Value, env: &[(&str, &str)]) -> bool {
    let mut cmd = Command::new(vicpull_pull());
    cmd.arg(o.to_string());
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run vicpull-pull");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[test]
fn proxy_environment_applies_without_the_option_and_false_ignores_it() {
    let reg = Reg::start();
    let proxy = ForwardProxy::start();
    let pull = |extra: Value, env: &[(&str, &str)]| {
        let store = TempDir::new("vicpull-store");
        let mut o = options(&reg, store.path());
        if let Value::Object(m) = extra {
            o.as_object_mut().unwrap().extend(m);
        }
        let before = proxy.requests().len();
        assert!(child_pull(&o, env), "{env:?} {o}");
        assert_pulled(&reg, store.path());
        proxy.requests().len() - before
    };
    let url = proxy.url();
    let none = json!({});
    assert!(
        pull(none.clone(), &[("HTTP_PROXY", &url)]) >= 4,
        "HTTP_PROXY"
    );
    assert!(
        pull(none.clone(), &[("http_proxy", &url)]) >= 4,
        "http_proxy"
    );
    assert!(pull(none.clone(), &[("ALL_PROXY", &url)]) >= 4, "ALL_PROXY");
    let listed = [("HTTP_PROXY", url.as_str()), ("NO_PROXY", "registry.test")];
    assert_eq!(pull(none.clone(), &listed), 0, "NO_PROXY");
    let lower = [
        ("http_proxy", url.as_str()),
        ("no_proxy", "other.example,.test"),
    ];
    assert_eq!(pull(none, &lower), 0, "no_proxy");
    let off = json!({"proxy": false});
    assert_eq!(pull(off, &[("HTTP_PROXY", &url)]), 0, "proxy: false");
    // The option replaces the environment whole: its own no_proxy, not NO_PROXY.
    let own = json!({"proxy": {"http": url}});
    assert!(pull(own, &listed) >= 4, "option over environment");
    // Under CGI, HTTP_PROXY may come from a request header: not used.
    let cgi = [("REQUEST_METHOD", "GET"), ("HTTP_PROXY", url.as_str())];
    assert_eq!(pull(json!({}), &cgi), 0, "CGI");
    // A registry on a loopback address never goes through the environment's proxy.
    let direct = json!({"reference": format!("{}/fx/app:1", reg.registry.addr())});
    assert_eq!(pull(direct, &[("HTTP_PROXY", &url)]), 0, "loopback");
}

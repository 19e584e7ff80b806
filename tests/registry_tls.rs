//! TLS against a real docker-registry serving HTTPS with a certificate from a CA this test
//! makes: refused by default, trusted through `ca_file`, a certs.d directory or a per-host
//! CA, skipped only by an explicit `insecure`, and mutual TLS with client certificates.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::capi;
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::{push_image, Format, ImageSpec, Layer, Registry, RegistryOptions, TempDir};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key and a certificate for `cn` signed by ca.crt, with `ext` extensions.
fn issue(dir: &Path, name: &str, cn: &str, ext: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let extfile = format!("{name}.ext");
    std::fs::write(dir.join(&extfile), ext).unwrap();
    let genkey = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ];
    openssl(dir, &[&genkey[..], &["-out", &key]].concat());
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    );
}

struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("vicpull-pki");
        let d = dir.path();
        let genkey = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ];
        openssl(d, &[&genkey[..], &["-out", "ca.key"]].concat());
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=vicpull test CA",
                "-days",
                "2",
                "-out",
                "ca.crt",
            ],
        );
        issue(
            d,
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        );
        issue(
            d,
            "client",
            "vicpull-client",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An HTTPS registry holding fx/app:1 (pushed through a plain one on the same storage).
struct Tls {
    _plain: Registry,
    registry: Registry,
    _data: TempDir,
    store: TempDir,
}

impl Tls {
    fn start(pki: &Pki, mutual: bool) -> Tls {
        Tls::start_logged(pki, mutual, false)
    }

    /// With `access_log`, the registry writes one combined-format line per request.
    fn start_logged(pki: &Pki, mutual: bool, access_log: bool) -> Tls {
        let client_ca = mutual.then(|| pki.path("ca.crt"));
        let (crt, key) = (pki.path("server.crt"), pki.path("server.key"));
        Tls::serving(&crt, &key, client_ca, access_log)
    }

    /// Serving `crt` with `key`; `client_ca` asks for client certificates it signed.
    fn serving(crt: &Path, key: &Path, client_ca: Option<PathBuf>, access_log: bool) -> Tls {
        let data = TempDir::new("vicpull-tls-registry");
        let plain = Registry::start_with(RegistryOptions::new().dir(data.path()));
        let spec = ImageSpec::new(vec![Layer::random(48 << 10, 31)]).format(Format::Oci);
        push_image(plain.addr(), "fx/app", "1", &spec);
        let mut o = RegistryOptions::new()
            .dir(data.path())
            .access_log(access_log)
            .tls(crt.to_path_buf(), key.to_path_buf());
        if let Some(ca) = client_ca {
            o = o.client_ca(ca);
        }
        Tls {
            _plain: plain,
            registry: Registry::start_with(o),
            _data: data,
            store: TempDir::new("vicpull-store"),
        }
    }

    fn options(&self) -> Value {
        json!({
            "reference": format!("{}/fx/app:1", self.registry.addr()),
            "store": self.store.path(),
            "docker_config": false,
            "max_attempts": 1,
        })
    }
}

fn pull(o: Value) -> capi::Outcome {
    capi::pull(o).0
}

#[test]
fn registry_tls_unknown_ca_is_refused_then_trusted_by_option() {
    let pki = Pki::new();
    let reg = Tls::start(&pki, false);

    let out = pull(reg.options());
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(
        out.message.to_lowercase().contains("certificate"),
        "{}",
        out.message
    );

    let mut o = reg.options();
    o["ca_file"] = pki.path("ca.crt").display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn registry_tls_per_host_ca_certs_dir_and_insecure() {
    let pki = Pki::new();
    let reg = Tls::start(&pki, false);
    let host = reg.registry.addr().to_string();

    let mut o = reg.options();
    o["registries"] = json!({host.clone(): {"ca_file": pki.path("ca.crt")}});
    assert_eq!(pull(o).code, vic_result::Ok);

    let certs = TempDir::new("vicpull-certs.d");
    std::fs::create_dir(certs.path().join(&host)).unwrap();
    std::fs::copy(pki.path("ca.crt"), certs.path().join(&host).join("ca.crt")).unwrap();
    let mut o = reg.options();
    o["certs_dir"] = certs.path().display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);

    let mut o = reg.options();
    o["registries"] = json!({host: {"insecure": true}});
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn registry_tls_client_certificates() {
    let pki = Pki::new();
    let reg = Tls::start(&pki, true);
    let host = reg.registry.addr().to_string();
    let ca = pki.path("ca.crt").display().to_string();

    let mut o = reg.options();
    o["ca_file"] = ca.clone().into();
    let out = pull(o);
    assert_ne!(out.code, vic_result::Ok, "a client certificate is required");

    let mut o = reg.options();
    o["ca_file"] = ca.clone().into();
    o["registries"] = json!({host.clone(): {
        "client_cert": pki.path("client.crt"),
        "client_key": pki.path("client.key"),
    }});
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);

    // certs.d style: ca.crt, client.cert and client.key under <host:port>/.
    let certs = TempDir::new("vicpull-certs.d");
    let d = certs.path().join(&host);
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(pki.path("ca.crt"), d.join("ca.crt")).unwrap();
    std::fs::copy(pki.path("client.crt"), d.join("client.cert")).unwrap();
    std::fs::copy(pki.path("client.key"), d.join("client.key")).unwrap();
    let mut o = reg.options();
    o["certs_dir"] = certs.path().display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn registry_tls_half_a_client_pair_is_an_invalid_option() {
    let (code, msg) = match capi::start(&json!({
        "reference": "127.0.0.1:1/fx/app:1",
        "store": "/tmp/unused",
        "registries": {"127.0.0.1:1": {"client_cert": "/x.crt"}},
    })) {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(code, vic_result::InvalidArgument);
    assert!(msg.contains("client_cert and client_key"), "{msg}");
}

#[test]
fn registry_tls_speaks_http2_when_the_registry_offers_it() {
    let pki = Pki::new();
    let reg = Tls::start_logged(&pki, false, true);
    let mut o = reg.options();
    o["ca_file"] = pki.path("ca.crt").display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    // Go's server negotiates h2 through ALPN; the access log names the protocol.
    let log = reg.registry.log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/fx/app/"))
        .collect();
    assert!(
        ours.len() >= 3,
        "manifest, config and layer requests: {log}"
    );
    for l in &ours {
        assert!(l.contains("HTTP/2.0"), "not HTTP/2: {l}");
    }
}

/// A self-signed certificate made with the command of Docker's "deploy a registry" docs,
/// naming `san`; OpenSSL 3 marks it CA:TRUE, checked here so the tests below test that.
fn docker_docs_cert(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let san = format!("subjectAltName={san}");
    let docs = format!("req -newkey rsa:4096 -nodes -sha256 -keyout {key} -x509 -days 365");
    let mut args: Vec<&str> = docs.split_whitespace().collect();
    args.extend(["-out", &crt, "-subj", "/CN=127.0.0.1", "-addext", &san]);
    openssl(dir, &args);
    let text = Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-noout", "-text", "-in", &crt])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    (dir.join(crt), dir.join(key))
}

fn refused_as_ca(out: &capi::Outcome) {
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(
        out.message.contains("is a CA certificate") && out.message.contains("ca_file"),
        "{}",
        out.message
    );
}

#[test]
fn registry_tls_self_signed_ca_true_cert_trusted_by_ca_file() {
    let dir = TempDir::new("vicpull-self-signed");
    let (crt, key) = docker_docs_cert(dir.path(), "domain", "IP:127.0.0.1");
    let (other, _) = docker_docs_cert(dir.path(), "other", "IP:127.0.0.1");
    let reg = Tls::serving(&crt, &key, None, true);
    let host = reg.registry.addr().to_string();

    refused_as_ca(&pull(reg.options()));
    // Another self-signed certificate for the same address is no trust in this one.
    let mut o = reg.options();
    o["ca_file"] = other.display().to_string().into();
    refused_as_ca(&pull(o));

    let mut o = reg.options();
    o["ca_file"] = crt.display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    // The hand-built TLS setup still offers h2, and Go's server takes it.
    let log = reg.registry.log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/fx/app/"))
        .collect();
    assert!(ours.len() >= 3, "manifest, config and layer: {log}");
    assert!(ours.iter().all(|l| l.contains("HTTP/2.0")), "{log}");

    // Per registry, and as one certificate of a bundle.
    let mut o = reg.options();
    o["registries"] = json!({host: {"ca_file": crt}});
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    let bundle = dir.path().join("bundle.crt");
    let pems = [std::fs::read(&other).unwrap(), std::fs::read(&crt).unwrap()];
    std::fs::write(&bundle, pems.concat()).unwrap();
    let mut o = reg.options();
    o["ca_file"] = bundle.display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn registry_tls_self_signed_ca_true_cert_trusted_through_certs_d() {
    let dir = TempDir::new("vicpull-self-signed");
    let (crt, key) = docker_docs_cert(dir.path(), "domain", "IP:127.0.0.1");
    let (other, _) = docker_docs_cert(dir.path(), "other", "IP:127.0.0.1");
    let reg = Tls::serving(&crt, &key, None, false);
    let host = reg.registry.addr().to_string();
    let certs = TempDir::new("vicpull-certs.d");
    let d = certs.path().join(&host);
    std::fs::create_dir(&d).unwrap();
    let mut o = reg.options();
    o["certs_dir"] = certs.path().display().to_string().into();

    std::fs::copy(&other, d.join("ca.crt")).unwrap();
    refused_as_ca(&pull(o.clone()));
    std::fs::copy(&crt, d.join("domain.crt")).unwrap();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn registry_tls_pinned_ca_true_cert_must_name_the_registry() {
    let dir = TempDir::new("vicpull-self-signed");
    let (crt, key) = docker_docs_cert(dir.path(), "elsewhere", "IP:127.0.0.2,DNS:elsewhere.test");
    let reg = Tls::serving(&crt, &key, None, false);
    let mut o = reg.options();
    o["ca_file"] = crt.display().to_string().into();
    let out = pull(o);
    assert_eq!(out.code, vic_result::Network, "{}", out.message);
    assert!(
        out.message.contains("not valid for name"),
        "{}",
        out.message
    );
}

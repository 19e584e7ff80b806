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
        let data = TempDir::new("vicpull-tls-registry");
        let plain = Registry::start_with(RegistryOptions::new().dir(data.path()));
        let spec = ImageSpec::new(vec![Layer::random(48 << 10, 31)]).format(Format::Oci);
        push_image(plain.addr(), "fx/app", "1", &spec);
        let mut o = RegistryOptions::new()
            .dir(data.path())
            .access_log(access_log)
            .tls(pki.path("server.crt"), pki.path("server.key"));
        if mutual {
            o = o.client_ca(pki.path("ca.crt"));
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

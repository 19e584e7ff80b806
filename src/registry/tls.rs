//! TLS per registry host: system roots always, plus extra CA bundles (a
//! self-signed server certificate given as one is trusted as itself, see
//! `pinned`), client certificates (explicit paths or a certs.d-style directory) and an
//! explicit `insecure` switch. Hosts with the same material, proxies and
//! `hosts` pins share one HTTP client, so connections are still reused
//! across pulls, and pulls that differ in any of them never share one.

mod pinned;
mod x509;

use super::http;
use super::proxy::Proxies;
use super::resolve::Hosts;
use super::settings::Settings;
use crate::error::{Error, ErrorKind, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest certificate or key file we read.
const MAX_PEM: u64 = 1 << 20;

/// The TLS material for one host, as bytes: the cache key, so a rotated
/// file gives a new client on the next pull.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Material {
    roots: Vec<Vec<u8>>,
    /// Certificate chain and key, PEM, concatenated.
    identity: Option<Vec<u8>>,
    insecure: bool,
}

/// What makes two clients different.
type Key = (Material, Proxies, Hosts);

/// Every client built so far, by what tells them apart.
static CLIENTS: Mutex<Option<HashMap<Key, reqwest::Client>>> = Mutex::new(None);

/// The HTTP client to use for `host` (`host[:port]`).
pub fn client_for(settings: &Settings, host: &str) -> Result<reqwest::Client> {
    let m = material(settings, host)?;
    let mut all = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    let key = (m, settings.proxies.clone(), settings.hosts.clone());
    if let Some(c) = all.get(&key) {
        return Ok(c.clone());
    }
    let m = &key.0;
    let tls = rustls_config(m, host)?;
    if m.insecure {
        log::warn!("registry {host}: TLS certificates are not verified (insecure)");
    }
    let b = http::builder(&key.1, &key.2).use_preconfigured_tls(tls);
    let c = b
        .build()
        .map_err(|e| tls_error(host, &format!("cannot build a TLS client: {e}")))?;
    all.insert(key, c.clone());
    Ok(c)
}

/// reqwest's own rustls setup (system roots, the process's crypto provider
/// or ring, TLS 1.2 and 1.3, h2 then http/1.1 by ALPN), with the user's CA
/// files as extra roots and our server certificate checks (`pinned`).
fn rustls_config(m: &Material, host: &str) -> Result<rustls::ClientConfig> {
    let cannot =
        |e: &dyn std::fmt::Display| tls_error(host, &format!("cannot build a TLS client: {e}"));
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let (roots, extra) = roots(m, host)?;
    let verifier = if m.insecure {
        pinned::Verifier::insecure(provider.clone())
    } else {
        pinned::Verifier::new(roots, extra, provider.clone()).map_err(|e| cannot(&e))?
    };
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cannot(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match &m.identity {
        Some(pem) => {
            let (certs, key) = identity(pem, host)?;
            b.with_client_auth_cert(certs, key)
                .map_err(|e| tls_error(host, &format!("the client certificate or key: {e}")))?
        }
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The system roots with the user's CA certificates, and those alone.
fn roots(
    m: &Material,
    host: &str,
) -> Result<(rustls::RootCertStore, Vec<CertificateDer<'static>>)> {
    let mut extra = Vec::new();
    for pem in &m.roots {
        for c in CertificateDer::pem_slice_iter(pem) {
            extra.push(c.map_err(|e| tls_error(host, &format!("a CA file is not PEM: {e}")))?);
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    // System stores often hold a certificate webpki cannot parse: skip it.
    for c in rustls_native_certs::load_native_certs().certs {
        if let Err(e) = roots.add(c) {
            log::debug!("a system root certificate is skipped: {e}");
        }
    }
    for c in &extra {
        roots
            .add(c.clone())
            .map_err(|e| tls_error(host, &format!("a CA certificate is not usable: {e}")))?;
    }
    Ok((roots, extra))
}

/// The client certificate chain and key from one PEM text.
fn identity(
    pem: &[u8],
    host: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let bad = |why: &str| tls_error(host, &format!("the client certificate or key: {why}"));
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(&format!("no private key: {e}")))?;
    Ok((certs, key))
}

fn material(settings: &Settings, host: &str) -> Result<Material> {
    let mut m = Material::default();
    if let Some(f) = &settings.ca_file {
        m.roots.push(read_pem(f, host)?);
    }
    let mut cert_key: Option<(PathBuf, PathBuf)> = None;
    if let Some(dir) = &settings.certs_dir {
        let (roots, pair) = certs_d(&dir.join(host), host)?;
        m.roots.extend(roots);
        cert_key = pair;
    }
    if let Some(o) = settings.host(host) {
        if let Some(f) = &o.ca_file {
            m.roots.push(read_pem(f, host)?);
        }
        if let (Some(c), Some(k)) = (&o.client_cert, &o.client_key) {
            cert_key = Some((c.clone(), k.clone()));
        }
        m.insecure = o.insecure;
    }
    if let Some((c, k)) = cert_key {
        let mut pem = read_pem(&c, host)?;
        pem.push(b'\n');
        pem.extend(read_pem(&k, host)?);
        m.identity = Some(pem);
    }
    Ok(m)
}

/// CA roots, and a client certificate with its key.
type Found = (Vec<Vec<u8>>, Option<(PathBuf, PathBuf)>);

/// Docker's certs.d layout: `<dir>/*.crt` are CA roots; `<name>.cert` with
/// `<name>.key` is a client pair. A missing directory holds nothing.
fn certs_d(dir: &Path, host: &str) -> Result<Found> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok((Vec::new(), None));
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut roots = Vec::new();
    let mut pair = None;
    for p in &names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => roots.push(read_pem(p, host)?),
            Some("cert") => {
                let key = p.with_extension("key");
                if !key.exists() {
                    return Err(tls_error(
                        host,
                        &format!("{} has no matching .key file", p.display()),
                    ));
                }
                pair = Some((p.clone(), key));
            }
            _ => {}
        }
    }
    Ok((roots, pair))
}

/// Read at most MAX_PEM bytes: the size on disk says nothing for a device,
/// a FIFO or a file that grows while we read.
fn read_pem(path: &Path, host: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| tls_error(host, &format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_PEM {
        return Err(tls_error(
            host,
            &format!("{} is larger than {MAX_PEM} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn tls_error(host: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("TLS settings for {host}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::proxy::{ProxyOption, ProxyValues};
    use crate::registry::settings::Network;
    use std::collections::BTreeMap;

    fn settings(proxy: &str, pin: &str) -> Settings {
        let mut hosts = BTreeMap::new();
        let ip = crate::registry::resolve::HostsValue::One("127.0.0.1".into());
        hosts.insert(pin.to_string(), ip);
        let proxy = ProxyOption::Set(ProxyValues {
            http: Some(proxy.into()),
            https: None,
            no_proxy: None,
        });
        let network = Network { proxy, hosts };
        let dc = crate::registry::settings::DockerConfigOption::Enabled(false);
        Settings::new(BTreeMap::new(), None, None, dc, None, 60, false, network).unwrap()
    }

    #[test]
    fn same_settings_share_a_client_and_other_proxies_do_not() {
        // A pin no other test uses picks this test's cache entries out.
        let pin = "tls-cache-test.invalid";
        let mine = || {
            let all = CLIENTS.lock().unwrap();
            let all = all.as_ref().unwrap();
            all.keys()
                .filter(|k| k.2 == settings("h:1", pin).hosts)
                .count()
        };
        client_for(&settings("http://127.0.0.1:3128", pin), "a:1").unwrap();
        client_for(&settings("http://127.0.0.1:3128", pin), "b:2").unwrap();
        assert_eq!(mine(), 1, "same proxy and material: one client");
        client_for(&settings("http://u:p@127.0.0.1:3128", pin), "a:1").unwrap();
        client_for(&settings("http://127.0.0.1:3129", pin), "a:1").unwrap();
        assert_eq!(mine(), 3, "another proxy or proxy password: another client");
    }
}

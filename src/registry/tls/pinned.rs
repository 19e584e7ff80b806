//! Server certificate checks: webpki's, plus pinned-certificate trust.
//!
//! `openssl req -x509` (OpenSSL 3) marks a self-signed certificate CA:TRUE,
//! and Docker's own registry recipe serves such a certificate. webpki refuses
//! a CA certificate as a server's (CaUsedAsEndEntity) even when it is the
//! trust anchor itself; Go and OpenSSL accept a server certificate that is
//! one of the trusted certificates. So on that one objection, and only when
//! the server's certificate is byte for byte one the user gave as extra
//! trust, we still check name, dates and key usage and then accept it.

use super::x509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

#[derive(Debug)]
pub struct Verifier {
    /// None when there is no root at all: every certificate is then unknown.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The certificates from the user's CA files.
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    /// Skip every certificate check (`insecure`).
    insecure: bool,
}

impl Verifier {
    /// Checks against `roots`, which hold `pinned` and the system roots.
    pub fn new(
        roots: rustls::RootCertStore,
        pinned: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Verifier, rustls::client::VerifierBuilderError> {
        let webpki = if roots.is_empty() {
            None
        } else {
            let b = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            Some(b.build()?)
        };
        Ok(Verifier {
            webpki,
            pinned,
            provider,
            insecure: false,
        })
    }

    /// Accepts any certificate; handshake signatures are not checked either.
    pub fn insecure(provider: Arc<CryptoProvider>) -> Verifier {
        Verifier {
            webpki: None,
            pinned: Vec::new(),
            provider,
            insecure: true,
        }
    }

    /// The server's certificate is a CA's; accept it only as a pinned one.
    fn pinned_trust(
        &self,
        end_entity: &CertificateDer<'_>,
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(ca_as_server(name));
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| CertificateError::BadEncoding)?;
        cert.verify_is_valid_for_subject_name(name)
            .map_err(|e| match e {
                webpki::Error::CertNotValidForName(c) => CertificateError::NotValidForNameContext {
                    expected: c.expected,
                    presented: c.presented,
                },
                _ => CertificateError::NotValidForName,
            })?;
        // webpki checks the dates before it objects to CA:TRUE today; checked
        // again so this trust does not hang on that order.
        let facts = x509::facts(end_entity).ok_or(CertificateError::BadEncoding)?;
        if now < facts.not_before {
            let not_before = facts.not_before;
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
        if now > facts.not_after {
            let not_after = facts.not_after;
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        if !facts.server_auth {
            return Err(CertificateError::InvalidPurpose.into());
        }
        Ok(ServerCertVerified::assertion())
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(webpki) = &self.webpki else {
            return Err(CertificateError::UnknownIssuer.into());
        };
        match webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now) {
            Err(e) if ca_used_as_end_entity(&e) => self.pinned_trust(end_entity, name, now),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.insecure {
            return Ok(HandshakeSignatureValid::assertion());
        }
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.insecure {
            return Ok(HandshakeSignatureValid::assertion());
        }
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// webpki's objection to a certificate marked CA:TRUE as the server's.
fn ca_used_as_end_entity(e: &rustls::Error) -> bool {
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) = e else {
        return false;
    };
    matches!(
        e.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// The refusal of a CA certificate as a server's, with the way out.
fn ca_as_server(name: &ServerName<'_>) -> rustls::Error {
    let why = format!(
        "the certificate of {} is a CA certificate (basicConstraints CA:TRUE) used as a \
         server certificate; to trust exactly this certificate, give it as ca_file, \
         registries.<host>.ca_file or a certs.d <host>/*.crt file",
        name.to_str()
    );
    CertificateError::Other(OtherError(Arc::new(Refusal(why)))).into()
}

/// rustls shows a certificate error with `{:?}`, so Debug is the text too.
struct Refusal(String);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use std::process::Command;

    /// A self-signed certificate for 127.0.0.1 made the way Docker's
    /// registry docs make one (OpenSSL 3 marks it CA:TRUE), plus `ext`.
    fn self_signed(name: &str, ext: &[&str]) -> CertificateDer<'static> {
        let dir =
            std::env::temp_dir().join(format!("vicpull-pinned-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, crt) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.crt")),
        );
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ];
        args.extend(["-nodes", "-x509", "-days", "365", "-subj", "/CN=127.0.0.1"]);
        args.extend(["-addext", "subjectAltName=IP:127.0.0.1"]);
        for e in ext {
            args.extend(["-addext", e]);
        }
        let out = Command::new("openssl")
            .args(&args)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read(&crt).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    fn verifier(pinned: &[&CertificateDer<'static>]) -> Verifier {
        let mut roots = rustls::RootCertStore::empty();
        for c in pinned {
            roots.add((*c).clone()).unwrap();
        }
        let pinned = pinned.iter().map(|c| (*c).clone()).collect();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Verifier::new(roots, pinned, provider).unwrap()
    }

    fn check(v: &Verifier, cert: &CertificateDer<'_>, ip: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(ip).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_pinned_ca_true_certificate_is_trusted_for_its_own_name_only() {
        let cert = self_signed("a", &[]);
        let other = self_signed("b", &[]);
        let v = verifier(&[&cert]);
        check(&v, &cert, "127.0.0.1").unwrap();
        let wrong_name = check(&v, &cert, "127.0.0.2").unwrap_err();
        assert!(
            matches!(
                wrong_name,
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{wrong_name}"
        );
        // Trusting another certificate, or none: webpki's objection, explained.
        let msg = check(&v, &other, "127.0.0.1").unwrap_err().to_string();
        assert!(msg.contains("is a CA certificate"), "{msg}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let none = Verifier::new(rustls::RootCertStore::empty(), Vec::new(), provider).unwrap();
        assert!(check(&none, &cert, "127.0.0.1").is_err());
    }

    #[test]
    fn a_pinned_certificate_for_clients_only_is_refused() {
        let cert = self_signed("c", &["extendedKeyUsage=clientAuth"]);
        let e = check(&verifier(&[&cert]), &cert, "127.0.0.1").unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)
            ),
            "{e}"
        );
        let cert = self_signed("d", &["extendedKeyUsage=clientAuth,serverAuth"]);
        check(&verifier(&[&cert]), &cert, "127.0.0.1").unwrap();
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let cert = self_signed("e", &[]);
        let f = x509::facts(&cert).unwrap();
        let now = UnixTime::now().as_secs();
        assert!(f.not_before.as_secs() <= now && now < f.not_after.as_secs());
        let days = (f.not_after.as_secs() - f.not_before.as_secs()) / 86_400;
        assert_eq!(days, 365);
        assert!(f.server_auth);
    }
}

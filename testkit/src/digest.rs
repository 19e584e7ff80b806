//! `sha256:<hex>` and `sha512:<hex>` digests as registries spell them.

use sha2::{Digest, Sha256, Sha512};

/// The hash a digest names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
}

/// The OCI digest string of `bytes` in `algorithm`.
pub fn digest_with(algorithm: Algorithm, bytes: &[u8]) -> String {
    let (name, hash) = match algorithm {
        Algorithm::Sha256 => ("sha256", Sha256::digest(bytes).to_vec()),
        Algorithm::Sha512 => ("sha512", Sha512::digest(bytes).to_vec()),
    };
    let mut out = format!("{name}:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The OCI digest string of `bytes`, e.g. `sha256:e3b0c442...`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha512_of_empty_input() {
        let d = super::digest_with(super::Algorithm::Sha512, b"");
        assert!(
            d.starts_with("sha512:cf83e1357eefb8bd") && d.len() == 7 + 128,
            "{d}"
        );
    }

    #[test]
    fn empty_input() {
        assert_eq!(
            super::sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

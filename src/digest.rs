//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), parsed strictly
//! because they become file names in the store. Registries name blobs in
//! either; anything else is refused as unsupported rather than trusted
//! unchecked.

use crate::error::{Error, ErrorKind, Result};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;

/// The hash functions a digest may name (OCI image-spec's registered two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name before the colon, and the directory under blobs/.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

/// A running hash in one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| Error::invalid(format!("digest {s:?} has no algorithm prefix")))?;
        let Some(algorithm) = Algorithm::from_name(algo) else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "digest {s:?}: algorithm {algo:?} is not supported (only sha256 and sha512)"
                ),
            ));
        };
        let want = algorithm.hex_len();
        let ok = hex.len() == want && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(Error::invalid(format!(
                "digest {s:?} is not {want} lowercase hex digits"
            )));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 of `bytes`: what registries name manifests by.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::of_with(Algorithm::Sha256, bytes)
    }

    pub fn of_with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = algorithm.hasher();
        h.update(bytes);
        h.finish()
    }

    fn from_bytes(algorithm: Algorithm, out: &[u8]) -> Digest {
        let mut hex = String::with_capacity(out.len() * 2);
        for b in out {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest { algorithm, hex }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `bytes` hash to this digest, in its own algorithm.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        Digest::of_with(self.algorithm, bytes) == *self
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// This digest as a file name in the store's own areas (ingest,
    /// verified marks). sha256 keeps the bare hex that stores already hold;
    /// other algorithms carry their name, so no two algorithms can share a
    /// name even if a future one has the same hex length.
    pub fn file_name(&self) -> String {
        match self.algorithm {
            Algorithm::Sha256 => self.hex.clone(),
            a => format!("{}-{}", a.name(), self.hex),
        }
    }

    /// The digest a `file_name` names, if it is one.
    pub fn from_file_name(name: &str) -> Option<Digest> {
        let text = match name.split_once('-') {
            Some((algo, hex)) if algo != "sha256" => format!("{algo}:{hex}"),
            Some(_) => return None,
            None => format!("sha256:{name}"),
        };
        Digest::parse(&text).ok()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hashes() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert_eq!(
            Digest::parse("md5:00").unwrap_err().kind,
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn sha512_is_strict_and_named_apart() {
        let d = Digest::of_with(Algorithm::Sha512, b"");
        assert_eq!(
            d.to_string(),
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(d.matches(b"") && !d.matches(b"x"));
        // A sha256-length hex under sha512, and upper case, are refused.
        let short = format!("sha512:{}", Digest::of(b"").hex());
        assert_eq!(
            Digest::parse(&short).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let upper = d.to_string().replace('c', "C");
        assert!(Digest::parse(&upper).is_err());
        let e = Digest::parse(&format!("sha384:{}", "ab".repeat(48))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("only sha256 and sha512"),
            "{}",
            e.message
        );

        let s = Digest::of(b"");
        assert_eq!(s.file_name(), s.hex());
        assert_eq!(d.file_name(), format!("sha512-{}", d.hex()));
        assert_eq!(Digest::from_file_name(&s.file_name()), Some(s));
        assert_eq!(Digest::from_file_name(&d.file_name()), Some(d.clone()));
        assert_eq!(Digest::from_file_name(&format!("sha256-{}", d.hex())), None);
        assert_eq!(Digest::from_file_name("md5-00"), None);
    }
}

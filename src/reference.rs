//! Image references parsed the way `docker pull` reads them:
//! `busybox` is `docker.io/library/busybox:latest`.

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use std::fmt;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `host:5000`, `[::1]:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn bad(input: &str, why: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::BadReference,
        format!("invalid reference {input:?}: {why}"),
    )
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference> {
        if input.is_empty() {
            return Err(bad(input, "it is empty"));
        }
        if input.len() > 512 || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(input, "it is too long or contains whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                // An algorithm we cannot check stays UNSUPPORTED, as everywhere.
                let d = Digest::parse(d).map_err(|e| match e.kind {
                    ErrorKind::Unsupported => e.context(format!("reference {input:?}")),
                    _ => bad(input, format!("digest part: {e}")),
                })?;
                (r, Some(d))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':'
        // before it belongs to host:port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(&t[1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(|why| bad(input, why))?;
        }
        let (registry, path) = split_registry(name);
        if let Some(r) = &registry {
            check_registry(r).map_err(|why| bad(input, why))?;
        }
        if path.len() > 255 {
            return Err(bad(input, "repository name is longer than 255 characters"));
        }
        for comp in path.split('/') {
            check_component(comp).map_err(|why| bad(input, why))?;
        }
        let registry = registry.unwrap_or_else(|| DOCKER_HUB.to_string());
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Name without tag or digest, as docker prints it: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker treats the first component as a registry when it looks like a host.
fn split_registry(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            let reg = if first == "index.docker.io" || first == "registry-1.docker.io" {
                DOCKER_HUB.to_string()
            } else {
                first.to_string()
            };
            (Some(reg), rest)
        }
        _ => (None, name),
    }
}

fn check_tag(t: &str) -> std::result::Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

fn check_registry(r: &str) -> std::result::Result<(), String> {
    let (_host, port) = if let Some(stripped) = r.strip_prefix('[') {
        let (h, rest) = stripped
            .split_once(']')
            .ok_or("registry has an unclosed '['")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry host [{h}] is not an IPv6 address"));
        }
        match rest {
            "" => (h, None),
            _ => match rest.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("registry {r:?} has text after ']'")),
            },
        }
    } else {
        let (h, p) = match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        };
        // DNS labels: letters, digits and inner hyphens, dot-separated.
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.is_empty() || h.len() > 253 || !h.split('.').all(label_ok) {
            return Err(format!("registry host {h:?} is not a valid host name"));
        }
        (h, p)
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            return Err(format!(
                "registry port {p:?} is not a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

fn check_component(c: &str) -> std::result::Result<(), String> {
    if c.is_empty() {
        return Err("repository path has an empty component".to_string());
    }
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name component {c:?} must be lowercase"));
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let seps_ok = b.iter().all(|&x| alnum(x) || b"._-".contains(&x));
    let ends_ok = alnum(b[0]) && alnum(b[b.len() - 1]);
    // Separators: one '.', one or two '_', or any run of '-'.
    let runs_ok = c.split(|ch: char| ch.is_ascii_alphanumeric()).all(|sep| {
        sep.is_empty() || sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')
    });
    if seps_ok && ends_ok && runs_ok {
        Ok(())
    } else {
        Err(format!(
            "repository name component {c:?} has invalid characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_defaults() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("index.docker.io/user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
    }

    #[test]
    fn host_port_tag_and_digest() {
        let r = Reference::parse("host:5000/a/b:tag").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("host:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("tag"));
        let r = Reference::parse(&format!("localhost/repo@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse(&format!("127.0.0.1:5000/repo:t@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse("[::1]:5000/x/y").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn sha512_digests_and_unsupported_algorithms() {
        let d = format!("sha512:{}", "ab".repeat(64));
        let r = Reference::parse(&format!("repo@{d}")).unwrap();
        assert_eq!(r.manifest_ref(), d);
        for algo in ["md5:00", "sha384:00"] {
            let e = Reference::parse(&format!("repo@{algo}")).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported, "{algo}");
            assert!(
                e.message.contains("only sha256 and sha512"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn rejects_malformed_naming_the_part() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("a//b", "empty component"),
            ("repo:", "tag"),
            ("repo:-x", "tag"),
            ("repo@sha256:zz", "digest"),
            ("host:99999/a", "port"),
            ("[::1]x:1234/a", "after ']'"),
            ("[1.2.3.4]:5/a", "IPv6"),
            ("-bad.host:5000/a", "host name"),
            ("a..b:5000/a", "host name"),
            ("a/b_-c", "invalid characters"),
            ("repo name", "whitespace"),
        ];
        for (input, want) in cases {
            let e = Reference::parse(input).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReference, "{input}");
            assert!(e.message.contains(want), "{input}: {}", e.message);
        }
    }
}

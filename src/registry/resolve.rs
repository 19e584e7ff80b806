//! Name resolution for every HTTP client: the `hosts` option first (like
//! curl's --resolve or docker's --add-host), then the system resolver, and
//! link-local and metadata addresses dropped from whatever either returns.
//!
//! The rule: a host *name* never connects to a link-local or metadata
//! address, whoever chose the name (the user's registry, a mirror, a token
//! realm, a redirect or a foreign-layer URL): we cannot tell a name the
//! user typed from the same name sent back by a hostile registry, and a
//! rebinding DNS server could change the answer between any check and the
//! connect, so the check sits in the lookup the connect uses. An address
//! the user types as a literal IP never comes here; registry-sent literal
//! IPs are refused before any request (`guard::refused`). A request sent
//! through a proxy never comes here for its target: the proxy resolves it.

use super::guard;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// A `hosts` value: one address or several.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged, expecting = "an IP address or a list of them")]
pub enum HostsValue {
    One(String),
    Many(Vec<String>),
}

/// Host names pinned to addresses, lower case, without a trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Hosts(BTreeMap<String, Vec<IpAddr>>);

impl Hosts {
    /// Validate the option: names as names, values as IP addresses.
    pub fn new(raw: BTreeMap<String, HostsValue>) -> Result<Hosts> {
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let bad = |why: &str| Error::invalid(format!("options: hosts.{name}: {why}"));
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let name_ok = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !name_ok || key.parse::<IpAddr>().is_ok() {
                return Err(bad("the key must be a host name (no port, not an address)"));
            }
            let texts = match value {
                HostsValue::One(s) => vec![s],
                HostsValue::Many(v) => v,
            };
            if texts.is_empty() {
                return Err(bad("give at least one address"));
            }
            let mut ips = Vec::new();
            for t in &texts {
                let bare = t.trim().trim_start_matches('[').trim_end_matches(']');
                let ip = bare
                    .parse::<IpAddr>()
                    .map_err(|_| bad(&format!("{t:?} is not an IP address")))?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(bad(&format!("{t:?} is not a host's address")));
                }
                ips.push(ip);
            }
            out.insert(key, ips);
        }
        Ok(Hosts(out))
    }

    fn get(&self, name: &str) -> Option<&Vec<IpAddr>> {
        self.0.get(&name.trim_end_matches('.').to_ascii_lowercase())
    }
}

/// The lookup failed because every address it found is forbidden. The
/// HTTP layer finds this in the error chain and fails the request for
/// good (`http::network`).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The resolver installed on every client (`http::builder`).
pub struct Guarded {
    hosts: Hosts,
}

impl Guarded {
    pub fn new(hosts: Hosts) -> Arc<Guarded> {
        Arc::new(Guarded { hosts })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let pinned = self.hosts.get(&name).cloned();
        Box::pin(async move {
            if guard::is_metadata_name(&name) {
                return Err(
                    Box::new(Refused(format!("{name} is a cloud metadata service"))) as BoxError,
                );
            }
            let found: Vec<IpAddr> = match pinned {
                Some(ips) => ips,
                None => lookup(&name).await?,
            };
            let allowed = allowed(&name, found).map_err(|r| Box::new(r) as BoxError)?;
            if allowed.is_empty() {
                return Err(format!("cannot resolve {name}: no addresses").into());
            }
            let addrs = allowed.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The system resolver, off the async threads (getaddrinfo blocks).
async fn lookup(name: &str) -> std::result::Result<Vec<IpAddr>, BoxError> {
    let query = name.to_string();
    let found = tokio::task::spawn_blocking(move || (query.as_str(), 0).to_socket_addrs())
        .await
        .map_err(|e| format!("cannot resolve {name}: {e}"))?
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    Ok(found.map(|a| a.ip()).collect())
}

/// `found` without forbidden addresses; Refused when nothing is left.
fn allowed(name: &str, found: Vec<IpAddr>) -> std::result::Result<Vec<IpAddr>, Refused> {
    let (bad, good): (Vec<IpAddr>, Vec<IpAddr>) =
        found.into_iter().partition(|ip| guard::forbidden_ip(*ip));
    if !bad.is_empty() {
        log::debug!("{name}: link-local or metadata addresses dropped: {bad:?}");
    }
    if good.is_empty() && !bad.is_empty() {
        let shown: Vec<String> = bad.iter().map(IpAddr::to_string).collect();
        return Err(Refused(format!(
            "{name} resolves only to link-local or metadata addresses ({})",
            shown.join(", ")
        )));
    }
    Ok(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(pairs: &[(&str, &str)]) -> Result<Hosts> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), HostsValue::One(v.to_string())))
            .collect();
        Hosts::new(raw)
    }

    #[test]
    fn hosts_entries_are_checked() {
        let h = hosts(&[("Registry.Test.", "127.0.0.1"), ("v6.test", "[::1]")]).unwrap();
        assert_eq!(
            h.get("registry.test"),
            Some(&vec![IpAddr::from([127, 0, 0, 1])])
        );
        assert!(h.get("v6.test").is_some());
        for (k, v) in [
            ("r.test", "not-an-ip"),
            ("r.test", "10.0.0.1:80"),
            ("r.test:5000", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.2"),
            ("", "127.0.0.1"),
            ("a b", "127.0.0.1"),
        ] {
            let e = hosts(&[(k, v)]).unwrap_err();
            assert!(e.message.contains("options: hosts."), "{k} {v}: {e}");
        }
        let empty = [("r.test".to_string(), HostsValue::Many(vec![]))];
        assert!(Hosts::new(empty.into_iter().collect()).is_err());
    }

    #[test]
    fn forbidden_addresses_are_dropped_and_none_left_is_refused() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mixed = vec![ip("169.254.169.254"), ip("127.0.0.1"), ip("fe80::1")];
        assert_eq!(allowed("m.test", mixed).unwrap(), vec![ip("127.0.0.1")]);
        for only in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"] {
            let e = allowed("evil.test", vec![ip(only)]).unwrap_err();
            assert!(e.0.contains("evil.test resolves only to"), "{only}: {e}");
        }
    }

    #[test]
    fn the_resolver_refuses_pinned_forbidden_and_metadata_names_without_dns() {
        use reqwest::dns::Resolve;
        let pins = hosts(&[
            ("evil.test", "::ffff:169.254.169.254"),
            ("ok.test", "127.0.0.1"),
        ]);
        let r = Guarded::new(pins.unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let run = |n: &str| rt.block_on(r.resolve(n.parse().unwrap()));
        let e = run("EVIL.test.").err().unwrap();
        assert!(e.downcast_ref::<Refused>().is_some(), "{e}");
        let e = run("metadata.google.internal").err().unwrap();
        assert!(e.to_string().contains("metadata service"), "{e}");
        let ok: Vec<SocketAddr> = run("ok.test").unwrap().collect();
        assert_eq!(ok, vec![SocketAddr::from(([127, 0, 0, 1], 0))]);
    }
}

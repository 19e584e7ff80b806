//! HTTP proxies: from the `proxy` option, else from the usual environment
//! variables, with a no-proxy list. vicpull decides per URL itself (reqwest's
//! own environment handling is switched off), so the decision is part of the
//! client cache key and the same rules can name the proxy in an error.
//!
//! The option replaces the environment whole, as Docker's daemon.json
//! `proxies` does: `{"http": URL, "https": URL, "no_proxy": "a,.b,10.0.0.0/8"}`
//! (a scheme left out goes direct), `false` for no proxy at all, `true` or
//! absent for the environment. Loopback (`localhost`, 127.0.0.0/8, ::1)
//! always goes direct, as in Go's net/http and so in docker, containerd and
//! skopeo: a registry on the host keeps working behind a corporate proxy.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// The `proxy` option as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "true, false or an object with http, https and no_proxy"
)]
pub enum ProxyOption {
    /// true: the environment; false: no proxy, whatever it says.
    Enabled(bool),
    Set(ProxyValues),
}

impl Default for ProxyOption {
    fn default() -> Self {
        ProxyOption::Enabled(true)
    }
}

/// Proxy URLs per scheme of the request, and the hosts that go direct.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProxyValues {
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub https: Option<String>,
    #[serde(default)]
    pub no_proxy: Option<String>,
}

// The URLs may carry a password.
impl std::fmt::Debug for ProxyValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |v: &Option<String>| v.as_deref().map(redact);
        f.debug_struct("ProxyValues")
            .field("http", &r(&self.http))
            .field("https", &r(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// One proxy, validated. Equality and hashing cover the credentials, so
/// two pulls with different proxy passwords never share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl(reqwest::Url);

impl ProxyUrl {
    /// Accept `[http|https://][user:pass@]host[:port][/]`; http when no
    /// scheme is given (curl and Go do the same).
    pub fn parse(raw: &str) -> std::result::Result<ProxyUrl, String> {
        let raw = raw.trim();
        let full = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let u = reqwest::Url::parse(&full).map_err(|e| format!("not a URL ({e})"))?;
        match u.scheme() {
            "http" | "https" => {}
            s if s.starts_with("socks") => {
                return Err(format!(
                    "{s} proxies are not supported (http and https are)"
                ))
            }
            s => return Err(format!("scheme {s} is not http or https")),
        }
        if u.host_str().map_or(true, str::is_empty) {
            return Err("no host".into());
        }
        if !matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some() {
            return Err("a proxy URL has no path, query or fragment".into());
        }
        if let Some(p) = u.password() {
            crate::secrets::remember_basic(&percent_decode(u.username()), &percent_decode(p));
        }
        Ok(ProxyUrl(u))
    }

    /// `scheme://host:port`, never the credentials: the only form that
    /// goes into logs and errors.
    pub fn shown(&self) -> String {
        let port = self.0.port_or_known_default().unwrap_or(0);
        format!(
            "{}://{}:{port}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )
    }

    fn socket_addr(&self) -> Option<SocketAddr> {
        let host = self
            .0
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        Some(SocketAddr::new(
            host.parse().ok()?,
            self.0.port_or_known_default()?,
        ))
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// `%XX` escapes of a URL's user or password decoded, as they go into
/// Proxy-Authorization.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `raw` with anything before an `@` in its authority hidden, for errors
/// about a value we could not parse.
fn redact(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), raw),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}"),
        None => raw.to_string(),
    }
}

/// One no-proxy entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Bypass {
    /// `*`
    All,
    /// `example.com` or `.example.com`: the domain and every name under
    /// it; with `:port`, only that port.
    Domain(String, Option<u16>),
    /// An address, or a network in CIDR form.
    Net(IpAddr, u8),
}

impl Bypass {
    fn parse(entry: &str) -> std::result::Result<Bypass, String> {
        if entry == "*" {
            return Ok(Bypass::All);
        }
        if let Some((ip, bits)) = entry.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{entry:?} is not a network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return match bits.parse::<u8>() {
                Ok(b) if b <= max => Ok(Bypass::Net(ip, b)),
                _ => Err(format!("{entry:?} has a bad prefix length")),
            };
        }
        let bare = entry.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Bypass::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
        }
        // `host:port` or `[v6]:port`.
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => {
                let p = p.parse().map_err(|_| format!("{entry:?} has a bad port"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), Some(p))
            }
            _ => (entry, None),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Bypass::Domain(ip.to_string(), port));
        }
        // `*.example.com` as Go (so docker and skopeo) reads it: the domain.
        let host = host.strip_prefix("*.").unwrap_or(host);
        let name = host.trim_start_matches('.').trim_end_matches('.');
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("{entry:?} is not a host name"));
        }
        Ok(Bypass::Domain(name.to_ascii_lowercase(), port))
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        match self {
            Bypass::All => true,
            Bypass::Domain(d, p) => {
                let under = host.len() > d.len()
                    && host.ends_with(d.as_str())
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.';
                (host == d || under) && p.map_or(true, |p| p == port)
            }
            Bypass::Net(net, bits) => ip.is_some_and(|ip| in_net(ip, *net, *bits)),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The proxies a pull uses, after the option or environment is read.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Proxies {
    http: Option<ProxyUrl>,
    https: Option<ProxyUrl>,
    bypass: Vec<Bypass>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.bypass)
            .finish()
    }
}

impl Proxies {
    /// Validate the option, or read the environment when it says so.
    pub fn from_option(o: &ProxyOption) -> Result<Proxies> {
        match o {
            ProxyOption::Enabled(false) => Ok(Proxies::default()),
            ProxyOption::Enabled(true) => Proxies::from_env(|k| std::env::var(k).ok()),
            ProxyOption::Set(v) => {
                let url = |v: &Option<String>, key: &str| match v.as_deref() {
                    None | Some("") => Ok(None),
                    Some(raw) => ProxyUrl::parse(raw).map(Some).map_err(|why| {
                        Error::invalid(format!("options: proxy.{key}: {}: {why}", redact(raw)))
                    }),
                };
                Ok(Proxies {
                    http: url(&v.http, "http")?,
                    https: url(&v.https, "https")?,
                    bypass: bypass_list(v.no_proxy.as_deref().unwrap_or(""))
                        .map_err(|why| Error::invalid(format!("options: proxy.no_proxy: {why}")))?,
                })
            }
        }
    }

    /// HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (the fallback for both) and
    /// NO_PROXY, upper case first, then lower case, as Go reads them. Under
    /// CGI (REQUEST_METHOD set) HTTP_PROXY may come from a request header,
    /// so only http_proxy counts there.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Proxies> {
        let first = |names: &[&'static str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
        };
        let cgi = get("REQUEST_METHOD").is_some();
        let http_names: &[&'static str] = if cgi {
            &["http_proxy"]
        } else {
            &["HTTP_PROXY", "http_proxy"]
        };
        let all = first(&["ALL_PROXY", "all_proxy"]);
        let parse = |found: Option<(&'static str, String)>| match found {
            None => Ok(None),
            Some((name, raw)) => ProxyUrl::parse(&raw).map(Some).map_err(|why| {
                Error::invalid(format!("environment {name}={}: {why}", redact(&raw)))
            }),
        };
        let no = first(&["NO_PROXY", "no_proxy"]);
        let bypass = match &no {
            Some((name, list)) => bypass_list(list)
                .map_err(|why| Error::invalid(format!("environment {name}: {why}")))?,
            None => Vec::new(),
        };
        Ok(Proxies {
            http: parse(first(http_names).or_else(|| all.clone()))?,
            https: parse(first(&["HTTPS_PROXY", "https_proxy"]).or(all))?,
            bypass,
        })
    }

    /// The proxy a request to `url` goes through, or None for direct.
    pub fn for_url(&self, url: &reqwest::Url) -> Option<&ProxyUrl> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref()?,
            "https" => self.https.as_ref()?,
            _ => return None,
        };
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        if host == "localhost" || ip.is_some_and(is_loopback) {
            return None;
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let direct = self.bypass.iter().any(|b| b.matches(&host, ip, port));
        (!direct).then_some(proxy)
    }

    /// Switch off reqwest's own reading of the environment and route each
    /// request as `for_url` says.
    pub fn apply(&self, b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let b = b.no_proxy();
        if self.http.is_none() && self.https.is_none() {
            return b;
        }
        let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
        for p in [&self.http, &self.https].into_iter().flatten() {
            if !known.contains(p) {
                known.push(p.clone());
            }
        }
        // TODO: names a proxy resolves for us skip the link-local check (`resolve.rs`).
        let me = self.clone();
        // reqwest takes Proxy-Authorization from the URL's user:pass.
        b.proxy(reqwest::Proxy::custom(move |u| {
            me.for_url(u).map(|p| p.0.clone())
        }))
    }
}

fn bypass_list(list: &str) -> std::result::Result<Vec<Bypass>, String> {
    let entries = list.split(',').map(str::trim).filter(|e| !e.is_empty());
    entries.map(Bypass::parse).collect()
}

/// Every proxy a client was built with in this process.
static KNOWN: Mutex<Vec<ProxyUrl>> = Mutex::new(Vec::new());

/// The proxy a failed connection was made to, if it was one. reqwest's
/// error says neither which hop failed nor where it was going; its
/// connect error's debug form carries the address tried, so a known
/// proxy's address there names it. A proxy given by name is not found.
pub fn failed_proxy(e: &reqwest::Error) -> Option<String> {
    if !e.is_connect() {
        return None;
    }
    let mut text = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&format!("{s:?}"));
        src = s.source();
    }
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let hit = known.iter().find(|p| {
        p.socket_addr()
            .is_some_and(|a| text.contains(&format!("{a:?}")))
    });
    hit.map(ProxyUrl::shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Proxies> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Proxies::from_env(|k| m.get(k).cloned())
    }

    fn shown(p: &Proxies, u: &str) -> Option<String> {
        p.for_url(&url(u)).map(ProxyUrl::shown)
    }

    #[test]
    fn environment_upper_then_lower_all_as_fallback_and_no_proxy() {
        let p = env(&[
            ("HTTP_PROXY", "up:1"),
            ("http_proxy", "http://low:2"),
            ("all_proxy", "https://all:3"),
            (
                "no_proxy",
                "skip.test, .corp, 10.0.0.0/8, ::1, reg.test:5000, *.star.test",
            ),
        ])
        .unwrap();
        assert_eq!(
            shown(&p, "http://r.test/v2/").as_deref(),
            Some("http://up:1")
        );
        assert_eq!(
            shown(&p, "https://r.test/").as_deref(),
            Some("https://all:3")
        );
        for direct in [
            "http://skip.test/",
            "http://a.skip.test/",
            "https://x.corp/",
            "https://corp/",
            "http://10.1.2.3:5000/",
            "http://[::1]:80/",
            "http://reg.test:5000/",
            "http://registry.star.test/",
        ] {
            assert_eq!(shown(&p, direct), None, "{direct}");
        }
        for proxied in [
            "http://noskip.test/",
            "http://reg.test:5001/",
            "http://11.0.0.1/",
        ] {
            assert!(shown(&p, proxied).is_some(), "{proxied}");
        }
        // Loopback goes direct, listed or not (Go's rule).
        for direct in [
            "http://127.0.0.1:5000/",
            "http://127.8.9.10/",
            "http://localhost:5000/",
            "http://[::ffff:127.0.0.1]:5000/",
        ] {
            assert_eq!(shown(&p, direct), None, "{direct}");
        }
        let cgi = env(&[("REQUEST_METHOD", "GET"), ("HTTP_PROXY", "evil:1")]).unwrap();
        assert_eq!(shown(&cgi, "http://r.test/"), None);
        assert_eq!(env(&[]).unwrap(), Proxies::default());
    }

    #[test]
    fn option_replaces_the_environment_and_bad_values_hide_credentials() {
        let set = |http: &str, no: &str| {
            Proxies::from_option(&ProxyOption::Set(ProxyValues {
                http: Some(http.into()),
                https: None,
                no_proxy: Some(no.into()),
            }))
        };
        let p = set("http://u:pw@127.0.0.1:3128", "*.nope").unwrap();
        assert_eq!(
            shown(&p, "http://r.test/").as_deref(),
            Some("http://127.0.0.1:3128")
        );
        assert_eq!(shown(&p, "https://r.test/"), None, "https was not given");
        assert!(!format!("{p:?}").contains("pw"));
        for bad in [
            "socks5://u:pw@h:1080",
            "ftp://u:pw@h",
            "http://u:pw@h:1/path",
            "http://u:pw@h:99999",
        ] {
            let e = set(bad, "").unwrap_err();
            assert!(e.message.contains("proxy.http"), "{bad}: {e}");
            assert!(!e.message.contains("pw"), "{bad}: {e}");
        }
        assert!(set("socks5://h:1", "")
            .unwrap_err()
            .message
            .contains("not supported"));
        for bad in ["10.0.0.0/33", "a b", "h:port"] {
            assert!(set("h:1", bad).is_err(), "{bad}");
        }
        let off = Proxies::from_option(&ProxyOption::Enabled(false)).unwrap();
        assert_eq!(off, Proxies::default());
    }
}

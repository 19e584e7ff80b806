//! What the pull options say about reaching registries: mirrors, TLS,
//! proxies, pinned host addresses, Docker credentials and rate-limit
//! patience, checked once up front.

use super::proxy::{Proxies, ProxyOption};
use super::resolve::{Hosts, HostsValue};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Settings for one registry host (`host[:port]`, `docker.io` for Hub).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostOptions {
    /// Tried in order before the registry itself: `https://host[:port]`,
    /// `http://...`, or a bare `host[:port]` (HTTPS).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// TLS without certificate verification. Still encrypted, never plain.
    #[serde(default)]
    pub insecure: bool,
    /// Extra PEM roots trusted for this host.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its key, for mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// `docker_config`: a path to a config.json, or false to read none.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DockerConfigOption {
    Path(PathBuf),
    Enabled(bool),
}

impl Default for DockerConfigOption {
    fn default() -> Self {
        DockerConfigOption::Enabled(true)
    }
}

/// Longest Retry-After we wait out by default; a longer one fails at once.
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Keyed by normalised host (`docker.io` for every Hub spelling).
    pub registries: BTreeMap<String, HostOptions>,
    pub ca_file: Option<PathBuf>,
    pub certs_dir: Option<PathBuf>,
    pub docker_config: DockerConfigOption,
    pub credential_helpers_dir: Option<PathBuf>,
    pub max_retry_wait: Duration,
    /// Fetch foreign layers from the URLs their descriptors list.
    pub allow_foreign_layers: bool,
    /// Requests of one manifest, config or token before giving up
    /// (max_attempts; blob downloads count theirs in the transfer).
    pub max_attempts: u32,
    /// From the `proxy` option, or the environment as it was when the
    /// options were checked.
    pub proxies: Proxies,
    /// Names pinned to addresses before DNS (`hosts` option).
    pub hosts: Hosts,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            registries: BTreeMap::new(),
            ca_file: None,
            certs_dir: None,
            docker_config: DockerConfigOption::default(),
            credential_helpers_dir: None,
            max_retry_wait: DEFAULT_MAX_RETRY_WAIT,
            allow_foreign_layers: false,
            max_attempts: 5,
            proxies: Proxies::default(),
            hosts: Hosts::default(),
        }
    }
}

/// The options about how requests travel: proxies and pinned addresses.
#[derive(Clone, Debug, Default)]
pub struct Network {
    pub proxy: ProxyOption,
    pub hosts: BTreeMap<String, HostsValue>,
}

/// `docker.io`, `index.docker.io` and `registry-1.docker.io` are one registry.
pub fn normalise_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('/').to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => h,
    }
}

impl Settings {
    /// Validate and normalise what the options gave.
    #[allow(clippy::too_many_arguments)] // one per option key, named at the call
    pub fn new(
        registries: BTreeMap<String, HostOptions>,
        ca_file: Option<PathBuf>,
        certs_dir: Option<PathBuf>,
        docker_config: DockerConfigOption,
        credential_helpers_dir: Option<PathBuf>,
        max_retry_wait_secs: u64,
        allow_foreign_layers: bool,
        network: Network,
    ) -> Result<Settings> {
        let mut by_host = BTreeMap::new();
        for (host, o) in registries {
            if o.client_cert.is_some() != o.client_key.is_some() {
                return Err(Error::invalid(format!(
                    "options: registries.{host}: client_cert and client_key go together"
                )));
            }
            for m in &o.mirrors {
                super::mirror_url(m).map_err(|why| {
                    Error::invalid(format!("options: registries.{host}.mirrors: {m:?}: {why}"))
                })?;
            }
            by_host.insert(normalise_host(&host), o);
        }
        if max_retry_wait_secs > 3600 {
            return Err(Error::invalid(
                "options: max_retry_wait_secs must be 0 to 3600",
            ));
        }
        Ok(Settings {
            registries: by_host,
            ca_file,
            certs_dir,
            docker_config,
            credential_helpers_dir,
            max_retry_wait: Duration::from_secs(max_retry_wait_secs),
            allow_foreign_layers,
            max_attempts: 5,
            proxies: Proxies::from_option(&network.proxy)?,
            hosts: Hosts::new(network.hosts)?,
        })
    }

    pub fn host(&self, host: &str) -> Option<&HostOptions> {
        self.registries.get(&normalise_host(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(mirrors: &[&str]) -> HostOptions {
        HostOptions {
            mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
            ..HostOptions::default()
        }
    }

    fn settings(registries: BTreeMap<String, HostOptions>, wait: u64) -> Result<Settings> {
        let dc = DockerConfigOption::default();
        Settings::new(
            registries,
            None,
            None,
            dc,
            None,
            wait,
            false,
            Network::default(),
        )
    }

    #[test]
    fn hub_spellings_share_one_entry_and_mirrors_are_checked() {
        let mut r = BTreeMap::new();
        r.insert("index.docker.io".to_string(), host(&["mirror.local:5000"]));
        let s = settings(r, 60).unwrap();
        assert!(s.host("docker.io").is_some() && s.host("registry-1.docker.io").is_some());

        for bad in [
            "ftp://m",
            "http://169.254.169.254",
            "https://u:p@m",
            "http://m/?x=1",
        ] {
            let mut r = BTreeMap::new();
            r.insert("docker.io".to_string(), host(&[bad]));
            let e = settings(r, 60).unwrap_err();
            assert!(
                e.message.contains("registries.docker.io.mirrors"),
                "{bad}: {e}"
            );
        }
        assert!(settings(BTreeMap::new(), 3601).is_err());
        let mut r = BTreeMap::new();
        let half = HostOptions {
            client_key: Some("k.pem".into()),
            ..HostOptions::default()
        };
        r.insert("h:1".to_string(), half);
        assert!(settings(r, 60).is_err());
    }
}

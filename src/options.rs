//! Pull options as the C caller writes them in JSON. Unknown keys and wrong
//! types are errors, so a typo never silently falls back to a default.

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::proxy::ProxyOption;
use crate::registry::resolve::HostsValue;
use crate::registry::settings::{DockerConfigOption, HostOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `plain_http`: `true` for every registry, or a list of `host[:port]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PlainHttp {
    All(bool),
    Hosts(Vec<String>),
}

impl Default for PlainHttp {
    fn default() -> Self {
        PlainHttp::All(false)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullOptions {
    pub reference: String,
    pub store: PathBuf,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub plain_http: PlainHttp,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token used as is (no challenge round trip).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_concurrency")]
    pub max_concurrent_downloads: u32,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Download slots go to higher priorities first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// A transfer slower than this many bytes/s on average over
    /// `low_speed_time_secs` has stalled: its connection is replaced.
    #[serde(default = "default_low_speed")]
    pub low_speed_limit: u64,
    #[serde(default = "default_low_speed_time")]
    pub low_speed_time_secs: u64,
    /// Kept partial downloads older than this are removed when a store is
    /// first used in this process (default 7 days).
    #[serde(default = "default_partial_age")]
    pub partial_max_age_secs: u64,
    /// Beyond this many bytes of partials, the oldest go (default 8 GiB).
    #[serde(default = "default_partial_bytes")]
    pub partial_max_bytes: u64,
    /// Gunzip each layer to check its diffID against the config (default on).
    #[serde(default = "default_true")]
    pub verify_diff_ids: bool,
    /// Inflating a layer past this many bytes fails the pull (default 64
    /// GiB). Only layers this pull inflates (verify_diff_ids) are held to it.
    #[serde(default = "default_max_layer_bytes")]
    pub max_layer_uncompressed_bytes: u64,
    /// Past 256 MiB inflated, a layer inflating to more than this many bytes
    /// per compressed byte fails the pull (default: no ratio cap, see
    /// `InflateLimits::default`).
    #[serde(default)]
    pub max_compression_ratio: Option<u64>,
    /// Windows host build (`10.0.20348.1234`) to match index entries against.
    #[serde(default)]
    pub os_version: Option<String>,
    /// Per registry (`host[:port]`, `docker.io`): mirrors and TLS.
    #[serde(default)]
    pub registries: BTreeMap<String, HostOptions>,
    /// Extra PEM CA roots trusted for every registry.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A certs.d-style directory: `<dir>/<host:port>/{*.crt,*.cert,*.key}`.
    #[serde(default)]
    pub certs_dir: Option<PathBuf>,
    /// A Docker config.json path, or false; default `$DOCKER_CONFIG` or
    /// `~/.docker/config.json`.
    #[serde(default)]
    pub docker_config: DockerConfigOption,
    /// Searched for `docker-credential-*` helpers before PATH.
    #[serde(default)]
    pub credential_helpers_dir: Option<PathBuf>,
    /// Longest Retry-After waited out (default 60); longer fails at once.
    #[serde(default = "default_max_wait")]
    pub max_retry_wait_secs: u64,
    /// Fetch foreign (non-distributable) layers from their own URLs.
    #[serde(default)]
    pub allow_foreign_layers: bool,
    /// `{"http": URL, "https": URL, "no_proxy": "a,.b,10.0.0.0/8"}`, or
    /// false; absent or true: HTTP(S)_PROXY, ALL_PROXY and NO_PROXY.
    #[serde(default)]
    pub proxy: ProxyOption,
    /// Host names pinned to IP addresses, consulted before DNS.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostsValue>,
}

fn default_max_wait() -> u64 {
    crate::registry::settings::DEFAULT_MAX_RETRY_WAIT.as_secs()
}

fn default_max_layer_bytes() -> u64 {
    crate::verify::InflateLimits::default().max_bytes
}

/// Bounds on the inflate limits: below them real layers fail (1 MiB is
/// less than most base layers), above them the cap means nothing (1 PiB;
/// no compressor beats 1000000:1 on real input).
const LAYER_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 50);
const RATIO_RANGE: std::ops::RangeInclusive<u64> = 10..=1_000_000;

fn default_concurrency() -> u32 {
    3
}
fn default_attempts() -> u32 {
    5
}
fn default_true() -> bool {
    true
}
fn default_low_speed() -> u64 {
    1024
}
fn default_low_speed_time() -> u64 {
    30
}
fn default_partial_age() -> u64 {
    7 * 24 * 3600
}
fn default_partial_bytes() -> u64 {
    8 << 30
}

/// Options after validation, ready for the core.
#[derive(Clone, Debug)]
pub struct Checked {
    pub reference: Reference,
    pub store: PathBuf,
    pub platform: Platform,
    /// The caller named a platform (rather than taking the host's).
    pub platform_explicit: bool,
    pub plain_http: PlainHttp,
    pub credentials: Credentials,
    pub max_concurrent_downloads: usize,
    pub max_attempts: u32,
    pub verify_diff_ids: bool,
    /// How far a layer may inflate while its diffID is computed.
    pub inflate_limits: crate::verify::InflateLimits,
    pub priority: i32,
    pub low_speed: crate::transfer::LowSpeed,
    /// Set by the caller (not JSON): offer each layer to a host hook.
    pub commit_hook: bool,
    pub partial_max_age: std::time::Duration,
    pub partial_max_bytes: u64,
    /// Mirrors, TLS, Docker credentials, rate-limit patience.
    pub registry_settings: crate::registry::Settings,
}

#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Token(String),
}

// Secrets never reach logs or error text.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

impl PullOptions {
    pub fn from_json(json: &str) -> Result<PullOptions> {
        if !json.trim_start().starts_with('{') {
            return Err(Error::invalid("options: must be a JSON object"));
        }
        // The path names the offending key ("max_attempts: invalid type").
        let de = &mut serde_json::Deserializer::from_str(json);
        let opts: PullOptions = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                Error::invalid(format!("options: {inner}"))
            } else {
                Error::invalid(format!("options: {path}: {inner}"))
            }
        })?;
        // Nothing but white space may follow the object.
        de.end()
            .map_err(|e| Error::invalid(format!("options: after the object: {e}")))?;
        Ok(opts)
    }

    pub fn check(self) -> Result<Checked> {
        let reference = Reference::parse(&self.reference)?;
        if self.store.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(Error::invalid("options: store contains a NUL character"));
        }
        if self.store.as_os_str().is_empty() {
            return Err(Error::invalid("options: store must name a directory"));
        }
        let mut platform = match &self.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        platform.os_version = self.os_version.clone();
        let mut registry_settings = crate::registry::Settings::new(
            self.registries,
            self.ca_file,
            self.certs_dir,
            self.docker_config,
            self.credential_helpers_dir,
            self.max_retry_wait_secs,
            self.allow_foreign_layers,
            crate::registry::settings::Network {
                proxy: self.proxy,
                hosts: self.hosts,
            },
        )?;
        if !(1..=64).contains(&self.max_concurrent_downloads) {
            return Err(Error::invalid(
                "options: max_concurrent_downloads must be 1 to 64",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(Error::invalid("options: max_attempts must be 1 to 100"));
        }
        registry_settings.max_attempts = self.max_attempts;
        let credentials = match (self.username, self.password, self.token) {
            (None, None, None) => Credentials::Anonymous,
            (None, None, Some(t)) => Credentials::Token(t),
            (Some(username), Some(password), None) => Credentials::Basic { username, password },
            (_, _, Some(_)) => {
                return Err(Error::invalid(
                    "options: give token or username/password, not both",
                ))
            }
            _ => return Err(Error::invalid("options: username and password go together")),
        };
        if !(1..=3600).contains(&self.low_speed_time_secs) {
            return Err(Error::invalid(
                "options: low_speed_time_secs must be 1 to 3600",
            ));
        }
        if !LAYER_BYTES_RANGE.contains(&self.max_layer_uncompressed_bytes) {
            return Err(Error::invalid(
                "options: max_layer_uncompressed_bytes must be 1048576 (1 MiB) to 2^50 (1 PiB)",
            ));
        }
        if self
            .max_compression_ratio
            .is_some_and(|r| !RATIO_RANGE.contains(&r))
        {
            return Err(Error::invalid(
                "options: max_compression_ratio must be 10 to 1000000",
            ));
        }
        let inflate_limits = crate::verify::InflateLimits {
            max_bytes: self.max_layer_uncompressed_bytes,
            max_ratio: self
                .max_compression_ratio
                .unwrap_or(crate::verify::InflateLimits::default().max_ratio),
        };
        let low_speed = crate::transfer::LowSpeed {
            bytes_per_sec: self.low_speed_limit,
            window: std::time::Duration::from_secs(self.low_speed_time_secs),
        };
        Ok(Checked {
            reference,
            store: self.store,
            platform_explicit: self.platform.is_some(),
            platform,
            plain_http: self.plain_http,
            credentials,
            max_concurrent_downloads: self.max_concurrent_downloads as usize,
            max_attempts: self.max_attempts,
            verify_diff_ids: self.verify_diff_ids,
            inflate_limits,
            priority: self.priority,
            low_speed,
            commit_hook: false,
            partial_max_age: std::time::Duration::from_secs(self.partial_max_age_secs),
            partial_max_bytes: self.partial_max_bytes,
            registry_settings,
        })
    }
}

impl Checked {
    pub fn uses_plain_http(&self, registry: &str) -> bool {
        match &self.plain_http {
            PlainHttp::All(b) => *b,
            PlainHttp::Hosts(h) => h.iter().any(|x| x == registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_types_are_errors() {
        for not_object in ["[]", "\"x\"", "1", "null"] {
            let e = PullOptions::from_json(not_object).unwrap_err();
            assert_eq!(e.message, "options: must be a JSON object", "{not_object}");
        }
        let e = PullOptions::from_json(r#"{"reference":"a","store":"/s","bogus":1}"#);
        assert!(e.unwrap_err().message.contains("unknown field `bogus`"));
        let e = PullOptions::from_json(r#"{"reference":"a","store":"/s","max_attempts":"x"}"#);
        assert!(e.unwrap_err().message.contains("max_attempts"));
        let o = PullOptions::from_json(r#"{"reference":"a","store":"/s","plain_http":["h:1"]}"#)
            .unwrap()
            .check()
            .unwrap();
        assert!(o.uses_plain_http("h:1") && !o.uses_plain_http("h:2"));
    }

    #[test]
    fn trailing_garbage_and_nul_paths_are_refused() {
        let e = PullOptions::from_json(r#"{"reference":"a","store":"/s"} trailing"#);
        assert!(e.unwrap_err().message.contains("after the object"));
        let o = PullOptions::from_json("{\"reference\":\"a\",\"store\":\"/s\\u0000x\"}");
        assert!(o.unwrap().check().unwrap_err().message.contains("NUL"));
    }

    #[test]
    fn inflate_limits_default_and_range() {
        let base = r#"{"reference":"a","store":"/s""#;
        let o = PullOptions::from_json(&format!("{base}}}"))
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(o.inflate_limits, crate::verify::InflateLimits::default());
        for (key, value, ok) in [
            ("max_layer_uncompressed_bytes", "0", false),
            ("max_layer_uncompressed_bytes", "1048575", false),
            ("max_layer_uncompressed_bytes", "1048576", true),
            (
                "max_layer_uncompressed_bytes",
                "18446744073709551615",
                false,
            ),
            ("max_compression_ratio", "0", false),
            ("max_compression_ratio", "9", false),
            ("max_compression_ratio", "1000000", true),
            ("max_compression_ratio", "1000001", false),
            ("max_compression_ratio", "-1", false),
        ] {
            let json = format!(r#"{base},"{key}":{value}}}"#);
            let r = PullOptions::from_json(&json).and_then(PullOptions::check);
            match r {
                Ok(_) => assert!(ok, "{key}={value} accepted"),
                Err(e) => {
                    assert!(!ok, "{key}={value}: {}", e.message);
                    assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
                    assert!(e.message.contains(key), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

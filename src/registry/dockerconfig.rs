//! Credentials from a Docker config.json, the way the docker CLI finds them:
//! `credHelpers` for the host, else `credsStore`, else `auths`. Helpers are
//! `docker-credential-NAME get` processes, run only when a registry asks for
//! credentials, and killed when they take too long.

use super::settings::{normalise_host, DockerConfigOption, Settings};
use crate::error::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELPER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONFIG: u64 = 4 << 20;
const MAX_HELPER_OUTPUT: usize = 64 * 1024;
/// The key docker uses for Hub in config.json and with helpers.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// A secret found for a host. Debug never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Found {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token realm.
    Identity(String),
    /// A bearer token used as is.
    Bearer(String),
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Found::Identity(_) => f.write_str("Identity(***)"),
            Found::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: Option<String>,
    secret: Option<String>,
}

/// The config file the settings point at, if any.
fn config_path(settings: &Settings) -> Option<(PathBuf, bool)> {
    match &settings.docker_config {
        DockerConfigOption::Path(p) => Some((p.clone(), true)),
        DockerConfigOption::Enabled(false) => None,
        DockerConfigOption::Enabled(true) => {
            let dir = match std::env::var_os("DOCKER_CONFIG") {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
            };
            Some((dir.join("config.json"), false))
        }
    }
}

/// Credentials for `host` from the Docker config, or None. Blocking: it may
/// run a helper process.
pub fn lookup(settings: &Settings, host: &str) -> Result<Option<Found>> {
    let Some((path, explicit)) = config_path(settings) else {
        return Ok(None);
    };
    let config = match read_config(&path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("docker config {}: {e}", path.display()),
            ))
        }
    };
    let want = normalise_host(host);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| key_host(k) == want)
        .map(|(_, v)| v.clone())
        .or(config.creds_store.clone())
        .filter(|h| !h.is_empty());
    if let Some(name) = helper {
        let server = if want == "docker.io" { HUB_KEY } else { host };
        if let Some(found) = run_helper(settings, &name, server)? {
            return Ok(Some(found));
        }
    }
    let entry = config.auths.iter().find(|(k, _)| key_host(k) == want);
    match entry {
        Some((_, e)) => from_entry(e, &path),
        None => Ok(None),
    }
}

fn read_config(path: &Path) -> std::io::Result<ConfigFile> {
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG).read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// `https://index.docker.io/v1/` -> `docker.io`; `http://h:5000/x` -> `h:5000`.
fn key_host(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    normalise_host(k.split('/').next().unwrap_or(""))
}

fn from_entry(e: &AuthEntry, path: &Path) -> Result<Option<Found>> {
    if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Found::Identity(t.clone())));
    }
    if let Some(t) = e.registrytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Found::Bearer(t.clone())));
    }
    if let Some(a) = e.auth.as_ref().filter(|a| !a.is_empty()) {
        let bad = || {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "docker config {}: an auths entry is not base64 of user:password",
                    path.display()
                ),
            )
        };
        let plain = super::auth::base64_decode(a.trim()).ok_or_else(bad)?;
        let plain = String::from_utf8(plain).map_err(|_| bad())?;
        let (u, p) = plain.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Found::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Found::Basic {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// Run `docker-credential-<name> get` for `server`.
fn run_helper(settings: &Settings, name: &str, server: &str) -> Result<Option<Found>> {
    let exe = format!("docker-credential-{name}");
    let fail = |why: String| Error::new(ErrorKind::Auth, format!("credential helper {exe}: {why}"));
    // The name comes from a file: it must not reach outside the search path.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(fail(
            "the helper name has characters a command cannot have".into(),
        ));
    }
    let program = settings
        .credential_helpers_dir
        .as_ref()
        .map(|d| d.join(&exe))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&exe));
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading makes this fail; its exit
        // status tells the real story below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "no answer within {}s",
                    HELPER_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(MAX_HELPER_OUTPUT as u64).read_to_end(&mut out);
    }
    if !status.success() {
        let text = String::from_utf8_lossy(&out);
        // The documented "not found" answer: no credentials, not an error.
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let mut err = String::new();
        if let Some(e) = child.stderr.take() {
            let _ = e.take(200).read_to_string(&mut err);
        }
        return Err(fail(format!("exited with {status}: {}", err.trim())));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out)
        .map_err(|e| fail(format!("its answer is not the expected JSON: {e}")))?;
    let secret = answer.secret.unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(match answer.username.as_deref() {
        Some("<token>") => Found::Identity(secret),
        Some(u) if !u.is_empty() => Found::Basic {
            username: u.to_string(),
            password: secret,
        },
        _ => Found::Bearer(secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_keys_normalise() {
        for k in [
            HUB_KEY,
            "index.docker.io",
            "docker.io",
            "https://registry-1.docker.io",
        ] {
            assert_eq!(key_host(k), "docker.io", "{k}");
        }
        assert_eq!(key_host("http://Reg.Example:5000/v2/"), "reg.example:5000");
    }

    #[test]
    fn auths_entry_kinds() {
        let p = Path::new("c.json");
        let e = AuthEntry {
            auth: Some("dTE6cDE=".into()),
            ..Default::default()
        };
        let want = Found::Basic {
            username: "u1".into(),
            password: "p1".into(),
        };
        assert_eq!(from_entry(&e, p).unwrap(), Some(want));
        let e = AuthEntry {
            auth: Some("not base64!".into()),
            ..Default::default()
        };
        let err = from_entry(&e, p).unwrap_err();
        assert!(
            !err.message.contains("not base64!"),
            "the secret leaked: {}",
            err.message
        );
        let e = AuthEntry {
            identitytoken: Some("refresh".into()),
            ..Default::default()
        };
        assert_eq!(
            from_entry(&e, p).unwrap(),
            Some(Found::Identity("refresh".into()))
        );
        assert!(!format!("{:?}", Found::Identity("refresh".into())).contains("refresh"));
    }
}

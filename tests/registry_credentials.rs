//! Credentials: basic auth against a real docker-registry with htpasswd, a Docker
//! config.json (`auths`, `credHelpers`, `credsStore`, identity tokens), and secrets that
//! never show up in logs, errors, progress or the result.

mod common;
mod registry_kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::capi;
use common::fixtures::app_image;
use registry_kit::{bearer_front, capture_logs, log_lines};
use serde_json::{json, Value};
use vicpull::ffi::result::vic_result;
use vicpull_testkit::{push_image, Registry, RegistryOptions, Reply, Stub, TempDir};

const SECRET: &str = "s3cr3t-Pa55word";

/// A registry that wants basic auth (u1 / SECRET), holding fx/app:1.
struct Locked {
    _plain: Registry,
    registry: Registry,
    _dir: TempDir,
    store: TempDir,
}

impl Locked {
    fn start() -> Locked {
        let dir = TempDir::new("vicpull-htpasswd");
        // Push through an open registry on the same storage, then lock the door.
        let plain = Registry::start_with(RegistryOptions::new().dir(dir.path()));
        push_image(plain.addr(), "fx/app", "1", &app_image());
        let registry = Registry::start_with(
            RegistryOptions::new()
                .dir(dir.path())
                .basic_auth("u1", SECRET),
        );
        Locked {
            _plain: plain,
            registry,
            _dir: dir,
            store: TempDir::new("vicpull-store"),
        }
    }

    fn options(&self) -> Value {
        json!({
            "reference": format!("{}/fx/app:1", self.registry.addr()),
            "store": self.store.path(),
            "plain_http": true,
            "docker_config": false,
        })
    }
}

/// The secret in every form it could leak in.
fn assert_no_secret(text: &str) {
    let b64 = "dTE6czNjcjN0LVBhNTV3b3Jk"; // base64("u1:s3cr3t-Pa55word")
    assert!(!text.contains(SECRET), "the password leaked: {text}");
    assert!(!text.contains(b64), "the basic credentials leaked: {text}");
    assert!(!text.contains("TOKEN-SECRET"), "the token leaked: {text}");
}

fn outcome_text(out: &capi::Outcome, events: &[capi::Ev]) -> String {
    let mut all = out.message.clone();
    if let Some(j) = &out.json {
        all.push_str(&j.to_string());
    }
    for e in events {
        all.push_str(&e.message);
    }
    all
}

#[test]
fn registry_basic_auth_with_htpasswd() {
    capture_logs();
    let reg = Locked::start();

    let (out, events) = capi::pull(reg.options());
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(out.message.contains("basic credentials"), "{}", out.message);
    assert_no_secret(&outcome_text(&out, &events));

    let mut o = reg.options();
    o["username"] = "u1".into();
    o["password"] = "wrong-password".into();
    let (out, events) = capi::pull(o);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(!out.message.contains("wrong-password"), "{}", out.message);
    assert_no_secret(&outcome_text(&out, &events));

    let mut o = reg.options();
    o["username"] = "u1".into();
    o["password"] = SECRET.into();
    let (out, events) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_no_secret(&outcome_text(&out, &events));
    for line in log_lines() {
        assert_no_secret(&line);
    }
}

fn write_config(dir: &Path, config: &Value) -> std::path::PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// A `docker-credential-<name>` script in `dir` that runs `body` (sh).
fn helper(dir: &Path, name: &str, body: &str) {
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn docker_config_auths_entry_with_base64_auth() {
    let reg = Locked::start();
    let conf = TempDir::new("vicpull-dockercfg");
    // The key carries a scheme and a path, as `docker login` writes some of them.
    let key = format!("http://{}/v2/", reg.registry.addr());
    let path = write_config(
        conf.path(),
        &json!({"auths": {key: {"auth": "dTE6czNjcjN0LVBhNTV3b3Jk"}}}),
    );
    let mut o = reg.options();
    o["docker_config"] = path.display().to_string().into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn docker_config_cred_helper_is_asked_for_the_host() {
    let reg = Locked::start();
    let conf = TempDir::new("vicpull-dockercfg");
    let asked = conf.path().join("asked");
    helper(
        conf.path(),
        "fake",
        &format!(
            r#"[ "$1" = get ] || exit 2
cat > {asked}
printf '{{"ServerURL":"x","Username":"u1","Secret":"{SECRET}"}}'"#,
            asked = asked.display()
        ),
    );
    let host = reg.registry.addr().to_string();
    let path = write_config(
        conf.path(),
        &json!({"credsStore": "nothing-here", "credHelpers": {host.clone(): "fake"}}),
    );
    let mut o = reg.options();
    o["docker_config"] = path.display().to_string().into();
    o["credential_helpers_dir"] = conf.path().display().to_string().into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), host);
}

#[test]
fn docker_config_creds_store_not_found_falls_back_to_auths() {
    let reg = Locked::start();
    let conf = TempDir::new("vicpull-dockercfg");
    helper(
        conf.path(),
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let key = reg.registry.addr().to_string();
    let path = write_config(
        conf.path(),
        &json!({"credsStore": "empty", "auths": {key: {"auth": "dTE6czNjcjN0LVBhNTV3b3Jk"}}}),
    );
    let mut o = reg.options();
    o["docker_config"] = path.display().to_string().into();
    o["credential_helpers_dir"] = conf.path().display().to_string().into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
}

#[test]
fn docker_config_hung_helper_times_out() {
    let reg = Locked::start();
    let conf = TempDir::new("vicpull-dockercfg");
    helper(conf.path(), "hang", "exec sleep 60");
    let path = write_config(conf.path(), &json!({"credsStore": "hang"}));
    let mut o = reg.options();
    o["docker_config"] = path.display().to_string().into();
    o["credential_helpers_dir"] = conf.path().display().to_string().into();
    let t0 = Instant::now();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(
        out.message.contains("docker-credential-hang"),
        "{}",
        out.message
    );
    assert!(out.message.contains("no answer within"), "{}", out.message);
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn docker_config_identity_token_is_exchanged_at_the_realm() {
    let env = common::fixtures::Env::new();
    env.push("fx/app", "1", &app_image());
    let realm = Stub::start("127.0.0.1", |r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let refresh = body.contains("grant_type=refresh_token")
            && body.contains("refresh_token=REFRESH-1")
            && body.contains("scope=repository%3Afx%2Fapp%3Apull");
        if r.method == "POST" && refresh {
            Reply::json(
                200,
                &json!({"access_token": "TOKEN-SECRET-1", "expires_in": 300}),
            )
        } else {
            Reply::new(401)
        }
    });
    let challenge = format!(
        r#"Bearer realm="{}/token",service="reg.test",scope="repository:fx/app:pull""#,
        realm.url()
    );
    bearer_front(&env.proxy, &["TOKEN-SECRET-1"], challenge);
    let conf = TempDir::new("vicpull-dockercfg");
    let path = write_config(
        conf.path(),
        &json!({"auths": {env.proxy.addr(): {"identitytoken": "REFRESH-1"}}}),
    );
    capture_logs();
    let mut o = env.options("fx/app:1");
    o["docker_config"] = path.display().to_string().into();
    let (out, events) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_eq!(realm.requests().len(), 1);
    assert_no_secret(&outcome_text(&out, &events));
    for line in log_lines() {
        assert_no_secret(&line);
        assert!(!line.contains("REFRESH-1"), "{line}");
    }
}

#[test]
fn explicit_docker_config_that_is_missing_is_an_error() {
    let reg = Locked::start();
    let mut o = reg.options();
    o["docker_config"] = "/nonexistent/vicpull/config.json".into();
    let (out, _) = capi::pull(o);
    assert_eq!(out.code, vic_result::InvalidArgument, "{}", out.message);
    assert!(
        out.message.contains("/nonexistent/vicpull/config.json"),
        "{}",
        out.message
    );
}

#[test]
fn docker_config_registry_token_is_sent_as_is() {
    let env = common::fixtures::Env::new();
    env.push("fx/app", "1", &app_image());
    let challenge = r#"Bearer realm="http://127.0.0.1:9/token",service="reg.test""#;
    bearer_front(&env.proxy, &["TOKEN-SECRET-2"], challenge.to_string());
    let conf = TempDir::new("vicpull-dockercfg");
    let path = write_config(
        conf.path(),
        &json!({"auths": {env.proxy.addr(): {"registrytoken": "TOKEN-SECRET-2"}}}),
    );
    let mut o = env.options("fx/app:1");
    o["docker_config"] = path.display().to_string().into();
    let (out, events) = capi::pull(o);
    assert_eq!(out.code, vic_result::Ok, "{}", out.message);
    assert_no_secret(&outcome_text(&out, &events));
}

#[test]
fn secrets_echoed_back_by_a_server_are_scrubbed() {
    // A registry and a token server that quote the Authorization header they got in their
    // error text: what reaches the error and the logs must not carry it.
    capture_logs();
    let echo = |r: &vicpull_testkit::StubRequest| {
        let sent = r.header("authorization").unwrap_or("none").to_string();
        let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": format!("nope {sent}")}]});
        Reply::json(401, &body).header("WWW-Authenticate", "Basic realm=\"echo\"")
    };
    let reg = Stub::start("127.0.0.1", echo);
    let store = TempDir::new("vicpull-store");
    let o = json!({
        "reference": format!("{}/fx/app:1", reg.addr()),
        "store": store.path(),
        "plain_http": true,
        "docker_config": false,
        "username": "u1",
        "password": SECRET,
    });
    let (out, events) = capi::pull(o);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert!(
        out.message.contains("nope"),
        "the registry's text is kept: {}",
        out.message
    );
    assert_no_secret(&outcome_text(&out, &events));

    // The same through a token realm that echoes the Basic header it was sent.
    let realm = Stub::start("127.0.0.1", move |r| {
        let sent = r.header("authorization").unwrap_or("none").to_string();
        Reply::json(
            401,
            &json!({"errors": [{"code": "DENIED", "message": sent}]}),
        )
    });
    let challenge = format!(
        "Bearer realm=\"{}/token\",service=\"echo\",scope=\"repository:fx/app:pull\"",
        realm.url()
    );
    let reg = Stub::start("127.0.0.1", move |_| {
        Reply::new(401).header("WWW-Authenticate", &challenge)
    });
    let mut o2 = json!({
        "reference": format!("{}/fx/app:1", reg.addr()),
        "store": store.path(),
        "plain_http": true,
        "docker_config": false,
        "username": "u1",
        "password": SECRET,
    });
    o2["max_attempts"] = 1.into();
    let (out, events) = capi::pull(o2);
    assert_eq!(out.code, vic_result::Auth, "{}", out.message);
    assert_no_secret(&outcome_text(&out, &events));
    for line in log_lines() {
        assert_no_secret(&line);
    }
}

//! Helpers for the registry-behaviour tests (S01-S15 and registry_*): a token server, a
//! front that enforces Bearer tokens on the real registry, and small checks on the store.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use vicpull_testkit::proxy::{Action, RequestInfo};
use vicpull_testkit::{FaultProxy, Reply, Stub, StubRequest};

use crate::common::fixtures::{self, Env};

pub const SERVICE: &str = "reg.test";
pub const SCOPE: &str = "repository:fx/app:pull";

/// A token server on 127.0.0.1: answers `/token` with `bodies[n]` for the n-th call (the last
/// one repeats), and 400 for a truncated scope, as S02 wants.
pub struct TokenServer {
    pub stub: Stub,
    pub calls: Arc<AtomicUsize>,
}

impl TokenServer {
    pub fn start(bodies: Vec<Value>) -> TokenServer {
        TokenServer::start_with(move |n, _| Reply::json(200, &bodies[n.min(bodies.len() - 1)]))
    }

    /// `answer(n, request)` makes the reply to the n-th valid token request.
    pub fn start_with(
        answer: impl Fn(usize, &StubRequest) -> Reply + Send + Sync + 'static,
    ) -> TokenServer {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let stub = Stub::start("127.0.0.1", move |r| {
            let scopes = r.params("scope");
            let ok_scope =
                |s: &String| s == "repository:fx/app:pull" || s == "repository:fx/app:pull,push";
            if r.path != "/token" || scopes.is_empty() || !scopes.iter().all(ok_scope) {
                return Reply::json(400, &json!({"errors":[{"code":"BAD_SCOPE"}]}));
            }
            let n = counter.fetch_add(1, Ordering::SeqCst);
            answer(n, r)
        });
        TokenServer { stub, calls }
    }

    pub fn realm(&self) -> String {
        format!("{}/token", self.stub.url())
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The canonical challenge for this server.
    pub fn challenge(&self) -> String {
        format!(
            r#"Bearer realm="{}",service="{SERVICE}",scope="{SCOPE}""#,
            self.realm()
        )
    }
}

/// (path, Authorization) of each registry request.
pub type AuthLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// What the front saw: each registry request's path and Authorization value.
#[derive(Clone, Default)]
pub struct Seen(pub AuthLog);

impl Seen {
    pub fn all(&self) -> Vec<(String, Option<String>)> {
        self.0.lock().unwrap().clone()
    }
}

/// The decision a front makes for one registry request.
pub enum Gate {
    Pass,
    /// Answer 401 with these WWW-Authenticate values (one header line each).
    Challenge(Vec<String>),
}

/// Put a hook on `proxy` that records every request and lets `decide` accept or challenge it.
pub fn front(
    proxy: &FaultProxy,
    decide: impl Fn(&RequestInfo) -> Gate + Send + Sync + 'static,
) -> Seen {
    let seen = Seen::default();
    let log = seen.clone();
    proxy.hook(move |r| {
        if !r.path.starts_with("/v2/") {
            return None;
        }
        let auth = r.header("authorization").map(str::to_string);
        log.0.lock().unwrap().push((r.path.clone(), auth));
        match decide(r) {
            Gate::Pass => None,
            Gate::Challenge(values) => Some(unauthorized(&values)),
        }
    });
    seen
}

/// 401 with the given challenges and a registry error body.
pub fn unauthorized(challenges: &[String]) -> Action {
    let mut headers: Vec<(String, String)> = challenges
        .iter()
        .map(|c| ("WWW-Authenticate".to_string(), c.clone()))
        .collect();
    headers.push(("Content-Type".into(), "application/json".into()));
    Action::Respond {
        status: 401,
        headers,
        body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth required"}]}"#.to_vec(),
    }
}

/// A front that accepts exactly `Bearer <t>` for t in `tokens`, else sends `challenge`.
pub fn bearer_front(proxy: &FaultProxy, tokens: &[&str], challenge: String) -> Seen {
    let ok: HashSet<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    front(proxy, move |r| match r.header("authorization") {
        Some(a) if ok.contains(a) => Gate::Pass,
        _ => Gate::Challenge(vec![challenge.clone()]),
    })
}

/// Options for pulling `repo_tag` through the env's front, reading no Docker config.
pub fn options(env: &Env, repo_tag: &str) -> Value {
    let mut o = env.options(repo_tag);
    o["docker_config"] = false.into();
    o
}

/// Blob files in the store (by hex name).
pub fn stored(store: &Path) -> HashSet<String> {
    let dir = store.join("blobs/sha256");
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => HashSet::new(),
    }
}

pub fn has_blob(store: &Path, digest: &str) -> bool {
    stored(store).contains(digest.trim_start_matches("sha256:"))
}

/// "Nothing written": no blob, no ref, no temp file.
pub fn assert_nothing_written(store: &Path) {
    assert!(
        stored(store).is_empty(),
        "blobs were written: {:?}",
        stored(store)
    );
    if store.join("index.json").exists() {
        let refs = fixtures::index_json(store)["manifests"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(refs, 0, "a ref was written");
    }
    assert!(
        fixtures::leftovers(store).is_empty(),
        "{:?}",
        fixtures::leftovers(store)
    );
}

/// Every vicpull log line since `capture_logs` (all tests of the binary mixed: filter by
/// something unique to the test, such as a port).
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn on_log(_: *mut std::ffi::c_void, p: *const vicpull::ffi::log::vic_log_params) {
    // SAFETY: the library passes a valid params struct and NUL-terminated strings that live
    // for the duration of the call.
    let msg = unsafe { std::ffi::CStr::from_ptr((*p).message) };
    LINES
        .lock()
        .unwrap()
        .push(msg.to_string_lossy().into_owned());
}

/// Send vicpull's log lines, down to debug, into this test binary's buffer.
pub fn capture_logs() {
    // SAFETY: on_log is thread-safe and ignores its user_data.
    let rc = unsafe { vicpull::ffi::log::vic_log_set(Some(on_log), std::ptr::null_mut(), 4) };
    assert_eq!(rc, vicpull::ffi::result::vic_result::Ok);
}

pub fn log_lines() -> Vec<String> {
    LINES.lock().unwrap().clone()
}

/// A canned answer for a FaultProxy rule or hook.
pub fn respond(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Action {
    Action::Respond {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

/// Serve `bytes` from a stub, honouring `Range: bytes=N-`.
pub fn serve_range(r: &StubRequest, bytes: &[u8]) -> Reply {
    let from = r
        .header("range")
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    match from {
        Some(n) if n < bytes.len() => Reply::new(206)
            .header(
                "Content-Range",
                &format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()),
            )
            .body(bytes[n..].to_vec()),
        _ => Reply::new(200).body(bytes.to_vec()),
    }
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Push `children` as an OCI index under fx/multi:`tag`, let `edit` change the index JSON,
/// and store it again. Returns the child manifest digests.
pub fn index_with(
    env: &Env,
    tag: &str,
    children: Vec<(vicpull_testkit::ImageSpec, vicpull_testkit::Platform)>,
    edit: impl FnOnce(&mut Value),
) -> Vec<String> {
    use vicpull_testkit::image::put_manifest;
    let addr = env.registry.addr();
    let format = vicpull_testkit::Format::Oci;
    let idx = vicpull_testkit::push_index(addr, "fx/multi", tag, &children, format);
    let mut doc: Value = serde_json::from_slice(&idx.bytes).unwrap();
    edit(&mut doc);
    let bytes = serde_json::to_vec(&doc).unwrap();
    put_manifest(addr, "fx/multi", tag, OCI_INDEX, &bytes);
    idx.children
        .iter()
        .map(|c| c.manifest_digest.clone())
        .collect()
}

/// Pull fx/multi:`tag` for `platform`.
pub fn pull_platform(env: &Env, tag: &str, platform: &str) -> crate::common::capi::Outcome {
    let mut o = options(env, &format!("fx/multi:{tag}"));
    o["platform"] = platform.into();
    crate::common::capi::pull(o).0
}

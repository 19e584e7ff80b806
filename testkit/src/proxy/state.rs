//! State shared between the test's `FaultProxy` handle and the proxy thread.
//!
//! One mutex guards rules and the request log; it is never held across an await or while a
//! hook runs.

use std::sync::{Mutex, MutexGuard};

use super::rules::{blob_digest, Action, Hook, Match, Plan, RequestInfo, Rule, RuleId};

/// One request as the proxy handled it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLog {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The client's `Range` header, as sent (even when a rule stripped it).
    pub range: Option<String>,
    pub has_authorization: bool,
    /// The status sent to the client; 0 while none has been sent (or never, after a hangup).
    pub status: u16,
    /// Body bytes handed to the client connection so far.
    pub body_bytes_sent: u64,
}

#[derive(Default)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Client connections accepted so far.
    pub(crate) accepted: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    hooks: Vec<Hook>,
    log: Vec<RequestLog>,
    /// Entries dropped by `clear_log`; slots count from the first request ever logged, so a
    /// request still running after a clear cannot write into a newer request's entry.
    log_base: usize,
    next_rule: u64,
    next_seq: u64,
}

/// Where a request's entry sits in the log, to fill in status and bytes later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogSlot(usize);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock leaves usable data behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_rule(&self, target: Match, action: Action, limit: Option<u64>) -> RuleId {
        let mut inner = self.lock();
        let id = RuleId(inner.next_rule);
        inner.next_rule += 1;
        inner.rules.push(Rule {
            id,
            target,
            action,
            left: limit,
            fired: 0,
        });
        id
    }

    pub fn add_hook(&self, hook: Hook) {
        self.lock().hooks.push(hook);
    }

    pub fn remove_rule(&self, id: RuleId) {
        self.lock().rules.retain(|r| r.id != id);
    }

    pub fn fired(&self, id: RuleId) -> u64 {
        self.lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.fired)
    }

    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.rules.clear();
        inner.hooks.clear();
    }

    /// Numbers a new request, logs it and decides its faults: rules in the order they were
    /// added, then hooks.
    pub fn begin(
        &self,
        method: &str,
        target: (&str, Option<&str>),
        headers: &[(String, String)],
    ) -> (LogSlot, Plan) {
        let (path, query) = target;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut plan = Plan::default();
        let (info, slot, hooks) = {
            let mut inner = self.lock();
            let info = RequestInfo {
                seq: inner.next_seq,
                method: method.to_string(),
                path: path.to_string(),
                query: query.map(str::to_string),
                headers: headers.to_vec(),
            };
            inner.next_seq += 1;
            inner.log.push(RequestLog {
                method: method.to_string(),
                path: path.to_string(),
                query: info.query.clone(),
                range: header("range"),
                has_authorization: header("authorization").is_some(),
                status: 0,
                body_bytes_sent: 0,
            });
            let slot = LogSlot(inner.log_base + inner.log.len() - 1);
            for rule in &mut inner.rules {
                if let Some(action) = rule.fire(method, path) {
                    plan.add(action);
                }
            }
            (info, slot, inner.hooks.clone())
        };
        for hook in hooks {
            if let Some(action) = hook(&info) {
                plan.add(action);
            }
        }
        (slot, plan)
    }

    pub fn set_status(&self, slot: LogSlot, status: u16) {
        self.update(slot, |e| e.status = status);
    }

    pub fn add_bytes(&self, slot: LogSlot, n: u64) {
        self.update(slot, |e| e.body_bytes_sent += n);
    }

    fn update(&self, slot: LogSlot, f: impl FnOnce(&mut RequestLog)) {
        let mut inner = self.lock();
        let base = inner.log_base;
        if let Some(e) = slot.0.checked_sub(base).and_then(|i| inner.log.get_mut(i)) {
            f(e);
        }
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.lock().log.clone()
    }

    /// Empties the log; updates from requests still running are then dropped.
    pub fn clear_log(&self) {
        let mut inner = self.lock();
        inner.log_base += inner.log.len();
        inner.log.clear();
    }

    /// GET requests for blob `digest`: their count and body bytes sent.
    pub fn blob_gets(&self, digest: &str) -> (usize, u64) {
        let inner = self.lock();
        let gets = inner
            .log
            .iter()
            .filter(|e| e.method == "GET" && blob_digest(&e.path) == Some(digest));
        gets.fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.body_bytes_sent))
    }
}

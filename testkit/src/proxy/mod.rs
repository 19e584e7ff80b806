//! A fault-injecting HTTP/1.1 proxy to put between the library and the loopback registry.
//!
//! The proxy runs on its own thread with its own single-threaded tokio runtime, so it works
//! the same from plain `#[test]`s and from tests that run their own runtime.
//!
//! Client connections are kept alive across requests (bodies keep the Content-Length or
//! chunked framing upstream used); each request goes upstream on a new connection with
//! `Connection: close`. Only a close-delimited upstream body, or a client that asks for it,
//! closes the client connection.
//!
//! Faults are rules: a [`Match`] on the path, an [`Action`], and optionally a number of uses.
//! For every request, all rules are checked in the order they were added, then every hook;
//! everything that matches applies (see [`Action`] for how several of one kind combine).
//! Rules that change a body (corrupt, throttle, cut, stall) only match GET requests, and they
//! change upstream bodies only, not canned answers. A rule's use is spent when it matches,
//! even if another rule then answers the request instead.

mod body;
pub(crate) mod conn;
mod rules;
mod state;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tokio::sync::oneshot;

pub use rules::{blob_digest, Action, CutMode, Match, RequestInfo, RuleId};
pub use state::RequestLog;

use state::Shared;

/// A running proxy. Dropping it stops the thread and closes every connection.
pub struct FaultProxy {
    addr: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` ("127.0.0.1:PORT").
    /// Panics if `upstream` is not a loopback address: tests never leave this machine.
    pub fn start(upstream: &str) -> FaultProxy {
        let up: SocketAddr = upstream.parse().expect("upstream must be IP:PORT");
        assert!(
            up.ip().is_loopback(),
            "testkit: upstream {upstream} is not on loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();

        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel();
        let upstream: Arc<str> = upstream.into();
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept(listener, upstream, thread_shared, stopped));
                // Dropping the runtime here cancels every connection task.
            })
            .expect("spawn proxy thread");
        FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Flips one byte (XOR 0xff) at `offset` of blob `digest` in GET answers; the length is
    /// unchanged. `limit`: only the first N matching GETs (`None`: all).
    pub fn corrupt(&self, digest: &str, offset: u64, limit: Option<u64>) -> RuleId {
        self.add_rule(Match::blob(digest), Action::Corrupt { offset }, limit)
    }

    /// Sends bodies of matching GETs at most `bytes_per_sec` (e.g. `Match::AnyBlob`).
    pub fn throttle(&self, target: Match, bytes_per_sec: u64, limit: Option<u64>) -> RuleId {
        self.add_rule(target, Action::Throttle { bytes_per_sec }, limit)
    }

    /// Ends the connection after `after` body bytes of GETs of blob `digest`, with RST or
    /// FIN. A body shorter than that is sent whole, then the connection is ended anyway.
    pub fn cut(&self, digest: &str, after: u64, mode: CutMode, limit: Option<u64>) -> RuleId {
        self.add_rule(Match::blob(digest), Action::Cut { after, mode }, limit)
    }

    /// Answers matching requests (any method) with `status`, `headers` and `body` instead of
    /// forwarding them, e.g. 429 with `Retry-After`, or 503.
    pub fn respond(
        &self,
        target: Match,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: Option<u64>,
    ) -> RuleId {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let action = Action::Respond {
            status,
            headers,
            body: body.to_vec(),
        };
        self.add_rule(target, action, limit)
    }

    /// Removes `Range` (and `If-Range`) from matching requests, so upstream sends 200 with
    /// the full body, as servers without range support do.
    pub fn ignore_range(&self, target: Match, limit: Option<u64>) -> RuleId {
        self.add_rule(target, Action::StripRange, limit)
    }

    /// Adds any action for matching requests; the helpers above are shorthands of this.
    pub fn add_rule(&self, target: Match, action: Action, limit: Option<u64>) -> RuleId {
        self.shared.add_rule(target, action, limit)
    }

    /// Adds a hook that may return an action for each request. Hooks run on the proxy thread,
    /// after the rules, with no lock held; keep them quick, they delay every request.
    pub fn hook(&self, f: impl Fn(&RequestInfo) -> Option<Action> + Send + Sync + 'static) {
        self.shared.add_hook(Arc::new(f));
    }

    /// Removes one rule; requests already under way keep their faults.
    pub fn remove_rule(&self, id: RuleId) {
        self.shared.remove_rule(id);
    }

    /// How many requests rule `id` has applied to (0 once removed).
    pub fn fired(&self, id: RuleId) -> u64 {
        self.shared.fired(id)
    }

    /// Removes every rule and hook.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Every request so far, in arrival order. An entry appears when the request head is
    /// read; status and byte count fill in while it is answered.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.requests()
    }

    /// Client connections accepted so far: with keep-alive, far fewer than requests.
    pub fn connections(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.shared.clear_log();
    }

    /// The number of GET requests for blob `digest` (in any repository), whatever they were
    /// answered: forwarded, canned or cut.
    pub fn count_gets(&self, digest: &str) -> usize {
        self.shared.blob_gets(digest).0
    }

    /// Body bytes sent in answers to GETs of blob `digest`, all requests together.
    pub fn total_body_bytes(&self, digest: &str) -> u64 {
        self.shared.blob_gets(digest).1
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(
    listener: TcpListener,
    upstream: Arc<str>,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            conn = listener.accept() => {
                if let Ok((stream, _)) = conn {
                    shared.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(conn::serve(stream, upstream.clone(), shared.clone()));
                }
            }
        }
    }
}

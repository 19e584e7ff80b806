//! A forward HTTP proxy on loopback, as a corporate proxy would sit between vicpull and a
//! registry: absolute-form requests (`GET http://host:port/path`) are forwarded, `CONNECT
//! host:port` opens a tunnel. Every request is recorded with its target and its
//! Proxy-Authorization; with [`ForwardProxy::require_auth`] anything without the expected
//! value gets 407.
//!
//! It forwards only to loopback (`127.0.0.0/8`, `::1`, `localhost`, and any `*.test` name,
//! taken as 127.0.0.1); any other target gets 502 without a connection attempt.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::proxy::conn::read_head;
use crate::wire::{self, Framing, Head};

const MAX_BODY: u64 = 1 << 20;

/// One request as the proxy received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    /// The absolute URL, or `host:port` for CONNECT.
    pub target: String,
    pub proxy_authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    log: Vec<ProxiedRequest>,
    /// The Proxy-Authorization value every request must carry.
    required: Option<String>,
}

type State = Arc<Mutex<Shared>>;

/// A running proxy. Dropping it stops the thread and closes every connection.
pub struct ForwardProxy {
    addr: String,
    state: State,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ForwardProxy {
    /// Starts a proxy on a free port of 127.0.0.1.
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let state: State = Arc::default();
        let (stop, stopped) = oneshot::channel();
        let thread_state = state.clone();
        let thread = thread::Builder::new()
            .name("forward-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept(listener, thread_state, stopped));
            })
            .expect("spawn proxy thread");
        ForwardProxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answer 407 to any request whose Proxy-Authorization is not Basic `user:password`.
    pub fn require_auth(&self, user: &str, password: &str) {
        let value = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        self.lock().required = Some(value);
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.lock().log.clone()
    }

    /// Targets of the requests with `method`, in arrival order.
    pub fn targets(&self, method: &str) -> Vec<String> {
        let log = self.requests().into_iter().filter(|r| r.method == method);
        log.map(|r| r.target).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An address nothing listens on: bound, then released.
pub fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").to_string()
}

async fn accept(listener: TcpListener, state: State, mut stopped: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            conn = listener.accept() => {
                if let Ok((s, _)) = conn {
                    tokio::spawn(serve(s, state.clone()));
                }
            }
        }
    }
}

/// One request per connection: the answer carries `Connection: close`, so the client opens
/// a new connection (and the log shows one line) per request.
async fn serve(stream: TcpStream, state: State) {
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    let Ok(Some(head)) = read_head(&mut conn).await else {
        return;
    };
    let mut parts = head.start.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let auth = head.get("proxy-authorization").map(str::to_string);
    let required = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.log.push(ProxiedRequest {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: auth.clone(),
        });
        s.required.clone()
    };
    if required.is_some() && auth != required {
        let extra = [("Proxy-Authenticate", "Basic realm=\"testkit\"")];
        return fail(conn.get_mut(), 407, &extra).await;
    }
    if method == "CONNECT" {
        return tunnel(conn, &target).await;
    }
    forward(conn, head, &method, &target).await;
}

/// `host:port` of a loopback target, or None (never connected to).
fn loopback(authority: &str) -> Option<SocketAddr> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // Clients skip proxies for loopback addresses, so tests name the registry
    // `<something>.test` (RFC 6761) and this proxy maps those to 127.0.0.1.
    let test_name = host.to_ascii_lowercase().ends_with(".test");
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") || test_name {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    let port = port.parse().ok()?;
    ip.is_loopback().then(|| SocketAddr::new(ip, port))
}

async fn tunnel(mut conn: BufReader<TcpStream>, target: &str) {
    let Some(addr) = loopback(target) else {
        return fail(conn.get_mut(), 502, &[]).await;
    };
    let Ok(mut up) = TcpStream::connect(addr).await else {
        return fail(conn.get_mut(), 502, &[]).await;
    };
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if conn.get_mut().write_all(ok).await.is_err() {
        return;
    }
    // Bytes the reader already buffered past the head belong to the tunnel.
    let early = conn.buffer().to_vec();
    if !early.is_empty() && up.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(conn.get_mut(), &mut up).await;
}

async fn forward(mut conn: BufReader<TcpStream>, mut head: Head, method: &str, target: &str) {
    let Some(rest) = target.strip_prefix("http://") else {
        return fail(conn.get_mut(), 400, &[]).await;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains("]:") || authority.matches(':').count() == 1 {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let Some(addr) = loopback(&with_port) else {
        return fail(conn.get_mut(), 502, &[]).await;
    };
    let mut body = Vec::new();
    match head.request_framing() {
        Ok(Framing::Length(n)) if n <= MAX_BODY => {
            body = vec![0; n as usize];
            if conn.read_exact(&mut body).await.is_err() {
                return;
            }
        }
        Ok(Framing::Empty) => {}
        _ => return fail(conn.get_mut(), 501, &[]).await,
    }
    let Ok(mut up) = TcpStream::connect(addr).await else {
        return fail(conn.get_mut(), 502, &[]).await;
    };
    head.start = format!("{method} {path} HTTP/1.1");
    for h in [
        "proxy-authorization",
        "proxy-connection",
        "connection",
        "keep-alive",
    ] {
        head.remove(h);
    }
    head.set("Connection", "close");
    if up.write_all(&head.to_bytes()).await.is_err() || up.write_all(&body).await.is_err() {
        return;
    }
    // The answer's head gets `Connection: close` so the client does not reuse this
    // connection: one request per connection keeps the proxy simple.
    let mut up = BufReader::new(up);
    let Ok(Some(mut resp)) = read_head(&mut up).await else {
        return fail(conn.get_mut(), 502, &[]).await;
    };
    resp.set("Connection", "close");
    let framing = resp.response_framing(method);
    let client = conn.get_mut();
    if client.write_all(&resp.to_bytes()).await.is_err() {
        return;
    }
    // A sized body is copied by its length (not every upstream closes when asked); any
    // other framing is copied until the upstream closes.
    let _ = match framing {
        Ok(Framing::Empty) => Ok(0),
        Ok(Framing::Length(n)) => tokio::io::copy(&mut (&mut up).take(n), client).await,
        _ => tokio::io::copy(&mut up, client).await,
    };
    let _ = client.shutdown().await;
}

async fn fail(s: &mut TcpStream, status: u16, extra: &[(&str, &str)]) {
    let mut head = Head {
        start: format!("HTTP/1.1 {status} {}", wire::reason(status)),
        headers: Vec::new(),
    };
    for (k, v) in extra {
        head.set(k, v);
    }
    head.set("Content-Length", "0");
    head.set("Connection", "close");
    let _ = s.write_all(&head.to_bytes()).await;
    let _ = s.shutdown().await;
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_and_base64() {
        assert!(loopback("127.0.0.1:5000").is_some());
        assert!(loopback("[::1]:5000").is_some());
        assert!(loopback("localhost:1").is_some());
        assert!(loopback("169.254.169.254:80").is_none());
        assert_eq!(
            loopback("registry.test:443"),
            Some(SocketAddr::from(([127, 0, 0, 1], 443)))
        );
        assert!(loopback("registry.example:443").is_none());
        assert_eq!(base64(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    /// One absolute-form GET through the proxy: (status line, whole answer).
    fn get_via(proxy: &str, target: &str, auth: Option<&str>) -> (String, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(proxy).unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
        let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let status = all.lines().next().unwrap_or("").to_string();
        (status, all)
    }

    #[test]
    fn forwards_absolute_form_and_records_it() {
        let stub = crate::Stub::start("127.0.0.1", |r| {
            crate::Reply::new(200).body(format!("seen {}", r.path))
        });
        let p = ForwardProxy::start();
        let target = format!("{}/v2/x", stub.url());
        let (status, all) = get_via(p.addr(), &target, None);
        assert!(status.contains(" 200 "), "{all}");
        assert!(all.ends_with("seen /v2/x"), "{all}");
        assert_eq!(p.targets("GET"), vec![target.clone()]);
        let far = get_via(p.addr(), "http://169.254.169.254/latest", None);
        assert!(far.0.contains(" 502 "), "{}", far.1);
        p.require_auth("u", "pw");
        assert!(get_via(p.addr(), &target, None).0.contains(" 407 "));
        let (status, _) = get_via(p.addr(), &target, Some("Basic dTpwdw=="));
        assert!(status.contains(" 200 "), "{status}");
        assert_eq!(stub.requests().len(), 2, "the 407 was not forwarded");
    }
}

//! A tiny programmable HTTP/1.1 server for what a real registry will not do: a token server,
//! a CDN on a second loopback "host" (127.0.0.2) that checks signed URLs, a broken mirror.
//!
//! A test hands in a handler that turns each request into a [`Reply`]; every request is
//! logged. Like the fault proxy it runs on its own thread with its own runtime, and binds
//! only loopback addresses.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::proxy::conn::read_head;
use crate::wire::{self, Head};

const MAX_BODY: usize = 1 << 20;

/// One request as the stub received it.
#[derive(Clone, Debug)]
pub struct StubRequest {
    /// 0 for the first request the stub received, then 1, 2...
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The raw query, exactly as sent (percent-escapes untouched).
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StubRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in arrival order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let named = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.as_str()).collect()
    }

    /// The value of query parameter `name`, percent-decoded ('+' is a space).
    pub fn param(&self, name: &str) -> Option<String> {
        self.params(name).into_iter().next()
    }

    /// Every value of query parameter `name`, decoded, in order.
    pub fn params(&self, name: &str) -> Vec<String> {
        let q = self.query.as_deref().unwrap_or("");
        let pairs = q.split('&').filter_map(|kv| kv.split_once('='));
        pairs
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the stub answers. `Content-Length` is added.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send this many body bytes, then reset the connection (RST).
    pub cut_after: Option<u64>,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
        }
    }

    /// A JSON body with its Content-Type.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::new(status)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    /// Adds a header field; the same name may be added twice.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn cut_after(mut self, bytes: u64) -> Reply {
        self.cut_after = Some(bytes);
        self
    }
}

type Handler = Arc<dyn Fn(&StubRequest) -> Reply + Send + Sync>;

/// A running stub. Dropping it stops the thread and closes every connection.
pub struct Stub {
    addr: String,
    log: Arc<Mutex<Vec<StubRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Stub {
    /// Starts a stub on a free port of `ip` (a loopback address such as "127.0.0.2").
    pub fn start(
        ip: &str,
        handler: impl Fn(&StubRequest) -> Reply + Send + Sync + 'static,
    ) -> Stub {
        let ip: IpAddr = ip.parse().expect("stub ip");
        assert!(
            ip.is_loopback(),
            "testkit: stub address {ip} is not loopback"
        );
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let (stop, stopped) = oneshot::channel();
        let thread_log = log.clone();
        let thread = thread::Builder::new()
            .name("stub-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("stub runtime");
                rt.block_on(accept(listener, handler, thread_log, stopped));
            })
            .expect("spawn stub thread");
        Stub {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// "IP:PORT".
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// "http://IP:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<StubRequest> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    listener: TcpListener,
    handler: Handler,
    log: Arc<Mutex<Vec<StubRequest>>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            conn = listener.accept() => {
                if let Ok((s, _)) = conn {
                    tokio::spawn(serve(s, handler.clone(), log.clone()));
                }
            }
        }
    }
}

async fn serve(stream: TcpStream, handler: Handler, log: Arc<Mutex<Vec<StubRequest>>>) {
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    loop {
        let Ok(Some(head)) = read_head(&mut conn).await else {
            return;
        };
        let mut parts = head.start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let (path, query) = wire::split_target(parts.next().unwrap_or("/"));
        let mut body = Vec::new();
        if let Ok(wire::Framing::Length(n)) = head.request_framing() {
            if n as usize > MAX_BODY {
                return;
            }
            body = vec![0; n as usize];
            if conn.read_exact(&mut body).await.is_err() {
                return;
            }
        }
        let req = {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            let req = StubRequest {
                seq: log.len() as u64,
                method: method.clone(),
                path: path.to_string(),
                query: query.map(str::to_string),
                headers: head.headers.clone(),
                body,
            };
            log.push(req.clone());
            req
        };
        let reply = handler(&req);
        if !answer(conn.get_mut(), &method, reply).await {
            return;
        }
    }
}

/// Writes the reply; false when the connection was cut or broke.
async fn answer(s: &mut TcpStream, method: &str, reply: Reply) -> bool {
    let mut head = Head {
        start: format!("HTTP/1.1 {} {}", reply.status, wire::reason(reply.status)),
        headers: reply.headers,
    };
    head.set("Content-Length", &reply.body.len().to_string());
    if s.write_all(&head.to_bytes()).await.is_err() {
        return false;
    }
    if method == "HEAD" {
        return s.flush().await.is_ok();
    }
    let body = match reply.cut_after {
        Some(n) => &reply.body[..(n as usize).min(reply.body.len())],
        None => &reply.body[..],
    };
    if s.write_all(body).await.is_err() || s.flush().await.is_err() {
        return false;
    }
    if reply.cut_after.is_some() {
        // Let the bytes reach the peer, then reset instead of closing.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.set_zero_linger();
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("repository%3Afx%2Fapp%3Apull%2Cpush"),
            "repository:fx/app:pull,push"
        );
        assert_eq!(percent_decode("a+b%"), "a b%");
    }
}

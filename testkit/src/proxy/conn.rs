//! One client connection: read a request, apply the plan, forward it, relay the answer.
//!
//! Each request goes upstream on a fresh connection with `Connection: close`, so upstream
//! framing never has to be tracked across requests. The client side keeps its connection
//! alive: bodies are re-framed with the Content-Length or chunked encoding upstream used, and
//! only a close-delimited upstream body (or a client asking for it) closes the client side.

use std::sync::Arc;

use tokio::io::{self, AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::sleep;

use super::body::{close_gracefully, hang_up, BodySink};
use super::rules::Plan;
use super::state::{LogSlot, Shared};
use crate::wire::{self, Framing, Head};

/// Request bodies are not expected (the library only GETs); this bounds a stray one.
const MAX_REQUEST_BODY: u64 = 64 << 20;
const RELAY_BUF: usize = 64 * 1024;

/// Headers that describe one connection, not the message; never forwarded either way.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// What to do with the client connection after a request.
enum Next {
    KeepAlive,
    Close,
    /// The client left, or a fault already ended the connection.
    Gone,
}

/// One request in flight and what the rules decided for it.
struct Request<'a> {
    head: Head,
    method: String,
    /// Path and query, in origin-form.
    target: String,
    body: Vec<u8>,
    /// The client asked to close after this request.
    close: bool,
    plan: Plan,
    shared: &'a Arc<Shared>,
    slot: LogSlot,
}

impl Request<'_> {
    fn next(&self) -> Next {
        if self.close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}

/// Serves requests on one client connection until it closes.
pub(crate) async fn serve(client: TcpStream, upstream: Arc<str>, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut client = BufReader::new(client);
    loop {
        match one_request(&mut client, &upstream, &shared).await {
            Ok(Next::KeepAlive) => continue,
            Ok(Next::Close) => close_gracefully(client.get_mut()).await,
            Ok(Next::Gone) | Err(_) => {}
        }
        return;
    }
}

async fn one_request(
    client: &mut BufReader<TcpStream>,
    upstream: &str,
    shared: &Arc<Shared>,
) -> io::Result<Next> {
    let Some(head) = read_head(client).await? else {
        return Ok(Next::Gone);
    };
    let mut parts = head.start.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = origin_form(parts.next().unwrap_or("/")).to_string();
    let (slot, plan) = shared.begin(&method, wire::split_target(&target), &head.headers);
    let close = head.wants_close();
    let framing = head.request_framing()?;
    let mut req = Request {
        head,
        method,
        target,
        body: Vec::new(),
        close,
        plan,
        shared,
        slot,
    };

    match framing {
        Framing::Length(n) if n <= MAX_REQUEST_BODY => {
            req.body = vec![0; n as usize];
            client.read_exact(&mut req.body).await?;
        }
        Framing::Empty => {}
        // Chunked or oversized request bodies: the kit has no use for them.
        _ => {
            req.close = true;
            let msg = b"testkit proxy: request body not supported";
            respond(client.get_mut(), &req, (501, &[], msg)).await?;
            return Ok(Next::Close);
        }
    }

    if !req.plan.delay.is_zero() {
        sleep(req.plan.delay).await;
    }
    if let Some(mode) = req.plan.hangup {
        hang_up(client.get_mut(), mode).await;
        return Ok(Next::Gone);
    }
    if let Some(c) = &req.plan.respond {
        respond(client.get_mut(), &req, (c.status, &c.headers, &c.body)).await?;
        return Ok(req.next());
    }
    forward(client.get_mut(), upstream, &req).await
}

/// Sends the request upstream and relays the answer with the plan's faults.
async fn forward(client: &mut TcpStream, upstream: &str, req: &Request<'_>) -> io::Result<Next> {
    let Ok(up) = TcpStream::connect(upstream).await else {
        let msg = b"testkit proxy: upstream refused the connection";
        respond(client, req, (502, &[], msg)).await?;
        return Ok(req.next());
    };
    let _ = up.set_nodelay(true);
    let mut up = BufReader::new(up);

    let mut out = req.head.clone();
    out.start = format!("{} {} HTTP/1.1", req.method, req.target);
    for h in HOP_BY_HOP {
        out.remove(h);
    }
    if req.plan.strip_range {
        out.remove("range");
        out.remove("if-range");
    }
    out.set("Connection", "close");
    up.get_mut().write_all(&out.to_bytes()).await?;
    up.get_mut().write_all(&req.body).await?;

    let Some(resp) = read_head(&mut up).await? else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upstream sent no answer",
        ));
    };
    let status = resp.status()?;
    let framing = resp.response_framing(&req.method)?;
    let close = req.close || framing == Framing::UntilClose;
    let mut back = resp.clone();
    for h in HOP_BY_HOP {
        back.remove(h);
    }
    match framing {
        // A HEAD answer keeps its Content-Length: it describes the entity, not this message.
        Framing::Empty => {}
        Framing::Length(n) => back.set("Content-Length", &n.to_string()),
        Framing::Chunked => back.set("Transfer-Encoding", "chunked"),
        Framing::UntilClose => back.remove("content-length"),
    }
    if close {
        back.set("Connection", "close");
    }
    req.shared.set_status(req.slot, status);
    client.write_all(&back.to_bytes()).await?;

    let base = if status == 206 { range_start(&resp) } else { 0 };
    let chunked = framing == Framing::Chunked;
    let mut sink = BodySink::new(client, chunked, base, &req.plan, req.shared, req.slot);
    if !relay(&mut up, framing, &mut sink).await? || !sink.finish().await? {
        return Ok(Next::Gone);
    }
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

/// Copies the upstream body into the sink; false if a fault ended the client connection.
async fn relay(
    up: &mut BufReader<TcpStream>,
    framing: Framing,
    sink: &mut BodySink<'_>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; RELAY_BUF];
    match framing {
        Framing::Empty => Ok(true),
        Framing::Length(mut left) => {
            while left > 0 {
                let want = (left as usize).min(buf.len());
                let n = up.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream body",
                    ));
                }
                left -= n as u64;
                if !sink.send(&mut buf[..n]).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Framing::UntilClose => loop {
            let n = up.read(&mut buf).await?;
            if n == 0 {
                return Ok(true);
            }
            if !sink.send(&mut buf[..n]).await? {
                return Ok(false);
            }
        },
        Framing::Chunked => {
            let mut line = Vec::new();
            loop {
                line.clear();
                up.read_until(b'\n', &mut line).await?;
                let mut left = wire::chunk_size(&line)?;
                if left == 0 {
                    // Skip trailer fields up to the blank line; the sink sends its own end.
                    loop {
                        line.clear();
                        let n = up.read_until(b'\n', &mut line).await?;
                        if n == 0 || line.trim_ascii().is_empty() {
                            return Ok(true);
                        }
                    }
                }
                while left > 0 {
                    let want = (left as usize).min(buf.len());
                    let n = up.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk"));
                    }
                    left -= n as u64;
                    if !sink.send(&mut buf[..n]).await? {
                        return Ok(false);
                    }
                }
                line.clear();
                up.read_until(b'\n', &mut line).await?;
            }
        }
    }
}

/// Answers without asking upstream.
async fn respond(
    client: &mut TcpStream,
    req: &Request<'_>,
    answer: (u16, &[(String, String)], &[u8]),
) -> io::Result<()> {
    let (status, headers, body) = answer;
    let mut head = Head {
        start: format!("HTTP/1.1 {status} {}", wire::reason(status)),
        headers: headers.to_vec(),
    };
    head.set("Content-Length", &body.len().to_string());
    if req.close {
        head.set("Connection", "close");
    }
    req.shared.set_status(req.slot, status);
    client.write_all(&head.to_bytes()).await?;
    if req.method != "HEAD" {
        req.shared.add_bytes(req.slot, body.len() as u64);
        client.write_all(body).await?;
    }
    client.flush().await
}

/// Reads a head; `None` if the peer closed before sending anything.
pub(crate) async fn read_head(r: &mut (impl AsyncBufRead + Unpin)) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if r.read_until(b'\n', &mut raw).await? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated head",
            ));
        }
        if raw[before..].iter().all(|b| matches!(b, b'\r' | b'\n')) {
            if before == 0 {
                // Stray empty lines between requests are allowed (RFC 9112, section 2.2).
                raw.clear();
                continue;
            }
            raw.truncate(before);
            return Head::parse(&raw).map(Some);
        }
        if raw.len() > wire::MAX_HEAD {
            return Err(wire::bad("head too large"));
        }
    }
}

/// The origin-form of a request target: clients that treat us as a forward proxy send
/// `http://host/path`; upstream wants `/path`.
fn origin_form(target: &str) -> &str {
    match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// The first byte offset of a 206 answer (`Content-Range: bytes S-E/T`).
fn range_start(resp: &Head) -> u64 {
    let range = resp.get("content-range").unwrap_or("");
    let spec = range
        .trim()
        .strip_prefix("bytes")
        .unwrap_or("")
        .trim_start();
    spec.split('-')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

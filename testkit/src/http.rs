//! A minimal blocking HTTP/1.1 client for talking to the loopback registry.
//!
//! The kit does not use `reqwest::blocking` for its own requests: that client owns a tokio
//! runtime and panics when created or dropped inside another runtime, and the library's tests
//! are often `#[tokio::test]`. Plain `std::net` works from any context. One request per
//! connection (`Connection: close`) keeps it simple; speed does not matter on loopback.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::wire::{self, Framing, Head};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header fields in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `addr` ("127.0.0.1:PORT", loopback only) and reads the whole
/// response.
///
/// `target` is a path with optional query, or an absolute `http://` URL whose path is used
/// (registries answer uploads with absolute `Location` URLs). `Host`, `Content-Length` and
/// `Connection` are added here; the caller passes any other headers.
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let sock: SocketAddr = addr.parse().map_err(|_| wire::bad("addr is not IP:PORT"))?;
    // The kit serves tests on this machine only; anything else is a mistake in a test.
    if !sock.ip().is_loopback() {
        return Err(wire::bad("testkit only talks to loopback addresses"));
    }
    let stream = TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    let mut head = Head {
        start: format!("{method} {} HTTP/1.1", path_of(target)),
        ..Head::default()
    };
    head.set("Host", addr);
    for (n, v) in headers {
        head.headers.push((n.to_string(), v.to_string()));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        head.set("Content-Length", &body.len().to_string());
    }
    head.set("Connection", "close");
    let mut writer = &stream;
    writer.write_all(&head.to_bytes())?;
    writer.write_all(body)?;

    let mut reader = BufReader::new(&stream);
    let resp = read_head(&mut reader)?;
    let body = match resp.response_framing(method)? {
        Framing::Empty => Vec::new(),
        Framing::Length(n) => {
            let mut buf = vec![0; usize::try_from(n).map_err(|_| wire::bad("body too big"))?];
            reader.read_exact(&mut buf)?;
            buf
        }
        Framing::Chunked => read_chunked(&mut reader)?,
        Framing::UntilClose => {
            let mut buf = Vec::new();
            reader.read_to_end(&mut buf)?;
            buf
        }
    };
    Ok(Response {
        status: resp.status()?,
        headers: resp.headers,
        body,
    })
}

/// The path-and-query part of `target`, which may be an absolute URL.
fn path_of(target: &str) -> &str {
    let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    else {
        return target;
    };
    rest.find('/').map_or("/", |i| &rest[i..])
}

fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = reader.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no response head",
            ));
        }
        if raw[before..].iter().all(|b| matches!(b, b'\r' | b'\n')) {
            raw.truncate(before);
            return Head::parse(&raw);
        }
        if raw.len() > wire::MAX_HEAD {
            return Err(wire::bad("response head too large"));
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line)?;
        let size = wire::chunk_size(&line)?;
        if size == 0 {
            // Trailer fields, if any, end with an empty line.
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 || line.trim_ascii().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_until(b'\n', &mut line)?;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absolute_urls_lose_scheme_and_host() {
        assert_eq!(
            super::path_of("http://127.0.0.1:5000/v2/x?y=1"),
            "/v2/x?y=1"
        );
        assert_eq!(super::path_of("/v2/"), "/v2/");
        assert_eq!(super::path_of("http://h"), "/");
    }
}

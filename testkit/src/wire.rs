//! HTTP/1.1 message heads: parsing, editing and body framing.
//!
//! Shared by the blocking client (`http`) and the fault proxy, which both speak plain
//! HTTP/1.1 to the loopback registry and need nothing beyond heads and three framings.

use std::io;

/// Largest head accepted; registries send far less, so more means a broken peer.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The start line and header fields of a request or response, in arrival order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

/// How the body after a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304, or a request without Content-Length).
    Empty,
    Length(u64),
    Chunked,
    /// The body ends when the sender closes the connection.
    UntilClose,
}

impl Head {
    /// Parses the lines of a head (without the blank line that ends it).
    pub fn parse(lines: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(lines).map_err(|_| bad("head is not UTF-8"))?;
        let mut it = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let start = it
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("empty head"))?;
        let mut headers = Vec::new();
        for line in it.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad("header without ':'"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Head {
            start: start.to_string(),
            headers,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// Removes every field called `name`.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// Replaces every field called `name` with one field.
    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// The status code of a response head ("HTTP/1.1 200 OK" gives 200).
    pub fn status(&self) -> io::Result<u16> {
        let code = self
            .start
            .split(' ')
            .nth(1)
            .ok_or_else(|| bad("no status code"))?;
        code.parse().map_err(|_| bad("bad status code"))
    }

    /// Whether the peer asked to close the connection after this message.
    pub fn wants_close(&self) -> bool {
        let close_token = self
            .get("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        close_token || self.start.contains("HTTP/1.0")
    }

    /// The framing of a response body, given the request method that caused it.
    pub fn response_framing(&self, method: &str) -> io::Result<Framing> {
        let status = self.status()?;
        if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
            return Ok(Framing::Empty);
        }
        self.body_framing(Framing::UntilClose)
    }

    /// The framing of a request body: without a length field a request has no body.
    pub fn request_framing(&self) -> io::Result<Framing> {
        self.body_framing(Framing::Empty)
    }

    fn body_framing(&self, otherwise: Framing) -> io::Result<Framing> {
        if let Some(te) = self.get("transfer-encoding") {
            if te.to_ascii_lowercase().trim_end().ends_with("chunked") {
                return Ok(Framing::Chunked);
            }
        }
        match self.get("content-length") {
            Some(v) => v
                .parse()
                .map(Framing::Length)
                .map_err(|_| bad("bad Content-Length")),
            None => Ok(otherwise),
        }
    }

    /// The head as bytes, ending with the blank line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str(&self.start);
        out.push_str("\r\n");
        for (n, v) in &self.headers {
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Parses a chunk-size line ("1a2b;ext=1") into the chunk length.
pub(crate) fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| bad("chunk size is not UTF-8"))?;
    let hex = text.trim().split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))
}

/// A standard reason phrase, so canned responses look like a real server's.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Splits a request target into path and query ("/a?b=1" gives ("/a", Some("b=1"))).
pub(crate) fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

pub(crate) fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_frames_a_response() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nX: y\r\n";
        let head = Head::parse(raw).unwrap();
        assert_eq!(head.status().unwrap(), 206);
        assert_eq!(head.get("content-length"), Some("10"));
        assert_eq!(head.response_framing("GET").unwrap(), Framing::Length(10));
        assert_eq!(head.response_framing("HEAD").unwrap(), Framing::Empty);
    }

    #[test]
    fn chunked_beats_length_and_close_is_seen() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n";
        let head = Head::parse(raw).unwrap();
        assert_eq!(head.response_framing("GET").unwrap(), Framing::Chunked);
        assert!(head.wants_close());
        assert_eq!(chunk_size(b"1aF;x=y\r\n").unwrap(), 0x1af);
    }
}

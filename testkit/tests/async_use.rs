//! The kit from inside a tokio runtime, as the library's async tests will use it, and the
//! proxy's keep-alive framing seen on a raw connection.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vicpull_testkit::proxy::Match;
use vicpull_testkit::{push_image, FaultProxy, ImageSpec, Layer, Registry};

/// Reads one response with a Content-Length body; returns (status line, body).
async fn read_response(conn: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut status = String::new();
    conn.read_line(&mut status).await.unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    (status.trim().to_string(), body)
}

#[tokio::test]
async fn one_client_connection_carries_several_requests() {
    let reg = Registry::start();
    let layer = Layer::random(50_000, 5);
    push_image(
        reg.addr(),
        "kit/async",
        "v1",
        &ImageSpec::new(vec![layer.clone()]),
    );
    let proxy = FaultProxy::start(reg.addr());
    proxy.respond(Match::PathContains("/nope".into()), 404, &[], b"none", None);

    let mut conn = BufReader::new(TcpStream::connect(proxy.addr()).await.unwrap());
    let blob = format!("/v2/kit/async/blobs/{}", layer.digest());
    for (path, want_status, want_body) in [
        (blob.as_str(), "HTTP/1.1 200 OK", layer.blob()),
        ("/v2/nope", "HTTP/1.1 404 Not Found", b"none".as_slice()),
        (blob.as_str(), "HTTP/1.1 200 OK", layer.blob()),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr());
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut conn).await;
        assert_eq!(status, want_status);
        assert_eq!(body, want_body);
    }
    assert_eq!(proxy.count_gets(layer.digest()), 2);
    assert_eq!(proxy.total_body_bytes(layer.digest()), 2 * layer.size());
    // Dropping the registry and proxy here must not panic inside the runtime.
}

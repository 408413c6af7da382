//! The front door against hostile clients, over real sockets: slow clients are closed by the
//! timeouts while signed webhooks from others are answered; one address cannot hold every
//! connection; bodies are bounded before they are read; ambiguous framing and cleartext
//! HTTP/2 are refused.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchyard::engine::Lane;
use switchyard::web::front::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "front-app-secret";

fn limits() -> Limits {
    Limits {
        max_connections: 10_000,
        max_connections_per_client: 1_000,
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        body_bytes_in_flight: 64 << 20,
        trusted_proxies: Vec::new(),
    }
}

async fn env(name: &str) -> TestEnv {
    TestEnv::with(name, &redis_url(), |c| c.facebook_app_secret = Some(SECRET.into())).await
}

/// A connection from `source` (another loopback address is another client).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap_or_else(|e| panic!("connect from {source}: {e}"))
}

/// Everything the server writes until it closes the connection (or `WAIT` passes: a panic).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("the server did not close the connection; it wrote {:?}", String::from_utf8_lossy(&out)),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Write `bytes` one at a time, `every` apart, until the server closes; what it wrote.
async fn drip(stream: TcpStream, bytes: Vec<u8>, every: Duration) -> String {
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(closed.is_ok(), "a dripping client was still connected after {WAIT:?}");
    String::from_utf8_lossy(&out).into_owned()
}

fn message(i: usize) -> Vec<u8> {
    json!({"object": "page", "entry": [{"id": "PAGE", "time": 1, "messaging": [{
        "sender": {"id": format!("psid-{i}")}, "recipient": {"id": "PAGE"}, "timestamp": 1,
        "message": {"mid": format!("m-front-{i}"), "text": "hello"}}]}]})
    .to_string()
    .into_bytes()
}

/// A GET from a plain client.
async fn get(url: String) -> reqwest::Response {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Signed Messenger webhooks from 127.0.0.1, one after another on kept-alive connections:
/// the statuses.
async fn send_webhooks(addr: SocketAddr, range: std::ops::Range<usize>) -> Vec<u16> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in range {
        let body = message(i);
        let r = client
            .post(format!("http://{addr}/webhooks/facebook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", meta_sign(SECRET, &body))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("webhook {i}: {e}"));
        statuses.push(r.status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_by_the_timeouts_while_webhooks_are_answered() {
    let env = env("front-slow").await;
    let addr = env.serve_with(limits()).await;
    let mut slow = Vec::new();
    for i in 0..300 {
        let stream = connect_from("127.0.0.2", addr).await;
        slow.push(tokio::spawn(async move {
            match i % 3 {
                // Half a request line, then a header a little at a time: the head never ends.
                0 => ("head", drip(stream, b"POST /webhooks/facebook HTTP/1.1\r\nX-Slow: a\r\n".to_vec(), Duration::from_millis(100)).await),
                // A whole head, then the body a byte at a time.
                1 => {
                    let mut stream = stream;
                    let head = "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
                    stream.write_all(head.as_bytes()).await.unwrap();
                    ("body", drip(stream, b"{".to_vec(), Duration::from_millis(100)).await)
                }
                // One request, then nothing: kept alive, idle.
                _ => {
                    let mut stream = stream;
                    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                    ("idle", read_to_close(&mut stream).await)
                }
            }
        }));
    }
    // Meanwhile a platform delivers its webhooks as usual.
    let statuses = send_webhooks(addr, 0..200).await;
    assert!(statuses.iter().all(|s| *s == 200), "webhooks answered during the attack: {statuses:?}");
    assert_eq!(env.lane_len(Lane::Conversations).await, 200, "every webhook queued");

    for s in slow {
        let (kind, wrote) = s.await.unwrap();
        match kind {
            "head" => assert!(wrote.is_empty(), "a head that never ended got {wrote:?}"),
            "body" => assert!(wrote.starts_with("HTTP/1.1 408"), "a body that never ended got {wrote:?}"),
            _ => assert!(wrote.starts_with("HTTP/1.1 200") && wrote.matches("HTTP/1.1").count() == 1, "{wrote:?}"),
        }
    }
    let metrics = get(format!("http://{addr}/metrics")).await.text().await.unwrap();
    for phase in ["header", "body", "idle"] {
        assert!(
            metrics.contains(&format!("switchyard_http_timeouts_total{{phase=\"{phase}\"}}")),
            "{phase}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let env = env("front-caps").await;
    // Timeouts long enough that no connection held here is closed by them.
    let patient = Limits { header_read_timeout: 4 * WAIT, idle_timeout: 4 * WAIT, ..limits() };
    let addr = env.serve_with(Limits { max_connections_per_client: 50, ..patient.clone() }).await;
    // An address takes its 50, kept open with a request each.
    let mut taken = Vec::new();
    for _ in 0..50 {
        let mut s = connect_from("127.0.0.2", addr).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        taken.push(s);
    }
    // Its next one is refused at once, with an answer that says why.
    let mut extra = connect_from("127.0.0.2", addr).await;
    let refused = read_to_close(&mut extra).await;
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("retry-after: 1"), "{refused:?}");
    assert!(refused.contains("too many open connections"), "{refused:?}");
    // Another client is served meanwhile.
    assert_eq!(send_webhooks(addr, 0..5).await, vec![200; 5]);

    // Past the cap of all connections (a server of its own, no other client about), every new
    // one is refused, whoever it comes from...
    let capped = env.serve_with(Limits { max_connections: 30, ..patient }).await;
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = connect_from("127.0.0.3", capped).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut late = connect_from("127.0.0.4", capped).await;
    assert!(read_to_close(&mut late).await.starts_with("HTTP/1.1 503"));
    // ...until connections close: then they are taken again.
    held.truncate(10);
    wait_until("a closed connection's place is free again", async || {
        let mut s = connect_from("127.0.0.4", capped).await;
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.is_err() {
            return false;
        }
        read_to_close(&mut s).await.starts_with("HTTP/1.1 200")
    })
    .await;
    let metrics = get(format!("http://{addr}/metrics")).await.text().await.unwrap();
    assert!(metrics.contains("switchyard_http_refused_total{reason=\"client_connections\"}"), "{metrics}");
    assert!(metrics.contains("switchyard_http_refused_total{reason=\"connections\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_before_they_are_read() {
    let env = env("front-bodies").await;
    // Timeouts long enough that no body here is ended by them (they have a test of their own).
    let addr = env
        .serve_with(Limits {
            body_bytes_in_flight: 2 << 20,
            header_read_timeout: 4 * WAIT,
            body_read_timeout: 4 * WAIT,
            ..limits()
        })
        .await;
    let big = "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";

    // A declared length over the limit is answered at once, before any body is sent.
    let mut s = connect_from("127.0.0.2", addr).await;
    s.write_all(b"POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("\"too_large\""), "{answer:?}");

    // A body that is being received, slowly: the server has taken it (its reservation made)
    // once it asks for the body with `100 Continue`.
    let hold_body = async |source: &str| {
        let mut s = connect_from(source, addr).await;
        s.write_all(big.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("100 Continue").unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        s.write_all(&vec![b' '; 512 * 1024]).await.unwrap();
        s
    };
    let refused = async |source: &str| {
        let mut s = connect_from(source, addr).await;
        s.write_all(big.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("retry-after: 1"), "{answer:?}");
    };

    // An address sending a body slowly holds its share of the budget (an eighth, at least the
    // largest body): its next body is refused before it is read, and told when to come back...
    let mut senders = vec![hold_body("127.0.0.2").await];
    refused("127.0.0.2").await;
    // ...while others' webhooks are still taken.
    assert_eq!(send_webhooks(addr, 0..3).await, vec![200; 3]);

    // A second address takes the rest of the budget: now every body is refused.
    senders.push(hold_body("127.0.0.5").await);
    refused("127.0.0.3").await;

    // The two senders give up: their reservations go with their connections, and a whole
    // body is taken again.
    drop(senders);
    wait_until("the budget is free again", async || {
        let mut s = connect_from("127.0.0.3", addr).await;
        let head = big.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("an answer").unwrap_or(0);
        buf[..n].starts_with(b"HTTP/1.1 100")
    })
    .await;
    assert_eq!(send_webhooks(addr, 3..6).await, vec![200; 3]);
    assert_eq!(env.lane_len(Lane::Conversations).await, 6, "nothing but the signed webhooks queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_cleartext_http2_are_refused() {
    let env = env("front-framing").await;
    let addr = env.serve().await;

    // Content-Length and Transfer-Encoding together, either order: 400, and the connection
    // closes, so whatever the other reading would have taken as a second request is not run.
    for head in [
        "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n",
    ] {
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        assert!(answer.contains("both Content-Length and Transfer-Encoding"), "{answer:?}");
        assert_eq!(answer.matches("HTTP/1.1").count(), 1, "the smuggled request was not answered: {answer:?}");
    }

    // HTTP/2 with prior knowledge is not spoken: no SETTINGS frame comes back.
    let mut s = connect_from("127.0.0.1", addr).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer:?}");

    // The dashboard loads scripts and styles from itself only.
    let page = get(format!("http://{addr}/login")).await;
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    for directive in ["script-src 'self'", "style-src 'self'", "object-src 'none'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
}

/// A request not answered within `HANDLER_TIMEOUT` (here Redis holds every reply) is answered
/// 408 with the JSON error every other answer has, and counted as a request like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_out_of_time_is_answered_408_in_json_and_counted() {
    let server = RedisProcess::start_on_free_port();
    let proxy = Proxy::start(server.port).await;
    let env = TestEnv::with("front-out-of-time", &proxy.url(), |c| {
        c.handler_timeout = Duration::from_millis(300);
        c.redis_response_timeout = Duration::from_secs(10);
    })
    .await;
    let (router, _) = env.router();
    let id = env.engine.enqueue(switchyard::engine::TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    proxy.hold();
    let r = admin(&router, "GET", &format!("/tasks/{id}"), None).await;
    let message = r.assert_error(axum::http::StatusCode::REQUEST_TIMEOUT, "request_timeout");
    assert!(message.contains("HANDLER_TIMEOUT"), "{message}");
    proxy.heal();
    let metrics = http(&router, "GET", "/metrics", None, None).await.text;
    let line = r#"switchyard_http_requests_total{method="GET",route="/tasks/{id}",status="408"} "#;
    assert!(metrics.contains(line), "the 408 is counted:\n{metrics}");
}

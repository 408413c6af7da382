//! The front door: accepting connections and holding them to account before the router sees
//! a request. One client cannot take the service down:
//!
//! - open connections are capped in all (`MAX_CONNECTIONS`) and per client address
//!   (`MAX_CONNECTIONS_PER_CLIENT`, trusted proxies exempt); past a cap a new connection is
//!   answered a canned 503 and closed, without spawning anything;
//! - a request head must arrive within `HEADER_READ_TIMEOUT` of its first byte (and of the
//!   connection opening), its body within `BODY_READ_TIMEOUT` of the head; a kept-alive
//!   connection with nothing in flight is closed after `IDLE_TIMEOUT`;
//! - the bytes of request bodies being read at once are bounded (`BODY_BYTES_IN_FLIGHT`):
//!   each body reserves its declared length (the whole limit when chunked) before it is read,
//!   one client address at most an eighth of the budget, and when the reservation cannot be
//!   had the answer is 503 with `Retry-After`; a declared length over the limit is answered
//!   413 before a byte of the body is read;
//! - a request head with both `Content-Length` and `Transfer-Encoding` is refused (400), as
//!   such a request is how requests are smuggled past proxies that read the other header.
//!
//! Only HTTP/1.1 (and 1.0) is served. Webhook platforms and load balancers speak HTTP/1.1 to a
//! backend; cleartext HTTP/2 would add a second protocol stack to the attack surface and serve
//! nobody. A TLS-terminating proxy in front can speak HTTP/2 to clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::BODY_LIMIT;
use super::error::ApiError;
use crate::config::Config;

/// How the front door treats connections; from the settings of the same names.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_bytes_in_flight: usize,
    /// Addresses exempt from the per-client cap: the load balancers every client comes through.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        Limits {
            max_connections: c.max_connections,
            max_connections_per_client: c.max_connections_per_client,
            header_read_timeout: c.header_read_timeout,
            body_read_timeout: c.body_read_timeout,
            idle_timeout: c.idle_timeout,
            body_bytes_in_flight: c.body_bytes_in_flight,
            trusted_proxies: c.trusted_proxies.clone(),
        }
    }
}

/// Serve `router` on `listener` until `stop`, then let the requests in flight finish (each
/// connection is told to close after its current answer) and return once every connection has.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let limits = effective(limits);
    let front =
        Arc::new(Front { router, bodies: Bodies::new(limits.body_bytes_in_flight), slots: Slots::default(), limits });
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    let mut last_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of descriptors, most likely: accepting again at once would spin.
                if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "cannot accept connections; pausing briefly");
                    last_warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match front.slots.admit(&front, peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics::counter!("switchyard_http_refused_total", "reason" => reason).increment(1);
                // Written if the socket takes it at once; either way the connection is closed.
                let _ = stream.try_write(REFUSED);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(front.clone(), stream, peer, slot, drain.clone()));
    }
    drop(listener);
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// The answer to a connection past a cap, written without reading its request.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 90\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many open connections; try again shortly\"}}";

/// A connection limit above the descriptors the process may open would never be reached: the
/// process would run out of descriptors first, Redis connections and files included.
fn effective(mut limits: Limits) -> Limits {
    if let Some(fds) = descriptor_limit() {
        let room = fds.saturating_sub(256) as usize;
        if limits.max_connections > room {
            tracing::warn!(
                max_connections = limits.max_connections,
                descriptors = fds,
                using = room,
                "MAX_CONNECTIONS is above what the descriptor limit (ulimit -n) allows; using less"
            );
            limits.max_connections = room.max(1);
        }
    }
    limits
}

/// The process's limit of open descriptors (`ulimit -n`), from `/proc` where there is one.
fn descriptor_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Accept errors that concern one connection only (it went away before it was accepted).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

struct Front {
    router: Router,
    bodies: Arc<Bodies>,
    slots: Slots,
    limits: Limits,
}

// ---------------------------------------------------------------------------------------------
// The budget of bodies being received
// ---------------------------------------------------------------------------------------------

/// Bytes reserved by bodies being received: in all, and per client address, so that a few
/// addresses sending bodies slowly cannot take the whole budget from everyone else.
struct Bodies {
    total: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    client_share: usize,
}

/// A body's reservation, given back when dropped.
struct Reserved {
    bodies: Arc<Bodies>,
    client: IpAddr,
    bytes: usize,
    _permit: OwnedSemaphorePermit,
}

impl Bodies {
    fn new(budget: usize) -> Arc<Bodies> {
        let budget = budget.min(Semaphore::MAX_PERMITS);
        Arc::new(Bodies {
            total: Arc::new(Semaphore::new(budget)),
            per_client: Mutex::new(HashMap::new()),
            client_share: (budget / 8).max(BODY_LIMIT),
        })
    }

    fn reserve(self: &Arc<Self>, client: IpAddr, bytes: usize) -> Option<Reserved> {
        let mut per = self.per_client.lock().expect("per-client bodies");
        let held = per.get(&client).copied().unwrap_or(0);
        if held + bytes > self.client_share {
            return None;
        }
        let permit = self.total.clone().try_acquire_many_owned(u32::try_from(bytes).ok()?).ok()?;
        per.insert(client, held + bytes);
        Some(Reserved { bodies: self.clone(), client, bytes, _permit: permit })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut per = self.bodies.per_client.lock().expect("per-client bodies");
        if let Some(held) = per.get_mut(&self.client) {
            *held -= self.bytes;
            if *held == 0 {
                per.remove(&self.client);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection caps
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Slots {
    open: AtomicU64,
    per_client: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    front: Arc<Front>,
    client: Option<IpAddr>,
}

impl Slots {
    fn admit(&self, front: &Arc<Front>, client: IpAddr) -> Result<Slot, &'static str> {
        let limits = &front.limits;
        if self.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections as u64 {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err("connections");
        }
        let counted = !limits.trusted_proxies.contains(&client);
        if counted {
            let mut per = self.per_client.lock().expect("per-client counts");
            let n = per.entry(client).or_insert(0);
            if *n as usize >= limits.max_connections_per_client {
                drop(per);
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err("client_connections");
            }
            *n += 1;
        }
        metrics::gauge!("switchyard_http_connections").increment(1.0);
        Ok(Slot { front: front.clone(), client: counted.then_some(client) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.front.slots;
        if let Some(client) = self.client {
            let mut per = slots.per_client.lock().expect("per-client counts");
            if let Some(n) = per.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&client);
                }
            }
        }
        slots.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_http_connections").decrement(1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------------

async fn connection(front: Arc<Front>, stream: TcpStream, peer: SocketAddr, slot: Slot, drain: CancellationToken) {
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched { inner: stream, state: state.clone(), scan: HeadScan::default() });
    let service = {
        let (front, state) = (front.clone(), state.clone());
        hyper::service::service_fn(move |req| handle(front.clone(), state.clone(), peer, req))
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The front door's own timers replace hyper's, which would count an idle keep-alive wait
    // as a header read.
    builder.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let watch = watch(&state, &front.limits);
    let mut watch = std::pin::pin!(watch);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            phase = watch.as_mut() => {
                metrics::counter!("switchyard_http_timeouts_total", "phase" => phase).increment(1);
                break;
            }
            _ = drain.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
    drop(slot);
}

/// What a connection is doing, as its timers see it. Times are milliseconds since it opened.
struct ConnState {
    opened: Instant,
    /// Requests whose answers are not yet fully written.
    in_flight: AtomicU32,
    /// When the first byte of the next request head came (+1; 0: none yet).
    head_at: AtomicU64,
    /// When the connection last had nothing in flight (its opening, or an answer's end).
    idle_at: AtomicU64,
    served_one: AtomicBool,
    /// The head being read names both a length and a transfer coding.
    ambiguous: AtomicBool,
    changed: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            head_at: AtomicU64::new(0),
            idle_at: AtomicU64::new(0),
            served_one: AtomicBool::new(false),
            ambiguous: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_at.store(0, Ordering::Release);
        self.served_one.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// A request in flight on its connection, from its head to the end of its answer.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_at.store(s.now(), Ordering::Release);
        s.in_flight.fetch_sub(1, Ordering::AcqRel);
        s.changed.notify_one();
    }
}

/// Resolves, naming the timeout, once the connection has waited too long for a request head
/// or sat idle too long. Never while a request is in flight: its body has a timer of its own,
/// and an answer may stream for as long as its client reads it.
async fn watch(state: &ConnState, limits: &Limits) -> &'static str {
    loop {
        let changed = state.changed.notified();
        if state.in_flight.load(Ordering::Acquire) > 0 {
            changed.await;
            continue;
        }
        let (when, phase) = match state.head_at.load(Ordering::Acquire) {
            0 if state.served_one.load(Ordering::Relaxed) => {
                (state.at(state.idle_at.load(Ordering::Acquire)) + limits.idle_timeout, "idle")
            }
            0 => (state.at(0) + limits.header_read_timeout, "header"),
            at => (state.at(at - 1) + limits.header_read_timeout, "header"),
        };
        if Instant::now() >= when {
            return phase;
        }
        // Woken either way, the wait is worked out again from what the connection does now.
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(when) => {}
        }
    }
}

/// The socket, watched: the first byte of each request head is timed, and head bytes are
/// scanned for a length and a transfer coding given together.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
    scan: HeadScan,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() && self.state.in_flight.load(Ordering::Acquire) == 0 {
            // Bytes while nothing is in flight: the start (or more) of the next request head.
            // (Bytes read together with a body are not scanned; hyper itself lets the
            // transfer coding win over the length and closes the connection after such a
            // request, so nothing can be smuggled through them either.)
            let state = self.state.clone();
            if state.head_at.load(Ordering::Acquire) == 0 {
                state.head_at.store(state.now() + 1, Ordering::Release);
                state.changed.notify_one();
            }
            if self.scan.feed(fresh) {
                state.ambiguous.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Which framing headers the lines of a request head name, line by line across reads.
#[derive(Default)]
struct HeadScan {
    /// The start of the current line, lower-cased, as far as it matters (up to 18 bytes).
    line: [u8; 18],
    len: usize,
    /// Bytes of the current line seen, all of them.
    seen: usize,
    length: bool,
    coding: bool,
}

impl HeadScan {
    /// Feed bytes; true once a head (ended by an empty line) named both headers.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut both = false;
        for &b in bytes {
            match b {
                b'\n' => {
                    let prefix = &self.line[..self.len];
                    if self.seen == 0 || (self.seen == 1 && prefix == b"\r") {
                        both |= self.length && self.coding;
                        self.length = false;
                        self.coding = false;
                    } else if prefix.starts_with(b"content-length:") || prefix.starts_with(b"content-length ") {
                        self.length = true;
                    } else if prefix.starts_with(b"transfer-encoding:") || prefix.starts_with(b"transfer-encoding ") {
                        self.coding = true;
                    }
                    self.len = 0;
                    self.seen = 0;
                }
                _ => {
                    if self.len < self.line.len() {
                        self.line[self.len] = b.to_ascii_lowercase();
                        self.len += 1;
                    }
                    self.seen += 1;
                }
            }
        }
        both
    }
}

// ---------------------------------------------------------------------------------------------
// One request
// ---------------------------------------------------------------------------------------------

async fn handle(
    front: Arc<Front>,
    state: Arc<ConnState>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = state.begin();
    if state.ambiguous.swap(false, Ordering::AcqRel) {
        metrics::counter!("switchyard_http_refused_total", "reason" => "ambiguous_length").increment(1);
        let e = ApiError::BadRequest("a request may not carry both Content-Length and Transfer-Encoding".into());
        return Ok(closing(e.unlogged(), in_flight));
    }
    let has_body = !http_body::Body::is_end_stream(req.body());
    let mut reserved = None;
    if has_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            metrics::counter!("switchyard_http_refused_total", "reason" => "too_large").increment(1);
            let e = ApiError::TooLarge(format!("body is over the {BODY_LIMIT} byte limit"));
            return Ok(closing(e.unlogged(), in_flight));
        }
        let want = declared.unwrap_or(BODY_LIMIT as u64).min(BODY_LIMIT as u64).max(1) as usize;
        let client = super::throttle::client_address(&front.limits.trusted_proxies, peer.ip(), req.headers());
        match front.bodies.reserve(client, want) {
            Some(r) => reserved = Some(r),
            None => {
                metrics::counter!("switchyard_http_refused_total", "reason" => "body_memory").increment(1);
                let e = ApiError::Unavailable("too many request bodies being received; try again shortly".into());
                let mut resp = e.unlogged();
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(closing(resp, in_flight));
            }
        }
    }
    req.extensions_mut().insert(ConnectInfo(peer));
    let timeout = front.limits.body_read_timeout;
    let req = req.map(|b| if has_body { Body::new(Timed::new(b, timeout)) } else { Body::new(b) });
    let resp = match front.router.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    drop(reserved);
    if resp.status() == axum::http::StatusCode::REQUEST_TIMEOUT {
        // The rest of a late body may still come: it is not waited for.
        return Ok(closing(resp, in_flight));
    }
    Ok(resp.map(|body| Body::new(Answer { inner: body, _in_flight: in_flight })))
}

/// An answer after which the connection closes (its request's body may be unread).
fn closing(mut resp: Response<Body>, in_flight: InFlight) -> Response<Body> {
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp.map(|body| Body::new(Answer { inner: body, _in_flight: in_flight }))
}

/// A request body that fails once it has taken longer than its deadline.
struct Timed {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Timed {
    fn new(inner: Incoming, within: Duration) -> Timed {
        Timed { inner, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

/// A request body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyTimedOut;

impl http_body::Body for Timed {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            metrics::counter!("switchyard_http_timeouts_total", "phase" => "body").increment(1);
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body, holding its request in flight until the last byte is written.
struct Answer {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a request failed because its body did not arrive in time.
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(parts: &[&[u8]]) -> bool {
        let mut s = HeadScan::default();
        parts.iter().any(|p| s.feed(p))
    }

    #[test]
    fn a_head_with_both_framing_headers_is_seen_across_reads() {
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(scan(&[head]));
        for cut in 1..head.len() {
            assert!(scan(&[&head[..cut], &head[cut..]]), "split at {cut}");
        }
        assert!(scan(&[b"POST / HTTP/1.1\r\ntransfer-encoding : chunked\r\nCONTENT-LENGTH:4\r\n\r\n"]));
    }

    #[test]
    fn one_framing_header_or_a_look_alike_is_fine() {
        assert!(!scan(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"]));
        // Two requests, one header each: not one head with both.
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}

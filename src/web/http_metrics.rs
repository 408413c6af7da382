//! `switchyard_http_requests_total` and `switchyard_http_request_duration_seconds` for every
//! request, by route pattern (never the raw path: ids would explode the label set) and method
//! (methods outside HTTP's own are counted as `OTHER`).
//!
//! Each request is handled in a `request` span naming its method and route, so its log lines
//! carry them.
//!
//! A tower layer rather than `axum::middleware::from_fn`: that one boxes every request's future
//! and clones the service behind it per request, which cost the webhook path about a tenth of
//! its CPU.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tower::{Layer, Service};

use crate::telemetry::recorder::Handles;
use crate::telemetry::trace;

const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::TRACE,
    Method::CONNECT,
];

#[derive(Clone, Copy, Default)]
pub(super) struct HttpMetricsLayer;

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics { inner }
    }
}

#[derive(Clone)]
pub(super) struct HttpMetrics<S> {
    inner: S,
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Timed<S::Future> {
        let method = METHODS.iter().position(|m| m == req.method()).unwrap_or(METHODS.len());
        let route = req.extensions().get::<MatchedPath>().cloned();
        // Every line logged while the request is handled names it (with `LOG_FORMAT=json`, as
        // fields): the method and the route pattern, never the raw path with its ids.
        let span = tracing::info_span!(
            "request",
            method = METHODS.get(method).map_or("OTHER", Method::as_str),
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            trace_id = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        // A caller's trace context (W3C `traceparent`) is honoured: the request joins its trace.
        let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
        if traceparent.is_some() || trace::enabled() {
            trace::name(
                &span,
                || {
                    let m = METHODS.get(method).map_or("OTHER", Method::as_str);
                    route.as_ref().map_or_else(|| m.to_string(), |r| format!("{m} {}", r.as_str()))
                },
                "server",
            );
            trace::adopt(&span, traceparent);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Timed { inner, started: Instant::now(), method, route, span }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, timed and counted when it completes.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: usize,
        route: Option<MatchedPath>,
        span: tracing::Span,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            if resp.status().is_server_error() {
                trace::failed(this.span, resp.status().as_str());
            }
            record(this.route.as_ref(), *this.method, resp.status().as_u16(), this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(out)
    }
}

fn record(route: Option<&MatchedPath>, m: usize, status: u16, seconds: f64) {
    static COUNTERS: LazyLock<Handles<metrics::Counter>> = LazyLock::new(Handles::new);
    static DURATIONS: LazyLock<Handles<metrics::Histogram>> = LazyLock::new(Handles::new);
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let method = METHODS.get(m).map_or("OTHER", Method::as_str);
    let variant = (m as u32) << 16 | u32::from(status);
    COUNTERS
        .get(route, variant, || {
            let (method, route, status) = (method.to_owned(), route.to_owned(), status.to_string());
            metrics::counter!("switchyard_http_requests_total", "method" => method, "route" => route, "status" => status)
        })
        .increment(1);
    DURATIONS
        .get(route, m as u32, || {
            let (method, route) = (method.to_owned(), route.to_owned());
            metrics::histogram!("switchyard_http_request_duration_seconds", "method" => method, "route" => route)
        })
        .record(seconds);
}

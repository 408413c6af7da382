//! HTTP: the JSON API, health, readiness and metrics. Handlers are thin: extract, call one
//! engine function, map the result.

mod api;
pub(crate) mod auth;
mod conversations;
mod dashboard;
mod error;
mod events;
pub mod front;
mod http_metrics;
pub mod openapi;
pub mod throttle;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::Engine;
use error::ApiError;

/// The raw body, whatever its content type; over the limit → 413 as JSON.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = error::ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(error::ApiError::TooLarge(format!("body is over the {} byte limit", BODY_LIMIT)))
            }
            Err(e) if front::is_body_timeout(&e) => {
                Err(error::ApiError::RequestTimeout("the request body did not arrive in time".into()))
            }
            Err(e) => Err(error::ApiError::BadRequest(e.body_text())),
        }
    }
}

/// A query string, a bad one answered as the JSON 400 every other error is.
pub struct JsonQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for JsonQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(q)) => Ok(JsonQuery(q)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub admin_token: Arc<String>,
    /// Redis reachable and the groups present, as last checked.
    pub ready: Arc<AtomicBool>,
    /// The process is shutting down: `/readyz` answers 503 so load balancers send no more.
    pub draining: Arc<AtomicBool>,
    pub prometheus: PrometheusHandle,
    /// Google's signing keys for Pub/Sub push tokens, when Pub/Sub is configured.
    pub jwks: Option<Arc<crate::ingest::jwt::Jwks>>,
    /// Wrong admin tokens, counted per client address.
    pub auth_throttle: Arc<throttle::AuthThrottle>,
}

/// Export the front door's and the admin token's counters at zero for every reason, phase and
/// surface they count, so dashboards and alert rules see 0 from the first scrape.
pub fn metrics_at_zero() {
    for reason in ["connections", "client_connections", "too_large", "body_memory", "ambiguous_length"] {
        metrics::counter!("switchyard_http_refused_total", "reason" => reason).increment(0);
    }
    for phase in ["header", "body", "idle"] {
        metrics::counter!("switchyard_http_timeouts_total", "phase" => phase).increment(0);
    }
    for surface in ["api", "login"] {
        metrics::counter!("switchyard_auth_failures_total", "surface" => surface).increment(0);
        metrics::counter!("switchyard_auth_throttled_total", "surface" => surface).increment(0);
    }
    metrics::gauge!("switchyard_http_connections").increment(0.0);
}

/// The routes of the JSON API, the webhooks, health and metrics, each registered with its
/// OpenAPI description (`routes!` takes a handler's `#[utoipa::path]`): a route cannot be served
/// without being in the document. The admin routes are apart, for the token check to be layered
/// on them and their security to be written in the document ([`openapi::openapi`]).
pub(crate) struct ApiRoutes {
    /// Health, readiness, metrics and the document itself: no token.
    pub public: OpenApiRouter<AppState>,
    /// Everything behind the admin token.
    pub admin: OpenApiRouter<AppState>,
    /// `/webhooks/...`: each platform's own signature or token.
    pub webhooks: OpenApiRouter<AppState>,
}

pub(crate) fn api_routes() -> ApiRoutes {
    let public = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi::openapi_json));
    let admin = OpenApiRouter::new()
        .routes(routes!(api::enqueue, api::history))
        .routes(routes!(api::scheduled))
        .routes(routes!(api::task_status))
        .routes(routes!(api::run_now))
        .routes(routes!(events::task_events))
        .routes(routes!(events::all_events))
        .routes(routes!(api::cancel))
        .routes(routes!(api::conversation_task_status))
        .routes(routes!(api::conversation_task_cancel))
        .routes(routes!(api::queues_status))
        .routes(routes!(api::active))
        .routes(routes!(conversations::message))
        .routes(routes!(conversations::webhook_interaction))
        .routes(routes!(conversations::get))
        .routes(routes!(conversations::continue_conversation))
        .routes(routes!(api::report_request))
        .routes(routes!(api::report_latest))
        .routes(routes!(api::lane_pause))
        .routes(routes!(api::schedules))
        .routes(routes!(api::schedule_run))
        .routes(routes!(api::dlq_list))
        .routes(routes!(api::dlq_redrive))
        .routes(routes!(api::dlq_show, api::dlq_delete));
    ApiRoutes { public, admin, webhooks: webhooks::routes() }
}

pub fn router(state: AppState) -> Router {
    let handler_timeout = state.engine.config().handler_timeout;
    let ApiRoutes { public, admin, webhooks } = api_routes();
    let admin = admin.route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    let (api, _) = public.merge(admin).merge(webhooks).split_for_parts();
    Router::new()
        .merge(api)
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, handler_timeout))
        .layer(middleware::map_response(move |resp: Response| async move { out_of_time(resp, handler_timeout) }))
        // Outermost: a request out of time is counted, logged and traced like any other.
        .layer(http_metrics::HttpMetricsLayer)
        .with_state(state)
}

/// `GET /healthz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process serves", body = Health)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(Health { status: "ok" })
}

/// `GET /readyz`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    reason: Option<&'static str>,
}

/// Readiness: Redis answers and the consumer groups exist, and the process is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready: `{\"ready\": true}`", body = Readiness),
    (status = 503, description = "Not ready (Redis unreachable, consumer groups missing) or shutting down", body = Readiness),
))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Readiness { ready: false, reason: Some("shutting down") }),
        )
            .into_response();
    }
    if state.ready.load(Ordering::Relaxed) {
        axum::Json(Readiness { ready: true, reason: None }).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Readiness { ready: false, reason: Some("Redis unreachable or consumer groups missing") }),
        )
            .into_response()
    }
}

/// Prometheus text format (docs/metrics.md).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "The metrics, in Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
))]
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render())
}

/// The timeout layer answers a request out of time 408 with an empty body: give it the JSON
/// error every other answer has.
fn out_of_time(resp: Response, limit: Duration) -> Response {
    use http_body::Body as _;
    if resp.status() == StatusCode::REQUEST_TIMEOUT && resp.body().size_hint().exact() == Some(0) {
        let limit = humantime::format_duration(limit);
        return ApiError::RequestTimeout(format!(
            "no answer within {limit} (HANDLER_TIMEOUT); the work done so far stays done"
        ))
        .into_response();
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(error::ErrorBody::new("method_not_allowed", "method not allowed on this route")),
    )
        .into_response()
}

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
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

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

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/tasks", post(api::enqueue).get(api::history))
        .route("/tasks/scheduled", get(api::scheduled))
        .route("/tasks/{id}", get(api::task_status))
        .route("/tasks/{id}/run", post(api::run_now))
        .route("/tasks/{id}/events", get(events::task_events))
        .route("/events", get(events::all_events))
        .route("/tasks/{id}/cancel", post(api::cancel))
        .route("/conversations/tasks/{id}/status", get(api::task_status))
        .route("/conversations/tasks/{id}/cancel", post(api::cancel))
        .route("/conversations/tasks/queues/status", get(api::queues_status))
        .route("/conversations/tasks/active", get(api::active))
        .route("/conversations/message", post(conversations::message))
        .route("/conversations/webhook-interaction", post(conversations::webhook_interaction))
        .route("/conversations/{id}", get(conversations::get))
        .route("/conversations/{id}/continue", post(conversations::continue_conversation))
        .route("/analytics/reports", post(api::report_request))
        .route("/analytics/reports/latest", get(api::report_latest))
        .route("/lanes/{lane}/{action}", post(api::lane_pause))
        .route("/schedules", get(api::schedules))
        .route("/schedules/{name}/run", post(api::schedule_run))
        .route("/dlq", get(api::dlq_list))
        .route("/dlq/redrive", post(api::dlq_redrive))
        .route("/dlq/{id}", get(api::dlq_show).delete(api::dlq_delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(admin)
        .merge(webhooks::router())
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(http_metrics::HttpMetricsLayer)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"ready": false, "reason": "shutting down"})))
            .into_response();
    }
    if state.ready.load(Ordering::Relaxed) {
        axum::Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"ready": false, "reason": "Redis unreachable or consumer groups missing"})),
        )
            .into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.prometheus.render())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route"}})),
    )
        .into_response()
}

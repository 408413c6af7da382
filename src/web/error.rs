//! Errors as JSON responses: `{"error": {"code", "message"}}` with the right status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An idempotency key re-used with another kind or payload: the first task's id.
    #[error("the idempotency key was used by task {0} with another kind or payload")]
    IdempotencyConflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// The work behind the request failed (a task ended FAILURE or REVOKED).
    #[error("{0}")]
    Upstream(String),
    /// The work behind the request did not finish in time; it goes on in the background.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
    /// The request itself did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// Too many wrong admin tokens from this address: how long until it may try again.
    #[error("too many wrong admin tokens from this address; try again in {} s", retry_secs(*.0))]
    Throttled(std::time::Duration),
}

/// The body of every error answer of the API and the webhooks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no task with id 0193..."}}))]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
    /// Only with `idempotency_conflict`: the first task's id, the task that used the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task_id: Option<String>,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, for programs.
    #[schema(value_type = String, example = "not_found")]
    pub(crate) code: &'static str,
    /// For people; may change.
    pub(crate) message: String,
}

impl ErrorBody {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code, message: message.into() }, task_id: None }
    }
}

/// A wait as whole seconds for `Retry-After` (at least one).
fn retry_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::IdempotencyConflict(_) => (StatusCode::CONFLICT, "idempotency_conflict"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "task_failed"),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        if let EngineError::Redis(r) = &e
            && r.code() == Some("OOM")
        {
            return ApiError::Unavailable("Redis is out of memory; try again shortly".into());
        }
        if e.is_unavailable() {
            return ApiError::Unavailable("Redis is unreachable; try again shortly".into());
        }
        match e {
            EngineError::UnknownKind(_) | EngineError::BadInput(_) => ApiError::BadRequest(e.to_string()),
            EngineError::NotFound(_) | EngineError::NoSchedule(_) => ApiError::NotFound(e.to_string()),
            EngineError::Finished { .. } | EngineError::NotLater(_) => ApiError::Conflict(e.to_string()),
            EngineError::IdempotencyConflict(task_id) => ApiError::IdempotencyConflict(task_id),
            EngineError::LaneFull(_) | EngineError::MemoryFull { .. } | EngineError::NotReplicated(_) => {
                ApiError::Unavailable(e.to_string())
            }
            EngineError::Redis(_) | EngineError::PartitionsDiffer { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        self.unlogged()
    }
}

impl ApiError {
    /// The answer, without the log line a server error gets: for refusals counted in a metric
    /// instead, which a hostile client could otherwise turn into a flood of log lines.
    pub(crate) fn unlogged(self) -> Response {
        let (status, code) = self.status_and_code();
        // Internal details stay in the log; the answer names the kind of failure.
        let message = match &self {
            ApiError::Internal(_) => "internal error; see the server log".to_string(),
            other => other.to_string(),
        };
        let mut body = ErrorBody::new(code, message);
        if let ApiError::IdempotencyConflict(task_id) = &self {
            // The first task, where a client reads a task id.
            body.task_id = Some(task_id.clone());
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ApiError::Throttled(wait) = &self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(*wait).max(1)));
        }
        resp
    }
}

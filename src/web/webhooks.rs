//! `/webhooks/...`: handshakes, verification, parsing (by `ingest`), and the answer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::openapi::{BodyErrors, StoreErrors};
use super::{AppState, RawBody};
use crate::ingest::{Accepted, accept, count_rejected, google, meta, verify};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(facebook_handshake, facebook))
        .routes(routes!(pubsub))
        .routes(routes!(rbm_handshake_get, rbm))
        .routes(routes!(generic))
}

/// A webhook's events, stored.
#[derive(Serialize, ToSchema)]
struct WebhookAccepted {
    /// `accepted`.
    #[schema(value_type = String, example = "accepted")]
    status: &'static str,
    /// New events, now queued.
    accepted: usize,
    /// Events seen before; nothing queued for them.
    duplicates: usize,
    /// Items that name no event Switchyard can read, each queued for the dead-letter queue.
    unreadable: usize,
}

fn answer(a: Accepted) -> Response {
    let Accepted { accepted, duplicates, unreadable } = a;
    axum::Json(WebhookAccepted { status: "accepted", accepted, duplicates, unreadable }).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn rejected(platform: &'static str, e: ApiError) -> ApiError {
    count_rejected(platform);
    tracing::info!(platform, reason = %e, "webhook rejected");
    e
}

fn not_configured(what: &str) -> ApiError {
    ApiError::NotFound(format!("{what} is not configured on this deployment"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Handshake {
    /// `subscribe`.
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    /// `FACEBOOK_VERIFY_TOKEN`.
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    /// Answered back as it is.
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription handshake: answers `hub.challenge` when `hub.verify_token` is the
/// configured one.
#[utoipa::path(get, path = "/webhooks/facebook", tag = "webhooks",
    params(Handshake),
    responses(
        (status = 200, description = "`hub.challenge`, as it was given", content_type = "text/plain", body = String),
        (status = 403, description = "The handshake failed (`forbidden`)", body = ErrorBody),
    ))]
async fn facebook_handshake(State(s): State<AppState>, q: Result<Query<Handshake>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else { return ApiError::Forbidden("verification failed".into()).into_response() };
    let expected = s.engine.config().facebook_verify_token.as_deref();
    match (expected, q.mode.as_deref(), q.verify_token.as_deref(), q.challenge) {
        (Some(want), Some("subscribe"), Some(got), Some(challenge)) if verify::same_secret(want, got) => {
            (StatusCode::OK, challenge).into_response()
        }
        _ => ApiError::Forbidden("verification failed".into()).into_response(),
    }
}

/// Messenger, Instagram and WhatsApp Cloud API events, signed with `X-Hub-Signature-256`.
#[utoipa::path(post, path = "/webhooks/facebook", tag = "webhooks",
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the body's HMAC-SHA256 with `FACEBOOK_APP_SECRET`")),
    request_body(content = Object, description = "Meta's webhook payload (`object`, `entry`)", content_type = "application/json"),
    responses(
        (status = 200, description = "Every event stored", body = WebhookAccepted),
        (status = 401, description = "The signature is missing or wrong (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "`FACEBOOK_APP_SECRET` is not configured", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
async fn facebook(State(s): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let secret =
        s.engine.config().facebook_app_secret.as_deref().ok_or_else(|| not_configured("FACEBOOK_APP_SECRET"))?;
    verify::check_sha256(secret.as_bytes(), &body, header(&headers, "x-hub-signature-256"))
        .map_err(|why| rejected("facebook", ApiError::Unauthorized(why.into())))?;
    let events = meta::parse(&body).map_err(|e| rejected("facebook", ApiError::BadRequest(e.to_string())))?;
    Ok(answer(accept(&s.engine, events).await?))
}

/// Google Cloud Pub/Sub push, with an OIDC token.
#[utoipa::path(post, path = "/webhooks/google/pubsub", tag = "webhooks",
    params(("Authorization" = String, Header, description = "`Bearer` and Google's OIDC token for the configured audience and service account")),
    request_body(content = Object, description = "Pub/Sub's push envelope (`message`, `subscription`)", content_type = "application/json"),
    responses(
        (status = 200, description = "The event stored", body = WebhookAccepted),
        (status = 401, description = "The token is missing or wrong (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "Pub/Sub is not configured", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
async fn pubsub(State(s): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let c = s.engine.config();
    let (Some(aud), Some(sa), Some(jwks)) =
        (c.google_pubsub_audience.as_deref(), c.google_pubsub_service_account.as_deref(), s.jwks.as_ref())
    else {
        return Err(not_configured("GOOGLE_PUBSUB_AUDIENCE / GOOGLE_PUBSUB_SERVICE_ACCOUNT"));
    };
    let token = header(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .ok_or_else(|| rejected("pubsub", ApiError::Unauthorized("missing bearer token".into())))?;
    jwks.verify(token.trim(), aud, sa).await.map_err(|why| rejected("pubsub", ApiError::Unauthorized(why)))?;
    let env = google::envelope(&body).map_err(|e| rejected("pubsub", ApiError::BadRequest(e.to_string())))?;
    Ok(answer(accept(&s.engine, vec![google::pubsub_event(&env)].into()).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RbmHandshake {
    /// `GOOGLE_RBM_CLIENT_TOKEN`.
    #[serde(rename = "clientToken")]
    client_token: Option<String>,
    /// Answered back as it is.
    secret: Option<String>,
}

fn rbm_handshake(configured: Option<&str>, h: RbmHandshake) -> Response {
    match (configured, h.client_token.as_deref(), h.secret) {
        (Some(want), Some(got), Some(secret)) if verify::same_secret(want, got) => {
            (StatusCode::OK, secret).into_response()
        }
        _ => ApiError::Forbidden("clientToken does not match".into()).into_response(),
    }
}

/// RBM's handshake: answers `secret` when `clientToken` is the configured one.
#[utoipa::path(get, path = "/webhooks/google/rbm", tag = "webhooks",
    params(RbmHandshake),
    responses(
        (status = 200, description = "`secret`, as it was given", content_type = "text/plain", body = String),
        (status = 403, description = "The handshake failed (`forbidden`)", body = ErrorBody),
    ))]
async fn rbm_handshake_get(State(s): State<AppState>, h: Result<Query<RbmHandshake>, QueryRejection>) -> Response {
    let Ok(Query(h)) = h else { return ApiError::Forbidden("clientToken does not match".into()).into_response() };
    rbm_handshake(s.engine.config().google_rbm_client_token.as_deref(), h)
}

/// RCS Business Messaging: events signed with `X-Goog-Signature`, or the handshake posted as
/// `{"clientToken", "secret"}`.
#[utoipa::path(post, path = "/webhooks/google/rbm", tag = "webhooks",
    params(("X-Goog-Signature" = Option<String>, Header, description = "Base64 HMAC-SHA512 of the message's data with `GOOGLE_RBM_CLIENT_TOKEN`; not on a handshake")),
    request_body(content = Object, description = "RBM's push envelope, or a handshake", content_type = "application/json"),
    responses(
        (status = 200, description = "The event stored (`application/json`), or the handshake's `secret` (`text/plain`)",
            content(
                (WebhookAccepted = "application/json"),
                (String = "text/plain"),
            )),
        (status = 401, description = "The signature is missing or wrong (`unauthorized`)", body = ErrorBody),
        (status = 403, description = "The handshake failed (`forbidden`)", body = ErrorBody),
        (status = 404, description = "`GOOGLE_RBM_CLIENT_TOKEN` is not configured", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
async fn rbm(State(s): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let token =
        s.engine.config().google_rbm_client_token.clone().ok_or_else(|| not_configured("GOOGLE_RBM_CLIENT_TOKEN"))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| rejected("rbm", ApiError::BadRequest(format!("body is not JSON: {e}"))))?;
    if v.get("clientToken").is_some() && v.get("message").is_none() {
        let h: RbmHandshake = serde_json::from_value(v).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        return Ok(rbm_handshake(Some(&token), h));
    }
    let env = google::envelope(&body).map_err(|e| rejected("rbm", ApiError::BadRequest(e.to_string())))?;
    verify::check_rbm(token.as_bytes(), &env.data, header(&headers, "x-goog-signature"))
        .map_err(|why| rejected("rbm", ApiError::Unauthorized(why.into())))?;
    // Signed by the platform: data that names no event is kept for the dead-letter queue, not
    // refused (a refused push is redelivered until Pub/Sub gives up on it).
    let batch = match google::rbm_event(&env) {
        Ok(ev) => vec![ev].into(),
        Err(e) => {
            crate::ingest::Batch { events: Vec::new(), unreadable: vec![google::rbm_unreadable(&env, e.to_string())] }
        }
    };
    Ok(answer(accept(&s.engine, batch).await?))
}

/// Any system that signs its events with a shared secret (`GENERIC_SECRETS`).
#[utoipa::path(post, path = "/webhooks/generic/{source}", tag = "webhooks",
    params(
        ("source" = String, Path, description = "A source named in `GENERIC_SECRETS`"),
        ("X-Signature-256" = String, Header, description = "`sha256=` and the body's HMAC-SHA256 with the source's secret"),
        ("X-Event-Id" = Option<String>, Header, description = "The event's id, for deduplication"),
    ),
    request_body(content = Object, description = "Any JSON", content_type = "application/json"),
    responses(
        (status = 200, description = "The event stored", body = WebhookAccepted),
        (status = 401, description = "The signature is missing or wrong (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "An unknown source", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
async fn generic(
    State(s): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let secret = s
        .engine
        .config()
        .generic_secrets
        .get(&source)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("unknown source `{source}`")))?;
    verify::check_sha256(secret.as_bytes(), &body, header(&headers, "x-signature-256"))
        .map_err(|why| rejected("generic", ApiError::Unauthorized(why.into())))?;
    let event_id = header(&headers, "x-event-id").map(str::to_string);
    let ev = crate::ingest::generic_event(&source, event_id, &body)
        .map_err(|why| rejected("generic", ApiError::BadRequest(why)))?;
    Ok(answer(accept(&s.engine, vec![ev].into()).await?))
}

//! `/webhooks/...`: handshakes, verification, parsing (by `ingest`), and the answer.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::{AppState, RawBody};
use crate::ingest::{Accepted, accept, count_rejected, google, meta, verify};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/facebook", get(facebook_handshake).post(facebook))
        .route("/webhooks/google/pubsub", post(pubsub))
        .route("/webhooks/google/rbm", get(rbm_handshake_get).post(rbm))
        .route("/webhooks/generic/{source}", post(generic))
}

fn answer(a: Accepted) -> Response {
    let body = format!(
        r#"{{"status":"accepted","accepted":{},"duplicates":{},"unreadable":{}}}"#,
        a.accepted, a.duplicates, a.unreadable
    );
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
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

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

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

async fn facebook(State(s): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response, ApiError> {
    let secret =
        s.engine.config().facebook_app_secret.as_deref().ok_or_else(|| not_configured("FACEBOOK_APP_SECRET"))?;
    verify::check_sha256(secret.as_bytes(), &body, header(&headers, "x-hub-signature-256"))
        .map_err(|why| rejected("facebook", ApiError::Unauthorized(why.into())))?;
    let events = meta::parse(&body).map_err(|e| rejected("facebook", ApiError::BadRequest(e.to_string())))?;
    Ok(answer(accept(&s.engine, events).await?))
}

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

#[derive(Deserialize)]
struct RbmHandshake {
    #[serde(rename = "clientToken")]
    client_token: Option<String>,
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

async fn rbm_handshake_get(State(s): State<AppState>, h: Result<Query<RbmHandshake>, QueryRejection>) -> Response {
    let Ok(Query(h)) = h else { return ApiError::Forbidden("clientToken does not match".into()).into_response() };
    rbm_handshake(s.engine.config().google_rbm_client_token.as_deref(), h)
}

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

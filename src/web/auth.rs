//! The admin token: `Authorization: Bearer <token>` on everything but webhooks, health and
//! metrics. Compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::engine::EngineError;

pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The bearer token, or (for reads) the dashboard's session cookie.
pub(crate) async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(token) if token_matches(&state.admin_token, token) => next.run(req).await,
        None if api_session_ok(&state, req.method(), req.headers()).await => next.run(req).await,
        _ => ApiError::Unauthorized("missing or wrong admin token".into()).into_response(),
    }
}

/// 32 random bytes from the kernel, hex-encoded. Without the kernel's randomness there is no
/// safe token: that is fatal, never a predictable fallback.
pub(crate) fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("the kernel's randomness (/dev/urandom) is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// The dashboard's sessions: a cookie naming a session kept in Redis.

/// The session cookie's name.
pub(crate) const COOKIE: &str = "sy_session";

/// How long a session lasts.
pub(crate) const SESSION_SECONDS: u64 = 12 * 3600;

/// A logged-in operator's session.
pub(crate) struct Session {
    pub id: String,
    /// The token every state-changing request of the session must carry.
    pub csrf: String,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// What a session records of the admin token it was opened with: a change of token closes
/// every session opened with the old one.
fn token_mark(admin_token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(format!("switchyard-session\n{admin_token}").as_bytes())[..16])
}

/// The session the request's cookie names, if it is still open (`Err` when Redis cannot tell).
pub(crate) async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, EngineError> {
    let Some(id) = cookie(headers, COOKIE).filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(None);
    };
    let value = state.engine.session(&id).await?;
    Ok(value.and_then(|v| {
        let (csrf, mark) = v.split_once(' ')?;
        token_matches(&token_mark(&state.admin_token), mark).then(|| Session { id, csrf: csrf.to_string() })
    }))
}

/// Open a session for an operator who gave the admin token: its id (the cookie's value).
pub(crate) async fn open_session(state: &AppState) -> Result<String, EngineError> {
    let (id, csrf) = (random_token(), random_token());
    let value = format!("{csrf} {}", token_mark(&state.admin_token));
    state.engine.open_session(&id, &value, std::time::Duration::from_secs(SESSION_SECONDS)).await?;
    Ok(id)
}

/// Whether a request may use the JSON API on the strength of a dashboard session: reads only
/// (writes through the API need the bearer token).
pub(crate) async fn api_session_ok(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(session(state, headers).await, Ok(Some(_)))
}

//! The admin token: `Authorization: Bearer <token>` on everything but webhooks, health and
//! metrics. Compared in constant time, without telling its length; a client address that gives
//! wrong ones too often is made to wait (`throttle`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::engine::EngineError;

/// Whether `given` is `expected`: their SHA-256 digests compared in constant time, so neither
/// the place of the first difference nor the token's length shows in the time taken.
pub(crate) fn token_matches(expected: &str, given: &str) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(expected.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())))
}

/// The address a request comes from, as the throttle of wrong tokens counts it.
pub(crate) struct Client(pub IpAddr);

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Client, Self::Rejection> {
        Ok(Client(client_of(state, &parts.extensions, &parts.headers)))
    }
}

fn client_of(state: &AppState, extensions: &Extensions, headers: &HeaderMap) -> IpAddr {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    state.auth_throttle.client(peer, headers)
}

/// Whether `given` is the admin token, from `client` on `surface` (`api`, `login`). An address
/// that gave wrong ones too often is refused before the comparison (`Err` with how long to
/// wait); a wrong one counts against its address. Both are counted in metrics.
pub(crate) fn admit(state: &AppState, client: IpAddr, given: &str, surface: &'static str) -> Result<bool, Duration> {
    if let Err(wait) = state.auth_throttle.check(client) {
        metrics::counter!("switchyard_auth_throttled_total", "surface" => surface).increment(1);
        return Err(wait);
    }
    if token_matches(&state.admin_token, given) {
        return Ok(true);
    }
    state.auth_throttle.failed(client);
    metrics::counter!("switchyard_auth_failures_total", "surface" => surface).increment(1);
    tracing::debug!(%client, surface, "wrong admin token");
    Ok(false)
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
        Some(token) => match admit(&state, client_of(&state, req.extensions(), req.headers()), token, "api") {
            Ok(true) => next.run(req).await,
            Ok(false) => ApiError::Unauthorized("missing or wrong admin token".into()).into_response(),
            Err(wait) => ApiError::Throttled(wait).into_response(),
        },
        None if api_session_ok(&state, req.method(), req.headers()).await => next.run(req).await,
        None => ApiError::Unauthorized("missing or wrong admin token".into()).into_response(),
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

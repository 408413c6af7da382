//! The admin token: `Authorization: Bearer <token>` on everything but webhooks, health and
//! metrics. Compared in constant time.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The bearer token, or (for reads) the dashboard's session cookie.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(token) if token_matches(&state.admin_token, token) => next.run(req).await,
        None if super::dashboard::api_session_ok(&state, req.method(), req.headers()).await => next.run(req).await,
        _ => ApiError::Unauthorized("missing or wrong admin token".into()).into_response(),
    }
}

/// 32 random bytes from the kernel, hex-encoded. Without the kernel's randomness there is no
/// safe token: that is fatal, never a predictable fallback.
pub fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("the kernel's randomness (/dev/urandom) is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

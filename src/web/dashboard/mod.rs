//! The operator's dashboard: server-rendered pages (askama), live parts refreshed with htmx.
//!
//! Every figure comes from Redis, so it is the deployment's, not this process's. Logging in
//! with the admin token opens a session kept in Redis (it survives restarts and is shared by
//! every process) behind an HttpOnly, SameSite=Strict cookie. Every state-changing action is a
//! POST that must carry the session's CSRF token (a form field, or the `X-CSRF-Token` header htmx
//! sends) and must not come from another site; no page or action is served without a session.

mod conversations;
mod dlq;
mod login;
mod overview;
mod schedules;
mod tasks;
mod workers;

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Session, session, token_matches};
use super::{AppState, RawBody};
use crate::engine::{Engine, EngineError, Lane, format_ms};
use conversations::conversations;
use dlq::{dlq, dlq_delete, dlq_redrive};
use login::{login, login_page, logout};
use overview::{graphs, lane_pause, lanes, overview};
use schedules::{schedule_run, schedules};
use tasks::{active, cancel, retry, tasks};
use workers::workers;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/static/htmx.min.js", get(htmx))
        .route("/static/switchyard.css", get(css))
        .route("/static/task-live.js", get(task_live))
        .route("/static/confirm.js", get(confirm))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/", get(overview))
        .route("/ui/lanes", get(lanes))
        .route("/ui/lanes/{lane}/{action}", post(lane_pause))
        .route("/ui/graphs", get(graphs))
        .route("/ui/tasks", get(tasks))
        .route("/ui/tasks/{id}/cancel", post(cancel))
        .route("/ui/tasks/{id}/retry", post(retry))
        .route("/ui/tasks/{id}/run", post(tasks::run_now))
        .route("/ui/active", get(active))
        .route("/ui/dlq", get(dlq))
        .route("/ui/dlq/redrive", post(dlq_redrive))
        .route("/ui/dlq/delete", post(dlq_delete))
        .route("/ui/workers", get(workers))
        .route("/ui/conversations", get(conversations))
        .route("/ui/schedules", get(schedules))
        .route("/ui/schedules/{name}/run", post(schedule_run))
        .layer(axum::middleware::map_response(security_headers))
}

async fn htmx() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", include_str!("../../../static/htmx.min.js"))
}

async fn task_live() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", include_str!("../../../static/task-live.js"))
}

async fn confirm() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", include_str!("../../../static/confirm.js"))
}

async fn css() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", include_str!("../../../static/switchyard.css"))
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.get("hx-request").is_some_and(|v| v == "true")
}

/// The request's session, or the way to the login page: a redirect for a page, a 401 telling
/// htmx to go there for a fragment.
async fn require(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    match session(state, headers).await.map_err(failed)? {
        Some(s) => Ok(s),
        None if is_htmx(headers) => {
            Err((StatusCode::UNAUTHORIZED, [("hx-redirect", "/login")], "log in again").into_response())
        }
        None => Err(Redirect::to("/login").into_response()),
    }
}

/// A POST from a logged-in operator on this site, with the session's CSRF token.
async fn require_post(state: &AppState, headers: &HeaderMap, form: &Form) -> Result<Session, Response> {
    let s = require(state, headers).await?;
    // Browsers say where a request comes from; the CSRF token is the check that always holds
    // (Origin is not compared with Host: proxies rewrite Host).
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site" || v == "same-site");
    let given = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or_else(|| form.one("csrf"));
    if cross_site || !given.is_some_and(|t| token_matches(&s.csrf, t)) {
        return Err(
            (StatusCode::FORBIDDEN, Html("<p>Forbidden: this action needs the page's CSRF token.</p>")).into_response()
        );
    }
    Ok(s)
}

/// An `application/x-www-form-urlencoded` body (repeated fields kept).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// A page, or the answer that stands in for it: the login redirect, a refusal, an error page.
type Page = Result<Response, Response>;

fn failed(e: EngineError) -> Response {
    tracing::warn!(error = %e, "dashboard request failed");
    let (status, message) = if e.is_unavailable() {
        (StatusCode::SERVICE_UNAVAILABLE, "Redis is unreachable; the page works again when it is back.")
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong; the server log says what.")
    };
    (status, [(header::RETRY_AFTER, "5")], Html(format!("<p class=\"error\">{message}</p>"))).into_response()
}

/// What a dashboard page may load and run: its own scripts, styles and connections, nothing
/// inline, nothing from elsewhere, no plugins, not framed; forms post only to it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers on every dashboard answer: not framed, not cached, not sniffed, no referrer leaks.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[derive(Deserialize)]
struct IdQuery {
    #[serde(default)]
    id: String,
    /// Search the recent tasks by kind (a part of it).
    #[serde(default)]
    kind: String,
    /// … by state (`PENDING`, `STARTED`, `RETRY` in the lanes; `SUCCESS`, `FAILURE`,
    /// `REVOKED` among the finished ones) …
    #[serde(default)]
    state: String,
    /// … by lane …
    #[serde(default)]
    lane: String,
    /// … and finished since (an RFC 3339 time or a duration back from now).
    #[serde(default)]
    since: String,
    /// The finished tasks' page: the cursor of the one before.
    #[serde(default)]
    after: String,
}

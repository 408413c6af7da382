//! The operator's dashboard: server-rendered pages (askama), live parts refreshed with htmx.
//!
//! Every figure comes from Redis, so it is the deployment's, not this process's. Logging in
//! with the admin token opens a session kept in Redis (it survives restarts and is shared by
//! every process) behind an HttpOnly, SameSite=Strict cookie. Every state-changing action is a
//! POST that must carry the session's CSRF token (a form field, or the `X-CSRF-Token` header htmx
//! sends) and must not come from another site; no page or action is served without a session.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{random_token, token_matches};
use super::{AppState, RawBody};
use crate::conversation::flow::key_for_id;
use crate::conversation::store::Store;
use crate::engine::status::entry_after;
use crate::engine::{Engine, EngineError, Lane, format_ms};
use crate::redis::GROUP;

const COOKIE: &str = "sy_session";
/// How long a session lasts.
const SESSION_SECONDS: u64 = 12 * 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/static/htmx.min.js", get(htmx))
        .route("/static/switchyard.css", get(css))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ui/", get(overview))
        .route("/ui/lanes", get(lanes))
        .route("/ui/graphs", get(graphs))
        .route("/ui/tasks", get(tasks))
        .route("/ui/tasks/{id}/cancel", post(cancel))
        .route("/ui/tasks/{id}/retry", post(retry))
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
    static_file("text/javascript; charset=utf-8", include_str!("../../static/htmx.min.js"))
}

async fn css() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", include_str!("../../static/switchyard.css"))
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

// ---------------------------------------------------------------------------------------------
// Sessions and CSRF
// ---------------------------------------------------------------------------------------------

/// A logged-in operator's session.
pub struct Session {
    id: String,
    csrf: String,
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
pub async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, EngineError> {
    let Some(id) = cookie(headers, COOKIE).filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(None);
    };
    let mut con = state.engine.conn();
    let value: Option<String> = redis::cmd("GET").arg(state.engine.keys().session(&id)).query_async(&mut con).await?;
    Ok(value.and_then(|v| {
        let (csrf, mark) = v.split_once(' ')?;
        token_matches(&token_mark(&state.admin_token), mark).then(|| Session { id, csrf: csrf.to_string() })
    }))
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

/// Headers on every dashboard answer: not framed, not cached, not sniffed, no referrer leaks.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static("frame-ancestors 'none'"));
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

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return Redirect::to("/ui/").into_response();
    }
    render(LoginPage { error: None })
}

async fn login(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Response {
    let form = Form::parse(&body);
    let given = form.one("token").unwrap_or_default().trim().to_string();
    if !token_matches(&state.admin_token, &given) {
        let mut r = render(LoginPage { error: Some("That is not the admin token.".into()) });
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let (id, csrf) = (random_token(), random_token());
    let mut con = state.engine.conn();
    let stored: redis::RedisResult<()> = redis::cmd("SET")
        .arg(state.engine.keys().session(&id))
        .arg(format!("{csrf} {}", token_mark(&state.admin_token)))
        .arg("EX")
        .arg(SESSION_SECONDS)
        .query_async(&mut con)
        .await;
    if let Err(e) = stored {
        return failed(e.into());
    }
    // Behind a TLS-terminating proxy the cookie is for HTTPS only.
    let secure = if headers.get("x-forwarded-proto").is_some_and(|v| v == "https") { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}");
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let s = require_post(&state, &headers, &Form::parse(&body)).await?;
    let mut con = state.engine.conn();
    let _: redis::RedisResult<i64> =
        redis::cmd("DEL").arg(state.engine.keys().session(&s.id)).query_async(&mut con).await;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sy_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------------

struct LaneRow {
    name: &'static str,
    depth: u64,
    lag: u64,
    pending: u64,
    active: u64,
    retrying: u64,
    consumers: u64,
    dead: i64,
    throughput: String,
    failures: String,
    run_p99: String,
}

struct QueuesView {
    dlq_depth: u64,
    /// Redis's memory: in use, of the limit, and how long until the mark at the last quarter
    /// hour's growth.
    memory: String,
    memory_limit: String,
    memory_outlook: String,
}

/// `1.5 MB`, `12 GB`: bytes as an operator reads them.
fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", units[i]) }
}

fn memory_view(t: &crate::engine::MemoryTrend) -> (String, String, String) {
    let limit = match t.max {
        0 => "no limit (maxmemory unset)".to_string(),
        max => format!("of {} ({:.0} %)", human_bytes(max), t.used as f64 * 100.0 / max as f64),
    };
    let outlook = match (t.until_mark_s, t.per_s) {
        _ if t.max > 0 && t.used >= t.mark => "at the high-water mark: new work is refused".to_string(),
        (Some(s), _) => format!(
            "high-water mark in {} at the last quarter hour's growth",
            humantime::format_duration(std::time::Duration::from_secs((s as u64 / 60).max(1) * 60))
        ),
        (None, Some(g)) if g <= 0.0 => "not growing over the last quarter hour".into(),
        (None, Some(_)) => "growing; no limit to reach".into(),
        (None, None) => "growth: not enough history yet".into(),
    };
    (human_bytes(t.used), limit, outlook)
}

#[derive(Template)]
#[template(path = "lanes.html")]
struct LanesPart {
    q: QueuesView,
    workers: u64,
    lanes: Vec<LaneRow>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    csrf: String,
    nav: &'static str,
    q: QueuesView,
    workers: u64,
    lanes: Vec<LaneRow>,
}

async fn lanes_data(engine: &Engine) -> Result<(QueuesView, u64, Vec<LaneRow>), EngineError> {
    let q = engine.queues_status().await?;
    let mut con = engine.conn();
    let workers: u64 = redis::cmd("HLEN").arg(engine.keys().workers()).query_async(&mut con).await?;
    // The last minute of every worker's figures (bounded: one hash per minute).
    let report = crate::analytics::report::build(engine, 1).await?;
    let rows = Lane::ALL
        .iter()
        .map(|l| {
            let s = q.queues.get(l.as_str());
            let fig = &report["lanes"][l.as_str()];
            let secs = report["window"]["seconds"].as_f64().unwrap_or(60.0).max(1.0);
            let failed = fig["failed"].as_u64().unwrap_or(0) + fig["retried"].as_u64().unwrap_or(0);
            LaneRow {
                name: l.as_str(),
                depth: s.map_or(0, |s| s.depth),
                lag: s.map_or(0, |s| s.lag),
                pending: s.map_or(0, |s| s.pending),
                active: s.map_or(0, |s| s.active),
                retrying: s.map_or(0, |s| s.retrying),
                consumers: s.map_or(0, |s| s.consumers),
                dead: s.map_or(0, |s| s.dead),
                throughput: format!("{:.1}", fig["throughput_per_s"].as_f64().unwrap_or(0.0)),
                failures: format!("{:.2}", failed as f64 / secs),
                run_p99: fig["run_ms"]["p99"].as_f64().map_or("—".into(), |ms| format!("{ms:.1} ms")),
            }
        })
        .collect();
    let (memory, memory_limit, memory_outlook) = memory_view(&engine.memory_trend().await?);
    Ok((QueuesView { dlq_depth: q.dlq_depth, memory, memory_limit, memory_outlook }, workers, rows))
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let (q, workers, lanes) = lanes_data(&state.engine).await.map_err(failed)?;
    if is_htmx(&headers) {
        return Ok(render(LanesPart { q, workers, lanes }));
    }
    Ok(render(OverviewPage { csrf: s.csrf, nav: "overview", q, workers, lanes }))
}

/// The live part of the overview (htmx polls it).
async fn lanes(State(state): State<AppState>, headers: HeaderMap) -> Page {
    require(&state, &headers).await?;
    let (q, workers, lanes) = lanes_data(&state.engine).await.map_err(failed)?;
    Ok(render(LanesPart { q, workers, lanes }))
}

// ---------------------------------------------------------------------------------------------
// Tasks and active tasks
// ---------------------------------------------------------------------------------------------

struct AttemptRow {
    attempt: u32,
    outcome: String,
    when: String,
    duration: String,
    worker: String,
    error: String,
}

struct TaskView {
    id: String,
    kind: String,
    state: String,
    lane: String,
    progress: u8,
    attempts: u32,
    max_attempts: u32,
    created: String,
    started: String,
    finished: String,
    error: String,
    payload: String,
    result: String,
    history: Vec<AttemptRow>,
    cancellable: bool,
    /// Dead: it can be sent back to its lane.
    retryable: bool,
}

struct RecentRow {
    id: String,
    /// The lane entry, to tell a task still queued from one whose record is gone.
    entry: String,
    kind: String,
    lane: &'static str,
    state: String,
    queued: String,
}

#[derive(Template)]
#[template(path = "tasks.html")]
struct TasksPage {
    csrf: String,
    nav: &'static str,
    query: String,
    kind: String,
    state: String,
    missing: Option<String>,
    task: Option<TaskView>,
    recent: Vec<RecentRow>,
}

#[derive(Deserialize)]
struct IdQuery {
    #[serde(default)]
    id: String,
    /// Search the recent tasks by kind (a part of it).
    #[serde(default)]
    kind: String,
    /// … and by state (`PENDING`, `STARTED`, `RETRY`).
    #[serde(default)]
    state: String,
}

/// Tasks still in their lanes (queued, running or waiting to retry), newest first, the latest
/// `RECENT` of each lane, whose kind contains `kind`.
async fn recent_tasks(engine: &Engine, kind: &str) -> Result<Vec<RecentRow>, EngineError> {
    const RECENT: usize = 50;
    let mut con = engine.conn();
    let mut rows = Vec::new();
    for lane in Lane::ALL {
        let v: redis::Value = redis::cmd("XREVRANGE")
            .arg(engine.keys().lane(lane))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(RECENT * 4)
            .query_async(&mut con)
            .await?;
        for (entry, fields) in crate::engine::worker::parse_entries(&v) {
            let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).unwrap_or_default();
            let task_kind = get("kind");
            if !task_kind.contains(kind) {
                continue;
            }
            let ms: u64 = entry.split('-').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            // A task is named after its entry, unless the entry names it (a redrive).
            let id = Some(get("id")).filter(|id| !id.is_empty());
            rows.push(RecentRow {
                id: id.or_else(|| crate::engine::task_id_for_entry(lane, &entry)).unwrap_or_default(),
                entry: entry.clone(),
                kind: task_kind,
                lane: lane.as_str(),
                state: String::new(),
                queued: format_ms(ms),
            });
            if rows.iter().filter(|r| r.lane == lane.as_str()).count() >= RECENT {
                break;
            }
        }
    }
    if !rows.is_empty() {
        let mut pipe = redis::pipe();
        for r in &rows {
            pipe.cmd("HGET").arg(engine.keys().task(&r.id)).arg("state");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut con).await?;
        let mut read_up_to = Vec::new();
        for lane in Lane::ALL {
            read_up_to.push(engine.read_position(lane).await?);
        }
        // No record: queued if no worker has read the entry yet, or read and about to start (a
        // new task's record is written when it starts); else its record is gone. Whether a read
        // entry is still pending is asked for all of them in one round trip.
        let lane_of = |r: &RecentRow| Lane::parse(r.lane).unwrap_or(Lane::Analytics);
        let read: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let at = read_up_to[lane_of(&rows[i]).index()].as_deref();
                states[i].is_none() && at.is_some_and(|at| !entry_after(&rows[i].entry, at))
            })
            .collect();
        let mut pending = vec![false; rows.len()];
        if !read.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &read {
                let r = &rows[i];
                pipe.cmd("XPENDING").arg(engine.keys().lane(lane_of(r))).arg(GROUP).arg(&r.entry).arg(&r.entry).arg(1);
            }
            let found: Vec<redis::Value> = pipe.query_async(&mut con).await.unwrap_or_default();
            for (&i, v) in read.iter().zip(&found) {
                pending[i] = matches!(v, redis::Value::Array(p) if !p.is_empty());
            }
        }
        for (i, (r, s)) in rows.iter_mut().zip(states).enumerate() {
            r.state = match s {
                Some(s) => s,
                None if pending[i] || !read.contains(&i) => "PENDING".into(),
                None => "—".into(),
            };
        }
    }
    Ok(rows)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

async fn tasks(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<IdQuery>) -> Page {
    let s = require(&state, &headers).await?;
    let id = q.id.trim().to_string();
    let (mut missing, mut task) = (None, None);
    if !id.is_empty() {
        match state.engine.task_status(&id).await.map_err(failed)? {
            Some(t) => {
                task = Some(TaskView {
                    id: t.task_id.clone(),
                    kind: t.kind.clone(),
                    state: t.status.as_str().into(),
                    lane: t.lane.map(|l| l.as_str().to_string()).unwrap_or_default(),
                    progress: t.progress,
                    attempts: t.attempts,
                    max_attempts: t.max_attempts,
                    created: t.created_at.clone().unwrap_or_default(),
                    started: t.started_at.clone().unwrap_or_else(|| "—".into()),
                    finished: t.finished_at.clone().unwrap_or_else(|| "—".into()),
                    error: t.error.clone().unwrap_or_default(),
                    payload: pretty(&t.payload),
                    result: pretty(&t.result),
                    cancellable: !t.status.is_finished(),
                    retryable: t.dead_letter.is_some(),
                    history: t
                        .history
                        .iter()
                        .map(|a| AttemptRow {
                            attempt: a.attempt,
                            outcome: a.outcome.clone(),
                            when: a.started_at.map(format_ms).unwrap_or_default(),
                            duration: a.duration_ms.map(|d| format!("{d:.1} ms")).unwrap_or_default(),
                            worker: a.worker.clone().unwrap_or_default(),
                            error: a.error.clone().unwrap_or_default(),
                        })
                        .collect(),
                })
            }
            None => missing = Some(format!("No task with id {id} (finished tasks are kept for TASK_RETENTION).")),
        }
    }
    let kind = q.kind.trim().to_string();
    let recent = if task.is_none() {
        let recent = recent_tasks(&state.engine, &kind).await.map_err(failed)?;
        recent.into_iter().filter(|r| q.state.is_empty() || r.state.eq_ignore_ascii_case(q.state.trim())).collect()
    } else {
        Vec::new()
    };
    Ok(render(TasksPage {
        csrf: s.csrf,
        nav: "tasks",
        query: id,
        kind,
        state: q.state.trim().to_uppercase(),
        missing,
        task,
        recent,
    }))
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Page {
    require_post(&state, &headers, &Form::parse(&body)).await?;
    match state.engine.cancel(&id).await {
        Ok(_) | Err(EngineError::Finished { .. }) => Ok(Redirect::to(&format!("/ui/tasks?id={id}")).into_response()),
        Err(EngineError::NotFound(_)) => Ok((StatusCode::NOT_FOUND, Html("<p>No such task.</p>")).into_response()),
        Err(e) => Err(failed(e)),
    }
}

/// Send a dead task back to its lane (its dead letter is redriven).
async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Page {
    require_post(&state, &headers, &Form::parse(&body)).await?;
    state
        .engine
        .dlq_redrive(std::slice::from_ref(&id), &Default::default(), false, false, |_| {})
        .await
        .map_err(failed)?;
    Ok(Redirect::to(&format!("/ui/tasks?id={id}")).into_response())
}

struct ActiveGroup {
    worker: String,
    tasks: Vec<crate::engine::status::ActiveTask>,
}

#[derive(Template)]
#[template(path = "active_rows.html")]
struct ActiveRows {
    groups: Vec<ActiveGroup>,
}

#[derive(Template)]
#[template(path = "active.html")]
struct ActivePage {
    csrf: String,
    nav: &'static str,
    groups: Vec<ActiveGroup>,
}

async fn active(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let tasks = state.engine.active_tasks(1000).await.map_err(failed)?;
    let mut by_worker: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for t in tasks {
        by_worker.entry(t.worker.clone()).or_default().push(t);
    }
    let groups = by_worker.into_iter().map(|(worker, tasks)| ActiveGroup { worker, tasks }).collect();
    if is_htmx(&headers) {
        return Ok(render(ActiveRows { groups }));
    }
    Ok(render(ActivePage { csrf: s.csrf, nav: "active", groups }))
}

// ---------------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------------

struct LetterRow {
    id: String,
    task_id: String,
    kind: String,
    lane: String,
    failed_at: String,
    attempts: usize,
}

struct LetterGroup {
    error: String,
    letters: Vec<LetterRow>,
}

#[derive(Template)]
#[template(path = "dlq.html")]
struct DlqPage {
    csrf: String,
    nav: &'static str,
    notice: Option<String>,
    groups: Vec<LetterGroup>,
}

/// Dead letters grouped by their error's first line (the newest thousand).
async fn dlq_page(engine: &Engine, csrf: String, notice: Option<String>) -> Page {
    let letters = engine.dlq_list(&Default::default(), 1000).await.map_err(failed)?;
    let mut groups: BTreeMap<String, Vec<LetterRow>> = BTreeMap::new();
    for d in letters {
        let first: String = d.error.lines().next().unwrap_or_default().chars().take(160).collect();
        groups.entry(first).or_default().push(LetterRow {
            id: d.id.clone(),
            task_id: d.task_id.clone(),
            kind: d.kind.clone(),
            lane: d.lane.map(|l| l.as_str().to_string()).unwrap_or_default(),
            failed_at: d.failed_at.clone().unwrap_or_default(),
            attempts: d.attempts.len(),
        });
    }
    let mut groups: Vec<LetterGroup> =
        groups.into_iter().map(|(error, letters)| LetterGroup { error, letters }).collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.letters.len()));
    Ok(render(DlqPage { csrf, nav: "dlq", notice, groups }))
}

async fn dlq(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    dlq_page(&state.engine, s.csrf, None).await
}

async fn dlq_redrive(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let form = Form::parse(&body);
    let s = require_post(&state, &headers, &form).await?;
    let ids = form.all("ids");
    if ids.is_empty() {
        return dlq_page(&state.engine, s.csrf, Some("Nothing selected.".into())).await;
    }
    let dry_run = form.one("dry_run").is_some();
    let r = state.engine.dlq_redrive(&ids, &Default::default(), false, dry_run, |_| {}).await.map_err(failed)?;
    let notice = if dry_run {
        format!("Dry run: {} would go back to their lanes.", r.matched)
    } else {
        format!("{} sent back to their lanes.", r.redriven)
    };
    dlq_page(&state.engine, s.csrf, Some(notice)).await
}

async fn dlq_delete(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let form = Form::parse(&body);
    let s = require_post(&state, &headers, &form).await?;
    let n = state.engine.dlq_delete(&form.all("ids")).await.map_err(failed)?;
    dlq_page(&state.engine, s.csrf, Some(format!("{n} dead letters deleted."))).await
}

// ---------------------------------------------------------------------------------------------
// Workers, conversations, schedules
// ---------------------------------------------------------------------------------------------

struct WorkerRow {
    name: String,
    host: String,
    pid: u64,
    lanes: String,
    concurrency: u64,
    in_flight: u64,
    completed: u64,
    last_seen: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    csrf: String,
    nav: &'static str,
    workers: Vec<WorkerRow>,
}

async fn workers(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let mut con = state.engine.conn();
    let beats: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(state.engine.keys().workers())
        .query_async(&mut con)
        .await
        .map_err(|e| failed(e.into()))?;
    let workers = beats
        .into_iter()
        .filter_map(|(name, beat)| {
            let b: Value = serde_json::from_str(&beat).ok()?;
            let lanes =
                b["lanes"].as_array().map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
            Some(WorkerRow {
                name,
                host: b["host"].as_str().unwrap_or_default().into(),
                pid: b["pid"].as_u64().unwrap_or(0),
                lanes: lanes.unwrap_or_default(),
                concurrency: b["concurrency"].as_u64().unwrap_or(0),
                in_flight: b["in_flight"].as_u64().unwrap_or(0),
                completed: b["completed"].as_u64().unwrap_or(0),
                last_seen: b["last_seen"].as_u64().map(format_ms).unwrap_or_default(),
            })
        })
        .collect();
    Ok(render(WorkersPage { csrf: s.csrf, nav: "workers", workers }))
}

struct TurnRow {
    at: String,
    who: String,
    kind: String,
    text: String,
}

struct ConversationView {
    id: String,
    handed_off: bool,
    customer_turns: u64,
    agent_turns: u64,
    created: String,
    updated: String,
    turns: Vec<TurnRow>,
    analytics: String,
}

#[derive(Template)]
#[template(path = "conversations.html")]
struct ConversationsPage {
    csrf: String,
    nav: &'static str,
    query: String,
    missing: Option<String>,
    conversation: Option<ConversationView>,
    /// The latest conversations: id and time of the last turn.
    recent: Vec<(String, String)>,
}

async fn conversations(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<IdQuery>) -> Page {
    let s = require(&state, &headers).await?;
    let query = q.id.trim().to_string();
    let (mut missing, mut conversation) = (None, None);
    if !query.is_empty() {
        let id = key_for_id(&query).id();
        let store = Store::new(state.engine.clone());
        let found = tokio::try_join!(
            store.summary(&id),
            store.history(&id, 200),
            crate::analytics::conversation::load(&state.engine, &id)
        );
        match found.map_err(failed)? {
            (Some(sum), turns, analytics) => {
                conversation = Some(ConversationView {
                    id: sum.conversation_id.clone(),
                    handed_off: sum.handed_off,
                    customer_turns: sum.customer_turns,
                    agent_turns: sum.agent_turns,
                    created: format_ms(sum.created_at),
                    updated: format_ms(sum.updated_at),
                    turns: turns
                        .iter()
                        .map(|t| TurnRow {
                            at: format_ms(t.at_ms),
                            who: serde_json::to_value(t.who)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            kind: t.kind.clone(),
                            text: t.text.clone(),
                        })
                        .collect(),
                    analytics: analytics.map(|a| pretty(&a)).unwrap_or_default(),
                })
            }
            (None, _, _) => missing = Some(format!("No conversation {id}.")),
        }
    }
    let recent = if conversation.is_none() {
        let recent = Store::new(state.engine.clone()).recent(50).await.map_err(failed)?;
        recent.into_iter().map(|(id, at)| (id, format_ms(at))).collect()
    } else {
        Vec::new()
    };
    Ok(render(ConversationsPage { csrf: s.csrf, nav: "conversations", query, missing, conversation, recent }))
}

struct ScheduleRow {
    name: String,
    cron: String,
    kind: String,
    next_run: String,
    last_run: String,
    last_result: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    csrf: String,
    nav: &'static str,
    notice: Option<String>,
    leader: String,
    schedules: Vec<ScheduleRow>,
}

async fn schedules_page(engine: &Engine, csrf: String, notice: Option<String>) -> Page {
    let defs = crate::schedule::from_config(engine.config());
    let list = crate::schedule::list(engine, &defs).await.map_err(failed)?;
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| "—".into());
    let schedules = list["schedules"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| ScheduleRow {
                    name: text(&s["name"]),
                    cron: text(&s["cron"]),
                    kind: text(&s["kind"]),
                    next_run: text(&s["next_run"]),
                    last_run: text(&s["last_run"]),
                    last_result: match &s["last_result"] {
                        Value::Null => "—".into(),
                        r => text(&r["status"]),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let leader = list["leader"].as_str().unwrap_or("no process (no scheduler running)").to_string();
    Ok(render(SchedulesPage { csrf, nav: "schedules", notice, leader, schedules }))
}

async fn schedules(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    schedules_page(&state.engine, s.csrf, None).await
}

async fn schedule_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Page {
    let s = require_post(&state, &headers, &Form::parse(&body)).await?;
    let defs = crate::schedule::from_config(state.engine.config());
    match crate::schedule::run_now(&state.engine, &defs, &name).await {
        Ok(task) => schedules_page(&state.engine, s.csrf, Some(format!("{name} queued as task {task}."))).await,
        Err(EngineError::NotFound(m)) => Ok((StatusCode::NOT_FOUND, Html(html_escape(&m))).into_response()),
        Err(e) => Err(failed(e)),
    }
}

/// Whether a request may use the JSON API on the strength of a dashboard session: reads only
/// (writes through the API need the bearer token).
pub async fn api_session_ok(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD) && matches!(session(state, headers).await, Ok(Some(_)))
}

// ---------------------------------------------------------------------------------------------
// Graphs: the last half hour, per minute, server-rendered SVG
// ---------------------------------------------------------------------------------------------

/// One lane's line in a graph.
struct Series {
    lane: &'static str,
    color: &'static str,
    points: String,
    last: String,
}

struct Graph {
    title: &'static str,
    max: String,
    series: Vec<Series>,
}

#[derive(Template)]
#[template(path = "graphs.html")]
struct GraphsPart {
    graphs: Vec<Graph>,
}

const GRAPH_MINUTES: u64 = 30;
const COLORS: [&str; 3] = ["#2156d9", "#067647", "#b54708"];

/// A graph of one figure per lane and minute: points scaled into a 300×80 box.
fn graph(title: &'static str, unit: &str, values: &[[f64; 3]]) -> Graph {
    let max = values.iter().flat_map(|v| v.iter().copied()).fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { 76.0 / max } else { 0.0 };
    let step = 300.0 / (values.len().max(2) - 1) as f64;
    let series = Lane::ALL
        .iter()
        .map(|l| {
            let i = l.index();
            let points = values
                .iter()
                .enumerate()
                .map(|(x, v)| format!("{:.1},{:.1}", x as f64 * step, 78.0 - v[i] * scale))
                .collect::<Vec<_>>()
                .join(" ");
            let last = values.last().map(|v| format!("{:.2}{unit}", v[i])).unwrap_or_default();
            Series { lane: l.as_str(), color: COLORS[i], points, last }
        })
        .collect();
    Graph { title, max: format!("{max:.2}{unit}"), series }
}

async fn graphs(State(state): State<AppState>, headers: HeaderMap) -> Page {
    require(&state, &headers).await?;
    let minutes = crate::analytics::report::per_minute(&state.engine, GRAPH_MINUTES).await.map_err(failed)?;
    let figure = |f: &dyn Fn(&crate::engine::stats::KindStats) -> f64| -> Vec<[f64; 3]> {
        minutes.iter().map(|(_, lanes)| Lane::ALL.map(|l| lanes.get(l.as_str()).map_or(0.0, f))).collect()
    };
    let done = figure(&|s| s.succeeded as f64 / 60.0);
    let failed_ = figure(&|s| (s.failed + s.retried) as f64 / 60.0);
    let p99 = figure(&|s| if s.run_us.is_empty() { 0.0 } else { s.run_us.value_at_quantile(0.99) as f64 / 1e3 });
    Ok(render(GraphsPart {
        graphs: vec![
            graph("Done per second", "/s", &done),
            graph("Failed or retried per second", "/s", &failed_),
            graph("Run time p99", " ms", &p99),
        ],
    }))
}

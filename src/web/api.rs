//! The JSON API of the task engine (SPEC §6).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AppState;
use super::RawBody;
use super::error::ApiError;
use crate::engine::HistoryFilter;
use crate::engine::dlq::DlqFilter;
use crate::engine::history::Position;
use crate::engine::{Lane, TaskSpec, TaskState};

/// Parse a JSON body whatever its content type, with a 400 that says what is wrong.
pub(super) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

pub(super) async fn enqueue(State(s): State<AppState>, RawBody(body): RawBody) -> Result<impl IntoResponse, ApiError> {
    let spec: TaskSpec = parse_body(&body)?;
    let task_id = s.engine.submit(spec).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"task_id": task_id, "status": TaskState::Pending.as_str()}))))
}

pub(super) async fn task_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match s.engine.task_status(&id).await? {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError::NotFound(format!("no task with id {id}"))),
    }
}

pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let state = s.engine.cancel(&id).await?;
    Ok(Json(json!({"task_id": id, "status": state})))
}

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    state: Option<String>,
    kind: Option<String>,
    lane: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The tasks that finished lately, newest first, a page at a time.
pub(super) async fn history(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<HistoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = HistoryFilter::parse(
        q.state.as_deref(),
        q.kind.as_deref(),
        q.lane.as_deref(),
        q.since.as_deref(),
        crate::engine::now_ms(),
    )
    .map_err(ApiError::BadRequest)?;
    let after = Position::after(q.after.as_deref()).map_err(ApiError::BadRequest)?;
    let page = s.engine.finished_tasks(&filter, q.limit.unwrap_or(100).clamp(1, 1000), after).await?;
    Ok(Json(json!({"tasks": page.tasks, "count": page.tasks.len(), "next": page.next})))
}

/// A query's `lane`: none when absent or empty, else a lane's name (400 otherwise).
pub(super) fn lane_param(lane: Option<&str>) -> Result<Option<Lane>, ApiError> {
    match lane.map(str::trim).filter(|l| !l.is_empty()) {
        Some(name) => {
            Ok(Some(Lane::parse(name).ok_or_else(|| ApiError::BadRequest(format!("unknown lane `{name}`")))?))
        }
        None => Ok(None),
    }
}

#[derive(Deserialize)]
pub(super) struct ScheduledQuery {
    lane: Option<String>,
    limit: Option<usize>,
}

/// The tasks queued for later, the first due first.
pub(super) async fn scheduled(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<ScheduledQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let tasks = s.engine.later_tasks(lane, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(json!({"scheduled": tasks, "count": tasks.len()})))
}

/// Run a task queued for later now.
pub(super) async fn run_now(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    s.engine.run_now(&id).await?;
    Ok(Json(json!({"task_id": id, "status": TaskState::Pending.as_str()})))
}

pub(super) async fn queues_status(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.engine.queues_status().await?))
}

#[derive(Deserialize)]
pub(super) struct Limit {
    limit: Option<usize>,
}

pub(super) async fn active(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<Limit>,
) -> Result<impl IntoResponse, ApiError> {
    let tasks = s.engine.active_tasks(q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(json!({"active": tasks, "count": tasks.len()})))
}

#[derive(Deserialize)]
pub(super) struct DlqQuery {
    #[serde(flatten)]
    filter: DlqFilter,
    limit: Option<usize>,
}

pub(super) async fn dlq_list(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<DlqQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let letters = s.engine.dlq_list(&q.filter, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let total = s.engine.dlq_depth().await?;
    Ok(Json(json!({"dead_letters": letters, "count": letters.len(), "total": total})))
}

pub(super) async fn dlq_show(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    match s.engine.dlq_get(&id).await? {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::NotFound(format!("no dead letter {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveBody {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    lane: Option<crate::engine::Lane>,
    #[serde(default)]
    older_than: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn dlq_redrive(
    State(s): State<AppState>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let b: RedriveBody = parse_body(&body)?;
    let older_than = match b.older_than.as_deref() {
        None => None,
        Some(t) => Some(
            crate::config::parse_duration_str(t)
                .ok_or_else(|| ApiError::BadRequest(format!("older_than `{t}` is not a duration such as 10m")))?,
        ),
    };
    let filter = DlqFilter { kind: b.kind, error: b.error, lane: b.lane, older_than };
    if !b.ids.is_empty() {
        let mut missing = Vec::new();
        for id in &b.ids {
            if s.engine.dlq_get(id).await?.is_none() {
                missing.push(id.clone());
            }
        }
        if missing.len() == b.ids.len() {
            return Err(ApiError::NotFound(format!("no dead letter {}", missing.join(", "))));
        }
    }
    let report = s.engine.dlq_redrive(&b.ids, &filter, b.all, b.dry_run, |_| {}).await?;
    Ok(Json(report))
}

pub(super) async fn dlq_delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match s.engine.dlq_delete(std::slice::from_ref(&id)).await? {
        0 => Err(ApiError::NotFound(format!("no dead letter {id}"))),
        n => Ok(Json(json!({"deleted": n}))),
    }
}

/// `GET /schedules`: every schedule with its cron, next run, last run and last result.
pub(super) async fn schedules(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let defs = crate::schedule::from_config(s.engine.config());
    Ok(Json(crate::schedule::list(&s.engine, &defs).await?))
}

/// `POST /schedules/{name}/run`: queue a schedule's task now.
pub(super) async fn schedule_run(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let defs = crate::schedule::from_config(s.engine.config());
    let task_id = crate::schedule::run_now(&s.engine, &defs, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"schedule": name, "task_id": task_id}))))
}

/// `POST /lanes/{lane}/pause` and `/resume`: workers stop (or go back to) reading the lane
/// within a second; producers are accepted either way.
pub(super) async fn lane_pause(
    State(s): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(lane) = crate::engine::Lane::parse(&name) else {
        return Err(ApiError::NotFound(format!("no lane named `{name}` (lanes: conversations, webhooks, analytics)")));
    };
    match action.as_str() {
        "pause" => s.engine.pause_lane(lane).await?,
        "resume" => s.engine.resume_lane(lane).await?,
        _ => return Err(ApiError::NotFound(format!("no action `{action}` on a lane (pause, resume)"))),
    }
    Ok(Json(json!({"lane": lane.as_str(), "paused": action == "pause"})))
}

/// `POST /analytics/reports`: queue a performance report (`{"minutes"?}`, default 5).
pub(super) async fn report_request(
    State(s): State<AppState>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let payload: serde_json::Value =
        if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(&body)? };
    let task_id = s.engine.enqueue(TaskSpec::new(crate::analytics::report::KIND, payload)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"task_id": task_id, "status": TaskState::Pending.as_str()}))))
}

/// `GET /analytics/reports/latest`: the newest report.
pub(super) async fn report_latest(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match crate::analytics::report::latest(&s.engine).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::NotFound("no report yet; POST /analytics/reports queues one".into())),
    }
}

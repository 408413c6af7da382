//! The JSON API of the task engine (SPEC §6).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::RawBody;
use super::error::{ApiError, ErrorBody};
use super::openapi::{BodyErrors, StoreErrors};
use crate::engine::HistoryFilter;
use crate::engine::dlq::DlqFilter;
use crate::engine::dlq::{DeadLetter, RedriveReport};
use crate::engine::history::FinishedTask;
use crate::engine::history::Position;
use crate::engine::later::LaterTask;
use crate::engine::queues::{ActiveTask, QueuesStatus};
use crate::engine::{Lane, TaskSpec, TaskState, TaskStatus};
use crate::schedule::ScheduleList;

/// Parse a JSON body whatever its content type, with a 400 that says what is wrong.
pub(super) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A task queued, or (`status`) the state a task is in now.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskQueued {
    /// `PENDING` once queued; `REVOKED` once cancelled.
    status: TaskState,
    task_id: String,
}

/// Queue a task of any registered kind (docs/tasks.md). Unknown fields are refused. A repeated
/// idempotency key with the same kind and payload answers the first task's id.
#[utoipa::path(post, path = "/tasks", tag = "tasks",
    request_body(content = TaskSpec, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = TaskQueued),
        (status = 409, description = "The idempotency key was used with another kind or payload \
            (`idempotency_conflict`); `task_id` is the first task's", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
pub(super) async fn enqueue(State(s): State<AppState>, RawBody(body): RawBody) -> Result<impl IntoResponse, ApiError> {
    let spec: TaskSpec = parse_body(&body)?;
    let task_id = s.engine.submit(spec).await?;
    Ok((StatusCode::ACCEPTED, Json(TaskQueued { status: TaskState::Pending, task_id })))
}

/// One task's status.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task's record", body = TaskStatus),
        (status = 404, description = "No such task, or its record expired", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn task_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match s.engine.task_status(&id).await? {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError::NotFound(format!("no task with id {id}"))),
    }
}

/// One task's status (the seed's path for `GET /tasks/{id}`).
#[utoipa::path(get, path = "/conversations/tasks/{id}/status", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task's record", body = TaskStatus),
        (status = 404, description = "No such task, or its record expired", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn conversation_task_status(
    state: State<AppState>,
    id: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    task_status(state, id).await
}

/// Cancel a task (docs/tasks.md, cancellation).
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Cancelled: `status` is `REVOKED`", body = TaskQueued),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has finished (`conflict`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let state = s.engine.cancel(&id).await?;
    Ok(Json(TaskQueued { status: state, task_id: id }))
}

/// Cancel a task (the seed's path for `POST /tasks/{id}/cancel`).
#[utoipa::path(post, path = "/conversations/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Cancelled: `status` is `REVOKED`", body = TaskQueued),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has finished (`conflict`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn conversation_task_cancel(
    state: State<AppState>,
    id: Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    cancel(state, id).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// `SUCCESS`, `FAILURE` or `REVOKED` (any case).
    state: Option<String>,
    /// A kind, or a pattern with `*` at its start and/or end (`diag.*`).
    kind: Option<String>,
    /// A lane's name.
    lane: Option<String>,
    /// An RFC 3339 time, or a duration back from now (`15m`, `24h`).
    since: Option<String>,
    /// Default 100, kept within 1–1000.
    limit: Option<usize>,
    /// The `next` of an earlier page.
    after: Option<String>,
}

/// A page of finished tasks.
#[derive(Serialize, ToSchema)]
pub(super) struct HistoryAnswer {
    count: usize,
    /// Pass as `after` for the next page; `null` when there is no more.
    next: Option<String>,
    tasks: Vec<FinishedTask>,
}

/// The tasks that finished lately, newest first, a page at a time.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of finished tasks, newest first", body = HistoryAnswer),
        (status = 400, description = "A bad parameter (`bad_request`)", body = ErrorBody),
        StoreErrors,
    ))]
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
    Ok(Json(HistoryAnswer { count: page.tasks.len(), next: page.next, tasks: page.tasks }))
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ScheduledQuery {
    /// A lane's name.
    lane: Option<String>,
    /// Default 100, kept within 1–1000.
    limit: Option<usize>,
}

/// Tasks queued for later.
#[derive(Serialize, ToSchema)]
pub(super) struct ScheduledAnswer {
    count: usize,
    scheduled: Vec<LaterTask>,
}

/// The tasks queued for later, the first due first.
#[utoipa::path(get, path = "/tasks/scheduled", tag = "tasks",
    params(ScheduledQuery),
    responses(
        (status = 200, description = "Tasks queued for later, the first due first", body = ScheduledAnswer),
        (status = 400, description = "An unknown lane (`bad_request`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn scheduled(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<ScheduledQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let lane = lane_param(q.lane.as_deref())?;
    let tasks = s.engine.later_tasks(lane, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(ScheduledAnswer { count: tasks.len(), scheduled: tasks }))
}

/// Run a task queued for later now.
#[utoipa::path(post, path = "/tasks/{id}/run", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Due now: `status` is `PENDING`", body = TaskQueued),
        (status = 409, description = "The task is not waiting to run later: already in its lane, finished, \
            cancelled or unknown (`conflict`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn run_now(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    s.engine.run_now(&id).await?;
    Ok(Json(TaskQueued { status: TaskState::Pending, task_id: id }))
}

/// Each lane's figures and the dead-letter queue's size.
#[utoipa::path(get, path = "/conversations/tasks/queues/status", tag = "lanes",
    responses((status = 200, description = "Each lane's figures", body = QueuesStatus), StoreErrors))]
pub(super) async fn queues_status(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.engine.queues_status().await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Limit {
    /// Default 100, kept within 1–1000.
    limit: Option<usize>,
}

/// Tasks running now.
#[derive(Serialize, ToSchema)]
pub(super) struct ActiveAnswer {
    active: Vec<ActiveTask>,
    count: usize,
}

/// The tasks running now.
#[utoipa::path(get, path = "/conversations/tasks/active", tag = "lanes",
    params(Limit),
    responses(
        (status = 200, description = "Tasks running now", body = ActiveAnswer),
        (status = 400, description = "A bad parameter (`bad_request`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn active(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<Limit>,
) -> Result<impl IntoResponse, ApiError> {
    let tasks = s.engine.active_tasks(q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(ActiveAnswer { count: tasks.len(), active: tasks }))
}

#[derive(Deserialize)]
pub(super) struct DlqQuery {
    #[serde(flatten)]
    filter: DlqFilter,
    limit: Option<usize>,
}

/// Dead letters.
#[derive(Serialize, ToSchema)]
pub(super) struct DlqAnswer {
    count: usize,
    dead_letters: Vec<DeadLetter>,
    /// The whole dead-letter queue's size.
    total: u64,
}

/// Dead letters, newest first.
#[utoipa::path(get, path = "/dlq", tag = "dlq",
    params(
        ("kind" = Option<String>, Query, description = "Exact kind"),
        ("error" = Option<String>, Query, description = "Text the error contains (any case)"),
        ("lane" = Option<Lane>, Query, description = "A lane's name"),
        ("older_than" = Option<String>, Query, description = "A duration: letters that died at least this long ago"),
        ("limit" = Option<usize>, Query, description = "Default 100, kept within 1–1000"),
    ),
    responses(
        (status = 200, description = "Dead letters, newest first", body = DlqAnswer),
        (status = 400, description = "A bad `lane` or `older_than` (`bad_request`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn dlq_list(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<DlqQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let letters = s.engine.dlq_list(&q.filter, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let total = s.engine.dlq_depth().await?;
    Ok(Json(DlqAnswer { count: letters.len(), dead_letters: letters, total }))
}

/// One dead letter, by its id or its task's id.
#[utoipa::path(get, path = "/dlq/{id}", tag = "dlq",
    params(("id" = String, Path, description = "The letter's id or its task's id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetter),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn dlq_show(State(s): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    match s.engine.dlq_get(&id).await? {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::NotFound(format!("no dead letter {id}"))),
    }
}

/// Which dead letters to send back to their lanes: `ids`, else the filter, else `all`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveBody {
    /// Letter ids or task ids; when given, the filter fields are not used.
    #[serde(default)]
    ids: Vec<String>,
    /// Exact kind.
    #[serde(default)]
    kind: Option<String>,
    /// Text the error contains (any case).
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    lane: Option<crate::engine::Lane>,
    /// A duration such as `10m`: letters that died at least this long ago.
    #[serde(default)]
    older_than: Option<String>,
    /// `true` to redrive every letter.
    #[serde(default)]
    all: bool,
    /// `true` to report without changing anything.
    #[serde(default)]
    dry_run: bool,
}

/// Send dead letters back to their lanes. Unknown fields are refused; nothing named (no `ids`,
/// no filter, no `all`) is refused.
#[utoipa::path(post, path = "/dlq/redrive", tag = "dlq",
    request_body(content = RedriveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "What was (or, with `dry_run`, would be) redriven", body = RedriveReport),
        (status = 404, description = "`ids` of which none exists", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
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

/// Letters deleted.
#[derive(Serialize, ToSchema)]
pub(super) struct Deleted {
    deleted: u64,
}

/// Delete one dead letter, by its id or its task's id.
#[utoipa::path(delete, path = "/dlq/{id}", tag = "dlq",
    params(("id" = String, Path, description = "The letter's id or its task's id")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn dlq_delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match s.engine.dlq_delete(std::slice::from_ref(&id)).await? {
        0 => Err(ApiError::NotFound(format!("no dead letter {id}"))),
        n => Ok(Json(Deleted { deleted: n })),
    }
}

/// `GET /schedules`: every schedule with its cron, next run, last run and last result.
#[utoipa::path(get, path = "/schedules", tag = "schedules",
    responses((status = 200, description = "The schedules and the process firing them", body = ScheduleList), StoreErrors))]
pub(super) async fn schedules(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let defs = crate::schedule::from_config(s.engine.config());
    Ok(Json(crate::schedule::list(&s.engine, &defs).await?))
}

/// A schedule's task queued.
#[derive(Serialize, ToSchema)]
pub(super) struct ScheduleRun {
    schedule: String,
    task_id: String,
}

/// `POST /schedules/{name}/run`: queue a schedule's task now.
#[utoipa::path(post, path = "/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 202, description = "Queued", body = ScheduleRun),
        (status = 404, description = "No such schedule", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn schedule_run(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let defs = crate::schedule::from_config(s.engine.config());
    let task_id = crate::schedule::run_now(&s.engine, &defs, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(ScheduleRun { schedule: name, task_id })))
}

/// A lane paused or resumed.
#[derive(Serialize, ToSchema)]
pub(super) struct LanePaused {
    lane: Lane,
    paused: bool,
}

/// `POST /lanes/{lane}/pause` and `/resume`: workers stop (or go back to) reading the lane
/// within a second; producers are accepted either way.
#[utoipa::path(post, path = "/lanes/{lane}/{action}", tag = "lanes",
    params(
        ("lane" = Lane, Path, description = "The lane"),
        ("action" = String, Path, description = "`pause` or `resume`", pattern = "^(pause|resume)$"),
    ),
    responses(
        (status = 200, description = "The lane's state now", body = LanePaused),
        (status = 404, description = "An unknown lane or action", body = ErrorBody),
        StoreErrors,
    ))]
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
    Ok(Json(LanePaused { lane, paused: action == "pause" }))
}

/// What a performance report covers.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct ReportRequest {
    /// The window in minutes: default 5, kept within 1–120.
    minutes: Option<u64>,
}

/// `POST /analytics/reports`: queue a performance report (`{"minutes"?}`, default 5).
#[utoipa::path(post, path = "/analytics/reports", tag = "analytics",
    request_body(content = Option<ReportRequest>, description = "Optional", content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = TaskQueued),
        BodyErrors, StoreErrors,
    ))]
pub(super) async fn report_request(
    State(s): State<AppState>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let payload: serde_json::Value =
        if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(&body)? };
    let task_id = s.engine.enqueue(TaskSpec::new(crate::analytics::report::KIND, payload)).await?;
    Ok((StatusCode::ACCEPTED, Json(TaskQueued { status: TaskState::Pending, task_id })))
}

/// `GET /analytics/reports/latest`: the newest report.
#[utoipa::path(get, path = "/analytics/reports/latest", tag = "analytics",
    responses(
        (status = 200, description = "The newest performance report", body = crate::analytics::report::Report),
        (status = 404, description = "No report yet", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn report_latest(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    match crate::analytics::report::latest(&s.engine).await? {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::NotFound("no report yet; POST /analytics/reports queues one".into())),
    }
}

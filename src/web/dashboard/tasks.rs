//! One task's record, the latest tasks of each lane, the running ones; cancel and retry.

use super::*;

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
    /// Queued for later: when it is due.
    due: Option<String>,
    cancellable: bool,
    /// Dead: it can be sent back to its lane.
    retryable: bool,
}

struct RecentRow {
    id: String,
    kind: String,
    lane: &'static str,
    state: String,
    queued: String,
}

/// A task queued for later.
struct LaterRow {
    id: String,
    kind: String,
    lane: &'static str,
    due: String,
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
    scheduled: Vec<LaterRow>,
}

/// Tasks still in their lanes (queued, running or waiting to retry), newest first, the latest
/// `RECENT` of each lane, whose kind contains `kind`.
async fn recent_tasks(engine: &Engine, kind: &str) -> Result<Vec<RecentRow>, EngineError> {
    const RECENT: usize = 50;
    Ok(engine
        .recent_tasks(kind, RECENT)
        .await?
        .into_iter()
        .map(|t| RecentRow {
            id: t.id,
            kind: t.kind,
            lane: t.lane.as_str(),
            state: t.state.unwrap_or_else(|| "—".into()),
            queued: format_ms(t.queued_ms),
        })
        .collect())
}

pub(super) async fn tasks(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<IdQuery>) -> Page {
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
                    due: t.run_at.clone(),
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
    let (recent, scheduled) = if task.is_none() {
        let recent = recent_tasks(&state.engine, &kind).await.map_err(failed)?;
        let recent =
            recent.into_iter().filter(|r| q.state.is_empty() || r.state.eq_ignore_ascii_case(q.state.trim())).collect();
        (recent, later_tasks(&state.engine, &kind).await.map_err(failed)?)
    } else {
        (Vec::new(), Vec::new())
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
        scheduled,
    }))
}

/// The first tasks queued for later, the first due first, whose kind contains `kind`.
async fn later_tasks(engine: &Engine, kind: &str) -> Result<Vec<LaterRow>, EngineError> {
    const FIRST: usize = 50;
    let all = engine.later_tasks(None, if kind.is_empty() { FIRST } else { 1000 }).await?;
    Ok(all
        .into_iter()
        .filter(|t| t.kind.contains(kind))
        .take(FIRST)
        .map(|t| LaterRow {
            id: t.task_id,
            kind: t.kind,
            lane: t.lane.as_str(),
            due: t.run_at,
            queued: t.created_at.unwrap_or_default(),
        })
        .collect())
}

/// Run a task queued for later now.
pub(super) async fn run_now(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Page {
    require_post(&state, &headers, &Form::parse(&body)).await?;
    match state.engine.run_now(&id).await {
        Ok(()) | Err(EngineError::NotLater(_)) => Ok(Redirect::to(&format!("/ui/tasks?id={id}")).into_response()),
        Err(e) => Err(failed(e)),
    }
}

pub(super) async fn cancel(
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
pub(super) async fn retry(
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
    tasks: Vec<crate::engine::queues::ActiveTask>,
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

pub(super) async fn active(State(state): State<AppState>, headers: HeaderMap) -> Page {
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

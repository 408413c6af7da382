//! One task's record, the latest tasks of each lane, the running ones; cancel and retry.

use super::*;
use crate::engine::history::Position;
use crate::engine::{HistoryFilter, TaskState, now_ms};

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

/// A task that finished, from the history.
struct FinishedRow {
    id: String,
    kind: String,
    lane: &'static str,
    state: &'static str,
    finished: String,
    run: String,
}

/// The finished tasks the filter asks for, a page of them.
#[derive(Default)]
struct FinishedList {
    rows: Vec<FinishedRow>,
    /// The link to the next (older) page.
    older: Option<String>,
    /// The filter could not be read: what is wrong with it.
    error: Option<String>,
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
    lane: String,
    since: String,
    /// A page of the finished tasks past the first is shown.
    paged: bool,
    missing: Option<String>,
    task: Option<TaskView>,
    recent: Vec<RecentRow>,
    scheduled: Vec<LaterRow>,
    finished: FinishedList,
}

/// The finished tasks the page's filter asks for: kind is a part of it (as for the lanes)
/// unless it has a `*` of its own; a state of the lanes shows none.
async fn finished_tasks(engine: &Engine, q: &IdQuery) -> Result<FinishedList, EngineError> {
    const PAGE: usize = 50;
    let state = q.state.trim();
    if TaskState::parse(state).is_some_and(|s| !s.is_finished()) {
        return Ok(FinishedList::default());
    }
    let kind = q.kind.trim();
    let kind = if kind.is_empty() || kind.contains('*') { kind.to_string() } else { format!("*{kind}*") };
    let filter = match HistoryFilter::parse(Some(state), Some(&kind), Some(&q.lane), Some(&q.since), now_ms()) {
        Ok(f) => f,
        Err(e) => return Ok(FinishedList { error: Some(e), ..Default::default() }),
    };
    let after = match Position::after(Some(&q.after)) {
        Ok(a) => a,
        Err(e) => return Ok(FinishedList { error: Some(e), ..Default::default() }),
    };
    let page = engine.finished_tasks(&filter, PAGE, after).await?;
    let older = page.next.map(|next| {
        let mut link = form_urlencoded::Serializer::new(String::from("/ui/tasks?"));
        for (k, v) in [("kind", &q.kind), ("state", &q.state), ("lane", &q.lane), ("since", &q.since)] {
            if !v.trim().is_empty() {
                link.append_pair(k, v.trim());
            }
        }
        link.append_pair("after", &next);
        link.finish()
    });
    let rows = page
        .tasks
        .into_iter()
        .map(|t| FinishedRow {
            id: t.task_id,
            kind: t.kind,
            lane: t.lane.map_or("", Lane::as_str),
            state: t.state.as_str(),
            finished: t.finished_at,
            run: t.run_ms.map_or_else(|| "—".into(), |ms| format!("{ms} ms")),
        })
        .collect();
    Ok(FinishedList { rows, older, error: None })
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
    let lane = Lane::parse(q.lane.trim());
    let (recent, scheduled, finished) = if task.is_none() {
        let recent = recent_tasks(&state.engine, &kind).await.map_err(failed)?;
        let recent = recent
            .into_iter()
            .filter(|r| q.state.is_empty() || r.state.eq_ignore_ascii_case(q.state.trim()))
            .filter(|r| lane.is_none_or(|l| l.as_str() == r.lane))
            .collect();
        let scheduled = later_tasks(&state.engine, &kind).await.map_err(failed)?;
        let scheduled = scheduled.into_iter().filter(|r| lane.is_none_or(|l| l.as_str() == r.lane)).collect();
        (recent, scheduled, finished_tasks(&state.engine, &q).await.map_err(failed)?)
    } else {
        Default::default()
    };
    Ok(render(TasksPage {
        csrf: s.csrf,
        nav: "tasks",
        query: id,
        kind,
        state: q.state.trim().to_uppercase(),
        lane: q.lane.trim().to_string(),
        since: q.since.trim().to_string(),
        paged: !q.after.trim().is_empty(),
        missing,
        task,
        recent,
        scheduled,
        finished,
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

/// Back to a task's page: its id, whatever it holds, written into the query as a query's text
/// (`&`, `#`, CR or LF in an id taken from the path neither split the query nor break the header).
fn task_page(id: &str) -> Response {
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("id", id).finish();
    Redirect::to(&format!("/ui/tasks?{query}")).into_response()
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
        Ok(()) | Err(EngineError::NotLater(_)) => Ok(task_page(&id)),
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
        Ok(_) | Err(EngineError::Finished { .. }) => Ok(task_page(&id)),
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
    Ok(task_page(&id))
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

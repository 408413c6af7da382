//! Live task events as Server-Sent Events: one task's until it finishes
//! (`GET /tasks/{id}/events`), and the deployment's (`GET /events?kind=&lane=`).
//!
//! A task's stream starts with its status as `GET /tasks/{id}` answers it (event `status`);
//! then each state it enters (`state`) and each progress report (`progress`), as workers on any
//! process publish them; it ends after the state that finishes the task (SUCCESS with its
//! result, FAILURE, REVOKED). A task already finished answers its status and ends at once. A
//! state the stream has told already (the status read, then the event of the same change
//! arriving after it) is not told twice.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::openapi::StoreErrors;
use crate::engine::history::kind_matches;
use crate::engine::{Engine, TaskEvent, TaskFollow, TaskState, TaskStatus};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> impl IntoResponse {
    ([("x-accel-buffering", "no")], Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn event_of(e: &TaskEvent<'_>) -> Event {
    Event::default().event(e.name()).json_data(e).unwrap_or_else(|_| Event::default().comment("unwritable event"))
}

fn status_event(s: &TaskStatus) -> Event {
    Event::default().event("status").json_data(s).unwrap_or_else(|_| Event::default().comment("unwritable status"))
}

/// Where one task's stream is.
struct TaskFeed {
    engine: Engine,
    id: String,
    follow: TaskFollow,
    /// Events to send before waiting for more.
    ready: std::collections::VecDeque<Event>,
    done: bool,
    /// The state (and attempt) last told: an event published before the status read but
    /// delivered after it tells it again, and is left out.
    told: Option<(TaskState, u32)>,
}

impl TaskFeed {
    /// The task's status, read again (after the hub's subscription was made anew: events may
    /// have been lost).
    async fn resync(&mut self) {
        match self.engine.task_status(&self.id).await {
            Ok(Some(s)) => {
                self.done = s.status.is_finished();
                self.told = Some((s.status, s.attempts));
                self.ready.push_back(status_event(&s));
            }
            Ok(None) => self.done = true,
            Err(e) => tracing::debug!(task_id = %self.id, error = %e, "could not read a followed task's status"),
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, TaskFeed)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                e = self.follow.events.recv() => match e {
                    Some(e) => {
                        if let Some(state) = e.state {
                            let now = (state, e.attempt.unwrap_or(0));
                            if self.told == Some(now) {
                                continue;
                            }
                            self.told = Some(now);
                        }
                        self.done = e.is_final();
                        self.ready.push_back(event_of(&e));
                    }
                    None => return None,
                },
                changed = self.follow.subscriptions.changed() => match changed {
                    Ok(()) => self.resync().await,
                    Err(_) => return None,
                },
            }
        }
    }
}

/// `GET /tasks/{id}/events`: one task's events as Server-Sent Events: its status first (event
/// `status`, the object `GET /tasks/{id}` answers), then each state it enters (`state`) and each
/// progress report (`progress`); the stream ends after a final state.
#[utoipa::path(get, path = "/tasks/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Server-Sent Events; each event's data is one JSON object", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such task", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn task_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Listening before reading, so that nothing between the two is missed.
    let follow = s.engine.follow_task(&id).await;
    let status = s.engine.task_status(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no task with id {id}")))?;
    let feed = TaskFeed {
        engine: s.engine.clone(),
        done: status.status.is_finished(),
        told: Some((status.status, status.attempts)),
        ready: [status_event(&status)].into(),
        id,
        follow,
    };
    Ok(sse(futures_util::stream::unfold(feed, TaskFeed::next)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// A kind, or a pattern with `*` at its start or end.
    kind: Option<String>,
    /// A lane's name.
    lane: Option<String>,
}

/// `GET /events?kind=&lane=`: every task's events, of a kind (a name, or a pattern with `*` at
/// its start or end) and a lane when given. A listener that falls far behind is told how many it
/// missed, in a comment.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "Server-Sent Events (`state`, `progress`); each event's data is one JSON object", content_type = "text/event-stream", body = String),
        (status = 400, description = "An unknown lane (`bad_request`)", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn all_events(
    State(s): State<AppState>,
    super::JsonQuery(q): super::JsonQuery<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let kind = q.kind.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
    let lane = super::api::lane_param(q.lane.as_deref())?;
    let rx = s.engine.follow_all().await;
    let wanted = move |e: &TaskEvent<'_>| {
        kind.as_deref().is_none_or(|k| kind_matches(k, &e.kind)) && lane.is_none_or(|l| e.lane == Some(l))
    };
    let stream = futures_util::stream::unfold((rx, wanted), |(mut rx, wanted)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if wanted(&e) => return Some((Ok(event_of(&e)), (rx, wanted))),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().comment(format!("missed {n} events"))), (rx, wanted)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(sse(stream))
}

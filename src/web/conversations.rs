//! The seed's conversation endpoints (SPEC §6), with the seed's response shapes.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::RawBody;
use super::api::parse_body;
use super::error::{ApiError, ErrorBody};
use super::openapi::{BodyErrors, StoreErrors, SyncErrors};
use crate::analytics::figures::StoredAnalytics;
use crate::conversation::flow::{self, Incoming};
use crate::conversation::responder::Intent;
use crate::conversation::store::Who;
use crate::conversation::store::{ConversationKey, Store};
use crate::engine::{Engine, TaskState, new_task_id, now_us};
use crate::model::event::Raw;

/// Longest message accepted from the API, in characters.
const MAX_MESSAGE_CHARS: usize = 20_000;

/// A customer message to answer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageRequest {
    /// The conversation: `platform:account:customer` with a known platform names that
    /// conversation; any other value names the API conversation `api:api:<value>`.
    #[serde(default)]
    conversation_id: Option<String>,
    /// Not blank; at most 20 000 characters.
    message: String,
    /// Kept for the seed's clients; API conversations are answered here, not on a platform.
    #[serde(default)]
    platform: Option<String>,
    /// Without `conversation_id`: the API conversation `api:api:<user_id>`.
    #[serde(default)]
    user_id: Option<String>,
    /// `true` to answer at once, before the reply.
    #[serde(default)]
    async_processing: Option<bool>,
}

/// The answer to a message: its reply, or (asynchronously) that it is queued.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(super) enum MessageAnswer {
    Completed(MessageCompleted),
    Processing(MessageProcessing),
}

/// A message answered.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageCompleted {
    conversation_id: String,
    /// Whether the conversation was handed off to a person.
    handed_off: bool,
    /// `null` for a platform conversation.
    #[schema(value_type = Option<Intent>)]
    intent: Value,
    #[schema(value_type = Option<String>)]
    responder: Value,
    /// The reply; `null` for a platform conversation (the reply is in its transcript).
    #[schema(value_type = Option<String>)]
    response: Value,
    /// `completed`.
    #[schema(value_type = String, pattern = "^completed$")]
    status: &'static str,
    task_id: String,
}

/// A message queued, to be answered by a worker.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageProcessing {
    /// `pending`.
    #[schema(value_type = String, example = "pending")]
    conversation_id: &'static str,
    #[schema(value_type = String, example = "Message received and being processed")]
    response: &'static str,
    /// `processing`.
    #[schema(value_type = String, pattern = "^processing$")]
    status: &'static str,
    task_id: String,
}

/// `POST /conversations/message`: synchronous unless `async_processing` is true.
#[utoipa::path(post, path = "/conversations/message", tag = "conversations",
    request_body(content = MessageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The reply (synchronous), or the message queued (`async_processing`)", body = MessageAnswer),
        SyncErrors, BodyErrors, StoreErrors,
    ))]
pub(super) async fn message(State(s): State<AppState>, RawBody(body): RawBody) -> Result<impl IntoResponse, ApiError> {
    handle(&s.engine, parse_body(&body)?, false).await
}

/// `POST /conversations/webhook-interaction`: the same, asynchronous unless told otherwise.
#[utoipa::path(post, path = "/conversations/webhook-interaction", tag = "conversations",
    request_body(content = MessageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The message queued, or (`async_processing: false`) its reply", body = MessageAnswer),
        SyncErrors, BodyErrors, StoreErrors,
    ))]
pub(super) async fn webhook_interaction(
    State(s): State<AppState>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    handle(&s.engine, parse_body(&body)?, true).await
}

async fn handle(engine: &Engine, req: MessageRequest, async_default: bool) -> Result<Json<MessageAnswer>, ApiError> {
    if req.message.trim().is_empty() {
        return Err(ApiError::BadRequest("`message` must not be empty".into()));
    }
    if req.message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::BadRequest(format!("`message` is longer than {MAX_MESSAGE_CHARS} characters")));
    }
    let key = match (&req.conversation_id, &req.user_id) {
        (Some(id), _) if !id.trim().is_empty() => flow::key_for_id(id.trim()),
        (_, Some(user)) if !user.trim().is_empty() => ConversationKey::api(user.trim()),
        _ => ConversationKey::api(&new_task_id().to_lowercase()),
    };
    let incoming = Incoming {
        platform: key.platform,
        account: key.account.clone(),
        customer: key.customer.clone(),
        text: req.message,
        message_id: format!("api:{}", new_task_id()),
        received_us: now_us(),
        timestamp_ms: None,
        raw: req.platform.map(|p| Raw::from_value(&json!({"platform": p}))).unwrap_or_default(),
    };
    engine.check_room().await?;
    let task_id = engine.enqueue(incoming.task()).await?;
    let conversation_id = key.id();
    if req.async_processing.unwrap_or(async_default) {
        return Ok(Json(MessageAnswer::Processing(MessageProcessing {
            conversation_id: "pending",
            response: "Message received and being processed",
            status: "processing",
            task_id,
        })));
    }
    // Inside the request's own time (`HANDLER_TIMEOUT`, 30 s: 25 s here), with room for the
    // LLM's.
    let c = engine.config();
    let timeout = (c.llm_timeout + Duration::from_secs(10)).min(c.handler_timeout * 5 / 6);
    let status = wait_finished(engine, &task_id, timeout).await?.ok_or_else(|| {
        ApiError::Timeout(format!(
            "no reply within {}; the message is queued as task {task_id}",
            humantime::format_duration(timeout)
        ))
    })?;
    match status.status {
        TaskState::Success => Ok(Json(MessageAnswer::Completed(MessageCompleted {
            conversation_id,
            // (a result says `handed_off` only when it did)
            handed_off: status.result["handed_off"] == true,
            intent: status.result["intent"].clone(),
            responder: status.result["responder"].clone(),
            response: status.result["response"].clone(),
            status: "completed",
            task_id,
        }))),
        state => Err(ApiError::Upstream(format!(
            "the message's task {task_id} ended {}: {}",
            state.as_str(),
            status.error.unwrap_or_default()
        ))),
    }
}

/// Poll a task's state until it has finished, then read its record; `None` once `timeout` passed.
async fn wait_finished(
    engine: &Engine,
    id: &str,
    timeout: Duration,
) -> Result<Option<crate::engine::TaskStatus>, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if engine.task_state(id).await?.is_some_and(TaskState::is_finished) {
            return Ok(engine.task_status(id).await?);
        }
        if Instant::now() + pause > deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// What to answer when picking a conversation up again.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ContinueRequest {
    /// The message to answer; else the customer's last unanswered one, else a follow-up question.
    #[serde(default)]
    message: Option<String>,
}

/// A conversation picked up again.
#[derive(Serialize, ToSchema)]
pub(super) struct Continued {
    conversation_id: String,
    /// `processing`.
    #[schema(value_type = String, example = "processing")]
    status: &'static str,
    task_id: String,
}

/// `POST /conversations/{id}/continue`: release a hand-off and pick the conversation up again.
#[utoipa::path(post, path = "/conversations/{id}/continue", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, read as `conversation_id` of a message")),
    request_body(content = Option<ContinueRequest>, description = "Optional", content_type = "application/json"),
    responses(
        (status = 202, description = "The answer is queued", body = Continued),
        (status = 404, description = "No such conversation", body = ErrorBody),
        BodyErrors, StoreErrors,
    ))]
pub(super) async fn continue_conversation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let req: ContinueRequest =
        if body.iter().all(u8::is_ascii_whitespace) { Default::default() } else { parse_body(&body)? };
    let key = flow::key_for_id(&id);
    if Store::new(s.engine.clone()).summary(&key.id()).await?.is_none() {
        return Err(ApiError::NotFound(format!("no conversation with id {id}")));
    }
    let message = req.message.filter(|m| !m.trim().is_empty());
    let task_id = s.engine.enqueue(flow::continue_task(&key, message)).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(Continued { conversation_id: key.id(), status: "processing", task_id })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TranscriptQuery {
    /// The latest turns to show: default 100, kept within 1–1000.
    limit: Option<usize>,
}

/// A conversation: its summary, latest turns and analytics.
#[derive(Serialize, ToSchema)]
pub(super) struct Transcript {
    account: String,
    /// The figures of its last analysis; `null` before the first or after they expired.
    #[schema(value_type = Option<StoredAnalytics>)]
    analytics: Option<Value>,
    conversation_id: String,
    created_at: String,
    customer: String,
    customer_messages: u64,
    handed_off: bool,
    /// The latest turns, oldest first.
    messages: Vec<Turn>,
    platform: String,
    replies: u64,
    updated_at: String,
}

/// One turn of a conversation.
#[derive(Serialize, ToSchema)]
pub(super) struct Turn {
    at: String,
    event_id: Option<String>,
    intent: Option<Intent>,
    /// `message`, `reply`, `echo`, `delivery`, `read`, …
    kind: String,
    role: Who,
    text: String,
}

/// `GET /conversations/{id}`: the summary and the latest turns, oldest first.
#[utoipa::path(get, path = "/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation, read as `conversation_id` of a message"), TranscriptQuery),
    responses(
        (status = 200, description = "The conversation", body = Transcript),
        (status = 400, description = "A bad parameter (`bad_request`)", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        StoreErrors,
    ))]
pub(super) async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    super::JsonQuery(q): super::JsonQuery<TranscriptQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let key = flow::key_for_id(&id);
    let store = Store::new(s.engine.clone());
    let Some(summary) = store.summary(&key.id()).await? else {
        return Err(ApiError::NotFound(format!("no conversation with id {id}")));
    };
    let turns = store.history(&key.id(), q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    let messages: Vec<Turn> = turns
        .into_iter()
        .map(|t| Turn {
            at: crate::engine::format_ms(t.at_ms),
            event_id: t.event_id,
            intent: t.intent,
            kind: t.kind,
            role: t.who,
            text: t.text,
        })
        .collect();
    Ok(Json(Transcript {
        account: summary.account,
        analytics: crate::analytics::conversation::load(&s.engine, &key.id()).await?,
        conversation_id: summary.conversation_id,
        created_at: crate::engine::format_ms(summary.created_at),
        customer: summary.customer,
        customer_messages: summary.customer_turns,
        handed_off: summary.handed_off,
        messages,
        platform: summary.platform,
        replies: summary.agent_turns,
        updated_at: crate::engine::format_ms(summary.updated_at),
    }))
}

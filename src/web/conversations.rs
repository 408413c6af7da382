//! The seed's conversation endpoints (SPEC §6), with the seed's response shapes.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::RawBody;
use super::api::parse_body;
use super::error::ApiError;
use crate::conversation::flow::{self, Incoming};
use crate::conversation::store::{ConversationKey, Store};
use crate::engine::{Engine, TaskState, new_task_id, now_us};
use crate::model::event::Raw;

/// Longest message accepted from the API, in characters.
const MAX_MESSAGE_CHARS: usize = 20_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessageRequest {
    #[serde(default)]
    conversation_id: Option<String>,
    message: String,
    /// Kept for the seed's clients; API conversations are answered here, not on a platform.
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    async_processing: Option<bool>,
}

/// `POST /conversations/message`: synchronous unless `async_processing` is true.
pub(super) async fn message(State(s): State<AppState>, RawBody(body): RawBody) -> Result<impl IntoResponse, ApiError> {
    handle(&s.engine, parse_body(&body)?, false).await
}

/// `POST /conversations/webhook-interaction`: the same, asynchronous unless told otherwise.
pub(super) async fn webhook_interaction(
    State(s): State<AppState>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    handle(&s.engine, parse_body(&body)?, true).await
}

async fn handle(engine: &Engine, req: MessageRequest, async_default: bool) -> Result<Json<Value>, ApiError> {
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
        return Ok(Json(json!({
            "conversation_id": "pending",
            "response": "Message received and being processed",
            "status": "processing",
            "task_id": task_id,
        })));
    }
    // Inside the server's 30 s request timeout, with room for the LLM's own.
    let timeout = (engine.config().llm_timeout + Duration::from_secs(10)).min(Duration::from_secs(25));
    let status = wait_finished(engine, &task_id, timeout).await?.ok_or_else(|| {
        ApiError::Timeout(format!(
            "no reply within {}; the message is queued as task {task_id}",
            humantime::format_duration(timeout)
        ))
    })?;
    match status.status {
        TaskState::Success => Ok(Json(json!({
            "conversation_id": conversation_id,
            "response": status.result["response"],
            "status": "completed",
            "task_id": task_id,
            "intent": status.result["intent"],
            "responder": status.result["responder"],
            // (a result says `handed_off` only when it did)
            "handed_off": status.result["handed_off"] == true,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ContinueRequest {
    #[serde(default)]
    message: Option<String>,
}

/// `POST /conversations/{id}/continue`: release a hand-off and pick the conversation up again.
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
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"conversation_id": key.id(), "task_id": task_id, "status": "processing"})),
    ))
}

#[derive(Deserialize)]
pub(super) struct TranscriptQuery {
    limit: Option<usize>,
}

/// `GET /conversations/{id}`: the summary and the latest turns, oldest first.
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
    let messages: Vec<Value> = turns
        .iter()
        .map(|t| {
            json!({
                "role": t.who, "kind": t.kind, "text": t.text, "intent": t.intent,
                "event_id": t.event_id, "at": crate::engine::format_ms(t.at_ms),
            })
        })
        .collect();
    Ok(Json(json!({
        "conversation_id": summary.conversation_id,
        "platform": summary.platform,
        "account": summary.account,
        "customer": summary.customer,
        "created_at": crate::engine::format_ms(summary.created_at),
        "updated_at": crate::engine::format_ms(summary.updated_at),
        "handed_off": summary.handed_off,
        "customer_messages": summary.customer_turns,
        "replies": summary.agent_turns,
        "messages": messages,
        "analytics": crate::analytics::conversation::load(&s.engine, &key.id()).await?,
    })))
}

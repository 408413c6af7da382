//! A customer's message, from the queue to the reply going out.
//!
//! `conversation.process_message` (lane `conversations`) records the message, asks a responder
//! for the answer, records the answer and queues its delivery (`delivery.send`, lane `webhooks`).
//! Both kinds are ordered tasks: messages under the conversation's id, deliveries under
//! `out:<conversation id>`, so one conversation's messages are handled one at a time in the order
//! they arrived, and its replies go out in that order too, on any number of workers.
//!
//! Every step is safe to run again: the message and the reply are recorded once each (by event
//! id), and each part of the reply is marked once the platform accepted it, under a reply id
//! derived from the message, so a retried or reclaimed task (or a second delivery it queued)
//! never answers twice. Conversations handed to a person get no automatic reply
//! until `conversation.continue` releases them.

use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::llm;
use super::responder::{self, Language, Reply};
use super::store::{ConversationKey, Store, StoredTurn, Who};
use crate::delivery::send::{self as delivery, Outgoing};
use crate::engine::{Engine, Lane, Outcome, Payload, Registry, TaskContext, TaskSpec, now_ms};
pub(crate) use crate::model::Incoming;
use crate::model::{Channel, Platform};

pub(crate) use crate::model::message::PROCESS;
pub(crate) const CONTINUE: &str = "conversation.continue";

/// Turns of history given to the responder.
const HISTORY: usize = 20;

/// A conversation's id as given by an API caller: a full `platform:account:customer` id, or any
/// other string, which names a conversation of the API itself (`api:api:<string>`). A first part
/// that names no platform makes the whole string an API conversation's name, so callers cannot
/// make up platforms.
pub(crate) fn key_for_id(id: &str) -> ConversationKey {
    let parts: Vec<&str> = id.splitn(3, ':').collect();
    match parts.as_slice() {
        [p, a, c] if !a.is_empty() && !c.is_empty() => match Channel::parse(p) {
            Some(channel) => ConversationKey::new(channel, a, c),
            None => ConversationKey::api(id),
        },
        _ => ConversationKey::api(id),
    }
}

/// The task that continues a conversation: releases a hand-off and answers what is unanswered.
pub(crate) fn continue_task(key: &ConversationKey, message: Option<String>) -> TaskSpec {
    TaskSpec::new(CONTINUE, json!({"conversation": key, "message": message}))
        .on_lane(Lane::Conversations)
        .ordered_by(key.id())
}

/// What runs once a reply is recorded and queued, given the conversation's id: the analytics
/// layer's request for the conversation's figures, wired in by the application (this layer
/// knows nothing above it). It reports its own failures: a reply never waits on it.
pub(crate) type AfterReply = Arc<dyn Fn(Engine, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub(crate) fn register(r: &mut Registry, after_reply: AfterReply) {
    let after = after_reply.clone();
    r.register_typed(PROCESS, Lane::Conversations, move |ctx, inc: Incoming| {
        let after = after.clone();
        async move { process(ctx, inc, &after).await }
    });
    r.register_typed(CONTINUE, Lane::Conversations, move |ctx, c: Continuation| {
        let after = after_reply.clone();
        async move { continue_conversation(ctx, c, &after).await }
    });
}

impl Payload for Incoming {
    const WHAT: &'static str = "a conversation message";
}

impl Payload for Continuation {
    const WHAT: &'static str = "a continuation";
}

async fn process(ctx: TaskContext, inc: Incoming, after: &AfterReply) -> Outcome {
    let store = Store::new(ctx.engine().clone());
    let key = inc.key();
    let turn = StoredTurn {
        who: Who::Customer,
        text: inc.text.clone(),
        kind: "message".into(),
        intent: Some(responder::classify(&inc.text)),
        event_id: Some(inc.message_id.clone()),
        at_ms: inc.timestamp_ms.unwrap_or_else(now_ms),
    };
    if let Err(e) = store.append(&key, &turn).await {
        return Outcome::retry(format!("could not record the message: {e}"));
    }
    answer(ctx.engine(), &store, &key, &inc.text, &inc.message_id, inc.received_us, after).await
}

/// Answer one customer message (already recorded) unless the conversation is with a person.
async fn answer(
    engine: &Engine,
    store: &Store,
    key: &ConversationKey,
    text: &str,
    message_id: &str,
    received_us: u64,
    after: &AfterReply,
) -> Outcome {
    let id = key.id();
    let (summary, history) = match tokio::try_join!(store.summary(&id), store.history(&id, HISTORY + 1)) {
        Ok(v) => v,
        Err(e) => return Outcome::retry(format!("could not read the conversation: {e}")),
    };
    if summary.is_some_and(|s| s.handed_off) {
        metrics::counter!("switchyard_replies_total", "platform" => key.platform.as_str(), "responder" => "none")
            .increment(1);
        return Outcome::Done(json!({
            "conversation_id": id, "response": null, "handed_off": true,
            "note": "the conversation is with a person; no automatic reply",
        }));
    }
    let mut history: Vec<StoredTurn> =
        history.into_iter().filter(|t| t.event_id.as_deref() != Some(message_id)).collect();
    history.drain(..history.len().saturating_sub(HISTORY));
    let (reply, responder) = respond(engine, &history, text).await;
    finish_reply(store, key, reply, responder, message_id, received_us, after).await
}

/// Record the reply to `answered` (a message id, or a continuation's task id), hand the
/// conversation to a person when the reply says so, and queue the delivery in order.
async fn finish_reply(
    store: &Store,
    key: &ConversationKey,
    reply: Reply,
    responder: &'static str,
    answered: &str,
    received_us: u64,
    after: &AfterReply,
) -> Outcome {
    let engine = store.engine();
    let id = key.id();
    let turn_event = format!("reply:{answered}");
    let agent = StoredTurn {
        who: Who::Agent,
        text: reply.text.clone(),
        kind: "reply".into(),
        intent: Some(reply.intent),
        event_id: Some(turn_event.clone()),
        at_ms: now_ms(),
    };
    if let Err(e) = store.append(key, &agent).await {
        return Outcome::retry(format!("could not record the reply: {e}"));
    }
    if reply.handoff
        && let Err(e) = store.set_handoff(&id, true).await
    {
        return Outcome::retry(format!("could not hand the conversation to a person: {e}"));
    }
    let mut delivery_task = Value::Null;
    if let Some(channel) = key.platform.platform().filter(|p| delivery::text_limit(*p).is_some()) {
        let reply_id = reply_id(&id, answered);
        let out = Outgoing {
            channel,
            account: key.account.clone(),
            customer: key.customer.clone(),
            text: reply.text.clone(),
            reply_id: reply_id.clone(),
            received_us,
            turn: Some(turn_event),
        };
        // No idempotency key: should this task run again after queuing the delivery, the second
        // delivery waits behind the first (the same order key) and finds every part it sent
        // marked, so nothing goes out twice — and no marker per message is kept for a day.
        let spec = TaskSpec::new(delivery::KIND, serde_json::to_value(&out).unwrap_or_default())
            .on_lane(Lane::Webhooks)
            .ordered_by(format!("out:{id}"))
            .routed_by(id.clone());
        match engine.enqueue(spec).await {
            Ok(task) => delivery_task = json!(task),
            Err(e) => return Outcome::retry(format!("could not queue the reply's delivery: {e}")),
        }
    }
    metrics::counter!("switchyard_replies_total", "platform" => key.platform.as_str(), "responder" => responder)
        .increment(1);
    // The conversation's figures, once it has been quiet a moment (debounced).
    after(engine.clone(), id.clone()).await;
    // The reply, its intent included, is in the conversation's turns, and `handed_off` in its
    // summary: the result says it only when the conversation was handed off. A conversation of
    // the API keeps the reply in the result too, where the seed's clients read it
    // (`GET /conversations/tasks/{id}/status`).
    let mut result = json!({
        "conversation_id": id,
        "responder": responder,
        "delivery_task_id": delivery_task,
    });
    if reply.handoff {
        result["handed_off"] = json!(true);
    }
    if key.platform == Channel::Api {
        result["response"] = json!(reply.text);
        result["intent"] = json!(reply.intent);
        result["language"] = json!(reply.language);
    }
    Outcome::Done(result)
}

/// Export the reply metrics at zero for every platform with conversations and every responder.
pub(crate) fn metrics_at_zero() {
    for p in Platform::ALL.into_iter().filter(|p| delivery::text_limit(*p).is_some()) {
        for responder in ["builtin", "llm", "none"] {
            metrics::counter!("switchyard_replies_total", "platform" => p.as_str(), "responder" => responder)
                .increment(0);
        }
    }
    metrics::counter!("switchyard_llm_fallbacks_total").increment(0);
}

/// The LLM's answer when one is configured and answers in time, else the built-in one. The
/// built-in analysis (intent, hand-off) stands either way.
async fn respond(engine: &Engine, history: &[StoredTurn], text: &str) -> (Reply, &'static str) {
    let turns: Vec<responder::Turn> =
        history.iter().filter(|t| t.who != Who::System).map(StoredTurn::as_turn).collect();
    let builtin = responder::respond(&turns, text);
    let c = engine.config();
    if c.llm_url.is_none() {
        return (builtin, "builtin");
    }
    match llm::reply(c, history, text).await {
        Ok(answer) => (Reply { text: answer, ..builtin }, "llm"),
        Err(e) => {
            tracing::warn!(error = %e, "the LLM gave no reply; the built-in responder answers");
            metrics::counter!("switchyard_llm_fallbacks_total").increment(1);
            (builtin, "builtin")
        }
    }
}

/// A stable id for the reply to one message: the key of its sent-markers and RBM's message id.
fn reply_id(conversation: &str, message_id: &str) -> String {
    let digest = Sha256::digest(format!("{conversation}\n{message_id}").as_bytes());
    format!("r{}", hex::encode(&digest[..12]))
}

#[derive(Deserialize)]
struct Continuation {
    conversation: ConversationKey,
    #[serde(default)]
    message: Option<String>,
}

/// Release a hand-off and pick the conversation up again: answer the message given, or the
/// customer's last message when it went unanswered, or ask whether there is anything else.
async fn continue_conversation(ctx: TaskContext, c: Continuation, after: &AfterReply) -> Outcome {
    let store = Store::new(ctx.engine().clone());
    let id = c.conversation.id();
    if let Err(e) = store.set_handoff(&id, false).await {
        return Outcome::retry(format!("could not release the conversation: {e}"));
    }
    let history = match store.history(&id, HISTORY).await {
        Ok(h) => h,
        Err(e) => return Outcome::retry(format!("could not read the conversation: {e}")),
    };
    let (text, message_id) = if let Some(text) = c.message {
        let turn = StoredTurn {
            who: Who::Customer,
            text: text.clone(),
            kind: "message".into(),
            intent: Some(responder::classify(&text)),
            event_id: Some(ctx.task_id.clone()),
            at_ms: now_ms(),
        };
        if let Err(e) = store.append(&c.conversation, &turn).await {
            return Outcome::retry(format!("could not record the message: {e}"));
        }
        (text, ctx.task_id.clone())
    } else {
        match history.iter().rev().find(|t| t.who != Who::System) {
            Some(last) if last.who == Who::Customer => {
                (last.text.clone(), last.event_id.clone().unwrap_or_else(|| ctx.task_id.clone()))
            }
            _ => return follow_up(&store, &c.conversation, &history, &ctx.task_id, after).await,
        }
    };
    answer(ctx.engine(), &store, &c.conversation, &text, &message_id, crate::engine::now_us(), after).await
}

/// Nothing is unanswered: ask whether the customer needs anything else, in their language.
async fn follow_up(
    store: &Store,
    key: &ConversationKey,
    history: &[StoredTurn],
    task_id: &str,
    after: &AfterReply,
) -> Outcome {
    let language = history
        .iter()
        .rev()
        .find(|t| t.who == Who::Customer)
        .map(|t| responder::detect_language(&t.text))
        .unwrap_or(Language::En);
    let text = match language {
        Language::En => "Is there anything else I can help you with?",
        Language::Es => "¿Hay algo más en lo que pueda ayudarte?",
    };
    // Recorded as a customer-less prompt: the follow-up is the answer to this continuation.
    let prompt = StoredTurn {
        who: Who::System,
        text: "conversation continued".into(),
        kind: "continue".into(),
        intent: None,
        event_id: Some(task_id.to_string()),
        at_ms: now_ms(),
    };
    if let Err(e) = store.append(key, &prompt).await {
        return Outcome::retry(format!("could not record the continuation: {e}"));
    }
    let reply = Reply { text: text.into(), intent: responder::Intent::Fallback, language, handoff: false };
    finish_reply(store, key, reply, "builtin", task_id, 0, after).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Platform;

    #[test]
    fn ids_from_callers_name_conversations() {
        assert_eq!(key_for_id("messenger:P1:U1"), ConversationKey::new(Platform::Messenger, "P1", "U1"));
        assert_eq!(key_for_id("api:api:u7"), ConversationKey::api("u7"));
        assert_eq!(key_for_id("abc-123"), ConversationKey::api("abc-123"));
        assert_eq!(key_for_id("a::b"), ConversationKey::api("a::b"));
        // A made-up platform is not one: the whole id names an API conversation.
        assert_eq!(key_for_id("foo:bar:baz"), ConversationKey::api("foo:bar:baz"));
        assert_eq!(key_for_id("foo:bar:baz").id(), "api:api:foo:bar:baz");
        assert_eq!(key_for_id("api:api:abc-123").id(), "api:api:abc-123");
    }

    #[test]
    fn reply_ids_are_stable_per_message() {
        assert_eq!(reply_id("c", "m1"), reply_id("c", "m1"));
        assert_ne!(reply_id("c", "m1"), reply_id("c", "m2"));
        assert_ne!(reply_id("c1", "m"), reply_id("c2", "m"));
    }
}

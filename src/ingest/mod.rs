//! Webhook ingestion: verify, parse, deduplicate and queue — and answer only after Redis has the
//! events.
//!
//! Each platform has a file that verifies its signature scheme and parses its format into one
//! [`InboundEvent`] type ([`meta`] for Messenger, Instagram and WhatsApp; [`google`] for Pub/Sub
//! and RBM; generic sources are plain HMAC). A customer's message becomes a
//! `conversation.process_message` task on the `conversations` lane, in its conversation's order;
//! every other event a `webhook.<platform>` task on the `webhooks` lane, which records it. The
//! idempotency key of either is the platform's message id: the dedup check and the append are one
//! Lua script (the engine's enqueue), so a redelivered webhook — even two copies arriving at
//! once on two processes — queues nothing new. A request is answered 200 only after that
//! script returned; when Redis is away or the lane is over its depth limit it gets 503 with
//! `Retry-After`, and the platform delivers again.

pub mod event;
pub mod google;
pub mod jwt;
pub mod meta;
mod routes;
pub mod verify;

use std::sync::LazyLock;

use serde_json::json;

pub use event::{EventKind, InboundEvent, Platform};
pub use routes::router;

use crate::conversation::flow::Incoming;
use crate::conversation::store::{ConversationKey, Store, StoredTurn, Who};
use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext, TaskSpec, now_ms};
use crate::telemetry::Handles;

/// The task kind that carries events of a platform.
pub fn task_kind(p: Platform) -> &'static str {
    match p {
        Platform::Messenger => "webhook.messenger",
        Platform::Instagram => "webhook.instagram",
        Platform::Whatsapp => "webhook.whatsapp",
        Platform::Pubsub => "webhook.pubsub",
        Platform::Rbm => "webhook.rbm",
        Platform::Generic => "webhook.generic",
    }
}

/// What happened to one request's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Queue events (deduplicated) and count them. Returns only once Redis has them all.
pub async fn accept(engine: &Engine, events: Vec<InboundEvent>) -> Result<Accepted, EngineError> {
    let platforms: Vec<Platform> = events.iter().map(|e| e.platform).collect();
    let specs = events
        .into_iter()
        .map(|e| {
            let key = e.dedup_key();
            if Incoming::answers(&e) {
                Incoming::from_event(e).task().idempotency_key(key)
            } else {
                TaskSpec::from_json(task_kind(e.platform), serde_json::to_string(&e).unwrap_or_else(|_| "null".into()))
                    .on_lane(Lane::Webhooks)
                    .idempotency_key(key)
            }
        })
        .collect();
    let results = engine.enqueue_many(specs).await?;
    let mut out = Accepted::default();
    for (platform, (_, created)) in platforms.iter().zip(results) {
        let outcome = if created {
            out.accepted += 1;
            "accepted"
        } else {
            out.duplicates += 1;
            "duplicate"
        };
        received(platform.as_str(), outcome).increment(1);
    }
    Ok(out)
}

/// `switchyard_webhooks_received_total{platform, outcome}`.
fn received(platform: &'static str, outcome: &'static str) -> metrics::Counter {
    static HANDLES: LazyLock<Handles<metrics::Counter>> = LazyLock::new(Handles::new);
    let variant = match outcome {
        "accepted" => 0,
        "duplicate" => 1,
        _ => 2,
    };
    HANDLES.get(
        platform,
        variant,
        || metrics::counter!("switchyard_webhooks_received_total", "platform" => platform, "outcome" => outcome),
    )
}

/// Count a request turned away (bad signature, bad body): once per request.
pub fn count_rejected(platform: &'static str) {
    received(platform, "rejected").increment(1);
}

/// Register the kinds that carry webhook events other than customers' messages (those go to
/// the conversation flow): echoes, deliveries, reads, statuses are recorded in their
/// conversation, never answered.
pub fn register(r: &mut Registry) {
    for p in [
        Platform::Messenger,
        Platform::Instagram,
        Platform::Whatsapp,
        Platform::Pubsub,
        Platform::Rbm,
        Platform::Generic,
    ] {
        r.register(task_kind(p), Lane::Webhooks, |ctx| async move { record_event(ctx).await });
    }
}

/// Record an event that needs no answer in its conversation (when it belongs to one).
async fn record_event(ctx: TaskContext) -> Outcome {
    let ev = match serde_json::from_value::<InboundEvent>(ctx.payload.clone()) {
        Ok(ev) => ev,
        Err(e) => return Outcome::fail(format!("not a webhook event: {e}")),
    };
    let mut recorded = false;
    if !ev.customer.is_empty() && !matches!(ev.platform, Platform::Pubsub | Platform::Generic) {
        let kind = serde_json::to_value(ev.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let status =
            ev.raw.value().get("status").and_then(|s| s.as_str()).map(|s| format!(": {s}")).unwrap_or_default();
        let turn = StoredTurn {
            who: Who::System,
            text: ev.text.clone().unwrap_or_else(|| format!("{kind}{status}")),
            kind,
            intent: None,
            event_id: Some(ev.id.clone()),
            at_ms: ev.timestamp_ms.unwrap_or_else(now_ms),
        };
        let key = ConversationKey::new(ev.platform.as_str(), &ev.account, &ev.customer);
        match Store::new(ctx.engine().clone()).append(&key, &turn).await {
            Ok(_) => recorded = true,
            Err(e) => return Outcome::retry(format!("could not record the event: {e}")),
        }
    }
    Outcome::Done(json!({"event": ev.kind, "id": ev.id, "customer": ev.customer, "recorded": recorded}))
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary input never panics a parser: bytes, and JSON shaped like the real thing.
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{google, meta};

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_]{0,8}".prop_map(Value::String),
            prop_oneof![Just("page"), Just("instagram"), Just("whatsapp_business_account"), Just("m_1"), Just("READ")]
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("object"),
                Just("entry"),
                Just("messaging"),
                Just("changes"),
                Just("value"),
                Just("messages"),
                Just("statuses"),
                Just("message"),
                Just("mid"),
                Just("text"),
                Just("sender"),
                Just("id"),
                Just("timestamp"),
                Just("is_echo"),
                Just("delivery"),
                Just("read"),
                Just("postback"),
                Just("data"),
                Just("messageId"),
                Just("eventType"),
                Just("metadata"),
                Just("watermark"),
                Just("from"),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys.prop_map(str::to_string), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = meta::parse(&body);
            if let Ok(env) = google::envelope(&body) {
                let _ = google::pubsub_event(&env);
                let _ = google::rbm_event(&env);
            }
        }

        #[test]
        fn json_shapes_never_panic(v in json_value()) {
            let body = serde_json::to_vec(&v).unwrap();
            let _ = meta::parse(&body);
            let wrapped = serde_json::to_vec(&json!({"object": "page", "entry": [v.clone()]})).unwrap();
            let _ = meta::parse(&wrapped);
            let wa = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"changes": [v.clone()]}]})).unwrap();
            let _ = meta::parse(&wa);
            let env = google::Envelope {
                message_id: "1".into(),
                publish_time: None,
                subscription: String::new(),
                attributes: Value::Null,
                data: body,
            };
            let _ = google::pubsub_event(&env);
            let _ = google::rbm_event(&env);
        }
    }
}

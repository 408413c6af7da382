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

pub(crate) mod google;
pub(crate) mod jwt;
pub(crate) mod meta;
pub mod verify;

use std::sync::LazyLock;

use serde_json::json;

pub use crate::model::event::{Batch, EventKind, InboundEvent, Platform, Unreadable};

use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskSpec};
use crate::model::Incoming;
use crate::telemetry::recorder::Handles;

/// The kind of an item that names no readable event: its first attempt puts it in the
/// dead-letter queue, raw item and reason with it.
pub const UNREADABLE: &str = "webhook.unreadable";

/// What happened to one request's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
    pub duplicates: usize,
    /// Items that name no readable event, queued for the dead-letter queue.
    pub unreadable: usize,
}

/// Queue events (deduplicated) and count them. Returns only once Redis has them all. Items that
/// could not be read are stored too, for the dead-letter queue, under a key of their content so
/// that a redelivery does not store them twice.
pub async fn accept(engine: &Engine, batch: Batch) -> Result<Accepted, EngineError> {
    engine.check_room().await?;
    let mut platforms: Vec<(Platform, bool)> = batch.events.iter().map(|e| (e.platform, true)).collect();
    platforms.extend(batch.unreadable.iter().map(|u| (u.platform, false)));
    let mut specs: Vec<TaskSpec> = batch
        .events
        .into_iter()
        .map(|e| {
            let key = e.dedup_key();
            if Incoming::answers(&e) {
                Incoming::from_event(e).task().dedup_key(key)
            } else {
                TaskSpec::from_json(e.platform.task_kind(), serde_json::to_string(&e).unwrap_or_else(|_| "null".into()))
                    .on_lane(Lane::Webhooks)
                    .dedup_key(key)
            }
        })
        .collect();
    specs.extend(batch.unreadable.into_iter().map(|u| {
        let key = u.dedup_key();
        let payload = json!({"platform": u.platform, "account": u.account, "error": u.why, "item": u.raw});
        TaskSpec::new(UNREADABLE, payload).on_lane(Lane::Webhooks).max_attempts(1).dedup_key(key)
    }));
    let results = engine.enqueue_many(specs).await?;
    let mut out = Accepted::default();
    for (&(platform, readable), queued) in platforms.iter().zip(results) {
        let outcome = match (queued.is_new(), readable) {
            (false, _) => {
                out.duplicates += 1;
                Received::Duplicate
            }
            (true, true) => {
                out.accepted += 1;
                Received::Accepted
            }
            (true, false) => {
                out.unreadable += 1;
                Received::Unreadable
            }
        };
        received(platform.as_str(), outcome).increment(1);
    }
    Ok(out)
}

/// The `outcome` label of `switchyard_webhooks_received_total`.
#[derive(Clone, Copy)]
enum Received {
    Accepted,
    Duplicate,
    Rejected,
    Unreadable,
}

/// `switchyard_webhooks_received_total{platform, outcome}`.
fn received(platform: &'static str, outcome: Received) -> metrics::Counter {
    static HANDLES: LazyLock<Handles<metrics::Counter>> = LazyLock::new(Handles::new);
    let label = match outcome {
        Received::Accepted => "accepted",
        Received::Duplicate => "duplicate",
        Received::Rejected => "rejected",
        Received::Unreadable => "unreadable",
    };
    HANDLES.get(
        platform,
        outcome as u32,
        || metrics::counter!("switchyard_webhooks_received_total", "platform" => platform, "outcome" => label),
    )
}

/// Export `switchyard_webhooks_received_total` at zero for every platform and outcome a
/// webhook can have (a request turned away counts under its endpoint's name).
pub fn metrics_at_zero() {
    for p in Platform::ALL {
        for outcome in [Received::Accepted, Received::Duplicate, Received::Unreadable] {
            received(p.as_str(), outcome).increment(0);
        }
    }
    for endpoint in ["facebook", "pubsub", "rbm", "generic"] {
        received(endpoint, Received::Rejected).increment(0);
    }
}

/// Count a request turned away (bad signature, bad body): once per request.
pub fn count_rejected(platform: &'static str) {
    received(platform, Received::Rejected).increment(1);
}

/// Register the kind of items that name no readable event (the kinds of readable events are
/// the conversation flow's: [`Platform::task_kind`]).
pub fn register(r: &mut Registry) {
    r.register(UNREADABLE, Lane::Webhooks, |ctx| async move {
        let why = ctx.payload.get("error").and_then(|e| e.as_str()).unwrap_or("no event could be read");
        Outcome::fail(format!("unreadable webhook item: {why}"))
    });
}

/// A generic source's body as its event: the id is the `x-event-id` header given as
/// `event_id`, else the body's `id` or `event_id`, else its content. `Err`: why it is refused.
pub(crate) fn generic_event(source: &str, event_id: Option<String>, body: &[u8]) -> Result<InboundEvent, String> {
    use crate::model::event::{Identity, Raw, given, text_of};
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if !reads_back(&v) {
        return Err(format!("body holds the key `{RAW_VALUE_TOKEN}`, which cannot be kept"));
    }
    // The first of these that is there and not blank names the event; none, its body's content.
    let given_id =
        given(event_id).or_else(|| given(text_of(v.get("id")))).or_else(|| given(text_of(v.get("event_id"))));
    let identity = Identity::given_or_content(given_id, "body", &v);
    Ok(InboundEvent {
        platform: Platform::Generic,
        kind: EventKind::Other,
        id: identity.id(),
        account: source.to_string(),
        customer: text_of(v.get("customer")).unwrap_or_default(),
        text: text_of(v.get("text")),
        timestamp_ms: None,
        raw: Raw::from_value(&v),
        identity,
    })
}

/// With its `raw_value` feature (on here), `serde_json` reads an object whose first key is this
/// as a raw value and no object; it writes a `Value`'s keys sorted, this one before letters. A
/// `Value` read with the key elsewhere is written back as JSON that cannot be read: an event
/// carrying it would be queued, and its task could never read its payload.
pub(crate) const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether `v`, written out, can be read back: no object in it has the key [`RAW_VALUE_TOKEN`].
pub(crate) fn reads_back(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Array(items) => items.iter().all(reads_back),
        serde_json::Value::Object(m) => !m.contains_key(RAW_VALUE_TOKEN) && m.values().all(reads_back),
        _ => true,
    }
}

#[cfg(test)]
mod fuzz;

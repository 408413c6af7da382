//! Webhook events that need no answer — echoes, deliveries, reads, statuses — recorded in the
//! conversation they belong to (a `webhook.<platform>` task each, lane `webhooks`).

use serde_json::json;

use super::store::{ConversationKey, Store, StoredTurn, Who};
use crate::engine::{Lane, Outcome, Payload, Registry, TaskContext, now_ms};
use crate::model::{InboundEvent, Platform};

/// Register the kind of every platform's events (a customer's message is the flow's).
pub(crate) fn register(r: &mut Registry) {
    for p in Platform::ALL {
        r.register_typed(
            p.task_kind(),
            Lane::Webhooks,
            |ctx, ev: InboundEvent| async move { record_event(ctx, ev).await },
        );
    }
}

/// Record an event that needs no answer in its conversation (when it belongs to one).
impl Payload for InboundEvent {
    const WHAT: &'static str = "a webhook event";
}

async fn record_event(ctx: TaskContext, ev: InboundEvent) -> Outcome {
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
        let key = ConversationKey::new(ev.platform, &ev.account, &ev.customer);
        match Store::new(ctx.engine().clone()).append(&key, &turn).await {
            Ok(_) => recorded = true,
            Err(e) => return Outcome::retry(format!("could not record the event: {e}")),
        }
    }
    Outcome::Done(json!({"event": ev.kind, "id": ev.id, "customer": ev.customer, "recorded": recorded}))
}

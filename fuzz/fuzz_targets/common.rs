//! What ingestion does with a parsed event, checked: its dedup key as the engine stores it, and
//! its task's payload, which the task's handler must be able to read back.

use serde::Deserialize;
use serde_json::Value;
use switchyard::engine::{KEY_LIMIT, bounded_key};
use switchyard::ingest::{InboundEvent, Unreadable};
use switchyard::model::Incoming;

/// A payload as a worker reads it: JSON text into a `Value` (`null` when it is none), then the
/// handler's type from that.
fn read_back<T: for<'de> Deserialize<'de>>(payload: &str) -> T {
    let v: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("payload is not JSON ({e}): {payload}"));
    T::deserialize(&v).unwrap_or_else(|e| panic!("payload does not read back ({e}): {payload}"))
}

pub fn event(ev: InboundEvent) {
    let key = ev.dedup_key();
    assert!(bounded_key(&key).len() <= KEY_LIMIT);
    if Incoming::answers(&ev) {
        let inc = Incoming::from_event(ev);
        let _ = inc.key().id();
        let payload = serde_json::to_string(&inc).expect("an Incoming serializes");
        let back: Incoming = read_back(&payload);
        assert_eq!(back.message_id, inc.message_id);
    } else {
        let payload = serde_json::to_string(&ev).expect("an event serializes");
        let back: InboundEvent = read_back(&payload);
        assert_eq!((back.platform, back.kind, &back.id), (ev.platform, ev.kind, &ev.id));
    }
}

#[allow(dead_code)] // (the generic route has no unreadable items)
pub fn unreadable(u: Unreadable) {
    let key = u.dedup_key();
    assert!(bounded_key(&key).len() <= KEY_LIMIT);
    let payload = serde_json::json!({"platform": u.platform, "account": u.account, "error": u.why, "item": u.raw});
    let _: Value = read_back(&payload.to_string());
}

//! Google's push formats: a Pub/Sub push envelope, and RCS Business Messaging, which uses the
//! same envelope with the agent's messages and events in `message.data`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Value, json};

use super::meta::ParseError;
use crate::model::event::{EventKind, Identity, InboundEvent, Platform, Raw, given, text_of};

/// The parts of a push envelope, with the ids in either spelling Google uses.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// `message.messageId`, or the hash of the `message` object when it has none (or a blank one).
    pub message_id: Identity,
    pub publish_time: Option<String>,
    pub subscription: String,
    pub attributes: Value,
    /// `message.data` decoded from base64 (empty when absent).
    pub data: Vec<u8>,
}

fn either<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

/// An id in either spelling, the first that is there and not blank.
fn either_id(v: &Value, camel: &str, snake: &str) -> Option<String> {
    given(text_of(v.get(camel))).or_else(|| given(text_of(v.get(snake))))
}

pub(crate) fn envelope(body: &[u8]) -> Result<Envelope, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if !super::reads_back(&v) {
        return Err(ParseError::Shape(format!("a key `{}` cannot be kept", super::RAW_VALUE_TOKEN)));
    }
    let m = v
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| ParseError::Shape("missing `message` object".into()))?;
    let message_id = Identity::given_or_content(either_id(m, "messageId", "message_id"), "pubsub", m);
    let data = match m.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => STANDARD
            .decode(s.trim())
            .or_else(|_| URL_SAFE.decode(s.trim()))
            .map_err(|_| ParseError::Shape("`message.data` is not base64".into()))?,
        Some(_) => return Err(ParseError::Shape("`message.data` must be a base64 string".into())),
    };
    Ok(Envelope {
        message_id,
        publish_time: either(m, "publishTime", "publish_time").and_then(|t| text_of(Some(t))),
        subscription: text_of(v.get("subscription")).unwrap_or_default(),
        attributes: m.get("attributes").cloned().unwrap_or(Value::Null),
        data,
    })
}

fn rfc3339_ms(t: Option<&str>) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(t?.trim_end_matches('Z')).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

/// `message.data` as JSON, when it is JSON that can be kept (see [`super::reads_back`]); else as
/// text.
fn data_value(data: &[u8]) -> Value {
    serde_json::from_slice::<Value>(data)
        .ok()
        .filter(super::reads_back)
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// A Pub/Sub notification: one event, its data decoded (JSON when it is JSON).
pub(crate) fn pubsub_event(env: &Envelope) -> InboundEvent {
    let data = data_value(&env.data);
    let id = env.message_id.id();
    InboundEvent {
        platform: Platform::Pubsub,
        kind: EventKind::Notification,
        id: id.clone(),
        account: env.subscription.clone(),
        customer: String::new(),
        text: None,
        timestamp_ms: rfc3339_ms(env.publish_time.as_deref()),
        raw: Raw::from_value(&json!({
            "message_id": id,
            "publish_time": env.publish_time,
            "subscription": env.subscription,
            "attributes": env.attributes,
            "data": data,
        })),
        identity: env.message_id.clone(),
    }
}

/// Decoded `message.data` that names no RBM event, with why: for the dead-letter queue.
pub(crate) fn rbm_unreadable(env: &Envelope, why: String) -> crate::model::event::Unreadable {
    crate::model::event::Unreadable {
        platform: Platform::Rbm,
        account: env.subscription.clone(),
        why,
        raw: Raw::from_value(&data_value(&env.data)),
    }
}

/// An RBM message or event, from the decoded `message.data`.
pub(crate) fn rbm_event(env: &Envelope) -> Result<InboundEvent, ParseError> {
    let d: Value = serde_json::from_slice(&env.data).map_err(|e| ParseError::Json(format!("message.data: {e}")))?;
    if !d.is_object() {
        return Err(ParseError::Shape("RBM data must be a JSON object".into()));
    }
    if !super::reads_back(&d) {
        return Err(ParseError::Shape(format!("RBM data: a key `{}` cannot be kept", super::RAW_VALUE_TOKEN)));
    }
    let customer = text_of(d.get("senderPhoneNumber")).unwrap_or_default();
    let account = text_of(d.get("agentId")).unwrap_or_default();
    let timestamp_ms = rfc3339_ms(d.get("sendTime").and_then(Value::as_str));
    let message_id = given(text_of(d.get("messageId")));
    let (kind, identity, text) = if let Some(event_type) = text_of(d.get("eventType")) {
        let kind = match event_type.as_str() {
            "DELIVERED" => EventKind::Delivery,
            "READ" => EventKind::Read,
            "IS_TYPING" => EventKind::Typing,
            _ => EventKind::Other,
        };
        let identity = match (given(text_of(d.get("eventId"))), message_id) {
            (Some(id), _) => Identity::Named("event", id),
            // One message's events (delivered, read) are different events under its id.
            (None, Some(m)) => Identity::Derived(vec![m, event_type]),
            (None, None) => Identity::content("rbmevent", &d),
        };
        (kind, identity, None)
    } else {
        let text = text_of(d.get("text")).or_else(|| {
            d.get("suggestionResponse").and_then(|s| text_of(s.get("text")).or_else(|| text_of(s.get("postbackData"))))
        });
        let identity = match (message_id, &env.message_id) {
            (Some(id), _) => Identity::Given(id),
            // The push that carried it has an id of its own, the same on every redelivery.
            (None, Identity::Given(push)) => Identity::Named("pubsub", push.clone()),
            (None, _) => Identity::content("rbmmsg", &d),
        };
        (EventKind::Message, identity, text)
    };
    let raw = Raw::from_value(&d);
    Ok(InboundEvent {
        platform: Platform::Rbm,
        kind,
        id: identity.id(),
        account,
        customer,
        text,
        timestamp_ms,
        raw,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_and_snake_case_envelopes() {
        let camel = br#"{"message":{"data":"eyJhIjoxfQ==","messageId":"111","publishTime":"2026-01-01T00:00:00.123Z","attributes":{"k":"v"}},"subscription":"projects/p/subscriptions/s"}"#;
        let snake = br#"{"message":{"data":"eyJhIjoxfQ==","message_id":"111","publish_time":"2026-01-01T00:00:00.123Z"},"subscription":"projects/p/subscriptions/s"}"#;
        for body in [&camel[..], &snake[..]] {
            let env = envelope(body).unwrap();
            let ev = pubsub_event(&env);
            assert_eq!((ev.id.as_str(), ev.kind), ("111", EventKind::Notification));
            assert_eq!(ev.raw.value()["data"], json!({"a": 1}));
            assert_eq!(ev.timestamp_ms, Some(1_767_225_600_123));
        }
    }

    #[test]
    fn bad_envelopes() {
        assert!(envelope(b"[]").is_err());
        assert!(envelope(br#"{"message":{"messageId":"1","data":"%%%"}}"#).is_err());
        assert!(envelope(br#"{"message":{"messageId":"1","data":5}}"#).is_err());
    }

    #[test]
    fn rbm_messages_and_events() {
        let mk = |data: &str| Envelope {
            message_id: Identity::Given("x".into()),
            publish_time: None,
            subscription: String::new(),
            attributes: Value::Null,
            data: data.as_bytes().to_vec(),
        };
        let m = rbm_event(&mk(r#"{"senderPhoneNumber":"+12223334444","messageId":"msg-1","sendTime":"2026-01-01T00:00:00Z","agentId":"bot@rbm.goog","text":"Hi"}"#)).unwrap();
        assert_eq!(
            (m.kind, m.id.as_str(), m.customer.as_str(), m.text.as_deref()),
            (EventKind::Message, "msg-1", "+12223334444", Some("Hi"))
        );
        let e = rbm_event(&mk(
            r#"{"senderPhoneNumber":"+1","eventType":"READ","eventId":"ev-9","messageId":"msg-1","agentId":"a"}"#,
        ))
        .unwrap();
        assert_eq!((e.kind, e.id.as_str()), (EventKind::Read, "ev-9"));
        let s = rbm_event(&mk(
            r#"{"senderPhoneNumber":"+1","messageId":"m2","suggestionResponse":{"postbackData":"yes","text":"Yes"}}"#,
        ))
        .unwrap();
        assert_eq!(s.text.as_deref(), Some("Yes"));
        assert!(rbm_event(&mk("not json")).is_err());
    }

    #[test]
    fn blank_and_missing_ids_are_named_by_content() {
        let key = |body: &[u8]| pubsub_event(&envelope(body).unwrap()).dedup_key();
        let a = key(br#"{"message":{"data":"eyJhIjoxfQ==","messageId":""},"subscription":"s"}"#);
        let b = key(br#"{"message":{"data":"eyJhIjoyfQ==","messageId":""},"subscription":"s"}"#);
        let c = key(br#"{"message":{"data":"eyJhIjoyfQ==","message_id":" "},"subscription":"s"}"#);
        let d = key(br#"{"message":{"data":"eyJhIjoyfQ=="},"subscription":"s"}"#);
        assert_ne!(a, b, "two different messages without ids");
        assert!(c.contains("::c:pubsub:") && d.contains("::c:pubsub:"), "a blank id is no id: {c} {d}");
        assert_eq!(a, key(br#"{"message":{"messageId":"","data":"eyJhIjoxfQ=="},"subscription":"s"}"#));
        // A blank camelCase id gives way to the snake_case one.
        let e = key(br#"{"message":{"data":"eyJhIjoyfQ==","messageId":"","message_id":"77"},"subscription":"s"}"#);
        assert_eq!(e, "webhook:pubsub:s:77");

        // RBM data pushed without an id of its own, in a push without one either.
        let mk = |data: &str| Envelope {
            message_id: Identity::content("pubsub", &Value::Null),
            publish_time: None,
            subscription: String::new(),
            attributes: Value::Null,
            data: data.as_bytes().to_vec(),
        };
        let rbm = |data: &str| rbm_event(&mk(data)).unwrap();
        let m1 = rbm(r#"{"senderPhoneNumber":"+1","messageId":"","text":"one"}"#);
        let m2 = rbm(r#"{"senderPhoneNumber":"+1","text":"two"}"#);
        assert_eq!(m1.kind, EventKind::Message);
        assert_ne!(m1.dedup_key(), m2.dedup_key());
        // An event's id, a message's id and the id made of a message and its event never meet.
        let keys = [
            rbm(r#"{"senderPhoneNumber":"+1","messageId":"ev"}"#).dedup_key(),
            rbm(r#"{"senderPhoneNumber":"+1","eventType":"READ","eventId":"ev"}"#).dedup_key(),
            rbm(r#"{"senderPhoneNumber":"+1","eventType":"READ","eventId":"","messageId":"ev"}"#).dedup_key(),
            rbm(r#"{"senderPhoneNumber":"+1","eventType":"DELIVERED","messageId":"ev"}"#).dedup_key(),
            rbm(r#"{"senderPhoneNumber":"+1","eventType":"READ"}"#).dedup_key(),
        ];
        assert_eq!(keys.iter().collect::<std::collections::HashSet<_>>().len(), keys.len(), "{keys:?}");
    }
}

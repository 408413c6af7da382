//! Meta's webhooks: Messenger (`object: page`), Instagram (`object: instagram`) and the
//! WhatsApp Cloud API (`object: whatsapp_business_account`). One POST carries up to 1000
//! updates; every `messaging` item and every WhatsApp message or status is one event.

use serde_json::Value;

use super::event::{EventKind, InboundEvent, Platform, content_id, number_or_string, text_of};

/// Why a body is not a Meta webhook.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
}

pub fn parse(body: &[u8]) -> Result<Vec<InboundEvent>, ParseError> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let object = v.get("object").and_then(Value::as_str).ok_or_else(|| ParseError::Shape("missing `object`".into()))?;
    let platform = match object {
        "page" => Platform::Messenger,
        "instagram" => Platform::Instagram,
        "whatsapp_business_account" => Platform::Whatsapp,
        other => return Err(ParseError::Shape(format!("unsupported object `{other}`"))),
    };
    // Items are moved out of the parsed body into the events (their `raw`), not copied.
    let entries = v
        .get_mut("entry")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| ParseError::Shape("missing `entry` array".into()))?;
    let mut out = Vec::new();
    for entry in entries {
        if !entry.is_object() {
            return Err(ParseError::Shape("an `entry` item is not an object".into()));
        }
        let account = text_of(entry.get("id")).unwrap_or_default();
        for key in ["messaging", "standby"] {
            if let Some(items) = entry.get_mut(key).and_then(Value::as_array_mut) {
                for item in items {
                    out.push(messaging_item(platform, &account, item.take())?);
                }
            }
        }
        if let Some(changes) = entry.get("changes").and_then(Value::as_array) {
            for change in changes {
                if platform == Platform::Whatsapp {
                    whatsapp_change(&account, change, &mut out);
                } else {
                    out.push(change_item(platform, &account, change));
                }
            }
        }
    }
    Ok(out)
}

fn id_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(|s| text_of(s.get("id"))).unwrap_or_default()
}

fn messaging_item(platform: Platform, page: &str, item: Value) -> Result<InboundEvent, ParseError> {
    if !item.is_object() {
        return Err(ParseError::Shape("a `messaging` item is not an object".into()));
    }
    let sender = id_of(&item, "sender");
    let recipient = id_of(&item, "recipient");
    let timestamp_ms = number_or_string(item.get("timestamp"));
    let ts = timestamp_ms.unwrap_or(0);
    let mut ev = InboundEvent {
        platform,
        kind: EventKind::Other,
        id: String::new(),
        account: page.to_string(),
        customer: sender.clone(),
        text: None,
        timestamp_ms,
        raw: Value::Null,
    };
    if let Some(m) = item.get("message") {
        let mid = text_of(m.get("mid"));
        ev.text = text_of(m.get("text")).or_else(|| text_of(m.get("quick_reply").and_then(|q| q.get("payload"))));
        if m.get("is_echo").and_then(Value::as_bool).unwrap_or(false) {
            // The page's own message: the customer is the recipient.
            ev.kind = EventKind::Echo;
            ev.customer = recipient;
        } else {
            ev.kind = EventKind::Message;
        }
        ev.id = mid.unwrap_or_else(|| content_id("msg", &item));
    } else if let Some(p) = item.get("postback") {
        ev.kind = EventKind::Postback;
        ev.text = text_of(p.get("title"));
        ev.id = text_of(p.get("mid")).unwrap_or_else(|| content_id("postback", &item));
    } else if let Some(d) = item.get("delivery") {
        ev.kind = EventKind::Delivery;
        ev.id = format!("delivery:{sender}:{}", number_or_string(d.get("watermark")).unwrap_or(ts));
    } else if let Some(r) = item.get("read") {
        ev.kind = EventKind::Read;
        ev.id = format!("read:{sender}:{}", number_or_string(r.get("watermark")).unwrap_or(ts));
    } else {
        ev.id = content_id("event", &item);
    }
    ev.raw = item;
    Ok(ev)
}

/// Instagram comments, page feed and other `changes`: recorded as they come.
fn change_item(platform: Platform, account: &str, change: &Value) -> InboundEvent {
    let value = change.get("value").cloned().unwrap_or(Value::Null);
    InboundEvent {
        platform,
        kind: EventKind::Other,
        id: text_of(value.get("id")).unwrap_or_else(|| content_id("change", change)),
        account: account.to_string(),
        customer: value.get("from").and_then(|f| text_of(f.get("id"))).unwrap_or_default(),
        text: text_of(value.get("text")),
        timestamp_ms: None,
        raw: change.clone(),
    }
}

fn whatsapp_text(m: &Value) -> Option<String> {
    text_of(m.get("text").and_then(|t| t.get("body")))
        .or_else(|| text_of(m.get("button").and_then(|b| b.get("text"))))
        .or_else(|| {
            let i = m.get("interactive")?;
            text_of(i.get("button_reply").and_then(|b| b.get("title")))
                .or_else(|| text_of(i.get("list_reply").and_then(|b| b.get("title"))))
        })
}

/// `changes[].value.messages[]` and `statuses[]`; other fields are recorded whole.
fn whatsapp_change(waba: &str, change: &Value, out: &mut Vec<InboundEvent>) {
    let value = change.get("value").cloned().unwrap_or(Value::Null);
    let phone_id =
        value.get("metadata").and_then(|m| text_of(m.get("phone_number_id"))).unwrap_or_else(|| waba.to_string());
    let mut found = false;
    if let Some(messages) = value.get("messages").and_then(Value::as_array) {
        for m in messages {
            found = true;
            out.push(InboundEvent {
                platform: Platform::Whatsapp,
                kind: EventKind::Message,
                id: text_of(m.get("id")).unwrap_or_else(|| content_id("wamsg", m)),
                account: phone_id.clone(),
                customer: text_of(m.get("from")).unwrap_or_default(),
                text: whatsapp_text(m),
                timestamp_ms: number_or_string(m.get("timestamp")).map(|s| s * 1000),
                raw: m.clone(),
            });
        }
    }
    if let Some(statuses) = value.get("statuses").and_then(Value::as_array) {
        for s in statuses {
            found = true;
            let status = text_of(s.get("status")).unwrap_or_default();
            out.push(InboundEvent {
                platform: Platform::Whatsapp,
                kind: EventKind::Status,
                id: format!("{}:{status}", text_of(s.get("id")).unwrap_or_else(|| content_id("wastatus", s))),
                account: phone_id.clone(),
                customer: text_of(s.get("recipient_id")).unwrap_or_default(),
                text: Some(status),
                timestamp_ms: number_or_string(s.get("timestamp")).map(|t| t * 1000),
                raw: s.clone(),
            });
        }
    }
    if !found {
        let mut ev = change_item(Platform::Whatsapp, &phone_id, change);
        ev.id = content_id("change", change);
        out.push(ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messenger_message_echo_delivery_read_postback() {
        let body = br#"{"object":"page","entry":[{"id":"P1","time":1,"messaging":[
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197627,"message":{"mid":"m_1","text":"hi"}},
            {"sender":{"id":"P1"},"recipient":{"id":"U1"},"timestamp":"1457764197628","message":{"mid":"m_2","text":"hello","is_echo":true}},
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197629,"delivery":{"mids":["m_2"],"watermark":1457764197628}},
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197630,"read":{"watermark":1457764197628}},
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197631,"postback":{"title":"Start","payload":"GET_STARTED","mid":"m_3"}}
        ]}]}"#;
        let evs = parse(body).unwrap();
        let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![EventKind::Message, EventKind::Echo, EventKind::Delivery, EventKind::Read, EventKind::Postback]
        );
        assert_eq!((evs[0].id.as_str(), evs[0].customer.as_str(), evs[0].text.as_deref()), ("m_1", "U1", Some("hi")));
        assert_eq!(evs[1].customer, "U1", "an echo's customer is its recipient");
        assert_eq!(evs[1].timestamp_ms, Some(1457764197628), "string timestamps are read");
        assert_eq!(evs[2].id, "delivery:U1:1457764197628");
        assert_eq!(evs[4].id, "m_3");
        assert!(evs.iter().all(|e| e.account == "P1" && e.platform == Platform::Messenger));
    }

    #[test]
    fn instagram_and_whatsapp() {
        let ig = br#"{"object":"instagram","entry":[{"id":"IG1","time":1,"messaging":[{"sender":{"id":"S"},"recipient":{"id":"IG1"},"timestamp":5,"message":{"mid":"ig_m","text":"yo"}}]}]}"#;
        let evs = parse(ig).unwrap();
        assert_eq!((evs[0].platform, evs[0].id.as_str()), (Platform::Instagram, "ig_m"));

        let wa =
            br#"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PN1"},
            "contacts":[{"profile":{"name":"Ann"},"wa_id":"4477"}],
            "messages":[{"from":"4477","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"price?"}}],
            "statuses":[{"id":"wamid.B","status":"read","timestamp":"1700000001","recipient_id":"4477"}]}}]}]}"#;
        let evs = parse(wa).unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!((evs[0].kind, evs[0].id.as_str(), evs[0].account.as_str()), (EventKind::Message, "wamid.A", "PN1"));
        assert_eq!((evs[0].text.as_deref(), evs[0].timestamp_ms), (Some("price?"), Some(1_700_000_000_000)));
        assert_eq!((evs[1].kind, evs[1].id.as_str()), (EventKind::Status, "wamid.B:read"));
    }

    #[test]
    fn wrong_shapes_are_named() {
        assert!(matches!(parse(b"not json"), Err(ParseError::Json(_))));
        assert_eq!(parse(br#"{"entry":[]}"#), Err(ParseError::Shape("missing `object`".into())));
        assert!(matches!(parse(br#"{"object":"page"}"#), Err(ParseError::Shape(_))));
        assert!(matches!(parse(br#"{"object":"page","entry":[1]}"#), Err(ParseError::Shape(_))));
        assert!(matches!(parse(br#"{"object":"page","entry":[{"messaging":["x"]}]}"#), Err(ParseError::Shape(_))));
    }

    #[test]
    fn non_ascii_escaped_as_meta_sends_it() {
        let body = br#"{"object":"page","entry":[{"id":"P","messaging":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m","text":"caf\u00e9 \ud83d\ude00"}}]}]}"#;
        let evs = parse(body).unwrap();
        assert_eq!(evs[0].text.as_deref(), Some("café 😀"));
    }
}

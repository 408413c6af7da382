//! Meta's webhooks: Messenger (`object: page`), Instagram (`object: instagram`) and the
//! WhatsApp Cloud API (`object: whatsapp_business_account`). One POST carries up to 1000
//! updates; every `messaging` item and every WhatsApp message or status is one event.

use serde_json::value::RawValue;

use super::event::{
    EventKind, InboundEvent, Obj, Platform, Raw, check_json, items, raw_content_id, raw_number_or_string, raw_text,
    raw_true,
};

/// Why a body is not a Meta webhook.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
}

/// Every event of a body. The body is checked whole, then read lazily, item by item, and each
/// item's text is copied once into its event, as sent: nothing is built as a tree and written
/// out again.
pub fn parse(body: &[u8]) -> Result<Vec<InboundEvent>, ParseError> {
    check_json(body).map_err(|e| ParseError::Json(e.to_string()))?;
    // JSON, but not an object: say what is missing, as for an object without it.
    let top = serde_json::from_slice::<Obj>(body).map_err(|_| ParseError::Shape("missing `object`".into()))?;
    let object = top
        .get("object")
        .filter(|o| o.get().starts_with('"'))
        .and_then(|o| raw_text(Some(o)))
        .ok_or_else(|| ParseError::Shape("missing `object`".into()))?;
    let platform = match object.as_str() {
        "page" => Platform::Messenger,
        "instagram" => Platform::Instagram,
        "whatsapp_business_account" => Platform::Whatsapp,
        other => return Err(ParseError::Shape(format!("unsupported object `{other}`"))),
    };
    let entries = items(top.get("entry")).ok_or_else(|| ParseError::Shape("missing `entry` array".into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = Obj::of(entry).ok_or_else(|| ParseError::Shape("an `entry` item is not an object".into()))?;
        let account = raw_text(entry.get("id")).unwrap_or_default();
        for key in ["messaging", "standby"] {
            for item in items(entry.get(key)).unwrap_or_default() {
                out.push(messaging_item(platform, &account, item)?);
            }
        }
        for change in items(entry.get("changes")).unwrap_or_default() {
            if platform == Platform::Whatsapp {
                whatsapp_change(&account, change, &mut out);
            } else {
                out.push(change_item(platform, &account, change));
            }
        }
    }
    Ok(out)
}

fn id_of(v: &Obj, key: &str) -> String {
    v.obj(key).and_then(|s| raw_text(s.get("id"))).unwrap_or_default()
}

fn messaging_item(platform: Platform, page: &str, raw: &RawValue) -> Result<InboundEvent, ParseError> {
    let item = Obj::of(raw).ok_or_else(|| ParseError::Shape("a `messaging` item is not an object".into()))?;
    let sender = id_of(&item, "sender");
    let recipient = id_of(&item, "recipient");
    let timestamp_ms = raw_number_or_string(item.get("timestamp"));
    let ts = timestamp_ms.unwrap_or(0);
    let mut ev = InboundEvent {
        platform,
        kind: EventKind::Other,
        id: String::new(),
        account: page.to_string(),
        customer: String::new(),
        text: None,
        timestamp_ms,
        raw: Raw::from_raw(raw),
    };
    if let Some(m) = item.get("message") {
        let m = Obj::of(m).unwrap_or_default();
        ev.text = raw_text(m.get("text")).or_else(|| raw_text(m.obj("quick_reply").and_then(|q| q.get("payload"))));
        if raw_true(m.get("is_echo")) {
            // The page's own message: the customer is the recipient.
            ev.kind = EventKind::Echo;
            ev.customer = recipient;
        } else {
            ev.kind = EventKind::Message;
            ev.customer = sender;
        }
        ev.id = raw_text(m.get("mid")).unwrap_or_else(|| raw_content_id("msg", raw));
        return Ok(ev);
    }
    if let Some(p) = item.get("postback") {
        let p = Obj::of(p).unwrap_or_default();
        ev.kind = EventKind::Postback;
        ev.text = raw_text(p.get("title"));
        ev.id = raw_text(p.get("mid")).unwrap_or_else(|| raw_content_id("postback", raw));
    } else if let Some(d) = item.get("delivery") {
        let watermark = Obj::of(d).and_then(|d| raw_number_or_string(d.get("watermark")));
        ev.kind = EventKind::Delivery;
        ev.id = format!("delivery:{sender}:{}", watermark.unwrap_or(ts));
    } else if let Some(r) = item.get("read") {
        let watermark = Obj::of(r).and_then(|r| raw_number_or_string(r.get("watermark")));
        ev.kind = EventKind::Read;
        ev.id = format!("read:{sender}:{}", watermark.unwrap_or(ts));
    } else {
        ev.id = raw_content_id("event", raw);
    }
    ev.customer = sender;
    Ok(ev)
}

/// Instagram comments, page feed and other `changes`: recorded as they come.
fn change_item(platform: Platform, account: &str, change: &RawValue) -> InboundEvent {
    let value = Obj::of(change).and_then(|c| c.obj("value")).unwrap_or_default();
    InboundEvent {
        platform,
        kind: EventKind::Other,
        id: raw_text(value.get("id")).unwrap_or_else(|| raw_content_id("change", change)),
        account: account.to_string(),
        customer: value.obj("from").and_then(|f| raw_text(f.get("id"))).unwrap_or_default(),
        text: raw_text(value.get("text")),
        timestamp_ms: None,
        raw: Raw::from_raw(change),
    }
}

fn whatsapp_text(m: &Obj) -> Option<String> {
    raw_text(m.obj("text").and_then(|t| t.get("body")))
        .or_else(|| raw_text(m.obj("button").and_then(|b| b.get("text"))))
        .or_else(|| {
            let i = m.obj("interactive")?;
            raw_text(i.obj("button_reply").and_then(|b| b.get("title")))
                .or_else(|| raw_text(i.obj("list_reply").and_then(|b| b.get("title"))))
        })
}

/// WhatsApp timestamps are in seconds.
fn seconds_to_ms(raw: Option<&RawValue>) -> Option<u64> {
    raw_number_or_string(raw).map(|s| s.saturating_mul(1000))
}

/// `changes[].value.messages[]` and `statuses[]`; other fields are recorded whole.
fn whatsapp_change(waba: &str, change: &RawValue, out: &mut Vec<InboundEvent>) {
    let value = Obj::of(change).and_then(|c| c.obj("value")).unwrap_or_default();
    let phone_id =
        value.obj("metadata").and_then(|m| raw_text(m.get("phone_number_id"))).unwrap_or_else(|| waba.to_string());
    let mut found = false;
    for raw in items(value.get("messages")).unwrap_or_default() {
        found = true;
        let m = Obj::of(raw).unwrap_or_default();
        out.push(InboundEvent {
            platform: Platform::Whatsapp,
            kind: EventKind::Message,
            id: raw_text(m.get("id")).unwrap_or_else(|| raw_content_id("wamsg", raw)),
            account: phone_id.clone(),
            customer: raw_text(m.get("from")).unwrap_or_default(),
            text: whatsapp_text(&m),
            timestamp_ms: seconds_to_ms(m.get("timestamp")),
            raw: Raw::from_raw(raw),
        });
    }
    for raw in items(value.get("statuses")).unwrap_or_default() {
        found = true;
        let s = Obj::of(raw).unwrap_or_default();
        let status = raw_text(s.get("status")).unwrap_or_default();
        out.push(InboundEvent {
            platform: Platform::Whatsapp,
            kind: EventKind::Status,
            id: format!("{}:{status}", raw_text(s.get("id")).unwrap_or_else(|| raw_content_id("wastatus", raw))),
            account: phone_id.clone(),
            customer: raw_text(s.get("recipient_id")).unwrap_or_default(),
            text: Some(status),
            timestamp_ms: seconds_to_ms(s.get("timestamp")),
            raw: Raw::from_raw(raw),
        });
    }
    if !found {
        let mut ev = change_item(Platform::Whatsapp, &phone_id, change);
        ev.id = raw_content_id("change", change);
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

//! Meta's webhooks: Messenger (`object: page`), Instagram (`object: instagram`) and the
//! WhatsApp Cloud API (`object: whatsapp_business_account`). One POST carries up to 1000
//! updates; every `messaging` item and every WhatsApp message or status is one event.

use serde_json::value::RawValue;

use crate::model::event::{
    Batch, EventKind, Identity, InboundEvent, Obj, Platform, Raw, Unreadable, check_json, given, items,
    raw_number_or_string, raw_text, raw_true,
};

/// Why a body is not a Meta webhook.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
}

/// Every event of a body. The body is checked whole, then read lazily, item by item, and each
/// item's text is copied once into its event, as sent: nothing is built as a tree and written
/// out again. Only a fault of the whole body is an error; an item that is no event is set aside
/// as [`Unreadable`] and costs the others nothing.
pub(crate) fn parse(body: &[u8]) -> Result<Batch, ParseError> {
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
    let mut out = Batch::default();
    for raw in entries {
        let Some(entry) = Obj::of(raw) else {
            out.unreadable.push(unreadable(platform, "", "an `entry` item is not an object", raw));
            continue;
        };
        let account = raw_text(entry.get("id")).unwrap_or_default();
        for key in ["messaging", "standby", "changes"] {
            if let Some(list) = entry.get(key).filter(|l| l.get() != "null" && items(Some(l)).is_none()) {
                out.unreadable.push(unreadable(platform, &account, &format!("`{key}` is not an array"), list));
            }
        }
        for key in ["messaging", "standby"] {
            for item in items(entry.get(key)).unwrap_or_default() {
                match messaging_item(platform, &account, item) {
                    Some(ev) => out.events.push(ev),
                    None => out.unreadable.push(unreadable(
                        platform,
                        &account,
                        &format!("a `{key}` item is not an object"),
                        item,
                    )),
                }
            }
        }
        for change in items(entry.get("changes")).unwrap_or_default() {
            if platform == Platform::Whatsapp {
                whatsapp_change(&account, change, &mut out.events);
            } else {
                out.events.push(change_item(platform, &account, change));
            }
        }
    }
    Ok(out)
}

fn unreadable(platform: Platform, account: &str, why: &str, raw: &RawValue) -> Unreadable {
    Unreadable { platform, account: account.to_string(), why: why.to_string(), raw: Raw::from_raw(raw) }
}

fn id_of(v: &Obj, key: &str) -> String {
    v.obj(key).and_then(|s| raw_text(s.get("id"))).unwrap_or_default()
}

/// A `messaging` item's event; `None` when the item is not an object.
fn messaging_item(platform: Platform, page: &str, raw: &RawValue) -> Option<InboundEvent> {
    let item = Obj::of(raw)?;
    let sender = id_of(&item, "sender");
    let recipient = id_of(&item, "recipient");
    let timestamp_ms = raw_number_or_string(item.get("timestamp"));
    let mut ev = InboundEvent {
        platform,
        kind: EventKind::Other,
        id: String::new(),
        account: page.to_string(),
        customer: String::new(),
        text: None,
        timestamp_ms,
        raw: Raw::from_raw(raw),
        identity: Identity::default(),
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
        ev.identity = Identity::given_or_raw(raw_text(m.get("mid")), "msg", raw);
        ev.id = ev.identity.id();
        return Some(ev);
    }
    if let Some(p) = item.get("postback") {
        let p = Obj::of(p).unwrap_or_default();
        ev.kind = EventKind::Postback;
        ev.text = raw_text(p.get("title"));
        ev.identity = Identity::given_or_raw(raw_text(p.get("mid")), "postback", raw);
    } else if let Some(d) = item.get("delivery") {
        let watermark = Obj::of(d).and_then(|d| raw_number_or_string(d.get("watermark")));
        ev.kind = EventKind::Delivery;
        ev.identity = receipt("delivery", &sender, watermark.or(timestamp_ms), raw);
    } else if let Some(r) = item.get("read") {
        let watermark = Obj::of(r).and_then(|r| raw_number_or_string(r.get("watermark")));
        ev.kind = EventKind::Read;
        ev.identity = receipt("read", &sender, watermark.or(timestamp_ms), raw);
    } else {
        ev.identity = Identity::raw("event", raw);
    }
    ev.id = ev.identity.id();
    ev.customer = sender;
    Some(ev)
}

/// A delivery or read receipt is named by its sender and watermark (Meta sends no id): all the
/// customer's messages up to the watermark. Without both, by its content.
fn receipt(tag: &'static str, sender: &str, watermark: Option<u64>, raw: &RawValue) -> Identity {
    match (given(Some(sender.to_string())), watermark) {
        (Some(sender), Some(watermark)) => Identity::Derived(vec![tag.into(), sender, watermark.to_string()]),
        _ => Identity::raw(tag, raw),
    }
}

/// Instagram comments, page feed and other `changes`: recorded as they come.
fn change_item(platform: Platform, account: &str, change: &RawValue) -> InboundEvent {
    let value = Obj::of(change).and_then(|c| c.obj("value")).unwrap_or_default();
    let identity = match given(raw_text(value.get("id"))) {
        Some(id) => Identity::Named("change", id),
        None => Identity::raw("change", change),
    };
    InboundEvent {
        platform,
        kind: EventKind::Other,
        id: identity.id(),
        account: account.to_string(),
        customer: value.obj("from").and_then(|f| raw_text(f.get("id"))).unwrap_or_default(),
        text: raw_text(value.get("text")),
        timestamp_ms: None,
        raw: Raw::from_raw(change),
        identity,
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
        let identity = Identity::given_or_raw(raw_text(m.get("id")), "wamsg", raw);
        out.push(InboundEvent {
            platform: Platform::Whatsapp,
            kind: EventKind::Message,
            id: identity.id(),
            account: phone_id.clone(),
            customer: raw_text(m.get("from")).unwrap_or_default(),
            text: whatsapp_text(&m),
            timestamp_ms: seconds_to_ms(m.get("timestamp")),
            raw: Raw::from_raw(raw),
            identity,
        });
    }
    for raw in items(value.get("statuses")).unwrap_or_default() {
        found = true;
        let s = Obj::of(raw).unwrap_or_default();
        let status = raw_text(s.get("status")).unwrap_or_default();
        // One message's statuses (sent, delivered, read) are different events under one id.
        let identity = match given(raw_text(s.get("id"))) {
            Some(id) => Identity::Derived(vec![id, status.clone()]),
            None => Identity::raw("wastatus", raw),
        };
        out.push(InboundEvent {
            platform: Platform::Whatsapp,
            kind: EventKind::Status,
            id: identity.id(),
            account: phone_id.clone(),
            customer: raw_text(s.get("recipient_id")).unwrap_or_default(),
            text: Some(status),
            timestamp_ms: seconds_to_ms(s.get("timestamp")),
            raw: Raw::from_raw(raw),
            identity,
        });
    }
    if !found {
        let mut ev = change_item(Platform::Whatsapp, &phone_id, change);
        ev.identity = Identity::raw("change", change);
        ev.id = ev.identity.id();
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
        let evs = parse(body).unwrap().events;
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
        let evs = parse(ig).unwrap().events;
        assert_eq!((evs[0].platform, evs[0].id.as_str()), (Platform::Instagram, "ig_m"));

        let wa =
            br#"{"object":"whatsapp_business_account","entry":[{"id":"WABA","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PN1"},
            "contacts":[{"profile":{"name":"Ann"},"wa_id":"4477"}],
            "messages":[{"from":"4477","id":"wamid.A","timestamp":"1700000000","type":"text","text":{"body":"price?"}}],
            "statuses":[{"id":"wamid.B","status":"read","timestamp":"1700000001","recipient_id":"4477"}]}}]}]}"#;
        let evs = parse(wa).unwrap().events;
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
    }

    #[test]
    fn an_item_that_is_no_event_costs_the_others_nothing() {
        let b = parse(br#"{"object":"page","entry":[1,{"id":"P","messaging":["x",{"sender":{"id":"U"},"message":{"mid":"m_1"}}]}]}"#)
            .unwrap();
        assert_eq!(b.events.len(), 1, "{b:?}");
        assert_eq!(b.events[0].id, "m_1");
        let whys: Vec<(&str, &str, &str)> =
            b.unreadable.iter().map(|u| (u.account.as_str(), u.why.as_str(), u.raw.get())).collect();
        assert_eq!(
            whys,
            [("", "an `entry` item is not an object", "1"), ("P", "a `messaging` item is not an object", r#""x""#)]
        );
        assert_ne!(b.unreadable[0].dedup_key(), b.unreadable[1].dedup_key());

        // A list that is not one is set aside too.
        let b = parse(br#"{"object":"page","entry":[{"id":"P","messaging":{"mid":"x"},"changes":7}]}"#).unwrap();
        let whys: Vec<&str> = b.unreadable.iter().map(|u| u.why.as_str()).collect();
        assert_eq!(whys, ["`messaging` is not an array", "`changes` is not an array"]);
    }

    /// The events of `messaging` items of page `P`.
    fn page_items(items: &[&str]) -> Vec<InboundEvent> {
        let body = format!(r#"{{"object":"page","entry":[{{"id":"P","messaging":[{}]}}]}}"#, items.join(","));
        parse(body.as_bytes()).unwrap().events
    }

    #[test]
    fn blank_and_missing_ids_are_no_ids() {
        let evs = page_items(&[
            r#"{"sender":{"id":"U"},"timestamp":1,"message":{"mid":"","text":"one"}}"#,
            r#"{"sender":{"id":"U"},"timestamp":2,"message":{"mid":"","text":"two"}}"#,
            r#"{"sender":{"id":"U"},"timestamp":3,"message":{"mid":"  ","text":"three"}}"#,
            r#"{"sender":{"id":"U"},"timestamp":4,"message":{"text":"four"}}"#,
            r#"{"sender":{"id":"U"},"timestamp":5,"postback":{"mid":"","title":"a"}}"#,
            r#"{"sender":{"id":"U"},"timestamp":6,"postback":{"mid":"","title":"b"}}"#,
            r#"{"sender":{"id":""},"delivery":{"watermark":7}}"#,
            r#"{"sender":{"id":""},"delivery":{"watermark":8}}"#,
            r#"{"sender":{"id":"U"},"read":{}}"#,
            r#"{"sender":{"id":"U"},"read":{"watermark":""}}"#,
        ]);
        let keys: std::collections::HashSet<String> = evs.iter().map(InboundEvent::dedup_key).collect();
        assert_eq!(keys.len(), evs.len(), "every different event has its own key: {evs:#?}");
        assert!(evs[0].id.starts_with("msg:") && evs[4].id.starts_with("postback:"), "{evs:?}");
        // The same items sent again have the same keys.
        let again = page_items(&[r#"{"sender":{"id":"U"},"timestamp":1,"message":{"mid":"","text":"one"}}"#]);
        assert_eq!(again[0].dedup_key(), evs[0].dedup_key());
    }

    #[test]
    fn ids_that_look_alike_stay_apart() {
        let evs = page_items(&[
            r#"{"sender":{"id":"U"},"message":{"mid":"delivery:U:5"}}"#,
            r#"{"sender":{"id":"U"},"delivery":{"watermark":5}}"#,
            r#"{"sender":{"id":"U:5"},"read":{"watermark":5}}"#,
            r#"{"sender":{"id":"U"},"read":{"watermark":5}}"#,
            r#"{"sender":{"id":"U"},"message":{"mid":"a%3Ab"}}"#,
            r#"{"sender":{"id":"U"},"message":{"mid":"a:b"}}"#,
        ]);
        let keys: std::collections::HashSet<String> = evs.iter().map(InboundEvent::dedup_key).collect();
        assert_eq!(keys.len(), evs.len(), "{evs:#?}");
        assert_eq!(evs[1].id, "delivery:U:5", "a receipt's id reads as before");
        // A page id with a colon does not meet another page's message id.
        let a = parse(br#"{"object":"page","entry":[{"id":"P:1","messaging":[{"message":{"mid":"m"}}]}]}"#).unwrap();
        let b = parse(br#"{"object":"page","entry":[{"id":"P","messaging":[{"message":{"mid":"1:m"}}]}]}"#).unwrap();
        assert_ne!(a.events[0].dedup_key(), b.events[0].dedup_key());
    }

    #[test]
    fn whatsapp_statuses_and_ids() {
        let wa = |value: &str| {
            let body = format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"value":{value}}}]}}]}}"#
            );
            parse(body.as_bytes()).unwrap().events
        };
        let evs = wa(r#"{"metadata":{"phone_number_id":"PN"},
            "messages":[{"id":"","from":"1","text":{"body":"a"}},{"id":"","from":"1","text":{"body":"b"}}],
            "statuses":[{"id":"w1","status":"sent"},{"id":"w1","status":"read"},{"id":" ","status":"read","recipient_id":"1"},{"status":"read","recipient_id":"2"}]}"#);
        let keys: std::collections::HashSet<String> = evs.iter().map(InboundEvent::dedup_key).collect();
        assert_eq!(keys.len(), 6, "{evs:#?}");
        assert_eq!((evs[2].id.as_str(), evs[3].id.as_str()), ("w1:sent", "w1:read"));
    }

    #[test]
    fn non_ascii_escaped_as_meta_sends_it() {
        let body = br#"{"object":"page","entry":[{"id":"P","messaging":[{"sender":{"id":"U"},"recipient":{"id":"P"},"timestamp":1,"message":{"mid":"m","text":"caf\u00e9 \ud83d\ude00"}}]}]}"#;
        let evs = parse(body).unwrap().events;
        assert_eq!(evs[0].text.as_deref(), Some("café 😀"));
    }
}

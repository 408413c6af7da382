//! Arbitrary input never panics a parser: bytes, and JSON shaped like the real thing. The
//! lazy Meta parser reads every body as the `Value`-based one it replaced did.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::meta::ParseError;
use super::{EventKind, Platform, google, meta};
use crate::model::event::Identity;

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
            Just("recipient"),
            Just("standby"),
            Just("title"),
            Just("quick_reply"),
            Just("payload"),
            Just("status"),
            Just("recipient_id"),
            Just("phone_number_id"),
            Just("body"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_string), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects with some of `keys`, each holding `value`.
fn fields(keys: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop::collection::vec((prop::sample::select(keys), value), 0..=keys.len())
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .boxed()
}

/// What a field holds: anything, or what Meta puts there.
fn field() -> BoxedStrategy<Value> {
    prop_oneof![
        json_value(),
        "[0-9 ]{1,4}".prop_map(Value::String),
        any::<u32>().prop_map(|n| json!(n)),
        Just(json!(true)),
        Just(json!(u64::MAX)),
    ]
    .boxed()
}

/// A Messenger or Instagram `messaging` item, the fields the parser reads filled anyhow.
fn messaging_item() -> BoxedStrategy<Value> {
    let reply = prop_oneof![field(), fields(&["payload"], field())].boxed();
    let part =
        prop_oneof![field(), fields(&["id", "mid", "text", "is_echo", "title", "watermark", "quick_reply"], reply),];
    fields(&["sender", "recipient", "timestamp", "message", "postback", "delivery", "read"], part.boxed())
}

/// A `changes` item: WhatsApp's messages and statuses, or anything else with a `value`.
fn change() -> BoxedStrategy<Value> {
    let title = prop_oneof![field(), fields(&["title"], field())].boxed();
    let part = prop_oneof![field(), fields(&["body", "text", "button_reply", "list_reply"], title)].boxed();
    let keys = &["id", "from", "timestamp", "text", "button", "interactive", "status", "recipient_id"];
    let item = prop_oneof![field(), fields(keys, part)];
    let member = prop_oneof![
        field(),
        fields(&["phone_number_id", "id"], field()),
        prop::collection::vec(item, 0..3).prop_map(Value::Array),
    ];
    let value = fields(&["metadata", "messages", "statuses", "id", "from", "text"], member.boxed());
    fields(&["field", "value"], prop_oneof![field(), value].boxed())
}

/// The `Value`-based Meta parser the lazy one replaced, the oracle: a failure is `body is not JSON: …`
/// or the shape error's text.
mod reference {
    use serde_json::Value;

    use sha2::{Digest, Sha256};

    use crate::model::event::{EventKind, Platform, number_or_string, text_of};

    fn content_id(prefix: &str, v: &Value) -> String {
        format!("{prefix}:{}", hex::encode(&Sha256::digest(v.to_string().as_bytes())[..16]))
    }

    #[derive(Debug)]
    pub(super) struct RefEvent {
        pub platform: Platform,
        pub kind: EventKind,
        pub id: String,
        pub account: String,
        pub customer: String,
        pub text: Option<String>,
        pub timestamp_ms: Option<u64>,
        pub raw: Value,
    }

    pub(super) fn parse(body: &[u8]) -> Result<Vec<RefEvent>, String> {
        let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let object = v.get("object").and_then(Value::as_str).ok_or("missing `object`")?;
        let platform = match object {
            "page" => Platform::Messenger,
            "instagram" => Platform::Instagram,
            "whatsapp_business_account" => Platform::Whatsapp,
            other => return Err(format!("unsupported object `{other}`")),
        };
        let entries = v.get_mut("entry").and_then(Value::as_array_mut).ok_or("missing `entry` array")?;
        let mut out = Vec::new();
        for entry in entries {
            if !entry.is_object() {
                return Err("an `entry` item is not an object".into());
            }
            let account = text_of(entry.get("id")).unwrap_or_default();
            for key in ["messaging", "standby"] {
                for item in entry.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                    out.push(messaging_item(platform, &account, item.take())?);
                }
            }
            for change in entry.get("changes").and_then(Value::as_array).into_iter().flatten() {
                if platform == Platform::Whatsapp {
                    whatsapp_change(&account, change, &mut out);
                } else {
                    out.push(change_item(platform, &account, change));
                }
            }
        }
        Ok(out)
    }

    fn id_of(v: &Value, key: &str) -> String {
        v.get(key).and_then(|s| text_of(s.get("id"))).unwrap_or_default()
    }

    fn messaging_item(platform: Platform, page: &str, item: Value) -> Result<RefEvent, String> {
        if !item.is_object() {
            return Err("a `messaging` item is not an object".into());
        }
        let sender = id_of(&item, "sender");
        let recipient = id_of(&item, "recipient");
        let timestamp_ms = number_or_string(item.get("timestamp"));
        let ts = timestamp_ms.unwrap_or(0);
        let mut ev = RefEvent {
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

    fn change_item(platform: Platform, account: &str, change: &Value) -> RefEvent {
        let value = change.get("value").cloned().unwrap_or(Value::Null);
        RefEvent {
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

    /// The old parser multiplied by 1000 unchecked (a panic in debug builds); both saturate now.
    fn seconds_to_ms(v: Option<&Value>) -> Option<u64> {
        number_or_string(v).map(|s| s.saturating_mul(1000))
    }

    fn whatsapp_change(waba: &str, change: &Value, out: &mut Vec<RefEvent>) {
        let value = change.get("value").cloned().unwrap_or(Value::Null);
        let phone_id =
            value.get("metadata").and_then(|m| text_of(m.get("phone_number_id"))).unwrap_or_else(|| waba.to_string());
        let mut found = false;
        for m in value.get("messages").and_then(Value::as_array).into_iter().flatten() {
            found = true;
            out.push(RefEvent {
                platform: Platform::Whatsapp,
                kind: EventKind::Message,
                id: text_of(m.get("id")).unwrap_or_else(|| content_id("wamsg", m)),
                account: phone_id.clone(),
                customer: text_of(m.get("from")).unwrap_or_default(),
                text: whatsapp_text(m),
                timestamp_ms: seconds_to_ms(m.get("timestamp")),
                raw: m.clone(),
            });
        }
        for s in value.get("statuses").and_then(Value::as_array).into_iter().flatten() {
            found = true;
            let status = text_of(s.get("status")).unwrap_or_default();
            out.push(RefEvent {
                platform: Platform::Whatsapp,
                kind: EventKind::Status,
                id: format!("{}:{status}", text_of(s.get("id")).unwrap_or_else(|| content_id("wastatus", s))),
                account: phone_id.clone(),
                customer: text_of(s.get("recipient_id")).unwrap_or_default(),
                text: Some(status),
                timestamp_ms: seconds_to_ms(s.get("timestamp")),
                raw: s.clone(),
            });
        }
        if !found {
            let mut ev = change_item(Platform::Whatsapp, &phone_id, change);
            ev.id = content_id("change", change);
            out.push(ev);
        }
    }
}

/// `meta::parse` and the reference agree on `body`: the same failure, or the same events. Two
/// things changed on purpose since: an item that is no object is set aside instead of failing
/// the body, and an id is the platform's only when it is there and not blank (the reference's
/// other ids are compared only where the platform gave one).
fn agree(body: &[u8]) {
    let shown = String::from_utf8_lossy(body);
    match (meta::parse(body), reference::parse(body)) {
        (Ok(new), Ok(old)) => {
            // (a list that is not one was passed over by the reference)
            assert!(new.unreadable.iter().all(|u| u.why.ends_with("is not an array")), "{shown}");
            assert_eq!(new.events.len(), old.len(), "{shown}");
            for (n, o) in new.events.iter().zip(&old) {
                assert_eq!(
                    (n.platform, n.kind, &n.account, &n.customer, &n.text, n.timestamp_ms, n.raw.value()),
                    (o.platform, o.kind, &o.account, &o.customer, &o.text, o.timestamp_ms, o.raw.clone()),
                    "{shown}"
                );
                if let Identity::Given(id) = &n.identity {
                    assert_eq!((id, &n.id), (&o.id, &o.id), "{shown}");
                }
            }
        }
        (Ok(new), Err(old)) if old.ends_with("item is not an object") => {
            assert!(!new.unreadable.is_empty(), "{shown}: {old}");
        }
        (Err(ParseError::Json(_)), Err(old)) => assert!(old.starts_with("body is not JSON"), "{shown}: {old}"),
        (Err(ParseError::Shape(new)), Err(old)) => assert_eq!(new, old, "{shown}"),
        (new, old) => panic!("{shown}\nnew: {new:?}\nreference: {old:?}"),
    }
}

#[test]
fn meta_edge_cases_read_as_before() {
    let page = |item: &str| format!(r#"{{"object":"page","entry":[{{"id":"P","messaging":[{item}]}}]}}"#);
    let wa = |m: &str| {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"value":{{"messages":[{m}]}}}}]}}]}}"#
        )
    };
    // Repeated keys: the last one wins, at every level.
    let dup = r#"{"object":"instagram","object":"page","entry":[{"id":"A","id":"P","messaging":[
        {"sender":{"id":"X"},"sender":{"id":"U"},"timestamp":1,"message":{"mid":"m1","text":"a","text":"b"}}]}]}"#;
    agree(dup.as_bytes());
    let ev = &meta::parse(dup.as_bytes()).unwrap().events[0];
    assert_eq!((ev.platform, ev.account.as_str(), ev.customer.as_str()), (Platform::Messenger, "P", "U"));
    assert_eq!((ev.text.as_deref(), ev.raw.value()["sender"]["id"].as_str()), (Some("b"), Some("U")));
    // JSON that is no object, and no JSON.
    for body in
        [r#"[{"object":"page","entry":[]}]"#, r#""page""#, "12", "null", "", "{", r#"{"object":"page","entry":[]} x"#]
    {
        agree(body.as_bytes());
    }
    // `"message": null` is still a message, named by its content.
    agree(page(r#"{"sender":{"id":"U"},"message":null}"#).as_bytes());
    assert_eq!(
        meta::parse(page(r#"{"sender":{"id":"U"},"message":null}"#).as_bytes()).unwrap().events[0].kind,
        EventKind::Message
    );
    // Numbers where strings are expected.
    agree(
        page(r#"{"sender":{"id":123},"recipient":{"id":-4.5e3},"timestamp":1.5,"message":{"mid":7,"text":1e2}}"#)
            .as_bytes(),
    );
    agree(br#"{"object":"page","entry":[{"id":18446744073709551616,"messaging":[{"read":{"watermark":-1}}]}]}"#);
    agree(wa(r#"{"from":4477,"id":1,"timestamp":18446744073709551615}"#).as_bytes());
    // Timestamps as strings, with spaces.
    agree(page(r#"{"sender":{"id":"U"},"timestamp":" 1457764197628 ","delivery":{"watermark":"\t12\n"}}"#).as_bytes());
    agree(page(r#"{"sender":{"id":"U"},"timestamp":"14 57","read":{"watermark":" "}}"#).as_bytes());
    agree(wa(r#"{"id":"w","timestamp":" 1700000000 "}"#).as_bytes());
    // Escapes in keys and values, and whitespace anywhere.
    agree(page(r#"{"\u0073ender":{"\u0069d":"\u0055"},"m\u0065ssage":{"text":"caf\u00e9 \ud83d\ude00","is_\u0065cho":true}}"#).as_bytes());
    agree(br#"{"obj\u0065ct":"p\u0061ge","entry":[{"id":"P","messaging":[]}]}"#);
    agree(b" {\n \"object\" : \"page\" ,\n \"entry\" : [ { \"messaging\" : [ { \"message\" : { \"text\" : \"x\" } } ] } ] }\n");
    // Bytes that are not UTF-8, at the top and inside an item.
    agree(b"{\"object\":\"page\",\"entry\":[],\"x\":\"\xff\"}");
    agree(b"{\"object\":\"page\",\"entry\":[{\"messaging\":[{\"sender\":{\"id\":\"U\xc3\"},\"message\":{}}]}]}");
    // What `serde_json::Value` refuses though it has JSON's syntax: a lone surrogate, a number
    // out of range, nesting deeper than 128.
    agree(page(r#"{"sender":{"id":"\ud800"},"message":{}}"#).as_bytes());
    agree(br#"{"object":"page","entry":[],"x":{"\udc00":1}}"#);
    agree(br#""\ud800""#);
    agree(page(r#"{"sender":{"id":"U"},"timestamp":1e400,"message":{}}"#).as_bytes());
    agree(page(&format!(r#"{{"message":{{"deep":{}{}}}}}"#, "[".repeat(200), "]".repeat(200))).as_bytes());
}

/// Found by the `generic` fuzz target: JSON with the key `$serde_json::private::RawValue`, not
/// first in its object, reads into a `Value` that is written back with the key first, as JSON
/// that does not read: a task carrying it could never read its payload. A push with the key is
/// refused; data with it is kept as text, and is no RBM event.
#[test]
fn google_keeps_only_json_that_reads_back() {
    use base64::Engine as _;
    let reads_back = |text: &str| serde_json::from_str::<Value>(text).is_ok();

    let body = br#"{"message":{"data":"eyJhIjoxfQ==","attributes":{"k":"v","$serde_json::private::RawValue":1}},"subscription":"s"}"#;
    assert!(matches!(google::envelope(body), Err(ParseError::Shape(_))));

    let data = r#"{"senderPhoneNumber":"+1","text":"hi","x":{"b":1,"$serde_json::private::RawValue":2}}"#;
    let body =
        json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(data)}, "subscription": "s"});
    let env = google::envelope(body.to_string().as_bytes()).unwrap();
    let ev = google::pubsub_event(&env);
    assert!(reads_back(&serde_json::to_string(&ev).unwrap()));
    assert_eq!(ev.raw.value()["data"], json!(data));
    let why = google::rbm_event(&env).unwrap_err();
    assert!(matches!(why, ParseError::Shape(_)), "{why:?}");
    let item = google::rbm_unreadable(&env, why.to_string());
    assert!(reads_back(item.raw.get()));
    assert_eq!(item.raw.value(), json!(data));
}

/// Found by hand after the `generic` fuzz target's finding: a Meta item with the key
/// `$serde_json::private::RawValue` was queued with a payload no task could read (and, without a
/// `mid`, deduplicated as `null`). The body is refused as JSON that cannot be kept.
#[test]
fn meta_refuses_the_raw_value_key() {
    let body = br#"{"object":"page","entry":[{"id":"P","messaging":[{"sender":{"id":"U"},"message":{"$serde_json::private::RawValue":1,"mid":"m"}}]}]}"#;
    let Err(why) = meta::parse(body) else { panic!("a body with the raw-value key was taken") };
    assert!(matches!(why, ParseError::Json(ref m) if m.contains("cannot be kept")), "{why:?}");
    let body = br#"{"object":"page","entry":[{"id":"P","messaging":[{"sender":{"id":"U"},"message":{"mid":"m","x":{"$serde_json::private::RawValue":1}}}]}]}"#;
    assert!(meta::parse(body).is_err());
}

/// Ids as a clumsy or hostile platform sends them: empty, blank, with the key's separators and
/// escapes, or over the key limit.
fn clumsy_id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a:% ]{0,5}",
        1 => Just(String::new()),
        1 => "[a:%]{1,3}".prop_map(|s| s.repeat(300)),
        1 => Just("#sha256:".to_string()),
    ]
    .boxed()
}

/// An identity as plain strings: its platform, account, form and parts.
fn parts_of((platform, account, identity): &(Platform, String, Identity)) -> (String, String, String, Vec<String>) {
    let (form, parts) = match identity {
        Identity::Given(id) => ("given", vec![id.clone()]),
        Identity::Named(space, id) => ("n", vec![space.to_string(), id.clone()]),
        Identity::Derived(parts) => ("d", parts.clone()),
        Identity::Content(tag, hash) => ("c", vec![tag.to_string(), hash.clone()]),
    };
    (platform.as_str().to_string(), account.clone(), form.to_string(), parts)
}

/// A dedup key read back into [`parts_of`] its identity, by the rules its doc gives.
fn read_back(key: &str) -> Option<(String, String, String, Vec<String>)> {
    let unescape = |p: &str| p.replace("%3A", ":").replace("%25", "%");
    let segs: Vec<&str> = key.split(':').collect();
    if segs.len() < 4 || segs[0] != "webhook" {
        return None;
    }
    let (platform, account) = (segs[1].to_string(), unescape(segs[2]));
    if segs.len() == 4 {
        return Some((platform, account, "given".into(), vec![unescape(segs[3])]));
    }
    if !segs[3].is_empty() || segs.len() < 5 {
        return None;
    }
    let parts: Vec<String> = segs[5..].iter().map(|p| unescape(p)).collect();
    match (segs[4], parts.len()) {
        ("d", _) | ("n" | "c", 2) => Some((platform, account, segs[4].to_string(), parts)),
        _ => None,
    }
}

/// Few enough different strings that two drawn at random often meet, or nearly.
fn tiny() -> BoxedStrategy<String> {
    prop_oneof![4 => "[a:%d]{0,3}", 1 => Just("%3A".to_string()), 1 => Just("a".repeat(600))].boxed()
}

fn identity() -> BoxedStrategy<Identity> {
    let parts = prop::collection::vec(tiny(), 0..3);
    prop_oneof![
        tiny().prop_filter("a given id is never blank", |s| !s.trim().is_empty()).prop_map(Identity::Given),
        (prop::sample::select(&["d", "c:d"][..]), tiny())
            .prop_filter("never blank", |(_, s)| !s.trim().is_empty())
            .prop_map(|(space, id)| Identity::Named(space, id)),
        parts.prop_map(Identity::Derived),
        (prop::sample::select(&["d", "c:d"][..]), "[ad]{1,2}").prop_map(|(tag, hash)| Identity::Content(tag, hash)),
    ]
    .boxed()
}

fn platform() -> impl Strategy<Value = Platform> {
    prop::sample::select(&[Platform::Messenger, Platform::Generic][..])
}

/// A `messaging` item with a message or postback whose `mid` is a clumsy id, or none.
fn item_with_mid() -> BoxedStrategy<Value> {
    (prop::sample::select(&["message", "postback"][..]), prop::option::of(clumsy_id()), "[a-c]{0,2}", 0u64..3)
        .prop_map(|(what, mid, text, ts)| {
            let mut inner = json!({"text": text});
            if let Some(mid) = mid {
                inner["mid"] = json!(mid);
            }
            json!({"sender": {"id": "U"}, "timestamp": ts, what: inner})
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Two events share a dedup key only when they share platform, account and identity, and
    /// so do the keys the engine stores (long ones hashed).
    #[test]
    fn distinct_identities_have_distinct_keys(
        a in (platform(), tiny(), identity()),
        b in (platform(), tiny(), identity()),
    ) {
        let ka = crate::model::event::dedup_key(a.0, &a.1, &a.2);
        let kb = crate::model::event::dedup_key(b.0, &b.1, &b.2);
        prop_assert_eq!(ka == kb, a == b, "{} / {}", ka, kb);
        let (sa, sb) = (crate::engine::bounded_key(&ka), crate::engine::bounded_key(&kb));
        prop_assert_eq!(sa == sb, a == b);
        prop_assert!(sa.len() <= crate::engine::KEY_LIMIT);
    }

    /// A key can be read back into what made it: the proof that no two identities share one.
    #[test]
    fn a_key_reads_back_into_its_identity(a in (platform(), tiny(), identity())) {
        let key = crate::model::event::dedup_key(a.0, &a.1, &a.2);
        prop_assert_eq!(read_back(&key), Some(parts_of(&a)), "{}", key);
    }

    /// Two `messaging` items share a key only when they are the same event: the same non-blank
    /// `mid`, or, without one, the same content.
    #[test]
    fn distinct_items_have_distinct_keys(a in item_with_mid(), b in item_with_mid(), other_page in any::<bool>()) {
        let page_b = if other_page { "P:" } else { "P" };
        let body = json!({"object": "page", "entry": [
            {"id": "P", "messaging": [a.clone()]}, {"id": page_b, "messaging": [b.clone()]}]});
        let events = meta::parse(&serde_json::to_vec(&body).unwrap()).unwrap().events;
        prop_assert_eq!(events.len(), 2);
        let what = |v: &Value| {
            let inner = v.get("message").or_else(|| v.get("postback")).unwrap();
            inner.get("mid").and_then(Value::as_str).filter(|m| !m.trim().is_empty()).map(str::to_string)
        };
        let same = !other_page
            && match (what(&a), what(&b)) {
                (Some(x), Some(y)) => x == y,
                (None, None) => a == b,
                _ => false,
            };
        prop_assert_eq!(events[0].dedup_key() == events[1].dedup_key(), same, "{} / {}", a, b);
    }

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
            message_id: Identity::Given("1".into()),
            publish_time: None,
            subscription: String::new(),
            attributes: Value::Null,
            data: body,
        };
        let _ = google::pubsub_event(&env);
        let _ = google::rbm_event(&env);
    }

    #[test]
    fn meta_parse_reads_as_the_value_parser(v in json_value()) {
        for body in [
            v.clone(),
            json!({"object": "page", "entry": [v.clone()]}),
            json!({"object": "instagram", "entry": [v.clone()]}),
            json!({"object": "whatsapp_business_account", "entry": [{"changes": [v.clone()]}]}),
            json!({"object": "page", "entry": [{"id": "P", "messaging": [v.clone()]}]}),
        ] {
            agree(&serde_json::to_vec(&body).unwrap());
            agree(&serde_json::to_vec_pretty(&body).unwrap());
        }
    }

    #[test]
    fn meta_items_read_as_before(
        items in prop::collection::vec(messaging_item(), 0..4),
        changes in prop::collection::vec(change(), 0..3),
    ) {
        for object in ["page", "instagram", "whatsapp_business_account"] {
            let body = json!({"object": object, "entry": [
                {"id": "E", "messaging": items, "changes": changes},
                {"id": 7, "standby": items, "changes": changes},
            ]});
            agree(&serde_json::to_vec(&body).unwrap());
        }
    }
}

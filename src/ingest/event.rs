//! One normalized event type for every platform, with the raw item kept for the dashboard.

use std::borrow::Cow;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Messenger,
    Instagram,
    Whatsapp,
    Pubsub,
    Rbm,
    Generic,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Messenger => "messenger",
            Platform::Instagram => "instagram",
            Platform::Whatsapp => "whatsapp",
            Platform::Pubsub => "pubsub",
            Platform::Rbm => "rbm",
            Platform::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A customer wrote: the only kind that gets an answer.
    Message,
    /// The business's own message, echoed back by Meta: recorded, never answered.
    Echo,
    Postback,
    Delivery,
    Read,
    /// WhatsApp message status (sent, delivered, read, failed).
    Status,
    Typing,
    /// A Pub/Sub notification (reviews, Gmail and anything else routed through Pub/Sub).
    Notification,
    Other,
}

/// What every webhook becomes before it is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    pub platform: Platform,
    pub kind: EventKind,
    /// The platform's id for the event (message id, Pub/Sub message id, …): the dedup key.
    pub id: String,
    /// The business side: page, Instagram account, WhatsApp phone number id, RBM agent,
    /// Pub/Sub subscription or generic source.
    pub account: String,
    /// The customer: PSID, IGSID, WhatsApp id, phone number; empty when there is none.
    pub customer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// The item as the platform sent it.
    pub raw: Raw,
}

impl InboundEvent {
    /// The key under which a redelivery of this event is recognised.
    pub fn dedup_key(&self) -> String {
        format!("webhook:{}:{}:{}", self.platform.as_str(), self.account, self.id)
    }
}

/// A piece of JSON kept as text: a webhook's item exactly as the platform sent it (escapes and
/// key order included), copied once from the request body and written into the task as it is.
#[derive(Debug, Clone)]
pub struct Raw(Box<RawValue>);

impl Raw {
    /// JSON `null`.
    pub fn null() -> Raw {
        Raw(RawValue::from_string("null".into()).expect("null is JSON"))
    }

    pub fn from_raw(raw: &RawValue) -> Raw {
        Raw(raw.to_owned())
    }

    pub fn from_value(v: &Value) -> Raw {
        serde_json::value::to_raw_value(v).map(Raw).unwrap_or_else(|_| Raw::null())
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// Parsed, for the rare reader that looks inside.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl Default for Raw {
    fn default() -> Raw {
        Raw::null()
    }
}

impl PartialEq for Raw {
    fn eq(&self, other: &Raw) -> bool {
        self.0.get() == other.0.get() || self.value() == other.value()
    }
}

impl Serialize for Raw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        Box::<RawValue>::deserialize(d).map(Raw)
    }
}

/// A JSON object read lazily: each member's text, found by key, nothing parsed until asked for
/// and nothing copied (strings without escapes are borrowed). A repeated key means its last
/// value, as when the object is parsed whole.
#[derive(Default)]
pub struct Obj<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Obj<'a> {
    /// `raw` as an object; `None` when it is any other JSON value.
    pub fn of(raw: &'a RawValue) -> Option<Obj<'a>> {
        let text = raw.get();
        if !text.starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A member that is itself an object.
    pub fn obj(&self, key: &str) -> Option<Obj<'a>> {
        self.get(key).and_then(Obj::of)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Obj<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Obj<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Obj<'a>, M::Error> {
                let mut members = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(k) = m.next_key::<Key<'a>>()? {
                    members.push((k.0, m.next_value::<&'a RawValue>()?));
                }
                Ok(Obj(members))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An object's key: borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Checks `body` as strictly as parsing it into a [`Value`] would, building nothing. [`RawValue`]
/// only skips over its text, so lone surrogates (`"\ud800"`), numbers out of range (`1e400`) and
/// nesting deeper than 128 would otherwise pass, and be kept as text no `Value` can be read from.
pub fn check_json(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(body).map(drop)
}

/// Any JSON value, read through and dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut s: S) -> Result<Checked, S::Error> {
        while s.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Checked, M::Error> {
        while m.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A JSON array's items, unparsed; `None` when `raw` is not an array.
pub fn items(raw: Option<&RawValue>) -> Option<Vec<&RawValue>> {
    let raw = raw?;
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// A string field, or a number written as text (as [`text_of`], without parsing the rest).
pub fn raw_text(raw: Option<&RawValue>) -> Option<String> {
    let t = raw?.get();
    match t.as_bytes().first()? {
        b'"' => serde_json::from_str::<Cow<str>>(t).ok().map(Cow::into_owned),
        b'-' | b'0'..=b'9' => serde_json::from_str::<serde_json::Number>(t).ok().map(|n| n.to_string()),
        _ => None,
    }
}

/// A timestamp sent as a number or a string (as [`number_or_string`]).
pub fn raw_number_or_string(raw: Option<&RawValue>) -> Option<u64> {
    let t = raw?.get();
    match t.as_bytes().first()? {
        b'"' => serde_json::from_str::<Cow<str>>(t).ok()?.trim().parse().ok(),
        b'-' | b'0'..=b'9' => {
            let n = serde_json::from_str::<serde_json::Number>(t).ok()?;
            n.as_u64().or_else(|| n.as_f64().map(|f| f as u64))
        }
        _ => None,
    }
}

/// `true` only for JSON `true`.
pub fn raw_true(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get() == "true")
}

/// The id of an item without one of its own: see [`content_id`].
pub fn raw_content_id(prefix: &str, raw: &RawValue) -> String {
    content_id(prefix, &serde_json::from_str(raw.get()).unwrap_or(Value::Null))
}

/// A stable id for an item that carries none: the hash of its JSON (keys are sorted).
pub fn content_id(prefix: &str, v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    format!("{prefix}:{}", hex::encode(&digest[..16]))
}

/// A timestamp sent as a number or a string.
pub fn number_or_string(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string field, or a number written as text.
pub fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

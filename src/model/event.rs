//! One normalized event type for every platform, with the raw item kept for the dashboard.

use std::borrow::Cow;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// The task kind that carries this platform's events other than customers' messages (lane
    /// `webhooks`; a customer's message is a `conversation.process_message` task).
    pub fn task_kind(self) -> &'static str {
        match self {
            Platform::Messenger => "webhook.messenger",
            Platform::Instagram => "webhook.instagram",
            Platform::Whatsapp => "webhook.whatsapp",
            Platform::Pubsub => "webhook.pubsub",
            Platform::Rbm => "webhook.rbm",
            Platform::Generic => "webhook.generic",
        }
    }

    /// The platform named `name` as [`Platform::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub const ALL: [Platform; 6] = [
        Platform::Messenger,
        Platform::Instagram,
        Platform::Whatsapp,
        Platform::Pubsub,
        Platform::Rbm,
        Platform::Generic,
    ];
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
    /// The event's id as shown: the platform's own (message id, Pub/Sub message id, …), or one
    /// made from its fields or content when it has none (see [`Identity`]).
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
    /// What names the event, and so what a redelivery of it shares: the dedup key's source.
    #[serde(skip)]
    pub identity: Identity,
}

impl InboundEvent {
    /// The key under which a redelivery of this event is recognised (see [`dedup_key`]).
    pub fn dedup_key(&self) -> String {
        dedup_key(self.platform, &self.account, &self.identity)
    }
}

/// The key under which a redelivery of an event is recognised: two events get the same key only
/// when they have the same platform, account and [`Identity`].
///
/// `webhook:<platform>:<account>:` then the identity, each part escaped (`%` → `%25`, `:` →
/// `%3A`) so that no part holds a `:`. A platform's id is the fourth and last part (never empty:
/// a blank id is no id); any other identity leaves the fourth part empty and names its form in the
/// fifth: `n`, the id's space and the id; `d` and the fields; or `c`, a tag and the hash. So the key can be read back into what
/// made it, and different events cannot share one. A key over the engine's limit is hashed by the
/// engine, under a prefix of its own.
pub fn dedup_key(platform: Platform, account: &str, identity: &Identity) -> String {
    let mut key = format!("webhook:{}:{}:", platform.as_str(), escape(account));
    match identity {
        Identity::Given(id) => key.push_str(&escape(id)),
        Identity::Named(space, id) => {
            key.push_str(":n:");
            key.push_str(&escape(space));
            key.push(':');
            key.push_str(&escape(id));
        }
        Identity::Derived(parts) => {
            key.push_str(":d");
            for p in parts {
                key.push(':');
                key.push_str(&escape(p));
            }
        }
        Identity::Content(tag, hash) => {
            key.push_str(":c:");
            key.push_str(&escape(tag));
            key.push(':');
            key.push_str(hash);
        }
    }
    key
}

/// `%` and `:` written as `%25` and `%3A`; everything else as it is.
fn escape(part: &str) -> Cow<'_, str> {
    if !part.contains([':', '%']) {
        return Cow::Borrowed(part);
    }
    Cow::Owned(part.replace('%', "%25").replace(':', "%3A"))
}

/// What names an event. A platform's own id, when it sends one that is not blank; else an id
/// made of the event's own fields where those name it (a delivery receipt: its sender and
/// watermark); else the hash of the item's canonical JSON, so that an exact redelivery still
/// matches and two different items never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The platform's id for a message (or the only kind of id it sends), as sent; never blank.
    Given(String),
    /// The platform's id from another space of ids than its messages' (a comment's id, an RBM
    /// event's id), as sent, never blank: named apart so that it cannot meet a message's id.
    Named(&'static str, String),
    /// Made of the event's fields; shown joined by `:` (`delivery:<sender>:<watermark>`).
    Derived(Vec<String>),
    /// A tag naming what the item was and the hex SHA-256 (128 bits) of its canonical JSON.
    Content(&'static str, String),
}

/// An event read back from a task's payload: its identity served at ingest and is not kept.
impl Default for Identity {
    fn default() -> Identity {
        Identity::Content("none", String::new())
    }
}

impl Identity {
    /// The platform's id when it is there and not blank, else the item's content.
    pub fn given_or_content(id: Option<String>, tag: &'static str, item: &Value) -> Identity {
        match given(id) {
            Some(id) => Identity::Given(id),
            None => Identity::content(tag, item),
        }
    }

    /// As [`Identity::given_or_content`], for an item kept as text.
    pub fn given_or_raw(id: Option<String>, tag: &'static str, item: &RawValue) -> Identity {
        match given(id) {
            Some(id) => Identity::Given(id),
            None => Identity::raw(tag, item),
        }
    }

    /// The hash of `v`'s canonical JSON (object keys sorted).
    pub fn content(tag: &'static str, v: &Value) -> Identity {
        let digest = Sha256::digest(v.to_string().as_bytes());
        Identity::Content(tag, hex::encode(&digest[..16]))
    }

    /// The hash of an item kept as text, read as [`Identity::content`] reads it.
    pub fn raw(tag: &'static str, item: &RawValue) -> Identity {
        Identity::content(tag, &serde_json::from_str(item.get()).unwrap_or(Value::Null))
    }

    /// The event's id as shown (and recorded in its conversation).
    pub fn id(&self) -> String {
        match self {
            Identity::Given(id) | Identity::Named(_, id) => id.clone(),
            Identity::Derived(parts) => parts.join(":"),
            Identity::Content(tag, hash) => format!("{tag}:{hash}"),
        }
    }
}

/// An item of a webhook that names no event Switchyard can read (an `entry` or `messaging` item
/// that is not an object). It costs the other events of its request nothing: it is queued for
/// the dead-letter queue with its raw item, so an operator can see what was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub platform: Platform,
    pub account: String,
    /// Why it could not be read.
    pub why: String,
    pub raw: Raw,
}

impl Unreadable {
    /// The dedup key of an unreadable item: a redelivery of the same item is not dead-lettered
    /// twice.
    pub fn dedup_key(&self) -> String {
        dedup_key(self.platform, &self.account, &Identity::raw("unreadable", &self.raw.0))
    }
}

/// The events of one request, and the items of it that could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub events: Vec<InboundEvent>,
    pub unreadable: Vec<Unreadable>,
}

impl From<Vec<InboundEvent>> for Batch {
    fn from(events: Vec<InboundEvent>) -> Batch {
        Batch { events, unreadable: Vec::new() }
    }
}

/// An id as a platform sent it, or `None` when it is missing, empty or only white space: such
/// an id names nothing, and taking it as one would merge every event that carries it.
pub fn given(id: Option<String>) -> Option<String> {
    id.filter(|id| !id.trim().is_empty())
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
/// A key no `Value` can be written back with (`crate::ingest::reads_back`) is refused too.
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
        while m.next_entry::<CheckedKey, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// An object's key, read through and dropped; serde_json's marker of raw values refused.
struct CheckedKey;

impl<'de> Deserialize<'de> for CheckedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckedKey, D::Error> {
        d.deserialize_str(CheckedKey)
    }
}

impl<'de> Visitor<'de> for CheckedKey {
    type Value = CheckedKey;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<CheckedKey, E> {
        if key == crate::ingest::RAW_VALUE_TOKEN {
            return Err(E::custom(format!("the key `{key}` cannot be kept")));
        }
        Ok(CheckedKey)
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

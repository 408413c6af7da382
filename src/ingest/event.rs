//! One normalized event type for every platform, with the raw item kept for the dashboard.

use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    pub raw: Value,
}

impl InboundEvent {
    /// The key under which a redelivery of this event is recognised.
    pub fn dedup_key(&self) -> String {
        format!("webhook:{}:{}:{}", self.platform.as_str(), self.account, self.id)
    }
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

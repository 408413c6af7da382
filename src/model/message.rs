//! A customer's message to answer, and the conversation it belongs to: what ingestion and the
//! API hand to the conversation flow, as the payload of a `conversation.process_message` task.

use serde::{Deserialize, Serialize};

use super::event::{EventKind, InboundEvent, Platform, Raw};
use super::task::{Lane, TaskSpec, now_us};

/// The task kind that answers a customer's message (lane `conversations`).
pub(crate) const PROCESS: &str = "conversation.process_message";

/// Where a conversation is held: on a platform, through its webhooks, or through the HTTP API
/// (`POST /conversations/message`). Written as the platform's name or `api`, in conversation
/// ids, task payloads and the `platform` label of the reply metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Channel {
    Platform(Platform),
    Api,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Platform(p) => p.as_str(),
            Channel::Api => "api",
        }
    }

    /// The channel named `name` as [`Channel::as_str`] writes it.
    pub fn parse(name: &str) -> Option<Channel> {
        if name == "api" { Some(Channel::Api) } else { Platform::parse(name).map(Channel::Platform) }
    }

    /// The platform replies are sent back through, if there is one.
    pub fn platform(self) -> Option<Platform> {
        match self {
            Channel::Platform(p) => Some(p),
            Channel::Api => None,
        }
    }
}

impl From<Channel> for String {
    fn from(c: Channel) -> String {
        c.as_str().to_string()
    }
}

impl TryFrom<String> for Channel {
    type Error = String;

    fn try_from(name: String) -> Result<Channel, String> {
        Channel::parse(&name).ok_or_else(|| format!("unknown platform `{name}`"))
    }
}

impl From<Platform> for Channel {
    fn from(p: Platform) -> Channel {
        Channel::Platform(p)
    }
}

/// Who a conversation is between.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConversationKey {
    pub platform: Channel,
    pub account: String,
    pub customer: String,
}

impl ConversationKey {
    pub fn new(platform: impl Into<Channel>, account: &str, customer: &str) -> ConversationKey {
        ConversationKey { platform: platform.into(), account: account.into(), customer: customer.into() }
    }

    /// A conversation of the API itself, named by its caller.
    pub fn api(name: &str) -> ConversationKey {
        ConversationKey::new(Channel::Api, "api", name)
    }

    /// The conversation's id: `platform:account:customer`.
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.platform.as_str(), self.account, self.customer)
    }
}

/// A customer message to answer: from a webhook or from the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    /// `messenger`, `instagram`, `whatsapp`, `rbm` (replies go back there) or `api`.
    pub platform: Channel,
    pub account: String,
    pub customer: String,
    pub text: String,
    /// The platform's message id (or one made up for API messages): recorded once.
    pub message_id: String,
    /// When Switchyard received it (µs since the epoch): the start of the reply latency.
    #[serde(default)]
    pub received_us: u64,
    /// When the customer sent it, as the platform says (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// The event as the platform sent it, for the dashboard.
    #[serde(default, skip_serializing_if = "Raw::is_null")]
    pub raw: Raw,
}

impl Incoming {
    pub fn key(&self) -> ConversationKey {
        ConversationKey::new(self.platform, &self.account, &self.customer)
    }

    /// Does a webhook event ask for an answer? A customer's message or a tapped button does.
    pub fn answers(ev: &InboundEvent) -> bool {
        matches!(ev.kind, EventKind::Message | EventKind::Postback)
            && matches!(ev.platform, Platform::Messenger | Platform::Instagram | Platform::Whatsapp | Platform::Rbm)
            && !ev.customer.trim().is_empty()
    }

    /// The message of an event that [asks for an answer](Incoming::answers).
    pub fn from_event(ev: InboundEvent) -> Incoming {
        Incoming {
            platform: ev.platform.into(),
            account: ev.account,
            customer: ev.customer,
            text: ev.text.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| "(attachment)".into()),
            message_id: ev.id,
            received_us: now_us(),
            timestamp_ms: ev.timestamp_ms,
            raw: ev.raw,
        }
    }

    /// The task that answers it, in the conversation's order.
    pub fn task(&self) -> TaskSpec {
        let payload = serde_json::to_string(self).unwrap_or_else(|_| "null".into());
        TaskSpec::from_json(PROCESS, payload).on_lane(Lane::Conversations).ordered_by(self.key().id())
    }
}

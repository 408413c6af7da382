//! Conversations in Redis: a summary hash and a list of turns per (platform, business account,
//! customer), both kept for `CONVERSATION_RETENTION` after the last turn.

use serde::{Deserialize, Serialize};

use super::responder::{Intent, Turn};
use crate::engine::{Engine, EngineError, now_ms};
pub use crate::model::ConversationKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Who {
    Customer,
    Agent,
    /// Recorded, never answered: echoes of the business's own messages, deliveries, reads.
    System,
}

impl Who {
    fn as_str(self) -> &'static str {
        match self {
            Who::Customer => "customer",
            Who::Agent => "agent",
            Who::System => "system",
        }
    }

    /// The kind of most of this side's turns, which the log does not write out: a customer's
    /// `message`, an agent's `reply` (a system turn always names its kind).
    fn usual_kind(self) -> &'static str {
        match self {
            Who::Customer => "message",
            Who::Agent => "reply",
            Who::System => "",
        }
    }
}

/// One turn as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTurn {
    pub who: Who,
    pub text: String,
    /// `message`, `reply`, `echo`, `delivery`, `read`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub at_ms: u64,
}

impl StoredTurn {
    /// The turn as the conversation's log keeps it: one line of tab-separated fields, the text
    /// last (it may hold anything), with no field names —
    /// `who[:kind]  at_ms  intent  event_id  text`, `who` the side's initial (`c`, `a`, `s`)
    /// and `:kind` only when it is not the side's usual one (a customer's `message`, an
    /// agent's `reply`). A turn whose event id holds a tab or a line break is kept as JSON, as
    /// every turn was before; [`StoredTurn::decode`] reads both.
    pub fn encode(&self) -> String {
        let event = self.event_id.as_deref().unwrap_or("");
        if event.contains(['\t', '\n', '\r']) {
            return serde_json::to_string(self).unwrap_or_default();
        }
        let usual = self.who.usual_kind();
        let who = &self.who.as_str()[..1];
        let intent = self.intent.map(|i| i.as_str()).unwrap_or("");
        if self.kind == usual {
            format!("{who}\t{}\t{intent}\t{event}\t{}", self.at_ms, self.text)
        } else {
            format!("{who}:{}\t{}\t{intent}\t{event}\t{}", self.kind, self.at_ms, self.text)
        }
    }

    /// A turn from its line in the log (either form `encode` writes); `None` when it is not one.
    pub fn decode(line: &str) -> Option<StoredTurn> {
        if line.starts_with('{') {
            return serde_json::from_str(line).ok();
        }
        let mut f = line.splitn(5, '\t');
        let (side, at, intent, event, text) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
        let (who, kind) = side.split_once(':').unwrap_or((side, ""));
        let who = match who {
            "c" => Who::Customer,
            "a" => Who::Agent,
            "s" => Who::System,
            _ => return None,
        };
        Some(StoredTurn {
            who,
            text: text.to_string(),
            kind: if side.contains(':') { kind } else { who.usual_kind() }.to_string(),
            intent: if intent.is_empty() { None } else { Some(Intent::parse(intent)?) },
            event_id: (!event.is_empty()).then(|| event.to_string()),
            at_ms: at.parse().ok()?,
        })
    }

    /// As the responder sees it.
    pub fn as_turn(&self) -> Turn {
        Turn { from_customer: self.who == Who::Customer, text: self.text.clone(), intent: self.intent }
    }
}

/// A conversation's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub conversation_id: String,
    pub platform: String,
    pub account: String,
    pub customer: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub customer_turns: u64,
    pub agent_turns: u64,
    pub handed_off: bool,
}

pub struct Store {
    engine: Engine,
}

impl Store {
    pub fn new(engine: Engine) -> Store {
        Store { engine }
    }

    /// The engine it keeps its data with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Append a turn; `false` when its event id was already recorded.
    pub async fn append(&self, key: &ConversationKey, turn: &StoredTurn) -> Result<bool, EngineError> {
        let id = key.id();
        let line = turn.encode();
        let mut con = self.engine.conn();
        let added: i64 = self
            .engine
            .scripts()
            .conv_append
            .key(self.engine.conversation_part(&id).conversation(&id))
            .key(self.engine.conversation_part(&id).conversation_log(&id))
            .key(self.engine.conversation_part(&id).conversations())
            .arg(line)
            .arg(turn.event_id.as_deref().unwrap_or(""))
            .arg(now_ms())
            .arg(self.engine.config().conversation_retention.as_millis() as u64)
            .arg(key.platform.as_str())
            .arg(&key.account)
            .arg(&key.customer)
            .arg(turn.who.as_str())
            .arg(&id)
            .arg(self.engine.config().conversation_max_turns)
            .invoke_async(&mut con)
            .await?;
        Ok(added == 1)
    }

    /// The ids of the `n` conversations with the latest turns, newest first (each partition
    /// keeps its own index).
    pub async fn recent(&self, n: usize) -> Result<Vec<(String, u64)>, EngineError> {
        let mut out: Vec<(String, u64)> = Vec::new();
        for part in 0..self.engine.partitions() {
            let mut con = self.engine.conn();
            let v: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
                .arg(self.engine.part(part).conversations())
                .arg(0)
                .arg(n.max(1) as i64 - 1)
                .arg("WITHSCORES")
                .query_async(&mut con)
                .await?;
            out.extend(v.into_iter().map(|(id, at)| (id, at as u64)));
        }
        if self.engine.partitions() > 1 {
            out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            out.truncate(n);
        }
        Ok(out)
    }

    /// The last `n` turns, oldest first.
    pub async fn history(&self, id: &str, n: usize) -> Result<Vec<StoredTurn>, EngineError> {
        let mut con = self.engine.conn();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.engine.conversation_part(id).conversation_log(id))
            .arg(-(n.max(1) as i64))
            .arg(-1)
            .query_async(&mut con)
            .await?;
        Ok(raw.iter().filter_map(|t| StoredTurn::decode(t)).collect())
    }

    /// Hand the conversation to a person (automatic replies stop) or release it.
    pub async fn set_handoff(&self, id: &str, on: bool) -> Result<(), EngineError> {
        let mut con = self.engine.conn();
        let _: () = redis::cmd("HSET")
            .arg(self.engine.conversation_part(id).conversation(id))
            .arg("handoff")
            .arg(u8::from(on))
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    pub async fn summary(&self, id: &str) -> Result<Option<Summary>, EngineError> {
        // Named fields only: the hash also holds one marker per recorded event.
        const FIELDS: [&str; 8] =
            ["platform", "account", "customer", "created_at", "updated_at", "turns:customer", "turns:agent", "handoff"];
        let mut con = self.engine.conn();
        let v: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.engine.conversation_part(id).conversation(id))
            .arg(&FIELDS[..])
            .query_async(&mut con)
            .await?;
        let get = |k: &str| FIELDS.iter().position(|f| *f == k).and_then(|i| v.get(i).cloned().flatten());
        let Some(created_at) = get("created_at").and_then(|v| v.parse().ok()) else {
            return Ok(None);
        };
        let num = |k: &str| get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(Summary {
            conversation_id: id.to_string(),
            platform: get("platform").unwrap_or_default(),
            account: get("account").unwrap_or_default(),
            customer: get("customer").unwrap_or_default(),
            created_at,
            updated_at: num("updated_at"),
            customer_turns: num("turns:customer"),
            agent_turns: num("turns:agent"),
            handed_off: get("handoff").as_deref() == Some("1"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(who: Who, kind: &str, intent: Option<Intent>, event: Option<&str>, text: &str) -> StoredTurn {
        StoredTurn {
            who,
            text: text.into(),
            kind: kind.into(),
            intent,
            event_id: event.map(str::to_string),
            at_ms: 1_700_000_000_015,
        }
    }

    #[test]
    fn turns_are_kept_as_short_lines_and_read_back() {
        let customer = turn(Who::Customer, "message", Some(Intent::Shipping), Some("m_1"), "do you ship\tto Lima?\n");
        assert_eq!(customer.encode(), "c\t1700000000015\tshipping\tm_1\tdo you ship\tto Lima?\n");
        let cases = [
            customer,
            turn(Who::Agent, "reply", Some(Intent::OrderStatus), Some("reply:m_1"), "Soon."),
            turn(Who::Agent, "echo", None, Some("m_2"), ""),
            turn(Who::System, "read", None, None, "read up to 1700000000000"),
            turn(Who::Customer, "postback", None, Some("p:1"), "GET_STARTED"),
            // an event id with a tab cannot sit in a line: the turn is kept as JSON
            turn(Who::Customer, "message", None, Some("odd\tid"), "hi"),
        ];
        for t in cases {
            let line = t.encode();
            assert_eq!(StoredTurn::decode(&line).as_ref(), Some(&t), "{line:?}");
        }
        assert!(turn(Who::Customer, "message", None, Some("odd\tid"), "hi").encode().starts_with('{'));
        assert_eq!(turn(Who::System, "read", None, None, "x").encode(), "s:read\t1700000000015\t\t\tx");
    }

    #[test]
    fn turns_stored_as_json_before_are_still_read() {
        let old =
            r#"{"who":"agent","text":"We ship.","kind":"reply","intent":"shipping","event_id":"reply:m_1","at_ms":5}"#;
        let t = StoredTurn::decode(old).unwrap();
        assert_eq!((t.who, t.kind.as_str(), t.intent, t.at_ms), (Who::Agent, "reply", Some(Intent::Shipping), 5));
        for bad in ["", "x\t1\t\t\thi", "c\tsoon\t\t\thi", "c\t1\tno_such_intent\t\thi", "c\t1\t\t"] {
            assert_eq!(StoredTurn::decode(bad), None, "{bad:?}");
        }
    }
}

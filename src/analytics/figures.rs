//! A conversation's figures, worked out from its turns alone ([`analyze`], pure): counts, reply
//! latencies, intents, language and sentiment; and the record they are kept in.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::responder::{Intent, Language, detect_language};
use crate::conversation::store::{StoredTurn, Who};

/// A conversation's figures, from its turns alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConversationAnalytics {
    pub turns: u64,
    pub customer_messages: u64,
    pub agent_replies: u64,
    pub system_events: u64,
    /// From the first customer message to the first agent reply after it.
    pub first_reply_ms: Option<u64>,
    /// Over the replies timed against the message they answer (see [`analyze`]).
    pub avg_reply_ms: Option<u64>,
    pub max_reply_ms: Option<u64>,
    /// Intent (snake_case, as the responder names it) → customer messages with it.
    pub intents: BTreeMap<String, u64>,
    /// The language most customer messages are in (ties read as English); none without any.
    pub language: Option<Language>,
    pub sentiment: Sentiment,
}

/// The customer's mood over the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sentiment {
    /// The average of the customer messages' scores, each in [-1, 1]; 3 decimals.
    pub score: f64,
    pub label: SentimentLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    Negative,
    Neutral,
    Positive,
}

/// The record kept under `conv:<id>:analytics` and shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredAnalytics {
    pub conversation_id: String,
    /// From the conversation's summary at the time of the run.
    pub handed_off: bool,
    /// ms since the epoch.
    pub computed_at: u64,
    #[serde(flatten)]
    pub analytics: ConversationAnalytics,
}

/// Work out a conversation's figures from its turns, oldest first.
///
/// A reply is timed against the customer message it answers: the one its event id names
/// (`reply:<message id>`, as the conversation flow records it), else the oldest message still
/// waiting for an answer. Answering a message also answers the ones waiting before it. A reply
/// that names a message not waiting (a follow-up to a continuation) is counted but not timed.
/// Times run from one turn's `at_ms` to the other's; a reply stamped before its message counts 0.
pub fn analyze(turns: &[StoredTurn]) -> ConversationAnalytics {
    let (mut customer_messages, mut agent_replies, mut system_events) = (0u64, 0u64, 0u64);
    let mut intents: BTreeMap<String, u64> = BTreeMap::new();
    let (mut spanish, mut english) = (0u64, 0u64);
    let mut sentiment_sum = 0.0;
    let mut first_message_at: Option<u64> = None;
    let mut first_reply_ms: Option<u64> = None;
    let mut waiting: VecDeque<(Option<&str>, u64)> = VecDeque::new();
    let mut reply_ms: Vec<u64> = Vec::new();
    for turn in turns {
        match turn.who {
            Who::Customer => {
                customer_messages += 1;
                if let Some(intent) = turn.intent {
                    *intents.entry(intent_name(intent)).or_default() += 1;
                }
                match detect_language(&turn.text) {
                    Language::Es => spanish += 1,
                    Language::En => english += 1,
                }
                sentiment_sum += message_sentiment(&turn.text);
                first_message_at.get_or_insert(turn.at_ms);
                waiting.push_back((turn.event_id.as_deref(), turn.at_ms));
            }
            Who::Agent => {
                agent_replies += 1;
                if let (Some(asked), None) = (first_message_at, first_reply_ms) {
                    first_reply_ms = Some(turn.at_ms.saturating_sub(asked));
                }
                if let Some(asked) = answered(&mut waiting, turn) {
                    reply_ms.push(turn.at_ms.saturating_sub(asked));
                }
            }
            Who::System => system_events += 1,
        }
    }
    let avg_reply_ms = (!reply_ms.is_empty()).then(|| {
        let n = reply_ms.len() as u64;
        (reply_ms.iter().sum::<u64>() + n / 2) / n
    });
    let score = if customer_messages == 0 { 0.0 } else { sentiment_sum / customer_messages as f64 };
    ConversationAnalytics {
        turns: turns.len() as u64,
        customer_messages,
        agent_replies,
        system_events,
        first_reply_ms,
        avg_reply_ms,
        max_reply_ms: reply_ms.iter().copied().max(),
        intents,
        language: (customer_messages > 0).then_some(if spanish > english { Language::Es } else { Language::En }),
        sentiment: Sentiment::from_score(score),
    }
}

/// When the message a reply answers was sent, taking it and the ones before it off `waiting`.
fn answered(waiting: &mut VecDeque<(Option<&str>, u64)>, reply: &StoredTurn) -> Option<u64> {
    if let Some(message) = reply.event_id.as_deref().and_then(|e| e.strip_prefix("reply:")) {
        let at = waiting.iter().position(|(id, _)| *id == Some(message))?;
        let asked = waiting[at].1;
        waiting.drain(..=at);
        return Some(asked);
    }
    let asked = waiting.front()?.1;
    waiting.clear();
    Some(asked)
}

/// The intent's name as the responder serializes it (`order_status`).
fn intent_name(intent: Intent) -> String {
    match serde_json::to_value(intent) {
        Ok(Value::String(s)) => s,
        _ => format!("{intent:?}"),
    }
}

/// Words that carry a feeling, English and Spanish (with and without accents), matched on whole
/// lower-cased words.
const POSITIVE: &str = "\
    good great excellent amazing awesome love loved thanks thank perfect happy glad helpful fast \
    quick wonderful nice fantastic appreciate best satisfied resolved gracias excelente genial \
    perfecto perfecta encanta encantó encanto feliz contento contenta rápido rapido amable \
    maravilloso increíble increible mejor satisfecho satisfecha buenísimo buenisimo";

const NEGATIVE: &str = "\
    bad terrible awful worst worse broken damaged angry hate slow late disappointed disappointing \
    horrible poor useless problem wrong upset annoyed frustrated unacceptable ridiculous malo mala \
    mal pésimo pesimo pésima pesima roto rota dañado dañada danado molesto molesta enojado enojada \
    lento tarde peor decepcionado decepcionada odio problema inaceptable furioso furiosa";

/// Words that turn the feeling of the word after them around ("not good", "nada mal"); `t` is
/// what is left of "n't".
const NEGATORS: &str = "not no never t without nunca jamás jamas ni sin nada";

/// Words that may stand between a negator and the word it turns ("not very good", "no es malo").
const BETWEEN: &str = "very so too really that is was be muy tan es está esta fue era";

/// Words after which "good" greets rather than praises.
const TIMES_OF_DAY: &str = "morning afternoon evening night day";

/// How far from 0 a conversation's score must be to be labelled positive or negative.
const LABEL_THRESHOLD: f64 = 0.2;

/// True when the space-separated `list` holds `word`.
fn listed(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// One message's feeling in [-1, 1]: (positive − negative) / (positive + negative) over its
/// lexicon words, each turned around by a negator just before it; 0 without any.
pub fn message_sentiment(text: &str) -> f64 {
    let w = words(text);
    let (mut positive, mut negative) = (0u32, 0u32);
    for (i, word) in w.iter().enumerate() {
        let praise = if listed(POSITIVE, word) {
            true
        } else if listed(NEGATIVE, word) {
            false
        } else {
            continue;
        };
        if word == "good" && w.get(i + 1).is_some_and(|next| listed(TIMES_OF_DAY, next)) {
            continue;
        }
        if praise != negated(&w[..i]) {
            positive += 1;
        } else {
            negative += 1;
        }
    }
    if positive + negative == 0 {
        return 0.0;
    }
    (f64::from(positive) - f64::from(negative)) / f64::from(positive + negative)
}

/// True when the words before end in a negator, a few in-between words allowed.
fn negated(before: &[String]) -> bool {
    for w in before.iter().rev().take(3) {
        if listed(NEGATORS, w) {
            return true;
        }
        if !listed(BETWEEN, w) {
            return false;
        }
    }
    false
}

impl Sentiment {
    fn from_score(score: f64) -> Sentiment {
        let label = if score >= LABEL_THRESHOLD {
            SentimentLabel::Positive
        } else if score <= -LABEL_THRESHOLD {
            SentimentLabel::Negative
        } else {
            SentimentLabel::Neutral
        };
        Sentiment { score: (score * 1000.0).round() / 1000.0, label }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const T: u64 = 1_700_000_000_000;

    fn turn(who: Who, text: &str, intent: Option<Intent>, event: Option<&str>, at: u64) -> StoredTurn {
        let kind = match who {
            Who::Customer => "message",
            Who::Agent => "reply",
            Who::System => "delivery",
        };
        StoredTurn {
            who,
            text: text.into(),
            kind: kind.into(),
            intent,
            event_id: event.map(str::to_string),
            at_ms: T + at,
        }
    }

    fn customer(text: &str, intent: Intent, id: &str, at: u64) -> StoredTurn {
        turn(Who::Customer, text, Some(intent), Some(id), at)
    }

    fn reply(to: &str, at: u64) -> StoredTurn {
        turn(Who::Agent, "an answer", Some(Intent::Fallback), Some(&format!("reply:{to}")), at)
    }

    #[test]
    fn a_conversation_of_known_shape() {
        let turns = vec![
            customer("Hello! How much is the pro plan?", Intent::Pricing, "m1", 0),
            reply("m1", 1_200),
            turn(Who::System, "delivered", None, Some("d1"), 1_300),
            customer("And do you ship to Lima?", Intent::Shipping, "m2", 10_000),
            reply("m2", 13_000),
            customer("great, thanks a lot", Intent::Fallback, "m3", 20_000),
            reply("m3", 20_500),
            customer("how much is shipping?", Intent::Pricing, "m4", 30_000),
            reply("m4", 31_000),
        ];
        let a = analyze(&turns);
        assert_eq!(
            a,
            ConversationAnalytics {
                turns: 9,
                customer_messages: 4,
                agent_replies: 4,
                system_events: 1,
                first_reply_ms: Some(1_200),
                // (1 200 + 3 000 + 500 + 1 000) / 4 = 1 425
                avg_reply_ms: Some(1_425),
                max_reply_ms: Some(3_000),
                intents: BTreeMap::from([("fallback".into(), 1), ("pricing".into(), 2), ("shipping".into(), 1)]),
                language: Some(Language::En),
                // one message of four is positive: 1 / 4
                sentiment: Sentiment { score: 0.25, label: SentimentLabel::Positive },
            }
        );
    }

    #[test]
    fn replies_are_timed_from_the_message_they_answer() {
        let turns = vec![
            // A message from the business before the customer wrote: not a first reply.
            turn(Who::Agent, "Welcome!", None, None, 0),
            customer("hi", Intent::Greeting, "m1", 1_000),
            customer("anyone?", Intent::Fallback, "m2", 2_000),
            // Answers m2 by name, and with it m1.
            reply("m2", 2_500),
            customer("where is my order", Intent::OrderStatus, "m3", 5_000),
            customer("it's 48213", Intent::Fallback, "m4", 6_000),
            // Names no message: answers everything waiting, timed from the oldest.
            turn(Who::Agent, "from a person", None, None, 9_000),
            // A follow-up to a continuation: nothing waits for it.
            turn(Who::System, "conversation continued", None, Some("task-1"), 10_000),
            turn(Who::Agent, "Anything else?", None, Some("reply:task-1"), 10_100),
        ];
        let a = analyze(&turns);
        assert_eq!((a.customer_messages, a.agent_replies, a.system_events), (4, 4, 1));
        assert_eq!(a.first_reply_ms, Some(1_500), "from m1 to the first reply after it");
        // 500 (m2) and 4 000 (m3 to the person's reply)
        assert_eq!((a.avg_reply_ms, a.max_reply_ms), (Some(2_250), Some(4_000)));
    }

    #[test]
    fn a_reply_stamped_before_its_message_counts_zero() {
        let a = analyze(&[customer("hola", Intent::Greeting, "m1", 5_000), reply("m1", 4_000)]);
        assert_eq!((a.first_reply_ms, a.avg_reply_ms, a.max_reply_ms), (Some(0), Some(0), Some(0)));
    }

    #[test]
    fn an_empty_or_unanswered_conversation() {
        let a = analyze(&[]);
        assert_eq!((a.turns, a.customer_messages, a.first_reply_ms, a.avg_reply_ms), (0, 0, None, None));
        assert_eq!((a.language, a.sentiment.label, a.sentiment.score), (None, SentimentLabel::Neutral, 0.0));

        let a = analyze(&[customer("this is terrible", Intent::Complaint, "m1", 0)]);
        assert_eq!((a.first_reply_ms, a.avg_reply_ms, a.max_reply_ms), (None, None, None));
        assert_eq!(a.sentiment, Sentiment { score: -1.0, label: SentimentLabel::Negative });
    }

    #[test]
    fn the_language_is_the_customers_majority() {
        let es = analyze(&[
            customer("Hola, buenos días", Intent::Greeting, "m1", 0),
            customer("ok", Intent::Fallback, "m2", 1),
            customer("¿cuánto cuesta?", Intent::Pricing, "m3", 2),
        ]);
        assert_eq!(es.language, Some(Language::Es));
        let tie = analyze(&[customer("hola", Intent::Greeting, "m1", 0), customer("hello", Intent::Greeting, "m2", 1)]);
        assert_eq!(tie.language, Some(Language::En));
    }

    #[test]
    fn sentiment_in_both_languages_with_negation() {
        let cases = [
            ("great service, thank you", 1.0),
            ("the box arrived broken, terrible", -1.0),
            ("where is my order", 0.0),
            ("good morning", 0.0),
            ("not good", -1.0),
            ("it's not very good", -1.0),
            ("I don't hate it", 1.0),
            ("no problem", 1.0),
            ("good but slow", 0.0),
            ("great, great, but late", 1.0 / 3.0),
            ("¡Excelente atención, gracias!", 1.0),
            ("el pedido llegó roto, pésimo", -1.0),
            ("no es malo", 1.0),
            ("nada mal", 1.0),
            ("no es nada malo", 1.0),
        ];
        for (text, want) in cases {
            assert!((message_sentiment(text) - want).abs() < 1e-9, "{text}: {} != {want}", message_sentiment(text));
        }
    }

    #[test]
    fn labels_need_a_clear_lean() {
        assert_eq!(Sentiment::from_score(0.19).label, SentimentLabel::Neutral);
        assert_eq!(Sentiment::from_score(-0.19).label, SentimentLabel::Neutral);
        assert_eq!(Sentiment::from_score(0.2).label, SentimentLabel::Positive);
        assert_eq!(Sentiment::from_score(-0.5).label, SentimentLabel::Negative);
        assert_eq!(Sentiment::from_score(-1.0 / 3.0).score, -0.333);
    }

    #[test]
    fn the_stored_record_is_flat_and_reads_back() {
        let record = StoredAnalytics {
            conversation_id: "messenger:P:U".into(),
            handed_off: true,
            computed_at: T,
            analytics: analyze(&[customer("hi", Intent::Greeting, "m1", 0), reply("m1", 700)]),
        };
        let v = serde_json::to_value(&record).unwrap();
        assert_eq!(v["conversation_id"], "messenger:P:U");
        assert_eq!(v["handed_off"], true);
        assert_eq!(v["first_reply_ms"], 700);
        assert_eq!(v["intents"], json!({"greeting": 1}));
        assert_eq!(v["language"], "en");
        assert_eq!(v["sentiment"], json!({"score": 0.0, "label": "neutral"}));
        assert_eq!(serde_json::from_value::<StoredAnalytics>(v).unwrap(), record);
    }
}

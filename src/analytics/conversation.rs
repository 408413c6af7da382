//! Per-conversation figures: counts, reply latencies, intents, language and sentiment, worked out
//! from a conversation's turns ([`analyze`], pure) and kept beside it (`conv:<id>:analytics`, for
//! the conversation's retention).
//!
//! `analytics.conversation` brings one conversation's figures up to date. Producers call
//! [`request`] after each reply, and a burst of replies costs one run:
//!
//! - `request` sets the flag `conv:<id>:analytics:queued` with `SET NX` (its value: when the burst
//!   began) and queues a run only when it set the flag.
//! - A run takes the flag away first (`GETDEL`), so a reply recorded from then on queues a run of
//!   its own, and one recorded before is in the turns the run reads: every reply is followed by a
//!   run that sees it.
//! - While the conversation is busy (updated less than [`QUIET`] ago) the run waits
//!   (`Outcome::Later`) as the burst's one queued run, and puts the flag back with `SET NX` first.
//!   When that finds the flag set, a reply since the `GETDEL` has queued a newer run, which covers
//!   all this one would; this one ends. So a burst never has two runs queued, and a conversation
//!   that never goes quiet is analyzed anyway once its burst is [`LONGEST_WAIT`] old.
//!
//! `analytics.batch_conversations` does the same for many conversations, those given or all found
//! by `SCAN`, reporting progress and stopping early when asked.
//!
//! Whether the conversation is with a person is not in its turns: the stored figures take it from
//! the conversation's summary.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::conversation::responder::{Intent, Language, detect_language};
use crate::conversation::store::{Store, StoredTurn, Summary, Who};
use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext, TaskSpec, now_ms};

pub const CONVERSATION: &str = "analytics.conversation";
pub const BATCH: &str = "analytics.batch_conversations";

/// How long a conversation must have been still before its figures are worked out: the replies
/// of one burst come closer together than this. It also sets how often the one queued run of a
/// busy conversation looks again (at most once per `QUIET`): at 2 s, 1 000 conversations each
/// writing every second kept ~660 analytics runs a second cycling and doubled the reply p99.
pub const QUIET: Duration = Duration::from_secs(5);

/// The longest a run waits for quiet, counted from the burst's first request.
pub const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Lifetime of the queued flag: longer than a run usually waits in its lane, short enough that a
/// run lost with its flag set (cancelled by an operator) holds back later requests only briefly.
const FLAG_TTL: Duration = Duration::from_secs(5 * 60);

/// Turns read per conversation: the figures cover at most the last this many.
pub const MAX_TURNS: usize = 1000;

/// Conversations a batch takes when its payload sets no limit.
pub const DEFAULT_BATCH_LIMIT: usize = 10_000;

/// Conversations a batch analyzes at once; fewer in batches under 5 000, so that progress moves
/// by at most 1 % at a time.
const BATCH_CHUNK: usize = 50;

/// A conversation's figures, from its turns alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    /// The average of the customer messages' scores, each in [-1, 1]; 3 decimals.
    pub score: f64,
    pub label: SentimentLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    Negative,
    Neutral,
    Positive,
}

/// The record kept under `conv:<id>:analytics` and shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnalytics {
    pub conversation_id: String,
    /// From the conversation's summary at the time of the run.
    pub handed_off: bool,
    /// ms since the epoch.
    pub computed_at: u64,
    #[serde(flatten)]
    pub analytics: ConversationAnalytics,
}

// ---------------------------------------------------------------------------------------------
// The figures
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

pub fn register(r: &mut Registry) {
    r.register(CONVERSATION, Lane::Analytics, |ctx| async move { run_conversation(ctx).await });
    r.register(BATCH, Lane::Analytics, |ctx| async move { run_batch(ctx).await });
}

fn analytics_key(engine: &Engine, conversation_id: &str) -> String {
    engine.keys().conversation_analytics(conversation_id)
}

fn queued_key(engine: &Engine, conversation_id: &str) -> String {
    engine.keys().conversation_analytics_queued(conversation_id)
}

/// Ask for a conversation's figures to be brought up to date; call it after each reply. Queues
/// an `analytics.conversation` run unless one is already queued for this burst: the new run's
/// task id, or `None`.
pub async fn request(engine: &Engine, conversation_id: &str) -> Result<Option<String>, EngineError> {
    let flag = queued_key(engine, conversation_id);
    let mut con = engine.conn();
    let set: redis::Value = redis::cmd("SET")
        .arg(&flag)
        .arg(now_ms())
        .arg("NX")
        .arg("PX")
        .arg(FLAG_TTL.as_millis() as u64)
        .query_async(&mut con)
        .await?;
    if set == redis::Value::Nil {
        return Ok(None);
    }
    let spec = TaskSpec::new(CONVERSATION, json!({"conversation_id": conversation_id}));
    match engine.enqueue(spec).await {
        Ok(task_id) => Ok(Some(task_id)),
        Err(e) => {
            // No run is queued: the flag must not hold back the next request.
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&flag).query_async(&mut con).await;
            Err(e)
        }
    }
}

/// The stored figures of a conversation, as JSON; `None` before its first run or after expiry.
pub async fn load(engine: &Engine, conversation_id: &str) -> Result<Option<Value>, EngineError> {
    let mut con = engine.conn();
    let raw: Option<String> =
        redis::cmd("GET").arg(analytics_key(engine, conversation_id)).query_async(&mut con).await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Analyze the conversation's last [`MAX_TURNS`] turns and store the figures.
async fn analyze_and_store(engine: &Engine, store: &Store, summary: &Summary) -> Result<StoredAnalytics, EngineError> {
    let turns = store.history(&summary.conversation_id, MAX_TURNS).await?;
    let record = StoredAnalytics {
        conversation_id: summary.conversation_id.clone(),
        handed_off: summary.handed_off,
        computed_at: now_ms(),
        analytics: analyze(&turns),
    };
    let json = serde_json::to_string(&record).map_err(|e| EngineError::BadInput(e.to_string()))?;
    let retention = engine.config().conversation_retention.as_millis().max(1) as u64;
    let mut con = engine.conn();
    let _: () = redis::cmd("SET")
        .arg(analytics_key(engine, &record.conversation_id))
        .arg(json)
        .arg("PX")
        .arg(retention)
        .query_async(&mut con)
        .await?;
    Ok(record)
}

async fn run_conversation(ctx: TaskContext) -> Outcome {
    let Some(id) = ctx.payload.get("conversation_id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Outcome::fail("the payload names no conversation_id");
    };
    let engine = ctx.engine();
    let flag = queued_key(engine, id);
    let mut con = engine.conn();
    let began: Option<String> = match redis::cmd("GETDEL").arg(&flag).query_async(&mut con).await {
        Ok(v) => v,
        Err(e) => return Outcome::retry(format!("could not take the queued flag: {e}")),
    };
    let store = Store::new(engine.clone());
    let summary = match store.summary(id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Outcome::Done(json!({
                "conversation_id": id, "note": "no such conversation: it expired or was never recorded",
            }));
        }
        Err(e) => return Outcome::retry(format!("could not read the conversation: {e}")),
    };
    let now = now_ms();
    let began = began.and_then(|v| v.parse::<u64>().ok()).unwrap_or(now);
    let still = Duration::from_millis(now.saturating_sub(summary.updated_at));
    let waited = Duration::from_millis(now.saturating_sub(began));
    if still < QUIET && waited < LONGEST_WAIT {
        let kept: redis::RedisResult<redis::Value> = redis::cmd("SET")
            .arg(&flag)
            .arg(began)
            .arg("NX")
            .arg("PX")
            .arg(FLAG_TTL.as_millis() as u64)
            .query_async(&mut con)
            .await;
        return match kept {
            Ok(redis::Value::Nil) => Outcome::Done(json!({
                "conversation_id": id, "note": "a reply since queued a newer run, which covers this one",
            })),
            Ok(_) => Outcome::Later(QUIET - still),
            Err(e) => Outcome::retry(format!("could not keep the queued flag: {e}")),
        };
    }
    match analyze_and_store(engine, &store, &summary).await {
        // The figures are the conversation's analytics (`load`, the dashboard's conversation
        // page); the result says which run made them, not the figures a second time.
        Ok(record) => Outcome::Done(json!({
            "conversation_id": record.conversation_id,
            "computed_at": record.computed_at,
            "turns": record.analytics.turns,
        })),
        Err(e) => Outcome::retry(format!("could not analyze the conversation: {e}")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchPayload {
    #[serde(default)]
    conversation_ids: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<usize>,
}

/// What a batch did, as its result.
#[derive(Debug, Default, Serialize)]
struct BatchSummary {
    analyzed: u64,
    /// Conversations named or found that no longer exist.
    missing: u64,
    customer_messages: u64,
    agent_replies: u64,
    system_events: u64,
    handed_off: u64,
    /// Over the conversations with a first reply.
    avg_first_reply_ms: Option<u64>,
    sentiment: SentimentCounts,
    /// Why the batch ended before the last conversation, if it did.
    stopped: Option<&'static str>,
    #[serde(skip)]
    first_reply_sum: u64,
    #[serde(skip)]
    first_replies: u64,
}

#[derive(Debug, Default, Serialize)]
struct SentimentCounts {
    negative: u64,
    neutral: u64,
    positive: u64,
}

impl BatchSummary {
    fn add(&mut self, r: &StoredAnalytics) {
        let a = &r.analytics;
        self.analyzed += 1;
        self.customer_messages += a.customer_messages;
        self.agent_replies += a.agent_replies;
        self.system_events += a.system_events;
        self.handed_off += u64::from(r.handed_off);
        if let Some(ms) = a.first_reply_ms {
            self.first_reply_sum += ms;
            self.first_replies += 1;
            self.avg_first_reply_ms = Some((self.first_reply_sum + self.first_replies / 2) / self.first_replies);
        }
        match a.sentiment.label {
            SentimentLabel::Negative => self.sentiment.negative += 1,
            SentimentLabel::Neutral => self.sentiment.neutral += 1,
            SentimentLabel::Positive => self.sentiment.positive += 1,
        }
    }
}

async fn run_batch(ctx: TaskContext) -> Outcome {
    let payload: BatchPayload = match serde_json::from_value::<Option<BatchPayload>>(ctx.payload.clone()) {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return Outcome::fail(format!("not a batch of conversations: {e}")),
    };
    let engine = ctx.engine();
    let limit = payload.limit.unwrap_or(DEFAULT_BATCH_LIMIT);
    let ids = match payload.conversation_ids {
        Some(ids) => {
            let mut seen = HashSet::new();
            ids.into_iter().filter(|id| seen.insert(id.clone())).take(limit).collect()
        }
        None => match find_conversations(engine, limit).await {
            Ok(ids) => ids,
            Err(e) => return Outcome::retry(format!("could not list the conversations: {e}")),
        },
    };
    let store = Store::new(engine.clone());
    let mut summary = BatchSummary::default();
    let total = ids.len();
    let (mut done, mut reported) = (0usize, 0u8);
    for chunk in ids.chunks((total / 100).clamp(1, BATCH_CHUNK)) {
        if ctx.stop_reason() == Some(crate::engine::StopReason::Shutdown) {
            // The process is going away: run the batch again elsewhere rather than end it half done.
            return Outcome::Later(std::time::Duration::ZERO);
        }
        if ctx.is_stopped() {
            summary.stopped = Some(ctx.stop_reason().map_or("stopped", |r| r.as_str()));
            break;
        }
        let results = join_all(chunk.iter().map(|id| analyze_one(engine, &store, id))).await;
        for (id, result) in chunk.iter().zip(results) {
            match result {
                Ok(Some(record)) => summary.add(&record),
                Ok(None) => summary.missing += 1,
                Err(e) => return Outcome::retry(format!("could not analyze conversation {id}: {e}")),
            }
        }
        done += chunk.len();
        let percent = (done * 100 / total) as u8;
        if percent > reported {
            ctx.progress(percent).await;
            reported = percent;
        }
    }
    Outcome::Done(serde_json::to_value(&summary).unwrap_or_default())
}

/// Analyze and store one conversation; `None` when it does not exist.
async fn analyze_one(engine: &Engine, store: &Store, id: &str) -> Result<Option<StoredAnalytics>, EngineError> {
    match store.summary(id).await? {
        Some(summary) => analyze_and_store(engine, store, &summary).await.map(Some),
        None => Ok(None),
    }
}

/// Up to `limit` conversation ids, from the summary hashes under `conv:`. Only summaries are
/// hashes there (turn logs are lists, figures and flags strings), so `TYPE hash` leaves out the
/// rest whatever the conversation ids look like.
async fn find_conversations(engine: &Engine, limit: usize) -> Result<Vec<String>, EngineError> {
    let prefix = engine.keys().conversation("");
    let mut con = engine.conn();
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut scan = crate::redis::Scan::prefixed(&prefix).of_type("hash");
    while ids.len() < limit
        && let Some(keys) = scan.next(&mut con).await?
    {
        for key in keys {
            if let Some(id) = key.strip_prefix(&prefix)
                && ids.len() < limit
                && seen.insert(id.to_string())
            {
                ids.push(id.to_string());
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
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

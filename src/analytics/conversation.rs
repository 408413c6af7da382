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

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use super::figures::{
    ConversationAnalytics, Sentiment, SentimentLabel, StoredAnalytics, analyze, message_sentiment,
};
use super::store as analytics_store;
use crate::conversation::store::{Store, Summary};
use crate::engine::{Engine, EngineError, Lane, Outcome, Payload, Registry, TaskContext, TaskSpec, now_ms};

pub const CONVERSATION: &str = "analytics.conversation";
pub const BATCH: &str = "analytics.batch_conversations";

/// How long a conversation must have been still before its figures are worked out: the replies
/// of one burst come closer together than this. It also sets how often the one queued run of a
/// busy conversation looks again (at most once per `QUIET`): at 2 s, 1 000 conversations each
/// writing every second kept ~660 analytics runs a second cycling and doubled the reply p99.
pub const QUIET: Duration = Duration::from_secs(5);

/// The longest a run waits for quiet, counted from the burst's first request.
pub const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Turns read per conversation: the figures cover at most the last this many.
pub const MAX_TURNS: usize = 1000;

/// Conversations a batch takes when its payload sets no limit.
pub const DEFAULT_BATCH_LIMIT: usize = 10_000;

/// Conversations a batch analyzes at once; fewer in batches under 5 000, so that progress moves
/// by at most 1 % at a time.
const BATCH_CHUNK: usize = 50;

pub fn register(r: &mut Registry) {
    r.register_typed(CONVERSATION, Lane::Analytics, |ctx, p: ConversationRun| async move {
        run_conversation(ctx, p.conversation_id).await
    });
    r.register_typed(BATCH, Lane::Analytics, |ctx, p: Option<BatchPayload>| async move {
        run_batch(ctx, p.unwrap_or_default()).await
    });
}

/// Ask for a conversation's figures to be brought up to date; call it after each reply. Queues
/// an `analytics.conversation` run unless one is already queued for this burst: the new run's
/// task id, or `None`.
pub async fn request(engine: &Engine, conversation_id: &str) -> Result<Option<String>, EngineError> {
    if !analytics_store::set_queued(engine, conversation_id, now_ms()).await? {
        return Ok(None);
    }
    let spec = TaskSpec::new(CONVERSATION, json!(ConversationRun { conversation_id: conversation_id.to_string() }));
    match engine.enqueue(spec).await {
        Ok(task_id) => Ok(Some(task_id)),
        Err(e) => {
            // No run is queued: the flag must not hold back the next request.
            let _ = analytics_store::clear_queued(engine, conversation_id).await;
            Err(e)
        }
    }
}

/// The stored figures of a conversation, as JSON; `None` before its first run or after expiry.
pub async fn load(engine: &Engine, conversation_id: &str) -> Result<Option<Value>, EngineError> {
    analytics_store::figures(engine, conversation_id).await
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
    analytics_store::save_figures(engine, &record).await?;
    Ok(record)
}

/// The payload of an `analytics.conversation` run.
#[derive(Debug, Serialize, Deserialize)]
struct ConversationRun {
    conversation_id: String,
}

impl Payload for ConversationRun {
    const WHAT: &'static str = "a conversation to analyze (`{\"conversation_id\": …}`)";
}

async fn run_conversation(ctx: TaskContext, id: String) -> Outcome {
    if id.is_empty() {
        return Outcome::fail("the payload names no conversation_id");
    }
    let id = id.as_str();
    let engine = ctx.engine();
    let began = match analytics_store::take_queued(engine, id).await {
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
    let began = began.unwrap_or(now);
    let still = Duration::from_millis(now.saturating_sub(summary.updated_at));
    let waited = Duration::from_millis(now.saturating_sub(began));
    if still < QUIET && waited < LONGEST_WAIT {
        return match analytics_store::set_queued(engine, id, began).await {
            Ok(false) => Outcome::Done(json!({
                "conversation_id": id, "note": "a reply since queued a newer run, which covers this one",
            })),
            Ok(true) => Outcome::Later(QUIET - still),
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

/// A batch's payload may be `null`: every conversation found, up to the default limit.
impl Payload for Option<BatchPayload> {
    const WHAT: &'static str = "a batch of conversations";
}

async fn run_batch(ctx: TaskContext, payload: BatchPayload) -> Outcome {
    let engine = ctx.engine();
    let limit = payload.limit.unwrap_or(DEFAULT_BATCH_LIMIT);
    let ids = match payload.conversation_ids {
        Some(ids) => {
            let mut seen = HashSet::new();
            ids.into_iter().filter(|id| seen.insert(id.clone())).take(limit).collect()
        }
        None => match analytics_store::find_conversations(engine, limit).await {
            Ok(ids) => ids,
            Err(e) => return Outcome::retry(format!("could not list the conversations: {e}")),
        },
    };
    let store = Store::new(engine.clone());
    let mut summary = BatchSummary::default();
    let total = ids.len();
    let (mut done, mut reported) = (0usize, 0u8);
    for chunk in ids.chunks((total / 100).clamp(1, BATCH_CHUNK)) {
        if ctx.stop_reason().is_some_and(|r| r.hands_back()) {
            // The process is going away or may lose the task: run the batch again elsewhere
            // rather than end it half done.
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

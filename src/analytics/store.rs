//! What analytics keeps in Redis, and what it reads of the engine's keys.
//!
//! Its own keys: a conversation's figures (`conv:<id>:analytics`, JSON, for the conversation's
//! retention) and the flag of a run of them being queued (`conv:<id>:analytics:queued`, holding
//! when the burst began), and the performance reports (`reports`, newest first). It reads the
//! per-minute figures the workers flush (`stats:<minute>`) and walks the conversations' summary
//! hashes; the cleanup trims the lanes and gives expiries to records that lack one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::redis::Conn;
use serde_json::Value;

use super::figures::StoredAnalytics;
use crate::engine::stats::KindStats;
use crate::engine::{Engine, EngineError, Lane, TaskState};
use crate::redis::{GROUP, Scan};

/// Lifetime of the queued flag: longer than a run usually waits in its lane, short enough that a
/// run lost with its flag set (cancelled by an operator) holds back later requests only briefly.
const FLAG_TTL: Duration = Duration::from_secs(5 * 60);

/// Reports kept.
const KEEP_REPORTS: isize = 100;

// ---------------------------------------------------------------------------------------------
// Conversation figures
// ---------------------------------------------------------------------------------------------

/// Set a conversation's queued flag, holding when its burst began, unless it is set already:
/// `true` when this call set it.
pub(super) async fn set_queued(
    engine: &Engine,
    conversation_id: &str,
    burst_began_ms: u64,
) -> Result<bool, EngineError> {
    let mut con = engine.conn();
    let set: redis::Value = redis::cmd("SET")
        .arg(engine.conversation_part(conversation_id).conversation_analytics_queued(conversation_id))
        .arg(burst_began_ms)
        .arg("NX")
        .arg("PX")
        .arg(FLAG_TTL.as_millis() as u64)
        .query_async(&mut con)
        .await?;
    Ok(set != redis::Value::Nil)
}

/// Take a conversation's queued flag away: when its burst began, if the flag was set (and holds
/// a time).
pub(super) async fn take_queued(engine: &Engine, conversation_id: &str) -> Result<Option<u64>, EngineError> {
    let mut con = engine.conn();
    let began: Option<String> = redis::cmd("GETDEL")
        .arg(engine.conversation_part(conversation_id).conversation_analytics_queued(conversation_id))
        .query_async(&mut con)
        .await?;
    Ok(began.and_then(|v| v.parse().ok()))
}

/// Remove a conversation's queued flag.
pub(super) async fn clear_queued(engine: &Engine, conversation_id: &str) -> Result<(), EngineError> {
    let mut con = engine.conn();
    let _: () = redis::cmd("DEL")
        .arg(engine.conversation_part(conversation_id).conversation_analytics_queued(conversation_id))
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// Keep a conversation's figures for the conversation's retention.
pub(super) async fn save_figures(engine: &Engine, record: &StoredAnalytics) -> Result<(), EngineError> {
    let json = serde_json::to_string(record).map_err(|e| EngineError::BadInput(e.to_string()))?;
    let retention = engine.config().conversation_retention.as_millis().max(1) as u64;
    let mut con = engine.conn();
    let _: () = redis::cmd("SET")
        .arg(engine.conversation_part(&record.conversation_id).conversation_analytics(&record.conversation_id))
        .arg(json)
        .arg("PX")
        .arg(retention)
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// A conversation's stored figures, as JSON; `None` before its first run, after expiry, or when
/// what is stored is not JSON.
pub(super) async fn figures(engine: &Engine, conversation_id: &str) -> Result<Option<Value>, EngineError> {
    let mut con = engine.conn();
    let raw: Option<String> = redis::cmd("GET")
        .arg(engine.conversation_part(conversation_id).conversation_analytics(conversation_id))
        .query_async(&mut con)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Up to `limit` conversation ids, from the summary hashes under `conv:`. Only summaries are
/// hashes there (turn logs are lists, figures and flags strings), so `TYPE hash` leaves out the
/// rest whatever the conversation ids look like.
pub(super) async fn find_conversations(engine: &Engine, limit: usize) -> Result<Vec<String>, EngineError> {
    let con = engine.conn();
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for part in 0..engine.partitions() {
        let prefix = engine.part(part).conversation("");
        let mut scan = Scan::prefixed(&prefix).of_type("hash");
        while ids.len() < limit
            && let Some(keys) = scan.next(&con).await?
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
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------------
// Performance reports
// ---------------------------------------------------------------------------------------------

/// One minute's figures of each (lane, kind), merged over the workers.
pub(super) type MinuteFigures = BTreeMap<(String, String), KindStats>;

/// Each minute from `from_minute` to `to_minute` (minutes since the epoch, oldest first), with
/// its figures.
pub(super) async fn minute_figures(
    engine: &Engine,
    from_minute: u64,
    to_minute: u64,
) -> Result<Vec<(u64, MinuteFigures)>, EngineError> {
    let mut con = engine.conn();
    let mut pipe = redis::pipe();
    for m in from_minute..=to_minute {
        pipe.cmd("HGETALL").arg(engine.keys().stats(m));
    }
    let data: Vec<BTreeMap<String, String>> = pipe.query_async(&mut con).await?;
    Ok((from_minute..=to_minute)
        .zip(data)
        .map(|(m, fields)| {
            let mut kinds = MinuteFigures::new();
            for (field, json) in fields {
                // `worker|lane|kind`
                let mut parts = field.splitn(3, '|');
                let (Some(_), Some(lane), Some(kind)) = (parts.next(), parts.next(), parts.next()) else { continue };
                if let Ok(s) = serde_json::from_str::<KindStats>(&json) {
                    kinds.entry((lane.to_string(), kind.to_string())).or_default().merge(&s);
                }
            }
            (m, kinds)
        })
        .collect())
}

/// Keep a report (its JSON) as the newest, dropping the oldest beyond the last
/// [`KEEP_REPORTS`].
pub(super) async fn push_report(engine: &Engine, report_json: &str) -> Result<(), EngineError> {
    let mut con = engine.conn();
    let key = engine.keys().reports();
    let _: () = redis::pipe()
        .cmd("LPUSH")
        .arg(&key)
        .arg(report_json)
        .ignore()
        .cmd("LTRIM")
        .arg(&key)
        .arg(0)
        .arg(KEEP_REPORTS - 1)
        .ignore()
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// The newest report, if any (and if it is JSON).
pub(super) async fn latest_report(engine: &Engine) -> Result<Option<Value>, EngineError> {
    let mut con = engine.conn();
    let r: Option<String> = redis::cmd("LINDEX").arg(engine.keys().reports()).arg(0).query_async(&mut con).await?;
    Ok(r.and_then(|r| serde_json::from_str(&r).ok()))
}

// ---------------------------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------------------------

/// Remove acknowledged entries from a lane (`trim.lua`), looking at no more than `pending` of
/// its pending entries: how many were removed, and whether there may be more to remove.
pub(super) async fn trim_lane(
    engine: &Engine,
    part: usize,
    lane: Lane,
    pending: u64,
) -> Result<(u64, bool), EngineError> {
    let mut con = engine.conn();
    let (n, more): (u64, u64) =
        engine.scripts().trim.key(engine.part(part).lane(lane)).arg(GROUP).arg(pending).invoke_async(&mut con).await?;
    Ok((n, more != 0))
}

/// What one step of an [`ExpiryWalk`] did.
#[derive(Debug, Default)]
pub(super) struct ExpiryStep {
    /// Keys looked at.
    pub scanned: u64,
    /// Finished task records given an expiry.
    pub records: u64,
    /// Conversation keys (summary, turns, figures, flags) given an expiry.
    pub conversations: u64,
}

/// A walk over every key of the deployment that gives the configured retention to finished task
/// records and conversation keys without an expiry, a SCAN step at a time, partition after
/// partition (each on the node that holds it).
pub(super) struct ExpiryWalk {
    con: Conn,
    /// The walks left, the current one last: each partition's scan with its record and
    /// conversation key prefixes.
    walks: Vec<(Scan, String, String)>,
    task_ttl: u64,
    conversation_ttl: u64,
}

impl ExpiryWalk {
    /// A walk from the first key, with the retentions configured now.
    pub(super) fn new(engine: &Engine) -> ExpiryWalk {
        let c = engine.config();
        let walks = (0..engine.partitions())
            .rev()
            .map(|p| {
                let keys = engine.part(p);
                (Scan::prefixed(keys.root()), keys.task(""), keys.conversation(""))
            })
            .collect();
        ExpiryWalk {
            con: engine.conn(),
            walks,
            task_ttl: c.task_retention.as_millis() as u64,
            conversation_ttl: c.conversation_retention.as_millis() as u64,
        }
    }

    /// The next step, or `None` once every key was looked at.
    pub(super) async fn step(&mut self) -> Result<Option<ExpiryStep>, EngineError> {
        let con = &mut self.con;
        let keys = loop {
            let Some((scan, _, _)) = self.walks.last_mut() else { return Ok(None) };
            match scan.next(con).await? {
                Some(keys) => break keys,
                None => {
                    self.walks.pop();
                }
            }
        };
        let (_, tasks, conversations) = self.walks.last().expect("the walk that gave these keys");
        let (tasks, conversations) = (tasks.clone(), conversations.clone());
        let mut done = ExpiryStep { scanned: keys.len() as u64, ..ExpiryStep::default() };
        let candidates: Vec<&String> =
            keys.iter().filter(|k| k.starts_with(&tasks) || k.starts_with(&conversations)).collect();
        if candidates.is_empty() {
            return Ok(Some(done));
        }
        let mut pipe = redis::pipe();
        for k in &candidates {
            pipe.cmd("PTTL").arg(*k);
        }
        let ttls: Vec<i64> = pipe.query_async(con).await?;
        for (k, ttl) in candidates.into_iter().zip(ttls) {
            if ttl != -1 {
                continue;
            }
            if k.starts_with(&conversations) {
                let _: i64 = redis::cmd("PEXPIRE").arg(k).arg(self.conversation_ttl).query_async(con).await?;
                done.conversations += 1;
            } else {
                // Only finished records expire; a dead letter's stays while it is in the DLQ.
                let state: Option<String> = redis::cmd("HGET").arg(k).arg("state").query_async(con).await?;
                if matches!(state.as_deref().and_then(TaskState::parse), Some(TaskState::Success | TaskState::Revoked))
                {
                    let _: i64 = redis::cmd("PEXPIRE").arg(k).arg(self.task_ttl).query_async(con).await?;
                    done.records += 1;
                }
            }
        }
        Ok(Some(done))
    }
}

//! `maintenance.cleanup`: remove what is no longer needed, and say what was removed.
//!
//! Acknowledged stream entries are trimmed (never one that is pending or not yet delivered —
//! `trim.lua`), including those stuck behind an entry a slow worker still holds. Finished task
//! records and conversations expire by themselves; cleanup gives an expiry to any that lack one
//! (written by hand, or before a retention was configured) so nothing lingers forever. Records
//! of dead letters are kept for as long as they are in the DLQ.

use std::collections::BTreeMap;

use serde_json::json;

use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext};
use crate::redis::GROUP;

pub const KIND: &str = "maintenance.cleanup";

/// Pending entries looked at per trim call.
const TRIM_BATCH: u64 = 1000;

pub fn register(r: &mut Registry) {
    r.register(KIND, Lane::Analytics, |ctx| async move { run(ctx).await });
}

async fn run(ctx: TaskContext) -> Outcome {
    match cleanup(ctx.engine(), &ctx).await {
        Ok(report) => Outcome::Done(report),
        Err(e) => Outcome::retry(format!("cleanup stopped: {e}")),
    }
}

/// Trim every lane, then give expiries to records that lack one.
pub async fn cleanup(engine: &Engine, ctx: &TaskContext) -> Result<serde_json::Value, EngineError> {
    let mut con = engine.conn();
    let mut trimmed = BTreeMap::new();
    for lane in Lane::ALL {
        let mut total = 0u64;
        loop {
            let (n, more): (u64, u64) = engine
                .scripts()
                .trim
                .key(engine.keys().lane(lane))
                .arg(GROUP)
                .arg(TRIM_BATCH)
                .invoke_async(&mut con)
                .await?;
            total += n;
            if more == 0 || n == 0 || ctx.is_stopped() {
                break;
            }
        }
        trimmed.insert(lane.as_str(), total);
    }
    ctx.progress(30).await;

    let c = engine.config();
    let task_ttl = c.task_retention.as_millis() as u64;
    let conv_ttl = c.conversation_retention.as_millis() as u64;
    let root = engine.keys().root().to_string();
    let (mut records, mut conversations, mut scanned) = (0u64, 0u64, 0u64);
    let mut scan = crate::redis::Scan::prefixed(&root);
    while let Some(keys) = scan.next(&mut con).await? {
        scanned += keys.len() as u64;
        let candidates: Vec<&String> = keys
            .iter()
            .filter(|k| k.strip_prefix(&root).is_some_and(|r| r.starts_with("task:") || r.starts_with("conv:")))
            .collect();
        if !candidates.is_empty() {
            let mut pipe = redis::pipe();
            for k in &candidates {
                pipe.cmd("PTTL").arg(*k);
            }
            let ttls: Vec<i64> = pipe.query_async(&mut con).await?;
            for (k, ttl) in candidates.into_iter().zip(ttls) {
                if ttl != -1 {
                    continue;
                }
                if k[root.len()..].starts_with("conv:") {
                    let _: i64 = redis::cmd("PEXPIRE").arg(k).arg(conv_ttl).query_async(&mut con).await?;
                    conversations += 1;
                } else {
                    // Only finished records expire; a dead letter's stays while it is in the DLQ.
                    let state: Option<String> = redis::cmd("HGET").arg(k).arg("state").query_async(&mut con).await?;
                    if matches!(state.as_deref(), Some("SUCCESS" | "REVOKED")) {
                        let _: i64 = redis::cmd("PEXPIRE").arg(k).arg(task_ttl).query_async(&mut con).await?;
                        records += 1;
                    }
                }
            }
        }
        if ctx.is_stopped() {
            break;
        }
    }
    ctx.progress(100).await;
    tracing::info!(?trimmed, records, conversations, "cleanup done");
    Ok(json!({
        "trimmed_entries": trimmed,
        "records_given_expiry": records,
        "conversations_given_expiry": conversations,
        "keys_scanned": scanned,
    }))
}

//! `maintenance.cleanup`: remove what is no longer needed, and say what was removed.
//!
//! Acknowledged stream entries are trimmed (never one that is pending or not yet delivered —
//! `trim.lua`), including those stuck behind an entry a slow worker still holds. Finished task
//! records and conversations expire by themselves; cleanup gives an expiry to any that lack one
//! (written by hand, or before a retention was configured) so nothing lingers forever. Records
//! of dead letters are kept for as long as they are in the DLQ.

use std::collections::BTreeMap;

use serde_json::json;

use super::store;
use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext};

pub(crate) const KIND: &str = "maintenance.cleanup";

/// Pending entries looked at per trim call.
const TRIM_BATCH: u64 = 1000;

pub(crate) fn register(r: &mut Registry) {
    r.register(KIND, Lane::Analytics, |ctx| async move { run(ctx).await });
}

async fn run(ctx: TaskContext) -> Outcome {
    match cleanup(ctx.engine(), &ctx).await {
        Ok(report) => Outcome::Done(report),
        Err(e) => Outcome::retry(format!("cleanup stopped: {e}")),
    }
}

/// Trim every lane, then give expiries to records that lack one.
pub(crate) async fn cleanup(engine: &Engine, ctx: &TaskContext) -> Result<serde_json::Value, EngineError> {
    let mut trimmed = BTreeMap::new();
    for lane in Lane::ALL {
        let mut total = 0u64;
        for part in 0..engine.partitions() {
            loop {
                let (n, more) = store::trim_lane(engine, part, lane, TRIM_BATCH).await?;
                total += n;
                if !more || n == 0 || ctx.is_stopped() {
                    break;
                }
            }
        }
        trimmed.insert(lane.as_str(), total);
    }
    ctx.progress(30).await;

    let (mut records, mut conversations, mut scanned) = (0u64, 0u64, 0u64);
    let mut walk = store::ExpiryWalk::new(engine);
    while let Some(step) = walk.step().await? {
        scanned += step.scanned;
        records += step.records;
        conversations += step.conversations;
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

//! `analytics.performance_report`: how the deployment has been doing, per lane and kind.
//!
//! Built from the per-minute figures every worker flushes to Redis (`engine::stats`): counts of
//! successes, failures, retries and cancellations, throughput, and queue wait and run time
//! percentiles from the merged histograms; plus the DLQ's depth and growth since the previous
//! report, and the slowest kinds. Reports are kept (the last 100); the newest is served by the
//! API and the dashboard.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::store::{self, MinuteFigures};
use crate::engine::stats::KindStats;
use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext, format_ms, now_ms};

pub const KIND: &str = "analytics.performance_report";

/// Minutes a report covers unless its payload says otherwise.
const DEFAULT_MINUTES: u64 = 5;
pub fn register(r: &mut Registry) {
    r.register(KIND, Lane::Analytics, |ctx| async move { run(ctx).await });
}

async fn run(ctx: TaskContext) -> Outcome {
    let minutes = ctx.payload["minutes"].as_u64().unwrap_or(DEFAULT_MINUTES).clamp(1, 120);
    match build(ctx.engine(), minutes).await {
        Ok(report) => match keep(ctx.engine(), &report).await {
            Ok(()) => Outcome::Done(json!({
                "generated_at": report["generated_at"], "kinds": report["kinds"].as_array().map_or(0, Vec::len),
            })),
            Err(e) => Outcome::retry(format!("could not store the report: {e}")),
        },
        Err(e) => Outcome::retry(format!("could not build the report: {e}")),
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "p50": null, "p95": null, "p99": null, "max": null});
    }
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 1e3 * 1000.0).round() / 1000.0;
    json!({"count": h.len(), "p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99), "max": h.max() as f64 / 1e3})
}

fn figures(s: &KindStats, seconds: f64) -> Value {
    json!({
        "succeeded": s.succeeded,
        "failed": s.failed,
        "retried": s.retried,
        "revoked": s.revoked,
        "throughput_per_s": ((s.succeeded as f64 / seconds) * 1000.0).round() / 1000.0,
        "wait_ms": percentiles(&s.wait_us),
        "run_ms": percentiles(&s.run_us),
    })
}

/// The report over the last `minutes` whole minutes and the current one.
pub async fn build(engine: &Engine, minutes: u64) -> Result<Value, EngineError> {
    let now = now_ms();
    let minutes_data = read_minutes(engine, minutes).await?;
    let from_ms = minutes_data.first().map_or(now, |(m, _)| m * 60_000);
    let mut kinds = MinuteFigures::new();
    for (_, figures) in minutes_data {
        for (key, s) in figures {
            kinds.entry(key).or_default().merge(&s);
        }
    }
    let seconds = ((now - from_ms) as f64 / 1e3).max(1.0);
    let mut lanes: BTreeMap<String, KindStats> = BTreeMap::new();
    let mut per_kind = Vec::new();
    for ((lane, kind), s) in &kinds {
        lanes.entry(lane.clone()).or_default().merge(s);
        let mut v = figures(s, seconds);
        v["lane"] = json!(lane);
        v["kind"] = json!(kind);
        per_kind.push(v);
    }
    let mut slowest: Vec<&Value> = per_kind.iter().filter(|k| k["run_ms"]["p99"].is_number()).collect();
    slowest.sort_by(|a, b| {
        b["run_ms"]["p99"].as_f64().partial_cmp(&a["run_ms"]["p99"].as_f64()).unwrap_or(std::cmp::Ordering::Equal)
    });
    let slowest: Vec<Value> = slowest
        .iter()
        .take(5)
        .map(|k| json!({"lane": k["lane"], "kind": k["kind"], "run_p99_ms": k["run_ms"]["p99"]}))
        .collect();

    let depth = engine.dlq_depth().await?;
    let before = store::latest_report(engine).await?.and_then(|p| p["dlq"]["depth"].as_u64());
    Ok(json!({
        "generated_at": format_ms(now),
        "window": {"from": format_ms(from_ms), "to": format_ms(now), "seconds": seconds},
        "lanes": lanes.iter().map(|(l, s)| (l.clone(), figures(s, seconds))).collect::<serde_json::Map<_, _>>(),
        "kinds": per_kind,
        "slowest_kinds": slowest,
        "dlq": {"depth": depth, "growth_since_last_report": before.map(|b| depth as i64 - b as i64)},
    }))
}

/// Each of the last `minutes` minutes (oldest first, the current one last): every worker's
/// figures of each (lane, kind), merged over the workers.
async fn read_minutes(engine: &Engine, minutes: u64) -> Result<Vec<(u64, MinuteFigures)>, EngineError> {
    let to_minute = now_ms() / 60_000;
    let from_minute = to_minute + 1 - minutes.max(1);
    store::minute_figures(engine, from_minute, to_minute).await
}

/// Each of the last `minutes` minutes (oldest first): every lane's figures, merged over its
/// kinds and every worker.
pub async fn per_minute(engine: &Engine, minutes: u64) -> Result<Vec<(u64, BTreeMap<String, KindStats>)>, EngineError> {
    Ok(read_minutes(engine, minutes)
        .await?
        .into_iter()
        .map(|(m, kinds)| {
            let mut lanes: BTreeMap<String, KindStats> = BTreeMap::new();
            for ((lane, _), s) in kinds {
                lanes.entry(lane).or_default().merge(&s);
            }
            (m, lanes)
        })
        .collect())
}

/// Keep the report as the newest.
async fn keep(engine: &Engine, report: &Value) -> Result<(), EngineError> {
    store::push_report(engine, &report.to_string()).await
}

/// The newest report, if any.
pub async fn latest(engine: &Engine) -> Result<Option<Value>, EngineError> {
    store::latest_report(engine).await
}

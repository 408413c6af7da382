//! `analytics.performance_report`: how the deployment has been doing, per lane and kind.
//!
//! Built from the per-minute figures every worker flushes to Redis (`engine::stats`): counts of
//! successes, failures, retries and cancellations, throughput, and queue wait and run time
//! percentiles from the merged histograms; plus the DLQ's depth and growth since the previous
//! report, and the slowest kinds. Reports are kept (the last 100); the newest is served by the
//! API and the dashboard.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::store::{self, MinuteFigures};
use crate::engine::stats::KindStats;
use crate::engine::{Engine, EngineError, Lane, Outcome, Registry, TaskContext, format_ms, now_ms};

pub(crate) const KIND: &str = "analytics.performance_report";

/// Minutes a report covers unless its payload says otherwise.
const DEFAULT_MINUTES: u64 = 5;

/// Kinds listed as the slowest.
const SLOWEST: usize = 5;

// The report's parts list their fields in alphabetical order: reports were first written as JSON
// maps, which sort their keys, and stored reports and API clients have them in that order.

/// How the deployment has been doing over a window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Report {
    pub dlq: DlqFigures,
    pub generated_at: String,
    /// Each (lane, kind) that ran in the window, by lane then kind.
    pub kinds: Vec<Figures>,
    /// Each lane's figures, merged over its kinds.
    pub lanes: BTreeMap<String, Figures>,
    /// The kinds with the highest p99 run time, slowest first.
    pub slowest_kinds: Vec<SlowKind>,
    pub window: Window,
}

/// The dead letters, and how many more there are than at the previous report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct DlqFigures {
    pub depth: u64,
    /// `None` for the first report (or when the previous one is unreadable).
    pub growth_since_last_report: Option<i64>,
}

/// The time a report covers: from the start of its first minute to when it was made.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Window {
    pub from: String,
    /// At least 1.
    pub seconds: f64,
    pub to: String,
}

/// Outcomes, throughput and times of one lane or one kind.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Figures {
    pub failed: u64,
    /// The kind, in a report's `kinds` (a lane's figures are keyed by the lane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The lane, in a report's `kinds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    pub retried: u64,
    pub revoked: u64,
    pub run_ms: Percentiles,
    pub succeeded: u64,
    pub throughput_per_s: f64,
    /// From enqueue to first start.
    pub wait_ms: Percentiles,
}

/// A histogram's count and percentiles, in ms (3 decimals); `None` without any value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Percentiles {
    pub count: u64,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// One of the slowest kinds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct SlowKind {
    pub kind: String,
    pub lane: String,
    pub run_p99_ms: f64,
}

pub(crate) fn register(r: &mut Registry) {
    r.register(KIND, Lane::Analytics, |ctx| async move { run(ctx).await });
}

async fn run(ctx: TaskContext) -> Outcome {
    let minutes = ctx.payload["minutes"].as_u64().unwrap_or(DEFAULT_MINUTES).clamp(1, 120);
    match build(ctx.engine(), minutes).await {
        Ok(report) => match keep(ctx.engine(), &report).await {
            Ok(()) => Outcome::Done(json!({
                "generated_at": report.generated_at, "kinds": report.kinds.len(),
            })),
            Err(e) => Outcome::retry(format!("could not store the report: {e}")),
        },
        Err(e) => Outcome::retry(format!("could not build the report: {e}")),
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles { count: 0, max: None, p50: None, p95: None, p99: None };
    }
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 1e3 * 1000.0).round() / 1000.0;
    Percentiles {
        count: h.len(),
        max: Some(h.max() as f64 / 1e3),
        p50: Some(ms(0.5)),
        p95: Some(ms(0.95)),
        p99: Some(ms(0.99)),
    }
}

fn figures(s: &KindStats, seconds: f64) -> Figures {
    Figures {
        failed: s.failed,
        kind: None,
        lane: None,
        retried: s.retried,
        revoked: s.revoked,
        run_ms: percentiles(&s.run_us),
        succeeded: s.succeeded,
        throughput_per_s: ((s.succeeded as f64 / seconds) * 1000.0).round() / 1000.0,
        wait_ms: percentiles(&s.wait_us),
    }
}

/// The report over the last `minutes` whole minutes and the current one.
pub(crate) async fn build(engine: &Engine, minutes: u64) -> Result<Report, EngineError> {
    let now = now_ms();
    // the minutes read end at the same `now` the window is measured to
    let minutes_data = read_minutes(engine, minutes, now).await?;
    let depth = engine.dlq_depth().await?;
    let before = store::latest_report(engine).await?.and_then(|p| p["dlq"]["depth"].as_u64());
    Ok(assemble(now, minutes_data, depth, before))
}

/// The report made at `now` from the figures of its minutes, the DLQ's depth and its depth at
/// the previous report.
fn assemble(now: u64, minutes_data: Vec<(u64, MinuteFigures)>, depth: u64, before: Option<u64>) -> Report {
    let from_ms = minutes_data.first().map_or(now, |(m, _)| m * 60_000);
    let mut kinds = MinuteFigures::new();
    for (_, figures) in minutes_data {
        for (key, s) in figures {
            kinds.entry(key).or_default().merge(&s);
        }
    }
    let seconds = (now.saturating_sub(from_ms) as f64 / 1e3).max(1.0);
    let mut lanes: BTreeMap<String, KindStats> = BTreeMap::new();
    let mut per_kind = Vec::new();
    for ((lane, kind), s) in &kinds {
        lanes.entry(lane.clone()).or_default().merge(s);
        per_kind.push(Figures { kind: Some(kind.clone()), lane: Some(lane.clone()), ..figures(s, seconds) });
    }
    let mut slowest: Vec<&Figures> = per_kind.iter().filter(|k| k.run_ms.p99.is_some()).collect();
    slowest.sort_by(|a, b| b.run_ms.p99.partial_cmp(&a.run_ms.p99).unwrap_or(std::cmp::Ordering::Equal));
    let slowest = slowest
        .iter()
        .take(SLOWEST)
        .map(|k| SlowKind {
            kind: k.kind.clone().unwrap_or_default(),
            lane: k.lane.clone().unwrap_or_default(),
            run_p99_ms: k.run_ms.p99.unwrap_or_default(),
        })
        .collect();
    Report {
        dlq: DlqFigures { depth, growth_since_last_report: before.map(|b| depth as i64 - b as i64) },
        generated_at: format_ms(now),
        kinds: per_kind,
        lanes: lanes.iter().map(|(l, s)| (l.clone(), figures(s, seconds))).collect(),
        slowest_kinds: slowest,
        window: Window { from: format_ms(from_ms), seconds, to: format_ms(now) },
    }
}

/// One lane's figures over the last minute, as the dashboard's overview shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LastMinute {
    pub done_per_s: f64,
    /// Failed and retried attempts.
    pub failed_per_s: f64,
    pub run_p99_ms: Option<f64>,
}

/// Per lane, the last 60 seconds up to now: a sliding minute. Figures are kept per calendar
/// minute, so it is all of the current minute's and the share of the previous minute's that
/// falls within the last 60 s, pro rata — the rates do not fall to 0 as a new minute begins.
/// The run p99 is over both minutes.
pub(crate) async fn last_minute(engine: &Engine) -> Result<BTreeMap<String, LastMinute>, EngineError> {
    let now = now_ms();
    Ok(sliding_minute(now, read_minutes(engine, 2, now).await?))
}

fn sliding_minute(now: u64, minutes: Vec<(u64, MinuteFigures)>) -> BTreeMap<String, LastMinute> {
    let current = now / 60_000;
    let previous_share = 1.0 - (now % 60_000) as f64 / 60_000.0;
    let mut lanes: BTreeMap<String, (f64, f64, KindStats)> = BTreeMap::new();
    for (minute, figures) in minutes {
        // (A minute after the current one, from a worker whose clock is ahead, counts as now.)
        let share = match current.checked_sub(minute) {
            None | Some(0) => 1.0,
            Some(1) => previous_share,
            _ => continue,
        };
        for ((lane, _), s) in figures {
            let (done, failed, merged) = lanes.entry(lane).or_default();
            *done += s.succeeded as f64 * share;
            *failed += (s.failed + s.retried) as f64 * share;
            merged.merge(&s);
        }
    }
    lanes
        .into_iter()
        .map(|(lane, (done, failed, s))| {
            let run_p99_ms = percentiles(&s.run_us).p99;
            (lane, LastMinute { done_per_s: done / 60.0, failed_per_s: failed / 60.0, run_p99_ms })
        })
        .collect()
}

/// Each of the `minutes` minutes up to the one of `now` (oldest first, that one last): every
/// worker's figures of each (lane, kind), merged over the workers.
async fn read_minutes(engine: &Engine, minutes: u64, now: u64) -> Result<Vec<(u64, MinuteFigures)>, EngineError> {
    let to_minute = now / 60_000;
    let from_minute = to_minute + 1 - minutes.max(1);
    store::minute_figures(engine, from_minute, to_minute).await
}

/// Each of the last `minutes` minutes (oldest first): every lane's figures, merged over its
/// kinds and every worker.
pub(crate) async fn per_minute(
    engine: &Engine,
    minutes: u64,
) -> Result<Vec<(u64, BTreeMap<String, KindStats>)>, EngineError> {
    Ok(read_minutes(engine, minutes, now_ms())
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
async fn keep(engine: &Engine, report: &Report) -> Result<(), EngineError> {
    let json = serde_json::to_string(report).map_err(|e| EngineError::BadInput(e.to_string()))?;
    store::push_report(engine, &json).await
}

/// The newest report, if any.
pub(crate) async fn latest(engine: &Engine) -> Result<Option<serde_json::Value>, EngineError> {
    store::latest_report(engine).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 15 s into a minute: all of it, and the last 45 s of the one before, pro rata. At the turn
    /// of a minute the rate is the whole previous minute's, not 0.
    #[test]
    fn the_last_minute_slides_across_the_turn_of_a_minute() {
        let minute = 29_446_028u64;
        let figures = |lane: &str, succeeded: u64, failed: u64| -> MinuteFigures {
            let mut s = KindStats { succeeded, failed, ..KindStats::default() };
            let _ = s.run_us.record(2000);
            [((lane.to_string(), "diag.noop".to_string()), s)].into_iter().collect()
        };
        let data = || vec![(minute - 1, figures("webhooks", 600, 60)), (minute, figures("webhooks", 150, 0))];
        let at = |ms: u64| sliding_minute(minute * 60_000 + ms, data())["webhooks"];
        let quarter = at(15_000);
        assert_eq!((quarter.done_per_s, quarter.failed_per_s), ((150.0 + 600.0 * 0.75) / 60.0, 60.0 * 0.75 / 60.0));
        assert_eq!(quarter.run_p99_ms, Some(2.0));
        assert_eq!(at(0).done_per_s, (150.0 + 600.0) / 60.0);
        // Older minutes than the previous one do not count.
        assert!(sliding_minute((minute + 2) * 60_000, data()).is_empty());
    }

    /// Stored reports and API clients read this JSON: the same fields, in the same order, with
    /// `null` for what a histogram without values cannot say.
    #[test]
    fn a_report_serializes_as_clients_know_it() {
        let now = 1_767_261_723_456; // 2026-01-01T10:02:03.456Z
        let mut noop = KindStats { succeeded: 3, ..KindStats::default() };
        let _ = noop.run_us.record(1500);
        let _ = noop.run_us.record(2500);
        let _ = noop.wait_us.record(700);
        let failing = KindStats { failed: 1, retried: 2, ..KindStats::default() };
        let minute = BTreeMap::from([
            (("analytics".to_string(), "diag.noop".to_string()), noop),
            (("webhooks".to_string(), "delivery.send".to_string()), failing),
        ]);
        let report = assemble(now, vec![(now / 60_000, minute)], 2, Some(5));
        let noop_run = r#"{"count":2,"max":2.501,"p50":1.5,"p95":2.501,"p99":2.501}"#;
        let noop_wait = r#"{"count":1,"max":0.7,"p50":0.7,"p95":0.7,"p99":0.7}"#;
        let none = r#"{"count":0,"max":null,"p50":null,"p95":null,"p99":null}"#;
        let want = format!(
            concat!(
                r#"{{"dlq":{{"depth":2,"growth_since_last_report":-3}},"generated_at":"2026-01-01T10:02:03.456Z","#,
                r#""kinds":[{{"failed":0,"kind":"diag.noop","lane":"analytics","retried":0,"revoked":0,"#,
                r#""run_ms":{noop_run},"succeeded":3,"throughput_per_s":0.868,"wait_ms":{noop_wait}}},"#,
                r#"{{"failed":1,"kind":"delivery.send","lane":"webhooks","retried":2,"revoked":0,"run_ms":{none},"#,
                r#""succeeded":0,"throughput_per_s":0.0,"wait_ms":{none}}}],"#,
                r#""lanes":{{"analytics":{{"failed":0,"retried":0,"revoked":0,"run_ms":{noop_run},"succeeded":3,"#,
                r#""throughput_per_s":0.868,"wait_ms":{noop_wait}}},"#,
                r#""webhooks":{{"failed":1,"retried":2,"revoked":0,"run_ms":{none},"succeeded":0,"#,
                r#""throughput_per_s":0.0,"wait_ms":{none}}}}},"#,
                r#""slowest_kinds":[{{"kind":"diag.noop","lane":"analytics","run_p99_ms":2.501}}],"#,
                r#""window":{{"from":"2026-01-01T10:02:00.000Z","seconds":3.456,"to":"2026-01-01T10:02:03.456Z"}}}}"#,
            ),
            noop_run = noop_run,
            noop_wait = noop_wait,
            none = none,
        );
        assert_eq!(serde_json::to_string(&report).unwrap(), want);
    }

    #[test]
    fn the_first_report_has_no_growth_and_a_window_of_at_least_a_second() {
        let now = 1_767_261_720_000; // the first instant of a minute
        let report = assemble(now, vec![(now / 60_000, BTreeMap::new())], 0, None);
        assert_eq!(report.dlq.growth_since_last_report, None);
        assert_eq!(report.window.seconds, 1.0);
        assert!(report.kinds.is_empty() && report.lanes.is_empty() && report.slowest_kinds.is_empty());
    }
}

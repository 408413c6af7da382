//! The deployment-wide figures of the lanes, the DLQ and Redis, sampled into gauges.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, Lane};

/// The outcomes `switchyard_tasks_finished_total` counts.
pub const FINISHED_OUTCOMES: [&str; 6] = ["success", "retry", "failure", "revoked", "handed_back", "stale"];

/// Export the task metrics of every registered kind (on its lane) at zero, so dashboards and
/// alert rules see 0 from the first scrape rather than no data.
pub fn metrics_at_zero(registry: &super::Registry) {
    for lane in Lane::ALL {
        let _ = metrics::histogram!("switchyard_task_wait_seconds", "lane" => lane.as_str());
    }
    for kind in registry.kinds() {
        let Some(reg) = registry.get(kind) else { continue };
        let lane = reg.lane.as_str();
        metrics::counter!("switchyard_tasks_enqueued_total", "lane" => lane, "kind" => kind.to_owned()).increment(0);
        for outcome in FINISHED_OUTCOMES {
            metrics::counter!("switchyard_tasks_finished_total", "lane" => lane, "kind" => kind.to_owned(), "outcome" => outcome)
                .increment(0);
        }
        let _ = metrics::histogram!("switchyard_task_run_seconds", "lane" => lane, "kind" => kind.to_owned());
    }
}

/// Sample the deployment-wide lane figures into gauges every `every`, until stopped.
pub async fn sample_lanes(engine: Engine, every: Duration, stop: CancellationToken) {
    loop {
        match engine.queues_status().await {
            Ok(s) => {
                for lane in Lane::ALL {
                    if let Some(q) = s.queues.get(lane.as_str()) {
                        let l = lane.as_str();
                        metrics::gauge!("switchyard_lane_depth", "lane" => l).set(q.depth as f64);
                        metrics::gauge!("switchyard_lane_pending", "lane" => l).set(q.pending as f64);
                        metrics::gauge!("switchyard_lane_lag", "lane" => l).set(q.lag as f64);
                        metrics::gauge!("switchyard_lane_retrying", "lane" => l).set(q.retrying as f64);
                        metrics::gauge!("switchyard_lane_consumers", "lane" => l).set(q.consumers as f64);
                        metrics::gauge!("switchyard_lane_scheduled", "lane" => l).set(q.scheduled as f64);
                        metrics::gauge!("switchyard_lane_paused", "lane" => l).set(if q.paused { 1.0 } else { 0.0 });
                    }
                }
                metrics::gauge!("switchyard_dlq_depth").set(s.dlq_depth as f64);
                metrics::gauge!("switchyard_redis_up").set(1.0);
                // (sets switchyard_redis_memory_bytes and _max_bytes; the dashboard's trend)
                let _ = engine.record_memory_sample().await;
            }
            Err(_) => metrics::gauge!("switchyard_redis_up").set(0.0),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

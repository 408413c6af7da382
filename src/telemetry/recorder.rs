//! The process-wide Prometheus recorder, the metrics' descriptions and buckets, and cached
//! handles for labelled metrics. Below every layer that counts something: it knows no Redis.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Install the process-wide Prometheus recorder once; later calls return the same handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Histograms keep every sample until upkeep folds them into buckets; a recorder
            // built by hand gets no upkeep of its own, and without a scrape its memory would
            // grow with every request.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            // A recorder may already be installed (tests start several apps in one process).
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Metric handles kept per label set, registered on first use. Looking a metric up by its labels
/// costs more than the rest of a webhook's bookkeeping, and a webhook touches four of them.
/// A handle is named by a string label (a route, a task kind) and a small number standing for the
/// other labels.
pub struct Handles<M>(RwLock<ByName<M>>);

type ByName<M> = HashMap<Box<str>, Vec<(u32, M)>>;

impl<M: Clone> Handles<M> {
    pub fn new() -> Handles<M> {
        Handles(RwLock::new(HashMap::new()))
    }

    pub fn get(&self, name: &str, variant: u32, register: impl FnOnce() -> M) -> M {
        if let Some(m) = self.0.read().ok().and_then(|map| map.get(name)?.iter().find(|(v, _)| *v == variant).cloned())
        {
            return m.1;
        }
        prometheus();
        let m = register();
        if let Ok(mut map) = self.0.write() {
            let found = map.entry(name.into()).or_default();
            if !found.iter().any(|(v, _)| *v == variant) {
                found.push((variant, m.clone()));
            }
        }
        m
    }
}

impl<M: Clone> Default for Handles<M> {
    fn default() -> Handles<M> {
        Handles::new()
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("switchyard_tasks_enqueued_total", "Tasks queued, by lane and kind.");
    describe_counter!(
        "switchyard_tasks_finished_total",
        "Attempts whose outcome was recorded, by lane, kind and outcome."
    );
    describe_histogram!("switchyard_task_run_seconds", metrics::Unit::Seconds, "Run time of attempts.");
    describe_histogram!("switchyard_task_wait_seconds", metrics::Unit::Seconds, "Time from enqueue to first start.");
    describe_gauge!("switchyard_lane_depth", "Entries in a lane's stream (queued, running or waiting to retry).");
    describe_gauge!("switchyard_lane_pending", "Entries delivered to a worker and not yet acknowledged.");
    describe_gauge!("switchyard_lane_lag", "Entries no worker has read yet.");
    describe_gauge!("switchyard_lane_retrying", "Entries waiting out a retry backoff.");
    describe_gauge!("switchyard_lane_consumers", "Consumers in a lane's group.");
    describe_gauge!("switchyard_lane_paused", "1 while an operator has the lane paused, else 0.");
    describe_gauge!("switchyard_lane_scheduled", "Tasks queued to run later, not in the lane until due.");
    describe_gauge!("switchyard_dlq_depth", "Dead letters waiting for an operator.");
    describe_gauge!("switchyard_redis_memory_bytes", metrics::Unit::Bytes, "Redis's memory in use (used_memory).");
    describe_gauge!(
        "switchyard_redis_memory_max_bytes",
        metrics::Unit::Bytes,
        "Redis's memory limit (maxmemory; 0: none). New work is refused past MEMORY_HIGH_WATER of it."
    );
    describe_gauge!("switchyard_redis_up", "1 when Redis answered the last sample, else 0.");
    describe_counter!(
        "switchyard_auth_failures_total",
        "Wrong admin tokens given, by surface (api: a bearer token, login: the dashboard's form)."
    );
    describe_counter!(
        "switchyard_auth_throttled_total",
        "Attempts refused with 429 because their address gave too many wrong admin tokens, by surface."
    );
    describe_gauge!("switchyard_http_connections", "HTTP connections open.");
    describe_counter!(
        "switchyard_http_refused_total",
        "Connections and requests refused before a handler saw them, by reason (connections, \
         client_connections, too_large, body_memory, ambiguous_length)."
    );
    describe_counter!(
        "switchyard_http_timeouts_total",
        "Connections closed, or requests answered 408, for taking too long, by phase (header, body, idle)."
    );
    describe_counter!(
        "switchyard_deliveries_total",
        "Reply parts sent to platforms, by platform and outcome (sent, retry, failed)."
    );
    describe_counter!(
        "switchyard_webhooks_received_total",
        "Webhook events accepted or duplicate, and requests rejected, by platform."
    );
    describe_histogram!(
        "switchyard_reply_latency_seconds",
        metrics::Unit::Seconds,
        "From a customer's message reaching Switchyard to the platform accepting the reply, by platform."
    );
    describe_counter!("switchyard_replies_total", "Replies produced, by platform and responder (builtin, llm, none).");
    describe_counter!(
        "switchyard_llm_fallbacks_total",
        "LLM answers that failed or timed out; the built-in one went out."
    );
    describe_counter!("switchyard_http_requests_total", "HTTP requests served, by method, route and status.");
    describe_histogram!("switchyard_http_request_duration_seconds", metrics::Unit::Seconds, "HTTP request latency.");
}

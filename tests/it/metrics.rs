//! `/metrics` after real work: clean under `promtool check metrics`, every metric of SPEC §9
//! there, and every query of the Grafana dashboard and alert rules using only metrics the service
//! exports.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::engine::{TaskSpec, TaskState};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "metrics_secret";

/// promtool, fetched by the project's own script when it is not on PATH.
fn promtool() -> String {
    let out = Command::new("scripts/tools.sh").arg("promtool").output().expect("scripts/tools.sh runs");
    assert!(out.status.success(), "scripts/tools.sh promtool: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Names of the metric families in a Prometheus text exposition.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `switchyard_*` metric names a PromQL expression uses, histogram series mapped to their family.
fn used_in(expr: &str, histograms: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("switchyard_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| histograms.contains(*base)))
            .unwrap_or(name);
        out.push(family.to_string());
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_clean_complete_and_match_the_grafana_queries() {
    let platform = FakePlatform::default();
    let base = platform.start().await;
    let env = TestEnv::with("metrics", &redis_url(), |c| {
        c.facebook_app_secret = Some(SECRET.into());
        c.graph_url = format!("{base}/v24.0");
        c.facebook_page_token = Some("PAGE_TOKEN".into());
        // An LLM that does not answer: the built-in reply goes out and the fallback is counted.
        c.llm_url = Some(format!("http://127.0.0.1:{}/v1", free_port()));
        c.llm_timeout = Duration::from_millis(300);
    })
    .await;
    let (router, _) = env.router();
    let _w = env.start_worker();
    let stop = CancellationToken::new();
    tokio::spawn(switchyard::engine::gauges::sample_lanes(
        env.engine.clone(),
        Duration::from_millis(200),
        stop.clone(),
    ));

    // Real work of every kind the metrics describe.
    let body = json!({"object": "page", "entry": [{"id": "P1", "time": 1, "messaging": [
        {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 1, "message": {"mid": "m_metrics", "text": "hello"}}]}]})
    .to_string()
    .into_bytes();
    let sig = meta_sign(SECRET, &body);
    let r = http_with(&router, "POST", "/webhooks/facebook", &[("x-hub-signature-256", &sig)], body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = http_with(&router, "POST", "/webhooks/facebook", &[("x-hub-signature-256", "sha256=00")], body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let dead = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
    let retried = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 1}))).await.unwrap();
    env.wait_state(&dead, TaskState::Failure).await;
    env.wait_state(&retried, TaskState::Success).await;
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // one more lane sample
    stop.cancel();

    let r = http(&router, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text.clone();

    // Clean under promtool's linter.
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && complaints.trim().is_empty(), "promtool check metrics: {complaints}");

    // Everything SPEC §9 names is there.
    let exported = families(&text);
    for name in [
        "switchyard_tasks_enqueued_total",
        "switchyard_tasks_finished_total",
        "switchyard_task_run_seconds",
        "switchyard_task_wait_seconds",
        "switchyard_lane_depth",
        "switchyard_lane_pending",
        "switchyard_lane_lag",
        "switchyard_lane_paused",
        "switchyard_lane_scheduled",
        "switchyard_dlq_depth",
        "switchyard_webhooks_received_total",
        "switchyard_deliveries_total",
        "switchyard_http_requests_total",
        "switchyard_http_request_duration_seconds",
        "switchyard_reply_latency_seconds",
        "switchyard_replies_total",
        "switchyard_llm_fallbacks_total",
    ] {
        assert!(exported.contains(name), "{name} is not exported: {exported:?}");
    }

    // The dashboard and the alert rules query only what is exported.
    let histograms: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|l| l.ends_with(" histogram"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let dashboard: Value = serde_json::from_str(include_str!("../../grafana/dashboards/switchyard.json")).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its queries: {exprs:?}");
    let rules = include_str!("../../grafana/alerts.yml");
    exprs.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).map(str::to_string));
    for expr in &exprs {
        let used = used_in(expr, &histograms);
        assert!(!used.is_empty(), "a query without a Switchyard metric: {expr}");
        for name in used {
            assert!(exported.contains(&name), "`{expr}` uses {name}, which the service does not export");
        }
    }

    // The alert rules are valid Prometheus rules.
    let out = Command::new(promtool()).args(["check", "rules", "grafana/alerts.yml"]).output().unwrap();
    assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stdout));
}

//! Performance reports and the cleanup, against workloads of known shape.

use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::engine::{Lane, TaskSpec, TaskState};

/// The report entry of one kind.
fn kind<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["kinds"].as_array().and_then(|k| k.iter().find(|k| k["kind"] == name)).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn report_figures_match_the_workload() {
    let env = TestEnv::new("report").await;
    let (router, _) = env.router();
    let mut specs = Vec::new();
    specs.extend((0..30).map(|_| TaskSpec::new("diag.noop", json!({}))));
    specs.extend((0..10).map(|_| TaskSpec::new("diag.sleep", json!({"ms": 60}))));
    specs.extend((0..5).map(|_| TaskSpec::new("diag.fail", json!({"permanent": true}))));
    specs.extend((0..4).map(|_| TaskSpec::new("diag.fail", json!({"times": 1}))));
    let ids = env.engine.enqueue_batch(specs).await.unwrap();
    let _w = env.start_worker();
    for id in &ids[..40] {
        env.wait_state(id, TaskState::Success).await;
    }
    for id in &ids[40..45] {
        env.wait_state(id, TaskState::Failure).await;
    }
    for id in &ids[45..] {
        env.wait_state(id, TaskState::Success).await;
    }

    // Figures reach Redis within a second of each outcome: ask for reports until they are in.
    let report = wait_for("a report with every outcome", async || {
        let r = admin(&router, "POST", "/analytics/reports", None).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
        env.wait_state(r.json["task_id"].as_str().unwrap(), TaskState::Success).await;
        let latest = admin(&router, "GET", "/analytics/reports/latest", None).await.json;
        let fail = kind(&latest, "diag.fail");
        (kind(&latest, "diag.noop")["succeeded"] == 30
            && kind(&latest, "diag.sleep")["succeeded"] == 10
            && fail["succeeded"] == 4
            && fail["failed"] == 5
            && fail["retried"] == 4)
            .then_some(latest)
    })
    .await;

    let noop = kind(&report, "diag.noop");
    assert_eq!((noop["failed"].as_u64(), noop["retried"].as_u64()), (Some(0), Some(0)), "{noop}");
    assert_eq!(noop["lane"], "analytics");
    assert_eq!(noop["wait_ms"]["count"], 30, "one queue wait per task: {noop}");
    let sleep = kind(&report, "diag.sleep");
    assert!(sleep["run_ms"]["p50"].as_f64().unwrap() >= 60.0, "runs of 60 ms: {sleep}");
    assert!(sleep["run_ms"]["p99"].as_f64().unwrap() >= sleep["run_ms"]["p50"].as_f64().unwrap());
    assert_eq!(report["slowest_kinds"][0]["kind"], "diag.sleep", "{}", report["slowest_kinds"]);
    assert_eq!(report["dlq"]["depth"], 5);
    let lane = &report["lanes"]["analytics"];
    assert!(lane["succeeded"].as_u64().unwrap() >= 44, "{lane}");
    assert!(lane["throughput_per_s"].as_f64().unwrap() > 0.0);

    // The next report measures the DLQ's growth since this one.
    let r = admin(&router, "POST", "/analytics/reports", None).await;
    env.wait_state(r.json["task_id"].as_str().unwrap(), TaskState::Success).await;
    let next = admin(&router, "GET", "/analytics/reports/latest", None).await.json;
    assert_eq!(next["dlq"]["growth_since_last_report"], 0, "{}", next["dlq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_report_yet_is_404() {
    let env = TestEnv::new("report-none").await;
    let (router, _) = env.router();
    admin(&router, "GET", "/analytics/reports/latest", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// Ids of the entries pending in a lane.
async fn pending_ids(env: &TestEnv, lane: Lane) -> Vec<String> {
    let mut con = env.engine.conn();
    let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(env.lane_key(lane))
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut con)
        .await
        .unwrap();
    v.into_iter().map(|p| p.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_acknowledged_entries_only() {
    let env = TestEnv::new("cleanup").await;
    let key = env.lane_key(Lane::Webhooks);
    let mut con = env.engine.conn();
    let mut ids = Vec::new();
    for i in 0..10 {
        let id: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("t{i}"))
            .arg("kind")
            .arg("diag.noop")
            .query_async(&mut con)
            .await
            .unwrap();
        ids.push(id);
    }
    // A worker that went quiet read eight entries and acknowledged four: two before the oldest
    // one it still holds, two between ones it holds. Two were never delivered.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("quiet-worker")
        .arg("COUNT")
        .arg(8)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XACK")
        .arg(&key)
        .arg("workers")
        .arg(&ids[0])
        .arg(&ids[1])
        .arg(&ids[4])
        .arg(&ids[5])
        .query_async(&mut con)
        .await
        .unwrap();
    let before = pending_ids(&env, Lane::Webhooks).await;
    assert_eq!(before, [2, 3, 6, 7].map(|i| ids[i].clone()));

    // The cleanup runs on the analytics lane; the webhooks lane is left to the quiet worker.
    let _w = env.start_worker_on(env.engine.clone(), |o| o.lanes = vec![Lane::Analytics]);
    let task = env.engine.enqueue(TaskSpec::new("maintenance.cleanup", json!({}))).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;
    assert_eq!(s.result["trimmed_entries"]["webhooks"], 4, "{}", s.result);

    assert_eq!(pending_ids(&env, Lane::Webhooks).await, before, "pending entries are untouched");
    let left: Vec<String> = env.lane_entries(Lane::Webhooks).await.into_iter().map(|(task, _)| task).collect();
    assert_eq!(left, ["t2", "t3", "t6", "t7", "t8", "t9"], "only acknowledged entries went");
}

//! Pausing a lane: its tasks are still accepted but none starts until it is resumed, the attempt
//! running when it was paused finishes, other lanes carry on, and the state is in Redis for
//! every process (and survives a restart).

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lane_takes_tasks_but_starts_none_until_resumed() {
    let env = TestEnv::new("pause").await;
    let (router, _) = env.router();
    let _w = env.start_worker();
    let running = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 1500}))).await.unwrap();
    env.wait_state(&running, TaskState::Started).await;

    let r = admin(&router, "POST", "/lanes/analytics/pause", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"lane": "analytics", "paused": true}));
    // Workers hear of it within a second; the worker's heartbeat says when it has.
    wait_until("the worker knows the lane is paused", async || {
        let workers = env.engine.workers().await.unwrap();
        !workers.is_empty() && workers.iter().all(|w| w.paused == [Lane::Analytics])
    })
    .await;

    // Still accepted.
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop"}"#)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let waiting = r.json["task_id"].as_str().unwrap().to_string();
    // The attempt running when the lane was paused finishes.
    env.wait_state(&running, TaskState::Success).await;
    // Another lane runs meanwhile (queued after the paused lane's task, and read in the same
    // pass were the lane not paused).
    let other = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).on_lane(Lane::Webhooks)).await.unwrap();
    env.wait_state(&other, TaskState::Success).await;
    assert_eq!(env.status(&waiting).await.status, TaskState::Pending);
    let q = admin(&router, "GET", "/conversations/tasks/queues/status", None).await;
    assert_eq!(q.json["queues"]["analytics"]["paused"], true, "{}", q.text);
    assert_eq!(q.json["queues"]["analytics"]["lag"], 1, "{}", q.text);
    assert_eq!(q.json["queues"]["webhooks"]["paused"], false, "{}", q.text);
    // Another process (or this one restarted) sees the lane paused.
    assert_eq!(env.second_engine().paused_lanes().await.unwrap(), [Lane::Analytics]);

    let r = admin(&router, "POST", "/lanes/analytics/resume", None).await;
    assert_eq!(r.json, json!({"lane": "analytics", "paused": false}));
    env.wait_state(&waiting, TaskState::Success).await;
    let q = admin(&router, "GET", "/conversations/tasks/queues/status", None).await;
    assert_eq!(q.json["queues"]["analytics"]["paused"], false, "{}", q.text);

    // Only lanes there are, and only pause and resume.
    admin(&router, "POST", "/lanes/everything/pause", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    admin(&router, "POST", "/lanes/analytics/stop", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// A worker started while a lane is paused never reads it; due retries of a paused lane wait too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_on_a_paused_lane_reads_nothing_of_it() {
    let env = TestEnv::new("pause-start").await;
    env.engine.pause_lane(Lane::Analytics).await.unwrap();
    let queued = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    let _w = env.start_worker();
    let other = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).on_lane(Lane::Conversations)).await.unwrap();
    env.wait_state(&other, TaskState::Success).await;
    assert_eq!(env.status(&queued).await.status, TaskState::Pending);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0, "nothing of the paused lane was read");
    env.engine.resume_lane(Lane::Analytics).await.unwrap();
    env.wait_state(&queued, TaskState::Success).await;
}

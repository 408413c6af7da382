//! Tasks queued to run later (`delay`, `run_at`): PENDING with their time until then, started
//! once when due however many workers look, listed under "scheduled", cancelled or run now by
//! an operator, kept in Redis across restarts, and with idempotency and order keys meaning what
//! they mean for any task.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState, now_ms};

/// A status's RFC 3339 time as ms since the epoch.
fn ms(time: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}")).timestamp_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_for_later_is_pending_with_its_time_and_starts_once_when_due() {
    let env = TestEnv::new("later").await;
    let (router, _) = env.router();
    // Two workers, as two processes would have: each looks at the lane, one moves the task.
    let w1 = env.start_worker();
    let w2 = env.start_worker_on(env.second_engine(), |_| {});

    let before = now_ms();
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop", "delay": "1500ms"}"#)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["status"], "PENDING");
    let id = r.json["task_id"].as_str().unwrap().to_string();

    let s = admin(&router, "GET", &format!("/tasks/{id}"), None).await;
    assert_eq!(s.json["status"], "PENDING", "{}", s.text);
    assert_eq!(s.json["kind"], "diag.noop");
    assert_eq!(s.json["lane"], "analytics");
    let due = ms(s.json["run_at"].as_str().unwrap_or_else(|| panic!("no run_at: {}", s.text)));
    assert!(due >= before + 1500 && due <= now_ms() + 1500, "due {due}, queued at {before}");

    let listed = admin(&router, "GET", "/tasks/scheduled", None).await;
    assert_eq!(listed.json["count"], 1, "{}", listed.text);
    assert_eq!(listed.json["scheduled"][0]["task_id"], id.as_str());
    assert_eq!(listed.json["scheduled"][0]["kind"], "diag.noop");
    assert_eq!(listed.json["scheduled"][0]["run_at"], s.json["run_at"]);
    let q = admin(&router, "GET", "/conversations/tasks/queues/status", None).await;
    assert_eq!(q.json["queues"]["analytics"]["scheduled"], 1, "{}", q.text);
    assert_eq!(q.json["queues"]["analytics"]["depth"], 0, "not in the lane yet: {}", q.text);

    let done = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(done.attempts, 1);
    let started = done.history[0].started_at.unwrap();
    assert!(started >= due, "started at {started}, before it was due at {due}");
    assert_eq!(done.run_at, None, "no longer waiting");
    assert_eq!(w1.completed() + w2.completed(), 1, "ran once");
    let listed = admin(&router, "GET", "/tasks/scheduled", None).await;
    assert_eq!(listed.json["count"], 0, "{}", listed.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_due_together_each_run_once_with_several_workers() {
    let env = TestEnv::new("later-many").await;
    let w1 = env.start_worker();
    let w2 = env.start_worker_on(env.second_engine(), |_| {});
    let w3 = env.start_worker_on(env.second_engine(), |_| {});
    let due = now_ms() + 800;
    let specs: Vec<TaskSpec> = (0..300).map(|i| TaskSpec::new("diag.noop", json!({"i": i})).run_at(due)).collect();
    let ids = env.engine.enqueue_batch(specs).await.unwrap();
    for id in &ids {
        let s = env.wait_state(id, TaskState::Success).await;
        assert_eq!(s.attempts, 1, "{id}");
        assert!(s.history[0].started_at.unwrap() >= due, "{id} started before it was due");
    }
    assert_eq!(w1.completed() + w2.completed() + w3.completed(), 300, "each ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_queued_for_later_can_be_cancelled_or_run_now() {
    let env = TestEnv::new("later-ops").await;
    let (router, _) = env.router();
    let w = env.start_worker();
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop", "delay": "1h"}"#)).await;
    let cancelled = r.json["task_id"].as_str().unwrap().to_string();
    let r =
        admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.sleep", "payload": {"ms": 7}, "delay": "2h"}"#)).await;
    let hurried = r.json["task_id"].as_str().unwrap().to_string();
    let listed = admin(&router, "GET", "/tasks/scheduled?lane=analytics&limit=10", None).await;
    let order: Vec<&str> =
        listed.json["scheduled"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert_eq!(order, [cancelled.as_str(), hurried.as_str()], "the first due first");
    let other_lane = admin(&router, "GET", "/tasks/scheduled?lane=webhooks", None).await;
    assert_eq!(other_lane.json["count"], 0, "{}", other_lane.text);
    admin(&router, "GET", "/tasks/scheduled?lane=email", None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");

    let c = admin(&router, "POST", &format!("/tasks/{cancelled}/cancel"), None).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(c.json["status"], "REVOKED");
    let s = env.status(&cancelled).await;
    assert_eq!(s.status, TaskState::Revoked);
    assert_eq!(s.run_at, None);
    assert_eq!(s.payload, serde_json::Value::Null);
    // Gone from the list, and not run now: it is no longer waiting.
    let listed = admin(&router, "GET", "/tasks/scheduled", None).await;
    assert_eq!(listed.json["count"], 1, "{}", listed.text);
    admin(&router, "POST", &format!("/tasks/{cancelled}/run"), None)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    let r = admin(&router, "POST", &format!("/tasks/{hurried}/run"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = env.wait_state(&hurried, TaskState::Success).await;
    assert_eq!(s.result, json!({"slept_ms": 7}), "its payload went with it");
    assert_eq!(w.completed(), 1, "the cancelled one never ran");
    // A task that is not queued for later cannot be hurried; an unknown id neither.
    admin(&router, "POST", &format!("/tasks/{hurried}/run"), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let plain = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    admin(&router, "POST", &format!("/tasks/{plain}/run"), None).await.assert_error(StatusCode::CONFLICT, "conflict");
}

/// Nothing moves a task while no worker runs: it waits in Redis, and the first worker to start
/// after its time starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_due_while_no_worker_ran_starts_when_one_does() {
    let env = TestEnv::new("later-restart").await;
    let id =
        env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).delayed(Duration::from_millis(300))).await.unwrap();
    let due = ms(env.status(&id).await.run_at.as_deref().expect("run_at"));
    wait_until("the task is due", async || now_ms() > due + 200).await;
    let waiting = env.second_engine().task_status(&id).await.unwrap().unwrap();
    assert_eq!(waiting.status, TaskState::Pending, "no worker, nothing ran it");
    // A worker killed before it was due (a crashed process) moved nothing.
    let id2 = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).delayed(Duration::from_secs(1))).await.unwrap();
    env.start_worker().kill();
    let _w = env.start_worker();
    env.wait_state(&id, TaskState::Success).await;
    env.wait_state(&id2, TaskState::Success).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_order_keys_keep_their_meaning_for_tasks_queued_for_later() {
    let env = TestEnv::new("later-keys").await;
    let (router, _) = env.router();
    let body = r#"{"kind": "diag.noop", "payload": {"a": 1}, "idempotency_key": "k1", "delay": "1h"}"#;
    let first = admin(&router, "POST", "/tasks", Some(body)).await;
    let again = admin(&router, "POST", "/tasks", Some(body)).await;
    assert_eq!(first.json["task_id"], again.json["task_id"], "a repeat answers the first task");
    let other = r#"{"kind": "diag.noop", "payload": {"a": 2}, "idempotency_key": "k1", "delay": "1h"}"#;
    admin(&router, "POST", "/tasks", Some(other)).await.assert_error(StatusCode::CONFLICT, "idempotency_conflict");
    let listed = admin(&router, "GET", "/tasks/scheduled", None).await;
    assert_eq!(listed.json["count"], 1, "{}", listed.text);

    // An ordered task queued for later takes its place in its key's order when it is due: it
    // waits for the task of its key already running, and runs before one queued after it is due.
    let _w = env.start_worker();
    let running =
        env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 1200})).ordered_by("conv-1")).await.unwrap();
    env.wait_state(&running, TaskState::Started).await;
    let later = env
        .engine
        .enqueue(TaskSpec::new("diag.noop", json!({})).ordered_by("conv-1").delayed(Duration::from_millis(200)))
        .await
        .unwrap();
    let due = ms(env.status(&later).await.run_at.as_deref().expect("run_at"));
    wait_until("the task queued for later is in the lane", async || now_ms() > due + 100).await;
    let after = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).ordered_by("conv-1")).await.unwrap();
    let first = env.wait_state(&running, TaskState::Success).await;
    let l = env.wait_state(&later, TaskState::Success).await;
    let a = env.wait_state(&after, TaskState::Success).await;
    let finished = |s: &switchyard::engine::TaskStatus| ms(s.finished_at.as_deref().unwrap());
    let started = |s: &switchyard::engine::TaskStatus| s.history[0].started_at.unwrap();
    assert!(started(&l) >= finished(&first), "it waited for the task of its key that was running");
    assert!(started(&a) >= finished(&l), "the task queued after it was due ran after it");
}

#[tokio::test]
async fn a_bad_delay_or_time_is_refused_and_a_time_past_runs_now() {
    let env = TestEnv::new("later-bad").await;
    let (router, _) = env.router();
    for (body, says) in [
        (r#"{"kind": "diag.noop", "delay": "soon"}"#, "`delay` must be a duration"),
        (r#"{"kind": "diag.noop", "run_at": "tomorrow"}"#, "`run_at` must be an RFC 3339 time"),
        (r#"{"kind": "diag.noop", "delay": "1m", "run_at": "2030-01-01T00:00:00Z"}"#, "not both"),
        (r#"{"kind": "diag.noop", "delay": "400days"}"#, "at most"),
    ] {
        let r = admin(&router, "POST", "/tasks", Some(body)).await;
        let message = r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(says), "{body}: {message}");
    }
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop", "run_at": "2020-01-01T00:00:00Z"}"#)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.json["task_id"].as_str().unwrap();
    let s = env.status(id).await;
    assert_eq!((s.status, s.run_at), (TaskState::Pending, None), "queued now, not for later");
    assert_eq!(env.lane_len(Lane::Analytics).await, 1);
}

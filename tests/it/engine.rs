//! Integration tests of the task engine and its JSON API, against a real Redis.
//!
//! Each test has its own key prefix on the shared Redis (or its own `redis-server` when it stops
//! Redis), and asserts what a user would see: task records, the DLQ, the HTTP answers. Tests
//! wait for conditions; the only time assertions are minimums (a backoff was observed).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::engine::{Enqueued, Lane, Outcome, Registry, TaskSpec, TaskState, format_ms, now_ms};

fn sleep_task(ms: u64) -> TaskSpec {
    TaskSpec::new("diag.sleep", json!({ "ms": ms }))
}

fn noop() -> TaskSpec {
    TaskSpec::new("diag.noop", json!({}))
}

// ---------------------------------------------------------------------------------------------
// Retries, failures, the DLQ
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_then_success_observes_the_backoff() {
    let env = TestEnv::new("retry").await;
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 2}))).await.unwrap();

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.attempts, 3, "{s:?}");
    assert_eq!(outcomes(&s), ["retry", "retry", "success"], "{s:?}");
    assert_eq!(s.history.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(s.result, json!({"succeeded_on_attempt": 3}));
    assert_eq!(s.payload, Value::Null, "a finished task keeps no copy of the payload its entry held");
    assert_eq!(s.progress, 100);
    assert!(s.error.is_none(), "a successful task shows no error: {s:?}");
    assert!(s.dead_letter.is_none());
    for a in &s.history[..2] {
        assert!(a.error.as_deref().unwrap_or("").contains("on purpose"), "failed attempt without its error: {a:?}");
    }

    // Attempt n+1 starts no earlier than the backoff after attempt n: base·2^(n-1), less at most
    // a quarter of jitter (100 ms base in the test settings: ≥ 75 ms, then ≥ 150 ms).
    let base = env.config.retry_base.as_millis() as u64;
    let starts: Vec<u64> = s.history.iter().map(|a| a.started_at.expect("attempt without started_at")).collect();
    for n in 1..starts.len() {
        let gap = starts[n] - starts[n - 1];
        let min = base * (1 << (n - 1)) * 3 / 4;
        assert!(gap >= min, "attempt {} started {gap} ms after attempt {n}; the backoff is at least {min} ms", n + 1);
    }

    assert!(env.engine.dlq_get(&id).await.unwrap().is_none());
    assert_eq!(env.lane_len(Lane::Analytics).await, 0, "a finished task leaves its lane");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_end_in_the_dlq_with_every_error() {
    let env = TestEnv::new("exhaust").await;
    let (router, _) = env.router();
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 10})).max_attempts(3)).await.unwrap();

    let s = env.wait_state(&id, TaskState::Failure).await;
    assert_eq!(s.attempts, 3, "{s:?}");
    assert_eq!(s.max_attempts, 3);
    assert_eq!(s.history.len(), 3, "{s:?}");
    assert!(s.error.as_deref().unwrap_or("").contains("attempt 3"), "the last error is shown: {s:?}");
    assert!(s.finished_at.is_some());

    let dead = env.engine.dlq_get(&id).await.unwrap().expect("a dead letter for the task");
    assert_eq!(s.dead_letter.as_deref(), Some(dead.id.as_str()));
    assert_eq!(dead.task_id, id);
    assert_eq!(dead.kind, "diag.fail");
    assert_eq!(dead.lane, Some(Lane::Analytics));
    assert_eq!(dead.payload, json!({"times": 10}));
    assert_eq!(dead.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    for (i, a) in dead.attempts.iter().enumerate() {
        let err = a.error.as_deref().unwrap_or_else(|| panic!("attempt {} has no error: {dead:?}", i + 1));
        assert!(err.contains(&format!("failing attempt {}", i + 1)), "attempt {} error: {err}", i + 1);
    }
    assert!(dead.error.contains("attempt 3"), "{}", dead.error);

    // The API shows the same letter, and the lane is clean.
    let r = admin(&router, "GET", "/dlq", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["dead_letters"][0]["task_id"], id.as_str());
    assert_eq!(r.json["dead_letters"][0]["attempts"].as_array().map(Vec::len), Some(3));
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_goes_to_the_dlq_at_once() {
    let env = TestEnv::new("permanent").await;
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();

    let s = env.wait_state(&id, TaskState::Failure).await;
    assert_eq!(s.attempts, 1, "a permanent failure is not retried: {s:?}");
    assert_eq!(outcomes(&s), ["failure"]);
    assert!(s.max_attempts > 1, "retries were allowed, yet none was made");
    let dead = env.engine.dlq_get(&id).await.unwrap().expect("dead letter");
    assert_eq!(dead.attempts.len(), 1);
    assert!(dead.error.contains("permanent"), "{}", dead.error);
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_failed_attempt_and_the_worker_carries_on() {
    let env = TestEnv::new("panic").await;
    let worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.panic", json!({})).max_attempts(2)).await.unwrap();

    let s = env.wait_state(&id, TaskState::Failure).await;
    assert_eq!(s.attempts, 2, "the panic was retried once, then dead: {s:?}");
    assert_eq!(outcomes(&s), ["panic", "panic"]);
    for a in &s.history {
        assert!(a.error.as_deref().unwrap_or("").contains("panicking on purpose"), "{a:?}");
    }
    let dead = env.engine.dlq_get(&id).await.unwrap().expect("dead letter");
    assert_eq!(dead.attempts.len(), 2);

    // The same worker still takes work.
    let ids = env.engine.enqueue_batch(vec![noop(), sleep_task(10), noop()]).await.unwrap();
    for id in &ids {
        env.wait_state(id, TaskState::Success).await;
    }
    wait_until("the worker recorded all five attempts", async || worker.completed() >= 5).await;
}

// ---------------------------------------------------------------------------------------------
// Crashes and claims
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_workers_task_is_finished_by_another() {
    let env = TestEnv::new("vanish").await;
    let a = env.start_worker();
    let a_name = a.name();
    let id = env.engine.enqueue(sleep_task(1500)).await.unwrap();
    env.wait_started_by(&id, &a_name).await;

    let b = env.start_worker_on(env.second_engine(), |_| {});
    let b_name = b.name();
    let killed_at = now_ms();
    a.kill();

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.attempts, 2, "{s:?}");
    assert_eq!(outcomes(&s), ["lost", "success"], "the history shows the lost attempt: {s:?}");
    assert_eq!(s.history.iter().filter(|a| a.outcome == "success").count(), 1, "exactly one success");
    assert_eq!(s.history[1].worker.as_deref(), Some(b_name.as_str()));
    assert_eq!(s.worker.as_deref(), Some(b_name.as_str()));
    // B could only take it once A's claim had gone unrenewed for a visibility timeout (2 s; A
    // renewed at most a third of that before it died).
    let b_started = s.history[1].started_at.expect("started_at");
    assert!(b_started >= killed_at + 1000, "reclaimed {} ms after the kill", b_started.saturating_sub(killed_at));
    wait_until("worker B recorded its attempt", async || b.completed() == 1).await;
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
}

/// A reclaimed attempt that finishes at once must leave the same record as a slow one: the lost
/// attempt in the history, and the worker that ran it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_task_that_finishes_at_once_still_shows_the_lost_attempt() {
    let mut registry = Registry::new();
    registry.register("test.stall_first", Lane::Analytics, |ctx| async move {
        if ctx.attempt == 1 {
            ctx.stopped().await;
            return Outcome::retry("stopped");
        }
        Outcome::Done(json!({"attempt": ctx.attempt}))
    });
    let env = TestEnv::lazy("vanish-fast", &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let a = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("test.stall_first", json!({}))).await.unwrap();
    env.wait_state(&id, TaskState::Started).await;
    let b = env.start_worker_on(env.second_engine(), |_| {});
    let b_name = b.name();
    a.kill();

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.attempts, 2, "{s:?}");
    assert_eq!(outcomes(&s), ["lost", "success"], "the history shows the lost attempt: {s:?}");
    assert_eq!(s.worker.as_deref(), Some(b_name.as_str()), "the record names the worker that finished it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_is_not_stolen_from_a_live_worker() {
    let env = TestEnv::new("long").await;
    assert_eq!(env.config.visibility_timeout, Duration::from_secs(2));
    let a = env.start_worker();
    let b = env.start_worker_on(env.second_engine(), |_| {});
    let id = env.engine.enqueue(sleep_task(5000)).await.unwrap();

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.attempts, 1, "run once, by one worker: {s:?}");
    assert_eq!(outcomes(&s), ["success"]);
    let ran_by = s.history[0].worker.clone().expect("worker of the attempt");
    assert!(ran_by == a.name() || ran_by == b.name(), "{ran_by}");
    assert_eq!(s.worker.as_deref(), Some(ran_by.as_str()));
    wait_until("the attempt is recorded", async || a.completed() + b.completed() == 1).await;
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_pending_never_runs() {
    let env = TestEnv::new("cancel-pending").await;
    let id = env.engine.enqueue(sleep_task(10)).await.unwrap();
    let queued = env.status(&id).await;
    assert_eq!((queued.status, &queued.payload), (TaskState::Pending, &json!({"ms": 10})), "{queued:?}");
    assert_eq!(env.engine.cancel(&id).await.unwrap(), TaskState::Revoked);
    assert_eq!(env.lane_len(Lane::Analytics).await, 0, "the queued entry is gone");

    // A worker that then processes the lane (the sentinel proves it read it) never runs it.
    let worker = env.start_worker();
    let sentinel = env.engine.enqueue(noop()).await.unwrap();
    env.wait_state(&sentinel, TaskState::Success).await;
    wait_until("the sentinel is recorded", async || worker.completed() >= 1).await;

    let s = env.status(&id).await;
    assert_eq!(s.status, TaskState::Revoked);
    assert_eq!(s.payload, json!({"ms": 10}), "the payload outlives the deleted entry");
    assert!(s.history.is_empty(), "a cancelled queued task has no attempts: {s:?}");
    assert_eq!(s.attempts, 0);
    assert!(s.started_at.is_none());
    assert_eq!(worker.completed(), 1, "only the sentinel ran");
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_started_stops_it() {
    let env = TestEnv::new("cancel-running").await;
    let (router, _) = env.router();
    let worker = env.start_worker();
    let id = env.engine.enqueue(sleep_task(30_000)).await.unwrap();
    env.wait_state(&id, TaskState::Started).await;
    wait_until("the task is listed as active", async || {
        let r = admin(&router, "GET", "/conversations/tasks/active", None).await;
        r.json["count"] == 1 && r.json["active"][0]["task_id"] == id.as_str()
    })
    .await;
    assert_eq!(worker.completed(), 0);

    let r = admin(&router, "POST", &format!("/conversations/tasks/{id}/cancel"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"task_id": id, "status": "REVOKED"}));
    assert_eq!(env.status(&id).await.status, TaskState::Revoked);

    // The worker stops the attempt (long before its 30 s) and records it.
    wait_until("the worker recorded the stopped attempt", async || worker.completed() == 1).await;
    wait_until("the active list is empty", async || {
        admin(&router, "GET", "/conversations/tasks/active", None).await.json["count"] == 0
    })
    .await;
    assert_eq!(worker.in_flight(), 0);
    let s = env.status(&id).await;
    assert_eq!(s.status, TaskState::Revoked, "stays REVOKED: {s:?}");
    assert_eq!(s.history.len(), 1, "{s:?}");
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
    assert!(env.engine.dlq_get(&id).await.unwrap().is_none(), "a cancelled task is not dead");
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_to_retry_never_runs_again() {
    let env = TestEnv::with("cancel-retry", &redis_url(), |c| {
        c.retry_base = Duration::from_millis(800);
        c.retry_cap = Duration::from_secs(2);
    })
    .await;
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 1}))).await.unwrap();
    let s = env.wait_state(&id, TaskState::Retry).await;
    assert_eq!(env.engine.cancel(&id).await.unwrap(), TaskState::Revoked);
    let cancelled_at = now_ms();

    // Wait past the time the retry was due; the retry must not have run.
    let due_in = 800 + 200;
    tokio::time::sleep(Duration::from_millis(due_in)).await;
    assert!(now_ms() >= cancelled_at + due_in);
    let after = env.status(&id).await;
    assert_eq!(after.status, TaskState::Revoked, "{after:?}");
    assert_eq!(after.history.len(), s.history.len(), "no attempt after the cancel: {after:?}");
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Priority, shutdown, the stream and Redis going away
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_order_under_load() {
    let env = TestEnv::new("priority").await;
    assert!(env.config.priority_aging >= Duration::from_secs(60), "aging must not reorder lanes here");
    let n = 150;
    let mut specs = Vec::new();
    for lane in [Lane::Analytics, Lane::Webhooks, Lane::Conversations] {
        specs.extend((0..n).map(|_| noop().on_lane(lane)));
    }
    let ids = env.engine.enqueue_batch(specs).await.unwrap();
    let _worker = env.start_worker_on(env.engine.clone(), |o| o.concurrency = 1);

    let mut started: [Vec<u64>; 3] = Default::default();
    for (i, id) in ids.iter().enumerate() {
        let s = env.wait_state(id, TaskState::Success).await;
        let lane = s.lane.expect("lane");
        assert_eq!(lane.index(), 2 - i / n, "task {id} on the lane it was sent to");
        started[lane.index()].push(s.history[0].started_at.expect("started_at"));
    }
    let last = |l: Lane| *started[l.index()].iter().max().unwrap();
    let first = |l: Lane| *started[l.index()].iter().min().unwrap();
    assert!(
        last(Lane::Conversations) <= first(Lane::Webhooks),
        "a webhook started (at {}) before the last conversation (at {})",
        first(Lane::Webhooks),
        last(Lane::Conversations)
    );
    assert!(
        last(Lane::Webhooks) <= first(Lane::Analytics),
        "an analytics task started (at {}) before the last webhook (at {})",
        first(Lane::Analytics),
        last(Lane::Webhooks)
    );
}

/// The same, with the exact start order (a handler that records its lane when it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn priority_order_is_strict_with_one_slot() {
    let order: Arc<Mutex<Vec<Lane>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = order.clone();
    registry.register("test.record", Lane::Analytics, move |ctx| {
        seen.lock().unwrap().push(ctx.lane);
        async { Outcome::Done(Value::Null) }
    });
    let env = TestEnv::lazy("priority-exact", &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let n = 500;
    let mut specs = Vec::new();
    for lane in [Lane::Analytics, Lane::Webhooks, Lane::Conversations] {
        specs.extend((0..n).map(|_| TaskSpec::new("test.record", json!({})).on_lane(lane)));
    }
    env.engine.enqueue_batch(specs).await.unwrap();
    let _worker = env.start_worker_on(env.engine.clone(), |o| o.concurrency = 1);
    wait_until("every task ran", async || order.lock().unwrap().len() == 3 * n).await;

    let got: Vec<Lane> = order.lock().unwrap().clone();
    let expected: Vec<Lane> = [Lane::Conversations, Lane::Webhooks, Lane::Analytics]
        .iter()
        .flat_map(|l| std::iter::repeat_n(*l, n))
        .collect();
    if got != expected {
        let first_wrong = got.iter().zip(&expected).position(|(g, e)| g != e).unwrap_or(0);
        panic!(
            "with one slot, tasks must start lane by lane in priority order; start #{first_wrong} was {:?} \
             while {:?} work was still queued (order: {:?})",
            got[first_wrong],
            expected[first_wrong],
            got.iter().map(|l| l.index()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_work() {
    let env = TestEnv::new("drain").await;
    assert!(env.config.shutdown_grace >= Duration::from_secs(5));
    let worker = env.start_worker();
    let ids = env.engine.enqueue_batch((0..3).map(|_| sleep_task(500)).collect()).await.unwrap();
    for id in &ids {
        env.wait_state(id, TaskState::Started).await;
    }

    worker.stop().await;

    // Once `wait` returns, every outcome is recorded: no polling here.
    for id in &ids {
        let s = env.status(id).await;
        assert_eq!(s.status, TaskState::Success, "{s:?}");
        assert_eq!(s.attempts, 1);
        assert_eq!(outcomes(&s), ["success"]);
    }
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0, "nothing left pending");
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
}

/// The grace period may be longer than the visibility timeout: the stopping worker keeps
/// renewing its claims meanwhile, so a task that runs on past the timeout is neither taken for
/// lost nor handed back; it finishes where it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_past_the_visibility_timeout_finishes_within_the_grace_period() {
    let env = TestEnv::new("drain-long").await;
    assert!(env.config.shutdown_grace >= 2 * env.config.visibility_timeout);
    let worker = env.start_worker();
    let name = worker.name();
    let id = env.engine.enqueue(sleep_task(2 * env.config.visibility_timeout.as_millis() as u64)).await.unwrap();
    env.wait_state(&id, TaskState::Started).await;

    worker.stop().await;

    let s = env.status(&id).await;
    assert_eq!((s.status, s.attempts), (TaskState::Success, 1), "{s:?}");
    assert_eq!(outcomes(&s), ["success"], "{s:?}");
    assert_eq!(s.history[0].worker, Some(name));
}

async fn group_exists(env: &TestEnv, lane: Lane) -> bool {
    let mut con = env.engine.conn();
    let groups: redis::RedisResult<redis::Value> =
        redis::cmd("XINFO").arg("GROUPS").arg(env.lane_key(lane)).query_async(&mut con).await;
    matches!(groups, Ok(v) if format!("{v:?}").contains("workers"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_recreated_under_a_running_worker() {
    let env = TestEnv::new("del-stream").await;
    let _worker = env.start_worker();
    let first = env.engine.enqueue(noop()).await.unwrap();
    env.wait_state(&first, TaskState::Success).await;

    let mut con = env.engine.conn();
    let deleted: i64 = redis::cmd("DEL").arg(env.lane_key(Lane::Analytics)).query_async(&mut con).await.unwrap();
    assert_eq!(deleted, 1);
    wait_until("the consumer group is recreated", async || group_exists(&env, Lane::Analytics).await).await;
    let second = env.engine.enqueue(noop()).await.unwrap();
    env.wait_state(&second, TaskState::Success).await;

    // And when a task is queued straight after the delete (the stream then exists, its group not).
    let _: i64 = redis::cmd("DEL").arg(env.lane_key(Lane::Analytics)).query_async(&mut con).await.unwrap();
    let third = env.engine.enqueue(noop()).await.unwrap();
    let s = env.wait_state(&third, TaskState::Success).await;
    assert_eq!(s.attempts, 1);
    assert!(group_exists(&env, Lane::Analytics).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_api_recover_from_a_redis_restart() {
    let server = RedisProcess::start_on_free_port();
    let port = server.port;
    let env = TestEnv::with("restart", &server.url(), |_| {}).await;
    let (router, ready) = env.router();
    ready.store(false, Ordering::Relaxed);
    env.watch_readiness(ready.clone());
    let _worker = env.start_worker();

    wait_until("/readyz answers 200", async || http(&router, "GET", "/readyz", None, None).await.status == 200).await;
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop"}"#)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let before = r.json["task_id"].as_str().unwrap().to_string();
    env.wait_state(&before, TaskState::Success).await;

    server.stop();
    wait_until("/readyz answers 503 while Redis is down", async || {
        http(&router, "GET", "/readyz", None, None).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let r = admin(&router, "GET", &format!("/tasks/{before}"), None).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.headers.contains_key("retry-after"), "a 503 says when to retry: {:?}", r.headers);

    let server = RedisProcess::start(port);
    wait_until("/readyz answers 200 again", async || http(&router, "GET", "/readyz", None, None).await.status == 200)
        .await;
    let r = wait_for("the API accepts a task again", async || {
        let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop"}"#)).await;
        (r.status == StatusCode::ACCEPTED).then_some(r)
    })
    .await;
    let after = r.json["task_id"].as_str().unwrap().to_string();
    wait_until("the task queued after the restart completes", async || {
        let r = admin(&router, "GET", &format!("/tasks/{after}"), None).await;
        r.json["status"] == "SUCCESS"
    })
    .await;
    drop(env);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Producers and operators
// ---------------------------------------------------------------------------------------------

/// A queued task is its lane entry alone: its id names the entry, a status lookup reads the
/// entry, and the record is written when the task starts — under the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_is_its_entry_until_a_worker_starts_it() {
    let env = TestEnv::new("queued-entry").await;
    let (router, _) = env.router();
    let before = now_ms();
    let id = env.engine.enqueue(sleep_task(10).max_attempts(2)).await.unwrap();
    let mut con = env.engine.conn();
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(env.lane_key(Lane::Analytics)).arg("-").arg("+").query_async(&mut con).await.unwrap();
    assert_eq!(entries.ids.len(), 1);
    let entry = entries.ids[0].id.clone();
    assert_eq!(switchyard::engine::entry_of_task(&id), Some((0, Lane::Analytics, entry.clone())), "{id}");
    let record_exists = async |con: &mut switchyard::redis::Conn| -> bool {
        redis::cmd("EXISTS").arg(env.engine.keys().task(&id)).query_async(con).await.unwrap()
    };
    assert!(!record_exists(&mut con).await, "nothing but the entry is written at enqueue");

    // What a user sees of it meanwhile: the API and the engine read the entry.
    let r = admin(&router, "GET", &format!("/tasks/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.json["status"], &r.json["kind"], &r.json["lane"], &r.json["payload"], &r.json["max_attempts"]),
        (&json!("PENDING"), &json!("diag.sleep"), &json!("analytics"), &json!({"ms": 10}), &json!(2)),
        "{}",
        r.text
    );
    let created = r.json["created_at"].as_str().unwrap().to_string();
    assert!(created >= format_ms(before) && created <= format_ms(now_ms()), "{created}");
    assert_eq!(env.engine.task_state(&id).await.unwrap(), Some(TaskState::Pending));
    // A record holding no state (nothing a start wrote) does not hide the entry.
    let _: i64 =
        redis::cmd("HSET").arg(env.engine.keys().task(&id)).arg("progress").arg(5).query_async(&mut con).await.unwrap();
    let s = env.status(&id).await;
    assert_eq!((s.status, s.kind.as_str(), &s.payload), (TaskState::Pending, "diag.sleep", &json!({"ms": 10})));
    let _: i64 = redis::cmd("DEL").arg(env.engine.keys().task(&id)).query_async(&mut con).await.unwrap();
    // Ids that name no entry, or an entry that is not there, are no task.
    let gone = switchyard::engine::task_id_for_entry(0, Lane::Analytics, "1-1").unwrap();
    assert_eq!(admin(&router, "GET", &format!("/tasks/{gone}"), None).await.status, StatusCode::NOT_FOUND);
    assert!(env.engine.task_status(&gone).await.unwrap().is_none());

    // Read by a worker that never starts it: still PENDING, still read from the entry.
    env.read_as(Lane::Analytics, "reader", 10).await;
    assert!(!record_exists(&mut con).await, "an unordered task's record is written when it starts");
    let s = env.status(&id).await;
    assert_eq!((s.status, s.created_at.as_deref()), (TaskState::Pending, Some(created.as_str())));

    // The reader went away; the next worker reclaims the entry and runs the task under its id,
    // and its first start writes the record's fields from the entry.
    let _worker = env.start_worker();
    let done = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(outcomes(&done), ["lost", "success"], "{done:?}");
    assert_eq!(
        (done.kind.as_str(), done.lane, done.max_attempts, done.created_at.as_deref()),
        ("diag.sleep", Some(Lane::Analytics), 2, Some(created.as_str()))
    );
}

/// A task read by a worker but not started yet has no record; cancelling it then stops it as a
/// running one: it never runs, and the worker that holds it lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_between_read_and_start_never_runs() {
    let env = TestEnv::new("cancel-read").await;
    let id = env.engine.enqueue(sleep_task(10)).await.unwrap();
    env.read_as(Lane::Analytics, "reader", 10).await;
    assert_eq!(env.engine.cancel(&id).await.unwrap(), TaskState::Revoked);
    let s = env.status(&id).await;
    assert_eq!((s.status, &s.payload, s.kind.as_str()), (TaskState::Revoked, &json!({"ms": 10}), "diag.sleep"));
    // The reader is gone; the worker that reclaims the entry finds it cancelled and lets it go.
    let worker = env.start_worker();
    wait_until("the cancelled entry is let go", async || env.lane_pending(Lane::Analytics).await == 0).await;
    let s = env.status(&id).await;
    assert_eq!(s.status, TaskState::Revoked);
    assert!(s.history.is_empty() && s.started_at.is_none(), "it never ran: {s:?}");
    assert_eq!(worker.completed(), 0);
}

/// Only an entry not yet read, or read and not yet started, stands for a task without a record,
/// and only under the id it was given: an acknowledged entry whose record is gone (expired before
/// the entry was trimmed) is no task, and the same id in capitals names no task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_entry_whose_record_is_gone_is_no_task() {
    let env = TestEnv::new("entry-acked").await;
    let (router, _) = env.router();
    let id = env.engine.enqueue(noop()).await.unwrap();
    let upper = id.to_uppercase();
    assert_eq!(admin(&router, "GET", &format!("/tasks/{upper}"), None).await.status, StatusCode::NOT_FOUND);
    let r = admin(&router, "POST", &format!("/tasks/{upper}/cancel"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(env.status(&id).await.status, TaskState::Pending, "the task itself is untouched");

    env.read_as(Lane::Analytics, "reader", 10).await;
    assert_eq!(env.ack_entry(&id).await, 1);
    let mut con = env.engine.conn();
    assert_eq!(env.lane_len(Lane::Analytics).await, 1, "the entry is still in the lane");
    assert_eq!(admin(&router, "GET", &format!("/tasks/{id}"), None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.engine.task_state(&id).await.unwrap(), None);
    assert!(matches!(env.engine.cancel(&id).await, Err(switchyard::engine::EngineError::NotFound(_))));
    let exists: bool = redis::cmd("EXISTS").arg(env.engine.keys().task(&id)).query_async(&mut con).await.unwrap();
    assert!(!exists, "a failed cancel writes no record");
}

/// A dedup key queues once and, unlike an idempotency key, keeps no id to answer repeats with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_queues_once_without_naming_the_first_task() {
    let env = TestEnv::new("dedup-key").await;
    let first = env.engine.enqueue_many(vec![noop().dedup_key("m_1"), noop().dedup_key("m_1")]).await.unwrap();
    assert!(first[0].is_new() && !first[0].id().is_empty(), "{first:?}");
    assert_eq!(first[1], Enqueued::Repeat(None), "a repeat in the same batch is told apart");
    let again = env.engine.enqueue_many(vec![noop().dedup_key("m_1"), noop().dedup_key("m_2")]).await.unwrap();
    assert_eq!(again[0], Enqueued::Repeat(None));
    assert!(again[1].is_new(), "another key is another task");
    assert_eq!(env.lane_len(Lane::Analytics).await, 2);
    // An idempotency key seen as a dedup key finds no id to name: it is a repeat all the same.
    let named = env.engine.enqueue_many(vec![noop().idempotency_key("m_2")]).await.unwrap();
    assert_eq!(named, [Enqueued::Repeat(None)]);
    assert_eq!(env.lane_len(Lane::Analytics).await, 2);
}

/// A marker written by an earlier build holds the task's id alone: a repeat is answered with it,
/// whatever its payload (there is nothing to compare it with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_builds_marker_still_names_its_task() {
    let env = TestEnv::new("idem-old").await;
    let mut con = env.engine.conn();
    let old = "01J0000000000000000000000Z";
    let _: () = redis::cmd("SET")
        .arg(env.engine.keys().idempotency("k-old"))
        .arg(old)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut con)
        .await
        .unwrap();
    let again = env.engine.enqueue_many(vec![noop().idempotency_key("k-old")]).await.unwrap();
    assert_eq!(again, [Enqueued::Repeat(Some(old.to_string()))]);
    // The walk over the keys for such markers, started with the first enqueue, found it: it is
    // still looked at once the walk is over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = env.engine.enqueue_many(vec![noop().idempotency_key("k-old")]).await.unwrap();
    assert_eq!(later, [Enqueued::Repeat(Some(old.to_string()))]);
    // A marker of this build keeps the fingerprint: the same key with another payload conflicts,
    // and `enqueue` (Switchyard's own producers) answers with the first task all the same.
    let first = env.engine.enqueue(TaskSpec::new("diag.noop", json!({"a": 1})).idempotency_key("k-new")).await.unwrap();
    let other = env
        .engine
        .enqueue_many(vec![TaskSpec::new("diag.noop", json!({"a": 2})).idempotency_key("k-new")])
        .await
        .unwrap();
    assert_eq!(other, [Enqueued::Conflict(first.clone())]);
    let same = env.engine.enqueue(TaskSpec::new("diag.noop", json!({"a": 2})).idempotency_key("k-new")).await.unwrap();
    assert_eq!(same, first);
    assert_eq!(env.lane_len(Lane::Analytics).await, 1);
}

/// Markers are fields of hashes, one per slice of the window and shard: a key is remembered
/// across a slice's end (at least the window), forgotten two slices on, and no marker is a key
/// of its own or lives without an expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_remembered_the_window_in_slices() {
    let window = Duration::from_secs(3);
    let env = TestEnv::with("idem-slices", &redis_url(), |c| c.idempotency_window = window).await;
    let w = window.as_millis() as u64;
    let slice = || now_ms() / w;
    let first = env.engine.enqueue(noop().idempotency_key("k-1")).await.unwrap();
    let s0 = slice();
    let others: Vec<TaskSpec> = (0..300).map(|i| noop().idempotency_key(format!("other-{i}"))).collect();
    env.engine.enqueue_many(others).await.unwrap();
    let mut con = env.engine.conn();
    let root = env.engine.keys().root().to_string();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{root}idem:*")).query_async(&mut con).await.unwrap();
    assert!(!keys.is_empty() && keys.len() <= 2 * 256, "fields of at most 256 hashes a slice: {}", keys.len());
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut con).await.unwrap();
        assert!(ttl > 0 && ttl as u64 <= 2 * w + 256 * 12, "{k} expires within two slices: {ttl}");
    }
    while slice() == s0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = env.engine.enqueue(noop().idempotency_key("k-1")).await.unwrap();
    assert_eq!(again, first, "remembered past the end of its slice");
    while slice() < s0 + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = env.engine.enqueue(noop().idempotency_key("k-1")).await.unwrap();
    assert_ne!(later, first, "forgotten two slices on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_one_task() {
    let env = TestEnv::new("idem").await;
    let (router, _) = env.router();
    let a = env.engine.enqueue(sleep_task(10).idempotency_key("order-42")).await.unwrap();
    let b = env.engine.enqueue(sleep_task(10).idempotency_key("order-42")).await.unwrap();
    assert_eq!(a, b, "the same key returns the first task's id");
    // Through the API: the same, with the API's callers' keys apart from Switchyard's own.
    let body = r#"{"kind":"diag.sleep","payload":{"ms":10},"idempotency_key":"order-42"}"#;
    let r = admin(&router, "POST", "/tasks", Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_ne!(r.json["task_id"], a.as_str(), "a caller's key is not one of Switchyard's");
    let again = admin(&router, "POST", "/tasks", Some(body)).await;
    assert_eq!((again.status, &again.json["task_id"]), (StatusCode::ACCEPTED, &r.json["task_id"]), "{}", again.text);
    assert_eq!(env.lane_len(Lane::Analytics).await, 2, "one entry on the lane per key");
    let other = env.engine.enqueue(sleep_task(10).idempotency_key("order-43")).await.unwrap();
    assert_ne!(other, a, "another key is another task");

    let worker = env.start_worker();
    env.wait_state(&a, TaskState::Success).await;
    env.wait_state(&other, TaskState::Success).await;
    wait_until("every attempt is recorded", async || worker.completed() >= 3).await;
    assert_eq!(worker.completed(), 3, "one run per distinct key");
    assert_eq!(env.status(&a).await.history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_the_dlq_runs_the_task_again() {
    let env = TestEnv::new("redrive").await;
    let (router, _) = env.router();
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 2})).max_attempts(2)).await.unwrap();
    let s = env.wait_state(&id, TaskState::Failure).await;
    assert_eq!(s.attempts, 2);

    let r = admin(&router, "GET", "/dlq", None).await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    let letter = r.json["dead_letters"][0]["id"].as_str().expect("dead letter id").to_string();
    assert_eq!(r.json["dead_letters"][0]["task_id"], id.as_str());

    // A dry run reports and changes nothing.
    let r = admin(&router, "POST", "/dlq/redrive", Some(&json!({"ids": [letter], "dry_run": true}).to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["matched"], 1);
    assert_eq!(r.json["redriven"], 0);
    assert_eq!(r.json["dry_run"], true);
    assert_eq!(r.json["task_ids"], json!([id]));
    let s = env.status(&id).await;
    assert_eq!(s.status, TaskState::Failure);
    assert_eq!(s.dead_letter.as_deref(), Some(letter.as_str()));
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 1);
    assert_eq!(env.lane_len(Lane::Analytics).await, 0);
    assert_eq!(env.engine.queues_status().await.unwrap().queues["analytics"].dead, 1);

    let r = admin(&router, "POST", "/dlq/redrive", Some(&json!({"ids": [letter]}).to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["redriven"], 1);
    assert_eq!(r.json["task_ids"], json!([id]));

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.attempts, 3, "{s:?}");
    assert_eq!(s.history.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(outcomes(&s)[2], "success");
    assert_eq!(s.result, json!({"succeeded_on_attempt": 3}));
    assert!(s.dead_letter.is_none());
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 0);
    let r = admin(&router, "GET", "/dlq", None).await;
    assert_eq!(r.json["total"], 0, "{}", r.text);
    assert_eq!(env.engine.queues_status().await.unwrap().queues["analytics"].dead, 0);
    assert_eq!(admin(&router, "GET", &format!("/dlq/{letter}"), None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_visible_while_running_then_100() {
    let env = TestEnv::new("progress").await;
    let (router, _) = env.router();
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("diag.progress", json!({"steps": 4, "ms": 300}))).await.unwrap();

    let mut seen_while_started = Vec::new();
    let mut last = 0;
    let path = format!("/conversations/tasks/{id}/status");
    wait_until("the progress task succeeds", async || {
        let r = admin(&router, "GET", &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let p = r.json["progress"].as_u64().expect("progress");
        assert!(p >= last, "progress went back from {last} to {p}");
        last = p;
        if r.json["status"] == "STARTED" {
            seen_while_started.push(p);
            assert_eq!(r.json["payload"], json!({"steps": 4, "ms": 300}), "a running task shows its payload");
        }
        r.json["status"] == "SUCCESS"
    })
    .await;
    assert!(
        seen_while_started.iter().any(|p| (1..=99).contains(p)),
        "no progress between 1 and 99 seen while STARTED: {seen_while_started:?}"
    );
    let s = env.status(&id).await;
    assert_eq!(s.progress, 100);
    assert_eq!(s.result, json!({"steps": 4}));
    // The payload was there while it ran; the finished record keeps no copy of it.
    wait_until("the finished entry is trimmed", async || env.lane_len(Lane::Analytics).await == 0).await;
    assert_eq!(env.status(&id).await.payload, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_status_figures() {
    let env = TestEnv::new("queues").await;
    let (router, _) = env.router();
    let queued = env.engine.enqueue_batch((0..3).map(|_| noop()).collect()).await.unwrap();

    let q = env.engine.queues_status().await.unwrap();
    let a = &q.queues["analytics"];
    assert_eq!((a.depth, a.lag, a.pending, a.active, a.retrying, a.dead), (3, 3, 0, 0, 0, 0), "{a:?}");
    assert_eq!(q.queues["conversations"].depth, 0);
    assert_eq!(q.dlq_depth, 0);

    // A dead letter from the conversations lane (a worker on that lane only).
    let worker = env.start_worker_on(env.engine.clone(), |o| o.lanes = vec![Lane::Conversations]);
    let dead =
        env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true})).on_lane(Lane::Conversations)).await;
    env.wait_state(&dead.unwrap(), TaskState::Failure).await;
    worker.stop().await;

    let r = admin(&router, "GET", "/conversations/tasks/queues/status", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let a = &r.json["queues"]["analytics"];
    assert_eq!(
        (&a["depth"], &a["lag"], &a["pending"], &a["dead"]),
        (&json!(3), &json!(3), &json!(0), &json!(0)),
        "{a}"
    );
    let c = &r.json["queues"]["conversations"];
    assert_eq!((&c["depth"], &c["lag"], &c["dead"]), (&json!(0), &json!(0), &json!(1)), "{c}");
    assert_eq!(r.json["dlq_depth"], 1);
    assert_eq!(r.json["queues"]["webhooks"]["dead"], 0);

    // A queued task cancelled: one fewer to read (Redis cannot count past the deleted entry).
    assert_eq!(env.engine.cancel(&queued[1]).await.unwrap(), TaskState::Revoked);
    let a = &env.engine.queues_status().await.unwrap().queues["analytics"];
    assert_eq!((a.depth, a.lag, a.pending), (2, 2, 0), "{a:?}");
}

// ---------------------------------------------------------------------------------------------
// The HTTP API's answers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_documented() {
    // Every route is asked with wrong tokens below: more than one address may give in a minute
    // (auth.rs tests the throttle).
    let env = TestEnv::with("api", &redis_url(), |c| c.auth_failures_per_minute = 1000).await;
    let (router, _) = env.router();
    let task_body = r#"{"kind": "diag.noop"}"#;

    // 401 without a token and with a wrong one, on every admin route; nothing happens.
    let admin_routes: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/tasks", Some(task_body)),
        ("GET", "/tasks/SOMEID", None),
        ("POST", "/tasks/SOMEID/cancel", None),
        ("GET", "/conversations/tasks/SOMEID/status", None),
        ("POST", "/conversations/tasks/SOMEID/cancel", None),
        ("GET", "/conversations/tasks/queues/status", None),
        ("GET", "/conversations/tasks/active", None),
        ("GET", "/dlq", None),
        ("POST", "/dlq/redrive", Some(r#"{"all": true}"#)),
        ("GET", "/dlq/SOMEID", None),
        ("DELETE", "/dlq/SOMEID", None),
    ];
    for &(method, path, body) in admin_routes {
        for token in [None, Some("wrong-token"), Some("test-token-but-longer"), Some("")] {
            let r = http(&router, method, path, token, body).await;
            let what = format!("{method} {path} with token {token:?}");
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
            r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    assert_eq!(env.lane_len(Lane::Analytics).await, 0, "an unauthorised POST /tasks queued nothing");

    // A query that does not parse is a JSON 400 like every other error.
    for path in ["/conversations/tasks/active?limit=many", "/conversations/someone?limit=-1"] {
        let r = admin(&router, "GET", path, None).await;
        r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }

    // No token needed for health, readiness and metrics.
    let r = http(&router, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, &r.json), (StatusCode::OK, &json!({"status": "ok"})));
    let r = http(&router, "GET", "/readyz", None, None).await;
    assert_eq!((r.status, &r.json["ready"]), (StatusCode::OK, &json!(true)));
    let r = http(&router, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("switchyard_http_requests_total"), "metrics text: {}", r.text);

    // The happy paths.
    let r = admin(&router, "POST", "/tasks", Some(task_body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["status"], "PENDING");
    let id = r.json["task_id"].as_str().expect("task_id").to_string();
    for path in [format!("/tasks/{id}"), format!("/conversations/tasks/{id}/status")] {
        let r = admin(&router, "GET", &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(
            (&r.json["task_id"], &r.json["status"], &r.json["kind"]),
            (&json!(id), &json!("PENDING"), &json!("diag.noop"))
        );
    }
    let r = admin(&router, "GET", "/conversations/tasks/queues/status", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["queues"]["analytics"]["depth"], 1);
    let r = admin(&router, "GET", "/conversations/tasks/active", None).await;
    assert_eq!((r.status, &r.json["count"]), (StatusCode::OK, &json!(0)), "{}", r.text);
    let r = admin(&router, "GET", "/dlq", None).await;
    assert_eq!((r.status, &r.json["total"], &r.json["count"]), (StatusCode::OK, &json!(0), &json!(0)), "{}", r.text);

    // 404s.
    for (method, path) in [
        ("GET", "/tasks/NO-SUCH-TASK"),
        ("GET", "/tasks/NOSUCHTASK"),
        ("GET", "/conversations/tasks/NOSUCHTASK/status"),
        ("POST", "/conversations/tasks/NOSUCHTASK/cancel"),
        ("POST", "/tasks/NOSUCHTASK/cancel"),
        ("GET", "/dlq/NOSUCHTASK"),
        ("DELETE", "/dlq/NOSUCHTASK"),
        ("DELETE", "/dlq/0-1"),
        ("DELETE", "/dlq/not-an-entry-id"),
        ("GET", "/no/such/route"),
    ] {
        let r = admin(&router, method, path, None).await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    http(&router, "GET", "/no/such/route", None, None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    admin(&router, "POST", "/dlq/redrive", Some(r#"{"ids": ["NOSUCHTASK"]}"#))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    // 400s.
    let m = admin(&router, "POST", "/tasks", Some(r#"{"kind": "no.such.kind"}"#))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("no.such.kind"), "{m}");
    for body in [r#"{"kind": "diag.noop""#, "not json", "", r#"{"kind": "diag.noop", "colour": "red"}"#, "[]"] {
        admin(&router, "POST", "/tasks", Some(body)).await.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop", "max_attempts": 0}"#))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    for body in ["{}", r#"{"ids": []}"#, r#"{"dry_run": true}"#, "{", r#"{"older_than": "soon"}"#] {
        admin(&router, "POST", "/dlq/redrive", Some(body)).await.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    admin(&router, "GET", "/dlq?older_than=soon", None).await.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(env.lane_len(Lane::Analytics).await, 1, "bad requests queued nothing");

    // 405 with the same error shape.
    http(&router, "DELETE", "/healthz", None, None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    // 409 for cancelling a finished task; a dead letter is shown, then deleted, then gone.
    let worker = env.start_worker();
    env.wait_state(&id, TaskState::Success).await;
    for path in [format!("/conversations/tasks/{id}/cancel"), format!("/tasks/{id}/cancel")] {
        let m = admin(&router, "POST", &path, None).await.assert_error(StatusCode::CONFLICT, "conflict");
        assert!(m.contains("SUCCESS"), "{m}");
    }
    assert_eq!(env.status(&id).await.status, TaskState::Success, "a refused cancel changes nothing");

    let dead = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
    env.wait_state(&dead, TaskState::Failure).await;
    admin(&router, "POST", &format!("/tasks/{dead}/cancel"), None).await.assert_error(StatusCode::CONFLICT, "conflict");
    let r = admin(&router, "GET", &format!("/dlq/{dead}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let letter = r.json["id"].as_str().expect("letter id").to_string();
    assert_eq!(admin(&router, "GET", &format!("/dlq/{letter}"), None).await.json["task_id"], dead.as_str());
    let r = admin(&router, "DELETE", &format!("/dlq/{letter}"), None).await;
    assert_eq!((r.status, &r.json), (StatusCode::OK, &json!({"deleted": 1})), "{}", r.text);
    admin(&router, "DELETE", &format!("/dlq/{letter}"), None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(admin(&router, "GET", "/dlq", None).await.json["total"], 0);
    assert_eq!(env.engine.queues_status().await.unwrap().queues["analytics"].dead, 0);
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Records a user reads while work is retried, trimmed, handed back or partitioned
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_retry_shows_its_own_start_time() {
    let mut registry = Registry::new();
    registry.register("test.fail_then_sleep", Lane::Analytics, |ctx| async move {
        if ctx.attempt == 1 {
            return Outcome::retry("first attempt fails on purpose");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1500)) => Outcome::Done(Value::Null),
            _ = ctx.stopped() => Outcome::retry("stopped"),
        }
    });
    let env = TestEnv::lazy("started-at", &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let _worker = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("test.fail_then_sleep", json!({}))).await.unwrap();

    let s = wait_for("attempt 2 is running", async || {
        env.engine.task_status(&id).await.ok().flatten().filter(|s| s.status == TaskState::Started && s.attempts == 2)
    })
    .await;
    let first = s.history[0].started_at.expect("attempt 1 start");
    let shown = s.started_at.clone().expect("started_at of a running task");
    // Attempt 2 began at least the backoff (≥ 75 ms) after attempt 1.
    assert!(
        shown >= format_ms(first + 75),
        "a task running attempt 2 shows started_at {shown}, attempt 1's start ({}), not its own",
        format_ms(first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_entries_are_trimmed_but_pending_work_is_kept() {
    let mut registry = Registry::new();
    registry.register("test.retry_later", Lane::Analytics, |ctx| async move {
        if ctx.attempt == 1 {
            return Outcome::retry_after(Duration::from_secs(5), "try again in 5 s");
        }
        Outcome::Done(json!({"attempt": ctx.attempt}))
    });
    let env = TestEnv::lazy("trim", &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let _worker = env.start_worker();

    let retrying = env.engine.enqueue(TaskSpec::new("test.retry_later", json!({}))).await.unwrap();
    env.wait_state(&retrying, TaskState::Retry).await;
    let ids =
        env.engine.enqueue_batch((0..30).map(|n| TaskSpec::new("diag.noop", json!({"n": n}))).collect()).await.unwrap();
    for id in &ids {
        env.wait_state(id, TaskState::Success).await;
    }

    // Finished work is gone from the figures; the retrying task is still there.
    let a = env.engine.queues_status().await.unwrap().queues["analytics"].clone();
    assert_eq!(env.status(&retrying).await.status, TaskState::Retry, "the figures were read while it waited");
    assert_eq!((a.depth, a.lag, a.pending, a.retrying, a.active), (1, 0, 1, 1, 0), "{a:?}");

    let s = env.wait_state(&retrying, TaskState::Success).await;
    assert_eq!(s.attempts, 2);
    wait_until("the lane's stream is trimmed to nothing", async || env.lane_len(Lane::Analytics).await == 0).await;
    let a = env.engine.queues_status().await.unwrap().queues["analytics"].clone();
    assert_eq!((a.depth, a.lag, a.pending, a.retrying), (0, 0, 0, 0), "{a:?}");
    // Finished records keep no copy of the payloads their trimmed entries carried.
    assert_eq!(env.status(&ids[7]).await.payload, Value::Null);
    assert_eq!(env.status(&retrying).await.status, TaskState::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_work_past_the_grace_period_at_no_attempt_cost() {
    // Handing back races the stopping worker's own loops, so go through it a few times.
    let rounds = 6;
    for round in 0..rounds {
        let env =
            TestEnv::with(&format!("handback{round}"), &redis_url(), |c| c.shutdown_grace = Duration::from_millis(300))
                .await;
        let first = env.start_worker();
        let id = env.engine.enqueue(sleep_task(1000)).await.unwrap();
        env.wait_state(&id, TaskState::Started).await;
        first.stop().await;

        // Handed back: queued again and due at once for any worker, no attempt used — and not
        // taken again by the worker that just stopped.
        let s = env.status(&id).await;
        assert_eq!(s.status, TaskState::Pending, "round {round}: {s:?}");
        assert!(s.history.iter().all(|a| a.outcome != "retry" && a.outcome != "failure"), "{s:?}");
        let a = env.engine.queues_status().await.unwrap().queues["analytics"].clone();
        assert_eq!(
            (a.pending, a.retrying, a.active),
            (1, 1, 0),
            "round {round}: after wait() returned, the handed-back task must wait for the next worker, \
             not be held by the stopped one: {a:?}"
        );
        let mut con = env.engine.conn();
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(env.lane_key(Lane::Analytics))
            .arg("workers")
            .arg("-")
            .arg("+")
            .arg(10)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].3, 0, "round {round}: the interrupted delivery is not counted: {pending:?}");

        if round == rounds - 1 {
            let second = env.start_worker();
            let s = env.wait_state(&id, TaskState::Success).await;
            assert_eq!(s.attempts, 1, "the handed-back attempt cost nothing: {s:?}");
            assert_eq!(outcomes(&s), ["success"]);
            assert_eq!(s.history[0].worker, Some(second.name()));
            assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
        }
    }
}

/// A registry whose `test.hold` kind runs its first attempt until `gate` is cancelled, ignoring
/// stop requests (as a handler stuck in a call would), and later attempts with `later`.
fn hold_registry(gate: &tokio_util::sync::CancellationToken, later: fn(u32) -> Outcome) -> Registry {
    let mut registry = Registry::new();
    let gate = gate.clone();
    registry.register("test.hold", Lane::Analytics, move |ctx| {
        let gate = gate.clone();
        async move {
            if ctx.attempt == 1 {
                gate.cancelled().await;
                return Outcome::Done(json!({"by": "the partitioned worker"}));
            }
            later(ctx.attempt)
        }
    });
    registry
}

/// Worker A (behind a proxy) runs attempt 1 of `test.hold`; it is then partitioned from Redis,
/// and the attempt ends at once, so its record cannot reach Redis. Worker B (direct) reclaims the
/// task after the visibility timeout.
async fn partitioned_setup(name: &str, later: fn(u32) -> Outcome) -> Partitioned {
    let server = RedisProcess::start_on_free_port();
    let proxy = Proxy::start(server.port).await;
    let gate = tokio_util::sync::CancellationToken::new();
    let env = TestEnv::lazy(name, &server.url(), |_| {}, hold_registry(&gate, later));
    env.engine.ensure_groups().await.unwrap();
    let a = env.start_worker_on(env.engine_via(&proxy.url()), |_| {});
    let a_name = a.name();
    let id = env.engine.enqueue(TaskSpec::new("test.hold", json!({}))).await.unwrap();
    env.wait_started_by(&id, &a_name).await;
    proxy.partition();
    gate.cancel();
    let b = env.start_worker();
    Partitioned { server: Some(server), proxy, env, a, b, id }
}

struct Partitioned {
    server: Option<RedisProcess>,
    proxy: Proxy,
    env: TestEnv,
    a: Worker,
    b: Worker,
    id: String,
}

impl Partitioned {
    /// Reconnect A; wait until its late record reached Redis.
    async fn heal_a(&self) {
        self.proxy.heal();
        wait_until("the partitioned worker recorded its late attempt", async || self.a.completed() >= 1).await;
    }
}

impl Drop for Partitioned {
    fn drop(&mut self) {
        self.a.token.cancel();
        self.b.token.cancel();
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_workers_late_success_is_stale_once_another_finished() {
    let p = partitioned_setup("late-stale", |n| Outcome::Done(json!({"by": "worker B", "attempt": n}))).await;
    let s = p.env.wait_state(&p.id, TaskState::Success).await;
    assert_eq!(s.result, json!({"by": "worker B", "attempt": 2}));
    assert_eq!(s.attempts, 2);

    p.heal_a().await;
    let s = p.env.status(&p.id).await;
    assert_eq!(s.status, TaskState::Success);
    assert_eq!(s.result, json!({"by": "worker B", "attempt": 2}), "the late result must not replace the recorded one");
    assert_eq!(s.attempts, 2, "{s:?}");
    assert_eq!(s.history.iter().filter(|a| a.outcome == "success").count(), 1, "exactly one success: {s:?}");
    assert_eq!(s.history.last().and_then(|a| a.worker.clone()), Some(p.b.name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_workers_late_success_does_not_undo_a_cancel() {
    let p = partitioned_setup("late-cancel", |_| {
        Outcome::retry_after(Duration::from_secs(60), "attempt 2 fails; next try in a minute")
    })
    .await;
    // B reclaimed it, its attempt failed: the task waits out its backoff. An operator cancels.
    wait_until("worker B's attempt failed and the task waits to retry", async || {
        p.env
            .engine
            .task_status(&p.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.status == TaskState::Retry && s.attempts == 2)
    })
    .await;
    assert_eq!(p.env.engine.cancel(&p.id).await.unwrap(), TaskState::Revoked);

    p.heal_a().await;
    let s = p.env.status(&p.id).await;
    assert_eq!(
        s.status,
        TaskState::Revoked,
        "a cancelled task was marked {:?} by a worker whose claim had been taken from it (its entry was no \
         longer pending): {s:?}",
        s.status
    );
    assert_eq!(s.result, Value::Null, "{s:?}");
}

/// A worker cut off from Redis cannot renew its claims; before another worker may reclaim the
/// task (the visibility timeout after the last renewal), it asks the attempt to stop and, as this
/// one does not listen, drops it: the two attempts never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_redis_lets_go_of_its_task_before_another_takes_it() {
    let server = RedisProcess::start_on_free_port();
    let proxy = Proxy::start(server.port).await;
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut registry = Registry::new();
    let l = log.clone();
    registry.register("test.stuck", Lane::Analytics, move |ctx| {
        let log = l.clone();
        async move {
            log.lock().unwrap().push(format!("attempt {} started", ctx.attempt));
            if ctx.attempt > 1 {
                return Outcome::Done(json!({"attempt": ctx.attempt}));
            }
            struct Dropped(Arc<std::sync::Mutex<Vec<String>>>);
            impl Drop for Dropped {
                fn drop(&mut self) {
                    self.0.lock().unwrap().push("attempt 1 dropped".into());
                }
            }
            let _dropped = Dropped(log.clone());
            ctx.stopped().await;
            let reason = ctx.stop_reason().map_or("none", |r| r.as_str());
            log.lock().unwrap().push(format!("attempt 1 asked to stop: {reason}"));
            // Stuck in a call that does not listen.
            std::future::pending::<Outcome>().await
        }
    });
    let env = TestEnv::lazy("fenced", &server.url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let a = env.start_worker_on(env.engine_via(&proxy.url()), |_| {});
    let id = env.engine.enqueue(TaskSpec::new("test.stuck", json!({}))).await.unwrap();
    env.wait_started_by(&id, &a.name()).await;
    proxy.partition();
    let b = env.start_worker();

    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(s.result, json!({"attempt": 2}), "{s:?}");
    assert_eq!(s.history.last().and_then(|h| h.worker.clone()), Some(b.name()), "{s:?}");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "attempt 1 started",
            "attempt 1 asked to stop: claim could not be renewed (Redis unreachable)",
            "attempt 1 dropped",
            "attempt 2 started",
        ],
        "the cut-off worker must let go of attempt 1 before another worker starts attempt 2"
    );

    // Reconnected, the cut-off worker's hand-back finds the task settled and changes nothing.
    proxy.heal();
    wait_until("the cut-off worker holds nothing", async || a.in_flight() == 0).await;
    let s = env.status(&id).await;
    assert_eq!((s.status, s.result.clone()), (TaskState::Success, json!({"attempt": 2})), "{s:?}");
    assert_eq!(outcomes(&s).iter().filter(|o| *o == "success").count(), 1, "{s:?}");
    drop((a, b));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Start-up: the private redis-server and the guardrails
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_redis_server_keeps_an_append_only_file_and_stops() {
    let dir = std::env::temp_dir().join(unique_prefix("private-redis"));
    let p =
        switchyard::redis::server::PrivateRedis::start(&dir, "redis://127.0.0.1:1").await.expect("start redis-server");
    let url = p.url.clone();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.expect("the private server answers");
    let aof: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut con).await.unwrap();
    assert_eq!(aof[1], "yes", "work must survive a restart of the private server");
    let policy: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut con).await.unwrap();
    assert_eq!(policy[1], "noeviction");
    let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut con).await.unwrap();
    drop(con);
    p.stop().await;
    assert!(dir.join("appendonlydir").is_dir(), "the append-only file is under the data directory");
    let gone = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await;
    assert!(gone.is_err(), "the private server is stopped with Switchyard");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_warn_about_settings_that_lose_work() {
    // A server of the test's own, without persistence as many development servers run.
    let server = RedisProcess::start_on_free_port();
    let env = TestEnv::with("guardrails", &server.url(), |_| {}).await;
    let warnings = switchyard::app::guardrails(&env.engine).await.expect("Redis answers");
    assert!(warnings.iter().any(|w| w.contains("persistence is off")), "{warnings:?}");
    let mut con = env.engine.conn();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lru").query_async(&mut con).await.unwrap();
    let warnings = switchyard::app::guardrails(&env.engine).await.expect("Redis answers");
    assert!(warnings.iter().any(|w| w.contains("maxmemory-policy is allkeys-lru")), "{warnings:?}");
    drop(env);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// The key schema
// ---------------------------------------------------------------------------------------------

/// The scripts derive some keys from the root (a task's record from its id, a lane from a dead
/// letter); the functions they do it with, run in Redis, name the same keys as `keys.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_and_rust_name_the_same_keys() {
    use switchyard::redis::keys::{Keys, lua_prelude};
    let prefix = unique_prefix("keys");
    let keys = Keys::new(&prefix);
    let id = "0193a2b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b";
    let lua = format!(
        "{}return {{key_task(ARGV[1], ARGV[2]), key_done(ARGV[1], string.sub(ARGV[2], 1, 11)), \
         key_done(ARGV[1], ARGV[3]), key_lane(ARGV[1], 'conversations'), key_retry(ARGV[1], 'webhooks'), \
         key_order(ARGV[1], 'out:messenger:P:U'), key_parked(ARGV[1], 'out:messenger:P:U'), \
         key_idem(ARGV[1], 6993, 254), key_idem_legacy(ARGV[1], 'api:k'), key_revoked(ARGV[1])}}",
        lua_prelude()
    );
    let client = redis::Client::open(switchyard::redis::node_urls(&redis_url())[0].as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let from_lua: Vec<String> = redis::cmd("EVAL")
        .arg(&lua)
        .arg(0)
        .arg(keys.root())
        .arg(id)
        .arg("01JB8Z5E4Q6V7W8X9Y0Z1A2B3C")
        .query_async(&mut con)
        .await
        .unwrap();
    let from_rust = vec![
        keys.task(id),
        keys.done(id).0,
        keys.done("01JB8Z5E4Q6V7W8X9Y0Z1A2B3C").0,
        keys.lane(Lane::Conversations),
        keys.retry(Lane::Webhooks),
        keys.order("out:messenger:P:U"),
        keys.order_parked("out:messenger:P:U"),
        keys.idempotency_shard(6993, 254),
        keys.idempotency("api:k"),
        keys.revoked(),
    ];
    assert_eq!(from_lua, from_rust);
    assert_eq!(from_rust[0], format!("{{{prefix}}}:task:{id}"));
}

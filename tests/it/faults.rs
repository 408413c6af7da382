//! Races and faults: a worker that lost its claim, a batch replayed after a lost reply, a read
//! whose reply never arrived, and the lane depth limit measured on outstanding work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchyard::engine::{Lane, Outcome, Registry, TaskSpec, TaskState};

fn entry_of(id: &str) -> String {
    switchyard::engine::entry_of_task(id).expect("a task id named after its entry").2
}

/// (owner, deliveries) of a pending entry, or None.
async fn pending_of(env: &TestEnv, lane: Lane, entry: &str) -> Option<(String, u64)> {
    let mut con = env.engine.conn();
    let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(env.lane_key(lane))
        .arg("workers")
        .arg(entry)
        .arg(entry)
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    v.into_iter().next().map(|(_, owner, _, n)| (owner, n))
}

/// A worker whose claim was taken (another worker reclaimed the entry and runs it) is told to
/// stop; its handler returns a retry. That failure must not be recorded — a retry armed under
/// the live owner would be claimed from it and run a second time concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_claim_must_not_rearm_a_retry() {
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = Registry::new();
    let r = runs.clone();
    registry.register("test.slow", Lane::Analytics, move |ctx| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => Outcome::Done(json!({})),
                _ = ctx.stopped() => Outcome::retry("interrupted"),
            }
        }
    });
    let env = TestEnv::lazy("claimlost", &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let a = env.start_worker();
    let id = env.engine.enqueue(TaskSpec::new("test.slow", json!({}))).await.unwrap();
    env.wait_state(&id, TaskState::Started).await;
    let entry = entry_of(&id);

    // Worker "B" reclaims the entry (as claim.lua would after A stopped renewing) and keeps
    // renewing it, as a live worker does, for as long as it still owns it.
    let mut con = env.engine.conn();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(env.lane_key(Lane::Analytics))
        .arg("workers")
        .arg("B")
        .arg(0)
        .arg(&entry)
        .arg("JUSTID")
        .query_async(&mut con)
        .await
        .unwrap();
    let stolen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (env_lane, entry, stolen) = (env.lane_key(Lane::Analytics), entry.clone(), stolen.clone());
        let mut con = env.engine.conn();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                    .arg(&env_lane)
                    .arg("workers")
                    .arg(&entry)
                    .arg(&entry)
                    .arg(1)
                    .query_async(&mut con)
                    .await
                    .unwrap_or_default();
                match v.first() {
                    Some((_, owner, _, _)) if owner == "B" => {
                        let _: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
                            .arg(&env_lane)
                            .arg("workers")
                            .arg("B")
                            .arg(0)
                            .arg(&entry)
                            .arg("JUSTID")
                            .query_async(&mut con)
                            .await;
                    }
                    _ => {
                        stolen.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Nothing may happen in this window: the stopped worker must not record its interrupted
    // attempt while B holds the entry.
    let s = env.status(&id).await;
    let p = pending_of(&env, Lane::Analytics, &entry).await;
    assert!(!stolen.load(Ordering::SeqCst), "the entry was taken from live worker B: {p:?}, {s:?}");
    assert_ne!(s.status, TaskState::Retry, "a retry was armed under the live owner: {s:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again while B held the entry");
    drop(a);
}

/// A commit batch that Redis applied but whose reply timed out is written again. The replay must
/// change nothing once another worker has claimed the entry: no second count decrement, no
/// retry armed under the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_fail_batch_after_a_timeout_is_harmless() {
    let env = TestEnv::new("failreplay").await;
    let id = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    let entry = entry_of(&id);
    let lane = env.lane_key(Lane::Analytics);
    let retry = env.engine.keys().retry(Lane::Analytics);
    let mut con = env.engine.conn();
    // Worker A read it (delivery 1) and is handing it back at shutdown.
    env.read_as(Lane::Analytics, "A", 1).await;
    let script = &env.engine.scripts().fail;
    let fail = |con: &mut switchyard::redis::Conn| {
        let mut inv = script.prepare_invoke();
        inv.key(env.engine.keys().dlq()).key(env.engine.keys().dlq_lanes()).key(&lane).key(&retry);
        inv.arg(env.engine.keys().root()).arg("workers").arg(1).arg(60_000).arg(0).arg("A").arg(100);
        inv.arg(&id).arg(&entry).arg(1).arg("{}").arg("handed back").arg(1).arg("PENDING").arg(0);
        let mut con = con.clone();
        async move { inv.invoke_async::<Vec<String>>(&mut con).await.unwrap() }
    };
    assert_eq!(fail(&mut con).await, ["PENDING"]); // applied; the reply is lost to a timeout
    // Worker B claims the due hand-back (what claim.lua does) and starts it.
    let _: redis::Value = redis::cmd("ZREM").arg(&retry).arg(&entry).query_async(&mut con).await.unwrap();
    let _: redis::Value =
        redis::cmd("XCLAIM").arg(&lane).arg("workers").arg("B").arg(0).arg(&entry).query_async(&mut con).await.unwrap();
    let before = pending_of(&env, Lane::Analytics, &entry).await;
    // A's commit loop retries the same batch.
    let again = fail(&mut con).await;
    assert_eq!(again, ["STALE"], "the replay finds the entry moved on");
    let after = pending_of(&env, Lane::Analytics, &entry).await;
    let in_retry: Option<f64> = redis::cmd("ZSCORE").arg(&retry).arg(&entry).query_async(&mut con).await.unwrap();
    assert!(
        in_retry.is_none(),
        "entry held by B was put back in the retry set: another worker will XCLAIM it while B runs it"
    );
    assert_eq!(before, after, "delivery count changed by the replay");
}

/// An entry delivered to a live worker whose reply never reached it (connection dropped or
/// response timed out after Redis applied the read) is pending to that worker but unknown to
/// it. In a one-worker deployment the worker itself must reclaim it after the visibility
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_read_reply_was_lost_is_reclaimed() {
    let env = TestEnv::new("lostreply").await;
    let w = env.start_worker_on(env.engine.clone(), |o| {
        o.lanes = vec![Lane::Analytics];
        o.concurrency = 1;
        o.lane_concurrency = [1, 1, 1];
    });
    // Keep the worker busy so its own loop does not read the next entry.
    let busy = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 1500}))).await.unwrap();
    env.wait_state(&busy, TaskState::Started).await;
    let id = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    // The read Redis applied for this worker but whose reply was lost on the way back.
    env.read_as(Lane::Analytics, &w.name(), 1).await;
    env.wait_state(&busy, TaskState::Success).await;
    // After a visibility timeout (2 s in tests) the worker takes back what it forgot it had.
    env.wait_state(&id, TaskState::Success).await;
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
    drop(w);
}

/// The depth limit holds when a lane is already above it (after a redrive, or a lowered limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_limit_holds_when_the_stream_is_already_over_it() {
    let env = TestEnv::with("depthneg", &redis_url(), |c| c.lane_depth_limit = 2).await;
    let mut con = env.engine.conn();
    for _ in 0..3 {
        // e.g. a redrive, which ignores the limit, or a limit lowered at restart
        let _: String = redis::cmd("XADD")
            .arg(env.lane_key(Lane::Analytics))
            .arg("*")
            .arg("id")
            .arg("x")
            .arg("kind")
            .arg("diag.noop")
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let r = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await;
    assert!(r.is_err(), "a lane with 3 queued entries and a limit of 2 accepted another");
}

/// Acknowledged entries waiting behind one pending entry (a long task, or a task waiting out a
/// backoff) to be trimmed do not count against the depth limit: only outstanding work does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_entries_do_not_count_against_the_depth_limit() {
    let env = TestEnv::with("depthpin", &redis_url(), |c| c.lane_depth_limit = 3).await;
    let _w = env.start_worker();
    let slow = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 20000}))).await.unwrap();
    env.wait_state(&slow, TaskState::Started).await;
    for _ in 0..2 {
        let id = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
        env.wait_state(&id, TaskState::Success).await;
    }
    // One task is queued or running; the limit is 3.
    let r = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await;
    assert!(r.is_ok(), "refused as full while only one task was live");
}

/// A stream entry that is not a task (written by hand, or by a foreign producer) is moved to the
/// DLQ with its raw fields: it neither circulates between workers nor holds back trimming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_is_not_a_task_goes_to_the_dlq_with_its_fields() {
    let env = TestEnv::new("malformed").await;
    let mut con = env.engine.conn();
    let _: String = redis::cmd("XADD")
        .arg(env.lane_key(Lane::Analytics))
        .arg("*")
        .arg("hello")
        .arg("world")
        .query_async(&mut con)
        .await
        .unwrap();
    let _w = env.start_worker();
    let ok = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    env.wait_state(&ok, TaskState::Success).await;
    let letters = wait_for("the malformed entry in the DLQ", async || {
        let l = env.engine.dlq_list(&Default::default(), 10).await.unwrap();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(letters[0].error.contains("malformed"), "{:?}", letters[0]);
    assert_eq!(letters[0].payload, json!({"hello": "world"}));
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
    assert_eq!(env.engine.queues_status().await.unwrap().queues["analytics"].dead, 1);
}

/// With `DLQ_MAX` set, the oldest dead letters make room for new ones, and the per-lane counts
/// and the dropped tasks' records follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_dlq_keeps_its_counts_true() {
    let env = TestEnv::with("dlqcap", &redis_url(), |c| c.dlq_max = 2).await;
    let _w = env.start_worker();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
        env.wait_state(&id, TaskState::Failure).await;
        ids.push(id);
    }
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 2);
    assert_eq!(env.engine.queues_status().await.unwrap().queues["analytics"].dead, 2);
    assert!(env.engine.dlq_get(&ids[0]).await.unwrap().is_none(), "the oldest letter made room");
    let mut con = env.engine.conn();
    let ttl: i64 = redis::cmd("PTTL").arg(env.engine.keys().task(&ids[0])).query_async(&mut con).await.unwrap();
    assert!(ttl > 0, "the dropped task's record expires like any finished task's ({ttl})");
}

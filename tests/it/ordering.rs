//! Ordered tasks: tasks queued with the same order key run one at a time, in queue order, across
//! workers; a task waiting for its turn spends no attempt, and a predecessor that was cancelled,
//! dead-lettered or succeeded never blocks the ones behind it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};
use switchyard::engine::{Lane, Outcome, Registry, TaskSpec, TaskState};

/// (key, index, start, end) of every run.
type Runs = Arc<Mutex<Vec<(String, u64, Instant, Instant)>>>;

/// `test.step {"key", "i", "ms", "fail_first"?, "dead_first"?, "retry_long"?}`: sleeps (deaf to
/// stop requests, as a handler in the middle of a call is), records its run. Its first attempt
/// fails with `fail_first` (retry), `dead_first` (permanently) or `retry_long` (retry in a minute).
fn registry(runs: &Runs) -> Registry {
    let mut r = Registry::new();
    let seen = runs.clone();
    r.register("test.step", Lane::Conversations, move |ctx| {
        let seen = seen.clone();
        async move {
            let start = Instant::now();
            let first = ctx.attempt == 1;
            if first && ctx.payload["dead_first"] == json!(true) {
                return Outcome::fail("dead on purpose");
            }
            if first && ctx.payload["retry_long"] == json!(true) {
                return Outcome::retry_after(Duration::from_secs(60), "a long backoff on purpose");
            }
            tokio::time::sleep(Duration::from_millis(ctx.payload["ms"].as_u64().unwrap_or(0))).await;
            if first && ctx.payload["fail_first"] == json!(true) {
                return Outcome::retry("first attempt fails on purpose");
            }
            let key = ctx.payload["key"].as_str().unwrap_or_default().to_string();
            seen.lock().unwrap().push((key, ctx.payload["i"].as_u64().unwrap_or(0), start, Instant::now()));
            Outcome::Done(Value::Null)
        }
    });
    r
}

fn step(key: &str, i: u64, ms: u64) -> TaskSpec {
    TaskSpec::new("test.step", json!({"key": key, "i": i, "ms": ms})).ordered_by(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_runs_one_at_a_time_in_queue_order_across_workers() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let (keys, per_key) = (["a", "b", "c"], 8u64);
    let mut specs = Vec::new();
    for i in 0..per_key {
        for k in keys {
            specs.push(step(k, i, fastrand::u64(0..15)));
        }
    }
    env.engine.enqueue_batch(specs).await.unwrap();
    let _w1 = env.start_worker();
    let _w2 = env.start_worker();
    wait_until("every task ran", async || runs.lock().unwrap().len() == keys.len() * per_key as usize).await;

    let runs = runs.lock().unwrap().clone();
    for k in keys {
        let mine: Vec<_> = runs.iter().filter(|r| r.0 == k).collect();
        let order: Vec<u64> = mine.iter().map(|r| r.1).collect();
        assert_eq!(order, (0..per_key).collect::<Vec<_>>(), "key {k} ran out of order");
        for w in mine.windows(2) {
            assert!(w[1].2 >= w[0].3, "key {k}: task {} started before task {} ended", w[1].1, w[0].1);
        }
    }
    // Different keys are not serialized behind each other: some runs of different keys overlap.
    let overlapping = runs.iter().any(|a| runs.iter().any(|b| a.0 != b.0 && a.2 < b.3 && b.2 < a.3));
    assert!(overlapping, "tasks of different order keys should run side by side");
}

/// Tasks are numbered in their key's sequence as workers read them. Workers that read one entry
/// at a time, racing each other while bursts keep arriving, still number and run every key's
/// tasks in the order they were queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_given_at_read_follow_queue_order_with_racing_readers() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-race", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let workers: Vec<_> = (0..3).map(|_| env.start_worker_on(env.engine.clone(), |o| o.batch = 1)).collect();
    let (keys, bursts, per_burst) = (["a", "b"], 6u64, 4u64);
    for b in 0..bursts {
        let mut specs = Vec::new();
        for i in 0..per_burst {
            for k in keys {
                specs.push(step(k, b * per_burst + i, fastrand::u64(0..5)));
            }
        }
        env.engine.enqueue_batch(specs).await.unwrap();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..20))).await;
    }
    let total = keys.len() * (bursts * per_burst) as usize;
    wait_until("every task ran", async || runs.lock().unwrap().len() == total).await;
    let runs = runs.lock().unwrap().clone();
    for k in keys {
        let order: Vec<u64> = runs.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
        assert_eq!(order, (0..bursts * per_burst).collect::<Vec<_>>(), "key {k} ran out of order");
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retrying_task_holds_back_the_next_and_waiting_costs_no_attempt() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-retry", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let first = env
        .engine
        .enqueue(TaskSpec::new("test.step", json!({"key": "k", "i": 0, "fail_first": true})).ordered_by("k"))
        .await
        .unwrap();
    let second = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let _w = env.start_worker();

    let s1 = env.wait_state(&first, TaskState::Success).await;
    let s2 = env.wait_state(&second, TaskState::Success).await;
    assert_eq!(s1.attempts, 2, "{s1:?}");
    assert_eq!(s2.attempts, 1, "waiting for its turn must not spend an attempt: {s2:?}");
    assert_eq!(outcomes(&s2), ["success"], "{s2:?}");
    let order: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(order, [0, 1], "the second task ran before the first one's retry succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_and_dead_predecessors_do_not_block_the_sequence() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-settled", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let dead = env
        .engine
        .enqueue(TaskSpec::new("diag.fail", json!({"permanent": true})).on_lane(Lane::Conversations).ordered_by("k"))
        .await
        .unwrap();
    let cancelled = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let last = env.engine.enqueue(step("k", 2, 0)).await.unwrap();
    env.engine.cancel(&cancelled).await.unwrap();
    let _w = env.start_worker();

    env.wait_state(&dead, TaskState::Failure).await;
    let s = env.wait_state(&last, TaskState::Success).await;
    assert_eq!(s.attempts, 1, "{s:?}");
    assert_eq!(env.status(&cancelled).await.status, TaskState::Revoked);
    let order: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(order, [2], "only the last task runs: the first is dead, the second cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_behind_a_long_one_is_parked_and_woken_when_it_settles() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-park", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let long = env.engine.enqueue(step("k", 0, 1500)).await.unwrap();
    let next = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let _w = env.start_worker();

    // While the first runs, the second waits parked in Redis: listed under the key, holding no
    // worker slot, its entry due only at the safety net.
    let parked = env.engine.keys().order_parked("k");
    let mut con = env.engine.conn();
    wait_until("the second task is parked", async || {
        let n: u64 = redis::cmd("HLEN").arg(&parked).query_async(&mut con).await.unwrap();
        n == 1
    })
    .await;
    assert_eq!(env.status(&long).await.status, TaskState::Started);
    assert_eq!(env.status(&next).await.status, TaskState::Pending);

    // The first settling wakes it: the parked list is emptied by that commit, not by a timer.
    env.wait_state(&long, TaskState::Success).await;
    let left: u64 = redis::cmd("HLEN").arg(&parked).query_async(&mut con).await.unwrap();
    assert_eq!(left, 0, "settling the first task wakes the parked one");
    let s = env.wait_state(&next, TaskState::Success).await;
    assert_eq!(s.attempts, 1, "parking costs no attempt: {s:?}");
    assert_eq!(outcomes(&s), ["success"]);
    let order: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(order, [0, 1]);
}

/// The run of task `i` (start, end), once it ran.
fn run_of(runs: &Runs, i: u64) -> Option<(Instant, Instant)> {
    runs.lock().unwrap().iter().find(|r| r.1 == i).map(|r| (r.2, r.3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_task_holds_back_the_next_until_its_handler_has_stopped() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-cancel-running", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let first = env.engine.enqueue(step("k", 0, 1500)).await.unwrap();
    let next = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let _w = env.start_worker();
    env.wait_state(&first, TaskState::Started).await;
    env.engine.cancel(&first).await.unwrap();
    env.wait_state(&next, TaskState::Success).await;
    // The first handler is deaf to the cancel: it runs its 1.5 s and records its run.
    let (_, first_end) = run_of(&runs, 0).expect("the cancelled handler ran to its end");
    let (next_start, _) = run_of(&runs, 1).unwrap();
    assert!(next_start >= first_end, "the next task started while the cancelled one still ran");
    assert_eq!(env.status(&first).await.status, TaskState::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_parks_waiting_tasks_instead_of_running_them() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy(
        "ordered-shutdown",
        &redis_url(),
        |c| c.shutdown_grace = Duration::from_millis(10),
        registry(&runs),
    );
    env.engine.ensure_groups().await.unwrap();
    let first = env.engine.enqueue(step("k", 0, 1500)).await.unwrap();
    let next = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let w = env.start_worker();
    env.wait_state(&first, TaskState::Started).await;
    w.stop().await;
    assert!(run_of(&runs, 1).is_none(), "the waiting task ran at shutdown, before the one before it settled");
    let s = env.status(&next).await;
    assert_eq!(s.status, TaskState::Pending, "handed back: {s:?}");

    // Another worker finishes both, in order; waiting cost the second no attempt.
    let _w2 = env.start_worker();
    let s = env.wait_state(&next, TaskState::Success).await;
    assert_eq!(outcomes(&s), ["success"], "{s:?}");
    let (next_start, _) = run_of(&runs, 1).unwrap();
    let (_, first_end) = run_of(&runs, 0).expect("the first task ran");
    assert!(next_start >= first_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redriven_task_keeps_its_place_and_wakes_the_next() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-redrive", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let first = env
        .engine
        .enqueue(TaskSpec::new("test.step", json!({"key": "k", "i": 0, "ms": 600, "dead_first": true})).ordered_by("k"))
        .await
        .unwrap();
    let w = env.start_worker();
    let dead = env.wait_state(&first, TaskState::Failure).await;
    w.stop().await;
    let next = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let letter = dead.dead_letter.clone().expect("a dead letter");
    env.engine.dlq_redrive(&[letter], &Default::default(), false, false, |_| {}).await.unwrap();
    let entries = env.lane_entries(Lane::Conversations).await;
    assert_eq!(entries.len(), 2, "{entries:?}");

    let _w = env.start_worker();
    env.wait_state(&next, TaskState::Success).await;
    let order: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(order, [0, 1], "the redriven task runs before the one queued behind it");
    // The redriven task settling woke the next one: nothing is left parked.
    let mut con = env.engine.conn();
    let parked: u64 = redis::cmd("HLEN").arg(env.engine.keys().order_parked("k")).query_async(&mut con).await.unwrap();
    assert_eq!(parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_tasks_do_not_hide_a_dead_workers_entries() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-reclaim", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let small = |o: &mut switchyard::engine::worker::WorkerOptions| {
        o.concurrency = 2;
        o.lane_concurrency = [2, 2, 2];
    };
    // A head waiting out a long retry, and twenty tasks parked behind it.
    let head = env
        .engine
        .enqueue(TaskSpec::new("test.step", json!({"key": "k", "i": 0, "retry_long": true})).ordered_by("k"))
        .await
        .unwrap();
    env.engine.enqueue_batch((1..=20).map(|i| step("k", i, 0)).collect()).await.unwrap();
    let w1 = env.start_worker_on(env.engine.clone(), small);
    env.wait_state(&head, TaskState::Retry).await;
    let parked = env.engine.keys().order_parked("k");
    let mut con = env.engine.conn();
    wait_until("twenty tasks parked", async || {
        let n: u64 = redis::cmd("HLEN").arg(&parked).query_async(&mut con).await.unwrap();
        n == 20
    })
    .await;
    w1.stop().await;

    // A worker dies holding an unrelated task: another one reclaims it past the parked entries.
    let lone = env.engine.enqueue(TaskSpec::new("test.step", json!({"key": "x", "i": 99, "ms": 100}))).await.unwrap();
    let w2 = env.start_worker_on(env.engine.clone(), small);
    env.wait_started_by(&lone, &w2.name()).await;
    w2.kill();
    let w3 = env.start_worker_on(env.engine.clone(), small);
    env.wait_started_by(&lone, &w3.name()).await;
    env.wait_state(&lone, TaskState::Success).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cancelled_while_queued_lets_no_one_pass_the_task_before_it() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-cancel-queued", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let head = env.engine.enqueue(step("k", 0, 400)).await.unwrap();
    let middle = env.engine.enqueue(step("k", 1, 0)).await.unwrap();
    let last = env.engine.enqueue(step("k", 2, 0)).await.unwrap();
    env.engine.cancel(&middle).await.unwrap();
    let _w = env.start_worker();
    env.wait_state(&last, TaskState::Success).await;
    assert_eq!(env.status(&head).await.status, TaskState::Success);
    let ran: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(ran, [0, 2], "the last task ran before the first, past the cancelled one between them");
    let (last_start, _) = run_of(&runs, 2).unwrap();
    let (_, head_end) = run_of(&runs, 0).unwrap();
    assert!(last_start >= head_end);
}

/// A key's sequence is kept only while it has a task to order: once the last task numbered has
/// succeeded with every one before it settled, the key holds nothing, and the next task of the
/// key starts a new sequence and runs at once. A last task that died keeps it, for its redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_tasks_have_all_settled_keeps_no_sequence() {
    let runs: Runs = Arc::default();
    let env = TestEnv::lazy("ordered-drop", &redis_url(), |_| {}, registry(&runs));
    env.engine.ensure_groups().await.unwrap();
    let order_exists = async |env: &TestEnv| -> bool {
        let mut con = env.engine.conn();
        redis::cmd("EXISTS").arg(env.engine.keys().order("k")).query_async::<u64>(&mut con).await.unwrap() == 1
    };
    let dead = TaskSpec::new("test.step", json!({"key": "k", "i": 1, "dead_first": true})).ordered_by("k");
    let ids = env.engine.enqueue_batch(vec![step("k", 0, 200), dead, step("k", 2, 5)]).await.unwrap();
    let _w = env.start_worker();
    // While the first runs, the sequence numbers all three.
    env.wait_state(&ids[0], TaskState::Started).await;
    assert!(order_exists(&env).await, "a key with tasks to order keeps its sequence");
    env.wait_state(&ids[1], TaskState::Failure).await;
    env.wait_state(&ids[2], TaskState::Success).await;
    assert!(!order_exists(&env).await, "the last task succeeded with every one before it settled: no sequence is left");

    let again = env.engine.enqueue(step("k", 3, 0)).await.unwrap();
    env.wait_state(&again, TaskState::Success).await;
    let order: Vec<u64> = runs.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(order, [0, 2, 3]);
    assert!(!order_exists(&env).await, "the new sequence went with its one task");

    let last = TaskSpec::new("test.step", json!({"key": "k", "i": 4, "dead_first": true})).ordered_by("k");
    let last = env.engine.enqueue(last).await.unwrap();
    env.wait_state(&last, TaskState::Failure).await;
    assert!(order_exists(&env).await, "a last task that died keeps its place in the sequence");
}

//! The scheduler: each tick fired once across processes, a dead lease holder replaced, a stale
//! one fenced out, and the schedules' API.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::{Engine, Lane};
use switchyard::schedule::{self, ScheduleDef};
use tokio_util::sync::CancellationToken;

/// A schedule firing `diag.noop` every second.
fn every_second() -> Vec<ScheduleDef> {
    vec![ScheduleDef::new("tick", "* * * * * *", "diag.noop", json!({})).unwrap()]
}

/// The ticks the queued tasks were fired for, in order, and how many tasks there were.
async fn fired(env: &TestEnv) -> (Vec<String>, usize) {
    let tasks = env.lane_tasks(Lane::Analytics).await;
    let ticks: Vec<String> =
        tasks.iter().filter_map(|t| t.payload["scheduled_for"].as_str().map(str::to_string)).collect();
    let n = tasks.len();
    let mut sorted = ticks.clone();
    sorted.sort();
    (sorted, n)
}

/// Every tick between the first and the last fired, once: consecutive seconds, no repeats.
fn assert_each_tick_once(ticks: &[String], tasks: usize) {
    assert_eq!(ticks.len(), tasks, "every queued task belongs to a tick");
    let unique: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let secs: Vec<i64> = ticks
        .iter()
        .map(|t| humantime::parse_rfc3339(t).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64)
        .collect();
    for w in secs.windows(2) {
        assert_eq!(w[1] - w[0], 1, "a tick was skipped: {ticks:?}");
    }
}

async fn lease_env(name: &str) -> TestEnv {
    TestEnv::with(name, &redis_url(), |c| c.scheduler_lease = Duration::from_secs(1)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_fire_each_tick_once() {
    let env = lease_env("sched-two").await;
    let stop = CancellationToken::new();
    let a = schedule::start(env.engine.clone(), every_second(), "sched-a".into(), stop.clone());
    let b = schedule::start(env.second_engine(), every_second(), "sched-b".into(), stop.clone());
    // Before its first tick a schedule has no last run.
    let mut con = env.engine.conn();
    wait_until("the schedule is known", async || {
        let t: Option<String> = redis::cmd("HGET")
            .arg(env.engine.keys().schedule("tick"))
            .arg("last_tick")
            .query_async(&mut con)
            .await
            .unwrap();
        t.is_some()
    })
    .await;
    wait_until("five ticks fired", async || fired(&env).await.1 >= 5).await;
    stop.cancel();
    let _ = tokio::join!(a, b);
    let (ticks, n) = fired(&env).await;
    assert_each_tick_once(&ticks, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_lease_holder_dies_the_other_takes_over_and_misses_no_tick() {
    let env = lease_env("sched-takeover").await;
    let stop = CancellationToken::new();
    let a = schedule::start(env.engine.clone(), every_second(), "sched-a".into(), stop.clone());
    let b = schedule::start(env.second_engine(), every_second(), "sched-b".into(), stop.clone());
    wait_until("two ticks fired", async || fired(&env).await.1 >= 2).await;
    let mut con = env.engine.conn();
    let holder: String =
        redis::cmd("GET").arg(env.engine.keys().scheduler_lease()).query_async(&mut con).await.unwrap();
    // Kill the holder: it neither fires nor releases its lease.
    let (dead, survivor, survivor_name) = if holder == "sched-a" { (a, b, "sched-b") } else { (b, a, "sched-a") };
    dead.abort();
    let before = fired(&env).await.1;
    wait_until("the other process holds the lease", async || {
        let h: Option<String> =
            redis::cmd("GET").arg(env.engine.keys().scheduler_lease()).query_async(&mut con).await.unwrap();
        h.as_deref() == Some(survivor_name)
    })
    .await;
    wait_until("ticks go on", async || fired(&env).await.1 >= before + 3).await;
    stop.cancel();
    let _ = survivor.await;
    let (ticks, n) = fired(&env).await;
    assert_each_tick_once(&ticks, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_holder_cannot_record_a_tick() {
    let env = lease_env("sched-fence").await;
    let e: &Engine = &env.engine;
    let mut con = e.conn();
    let take = |me: &'static str, held: &'static str| {
        let mut con = e.conn();
        async move {
            let t: u64 = e
                .scripts()
                .lease
                .key(e.keys().scheduler_lease())
                .key(e.keys().scheduler_fence())
                .arg(me)
                .arg(60_000)
                .arg(held)
                .invoke_async(&mut con)
                .await
                .unwrap();
            t
        }
    };
    let old = take("a", "").await;
    assert!(old > 0);
    assert_eq!(take("b", "").await, 0, "the lease is held");
    // a stalls past its lease; b takes over with a new token.
    let _: () = redis::cmd("DEL").arg(e.keys().scheduler_lease()).query_async(&mut con).await.unwrap();
    let new = take("b", "").await;
    assert!(new > old);
    let record = |me: &'static str, token: u64| {
        let mut con = e.conn();
        async move {
            let ok: i64 = e
                .scripts()
                .fire
                .key(e.keys().scheduler_lease())
                .key(e.keys().scheduler_fence())
                .key(e.keys().schedule("tick"))
                .arg(me)
                .arg(token)
                .arg(1000)
                .arg(1000)
                .arg("T1")
                .arg(2000)
                .invoke_async(&mut con)
                .await
                .unwrap();
            ok
        }
    };
    assert_eq!(record("a", old).await, 0, "the stale holder is fenced out");
    assert_eq!(record("b", new).await, 1);
    let last: String =
        redis::cmd("HGET").arg(e.keys().schedule("tick")).arg("last_task").query_async(&mut con).await.unwrap();
    assert_eq!(last, "T1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_and_can_run_now() {
    // Schedules that cannot tick during the test (yearly), so "nothing ran yet" holds.
    let env = TestEnv::with("sched-api", &redis_url(), |c| {
        c.schedules.insert("performance_report".into(), "0 0 0 1 1 *".into());
        c.schedules.insert("cleanup".into(), "0 0 0 1 1 *".into());
    })
    .await;
    let (router, _) = env.router();
    // A scheduler has seen the configured schedules; none has ticked yet.
    let stop = CancellationToken::new();
    let _s = schedule::start(
        env.engine.clone(),
        schedule::from_config(env.engine.config()),
        "sched-api".into(),
        stop.clone(),
    );
    let mut con = env.engine.conn();
    wait_until("the scheduler knows the schedules", async || {
        let t: Option<String> = redis::cmd("HGET")
            .arg(env.engine.keys().schedule("cleanup"))
            .arg("last_tick")
            .query_async(&mut con)
            .await
            .unwrap();
        t.is_some()
    })
    .await;
    let r = admin(&router, "GET", "/schedules", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let list = r.json["schedules"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cleanup", "performance_report"]);
    assert_eq!(list[1]["cron"], "0 0 0 1 1 *", "the configured expression");
    assert_eq!(list[1]["kind"], "analytics.performance_report");
    assert!(list[1]["next_run"].is_string() && list[1]["last_run"].is_null(), "nothing ran yet: {}", list[1]);
    assert_eq!(r.json["leader"], "sched-api");

    let r = admin(&router, "POST", "/schedules/cleanup/run", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
    let task = r.json["task_id"].as_str().unwrap().to_string();
    let _w = env.start_worker();
    let r = wait_for("the run's result is listed", async || {
        let r = admin(&router, "GET", "/schedules", None).await;
        let c = r.json["schedules"][0].clone();
        (c["last_result"]["status"] == "SUCCESS").then_some(c)
    })
    .await;
    assert_eq!(r["last_task_id"], task.as_str());
    assert!(r["last_run"].is_string());
    let message =
        admin(&router, "POST", "/schedules/nope/run", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "no schedule named `nope`");
}

//! The history of finished tasks: `GET /tasks` lists what succeeded, died or was cancelled,
//! newest first across partitions, filtered by state, kind, lane and time, a page at a time;
//! it keeps at most `TASK_HISTORY`; the lanes' list no longer shows a finished task.

use std::collections::HashSet;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::engine::{Lane, TaskSpec, TaskState, now_ms};

/// The task ids of a listing, in its order.
fn ids(listing: &Value) -> Vec<String> {
    listing["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_listed_newest_first_with_filters_and_pages() {
    let env = TestEnv::with("history", &redis_url(), |c| {
        c.partitions = c.partitions.max(3);
        c.max_retries = 0;
    })
    .await;
    let (router, _) = env.router();
    let _w = env.start_worker();

    let mut succeeded = Vec::new();
    for i in 0..12 {
        succeeded.push(env.engine.enqueue(TaskSpec::new("diag.noop", json!({"i": i}))).await.unwrap());
    }
    let on_webhooks = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).on_lane(Lane::Webhooks)).await.unwrap();
    let died = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
    let never_ran = env
        .engine
        .enqueue(TaskSpec::new("diag.noop", json!({})).delayed(std::time::Duration::from_secs(3600)))
        .await
        .unwrap();
    let stopped = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60_000}))).await.unwrap();
    for id in succeeded.iter().chain([&on_webhooks]) {
        env.wait_state(id, TaskState::Success).await;
    }
    env.wait_state(&died, TaskState::Failure).await;
    env.wait_state(&stopped, TaskState::Started).await;
    assert_eq!(admin(&router, "POST", &format!("/tasks/{never_ran}/cancel"), None).await.status, StatusCode::OK);
    // (in another millisecond: within one, tasks of different partitions order by partition)
    let cancelled_at = now_ms();
    wait_until("the next millisecond", async || now_ms() > cancelled_at).await;
    assert_eq!(admin(&router, "POST", &format!("/tasks/{stopped}/cancel"), None).await.status, StatusCode::OK);

    let all = admin(&router, "GET", "/tasks", None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.json["count"], 16, "{}", all.text);
    assert_eq!(all.json["next"], Value::Null, "one page holds them all");
    let listed = ids(&all.json);
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 16, "each once: {listed:?}");
    assert_eq!(&listed[..2], [stopped.as_str(), never_ran.as_str()], "the latest first");
    let times: Vec<&str> =
        all.json["tasks"].as_array().unwrap().iter().map(|t| t["finished_at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");

    let task = |id: &str| all.json["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == id).unwrap().clone();
    let ok = task(&succeeded[0]);
    assert_eq!(
        (ok["kind"].as_str(), ok["lane"].as_str(), ok["state"].as_str()),
        (Some("diag.noop"), Some("analytics"), Some("SUCCESS"))
    );
    assert!(ok["run_ms"].is_u64(), "{ok}");
    assert_eq!(task(&died)["state"], "FAILURE");
    assert!(task(&died)["run_ms"].is_u64());
    assert_eq!(task(&never_ran)["state"], "REVOKED");
    assert_eq!(task(&never_ran)["run_ms"], Value::Null, "it never ran");
    assert_eq!(task(&stopped)["state"], "REVOKED");
    assert!(task(&stopped)["run_ms"].is_u64(), "it had run a while: {}", task(&stopped));

    let only = |q: &str| {
        let router = router.clone();
        let q = q.to_string();
        async move {
            let r = admin(&router, "GET", &format!("/tasks?{q}"), None).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
            ids(&r.json)
        }
    };
    assert_eq!(only("state=FAILURE").await, [died.as_str()]);
    assert_eq!(only("state=revoked").await, [stopped.clone(), never_ran.clone()]);
    assert_eq!(only("lane=webhooks").await, [on_webhooks.as_str()]);
    assert_eq!(only("kind=diag.sleep").await, [stopped.as_str()]);
    assert_eq!(only("kind=diag.noop&state=SUCCESS").await.len(), 13);
    assert_eq!(only("kind=*.fail").await, [died.as_str()]);
    assert_eq!(only("kind=diag.*").await.len(), 16);
    assert_eq!(only("since=2099-01-01T00:00:00Z").await.len(), 0, "nothing finished in the future");
    assert_eq!(only("since=1h").await.len(), 16);

    // Pages of three: every task once, in the same order as the one page, then no cursor.
    let mut paged = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let r = admin(&router, "GET", &format!("/tasks?limit=3&after={after}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.json["count"].as_u64().unwrap() <= 3);
        paged.extend(ids(&r.json));
        match r.json["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, listed, "the pages, one after the other, are the whole list");
    let filtered = admin(&router, "GET", "/tasks?state=SUCCESS&limit=5", None).await;
    let next = filtered.json["next"].as_str().expect("more than five succeeded").to_string();
    let rest = admin(&router, "GET", &format!("/tasks?state=SUCCESS&limit=100&after={next}"), None).await;
    assert_eq!(ids(&filtered.json).len() + ids(&rest.json).len(), 13);
    assert_eq!(rest.json["next"], Value::Null);

    for (q, says) in [
        ("state=PENDING", "SUCCESS, FAILURE or REVOKED"),
        ("lane=email", "unknown lane"),
        ("since=yesterday", "`since` must be"),
        ("after=page-two", "`after` must be"),
        ("limit=many", "limit"),
    ] {
        let r = admin(&router, "GET", &format!("/tasks?{q}"), None).await;
        let message = r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(says), "{q}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_the_latest_task_history_tasks_and_none_when_zero() {
    let env = TestEnv::with("history-cap", &redis_url(), |c| {
        c.partitions = 1;
        c.task_history = 150;
    })
    .await;
    let _w = env.start_worker();
    let specs: Vec<TaskSpec> = (0..600).map(|i| TaskSpec::new("diag.noop", json!({"i": i}))).collect();
    let ids = env.engine.enqueue_batch(specs).await.unwrap();
    for id in &ids {
        env.wait_state(id, TaskState::Success).await;
    }
    let mut con = env.engine.conn();
    let page = env.engine.finished_tasks(&Default::default(), 1000, None).await.unwrap();
    let kept = page.tasks.len();
    // Whole entries (a call's tasks each) go from the head while what is left holds the cap: at
    // least the cap is kept, and less than the oldest entry more.
    let oldest: Vec<(String, Vec<(String, String)>)> = {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(env.engine.keys().history())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await
            .unwrap();
        redis::from_redis_value::<Vec<(String, Vec<(String, String)>)>>(v).unwrap()
    };
    let in_oldest = oldest[0].1.len();
    assert_eq!(env.engine.history_len().await.unwrap(), kept as u64);
    assert!(kept >= 150 && kept - in_oldest < 150, "kept {kept}, {in_oldest} in the oldest entry");
    let newest: HashSet<&str> = page.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert!(newest.contains(ids[599].as_str()), "the latest is kept");
    assert!(!newest.contains(ids[0].as_str()), "the first went");

    let none = TestEnv::with("history-none", &redis_url(), |c| c.task_history = 0).await;
    let _w = none.start_worker();
    let id = none.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    none.wait_state(&id, TaskState::Success).await;
    let page = none.engine.finished_tasks(&Default::default(), 10, None).await.unwrap();
    assert!(page.tasks.is_empty(), "TASK_HISTORY=0 keeps none");
    for p in 0..none.engine.partitions() {
        let keys = [none.engine.part(p).history(), none.engine.part(p).history_sizes()];
        let exists: u64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut con).await.unwrap();
        assert_eq!(exists, 0, "no history in partition {p}");
    }
}

/// A task that finished is not "in the lanes", though its entry waits to be trimmed behind an
/// older one still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_not_listed_as_in_its_lane() {
    let env = TestEnv::with("history-lanes", &redis_url(), |c| c.partitions = 1).await;
    let _w = env.start_worker();
    let running = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60_000}))).await.unwrap();
    env.wait_state(&running, TaskState::Started).await;
    let done = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    env.wait_state(&done, TaskState::Success).await;
    assert_eq!(env.lane_len(Lane::Analytics).await, 2, "the finished entry waits behind the running one");
    let in_lanes: Vec<String> = env.engine.recent_tasks("", 50).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(in_lanes, [running.as_str()]);
    let finished = env.engine.finished_tasks(&Default::default(), 10, None).await.unwrap();
    assert_eq!(finished.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), [done.as_str()]);
    env.engine.cancel(&running).await.unwrap();
}

//! Redis memory stays bounded: every key the whole flow leaves behind expires (or, for streams,
//! is trimmed), so nothing piles up over a year of traffic.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState};

const SECRET: &str = "memory_app_secret";

/// Keys that are bounded by what they hold rather than by time, and must outlive any window:
/// the dead-letter queue's per-lane counts (three fields, kept as long as the dead letters are),
/// the schedules' state (one hash per configured schedule), and a dead task's record, kept as long
/// as its dead letter is (SPEC: nothing leaves the DLQ but by an operator).
fn bounded_by_design(key: &str, state: Option<&str>) -> bool {
    key.ends_with(":dlq:lanes")
        || key.contains(":schedule:")
        || (key.contains(":task:") && state == Some("FAILURE"))
        // one small string per deployment: its number of partitions
        || key.ends_with("}:partitions")
        // the history's entries, trimmed with its stream to TASK_HISTORY tasks
        || key.ends_with("}:history:sizes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_the_whole_flow_leaves_expires() {
    let platform = FakePlatform::default();
    // The first reply is refused once (retried), the rest accepted.
    platform.then(500, None, json!({"error": {"message": "try later", "code": 1}}));
    let base = platform.start().await;
    let env = TestEnv::with("memory-ttl", &redis_url(), |c| {
        c.facebook_app_secret = Some(SECRET.into());
        c.facebook_page_token = Some("PAGE_TOKEN".into());
        c.graph_url = format!("{base}/v24.0");
        c.generic_secrets.insert("crm".into(), SECRET.into());
        c.retry_base = Duration::from_millis(50);
    })
    .await;
    let (router, _) = env.router();
    let _worker = env.start_worker();

    // Customers' messages over two conversations, a delivery receipt, a generic event.
    for (psid, mid, text) in [("U1", "m_1", "hello"), ("U2", "m_2", "what does it cost?"), ("U1", "m_3", "thanks")] {
        let body = json!({"object": "page", "entry": [{"id": "P", "time": 1, "messaging": [
            {"sender": {"id": psid}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_000u64,
             "message": {"mid": mid, "text": text}},
            {"sender": {"id": psid}, "recipient": {"id": "P"}, "delivery": {"watermark": 5}}]}]})
        .to_string();
        let sig = meta_sign(SECRET, body.as_bytes());
        let headers = [("content-type", "application/json"), ("x-hub-signature-256", sig.as_str())];
        let r = http_with(&router, "POST", "/webhooks/facebook", &headers, body.into_bytes()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let body = br#"{"id":"e-1","text":"order shipped"}"#;
    let sig = meta_sign(SECRET, body);
    let headers = [("content-type", "application/json"), ("x-signature-256", sig.as_str())];
    assert_eq!(
        http_with(&router, "POST", "/webhooks/generic/crm", &headers, body.to_vec()).await.status,
        StatusCode::OK
    );

    // Tasks through the API: one with an idempotency key, one that dies, one cancelled.
    let post = async |body: serde_json::Value| admin(&router, "POST", "/tasks", Some(&body.to_string())).await;
    assert_eq!(post(json!({"kind": "diag.noop", "idempotency_key": "k-1"})).await.status, StatusCode::ACCEPTED);
    let dead = post(json!({"kind": "diag.fail", "payload": {"times": 1, "permanent": true}})).await;
    let sleeper = post(json!({"kind": "diag.sleep", "payload": {"ms": 60000}})).await;
    let sleeper = sleeper.json["task_id"].as_str().unwrap().to_string();
    env.wait_state(&sleeper, switchyard::engine::TaskState::Started).await;
    assert_eq!(admin(&router, "POST", &format!("/tasks/{sleeper}/cancel"), None).await.status, StatusCode::OK);
    // A synchronous message through the API, and a look at the dashboard.
    let r = admin(&router, "POST", "/conversations/message", Some(r#"{"message": "hi", "user_id": "u-9"}"#)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let login = http_with(
        &router,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={TOKEN}").into_bytes(),
    )
    .await;
    assert!(login.status.is_redirection(), "{}", login.text);

    // Everything answered, retried, dead-lettered, and the conversations' analytics run.
    wait_until("three replies accepted", async || platform.accepted().len() >= 3).await;
    env.wait_state(dead.json["task_id"].as_str().unwrap(), switchyard::engine::TaskState::Failure).await;
    wait_until_within("every lane is idle", Duration::from_secs(90), async || {
        let q = env.engine.queues_status().await.unwrap();
        Lane::ALL.iter().all(|l| q.queues[l.as_str()].depth == 0)
    })
    .await;

    let mut con = env.engine.conn();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", env.engine.keys().root())).query_async(&mut con).await.unwrap();
    assert!(keys.len() > 10, "the flow left keys to look at: {keys:?}");
    let mut forever = Vec::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut con).await.unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut con).await.unwrap();
        let state: Option<String> = match kind.as_str() {
            "hash" => redis::cmd("HGET").arg(key).arg("state").query_async(&mut con).await.unwrap(),
            _ => None,
        };
        if ttl == -1 && kind != "stream" && !bounded_by_design(key, state.as_deref()) {
            forever.push(format!("{key} ({kind}, {state:?})"));
        }
    }
    assert!(forever.is_empty(), "keys without an expiry: {forever:#?}");
}

/// A task that succeeded leaves one short line for its record: what operators ask (state, kind,
/// times, attempts and their log, the result), no payload, nothing the task id already says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_one_short_line() {
    let env = TestEnv::with("memory-done", &redis_url(), |c| {
        c.retry_base = Duration::from_millis(20);
        c.success_retention = Some(Duration::from_secs(600));
    })
    .await;
    let (router, _) = env.router();
    let _worker = env.start_worker();
    let noop = env.engine.enqueue(switchyard::engine::TaskSpec::new("diag.noop", json!({"n": 1}))).await.unwrap();
    let flaky = env.engine.enqueue(switchyard::engine::TaskSpec::new("diag.fail", json!({"times": 1}))).await.unwrap();
    for id in [&noop, &flaky] {
        env.wait_state(id, switchyard::engine::TaskState::Success).await;
    }

    let mut con = env.engine.conn();
    let keys = env.engine.keys();
    for id in [&noop, &flaky] {
        let exists: bool = redis::cmd("EXISTS").arg(keys.task(id)).query_async(&mut con).await.unwrap();
        assert!(!exists, "the running task's record is gone once it succeeded");
        // a field of the hash shared by the tasks created in the same 256 ms, no key of its own
        let (bucket, field) = keys.done(id);
        let field = field.expect("a task id made from its entry is a UUIDv7");
        assert!(bucket.len() < keys.done_own(id).len());
        let own: bool = redis::cmd("EXISTS").arg(keys.done_own(id)).query_async(&mut con).await.unwrap();
        assert!(!own, "no key of its own");
        let line: String = redis::cmd("HGET").arg(&bucket).arg(&field).query_async(&mut con).await.unwrap();
        assert!(!line.contains("\"n\"") && !line.contains("times"), "no payload in {line:?}");
        let ttl: i64 = redis::cmd("PTTL").arg(&bucket).query_async(&mut con).await.unwrap();
        assert!(ttl > 540_000 && ttl <= 601_000, "kept SUCCESS_RETENTION, not TASK_RETENTION ({ttl})");
    }
    let (bucket, field) = keys.done(&noop);
    let noop_line: String = redis::cmd("HGET").arg(bucket).arg(field).query_async(&mut con).await.unwrap();
    assert!(noop_line.len() < 64, "a no-op's line is short: {noop_line:?}");

    let s = admin(&router, "GET", &format!("/tasks/{flaky}"), None).await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let j = &s.json;
    assert_eq!(
        (j["status"].as_str(), j["kind"].as_str(), j["lane"].as_str()),
        (Some("SUCCESS"), Some("diag.fail"), Some("analytics"))
    );
    assert_eq!((j["attempts"].as_u64(), j["max_attempts"].as_u64()), (Some(2), Some(4)), "{j}");
    assert_eq!(j["result"], json!({"succeeded_on_attempt": 2}));
    let outcomes: Vec<&str> = j["history"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "success"], "{j}");
    assert!(j["history"][0]["error"].as_str().unwrap_or("").contains("on purpose"), "{j}");
    for t in ["created_at", "started_at", "finished_at"] {
        assert!(j[t].is_string(), "{t} in {j}");
    }
    assert!(
        j["created_at"].as_str() <= j["started_at"].as_str() && j["started_at"].as_str() <= j["finished_at"].as_str()
    );
    assert_eq!(j["history"][1]["worker"], j["worker"]);

    // Finished is finished: a cancel is refused, as for any task that ended.
    admin(&router, "POST", &format!("/tasks/{noop}/cancel"), None).await.assert_error(StatusCode::CONFLICT, "conflict");
}

/// A dead task keeps its payload and attempt log once, in its dead letter: its record (kept as
/// long as the letter) holds neither, and still reads whole. When the letter is deleted, or sent
/// back to its lane, they go back into the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_tasks_payload_and_log_are_kept_once() {
    let env = TestEnv::with("memory-dead", &redis_url(), |c| c.retry_base = Duration::from_millis(20)).await;
    let (router, _) = env.router();
    let worker = env.start_worker();
    let spec = |n: u32| switchyard::engine::TaskSpec::new("diag.fail", json!({"times": 99, "n": n})).max_attempts(3);
    let deleted = env.engine.enqueue(spec(1)).await.unwrap();
    let redriven = env.engine.enqueue(spec(2)).await.unwrap();
    for id in [&deleted, &redriven] {
        env.wait_state(id, switchyard::engine::TaskState::Failure).await;
    }
    drop(worker);

    let mut con = env.engine.conn();
    let keys = env.engine.keys();
    let record = async |con: &mut switchyard::redis::Conn, id: &str| -> std::collections::HashMap<String, String> {
        redis::cmd("HGETALL").arg(keys.task(id)).query_async(con).await.unwrap()
    };
    let shown = async |id: &str| {
        let s = admin(&router, "GET", &format!("/tasks/{id}"), None).await;
        assert_eq!(s.status, StatusCode::OK, "{}", s.text);
        s.json
    };
    let mut letters = Vec::new();
    for (n, id) in [(1, &deleted), (2, &redriven)] {
        let r = record(&mut con, id).await;
        assert_eq!(r.get("state").map(String::as_str), Some("FAILURE"), "{r:?}");
        assert!(!r.contains_key("payload"), "the letter holds the payload, not the record: {r:?}");
        assert!(!r.keys().any(|k| k.starts_with("a:")), "the letter holds the attempt log, not the record: {r:?}");
        let letter = r["dead_letter"].clone();
        let l = admin(&router, "GET", &format!("/dlq/{letter}"), None).await;
        assert_eq!(l.json["payload"], json!({"times": 99, "n": n}), "{}", l.text);
        assert_eq!(l.json["attempts"].as_array().map(Vec::len), Some(3), "{}", l.text);

        let j = shown(id).await;
        assert_eq!(j["status"], "FAILURE");
        assert_eq!(j["payload"], json!({"times": 99, "n": n}), "{j}");
        let outcomes: Vec<&str> =
            j["history"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["retry", "retry", "retry"], "{j}");
        assert!(j["started_at"].is_string() && j["error"].as_str().unwrap().contains("on purpose"), "{j}");
        assert_eq!(j["dead_letter"], json!(letter));
        letters.push((letter, j));
    }

    // Deleted: the record gets both back, and expires.
    let (letter, before) = &letters[0];
    assert_eq!(admin(&router, "DELETE", &format!("/dlq/{letter}"), None).await.status, StatusCode::OK);
    let r = record(&mut con, &deleted).await;
    assert!(r.contains_key("payload") && (1..=3).all(|n| r.contains_key(&format!("a:{n}"))), "{r:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(keys.task(&deleted)).query_async(&mut con).await.unwrap();
    assert!(ttl > 0, "a record without its letter expires ({ttl})");
    let after = shown(&deleted).await;
    for f in ["status", "payload", "history", "error", "attempts", "started_at", "finished_at"] {
        assert_eq!(after[f], before[f], "{f} after the letter was deleted");
    }

    // Redriven: queued again with its attempt log, the payload in its new entry.
    let (letter, _) = &letters[1];
    let r = admin(&router, "POST", "/dlq/redrive", Some(&json!({"ids": [letter]}).to_string())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = shown(&redriven).await;
    assert_eq!(j["status"], "PENDING", "{j}");
    assert_eq!(j["payload"], json!({"times": 99, "n": 2}), "{j}");
    assert_eq!(j["history"].as_array().map(Vec::len), Some(3), "{j}");
}

/// A Redis with a memory limit, filled by real load: past the high-water mark new webhooks and
/// tasks are answered 503 with `Retry-After` (nothing half-written, nothing acknowledged lost),
/// the workers keep draining, and once they have freed memory the same requests are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_full_is_a_state_not_a_crash() {
    let server = RedisProcess::start_on_free_port();
    let env = TestEnv::with("memory-full", &server.url(), |c| {
        c.generic_secrets.insert("crm".into(), SECRET.into());
    })
    .await;
    let (router, _) = env.router();
    let mut con = env.engine.conn();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await.unwrap();
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let limit = used + 32 * 1024 * 1024;
    for (name, value) in [("maxmemory", limit.to_string()), ("maxmemory-policy", "noeviction".into())] {
        let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(&mut con).await.unwrap();
    }

    // Events of 2 KiB each, until Redis is at the mark (bounded: 32 MiB hold fewer than 16 000).
    let filler = "x".repeat(2048);
    let post = async |i: u32| {
        let body = json!({"id": format!("e-{i}"), "text": filler}).to_string();
        let sig = meta_sign(SECRET, body.as_bytes());
        let headers = [("content-type", "application/json"), ("x-signature-256", sig.as_str())];
        http_with(&router, "POST", "/webhooks/generic/crm", &headers, body.into_bytes()).await
    };
    let (mut accepted, mut refused) = (0u64, None);
    for i in 0..20_000 {
        let r = post(i).await;
        if r.status == StatusCode::OK {
            accepted += 1;
            continue;
        }
        let message = r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(message.contains("high-water mark"), "{message}");
        assert!(r.headers.get("retry-after").is_some(), "{r:?}");
        refused = Some(i);
        break;
    }
    let refused = refused.expect("Redis reached its high-water mark");
    assert!(accepted > 100, "it took work until the mark ({accepted})");
    // Everything acknowledged is queued, whole; new tasks are refused the same way.
    assert_eq!(env.lane_len(Lane::Webhooks).await, accepted);
    let t = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop"}"#)).await;
    t.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let (used, max) = env.engine.redis_memory().await.unwrap();
    assert!(max == limit && used < max, "the mark leaves room below the limit: {used} of {max}");
    // The gauge is one per process and other tests' engines set it too (to their Redis's limit,
    // none): a fresh reading of this Redis shows this limit until another one comes.
    wait_until("/metrics shows the limit", async || {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = env.engine.redis_memory().await;
        let metrics = http(&router, "GET", "/metrics", None, None).await.text;
        metrics.contains(&format!("switchyard_redis_memory_max_bytes {limit}"))
    })
    .await;

    // The workers drain what was taken (each event's 2 KiB entry goes, a short record stays),
    // and the refused event is taken on a later try.
    let _worker = env.start_worker();
    wait_until_within("the refused event is taken", Duration::from_secs(60), async || {
        post(refused).await.status == StatusCode::OK
    })
    .await;
    wait_until("every event was recorded", async || {
        env.engine.queues_status().await.unwrap().queues["webhooks"].depth == 0
    })
    .await;
    // (finished records: fields of buckets shared by the tasks of 256 ms)
    let buckets: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}done:*", env.engine.keys().root())).query_async(&mut con).await.unwrap();
    let mut done = 0;
    for b in buckets {
        let n: u64 = redis::cmd("HLEN").arg(b).query_async(&mut con).await.unwrap();
        done += n;
    }
    assert_eq!(done, accepted + 1, "every acknowledged event ran once");
    drop(server);
}

/// Under a constant load, Redis's memory stays flat once the first retention period has passed:
/// what a message leaves goes when its windows close, at the rate messages come. Retentions are
/// shortened to seconds (8 s; idempotency markers live two to three windows, 24 s at most) so
/// that two and a half minutes show what many days would: half a minute to fill, two minutes
/// (fifteen retention periods) measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_flat_under_a_constant_load() {
    const RATE: u64 = 50;
    const CONVERSATIONS: u64 = 10;
    const WARMUP: Duration = Duration::from_secs(30);
    const MEASURED: Duration = Duration::from_secs(120);
    let server = RedisProcess::start_on_free_port();
    let platform = FakePlatform::default();
    let base = platform.start().await;
    let retention = Duration::from_secs(8);
    let env = TestEnv::with("memory-flat", &server.url(), |c| {
        c.facebook_app_secret = Some(SECRET.into());
        c.facebook_page_token = Some("PAGE_TOKEN".into());
        c.graph_url = format!("{base}/v24.0");
        c.task_retention = retention;
        c.idempotency_window = retention;
        c.conversation_retention = retention;
        c.conversation_max_turns = 20;
        // The history of finished tasks is bounded by its length, not a window: a cap its
        // three tasks a message reach within the warm-up.
        c.task_history = 2_000;
    })
    .await;
    let (router, _) = env.router();
    let _worker = env.start_worker();
    let mut con = env.engine.conn();

    let start = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let (mut sent, mut samples) = (0u64, Vec::new());
    while start.elapsed() < WARMUP + MEASURED {
        tick.tick().await;
        let psid = format!("U{}", sent % CONVERSATIONS);
        let body = json!({"object": "page", "entry": [{"id": "P", "time": 1, "messaging": [
            {"sender": {"id": psid}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_000u64 + sent,
             "message": {"mid": format!("m_{sent}"), "text": "hello, do you ship to Lima?"}}]}]})
        .to_string();
        let sig = meta_sign(SECRET, body.as_bytes());
        let headers = [("content-type", "application/json"), ("x-hub-signature-256", sig.as_str())];
        let r = http_with(&router, "POST", "/webhooks/facebook", &headers, body.into_bytes()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        sent += 1;
        if sent % (RATE / 2) == 0 && start.elapsed() >= WARMUP {
            let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await.unwrap();
            let used: f64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
            samples.push(used);
        }
    }
    // Five-second windows (ten samples each) against the whole measured time's mean.
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let windows: Vec<f64> = samples.chunks(10).map(|w| w.iter().sum::<f64>() / w.len() as f64).collect();
    assert!(windows.len() >= 20, "{windows:?}");
    for w in &windows {
        assert!((w / mean - 1.0).abs() <= 0.10, "a window of {w:.0} bytes against a mean of {mean:.0}: {windows:?}");
    }
    assert!(
        platform.accepted().len() as u64 >= sent - RATE * 2,
        "the workers kept up: {} replies for {sent} messages",
        platform.accepted().len()
    );
    drop(server);
}

/// The scripts' `#!lua` flags decide what Redis over its `maxmemory` does with them: a task going
/// in is refused whole (nothing of it written), while a task already running still finishes and
/// is recorded — the way memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_maxmemory_new_tasks_are_refused_whole_and_running_ones_finish() {
    let server = RedisProcess::start_on_free_port();
    let env = TestEnv::with("oom-flags", &server.url(), |_| {}).await;
    let _worker = env.start_worker();
    let running = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 1500}))).await.unwrap();
    env.wait_state(&running, TaskState::Started).await;

    let mut con = env.engine.conn();
    let set = async |con: &mut switchyard::redis::Conn, v: &str| {
        let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(v).query_async(con).await.unwrap();
    };
    set(&mut con, "1").await;
    let e = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap_err().to_string();
    assert!(e.contains("OOM"), "{e}");
    assert_eq!(env.lane_len(Lane::Analytics).await, 1, "only the running task's entry");
    let s = env.wait_state(&running, TaskState::Success).await;
    assert_eq!(s.result, json!({"slept_ms": 1500}));

    set(&mut con, "0").await;
    let after = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    env.wait_state(&after, TaskState::Success).await;
}

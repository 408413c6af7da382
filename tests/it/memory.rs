//! Redis memory stays bounded: every key the whole flow leaves behind expires (or, for streams,
//! is trimmed), so nothing piles up over a year of traffic.

use std::time::Duration;

use crate::common::*;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::Lane;

const SECRET: &str = "memory_app_secret";

/// Keys that are bounded by what they hold rather than by time, and must outlive any window:
/// the dead-letter queue's per-lane counts (three fields, kept as long as the dead letters are),
/// the schedules' state (one hash per configured schedule), and a dead task's record, kept as long
/// as its dead letter is (SPEC: nothing leaves the DLQ but by an operator).
fn bounded_by_design(key: &str, state: Option<&str>) -> bool {
    key.ends_with(":dlq:lanes") || key.contains(":schedule:") || (key.contains(":task:") && state == Some("FAILURE"))
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

//! Integration tests of what names a webhook event, against a real Redis: a clumsy platform's
//! empty, blank or over-long ids never merge different events into one or cost a batch its good
//! events; an item that is no event goes to the dead-letter queue; an idempotency key re-used for
//! another task is a conflict, not a silent answer with the first task.

use std::collections::BTreeMap;

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::engine::Lane;
use switchyard::engine::dlq::DlqFilter;

const SECRET: &str = "id-test-secret";

async fn env(name: &str) -> TestEnv {
    TestEnv::with(name, &redis_url(), |c| {
        c.facebook_app_secret = Some(SECRET.into());
        c.generic_secrets = BTreeMap::from([("src1".to_string(), SECRET.to_string())]);
        c.google_rbm_client_token = Some(SECRET.into());
    })
    .await
}

/// POST a signed generic event, with `X-Event-Id: id` when given.
async fn generic(router: &Router, body: &str, id: Option<&str>) -> Resp {
    let sig = meta_sign(SECRET, body.as_bytes());
    let mut headers = vec![("content-type", "application/json"), ("x-signature-256", sig.as_str())];
    if let Some(id) = id {
        headers.push(("x-event-id", id));
    }
    http_with(router, "POST", "/webhooks/generic/src1", &headers, body.as_bytes().to_vec()).await
}

/// POST a signed Meta body.
async fn facebook(router: &Router, body: &str) -> Resp {
    let sig = meta_sign(SECRET, body.as_bytes());
    let headers = [("content-type", "application/json"), ("x-hub-signature-256", sig.as_str())];
    http_with(router, "POST", "/webhooks/facebook", &headers, body.as_bytes().to_vec()).await
}

/// A Messenger body of page `P`, one text message from `U` per (mid, text).
fn messenger(messages: &[(&str, &str)]) -> String {
    let items: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (mid, text))| {
            json!({"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1_700_000_000_000u64 + i as u64,
                   "message": {"mid": mid, "text": text}})
        })
        .collect();
    json!({"object": "page", "entry": [{"id": "P", "time": 1, "messaging": items}]}).to_string()
}

/// Assert a 200 with these counts.
#[track_caller]
fn assert_counts(r: &Resp, accepted: u64, duplicates: u64, unreadable: u64) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.json["accepted"], &r.json["duplicates"], &r.json["unreadable"]),
        (&json!(accepted), &json!(duplicates), &json!(unreadable)),
        "{}",
        r.text
    );
}

/// The payloads queued on a lane, oldest first.
async fn payloads(env: &TestEnv, lane: Lane) -> Vec<Value> {
    env.lane_tasks(lane).await.into_iter().map(|t| t.payload).collect()
}

#[tokio::test]
async fn generic_events_with_empty_or_blank_ids_are_each_queued() {
    let env = env("ids-generic").await;
    let (router, _) = env.router();

    // An empty header: the body's content names the event.
    assert_counts(&generic(&router, r#"{"text":"first"}"#, Some("")).await, 1, 0, 0);
    assert_counts(&generic(&router, r#"{"text":"second"}"#, Some("")).await, 1, 0, 0);
    assert_counts(&generic(&router, r#"{"text":"third"}"#, Some("   ")).await, 1, 0, 0);
    // The same event sent again is a duplicate, with or without the empty header.
    assert_counts(&generic(&router, r#"{"text":"first"}"#, Some("")).await, 0, 1, 0);
    assert_counts(&generic(&router, r#"{"text":"first"}"#, None).await, 0, 1, 0);
    // An empty id in the body is no id either; a blank header gives way to the body's id.
    assert_counts(&generic(&router, r#"{"id":"","text":"fourth"}"#, None).await, 1, 0, 0);
    assert_counts(&generic(&router, r#"{"id":"","text":"fifth"}"#, None).await, 1, 0, 0);
    assert_counts(&generic(&router, r#"{"id":"e-1","text":"sixth"}"#, Some("")).await, 1, 0, 0);
    assert_counts(&generic(&router, r#"{"id":"e-1","text":"sixth, resent"}"#, None).await, 0, 1, 0);

    let queued: Vec<(String, String)> = payloads(&env, Lane::Webhooks)
        .await
        .iter()
        .map(|p| (p["text"].as_str().unwrap_or("").to_string(), p["id"].to_string()))
        .collect();
    let mut texts: Vec<&str> = queued.iter().map(|(t, _)| t.as_str()).collect();
    let mut expected = ["first", "second", "third", "fourth", "fifth", "sixth"];
    // Over several partitions, events of the same millisecond have no order between them.
    if env.engine.partitions() > 1 {
        texts.sort_unstable();
        expected.sort_unstable();
    }
    assert_eq!(texts, expected);
    for (text, id) in &queued {
        match text.as_str() {
            "sixth" => assert_eq!(id, r#""e-1""#),
            _ => assert!(id.starts_with(r#""body:"#), "{text}: {id}"),
        }
    }
}

#[tokio::test]
async fn messenger_messages_with_empty_mids_are_each_answered() {
    let env = env("ids-mid").await;
    let (router, _) = env.router();
    assert_counts(&facebook(&router, &messenger(&[("", "hello"), ("", "are you there?")])).await, 2, 0, 0);
    assert_counts(&facebook(&router, &messenger(&[("", "hello")])).await, 0, 1, 0);
    assert_counts(&facebook(&router, &messenger(&[(" ", "hello")])).await, 1, 0, 0);
    let texts: Vec<Value> = payloads(&env, Lane::Conversations).await.iter().map(|p| p["text"].clone()).collect();
    assert_eq!(texts, [json!("hello"), json!("are you there?"), json!("hello")]);

    // A blank sender is no customer: recorded as an event, not answered in a shared conversation.
    let blank = messenger(&[("m_blank", "who am I?")]).replace(r#""sender":{"id":"U"}"#, r#""sender":{"id":"  "}"#);
    assert!(blank.contains(r#""id":"  ""#), "{blank}");
    assert_counts(&facebook(&router, &blank).await, 1, 0, 0);
    assert_eq!(env.lane_len(Lane::Conversations).await, 3);
    assert_eq!(payloads(&env, Lane::Webhooks).await[0]["id"], "m_blank");
}

#[tokio::test]
async fn an_over_long_mid_costs_its_batch_nothing() {
    let env = env("ids-long").await;
    let (router, _) = env.router();
    let long = format!("m_{}", "x".repeat(600));
    let body = messenger(&[("m_short", "one"), (&long, "two")]);
    assert_counts(&facebook(&router, &body).await, 2, 0, 0);
    assert_counts(&facebook(&router, &body).await, 0, 2, 0);
    // Another long id sharing the first 600 bytes is another message.
    let longer = format!("{long}y");
    assert_counts(&facebook(&router, &messenger(&[(&longer, "three")])).await, 1, 0, 0);
    let ids: Vec<Value> = payloads(&env, Lane::Conversations).await.iter().map(|p| p["message_id"].clone()).collect();
    assert_eq!(ids, [json!("m_short"), json!(long), json!(longer)], "the id is kept whole in the task");
}

#[tokio::test]
async fn an_unreadable_item_goes_to_the_dead_letters_and_the_rest_is_queued() {
    let env = env("ids-unreadable").await;
    let (router, _) = env.router();
    let body = json!({"object": "page", "entry": [
        {"id": "P", "messaging": [
            {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1, "message": {"mid": "m_ok", "text": "hi"}},
            "not an item"]},
        17]})
    .to_string();
    assert_counts(&facebook(&router, &body).await, 1, 0, 2);
    assert_counts(&facebook(&router, &body).await, 0, 3, 0);
    assert_eq!(payloads(&env, Lane::Conversations).await[0]["message_id"], "m_ok");

    let _worker = env.start_worker();
    // (The message's reply dies too: this deployment has no page token. Only ours count here.)
    let unreadable = DlqFilter { kind: Some("webhook.unreadable".into()), ..DlqFilter::default() };
    let letters = wait_for("two dead letters", async || {
        let l = env.engine.dlq_list(&unreadable, 10).await.ok()?;
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut seen: Vec<(Value, String)> = letters
        .iter()
        .map(|d| {
            assert_eq!(d.kind, "webhook.unreadable");
            assert_eq!(d.payload["platform"], "messenger");
            (d.payload["item"].clone(), d.error.clone())
        })
        .collect();
    seen.sort_by_key(|(item, _)| item.to_string());
    assert_eq!(seen[0].0, json!("not an item"));
    assert!(seen[0].1.contains("a `messaging` item is not an object"), "{seen:?}");
    assert_eq!(seen[1].0, json!(17));
    assert!(seen[1].1.contains("an `entry` item is not an object"), "{seen:?}");

    let metrics = http(&router, "GET", "/metrics", None, None).await.text;
    assert!(
        metrics.lines().any(|l| l.starts_with("switchyard_webhooks_received_total{")
            && l.contains(r#"outcome="unreadable""#)
            && l.contains(r#"platform="messenger""#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_rbm_message_without_an_id_is_queued_by_its_content() {
    let env = env("ids-rbm").await;
    let (router, _) = env.router();
    let post = async |push: &str, data: &str| {
        let sig = rbm_sign(SECRET, data.as_bytes());
        let headers = [("content-type", "application/json"), ("x-goog-signature", sig.as_str())];
        http_with(&router, "POST", "/webhooks/google/rbm", &headers, rbm_envelope(push, data)).await
    };
    let a = r#"{"senderPhoneNumber":"+1","agentId":"bot","messageId":"","text":"one"}"#;
    let b = r#"{"senderPhoneNumber":"+1","agentId":"bot","text":"two"}"#;
    let c = r#"{"senderPhoneNumber":"+1","agentId":"bot","messageId":" ","text":"three"}"#;
    let d = r#"{"senderPhoneNumber":"+1","agentId":"bot","messageId":"","text":"four"}"#;
    // Named by the push that carried them: each push its own id, a redelivery the same.
    for (push, data) in [("p-1", a), ("p-2", b), ("p-3", c), ("p-4", d)] {
        assert_counts(&post(push, data).await, 1, 0, 0);
    }
    assert_counts(&post("p-1", a).await, 0, 1, 0);
    // With no id anywhere, by their content.
    assert_counts(&post("", a).await, 1, 0, 0);
    assert_counts(&post(" ", b).await, 1, 0, 0);
    assert_counts(&post("", a).await, 0, 1, 0);
    assert_eq!(env.lane_len(Lane::Conversations).await, 6);

    // Signed data that is no RBM event is kept for the dead-letter queue, not refused.
    for data in ["not json", "[1, 2]"] {
        assert_counts(&post("p-9", data).await, 0, 0, 1);
    }
    assert_eq!(env.lane_len(Lane::Webhooks).await, 2);
}

#[tokio::test]
async fn an_idempotency_key_re_used_for_another_task_is_a_conflict() {
    let env = env("ids-conflict").await;
    let (router, _) = env.router();
    let post = async |body: Value| admin(&router, "POST", "/tasks", Some(&body.to_string())).await;
    let first = post(json!({"kind": "diag.noop", "payload": {"n": 1}, "idempotency_key": "k-1"})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let id = first.json["task_id"].clone();

    // The same request again: the first task, as before.
    let again = post(json!({"kind": "diag.noop", "payload": {"n": 1}, "idempotency_key": "k-1"})).await;
    assert_eq!((again.status, &again.json["task_id"]), (StatusCode::ACCEPTED, &id), "{}", again.text);
    // Another payload, or another kind, under the same key: 409 naming the first task.
    for body in [
        json!({"kind": "diag.noop", "payload": {"n": 2}, "idempotency_key": "k-1"}),
        json!({"kind": "diag.sleep", "payload": {"n": 1}, "idempotency_key": "k-1"}),
    ] {
        let r = post(body).await;
        let message = r.assert_error(StatusCode::CONFLICT, "idempotency_conflict");
        assert_eq!(r.json["task_id"], id, "{}", r.text);
        assert!(message.contains(id.as_str().unwrap()), "{message}");
    }
    assert_eq!(env.lane_len(Lane::Analytics).await, 1, "nothing more was queued");

    // A key of any length is taken, and a repeat of it finds its task; another long key that
    // shares all but its last byte is another task.
    let long = "k".repeat(2000);
    let a = post(json!({"kind": "diag.noop", "idempotency_key": long})).await;
    let b = post(json!({"kind": "diag.noop", "idempotency_key": long})).await;
    let c = post(json!({"kind": "diag.noop", "idempotency_key": format!("{}j", &long[..1999])})).await;
    assert_eq!((a.status, b.status, c.status), (StatusCode::ACCEPTED, StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a.json["task_id"], b.json["task_id"]);
    assert_ne!(a.json["task_id"], c.json["task_id"]);
    assert_eq!(env.lane_len(Lane::Analytics).await, 3);

    // A caller's key cannot pass for a platform's message id.
    let body = json!({"object": "page", "entry": [{"id": "P", "messaging": [
        {"sender": {"id": "U"}, "recipient": {"id": "P"}, "timestamp": 1, "message": {"mid": "m_9", "text": "hi"}}]}]})
    .to_string();
    let squat = post(json!({"kind": "diag.noop", "idempotency_key": "webhook:messenger:P:m_9"})).await;
    assert_eq!(squat.status, StatusCode::ACCEPTED);
    assert_counts(&facebook(&router, &body).await, 1, 0, 0);
}

//! Integration tests of webhook ingestion (`/webhooks/...`), against a real Redis.
//!
//! Each test plays a platform: it signs bodies as Meta, Google or a generic source would, sends
//! them through the router, and asserts what the platform sees (status, body, `Retry-After`) and
//! what an operator finds queued (one task per event, deduplicated; nothing on a rejection): a
//! customer's message on the `conversations` lane, every other event on the `webhooks` lane.
//! Pub/Sub tokens are checked against a small local key server whose keys the test switches at
//! run time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::config::Config;
use switchyard::engine::{Lane, TaskStatus};

// ---------------------------------------------------------------------------------------------
// Platforms' side: secrets, public vectors, signing
// ---------------------------------------------------------------------------------------------

const FB_SECRET: &str = "test_app_secret";
const FB_VERIFY: &str = "verify-me";
/// SPEC §4's public Facebook vector: this body, signed with `test_app_secret`, gives [`FB_SIG`].
const FB_BODY: &str = r#"{"object":"page","entry":[{"id":"PAGE_ID","time":1458692752478,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"PAGE_ID"},"timestamp":1457764197627,"message":{"mid":"m_abc","text":"hello, world!"}}]}]}"#;
const FB_SIG: &str = "sha256=b3639008cd82bb8d3203f5941eabd29086f08fed27ad36e48d6aa7ac4f47fb48";

const RBM_TOKEN: &str = "SJENCPGJESMGUFPY";
/// SPEC §4's public RBM vector: these decoded data bytes give [`RBM_SIG`].
const RBM_DATA: &str = r#"{"senderPhoneNumber":"+12223334444","messageId":"msg-1","sendTime":"2026-01-01T00:00:00Z","agentId":"bot@rbm.goog","text":"Hi"}"#;
const RBM_SIG: &str = "ni4gpCzhW8VbXSD6mSIbH5jN0n/T6v+lhq3VomcFRFz8jauzpBEU1N6Q2OzAS7dZ0R1guSQ55ONltCB8c6aVyA==";

const AUDIENCE: &str = "https://switchyard.example/webhooks/google/pubsub";
const SERVICE_ACCOUNT: &str = "push@project.iam.gserviceaccount.com";
const KEY_A: &[u8] = include_bytes!("../fixtures/jwt_a.der");
const KEY_B: &[u8] = include_bytes!("../fixtures/jwt_b.der");
const JWKS_A: &str = include_str!("../fixtures/jwks.json");
const JWKS_AB: &str = include_str!("../fixtures/jwks_ab.json");

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// The claims of a valid Pub/Sub push token.
fn google_claims() -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": SERVICE_ACCOUNT,
        "email_verified": true,
        "iat": now_s(),
        "exp": now_s() + 3600,
    })
}

/// An RS256 token signed with `key` (PKCS#1 DER) naming `kid`.
fn jwt(key: &[u8], kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_der(key)).expect("sign token")
}

/// A Messenger body with one text message per mid, on page `PAGE_ID` from `PSID`.
fn messenger_body(mids: &[&str]) -> String {
    let items: Vec<Value> = mids
        .iter()
        .map(|mid| {
            json!({"sender": {"id": "PSID"}, "recipient": {"id": "PAGE_ID"}, "timestamp": 1457764197627u64,
                   "message": {"mid": mid, "text": format!("text of {mid}")}})
        })
        .collect();
    json!({"object": "page", "entry": [{"id": "PAGE_ID", "time": 1458692752478u64, "messaging": items}]}).to_string()
}

// ---------------------------------------------------------------------------------------------
// Our side: deployments and requests
// ---------------------------------------------------------------------------------------------

fn meta_config(c: &mut Config) {
    c.facebook_app_secret = Some(FB_SECRET.into());
    c.facebook_verify_token = Some(FB_VERIFY.into());
}

async fn meta_env(name: &str) -> TestEnv {
    TestEnv::with(name, &redis_url(), meta_config).await
}

/// POST a body to `/webhooks/facebook`, with `X-Hub-Signature-256: sig` when given.
async fn post_fb(router: &Router, body: &[u8], sig: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = sig {
        headers.push(("x-hub-signature-256", s));
    }
    http_with(router, "POST", "/webhooks/facebook", &headers, body.to_vec()).await
}

/// POST a body to `/webhooks/facebook` signed with the app secret.
async fn post_fb_signed(router: &Router, body: &[u8]) -> Resp {
    post_fb(router, body, Some(&meta_sign(FB_SECRET, body))).await
}

/// Assert a 200 `{"accepted": n, "duplicates": d}` answer.
#[track_caller]
fn assert_accepted(r: &Resp, accepted: u64, duplicates: u64) {
    assert_eq!(r.status, StatusCode::OK, "body: {}", r.text);
    assert_eq!(r.json["accepted"], accepted, "{}", r.text);
    assert_eq!(r.json["duplicates"], duplicates, "{}", r.text);
}

/// Assert a 503 that tells the platform when to come back.
#[track_caller]
fn assert_retry_later(r: &Resp) {
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let after = r.headers.get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(after.parse::<u64>().is_ok_and(|s| s > 0), "503 without a usable Retry-After ({after:?}): {r:?}");
}

/// The normalized events queued on the webhooks lane, oldest first, with their task kinds.
async fn queued(env: &TestEnv) -> Vec<TaskStatus> {
    let tasks = env.lane_tasks(Lane::Webhooks).await;
    for t in &tasks {
        assert_eq!(t.lane, Some(Lane::Webhooks), "{t:?}");
        assert!(t.kind.starts_with("webhook."), "{t:?}");
    }
    tasks
}

/// The customers' messages queued on the conversations lane, oldest first.
async fn messages(env: &TestEnv) -> Vec<TaskStatus> {
    let tasks = env.lane_tasks(Lane::Conversations).await;
    for t in &tasks {
        assert_eq!(t.lane, Some(Lane::Conversations), "{t:?}");
        assert_eq!(t.kind, "conversation.process_message", "{t:?}");
    }
    tasks
}

/// How many events are queued: messages and other events together.
async fn queued_len(env: &TestEnv) -> u64 {
    env.lane_len(Lane::Conversations).await + env.lane_len(Lane::Webhooks).await
}

// ---------------------------------------------------------------------------------------------
// Meta: handshake, signatures, dedup
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn facebook_handshake_echoes_the_challenge_only_for_the_configured_token() {
    let env = meta_env("fb-handshake").await;
    let (router, _) = env.router();

    let ok = http(
        &router,
        "GET",
        "/webhooks/facebook?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=123",
        None,
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.text, "123", "the challenge is echoed as the whole body");
    let ct = ok.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("text/plain"), "the challenge is plain text, not {ct:?}");

    for path in [
        "/webhooks/facebook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=123",
        "/webhooks/facebook?hub.mode=unsubscribe&hub.verify_token=verify-me&hub.challenge=123",
        "/webhooks/facebook?hub.verify_token=verify-me&hub.challenge=123",
        "/webhooks/facebook?hub.mode=subscribe&hub.challenge=123",
        "/webhooks/facebook",
    ] {
        let r = http(&router, "GET", path, None, None).await;
        r.assert_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(!r.text.contains("123"), "{path}: the challenge leaked into a refusal: {}", r.text);
    }

    // No verify token configured: nothing can pass, not even an empty token.
    let bare =
        TestEnv::with("fb-handshake-bare", &redis_url(), |c| c.facebook_app_secret = Some(FB_SECRET.into())).await;
    let (bare_router, _) = bare.router();
    for path in [
        "/webhooks/facebook?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=123",
        "/webhooks/facebook?hub.mode=subscribe&hub.verify_token=&hub.challenge=123",
    ] {
        http(&bare_router, "GET", path, None, None).await.assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    assert_eq!(queued_len(&env).await, 0);
}

#[tokio::test]
async fn the_public_facebook_vector_queues_one_normalized_event() {
    let env = meta_env("fb-vector").await;
    let (router, _) = env.router();
    assert_eq!(meta_sign(FB_SECRET, FB_BODY.as_bytes()), FB_SIG, "the test signs as SPEC §4 says");

    let r = post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await;
    assert_accepted(&r, 1, 0);

    let tasks = messages(&env).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(queued_len(&env).await, 1, "the message is queued once, on the conversations lane");
    let t = &tasks[0];
    assert_eq!(t.kind, "conversation.process_message");
    assert_eq!(t.status, switchyard::engine::TaskState::Pending);
    let ev = &t.payload;
    assert_eq!(ev["platform"], "messenger", "{ev}");
    assert_eq!(ev["message_id"], "m_abc", "{ev}");
    assert_eq!(ev["customer"], "PSID", "{ev}");
    assert_eq!(ev["account"], "PAGE_ID", "{ev}");
    assert_eq!(ev["text"], "hello, world!", "{ev}");
    assert_eq!(ev["timestamp_ms"], 1457764197627u64, "{ev}");
    let received_s = ev["received_us"].as_u64().expect("received_us") / 1_000_000;
    assert!(received_s <= now_s() && received_s + 60 >= now_s(), "received just now: {ev}");
    let raw_item = &serde_json::from_str::<Value>(FB_BODY).unwrap()["entry"][0]["messaging"][0];
    assert_eq!(&ev["raw"], raw_item, "the messaging item is kept as sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_is_a_duplicate_on_any_process() {
    let env = meta_env("fb-redeliver").await;
    let (router, _) = env.router();
    assert_accepted(&post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await, 1, 0);
    let first = env.lane_entries(Lane::Conversations).await;

    assert_accepted(&post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await, 0, 1);
    // Another process (its own engine and connection) recognises it as well.
    let (other, _) = env.router_on(env.second_engine());
    assert_accepted(&post_fb(&other, FB_BODY.as_bytes(), Some(FB_SIG)).await, 0, 1);

    assert_eq!(env.lane_entries(Lane::Conversations).await, first, "a redelivery queues nothing new");
    assert_eq!(queued_len(&env).await, 1, "a redelivery queues nothing new");

    // The same message twice in one batch is queued once.
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_twice", "m_twice"]).as_bytes()).await, 1, 1);
    assert_eq!(queued_len(&env).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_on_two_processes_queue_one_task() {
    let env = meta_env("fb-race").await;
    let (a, _) = env.router();
    let (b, _) = env.router_on(env.second_engine());

    let copies = 20;
    let sends: Vec<_> = (0..copies)
        .map(|i| {
            let router = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await })
        })
        .collect();
    let (mut accepted, mut duplicates) = (0, 0);
    for s in sends {
        let r = s.await.expect("request task");
        assert_eq!(r.status, StatusCode::OK, "every copy is acknowledged: {}", r.text);
        accepted += r.json["accepted"].as_u64().expect("accepted count");
        duplicates += r.json["duplicates"].as_u64().expect("duplicates count");
    }
    assert_eq!((accepted, duplicates), (1, copies - 1), "exactly one copy was accepted");
    let entries = env.lane_entries(Lane::Conversations).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].1, "conversation.process_message");
    assert_eq!(queued_len(&env).await, 1, "nothing else was queued");
}

#[tokio::test]
async fn bad_signatures_are_401_and_queue_nothing() {
    let env = meta_env("fb-badsig").await;
    let (router, _) = env.router();
    let body = FB_BODY.as_bytes();
    // A valid signature of an earlier, different body.
    let earlier = messenger_body(&["m_earlier"]);
    let stale = meta_sign(FB_SECRET, earlier.as_bytes());
    // A `sha1=` header of SHA-1 length (40 hex digits), as Meta's legacy X-Hub-Signature carries.
    let sha1_header = format!("sha1={}", &FB_SIG["sha256=".len()..][..40]);
    let bad = [
        ("forged with another secret", Some(meta_sign("not_the_app_secret", body))),
        ("missing", None),
        ("empty", Some(String::new())),
        ("sha1= scheme", Some(sha1_header)),
        ("not hex", Some(format!("sha256={}", "zz".repeat(32)))),
        ("bare hex without the scheme", Some(FB_SIG.trim_start_matches("sha256=").to_string())),
        ("truncated", Some(FB_SIG[..FB_SIG.len() - 2].to_string())),
        ("stale: another body's signature", Some(stale)),
    ];
    for (what, sig) in &bad {
        let r = post_fb(&router, body, sig.as_deref()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(queued_len(&env).await, 0, "a rejected webhook queues nothing");

    // The same body properly signed afterwards is new: the refusals left no dedup marks.
    assert_accepted(&post_fb(&router, body, Some(FB_SIG)).await, 1, 0);
}

#[tokio::test]
async fn non_ascii_is_hashed_as_meta_escapes_it() {
    let env = meta_env("fb-unicode").await;
    let (router, _) = env.router();
    // As Meta sends it: non-ASCII as lowercase \u escapes (a surrogate pair for the emoji).
    let body = r#"{"object":"page","entry":[{"id":"PAGE_ID","time":1458692752478,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"PAGE_ID"},"timestamp":1457764197627,"message":{"mid":"m_cafe","text":"caf\u00e9 \ud83d\ude00"}}]}]}"#;
    assert!(body.is_ascii());
    let sig = meta_sign(FB_SECRET, body.as_bytes());

    assert_accepted(&post_fb(&router, body.as_bytes(), Some(&sig)).await, 1, 0);
    let tasks = messages(&env).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].payload["text"], "café 😀");
    assert_eq!(tasks[0].payload["raw"]["message"]["text"], "café 😀");

    // The same content re-serialized (UTF-8 instead of escapes) no longer matches the signature
    // of the bytes Meta signed: the raw body is hashed, never a re-encoding.
    let reserialized = serde_json::to_string(&serde_json::from_str::<Value>(body).unwrap()).unwrap();
    assert!(reserialized.contains("café 😀") && reserialized != body);
    post_fb(&router, reserialized.as_bytes(), Some(&sig)).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(queued_len(&env).await, 1);
}

#[tokio::test]
async fn a_batch_of_1000_events_is_queued_whole() {
    let env = meta_env("fb-batch").await;
    let (router, _) = env.router();
    let entries: Vec<Value> = (0..10)
        .map(|e| {
            let items: Vec<Value> = (0..100)
                .map(|i| {
                    json!({"sender": {"id": format!("U{i}")}, "recipient": {"id": format!("P{e}")},
                           "timestamp": 1457764197627u64 + i, "message": {"mid": format!("m_{e}_{i}"), "text": "hi"}})
                })
                .collect();
            json!({"id": format!("P{e}"), "time": 1458692752478u64, "messaging": items})
        })
        .collect();
    let body = json!({"object": "page", "entry": entries}).to_string();

    assert_accepted(&post_fb_signed(&router, body.as_bytes()).await, 1000, 0);
    let queued = env.lane_entries(Lane::Conversations).await;
    assert_eq!(queued.len(), 1000);
    assert_eq!(queued_len(&env).await, 1000);
    assert!(queued.iter().all(|(_, kind)| kind == "conversation.process_message"));
    let ids: std::collections::HashSet<&String> = queued.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 1000, "one task per event");
    let last = env.status(&queued[999].0).await;
    assert_eq!((last.payload["message_id"].as_str(), last.payload["account"].as_str()), (Some("m_9_99"), Some("P9")));

    // The whole batch again: every event is a duplicate.
    assert_accepted(&post_fb_signed(&router, body.as_bytes()).await, 0, 1000);
    assert_eq!(queued_len(&env).await, 1000);
}

#[tokio::test]
async fn malformed_misshapen_and_oversized_bodies_are_refused() {
    let env = meta_env("fb-badbody").await;
    let (router, _) = env.router();
    for body in [
        "not json",
        r#"{"object":"page","entry":[{"id":"P","messaging":[{"sender":"#,
        "",
        r#"{"object":"page"}"#,
        r#"{"foo":1}"#,
        r#"{"object":"user","entry":[]}"#,
        "[]",
    ] {
        let r = post_fb_signed(&router, body.as_bytes()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "body {body:?}: {}", r.text);
        r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }

    // Up to the limit (1 MiB) is fine; one byte more is 413, signed or not.
    let limit = switchyard::web::BODY_LIMIT;
    let mut at_limit = messenger_body(&["m_big"]).into_bytes();
    at_limit.resize(limit, b' ');
    assert_accepted(&post_fb_signed(&router, &at_limit).await, 1, 0);
    let mut over = messenger_body(&["m_bigger"]).into_bytes();
    over.resize(limit + 1, b' ');
    post_fb_signed(&router, &over).await.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    post_fb(&router, &vec![b'x'; 2 * limit], None).await.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    let tasks = messages(&env).await;
    assert_eq!(tasks.len(), 1, "only the body at the limit was queued: {tasks:?}");
    assert_eq!(queued_len(&env).await, 1, "only the body at the limit was queued");
    assert_eq!(tasks[0].payload["message_id"], "m_big");
}

// ---------------------------------------------------------------------------------------------
// Backpressure: Redis away, lane full
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_unreachable_is_503_with_retry_after() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let env = TestEnv::lazy(
        "down",
        &url,
        |c| {
            meta_config(c);
            c.generic_secrets.insert("crm".into(), "k1".into());
        },
        switchyard::app::registry(),
    );
    let (router, _) = env.router();

    let r = post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await;
    assert!(!r.status.is_success(), "a webhook that was not stored must not be acknowledged: {r:?}");
    assert_retry_later(&r);

    let body = br#"{"id":"evt-1","text":"hello"}"#;
    let r = http_with(
        &router,
        "POST",
        "/webhooks/generic/crm",
        &[("x-signature-256", &meta_sign("k1", body))],
        body.to_vec(),
    )
    .await;
    assert_retry_later(&r);

    // Verification still comes first: a forged request is 401 whether Redis answers or not.
    post_fb(&router, FB_BODY.as_bytes(), Some(&meta_sign("nope", FB_BODY.as_bytes())))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_lane_over_its_depth_limit_is_503_with_retry_after() {
    let env = TestEnv::with("full", &redis_url(), |c| {
        meta_config(c);
        c.lane_depth_limit = 2;
    })
    .await;
    let (router, _) = env.router();
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_1"]).as_bytes()).await, 1, 0);
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_2"]).as_bytes()).await, 1, 0);
    let r = post_fb_signed(&router, messenger_body(&["m_3"]).as_bytes()).await;
    assert_retry_later(&r);

    let ids: Vec<Value> = messages(&env).await.into_iter().map(|t| t.payload["message_id"].clone()).collect();
    assert_eq!(ids, [json!("m_1"), json!("m_2")], "the first two are queued, the third is not");
    assert_eq!(queued_len(&env).await, 2, "the third is queued nowhere");

    // The refused event left no dedup mark: once the lane has room it is accepted as new.
    let mut con = env.engine.conn();
    let _: i64 = redis::cmd("XTRIM")
        .arg(env.lane_key(Lane::Conversations))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_3"]).as_bytes()).await, 1, 0);
}

#[tokio::test]
async fn a_full_lane_still_acknowledges_redeliveries_and_counts_only_new_events() {
    let env = TestEnv::with("full-dup", &redis_url(), |c| {
        meta_config(c);
        c.lane_depth_limit = 2;
    })
    .await;
    let (router, _) = env.router();
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_1"]).as_bytes()).await, 1, 0);
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_2"]).as_bytes()).await, 1, 0);
    // The lane is at its limit. A redelivery of a stored event needs no room and must not be
    // answered 5xx (SPEC §4: duplicates are answered 200; an accepted event is never answered 5xx).
    let r = post_fb_signed(&router, messenger_body(&["m_1"]).as_bytes()).await;
    assert_accepted(&r, 0, 1);
    assert_retry_later(&post_fb_signed(&router, messenger_body(&["m_3"]).as_bytes()).await);

    // Room for one more (a worker finished m_1): a batch of one stored and one new event fits.
    let mut con = env.engine.conn();
    let _: i64 = redis::cmd("XTRIM")
        .arg(env.lane_key(Lane::Conversations))
        .arg("MAXLEN")
        .arg(1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_2", "m_3"]).as_bytes()).await, 1, 1);
    assert_eq!(env.lane_len(Lane::Conversations).await, 2);
    assert_eq!(queued_len(&env).await, 2);
}

#[tokio::test]
async fn a_body_under_the_limit_is_not_refused_for_its_size() {
    let env = TestEnv::with("big-generic", &redis_url(), |c| {
        c.generic_secrets.insert("crm".into(), "k1".into());
    })
    .await;
    let (router, _) = env.router();
    // 600 KiB of text: well under the 1 MiB body limit.
    let body = json!({"id": "big-1", "customer": "c-1", "text": "x".repeat(600 * 1024)}).to_string();
    assert!(body.len() < switchyard::web::BODY_LIMIT);
    let r = post_generic(&router, "crm", body.as_bytes(), Some(&meta_sign("k1", body.as_bytes())), None).await;
    assert_accepted(&r, 1, 0);
    let tasks = queued(&env).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].payload["text"].as_str().map(str::len), Some(600 * 1024));
}

// ---------------------------------------------------------------------------------------------
// Meta's other formats
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn whatsapp_messages_and_statuses_dedup_on_the_message_id() {
    let env = meta_env("whatsapp").await;
    let (router, _) = env.router();
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID"},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "4477"}],
        "messages": [{"from": "4477", "id": "wamid.X", "timestamp": "1700000000", "type": "text", "text": {"body": "price?"}}],
        "statuses": [{"id": "wamid.Y", "status": "delivered", "timestamp": "1700000001", "recipient_id": "4477"}],
    });
    let body = json!({"object": "whatsapp_business_account",
                      "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
    .to_string();

    assert_accepted(&post_fb_signed(&router, body.as_bytes()).await, 2, 0);
    let (msgs, events) = (messages(&env).await, queued(&env).await);
    assert_eq!((msgs.len(), events.len()), (1, 1), "{msgs:?} {events:?}");
    assert_eq!(events[0].kind, "webhook.whatsapp", "{events:?}");
    let (m, s) = (&msgs[0].payload, &events[0].payload);
    assert_eq!((m["platform"].as_str(), m["message_id"].as_str()), (Some("whatsapp"), Some("wamid.X")), "{m}");
    assert_eq!(
        (m["customer"].as_str(), m["account"].as_str(), m["text"].as_str()),
        (Some("4477"), Some("PNID"), Some("price?"))
    );
    assert_eq!(m["raw"], value["messages"][0], "the message is kept as sent");
    assert_eq!(s["kind"], "status", "{s}");
    assert_eq!((s["customer"].as_str(), s["text"].as_str()), (Some("4477"), Some("delivered")));
    assert_eq!(s["timestamp_ms"], 1_700_000_001_000u64, "string timestamps are read");

    assert_accepted(&post_fb_signed(&router, body.as_bytes()).await, 0, 2);
    // A redelivery dressed differently (other contacts, no status) is still the same message.
    let mut again: Value = serde_json::from_str(&body).unwrap();
    let v = &mut again["entry"][0]["changes"][0]["value"];
    v["contacts"] = json!([{"profile": {"name": "Ann B."}, "wa_id": "4477"}]);
    v.as_object_mut().unwrap().remove("statuses");
    assert_accepted(&post_fb_signed(&router, again.to_string().as_bytes()).await, 0, 1);
    assert_eq!(queued_len(&env).await, 2);
}

#[tokio::test]
async fn instagram_echo_delivery_and_read_are_queued_with_their_kinds() {
    let env = meta_env("ig-echo").await;
    let (router, _) = env.router();
    let ig = r#"{"object":"instagram","entry":[{"id":"IG1","time":1,"messaging":[{"sender":{"id":"IGSID"},"recipient":{"id":"IG1"},"timestamp":5,"message":{"mid":"ig_m1","text":"yo"}}]}]}"#;
    assert_accepted(&post_fb_signed(&router, ig.as_bytes()).await, 1, 0);

    let page = r#"{"object":"page","entry":[{"id":"P1","time":1,"messaging":[
        {"sender":{"id":"P1"},"recipient":{"id":"U1"},"timestamp":"1457764197628","message":{"mid":"m_echo","text":"thanks","is_echo":true}},
        {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197629,"delivery":{"mids":["m_echo"],"watermark":1457764197628}},
        {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1457764197630,"read":{"watermark":1457764197628}}
    ]}]}"#;
    assert_accepted(&post_fb_signed(&router, page.as_bytes()).await, 3, 0);

    let want = |kind: &str, ev: &str, id: &str, customer: &str| {
        (kind.to_string(), ev.to_string(), id.to_string(), customer.to_string())
    };
    let msgs = messages(&env).await;
    let seen: Vec<(String, String, String, String)> = msgs
        .iter()
        .map(|t| {
            let p = &t.payload;
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (t.kind.clone(), s("platform"), s("message_id"), s("customer"))
        })
        .collect();
    assert_eq!(seen, [want("conversation.process_message", "instagram", "ig_m1", "IGSID")]);
    let tasks = queued(&env).await;
    let seen: Vec<(String, String, String, String)> = tasks
        .iter()
        .map(|t| {
            let p = &t.payload;
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (t.kind.clone(), s("kind"), s("id"), s("customer"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            want("webhook.messenger", "echo", "m_echo", "U1"),
            want("webhook.messenger", "delivery", "delivery:U1:1457764197628", "U1"),
            want("webhook.messenger", "read", "read:U1:1457764197628", "U1"),
        ]
    );
    assert_eq!(tasks[0].payload["timestamp_ms"], 1457764197628u64, "a string timestamp is read");
    assert_accepted(&post_fb_signed(&router, page.as_bytes()).await, 0, 3);
}

// ---------------------------------------------------------------------------------------------
// Google Pub/Sub push
// ---------------------------------------------------------------------------------------------

/// A stand-in for Google's certs endpoint: serves whatever key set it is given, counting fetches.
struct KeyServer {
    url: String,
    keys: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct KeyServerState {
    keys: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(keys: &str) -> KeyServer {
        let state =
            KeyServerState { keys: Arc::new(Mutex::new(keys.to_string())), fetches: Arc::new(AtomicUsize::new(0)) };
        let app = Router::new()
            .route(
                "/certs",
                axum::routing::get(|axum::extract::State(s): axum::extract::State<KeyServerState>| async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    let body = s.keys.lock().unwrap().clone();
                    ([(axum::http::header::CONTENT_TYPE, "application/json")], body)
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind key server");
        let url = format!("http://{}/certs", listener.local_addr().expect("key server addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeyServer { url, keys: state.keys, fetches: state.fetches, task }
    }

    fn serve(&self, keys: &str) {
        *self.keys.lock().unwrap() = keys.to_string();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pubsub_env(name: &str, jwks_url: &str) -> TestEnv {
    let jwks = jwks_url.to_string();
    TestEnv::with(name, &redis_url(), move |c| {
        c.google_pubsub_audience = Some(AUDIENCE.into());
        c.google_pubsub_service_account = Some(SERVICE_ACCOUNT.into());
        c.google_jwks = jwks;
    })
    .await
}

async fn push(router: &Router, token: Option<&str>, envelope: &Value) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    http_with(router, "POST", "/webhooks/google/pubsub", &headers, envelope.to_string().into_bytes()).await
}

fn camel_envelope(message_id: &str, data: &Value) -> Value {
    json!({
        "message": {
            "data": STANDARD.encode(data.to_string()),
            "messageId": message_id,
            "publishTime": "2026-01-01T00:00:00.123Z",
            "attributes": {"type": "review"},
        },
        "subscription": "projects/p/subscriptions/s",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_push_is_authenticated_by_googles_token() {
    let keys = KeyServer::start(JWKS_A).await;
    let env = pubsub_env("pubsub", &keys.url).await;
    let (router, _) = env.router();
    let good = jwt(KEY_A, "test-key-a", &google_claims());
    let review = json!({"review": {"rating": 5, "comment": "great"}, "location": "loc-1"});

    let r = push(&router, Some(&good), &camel_envelope("1", &review)).await;
    assert_accepted(&r, 1, 0);
    assert!(keys.fetches() >= 1, "the key set was fetched from the configured URL");
    let tasks = queued(&env).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, "webhook.pubsub");
    let ev = &tasks[0].payload;
    assert_eq!((ev["kind"].as_str(), ev["id"].as_str()), (Some("notification"), Some("1")), "{ev}");
    assert_eq!(ev["account"], "projects/p/subscriptions/s");
    assert_eq!(ev["raw"]["data"], review, "the data is decoded");
    assert_eq!(ev["raw"]["attributes"], json!({"type": "review"}));
    assert_eq!(ev["timestamp_ms"], 1_767_225_600_123u64);

    // snake_case spelling of the ids and times.
    let snake = json!({
        "message": {"data": STANDARD.encode(br#"{"n":2}"#), "message_id": "2", "publish_time": "2026-01-01T00:00:01Z"},
        "subscription": "projects/p/subscriptions/s",
    });
    assert_accepted(&push(&router, Some(&good), &snake).await, 1, 0);
    // Google redelivers the same message id: a duplicate, whatever the spelling.
    assert_accepted(&push(&router, Some(&good), &camel_envelope("1", &review)).await, 0, 1);
    let snake_again = json!({"message": {"data": STANDARD.encode(br#"{"n":2}"#), "messageId": "2"},
                             "subscription": "projects/p/subscriptions/s"});
    assert_accepted(&push(&router, Some(&good), &snake_again).await, 0, 1);
    assert_eq!(queued_len(&env).await, 2);

    // Tokens that must not pass.
    let fresh = camel_envelope("3", &json!({"n": 3}));
    let mut wrong_aud = google_claims();
    wrong_aud["aud"] = json!("https://elsewhere.example/push");
    let mut expired = google_claims();
    expired["iat"] = json!(now_s() - 7200);
    expired["exp"] = json!(now_s() - 600);
    let mut wrong_sa = google_claims();
    wrong_sa["email"] = json!("someone@evil.example");
    let mut unverified = google_claims();
    unverified["email_verified"] = json!(false);
    let mut wrong_iss = google_claims();
    wrong_iss["iss"] = json!("https://evil.example");
    let refused = [
        ("missing Authorization", None),
        ("not a JWT", Some("not.a.jwt".to_string())),
        ("wrong audience", Some(jwt(KEY_A, "test-key-a", &wrong_aud))),
        ("expired beyond the leeway", Some(jwt(KEY_A, "test-key-a", &expired))),
        ("another service account", Some(jwt(KEY_A, "test-key-a", &wrong_sa))),
        ("email not verified", Some(jwt(KEY_A, "test-key-a", &unverified))),
        ("another issuer", Some(jwt(KEY_A, "test-key-a", &wrong_iss))),
        ("key b posing as key a", Some(jwt(KEY_B, "test-key-a", &google_claims()))),
    ];
    for (what, token) in &refused {
        let r = push(&router, token.as_deref(), &fresh).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }

    // Google rotates its keys: a token under a kid the served set does not hold is refused...
    let b_token = jwt(KEY_B, "test-key-b", &google_claims());
    let r = push(&router, Some(&b_token), &fresh).await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(queued_len(&env).await, 2, "no refused push was queued");

    // ...until the source serves the new key: past the 2 s refresh guard, the unknown kid makes
    // the key set be fetched again, and the same token passes.
    keys.serve(JWKS_AB);
    let before = keys.fetches();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_accepted(&push(&router, Some(&b_token), &fresh).await, 1, 0);
    assert!(keys.fetches() > before, "the key set was fetched again");
    assert_eq!(queued_len(&env).await, 3);
}

#[tokio::test]
async fn a_push_token_without_iat_is_refused() {
    let keys = KeyServer::start(JWKS_A).await;
    let env = pubsub_env("pubsub-iat", &keys.url).await;
    let (router, _) = env.router();
    let mut no_iat = google_claims();
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut no_exp = google_claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    // SPEC §4: `exp`/`iat` valid with 60 s leeway; jwt.rs lists both as required claims.
    for (what, claims) in [("without exp", no_exp), ("without iat", no_iat)] {
        let r = push(&router, Some(&jwt(KEY_A, "test-key-a", &claims)), &camel_envelope("1", &json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a token {what}: {}", r.text);
    }
    assert_eq!(queued_len(&env).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_key_source_is_not_fetched_on_every_push() {
    let keys = KeyServer::start("this is not a key set").await;
    let env = pubsub_env("pubsub-badkeys", &keys.url).await;
    let (router, _) = env.router();
    let token = jwt(KEY_A, "test-key-a", &google_claims());
    let started = std::time::Instant::now();
    let pushes = 10;
    for i in 0..pushes {
        let r = push(&router, Some(&token), &camel_envelope(&format!("k{i}"), &json!({}))).await;
        assert!(!r.status.is_success(), "a push that could not be verified was acknowledged: {r:?}");
    }
    assert_eq!(queued_len(&env).await, 0);
    // jwt.rs: the source is fetched again at most every 2 s, "so forged tokens cannot hammer
    // the source" — which must hold too while the source answers garbage or not at all.
    let allowed = 2 + (started.elapsed().as_secs_f64() / 2.0) as usize;
    assert!(keys.fetches() <= allowed, "{} fetches for {pushes} pushes in {:?}", keys.fetches(), started.elapsed());

    // Once the source serves keys again, pushes pass (after the refresh guard at the latest).
    keys.serve(JWKS_A);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_accepted(&push(&router, Some(&token), &camel_envelope("ok", &json!({}))).await, 1, 0);
}

#[tokio::test]
async fn unconfigured_endpoints_are_404() {
    let env = TestEnv::new("unconfigured").await;
    let (router, _) = env.router();
    let token = jwt(KEY_A, "test-key-a", &google_claims());
    push(&router, Some(&token), &camel_envelope("1", &json!({})))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    post_fb(&router, FB_BODY.as_bytes(), Some(FB_SIG)).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let envelope = json!({"message": {"data": STANDARD.encode(RBM_DATA), "messageId": "p1"}}).to_string();
    http_with(&router, "POST", "/webhooks/google/rbm", &[("x-goog-signature", RBM_SIG)], envelope.into_bytes())
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(queued_len(&env).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Google RCS Business Messaging
// ---------------------------------------------------------------------------------------------

async fn post_rbm(router: &Router, body: Vec<u8>, sig: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = sig {
        headers.push(("x-goog-signature", s));
    }
    http_with(router, "POST", "/webhooks/google/rbm", &headers, body).await
}

#[tokio::test]
async fn rbm_handshake_messages_and_events() {
    let env = TestEnv::with("rbm", &redis_url(), |c| c.google_rbm_client_token = Some(RBM_TOKEN.into())).await;
    let (router, _) = env.router();

    let hs = |token: &str| json!({"clientToken": token, "secret": "s3cret"}).to_string().into_bytes();
    let r = post_rbm(&router, hs(RBM_TOKEN), None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "s3cret"), "the secret is echoed as plain text");
    let r = post_rbm(&router, hs("WRONGTOKEN000000"), None).await;
    r.assert_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(!r.text.contains("s3cret"));
    let r = http(&router, "GET", "/webhooks/google/rbm?clientToken=SJENCPGJESMGUFPY&secret=s3cret", None, None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "s3cret"));

    assert_eq!(rbm_sign(RBM_TOKEN, RBM_DATA.as_bytes()), RBM_SIG, "the test signs as SPEC §4 says");
    assert_accepted(&post_rbm(&router, rbm_envelope("p-1", RBM_DATA), Some(RBM_SIG)).await, 1, 0);
    let msgs = messages(&env).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(queued_len(&env).await, 1);
    assert_eq!(msgs[0].kind, "conversation.process_message");
    let ev = &msgs[0].payload;
    assert_eq!((ev["platform"].as_str(), ev["message_id"].as_str()), (Some("rbm"), Some("msg-1")), "{ev}");
    assert_eq!((ev["customer"].as_str(), ev["account"].as_str()), (Some("+12223334444"), Some("bot@rbm.goog")));
    assert_eq!(ev["text"], "Hi");
    assert_eq!(ev["raw"], serde_json::from_str::<Value>(RBM_DATA).unwrap(), "the decoded data is kept");

    // Redelivered, even under another Pub/Sub message id: the RBM message id decides.
    assert_accepted(&post_rbm(&router, rbm_envelope("p-1", RBM_DATA), Some(RBM_SIG)).await, 0, 1);
    assert_accepted(&post_rbm(&router, rbm_envelope("p-2", RBM_DATA), Some(RBM_SIG)).await, 0, 1);

    // Signatures: of other data, under another token, missing, not base64.
    let other = RBM_DATA.replace("msg-1", "msg-2");
    let wrong_token = rbm_sign("WRONGTOKEN", other.as_bytes());
    for (what, sig) in [
        ("another message's signature", Some(RBM_SIG.to_string())),
        ("signed with another token", Some(wrong_token)),
        ("missing", None),
        ("not base64", Some("%%%".to_string())),
    ] {
        let r = post_rbm(&router, rbm_envelope("p-3", &other), sig.as_deref()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(queued_len(&env).await, 1);

    let read = r#"{"senderPhoneNumber":"+12223334444","eventType":"READ","eventId":"ev-1","messageId":"msg-1","sendTime":"2026-01-01T00:00:05Z","agentId":"bot@rbm.goog"}"#;
    assert_accepted(
        &post_rbm(&router, rbm_envelope("p-4", read), Some(&rbm_sign(RBM_TOKEN, read.as_bytes()))).await,
        1,
        0,
    );
    let tasks = queued(&env).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(queued_len(&env).await, 2);
    let ev = &tasks[0].payload;
    assert_eq!((tasks[0].kind.as_str(), ev["kind"].as_str()), ("webhook.rbm", Some("read")), "{ev}");
    assert_eq!(ev["customer"], "+12223334444");
}

// ---------------------------------------------------------------------------------------------
// Generic sources
// ---------------------------------------------------------------------------------------------

async fn post_generic(router: &Router, source: &str, body: &[u8], sig: Option<&str>, event_id: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = sig {
        headers.push(("x-signature-256", s));
    }
    if let Some(id) = event_id {
        headers.push(("x-event-id", id));
    }
    http_with(router, "POST", &format!("/webhooks/generic/{source}"), &headers, body.to_vec()).await
}

#[tokio::test]
async fn generic_sources_sign_with_their_own_secret() {
    let env = TestEnv::with("generic", &redis_url(), |c| {
        c.generic_secrets = BTreeMap::from([("crm".to_string(), "k1".to_string())]);
    })
    .await;
    let (router, _) = env.router();
    let body = br#"{"customer":"c-42","text":"order shipped"}"#;

    let r = post_generic(&router, "crm", body, Some(&meta_sign("k1", body)), Some("evt-1")).await;
    assert_accepted(&r, 1, 0);
    let tasks = queued(&env).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, "webhook.generic");
    let ev = &tasks[0].payload;
    assert_eq!(
        (ev["id"].as_str(), ev["account"].as_str(), ev["customer"].as_str()),
        (Some("evt-1"), Some("crm"), Some("c-42"))
    );
    assert_eq!(ev["raw"], serde_json::from_slice::<Value>(body).unwrap());

    // The event id decides, not the body.
    let other = br#"{"customer":"c-42","text":"order shipped (resent)"}"#;
    assert_accepted(&post_generic(&router, "crm", other, Some(&meta_sign("k1", other)), Some("evt-1")).await, 0, 1);

    post_generic(&router, "shop", body, Some(&meta_sign("k1", body)), Some("evt-2"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for sig in [Some(meta_sign("k2", body)), None, Some(meta_sign("k1", other))] {
        post_generic(&router, "crm", body, sig.as_deref(), Some("evt-3"))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // JSON whose key serde_json reserves for raw values reads, but is written back as JSON that
    // does not: refused, not queued as a task that could never read its payload.
    let marked = br#"{"customer":"c-42","$serde_json::private::RawValue":1}"#;
    post_generic(&router, "crm", marked, Some(&meta_sign("k1", marked)), Some("evt-5"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    post_generic(&router, "crm", b"{oops", Some(&meta_sign("k1", b"{oops")), Some("evt-4"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(queued_len(&env).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Metrics and methods
// ---------------------------------------------------------------------------------------------

/// `switchyard_webhooks_received_total` by (platform, outcome), as `/metrics` shows it.
async fn received(router: &Router) -> BTreeMap<(String, String), f64> {
    let r = http(router, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut out = BTreeMap::new();
    for line in r.text.lines() {
        let Some(rest) = line.strip_prefix("switchyard_webhooks_received_total{") else { continue };
        let (labels, value) = rest.split_once("} ").unwrap_or_else(|| panic!("unreadable line {line}"));
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_else(|| panic!("no {name} label in {line}"))
        };
        let value: f64 = value.trim().parse().unwrap_or_else(|_| panic!("unreadable value in {line}"));
        out.insert((label("platform"), label("outcome")), value);
    }
    out
}

#[tokio::test]
async fn metrics_count_accepted_duplicate_and_rejected_webhooks() {
    let env = TestEnv::with("metrics", &redis_url(), |c| {
        meta_config(c);
        c.generic_secrets.insert("crm".into(), "k1".into());
    })
    .await;
    let (router, _) = env.router();
    let before = received(&router).await;

    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_1", "m_2"]).as_bytes()).await, 2, 0);
    assert_accepted(&post_fb_signed(&router, messenger_body(&["m_1"]).as_bytes()).await, 0, 1);
    post_fb(&router, FB_BODY.as_bytes(), Some("sha256=00"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    post_fb_signed(&router, b"{}").await.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    let body = br#"{"id":"g-1"}"#;
    assert_accepted(&post_generic(&router, "crm", body, Some(&meta_sign("k1", body)), None).await, 1, 0);
    post_generic(&router, "crm", body, None, None).await.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");

    let after = received(&router).await;
    let grew = |platform: &str, outcome: &str, by: f64| {
        let key = (platform.to_string(), outcome.to_string());
        let (b, a) = (before.get(&key).copied().unwrap_or(0.0), after.get(&key).copied().unwrap_or(0.0));
        assert!(a >= b + by, "{platform}/{outcome} went from {b} to {a}, expected +{by} at least; now: {after:?}");
    };
    grew("messenger", "accepted", 2.0);
    grew("messenger", "duplicate", 1.0);
    // A rejected request is counted once, before its body is trusted enough to name a platform.
    grew("facebook", "rejected", 2.0);
    grew("generic", "accepted", 1.0);
    grew("generic", "rejected", 1.0);
}

#[tokio::test]
async fn wrong_methods_are_405_and_unknown_routes_404() {
    let env = meta_env("methods").await;
    let (router, _) = env.router();
    for (method, path) in [
        ("PUT", "/webhooks/facebook"),
        ("DELETE", "/webhooks/facebook"),
        ("GET", "/webhooks/google/pubsub"),
        ("GET", "/webhooks/generic/crm"),
        ("PATCH", "/webhooks/google/rbm"),
    ] {
        let r = http_with(&router, method, path, &[("content-type", "application/json")], FB_BODY.into()).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", r.text);
        r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    http(&router, "POST", "/webhooks/nope", None, Some("{}")).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(queued_len(&env).await, 0);
}

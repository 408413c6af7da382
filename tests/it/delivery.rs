//! Replies going out: a small local server plays Meta's Graph API and RBM, the client code is
//! the real one. Each test checks what the customer would receive.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchyard::engine::{TaskSpec, TaskState};
use switchyard::model::Platform;

async fn setup(name: &str) -> (TestEnv, FakePlatform) {
    let platform = FakePlatform::default();
    let base = platform.start().await;
    let env = TestEnv::with(name, &redis_url(), |c| {
        c.graph_url = format!("{base}/v24.0");
        c.rbm_url = base.clone();
        c.facebook_page_token = Some("PAGE_TOKEN".into());
        c.whatsapp_token = Some("WA_TOKEN".into());
        c.rbm_token = Some("RBM_TOKEN".into());
    })
    .await;
    (env, platform)
}

fn reply(channel: &str, account: &str, customer: &str, text: &str, reply_id: &str) -> TaskSpec {
    TaskSpec::new(
        "delivery.send",
        json!({"channel": channel, "account": account, "customer": customer, "text": text, "reply_id": reply_id}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messenger_reply_goes_to_the_right_page_recipient_and_token_once() {
    let (env, platform) = setup("send-messenger").await;
    let _worker = env.start_worker();
    let id = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "hello, world!", "r-1")).await.unwrap();
    env.wait_state(&id, TaskState::Success).await;
    let seen = platform.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v24.0/PAGE1/messages");
    assert_eq!(seen[0].query, "access_token=PAGE_TOKEN");
    assert_eq!(
        seen[0].body,
        json!({"recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE", "message": {"text": "hello, world!"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_then_success_sends_one_reply() {
    let (env, platform) = setup("send-500").await;
    platform.then(500, None, json!({"error": {"message": "try later", "code": 1}}));
    let _worker = env.start_worker();
    let id = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "hi", "r-500")).await.unwrap();
    let s = env.wait_state(&id, TaskState::Success).await;
    assert_eq!(outcomes(&s), ["retry", "success"], "{s:?}");
    assert_eq!(platform.seen().len(), 2);
    assert_eq!(platform.accepted().len(), 1, "the customer receives the reply once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_goes_to_the_dlq_with_the_platform_error() {
    let (env, platform) = setup("send-190").await;
    platform.then(
        400,
        None,
        json!({"error": {"message": "Error validating access token", "type": "OAuthException", "code": 190}}),
    );
    let _worker = env.start_worker();
    let id = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "hi", "r-190")).await.unwrap();
    let s = env.wait_state(&id, TaskState::Failure).await;
    assert_eq!(s.attempts, 1, "a permanent error is not retried: {s:?}");
    let dead = env.engine.dlq_get(&id).await.unwrap().expect("a dead letter");
    assert!(dead.error.contains("Meta error 190") && dead.error.contains("validating access token"), "{}", dead.error);
    assert_eq!(platform.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_as_long_as_retry_after_says() {
    let (env, platform) = setup("send-429").await;
    platform.then(429, Some("1"), json!({"error": {"message": "slow down", "code": 4}}));
    let _worker = env.start_worker();
    let id = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "hi", "r-429")).await.unwrap();
    env.wait_state(&id, TaskState::Success).await;
    let seen = platform.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 was not honoured ({gap:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_is_split_and_a_retry_sends_only_the_missing_part() {
    let (env, platform) = setup("send-split").await;
    let text = "palabra ".repeat(560); // 4480 characters: three parts of at most 2000
    platform.then(200, None, json!({"message_id": "m1"})).then(200, None, json!({"message_id": "m2"}));
    platform.then(503, None, json!({"error": {"message": "unavailable", "code": 2}}));
    let _worker = env.start_worker();
    let id = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", &text, "r-split")).await.unwrap();
    env.wait_state(&id, TaskState::Success).await;
    let accepted = platform.accepted();
    let parts: Vec<String> = accepted.iter().map(|s| s.body["message"]["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(parts.len(), 3, "each part reaches the customer exactly once: {parts:?}");
    assert!(parts.iter().all(|p| p.chars().count() <= 2000));
    assert_eq!(parts.join(" "), text.trim());
    assert_eq!(platform.seen().len(), 4, "only the failed part was sent again");
}

/// A reply recorded in its conversation counts the parts that went out in its turn's mark, a
/// field the conversation already has: a retry sends only what is missing, a second delivery of
/// the same reply sends nothing, and no marker key is left per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_reply_counts_its_parts_in_its_turn() {
    use switchyard::conversation::store::{ConversationKey, Store, StoredTurn, Who};
    let (env, platform) = setup("send-turn").await;
    let key = ConversationKey::new(Platform::Messenger, "PAGE1", "PSID7");
    let turn = StoredTurn {
        who: Who::Agent,
        text: "palabra ".repeat(560),
        kind: "reply".into(),
        intent: None,
        event_id: Some("reply:m_7".into()),
        at_ms: 1,
    };
    assert!(Store::new(env.engine.clone()).append(&key, &turn).await.unwrap());
    let spec = || {
        TaskSpec::new(
            "delivery.send",
            json!({"channel": "messenger", "account": "PAGE1", "customer": "PSID7", "text": turn.text,
                   "reply_id": "r-turn", "turn": "reply:m_7"}),
        )
    };
    platform.then(200, None, json!({"message_id": "m1"})).then(503, None, json!({"error": {"message": "busy"}}));
    let _worker = env.start_worker();
    let first = env.engine.enqueue(spec()).await.unwrap();
    env.wait_state(&first, TaskState::Success).await;
    let second = env.engine.enqueue(spec()).await.unwrap();
    env.wait_state(&second, TaskState::Success).await;
    assert_eq!(platform.accepted().len(), 3, "each of the three parts once");
    assert_eq!(platform.seen().len(), 4, "only the part that failed went again");
    assert_eq!(env.status(&second).await.result["sent_now"], 0, "the second delivery found every part sent");
    let mut con = env.engine.conn();
    let root = env.engine.keys().root().to_string();
    let sent: Vec<String> = redis::cmd("KEYS").arg(format!("{root}sent:*")).query_async(&mut con).await.unwrap();
    assert!(sent.is_empty(), "no marker key per part: {sent:?}");
    let marks: Vec<String> =
        redis::cmd("HVALS").arg(env.engine.keys().conversation(&key.id())).query_async(&mut con).await.unwrap();
    assert!(marks.contains(&"4".to_string()), "the turn's mark: recorded, and three parts out: {marks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reply_delivered_twice_is_sent_once() {
    let (env, platform) = setup("send-dup").await;
    let _worker = env.start_worker();
    let a = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "only once", "r-dup")).await.unwrap();
    env.wait_state(&a, TaskState::Success).await;
    let b = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "only once", "r-dup")).await.unwrap();
    env.wait_state(&b, TaskState::Success).await;
    assert_eq!(platform.seen().len(), 1, "a redelivered reply must not reach the customer twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_and_rbm_round_trips() {
    let (env, platform) = setup("send-wa-rbm").await;
    let _worker = env.start_worker();
    let wa = env.engine.enqueue(reply("whatsapp", "PN1", "4477", "hola", "r-wa")).await.unwrap();
    env.wait_state(&wa, TaskState::Success).await;
    platform.then(409, None, json!({"error": {"code": 409, "message": "already exists"}}));
    let rbm = env.engine.enqueue(reply("rbm", "bot@rbm.goog", "+12223334444", "Hi there", "r-rbm")).await.unwrap();
    env.wait_state(&rbm, TaskState::Success).await;
    let seen = platform.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, "/v24.0/PN1/messages");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer WA_TOKEN"));
    assert_eq!(
        seen[0].body,
        json!({"messaging_product": "whatsapp", "to": "4477", "type": "text", "text": {"body": "hola"}})
    );
    assert_eq!(seen[1].path, "/v1/phones/+12223334444/agentMessages");
    assert_eq!(seen[1].query, "messageId=r-rbm-0");
    assert_eq!(seen[1].auth.as_deref(), Some("Bearer RBM_TOKEN"));
    assert_eq!(seen[1].body, json!({"contentMessage": {"text": "Hi there"}}));
}

/// A payload that is no reply (a missing field, a platform with no send API) fails at once with
/// what was wrong, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_no_reply_fails_at_once_and_sends_nothing() {
    let (env, platform) = setup("send-bad").await;
    let _worker = env.start_worker();
    let no_text = env
        .engine
        .enqueue(TaskSpec::new("delivery.send", json!({"channel": "messenger", "account": "P", "customer": "U"})))
        .await
        .unwrap();
    let telegram = env.engine.enqueue(reply("telegram", "P", "U", "hi", "r-tg")).await.unwrap();
    let pubsub = env.engine.enqueue(reply("pubsub", "P", "U", "hi", "r-ps")).await.unwrap();
    let error = async |id: &str| {
        let s = env.wait_state(id, TaskState::Failure).await;
        assert_eq!(outcomes(&s).len(), 1, "failed for good on its first attempt: {s:?}");
        s.error.unwrap_or_default()
    };
    let e = error(&no_text).await;
    assert!(e.starts_with("not a reply: missing field `text`"), "{e}");
    let e = error(&telegram).await;
    assert!(e.starts_with("not a reply: unknown variant `telegram`"), "{e}");
    assert_eq!(error(&pubsub).await, "no send API for pubsub");
    assert!(platform.seen().is_empty(), "{:?}", platform.seen());
}

/// Another attempt of the same reply took a part (a worker cut off from Redis after the platform
/// took it, its mark still on its way): this attempt waits for the mark and sends nothing. A take
/// whose holder died expires, and the part then goes out (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_another_attempt_is_sending_waits_for_its_mark() {
    let (env, platform) = setup("send-taken").await;
    let keys = env.engine.conversation_part("messenger:PAGE1:PSID1").clone();
    let mut con = env.engine.conn();
    for reply_id in ["r-taken", "r-orphan"] {
        let _: () = redis::cmd("SET")
            .arg(keys.sending(reply_id, 0))
            .arg("another-attempt")
            .arg("PX")
            .arg(if reply_id == "r-taken" { 60_000 } else { 1_500 })
            .query_async(&mut con)
            .await
            .unwrap();
    }
    let _worker = env.start_worker();
    let taken = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "sent by the other", "r-taken")).await.unwrap();
    let orphan = env.engine.enqueue(reply("messenger", "PAGE1", "PSID1", "holder died", "r-orphan")).await.unwrap();

    // The orphaned take expires: that part goes out, once.
    env.wait_state(&orphan, TaskState::Success).await;
    assert_eq!(
        platform.seen().iter().map(|s| s.body["message"]["text"].clone()).collect::<Vec<_>>(),
        [json!("holder died")]
    );
    assert_ne!(env.status(&taken).await.status, TaskState::Success, "still waiting for the other attempt's mark");

    // The other attempt's mark lands (sent.lua's `mark`: the marker, and the take released).
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(keys.sent("r-taken", 0))
        .arg(1)
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("DEL")
        .arg(keys.sending("r-taken", 0))
        .ignore()
        .query_async(&mut con)
        .await
        .unwrap();
    let s = env.wait_state(&taken, TaskState::Success).await;
    assert_eq!(s.result, json!({"parts": 1, "sent_now": 0}), "{s:?}");
    assert_eq!(platform.seen().len(), 1, "the part the other attempt sent is not sent again: {:?}", platform.seen());
}

//! The whole conversation flow: a webhook in, the reply out through a local stand-in for the
//! platform, with the real ingestion, engine, responders and send client in between. Each test
//! checks what the customer would receive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::config::Config;
use switchyard::conversation::responder;
use switchyard::engine::Lane;

pub(crate) const SECRET: &str = "flow_app_secret";
const RBM_CLIENT_TOKEN: &str = "RBMCLIENTTOKEN01";

pub(crate) fn platform_config(c: &mut Config, base: &str) {
    c.facebook_app_secret = Some(SECRET.into());
    c.google_rbm_client_token = Some(RBM_CLIENT_TOKEN.into());
    c.graph_url = format!("{base}/v24.0");
    c.rbm_url = base.to_string();
    c.facebook_page_token = Some("PAGE_TOKEN".into());
    c.whatsapp_token = Some("WA_TOKEN".into());
    c.rbm_token = Some("RBM_TOKEN".into());
}

/// A deployment wired to a local platform, with its HTTP router and `workers` workers.
async fn setup(
    name: &str,
    workers: usize,
    adjust: impl FnOnce(&mut Config),
) -> (TestEnv, FakePlatform, Router, Vec<Worker>) {
    let platform = FakePlatform::default();
    let base = platform.start().await;
    let env = TestEnv::with(name, &redis_url(), |c| {
        platform_config(c, &base);
        adjust(c);
    })
    .await;
    let (router, _) = env.router();
    let workers = (0..workers).map(|_| env.start_worker()).collect();
    (env, platform, router, workers)
}

/// A Messenger webhook with one message per `(mid, text)`, from `psid` to `page`.
pub(crate) fn messenger_body(page: &str, psid: &str, messages: &[(&str, &str)]) -> Vec<u8> {
    let messaging: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, (mid, text))| {
            json!({"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": 1_700_000_000_000u64 + i as u64,
                   "message": {"mid": mid, "text": text}})
        })
        .collect();
    json!({"object": "page", "entry": [{"id": page, "time": 1_700_000_000_000u64, "messaging": messaging}]})
        .to_string()
        .into_bytes()
}

async fn post_signed(router: &Router, path: &str, body: Vec<u8>) -> Resp {
    let sig = meta_sign(SECRET, &body);
    let r =
        http_with(router, "POST", path, &[("content-type", "application/json"), ("x-hub-signature-256", &sig)], body)
            .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    r
}

/// Wait until every lane has nothing queued, running or waiting for a retry.
async fn wait_idle(env: &TestEnv) {
    wait_until("every lane is idle", async || {
        let q = env.engine.queues_status().await.unwrap();
        Lane::ALL.iter().all(|l| q.queues[l.as_str()].depth == 0)
    })
    .await;
}

/// The texts the platform accepted, in the order it received them.
fn texts(platform: &FakePlatform) -> Vec<String> {
    platform
        .accepted()
        .iter()
        .map(|s| {
            s.body["message"]["text"]
                .as_str()
                .or(s.body["text"]["body"].as_str())
                .or(s.body["contentMessage"]["text"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// What the built-in responder answers to `text` at the start of a conversation.
fn builtin(text: &str) -> String {
    responder::respond(&[], text).text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_messenger_webhook_gets_exactly_one_reply_even_when_delivered_twice() {
    let (env, platform, router, _w) = setup("flow-one", 1, |_| {}).await;
    let body = messenger_body("PAGE1", "PSID1", &[("m_1", "hello there")]);
    post_signed(&router, "/webhooks/facebook", body.clone()).await;
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    // Meta delivers the same webhook again: it is a duplicate, and no second reply goes out.
    let again = post_signed(&router, "/webhooks/facebook", body).await;
    assert_eq!(again.json["duplicates"], 1, "{:?}", again.json);
    wait_idle(&env).await;

    let seen = platform.seen();
    assert_eq!(seen.len(), 1, "exactly one Send API call: {seen:?}");
    assert_eq!(seen[0].path, "/v24.0/PAGE1/messages");
    assert_eq!(seen[0].query, "access_token=PAGE_TOKEN");
    assert_eq!(
        seen[0].body,
        json!({"recipient": {"id": "PSID1"}, "messaging_type": "RESPONSE", "message": {"text": builtin("hello there")}})
    );
    let conv = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID1", None).await;
    assert_eq!(conv.status, StatusCode::OK, "{:?}", conv.json);
    let roles: Vec<&str> =
        conv.json["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["customer", "agent"], "{:?}", conv.json);
    assert_eq!(conv.json["messages"][0]["text"], "hello there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_five_messages_is_answered_in_order_by_several_workers() {
    let (env, platform, router, _w) = setup("flow-burst", 3, |_| {}).await;
    let messages = ["hello", "how much does it cost?", "do you ship to Lima?", "where is my order", "purple elephants"];
    // Five separate webhooks, as Meta sends them, as fast as they come.
    for (i, text) in messages.iter().enumerate() {
        let mid = format!("m_burst_{i}");
        post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID9", &[(&mid, text)])).await;
    }
    wait_until("five replies were sent", async || platform.accepted().len() >= 5).await;
    wait_idle(&env).await;
    let expected: Vec<String> = messages.iter().map(|m| builtin(m)).collect();
    assert_eq!(texts(&platform), expected, "replies out of order or interleaved");

    let conv = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID9", None).await;
    let turns: Vec<(String, String)> = conv.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["text"].as_str().unwrap().to_string()))
        .collect();
    let alternating: Vec<(String, String)> = messages
        .iter()
        .zip(&expected)
        .flat_map(|(m, r)| [("customer".to_string(), m.to_string()), ("agent".to_string(), r.clone())])
        .collect();
    assert_eq!(turns, alternating, "each message is followed by its own answer");

    // Once the conversation is quiet, its figures are computed once for the burst and shown.
    let analytics = wait_for("the conversation's analytics", async || {
        let a = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID9", None).await.json["analytics"].clone();
        (!a.is_null()).then_some(a)
    })
    .await;
    assert_eq!(analytics["customer_messages"], 5, "{analytics}");
    assert_eq!(analytics["agent_replies"], 5, "{analytics}");
    assert_eq!(analytics["intents"]["pricing"], 1, "{analytics}");
    assert!(analytics["first_reply_ms"].is_number(), "{analytics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_error_then_success_delivers_one_reply() {
    let (env, platform, router, _w) = setup("flow-500", 1, |_| {}).await;
    platform.then(500, None, json!({"error": {"message": "oops", "code": 2}}));
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID2", &[("m_500", "hi")])).await;
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    wait_idle(&env).await;
    assert_eq!(platform.seen().len(), 2, "one failed call, one accepted");
    assert_eq!(texts(&platform), [builtin("hi")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_token_dead_letters_the_reply_and_later_replies_still_go_out() {
    let (env, platform, router, _w) = setup("flow-190", 1, |_| {}).await;
    platform.then(
        400,
        None,
        json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException", "code": 190}}),
    );
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID3", &[("m_190a", "hello")])).await;
    let dead = wait_for("the reply in the DLQ", async || {
        let r = admin(&router, "GET", "/dlq?kind=delivery.send", None).await;
        r.json["dead_letters"].as_array().and_then(|d| d.first().cloned())
    })
    .await;
    let error = dead["error"].as_str().unwrap_or_default();
    assert!(error.contains("190") && error.contains("Session has expired"), "the platform's error is kept: {dead}");
    assert_eq!(dead["attempts"].as_array().map(Vec::len), Some(1), "190 is not retried: {dead}");

    // The conversation goes on: the next reply is not stuck behind the dead one.
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID3", &[("m_190b", "how much is it?")]))
        .await;
    wait_until("the next reply was sent", async || platform.accepted().len() == 1).await;
    wait_idle(&env).await;
    assert_eq!(texts(&platform), [builtin("how much is it?")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn echoes_deliveries_and_reads_are_recorded_not_answered() {
    let (env, platform, router, _w) = setup("flow-echo", 1, |_| {}).await;
    let body = json!({"object": "page", "entry": [{"id": "PAGE1", "time": 1, "messaging": [
        {"sender": {"id": "PAGE1"}, "recipient": {"id": "PSID4"}, "timestamp": 1,
         "message": {"mid": "m_echo", "text": "sent by a person", "is_echo": true}},
        {"sender": {"id": "PSID4"}, "recipient": {"id": "PAGE1"}, "timestamp": 2, "delivery": {"watermark": 2}},
        {"sender": {"id": "PSID4"}, "recipient": {"id": "PAGE1"}, "timestamp": 3, "read": {"watermark": 3}},
    ]}]});
    post_signed(&router, "/webhooks/facebook", body.to_string().into_bytes()).await;
    wait_idle(&env).await;
    assert!(platform.seen().is_empty(), "nothing is answered: {:?}", platform.seen());
    let conv = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID4", None).await;
    let kinds: Vec<&str> =
        conv.json["messages"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 3, "{:?}", conv.json);
    for k in ["echo", "delivery", "read"] {
        assert!(kinds.contains(&k), "{k} not recorded: {kinds:?}");
    }
    assert_eq!(conv.json["replies"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whatsapp_round_trip() {
    let (env, platform, router, _w) = setup("flow-wa", 1, |_| {}).await;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PHONE_ID"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "5215512345678"}],
        "messages": [{"from": "5215512345678", "id": "wamid.1", "timestamp": "1700000000", "type": "text",
                      "text": {"body": "¿Cuánto cuesta el plan?"}}]
    }}]}]});
    post_signed(&router, "/webhooks/facebook", body.to_string().into_bytes()).await;
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    wait_idle(&env).await;
    let seen = platform.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v24.0/PHONE_ID/messages");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer WA_TOKEN"));
    assert_eq!(seen[0].body["to"], "5215512345678");
    assert_eq!(seen[0].body["text"]["body"], builtin("¿Cuánto cuesta el plan?"));
    assert!(
        builtin("¿Cuánto cuesta el plan?").contains("precio") || builtin("¿Cuánto cuesta el plan?").contains("plan")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rbm_round_trip() {
    let (env, platform, router, _w) = setup("flow-rbm", 1, |_| {}).await;
    let data = r#"{"senderPhoneNumber":"+15550002222","messageId":"rbm-msg-1","sendTime":"2026-01-01T00:00:00Z","agentId":"bot@rbm.goog","text":"do you ship to Lima?"}"#;
    let sig = rbm_sign(RBM_CLIENT_TOKEN, data.as_bytes());
    let r =
        http_with(&router, "POST", "/webhooks/google/rbm", &[("x-goog-signature", &sig)], rbm_envelope("ps-1", data))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    wait_idle(&env).await;
    let seen = platform.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/phones/+15550002222/agentMessages");
    assert!(seen[0].query.starts_with("messageId="), "{}", seen[0].query);
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer RBM_TOKEN"));
    assert_eq!(seen[0].body["contentMessage"]["text"], builtin("do you ship to Lima?"));
}

// ---------------------------------------------------------------------------------------------
// The LLM responder
// ---------------------------------------------------------------------------------------------

/// Requests an LLM stand-in received: `Authorization` header and body.
pub(crate) type LlmRequests = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A local chat-completions endpoint answering `answer` after `delay`, recording requests.
pub(crate) async fn llm_server(answer: &'static str, delay: Duration) -> (String, LlmRequests) {
    let seen: LlmRequests = Arc::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                log.lock().unwrap().push((auth, body));
                tokio::time::sleep(delay).await;
                axum::Json(json!({"id": "c1", "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_llm_answers_with_the_history_as_context() {
    let (url, requests) = llm_server("We ship to Lima in 3 days.", Duration::ZERO).await;
    let (env, platform, router, _w) = setup("flow-llm", 1, |c| {
        c.llm_url = Some(url);
        c.llm_api_key = Some("LLM_KEY".into());
        c.llm_model = "test-model".into();
    })
    .await;
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID5", &[("m_l1", "hello")])).await;
    wait_until("the first reply was sent", async || platform.accepted().len() == 1).await;
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID5", &[("m_l2", "do you ship to Lima?")]))
        .await;
    wait_until("the second reply was sent", async || platform.accepted().len() == 2).await;
    wait_idle(&env).await;
    assert_eq!(texts(&platform), ["We ship to Lima in 3 days.", "We ship to Lima in 3 days."]);
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let (auth, body) = &requests[1];
    assert_eq!(auth.as_deref(), Some("Bearer LLM_KEY"));
    assert_eq!(body["model"], "test-model");
    let msgs: Vec<(String, String)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_string(), m["content"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(msgs[0].0, "system");
    assert_eq!(
        msgs[1..],
        [
            ("user".to_string(), "hello".to_string()),
            ("assistant".to_string(), "We ship to Lima in 3 days.".to_string()),
            ("user".to_string(), "do you ship to Lima?".to_string()),
        ],
        "the history goes with the new message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_llm_timeout_falls_back_to_the_built_in_answer() {
    let (url, requests) = llm_server("too late", Duration::from_secs(5)).await;
    let (env, platform, router, _w) = setup("flow-llm-timeout", 1, |c| {
        c.llm_url = Some(url);
        c.llm_timeout = Duration::from_millis(200);
    })
    .await;
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID6", &[("m_t1", "how much does it cost?")]))
        .await;
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    wait_idle(&env).await;
    assert_eq!(requests.lock().unwrap().len(), 1, "the LLM was asked");
    assert_eq!(texts(&platform), [builtin("how much does it cost?")]);
}

// ---------------------------------------------------------------------------------------------
// The seed's API
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_message_api_answers_synchronously_and_asynchronously() {
    let (_env, platform, router, _w) = setup("flow-api", 1, |_| {}).await;
    let r = admin(&router, "POST", "/conversations/message", Some(r#"{"message": "hello", "user_id": "u-1"}"#)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["conversation_id"], "api:api:u-1");
    assert_eq!(r.json["response"], builtin("hello"));
    assert_eq!(r.json["status"], "completed");

    let r = admin(
        &router,
        "POST",
        "/conversations/message",
        Some(r#"{"message": "how much does it cost?", "conversation_id": "api:api:u-1", "async_processing": true}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["conversation_id"], "pending");
    assert_eq!(r.json["response"], "Message received and being processed");
    assert_eq!(r.json["status"], "processing");
    let task = r.json["task_id"].as_str().unwrap().to_string();
    let status = wait_for("the task finished", async || {
        let s = admin(&router, "GET", &format!("/conversations/tasks/{task}/status"), None).await;
        (s.json["status"] == "SUCCESS").then_some(s.json)
    })
    .await;
    assert_eq!(status["result"]["response"], builtin("how much does it cost?"));

    // The webhook-interaction endpoint is asynchronous unless told otherwise.
    let r = admin(
        &router,
        "POST",
        "/conversations/webhook-interaction",
        Some(r#"{"message": "thanks", "user_id": "u-1"}"#),
    )
    .await;
    assert_eq!(r.json["status"], "processing", "{:?}", r.json);
    let task = r.json["task_id"].as_str().unwrap().to_string();
    wait_until("the interaction was answered", async || {
        admin(&router, "GET", &format!("/conversations/tasks/{task}/status"), None).await.json["status"] == "SUCCESS"
    })
    .await;

    let conv = admin(&router, "GET", "/conversations/u-1", None).await;
    assert_eq!(conv.status, StatusCode::OK, "an API conversation is found by its short id too: {:?}", conv.json);
    assert_eq!(conv.json["conversation_id"], "api:api:u-1");
    assert_eq!(conv.json["messages"].as_array().map(Vec::len), Some(6), "{:?}", conv.json);
    assert!(platform.seen().is_empty(), "API conversations are answered in the API, not on a platform");

    // Bad input gets a clear error.
    for body in [r#"{"message": ""}"#, r#"{"text": "hi"}"#, "not json"] {
        admin(&router, "POST", "/conversations/message", Some(body))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "bad_request");
    }
    admin(&router, "GET", "/conversations/nobody-here", None).await.assert_error(StatusCode::NOT_FOUND, "not_found");
    let r = http(&router, "POST", "/conversations/message", None, Some(r#"{"message": "hi"}"#)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handed_off_conversation_gets_no_automatic_reply_until_continued() {
    let (env, platform, router, _w) = setup("flow-handoff", 1, |_| {}).await;
    post_signed(
        &router,
        "/webhooks/facebook",
        messenger_body("PAGE1", "PSID7", &[("m_h1", "I want to talk to a human")]),
    )
    .await;
    wait_until("the hand-off was acknowledged", async || platform.accepted().len() == 1).await;
    post_signed(&router, "/webhooks/facebook", messenger_body("PAGE1", "PSID7", &[("m_h2", "hello?")])).await;
    wait_idle(&env).await;
    assert_eq!(texts(&platform), [builtin("I want to talk to a human")], "no automatic reply while with a person");
    let conv = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID7", None).await;
    assert_eq!(conv.json["handed_off"], true, "{:?}", conv.json);

    // The person hands the conversation back: the unanswered message gets its answer.
    let r = admin(&router, "POST", "/conversations/messenger:PAGE1:PSID7/continue", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
    assert!(r.json["task_id"].is_string());
    wait_until("the unanswered message was answered", async || platform.accepted().len() == 2).await;
    wait_idle(&env).await;
    assert_eq!(texts(&platform)[1], responder::respond(&[], "hello?").text);
    let conv = admin(&router, "GET", "/conversations/messenger:PAGE1:PSID7", None).await;
    assert_eq!(conv.json["handed_off"], false, "{:?}", conv.json);
    admin(&router, "POST", "/conversations/messenger:PAGE1:NOBODY/continue", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

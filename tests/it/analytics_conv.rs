//! Conversation analytics through the real tasks: the figures stored for a conversation of known
//! shape, one run per burst of replies, and batches with their progress.

use crate::common::*;
use std::time::{Duration, Instant};
use switchyard::model::Platform;

use futures_util::future::join_all;
use serde_json::{Value, json};
use switchyard::analytics::conversation as analytics;
use switchyard::conversation::responder::Intent;
use switchyard::conversation::store::{ConversationKey, Store, StoredTurn, Who};
use switchyard::engine::{Lane, Registry, TaskSpec, TaskState};

const T: u64 = 1_700_000_000_000;

/// A deployment that knows the analytics kinds, its groups created.
async fn deployment(name: &str) -> TestEnv {
    let mut registry = Registry::new();
    analytics::register(&mut registry);
    let env = TestEnv::lazy(name, &redis_url(), |_| {}, registry);
    env.engine.ensure_groups().await.expect("create consumer groups");
    env
}

fn customer(text: &str, intent: Intent, id: &str, at: u64) -> StoredTurn {
    StoredTurn {
        who: Who::Customer,
        text: text.into(),
        kind: "message".into(),
        intent: Some(intent),
        event_id: Some(id.into()),
        at_ms: T + at,
    }
}

/// The reply to message `to`, recorded as the conversation flow records it.
fn reply(to: &str, at: u64) -> StoredTurn {
    StoredTurn {
        who: Who::Agent,
        text: "an answer".into(),
        kind: "reply".into(),
        intent: Some(Intent::Fallback),
        event_id: Some(format!("reply:{to}")),
        at_ms: T + at,
    }
}

fn delivery(id: &str, at: u64) -> StoredTurn {
    StoredTurn {
        who: Who::System,
        text: "delivered".into(),
        kind: "delivery".into(),
        intent: None,
        event_id: Some(id.into()),
        at_ms: T + at,
    }
}

fn conversation_task(id: &str) -> TaskSpec {
    TaskSpec::new(analytics::CONVERSATION, json!({"conversation_id": id}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_of_known_shape_is_analyzed_by_its_task() {
    let env = deployment("an-shape").await;
    let store = Store::new(env.engine.clone());
    let key = ConversationKey::new(Platform::Messenger, "PAGE1", "PSID1");
    for turn in [
        customer("Hola, ¿cuánto cuesta el plan pro?", Intent::Pricing, "m1", 0),
        reply("m1", 1_500),
        delivery("d1", 1_600),
        customer("Mi pedido llegó roto, pésimo servicio", Intent::Complaint, "m2", 10_000),
        reply("m2", 12_500),
        customer("¿y cuándo llega el nuevo?", Intent::Fallback, "m3", 20_000),
        reply("m3", 21_000),
    ] {
        assert!(store.append(&key, &turn).await.unwrap());
    }
    store.set_handoff(&key.id(), true).await.unwrap();
    let before = switchyard::engine::now_ms();

    let _worker = env.start_worker();
    let task = env.engine.enqueue(conversation_task(&key.id())).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;

    let stored = analytics::load(&env.engine, &key.id()).await.unwrap().expect("analytics stored");
    assert_eq!(
        s.result,
        json!({"conversation_id": stored["conversation_id"], "computed_at": stored["computed_at"], "turns": stored["turns"]}),
        "the task's result names the run whose figures it stored"
    );
    let computed_at = stored["computed_at"].as_u64().expect("computed_at in ms");
    assert!(computed_at >= before, "computed at {computed_at}, before the task was queued ({before})");
    let mut figures = stored.clone();
    figures.as_object_mut().unwrap().remove("computed_at");
    assert_eq!(
        figures,
        json!({
            "conversation_id": "messenger:PAGE1:PSID1",
            "handed_off": true,
            "turns": 7,
            "customer_messages": 3,
            "agent_replies": 3,
            "system_events": 1,
            "first_reply_ms": 1_500,
            // (1 500 + 2 500 + 1 000) / 3
            "avg_reply_ms": 1_667,
            "max_reply_ms": 2_500,
            "intents": {"complaint": 1, "fallback": 1, "pricing": 1},
            "language": "es",
            // one message of three is negative
            "sentiment": {"score": -0.333, "label": "negative"},
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_conversation_is_done_with_a_note() {
    let env = deployment("an-missing").await;
    let _worker = env.start_worker();
    let task = env.engine.enqueue(conversation_task("messenger:PAGE1:nobody")).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;
    assert_eq!(s.result["conversation_id"], "messenger:PAGE1:nobody");
    assert!(s.result["note"].as_str().is_some_and(|n| n.contains("no such conversation")), "{:?}", s.result);
    assert_eq!(analytics::load(&env.engine, "messenger:PAGE1:nobody").await.unwrap(), None);
}

/// A run whose payload names no conversation fails on its first attempt, saying what it needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_names_no_conversation_fails_at_once() {
    let env = deployment("an-bad").await;
    let _worker = env.start_worker();
    let missing = env.engine.enqueue(TaskSpec::new(analytics::CONVERSATION, json!({"id": "x"}))).await.unwrap();
    let empty = env.engine.enqueue(conversation_task("")).await.unwrap();
    for (task, why) in [(missing, "not a conversation to analyze"), (empty, "the payload names no conversation_id")] {
        let s = env.wait_state(&task, TaskState::Failure).await;
        assert_eq!(outcomes(&s).len(), 1, "failed for good on its first attempt: {s:?}");
        let error = s.error.unwrap_or_default();
        assert!(error.starts_with(why), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_queues_one_run_and_a_later_request_another() {
    let env = deployment("an-debounce").await;
    let store = Store::new(env.engine.clone());
    let key = ConversationKey::new(Platform::Whatsapp, "PHONE1", "15550001");
    let id = key.id();
    store.append(&key, &customer("hello", Intent::Greeting, "m1", 0)).await.unwrap();
    store.append(&key, &reply("m1", 800)).await.unwrap();

    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(analytics::request(&env.engine, &id).await.unwrap());
    }
    let first = queued[0].clone().expect("the first request queues a run");
    assert!(queued[1..].iter().all(Option::is_none), "one run for the burst: {queued:?}");
    assert_eq!(env.lane_entries(Lane::Analytics).await, vec![(first.clone(), analytics::CONVERSATION.to_string())]);

    let _worker = env.start_worker();
    let s = env.wait_state(&first, TaskState::Success).await;
    assert_eq!((&s.result["conversation_id"], &s.result["turns"]), (&json!(id), &json!(2)), "{:?}", s.result);
    let a = analytics::load(&env.engine, &id).await.unwrap().expect("analytics stored");
    assert_eq!((&a["customer_messages"], &a["agent_replies"]), (&json!(1), &json!(1)), "{a}");
    assert_eq!(a["computed_at"], s.result["computed_at"], "the result names the run that made them");

    // The run is over: the next reply gets a run of its own, which sees it.
    store.append(&key, &customer("thanks!", Intent::Fallback, "m2", 5_000)).await.unwrap();
    store.append(&key, &reply("m2", 5_400)).await.unwrap();
    let second = analytics::request(&env.engine, &id).await.unwrap().expect("a new run once the last one ran");
    assert_ne!(second, first);
    let s = env.wait_state(&second, TaskState::Success).await;
    assert_eq!(s.result["turns"], 4, "{:?}", s.result);
    assert_eq!(analytics::load(&env.engine, &id).await.unwrap().expect("analytics stored")["agent_replies"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replies_while_a_run_waits_for_quiet_get_no_second_run() {
    const EXCHANGES: u64 = 25;
    let env = deployment("an-busy").await;
    let store = Store::new(env.engine.clone());
    let key = ConversationKey::new(Platform::Instagram, "IG1", "IGSID1");
    let id = key.id();
    let _worker = env.start_worker();

    // A busy conversation: a message and its reply every 100 ms for longer than the quiet
    // period, each reply followed by a request, as the flow makes them. The run queued first
    // waits for quiet meanwhile.
    let mut tasks = Vec::new();
    for n in 0..EXCHANGES {
        let m = format!("m{n}");
        store.append(&key, &customer("and one more thing", Intent::Fallback, &m, n * 100)).await.unwrap();
        store.append(&key, &reply(&m, n * 100 + 50)).await.unwrap();
        tasks.extend(analytics::request(&env.engine, &id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!tasks.is_empty(), "the first request queues a run");

    // Every run queued ends, and exactly one of them analyzes: after the last reply.
    let mut analyzed = Vec::new();
    for task in &tasks {
        let s = env.wait_state(task, TaskState::Success).await;
        if s.result.get("computed_at").is_some() {
            analyzed.push(s.result);
        } else {
            assert!(s.result["note"].as_str().is_some_and(|n| n.contains("newer run")), "{:?}", s.result);
        }
    }
    let computed_at: Vec<&Value> = analyzed.iter().map(|a| &a["computed_at"]).collect();
    assert_eq!(analyzed.len(), 1, "one run analyzes the burst; these did, at: {computed_at:?}");
    assert_eq!(analyzed[0]["turns"], 2 * EXCHANGES);
    assert_eq!(analytics::load(&env.engine, &id).await.unwrap().expect("analytics stored")["agent_replies"], EXCHANGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_reports_progress_and_stores_analytics_for_every_conversation() {
    const N: usize = 2000;
    let env = deployment("an-batch").await;
    let store = Store::new(env.engine.clone());
    // Three shapes in turn: pleased (answered after 1 s), upset (after 2 s), unanswered.
    let keys: Vec<ConversationKey> =
        (0..N).map(|i| ConversationKey::new(Platform::Messenger, "PAGE1", &format!("U{i}"))).collect();
    join_all(keys.iter().enumerate().map(|(i, key)| {
        let store = &store;
        async move {
            let turns = match i % 3 {
                0 => vec![customer("great, thanks", Intent::Fallback, "m1", 0), reply("m1", 1_000)],
                1 => vec![customer("this is terrible", Intent::Complaint, "m1", 0), reply("m1", 2_000)],
                _ => vec![customer("where is my order", Intent::OrderStatus, "m1", 0)],
            };
            for turn in turns {
                store.append(key, &turn).await.unwrap();
            }
        }
    }))
    .await;

    let _worker = env.start_worker();
    let task = env.engine.enqueue(TaskSpec::new(analytics::BATCH, json!({}))).await.unwrap();
    let mut seen_while_started = Vec::new();
    let mut last = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = env.status(&task).await;
        assert!(s.progress >= last, "progress went back from {last} to {}", s.progress);
        last = s.progress;
        match s.status {
            TaskState::Started => seen_while_started.push(s.progress),
            TaskState::Success => break,
            TaskState::Pending => {}
            other => panic!("the batch ended {other:?}: {s:?}"),
        }
        assert!(Instant::now() < deadline, "the batch did not finish within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        seen_while_started.iter().any(|p| (1..=99).contains(p)),
        "no progress between 1 and 99 seen while STARTED: {seen_while_started:?}"
    );

    let s = env.status(&task).await;
    assert_eq!(s.progress, 100);
    assert_eq!(
        s.result,
        json!({
            "analyzed": N,
            "missing": 0,
            "customer_messages": N,
            "agent_replies": 667 + 667,
            "system_events": 0,
            "handed_off": 0,
            // 667 answered after 1 s, 667 after 2 s
            "avg_first_reply_ms": 1_500,
            "sentiment": {"negative": 667, "neutral": 666, "positive": 667},
            "stopped": null,
        })
    );

    let stored: Vec<Option<Value>> = join_all(keys.iter().map(|k| {
        let id = k.id();
        let engine = env.engine.clone();
        async move { analytics::load(&engine, &id).await.unwrap() }
    }))
    .await;
    for (i, a) in stored.iter().enumerate() {
        let a = a.as_ref().unwrap_or_else(|| panic!("no analytics stored for conversation {i}"));
        let (replies, first_reply, label) = match i % 3 {
            0 => (1, json!(1_000), "positive"),
            1 => (1, json!(2_000), "negative"),
            _ => (0, Value::Null, "neutral"),
        };
        assert_eq!(
            (&a["customer_messages"], &a["agent_replies"], &a["first_reply_ms"], &a["sentiment"]["label"]),
            (&json!(1), &json!(replies), &first_reply, &json!(label)),
            "conversation {i}: {a}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_takes_the_conversations_named_or_found_up_to_its_limit() {
    let env = deployment("an-batch-ids").await;
    let store = Store::new(env.engine.clone());
    let keys: Vec<ConversationKey> = ["A", "B", "C"]
        .iter()
        .map(|c| ConversationKey::new(Platform::Rbm, "AGENT1", &format!("+1555000{c}")))
        .collect();
    for key in &keys {
        store.append(key, &customer("hi", Intent::Greeting, "m1", 0)).await.unwrap();
        store.append(key, &reply("m1", 400)).await.unwrap();
    }
    let [a, b, c] = [keys[0].id(), keys[1].id(), keys[2].id()];
    let _worker = env.start_worker();

    // Named: each once, and one that does not exist.
    let named = json!({"conversation_ids": [a, b, a, "rbm:AGENT1:nobody"]});
    let task = env.engine.enqueue(TaskSpec::new(analytics::BATCH, named)).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;
    assert_eq!((&s.result["analyzed"], &s.result["missing"]), (&json!(2), &json!(1)), "{:?}", s.result);
    assert!(analytics::load(&env.engine, &a).await.unwrap().is_some());
    assert!(analytics::load(&env.engine, &b).await.unwrap().is_some());
    assert_eq!(analytics::load(&env.engine, &c).await.unwrap(), None, "not named, not analyzed");

    // Found: the conversations only, not their logs or the figures stored beside two of them.
    let task = env.engine.enqueue(TaskSpec::new(analytics::BATCH, json!({}))).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;
    assert_eq!((&s.result["analyzed"], &s.result["missing"]), (&json!(3), &json!(0)), "{:?}", s.result);
    assert_eq!(s.result["avg_first_reply_ms"], 400);
    assert!(analytics::load(&env.engine, &c).await.unwrap().is_some());

    let task = env.engine.enqueue(TaskSpec::new(analytics::BATCH, json!({"limit": 2}))).await.unwrap();
    let s = env.wait_state(&task, TaskState::Success).await;
    assert_eq!((&s.result["analyzed"], &s.result["missing"]), (&json!(2), &json!(0)), "{:?}", s.result);

    let task = env.engine.enqueue(TaskSpec::new(analytics::BATCH, json!({"conversation_ids": "A"}))).await.unwrap();
    let s = env.wait_state(&task, TaskState::Failure).await;
    assert!(s.error.as_deref().unwrap_or("").contains("not a batch of conversations"), "{s:?}");
}

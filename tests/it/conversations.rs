//! The conversation store: turns in order, each event once, summary and retention.

use crate::common::*;
use switchyard::conversation::responder::Intent;
use switchyard::conversation::store::{ConversationKey, Store, StoredTurn, Who};
use switchyard::model::Platform;

fn turn(who: Who, text: &str, event: Option<&str>) -> StoredTurn {
    StoredTurn {
        who,
        text: text.into(),
        kind: "message".into(),
        intent: None,
        event_id: event.map(str::to_string),
        at_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_kept_in_order_once_each_with_a_summary() {
    let env = TestEnv::new("conv-store").await;
    let store = Store::new(env.engine.clone());
    let key = ConversationKey::new(Platform::Messenger, "PAGE1", "PSID1");
    let id = key.id();
    assert_eq!(id, "messenger:PAGE1:PSID1");
    assert!(store.summary(&id).await.unwrap().is_none());

    assert!(store.append(&key, &turn(Who::Customer, "do you ship to Lima?", Some("m_1"))).await.unwrap());
    assert!(
        !store.append(&key, &turn(Who::Customer, "do you ship to Lima?", Some("m_1"))).await.unwrap(),
        "a redelivered event is not recorded twice"
    );
    let mut reply = turn(Who::Agent, "We ship to most countries.", None);
    reply.intent = Some(Intent::Shipping);
    reply.kind = "reply".into();
    assert!(store.append(&key, &reply).await.unwrap());
    assert!(store.append(&key, &turn(Who::Customer, "great, thanks", Some("m_2"))).await.unwrap());

    let all = store.history(&id, 50).await.unwrap();
    let texts: Vec<&str> = all.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["do you ship to Lima?", "We ship to most countries.", "great, thanks"]);
    assert_eq!(all[1].intent, Some(Intent::Shipping));
    assert!(!all[1].as_turn().from_customer && all[0].as_turn().from_customer);
    let last: Vec<String> = store.history(&id, 2).await.unwrap().into_iter().map(|t| t.text).collect();
    assert_eq!(last, ["We ship to most countries.", "great, thanks"]);

    let s = store.summary(&id).await.unwrap().unwrap();
    assert_eq!((s.platform.as_str(), s.account.as_str(), s.customer.as_str()), ("messenger", "PAGE1", "PSID1"));
    assert_eq!((s.customer_turns, s.agent_turns, s.handed_off), (2, 1, false));
    store.set_handoff(&id, true).await.unwrap();
    assert!(store.summary(&id).await.unwrap().unwrap().handed_off);

    let mut con = env.engine.conn();
    let retention = env.config.conversation_retention.as_millis() as i64;
    for key in [env.engine.keys().conversation(&id), env.engine.keys().conversation_log(&id)] {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
        assert!(ttl > retention - 60_000 && ttl <= retention, "{key} expires with the retention ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_keeps_its_last_turns_and_only_their_marks() {
    let env = TestEnv::with("conv-cap", &redis_url(), |c| c.conversation_max_turns = 3).await;
    let store = Store::new(env.engine.clone());
    let key = ConversationKey::new(Platform::Messenger, "PAGE1", "PSID1");
    let id = key.id();
    for i in 1..=5 {
        let event = format!("m_{i}");
        assert!(store.append(&key, &turn(Who::Customer, &format!("message {i}"), Some(&event))).await.unwrap());
    }
    let texts: Vec<String> = store.history(&id, 50).await.unwrap().into_iter().map(|t| t.text).collect();
    assert_eq!(texts, ["message 3", "message 4", "message 5"], "the oldest turns went");
    assert!(!store.append(&key, &turn(Who::Customer, "message 5", Some("m_5"))).await.unwrap(), "kept: still once");

    let mut con = env.engine.conn();
    let fields: Vec<String> =
        redis::cmd("HKEYS").arg(env.engine.keys().conversation(&id)).query_async(&mut con).await.unwrap();
    let marks = fields.iter().filter(|f| f.starts_with("e:c")).count();
    assert_eq!(marks, 3, "the marks of the turns that went went with them: {fields:?}");
    let s = store.summary(&id).await.unwrap().unwrap();
    assert_eq!(s.customer_turns, 5, "the counts are of every turn");
    // A mark is of its side: an agent's turn under a customer's message id is its own turn.
    assert!(store.append(&key, &turn(Who::Agent, "an answer", Some("m_5"))).await.unwrap());
}

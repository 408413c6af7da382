//! A Redis Cluster changing under load: customers keep writing while the master holding some of
//! their conversations is killed (SIGKILL, as a machine dies) and its replica takes over, or
//! while the slot of a busy partition moves to another master. Nothing acknowledged is lost,
//! every message gets its one reply, in order, and the service follows the cluster without a
//! restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::config::Durability;
use switchyard::conversation::responder;
use switchyard::engine::Lane;

const SECRET: &str = "failover_app_secret";
const CUSTOMERS: usize = 12;
const MESSAGES: usize = 20;
const TEXTS: [&str; 4] = ["hello there", "how much does it cost?", "do you ship to Lima?", "purple elephants"];
/// The conversation whose partition the cluster changes under.
const WATCHED: &str = "messenger:PAGE1:PSID0";

fn text(i: usize) -> &'static str {
    TEXTS[i % TEXTS.len()]
}

/// One Messenger webhook: message `i` of customer `c`.
fn webhook(c: usize, i: usize) -> Vec<u8> {
    json!({"object": "page", "entry": [{"id": "PAGE1", "time": 1_700_000_000_000u64, "messaging": [
        {"sender": {"id": format!("PSID{c}")}, "recipient": {"id": "PAGE1"}, "timestamp": 1_700_000_000_000u64 + i as u64,
         "message": {"mid": format!("m_{c}_{i}"), "text": text(i)}}]}]})
    .to_string()
    .into_bytes()
}

/// A deployment on `cluster` (six partitions) answering through a local Send API, with two
/// workers.
async fn deployment(cluster: &RedisCluster, durability: Durability) -> (TestEnv, FakePlatform, Router, Vec<Worker>) {
    let platform = FakePlatform::default();
    let base = platform.start().await;
    let env = TestEnv::with("cluster-change", &cluster.url(), |c| {
        c.facebook_app_secret = Some(SECRET.into());
        c.graph_url = format!("{base}/v24.0");
        c.facebook_page_token = Some("PAGE_TOKEN".into());
        c.partitions = 6;
        c.durability = durability;
    })
    .await;
    let (router, _) = env.router();
    let workers = (0..2).map(|_| env.start_worker()).collect();
    (env, platform, router, workers)
}

/// The slot of the watched conversation's partition, and the index of the master holding it
/// (the cluster's masters share the slots in equal runs, in order).
fn watched_slot(env: &TestEnv, cluster: &RedisCluster) -> (u16, usize) {
    let key = env.engine.conversation_part(WATCHED).conversation(WATCHED);
    let slot = switchyard::redis::partition::slot(&key);
    (slot, slot as usize * cluster.masters.len() / 16384)
}

/// Customers writing one message after another; like Meta, a webhook not answered 2xx is sent
/// again (the same body) until it is.
struct Customers {
    acknowledged: Arc<AtomicUsize>,
    refusals: Arc<Mutex<BTreeMap<u16, usize>>>,
    writing: Vec<tokio::task::JoinHandle<()>>,
}

impl Customers {
    fn start(router: &Router) -> Customers {
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let refusals = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
        let writing = (0..CUSTOMERS)
            .map(|c| {
                let (router, acknowledged, refusals) = (router.clone(), acknowledged.clone(), refusals.clone());
                tokio::spawn(async move {
                    for i in 0..MESSAGES {
                        let body = webhook(c, i);
                        let sig = meta_sign(SECRET, &body);
                        let headers = [("content-type", "application/json"), ("x-hub-signature-256", sig.as_str())];
                        let deadline = Instant::now() + WAIT;
                        loop {
                            let r = http_with(&router, "POST", "/webhooks/facebook", &headers, body.clone()).await;
                            if r.status == StatusCode::OK {
                                break;
                            }
                            *refusals.lock().unwrap().entry(r.status.as_u16()).or_default() += 1;
                            if r.status != StatusCode::SERVICE_UNAVAILABLE {
                                eprintln!("webhook answered {}: {} (the server log above says why)", r.status, r.text);
                            }
                            assert!(Instant::now() < deadline, "message {i} of customer {c} never acknowledged: {r:?}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        Customers { acknowledged, refusals, writing }
    }

    async fn wait_for_a_quarter(&self) {
        wait_until("a quarter of the messages were acknowledged", async || {
            self.acknowledged.load(Ordering::Relaxed) >= CUSTOMERS * MESSAGES / 4
        })
        .await;
    }

    /// Wait until every message was acknowledged and answered, then check what the customers
    /// received: each message's one reply, in order; nothing dead-lettered; and while the
    /// cluster changed, a webhook was told "come back" (503), never a server error.
    async fn finish(self, env: &TestEnv, platform: &FakePlatform, router: &Router) {
        for c in self.writing {
            c.await.unwrap();
        }
        assert_eq!(self.acknowledged.load(Ordering::Relaxed), CUSTOMERS * MESSAGES);
        wait_until("every lane is idle", async || {
            let q = env.engine.queues_status().await.unwrap();
            Lane::ALL.iter().all(|l| q.queues[l.as_str()].depth == 0)
        })
        .await;

        let mut replies: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in platform.accepted() {
            let to = s.body["recipient"]["id"].as_str().unwrap_or_default().to_string();
            replies.entry(to).or_default().push(s.body["message"]["text"].as_str().unwrap_or_default().to_string());
        }
        let expected: Vec<String> = (0..MESSAGES).map(|i| responder::respond(&[], text(i)).text).collect();
        for c in 0..CUSTOMERS {
            let got = replies.get(&format!("PSID{c}")).cloned().unwrap_or_default();
            assert_eq!(got, expected, "the replies customer {c} received");
        }
        assert_eq!(env.engine.dlq_depth().await.unwrap(), 0);
        let refusals = self.refusals.lock().unwrap().clone();
        assert!(refusals.keys().all(|&s| s == 503), "answers other than 200: {refusals:?}");
        let conv = admin(router, "GET", &format!("/conversations/{WATCHED}?limit=100"), None).await;
        let turns: Vec<Value> = conv.json["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(turns.len(), 2 * MESSAGES, "{:?}", conv.json);
    }
}

/// Whether the node on `port` is a master now.
fn is_master(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else { return false };
    let Ok(mut con) = client.get_connection() else { return false };
    let info: String = redis::cmd("INFO").arg("replication").query(&mut con).unwrap_or_default();
    info.contains("role:master")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_under_steady_webhooks_loses_nothing_acknowledged_and_sends_no_reply_twice() {
    // A webhook answered 500 says only "see the server log": the log is kept with the test's
    // output, shown when it fails.
    let _ = tracing_subscriber::fmt().with_env_filter("switchyard=warn").with_ansi(false).with_test_writer().try_init();
    let mut cluster = RedisCluster::start(3, 1);
    let (env, platform, router, _workers) = deployment(&cluster, Durability::Replicated).await;
    let (_, victim) = watched_slot(&env, &cluster);
    let customers = Customers::start(&router);

    customers.wait_for_a_quarter().await;
    cluster.masters.remove(victim).kill();
    let heir = cluster.replicas[victim].port;
    wait_until("the replica took over", async || is_master(heir)).await;
    // The operator brings a replica back for it (`DURABILITY=replicated` needs one to confirm).
    let _new_replica = tokio::task::spawn_blocking(move || RedisCluster::add_replica(heir)).await.unwrap();

    customers.finish(&env, &platform, &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_partition_moved_to_another_master_mid_drain_loses_nothing_and_sends_no_reply_twice() {
    let cluster = RedisCluster::start(3, 0);
    let (env, platform, router, _workers) = deployment(&cluster, Durability::Local).await;
    let (slot, owner) = watched_slot(&env, &cluster);
    let (from, to) = (cluster.masters[owner].port, cluster.masters[(owner + 1) % 3].port);
    let customers = Customers::start(&router);

    customers.wait_for_a_quarter().await;
    // Its keys go a few at a time, so the slot stays half-moved for a while.
    tokio::task::spawn_blocking(move || RedisCluster::move_slot(slot, from, to, Duration::from_millis(20)))
        .await
        .unwrap();

    customers.finish(&env, &platform, &router).await;
    // The partition lives on the other master now.
    let key = env.engine.conversation_part(WATCHED).conversation(WATCHED);
    let mut con = redis::Client::open(cluster.masters[(owner + 1) % 3].url()).unwrap().get_connection().unwrap();
    let here: u64 = redis::cmd("EXISTS").arg(&key).query(&mut con).unwrap();
    assert_eq!(here, 1, "{key} is on the new master");
}

/// While a partition's slot moves, a worker that reads ordered tasks whose order key is not on
/// the old master (moved, or to be made afresh: an idle key's sequence is gone) hands them back
/// untouched (nothing numbered, nothing held), and reads them again once the slot has moved:
/// they run, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_tasks_read_while_their_order_key_moves_are_handed_back_and_run_in_order() {
    use switchyard::engine::{Outcome, Registry, TaskSpec, TaskState};
    let cluster = RedisCluster::start(2, 0);
    let runs: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut registry = Registry::new();
    let seen = runs.clone();
    registry.register("test.step", Lane::Conversations, move |ctx| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(ctx.payload["i"].as_u64().unwrap_or(0));
            Outcome::Done(Value::Null)
        }
    });
    let env = TestEnv::lazy("order-moving", &cluster.url(), |_| {}, registry);
    env.engine.ensure_groups().await.unwrap();
    let step = |i: u64| TaskSpec::new("test.step", json!({"i": i})).ordered_by("k");

    // A first task ran (its sequence went with it, idle), then two more wait, with no worker.
    let first = env.engine.enqueue(step(0)).await.unwrap();
    let w = env.start_worker();
    env.wait_state(&first, TaskState::Success).await;
    w.stop().await;
    let later = env.engine.enqueue_batch(vec![step(1), step(2)]).await.unwrap();

    // The slot starts moving (the order key, were it there, the first key to go).
    let slot = switchyard::redis::partition::slot(env.engine.keys().root());
    let owner = slot as usize * 2 / 16384;
    let (from, to) = (cluster.masters[owner].port, cluster.masters[1 - owner].port);
    let order_key = env.engine.keys().order("k");
    let moving = tokio::task::spawn_blocking(move || {
        let mut m = SlotMove::begin(slot, from, to);
        m.migrate(&[order_key]);
        m
    })
    .await
    .unwrap();

    // A worker reads the two tasks and hands them back: its consumer is in the group, holding
    // nothing, and neither task was numbered or started.
    let w = env.start_worker();
    let lane = env.lane_key(Lane::Conversations);
    let mut source =
        redis::Client::open(cluster.masters[owner].url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let name = w.name();
    wait_until("the worker read the lane on the old master", async || {
        let consumers: redis::Value =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&lane).arg("workers").query_async(&mut source).await.unwrap();
        format!("{consumers:?}").contains(&name)
    })
    .await;
    let (held, _, _, _): (u64, Option<String>, Option<String>, redis::Value) =
        redis::cmd("XPENDING").arg(&lane).arg("workers").query_async(&mut source).await.unwrap();
    assert_eq!(held, 0, "nothing held");
    let mut target = redis::Client::open(cluster.masters[1 - owner].url()).unwrap().get_connection().unwrap();
    // (ASKING: the new master answers for a key of a slot it is still importing.)
    let () = redis::cmd("ASKING").query(&mut target).unwrap();
    let numbered: u64 = redis::cmd("EXISTS").arg(env.engine.keys().order("k")).query(&mut target).unwrap();
    assert_eq!(numbered, 0, "no sequence was started for them");

    // The slot finishes moving: both run, in order.
    tokio::task::spawn_blocking(move || {
        let mut m = moving;
        m.migrate_rest(Duration::ZERO);
        m.finish();
    })
    .await
    .unwrap();
    for id in &later {
        env.wait_state(id, TaskState::Success).await;
    }
    assert_eq!(*runs.lock().unwrap(), [0, 1, 2]);
    drop(w);
}

//! Switchyard on a Redis Cluster: found by itself from one node or several, and the engine's
//! whole path (run, retry, dead-letter, redrive, cancel, status) through the cluster client on a
//! cluster of three masters. (`make test` also runs the whole suite on a one-master cluster.)

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState};
use switchyard::redis::Conn;

/// A running task is cancelled (in whatever partition it went to), and every lane ends empty.
async fn cancel_a_running_task_and_see_the_lanes_empty(env: &TestEnv) {
    let slow = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60_000}))).await.unwrap();
    env.wait_state(&slow, TaskState::Started).await;
    assert_eq!(env.engine.cancel(&slow).await.unwrap(), TaskState::Revoked);
    env.wait_state(&slow, TaskState::Revoked).await;
    wait_until("the lanes are empty", async || {
        let q = env.engine.queues_status().await.unwrap();
        q.queues.values().all(|l| l.depth == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_found_by_itself_from_one_node_or_several() {
    let cluster = RedisCluster::start(3, 0);
    let single = RedisProcess::start_on_free_port();
    let found = async |url: &str| Conn::lazy(url, switchyard::redis::Timeouts::default()).unwrap().is_cluster().await;
    assert!(found(&cluster.masters[2].url()).await.unwrap(), "one node of the cluster");
    assert!(found(&cluster.url()).await.unwrap(), "every master");
    assert!(!found(&single.url()).await.unwrap(), "a single server");
    // Several nodes that are not a cluster: refused, naming the node.
    let both = format!("{},{}", single.url(), cluster.masters[0].url());
    let e = found(&both).await.unwrap_err().to_string();
    assert!(e.contains("not in a cluster") && e.contains(&single.url()), "{e}");
    // A node that is down is passed over for the next one given.
    let down = format!("redis://127.0.0.1:{},{}", free_port(), cluster.masters[1].url());
    assert!(found(&down).await.unwrap(), "the second node answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_retry_die_and_come_back_on_a_cluster_of_three_masters() {
    let cluster = RedisCluster::start(3, 0);
    let env = TestEnv::with("cluster-path", &cluster.url(), |_| {}).await;
    let _worker = env.start_worker();

    let ok = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    let retried = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 1}))).await.unwrap();
    let dead = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 10})).max_attempts(2)).await.unwrap();
    env.wait_state(&ok, TaskState::Success).await;
    let s = env.wait_state(&retried, TaskState::Success).await;
    assert_eq!(s.attempts, 2, "{s:?}");
    let s = env.wait_state(&dead, TaskState::Failure).await;
    assert_eq!(s.attempts, 2, "{s:?}");
    let letter = env.engine.dlq_get(&dead).await.unwrap().expect("a dead letter");
    assert_eq!(letter.lane, Some(Lane::Analytics));
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 1);

    // Redriven, it runs again (and dies again: it fails ten times).
    let report = env
        .engine
        .dlq_redrive(std::slice::from_ref(&letter.id), &Default::default(), false, false, |_| {})
        .await
        .unwrap();
    assert_eq!(report.redriven, 1, "{report:?}");
    wait_until("the redriven task died a second time", async || {
        env.engine.task_status(&dead).await.unwrap().is_some_and(|s| s.attempts == 4 && s.status == TaskState::Failure)
    })
    .await;

    cancel_a_running_task_and_see_the_lanes_empty(&env).await;
    assert_eq!(env.lane_pending(Lane::Analytics).await, 0);
}

/// The slot function is Redis's own, and the partitions' tags spread evenly over the masters of
/// a real cluster (three masters, twelve partitions: four each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_tags_land_evenly_on_the_masters() {
    use switchyard::redis::partition::{slot, tags};
    let cluster = RedisCluster::start(3, 0);
    let client = redis::Client::open(cluster.masters[0].url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let tags12 = tags("sy", 12);
    let mut keys: Vec<String> = tags12.iter().map(|t| format!("{{{t}}}:lane:webhooks")).collect();
    keys.extend(["sy", "{sy}:workers", "foo{}{bar}", "foo{{bar}}zap", "a{b}c{d}", "{}", "ünïcode:é"].map(String::from));
    keys.extend((0..200).map(|i| format!("messenger:PAGE1:{i}")));
    for key in &keys {
        let theirs: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut con).await.unwrap();
        assert_eq!(slot(key), theirs, "{key}");
    }
    // Which master serves each slot, from the cluster itself.
    let ranges: Vec<(u16, u16, u16)> = {
        let v: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut con).await.unwrap();
        v.iter()
            .map(|r| {
                let redis::Value::Array(r) = r else { panic!("{r:?}") };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(n) => *n as u16,
                    other => panic!("{other:?}"),
                };
                let redis::Value::Array(master) = &r[2] else { panic!("{r:?}") };
                (int(&r[0]), int(&r[1]), int(&master[1]))
            })
            .collect()
    };
    let mut per_master = std::collections::BTreeMap::new();
    for tag in &tags12 {
        let s = slot(tag);
        let (_, _, port) = ranges.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&s)).expect("a master serves it");
        *per_master.entry(*port).or_insert(0) += 1;
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(per_master.values().all(|&n| n == 4), "{per_master:?}");
}

/// Twelve partitions on three masters: tasks spread over every master, each runs once; an order
/// key's tasks run in order in their partition; an idempotency key is one task wherever it is
/// sent from; retries, dead letters, redrive and cancel work in any partition; the figures a
/// user sees add up over the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_partitions_on_three_masters_run_every_task_once_and_in_order() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    use switchyard::engine::{Outcome, entry_of_task};

    let cluster = RedisCluster::start(3, 0);
    let runs: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut registry = switchyard::app::registry();
    let seen = runs.clone();
    registry.register("test.step", Lane::Conversations, move |ctx| {
        let seen = seen.clone();
        async move {
            let key = ctx.payload["key"].as_str().unwrap_or_default().to_string();
            seen.lock().unwrap().push((key, ctx.payload["i"].as_u64().unwrap_or(0)));
            Outcome::Done(serde_json::Value::Null)
        }
    });
    let env = TestEnv::lazy("cluster-parts", &cluster.url(), |c| c.partitions = 12, registry);
    env.engine.ensure_groups().await.unwrap();
    let _a = env.start_worker();
    let _b = env.start_worker_on(env.second_engine(), |_| {});

    // Unordered tasks, one enqueue call at a time: each call goes to the next partition.
    let mut plain = Vec::new();
    for _ in 0..48 {
        let batch = (0..5).map(|_| TaskSpec::new("diag.noop", json!({}))).collect();
        plain.extend(env.engine.enqueue_batch(batch).await.unwrap());
    }
    // Ordered tasks of twenty keys, interleaved, from both engines.
    let keys: Vec<String> = (0..20).map(|k| format!("messenger:PAGE:{k}")).collect();
    for i in 0..10u64 {
        let batch: Vec<TaskSpec> =
            keys.iter().map(|k| TaskSpec::new("test.step", json!({"key": k, "i": i})).ordered_by(k.clone())).collect();
        let engine = if i % 2 == 0 { env.engine.clone() } else { env.second_engine() };
        engine.enqueue_batch(batch).await.unwrap();
    }
    // One idempotency key, sent from both engines: one task.
    let once = TaskSpec::new("diag.noop", json!({"n": 1})).idempotency_key("import-7");
    let first = env.engine.enqueue(once.clone()).await.unwrap();
    assert_eq!(env.second_engine().enqueue(once).await.unwrap(), first);

    let parts: BTreeSet<usize> = plain.iter().map(|id| entry_of_task(id).unwrap().0).collect();
    assert_eq!(parts.len(), 12, "every partition took unordered work: {parts:?}");
    for id in plain.iter().chain([&first]) {
        env.wait_state(id, TaskState::Success).await;
    }
    wait_until("every ordered task ran", async || runs.lock().unwrap().len() == 200).await;
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, i) in runs.lock().unwrap().iter() {
        by_key.entry(k.clone()).or_default().push(*i);
    }
    assert_eq!(by_key.len(), 20);
    for (k, order) in &by_key {
        assert_eq!(order, &(0..10).collect::<Vec<_>>(), "{k} ran once each, in order");
    }
    // Every master holds keys of the deployment.
    for m in &cluster.masters {
        let client = redis::Client::open(m.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
        assert!(n > 0, "master {} holds nothing", m.port);
    }

    // A task that dies, in a partition other than the first: its letter names the partition.
    let dying: Vec<String> = (0..12)
        .map(|i| TaskSpec::new("diag.fail", json!({"times": 10, "i": i})).max_attempts(1))
        .map(|spec| {
            let engine = env.engine.clone();
            async move { engine.enqueue(spec).await.unwrap() }
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await;
    for id in &dying {
        env.wait_state(id, TaskState::Failure).await;
    }
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 12);
    assert_eq!(env.engine.queues_status().await.unwrap().dlq_depth, 12);
    let far = dying.iter().find(|id| entry_of_task(id).unwrap().0 != 0).expect("a task outside partition 0");
    let letter = env.engine.dlq_get(far).await.unwrap().expect("its dead letter");
    assert!(letter.id.contains('@'), "{}", letter.id);
    let s = env.engine.task_status(far).await.unwrap().unwrap();
    assert_eq!(s.dead_letter.as_deref(), Some(letter.id.as_str()));
    let listed = env.engine.dlq_list(&Default::default(), 100).await.unwrap();
    assert_eq!(listed.len(), 12);
    let again = env.engine.dlq_get(&letter.id).await.unwrap().expect("found by its id");
    assert_eq!(again.task_id, *far);
    let report = env.engine.dlq_redrive(&[], &Default::default(), true, false, |_| {}).await.unwrap();
    assert_eq!(report.redriven, 12, "{report:?}");
    wait_until("every redriven task died again", async || {
        let mut all = true;
        for id in &dying {
            let s = env.engine.task_status(id).await.unwrap().unwrap();
            all &= s.status == TaskState::Failure && s.attempts == 2;
        }
        all
    })
    .await;
    assert_eq!(env.engine.dlq_delete(&dying).await.unwrap(), 12);
    assert_eq!(env.engine.dlq_depth().await.unwrap(), 0);

    // The memory guard watches the master nearest its limit: here the only one with a limit.
    let limit = 1u64 << 40;
    let client = redis::Client::open(cluster.masters[2].url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit).query_async(&mut con).await.unwrap();
    wait_until("the guard reads that master's limit", async || {
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.engine.redis_memory().await.is_ok_and(|(used, max)| max == limit && used > 0)
    })
    .await;

    cancel_a_running_task_and_see_the_lanes_empty(&env).await;
}

/// The number of partitions is the deployment's for good: a process started with another one is
/// refused with one line saying what to do, and data from before partitions counts as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_number_of_partitions_than_the_data_is_refused() {
    let env = TestEnv::with("parts-fixed", &redis_url(), |c| c.partitions = 1).await;
    env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    let mut config = env.config.clone();
    config.partitions = 4;
    let other = switchyard::engine::Engine::new(config, &env.url, switchyard::app::registry()).unwrap();
    let e = other.ensure_groups().await.unwrap_err().to_string();
    assert!(e.contains("is in 1 partition(s) but PARTITIONS is 4") && e.contains("PARTITIONS=1"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    // The same number is taken, as before.
    env.second_engine().ensure_groups().await.unwrap();

    // A deployment whose data predates the recorded number: its lanes say one partition.
    let old = TestEnv::with("parts-old", &redis_url(), |_| {}).await;
    let mut con = old.engine.conn();
    let _: () = redis::cmd("DEL").arg(old.engine.keys().partitions()).query_async(&mut con).await.unwrap();
    let mut config = old.config.clone();
    config.partitions = 6;
    let bigger = switchyard::engine::Engine::new(config, &old.url, switchyard::app::registry()).unwrap();
    let e = bigger.ensure_groups().await.unwrap_err().to_string();
    assert!(e.contains("is in 1 partition(s) but PARTITIONS is 6"), "{e}");
}

/// `DURABILITY=replicated`: a webhook is answered 2xx only once a replica holds it, so the
/// master's failover cannot lose what was acknowledged; with no replica to confirm, the answer
/// is 503 with `Retry-After` (and the platform's retry is taken as a repeat). `local` answers as
/// soon as the master holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_durability_answers_once_a_replica_holds_the_event() {
    let master = RedisProcess::start_on_free_port();
    let replica = RedisProcess::start_replica_of(&master);
    let env = TestEnv::with("durable", &master.url(), |c| {
        c.durability = switchyard::config::Durability::Replicated;
        c.generic_secrets.insert("crm".into(), "s3cret".into());
    })
    .await;
    let (router, _) = env.router();
    let post = async |id: &str| {
        let body = json!({"id": id, "text": "order shipped"}).to_string();
        let sig = meta_sign("s3cret", body.as_bytes());
        let headers = [("content-type", "application/json"), ("x-signature-256", sig.as_str())];
        http_with(&router, "POST", "/webhooks/generic/crm", &headers, body.into_bytes()).await
    };
    let replica_len = async || {
        let client = redis::Client::open(replica.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let n: u64 = redis::cmd("XLEN").arg(env.lane_key(Lane::Webhooks)).query_async(&mut con).await.unwrap();
        n
    };
    for i in 0..20 {
        let r = post(&format!("e-{i}")).await;
        assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
        // At the moment of the 2xx, the replica already has it: nothing waited for.
        assert_eq!(replica_len().await, i + 1);
    }

    // No replica: not acknowledged, and the platform is told to come back.
    replica.stop();
    let r = post("e-late").await;
    let message = r.assert_error(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(message.contains("replica"), "{message}");
    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
    // The event may be on the master; the platform's retry is a repeat, never a second task.
    let again = RedisProcess::start_replica_of(&master);
    let r = post("e-late").await;
    assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.text);
    assert_eq!(env.lane_len(Lane::Webhooks).await, 21);
    drop(again);
}

/// `WORKER_PARTITIONS=balanced`: three workers deal six partitions out among them, two each and
/// every partition read by one; a task runs on the worker reading its partition; when one worker
/// stops, the other two take its partitions over and tasks queued there still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_workers_share_the_partitions_and_take_over_a_stopped_ones() {
    use std::collections::BTreeMap;
    let env = TestEnv::with("balanced", &redis_url(), |c| {
        c.partitions = 6;
        c.worker_partitions = switchyard::config::WorkerPartitions::Balanced;
    })
    .await;
    let mut workers: Vec<Worker> = (0..3).map(|_| env.start_worker()).collect();
    // Partition → the worker reading it, once every running worker beats with `each` of them.
    let readers = async |names: &[String], each: usize| {
        wait_for("every running worker has its share", async || {
            let beats = env.engine.workers().await.unwrap();
            let mut readers = BTreeMap::new();
            for b in beats.iter().filter(|b| names.contains(&b.name)) {
                if b.partitions.as_ref().is_none_or(|p| p.len() != each) {
                    return None;
                }
                for &p in b.partitions.iter().flatten() {
                    readers.insert(p, b.name.clone());
                }
            }
            (readers.len() == 6).then_some(readers)
        })
        .await
    };
    // Tasks of every partition run, each on the worker reading its partition.
    let run_tasks = async |readers: &BTreeMap<usize, String>| {
        // One call each: a call's tasks go to one partition, the next call's to the next.
        let mut ids = Vec::new();
        for _ in 0..30 {
            ids.push(env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap());
        }
        for id in &ids {
            let s = env.wait_state(id, TaskState::Success).await;
            let part = env.engine.part_of_task(id);
            assert_eq!(s.worker.as_ref(), Some(&readers[&part]), "task {id} of partition {part}");
        }
    };

    let names: Vec<String> = workers.iter().map(Worker::name).collect();
    let before = readers(&names, 2).await;
    run_tasks(&before).await;

    workers.pop().unwrap().stop().await;
    let names: Vec<String> = workers.iter().map(Worker::name).collect();
    let after = readers(&names, 3).await;
    run_tasks(&after).await;
}

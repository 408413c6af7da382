//! Switchyard on a Redis Cluster: found by itself from one node or several, and the engine's
//! whole path (run, retry, dead-letter, redrive, cancel, status) through the cluster client on a
//! cluster of three masters. (`make test` also runs the whole suite on a one-master cluster.)

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState};
use switchyard::redis::Conn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_found_by_itself_from_one_node_or_several() {
    let cluster = RedisCluster::start(3, 0);
    let single = RedisProcess::start_on_free_port();
    let found = async |url: &str| Conn::lazy(url, Duration::from_secs(5)).unwrap().is_cluster().await;
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

    // A queued task is cancelled before it runs; the lanes end empty.
    let slow = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60_000}))).await.unwrap();
    env.wait_state(&slow, TaskState::Started).await;
    assert_eq!(env.engine.cancel(&slow).await.unwrap(), TaskState::Revoked);
    env.wait_state(&slow, TaskState::Revoked).await;
    wait_until("the lanes are empty", async || {
        let q = env.engine.queues_status().await.unwrap();
        q.queues.values().all(|l| l.depth == 0)
    })
    .await;
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

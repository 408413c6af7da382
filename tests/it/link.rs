//! Redis behind a faulty link: the whole deployment (front door, ingestion, workers, replies)
//! reaches Redis through a proxy that, under a steady signed webhook load, adds latency, drops
//! every connection mid-pipeline and blackholes the link for ten seconds, then heals. A platform
//! client retries what was not accepted, as Meta does. What the platform and the customers see
//! is checked: every request answered in bounded time (accepted, or 503 with `Retry-After`),
//! every message answered once, none twice, and work resuming by itself once the link heals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::flow::{SECRET, messenger_body, platform_config};
use switchyard::engine::Lane;

/// Longer than any request may take with the test's Redis timeouts (a few round trips of one
/// second each), much shorter than the blackhole: a request stuck on the link would exceed it.
const ANSWER_WITHIN: Duration = Duration::from_secs(8);
/// Webhooks posted per second, each one new message from a customer of its own.
const RATE: u64 = 20;

/// One answer the front door gave: status, whether it said when to retry, how long it took.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: bool,
    took: Duration,
}

/// Post one customer's message until the front door accepts it, retrying as the platform would;
/// every answer (or its absence: status 0) is kept.
async fn deliver_message(
    client: reqwest::Client,
    addr: std::net::SocketAddr,
    psid: String,
    log: Arc<Mutex<Vec<(String, Answer)>>>,
) {
    let body = messenger_body("PAGE1", &psid, &[(&format!("m-{psid}"), "hello, is the shop open today?")]);
    let sig = meta_sign(SECRET, &body);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let r = client
            .post(format!("http://{addr}/webhooks/facebook"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", &sig)
            .body(body.clone())
            .send()
            .await;
        let answer = match r {
            Ok(r) => Answer {
                status: r.status().as_u16(),
                retry_after: r.headers().contains_key("retry-after"),
                took: t0.elapsed(),
            },
            Err(_) => Answer { status: 0, retry_after: false, took: t0.elapsed() },
        };
        let accepted = answer.status == 200;
        log.lock().unwrap().push((psid.clone(), answer));
        if accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_faulty_link_to_redis_loses_nothing_and_sends_nothing_twice() {
    let server = RedisProcess::start_on_free_port();
    let proxy = Proxy::start(server.port).await;
    let platform = FakePlatform::default();
    // Sends take a while, so some are under way whenever the link fails: their marks are then
    // written late, after another worker may have taken the task.
    platform.slow(Duration::from_millis(300));
    let base = platform.start().await;
    let env = TestEnv::with("faulty-link", &proxy.url(), |c| {
        platform_config(c, &base);
        c.redis_connect_timeout = Duration::from_millis(500);
        c.redis_response_timeout = Duration::from_secs(1);
    })
    .await;
    let direct = env.engine_via(&server.url());
    let addr = env.serve().await;
    let workers = [env.start_worker(), env.start_worker()];
    let client = switchyard::http_client::client().unwrap();

    let log: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let posting = {
        let (client, log) = (client.clone(), log.clone());
        tokio::spawn(async move {
            let mut customers = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            for n in 0.. {
                tick.tick().await;
                let psid = format!("PSID{n:05}");
                customers.push(tokio::spawn(deliver_message(client.clone(), addr, psid, log.clone())));
                if n + 1 == RATE * 24 {
                    break;
                }
            }
            for c in customers {
                c.await.unwrap();
            }
        })
    };
    // 24 s of load: 2 s clean, 4 s with 200 ms more per request, every connection dropped,
    // 2 s clean, 10 s blackholed, then healed for the rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.slow(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.heal();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.hold();
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.heal();
    posting.await.unwrap();

    let log = log.lock().unwrap().clone();
    let customers = (RATE * 24) as usize;
    let slow: Vec<_> = log.iter().filter(|(_, a)| a.took >= ANSWER_WITHIN || a.status == 0).collect();
    assert!(slow.is_empty(), "requests left without an answer in time: {slow:?}");
    let refused: Vec<_> = log.iter().filter(|(_, a)| a.status != 200).collect();
    assert!(
        refused.iter().all(|(_, a)| a.status == 503 && a.retry_after),
        "a request not accepted is answered 503 with Retry-After: {refused:?}"
    );
    assert!(!refused.is_empty(), "the blackhole refused nothing: the link was not in the way");
    let accepted: std::collections::HashSet<&String> =
        log.iter().filter(|(_, a)| a.status == 200).map(|(p, _)| p).collect();
    assert_eq!(accepted.len(), customers, "every message is accepted in the end");

    // Every customer gets one reply, none two; the pipeline drains by itself.
    let replies = async || {
        let mut per: HashMap<String, usize> = HashMap::new();
        for s in platform.accepted() {
            *per.entry(s.body["recipient"]["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        per
    };
    let deadline = Instant::now() + WAIT;
    while replies().await.len() < customers {
        if Instant::now() > deadline {
            let answered = replies().await;
            let missing: Vec<_> = accepted.iter().filter(|p| !answered.contains_key(p.as_str())).collect();
            let queues = direct.queues_status().await.map(|q| format!("{:?}", q.queues)).unwrap_or_default();
            panic!("customers without a reply after {WAIT:?}: {missing:?}; lanes: {queues}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("every lane is idle", async || {
        let q = direct.queues_status().await.unwrap();
        Lane::ALL.iter().all(|l| q.queues[l.as_str()].depth == 0)
    })
    .await;
    let twice: Vec<_> = replies().await.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "customers answered more than once: {twice:?}");
    assert_eq!(platform.accepted().len(), customers);

    drop(workers);
    server.stop();
}

//! Live task events over Server-Sent Events: a task's stream tells its status, each state and
//! progress report as workers of another process publish them, and ends when the task finishes;
//! `/events` tells every task's, filtered; a thousand listeners on one process each get theirs.

use crate::common::*;
use serde_json::{Value, json};
use switchyard::engine::{Lane, TaskSpec, TaskState};

/// The router served on a free port of loopback: its base URL.
async fn serve(env: &TestEnv) -> String {
    format!("http://{}", env.serve().await)
}

/// An HTTP client with no overall timeout (a stream lasts as long as its task).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One Server-Sent Events stream, read as it comes.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    async fn open(client: &reqwest::Client, url: &str) -> Feed {
        let response = client.get(url).bearer_auth(TOKEN).send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status(), 200, "{url}");
        let kind = response.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(kind, "text/event-stream", "{url}");
        Feed { response, buffer: String::new() }
    }

    /// The next event (name, data), comments skipped; `None` once the stream has ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap_or_else(|e| panic!("{data}: {e}"))));
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk()).await.expect("an event in time").unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Every event until the stream ends.
    async fn rest(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// (name, state or progress) of each event.
fn summary(events: &[(String, Value)]) -> Vec<(String, Value)> {
    events
        .iter()
        .map(|(n, d)| (n.clone(), if n == "progress" { d["progress"].clone() } else { d["state"].clone() }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_stream_tells_its_states_progress_and_result_then_ends() {
    let env = TestEnv::new("events-task").await;
    let base = serve(&env).await;
    let client = client();
    let id = env.engine.enqueue(TaskSpec::new("diag.progress", json!({"steps": 4, "ms": 50}))).await.unwrap();
    let mut feed = Feed::open(&client, &format!("{base}/tasks/{id}/events")).await;
    let (name, first) = feed.next().await.unwrap();
    assert_eq!(
        (name.as_str(), first["status"].as_str(), first["task_id"].as_str()),
        ("status", Some("PENDING"), Some(id.as_str()))
    );

    // The worker is another process's: its events come through Redis.
    let _w = env.start_worker_on(env.second_engine(), |_| {});
    let events = feed.rest().await;
    let expected = [
        ("state", json!("STARTED")),
        ("progress", json!(25)),
        ("progress", json!(50)),
        ("progress", json!(75)),
        ("progress", json!(100)),
        ("state", json!("SUCCESS")),
    ];
    assert_eq!(summary(&events), expected.map(|(n, v)| (n.to_string(), v)), "{events:#?}");
    let done = &events.last().unwrap().1;
    assert_eq!(done["result"], json!({"steps": 4}));
    assert_eq!((done["kind"].as_str(), done["lane"].as_str()), (Some("diag.progress"), Some("analytics")));
    assert_eq!(done["attempt"], 1);

    // Finished already: its status at once, then the end.
    let mut again = Feed::open(&client, &format!("{base}/tasks/{id}/events")).await;
    let events = again.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1["status"].as_str()), ("status", Some("SUCCESS")));
    assert_eq!(events[0].1["result"], json!({"steps": 4}));
    wait_until("the listeners have gone", async || env.engine.task_listeners() == 0).await;

    let r = client.get(format!("{base}/tasks/no-such-task/events")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.get(format!("{base}/tasks/{id}/events")).send().await.unwrap();
    assert_eq!(r.status(), 401, "events need the token like the rest of the API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_cancels_are_told_and_a_cancel_ends_the_stream() {
    let env = TestEnv::new("events-retry").await;
    let base = serve(&env).await;
    let client = client();
    let flaky = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"times": 1}))).await.unwrap();
    let mut feed = Feed::open(&client, &format!("{base}/tasks/{flaky}/events")).await;
    assert_eq!(feed.next().await.unwrap().1["status"], "PENDING");
    let _w = env.start_worker_on(env.second_engine(), |_| {});
    let events = feed.rest().await;
    let expected = ["STARTED", "RETRY", "STARTED", "SUCCESS"].map(|s| ("state".to_string(), json!(s)));
    assert_eq!(summary(&events), expected, "{events:#?}");
    let retry = events.iter().find(|(_, d)| d["state"] == "RETRY").unwrap();
    assert!(retry.1["error"].as_str().unwrap().contains("failing attempt 1"), "{retry:?}");
    assert!(retry.1["retry_at"].is_string());

    let long = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60_000}))).await.unwrap();
    env.wait_state(&long, TaskState::Started).await;
    let mut feed = Feed::open(&client, &format!("{base}/tasks/{long}/events")).await;
    assert_eq!(feed.next().await.unwrap().1["status"], "STARTED");
    env.engine.cancel(&long).await.unwrap();
    let events = feed.rest().await;
    assert_eq!(summary(&events), [("state".to_string(), json!("REVOKED"))], "{events:?}");
    assert_eq!(events[0].1["kind"], "diag.sleep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployments_stream_tells_every_tasks_events_filtered_by_kind_and_lane() {
    let env = TestEnv::new("events-all").await;
    let base = serve(&env).await;
    let client = client();
    let mut noops = Feed::open(&client, &format!("{base}/events?kind=diag.noop&lane=webhooks")).await;
    let mut everything = Feed::open(&client, &format!("{base}/events")).await;
    let _w = env.start_worker_on(env.second_engine(), |_| {});
    let other = env.engine.enqueue(TaskSpec::new("diag.noop", json!({}))).await.unwrap();
    env.wait_state(&other, TaskState::Success).await;
    let wanted = env.engine.enqueue(TaskSpec::new("diag.noop", json!({})).on_lane(Lane::Webhooks)).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (name, e) = noops.next().await.unwrap();
        assert_eq!(
            (name.as_str(), e["task_id"].as_str()),
            ("state", Some(wanted.as_str())),
            "only the kind and lane asked for"
        );
        seen.push(e["state"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["STARTED", "SUCCESS"]);
    let mut all = Vec::new();
    while all.len() < 4 {
        let (_, e) = everything.next().await.unwrap();
        all.push((e["task_id"].as_str().unwrap().to_string(), e["state"].as_str().unwrap().to_string()));
    }
    let expected = [(&other, "STARTED"), (&other, "SUCCESS"), (&wanted, "STARTED"), (&wanted, "SUCCESS")];
    assert_eq!(all, expected.map(|(id, s)| (id.clone(), s.to_string())));

    let r = client.get(format!("{base}/events?lane=email")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A thousand listeners on one process, each of its own task: each is told its task's start and
/// success, and goes when its stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_listeners_each_follow_their_task_to_its_end() {
    const LISTENERS: usize = 1000;
    // All of them come from one address, past the default cap of connections per client.
    let env = TestEnv::with("events-many", &redis_url(), |c| c.max_connections_per_client = 2 * LISTENERS).await;
    let base = serve(&env).await;
    let client = client();
    let specs = (0..LISTENERS).map(|i| TaskSpec::new("diag.noop", json!({"i": i}))).collect();
    let ids = env.engine.enqueue_batch(specs).await.unwrap();
    let mut feeds = Vec::new();
    for id in &ids {
        let (client, url) = (client.clone(), format!("{base}/tasks/{id}/events"));
        feeds.push(tokio::spawn(async move {
            let mut feed = Feed::open(&client, &url).await;
            let (_, first) = feed.next().await.unwrap();
            assert_eq!(first["status"], "PENDING");
            feed
        }));
    }
    let mut open = Vec::new();
    for f in feeds {
        open.push(f.await.unwrap());
    }
    assert_eq!(env.engine.task_listeners(), LISTENERS);

    let _w = env.start_worker_on(env.second_engine(), |_| {});
    let mut ends = Vec::new();
    for (mut feed, id) in open.into_iter().zip(ids.clone()) {
        ends.push(tokio::spawn(async move {
            let events = feed.rest().await;
            let states: Vec<&str> = events.iter().filter_map(|(_, e)| e["state"].as_str()).collect();
            assert_eq!(states, ["STARTED", "SUCCESS"], "{id}: {events:?}");
        }));
    }
    for e in ends {
        e.await.unwrap();
    }
    wait_until("every listener has gone", async || env.engine.task_listeners() == 0).await;
}

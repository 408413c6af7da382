//! The customer's side of the benchmarks: signed Messenger webhooks from the customers of ten
//! pages posted at a steady rate ([`Pacer`]), and a local stand-in for the Send API their replies go to, which counts each
//! conversation's replies and times them from the message they answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use serde_json::{Value, json};

use crate::ingest::verify::sha256_signature;

/// The app secret the webhooks are signed with.
pub(super) const SECRET: &str = "bench_secret";
/// Pages the conversations are spread over (each page has its own send rate limit).
const PAGES: u64 = 10;

/// Per conversation: when each message was sent, and how many replies came back.
pub(super) struct Track {
    pub(super) sent: Vec<Vec<Instant>>,
    /// Replies received, per conversation.
    pub(super) replied: Vec<u64>,
    /// Webhook → reply latencies (µs) recorded since it was last emptied.
    pub(super) latencies: hdrhistogram::Histogram<u64>,
}

pub(super) type Shared = Arc<Mutex<Track>>;

impl Track {
    pub(super) fn shared(conversations: u64) -> Shared {
        Arc::new(Mutex::new(Track {
            sent: vec![Vec::new(); conversations as usize],
            replied: vec![0; conversations as usize],
            latencies: latencies(),
        }))
    }
}

/// An empty histogram of latencies in µs, up to ten minutes.
pub(super) fn latencies() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

pub(super) fn lock(track: &Shared) -> std::sync::MutexGuard<'_, Track> {
    track.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serve the stand-in on a free loopback port: its address, and the server's task.
pub(super) async fn start(track: Shared) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let app = axum::Router::new().fallback(axum::routing::post(send_api)).with_state(track);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((addr, tokio::spawn(async move { axum::serve(listener, app).await })))
}

/// A reply to `psid` answers that conversation's oldest unanswered message.
async fn send_api(State(track): State<Shared>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    let now = Instant::now();
    let psid: usize = body["recipient"]["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    let mut t = lock(&track);
    if psid < t.sent.len() {
        let n = t.replied[psid] as usize;
        if let Some(sent) = t.sent[psid].get(n).copied() {
            let us = now.saturating_duration_since(sent).as_micros() as u64;
            let _ = t.latencies.record(us.max(1));
        }
        t.replied[psid] += 1;
    }
    axum::Json(json!({"recipient_id": psid.to_string(), "message_id": "m.bench"}))
}

/// The `i`th customer message, from conversation `psid`, as Meta would post it: the body and its
/// `X-Hub-Signature-256`. `tag` keeps message ids apart between benchmarks.
pub(super) fn message(i: u64, psid: u64, tag: &str) -> (String, String) {
    let page = format!("PAGE{}", psid % PAGES);
    let body = json!({"object": "page", "entry": [{"id": page, "time": 1_700_000_000_000u64, "messaging": [{
        "sender": {"id": psid.to_string()}, "recipient": {"id": page}, "timestamp": 1_700_000_000_000u64 + i,
        "message": {"mid": format!("m_{tag}_{i}"), "text": format!("hello, do you ship to Lima? #{i}")}}]}]})
    .to_string();
    let sig = sha256_signature(SECRET.as_bytes(), body.as_bytes());
    (body, sig)
}

/// What came of the webhooks one [`Pacer::run`] posted.
#[derive(Default)]
pub(super) struct Posted {
    pub(super) sent: AtomicU64,
    pub(super) accepted: AtomicU64,
    pub(super) failed: AtomicU64,
    /// POST → answer of the accepted ones (µs).
    latencies: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl Posted {
    /// How many were answered, accepted or not.
    pub(super) fn answered(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// The latency (ms) at quantile `q` of the accepted ones, and the longest.
    pub(super) fn latency_ms(&self, q: f64) -> (f64, f64) {
        let h = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        h.as_ref().map_or((0.0, 0.0), |h| (h.value_at_quantile(q) as f64 / 1e3, h.max() as f64 / 1e3))
    }

    /// Wait until every request sent was answered, for `within` at most.
    pub(super) async fn settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.answered() < self.sent.load(Ordering::Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The customers posting: signed Messenger webhooks at a steady rate, each on its own task (an
/// open loop, as platforms post, so a slow answer never slows the rate), over the client's
/// kept-alive connections. Messages are numbered on across runs.
pub(super) struct Pacer {
    client: reqwest::Client,
    endpoint: String,
    tag: &'static str,
    conversations: u64,
    /// When given, each message's send time is noted for its conversation (reply latencies).
    track: Option<Shared>,
    next: u64,
}

impl Pacer {
    pub(super) fn new(
        addr: SocketAddr,
        tag: &'static str,
        conversations: u64,
        track: Option<Shared>,
    ) -> anyhow::Result<Pacer> {
        Ok(Pacer {
            client: crate::http_client::client()?,
            endpoint: format!("http://{addr}/webhooks/facebook"),
            tag,
            conversations: conversations.max(1),
            track,
            next: 0,
        })
    }

    /// Post `total` messages at `rate` a second. `between` runs after each millisecond's
    /// messages with how many went out so far; messages that fall due while it runs go out at
    /// once after it.
    pub(super) async fn run(
        &mut self,
        rate: u64,
        total: u64,
        mut between: impl AsyncFnMut(u64, &Posted),
    ) -> Arc<Posted> {
        let posted = Arc::new(Posted::default());
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            interval.tick().await;
            let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
            while sent < due {
                let i = self.next;
                self.next += 1;
                sent += 1;
                let psid = i % self.conversations;
                let (body, sig) = message(i, psid, self.tag);
                let req = self
                    .client
                    .post(&self.endpoint)
                    .header("x-hub-signature-256", sig)
                    .header("content-type", "application/json")
                    .body(body);
                // Noted in order per conversation: messages of one conversation are posted a
                // tick or more apart, so they arrive in this order.
                if let Some(track) = &self.track {
                    lock(track).sent[psid as usize].push(Instant::now());
                }
                posted.sent.fetch_add(1, Ordering::Relaxed);
                let posted = posted.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    if matches!(req.send().await, Ok(r) if r.status().is_success()) {
                        let us = (start.elapsed().as_micros() as u64).max(1);
                        let mut h = posted.latencies.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = h.get_or_insert_with(latencies).record(us);
                        drop(h);
                        posted.accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        posted.failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            between(sent, &posted).await;
        }
        posted
    }
}

//! The customer's side of the reply benchmarks: signed Messenger webhooks from the customers of
//! ten pages, and a local stand-in for the Send API their replies go to, which counts each
//! conversation's replies and times them from the message they answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

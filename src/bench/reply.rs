//! `switchyard bench reply`: the whole path a customer waits on. Signed Messenger webhooks go in
//! over HTTP at a steady rate; workers answer them with the built-in responder and send each reply
//! to a local stand-in for the Send API; the latency is from just before the webhook's POST to the
//! moment the reply reaches that server. Everything runs in this process, on this machine's Redis.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::worker::{self, WorkerOptions};
use crate::engine::{Engine, Lane};
use crate::ingest::verify::sha256_signature;

const SECRET: &str = "bench_secret";
/// Pages the conversations are spread over (each page has its own send rate limit).
const PAGES: u64 = 10;

#[derive(Debug, Serialize)]
pub struct ReplyReport {
    pub messages: u64,
    pub rate: u64,
    pub seconds: u64,
    pub conversations: u64,
    /// Replies the Send API server received; equal to `messages` when nothing was lost.
    pub replies: u64,
    pub webhook_errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rss_mb: f64,
}

/// Per conversation: when each message was sent, and how many replies came back.
struct Track {
    sent: Vec<Vec<Instant>>,
    /// Replies received, per conversation.
    replied: Vec<u64>,
    latencies: hdrhistogram::Histogram<u64>,
}

type Shared = Arc<Mutex<Track>>;

/// The Send API stand-in: a reply to `psid` answers that conversation's oldest unanswered message.
async fn send_api(State(track): State<Shared>, axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
    let now = Instant::now();
    let psid: usize = body["recipient"]["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    let mut t = track.lock().unwrap_or_else(|e| e.into_inner());
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

pub async fn reply(mut config: Config, rate: u64, seconds: u64, conversations: u64) -> anyhow::Result<ReplyReport> {
    let conversations = conversations.max(1);
    let track: Shared = Arc::new(Mutex::new(Track {
        sent: vec![Vec::new(); conversations as usize],
        replied: vec![0; conversations as usize],
        latencies: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)?,
    }));
    let app = axum::Router::new().fallback(axum::routing::post(send_api)).with_state(track.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let graph = listener.local_addr()?;
    let graph_server = tokio::spawn(async move { axum::serve(listener, app).await });

    config.key_prefix = format!("{}-bench-reply-{}", config.key_prefix, std::process::id());
    config.facebook_app_secret = Some(SECRET.into());
    config.facebook_page_token = Some("BENCH_TOKEN".into());
    config.graph_url = format!("http://{graph}/v24.0");
    config.llm_url = None;
    config.lane_depth_limit = 0;
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, crate::app::registry())?;
    engine.ensure_groups().await?;
    let stop_workers = tokio_util::sync::CancellationToken::new();
    let workers = worker::start(
        engine.clone(),
        WorkerOptions::from_config(engine.config(), Lane::ALL.to_vec()),
        stop_workers.clone(),
    );
    let (addr, stop_api, api) = super::serve_api(&engine).await?;

    let client = crate::http_client::client()?;
    let endpoint = format!("http://{addr}/webhooks/facebook");
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = rate * seconds;
    let ticks_per_s = 1000u64;
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / ticks_per_s));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        interval.tick().await;
        // Messages due by now at the target rate.
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let i = sent;
            sent += 1;
            let psid = i % conversations;
            let page = format!("PAGE{}", psid % PAGES);
            let body = json!({"object": "page", "entry": [{"id": page, "time": 1_700_000_000_000u64, "messaging": [{
                "sender": {"id": psid.to_string()}, "recipient": {"id": page}, "timestamp": 1_700_000_000_000u64 + i,
                "message": {"mid": format!("m_bench_{i}"), "text": format!("hello, do you ship to Lima? #{i}")}}]}]})
            .to_string();
            let sig = sha256_signature(SECRET.as_bytes(), body.as_bytes());
            let req = client
                .post(&endpoint)
                .header("x-hub-signature-256", sig)
                .header("content-type", "application/json")
                .body(body);
            // The send time is taken in order per conversation: messages of one conversation
            // are sent one tick or more apart, so their POSTs arrive in this order.
            track.lock().unwrap_or_else(|e| e.into_inner()).sent[psid as usize].push(Instant::now());
            let errors = errors.clone();
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    }
    // Wait for the last replies (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: u64 = track.lock().unwrap_or_else(|e| e.into_inner()).replied.iter().sum();
        if got >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_api.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    stop_workers.cancel();
    workers.wait().await;
    graph_server.abort();
    super::cleanup(&engine).await;

    let t = track.lock().unwrap_or_else(|e| e.into_inner());
    let replies: u64 = t.replied.iter().sum();
    let ms = |q: f64| t.latencies.value_at_quantile(q) as f64 / 1e3;
    Ok(ReplyReport {
        messages: total,
        rate,
        seconds,
        conversations,
        replies,
        webhook_errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: t.latencies.max() as f64 / 1e3,
        rss_mb: super::rss_mb(),
    })
}

//! `switchyard bench reply`: the whole path a customer waits on. Signed Messenger webhooks go in
//! over HTTP at a steady rate; workers answer them with the built-in responder and send each reply
//! to a local stand-in for the Send API; the latency is from just before the webhook's POST to the
//! moment the reply reaches that server. Everything runs in this process, on this machine's Redis.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::send_api::{self, SECRET, Track, lock};
use crate::config::Config;
use crate::engine::worker::{self, WorkerOptions};
use crate::engine::{Engine, Lane};

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

pub async fn reply(mut config: Config, rate: u64, seconds: u64, conversations: u64) -> anyhow::Result<ReplyReport> {
    let conversations = conversations.max(1);
    let track = Track::shared(conversations);
    let (graph, graph_server) = send_api::start(track.clone()).await?;

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

    let mut pacer = send_api::Pacer::new(addr, "bench", conversations, Some(track.clone()))?;
    let total = rate * seconds;
    let posted = pacer.run(rate, total, async |_, _| {}).await;
    // Wait for the last replies (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: u64 = lock(&track).replied.iter().sum();
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

    let t = lock(&track);
    let replies: u64 = t.replied.iter().sum();
    let ms = |q: f64| t.latencies.value_at_quantile(q) as f64 / 1e3;
    Ok(ReplyReport {
        messages: total,
        rate,
        seconds,
        conversations,
        replies,
        webhook_errors: posted.failed.load(std::sync::atomic::Ordering::Relaxed),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: t.latencies.max() as f64 / 1e3,
        rss_mb: super::rss_mb(),
    })
}

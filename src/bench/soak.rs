//! `switchyard bench soak`: a `switchyard serve` child (API, workers and scheduler) taking
//! signed Messenger webhooks at a steady rate for minutes on end, its replies going to a local
//! stand-in for the Send API in this process. Every minute a JSON line: the child's resident
//! memory, Redis's memory, the minute's webhook → reply latencies, the backlog; at the end a
//! summary that says whether every message was answered exactly once.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::child::Server;
use super::send_api::{self, SECRET, Shared, Track, lock};
use crate::config::Config;
use crate::engine::{Engine, Registry};

#[derive(Debug, Serialize)]
pub(super) struct SoakMinute {
    minute: u64,
    sent: u64,
    replied: u64,
    webhook_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Entries queued or running at the minute's end, all lanes together and by lane.
    backlog: u64,
    backlog_by_lane: std::collections::BTreeMap<&'static str, u64>,
    server_rss_mb: f64,
    redis_used_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub rate: u64,
    pub minutes: u64,
    pub conversations: u64,
    pub sent: u64,
    pub replied: u64,
    pub webhook_errors: u64,
    /// Conversations that got more replies than messages, and fewer.
    pub answered_twice: u64,
    pub unanswered: u64,
    pub p99_ms_first_minute: f64,
    pub p99_ms_last_minute: f64,
    pub server_rss_mb_first_minute: f64,
    pub server_rss_mb_last_minute: f64,
    pub backlog_at_end: u64,
}

pub async fn soak(config: Config, rate: u64, minutes: u64, conversations: u64) -> anyhow::Result<SoakReport> {
    let conversations = conversations.max(1);
    let track = Track::shared(conversations);
    let (graph, graph_server) = send_api::start(track.clone()).await?;

    let env = [
        ("SWITCHYARD_FACEBOOK_APP_SECRET", SECRET.to_string()),
        ("SWITCHYARD_FACEBOOK_PAGE_TOKEN", "BENCH_TOKEN".to_string()),
        ("SWITCHYARD_GRAPH_URL", format!("http://{graph}/v24.0")),
    ];
    let server = Server::start(&config, "soak", "api,worker,scheduler", &env).await?;
    let engine = Engine::new(
        Config { key_prefix: server.prefix.clone(), ..config.clone() },
        config.redis_url_or_default(),
        Registry::new(),
    )?;

    let mut pacer = send_api::Pacer::new(server.addr, "soak", conversations, Some(track.clone()))?;
    let total = rate * minutes * 60;
    let t0 = Instant::now();
    let mut lines = Vec::new();
    let mut replied_before = 0u64;
    let mut errors_before = 0u64;
    let mut next_minute = 1u64;
    let posted = pacer
        .run(rate, total, async |sent, posted| {
            if t0.elapsed() >= Duration::from_secs(60 * next_minute) {
                let line = minute(
                    &engine,
                    &server,
                    &track,
                    next_minute,
                    sent,
                    &mut replied_before,
                    posted,
                    &mut errors_before,
                )
                .await;
                print_line(&line);
                lines.push(line);
                next_minute += 1;
            }
        })
        .await;
    let sent = posted.sent.load(std::sync::atomic::Ordering::Relaxed);
    // The last replies (bounded), then the last minute's line.
    let deadline = Instant::now() + Duration::from_secs(60);
    while replied(&track) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if lines.len() < minutes as usize {
        let line =
            minute(&engine, &server, &track, next_minute, sent, &mut replied_before, &posted, &mut errors_before).await;
        print_line(&line);
        lines.push(line);
    }
    let backlog_at_end = backlog(&engine).await;
    drop(server);
    graph_server.abort();
    super::cleanup(&engine).await;

    let t = lock(&track);
    let answered_twice = t.sent.iter().zip(&t.replied).filter(|(s, r)| **r > s.len() as u64).count() as u64;
    let unanswered = t.sent.iter().zip(&t.replied).filter(|(s, r)| **r < s.len() as u64).count() as u64;
    let first = lines.first();
    let last = lines.last();
    Ok(SoakReport {
        rate,
        minutes,
        conversations,
        sent,
        replied: t.replied.iter().sum(),
        webhook_errors: posted.failed.load(std::sync::atomic::Ordering::Relaxed),
        answered_twice,
        unanswered,
        p99_ms_first_minute: first.map_or(0.0, |l| l.p99_ms),
        p99_ms_last_minute: last.map_or(0.0, |l| l.p99_ms),
        server_rss_mb_first_minute: first.map_or(0.0, |l| l.server_rss_mb),
        server_rss_mb_last_minute: last.map_or(0.0, |l| l.server_rss_mb),
        backlog_at_end,
    })
}

fn replied(track: &Shared) -> u64 {
    lock(track).replied.iter().sum()
}

#[allow(clippy::too_many_arguments)]
async fn minute(
    engine: &Engine,
    server: &Server,
    track: &Shared,
    n: u64,
    sent: u64,
    replied_before: &mut u64,
    posted: &send_api::Posted,
    errors_before: &mut u64,
) -> SoakMinute {
    let (replied, hist) = {
        let mut t = lock(track);
        (t.replied.iter().sum::<u64>(), std::mem::replace(&mut t.latencies, send_api::latencies()))
    };
    let errors_now = posted.failed.load(std::sync::atomic::Ordering::Relaxed);
    let by_lane = backlog_by_lane(engine).await;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let line = SoakMinute {
        minute: n,
        sent,
        replied: replied - *replied_before,
        webhook_errors: errors_now - *errors_before,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1e3,
        backlog: by_lane.values().sum(),
        backlog_by_lane: by_lane,
        server_rss_mb: server.rss_mb(),
        redis_used_mb: redis_used_mb(engine).await,
    };
    *replied_before = replied;
    *errors_before = errors_now;
    line
}

async fn backlog(engine: &Engine) -> u64 {
    backlog_by_lane(engine).await.values().sum()
}

async fn backlog_by_lane(engine: &Engine) -> std::collections::BTreeMap<&'static str, u64> {
    match engine.queues_status().await {
        Ok(q) => q.queues.into_iter().map(|(lane, l)| (lane, l.depth)).collect(),
        Err(_) => [("unknown", u64::MAX)].into_iter().collect(),
    }
}

async fn redis_used_mb(engine: &Engine) -> f64 {
    let Ok(infos) = engine.conn().query_masters(redis::cmd("INFO").arg("memory")).await else { return 0.0 };
    infos
        .iter()
        .filter_map(|(_, info)| info.lines().find_map(|l| l.strip_prefix("used_memory:"))?.trim().parse::<f64>().ok())
        .sum::<f64>()
        / (1024.0 * 1024.0)
}

fn print_line(line: &SoakMinute) {
    if let Ok(text) = serde_json::to_string(line) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

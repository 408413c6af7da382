//! `switchyard bench memory`: what Redis holds per answered message and per finished task, by key
//! family, right after the work is done (every retention window still open).
//!
//! Two runs, each under a key prefix of its own: signed Messenger webhooks over HTTP, spread over
//! conversations, answered by the built-in responder and sent to a local stand-in for the Send
//! API, with the conversation analytics they trigger; then `diag.noop` tasks, enqueued and
//! drained. Each run waits until every lane is idle, then reads every key of its prefix
//! (`MEMORY USAGE`, `PTTL`) and the server's `used_memory` before and after. `MEMORY USAGE` leaves
//! out the server's own bookkeeping of a key (its entries in the key and expiry tables), so the
//! `used_memory` difference is the figure to quote; the families show where it goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::engine::worker::{self, WorkerOptions};
use crate::engine::{Engine, Lane, TaskSpec};
use crate::ingest::verify::sha256_signature;

const SECRET: &str = "bench_secret";
/// Webhooks in flight at once.
const IN_FLIGHT: usize = 32;
/// The longest wait for the work to settle (analytics runs once a conversation is quiet).
const SETTLE: Duration = Duration::from_secs(180);
/// The family of the history of finished tasks.
const HISTORY: &str = "history";

/// The bytes a run's keys hold in the history of finished tasks.
fn history_bytes(families: &BTreeMap<String, Family>) -> u64 {
    families.get(HISTORY).map_or(0, |f| f.bytes)
}

/// One key family's share.
#[derive(Debug, Default, Serialize)]
pub struct Family {
    pub keys: u64,
    /// Sum of `MEMORY USAGE`.
    pub bytes: u64,
    /// `bytes` divided by the messages (or tasks) of the run.
    pub bytes_per_item: f64,
    /// Keys with no expiry (streams are bounded by trimming instead).
    pub without_expiry: u64,
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub messages: u64,
    pub conversations: u64,
    pub replies: u64,
    /// `used_memory` after less before, per answered message: the figure to quote.
    pub bytes_per_message: f64,
    /// Sum of `MEMORY USAGE` over the run's keys, per message.
    pub usage_per_message: f64,
    pub families: BTreeMap<String, Family>,
    pub noop_tasks: u64,
    /// `used_memory` after less before, per finished `diag.noop` task.
    pub bytes_per_noop_task: f64,
    pub noop_families: BTreeMap<String, Family>,
    pub settle_s: f64,
    /// The history of finished tasks (`history`), a fixed cost and not a per-item one: it holds
    /// the latest `TASK_HISTORY` whatever the rate, so both figures above leave it out. Read
    /// from the no-op run (its tasks fill it when there are at least `TASK_HISTORY` of them).
    pub history_tasks: u64,
    pub history_bytes: u64,
    pub bytes_per_history_task: f64,
    /// `MEMORY STATS` after less before, per answered message, for the parts that moved by more
    /// than a byte per message: where the `used_memory` difference that no key holds went.
    pub server_per_message: BTreeMap<String, f64>,
}

/// The family of a key below the root: its first part, with the kinds of conversation, order and
/// idempotency keys told apart.
pub(super) fn family(key: &str) -> String {
    let first = key.split(':').next().unwrap_or("");
    match first {
        "conv" => {
            for tail in [":log", ":analytics:queued", ":analytics"] {
                if key.ends_with(tail) {
                    return format!("conv{tail}");
                }
            }
            "conv".into()
        }
        "order" if key.ends_with(":parked") => "order:parked".into(),
        "idem" => match key.split(':').nth(1) {
            Some(kind @ ("webhook" | "reply" | "schedule")) => format!("idem:{kind}"),
            _ => "idem".into(),
        },
        _ => first.to_string(),
    }
}

/// `MEMORY STATS` as name → bytes (a database's figures as `db.N.<name>`); figures that are not
/// whole numbers (ratios, percentages) are left out.
async fn memory_stats(engine: &Engine) -> anyhow::Result<BTreeMap<String, i64>> {
    fn walk(prefix: &str, v: &redis::Value, out: &mut BTreeMap<String, i64>) {
        let redis::Value::Array(items) = v else { return };
        for pair in items.chunks(2) {
            let [name, value] = pair else { continue };
            let Ok(name) = redis::from_redis_value::<String>(name.clone()) else { continue };
            match value {
                redis::Value::Int(n) => {
                    out.insert(format!("{prefix}{name}"), *n);
                }
                redis::Value::Array(_) => walk(&format!("{prefix}{name}."), value, out),
                _ => {}
            }
        }
    }
    let mut con = engine.conn();
    let stats: redis::Value = redis::cmd("MEMORY").arg("STATS").query_async(&mut con).await?;
    let mut out = BTreeMap::new();
    walk("", &stats, &mut out);
    Ok(out)
}

/// What moved between two `MEMORY STATS`, per item, where it moved by more than a byte an item.
fn stats_moved(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>, items: u64) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(name, _)| !name.starts_with("peak.") && name.as_str() != "keys.count")
        .filter_map(|(name, a)| {
            let per = (a - before.get(name).copied().unwrap_or(0)) as f64 / items.max(1) as f64;
            (per.abs() >= 1.0).then(|| (name.clone(), (per * 10.0).round() / 10.0))
        })
        .collect()
}

async fn used_memory(engine: &Engine) -> anyhow::Result<u64> {
    let mut con = engine.conn();
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Every key of the engine's prefix, by family.
pub(super) async fn families(engine: &Engine, items: u64) -> anyhow::Result<BTreeMap<String, Family>> {
    let mut con = engine.conn();
    let root = engine.keys().root().to_string();
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut scan = crate::redis::Scan::prefixed(&root);
    while let Some(keys) = scan.next(&con).await? {
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0).cmd("PTTL").arg(k).cmd("TYPE").arg(k);
            }
            let answers: Vec<redis::Value> = pipe.query_async(&mut con).await?;
            for (k, a) in keys.iter().zip(answers.chunks(3)) {
                let bytes: Option<u64> = redis::from_redis_value(a[0].clone()).ok();
                let ttl: i64 = redis::from_redis_value(a[1].clone()).unwrap_or(-2);
                let kind: String = redis::from_redis_value(a[2].clone()).unwrap_or_default();
                let Some(bytes) = bytes else { continue };
                let f = out.entry(family(&k[root.len()..])).or_default();
                f.keys += 1;
                f.bytes += bytes;
                if ttl == -1 && kind != "stream" {
                    f.without_expiry += 1;
                }
            }
        }
    }
    for f in out.values_mut() {
        f.bytes_per_item = f.bytes as f64 / items.max(1) as f64;
    }
    Ok(out)
}

/// Wait until no lane has work queued, running or waiting to run again, twice in a row a second
/// apart; `false` when it did not happen within [`SETTLE`].
async fn settle(engine: &Engine) -> anyhow::Result<bool> {
    let deadline = Instant::now() + SETTLE;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let q = engine.queues_status().await?;
        let busy = q.queues.values().any(|l| l.active + l.pending + l.retrying + l.lag > 0);
        quiet = if busy { 0 } else { quiet + 1 };
        if quiet >= 2 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(false)
}

pub async fn memory(
    config: Config,
    messages: u64,
    conversations: u64,
    noop_tasks: u64,
) -> anyhow::Result<MemoryReport> {
    let conversations = conversations.max(1);
    let t0 = Instant::now();
    let (replies, bytes_per_message, families_m, server_per_message) =
        conversation_run(config.clone(), messages, conversations).await?;
    let settle_s = t0.elapsed().as_secs_f64();
    let (bytes_per_noop_task, noop_families, history_tasks) = noop_run(config, noop_tasks).await?;
    let usage: u64 = families_m.iter().filter(|(f, _)| *f != HISTORY).map(|(_, f)| f.bytes).sum();
    let history_bytes = history_bytes(&noop_families);
    Ok(MemoryReport {
        messages,
        conversations,
        replies,
        bytes_per_message,
        usage_per_message: usage as f64 / messages.max(1) as f64,
        families: families_m,
        noop_tasks,
        bytes_per_noop_task,
        noop_families,
        settle_s,
        history_tasks,
        history_bytes,
        bytes_per_history_task: history_bytes as f64 / history_tasks.max(1) as f64,
        server_per_message,
    })
}

async fn conversation_run(
    mut config: Config,
    messages: u64,
    conversations: u64,
) -> anyhow::Result<(u64, f64, BTreeMap<String, Family>, BTreeMap<String, f64>)> {
    let replies = Arc::new(AtomicU64::new(0));
    let counter = replies.clone();
    let app = axum::Router::new().fallback(axum::routing::post(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            axum::Json(json!({"recipient_id": "1", "message_id": "m.bench"}))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let graph = listener.local_addr()?;
    let graph_server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A short prefix of its own: every key carries it, and the default (`sy`) is short too.
    config.key_prefix = format!("bm{}", std::process::id() % 100_000);
    config.facebook_app_secret = Some(SECRET.into());
    config.facebook_page_token = Some("BENCH_TOKEN".into());
    config.graph_url = format!("http://{graph}/v24.0");
    config.llm_url = None;
    config.lane_depth_limit = 0;
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, crate::app::registry())?;
    super::cleanup(&engine).await;
    // Loaded before the first reading: the script cache is one fixed cost per Redis, not a
    // per-message one, and a first run on a new Redis would count it otherwise.
    engine.scripts().load_all(&mut engine.conn()).await?;
    let before = used_memory(&engine).await?;
    let stats_before = memory_stats(&engine).await?;
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

    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (sent, client, endpoint) = (sent.clone(), client.clone(), endpoint.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = sent.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = message_body(i, conversations);
                let sig = sha256_signature(SECRET.as_bytes(), body.as_bytes());
                let r = client
                    .post(&endpoint)
                    .header("x-hub-signature-256", sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "webhook {i} answered {}", r.status());
            }
        }));
    }
    for s in senders {
        s.await??;
    }
    let settled = settle(&engine).await?;
    stop_api.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    stop_workers.cancel();
    workers.wait().await;
    graph_server.abort();
    let after = used_memory(&engine).await?;
    let moved = stats_moved(&stats_before, &memory_stats(&engine).await?, messages);
    let fams = families(&engine, messages).await?;
    super::cleanup(&engine).await;
    anyhow::ensure!(settled, "the work did not settle within {SETTLE:?}");
    let per = after.saturating_sub(before).saturating_sub(history_bytes(&fams)) as f64 / messages.max(1) as f64;
    Ok((replies.load(Ordering::Relaxed), per, fams, moved))
}

/// Message `i`, from customer `i mod conversations` of one of ten pages, with a text of the
/// length customers write (a question of about forty characters).
fn message_body(i: u64, conversations: u64) -> String {
    let psid = i % conversations;
    let page = format!("PAGE{}", psid % 10);
    json!({"object": "page", "entry": [{"id": page, "time": 1_700_000_000_000u64, "messaging": [{
        "sender": {"id": format!("{}", 1_000_000_000_000_000u64 + psid)}, "recipient": {"id": page},
        "timestamp": 1_700_000_000_000u64 + i,
        "message": {"mid": format!("m_{:040}", i), "text": format!("hello, do you ship to Lima? #{i}")}}]}]})
    .to_string()
}

/// Bytes per finished no-op task (the history left out), the families, and the history's length.
async fn noop_run(mut config: Config, tasks: u64) -> anyhow::Result<(f64, BTreeMap<String, Family>, u64)> {
    config.key_prefix = format!("bn{}", std::process::id() % 100_000);
    config.lane_depth_limit = 0;
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, crate::engine::Registry::new())?;
    super::cleanup(&engine).await;
    engine.scripts().load_all(&mut engine.conn()).await?;
    let before = used_memory(&engine).await?;
    engine.ensure_groups().await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let handle =
        worker::start(engine.clone(), WorkerOptions::from_config(engine.config(), Lane::ALL.to_vec()), stop.clone());
    let mut left = tasks;
    while left > 0 {
        let n = left.min(1000);
        let specs = (0..n).map(|_| TaskSpec::new("diag.noop", Value::Null).on_lane(Lane::Analytics)).collect();
        engine.enqueue_batch(specs).await?;
        left -= n;
    }
    let settled = settle(&engine).await?;
    stop.cancel();
    handle.wait().await;
    let after = used_memory(&engine).await?;
    let fams = families(&engine, tasks).await?;
    let entries = engine.history_len().await?;
    super::cleanup(&engine).await;
    anyhow::ensure!(settled, "the tasks did not settle within {SETTLE:?}");
    let held = after.saturating_sub(before).saturating_sub(history_bytes(&fams));
    Ok((held as f64 / tasks.max(1) as f64, fams, entries))
}

#[cfg(test)]
mod tests {
    use super::family;

    #[test]
    fn keys_fall_in_their_families() {
        for (key, want) in [
            ("task:01a2", "task"),
            ("conv:messenger:P:U", "conv"),
            ("conv:messenger:P:U:log", "conv:log"),
            ("conv:messenger:P:U:analytics", "conv:analytics"),
            ("conv:messenger:P:U:analytics:queued", "conv:analytics:queued"),
            ("order:out:messenger:P:U:parked", "order:parked"),
            ("order:messenger:P:U", "order"),
            ("idem:webhook:messenger:P:m_1", "idem:webhook"),
            ("idem:reply:r1", "idem:reply"),
            ("idem:k-1", "idem"),
            ("lane:conversations", "lane"),
            ("dlq", "dlq"),
        ] {
            assert_eq!(family(key), want, "{key}");
        }
    }
}

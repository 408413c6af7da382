//! Benchmarks on the configured Redis: `drain` (no-op tasks through the whole engine path:
//! records, acks, retries armed), `latency` (enqueue-to-start at a steady rate), `ingest`
//! (signed webhooks over HTTP under wrk), `reply` (webhook to reply) and `memory` (Redis bytes
//! per answered message and per finished task).

mod child;
mod hostile;
mod ingest;
mod listeners;
mod memory;
mod overview;
mod reply;
mod send_api;
mod soak;

pub use hostile::{HostileReport, hostile};
pub use ingest::{IngestReport, ingest};
pub use memory::{MemoryReport, memory};
pub use overview::{OverviewReport, overview};
pub use reply::{ReplyReport, reply};
pub use soak::{SoakReport, soak};

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::worker::{self, WorkerOptions};
use crate::engine::{Engine, Lane, Registry, TaskSpec};

#[derive(Debug, Serialize)]
pub struct DrainReport {
    pub tasks: u64,
    pub concurrency: usize,
    pub enqueue_per_s: f64,
    pub drain_per_s: f64,
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub rss_mb: f64,
    pub key_prefix: String,
    /// Redis CPU (user and system) per task drained, in µs, of each master by address (one, on
    /// a single Redis); read from `INFO cpu` before and after the drain. Every process on the
    /// machine shares the cores, so on one machine this is the cost to compare, not the speed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redis_cpu_us_per_task: Vec<(String, f64)>,
    /// Live-event listeners that followed a task each through the drain (`--listeners`), and
    /// how many of them were told their task's success.
    #[serde(skip_serializing_if = "is_zero")]
    pub listeners: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub listeners_told: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Each master's Redis CPU time so far (user and system, seconds), by address.
async fn redis_cpu(engine: &Engine) -> Vec<(String, f64)> {
    let Ok(infos) = engine.conn().query_masters(redis::cmd("INFO").arg("cpu")).await else { return Vec::new() };
    infos
        .into_iter()
        .map(|(node, info)| {
            let get = |k: &str| {
                info.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
            };
            (node, get("used_cpu_user:") + get("used_cpu_sys:"))
        })
        .collect()
}

/// Resident memory of this process in MiB (Linux).
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time a process has used so far (user + system), from `/proc/<pid>/stat`; `None` when
/// there is no such process here. Times there are in USER_HZ ticks, 100 a second on Linux.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The process id of the Redis behind `engine`, when that Redis runs on this machine.
pub async fn local_redis_pid(engine: &Engine) -> Option<String> {
    let mut con = engine.conn();
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut con).await.ok()?;
    let pid = info.lines().find_map(|l| l.strip_prefix("process_id:"))?.trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.starts_with("redis-server").then_some(pid)
}

/// An engine of its own for one benchmark: a key prefix nobody else uses, one lane's worker
/// sized to `concurrency`.
async fn bench_engine(mut config: Config, tag: &str, concurrency: usize) -> anyhow::Result<Engine> {
    config.key_prefix = format!("{}-bench-{tag}-{}", config.key_prefix, std::process::id());
    config.concurrency = concurrency;
    config.concurrency_analytics = concurrency;
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, Registry::new())?;
    engine.ensure_groups().await?;
    Ok(engine)
}

async fn enqueue_noops(engine: &Engine, n: u64) -> anyhow::Result<Vec<String>> {
    enqueue_noops_later(engine, n, None).await
}

/// Enqueue `n` no-op tasks, each `delay` ahead when given; their ids.
async fn enqueue_noops_later(engine: &Engine, n: u64, delay: Option<Duration>) -> anyhow::Result<Vec<String>> {
    let spec = |_| {
        let s = TaskSpec::new("diag.noop", Value::Null).on_lane(Lane::Analytics);
        match delay {
            Some(d) => s.delayed(d),
            None => s,
        }
    };
    let specs = (0..n).map(spec).collect();
    Ok(engine.enqueue_batch(specs).await?)
}

/// The sizes of the enqueue batches for `tasks` tasks: at most 1 000 each, and as many batches
/// as a multiple of the partitions, so that the batches (each sent to the next partition in
/// turn) load every partition alike: 100 batches over 12 partitions would give four of them a
/// ninth batch, and their masters an eighth more work than the others.
fn enqueue_batches(tasks: u64, partitions: usize) -> Vec<u64> {
    let parts = partitions.max(1) as u64;
    let batches = tasks.div_ceil(1000).div_ceil(parts) * parts;
    (0..batches).map(|i| tasks / batches + u64::from(i < tasks % batches)).filter(|&n| n > 0).collect()
}

/// Stop the worker, remove the benchmark's keys, and report.
async fn finish(
    engine: &Engine,
    handle: worker::WorkerHandle,
    stop: CancellationToken,
    (tasks, concurrency, enqueue_s, drain_s): (u64, usize, f64, f64),
) -> DrainReport {
    let waits = handle.waits();
    stop.cancel();
    handle.wait().await;
    cleanup(engine).await;
    let (p50, p99) = waits
        .map(|h| (h.value_at_quantile(0.5) as f64 / 1e3, h.value_at_quantile(0.99) as f64 / 1e3))
        .unwrap_or((0.0, 0.0));
    DrainReport {
        tasks,
        concurrency,
        enqueue_per_s: tasks as f64 / enqueue_s,
        drain_per_s: tasks as f64 / drain_s,
        wait_p50_ms: p50,
        wait_p99_ms: p99,
        rss_mb: rss_mb(),
        key_prefix: engine.config().key_prefix.clone(),
        redis_cpu_us_per_task: Vec::new(),
        listeners: 0,
        listeners_told: 0,
    }
}

/// Enqueue `tasks` no-op tasks (in batches), then drain them with one worker of `concurrency`.
/// Its waits are the queueing time of a full backlog, not a latency (see [`latency`]).
/// With `listeners`, that many live-event streams follow the first tasks, one each, through
/// the drain.
pub async fn drain(config: Config, tasks: u64, concurrency: usize, listeners: usize) -> anyhow::Result<DrainReport> {
    let engine = bench_engine(config, "drain", concurrency).await?;
    let t0 = Instant::now();
    let mut followed = Vec::new();
    for n in enqueue_batches(tasks, engine.partitions()) {
        let ids = enqueue_noops(&engine, n).await?;
        followed.extend(ids.into_iter().take(listeners.saturating_sub(followed.len())));
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let listening = if listeners > 0 { Some(listeners::listen(&engine, &followed).await?) } else { None };

    let stop = CancellationToken::new();
    let opts = WorkerOptions { batch: 512, ..WorkerOptions::from_config(engine.config(), vec![Lane::Analytics]) };
    let cpu_before = redis_cpu(&engine).await;
    let t1 = Instant::now();
    let handle = worker::start_measured(engine.clone(), opts, stop.clone());
    while handle.completed() < tasks {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if t1.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("drain did not finish within 10 minutes ({} of {tasks} done)", handle.completed());
        }
    }
    let drain_s = t1.elapsed().as_secs_f64();
    let cpu_after = redis_cpu(&engine).await;
    let told = match listening {
        Some(l) => l.finish().await,
        None => 0,
    };
    let mut report = finish(&engine, handle, stop, (tasks, concurrency, enqueue_s, drain_s)).await;
    (report.listeners, report.listeners_told) = (followed.len(), told);
    report.redis_cpu_us_per_task = cpu_after
        .into_iter()
        .map(|(node, after)| {
            let before = cpu_before.iter().find(|(n, _)| *n == node).map(|(_, b)| *b).unwrap_or(after);
            (node, (after - before) * 1e6 / tasks as f64)
        })
        .collect();
    Ok(report)
}

/// Paced latency: `rate` tasks/s for `seconds` against a running worker, so waits show the
/// enqueue-to-start time of a lane that keeps up; with `delay`, every task is queued that far
/// ahead, and the waits are how late each started after its time.
pub async fn latency(
    config: Config,
    rate: u64,
    seconds: u64,
    concurrency: usize,
    delay: Option<Duration>,
) -> anyhow::Result<DrainReport> {
    let engine = bench_engine(config, "latency", concurrency).await?;
    let stop = CancellationToken::new();
    let opts = WorkerOptions::from_config(engine.config(), vec![Lane::Analytics]);
    let handle = worker::start_measured(engine.clone(), opts, stop.clone());
    let total = rate * seconds;
    // Small batches 200 times a second: a steady stream, not bursts.
    let ticks_per_s = 200u64;
    let per_tick = (rate / ticks_per_s).max(1);
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / ticks_per_s));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        interval.tick().await;
        let n = per_tick.min(total - sent);
        enqueue_noops_later(&engine, n, delay).await?;
        sent += n;
    }
    let send_s = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(seconds + 60) + delay.unwrap_or_default();
    while handle.completed() < total && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = t0.elapsed().as_secs_f64();
    Ok(finish(&engine, handle, stop, (total, concurrency, send_s, drain_s)).await)
}

/// Remove every key under the benchmark's prefix, and its partitions'.
pub(crate) async fn cleanup(engine: &Engine) {
    let mut con = engine.conn();
    let mut roots = vec![engine.keys().root().to_string()];
    roots.extend((0..engine.partitions()).map(|p| engine.part(p).root().to_string()));
    roots.dedup();
    for root in roots {
        let mut scan = crate::redis::Scan::prefixed(&root);
        while let Ok(Some(keys)) = scan.next(&con).await {
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("UNLINK").arg(&keys).query_async(&mut con).await;
            }
        }
    }
}

/// Serve the HTTP API of `engine` on a free loopback port until the returned token is cancelled.
pub(crate) async fn serve_api(
    engine: &Engine,
) -> anyhow::Result<(std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
    serve_api_with(engine, &crate::web::auth::random_token()).await
}

/// [`serve_api`] with the admin token given.
pub(crate) async fn serve_api_with(
    engine: &Engine,
    token: &str,
) -> anyhow::Result<(std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
    let state = crate::web::AppState {
        engine: engine.clone(),
        admin_token: std::sync::Arc::new(token.to_string()),
        auth_throttle: std::sync::Arc::new(crate::web::throttle::AuthThrottle::from_config(engine.config())),
        ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        draining: std::sync::Arc::default(),
        prometheus: crate::telemetry::prometheus(),
        jwks: None,
    };
    let limits = crate::web::front::Limits::from_config(engine.config());
    serve_router(crate::web::router(state), limits).await
}

/// Serve `router` on a free loopback port until the returned token is cancelled.
pub(crate) async fn serve_router(
    router: axum::Router,
    limits: crate::web::front::Limits,
) -> anyhow::Result<(std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(crate::web::front::serve(listener, router, limits, stop.clone()));
    Ok((addr, stop, server))
}

#[cfg(test)]
mod tests {
    use super::enqueue_batches;

    #[test]
    fn enqueue_batches_load_every_partition_alike() {
        let sizes = enqueue_batches(100_000, 12);
        assert_eq!(sizes.iter().sum::<u64>(), 100_000);
        assert!(sizes.iter().all(|&n| n <= 1000));
        let mut per_part = [0u64; 12];
        for (i, n) in sizes.iter().enumerate() {
            per_part[i % 12] += n;
        }
        let (lo, hi) = (per_part.iter().min().unwrap(), per_part.iter().max().unwrap());
        assert!(hi - lo <= 9, "{per_part:?}");
        assert_eq!(enqueue_batches(2500, 1), vec![834, 833, 833]);
        assert_eq!(enqueue_batches(5, 12), vec![1; 5]);
    }
}

//! `switchyard bench ingest`: signed, unique Facebook webhooks over HTTP under wrk, against an
//! in-process API (no workers, as the peers it is compared with), then a check that every
//! answered event is in its lane exactly once. With `--ceiling`, the same load against a bare
//! handler — the signature checked, the body appended with one `XADD`, 200 — which does none of
//! the parsing, deduplication, ordering or status keeping: the most this machine allows.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::engine::{Engine, Lane};
use crate::ingest::verify::sha256_signature;
use crate::redis::server::find_on_path;

const SECRET: &str = "bench_secret";
/// Requests prepared per second of run: more than the server takes here, so none repeats.
const PER_SECOND: u64 = 60_000;

#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// `switchyard`, or `ceiling` for the bare handler.
    pub server: &'static str,
    pub requests: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub errors: u64,
    /// Events found in the lane afterwards: equal to the 2xx answers when nothing was lost.
    pub queued: u64,
    pub seconds: u64,
    pub threads: u32,
    pub connections: u32,
    pub rss_mb: f64,
    /// CPU time per answered request, in µs: this process (the API, without wrk) and, when it
    /// runs on this machine, Redis. Steadier than the rate on a shared machine.
    pub cpu_us_per_request: f64,
    pub redis_cpu_us_per_request: Option<f64>,
}

/// `n` signed Messenger webhooks, one per line as `<signature>\t<body>`, each with its own
/// message id; 500 customers of one page.
fn write_requests(path: &std::path::Path, n: u64, tag: &str) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        let body = json!({"object": "page", "entry": [{"id": "PAGE1", "time": 1458692752478u64, "messaging": [{
            "sender": {"id": (1000 + i % 500).to_string()}, "recipient": {"id": "PAGE1"}, "timestamp": 1457764197627u64 + i,
            "message": {"mid": format!("m_{tag}_{i}"), "text": format!("hello, do you ship to Lima? #{i}")}}]}]})
        .to_string();
        writeln!(f, "{}\t{}", sha256_signature(SECRET.as_bytes(), body.as_bytes()), body)?;
    }
    f.flush()
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The bare handler of `--ceiling`: HMAC of the raw body, one `XADD` of it, 200.
fn ceiling_router(engine: &Engine) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode};
    let stream = engine.keys().lane(Lane::Webhooks);
    let engine = engine.clone();
    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let (engine, stream) = (engine.clone(), stream.clone());
        async move {
            let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
            if crate::ingest::verify::check_sha256(SECRET.as_bytes(), &body, sig).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            let mut con = engine.conn();
            let added: redis::RedisResult<String> =
                redis::cmd("XADD").arg(&stream).arg("*").arg("body").arg(&body[..]).query_async(&mut con).await;
            if added.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
        }
    };
    axum::Router::new().route("/webhooks/facebook", axum::routing::post(handler))
}

pub async fn ingest(
    mut config: Config,
    seconds: u64,
    threads: u32,
    connections: u32,
    ceiling: bool,
) -> anyhow::Result<IngestReport> {
    let wrk = find_on_path("wrk").context("`bench ingest` drives load with wrk: apt-get install wrk")?;
    let tag = format!("{}-{}", std::process::id(), crate::engine::now_ms());
    config.key_prefix = format!("{}-bench-ingest-{}", config.key_prefix, std::process::id());
    config.facebook_app_secret = Some(SECRET.into());
    config.lane_depth_limit = 0;
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, crate::app::registry())?;
    engine.ensure_groups().await?;

    let dir = std::env::temp_dir().join(format!("switchyard-bench-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let reqs = dir.join("reqs.tsv");
    let script = dir.join("post.lua");
    std::fs::write(&script, include_str!("post.lua"))?;
    let n = PER_SECOND * seconds;
    let path = reqs.clone();
    let tag2 = tag.clone();
    tokio::task::spawn_blocking(move || write_requests(&path, n, &tag2)).await??;

    let (addr, stop, server) =
        if ceiling { super::serve_router(ceiling_router(&engine)).await? } else { super::serve_api(&engine).await? };
    let redis_pid = super::local_redis_pid(&engine).await;
    let cpu = |pid: &str| super::cpu_seconds(pid).unwrap_or(0.0);
    let (own0, redis0) = (cpu("self"), redis_pid.as_deref().map(cpu));

    let out = tokio::process::Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .env("REQS", &reqs)
        .env("THREADS", threads.to_string())
        .output()
        .await?;
    let (own1, redis1) = (cpu("self"), redis_pid.as_deref().map(cpu));
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("RESULT")) else {
        bail!("wrk printed no result: {}{}", text, String::from_utf8_lossy(&out.stderr));
    };
    let mut con = engine.conn();
    // Customers' messages go to the conversations lane; the bare handler appends to another.
    let lane = if ceiling { Lane::Webhooks } else { Lane::Conversations };
    let queued: u64 = redis::cmd("XLEN").arg(engine.keys().lane(lane)).query_async(&mut con).await?;
    super::cleanup(&engine).await;
    let requests = field(line, "requests") as u64;
    let dur = field(line, "duration_s").max(1e-9);
    let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
    Ok(IngestReport {
        server: if ceiling { "ceiling" } else { "switchyard" },
        requests,
        per_s: requests as f64 / dur,
        p50_ms: field(line, "p50_ms"),
        p99_ms: field(line, "p99_ms"),
        non_2xx: field(line, "non2xx") as u64,
        errors: field(line, "errors") as u64,
        queued,
        seconds,
        threads,
        connections,
        rss_mb: super::rss_mb(),
        cpu_us_per_request: per_request(own1 - own0),
        redis_cpu_us_per_request: redis0.zip(redis1).map(|(a, b)| per_request(b - a)),
    })
}

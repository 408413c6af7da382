//! `switchyard bench ingest`: signed, unique Facebook webhooks over HTTP under wrk, against an
//! in-process API (no workers, as the peers it is compared with), then a check that every
//! answered event is in its lane exactly once. With `--ceiling`, the same load against a bare
//! handler — the signature checked, the body appended with one `XADD`, 200 — which does none of
//! the parsing, deduplication, ordering or status keeping: the most this machine allows.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Engine, Lane};
use crate::ingest::verify::sha256_signature;
use crate::redis::server::find_on_path;
use crate::web::front::Limits;

const SECRET: &str = "bench_secret";
/// Requests prepared per second of run: more than Switchyard takes here, so none repeats (the
/// bare handler of `--ceiling` may go past them and send some twice: it keeps no dedup marker).
const PER_SECOND: u64 = 60_000;

#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// `switchyard`, or `ceiling` for the bare handler.
    pub server: &'static str,
    pub requests: u64,
    /// As wrk counts it (requests over its run time), comparable with the peers' figures.
    pub per_s: f64,
    /// Events stored per second over wrk's run time, counted in Redis. wrk starts its first
    /// thread while it still prepares the next one, and counts what the first sends meanwhile
    /// but not the time it took, so its own figure runs high.
    pub steady_per_s: Option<f64>,
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

/// `n` signed Messenger webhooks, each with its own message id, from 500 customers of one page,
/// as whole HTTP requests for `host`, each behind a line with its length in bytes. Request i
/// goes to `<path>.<i mod threads>`: each wrk thread reads only its own file, in one read, so it
/// is ready in a moment — wrk starts each thread as soon as it is prepared, and one that runs
/// alone while the others prepare would send a lighter load than the run is meant to.
fn write_requests(path: &std::path::Path, n: u64, tag: &str, threads: u32, host: &str) -> std::io::Result<()> {
    let mut files = (0..threads.max(1))
        .map(|t| Ok(std::io::BufWriter::new(std::fs::File::create(format!("{}.{t}", path.display()))?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    for i in 0..n {
        let body = json!({"object": "page", "entry": [{"id": "PAGE1", "time": 1458692752478u64, "messaging": [{
            "sender": {"id": (1000 + i % 500).to_string()}, "recipient": {"id": "PAGE1"}, "timestamp": 1457764197627u64 + i,
            "message": {"mid": format!("m_{tag}_{i}"), "text": format!("hello, do you ship to Lima? #{i}")}}]}]})
        .to_string();
        let request = format!(
            "POST /webhooks/facebook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             X-Hub-Signature-256: {}\r\nContent-Length: {}\r\n\r\n{body}",
            sha256_signature(SECRET.as_bytes(), body.as_bytes()),
            body.len()
        );
        let at = (i % files.len() as u64) as usize;
        write!(files[at], "{}\n{request}", request.len())?;
    }
    files.iter_mut().try_for_each(|f| f.flush())
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The length of `stream` every 100 ms, until `stop`.
async fn sample_len(engine: Engine, streams: Vec<String>, stop: CancellationToken) -> Vec<(Instant, u64)> {
    let mut out = Vec::new();
    while !stop.is_cancelled() {
        if let Ok(n) = total_len(&engine, &streams).await {
            out.push((Instant::now(), n));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.cancelled() => {}
        }
    }
    out
}

/// The entries of `streams` together (each partition's lane is in a slot of its own: one
/// command each).
async fn total_len(engine: &Engine, streams: &[String]) -> redis::RedisResult<u64> {
    let mut con = engine.conn();
    let mut total = 0;
    for s in streams {
        total += redis::cmd("XLEN").arg(s).query_async::<u64>(&mut con).await?;
    }
    Ok(total)
}

/// Entries appended per second over wrk's own run time — the last `seconds` before `end`, less
/// its last half second — from `samples` of the stream's length.
fn steady_rate(samples: &[(Instant, u64)], end: Instant, seconds: u64) -> Option<f64> {
    let from = end.checked_sub(Duration::from_secs(seconds))?;
    let to = end.checked_sub(Duration::from_millis(500))?;
    let a = samples.iter().find(|(t, _)| *t >= from)?;
    let b = samples.iter().rev().find(|(t, _)| *t <= to)?;
    let secs = b.0.checked_duration_since(a.0)?.as_secs_f64();
    (secs >= 1.0).then(|| b.1.saturating_sub(a.1) as f64 / secs)
}

/// The bare handler of `--ceiling`: HMAC of the raw body, one `XADD` of it to `stream`, 200.
fn ceiling_router(engine: &Engine, stream: String) -> axum::Router {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    async fn handler(
        State((engine, stream)): State<(Engine, std::sync::Arc<str>)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let sig = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
        if crate::ingest::verify::check_sha256(SECRET.as_bytes(), &body, sig).is_err() {
            return StatusCode::UNAUTHORIZED;
        }
        let mut con = engine.conn();
        let added: redis::RedisResult<String> =
            redis::cmd("XADD").arg(&*stream).arg("*").arg("body").arg(&body[..]).query_async(&mut con).await;
        if added.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
    }
    let stream: std::sync::Arc<str> = stream.into();
    axum::Router::new().route("/webhooks/facebook", axum::routing::post(handler)).with_state((engine.clone(), stream))
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
    let reqs = dir.join("reqs");
    let script = dir.join("post.lua");
    std::fs::write(&script, include_str!("post.lua"))?;
    // Customers' messages go to the conversations lane; the bare handler appends to another.
    let lane = if ceiling { Lane::Webhooks } else { Lane::Conversations };
    let (addr, stop, server) = if ceiling {
        super::serve_router(ceiling_router(&engine, engine.keys().lane(lane)), Limits::from_config(engine.config()))
            .await?
    } else {
        super::serve_api(&engine).await?
    };
    let n = PER_SECOND * seconds;
    let (path, tag2, host) = (reqs.clone(), tag.clone(), addr.to_string());
    tokio::task::spawn_blocking(move || write_requests(&path, n, &tag2, threads, &host)).await??;

    let redis_pid = super::local_redis_pid(&engine).await;
    let cpu = |pid: &str| super::cpu_seconds(pid).unwrap_or(0.0);
    let (own0, redis0) = (cpu("self"), redis_pid.as_deref().map(cpu));

    let sampling = CancellationToken::new();
    // The lane in every partition (the bare handler appends to one stream).
    let streams: Vec<String> = if ceiling {
        vec![engine.keys().lane(lane)]
    } else {
        (0..engine.partitions()).map(|p| engine.part(p).lane(lane)).collect()
    };
    let sampler = tokio::spawn(sample_len(engine.clone(), streams.clone(), sampling.clone()));
    let out = tokio::process::Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .env("REQS", &reqs)
        .output()
        .await?;
    let end = Instant::now();
    sampling.cancel();
    let samples = sampler.await.unwrap_or_default();
    let (own1, redis1) = (cpu("self"), redis_pid.as_deref().map(cpu));
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("RESULT")) else {
        bail!("wrk printed no result: {}{}", text, String::from_utf8_lossy(&out.stderr));
    };
    let steady_per_s = steady_rate(&samples, end, seconds);
    let queued = total_len(&engine, &streams).await?;
    super::cleanup(&engine).await;
    let requests = field(line, "requests") as u64;
    let dur = field(line, "duration_s").max(1e-9);
    let per_request = |seconds: f64| seconds * 1e6 / requests.max(1) as f64;
    Ok(IngestReport {
        server: if ceiling { "ceiling" } else { "switchyard" },
        requests,
        per_s: requests as f64 / dur,
        steady_per_s,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_whole_signed_requests_of_its_own() {
        let dir = std::env::temp_dir().join(format!("switchyard-reqs-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reqs");
        write_requests(&path, 5, "t", 2, "127.0.0.1:9").unwrap();
        let mut mids = Vec::new();
        for t in 0..2 {
            let all = std::fs::read(format!("{}.{t}", path.display())).unwrap();
            let mut rest = &all[..];
            while !rest.is_empty() {
                // `<length>\n<request>`, as post.lua reads it
                let nl = rest.iter().position(|&b| b == b'\n').unwrap();
                let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
                let request = std::str::from_utf8(&rest[nl + 1..nl + 1 + len]).unwrap();
                rest = &rest[nl + 1 + len..];
                let (head, body) = request.split_once("\r\n\r\n").unwrap();
                assert!(head.starts_with("POST /webhooks/facebook HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"), "{head}");
                assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
                let sig = head.lines().find_map(|l| l.strip_prefix("X-Hub-Signature-256: ")).unwrap();
                assert!(crate::ingest::verify::check_sha256(SECRET.as_bytes(), body.as_bytes(), Some(sig)).is_ok());
                let events = crate::ingest::meta::parse(body.as_bytes()).unwrap();
                mids.push((t, events.events[0].id.clone()));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // Request i went to thread i mod 2; no message id twice.
        assert_eq!(
            mids,
            [(0, "m_t_0"), (0, "m_t_2"), (0, "m_t_4"), (1, "m_t_1"), (1, "m_t_3")].map(|(t, m)| (t, m.to_string()))
        );
    }

    #[test]
    fn the_steady_rate_is_taken_over_wrks_own_run_time() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 1 000 events/s for two seconds while one thread runs alone, then 3 000/s for ten.
        let mut samples = Vec::new();
        for i in 0..=120u64 {
            let ms = i * 100;
            let n = if ms <= 2000 { ms } else { 2000 + (ms - 2000) * 3 };
            samples.push((at(ms), n));
        }
        let rate = steady_rate(&samples, at(12_000), 10).unwrap();
        assert!((rate - 3000.0).abs() < 1.0, "{rate}");
        assert_eq!(steady_rate(&samples[..5], at(12_000), 10), None);
    }
}

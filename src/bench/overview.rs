//! `switchyard bench overview`: how long the dashboard's overview takes with a big deployment —
//! a lane holding `entries` entries and a DLQ holding `dead` dead letters — rendered through the
//! real router with a real session, so nothing that scans a whole stream can hide.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use serde::Serialize;
use tower::ServiceExt;

use crate::config::Config;
use crate::engine::{Engine, Lane};

#[derive(Debug, Serialize)]
pub struct OverviewReport {
    pub entries: u64,
    pub dead: u64,
    pub renders: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub fill_s: f64,
}

/// Append `n` entries to a stream in pipelined batches.
async fn fill(engine: &Engine, key: &str, n: u64, fields: &[(&str, &str)]) -> redis::RedisResult<()> {
    let mut con = engine.conn();
    let mut left = n;
    while left > 0 {
        let batch = left.min(10_000);
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            let cmd = pipe.cmd("XADD").arg(key).arg("*");
            for (k, v) in fields {
                cmd.arg(*k).arg(*v);
            }
            cmd.ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
        left -= batch;
    }
    Ok(())
}

pub async fn overview(mut config: Config, entries: u64, dead: u64, renders: u64) -> anyhow::Result<OverviewReport> {
    config.key_prefix = format!("{}-bench-overview-{}", config.key_prefix, std::process::id());
    let url = config.redis_url_or_default().to_string();
    let engine = Engine::new(config, &url, crate::app::registry())?;
    engine.ensure_groups().await?;
    let t0 = Instant::now();
    let payload = r#"{"ms":1}"#;
    fill(
        &engine,
        &engine.keys().lane(Lane::Webhooks),
        entries,
        &[("id", "01BENCH"), ("kind", "diag.noop"), ("payload", payload), ("max", "4")],
    )
    .await?;
    fill(
        &engine,
        &engine.keys().dlq(),
        dead,
        &[
            ("task_id", "01BENCH"),
            ("kind", "diag.fail"),
            ("lane", "analytics"),
            ("payload", payload),
            ("error", "failed on purpose"),
            ("attempts", "[]"),
        ],
    )
    .await?;
    let fill_s = t0.elapsed().as_secs_f64();

    let token = crate::web::auth::random_token();
    let state = crate::web::AppState {
        engine: engine.clone(),
        admin_token: std::sync::Arc::new(token.clone()),
        ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        draining: std::sync::Arc::default(),
        prometheus: crate::telemetry::prometheus(),
        jwks: None,
        auth_throttle: std::sync::Arc::new(crate::web::throttle::AuthThrottle::from_config(engine.config())),
    };
    let router = crate::web::router(state);
    let login = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))?;
    let resp = router.clone().oneshot(login).await?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("login gave no session"))?;

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..renders {
        let req = Request::get("/ui/").header("cookie", &cookie).body(Body::empty())?;
        let t = Instant::now();
        let resp = router.clone().oneshot(req).await?;
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        let us = t.elapsed().as_micros() as u64;
        anyhow::ensure!(
            String::from_utf8_lossy(&body).contains(&format!("<b id=\"dlq-depth\">{dead}</b>")),
            "the overview does not show the DLQ's depth"
        );
        let _ = hist.record(us.max(1));
    }
    super::cleanup(&engine).await;
    Ok(OverviewReport {
        entries,
        dead,
        renders,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1e3,
        max_ms: hist.max() as f64 / 1e3,
        fill_s,
    })
}

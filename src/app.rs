//! Wiring: find or start Redis, build the engine, start the roles, shut down cleanly.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DEFAULT_REDIS_URL};
use crate::engine::worker::{self, WorkerOptions};
use crate::engine::{Engine, EngineError, Lane, Registry};
use crate::redis::server::PrivateRedis;
use crate::web::{self, AppState};

/// Which parts of Switchyard this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
    pub scheduler: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { api: true, worker: true, scheduler: true };

    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut r = Roles { api: false, worker: false, scheduler: false };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "api" => r.api = true,
                "worker" => r.worker = true,
                "scheduler" => r.scheduler = true,
                other => return Err(format!("unknown role `{other}` (roles: api, worker, scheduler)")),
            }
        }
        if !(r.api || r.worker || r.scheduler) {
            return Err("no role given".into());
        }
        Ok(r)
    }
}

/// Every task kind this build knows: the diagnostic kinds, the webhook kinds and delivery.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    crate::ingest::register(&mut r);
    crate::delivery::send::register(&mut r);
    // A reply asks for its conversation's figures (debounced; see analytics::conversation).
    crate::conversation::flow::register(
        &mut r,
        Arc::new(|engine, id| {
            Box::pin(async move {
                if let Err(e) = crate::analytics::conversation::request(&engine, &id).await {
                    tracing::debug!(conversation = %id, error = %e, "conversation analytics not queued");
                }
            })
        }),
    );
    crate::conversation::events::register(&mut r);
    crate::analytics::cleanup::register(&mut r);
    crate::analytics::report::register(&mut r);
    crate::analytics::conversation::register(&mut r);
    r
}

/// The key set for Pub/Sub push tokens, when Pub/Sub is configured.
pub fn jwks(c: &Config) -> anyhow::Result<Option<Arc<crate::ingest::jwt::Jwks>>> {
    if c.google_pubsub_audience.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(crate::ingest::jwt::Jwks::new(&c.google_jwks, crate::http_client::client()?))))
}

/// Warnings about Redis settings known to lose work, one line each.
pub async fn guardrails(engine: &Engine) -> Result<Vec<String>, EngineError> {
    engine.guardrails().await
}

/// Cancel `token` on SIGINT or SIGTERM; `term` is set first when it was SIGTERM (what a
/// supervisor or a load balancer's orchestrator sends, so the listener drains first).
pub fn cancel_on_signals(token: CancellationToken, term_seen: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => term_seen.store(true, Ordering::Relaxed),
        }
        tracing::info!("shutting down: no new work is read; running work gets the grace period");
        token.cancel();
    });
}

/// Keep `ready` true while Redis answers and the groups exist, recreating them when missing.
pub async fn watch_readiness(engine: Engine, ready: Arc<AtomicBool>, stop: CancellationToken) {
    loop {
        let ok = engine.ensure_groups().await.is_ok();
        if ok != ready.swap(ok, Ordering::Relaxed) {
            if ok {
                tracing::info!("Redis reachable and consumer groups present; ready");
            } else {
                tracing::warn!("Redis unreachable; not ready");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// `switchyard serve`.
pub async fn serve(config: Config, roles: Roles, lanes: Vec<Lane>) -> anyhow::Result<()> {
    let mut private = None;
    let url = match &config.redis_url {
        Some(u) => u.clone(),
        None if crate::redis::answers(DEFAULT_REDIS_URL).await => DEFAULT_REDIS_URL.to_string(),
        None => {
            let p = PrivateRedis::start(Path::new("./data/redis"), DEFAULT_REDIS_URL).await?;
            tracing::info!(url = %p.url, dir = "./data/redis", "no Redis configured or answering; started a private redis-server");
            let url = p.url.clone();
            private = Some(p);
            url
        }
    };
    let admin_token = config.admin_token.clone().unwrap_or_else(web::auth::random_token);
    let listen = config.listen.clone();
    let engine = Engine::new(config, &url, registry())?;
    match guardrails(&engine).await {
        Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!("{w}")),
        Err(e) => tracing::warn!(error = %e, url = %url, "Redis does not answer yet; starting anyway and retrying"),
    }
    // Redis away: the workers and the readiness watch create the groups once it answers.
    if let Err(e @ EngineError::PartitionsDiffer { .. }) = engine.ensure_groups().await {
        anyhow::bail!("{e}");
    }

    let shutdown = CancellationToken::new();
    let term_seen = Arc::new(AtomicBool::new(false));
    cancel_on_signals(shutdown.clone(), term_seen.clone());
    let prometheus = crate::telemetry::prometheus();
    metrics_at_zero(engine.registry());

    let worker = roles
        .worker
        .then(|| worker::start(engine.clone(), WorkerOptions::from_config(engine.config(), lanes), shutdown.clone()));

    // Everything else the process runs, stopped by `shutdown` and waited for together.
    let background = TaskTracker::new();
    let mut http = None;
    if roles.scheduler {
        let defs = crate::schedule::from_config(engine.config());
        background.spawn(crate::schedule::start(
            engine.clone(),
            defs,
            crate::schedule::process_name(),
            shutdown.clone(),
        ));
    }
    if roles.api {
        let ready = Arc::new(AtomicBool::new(false));
        background.spawn(watch_readiness(engine.clone(), ready.clone(), shutdown.clone()));
        background.spawn(crate::engine::gauges::sample_lanes(engine.clone(), Duration::from_secs(1), shutdown.clone()));
        let draining = Arc::new(AtomicBool::new(false));
        let state = AppState {
            jwks: jwks(engine.config())?,
            engine: engine.clone(),
            admin_token: Arc::new(admin_token.clone()),
            ready,
            draining: draining.clone(),
            prometheus,
            auth_throttle: Arc::new(web::throttle::AuthThrottle::from_config(engine.config())),
        };
        let listener =
            tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("Switchyard is up: dashboard http://{addr}/ — admin token: {admin_token}");
        // On SIGTERM the listener goes on serving for SHUTDOWN_DELAY with /readyz at 503, so
        // load balancers stop sending before it closes; on Ctrl-C it closes at once.
        let stop_http = CancellationToken::new();
        let (stop, delay) = (stop_http.clone(), engine.config().shutdown_delay);
        let signalled = shutdown.clone();
        tokio::spawn(async move {
            signalled.cancelled().await;
            draining.store(true, Ordering::Relaxed);
            if term_seen.load(Ordering::Relaxed) && !delay.is_zero() {
                tracing::info!(delay = %humantime::format_duration(delay), "readyz answers 503; the listener closes after the delay");
                tokio::time::sleep(delay).await;
            }
            stop.cancel();
        });
        let limits = web::front::Limits::from_config(engine.config());
        http = Some(tokio::spawn(web::front::serve(listener, web::router(state), limits, stop_http)));
    }
    background.close();
    shutdown.cancelled().await;
    if let Some(w) = worker {
        w.wait().await;
    }
    if let Some(http) = http {
        // The drain delay, then the requests in flight; answers that stream (task events)
        // are cut after a few seconds more.
        let bound = engine.config().shutdown_delay + Duration::from_secs(5);
        if tokio::time::timeout(bound, http).await.is_err() {
            tracing::warn!("connections still open {} s after shutdown; closing them", bound.as_secs());
        }
    }
    // Requests in flight and a scheduler tick get a few seconds to finish.
    if tokio::time::timeout(Duration::from_secs(5), background.wait()).await.is_err() {
        tracing::warn!(left = background.len(), "background tasks still running 5 s after shutdown; stopping anyway");
    }
    if let Some(p) = private {
        p.stop().await;
    }
    Ok(())
}

/// Export every counter and histogram whose labels are known before anything happens at zero,
/// so Grafana panels and alert rules see 0 from the first scrape rather than no data.
pub fn metrics_at_zero(registry: &Registry) {
    crate::engine::gauges::metrics_at_zero(registry);
    crate::ingest::metrics_at_zero();
    crate::delivery::send::metrics_at_zero();
    crate::conversation::flow::metrics_at_zero();
    crate::web::metrics_at_zero();
}

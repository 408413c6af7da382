//! The command line's operations on a deployment (everything but `serve` and `bench`). They
//! talk to Redis directly, so they work with no server running.

use std::io::Write;

use anyhow::{Context, bail};
use serde_json::json;

use crate::config::Config;
use crate::engine::dlq::DlqFilter;
use crate::engine::history::Position;
use crate::engine::{Engine, HistoryFilter, Lane, TaskSpec};

fn engine(config: Config) -> anyhow::Result<Engine> {
    let url = config.redis_url_or_default().to_string();
    Ok(Engine::new(config, &url, crate::app::registry())?)
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `switchyard check`: settings, Redis and its guardrails. Fails when Redis cannot be used.
pub async fn check(config: Config) -> anyhow::Result<()> {
    println!("settings: ok (key prefix `{}`, listen {})", config.key_prefix, config.listen);
    let url = config.redis_url_or_default().to_string();
    let e = engine(config)?;
    let warnings = crate::app::guardrails(&e).await.with_context(|| format!("Redis at {url} does not answer"))?;
    println!("redis: {url} answers");
    e.ensure_groups().await.context("cannot create the consumer groups")?;
    println!("groups: present on every lane");
    for w in &warnings {
        println!("warning: {w}");
    }
    if warnings.iter().any(|w| w.contains("older than 7.0")) {
        bail!("Redis is too old");
    }
    Ok(())
}

pub async fn tasks_enqueue(config: Config, mut spec: TaskSpec, payload: Option<String>) -> anyhow::Result<()> {
    if let Some(p) = payload {
        spec.payload = serde_json::from_str(&p).context("the payload must be JSON")?;
    }
    let id = engine(config)?.submit(spec).await?;
    print(&json!({"task_id": id}))
}

pub async fn tasks_scheduled(config: Config, lane: Option<Lane>, limit: usize) -> anyhow::Result<()> {
    let tasks = engine(config)?.later_tasks(lane, limit.clamp(1, 1000)).await?;
    print(&json!({"scheduled": tasks, "count": tasks.len()}))
}

/// What `switchyard tasks list` was asked for, as typed.
pub struct HistoryWords {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub lane: Option<String>,
    pub since: Option<String>,
    pub after: Option<String>,
}

pub async fn tasks_list(config: Config, w: HistoryWords, limit: usize) -> anyhow::Result<()> {
    let (state, kind, lane, since) = (w.state.as_deref(), w.kind.as_deref(), w.lane.as_deref(), w.since.as_deref());
    let filter = HistoryFilter::parse(state, kind, lane, since, crate::engine::now_ms()).map_err(anyhow::Error::msg)?;
    let after = Position::after(w.after.as_deref()).map_err(anyhow::Error::msg)?;
    let page = engine(config)?.finished_tasks(&filter, limit.clamp(1, 1000), after).await?;
    print(&json!({"tasks": page.tasks, "count": page.tasks.len(), "next": page.next}))
}

pub async fn tasks_run_now(config: Config, id: String) -> anyhow::Result<()> {
    engine(config)?.run_now(&id).await?;
    print(&json!({"task_id": id, "status": "PENDING"}))
}

pub async fn tasks_status(config: Config, id: String) -> anyhow::Result<()> {
    match engine(config)?.task_status(&id).await? {
        Some(s) => print(&s),
        None => bail!("no task with id {id}"),
    }
}

pub async fn tasks_cancel(config: Config, id: String) -> anyhow::Result<()> {
    let state = engine(config)?.cancel(&id).await?;
    print(&json!({"task_id": id, "status": state}))
}

pub async fn dlq_list(config: Config, filter: DlqFilter, limit: usize) -> anyhow::Result<()> {
    let e = engine(config)?;
    let letters = e.dlq_list(&filter, limit).await?;
    for d in &letters {
        println!("{}  {}  {}  {}  {}", d.id, d.task_id, d.kind, d.failed_at.as_deref().unwrap_or("-"), d.error);
    }
    println!("{} shown, {} in the dead-letter queue", letters.len(), e.dlq_depth().await?);
    Ok(())
}

pub async fn dlq_show(config: Config, id: String) -> anyhow::Result<()> {
    match engine(config)?.dlq_get(&id).await? {
        Some(d) => print(&d),
        None => bail!("no dead letter {id}"),
    }
}

pub async fn dlq_redrive(
    config: Config,
    ids: Vec<String>,
    filter: DlqFilter,
    all: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let e = engine(config)?;
    let total = e.dlq_depth().await?;
    let report = e
        .dlq_redrive(&ids, &filter, all, dry_run, |n| {
            eprint!("\r{} {n} of {total} dead letters", if dry_run { "matched" } else { "redriving" });
            let _ = std::io::stderr().flush();
        })
        .await?;
    eprintln!();
    print(&report)
}

pub async fn dlq_delete(config: Config, ids: Vec<String>) -> anyhow::Result<()> {
    let n = engine(config)?.dlq_delete(&ids).await?;
    if n == 0 {
        bail!("no such dead letter");
    }
    print(&json!({"deleted": n}))
}

pub async fn lanes_list(config: Config) -> anyhow::Result<()> {
    print(&engine(config)?.queues_status().await?.queues)
}

/// Pause (`pause`) or resume a lane by name.
pub async fn lanes_pause(config: Config, name: &str, pause: bool) -> anyhow::Result<()> {
    let Some(lane) = Lane::parse(name) else {
        bail!("no lane named `{name}` (lanes: conversations, webhooks, analytics)");
    };
    let e = engine(config)?;
    if pause {
        e.pause_lane(lane).await?;
    } else {
        e.resume_lane(lane).await?;
    }
    print(&json!({"lane": lane.as_str(), "paused": pause}))
}

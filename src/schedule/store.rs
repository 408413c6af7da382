//! What the scheduler keeps in Redis: the lease and its fencing counter (`scheduler:lease`,
//! `scheduler:fence`), and each schedule's state (`schedule:<name>`: `last_tick`, `last_run`,
//! `last_task`, `next_run`, `fired_by`).
//!
//! The lease and a tick's record are Lua scripts (`lease.lua`, `fire.lua`): taking the lease
//! moves the fence, and a tick is recorded only for the holder of the current token, so a
//! process that stalled past its lease can change nothing when it wakes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::{Engine, EngineError, now_ms};

/// Take the lease for `me`, or renew it when `held` is the token it already holds: the token
/// now held, or `None` when another process holds the lease.
pub(super) async fn hold_lease(
    engine: &Engine,
    me: &str,
    lease: Duration,
    held: Option<u64>,
) -> Result<Option<u64>, EngineError> {
    let mut con = engine.conn();
    let t: u64 = engine
        .scripts()
        .lease
        .key(engine.keys().scheduler_lease())
        .key(engine.keys().scheduler_fence())
        .arg(me)
        .arg(lease.as_millis() as u64)
        .arg(held.map(|t| t.to_string()).unwrap_or_default())
        .invoke_async(&mut con)
        .await?;
    Ok((t > 0).then_some(t))
}

/// Give the lease up if `me` holds it, so another process takes over without waiting it out.
pub(super) async fn release_lease(engine: &Engine, me: &str) -> Result<(), EngineError> {
    let mut con = engine.conn();
    let _: i64 = engine.scripts().release.key(engine.keys().scheduler_lease()).arg(me).invoke_async(&mut con).await?;
    Ok(())
}

/// The process holding the lease, if any.
pub(super) async fn lease_holder(engine: &Engine) -> Result<Option<String>, EngineError> {
    let mut con = engine.conn();
    Ok(redis::cmd("GET").arg(engine.keys().scheduler_lease()).query_async(&mut con).await?)
}

/// The last tick recorded for a schedule (ms since the epoch); `None` before its first.
pub(super) async fn last_tick(engine: &Engine, name: &str) -> Result<Option<u64>, EngineError> {
    let mut con = engine.conn();
    Ok(redis::cmd("HGET").arg(engine.keys().schedule(name)).arg("last_tick").query_async(&mut con).await?)
}

/// Record that `tick` of a schedule queued `task` (`""`: nothing queued, the tick only marks
/// where the schedule starts) and that its next tick is `next` (0: none), if `me` still holds the lease
/// under `token`; `false` when it does not (fenced out).
pub(super) async fn record_tick(
    engine: &Engine,
    me: &str,
    token: u64,
    name: &str,
    tick: u64,
    task: &str,
    next: u64,
) -> Result<bool, EngineError> {
    let mut con = engine.conn();
    let ok: i64 = engine
        .scripts()
        .fire
        .key(engine.keys().scheduler_lease())
        .key(engine.keys().scheduler_fence())
        .key(engine.keys().schedule(name))
        .arg(me)
        .arg(token)
        .arg(tick)
        .arg(now_ms())
        .arg(task)
        .arg(next)
        .invoke_async(&mut con)
        .await?;
    Ok(ok == 1)
}

/// Record a run outside the ticks: when it was queued and its task.
pub(super) async fn record_run(engine: &Engine, name: &str, at_ms: u64, task: &str) -> Result<(), EngineError> {
    let mut con = engine.conn();
    let _: () = redis::cmd("HSET")
        .arg(engine.keys().schedule(name))
        .arg("last_run")
        .arg(at_ms)
        .arg("last_task")
        .arg(task)
        .query_async(&mut con)
        .await?;
    Ok(())
}

/// A schedule's last run, as recorded.
pub(super) struct LastRun {
    /// When it was queued (ms since the epoch).
    pub at_ms: Option<u64>,
    /// The task it queued; `None` when it queued none.
    pub task: Option<String>,
}

/// A schedule's last run, from its state.
pub(super) async fn last_run(engine: &Engine, name: &str) -> Result<LastRun, EngineError> {
    let mut con = engine.conn();
    let h: BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(engine.keys().schedule(name)).query_async(&mut con).await?;
    Ok(LastRun {
        at_ms: h.get("last_run").and_then(|v| v.parse().ok()),
        task: h.get("last_task").filter(|t| !t.is_empty()).cloned(),
    })
}

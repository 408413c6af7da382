//! Periodic work (the seed's Celery beat), fired exactly once per tick across every process.
//!
//! Any number of processes may run the scheduler role; one of them holds a lease in Redis and
//! fires ticks, the others wait to take it over. Three things make a tick run once:
//! - the task of a tick is queued under the idempotency key `schedule:<name>:<tick>`, so even
//!   two processes that both believe they lead queue it once;
//! - the lease carries a fencing token, and a schedule's state (last tick, last run) moves only
//!   for the holder with the current token (`fire.lua`), so a process that stalled past its
//!   lease cannot rewind or skip anything when it wakes;
//! - a new holder fires the ticks that fell due while nobody held the lease (the ones after the
//!   schedule's last recorded tick), so losing the holder delays ticks by at most one lease
//!   length and loses none.

mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, parse_cron};
use crate::engine::{Engine, EngineError, Lane, TaskSpec, format_ms, now_ms};

/// Most missed ticks of one schedule fired on taking over; older ones are skipped (logged).
const CATCH_UP: usize = 10;

/// One named schedule: when, and what it queues.
#[derive(Clone)]
pub struct ScheduleDef {
    pub name: String,
    /// The expression as configured, or `off`.
    pub expr: String,
    /// `None` when the schedule is off.
    pub cron: Option<cron::Schedule>,
    pub kind: String,
    pub payload: Value,
    pub lane: Option<Lane>,
}

impl ScheduleDef {
    pub fn new(name: &str, expr: &str, kind: &str, payload: Value) -> Result<ScheduleDef, String> {
        let cron = if expr.trim().eq_ignore_ascii_case("off") { None } else { Some(parse_cron(expr)?) };
        Ok(ScheduleDef { name: name.into(), expr: expr.trim().into(), cron, kind: kind.into(), payload, lane: None })
    }

    /// The first tick strictly after `after_ms`.
    fn next_after(&self, after_ms: u64) -> Option<u64> {
        let cron = self.cron.as_ref()?;
        let at = Utc.timestamp_millis_opt(after_ms as i64).single()?;
        cron.after(&at).next().map(|t| t.timestamp_millis().max(0) as u64)
    }

    /// The task of one tick (`None`: run now). Its payload names the schedule and, for a tick,
    /// the time it was due.
    fn task(&self, tick: Option<u64>) -> TaskSpec {
        let mut payload = self.payload.clone();
        if let Value::Object(m) = &mut payload {
            m.insert("schedule".into(), json!(self.name));
            m.insert("scheduled_for".into(), tick.map_or(Value::Null, |t| json!(format_ms(t))));
        }
        let mut spec = TaskSpec::new(&self.kind, payload);
        spec.lane = self.lane;
        if let Some(t) = tick {
            spec = spec.idempotency_key(format!("schedule:{}:{t}", self.name));
        }
        spec
    }
}

/// The task kind a configured schedule queues.
pub fn kind_of(name: &str) -> &'static str {
    match name {
        "performance_report" => "analytics.performance_report",
        "cleanup" => "maintenance.cleanup",
        _ => "diag.noop",
    }
}

/// The schedules of the configuration (SPEC §7 names), off ones included.
pub fn from_config(c: &Config) -> Vec<ScheduleDef> {
    c.schedules
        .iter()
        .filter_map(|(name, expr)| match ScheduleDef::new(name, expr, kind_of(name), json!({})) {
            Ok(d) => Some(d),
            Err(e) => {
                // Validated at start-up; a bad one here is a programming error, not a crash.
                tracing::error!(schedule = %name, error = %e, "schedule skipped");
                None
            }
        })
        .collect()
}

/// A running scheduler role. Dropping it does not stop it: cancel its token.
pub fn start(
    engine: Engine,
    schedules: Vec<ScheduleDef>,
    name: String,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let schedules = Arc::new(schedules);
    tokio::spawn(async move { run(engine, schedules, name, stop).await })
}

/// This process's name in the lease: unique per process.
pub fn process_name() -> String {
    format!("{}-{}-{:04x}", crate::engine::worker::hostname(), std::process::id(), fastrand::u16(..))
}

async fn run(engine: Engine, schedules: Arc<Vec<ScheduleDef>>, me: String, stop: CancellationToken) {
    let lease = engine.config().scheduler_lease.max(Duration::from_millis(300));
    let renew_every = lease / 3;
    let mut token: Option<u64> = None;
    let mut last_renew = std::time::Instant::now() - renew_every;
    loop {
        if last_renew.elapsed() >= renew_every || token.is_none() {
            match store::hold_lease(&engine, &me, lease, token).await {
                Ok(Some(t)) => {
                    if token != Some(t) {
                        tracing::info!(scheduler = %me, token = t, "holding the scheduler lease");
                    }
                    token = Some(t);
                    last_renew = std::time::Instant::now();
                }
                Ok(None) => {
                    if token.is_some() {
                        tracing::warn!(scheduler = %me, "lost the scheduler lease to another process");
                    }
                    token = None;
                    last_renew = std::time::Instant::now();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "scheduler: Redis unavailable");
                    token = None;
                }
            }
        }
        let mut wait = renew_every;
        if let Some(t) = token {
            match fire_due(&engine, &schedules, &me, t).await {
                Ok(Some(next)) => {
                    let until = Duration::from_millis(next.saturating_sub(now_ms()));
                    wait = wait.min(until.max(Duration::from_millis(5)));
                }
                Ok(None) => {}
                Err(Fenced) => {
                    tracing::warn!(scheduler = %me, "fenced out: another process holds the scheduler lease");
                    token = None;
                }
            }
        }
        // Wait a little past the tick, so the tick is due by our clock when we wake.
        tokio::select! {
            _ = tokio::time::sleep(wait + Duration::from_millis(2)) => {}
            _ = stop.cancelled() => break,
        }
    }
    if token.is_some() {
        // Leave the lease at once so another process takes over without waiting it out.
        let _ = store::release_lease(&engine, &me).await;
    }
}

/// The lease was taken over while firing.
struct Fenced;

/// Fire every due tick; returns the earliest next tick of all schedules.
async fn fire_due(engine: &Engine, schedules: &[ScheduleDef], me: &str, token: u64) -> Result<Option<u64>, Fenced> {
    let mut earliest: Option<u64> = None;
    for s in schedules.iter().filter(|s| s.cron.is_some()) {
        let last = match store::last_tick(engine, &s.name).await {
            Ok(v) => v,
            Err(_) => continue,
        };
        let now = now_ms();
        // A schedule seen for the first time starts from now: nothing before it was missed.
        let from = last.unwrap_or(now);
        let mut due = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t) {
            if next > now {
                break;
            }
            due.push(next);
            t = next;
            if due.len() > 10_000 {
                break;
            }
        }
        if due.len() > CATCH_UP {
            let skipped = due.len() - CATCH_UP;
            tracing::warn!(schedule = %s.name, skipped, "ticks missed while no scheduler ran; firing the latest {CATCH_UP}");
            due.drain(..skipped);
        }
        for tick in due {
            let next = s.next_after(tick).unwrap_or(0);
            let task = match engine.enqueue(s.task(Some(tick))).await {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(schedule = %s.name, error = %e, "could not queue a scheduled task; trying again");
                    break;
                }
            };
            match store::record_tick(engine, me, token, &s.name, tick, &task, next).await {
                Ok(true) => tracing::info!(schedule = %s.name, tick = %format_ms(tick), task_id = %task, "fired"),
                Ok(false) => return Err(Fenced),
                Err(_) => break,
            }
        }
        if last.is_none() {
            // Remember where this schedule starts, so a takeover knows what was missed.
            let next = s.next_after(now).unwrap_or(0);
            if let Ok(false) = store::record_tick(engine, me, token, &s.name, now, "", next).await {
                return Err(Fenced);
            }
        }
        if let Some(next) = s.next_after(now_ms()) {
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
    }
    Ok(earliest)
}

/// Every schedule as operators see it, and the process firing them. (Fields here and in
/// [`ScheduleStatus`] are in alphabetical order: that is the order clients of `GET /schedules`
/// have always been given them in.)
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// The process holding the scheduler's lease; `None` when no scheduler runs.
    pub leader: Option<String>,
    pub schedules: Vec<ScheduleStatus>,
}

/// A schedule as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleStatus {
    pub cron: String,
    pub enabled: bool,
    pub kind: String,
    /// The last task's state and result or error.
    pub last_result: Value,
    pub last_run: Option<String>,
    pub last_task_id: Option<String>,
    pub name: String,
    pub next_run: Option<String>,
}

/// Every schedule with its next run, last run and last result, and the lease holder.
pub async fn list(engine: &Engine, schedules: &[ScheduleDef]) -> Result<ScheduleList, EngineError> {
    let mut out = Vec::new();
    for s in schedules {
        let last = store::last_run(engine, &s.name).await?;
        let last_result = match &last.task {
            Some(id) => match engine.task_status(id).await? {
                Some(st) => {
                    json!({"status": st.status, "result": st.result, "error": st.error, "finished_at": st.finished_at})
                }
                None => json!({"status": "EXPIRED"}),
            },
            None => Value::Null,
        };
        out.push(ScheduleStatus {
            cron: s.expr.clone(),
            enabled: s.cron.is_some(),
            kind: s.kind.clone(),
            last_result,
            last_run: last.at_ms.map(format_ms),
            last_task_id: last.task,
            name: s.name.clone(),
            next_run: s.next_after(now_ms()).map(format_ms),
        });
    }
    Ok(ScheduleList { leader: store::lease_holder(engine).await?, schedules: out })
}

/// Queue a schedule's task now, outside its ticks; recorded as its last run.
pub async fn run_now(engine: &Engine, schedules: &[ScheduleDef], name: &str) -> Result<String, EngineError> {
    let s = schedules.iter().find(|s| s.name == name).ok_or_else(|| EngineError::NoSchedule(name.to_string()))?;
    let task = engine.enqueue(s.task(None)).await?;
    store::record_run(engine, name, now_ms(), &task).await?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_needs_a_seconds_field() {
        assert!(parse_cron("0 */5 * * * *").is_ok());
        assert!(parse_cron("*/5 * * * *").unwrap_err().contains("seconds field"));
        assert!(parse_cron("every minute").is_err());
    }

    #[test]
    fn ticks_follow_the_expression() {
        let d = ScheduleDef::new("r", "0 */5 * * * *", "diag.noop", Value::Null).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 10, 2, 30).unwrap().timestamp_millis() as u64;
        let next = d.next_after(t0).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).unwrap().timestamp_millis() as u64);
        assert_eq!(d.next_after(next).unwrap() - next, 300_000, "strictly after the tick itself");
        assert!(ScheduleDef::new("c", "off", "diag.noop", Value::Null).unwrap().next_after(t0).is_none());
    }

    /// `GET /schedules` answers this JSON: the same fields, in the same order.
    #[test]
    fn a_schedule_list_serializes_as_clients_know_it() {
        let list = ScheduleList {
            leader: Some("host-1-abcd".into()),
            schedules: vec![ScheduleStatus {
                cron: "0 */5 * * * *".into(),
                enabled: true,
                kind: "maintenance.cleanup".into(),
                last_result: json!({"status": "SUCCESS", "result": {"n": 1}, "error": null, "finished_at": "t"}),
                last_run: Some("2026-01-01T10:00:00.000Z".into()),
                last_task_id: Some("task-1".into()),
                name: "cleanup".into(),
                next_run: None,
            }],
        };
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            concat!(
                r#"{"leader":"host-1-abcd","schedules":[{"cron":"0 */5 * * * *","enabled":true,"kind":"maintenance.cleanup","#,
                r#""last_result":{"error":null,"finished_at":"t","result":{"n":1},"status":"SUCCESS"},"#,
                r#""last_run":"2026-01-01T10:00:00.000Z","last_task_id":"task-1","name":"cleanup","next_run":null}]}"#,
            )
        );
    }
}

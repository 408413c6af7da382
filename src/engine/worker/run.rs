//! Running one attempt: limits, panics, and the outcome to record.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::commit::{Done, Event, Failed, Start};
use super::{Delivery, Phase, Shared};
use crate::engine::registry::StopSignal;
use crate::engine::{Attempt, Outcome, StopReason, TaskContext, now_ms, now_us};

/// Start a backlog entry as a tokio task holding its capacity permits.
pub(super) fn spawn(sh: &Arc<Shared>, d: Delivery, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit)) {
    let stop = {
        let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match fl.get_mut(&d.id) {
            Some(f) => {
                f.phase = Phase::Running;
                f.delivery = Some(d.clone());
                f.stop.clone()
            }
            None => return,
        }
    };
    let id = d.id.clone();
    let handle = tokio::spawn(run(sh.clone(), d, permits, stop));
    if let Some(f) = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id)
        && f.phase == Phase::Running
    {
        f.abort = Some(handle.abort_handle());
    }
}

/// How an attempt ended, before it is turned into a record.
enum Ended {
    Outcome(Outcome),
    Panicked(String),
    HardLimit(Duration),
    Exhausted,
    UnknownKind,
}

async fn run(sh: Arc<Shared>, d: Delivery, permits: (OwnedSemaphorePermit, OwnedSemaphorePermit), stop: StopSignal) {
    if let Some((key, seq)) = &d.order
        && let Some(at) = wait_turn(&sh, key, *seq, &stop).await
    {
        drop(permits);
        let still_queued = match sh.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&d.id) {
            Some(f) if f.phase == Phase::Running => {
                f.phase = Phase::Committing;
                f.abort = None;
                true
            }
            _ => false,
        };
        if still_queued {
            sh.commit(defer(&d, at));
        }
        sh.wake.notify_one();
        return;
    }
    let attempt = d.attempt();
    let started_ms = now_ms();
    let t0 = Instant::now();
    if d.deliveries == 1 && d.base == 0 && d.at_us > 0 {
        let wait_us = now_us().saturating_sub(d.at_us);
        metrics::histogram!("switchyard_task_wait_seconds", "lane" => d.lane.as_str()).record(wait_us as f64 / 1e6);
        if let Some(w) = &sh.waits {
            let _ = w.lock().unwrap_or_else(|e| e.into_inner()).record(wait_us.max(1));
        }
    }
    sh.commit(Event::Start(Start { id: d.id.clone(), attempt, base: d.base, started_ms }));

    let ended = if d.deliveries > d.max {
        // Delivered more often than it may run: its workers keep dying on it. Do not run it again.
        Ended::Exhausted
    } else if stop.reason() == Some(StopReason::Revoked) {
        // Cancelled between the read and now: the record says REVOKED; do not start it.
        Ended::Outcome(Outcome::fail("cancelled before it started"))
    } else if let Some(reg) = sh.engine.registry().get(&d.kind) {
        let payload: Value = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
        let ctx = TaskContext {
            task_id: d.id.clone(),
            kind: d.kind.clone(),
            lane: d.lane,
            payload,
            attempt,
            stop: stop.clone(),
            engine: sh.engine.clone(),
        };
        let c = sh.engine.config();
        let (soft, hard) = (c.soft_time_limit, c.hard_time_limit);
        let fut = AssertUnwindSafe((reg.handler)(ctx)).catch_unwind();
        tokio::pin!(fut);
        let soft_timer = tokio::time::sleep(soft);
        let hard_timer = tokio::time::sleep(hard);
        tokio::pin!(soft_timer, hard_timer);
        let mut soft_fired = false;
        loop {
            tokio::select! {
                r = &mut fut => break match r {
                    Ok(o) => Ended::Outcome(o),
                    Err(p) => Ended::Panicked(panic_message(p)),
                },
                _ = &mut soft_timer, if !soft_fired => {
                    soft_fired = true;
                    stop.stop(StopReason::SoftLimit);
                }
                _ = &mut hard_timer => break Ended::HardLimit(hard),
            }
        }
    } else {
        Ended::UnknownKind
    };
    drop(permits);
    let elapsed = t0.elapsed();
    let event = record(&sh, &d, ended, started_ms, elapsed, stop.reason());
    // Shutdown may have handed this attempt back meanwhile: then that is its record.
    let still_running = match sh.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&d.id) {
        Some(f) if f.phase == Phase::Running => {
            f.phase = Phase::Committing;
            f.abort = None;
            true
        }
        _ => false,
    };
    if still_running {
        sh.commit(event);
    }
    sh.wake.notify_one();
}

/// How long an ordered task waits in place for the one before it before it gives its slot back.
const TURN_WAIT: Duration = Duration::from_millis(500);
/// When it gives its slot back, how long until it is looked at again (unless the one before it
/// waits out a retry: then until that retry is due).
const TURN_RECHECK: Duration = Duration::from_millis(200);

/// Wait for an ordered task's turn: `None` when it may run now, else the time (ms) to look again.
/// A stop request (cancel, shutdown) ends the wait: the attempt then goes its usual way.
async fn wait_turn(sh: &Shared, key: &str, seq: u64, stop: &StopSignal) -> Option<u64> {
    let deadline = Instant::now() + TURN_WAIT;
    let mut pause = Duration::from_millis(1);
    let mut con = sh.engine.conn();
    loop {
        if stop.reason().is_some() {
            return None;
        }
        let r: redis::RedisResult<Vec<u64>> = sh
            .engine
            .scripts()
            .turn
            .key(sh.engine.keys().order(key))
            .arg(sh.engine.keys().root())
            .arg(seq)
            .invoke_async(&mut con)
            .await;
        let retry_at = match r {
            Ok(v) if v.first() == Some(&1) => return None,
            Ok(v) => v.get(1).copied().unwrap_or(0),
            Err(e) => {
                tracing::debug!(error = %e, order_key = key, "could not check an ordered task's turn");
                0
            }
        };
        let now = now_ms();
        let recheck = now + TURN_RECHECK.as_millis() as u64;
        // The one before waits out a retry beyond this wait: no point holding the slot.
        if retry_at > now + TURN_WAIT.as_millis() as u64 || Instant::now() + pause > deadline {
            return Some(retry_at.max(recheck));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".into()
    }
}

fn attempt_json(
    sh: &Shared,
    d: &Delivery,
    started_ms: u64,
    elapsed: Duration,
    outcome: &str,
    error: Option<&str>,
) -> String {
    let a = Attempt {
        attempt: d.attempt(),
        worker: Some(sh.name.clone()),
        started_at: Some(started_ms),
        duration_ms: Some((elapsed.as_secs_f64() * 1e6).round() / 1e3),
        outcome: outcome.to_string(),
        error: error.map(str::to_string),
    };
    serde_json::to_string(&a).unwrap_or_else(|_| "{}".into())
}

/// Turn how the attempt ended into the record to write.
fn record(
    sh: &Shared,
    d: &Delivery,
    ended: Ended,
    started_ms: u64,
    elapsed: Duration,
    stop: Option<StopReason>,
) -> Event {
    if let Ended::Outcome(Outcome::Later(wait)) = &ended
        && stop.is_none()
    {
        return later(d, now_ms() + wait.as_millis() as u64, "asked to run again later");
    }
    let (retryable, label, error, asked) = match ended {
        Ended::Outcome(Outcome::Done(v)) => {
            let result = serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
            return Event::Done(Done {
                id: d.id.clone(),
                entry: d.entry.clone(),
                lane: d.lane,
                kind: d.kind.clone(),
                attempt: d.attempt(),
                base: d.base,
                result,
                attempt_json: attempt_json(sh, d, started_ms, elapsed, "success", None),
                run: elapsed,
            });
        }
        Ended::Outcome(Outcome::Retry { after, error }) => (true, "retry", error, after),
        Ended::Outcome(Outcome::Fail(error)) => (false, "failure", error, None),
        Ended::Outcome(Outcome::Later(_)) => (true, "retry", "stopped while waiting to run again".into(), None),
        Ended::Panicked(msg) => (true, "panic", format!("panic: {msg}"), None),
        Ended::HardLimit(limit) => {
            (true, "timeout", format!("hard time limit of {} exceeded", humantime::format_duration(limit)), None)
        }
        Ended::Exhausted => (
            false,
            "failure",
            format!("delivered {} times without a recorded outcome (its workers died); not run again", d.deliveries),
            None,
        ),
        Ended::UnknownKind => (false, "failure", format!("no handler registered for kind `{}`", d.kind), None),
    };
    if stop == Some(StopReason::Shutdown) {
        return handback(d, "worker shut down while it ran; handed back");
    }
    let (label, error) = match stop {
        Some(StopReason::Revoked) => ("revoked", format!("{error} (revoked)")),
        _ => (label, error),
    };
    let aj = attempt_json(sh, d, started_ms, elapsed, label, Some(&error));
    let retry_at = if retryable && d.deliveries < d.max {
        let delay = sh.engine.retry_policy(&d.kind).delay(d.attempt(), asked, fastrand::f64());
        now_ms() + delay.as_millis() as u64
    } else {
        0
    };
    Event::Failed(Failed {
        id: d.id.clone(),
        entry: d.entry.clone(),
        lane: d.lane,
        kind: d.kind.clone(),
        attempt: d.attempt(),
        attempt_json: aj,
        error,
        retry_at,
        next_state: "RETRY",
        deliveries: d.deliveries,
        run: elapsed,
        deferred: false,
    })
}

/// Put an ordered task back until `at` (ms): the task before it has not settled. Costs no attempt.
fn defer(d: &Delivery, at: u64) -> Event {
    later(d, at, "waiting for the task queued before it with the same order key")
}

/// Put a task back until `at` (ms) at no attempt cost, uncounted.
fn later(d: &Delivery, at: u64, why: &str) -> Event {
    let mut ev = handback(d, why);
    if let Event::Failed(f) = &mut ev {
        f.retry_at = at;
        f.deferred = true;
    }
    ev
}

/// Give an entry back without counting a failure against it: it is due again at once, for any
/// worker.
pub(super) fn handback(d: &Delivery, why: &str) -> Event {
    let a = Attempt {
        attempt: d.attempt(),
        worker: None,
        started_at: None,
        duration_ms: None,
        outcome: "interrupted".into(),
        error: Some(why.to_string()),
    };
    Event::Failed(Failed {
        id: d.id.clone(),
        entry: d.entry.clone(),
        lane: d.lane,
        kind: d.kind.clone(),
        attempt: d.attempt(),
        attempt_json: serde_json::to_string(&a).unwrap_or_else(|_| "{}".into()),
        error: why.to_string(),
        retry_at: now_ms(),
        next_state: "PENDING",
        deliveries: d.deliveries,
        run: Duration::ZERO,
        deferred: false,
    })
}

//! Running one attempt: limits, panics, and the outcome to record.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::commit::{Done, Event, Failed, Start};
use super::{Delivery, Phase, Shared, set_phase};
use crate::engine::registry::StopSignal;
use crate::engine::{Attempt, Outcome, StopReason, TaskContext, TaskState, now_ms, now_us};
use crate::telemetry::trace;

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
    // Every line logged while the attempt runs names it (with `LOG_FORMAT=json`, as fields).
    let span = tracing::info_span!(
        "task",
        task_id = %d.id,
        kind = %d.kind,
        lane = %d.lane,
        attempt = d.attempt(),
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    // Each attempt is a span of its own, a child of the enqueue its entry names.
    if d.traceparent.is_some() || trace::enabled() {
        trace::name(&span, || format!("run {}", d.kind), "consumer");
        trace::adopt(&span, d.traceparent.as_deref());
    }
    let handle = tokio::spawn(run(sh.clone(), d, permits, stop).instrument(span));
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
    let permits = match &d.order {
        None => permits,
        Some((key, seq)) => match wait_turn(&sh, &d, key, *seq, &stop, permits).await {
            Waited::Run(permits) => permits,
            Waited::Parked => {
                // Parked in Redis (or no longer ours): this worker holds it no more — unless it
                // was woken and claimed here meanwhile, as a new delivery.
                let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if fl.get(&d.id).is_some_and(|f| f.phase == Phase::Parking) {
                    fl.remove(&d.id);
                }
                drop(fl);
                sh.wake.notify_one();
                return;
            }
            Waited::Unparked => {
                // Redis did not take the parking: hand it back through the committer, which
                // retries until Redis has it.
                set_committing(&sh, &d.id);
                sh.commit(later(&d, now_ms() + 200, "waiting for the task queued before it with the same order key"));
                sh.wake.notify_one();
                return;
            }
        },
    };
    let attempt = d.attempt();
    let started_ms = now_ms();
    let t0 = Instant::now();
    if d.deliveries == 1 && d.base == 0 && d.at_us > 0 {
        let wait_us = now_us().saturating_sub(d.at_us);
        metrics::histogram!("switchyard_task_wait_seconds", "lane" => d.lane.as_str()).record(wait_us as f64 / 1e6);
        sh.stats.wait(d.lane, &d.kind, wait_us);
        if let Some(w) = &sh.waits {
            let _ = w.lock().unwrap_or_else(|e| e.into_inner()).record(wait_us.max(1));
        }
    }
    sh.commit(Event::Start(Start {
        part: d.part,
        id: d.id.clone(),
        kind: d.kind.clone(),
        lane: d.lane,
        attempt,
        base: d.base,
        started_ms,
        payload: d.payload.clone(),
        first: d.first_fields(),
    }));

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

/// Why an attempt stopped for want of a renewed claim was handed back.
pub(super) const UNRENEWED: &str = "the worker could not renew its claim (Redis unreachable); handed back";

/// How long an ordered task waits here for the one before it before it is parked in Redis.
const TURN_WAIT: Duration = Duration::from_millis(250);
/// Longest pause between two looks while waiting (a commit of the same key here wakes it sooner).
const TURN_POLL: Duration = Duration::from_millis(20);
/// A parked task is looked at again after this long even if nothing woke it (a safety net: the
/// task before it settling wakes it).
const PARKED_AT_MOST: Duration = Duration::from_secs(5);

type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

enum Waited {
    /// Its turn: run, with these slots.
    Run(Permits),
    /// Parked in Redis, or no longer this worker's.
    Parked,
    /// Could not be parked (Redis unreachable).
    Unparked,
}

fn set_committing(sh: &Shared, id: &str) {
    if let Some(f) = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
        f.phase = Phase::Committing;
        f.abort = None;
    }
}

/// Wait for an ordered task's turn: its slot back when it may run, else parked.
///
/// The common case is one look: the task before it has settled. Otherwise the task waits here a
/// little — holding none of the worker's slots (the one before it may need one), only one of its
/// waiting places, and woken at once when a task of the same key is recorded by this worker —
/// and then, or at once when no waiting place is free, it is parked in Redis: handed back at no
/// attempt cost and due again as soon as a task of its key settles anywhere (turn.lua, wake.lua).
/// A stop request (cancel, shutdown) ends the wait: the attempt then goes its usual way.
async fn wait_turn(sh: &Shared, d: &Delivery, key: &str, seq: u64, stop: &StopSignal, permits: Permits) -> Waited {
    let mut con = sh.engine.conn();
    if turn(sh, &mut con, d, key, seq, false).await == Turn::Go {
        return Waited::Run(permits);
    }
    drop(permits);
    sh.wake.notify_one();
    let ready = match sh.waiting.clone().try_acquire_owned() {
        Ok(_place) => {
            let bell = sh.turn_bell(key);
            let deadline = Instant::now() + TURN_WAIT;
            let mut pause = Duration::from_millis(1);
            let ready = loop {
                tokio::select! {
                    _ = bell.notified() => {}
                    _ = tokio::time::sleep(pause) => pause = (pause * 2).min(TURN_POLL),
                    // Cancelled: run on, so the attempt is recorded REVOKED. Any other stop
                    // (shutdown, a lost claim) parks it: handed back, or found not ours.
                    _ = stop.token().cancelled() => break stop.reason() == Some(StopReason::Revoked),
                }
                if turn(sh, &mut con, d, key, seq, false).await == Turn::Go {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
            };
            drop(bell);
            sh.forget_turn_bell(key);
            ready
        }
        Err(_) => false,
    };
    if !ready {
        // From here on a claim of this entry (woken the moment it is parked) replaces it here.
        set_phase(sh, &d.id, Phase::Parking);
        match turn(sh, &mut con, d, key, seq, true).await {
            Turn::Go => set_phase(sh, &d.id, Phase::Running),
            Turn::Gone => return Waited::Parked,
            Turn::Wait | Turn::Error => {
                set_phase(sh, &d.id, Phase::Running);
                return Waited::Unparked;
            }
        }
    }
    // Its turn: take a slot again, as any task does.
    match (sh.pool.clone().acquire_owned().await, sh.lane_limits[d.lane.index()].clone().acquire_owned().await) {
        (Ok(pool), Ok(lane)) => Waited::Run((pool, lane)),
        _ => Waited::Unparked,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Go,
    Wait,
    /// Parked in Redis, or the entry is not this worker's any more.
    Gone,
    Error,
}

/// One look at the task's turn; with `park`, a task that may not run yet is parked.
async fn turn(sh: &Shared, con: &mut crate::redis::Conn, d: &Delivery, key: &str, seq: u64, park: bool) -> Turn {
    let keys = sh.engine.part(d.part);
    let mut inv = sh.engine.scripts().turn.prepare_invoke();
    inv.key(keys.order(key))
        .key(keys.order_parked(key))
        .key(keys.lane(d.lane))
        .key(keys.retry(d.lane))
        .arg(keys.root())
        .arg(seq);
    if park {
        inv.arg("1")
            .arg(d.lane.as_str())
            .arg(&d.entry)
            .arg(&sh.name)
            .arg(crate::redis::GROUP)
            .arg(d.deliveries.saturating_sub(1))
            .arg(now_ms() + PARKED_AT_MOST.as_millis() as u64)
            .arg(sh.engine.order_ttl().as_millis() as u64);
    } else {
        inv.arg("");
    }
    let r: redis::RedisResult<Vec<u64>> = inv.invoke_async(con).await;
    match r {
        Ok(v) if v.first() == Some(&1) => Turn::Go,
        Ok(v) if matches!(v.first(), Some(2 | 3)) => Turn::Gone,
        Ok(_) => Turn::Wait,
        Err(e) => {
            tracing::debug!(error = %e, order_key = key, "could not look at an ordered task's turn");
            Turn::Error
        }
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
        && stop != Some(StopReason::Revoked)
    {
        return later(d, now_ms() + wait.as_millis() as u64, "asked to run again later");
    }
    let (retryable, label, error, asked) = match ended {
        Ended::Outcome(Outcome::Done(v)) => {
            let result = serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
            return Event::Done(Done {
                part: d.part,
                order_key: d.order.as_ref().map(|o| o.0.clone()),
                id: d.id.clone(),
                entry: d.entry.clone(),
                lane: d.lane,
                kind: d.kind.clone(),
                attempt: d.attempt(),
                base: d.base,
                result,
                attempt_json: attempt_json(sh, d, started_ms, elapsed, "success", None),
                run: elapsed,
                payload: String::new(),
                first: None,
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
    match stop {
        Some(StopReason::Shutdown) => return handback(d, "worker shut down while it ran; handed back"),
        Some(StopReason::Unrenewed) => return handback(d, UNRENEWED),
        _ => {}
    }
    let (label, error) = match stop {
        Some(StopReason::Revoked) => ("revoked", format!("{error} (revoked)")),
        _ => (label, error),
    };
    trace::failed(&tracing::Span::current(), &error);
    let aj = attempt_json(sh, d, started_ms, elapsed, label, Some(&error));
    let retry_at = if retryable && d.deliveries < d.max {
        let delay = sh.engine.retry_policy(&d.kind).delay(d.attempt(), asked, fastrand::f64());
        now_ms() + delay.as_millis() as u64
    } else {
        0
    };
    Event::Failed(Failed {
        part: d.part,
        order_key: d.order.as_ref().map(|o| o.0.clone()),
        id: d.id.clone(),
        entry: d.entry.clone(),
        lane: d.lane,
        kind: d.kind.clone(),
        attempt: d.attempt(),
        attempt_json: aj,
        error,
        retry_at,
        next_state: TaskState::Retry,
        deliveries: d.deliveries,
        run: elapsed,
        deferred: false,
        trace_id: d.trace_id().map(str::to_string),
    })
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
        part: d.part,
        order_key: d.order.as_ref().map(|o| o.0.clone()),
        id: d.id.clone(),
        entry: d.entry.clone(),
        lane: d.lane,
        kind: d.kind.clone(),
        attempt: d.attempt(),
        attempt_json: serde_json::to_string(&a).unwrap_or_else(|_| "{}".into()),
        error: why.to_string(),
        retry_at: now_ms(),
        next_state: TaskState::Pending,
        deliveries: d.deliveries,
        run: Duration::ZERO,
        deferred: false,
        trace_id: d.trace_id().map(str::to_string),
    })
}

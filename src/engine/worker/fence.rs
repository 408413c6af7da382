//! Self-fencing: work whose claim this worker could not renew is stopped before another worker
//! may take it.
//!
//! Another worker reclaims an entry once it has been idle for the visibility timeout, counted
//! from the last request of ours that reset its idle time (the read or claim that delivered it,
//! a renewal). When renewals fail — Redis out of reach, a link that drops or holds every packet —
//! this worker cannot know whether that has happened, so it acts on its own clock: 60 % of the
//! way through (renewals go every third of it, so at least one was missed), a running attempt is
//! asked to stop; at 75 %, one that has not stopped is abandoned (its future dropped); either way it is handed back at no attempt cost (the record reaches
//! Redis when Redis is back, and counts only if the entry is still ours). An entry still waiting
//! in the backlog is handed back without starting. So an attempt never runs on while the same
//! task runs elsewhere, and a worker behind a faulty link lets go of its work by itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Delivery, Phase, Shared, run};
use crate::engine::StopReason;

/// Share of the visibility timeout after which a running attempt is asked to stop.
const STOP_AT: f64 = 0.6;
/// Share after which an attempt that has not stopped is abandoned. With the loop's period
/// (1/40 of the timeout) it is gone before 80 %, and another worker reclaims only past 100 %:
/// a fifth of the timeout to spare for a process slow to run its timers.
const ABANDON_AT: f64 = 0.75;

pub(super) async fn fence_loop(sh: Arc<Shared>, stop: CancellationToken) {
    let vt = sh.engine.config().visibility_timeout;
    let every = (vt / 40).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        fence(&sh, vt, Instant::now());
    }
}

/// Stop, abandon or hand back what `now` is too late to keep.
fn fence(sh: &Shared, vt: Duration, now: Instant) {
    let (stop_after, abandon_after) = (vt.mul_f64(STOP_AT), vt.mul_f64(ABANDON_AT));
    let mut abandoned: Vec<Delivery> = Vec::new();
    let mut queued: HashSet<String> = HashSet::new();
    {
        let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for (id, f) in fl.iter_mut() {
            let age = now.saturating_duration_since(f.since);
            if age < stop_after {
                continue;
            }
            match f.phase {
                Phase::Queued => {
                    queued.insert(id.clone());
                }
                Phase::Running if age >= abandon_after => {
                    if let Some(a) = f.abort.take() {
                        a.abort();
                    }
                    f.phase = Phase::Committing;
                    abandoned.extend(f.delivery.take());
                }
                Phase::Running => {
                    if f.stop.reason().is_none()
                        && let Some(d) = &f.delivery
                    {
                        tracing::warn!(task_id = %id, kind = %d.kind, lane = %f.lane, attempt = d.attempt(), trace_id = d.trace_id(), "claim not renewed for most of the visibility timeout; stopping the task and handing it back");
                    }
                    f.stop.stop(StopReason::Unrenewed);
                }
                // Its outcome is on its way; parking hands it back by itself.
                Phase::Committing | Phase::Parking => {}
            }
        }
    }
    if !queued.is_empty() {
        let mut taken = Vec::new();
        {
            let mut b = sh.backlog.lock().unwrap_or_else(|e| e.into_inner());
            for lane in b.iter_mut() {
                let (stale, keep): (Vec<_>, Vec<_>) = lane.drain(..).partition(|d| queued.contains(&d.id));
                *lane = keep.into();
                taken.extend(stale);
            }
        }
        let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for d in &taken {
            if let Some(f) = fl.get_mut(&d.id) {
                f.phase = Phase::Committing;
            }
        }
        drop(fl);
        for d in taken {
            sh.commit(run::handback(&d, run::UNRENEWED));
        }
    }
    for d in abandoned {
        tracing::warn!(task_id = %d.id, kind = %d.kind, lane = %d.lane, attempt = d.attempt(), trace_id = d.trace_id(), "task did not stop before its claim could be taken; abandoned and handed back");
        sh.commit(run::handback(&d, run::UNRENEWED));
    }
    sh.wake.notify_one();
}

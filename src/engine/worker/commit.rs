//! Writing starts and outcomes: everything that happened since the last write goes to Redis in
//! one pipelined round trip (up to three script calls). Entries leave the in-flight table only
//! once their outcome is stored, so their claims are renewed until then.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;

use super::{Backoff, Shared};
use crate::engine::stats::Counted;
use crate::engine::{Lane, StopReason, TaskEvent, TaskState, now_ms};
use crate::redis::GROUP;
use crate::redis::scripts::is_noscript;

/// Most events written in one round trip.
const MAX_BATCH: usize = 1024;

pub(crate) struct Start {
    pub part: usize,
    pub id: String,
    pub kind: String,
    pub lane: Lane,
    pub attempt: u32,
    pub base: u32,
    pub started_ms: u64,
    /// Copied into the record: a queued task's payload is in its entry only.
    pub payload: String,
    /// For a task with no record yet: what its first start writes from the entry.
    pub first: Option<FirstFields>,
}

/// The fields of a record that come from the task's entry, written by the first start of a task
/// that has no record yet (a new task without an order key).
#[derive(Clone)]
pub(crate) struct FirstFields {
    pub kind: String,
    pub lane: Lane,
    pub entry: String,
    pub max: u32,
}

pub(crate) struct Done {
    pub part: usize,
    pub id: String,
    /// Its order key, for ordered tasks: waiters of that key are woken once it is stored.
    pub order_key: Option<String>,
    pub entry: String,
    pub lane: Lane,
    pub kind: String,
    pub attempt: u32,
    /// Attempts made before this entry existed.
    pub base: u32,
    pub result: String,
    pub attempt_json: String,
    pub run: Duration,
    /// Copied into the record when its start was not written (see `split`); empty otherwise.
    pub payload: String,
    /// What that start would have written into a record that does not exist yet.
    pub first: Option<FirstFields>,
}

pub(crate) struct Failed {
    pub part: usize,
    pub id: String,
    pub order_key: Option<String>,
    pub entry: String,
    pub lane: Lane,
    pub kind: String,
    pub attempt: u32,
    pub attempt_json: String,
    pub error: String,
    /// When the next attempt is due (ms); 0 sends the task to the DLQ.
    pub retry_at: u64,
    /// `RETRY`, or `PENDING` for work handed back.
    pub next_state: TaskState,
    /// Times the entry was delivered, this attempt's delivery included.
    pub deliveries: u32,
    pub run: Duration,
    /// An ordered task put back to wait for its turn: not an outcome, not counted.
    pub deferred: bool,
    /// The trace its entry names, for the log lines about it.
    pub trace_id: Option<String>,
}

pub(crate) enum Event {
    Start(Start),
    Done(Done),
    Failed(Failed),
    /// No more events will come: write what is left and stop.
    Close,
}

pub(super) async fn commit_loop(sh: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut con = sh.engine.conn();
    let mut closing = false;
    while !closing {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Vec::with_capacity(64);
        match first {
            Event::Close => closing = true,
            ev => batch.push(ev),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Event::Close) => closing = true,
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        // Once the worker is stopping, Redis gets a bounded time to take the last outcomes; what
        // it cannot take stays pending there and is reclaimed by another worker.
        let deadline = closing.then(|| std::time::Instant::now() + GIVE_UP_AFTER_CLOSE);
        write_until_stored(&sh, &mut con, batch, deadline).await;
    }
}

/// How long a stopping worker keeps trying to record its last outcomes.
const GIVE_UP_AFTER_CLOSE: Duration = Duration::from_secs(10);

/// Write a batch, retrying while Redis is away: an outcome is never dropped while the worker
/// runs. At shutdown (`deadline`) the process may give up: the entries are still pending in
/// Redis, so another worker runs them again after the visibility timeout — late, never lost.
async fn write_until_stored(
    sh: &Arc<Shared>,
    con: &mut crate::redis::Conn,
    batch: Vec<Event>,
    deadline: Option<std::time::Instant>,
) {
    let (starts, dones, fails) = split(batch);
    let mut groups = by_part(starts, dones, fails);
    if groups.len() == 1 {
        let (part, starts, dones, fails) = groups.remove(0);
        return write_part_until_stored(sh, con, part, starts, dones, fails, deadline).await;
    }
    // A pipeline may not span slots: one per partition, all on their way at once.
    let writes = groups.into_iter().map(|(part, starts, dones, fails)| {
        let mut con = con.clone();
        async move { write_part_until_stored(sh, &mut con, part, starts, dones, fails, deadline).await }
    });
    futures_util::future::join_all(writes).await;
}

/// Events grouped by partition.
type PartEvents = (usize, Vec<Start>, Vec<Done>, Vec<Failed>);

fn by_part(starts: Vec<Start>, dones: Vec<Done>, fails: Vec<Failed>) -> Vec<PartEvents> {
    fn of(groups: &mut Vec<PartEvents>, part: usize) -> &mut PartEvents {
        let i = match groups.iter().position(|g| g.0 == part) {
            Some(i) => i,
            None => {
                groups.push((part, Vec::new(), Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        &mut groups[i]
    }
    let mut groups: Vec<PartEvents> = Vec::new();
    for s in starts {
        of(&mut groups, s.part).1.push(s);
    }
    for d in dones {
        of(&mut groups, d.part).2.push(d);
    }
    for f in fails {
        of(&mut groups, f.part).3.push(f);
    }
    if groups.is_empty() {
        groups.push((0, Vec::new(), Vec::new(), Vec::new()));
    }
    groups
}

/// [`write_until_stored`] for the events of one partition.
async fn write_part_until_stored(
    sh: &Arc<Shared>,
    con: &mut crate::redis::Conn,
    part: usize,
    starts: Vec<Start>,
    dones: Vec<Done>,
    fails: Vec<Failed>,
    deadline: Option<std::time::Instant>,
) {
    let mut backoff = Backoff::new();
    loop {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            tracing::error!(
                events = starts.len() + dones.len() + fails.len(),
                "Redis did not take the last outcomes before shutdown; their tasks will be reclaimed and run again"
            );
            return;
        }
        match write(sh, con, part, &starts, &dones, &fails).await {
            Ok(replies) => {
                after_write(sh, &starts, &dones, &fails, replies);
                return;
            }
            Err(e) if is_noscript(&e) => {
                if let Err(e) = sh.engine.scripts().load_all(con).await {
                    tracing::warn!(error = %e, "could not load scripts");
                    tokio::time::sleep(backoff.fail()).await;
                }
            }
            Err(e) => {
                let wait = backoff.fail();
                tracing::warn!(error = %e, events = starts.len() + dones.len() + fails.len(), wait_ms = wait.as_millis() as u64,
                    "recording task outcomes failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Starts whose attempt also finished in this batch are dropped: the finish writes the start
/// time too, and one write per task is the common case under load. Such a finish also carries
/// the payload the start would have copied into the record; any other finish leaves it out
/// (its start, written earlier, copied it).
fn split(batch: Vec<Event>) -> (Vec<Start>, Vec<Done>, Vec<Failed>) {
    let mut starts = Vec::new();
    let mut dones = Vec::new();
    let mut fails = Vec::new();
    for ev in batch {
        match ev {
            Event::Start(s) => starts.push(s),
            Event::Done(d) => dones.push(d),
            Event::Failed(f) => fails.push(f),
            Event::Close => {}
        }
    }
    if !dones.is_empty() {
        let finished: std::collections::HashMap<(&str, u32), usize> =
            dones.iter().enumerate().map(|(i, d)| ((d.id.as_str(), d.attempt), i)).collect();
        let mut carried = Vec::new();
        starts.retain_mut(|s| match finished.get(&(s.id.as_str(), s.attempt)) {
            Some(&i) => {
                carried.push((i, std::mem::take(&mut s.payload), s.first.take()));
                false
            }
            None => true,
        });
        for (i, payload, first) in carried {
            dones[i].payload = payload;
            dones[i].first = first;
        }
    }
    (starts, dones, fails)
}

struct Replies {
    started: Vec<i64>,
    finished: Vec<String>,
    failed: Vec<String>,
}

async fn write(
    sh: &Shared,
    con: &mut crate::redis::Conn,
    part: usize,
    starts: &[Start],
    dones: &[Done],
    fails: &[Failed],
) -> redis::RedisResult<Replies> {
    let keys = sh.engine.part(part);
    let scripts = sh.engine.scripts();
    let c = sh.engine.config();
    let now = now_ms();
    let ttl = c.task_retention.as_millis() as u64;
    let mut pipe = redis::pipe();
    let start_inv;
    let finish_inv;
    let fail_inv;
    if !starts.is_empty() {
        let mut inv = scripts.start.prepare_invoke();
        inv.key(keys.revoked()).arg(keys.root()).arg(&sh.name);
        for s in starts {
            inv.arg(&s.id).arg(s.attempt).arg(s.base).arg(s.started_ms).arg(&s.payload);
            first_fields(&mut inv, s.first.as_ref());
        }
        start_inv = inv;
        pipe.invoke_script(&start_inv);
    }
    if !dones.is_empty() {
        let mut inv = scripts.finish.prepare_invoke();
        let success_ttl = c.success_retention.unwrap_or(c.task_retention).as_millis() as u64;
        inv.key(keys.revoked()).arg(keys.root()).arg(GROUP).arg(now).arg(ttl).arg(&sh.name).arg(success_ttl);
        inv.arg(sh.engine.history_cap());
        for d in dones {
            inv.key(keys.lane(d.lane));
            inv.arg(&d.id)
                .arg(&d.entry)
                .arg(d.attempt)
                .arg(&d.result)
                .arg(&d.attempt_json)
                .arg(d.base)
                .arg(d.order_key.as_deref().unwrap_or(""))
                .arg(&d.payload);
            first_fields(&mut inv, d.first.as_ref());
            // The finished record leaves out the lane when the task's id names an entry of it.
            let named = crate::engine::entry_of_task(&d.id).is_some_and(|(_, lane, _)| lane == d.lane);
            inv.arg(&d.kind).arg(if named { "" } else { d.lane.as_str() });
        }
        finish_inv = inv;
        pipe.invoke_script(&finish_inv);
    }
    if !fails.is_empty() {
        let mut inv = scripts.fail.prepare_invoke();
        inv.key(keys.dlq()).key(keys.dlq_lanes());
        inv.arg(keys.root()).arg(GROUP).arg(now).arg(ttl).arg(c.dlq_max).arg(&sh.name).arg(sh.engine.history_cap());
        for f in fails {
            inv.key(keys.lane(f.lane)).key(keys.retry(f.lane));
            inv.arg(&f.id)
                .arg(&f.entry)
                .arg(f.attempt)
                .arg(&f.attempt_json)
                .arg(&f.error)
                .arg(f.retry_at)
                .arg(f.next_state.as_str())
                .arg(f.deliveries.saturating_sub(1))
                .arg(f.order_key.as_deref().unwrap_or(""));
        }
        fail_inv = inv;
        pipe.invoke_script(&fail_inv);
    }
    let values: Vec<Value> = pipe.query_async(con).await?;
    let mut it = values.into_iter();
    let mut next = |present: bool| if present { it.next() } else { None };
    let as_vec = |v: Option<Value>| -> Vec<Value> {
        match v {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        }
    };
    let started = as_vec(next(!starts.is_empty())).iter().map(|v| crate::redis::reply::value_u64(v) as i64).collect();
    let finished = as_vec(next(!dones.is_empty())).iter().filter_map(crate::redis::reply::value_str).collect();
    let failed = as_vec(next(!fails.is_empty())).iter().filter_map(crate::redis::reply::value_str).collect();
    Ok(Replies { started, finished, failed })
}

/// Tell the listeners of these tasks what the write did: each start that may run, each success
/// with its result, each retry, death and hand-back (a cancel tells its own; a task that lost a
/// race to another attempt tells nothing).
fn publish(sh: &Shared, starts: &[Start], dones: &[Done], fails: &[Failed], r: &Replies) {
    let at = crate::engine::format_ms(now_ms());
    let mut events = Vec::with_capacity(starts.len() + 2 * dones.len() + fails.len());
    for (s, may_run) in starts.iter().zip(&r.started) {
        if *may_run == 1 {
            let mut e = TaskEvent::state(&s.id, &s.kind, Some(s.lane), TaskState::Started, &at);
            e.attempt = Some(s.attempt);
            events.push(e);
        }
    }
    for (d, outcome) in dones.iter().zip(&r.finished) {
        if TaskState::parse(outcome) == Some(TaskState::Success) {
            if !d.payload.is_empty() {
                // its start was left to this write (`split`): it started all the same
                let mut e = TaskEvent::state(&d.id, &d.kind, Some(d.lane), TaskState::Started, &at);
                e.attempt = Some(d.attempt);
                events.push(e);
            }
            let mut e = TaskEvent::state(&d.id, &d.kind, Some(d.lane), TaskState::Success, &at);
            e.attempt = Some(d.attempt);
            e.result = serde_json::from_str::<&serde_json::value::RawValue>(&d.result).ok().map(Cow::Borrowed);
            events.push(e);
        }
    }
    for (f, outcome) in fails.iter().zip(&r.failed) {
        let state = TaskState::parse(outcome);
        let Some(state) = state.filter(|s| matches!(s, TaskState::Retry | TaskState::Failure | TaskState::Pending))
        else {
            continue;
        };
        if f.deferred {
            continue;
        }
        let mut e = TaskEvent::state(&f.id, &f.kind, Some(f.lane), state, &at);
        e.attempt = Some(f.attempt);
        if state != TaskState::Pending {
            e.error = Some(Cow::Borrowed(&f.error));
        }
        if state == TaskState::Retry {
            e.retry_at = Some(crate::engine::format_ms(f.retry_at));
        }
        events.push(e);
    }
    sh.engine.publish_events(&events);
}

/// kind, lane, entry and max attempts, or four empty arguments.
fn first_fields(inv: &mut redis::ScriptInvocation<'_>, first: Option<&FirstFields>) {
    match first {
        Some(f) => inv.arg(&f.kind).arg(f.lane.as_str()).arg(&f.entry).arg(f.max),
        None => inv.arg("").arg("").arg("").arg(""),
    };
}

fn after_write(sh: &Shared, starts: &[Start], dones: &[Done], fails: &[Failed], r: Replies) {
    publish(sh, starts, dones, fails, &r);
    for (s, may_run) in starts.iter().zip(&r.started) {
        if *may_run == 0 {
            sh.stop_task(&s.id, StopReason::Revoked);
        }
    }
    let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    for (d, outcome) in dones.iter().zip(&r.finished) {
        fl.remove(&d.id);
        // the script answers a state, or STALE when another attempt settled the task first
        let label = match TaskState::parse(outcome) {
            Some(TaskState::Success) => "success",
            Some(TaskState::Revoked) => "revoked",
            _ => "stale",
        };
        metrics::counter!("switchyard_tasks_finished_total", "lane" => d.lane.as_str(), "kind" => d.kind.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("switchyard_task_run_seconds", "lane" => d.lane.as_str(), "kind" => d.kind.clone())
            .record(d.run.as_secs_f64());
        let counted = match label {
            "success" => Counted::Succeeded,
            "revoked" => Counted::Revoked,
            _ => Counted::Nothing,
        };
        sh.stats.outcome(d.lane, &d.kind, counted, d.run.as_micros() as u64);
    }
    for (f, outcome) in fails.iter().zip(&r.failed) {
        fl.remove(&f.id);
        if f.retry_at > 0 {
            // Its next attempt is looked for when due, not at the next idle round.
            sh.claim_later(f.part, f.lane, f.retry_at, false);
        }
        if f.deferred {
            continue;
        }
        let label = match TaskState::parse(outcome) {
            Some(TaskState::Retry) => "retry",
            Some(TaskState::Failure) => "failure",
            Some(TaskState::Revoked) => "revoked",
            Some(TaskState::Pending) => "handed_back",
            _ => "stale",
        };
        if label == "failure" {
            tracing::warn!(task_id = %f.id, kind = %f.kind, lane = %f.lane, attempt = f.attempt, trace_id = f.trace_id.as_deref(), error = %f.error, "task failed for good; moved to the dead-letter queue");
        }
        metrics::counter!("switchyard_tasks_finished_total", "lane" => f.lane.as_str(), "kind" => f.kind.clone(), "outcome" => label)
            .increment(1);
        if f.run > Duration::ZERO {
            metrics::histogram!("switchyard_task_run_seconds", "lane" => f.lane.as_str(), "kind" => f.kind.clone())
                .record(f.run.as_secs_f64());
        }
        let counted = match label {
            "retry" => Counted::Retried,
            "failure" => Counted::Failed,
            "revoked" => Counted::Revoked,
            _ => Counted::Nothing,
        };
        sh.stats.outcome(f.lane, &f.kind, counted, f.run.as_micros() as u64);
    }
    drop(fl);
    for key in
        dones.iter().filter_map(|d| d.order_key.as_deref()).chain(fails.iter().filter_map(|f| f.order_key.as_deref()))
    {
        sh.ring_turn_bell(key);
    }
    let deferred = fails.iter().filter(|f| f.deferred).count();
    sh.completed.fetch_add((dones.len() + fails.len() - deferred) as u64, Ordering::Relaxed);
    sh.wake.notify_one();
}

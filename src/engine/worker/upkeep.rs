//! Everything a worker does besides reading new entries: taking due retries and dead workers'
//! entries, renewing its own claims, heartbeats, and hearing cancellations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Delivery, Shared};
use crate::engine::{Lane, StopReason, TaskState, now_ms};
use crate::redis::GROUP;
use crate::redis::reply::{value_str, value_u64};
use crate::redis::scripts::is_noscript;

/// How often the upkeep loop wakes, and so how late a retry this worker scheduled can start.
const CLAIM_EVERY: Duration = Duration::from_millis(100);
/// How often a lane of a partition is looked at for due retries when this worker knows of none
/// due sooner (another worker may have scheduled one): idle, a worker costs Redis a few
/// commands a second per partition, not dozens.
const CLAIM_IDLE_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often the paused lanes are read: a lane paused or resumed takes effect within a second.
const PAUSED_EVERY: Duration = Duration::from_millis(500);
/// How often the per-kind figures go to Redis.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Consumers idle this long with nothing pending are removed from the group.
const DEAD_CONSUMER_AFTER: Duration = Duration::from_secs(3600);
/// Heartbeats older than this are removed from the workers list.
const STALE_HEARTBEAT: Duration = Duration::from_secs(300);

/// Runs until `stop`; once `reading` is cancelled (shutdown) it claims nothing new but keeps
/// renewing what the worker still holds.
pub(super) async fn upkeep_loop(sh: Arc<Shared>, reading: CancellationToken, stop: CancellationToken) {
    let vt = sh.engine.config().visibility_timeout;
    let renew_every = sh.engine.config().claim_renewal_interval();
    let scan_every = (vt / 4).max(Duration::from_millis(100));
    let mut con = sh.engine.conn();
    let mut last_renew = Instant::now();
    let mut last_scan = Instant::now() - scan_every;
    let mut last_beat = Instant::now() - HEARTBEAT_EVERY;
    let mut last_prune = Instant::now();
    let mut last_flush = Instant::now();
    let mut last_paused = Instant::now();
    let mut backoff = Backoff::new();
    let started = now_ms();
    // Rung by an order key's task recorded here: every place is looked at, not only those due.
    let mut woken = false;
    loop {
        let mut wait = CLAIM_EVERY;
        let result: redis::RedisResult<()> = async {
            if last_renew.elapsed() >= renew_every {
                renew(&sh, &mut con).await?;
                last_renew = Instant::now();
            }
            if last_paused.elapsed() >= PAUSED_EVERY {
                if let Err(e) = sh.refresh_paused().await {
                    tracing::debug!(error = %e, "could not read the paused lanes");
                }
                last_paused = Instant::now();
            }
            let gate = sh.claim_gate.lock().await;
            if !reading.is_cancelled() {
                let scan = last_scan.elapsed() >= scan_every;
                claim(&sh, &mut con, scan, std::mem::take(&mut woken)).await?;
                if scan {
                    last_scan = Instant::now();
                }
            }
            drop(gate);
            if last_flush.elapsed() >= STATS_EVERY {
                sh.stats.flush(&sh.engine, &sh.name).await?;
                last_flush = Instant::now();
            }
            if last_beat.elapsed() >= HEARTBEAT_EVERY {
                heartbeat(&sh, &mut con, started).await?;
                if sh.engine.config().worker_partitions == crate::config::WorkerPartitions::Balanced
                    && let Err(e) = super::share::refresh(&sh).await
                {
                    tracing::debug!(error = %e, "could not work out this worker's partitions; keeping the last share");
                }
                check_revoked(&sh, &mut con).await?;
                last_beat = Instant::now();
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                prune(&sh, &mut con).await?;
                last_prune = Instant::now();
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => backoff.reset(),
            Err(e) if is_noscript(&e) => {
                let _ = sh.engine.scripts().load_all(&mut con).await;
            }
            Err(e) if crate::redis::is_nogroup(&e) => {
                let _ = sh.engine.ensure_groups().await;
            }
            Err(e) => {
                wait = backoff.fail();
                tracing::debug!(error = %e, "worker upkeep failed; retrying");
            }
        }
        // A retry or a task queued for later due before the next round is looked at on time.
        if let Some(at) = sh.next_look() {
            wait = wait.min(Duration::from_millis(at.saturating_sub(now_ms())));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sh.claim_now.notified() => woken = true,
            _ = sh.later_now.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Claim due retries and (when `scan`) entries of dead workers, up to this worker's free room.
/// A place (a lane of a partition) is looked at when a retry this worker knows of is due there,
/// at least every [`CLAIM_IDLE_EVERY`], and always when `scan` or `all`.
async fn claim(sh: &Arc<Shared>, con: &mut crate::redis::Conn, scan: bool, all: bool) -> redis::RedisResult<()> {
    let c = sh.engine.config();
    let now = now_ms();
    // Due retries of the partitions this worker reads; with `scan`, of every partition, and
    // the entries of workers that died.
    // A paused lane's are left where they are until it is resumed.
    for (part, lane) in sh.places().into_iter().filter(|&(p, l)| (scan || sh.reads(l, p)) && !sh.is_paused(l)) {
        let room = sh.lane_free(lane).saturating_sub(sh.backlog_len(lane)).min(sh.opts.batch);
        // Tasks queued for later are moved onto the lane when due even with no room here (they
        // queue there like any new entry); retries and dead workers' entries wait for room.
        let later = sh.later_due(part, lane, now);
        let claims = room > 0 && (scan || all || sh.claim_due(part, lane, now));
        if !(claims || later) {
            continue;
        }
        let room = if claims { room } else { 0 };
        let vt = if scan { c.visibility_timeout.as_millis() as u64 } else { 0 };
        let keys = sh.engine.part(part);
        let sent = Instant::now();
        let v: Value = sh
            .engine
            .scripts()
            .claim
            .key(keys.lane(lane))
            .key(keys.retry(lane))
            .key(keys.later(lane))
            .arg(keys.root())
            .arg(GROUP)
            .arg(&sh.name)
            .arg(now_ms())
            .arg(vt)
            .arg(room)
            .arg(crate::engine::id_place(part, lane))
            .invoke_async(con)
            .await?;
        let Value::Array(items) = v else { continue };
        let handed = items.iter().filter(|i| matches!(i, Value::Array(_))).count();
        // After the entries, the times (ms) the next retry left in the set and the next task
        // queued for later are due, or -1.
        let time = |v: Option<&Value>| match v {
            Some(Value::Int(at)) if *at >= 0 => Some(*at as u64),
            _ => None,
        };
        let (next_retry, next_later) = (time(items.iter().rev().nth(1)), time(items.last()));
        sh.later_at(part, lane, next_later, true);
        if claims {
            let next = if handed >= room {
                now
            } else {
                (now + CLAIM_IDLE_EVERY.as_millis() as u64).min(next_retry.unwrap_or(u64::MAX))
            };
            sh.claim_later(part, lane, next, true);
        }
        let mut got = Vec::new();
        for item in items {
            let Value::Array(parts) = item else { continue };
            if parts.len() < 4 {
                continue;
            }
            let Some(entry) = value_str(&parts[0]) else { continue };
            let fields = crate::redis::reply::parse_entries(&Value::Array(vec![Value::Array(vec![
                parts[0].clone(),
                parts[1].clone(),
            ])]));
            let deliveries = value_u64(&parts[2]) as u32;
            let reason = value_str(&parts[3]).unwrap_or_default();
            if let Some((_, f)) = fields.into_iter().next()
                && let Some(d) = Delivery::from_fields(part, lane, entry, &f, deliveries)
            {
                if reason == "reclaim" {
                    tracing::warn!(task_id = %d.id, kind = %d.kind, %lane, attempt = d.attempt(), trace_id = d.trace_id(), "reclaimed a task from a worker that stopped responding");
                }
                got.push(d);
            }
        }
        // An entry this worker already holds came back through the idle scan only because its
        // renewals failed for a while; it is running here, so it is not started twice. One being
        // parked here was woken as soon as it was parked: the claim is its next delivery.
        {
            let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            got.retain(|d| match fl.get_mut(&d.id) {
                Some(f) if f.phase != super::Phase::Parking => {
                    // Its idle time was reset by this claim, as a renewal would.
                    if f.entry == d.entry {
                        f.since = f.since.max(sent);
                    }
                    false
                }
                _ => true,
            });
        }
        if !got.is_empty() {
            sh.accept(got, sent);
            super::fetch::launch_ready(sh, &sh.opts.lanes);
        }
    }
    Ok(())
}

/// Reset the idle time of every entry this worker holds; stop work whose claim was lost.
async fn renew(sh: &Shared, con: &mut crate::redis::Conn) -> redis::RedisResult<()> {
    for (part, lane) in sh.places() {
        let held = sh.held_entries(part, lane);
        for chunk in held.chunks(500) {
            let sent = Instant::now();
            let mut inv = sh.engine.scripts().renew.prepare_invoke();
            inv.key(sh.engine.part(part).lane(lane)).arg(GROUP).arg(&sh.name);
            for (_, entry) in chunk {
                inv.arg(entry);
            }
            let lost: Vec<String> = inv.invoke_async(con).await?;
            sh.renewed(chunk, &lost, sent);
            for entry in lost {
                if let Some((id, _)) = chunk.iter().find(|(_, e)| *e == entry) {
                    // Recorded meanwhile (acked by us) is fine; otherwise someone else has it now.
                    tracing::debug!(task_id = %id, entry, "claim no longer held");
                    sh.stop_task(id, StopReason::ClaimLost);
                }
            }
        }
    }
    Ok(())
}

async fn heartbeat(sh: &Shared, con: &mut crate::redis::Conn, started: u64) -> redis::RedisResult<()> {
    let beat = json!({
        "name": sh.name,
        "host": super::hostname(),
        "pid": std::process::id(),
        "lanes": sh.opts.lanes,
        "concurrency": sh.opts.concurrency,
        "lane_concurrency": sh.opts.lane_concurrency,
        "in_flight": sh.in_flight.lock().map(|f| f.len()).unwrap_or(0),
        "completed": sh.completed.load(std::sync::atomic::Ordering::Relaxed),
        "started_at": started,
        "last_seen": now_ms(),
        "partitions": sh.shared_partitions(),
        "paused": Lane::ALL.iter().filter(|l| sh.is_paused(**l)).collect::<Vec<_>>(),
    });
    // The hash lives while some worker beats: with every worker gone, it goes after the stale
    // heartbeats would have been pruned.
    let key = sh.engine.keys().workers();
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(&key)
        .arg(&sh.name)
        .arg(beat.to_string())
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(STALE_HEARTBEAT.as_millis() as u64)
        .ignore()
        .query_async(con)
        .await
}

/// Catch cancellations whose announcement this worker missed (it was reconnecting).
async fn check_revoked(sh: &Shared, con: &mut crate::redis::Conn) -> redis::RedisResult<()> {
    let mut ids: Vec<(usize, String)> =
        sh.in_flight.lock().map(|f| f.iter().map(|(id, f)| (f.part, id.clone())).collect()).unwrap_or_default();
    ids.sort_unstable();
    // One pipeline per partition (a pipeline may not span slots).
    for chunk in ids.chunk_by(|a, b| a.0 == b.0).flat_map(|same| same.chunks(500)) {
        let mut pipe = redis::pipe();
        for (part, id) in chunk {
            pipe.cmd("HGET").arg(sh.engine.part(*part).task(id)).arg("state");
        }
        let states: Vec<Option<String>> = pipe.query_async(con).await?;
        for ((_, id), state) in chunk.iter().zip(states) {
            if state.as_deref().and_then(TaskState::parse) == Some(TaskState::Revoked) {
                sh.stop_task(id, StopReason::Revoked);
            }
        }
    }
    Ok(())
}

/// Remove consumers that have been idle for long with nothing pending, and stale heartbeats.
async fn prune(sh: &Shared, con: &mut crate::redis::Conn) -> redis::RedisResult<()> {
    for (part, lane) in sh.places() {
        let key = sh.engine.part(part).lane(lane);
        let consumers: Value = redis::cmd("XINFO").arg("CONSUMERS").arg(&key).arg(GROUP).query_async(con).await?;
        let Value::Array(list) = consumers else { continue };
        for c in list {
            let fields: HashMap<String, Value> = match c {
                Value::Array(flat) => {
                    flat.chunks(2).filter_map(|p| Some((value_str(&p[0])?, p.get(1)?.clone()))).collect()
                }
                Value::Map(m) => m.into_iter().filter_map(|(k, v)| Some((value_str(&k)?, v))).collect(),
                _ => continue,
            };
            let name = fields.get("name").and_then(value_str).unwrap_or_default();
            let pending = fields.get("pending").map(value_u64).unwrap_or(1);
            let idle = fields.get("idle").map(value_u64).unwrap_or(0);
            if name != sh.name && pending == 0 && idle > DEAD_CONSUMER_AFTER.as_millis() as u64 {
                let _: i64 =
                    redis::cmd("XGROUP").arg("DELCONSUMER").arg(&key).arg(GROUP).arg(&name).query_async(con).await?;
                tracing::info!(consumer = %name, %lane, "removed an idle consumer with nothing pending");
            }
        }
    }
    let beats: HashMap<String, String> = redis::cmd("HGETALL").arg(sh.engine.keys().workers()).query_async(con).await?;
    let now = now_ms();
    for (name, beat) in beats {
        let seen =
            serde_json::from_str::<serde_json::Value>(&beat).ok().and_then(|b| b["last_seen"].as_u64()).unwrap_or(0);
        if now.saturating_sub(seen) > STALE_HEARTBEAT.as_millis() as u64 {
            let _: i64 = redis::cmd("HDEL").arg(sh.engine.keys().workers()).arg(&name).query_async(con).await?;
        }
    }
    Ok(())
}

/// Hear cancellations of running tasks as they happen, and of tasks queued for later that are
/// the first due in their place.
pub(super) async fn cancel_listener(sh: Arc<Shared>, stop: CancellationToken) {
    let later_channel = sh.engine.keys().later_channel();
    let channels = [sh.engine.keys().cancel_channel(), later_channel.clone()];
    crate::redis::pubsub::listen(
        sh.engine.redis_url(),
        crate::redis::Timeouts::from_config(sh.engine.config()),
        &channels,
        stop,
        || {},
        |channel, payload| {
            let Ok(text) = std::str::from_utf8(payload) else { return };
            if channel == later_channel {
                if let Some((part, lane, due)) = crate::engine::later::parse_announcement(text) {
                    sh.later_at(part, lane, Some(due), false);
                    sh.later_now.notify_one();
                }
            } else if !sh.stop_task(text, StopReason::Revoked) {
                sh.recently_cancelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(text.to_string(), Instant::now());
            }
        },
    )
    .await
}

/// Leave the deployment cleanly: drop the heartbeat and, when nothing is pending to it, the
/// consumer itself.
pub(super) async fn deregister(sh: &Shared) {
    let mut con = sh.engine.conn();
    let _: redis::RedisResult<i64> =
        redis::cmd("HDEL").arg(sh.engine.keys().workers()).arg(&sh.name).query_async(&mut con).await;
    for (part, lane) in (0..sh.engine.partitions()).flat_map(|p| Lane::ALL.map(|l| (p, l))) {
        let key = sh.engine.part(part).lane(lane);
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(&sh.name)
            .query_async(&mut con)
            .await;
        if let Ok(Value::Array(p)) = pending
            && p.is_empty()
        {
            let _: redis::RedisResult<i64> =
                redis::cmd("XGROUP").arg("DELCONSUMER").arg(&key).arg(GROUP).arg(&sh.name).query_async(&mut con).await;
        }
    }
}

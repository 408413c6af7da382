//! Reading new entries and starting them in priority order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Delivery, Shared};
use crate::engine::Lane;
use crate::redis::reply::parse_entries;
use crate::redis::{GROUP, is_nogroup};

/// How long one blocking read waits for new entries before the loop looks around again.
const BLOCK: Duration = Duration::from_millis(500);

/// An entry that is not a task, as read: its lane, id and fields.
type Malformed = (Lane, String, Vec<(String, String)>);

/// Entries read for `lane` of partition `part` as deliveries, and the entries that are not tasks.
fn parse_read(part: usize, lane: Lane, v: &Value) -> (Vec<Delivery>, Vec<Malformed>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (entry, fields) in parse_entries(v) {
        match Delivery::from_fields(part, lane, entry.clone(), &fields, 1) {
            Some(d) => out.push(d),
            None => bad.push((lane, entry, fields)),
        }
    }
    (out, bad)
}

/// Dead-letter entries that are not tasks, with their raw fields.
async fn quarantine(sh: &Shared, part: usize, bad: Vec<Malformed>) -> redis::RedisResult<()> {
    let mut con = sh.engine.conn();
    let keys = sh.engine.part(part);
    for (lane, entry, fields) in bad {
        tracing::warn!(%lane, entry, "stream entry without task id or kind; moved to the dead-letter queue");
        let raw: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let _: Value = sh
            .engine
            .scripts()
            .quarantine
            .key(keys.dlq())
            .key(keys.dlq_lanes())
            .key(keys.lane(lane))
            .arg(GROUP)
            .arg(crate::engine::now_ms())
            .arg(lane.as_str())
            .arg(&entry)
            .arg(serde_json::Value::Object(raw).to_string())
            .invoke_async(&mut con)
            .await?;
    }
    Ok(())
}

/// Lanes in the order to serve them now: priority order, except that a lane this worker has not
/// tried to read for longer than the aging period goes first, so it is never starved.
fn lane_order(lanes: &[Lane], last_tried: &[Instant; 3], aging: Duration) -> Vec<Lane> {
    let mut order: Vec<Lane> = lanes.to_vec();
    order.sort_by_key(|l| (last_tried[l.index()].elapsed() < aging, l.index()));
    order
}

/// Start backlog entries while capacity allows, highest priority first.
pub(super) fn launch_ready(sh: &Arc<Shared>, order: &[Lane]) {
    for &lane in order {
        loop {
            let Ok(pool) = sh.pool.clone().try_acquire_owned() else { return };
            let Ok(lane_permit) = sh.lane_limits[lane.index()].clone().try_acquire_owned() else { break };
            let next = sh.backlog.lock().unwrap_or_else(|e| e.into_inner())[lane.index()].pop_front();
            let Some(d) = next else { break };
            super::run::spawn(sh, d, (pool, lane_permit));
        }
    }
}

pub(super) async fn fetch_loop(sh: Arc<Shared>, stop: CancellationToken) {
    let url = sh.engine.redis_url().to_string();
    let timeouts = crate::redis::Timeouts::from_config(sh.engine.config());
    let mut con = match crate::redis::connect_blocking(&url, BLOCK, timeouts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot use the Redis URL");
            return;
        }
    };
    let lanes = sh.opts.lanes.clone();
    let parts = sh.engine.partitions();
    // Blocking waits for partitions other than the first each have a connection of their own.
    let mut waiters: Vec<Option<crate::redis::Conn>> = (0..parts).map(|_| None).collect();
    // The partition each pass starts from, in turn, so that none is always served last.
    let mut first_part = 0;
    // Places an arrival woke the last wait for: read first on the next pass.
    let mut woke: Vec<(usize, Lane)> = Vec::new();
    let aging = sh.engine.config().priority_aging;
    let mut last_tried = [Instant::now(); 3];
    let mut backoff = Backoff::new();
    let mut groups_ready = false;
    while !stop.is_cancelled() {
        if !groups_ready {
            match sh.engine.ensure_groups().await {
                Ok(()) => {
                    groups_ready = true;
                    // A lane paused before this worker started is never read.
                    if let Err(e) = sh.refresh_paused().await {
                        tracing::debug!(error = %e, "could not read the paused lanes");
                    }
                }
                Err(e) => {
                    sh.redis_ok.store(false, Ordering::Relaxed);
                    let wait = backoff.fail();
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot create consumer groups; retrying");
                    pause(&stop, wait).await;
                    continue;
                }
            }
        }
        let order = lane_order(&lanes, &last_tried, aging);
        launch_ready(&sh, &order);
        // Paused lanes are not read (what was read before the pause still runs).
        let reading: Vec<Lane> = order.iter().copied().filter(|&l| !sh.is_paused(l)).collect();

        // Non-blocking reads, lane by lane in priority order (and in each lane partition by
        // partition), each for the room left.
        let mut took = 0;
        let mut failed = None;
        // Lanes found empty, with the group's read position in each.
        let mut empty: Vec<(usize, Lane, String)> = Vec::new();
        first_part = (first_part + 1) % parts;
        let mut tried = 0;
        // The pool's room is taken once per pass: room that frees while a higher lane is being
        // looked at goes to the next pass, which starts from the highest lane again — never to a
        // lower lane of this one.
        let backlog_total: usize = Lane::ALL.iter().map(|l| sh.backlog_len(*l)).sum();
        let mut pool_left = sh.pool.available_permits().saturating_sub(backlog_total);
        // The places (lane, partition) read, in order: those an arrival just woke this worker
        // for first (lanes in priority order), so the new entry does not wait for a read of
        // every other partition; then lanes in priority order, the partitions each in turn.
        let mut places: Vec<(Lane, usize)> = Vec::new();
        for &lane in &reading {
            places.extend(woke.iter().filter(|&&(p, l)| l == lane && sh.reads(l, p)).map(|&(p, l)| (l, p)));
        }
        woke.clear();
        for &lane in &reading {
            for part in (0..parts).map(|i| (first_part + i) % parts).filter(|&p| sh.reads(lane, p)) {
                if !places.contains(&(lane, part)) {
                    places.push((lane, part));
                }
            }
        }
        // Lanes at their own limit this pass; lower lanes may use the pool.
        let mut at_limit: Vec<Lane> = Vec::new();
        for (lane, part) in places {
            if pool_left == 0 {
                break;
            }
            if at_limit.contains(&lane) {
                continue;
            }
            let lane_room = sh.lane_limits[lane.index()].available_permits().saturating_sub(sh.backlog_len(lane));
            let room = pool_left.min(lane_room).min(sh.opts.batch);
            if room == 0 {
                at_limit.push(lane);
                continue;
            }
            tried += 1;
            let sent = Instant::now();
            last_tried[lane.index()] = sent;
            match read(&mut con, &sh, part, lane, room).await {
                Ok(Read::Empty(at)) => empty.push((part, lane, at)),
                Ok(Read::Entries(ds)) => {
                    let filled = ds.len() == room;
                    pool_left -= ds.len();
                    took += ds.len();
                    sh.accept(ds, sent);
                    launch_ready(&sh, &order);
                    if filled {
                        // This lane may hold more: serve it again before any lower lane, so
                        // nothing lower starts while a higher lane still has work queued.
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() && took == 0 {
            // Wait only on lanes just found empty. Lanes skipped for want of room are not
            // waited on here even if room has freed meanwhile: the next pass reads them in order.
            if tried == 0 {
                // Every lane is at its limit: wait for capacity (or the stop signal).
                tokio::select! {
                    _ = sh.wake.notified() => {}
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(BLOCK) => {}
                }
                continue;
            }
            // New entries are read by the fetch script only (it numbers ordered tasks as it
            // reads), which cannot block: when every lane read came back empty, wait for an entry
            // to arrive after one of their read positions, then go round again. (A lane that held
            // only entries which were no tasks, set aside above, may hold more: no wait then.)
            if empty.len() == tried {
                match wait_for_entries(&mut con, &mut waiters, &sh, &empty).await {
                    Ok(arrived) => woke = arrived,
                    Err(e) => failed = Some(e),
                }
            }
        }
        match failed {
            None => {
                backoff.reset();
                sh.redis_ok.store(true, Ordering::Relaxed);
            }
            Some(e) => {
                sh.redis_ok.store(false, Ordering::Relaxed);
                if is_nogroup(&e) {
                    tracing::warn!(
                        "consumer group missing (Redis restarted, flushed or the stream was deleted); recreating"
                    );
                    groups_ready = false;
                }
                let wait = backoff.fail();
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "reading tasks failed; backing off");
                pause(&stop, wait).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.cancelled() => {}
    }
}

/// What one read of a lane found.
enum Read {
    Entries(Vec<Delivery>),
    /// Nothing new; the group's read position in the lane.
    Empty(String),
}

/// Read up to `count` new entries of `lane` in partition `part` (fetch.lua: a new ordered task
/// gets its record and its number in the same step).
async fn read(
    con: &mut crate::redis::Conn,
    sh: &Shared,
    part: usize,
    lane: Lane,
    count: usize,
) -> redis::RedisResult<Read> {
    let keys = sh.engine.part(part);
    let v: Value = sh
        .engine
        .scripts()
        .fetch
        .key(keys.lane(lane))
        .arg(keys.root())
        .arg(GROUP)
        .arg(&sh.name)
        .arg(count)
        .arg(lane.as_str())
        .arg(crate::engine::id_place(part, lane))
        .arg(sh.engine.order_ttl().as_millis() as u64)
        .invoke_async(con)
        .await?;
    if let Some(at) = crate::redis::reply::value_str(&v) {
        return Ok(Read::Empty(at));
    }
    let (deliveries, bad) = parse_read(part, lane, &v);
    if !bad.is_empty() {
        quarantine(sh, part, bad).await?;
    }
    Ok(Read::Entries(deliveries))
}

/// Block until an entry arrives after the read position of one of `lanes` (or [`BLOCK`]
/// passes); the places (partition, lane) an entry arrived in, as far as the first answer
/// tells. It reads nothing for the group: the next pass does. One `XREAD` per partition (a
/// read may not span slots), each on its connection, the first to answer ending the wait. A
/// wait left behind stays blocked on its connection until its own entry or time comes; the
/// next wait on that partition queues behind it and still sees the same arrivals.
async fn wait_for_entries(
    con: &mut crate::redis::Conn,
    waiters: &mut [Option<crate::redis::Conn>],
    sh: &Shared,
    lanes: &[(usize, Lane, String)],
) -> redis::RedisResult<Vec<(usize, Lane)>> {
    // The places whose streams an `XREAD` answer names.
    let arrivals = |part: usize, v: &Value| -> Vec<(usize, Lane)> {
        let named = crate::redis::reply::stream_names(v);
        lanes
            .iter()
            .filter(|(p, l, _)| *p == part && named.contains(&sh.engine.part(part).lane(*l)))
            .map(|(p, l, _)| (*p, *l))
            .collect()
    };
    let xread = |part: usize| {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1).arg("BLOCK").arg(BLOCK.as_millis() as u64).arg("STREAMS");
        let mine: Vec<&(usize, Lane, String)> = lanes.iter().filter(|(p, _, _)| *p == part).collect();
        for (p, l, _) in &mine {
            cmd.arg(sh.engine.part(*p).lane(*l));
        }
        for (_, _, at) in &mine {
            cmd.arg(at);
        }
        cmd
    };
    let mut parts: Vec<usize> = lanes.iter().map(|(p, _, _)| *p).collect();
    parts.sort_unstable();
    parts.dedup();
    if let [only] = parts[..] {
        let v: Value = xread(only).query_async(con).await?;
        return Ok(arrivals(only, &v));
    }
    let mut waits = Vec::with_capacity(parts.len());
    for part in parts {
        let waiter = match &waiters[part] {
            Some(c) => c.clone(),
            None => {
                let timeouts = crate::redis::Timeouts::from_config(sh.engine.config());
                let c = crate::redis::connect_blocking(sh.engine.redis_url(), BLOCK, timeouts)?;
                waiters[part] = Some(c.clone());
                c
            }
        };
        let cmd = xread(part);
        waits.push(Box::pin(async move {
            let mut waiter = waiter;
            cmd.query_async::<Value>(&mut waiter).await.map(|v| (part, v))
        }));
    }
    let (part, v) = futures_util::future::select_all(waits).await.0?;
    Ok(arrivals(part, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_order_unless_a_lane_is_starved() {
        let lanes = Lane::ALL.to_vec();
        let now = Instant::now();
        let aging = Duration::from_secs(2);
        assert_eq!(lane_order(&lanes, &[now; 3], aging), lanes);
        let old = now - Duration::from_secs(5);
        assert_eq!(
            lane_order(&lanes, &[now, now, old], aging),
            vec![Lane::Analytics, Lane::Conversations, Lane::Webhooks]
        );
    }
}

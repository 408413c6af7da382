//! Reading new entries and starting them in priority order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::{Backoff, Delivery, Shared};
use crate::engine::Lane;
use crate::redis::{GROUP, is_nogroup};

/// How long one blocking read waits for new entries before the loop looks around again.
const BLOCK: Duration = Duration::from_millis(500);

/// Entries of a stream reply, `[[id, [field, value, ...]], ...]`, as (id, fields).
pub fn parse_entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let id = crate::engine::status::value_str(pair.first()?)?;
            let fields = match pair.get(1)? {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|c| {
                        Some((
                            crate::engine::status::value_str(c.first()?)?,
                            crate::engine::status::value_str(c.get(1)?)?,
                        ))
                    })
                    .collect(),
                Value::Map(m) => m
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((crate::engine::status::value_str(k)?, crate::engine::status::value_str(v)?))
                    })
                    .collect(),
                _ => return None,
            };
            Some((id, fields))
        })
        .collect()
}

/// An entry that is not a task, as read: its lane, id and fields.
type Malformed = (Lane, String, Vec<(String, String)>);

/// An `XREADGROUP` reply, `[[stream, entries], ...]` (or a map in RESP3), as deliveries, and the
/// entries that are not tasks.
fn parse_read(sh: &Shared, v: &Value) -> (Vec<Delivery>, Vec<Malformed>) {
    let streams: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::Array(p) if p.len() == 2 => Some((&p[0], &p[1])),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        _ => return (Vec::new(), Vec::new()),
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (key, entries) in streams {
        let Some(key) = crate::engine::status::value_str(key) else { continue };
        let Some(lane) = Lane::ALL.into_iter().find(|l| sh.engine.keys().lane(*l) == key) else { continue };
        for (entry, fields) in parse_entries(entries) {
            match Delivery::from_fields(lane, entry.clone(), &fields, 1) {
                Some(d) => out.push(d),
                None => bad.push((lane, entry, fields)),
            }
        }
    }
    (out, bad)
}

/// Dead-letter entries that are not tasks, with their raw fields.
async fn quarantine(sh: &Shared, bad: Vec<Malformed>) -> redis::RedisResult<()> {
    let mut con = sh.engine.conn();
    for (lane, entry, fields) in bad {
        tracing::warn!(%lane, entry, "stream entry without task id or kind; moved to the dead-letter queue");
        let raw: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let _: Value = sh
            .engine
            .scripts()
            .quarantine
            .key(sh.engine.keys().dlq())
            .key(sh.engine.keys().dlq_lanes())
            .key(sh.engine.keys().lane(lane))
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
    let mut con = match crate::redis::connect_blocking(&url, BLOCK) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot use the Redis URL");
            return;
        }
    };
    let lanes = sh.opts.lanes.clone();
    let aging = sh.engine.config().priority_aging;
    let mut last_tried = [Instant::now(); 3];
    let mut backoff = Backoff::new();
    let mut groups_ready = false;
    while !stop.is_cancelled() {
        if !groups_ready {
            match sh.engine.ensure_groups().await {
                Ok(()) => groups_ready = true,
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

        // Non-blocking reads, lane by lane in priority order, each for the room left.
        let mut took = 0;
        let mut failed = None;
        let mut empty = Vec::new();
        // The pool's room is taken once per pass: room that frees while a higher lane is being
        // looked at goes to the next pass, which starts from the highest lane again — never to a
        // lower lane of this one.
        let backlog_total: usize = Lane::ALL.iter().map(|l| sh.backlog_len(*l)).sum();
        let mut pool_left = sh.pool.available_permits().saturating_sub(backlog_total);
        for &lane in &order {
            if pool_left == 0 {
                break;
            }
            let lane_room = sh.lane_limits[lane.index()].available_permits().saturating_sub(sh.backlog_len(lane));
            let room = pool_left.min(lane_room).min(sh.opts.batch);
            if room == 0 {
                // This lane is at its own limit; lower lanes may use the pool.
                continue;
            }
            empty.push((lane, room));
            last_tried[lane.index()] = Instant::now();
            match read(&mut con, &sh, &[lane], room, None).await {
                Ok(ds) => {
                    let filled = ds.len() == room;
                    pool_left -= ds.len();
                    took += ds.len();
                    sh.accept(ds);
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
            // Block only on lanes just found empty. Lanes skipped for want of room are not
            // read here even if room has freed meanwhile: the next pass reads them in order.
            let open: Vec<Lane> = empty.iter().map(|(l, _)| *l).collect();
            if open.is_empty() {
                // Every lane is at its limit: wait for capacity (or the stop signal).
                tokio::select! {
                    _ = sh.wake.notified() => {}
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(BLOCK) => {}
                }
                continue;
            }
            let room = empty.iter().map(|(_, r)| *r).min().unwrap_or(1).clamp(1, sh.opts.batch);
            match read(&mut con, &sh, &open, room, Some(BLOCK)).await {
                Ok(ds) => {
                    for d in &ds {
                        last_tried[d.lane.index()] = Instant::now();
                    }
                    sh.accept(ds);
                }
                Err(e) => failed = Some(e),
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

async fn read(
    con: &mut redis::aio::ConnectionManager,
    sh: &Shared,
    lanes: &[Lane],
    count: usize,
    block: Option<Duration>,
) -> redis::RedisResult<Vec<Delivery>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(GROUP).arg(&sh.name).arg("COUNT").arg(count);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS");
    for l in lanes {
        cmd.arg(sh.engine.keys().lane(*l));
    }
    for _ in lanes {
        cmd.arg(">");
    }
    let v: Value = cmd.query_async(con).await?;
    let (deliveries, bad) = parse_read(sh, &v);
    if !bad.is_empty() {
        quarantine(sh, bad).await?;
    }
    Ok(deliveries)
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

    #[test]
    fn parses_stream_entries() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"id".to_vec()), Value::BulkString(b"T1".to_vec())]),
        ])]);
        assert_eq!(parse_entries(&v), vec![("1-0".to_string(), vec![("id".to_string(), "T1".to_string())])]);
        assert!(parse_entries(&Value::Nil).is_empty());
    }
}

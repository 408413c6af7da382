//! Each lane's figures and what runs now, over every partition: what operators see as one
//! number is added up from each partition's lanes.

use std::collections::HashMap;

use serde::Serialize;

use super::status::group_info;
use super::{Engine, EngineError, Lane, format_ms, now_ms};
use crate::redis::GROUP;
use crate::redis::reply::{value_str, value_u64};

/// One lane's figures. `depth` counts the lane's outstanding work (`lag` + `pending`);
/// `pending` the entries delivered to a worker and not yet acked (Redis's pending entries
/// list), of which `retrying` wait out a backoff and `active` are being run; `lag` the entries
/// no worker has read yet; `scheduled` the tasks queued for later, not in the lane until due.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LaneStatus {
    pub depth: u64,
    pub active: u64,
    pub pending: u64,
    pub retrying: u64,
    pub lag: u64,
    pub consumers: u64,
    pub dead: i64,
    pub scheduled: u64,
    /// Paused by an operator: workers read nothing new from it.
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueuesStatus {
    /// Each lane's figures, by lane name.
    #[schema(value_type = std::collections::BTreeMap<String, LaneStatus>)]
    pub queues: HashMap<&'static str, LaneStatus>,
    pub dlq_depth: u64,
    pub timestamp: String,
}

/// A task being run now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActiveTask {
    pub task_id: String,
    pub kind: String,
    pub lane: Lane,
    pub worker: String,
    pub started: Option<String>,
    /// Time since the worker last renewed its claim, in ms.
    pub idle_ms: u64,
    pub attempt: u64,
}

impl Engine {
    /// Every lane's figures and the DLQ's size, summed over the partitions (each one round trip
    /// and a look at each lane's group).
    pub async fn queues_status(&self) -> Result<QueuesStatus, EngineError> {
        let parts = futures_util::future::try_join_all((0..self.partitions()).map(|p| self.part_status(p))).await?;
        let paused = self.paused_lanes().await?;
        let mut queues: HashMap<&'static str, LaneStatus> = HashMap::new();
        let mut dlq_depth = 0;
        for (part_queues, part_dead) in parts {
            dlq_depth += part_dead;
            for (lane, s) in part_queues {
                let t = queues.entry(lane).or_default();
                t.depth += s.depth;
                t.active += s.active;
                t.pending += s.pending;
                t.retrying += s.retrying;
                t.lag += s.lag;
                // Every worker joins the group of every partition: the most any one has.
                t.consumers = t.consumers.max(s.consumers);
                t.dead += s.dead;
                t.scheduled += s.scheduled;
            }
        }
        for lane in paused {
            queues.entry(lane.as_str()).or_default().paused = true;
        }
        Ok(QueuesStatus { queues, dlq_depth, timestamp: format_ms(now_ms()) })
    }

    /// One partition's lanes and dead letters.
    async fn part_status(&self, part: usize) -> Result<(HashMap<&'static str, LaneStatus>, u64), EngineError> {
        let keys = self.part(part);
        let mut pipe = redis::pipe();
        for lane in Lane::ALL {
            pipe.cmd("XLEN").arg(keys.lane(lane));
            pipe.cmd("ZCARD").arg(keys.retry(lane));
        }
        pipe.cmd("HGETALL").arg(keys.dlq_lanes());
        pipe.cmd("XLEN").arg(keys.dlq());
        // Each lane's newest entry: with nothing after the group's position there is no lag,
        // whatever Redis counts (its count can stay behind after a replica took over).
        for lane in Lane::ALL {
            pipe.cmd("XREVRANGE").arg(keys.lane(lane)).arg("+").arg("-").arg("COUNT").arg(1);
        }
        for lane in Lane::ALL {
            pipe.cmd("ZCARD").arg(keys.later(lane));
        }
        let mut con = self.conn();
        let values: Vec<redis::Value> = pipe.query_async(&mut con).await?;
        // XINFO GROUPS fails on a missing stream; ask separately so one lane cannot spoil the rest.
        let mut infos = Vec::new();
        for lane in Lane::ALL {
            let info: redis::RedisResult<redis::Value> =
                redis::cmd("XINFO").arg("GROUPS").arg(keys.lane(lane)).query_async(&mut con).await;
            infos.push(info.map(|v| group_info(&v)).unwrap_or_default());
        }
        let dead: HashMap<String, i64> = match &values[Lane::ALL.len() * 2] {
            redis::Value::Array(flat) => {
                flat.chunks(2).filter_map(|c| Some((value_str(&c[0])?, value_str(&c[1])?.parse().ok()?))).collect()
            }
            redis::Value::Map(m) => {
                m.iter().filter_map(|(k, v)| Some((value_str(k)?, value_str(v)?.parse().ok()?))).collect()
            }
            _ => HashMap::new(),
        };
        let mut queues = HashMap::new();
        for (i, lane) in Lane::ALL.into_iter().enumerate() {
            let retrying = value_u64(&values[i * 2 + 1]);
            let info = &infos[i];
            let pending = info.get("pending").map(value_u64).unwrap_or(0);
            let consumers = info.get("consumers").map(value_u64).unwrap_or(0);
            let last_delivered = info.get("last-delivered-id").and_then(value_str);
            let newest = newest_entry(&values[Lane::ALL.len() * 2 + 2 + i]);
            let caught_up = match (&newest, &last_delivered) {
                (None, _) => true,
                (Some(newest), Some(at)) => !stream_id_after(newest, at),
                (Some(_), None) => false,
            };
            let lag = match info.get("lag") {
                _ if caught_up => 0,
                Some(redis::Value::Int(l)) => (*l).max(0) as u64,
                // Redis cannot tell after a deletion past the group's position: count instead.
                _ => self.count_undelivered(part, lane, last_delivered).await?,
            };
            queues.insert(
                lane.as_str(),
                LaneStatus {
                    depth: lag + pending,
                    pending,
                    retrying,
                    active: pending.saturating_sub(retrying),
                    lag,
                    consumers,
                    dead: dead.get(lane.as_str()).copied().unwrap_or(0).max(0),
                    scheduled: value_u64(&values[Lane::ALL.len() * 3 + 2 + i]),
                    paused: false,
                },
            );
        }
        Ok((queues, value_u64(&values[Lane::ALL.len() * 2 + 1])))
    }

    /// Entries after the group's read position, counted up to a bound.
    async fn count_undelivered(
        &self,
        part: usize,
        lane: Lane,
        last_delivered: Option<String>,
    ) -> Result<u64, EngineError> {
        const BOUND: usize = 100_000;
        let mut con = self.conn();
        let start = match last_delivered {
            Some(id) => format!("({id}"),
            None => "-".to_string(),
        };
        let ids: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(self.part(part).lane(lane))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(BOUND)
            .query_async(&mut con)
            .await?;
        Ok(ids.len() as u64)
    }

    /// Tasks being run now, across every worker: pending entries not waiting out a backoff.
    pub async fn active_tasks(&self, limit: usize) -> Result<Vec<ActiveTask>, EngineError> {
        let mut con = self.conn();
        let mut out = Vec::new();
        for (part, lane) in (0..self.partitions()).flat_map(|p| Lane::ALL.map(|l| (p, l))) {
            let keys = self.part(part);
            let stream = keys.lane(lane);
            let pending: redis::RedisResult<Vec<(String, String, u64, u64)>> =
                redis::cmd("XPENDING").arg(&stream).arg(GROUP).arg("-").arg("+").arg(limit).query_async(&mut con).await;
            let pending = match pending {
                Ok(p) => p,
                Err(e) if crate::redis::is_nogroup(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if pending.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (entry, ..) in &pending {
                pipe.cmd("ZSCORE").arg(keys.retry(lane)).arg(entry);
                pipe.cmd("XRANGE").arg(&stream).arg(entry).arg(entry);
            }
            let found: Vec<redis::Value> = pipe.query_async(&mut con).await?;
            let mut rows = Vec::new();
            for (i, (entry, worker, idle, deliveries)) in pending.iter().enumerate() {
                if !matches!(found[i * 2], redis::Value::Nil) {
                    continue;
                }
                let Some((_, fields)) = crate::redis::reply::parse_entries(&found[i * 2 + 1]).into_iter().next() else {
                    continue;
                };
                let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
                let base: u64 = get("base").and_then(|b| b.parse().ok()).unwrap_or(0);
                rows.push(ActiveTask {
                    task_id: get("id").or_else(|| super::task_id_for_entry(part, lane, entry)).unwrap_or_default(),
                    kind: get("kind").unwrap_or_default(),
                    lane,
                    worker: worker.clone(),
                    started: None,
                    idle_ms: *idle,
                    attempt: base.saturating_add(*deliveries),
                });
            }
            if !rows.is_empty() {
                let mut pipe = redis::pipe();
                for r in &rows {
                    pipe.cmd("HGET").arg(keys.task(&r.task_id)).arg("started_at");
                }
                let started: Vec<Option<u64>> = pipe.query_async(&mut con).await?;
                for (r, s) in rows.iter_mut().zip(started) {
                    r.started = s.map(format_ms);
                }
            }
            out.extend(rows);
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// The id of the entry in an `XREVRANGE … COUNT 1` answer, if any.
fn newest_entry(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::Array(entries) => match entries.first()? {
            redis::Value::Array(entry) => value_str(entry.first()?),
            _ => None,
        },
        _ => None,
    }
}

/// Whether stream id `a` (`ms-seq`) comes after `b`.
fn stream_id_after(a: &str, b: &str) -> bool {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(stream_id_after("10-0", "9-5"));
        assert!(stream_id_after("5-10", "5-9"));
        assert!(!stream_id_after("5-9", "5-9"));
        assert!(!stream_id_after("1796539280305-0", "1796539289824-0"));
    }
}

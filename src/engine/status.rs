//! What operators ask of the engine: a task's record, each lane's figures, what runs now,
//! and cancellation. Figures come from Redis, so they are the whole deployment's.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{Attempt, Engine, EngineError, Lane, TaskState, TaskStatus, entry_of_task, format_ms, now_ms};
use crate::redis::GROUP;
use crate::redis::reply::{value_str, value_u64};

/// One lane's figures. `depth` counts the lane's outstanding work (`lag` + `pending`);
/// `pending` the entries delivered to a worker and not yet acked (Redis's pending entries
/// list), of which `retrying` wait out a backoff and `active` are being run; `lag` the entries
/// no worker has read yet.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LaneStatus {
    pub depth: u64,
    pub active: u64,
    pub pending: u64,
    pub retrying: u64,
    pub lag: u64,
    pub consumers: u64,
    pub dead: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueuesStatus {
    pub queues: HashMap<&'static str, LaneStatus>,
    pub dlq_depth: u64,
    pub timestamp: String,
}

/// A task being run now.
#[derive(Debug, Clone, Serialize)]
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

/// `XINFO GROUPS` as name → (field → value) for our group.
fn group_info(v: &redis::Value) -> HashMap<String, redis::Value> {
    let mut out = HashMap::new();
    let redis::Value::Array(groups) = v else { return out };
    for g in groups {
        let pairs: Vec<(redis::Value, redis::Value)> = match g {
            redis::Value::Array(flat) => {
                flat.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect()
            }
            redis::Value::Map(m) => m.clone(),
            _ => continue,
        };
        let map: HashMap<String, redis::Value> =
            pairs.into_iter().filter_map(|(k, v)| value_str(&k).map(|k| (k, v))).collect();
        if map.get("name").and_then(value_str).as_deref() == Some(GROUP) {
            return map;
        }
    }
    out.clear();
    out
}

/// `XINFO GROUPS` of a stream that does not exist.
fn is_missing_stream(e: &redis::RedisError) -> bool {
    e.to_string().contains("no such key")
}

/// Is stream entry `a` after `b`? (`<ms>-<seq>` ids, compared as numbers.)
pub(crate) fn entry_after(a: &str, b: &str) -> bool {
    super::parse_entry_id(a).unwrap_or_default() > super::parse_entry_id(b).unwrap_or_default()
}

fn ms_field(map: &HashMap<String, String>, key: &str) -> Option<u64> {
    map.get(key).and_then(|v| v.parse().ok())
}

/// Build the API view of a task from its record's fields.
pub(crate) fn task_status_from(id: &str, map: HashMap<String, String>) -> TaskStatus {
    let mut history: Vec<Attempt> =
        map.iter().filter(|(k, _)| k.starts_with("a:")).filter_map(|(_, v)| serde_json::from_str(v).ok()).collect();
    history.sort_by_key(|a| a.attempt);
    let state = map.get("state").and_then(|s| TaskState::parse(s)).unwrap_or(TaskState::Pending);
    let result = map.get("result").and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null);
    let payload = map.get("payload").and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null);
    let error = map.get("error").filter(|e| !e.is_empty() && state != TaskState::Success).cloned();
    // A successful attempt's start is kept in its history entry only.
    let attempts: u32 = map.get("attempts").and_then(|p| p.parse().ok()).unwrap_or(0);
    // A successful attempt's start is kept in its history entry only; a running attempt's in
    // the record.
    let started_ms = history
        .last()
        .filter(|a| a.attempt == attempts)
        .and_then(|a| a.started_at)
        .or_else(|| ms_field(&map, "started_at"));
    let progress =
        if state == TaskState::Success { 100 } else { map.get("progress").and_then(|p| p.parse().ok()).unwrap_or(0) };
    TaskStatus {
        task_id: id.to_string(),
        status: state,
        progress,
        result,
        error,
        attempts,
        max_attempts: map.get("max_attempts").and_then(|p| p.parse().ok()).unwrap_or(0),
        kind: map.get("kind").cloned().unwrap_or_default(),
        lane: map.get("lane").and_then(|l| Lane::parse(l)),
        created_at: ms_field(&map, "created_at").map(format_ms),
        started_at: started_ms.map(format_ms),
        finished_at: ms_field(&map, "finished_at").map(format_ms),
        worker: map.get("worker").cloned(),
        payload,
        history,
        retry_at: ms_field(&map, "retry_at").filter(|_| state == TaskState::Retry).map(format_ms),
        dead_letter: map.get("dead_letter").cloned(),
    }
}

/// When a task was created, from its id: a UUIDv7 named after its entry, or a ULID of an
/// earlier build, both start with the time in ms.
fn created_ms(id: &str) -> Option<u64> {
    match entry_of_task(id) {
        Some((_, _, entry)) => super::parse_entry_id(&entry).map(|(ms, _)| ms),
        None => ulid::Ulid::from_string(id).ok().map(|u| u.timestamp_ms()),
    }
}

/// The time in ms a UUIDv7 starts with (finish.lua reads it as this does).
fn uuid7_ms(id: &str) -> Option<u64> {
    let b = id.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[14] != b'7' {
        return None;
    }
    let hex = format!("{}{}", id.get(0..8)?, id.get(9..13)?);
    hex.bytes().all(|c| c.is_ascii_hexdigit()).then(|| u64::from_str_radix(&hex, 16).ok())?
}

/// A finished line from its bucket or, written before buckets, its own key.
const DONE_LINE: &str = "return redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('GET', KEYS[2])";

/// The fields of task `id`'s finished record (written by finish.lua, see done.lua) as a record's,
/// with the successful attempt's history entry made again from them; `None` when the line is
/// not one.
pub(crate) fn done_fields(id: &str, line: &str) -> Option<HashMap<String, String>> {
    let f: Vec<&str> = line.split('\t').collect();
    let [kind, lane, started, to_finish, worker, attempts, max, result, earlier] = f[..] else {
        return None;
    };
    let started: u64 = match started.strip_prefix('@') {
        Some(at) => at.parse().ok()?,
        None => uuid7_ms(id)?.checked_add_signed(started.parse().ok()?)?,
    };
    let finished = started + to_finish.parse::<u64>().ok()?;
    let attempt: u32 = attempts.parse().ok()?;
    let lane = match lane {
        "" => entry_of_task(id)?.1.as_str(),
        named => named,
    };
    let mut map: HashMap<String, String> = [
        ("state", TaskState::Success.as_str()),
        ("kind", kind),
        ("lane", lane),
        ("worker", worker),
        ("attempts", attempts),
        ("max_attempts", max),
        ("result", if result.is_empty() { "null" } else { result }),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    map.insert("created_at".into(), created_ms(id).unwrap_or(started).to_string());
    map.insert("started_at".into(), started.to_string());
    map.insert("finished_at".into(), finished.to_string());
    if !earlier.is_empty() {
        for a in serde_json::from_str::<Vec<Value>>(earlier).unwrap_or_default() {
            if let Some(n) = a["attempt"].as_u64() {
                map.insert(format!("a:{n}"), a.to_string());
            }
        }
    }
    let this = Attempt {
        attempt,
        worker: Some(worker.to_string()),
        started_at: Some(started),
        duration_ms: Some((finished - started) as f64),
        outcome: "success".into(),
        error: None,
    };
    map.insert(format!("a:{attempt}"), serde_json::to_string(&this).ok()?);
    Some(map)
}

impl Engine {
    /// `pipe` and then task `id`'s finished line (see `done.lua`), read as one value: from its
    /// bucket, or from a key of its own (an id that is no UUIDv7, or a record written before
    /// buckets), whichever holds it.
    fn done_pipe<'a>(&self, id: &str, pipe: &'a mut redis::Pipeline) -> &'a mut redis::Pipeline {
        let own = self.task_part(id).done_own(id);
        match self.task_part(id).done(id) {
            (bucket, Some(field)) => pipe.cmd("EVAL").arg(DONE_LINE).arg(2).arg(bucket).arg(own).arg(field),
            (_, None) => pipe.cmd("GET").arg(own),
        }
    }

    /// A task's state alone (one field of its record), for callers that wait on it.
    pub async fn task_state(&self, id: &str) -> Result<Option<TaskState>, EngineError> {
        let mut con = self.conn();
        let (state, done): (Option<String>, Option<String>) = self
            .done_pipe(id, redis::pipe().cmd("HGET").arg(self.task_part(id).task(id)).arg("state"))
            .query_async(&mut con)
            .await?;
        match (state, done.is_some()) {
            (Some(s), _) => Ok(TaskState::parse(&s)),
            (None, true) => Ok(Some(TaskState::Success)),
            (None, false) => {
                Ok(self.queued_task(id).await?.and_then(|m| m.get("state").and_then(|s| TaskState::parse(s))))
            }
        }
    }

    /// A task's record, or `None` when no such task exists (or its record expired).
    pub async fn task_status(&self, id: &str) -> Result<Option<TaskStatus>, EngineError> {
        let mut con = self.conn();
        let (mut map, done): (HashMap<String, String>, Option<String>) = self
            .done_pipe(id, redis::pipe().cmd("HGETALL").arg(self.task_part(id).task(id)))
            .query_async(&mut con)
            .await?;
        // A task that succeeded: its finished record, and no payload (its entry held it).
        if !map.contains_key("state")
            && let Some(fields) = done.as_deref().and_then(|line| done_fields(id, line))
        {
            return Ok(Some(task_status_from(id, fields)));
        }
        // No record, or none written by a start yet: the task is its entry.
        if !map.contains_key("state") {
            match self.queued_task(id).await? {
                Some(queued) => map = queued,
                None => return Ok(None),
            }
        }
        // The record names its dead letter by its entry in the partition's DLQ.
        if let Some(entry) = map.get_mut("dead_letter") {
            *entry = super::dlq::letter_id(self.part_of_task(id), entry);
        }
        // A dead task's payload and attempt log are in its dead letter only (fail.lua). A letter
        // deleted or redriven meanwhile put them back into the record: read it again.
        if !map.contains_key("payload")
            && let Some(dead) = map.get("dead_letter").cloned()
        {
            match self.dlq_get(&dead).await? {
                Some(letter) => {
                    map.insert("payload".into(), letter.payload.to_string());
                    for a in &letter.attempts {
                        map.insert(format!("a:{}", a.attempt), serde_json::to_string(a).unwrap_or_default());
                    }
                    return Ok(Some(task_status_from(id, map)));
                }
                None => {
                    map = redis::cmd("HGETALL").arg(self.task_part(id).task(id)).query_async(&mut con).await?;
                    if map.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
        // A queued task's payload is in its lane entry only.
        if !map.contains_key("payload")
            && let (Some(lane), Some(entry)) = (map.get("lane").and_then(|l| Lane::parse(l)), map.get("entry"))
        {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(self.task_part(id).lane(lane))
                .arg(entry)
                .arg(entry)
                .query_async(&mut con)
                .await?;
            let fields = crate::redis::reply::parse_entries(&v).into_iter().next().map(|(_, f)| f).unwrap_or_default();
            let payload = match fields.into_iter().find(|(k, _)| k == "payload") {
                Some((_, payload)) => Some(payload),
                // The entry went meanwhile (the task was cancelled, or ran and was trimmed), and
                // whatever removed it put the payload into the record first.
                None => {
                    redis::cmd("HGET").arg(self.task_part(id).task(id)).arg("payload").query_async(&mut con).await?
                }
            };
            if let Some(payload) = payload {
                map.insert("payload".into(), payload);
            }
        }
        Ok(Some(task_status_from(id, map)))
    }

    /// A task that no worker has started yet may have no record, only the lane entry its id is
    /// named after. Its fields as a PENDING record's, or `None` when there is no such entry still
    /// waiting to be read or started (nor, by then, a record: a worker may have started it
    /// meanwhile, and the record is read again). An entry acknowledged whose record is gone
    /// (expired, and the entry not trimmed yet) is no queued task.
    async fn queued_task(&self, id: &str) -> Result<Option<HashMap<String, String>>, EngineError> {
        let Some((part, lane, entry)) = entry_of_task(id) else { return Ok(None) };
        let mut con = self.conn();
        let stream = self.task_part(id).lane(lane);
        let (v, groups): (redis::Value, redis::Value) = redis::pipe()
            .cmd("XRANGE")
            .arg(&stream)
            .arg(&entry)
            .arg(&entry)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query_async(&mut con)
            .await
            .or_else(|e| if is_missing_stream(&e) { Ok((redis::Value::Nil, redis::Value::Nil)) } else { Err(e) })?;
        let read_up_to = group_info(&groups).get("last-delivered-id").and_then(value_str);
        let mut unread = read_up_to.is_none_or(|at| entry_after(&entry, &at));
        if !unread && !matches!(&v, redis::Value::Array(e) if e.is_empty()) {
            // Read, and still pending: about to start (its record is written when it starts).
            unread = self.is_pending(part, lane, &entry).await?;
        }
        let fields = crate::redis::reply::parse_entries(&v).into_iter().next().map(|(_, f)| f);
        // An entry that names a task of its own belongs to that task (a redrive), not to this id.
        let Some(fields) = fields.filter(|f| unread && f.iter().all(|(k, _)| k != "id")) else {
            let map: HashMap<String, String> =
                redis::cmd("HGETALL").arg(self.task_part(id).task(id)).query_async(&mut con).await?;
            return Ok((!map.is_empty()).then_some(map));
        };
        let mut map: HashMap<String, String> = fields.into_iter().collect();
        // Queued when it was appended: the entry's own millisecond (as fetch.lua records it).
        let created = super::parse_entry_id(&entry).map(|(ms, _)| ms.to_string()).unwrap_or_default();
        let max = map.remove("max").unwrap_or_else(|| "1".into());
        map.extend([
            ("state".to_string(), TaskState::Pending.as_str().to_string()),
            ("lane".to_string(), lane.as_str().to_string()),
            ("entry".to_string(), entry),
            ("created_at".to_string(), created),
            ("max_attempts".to_string(), max),
        ]);
        Ok(Some(map))
    }

    /// Is `entry` of `lane` in partition `part` delivered to a worker and not acknowledged?
    pub(crate) async fn is_pending(&self, part: usize, lane: Lane, entry: &str) -> Result<bool, EngineError> {
        let mut con = self.conn();
        let p: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(self.part(part).lane(lane))
            .arg(GROUP)
            .arg(entry)
            .arg(entry)
            .arg(1)
            .query_async(&mut con)
            .await;
        match p {
            Ok(redis::Value::Array(p)) => Ok(!p.is_empty()),
            Ok(_) => Ok(false),
            Err(e) if crate::redis::is_nogroup(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The group's read position in `lane` of partition `part`: entries after it have not been
    /// read yet.
    pub(crate) async fn read_position(&self, part: usize, lane: Lane) -> Result<Option<String>, EngineError> {
        let mut con = self.conn();
        match redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.part(part).lane(lane))
            .query_async::<redis::Value>(&mut con)
            .await
        {
            Ok(v) => Ok(group_info(&v).get("last-delivered-id").and_then(value_str)),
            Err(e) if is_missing_stream(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every lane's figures and the DLQ's size, summed over the partitions (each one round trip
    /// and a look at each lane's group).
    pub async fn queues_status(&self) -> Result<QueuesStatus, EngineError> {
        let parts = futures_util::future::try_join_all((0..self.partitions()).map(|p| self.part_status(p))).await?;
        let mut queues: HashMap<&'static str, LaneStatus> = HashMap::new();
        let mut dlq_depth = 0;
        for (part_queues, part_dead) in parts {
            dlq_depth += part_dead;
            for (lane, s) in part_queues {
                let t = queues.entry(lane).or_insert(LaneStatus {
                    depth: 0,
                    active: 0,
                    pending: 0,
                    retrying: 0,
                    lag: 0,
                    consumers: 0,
                    dead: 0,
                });
                t.depth += s.depth;
                t.active += s.active;
                t.pending += s.pending;
                t.retrying += s.retrying;
                t.lag += s.lag;
                // Every worker joins the group of every partition: the most any one has.
                t.consumers = t.consumers.max(s.consumers);
                t.dead += s.dead;
            }
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
            let lag = match info.get("lag") {
                Some(redis::Value::Int(l)) => (*l).max(0) as u64,
                // Redis cannot tell after a deletion past the group's position: count instead.
                _ => self.count_undelivered(part, lane, info.get("last-delivered-id").and_then(value_str)).await?,
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
                    attempt: base + deliveries,
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

    /// Cancel a task: queued or retrying ones never run again, a running one is told to stop.
    /// Returns the new state (always `REVOKED`).
    pub async fn cancel(&self, id: &str) -> Result<TaskState, EngineError> {
        let mut con = self.conn();
        let lane: Option<String> =
            redis::cmd("HGET").arg(self.task_part(id).task(id)).arg("lane").query_async(&mut con).await?;
        // A task no worker has read yet has no record: its id names its lane and entry.
        let named = entry_of_task(id);
        let lane = lane
            .and_then(|l| Lane::parse(&l))
            .or(named.as_ref().map(|(_, l, _)| *l))
            .ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        let entry = named.filter(|(_, l, _)| *l == lane).map(|(_, _, e)| e).unwrap_or_default();
        let c = self.config();
        let keys = self.task_part(id);
        let reply: Vec<String> = self
            .scripts()
            .cancel
            .key(keys.task(id))
            .key(keys.lane(lane))
            .key(keys.retry(lane))
            .key(keys.revoked())
            .arg(GROUP)
            .arg(now_ms())
            .arg(c.task_retention.as_millis() as u64)
            .arg(self.keys().cancel_channel())
            .arg(id)
            .arg(entry)
            .arg(lane.as_str())
            .invoke_async(&mut con)
            .await?;
        match reply.first().map(String::as_str) {
            Some("REVOKED") => {
                tracing::info!(task_id = id, was = reply.get(1).map(String::as_str).unwrap_or(""), "task cancelled");
                Ok(TaskState::Revoked)
            }
            Some("FINISHED") => {
                Err(EngineError::Finished { id: id.to_string(), state: reply.get(1).cloned().unwrap_or_default() })
            }
            _ => Err(EngineError::NotFound(id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_compare_as_numbers() {
        use super::entry_after;
        assert!(entry_after("1700000000001-0", "1700000000000-9"));
        assert!(entry_after("1700000000000-10", "1700000000000-9"));
        assert!(!entry_after("1700000000000-9", "1700000000000-9"));
        assert!(!entry_after("999-0", "1000-0"));
        assert!(entry_after("1-0", "0-0"));
    }
}

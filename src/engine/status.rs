//! What operators ask of the engine about one task: its record and state, whether it is still
//! queued, and cancellation. Each lane's figures and what runs now are in `queues.rs`.

use std::collections::HashMap;

use serde_json::Value;

use super::{Attempt, Engine, EngineError, Lane, TaskState, TaskStatus, entry_of_task, format_ms, now_ms};
use crate::redis::GROUP;
use crate::redis::reply::value_str;

/// `XINFO GROUPS` as name → (field → value) for our group.
pub(super) fn group_info(v: &redis::Value) -> HashMap<String, redis::Value> {
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
        run_at: ms_field(&map, "run_at").filter(|_| state == TaskState::Pending).map(format_ms),
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
            .key(keys.later(lane))
            .arg(GROUP)
            .arg(now_ms())
            .arg(c.task_retention.as_millis() as u64)
            .arg(self.keys().cancel_channel())
            .arg(id)
            .arg(entry)
            .arg(lane.as_str())
            .arg(self.history_cap())
            .invoke_async(&mut con)
            .await?;
        match reply.first().map(String::as_str) {
            Some("REVOKED") => {
                tracing::info!(task_id = id, was = reply.get(1).map(String::as_str).unwrap_or(""), "task cancelled");
                let kind = reply.get(2).map(String::as_str).unwrap_or_default();
                let at = super::format_ms(now_ms());
                let mut event = super::TaskEvent::state(id, kind, Some(lane), TaskState::Revoked, &at);
                event.error = Some("cancelled".into());
                self.publish_events(&[event]);
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

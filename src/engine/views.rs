//! What operators look at besides single tasks: the latest entries of each lane with their
//! states, and the workers' heartbeats. Typed reads for the dashboard and the API.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::status::entry_after;
use super::{Engine, EngineError, Lane, TaskState, task_id_for_entry};
use crate::redis::GROUP;
use crate::redis::reply::parse_entries;

/// A task still in its lane (queued, running or waiting to retry), as its entry says.
#[derive(Debug, Clone)]
pub struct RecentTask {
    pub id: String,
    /// Its lane entry.
    pub entry: String,
    pub kind: String,
    pub lane: Lane,
    /// Its record's state: `PENDING` for an entry no worker has started (finished tasks whose
    /// entries wait to be trimmed are left out).
    pub state: Option<String>,
    /// When it was queued (ms since the epoch: the entry's own time).
    pub queued_ms: u64,
}

/// A worker's latest heartbeat.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkerBeat {
    #[serde(skip)]
    pub name: String,
    pub host: String,
    pub pid: u64,
    pub lanes: Vec<Lane>,
    pub concurrency: u64,
    pub in_flight: u64,
    pub completed: u64,
    pub started_at: u64,
    pub last_seen: u64,
    /// With `WORKER_PARTITIONS=balanced`, the partitions it reads new entries from.
    #[serde(default)]
    pub partitions: Option<Vec<usize>>,
    /// The lanes it knew to be paused at its last beat (it reads nothing new from them).
    #[serde(default)]
    pub paused: Vec<Lane>,
}

impl Engine {
    /// Tasks still in their lanes (not finished), newest first: of each lane the latest
    /// `per_lane` whose kind contains `kind` (looked for among its latest `4 × per_lane`
    /// entries).
    pub async fn recent_tasks(&self, kind: &str, per_lane: usize) -> Result<Vec<RecentTask>, EngineError> {
        if self.partitions() == 1 {
            return self.recent_in(0, kind, per_lane).await;
        }
        let parts =
            futures_util::future::try_join_all((0..self.partitions()).map(|p| self.recent_in(p, kind, per_lane)))
                .await?;
        let mut rows: Vec<RecentTask> = parts.into_iter().flatten().collect();
        rows.sort_by(|a, b| {
            let at = |r: &RecentTask| super::parse_entry_id(&r.entry).unwrap_or_default();
            (a.lane.index(), std::cmp::Reverse(at(a))).cmp(&(b.lane.index(), std::cmp::Reverse(at(b))))
        });
        let mut taken = [0; 3];
        rows.retain(|r| {
            taken[r.lane.index()] += 1;
            taken[r.lane.index()] <= per_lane
        });
        Ok(rows)
    }

    /// [`Engine::recent_tasks`] of one partition.
    async fn recent_in(&self, part: usize, kind: &str, per_lane: usize) -> Result<Vec<RecentTask>, EngineError> {
        let keys = self.part(part);
        let mut con = self.conn();
        let mut rows: Vec<RecentTask> = Vec::new();
        for lane in Lane::ALL {
            let v: redis::Value = redis::cmd("XREVRANGE")
                .arg(keys.lane(lane))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(per_lane * 4)
                .query_async(&mut con)
                .await?;
            let mut taken = 0;
            for (entry, fields) in parse_entries(&v) {
                let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).unwrap_or_default();
                let task_kind = get("kind");
                if !task_kind.contains(kind) {
                    continue;
                }
                let queued_ms = super::parse_entry_id(&entry).map(|(ms, _)| ms).unwrap_or(0);
                // A task is named after its entry, unless the entry names it (a redrive).
                let id = Some(get("id")).filter(|id| !id.is_empty());
                rows.push(RecentTask {
                    id: id.or_else(|| task_id_for_entry(part, lane, &entry)).unwrap_or_default(),
                    entry,
                    kind: task_kind,
                    lane,
                    state: None,
                    queued_ms,
                });
                taken += 1;
                if taken >= per_lane {
                    break;
                }
            }
        }
        if rows.is_empty() {
            return Ok(rows);
        }
        let mut pipe = redis::pipe();
        for r in &rows {
            pipe.cmd("HGET").arg(keys.task(&r.id)).arg("state");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut con).await?;
        let mut read_up_to = Vec::new();
        for lane in Lane::ALL {
            read_up_to.push(self.read_position(part, lane).await?);
        }
        // No record: queued if no worker has read the entry yet, or read and about to start (a
        // new task's record is written when it starts); else its record is gone. Whether a read
        // entry is still pending is asked for all of them in one round trip.
        let read: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let at = read_up_to[rows[i].lane.index()].as_deref();
                states[i].is_none() && at.is_some_and(|at| !entry_after(&rows[i].entry, at))
            })
            .collect();
        let mut pending = vec![false; rows.len()];
        if !read.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &read {
                let r = &rows[i];
                pipe.cmd("XPENDING").arg(keys.lane(r.lane)).arg(GROUP).arg(&r.entry).arg(&r.entry).arg(1);
            }
            let found: Vec<redis::Value> = pipe.query_async(&mut con).await.unwrap_or_default();
            for (&i, v) in read.iter().zip(&found) {
                pending[i] = matches!(v, redis::Value::Array(p) if !p.is_empty());
            }
        }
        for (i, (r, s)) in rows.iter_mut().zip(states).enumerate() {
            r.state = match s {
                Some(s) => Some(s),
                None if pending[i] || !read.contains(&i) => Some(TaskState::Pending.as_str().into()),
                None => None,
            };
        }
        // A task that finished is in the history, not here, though its entry may wait to be
        // trimmed (a task that succeeded has left its record for a finished line: no state).
        rows.retain(|r| r.state.as_deref().and_then(TaskState::parse).is_some_and(|s| !s.is_finished()));
        Ok(rows)
    }

    /// The workers whose heartbeats are kept, by name.
    pub async fn workers(&self) -> Result<Vec<WorkerBeat>, EngineError> {
        let mut con = self.conn();
        let beats: BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(self.keys().workers()).query_async(&mut con).await?;
        Ok(beats
            .into_iter()
            .filter_map(|(name, beat)| {
                let b: WorkerBeat = serde_json::from_str(&beat).ok()?;
                Some(WorkerBeat { name, ..b })
            })
            .collect())
    }

    /// How many workers' heartbeats are kept.
    pub async fn worker_count(&self) -> Result<u64, EngineError> {
        let mut con = self.conn();
        Ok(redis::cmd("HLEN").arg(self.keys().workers()).query_async(&mut con).await?)
    }
}

//! Tasks queued to run later (Celery's `countdown`/`eta`, Sidekiq's `perform_in`, BullMQ's
//! `delay`): a sorted set per lane of each partition, the task's record holding the rest, moved
//! onto the lane by a worker's claim when due (enqueue.lua, claim.lua). Here: what operators see
//! of them, and "run now".

use serde::Serialize;

use super::{Engine, EngineError, Lane, entry_of_task, format_ms, is_later_id, now_ms};
use crate::redis::reply::value_str;

/// A task waiting for its time.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LaterTask {
    pub task_id: String,
    pub kind: String,
    pub lane: Lane,
    /// When it is due.
    pub run_at: String,
    pub created_at: Option<String>,
    #[serde(skip)]
    pub run_at_ms: u64,
}

/// What a producer announces on the `later` channel: `<partition> <lane> <due ms>`.
fn announcement(part: usize, lane: Lane, due: u64) -> String {
    format!("{part} {} {due}", lane.as_str())
}

/// An announcement read back (see [`announcement`]).
pub(crate) fn parse_announcement(text: &str) -> Option<(usize, Lane, u64)> {
    let mut words = text.split(' ');
    let part = words.next()?.parse().ok()?;
    let lane = Lane::parse(words.next()?)?;
    let due = words.next()?.parse().ok()?;
    Some((part, lane, due))
}

impl Engine {
    /// Tell the workers that the first task queued for later in a place is due at `due` (ms),
    /// so they look at it on time even when that is sooner than they would look again.
    pub(crate) async fn announce_later(&self, part: usize, lane: Lane, due: u64) -> redis::RedisResult<()> {
        let mut con = self.conn();
        redis::cmd("PUBLISH")
            .arg(self.keys().later_channel())
            .arg(announcement(part, lane, due))
            .query_async::<i64>(&mut con)
            .await
            .map(drop)
    }

    /// The tasks queued for later, the first due first, at most `limit`, of one lane or all.
    pub async fn later_tasks(&self, lane: Option<Lane>, limit: usize) -> Result<Vec<LaterTask>, EngineError> {
        let lanes: Vec<Lane> = Lane::ALL.into_iter().filter(|l| lane.is_none_or(|x| x == *l)).collect();
        let parts = (0..self.partitions()).map(|p| self.part_later(p, &lanes, limit));
        let mut all: Vec<LaterTask> = futures_util::future::try_join_all(parts).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| (a.run_at_ms, &a.task_id).cmp(&(b.run_at_ms, &b.task_id)));
        all.truncate(limit);
        Ok(all)
    }

    /// One partition's first `limit` tasks queued for later in `lanes`, with their kinds.
    async fn part_later(&self, part: usize, lanes: &[Lane], limit: usize) -> Result<Vec<LaterTask>, EngineError> {
        let keys = self.part(part);
        let mut pipe = redis::pipe();
        for &lane in lanes {
            pipe.cmd("ZRANGE").arg(keys.later(lane)).arg(0).arg(limit.saturating_sub(1)).arg("WITHSCORES");
        }
        let mut con = self.conn();
        let sets: Vec<Vec<(String, f64)>> = pipe.query_async(&mut con).await?;
        let mut found: Vec<(Lane, String, u64)> = Vec::new();
        for (&lane, set) in lanes.iter().zip(sets) {
            found.extend(set.into_iter().map(|(id, due)| (lane, id, due as u64)));
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (_, id, _) in &found {
            pipe.cmd("HMGET").arg(keys.task(id)).arg("kind").arg("created_at");
        }
        let records: Vec<Vec<redis::Value>> = pipe.query_async(&mut con).await?;
        Ok(found
            .into_iter()
            .zip(records)
            .map(|((lane, task_id, due), f)| LaterTask {
                task_id,
                kind: f.first().and_then(value_str).unwrap_or_default(),
                lane,
                run_at: format_ms(due),
                created_at: f.get(1).and_then(value_str).and_then(|c| c.parse().ok()).map(format_ms),
                run_at_ms: due,
            })
            .collect())
    }

    /// Make a task queued for later due now; a worker starts it as soon as it has room in its
    /// lane. [`EngineError::NotLater`] when it is not waiting (any more).
    pub async fn run_now(&self, id: &str) -> Result<(), EngineError> {
        let Some((part, lane, _)) = entry_of_task(id).filter(|_| is_later_id(id)) else {
            return Err(EngineError::NotLater(id.to_string()));
        };
        if part >= self.partitions() {
            return Err(EngineError::NotLater(id.to_string()));
        }
        let keys = self.part(part);
        let now = now_ms();
        let mut con = self.conn();
        let waiting: i64 = self
            .scripts()
            .run_now
            .key(keys.later(lane))
            .key(keys.task(id))
            .arg(now)
            .arg(id)
            .invoke_async(&mut con)
            .await?;
        if waiting == 0 {
            return Err(EngineError::NotLater(id.to_string()));
        }
        self.announce_later(part, lane, now).await?;
        tracing::info!(task_id = id, "task queued for later made due now");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_read_back_as_written() {
        assert_eq!(
            parse_announcement(&announcement(11, Lane::Webhooks, 1796181455301)),
            Some((11, Lane::Webhooks, 1796181455301))
        );
        for bad in ["", "1 email 5", "x webhooks 5", "1 webhooks", "1 webhooks soon"] {
            assert_eq!(parse_announcement(bad), None, "{bad}");
        }
    }
}

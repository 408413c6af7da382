//! Putting tasks on lanes: one script call per lane per batch.

use std::time::Duration;

use super::{Engine, EngineError, Lane, TaskSpec, new_task_id, now_ms};

/// Largest payload accepted for one task, as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Tasks per script call: big enough to amortise the round trip, small enough not to stall Redis.
const CHUNK: usize = 500;

struct Prepared {
    lane: Lane,
    id: String,
    kind: String,
    payload: String,
    max_attempts: u32,
    idempotency_key: String,
}

impl Engine {
    /// Queue one task; returns its id (or, for a repeated idempotency key, the first task's id).
    pub async fn enqueue(&self, spec: TaskSpec) -> Result<String, EngineError> {
        let mut ids = self.enqueue_batch(vec![spec]).await?;
        ids.pop().ok_or_else(|| EngineError::BadInput("nothing was queued".into()))
    }

    /// Queue many tasks with as few round trips as possible; ids come back in the same order.
    pub async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<String>, EngineError> {
        Ok(self.enqueue_many(specs).await?.into_iter().map(|(id, _)| id).collect())
    }

    /// As [`Engine::enqueue_batch`], telling for each task whether it was queued now (`true`) or
    /// its idempotency key named an earlier task (`false`, with that task's id).
    pub async fn enqueue_many(&self, specs: Vec<TaskSpec>) -> Result<Vec<(String, bool)>, EngineError> {
        let prepared = specs.into_iter().map(|s| self.prepare(s)).collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![(String::new(), false); prepared.len()];
        for lane in Lane::ALL {
            let idx: Vec<usize> = (0..prepared.len()).filter(|&i| prepared[i].lane == lane).collect();
            for chunk in idx.chunks(CHUNK) {
                let ids = self.enqueue_chunk(lane, chunk.iter().map(|&i| &prepared[i])).await?;
                for (&i, id) in chunk.iter().zip(ids) {
                    let created = id == prepared[i].id;
                    if created {
                        metrics::counter!("switchyard_tasks_enqueued_total", "lane" => lane.as_str(), "kind" => prepared[i].kind.clone())
                            .increment(1);
                    }
                    out[i] = (id, created);
                }
            }
        }
        Ok(out)
    }

    fn prepare(&self, spec: TaskSpec) -> Result<Prepared, EngineError> {
        let registered = self.registry().get(&spec.kind).ok_or_else(|| EngineError::UnknownKind(spec.kind.clone()))?;
        let max_attempts = match spec.max_attempts {
            None => self.retry_policy(&spec.kind).max_attempts,
            Some(n @ 1..=100) => n,
            Some(n) => return Err(EngineError::BadInput(format!("max_attempts must be between 1 and 100, got {n}"))),
        };
        let payload = serde_json::to_string(&spec.payload).map_err(|e| EngineError::BadInput(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EngineError::BadInput(format!(
                "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            )));
        }
        let idempotency_key = spec.idempotency_key.unwrap_or_default();
        if idempotency_key.len() > 512 {
            return Err(EngineError::BadInput("idempotency_key is longer than 512 bytes".into()));
        }
        Ok(Prepared {
            lane: spec.lane.unwrap_or(registered.lane),
            id: new_task_id(),
            kind: spec.kind,
            payload,
            max_attempts,
            idempotency_key,
        })
    }

    async fn enqueue_chunk<'a>(
        &self,
        lane: Lane,
        tasks: impl Iterator<Item = &'a Prepared>,
    ) -> Result<Vec<String>, EngineError> {
        let c = self.config();
        let mut inv = self.scripts().enqueue.prepare_invoke();
        inv.key(self.keys().lane(lane))
            .arg(self.keys().root())
            .arg(now_ms())
            .arg(lane.as_str())
            .arg(c.idempotency_window.max(Duration::from_millis(1)).as_millis() as u64)
            .arg(c.lane_depth_limit)
            .arg(super::now_us());
        for t in tasks {
            inv.arg(&t.id).arg(&t.kind).arg(&t.payload).arg(t.max_attempts).arg(&t.idempotency_key);
        }
        let mut con = self.conn();
        match inv.invoke_async::<Vec<String>>(&mut con).await {
            Ok(ids) => Ok(ids),
            Err(e) if e.to_string().contains("LANEFULL") => Err(EngineError::LaneFull(lane)),
            Err(e) => Err(e.into()),
        }
    }
}

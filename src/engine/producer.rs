//! Putting tasks on lanes: one script call per lane per batch, and group commit across callers.
//!
//! Every enqueue goes through one batching task per engine. While up to [`IN_FLIGHT`] script
//! calls are on their way, new requests queue up and go out together in the next call: an idle
//! producer pays one round trip, a busy one (a webhook endpoint under load) shares each round
//! trip among everything that arrived meanwhile.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Engine, EngineError, Inner, Lane, TaskSpec, task_id_for_entry};
use crate::telemetry::Handles;

/// Largest payload accepted for one task, as JSON: room for a whole webhook body (1 MiB) kept
/// raw beside the text taken from it.
pub const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// Tasks per script call: big enough to amortise the round trip, small enough not to stall Redis.
const CHUNK: usize = 500;

/// Script calls of one engine's batcher under way at once.
const IN_FLIGHT: usize = 2;

pub(super) struct Job {
    tasks: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Queued>, EngineError>>,
}

/// What became of one task of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Queued {
    /// Queued now, under this id.
    New(String),
    /// Its idempotency key was seen: the earlier task's id, or `None` when the key was given
    /// with [`TaskSpec::dedup_key`] and no id was kept.
    Earlier(Option<String>),
}

pub(super) type Batcher = mpsc::UnboundedSender<Job>;

/// Collect jobs into batches and send them, until every handle on the engine is gone.
async fn run_batcher(engine: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut size = first.tasks.len();
        let mut jobs = vec![first];
        while size < CHUNK {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.tasks.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = engine.upgrade() else { return };
        let engine = Engine { inner };
        tokio::spawn(async move {
            engine.send_jobs(jobs).await;
            drop(slot);
        });
    }
}

struct Prepared {
    lane: Lane,
    kind: String,
    payload: String,
    max_attempts: u32,
    idempotency_key: String,
    dedup_only: bool,
    order_key: String,
}

/// `switchyard_tasks_enqueued_total{lane, kind}`.
fn enqueued(lane: Lane, kind: &str) -> metrics::Counter {
    static HANDLES: LazyLock<Handles<metrics::Counter>> = LazyLock::new(Handles::new);
    HANDLES.get(
        kind,
        lane as u32,
        || metrics::counter!("switchyard_tasks_enqueued_total", "lane" => lane.as_str(), "kind" => kind.to_owned()),
    )
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
    /// its idempotency key named an earlier task (`false`, with that task's id; an empty id for
    /// a key given with [`TaskSpec::dedup_key`]).
    pub async fn enqueue_many(&self, specs: Vec<TaskSpec>) -> Result<Vec<(String, bool)>, EngineError> {
        let prepared = specs.into_iter().map(|s| self.prepare(s)).collect::<Result<Vec<_>, _>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let own: Vec<(Lane, String)> = prepared.iter().map(|p| (p.lane, p.kind.clone())).collect();
        let (reply, answer) = oneshot::channel();
        let batcher = self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(Arc::downgrade(&self.inner), rx));
            tx
        });
        batcher
            .send(Job { tasks: prepared, reply })
            .map_err(|_| EngineError::BadInput("the engine is shutting down".into()))?;
        let queued = answer.await.map_err(|_| EngineError::BadInput("the engine is shutting down".into()))??;
        Ok(own
            .into_iter()
            .zip(queued)
            .map(|((lane, kind), q)| match q {
                Queued::New(id) => {
                    enqueued(lane, &kind).increment(1);
                    (id, true)
                }
                Queued::Earlier(id) => (id.unwrap_or_default(), false),
            })
            .collect())
    }

    /// Send a batch of jobs: one script call per lane and chunk, then every job its answer.
    async fn send_jobs(&self, jobs: Vec<Job>) {
        let mut results: Vec<Result<Vec<Queued>, EngineError>> =
            jobs.iter().map(|j| Ok(vec![Queued::Earlier(None); j.tasks.len()])).collect();
        for lane in Lane::ALL {
            let places: Vec<(usize, usize)> = jobs
                .iter()
                .enumerate()
                .flat_map(|(j, job)| {
                    job.tasks.iter().enumerate().filter(|(_, t)| t.lane == lane).map(move |(t, _)| (j, t))
                })
                .collect();
            for chunk in places.chunks(CHUNK) {
                match self.enqueue_chunk(lane, chunk.iter().map(|&(j, t)| &jobs[j].tasks[t])).await {
                    Ok(answers) => {
                        for (&(j, t), answer) in chunk.iter().zip(answers) {
                            match (answer, &mut results[j]) {
                                (Some(q), Ok(r)) => r[t] = q,
                                // The lane is full: the job is refused. Its other tasks may be
                                // stored; a retry with the same idempotency keys finds them.
                                (None, r) => *r = Err(EngineError::LaneFull(lane)),
                                (Some(_), Err(_)) => {}
                            }
                        }
                    }
                    Err(e) => {
                        for &(j, _) in chunk {
                            results[j] = Err(match &e {
                                EngineError::Redis(r) => EngineError::Redis(r.clone()),
                                other => EngineError::BadInput(other.to_string()),
                            });
                        }
                    }
                }
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }

    /// How long an order key's sequence outlives its last enqueue: longer than any task of it can
    /// wait, so a sequence never restarts under a task still queued.
    pub(crate) fn order_ttl(&self) -> Duration {
        (self.config().task_retention * 2).max(Duration::from_secs(7 * 24 * 3600))
    }

    fn prepare(&self, spec: TaskSpec) -> Result<Prepared, EngineError> {
        let registered = self.registry().get(&spec.kind).ok_or_else(|| EngineError::UnknownKind(spec.kind.clone()))?;
        let max_attempts = match spec.max_attempts {
            None => self.retry_policy(&spec.kind).max_attempts,
            Some(n @ 1..=100) => n,
            Some(n) => return Err(EngineError::BadInput(format!("max_attempts must be between 1 and 100, got {n}"))),
        };
        let payload = match spec.payload_json {
            Some(json) => json,
            None => serde_json::to_string(&spec.payload).map_err(|e| EngineError::BadInput(e.to_string()))?,
        };
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
        let order_key = spec.order_key.unwrap_or_default();
        if order_key.len() > 512 {
            return Err(EngineError::BadInput("order_key is longer than 512 bytes".into()));
        }
        Ok(Prepared {
            lane: spec.lane.unwrap_or(registered.lane),
            kind: spec.kind,
            payload,
            max_attempts,
            idempotency_key,
            dedup_only: spec.dedup_only,
            order_key,
        })
    }

    /// One script call for tasks of one lane; per task what became of it, `None` when the
    /// lane was full.
    async fn enqueue_chunk<'a>(
        &self,
        lane: Lane,
        tasks: impl Iterator<Item = &'a Prepared>,
    ) -> Result<Vec<Option<Queued>>, EngineError> {
        let c = self.config();
        let mut inv = self.scripts().enqueue.prepare_invoke();
        inv.key(self.keys().lane(lane))
            .arg(self.keys().root())
            .arg(lane.index())
            .arg(c.idempotency_window.max(Duration::from_millis(1)).as_millis() as u64)
            .arg(c.lane_depth_limit)
            .arg(super::now_us())
            .arg(crate::redis::GROUP);
        for t in tasks {
            inv.arg(&t.kind)
                .arg(&t.payload)
                .arg(t.max_attempts)
                .arg(&t.idempotency_key)
                .arg(if t.dedup_only { "" } else { "1" })
                .arg(&t.order_key);
        }
        let mut con = self.conn();
        let answers: Vec<Option<String>> = inv.invoke_async(&mut con).await.map_err(EngineError::Redis)?;
        answers
            .into_iter()
            .map(|a| {
                let Some(a) = a else { return Ok(None) };
                let q = match a.split_at_checked(1) {
                    Some(("n", entry)) => task_id_for_entry(lane, entry).map(Queued::New),
                    Some(("e", id)) => Some(Queued::Earlier(Some(id.to_string()))),
                    Some(("d", "")) => Some(Queued::Earlier(None)),
                    _ => None,
                };
                q.map(Some).ok_or_else(|| EngineError::BadInput(format!("the enqueue script answered `{a}`")))
            })
            .collect()
    }
}

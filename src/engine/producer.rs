//! Putting tasks on lanes: one script call per lane per batch, and group commit across callers.
//!
//! Every enqueue goes through one batching task per engine. While up to [`IN_FLIGHT`] script
//! calls are on their way, new requests queue up and go out together in the next call: an idle
//! producer pays one round trip, a busy one (a webhook endpoint under load) shares each round
//! trip among everything that arrived meanwhile.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::{Engine, EngineError, Inner, Lane, TaskSpec, task_id_for_entry};
use crate::telemetry::recorder::Handles;
use crate::telemetry::trace;

/// Largest payload accepted for one task, as JSON: room for a whole webhook body (1 MiB) kept
/// raw beside the text taken from it.
pub(super) const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// Tasks per script call: big enough to amortise the round trip, small enough not to stall Redis.
const CHUNK: usize = 500;

/// How long a write waits for a replica with `DURABILITY=replicated` before it is answered as
/// not taken (it may still be there: a retry finds it as a repeat).
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// Script calls of one engine's batcher under way at once.
const IN_FLIGHT: usize = 2;

/// Longest idempotency or order key kept as it is; a longer one is kept as its hash.
pub const KEY_LIMIT: usize = 512;

/// What a key too long to keep as it is becomes: this prefix and its SHA-256 in hex.
const HASHED: &str = "#sha256:";

/// An idempotency or order key as stored: itself when it is at most [`KEY_LIMIT`] bytes and does
/// not begin with [`HASHED`], else [`HASHED`] and its hash. So a key of any length is taken, its
/// marker stays small, and two different keys never meet: a kept key cannot begin as a hashed one.
pub fn bounded_key(key: &str) -> Cow<'_, str> {
    if key.len() <= KEY_LIMIT && !key.starts_with(HASHED) {
        return Cow::Borrowed(key);
    }
    Cow::Owned(format!("{HASHED}{}", hex::encode(Sha256::digest(key.as_bytes()))))
}

/// What an idempotency key remembers of the task it made: its kind and payload, hashed (64 bits
/// are plenty to tell a different request from a repeat).
fn fingerprint(kind: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(payload.as_bytes());
    hex::encode(&h.finalize()[..8])
}

pub(super) struct Job {
    tasks: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Enqueued>, EngineError>>,
}

/// What became of one task of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued now, under this id.
    New(String),
    /// Its idempotency key was seen, with the same kind and payload: the earlier task's id, or
    /// `None` when the key was given with [`TaskSpec::dedup_key`] and no id was kept.
    Repeat(Option<String>),
    /// Its idempotency key was seen with another kind or payload: the earlier task's id. Nothing
    /// was queued.
    Conflict(String),
}

impl Enqueued {
    pub fn is_new(&self) -> bool {
        matches!(self, Enqueued::New(_))
    }

    /// The task's id: the new one, or the earlier task's (empty when no id was kept).
    pub fn id(&self) -> &str {
        match self {
            Enqueued::New(id) | Enqueued::Repeat(Some(id)) | Enqueued::Conflict(id) => id,
            Enqueued::Repeat(None) => "",
        }
    }
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

/// Whether markers of earlier builds (`idem:<key>`, a string each) may still be there to be
/// looked at: for one idempotency window after this engine first queues anything, unless a walk
/// over the keys, started then, finds none (a deployment that never ran such a build, or whose
/// markers have all expired), which spares every keyed enqueue a lookup. A producer of an
/// earlier build still running beside this one during an upgrade is not looked for: the two
/// never saw each other's markers anyway.
#[derive(Default)]
pub(crate) struct OldMarkers {
    since: OnceLock<Instant>,
    none: AtomicBool,
}

impl OldMarkers {
    fn look(&self, window: Duration) -> bool {
        !self.none.load(Ordering::Relaxed) && self.since.get().is_none_or(|t| t.elapsed() <= window)
    }
}

/// Walk the keys once for markers of earlier builds; say so when there are none.
async fn look_for_old_markers(engine: Weak<Inner>) {
    let Some(inner) = engine.upgrade() else { return };
    let engine = Engine { inner };
    let con = engine.conn();
    let mut scan = crate::redis::Scan::prefixed(&engine.keys().idempotency("")).of_type("string");
    loop {
        match scan.next(&con).await {
            Ok(Some(keys)) if keys.is_empty() => continue,
            Ok(Some(_)) => return,
            Ok(None) => break,
            // Redis away: keep looking at them for the window.
            Err(_) => return,
        }
    }
    engine.inner.old_markers.none.store(true, Ordering::Relaxed);
}

struct Prepared {
    part: usize,
    lane: Lane,
    kind: String,
    payload: String,
    max_attempts: u32,
    idempotency_key: String,
    /// Its marker's name: 16 bytes of the key's SHA-256 (empty for no key; see enqueue.lua).
    marker: Vec<u8>,
    /// What the marker keeps to tell a repeat from a conflict; empty for a dedup key.
    fingerprint: String,
    order_key: String,
    /// When it is due (ms), for a task queued for later; its id then, made here.
    later: Option<(u64, String)>,
    /// The W3C trace context of the enqueue, when traces are on (empty otherwise).
    traceparent: String,
}

/// Per slot, the `WAIT`s of `DURABILITY=replicated` ([`Engine::wait_for_replica`]).
#[derive(Default)]
pub(super) struct ReplicaWaits(std::sync::Mutex<std::collections::HashMap<u16, Arc<WaitGate>>>);

impl ReplicaWaits {
    fn gate(&self, slot: u16) -> Arc<WaitGate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(slot).or_default().clone()
    }
}

#[derive(Default)]
struct WaitGate {
    /// Writes numbered so far in this slot.
    writes: std::sync::atomic::AtomicU64,
    /// What the `WAIT`s sent so far said, held while one is out.
    told: tokio::sync::Mutex<Told>,
}

/// The writes (by number) up to which a `WAIT` confirmed a replica had them, and up to which
/// one could not.
#[derive(Default)]
struct Told {
    confirmed: u64,
    unconfirmed: u64,
}

/// One script call of a group commit: a partition, a lane, and the (job, task) places of the
/// tasks it queues.
type Call = (usize, Lane, Vec<(usize, usize)>);

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

    /// Queue one task for a caller from outside (the API, the command line): as
    /// [`Engine::enqueue`], but an idempotency key seen with another kind or payload is refused
    /// ([`EngineError::IdempotencyConflict`], naming the first task) instead of answered with it.
    /// A caller's idempotency keys live apart from the ones Switchyard makes itself (webhooks'
    /// message ids, replies, schedule ticks), so no caller can pass for a platform's event.
    pub async fn submit(&self, mut spec: TaskSpec) -> Result<String, EngineError> {
        spec.idempotency_key = spec.idempotency_key.map(|k| format!("api:{k}"));
        self.check_room().await?;
        match self.enqueue_many(vec![spec]).await?.pop() {
            Some(Enqueued::Conflict(task_id)) => Err(EngineError::IdempotencyConflict(task_id)),
            Some(q) => Ok(q.id().to_string()),
            None => Err(EngineError::BadInput("nothing was queued".into())),
        }
    }

    /// Queue many tasks with as few round trips as possible; ids come back in the same order.
    pub async fn enqueue_batch(&self, specs: Vec<TaskSpec>) -> Result<Vec<String>, EngineError> {
        Ok(self.enqueue_many(specs).await?.iter().map(|q| q.id().to_string()).collect())
    }

    /// As [`Engine::enqueue_batch`], telling for each task what became of it.
    pub async fn enqueue_many(&self, specs: Vec<TaskSpec>) -> Result<Vec<Enqueued>, EngineError> {
        // Tasks with no routing key go to one partition per call, each in turn.
        let any = if self.partitions() > 1 { self.next_part() } else { 0 };
        // With traces on, the enqueue is a span, and its context goes into every entry: the
        // tasks' attempts are its children.
        let span = tracing::debug_span!(
            "enqueue",
            tasks = specs.len(),
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        let traceparent = match span.is_disabled() {
            true => String::new(),
            false => {
                trace::name(&span, || "enqueue".into(), "producer");
                span.in_scope(trace::current_traceparent).unwrap_or_default()
            }
        };
        let mut prepared = specs.into_iter().map(|s| self.prepare(s, any)).collect::<Result<Vec<_>, _>>()?;
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        if !traceparent.is_empty() {
            for p in &mut prepared {
                p.traceparent.clone_from(&traceparent);
            }
        }
        let own: Vec<(Lane, String)> = prepared.iter().map(|p| (p.lane, p.kind.clone())).collect();
        let (reply, answer) = oneshot::channel();
        let batcher = self.inner.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run_batcher(Arc::downgrade(&self.inner), rx));
            let _ = self.inner.old_markers.since.set(Instant::now());
            tokio::spawn(look_for_old_markers(Arc::downgrade(&self.inner)));
            tx
        });
        batcher
            .send(Job { tasks: prepared, reply })
            .map_err(|_| EngineError::BadInput("the engine is shutting down".into()))?;
        let queued = answer
            .instrument(span.clone())
            .await
            .map_err(|_| EngineError::BadInput("the engine is shutting down".into()))
            .and_then(|r| r)
            .inspect_err(|e| trace::failed(&span, &e.to_string()))?;
        for ((lane, kind), q) in own.iter().zip(&queued) {
            if q.is_new() {
                enqueued(*lane, kind).increment(1);
            }
        }
        Ok(queued)
    }

    /// Send a batch of jobs: one script call per partition, lane and chunk, then every job its
    /// answer.
    async fn send_jobs(&self, jobs: Vec<Job>) {
        let mut results: Vec<Result<Vec<Enqueued>, EngineError>> =
            jobs.iter().map(|j| Ok(vec![Enqueued::Repeat(None); j.tasks.len()])).collect();
        let mut used: Vec<(usize, Lane)> = jobs.iter().flat_map(|j| j.tasks.iter().map(|t| (t.part, t.lane))).collect();
        used.sort_unstable_by_key(|&(p, l)| (p, l.index()));
        used.dedup();
        // One script call per (partition, lane) and chunk, all sent at once: on a cluster they go
        // to their masters side by side, on one server they share the connection's pipeline.
        let mut calls: Vec<Call> = Vec::new();
        for (part, lane) in used {
            let places: Vec<(usize, usize)> = jobs
                .iter()
                .enumerate()
                .flat_map(|(j, job)| {
                    job.tasks
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.lane == lane && t.part == part)
                        .map(move |(t, _)| (j, t))
                })
                .collect();
            calls.extend(places.chunks(CHUNK).map(|c| (part, lane, c.to_vec())));
        }
        let answers = futures_util::future::join_all(calls.iter().map(|(part, lane, chunk)| {
            self.enqueue_chunk(*part, *lane, chunk.iter().map(|&(j, t)| &jobs[j].tasks[t]))
        }))
        .await;
        for ((_, lane, chunk), answer) in calls.iter().zip(answers) {
            match answer {
                Ok(answers) => {
                    for (&(j, t), answer) in chunk.iter().zip(answers) {
                        match (answer, &mut results[j]) {
                            (Some(q), Ok(r)) => r[t] = q,
                            // The lane is full: the job is refused. Its other tasks may be
                            // stored; a retry with the same idempotency keys finds them.
                            (None, r) => *r = Err(EngineError::LaneFull(*lane)),
                            (Some(_), Err(_)) => {}
                        }
                    }
                }
                Err(e) => {
                    for &(j, _) in chunk {
                        results[j] = Err(match &e {
                            EngineError::Redis(r) => EngineError::Redis(r.clone()),
                            EngineError::NotReplicated(wait) => EngineError::NotReplicated(*wait),
                            other => EngineError::BadInput(other.to_string()),
                        });
                    }
                }
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }

    /// Wait until a replica of the master holding `key` has every write this process sent it so
    /// far (`WAIT` counts the connection's writes: the one just made, and whatever else shared
    /// the connection meanwhile, so one wait covers a whole batch).
    ///
    /// A `WAIT` holds the connection it is sent on — every command to that master queues
    /// behind it — for up to its timeout; with the replica gone, one per enqueue would hold the
    /// master's commands past their own timeout. So a slot has one `WAIT` at a time, and a
    /// caller whose write an earlier caller's `WAIT` (sent after that write) covered takes its
    /// answer instead of sending another.
    pub(crate) async fn wait_for_replica(&self, key: &str) -> Result<(), EngineError> {
        let gate = self.inner.replica_waits.gate(crate::redis::partition::slot(key));
        // Numbered once written: a WAIT sent after this number was given covers the write.
        let mine = gate.writes.fetch_add(1, Ordering::AcqRel) + 1;
        let mut told = gate.told.lock().await;
        if told.confirmed >= mine {
            return Ok(());
        }
        if told.unconfirmed >= mine {
            return Err(EngineError::NotReplicated(REPLICA_WAIT));
        }
        let upto = gate.writes.load(Ordering::Acquire);
        let answer = self.wait_once(key).await;
        match &answer {
            Ok(()) => told.confirmed = told.confirmed.max(upto),
            Err(_) => told.unconfirmed = told.unconfirmed.max(upto),
        }
        answer
    }

    /// One `WAIT` for one replica, on the connection to the master holding `key`.
    async fn wait_once(&self, key: &str) -> Result<(), EngineError> {
        let timeout = REPLICA_WAIT.as_millis() as u64;
        let answer: redis::Value = self.conn().query_at(key, redis::cmd("WAIT").arg(1).arg(timeout)).await?;
        match answer {
            redis::Value::Int(acked) if acked >= 1 => Ok(()),
            redis::Value::Int(_) => Err(EngineError::NotReplicated(REPLICA_WAIT)),
            // The node the slot map names is no master any more (`WAIT cannot be used with
            // replica instances`: a failover under way, the map not yet read afresh): the write
            // is not known to be on a replica, and the caller is told to try again.
            other => {
                tracing::debug!(answer = ?other, "WAIT was not answered with a count");
                Err(EngineError::NotReplicated(REPLICA_WAIT))
            }
        }
    }

    /// How long an order key's sequence outlives its last enqueue: longer than any task of it can
    /// wait, so a sequence never restarts under a task still queued.
    pub(crate) fn order_ttl(&self) -> Duration {
        (self.config().task_retention * 2).max(Duration::from_secs(7 * 24 * 3600))
    }

    /// A task ready to send; `any` is the partition of a task without a routing key.
    fn prepare(&self, spec: TaskSpec, any: usize) -> Result<Prepared, EngineError> {
        let registered = self.registry().get(&spec.kind).ok_or_else(|| EngineError::UnknownKind(spec.kind.clone()))?;
        let max_attempts = match spec.max_attempts {
            None => self.retry_policy(&spec.kind).max_attempts,
            Some(n @ 1..=100) => n,
            Some(n) => return Err(EngineError::BadInput(format!("max_attempts must be between 1 and 100, got {n}"))),
        };
        let due = spec.due_ms(super::now_ms()).map_err(EngineError::BadInput)?;
        let part = match spec.routing_key() {
            Some(key) => self.part_of_key(key),
            None => any,
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
        let idempotency_key = spec.idempotency_key.as_deref().map(bounded_key).unwrap_or_default().into_owned();
        let fingerprint = match spec.dedup_only || idempotency_key.is_empty() {
            true => String::new(),
            false => fingerprint(&spec.kind, &payload),
        };
        let order_key = spec.order_key.as_deref().map(bounded_key).unwrap_or_default().into_owned();
        let lane = spec.lane.unwrap_or(registered.lane);
        let now = super::now_ms();
        let later = match due {
            Some(due) => Some((
                due,
                super::task_id_for_later(part, lane, now)
                    .ok_or_else(|| EngineError::BadInput(format!("no task id names partition {part}")))?,
            )),
            None => None,
        };
        let marker = match idempotency_key.is_empty() {
            true => Vec::new(),
            false => Sha256::digest(idempotency_key.as_bytes())[..16].to_vec(),
        };
        Ok(Prepared {
            part,
            lane,
            kind: spec.kind,
            payload,
            max_attempts,
            idempotency_key,
            marker,
            fingerprint,
            order_key,
            later,
            traceparent: String::new(),
        })
    }

    /// One script call for tasks of one lane; per task what became of it, `None` when the
    /// lane was full.
    async fn enqueue_chunk<'a>(
        &self,
        part: usize,
        lane: Lane,
        tasks: impl Iterator<Item = &'a Prepared>,
    ) -> Result<Vec<Option<Enqueued>>, EngineError> {
        let c = self.config();
        let legacy = self.inner.old_markers.look(c.idempotency_window);
        let mut inv = self.scripts().enqueue.prepare_invoke();
        let keys = self.part(part);
        inv.key(keys.lane(lane))
            .key(keys.later(lane))
            .arg(keys.root())
            .arg(super::id_place(part, lane))
            .arg(c.idempotency_window.max(Duration::from_millis(1)).as_millis() as u64)
            // Each partition's lane holds its share of the lane's limit.
            .arg(c.lane_depth_limit.div_ceil(self.partitions() as u64))
            .arg(super::now_us())
            .arg(crate::redis::GROUP)
            .arg(lane.as_str());
        // The earliest due of the tasks that became the first due in this place.
        let mut first_due: Option<u64> = None;
        for t in tasks {
            if let Some((due, _)) = &t.later
                && first_due.is_none_or(|d| *due < d)
            {
                first_due = Some(*due);
            }
            inv.arg(&t.kind)
                .arg(&t.payload)
                .arg(t.max_attempts)
                .arg(&t.marker[..])
                .arg(if legacy { t.idempotency_key.as_str() } else { "" })
                .arg(&t.fingerprint)
                .arg(&t.order_key)
                .arg(t.later.as_ref().map(|(due, _)| due.to_string()).unwrap_or_default())
                .arg(t.later.as_ref().map(|(_, id)| id.as_str()).unwrap_or_default())
                .arg(&t.traceparent);
        }
        let mut con = self.conn();
        let answers: Vec<Option<String>> = inv.invoke_async(&mut con).await.map_err(EngineError::Redis)?;
        if c.durability == crate::config::Durability::Replicated {
            self.wait_for_replica(&keys.lane(lane)).await?;
        }
        // A task that is now the first due in its place: workers learn of it at once, so it
        // starts on time even when it is due sooner than they would look again.
        // (Not announced, workers still look within a second.)
        if let Some(due) = first_due
            && answers.iter().any(|a| a.as_deref().is_some_and(|a| a.starts_with('S')))
            && let Err(e) = self.announce_later(part, lane, due).await
        {
            tracing::debug!(error = %e, "could not announce a task queued for later");
        }
        answers
            .into_iter()
            .map(|a| {
                let Some(a) = a else { return Ok(None) };
                let q = match a.split_at_checked(1) {
                    Some(("n", entry)) => task_id_for_entry(part, lane, entry).map(Enqueued::New),
                    Some(("e", id)) => Some(Enqueued::Repeat(Some(id.to_string()))),
                    Some(("x", id)) => Some(Enqueued::Conflict(id.to_string())),
                    Some(("s" | "S", id)) => Some(Enqueued::New(id.to_string())),
                    Some(("d", "")) => Some(Enqueued::Repeat(None)),
                    _ => None,
                };
                q.map(Some).ok_or_else(|| EngineError::BadInput(format!("the enqueue script answered `{a}`")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed_and_never_meet_a_kept_one() {
        assert_eq!(bounded_key("order-42"), "order-42");
        let long = "m".repeat(KEY_LIMIT + 1);
        let hashed = bounded_key(&long);
        assert!(hashed.starts_with(HASHED) && hashed.len() < 100, "{hashed}");
        assert_eq!(bounded_key(&long), hashed, "the same key, the same hash");
        assert_ne!(bounded_key(&"m".repeat(KEY_LIMIT + 2)), hashed);
        // A key written as the hash of another is not taken for it.
        assert_ne!(bounded_key(&hashed), hashed);
        assert_eq!(bounded_key(&"k".repeat(KEY_LIMIT)).len(), KEY_LIMIT, "at the limit, kept as it is");
    }

    #[test]
    fn a_fingerprint_tells_kind_and_payload_apart() {
        assert_eq!(fingerprint("a", "{}"), fingerprint("a", "{}"));
        assert_ne!(fingerprint("a", "{}"), fingerprint("b", "{}"));
        assert_ne!(fingerprint("a", "{}"), fingerprint("a", "{\"x\":1}"));
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
        assert!(!fingerprint("a", "").contains(' '), "the marker splits id and fingerprint at a space");
    }
}

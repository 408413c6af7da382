//! The task engine: lanes as Redis Streams, consumer-group workers, retries, the DLQ.
//!
//! # Streams and groups
//! Each lane is one stream (`{sy}:lane:<lane>`) with one consumer group, `workers`. Every
//! worker process joins it under a unique consumer name (host, pid and a random suffix), so
//! several processes share the work and a restarted process never inherits a dead one's name.
//! A producer appends the task as an entry (`kind`, `payload`, enqueue time, attempt budget,
//! order key) and nothing else: a queued task is its entry. Its id is named after the entry (a
//! UUIDv7 holding the entry's time, lane and sequence number: [`task_id_for_entry`]), so a
//! status lookup or a cancel finds a queued task without any index, and an enqueue writes at
//! most two keys (the entry and an idempotency marker) — the webhook path's whole Redis cost.
//!
//! # One task's life
//! A worker reads new entries with `fetch.lua` (`XREADGROUP ... COUNT n`, at most its free
//! capacity), which in the same step gives each new ordered task its record (`{sy}:task:<id>`,
//! state `PENDING`) and its number in its order key's sequence — in lane order, since reads
//! are atomic, so numbers follow enqueue order whatever the number of workers. Any other task
//! gets its record from its first start, in the write that start makes anyway; until then a
//! status lookup or a cancel reads its entry. The script cannot block; an idle worker waits
//! with `XREAD BLOCK` from the group's read position. The entry is now pending to that worker.
//! The attempt's start and end are written in batches:
//! one `EVALSHA` covers every task that started or finished since the last write. On success
//! the same script acks the batch (one `XACK` per lane) and trims acknowledged entries from the
//! head of the stream (`XTRIM MINID`, never past the oldest pending or undelivered entry), so
//! streams stay short without a per-entry delete. The ack is the fence: only an attempt whose
//! entry was still pending writes `SUCCESS`.
//!
//! # Retries, crashes and the DLQ
//! A failed attempt is never acked. Its entry stays pending and its id goes into the lane's
//! retry set (`{sy}:retry:<lane>`) with the time its backoff ends. Each worker's upkeep loop
//! runs `claim.lua`, which atomically takes due ids out of that set and `XCLAIM`s them, so
//! exactly one worker runs the next attempt. The same script reclaims entries whose worker
//! stopped renewing its claim for a whole visibility timeout (killed, OOM, machine lost).
//! Live workers renew their claims every third of that timeout, so long tasks are never taken
//! from a live worker. When the attempts are used up, or an attempt fails permanently,
//! `fail.lua` writes the dead letter with the whole attempt history, acks and deletes the entry
//! and marks the task `FAILURE` — one step, so a task is always in exactly one place.
//!
//! Nothing is acked before its outcome is recorded, and every record is written by a script
//! that first checks the entry is still pending; that is why a crash at any point can delay a
//! task but neither lose it nor record it twice.

mod diag;
pub mod dlq;
pub mod events;
pub mod gauges;
mod guardrails;
pub mod history;
pub(crate) mod later;
mod memory;
mod outcome;
mod pause;
mod producer;
pub(crate) mod queues;
mod registry;
mod sessions;
pub(crate) mod stats;
pub(crate) mod status;
mod views;
pub mod worker;

use std::sync::Arc;

use crate::redis::Conn;

pub use crate::model::task::{
    Attempt, Lane, TaskSpec, TaskState, TaskStatus, entry_of_task, format_ms, id_place, is_later_id, new_task_id,
    now_ms, now_us, parse_entry_id, task_id_for_entry, task_id_for_later,
};
pub use events::{TaskEvent, TaskFollow, Told};
pub use history::{FinishedTask, HistoryFilter, HistoryPage};
pub use later::LaterTask;
pub use memory::MemoryTrend;
pub use outcome::{Outcome, RetryPolicy};
pub use producer::{Enqueued, KEY_LIMIT, bounded_key};
pub use registry::{Handler, Payload, Registry, StopReason, TaskContext};
pub use views::{RecentTask, WorkerBeat};

use crate::config::Config;
use crate::redis::{GROUP, Keys, scripts::Scripts};

/// Why an engine operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unknown task kind `{0}`")]
    UnknownKind(String),
    #[error("lane {0} is over its depth limit; try again later")]
    LaneFull(Lane),
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("no schedule named `{0}`")]
    NoSchedule(String),
    #[error("task {id} already finished ({state})")]
    Finished { id: String, state: String },
    #[error("{0}")]
    BadInput(String),
    /// "Run now" of a task that is not waiting to run later (any more).
    #[error("task {0} is not queued for later (it is queued, running or finished already)")]
    NotLater(String),
    /// An idempotency key seen before with another kind or payload: the first task's id.
    #[error("the idempotency key was used by task {0} with another kind or payload")]
    IdempotencyConflict(String),
    /// Redis's memory is at the high-water mark: new work waits until workers have freed some.
    #[error("Redis memory is at its high-water mark ({used} of {max} bytes); try again shortly")]
    MemoryFull { used: u64, max: u64 },
    /// The deployment's data in Redis is spread over another number of partitions than
    /// `PARTITIONS` says: nothing may be read or written.
    #[error(
        "the data under KEY_PREFIX {prefix} is in {found} partition(s) but PARTITIONS is {configured}; start with PARTITIONS={found} (it is fixed per deployment: scale by moving slots between masters)"
    )]
    PartitionsDiffer { prefix: String, found: usize, configured: usize },
    /// `DURABILITY=replicated` and no replica confirmed the write in time.
    #[error("no Redis replica confirmed the write within {0:?} (DURABILITY=replicated); try again")]
    NotReplicated(std::time::Duration),
}

impl EngineError {
    /// True when Redis could not be reached or did not answer in time (as opposed to refusing).
    pub fn is_unavailable(&self) -> bool {
        /// Server answers that mean "not now" rather than "no": loading its data after a restart,
        /// busy with a script, a replica without its primary, out of memory, read-only after a
        /// failover, a cluster moving slots or promoting a replica (a redirection the cluster
        /// client could not follow yet: to a node that is gone, or not yet the slot's owner).
        const NOT_NOW: [&str; 9] =
            ["LOADING", "BUSY", "MASTERDOWN", "OOM", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK"];
        match self {
            EngineError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_cluster_error()
                    || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
                    || e.code().is_some_and(|c| NOT_NOW.contains(&c))
                    // A script reaching a key of its slot that has already moved to another
                    // master, while the slot is being moved.
                    || e.to_string().contains("non local key")
            }
            _ => false,
        }
    }
}

/// A handle on one deployment's engine: settings, keys, scripts, handlers and a shared Redis
/// connection. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// The group-commit queue of enqueues, started on first use.
    batcher: std::sync::OnceLock<producer::Batcher>,
    config: Config,
    keys: Keys,
    /// The keys of each partition; with one, the deployment's own.
    parts: Vec<Keys>,
    /// The partition the next enqueue without a routing key goes to.
    next_part: std::sync::atomic::AtomicUsize,
    scripts: Scripts,
    conn: Conn,
    registry: Registry,
    redis_url: String,
    memory: memory::MemoryWatch,
    old_markers: producer::OldMarkers,
    /// One `WAIT` at a time per slot, its answer shared (`DURABILITY=replicated`).
    replica_waits: producer::ReplicaWaits,
    /// This process's subscription to live task events, started by its first listener.
    hub: Arc<events::Hub>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.hub.stop();
    }
}

impl Engine {
    /// An engine on the given Redis. Connects lazily: it can be made while Redis is away.
    pub fn new(config: Config, redis_url: &str, registry: Registry) -> Result<Engine, EngineError> {
        let conn = crate::redis::connect_lazy(redis_url, crate::redis::Timeouts::from_config(&config))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                batcher: std::sync::OnceLock::new(),
                keys: Keys::new(&config.key_prefix),
                parts: crate::redis::partition::tags(&config.key_prefix, config.partitions)
                    .iter()
                    .map(|t| Keys::new(t))
                    .collect(),
                next_part: std::sync::atomic::AtomicUsize::new(0),
                config,
                scripts: Scripts::new(),
                conn,
                registry,
                redis_url: redis_url.to_string(),
                memory: memory::MemoryWatch::default(),
                old_markers: producer::OldMarkers::default(),
                replica_waits: producer::ReplicaWaits::default(),
                hub: Arc::default(),
            }),
        })
    }

    pub(crate) fn hub(&self) -> &Arc<events::Hub> {
        &self.inner.hub
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The keys of the deployment as a whole (workers, schedules, sessions, reports); with one
    /// partition, every key.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// How many partitions the deployment's tasks are spread over.
    pub fn partitions(&self) -> usize {
        self.inner.parts.len()
    }

    /// The keys of partition `p`.
    pub fn part(&self, p: usize) -> &Keys {
        &self.inner.parts[p]
    }

    /// The partition a routing key (an order key, an idempotency key, a conversation id) goes to.
    pub fn part_of_key(&self, routing_key: &str) -> usize {
        crate::redis::partition::partition_of(routing_key, self.partitions())
    }

    /// The partition of a task, from its id (a ULID of an earlier build: partition 0, the only
    /// one there was).
    pub fn part_of_task(&self, id: &str) -> usize {
        entry_of_task(id).map(|(p, _, _)| p).filter(|p| *p < self.partitions()).unwrap_or(0)
    }

    /// The keys of a conversation's partition (its summary, turns, figures, the markers of its
    /// replies' parts): the partition its messages' tasks go to, ordered by its id.
    pub fn conversation_part(&self, conversation_id: &str) -> &Keys {
        self.part(self.part_of_key(conversation_id))
    }

    /// The keys of a task's partition.
    pub(crate) fn task_part(&self, id: &str) -> &Keys {
        self.part(self.part_of_task(id))
    }

    /// The partition for an enqueue without a routing key: each in turn.
    pub(crate) fn next_part(&self) -> usize {
        self.inner.next_part.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.partitions()
    }

    pub fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn redis_url(&self) -> &str {
        &self.inner.redis_url
    }

    /// The shared connection (a cheap handle; clone per use).
    pub fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Create every lane's stream and consumer group if missing. Idempotent; also what brings
    /// the groups back after a Redis restart without persistence, a flush or a deleted stream.
    /// Refuses a deployment whose data is in another number of partitions.
    pub async fn ensure_groups(&self) -> Result<(), EngineError> {
        self.check_partitions().await?;
        let mut con = self.conn();
        for (keys, lane) in self.inner.parts.iter().flat_map(|k| Lane::ALL.map(|l| (k, l))) {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys.lane(lane))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Record the deployment's number of partitions on first use, and refuse another one after:
    /// order sequences, idempotency markers and task ids all depend on it. Data from before the
    /// number was recorded is in one partition.
    async fn check_partitions(&self) -> Result<(), EngineError> {
        let mut con = self.conn();
        let key = self.keys().partitions();
        let mine = self.partitions();
        let found: Option<usize> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
        let found = match found {
            Some(n) => n,
            None => {
                let single = Keys::new(&self.config().key_prefix);
                let mut pipe = redis::pipe();
                for lane in Lane::ALL {
                    pipe.cmd("EXISTS").arg(single.lane(lane));
                }
                let old: Vec<u64> = pipe.query_async(&mut con).await?;
                let first = if old.iter().any(|&n| n > 0) { 1 } else { mine };
                let _: () = redis::cmd("SET").arg(&key).arg(first).arg("NX").query_async(&mut con).await?;
                let now: Option<usize> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
                now.unwrap_or(first)
            }
        };
        if found != mine {
            return Err(EngineError::PartitionsDiffer {
                prefix: self.config().key_prefix.clone(),
                found,
                configured: mine,
            });
        }
        Ok(())
    }

    /// The retry policy of a kind: its own, or the deployment's.
    pub fn retry_policy(&self, kind: &str) -> RetryPolicy {
        if let Some(p) = self.registry().get(kind).and_then(|r| r.retry) {
            return p;
        }
        let c = self.config();
        RetryPolicy { max_attempts: c.max_retries + 1, base: c.retry_base, factor: 2.0, cap: c.retry_cap }
    }

    /// Record a running task's progress, and tell its listeners. Only onto its record: a
    /// handler may report before its start is written (the start writes a new task's record),
    /// and a record holding nothing but `progress` would hide the task's entry from status
    /// lookups; the next report lands.
    pub(crate) async fn set_progress(&self, task_id: &str, kind: &str, lane: Lane, percent: u8) {
        let mut con = self.conn();
        let r: redis::RedisResult<()> = redis::cmd("EVAL")
            .arg("#!lua flags=allow-oom\nif redis.call('HEXISTS', KEYS[1], 'state') == 1 then redis.call('HSET', KEYS[1], 'progress', ARGV[1]) end")
            .arg(1)
            .arg(self.task_part(task_id).task(task_id))
            .arg(percent)
            .query_async(&mut con)
            .await;
        if let Err(e) = r {
            tracing::debug!(task_id, error = %e, "could not record progress");
        }
        let at = format_ms(now_ms());
        self.publish_events(&[TaskEvent::progress(task_id, kind, lane, percent, &at)]);
    }
}

//! The worker runtime: read, run, record — each step batched.
//!
//! A worker process has these loops around one shared state ([`Shared`]):
//! - `fetch`: reads new entries (`fetch.lua`: `XREADGROUP ... COUNT`) into a local backlog and starts
//!   them in lane-priority order as capacity frees (a pool limit plus one limit per lane);
//! - `run`: one tokio task per attempt, with soft and hard time limits, panics caught;
//! - `commit`: writes starts and outcomes in one pipelined round trip per batch;
//! - `upkeep`: claims due retries and dead workers' entries, renews this worker's claims,
//!   heartbeats, and listens for cancellations;
//! - `fence`: stops and hands back work whose claim could not be renewed in time (Redis out of
//!   reach), before another worker may take it: a task never runs twice at once.
//!
//! Shutdown stops reading, lets running work finish within the grace period, hands back the
//! rest, and writes every outcome before the process lets go.

mod commit;
mod fence;
mod fetch;
mod run;
mod share;
mod upkeep;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::registry::StopSignal;
use super::{Engine, Lane};
use crate::config::Config;
pub(crate) use crate::redis::Backoff;
pub(crate) use commit::Event;

/// How one worker process is shaped.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub lanes: Vec<Lane>,
    /// Attempts run at once, all lanes together.
    pub concurrency: usize,
    /// Attempts run at once per lane, indexed by [`Lane::index`].
    pub lane_concurrency: [usize; 3],
    /// Most entries asked for in one read.
    pub batch: usize,
    /// Consumer name; unique per process unless given.
    pub name: Option<String>,
}

impl WorkerOptions {
    pub fn from_config(c: &Config, lanes: Vec<Lane>) -> WorkerOptions {
        WorkerOptions {
            lanes,
            concurrency: c.concurrency,
            lane_concurrency: Lane::ALL.map(|l| c.lane_concurrency(l)),
            batch: 256,
            name: None,
        }
    }
}

/// One entry handed to this worker: what to run and how many times it was delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The partition whose lane it was read from.
    pub part: usize,
    pub lane: Lane,
    pub entry: String,
    pub id: String,
    pub kind: String,
    pub payload: String,
    /// Enqueue time, µs since the epoch.
    pub at_us: u64,
    /// Attempts allowed for this entry.
    pub max: u32,
    /// Attempts made before this entry existed (a redriven task keeps its history).
    pub base: u32,
    /// Times this entry was delivered, this one included.
    pub deliveries: u32,
    /// The order key and this task's number in its sequence, for ordered tasks.
    pub order: Option<(String, u64)>,
    /// The W3C trace context of the enqueue that queued it, when traces were on there.
    pub traceparent: Option<String>,
    /// A new task without a record: its first start writes the record's fields that come from
    /// the entry (ordered tasks get their record when read, redriven ones keep theirs).
    pub unrecorded: bool,
}

impl Delivery {
    pub(crate) fn from_fields(
        part: usize,
        lane: Lane,
        entry: String,
        fields: &[(String, String)],
        deliveries: u32,
    ) -> Option<Delivery> {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let kind = get("kind")?.to_string();
        // A task is named after its entry unless the entry names it (fetch.lua and claim.lua add
        // the id of ordered tasks, which have their record from the read).
        let (id, unrecorded) = match get("id") {
            Some(id) => (id.to_string(), false),
            None => (crate::engine::task_id_for_entry(part, lane, &entry)?, true),
        };
        Some(Delivery {
            part,
            lane,
            id,
            kind,
            unrecorded,
            payload: get("payload").unwrap_or("null").to_string(),
            at_us: get("at").and_then(|v| v.parse().ok()).unwrap_or(0),
            max: get("max").and_then(|v| v.parse().ok()).unwrap_or(1),
            base: get("base").and_then(|v| v.parse().ok()).unwrap_or(0),
            traceparent: get("tp").map(str::to_string),
            deliveries,
            order: match (get("okey"), get("seq").and_then(|v| v.parse().ok())) {
                (Some(k), Some(n)) if !k.is_empty() => Some((k.to_string(), n)),
                _ => None,
            },
            entry,
        })
    }

    /// What the first start of a task without a record writes from its entry.
    pub(crate) fn first_fields(&self) -> Option<commit::FirstFields> {
        self.unrecorded.then(|| commit::FirstFields {
            kind: self.kind.clone(),
            lane: self.lane,
            entry: self.entry.clone(),
            max: self.max,
        })
    }

    /// The trace its entry names, when it names one (for log lines about the task).
    pub(crate) fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(crate::telemetry::trace::trace_id_of)
    }

    /// The attempt number this delivery makes (1-based, across retries and redrives).
    pub(crate) fn attempt(&self) -> u32 {
        // `base` is read from the entry: one written by hand or corrupted must not overflow.
        self.base.saturating_add(self.deliveries)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Held in the local backlog, not started.
    Queued,
    /// The handler is running.
    Running,
    /// The outcome is on its way to Redis.
    Committing,
    /// An ordered task being parked in Redis to wait for its turn: a claim of it replaces it.
    Parking,
}

struct InFlight {
    part: usize,
    lane: Lane,
    entry: String,
    /// When the last request that reset the entry's idle time in Redis (the read or claim that
    /// delivered it, or a renewal that succeeded) was sent: the claim is safe from other workers
    /// until a visibility timeout after that.
    since: Instant,
    stop: StopSignal,
    phase: Phase,
    abort: Option<AbortHandle>,
    delivery: Option<Delivery>,
}

/// State shared by a worker's loops.
pub(crate) struct Shared {
    engine: Engine,
    name: String,
    opts: WorkerOptions,
    pool: Arc<Semaphore>,
    lane_limits: [Arc<Semaphore>; 3],
    backlog: Mutex<[VecDeque<Delivery>; 3]>,
    in_flight: Mutex<HashMap<String, InFlight>>,
    commits: mpsc::UnboundedSender<Event>,
    /// Signalled when capacity frees or new work lands in the backlog.
    wake: Notify,
    /// Cancellations heard before the task reached this worker, kept a minute.
    recently_cancelled: Mutex<HashMap<String, Instant>>,
    completed: AtomicU64,
    redis_ok: AtomicBool,
    /// Rung when this worker recorded a task of an order key: tasks parked behind it are due now,
    /// so the upkeep loop claims at once instead of at its next tick.
    claim_now: Notify,
    /// Rung when a producer announces a task queued for later that is the first due in its place.
    later_now: Notify,
    /// Per-kind figures for performance reports, flushed to Redis every second.
    stats: crate::engine::stats::Collector,
    /// Places for ordered tasks waiting for their turn (they hold no slot meanwhile).
    waiting: Arc<Semaphore>,
    /// Per order key with a task waiting here: rung when a task of that key is recorded.
    turn_bells: Mutex<HashMap<String, Arc<Notify>>>,
    /// Held while claiming; shutdown takes it to know no claim is under way.
    claim_gate: tokio::sync::Mutex<()>,
    /// Enqueue-to-start waits in µs, kept only when a benchmark asks.
    waits: Option<Mutex<hdrhistogram::Histogram<u64>>>,
    /// Per lane, the partitions this worker reads new entries from (`None`: every one); see
    /// `share.rs`.
    share: std::sync::RwLock<[Option<Vec<usize>>; 3]>,
    /// Per place (partition, lane), when (ms) it is next looked at for due retries; a place
    /// not listed is looked at on the next round.
    claim_at: Mutex<HashMap<(usize, Lane), u64>>,
    /// Per place, when (ms) the first task queued there for later is due, as far as this worker
    /// knows (claim.lua answers it; producers announce an earlier one).
    later_at: Mutex<HashMap<(usize, Lane), u64>>,
    /// The lanes an operator paused, a bit per lane index, as last read from Redis.
    paused: std::sync::atomic::AtomicU8,
}

impl Shared {
    /// Whether this worker reads new entries of `lane` in partition `part`.
    fn reads(&self, lane: Lane, part: usize) -> bool {
        let share = self.share.read().unwrap_or_else(|e| e.into_inner());
        share[lane.index()].as_ref().is_none_or(|parts| parts.contains(&part))
    }

    /// Every partition this worker reads new entries from in some lane (`None`: every one).
    fn shared_partitions(&self) -> Option<Vec<usize>> {
        if self.engine.config().worker_partitions == crate::config::WorkerPartitions::All {
            return None;
        }
        let share = self.share.read().unwrap_or_else(|e| e.into_inner());
        let mut parts = Vec::new();
        for lane in &self.opts.lanes {
            parts.extend(share[lane.index()].clone().unwrap_or_else(|| (0..self.engine.partitions()).collect()));
        }
        parts.sort_unstable();
        parts.dedup();
        Some(parts)
    }

    /// Whether `lane` is paused (as last read from Redis): nothing new is read from it.
    fn is_paused(&self, lane: Lane) -> bool {
        self.paused.load(Ordering::Relaxed) & (1 << lane.index()) != 0
    }

    /// Read which lanes are paused; a lane resumed wakes the reading loop at once.
    async fn refresh_paused(&self) -> Result<(), crate::engine::EngineError> {
        let bits = self.engine.paused_lanes().await?.iter().fold(0u8, |b, l| b | (1 << l.index()));
        let before = self.paused.swap(bits, Ordering::Relaxed);
        if before & !bits != 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Whether a place is due to be looked at for retries at `now` (ms).
    fn claim_due(&self, part: usize, lane: Lane, now: u64) -> bool {
        let at = self.claim_at.lock().unwrap_or_else(|e| e.into_inner());
        at.get(&(part, lane)).is_none_or(|&t| t <= now)
    }

    /// Look at a place for retries at `at` (ms): then, when `replace`, else at the earlier of
    /// that and the time already set.
    fn claim_later(&self, part: usize, lane: Lane, at: u64, replace: bool) {
        let mut times = self.claim_at.lock().unwrap_or_else(|e| e.into_inner());
        let t = times.entry((part, lane)).or_insert(at);
        if replace || at < *t {
            *t = at;
        }
    }

    /// Whether a task queued for later in a place is due at `now` (ms).
    fn later_due(&self, part: usize, lane: Lane, now: u64) -> bool {
        let at = self.later_at.lock().unwrap_or_else(|e| e.into_inner());
        at.get(&(part, lane)).is_some_and(|&t| t <= now)
    }

    /// The first task queued for later in a place is due at `at` (ms; `None`: there is none);
    /// when `replace`, else only when that is earlier than what is known.
    fn later_at(&self, part: usize, lane: Lane, at: Option<u64>, replace: bool) {
        let mut times = self.later_at.lock().unwrap_or_else(|e| e.into_inner());
        match (at, times.get(&(part, lane))) {
            (None, _) if replace => {
                times.remove(&(part, lane));
            }
            (Some(at), Some(&t)) if !replace && t <= at => {}
            (Some(at), _) => {
                times.insert((part, lane), at);
            }
            (None, _) => {}
        }
    }

    /// The earliest time (ms) a place is due to be looked at, for retries or for tasks queued
    /// for later.
    fn next_look(&self) -> Option<u64> {
        let claim = self.claim_at.lock().unwrap_or_else(|e| e.into_inner()).values().min().copied();
        let later = self.later_at.lock().unwrap_or_else(|e| e.into_inner()).values().min().copied();
        claim.into_iter().chain(later).min()
    }

    fn lane_free(&self, lane: Lane) -> usize {
        self.pool.available_permits().min(self.lane_limits[lane.index()].available_permits())
    }

    fn backlog_len(&self, lane: Lane) -> usize {
        self.backlog.lock().map(|b| b[lane.index()].len()).unwrap_or(0)
    }

    /// Take delivered entries into the backlog and the in-flight table (so their claims are
    /// renewed from now on); `since`: when the request that delivered them was sent.
    fn accept(&self, deliveries: Vec<Delivery>, since: Instant) {
        if deliveries.is_empty() {
            return;
        }
        let cancelled: Vec<String> = {
            let mut recent = self.recently_cancelled.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|_, at| at.elapsed() < Duration::from_secs(60));
            deliveries.iter().filter(|d| recent.contains_key(&d.id)).map(|d| d.id.clone()).collect()
        };
        {
            let mut fl = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for d in &deliveries {
                let stop = StopSignal::default();
                if cancelled.contains(&d.id) {
                    stop.stop(super::StopReason::Revoked);
                }
                fl.insert(
                    d.id.clone(),
                    InFlight {
                        part: d.part,
                        lane: d.lane,
                        entry: d.entry.clone(),
                        since,
                        stop,
                        phase: Phase::Queued,
                        abort: None,
                        delivery: None,
                    },
                );
            }
        }
        let mut b = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        for d in deliveries {
            b[d.lane.index()].push_back(d);
        }
        drop(b);
        self.wake.notify_one();
    }

    fn commit(&self, ev: Event) {
        // The committer outlives every sender that matters; a send after it stopped can only
        // happen to work that is then reclaimed, so nothing is lost.
        let _ = self.commits.send(ev);
    }

    /// Entries this worker holds in a lane, for renewing their claims.
    fn held_entries(&self, part: usize, lane: Lane) -> Vec<(String, String)> {
        let fl = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        fl.iter()
            .filter(|(_, f)| f.lane == lane && f.part == part)
            .map(|(id, f)| (id.clone(), f.entry.clone()))
            .collect()
    }

    /// A renewal sent at `sent` kept the claims of `held` (task id, entry) except those `lost`.
    fn renewed(&self, held: &[(String, String)], lost: &[String], sent: Instant) {
        let mut fl = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for (id, entry) in held.iter().filter(|(_, e)| !lost.contains(e)) {
            if let Some(f) = fl.get_mut(id)
                && f.entry == *entry
            {
                f.since = f.since.max(sent);
            }
        }
    }

    /// Each partition with each of this worker's lanes.
    fn places(&self) -> Vec<(usize, Lane)> {
        let parts = self.engine.partitions();
        self.opts.lanes.iter().flat_map(|&l| (0..parts).map(move |p| (p, l))).collect()
    }

    /// The bell a task waiting for its turn under `key` listens to.
    fn turn_bell(&self, key: &str) -> Arc<Notify> {
        let mut bells = self.turn_bells.lock().unwrap_or_else(|e| e.into_inner());
        bells.entry(key.to_string()).or_default().clone()
    }

    /// Drop the bell of `key` once nobody listens to it.
    fn forget_turn_bell(&self, key: &str) {
        let mut bells = self.turn_bells.lock().unwrap_or_else(|e| e.into_inner());
        if bells.get(key).is_some_and(|b| Arc::strong_count(b) == 1) {
            bells.remove(key);
        }
    }

    fn ring_turn_bell(&self, key: &str) {
        self.claim_now.notify_one();
        let bell = self.turn_bells.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned();
        if let Some(b) = bell {
            b.notify_waiters();
        }
    }

    fn stop_task(&self, task_id: &str, reason: super::StopReason) -> bool {
        let fl = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match fl.get(task_id) {
            Some(f) => {
                f.stop.stop(reason);
                true
            }
            None => false,
        }
    }
}

/// A running worker. Dropping it does not stop it: cancel its shutdown token and `wait`.
pub struct WorkerHandle {
    shared: Arc<Shared>,
    join: tokio::task::JoinHandle<()>,
    loops: Vec<AbortHandle>,
}

impl WorkerHandle {
    /// The consumer name under which this worker reads.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Attempts whose outcome this worker has recorded.
    pub fn completed(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }

    /// Attempts started or held by this worker and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Whether the last Redis call of the read loop succeeded.
    pub fn redis_ok(&self) -> bool {
        self.shared.redis_ok.load(Ordering::Relaxed)
    }

    /// Enqueue-to-start waits (µs) seen so far, when the worker was started to keep them.
    pub fn waits(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.shared.waits.as_ref().map(|w| w.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Wait until the worker has shut down (after its shutdown token was cancelled).
    pub async fn wait(self) {
        let _ = self.join.await;
    }

    /// Stop at once without recording anything, as a killed process would: every held entry
    /// stays pending in Redis for another worker to reclaim. For crash tests.
    pub fn kill(self) {
        self.join.abort();
        for l in &self.loops {
            l.abort();
        }
        let fl = self.shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for f in fl.values() {
            if let Some(a) = &f.abort {
                a.abort();
            }
        }
    }
}

/// Start a worker on `engine`. It runs until `shutdown` is cancelled, then drains.
pub fn start(engine: Engine, opts: WorkerOptions, shutdown: CancellationToken) -> WorkerHandle {
    start_inner(engine, opts, shutdown, false)
}

/// As [`start`], keeping every enqueue-to-start wait in a histogram (benchmarks).
pub fn start_measured(engine: Engine, opts: WorkerOptions, shutdown: CancellationToken) -> WorkerHandle {
    start_inner(engine, opts, shutdown, true)
}

fn start_inner(engine: Engine, opts: WorkerOptions, shutdown: CancellationToken, measure: bool) -> WorkerHandle {
    let name = opts.name.clone().unwrap_or_else(consumer_name);
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        pool: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        waiting: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        lane_limits: std::array::from_fn(|i| Arc::new(Semaphore::new(opts.lane_concurrency[i].max(1)))),
        engine,
        name,
        opts,
        backlog: Mutex::new(Default::default()),
        in_flight: Mutex::new(HashMap::new()),
        commits: tx,
        wake: Notify::new(),
        recently_cancelled: Mutex::new(HashMap::new()),
        completed: AtomicU64::new(0),
        redis_ok: AtomicBool::new(true),
        claim_gate: tokio::sync::Mutex::new(()),
        turn_bells: Mutex::new(HashMap::new()),
        claim_now: Notify::new(),
        later_now: Notify::new(),
        stats: Default::default(),
        waits: measure
            .then(|| Mutex::new(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))),
        share: Default::default(),
        claim_at: Mutex::new(HashMap::new()),
        later_at: Mutex::new(HashMap::new()),
        paused: std::sync::atomic::AtomicU8::new(0),
    });
    let reading = shutdown.child_token();
    let upkeep_stop = CancellationToken::new();
    let fetch = tokio::spawn(fetch::fetch_loop(shared.clone(), reading.clone()));
    let commit = tokio::spawn(commit::commit_loop(shared.clone(), rx));
    let upkeep = tokio::spawn(upkeep::upkeep_loop(shared.clone(), reading.clone(), upkeep_stop.clone()));
    let listener = tokio::spawn(upkeep::cancel_listener(shared.clone(), upkeep_stop.clone()));
    let fence = tokio::spawn(fence::fence_loop(shared.clone(), upkeep_stop.clone()));
    let loops = vec![
        fetch.abort_handle(),
        commit.abort_handle(),
        upkeep.abort_handle(),
        listener.abort_handle(),
        fence.abort_handle(),
    ];
    let sh = shared.clone();
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = fetch.await;
        // A claim under way when reading stopped may still add to the backlog: wait for it, so
        // the drain below hands back everything this worker holds. The upkeep loop claims only
        // under the gate and only while reading, so none starts after this; the gate is let go
        // at once, for the loop goes on renewing the claims of what still runs in the grace
        // period (else the fence would take them for lost).
        drop(sh.claim_gate.lock().await);
        drain(&sh).await;
        sh.commit(Event::Close);
        let _ = commit.await;
        upkeep_stop.cancel();
        let _ = upkeep.await;
        let _ = listener.await;
        let _ = fence.await;
        let _ = sh.stats.flush(&sh.engine, &sh.name).await;
        upkeep::deregister(&sh).await;
        tracing::info!(worker = %sh.name, completed = sh.completed.load(Ordering::Relaxed), "worker stopped");
    });
    tracing::info!(worker = %shared.name, lanes = ?shared.opts.lanes, concurrency = shared.opts.concurrency, "worker started");
    WorkerHandle { shared, join, loops }
}

/// After reading stopped: hand back the backlog, give running attempts the grace period, then
/// stop and hand back whatever still runs.
async fn drain(sh: &Arc<Shared>) {
    let backlog: Vec<Delivery> = {
        let mut b = sh.backlog.lock().unwrap_or_else(|e| e.into_inner());
        b.iter_mut().flat_map(|q| q.drain(..)).collect()
    };
    for d in backlog {
        set_phase(sh, &d.id, Phase::Committing);
        sh.commit(run::handback(&d, "worker shutting down before it started"));
    }
    let grace = sh.engine.config().shutdown_grace;
    let deadline = Instant::now() + grace;
    while running(sh) > 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(50), sh.wake.notified()).await;
    }
    if running(sh) == 0 {
        return;
    }
    tracing::warn!(worker = %sh.name, running = running(sh), "grace period over; stopping running tasks");
    {
        let fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for f in fl.values().filter(|f| f.phase == Phase::Running) {
            f.stop.stop(super::StopReason::Shutdown);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(sh) > 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(50), sh.wake.notified()).await;
    }
    let stuck: Vec<Delivery> = {
        let mut fl = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        fl.values_mut()
            .filter(|f| f.phase == Phase::Running)
            .filter_map(|f| {
                if let Some(a) = &f.abort {
                    a.abort();
                }
                f.phase = Phase::Committing;
                f.delivery.take()
            })
            .collect()
    };
    for d in stuck {
        sh.commit(run::handback(&d, "worker shut down while it ran; handed back"));
    }
}

fn running(sh: &Shared) -> usize {
    sh.in_flight.lock().map(|f| f.values().filter(|f| f.phase == Phase::Running).count()).unwrap_or(0)
}

fn set_phase(sh: &Shared, id: &str, phase: Phase) {
    if let Some(f) = sh.in_flight.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
        f.phase = phase;
    }
}

/// `host-pid-xxxx`: unique per process, readable in the dashboard.
fn consumer_name() -> String {
    format!("{}-{}-{:04x}", hostname(), std::process::id(), fastrand::u16(..))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Found by the `task_entry` fuzz target: a `base` near `u32::MAX` overflowed the attempt number.
    #[test]
    fn an_entry_with_any_base_has_an_attempt_number() {
        let f = fields(&[("kind", ""), ("base", "4294967295")]);
        let d = Delivery::from_fields(0, Lane::Webhooks, "1-1".into(), &f, 1).unwrap();
        assert_eq!(d.attempt(), u32::MAX);
        let f = fields(&[("kind", ""), ("base", "8323072")]);
        let d = Delivery::from_fields(91, Lane::Analytics, "1-1".into(), &f, 4294901797).unwrap();
        assert_eq!(d.attempt(), u32::MAX);
    }
}

//! Per-kind figures for performance reports, kept by every worker and flushed to Redis each
//! second: counts of outcomes and histograms of queue wait and run time, per minute, lane and
//! kind. A report merges what every worker wrote for the minutes it covers, so its figures are
//! the deployment's, not one process's.

use std::collections::HashMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Engine, Lane, now_ms};

/// How long the per-minute figures are kept in Redis.
pub(crate) const KEEP_MS: u64 = 2 * 3600 * 1000;

/// One minute of one kind's figures.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KindStats {
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub revoked: u64,
    /// Queue wait (enqueue to first start) and run time, µs, as `[value, count]` pairs.
    #[serde(with = "hist")]
    pub wait_us: Histogram<u64>,
    #[serde(with = "hist")]
    pub run_us: Histogram<u64>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats { succeeded: 0, failed: 0, retried: 0, revoked: 0, wait_us: new_histogram(), run_us: new_histogram() }
    }
}

impl KindStats {
    pub(crate) fn merge(&mut self, o: &KindStats) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.retried += o.retried;
        self.revoked += o.revoked;
        let _ = self.wait_us.add(&o.wait_us);
        let _ = self.run_us.add(&o.run_us);
    }
}

mod hist {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        pairs.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let pairs: Vec<(u64, u64)> = Vec::deserialize(d)?;
        let mut h = super::new_histogram();
        for (v, n) in pairs {
            let _ = h.record_n(v.max(1), n);
        }
        Ok(h)
    }
}

/// What one outcome adds to the figures.
pub(crate) enum Counted {
    Succeeded,
    Failed,
    Retried,
    Revoked,
    /// Handed back, stale: not an outcome of the task.
    Nothing,
}

/// One kind's figures, and whether they changed since the last flush.
type ByKind = HashMap<String, (KindStats, bool)>;

/// A worker's figures by minute (since the epoch) and lane, then kind.
#[derive(Default)]
pub(crate) struct Collector {
    slots: Mutex<HashMap<(u64, Lane), ByKind>>,
}

impl Collector {
    fn with(&self, lane: Lane, kind: &str, f: impl FnOnce(&mut KindStats)) {
        let minute = now_ms() / 60_000;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let inner = slots.entry((minute, lane)).or_default();
        // Look up before inserting: the kind's name is allocated once per minute, not per task.
        let slot = match inner.get_mut(kind) {
            Some(s) => s,
            None => inner.entry(kind.to_string()).or_default(),
        };
        f(&mut slot.0);
        slot.1 = true;
    }

    pub(crate) fn wait(&self, lane: Lane, kind: &str, us: u64) {
        self.with(lane, kind, |s| {
            let _ = s.wait_us.record(us.max(1));
        });
    }

    pub(crate) fn outcome(&self, lane: Lane, kind: &str, outcome: Counted, run_us: u64) {
        if matches!(outcome, Counted::Nothing) {
            return;
        }
        self.with(lane, kind, |s| {
            match outcome {
                Counted::Succeeded => s.succeeded += 1,
                Counted::Failed => s.failed += 1,
                Counted::Retried => s.retried += 1,
                Counted::Revoked => s.revoked += 1,
                Counted::Nothing => {}
            }
            if run_us > 0 {
                let _ = s.run_us.record(run_us);
            }
        });
    }

    /// Write what changed since the last flush; forget minutes that are over.
    pub(crate) async fn flush(&self, engine: &Engine, worker: &str) -> redis::RedisResult<()> {
        let now_minute = now_ms() / 60_000;
        // (minute, lane, kind, figures as JSON) of what changed; the flags are cleared now and
        // set again if the write fails.
        let dirty: Vec<(u64, Lane, String, String)> = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            for ((m, lane), kinds) in slots.iter_mut() {
                for (kind, (s, d)) in kinds.iter_mut().filter(|(_, (_, d))| *d) {
                    *d = false;
                    out.push((*m, *lane, kind.clone(), serde_json::to_string(s).unwrap_or_default()));
                }
            }
            out
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (minute, lane, kind, json) in &dirty {
            let key = engine.keys().stats(*minute);
            pipe.cmd("HSET").arg(&key).arg(format!("{worker}|{}|{kind}", lane.as_str())).arg(json).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(KEEP_MS).ignore();
        }
        let mut con = engine.conn();
        let r: redis::RedisResult<()> = pipe.query_async(&mut con).await;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_ok() {
            // Minutes that are over and written are done with.
            slots.retain(|(m, _), kinds| *m >= now_minute || kinds.values().any(|(_, d)| *d));
        } else {
            // Keep them for the next flush.
            for (m, lane, kind, _) in &dirty {
                if let Some((_, d)) = slots.get_mut(&(*m, *lane)).and_then(|k| k.get_mut(kind)) {
                    *d = true;
                }
            }
        }
        r
    }
}

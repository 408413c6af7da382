//! Redis's memory against its limit. With `maxmemory` set and `noeviction`, a Redis that is full
//! refuses writes; Switchyard stops taking new work from outside a little before
//! (`MEMORY_HIGH_WATER` of the limit) so that its workers still have room to record what they
//! finish, which is what frees memory again. The figures are read by
//! whichever caller asks first, ten times a second (near the mark, a hundred); the others use
//! the last reading.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Engine, EngineError, now_ms};

/// How old a reading may be before the next caller takes a new one: a tenth of a second (the
/// mark's headroom must hold what arrives meanwhile), and a hundredth of one near the mark
/// (within a tenth of the limit).
const FRESH_MS: u64 = 100;
const FRESH_NEAR_MS: u64 = 10;

#[derive(Default)]
pub(super) struct MemoryWatch {
    used: AtomicU64,
    max: AtomicU64,
    /// When the last reading was taken (ms); 0 before the first.
    read_at: AtomicU64,
}

/// `used_memory` and `maxmemory` from `INFO memory`.
fn parse_info(info: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("used_memory")?, field("maxmemory").unwrap_or(0)))
}

/// Minutes of samples kept: the quarter hour the trend is taken over, and one more.
const SAMPLE_MINUTES: u64 = 16;

/// Redis's memory now and where it is going, for the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryTrend {
    pub used: u64,
    /// `maxmemory` (0: none).
    pub max: u64,
    /// Where new work is refused (0: no limit).
    pub mark: u64,
    /// Growth over the last quarter hour, bytes a second (negative: shrinking); `None` before two
    /// samples a few minutes apart.
    pub per_s: Option<f64>,
    /// Seconds until the mark at that growth; `None` when there is no limit or it is not growing.
    pub until_mark_s: Option<f64>,
}

/// The trend from minute → used samples, the latest reading and the mark.
fn trend(samples: &[(u64, u64)], used: u64, max: u64, mark: u64) -> MemoryTrend {
    let latest = samples.iter().map(|(m, _)| *m).max();
    let per_s = latest.and_then(|latest| {
        let (first_min, first) = samples.iter().filter(|(m, _)| latest - m <= 15).min_by_key(|(m, _)| *m)?;
        let (_, last) = samples.iter().find(|(m, _)| *m == latest)?;
        let span = (latest - first_min) * 60;
        (span >= 120).then(|| (*last as f64 - *first as f64) / span as f64)
    });
    let until_mark_s = match per_s {
        Some(g) if g > 0.0 && max > 0 => Some(mark.saturating_sub(used) as f64 / g),
        _ => None,
    };
    MemoryTrend { used, max, mark, per_s, until_mark_s }
}

impl Engine {
    /// Keep this minute's reading of Redis's memory (the last process to write a minute wins: it
    /// is one figure for the deployment). Called every few seconds by each serving process.
    pub async fn record_memory_sample(&self) -> Result<(), EngineError> {
        let (used, _) = self.redis_memory().await?;
        let minute = now_ms() / 60_000;
        let key = self.keys().memory_samples();
        let mut con = self.conn();
        let minutes: Vec<u64> = redis::cmd("HKEYS").arg(&key).query_async(&mut con).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(&key).arg(minute).arg(used).ignore();
        for old in minutes.into_iter().filter(|m| *m + SAMPLE_MINUTES <= minute) {
            pipe.cmd("HDEL").arg(&key).arg(old).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(3_600_000).ignore();
        pipe.query_async::<()>(&mut con).await?;
        Ok(())
    }

    /// Redis's memory, its limit, the mark, and the last quarter hour's growth.
    pub async fn memory_trend(&self) -> Result<MemoryTrend, EngineError> {
        let (used, max) = self.redis_memory().await?;
        let mut con = self.conn();
        let samples: Vec<(u64, u64)> =
            redis::cmd("HGETALL").arg(self.keys().memory_samples()).query_async(&mut con).await?;
        let mark = (max as f64 * self.config().memory_high_water) as u64;
        Ok(trend(&samples, used, max, mark))
    }

    /// Redis's memory in use and its limit (0: none), at most a tenth of a second old: on a cluster,
    /// of the master nearest its limit.
    pub async fn redis_memory(&self) -> Result<(u64, u64), EngineError> {
        let w = &self.inner.memory;
        let now = now_ms();
        let last = w.read_at.load(Ordering::Acquire);
        let (used, max) = (w.used.load(Ordering::Acquire), w.max.load(Ordering::Acquire));
        let near = max > 0 && used as f64 >= max as f64 * (self.config().memory_high_water - 0.1);
        if now.saturating_sub(last) >= if near { FRESH_NEAR_MS } else { FRESH_MS }
            && w.read_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // On a cluster, the master nearest its limit is the one that refuses first.
            let read = self.conn().query_masters(redis::cmd("INFO").arg("memory")).await;
            let fullest = |infos: Vec<(String, String)>| {
                infos.iter().filter_map(|(_, i)| parse_info(i)).max_by(|a, b| {
                    let ratio = |(used, max): (u64, u64)| if max > 0 { used as f64 / max as f64 } else { 0.0 };
                    ratio(*a).total_cmp(&ratio(*b)).then(a.0.cmp(&b.0))
                })
            };
            match read.map(fullest) {
                Ok(Some((used, max))) => {
                    w.used.store(used, Ordering::Release);
                    w.max.store(max, Ordering::Release);
                    metrics::gauge!("switchyard_redis_memory_bytes").set(used as f64);
                    metrics::gauge!("switchyard_redis_memory_max_bytes").set(max as f64);
                }
                // Not read: the next caller tries again.
                Ok(None) => w.read_at.store(last, Ordering::Release),
                Err(e) => {
                    w.read_at.store(last, Ordering::Release);
                    return Err(e.into());
                }
            }
        }
        Ok((w.used.load(Ordering::Acquire), w.max.load(Ordering::Acquire)))
    }

    /// Refuse new work from outside while Redis is at its high-water mark. A Redis that cannot be
    /// asked is no reason to refuse: the write itself will say whether it is away.
    pub async fn check_room(&self) -> Result<(), EngineError> {
        let Ok((used, max)) = self.redis_memory().await else { return Ok(()) };
        let mark = (max as f64 * self.config().memory_high_water) as u64;
        if max > 0 && used >= mark {
            return Err(EngineError::MemoryFull { used, max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::trend;

    #[test]
    fn the_trend_is_the_last_quarter_hours_growth() {
        // 1 MB a minute over ten minutes; 50 MB left to the mark: 50 minutes.
        let samples: Vec<(u64, u64)> = (0..=10).map(|m| (1000 + m, 100_000_000 + m * 1_000_000)).collect();
        let t = trend(&samples, 110_000_000, 200_000_000, 160_000_000);
        assert!((t.per_s.unwrap() - 1_000_000.0 / 60.0).abs() < 1.0, "{t:?}");
        assert!((t.until_mark_s.unwrap() - 3000.0).abs() < 1.0, "{t:?}");
        // Minutes older than the quarter hour do not count.
        let mut old = samples.clone();
        old.push((900, 0));
        assert_eq!(trend(&old, 110_000_000, 200_000_000, 160_000_000), t);
        // Shrinking, no limit, or too little history: no time until full.
        let down: Vec<(u64, u64)> = (0..=10).map(|m| (1000 + m, 100_000_000 - m * 1000)).collect();
        assert!(trend(&down, 1, 200, 160).until_mark_s.is_none());
        assert!(trend(&samples, 110_000_000, 0, 0).until_mark_s.is_none());
        assert!(trend(&samples[..2], 1, 200, 160).per_s.is_none());
    }

    #[test]
    fn info_is_read() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:8388608\r\nmaxmemory_human:8.00M\r\n";
        assert_eq!(super::parse_info(info), Some((1_048_576, 8_388_608)));
        assert_eq!(super::parse_info("used_memory:5\r\n"), Some((5, 0)));
        assert_eq!(super::parse_info("nothing"), None);
    }
}

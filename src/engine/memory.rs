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

impl Engine {
    /// Redis's memory in use and its limit (0: none), at most a tenth of a second old.
    pub async fn redis_memory(&self) -> Result<(u64, u64), EngineError> {
        let w = &self.inner.memory;
        let now = now_ms();
        let last = w.read_at.load(Ordering::Acquire);
        let (used, max) = (w.used.load(Ordering::Acquire), w.max.load(Ordering::Acquire));
        let near = max > 0 && used as f64 >= max as f64 * (self.config().memory_high_water - 0.1);
        if now.saturating_sub(last) >= if near { FRESH_NEAR_MS } else { FRESH_MS }
            && w.read_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            let mut con = self.conn();
            let read: Result<String, _> = redis::cmd("INFO").arg("memory").query_async(&mut con).await;
            match read.map(|info| parse_info(&info)) {
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
    #[test]
    fn info_is_read() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:8388608\r\nmaxmemory_human:8.00M\r\n";
        assert_eq!(super::parse_info(info), Some((1_048_576, 8_388_608)));
        assert_eq!(super::parse_info("used_memory:5\r\n"), Some((5, 0)));
        assert_eq!(super::parse_info("nothing"), None);
    }
}

//! Start-up checks: Redis settings known to lose work.

use std::time::Duration;

use super::{Engine, EngineError};

impl Engine {
    /// Warnings about Redis settings known to lose work, one line each.
    pub async fn guardrails(&self) -> Result<Vec<String>, EngineError> {
        let con = self.conn();
        let home = self.keys().root();
        let mut warnings = Vec::new();
        let info: String = con.query_at(home, redis::cmd("INFO").arg("server")).await?;
        let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("0").trim().to_string();
        let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        if major < 7 {
            warnings
                .push(format!("Redis {version} is older than 7.0, which Switchyard needs (XAUTOCLAIM, stream lag)"));
        }
        let get = |pairs: Vec<String>| pairs.get(1).cloned().unwrap_or_default();
        let policy: redis::RedisResult<Vec<String>> =
            con.query_at(home, redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy")).await;
        if let Ok(p) = policy {
            let p = get(p);
            if !p.is_empty() && p != "noeviction" {
                warnings.push(format!(
                    "maxmemory-policy is {p}: Redis may evict queued tasks under memory pressure; set it to noeviction"
                ));
            }
        }
        let aof: redis::RedisResult<Vec<String>> =
            con.query_at(home, redis::cmd("CONFIG").arg("GET").arg("appendonly")).await;
        let save: redis::RedisResult<Vec<String>> =
            con.query_at(home, redis::cmd("CONFIG").arg("GET").arg("save")).await;
        if let (Ok(aof), Ok(save)) = (aof, save)
            && get(aof) != "yes"
            && get(save).trim().is_empty()
        {
            warnings.push(
                "Redis persistence is off (no AOF, no snapshots): a Redis restart loses every queued task".into(),
            );
        }
        let c = self.config();
        if c.claim_renewal_interval() < Duration::from_millis(100) {
            warnings.push(format!(
                "VISIBILITY_TIMEOUT {} leaves too little time to renew claims; live tasks may be run twice",
                humantime::format_duration(c.visibility_timeout)
            ));
        }
        Ok(warnings)
    }
}

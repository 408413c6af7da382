//! Pausing a lane, as BullMQ pauses a queue and Sidekiq a queue: workers read no new entries of
//! it and take none of its due retries, while producers are still accepted and the attempts
//! already running finish. The paused lanes are a set in Redis (at most one member per lane, kept
//! for as long as a lane stays paused), so every process sees the state and it outlives restarts.

use super::{Engine, EngineError, Lane};

impl Engine {
    /// Pause `lane`: workers stop reading it within a second.
    pub async fn pause_lane(&self, lane: Lane) -> Result<(), EngineError> {
        let mut con = self.conn();
        let _: i64 = redis::cmd("SADD").arg(self.keys().paused()).arg(lane.as_str()).query_async(&mut con).await?;
        Ok(())
    }

    /// Resume `lane`: workers read it again within a second.
    pub async fn resume_lane(&self, lane: Lane) -> Result<(), EngineError> {
        let mut con = self.conn();
        let _: i64 = redis::cmd("SREM").arg(self.keys().paused()).arg(lane.as_str()).query_async(&mut con).await?;
        Ok(())
    }

    /// The lanes paused now.
    pub async fn paused_lanes(&self) -> Result<Vec<Lane>, EngineError> {
        let mut con = self.conn();
        let names: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys().paused()).query_async(&mut con).await?;
        Ok(Lane::ALL.into_iter().filter(|l| names.iter().any(|n| n == l.as_str())).collect())
    }
}

//! The dashboard's sessions: a key each, `session:<id>`, holding what the web layer gives it,
//! expiring with the session. Kept in Redis so that they survive restarts and every process
//! shares them.

use std::time::Duration;

use super::{Engine, EngineError};

impl Engine {
    /// What session `id` holds, if it is still open.
    pub async fn session(&self, id: &str) -> Result<Option<String>, EngineError> {
        let mut con = self.conn();
        Ok(redis::cmd("GET").arg(self.keys().session(id)).query_async(&mut con).await?)
    }

    /// Open session `id` holding `value` for `lasts`.
    pub async fn open_session(&self, id: &str, value: &str, lasts: Duration) -> Result<(), EngineError> {
        let mut con = self.conn();
        let _: () = redis::cmd("SET")
            .arg(self.keys().session(id))
            .arg(value)
            .arg("PX")
            .arg(lasts.as_millis() as u64)
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    /// Close session `id` (nothing when it is closed already).
    pub async fn close_session(&self, id: &str) -> Result<(), EngineError> {
        let mut con = self.conn();
        let _: i64 = redis::cmd("DEL").arg(self.keys().session(id)).query_async(&mut con).await?;
        Ok(())
    }
}

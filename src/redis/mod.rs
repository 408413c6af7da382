//! Redis connection handling, key names and the Lua scripts of the engine.
//!
//! Two kinds of connection are used: a shared multiplexed [`ConnectionManager`] for short
//! commands (it reconnects by itself), and a dedicated one per worker for blocking
//! `XREADGROUP`, since a blocking command would stall every other caller on a shared one.

pub mod keys;
pub mod scripts;
pub mod server;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use keys::{GROUP, Keys};

/// How long a short command may take before the call fails (a Lua batch of a thousand tasks
/// included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
}

/// A connection for short commands, shared by every task of a process.
pub async fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_with_config(client, manager_config(RESPONSE_TIMEOUT)).await
}

/// The same, without waiting for Redis to answer first: the process starts even while Redis is
/// away and connects when it comes back.
pub fn connect_lazy(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_lazy_with_config(client, manager_config(RESPONSE_TIMEOUT))
}

/// A connection for blocking reads of up to `block`.
pub fn connect_blocking(url: &str, block: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_lazy_with_config(client, manager_config(block + RESPONSE_TIMEOUT))
}

/// True when the error says a consumer group (or its stream) is missing: Redis restarted
/// without persistence, was flushed, or the stream was deleted.
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP") || err.to_string().contains("NOGROUP")
}

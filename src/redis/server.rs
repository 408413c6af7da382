//! The private `redis-server` that `serve` starts when no Redis was configured and nothing
//! answers at the default address, so `make run` works on a machine with only the binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A `redis-server` child process, stopped when dropped.
pub struct PrivateRedis {
    child: Child,
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivateRedisError {
    #[error(
        "no Redis answers at {0} and there is no redis-server on PATH: install one (apt-get install redis-server) or set SWITCHYARD_REDIS_URL"
    )]
    NotInstalled(String),
    #[error("could not start redis-server: {0}")]
    Start(String),
}

impl PrivateRedis {
    /// Start `redis-server` on a free loopback port with append-only persistence under `dir`.
    pub async fn start(dir: &Path, default_url: &str) -> Result<PrivateRedis, PrivateRedisError> {
        let binary = find_on_path("redis-server").ok_or_else(|| PrivateRedisError::NotInstalled(default_url.into()))?;
        std::fs::create_dir_all(dir).map_err(|e| PrivateRedisError::Start(format!("{}: {e}", dir.display())))?;
        let port = free_port().map_err(|e| PrivateRedisError::Start(e.to_string()))?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes"])
            .args(["--save", "", "--maxmemory-policy", "noeviction", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PrivateRedisError::Start(e.to_string()))?;
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(PrivateRedis { child, url });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(PrivateRedisError::Start(format!("redis-server did not listen on port {port}")))
    }

    /// Ask the server to stop (it writes its append-only file first) and wait for it.
    pub async fn stop(mut self) {
        if let Ok(client) = redis::Client::open(self.url.as_str())
            && let Ok(mut con) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut con).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

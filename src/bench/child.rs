//! A `switchyard serve` of its own for benchmarks that measure the server's process apart from
//! the load they put on it (its resident memory, its answers under attack): this binary, run
//! again as a child on a free loopback port and the configured Redis, under a key prefix of
//! its own, killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::Config;

pub(super) struct Server {
    child: Child,
    pub(super) addr: SocketAddr,
    pub(super) prefix: String,
}

impl Server {
    /// Start one with `roles` and the settings in `env` (`SWITCHYARD_*` names), and wait until
    /// it answers `/readyz`.
    pub(super) async fn start(
        config: &Config,
        tag: &str,
        roles: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let prefix = format!("{}-bench-{tag}-{}", config.key_prefix, std::process::id());
        let mut cmd = Command::new(std::env::current_exe().context("this binary's path")?);
        cmd.args(["serve", "--roles", roles])
            .env("SWITCHYARD_REDIS_URL", config.redis_url_or_default())
            .env("SWITCHYARD_KEY_PREFIX", &prefix)
            .env("SWITCHYARD_PARTITIONS", config.partitions.to_string())
            .env("SWITCHYARD_LISTEN", addr.to_string())
            .env("SWITCHYARD_ADMIN_TOKEN", crate::web::auth::random_token())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("start switchyard serve")?;
        let server = Server { child, addr, prefix };
        let http = crate::http_client::client()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the server on {addr} was not ready within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident memory now, in MiB.
    pub(super) fn rss_mb(&self) -> f64 {
        Server::rss_mb_of(&format!("/proc/{}/status", self.child.id()))
    }

    /// Resident memory (MiB) from a process's `/proc/<pid>/status`; 0 when it cannot be read.
    pub(super) fn rss_mb_of(status: &str) -> f64 {
        std::fs::read_to_string(status)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// Its open descriptors now.
    pub(super) fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

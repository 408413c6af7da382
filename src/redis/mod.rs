//! Redis connection handling, key names and the Lua scripts of the engine.
//!
//! Two kinds of connection are used, each a [`Conn`] (a single Redis or a cluster): a shared
//! multiplexed one for short commands (it reconnects by itself), and a dedicated one per worker
//! for blocking `XREADGROUP`, since a blocking command would stall every other caller on a
//! shared one.

mod conn;
pub mod keys;
pub mod partition;
pub(crate) mod pubsub;
pub(crate) mod reply;
pub(crate) mod scripts;
pub mod server;

use std::time::Duration;

pub use conn::{Conn, Timeouts, node_urls};
pub use keys::{GROUP, Keys};
pub(crate) use pubsub::Backoff;

/// A connection for short commands, shared by every task of a process, that connects when
/// first used: the process starts even while Redis is away and connects when it comes back.
/// (The response timeout covers a Lua batch of a thousand tasks.)
pub fn connect_lazy(url: &str, timeouts: Timeouts) -> redis::RedisResult<Conn> {
    Conn::lazy(url, timeouts)
}

/// A connection for blocking reads of up to `block`: the response timeout comes on top.
pub fn connect_blocking(url: &str, block: Duration, timeouts: Timeouts) -> redis::RedisResult<Conn> {
    Conn::lazy(url, Timeouts { response: block + timeouts.response, ..timeouts })
}

/// Whether a Redis answers `PING` at `url` within two seconds.
pub async fn answers(url: &str) -> bool {
    let Some(first) = node_urls(url).into_iter().next() else { return false };
    let Ok(client) = redis::Client::open(first) else { return false };
    let fut = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), fut).await, Ok(Ok(_)))
}

/// True when the error says a consumer group (or its stream) is missing: Redis restarted
/// without persistence, was flushed, or the stream was deleted.
pub fn is_nogroup(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP") || err.to_string().contains("NOGROUP")
}

/// A walk over the keys whose names match a pattern (and of one type, when given), a SCAN
/// step at a time: `while let Some(keys) = scan.next(&con).await? { … }`. Keys may come
/// twice (SCAN's promise), and keys made during the walk may be missed.
pub struct Scan {
    prefix: String,
    pattern: String,
    kind: Option<&'static str>,
    cursor: u64,
    done: bool,
}

impl Scan {
    /// Keys looked at per step.
    const COUNT: u64 = 1000;

    /// Every key whose name starts with `prefix` (matched literally).
    pub fn prefixed(prefix: &str) -> Scan {
        Scan {
            prefix: prefix.to_string(),
            pattern: format!("{}*", glob_escape(prefix)),
            kind: None,
            cursor: 0,
            done: false,
        }
    }

    /// Only keys of this type (`hash`, `string`, …).
    pub fn of_type(mut self, kind: &'static str) -> Scan {
        self.kind = Some(kind);
        self
    }

    /// The next step's keys (possibly none), or `None` once the walk is over. On a cluster the
    /// walk is over the node holding the prefix's slot.
    pub async fn next(&mut self, con: &Conn) -> redis::RedisResult<Option<Vec<String>>> {
        if self.done {
            return Ok(None);
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(Self::COUNT);
        if let Some(kind) = self.kind {
            cmd.arg("TYPE").arg(kind);
        }
        let (next, keys): (u64, Vec<String>) = con.query_at(&self.prefix, &cmd).await?;
        self.cursor = next;
        self.done = next == 0;
        Ok(Some(keys))
    }
}

/// `s` matched literally by a SCAN pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(Scan::prefixed("{sy}:conv:").pattern, "{sy}:conv:*");
        assert_eq!(Scan::prefixed("{a*b?[c]\\}:").pattern, "{a\\*b\\?\\[c\\]\\\\}:*");
    }

    /// Only the storage code talks to Redis (ARCHITECTURE.md): the storage layer, the engine,
    /// the benchmarks, and each layer's store. Anywhere else a Redis command, pipeline, script
    /// call or raw connection is a door to Redis that bypasses them.
    #[test]
    fn only_the_storage_code_sends_redis_commands() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        walk(&root.join("src"), &mut files);
        let storage = |rel: &str| {
            ["src/redis/", "src/engine/", "src/bench/"].iter().any(|d| rel.starts_with(d))
                || rel.ends_with("/store.rs")
                || rel.ends_with("/ledger.rs")
        };
        let mut doors = Vec::new();
        for f in files {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            if storage(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if ["redis::cmd(", "redis::pipe(", ".conn()", ".scripts()", "invoke_async("]
                    .iter()
                    .any(|d| code.contains(d))
                {
                    doors.push(format!("{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(doors.is_empty(), "Redis reached outside the storage code:\n{}", doors.join("\n"));
    }
}

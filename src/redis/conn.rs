//! One connection type for a single Redis and for a Redis Cluster.
//!
//! `REDIS_URL` names one server, or one or more nodes of a cluster (comma-separated). Which it is
//! is found out on first use: the first node that answers says whether `cluster_enabled` is on.
//! Then every command goes through a reconnecting [`ConnectionManager`] (a single server) or the
//! `redis` crate's cluster client, which follows `MOVED`, `ASK` and `TRYAGAIN` and learns the new
//! slot map after a failover. The finding waits for Redis: a process starts while Redis is away
//! and connects when it comes back, as with a single server before.
//!
//! Commands about a server rather than a key (`INFO`, `CONFIG GET`, `SCAN`, `MEMORY STATS`) go to
//! the node holding a given key's slot: [`Conn::query_at`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

/// A handle on the deployment's Redis, cheap to clone; see the module's text.
#[derive(Clone)]
pub struct Conn {
    shared: Arc<Shared>,
}

struct Shared {
    nodes: Vec<String>,
    timeouts: Timeouts,
    mode: OnceCell<Mode>,
}

/// How long connecting and each command may take (`REDIS_CONNECT_TIMEOUT`,
/// `REDIS_RESPONSE_TIMEOUT`): past them a call fails instead of hanging on a link that stopped
/// answering.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Timeouts {
    pub fn from_config(c: &crate::config::Config) -> Timeouts {
        Timeouts { connect: c.redis_connect_timeout, response: c.redis_response_timeout }
    }
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts::from_config(&crate::config::Config::default())
    }
}

#[derive(Clone)]
enum Mode {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The URLs of `REDIS_URL`: comma-separated; a node given as `host:port` takes the first URL's
/// scheme and credentials.
pub fn node_urls(redis_url: &str) -> Vec<String> {
    let items: Vec<&str> = redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let Some(first) = items.first() else { return Vec::new() };
    // `redis://user:pass@` of the first URL, for the bare nodes after it.
    let head = match first.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, _)) => format!("{scheme}://{auth}@"),
            None => format!("{scheme}://"),
        },
        None => "redis://".to_string(),
    };
    items.iter().map(|item| if item.contains("://") { item.to_string() } else { format!("{head}{item}") }).collect()
}

fn manager_config(t: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(t.connect))
        .set_response_timeout(Some(t.response))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
}

impl Conn {
    /// A handle that connects on first use, within the timeouts given.
    pub fn lazy(redis_url: &str, timeouts: Timeouts) -> RedisResult<Conn> {
        let nodes = node_urls(redis_url);
        if nodes.is_empty() {
            return Err((redis::ErrorKind::InvalidClientConfig, "REDIS_URL names no Redis").into());
        }
        for n in &nodes {
            redis::Client::open(n.as_str())?;
        }
        Ok(Conn { shared: Arc::new(Shared { nodes, timeouts, mode: OnceCell::new() }) })
    }

    /// The URL of the first node given.
    pub fn first_url(&self) -> &str {
        &self.shared.nodes[0]
    }

    async fn mode(&self) -> RedisResult<&Mode> {
        self.shared.mode.get_or_try_init(|| connect(&self.shared.nodes, self.shared.timeouts)).await
    }

    /// Whether the deployment's Redis is a cluster (connecting first, if need be).
    pub async fn is_cluster(&self) -> RedisResult<bool> {
        Ok(matches!(self.mode().await?, Mode::Cluster(_)))
    }

    /// Run a command about a server on the node that holds `key`'s slot (on a single Redis,
    /// that Redis).
    pub async fn query_at<T: FromRedisValue>(&self, key: &str, cmd: &Cmd) -> RedisResult<T> {
        match self.mode().await? {
            Mode::Single(c) => cmd.query_async(&mut c.clone()).await,
            Mode::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let v = c
                    .clone()
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                    .await?;
                T::from_redis_value(v).map_err(Into::into)
            }
        }
    }
}

impl Conn {
    /// Run a command about a server on every master (on a single Redis, that Redis): each
    /// master's address and answer, by address.
    pub async fn query_masters(&self, cmd: &Cmd) -> RedisResult<Vec<(String, String)>> {
        match self.mode().await? {
            Mode::Single(c) => Ok(vec![(self.first_url().to_string(), cmd.query_async(&mut c.clone()).await?)]),
            Mode::Cluster(c) => {
                let routing =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::Special)));
                let mut out = match c.clone().route_command(cmd.clone(), routing).await? {
                    Value::Map(answers) => answers
                        .into_iter()
                        .map(|(node, v)| Ok((String::from_redis_value(node)?, String::from_redis_value(v)?)))
                        .collect::<RedisResult<Vec<_>>>()?,
                    other => vec![(String::new(), String::from_redis_value(other)?)],
                };
                out.sort();
                Ok(out)
            }
        }
    }
}

/// Find out what the nodes are and connect to them.
async fn connect(nodes: &[String], timeouts: Timeouts) -> RedisResult<Mode> {
    let mut last = None;
    for url in nodes {
        match cluster_enabled(url, timeouts).await {
            Ok(false) if nodes.len() > 1 => {
                return Err((
                    redis::ErrorKind::InvalidClientConfig,
                    "REDIS_URL names several nodes, but this one is not in a cluster",
                    url.clone(),
                )
                    .into());
            }
            Ok(false) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManager::new_with_config(client, manager_config(timeouts)).await?;
                return Ok(Mode::Single(manager));
            }
            Ok(true) => {
                let client = ClusterClientBuilder::new(nodes.to_vec())
                    .connection_timeout(timeouts.connect)
                    .response_timeout(timeouts.response)
                    .retries(8)
                    .min_retry_wait(20)
                    .max_retry_wait(1000)
                    // A node that cannot be reached after a few tries is dropped from the
                    // client's map, which makes the next request for its slots read the map
                    // afresh: after a master dies, its promoted replica is found. (Without a
                    // bound the client would keep reconnecting to the dead node for as long
                    // as it is down.)
                    .max_connection_attempts(std::num::NonZeroUsize::new(3).expect("3 is not 0"))
                    .build()?;
                return Ok(Mode::Cluster(client.get_async_connection().await?));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| (redis::ErrorKind::InvalidClientConfig, "REDIS_URL names no Redis").into()))
}

/// Whether `cmd` is `SCRIPT LOAD`: what a script call sends after `NOSCRIPT`.
fn is_script_load(cmd: &Cmd) -> bool {
    let mut words = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(w) => Some(w),
        _ => None,
    });
    matches!((words.next(), words.next()), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b"SCRIPT") && b.eq_ignore_ascii_case(b"LOAD"))
}

/// `cluster_enabled` from the node's `INFO cluster`.
async fn cluster_enabled(url: &str, timeouts: Timeouts) -> RedisResult<bool> {
    let client = redis::Client::open(url)?;
    let fut = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO").arg("cluster").query_async::<String>(&mut con).await
    };
    let info = match tokio::time::timeout(timeouts.connect + timeouts.response, fut).await {
        Ok(r) => r?,
        Err(_) => return Err((redis::ErrorKind::Io, "no answer from Redis in time", url.to_string()).into()),
    };
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.mode().await? {
                Mode::Single(c) => c.clone().req_packed_command(cmd).await,
                Mode::Cluster(c) if is_script_load(cmd) => {
                    // Every node, so a replica promoted later has the script too; one node's
                    // answer is enough, since a node that is down (a master just killed, still
                    // in the slot map) must not keep the others from having it.
                    let everywhere =
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, Some(ResponsePolicy::OneSucceeded)));
                    c.clone().route_command(cmd.clone(), everywhere).await
                }
                Mode::Cluster(c) => c.clone().req_packed_command(cmd).await,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.mode().await? {
                Mode::Single(c) => c.clone().req_packed_commands(cmd, offset, count).await,
                Mode::Cluster(c) => c.clone().req_packed_commands(cmd, offset, count).await,
            }
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_names_one_node_or_several() {
        assert_eq!(node_urls("redis://127.0.0.1:6379"), ["redis://127.0.0.1:6379"]);
        assert_eq!(
            node_urls("redis://:pw@10.0.0.1:7000, 10.0.0.2:7001,redis://10.0.0.3:7002"),
            ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7001", "redis://10.0.0.3:7002"]
        );
        assert!(node_urls(" , ").is_empty());
        assert!(Conn::lazy("", Timeouts::default()).is_err());
    }

    #[test]
    fn script_loads_are_told_apart() {
        assert!(is_script_load(redis::cmd("SCRIPT").arg("LOAD").arg("return 1")));
        assert!(is_script_load(redis::cmd("script").arg("load").arg("return 1")));
        assert!(!is_script_load(redis::cmd("SCRIPT").arg("FLUSH")));
        assert!(!is_script_load(redis::cmd("EVALSHA").arg("abc").arg(0)));
    }
}

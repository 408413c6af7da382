//! Harness for the engine's integration tests: a real Redis, one engine per test under its own
//! key prefix, workers, the HTTP router, and a poller that waits for conditions (never for a
//! fixed time).
//!
//! Redis: `SWITCHYARD_TEST_REDIS_URL` when set; otherwise one `redis-server` shared by the whole
//! test binary, on a free port, without persistence, stopped by a watchdog when the test process
//! exits — with `SWITCHYARD_TEST_CLUSTER=<masters>`, a Redis Cluster of that many masters
//! instead (with one, every slot is on one node, and a script touching a key outside its slot
//! still fails). Tests that stop Redis start
//! their own [`RedisProcess`]; tests of a cluster start their own [`RedisCluster`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard::config::Config;
use switchyard::engine::worker::{self, WorkerHandle, WorkerOptions};
use switchyard::engine::{Engine, Lane, Registry, TaskState, TaskStatus};
use switchyard::web::{self, AppState};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The admin token `Config::for_test` sets.
pub const TOKEN: &str = "test-token-0123456789";

/// How long any condition may take before a test gives up. Generous: a slow machine must not
/// fail a test, only a broken behaviour.
pub const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Redis processes
// ---------------------------------------------------------------------------------------------

/// A `redis-server` started by this test process, through `sh -c` with a watchdog that kills it
/// when the test process (or the server itself) is gone.
pub struct RedisProcess {
    pub port: u16,
    /// The server's pid, as reported by the shell that started it.
    pub pid: u32,
    child: Child,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// Send one inline command to a Redis on `port` and read its first reply line.
fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        // A bulk reply may arrive in pieces; stop once it looks complete.
        let text = String::from_utf8_lossy(&out);
        if let Some(rest) = text.strip_prefix('$') {
            let len: usize = rest.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
            let header = text.find("\r\n").map(|i| i + 2).unwrap_or(0);
            if out.len() >= header + len + 2 {
                break;
            }
        } else if text.contains("\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl RedisProcess {
    /// Start a server on a free port (retrying on another port if that one was taken meanwhile).
    pub fn start_on_free_port() -> RedisProcess {
        let mut last = String::new();
        for _ in 0..5 {
            match RedisProcess::try_start(free_port(), "") {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    /// Start a server on `port` (after a stop, the same port again).
    pub fn start(port: u16) -> RedisProcess {
        let mut last = String::new();
        // The old server's port may take a moment to be released.
        for _ in 0..20 {
            match RedisProcess::try_start(port, "") {
                Ok(p) => return p,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        panic!("could not start redis-server on port {port}: {last}");
    }

    /// A replica of `master` on a free port, once it has caught up.
    pub fn start_replica_of(master: &RedisProcess) -> RedisProcess {
        let mut last = String::new();
        for _ in 0..5 {
            match RedisProcess::try_start(free_port(), &format!("--replicaof 127.0.0.1 {}", master.port)) {
                Ok(p) => {
                    wait_sync("the replica is linked", || {
                        raw_command(p.port, "INFO replication").is_ok_and(|i| i.contains("master_link_status:up"))
                    });
                    return p;
                }
                Err(e) => last = e,
            }
        }
        panic!("could not start a replica: {last}");
    }

    /// A node for a Redis Cluster on a free port: cluster mode on, no slots yet.
    pub fn start_cluster_node() -> RedisProcess {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = std::env::temp_dir().join(format!("switchyard-test-nodes-{port}.conf"));
            let _ = std::fs::remove_file(&conf);
            let extra =
                format!("--cluster-enabled yes --cluster-config-file '{}' --cluster-node-timeout 2000", conf.display());
            match RedisProcess::try_start(port, &extra) {
                Ok(p) => return p,
                Err(e) => last = e,
            }
        }
        panic!("could not start a cluster node: {last}");
    }

    /// A server of its own: its snapshot file (which a replica writes when it syncs) is its
    /// own too, so no server starts with another's data, and both its files go when it does.
    fn try_start(port: u16, extra: &str) -> Result<RedisProcess, String> {
        let dir = std::env::temp_dir();
        let script = format!(
            "rm -f '{dir}/switchyard-test-{port}.rdb'; \
             redis-server --save '' --appendonly no --port {port} --bind 127.0.0.1 --dir '{dir}' \
             --dbfilename switchyard-test-{port}.rdb {extra} >/dev/null 2>&1 & r=$!; \
             echo $r; \
             while kill -0 {parent} 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done; \
             kill $r 2>/dev/null; rm -f '{dir}/switchyard-test-nodes-{port}.conf' '{dir}/switchyard-test-{port}.rdb'",
            dir = dir.display(),
            parent = std::process::id(),
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the server's pid: {e}"))?;
        let pid: u32 = line.trim().parse().map_err(|_| format!("no pid from sh: {line:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(format!("redis-server exited at once (port {port} taken?)"));
            }
            // It must be *our* server answering, not another one that took the port.
            if let Ok(info) = raw_command(port, "INFO server") {
                if info.contains(&format!("process_id:{pid}\r\n")) {
                    return Ok(RedisProcess { port, pid, child });
                }
                if info.contains("process_id:") {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                    let _ = child.wait();
                    return Err(format!("port {port} is served by another redis-server"));
                }
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                let _ = child.wait();
                return Err(format!("redis-server did not answer on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a machine dies: no reply to anyone, nothing flushed; wait until the port
    /// refuses connections.
    pub fn kill(mut self) {
        let _ = Command::new("kill").arg("-9").arg(self.pid.to_string()).status();
        wait_sync("the killed server is gone", || raw_command(self.port, "PING").is_err());
        let _ = self.child.wait();
    }

    /// `SHUTDOWN NOSAVE`, then wait until the port refuses connections and the watchdog exits.
    pub fn stop(mut self) {
        let _ = raw_command(self.port, "SHUTDOWN NOSAVE");
        let deadline = Instant::now() + Duration::from_secs(10);
        while raw_command(self.port, "PING").is_ok() {
            if Instant::now() > deadline {
                let _ = Command::new("kill").arg("-9").arg(self.pid.to_string()).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// A Redis Cluster on free ports: masters sharing the slots in equal ranges, in order, each with
/// its replicas. Its processes stop with the test process (or when dropped).
pub struct RedisCluster {
    pub masters: Vec<RedisProcess>,
    pub replicas: Vec<RedisProcess>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        let m: Vec<RedisProcess> = (0..masters).map(|_| RedisProcess::start_cluster_node()).collect();
        let r: Vec<RedisProcess> =
            (0..masters * replicas_per_master).map(|_| RedisProcess::start_cluster_node()).collect();
        let cmd = |port: u16, c: &str| {
            let reply = raw_command(port, c).unwrap_or_else(|e| panic!("{c} on {port}: {e}"));
            assert!(!reply.starts_with('-'), "{c} on {port}: {reply}");
            reply
        };
        for (i, node) in m.iter().enumerate() {
            let (lo, hi) = (16384 * i / masters, 16384 * (i + 1) / masters - 1);
            cmd(node.port, &format!("CLUSTER ADDSLOTSRANGE {lo} {hi}"));
        }
        let all: Vec<u16> = m.iter().chain(&r).map(|n| n.port).collect();
        for &port in &all[1..] {
            cmd(port, &format!("CLUSTER MEET 127.0.0.1 {}", all[0]));
        }
        let known = format!("cluster_known_nodes:{}\r\n", all.len());
        wait_sync("every node knows every other", || all.iter().all(|&p| cmd(p, "CLUSTER INFO").contains(&known)));
        for (j, replica) in r.iter().enumerate() {
            let master = &m[j / replicas_per_master.max(1)];
            let id = cmd(master.port, "CLUSTER MYID");
            let id = id.lines().nth(1).unwrap_or_default().trim().to_string();
            cmd(replica.port, &format!("CLUSTER REPLICATE {id}"));
        }
        wait_sync("the cluster is up", || all.iter().all(|&p| cmd(p, "CLUSTER INFO").contains("cluster_state:ok")));
        RedisCluster { masters: m, replicas: r }
    }

    /// A new node joined as a replica of the master on `master_port`, once it has caught up (as
    /// an operator brings a failed master back).
    pub fn add_replica(master_port: u16) -> RedisProcess {
        let node = RedisProcess::start_cluster_node();
        let reply = raw_command(node.port, &format!("CLUSTER MEET 127.0.0.1 {master_port}")).expect("CLUSTER MEET");
        assert!(!reply.starts_with('-'), "{reply}");
        let id = raw_command(master_port, "CLUSTER MYID").expect("CLUSTER MYID");
        let id = id.lines().nth(1).unwrap_or_default().trim().to_string();
        wait_sync("the new node knows the master", || {
            raw_command(node.port, "CLUSTER NODES").is_ok_and(|n| n.contains(&id))
        });
        wait_sync("the new node replicates", || {
            raw_command(node.port, &format!("CLUSTER REPLICATE {id}")).is_ok_and(|r| r.starts_with('+'))
        });
        wait_sync("the new replica caught up", || {
            raw_command(node.port, "INFO replication").is_ok_and(|i| i.contains("master_link_status:up"))
        });
        node
    }

    /// Move `slot` from the master on `from` to the one on `to` as `redis-cli --cluster
    /// reshard` does: mark it importing and migrating, `MIGRATE` its keys a few at a time
    /// (clients meanwhile get `ASK` and `TRYAGAIN`), then give it to `to`. `pause` between
    /// steps keeps the slot half-moved for a while.
    pub fn move_slot(slot: u16, from: u16, to: u16, pause: Duration) {
        let mut m = SlotMove::begin(slot, from, to);
        m.migrate_rest(pause);
        m.finish();
    }

    /// `REDIS_URL` for it: every master, comma-separated.
    pub fn url(&self) -> String {
        self.masters.iter().map(RedisProcess::url).collect::<Vec<_>>().join(",")
    }
}

/// A slot on its way from one master to another, a step at a time (see
/// [`RedisCluster::move_slot`]).
pub struct SlotMove {
    slot: u16,
    to: u16,
    src: redis::Connection,
    dst: redis::Connection,
    dst_id: String,
}

impl SlotMove {
    /// Mark the slot importing on `to` and migrating on `from`.
    pub fn begin(slot: u16, from: u16, to: u16) -> SlotMove {
        let node =
            |port: u16| redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
        let (mut src, mut dst) = (node(from), node(to));
        let id = |con: &mut redis::Connection| -> String { redis::cmd("CLUSTER").arg("MYID").query(con).unwrap() };
        let (src_id, dst_id) = (id(&mut src), id(&mut dst));
        let mut m = SlotMove { slot, to, src, dst, dst_id };
        m.setslot(false, "IMPORTING", &src_id);
        let dst_id = m.dst_id.clone();
        m.setslot(true, "MIGRATING", &dst_id);
        m
    }

    fn setslot(&mut self, on_src: bool, how: &str, node: &str) {
        let con = if on_src { &mut self.src } else { &mut self.dst };
        let () = redis::cmd("CLUSTER").arg("SETSLOT").arg(self.slot).arg(how).arg(node).query(con).unwrap();
    }

    /// `MIGRATE` these keys to the new master now.
    pub fn migrate(&mut self, keys: &[String]) {
        let mut migrate = redis::cmd("MIGRATE");
        migrate.arg("127.0.0.1").arg(self.to).arg("").arg(0).arg(5000).arg("KEYS").arg(keys);
        let _: String = migrate.query(&mut self.src).unwrap();
    }

    /// `MIGRATE` the slot's other keys, five at a time, `pause` between steps.
    pub fn migrate_rest(&mut self, pause: Duration) {
        loop {
            let keys: Vec<String> =
                redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(self.slot).arg(5).query(&mut self.src).unwrap();
            if keys.is_empty() {
                break;
            }
            self.migrate(&keys);
            std::thread::sleep(pause);
        }
    }

    /// Give the slot to the new master.
    pub fn finish(mut self) {
        let dst_id = self.dst_id.clone();
        self.setslot(false, "NODE", &dst_id);
        self.setslot(true, "NODE", &dst_id);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in self.masters.drain(..).chain(self.replicas.drain(..)) {
            node.stop();
        }
    }
}

/// Poll a condition without a runtime, up to [`WAIT`].
fn wait_sync(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Redis every test shares (unless it needs its own).
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("SWITCHYARD_TEST_REDIS_URL")
            && !url.trim().is_empty()
        {
            return url.trim().to_string();
        }
        if let Some(masters) = std::env::var("SWITCHYARD_TEST_CLUSTER").ok().and_then(|v| v.parse().ok()) {
            let cluster = RedisCluster::start(masters, 0);
            let url = cluster.url();
            std::mem::forget(cluster);
            return url;
        }
        let server = RedisProcess::start_on_free_port();
        let url = server.url();
        // Lives as long as the test process; its watchdog stops it then.
        std::mem::forget(server);
        url
    })
    .clone()
}

/// `t-<name>-<random>`: no two tests (or runs) share keys.
pub fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("t-{name}-{:x}{:08x}{n}", std::process::id(), nanos)
}

// ---------------------------------------------------------------------------------------------
// A faulty link between a process and Redis
// ---------------------------------------------------------------------------------------------

/// A TCP proxy in front of a Redis, playing the faults of the network between a process and it:
/// [`Proxy::slow`] adds latency to every request, [`Proxy::cut`] drops every connection
/// mid-stream, [`Proxy::hold`] blackholes the link (connections stay open, nothing is answered,
/// what was sent arrives when it heals, as TCP retransmits it), [`Proxy::partition`] cuts every
/// connection and refuses new ones; [`Proxy::heal`] ends them all. Stops with the test's runtime.
pub struct Proxy {
    pub port: u16,
    link: tokio::sync::watch::Sender<Link>,
    state: Arc<Mutex<ProxyState>>,
    accept: tokio::task::AbortHandle,
}

/// How the link behaves now.
#[derive(Clone, Copy, Default)]
struct Link {
    /// Added to every chunk on its way to Redis.
    delay: Duration,
    /// Nothing passes; chunks wait.
    held: bool,
}

#[derive(Default)]
struct ProxyState {
    partitioned: bool,
    pumps: Vec<tokio::task::AbortHandle>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let state: Arc<Mutex<ProxyState>> = Arc::default();
        let (link, _) = tokio::sync::watch::channel(Link::default());
        let (st, lk) = (state.clone(), link.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if st.lock().unwrap().partitioned {
                    continue; // dropped: closed at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else { continue };
                let mut state = st.lock().unwrap();
                if state.partitioned {
                    continue;
                }
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = pump(client_read, server_write, lk.subscribe(), true);
                let down = pump(server_read, client_write, lk.subscribe(), false);
                state.pumps.retain(|p| !p.is_finished());
                state.pumps.extend(up.into_iter().chain(down));
            }
        });
        Proxy { port, link, state, accept: accept.abort_handle() }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Add `delay` to every request on its way to Redis.
    pub fn slow(&self, delay: Duration) {
        self.link.send_modify(|l| l.delay = delay);
    }

    /// Stop passing anything, both ways, without closing a connection.
    pub fn hold(&self) {
        self.link.send_modify(|l| l.held = true);
    }

    /// Drop every connection through the proxy, whatever it was in the middle of; new ones pass.
    pub fn cut(&self) {
        for p in self.state.lock().unwrap().pumps.drain(..) {
            p.abort();
        }
    }

    /// Cut every connection through the proxy and refuse new ones.
    pub fn partition(&self) {
        self.state.lock().unwrap().partitioned = true;
        self.cut();
    }

    /// End every fault: no delay, nothing held (what waited passes now), connections accepted.
    pub fn heal(&self) {
        self.state.lock().unwrap().partitioned = false;
        self.link.send_replace(Link::default());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.partition();
    }
}

/// Carry bytes one way until either side closes: a reader stamps each chunk, a writer passes it
/// on once the link allows (the delay past its stamp, and not held). The two tasks, to abort.
fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<Link>,
    upstream: bool,
) -> [tokio::task::AbortHandle; 2] {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if from.readable().await.is_err() {
                return;
            }
            match from.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some((stamp, bytes)) = rx.recv().await {
            loop {
                let now = *link.borrow_and_update();
                if now.held {
                    if link.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let due = stamp + if upstream { now.delay } else { Duration::ZERO };
                if Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => {}
                    r = link.changed() => if r.is_err() { return },
                }
            }
            let mut sent = 0;
            while sent < bytes.len() {
                if to.writable().await.is_err() {
                    return;
                }
                match to.try_write(&bytes[sent..]) {
                    Ok(k) => sent += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return,
                }
            }
        }
    });
    [reader.abort_handle(), writer.abort_handle()]
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/// Poll `check` every 20 ms until it holds; panic naming `what` after [`WAIT`].
pub async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    wait_until_within(what, WAIT, check).await
}

pub async fn wait_until_within(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `get` every 20 ms until it yields a value; panic naming `what` after [`WAIT`].
pub async fn wait_for<T>(what: &str, mut get: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = get().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// One test's deployment
// ---------------------------------------------------------------------------------------------

/// One test's deployment: settings, an engine, and background tasks stopped on drop.
pub struct TestEnv {
    pub url: String,
    pub prefix: String,
    pub config: Config,
    pub engine: Engine,
    background: CancellationToken,
}

impl TestEnv {
    /// An engine on the shared Redis with `Config::for_test`.
    pub async fn new(name: &str) -> TestEnv {
        TestEnv::with(name, &redis_url(), |_| {}).await
    }

    /// An engine on `url`, with the test settings adjusted by `adjust`, groups created.
    pub async fn with(name: &str, url: &str, adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let env = TestEnv::lazy(name, url, adjust, switchyard::app::registry());
        env.engine.ensure_groups().await.expect("create consumer groups");
        env
    }

    /// As [`TestEnv::with`] with a registry of one's own, without touching Redis yet.
    pub fn lazy(name: &str, url: &str, adjust: impl FnOnce(&mut Config), registry: Registry) -> TestEnv {
        let prefix = unique_prefix(name);
        let mut config = Config::for_test(url, &prefix);
        if let Some(p) = std::env::var("SWITCHYARD_TEST_PARTITIONS").ok().and_then(|p| p.parse().ok()) {
            config.partitions = p;
        }
        adjust(&mut config);
        config.validate().expect("valid test config");
        let engine = Engine::new(config.clone(), url, registry).expect("engine");
        TestEnv { url: url.to_string(), prefix, config, engine, background: CancellationToken::new() }
    }

    /// Another engine on the same deployment, as a second process would have.
    pub fn second_engine(&self) -> Engine {
        self.engine_via(&self.url)
    }

    /// Another engine on the same deployment reaching Redis at `url` (through a [`Proxy`]).
    pub fn engine_via(&self, url: &str) -> Engine {
        let mut config = self.config.clone();
        config.redis_url = Some(url.to_string());
        Engine::new(config, url, self.engine.registry().clone()).expect("engine")
    }

    pub fn lane_key(&self, lane: Lane) -> String {
        self.engine.keys().lane(lane)
    }

    /// A worker on every lane with the deployment's settings.
    pub fn start_worker(&self) -> Worker {
        self.start_worker_on(self.engine.clone(), |_| {})
    }

    /// A worker on `engine`, its options adjusted by `adjust`.
    pub fn start_worker_on(&self, engine: Engine, adjust: impl FnOnce(&mut WorkerOptions)) -> Worker {
        let mut opts = WorkerOptions::from_config(engine.config(), Lane::ALL.to_vec());
        adjust(&mut opts);
        let token = CancellationToken::new();
        let handle = worker::start(engine, opts, token.clone());
        Worker { handle: Some(handle), token }
    }

    /// The HTTP router, with a readiness flag that starts true (see [`TestEnv::watch_readiness`]).
    pub fn router(&self) -> (Router, Arc<AtomicBool>) {
        self.router_on(self.engine.clone())
    }

    /// As [`TestEnv::router`], on another engine (a second process: [`TestEnv::second_engine`]),
    /// with a key set of its own.
    pub fn router_on(&self, engine: Engine) -> (Router, Arc<AtomicBool>) {
        let ready = Arc::new(AtomicBool::new(true));
        let state = AppState {
            engine,
            admin_token: Arc::new(TOKEN.to_string()),
            ready: ready.clone(),
            draining: Arc::default(),
            prometheus: switchyard::telemetry::prometheus(),
            jwks: switchyard::app::jwks(&self.config).expect("Pub/Sub key set"),
            auth_throttle: Arc::new(web::throttle::AuthThrottle::from_config(&self.config)),
        };
        (web::router(state), ready)
    }

    /// The router behind the real front door (connection caps, timeouts, body bounds), on a
    /// free loopback port until the test ends: its address.
    pub async fn serve(&self) -> std::net::SocketAddr {
        self.serve_with(web::front::Limits::from_config(&self.config)).await
    }

    /// As [`TestEnv::serve`], with the front door's limits given.
    pub async fn serve_with(&self, limits: web::front::Limits) -> std::net::SocketAddr {
        let (router, _) = self.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(web::front::serve(listener, router, limits, self.background.clone()));
        addr
    }

    /// Drive `ready` as `serve` does, until the test ends.
    pub fn watch_readiness(&self, ready: Arc<AtomicBool>) {
        tokio::spawn(switchyard::app::watch_readiness(self.engine.clone(), ready, self.background.clone()));
    }

    /// Wait until the task runs on the named worker.
    pub async fn wait_started_by(&self, id: &str, worker: &str) {
        wait_until(&format!("worker {worker} started task {id}"), async || {
            self.engine
                .task_status(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.status == TaskState::Started && s.worker.as_deref() == Some(worker))
        })
        .await;
    }

    pub async fn status(&self, id: &str) -> TaskStatus {
        self.engine.task_status(id).await.expect("task status").unwrap_or_else(|| panic!("no record for task {id}"))
    }

    /// Wait until the task is in `state`, and return its record.
    pub async fn wait_state(&self, id: &str, state: TaskState) -> TaskStatus {
        wait_for(&format!("task {id} is {state:?}"), async || {
            self.engine.task_status(id).await.ok().flatten().filter(|s| s.status == state)
        })
        .await
    }

    /// `XLEN` of a lane, over every partition.
    pub async fn lane_len(&self, lane: Lane) -> u64 {
        let mut con = self.engine.conn();
        let mut n = 0;
        for p in 0..self.engine.partitions() {
            let len: u64 =
                redis::cmd("XLEN").arg(self.engine.part(p).lane(lane)).query_async(&mut con).await.expect("XLEN");
            n += len;
        }
        n
    }

    /// Every entry of a lane's stream (of every partition), oldest first, as (task id, kind).
    pub async fn lane_entries(&self, lane: Lane) -> Vec<(String, String)> {
        let mut con = self.engine.conn();
        let mut all = Vec::new();
        for p in 0..self.engine.partitions() {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.engine.part(p).lane(lane))
                .arg("-")
                .arg("+")
                .query_async(&mut con)
                .await
                .expect("XRANGE");
            all.extend(reply.ids.into_iter().map(|e| (p, e)));
        }
        all.sort_by_key(|(_, e)| switchyard::engine::parse_entry_id(&e.id));
        all.iter()
            .map(|(p, e)| {
                // A task is named after its entry, unless the entry names it (a redrive).
                let id: String = e
                    .get("id")
                    .or_else(|| switchyard::engine::task_id_for_entry(*p, lane, &e.id))
                    .unwrap_or_else(|| panic!("entry {} names no task", e.id));
                let kind: String = e.get("kind").unwrap_or_else(|| panic!("entry {} without a kind", e.id));
                (id, kind)
            })
            .collect()
    }

    /// The records of every task in a lane's stream, oldest first.
    pub async fn lane_tasks(&self, lane: Lane) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        for (id, _) in self.lane_entries(lane).await {
            out.push(self.status(&id).await);
        }
        out
    }

    /// Read up to `count` new entries of `lane` for `consumer` as a worker does (fetch.lua: the
    /// tasks' records written in the same step), without running them.
    pub async fn read_as(&self, lane: Lane, consumer: &str, count: usize) -> redis::Value {
        let mut con = self.engine.conn();
        self.engine
            .scripts()
            .fetch
            .key(self.lane_key(lane))
            .arg(self.engine.keys().root())
            .arg("workers")
            .arg(consumer)
            .arg(count)
            .arg(lane.as_str())
            .arg(lane.index())
            .arg(7 * 24 * 3600 * 1000u64)
            .invoke_async(&mut con)
            .await
            .expect("fetch.lua")
    }

    /// Acknowledge the entry task `id` is named after, as its worker does when it finishes, and
    /// leave the entry in the lane (acknowledged entries wait there to be trimmed). Returns how
    /// many entries were acknowledged.
    pub async fn ack_entry(&self, id: &str) -> i64 {
        let (p, lane, entry) = switchyard::engine::entry_of_task(id).expect("a task id named after its entry");
        let mut con = self.engine.conn();
        redis::cmd("XACK")
            .arg(self.engine.part(p).lane(lane))
            .arg("workers")
            .arg(entry)
            .query_async(&mut con)
            .await
            .expect("XACK")
    }

    /// Entries pending in a lane's group (`XPENDING` summary count), over every partition.
    pub async fn lane_pending(&self, lane: Lane) -> u64 {
        let mut con = self.engine.conn();
        let mut n = 0;
        for p in 0..self.engine.partitions() {
            let v: redis::Value = redis::cmd("XPENDING")
                .arg(self.engine.part(p).lane(lane))
                .arg("workers")
                .query_async(&mut con)
                .await
                .expect("XPENDING");
            n += match v {
                redis::Value::Array(items) => match items.first() {
                    Some(redis::Value::Int(n)) => *n as u64,
                    other => panic!("unexpected XPENDING count {other:?}"),
                },
                other => panic!("unexpected XPENDING reply {other:?}"),
            };
        }
        n
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.background.cancel();
        // On a Redis the tests did not start themselves, leave nothing behind (best effort).
        if std::env::var("SWITCHYARD_TEST_REDIS_URL").is_ok_and(|u| u.trim() == self.url) {
            delete_prefix(&self.url, self.engine.keys().root());
        }
    }
}

/// Delete every key under `root` (`{prefix}:`), ignoring errors.
fn delete_prefix(url: &str, root: &str) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return };
    let mut cursor: u64 = 0;
    loop {
        let page: redis::RedisResult<(u64, Vec<String>)> =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{root}*")).arg("COUNT").arg(1000).query(&mut con);
        let Ok((next, keys)) = page else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A running worker; stopped (without waiting) when dropped.
pub struct Worker {
    handle: Option<WorkerHandle>,
    pub token: CancellationToken,
}

impl Worker {
    pub fn name(&self) -> String {
        self.handle().name().to_string()
    }

    pub fn completed(&self) -> u64 {
        self.handle().completed()
    }

    pub fn in_flight(&self) -> usize {
        self.handle().in_flight()
    }

    fn handle(&self) -> &WorkerHandle {
        self.handle.as_ref().expect("worker still running")
    }

    /// Ask it to shut down and wait until it has (drained and recorded everything).
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.wait().await;
        }
    }

    /// Stop it at once, as a killed process would.
    pub fn kill(mut self) {
        if let Some(h) = self.handle.take() {
            h.kill();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP answer: status, the body as JSON (`Null` when it is not JSON), and as text.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Resp {
    /// Assert the body is the API's error shape with this code, and return the message.
    pub fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        let err = &self.json["error"];
        assert_eq!(err["code"], code, "unexpected error code in {}", self.text);
        let message = err["message"].as_str().unwrap_or_else(|| panic!("error without a message: {}", self.text));
        assert!(!message.is_empty(), "empty error message: {}", self.text);
        message.to_string()
    }
}

/// Call the router once. `token`: the bearer token to send, if any; `body`: raw body text.
pub async fn http(router: &Router, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).expect("request");
    send(router, req).await
}

/// Call the router once with exactly these headers and these body bytes (webhooks sign bytes).
pub async fn http_with(router: &Router, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(router, req.body(Body::from(body)).expect("request")).await
}

async fn send(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("read body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, json, text }
}

/// Call an admin route with the right token.
pub async fn admin(router: &Router, method: &str, path: &str, body: Option<&str>) -> Resp {
    http(router, method, path, Some(TOKEN), body).await
}

/// The `outcome` of every attempt in a task's history, in order.
pub fn outcomes(s: &TaskStatus) -> Vec<String> {
    s.history.iter().map(|a| a.outcome.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// A stand-in for the platforms' send APIs (Graph API, RBM)
// ---------------------------------------------------------------------------------------------

/// One request the platform received, and whether it accepted it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub auth: Option<String>,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

/// An answer to give: status, `Retry-After`, body.
pub type Answer = (u16, Option<&'static str>, Value);

/// A local server playing Meta's Graph API and RBM: answers from a script, records every request.
#[derive(Clone, Default)]
pub struct FakePlatform {
    /// Answers to give, in order; when empty, 200 with a message id.
    script: Arc<Mutex<std::collections::VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How long each answer takes.
    delay: Arc<Mutex<Duration>>,
}

impl FakePlatform {
    pub fn then(&self, status: u16, retry_after: Option<&'static str>, body: Value) -> &Self {
        self.script.lock().unwrap().push_back((status, retry_after, body));
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Take `delay` over every answer from now on, as a busy platform does.
    pub fn slow(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn accepted(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.status == 200).collect()
    }

    pub async fn start(&self) -> String {
        async fn answer(
            axum::extract::State(p): axum::extract::State<FakePlatform>,
            req: axum::extract::Request,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let delay = *p.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let (status, retry_after, reply) = p.script.lock().unwrap().pop_front().unwrap_or((
                200,
                None,
                serde_json::json!({"message_id": "mid.ok"}),
            ));
            p.seen.lock().unwrap().push(Seen { path, query, auth, body, status, at: Instant::now() });
            let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(reply)).into_response();
            if let Some(r) = retry_after {
                resp.headers_mut().insert("retry-after", r.parse().unwrap());
            }
            resp
        }
        let app = Router::new().fallback(answer).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }
}

// ---------------------------------------------------------------------------------------------
// Signing webhooks as the platforms do
// ---------------------------------------------------------------------------------------------

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as Meta and generic sources sign.
pub fn meta_sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// base64(HMAC-SHA512(client token, data)), as RBM signs.
pub fn rbm_sign(token: &str, data: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(data);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The Pub/Sub push envelope RBM wraps its events in.
pub fn rbm_envelope(pubsub_id: &str, data: &str) -> Vec<u8> {
    use base64::Engine as _;
    serde_json::json!({
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": pubsub_id,
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": "projects/p/subscriptions/rbm",
    })
    .to_string()
    .into_bytes()
}

//! `switchyard bench hostile`: a server under attack, measured from outside. A `switchyard
//! serve` child with the default settings takes a steady load of signed Messenger webhooks
//! three times: alone, beside thousands of slow connections (heads and bodies sent a byte at a
//! time, kept-alive connections left idle) from a few addresses, and beside connections that
//! each declare a 1 MiB body and send all of it but the last byte. It reports the webhooks'
//! latencies in each phase, how the slow connections ended, and the child's resident memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::child::Server;
use super::send_api::{self, SECRET};
use crate::config::Config;
/// Slow connections per source address: under the default cap per client, so that every one
/// of them is taken and has to be ended by a timeout.
const PER_ADDRESS: usize = 500;

#[derive(Debug, Serialize)]
pub struct HostileReport {
    pub rate: u64,
    pub seconds: u64,
    pub quiet: Load,
    pub slow: SlowPhase,
    pub bodies: BodyPhase,
}

/// The webhooks of one phase.
#[derive(Debug, Serialize, Default)]
pub struct Load {
    pub sent: u64,
    pub answered_2xx: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct SlowPhase {
    pub connections: usize,
    pub addresses: usize,
    pub webhooks: Load,
    /// Slow connections the server closed, by what they were doing, and the longest each
    /// kind stayed open.
    pub closed: [(String, usize, f64); 3],
    pub still_open: usize,
    pub server_rss_mb: f64,
    pub server_open_files_peak: usize,
}

#[derive(Debug, Serialize)]
pub struct BodyPhase {
    pub connections: usize,
    pub webhooks: Load,
    /// How the unfinished bodies were answered: by status (0: closed without an answer).
    pub answers: Vec<(u16, usize)>,
    pub server_rss_before_mb: f64,
    pub server_rss_peak_mb: f64,
    /// 15 s after the last of them closed.
    pub server_rss_after_mb: f64,
}

pub async fn hostile(
    config: Config,
    rate: u64,
    seconds: u64,
    slow: usize,
    bodies: usize,
) -> anyhow::Result<HostileReport> {
    let env = [("SWITCHYARD_FACEBOOK_APP_SECRET", SECRET.to_string())];
    let server = Server::start(&config, "hostile", "api", &env).await?;
    let addr = server.addr;
    let mut pacer = send_api::Pacer::new(addr, "hostile", 1000, None)?;

    let quiet = steady(&mut pacer, rate, seconds).await;

    // Slow connections, then the webhooks beside them.
    let addresses = slow.div_ceil(PER_ADDRESS).max(1);
    let mut tasks = Vec::with_capacity(slow);
    for i in 0..slow {
        let source = format!("127.0.0.{}", 2 + i / PER_ADDRESS);
        let stream = connect_from(&source, addr).await?;
        tasks.push(tokio::spawn(slow_client(stream, i % 3)));
    }
    let mut open_files_peak = server.open_files();
    let webhooks = steady(&mut pacer, rate, seconds).await;
    open_files_peak = open_files_peak.max(server.open_files());
    let server_rss_mb = server.rss_mb();
    let mut closed = [("head".to_string(), 0, 0.0), ("body".to_string(), 0, 0.0), ("idle".to_string(), 0, 0.0)];
    let mut still_open = 0;
    for t in tasks {
        match t.await? {
            Some((kind, after)) => {
                closed[kind].1 += 1;
                closed[kind].2 = f64::max(closed[kind].2, (after.as_secs_f64() * 10.0).round() / 10.0);
            }
            None => still_open += 1,
        }
    }
    let slow_phase = SlowPhase {
        connections: slow,
        addresses,
        webhooks,
        closed,
        still_open,
        server_rss_mb,
        server_open_files_peak: open_files_peak,
    };

    // Unfinished bodies, then the webhooks beside them, with the server's memory sampled.
    let server_rss_before_mb = server.rss_mb();
    let first = 2 + addresses;
    let mut tasks = Vec::with_capacity(bodies);
    for i in 0..bodies {
        let source = format!("127.0.0.{}", first + i / PER_ADDRESS);
        let stream = connect_from(&source, addr).await?;
        tasks.push(tokio::spawn(unfinished_body(stream)));
    }
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (peak, status) = (peak.clone(), format!("/proc/{}/status", server.pid()));
        tokio::spawn(async move {
            loop {
                peak.fetch_max(Server::rss_mb_of(&status).to_bits(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let webhooks = steady(&mut pacer, rate, seconds).await;
    let mut answers: Vec<(u16, usize)> = Vec::new();
    for t in tasks {
        let status = t.await?;
        match answers.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => answers.push((status, 1)),
        }
    }
    answers.sort();
    tokio::time::sleep(Duration::from_secs(15)).await;
    sampling.abort();
    let bodies_phase = BodyPhase {
        connections: bodies,
        webhooks,
        answers,
        server_rss_before_mb,
        server_rss_peak_mb: f64::from_bits(peak.load(Ordering::Relaxed)),
        server_rss_after_mb: server.rss_mb(),
    };
    let prefix = server.prefix.clone();
    drop(server);
    let engine = crate::engine::Engine::new(
        Config { key_prefix: prefix, ..config.clone() },
        config.redis_url_or_default(),
        crate::engine::Registry::new(),
    )?;
    super::cleanup(&engine).await;
    Ok(HostileReport { rate, seconds, quiet, slow: slow_phase, bodies: bodies_phase })
}

async fn connect_from(source: &str, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    Ok(socket.connect(to).await?)
}

/// One slow client of a kind (0: a head a byte at a time, 1: a body a byte at a time, 2: one
/// request, then idle); when the server closed it, if it did within 120 s.
async fn slow_client(stream: TcpStream, kind: usize) -> Option<(usize, Duration)> {
    let opened = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let drip: &[u8] = match kind {
        0 => {
            write.write_all(b"POST /webhooks/facebook HT").await.ok()?;
            b"TP/1.1\r\nX-Slow: a\r\n"
        }
        1 => {
            let head = "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
            write.write_all(head.as_bytes()).await.ok()?;
            b"{"
        }
        _ => {
            write.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.ok()?;
            b""
        }
    };
    let writer = tokio::spawn(async move {
        if drip.is_empty() {
            return std::future::pending::<()>().await;
        }
        for b in drip.iter().cycle() {
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 2048];
    let ended = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    writer.abort();
    ended.ok().map(|_| (kind, opened.elapsed()))
}

/// Declare a 1 MiB body and send all but its last byte; the status the server answered (0:
/// closed without one).
async fn unfinished_body(mut stream: TcpStream) -> u16 {
    static BODY: [u8; 1 << 20] = [b' '; 1 << 20];
    let head = "POST /webhooks/facebook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&BODY[..BODY.len() - 1]).await;
        // Held open, the last byte never sent, until the server answers or closes.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    writer.abort();
    std::str::from_utf8(answer.get(9..12).unwrap_or_default()).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Signed Messenger webhooks at `rate` a second for `seconds`, all answered (or a minute
/// passed); latencies from just before each POST.
async fn steady(pacer: &mut send_api::Pacer, rate: u64, seconds: u64) -> Load {
    let posted = pacer.run(rate, rate * seconds, async |_, _| {}).await;
    posted.settled(Duration::from_secs(60)).await;
    let (p50_ms, _) = posted.latency_ms(0.5);
    let (p99_ms, max_ms) = posted.latency_ms(0.99);
    Load {
        sent: posted.sent.load(Ordering::Relaxed),
        answered_2xx: posted.accepted.load(Ordering::Relaxed),
        failed: posted.failed.load(Ordering::Relaxed),
        p50_ms,
        p99_ms,
        max_ms,
    }
}

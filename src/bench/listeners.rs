//! Listeners of live task events for `bench drain --listeners N`: N Server-Sent Events streams on
//! the bench's own API, one per task, each a bare connection that reads until its task's
//! success is told — as light a client as there is, since they share the process (and the
//! machine's cores) with the worker being measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// The listeners, each following its task.
pub(super) struct Listening {
    told: Arc<AtomicUsize>,
    tasks: tokio::task::JoinSet<()>,
    stop_api: CancellationToken,
}

/// Open a stream for each of `ids` on an API of `engine`'s, and return once every one has had
/// its task's first status (it listens from then on).
pub(super) async fn listen(engine: &Engine, ids: &[String]) -> anyhow::Result<Listening> {
    let token = crate::web::auth::random_token();
    let (addr, stop_api, _) = super::serve_api_with(engine, &token).await?;
    let told = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let request =
            format!("GET /tasks/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        let (told, ready) = (told.clone(), ready.clone());
        tasks.spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else { return };
            if s.write_all(request.as_bytes()).await.is_err() {
                return;
            }
            let (mut seen, mut buf, mut opened) = (Vec::new(), [0u8; 4096], false);
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if !opened && contains(&seen, b"event: status") {
                    opened = true;
                    ready.add_permits(1);
                }
                if contains(&seen, b"\"state\":\"SUCCESS\"") {
                    told.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // keep only the tail a split marker could start in
                if seen.len() > 8192 {
                    seen.drain(..seen.len() - 64);
                }
            }
        });
    }
    let all = u32::try_from(ids.len())?;
    tokio::time::timeout(Duration::from_secs(60), ready.acquire_many(all))
        .await
        .map_err(|_| anyhow::anyhow!("the {} listeners did not all open within a minute", ids.len()))??
        .forget();
    Ok(Listening { told, tasks, stop_api })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Listening {
    /// Wait (ten seconds at most) for the listeners to be told their tasks' success; how many
    /// were.
    pub(super) async fn finish(mut self) -> usize {
        let _ =
            tokio::time::timeout(Duration::from_secs(10), async { while self.tasks.join_next().await.is_some() {} })
                .await;
        self.tasks.abort_all();
        self.stop_api.cancel();
        self.told.load(Ordering::Relaxed)
    }
}

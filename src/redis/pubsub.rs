//! Listening on Redis pub/sub channels for the life of a process: one dedicated connection,
//! subscribed again after every loss, with a backoff while Redis is away.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Exponential backoff for a loop that talks to Redis: never a busy loop while it is away.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// The wait after one more failure.
    pub(crate) fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    pub(crate) fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

/// Listen on `channels` until `stop`: `subscribed` is called each time the subscription is in
/// place (first and after a reconnect: messages in between are lost), `message` with each
/// message's channel and payload. On a Redis Cluster a plain `PUBLISH` reaches every node, so the
/// first node of `redis_url` will do.
pub(crate) async fn listen(
    redis_url: &str,
    timeouts: super::Timeouts,
    channels: &[String],
    stop: CancellationToken,
    mut subscribed: impl FnMut(),
    mut message: impl FnMut(&str, &[u8]),
) {
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let first = super::node_urls(redis_url).into_iter().next().unwrap_or_default();
        let Ok(client) = redis::Client::open(first) else { return };
        // Connecting and subscribing are bounded: a link that takes the connection and then
        // answers nothing must not hold the listener forever.
        let within = timeouts.connect + timeouts.response;
        let pubsub = tokio::select! {
            r = tokio::time::timeout(within, client.get_async_pubsub()) => r,
            _ = stop.cancelled() => return,
        };
        let mut pubsub = match pubsub {
            Ok(Ok(p)) => p,
            _ => {
                let wait = backoff.fail();
                tokio::select! { _ = tokio::time::sleep(wait) => continue, _ = stop.cancelled() => return }
            }
        };
        if !matches!(tokio::time::timeout(within, pubsub.subscribe(channels)).await, Ok(Ok(()))) {
            let wait = backoff.fail();
            tokio::select! { _ = tokio::time::sleep(wait) => continue, _ = stop.cancelled() => return }
        }
        backoff.reset();
        subscribed();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(msg) => message(msg.get_channel_name(), msg.get_payload_bytes()),
                    None => break,
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

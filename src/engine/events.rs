//! Live task events (Flower's and Celery's events, BullMQ's `QueueEvents`): what workers and
//! operators do to tasks, told as it happens to whoever listens, on any process.
//!
//! Workers publish each commit batch's state changes as one pub/sub message on the deployment's
//! `events` channel (JSON lines, sent beside the batch: no round trip is waited for); a cancel
//! and a progress report publish theirs. Each process that has listeners subscribes once (the
//! hub, started by its first listener) and hands every event to the listeners of its task (a
//! map by task id: a listener costs nothing when its task is quiet) and to the deployment-wide
//! listeners (a broadcast). No listener reads Redis to wait: a task's listener reads its status
//! once when it starts and again only if the hub's subscription was lost and made anew (events
//! in between are lost with it).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Engine, Lane, TaskState};

/// Deployment-wide events a slow listener may fall behind by before it misses some.
const BROADCAST_DEPTH: usize = 4096;

/// One thing that happened to a task: a state it entered, or its progress. Its text borrows
/// from what the publisher holds (nothing is copied to tell it); a listener's owns it
/// (`TaskEvent<'static>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskEvent<'a> {
    /// First, so that a listener finds whose event it is without reading the rest.
    pub task_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub kind: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<Lane>,
    /// The state it entered; `None` for a progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Why the attempt failed (RETRY, FAILURE) or the task stopped (REVOKED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
    /// What it returned (SUCCESS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Cow<'a, RawValue>>,
    /// When its next attempt is due (RETRY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// When it happened.
    pub at: Cow<'a, str>,
}

impl<'a> TaskEvent<'a> {
    /// `task_id` entered `state` at `at` (RFC 3339: [`format_ms`]).
    pub(crate) fn state(task_id: &'a str, kind: &'a str, lane: Option<Lane>, state: TaskState, at: &'a str) -> Self {
        TaskEvent { state: Some(state), ..TaskEvent::new(task_id, kind, lane, at) }
    }

    /// `task_id` reported its progress at `at`.
    pub(crate) fn progress(task_id: &'a str, kind: &'a str, lane: Lane, percent: u8, at: &'a str) -> Self {
        TaskEvent { progress: Some(percent), ..TaskEvent::new(task_id, kind, Some(lane), at) }
    }

    fn new(task_id: &'a str, kind: &'a str, lane: Option<Lane>, at: &'a str) -> Self {
        TaskEvent {
            task_id: Cow::Borrowed(task_id),
            kind: Cow::Borrowed(kind),
            lane,
            state: None,
            progress: None,
            attempt: None,
            error: None,
            result: None,
            retry_at: None,
            at: Cow::Borrowed(at),
        }
    }

    /// The SSE event name: `state` or `progress`.
    pub fn name(&self) -> &'static str {
        if self.state.is_some() { "state" } else { "progress" }
    }

    /// The task will not change any more.
    pub fn is_final(&self) -> bool {
        self.state.is_some_and(TaskState::is_finished)
    }
}

/// An event as a listener has it.
pub type Told = Arc<TaskEvent<'static>>;

/// A listener of one task: its events as they come, and the hub's subscription count (a
/// change means events may have been lost: read the task's status again).
pub struct TaskFollow {
    pub events: mpsc::UnboundedReceiver<Told>,
    pub subscriptions: watch::Receiver<u64>,
    _registered: Registered,
}

/// Takes a task's listener out of the hub's map when it goes.
struct Registered {
    hub: Arc<Hub>,
    task_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = self.hub.followers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = map.get_mut(&self.task_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                map.remove(&self.task_id);
            }
        }
    }
}

/// A process's one subscription to the events channel, and its listeners.
pub(crate) struct Hub {
    followers: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Told>>>>,
    all: broadcast::Sender<Told>,
    /// Times the subscription was (re)made.
    subscriptions: watch::Sender<u64>,
    started: OnceLock<()>,
    stop: CancellationToken,
    /// This process's messages to publish, sent in the order they were made.
    publisher: OnceLock<mpsc::UnboundedSender<Vec<u8>>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            followers: Mutex::new(HashMap::new()),
            all: broadcast::channel(BROADCAST_DEPTH).0,
            subscriptions: watch::channel(0).0,
            started: OnceLock::new(),
            stop: CancellationToken::new(),
            publisher: OnceLock::new(),
        }
    }
}

impl Hub {
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Hand one published message's events to their listeners. Nothing is parsed while no one
    /// listens.
    fn dispatch(&self, payload: &[u8]) {
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        let everyone = self.all.receiver_count() > 0;
        if followers.is_empty() && !everyone {
            return;
        }
        for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // Only the events someone listens to are read whole.
            let listeners = match task_id_of(line) {
                Some(id) if !everyone && !followers.contains_key(id) => continue,
                Some(id) => followers.get(id),
                None => None,
            };
            let Ok(event) = serde_json::from_slice::<TaskEvent<'static>>(line) else { continue };
            let listeners = listeners.or_else(|| followers.get(event.task_id.as_ref()));
            if listeners.is_none() && !everyone {
                continue;
            }
            let event = Arc::new(event);
            for tx in listeners.into_iter().flatten() {
                let _ = tx.send(event.clone());
            }
            if everyone {
                let _ = self.all.send(event);
            }
        }
    }
}

/// Largest message the publisher makes by joining the ones queued while it waited.
const JOINED_AT_MOST: usize = 256 * 1024;

/// Publish the messages queued, one at a time and in order — a task's start is never told after
/// its end — joining the ones queued while the last was sent (they are lines; listeners split
/// them).
async fn publish_in_order(mut con: crate::redis::Conn, channel: String, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut payload) = rx.recv().await {
        while payload.len() < JOINED_AT_MOST
            && let Ok(more) = rx.try_recv()
        {
            payload.extend_from_slice(&more);
        }
        let r: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(&channel).arg(payload).query_async(&mut con).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not publish task events");
        }
    }
}

/// The task id an event's line starts with (`{"task_id":"…"`), when it needs no unescaping.
fn task_id_of(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"{\"task_id\":\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    (rest.get(end) == Some(&b'"')).then(|| std::str::from_utf8(&rest[..end]).ok())?
}

impl Engine {
    /// Tell listeners, wherever they are, what happened to some tasks: one message, sent
    /// without waiting for it.
    pub(crate) fn publish_events(&self, events: &[TaskEvent<'_>]) {
        if events.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(events.len() * 160);
        for e in events {
            if serde_json::to_writer(&mut payload, e).is_ok() {
                payload.push(b'\n');
            }
        }
        let publisher = self.hub().publisher.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(publish_in_order(self.conn(), self.keys().events_channel(), rx));
            tx
        });
        let _ = publisher.send(payload);
    }

    /// Start this process's subscription if it is not running, and wait (a few seconds at
    /// most) until it is in place, so that nothing published from now on is missed.
    async fn hub_ready(&self) -> Arc<Hub> {
        let hub = self.hub().clone();
        hub.started.get_or_init(|| {
            let (hub, url, channel) = (hub.clone(), self.redis_url().to_string(), self.keys().events_channel());
            let timeouts = crate::redis::Timeouts::from_config(self.config());
            tokio::spawn(async move {
                let stop = hub.stop.clone();
                crate::redis::pubsub::listen(
                    &url,
                    timeouts,
                    &[channel],
                    stop,
                    || {
                        hub.subscriptions.send_modify(|n| *n += 1);
                    },
                    |_, payload| hub.dispatch(payload),
                )
                .await
            });
        });
        let mut subscribed = hub.subscriptions.subscribe();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), subscribed.wait_for(|n| *n > 0)).await;
        hub
    }

    /// Listen to one task's events from now on.
    pub async fn follow_task(&self, task_id: &str) -> TaskFollow {
        let hub = self.hub_ready().await;
        let (tx, rx) = mpsc::unbounded_channel();
        hub.followers.lock().unwrap_or_else(|e| e.into_inner()).entry(task_id.to_string()).or_default().push(tx);
        TaskFollow {
            events: rx,
            subscriptions: hub.subscriptions.subscribe(),
            _registered: Registered { hub, task_id: task_id.to_string() },
        }
    }

    /// Listen to every task's events from now on (a listener that falls more than 4 096 events
    /// behind is told how many it missed).
    pub async fn follow_all(&self) -> broadcast::Receiver<Told> {
        self.hub_ready().await.all.subscribe()
    }

    /// How many listeners of single tasks this process has (for tests and figures).
    pub fn task_listeners(&self) -> usize {
        self.hub().followers.lock().unwrap_or_else(|e| e.into_inner()).values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written() {
        let mut e = TaskEvent::state("t1", "diag.noop", Some(Lane::Analytics), TaskState::Success, "now");
        let result = r#"{"a":[1,2]}"#;
        e.result = serde_json::from_str::<&RawValue>(result).ok().map(Cow::Borrowed);
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(task_id_of(line.as_bytes()), Some("t1"));
        let back: TaskEvent<'static> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.result.as_ref().unwrap().get(), r#"{"a":[1,2]}"#);
        assert_eq!((back.state, back.lane, back.name()), (Some(TaskState::Success), Some(Lane::Analytics), "state"));
        let progress: TaskEvent<'static> = serde_json::from_str(r#"{"task_id":"t2","progress":40,"at":"x"}"#).unwrap();
        assert_eq!((progress.name(), progress.is_final()), ("progress", false));
    }

    #[tokio::test]
    async fn a_message_reaches_the_listeners_of_its_tasks_and_everyone() {
        let hub = Arc::new(Hub::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        hub.followers.lock().unwrap().insert("t1".into(), vec![tx]);
        let mut all = hub.all.subscribe();
        let lines = [
            serde_json::to_string(&TaskEvent::state("t1", "k", None, TaskState::Started, "now")).unwrap(),
            "not json".to_string(),
            serde_json::to_string(&TaskEvent::state("t2", "k", None, TaskState::Started, "now")).unwrap(),
            r#"{"kind":"k","task_id":"t1","state":"SUCCESS","at":"now"}"#.to_string(),
        ];
        hub.dispatch(lines.join("\n").as_bytes());
        assert_eq!(rx.try_recv().unwrap().state, Some(TaskState::Started));
        assert_eq!(rx.try_recv().unwrap().state, Some(TaskState::Success), "read whole when its id is not first");
        assert!(rx.try_recv().is_err(), "t2's event is not t1's");
        assert_eq!(all.try_recv().unwrap().task_id, "t1");
        assert_eq!(all.try_recv().unwrap().task_id, "t2");
        assert_eq!(all.try_recv().unwrap().task_id, "t1");
    }
}

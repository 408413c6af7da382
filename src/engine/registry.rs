//! Handlers by kind, and what a running handler can see and do.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Engine, Lane, Outcome, RetryPolicy};

/// Why a running task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// Cancelled by an operator or the API; the task ends REVOKED.
    Revoked = 1,
    /// The soft time limit passed; the hard one will abandon the attempt.
    SoftLimit = 2,
    /// The process is shutting down and the grace period is over; the task is handed back.
    Shutdown = 3,
    /// Another worker reclaimed the entry; this attempt's result will not count.
    ClaimLost = 4,
    /// The worker could not renew its claim (Redis unreachable) for most of the visibility
    /// timeout, so another worker may soon take the task: it is stopped before that can happen
    /// and handed back at no attempt cost.
    Unrenewed = 5,
}

impl StopReason {
    fn from_u8(v: u8) -> Option<StopReason> {
        match v {
            1 => Some(StopReason::Revoked),
            2 => Some(StopReason::SoftLimit),
            3 => Some(StopReason::Shutdown),
            4 => Some(StopReason::ClaimLost),
            5 => Some(StopReason::Unrenewed),
            _ => None,
        }
    }

    /// Whether the task is handed back at no attempt cost, to run again elsewhere, rather than
    /// ended: the worker is going away or may no longer hold it.
    pub fn hands_back(self) -> bool {
        matches!(self, StopReason::Shutdown | StopReason::Unrenewed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Revoked => "revoked",
            StopReason::SoftLimit => "soft time limit exceeded",
            StopReason::Shutdown => "worker shutting down",
            StopReason::ClaimLost => "claim lost to another worker",
            StopReason::Unrenewed => "claim could not be renewed (Redis unreachable)",
        }
    }
}

/// The stop signal of one running attempt: a token plus the first reason given.
#[derive(Clone, Default)]
pub(crate) struct StopSignal {
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl StopSignal {
    /// Ask the task to stop; the first reason given is the one kept.
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        StopReason::from_u8(self.reason.load(Ordering::Acquire))
    }
}

/// What a handler gets: its task, and ways to report progress and notice a stop request.
pub struct TaskContext {
    pub task_id: String,
    pub kind: String,
    pub lane: Lane,
    pub payload: Value,
    /// 1 for the first attempt; counts on across retries and redrives.
    pub attempt: u32,
    pub(crate) stop: StopSignal,
    pub(crate) engine: Engine,
}

impl TaskContext {
    /// Resolves when the task is asked to stop (cancelled, soft limit, shutdown).
    pub async fn stopped(&self) {
        self.stop.token.cancelled().await
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.token.is_cancelled()
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.reason()
    }

    /// Report progress (0–100), visible in the task's status. Best effort: a failure to record
    /// progress never fails the task.
    pub async fn progress(&self, percent: u8) {
        self.engine.set_progress(&self.task_id, &self.kind, self.lane, percent.min(100)).await;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

pub type Handler = Arc<dyn Fn(TaskContext) -> BoxFuture<'static, Outcome> + Send + Sync>;

#[derive(Clone)]
pub struct Registered {
    pub handler: Handler,
    /// Lane used when the producer names none.
    pub lane: Lane,
    /// Overrides the deployment's retry settings for this kind.
    pub retry: Option<RetryPolicy>,
}

/// What a kind's tasks carry, read from their JSON payload by [`Registry::register_typed`].
pub trait Payload: serde::de::DeserializeOwned + Send + 'static {
    /// What a payload of this type is, for the error when one is not (`a reply`, …).
    const WHAT: &'static str;
}

/// Handlers by kind. The diagnostic kinds are always there.
#[derive(Clone)]
pub struct Registry {
    kinds: HashMap<String, Registered>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        let mut r = Registry { kinds: HashMap::new() };
        super::diag::register(&mut r);
        r
    }

    /// Register a handler of kind `kind` on `lane`, taking its payload as it comes.
    pub fn register<F, Fut>(&mut self, kind: &str, lane: Lane, handler: F) -> &mut Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.kinds.insert(kind.to_string(), Registered { handler, lane, retry: None });
        self
    }

    /// Register a handler that takes its payload as a `P`: a payload that is not one fails the
    /// task for good (no retry can make it one), saying what it should have been and why not.
    pub fn register_typed<P, F, Fut>(&mut self, kind: &str, lane: Lane, handler: F) -> &mut Self
    where
        P: Payload,
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register(kind, lane, move |ctx| {
            let handler = handler.clone();
            async move {
                match P::deserialize(&ctx.payload) {
                    Ok(payload) => handler(ctx, payload).await,
                    Err(e) => Outcome::fail(format!("not {}: {e}", P::WHAT)),
                }
            }
        })
    }

    /// Give one kind its own retry policy.
    pub fn set_retry(&mut self, kind: &str, policy: RetryPolicy) -> &mut Self {
        if let Some(r) = self.kinds.get_mut(kind) {
            r.retry = Some(policy);
        }
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Registered> {
        self.kinds.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

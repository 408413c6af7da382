//! The `delivery.send` task: one reply to one customer, through the platform it came from.
//!
//! A reply is split to the platform's limit and each part is sent once: after the platform
//! accepts a part, a marker records it (the reply's turn's mark in its conversation counts the
//! parts sent; a reply with no turn keeps `{sy}:sent:<reply>:<part>`), so a redelivered or retried
//! task skips what already went out and a customer never gets the same part twice. Before a
//! part is sent it is taken for the attempt (`sending:<reply>:<part>`): another attempt of the
//! same reply — the task reclaimed from a worker cut off from Redis, whose send went out and
//! whose mark is still on its way — waits for that mark instead of sending again, and a send,
//! once begun, finishes and is recorded even if its attempt is stopped. (A worker killed between
//! the platform's answer and the marker can still cause one resend, after its take expires:
//! delivery is at least once, and this is its only window.) Sends are rate limited per business account
//! across every process, and answers are classified as SPEC §5 says: retry transient errors
//! (honouring `Retry-After`), dead-letter permanent ones with the platform's error.

use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use super::classify::{self, Verdict};
use super::ledger::{self, Take};
use super::split_text;
use crate::engine::{Engine, Lane, Outcome, Payload, Registry, TaskContext};
use crate::model::Platform;
use crate::telemetry::trace;

pub(crate) const KIND: &str = "delivery.send";

/// Sends per second allowed per business account (Meta allows about 300 text sends per page).
pub(crate) const PER_ACCOUNT_PER_SECOND: u64 = 250;

/// Longest text one message may carry on a platform with a send API; `None` for the platforms
/// there is no answering on (Pub/Sub, generic sources).
pub(crate) fn text_limit(platform: Platform) -> Option<usize> {
    match platform {
        Platform::Messenger | Platform::Instagram => Some(2000),
        Platform::Whatsapp => Some(4096),
        Platform::Rbm => Some(3072),
        Platform::Pubsub | Platform::Generic => None,
    }
}

/// What a `delivery.send` task carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outgoing {
    /// The platform to send on (one with a send API: [`text_limit`]).
    pub channel: Platform,
    /// Page, Instagram account, WhatsApp phone number id or RBM agent.
    pub account: String,
    /// PSID, IGSID, WhatsApp id or phone number.
    pub customer: String,
    pub text: String,
    /// Unique per reply: the key of its sent-markers (and RBM's message id).
    pub reply_id: String,
    /// When the message this answers was received (µs since the epoch; 0 when none): the reply
    /// latency is measured from there to the platform's acceptance of the last part.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub received_us: u64,
    /// The event id of the reply's turn in its conversation (`channel:account:customer`), whose
    /// mark then counts the parts sent (see `sent.lua`); without one, each part sent keeps a
    /// marker key of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::http_client::client().expect("the HTTP client builds with static settings"))
}

pub(crate) fn register(r: &mut Registry) {
    r.register_typed(KIND, Lane::Webhooks, |ctx, out: Outgoing| async move { deliver(ctx, out).await });
}

impl Payload for Outgoing {
    const WHAT: &'static str = "a reply";
}

async fn deliver(ctx: TaskContext, out: Outgoing) -> Outcome {
    let engine = ctx.engine().clone();
    let Some(limit) = text_limit(out.channel) else {
        return Outcome::fail(format!("no send API for {}", out.channel.as_str()));
    };
    let parts = split_text(&out.text, limit);
    let conversation = crate::model::ConversationKey::new(out.channel, &out.account, &out.customer).id();
    let reply = ledger::Reply { conversation: &conversation, reply_id: &out.reply_id, turn: out.turn.as_deref() };
    // Names this attempt in the parts it takes.
    let token = format!("{}:{:016x}", ctx.task_id, fastrand::u64(..));
    let mut sent = 0;
    for (i, part) in parts.iter().enumerate() {
        match ledger::take_part(&engine, &reply, i, &token).await {
            Ok(Take::Sent) => continue,
            Ok(Take::Go) => {}
            // Another attempt (one cut off from Redis, abandoned) sent it or is sending it: wait
            // for its mark, at no attempt cost.
            Ok(Take::Busy(left)) => return Outcome::Later(left.min(BUSY_LOOK_EVERY)),
            Err(e) => return Outcome::retry(e.to_string()),
        }
        if let Some(wait) = rate_wait(&engine, &out.account).await {
            let _ = ledger::release_part(&engine, &reply, i, &token).await;
            // Not a failure: the send waits for the account's next second, at no attempt cost.
            return Outcome::Later(wait);
        }
        // The send and its mark run on their own, so an attempt stopped or abandoned meanwhile
        // (its worker cut off from Redis) still finishes a send it began and records it.
        // With traces on, each part's send is a client span of the attempt.
        let span = tracing::debug_span!(
            "send",
            platform = out.channel.as_str(),
            part = i,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        trace::name(&span, || format!("send {}", out.channel.as_str()), "client");
        let job = tokio::spawn(
            send_and_record(engine.clone(), out.clone(), conversation.clone(), i, part.clone(), token.clone())
                .instrument(span.clone()),
        );
        let verdict = match job.await {
            Ok(Some(v)) => v,
            // Its take expired meanwhile and another attempt has the part now.
            Ok(None) => return Outcome::Later(BUSY_LOOK_EVERY),
            Err(e) => return Outcome::retry(format!("sending part {i} failed: {e}")),
        };
        if let Verdict::Retry { reason: why, .. } | Verdict::Permanent(why) = &verdict {
            trace::failed(&span, why);
        }
        match verdict {
            Verdict::Sent => sent += 1,
            Verdict::Retry { after, reason } => return Outcome::Retry { after, error: reason },
            Verdict::Permanent(reason) => return Outcome::fail(reason),
        }
    }
    if sent > 0 && out.received_us > 0 {
        let latency = crate::engine::now_us().saturating_sub(out.received_us) as f64 / 1e6;
        metrics::histogram!("switchyard_reply_latency_seconds", "platform" => out.channel.as_str()).record(latency);
    }
    Outcome::Done(json!({"parts": parts.len(), "sent_now": sent}))
}

/// Export the delivery metrics at zero for every platform replies go out on.
pub(crate) fn metrics_at_zero() {
    for p in Platform::ALL.into_iter().filter(|p| text_limit(*p).is_some()) {
        for outcome in ["sent", "retry", "failed"] {
            metrics::counter!("switchyard_deliveries_total", "platform" => p.as_str(), "outcome" => outcome)
                .increment(0);
        }
        let _ = metrics::histogram!("switchyard_reply_latency_seconds", "platform" => p.as_str());
    }
}

/// How often an attempt waiting for another one's mark looks again.
const BUSY_LOOK_EVERY: Duration = Duration::from_millis(500);

/// Send part `i` of a reply taken by the attempt `token`: confirm the take, send, then record it
/// when the platform took it, else give the take up. `None`: the take was not the attempt's any
/// more, nothing was sent.
async fn send_and_record(
    engine: Engine,
    out: Outgoing,
    conversation: String,
    i: usize,
    part: String,
    token: String,
) -> Option<Verdict> {
    let reply = ledger::Reply { conversation: &conversation, reply_id: &out.reply_id, turn: out.turn.as_deref() };
    match ledger::confirm_part(&engine, &reply, i, &token).await {
        Ok(true) => {}
        Ok(false) => return None,
        // Redis stayed away: not sent. Should the confirmation have been taken unseen, the part
        // waits for it to expire.
        Err(e) => return Some(Verdict::Retry { after: None, reason: format!("could not confirm part {i}: {e}") }),
    }
    let verdict = send_part(&engine, &out, i, &part).await;
    let label = match &verdict {
        Verdict::Sent => "sent",
        Verdict::Retry { .. } => "retry",
        Verdict::Permanent(_) => "failed",
    };
    metrics::counter!("switchyard_deliveries_total", "platform" => out.channel.as_str(), "outcome" => label)
        .increment(1);
    if verdict == Verdict::Sent {
        if let Err(e) = ledger::mark_part_sent(&engine, &reply, i).await {
            tracing::warn!(reply = %out.reply_id, part = i, error = %e, "sent, but could not record it; a retry may send this part again once its take expires");
        }
    } else if let Err(e) = ledger::release_part(&engine, &reply, i, &token).await {
        tracing::debug!(reply = %out.reply_id, part = i, error = %e, "could not release a part not sent; it is free again when its take expires");
    }
    Some(verdict)
}

/// `None` when a send may go now; otherwise how long until the next second's budget.
async fn rate_wait(engine: &Engine, account: &str) -> Option<Duration> {
    let now = crate::engine::now_ms();
    match ledger::take_send_slot(engine, account, now / 1000).await {
        Ok(n) if n > PER_ACCOUNT_PER_SECOND => Some(Duration::from_millis(1000 - now % 1000 + fastrand::u64(0..200))),
        // Without Redis there is no budget to check; the send's own errors decide.
        _ => None,
    }
}

async fn send_part(engine: &Engine, out: &Outgoing, i: usize, part: &str) -> Verdict {
    let c = engine.config();
    let (request, meta) = match out.channel {
        Platform::Messenger | Platform::Instagram => {
            let Some(token) = c.facebook_page_token.as_deref() else {
                return Verdict::Permanent("FACEBOOK_PAGE_TOKEN is not configured".into());
            };
            let body =
                json!({"recipient": {"id": out.customer}, "messaging_type": "RESPONSE", "message": {"text": part}});
            (
                http()
                    .post(format!("{}/{}/messages", c.graph_url, out.account))
                    .query(&[("access_token", token)])
                    .json(&body),
                true,
            )
        }
        Platform::Whatsapp => {
            let Some(token) = c.whatsapp_token.as_deref() else {
                return Verdict::Permanent("WHATSAPP_TOKEN is not configured".into());
            };
            let body =
                json!({"messaging_product": "whatsapp", "to": out.customer, "type": "text", "text": {"body": part}});
            (http().post(format!("{}/{}/messages", c.graph_url, out.account)).bearer_auth(token).json(&body), true)
        }
        Platform::Rbm => {
            let Some(token) = c.rbm_token.as_deref() else {
                return Verdict::Permanent("RBM_TOKEN is not configured".into());
            };
            let body = json!({"contentMessage": {"text": part}});
            let message_id = format!("{}-{i}", out.reply_id);
            let url = format!("{}/v1/phones/{}/agentMessages", c.rbm_url, out.customer);
            (http().post(url).query(&[("messageId", message_id.as_str())]).bearer_auth(token).json(&body), false)
        }
        Platform::Pubsub | Platform::Generic => {
            return Verdict::Permanent(format!("no send API for {}", out.channel.as_str()));
        }
    };
    let resp = match request.send().await {
        Ok(r) => r,
        Err(e) => return Verdict::Retry { after: None, reason: format!("send failed: {}", without_url(&e)) },
    };
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.bytes().await.unwrap_or_default();
    if meta {
        classify::meta(status, retry_after.as_deref(), &body)
    } else if status == 409 {
        // RBM already has a message with this id: this part went out before.
        Verdict::Sent
    } else {
        classify::http(status, retry_after.as_deref(), &body)
    }
}

/// A transport error without its URL, which carries the page token as a query parameter.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<graph url>");
    }
    msg
}

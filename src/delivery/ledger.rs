//! What delivery keeps in Redis: which parts of a reply went out, and how many sends each
//! business account has made in the current second.
//!
//! A part sent is counted in its reply's turn's mark in the conversation's hash when the reply
//! was recorded there, else in a key of its own (`sent:<reply>:<part>`); `sent.lua` decides which,
//! atomically. While a part is being sent, `sending:<reply>:<part>` names the attempt sending it,
//! so a second attempt of the same reply waits for the first one's mark rather than sending the
//! part again. The rate counters (`rate:<account>:<second>`) are shared by every process, so the
//! platform's limit holds for the deployment, not for one worker.

use std::time::Duration;

use crate::engine::{Engine, EngineError};

/// How long a rate counter outlives the start of its second: past the second itself, with room
/// for processes whose clocks disagree a little; no counter is read after that.
const RATE_COUNTER_TTL_MS: u64 = 2000;

/// The reply a part belongs to, as the ledger knows it.
pub(super) struct Reply<'a> {
    /// The conversation the reply answers in (`channel:account:customer`).
    pub conversation: &'a str,
    /// Unique per reply: the name of its parts' own markers.
    pub reply_id: &'a str,
    /// The event id of the reply's turn in its conversation, whose mark counts the parts sent.
    pub turn: Option<&'a str>,
}

/// What [`take_part`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// The part went out already.
    Sent,
    /// This attempt may send it: it is taken until marked or released.
    Go,
    /// Another attempt is sending it (or sent it and its mark is on its way); its take lasts
    /// this much longer.
    Busy(Duration),
}

/// How long a take lasts until it is confirmed: long enough for the attempt to confirm it, short
/// enough that one whose answer was lost (the attempt never knew it had it) holds nothing up for
/// long.
const TAKE_UNCONFIRMED: Duration = Duration::from_secs(5);
/// How long a confirmed take lasts: a send, then the recording of it while Redis is away, with
/// room.
const TAKE_FOR: Duration =
    Duration::from_secs(crate::http_client::REQUEST_TIMEOUT.as_secs() + MARK_PATIENCE.as_secs() + 20);

/// Take part `part` (from 0) of the reply for the attempt `token` before sending it.
pub(super) async fn take_part(
    engine: &Engine,
    reply: &Reply<'_>,
    part: usize,
    token: &str,
) -> Result<Take, EngineError> {
    Ok(match sent_marker(engine, reply, part, "take", token, TAKE_UNCONFIRMED).await? {
        -1 => Take::Sent,
        0 => Take::Go,
        ms => Take::Busy(Duration::from_millis(ms.max(1) as u64)),
    })
}

/// Confirm the attempt `token`'s take just before sending the part: `false` when it is no longer
/// the attempt's (it expired unconfirmed and another attempt took the part). Like a mark, it
/// keeps trying while Redis is away (a confirmation is the same however often it is made), and
/// with `DURABILITY=replicated` it counts once a replica holds it, so a failover cannot hand the
/// part to another attempt while this one sends it.
pub(super) async fn confirm_part(
    engine: &Engine,
    reply: &Reply<'_>,
    part: usize,
    token: &str,
) -> Result<bool, EngineError> {
    Ok(patiently(engine, reply, part, "confirm", token, TAKE_FOR).await? == 0)
}

/// Give up the attempt `token`'s take of a part it did not send.
pub(super) async fn release_part(
    engine: &Engine,
    reply: &Reply<'_>,
    part: usize,
    token: &str,
) -> Result<(), EngineError> {
    sent_marker(engine, reply, part, "release", token, Duration::ZERO).await.map(drop)
}

/// How long recording a part sent keeps trying while Redis is away (a failover takes seconds):
/// a mark never written is a part sent twice.
const MARK_PATIENCE: Duration = Duration::from_secs(30);

/// Record that part `part` (from 0) of the reply went out, so a retry or a redelivery skips it.
/// While Redis is unavailable it keeps trying, for up to [`MARK_PATIENCE`]; with
/// `DURABILITY=replicated` the mark counts once a replica holds it, so a failover cannot undo it
/// and have the part sent again.
pub(super) async fn mark_part_sent(engine: &Engine, reply: &Reply<'_>, part: usize) -> Result<(), EngineError> {
    patiently(engine, reply, part, "mark", "", Duration::ZERO).await.map(drop)
}

/// [`sent_marker`] for a write that may be repeated (`confirm`, `mark`) until it is taken —
/// with `DURABILITY=replicated`, until a replica holds it — trying again while Redis is
/// unavailable, for up to [`MARK_PATIENCE`].
async fn patiently(
    engine: &Engine,
    reply: &Reply<'_>,
    part: usize,
    op: &str,
    token: &str,
    hold: Duration,
) -> Result<i64, EngineError> {
    let deadline = std::time::Instant::now() + MARK_PATIENCE;
    let mut backoff = crate::redis::Backoff::new();
    loop {
        let written = match sent_marker(engine, reply, part, op, token, hold).await {
            Ok(v) if engine.config().durability == crate::config::Durability::Replicated => {
                let keys = engine.conversation_part(reply.conversation);
                engine.wait_for_replica(&keys.conversation(reply.conversation)).await.map(|()| v)
            }
            other => other,
        };
        match written {
            Err(e)
                if (e.is_unavailable() || matches!(e, EngineError::NotReplicated(_)))
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(backoff.fail()).await;
            }
            other => return other,
        }
    }
}

/// `take`, `confirm`, `mark` or `release` part `i` of the reply (see `sent.lua`) for the attempt
/// `token`; a take or confirmation lasts `hold`.
async fn sent_marker(
    engine: &Engine,
    reply: &Reply<'_>,
    i: usize,
    op: &str,
    token: &str,
    hold: Duration,
) -> Result<i64, EngineError> {
    let keys = engine.conversation_part(reply.conversation);
    // A part's own marker lasts as long as a second delivery of this reply can be queued (the
    // reply's idempotency window) or this one still retried (its record's retention).
    let c = engine.config();
    let ttl = c.task_retention.max(c.idempotency_window).as_millis() as u64;
    let mut con = engine.conn();
    let answer: i64 = engine
        .scripts()
        .sent
        .key(keys.conversation(reply.conversation))
        .key(keys.sent(reply.reply_id, i))
        .key(keys.sending(reply.reply_id, i))
        .arg(op)
        .arg(reply.turn.unwrap_or(""))
        .arg(i)
        .arg(ttl)
        .arg(token)
        .arg(hold.as_millis() as u64)
        .invoke_async(&mut con)
        .await?;
    Ok(answer)
}

/// Take one send of `account`'s budget for the second `second` (seconds since the epoch): how
/// many sends the account has taken in that second, this one included.
pub(super) async fn take_send_slot(engine: &Engine, account: &str, second: u64) -> Result<u64, EngineError> {
    let key = engine.keys().rate(account, second);
    let mut con = engine.conn();
    let (n, ()): (u64, ()) = redis::pipe()
        .cmd("INCR")
        .arg(&key)
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(RATE_COUNTER_TTL_MS)
        .query_async(&mut con)
        .await?;
    Ok(n)
}

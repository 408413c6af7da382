//! The readers of untrusted input, opened to the fuzz targets in `fuzz/`: thin wrappers over
//! crate-private functions, built only by `cargo fuzz` (which sets `--cfg fuzzing`).

use crate::engine::worker::Delivery;
use crate::ingest::{Batch, InboundEvent, Unreadable, google, meta};
use crate::model::Lane;

/// A Meta webhook's body (Messenger, Instagram, WhatsApp), as `/webhooks/facebook` reads it.
pub fn meta(body: &[u8]) -> Result<Batch, String> {
    meta::parse(body).map_err(|e| e.to_string())
}

/// A Google push, as `/webhooks/google/pubsub` and `/webhooks/google/rbm` read it: its Pub/Sub
/// event, and its RBM event or, when the data names none, the item kept for the dead-letter queue.
pub fn google(body: &[u8]) -> Result<(InboundEvent, Result<InboundEvent, Unreadable>), String> {
    let env = google::envelope(body).map_err(|e| e.to_string())?;
    let rbm = google::rbm_event(&env).map_err(|e| google::rbm_unreadable(&env, e.to_string()));
    Ok((google::pubsub_event(&env), rbm))
}

/// A generic source's body, as `/webhooks/generic/{source}` reads it, with the `x-event-id`
/// header given as `event_id`.
pub fn generic(source: &str, event_id: Option<&str>, body: &[u8]) -> Result<InboundEvent, String> {
    crate::ingest::generic_event(source, event_id.map(str::to_string), body)
}

/// What a worker takes from a stream entry's fields.
#[derive(Debug)]
pub struct TaskEntry {
    pub id: String,
    pub kind: String,
    pub payload: String,
    /// The attempt number the delivery makes.
    pub attempt: u32,
    /// A task without a record (named after its entry).
    pub unrecorded: bool,
    pub order: Option<(String, u64)>,
}

/// `Delivery::from_fields`, and what the runner computes from it first.
pub fn task_entry(
    part: usize,
    lane: Lane,
    entry: &str,
    fields: &[(String, String)],
    deliveries: u32,
) -> Option<TaskEntry> {
    let d = Delivery::from_fields(part, lane, entry.to_string(), fields, deliveries)?;
    let _ = d.first_fields();
    Some(TaskEntry {
        attempt: d.attempt(),
        unrecorded: d.unrecorded,
        id: d.id,
        kind: d.kind,
        payload: d.payload,
        order: d.order,
    })
}

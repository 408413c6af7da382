//! Google's pushes: the envelope, its Pub/Sub event and its RBM event (`ingest::google`). Every
//! input is read twice: as a push's body, and as the `message.data` of a push (RBM's JSON, which
//! the body carries in base64, where mutations of the body seldom reach).
#![no_main]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;

fn push(body: &[u8]) {
    if let Ok((pubsub, rbm)) = switchyard::fuzzing::google(body) {
        common::event(pubsub);
        match rbm {
            Ok(ev) => common::event(ev),
            Err(u) => common::unreadable(u),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    push(input);
    let body = serde_json::json!({"message": {"data": STANDARD.encode(input)}, "subscription": "s"});
    push(body.to_string().as_bytes());
});

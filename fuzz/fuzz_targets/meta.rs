//! Meta's webhook bodies (Messenger, Instagram, WhatsApp): `ingest::meta::parse`.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(batch) = switchyard::fuzzing::meta(body) {
        batch.events.into_iter().for_each(common::event);
        batch.unreadable.into_iter().for_each(common::unreadable);
    }
});

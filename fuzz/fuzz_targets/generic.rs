//! A generic source's body, as `/webhooks/generic/{source}` reads it.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(ev) = switchyard::fuzzing::generic("shop:1", None, body) {
        common::event(ev);
    }
});

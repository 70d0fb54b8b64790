//! The slot-ring decoder of the native stream: any ring bytes and announced counts are taken or
//! rejected with a peer error, and what is taken delivers in order, never a panic (the body is
//! `smr_native::fuzzing::take_slots_one`, which `cargo test` also runs as a proptest smoke run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::fuzzing::take_slots_one(data);
});

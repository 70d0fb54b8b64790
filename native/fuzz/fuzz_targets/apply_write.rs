//! The peer-write decoder of the native table: any bytes, decoded as a sequence of peer writes,
//! are applied or rejected with a peer error, never a panic (the body is
//! `smr_native::fuzzing::apply_write_one`, which `cargo test` also runs as a proptest smoke run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::fuzzing::apply_write_one(data);
});

//! Any bytes as a registration body: a clear error, or a registration that
//! keeps every rule and round-trips (`signpost::fuzzing::registration_body`).
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| signpost::fuzzing::registration_body(body));

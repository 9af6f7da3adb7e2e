//! Any bytes as a DNS query to a fixed registry: every reply parses and
//! fits, and the fast path agrees with the hickory one wherever it answers
//! (`signpost::fuzzing::dns_responder`).
#![no_main]

libfuzzer_sys::fuzz_target!(|packet: &[u8]| signpost::fuzzing::dns_responder(packet));

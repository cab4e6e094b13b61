//! `Decoder::feed` over arbitrary bytes: never panics, and the zero-copy path
//! (whole buffer) agrees with the buffering path (chunks of 1..=64 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|input: &[u8]| checks::decode_stream(input));

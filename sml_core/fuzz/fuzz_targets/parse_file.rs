//! The message parser over arbitrary payloads: never panics, and every message
//! it accepts survives encode → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|payload: &[u8]| checks::parse_file(payload));

//! `Decoder::feed` over arbitrary bytes: never panics, and the zero-copy path
//! (whole buffer) agrees with the buffering path (chunks of 1..=64 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sml_core::{decode_with, CrcMode, Decoder};

fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else { return };
    let mut whole = Vec::new();
    decode_with(data, CrcMode::Auto, |f| whole.push(format!("{f:?}")));
    let mut parts = Vec::new();
    let mut d = Decoder::with_limit(CrcMode::Auto, 4096);
    let mut d_whole = Decoder::with_limit(CrcMode::Auto, 4096);
    let mut limited = Vec::new();
    d_whole.feed(data, |f| limited.push(format!("{f:?}")));
    d_whole.finish(|f| limited.push(format!("{f:?}")));
    for c in data.chunks(usize::from(cut % 64) + 1) {
        d.feed(c, |f| parts.push(format!("{f:?}")));
    }
    d.finish(|f| parts.push(format!("{f:?}")));
    assert_eq!(limited, parts);
    if data.len() < 4096 {
        assert_eq!(whole, parts);
    }
});

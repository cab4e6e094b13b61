//! The properties the fuzz targets check, shared by `cargo fuzz` (nightly, libFuzzer) and the
//! corpus replay test `sml_core/tests/fuzz_corpus.rs` (stable, every file of `seeds/`), so the
//! replay runs exactly what the fuzzer runs. Each function panics when its property fails.

// Each fuzz binary uses one of the functions; the others are dead code there.
#![allow(dead_code)]

use sml_core::crc::{update, update_bitwise};
use sml_core::encode::Writer;
use sml_core::{decode_with, parse_file as parse, CrcKind, CrcMode, Decoder, MessageResult};

/// `Decoder::feed` over arbitrary bytes: never panics, and the zero-copy path (whole buffer)
/// agrees with the buffering path (chunks of 1..=64 bytes, chosen by the first input byte).
pub fn decode_stream(input: &[u8]) {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
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
}

/// The message parser over arbitrary payloads: never panics, and every message it accepts
/// survives encode → parse unchanged.
pub fn parse_file(payload: &[u8]) {
    for m in parse(payload, CrcKind::X25, CrcMode::Auto) {
        let MessageResult::Ok(m) = m else { continue };
        let mut w = Writer::new();
        w.message(&m, CrcKind::X25);
        let again = parse(&w.out, CrcKind::X25, CrcMode::X25);
        let Some(MessageResult::Ok(mut back)) = again.into_iter().next() else {
            panic!("re-encoded message does not parse: {m:?}");
        };
        assert!(back.crc_ok);
        back.crc = m.crc;
        back.crc_ok = m.crc_ok;
        // Widths and empty-vs-unset strings may normalise; the bytes must agree after a
        // second round.
        let mut w2 = Writer::new();
        w2.message(&back, CrcKind::X25);
        assert_eq!(w.out, w2.out);
    }
}

/// The sliced CRC table against the bit-by-bit definition.
pub fn crc(data: &[u8]) {
    for init in [0u16, 0xffff] {
        assert_eq!(update(init, data), update_bitwise(init, data));
    }
}

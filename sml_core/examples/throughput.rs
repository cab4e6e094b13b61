//! Quick throughput check without criterion:
//! `cargo run --release -p sml_core --example throughput [repeat] [decode|stages]`.
//!
//! `stages` prints one `STAGE name MB/s` line per stage of the full decode,
//! each the best of 20 runs over the same buffer (what `benches/bench_core.py`
//! reports as "what bounds the core"): memory (a sum over every byte), CRC-16
//! over the whole buffer, the framer (start/end search, escapes, frame CRC),
//! the message parse alone (payloads framed beforehand; message CRCs included)
//! and the full decode.

#![allow(clippy::cast_precision_loss)] // throughput figures, not exact values

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Instant;

use sml_core::{crc, decode_with, parse_file, transport::frame_all, transport::Framer, CrcMode, Outcome};

/// Best-of-`rounds` seconds of `f`.
fn best(rounds: usize, mut f: impl FnMut() -> usize) -> f64 {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn stages(data: &[u8]) {
    let mb = data.len() as f64 / 1e6;
    let rounds = 20;
    let (frames, _) = frame_all(data, CrcMode::Auto);
    let payloads: Vec<_> = frames.into_iter().filter_map(|f| f.result.ok().map(|(p, k, _)| (p, k))).collect();
    let rows: [(&str, f64); 5] = [
        ("memory (sum of every byte)", best(rounds, || data.iter().map(|&b| usize::from(b)).sum())),
        ("CRC-16 X.25 over the whole buffer", best(rounds, || usize::from(crc::x25(data)))),
        (
            "framer (start/end search, escapes, frame CRC)",
            best(rounds, || {
                let mut ok = 0;
                Framer::new(CrcMode::Auto).feed(data, |f| ok += usize::from(f.result.is_ok()));
                ok
            }),
        ),
        (
            "message parse alone (message CRCs included)",
            best(rounds, || payloads.iter().map(|(p, k)| parse_file(p, *k, CrcMode::Auto).len()).sum()),
        ),
        (
            "full decode (framer + parse)",
            best(rounds, || {
                let mut ok = 0;
                decode_with(data, CrcMode::Auto, |f| ok += usize::from(matches!(f.outcome, Outcome::Ok(_))));
                ok
            }),
        ),
    ];
    for (name, seconds) in rows {
        println!("STAGE {:.1} {:.3} {name}", mb / seconds, seconds * 1e3);
    }
}

fn main() {
    let repeat: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(240);
    // `decode` as second argument: full decode only (for profiling).
    let mode = std::env::args().nth(2).unwrap_or_default();
    let decode_only = mode == "decode";
    let data = support::benchmark_stream(repeat);
    if mode == "stages" {
        stages(&data);
        return;
    }
    let mb = data.len() as f64 / 1e6;
    for round in 0..7 {
        let t = Instant::now();
        let mut ok = 0u32;
        if !decode_only {
            Framer::new(CrcMode::Auto).feed(&data, |f| ok += u32::from(f.result.is_ok()));
        }
        let framer = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut decoded = 0u32;
        decode_with(&data, CrcMode::Auto, |f| decoded += u32::from(matches!(f.outcome, Outcome::Ok(_))));
        let full = t.elapsed().as_secs_f64();
        let framer_text = if decode_only {
            String::new()
        } else {
            format!("framer {:.0} MB/s ({ok} frames), ", mb / framer)
        };
        println!(
            "round {round}: {mb:.1} MB, {framer_text}full decode {:.0} MB/s ({decoded} frames, {:.0} frames/s)",
            mb / full,
            f64::from(decoded) / full
        );
    }
}

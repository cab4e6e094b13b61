//! Quick throughput check without criterion:
//! `cargo run --release -p sml_core --example throughput [repeat]`.

#![allow(clippy::cast_precision_loss)] // throughput figures, not exact values

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use sml_core::{decode_with, transport::Framer, CrcMode, Outcome};

fn main() {
    let repeat: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(240);
    // `decode` as second argument: full decode only (for profiling).
    let decode_only = std::env::args().nth(2).is_some_and(|a| a == "decode");
    let data = support::benchmark_stream(repeat);
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

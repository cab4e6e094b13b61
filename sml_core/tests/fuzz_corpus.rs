//! Stable-toolchain replay of the fuzz targets' committed seed corpus (`fuzz/seeds/<target>/`,
//! written by `fuzz/make_seeds.py` from public test vectors and the encoder): every file goes
//! through the same check function the `cargo fuzz` target calls, so a property broken on
//! known inputs fails `cargo test` without nightly or libFuzzer. Crash files that the nightly
//! fuzzer finds can be dropped into a seeds folder to keep them as regression tests.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{target}: only {} seeds in {}", files.len(), dir.display());
    for file in &files {
        let data = fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // name the input that broke the property, then let the check's panic fail the test
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails the fuzz check", file.display());
    }
}

#[test]
fn decode_stream_seeds() {
    replay("decode_stream", checks::decode_stream);
}

#[test]
fn parse_file_seeds() {
    replay("parse_file", checks::parse_file);
}

#[test]
fn crc_seeds() {
    replay("crc", checks::crc);
}

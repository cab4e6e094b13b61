//! The real meter recordings from `../shared/recordings` (never copied into
//! the repo), shared by the integration tests, the criterion bench and the
//! throughput example.
#![allow(dead_code)] // each user needs only some of these

use std::path::PathBuf;

/// `SMLOGGER_RECORDINGS`, else `shared/recordings` beside the repository.
pub fn recordings_dir() -> PathBuf {
    std::env::var_os("SMLOGGER_RECORDINGS").map_or_else(
        // The workspace root sits beside `shared/`.
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(workspace_up()).join("../shared/recordings"),
        PathBuf::from,
    )
}

/// The way from the including crate's manifest directory up to the workspace root.
fn workspace_up() -> PathBuf {
    let depth = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .position(|dir| dir.join("Cargo.lock").exists() || dir.join(".git").exists())
        .unwrap_or(1);
    (0..depth).map(|_| "..").collect()
}

/// `(file name, bytes)` of every `*.bin`, in byte-wise file-name order.
pub fn recordings() -> Vec<(String, Vec<u8>)> {
    let dir = recordings_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("recordings at {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("file name").to_string_lossy().into_owned();
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, data)
        })
        .collect()
}

/// The benchmark stream: all recordings concatenated, repeated `repeat` times
/// (240 gives the 20,167,200-byte stream of the recordings README).
pub fn benchmark_stream(repeat: usize) -> Vec<u8> {
    let one: Vec<u8> = recordings().into_iter().flat_map(|(_, data)| data).collect();
    one.repeat(repeat)
}

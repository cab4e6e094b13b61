//! The push decoder and whole-buffer decoding agree on every real recording,
//! whatever the chunking (whole, byte by byte, pseudo-random chunk sizes).

mod support;

use sml_core::{decode_with, CrcMode, Decoder, Outcome};

fn recordings() -> Vec<(String, Vec<u8>)> {
    let files = support::recordings();
    assert_eq!(files.len(), 37, "expected the 37 shared recordings");
    files
}

/// Frames rendered to text: borrowed and owned payloads print the same, so
/// equal text means equal frames.
fn whole(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    decode_with(data, CrcMode::Auto, |f| out.push(format!("{f:?}")));
    out
}

fn chunked(data: &[u8], sizes: &mut dyn FnMut() -> usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut d = Decoder::new(CrcMode::Auto);
    let mut i = 0;
    while i < data.len() {
        let n = sizes().clamp(1, data.len() - i);
        d.feed(&data[i..i + n], |f| out.push(format!("{f:?}")));
        i += n;
    }
    d.finish(|f| out.push(format!("{f:?}")));
    out
}

#[test]
fn chunking_never_changes_the_result() {
    let mut all = Vec::new();
    for (name, data) in recordings() {
        let reference = whole(&data);
        assert_eq!(chunked(&data, &mut || 1), reference, "{name}: byte by byte");
        let mut state = 0x2545_f491_u32;
        let mut lcg = move || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as usize % 700 + 1
        };
        assert_eq!(chunked(&data, &mut lcg), reference, "{name}: random chunks");
        all.extend_from_slice(&data);
    }
    let reference = whole(&all);
    assert_eq!(chunked(&all, &mut || 4096), reference);
    assert_eq!(chunked(&all, &mut || 3), reference);
}

#[test]
fn totals_match_the_recordings_readme() {
    let (mut ok, mut crc, mut truncated, mut values) = (0, 0, 0, 0);
    for (_, data) in recordings() {
        decode_with(&data, CrcMode::Auto, |f| match &f.outcome {
            Outcome::Ok(ms) => {
                ok += 1;
                for m in ms {
                    if let sml_core::MessageResult::Ok(m) = m {
                        assert!(m.crc_ok, "message CRC at frame {}", f.offset);
                        if let sml_core::Body::GetListResponse(r) = &m.body {
                            values += r.values.iter().filter(|e| e.value.is_some()).count();
                        }
                    }
                }
            }
            Outcome::Transport(sml_core::FrameError::Crc { .. }) => crc += 1,
            Outcome::Transport(sml_core::FrameError::Truncated) => truncated += 1,
            other => panic!("unexpected outcome {other:?}"),
        });
    }
    assert_eq!((ok, crc, truncated, values), (227, 5, 28, 1579));
}

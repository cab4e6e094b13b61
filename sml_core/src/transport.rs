//! SML transport protocol v1: `1b1b1b1b 01010101 <escaped file> 00.. 1b1b1b1b 1a PP C0 C1`.
//!
//! [`Framer`] is a push decoder: bytes go in in any chunking and frames come
//! out as soon as their last byte arrives. Whole-buffer decoding is the same
//! code fed once, so the two cannot disagree. Between escape bytes the framer
//! jumps with `memchr`, and the CRC runs over whole frames with a sliced table,
//! so payload bytes are never looked at one by one.

use std::borrow::Cow;
use std::fmt;

use memchr::memchr;
use memchr::memmem;

use crate::crc::{CrcKind, CrcMode};

/// Escape + "version 1".
pub const START: [u8; 8] = [0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x01, 0x01, 0x01];
const ESC: u8 = 0x1b;
/// Frames longer than this are dropped, which bounds the framer's memory.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why a frame did not make it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Trailer CRC differs from the CRC over the frame (`kind` is the first one tried).
    Crc { kind: CrcKind, expected: u16, found: u16 },
    /// A new start sequence or the end of the stream cut the frame short.
    Truncated,
    /// `1b1b1b1b` followed by something that is no known escape (transport v2 included).
    Escape { sequence: Vec<u8> },
    /// The end escape does not sit on a 4-byte boundary of the frame.
    Misaligned { end_escape_at: usize },
    /// Padding count above 4, longer than the payload, or padding bytes that are not zero.
    Padding { padding: u8 },
    /// No end escape within the frame size limit.
    TooLong { limit: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Crc { kind, expected, found } => write!(
                f,
                "{} CRC mismatch: computed {expected:#06x}, frame carries {found:#06x}",
                kind.name()
            ),
            FrameError::Truncated => f.write_str("frame cut short (new start sequence or end of stream)"),
            FrameError::Escape { sequence } => {
                f.write_str("unknown escape sequence 1b1b1b1b")?;
                for b in sequence {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            FrameError::Misaligned { end_escape_at } => {
                write!(f, "end escape at frame byte {end_escape_at} is not 4-byte aligned")
            }
            FrameError::Padding { padding } => write!(f, "invalid padding count {padding}"),
            FrameError::TooLong { limit } => write!(f, "no end escape within {limit} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame that passed the transport checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport<'a> {
    /// The SML file with escapes undone and padding removed.
    pub payload: Cow<'a, [u8]>,
    pub crc: CrcKind,
    pub padding: u8,
}

/// One item of the framer's output, good or bad, in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// Stream offset of the first byte of the start sequence.
    pub offset: u64,
    pub length: usize,
    pub result: Result<Transport<'a>, FrameError>,
}

/// Counters over everything fed so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub bytes: u64,
    pub frames_ok: u64,
    pub crc_errors: u64,
    pub truncated: u64,
    pub escape_errors: u64,
    pub too_long: u64,
    pub discarded_bytes: u64,
    pub crc_x25: u64,
    pub crc_kermit: u64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Search,
    /// Inside a frame starting at the first buffered byte. `scan` is the next
    /// unexamined byte relative to the frame start, `run` the number of `1b`
    /// bytes directly before it, `escaped` whether the payload holds escaped
    /// escapes that must be undone.
    Frame {
        scan: usize,
        run: usize,
        escaped: bool,
    },
}

/// Streaming SML transport decoder.
#[derive(Clone, Debug)]
pub struct Framer {
    mode: CrcMode,
    max_frame: usize,
    /// Bytes not yet consumed: the frame in progress, or up to 7 bytes that may
    /// begin a start sequence.
    buf: Vec<u8>,
    /// Stream offset of `buf[0]` (or of the next byte when `buf` is empty).
    buf_offset: u64,
    state: State,
    /// The CRC the last good frame used; tried first on the next one.
    preferred: CrcKind,
    stats: TransportStats,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new(CrcMode::Auto)
    }
}

impl Framer {
    #[must_use]
    pub fn new(mode: CrcMode) -> Self {
        Self::with_limit(mode, DEFAULT_MAX_FRAME)
    }

    #[must_use]
    pub fn with_limit(mode: CrcMode, max_frame: usize) -> Self {
        Framer {
            mode,
            max_frame: max_frame.max(16),
            buf: Vec::new(),
            buf_offset: 0,
            state: State::Search,
            preferred: if mode == CrcMode::Kermit { CrcKind::Kermit } else { CrcKind::X25 },
            stats: TransportStats::default(),
        }
    }

    #[must_use]
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// Bytes held back waiting for the rest of a frame.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds a chunk; `emit` sees every frame that this chunk completes.
    pub fn feed<F: FnMut(RawFrame<'_>)>(&mut self, chunk: &[u8], mut emit: F) {
        self.stats.bytes += chunk.len() as u64;
        if self.buf.is_empty() {
            // Common case for whole buffers and meter-sized reads: no copy at all
            // unless a frame is left incomplete at the end of the chunk.
            let consumed = self.process(chunk, self.buf_offset, false, &mut emit);
            self.buf.extend_from_slice(&chunk[consumed..]);
            self.buf_offset += consumed as u64;
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(chunk);
            let consumed = self.process(&buf, self.buf_offset, false, &mut emit);
            buf.drain(..consumed);
            self.buf_offset += consumed as u64;
            self.buf = buf;
        }
    }

    /// End of stream: a frame in progress comes out as [`FrameError::Truncated`].
    pub fn finish<F: FnMut(RawFrame<'_>)>(&mut self, mut emit: F) {
        let buf = std::mem::take(&mut self.buf);
        let consumed = self.process(&buf, self.buf_offset, true, &mut emit);
        debug_assert_eq!(consumed, buf.len());
        self.buf_offset += buf.len() as u64;
        self.state = State::Search;
    }

    /// Runs the state machine over `data` (stream offset `base`) and returns
    /// how many leading bytes are done with.
    fn process<F: FnMut(RawFrame<'_>)>(&mut self, data: &[u8], base: u64, eof: bool, emit: &mut F) -> usize {
        let finder = memmem::Finder::new(&START);
        let mut pos = 0usize;
        loop {
            match self.state {
                State::Search => {
                    let hay = &data[pos..];
                    // Frames mostly follow each other directly: check the
                    // spot itself before setting up a search.
                    let found = if hay.starts_with(&START) { Some(0) } else { finder.find(hay) };
                    if let Some(i) = found {
                        self.stats.discarded_bytes += i as u64;
                        pos += i;
                        self.state = State::Frame { scan: START.len(), run: 0, escaped: false };
                    } else {
                        let keep = if eof { 0 } else { hay.len().min(START.len() - 1) };
                        self.stats.discarded_bytes += (hay.len() - keep) as u64;
                        return data.len() - keep;
                    }
                }
                State::Frame { scan, run, escaped } => match self.scan_frame(data, pos, scan, run, escaped) {
                    Scan::NeedMore { scan, run, escaped } => {
                        if eof {
                            self.stats.truncated += 1;
                            emit(RawFrame {
                                offset: base + pos as u64,
                                length: data.len() - pos,
                                result: Err(FrameError::Truncated),
                            });
                            self.state = State::Search;
                            return data.len();
                        }
                        self.state = State::Frame { scan, run, escaped };
                        return pos;
                    }
                    Scan::End { end, escaped } => {
                        let frame = &data[pos..end];
                        let result = self.check_end(frame, escaped);
                        emit(RawFrame { offset: base + pos as u64, length: frame.len(), result });
                        pos = end;
                        self.state = State::Search;
                    }
                    Scan::Restart { at } => {
                        self.stats.truncated += 1;
                        emit(RawFrame {
                            offset: base + pos as u64,
                            length: at - pos,
                            result: Err(FrameError::Truncated),
                        });
                        pos = at;
                        self.state = State::Frame { scan: START.len(), run: 0, escaped: false };
                    }
                    Scan::BadEscape { at } => {
                        self.stats.escape_errors += 1;
                        let sequence = data[at..data.len().min(at + 4)].to_vec();
                        emit(RawFrame {
                            offset: base + pos as u64,
                            length: at - pos,
                            result: Err(FrameError::Escape { sequence }),
                        });
                        pos = at;
                        self.state = State::Search;
                    }
                    Scan::TooLong => {
                        self.stats.too_long += 1;
                        emit(RawFrame {
                            offset: base + pos as u64,
                            length: self.max_frame,
                            result: Err(FrameError::TooLong { limit: self.max_frame }),
                        });
                        pos += self.max_frame;
                        self.state = State::Search;
                    }
                },
            }
        }
    }

    /// Scans a frame that starts at `f`. Escapes are recognised by counting
    /// consecutive `1b` bytes, not by 4-byte alignment: after a run of `n`,
    /// `n % 8 >= 4` means the last four are an escape command (the bytes before
    /// it are data, which also covers payloads that end in 1..3 `1b` without
    /// padding), anything else is escaped escapes plus literal `1b`.
    ///
    /// The size limit is applied at the position where a decision is taken, a
    /// position that depends only on the stream, so chunking cannot change it.
    fn scan_frame(&self, data: &[u8], f: usize, scan: usize, mut run: usize, mut escaped: bool) -> Scan {
        let len = data.len();
        let limit = f + self.max_frame;
        let mut s = f + scan;
        loop {
            if run == 0 {
                let Some(k) = memchr(ESC, &data[s..]) else {
                    if len > limit {
                        return Scan::TooLong;
                    }
                    return Scan::NeedMore { scan: len - f, run: 0, escaped };
                };
                s += k;
            }
            while s < len && data[s] == ESC {
                run += 1;
                s += 1;
            }
            if s > limit {
                return Scan::TooLong;
            }
            if s == len {
                return Scan::NeedMore { scan: s - f, run, escaped };
            }
            if run % 8 < 4 {
                escaped |= run >= 4;
                run = 0;
                continue;
            }
            escaped |= run >= 8;
            match data[s] {
                0x1a => {
                    if s + 4 > len {
                        return Scan::NeedMore { scan: s - f, run, escaped };
                    }
                    return Scan::End { end: s + 4, escaped };
                }
                0x01 => {
                    if s + 4 > len {
                        return Scan::NeedMore { scan: s - f, run, escaped };
                    }
                    if data[s..s + 4] == [1, 1, 1, 1] {
                        return Scan::Restart { at: s - 4 };
                    }
                    return Scan::BadEscape { at: s };
                }
                _ => {
                    // Wait for the whole 4-byte escape payload so that the
                    // reported sequence does not depend on chunking.
                    if s + 4 > len {
                        return Scan::NeedMore { scan: s - f, run, escaped };
                    }
                    return Scan::BadEscape { at: s };
                }
            }
        }
    }

    /// Checks trailer CRC, alignment and padding of a complete frame.
    fn check_end<'a>(&mut self, frame: &'a [u8], escaped: bool) -> Result<Transport<'a>, FrameError> {
        let n = frame.len();
        let esc_at = n - 8;
        let padding = frame[n - 3];
        let trailer = [frame[n - 2], frame[n - 1]];
        let covered = &frame[..n - 2];
        let mut first_failure = None;
        let mut crc = None;
        for &kind in self.mode.candidates(self.preferred) {
            let computed = kind.compute(covered);
            let found = kind.from_wire(trailer);
            if computed == found {
                crc = Some(kind);
                break;
            }
            first_failure.get_or_insert(FrameError::Crc { kind, expected: computed, found });
        }
        let Some(crc) = crc else {
            self.stats.crc_errors += 1;
            return Err(first_failure.unwrap_or(FrameError::Truncated));
        };
        if !esc_at.is_multiple_of(4) {
            self.stats.escape_errors += 1;
            return Err(FrameError::Misaligned { end_escape_at: esc_at });
        }
        let data_len = esc_at - START.len();
        let pad = padding as usize;
        // PP = 4 is outside the spec but one DZG firmware sends it with four zero bytes.
        if pad > 4 || pad > data_len || frame[START.len() + data_len - pad..esc_at].iter().any(|&b| b != 0) {
            self.stats.escape_errors += 1;
            return Err(FrameError::Padding { padding });
        }
        let body = &frame[START.len()..esc_at - pad];
        let payload = if escaped { Cow::Owned(unescape(body)) } else { Cow::Borrowed(body) };
        self.preferred = crc;
        self.stats.frames_ok += 1;
        match crc {
            CrcKind::X25 => self.stats.crc_x25 += 1,
            CrcKind::Kermit => self.stats.crc_kermit += 1,
        }
        Ok(Transport { payload, crc, padding })
    }
}

enum Scan {
    NeedMore { scan: usize, run: usize, escaped: bool },
    End { end: usize, escaped: bool },
    Restart { at: usize },
    BadEscape { at: usize },
    TooLong,
}

/// Undoes escaping: a run of `m` escape bytes inside the payload carries
/// `4 * (m / 8) + m % 8` literal ones (each `1b1b1b1b 1b1b1b1b` stands for four).
#[must_use]
pub fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(k) = memchr(ESC, &body[i..]) {
        out.extend_from_slice(&body[i..i + k]);
        i += k;
        let start = i;
        while i < body.len() && body[i] == ESC {
            i += 1;
        }
        let m = i - start;
        out.resize(out.len() + 4 * (m / 8) + m % 8, ESC);
    }
    out.extend_from_slice(&body[i..]);
    out
}

/// Owned copy of a [`RawFrame`], for tests and callers that keep frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRawFrame {
    pub offset: u64,
    pub length: usize,
    pub result: Result<(Vec<u8>, CrcKind, u8), FrameError>,
}

impl From<RawFrame<'_>> for OwnedRawFrame {
    fn from(f: RawFrame<'_>) -> Self {
        OwnedRawFrame {
            offset: f.offset,
            length: f.length,
            result: f.result.map(|t| (t.payload.into_owned(), t.crc, t.padding)),
        }
    }
}

/// Frames a whole buffer (what `feed` once + `finish` gives).
#[must_use]
pub fn frame_all(data: &[u8], mode: CrcMode) -> (Vec<OwnedRawFrame>, TransportStats) {
    let mut framer = Framer::new(mode);
    let mut out = Vec::new();
    framer.feed(data, |f| out.push(f.into()));
    framer.finish(|f| out.push(f.into()));
    (out, framer.stats.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Error classes as the spec's test vectors group them.
    fn class(e: &FrameError) -> &'static str {
        match e {
            FrameError::Crc { .. } => "crc",
            FrameError::Truncated => "truncated",
            FrameError::Escape { .. } | FrameError::Misaligned { .. } | FrameError::Padding { .. } => {
                "escape"
            }
            FrameError::TooLong { .. } => "too_long",
        }
    }

    fn payloads(data: &[u8]) -> Vec<Result<Vec<u8>, &'static str>> {
        frame_all(data, CrcMode::Auto)
            .0
            .into_iter()
            .map(|f| f.result.map(|(p, _, _)| p).map_err(|e| class(&e)))
            .collect()
    }

    #[test]
    fn spec_vectors() {
        let ok = |s: &str, p: &str| assert_eq!(payloads(&hex(s)), vec![Ok(hex(p))], "{s}");
        ok("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b", "12345678");
        ok("1b1b1b1b 01010101 12345600 1b1b1b1b 1a0191a5", "123456");
        ok("1b1b1b1b 01010101 12000000 1b1b1b1b 1a01e1b1", "120000");
        ok("1b1b1b1b 01010101 12 1b1b1b1b 1b1b1b1b 000000 1b1b1b1b 1a03be25", "121b1b1b1b");
        ok("1b1b1b1b 01010101 12345678 1234561b 1b1b1b1b 1a00361a", "12345678 1234561b");
        ok("1b1b1b1b 01010101 12345678 12341b1b 1b1b1b1b 1a001ac5", "12345678 12341b1b");
        ok("1b1b1b1b 01010101 12345678 121b1b1b 1b1b1b1b 1a000ba4", "12345678 121b1b1b");
        ok("1b1b1b1b 01010101 12345678 1b1b1b00 12345678 1b1b1b1b 1a009135", "12345678 1b1b1b00 12345678");
        // A stray escape byte in front of the start sequence (libsml and sml-rs miss this frame).
        ok("1b 1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b", "12345678");
    }

    #[test]
    fn spec_error_vectors() {
        let err = |s: &str, e: &str| {
            let got = payloads(&hex(s));
            assert!(got.contains(&Err(e)), "{s}: {got:?}");
        };
        err("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b8FF", "crc");
        err("1b1b1b1b 01010101 12345678 FF 1b1b1b1b 1a0013b6", "escape");
        err("1b1b1b1b 01010101 12345678 12345678 1b1b1b1b 1a04f950", "escape");
        err("1b1b1b1b 01010101 1b1b1b1b 1a014FF4", "escape");
        err("1b1b1b1b 01010101 12345678 12345601 1b1b1b1b 1a012157", "escape");
        err("1b1b1b1b 01010101 12345678 1b1b1b1b 1c000000 12345678 1b1b1b1b 1a03be25", "escape");
        err("1b1b1b1b 01010101 123456", "truncated");
        err("1b1b1b1b 01010101 12340000", "truncated");
    }

    #[test]
    fn crc_error_reports_both_values() {
        let (frames, _) = frame_all(&hex("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b8FF"), CrcMode::X25);
        assert_eq!(
            frames[0].result,
            Err(FrameError::Crc { kind: CrcKind::X25, expected: 0x7bb8, found: 0xffb8 })
        );
    }

    #[test]
    fn garbage_restart_and_trailing_bytes() {
        let data = hex("000102 1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b 1234");
        let (frames, stats) = frame_all(&data, CrcMode::Auto);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].offset, 3);
        assert_eq!(frames[0].length, 20);
        assert_eq!(stats.discarded_bytes, 5);

        let data = hex("1b1b1b1b 01010101 09 87654321 1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b");
        let (frames, _) = frame_all(&data, CrcMode::Auto);
        assert_eq!(frames[0].result, Err(FrameError::Truncated));
        assert_eq!((frames[0].offset, frames[0].length), (0, 13));
        assert_eq!(frames[1].result.as_ref().unwrap().0, hex("12345678"));
    }

    #[test]
    fn padding_four_zero_bytes_is_accepted() {
        let mut f = hex("1b1b1b1b 01010101 12345678 00000000 1b1b1b1b 1a04");
        let crc = crate::crc::x25(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(payloads(&f), vec![Ok(hex("12345678"))]);
    }

    #[test]
    fn kermit_frames_are_recognised() {
        let mut f = hex("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00");
        let crc = crate::crc::kermit(&f);
        f.extend_from_slice(&crc.to_be_bytes());
        let (frames, _) = frame_all(&f, CrcMode::Auto);
        assert_eq!(frames[0].result.as_ref().unwrap().1, CrcKind::Kermit);
        let (frames, _) = frame_all(&f, CrcMode::X25);
        assert!(matches!(frames[0].result, Err(FrameError::Crc { .. })));
    }

    #[test]
    fn bad_escape_report_does_not_depend_on_chunking() {
        // Found by the decode_stream fuzz target: the reported escape payload
        // used to be whatever bytes the current chunk happened to hold.
        let data = hex("1b1b1b1b 01010101 12345678 1b1b1b1b a5026698 1b1b1b1b 01010101");
        let (whole, _) = frame_all(&data, CrcMode::Auto);
        for cut in 1..data.len() {
            let mut framer = Framer::new(CrcMode::Auto);
            let mut out: Vec<OwnedRawFrame> = Vec::new();
            for c in data.chunks(cut) {
                framer.feed(c, |f| out.push(f.into()));
            }
            framer.finish(|f| out.push(f.into()));
            assert_eq!(out, whole, "cut {cut}");
        }
        assert_eq!(whole[0].result, Err(FrameError::Escape { sequence: vec![0xa5, 0x02, 0x66, 0x98] }));
    }

    #[test]
    fn too_long_frames_are_dropped_and_decoding_goes_on() {
        let mut data = START.to_vec();
        data.extend(std::iter::repeat_n(0x42u8, 100));
        data.extend(hex("1b1b1b1b 01010101 12345678 1b1b1b1b 1a00b87b"));
        let mut framer = Framer::with_limit(CrcMode::Auto, 64);
        let mut out: Vec<OwnedRawFrame> = Vec::new();
        framer.feed(&data, |f| out.push(f.into()));
        framer.finish(|f| out.push(f.into()));
        assert_eq!(out[0].result, Err(FrameError::TooLong { limit: 64 }));
        assert_eq!(out.last().unwrap().result.as_ref().unwrap().0, hex("12345678"));
    }
}

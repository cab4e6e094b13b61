//! `sml_core`: a fast, forgiving decoder (and encoder) for SML, the Smart
//! Message Language v1 that German/EU electricity meters push out of their
//! optical port.
//!
//! Layers, as in the spec: [`transport`] (framing, escapes, CRC) → [`tl`]
//! (type-length fields) → [`value`] and [`message`] (SML types and message
//! bodies). [`Decoder`] ties them together as a push decoder; [`decode`] is
//! the same thing over one buffer. the `python` module (feature `python`) is the
//! only one that knows about Python.

pub mod crc;
pub mod encode;
pub mod message;
pub mod obis;
pub mod quirks;
pub mod text;
pub mod tl;
pub mod transport;
pub mod units;
pub mod value;

#[cfg(feature = "python")]
mod python;

pub use crc::{CrcKind, CrcMode};
pub use message::{parse_file, Body, Message, MessageResult};
pub use tl::ParseError;
pub use transport::{FrameError, Framer, RawFrame, TransportStats};

/// A decoded frame, borrowing from the input (or from the unescaped payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub offset: u64,
    pub length: usize,
    /// The CRC that matched; `None` when the frame failed before or at the CRC.
    pub crc: Option<CrcKind>,
    pub outcome: Outcome<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Transport checks passed and at least one message (or none at all) was read.
    Ok(Vec<MessageResult<'a>>),
    Transport(FrameError),
    /// Transport was fine but not a single message could be read.
    Parse(ParseError),
}

/// Message-level counters (the transport keeps its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageStats {
    pub parse_errors: u64,
    pub messages: u64,
    pub message_errors: u64,
    pub message_crc_errors: u64,
}

/// Push decoder: feed bytes in any chunking, get frames in stream order.
#[derive(Clone, Debug)]
pub struct Decoder {
    framer: Framer,
    mode: CrcMode,
    stats: MessageStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(CrcMode::Auto)
    }
}

impl Decoder {
    #[must_use]
    pub fn new(mode: CrcMode) -> Self {
        Decoder { framer: Framer::new(mode), mode, stats: MessageStats::default() }
    }

    #[must_use]
    pub fn with_limit(mode: CrcMode, max_frame: usize) -> Self {
        Decoder { framer: Framer::with_limit(mode, max_frame), mode, stats: MessageStats::default() }
    }

    #[must_use]
    pub fn transport_stats(&self) -> &TransportStats {
        self.framer.stats()
    }

    #[must_use]
    pub fn message_stats(&self) -> &MessageStats {
        &self.stats
    }

    #[must_use]
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    pub fn feed<F: FnMut(Frame<'_>)>(&mut self, chunk: &[u8], mut on_frame: F) {
        let (mode, stats) = (self.mode, &mut self.stats);
        self.framer.feed(chunk, |raw| on_frame(to_frame(&raw, mode, stats)));
    }

    pub fn finish<F: FnMut(Frame<'_>)>(&mut self, mut on_frame: F) {
        let (mode, stats) = (self.mode, &mut self.stats);
        self.framer.finish(|raw| on_frame(to_frame(&raw, mode, stats)));
    }
}

fn to_frame<'a>(raw: &'a RawFrame<'_>, mode: CrcMode, stats: &mut MessageStats) -> Frame<'a> {
    let (crc, outcome) = match &raw.result {
        Err(e) => (None, Outcome::Transport(e.clone())),
        Ok(t) => {
            let messages = parse_file(&t.payload, t.crc, mode);
            let mut ok = 0u64;
            for m in &messages {
                match m {
                    MessageResult::Ok(m) => {
                        ok += 1;
                        stats.message_crc_errors += u64::from(!m.crc_ok);
                        stats.message_errors += u64::from(matches!(m.body, Body::Unknown { .. }));
                    }
                    MessageResult::Err { .. } => stats.message_errors += 1,
                }
            }
            stats.messages += messages.len() as u64;
            if ok == 0 && !messages.is_empty() {
                stats.parse_errors += 1;
                let Some(MessageResult::Err { error, .. }) = messages.into_iter().next() else {
                    unreachable!("no Ok message, so the first one is an Err")
                };
                (Some(t.crc), Outcome::Parse(error))
            } else {
                (Some(t.crc), Outcome::Ok(messages))
            }
        }
    };
    Frame { offset: raw.offset, length: raw.length, crc, outcome }
}

/// Decodes a whole buffer: exactly `Decoder::feed(data)` followed by `finish()`.
pub fn decode_with<F: FnMut(Frame<'_>)>(data: &[u8], mode: CrcMode, mut on_frame: F) -> Decoder {
    let mut d = Decoder::new(mode);
    d.feed(data, &mut on_frame);
    d.finish(&mut on_frame);
    d
}

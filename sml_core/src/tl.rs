//! The TL (type-length) field and a cursor that reads SML elements from a
//! payload without copying.
//!
//! Length rules (spec: the length counts the TL bytes for every type except
//! lists, whose length is the element count): `06 48616c6c6f` is a 5-byte octet
//! string, `81 02` + 16 bytes is a 16-byte one, `f1 04` is a list of 20.

use std::fmt;

/// Element type from bits 6..4 of the first TL byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Octets,
    Bool,
    Int,
    UInt,
    List,
}

impl Ty {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Ty::Octets => "octet string",
            Ty::Bool => "boolean",
            Ty::Int => "integer",
            Ty::UInt => "unsigned",
            Ty::List => "list",
        }
    }
}

/// A decoded TL field: `len` is the data byte count (element count for lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tl {
    pub ty: Ty,
    pub len: usize,
}

/// Where and why a payload could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    UnexpectedEnd { at: usize },
    ReservedType { at: usize, tl: u8 },
    BadContinuation { at: usize, byte: u8 },
    LengthUnderflow { at: usize },
    Expected { at: usize, expected: &'static str, found: Ty },
    IntWidth { at: usize, bytes: usize },
    OutOfRange { at: usize, what: &'static str, value: i128 },
    Count { at: usize, what: &'static str, expected: usize, found: usize },
    UnknownChoice { at: usize, what: &'static str, tag: u64 },
    MissingEndOfMessage { at: usize },
    TooDeep { at: usize },
}

impl ParseErrorKind {
    #[must_use]
    pub fn offset(&self) -> usize {
        match *self {
            ParseErrorKind::UnexpectedEnd { at }
            | ParseErrorKind::ReservedType { at, .. }
            | ParseErrorKind::BadContinuation { at, .. }
            | ParseErrorKind::LengthUnderflow { at }
            | ParseErrorKind::Expected { at, .. }
            | ParseErrorKind::IntWidth { at, .. }
            | ParseErrorKind::OutOfRange { at, .. }
            | ParseErrorKind::Count { at, .. }
            | ParseErrorKind::UnknownChoice { at, .. }
            | ParseErrorKind::MissingEndOfMessage { at }
            | ParseErrorKind::TooDeep { at } => at,
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::UnexpectedEnd { at } => {
                write!(f, "payload ends inside an element at byte {at}")
            }
            ParseErrorKind::ReservedType { at, tl } => {
                write!(f, "reserved TL type in {tl:#04x} at byte {at}")
            }
            ParseErrorKind::BadContinuation { at, byte } => {
                write!(f, "TL continuation byte {byte:#04x} at byte {at} has type bits set")
            }
            ParseErrorKind::LengthUnderflow { at } => {
                write!(f, "TL length shorter than the TL itself at byte {at}")
            }
            ParseErrorKind::Expected { at, expected, found } => {
                write!(f, "expected {expected} at byte {at}, found {}", found.name())
            }
            ParseErrorKind::IntWidth { at, bytes } => {
                write!(f, "integer of {bytes} bytes at byte {at} (1..8 allowed)")
            }
            ParseErrorKind::OutOfRange { at, what, value } => {
                write!(f, "{what} {value} out of range at byte {at}")
            }
            ParseErrorKind::Count { at, what, expected, found } => {
                write!(f, "{what} at byte {at} has {found} elements, expected {expected}")
            }
            ParseErrorKind::UnknownChoice { at, what, tag } => {
                write!(f, "unknown {what} choice {tag:#x} at byte {at}")
            }
            ParseErrorKind::MissingEndOfMessage { at } => {
                write!(f, "endOfSmlMsg (00) missing at byte {at}")
            }
            ParseErrorKind::TooDeep { at } => write!(f, "nesting too deep at byte {at}"),
        }
    }
}

/// A parse error, boxed so that `Result<u64, ParseError>` stays two words:
/// the hot parse functions then return in registers instead of through
/// memory (the unboxed error made every `Result` 48 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ParseError(Box<ParseErrorKind>);

impl ParseError {
    #[must_use]
    pub fn kind(&self) -> &ParseErrorKind {
        &self.0
    }

    #[must_use]
    pub fn offset(&self) -> usize {
        self.0.offset()
    }
}

impl From<ParseErrorKind> for ParseError {
    #[cold]
    fn from(kind: ParseErrorKind) -> Self {
        ParseError(Box::new(kind))
    }
}

impl fmt::Debug for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ParseError {}

pub type Result<T> = std::result::Result<T, ParseError>;

/// Nesting limit for recursive structures (trees, list values): keeps hostile
/// input from exhausting the stack.
pub const MAX_DEPTH: usize = 24;

/// Reads SML elements from a byte slice.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    #[must_use]
    pub fn at(data: &'a [u8], pos: usize) -> Self {
        Cursor { data, pos }
    }

    #[must_use]
    pub fn pos(&self) -> usize {
        self.pos
    }

    #[must_use]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    #[must_use]
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Consumes a `01` ("optional element not set") if one is next.
    #[inline]
    pub fn not_set(&mut self) -> bool {
        if self.peek() == Some(0x01) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the `00` endOfSmlMsg marker if one is next.
    #[inline]
    pub fn end_of_message(&mut self) -> bool {
        if self.peek() == Some(0x00) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a TL field.
    pub fn tl(&mut self) -> Result<Tl> {
        let at = self.pos;
        let first =
            *self.data.get(at).ok_or_else(|| ParseError::from(ParseErrorKind::UnexpectedEnd { at }))?;
        self.pos += 1;
        let ty = match (first >> 4) & 0x7 {
            0 => Ty::Octets,
            4 => Ty::Bool,
            5 => Ty::Int,
            6 => Ty::UInt,
            7 => Ty::List,
            _ => return Err(ParseErrorKind::ReservedType { at, tl: first }.into()),
        };
        let mut len = (first & 0x0f) as usize;
        let mut tl_bytes = 1;
        let mut more = first & 0x80 != 0;
        while more {
            let b = *self
                .data
                .get(self.pos)
                .ok_or_else(|| ParseError::from(ParseErrorKind::UnexpectedEnd { at: self.pos }))?;
            if b & 0x70 != 0 || tl_bytes >= 6 {
                return Err(ParseErrorKind::BadContinuation { at: self.pos, byte: b }.into());
            }
            self.pos += 1;
            len = (len << 4) | (b & 0x0f) as usize;
            tl_bytes += 1;
            more = b & 0x80 != 0;
        }
        if ty != Ty::List {
            len = len
                .checked_sub(tl_bytes)
                .ok_or_else(|| ParseError::from(ParseErrorKind::LengthUnderflow { at }))?;
        }
        Ok(Tl { ty, len })
    }

    /// Takes `n` data bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end =
            end.ok_or_else(|| ParseError::from(ParseErrorKind::UnexpectedEnd { at: self.data.len() }))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn expect(&mut self, ty: Ty, expected: &'static str) -> Result<Tl> {
        let at = self.pos;
        let tl = self.tl()?;
        if tl.ty == ty {
            Ok(tl)
        } else {
            Err(ParseErrorKind::Expected { at, expected, found: tl.ty }.into())
        }
    }

    /// A mandatory octet string (`01` reads as empty).
    #[inline]
    pub fn octets(&mut self) -> Result<&'a [u8]> {
        // Fast path: single-byte TL, the common case for ids and OBIS codes.
        if let Some(&b) = self.data.get(self.pos) {
            if b & 0xf0 == 0 && b != 0 {
                let n = (b & 0x0f) as usize - 1;
                let start = self.pos + 1;
                if start + n <= self.data.len() {
                    self.pos = start + n;
                    return Ok(&self.data[start..start + n]);
                }
            }
        }
        self.octets_slow()
    }

    #[inline(never)]
    fn octets_slow(&mut self) -> Result<&'a [u8]> {
        let tl = self.expect(Ty::Octets, "octet string")?;
        self.take(tl.len)
    }

    #[inline]
    pub fn octets_opt(&mut self) -> Result<Option<&'a [u8]>> {
        if self.not_set() {
            return Ok(None);
        }
        self.octets().map(Some)
    }

    /// List header; returns the element count.
    #[inline]
    pub fn list(&mut self) -> Result<usize> {
        if let Some(&b) = self.data.get(self.pos) {
            if b & 0xf0 == 0x70 {
                self.pos += 1;
                return Ok((b & 0x0f) as usize);
            }
        }
        Ok(self.expect(Ty::List, "list")?.len)
    }

    /// List header that must have exactly `n` elements.
    #[inline]
    pub fn list_of(&mut self, n: usize, what: &'static str) -> Result<()> {
        let at = self.pos;
        if n < 16 && self.data.get(at) == Some(&(0x70 | n as u8)) {
            self.pos += 1;
            return Ok(());
        }
        let found = self.list()?;
        if found == n {
            Ok(())
        } else {
            Err(ParseErrorKind::Count { at, what, expected: n, found }.into())
        }
    }

    pub fn list_opt(&mut self) -> Result<Option<usize>> {
        if self.not_set() {
            return Ok(None);
        }
        self.list().map(Some)
    }

    /// Any integer (signed or unsigned, 1..8 bytes) as i128, with its width and signedness.
    #[inline]
    fn number(&mut self, expected: &'static str) -> Result<(i128, u8, bool)> {
        let at = self.pos;
        // Fast path: single TL byte 0x52..=0x59 / 0x62..=0x69 and all bytes present.
        if let Some(&b) = self.data.get(at) {
            let n = (b & 0x0f) as usize;
            if matches!(b >> 4, 5 | 6) && (2..=9).contains(&n) && at + n <= self.data.len() {
                let bytes = &self.data[at + 1..at + n];
                self.pos = at + n;
                return Ok(if b >> 4 == 5 {
                    (i128::from(be_int(bytes)), (n - 1) as u8, true)
                } else {
                    (i128::from(be_uint(bytes)), (n - 1) as u8, false)
                });
            }
        }
        self.number_slow(expected)
    }

    #[inline(never)]
    fn number_slow(&mut self, expected: &'static str) -> Result<(i128, u8, bool)> {
        let at = self.pos;
        let tl = self.tl()?;
        let signed = match tl.ty {
            Ty::Int => true,
            Ty::UInt => false,
            other => return Err(ParseErrorKind::Expected { at, expected, found: other }.into()),
        };
        if tl.len == 0 || tl.len > 8 {
            return Err(ParseErrorKind::IntWidth { at, bytes: tl.len }.into());
        }
        let bytes = self.take(tl.len)?;
        let v = if signed { i128::from(be_int(bytes)) } else { i128::from(be_uint(bytes)) };
        Ok((v, tl.len as u8, signed))
    }

    /// An unsigned field of any width. Meters shorten or widen these freely
    /// (body tag `63 0701` or `65 00000701`, CRC `62 e0`), and a few send them as
    /// Integer, so any non-negative integer that fits is accepted.
    #[inline]
    pub fn unsigned(&mut self, what: &'static str) -> Result<u64> {
        let at = self.pos;
        // Fast path: a single-TL-byte Unsigned (0x62..=0x69), the common case.
        if let Some(&b) = self.data.get(at) {
            let n = (b & 0x0f) as usize;
            if b >> 4 == 6 && (2..=9).contains(&n) && at + n <= self.data.len() {
                self.pos = at + n;
                return Ok(be_uint(&self.data[at + 1..at + n]));
            }
        }
        self.unsigned_slow(what)
    }

    /// Everything the fast path does not take: multi-byte TL, signed
    /// encodings of unsigned fields, truncated input, errors.
    #[inline(never)]
    fn unsigned_slow(&mut self, what: &'static str) -> Result<u64> {
        let at = self.pos;
        let (v, _, _) = self.number(what)?;
        u64::try_from(v).map_err(|_| ParseErrorKind::OutOfRange { at, what, value: v }.into())
    }

    #[inline]
    pub fn unsigned_opt(&mut self, what: &'static str) -> Result<Option<u64>> {
        if self.not_set() {
            return Ok(None);
        }
        self.unsigned(what).map(Some)
    }

    /// A signed field of any width, range-checked into `lo..=hi`.
    #[inline]
    pub fn signed(&mut self, what: &'static str, lo: i64, hi: i64) -> Result<i64> {
        let at = self.pos;
        // Fast path: Integer8 (`52 xx`), how every meter sends its scaler.
        if let Some(&[0x52, x]) = self.data.get(at..at + 2) {
            let v = i64::from(x as i8);
            if (lo..=hi).contains(&v) {
                self.pos = at + 2;
                return Ok(v);
            }
        }
        self.signed_slow(what, lo, hi)
    }

    #[inline(never)]
    fn signed_slow(&mut self, what: &'static str, lo: i64, hi: i64) -> Result<i64> {
        let at = self.pos;
        let (v, _, _) = self.number(what)?;
        if v < i128::from(lo) || v > i128::from(hi) {
            return Err(ParseErrorKind::OutOfRange { at, what, value: v }.into());
        }
        Ok(v as i64)
    }

    #[inline]
    pub fn signed_opt(&mut self, what: &'static str, lo: i64, hi: i64) -> Result<Option<i64>> {
        if self.not_set() {
            return Ok(None);
        }
        self.signed(what, lo, hi).map(Some)
    }

    /// Unsigned value that must fit `u8`/`u16`/`u32`.
    #[inline]
    pub fn unsigned_max(&mut self, what: &'static str, max: u64) -> Result<u64> {
        let at = self.pos;
        let v = self.unsigned(what)?;
        if v > max {
            return Err(ParseErrorKind::OutOfRange { at, what, value: i128::from(v) }.into());
        }
        Ok(v)
    }

    pub fn boolean_opt(&mut self) -> Result<Option<bool>> {
        if self.not_set() {
            return Ok(None);
        }
        let tl = self.expect(Ty::Bool, "boolean")?;
        let b = self.take(tl.len)?;
        Ok(Some(b.iter().any(|&x| x != 0)))
    }

    /// Raw integer element for SML_Value: value, data width, signedness.
    pub fn integer(&mut self) -> Result<(i128, u8, bool)> {
        self.number("integer")
    }

    /// Skips one element of any type, nested lists included.
    pub fn skip(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(ParseErrorKind::TooDeep { at: self.pos }.into());
        }
        // `00` is endOfSmlMsg, the last element of every message.
        if self.end_of_message() {
            return Ok(());
        }
        let tl = self.tl()?;
        if tl.ty == Ty::List {
            for _ in 0..tl.len {
                self.skip(depth + 1)?;
            }
        } else {
            self.take(tl.len)?;
        }
        Ok(())
    }
}

/// Big-endian unsigned from 1..=8 bytes.
#[inline]
#[must_use]
pub fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
}

/// Big-endian two's complement from 1..=8 bytes, sign taken from the first byte
/// (odd widths such as Int24/Int40 included).
#[inline]
#[must_use]
pub fn be_int(b: &[u8]) -> i64 {
    let shift = 64 - 8 * b.len() as u32;
    ((be_uint(b) << shift) as i64) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn numbers_of_every_width() {
        let cases: &[(&str, i128)] = &[
            ("6201", 1),
            ("630101", 257),
            ("6500000001", 1),
            ("64010001", 65537),
            ("67000000000001", 1),
            ("690000000000000001", 1),
            ("52ff", -1),
            ("53ec78", -5000),
            ("55ffffec78", -5000),
            ("58ffffffffffec78", -5000),
            ("58ffffffffffff0f", -241),
            ("59ffffffffffffffff", -1),
            ("53ff01", -255),
            ("63ff01", 65281),
            ("5500000a8c", 2700),
            ("54ff1479", -60295),
            ("69ffffffffffffffff", i128::from(u64::MAX)),
        ];
        for (hex, want) in cases {
            let d = h(hex);
            let (v, _, _) = Cursor::new(&d).integer().unwrap();
            assert_eq!(v, *want, "{hex}");
        }
    }

    #[test]
    fn long_tl_fields() {
        let mut d = h("8102");
        d.extend_from_slice(b"aaaaoaaaaaaaaaaa");
        assert_eq!(Cursor::new(&d).octets().unwrap(), b"aaaaoaaaaaaaaaaa");
        assert_eq!(Cursor::new(&h("f104")).list().unwrap(), 20);
        assert!(matches!(
            Cursor::new(&h("8000")).tl().map_err(|e| e.kind().clone()),
            Err(ParseErrorKind::LengthUnderflow { .. })
        ));
        assert!(matches!(
            Cursor::new(&h("81f2")).tl().map_err(|e| e.kind().clone()),
            Err(ParseErrorKind::BadContinuation { .. })
        ));
        assert!(matches!(
            Cursor::new(&h("6a01")).integer().map_err(|e| e.kind().clone()),
            Err(ParseErrorKind::IntWidth { .. })
        ));
        assert!(matches!(
            Cursor::new(&h("61")).integer().map_err(|e| e.kind().clone()),
            Err(ParseErrorKind::IntWidth { .. })
        ));
        assert!(matches!(
            Cursor::new(&h("1234")).tl().map_err(|e| e.kind().clone()),
            Err(ParseErrorKind::ReservedType { .. })
        ));
    }

    #[test]
    fn booleans_and_not_set() {
        assert_eq!(Cursor::new(&h("4200")).boolean_opt().unwrap(), Some(false));
        assert_eq!(Cursor::new(&h("420f")).boolean_opt().unwrap(), Some(true));
        assert_eq!(Cursor::new(&h("01")).boolean_opt().unwrap(), None);
        assert_eq!(Cursor::new(&h("01")).octets().unwrap(), b"");
    }
}

//! Text output in libsml's `sml_server` format, one `OBIS#value#unit` line per
//! value: what `smlogger decode` prints. It runs over every frame of a
//! recording, so it is formatted here, from the decoded structures, instead
//! of from Python dicts.

use std::fmt::Write;

use crate::message::{Body, MessageResult};
use crate::value::{quirk, ListEntry, Scaled, Value};
use crate::{obis, units};

/// Appends an octet string as `sml_server` prints it: printable ASCII
/// (0x21..=0x7a) up to the first other byte, then every remaining byte as two
/// hex digits and a space.
pub fn write_octets(b: &[u8], out: &mut String) {
    let text = b.iter().position(|c| !(0x21..=0x7a).contains(c)).unwrap_or(b.len());
    // 0x21..=0x7a is ASCII, so this is one valid UTF-8 run.
    out.extend(b[..text].iter().map(|&c| char::from(c)));
    for &c in &b[text..] {
        let _ = write!(out, "{c:02x} ");
    }
}

/// Appends `OBIS#value#unit\n` for one entry; false (nothing written) when the
/// entry carries no value. Numbers are `raw × 10^scaler` with as many decimals
/// as a negative scaler implies (the same float and rounding as
/// `smlogger.sml.format`'s Python side), quirks corrected.
pub fn write_entry(e: &ListEntry<'_>, out: &mut String) -> bool {
    let Some(value) = e.scaled() else {
        return false;
    };
    obis::write(e.obj_name, out);
    out.push('#');
    // Writing to a String cannot fail.
    match value {
        Scaled::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Scaled::BigInt { raw, exp } => {
            let _ = write!(out, "{raw}");
            if raw != 0 {
                out.push_str(&"0".repeat(exp as usize));
            }
        }
        Scaled::Float(f) => {
            let decimals = (-i32::from(e.scaler.unwrap_or(0))).max(0) as usize;
            match wire_integer(e) {
                Some(n) if n.unsigned_abs() < EXACT_BELOW => write_decimal(n, decimals, out),
                _ => {
                    let _ = write!(out, "{f:.decimals$}");
                }
            }
        }
        Scaled::Bool(b) => out.push(if b { '1' } else { '0' }),
        Scaled::Bytes(b) => write_octets(b, out),
    }
    out.push('#');
    if let Some(code) = e.unit.filter(|&u| u != 0) {
        match units::symbol(code) {
            Some(symbol) => out.push_str(symbol),
            None => {
                let _ = write!(out, "?:{code}");
            }
        }
    }
    out.push('\n');
    true
}

/// Below 2^52 the float `n / 10^k` lies within a quarter of 10^-k of the
/// exact quotient, so printing it with `k` decimals gives exactly the digits
/// of `n` with the point moved: formatted from the integer, that is cheaper.
const EXACT_BELOW: u128 = 1 << 52;

/// The integer on the wire (quirks corrected), when the value is one.
fn wire_integer(e: &ListEntry<'_>) -> Option<i128> {
    let v = if e.quirks & quirk::DZG_UNSIGNED_POWER == 0 { e.value.clone() } else { e.corrected() };
    match v? {
        Value::Int { value, .. } => Some(i128::from(value)),
        Value::UInt { value, .. } => Some(i128::from(value)),
        _ => None,
    }
}

/// `n / 10^decimals` written with exactly `decimals` decimals.
fn write_decimal(n: i128, decimals: usize, out: &mut String) {
    let digits = n.unsigned_abs().to_string();
    if n < 0 {
        out.push('-');
    }
    if digits.len() <= decimals {
        out.push_str("0.");
        out.push_str(&"0".repeat(decimals - digits.len()));
        out.push_str(&digits);
    } else {
        let (int, frac) = digits.split_at(digits.len() - decimals);
        out.push_str(int);
        if decimals > 0 {
            out.push('.');
            out.push_str(frac);
        }
    }
}

/// Appends the lines of every entry of every GetListResponse whose message
/// CRC held: the entries `smlogger.sml.entries(frame)` yields, in order.
pub fn write_messages(messages: &[MessageResult<'_>], out: &mut String) {
    for m in messages {
        if let MessageResult::Ok(m) = m {
            if let Body::GetListResponse(r) = &m.body {
                if m.crc_ok {
                    for e in &r.values {
                        write_entry(e, out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: Option<Value<'static>>, scaler: Option<i8>, unit: Option<u8>) -> ListEntry<'static> {
        ListEntry {
            obj_name: &[1, 0, 1, 8, 0, 255],
            status: None,
            val_time: None,
            unit,
            scaler,
            value,
            value_signature: None,
            quirks: 0,
        }
    }

    fn line(e: &ListEntry<'_>) -> String {
        let mut s = String::new();
        write_entry(e, &mut s);
        s
    }

    #[test]
    fn numbers_units_and_octets() {
        let int = |v: i64| Some(Value::Int { value: v, width: 8 });
        assert_eq!(line(&entry(int(23_536_569), Some(-1), Some(30))), "1-0:1.8.0*255#2353656.9#Wh\n");
        assert_eq!(line(&entry(int(-10_550), Some(-2), Some(27))), "1-0:1.8.0*255#-105.50#W\n");
        assert_eq!(line(&entry(int(460), Some(0), Some(27))), "1-0:1.8.0*255#460#W\n");
        assert_eq!(line(&entry(int(46), Some(2), None)), "1-0:1.8.0*255#4600#\n");
        assert_eq!(line(&entry(int(5), Some(40), Some(0))), format!("1-0:1.8.0*255#5{}#\n", "0".repeat(40)));
        assert_eq!(line(&entry(int(5), None, Some(200))), "1-0:1.8.0*255#5#?:200\n");
        assert_eq!(line(&entry(Some(Value::Bool(true)), None, None)), "1-0:1.8.0*255#1#\n");
        let octets = Some(Value::Bytes(b"DZG\x00\x03"));
        assert_eq!(line(&entry(octets, None, None)), "1-0:1.8.0*255#DZG00 03 #\n");
        assert_eq!(line(&entry(None, None, Some(30))), "");
        assert_eq!(line(&entry(int(7), Some(-3), None)), "1-0:1.8.0*255#0.007#\n");
        assert_eq!(line(&entry(int(-7), Some(-1), None)), "1-0:1.8.0*255#-0.7#\n");
    }

    /// The integer shortcut prints what formatting the float prints.
    #[test]
    fn exact_decimals_match_float_formatting() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state >> (i % 12)) as i64 % (1 << 52) * if i % 3 == 0 { -1 } else { 1 };
            let k = 1 + (i % 22) as usize;
            let f = Scaled::of(&Value::Int { value: n, width: 8 }, Some(-(k as i8)));
            let Scaled::Float(f) = f else { panic!("{f:?}") };
            let mut exact = String::new();
            write_decimal(i128::from(n), k, &mut exact);
            assert_eq!(exact, format!("{f:.k$}"), "n={n} k={k}");
        }
    }
}

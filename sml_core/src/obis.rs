//! OBIS codes (IEC 62056-61): six bytes rendered `A-B:C.D.E*F`.

/// 1-0:16.7.0*255, sum active instantaneous power.
pub const POWER_SUM: [u8; 6] = [1, 0, 16, 7, 0, 255];
/// 1-0:96.1.0*255, device id of FNN "Basiszähler" meters.
pub const DEVICE_ID_FNN: [u8; 6] = [1, 0, 96, 1, 0, 255];

/// Appends the text form: `A-B:C.D.E*F` for six bytes, lower-case hex for any
/// other length (other SML profiles use longer object names).
pub fn write(name: &[u8], out: &mut String) {
    if name.len() == 6 {
        let seps = ['-', ':', '.', '.', '*'];
        for (i, &b) in name.iter().enumerate() {
            push_u8(b, out);
            if i < 5 {
                out.push(seps[i]);
            }
        }
    } else {
        for &b in name {
            push_hex(b, out);
        }
    }
}

#[must_use]
pub fn to_string(name: &[u8]) -> String {
    let mut s = String::with_capacity(20);
    write(name, &mut s);
    s
}

/// Parses `A-B:C.D.E*F` (also `A-B:C.D.E` meaning F = 255) or a hex string.
#[must_use]
pub fn parse(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(6);
    let mut rest = text;
    for sep in ['-', ':', '.', '.', '*'] {
        let (head, tail) = rest.split_once(sep)?;
        out.push(head.parse().ok()?);
        rest = tail;
    }
    if out.len() == 5 && !rest.is_empty() {
        out.push(rest.parse().ok()?);
        return Some(out);
    }
    None
}

/// Parses the OBIS text form, falling back to `A-B:C.D.E` and plain hex.
#[must_use]
pub fn parse_any(text: &str) -> Option<Vec<u8>> {
    if let Some(v) = parse(text) {
        return Some(v);
    }
    if let Some(v) = parse(&format!("{text}*255")) {
        return Some(v);
    }
    if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect();
    }
    None
}

fn push_u8(b: u8, out: &mut String) {
    if b >= 100 {
        out.push((b'0' + b / 100) as char);
    }
    if b >= 10 {
        out.push((b'0' + (b / 10) % 10) as char);
    }
    out.push((b'0' + b % 10) as char);
}

fn push_hex(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 0xf) as usize] as char);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse() {
        assert_eq!(to_string(&[1, 0, 1, 8, 0, 255]), "1-0:1.8.0*255");
        assert_eq!(to_string(&[129, 129, 199, 130, 3, 255]), "129-129:199.130.3*255");
        assert_eq!(to_string(&[1, 2, 3]), "010203");
        assert_eq!(parse_any("1-0:96.50.1*1"), Some(vec![1, 0, 96, 50, 1, 1]));
        assert_eq!(parse_any("1-0:1.8.0"), Some(vec![1, 0, 1, 8, 0, 255]));
        assert_eq!(parse_any("0a01"), Some(vec![10, 1]));
        assert_eq!(parse_any("1-0:1.8.0*256"), None);
    }
}
